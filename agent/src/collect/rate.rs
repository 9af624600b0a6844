//! Turning two readings of a kernel counter into a change or a per-second rate.
//!
//! Every per-device and per-interface rate goes through [`delta`], so the rule for a
//! counter that went backwards lives in one place:
//!
//! - `cur >= prev`: the difference.
//! - A 32-bit wrap: `prev` was in the top quarter of the 32-bit range (above 3/4 of
//!   2^32, below 2^32) and `cur` is in the bottom quarter (below 2^30). Some counters
//!   really are 32 bits wide — the `io_ticks` millisecond fields of
//!   `/proc/diskstats` wrap every 49.7 days, and a few network drivers still keep
//!   32-bit counters — so this is unwrapped to `2^32 - prev + cur`. The bounds keep
//!   the unwrapped change below 2^31, so even a reset misread as a wrap cannot
//!   produce an absurd spike.
//! - Anything else (device removed and re-added, interface reset, a 64-bit counter
//!   going down): no value for this interval. One missing point is better than a
//!   spike or a negative rate on a graph; the next interval has a value again.

/// One more than the largest 32-bit counter value.
const WRAP32: u64 = 1 << 32;

/// Change of a counter from `prev` to `cur`, or `None` when it cannot be trusted
/// (see the module docs for the rule).
pub(crate) fn delta(prev: u64, cur: u64) -> Option<u64> {
    if cur >= prev {
        return Some(cur - prev);
    }
    if prev < WRAP32 && prev > WRAP32 / 4 * 3 && cur < WRAP32 / 4 {
        return Some(WRAP32 - prev + cur);
    }
    None
}

/// Per-second rate of a counter over `secs` seconds, or `None` when the change
/// cannot be trusted or no time passed.
pub(crate) fn rate(prev: u64, cur: u64, secs: f64) -> Option<f64> {
    if secs.is_nan() || secs <= 0.0 {
        return None;
    }
    delta(prev, cur).map(|d| d as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forward_counter_gives_difference() {
        assert_eq!(delta(10, 25), Some(15));
        assert_eq!(delta(7, 7), Some(0));
        assert_eq!(rate(100, 700, 60.0), Some(10.0));
    }

    #[test]
    fn counter_going_backwards_gives_no_value() {
        // An interface reset: a large 64-bit counter starts again from zero.
        assert_eq!(delta(58_547_320_000, 1_000), None);
        // A small counter going down is a reset too, never a wrap.
        assert_eq!(delta(5_000, 10), None);
        assert_eq!(rate(5_000, 10, 60.0), None);
    }

    #[test]
    fn unwraps_32_bit_counter_near_the_top() {
        let prev = WRAP32 - 100;
        assert_eq!(delta(prev, 50), Some(150));
        // In the top quarter but `cur` not in the bottom quarter: a reset, not a wrap.
        assert_eq!(delta(prev, WRAP32 / 2), None);
        // Below the top quarter: a reset.
        assert_eq!(delta(WRAP32 / 2, 50), None);
        // Above 32 bits it cannot have been a 32-bit counter.
        assert_eq!(delta(WRAP32 + 100, 50), None);
    }

    #[test]
    fn no_rate_without_elapsed_time() {
        assert_eq!(rate(1, 2, 0.0), None);
        assert_eq!(rate(1, 2, -1.0), None);
        assert_eq!(rate(1, 2, f64::NAN), None);
    }

    proptest! {
        #[test]
        fn rate_is_never_negative_nor_a_huge_spike(prev: u64, cur: u64) {
            if let Some(d) = delta(prev, cur) {
                prop_assert!(cur >= prev || d < WRAP32 / 2);
                if cur >= prev {
                    prop_assert_eq!(d, cur - prev);
                }
            }
            if let Some(r) = rate(prev, cur, 1.5) {
                prop_assert!(r >= 0.0);
            }
        }
    }
}

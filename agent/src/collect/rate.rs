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
//!
//! Servers (Apache, MySQL, memcached) add one rule, in [`ServerCounters`]: their
//! counters start again from zero when the server restarts, and after a restart a
//! counter can already be back above its old value by the next collection, which the
//! delta rule alone would take for real traffic. So the server's own uptime is read
//! with its counters: when it is shorter than the previous uptime plus the time that
//! passed (with two seconds of slack for whole-second uptimes), the server restarted
//! in between and the interval gives no rates at all.

use std::time::Instant;

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

/// Seconds of slack between a server's whole-second uptime and our own clock.
const UPTIME_SLACK_SECS: f64 = 2.0;

/// The previous counters of one server, for rates that survive its restarts (see the
/// module docs). Use: [`begin`](Self::begin) with the new uptime, then
/// [`rate`](Self::rate) for each counter of this collection.
#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    /// Counter name and value, a handful each: a list searched from the front costs
    /// less than hashing every name on every collection.
    prev: Vec<(&'static str, u64)>,
    cur: Vec<(&'static str, u64)>,
    prev_at: Option<Instant>,
    prev_uptime: Option<u64>,
    /// Seconds since the previous collection, when rates can be computed this time.
    secs: Option<f64>,
}

impl ServerCounters {
    /// Starts a collection taken at `now` from a server that has been up `uptime`
    /// seconds (if it says). Returns false when the server restarted since the previous
    /// collection (or there is none): no rate this time.
    pub(crate) fn begin(&mut self, now: Instant, uptime: Option<u64>) -> bool {
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.cur.clear();
        let elapsed = self.prev_at.map(|p| now.saturating_duration_since(p).as_secs_f64());
        let restarted = match (self.prev_uptime, uptime, elapsed) {
            (Some(before), Some(up), Some(secs)) => (up as f64) + UPTIME_SLACK_SECS < before as f64 + secs,
            _ => false,
        };
        self.secs = match elapsed {
            Some(secs) if secs > 0.0 && !restarted => Some(secs),
            _ => None,
        };
        self.prev_at = Some(now);
        self.prev_uptime = uptime;
        self.secs.is_some()
    }

    /// Records counter `name` and returns its change since the previous collection,
    /// under the delta rule; `None` on the first collection or after a restart.
    pub(crate) fn delta(&mut self, name: &'static str, value: u64) -> Option<u64> {
        match self.cur.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.cur.push((name, value)),
        }
        self.secs?;
        let prev = self.prev.iter().find(|(n, _)| *n == name)?.1;
        delta(prev, value)
    }

    /// Like [`delta`](Self::delta), per second.
    pub(crate) fn rate(&mut self, name: &'static str, value: u64) -> Option<f64> {
        let d = self.delta(name, value)?;
        self.per_sec(d)
    }

    /// A change of this collection's interval, per second.
    pub(crate) fn per_sec(&self, delta: u64) -> Option<f64> {
        self.secs.map(|s| delta as f64 / s)
    }
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

    #[test]
    fn server_counters_give_rates_between_collections_of_one_server_life() {
        let t0 = Instant::now();
        let mut c = ServerCounters::default();
        assert!(!c.begin(t0, Some(100)));
        assert_eq!(c.rate("hits", 1_000), None);
        assert!(c.begin(t0 + std::time::Duration::from_secs(10), Some(110)));
        assert_eq!(c.rate("hits", 1_500), Some(50.0));
        // A counter seen for the first time has no rate yet.
        assert_eq!(c.rate("misses", 7), None);
    }

    #[test]
    fn server_restart_gives_no_rate_even_when_counters_grew_back() {
        let t0 = Instant::now();
        let secs = std::time::Duration::from_secs;
        let mut c = ServerCounters::default();
        c.begin(t0, Some(500));
        c.rate("accesses", 300);
        // Restarted 5 s ago and already served more than before: not traffic.
        assert!(!c.begin(t0 + secs(15), Some(5)));
        assert_eq!(c.rate("accesses", 900), None);
        // The interval after the restart has rates again.
        assert!(c.begin(t0 + secs(30), Some(20)));
        assert_eq!(c.rate("accesses", 1_200), Some(20.0));
        // Whole-second uptimes that lag our clock a little are not restarts.
        assert!(c.begin(t0 + secs(45), Some(34)));
        assert_eq!(c.rate("accesses", 1_350), Some(10.0));
        // Without an uptime, only the delta rule applies.
        assert!(c.begin(t0 + secs(60), None));
        assert_eq!(c.rate("accesses", 1_100), None);
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

//! Nagios flap detection: a 21-entry state history, the weighted percent state change and
//! the low/high hysteresis that starts and stops flapping (research/nagios.md §3.6,
//! Nagios 4 `base/flapping.c`).
//!
//! The history holds only HARD states and soft recoveries (the caller feeds results whose
//! [`crate::state::Transition::record_for_flapping`] is set). Walking from the oldest entry to
//! the newest, a change at transition `x` (1..=20) weighs `0.75 + (x-1)·0.5/19`, so the oldest
//! change counts 0.75 and the newest 1.25; the percent is `sum·100/20`. Flapping starts at
//! `percent >= high` and stops at `percent <= low`; in between nothing changes.
//!
//! What happens to notifications is the alerting layer's business. One Nagios 4.4 bug it
//! should not copy (fixed in 4.5.6): a recovery during flapping was never sent; on
//! [`FlapEvent::Stopped`] it should send the current state if it differs from the last one
//! notified.

use serde::{Deserialize, Serialize};

/// Entries in the history (`MAX_STATE_HISTORY_ENTRIES`), giving 20 transitions.
pub const HISTORY_LEN: usize = 21;
const LOW_WEIGHT: f64 = 0.75;
const HIGH_WEIGHT: f64 = 1.25;

/// Flap thresholds in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlapThresholds {
    /// Flapping stops at or below this.
    pub low: f64,
    /// Flapping starts at or above this.
    pub high: f64,
}

impl Default for FlapThresholds {
    /// Nagios' global defaults (`low_service_flap_threshold=20`, `high_…=30`).
    fn default() -> Self {
        FlapThresholds { low: 20.0, high: 30.0 }
    }
}

/// What recording a state did to the flapping status.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlapEvent {
    /// Flapping status unchanged.
    None,
    /// `SERVICE FLAPPING ALERT: …;STARTED` with this percent.
    Started { percent: f64 },
    /// `SERVICE FLAPPING ALERT: …;STOPPED` with this percent.
    Stopped { percent: f64 },
}

/// Flap-detection state of one object; persist it with the object's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlapDetector {
    /// State codes, a ring buffer; `next` is the slot written next (so also the oldest).
    history: [u8; HISTORY_LEN],
    next: usize,
    /// Whether the object is flapping now.
    pub is_flapping: bool,
    /// Percent state change after the last recorded state.
    pub percent: f64,
}

impl FlapDetector {
    /// A history filled with `initial` (the state code of OK/UP for a new object), as Nagios
    /// fills it at start-up.
    pub fn new(initial: u8) -> FlapDetector {
        FlapDetector { history: [initial; HISTORY_LEN], next: 0, is_flapping: false, percent: 0.0 }
    }

    /// Records one state code (a HARD state or a soft recovery) and re-evaluates flapping.
    pub fn record(&mut self, state: u8, thresholds: FlapThresholds) -> FlapEvent {
        self.history[self.next] = state;
        self.next = (self.next + 1) % HISTORY_LEN;
        self.percent = self.percent_change();
        if self.percent <= thresholds.low {
            if self.is_flapping {
                self.is_flapping = false;
                return FlapEvent::Stopped { percent: self.percent };
            }
        } else if self.percent >= thresholds.high && !self.is_flapping {
            self.is_flapping = true;
            return FlapEvent::Started { percent: self.percent };
        }
        FlapEvent::None
    }

    /// The weighted percent state change of the current history.
    pub fn percent_change(&self) -> f64 {
        let mut sum = 0.0;
        let mut last = self.history[self.next];
        for x in 1..HISTORY_LEN {
            let state = self.history[(self.next + x) % HISTORY_LEN];
            if state != last {
                sum += LOW_WEIGHT + (x - 1) as f64 * (HIGH_WEIGHT - LOW_WEIGHT) / (HISTORY_LEN - 2) as f64;
            }
            last = state;
        }
        sum * 100.0 / (HISTORY_LEN - 1) as f64
    }

    /// The history from oldest to newest.
    pub fn history(&self) -> [u8; HISTORY_LEN] {
        std::array::from_fn(|i| self.history[(self.next + i) % HISTORY_LEN])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: u8 = 0;
    const CRIT: u8 = 2;

    /// research/nagios.md §3.6, measured on Nagios 4.4.6: max_check_attempts 1 (every result
    /// HARD), low 5, high 20, alternating CRITICAL/OK from an all-OK history. Flapping starts
    /// on the fourth result (an OK) at 24.2 %, and stops at 3.8 % after 19 steady OK results.
    #[test]
    fn reproduces_the_measured_nagios_example() {
        let th = FlapThresholds { low: 5.0, high: 20.0 };
        let mut f = FlapDetector::new(OK);
        let mut events = vec![];
        for i in 0..4 {
            events.push(f.record(if i % 2 == 0 { CRIT } else { OK }, th));
        }
        // One change at the newest slot is 6.25 %, as status.dat showed.
        assert_eq!(&events[..3], &[FlapEvent::None; 3]);
        let FlapEvent::Started { percent } = events[3] else { panic!("{events:?}") };
        assert_eq!(format!("{percent:.1}"), "24.2");
        assert!(f.is_flapping);
        // 20 more alternating results, ending on OK.
        for i in 0..20 {
            assert_eq!(f.record(if i % 2 == 0 { CRIT } else { OK }, th), FlapEvent::None);
        }
        let mut stopped_after = None;
        for n in 1..=25 {
            if let FlapEvent::Stopped { percent } = f.record(OK, th) {
                assert_eq!(format!("{percent:.1}"), "3.8");
                assert_eq!(percent, 0.75 * 5.0);
                stopped_after = Some(n);
                break;
            }
        }
        assert_eq!(stopped_after, Some(19));
    }

    #[test]
    fn weights_run_from_oldest_to_newest() {
        let th = FlapThresholds::default();
        let mut f = FlapDetector::new(OK);
        f.record(CRIT, th);
        assert_eq!(f.percent, 1.25 * 5.0);
        // Full alternation: every transition counts, the sum of weights is 20 → 100 %.
        for i in 0..30 {
            f.record(if i % 2 == 0 { OK } else { CRIT }, th);
        }
        assert!((f.percent - 100.0).abs() < 1e-9, "{}", f.percent);
        assert!(f.is_flapping);
        assert_eq!(f.history().len(), HISTORY_LEN);
    }

    #[test]
    fn hysteresis_keeps_the_state_between_thresholds() {
        let th = FlapThresholds { low: 5.0, high: 20.0 };
        let mut f = FlapDetector::new(OK);
        // 3 changes: 18.4 % < 20 → not flapping.
        for s in [CRIT, OK, CRIT] {
            assert_eq!(f.record(s, th), FlapEvent::None);
        }
        assert!(!f.is_flapping && f.percent > 5.0);
        assert!(matches!(f.record(OK, th), FlapEvent::Started { .. }));
        // Steady results bring the percent down; it stays flapping until ≤ 5 %.
        let mut last = f.percent;
        while f.is_flapping {
            f.record(OK, th);
            assert!(f.percent <= last);
            last = f.percent;
        }
        assert!(f.percent <= 5.0);
    }

    #[test]
    fn survives_serde() {
        let mut f = FlapDetector::new(OK);
        f.record(CRIT, FlapThresholds::default());
        let back: FlapDetector = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }
}

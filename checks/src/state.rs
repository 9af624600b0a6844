//! Service and host states and the Nagios 4 soft/hard state machine that moves them.
//!
//! This module owns what one check result does to an object's status: the state, the state
//! type (SOFT/HARD), the attempt counter, `last_state_change`/`last_hard_state_change`, which
//! interval schedules the next check, and a [`Transition`] that tells the alerting layer
//! whether the result is notification-relevant. It also owns host reachability (parents) and
//! the freshness rule for passive services. It does not own timers or notifications: the
//! caller passes `now` and decides what to send.
//!
//! The algorithm is research/nagios.md §3.2–§3.4 (Nagios 4.4.6 `handle_async_service_check_result`):
//!
//! * OK → non-OK starts a SOFT problem at attempt 1 (HARD at once when `max_check_attempts`
//!   is 1); each further non-OK result adds an attempt and uses `retry_interval`; reaching
//!   `max_check_attempts` makes the state HARD and schedules with `check_interval` again.
//! * A change between two problem states while HARD (CRITICAL → WARNING) is a hard state
//!   change and notifies at once.
//! * OK after a HARD problem is a hard recovery (notified); OK after a SOFT problem is a soft
//!   recovery (logged as SOFT with the next attempt number, never notified).
//! * A service problem while its host is DOWN or UNREACHABLE is forced HARD without retries
//!   and is **not** notification-relevant (the host alert covers it). When the host comes back
//!   the service gets its retries again from attempt 1, as Nagios does to "give the service a
//!   chance"; reaching HARD then notifies.
//! * Passive host results are HARD at once (`passive_host_checks_are_soft=0`, the default),
//!   which the caller selects with [`ResultContext::force_hard`].
//!
//! Two deliberate differences from Nagios 4.4.6, both as later Nagios releases do:
//! * a HARD recovery reports attempt 1 (4.4.6 logged the last problem attempt; 4.4.9 #837);
//! * the transition into HARD after a host outage notifies even when the state equals the
//!   last hard state (Nagios reaches the same result through its notification counter).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch. Every time in this crate is one of these.
pub type Timestamp = i64;

/// A service state, with the plugin exit codes as discriminants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ServiceState {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl ServiceState {
    /// The state for plugin exit code 0–3, `None` for anything else (see
    /// [`crate::plugin::service_state_from_exit_code`] for what Nagios does then).
    pub fn from_code(code: i64) -> Option<ServiceState> {
        Some(match code {
            0 => ServiceState::Ok,
            1 => ServiceState::Warning,
            2 => ServiceState::Critical,
            3 => ServiceState::Unknown,
            _ => return None,
        })
    }

    /// The plugin exit code of this state.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Upper-case name as Nagios prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Ok => "OK",
            ServiceState::Warning => "WARNING",
            ServiceState::Critical => "CRITICAL",
            ServiceState::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host state, with Nagios' numbering as discriminants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HostState {
    Up = 0,
    Down = 1,
    Unreachable = 2,
}

impl HostState {
    /// The state for a `PROCESS_HOST_CHECK_RESULT` code (0 UP, 1 DOWN, 2 UNREACHABLE);
    /// `None` for anything else, which Nagios drops.
    pub fn from_code(code: i64) -> Option<HostState> {
        Some(match code {
            0 => HostState::Up,
            1 => HostState::Down,
            2 => HostState::Unreachable,
            _ => return None,
        })
    }

    /// Nagios' number for this state.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Upper-case name as Nagios prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "UP",
            HostState::Down => "DOWN",
            HostState::Unreachable => "UNREACHABLE",
        }
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SOFT (still retrying, or a soft recovery) or HARD (confirmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StateType {
    Soft,
    Hard,
}

impl fmt::Display for StateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateType::Soft => "SOFT",
            StateType::Hard => "HARD",
        })
    }
}

/// What the state machine needs to know about a state type: which value is "good".
pub trait CheckState: Copy + Eq + fmt::Debug + fmt::Display {
    /// OK for services, UP for hosts: the state of a never-checked object, as in Nagios.
    const GOOD: Self;
    /// Whether this is the good state.
    fn is_good(self) -> bool {
        self == Self::GOOD
    }
    /// Numeric code (exit code for services, Nagios number for hosts).
    fn as_code(self) -> u8;
}

impl CheckState for ServiceState {
    const GOOD: Self = ServiceState::Ok;
    fn as_code(self) -> u8 {
        self.code()
    }
}

impl CheckState for HostState {
    const GOOD: Self = HostState::Up;
    fn as_code(self) -> u8 {
        self.code()
    }
}

/// The scheduling settings of one check, in seconds (Nagios' `interval_length` is folded in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// Results needed before a problem becomes HARD; 0 is treated as 1.
    pub max_check_attempts: u32,
    /// Interval between checks in OK and HARD states.
    pub check_interval_secs: u64,
    /// Interval between checks while a problem is SOFT.
    pub retry_interval_secs: u64,
}

impl Default for StateSettings {
    /// Nagios' sample `generic-service`: 3 attempts, 5 min, 1 min retries.
    fn default() -> Self {
        StateSettings { max_check_attempts: 3, check_interval_secs: 300, retry_interval_secs: 60 }
    }
}

/// Which interval schedules the next check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// `check_interval`: OK, HARD, or a problem forced HARD by its host.
    Check,
    /// `retry_interval`: a SOFT problem.
    Retry,
}

/// What the alerting layer may make of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notify {
    /// Nothing to notify: OK, SOFT, a soft recovery, or a problem hidden by its host.
    None,
    /// The object just entered a HARD problem state or changed between problem states.
    Problem,
    /// The object is still in the same HARD problem: a re-notification candidate, throttled
    /// by `notification_interval` (Nagios evaluates re-notification only on results, too).
    Reminder,
    /// HARD recovery from a problem: send a recovery if a problem was notified.
    Recovery,
}

/// Facts about the world a result is applied in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultContext {
    /// For services: whether the service's host is UP. A problem while it is not is forced
    /// HARD and not notified. Always `true` for host results.
    pub host_up: bool,
    /// Make a problem HARD at once: passive host results (`passive_host_checks_are_soft=0`).
    pub force_hard: bool,
}

impl Default for ResultContext {
    fn default() -> Self {
        ResultContext { host_up: true, force_hard: false }
    }
}

/// The persistent status of one service or host: everything the state machine remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status<S> {
    /// Current state.
    pub state: S,
    /// SOFT or HARD.
    pub state_type: StateType,
    /// Current attempt, 1 ..= max_check_attempts.
    pub attempt: u32,
    /// The last HARD state; a HARD result differing from it is a hard state change.
    pub last_hard_state: S,
    /// Time of the last result applied, `None` until the first one ("PENDING").
    pub last_check: Option<Timestamp>,
    /// Time of the last state change, soft or hard (the first result also sets it).
    pub last_state_change: Option<Timestamp>,
    /// Time of the last hard state change (the first result also sets it).
    pub last_hard_state_change: Option<Timestamp>,
    /// The last problem result was forced HARD because the host was not UP; the next problem
    /// result with the host UP starts retrying from attempt 1.
    pub host_problem_at_last_check: bool,
}

/// Status of a service.
pub type ServiceStatus = Status<ServiceState>;
/// Status of a host.
pub type HostStatus = Status<HostState>;

impl<S: CheckState> Default for Status<S> {
    fn default() -> Self {
        Status::new()
    }
}

/// What applying one result did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition<S> {
    /// State before the result.
    pub previous_state: S,
    /// State type before the result.
    pub previous_state_type: StateType,
    /// State after the result.
    pub state: S,
    /// State type after the result.
    pub state_type: StateType,
    /// Attempt after the result, as Nagios logs it in `SERVICE ALERT` lines.
    pub attempt: u32,
    /// The state differs from the previous state (soft or hard).
    pub state_change: bool,
    /// The state is HARD and differs from the previous hard state.
    pub hard_state_change: bool,
    /// Notification relevance; acks, downtime and flapping are applied by the caller.
    pub notify: Notify,
    /// A service problem while the host was not UP (forced HARD, not notified).
    pub host_problem: bool,
    /// Whether Nagios would write a `SERVICE ALERT`/`HOST ALERT` log line for this result.
    pub logged: bool,
    /// Whether this result goes into the flap-detection history (HARD states and soft
    /// recoveries, research/nagios.md §3.6).
    pub record_for_flapping: bool,
    /// Interval that schedules the next check.
    pub interval: Interval,
    /// `now` plus that interval.
    pub next_check: Timestamp,
}

impl<S: CheckState> Status<S> {
    /// A never-checked object: good state, HARD, attempt 1, as Nagios initialises it.
    pub fn new() -> Status<S> {
        Status {
            state: S::GOOD,
            state_type: StateType::Hard,
            attempt: 1,
            last_hard_state: S::GOOD,
            last_check: None,
            last_state_change: None,
            last_hard_state_change: None,
            host_problem_at_last_check: false,
        }
    }

    /// Which interval applies to the next check in the current status.
    pub fn interval(&self) -> Interval {
        if self.state_type == StateType::Soft && !self.state.is_good() {
            Interval::Retry
        } else {
            Interval::Check
        }
    }

    /// Applies one check result (active or passive) received at `now`.
    pub fn apply(&mut self, settings: &StateSettings, result: S, now: Timestamp, ctx: ResultContext) -> Transition<S> {
        let max = settings.max_check_attempts.max(1);
        let previous_state = self.state;
        let previous_state_type = self.state_type;
        let state_change = result != previous_state;
        let mut hard_state_change = false;
        let mut notify = Notify::None;
        let mut host_problem = false;

        if result.is_good() {
            if previous_state.is_good() {
                self.state_type = StateType::Hard;
                self.attempt = 1;
            } else if previous_state_type == StateType::Hard || !self.last_hard_state.is_good() {
                hard_state_change = true;
                self.state_type = StateType::Hard;
                self.attempt = 1;
                notify = Notify::Recovery;
            } else {
                // Soft recovery: Nagios logs it SOFT with the next attempt number.
                self.state_type = StateType::Soft;
                self.attempt = (self.attempt + 1).min(max);
            }
            self.last_hard_state = result;
            self.host_problem_at_last_check = false;
        } else if !ctx.host_up {
            // The host is DOWN/UNREACHABLE: no retries, no notification.
            host_problem = true;
            if previous_state.is_good() {
                self.attempt = 1;
            }
            self.state_type = StateType::Hard;
            hard_state_change = result != self.last_hard_state;
            self.last_hard_state = result;
            self.host_problem_at_last_check = true;
        } else {
            let restarted = std::mem::take(&mut self.host_problem_at_last_check);
            let was_hard_problem = previous_state_type == StateType::Hard && !previous_state.is_good();
            if previous_state.is_good() || restarted {
                self.attempt = 1;
            } else if previous_state_type == StateType::Soft {
                self.attempt = (self.attempt + 1).min(max);
            }
            if ctx.force_hard || self.attempt >= max || (was_hard_problem && !restarted) {
                let entering = previous_state_type == StateType::Soft || previous_state.is_good() || restarted;
                self.state_type = StateType::Hard;
                hard_state_change = result != self.last_hard_state;
                self.last_hard_state = result;
                notify = if hard_state_change || entering { Notify::Problem } else { Notify::Reminder };
            } else {
                self.state_type = StateType::Soft;
            }
        }

        self.state = result;
        self.last_check = Some(now);
        if state_change || self.last_state_change.is_none() {
            self.last_state_change = Some(now);
        }
        if hard_state_change || self.last_hard_state_change.is_none() {
            self.last_hard_state_change = Some(now);
        }
        let interval = self.interval();
        let secs = match interval {
            Interval::Check => settings.check_interval_secs,
            Interval::Retry => settings.retry_interval_secs,
        };
        Transition {
            previous_state,
            previous_state_type,
            state: result,
            state_type: self.state_type,
            attempt: self.attempt,
            state_change,
            hard_state_change,
            notify,
            host_problem,
            logged: state_change || hard_state_change || (self.state_type == StateType::Soft && !result.is_good()),
            record_for_flapping: self.state_type == StateType::Hard || result.is_good(),
            interval,
            next_check: now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)),
        }
    }
}

/// Reachability translation of a host problem (research/nagios.md §3.4): with no parents,
/// or with at least one parent UP, the host is DOWN; when no parent is UP it is UNREACHABLE.
/// An UP result stays UP.
pub fn reachability(result: HostState, parents: &[HostState]) -> HostState {
    if result == HostState::Up {
        return HostState::Up;
    }
    if parents.is_empty() || parents.contains(&HostState::Up) {
        HostState::Down
    } else {
        HostState::Unreachable
    }
}

/// Freshness settings of a passive service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// A result older than this makes the service stale.
    pub threshold_secs: u64,
    /// State applied when stale; UNKNOWN unless configured, like Nagios' usual
    /// `check_dummy 3 "no passive result"` freshness command.
    #[serde(default = "Freshness::default_state")]
    pub stale_state: ServiceState,
}

impl Freshness {
    fn default_state() -> ServiceState {
        ServiceState::Unknown
    }
}

/// The result a stale passive service receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleResult {
    /// The configured stale state.
    pub state: ServiceState,
    /// Plugin-style output saying since when no result arrived.
    pub output: String,
    /// Time of the last real result, or the start of watching when there never was one.
    pub stale_since: Timestamp,
}

/// The freshness rule (research/nagios.md §3.5), done the way Nagios should:
///
/// * the service is stale once `now` is past `threshold` after the last real result, or after
///   `watched_since` (when the collector started watching it) if there never was one;
/// * a stale service **always** gets the configured state with an output that says it is
///   stale. Nagios instead re-runs the service's `check_command`, so a passive service with a
///   dummy OK command, or with `check_freshness` off (its default), stays silently OK;
/// * a restart does not reset the clock: Nagios counts from program start when it was down
///   for more than 0.618 × threshold, which hides a sender that died before the restart. The
///   caller passes the persisted `last_result`, so a restart changes nothing;
/// * while stale, a new stale result is due once per threshold after the previous one
///   (`last_stale`), as Nagios re-checks once per threshold; each goes through the normal
///   soft/hard logic, so `max_check_attempts` stale periods make it HARD.
///
/// Returns `None` when nothing is due. A threshold of 0 disables the check.
pub fn check_freshness(
    freshness: &Freshness,
    last_result: Option<Timestamp>,
    watched_since: Timestamp,
    last_stale: Option<Timestamp>,
    now: Timestamp,
) -> Option<StaleResult> {
    if freshness.threshold_secs == 0 {
        return None;
    }
    let threshold = i64::try_from(freshness.threshold_secs).unwrap_or(i64::MAX);
    let since = last_result.unwrap_or(watched_since);
    // A stale result already applied after the last real one resets the due time.
    let base = match last_stale {
        Some(s) if s >= since => s,
        _ => since,
    };
    if now <= base.saturating_add(threshold) {
        return None;
    }
    let age = now.saturating_sub(since);
    let output = match last_result {
        Some(t) => format!(
            "{}: no passive result since {} ({}s ago, freshness threshold {}s)",
            freshness.stale_state,
            format_time(t),
            age,
            threshold
        ),
        None => format!(
            "{}: no passive result received since monitoring started at {} (freshness threshold {}s)",
            freshness.stale_state,
            format_time(watched_since),
            threshold
        ),
    };
    Some(StaleResult { state: freshness.stale_state, output, stale_since: since })
}

fn format_time(t: Timestamp) -> String {
    match chrono::DateTime::from_timestamp(t, 0) {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServiceState::{Critical, Ok as O, Warning};

    fn svc(max: u32) -> (ServiceStatus, StateSettings) {
        (Status::new(), StateSettings { max_check_attempts: max, check_interval_secs: 8, retry_interval_secs: 2 })
    }

    fn up() -> ResultContext {
        ResultContext::default()
    }

    /// (state, type, attempt, notify) after each result.
    fn run(max: u32, results: &[ServiceState]) -> Vec<(ServiceState, StateType, u32, Notify)> {
        let (mut s, set) = svc(max);
        results
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let t = s.apply(&set, r, i as i64, up());
                (t.state, t.state_type, t.attempt, t.notify)
            })
            .collect()
    }

    use Notify::{None as N, Problem as P, Recovery as R, Reminder as M};
    use StateType::{Hard as H, Soft as S};

    #[test]
    fn nagios_active_example_soft_soft_hard_then_recovery() {
        // research/nagios.md §3.2: max 3, check 8 s, retry 2 s.
        let (mut s, set) = svc(3);
        let t = s.apply(&set, Critical, 3, up());
        assert_eq!((t.state_type, t.attempt, t.notify, t.interval, t.next_check), (S, 1, N, Interval::Retry, 5));
        assert!(t.state_change && !t.hard_state_change && t.logged && !t.record_for_flapping);
        let t = s.apply(&set, Critical, 5, up());
        assert_eq!((t.state_type, t.attempt, t.notify, t.next_check), (S, 2, N, 7));
        assert!(!t.state_change);
        let t = s.apply(&set, Critical, 7, up());
        assert_eq!((t.state_type, t.attempt, t.notify, t.interval, t.next_check), (H, 3, P, Interval::Check, 15));
        assert!(t.hard_state_change && !t.state_change && t.record_for_flapping);
        assert_eq!(s.last_state_change, Some(3));
        assert_eq!(s.last_hard_state_change, Some(7));
        for now in [15, 23, 31] {
            let t = s.apply(&set, Critical, now, up());
            assert_eq!((t.state_type, t.attempt, t.notify, t.next_check), (H, 3, M, now + 8));
            assert!(!t.logged);
        }
        let t = s.apply(&set, O, 39, up());
        assert_eq!((t.state, t.state_type, t.attempt, t.notify), (O, H, 1, R));
        assert!(t.state_change && t.hard_state_change);
        assert_eq!(s.last_hard_state_change, Some(39));
    }

    #[test]
    fn nagios_passive_example_with_soft_recovery() {
        // research/nagios.md §3.2 passive run: SOFT 1, SOFT 2, HARD 3, recovery, SOFT 1, soft recovery 2.
        let got = run(3, &[Critical, Critical, Critical, O, Critical, O, O]);
        assert_eq!(
            got,
            vec![
                (Critical, S, 1, N),
                (Critical, S, 2, N),
                (Critical, H, 3, P),
                (O, H, 1, R),
                (Critical, S, 1, N),
                (O, S, 2, N),
                (O, H, 1, N),
            ]
        );
    }

    #[test]
    fn soft_recovery_changes_state_but_not_hard_state() {
        let (mut s, set) = svc(3);
        s.apply(&set, Warning, 1, up());
        let t = s.apply(&set, O, 2, up());
        assert!(t.state_change && !t.hard_state_change && t.logged && t.record_for_flapping);
        assert_eq!(t.interval, Interval::Check);
        assert_eq!(s.last_state_change, Some(2));
        assert_eq!(s.last_hard_state_change, Some(1), "set by the first result only");
    }

    #[test]
    fn max_attempts_one_is_hard_at_once() {
        assert_eq!(run(1, &[Critical, Critical, O]), vec![(Critical, H, 1, P), (Critical, H, 1, M), (O, H, 1, R)]);
        // 0 behaves as 1 instead of never reaching HARD.
        assert_eq!(run(0, &[Warning]), vec![(Warning, H, 1, P)]);
    }

    #[test]
    fn changes_between_problem_states() {
        // SOFT WARNING → SOFT CRITICAL counts attempts on; HARD CRITICAL → WARNING is a hard
        // state change that notifies at once.
        let got = run(3, &[Warning, Critical, Critical, Warning, Warning, Critical]);
        assert_eq!(
            got,
            vec![
                (Warning, S, 1, N),
                (Critical, S, 2, N),
                (Critical, H, 3, P),
                (Warning, H, 3, P),
                (Warning, H, 3, M),
                (Critical, H, 3, P),
            ]
        );
        let (mut s, set) = svc(3);
        for (i, r) in [Warning, Critical, Critical, Warning].into_iter().enumerate() {
            let t = s.apply(&set, r, i as i64, up());
            if i == 3 {
                assert!(t.state_change && t.hard_state_change);
            }
        }
    }

    #[test]
    fn first_results_set_the_change_times() {
        let (mut s, set) = svc(3);
        let t = s.apply(&set, O, 100, up());
        assert!(!t.state_change && !t.logged && t.notify == N);
        assert_eq!((s.last_check, s.last_state_change, s.last_hard_state_change), (Some(100), Some(100), Some(100)));
        s.apply(&set, O, 110, up());
        assert_eq!(s.last_state_change, Some(100));
    }

    #[test]
    fn service_problem_while_host_down_is_hard_and_silent() {
        let (mut s, set) = svc(3);
        let down = ResultContext { host_up: false, force_hard: false };
        let t = s.apply(&set, Critical, 1, down);
        assert_eq!((t.state_type, t.attempt, t.notify, t.interval), (H, 1, N, Interval::Check));
        assert!(t.host_problem && t.hard_state_change && t.record_for_flapping);
        let t = s.apply(&set, Critical, 9, down);
        assert_eq!((t.notify, t.hard_state_change), (N, false));
        // Host back: the service is retried from attempt 1 and notifies when HARD.
        let got: Vec<_> = (0..3)
            .map(|i| {
                let t = s.apply(&set, Critical, 20 + i, up());
                (t.state_type, t.attempt, t.notify)
            })
            .collect();
        assert_eq!(got, vec![(S, 1, N), (S, 2, N), (H, 3, P)]);
        // Recovery while the host is down is still a recovery.
        let t = s.apply(&set, O, 30, down);
        assert_eq!((t.state_type, t.notify), (H, R));
    }

    #[test]
    fn host_down_during_soft_problem_forces_hard_without_notify() {
        let (mut s, set) = svc(3);
        s.apply(&set, Critical, 1, up());
        let t = s.apply(&set, Critical, 2, ResultContext { host_up: false, force_hard: false });
        assert_eq!((t.state_type, t.attempt, t.notify), (H, 1, N));
        assert!(t.hard_state_change);
    }

    #[test]
    fn passive_host_results_are_hard_at_once() {
        let mut h = HostStatus::new();
        let set = StateSettings { max_check_attempts: 3, ..StateSettings::default() };
        let passive = ResultContext { host_up: true, force_hard: true };
        let t = h.apply(&set, HostState::Down, 1, passive);
        assert_eq!((t.state, t.state_type, t.attempt, t.notify), (HostState::Down, H, 1, P));
        let t = h.apply(&set, HostState::Unreachable, 2, passive);
        assert_eq!((t.state_type, t.notify, t.hard_state_change), (H, P, true));
        let t = h.apply(&set, HostState::Up, 3, passive);
        assert_eq!((t.state_type, t.notify), (H, R));
    }

    #[test]
    fn active_host_checks_retry_like_services() {
        // research/nagios.md §3.4: router with max_check_attempts 2: DOWN SOFT 1, DOWN HARD 2.
        let mut h = HostStatus::new();
        let set = StateSettings { max_check_attempts: 2, check_interval_secs: 60, retry_interval_secs: 10 };
        let t = h.apply(&set, HostState::Down, 31, ResultContext::default());
        assert_eq!((t.state_type, t.attempt, t.notify, t.next_check), (S, 1, N, 41));
        let t = h.apply(&set, HostState::Down, 41, ResultContext::default());
        assert_eq!((t.state_type, t.attempt, t.notify, t.next_check), (H, 2, P, 101));
    }

    #[test]
    fn reachability_follows_parents() {
        use HostState::*;
        assert_eq!(reachability(Down, &[]), Down);
        assert_eq!(reachability(Down, &[Down, Up]), Down);
        assert_eq!(reachability(Down, &[Down, Unreachable]), Unreachable);
        assert_eq!(reachability(Up, &[Down]), Up);
    }

    #[test]
    fn status_survives_serde() {
        let (mut s, set) = svc(3);
        s.apply(&set, Critical, 5, up());
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"CRITICAL\"") && json.contains("\"SOFT\""), "{json}");
        let back: ServiceStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn freshness_goes_stale_after_threshold() {
        let f = Freshness { threshold_secs: 5, stale_state: ServiceState::Unknown };
        assert_eq!(check_freshness(&f, Some(100), 0, None, 105), None);
        let st = check_freshness(&f, Some(100), 0, None, 106).unwrap();
        assert_eq!(st.state, ServiceState::Unknown);
        assert_eq!(st.stale_since, 100);
        assert_eq!(st.output, "UNKNOWN: no passive result since 1970-01-01T00:01:40Z (6s ago, freshness threshold 5s)");
        // Once applied at 106 the next one is due after another threshold.
        assert_eq!(check_freshness(&f, Some(100), 0, Some(106), 111), None);
        assert!(check_freshness(&f, Some(100), 0, Some(106), 112).is_some());
        // A fresh result after the stale one wins.
        assert_eq!(check_freshness(&f, Some(120), 0, Some(112), 124), None);
    }

    #[test]
    fn never_received_counts_from_watch_start_and_restarts_do_not_reset() {
        let f = Freshness { threshold_secs: 60, stale_state: Critical };
        let st = check_freshness(&f, None, 1000, None, 1061).unwrap();
        assert_eq!(st.state, Critical);
        assert!(st.output.contains("since monitoring started"), "{}", st.output);
        // The sender died at 1000; the collector restarts at 5000 with the persisted time:
        // still stale immediately (Nagios would wait another threshold from program start).
        assert!(check_freshness(&f, Some(1000), 5000, None, 5000).is_some());
        assert_eq!(
            check_freshness(&Freshness { threshold_secs: 0, stale_state: Critical }, None, 0, None, 1 << 40),
            None
        );
    }

    #[test]
    fn stale_results_go_soft_then_hard() {
        let f = Freshness { threshold_secs: 5, stale_state: ServiceState::Unknown };
        let (mut s, set) = svc(2);
        s.apply(&set, O, 0, up());
        let mut last_stale = None;
        let mut types = vec![];
        for now in 0..20 {
            if let Some(st) = check_freshness(&f, Some(0), 0, last_stale, now) {
                last_stale = Some(now);
                let t = s.apply(&set, st.state, now, up());
                types.push((now, t.state_type, t.notify));
            }
        }
        assert_eq!(types, vec![(6, S, N), (12, H, P), (18, H, M)]);
    }
}

//! Scheduled downtime (research/nagios.md §4.9, §4.10): fixed and flexible, one-off or
//! recurring through a cron expression, optionally triggered by another downtime.
//!
//! * **Fixed**: in downtime for the whole window `[start, end)`.
//! * **Flexible**: starts when the object enters a problem state inside a window
//!   ([`Downtimes::problem_started`]) and lasts `duration_secs` from then; a window that passes
//!   without a problem expires silently.
//! * **Triggered** (`trigger`): a fixed triggered downtime is active exactly while its
//!   trigger is; a flexible one starts with its trigger and lasts its duration. Unlike Nagios
//!   4.4.6, a downtime added while its trigger is already active starts at once (Nagios only
//!   started it, and stopped it again, when the trigger ended).
//! * **Recurring**: `cron` gives the window starts (5-field crontab or the `cron` crate's 6/7
//!   fields with seconds), `window_secs` their length, `time_zone` (`UTC`, `+02:00`, or an IANA
//!   name such as `Europe/Berlin`) the clock the expression is read in. E.g. a weekly
//!   maintenance window: `cron = "0 2 * * Sun"`, `window_secs = 7200`.
//!
//! [`Downtimes`] holds all downtimes and turns time passing into start/end events; an event
//! carries `notify` when it is a depth transition of its own object (DOWNTIMESTART/END are
//! sent only then). Suppression: a service is in downtime when it or its host is.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::state::Timestamp;

/// Downtime ids are assigned by the caller (Nagios numbers them sequentially).
pub type DowntimeId = u64;

/// Upper bound of windows returned by one query, so a `* * * * * *` expression over a year
/// cannot exhaust memory.
pub const MAX_WINDOWS: usize = 10_000;

/// What a downtime applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub host: String,
    /// `None` for a host downtime.
    pub service: Option<String>,
}

/// When a downtime's windows are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// One window.
    Once { start: Timestamp, end: Timestamp },
    /// A window of `window_secs` at every time the cron expression names.
    Recurring {
        cron: String,
        window_secs: u64,
        #[serde(default = "utc_name")]
        time_zone: String,
    },
}

fn utc_name() -> String {
    "UTC".to_owned()
}

/// Fixed or flexible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Mode {
    Fixed,
    Flexible { duration_secs: u64 },
}

/// A downtime as scheduled (what the API and `SCHEDULE_*_DOWNTIME` create and what is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DowntimeSpec {
    pub target: Target,
    pub schedule: Schedule,
    pub mode: Mode,
    /// Another downtime whose start starts this one.
    #[serde(default)]
    pub trigger: Option<DowntimeId>,
    pub author: String,
    pub comment: String,
}

/// One window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// Why a downtime cannot be scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DowntimeError {
    #[error("downtime end {end} is not after its start {start}")]
    EmptyWindow { start: Timestamp, end: Timestamp },
    #[error("a flexible downtime needs a duration > 0")]
    NoDuration,
    #[error("a recurring downtime needs window_secs > 0")]
    NoWindowLength,
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
    #[error("unknown time zone {0:?} (use UTC, an offset like +02:00, or an IANA name)")]
    TimeZone(String),
    #[error("downtime {0} does not exist")]
    NoSuchDowntime(DowntimeId),
}

#[derive(Debug, Clone)]
enum Zone {
    Utc,
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

fn parse_zone(s: &str) -> Result<Zone, DowntimeError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(Zone::Utc);
    }
    if let Ok(off) = FixedOffset::from_str(t) {
        return Ok(Zone::Fixed(off));
    }
    chrono_tz::Tz::from_str(t).map(Zone::Named).map_err(|_| DowntimeError::TimeZone(s.to_owned()))
}

#[derive(Debug, Clone)]
enum Compiled {
    Once(Window),
    Recurring { schedule: Box<cron::Schedule>, window: i64, zone: Zone },
}

fn compile(spec: &DowntimeSpec) -> Result<Compiled, DowntimeError> {
    if let Mode::Flexible { duration_secs: 0 } = spec.mode {
        return Err(DowntimeError::NoDuration);
    }
    match &spec.schedule {
        Schedule::Once { start, end } => {
            if end <= start {
                return Err(DowntimeError::EmptyWindow { start: *start, end: *end });
            }
            Ok(Compiled::Once(Window { start: *start, end: *end }))
        }
        Schedule::Recurring { cron: expr, window_secs, time_zone } => {
            if *window_secs == 0 {
                return Err(DowntimeError::NoWindowLength);
            }
            // Classic 5-field crontab lines get the seconds field the crate wants.
            let full = if expr.split_whitespace().count() == 5 { format!("0 {expr}") } else { expr.clone() };
            let schedule = cron::Schedule::from_str(&full)
                .map_err(|e| DowntimeError::Cron { expr: expr.clone(), reason: e.to_string() })?;
            Ok(Compiled::Recurring {
                schedule: Box::new(schedule),
                window: i64::try_from(*window_secs).unwrap_or(i64::MAX),
                zone: parse_zone(time_zone)?,
            })
        }
    }
}

fn starts_after<Z: TimeZone>(
    schedule: &cron::Schedule,
    zone: &Z,
    after: Timestamp,
    before: Timestamp,
) -> Vec<Timestamp> {
    let Some(from) = DateTime::<Utc>::from_timestamp(after, 0) else { return Vec::new() };
    schedule
        .after(&from.with_timezone(zone))
        .map(|d| d.timestamp())
        .take_while(|&t| t < before)
        .take(MAX_WINDOWS)
        .collect()
}

impl Compiled {
    fn windows_between(&self, a: Timestamp, b: Timestamp) -> Vec<Window> {
        match self {
            Compiled::Once(w) => {
                if w.end > a && w.start < b {
                    vec![*w]
                } else {
                    Vec::new()
                }
            }
            Compiled::Recurring { schedule, window, zone } => {
                // A window that started up to `window` before `a` still overlaps it.
                let from = a.saturating_sub(*window).saturating_sub(1);
                let starts = match zone {
                    Zone::Utc => starts_after(schedule, &Utc, from, b),
                    Zone::Fixed(z) => starts_after(schedule, z, from, b),
                    Zone::Named(z) => starts_after(schedule, z, from, b),
                };
                starts
                    .into_iter()
                    .map(|s| Window { start: s, end: s.saturating_add(*window) })
                    .filter(|w| w.end > a)
                    .collect()
            }
        }
    }

    fn window_at(&self, t: Timestamp) -> Option<Window> {
        self.windows_between(t, t.saturating_add(1)).into_iter().find(|w| w.contains(t))
    }
}

/// Runtime state of a downtime, to persist next to its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DowntimeState {
    /// The span it is in force for, while it is.
    pub active: Option<Window>,
    /// For triggered flexible downtimes: the trigger span start that already started it.
    pub triggered_at: Option<Timestamp>,
}

/// A validated downtime with its state.
#[derive(Debug, Clone)]
pub struct Downtime {
    pub id: DowntimeId,
    spec: DowntimeSpec,
    compiled: Compiled,
    pub state: DowntimeState,
}

impl Downtime {
    /// Validates a spec.
    ///
    /// # Errors
    /// [`DowntimeError`] for an empty window, a flexible downtime without duration, a bad
    /// cron expression or time zone.
    pub fn new(id: DowntimeId, spec: DowntimeSpec) -> Result<Downtime, DowntimeError> {
        Downtime::restore(id, spec, DowntimeState::default())
    }

    /// Rebuilds a persisted downtime with its state (after a restart).
    ///
    /// # Errors
    /// As [`Downtime::new`].
    pub fn restore(id: DowntimeId, spec: DowntimeSpec, state: DowntimeState) -> Result<Downtime, DowntimeError> {
        let compiled = compile(&spec)?;
        Ok(Downtime { id, spec, compiled, state })
    }

    /// The spec it was created from.
    pub fn spec(&self) -> &DowntimeSpec {
        &self.spec
    }

    /// The scheduled windows overlapping `[a, b)` (for flexible downtime: the windows in which
    /// it may start), at most [`MAX_WINDOWS`].
    pub fn windows_between(&self, a: Timestamp, b: Timestamp) -> Vec<Window> {
        self.compiled.windows_between(a, b)
    }

    /// Whether the downtime is in force at `now`: its active span covers `now`, or it is a
    /// fixed, untriggered downtime with a window around `now`.
    pub fn is_in_downtime(&self, now: Timestamp) -> bool {
        if self.state.active.is_some_and(|w| w.contains(now)) {
            return true;
        }
        self.spec.trigger.is_none() && self.spec.mode == Mode::Fixed && self.compiled.window_at(now).is_some()
    }

    fn is_over(&self, now: Timestamp) -> bool {
        match &self.compiled {
            Compiled::Once(w) => {
                self.state.active.is_none()
                    && now >= w.end
                    && (self.spec.trigger.is_none() || matches!(self.spec.mode, Mode::Flexible { .. }))
            }
            Compiled::Recurring { .. } => false,
        }
    }
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// DOWNTIMESTART.
    Started,
    /// DOWNTIMEEND.
    Ended,
    /// DOWNTIMECANCELLED: deleted while active (or its trigger was).
    Cancelled,
    /// A one-off downtime whose window passed (a flexible one that never started, or a
    /// finished one); removed without a notification.
    Expired,
}

/// One downtime event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DowntimeEvent {
    pub id: DowntimeId,
    pub target: Target,
    pub kind: EventKind,
    /// Whether this changed the object's own downtime depth between 0 and 1, the only time
    /// Nagios sends DOWNTIMESTART/DOWNTIMEEND/DOWNTIMECANCELLED.
    pub notify: bool,
}

/// All downtimes of a collector.
#[derive(Debug, Clone, Default)]
pub struct Downtimes {
    items: BTreeMap<DowntimeId, Downtime>,
}

impl Downtimes {
    pub fn new() -> Downtimes {
        Downtimes::default()
    }

    /// Adds a downtime and brings it up to date with `now`.
    pub fn add(&mut self, downtime: Downtime, now: Timestamp) -> Vec<DowntimeEvent> {
        self.items.insert(downtime.id, downtime);
        self.advance(now)
    }

    /// Deletes a downtime; if it (or a downtime it triggers) was active, that is cancelled.
    ///
    /// # Errors
    /// [`DowntimeError::NoSuchDowntime`].
    pub fn remove(&mut self, id: DowntimeId, _now: Timestamp) -> Result<Vec<DowntimeEvent>, DowntimeError> {
        let mut doomed = vec![id];
        let mut i = 0;
        while i < doomed.len() {
            let parent = doomed[i];
            doomed.extend(self.items.values().filter(|d| d.spec.trigger == Some(parent)).map(|d| d.id));
            i += 1;
        }
        if !self.items.contains_key(&id) {
            return Err(DowntimeError::NoSuchDowntime(id));
        }
        let mut events = Vec::new();
        for victim in doomed {
            let Some(d) = self.items.get(&victim) else { continue };
            let was_active = d.state.active.is_some();
            let target = d.spec.target.clone();
            if was_active {
                let before = self.depth(&target);
                self.items.remove(&victim);
                events.push(DowntimeEvent {
                    id: victim,
                    target: target.clone(),
                    kind: EventKind::Cancelled,
                    notify: before == 1,
                });
            } else if victim == id {
                self.items.remove(&victim);
            } else {
                // A triggered downtime whose trigger is gone can never start.
                self.items.remove(&victim);
                events.push(DowntimeEvent { id: victim, target, kind: EventKind::Expired, notify: false });
            }
        }
        Ok(events)
    }

    /// Applies the passing of time up to `now`: fixed windows start and end, flexible spans
    /// run out, triggered downtimes follow their triggers, passed one-off downtimes expire.
    pub fn advance(&mut self, now: Timestamp) -> Vec<DowntimeEvent> {
        let mut events = Vec::new();
        // Trigger chains settle in at most as many passes as there are downtimes.
        for _ in 0..=self.items.len() {
            let before = events.len();
            let ids: Vec<DowntimeId> = self.items.keys().copied().collect();
            for id in ids {
                self.step(id, now, &mut events);
            }
            if events.len() == before {
                break;
            }
        }
        events
    }

    fn step(&mut self, id: DowntimeId, now: Timestamp, events: &mut Vec<DowntimeEvent>) {
        let Some(d) = self.items.get(&id) else { return };
        let trigger_span = d.spec.trigger.and_then(|t| self.items.get(&t)).and_then(|t| t.state.active);
        let target = d.spec.target.clone();
        // End what has run out (a fixed triggered one ends with its trigger).
        if let Some(active) = d.state.active {
            let trigger_gone = d.spec.trigger.is_some() && d.spec.mode == Mode::Fixed && trigger_span.is_none();
            if now >= active.end || trigger_gone {
                let depth = self.depth(&target);
                // A one-off downtime is used up once it ended (Nagios deletes it then).
                if matches!(d.compiled, Compiled::Once(_)) {
                    self.items.remove(&id);
                } else if let Some(d) = self.items.get_mut(&id) {
                    d.state.active = None;
                }
                events.push(DowntimeEvent { id, target, kind: EventKind::Ended, notify: depth == 1 });
            }
            return;
        }
        let start = match (d.spec.trigger, d.spec.mode) {
            (Some(_), Mode::Fixed) => trigger_span,
            (Some(_), Mode::Flexible { duration_secs }) => trigger_span
                .filter(|t| d.state.triggered_at != Some(t.start))
                .map(|t| Window { start: t.start, end: now.saturating_add(secs(duration_secs)) }),
            (None, Mode::Fixed) => d.compiled.window_at(now),
            (None, Mode::Flexible { .. }) => None,
        };
        if let Some(span) = start.filter(|w| w.end > now) {
            let depth = self.depth(&target);
            if let Some(d) = self.items.get_mut(&id) {
                d.state.active = Some(span);
                if d.spec.trigger.is_some() {
                    d.state.triggered_at = trigger_span.map(|t| t.start);
                }
            }
            events.push(DowntimeEvent { id, target, kind: EventKind::Started, notify: depth == 0 });
        } else if d.is_over(now) {
            self.items.remove(&id);
            events.push(DowntimeEvent { id, target, kind: EventKind::Expired, notify: false });
        }
    }

    /// The object entered a problem state at `now`: starts its pending flexible downtimes whose
    /// window contains `now` (Nagios `check_pending_flex_*_downtime`).
    pub fn problem_started(&mut self, target: &Target, now: Timestamp) -> Vec<DowntimeEvent> {
        let mut events = Vec::new();
        let ids: Vec<DowntimeId> = self
            .items
            .values()
            .filter(|d| &d.spec.target == target && d.spec.trigger.is_none() && d.state.active.is_none())
            .filter(|d| matches!(d.spec.mode, Mode::Flexible { .. }) && d.compiled.window_at(now).is_some())
            .map(|d| d.id)
            .collect();
        for id in ids {
            let depth = self.depth(target);
            if let Some(d) = self.items.get_mut(&id) {
                let Mode::Flexible { duration_secs } = d.spec.mode else { continue };
                d.state.active = Some(Window { start: now, end: now.saturating_add(secs(duration_secs)) });
                events.push(DowntimeEvent { id, target: target.clone(), kind: EventKind::Started, notify: depth == 0 });
            }
        }
        // Triggered downtimes follow at once.
        events.extend(self.advance(now));
        events
    }

    /// Number of active downtimes on exactly this object (`scheduled_downtime_depth`).
    pub fn depth(&self, target: &Target) -> usize {
        self.items.values().filter(|d| &d.spec.target == target && d.state.active.is_some()).count()
    }

    /// Whether notifications for the object are suppressed by downtime at `now`: its own or,
    /// for a service, its host's.
    pub fn is_in_downtime(&self, host: &str, service: Option<&str>, now: Timestamp) -> bool {
        self.items.values().any(|d| {
            let t = &d.spec.target;
            t.host == host && (t.service.as_deref() == service || t.service.is_none()) && d.is_in_downtime(now)
        })
    }

    /// A downtime by id.
    pub fn get(&self, id: DowntimeId) -> Option<&Downtime> {
        self.items.get(&id)
    }

    /// All downtimes in id order (to persist or list them).
    pub fn iter(&self) -> impl Iterator<Item = &Downtime> {
        self.items.values()
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(svc: Option<&str>) -> Target {
        Target { host: "h1".into(), service: svc.map(Into::into) }
    }

    fn once(svc: Option<&str>, start: i64, end: i64, mode: Mode, trigger: Option<u64>) -> DowntimeSpec {
        DowntimeSpec {
            target: target(svc),
            schedule: Schedule::Once { start, end },
            mode,
            trigger,
            author: "tester".into(),
            comment: "maintenance".into(),
        }
    }

    fn kinds(ev: &[DowntimeEvent]) -> Vec<(u64, EventKind, bool)> {
        ev.iter().map(|e| (e.id, e.kind, e.notify)).collect()
    }

    #[test]
    fn fixed_downtime_starts_and_ends_on_time() {
        // research/nagios.md §4.9: fixed downtime t+7 .. t+14.
        let mut b = Downtimes::new();
        let d = Downtime::new(1, once(Some("dtme"), 7, 14, Mode::Fixed, None)).unwrap();
        assert!(b.add(d, 0).is_empty());
        assert!(!b.is_in_downtime("h1", Some("dtme"), 6));
        assert_eq!(kinds(&b.advance(7)), vec![(1, EventKind::Started, true)]);
        assert!(b.is_in_downtime("h1", Some("dtme"), 9));
        assert!(b.advance(9).is_empty());
        assert_eq!(kinds(&b.advance(14)), vec![(1, EventKind::Ended, true)]);
        assert!(!b.is_in_downtime("h1", Some("dtme"), 14));
        // The one-off is used up.
        assert!(b.get(1).is_none());
    }

    #[test]
    fn flexible_downtime_starts_on_a_problem_and_lasts_its_duration() {
        // §4.9: window t+7..t+67, duration 5 s, CRITICAL at t+10 → DOWNTIMESTART, t+15 end.
        let mut b = Downtimes::new();
        b.add(Downtime::new(2, once(Some("flex"), 7, 67, Mode::Flexible { duration_secs: 5 }, None)).unwrap(), 7);
        assert!(!b.is_in_downtime("h1", Some("flex"), 8));
        assert!(b.problem_started(&target(Some("other")), 10).is_empty());
        assert_eq!(kinds(&b.problem_started(&target(Some("flex")), 10)), vec![(2, EventKind::Started, true)]);
        assert!(b.is_in_downtime("h1", Some("flex"), 14));
        assert_eq!(kinds(&b.advance(15)), vec![(2, EventKind::Ended, true)]);
        assert!(b.get(2).is_none(), "a flexible downtime runs once");
        // Never started: expires silently when its window passes.
        b.add(Downtime::new(3, once(Some("flex"), 100, 160, Mode::Flexible { duration_secs: 5 }, None)).unwrap(), 100);
        assert_eq!(kinds(&b.advance(160)), vec![(3, EventKind::Expired, false)]);
    }

    #[test]
    fn nested_downtimes_notify_only_at_depth_transitions() {
        let mut b = Downtimes::new();
        b.add(Downtime::new(1, once(None, 0, 100, Mode::Fixed, None)).unwrap(), 0);
        let ev = b.add(Downtime::new(2, once(None, 10, 50, Mode::Fixed, None)).unwrap(), 10);
        assert_eq!(kinds(&ev), vec![(2, EventKind::Started, false)]);
        assert_eq!(b.depth(&target(None)), 2);
        assert_eq!(kinds(&b.advance(50)), vec![(2, EventKind::Ended, false)]);
        assert_eq!(kinds(&b.advance(100)), vec![(1, EventKind::Ended, true)]);
    }

    #[test]
    fn host_downtime_covers_its_services() {
        let mut b = Downtimes::new();
        b.add(Downtime::new(1, once(None, 0, 100, Mode::Fixed, None)).unwrap(), 0);
        assert!(b.is_in_downtime("h1", Some("anything"), 50));
        assert!(b.is_in_downtime("h1", None, 50));
        assert!(!b.is_in_downtime("h2", None, 50));
        b.add(Downtime::new(2, once(Some("svc"), 0, 100, Mode::Fixed, None)).unwrap(), 0);
        assert!(!b.is_in_downtime("h1", Some("other"), 150));
    }

    #[test]
    fn triggered_downtime_follows_its_trigger_even_when_added_late() {
        let mut b = Downtimes::new();
        b.add(Downtime::new(3, once(None, 10, 30, Mode::Fixed, None)).unwrap(), 0);
        b.advance(10);
        // Added after the trigger started: starts at once (Nagios 4.4.6 did not).
        let child = DowntimeSpec {
            target: Target { host: "web".into(), service: None },
            ..once(None, 0, 1, Mode::Fixed, Some(3))
        };
        let ev = b.add(Downtime::new(4, child).unwrap(), 12);
        assert_eq!(kinds(&ev), vec![(4, EventKind::Started, true)]);
        assert!(b.is_in_downtime("web", None, 20));
        let ev = b.advance(30);
        assert_eq!(kinds(&ev), vec![(3, EventKind::Ended, true), (4, EventKind::Ended, true)]);
        // Deleting the trigger removes the child.
        let mut b = Downtimes::new();
        b.add(Downtime::new(3, once(None, 10, 30, Mode::Fixed, None)).unwrap(), 0);
        let flex_child = DowntimeSpec {
            target: Target { host: "web".into(), service: None },
            ..once(None, 0, 1000, Mode::Flexible { duration_secs: 5 }, Some(3))
        };
        b.add(Downtime::new(4, flex_child).unwrap(), 0);
        assert_eq!(kinds(&b.advance(10)), vec![(3, EventKind::Started, true), (4, EventKind::Started, true)]);
        assert_eq!(kinds(&b.advance(15)), vec![(4, EventKind::Ended, true)]);
        let pending = DowntimeSpec { target: target(Some("x")), ..once(None, 0, 1, Mode::Fixed, Some(3)) };
        b.add(Downtime::new(5, pending).unwrap(), 15);
        // A chain: 6 follows 5, which follows 3.
        let chained = DowntimeSpec {
            target: Target { host: "db".into(), service: None },
            ..once(None, 0, 1, Mode::Fixed, Some(5))
        };
        assert_eq!(kinds(&b.add(Downtime::new(6, chained).unwrap(), 15)), vec![(6, EventKind::Started, true)]);
        let late = DowntimeSpec {
            target: Target { host: "db".into(), service: Some("x".into()) },
            ..once(None, 0, 900, Mode::Flexible { duration_secs: 9 }, Some(4))
        };
        b.add(Downtime::new(7, late).unwrap(), 15);
        // Cancelling the trigger cancels what runs with it; 7's trigger is gone, it expires.
        let ev = b.remove(3, 16).unwrap();
        assert_eq!(
            kinds(&ev),
            vec![(3, EventKind::Cancelled, true), (5, EventKind::Cancelled, true), (6, EventKind::Cancelled, true)]
        );
        assert_eq!(kinds(&b.advance(17)), vec![]);
        assert!(b.get(7).is_some());
        assert_eq!(b.iter().count(), 1);
        assert_eq!(b.remove(3, 16), Err(DowntimeError::NoSuchDowntime(3)));
    }

    #[test]
    fn recurring_weekly_window_in_a_time_zone() {
        let spec = DowntimeSpec {
            schedule: Schedule::Recurring {
                cron: "0 2 * * Sun".into(),
                window_secs: 7200,
                time_zone: "Europe/Berlin".into(),
            },
            ..once(None, 0, 1, Mode::Fixed, None)
        };
        let d = Downtime::new(9, spec).unwrap();
        // 2024-06-01 (Saturday) 00:00 UTC .. 2024-06-16.
        let a = 1_717_200_000;
        let w = d.windows_between(a, a + 16 * 86_400);
        let shown: Vec<String> = w
            .iter()
            .map(|w| DateTime::from_timestamp(w.start, 0).unwrap().format("%a %Y-%m-%d %H:%M").to_string())
            .collect();
        // 02:00 in Berlin (CEST, UTC+2) is 00:00 UTC.
        assert_eq!(shown, ["Sun 2024-06-02 00:00", "Sun 2024-06-09 00:00", "Sun 2024-06-16 00:00"]);
        assert!(w.iter().all(|w| w.end - w.start == 7200));
        let sunday = 1_717_286_400; // 2024-06-02 00:00 UTC
        assert!(d.is_in_downtime(sunday + 3600));
        assert!(!d.is_in_downtime(sunday + 7200));
        // A window already running at `a` is included.
        assert_eq!(d.windows_between(sunday + 60, sunday + 61).len(), 1);
        let mut b = Downtimes::new();
        assert_eq!(kinds(&b.add(d, sunday + 10)), vec![(9, EventKind::Started, true)]);
        assert_eq!(kinds(&b.advance(sunday + 7200)), vec![(9, EventKind::Ended, true)]);
        assert!(b.get(9).is_some(), "recurring downtimes stay");
    }

    #[test]
    fn offsets_and_six_field_expressions() {
        let spec = |cron: &str, tz: &str| DowntimeSpec {
            schedule: Schedule::Recurring { cron: cron.into(), window_secs: 60, time_zone: tz.into() },
            ..once(None, 0, 1, Mode::Fixed, None)
        };
        let d = Downtime::new(1, spec("30 0 12 * * *", "+02:00")).unwrap();
        let w = d.windows_between(0, 86_400 * 2);
        assert_eq!(w[0].start, 10 * 3600 + 30);
        assert!(matches!(Downtime::new(1, spec("nonsense", "UTC")), Err(DowntimeError::Cron { .. })));
        assert!(matches!(Downtime::new(1, spec("0 2 * * Sun", "Mars/Olympus")), Err(DowntimeError::TimeZone(_))));
        assert!(Downtime::new(1, spec("* * * * * *", "UTC")).unwrap().windows_between(0, 1 << 40).len() <= MAX_WINDOWS);
    }

    #[test]
    fn validation() {
        assert!(matches!(
            Downtime::new(1, once(None, 5, 5, Mode::Fixed, None)),
            Err(DowntimeError::EmptyWindow { .. })
        ));
        assert_eq!(
            Downtime::new(1, once(None, 5, 9, Mode::Flexible { duration_secs: 0 }, None)).unwrap_err(),
            DowntimeError::NoDuration
        );
    }

    #[test]
    fn spec_and_state_survive_serde() {
        let spec = DowntimeSpec {
            schedule: Schedule::Recurring { cron: "0 2 * * Sun".into(), window_secs: 7200, time_zone: "UTC".into() },
            ..once(Some("s"), 0, 1, Mode::Flexible { duration_secs: 60 }, Some(4))
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<DowntimeSpec>(&json).unwrap(), spec);
        let state = DowntimeState { active: Some(Window { start: 1, end: 2 }), triggered_at: Some(1) };
        let back: DowntimeState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(Downtime::restore(7, spec, back).unwrap().state, state);
    }
}

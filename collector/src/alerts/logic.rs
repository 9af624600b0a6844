//! The notification state machine: what to tell whom, decided on a timer from the
//! checks' current state (not from check results, so a silent passive check still gets
//! its reminders and a problem that outlived a downtime is announced when it ends).
//!
//! Pure: [`Machine::tick`] takes `now` and what the engine shows, and returns the
//! notifications due plus the per-check records that changed (which the outbox stores
//! in the same transaction as the notifications, so a restart neither forgets nor
//! repeats them). The rules are Nagios' (research/nagios.md §4) with its known gaps
//! closed:
//! - only HARD problems notify; a problem-to-problem change (CRITICAL → WARNING)
//!   notifies at once; recovery goes to those who were told about the problem and want
//!   `r`;
//! - reminders every `notification_interval` while unhandled (0: once); the first
//!   notification waits `first_notification_delay` after the hard change;
//! - escalations by notification number, by age of the problem and by its state; one
//!   that becomes valid with time makes a notification due at once; the route's
//!   contacts keep getting them unless the escalation says `also_normal_contacts =
//!   false`;
//! - nothing while acknowledged, in downtime (its own or its host's), flapping, or (for
//!   a service) while its host is not UP; a recovery waits out downtime and flapping too.
//!   When the suppression ends, whatever is due is sent: a problem never announced, a
//!   reminder, a recovery;
//! - one FLAPPING START/STOP notice (contacts with `f`); DOWNTIME START/END notices
//!   (contacts with `s`) for a check in a downtime of its own, whatever its state (as
//!   Nagios), and for one with an open problem or record when its host's downtime holds
//!   it; and an ACKNOWLEDGEMENT to those told about the problem when it is acknowledged
//!   with `notify`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::AlertsConfig;
use crate::engine::CheckKey;

/// What the engine shows about one check at the moment of a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub key: CheckKey,
    /// Upper-case state name (`OK`, `CRITICAL`, `UP`, `DOWN`, …).
    pub state: String,
    /// OK or UP.
    pub good: bool,
    pub hard: bool,
    pub attempt: u32,
    pub max_attempts: u32,
    /// Time of the last hard state change.
    pub since: i64,
    /// Empty from the engine's view; the alerts task fills the notes' from
    /// `EngineHandle::alert_outputs` for the checks notified about.
    pub output: String,
    pub perfdata: String,
    pub acknowledged: bool,
    /// "author: comment" of an acknowledgement placed with `notify` (Nagios'
    /// ACKNOWLEDGEMENT notification goes to those told about the problem).
    pub ack_notice: Option<String>,
    /// Notifications are held by downtime: the check's own or, for a service, its host's.
    pub in_downtime: bool,
    /// A downtime scheduled for this very check (for the host check: the host's), which
    /// Nagios announces with DOWNTIMESTART/END whatever the check's state. A service in
    /// its host's downtime only is held but not announced.
    pub own_downtime: bool,
    pub flapping: bool,
    /// The check's host is UP (always true for the host check itself).
    pub host_up: bool,
    /// The stored series that shows this check on a graph, if any.
    pub metric: Option<String>,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NoteKind {
    Problem,
    Recovery,
    Acknowledgement,
    FlappingStart,
    FlappingStop,
    DowntimeStart,
    DowntimeEnd,
    Test,
}

impl NoteKind {
    pub fn label(self) -> &'static str {
        match self {
            NoteKind::Problem => "PROBLEM",
            NoteKind::Recovery => "RECOVERY",
            NoteKind::Acknowledgement => "ACKNOWLEDGEMENT",
            NoteKind::FlappingStart => "FLAPPING START",
            NoteKind::FlappingStop => "FLAPPING STOP",
            NoteKind::DowntimeStart => "DOWNTIME START",
            NoteKind::DowntimeEnd => "DOWNTIME END",
            NoteKind::Test => "TEST",
        }
    }
}

/// One notification for one contact, before grouping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub kind: NoteKind,
    pub cluster: String,
    pub host: String,
    /// Empty for the host check.
    pub service: String,
    pub state: String,
    pub output: String,
    pub perfdata: String,
    /// Since when the state holds (last hard change).
    pub since: i64,
    pub attempt: u32,
    pub max_attempts: u32,
    /// Nagios' notification number of this problem (0 for notices).
    pub number: u32,
    pub escalated: bool,
    pub time: i64,
    /// Series for the graph link and the inline graph.
    #[serde(default)]
    pub metric: Option<String>,
}

/// A note and who gets it (an index into [`AlertsConfig::contacts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub contact: usize,
    pub note: Note,
}

/// What the machine remembers about one check with an open problem, a notified state
/// or flapping. Stored by the outbox, so it survives restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// Last HARD state seen (`OK` once recovered but still tracked).
    pub state: String,
    pub since: i64,
    /// Problem notifications sent for the current problem.
    pub number: u32,
    /// When the next problem notification is due, if unhandled.
    pub next_at: i64,
    /// The problem state last notified; a recovery is owed while set.
    pub notified: Option<String>,
    /// Contacts told about the current problem (they get the recovery).
    pub notified_contacts: BTreeSet<String>,
    pub flapping: bool,
    pub in_downtime: bool,
    /// Escalations by age already made due.
    pub fired: BTreeSet<usize>,
    /// `notification_interval` 0 and already notified.
    pub done: bool,
    /// Acknowledged at the last tick (an ACKNOWLEDGEMENT goes out on the change).
    #[serde(default)]
    pub acked: bool,
    /// When the check was last missing from the engine's table (after a restart, until
    /// its host's agent is back); the record is dropped after [`FORGET_MISSING_SECS`].
    #[serde(default)]
    pub missing_since: Option<i64>,
}

/// A record whose check stays missing this long is dropped (removed from the
/// configuration, or a host forgotten): a day, far longer than any agent reconnect.
pub const FORGET_MISSING_SECS: i64 = 86_400;

/// The result of a tick.
#[derive(Debug, Default)]
pub struct TickOut {
    pub intents: Vec<Intent>,
    /// Records changed (`Some`) or finished (`None`).
    pub changed: Vec<(CheckKey, Option<Track>)>,
    /// Problems due that no route sends to anyone.
    pub unrouted: u64,
}

pub struct Machine {
    cfg: Arc<AlertsConfig>,
    tracks: HashMap<CheckKey, Track>,
}

impl Machine {
    pub fn new(cfg: Arc<AlertsConfig>, tracks: HashMap<CheckKey, Track>) -> Machine {
        Machine { cfg, tracks }
    }

    /// Checks that must be observed even when OK: a recovery or a flapping stop may be
    /// owed for them.
    pub fn watched(&self) -> std::collections::HashSet<CheckKey> {
        self.tracks.keys().cloned().collect()
    }

    #[cfg(test)]
    pub fn track(&self, key: &CheckKey) -> Option<&Track> {
        self.tracks.get(key)
    }

    /// Route contacts of a check in `state` (`None`: ignore the routes' severity).
    fn routed(&self, key: &CheckKey, state: Option<&str>) -> Vec<usize> {
        let mut out = BTreeSet::new();
        for r in &self.cfg.routes {
            let severity_ok = match (state, &r.severity) {
                (Some(s), Some(list)) => list.iter().any(|x| x == s),
                _ => true,
            };
            if severity_ok && r.select.matches(&key.0, &key.1, &key.2) {
                out.extend(r.contacts.iter().copied());
                if !r.continue_ {
                    break;
                }
            }
        }
        out.into_iter().collect()
    }

    /// Recipients of problem notification `number` of a problem `age` seconds old,
    /// whether an escalation applied, and the reminder interval to use.
    fn problem_recipients(&self, key: &CheckKey, state: &str, number: u32, age: i64) -> (Vec<usize>, bool, i64) {
        let normal = self.routed(key, Some(state));
        let valid: Vec<_> =
            self.cfg.escalations.iter().filter(|e| e.applies((&key.0, &key.1, &key.2), state, number, age)).collect();
        if valid.is_empty() {
            return (normal, false, self.cfg.notification_interval_secs);
        }
        let mut out: BTreeSet<usize> = valid.iter().flat_map(|e| e.contacts.iter().copied()).collect();
        if valid.iter().any(|e| e.also_normal_contacts) {
            out.extend(normal);
        }
        let interval = valid
            .iter()
            .filter_map(|e| e.notification_interval_secs)
            .min()
            .unwrap_or(self.cfg.notification_interval_secs);
        (out.into_iter().collect(), true, interval)
    }

    /// Indices of the contacts with these names (those told about a problem hear of
    /// its acknowledgement and recovery).
    fn contacts_named(&self, names: &BTreeSet<String>) -> Vec<usize> {
        self.cfg.contacts.iter().enumerate().filter(|(_, c)| names.contains(&c.name)).map(|(i, _)| i).collect()
    }

    fn note(o: &Observed, kind: NoteKind, number: u32, escalated: bool, now: i64) -> Note {
        Note {
            kind,
            cluster: o.key.0.clone(),
            host: o.key.1.clone(),
            service: o.key.2.clone(),
            state: o.state.clone(),
            output: o.output.clone(),
            perfdata: o.perfdata.clone(),
            since: o.since,
            attempt: o.attempt,
            max_attempts: o.max_attempts,
            number,
            escalated,
            time: now,
            metric: o.metric.clone(),
        }
    }

    /// Sends `note` to those of `contacts` that want it and are in their period;
    /// returns their names.
    fn emit(&self, out: &mut TickOut, contacts: impl IntoIterator<Item = usize>, note: &Note, now: i64) -> Vec<String> {
        let mut names = Vec::new();
        for i in contacts {
            let c = &self.cfg.contacts[i];
            let wanted = match note.kind {
                NoteKind::Problem | NoteKind::Acknowledgement => c.states.wants_state(&note.state),
                NoteKind::Recovery => c.states.recovery,
                NoteKind::FlappingStart | NoteKind::FlappingStop => c.states.flapping,
                NoteKind::DowntimeStart | NoteKind::DowntimeEnd => c.states.downtime,
                NoteKind::Test => true,
            };
            if wanted && c.period.contains(now) {
                out.intents.push(Intent { contact: i, note: note.clone() });
                names.push(c.name.clone());
            }
        }
        names
    }

    /// One pass over the observed checks (every HARD problem, every flapping check, and
    /// every key of [`Machine::watched`] that still exists).
    pub fn tick(&mut self, now: i64, observed: Vec<Observed>) -> TickOut {
        let mut out = TickOut::default();
        let mut seen = std::collections::HashSet::with_capacity(observed.len());
        for o in observed {
            seen.insert(o.key.clone());
            let before = self.tracks.get(&o.key).cloned();
            let after = self.step(now, &o, before.clone(), &mut out);
            if after != before {
                out.changed.push((o.key.clone(), after.clone()));
            }
            match after {
                Some(t) => {
                    self.tracks.insert(o.key, t);
                }
                None => {
                    self.tracks.remove(&o.key);
                }
            }
        }
        // A watched check missing from the table: its host has not reported since a
        // restart, or the check was removed. Keep what is owed for a while, say nothing.
        let missing: Vec<CheckKey> = self.tracks.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for k in missing {
            let Some(t) = self.tracks.get_mut(&k) else { continue };
            match t.missing_since {
                None => {
                    t.missing_since = Some(now);
                    out.changed.push((k, Some(t.clone())));
                }
                Some(since) if now - since >= FORGET_MISSING_SECS => {
                    self.tracks.remove(&k);
                    out.changed.push((k, None));
                }
                Some(_) => {}
            }
        }
        out
    }

    fn step(&self, now: i64, o: &Observed, track: Option<Track>, out: &mut TickOut) -> Option<Track> {
        let problem = !o.good && o.hard;
        let mut t = match track {
            Some(mut t) => {
                t.missing_since = None;
                t
            }
            None if problem || o.flapping || o.own_downtime => Track {
                state: "OK".into(),
                since: o.since,
                number: 0,
                next_at: 0,
                notified: None,
                notified_contacts: BTreeSet::new(),
                flapping: false,
                // A check first seen in its own downtime is seen as it starts (the engine
                // shows every check in its own downtime): announce it. One first seen as
                // a problem in its host's downtime only was not in downtime of its own.
                in_downtime: o.in_downtime && !o.own_downtime,
                fired: BTreeSet::new(),
                done: false,
                acked: false,
                missing_since: None,
            },
            None => return None,
        };
        if o.flapping != t.flapping {
            t.flapping = o.flapping;
            if !o.in_downtime {
                let kind = if o.flapping { NoteKind::FlappingStart } else { NoteKind::FlappingStop };
                let to = self.routed(&o.key, None);
                self.emit(out, to, &Self::note(o, kind, 0, false, now), now);
            }
        }
        if o.in_downtime != t.in_downtime {
            t.in_downtime = o.in_downtime;
            let kind = if o.in_downtime { NoteKind::DowntimeStart } else { NoteKind::DowntimeEnd };
            let to = self.routed(&o.key, None);
            self.emit(out, to, &Self::note(o, kind, 0, false, now), now);
        }
        if problem {
            if o.state != t.state {
                // A hard change: into a problem, or between two problem states.
                t.next_at = if t.notified.is_none() { o.since + self.cfg.first_notification_delay_secs } else { now };
                t.state = o.state.clone();
                t.since = o.since;
                t.done = false;
            }
            if o.acknowledged != t.acked {
                t.acked = o.acknowledged;
                if let (true, Some(_), Some(text)) = (o.acknowledged, &t.notified, &o.ack_notice) {
                    let to = self.contacts_named(&t.notified_contacts);
                    let mut note = Self::note(o, NoteKind::Acknowledgement, t.number, false, now);
                    note.output = format!("Acknowledged by {text}");
                    self.emit(out, to, &note, now);
                }
            }
            let suppressed = o.acknowledged || o.in_downtime || o.flapping || (!o.key.2.is_empty() && !o.host_up);
            if suppressed {
                return Some(t);
            }
            let age = now - t.since;
            for (i, e) in self.cfg.escalations.iter().enumerate() {
                if e.after_secs > 0
                    && !t.fired.contains(&i)
                    && e.applies((&o.key.0, &o.key.1, &o.key.2), &o.state, t.number + 1, age)
                {
                    t.fired.insert(i);
                    t.next_at = t.next_at.min(now);
                    t.done = false;
                }
            }
            if t.done || now < t.next_at {
                return Some(t);
            }
            let number = t.number + 1;
            let (to, escalated, interval) = self.problem_recipients(&o.key, &o.state, number, age);
            if to.is_empty() {
                out.unrouted += 1;
            }
            let names = self.emit(out, to, &Self::note(o, NoteKind::Problem, number, escalated, now), now);
            t.number = number;
            if !names.is_empty() {
                t.notified = Some(o.state.clone());
                t.notified_contacts.extend(names);
            }
            if interval <= 0 {
                t.done = true;
            } else {
                t.next_at = now + interval;
            }
            return Some(t);
        }
        if !o.good {
            // A SOFT problem: nothing to say yet, nothing owed changes.
            return (t.notified.is_some() || t.flapping).then_some(t);
        }
        // OK (or UP).
        if t.notified.is_some() {
            if o.in_downtime || o.flapping {
                return Some(t);
            }
            let to = self.contacts_named(&t.notified_contacts);
            self.emit(out, to, &Self::note(o, NoteKind::Recovery, t.number + 1, false, now), now);
        }
        t.notified = None;
        t.acked = false;
        t.notified_contacts.clear();
        t.fired.clear();
        t.number = 0;
        t.done = false;
        t.state = o.state.clone();
        t.since = o.since;
        // Kept through its own downtime, so that the end is announced too.
        (t.flapping || (t.in_downtime && o.own_downtime)).then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn machine(alerts: &str) -> Machine {
        let text = format!(
            "[[cluster]]\nname = \"web\"\nkey = \"0123456789abcdef\"\n\
             [[contact]]\nname = \"alice\"\nemail = \"alice@example.com\"\n\
             [[contact]]\nname = \"lead\"\nemail = \"lead@example.com\"\n\
             [[contact]]\nname = \"quiet\"\nemail = \"quiet@example.com\"\nstates = \"c\"\n\
             [[contactgroup]]\nname = \"ops\"\nmembers = [\"alice\", \"quiet\"]\n\
             [[contactgroup]]\nname = \"leads\"\nmembers = [\"lead\"]\n\
             [[route]]\ngroups = [\"ops\"]\n{alerts}"
        );
        let cfg = Config::parse(&text, "t").unwrap();
        Machine::new(Arc::new(cfg.alerts), HashMap::new())
    }

    fn obs(state: &str, since: i64) -> Observed {
        Observed {
            key: ("web".into(), "web01".into(), "http".into()),
            state: state.into(),
            good: state == "OK" || state == "UP",
            hard: true,
            attempt: 3,
            max_attempts: 3,
            since,
            output: format!("{state} - output"),
            perfdata: "time=0.1s".into(),
            acknowledged: false,
            ack_notice: None,
            in_downtime: false,
            own_downtime: false,
            flapping: false,
            host_up: true,
            metric: Some("http_time".into()),
        }
    }

    /// (contact name, kind, state) of each intent.
    fn sent(m: &mut Machine, now: i64, o: Vec<Observed>) -> Vec<(String, NoteKind, String)> {
        let names: Vec<String> = m.cfg.contacts.iter().map(|c| c.name.clone()).collect();
        m.tick(now, o).intents.into_iter().map(|i| (names[i.contact].clone(), i.note.kind, i.note.state)).collect()
    }

    fn p(c: &str, k: NoteKind, s: &str) -> (String, NoteKind, String) {
        (c.into(), k, s.into())
    }

    #[test]
    fn hard_problem_notifies_once_then_recovers() {
        let mut m = machine("[alerts]\nnotification_interval_secs = 0\n");
        assert_eq!(
            sent(&mut m, 100, vec![obs("CRITICAL", 100)]),
            [p("alice", NoteKind::Problem, "CRITICAL"), p("quiet", NoteKind::Problem, "CRITICAL")]
        );
        assert!(sent(&mut m, 101, vec![obs("CRITICAL", 100)]).is_empty());
        assert!(sent(&mut m, 5000, vec![obs("CRITICAL", 100)]).is_empty(), "interval 0: once");
        // `quiet` wants only `c`: no recovery for it.
        assert_eq!(sent(&mut m, 5001, vec![obs("OK", 5001)]), [p("alice", NoteKind::Recovery, "OK")]);
        assert!(m.track(&obs("OK", 0).key).is_none());
        assert!(sent(&mut m, 5002, vec![]).is_empty());
    }

    #[test]
    fn a_check_missing_for_a_while_keeps_its_record() {
        let mut m = machine("[alerts]\nnotification_interval_secs = 0\n");
        assert_eq!(sent(&mut m, 100, vec![obs("CRITICAL", 100)]).len(), 2);
        // After a restart the host is not in the table until its agent is back.
        assert!(sent(&mut m, 101, vec![]).is_empty());
        assert!(sent(&mut m, 130, vec![]).is_empty());
        assert!(sent(&mut m, 131, vec![obs("CRITICAL", 100)]).is_empty(), "not notified again");
        assert_eq!(sent(&mut m, 132, vec![obs("OK", 132)]).len(), 1, "the recovery is still owed");
        // Gone for a day: forgotten.
        sent(&mut m, 200, vec![obs("CRITICAL", 200)]);
        sent(&mut m, 201, vec![]);
        assert!(m.track(&obs("OK", 0).key).is_some());
        sent(&mut m, 201 + FORGET_MISSING_SECS, vec![]);
        assert!(m.track(&obs("OK", 0).key).is_none());
    }

    #[test]
    fn soft_problems_and_soft_recoveries_are_silent() {
        let mut m = machine("");
        let mut soft = obs("CRITICAL", 100);
        soft.hard = false;
        assert!(sent(&mut m, 100, vec![soft]).is_empty());
        assert!(m.watched().is_empty());
    }

    #[test]
    fn reminders_follow_the_interval_on_the_timer() {
        let mut m = machine("[alerts]\nnotification_interval_secs = 60\n");
        assert_eq!(sent(&mut m, 100, vec![obs("WARNING", 100)]).len(), 1, "quiet does not want w");
        assert!(sent(&mut m, 159, vec![obs("WARNING", 100)]).is_empty());
        let again = m.tick(160, vec![obs("WARNING", 100)]).intents;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].note.number, 2);
        // A change between problem states notifies at once, whatever the interval.
        assert_eq!(sent(&mut m, 161, vec![obs("CRITICAL", 161)]).len(), 2);
    }

    #[test]
    fn first_notification_delay_waits_from_the_hard_change() {
        let mut m = machine("[alerts]\nfirst_notification_delay_secs = 30\n");
        assert!(sent(&mut m, 100, vec![obs("CRITICAL", 95)]).is_empty());
        assert!(sent(&mut m, 124, vec![obs("CRITICAL", 95)]).is_empty());
        assert_eq!(sent(&mut m, 125, vec![obs("CRITICAL", 95)]).len(), 2);
        // Recovered before the delay ran out: nothing at all.
        let mut m = machine("[alerts]\nfirst_notification_delay_secs = 30\n");
        assert!(sent(&mut m, 100, vec![obs("CRITICAL", 100)]).is_empty());
        assert!(sent(&mut m, 110, vec![obs("OK", 110)]).is_empty());
    }

    #[test]
    fn acknowledgement_stops_reminders_but_not_the_recovery() {
        let mut m = machine("[alerts]\nnotification_interval_secs = 10\n");
        assert_eq!(sent(&mut m, 100, vec![obs("CRITICAL", 100)]).len(), 2);
        let mut acked = obs("CRITICAL", 100);
        acked.acknowledged = true;
        acked.ack_notice = Some("ops: on it".into());
        let ack = m.tick(101, vec![acked.clone()]).intents;
        assert_eq!(ack.len(), 2, "{ack:?}");
        assert!(ack
            .iter()
            .all(|i| i.note.kind == NoteKind::Acknowledgement && i.note.output == "Acknowledged by ops: on it"));
        for now in 102..200 {
            assert!(sent(&mut m, now, vec![acked.clone()]).is_empty());
        }
        assert_eq!(sent(&mut m, 200, vec![obs("OK", 200)]), [p("alice", NoteKind::Recovery, "OK")]);
    }

    #[test]
    fn downtime_holds_everything_and_the_problem_is_announced_when_it_ends() {
        let mut m = machine("");
        let mut down = obs("CRITICAL", 100);
        down.in_downtime = true;
        for now in 100..150 {
            assert!(sent(&mut m, now, vec![down.clone()]).is_empty(), "at {now}");
        }
        assert_eq!(
            sent(&mut m, 150, vec![obs("CRITICAL", 100)]),
            [
                p("alice", NoteKind::DowntimeEnd, "CRITICAL"),
                p("alice", NoteKind::Problem, "CRITICAL"),
                p("quiet", NoteKind::Problem, "CRITICAL")
            ]
        );
    }

    #[test]
    fn downtime_notices_go_to_contacts_with_s_and_recovery_waits_for_the_end() {
        let mut m = machine("");
        assert_eq!(sent(&mut m, 100, vec![obs("CRITICAL", 100)]).len(), 2);
        let mut ok_in_dt = obs("OK", 120);
        ok_in_dt.in_downtime = true;
        assert_eq!(sent(&mut m, 120, vec![ok_in_dt.clone()]), [p("alice", NoteKind::DowntimeStart, "OK")]);
        assert!(sent(&mut m, 121, vec![ok_in_dt]).is_empty());
        assert_eq!(
            sent(&mut m, 130, vec![obs("OK", 120)]),
            [p("alice", NoteKind::DowntimeEnd, "OK"), p("alice", NoteKind::Recovery, "OK")]
        );
    }

    #[test]
    fn a_healthy_check_in_its_own_downtime_is_announced_and_its_hosts_is_not() {
        let mut m = machine("");
        let mut dt = obs("OK", 50);
        (dt.in_downtime, dt.own_downtime) = (true, true);
        assert_eq!(sent(&mut m, 100, vec![dt.clone()]), [p("alice", NoteKind::DowntimeStart, "OK")]);
        for now in 101..150 {
            assert!(sent(&mut m, now, vec![dt.clone()]).is_empty(), "at {now}");
        }
        assert!(m.track(&dt.key).is_some(), "kept until the downtime ends");
        assert_eq!(sent(&mut m, 150, vec![obs("OK", 50)]), [p("alice", NoteKind::DowntimeEnd, "OK")]);
        assert!(m.track(&dt.key).is_none(), "nothing left to say");
        // Held by its host's downtime only: no notice, nothing kept.
        let mut held = obs("OK", 50);
        held.in_downtime = true;
        assert!(sent(&mut m, 200, vec![held.clone()]).is_empty());
        assert!(m.track(&held.key).is_none());
    }

    #[test]
    fn flapping_gives_one_notice_each_way_and_then_the_current_state() {
        let mut m = machine("[alerts]\nnotification_interval_secs = 0\n");
        let mut f = obs("CRITICAL", 100);
        f.flapping = true;
        assert_eq!(sent(&mut m, 100, vec![f.clone()]), [p("alice", NoteKind::FlappingStart, "CRITICAL")]);
        let mut f_ok = obs("OK", 101);
        f_ok.flapping = true;
        for now in 101..120 {
            let o = if now % 2 == 0 { f.clone() } else { f_ok.clone() };
            assert!(sent(&mut m, now, vec![o]).is_empty(), "at {now}");
        }
        // Flapping stops with the check CRITICAL: the stop notice, and the problem now.
        assert_eq!(
            sent(&mut m, 120, vec![obs("CRITICAL", 118)]),
            [
                p("alice", NoteKind::FlappingStop, "CRITICAL"),
                p("alice", NoteKind::Problem, "CRITICAL"),
                p("quiet", NoteKind::Problem, "CRITICAL"),
            ]
        );
    }

    #[test]
    fn host_down_suppresses_its_services_until_it_is_up() {
        let mut m = machine("");
        let mut svc = obs("CRITICAL", 100);
        svc.host_up = false;
        let mut host = obs("DOWN", 100);
        host.key.2 = String::new();
        assert_eq!(sent(&mut m, 100, vec![host, svc.clone()]), [p("alice", NoteKind::Problem, "DOWN")]);
        let mut up = obs("UP", 150);
        up.key.2 = String::new();
        assert_eq!(
            sent(&mut m, 150, vec![up, obs("CRITICAL", 100)]),
            [
                p("alice", NoteKind::Recovery, "UP"),
                p("alice", NoteKind::Problem, "CRITICAL"),
                p("quiet", NoteKind::Problem, "CRITICAL"),
            ]
        );
    }

    #[test]
    fn escalation_by_number_replaces_or_adds_contacts() {
        let mut m = machine(
            "[alerts]\nnotification_interval_secs = 10\n[[escalation]]\nfirst_notification = 2\nlast_notification = 3\ngroups = [\"leads\"]\nalso_normal_contacts = false\n",
        );
        let who = |v: Vec<(String, NoteKind, String)>| v.into_iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(who(sent(&mut m, 100, vec![obs("CRITICAL", 100)])), ["alice", "quiet"]);
        assert_eq!(who(sent(&mut m, 110, vec![obs("CRITICAL", 100)])), ["lead"]);
        assert_eq!(who(sent(&mut m, 120, vec![obs("CRITICAL", 100)])), ["lead"]);
        assert_eq!(who(sent(&mut m, 130, vec![obs("CRITICAL", 100)])), ["alice", "quiet"]);
        // The recovery reaches everyone who was paged (who want `r`).
        assert_eq!(who(sent(&mut m, 131, vec![obs("OK", 131)])), ["alice", "lead"]);
    }

    #[test]
    fn escalation_by_age_pages_the_lead_when_it_becomes_valid() {
        let mut m = machine(
            "[alerts]\nnotification_interval_secs = 3600\n[[escalation]]\nafter_secs = 1800\ngroups = [\"leads\"]\n",
        );
        assert_eq!(sent(&mut m, 100, vec![obs("CRITICAL", 100)]).len(), 2);
        assert!(sent(&mut m, 1899, vec![obs("CRITICAL", 100)]).is_empty());
        let esc = m.tick(1900, vec![obs("CRITICAL", 100)]).intents;
        let names: Vec<usize> = esc.iter().map(|i| i.contact).collect();
        assert_eq!(names, [0, 1, 2], "lead plus the normal contacts");
        assert!(esc.iter().all(|i| i.note.escalated && i.note.number == 2));
        assert!(sent(&mut m, 1901, vec![obs("CRITICAL", 100)]).is_empty(), "fired once");
    }

    #[test]
    fn escalation_by_severity_waits_for_its_state() {
        // Nagios' escalation_options: the lead hears of problems critical for 30 minutes.
        let mut m = machine(
            "[alerts]\nnotification_interval_secs = 3600\n[[escalation]]\nafter_secs = 1800\nseverity = [\"critical\"]\ngroups = [\"leads\"]\n",
        );
        let who = |v: Vec<(String, NoteKind, String)>| v.into_iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(who(sent(&mut m, 100, vec![obs("WARNING", 100)])), ["alice"]);
        assert!(sent(&mut m, 1900, vec![obs("WARNING", 100)]).is_empty(), "old enough, but a warning");
        // Worse: notified at once, and the escalation counts from the change.
        assert_eq!(who(sent(&mut m, 2000, vec![obs("CRITICAL", 2000)])), ["alice", "quiet"]);
        assert!(sent(&mut m, 3799, vec![obs("CRITICAL", 2000)]).is_empty());
        let esc = m.tick(3800, vec![obs("CRITICAL", 2000)]).intents;
        let names: Vec<usize> = esc.iter().map(|i| i.contact).collect();
        assert_eq!(names, [0, 1, 2], "lead plus the normal contacts");
        assert!(esc.iter().all(|i| i.note.escalated && i.note.state == "CRITICAL"), "{esc:?}");
        // Back to a warning: the route's contacts alone, not escalated.
        let back = m.tick(4000, vec![obs("WARNING", 4000)]).intents;
        assert_eq!((back.len(), back[0].contact, back[0].note.escalated), (1, 0, false), "{back:?}");
    }

    #[test]
    fn contact_period_and_routes_filter() {
        let mut m = machine(
            "[[contact]]\nname = \"night\"\nemail = \"n@example.com\"\nperiod = [\"00:00-06:00\"]\n[[contactgroup]]\nname = \"n\"\nmembers = [\"night\"]\n",
        );
        // Reroute: web01 goes to `n` first, and continues to `ops`.
        let mut cfg = (*m.cfg).clone();
        let n = cfg.contact_index("night").unwrap();
        cfg.routes.insert(
            0,
            super::super::config::Route {
                select: super::super::config::Selector {
                    clusters: None,
                    hosts: Some(regex::Regex::new("^web01$").unwrap()),
                    services: None,
                },
                severity: Some(vec!["CRITICAL".into()]),
                contacts: vec![n],
                continue_: true,
            },
        );
        m.cfg = Arc::new(cfg);
        let day = 1_795_424_400; // 09:00 UTC
        let who = |v: Vec<(String, NoteKind, String)>| v.into_iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(who(sent(&mut m, day, vec![obs("CRITICAL", day)])), ["alice", "quiet"]);
        let mut m2 = Machine::new(m.cfg.clone(), HashMap::new());
        let night = day - 6 * 3600;
        assert_eq!(who(sent(&mut m2, night, vec![obs("CRITICAL", night)])), ["alice", "quiet", "night"]);
        let mut m3 = Machine::new(m.cfg.clone(), HashMap::new());
        assert_eq!(who(sent(&mut m3, night, vec![obs("WARNING", night)])), ["alice"], "severity: critical only");
    }

    #[test]
    fn a_restart_with_stored_records_does_not_repeat() {
        let mut m = machine("[alerts]\nnotification_interval_secs = 600\n");
        let out = m.tick(100, vec![obs("CRITICAL", 100)]);
        let stored: HashMap<_, _> = out.changed.into_iter().filter_map(|(k, t)| Some((k, t?))).collect();
        let mut again = Machine::new(m.cfg.clone(), stored);
        assert!(sent(&mut again, 200, vec![obs("CRITICAL", 100)]).is_empty());
        assert_eq!(sent(&mut again, 700, vec![obs("CRITICAL", 100)]).len(), 2);
    }
}

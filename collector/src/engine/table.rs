//! The engine's table: every host's check instances with their statuses, flap
//! histories and acknowledgements, the downtimes and comments, and what a result, a tick
//! or an operator command does to them.
//!
//! It is plain data behind one mutex, with no I/O and no awaiting: the engine task calls
//! [`Table::tick`] once a second (on a blocking thread) and applies results and commands
//! between ticks; the HTTP handlers read views of it. Changes are handed to the state
//! database as [`db::Batch`]es and announced as [`CheckEvent`]s.
//!
//! Persisting every result of 300,000 checks would write 20,000 rows a second for no
//! benefit, so each object carries a [`Dirty`] level: a result that changes what a
//! restart must resume (state, state type, attempt, flapping, acknowledgement, a passive
//! result's freshness clock) is written at the next tick; a result that only refreshes
//! `last_check` and the output is written at most once per [`LAZY_WRITE_SECS`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_checks::ack::{AckKind, Acknowledgement};
use ganglion_checks::downtime::{self, Downtime, DowntimeEvent, DowntimeId, DowntimeSpec, Downtimes, Target};
use ganglion_checks::flap::{FlapDetector, FlapEvent, FlapThresholds};
use ganglion_checks::plugin::{self as cplugin, CheckSource, PluginOutput};
use ganglion_checks::state::{
    self as cstate, CheckState, Freshness, HostState, Notify, ResultContext, ServiceState, StateSettings, StateType,
    Status, Transition,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::db::{self, HistoryRow, SavedCheck};
use super::defs::{Aggregate, Defs, Effective, Kind};
use super::hosts::{HostDef, HostDefs};
use super::{
    CheckEvent, CheckEventKind, CheckView, Comment, CommentSource, ControlError, EngineStats, PassiveResult,
    Suppression,
};
use crate::state::{now_ms, Host, State};

/// Seconds between writes of an object whose results changed only its last check time
/// and output. After a crash such an object resumes with an output at most this old;
/// its state, attempt and acknowledgement are always current.
pub const LAZY_WRITE_SECS: i64 = 300;

/// New checks start within this many seconds (or their check interval, if shorter),
/// spread by a hash of their name, so 10,000 hosts reconnecting after a restart do not
/// put 300,000 checks into one tick and keep them there.
const MAX_START_SPREAD_SECS: u64 = 15;

/// How urgently an object's row must be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dirty {
    Clean,
    /// Only `last_check` and output changed: written within [`LAZY_WRITE_SECS`].
    Lazy,
    /// Something a restart must resume changed: written at the next tick.
    Now,
}

impl Dirty {
    fn mark(&mut self, level: Dirty) {
        *self = (*self).max(level);
    }
}

/// What the engine remembers of one service or host object besides its definition.
#[derive(Debug, Clone)]
pub struct Obj<S> {
    pub status: Status<S>,
    pub output: PluginOutput,
    pub flap: FlapDetector,
    pub ack: Option<Box<Acknowledgement>>,
    /// The comment id of the acknowledgement, removed with it unless persistent.
    pub ack_comment: Option<u64>,
    pub dirty: Dirty,
    pub written_at: i64,
}

impl<S: CheckState> Obj<S> {
    fn new() -> Obj<S> {
        Obj {
            status: Status::new(),
            output: PluginOutput::default(),
            flap: FlapDetector::new(S::GOOD.as_code()),
            ack: None,
            ack_comment: None,
            dirty: Dirty::Clean,
            written_at: 0,
        }
    }

    /// Whether this object's row is due for writing at `now`.
    fn due(&self, now: i64) -> bool {
        now >= self.write_due(now)
    }

    /// When this object's row is due for writing.
    fn write_due(&self, now: i64) -> i64 {
        match self.dirty {
            Dirty::Clean => i64::MAX,
            Dirty::Lazy => self.written_at.saturating_add(LAZY_WRITE_SECS),
            Dirty::Now => now,
        }
    }
}

/// One check of one host.
#[derive(Debug, Clone)]
pub struct Instance {
    pub def: Arc<Effective>,
    pub obj: Obj<ServiceState>,
    pub next_check: i64,
    pub running: bool,
    /// Last real (not stale) result, for freshness.
    pub last_result: Option<i64>,
    pub last_stale: Option<i64>,
    /// When the engine started watching this check, for freshness without any result.
    pub watched_since: i64,
    /// A metric check's last reading; its output is rendered from it when read, so a
    /// round of 300,000 checks formats no strings.
    pub reading: Option<Reading>,
}

/// What a metric check saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// The value compared with the thresholds (after `divide_by` and `scale`).
    Value(f64),
    /// A pattern check: the worst of the matching metrics, and its name.
    Worst(f64, Arc<str>, usize),
    /// No value (and `missing` gave a state).
    Missing,
}

impl Instance {
    /// The plugin-style output: a metric check's reading rendered, else what the check
    /// wrote.
    pub fn output(&self) -> PluginOutput {
        match &self.reading {
            Some(r) => render_metric(&self.def, r.clone(), self.obj.status.state),
            None => self.obj.output.clone(),
        }
    }
}

/// The output of a metric check, as a plugin would have written it.
pub fn render_metric(def: &Effective, reading: Reading, state: ServiceState) -> PluginOutput {
    let Kind::Metric { metric, divide_by, scale, aggregate, .. } = &def.kind else {
        return PluginOutput::default();
    };
    match reading {
        Reading::Value(v) => {
            let mut what = match divide_by {
                Some(d) if *scale != 1.0 => format!("{metric} / {d} × {scale}"),
                Some(d) => format!("{metric} / {d}"),
                None => metric.clone(),
            };
            if let Some((agg, window)) = aggregate {
                what = format!("{} of {what} over {window} s", agg.as_str());
            }
            PluginOutput {
                output: format!("{state} - {what} = {v:.4}"),
                long_output: String::new(),
                perfdata: format!("'{}'={v}", def.name),
            }
        }
        Reading::Worst(v, name, matched) => PluginOutput {
            output: format!("{state} - {name} = {v:.4} (worst of {matched} matching {metric})"),
            long_output: String::new(),
            perfdata: format!("'{name}'={v}"),
        },
        Reading::Missing => {
            PluginOutput { output: format!("{state} - no value of {metric}"), ..PluginOutput::default() }
        }
    }
}

/// A result's output: text from a plugin or sender, or a metric reading rendered only
/// when something (a log line, an event, a history row) needs the text.
pub enum Output<'a> {
    Text(PluginOutput),
    Reading { def: &'a Effective, reading: Reading, state: ServiceState },
}

impl Output<'_> {
    fn line(&self) -> String {
        match self {
            Output::Text(o) => o.output.clone(),
            Output::Reading { def, reading, state } => render_metric(def, reading.clone(), *state).output,
        }
    }
}

/// One host with its host check and its service checks.
#[derive(Debug)]
pub struct HostEntry {
    pub check: Obj<HostState>,
    pub host_next_check: i64,
    /// Liveness at the last evaluation, so a change is applied at once.
    pub last_up: Option<bool>,
    /// Sorted by name (binary search for passive results).
    pub services: Vec<Instance>,
    /// The earliest time any service needs the tick (a check due, a row to write); the
    /// tick skips the host before it. Reset by anything that changes a service outside
    /// the tick.
    pub next_due: i64,
    /// Tick generation that last saw the host in the collector's table.
    seen: u64,
    /// Its `[[host]]` table, if it has one.
    pub def: Option<Arc<HostDef>>,
    /// No agent: metric checks do not apply; liveness comes from `check_command` or
    /// passive results.
    pub agentless: bool,
    /// The host check's plugin is running.
    pub host_running: bool,
    /// A DOWN result waits until this time for a parent to be checked again, so the
    /// host is not called DOWN when its parent is what failed.
    pub defer_until: Option<i64>,
}

/// What the tick knows about a parent host.
#[derive(Debug, Clone)]
struct ParentSnap {
    up: bool,
    /// A configured host, UP by a check older than [`PARENT_FRESH_SECS`]: check it again
    /// before trusting it.
    verify: Option<(String, String)>,
}

/// A parent checked within this many seconds is trusted as it is.
const PARENT_FRESH_SECS: i64 = 5;

/// How long a child's DOWN waits at most for its parents' checks.
const PARENT_WAIT_SECS: i64 = 30;

/// Where a host's liveness comes from.
#[derive(Clone, Copy)]
enum Liveness<'a> {
    /// The agent's: up or silent past `host_timeout`.
    Agent(bool),
    /// A `[[host]]` without an agent.
    Configured(&'a HostDef),
}

/// A plugin to start: which check, the command, its deadline.
#[derive(Debug)]
pub struct ActiveJob {
    pub cluster: String,
    pub host: String,
    pub service: String,
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// A metric check on stored history: what to fetch (off the table's lock).
#[derive(Debug, Clone)]
pub struct AggregateJob {
    pub cluster: String,
    pub host: String,
    pub service: String,
    pub metric: String,
    pub divide_by: Option<String>,
    pub aggregate: Aggregate,
    pub window_secs: u64,
    pub now: i64,
}

/// What a tick produced for the engine task to do.
#[derive(Debug, Default)]
pub struct TickOutcome {
    pub active: Vec<ActiveJob>,
    pub aggregates: Vec<AggregateJob>,
    pub batch: Option<db::Batch>,
}

/// The downtime lookups of the current second, so a check does not walk the downtime
/// list (and its cron schedules) for every result.
#[derive(Debug, Default)]
struct DowntimeCache {
    hosts: HashSet<String>,
    services: HashMap<String, HashSet<String>>,
}

/// Everything but the hosts, split off so a host's instances can be borrowed mutably
/// while results are applied.
pub struct Ctx {
    pub defs: Defs,
    pub plugin_dir: PathBuf,
    pub host_check_interval: i64,
    pub downtimes: Downtimes,
    downtimes_dirty: bool,
    next_downtime_id: u64,
    pub comments: BTreeMap<u64, Comment>,
    next_comment_id: u64,
    comment_rows: Vec<Comment>,
    deleted_comments: Vec<u64>,
    dt: DowntimeCache,
    history: Vec<HistoryRow>,
    saved: db::Saved,
    pub events: broadcast::Sender<CheckEvent>,
    pub stats: Arc<EngineStats>,
    /// Whether aggregate checks read stored history (`false` without a store: they use
    /// the latest value, as in tests).
    stored_history: bool,
    pub host_defs: HostDefs,
    /// Parent name → its state at the start of the tick.
    parents_now: HashMap<String, ParentSnap>,
    /// Configured hosts to check at once (parents of a host that went down).
    recheck: Vec<(String, String)>,
}

/// The whole table.
pub struct Table {
    /// cluster → host → entry.
    pub hosts: HashMap<String, HashMap<String, HostEntry>>,
    pub ctx: Ctx,
    generation: u64,
    /// `[[host]]` hosts without an agent, each with a `Host` value so they take the same
    /// paths as agent hosts.
    configured: Vec<(Arc<HostDef>, Host)>,
}

/// Host checks: agent liveness is already debounced by `host_timeout`, so a result is
/// HARD at once.
const HOST_SETTINGS: StateSettings =
    StateSettings { max_check_attempts: 1, check_interval_secs: 60, retry_interval_secs: 60 };

fn spread(parts: &[&str], interval_secs: u64) -> i64 {
    let window = interval_secs.min(MAX_START_SPREAD_SECS);
    if window <= 1 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    (h.finish() % window) as i64
}

/// `$HOSTADDRESS$`: the configured address, else the first IP address the agent
/// reported, else the address its connection came from, else its name.
fn host_address(h: &Host, def: Option<&HostDef>) -> String {
    if let Some(a) = def.and_then(|d| d.address.clone()) {
        return a;
    }
    h.facts
        .addresses
        .iter()
        .find_map(|a| a.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()))
        .or_else(|| h.peer.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map_or_else(|| h.name.clone(), |ip| ip.to_string())
}

fn metric_value(h: &Host, name: &str) -> Option<f64> {
    let s = &h.slots[*h.by_name.get(name)?];
    (s.time_ms > 0 && s.value.is_finite()).then_some(s.value)
}

/// The worst of a host's metrics matching a pattern, scaled: the one with the worst
/// state, and of those the one furthest from OK (the largest, as thresholds on device
/// metrics are upper bounds; the smallest when only lower bounds are set).
fn worst_match(
    h: &Host,
    pattern: &super::defs::MetricPattern,
    scale: f64,
    thresholds: &ganglion_checks::range::Thresholds,
) -> Option<(ServiceState, Reading)> {
    let mut worst: Option<(ServiceState, f64, &str)> = None;
    let mut matched = 0;
    // `10:` alerts below 10: there the smallest value is the worst.
    let lower_bounds = thresholds
        .critical
        .or(thresholds.warning)
        .is_some_and(|r| !r.inside && r.end == f64::INFINITY && r.start.is_finite());
    for s in &h.slots {
        if s.time_ms <= 0 || !s.value.is_finite() || !pattern.matches(&s.meta.name) {
            continue;
        }
        matched += 1;
        let v = s.value * scale;
        let state = thresholds.evaluate(v);
        let better = match worst {
            None => true,
            Some((ws, wv, _)) => {
                let (r, wr) = (state_rank(state), state_rank(ws));
                r > wr || (r == wr && if lower_bounds { v < wv } else { v > wv })
            }
        };
        if better {
            worst = Some((state, v, &s.meta.name));
        }
    }
    worst.map(|(state, v, name)| (state, Reading::Worst(v, Arc::from(name), matched)))
}

/// Severity order of service states: OK < WARNING < UNKNOWN < CRITICAL (Nagios' order
/// for a host's worst service).
fn state_rank(s: ServiceState) -> u8 {
    match s {
        ServiceState::Ok => 0,
        ServiceState::Warning => 1,
        ServiceState::Unknown => 2,
        ServiceState::Critical => 3,
    }
}

fn expand(template: &str, vars: &[(&str, &str)], custom: &BTreeMap<String, String>) -> String {
    let mut out = template.to_owned();
    for (k, v) in vars {
        out = out.replace(k, v);
    }
    for (k, v) in custom {
        out = out.replace(&format!("$_{}$", k.to_ascii_uppercase()), v);
    }
    out
}

impl Table {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        defs: Defs,
        plugin_dir: PathBuf,
        host_check_interval: i64,
        mut saved: db::Saved,
        events: broadcast::Sender<CheckEvent>,
        stats: Arc<EngineStats>,
        stored_history: bool,
        now: i64,
    ) -> Table {
        let comments: BTreeMap<u64, Comment> = saved.comments.iter().map(|c| (c.id, c.clone())).collect();
        let next_comment_id = comments.keys().next_back().map_or(1, |m| m + 1).max(saved.next_comment_id);
        let restored = std::mem::take(&mut saved.downtimes);
        let mut ctx = Ctx {
            defs,
            plugin_dir,
            host_check_interval: host_check_interval.max(1),
            downtimes: Downtimes::new(),
            downtimes_dirty: false,
            next_downtime_id: saved.next_downtime_id.max(1),
            comments,
            next_comment_id,
            comment_rows: Vec::new(),
            deleted_comments: Vec::new(),
            dt: DowntimeCache::default(),
            history: Vec::new(),
            saved,
            events,
            stats,
            stored_history,
            host_defs: HostDefs::default(),
            parents_now: HashMap::new(),
            recheck: Vec::new(),
        };
        for (id, spec, state) in restored {
            match Downtime::restore(id, spec, state) {
                Ok(d) => {
                    ctx.next_downtime_id = ctx.next_downtime_id.max(id + 1);
                    // A downtime that ended while the collector was down ends now.
                    let events = ctx.downtimes.add(d, now);
                    ctx.on_downtime_events(events, now);
                }
                Err(e) => tracing::warn!(id, error = %e, "Saved downtime unreadable; dropped."),
            }
        }
        ctx.refresh_downtime_cache(now);
        Table { hosts: HashMap::new(), ctx, generation: 0, configured: Vec::new() }
    }

    /// Takes the `[[host]]` definitions: agent-less hosts get their checks at the next
    /// tick; parents apply to every host.
    pub fn set_hosts(&mut self, defs: HostDefs) {
        self.configured = defs
            .hosts
            .values()
            .map(|d| {
                let mut h = Host::new(&d.cluster, &d.name, String::new());
                h.interval_secs = 0;
                (d.clone(), h)
            })
            .collect();
        self.ctx.host_defs = defs;
    }

    /// The state of every parent host, as the tick starts.
    fn snapshot_parents(&mut self, state: &State, now: i64) {
        self.ctx.parents_now.clear();
        if self.ctx.host_defs.parents.is_empty() {
            return;
        }
        let at = Instant::now();
        for name in self.ctx.host_defs.parent_names() {
            // An agent's liveness is known now; the table may apply it later this tick.
            let snap = if let Some(up) = state.is_up_by_name(name, at) {
                Some(ParentSnap { up, verify: None })
            } else {
                self.hosts.iter().find_map(|(c, m)| {
                    let e = m.get(name)?;
                    let up = e.check.status.state == HostState::Up;
                    let checked = e.check.status.last_check.unwrap_or(i64::MIN);
                    let active = e.def.as_ref().is_some_and(|d| d.check.is_some());
                    let verify = (up && active && now.saturating_sub(checked) > PARENT_FRESH_SECS)
                        .then(|| (c.clone(), name.to_owned()));
                    Some(ParentSnap { up, verify })
                })
            };
            if let Some(snap) = snap {
                self.ctx.parents_now.insert(name.to_owned(), snap);
            }
        }
    }

    /// Number of service checks.
    pub fn check_count(&self) -> usize {
        self.hosts.values().flat_map(|h| h.values()).map(|e| e.services.len()).sum()
    }

    /// One scheduling round at `now`: downtimes advance, new hosts get their checks, due
    /// metric checks and freshness are evaluated, host states follow liveness; returns
    /// the plugins to start and, when `write_room`, the rows to write.
    pub fn tick(&mut self, state: &State, now: i64, write_room: bool) -> TickOutcome {
        self.generation += 1;
        let generation = self.generation;
        let ctx = &mut self.ctx;
        let events = ctx.downtimes.advance(now);
        ctx.on_downtime_events(events, now);
        ctx.refresh_downtime_cache(now);
        let mut out = TickOutcome::default();
        let mut batch = db::Batch::default();
        self.snapshot_parents(state, now);
        let (ctx, hosts) = (&mut self.ctx, &mut self.hosts);
        let mut visit = |h: &Host, live: Liveness<'_>| {
            if !hosts.contains_key(&h.cluster) {
                hosts.insert(h.cluster.clone(), HashMap::new());
            }
            let cluster_map = hosts.get_mut(&h.cluster).expect("inserted above");
            if !cluster_map.contains_key(&h.name) {
                let agentless = matches!(live, Liveness::Configured(_));
                let entry = ctx.new_entry(&h.cluster, &h.name, agentless, now);
                cluster_map.insert(h.name.clone(), entry);
            }
            let entry = cluster_map.get_mut(&h.name).expect("inserted above");
            entry.seen = generation;
            match live {
                Liveness::Agent(up) => ctx.host_check(h, up, entry, now),
                Liveness::Configured(def) => ctx.schedule_host_check(h, def, entry, now, &mut out),
            }
            let host_up = entry.check.status.state == HostState::Up;
            if now >= entry.next_due {
                let mut address = None;
                let mut next_due = i64::MAX;
                let def = entry.def.clone();
                for inst in entry.services.iter_mut() {
                    if !inst.running && inst.next_check <= now {
                        ctx.evaluate(h, def.as_deref(), host_up, inst, now, &mut address, &mut out);
                    }
                    if write_room && inst.obj.due(now) {
                        batch.services.push(db::ServiceRow::of(&h.cluster, &h.name, inst));
                        inst.obj.dirty = Dirty::Clean;
                        inst.obj.written_at = now;
                    }
                    if !inst.running {
                        next_due = next_due.min(inst.next_check);
                    }
                    next_due = next_due.min(inst.obj.write_due(now));
                }
                entry.next_due = next_due;
            }
            if write_room && entry.check.due(now) {
                batch.hosts.push(db::HostRow::of(&h.cluster, &h.name, &entry.check));
                entry.check.dirty = Dirty::Clean;
                entry.check.written_at = now;
            }
        };
        state.visit_hosts(Instant::now(), |h, up| visit(h, Liveness::Agent(up)));
        for (def, h) in &self.configured {
            // A host whose agent reports is the agent's.
            if !state.has_host(&def.cluster, &def.name) {
                visit(h, Liveness::Configured(def));
            }
        }
        // Parents to check now, for hosts whose DOWN waits on them.
        for (c, name) in std::mem::take(&mut ctx.recheck) {
            if let Some(e) = hosts.get_mut(&c).and_then(|m| m.get_mut(&name)) {
                if !e.host_running {
                    e.host_next_check = e.host_next_check.min(now + 1);
                }
            }
        }
        // Hosts the collector forgot (host_expire) take their checks with them; their rows
        // stay in the database and are resumed if the host comes back after a restart.
        for m in self.hosts.values_mut() {
            m.retain(|_, e| e.seen == generation);
        }
        self.hosts.retain(|_, m| !m.is_empty());
        if write_room {
            self.ctx.drain_into(&mut batch);
            if !batch.is_empty() {
                out.batch = Some(batch);
            }
        }
        out
    }

    /// Every dirty row, lazy ones included (at shutdown).
    pub fn flush_all(&mut self, now: i64) -> db::Batch {
        let mut batch = db::Batch::default();
        for (c, m) in self.hosts.iter_mut() {
            for (h, e) in m.iter_mut() {
                for inst in e.services.iter_mut().filter(|i| i.obj.dirty != Dirty::Clean) {
                    batch.services.push(db::ServiceRow::of(c, h, inst));
                    inst.obj.dirty = Dirty::Clean;
                    inst.obj.written_at = now;
                }
                if e.check.dirty != Dirty::Clean {
                    batch.hosts.push(db::HostRow::of(c, h, &e.check));
                    e.check.dirty = Dirty::Clean;
                    e.check.written_at = now;
                }
            }
        }
        self.ctx.drain_into(&mut batch);
        batch
    }

    /// Applies a plugin's result.
    pub fn apply_active(&mut self, job: &ActiveJob, run: super::plugin::PluginRun) {
        self.apply_active_at(job, run, super::now_secs());
    }

    /// [`Table::apply_active`] at a given time.
    pub fn apply_active_at(&mut self, job: &ActiveJob, run: super::plugin::PluginRun, now: i64) {
        let stats = self.ctx.stats.clone();
        stats.plugins_run.fetch_add(1, Ordering::Relaxed);
        if run.timed_out {
            stats.plugins_timed_out.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(host = %job.host, service = %job.service, exit_code = ?run.exit_code, secs = run.duration.as_secs_f64(), "Plugin finished.");
        let Some(entry) = self.hosts.get_mut(&job.cluster).and_then(|m| m.get_mut(&job.host)) else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if job.service.is_empty() {
            entry.host_running = false;
            let mut output = run.output;
            if let Some(code) = run.exit_code.filter(|c| !(0..=3).contains(c)) {
                output.output = cplugin::out_of_bounds_output(i64::from(code), &job.host, None);
            }
            // Nagios' host check mapping: OK and WARNING are UP, anything else DOWN.
            let result = match run.state {
                ServiceState::Ok | ServiceState::Warning => Some(HostState::Up),
                ServiceState::Critical | ServiceState::Unknown => self.ctx.failed_state(&job.host, entry, now),
            };
            match result {
                Some(r) => self.ctx.apply_host(&job.cluster, &job.host, entry, r, output, now),
                // Waiting on a parent: check this host again right after.
                None => entry.host_next_check = now + 1,
            }
            return;
        }
        let host_up = entry.check.status.state == HostState::Up;
        let Ok(i) = entry.services.binary_search_by(|s| s.def.name.as_str().cmp(&job.service)) else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        entry.next_due = i64::MIN;
        let inst = &mut entry.services[i];
        inst.running = false;
        let mut output = run.output;
        if let Some(code) = run.exit_code.filter(|c| !(0..=3).contains(c)) {
            output.output = cplugin::out_of_bounds_output(i64::from(code), &job.host, Some(&job.service));
        }
        self.ctx.apply_service(&job.cluster, &job.host, host_up, inst, run.state, output, now, true, Dirty::Lazy);
    }

    /// Applies the value of an aggregate over stored history (`Ok(None)`: no value in
    /// the window; `Err`: the history could not be read).
    pub fn apply_aggregate(&mut self, job: &AggregateJob, value: Result<Option<f64>, String>) {
        let Some(entry) = self.hosts.get_mut(&job.cluster).and_then(|m| m.get_mut(&job.host)) else {
            self.ctx.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let host_up = entry.check.status.state == HostState::Up;
        let Ok(i) = entry.services.binary_search_by(|s| s.def.name.as_str().cmp(&job.service)) else {
            self.ctx.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        entry.next_due = i64::MIN;
        let inst = &mut entry.services[i];
        inst.running = false;
        let now = job.now;
        match value {
            Ok(v) => self.ctx.apply_metric(&job.cluster, &job.host, host_up, inst, v, now),
            Err(e) => {
                let output = format!("UNKNOWN - could not read the history of {}: {e}", job.metric);
                self.ctx.apply_unknown(&job.cluster, &job.host, host_up, inst, output, now);
            }
        }
    }

    /// Applies a passive result (NSCA, HTTP, external command).
    ///
    /// # Errors
    /// The reason it was refused: an unknown host or service, a host state code that is
    /// not 0–2.
    pub fn apply_passive(&mut self, r: PassiveResult, now: i64) -> Result<(), String> {
        let now = r.time.min(now);
        let Some((cluster, entry)) = find_host_mut(&mut self.hosts, &r.host) else {
            return Err("no such host".to_owned());
        };
        let output = cplugin::parse_output(&r.output);
        if r.service.is_empty() {
            let Some(result) = HostState::from_code(r.code) else {
                return Err(format!("host state code {} is not 0, 1 or 2", r.code));
            };
            let t = entry.check.status.apply(
                &HOST_SETTINGS,
                result,
                now,
                ResultContext { host_up: true, force_hard: true },
            );
            let flap = self.ctx.defs.defaults().flap;
            self.ctx.after_result(
                cluster,
                &r.host,
                None,
                &mut entry.check,
                &t,
                flap,
                now,
                Output::Text(output),
                Dirty::Now,
            );
            return Ok(());
        }
        let host_up = entry.check.status.state == HostState::Up;
        let Ok(i) = entry.services.binary_search_by(|s| s.def.name.as_str().cmp(&r.service)) else {
            return Err("no such service on this host".to_owned());
        };
        let result = cplugin::service_state_from_exit_code(r.code, CheckSource::Passive);
        entry.next_due = i64::MIN;
        let inst = &mut entry.services[i];
        // The freshness clock is what a restart must resume, so a passive result is
        // written at the next tick.
        self.ctx.apply_service(cluster, &r.host, host_up, inst, result, output, now, true, Dirty::Now);
        Ok(())
    }

    /// Makes a host's checks (or one service) due at `now`, so the next scheduling round
    /// runs them instead of waiting for their interval; returns how many were made due.
    ///
    /// # Errors
    /// [`ControlError::NotFound`] when nothing matches.
    pub fn recheck(
        &mut self,
        cluster: Option<&str>,
        host: &str,
        service: Option<&str>,
        now: i64,
    ) -> Result<usize, ControlError> {
        let mut n = 0;
        for (_, m) in self.hosts.iter_mut().filter(|(c, _)| cluster.is_none_or(|x| x == c.as_str())) {
            let Some(entry) = m.get_mut(host) else { continue };
            if service.is_none() {
                entry.host_next_check = now;
                n += 1;
            }
            for inst in entry.services.iter_mut().filter(|i| service.is_none_or(|s| s == i.def.name.as_str())) {
                if !inst.running {
                    inst.next_check = inst.next_check.min(now);
                }
                n += 1;
            }
            entry.next_due = entry.next_due.min(now);
        }
        if n == 0 {
            return Err(ControlError::NotFound(not_found(host, service)));
        }
        Ok(n)
    }

    /// Places an acknowledgement on a host (service `None`) or service, in every cluster
    /// that has it; returns the batch to write and how many objects were acknowledged.
    ///
    /// # Errors
    /// [`ControlError::NotFound`] when nothing matches, [`ControlError::Conflict`] when
    /// every match is OK/UP.
    #[allow(clippy::too_many_arguments)]
    pub fn acknowledge(
        &mut self,
        cluster: Option<&str>,
        host: &str,
        service: Option<&str>,
        kind: AckKind,
        author: &str,
        comment: &str,
        notify: bool,
        persistent: bool,
        now: i64,
    ) -> Result<(db::Batch, usize), ControlError> {
        let mut batch = db::Batch::default();
        let mut found = 0;
        let mut placed = 0;
        let mut refusal = None;
        let ctx = &mut self.ctx;
        for (c, m) in self.hosts.iter_mut().filter(|(c, _)| cluster.is_none_or(|x| x == c.as_str())) {
            let Some(entry) = m.get_mut(host) else { continue };
            match service {
                None => {
                    found += 1;
                    match Acknowledgement::place(
                        entry.check.status.state,
                        kind,
                        author,
                        comment,
                        notify,
                        persistent,
                        now,
                    ) {
                        Ok(ack) => {
                            ctx.set_ack(c, host, None, &mut entry.check, ack, now);
                            batch.hosts.push(db::HostRow::of(c, host, &entry.check));
                            entry.check.dirty = Dirty::Clean;
                            placed += 1;
                        }
                        Err(e) => refusal = Some(e.to_string()),
                    }
                }
                Some(s) => {
                    let Ok(i) = entry.services.binary_search_by(|x| x.def.name.as_str().cmp(s)) else { continue };
                    found += 1;
                    let inst = &mut entry.services[i];
                    match Acknowledgement::place(inst.obj.status.state, kind, author, comment, notify, persistent, now)
                    {
                        Ok(ack) => {
                            ctx.set_ack(c, host, Some(s), &mut inst.obj, ack, now);
                            batch.services.push(db::ServiceRow::of(c, host, inst));
                            inst.obj.dirty = Dirty::Clean;
                            placed += 1;
                        }
                        Err(e) => refusal = Some(e.to_string()),
                    }
                }
            }
        }
        if found == 0 {
            return Err(ControlError::NotFound(not_found(host, service)));
        }
        if placed == 0 {
            return Err(ControlError::Conflict(refusal.unwrap_or_default()));
        }
        ctx.drain_into(&mut batch);
        Ok((batch, placed))
    }

    /// Removes the acknowledgement of a host or service.
    ///
    /// # Errors
    /// [`ControlError::NotFound`] when no such object has an acknowledgement.
    pub fn remove_ack(
        &mut self,
        cluster: Option<&str>,
        host: &str,
        service: Option<&str>,
        now: i64,
    ) -> Result<(db::Batch, usize), ControlError> {
        let mut batch = db::Batch::default();
        let mut removed = 0;
        let ctx = &mut self.ctx;
        for (c, m) in self.hosts.iter_mut().filter(|(c, _)| cluster.is_none_or(|x| x == c.as_str())) {
            let Some(entry) = m.get_mut(host) else { continue };
            match service {
                None => {
                    if ctx.clear_ack(c, host, None, &mut entry.check, "removed", now) {
                        batch.hosts.push(db::HostRow::of(c, host, &entry.check));
                        entry.check.dirty = Dirty::Clean;
                        removed += 1;
                    }
                }
                Some(s) => {
                    let Ok(i) = entry.services.binary_search_by(|x| x.def.name.as_str().cmp(s)) else { continue };
                    let inst = &mut entry.services[i];
                    if ctx.clear_ack(c, host, Some(s), &mut inst.obj, "removed", now) {
                        batch.services.push(db::ServiceRow::of(c, host, inst));
                        inst.obj.dirty = Dirty::Clean;
                        removed += 1;
                    }
                }
            }
        }
        if removed == 0 {
            return Err(ControlError::NotFound(format!("{} has no acknowledgement", not_found_name(host, service))));
        }
        ctx.drain_into(&mut batch);
        Ok((batch, removed))
    }

    /// Schedules a downtime; returns its id.
    ///
    /// # Errors
    /// [`ControlError::Invalid`] for a spec `ganglion-checks` refuses (empty window, bad
    /// cron, unknown trigger).
    pub fn add_downtime(&mut self, spec: DowntimeSpec, now: i64) -> Result<(db::Batch, DowntimeId), ControlError> {
        let ctx = &mut self.ctx;
        if let Some(t) = spec.trigger {
            if ctx.downtimes.get(t).is_none() {
                return Err(ControlError::Invalid(format!("trigger downtime {t} does not exist")));
            }
        }
        let id = ctx.next_downtime_id;
        let d = Downtime::new(id, spec.clone()).map_err(|e| ControlError::Invalid(e.to_string()))?;
        ctx.next_downtime_id += 1;
        let comment = ctx.add_comment(
            &spec.target.host,
            spec.target.service.as_deref(),
            &spec.author,
            &spec.comment,
            CommentSource::Downtime,
            false,
            Some(id),
            now,
        );
        let _ = comment;
        tracing::info!(id, host = %spec.target.host, service = ?spec.target.service, author = %spec.author, "Downtime scheduled.");
        let events = ctx.downtimes.add(d, now);
        ctx.downtimes_dirty = true;
        ctx.on_downtime_events(events, now);
        ctx.refresh_downtime_cache(now);
        let mut batch = db::Batch::default();
        ctx.drain_into(&mut batch);
        Ok((batch, id))
    }

    /// Deletes a downtime (and the downtimes it triggers).
    ///
    /// # Errors
    /// [`ControlError::NotFound`] for an unknown id.
    pub fn remove_downtime(&mut self, id: DowntimeId, now: i64) -> Result<db::Batch, ControlError> {
        let ctx = &mut self.ctx;
        let events = ctx.downtimes.remove(id, now).map_err(|e| ControlError::NotFound(e.to_string()))?;
        tracing::info!(id, "Downtime deleted.");
        ctx.downtimes_dirty = true;
        ctx.remove_downtime_comments(id);
        ctx.on_downtime_events(events, now);
        ctx.refresh_downtime_cache(now);
        let mut batch = db::Batch::default();
        ctx.drain_into(&mut batch);
        Ok(batch)
    }

    /// Adds an operator comment to a host or service.
    ///
    /// # Errors
    /// [`ControlError::NotFound`] for an unknown host or service.
    pub fn add_user_comment(
        &mut self,
        host: &str,
        service: Option<&str>,
        author: &str,
        text: &str,
        now: i64,
    ) -> Result<(db::Batch, u64), ControlError> {
        let known = self
            .hosts
            .values()
            .filter_map(|m| m.get(host))
            .any(|e| service.is_none_or(|s| e.services.binary_search_by(|x| x.def.name.as_str().cmp(s)).is_ok()));
        if !known {
            return Err(ControlError::NotFound(not_found(host, service)));
        }
        let id = self.ctx.add_comment(host, service, author, text, CommentSource::User, true, None, now);
        let mut batch = db::Batch::default();
        self.ctx.drain_into(&mut batch);
        Ok((batch, id))
    }

    /// Deletes a comment. An acknowledgement's comment is deleted with the
    /// acknowledgement, a downtime's with the downtime.
    ///
    /// # Errors
    /// [`ControlError::NotFound`] for an unknown id.
    pub fn remove_comment(&mut self, id: u64) -> Result<db::Batch, ControlError> {
        if self.ctx.comments.remove(&id).is_none() {
            return Err(ControlError::NotFound(format!("comment {id} does not exist")));
        }
        self.ctx.deleted_comments.push(id);
        let mut batch = db::Batch::default();
        self.ctx.drain_into(&mut batch);
        Ok(batch)
    }

    /// Every host check and service check, sorted by cluster, host, service.
    pub fn views(&self, now: i64) -> Vec<CheckView> {
        self.views_where(now, None, None, false)
    }

    /// [`Table::views`] narrowed to a cluster, a host and/or the problems (non-OK, not
    /// UP) before any view is built, so a page about one host or the problems does not
    /// pay for every check of a large table.
    pub fn views_where(&self, now: i64, cluster: Option<&str>, host: Option<&str>, problems: bool) -> Vec<CheckView> {
        let mut out = Vec::new();
        for (c, m) in self.hosts.iter().filter(|(c, _)| cluster.is_none_or(|x| x == c.as_str())) {
            let entries: Box<dyn Iterator<Item = (&String, &HostEntry)>> = match host {
                Some(h) => Box::new(m.get_key_value(h).into_iter()),
                None => Box::new(m.iter()),
            };
            for (h, e) in entries {
                let host_up = e.check.status.state == HostState::Up;
                let host_dt = self.ctx.in_downtime(h, None, now);
                if !problems || !e.check.status.state.is_good() {
                    out.push(CheckView::of(c, h, "", "host", &e.check, e.check.output.clone(), 1, host_up, host_dt));
                }
                for i in e.services.iter().filter(|i| !problems || !i.obj.status.state.is_good()) {
                    let kind = match i.def.kind {
                        Kind::Metric { .. } => "metric",
                        Kind::Active { .. } => "active",
                        Kind::Passive { .. } => "passive",
                    };
                    let dt = host_dt || self.ctx.in_downtime(h, Some(&i.def.name), now);
                    out.push(CheckView::of(
                        c,
                        h,
                        &i.def.name,
                        kind,
                        &i.obj,
                        i.output(),
                        i.def.settings.max_check_attempts,
                        host_up,
                        dt,
                    ));
                }
            }
        }
        out.sort_by(|a, b| (&a.cluster, &a.host, &a.service).cmp(&(&b.cluster, &b.host, &b.service)));
        out
    }

    /// The worst state of each host of `cluster` over its host check and its services:
    /// 0 OK, UP or pending, 1 WARNING, 2 UNKNOWN, 3 CRITICAL, DOWN or UNREACHABLE (the
    /// dashboard's tile colours), without building a view per check.
    pub fn worst_states(&self, cluster: &str) -> Vec<(String, u8)> {
        let Some(m) = self.hosts.get(cluster) else { return Vec::new() };
        m.iter()
            .map(|(h, e)| {
                let host = if e.check.status.state == HostState::Up { 0 } else { 3 };
                let services = e
                    .services
                    .iter()
                    .filter(|i| i.obj.status.last_check.is_some())
                    .map(|i| match i.obj.status.state {
                        ServiceState::Ok => 0,
                        ServiceState::Warning => 1,
                        ServiceState::Unknown => 2,
                        ServiceState::Critical => 3,
                    })
                    .max()
                    .unwrap_or(0);
                (h.clone(), host.max(services))
            })
            .collect()
    }

    /// Output and performance data of each check in `keys` (empty when it is gone).
    pub fn outputs(&self, keys: &[super::CheckKey]) -> Vec<(String, String)> {
        keys.iter()
            .map(|(c, h, svc)| {
                let Some(e) = self.hosts.get(c).and_then(|m| m.get(h)) else { return Default::default() };
                if svc.is_empty() {
                    return (e.check.output.output.clone(), e.check.output.perfdata.clone());
                }
                match e.services.binary_search_by(|x| x.def.name.as_str().cmp(svc)) {
                    Ok(i) => {
                        let o = e.services[i].output();
                        (o.output, o.perfdata)
                    }
                    Err(_) => Default::default(),
                }
            })
            .collect()
    }

    /// What the alerting layer looks at each second: every HARD problem, every flapping
    /// check, every check in a downtime of its own, and the `watched` checks whatever
    /// their state. Cheap for the checks in none of these (a comparison each), so a
    /// round over a large table stays short. Outputs are left empty: [`Table::outputs`]
    /// reads them for the few checks a notification is about.
    pub fn alert_view(
        &self,
        now: i64,
        watched: &std::collections::HashSet<super::CheckKey>,
    ) -> Vec<crate::alerts::logic::Observed> {
        use crate::alerts::logic::Observed;
        let mut out = Vec::new();
        // Keys are only built for hosts with a watched check.
        let watched_hosts: HashSet<&str> = watched.iter().map(|k| k.1.as_str()).collect();
        let wanted = |c: &str, h: &str, s: &str| {
            watched_hosts.contains(h) && watched.contains(&(c.to_owned(), h.to_owned(), s.to_owned()))
        };
        for (c, m) in &self.hosts {
            for (h, e) in m {
                let host_up = e.check.status.state == HostState::Up;
                let host_dt = self.ctx.in_downtime(h, None, now);
                let services_dt = self.ctx.services_in_downtime(h);
                let st = &e.check.status;
                let host_problem = !host_up && st.state_type == StateType::Hard;
                if host_problem || e.check.flap.is_flapping || host_dt || wanted(c, h, "") {
                    out.push(Observed {
                        key: (c.clone(), h.clone(), String::new()),
                        state: st.state.to_string(),
                        good: host_up,
                        hard: st.state_type == StateType::Hard,
                        attempt: st.attempt,
                        max_attempts: 1,
                        since: st.last_hard_state_change.unwrap_or(now),
                        output: String::new(),
                        perfdata: String::new(),
                        acknowledged: e.check.ack.is_some(),
                        ack_notice: ack_notice(e.check.ack.as_deref()),
                        in_downtime: host_dt,
                        own_downtime: host_dt,
                        flapping: e.check.flap.is_flapping,
                        host_up: true,
                        metric: None,
                    });
                }
                for i in &e.services {
                    let st = &i.obj.status;
                    let problem = !st.state.is_good() && st.state_type == StateType::Hard;
                    let own_dt = services_dt.is_some_and(|s| s.contains(&i.def.name));
                    if !(problem || i.obj.flap.is_flapping || own_dt || wanted(c, h, &i.def.name)) {
                        continue;
                    }
                    // The series a graph of this check shows: the metric of a metric check,
                    // the first perfdata label of an active check (stored as
                    // `<service>_<label>`); passive perfdata is not stored.
                    let metric = match &i.def.kind {
                        Kind::Metric { metric, pattern: None, .. } => Some(metric.clone()),
                        Kind::Active { .. } => cplugin::parse_perfdata(&i.obj.output.perfdata)
                            .data
                            .first()
                            .map(|d| super::perfdata_metric(&i.def.name, &d.label)),
                        _ => None,
                    };
                    out.push(Observed {
                        key: (c.clone(), h.clone(), i.def.name.clone()),
                        state: st.state.to_string(),
                        good: st.state.is_good(),
                        hard: st.state_type == StateType::Hard,
                        attempt: st.attempt,
                        max_attempts: i.def.settings.max_check_attempts,
                        since: st.last_hard_state_change.unwrap_or(now),
                        output: String::new(),
                        perfdata: String::new(),
                        acknowledged: i.obj.ack.is_some(),
                        ack_notice: ack_notice(i.obj.ack.as_deref()),
                        in_downtime: host_dt || own_dt,
                        own_downtime: own_dt,
                        flapping: i.obj.flap.is_flapping,
                        host_up,
                        metric,
                    });
                }
            }
        }
        out
    }
}

/// "author: comment" of an acknowledgement placed with `notify`.
fn ack_notice(ack: Option<&Acknowledgement>) -> Option<String> {
    ack.filter(|a| a.notify).map(|a| format!("{}: {}", a.author, a.comment))
}

fn find_host_mut<'a>(
    hosts: &'a mut HashMap<String, HashMap<String, HostEntry>>,
    host: &str,
) -> Option<(&'a str, &'a mut HostEntry)> {
    hosts.iter_mut().find_map(|(c, m)| m.get_mut(host).map(|e| (c.as_str(), e)))
}

fn not_found_name(host: &str, service: Option<&str>) -> String {
    match service {
        Some(s) => {
            format!("service {} of host {}", ganglion_proto::name::escaped(s), ganglion_proto::name::escaped(host))
        }
        None => format!("host {}", ganglion_proto::name::escaped(host)),
    }
}

fn not_found(host: &str, service: Option<&str>) -> String {
    format!("no {}", not_found_name(host, service))
}

impl Ctx {
    fn new_entry(&mut self, cluster: &str, host: &str, agentless: bool, now: i64) -> HostEntry {
        let hk = (cluster.to_owned(), host.to_owned());
        let check = match self.saved.hosts.remove(&hk) {
            Some(s) => Obj {
                status: s.status,
                output: PluginOutput { output: s.output, ..PluginOutput::default() },
                flap: s.flap.unwrap_or_else(|| FlapDetector::new(HostState::GOOD.as_code())),
                ack: s.ack.map(Box::new),
                ack_comment: s.ack_comment,
                dirty: Dirty::Clean,
                written_at: now,
            },
            None => Obj::new(),
        };
        let services = self
            .defs
            .for_host(cluster, host)
            .into_iter()
            // Metric checks read an agent's metrics; a host without one has none.
            .filter(|def| !(agentless && matches!(def.kind, Kind::Metric { .. })))
            .map(|def| {
                let key = (cluster.to_owned(), host.to_owned(), def.name.clone());
                let saved: Option<SavedCheck> = self.saved.checks.remove(&key);
                let start = now + spread(&[cluster, host, &def.name], def.settings.check_interval_secs);
                match saved {
                    Some(s) => Instance {
                        obj: Obj {
                            status: s.status,
                            output: s.output,
                            flap: s.flap.unwrap_or_else(|| FlapDetector::new(ServiceState::GOOD.as_code())),
                            ack: s.ack.map(Box::new),
                            ack_comment: s.ack_comment,
                            dirty: Dirty::Clean,
                            written_at: now,
                        },
                        next_check: start,
                        running: false,
                        last_result: s.last_result,
                        last_stale: None,
                        // A restart does not reset the freshness clock of a known check.
                        watched_since: s.last_result.unwrap_or(now),
                        reading: None,
                        def,
                    },
                    None => Instance {
                        obj: Obj::new(),
                        next_check: start,
                        running: false,
                        last_result: None,
                        last_stale: None,
                        watched_since: now,
                        reading: None,
                        def,
                    },
                }
            })
            .collect();
        let def = self.host_defs.hosts.get(&(cluster.to_owned(), host.to_owned())).cloned();
        let host_next_check = now
            + def
                .as_ref()
                .and_then(|d| d.check.as_ref())
                .map_or(0, |c| spread(&[cluster, host], c.settings.check_interval_secs));
        HostEntry {
            check,
            host_next_check,
            last_up: None,
            services,
            next_due: now,
            seen: 0,
            def,
            agentless,
            host_running: false,
            defer_until: None,
        }
    }

    /// Whether a host that is not UP is UNREACHABLE rather than DOWN: it has parents,
    /// each known, and none of them is UP (Nagios' reachability logic). `Err` lists
    /// parents that are UP by an old check and must be checked again first.
    fn unreachable(&self, host: &str) -> Result<bool, Vec<(String, String)>> {
        let Some(parents) = self.host_defs.parents.get(host) else { return Ok(false) };
        let snaps: Vec<Option<&ParentSnap>> = parents.iter().map(|p| self.parents_now.get(p)).collect();
        let verify: Vec<(String, String)> = snaps.iter().flatten().filter_map(|s| s.verify.clone()).collect();
        if !verify.is_empty() {
            return Err(verify);
        }
        // An unknown parent counts as reachable: better a DOWN page than a hidden one.
        Ok(snaps.iter().all(|s| s.is_some_and(|s| !s.up)))
    }

    /// DOWN or UNREACHABLE for a host that failed; `None` while the answer waits for a
    /// parent's check (at most [`PARENT_WAIT_SECS`]).
    fn failed_state(&mut self, host: &str, entry: &mut HostEntry, now: i64) -> Option<HostState> {
        match self.unreachable(host) {
            Ok(unreachable) => {
                entry.defer_until = None;
                Some(if unreachable { HostState::Unreachable } else { HostState::Down })
            }
            Err(verify) => {
                let until = *entry.defer_until.get_or_insert(now + PARENT_WAIT_SECS);
                if now >= until {
                    entry.defer_until = None;
                    return Some(HostState::Down);
                }
                self.recheck.extend(verify);
                None
            }
        }
    }

    /// Starts the host check of a configured host when it is due.
    fn schedule_host_check(&mut self, h: &Host, def: &HostDef, entry: &mut HostEntry, now: i64, out: &mut TickOutcome) {
        let Some(check) = &def.check else { return };
        if entry.host_running || now < entry.host_next_check {
            return;
        }
        let address = host_address(h, Some(def));
        match self.command_job(h, &address, &check.command, &def.macros, "", check.timeout) {
            Ok(job) => {
                entry.host_running = true;
                out.active.push(job);
            }
            Err(e) => {
                // Checked at configuration time; a macro may still expand badly.
                let out = PluginOutput { output: format!("(Bad host check command: {e})"), ..Default::default() };
                self.apply_host(&h.cluster, &h.name, entry, HostState::Down, out, now);
            }
        }
    }

    /// The plugin job for a command line of a host's check or one of its services.
    fn command_job(
        &self,
        h: &Host,
        address: &str,
        command: &str,
        macros: &BTreeMap<String, String>,
        service: &str,
        timeout: Duration,
    ) -> Result<ActiveJob, String> {
        let line = expand(
            command,
            &[
                ("$HOSTNAME$", &h.name),
                ("$HOSTADDRESS$", address),
                ("$SERVICEDESC$", service),
                ("$CLUSTER$", &h.cluster),
            ],
            macros,
        );
        let mut argv = super::plugin::split_command(&line)?;
        if !argv[0].contains('/') {
            argv[0] = self.plugin_dir.join(&argv[0]).to_string_lossy().into_owned();
        }
        Ok(ActiveJob { cluster: h.cluster.clone(), host: h.name.clone(), service: service.to_owned(), argv, timeout })
    }

    /// Applies a configured host's check result (after reachability).
    fn apply_host(
        &mut self,
        cluster: &str,
        host: &str,
        entry: &mut HostEntry,
        result: HostState,
        out: PluginOutput,
        now: i64,
    ) {
        let settings = entry.def.as_ref().and_then(|d| d.check.as_ref()).map_or(HOST_SETTINGS, |c| c.settings);
        let t = entry.check.status.apply(&settings, result, now, ResultContext { host_up: true, force_hard: false });
        entry.host_next_check = t.next_check;
        if t.state_change {
            tracing::info!(%cluster, %host, state = %t.state, "Host state changed.");
        }
        let flap = self.defs.defaults().flap;
        self.after_result(cluster, host, None, &mut entry.check, &t, flap, now, Output::Text(out), Dirty::Lazy);
    }

    /// Host check: agent liveness. Applied when liveness changed and once per host check
    /// interval otherwise (a passive host result holds until then).
    fn host_check(&mut self, h: &Host, up: bool, entry: &mut HostEntry, now: i64) {
        if entry.last_up == Some(up) && now < entry.host_next_check {
            return;
        }
        let result = if up {
            entry.defer_until = None;
            HostState::Up
        } else {
            match self.failed_state(&h.name, entry, now) {
                Some(s) => s,
                // Asked again next tick: `last_up` stays as it was.
                None => return,
            }
        };
        entry.last_up = Some(up);
        entry.host_next_check = now + self.host_check_interval;
        let t = entry.check.status.apply(&HOST_SETTINGS, result, now, ResultContext::default());
        let silent = (now_ms() - h.last_seen_ms).max(0) as f64 / 1000.0;
        let output = match result {
            HostState::Up => format!("UP - agent reported {silent:.0} s ago"),
            HostState::Down => format!("DOWN - no data from the agent for {silent:.0} s"),
            HostState::Unreachable => {
                format!("UNREACHABLE - no data from the agent for {silent:.0} s, and no parent is UP")
            }
        };
        if t.state_change {
            tracing::info!(cluster = %h.cluster, host = %h.name, state = %t.state, "Host state changed.");
        }
        let flap = self.defs.defaults().flap;
        let out = PluginOutput { output, ..PluginOutput::default() };
        self.after_result(&h.cluster, &h.name, None, &mut entry.check, &t, flap, now, Output::Text(out), Dirty::Lazy);
    }

    /// Evaluates a due check: metric checks and freshness at once, active checks by
    /// queueing their plugin.
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &mut self,
        h: &Host,
        hdef: Option<&HostDef>,
        host_up: bool,
        inst: &mut Instance,
        now: i64,
        address: &mut Option<String>,
        out: &mut TickOutcome,
    ) {
        let def = inst.def.clone();
        match &def.kind {
            // Until a host has sent two batches (the first has no rates yet), a metric it
            // lacks may simply not have arrived: wait, do not alert.
            Kind::Metric { .. } if h.seq.batches < 2 => {}
            Kind::Metric { metric, divide_by, aggregate: Some((aggregate, window_secs)), .. }
                if self.stored_history =>
            {
                inst.running = true;
                out.aggregates.push(AggregateJob {
                    cluster: h.cluster.clone(),
                    host: h.name.clone(),
                    service: def.name.clone(),
                    metric: metric.clone(),
                    divide_by: divide_by.clone(),
                    aggregate: *aggregate,
                    window_secs: *window_secs,
                    now,
                });
            }
            Kind::Metric { pattern: Some(pattern), scale, thresholds, .. } => {
                let worst = worst_match(h, pattern, *scale, thresholds);
                self.apply_metric_reading(&h.cluster, &h.name, host_up, inst, worst, now);
            }
            Kind::Metric { metric, divide_by, .. } => {
                let value = metric_value(h, metric).and_then(|v| match divide_by {
                    Some(d) => metric_value(h, d).filter(|d| *d != 0.0).map(|d| v / d),
                    None => Some(v),
                });
                self.apply_metric(&h.cluster, &h.name, host_up, inst, value, now);
            }
            Kind::Active { command, macros, timeout } => {
                let address = address.get_or_insert_with(|| host_address(h, hdef));
                // The service's macros win over the host's.
                let merged;
                let macros = match hdef {
                    Some(d) if !d.macros.is_empty() => {
                        merged = d.macros.iter().chain(macros).map(|(k, v)| (k.clone(), v.clone())).collect();
                        &merged
                    }
                    _ => macros,
                };
                match self.command_job(h, address, command, macros, &def.name, *timeout) {
                    Ok(job) => {
                        inst.running = true;
                        out.active.push(job);
                    }
                    Err(e) => {
                        let output = format!("(Bad check command: {e})");
                        self.apply_unknown(&h.cluster, &h.name, host_up, inst, output, now);
                    }
                }
            }
            Kind::Passive { freshness, stale_state } => {
                let Some(threshold) = freshness else {
                    inst.next_check = i64::MAX;
                    return;
                };
                let f = Freshness { threshold_secs: threshold.as_secs(), stale_state: *stale_state };
                if let Some(stale) =
                    cstate::check_freshness(&f, inst.last_result, inst.watched_since, inst.last_stale, now)
                {
                    inst.last_stale = Some(now);
                    let out = PluginOutput { output: stale.output, ..Default::default() };
                    self.apply_service(&h.cluster, &h.name, host_up, inst, stale.state, out, now, false, Dirty::Now);
                }
                inst.next_check = now + 1;
            }
        }
    }

    /// Applies a metric check's value (after `divide_by`, before `scale`), or its absence.
    fn apply_metric(
        &mut self,
        cluster: &str,
        host: &str,
        host_up: bool,
        inst: &mut Instance,
        value: Option<f64>,
        now: i64,
    ) {
        let Kind::Metric { scale, thresholds, .. } = &inst.def.kind else { return };
        let reading = value.map(|v| {
            let v = v * scale;
            (thresholds.evaluate(v), Reading::Value(v))
        });
        self.apply_metric_reading(cluster, host, host_up, inst, reading, now);
    }

    /// Applies a metric check's state and reading, or the absence of a value.
    fn apply_metric_reading(
        &mut self,
        cluster: &str,
        host: &str,
        host_up: bool,
        inst: &mut Instance,
        reading: Option<(ServiceState, Reading)>,
        now: i64,
    ) {
        let def = inst.def.clone();
        let Kind::Metric { missing, .. } = &def.kind else { return };
        let (result, reading) = match reading {
            Some(r) => r,
            None => match missing {
                Some(s) => (*s, Reading::Missing),
                None => {
                    inst.next_check = now + def.settings.check_interval_secs as i64;
                    return;
                }
            },
        };
        let ctx = ResultContext { host_up, force_hard: false };
        let t = inst.obj.status.apply(&def.settings, result, now, ctx);
        inst.next_check = t.next_check;
        inst.last_result = Some(now);
        inst.reading = Some(reading.clone());
        let out = Output::Reading { def: &def, reading, state: result };
        self.after_result(cluster, host, Some(&def.name), &mut inst.obj, &t, def.flap, now, out, Dirty::Lazy);
    }

    /// A check that could not be run (its history unreadable, its command bad) is
    /// UNKNOWN with the reason as its output.
    fn apply_unknown(
        &mut self,
        cluster: &str,
        host: &str,
        host_up: bool,
        inst: &mut Instance,
        output: String,
        now: i64,
    ) {
        let out = PluginOutput { output, ..PluginOutput::default() };
        self.apply_service(cluster, host, host_up, inst, ServiceState::Unknown, out, now, true, Dirty::Lazy);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn apply_service(
        &mut self,
        cluster: &str,
        host: &str,
        host_up: bool,
        inst: &mut Instance,
        result: ServiceState,
        output: PluginOutput,
        now: i64,
        real: bool,
        floor: Dirty,
    ) {
        let t = inst.obj.status.apply(&inst.def.settings, result, now, ResultContext { host_up, force_hard: false });
        inst.next_check = t.next_check;
        if real {
            inst.last_result = Some(now);
        }
        // Text from a plugin or sender replaces a metric reading (a passive result for
        // a metric check).
        inst.reading = None;
        let out = Output::Text(output);
        self.after_result(cluster, host, Some(&inst.def.name), &mut inst.obj, &t, inst.def.flap, now, out, floor);
    }

    /// Everything a result does besides the state machine: flap detection, acks that do
    /// not survive, flexible downtime, the event with its notification relevance, the
    /// history row, and how urgently the object must be written.
    #[allow(clippy::too_many_arguments)]
    fn after_result<S: CheckState>(
        &mut self,
        cluster: &str,
        host: &str,
        service: Option<&str>,
        obj: &mut Obj<S>,
        t: &Transition<S>,
        flap: Option<FlapThresholds>,
        now: i64,
        output: Output<'_>,
        floor: Dirty,
    ) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let mut dirty = floor;
        // A SOFT result moves the attempt counter, which a restart must resume.
        if t.state_change || t.hard_state_change || t.state_type == StateType::Soft {
            dirty = Dirty::Now;
        }
        if t.logged {
            tracing::info!(
                %cluster, %host, service = service.unwrap_or(""),
                state = %t.state, state_type = %t.state_type, attempt = t.attempt,
                output = %ganglion_proto::name::escaped(&output.line()),
                "Check alert."
            );
        }
        if let (true, Some(th)) = (t.record_for_flapping, flap) {
            let newest = obj.flap.history()[ganglion_checks::flap::HISTORY_LEN - 1];
            let event = obj.flap.record(t.state.as_code(), th);
            // A transition entering the history must survive a crash; a repeat of the
            // newest state only shifts the window, which the next lazy write keeps.
            if newest != t.state.as_code() || event != FlapEvent::None {
                dirty = Dirty::Now;
            }
            match event {
                FlapEvent::Started { percent } | FlapEvent::Stopped { percent } => {
                    let started = matches!(event, FlapEvent::Started { .. });
                    tracing::info!(%cluster, %host, service = service.unwrap_or(""), percent, started, "Flapping {}.", if started { "started" } else { "stopped" });
                    self.emit(cluster, host, service, now, || CheckEventKind::Flapping { started, percent });
                }
                FlapEvent::None => {}
            }
        }
        if obj.ack.as_ref().is_some_and(|a| !a.survives(t)) {
            let why = if t.state.is_good() { "recovered" } else { "state changed" };
            self.clear_ack(cluster, host, service, obj, why, now);
            dirty = Dirty::Now;
        }
        if !t.state.is_good() && self.downtimes.iter().next().is_some() {
            let target = Target { host: host.to_owned(), service: service.map(str::to_owned) };
            let events = self.downtimes.problem_started(&target, now);
            if !events.is_empty() {
                self.on_downtime_events(events, now);
                self.refresh_downtime_cache(now);
            }
        }
        if t.state_change || t.hard_state_change || t.notify != Notify::None {
            let in_downtime = self.in_downtime(host, service, now);
            let suppressed = match t.notify {
                Notify::None => None,
                Notify::Problem | Notify::Reminder if obj.ack.is_some() => Some(Suppression::Acknowledged),
                _ if in_downtime => Some(Suppression::Downtime),
                _ if obj.flap.is_flapping => Some(Suppression::Flapping),
                _ => None,
            };
            self.emit(cluster, host, service, now, || CheckEventKind::State {
                state: t.state.to_string(),
                state_type: t.state_type,
                attempt: t.attempt,
                previous_state: t.previous_state.to_string(),
                hard_change: t.hard_state_change,
                notify: t.notify,
                suppressed,
                output: output.line(),
            });
        }
        if t.logged || t.hard_state_change {
            let key = (cluster.to_owned(), host.to_owned(), service.unwrap_or("").to_owned());
            self.history.push(HistoryRow::service(&key, t, &output.line(), now));
        }
        if let Output::Text(o) = output {
            obj.output = o;
        }
        obj.dirty.mark(dirty);
    }

    fn emit(&self, cluster: &str, host: &str, service: Option<&str>, now: i64, kind: impl FnOnce() -> CheckEventKind) {
        // Building an event costs allocations; with nobody listening there is no point.
        if self.events.receiver_count() == 0 {
            return;
        }
        let _ = self.events.send(CheckEvent {
            time: now,
            cluster: cluster.to_owned(),
            host: host.to_owned(),
            service: service.unwrap_or("").to_owned(),
            kind: kind(),
        });
    }

    fn set_ack<S: CheckState>(
        &mut self,
        cluster: &str,
        host: &str,
        service: Option<&str>,
        obj: &mut Obj<S>,
        ack: Acknowledgement,
        now: i64,
    ) {
        // A new acknowledgement replaces the old one and its comment.
        if let Some(old) = obj.ack_comment.take() {
            if !obj.ack.as_ref().is_some_and(|a| a.persistent) && self.comments.remove(&old).is_some() {
                self.deleted_comments.push(old);
            }
        }
        let id = self.add_comment(
            host,
            service,
            &ack.author,
            &ack.comment,
            CommentSource::Acknowledgement,
            ack.persistent,
            None,
            now,
        );
        tracing::info!(%cluster, %host, service = service.unwrap_or(""), author = %ack.author, sticky = ack.kind == AckKind::Sticky, "Problem acknowledged.");
        let (author, comment, sticky, notify) =
            (ack.author.clone(), ack.comment.clone(), ack.kind == AckKind::Sticky, ack.notify);
        obj.ack = Some(Box::new(ack));
        obj.ack_comment = Some(id);
        obj.dirty = Dirty::Now;
        self.emit(cluster, host, service, now, || CheckEventKind::Acknowledged { author, comment, sticky, notify });
    }

    /// Removes an object's acknowledgement; returns whether it had one.
    fn clear_ack<S: CheckState>(
        &mut self,
        cluster: &str,
        host: &str,
        service: Option<&str>,
        obj: &mut Obj<S>,
        why: &'static str,
        now: i64,
    ) -> bool {
        let Some(ack) = obj.ack.take() else { return false };
        if let Some(id) = obj.ack_comment.take() {
            // Nagios' `persistent`: the comment outlives the acknowledgement.
            if !ack.persistent && self.comments.remove(&id).is_some() {
                self.deleted_comments.push(id);
            }
        }
        obj.dirty = Dirty::Now;
        tracing::info!(%cluster, %host, service = service.unwrap_or(""), reason = why, "Acknowledgement removed.");
        self.emit(cluster, host, service, now, || CheckEventKind::AckRemoved { reason: why.to_owned() });
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn add_comment(
        &mut self,
        host: &str,
        service: Option<&str>,
        author: &str,
        text: &str,
        source: CommentSource,
        persistent: bool,
        downtime_id: Option<u64>,
        now: i64,
    ) -> u64 {
        let id = self.next_comment_id;
        self.next_comment_id += 1;
        let c = Comment {
            id,
            host: host.to_owned(),
            service: service.map(str::to_owned),
            time: now,
            author: author.to_owned(),
            text: text.to_owned(),
            source,
            persistent,
            downtime_id,
        };
        self.comment_rows.push(c.clone());
        self.comments.insert(id, c);
        id
    }

    fn remove_downtime_comments(&mut self, id: DowntimeId) {
        let gone: Vec<u64> = self.comments.values().filter(|c| c.downtime_id == Some(id)).map(|c| c.id).collect();
        for c in gone {
            self.comments.remove(&c);
            self.deleted_comments.push(c);
        }
    }

    fn on_downtime_events(&mut self, events: Vec<DowntimeEvent>, now: i64) {
        for e in events {
            self.downtimes_dirty = true;
            let kind = e.kind;
            if matches!(
                kind,
                downtime::EventKind::Ended | downtime::EventKind::Cancelled | downtime::EventKind::Expired
            ) && self.downtimes.get(e.id).is_none()
            {
                self.remove_downtime_comments(e.id);
            }
            tracing::info!(id = e.id, host = %e.target.host, service = ?e.target.service, event = ?kind, "Downtime {}.", match kind {
                downtime::EventKind::Started => "started",
                downtime::EventKind::Ended => "ended",
                downtime::EventKind::Cancelled => "cancelled",
                downtime::EventKind::Expired => "expired",
            });
            let (id, notify) = (e.id, e.notify);
            self.emit("", &e.target.host, e.target.service.as_deref(), now, || CheckEventKind::Downtime {
                id,
                kind,
                notify,
            });
        }
    }

    fn refresh_downtime_cache(&mut self, now: i64) {
        self.dt.hosts.clear();
        self.dt.services.clear();
        for d in self.downtimes.iter().filter(|d| d.is_in_downtime(now)) {
            let t = &d.spec().target;
            match &t.service {
                None => {
                    self.dt.hosts.insert(t.host.clone());
                }
                Some(s) => {
                    self.dt.services.entry(t.host.clone()).or_default().insert(s.clone());
                }
            }
        }
    }

    /// Whether notifications of this object are suppressed by downtime: its own or, for a
    /// service, its host's (as of the last refresh in this second).
    pub fn in_downtime(&self, host: &str, service: Option<&str>, _now: i64) -> bool {
        if self.dt.hosts.is_empty() && self.dt.services.is_empty() {
            return false;
        }
        self.dt.hosts.contains(host)
            || service.is_some_and(|s| self.services_in_downtime(host).is_some_and(|set| set.contains(s)))
    }

    /// The services of `host` in a downtime of their own (not the host's), as of the
    /// last refresh; `None` when there are none.
    pub fn services_in_downtime(&self, host: &str) -> Option<&HashSet<String>> {
        if self.dt.services.is_empty() {
            return None;
        }
        self.dt.services.get(host)
    }

    /// Moves history, downtime and comment changes into a batch.
    fn drain_into(&mut self, batch: &mut db::Batch) {
        batch.history.append(&mut self.history);
        if self.downtimes_dirty {
            self.downtimes_dirty = false;
            batch.downtimes = Some(self.downtimes.iter().map(|d| (d.id, d.spec().clone(), d.state)).collect());
            batch.next_downtime_id = Some(self.next_downtime_id);
        }
        batch.comments.append(&mut self.comment_rows);
        batch.deleted_comments.append(&mut self.deleted_comments);
    }
}

/// How a downtime looks in the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DowntimeView {
    pub id: DowntimeId,
    #[serde(flatten)]
    pub spec: DowntimeSpec,
    /// In force now.
    pub in_effect: bool,
    /// The span it is in force for, while it is.
    pub active: Option<downtime::Window>,
    /// The next scheduled window (for flexible downtime: in which it may start).
    pub next_window: Option<downtime::Window>,
}

impl Ctx {
    pub fn downtime_views(&self, now: i64) -> Vec<DowntimeView> {
        self.downtimes
            .iter()
            .map(|d| DowntimeView {
                id: d.id,
                spec: d.spec().clone(),
                in_effect: d.is_in_downtime(now),
                active: d.state.active,
                next_window: d.windows_between(now, now.saturating_add(366 * 86_400)).into_iter().next(),
            })
            .collect()
    }
}

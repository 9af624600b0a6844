//! The checks engine: schedules and runs every host's checks, applies results through
//! the Nagios state machine of `ganglion-checks`, applies acknowledgements, downtime and
//! flap detection, keeps all of it in SQLite, and announces what happened as
//! [`CheckEvent`]s.
//!
//! It owns the timer (one tick per second), the plugin processes (through
//! [`plugin::PluginRunner`]), the table of check instances ([`table::Table`]) and the
//! state database ([`db`]). A metric check reads the collector's in-memory latest
//! values, so it is as current as the last batch; an aggregate check (`aggregate`,
//! `window_secs`) reads its window through `ganglion_store::Store::fetch` on a blocking
//! thread. The check logic itself — ranges, soft/hard, freshness, flapping, ack and
//! downtime rules — lives in `ganglion-checks`. It does not own notifications: it
//! announces what happened as events for the alerting layer.
//!
//! Layout:
//! - `defs`: templates, services, the default pack; effective checks per host.
//! - `table`: hosts, check instances, acks, downtimes, comments; ticks and results.
//! - `plugin`: running active plugins with a deadline and a concurrency cap.
//! - `db`: the SQLite state file and the thread that writes it.
//! - `api`: the HTTP routes of checks (status, problems, history, acks, downtime,
//!   comments, passive results, external commands), write routes behind the admin token.
//! - `bench`: the in-process round benchmark behind `ganglion bench-checks`.
//!
//! # Tasks, threads and bounds
//! - The **engine task** (tokio) owns the loop: each second it runs [`table::Table::tick`]
//!   on a blocking thread (a round over 300,000 checks is CPU work that must not stall a
//!   runtime worker), starts due plugins, and hands changed rows to the writer; between
//!   ticks it applies incoming results and commands. Everything reaches it through one
//!   bounded channel of [`RESULT_QUEUE`] messages; NSCA connections and plugin tasks
//!   wait when it is full, which slows their peers down instead of growing memory.
//! - **Plugin tasks**: one per running plugin, at most `max_concurrent_plugins` at once.
//! - The **state writer thread** (`check-states`, [`db::Writer`]) owns the SQLite
//!   connection; a tick collects rows only while fewer than two batches are queued, so a
//!   slow disk delays writes, not checks. Operator commands (acks, downtimes, comments)
//!   are answered only after their batch is committed.
//! - The table is one `std::sync::Mutex`, held by a tick (milliseconds to a few hundred
//!   for 300,000 checks), by each result batch, and by API reads; never across `.await`.
//!
//! # Events
//! [`EngineHandle::subscribe`] gives a `tokio::sync::broadcast::Receiver<CheckEvent>` of
//! every state change and every notification-relevant result, with
//! [`CheckEventKind::State::notify`] as the state machine says (PROBLEM, reminder,
//! RECOVERY) and `suppressed` saying why it must not be sent now: acknowledged (problems
//! and reminders only; a recovery is always sent), in downtime (the object's or its
//! host's), or flapping. A service problem while its host is down is already
//! `notify: none` (the host alert covers it). Acknowledgements placed and removed,
//! flapping start/stop and downtime start/end/cancel are events too; a downtime event's
//! `notify` is Nagios' depth rule. The channel holds [`EVENT_QUEUE`] events; a receiver
//! that falls further behind gets `Lagged` and loses the oldest, never slowing checks.
//! The alerting layer consumes it.

pub mod api;
pub mod bench;
pub mod db;
pub mod defs;
pub mod hosts;
pub mod plugin;
pub mod table;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_checks::ack::AckKind;
use ganglion_checks::downtime::{self, DowntimeId, DowntimeSpec};
use ganglion_checks::state::{CheckState, Notify, ServiceState, StateType};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::db::{Db, HistoryRow, Writer};
use self::defs::{Defs, Effective};
use self::plugin::PluginRunner;
use self::table::{ActiveJob, AggregateJob, DowntimeView, Obj, Table};
use crate::state::{now_ms, State};

/// Messages waiting for the engine task; senders wait when it is full.
pub const RESULT_QUEUE: usize = 1024;

/// Events a slow subscriber may fall behind by before it loses the oldest.
pub const EVENT_QUEUE: usize = 16_384;

/// Identity of a check: cluster, host, service.
pub type CheckKey = (String, String, String);

/// Counters shown under `checks` in `/api/v1/health`.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Results applied (metric, active, passive, stale, host).
    pub received: AtomicU64,
    /// Passive results (NSCA, HTTP, external commands) applied.
    pub passive: AtomicU64,
    /// Passive results refused (unknown host or service, bad state code).
    pub rejected: AtomicU64,
    /// Status rows written to the state database.
    pub written: AtomicU64,
    /// Results not applied because their check disappeared meanwhile.
    pub dropped: AtomicU64,
    pub plugins_run: AtomicU64,
    pub plugins_timed_out: AtomicU64,
    pub db_errors: AtomicU64,
    /// Service checks in the table (a gauge).
    pub checks: AtomicU64,
    /// Ticks run, and their total and last time on a CPU, so a benchmark can tell what a
    /// round of checks costs.
    pub ticks: AtomicU64,
    pub tick_cpu_us: AtomicU64,
    pub last_tick_us: AtomicU64,
}

/// A passive result from NSCA, HTTP or an external command.
#[derive(Debug, Clone)]
pub struct PassiveResult {
    pub host: String,
    /// Empty for a host result.
    pub service: String,
    pub code: i64,
    /// Plugin output as the check wrote it (newlines are newlines).
    pub output: String,
    /// Seconds since the epoch the result was produced at (checked by the receiver).
    pub time: i64,
}

/// Why a notification must not be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppression {
    Acknowledged,
    Downtime,
    Flapping,
}

/// One thing that happened to a check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckEvent {
    pub time: i64,
    /// Empty for downtime events, which are about a host name in every cluster.
    pub cluster: String,
    pub host: String,
    /// Empty for the host check.
    pub service: String,
    #[serde(flatten)]
    pub kind: CheckEventKind,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CheckEventKind {
    /// A result that changed the state or is notification-relevant.
    State {
        state: String,
        state_type: StateType,
        attempt: u32,
        previous_state: String,
        hard_change: bool,
        /// What the state machine says (`ganglion_checks::state::Transition::notify`).
        notify: Notify,
        /// Why `notify` must not be acted on now; `None`: send it.
        suppressed: Option<Suppression>,
        output: String,
    },
    Acknowledged {
        author: String,
        comment: String,
        sticky: bool,
        /// Send an ACKNOWLEDGEMENT notification.
        notify: bool,
    },
    AckRemoved {
        /// `recovered`, `state changed` or `removed`.
        reason: String,
    },
    Flapping {
        started: bool,
        percent: f64,
    },
    Downtime {
        id: DowntimeId,
        kind: downtime::EventKind,
        /// A depth transition of the object (DOWNTIMESTART/END are sent only then).
        notify: bool,
    },
}

/// Where a comment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommentSource {
    User,
    Acknowledgement,
    Downtime,
}

/// A comment on a host or service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub id: u64,
    pub host: String,
    pub service: Option<String>,
    pub time: i64,
    pub author: String,
    pub text: String,
    pub source: CommentSource,
    /// Kept after its acknowledgement is gone (Nagios' `persistent`).
    pub persistent: bool,
    pub downtime_id: Option<u64>,
}

/// An operator command for the engine.
#[derive(Debug, Clone)]
pub enum Control {
    Ack {
        cluster: Option<String>,
        host: String,
        service: Option<String>,
        kind: AckKind,
        author: String,
        comment: String,
        notify: bool,
        persistent: bool,
    },
    RemoveAck {
        cluster: Option<String>,
        host: String,
        service: Option<String>,
    },
    AddDowntime(DowntimeSpec),
    RemoveDowntime(DowntimeId),
    AddComment {
        host: String,
        service: Option<String>,
        author: String,
        text: String,
    },
    RemoveComment(u64),
    /// Run a host's check (service `None`: every check of the host) at the next round.
    Recheck {
        cluster: Option<String>,
        host: String,
        service: Option<String>,
    },
}

/// Why a command was not carried out.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// E.g. acknowledging an OK check.
    #[error("{0}")]
    Conflict(String),
    #[error("the checks engine is not running")]
    Stopped,
    #[error("could not store the change: {0}")]
    Storage(String),
}

type ControlReply = oneshot::Sender<Result<serde_json::Value, ControlError>>;

enum Incoming {
    Active { job: ActiveJob, run: plugin::PluginRun },
    Aggregates(Vec<(AggregateJob, Result<Option<f64>, String>)>),
    Passive(Vec<PassiveResult>, Option<oneshot::Sender<Vec<Result<(), String>>>>),
    Control(Control, ControlReply),
}

/// Handle to a running engine: cheap to clone, used by the API and the NSCA listener.
#[derive(Clone)]
pub struct EngineHandle {
    table: Arc<Mutex<Table>>,
    stats: Arc<EngineStats>,
    tx: mpsc::Sender<Incoming>,
    events: broadcast::Sender<CheckEvent>,
    reader: Arc<Mutex<Option<rusqlite::Connection>>>,
    state_db: PathBuf,
    nsca: Arc<crate::nsca::NscaStats>,
}

/// The collector's series storage, where aggregate checks read their windows.
#[derive(Clone)]
pub struct SeriesStore(pub Arc<ganglion_store::engine::Store>);

impl std::fmt::Debug for SeriesStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeriesStore")
    }
}

/// Engine settings from `[checks]`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub defs: Defs,
    pub state_db: PathBuf,
    pub plugin_dir: PathBuf,
    pub max_concurrent_plugins: usize,
    pub timeout_state: ServiceState,
    /// Seconds between host liveness results while liveness does not change.
    pub host_check_interval_secs: u64,
    /// Set by the server once storage is open; without it, aggregate checks use the
    /// latest value.
    pub store: Option<SeriesStore>,
    /// `[[host]]`: agent-less hosts and parents.
    pub hosts: hosts::HostDefs,
}

pub(crate) fn now_secs() -> i64 {
    now_ms() / 1000
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The table stays consistent between statements; a panicking holder leaves nothing
    // half-applied that matters more than losing the engine would.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Nanoseconds the calling thread has spent on a CPU (`/proc/thread-self/schedstat`).
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Reads the state database and starts the engine task and the writer thread.
///
/// # Errors
/// When the state database cannot be opened, read or created.
pub fn start(
    cfg: EngineConfig,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> anyhow::Result<(EngineHandle, tokio::task::JoinHandle<()>)> {
    let db = Db::open(&cfg.state_db)?;
    let saved = db.load()?;
    tracing::info!(
        services = saved.checks.len(),
        hosts = saved.hosts.len(),
        downtimes = saved.downtimes.len(),
        comments = saved.comments.len(),
        "Check states resumed."
    );
    let stats = Arc::new(EngineStats::default());
    let writer = Writer::start(db, stats.clone())?;
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    let table = Table::new(
        cfg.defs,
        cfg.plugin_dir,
        i64::try_from(cfg.host_check_interval_secs).unwrap_or(60),
        saved,
        events.clone(),
        stats.clone(),
        cfg.store.is_some(),
        now_secs(),
    );
    let mut table = table;
    table.set_hosts(cfg.hosts);
    let table = Arc::new(Mutex::new(table));
    let (tx, rx) = mpsc::channel(RESULT_QUEUE);
    let handle = EngineHandle {
        table: table.clone(),
        stats: stats.clone(),
        tx: tx.clone(),
        events,
        reader: Arc::new(Mutex::new(None)),
        state_db: cfg.state_db,
        nsca: Arc::new(crate::nsca::NscaStats::default()),
    };
    let runner = PluginRunner::new(cfg.max_concurrent_plugins);
    let timeout_state = cfg.timeout_state;
    let store = cfg.store.map(|s| s.0);
    let task = tokio::spawn(async move {
        run(table, stats, state, store, runner, timeout_state, tx, rx, writer, shutdown).await;
    });
    Ok((handle, task))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    table: Arc<Mutex<Table>>,
    stats: Arc<EngineStats>,
    state: Arc<State>,
    store: Option<Arc<ganglion_store::engine::Store>>,
    runner: PluginRunner,
    timeout_state: ServiceState,
    tx: mpsc::Sender<Incoming>,
    mut rx: mpsc::Receiver<Incoming>,
    writer: Writer,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let room = writer.has_room();
                let (t, s) = (table.clone(), state.clone());
                let started = Instant::now();
                let ticked = tokio::task::spawn_blocking(move || {
                    let cpu = thread_cpu_ns();
                    let mut table = lock(&t);
                    let out = table.tick(&s, now_secs(), room);
                    let checks = table.check_count();
                    drop(table);
                    let cpu = cpu.zip(thread_cpu_ns()).map(|(a, b)| b.saturating_sub(a));
                    (out, checks, cpu)
                })
                .await;
                let (outcome, checks, cpu) = match ticked {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!(error = %e, "Check round panicked.");
                        continue;
                    }
                };
                let cpu_us = cpu.map_or_else(|| started.elapsed().as_micros() as u64, |ns| ns / 1000);
                stats.ticks.fetch_add(1, Ordering::Relaxed);
                stats.tick_cpu_us.fetch_add(cpu_us, Ordering::Relaxed);
                stats.last_tick_us.store(cpu_us, Ordering::Relaxed);
                stats.checks.store(checks as u64, Ordering::Relaxed);
                for job in outcome.active {
                    let runner = runner.clone();
                    let tx = tx.clone();
                    let store = store.clone();
                    tokio::spawn(async move {
                        let run = runner.run(&job.argv, job.timeout, timeout_state).await;
                        if let Some(store) = store {
                            store_perfdata(store, &job, &run.output.perfdata).await;
                        }
                        let _ = tx.send(Incoming::Active { job, run }).await;
                    });
                }
                if let (false, Some(store)) = (outcome.aggregates.is_empty(), &store) {
                    let (store, tx, jobs) = (store.clone(), tx.clone(), outcome.aggregates);
                    tokio::spawn(async move {
                        // Reading windows is file I/O: on a blocking thread, all of this
                        // tick's at once, then back through the queue like plugin results.
                        let done = tokio::task::spawn_blocking(move || {
                            jobs.into_iter().map(|j| {
                                let v = fetch_aggregate(&store, &j);
                                (j, v)
                            }).collect()
                        })
                        .await;
                        match done {
                            Ok(results) => {
                                let _ = tx.send(Incoming::Aggregates(results)).await;
                            }
                            Err(e) => tracing::error!(error = %e, "Reading check windows panicked."),
                        }
                    });
                }
                if let Some(batch) = outcome.batch {
                    writer.send(batch, None);
                }
            }
            Some(msg) = rx.recv() => handle_message(&table, &stats, &writer, msg),
            () = shutdown.cancelled() => {
                let batch = lock(&table).flush_all(now_secs());
                writer.send(batch, None);
                let _ = tokio::task::spawn_blocking(move || writer.close()).await;
                return;
            }
        }
    }
}

fn handle_message(table: &Mutex<Table>, stats: &EngineStats, writer: &Writer, msg: Incoming) {
    match msg {
        Incoming::Active { job, run } => lock(table).apply_active(&job, run),
        Incoming::Aggregates(results) => {
            let mut table = lock(table);
            for (job, value) in results {
                table.apply_aggregate(&job, value);
            }
        }
        Incoming::Passive(results, reply) => {
            let now = now_secs();
            let mut table = lock(table);
            let outcome: Vec<Result<(), String>> = results
                .into_iter()
                .map(|r| {
                    let (host, service) = (r.host.clone(), r.service.clone());
                    table
                        .apply_passive(r, now)
                        .inspect(|()| {
                            stats.passive.fetch_add(1, Ordering::Relaxed);
                        })
                        .inspect_err(|reason| {
                            stats.rejected.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                host = %ganglion_proto::name::escaped(&host),
                                service = %ganglion_proto::name::escaped(&service),
                                %reason,
                                "Rejected passive result."
                            );
                        })
                })
                .collect();
            drop(table);
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
        Incoming::Control(cmd, reply) => {
            let now = now_secs();
            let applied = {
                let mut t = lock(table);
                match cmd {
                    Control::Ack { cluster, host, service, kind, author, comment, notify, persistent } => t
                        .acknowledge(
                            cluster.as_deref(),
                            &host,
                            service.as_deref(),
                            kind,
                            &author,
                            &comment,
                            notify,
                            persistent,
                            now,
                        )
                        .map(|(b, n)| (b, serde_json::json!({ "acknowledged": n }))),
                    Control::RemoveAck { cluster, host, service } => t
                        .remove_ack(cluster.as_deref(), &host, service.as_deref(), now)
                        .map(|(b, n)| (b, serde_json::json!({ "removed": n }))),
                    Control::AddDowntime(spec) => {
                        t.add_downtime(spec, now).map(|(b, id)| (b, serde_json::json!({ "id": id })))
                    }
                    Control::RemoveDowntime(id) => {
                        t.remove_downtime(id, now).map(|b| (b, serde_json::json!({ "removed": id })))
                    }
                    Control::AddComment { host, service, author, text } => t
                        .add_user_comment(&host, service.as_deref(), &author, &text, now)
                        .map(|(b, id)| (b, serde_json::json!({ "id": id }))),
                    Control::RemoveComment(id) => {
                        t.remove_comment(id).map(|b| (b, serde_json::json!({ "removed": id })))
                    }
                    Control::Recheck { cluster, host, service } => t
                        .recheck(cluster.as_deref(), &host, service.as_deref(), now)
                        .map(|n| (db::Batch::default(), serde_json::json!({ "rechecks": n }))),
                }
            };
            match applied {
                Ok((batch, value)) => writer.send(
                    batch,
                    Some(Box::new(move |r: Result<(), String>| {
                        let _ = reply.send(r.map(|()| value).map_err(ControlError::Storage));
                    })),
                ),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
}

/// Reads an aggregate check's window from storage: the aggregate of the metric (or of the
/// per-row ratio `metric / divide_by`) over the known values of the last `window_secs`.
/// `Ok(None)` when the window holds no known value or the series does not exist (yet).
/// Series name of one perfdata label of a service: `<service>_<label>`, made a valid
/// metric name (`/var` → `var`, spaces → `_`).
pub fn perfdata_metric(service: &str, label: &str) -> String {
    let mut name = format!("{}_{}", ganglion_proto::name::sanitize(service), ganglion_proto::name::sanitize(label));
    name.truncate(ganglion_proto::name::MAX_NAME_LEN);
    name
}

/// Stores a plugin's performance data as series of the host, so plugin results get
/// graphs like agent metrics. Values are gauges in the plugin's unit; `U` values and
/// labels that do not make a name are skipped. A storage refusal is logged, not fatal:
/// the check result itself is still applied.
async fn store_perfdata(store: Arc<ganglion_store::engine::Store>, job: &ActiveJob, perfdata: &str) {
    use ganglion_store::engine::{DsKind, SeriesKey, Update};
    if perfdata.is_empty() {
        return;
    }
    let time_ms = now_ms();
    let updates: Vec<Update> = ganglion_checks::plugin::parse_perfdata(perfdata)
        .data
        .into_iter()
        .filter_map(|d| {
            let value = d.value.filter(|v| v.is_finite())?;
            let metric = perfdata_metric(&job.service, &d.label);
            ganglion_proto::name::validate(ganglion_proto::name::NameKind::Metric, &metric).ok()?;
            Some(Update {
                series: SeriesKey::new(&job.cluster, &job.host, &metric),
                kind: DsKind::Gauge,
                time_ms,
                value,
            })
        })
        .collect();
    if updates.is_empty() {
        return;
    }
    let result = tokio::task::spawn_blocking(move || store.append(&updates)).await;
    if let Ok(Err(e)) = result {
        tracing::warn!(host = %job.host, service = %job.service, error = %e, "Could not store plugin performance data.");
    }
}

fn fetch_aggregate(store: &ganglion_store::engine::Store, job: &AggregateJob) -> Result<Option<f64>, String> {
    use ganglion_store::engine::{ReadError, SeriesKey};
    use ganglion_store::rrd::Cf;
    let cf = match job.aggregate {
        defs::Aggregate::Avg | defs::Aggregate::Last => Cf::Average,
        defs::Aggregate::Min => Cf::Min,
        defs::Aggregate::Max => Cf::Max,
    };
    let end = u64::try_from(job.now).unwrap_or(0);
    let start = end.saturating_sub(job.window_secs);
    let fetch = |metric: &str| match store.fetch(&SeriesKey::new(&job.cluster, &job.host, metric), cf, start, end, 1) {
        Ok(f) => Ok(Some(f)),
        Err(ReadError::NotFound) => Ok(None),
        Err(e) => Err(e.to_string()),
    };
    let Some(a) = fetch(&job.metric)? else { return Ok(None) };
    // Rows labelled after the window's start (rrdtool returns the row that covers it too).
    let rows = |f: &ganglion_store::rrd::Fetched| -> Vec<(u64, f64)> {
        (0..f.rows.len())
            .filter(|&i| f.time(i) > start && f.time(i) <= end.max(f.start + f.step))
            .map(|i| (f.time(i), f.rows[i].first().copied().unwrap_or(f64::NAN)))
            .collect()
    };
    let values: Vec<f64> = match &job.divide_by {
        None => rows(&a).into_iter().map(|(_, v)| v).collect(),
        Some(d) => {
            let Some(b) = fetch(d)? else { return Ok(None) };
            let by_time: std::collections::HashMap<u64, f64> = rows(&b).into_iter().collect();
            rows(&a).into_iter().filter_map(|(t, v)| by_time.get(&t).filter(|d| **d != 0.0).map(|d| v / d)).collect()
        }
    };
    Ok(job.aggregate.of(values))
}

/// An acknowledgement as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AckView {
    pub author: String,
    pub comment: String,
    pub sticky: bool,
    pub time: i64,
}

/// One check as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckView {
    pub cluster: String,
    pub host: String,
    /// Empty for the host check.
    pub service: String,
    /// `host`, `metric`, `active` or `passive`.
    pub kind: &'static str,
    pub state: String,
    pub state_type: String,
    pub attempt: u32,
    pub max_attempts: u32,
    pub last_check: Option<i64>,
    pub last_state_change: Option<i64>,
    pub last_hard_state_change: Option<i64>,
    pub output: String,
    pub long_output: String,
    pub perfdata: String,
    /// `true` until the first result.
    pub pending: bool,
    /// Non-OK (or host not UP).
    pub problem: bool,
    pub host_up: bool,
    pub acknowledged: bool,
    pub ack: Option<AckView>,
    /// The check or its host is in scheduled downtime.
    pub in_downtime: bool,
    pub flapping: bool,
    pub percent_state_change: f64,
    /// A problem someone already knows about: acknowledged, in downtime, or a service of
    /// a host that is not UP.
    pub handled: bool,
}

impl CheckView {
    #[allow(clippy::too_many_arguments)]
    fn of<S: CheckState>(
        cluster: &str,
        host: &str,
        service: &str,
        kind: &'static str,
        obj: &Obj<S>,
        output: ganglion_checks::plugin::PluginOutput,
        max_attempts: u32,
        host_up: bool,
        in_downtime: bool,
    ) -> CheckView {
        let problem = !obj.status.state.is_good();
        CheckView {
            cluster: cluster.to_owned(),
            host: host.to_owned(),
            service: service.to_owned(),
            kind,
            state: obj.status.state.to_string(),
            state_type: obj.status.state_type.to_string(),
            attempt: obj.status.attempt,
            max_attempts,
            last_check: obj.status.last_check,
            last_state_change: obj.status.last_state_change,
            last_hard_state_change: obj.status.last_hard_state_change,
            output: output.output,
            long_output: output.long_output,
            perfdata: output.perfdata,
            pending: obj.status.last_check.is_none(),
            problem,
            host_up,
            acknowledged: obj.ack.is_some(),
            ack: obj.ack.as_ref().map(|a| AckView {
                author: a.author.clone(),
                comment: a.comment.clone(),
                sticky: a.kind == AckKind::Sticky,
                time: a.time,
            }),
            in_downtime,
            flapping: obj.flap.is_flapping,
            percent_state_change: (obj.flap.percent * 100.0).round() / 100.0,
            handled: obj.ack.is_some() || in_downtime || (!service.is_empty() && !host_up),
        }
    }
}

impl EngineHandle {
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Counters of the NSCA listener (zero when it is off).
    pub fn nsca_stats(&self) -> &Arc<crate::nsca::NscaStats> {
        &self.nsca
    }

    /// Every host check and service check, sorted by cluster, host, service (blocking:
    /// call from a blocking thread for large tables).
    pub fn status(&self) -> Vec<CheckView> {
        lock(&self.table).views(now_secs())
    }

    /// Checks of a cluster, a host and/or only the problems (see [`table::Table::views_where`]).
    pub fn status_where(&self, cluster: Option<&str>, host: Option<&str>, problems: bool) -> Vec<CheckView> {
        lock(&self.table).views_where(now_secs(), cluster, host, problems)
    }

    /// Worst state per host of a cluster (see [`table::Table::worst_states`]).
    pub fn worst_states(&self, cluster: &str) -> Vec<(String, u8)> {
        lock(&self.table).worst_states(cluster)
    }

    /// What alerting needs this second (blocking; see [`table::Table::alert_view`]), and
    /// how long the table's lock was held for it.
    pub fn alert_view(
        &self,
        watched: &std::collections::HashSet<CheckKey>,
    ) -> (Vec<crate::alerts::logic::Observed>, Duration) {
        let table = lock(&self.table);
        let held = Instant::now();
        let view = table.alert_view(now_secs(), watched);
        drop(table);
        (view, held.elapsed())
    }

    /// Output and performance data of these checks (blocking).
    pub fn alert_outputs(&self, keys: &[CheckKey]) -> Vec<(String, String)> {
        lock(&self.table).outputs(keys)
    }

    /// The effective checks of a host with where each setting came from.
    pub fn effective(&self, cluster: &str, host: &str) -> Vec<Arc<Effective>> {
        let t = lock(&self.table);
        let agentless = t.hosts.get(cluster).and_then(|m| m.get(host)).is_some_and(|e| e.agentless);
        let mut list = t.ctx.defs.for_host(cluster, host);
        list.retain(|d| !(agentless && matches!(d.kind, defs::Kind::Metric { .. })));
        list
    }

    /// The `[[host]]` table of a host, by name (in any cluster).
    pub fn host_def(&self, host: &str) -> Option<Arc<hosts::HostDef>> {
        lock(&self.table).ctx.host_defs.hosts.values().find(|d| d.name == host).cloned()
    }

    /// Downtimes with their next window and whether they are in effect.
    pub fn downtimes(&self) -> Vec<DowntimeView> {
        lock(&self.table).ctx.downtime_views(now_secs())
    }

    /// Comments, oldest first.
    pub fn comments(&self) -> Vec<Comment> {
        lock(&self.table).ctx.comments.values().cloned().collect()
    }

    /// A receiver of every [`CheckEvent`] from now on.
    #[cfg_attr(not(test), allow(dead_code, reason = "alerting reads the table on its timer instead"))]
    pub fn subscribe(&self) -> broadcast::Receiver<CheckEvent> {
        self.events.subscribe()
    }

    /// State history, newest first (blocking).
    ///
    /// # Errors
    /// When the state database cannot be read.
    pub fn history(&self, host: Option<&str>, service: Option<&str>, limit: usize) -> anyhow::Result<Vec<HistoryRow>> {
        let mut reader = lock(&self.reader);
        if reader.is_none() {
            *reader = Some(db::open_reader(&self.state_db)?);
        }
        db::history(reader.as_ref().expect("opened above"), host, service, limit)
    }

    /// Submits a passive result and waits until it is applied or refused.
    ///
    /// # Errors
    /// The refusal reason (unknown host or service, bad code), or that the engine stopped.
    pub async fn submit(&self, r: PassiveResult) -> Result<(), String> {
        let mut out = self.submit_all(vec![r]).await?;
        out.pop().unwrap_or(Ok(()))
    }

    /// Submits results and waits until each is applied or refused.
    ///
    /// # Errors
    /// When the engine stopped.
    pub async fn submit_all(&self, results: Vec<PassiveResult>) -> Result<Vec<Result<(), String>>, String> {
        let (tx, rx) = oneshot::channel();
        let stopped = || "the checks engine is not running".to_owned();
        self.tx.send(Incoming::Passive(results, Some(tx))).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Hands results to the engine without waiting for them to be applied (waits only
    /// while the engine's queue is full). Refusals are counted and logged by the engine.
    ///
    /// # Errors
    /// When the engine stopped.
    pub async fn submit_nowait(&self, results: Vec<PassiveResult>) -> Result<(), String> {
        self.tx.send(Incoming::Passive(results, None)).await.map_err(|_| "the checks engine is not running".to_owned())
    }

    /// Carries out an operator command; answers once the change is in the state database.
    ///
    /// # Errors
    /// [`ControlError`] saying what was wrong.
    pub async fn control(&self, cmd: Control) -> Result<serde_json::Value, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Incoming::Control(cmd, tx)).await.map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }
}

#[cfg(test)]
pub(crate) mod tests;

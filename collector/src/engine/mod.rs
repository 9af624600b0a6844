//! The checks engine: schedules and runs every host's checks, applies results through
//! the Nagios state machine of `ganglion-checks`, and keeps the states in SQLite.
//!
//! It owns the timer (one tick per second), the plugin processes (through
//! [`plugin::PluginRunner`]), the table of check instances and the state database. It
//! reads metric values from the collector's in-memory latest values, never from files,
//! so a metric check is as current as the last batch. The check logic itself — ranges,
//! soft/hard, freshness — lives in `ganglion-checks`.
//!
//! Layout:
//! - `defs`: templates, services, the default pack; effective checks per host.
//! - `plugin`: running active plugins with a deadline and a concurrency cap.
//! - `db`: the SQLite state file (statuses, state history).
//!
//! Threads: the engine task runs on the tokio runtime and never blocks on I/O; plugin
//! runs are tasks that report back over a bounded channel; SQLite writes happen on one
//! blocking thread per tick, batched in a transaction.

pub mod db;
pub mod defs;
pub mod plugin;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_checks::plugin::PluginOutput;
use ganglion_checks::state::{
    self as cstate, Freshness, HostState, HostStatus, ResultContext, ServiceState, ServiceStatus, StateSettings,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::db::{Db, HistoryRow, SavedCheck};
use self::defs::{Defs, Effective, Kind};
use self::plugin::PluginRunner;
use crate::state::{now_ms, Host, State};

/// Results waiting to be applied; plugin tasks wait when it is full.
const RESULT_QUEUE: usize = 1024;

/// Identity of a check: cluster, host, service.
pub type CheckKey = (String, String, String);

/// Counters shown under `checks` in `/api/v1/health`.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Results applied (metric, active, passive, stale).
    pub received: AtomicU64,
    /// Passive results refused (unknown host or service, bad state code).
    pub rejected: AtomicU64,
    /// Status rows written to the state database.
    pub written: AtomicU64,
    /// Results not applied because their check disappeared meanwhile.
    pub dropped: AtomicU64,
    pub plugins_run: AtomicU64,
    pub plugins_timed_out: AtomicU64,
    pub db_errors: AtomicU64,
}

/// One check of one host.
#[derive(Debug, Clone)]
struct Instance {
    def: Effective,
    status: ServiceStatus,
    output: PluginOutput,
    next_check: i64,
    running: bool,
    /// Last real (not stale) result, for freshness.
    last_result: Option<i64>,
    last_stale: Option<i64>,
    /// When the engine started watching this check, for freshness without any result.
    watched_since: i64,
    dirty: bool,
}

#[derive(Debug, Clone)]
struct HostCheck {
    status: HostStatus,
    output: String,
    next_check: i64,
    dirty: bool,
}

/// A passive result from NSCA or HTTP.
#[derive(Debug, Clone)]
pub struct PassiveResult {
    pub host: String,
    /// Empty for a host result.
    pub service: String,
    pub code: i64,
    pub output: String,
    /// Seconds since the epoch the result was produced at (checked by the receiver).
    pub time: i64,
}

enum Incoming {
    Active { key: CheckKey, run: plugin::PluginRun },
    Passive(PassiveResult, tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// Handle to a running engine: cheap to clone, used by the API and the NSCA listener.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Incoming>,
}

struct Inner {
    defs: Defs,
    checks: Mutex<BTreeMap<CheckKey, Instance>>,
    hosts: Mutex<BTreeMap<(String, String), HostCheck>>,
    stats: EngineStats,
    db: Mutex<Db>,
    plugin_dir: PathBuf,
}

/// Engine settings from `[checks]`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub defs: Defs,
    pub state_db: PathBuf,
    pub plugin_dir: PathBuf,
    pub max_concurrent_plugins: usize,
    pub timeout_state: ServiceState,
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

fn lock_all<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the engine task.
///
/// # Errors
/// When the state database cannot be opened or created.
pub fn start(
    cfg: EngineConfig,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> anyhow::Result<(EngineHandle, tokio::task::JoinHandle<()>)> {
    let db = Db::open(&cfg.state_db)?;
    let (tx, rx) = mpsc::channel(RESULT_QUEUE);
    let inner = Arc::new(Inner {
        defs: cfg.defs,
        checks: Mutex::new(BTreeMap::new()),
        hosts: Mutex::new(BTreeMap::new()),
        stats: EngineStats::default(),
        db: Mutex::new(db),
        plugin_dir: cfg.plugin_dir,
    });
    let handle = EngineHandle { inner: inner.clone(), tx: tx.clone() };
    let runner = PluginRunner::new(cfg.max_concurrent_plugins);
    let timeout_state = cfg.timeout_state;
    let task = tokio::spawn(async move {
        run(inner, state, runner, timeout_state, tx, rx, shutdown).await;
    });
    Ok((handle, task))
}

async fn run(
    inner: Arc<Inner>,
    state: Arc<State>,
    runner: PluginRunner,
    timeout_state: ServiceState,
    tx: mpsc::Sender<Incoming>,
    mut rx: mpsc::Receiver<Incoming>,
    shutdown: CancellationToken,
) {
    let saved = match lock_all(&inner.db).load() {
        Ok(s) => {
            tracing::info!(services = s.checks.len(), hosts = s.hosts.len(), "Check states resumed.");
            s
        }
        Err(e) => {
            tracing::error!(error = %e, "Could not read the check states; starting from PENDING.");
            inner.stats.db_errors.fetch_add(1, Ordering::Relaxed);
            db::Saved::default()
        }
    };
    // Kept until each host reconnects and claims its checks' saved states.
    let mut saved = saved;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let due = inner.tick(&state, &mut saved);
                for (key, argv, timeout) in due {
                    let runner = runner.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let run = runner.run(&argv, timeout, timeout_state).await;
                        let _ = tx.send(Incoming::Active { key, run }).await;
                    });
                }
                inner.persist().await;
            }
            Some(msg) = rx.recv() => match msg {
                Incoming::Active { key, run } => inner.apply_active(key, run),
                Incoming::Passive(r, reply) => {
                    let _ = reply.send(inner.apply_passive(r));
                }
            },
            () = shutdown.cancelled() => {
                inner.persist().await;
                return;
            }
        }
    }
}

/// First usable IP address of a host for `$HOSTADDRESS$`: an address the agent reported,
/// else the address its connection came from, else its name.
fn host_address(h: &Host) -> String {
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

impl Inner {
    /// One scheduling round: registers new hosts' checks, runs due metric checks and
    /// freshness, updates host states, and returns the active checks to start.
    fn tick(&self, state: &State, saved: &mut db::Saved) -> Vec<(CheckKey, Vec<String>, Duration)> {
        let now = now_secs();
        let mut checks = lock_all(&self.checks);
        let mut hosts = lock_all(&self.hosts);
        let mut due_active = Vec::new();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let host_settings = StateSettings { max_check_attempts: 1, check_interval_secs: 1, retry_interval_secs: 1 };
        state.visit_hosts(Instant::now(), |h, up| {
            let hk = (h.cluster.clone(), h.name.clone());
            seen.insert(hk.clone());
            // Host check: liveness is already debounced by host_timeout, so the result is
            // HARD at once (max_check_attempts 1).
            let hc = hosts.entry(hk.clone()).or_insert_with(|| {
                let (status, output) = saved.hosts.remove(&hk).unwrap_or_else(|| (HostStatus::new(), String::new()));
                HostCheck { status, output, next_check: now, dirty: false }
            });
            if hc.next_check <= now {
                let result = if up { HostState::Up } else { HostState::Down };
                let t = hc.status.apply(&host_settings, result, now, ResultContext::default());
                hc.output = if up {
                    format!("UP - agent reported {:.0} s ago", (now_ms() - h.last_seen_ms).max(0) as f64 / 1000.0)
                } else {
                    format!(
                        "DOWN - no data from the agent for {:.0} s",
                        (now_ms() - h.last_seen_ms).max(0) as f64 / 1000.0
                    )
                };
                hc.next_check = t.next_check;
                hc.dirty = true;
                if t.state_change {
                    tracing::info!(cluster = %h.cluster, host = %h.name, state = %t.state, "Host state changed.");
                    lock_all(&self.db).queue_history(HistoryRow::host(&h.cluster, &h.name, &t, &hc.output, now));
                }
                self.stats.received.fetch_add(1, Ordering::Relaxed);
            }
            let host_up = hc.status.state == HostState::Up;
            let address = host_address(h);
            for def in self.defs.for_host(&h.cluster, &h.name) {
                let key = (h.cluster.clone(), h.name.clone(), def.name.clone());
                let inst = checks.entry(key.clone()).or_insert_with(|| {
                    let s: Option<SavedCheck> = saved.checks.remove(&key);
                    Instance {
                        status: s.as_ref().map_or_else(ServiceStatus::new, |s| s.status.clone()),
                        output: s.as_ref().map(|s| s.output.clone()).unwrap_or_default(),
                        last_result: s.as_ref().and_then(|s| s.last_result),
                        last_stale: None,
                        // A restart does not reset the freshness clock of a known check.
                        watched_since: s.as_ref().and_then(|s| s.last_result).unwrap_or(now),
                        next_check: now,
                        running: false,
                        dirty: false,
                        def: def.clone(),
                    }
                });
                inst.def = def;
                if inst.running || inst.next_check > now {
                    continue;
                }
                let ctx = ResultContext { host_up, force_hard: false };
                match &inst.def.kind {
                    // Until a host has sent two batches (the first has no rates yet), a
                    // metric it lacks may simply not have arrived: wait, do not alert.
                    Kind::Metric { .. } if h.seq.batches < 2 => {}
                    Kind::Metric { metric, divide_by, scale, thresholds, missing } => {
                        let value = metric_value(h, metric).and_then(|v| match divide_by {
                            Some(d) => metric_value(h, d).filter(|d| *d != 0.0).map(|d| v / d),
                            None => Some(v),
                        });
                        let (result, output) = match value {
                            Some(v) => {
                                let v = v * scale;
                                let s = thresholds.evaluate(v);
                                let what = match divide_by {
                                    Some(d) if *scale != 1.0 => format!("{metric} / {d} × {scale}"),
                                    Some(d) => format!("{metric} / {d}"),
                                    None => metric.clone(),
                                };
                                (s, format!("{s} - {what} = {v:.4}"))
                            }
                            None => match missing {
                                Some(s) => (*s, format!("{s} - no value of {metric}")),
                                None => {
                                    inst.next_check = now + inst.def.settings.check_interval_secs as i64;
                                    continue;
                                }
                            },
                        };
                        let perf = value.map(|v| format!("'{}'={}", inst.def.name, v * scale)).unwrap_or_default();
                        let out = PluginOutput { output, long_output: String::new(), perfdata: perf };
                        self.apply(&key, inst, result, out, now, ctx, true);
                    }
                    Kind::Active { command, macros, timeout } => {
                        let line = expand(
                            command,
                            &[
                                ("$HOSTNAME$", &h.name),
                                ("$HOSTADDRESS$", &address),
                                ("$SERVICEDESC$", &inst.def.name),
                                ("$CLUSTER$", &h.cluster),
                            ],
                            macros,
                        );
                        match plugin::split_command(&line) {
                            Ok(mut argv) => {
                                if !argv[0].contains('/') {
                                    argv[0] = self.plugin_dir.join(&argv[0]).to_string_lossy().into_owned();
                                }
                                inst.running = true;
                                due_active.push((key.clone(), argv, *timeout));
                            }
                            Err(e) => {
                                let out =
                                    PluginOutput { output: format!("(Bad check command: {e})"), ..Default::default() };
                                self.apply(&key, inst, ServiceState::Unknown, out, now, ctx, true);
                            }
                        }
                    }
                    Kind::Passive { freshness, stale_state } => {
                        let Some(threshold) = freshness else {
                            inst.next_check = i64::MAX;
                            continue;
                        };
                        let f = Freshness { threshold_secs: threshold.as_secs(), stale_state: *stale_state };
                        if let Some(stale) =
                            cstate::check_freshness(&f, inst.last_result, inst.watched_since, inst.last_stale, now)
                        {
                            inst.last_stale = Some(now);
                            let out = PluginOutput { output: stale.output, ..Default::default() };
                            self.apply(&key, inst, stale.state, out, now, ctx, false);
                        }
                        inst.next_check = now + 1;
                    }
                }
            }
        });
        // Hosts the collector forgot (host_expire) take their checks with them.
        hosts.retain(|k, _| seen.contains(k));
        checks.retain(|(c, h, _), _| seen.contains(&(c.clone(), h.clone())));
        due_active
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        key: &CheckKey,
        inst: &mut Instance,
        result: ServiceState,
        output: PluginOutput,
        now: i64,
        ctx: ResultContext,
        real: bool,
    ) {
        let t = inst.status.apply(&inst.def.settings, result, now, ctx);
        if t.logged {
            tracing::info!(
                cluster = %key.0, host = %key.1, service = %key.2,
                state = %t.state, state_type = %t.state_type, attempt = t.attempt,
                output = %ganglion_proto::name::escaped(&output.output),
                "Service alert."
            );
        }
        if t.state_change {
            lock_all(&self.db).queue_history(HistoryRow::service(key, &t, &output.output, now));
        }
        inst.output = output;
        inst.next_check = t.next_check;
        if real {
            inst.last_result = Some(now);
        }
        inst.dirty = true;
        self.stats.received.fetch_add(1, Ordering::Relaxed);
    }

    fn apply_active(&self, key: CheckKey, run: plugin::PluginRun) {
        self.stats.plugins_run.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(host = %key.1, service = %key.2, exit_code = ?run.exit_code, secs = run.duration.as_secs_f64(), "Plugin finished.");
        if run.timed_out {
            self.stats.plugins_timed_out.fetch_add(1, Ordering::Relaxed);
        }
        let host_up =
            lock_all(&self.hosts).get(&(key.0.clone(), key.1.clone())).is_none_or(|h| h.status.state == HostState::Up);
        let mut checks = lock_all(&self.checks);
        let Some(inst) = checks.get_mut(&key) else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        inst.running = false;
        let mut output = run.output;
        if let Some(code) = run.exit_code.filter(|c| !(0..=3).contains(c)) {
            output.output = ganglion_checks::plugin::out_of_bounds_output(i64::from(code), &key.1, Some(&key.2));
        }
        self.apply(&key, inst, run.state, output, now_secs(), ResultContext { host_up, force_hard: false }, true);
    }

    fn apply_passive(&self, r: PassiveResult) -> Result<(), String> {
        let reject = |msg: String| {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(host = %ganglion_proto::name::escaped(&r.host), service = %ganglion_proto::name::escaped(&r.service), reason = %msg, "Rejected passive result.");
            Err(msg)
        };
        let output = ganglion_checks::plugin::parse_output(&r.output.replace("\\n", "\n"));
        // The result's own time, unless the sender's clock is ahead of ours.
        let now = r.time.min(now_secs());
        if r.service.is_empty() {
            let Some(result) = HostState::from_code(r.code) else {
                return reject(format!("host state code {} is not 0, 1 or 2", r.code));
            };
            let mut hosts = lock_all(&self.hosts);
            let Some((hk, hc)) = hosts.iter_mut().find(|((_, h), _)| *h == r.host) else {
                return reject("no such host".to_owned());
            };
            let settings = StateSettings { max_check_attempts: 1, check_interval_secs: 60, retry_interval_secs: 60 };
            let t = hc.status.apply(&settings, result, now, ResultContext { host_up: true, force_hard: true });
            hc.output = output.output;
            hc.dirty = true;
            if t.state_change {
                lock_all(&self.db).queue_history(HistoryRow::host(&hk.0, &hk.1, &t, &hc.output, now));
            }
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let Some(result) = ServiceState::from_code(r.code) else {
            return reject(format!("service state code {} is not 0-3", r.code));
        };
        let host_up: HashMap<String, bool> =
            lock_all(&self.hosts).iter().map(|((_, h), hc)| (h.clone(), hc.status.state == HostState::Up)).collect();
        let mut checks = lock_all(&self.checks);
        let Some((key, inst)) = checks.iter_mut().find(|((_, h, s), _)| *h == r.host && *s == r.service) else {
            return reject("no such service on this host".to_owned());
        };
        let key = key.clone();
        let ctx = ResultContext { host_up: host_up.get(&r.host).copied().unwrap_or(true), force_hard: false };
        self.apply(&key, inst, result, output, now, ctx, true);
        Ok(())
    }

    /// Writes changed statuses and queued history in one transaction, off the runtime.
    async fn persist(self: &Arc<Self>) {
        let mut rows = Vec::new();
        for ((c, h, s), inst) in lock_all(&self.checks).iter_mut().filter(|(_, i)| i.dirty) {
            inst.dirty = false;
            rows.push(db::Row::Check {
                key: (c.clone(), h.clone(), s.clone()),
                saved: SavedCheck {
                    status: inst.status.clone(),
                    output: inst.output.clone(),
                    last_result: inst.last_result,
                },
            });
        }
        for ((c, h), hc) in lock_all(&self.hosts).iter_mut().filter(|(_, h)| h.dirty) {
            hc.dirty = false;
            rows.push(db::Row::Host {
                key: (c.clone(), h.clone()),
                status: hc.status.clone(),
                output: hc.output.clone(),
            });
        }
        let inner = self.clone();
        let n = rows.len() as u64;
        let result = tokio::task::spawn_blocking(move || lock_all(&inner.db).write(rows)).await;
        match result {
            Ok(Ok(())) => {
                self.stats.written.fetch_add(n, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "Could not write check states.");
            }
            Err(e) => tracing::error!(error = %e, "State writer panicked."),
        }
    }
}

/// One check as the API shows it.
#[derive(Debug, Serialize)]
pub struct CheckView {
    pub cluster: String,
    pub host: String,
    /// Empty for the host check.
    pub service: String,
    pub state: String,
    pub state_type: String,
    pub attempt: u32,
    pub max_attempts: u32,
    pub last_check: Option<i64>,
    pub last_state_change: Option<i64>,
    pub output: String,
    pub long_output: String,
    pub perfdata: String,
    /// `true` until the first result.
    pub pending: bool,
    /// Non-OK (or host not UP).
    pub problem: bool,
    pub host_up: bool,
}

impl EngineHandle {
    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Every host check and service check, host first then services by name.
    pub fn status(&self) -> Vec<CheckView> {
        let hosts = lock_all(&self.inner.hosts);
        let up =
            |c: &str, h: &str| hosts.get(&(c.to_owned(), h.to_owned())).is_none_or(|x| x.status.state == HostState::Up);
        let mut out: Vec<CheckView> = hosts
            .iter()
            .map(|((c, h), hc)| CheckView {
                cluster: c.clone(),
                host: h.clone(),
                service: String::new(),
                state: hc.status.state.to_string(),
                state_type: hc.status.state_type.to_string(),
                attempt: hc.status.attempt,
                max_attempts: 1,
                last_check: hc.status.last_check,
                last_state_change: hc.status.last_state_change,
                output: hc.output.clone(),
                long_output: String::new(),
                perfdata: String::new(),
                pending: hc.status.last_check.is_none(),
                problem: hc.status.state != HostState::Up,
                host_up: hc.status.state == HostState::Up,
            })
            .collect();
        for ((c, h, s), i) in lock_all(&self.inner.checks).iter() {
            out.push(CheckView {
                cluster: c.clone(),
                host: h.clone(),
                service: s.clone(),
                state: i.status.state.to_string(),
                state_type: i.status.state_type.to_string(),
                attempt: i.status.attempt,
                max_attempts: i.def.settings.max_check_attempts,
                last_check: i.status.last_check,
                last_state_change: i.status.last_state_change,
                output: i.output.output.clone(),
                long_output: i.output.long_output.clone(),
                perfdata: i.output.perfdata.clone(),
                pending: i.status.last_check.is_none(),
                problem: i.status.state != ServiceState::Ok,
                host_up: up(c, h),
            });
        }
        out.sort_by(|a, b| (&a.cluster, &a.host, &a.service).cmp(&(&b.cluster, &b.host, &b.service)));
        out
    }

    /// The effective checks of a host with where each setting came from.
    pub fn effective(&self, cluster: &str, host: &str) -> Vec<Effective> {
        self.inner.defs.for_host(cluster, host)
    }

    /// State history, newest first.
    ///
    /// # Errors
    /// When the state database cannot be read.
    pub fn history(&self, host: Option<&str>, service: Option<&str>, limit: usize) -> anyhow::Result<Vec<HistoryRow>> {
        lock_all(&self.inner.db).history(host, service, limit)
    }

    /// Submits a passive result and waits until it is applied or refused.
    ///
    /// # Errors
    /// The refusal reason (unknown host or service, bad code), or that the engine stopped.
    pub async fn submit(&self, r: PassiveResult) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Incoming::Passive(r, tx)).await.map_err(|_| "the checks engine is not running".to_owned())?;
        rx.await.map_err(|_| "the checks engine is not running".to_owned())?
    }
}

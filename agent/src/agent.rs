//! The agent's main loop: collect on a timer, number and spool each batch, and let
//! one sender task per collector deliver it.
//!
//! Tasks of a running agent, all on one current-thread runtime: the collect loop
//! (host metrics and application sources on the runtime thread, a slow blocking
//! source on the blocking pool, see [`crate::collect::apps`]), one sender per
//! collector, one task per exec plugin
//! (whose newest readings wait in [`ExecResults`]) and the send socket server
//! (whose pushes wait in [`CustomMetrics`]). Everything a collection gathered goes
//! into the same batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ganglion_proto::msg::{self, Batch, Facts, Hello};
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::collect::apps::AppSet;
use crate::collect::exec::{self, ExecResults};
use crate::collect::{self, HostCollector, HostConfig, Reading};
use crate::config::AgentConfig;
use crate::push::{self, CustomMetrics, Push, PushError, PushSink};
use crate::registry::Registry;
use crate::send::{self, WINDOW};
use crate::spool::{Payload, Spool, SpoolStats};

/// Counters of a running agent.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub collections: AtomicU64,
    pub batches_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub session_errors: AtomicU64,
    pub oversized: AtomicU64,
}

/// State the collection loop and the sender tasks share. Locks are held only for
/// short, non-async sections.
pub(crate) struct Shared {
    pub config: AgentConfig,
    pub run: u64,
    pub stats: AgentStats,
    spool: Mutex<Spool>,
    table: Mutex<Table>,
    /// Newest sequence number, so senders wake up when a batch arrives.
    pub latest: watch::Sender<u64>,
    /// Metrics pushed through the send socket, for the next batch.
    custom: Mutex<CustomMetrics>,
    /// Newest readings of each exec plugin, for the next batch.
    exec: Arc<ExecResults>,
}

impl PushSink for Shared {
    fn push(&self, p: Push) -> Result<(), PushError> {
        // A pushed metric must not take over one of the agent's own: both would
        // write the same series.
        let known = lock(&self.table).registry.contains(&p.name);
        if known && !lock(&self.custom).contains(&p.name) {
            return Err(PushError::Refused(format!("{} is one of the agent's own metrics", p.name)));
        }
        // Sources may report a name later than now (a rate after its second reading).
        if let Some(prefix) = push::RESERVED_PREFIXES.iter().find(|x| p.name.starts_with(*x)) {
            return Err(PushError::Refused(format!("names starting with {prefix} are the agent's own metrics")));
        }
        lock(&self.custom).put(p, Instant::now())
    }
}

struct Table {
    registry: Registry,
    facts: Facts,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn hello(&self) -> Hello {
        let t = lock(&self.table);
        Hello {
            cluster: self.config.cluster.clone(),
            host: self.config.host.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            sent_at_ms: now_ms(),
            interval_secs: u32::try_from(self.config.interval.as_secs()).unwrap_or(u32::MAX),
            facts: t.facts.clone(),
            metrics: t.registry.metas().to_vec(),
        }
    }

    pub fn spool_acked(&self, idx: usize) -> u64 {
        lock(&self.spool).acked(idx)
    }

    /// Batches from `next` on are in the spool, waiting for the send window.
    pub fn has_unsent(&self, next: u64) -> bool {
        next < lock(&self.spool).next_seq()
    }

    /// Where a new session of collector `idx` starts: the first batch it lacks.
    pub fn resume_point(&self, idx: usize) -> u64 {
        let s = lock(&self.spool);
        (s.acked(idx) + 1).max(s.first_seq())
    }

    /// The next batch for collector `idx`, if the window allows; advances `next`.
    pub fn next_to_send(&self, idx: usize, next: &mut u64) -> Option<ToSend> {
        let mut s = lock(&self.spool);
        loop {
            *next = (*next).max(s.first_seq());
            let acked = s.acked(idx);
            if *next >= s.next_seq() || *next > acked + WINDOW {
                return None;
            }
            let seq = *next;
            *next += 1;
            if let Some(payload) = s.get(seq) {
                let last_for_now = *next >= s.next_seq() || *next > acked + WINDOW;
                return Some(ToSend { seq, payload, acked, last_for_now });
            }
        }
    }

    pub fn ack(&self, idx: usize, seq: u64) {
        lock(&self.spool).ack(idx, seq);
    }

    pub fn spool_stats(&self) -> SpoolStats {
        lock(&self.spool).stats()
    }
}

/// A batch for one collector, from [`Shared::next_to_send`].
pub struct ToSend {
    pub seq: u64,
    pub payload: Payload,
    /// The collector's acknowledged position when the batch was taken.
    pub acked: u64,
    /// Nothing can be sent after this batch until more is collected or acknowledged.
    pub last_for_now: bool,
}

/// A running agent: its counters and the way to stop it.
pub struct Agent {
    shared: Arc<Shared>,
}

impl Agent {
    pub fn stats(&self) -> &AgentStats {
        &self.shared.stats
    }
    pub fn spool_stats(&self) -> SpoolStats {
        self.shared.spool_stats()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn host_config(config: &AgentConfig) -> HostConfig {
    HostConfig { skip_devices: config.skip_devices.clone(), ..HostConfig::default() }
}

/// Runs the agent until `shutdown` is cancelled.
///
/// # Errors
/// When the spool directory cannot be prepared.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> std::io::Result<Arc<Agent>> {
    let spool = Spool::new(
        config.collectors.len(),
        config.spool_memory_bytes,
        config.spool_dir.clone(),
        config.spool_disk_bytes,
    )?;
    let hc = host_config(&config);
    let facts = collect::facts(&hc, config.tags.clone());
    let (latest, _) = watch::channel(0);
    let shared = Arc::new(Shared {
        run: rand::thread_rng().gen(),
        stats: AgentStats::default(),
        spool: Mutex::new(spool),
        table: Mutex::new(Table { registry: Registry::default(), facts }),
        latest,
        custom: Mutex::new(CustomMetrics::default()),
        exec: Arc::new(ExecResults::default()),
        config,
    });
    if let Some(path) = &shared.config.send_socket {
        match push::bind(path) {
            Ok(listener) => {
                tracing::info!(socket = %path.display(), "Accepting custom metrics.");
                tokio::spawn(push::serve(listener, shared.clone(), shutdown.clone()));
            }
            // The agent's own metrics matter more than custom ones: run without.
            Err(e) => tracing::warn!(
                socket = %path.display(),
                error = %e,
                "Could not open the send socket; ganglion-agent send will not reach this agent."
            ),
        }
    }
    exec::spawn(&shared.config.exec, shared.exec.clone(), shutdown.clone());
    let mut tasks = Vec::new();
    for (idx, addr) in shared.config.collectors.iter().enumerate() {
        tasks.push(tokio::spawn(send::run(idx, addr.clone(), shared.clone(), shutdown.clone())));
    }
    let agent = Arc::new(Agent { shared: shared.clone() });
    tokio::spawn(async move {
        collect_loop(&shared, hc, &shutdown).await;
        for t in tasks {
            let _ = t.await;
        }
    });
    Ok(agent)
}

async fn collect_loop(shared: &Arc<Shared>, hc: HostConfig, shutdown: &CancellationToken) {
    let interval = shared.config.interval;
    let delay = shared.config.first_delay.unwrap_or_else(|| interval.mul_f64(rand::thread_rng().gen_range(0.0..1.0)));
    tracing::info!(interval_secs = interval.as_secs(), first_in_ms = delay.as_millis() as u64, "Agent started.");
    let mut host = HostCollector::new(hc.clone());
    let mut apps = AppSet::new(&shared.config);
    // Prime the counters so the first batch already has rates.
    host.collect(Instant::now());
    apps.prime().await;
    let mut ticker = crate::ticker::Ticker::new(delay, interval);
    let mut n = 0u64;
    let plugins: Vec<(&str, String)> = shared.config.exec.iter().map(|e| (e.name.as_str(), e.source())).collect();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => {
                apps.close().await;
                return;
            }
        }
        let mut readings = host.collect(Instant::now());
        apps.collect(&mut readings).await;
        let ran = shared.exec.drain_into(&mut readings);
        lock(&shared.custom).take(Instant::now(), &mut readings);
        n += 1;
        // Sources read every n-th interval and plugins between runs are skipped, not
        // gone: the collector keeps them out of this batch without forgetting them.
        let mut skipped: Vec<&str> = apps.skipped().collect();
        skipped.extend(
            plugins.iter().filter(|(name, _)| !ran.iter().any(|r| r == name)).map(|(_, source)| source.as_str()),
        );
        // Facts change rarely (addresses, kernel after reboot); look every 20 intervals.
        let facts = if n.is_multiple_of(20) { Some(collect::facts(&hc, shared.config.tags.clone())) } else { None };
        push_batch(shared, &readings, &skipped, facts);
    }
}

/// Numbers `readings` into a batch and spools it; the metrics of the `skipped`
/// sources are marked skipped.
fn push_batch(shared: &Shared, readings: &[Reading], skipped: &[&str], facts: Option<Facts>) {
    let mut defs = Vec::new();
    let (values, skipped, changed) = {
        let mut t = lock(&shared.table);
        let values = t.registry.encode(readings, &mut defs);
        let skipped: Vec<u32> = skipped.iter().flat_map(|s| t.registry.ids_of_source(s)).collect();
        let changed = match facts {
            Some(f) if f != t.facts => {
                t.facts = f.clone();
                Some(f)
            }
            _ => None,
        };
        (values, skipped, changed)
    };
    let mut s = lock(&shared.spool);
    let batch = Batch {
        run: shared.run,
        seq: s.next_seq(),
        time_ms: now_ms(),
        defs,
        facts: changed,
        values,
        gone: Vec::new(),
        ack: false,
        skipped,
    };
    match msg::encode(&batch) {
        Ok(bytes) => {
            let seq = s.push(bytes.into());
            drop(s);
            shared.stats.collections.fetch_add(1, Ordering::Relaxed);
            shared.latest.send_replace(seq);
        }
        Err(e) => tracing::error!(error = %e, "Could not encode a batch."),
    }
}

/// One collection over `over`, for `ganglion-agent --once`: host metrics and, with a
/// config, its application sources and one run of each exec plugin.
pub async fn collect_once(config: Option<&AgentConfig>, over: Duration) -> Vec<Reading> {
    let hc = config.map_or_else(HostConfig::default, host_config);
    let mut host = HostCollector::new(hc);
    let mut apps = config.map(AppSet::new);
    host.collect(Instant::now());
    if let Some(a) = apps.as_mut() {
        a.prime().await;
    }
    tokio::time::sleep(over).await;
    let mut out = host.collect(Instant::now());
    if let Some(a) = apps.as_mut() {
        a.collect(&mut out).await;
        a.close().await;
    }
    for plugin in config.map_or(&[][..], |c| &c.exec) {
        let mut health = collect::apps::Health::new(plugin.source());
        out.extend(exec::run_and_read(plugin, &mut health).await);
    }
    out
}

//! Starting and stopping a collector: binds the listeners, spawns the ingest, HTTP and
//! sweep tasks, and shuts them down in order on one cancellation token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiContext};
use crate::config::Config;
use crate::durable::DurableHandle;
use crate::ingest::{self, IngestContext};
use crate::state::State;
use crate::stats::Stats;
use ganglion_store::engine::{SeriesKey, Store, StoreOptions};

/// Accept backlog of the listeners. The agent protocol has the server speak first, so
/// a connection the kernel completes but cannot queue leaves its agent waiting for a
/// challenge until its timeout; a fleet reconnecting after a collector restart needs
/// far more room than the common default of 128. The kernel caps it at `somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Takes an exclusive lock on `data_dir/LOCK` for the life of the process: two
/// collectors writing one journal and one state database would corrupt both.
pub(crate) fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        anyhow::anyhow!("{} is in use by another collector (lock {} is held)", dir.display(), path.display())
    })?;
    Ok(file)
}

/// A running collector.
pub struct Running {
    pub ingest_addr: SocketAddr,
    pub web_addr: SocketAddr,
    /// The NSCA listener's address, when `[nsca] listen` is set.
    pub nsca_addr: Option<SocketAddr>,
    pub stats: Arc<Stats>,
    tasks: Vec<JoinHandle<()>>,
    store: Arc<Store>,
    /// Held until the process ends.
    _lock: std::fs::File,
}

/// Binds both listeners and starts serving.
///
/// # Errors
/// When an address cannot be bound.
pub async fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let ingest_listener = bind(config.ingest_listen)
        .with_context(|| format!("binding the agent listener on {}", config.ingest_listen))?;
    let web_listener =
        bind(config.web_listen).with_context(|| format!("binding the web listener on {}", config.web_listen))?;
    let ingest_addr = ingest_listener.local_addr()?;
    let web_addr = web_listener.local_addr()?;
    let nsca_listener = match &config.nsca {
        Some(n) => Some(bind(n.listen).with_context(|| format!("binding the NSCA listener on {}", n.listen))?),
        None => None,
    };
    let nsca_addr = nsca_listener.as_ref().map(TcpListener::local_addr).transpose()?;

    let lock = lock_data_dir(&config.data_dir)?;
    let store_dir = config.data_dir.join("store");
    let store_cfg = config.storage.clone();
    let opts = StoreOptions { rules: config.storage_rules.clone(), ..StoreOptions::default() };
    let dir = store_dir.clone();
    // Opening replays the journal, which may take a while after a crash: off the runtime.
    let store = tokio::task::spawn_blocking(move || Store::open_with(&dir, store_cfg, opts))
        .await
        .context("opening the storage")?
        .with_context(|| format!("opening the storage in {}", store_dir.display()))?;
    let store = Arc::new(store);
    let durable = DurableHandle::start(store.clone());

    let state = Arc::new(State::new(config.clusters.clone()));
    let stats = Arc::new(Stats::default());
    let ingest_ctx = Arc::new(IngestContext {
        state: state.clone(),
        stats: stats.clone(),
        max_frame_bytes: config.max_frame_bytes,
        max_connections: config.max_connections,
        max_clock_skew: config.max_clock_skew,
        max_sample_age: config.max_sample_age,
        store: store.clone(),
        durable,
    });
    // Aggregate checks read their windows from the series storage.
    let mut engine_cfg = config.engine.clone();
    engine_cfg.store = Some(crate::engine::SeriesStore(store.clone()));
    let (engine, engine_task) = crate::engine::start(engine_cfg, state.clone(), shutdown.clone())
        .with_context(|| format!("starting the checks engine ({})", config.engine.state_db.display()))?;
    let (alerts, alerts_task) = crate::alerts::start(
        &config.alerts,
        engine.clone(),
        &config.data_dir,
        Some(crate::alerts::store_graph(store.clone())),
        shutdown.clone(),
    )
    .context("starting alerting")?;
    let api_ctx = Arc::new(ApiContext {
        state: state.clone(),
        stats: stats.clone(),
        started: Instant::now(),
        engine: engine.clone(),
        store: store.clone(),
        alerts: alerts.clone(),
        graphs: Arc::new(ganglion_web::cache::GraphCache::new(config.web.graph_cache_bytes)),
    });

    let mut tasks = vec![engine_task];
    tasks.extend(alerts_task);
    let token = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = ingest::serve(ingest_listener, ingest_ctx, token).await {
            tracing::error!(error = %e, "Agent listener failed.");
        }
    }));

    // Checks: the engine's routes, and the NSCA listener when configured.
    let checks_api = Arc::new(crate::engine::api::ChecksApi {
        engine: engine.clone(),
        state: state.clone(),
        admin_token: config.admin_token.clone(),
    });
    if let (Some(listener), Some(nsca)) = (nsca_listener, &config.nsca) {
        let ctx = Arc::new(crate::nsca::NscaContext { engine: engine.clone(), config: nsca.clone() });
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::nsca::serve(listener, ctx, token).await {
                tracing::error!(error = %e, "NSCA listener failed.");
            }
        }));
    }

    let dashboard = Arc::new(crate::dashboard::Dashboard { ctx: api_ctx.clone() });
    let app = ganglion_web::router_with_cache(dashboard, config.web.clone(), api_ctx.graphs.clone())
        .merge(api::router(api_ctx))
        .merge(crate::engine::api::router(checks_api))
        .merge(crate::alerts::router(alerts))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ));
    let token = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let served =
            axum::serve(web_listener, app).with_graceful_shutdown(async move { token.cancelled().await }).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "Web server failed.");
        }
    }));

    let token = shutdown.clone();
    let grace = config.expire_grace;
    let sweep_store = store.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Hosts forgotten by `host_expire`, whose series go after the grace period.
        let mut expired: Vec<(Instant, (String, String), Vec<String>)> = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = token.cancelled() => return,
            }
            let now = Instant::now();
            expired.extend(state.sweep(now).into_iter().map(|(k, m)| (now + grace, k, m)));
            let (due, wait): (Vec<_>, Vec<_>) = expired.drain(..).partition(|(at, _, _)| *at <= now);
            expired = wait;
            for (_, (cluster, host), metrics) in due {
                if state.has_host(&cluster, &host) {
                    continue;
                }
                let store = sweep_store.clone();
                tokio::task::spawn_blocking(move || {
                    for m in &metrics {
                        if let Err(e) = store.remove_series(&SeriesKey::new(&cluster, &host, m)) {
                            tracing::warn!(%cluster, %host, metric = %m, error = %e, "Could not remove an expired series.");
                        }
                    }
                    tracing::info!(%cluster, %host, series = metrics.len(), "Removed the series of an expired host.");
                });
            }
        }
    }));
    tracing::info!(ingest = %ingest_addr, web = %web_addr, clusters = config.clusters.len(), data_dir = %config.data_dir.display(), "Collector started.");
    Ok(Running { ingest_addr, web_addr, nsca_addr, stats, tasks, store, _lock: lock })
}

impl Running {
    /// Waits for every task after the shutdown token was cancelled, then logs the
    /// final counters so an operator sees what this run accepted and refused.
    pub async fn stopped(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        // Last: every connection is closed, so nothing appends any more.
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.close()).await {
            Ok(Ok(())) => tracing::info!("Storage flushed."),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "Could not flush every series; the journal keeps them for the next start.")
            }
            Err(e) => tracing::error!(error = %e, "Storage flush panicked."),
        }
        let s = self.stats.snapshot();
        tracing::info!(
            batches = s.batches_accepted,
            samples = s.samples_accepted,
            rejected = s.rejected_total,
            "Collector stopped."
        );
    }
}

//! `ganglion loadgen`: many simulated agents speaking the real protocol (challenge,
//! HMAC-signed hello and batches, acks) to one collector, for `scripts/bench-ingest`.
//! Each simulated host has its own connection and sends batches as fast as its acks
//! allow (a window of in-flight batches), or at a fixed interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ganglion_proto::frame::{self, Kind, Nonce};
use ganglion_proto::io::FrameReader;
use ganglion_proto::msg::{self, Ack, Batch, Challenge, Facts, Hello, MetricKind, MetricMeta, Previous};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::state::now_ms;

#[derive(clap::Args, Clone)]
pub struct LoadgenArgs {
    /// Collector agent address.
    #[arg(long)]
    addr: String,
    #[arg(long, default_value = "bench")]
    cluster: String,
    #[arg(long)]
    key: String,
    /// Simulated hosts (one connection each).
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// Metrics per host.
    #[arg(long, default_value_t = 100)]
    metrics: usize,
    /// Seconds to measure after all hosts connected.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Batches in flight per host before waiting for acks; the agent's window. Acks
    /// come after the storage journal's group commit, so a small window measures the
    /// fsync interval, not the collector.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Milliseconds between a host's batches; 0 sends as fast as acks come back.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Collector process to measure (CPU time from /proc/PID/schedstat, RSS from
    /// /proc/PID/status) over the same window.
    #[arg(long)]
    collector_pid: Option<u32>,
}

/// Nanoseconds a process has spent on a CPU, all threads (`/proc/PID/schedstat` alone
/// is the main thread, which in a tokio runtime mostly sleeps).
pub(crate) fn cpu_ns(pid: &str) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread may exit between listing and reading; it no longer counts.
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// Resident set size in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    acked_batches: AtomicU64,
    failed: AtomicU64,
    /// Set during the measured window: batch send → ack latencies are recorded then.
    measuring: std::sync::atomic::AtomicBool,
    /// Microseconds from writing a batch to reading its acknowledgement.
    ack_latency_us: std::sync::Mutex<Vec<u64>>,
}

/// Percentile `p` (0–100) of sorted values, in milliseconds.
fn pct_ms(sorted: &[u64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let i = ((last as f64) * p / 100.0).round() as usize;
    Some(sorted[i.min(last)] as f64 / 1000.0)
}

pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let counters = Arc::new(Counters::default());
    let stop = tokio_util::sync::CancellationToken::new();
    // Hosts hold their batches until every host is connected: a connection storm
    // competing with a full-speed batch stream measures neither.
    let go = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::with_capacity(args.hosts);
    for i in 0..args.hosts {
        let args = args.clone();
        let counters = counters.clone();
        let stop = stop.clone();
        let go = go.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = host(i, &args, &counters, &go, &stop).await {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(host = i, error = %e, "Simulated host failed.");
            }
        }));
        if i % 200 == 199 {
            // Let the accept queue drain instead of overflowing the listen backlog.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while counters.connected.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed) < args.hosts as u64 {
        if Instant::now() > deadline {
            bail!("only {} of {} hosts connected within 60 s", counters.connected.load(Ordering::Relaxed), args.hosts);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    go.cancel();
    // Measure over a window that starts once everyone is connected and sending.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let before = counters.acked_batches.load(Ordering::Relaxed);
    let cpu_before = args.collector_pid.and_then(|p| cpu_ns(&p.to_string()));
    counters.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let batches = counters.acked_batches.load(Ordering::Relaxed) - before;
    let secs = start.elapsed().as_secs_f64();
    let cpu_after = args.collector_pid.and_then(|p| cpu_ns(&p.to_string()));
    let collector_cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some((b - a) as f64 / 1e9 / secs * 100.0),
        _ => None,
    };
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let samples = batches * args.metrics as u64;
    let mut lat = std::mem::take(&mut *counters.ack_latency_us.lock().unwrap_or_else(|e| e.into_inner()));
    lat.sort_unstable();
    let report = serde_json::json!({
        "ack_latency_ms": { "p50": pct_ms(&lat, 50.0), "p99": pct_ms(&lat, 99.0), "max": pct_ms(&lat, 100.0) },
        "hosts": args.hosts,
        "metrics": args.metrics,
        "failed": counters.failed.load(Ordering::Relaxed),
        "seconds": secs,
        "batches": batches,
        "samples": samples,
        "samples_per_sec": (samples as f64 / secs).round(),
        "collector_cpu_pct": collector_cpu,
        "collector_rss_kib": args.collector_pid.and_then(rss_kib),
    });
    println!("{report}");
    Ok(())
}

/// Connects, reads the challenge and sends the signed hello: a simulated agent's
/// start, shared with `ganglion demo --simulate`.
pub(crate) async fn handshake(
    addr: &str,
    key: &[u8],
    hello: &Hello,
) -> anyhow::Result<(FrameReader<tokio::net::tcp::OwnedReadHalf>, tokio::net::tcp::OwnedWriteHalf, Nonce)> {
    let stream = TcpStream::connect(addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd, frame::DEFAULT_MAX_FRAME_BYTES);
    let ch = tokio::time::timeout(Duration::from_secs(10), reader.next())
        .await
        .context("no challenge within 10 s")??
        .context("closed before challenge")?;
    let nonce = msg::decode::<Challenge>(&ch.payload)?.nonce;
    wr.write_all(&frame::seal(Kind::Hello, 0, &nonce, Some(key), &msg::encode(hello)?)).await?;
    Ok((reader, wr, nonce))
}

async fn host(
    i: usize,
    args: &LoadgenArgs,
    counters: &Counters,
    go: &tokio_util::sync::CancellationToken,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let key = args.key.as_bytes();
    let metrics: Vec<MetricMeta> = (0..args.metrics)
        .map(|m| MetricMeta {
            id: m as u32,
            name: format!("sim_metric_{m}"),
            unit: "units".into(),
            kind: MetricKind::Gauge,
            group: "sim".into(),
            description: "simulated".into(),
        })
        .collect();
    let hello = Hello {
        cluster: args.cluster.clone(),
        host: format!("sim-{i:05}"),
        agent_version: "loadgen".into(),
        sent_at_ms: now_ms(),
        interval_secs: 15,
        facts: Facts { hostname: format!("sim-{i:05}"), ..Facts::default() },
        metrics,
    };
    let (mut reader, mut wr, nonce) = handshake(&args.addr, key, &hello).await?;
    counters.connected.fetch_add(1, Ordering::Relaxed);
    tokio::select! { () = go.cancelled() => {}, () = stop.cancelled() => return Ok(()) }
    let mut values: Vec<(u32, f64)> = (0..args.metrics as u32).map(|m| (m, f64::from(m))).collect();
    let (mut seq, mut acked, mut counter) = (0u64, 0u64, 1u32);
    let mut prev = Previous::default();
    let mut in_flight: std::collections::VecDeque<(u64, Instant)> = std::collections::VecDeque::new();
    let mut ticker = (args.interval_ms > 0).then(|| tokio::time::interval(Duration::from_millis(args.interval_ms)));
    loop {
        while seq < acked + args.window {
            if let Some(t) = ticker.as_mut() {
                tokio::select! { _ = t.tick() => {}, () = stop.cancelled() => return Ok(()) }
            }
            seq += 1;
            for (m, v) in values.iter_mut() {
                *v += f64::from((seq as u32).wrapping_mul(*m + 1) % 7) - 3.0;
            }
            let batch = Batch {
                run: 1,
                seq,
                time_ms: now_ms(),
                defs: vec![],
                facts: None,
                values: values.clone(),
                gone: vec![],
                // Every batch, to measure each one's latency.
                ack: true,
                skipped: vec![],
            };
            let payload = msg::encode(&prev.delta(&batch))?;
            prev.remember(&batch);
            wr.write_all(&frame::seal(Kind::Batch, counter, &nonce, Some(key), &payload)).await?;
            in_flight.push_back((seq, Instant::now()));
            counter += 1;
        }
        let f = tokio::select! {
            f = reader.next() => f?.context("collector closed the connection")?,
            () = stop.cancelled() => return Ok(()),
        };
        if f.kind != Kind::Ack {
            bail!("unexpected {:?} frame", f.kind);
        }
        let ack: Ack = msg::decode(&f.payload)?;
        let measuring = counters.measuring.load(Ordering::Relaxed);
        let mut lat = Vec::new();
        while in_flight.front().is_some_and(|(s, _)| *s <= ack.seq) {
            if let Some((_, sent)) = in_flight.pop_front() {
                lat.push(sent.elapsed().as_micros() as u64);
            }
        }
        if measuring && !lat.is_empty() {
            counters.ack_latency_us.lock().unwrap_or_else(|e| e.into_inner()).extend(lat);
        }
        counters.acked_batches.fetch_add(ack.seq - acked, Ordering::Relaxed);
        acked = ack.seq;
    }
}

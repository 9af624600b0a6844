//! `ganglion bench-checks`: what one evaluation round of many metric checks costs, measured
//! in-process on the engine's real code path ([`Table::tick`] and the state writer), with
//! simulated hosts put straight into the collector's latest-value table.
//!
//! A round is one check interval of one-second ticks, so every check is evaluated once,
//! spread over the interval as in a running collector. The report gives the CPU time of
//! the ticks (the engine's thread), the state writer's CPU time, wall time, the longest
//! tick, and checks per CPU second, as JSON for `scripts/bench-checks`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ganglion_proto::msg::{MetricKind, MetricMeta};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::broadcast;

use super::db::{Db, Writer};
use super::defs::{ChecksDefaults, Defs, RawService};
use super::table::Table;
use super::{lock, thread_cpu_ns, EngineStats};
use crate::config::ClusterConfig;
use crate::state::{now_ms, State};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Simulated hosts.
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// Metric checks per host (one metric each).
    #[arg(long, default_value_t = 30)]
    checks: usize,
    /// Check interval: a round is this many one-second ticks.
    #[arg(long, default_value_t = 15)]
    interval_secs: u64,
    /// Measured rounds after the first (which registers the hosts).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Share of metric values changed before each round (state changes and events).
    #[arg(long, default_value_t = 0.01)]
    change: f64,
}

/// CPU nanoseconds of every thread of this process.
fn process_cpu_ns() -> u64 {
    crate::loadgen::cpu_ns("self").unwrap_or(0)
}

struct Round {
    evaluated: u64,
    tick_cpu_ns: u64,
    max_tick_ns: u64,
    wall: Duration,
    rows: u64,
    writer_cpu_ns: u64,
    events: u64,
}

impl Round {
    fn json(&self, label: &str) -> serde_json::Value {
        let cpu = self.tick_cpu_ns as f64 / 1e9;
        json!({
            "round": label,
            "evaluated": self.evaluated,
            "tick_cpu_ms": cpu * 1e3,
            "max_tick_ms": self.max_tick_ns as f64 / 1e6,
            "wall_ms": self.wall.as_secs_f64() * 1e3,
            "checks_per_cpu_sec": if cpu > 0.0 { self.evaluated as f64 / cpu } else { 0.0 },
            "rows_written": self.rows,
            "writer_cpu_ms": self.writer_cpu_ns as f64 / 1e6,
            "events": self.events,
        })
    }
}

/// Runs the benchmark and prints its JSON report.
///
/// # Errors
/// When the state database cannot be created.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ganglion-bench-checks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = bench(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", result?);
    Ok(())
}

fn bench(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let mut clusters = std::collections::BTreeMap::new();
    clusters.insert(
        "bench".to_owned(),
        ClusterConfig {
            key: b"bench-key-0123456789".to_vec(),
            host_timeout: Some(Duration::from_secs(86_400)),
            host_expire: None,
        },
    );
    let state = State::new(clusters);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let metas: Vec<MetricMeta> = (0..args.checks)
        .map(|m| MetricMeta {
            id: m as u32,
            name: format!("sim_metric_{m}"),
            unit: "%".into(),
            kind: MetricKind::Gauge,
            group: "sim".into(),
            description: "simulated".into(),
        })
        .collect();
    let mut hosts = Vec::with_capacity(args.hosts);
    for i in 0..args.hosts {
        let h = state.host("bench", &format!("sim-{i:05}"), "127.0.0.1:1".into());
        {
            let mut g = lock(&h);
            for meta in &metas {
                let slot = g.slot_for(meta);
                g.slots[slot].value = rng.gen_range(0.0..85.0);
                g.slots[slot].time_ms = now_ms();
            }
            g.seq.batches = 2;
        }
        hosts.push(h);
    }
    let services = (0..args.checks)
        .map(|m| RawService {
            name: format!("check_{m}"),
            metric: Some(format!("sim_metric_{m}")),
            warning: Some("80".into()),
            critical: Some("90".into()),
            check_interval_secs: Some(args.interval_secs),
            retry_interval_secs: Some(args.interval_secs),
            ..RawService::default()
        })
        .collect();
    let defs = Defs::build(vec![], services, false, ChecksDefaults::default())
        .map_err(|e| anyhow::anyhow!("{}", e.join("; ")))?;
    let stats = Arc::new(EngineStats::default());
    let db = Db::open(&dir.join("state.db"))?;
    let writer = Writer::start(db, stats.clone())?;
    // One subscriber, as the alerting layer will be, so events are built and sent.
    let (events, mut rx) = broadcast::channel(super::EVENT_QUEUE);
    let mut table =
        Table::new(defs, PathBuf::from("/nonexistent"), 60, Default::default(), events, stats.clone(), false, 0);
    let mut now = super::now_secs();
    let mut round = |table: &mut Table, now: &mut i64| -> Round {
        let evaluated_before = stats.received.load(std::sync::atomic::Ordering::Relaxed);
        let written_before = stats.written.load(std::sync::atomic::Ordering::Relaxed);
        let process_before = process_cpu_ns();
        let started = Instant::now();
        let mut r = Round {
            evaluated: 0,
            tick_cpu_ns: 0,
            max_tick_ns: 0,
            wall: Duration::ZERO,
            rows: 0,
            writer_cpu_ns: 0,
            events: 0,
        };
        for _ in 0..args.interval_secs {
            let cpu = thread_cpu_ns().unwrap_or(0);
            let out = table.tick(&state, *now, writer.has_room());
            let spent = thread_cpu_ns().unwrap_or(0).saturating_sub(cpu);
            r.tick_cpu_ns += spent;
            r.max_tick_ns = r.max_tick_ns.max(spent);
            if let Some(b) = out.batch {
                writer.send(b, None);
            }
            while rx.try_recv().is_ok() {
                r.events += 1;
            }
            *now += 1;
        }
        r.wall = started.elapsed();
        while !writer.is_idle() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let process = process_cpu_ns().saturating_sub(process_before);
        r.writer_cpu_ns = process.saturating_sub(r.tick_cpu_ns);
        r.evaluated = stats.received.load(std::sync::atomic::Ordering::Relaxed) - evaluated_before;
        r.rows = stats.written.load(std::sync::atomic::Ordering::Relaxed) - written_before;
        r
    };
    let first = round(&mut table, &mut now);
    let mut measured = Vec::new();
    for _ in 0..args.rounds {
        for h in &hosts {
            let mut g = lock(h);
            for s in g.slots.iter_mut() {
                if rng.gen_bool(args.change.clamp(0.0, 1.0)) {
                    s.value = rng.gen_range(0.0..100.0);
                }
            }
        }
        measured.push(round(&mut table, &mut now));
    }
    writer.close();
    let checks = table.check_count();
    let best = measured.iter().map(|r| r.tick_cpu_ns).min().unwrap_or(0);
    Ok(json!({
        "hosts": args.hosts,
        "checks_per_host": args.checks,
        "checks": checks,
        "interval_secs": args.interval_secs,
        "first_round": first.json("first (hosts registered)"),
        "rounds": measured.iter().enumerate().map(|(i, r)| r.json(&format!("{}", i + 1))).collect::<Vec<_>>(),
        "best_round_cpu_ms": best as f64 / 1e6,
    }))
}

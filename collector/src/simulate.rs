//! Simulated hosts for `ganglion demo --simulate N`: agents speaking the real protocol
//! (the loadgen's handshake, signed batches, acks) with plausible metric shapes, so the
//! dashboard's grid, cluster and problems pages show what they are for on one machine.
//!
//! Each host first sends a backlog (the last `history` at 90-second spacing, within the
//! storage heartbeat, so graphs of the last day are filled at once) and then one batch
//! per interval. Shapes: a daily cycle peaking at 14:00 UTC with per-host noise; host 1
//! is a noisy neighbour (CPU steal 25–40 %); host 2's disk fills up (part_max_used
//! is past 85 % from the start and crosses 95 %); host 3 is busy (load per CPU above 2); host 4 goes silent
//! after `silent_after` and turns DOWN.

use std::f64::consts::PI;
use std::time::Duration;

use anyhow::{bail, Context};
use ganglion_proto::frame::{self, Kind};
use ganglion_proto::msg::{self, Ack, Batch, Facts, Hello, MetricKind, MetricMeta, Previous};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::state::now_ms;

/// `ganglion simulate`: the demo's simulated hosts against any collector.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Collector agent address.
    #[arg(long)]
    addr: String,
    #[arg(long)]
    key: String,
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// Clusters, comma-separated; hosts go round robin.
    #[arg(long, value_delimiter = ',', default_value = "bench")]
    clusters: Vec<String>,
    #[arg(long, default_value_t = 15)]
    interval_secs: u64,
    /// Backlog sent at start, in seconds (0: none, e.g. when history was written
    /// directly into the storage).
    #[arg(long, default_value_t = 0)]
    history_secs: u64,
}

impl SimulateArgs {
    pub fn into_simulation(self) -> Simulation {
        Simulation {
            addr: self.addr,
            key: self.key,
            hosts: self.hosts,
            clusters: self.clusters,
            interval: Duration::from_secs(self.interval_secs.max(1)),
            history: Duration::from_secs(self.history_secs),
            silent_after: Duration::from_secs(120),
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Collector agent address.
    pub addr: String,
    pub key: String,
    pub hosts: usize,
    /// Clusters the hosts are spread over (round robin).
    pub clusters: Vec<String>,
    pub interval: Duration,
    /// Backlog sent at start.
    pub history: Duration,
    /// When the silent host stops reporting.
    pub silent_after: Duration,
}

/// Role of a simulated host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Normal,
    NoisyNeighbour,
    FillingDisk,
    Busy,
    GoesSilent,
}

fn role(i: usize) -> Role {
    match i {
        1 => Role::NoisyNeighbour,
        2 => Role::FillingDisk,
        3 => Role::Busy,
        4 => Role::GoesSilent,
        _ => Role::Normal,
    }
}

/// Name, unit, group, description of the simulated metrics (the agent's names).
const METRICS: [(&str, &str, &str, &str); 24] = [
    ("cpu_num", "CPUs", "cpu", "Online CPUs."),
    ("cpu_user", "%", "cpu", "CPU time in user mode."),
    ("cpu_nice", "%", "cpu", "CPU time in user mode at low priority."),
    ("cpu_system", "%", "cpu", "CPU time in the kernel."),
    ("cpu_wio", "%", "cpu", "CPU time waiting for I/O."),
    ("cpu_steal", "%", "cpu", "CPU time taken by the hypervisor for other guests."),
    ("cpu_idle", "%", "cpu", "CPU time idle."),
    ("load_one", "", "load", "Load average over one minute."),
    ("load_five", "", "load", "Load average over five minutes."),
    ("load_fifteen", "", "load", "Load average over fifteen minutes."),
    ("proc_run", "processes", "process", "Runnable threads."),
    ("proc_total", "processes", "process", "Threads in existence."),
    ("mem_total", "KiB", "memory", "Usable physical memory."),
    ("mem_free", "KiB", "memory", "Memory not used at all."),
    ("mem_available", "KiB", "memory", "Memory available for new work."),
    ("mem_cached", "KiB", "memory", "Page cache."),
    ("mem_buffers", "KiB", "memory", "Block device buffers."),
    ("bytes_in", "bytes/sec", "network", "Bytes received per second."),
    ("bytes_out", "bytes/sec", "network", "Bytes sent per second."),
    ("pkts_in", "packets/sec", "network", "Packets received per second."),
    ("pkts_out", "packets/sec", "network", "Packets sent per second."),
    ("disk_total", "GB", "disk", "Size of all local filesystems."),
    ("disk_free", "GB", "disk", "Space available on all local filesystems."),
    ("part_max_used", "%", "disk", "Use% of the fullest local filesystem."),
];

/// Deterministic noise in [-1, 1] for host `i`, metric `m` at time `t`.
fn noise(i: usize, m: usize, t: i64) -> f64 {
    let mut x =
        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (m as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f) ^ t as u64;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % 2001) as f64 / 1000.0 - 1.0
}

/// The metric values of host `i` at unix second `t`; `t0` is when its disk started
/// filling and `span` how long it takes to reach 99 %.
fn values(i: usize, t: i64, t0: i64, span: i64) -> [f64; 24] {
    let r = role(i);
    // Daily cycle peaking at 14:00 UTC, with a per-host phase of up to an hour.
    let day = ((t + (i as i64 % 7) * 500) % 86_400) as f64 / 86_400.0;
    let a = (0.5 + 0.4 * (2.0 * PI * (day - 14.0 / 24.0)).cos()).clamp(0.05, 0.95);
    let n = |m: usize| noise(i, m, t / 15);
    let cpus = if i.is_multiple_of(3) { 4.0 } else { 2.0 };
    let busy: f64 = if r == Role::Busy { 1.9 } else { 1.0 };
    let user = (45.0 * a * busy + 4.0 * n(1)).clamp(0.5, 90.0);
    let system = (8.0 * a + n(3)).clamp(0.2, 30.0);
    let wio = (2.0 * a + 0.8 * n(4)).clamp(0.0, 20.0);
    let steal = if r == Role::NoisyNeighbour { 32.0 + 7.0 * n(5) } else { (0.4 + 0.3 * n(5)).max(0.0) };
    let nice = 0.5;
    let idle = (100.0 - user - system - wio - steal - nice).max(0.0);
    let load = if r == Role::Busy { cpus * 2.6 + 0.3 * n(7) } else { (cpus * a * 0.9 + 0.2 * n(7)).max(0.01) };
    let total_kib = if cpus > 2.0 { 16_777_216.0 } else { 8_388_608.0 };
    let cached = total_kib * (0.35 + 0.05 * n(15));
    let free = total_kib * (0.25 - 0.15 * a + 0.02 * n(13)).max(0.02);
    let used_pct = match r {
        Role::FillingDisk => (86.0 + 13.0 * (t - t0) as f64 / span as f64).clamp(86.0, 99.0),
        _ => 40.0 + (i % 5) as f64 * 5.0 + 0.05 * n(23),
    };
    let disk_total = 200.0;
    [
        cpus,
        user,
        nice,
        system,
        wio,
        steal,
        idle,
        load,
        (load * 0.97).max(0.01),
        (load * 0.93).max(0.01),
        (load.round() + 1.0).max(1.0),
        300.0 + 60.0 * a + 5.0 * n(11),
        total_kib,
        free,
        free + cached * 0.8,
        cached,
        total_kib * 0.02,
        (2.0e6 * a + 2.0e5 * n(17)).max(0.0),
        (6.0e6 * a + 5.0e5 * n(18)).max(0.0),
        (2.5e3 * a + 200.0 * n(19)).max(0.0),
        (4.0e3 * a + 300.0 * n(20)).max(0.0),
        disk_total,
        disk_total * (100.0 - used_pct) / 100.0,
        used_pct,
    ]
}

/// Position of a simulated metric by name.
pub fn metric_index(name: &str) -> Option<usize> {
    METRICS.iter().position(|m| m.0 == name)
}

/// Every metric of host `i` at `t` for history generated over `[from, end]`, as the
/// live host would report it.
pub fn values_at(i: usize, t: i64, from: i64, end: i64) -> [f64; 24] {
    values(i, t, from, end - from + 3600)
}

/// Runs every simulated host until `stop`; returns when all have stopped.
///
/// # Errors
/// When no host could connect.
pub async fn run(sim: Simulation, stop: CancellationToken) -> anyhow::Result<()> {
    if sim.clusters.is_empty() {
        bail!("no cluster to simulate hosts in");
    }
    let start = now_ms() / 1000;
    let mut tasks = Vec::new();
    for i in 0..sim.hosts {
        let sim = sim.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = host(i, &sim, start, &stop).await {
                tracing::warn!(host = i, error = %e, "Simulated host stopped.");
            }
        }));
        if i % 200 == 199 {
            // Let the accept queue drain instead of overflowing the listen backlog.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// The name of simulated host `i`.
pub fn host_name(sim: &Simulation, i: usize) -> (String, String) {
    let cluster = sim.clusters[i % sim.clusters.len()].clone();
    (cluster.clone(), format!("{cluster}-{i:03}"))
}

async fn host(i: usize, sim: &Simulation, start: i64, stop: &CancellationToken) -> anyhow::Result<()> {
    let key = sim.key.as_bytes();
    let (cluster, name) = host_name(sim, i);
    let metrics: Vec<MetricMeta> = METRICS
        .iter()
        .enumerate()
        .map(|(id, (n, unit, group, desc))| MetricMeta {
            id: id as u32,
            name: (*n).into(),
            unit: (*unit).into(),
            kind: MetricKind::Gauge,
            group: (*group).into(),
            description: (*desc).into(),
        })
        .collect();
    let hello = Hello {
        cluster,
        host: name.clone(),
        agent_version: concat!("simulated-", env!("CARGO_PKG_VERSION")).into(),
        sent_at_ms: now_ms(),
        interval_secs: sim.interval.as_secs().max(1) as u32,
        facts: Facts {
            hostname: name.clone(),
            os: "Debian GNU/Linux 12 (simulated)".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
            cpu_count: if i.is_multiple_of(3) { 4 } else { 2 },
            mem_total_bytes: if i.is_multiple_of(3) { 16 << 30 } else { 8 << 30 },
            addresses: vec![format!("10.0.{}.{}", i / 250, i % 250 + 1)],
            tags: [("role".to_owned(), format!("{:?}", role(i)).to_lowercase())].into_iter().collect(),
            boottime: start - 86_400 * 12,
        },
        metrics,
    };
    let (mut reader, mut wr, nonce) = crate::loadgen::handshake(&sim.addr, key, &hello).await?;
    let history = sim.history.as_secs() as i64;
    let fill_from = start - history;
    let fill_span = history + 3600;
    let (mut seq, mut acked, mut counter) = (0u64, 0u64, 1u32);
    const WINDOW: u64 = 64;
    let mut prev = Previous::default();
    let mut send = |t: i64, seq: u64, counter: u32| -> anyhow::Result<Vec<u8>> {
        let v = values(i, t, fill_from, fill_span);
        let batch = Batch {
            run: 1,
            seq,
            time_ms: t * 1000,
            defs: vec![],
            facts: None,
            values: v.iter().enumerate().map(|(k, x)| (k as u32, *x)).collect(),
            gone: vec![],
            // The loop below waits for acks of these, in the backlog by the window.
            ack: true,
            skipped: vec![],
        };
        let payload = msg::encode(&prev.delta(&batch))?;
        prev.remember(&batch);
        Ok(frame::seal(Kind::Batch, counter, &nonce, Some(key), &payload))
    };
    // Backlog, then live.
    let mut times: Vec<i64> = (0..history / 90).map(|k| fill_from + k * 90).collect();
    let live_from = std::time::Instant::now();
    let mut ticker = tokio::time::interval(sim.interval);
    loop {
        let t = match times.first().copied() {
            Some(t) => {
                times.remove(0);
                t
            }
            None => {
                tokio::select! { _ = ticker.tick() => {}, () = stop.cancelled() => return Ok(()) }
                if role(i) == Role::GoesSilent && live_from.elapsed() >= sim.silent_after {
                    tracing::info!(host = %name, "Simulated host goes silent.");
                    stop.cancelled().await;
                    return Ok(());
                }
                now_ms() / 1000
            }
        };
        seq += 1;
        wr.write_all(&send(t, seq, counter)?).await?;
        counter += 1;
        while seq >= acked + WINDOW || (times.is_empty() && acked < seq) {
            let f = tokio::select! {
                f = tokio::time::timeout(Duration::from_secs(30), reader.next()) => f.context("no ack within 30 s")??.context("collector closed the connection")?,
                () = stop.cancelled() => return Ok(()),
            };
            if f.kind != Kind::Ack {
                bail!("unexpected {:?} frame", f.kind);
            }
            let ack: Ack = msg::decode(&f.payload)?;
            acked = ack.seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_plausible() {
        let t = 1_700_000_000 - 1_700_000_000 % 86_400;
        let at = |i: usize, h: i64| values(i, t + h * 3600, t - 86_400, 90_000);
        // Busier in the afternoon than at night.
        assert!(at(0, 14)[7] > at(0, 2)[7] * 2.0);
        // CPU shares add up to 100 and stay in range.
        for h in 0..24 {
            let v = at(5, h);
            let sum: f64 = v[1..7].iter().sum();
            assert!((sum - 100.0).abs() < 1e-6 && v[1..7].iter().all(|x| (0.0..=100.0).contains(x)), "{v:?}");
        }
        assert!(at(1, 3)[5] > 20.0, "the noisy neighbour's steal");
        assert!(at(0, 3)[5] < 2.0);
        assert!(values(2, t + 86_000, t, 90_000)[23] > 95.0, "the disk fills");
        assert!(values(2, t, t, 90_000)[23] < 95.0);
        assert!(at(3, 14)[8] / at(3, 14)[0] > 2.0, "the busy host's load per CPU");
    }
}

//! `store-bench`: the engine side of `scripts/bench-storage`. N series × ROUNDS rounds
//! of one GAUGE sample each through `Store::append` (journal on, group commit), then a
//! full flush; prints one JSON line (updates/s incl. flush, CPU s, bytes written from
//! /proc/self/io, disk per series, fetch p50/p99 of one day of one series).
//! usage: store-bench DIR [series=10000] [rounds=40] [flush_every_rounds=0]

use std::path::PathBuf;
use std::time::Instant;

use ganglion_store::engine::{DsKind, FsyncPolicy, SeriesKey, Store, StoreConfig, Update};
use ganglion_store::rrd::{Cf, RraDef};

fn proc_io(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split(':').nth(1)?.trim().parse().ok()))
        .unwrap_or(0)
}

fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("/tmp/store-bench"));
    let n: usize = args.get(2).and_then(|x| x.parse().ok()).unwrap_or(10_000);
    let rounds: i64 = args.get(3).and_then(|x| x.parse().ok()).unwrap_or(40);
    let flush_every: i64 = args.get(4).and_then(|x| x.parse().ok()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    let archives = ["1:244", "24:244", "168:244", "672:244", "5760:374"]
        .iter()
        .map(|s| RraDef::parse(&format!("RRA:AVERAGE:0.5:{s}")))
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = StoreConfig {
        step_secs: 15,
        heartbeat_secs: 120,
        archives,
        fsync: FsyncPolicy::IntervalMs(1000),
        background: false,
        ..StoreConfig::default()
    };
    let store = Store::open(&dir, cfg)?;
    let t0: i64 = 1_700_000_000 - 1_700_000_000 % 86_400;
    let keys: Vec<SeriesKey> = (0..n)
        .map(|i| SeriesKey::new("bench", &format!("host{:03}", i / 100), &format!("metric{:03}", i % 100)))
        .collect();
    let (io0, cpu0, start) = (proc_io("write_bytes"), cpu_secs(), Instant::now());
    for k in 1..=rounds {
        let t = (t0 + 15 * k) * 1000;
        let batch: Vec<Update> = keys
            .iter()
            .enumerate()
            .map(|(i, s)| Update {
                series: s.clone(),
                kind: DsKind::Gauge,
                time_ms: t,
                value: ((i * 7919 + k as usize * 104_729) % 1_000_000) as f64 / 1000.0,
            })
            .collect();
        for chunk in batch.chunks(1000) {
            let ticket = store.append(chunk)?;
            store.durable(ticket)?;
        }
        if flush_every > 0 && k % flush_every == 0 && k != rounds {
            store.flush_all()?;
        }
    }
    store.flush_all()?;
    let secs = start.elapsed().as_secs_f64();
    let (io1, cpu1) = (proc_io("write_bytes"), cpu_secs());
    let mut lat = Vec::new();
    let end = (t0 + 15 * rounds) as u64;
    for i in 0..200 {
        let s = Instant::now();
        store.fetch(&keys[i * 37 % n], Cf::Average, end - 86_400, end, 1)?;
        lat.push(s.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let mut disk = 0u64;
    let mut stack = vec![dir.join("series")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                disk += std::os::unix::fs::MetadataExt::blocks(&e.metadata()?) * 512;
            }
        }
    }
    let updates = n as f64 * rounds as f64;
    println!(
        "{{\"mode\":\"ganglion\",\"series\":{n},\"rounds\":{rounds},\"flush_every\":{flush_every},\"updates_per_s_incl_flush\":{:.0},\"cpu_s\":{:.3},\"write_bytes\":{},\"write_bytes_per_update\":{:.1},\"disk_per_series\":{},\"fetch_p50_us\":{:.1},\"fetch_p99_us\":{:.1},\"fsyncs\":{}}}",
        updates / secs,
        cpu1 - cpu0,
        io1 - io0,
        (io1 - io0) as f64 / updates,
        disk / n as u64,
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        store.stats().fsyncs.load(std::sync::atomic::Ordering::Relaxed),
    );
    store.close()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

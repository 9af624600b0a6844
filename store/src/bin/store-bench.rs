//! `store-bench`: the engine side of `scripts/bench-storage`. Each mode prints one JSON
//! line. The workload is the issue's: N series of one GAUGE each, step 15, heartbeat
//! 120, archives AVERAGE 1:244, 24:244, 168:244, 672:244, 5760:374, rounds of one
//! sample per series.
//!
//! ```text
//! store-bench throughput DIR [series=10000] [rounds=40] [chunk=1000] [sync_every_round=0] [ids=0]
//!     appends (chunks of `chunk`; the journal synced as the default group commit does,
//!     at most once a second, or after every round with 1), then a full flush;
//!     updates/s including the flush, CPU, bytes written (/proc/self/io), disk per
//!     series. With ids=1 the samples go through Store::append_ids (series resolved
//!     once) instead of Store::append (names hashed per sample).
//! store-bench realtime DIR [series=10000] [rounds=40] [period_s=3600]
//!     the rounds as data time: 15 appends per round (one per second of data time),
//!     each durable (group commit once a second); a flush period of `period_s` spread
//!     over the shards; one period of warm-up first, then bytes written per update
//!     over whole periods (at least `rounds` rounds) in steady state.
//! store-bench fetch DIR
//!     one series with 8 days of data, flushed, plus 10 minutes unflushed; p50/p99 of
//!     fetching one day (AVERAGE, as `rrdtool fetch -s end-1d -e end`).
//! store-bench startup DIR [series=1000000]
//!     first run: creates the series (two samples each, flushed, a third round left in
//!     the journal) and stops; later runs evict DIR from the page cache, then measure
//!     Store::open (seconds, memory per series, the journal round replayed) and the
//!     background block scan, and leave DIR as they found it.
//! store-bench crash-writer DIR [series=1000]
//!     appends rounds as fast as it can with a 1 s flush period, printing
//!     `acked ROUND` after each durable; meant to be killed with SIGKILL.
//! store-bench crash-check DIR SERIES ACKED_ROUND
//!     reopens and counts acknowledged samples that are missing.
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{bail, Context};
use ganglion_store::engine::{DsKind, FsyncPolicy, SeriesId, SeriesKey, Store, StoreConfig, Update};
use ganglion_store::rrd::{Cf, RraDef};

const T0: i64 = 1_700_000_000 - 1_700_000_000 % 86_400;

fn proc_io(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split(':').nth(1)?.trim().parse().ok()))
        .unwrap_or(0)
}

fn proc_status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// CPU seconds of the whole process (all threads, ended ones included).
fn cpu_secs() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn archives() -> anyhow::Result<Vec<RraDef>> {
    Ok(["1:244", "24:244", "168:244", "672:244", "5760:374"]
        .iter()
        .map(|s| RraDef::parse(&format!("RRA:AVERAGE:0.5:{s}")))
        .collect::<Result<Vec<_>, _>>()?)
}

fn config(background: bool, flush_secs: u64) -> anyhow::Result<StoreConfig> {
    Ok(StoreConfig {
        step_secs: 15,
        heartbeat_secs: 120,
        archives: archives()?,
        fsync: FsyncPolicy::IntervalMs(1000),
        flush_interval_secs: flush_secs,
        background,
        ..StoreConfig::default()
    })
}

fn keys(n: usize) -> Vec<SeriesKey> {
    let per = (n / 100).max(1);
    (0..n).map(|i| SeriesKey::new("bench", &format!("host{:04}", i / per), &format!("metric{:04}", i % per))).collect()
}

fn value(i: usize, k: i64) -> f64 {
    ((i * 7919 + k as usize * 104_729) % 1_000_000) as f64 / 1000.0
}

fn round(keys: &[SeriesKey], k: i64) -> Vec<Update> {
    let t = (T0 + 15 * k) * 1000;
    keys.iter()
        .enumerate()
        .map(|(i, s)| Update { series: s.clone(), kind: DsKind::Gauge, time_ms: t, value: value(i, k) })
        .collect()
}

fn du(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let mut bytes = 0u64;
    let mut files = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                bytes += std::os::unix::fs::MetadataExt::blocks(&e.metadata()?) * 512;
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|x| x.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("throughput");
    let dir = PathBuf::from(args.get(2).map(String::as_str).unwrap_or("/tmp/store-bench"));
    match mode {
        "throughput" => {
            let (n, rounds, chunk) = (arg(&args, 3, 10_000), arg(&args, 4, 40), arg(&args, 5, 1000));
            throughput(&dir, n, rounds, chunk, arg(&args, 6, 0) == 1, arg(&args, 7, 0) == 1)
        }
        "realtime" => realtime(&dir, arg(&args, 3, 10_000), arg(&args, 4, 40), arg(&args, 5, 3600)),
        "fetch" => fetch(&dir),
        "startup" => startup(&dir, arg(&args, 3, 1_000_000)),
        "crash-writer" => crash_writer(&dir, arg(&args, 3, 1000)),
        "crash-check" => crash_check(&dir, arg(&args, 3, 1000), arg(&args, 4, 0)),
        other => bail!("unknown mode {other}; see the source header for usage"),
    }
}

fn throughput(dir: &Path, n: usize, rounds: i64, chunk: usize, per_round_sync: bool, ids: bool) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let store = Store::open(dir, config(false, 3600)?)?;
    let keys = keys(n);
    // One round's batch, reused: like a collector decoding the next frames of the same
    // agents, only times and values change.
    let mut batch = round(&keys, 1);
    // By id: resolved once, as a collector would per agent metric.
    let mut by_id: Vec<(SeriesId, i64, f64)> = Vec::new();
    let (io0, cpu0, start) = (proc_io("write_bytes"), cpu_secs(), Instant::now());
    if ids {
        for k in &keys {
            by_id.push((store.series_id(k, DsKind::Gauge).context("series id")?, 0, 0.0));
        }
    }
    let mut last_sync = Instant::now();
    let mut last = None;
    for k in 1..=rounds {
        if ids {
            for (i, u) in by_id.iter_mut().enumerate() {
                u.1 = (T0 + 15 * k) * 1000;
                u.2 = value(i, k);
            }
            for c in by_id.chunks(chunk.max(1)) {
                last = Some(store.append_ids(c)?);
            }
        } else {
            for (i, u) in batch.iter_mut().enumerate() {
                u.time_ms = (T0 + 15 * k) * 1000;
                u.value = value(i, k);
            }
            for c in batch.chunks(chunk.max(1)) {
                last = Some(store.append(c)?);
            }
        }
        // Group commit as the default policy does it: at most once a second, and
        // before the flush.
        if per_round_sync || last_sync.elapsed().as_secs_f64() >= 1.0 {
            if let Some(t) = last {
                store.durable(t)?;
            }
            last_sync = Instant::now();
        }
    }
    if let Some(t) = last {
        store.durable(t)?;
    }
    let ingest = start.elapsed().as_secs_f64();
    let cpu_ingest = cpu_secs() - cpu0;
    store.flush_all()?;
    let secs = start.elapsed().as_secs_f64();
    let (io1, cpu1) = (proc_io("write_bytes"), cpu_secs());
    let (disk, files) = du(dir)?;
    let updates = n as f64 * rounds as f64;
    let st = store.stats();
    println!(
        "{{\"mode\":\"ganglion\",\"series\":{n},\"rounds\":{rounds},\"chunk\":{chunk},\"sync_every_round\":{per_round_sync},\"by_id\":{ids},\"updates_per_s_incl_flush\":{:.0},\"ingest_updates_per_s\":{:.0},\"ingest_s\":{ingest:.4},\"flush_s\":{:.4},\"total_s\":{secs:.4},\"cpu_s\":{:.3},\"cpu_ingest_s\":{cpu_ingest:.3},\"write_bytes\":{},\"write_bytes_per_update\":{:.1},\"disk_bytes\":{disk},\"files\":{files},\"disk_per_series\":{:.0},\"shards\":{},\"fsyncs\":{},\"journal_bytes\":{}}}",
        updates / secs,
        updates / ingest,
        secs - ingest,
        cpu1 - cpu0,
        io1 - io0,
        (io1 - io0) as f64 / updates,
        disk as f64 / n as f64,
        store.shard_count(),
        st.fsyncs.load(Ordering::Relaxed),
        st.journal_bytes.load(Ordering::Relaxed),
    );
    store.close()?;
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

fn realtime(dir: &Path, n: usize, rounds: i64, period: u64) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let store = Store::open(dir, config(false, period)?)?;
    let keys = keys(n);
    let parts = (period / 15).max(1) as i64;
    let warm = parts;
    // Whole flush cycles, so every shard is flushed as often as in steady state: at
    // least `rounds`, rounded up to a multiple of the period.
    let rounds = (rounds.max(1) + parts - 1) / parts * parts;
    let mut io0 = 0;
    let mut cpu0 = 0.0;
    let mut t0 = Instant::now();
    for k in 1..=warm + rounds {
        if k == warm + 1 {
            io0 = proc_io("write_bytes");
            cpu0 = cpu_secs();
            t0 = Instant::now();
        }
        let b = round(&keys, k);
        // One second of data time per append (group commit once a second).
        for c in b.chunks(n.div_ceil(15).max(1)) {
            let t = store.append(c)?;
            store.durable(t)?;
        }
        // The flusher's spread: each round flushes the shards due in it.
        store.flush_part((k % parts) as usize, parts as usize)?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (io1, cpu1) = (proc_io("write_bytes"), cpu_secs());
    let updates = n as f64 * rounds as f64;
    println!(
        "{{\"mode\":\"ganglion_realtime\",\"series\":{n},\"rounds\":{rounds},\"flush_period_s\":{period},\"warmup_rounds\":{warm},\"write_bytes\":{},\"write_bytes_per_update\":{:.1},\"cpu_s\":{:.3},\"wall_s\":{secs:.3},\"shards\":{}}}",
        io1 - io0,
        (io1 - io0) as f64 / updates,
        cpu1 - cpu0,
        store.shard_count(),
    );
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

fn fetch(dir: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let store = Store::open(dir, config(false, 3600)?)?;
    let key = SeriesKey::new("bench", "graph", "cpu_user");
    let n = 8 * 86_400 / 15;
    let mk = |k: i64| Update {
        series: key.clone(),
        kind: DsKind::Gauge,
        time_ms: (T0 + 15 * k) * 1000,
        value: 50.0 + 30.0 * (k as f64 / 5760.0 * std::f64::consts::TAU).sin(),
    };
    let all: Vec<Update> = (1..=n).map(mk).collect();
    for c in all.chunks(2000) {
        store.append(c)?;
    }
    store.flush_all()?;
    // Ten more minutes in memory, as between two flushes.
    let more: Vec<Update> = (n + 1..=n + 40).map(mk).collect();
    store.append(&more)?;
    let end = (T0 + 15 * (n + 40)) as u64;
    let mut lat = Vec::new();
    let mut rows = 0;
    for _ in 0..3000 {
        let s = Instant::now();
        let f = store.fetch(&key, Cf::Average, end - 86_400, end, 1)?;
        lat.push(s.elapsed().as_secs_f64() * 1e6);
        rows = f.rows.len();
    }
    let f = store.fetch(&key, Cf::Average, end - 86_400, end, 1)?;
    let known = f.rows.iter().filter(|r| !r[0].is_nan()).count();
    lat.sort_by(f64::total_cmp);
    println!(
        "{{\"mode\":\"ganglion_fetch\",\"rows\":{rows},\"known_rows\":{known},\"step\":{},\"fetch_p50_us\":{:.1},\"fetch_p99_us\":{:.1}}}",
        f.step,
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Drops `dir`'s files from the page cache (this process's files only).
fn evict(dir: &Path) -> anyhow::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                let f = std::fs::File::open(e.path())?;
                f.sync_all()?;
                rustix::fs::fadvise(&f, 0, 0, rustix::fs::Advice::DontNeed)?;
            }
        }
    }
    Ok(())
}

fn startup(dir: &Path, n: usize) -> anyhow::Result<()> {
    let marker = dir.join("bench-series");
    // "series next_round"
    let m = std::fs::read_to_string(&marker).unwrap_or_default();
    let mut m = m.split_whitespace().map(|x| x.parse::<i64>().unwrap_or(0));
    let (have, next) = (m.next().unwrap_or(0) as usize, m.next().unwrap_or(0));
    let keys = keys(n);
    let mut create_s = 0.0;
    if have != n {
        let _ = std::fs::remove_dir_all(dir);
        let t = Instant::now();
        let store = Store::open(dir, config(false, 3600)?)?;
        for k in 1..=2 {
            for c in keys.chunks(10_000) {
                store.append(&round(c, k))?;
            }
        }
        store.flush_all()?;
        create_s = t.elapsed().as_secs_f64();
        // One round waits in the journal, as after a crash between two flushes.
        for c in keys.chunks(10_000) {
            store.append(&round(c, 3))?;
        }
        store.stats(); // (nothing flushed: the journal holds round 3)
        drop(store);
        std::fs::write(&marker, format!("{n} 4"))?;
        println!("{{\"mode\":\"ganglion_create\",\"series\":{n},\"create_s\":{create_s:.2}}}");
        return Ok(());
    }
    let (disk, files) = du(dir)?;
    evict(dir)?;
    let rss0 = proc_status_kb("VmRSS");
    let t = Instant::now();
    let store = Store::open(dir, config(true, 3600)?)?;
    let open_s = t.elapsed().as_secs_f64();
    let rss1 = proc_status_kb("VmRSS");
    if store.series_count() != n {
        bail!("opened {} series, expected {n}", store.series_count());
    }
    let replayed = store.stats().unflushed_bytes.load(Ordering::Relaxed) / 16;
    // The background block scan.
    while store.stats().scan_done.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let scan_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"mode\":\"ganglion_startup\",\"series\":{n},\"create_s\":{create_s:.1},\"disk_bytes\":{disk},\"files\":{files},\"disk_per_series\":{:.0},\"open_s\":{open_s:.3},\"replayed_samples\":{replayed},\"rss_before_kib\":{rss0},\"rss_after_open_kib\":{rss1},\"bytes_per_series\":{:.0},\"scan_s\":{scan_s:.2},\"scan_blocks\":{},\"vmhwm_kib\":{}}}",
        disk as f64 / n as f64,
        (rss1.saturating_sub(rss0) * 1024) as f64 / n as f64,
        store.stats().scan_blocks.load(Ordering::Relaxed),
        proc_status_kb("VmHWM"),
    );
    // Back to the same state for the next run: everything flushed, one round in the
    // journal.
    store.close()?;
    drop(store);
    let store = Store::open(dir, config(false, 3600)?)?;
    for c in keys.chunks(10_000) {
        store.append(&round(c, next))?;
    }
    std::fs::write(&marker, format!("{n} {}", next + 1))?;
    Ok(())
}

fn crash_writer(dir: &Path, n: usize) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let mut cfg = config(true, 1)?;
    cfg.fsync = FsyncPolicy::IntervalMs(100);
    let store = std::sync::Arc::new(Store::open(dir, cfg)?);
    let keys = keys(n);
    // Appends never wait; a second thread acknowledges rounds as group commits cover
    // them, like a collector answering agents.
    // At most a few rounds ahead of the acknowledgements (crash-check reads the newest
    // rounds from the 244-row archive).
    let (tx, rx) = std::sync::mpsc::sync_channel::<(i64, ganglion_store::engine::Ticket)>(32);
    let acker = {
        let store = store.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            use std::io::Write;
            let mut out = std::io::stdout();
            for (k, t) in rx {
                store.durable(t)?;
                writeln!(out, "acked {k}")?;
                out.flush()?;
            }
            Ok(())
        })
    };
    for k in 1.. {
        let t = store.append(&round(&keys, k))?;
        if tx.send((k, t)).is_err() {
            break;
        }
    }
    drop(tx);
    acker.join().map_err(|_| anyhow::anyhow!("acker panicked"))??;
    Ok(())
}

fn crash_check(dir: &Path, n: usize, acked: i64) -> anyhow::Result<()> {
    let store = Store::open(dir, config(false, 3600)?).context("reopen after the kill")?;
    let keys = keys(n);
    let mut lost = 0u64;
    let mut checked = 0u64;
    // The newest 200 acknowledged rounds of every series, from archive 0 (244 rows,
    // so it covers them while the writer was at most 44 rounds ahead); round 1 is a
    // series' first row, unknown by rrdtool's rules (its step started before the
    // series).
    let first = (acked - 199).max(2);
    let mut missing_rounds = std::collections::BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let f = store.fetch(key, Cf::Average, (T0 + 15 * (first - 1)) as u64, (T0 + 15 * acked) as u64, 15)?;
        if f.step != 15 {
            bail!("the writer ran more than 44 rounds ahead of its acknowledgements; archive of {} s chosen", f.step);
        }
        for k in first..=acked {
            checked += 1;
            let row = (k - first) as usize;
            let got = f.rows.get(row).map_or(f64::NAN, |r| r[0]);
            // rrdtool's arithmetic may change the last bit ((v·15)/15 ≠ v); a lost
            // sample is unknown or another value.
            let want = value(i, k);
            if got.is_nan() || (got - want).abs() > 1e-9 * want.abs().max(1.0) {
                lost += 1;
                *missing_rounds.entry(k).or_insert(0u64) += 1;
            }
        }
    }
    if !missing_rounds.is_empty() {
        eprintln!("missing acknowledged samples per round: {missing_rounds:?}");
    }
    println!(
        "{{\"mode\":\"ganglion_crash\",\"series\":{n},\"acked_rounds\":{acked},\"checked\":{checked},\"acked_lost\":{lost},\"journal_truncated\":{},\"corrupt_files\":{}}}",
        store.stats().journal_truncated.load(Ordering::Relaxed),
        store.stats().corrupt_files.load(Ordering::Relaxed),
    );
    Ok(())
}

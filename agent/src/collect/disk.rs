//! Block device I/O from `/proc/diskstats`, computed as `iostat -x` (sysstat 12)
//! does over the interval.
//!
//! Only whole disks are reported — devices that have a `/sys/block/<dev>` directory
//! (sda, nvme0n1, vda, dm-0, md0) — and not their partitions, because partitions
//! would multiply the metric count while adding little: their I/O is already in the
//! disk's. Devices whose name starts with one of the configured skip prefixes (loop,
//! ram, zram, fd, sr by default) are ignored.
//!
//! Per device, over the interval:
//! - `reads`, `writes`: requests completed per second (r/s, w/s);
//! - `read_kbytes`, `write_kbytes`: KiB per second, sectors × 512 / 1024 (rkB/s,
//!   wkB/s);
//! - `r_await`, `w_await`: Δticks / Δrequests in ms, 0 when there was no request;
//! - `await`: the same over reads, writes and discards together (sysstat 12's
//!   `await`; discard fields exist from Linux 4.18 on and read as zero before);
//! - `util`: Δio_ticks / elapsed ms × 100, capped at 100 (%util).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use super::rate::{delta, rate};
use super::{gauge, metric_names, Reading};

/// The `/proc/diskstats` counters iostat uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DiskCounters {
    pub rd_ios: u64,
    pub rd_sect: u64,
    pub rd_ticks: u64,
    pub wr_ios: u64,
    pub wr_sect: u64,
    pub wr_ticks: u64,
    pub io_ticks: u64,
    pub dc_ios: u64,
    pub dc_ticks: u64,
}

/// Parses one `/proc/diskstats` line into the device name and its counters; `None`
/// for a line that is not a device with at least the eleven classic fields (Linux
/// 2.6.25 and later print those for partitions too).
pub(crate) fn parse_diskstats_line(line: &str) -> Option<(&str, DiskCounters)> {
    let mut f = line.split_ascii_whitespace();
    f.next()?; // major
    f.next()?; // minor
    let name = f.next()?;
    let mut v = [0u64; 15];
    let mut n = 0;
    for (slot, field) in v.iter_mut().zip(f) {
        *slot = field.parse().ok()?;
        n += 1;
    }
    if n < 11 {
        return None;
    }
    Some((
        name,
        DiskCounters {
            rd_ios: v[0],
            rd_sect: v[2],
            rd_ticks: v[3],
            wr_ios: v[4],
            wr_sect: v[6],
            wr_ticks: v[7],
            io_ticks: v[9],
            dc_ios: v[11],
            dc_ticks: v[14],
        },
    ))
}

/// `iostat -x` figures of one device over one interval; `None` where a counter went
/// backwards.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct IoStat {
    pub reads: Option<f64>,
    pub writes: Option<f64>,
    pub read_kbytes: Option<f64>,
    pub write_kbytes: Option<f64>,
    pub r_await: Option<f64>,
    pub w_await: Option<f64>,
    pub await_ms: Option<f64>,
    pub util: Option<f64>,
}

/// Computes [`IoStat`] between two readings `secs` seconds apart.
pub(crate) fn iostat(prev: &DiskCounters, cur: &DiskCounters, secs: f64) -> IoStat {
    // Δticks / Δios in ms, 0.0 when no request completed (as iostat prints).
    let wait = |ticks: Option<u64>, ios: Option<u64>| match (ticks, ios) {
        (Some(_), Some(0)) => Some(0.0),
        (Some(t), Some(n)) => Some(t as f64 / n as f64),
        _ => None,
    };
    let sum = |parts: [Option<u64>; 3]| parts.iter().try_fold(0u64, |acc, p| Some(acc.saturating_add((*p)?)));
    let (rd_ios, wr_ios, dc_ios) =
        (delta(prev.rd_ios, cur.rd_ios), delta(prev.wr_ios, cur.wr_ios), delta(prev.dc_ios, cur.dc_ios));
    let (rd_ticks, wr_ticks, dc_ticks) =
        (delta(prev.rd_ticks, cur.rd_ticks), delta(prev.wr_ticks, cur.wr_ticks), delta(prev.dc_ticks, cur.dc_ticks));
    let kib = |p: u64, c: u64| rate(p, c, secs).map(|sectors| sectors * 512.0 / 1024.0);
    IoStat {
        reads: rate(prev.rd_ios, cur.rd_ios, secs),
        writes: rate(prev.wr_ios, cur.wr_ios, secs),
        read_kbytes: kib(prev.rd_sect, cur.rd_sect),
        write_kbytes: kib(prev.wr_sect, cur.wr_sect),
        r_await: wait(rd_ticks, rd_ios),
        w_await: wait(wr_ticks, wr_ios),
        await_ms: wait(sum([rd_ticks, wr_ticks, dc_ticks]), sum([rd_ios, wr_ios, dc_ios])),
        util: rate(prev.io_ticks, cur.io_ticks, secs).map(|ms_per_sec| (ms_per_sec / 10.0).min(100.0)),
    }
}

/// What the agent remembers about one device between readings.
#[derive(Debug)]
struct DiskState {
    /// Whether `/sys/block/<dev>` exists; looked up once per sighting of the device.
    whole: bool,
    /// `diskio_<sanitized dev>_<suffix>` for each row of [`IOSTAT`], built once.
    names: [String; IOSTAT.len()],
    prev: DiskCounters,
    /// Generation of the last reading that listed the device.
    seen: u64,
}

/// Previous counters of every device, and when they were read.
#[derive(Debug, Default)]
pub(crate) struct Disks {
    devices: HashMap<String, DiskState>,
    at: Option<Instant>,
    generation: u64,
}

impl Disks {
    /// Turns a fresh `/proc/diskstats` into readings, remembering the counters for
    /// the next call. A device seen for the first time gives rates from its second
    /// reading on; a device no longer listed is forgotten.
    pub(crate) fn update(
        &mut self,
        text: &str,
        now: Instant,
        sys_root: &Path,
        skip: &[String],
        out: &mut Vec<Reading>,
    ) {
        self.generation += 1;
        // No time passed (or `now` went backwards): nothing to divide by, no rates.
        let secs = self.at.map(|at| now.saturating_duration_since(at).as_secs_f64()).filter(|s| *s > 0.0);
        for (name, cur) in text.lines().filter_map(parse_diskstats_line) {
            if skip.iter().any(|p| name.starts_with(p.as_str())) {
                continue;
            }
            let Some(state) = self.devices.get_mut(name) else {
                // cciss/c0d0 appears in sysfs as cciss!c0d0.
                let whole = sys_root.join("block").join(name.replace('/', "!")).is_dir();
                let names = metric_names("diskio", name, IOSTAT.map(|(suffix, ..)| suffix));
                self.devices.insert(name.to_owned(), DiskState { whole, names, prev: cur, seen: self.generation });
                continue;
            };
            state.seen = self.generation;
            if state.whole {
                if let Some(secs) = secs {
                    push_iostat(out, &state.names, &iostat(&state.prev, &cur, secs));
                }
            }
            state.prev = cur;
        }
        let generation = self.generation;
        self.devices.retain(|_, s| s.seen == generation);
        self.at = Some(now);
    }
}

/// Each device's metrics: name suffix, unit and description.
const IOSTAT: [(&str, &str, &str); 8] = [
    ("reads", "reads/sec", "Read requests completed per second (iostat r/s)."),
    ("writes", "writes/sec", "Write requests completed per second (iostat w/s)."),
    ("read_kbytes", "KiB/sec", "KiB read per second (iostat rkB/s)."),
    ("write_kbytes", "KiB/sec", "KiB written per second (iostat wkB/s)."),
    ("r_await", "ms", "Mean time to serve a read, queueing included (iostat r_await)."),
    ("w_await", "ms", "Mean time to serve a write, queueing included (iostat w_await)."),
    ("await", "ms", "Mean time to serve a read, write or discard (iostat await)."),
    ("util", "%", "Share of time the device was busy (iostat %util)."),
];

fn push_iostat(out: &mut Vec<Reading>, names: &[String; IOSTAT.len()], s: &IoStat) {
    let values = [s.reads, s.writes, s.read_kbytes, s.write_kbytes, s.r_await, s.w_await, s.await_ms, s.util];
    for ((name, (_, unit, description)), value) in names.iter().zip(IOSTAT).zip(values) {
        if let Some(v) = value {
            out.push(gauge(name.clone(), unit, "diskio", description, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{fixture, value};
    use proptest::prelude::*;
    use std::time::Duration;

    fn skip() -> Vec<String> {
        crate::collect::HostConfig::default().skip_devices
    }

    fn two_readings() -> Vec<Reading> {
        let t0 = Instant::now();
        let sys = fixture("vm/sys");
        let mut disks = Disks::default();
        let mut out = Vec::new();
        disks.update(&std::fs::read_to_string(fixture("vm/t0/diskstats")).unwrap(), t0, &sys, &skip(), &mut out);
        assert!(out.is_empty(), "first reading gives no rates: {out:?}");
        let t1 = t0 + Duration::from_secs(10);
        disks.update(&std::fs::read_to_string(fixture("vm/t1/diskstats")).unwrap(), t1, &sys, &skip(), &mut out);
        out
    }

    #[test]
    fn reports_whole_disks_only_and_skips_loop_devices() {
        let out = two_readings();
        let mut devices: Vec<_> =
            out.iter().filter_map(|r| r.name.strip_prefix("diskio_")?.strip_suffix("_util")).collect();
        devices.sort_unstable();
        assert_eq!(devices, ["dm-0", "dm-1", "md0", "nvme0n1", "nvme1n1", "sda", "sdb"]);
    }

    #[test]
    fn computes_iostat_values_of_an_nvme_disk() {
        // nvme0n1 over 10 s (see the fixture's README): reads +1500, read sectors
        // +96000, read ticks +750 ms; writes +3000 (+50 merged), write sectors +240000,
        // write ticks +4500 ms; discards +100 taking +250 ms; io_ticks +4200 ms.
        let out = two_readings();
        let v = |s: &str| value(&out, &format!("diskio_nvme0n1_{s}"));
        assert_eq!(v("reads"), Some(150.0));
        assert_eq!(v("writes"), Some(300.0));
        assert_eq!(v("read_kbytes"), Some(4800.0));
        assert_eq!(v("write_kbytes"), Some(12000.0));
        assert_eq!(v("r_await"), Some(0.5));
        assert_eq!(v("w_await"), Some(1.5));
        // (750 + 4500 + 250) ms / (1500 + 3000 + 100) requests.
        assert_eq!(v("await"), Some(5500.0 / 4600.0));
        assert_eq!(v("util"), Some(42.0));
    }

    #[test]
    fn idle_disk_has_zero_await_and_old_kernel_disk_has_no_discards() {
        let out = two_readings();
        // sdb did nothing in the interval.
        assert_eq!(value(&out, "diskio_sdb_reads"), Some(0.0));
        assert_eq!(value(&out, "diskio_sdb_await"), Some(0.0));
        assert_eq!(value(&out, "diskio_sdb_util"), Some(0.0));
        // sda: reads +200 in 10 s, read ticks +1600, io_ticks +12000 (over 100 %: capped).
        assert_eq!(value(&out, "diskio_sda_reads"), Some(20.0));
        assert_eq!(value(&out, "diskio_sda_r_await"), Some(8.0));
        assert_eq!(value(&out, "diskio_sda_util"), Some(100.0));
    }

    #[test]
    fn counter_going_backwards_gives_no_spike() {
        let sys = fixture("vm/sys");
        let t0 = Instant::now();
        let mut disks = Disks::default();
        let mut out = Vec::new();
        let line =
            |reads: u64, ticks: u64| format!(" 259 0 nvme0n1 {reads} 0 800 {ticks} 10 0 80 5 0 20 25 0 0 0 0 0 0\n");
        disks.update(&line(1_000_000, 9_000), t0, &sys, &[], &mut out);
        // The device was replaced between readings: its counters started again.
        disks.update(&line(50, 40), t0 + Duration::from_secs(10), &sys, &[], &mut out);
        assert_eq!(value(&out, "diskio_nvme0n1_reads"), None);
        assert_eq!(value(&out, "diskio_nvme0n1_r_await"), None);
        assert_eq!(value(&out, "diskio_nvme0n1_await"), None);
        // Unchanged counters still give their values.
        assert_eq!(value(&out, "diskio_nvme0n1_writes"), Some(0.0));
        // The next interval is measured from the new counters.
        out.clear();
        disks.update(&line(150, 90), t0 + Duration::from_secs(20), &sys, &[], &mut out);
        assert_eq!(value(&out, "diskio_nvme0n1_reads"), Some(10.0));
        assert_eq!(value(&out, "diskio_nvme0n1_r_await"), Some(0.5));
    }

    #[test]
    fn io_ticks_wrapping_at_32_bits_is_unwrapped() {
        let prev = DiskCounters { io_ticks: (1 << 32) - 1_000, ..DiskCounters::default() };
        let cur = DiskCounters { io_ticks: 4_000, ..DiskCounters::default() };
        assert_eq!(iostat(&prev, &cur, 10.0).util, Some(50.0));
    }

    #[test]
    fn hot_plugged_disk_gives_rates_from_second_sighting_and_removed_disk_vanishes() {
        let sys = fixture("vm/sys");
        let t0 = Instant::now();
        let mut disks = Disks::default();
        let mut out = Vec::new();
        let sda = " 8 0 sda 100 0 800 50 10 0 80 5 0 20 25\n";
        let sdb = |r: u64| format!(" 8 16 sdb {r} 0 800 50 10 0 80 5 0 20 25\n");
        disks.update(sda, t0, &sys, &[], &mut out);
        disks.update(&format!("{sda}{}", sdb(100)), t0 + Duration::from_secs(10), &sys, &[], &mut out);
        assert!(value(&out, "diskio_sda_reads").is_some());
        assert_eq!(value(&out, "diskio_sdb_reads"), None, "no rate at first sighting");
        out.clear();
        disks.update(&format!("{sda}{}", sdb(200)), t0 + Duration::from_secs(20), &sys, &[], &mut out);
        assert_eq!(value(&out, "diskio_sdb_reads"), Some(10.0));
        out.clear();
        disks.update(sda, t0 + Duration::from_secs(30), &sys, &[], &mut out);
        assert!(out.iter().all(|r| !r.name.starts_with("diskio_sdb")));
        // Plugged in again with fresh counters: first sighting again, no spike.
        disks.update(&format!("{sda}{}", sdb(5)), t0 + Duration::from_secs(40), &sys, &[], &mut out);
        assert_eq!(value(&out, "diskio_sdb_reads"), None);
    }

    #[test]
    fn short_and_garbage_lines_are_skipped() {
        assert_eq!(parse_diskstats_line("   8    1 sda1 35713 1122730 106304 850432"), None);
        assert_eq!(parse_diskstats_line("8 0 sda 1 2 3 4 5 6 7 8 9 10 x"), None);
        let (name, c) = parse_diskstats_line("8 0 sda 1 2 3 4 5 6 7 8 9 10 11").unwrap();
        assert_eq!((name, c.rd_ios, c.io_ticks, c.dc_ios), ("sda", 1, 10, 0));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,400}",
                                nums in proptest::collection::vec(any::<u64>(), 0..20),
                                nums2 in proptest::collection::vec(any::<u64>(), 0..20)) {
            let _ = parse_diskstats_line(&s);
            let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
            let a = format!("8 0 sda {}\n", join(&nums));
            let b = format!("8 0 sda {}\n{s}", join(&nums2));
            let mut disks = Disks::default();
            let mut out = Vec::new();
            let sys = fixture("vm/sys");
            let t0 = Instant::now();
            disks.update(&a, t0, &sys, &[], &mut out);
            disks.update(&b, t0 + Duration::from_millis(1), &sys, &[], &mut out);
            for r in &out {
                prop_assert!(r.value.is_finite() && r.value >= 0.0, "{r:?}");
            }
        }
    }
}

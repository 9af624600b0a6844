//! What the agent measures: Linux host metrics, read from `/proc`, `/sys` and
//! `statvfs` and named as Ganglia's gmond names them, and the optional application
//! sources (Apache, MySQL/MariaDB, memcached, exec plugins) of [`apps`].
//!
//! This module owns reading and interpreting the kernel's files; it owns no timer
//! (the caller passes `now`), no metric ids (see [`crate::registry`]) and no sending.
//! Every value leaves as a [`MetricKind::Gauge`]: rates are computed here, over the
//! real time between two [`HostCollector::collect`] calls, so the collector stores
//! what it receives. Roots are configurable ([`HostConfig`]) so tests run on fixtures.
//!
//! Each source (a file or a group of files) is read on its own: one that fails is
//! logged — a warning the first time, then debug until it works again, so a missing
//! file does not fill the log every interval — and the other sources still report.
//!
//! Layout:
//! - `rate`: the counter delta rule shared by all rates (backwards → no value,
//!   32-bit wrap unwrapped).
//! - `cpu`: `cpu_*` percentages (mpstat's guest handling), `cpu_num`, `cpu_speed`,
//!   `load_*`, `proc_run`, `proc_total`, `boottime`, `uptime`.
//! - `memory`: `mem_*`, `swap_*` in KiB.
//! - `disk`: `diskio_<dev>_*` as `iostat -x`, whole disks only.
//! - `fs`: `fs_<mount>_*`, `disk_total`, `disk_free`, `part_max_used`.
//! - `net`: `net_<if>_*` and the totals `bytes_in`, … without `lo`.
//! - `facts`: [`facts()`], the host's names, sizes and addresses.
//! - [`apps`]: running the application sources off the runtime thread, `*_up`.
//! - [`apache`], [`mysql`], [`memcached`]: `apache_*`, `mysql_*`, `memcached_*`.
//! - [`exec`]: exec plugins (`exec_<plugin>_*`) on their own interval.
//!
//! The metrics, their units and groups are listed in `docs/METRICS.md`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ganglion_proto::msg::MetricKind;

pub mod apache;
pub mod apps;
mod cpu;
mod disk;
pub mod exec;
mod facts;
mod fs;
pub mod memcached;
mod memory;
pub mod mysql;
mod net;
pub(crate) mod rate;

pub use facts::facts;

/// How a metric is to be shown and stored; becomes the wire's `MetricMeta`.
#[derive(Debug, Clone, PartialEq)]
pub struct Desc {
    /// Unit as shown to users (`%`, `KiB`, `bytes/sec`). Owned only for metrics pushed
    /// from outside (`ganglion-agent send`, exec plugins), whose units are not known here.
    pub unit: Cow<'static, str>,
    /// Dashboard group (`cpu`, `memory`, `diskio`, `disk`, `network`, `apache`, …).
    pub group: Cow<'static, str>,
    pub kind: MetricKind,
    /// One sentence for the dashboard; owned only where it names a mount path.
    pub description: Cow<'static, str>,
}

/// One value of one metric from one collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Borrowed for the fixed names (most of them), so a collection allocates only for
    /// names built from a device, mount or server.
    pub name: Cow<'static, str>,
    pub desc: Desc,
    pub value: f64,
}

/// Where the host's files are, and what to leave out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Normally `/proc`; a fixture directory in tests.
    pub proc_root: PathBuf,
    /// Normally `/sys`; used for `block/<dev>` (whole disks) and cpufreq.
    pub sys_root: PathBuf,
    /// Normally `/proc/self/mounts`: the agent's own mount namespace, which is what
    /// `statvfs` sees.
    pub mounts_file: PathBuf,
    /// Name prefixes of block devices and network interfaces to ignore; by default
    /// the devices that are not real disks (loop, ram, zram, floppy, CD-ROM).
    pub skip_devices: Vec<String>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            mounts_file: PathBuf::from("/proc/self/mounts"),
            skip_devices: ["loop", "ram", "zram", "fd", "sr"].map(str::to_owned).to_vec(),
        }
    }
}

/// Collections between two reads of the mount table (5 minutes at the default interval):
/// a filesystem mounted meanwhile is reported within that time.
const MOUNTS_REFRESH: u32 = 20;

/// Files read on every collection, kept open.
#[derive(Debug)]
struct Paths {
    stat: HeldFile,
    loadavg: HeldFile,
    uptime: HeldFile,
    meminfo: HeldFile,
    diskstats: HeldFile,
    net_dev: HeldFile,
    cpuinfo: PathBuf,
    cpufreq: PathBuf,
}

impl Paths {
    fn new(cfg: &HostConfig) -> Self {
        let p = |rel: &str| HeldFile::new(cfg.proc_root.join(rel));
        Paths {
            stat: p("stat"),
            loadavg: p("loadavg"),
            uptime: p("uptime"),
            meminfo: p("meminfo"),
            diskstats: p("diskstats"),
            net_dev: p("net/dev"),
            cpuinfo: cfg.proc_root.join("cpuinfo"),
            cpufreq: cfg.sys_root.join("devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"),
        }
    }
}

/// A `/proc` file opened once and read from offset 0 each time: the kernel builds the
/// text afresh for every read from the start, and the path walk, open and close cost
/// about a sixth of a collection. After an error the file is opened again.
#[derive(Debug)]
struct HeldFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Only files of the kernel's `/proc` are held: a regular file (a test fixture)
    /// may be replaced between reads, which a held descriptor would not see.
    hold: bool,
}

impl HeldFile {
    fn new(path: PathBuf) -> Self {
        let hold = path.starts_with("/proc");
        HeldFile { path, file: None, hold }
    }

    fn read_text<'b>(&mut self, buf: &'b mut Vec<u8>) -> Result<Cow<'b, str>, SourceError> {
        let io = |path: &Path, source| SourceError::Io { path: path.to_owned(), source };
        if !self.hold {
            self.file = None;
        }
        // A held file that fails (e.g. a network namespace gone) gets one fresh open.
        for fresh in [self.file.is_none(), true] {
            if fresh {
                self.file = Some(std::fs::File::open(&self.path).map_err(|e| io(&self.path, e))?);
            }
            let file = self.file.as_ref().expect("opened above");
            match read_all_at(file, buf) {
                Ok(n) => return Ok(lossy_text(&buf[..n])),
                Err(e) if fresh => {
                    self.file = None;
                    return Err(io(&self.path, e));
                }
                Err(_) => self.file = None,
            }
        }
        unreachable!("the second pass always opens the file fresh and returns")
    }

    fn read_parse<T>(
        &mut self,
        buf: &mut Vec<u8>,
        parse: impl FnOnce(&str) -> Result<T, &'static str>,
    ) -> Result<T, SourceError> {
        let text = self.read_text(buf)?;
        parse(&text).map_err(|reason| SourceError::Parse { path: self.path.clone(), reason })
    }
}

/// Reads a whole file from offset 0 with one `pread` into a buffer larger than it;
/// returns the length read.
///
/// `/proc` files are `seq_file`s, which fill a read up to the buffer's size and return
/// less only at the end; and a second read at a non-zero offset would make the kernel
/// build the whole text again just to find the end. So a read that does not fill the
/// buffer is the whole file, and one that does is retried with a larger buffer.
///
/// The buffer keeps its length between reads: it is zeroed when it grows, not before
/// every read (zeroing 16 KiB for each of six files was 1 % of a collection).
fn read_all_at(file: &std::fs::File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt as _;
    let mut size = buf.len().max(16 * 1024);
    loop {
        if buf.len() < size {
            buf.resize(size, 0);
        }
        let n = loop {
            match file.read_at(&mut buf[..size], 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if n < size || size as u64 >= MAX_FILE_BYTES {
            return Ok(n);
        }
        size *= 2;
    }
}

/// Why one source gave nothing this time.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: &'static str },
}

/// The sources whose failures are tracked, for warn-once logging.
#[derive(Debug, Clone, Copy)]
enum Source {
    Stat,
    LoadAvg,
    Uptime,
    MemInfo,
    DiskStats,
    NetDev,
    Mounts,
}

const SOURCES: usize = 7;

/// Reads the host's metrics; keeps the previous counters so each call can report
/// rates over the time since the one before.
#[derive(Debug)]
pub struct HostCollector {
    cfg: HostConfig,
    paths: Paths,
    /// Reused for every file, so a collection allocates no read buffers.
    buf: Vec<u8>,
    /// Previous aggregate `cpu` line.
    cpu: Option<cpu::CpuTimes>,
    /// CPU speed in MHz, read once: it is the nominal speed, and reading
    /// `/proc/cpuinfo` costs milliseconds on large hosts (the kernel samples every
    /// CPU's frequency). `Some(None)` when the host has no way to tell.
    cpu_speed: Option<Option<f64>>,
    disks: disk::Disks,
    interfaces: net::Interfaces,
    /// Sources that failed last time, so only the first failure is a warning.
    failing: [bool; SOURCES],
    /// Mount paths whose `statvfs` failed last time, for the same reason.
    failed_mounts: HashSet<String>,
    /// The filesystems of the mount table as last read, and how many more collections
    /// reuse them. The kernel builds `/proc/self/mounts` afresh for every read, which
    /// costs more than all other sources; mounts change rarely, so the table is read
    /// every [`MOUNTS_REFRESH`] collections (sizes are still asked every time).
    mounts: Option<Vec<fs::Filesystem>>,
    mounts_reuse: u32,
    /// Number of readings last time, to size the next vector.
    last_len: usize,
}

impl HostCollector {
    /// A collector with no history; nothing is read until [`collect`](Self::collect).
    pub fn new(cfg: HostConfig) -> Self {
        HostCollector {
            paths: Paths::new(&cfg),
            cfg,
            buf: Vec::with_capacity(16 * 1024),
            cpu: None,
            cpu_speed: None,
            disks: disk::Disks::default(),
            interfaces: net::Interfaces::default(),
            failing: [false; SOURCES],
            failed_mounts: HashSet::new(),
            mounts: None,
            mounts_reuse: 0,
            last_len: 64,
        }
    }

    /// Reads everything once; `now` is a monotonic instant; rates use the actual
    /// elapsed time since the previous call. The first call returns gauges only (no
    /// rates yet), and so does the first sighting of a disk or interface.
    pub fn collect(&mut self, now: Instant) -> Vec<Reading> {
        let mut out = Vec::with_capacity(self.last_len);
        let mut buf = std::mem::take(&mut self.buf);

        let stat = self.paths.stat.read_parse(&mut buf, cpu::parse_stat);
        if let Some(stat) = self.report(Source::Stat, stat) {
            if let Some(prev) = self.cpu.replace(stat.cpu) {
                if let Some(p) = cpu::cpu_percent(&prev, &stat.cpu) {
                    cpu::push_cpu_percent(&mut out, &p);
                }
            }
            if stat.cpu_count > 0 {
                out.push(gauge("cpu_num", "CPUs", "cpu", "Online CPUs.", f64::from(stat.cpu_count)));
            }
            if let Some(btime) = stat.btime {
                out.push(gauge(
                    "boottime",
                    "s",
                    "system",
                    "When the host booted, in seconds since the epoch.",
                    btime as f64,
                ));
            }
        }
        if self.cpu_speed.is_none() {
            let speed = read_parse(&self.paths.cpufreq, &mut buf, |t| cpu::parse_cpufreq_khz(t).ok_or("no frequency"))
                .or_else(|_| {
                    read_parse(&self.paths.cpuinfo, &mut buf, |t| cpu::parse_cpuinfo_mhz(t).ok_or("no cpu MHz"))
                });
            if let Err(e) = &speed {
                tracing::debug!(error = %e, "No CPU speed on this host.");
            }
            self.cpu_speed = Some(speed.ok());
        }
        if let Some(Some(mhz)) = self.cpu_speed {
            out.push(gauge("cpu_speed", "MHz", "cpu", "Nominal (maximum) CPU clock speed.", mhz));
        }

        let load = self.paths.loadavg.read_parse(&mut buf, cpu::parse_loadavg);
        if let Some(l) = self.report(Source::LoadAvg, load) {
            cpu::push_loadavg(&mut out, &l);
        }
        let uptime = self.paths.uptime.read_parse(&mut buf, cpu::parse_uptime);
        if let Some(u) = self.report(Source::Uptime, uptime) {
            out.push(gauge("uptime", "s", "system", "Time since the host booted.", u));
        }
        let mem = self.paths.meminfo.read_parse(&mut buf, memory::parse_meminfo);
        if let Some(m) = self.report(Source::MemInfo, mem) {
            memory::push_meminfo(&mut out, &m);
        }

        match self.paths.diskstats.read_text(&mut buf) {
            Ok(text) => {
                self.disks.update(&text, now, &self.cfg.sys_root, &self.cfg.skip_devices, &mut out);
                self.report(Source::DiskStats, Ok(()));
            }
            Err(e) => {
                self.report::<()>(Source::DiskStats, Err(e));
            }
        }
        match self.paths.net_dev.read_text(&mut buf) {
            Ok(text) => {
                self.interfaces.update(&text, now, &self.cfg.skip_devices, &mut out);
                self.report(Source::NetDev, Ok(()));
            }
            Err(e) => {
                self.report::<()>(Source::NetDev, Err(e));
            }
        }
        if self.mounts_reuse == 0 || self.mounts.is_none() {
            match read_text(&self.cfg.mounts_file, &mut buf) {
                Ok(text) => {
                    self.mounts = Some(fs::prepare(&text));
                    self.mounts_reuse = MOUNTS_REFRESH;
                    self.report(Source::Mounts, Ok(()));
                }
                Err(e) => {
                    self.mounts = None;
                    self.report::<()>(Source::Mounts, Err(e));
                }
            }
        }
        self.mounts_reuse = self.mounts_reuse.saturating_sub(1);
        if let Some(list) = &self.mounts {
            let mut failed = Vec::new();
            fs::read_filesystems(list, &mut out, &mut failed);
            // A mount that vanished makes statvfs fail: read the table again next time
            // (only for new failures, so a mount that always fails costs nothing more).
            if failed.iter().any(|(p, _)| !self.failed_mounts.contains(p)) {
                self.mounts_reuse = 0;
            }
            self.report_mounts(failed);
        }

        self.buf = buf;
        self.last_len = out.len();
        out
    }

    /// Logs a source's failure (a warning only when it was working before) or its
    /// recovery, and passes the value on.
    fn report<T>(&mut self, source: Source, result: Result<T, SourceError>) -> Option<T> {
        let was_failing = std::mem::replace(&mut self.failing[source as usize], result.is_err());
        match result {
            Ok(v) => {
                if was_failing {
                    tracing::info!(source = ?source, "Metric source readable again.");
                }
                Some(v)
            }
            Err(e) if was_failing => {
                tracing::debug!(source = ?source, error = %e, "Metric source still unreadable; skipping it.");
                None
            }
            Err(e) => {
                tracing::warn!(source = ?source, error = %e, "Metric source unreadable; skipping it.");
                None
            }
        }
    }

    fn report_mounts(&mut self, failed: Vec<(String, rustix::io::Errno)>) {
        let mut now_failing = HashSet::with_capacity(failed.len());
        for (path, err) in failed {
            if !self.failed_mounts.contains(&path) {
                tracing::warn!(mount = %path, error = %err, "Could not read filesystem space; skipping it.");
            }
            now_failing.insert(path);
        }
        self.failed_mounts = now_failing;
    }
}

/// Upper bound on a file read, so a misconfigured path cannot eat memory.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads a file into `buf` (cleared first) as text; invalid UTF-8 is replaced rather
/// than refused, since only ASCII fields are used.
fn read_text<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Result<Cow<'b, str>, SourceError> {
    buf.clear();
    let io = |source| SourceError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    file.take(MAX_FILE_BYTES).read_to_end(buf).map_err(io)?;
    Ok(lossy_text(buf))
}

/// `<group>_<sanitized name>_<suffix>` for each suffix: the metric names of one disk,
/// interface or filesystem, built when it is first seen rather than every collection
/// (formatting them each time was an eighth of a host collection's instructions).
pub(crate) fn metric_names<const N: usize>(group: &str, name: &str, suffixes: [&str; N]) -> [String; N] {
    let prefix = format!("{group}_{}", ganglion_proto::name::sanitize(name));
    suffixes.map(|suffix| format!("{prefix}_{suffix}"))
}

/// `bytes` as text, invalid UTF-8 replaced. The kernel's and servers' answers are
/// ASCII, which `from_utf8` checks a word at a time; `from_utf8_lossy` walks byte by
/// byte, and was a tenth of a host collection's instructions.
pub(crate) fn lossy_text(bytes: &[u8]) -> Cow<'_, str> {
    std::str::from_utf8(bytes).map_or_else(|_| String::from_utf8_lossy(bytes), Cow::Borrowed)
}

fn read_parse<T>(
    path: &Path,
    buf: &mut Vec<u8>,
    parse: impl FnOnce(&str) -> Result<T, &'static str>,
) -> Result<T, SourceError> {
    let text = read_text(path, buf)?;
    parse(&text).map_err(|reason| SourceError::Parse { path: path.to_owned(), reason })
}

/// A gauge reading.
pub(crate) fn gauge(
    name: impl Into<Cow<'static, str>>,
    unit: &'static str,
    group: &'static str,
    description: impl Into<Cow<'static, str>>,
    value: f64,
) -> Reading {
    Reading {
        name: name.into(),
        desc: Desc {
            unit: Cow::Borrowed(unit),
            group: Cow::Borrowed(group),
            kind: MetricKind::Gauge,
            description: description.into(),
        },
        value,
    }
}

/// A server's counter as read (kind [`MetricKind::Counter`]), sent beside the rate the
/// agent computes from it so a collector can check or recompute that rate.
pub(crate) fn counter(
    name: impl Into<Cow<'static, str>>,
    unit: &'static str,
    group: &'static str,
    description: &'static str,
    value: u64,
) -> Reading {
    let mut r = gauge(name, unit, group, description, value as f64);
    r.desc.kind = MetricKind::Counter;
    r
}

/// Formats readings for `ganglion-agent --once`: aligned columns name, value, unit,
/// group, sorted by group then name.
pub fn render_table(readings: &[Reading]) -> String {
    // (group, name, value, unit)
    let mut rows: Vec<[Cow<'_, str>; 4]> = readings
        .iter()
        .map(|r| {
            [
                r.desc.group.as_ref().into(),
                r.name.as_ref().into(),
                format_value(r.value).into(),
                r.desc.unit.as_ref().into(),
            ]
        })
        .collect();
    rows.sort_by(|a, b| a[0].cmp(&b[0]).then(a[1].cmp(&b[1])));
    let width = |col: usize, header: &str| rows.iter().map(|r| r[col].len()).max().unwrap_or(0).max(header.len());
    let (wn, wv, wu) = (width(1, "NAME"), width(2, "VALUE"), width(3, "UNIT"));
    let mut out = String::with_capacity((rows.len() + 1) * (wn + wv + wu + 16));
    let mut line = |name: &str, value: &str, unit: &str, group: &str| {
        let l = format!("{name:<wn$}  {value:>wv$}  {unit:<wu$}  {group}");
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line("NAME", "VALUE", "UNIT", "GROUP");
    for [group, name, value, unit] in &rows {
        line(name, value, unit, group);
    }
    out
}

/// Whole numbers without decimals, others with two.
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// Path of a fixture under `agent/tests/fixtures/proc/`.
    pub(crate) fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc").join(rel)
    }

    /// Text of a fixture captured from a real server, under `agent/tests/fixtures/apps/`.
    pub(crate) fn app_fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Value of the reading named `name`, if any.
    pub(crate) fn value(out: &[Reading], name: &str) -> Option<f64> {
        out.iter().find(|r| r.name == name).map(|r| r.value)
    }

    fn vm_config(t: &str, mounts: &Path) -> HostConfig {
        HostConfig {
            proc_root: fixture(&format!("vm/{t}")),
            sys_root: fixture("vm/sys"),
            mounts_file: mounts.to_owned(),
            ..HostConfig::default()
        }
    }

    fn root_only_mounts() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"/dev/root / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n").unwrap();
        f
    }

    #[test]
    fn first_collection_has_gauges_only_and_second_has_rates() {
        let mounts = root_only_mounts();
        let mut c = HostCollector::new(vm_config("t0", mounts.path()));
        let t0 = Instant::now();
        let first = c.collect(t0);
        for gauge in [
            "cpu_num",
            "cpu_speed",
            "load_one",
            "proc_run",
            "mem_total",
            "swap_free",
            "fs_root_total",
            "disk_total",
            "part_max_used",
            "boottime",
            "uptime",
        ] {
            assert!(value(&first, gauge).is_some(), "{gauge} missing from the first collection");
        }
        assert_eq!(value(&first, "cpu_num"), Some(4.0));
        assert_eq!(value(&first, "cpu_speed"), Some(3500.0));
        assert!(
            first.iter().all(|r| !r.name.starts_with("cpu_user")
                && !r.name.starts_with("diskio_")
                && !r.name.starts_with("net_")
                && r.name != "bytes_in"),
            "{first:?}"
        );

        c.cfg = vm_config("t1", mounts.path());
        c.paths = Paths::new(&c.cfg);
        let second = c.collect(t0 + Duration::from_secs(10));
        assert_eq!(value(&second, "cpu_steal"), Some(10.0));
        assert_eq!(value(&second, "cpu_user"), Some(25.0));
        assert_eq!(value(&second, "diskio_nvme0n1_util"), Some(42.0));
        assert_eq!(value(&second, "net_eth0_bytes_in"), Some(1_234_567.0));
        assert_eq!(value(&second, "load_one"), Some(1.61));
        assert!(second.iter().all(|r| r.value.is_finite()));
        for r in &second {
            ganglion_proto::name::validate(ganglion_proto::name::NameKind::Metric, &r.name).unwrap();
            assert_eq!(r.desc.kind, MetricKind::Gauge);
        }
    }

    #[test]
    fn missing_source_does_not_break_the_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture("vm/t0/loadavg"), dir.path().join("loadavg")).unwrap();
        std::fs::write(dir.path().join("meminfo"), "garbage\n").unwrap();
        let cfg = HostConfig {
            proc_root: dir.path().to_owned(),
            sys_root: dir.path().join("sys"),
            mounts_file: dir.path().join("no-mounts"),
            ..HostConfig::default()
        };
        let mut c = HostCollector::new(cfg);
        let out = c.collect(Instant::now());
        let names: Vec<_> = out.iter().map(|r| r.name.as_ref()).collect();
        assert_eq!(names, ["load_one", "load_five", "load_fifteen", "proc_run", "proc_total"]);
        assert!(c.failing[Source::MemInfo as usize] && c.failing[Source::Stat as usize]);
        // A second failure is not logged as a warning again, and recovery is noticed.
        std::fs::copy(fixture("vm/t0/meminfo"), dir.path().join("meminfo")).unwrap();
        let out = c.collect(Instant::now());
        assert!(value(&out, "mem_total").is_some());
        assert!(!c.failing[Source::MemInfo as usize]);
    }

    #[test]
    fn mount_table_is_read_every_few_collections_and_again_when_a_mount_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = dir.path().join("mounts");
        let real = dir.path().join("data");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(&mounts, format!("/dev/vdz1 {} ext4 rw 0 0\n", real.display())).unwrap();
        let cfg = HostConfig {
            proc_root: dir.path().to_owned(),
            sys_root: dir.path().join("sys"),
            mounts_file: mounts.clone(),
            ..HostConfig::default()
        };
        let mut c = HostCollector::new(cfg);
        let has = |out: &[Reading]| out.iter().any(|r| r.name == "disk_total");
        assert!(has(&c.collect(Instant::now())));
        // The table changes; the cached one is used until the refresh is due.
        std::fs::write(&mounts, "").unwrap();
        for _ in 1..MOUNTS_REFRESH {
            assert!(has(&c.collect(Instant::now())));
        }
        assert!(!has(&c.collect(Instant::now())), "the table was not read again after {MOUNTS_REFRESH} collections");
        // A mount that disappears is noticed at the next collection, not minutes later.
        std::fs::write(&mounts, format!("/dev/vdz1 {} ext4 rw 0 0\n", real.display())).unwrap();
        for _ in 0..=MOUNTS_REFRESH {
            c.collect(Instant::now());
        }
        std::fs::remove_dir(&real).unwrap();
        std::fs::write(&mounts, "").unwrap();
        assert!(!has(&c.collect(Instant::now())));
        assert!(!has(&c.collect(Instant::now())), "the table was not read again after a mount failed");
    }

    #[test]
    fn parses_files_captured_on_a_real_host() {
        let read = |f: &str| std::fs::read_to_string(fixture(&format!("local/{f}"))).unwrap();
        let stat = cpu::parse_stat(&read("stat")).unwrap();
        assert!(stat.cpu_count >= 1 && stat.btime.is_some());
        memory::parse_meminfo(&read("meminfo")).unwrap();
        cpu::parse_loadavg(&read("loadavg")).unwrap();
        cpu::parse_uptime(&read("uptime")).unwrap();
        let diskstats = read("diskstats");
        let disks: Vec<_> = diskstats.lines().filter_map(disk::parse_diskstats_line).map(|d| d.0).collect();
        assert!(disks.contains(&"vda"), "{disks:?}");
        let net_dev = read("net/dev");
        let ifs: Vec<_> = net_dev.lines().filter_map(net::parse_net_dev_line).map(|i| i.0).collect();
        assert!(ifs.contains(&"lo") && ifs.contains(&"eth0"), "{ifs:?}");

        let mounts = root_only_mounts();
        let cfg = HostConfig {
            proc_root: fixture("local"),
            sys_root: fixture("local/sys"),
            mounts_file: mounts.path().to_owned(),
            ..HostConfig::default()
        };
        let mut c = HostCollector::new(cfg);
        let t0 = Instant::now();
        c.collect(t0);
        let out = c.collect(t0 + Duration::from_secs(60));
        // Same files twice: every rate is zero, and vda is the only disk reported.
        assert_eq!(value(&out, "diskio_vda_reads"), Some(0.0));
        assert_eq!(value(&out, "net_eth0_bytes_in"), Some(0.0));
        assert!(out.iter().all(|r| !r.name.contains("loop") && !r.name.contains("zram") && !r.name.contains("_lo_")));
    }

    #[test]
    fn reads_this_host() {
        let mut c = HostCollector::new(HostConfig::default());
        let t0 = Instant::now();
        let first = c.collect(t0);
        std::thread::sleep(Duration::from_millis(50));
        let second = c.collect(Instant::now());
        for name in ["load_one", "mem_total", "cpu_num", "uptime"] {
            assert!(value(&first, name).is_some() && value(&second, name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn elapsed_time_counts_from_the_last_successful_read() {
        // diskstats unreadable for one collection: the next rate spans both intervals.
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path().join("diskstats");
        let mounts = dir.path().join("mounts");
        let cfg = HostConfig {
            proc_root: dir.path().to_owned(),
            sys_root: fixture("vm/sys"),
            mounts_file: mounts,
            ..HostConfig::default()
        };
        let mut c = HostCollector::new(cfg);
        let t0 = Instant::now();
        std::fs::write(&ds, "8 0 sda 100 0 0 0 0 0 0 0 0 0 0\n").unwrap();
        c.collect(t0);
        std::fs::remove_file(&ds).unwrap();
        c.collect(t0 + Duration::from_secs(10));
        std::fs::write(&ds, "8 0 sda 300 0 0 0 0 0 0 0 0 0 0\n").unwrap();
        let out = c.collect(t0 + Duration::from_secs(20));
        assert_eq!(value(&out, "diskio_sda_reads"), Some(10.0));
    }

    #[test]
    fn table_is_sorted_by_group_then_name_and_aligned() {
        let readings = vec![
            gauge("mem_free", "KiB", "memory", "", 1024.0),
            gauge("cpu_user", "%", "cpu", "", 12.345),
            gauge("cpu_idle", "%", "cpu", "", 80.0),
            gauge("load_one", "", "load", "", 0.5),
        ];
        let table = render_table(&readings);
        let want = "\
NAME      VALUE  UNIT  GROUP
cpu_idle     80  %     cpu
cpu_user  12.35  %     cpu
load_one   0.50        load
mem_free   1024  KiB   memory
";
        assert_eq!(table, want);
    }
}

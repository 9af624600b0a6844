//! The collector-facing store for many series (cluster/host/metric).
//!
//! Write path: [`Store::append`] validates a batch, writes it to the journal as one
//! record (one `write`) and keeps the samples in memory; [`Store::durable`] returns once
//! the journal holds them under the fsync policy (group commit: one fsync covers every
//! append since the last). A background flusher applies the accumulated samples shard
//! by shard ([`shard`]: many series with the same definition per file, rows laid out in
//! time-aligned columns), spreading the shards over the flush interval in a shuffled
//! order (rrdcached's `-w`/`-z`), and drops journal segments once every shard has been
//! flushed past them. Reads ([`Store::fetch`]) merge the shard data with the unflushed
//! samples, so they always see the latest sample.
//!
//! Crash safety: a shard flush writes the changed column ranges, syncs the shard (and
//! the catalog), then writes the state table into the copy (A/B) that does not hold the
//! current states and syncs again; journal segments are deleted only after that. A
//! state therefore never refers to rows that are not on disk, and replay continues from
//! whatever state is durable.
//!
//! Layout of `dir`: `journal/<id>.log`, `catalog.log` (series → shard slot),
//! `shards/<id>.gshard`, `quarantine/` (damaged series kept aside). `docs/STORAGE.md`
//! has the byte tables.

pub mod catalog;
mod flush;
pub mod journal;
pub mod offline;
mod scan;
pub mod shard;
mod startup;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use crate::disk::{Disk, DiskFile, RealDisk};
use crate::file::FileError;
use crate::import::ImportError;
use crate::rrd::{advance, choose_rra, CdpPrep, Cf, Defs, DsDef, DsType, Fetched, Live, RraDef, Rrd, DNAN};
use shard::{Layout, ShardDef, State, BLOCK_LEN, BLOCK_ROWS};

/// Identity of one series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub cluster: String,
    pub host: String,
    pub metric: String,
}

impl SeriesKey {
    pub fn new(cluster: &str, host: &str, metric: &str) -> SeriesKey {
        SeriesKey { cluster: cluster.into(), host: host.into(), metric: metric.into() }
    }

    /// `cluster/host/metric` (names are checked by `ganglion-proto` to hold no `/`).
    pub fn joined(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.host, self.metric)
    }

    /// Inverse of [`SeriesKey::joined`].
    pub fn from_joined(s: &str) -> Option<SeriesKey> {
        let mut it = s.splitn(3, '/');
        let (c, h, m) = (it.next()?, it.next()?, it.next()?);
        valid_parts([c, h, m]).then(|| SeriesKey::new(c, h, m))
    }

    fn parts(&self) -> [&str; 3] {
        [&self.cluster, &self.host, &self.metric]
    }
}

fn valid_parts(p: [&str; 3]) -> bool {
    p.iter().all(|x| !x.is_empty() && *x != "." && *x != ".." && !x.contains('/') && x.len() <= 128)
}

/// Data source type of a series (the agent's metric kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DsKind {
    Gauge,
    Counter,
    Derive,
    Absolute,
}

impl DsKind {
    fn code(self) -> u8 {
        self as u8
    }
    fn from_code(c: u8) -> Option<DsKind> {
        [DsKind::Gauge, DsKind::Counter, DsKind::Derive, DsKind::Absolute].get(usize::from(c)).copied()
    }
    /// Whether a shard with data source type `t` can hold series of this kind:
    /// counters live in DERIVE shards (below) and, imported from rrdtool, in COUNTER
    /// shards.
    fn fits(self, t: DsType) -> bool {
        t == self.ds_def(0).kind || (self == DsKind::Counter && t == DsType::Counter)
    }

    /// The data source a new series of this kind gets. A counter is stored as DERIVE
    /// with a minimum of 0, as rrdtool users store counters that can be reset: a
    /// restarted agent or application (counter back near 0) gives one unknown
    /// interval, where COUNTER would read the drop as a 32- or 64-bit wrap and store a
    /// spike of up to 2^64 per interval. Rates of a counter that only grows are the
    /// same either way; a genuine wrap also gives one unknown interval.
    fn ds_def(self, heartbeat: u64) -> DsDef {
        let (kind, min) = match self {
            DsKind::Gauge => (DsType::Gauge, f64::NAN),
            DsKind::Counter => (DsType::Derive, 0.0),
            DsKind::Derive => (DsType::Derive, f64::NAN),
            DsKind::Absolute => (DsType::Absolute, f64::NAN),
        };
        DsDef { name: "value".into(), kind, heartbeat, min, max: f64::NAN }
    }
}

/// One sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub series: SeriesKey,
    pub kind: DsKind,
    /// Milliseconds since the epoch; stored at whole-second resolution like rrdtool.
    pub time_ms: i64,
    pub value: f64,
}

/// When the journal is fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before `append` returns.
    Always,
    /// At most every so many milliseconds, by the background thread (group commit).
    IntervalMs(u64),
    /// Never (acks mean "in the page cache").
    Never,
}

/// Archive settings for the series a rule matches (see [`StoreConfig::rules`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveRule {
    /// Glob (`*`, `?`) on the cluster name; `None` matches every cluster.
    pub cluster: Option<String>,
    /// Glob on the host name.
    pub host: Option<String>,
    /// Glob on the metric name.
    pub metric: Option<String>,
    /// Seconds per PDP; `None` keeps [`StoreConfig::step_secs`].
    pub step_secs: Option<u64>,
    /// `None` keeps [`StoreConfig::heartbeat_secs`].
    pub heartbeat_secs: Option<u64>,
    /// `None` keeps [`StoreConfig::archives`].
    pub archives: Option<Vec<RraDef>>,
}

impl ArchiveRule {
    /// Checks the definition this rule gives new series on top of `cfg`: what
    /// [`Store::open`] would refuse (a step, heartbeat or archive out of range).
    ///
    /// # Errors
    /// The reason, as a sentence fragment.
    pub fn check(&self, cfg: &StoreConfig) -> Result<(), String> {
        let def = ShardDef {
            step: self.step_secs.unwrap_or(cfg.step_secs),
            ds: DsKind::Gauge.ds_def(self.heartbeat_secs.unwrap_or(cfg.heartbeat_secs)),
            rra: self.archives.clone().unwrap_or_else(|| cfg.archives.clone()),
        };
        def.check()
    }

    fn matches(&self, k: [&str; 3]) -> bool {
        [&self.cluster, &self.host, &self.metric]
            .iter()
            .zip(k)
            .all(|(pat, name)| pat.as_deref().is_none_or(|p| glob_match(p, name)))
    }
}

/// Whether `name` matches `pattern`, in which `*` matches any run of characters and
/// `?` one character (the patterns of [`ArchiveRule`]).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = si;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Seconds per PDP of new series (the agent interval).
    pub step_secs: u64,
    /// Heartbeat of new series (Ganglia: 8 × step).
    pub heartbeat_secs: u64,
    /// Archives of new series.
    pub archives: Vec<RraDef>,
    pub fsync: FsyncPolicy,
    /// Every series is written to its shard once per this period (spread, shuffled).
    pub flush_interval_secs: u64,
    /// When unflushed samples take more memory than this (16 bytes each), the flusher
    /// speeds up; past twice this, appends are refused until it catches up.
    pub max_unflushed_bytes: u64,
    /// Run the background threads (tests drive [`Store::flush_all`] by hand without).
    pub background: bool,
}

/// Settings beyond [`StoreConfig`], for [`Store::open_with`]. (Kept apart so that
/// `StoreConfig { … }` literals written before they existed stay valid.)
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Per cluster / host / metric pattern overrides of step, heartbeat and archives;
    /// the first matching rule wins. A series keeps the definition it was created
    /// with.
    pub rules: Vec<ArchiveRule>,
    /// Most series per shard file (fewer for series with large archives, so a shard
    /// file stays below about 256 MiB). A new shard is sized for the series waiting
    /// for a place, rounded up to 64.
    pub shard_slots: u32,
    /// Verify every data block in the background after start-up.
    pub scan_blocks: bool,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions { rules: Vec::new(), shard_slots: 16_384, scan_blocks: true }
    }
}

/// Both halves of the settings.
#[derive(Clone, Debug)]
struct Settings {
    cfg: StoreConfig,
    opts: StoreOptions,
}

impl std::ops::Deref for Settings {
    type Target = StoreConfig;
    fn deref(&self) -> &StoreConfig {
        &self.cfg
    }
}

impl Settings {
    /// The definition a new series gets.
    fn def_for(&self, k: [&str; 3], kind: DsKind) -> ShardDef {
        let rule = self.opts.rules.iter().find(|r| r.matches(k));
        let step = rule.and_then(|r| r.step_secs).unwrap_or(self.cfg.step_secs);
        let heartbeat = rule.and_then(|r| r.heartbeat_secs).unwrap_or(self.cfg.heartbeat_secs);
        let rra = rule.and_then(|r| r.archives.clone()).unwrap_or_else(|| self.cfg.archives.clone());
        ShardDef { step, ds: kind.ds_def(heartbeat), rra }
    }

    /// Checks the archive settings (every rule included).
    fn check(&self) -> Result<(), String> {
        self.def_for(["c", "h", "m"], DsKind::Gauge).check()?;
        self.opts.rules.iter().try_for_each(|r| r.check(&self.cfg))
    }
}

impl StoreConfig {
    /// Ganglia's archive set for `step`: about a day at full resolution, 1-minute rows
    /// for two weeks, 10-minute rows for a year, each AVERAGE and MAX.
    pub fn ganglia_archives(step: u64) -> Vec<RraDef> {
        let mut v = Vec::new();
        let day_rows = 86_400 / step;
        let per = |secs: u64| (secs / step).max(1);
        for cf in [Cf::Average, Cf::Max] {
            v.push(RraDef { cf, xff: 0.5, pdp_cnt: 1, rows: day_rows });
            v.push(RraDef { cf, xff: 0.5, pdp_cnt: per(60), rows: 14 * 1440 });
            v.push(RraDef { cf, xff: 0.5, pdp_cnt: per(600), rows: 365 * 144 });
        }
        v
    }
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            step_secs: 15,
            heartbeat_secs: 120,
            archives: StoreConfig::ganglia_archives(15),
            fsync: FsyncPolicy::IntervalMs(1000),
            flush_interval_secs: 3600,
            max_unflushed_bytes: 256 << 20,
            background: true,
        }
    }
}

/// Counters for `/api/v1/health`.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
    pub journal_bytes: AtomicU64,
    pub journal_truncated: AtomicU64,
    pub fsyncs: AtomicU64,
    pub flushes: AtomicU64,
    pub corrupt_files: AtomicU64,
    pub quarantined: AtomicU64,
    pub unflushed_bytes: AtomicU64,
    pub write_errors: AtomicU64,
    /// Appends refused because unflushed samples passed twice `max_unflushed_bytes`.
    pub backpressure: AtomicU64,
    /// Series known (in shards or only in memory so far).
    pub series: AtomicU64,
    pub shards: AtomicU64,
    /// Damaged catalog records skipped at start-up.
    pub catalog_skipped: AtomicU64,
    /// Start-up (catalog, headers, state tables, journal replay) in milliseconds.
    pub startup_ms: AtomicU64,
    /// Background block scan: blocks verified, shards done, 1 when complete.
    pub scan_blocks: AtomicU64,
    pub scan_shards: AtomicU64,
    pub scan_done: AtomicU64,
}

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

/// Appending failed; nothing of the batch is acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The journal cannot be written (disk full or failing): stop acknowledging, retry.
    #[error("storage is not accepting writes: {0}")]
    Backpressure(std::io::Error),
    #[error("store is closed")]
    Closed,
    /// [`Store::try_append_ids`]: these samples (indices into the batch) name series
    /// removed since they were resolved; nothing of the batch was written.
    #[error("{} samples name series removed since they were resolved", .0.len())]
    Stale(Vec<usize>),
}

/// Reading failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("no such series")]
    NotFound,
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Fetch(#[from] crate::rrd::FetchError),
    /// `host/metric` without a cluster matched series in several clusters.
    #[error("several series match: {}", .0.join(", "))]
    Ambiguous(Vec<String>),
}

/// Handle for [`Store::durable`]: the journal sequence of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// A series resolved once with [`Store::series_id`]; [`Store::append_ids`] takes
/// samples by id without hashing names. Stays valid until the series is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeriesId {
    idx: u32,
    gen: u32,
}

/// A series kept aside because its data was damaged.
#[derive(Clone, Debug, PartialEq)]
pub struct Quarantined {
    /// `cluster/host/metric`, or `?` when the catalog did not know the slot.
    pub series: String,
    /// Where the raw bytes were saved.
    pub path: PathBuf,
    pub reason: String,
    /// Seconds since the epoch.
    pub at: u64,
}

const NONE: u32 = u32::MAX;
/// Memory accounted per unflushed sample.
const ENTRY_BYTES: u64 = 16;

const F_CATALOGED: u8 = 1;
const F_CORRUPT: u8 = 2;
const F_REMOVED: u8 = 4;
/// Resolved by [`Store::series_id`], no sample yet (its start time is not known).
const F_FRESH: u8 = 8;

/// One series in memory.
struct Series {
    /// `cluster/host/metric`.
    key: Box<str>,
    kind: DsKind,
    group: u32,
    /// Shard index and slot, `NONE` until the flusher places the series.
    shard: u32,
    slot: u32,
    incarnation: u32,
    /// Rows at or before this time are unknown (the series' `--start`).
    created: u64,
    /// Last accepted time (s): later samples must be newer, as rrdtool requires.
    last: u64,
    pending: Vec<(u64, f64)>,
    /// Samples handed to a flush in progress (or one that failed: the next flush
    /// takes them again). Reads see them until the flush commits.
    flushing: Option<Arc<Vec<(u64, f64)>>>,
    /// Journal segment whose records define this series (0: none yet).
    jseg: u64,
    /// Append sequence that last touched the series (for undo on a failed write).
    stamp: u64,
    flags: u8,
    /// Bumped when the id is reused for another series (stale [`SeriesId`]s fail).
    gen: u32,
}

/// Slots of one shard.
struct Slots {
    group: u32,
    /// Series id per slot (`NONE` = free).
    slots: Vec<u32>,
    /// Last incarnation used per slot.
    incs: Vec<u32>,
    free: Vec<u32>,
    /// Freed slots whose state record must be cleared at the next flush.
    to_zero: Vec<u32>,
}

struct Group {
    def: Arc<ShardDef>,
    shards: Vec<u32>,
}

#[derive(Default)]
struct PassHasher(u64);

impl Hasher for PassHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type PassMap = HashMap<u64, u32, BuildHasherDefault<PassHasher>>;

/// FxHash over the three names with separators, then a 64-bit finaliser.
fn key_hash(k: [&str; 3]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = 0u64;
    for part in k {
        let b = part.as_bytes();
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(a)).wrapping_mul(K);
        }
        // The tail with whole loads (a copy into a buffer would stall the next load).
        let r = chunks.remainder();
        let n = r.len();
        let tail = if n >= 4 {
            let lo = u64::from(u32::from_le_bytes([r[0], r[1], r[2], r[3]]));
            let hi = u64::from(u32::from_le_bytes([r[n - 4], r[n - 3], r[n - 2], r[n - 1]]));
            lo | hi << 32
        } else if n > 0 {
            u64::from(r[0]) | u64::from(r[n / 2]) << 8 | u64::from(r[n - 1]) << 16
        } else {
            0
        };
        h = (h.rotate_left(5) ^ tail ^ ((b.len() as u64) << 56)).wrapping_mul(K);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn key_eq(stored: &str, k: [&str; 3]) -> bool {
    let s = stored.as_bytes();
    let n = k[0].len() + k[1].len() + k[2].len() + 2;
    s.len() == n
        && &s[..k[0].len()] == k[0].as_bytes()
        && s[k[0].len()] == b'/'
        && &s[k[0].len() + 1..k[0].len() + 1 + k[1].len()] == k[1].as_bytes()
        && s[k[0].len() + 1 + k[1].len()] == b'/'
        && &s[n - k[2].len()..] == k[2].as_bytes()
}

fn split_key(k: &str) -> [&str; 3] {
    let mut it = k.splitn(3, '/');
    [it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or("")]
}

/// Everything about series in memory, under one lock.
#[derive(Default)]
struct Index {
    map: PassMap,
    /// Series whose hash collides with another series' hash.
    overflow: HashMap<Box<str>, u32>,
    series: Vec<Series>,
    free_ids: Vec<u32>,
    live: usize,
    groups: Vec<Group>,
    shards: Vec<Slots>,
}

impl Index {
    /// Makes room for shard `id` in `shards`: new entries belong to `group` and have no
    /// slots yet (the caller fills in the shard's own).
    fn reserve_shard(&mut self, id: u32, group: u32) {
        while self.shards.len() <= id as usize {
            let empty = Slots { group, slots: Vec::new(), incs: Vec::new(), free: Vec::new(), to_zero: Vec::new() };
            self.shards.push(empty);
        }
    }

    fn find(&self, h: u64, k: [&str; 3]) -> Option<u32> {
        match self.map.get(&h) {
            Some(&sid) if key_eq(&self.series[sid as usize].key, k) => Some(sid),
            _ if self.overflow.is_empty() => None,
            _ => self.overflow.get(format!("{}/{}/{}", k[0], k[1], k[2]).as_str()).copied(),
        }
    }

    fn group_of(&mut self, def: ShardDef) -> u32 {
        if let Some(i) = self.groups.iter().position(|g| g.def.same(&def)) {
            return i as u32;
        }
        self.groups.push(Group { def: Arc::new(def), shards: Vec::new() });
        (self.groups.len() - 1) as u32
    }

    /// Adds a series (unplaced) and returns its id.
    fn insert(&mut self, h: u64, key: Box<str>, kind: DsKind, group: u32, created: u64) -> u32 {
        let s = Series {
            key,
            kind,
            group,
            shard: NONE,
            slot: NONE,
            incarnation: 0,
            created,
            last: created,
            pending: Vec::new(),
            flushing: None,
            jseg: 0,
            stamp: 0,
            flags: 0,
            gen: 0,
        };
        let sid = match self.free_ids.pop() {
            Some(id) => {
                let gen = self.series[id as usize].gen.wrapping_add(1);
                self.series[id as usize] = Series { gen, ..s };
                id
            }
            None => {
                self.series.push(s);
                (self.series.len() - 1) as u32
            }
        };
        match self.map.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.overflow.insert(self.series[sid as usize].key.clone(), sid);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(sid);
            }
        }
        self.live += 1;
        sid
    }

    fn remove(&mut self, sid: u32) {
        let s = &mut self.series[sid as usize];
        let h = key_hash(split_key(&s.key));
        if self.map.get(&h) == Some(&sid) {
            self.map.remove(&h);
        } else {
            self.overflow.remove(&s.key);
        }
        if s.shard != NONE {
            let sl = &mut self.shards[s.shard as usize];
            sl.slots[s.slot as usize] = NONE;
            sl.to_zero.push(s.slot);
            sl.free.push(s.slot);
        }
        s.key = "".into();
        s.pending = Vec::new();
        s.flushing = None;
        s.flags = F_REMOVED;
        s.shard = NONE;
        self.free_ids.push(sid);
        self.live -= 1;
    }
}

/// A live catalog entry at start-up.
struct CatEntry {
    inc: u32,
    kind: DsKind,
    created: u64,
    key: Box<str>,
}

#[derive(Default)]
struct CatSlot {
    max_inc: u32,
    live: Option<CatEntry>,
}

/// The catalog replayed: per shard, per slot, the live entry and the last incarnation.
#[derive(Default)]
struct CatalogView {
    slots: Vec<Vec<CatSlot>>,
}

impl CatalogView {
    /// The entry for `(shard, slot)`, grown on demand (`None` for numbers no store
    /// makes, from a damaged record that passed its checksum).
    fn slot_mut(&mut self, shard: u32, slot: u32) -> Option<&mut CatSlot> {
        if shard >= 1 << 20 || slot >= shard::MAX_CAPACITY {
            return None;
        }
        let (shard, slot) = (shard as usize, slot as usize);
        if self.slots.len() <= shard {
            self.slots.resize_with(shard + 1, Vec::new);
        }
        let v = &mut self.slots[shard];
        if v.len() <= slot {
            v.resize_with(slot + 1, CatSlot::default);
        }
        Some(&mut v[slot])
    }

    fn max_inc(&self, shard: u32, slot: u32) -> u32 {
        self.slots.get(shard as usize).and_then(|v| v.get(slot as usize)).map_or(0, |e| e.max_inc)
    }

    fn take(&mut self, shard: u32, slot: u32) -> Option<CatEntry> {
        self.slots.get_mut(shard as usize)?.get_mut(slot as usize)?.live.take()
    }
}

/// A shard read and checked at start-up, before it is registered.
struct ShardRead {
    sh: Arc<Shard>,
    /// The current record of each slot (`None`: free or never written).
    heads: Vec<Option<shard::StateHead>>,
    damaged: Vec<(u32, String)>,
    /// The current record of every slot, as the current table must hold them.
    merged: Vec<u8>,
    rewrite: bool,
    damaged_other: bool,
}

/// One open shard file.
struct Shard {
    id: u32,
    path: PathBuf,
    file: Box<dyn DiskFile>,
    def: Arc<ShardDef>,
    layout: Layout,
    /// Readers (fetch, scan) against the flusher's writes.
    io: RwLock<()>,
    /// State table holding the current states (0 = A, 1 = B).
    cur: AtomicUsize,
    /// Flush generation of the current table.
    gen: AtomicU64,
}

struct Journal {
    file: Option<Box<dyn DiskFile>>,
    seg: u64,
    len: u64,
    /// Sequence of the last record written.
    seq: u64,
    enc: journal::Encoder,
    buf: Vec<u8>,
    undo: Vec<(u32, u64, usize, bool)>,
}

struct CatalogFile {
    file: Box<dyn DiskFile>,
    len: u64,
}

struct Inner {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    cfg: Settings,
    journal: Mutex<Journal>,
    durable_seq: Mutex<u64>,
    durable_cv: Condvar,
    index: Mutex<Index>,
    /// By shard number; `None` for a number whose file was quarantined.
    shards: RwLock<Vec<Option<Arc<Shard>>>>,
    catalog: Mutex<CatalogFile>,
    /// Serializes flushes, placement, removal and the block scan.
    flush_lock: Mutex<()>,
    quarantined: Mutex<Vec<Quarantined>>,
    stats: Stats,
    closed: AtomicBool,
}

/// The engine. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State under these locks stays consistent at every step; a panicking holder
    // leaves nothing half-done that a later user could not cope with.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A sample as an rrdtool reading: integers exactly (counters need that), floats in
/// their shortest exact form.
fn value_text(v: f64) -> String {
    if v.is_nan() {
        "U".into()
    } else if v.fract() == 0.0 && v.abs() < 1e20 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// rrdtool's reading conversion for a sample given as a number; the same as feeding
/// `value_text(v)` to `rrdtool update` after `value_text(last)`.
fn reading(d: &DsDef, last: f64, v: f64, interval: f64) -> Result<f64, crate::rrd::UpdateError> {
    if v.is_nan() || (d.heartbeat as f64) < interval {
        return Ok(DNAN);
    }
    let in_range =
        |rate: f64| rate.is_nan() || ((rate >= d.min || d.min.is_nan()) && (rate <= d.max || d.max.is_nan()));
    match d.kind {
        // The text of `v` parses back to `v` exactly, so the arithmetic is rrdtool's.
        DsType::Gauge => {
            let p = v * interval;
            Ok(if in_range(p / interval) { p } else { DNAN })
        }
        DsType::Absolute => Ok(if in_range(v / interval) { v } else { DNAN }),
        _ => {
            let last_ds = if last.is_nan() { "U".to_string() } else { crate::rrd::truncate_reading(&value_text(last)) };
            crate::rrd::reading_to_pdp(d, &last_ds, &value_text(v), interval)
        }
    }
}

/// The engine's [`Live`]: a state record plus where completed rows go.
struct Apply<'a, F: FnMut(usize, u64, f64)> {
    st: &'a mut State,
    cur_row: &'a mut [u64],
    put: F,
}

impl<F: FnMut(usize, u64, f64)> Live for Apply<'_, F> {
    fn pdp(&mut self, _ds: usize) -> (&mut f64, &mut u64) {
        (&mut self.st.pdp_val, &mut self.st.pdp_unkn)
    }
    fn cdp(&mut self, i: usize) -> &mut CdpPrep {
        &mut self.st.cdp[i]
    }
    fn cur_row(&mut self, rra: usize) -> &mut u64 {
        &mut self.cur_row[rra]
    }
    fn put(&mut self, rra: usize, row: u64, _ds: usize, v: f64) {
        (self.put)(rra, row, v)
    }
}

/// Applies `samples` (those newer than the state) to `st`; rows go to `put`. Returns
/// how many samples rrdtool would have refused.
fn apply_samples(def: &ShardDef, st: &mut State, samples: &[(u64, f64)], put: impl FnMut(usize, u64, f64)) -> u64 {
    let mut cur_buf = [0u64; shard::MAX_ARCHIVES];
    let cur = &mut cur_buf[..def.rra.len()];
    for (a, (c, r)) in cur.iter_mut().zip(&def.rra).enumerate() {
        *c = (st.last_up / def.rra_step(a)) % r.rows;
    }
    let defs = Defs { step: def.step, ds: std::slice::from_ref(&def.ds), rra: &def.rra };
    let mut live = Apply { st, cur_row: cur, put };
    let mut dropped = 0;
    for &(t, v) in samples {
        let last_up = live.st.last_up;
        if t <= last_up {
            continue;
        }
        match reading(&def.ds, live.st.last, v, (t - last_up) as f64) {
            Ok(p) => {
                advance(&defs, &mut live, last_up, t, &[p]);
                live.st.last_up = t;
                live.st.last = v;
            }
            Err(_) => dropped += 1,
        }
    }
    dropped
}

/// Rows of archive `a` an update from `from` to `to` writes, as (first row, count).
fn rows_touched(def: &ShardDef, a: usize, from: u64, to: u64) -> (u64, u64) {
    let s = def.rra_step(a);
    let rows = def.rra[a].rows;
    let (e0, e1) = (from / s, to / s);
    let n = (e1 - e0).min(rows);
    ((e1 + 1 - n) % rows, n)
}

/// The blocks of slots `lo..` of the columns a flush of a chunk of slots rewrites.
struct ColView<'a> {
    lo: u32,
    /// Per range, per column: (blocks, dirty flags) of this view's slots.
    cols: Vec<Vec<(&'a mut [u8], &'a mut [bool])>>,
    /// Per range: (archive, first column).
    at: Vec<(usize, u32)>,
    lookup: &'a [Vec<u32>],
}

impl ColView<'_> {
    fn block(&mut self, a: usize, col: u32, slot: u32) -> (&mut [u8], &mut bool) {
        let r = self.lookup[a][col as usize] as usize;
        let (b, d) = &mut self.cols[r][(col - self.at[r].1) as usize];
        let k = (slot - self.lo) as usize;
        (&mut b[k * BLOCK_LEN..(k + 1) * BLOCK_LEN], &mut d[k])
    }

    /// Seals every dirty block of the view; `inc(slot)` is its series' incarnation.
    fn seal(&mut self, shard: u32, inc: impl Fn(u32) -> u32) {
        for (r, cols) in self.cols.iter_mut().enumerate() {
            let (a, c0) = self.at[r];
            for (ci, (b, d)) in cols.iter_mut().enumerate() {
                for (k, dirty) in d.iter().enumerate() {
                    if *dirty {
                        let slot = self.lo + k as u32;
                        let blk = &mut b[k * BLOCK_LEN..(k + 1) * BLOCK_LEN];
                        shard::seal_block(shard, slot, a, c0 + ci as u32, inc(slot), blk);
                    }
                }
            }
        }
    }
}

/// A shard flush whose columns are written, before its state table is.
struct Staged {
    sh: Arc<Shard>,
    work: Vec<Work>,
    zero: Vec<u32>,
    /// The current state table (new records go in before it is written to the other).
    table: Vec<u8>,
    cur: usize,
    adds: Vec<catalog::Op>,
    written: u64,
}

/// One series being flushed.
struct Work {
    sid: u32,
    slot: u32,
    inc: u32,
    created: u64,
    kind: DsKind,
    samples: Arc<Vec<(u64, f64)>>,
    new_catalog: bool,
    corrupt: Option<String>,
    st: State,
}

impl Store {
    /// Opens (or creates) a store in `dir` on the real file system.
    ///
    /// # Errors
    /// [`OpenError::Io`] when the directories, catalog, shards or journal cannot be
    /// read or created; [`OpenError::Config`] for archive settings rrdtool refuses.
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<Store, OpenError> {
        Store::open_on(Arc::new(RealDisk), dir, cfg)
    }

    /// [`Store::open`] with [`StoreOptions`] (archive rules, shard size, block scan).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(dir: &Path, cfg: StoreConfig, opts: StoreOptions) -> Result<Store, OpenError> {
        Store::open_on_with(Arc::new(RealDisk), dir, cfg, opts)
    }

    /// [`Store::open`] on any [`Disk`]: reads the catalog and every shard's header and
    /// state tables (checksums verified; damaged series are quarantined), replays the
    /// journal (truncating a torn or corrupt tail at the last good record) and starts
    /// the flusher and the background block scan.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_on(disk: Arc<dyn Disk>, dir: &Path, cfg: StoreConfig) -> Result<Store, OpenError> {
        Store::open_on_with(disk, dir, cfg, StoreOptions::default())
    }

    /// Accepts a batch: samples not newer than their series' last sample are rejected
    /// (counted), the rest are journaled (one record, one write) and kept in memory.
    /// Wait for durability with [`Store::durable`] before acknowledging.
    ///
    /// # Errors
    /// [`WriteError::Backpressure`] when the journal cannot be written; nothing of the
    /// batch is kept, and a later call retries.
    pub fn append(&self, updates: &[Update]) -> Result<Ticket, WriteError> {
        self.append_with(updates.len(), |idx, cfg, k| {
            let u = &updates[k];
            let parts = u.series.parts();
            let sid = match idx.find(key_hash(parts), parts) {
                Some(sid) => sid,
                None if valid_parts(parts) => {
                    let g = idx.group_of(cfg.def_for(parts, u.kind));
                    let sid = idx.insert(key_hash(parts), u.series.joined().into(), u.kind, g, 0);
                    idx.series[sid as usize].flags |= F_FRESH;
                    return Some((sid, u.kind, u.time_ms, u.value, true));
                }
                None => return None,
            };
            Some((sid, u.kind, u.time_ms, u.value, false))
        })
    }

    /// The id of `series` (created when new, as a first sample would), for
    /// [`Store::append_ids`]. Resolve once per series (e.g. when an agent defines a
    /// metric) and keep the id.
    ///
    /// # Errors
    /// `None` for a name the store refuses (empty, `.`, `..`, `/` inside, longer than
    /// 128 bytes) or a series that exists with another kind.
    pub fn series_id(&self, series: &SeriesKey, kind: DsKind) -> Option<SeriesId> {
        let mut idx = lock(&self.inner.index);
        let parts = series.parts();
        let h = key_hash(parts);
        let sid = match idx.find(h, parts) {
            Some(sid) => sid,
            None if valid_parts(parts) => {
                let g = idx.group_of(self.inner.cfg.def_for(parts, kind));
                let sid = idx.insert(h, series.joined().into(), kind, g, 0);
                idx.series[sid as usize].flags |= F_FRESH;
                self.inner.stats.series.store(idx.live as u64, Ordering::Relaxed);
                sid
            }
            None => return None,
        };
        let s = &idx.series[sid as usize];
        (s.kind == kind).then_some(SeriesId { idx: sid, gen: s.gen })
    }

    /// [`Store::append`] for resolved series: `(id, time in ms, value)`. A sample of a
    /// series removed since it was resolved is rejected (counted) like an old one.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub fn append_ids(&self, samples: &[(SeriesId, i64, f64)]) -> Result<Ticket, WriteError> {
        self.append_with(samples.len(), |idx, _, k| {
            let (id, t, v) = samples[k];
            let s = idx.series.get(id.idx as usize)?;
            (s.gen == id.gen && s.flags & F_REMOVED == 0).then_some((id.idx, s.kind, t, v, false))
        })
    }

    /// [`Store::append_ids`] for callers that cache ids and must not lose a sample to
    /// a removal they did not see (the collector's ingest): when any id is stale the
    /// batch is refused whole with [`WriteError::Stale`] naming those samples, so the
    /// caller resolves them again ([`Store::series_id`]) and retries.
    ///
    /// # Errors
    /// [`WriteError::Stale`]; otherwise as [`Store::append`].
    pub fn try_append_ids(&self, samples: &[(SeriesId, i64, f64)]) -> Result<Ticket, WriteError> {
        let stale = |idx: &Index| {
            let live = |id: SeriesId| {
                idx.series.get(id.idx as usize).is_some_and(|s| s.gen == id.gen && s.flags & F_REMOVED == 0)
            };
            samples.iter().enumerate().filter(|(_, s)| !live(s.0)).map(|(k, _)| k).collect()
        };
        self.append_checked(samples.len(), stale, |idx, _, k| {
            let (id, t, v) = samples[k];
            let s = &idx.series[id.idx as usize];
            Some((id.idx, s.kind, t, v, false))
        })
    }

    /// The append core: `get(index, settings, k)` resolves sample `k` to (series,
    /// kind, time ms, value, created by this call) or `None` (rejected).
    fn append_with(
        &self,
        n: usize,
        get: impl FnMut(&mut Index, &Settings, usize) -> Option<(u32, DsKind, i64, f64, bool)>,
    ) -> Result<Ticket, WriteError> {
        self.append_checked(n, |_| Vec::new(), get)
    }

    /// [`Store::append_with`] that first asks `stale(index)` (under the locks) which
    /// samples must refuse the batch.
    fn append_checked(
        &self,
        n: usize,
        stale: impl FnOnce(&Index) -> Vec<usize>,
        mut get: impl FnMut(&mut Index, &Settings, usize) -> Option<(u32, DsKind, i64, f64, bool)>,
    ) -> Result<Ticket, WriteError> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(WriteError::Closed);
        }
        inner.stats.received.fetch_add(n as u64, Ordering::Relaxed);
        // The flusher runs early past max_unflushed_bytes; past twice that it is not
        // keeping up (disk slow, full or failing): stop accepting until it catches up.
        if inner.stats.unflushed_bytes.load(Ordering::Relaxed) > inner.cfg.max_unflushed_bytes.saturating_mul(2) {
            inner.stats.backpressure.fetch_add(1, Ordering::Relaxed);
            return Err(WriteError::Backpressure(std::io::Error::other(
                "unflushed samples exceed twice max_unflushed_bytes: the flusher is behind",
            )));
        }
        // The journal lock is held across validation and the memory insert so the
        // journal order equals the order samples were accepted in.
        let mut jg = lock(&inner.journal);
        let j = &mut *jg;
        let mut ig = lock(&inner.index);
        let idx = &mut *ig;
        let gone = stale(idx);
        if !gone.is_empty() {
            // Not received: the caller sends the batch again.
            inner.stats.received.fetch_sub(n as u64, Ordering::Relaxed);
            return Err(WriteError::Stale(gone));
        }
        let seq = j.seq + 1;
        let seg = j.seg;
        j.enc.clear();
        j.undo.clear();
        let mut rejected = 0u64;
        let mut accepted = 0u64;
        for k in 0..n {
            let Some((sid, kind, time_ms, value, new)) = get(idx, &inner.cfg, k) else {
                rejected += 1;
                continue;
            };
            let t = time_ms.div_euclid(1000);
            let counter_ok = !matches!(kind, DsKind::Counter | DsKind::Derive)
                || (value.is_finite() && value.fract() == 0.0 && (kind == DsKind::Derive || value >= 0.0));
            let s = &mut idx.series[sid as usize];
            if t <= 0 || !counter_ok || s.kind != kind {
                rejected += 1;
                if new {
                    idx.remove(sid);
                }
                continue;
            }
            if new {
                s.stamp = seq;
                j.undo.push((sid, 0, 0, true));
            }
            let t = t as u64;
            if s.flags & F_FRESH != 0 {
                // The first sample fixes the series' start, as rrdtool create --start.
                if s.stamp != seq {
                    s.stamp = seq;
                    j.undo.push((sid, s.last, usize::MAX, false));
                }
                s.flags &= !F_FRESH;
                s.created = t - 1;
                s.last = t - 1;
            }
            if t <= s.last {
                rejected += 1;
                continue;
            }
            if s.stamp != seq {
                s.stamp = seq;
                j.undo.push((sid, s.last, s.pending.len(), false));
            }
            if s.jseg != seg {
                j.enc.define(sid, s.kind, split_key(&s.key));
                s.jseg = seg;
            }
            j.enc.sample(sid, t, value);
            s.last = t;
            s.pending.push((t, value));
            accepted += 1;
        }
        if rejected > 0 {
            inner.stats.rejected.fetch_add(rejected, Ordering::Relaxed);
        }
        if !j.enc.is_empty() {
            let Journal { enc, buf, .. } = j;
            enc.finish(buf);
            let res = match &j.file {
                Some(f) => f.write_at(&j.buf, j.len).and_then(|()| {
                    if inner.cfg.fsync == FsyncPolicy::Always {
                        f.sync()?;
                        inner.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }),
                None => Err(std::io::Error::other("no journal segment")),
            };
            if let Err(e) = res {
                if let Some(f) = &j.file {
                    // Cut off whatever part landed so the next record starts clean.
                    let _ = f.set_len(j.len);
                }
                for &(sid, last, plen, new) in j.undo.iter().rev() {
                    let s = &mut idx.series[sid as usize];
                    if new {
                        idx.remove(sid);
                    } else if plen == usize::MAX {
                        // Back to "resolved, no sample yet".
                        s.flags |= F_FRESH;
                        s.last = last;
                        s.pending.clear();
                        s.jseg = 0;
                    } else {
                        s.last = last;
                        s.pending.truncate(plen);
                        s.jseg = 0;
                    }
                }
                inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                return Err(WriteError::Backpressure(e));
            }
            j.len += j.buf.len() as u64;
            inner.stats.journal_bytes.fetch_add(j.buf.len() as u64, Ordering::Relaxed);
            inner.stats.unflushed_bytes.fetch_add(ENTRY_BYTES * accepted, Ordering::Relaxed);
        }
        inner.stats.series.store(idx.live as u64, Ordering::Relaxed);
        j.seq = seq;
        drop(ig);
        drop(jg);
        match inner.cfg.fsync {
            FsyncPolicy::Always | FsyncPolicy::Never => inner.mark_durable(seq),
            FsyncPolicy::IntervalMs(_) => {}
        }
        Ok(Ticket(seq))
    }

    /// Blocks until the journal holds every append up to `ticket` durably. From tokio,
    /// call it in `spawn_blocking`.
    ///
    /// # Errors
    /// [`WriteError::Closed`] when the store closes first.
    pub fn durable(&self, ticket: Ticket) -> Result<(), WriteError> {
        let mut d = lock(&self.inner.durable_seq);
        while *d < ticket.0 {
            if self.inner.closed.load(Ordering::SeqCst) && !self.inner.cfg.background {
                return Err(WriteError::Closed);
            }
            if !self.inner.cfg.background {
                drop(d);
                self.inner.sync_journal();
                d = lock(&self.inner.durable_seq);
                continue;
            }
            d = self
                .inner
                .durable_cv
                .wait_timeout(d, Duration::from_millis(200))
                .map(|r| r.0)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        Ok(())
    }

    /// `fetch` of one series (rrdtool's archive choice and row labels), merging its
    /// shard data with unflushed samples.
    ///
    /// # Errors
    /// [`ReadError::NotFound`] for an unknown series; [`ReadError::File`] with
    /// [`FileError::Corrupt`] when its data is damaged (the series is quarantined and
    /// recreated at its next flush); fetch errors as rrdtool reports them.
    pub fn fetch(
        &self,
        series: &SeriesKey,
        cf: Cf,
        start: u64,
        end: u64,
        resolution: u64,
    ) -> Result<Fetched, ReadError> {
        let (c, name) = self.inner.with_snapshot(series, start, end, |sh, snap| {
            Ok((fetch_snapshot(sh, snap, cf, start, end, resolution)?, snap.def.ds.name.clone()))
        })?;
        let rows = c.values.into_iter().map(|v| vec![v]).collect();
        Ok(Fetched { start: c.start, end: c.end, step: c.step, ds_names: vec![name], rows })
    }

    /// [`Store::fetch`] as one column of values (series have one data source), without
    /// a vector per row: what graphs read.
    ///
    /// # Errors
    /// As [`Store::fetch`].
    pub fn fetch_column(
        &self,
        series: &SeriesKey,
        cf: Cf,
        start: u64,
        end: u64,
        resolution: u64,
    ) -> Result<Column, ReadError> {
        self.inner.fetch(series, cf, start, end, resolution)
    }

    /// `(step, newest complete row)` of the archive [`Store::fetch`] would read with
    /// these arguments, without reading rows: one state read and the unflushed samples
    /// applied in memory. A dashboard keeps a rendered graph while this is unchanged,
    /// since rows are only ever added after the newest one.
    ///
    /// # Errors
    /// As [`Store::fetch`].
    pub fn newest_row(
        &self,
        series: &SeriesKey,
        cf: Cf,
        start: u64,
        end: u64,
        resolution: u64,
    ) -> Result<(u64, u64), ReadError> {
        self.inner.newest_row(series, cf, start, end, resolution)
    }

    /// Writes every unflushed sample to the shards and drops the journal they came
    /// from.
    ///
    /// # Errors
    /// The first I/O error; samples that could not be written stay in memory and in the
    /// journal.
    pub fn flush_all(&self) -> Result<(), FileError> {
        self.inner.sync_journal();
        let _g = lock(&self.inner.flush_lock);
        let io = |source| FileError::Io { path: self.inner.dir.clone(), source };
        self.inner.place_unplaced().map_err(io)?;
        let boundary = self.inner.rotate().map_err(io)?;
        let shards: Vec<Arc<Shard>> = read(&self.inner.shards).iter().flatten().cloned().collect();
        let res = self.inner.flush_shards(&shards);
        self.inner.stats.flushes.fetch_add(1, Ordering::Relaxed);
        res?;
        self.inner.drop_segments_before(boundary);
        Ok(())
    }

    /// Flushes part `k` of `n` of the shards (those whose number is `k` mod `n`): the
    /// spread-out flush of the background thread, driven by hand (simulations of a
    /// flush period in data time; the journal is not dropped by this).
    ///
    /// # Errors
    /// As [`Store::flush_all`].
    pub fn flush_part(&self, k: usize, n: usize) -> Result<(), FileError> {
        self.inner.sync_journal();
        let _g = lock(&self.inner.flush_lock);
        let io = |source| FileError::Io { path: self.inner.dir.clone(), source };
        self.inner.place_unplaced().map_err(io)?;
        let shards: Vec<Arc<Shard>> = read(&self.inner.shards).iter().flatten().cloned().collect();
        let part: Vec<Arc<Shard>> = shards.into_iter().filter(|s| s.id as usize % n.max(1) == k).collect();
        self.inner.flush_shards(&part)
    }

    /// Number of shard files.
    pub fn shard_count(&self) -> usize {
        read(&self.inner.shards).iter().flatten().count()
    }

    /// Forgets a series and frees its slot (host expiry). The removal is durable when
    /// this returns.
    ///
    /// # Errors
    /// I/O errors writing the catalog.
    pub fn remove_series(&self, series: &SeriesKey) -> Result<(), FileError> {
        let inner = &*self.inner;
        let _g = lock(&inner.flush_lock);
        let mut jg = lock(&inner.journal);
        let mut idx = lock(&inner.index);
        let k = series.parts();
        let Some(sid) = idx.find(key_hash(k), k) else { return Ok(()) };
        let s = &idx.series[sid as usize];
        if s.shard != NONE && s.flags & F_CATALOGED != 0 {
            // The slot may be reused only once the removal is durable.
            let op = catalog::Op::Remove { shard: s.shard, slot: s.slot, incarnation: s.incarnation };
            inner.append_catalog(&[op])?;
        }
        // Replay must not bring the series back from older journal records.
        let j = &mut *jg;
        j.enc.clear();
        j.enc.remove(&s.key);
        j.enc.finish(&mut j.buf);
        let path = inner.dir.join("journal");
        let Some(f) = j.file.as_ref() else {
            return Err(FileError::Io { path, source: std::io::Error::other("no journal segment") });
        };
        let res =
            f.write_at(&j.buf, j.len).and_then(
                |()| {
                    if inner.cfg.fsync == FsyncPolicy::Never {
                        Ok(())
                    } else {
                        f.sync()
                    }
                },
            );
        if let Err(source) = res {
            let _ = f.set_len(j.len);
            return Err(FileError::Io { path, source });
        }
        j.len += j.buf.len() as u64;
        let s = &idx.series[sid as usize];
        let n = (s.pending.len() + s.flushing.as_ref().map_or(0, |f| f.len())) as u64;
        inner.stats.unflushed_bytes.fetch_sub(ENTRY_BYTES * n, Ordering::Relaxed);
        idx.remove(sid);
        inner.stats.series.store(idx.live as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Creates `series` from data source `ds` of `db` (an RRD read with
    /// [`crate::import::parse_dump`]): its definition, live state and every archive
    /// row, so history is kept and the next sample continues as rrdtool would. Durable
    /// when this returns.
    ///
    /// # Errors
    /// [`ImportError::Exists`] when the series exists; [`ImportError::Unsupported`]
    /// for DCOUNTER/DDERIVE or archives a shard cannot hold; I/O errors.
    pub fn import(&self, series: &SeriesKey, db: &Rrd, ds: usize) -> Result<(), ImportError> {
        let inner = &*self.inner;
        let d = db.ds.get(ds).ok_or_else(|| ImportError::Unsupported(format!("no data source {ds}")))?;
        let kind = match d.kind {
            DsType::Gauge => DsKind::Gauge,
            DsType::Counter => DsKind::Counter,
            DsType::Derive => DsKind::Derive,
            DsType::Absolute => DsKind::Absolute,
            other => return Err(ImportError::Unsupported(format!("data source type {other}"))),
        };
        let def = ShardDef {
            step: db.step,
            ds: DsDef { name: "value".into(), kind: d.kind, heartbeat: d.heartbeat, min: d.min, max: d.max },
            rra: db.rra.clone(),
        };
        def.check().map_err(ImportError::Unsupported)?;
        let parts = series.parts();
        if !valid_parts(parts) {
            return Err(ImportError::Unsupported(format!("series name {}", series.joined())));
        }
        // Every row of every archive lies after `created`, so all of them count.
        let created = (0..def.rra.len())
            .map(|a| {
                let s = def.rra_step(a);
                (db.last_up - db.last_up % s).saturating_sub(def.rra[a].rows * s)
            })
            .min()
            .unwrap_or(0);
        let last = match db.pdp[ds].last_ds.as_str() {
            s if s.starts_with('U') => f64::NAN,
            s => s.parse().unwrap_or(f64::NAN),
        };
        let n = db.ds.len();
        let mut st = State {
            gen: 0,
            incarnation: 0,
            created,
            last_up: db.last_up,
            last,
            pdp_val: db.pdp[ds].val,
            pdp_unkn: db.pdp[ds].unkn_sec,
            cdp: (0..def.rra.len())
                .map(|a| CdpPrep {
                    val: db.cdp[a * n + ds].val,
                    unkn_pdp: db.cdp[a * n + ds].unkn_pdp,
                    primary: DNAN,
                    secondary: DNAN,
                })
                .collect(),
        };
        let _g = lock(&inner.flush_lock);
        let sid = {
            let mut idx = lock(&inner.index);
            let h = key_hash(parts);
            if idx.find(h, parts).is_some() {
                return Err(ImportError::Exists(series.joined()));
            }
            let g = idx.group_of(def);
            let sid = idx.insert(h, series.joined().into(), kind, g, created);
            idx.series[sid as usize].last = db.last_up;
            inner.stats.series.store(idx.live as u64, Ordering::Relaxed);
            sid
        };
        let io = |source| FileError::Io { path: inner.dir.clone(), source };
        inner.place_unplaced().map_err(io)?;
        let (shard_id, slot, inc) = {
            let idx = lock(&inner.index);
            let s = &idx.series[sid as usize];
            (s.shard, s.slot, s.incarnation)
        };
        st.incarnation = inc;
        let sh =
            read(&inner.shards)[shard_id as usize].clone().ok_or_else(|| io(std::io::Error::other("shard missing")))?;
        let ioerr = |source| FileError::Io { path: sh.path.clone(), source };
        // Every block of the series, rows moved to where time puts them.
        {
            let _w = write(&sh.io);
            for (a, r) in sh.def.rra.iter().enumerate() {
                let s = sh.def.rra_step(a);
                let cur = (db.last_up / s) % r.rows;
                for col in 0..sh.layout.archives[a].1 {
                    let mut b = [0u8; BLOCK_LEN];
                    shard::clear_block(&mut b);
                    for i in 0..BLOCK_ROWS {
                        let p = u64::from(col) * BLOCK_ROWS as u64 + i as u64;
                        if p >= r.rows {
                            break;
                        }
                        let age = (cur + r.rows - p) % r.rows;
                        let row = (db.cur_row[a] + r.rows - age) % r.rows;
                        shard::set_block_value(&mut b, i, db.value(a, row, ds));
                    }
                    shard::seal_block(sh.id, slot, a, col, inc, &mut b);
                    sh.file.write_at(&b, sh.layout.block_off(a, col, slot)).map_err(ioerr)?;
                }
            }
        }
        let key = series.joined();
        inner.append_catalog(&[catalog::Op::Add {
            shard: sh.id,
            slot,
            incarnation: inc,
            kind,
            created,
            key: key.clone(),
        }])?;
        inner.sync_shard(&sh)?;
        // The state, through the A/B tables like a flush.
        let cur = sh.cur.load(Ordering::Acquire);
        let mut table = vec![0u8; sh.layout.table_len()];
        sh.file.read_at(&mut table, sh.layout.states[cur]).map_err(ioerr)?;
        st.gen = sh.gen.load(Ordering::Relaxed) + 1;
        let work = Work {
            sid,
            slot,
            inc,
            created,
            kind,
            samples: Arc::new(Vec::new()),
            new_catalog: false,
            corrupt: None,
            st,
        };
        let zero = lock(&inner.index).shards[sh.id as usize].to_zero.clone();
        let mut staged = Staged { sh: sh.clone(), work: vec![work], zero, table, cur, adds: Vec::new(), written: 0 };
        inner.stage_states(&mut staged)?;
        inner.sync_shard(&sh)?;
        inner.commit(staged);
        Ok(())
    }

    /// Series known (in shards or only in memory so far).
    pub fn series_count(&self) -> usize {
        lock(&self.inner.index).live
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Series quarantined since the store was opened (for `/api/v1/health`).
    pub fn quarantined(&self) -> Vec<Quarantined> {
        lock(&self.inner.quarantined).clone()
    }

    /// Flushes everything and stops the background threads.
    ///
    /// # Errors
    /// As [`Store::flush_all`].
    pub fn close(&self) -> Result<(), FileError> {
        let r = self.flush_all();
        self.inner.closed.store(true, Ordering::SeqCst);
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
        r
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
    }
}

/// A fetch of one series from its shard (or none yet) and its unflushed samples.
/// The series' state as stored and as it is with the unflushed samples applied, and
/// (when `overlay`) the rows those samples complete, per archive.
fn current_state(
    sh: Option<&Shard>,
    snap: &Snapshot,
    overlay: bool,
) -> Result<(State, State, Vec<Vec<f64>>), ReadError> {
    let def = &*snap.def;
    let mut st = match sh {
        Some(sh) if snap.incarnation != 0 => {
            let mut b = vec![0u8; sh.layout.state_len];
            let copy = sh.cur.load(Ordering::Acquire);
            sh.file
                .read_at(&mut b, sh.layout.state_off(copy, snap.slot))
                .map_err(|source| FileError::Io { path: sh.path.clone(), source })?;
            match shard::decode_state(sh.id, snap.slot, def, &b) {
                Ok(Some(st)) if st.incarnation == snap.incarnation && st.incarnation != 0 => st,
                Ok(_) => State::fresh(def, snap.incarnation, snap.created),
                Err(e) => return Err(corrupt_err(sh, e.0)),
            }
        }
        _ => State::fresh(def, snap.incarnation, snap.created),
    };
    let disk_state = st.clone();
    let mut rows: Vec<Vec<f64>> = vec![Vec::new(); if overlay { def.rra.len() } else { 0 }];
    apply_samples(def, &mut st, &snap.pending, |a, _, v| {
        if let Some(r) = rows.get_mut(a) {
            r.push(v);
        }
    });
    Ok((disk_state, st, rows))
}

fn fetch_snapshot(
    sh: Option<&Shard>,
    snap: &Snapshot,
    cf: Cf,
    start: u64,
    end: u64,
    res: u64,
) -> Result<Column, ReadError> {
    let def = &*snap.def;
    let (disk_state, st, overlay) = current_state(sh, snap, true)?;
    let r = choose_rra(def.step, &def.rra, st.last_up, cf, start, end, res)?;
    let step = def.rra_step(r);
    let rows = def.rra[r].rows;
    let start = start - start % step;
    let end = end + (step - end % step);
    let n = ((end - start) / step) as usize;
    let rra_end = st.last_up - st.last_up % step;
    let created_end = snap.created - snap.created % step;
    let ov = &overlay[r];
    let mut blocks: Vec<(u32, [f64; BLOCK_ROWS])> = Vec::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = start + (i as u64 + 1) * step;
        if t > rra_end || (rra_end - t) / step >= rows {
            out.push(DNAN);
            continue;
        }
        let age = ((rra_end - t) / step) as usize;
        if age < ov.len() {
            out.push(ov[ov.len() - 1 - age]);
            continue;
        }
        if t <= created_end || t > disk_state.last_up {
            out.push(DNAN);
            continue;
        }
        let Some(sh) = sh else {
            out.push(DNAN);
            continue;
        };
        let row = (t / step) % rows;
        let col = (row / BLOCK_ROWS as u64) as u32;
        // Rows run in time order, so the block is nearly always the last one read:
        // search from the end, and index instead of copying the block's values.
        let bi = match blocks.iter().rposition(|b| b.0 == col) {
            Some(i) => i,
            None => {
                let mut b = [0u8; BLOCK_LEN];
                sh.file
                    .read_at(&mut b, sh.layout.block_off(r, col, snap.slot))
                    .map_err(|source| FileError::Io { path: sh.path.clone(), source })?;
                match shard::check_block(sh.id, snap.slot, r, col, &b) {
                    Ok(inc) if inc == snap.incarnation => {}
                    Ok(_) => return Err(corrupt_err(sh, format!("block of slot {} holds another series", snap.slot))),
                    Err(e) => return Err(corrupt_err(sh, e.0)),
                }
                let mut v = [DNAN; BLOCK_ROWS];
                for (k, x) in v.iter_mut().enumerate() {
                    *x = shard::block_value(&b, k);
                }
                blocks.push((col, v));
                blocks.len() - 1
            }
        };
        out.push(blocks[bi].1[(row % BLOCK_ROWS as u64) as usize]);
    }
    Ok(Column { start, end, step, values: out })
}

fn corrupt_err(sh: &Shard, reason: String) -> ReadError {
    ReadError::File(FileError::Corrupt { path: sh.path.clone(), reason })
}

fn seg_id(p: &Path) -> Option<u64> {
    p.file_name()?.to_str()?.strip_suffix(".log")?.parse().ok()
}

/// Rows of one series as [`Store::fetch_column`] reads them: value `i` is the row
/// labelled `start + (i + 1) * step`; NaN is unknown.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Aligned start (exclusive).
    pub start: u64,
    /// Aligned end (inclusive label of the last row).
    pub end: u64,
    /// Seconds per row of the chosen archive.
    pub step: u64,
    pub values: Vec<f64>,
}

/// What a fetch needs of a series, copied under the index lock.
struct Snapshot {
    def: Arc<ShardDef>,
    slot: u32,
    incarnation: u32,
    created: u64,
    pending: Vec<(u64, f64)>,
}

impl Inner {
    fn fetch(&self, series: &SeriesKey, cf: Cf, start: u64, end: u64, res: u64) -> Result<Column, ReadError> {
        self.with_snapshot(series, start, end, |sh, snap| fetch_snapshot(sh, snap, cf, start, end, res))
    }

    fn newest_row(&self, series: &SeriesKey, cf: Cf, start: u64, end: u64, res: u64) -> Result<(u64, u64), ReadError> {
        self.with_snapshot(series, start, end, |sh, snap| {
            let (_, st, _) = current_state(sh, snap, false)?;
            let def = &*snap.def;
            let r = choose_rra(def.step, &def.rra, st.last_up, cf, start, end, res)?;
            let step = def.rra_step(r);
            Ok((step, st.last_up - st.last_up % step))
        })
    }

    /// Runs `read` on a consistent snapshot of one series (its shard's I/O lock held).
    fn with_snapshot<T>(
        &self,
        series: &SeriesKey,
        start: u64,
        end: u64,
        f: impl FnOnce(Option<&Shard>, &Snapshot) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        if start > end {
            return Err(crate::rrd::FetchError::Range { start, end }.into());
        }
        let k = series.parts();
        let h = key_hash(k);
        loop {
            let shard_id = {
                let idx = lock(&self.index);
                let sid = idx.find(h, k).ok_or(ReadError::NotFound)?;
                idx.series[sid as usize].shard
            };
            let sh = if shard_id == NONE { None } else { read(&self.shards)[shard_id as usize].clone() };
            let _io = sh.as_ref().map(|s| read(&s.io));
            let snap = {
                let idx = lock(&self.index);
                let sid = idx.find(h, k).ok_or(ReadError::NotFound)?;
                let s = &idx.series[sid as usize];
                if s.shard != shard_id {
                    continue; // placed meanwhile
                }
                Snapshot {
                    def: idx.groups[s.group as usize].def.clone(),
                    slot: s.slot,
                    incarnation: s.incarnation,
                    created: s.created,
                    pending: s.flushing.iter().flat_map(|f| f.iter()).chain(&s.pending).copied().collect(),
                }
            };
            return f(sh.as_deref(), &snap).inspect_err(|e| {
                if matches!(e, ReadError::File(FileError::Corrupt { .. })) {
                    self.mark_corrupt(h, k);
                }
            });
        }
    }

    fn mark_corrupt(&self, h: u64, k: [&str; 3]) {
        let mut idx = lock(&self.index);
        if let Some(sid) = idx.find(h, k) {
            idx.series[sid as usize].flags |= F_CORRUPT;
        }
    }

    fn mark_durable(&self, seq: u64) {
        let mut d = lock(&self.durable_seq);
        if seq > *d {
            *d = seq;
        }
        self.durable_cv.notify_all();
    }

    /// One fsync covering every append so far (group commit).
    fn sync_journal(&self) {
        let j = lock(&self.journal);
        let seq = j.seq;
        if *lock(&self.durable_seq) >= seq {
            return;
        }
        if let Some(f) = &j.file {
            if self.cfg.fsync != FsyncPolicy::Never {
                if let Err(e) = f.sync() {
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "Journal sync failed; not acknowledging.");
                    return;
                }
                self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(j);
        self.mark_durable(seq);
    }

    /// Starts a new journal segment; returns its id (everything before it is in older
    /// segments).
    fn rotate(&self) -> std::io::Result<u64> {
        let mut j = lock(&self.journal);
        if let Some(f) = &j.file {
            // Appends not yet durable become so (and are acknowledged) here.
            if *lock(&self.durable_seq) < j.seq {
                f.sync()?;
                self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        let id = j.seg + 1;
        let path = self.dir.join("journal").join(format!("{id:016}.log"));
        let f = self.disk.open(&path, true)?;
        j.file = Some(f);
        j.seg = id;
        j.len = 0;
        let seq = j.seq;
        drop(j);
        self.mark_durable(seq);
        Ok(id)
    }

    fn drop_segments_before(&self, boundary: u64) {
        let jdir = self.dir.join("journal");
        if let Ok(list) = self.disk.list(&jdir) {
            for p in list {
                if seg_id(&p).is_some_and(|id| id < boundary) {
                    let _ = self.disk.remove(&p);
                }
            }
        }
    }

    /// Saves the raw bytes of one slot (both state records and every block) under
    /// `quarantine/`, so nothing is lost before the slot is reused.
    fn quarantine_slot(&self, sh: &Shard, slot: u32, series: &str, reason: &str) {
        self.stats.corrupt_files.fetch_add(1, Ordering::Relaxed);
        let stamp = now_secs();
        let mut out = format!(
            "ganglion quarantined series\nseries {series}\nshard {} slot {slot}\nreason {reason}\nstate records A, B ({} bytes each), then {} blocks of {BLOCK_LEN} bytes, archive by archive\n\n",
            sh.id,
            sh.layout.state_len,
            sh.layout.archives.iter().map(|a| a.1).sum::<u32>(),
        )
        .into_bytes();
        let mut ok = true;
        for c in 0..2 {
            let mut b = vec![0u8; sh.layout.state_len];
            ok &= sh.file.read_at(&mut b, sh.layout.state_off(c, slot)).is_ok();
            out.extend_from_slice(&b);
        }
        for (a, &(_, cols)) in sh.layout.archives.iter().enumerate() {
            for col in 0..cols {
                let mut b = [0u8; BLOCK_LEN];
                ok &= sh.file.read_at(&mut b, sh.layout.block_off(a, col, slot)).is_ok();
                out.extend_from_slice(&b);
            }
        }
        let name = format!("{}.{:06}-{slot}.{stamp}.slot", series.replace('/', "__"), sh.id);
        let to = self.dir.join("quarantine").join(name);
        let saved = self.disk.open(&to, true).and_then(|f| {
            f.write_at(&out, 0)?;
            f.sync()
        });
        match saved {
            Ok(()) if ok => {
                self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                tracing::error!(series, shard = sh.id, slot, to = %to.display(), reason, "Quarantined a damaged series; it starts again empty.");
            }
            r => {
                tracing::error!(series, shard = sh.id, slot, error = ?r.err(), reason, "Could not save a damaged series completely; it starts again empty.")
            }
        }
        lock(&self.quarantined).push(Quarantined { series: series.into(), path: to, reason: reason.into(), at: stamp });
    }

    fn append_catalog(&self, ops: &[catalog::Op]) -> Result<(), FileError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(ops.len() * 64);
        for op in ops {
            catalog::encode(op, &mut buf);
        }
        let mut c = lock(&self.catalog);
        let path = self.dir.join("catalog.log");
        let r = c.file.write_at(&buf, c.len).and_then(|()| c.file.sync());
        match r {
            Ok(()) => {
                c.len += buf.len() as u64;
                Ok(())
            }
            Err(source) => {
                let _ = c.file.set_len(c.len);
                Err(FileError::Io { path, source })
            }
        }
    }
}

#[cfg(test)]
mod tests;

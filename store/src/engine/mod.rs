//! The collector-facing store for many series (cluster/host/metric).
//!
//! Write path: [`Store::append`] validates a batch, writes it to the journal as one
//! record and keeps it in memory; [`Store::durable`] returns once the journal holds it
//! under the fsync policy (group commit: one fsync covers every append since the last).
//! A background flusher thread applies the accumulated updates of each series to its
//! round-robin file ([`crate::file`], one per series under `series/`), spreading the
//! series over the flush interval in a shuffled order (rrdcached's `-w`/`-z`), and drops
//! journal segments once every series has been flushed past them. Reads
//! ([`Store::fetch`]) merge the file with the unflushed updates.
//!
//! Crash safety: a flush writes data blocks, syncs, then writes the state slot (A/B), so
//! a state never points at rows that are not on disk; journal segments are deleted only
//! after the files are synced; replay skips updates at or before a file's last update.
//!
//! Layout of `dir`: `journal/<id>.log`, `series/<cluster>/<host>/<metric>.grrd`,
//! `quarantine/` (corrupt files moved aside).

pub mod journal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use crate::disk::{Disk, DiskFile, RealDisk};
use crate::file::{FileError, RrdFile};
use crate::rrd::{Cf, DsDef, DsType, Fetched, RraDef, Rrd};

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
        let ok = |x: &str| !x.is_empty() && x != "." && x != ".." && !x.contains('/');
        (ok(c) && ok(h) && ok(m)).then(|| SeriesKey::new(c, h, m))
    }

    fn valid(&self) -> bool {
        SeriesKey::from_joined(&self.joined()).as_ref() == Some(self)
    }
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
    fn ds_type(self) -> DsType {
        match self {
            DsKind::Gauge => DsType::Gauge,
            DsKind::Counter => DsType::Counter,
            DsKind::Derive => DsType::Derive,
            DsKind::Absolute => DsType::Absolute,
        }
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
    /// Every series is written to its file once per this period (spread, shuffled).
    pub flush_interval_secs: u64,
    /// When unflushed samples take more memory than this, the flusher speeds up.
    pub max_unflushed_bytes: u64,
    /// Run the background thread (tests drive [`Store::flush_all`] by hand without it).
    pub background: bool,
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
}

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
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
}

/// Handle for [`Store::durable`]: the journal sequence of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// A series whose data blocks are written, waiting for its state slot.
type Applied = (SeriesKey, RrdFile, Rrd, Vec<(u64, f64)>);

struct SeriesState {
    kind: DsKind,
    /// Last accepted time (s): later samples must be newer, as rrdtool requires.
    last: u64,
    pending: Vec<(u64, f64)>,
}

struct Journal {
    file: Option<Box<dyn DiskFile>>,
    seg: u64,
    len: u64,
    /// Sequence of the last record written.
    seq: u64,
}

struct Inner {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    cfg: StoreConfig,
    journal: Mutex<Journal>,
    durable_seq: Mutex<u64>,
    durable_cv: Condvar,
    series: Mutex<HashMap<SeriesKey, SeriesState>>,
    /// Serializes flushes (the background thread vs. `flush_all`).
    flush_lock: Mutex<()>,
    stats: Stats,
    closed: AtomicBool,
}

/// The engine. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State under these locks stays consistent at every await-free step; a panicking
    // holder leaves nothing half-done that a later user could not cope with.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const ENTRY_BYTES: u64 = 16;

impl Store {
    /// Opens (or creates) a store in `dir` on the real file system.
    ///
    /// # Errors
    /// [`OpenError::Io`] when the directories or journal cannot be read or created.
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<Store, OpenError> {
        Store::open_on(Arc::new(RealDisk), dir, cfg)
    }

    /// [`Store::open`] on any [`Disk`]: replays the journal (truncating a torn or
    /// corrupt tail at the last good record) and starts the flusher.
    ///
    /// # Errors
    /// [`OpenError::Io`].
    pub fn open_on(disk: Arc<dyn Disk>, dir: &Path, cfg: StoreConfig) -> Result<Store, OpenError> {
        let ioe = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        let jdir = dir.join("journal");
        for d in [dir.to_path_buf(), jdir.clone(), dir.join("series"), dir.join("quarantine")] {
            disk.create_dir_all(&d).map_err(ioe(&d))?;
        }
        let inner = Inner {
            disk: disk.clone(),
            dir: dir.to_path_buf(),
            cfg,
            journal: Mutex::new(Journal { file: None, seg: 0, len: 0, seq: 0 }),
            durable_seq: Mutex::new(0),
            durable_cv: Condvar::new(),
            series: Mutex::new(HashMap::new()),
            flush_lock: Mutex::new(()),
            stats: Stats::default(),
            closed: AtomicBool::new(false),
        };
        // Replay: every segment in order; updates at or before a file's last update
        // were flushed already and are skipped at flush time.
        let segs = disk.list(&jdir).map_err(ioe(&jdir))?;
        let mut last_seg = 0;
        let mut file_last: HashMap<SeriesKey, u64> = HashMap::new();
        for path in &segs {
            let Some(id) = seg_id(path) else { continue };
            last_seg = last_seg.max(id);
            let f = disk.open(path, false).map_err(ioe(path))?;
            let len = f.len().map_err(ioe(path))?;
            let mut bytes = vec![0u8; len as usize];
            f.read_at(&mut bytes, 0).map_err(ioe(path))?;
            let mut at = 0usize;
            while at < bytes.len() {
                match journal::decode(&bytes[at..]) {
                    journal::Decoded::Record(entries, used) => {
                        let mut map = lock(&inner.series);
                        for e in entries {
                            let floor = *file_last
                                .entry(e.key.clone())
                                .or_insert_with(|| inner.file_last_update(&e.key).unwrap_or(0));
                            let s = map.entry(e.key).or_insert(SeriesState {
                                kind: e.kind,
                                last: floor,
                                pending: Vec::new(),
                            });
                            if e.time > s.last {
                                s.last = e.time;
                                s.pending.push((e.time, e.value));
                                inner.stats.unflushed_bytes.fetch_add(ENTRY_BYTES, Ordering::Relaxed);
                            }
                        }
                        at += used;
                    }
                    journal::Decoded::Incomplete | journal::Decoded::Invalid(_) => {
                        tracing::warn!(path = %path.display(), offset = at, "Truncated the journal at its last good record.");
                        inner.stats.journal_truncated.fetch_add(1, Ordering::Relaxed);
                        f.set_len(at as u64).map_err(ioe(path))?;
                        f.sync().map_err(ioe(path))?;
                        break;
                    }
                }
            }
        }
        // Everything replayed is durable already.
        {
            let mut j = lock(&inner.journal);
            j.seg = last_seg;
        }
        let inner = Arc::new(inner);
        inner.rotate().map_err(ioe(&jdir))?;
        let store = Store { inner: inner.clone(), thread: Mutex::new(None) };
        if inner.cfg.background {
            let t = std::thread::Builder::new()
                .name("store-flusher".into())
                .spawn(move || inner.background())
                .map_err(ioe(dir))?;
            *lock(&store.thread) = Some(t);
        }
        Ok(store)
    }

    /// Accepts a batch: samples older than their series' last sample are rejected
    /// (counted), the rest are journaled and kept in memory. Wait for durability with
    /// [`Store::durable`] before acknowledging.
    ///
    /// # Errors
    /// [`WriteError::Backpressure`] when the journal cannot be written; nothing of the
    /// batch is kept, and a later call retries.
    pub fn append(&self, updates: &[Update]) -> Result<Ticket, WriteError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(WriteError::Closed);
        }
        inner.stats.received.fetch_add(updates.len() as u64, Ordering::Relaxed);
        // The journal lock is held across validation and the memory insert so the
        // journal order equals the order samples were accepted in.
        let mut j = lock(&inner.journal);
        let mut map = lock(&inner.series);
        let mut accepted: Vec<(&Update, u64)> = Vec::with_capacity(updates.len());
        let mut batch_last: HashMap<&SeriesKey, u64> = HashMap::new();
        for u in updates {
            let t = u.time_ms.div_euclid(1000);
            let counter_ok = !matches!(u.kind, DsKind::Counter | DsKind::Derive)
                || (u.value.is_finite() && u.value.fract() == 0.0 && (u.kind == DsKind::Derive || u.value >= 0.0));
            let last = batch_last.get(&u.series).copied().or_else(|| map.get(&u.series).map(|s| s.last)).unwrap_or(0);
            if t <= 0 || t as u64 <= last || !counter_ok || !u.series.valid() {
                inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            batch_last.insert(&u.series, t as u64);
            accepted.push((u, t as u64));
        }
        let seq = j.seq + 1;
        if !accepted.is_empty() {
            let rec = journal::encode(&accepted);
            let f = match &j.file {
                Some(f) => f,
                None => return Err(WriteError::Backpressure(std::io::Error::other("no journal segment"))),
            };
            if let Err(e) = f.write_at(&rec, j.len) {
                // Cut off whatever part landed so the next record starts clean.
                let _ = f.set_len(j.len);
                inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                return Err(WriteError::Backpressure(e));
            }
            if inner.cfg.fsync == FsyncPolicy::Always {
                if let Err(e) = f.sync() {
                    let _ = f.set_len(j.len);
                    inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(WriteError::Backpressure(e));
                }
                inner.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            j.len += rec.len() as u64;
            inner.stats.journal_bytes.fetch_add(rec.len() as u64, Ordering::Relaxed);
            for (u, t) in &accepted {
                let s = map.entry(u.series.clone()).or_insert_with(|| SeriesState {
                    kind: u.kind,
                    last: inner.file_last_update(&u.series).unwrap_or(0),
                    pending: Vec::new(),
                });
                s.last = *t;
                s.pending.push((*t, u.value));
            }
            inner.stats.unflushed_bytes.fetch_add(ENTRY_BYTES * accepted.len() as u64, Ordering::Relaxed);
        }
        j.seq = seq;
        drop(map);
        drop(j);
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

    /// `fetch` of one series, merging its file with unflushed samples.
    ///
    /// # Errors
    /// [`ReadError::NotFound`] for an unknown series, file and fetch errors otherwise.
    pub fn fetch(
        &self,
        series: &SeriesKey,
        cf: Cf,
        start: u64,
        end: u64,
        resolution: u64,
    ) -> Result<Fetched, ReadError> {
        let (kind, pending) = {
            let map = lock(&self.inner.series);
            match map.get(series) {
                Some(s) => (Some(s.kind), s.pending.clone()),
                None => (None, Vec::new()),
            }
        };
        let path = self.inner.path_of(series);
        let mut db = if self.inner.disk.exists(&path) {
            RrdFile::open(&*self.inner.disk, &path)?.1
        } else {
            match kind {
                Some(k) => self.inner.new_db(k, pending.first().map_or(0, |p| p.0 - 1)),
                None => return Err(ReadError::NotFound),
            }
        };
        for (t, v) in pending {
            if t > db.last_up {
                let _ = db.update(t, &[&value_text(v)]);
            }
        }
        Ok(db.fetch(cf, start, end, resolution)?)
    }

    /// Writes every unflushed sample to the series files and drops the journal they
    /// came from.
    ///
    /// # Errors
    /// The first I/O error; samples that could not be written stay in memory and in the
    /// journal.
    pub fn flush_all(&self) -> Result<(), FileError> {
        self.inner.sync_journal();
        let keys: Vec<SeriesKey> = lock(&self.inner.series).keys().cloned().collect();
        let _g = lock(&self.inner.flush_lock);
        let boundary = self.inner.rotate().map_err(|source| FileError::Io { path: self.inner.dir.clone(), source })?;
        let ok = self.inner.flush_series(&keys);
        if ok.is_ok() {
            self.inner.drop_segments_before(boundary);
        }
        ok
    }

    /// Forgets a series and deletes its file (host expiry).
    ///
    /// # Errors
    /// I/O errors deleting the file.
    pub fn remove_series(&self, series: &SeriesKey) -> Result<(), FileError> {
        let _g = lock(&self.inner.flush_lock);
        if let Some(s) = lock(&self.inner.series).remove(series) {
            self.inner.stats.unflushed_bytes.fetch_sub(ENTRY_BYTES * s.pending.len() as u64, Ordering::Relaxed);
        }
        let path = self.inner.path_of(series);
        if self.inner.disk.exists(&path) {
            self.inner.disk.remove(&path).map_err(|source| FileError::Io { path, source })?;
        }
        Ok(())
    }

    /// Series known in memory or on disk under `series/`.
    pub fn series_count(&self) -> usize {
        lock(&self.inner.series).len()
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Flushes everything and stops the flusher.
    ///
    /// # Errors
    /// As [`Store::flush_all`].
    pub fn close(&self) -> Result<(), FileError> {
        let r = self.flush_all();
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        r
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn seg_id(p: &Path) -> Option<u64> {
    p.file_name()?.to_str()?.strip_suffix(".log")?.parse().ok()
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

impl Inner {
    fn path_of(&self, k: &SeriesKey) -> PathBuf {
        self.dir.join("series").join(&k.cluster).join(&k.host).join(format!("{}.grrd", k.metric))
    }

    fn new_db(&self, kind: DsKind, start: u64) -> Rrd {
        let ds = DsDef {
            name: "value".into(),
            kind: kind.ds_type(),
            heartbeat: self.cfg.heartbeat_secs,
            min: f64::NAN,
            max: f64::NAN,
        };
        // The configuration was checked when the store was set up; a failure here
        // means an empty archive list, which `StoreConfig` never produces.
        Rrd::create(self.cfg.step_secs, start, vec![ds], self.cfg.archives.clone())
            .expect("store archive configuration is valid")
    }

    fn file_last_update(&self, k: &SeriesKey) -> Option<u64> {
        let p = self.path_of(k);
        if !self.disk.exists(&p) {
            return None;
        }
        RrdFile::open(&*self.disk, &p).ok().map(|(_, db)| db.last_up)
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
            f.sync()?;
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

    fn quarantine(&self, path: &Path, reason: &str) {
        self.stats.corrupt_files.fetch_add(1, Ordering::Relaxed);
        let name = path.strip_prefix(self.dir.join("series")).unwrap_or(path).to_string_lossy().replace('/', "__");
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let to = self.dir.join("quarantine").join(format!("{name}.{stamp}"));
        match self.disk.rename(path, &to) {
            Ok(()) => {
                self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %path.display(), to = %to.display(), reason, "Quarantined a corrupt series file; recreating it.");
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "Could not quarantine a corrupt series file.")
            }
        }
    }

    /// Writes the pending samples of `keys`: data blocks of all, one barrier, then
    /// states, then a final sync.
    fn flush_series(&self, keys: &[SeriesKey]) -> Result<(), FileError> {
        let mut first_err = None;
        for chunk in keys.chunks(256) {
            let mut open: Vec<Applied> = Vec::new();
            for k in chunk {
                let (kind, pending) = {
                    let mut map = lock(&self.series);
                    let Some(s) = map.get_mut(k) else { continue };
                    if s.pending.is_empty() {
                        continue;
                    }
                    (s.kind, std::mem::take(&mut s.pending))
                };
                match self.apply(k, kind, &pending) {
                    Ok((f, db)) => open.push((k.clone(), f, db, pending)),
                    Err(e) => {
                        self.restore(k, pending);
                        first_err.get_or_insert(e);
                    }
                }
            }
            let mut synced = true;
            for (_, f, _, _) in &open {
                if f.sync().is_err() {
                    synced = false;
                }
            }
            for (k, mut f, db, pending) in open {
                let r = if synced {
                    f.write_state(&db).and_then(|()| f.sync())
                } else {
                    Err(FileError::Io { path: f.path().to_path_buf(), source: std::io::Error::other("sync failed") })
                };
                match r {
                    Ok(()) => {
                        self.stats.written.fetch_add(pending.len() as u64, Ordering::Relaxed);
                        self.stats.unflushed_bytes.fetch_sub(ENTRY_BYTES * pending.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                        self.restore(&k, pending);
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn restore(&self, k: &SeriesKey, mut pending: Vec<(u64, f64)>) {
        let mut map = lock(&self.series);
        if let Some(s) = map.get_mut(k) {
            pending.append(&mut s.pending);
            s.pending = pending;
        }
    }

    /// Loads (or creates) the file of `k`, applies `pending` and writes the data blocks.
    fn apply(&self, k: &SeriesKey, kind: DsKind, pending: &[(u64, f64)]) -> Result<(RrdFile, Rrd), FileError> {
        let path = self.path_of(k);
        let loaded = if self.disk.exists(&path) {
            match RrdFile::open(&*self.disk, &path) {
                Ok(x) => Some(x),
                Err(FileError::Corrupt { reason, .. }) => {
                    self.quarantine(&path, &reason);
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let (f, mut db) = match loaded {
            Some(x) => x,
            None => {
                if let Some(parent) = path.parent() {
                    self.disk.create_dir_all(parent).map_err(|source| FileError::Io { path: path.clone(), source })?;
                }
                let db = self.new_db(kind, pending.first().map_or(0, |p| p.0 - 1));
                (RrdFile::create(&*self.disk, &path, &db, false)?, db)
            }
        };
        for (t, v) in pending {
            if *t > db.last_up && db.update(*t, &[&value_text(*v)]).is_err() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        f.write_data(&mut db)?;
        Ok((f, db))
    }

    /// The flusher thread: group-commit syncs and spread-out series flushes.
    fn background(self: Arc<Self>) {
        let tick = Duration::from_millis(50);
        let mut last_sync = Instant::now();
        let mut order: Vec<SeriesKey> = Vec::new();
        let mut pos = 0usize;
        let mut boundary = 0u64;
        let mut cycle_ok = true;
        let mut cycle_start = Instant::now();
        while !self.closed.load(Ordering::SeqCst) {
            std::thread::sleep(tick);
            if let FsyncPolicy::IntervalMs(ms) = self.cfg.fsync {
                if last_sync.elapsed() >= Duration::from_millis(ms) {
                    self.sync_journal();
                    last_sync = Instant::now();
                }
            }
            if pos >= order.len() {
                // A cycle ended: every series was flushed after `boundary` was opened.
                if cycle_ok && boundary > 0 {
                    self.drop_segments_before(boundary);
                }
                let _g = lock(&self.flush_lock);
                order = lock(&self.series).keys().cloned().collect();
                order.shuffle(&mut rand::thread_rng());
                pos = 0;
                cycle_ok = true;
                cycle_start = Instant::now();
                boundary = self.rotate().unwrap_or_default();
            }
            // Spread the cycle over the flush interval; go faster when memory is tight.
            let period = Duration::from_secs(self.cfg.flush_interval_secs.max(1));
            let due =
                ((cycle_start.elapsed().as_secs_f64() / period.as_secs_f64()) * order.len() as f64).ceil() as usize;
            let mut target = due.min(order.len());
            if self.stats.unflushed_bytes.load(Ordering::Relaxed) > self.cfg.max_unflushed_bytes {
                target = (pos + 1024).min(order.len());
            }
            if target > pos {
                let _g = lock(&self.flush_lock);
                if self.flush_series(&order[pos..target]).is_err() {
                    cycle_ok = false;
                }
                pos = target;
            }
        }
    }
}

#[cfg(test)]
mod tests;

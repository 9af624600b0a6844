//! Rendered graphs kept for identical requests, in the spirit of `rrdtool graph --lazy`:
//! a graph is drawn again only when something it was drawn from has changed.
//!
//! An entry is found by the normalised query ([`crate::charts::cache_key`]) and served
//! only when every input of the drawing is unchanged, checked without reading rows:
//! - each series read: its archive (step) and newest complete row are the same
//!   ([`DashboardSource::newest_row`]), and the range, moved to the request's `now`,
//!   starts and ends in the same rows of that archive. Rows are only ever added at the
//!   end, so this vouches for every row drawn;
//! - the host lists, host details and units the graph used are read again and
//!   compared; that costs a small fraction of drawing.
//!
//! So an entry lives at most one row of its finest archive (15 s for day graphs at the
//! default step) and is replaced as soon as a new row lands. A source that cannot tell
//! its newest row (`newest_row` returns `None`) gets no caching. Memory is bounded by
//! [`GraphCache::new`]'s byte budget: least recently used entries go first.
//!
//! A wall of dashboards asks for the same graphs at the same moment, and every one of
//! them misses when a row lands. [`GraphCache::get_or_draw`] lets one request draw a
//! missing graph while the others asking for it wait and take that drawing, so a new row
//! costs one drawing per graph, not one per viewer.

use std::collections::hash_map::Entry as Slot;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;

use crate::source::{
    Action, BoxFuture, Cf, CheckInfo, ClusterInfo, CommentInfo, DowntimeInfo, Fetched, HistoryEntry, HostDetail,
    HostInfo, SeriesRef,
};
use crate::DashboardSource;

/// Bytes an entry is counted for besides its image (key, inputs, bookkeeping).
const ENTRY_OVERHEAD: usize = 512;

/// Longest a request waits for another one drawing the same graph before it draws the
/// graph itself: a drawing that is stuck on storage holds up only its own request.
const WAIT_FOR_DRAWING: Duration = Duration::from_secs(10);

/// Hits, misses and size of the graph cache, as `/api/v1/health` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CacheStats {
    /// Requests answered with kept bytes.
    pub hits: u64,
    /// Requests that drew the graph (cache on, nothing valid kept).
    pub misses: u64,
    /// Requests that found the graph being drawn for another request, waited, and were
    /// answered with that drawing.
    pub coalesced: u64,
    /// Entries dropped to stay within the budget.
    pub evicted: u64,
    pub entries: usize,
    pub bytes: usize,
    /// The budget; 0 means the cache is off.
    pub capacity_bytes: usize,
}

/// One series read while drawing, and what vouches for its rows.
#[derive(Debug, Clone, PartialEq)]
struct FetchInput {
    cluster: String,
    host: String,
    metric: String,
    cf: Cf,
    start: i64,
    end: i64,
    resolution: u64,
    /// `(archive step, newest complete row)` before the read.
    newest: (i64, i64),
}

/// What a host lookup answered, as far as a graph uses it.
type HostSeen = Option<(String, Vec<(String, String)>)>;

/// Everything a graph was drawn from.
#[derive(Debug, Default)]
pub struct Inputs {
    fetches: Vec<FetchInput>,
    hosts: Vec<(String, String, Vec<String>)>,
    host: Vec<(Option<String>, String, HostSeen)>,
    /// `(cluster, host, metric)` → unit.
    units: Vec<([String; 3], Option<String>)>,
    /// A read that nothing vouches for (a missing series, a source without
    /// `newest_row`, an error): the graph is not kept.
    unvouched: bool,
}

fn host_seen(d: Option<&HostDetail>) -> HostSeen {
    d.map(|d| (d.host.cluster.clone(), d.metrics.iter().map(|m| (m.name.clone(), m.unit.clone())).collect()))
}

fn hosts_seen(v: Option<&Vec<HostInfo>>) -> Vec<String> {
    v.map(|v| v.iter().map(|h| h.name.clone()).collect()).unwrap_or_default()
}

impl Inputs {
    /// Whether a graph drawn at range `drawn` would come out the same at range `now`
    /// (same span: the same query at another time).
    fn still_valid(&self, src: &dyn DashboardSource, drawn: (i64, i64), now: (i64, i64)) -> bool {
        let shift = now.0 - drawn.0;
        let same_rows = |f: &FetchInput| {
            let step = f.newest.0.max(1);
            let (s, e) = (f.start + shift, f.end + shift);
            f.start.div_euclid(step) == s.div_euclid(step)
                && f.end.div_euclid(step) == e.div_euclid(step)
                && src.newest_row(
                    &SeriesRef { cluster: &f.cluster, host: &f.host, metric: &f.metric },
                    f.cf,
                    s,
                    e,
                    f.resolution,
                ) == Some(f.newest)
        };
        !self.unvouched
            && self.fetches.iter().all(same_rows)
            && self.hosts.iter().all(|(c, m, names)| hosts_seen(src.hosts(c, m).as_ref()) == *names)
            && self.host.iter().all(|(c, h, seen)| host_seen(src.host(c.as_deref(), h).as_ref()) == *seen)
            && self.units.iter().all(|([c, h, m], unit)| src.metric_unit(c, h, m) == *unit)
    }
}

/// A source that notes what a graph reads, for [`Inputs`].
pub struct Recorder {
    src: Arc<dyn DashboardSource>,
    inputs: Mutex<Inputs>,
}

impl Recorder {
    pub fn new(src: Arc<dyn DashboardSource>) -> Recorder {
        Recorder { src, inputs: Mutex::new(Inputs::default()) }
    }

    /// What was read.
    pub fn finish(self) -> Inputs {
        self.inputs.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn note(&self, f: impl FnOnce(&mut Inputs)) {
        f(&mut self.inputs.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl DashboardSource for Recorder {
    fn clusters(&self) -> Vec<ClusterInfo> {
        self.src.clusters()
    }
    fn hosts(&self, cluster: &str, metric: &str) -> Option<Vec<HostInfo>> {
        let v = self.src.hosts(cluster, metric);
        let names = hosts_seen(v.as_ref());
        self.note(|i| i.hosts.push((cluster.to_owned(), metric.to_owned(), names)));
        v
    }
    fn host(&self, cluster: Option<&str>, host: &str) -> Option<HostDetail> {
        let d = self.src.host(cluster, host);
        let seen = host_seen(d.as_ref());
        self.note(|i| i.host.push((cluster.map(str::to_owned), host.to_owned(), seen)));
        d
    }
    fn metric_unit(&self, cluster: &str, host: &str, metric: &str) -> Option<String> {
        let unit = self.src.metric_unit(cluster, host, metric);
        self.note(|i| i.units.push(([cluster.to_owned(), host.to_owned(), metric.to_owned()], unit.clone())));
        unit
    }
    fn fetch(
        &self,
        series: &SeriesRef<'_>,
        cf: Cf,
        start: i64,
        end: i64,
        resolution: u64,
    ) -> Result<Option<Fetched>, String> {
        // Asked before the read: a row landing in between makes the entry look older
        // than its data (one needless redraw), never newer.
        let newest = self.src.newest_row(series, cf, start, end, resolution);
        let r = self.src.fetch(series, cf, start, end, resolution);
        self.note(|i| match (newest, &r) {
            (Some(newest), Ok(Some(_))) => i.fetches.push(FetchInput {
                cluster: series.cluster.to_owned(),
                host: series.host.to_owned(),
                metric: series.metric.to_owned(),
                cf,
                start,
                end,
                resolution,
                newest,
            }),
            _ => i.unvouched = true,
        });
        r
    }
    fn newest_row(&self, series: &SeriesRef<'_>, cf: Cf, start: i64, end: i64, resolution: u64) -> Option<(i64, i64)> {
        self.src.newest_row(series, cf, start, end, resolution)
    }
    fn checks(&self) -> Vec<CheckInfo> {
        self.src.checks()
    }
    fn history(&self, host: Option<&str>, service: Option<&str>, limit: usize) -> Vec<HistoryEntry> {
        self.src.history(host, service, limit)
    }
    fn downtimes(&self) -> Vec<DowntimeInfo> {
        self.src.downtimes()
    }
    fn comments(&self) -> Vec<CommentInfo> {
        self.src.comments()
    }
    fn health(&self) -> serde_json::Value {
        self.src.health()
    }
    fn act(&self, action: Action) -> BoxFuture<Result<String, String>> {
        self.src.act(action)
    }
}

/// A kept graph.
#[derive(Clone)]
pub struct Cached {
    pub bytes: Bytes,
    /// Strong validator for `If-None-Match`: unique per drawing.
    pub etag: Arc<str>,
}

struct Entry {
    cached: Cached,
    inputs: Arc<Inputs>,
    /// Range the graph was drawn for.
    drawn: (i64, i64),
    used: u64,
    size: usize,
}

#[derive(Default)]
struct Lru {
    map: HashMap<String, Entry>,
    /// `used` tick → key, oldest first.
    order: BTreeMap<u64, String>,
    tick: u64,
    bytes: usize,
}

impl Lru {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.map.remove(key)?;
        self.order.remove(&e.used);
        self.bytes -= e.size;
        Some(e)
    }
}

/// A drawing under way. Those waiting for it are woken when it ends and take its graph,
/// kept or not: they asked while it was being drawn, so it is as fresh as their own.
#[derive(Default)]
struct Drawing {
    /// `None` while under way; then the graph, or `None` when drawing failed.
    ended: Mutex<Option<Option<Cached>>>,
    woken: Condvar,
}

impl Drawing {
    /// The graph once the drawing ends; `None` when it failed or took longer than
    /// `limit`.
    fn wait(&self, limit: Duration) -> Option<Cached> {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        let (ended, _) =
            self.woken.wait_timeout_while(ended, limit, |e| e.is_none()).unwrap_or_else(|e| e.into_inner());
        ended.clone().flatten()
    }

    fn end(&self, graph: Option<Cached>) {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if ended.is_none() {
            *ended = Some(graph);
        }
        drop(ended);
        self.woken.notify_all();
    }
}

/// The request drawing a graph. Ends the drawing when dropped, also when drawing failed
/// or panicked, so no one waits for a graph that will not come.
struct Drawer<'a> {
    cache: &'a GraphCache,
    key: &'a str,
    drawing: Arc<Drawing>,
}

impl Drop for Drawer<'_> {
    fn drop(&mut self) {
        let mut under_way = self.cache.under_way();
        if under_way.get(self.key).is_some_and(|d| Arc::ptr_eq(d, &self.drawing)) {
            under_way.remove(self.key);
        }
        drop(under_way);
        self.drawing.end(None);
    }
}

/// Rendered graphs by normalised query, bounded in bytes, least recently used out first.
pub struct GraphCache {
    capacity: usize,
    lru: Mutex<Lru>,
    /// Graphs being drawn, by key.
    drawing: Mutex<HashMap<String, Arc<Drawing>>>,
    /// Distinguishes this process's ETags from an earlier one's.
    nonce: u64,
    serial: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    evicted: AtomicU64,
}

impl GraphCache {
    /// A cache holding at most `capacity_bytes` of images (plus a little bookkeeping
    /// each); 0 turns it off.
    pub fn new(capacity_bytes: usize) -> GraphCache {
        GraphCache {
            capacity: capacity_bytes,
            lru: Mutex::new(Lru::default()),
            drawing: Mutex::new(HashMap::new()),
            nonce: rand::random(),
            serial: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn under_way(&self) -> MutexGuard<'_, HashMap<String, Arc<Drawing>>> {
        self.drawing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The graph for `key` at `range`: the kept one while its inputs are unchanged,
    /// else the one another request is drawing right now (waiting for it), else one
    /// drawn here by `draw` and kept. Counts a hit, a coalesced request or a miss.
    ///
    /// # Errors
    /// Whatever `draw` returns; nothing is kept then, and the requests that waited for
    /// this drawing draw the graph themselves.
    pub fn get_or_draw<E>(
        &self,
        key: String,
        src: &dyn DashboardSource,
        range: (i64, i64),
        draw: impl FnOnce() -> Result<(Bytes, Inputs), E>,
    ) -> Result<Cached, E> {
        if let Some(kept) = self.lookup(&key, src, range) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(kept);
        }
        let drawing = Arc::new(Drawing::default());
        let other = match self.under_way().entry(key.clone()) {
            Slot::Occupied(other) => Some(other.get().clone()),
            Slot::Vacant(v) => {
                v.insert(drawing.clone());
                None
            }
        };
        if let Some(other) = other {
            if let Some(graph) = other.wait(WAIT_FOR_DRAWING) {
                self.coalesced.fetch_add(1, Ordering::Relaxed);
                return Ok(graph);
            }
            // Announced only when no other drawing is: after a failed or slow one, the
            // requests that waited draw side by side rather than one after another.
            self.under_way().entry(key.clone()).or_insert_with(|| drawing.clone());
        }
        let drawer = Drawer { cache: self, key: &key, drawing };
        self.misses.fetch_add(1, Ordering::Relaxed);
        let (bytes, inputs) = draw()?;
        let graph = self.insert(key.clone(), bytes, inputs, range);
        drawer.drawing.end(Some(graph.clone()));
        drop(drawer);
        Ok(graph)
    }

    /// The kept graph for `key` when its inputs are unchanged for a request of range
    /// `range`. The source is read without the cache's lock.
    fn lookup(&self, key: &str, src: &dyn DashboardSource, range: (i64, i64)) -> Option<Cached> {
        let found = {
            let lru = self.lock();
            lru.map.get(key).map(|e| (e.cached.clone(), e.inputs.clone(), e.drawn))
        };
        let valid = found.and_then(|(cached, inputs, drawn)| {
            (drawn.1 - drawn.0 == range.1 - range.0 && inputs.still_valid(src, drawn, range)).then_some(cached)
        });
        let cached = valid?;
        let mut lru = self.lock();
        lru.tick += 1;
        let tick = lru.tick;
        if let Some(e) = lru.map.get_mut(key) {
            let old = std::mem::replace(&mut e.used, tick);
            lru.order.remove(&old);
            lru.order.insert(tick, key.to_owned());
        }
        Some(cached)
    }

    /// Keeps a graph drawn for `range` from `inputs` (unless something it read is not
    /// vouched for, or it alone is larger than a quarter of the budget) and returns it
    /// with its ETag.
    pub fn insert(&self, key: String, bytes: Bytes, inputs: Inputs, range: (i64, i64)) -> Cached {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let cached = Cached { bytes, etag: format!("\"{:016x}-{serial:x}\"", self.nonce).into() };
        let size = cached.bytes.len() + key.len() + ENTRY_OVERHEAD;
        if !self.enabled() || inputs.unvouched || size > self.capacity / 4 {
            return cached;
        }
        let mut lru = self.lock();
        lru.remove(&key);
        while lru.bytes + size > self.capacity {
            let Some((_, oldest)) = lru.order.pop_first() else { break };
            if let Some(e) = lru.map.remove(&oldest) {
                lru.bytes -= e.size;
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        lru.tick += 1;
        let used = lru.tick;
        lru.order.insert(used, key.clone());
        lru.bytes += size;
        lru.map.insert(key, Entry { cached: cached.clone(), inputs: Arc::new(inputs), drawn: range, used, size });
        cached
    }

    pub fn stats(&self) -> CacheStats {
        let lru = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            entries: lru.map.len(),
            bytes: lru.bytes,
            capacity_bytes: self.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source whose every series has 15 s rows, the newest at `NEWEST`.
    struct Rows;
    const NEWEST: i64 = 1_700_086_395;

    impl DashboardSource for Rows {
        fn clusters(&self) -> Vec<ClusterInfo> {
            Vec::new()
        }
        fn hosts(&self, _: &str, _: &str) -> Option<Vec<HostInfo>> {
            None
        }
        fn host(&self, _: Option<&str>, _: &str) -> Option<HostDetail> {
            None
        }
        fn fetch(&self, _: &SeriesRef<'_>, _: Cf, start: i64, _: i64, _: u64) -> Result<Option<Fetched>, String> {
            Ok(Some(Fetched { start, step: 15, values: Vec::new() }))
        }
        fn newest_row(&self, _: &SeriesRef<'_>, _: Cf, _: i64, _: i64, _: u64) -> Option<(i64, i64)> {
            Some((15, NEWEST))
        }
        fn checks(&self) -> Vec<CheckInfo> {
            Vec::new()
        }
        fn history(&self, _: Option<&str>, _: Option<&str>, _: usize) -> Vec<HistoryEntry> {
            Vec::new()
        }
        fn downtimes(&self) -> Vec<DowntimeInfo> {
            Vec::new()
        }
        fn comments(&self) -> Vec<CommentInfo> {
            Vec::new()
        }
        fn health(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn act(&self, _: Action) -> BoxFuture<Result<String, String>> {
            Box::pin(async { Err(String::new()) })
        }
    }

    #[test]
    fn a_graph_is_valid_while_its_range_stays_in_the_same_rows() {
        let src: Arc<dyn DashboardSource> = Arc::new(Rows);
        let drawn = (1_700_000_000, 1_700_086_400);
        let rec = Recorder::new(src.clone());
        rec.fetch(&SeriesRef { cluster: "c", host: "h", metric: "m" }, Cf::Average, drawn.0, drawn.1, 163).unwrap();
        let inputs = rec.finish();
        let at = |shift: i64| inputs.still_valid(src.as_ref(), drawn, (drawn.0 + shift, drawn.1 + shift));
        // 1_700_000_000 is 5 s into a 15 s row: the same rows for 9 more seconds.
        assert!(at(0) && at(9));
        assert!(!at(10), "the range moved into the next row");
        assert!(!at(-6), "and the previous one");
    }

    #[test]
    fn a_request_waiting_for_a_drawing_that_fails_draws_the_graph_itself() {
        let cache = GraphCache::new(1 << 20);
        let range = (1_700_000_000, 1_700_086_400);
        let drawn = |src: &Arc<dyn DashboardSource>| {
            let rec = Recorder::new(src.clone());
            rec.fetch(&SeriesRef { cluster: "c", host: "h", metric: "m" }, Cf::Average, range.0, range.1, 163)?;
            Ok::<_, String>((Bytes::from_static(b"graph"), rec.finish()))
        };
        let src: Arc<dyn DashboardSource> = Arc::new(Rows);
        let started = std::sync::Barrier::new(2);
        let waited = std::thread::scope(|s| {
            let failing = s.spawn(|| {
                cache.get_or_draw("g".into(), src.as_ref(), range, || {
                    started.wait();
                    std::thread::sleep(Duration::from_millis(300));
                    Err("storage failed".to_owned())
                })
            });
            started.wait();
            let t = std::time::Instant::now();
            let r = cache.get_or_draw("g".into(), src.as_ref(), range, || drawn(&src));
            let waited = t.elapsed();
            assert_eq!(failing.join().unwrap().err().as_deref(), Some("storage failed"));
            assert_eq!(r.map(|c| c.bytes), Ok(Bytes::from_static(b"graph")));
            waited
        });
        assert!(waited >= Duration::from_millis(200), "it waited for the first drawing: {waited:?}");
        assert!(waited < WAIT_FOR_DRAWING / 2, "and not for its time limit: {waited:?}");
        let st = cache.stats();
        assert_eq!((st.misses, st.coalesced, st.hits, st.entries), (2, 0, 0, 1), "{st:?}");
        // The graph drawn second is kept for whoever asks next.
        assert!(cache.get_or_draw("g".into(), src.as_ref(), range, || Err("not drawn again".to_owned())).is_ok());
        assert_eq!(cache.stats().hits, 1);
    }

    #[test]
    fn a_graph_that_is_not_kept_still_goes_to_those_who_waited_for_it() {
        let cache = GraphCache::new(1 << 20);
        let src: Arc<dyn DashboardSource> = Arc::new(Rows);
        let range = (1_700_000_000, 1_700_086_400);
        let started = std::sync::Barrier::new(2);
        let (first, second) = std::thread::scope(|s| {
            let first = s.spawn(|| {
                cache.get_or_draw("g".into(), src.as_ref(), range, || {
                    started.wait();
                    std::thread::sleep(Duration::from_millis(200));
                    // A series that was missing: nothing vouches for the graph.
                    Ok::<_, String>((Bytes::from_static(b"graph"), Inputs { unvouched: true, ..Inputs::default() }))
                })
            });
            started.wait();
            let second = cache.get_or_draw("g".into(), src.as_ref(), range, || Err("drawn twice".to_owned()));
            (first.join().unwrap().unwrap(), second.unwrap())
        });
        assert_eq!((first.etag, first.bytes), (second.etag, second.bytes));
        let st = cache.stats();
        assert_eq!((st.misses, st.coalesced, st.entries), (1, 1, 0), "{st:?}");
    }
}

//! Every host the collector has heard from, with the latest value of each metric.
//!
//! Hosts are keyed by (cluster, authenticated host name), never by source address. The
//! table is a read-mostly map of `Arc<Mutex<Host>>`: a connection looks its host up once
//! at hello and afterwards locks only that host, so thousands of agents do not contend
//! on one lock. Liveness (up/down) is derived from `last_seen` when read, and
//! [`State::sweep`] logs transitions and forgets hosts past their `host_expire`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ganglion_proto::msg::{Facts, MetricKind, MetricMeta};
use ganglion_store::engine::SeriesId;
use serde::Serialize;

use crate::config::ClusterConfig;

pub type HostKey = (String, String);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent between statements, so a panic in
    // another holder leaves nothing half-written that matters.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One metric of one host.
#[derive(Debug, Clone)]
pub struct Slot {
    pub meta: MetricMeta,
    /// NaN until the first sample.
    pub value: f64,
    pub time_ms: i64,
    /// The storage series, resolved at the first sample so that later ones are
    /// appended by id without hashing names: `None` not yet resolved, `Some(None)`
    /// refused by the store (a series of another kind has the name). Reset when the
    /// kind changes; an id gone stale by a removal is noticed by the append.
    pub series: Option<Option<SeriesId>>,
}

/// Sequence bookkeeping for one agent run, so tests and operators can see that no
/// batch was lost or applied twice.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeqStats {
    pub run: u64,
    pub first: u64,
    pub last: u64,
    /// Batches missing between `first` and `last`.
    pub gaps: u64,
    /// Batches received again and not applied.
    pub duplicates: u64,
    pub batches: u64,
}

#[derive(Debug)]
pub struct Host {
    pub cluster: String,
    pub name: String,
    pub facts: Facts,
    pub agent_version: String,
    pub interval_secs: u32,
    pub peer: String,
    pub slots: Vec<Slot>,
    pub by_name: HashMap<String, usize>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub last_seen: Instant,
    pub seq: SeqStats,
    pub connections: u32,
    /// Whether the host was up at the last sweep, to log transitions once.
    pub was_up: bool,
}

impl Host {
    /// A host nothing has been heard from yet.
    pub fn new(cluster: &str, name: &str, peer: String) -> Host {
        Host {
            cluster: cluster.to_owned(),
            name: name.to_owned(),
            facts: Facts::default(),
            agent_version: String::new(),
            interval_secs: 15,
            peer,
            slots: Vec::new(),
            by_name: HashMap::new(),
            first_seen_ms: now_ms(),
            last_seen_ms: now_ms(),
            last_seen: Instant::now(),
            seq: SeqStats::default(),
            connections: 0,
            was_up: true,
        }
    }

    /// The slot for a metric, created on first sight; an existing slot takes the newest
    /// metadata (an agent upgrade may change a description or unit).
    pub fn slot_for(&mut self, meta: &MetricMeta) -> usize {
        if let Some(&i) = self.by_name.get(&meta.name) {
            if self.slots[i].meta != *meta {
                if self.slots[i].meta.kind != meta.kind {
                    self.slots[i].series = None;
                }
                self.slots[i].meta = meta.clone();
            }
            return i;
        }
        let i = self.slots.len();
        self.slots.push(Slot { meta: meta.clone(), value: f64::NAN, time_ms: 0, series: None });
        self.by_name.insert(meta.name.clone(), i);
        i
    }

    /// Records a batch's place in the sequence; returns false for a duplicate.
    pub fn note_seq(&mut self, run: u64, seq: u64) -> bool {
        let s = &mut self.seq;
        if s.run != run || s.batches == 0 {
            *s = SeqStats { run, first: seq, last: seq, gaps: 0, duplicates: 0, batches: 1 };
            return true;
        }
        if seq <= s.last {
            s.duplicates += 1;
            return false;
        }
        s.gaps += seq - s.last - 1;
        s.last = seq;
        s.batches += 1;
        true
    }
}

/// What the collector knows.
pub struct State {
    pub clusters: BTreeMap<String, ClusterConfig>,
    hosts: RwLock<HashMap<HostKey, Arc<Mutex<Host>>>>,
}

/// Liveness rule of a host: down after `host_timeout`, or four of its intervals.
pub fn timeout_of(cluster: &ClusterConfig, interval_secs: u32) -> Duration {
    cluster.host_timeout.unwrap_or(Duration::from_secs(4 * u64::from(interval_secs.max(1))))
}

impl State {
    pub fn new(clusters: BTreeMap<String, ClusterConfig>) -> State {
        State { clusters, hosts: RwLock::new(HashMap::new()) }
    }

    /// Finds or registers a host at hello time.
    pub fn host(&self, cluster: &str, name: &str, peer: String) -> Arc<Mutex<Host>> {
        let key = (cluster.to_owned(), name.to_owned());
        if let Some(h) = self.hosts.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return h.clone();
        }
        let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(key)
            .or_insert_with(|| {
                tracing::info!(cluster, host = name, %peer, "New host registered.");
                Arc::new(Mutex::new(Host::new(cluster, name, peer)))
            })
            .clone()
    }

    fn all(&self) -> Vec<Arc<Mutex<Host>>> {
        self.hosts.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn host_count(&self) -> usize {
        self.hosts.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn is_up(&self, h: &Host, now: Instant) -> bool {
        let Some(c) = self.clusters.get(&h.cluster) else { return false };
        now.duration_since(h.last_seen) < timeout_of(c, h.interval_secs)
    }

    /// Logs up/down transitions and forgets hosts silent past their `host_expire`;
    /// returns the forgotten hosts with their metric names, so their series can go too.
    pub fn sweep(&self, now: Instant) -> Vec<(HostKey, Vec<String>)> {
        let mut expired = Vec::new();
        for h in self.all() {
            let mut h = lock(&h);
            let up = self.is_up(&h, now);
            if up != h.was_up {
                h.was_up = up;
                if up {
                    tracing::info!(cluster = %h.cluster, host = %h.name, "Host is up again.");
                } else {
                    tracing::warn!(cluster = %h.cluster, host = %h.name, silent_secs = now.duration_since(h.last_seen).as_secs(), "Host is down.");
                }
            }
            let expire = self.clusters.get(&h.cluster).and_then(|c| c.host_expire);
            if let Some(expire) = expire {
                if h.connections == 0 && now.duration_since(h.last_seen) >= expire {
                    let metrics = h.slots.iter().map(|s| s.meta.name.clone()).collect();
                    expired.push(((h.cluster.clone(), h.name.clone()), metrics));
                }
            }
        }
        if !expired.is_empty() {
            let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
            for (key, _) in &expired {
                tracing::info!(cluster = %key.0, host = %key.1, "Host expired and forgotten.");
                hosts.remove(key);
            }
        }
        expired
    }

    /// Liveness of the agent host of this name in any cluster (`None`: no such host).
    pub fn is_up_by_name(&self, name: &str, now: Instant) -> Option<bool> {
        // Copied out first: a host's mutex is never taken under the map's lock.
        let found: Vec<Arc<Mutex<Host>>> = {
            let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
            self.clusters.keys().filter_map(|c| hosts.get(&(c.clone(), name.to_owned())).cloned()).collect()
        };
        if found.is_empty() {
            return None;
        }
        Some(found.iter().any(|h| self.is_up(&lock(h), now)))
    }

    /// Whether a host is known (it may have come back after it expired).
    pub fn has_host(&self, cluster: &str, name: &str) -> bool {
        self.hosts.read().unwrap_or_else(|e| e.into_inner()).contains_key(&(cluster.to_owned(), name.to_owned()))
    }

    /// Calls `f` with every host and whether it is up, one host locked at a time, so
    /// the checks engine reads latest values without copying them.
    pub fn visit_hosts(&self, now: Instant, mut f: impl FnMut(&Host, bool)) {
        for h in self.all() {
            let h = lock(&h);
            let up = self.is_up(&h, now);
            f(&h, up);
        }
    }

    /// Clusters with host counts, for the API.
    pub fn clusters_view(&self, now: Instant) -> Vec<ClusterView> {
        let mut out: BTreeMap<&str, ClusterView> = self
            .clusters
            .keys()
            .map(|c| (c.as_str(), ClusterView { name: c.clone(), hosts: 0, hosts_up: 0, hosts_down: 0 }))
            .collect();
        for h in self.all() {
            let h = lock(&h);
            let up = self.is_up(&h, now);
            if let Some(v) = out.get_mut(h.cluster.as_str()) {
                v.hosts += 1;
                if up {
                    v.hosts_up += 1;
                } else {
                    v.hosts_down += 1;
                }
            }
        }
        out.into_values().collect()
    }

    /// Hosts of one cluster, sorted by name; `None` for an unknown cluster.
    pub fn hosts_view(&self, cluster: &str, now: Instant) -> Option<Vec<HostSummary>> {
        if !self.clusters.contains_key(cluster) {
            return None;
        }
        let mut out: Vec<HostSummary> = self
            .all()
            .iter()
            .filter_map(|h| {
                let h = lock(h);
                (h.cluster == cluster).then(|| self.summary(&h, now))
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Some(out)
    }

    /// One host with every metric; `cluster` narrows the search when a name is in
    /// several clusters.
    pub fn host_view(&self, name: &str, cluster: Option<&str>, now: Instant) -> Option<HostDetail> {
        let mut found: Vec<Arc<Mutex<Host>>> = {
            let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
            match cluster {
                // The key is known: no walk over every host.
                Some(c) => hosts.get(&(c.to_owned(), name.to_owned())).cloned().into_iter().collect(),
                None => hosts.iter().filter(|((_, n), _)| n == name).map(|(_, h)| h.clone()).collect(),
            }
        };
        found.sort_by_key(|h| lock(h).cluster.clone());
        let h = found.first()?;
        let h = lock(h);
        let mut metrics: Vec<MetricView> = h
            .slots
            .iter()
            .filter(|s| s.time_ms > 0)
            .map(|s| MetricView {
                name: s.meta.name.clone(),
                value: s.value,
                unit: s.meta.unit.clone(),
                kind: s.meta.kind,
                group: s.meta.group.clone(),
                description: s.meta.description.clone(),
                time_ms: s.time_ms,
            })
            .collect();
        metrics.sort_by(|a, b| a.group.cmp(&b.group).then_with(|| a.name.cmp(&b.name)));
        Some(HostDetail { summary: self.summary(&h, now), facts: h.facts.clone(), seq: h.seq.clone(), metrics })
    }

    /// Unit of one metric of a host (`None`: no such host or metric yet), without
    /// building the host's view: graphs ask for it on every drawing.
    pub fn metric_unit(&self, cluster: &str, name: &str, metric: &str) -> Option<String> {
        let h = self
            .hosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(cluster.to_owned(), name.to_owned()))
            .cloned()?;
        let h = lock(&h);
        let slot = h.by_name.get(metric).and_then(|&i| h.slots.get(i))?;
        (slot.time_ms > 0).then(|| slot.meta.unit.clone())
    }

    fn summary(&self, h: &Host, now: Instant) -> HostSummary {
        let timeout = self.clusters.get(&h.cluster).map_or(Duration::ZERO, |c| timeout_of(c, h.interval_secs));
        HostSummary {
            name: h.name.clone(),
            cluster: h.cluster.clone(),
            up: self.is_up(h, now),
            last_seen_ms: h.last_seen_ms,
            silent_secs: now.duration_since(h.last_seen).as_secs_f64(),
            timeout_secs: timeout.as_secs(),
            first_seen_ms: h.first_seen_ms,
            agent_version: h.agent_version.clone(),
            interval_secs: h.interval_secs,
            peer: h.peer.clone(),
            connected: h.connections > 0,
            metrics: h.slots.len(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub hosts: usize,
    pub hosts_up: usize,
    pub hosts_down: usize,
}

#[derive(Debug, Serialize)]
pub struct HostSummary {
    pub name: String,
    pub cluster: String,
    pub up: bool,
    pub last_seen_ms: i64,
    pub silent_secs: f64,
    pub timeout_secs: u64,
    pub first_seen_ms: i64,
    pub agent_version: String,
    pub interval_secs: u32,
    pub peer: String,
    pub connected: bool,
    pub metrics: usize,
}

#[derive(Debug, Serialize)]
pub struct MetricView {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub kind: MetricKind,
    pub group: String,
    pub description: String,
    pub time_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct HostDetail {
    #[serde(flatten)]
    pub summary: HostSummary,
    pub facts: Facts,
    pub seq: SeqStats,
    pub metrics: Vec<MetricView>,
}

//! What the dashboard reads and asks: the [`DashboardSource`] trait the collector
//! implements, and the plain data types that cross it.
//!
//! The web crate never depends on the collector: the collector passes an
//! `Arc<dyn DashboardSource>` to [`crate::router`]. Reads are synchronous and may block
//! (storage reads go to disk), so the routes call them on the blocking pool; admin
//! actions go to the checks engine and return a future.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// A boxed future, for the one async method of the trait.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One cluster with its host counts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterInfo {
    pub name: String,
    pub hosts: usize,
    pub hosts_up: usize,
    pub hosts_down: usize,
}

/// One host as the cluster view lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostInfo {
    pub cluster: String,
    pub name: String,
    pub up: bool,
    /// Seconds since the host last reported.
    pub silent_secs: f64,
    pub agent_version: String,
    /// Latest value of the metric asked for (`None`: the host has no such metric yet).
    pub value: Option<f64>,
    /// Latest `load_one`, for the tile colour of hosts without problems.
    pub load_one: Option<f64>,
    /// Latest `cpu_num`, to judge the load against.
    pub cpu_num: Option<f64>,
}

/// One metric of a host with its latest value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricInfo {
    pub name: String,
    /// NaN when unknown (serialised as `null`).
    pub value: Option<f64>,
    pub unit: String,
    /// The agent's group (`cpu`, `memory`, `disk`, `network`, `apache`, ...).
    pub group: String,
    /// `gauge`, `counter`, ... : counters are stored and shown as rates.
    pub kind: String,
    pub description: String,
    pub time_ms: i64,
}

/// One host with everything the host view shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostDetail {
    pub host: HostInfo,
    /// The agent's facts (OS, kernel, CPUs, memory, ...), as name/value pairs.
    pub facts: Vec<(String, String)>,
    pub metrics: Vec<MetricInfo>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub interval_secs: u32,
}

/// Names one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesRef<'a> {
    pub cluster: &'a str,
    pub host: &'a str,
    pub metric: &'a str,
}

/// Consolidation function of an archive, as rrdtool names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Cf {
    Average,
    Min,
    Max,
    Last,
}

/// Rows read from storage: value `i` is labelled `start + (i + 1) * step` as `rrdtool
/// fetch` labels rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub start: i64,
    pub step: i64,
    pub values: Vec<Option<f64>>,
}

impl Fetched {
    /// `(time, value)` pairs.
    pub fn points(&self) -> Vec<(i64, Option<f64>)> {
        self.values.iter().enumerate().map(|(i, v)| (self.start + (i as i64 + 1) * self.step, *v)).collect()
    }
}

/// One check's current state (host check when `service` is empty).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct CheckInfo {
    pub cluster: String,
    pub host: String,
    pub service: String,
    pub kind: String,
    /// `OK`, `WARNING`, `CRITICAL`, `UNKNOWN`; `UP`, `DOWN`, `UNREACHABLE` for hosts.
    pub state: String,
    pub state_type: String,
    pub attempt: u32,
    pub max_attempts: u32,
    pub last_check: Option<i64>,
    pub last_state_change: Option<i64>,
    pub output: String,
    pub long_output: String,
    pub perfdata: String,
    pub pending: bool,
    pub problem: bool,
    pub host_up: bool,
    pub acknowledged: bool,
    pub ack_author: Option<String>,
    pub ack_comment: Option<String>,
    pub in_downtime: bool,
    pub flapping: bool,
    pub handled: bool,
    /// Series of the host that hold this check's performance data (plugin checks).
    pub perfdata_series: Vec<String>,
}

impl CheckInfo {
    /// Severity for sorting and tile colours: 0 OK/UP/pending, 1 WARNING, 2 UNKNOWN,
    /// 3 CRITICAL/DOWN/UNREACHABLE.
    pub fn severity(&self) -> u8 {
        if self.pending {
            return 0;
        }
        match self.state.as_str() {
            "OK" | "UP" => 0,
            "WARNING" => 1,
            "UNKNOWN" => 2,
            _ => 3,
        }
    }
}

/// One state change of a check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct HistoryEntry {
    pub time: i64,
    pub host: String,
    pub service: String,
    pub state: String,
    pub state_type: String,
    pub attempt: u32,
    pub output: String,
}

/// A scheduled downtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct DowntimeInfo {
    pub id: u64,
    pub host: String,
    pub service: Option<String>,
    pub author: String,
    pub comment: String,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub in_effect: bool,
}

/// A comment on a host or service (acknowledgements and downtimes leave one too).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct CommentInfo {
    pub id: u64,
    pub host: String,
    pub service: Option<String>,
    pub time: i64,
    pub author: String,
    pub text: String,
    pub source: String,
}

/// An operator action from the dashboard, carried out for a signed-in admin.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    Acknowledge {
        cluster: Option<String>,
        host: String,
        service: Option<String>,
        author: String,
        comment: String,
        sticky: bool,
    },
    RemoveAck {
        cluster: Option<String>,
        host: String,
        service: Option<String>,
    },
    Downtime {
        host: String,
        service: Option<String>,
        start: i64,
        end: i64,
        author: String,
        comment: String,
    },
    RemoveDowntime {
        id: u64,
    },
    /// Run the check at the next scheduling round instead of at its interval.
    Recheck {
        cluster: Option<String>,
        host: String,
        service: Option<String>,
    },
}

/// Everything the dashboard reads from the collector.
pub trait DashboardSource: Send + Sync + 'static {
    /// Every cluster, configured ones included when they have no host yet.
    fn clusters(&self) -> Vec<ClusterInfo>;
    /// Hosts of a cluster with the latest value of `metric`; `None` for an unknown cluster.
    fn hosts(&self, cluster: &str, metric: &str) -> Option<Vec<HostInfo>>;
    /// One host; `cluster` narrows the search when the name is in several clusters.
    fn host(&self, cluster: Option<&str>, host: &str) -> Option<HostDetail>;
    /// Unit of a host's metric; `None` for an unknown host or metric. The default reads
    /// [`DashboardSource::host`]; graphs ask on every drawing, so a source with many
    /// hosts answers it directly.
    fn metric_unit(&self, cluster: &str, host: &str, metric: &str) -> Option<String> {
        self.host(Some(cluster), host)?.metrics.into_iter().find(|m| m.name == metric).map(|m| m.unit)
    }
    /// Reads one series the way `rrdtool fetch` does (archive chosen for `resolution`
    /// seconds per row). `Ok(None)` for a series that does not exist.
    ///
    /// # Errors
    /// A storage failure or a consolidation the series does not keep, as text.
    fn fetch(
        &self,
        series: &SeriesRef<'_>,
        cf: Cf,
        start: i64,
        end: i64,
        resolution: u64,
    ) -> Result<Option<Fetched>, String>;
    /// `(step, time of the newest complete row)` of the archive [`DashboardSource::fetch`]
    /// would read with these arguments, without reading rows. The graph cache keeps a
    /// graph while this stays the same for every series it drew. `None` (the default):
    /// unknown, and graphs reading such a source are drawn every time.
    fn newest_row(&self, series: &SeriesRef<'_>, cf: Cf, start: i64, end: i64, resolution: u64) -> Option<(i64, i64)> {
        let _ = (series, cf, start, end, resolution);
        None
    }
    /// Every check's current state.
    fn checks(&self) -> Vec<CheckInfo>;
    /// Checks of a cluster and/or host, or only the problems (non-OK, not UP). The
    /// default filters [`DashboardSource::checks`]; a source with many checks narrows
    /// before building them.
    fn checks_where(&self, cluster: Option<&str>, host: Option<&str>, problems: bool) -> Vec<CheckInfo> {
        self.checks()
            .into_iter()
            .filter(|c| {
                cluster.is_none_or(|x| x == c.cluster)
                    && host.is_none_or(|x| x == c.host)
                    && (!problems || (c.problem && !c.pending))
            })
            .collect()
    }
    /// Worst check severity ([`CheckInfo::severity`]) of each host of a cluster, for
    /// tile colours.
    fn worst_states(&self, cluster: &str) -> HashMap<String, u8> {
        let mut m: HashMap<String, u8> = HashMap::new();
        for c in self.checks().into_iter().filter(|c| c.cluster == cluster) {
            let sev = c.severity();
            let e = m.entry(c.host).or_insert(0);
            *e = (*e).max(sev);
        }
        m
    }
    /// State changes, newest first.
    fn history(&self, host: Option<&str>, service: Option<&str>, limit: usize) -> Vec<HistoryEntry>;
    fn downtimes(&self) -> Vec<DowntimeInfo>;
    fn comments(&self) -> Vec<CommentInfo>;
    /// The collector's own health (`/api/v1/health`'s document).
    fn health(&self) -> serde_json::Value;
    /// The notification outbox as `GET /api/v1/notifications` shows it (`{"counts":
    /// {...}, "messages": [...]}`), when the collector sends notifications; `None`
    /// leaves the outbox off the health and check pages.
    fn notifications(&self) -> Option<serde_json::Value> {
        None
    }
    /// Carries out an admin action; `Ok` carries a short confirmation.
    fn act(&self, action: Action) -> BoxFuture<Result<String, String>>;
}

//! The dashboard's data: [`ganglion_web::DashboardSource`] over the collector's host
//! table, storage and checks engine. The web crate defines what it reads; this module
//! is the only place that knows both sides.

use std::sync::Arc;
use std::time::Instant;

use ganglion_checks::downtime::{DowntimeSpec, Mode, Schedule, Target};
use ganglion_store::engine::{ReadError, SeriesKey};
use ganglion_web::source::{
    Action, BoxFuture, CheckInfo, ClusterInfo, CommentInfo, DowntimeInfo, Fetched, HistoryEntry, HostDetail, HostInfo,
    MetricInfo,
};
use ganglion_web::DashboardSource;

use crate::api::ApiContext;
use crate::engine::Control;

fn check_info(c: crate::engine::CheckView) -> CheckInfo {
    // Plugin results' performance data is stored as series `<service>_<label>`.
    let perfdata_series = if c.kind == "active" && !c.perfdata.is_empty() {
        ganglion_checks::plugin::parse_perfdata(&c.perfdata)
            .data
            .into_iter()
            .map(|d| crate::engine::perfdata_metric(&c.service, &d.label))
            .filter(|m| ganglion_proto::name::validate(ganglion_proto::name::NameKind::Metric, m).is_ok())
            .collect()
    } else {
        Vec::new()
    };
    CheckInfo {
        perfdata_series,
        cluster: c.cluster,
        host: c.host,
        service: c.service,
        kind: c.kind.to_owned(),
        state: c.state,
        state_type: c.state_type,
        attempt: c.attempt,
        max_attempts: c.max_attempts,
        last_check: c.last_check,
        last_state_change: c.last_state_change,
        output: c.output,
        long_output: c.long_output,
        perfdata: c.perfdata,
        pending: c.pending,
        problem: c.problem,
        host_up: c.host_up,
        acknowledged: c.acknowledged,
        ack_author: c.ack.as_ref().map(|a| a.author.clone()),
        ack_comment: c.ack.map(|a| a.comment),
        in_downtime: c.in_downtime,
        flapping: c.flapping,
        handled: c.handled,
    }
}

fn store_cf(cf: ganglion_web::source::Cf) -> ganglion_store::rrd::Cf {
    use ganglion_store::rrd::Cf as S;
    match cf {
        ganglion_web::source::Cf::Average => S::Average,
        ganglion_web::source::Cf::Min => S::Min,
        ganglion_web::source::Cf::Max => S::Max,
        ganglion_web::source::Cf::Last => S::Last,
    }
}

/// A dashboard read in the store's terms. `fetch` and `newest_row` must normalise alike:
/// the graph cache compares what one answered with what the other reads.
fn store_read(
    series: &ganglion_web::source::SeriesRef<'_>,
    start: i64,
    end: i64,
    resolution: u64,
) -> (SeriesKey, u64, u64, u64) {
    (
        SeriesKey::new(series.cluster, series.host, series.metric),
        start.max(0) as u64,
        end.max(1) as u64,
        resolution.max(1),
    )
}

/// The collector as the dashboard sees it.
pub struct Dashboard {
    pub ctx: Arc<ApiContext>,
}

fn known(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl DashboardSource for Dashboard {
    fn clusters(&self) -> Vec<ClusterInfo> {
        self.ctx
            .state
            .clusters_view(Instant::now())
            .into_iter()
            .map(|c| ClusterInfo { name: c.name, hosts: c.hosts, hosts_up: c.hosts_up, hosts_down: c.hosts_down })
            .collect()
    }

    fn hosts(&self, cluster: &str, metric: &str) -> Option<Vec<HostInfo>> {
        if !self.ctx.state.clusters.contains_key(cluster) {
            return None;
        }
        let now = Instant::now();
        let mut out = Vec::new();
        self.ctx.state.visit_hosts(now, |h, up| {
            if h.cluster != cluster {
                return;
            }
            let value_of = |m: &str| h.by_name.get(m).and_then(|&i| h.slots.get(i)).and_then(|s| known(s.value));
            out.push(HostInfo {
                cluster: h.cluster.clone(),
                name: h.name.clone(),
                up,
                silent_secs: now.duration_since(h.last_seen).as_secs_f64(),
                agent_version: h.agent_version.clone(),
                value: if metric.is_empty() { None } else { value_of(metric) },
                load_one: value_of("load_one"),
                cpu_num: value_of("cpu_num").or_else(|| (h.facts.cpu_count > 0).then(|| f64::from(h.facts.cpu_count))),
            });
        });
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Some(out)
    }

    fn host(&self, cluster: Option<&str>, host: &str) -> Option<HostDetail> {
        let d = self.ctx.state.host_view(host, cluster, Instant::now())?;
        let value_of = |m: &str| d.metrics.iter().find(|x| x.name == m).and_then(|x| known(x.value));
        let f = &d.facts;
        let mut facts = vec![
            ("hostname".to_owned(), f.hostname.clone()),
            ("os".to_owned(), f.os.clone()),
            ("kernel".to_owned(), f.kernel.clone()),
            ("arch".to_owned(), f.arch.clone()),
            ("cpu_count".to_owned(), f.cpu_count.to_string()),
            ("mem_total".to_owned(), ganglion_web::graph::format_si(f.mem_total_bytes as f64) + "B"),
            ("addresses".to_owned(), f.addresses.join(", ")),
            ("booted".to_owned(), ganglion_web::html::time(f.boottime)),
            ("peer".to_owned(), d.summary.peer.clone()),
        ];
        facts.extend(f.tags.iter().map(|(k, v)| (format!("tag {k}"), v.clone())));
        Some(HostDetail {
            host: HostInfo {
                cluster: d.summary.cluster.clone(),
                name: d.summary.name.clone(),
                up: d.summary.up,
                silent_secs: d.summary.silent_secs,
                agent_version: d.summary.agent_version.clone(),
                value: None,
                load_one: value_of("load_one"),
                cpu_num: value_of("cpu_num"),
            },
            facts,
            metrics: d
                .metrics
                .iter()
                .map(|m| MetricInfo {
                    name: m.name.clone(),
                    value: known(m.value),
                    unit: m.unit.clone(),
                    group: m.group.clone(),
                    kind: format!("{:?}", m.kind).to_lowercase(),
                    description: m.description.clone(),
                    time_ms: m.time_ms,
                })
                .collect(),
            first_seen_ms: d.summary.first_seen_ms,
            last_seen_ms: d.summary.last_seen_ms,
            interval_secs: d.summary.interval_secs,
        })
    }

    fn fetch(
        &self,
        series: &ganglion_web::source::SeriesRef<'_>,
        cf: ganglion_web::source::Cf,
        start: i64,
        end: i64,
        resolution: u64,
    ) -> Result<Option<Fetched>, String> {
        let (key, start, end, resolution) = store_read(series, start, end, resolution);
        match self.ctx.store.fetch_column(&key, store_cf(cf), start, end, resolution) {
            Ok(f) => Ok(Some(Fetched {
                start: f.start as i64,
                step: f.step as i64,
                values: f.values.into_iter().map(known).collect(),
            })),
            Err(ReadError::NotFound) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn metric_unit(&self, cluster: &str, host: &str, metric: &str) -> Option<String> {
        self.ctx.state.metric_unit(cluster, host, metric)
    }

    fn newest_row(
        &self,
        series: &ganglion_web::source::SeriesRef<'_>,
        cf: ganglion_web::source::Cf,
        start: i64,
        end: i64,
        resolution: u64,
    ) -> Option<(i64, i64)> {
        let (key, start, end, resolution) = store_read(series, start, end, resolution);
        let (step, row) = self.ctx.store.newest_row(&key, store_cf(cf), start, end, resolution).ok()?;
        Some((i64::try_from(step).ok()?, i64::try_from(row).ok()?))
    }

    fn checks(&self) -> Vec<CheckInfo> {
        self.ctx.engine.status().into_iter().map(check_info).collect()
    }

    fn checks_where(&self, cluster: Option<&str>, host: Option<&str>, problems: bool) -> Vec<CheckInfo> {
        self.ctx.engine.status_where(cluster, host, problems).into_iter().map(check_info).collect()
    }

    fn worst_states(&self, cluster: &str) -> std::collections::HashMap<String, u8> {
        self.ctx.engine.worst_states(cluster).into_iter().collect()
    }

    fn history(&self, host: Option<&str>, service: Option<&str>, limit: usize) -> Vec<HistoryEntry> {
        match self.ctx.engine.history(host, service, limit) {
            Ok(rows) => rows
                .into_iter()
                .map(|r| HistoryEntry {
                    time: r.time,
                    host: r.host,
                    service: r.service,
                    state: r.state,
                    state_type: r.state_type,
                    attempt: r.attempt,
                    output: r.output,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "Could not read the state history for the dashboard.");
                Vec::new()
            }
        }
    }

    fn downtimes(&self) -> Vec<DowntimeInfo> {
        self.ctx
            .engine
            .downtimes()
            .into_iter()
            .map(|d| {
                let window = d.active.or(d.next_window);
                let (start, end) = match (&d.spec.schedule, window) {
                    (_, Some(w)) => (Some(w.start), Some(w.end)),
                    (Schedule::Once { start, end }, None) => (Some(*start), Some(*end)),
                    _ => (None, None),
                };
                DowntimeInfo {
                    id: d.id,
                    host: d.spec.target.host.clone(),
                    service: d.spec.target.service.clone(),
                    author: d.spec.author.clone(),
                    comment: d.spec.comment.clone(),
                    start,
                    end,
                    in_effect: d.in_effect,
                }
            })
            .collect()
    }

    fn comments(&self) -> Vec<CommentInfo> {
        self.ctx
            .engine
            .comments()
            .into_iter()
            .map(|c| CommentInfo {
                id: c.id,
                host: c.host,
                service: c.service,
                time: c.time,
                author: c.author,
                text: c.text,
                source: format!("{:?}", c.source).to_lowercase(),
            })
            .collect()
    }

    fn health(&self) -> serde_json::Value {
        crate::api::health_doc(&self.ctx)
    }

    fn notifications(&self) -> Option<serde_json::Value> {
        self.ctx.alerts.outbox(200)
    }

    fn act(&self, action: Action) -> BoxFuture<Result<String, String>> {
        let engine = self.ctx.engine.clone();
        let (control, done) = match action {
            Action::Acknowledge { cluster, host, service, author, comment, sticky } => (
                Control::Ack {
                    cluster,
                    host,
                    service,
                    kind: if sticky {
                        ganglion_checks::ack::AckKind::Sticky
                    } else {
                        ganglion_checks::ack::AckKind::Normal
                    },
                    author,
                    comment,
                    notify: true,
                    persistent: false,
                },
                "Acknowledged.",
            ),
            Action::RemoveAck { cluster, host, service } => {
                (Control::RemoveAck { cluster, host, service }, "Acknowledgement removed.")
            }
            Action::Downtime { host, service, start, end, author, comment } => (
                Control::AddDowntime(DowntimeSpec {
                    target: Target { host, service },
                    schedule: Schedule::Once { start, end },
                    mode: Mode::Fixed,
                    trigger: None,
                    author,
                    comment,
                }),
                "Downtime scheduled.",
            ),
            Action::RemoveDowntime { id } => (Control::RemoveDowntime(id), "Downtime removed."),
            Action::Recheck { cluster, host, service } => {
                (Control::Recheck { cluster, host, service }, "Recheck scheduled for the next round.")
            }
            _ => return Box::pin(async { Err("this collector does not support that action".to_owned()) }),
        };
        Box::pin(async move { engine.control(control).await.map(|_| done.to_owned()).map_err(|e| e.to_string()) })
    }
}

//! JSON API v1 over HTTP, mounted next to the dashboard pages.
//!
//! Errors are JSON objects `{"error": "..."}` with a fitting status code.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::engine::{EngineHandle, PassiveResult};
use crate::state::State;
use crate::stats::Stats;

pub struct ApiContext {
    pub state: Arc<State>,
    pub stats: Arc<Stats>,
    pub started: Instant,
    pub engine: EngineHandle,
    pub store: Arc<ganglion_store::engine::Store>,
}

/// An API failure: status plus a plain message.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub fn router(ctx: Arc<ApiContext>) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/clusters/:cluster/hosts", get(cluster_hosts))
        .route("/api/v1/hosts/:host", get(host))
        .route("/api/v1/series", get(series))
        .route("/api/v1/status", get(status))
        .route("/api/v1/status/problems", get(problems))
        .route("/api/v1/history", get(history))
        .route("/api/v1/checks", get(checks))
        .route("/api/v1/results", axum::routing::post(results))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".into()) })
        .with_state(ctx)
}

async fn health(AxState(ctx): AxState<Arc<ApiContext>>) -> impl IntoResponse {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": ctx.started.elapsed().as_secs_f64(),
        "hosts": ctx.state.host_count(),
        "counters": ctx.stats.snapshot(),
        "checks": checks_counters(ctx.engine.stats()),
        "storage": storage_counters(&ctx.store),
    }))
}

fn storage_counters(store: &ganglion_store::engine::Store) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let s = store.stats();
    json!({
        "series": store.series_count(),
        "received": s.received.load(Relaxed),
        "written": s.written.load(Relaxed),
        "dropped": s.dropped.load(Relaxed),
        "rejected": s.rejected.load(Relaxed),
        "journal_bytes": s.journal_bytes.load(Relaxed),
        "journal_truncated": s.journal_truncated.load(Relaxed),
        "fsyncs": s.fsyncs.load(Relaxed),
        "flushes": s.flushes.load(Relaxed),
        "unflushed_bytes": s.unflushed_bytes.load(Relaxed),
        "corrupt_files": s.corrupt_files.load(Relaxed),
        "quarantined": s.quarantined.load(Relaxed),
        "write_errors": s.write_errors.load(Relaxed),
    })
}

#[derive(Deserialize)]
struct SeriesQuery {
    host: String,
    metric: String,
    cluster: Option<String>,
    cf: Option<String>,
    /// Seconds since the epoch; negative means relative to now (`-3600`).
    start: Option<i64>,
    end: Option<i64>,
    step: Option<u64>,
}

/// `GET /api/v1/series`: one series from storage, as `rrdtool fetch` would return it,
/// merged with samples not yet written to its file.
async fn series(
    AxState(ctx): AxState<Arc<ApiContext>>,
    Query(q): Query<SeriesQuery>,
) -> Result<impl IntoResponse, ApiError> {
    use ganglion_store::rrd::Cf;
    let cf = match q.cf.as_deref().unwrap_or("AVERAGE").to_ascii_uppercase().as_str() {
        "AVERAGE" => Cf::Average,
        "MIN" => Cf::Min,
        "MAX" => Cf::Max,
        "LAST" => Cf::Last,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("cf {} is not AVERAGE, MIN, MAX or LAST", ganglion_proto::name::escaped(other)),
            ))
        }
    };
    let cluster = match q.cluster {
        Some(c) => c,
        None => ctx.state.host_view(&q.host, None, Instant::now()).map(|h| h.summary.cluster).ok_or_else(|| {
            ApiError(StatusCode::NOT_FOUND, format!("no host {}", ganglion_proto::name::escaped(&q.host)))
        })?,
    };
    let now = crate::state::now_ms() / 1000;
    let abs = |t: i64| if t < 0 { now + t } else { t };
    let end = abs(q.end.unwrap_or(now));
    let start = abs(q.start.unwrap_or(end - 3600));
    if start < 0 || end <= start {
        return Err(ApiError(StatusCode::BAD_REQUEST, "start must be before end".into()));
    }
    let key = ganglion_store::engine::SeriesKey::new(&cluster, &q.host, &q.metric);
    let store = ctx.store.clone();
    let step = q.step.unwrap_or(1).max(1);
    let fetched = tokio::task::spawn_blocking(move || store.fetch(&key, cf, start as u64, end as u64, step))
        .await
        .map_err(|e| internal(&e))?;
    let f = match fetched {
        Ok(f) => f,
        Err(ganglion_store::engine::ReadError::NotFound) => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "no series {} of host {}",
                    ganglion_proto::name::escaped(&q.metric),
                    ganglion_proto::name::escaped(&q.host)
                ),
            ))
        }
        Err(e) => return Err(internal(&e)),
    };
    let points: Vec<serde_json::Value> = f
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let v = r.first().copied().filter(|v| v.is_finite());
            json!([f.time(i), v])
        })
        .collect();
    Ok(Json(json!({
        "cluster": cluster,
        "host": q.host,
        "metric": q.metric,
        "cf": q.cf.unwrap_or_else(|| "AVERAGE".into()).to_ascii_uppercase(),
        "start": f.start,
        "end": f.end,
        "step": f.step,
        "points": points,
    })))
}

fn checks_counters(s: &crate::engine::EngineStats) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    json!({
        "received": s.received.load(Relaxed),
        "rejected": s.rejected.load(Relaxed),
        "written": s.written.load(Relaxed),
        "dropped": s.dropped.load(Relaxed),
        "plugins_run": s.plugins_run.load(Relaxed),
        "plugins_timed_out": s.plugins_timed_out.load(Relaxed),
        "db_errors": s.db_errors.load(Relaxed),
    })
}

#[derive(Deserialize)]
struct StatusQuery {
    host: Option<String>,
    cluster: Option<String>,
}

async fn status(AxState(ctx): AxState<Arc<ApiContext>>, Query(q): Query<StatusQuery>) -> impl IntoResponse {
    let mut all = ctx.engine.status();
    all.retain(|c| q.host.as_ref().is_none_or(|h| *h == c.host) && q.cluster.as_ref().is_none_or(|x| *x == c.cluster));
    Json(all)
}

/// Non-OK checks, unhandled first: host problems, then services of hosts that are UP
/// (a DOWN host's services are its own problem, listed after), most severe first,
/// longest-standing first.
async fn problems(AxState(ctx): AxState<Arc<ApiContext>>) -> impl IntoResponse {
    let mut all: Vec<_> = ctx.engine.status().into_iter().filter(|c| c.problem && !c.pending).collect();
    let rank = |s: &str| match s {
        "DOWN" | "UNREACHABLE" | "CRITICAL" => 0,
        "WARNING" => 1,
        "UNKNOWN" => 2,
        _ => 3,
    };
    all.sort_by_key(|c| {
        (!c.service.is_empty(), !c.host_up && !c.service.is_empty(), rank(&c.state), c.last_state_change.unwrap_or(0))
    });
    Json(all)
}

#[derive(Deserialize)]
struct HistoryQuery {
    host: Option<String>,
    service: Option<String>,
    limit: Option<usize>,
}

async fn history(
    AxState(ctx): AxState<Arc<ApiContext>>,
    Query(q): Query<HistoryQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let engine = ctx.engine.clone();
    let rows = tokio::task::spawn_blocking(move || {
        engine.history(q.host.as_deref(), q.service.as_deref(), q.limit.unwrap_or(500).min(10_000))
    })
    .await
    .map_err(|e| internal(&e))?
    .map_err(|e| internal(&e))?;
    Ok(Json(rows))
}

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "API request failed.");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the collector log".into())
}

#[derive(Deserialize)]
struct ChecksQuery {
    host: String,
    cluster: Option<String>,
}

/// The effective checks of a host and where each setting came from.
async fn checks(
    AxState(ctx): AxState<Arc<ApiContext>>,
    Query(q): Query<ChecksQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let cluster = match q.cluster {
        Some(c) => c,
        None => ctx.state.host_view(&q.host, None, Instant::now()).map(|h| h.summary.cluster).ok_or_else(|| {
            ApiError(StatusCode::NOT_FOUND, format!("no host {}", ganglion_proto::name::escaped(&q.host)))
        })?,
    };
    let list: Vec<_> = ctx
        .engine
        .effective(&cluster, &q.host)
        .into_iter()
        .map(|e| {
            json!({
                "service": e.name,
                "kind": format!("{:?}", e.kind),
                "max_check_attempts": e.settings.max_check_attempts,
                "check_interval_secs": e.settings.check_interval_secs,
                "retry_interval_secs": e.settings.retry_interval_secs,
                "origin": e.origin,
            })
        })
        .collect();
    Ok(Json(list))
}

/// A passive result as JSON; `status` is the plugin return code.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultBody {
    host: String,
    #[serde(default)]
    service: String,
    status: i64,
    output: String,
}

/// `POST /api/v1/results`: one result object or a list of them.
async fn results(
    AxState(ctx): AxState<Arc<ApiContext>>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(value) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let items: Vec<ResultBody> = match value {
        serde_json::Value::Array(_) => serde_json::from_value(value),
        v => serde_json::from_value(v).map(|one| vec![one]),
    }
    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad result: {e}")))?;
    let mut outcome = Vec::with_capacity(items.len());
    for r in items {
        let res = ctx
            .engine
            .submit(PassiveResult {
                host: r.host,
                service: r.service,
                code: r.status,
                output: r.output,
                time: crate::state::now_ms() / 1000,
            })
            .await;
        outcome.push(match res {
            Ok(()) => json!({"accepted": true}),
            Err(e) => json!({"accepted": false, "error": e}),
        });
    }
    let status =
        if outcome.iter().all(|o| o["accepted"] == true) { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    Ok((status, Json(outcome)))
}

async fn clusters(AxState(ctx): AxState<Arc<ApiContext>>) -> impl IntoResponse {
    Json(ctx.state.clusters_view(Instant::now()))
}

async fn cluster_hosts(
    AxState(ctx): AxState<Arc<ApiContext>>,
    Path(cluster): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    ctx.state.hosts_view(&cluster, Instant::now()).map(Json).ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, format!("no cluster {}", ganglion_proto::name::escaped(&cluster)))
    })
}

#[derive(Deserialize)]
struct HostQuery {
    cluster: Option<String>,
}

async fn host(
    AxState(ctx): AxState<Arc<ApiContext>>,
    Path(host): Path<String>,
    Query(q): Query<HostQuery>,
) -> Result<impl IntoResponse, ApiError> {
    ctx.state
        .host_view(&host, q.cluster.as_deref(), Instant::now())
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no host {}", ganglion_proto::name::escaped(&host))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn ctx() -> Arc<ApiContext> {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config::demo(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            "0123456789abcdef",
            dir.path(),
        );
        let state = Arc::new(State::new(config.clusters));
        let (engine, _) =
            crate::engine::start(config.engine, state.clone(), tokio_util::sync::CancellationToken::new()).unwrap();
        let store = Arc::new(ganglion_store::engine::Store::open(&dir.path().join("store"), config.storage).unwrap());
        // The engine and the store keep their files open; the directory may go.
        drop(dir);
        Arc::new(ApiContext { state, stats: Arc::new(Stats::default()), started: Instant::now(), engine, store })
    }

    async fn get_json(path: &str) -> (StatusCode, serde_json::Value) {
        let resp = router(ctx()).oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn unknown_host_is_json_404() {
        let (status, body) = get_json("/api/v1/hosts/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "no host \"nope\"");
    }

    #[tokio::test]
    async fn health_lists_rejection_reasons() {
        let (status, body) = get_json("/api/v1/health").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["counters"]["rejected"]["bad_tag"], 0);
        assert_eq!(body["counters"]["rejected_total"], 0);
    }

    #[tokio::test]
    async fn configured_cluster_without_hosts_is_listed() {
        let (_, body) = get_json("/api/v1/clusters").await;
        assert_eq!(body[0]["name"], "demo");
        let (status, body) = get_json("/api/v1/clusters/demo/hosts").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!([]));
        let (status, _) = get_json("/api/v1/clusters/other/hosts").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

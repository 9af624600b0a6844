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

use crate::engine::EngineHandle;
use crate::state::State;
use crate::stats::Stats;

pub struct ApiContext {
    pub state: Arc<State>,
    pub stats: Arc<Stats>,
    pub started: Instant,
    pub engine: EngineHandle,
    pub store: Arc<ganglion_store::engine::Store>,
    pub alerts: crate::alerts::AlertsHandle,
    /// The dashboard's rendered-graph cache, for its counters.
    pub graphs: Arc<ganglion_web::cache::GraphCache>,
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
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".into()) })
        .with_state(ctx)
}

async fn health(AxState(ctx): AxState<Arc<ApiContext>>) -> impl IntoResponse {
    Json(health_doc(&ctx))
}

/// `/api/v1/health`'s document (also the dashboard's health page).
pub fn health_doc(ctx: &ApiContext) -> serde_json::Value {
    json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": ctx.started.elapsed().as_secs_f64(),
        "hosts": ctx.state.host_count(),
        "counters": ctx.stats.snapshot(),
        "checks": crate::engine::api::health(&ctx.engine),
        "nsca": crate::engine::api::nsca_health(&ctx.engine),
        "storage": storage_counters(&ctx.store),
        "alerts": ctx.alerts.health(),
        "web": json!({ "graph_cache": ctx.graphs.stats() }),
    })
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
        "backpressure": s.backpressure.load(Relaxed),
        "shards": s.shards.load(Relaxed),
        "catalog_skipped": s.catalog_skipped.load(Relaxed),
        "startup_ms": s.startup_ms.load(Relaxed),
        "scan_blocks": s.scan_blocks.load(Relaxed),
        "scan_done": s.scan_done.load(Relaxed) == 1,
        // Damaged data kept aside since the start, newest first (the log has them all).
        "quarantined_series": store.quarantined().iter().rev().take(20).map(|q| json!({
            "series": q.series, "path": q.path, "reason": q.reason, "at": q.at,
        })).collect::<Vec<_>>(),
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

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "API request failed.");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the collector log".into())
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
        let alerts = crate::alerts::AlertsHandle::inactive(dir.path());
        // The engine and the store keep their files open; the directory may go.
        drop(dir);
        Arc::new(ApiContext {
            state,
            stats: Arc::new(Stats::default()),
            started: Instant::now(),
            engine,
            store,
            alerts,
            graphs: Arc::new(ganglion_web::cache::GraphCache::new(0)),
        })
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

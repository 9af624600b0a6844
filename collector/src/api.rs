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

use crate::state::State;
use crate::stats::Stats;

pub struct ApiContext {
    pub state: Arc<State>,
    pub stats: Arc<Stats>,
    pub started: Instant,
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
    }))
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
        let config = crate::config::Config::demo(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            "0123456789abcdef",
        );
        Arc::new(ApiContext {
            state: Arc::new(State::new(config.clusters)),
            stats: Arc::new(Stats::default()),
            started: Instant::now(),
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

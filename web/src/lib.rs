//! ganglion's dashboard: Ganglia-style graph browsing and Nagios-style status pages,
//! server-rendered, with graphs drawn in process.
//!
//! This crate owns the pages, the graph images and the admin sign-in. It owns no data:
//! everything is read through the [`DashboardSource`] the collector implements and
//! passes to [`router`], so the crate does not depend on the collector (dependencies
//! point `web ← collector`).
//!
//! Layout:
//! - [`source`]: the [`DashboardSource`] trait and the data types that cross it;
//! - [`graph`]: PNG and SVG graphs (also used for graphs inlined in alert emails);
//! - [`raster`]: the PNG path's bitmap surface (cached glyphs) and PNG encoding;
//! - [`charts`]: `/graph.png` and `/graph.svg` queries → series → graph;
//! - [`cache`]: rendered graphs kept until a series they show gains a row;
//! - [`pages`]: the HTML pages and their JSON (`?format=json`);
//! - [`html`]: page frame, styles, the small script (auto-refresh, drag zoom, filter);
//! - [`auth`], [`actions`]: sign-in, sessions, CSRF, and the admin actions.
//!
//! ```
//! use std::sync::Arc;
//!
//! /// The collector passes its own source in; any implementation mounts the same way.
//! fn dashboard(source: Arc<dyn ganglion_web::DashboardSource>) -> axum::Router {
//!     ganglion_web::router(source, ganglion_web::WebConfig::default())
//! }
//! # let _ = dashboard;
//! ```

pub mod actions;
pub mod auth;
pub mod cache;
pub mod charts;
pub mod graph;
pub mod html;
pub mod pages;
pub mod raster;
pub mod source;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use auth::Admin;
pub use source::DashboardSource;

/// The dashboard's settings (the collector's `[web]` section).
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Seconds between the pages' automatic refreshes; 0 turns it off.
    pub refresh_secs: u64,
    /// Whether the read-only pages are open without signing in.
    pub public_read: bool,
    /// Accounts that may sign in and act.
    pub admins: Vec<Admin>,
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// Mark cookies `Secure` (when the dashboard is served over HTTPS by a proxy).
    pub secure_cookies: bool,
    /// Budget of the rendered-graph cache ([`cache::GraphCache`]) in bytes; 0 turns it
    /// off. Used by [`router`]; [`router_with_cache`] takes the cache itself.
    pub graph_cache_bytes: usize,
}

impl Default for WebConfig {
    fn default() -> WebConfig {
        WebConfig {
            refresh_secs: 60,
            public_read: true,
            admins: Vec::new(),
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            graph_cache_bytes: DEFAULT_GRAPH_CACHE_BYTES,
        }
    }
}

/// Default budget of the rendered-graph cache: 16 MiB, about 400 large graphs or 3,000
/// cluster-page tiles.
pub const DEFAULT_GRAPH_CACHE_BYTES: usize = 16 << 20;

/// What every route shares.
pub struct App {
    pub src: Arc<dyn DashboardSource>,
    pub config: WebConfig,
    pub auth: auth::Auth,
    /// Ingest counters at the previous health view, for rates.
    last_health: Mutex<Option<(Instant, serde_json::Value)>>,
    /// Rendered graphs (`--lazy`); off when its budget is 0.
    pub graphs: Arc<cache::GraphCache>,
}

impl App {
    /// Unix seconds now.
    pub fn now(&self) -> i64 {
        chrono::Utc::now().timestamp()
    }
}

/// The dashboard's routes, to be merged with the API's, with a graph cache of
/// `config.graph_cache_bytes`.
pub fn router(src: Arc<dyn DashboardSource>, config: WebConfig) -> Router {
    let graphs = Arc::new(cache::GraphCache::new(config.graph_cache_bytes));
    router_with_cache(src, config, graphs)
}

/// [`router`] with a graph cache the caller keeps too (the collector shows its counters
/// in its health document).
pub fn router_with_cache(src: Arc<dyn DashboardSource>, config: WebConfig, graphs: Arc<cache::GraphCache>) -> Router {
    let auth = auth::Auth::new(config.admins.clone(), config.session_ttl, config.secure_cookies);
    let app = Arc::new(App { src, config, auth, last_health: Mutex::new(None), graphs });
    Router::new()
        .route("/", get(pages::grid))
        .route("/cluster", get(pages::cluster))
        .route("/host", get(pages::host))
        .route("/metric", get(pages::metric))
        .route("/compare", get(pages::compare))
        .route("/search", get(pages::search))
        .route("/problems", get(pages::problems))
        .route("/check", get(pages::check))
        .route("/health", get(pages::health))
        .route("/graph.png", get(graph_png))
        .route("/graph.svg", get(graph_svg))
        .route("/login", get(actions::login_form).post(actions::login))
        .route("/logout", post(actions::logout))
        .route("/action", post(actions::action))
        .with_state(app)
        .layer(axum::middleware::map_response(protective_headers))
}

/// Headers on every dashboard answer: pages may not be framed by other sites (the
/// action forms must not be clickjacked), types are not sniffed, and links do not leak
/// the dashboard's URLs (which carry host names) to other sites.
async fn protective_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("same-origin"));
    r
}

/// Draws a graph, or takes it from the cache when nothing it shows has changed.
fn draw_graph(app: &App, q: &charts::GraphQuery, svg: bool, now: i64) -> Result<cache::Cached, charts::ChartError> {
    let render = |spec: &graph::GraphSpec| {
        if svg { graph::render_svg(spec).map(|s| s.into_bytes()) } else { graph::render_png(spec) }
            .map_err(|e| charts::ChartError::Internal(e.to_string()))
    };
    let key = charts::cache_key(q, svg).filter(|_| app.graphs.enabled());
    let range = charts::time_range(q.r.as_deref(), q.cs, q.ce, now);
    let (Some(key), Ok(range)) = (key, range) else {
        // Off, or a query build refuses (it says why).
        let bytes = render(&charts::build(app.src.as_ref(), q, now)?)?;
        return Ok(cache::Cached { bytes: bytes.into(), etag: "".into() });
    };
    app.graphs.get_or_draw(key, app.src.as_ref(), range, || {
        let recorder = cache::Recorder::new(app.src.clone());
        let bytes = render(&charts::build(&recorder, q, now)?)?;
        Ok((bytes.into(), recorder.finish()))
    })
}

async fn graph(app: Arc<App>, headers: axum::http::HeaderMap, q: charts::GraphQuery, svg: bool) -> Response {
    if let Err(r) = pages::viewer(&app, &headers) {
        return r.into_response();
    }
    let now = app.now();
    let built = tokio::task::spawn_blocking(move || draw_graph(&app, &q, svg, now)).await;
    let ctype = if svg { "image/svg+xml" } else { "image/png" };
    match built {
        Ok(Ok(g)) => {
            // Browsers revalidate after max-age; a kept graph answers with its ETag.
            let matches = !g.etag.is_empty()
                && headers
                    .get(header::IF_NONE_MATCH)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.split(',').any(|t| t.trim() == &*g.etag));
            let cache_control = (header::CACHE_CONTROL, header::HeaderValue::from_static("max-age=10"));
            let etag = (!g.etag.is_empty()).then(|| header::HeaderValue::from_str(&g.etag).ok()).flatten();
            let mut r = if matches {
                (StatusCode::NOT_MODIFIED, [cache_control]).into_response()
            } else {
                ([(header::CONTENT_TYPE, header::HeaderValue::from_static(ctype)), cache_control], g.bytes)
                    .into_response()
            };
            if let Some(etag) = etag {
                r.headers_mut().insert(header::ETAG, etag);
            }
            r
        }
        Ok(Err(charts::ChartError::BadRequest(m))) => (StatusCode::BAD_REQUEST, m).into_response(),
        Ok(Err(charts::ChartError::NotFound(m))) => (StatusCode::NOT_FOUND, m).into_response(),
        Ok(Err(charts::ChartError::Internal(m))) => {
            tracing::error!(error = %m, "Graph failed.");
            (StatusCode::INTERNAL_SERVER_ERROR, "graph failed; see the collector log").into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "Graph task failed.");
            (StatusCode::INTERNAL_SERVER_ERROR, "graph failed; see the collector log").into_response()
        }
    }
}

async fn graph_png(
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    Query(q): Query<charts::GraphQuery>,
) -> Response {
    graph(app, headers, q, false).await
}

async fn graph_svg(
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    Query(q): Query<charts::GraphQuery>,
) -> Response {
    graph(app, headers, q, true).await
}

#[cfg(test)]
mod tests;

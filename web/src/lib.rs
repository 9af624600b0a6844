//! ganglion's dashboard pages.
//!
//! This crate owns the HTML the collector serves to browsers. It does not own any data:
//! the pages read the collector's JSON API (`/api/v1/...`) from the browser, so the
//! crate has no dependency on the collector and the API stays the one source of truth.
//! Today it is a grid → cluster → host browser of current values with auto-refresh;
//! graphs come with the storage.
//!
//! Layout: [`router`] mounts `/` (the single page, `index.html`); [`graph`] draws
//! time-series graphs as PNG and SVG (also used for graphs inlined in alert emails).
//!
//! ```
//! let app: axum::Router = ganglion_web::router();
//! # drop(app);
//! ```

pub mod graph;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("index.html");

/// The dashboard's routes, to be merged with the API's.
pub fn router() -> Router {
    Router::new().route("/", get(index))
}

async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn serves_index_page_that_reads_the_api() {
        let resp = super::router().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("/api/v1/clusters"));
    }
}

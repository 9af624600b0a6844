//! HTTP routes of the checks engine, merged into the collector's API router.
//!
//! Reads: `GET /api/v1/status`, `/status/problems`, `/history`, `/checks?host=`,
//! `/downtime`, `/comments`. Writes — passive results, acknowledgements, downtimes,
//! comments, external command lines — need the admin token of `[api]` as
//! `Authorization: Bearer <token>`, compared in constant time; without it they answer
//! 401. Errors are JSON objects `{"error": "..."}` as in the rest of the API.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ganglion_checks::ack::AckKind;
use ganglion_checks::command::{self, ExternalCommand};
use ganglion_checks::downtime::{DowntimeSpec, Mode, Schedule, Target};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{now_secs, Control, ControlError, EngineHandle, PassiveResult};
use crate::state::State;

/// What the routes need.
pub struct ChecksApi {
    pub engine: EngineHandle,
    pub state: Arc<State>,
    /// `[api] admin_token`; `None`: every write route answers 401.
    pub admin_token: Option<String>,
}

/// A failure: status plus a plain message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        let code = match e {
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Storage(_) => {
                tracing::error!(error = %e, "API request failed.");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(code, e.to_string())
    }
}

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "API request failed.");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the collector log".into())
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub fn router(ctx: Arc<ChecksApi>) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/status/problems", get(problems))
        .route("/api/v1/history", get(history))
        .route("/api/v1/checks", get(checks))
        .route("/api/v1/results", post(results))
        .route("/api/v1/ack", post(ack).delete(remove_ack))
        .route("/api/v1/downtime", get(downtimes).post(add_downtime))
        .route("/api/v1/downtime/:id", delete(remove_downtime))
        .route("/api/v1/comments", get(comments).post(add_comment))
        .route("/api/v1/comments/:id", delete(remove_comment))
        .route("/api/v1/commands", post(commands))
        .with_state(ctx)
}

/// The `checks` section of `/api/v1/health`.
pub fn health(engine: &EngineHandle) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let s = engine.stats();
    json!({
        "checks": s.checks.load(Relaxed),
        "received": s.received.load(Relaxed),
        "passive": s.passive.load(Relaxed),
        "rejected": s.rejected.load(Relaxed),
        "written": s.written.load(Relaxed),
        "dropped": s.dropped.load(Relaxed),
        "plugins_run": s.plugins_run.load(Relaxed),
        "plugins_timed_out": s.plugins_timed_out.load(Relaxed),
        "db_errors": s.db_errors.load(Relaxed),
        "ticks": s.ticks.load(Relaxed),
        "tick_cpu_us": s.tick_cpu_us.load(Relaxed),
        "last_tick_us": s.last_tick_us.load(Relaxed),
    })
}

/// The `nsca` section of `/api/v1/health`.
pub fn nsca_health(engine: &EngineHandle) -> Value {
    engine.nsca_stats().to_json()
}

/// Constant-time comparison: the time taken does not depend on where the first
/// difference is, so the token cannot be guessed byte by byte. Lengths are compared
/// through digests, so the length does not leak either.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    let diff = x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q));
    std::hint::black_box(diff) == 0
}

fn authorize(ctx: &ChecksApi, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &ctx.admin_token else {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "write requests are disabled: set [api] admin_token (or admin_token_file) in the collector's configuration"
                .into(),
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same_secret(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError(StatusCode::UNAUTHORIZED, "wrong admin token".into())),
        None => {
            Err(ApiError(StatusCode::UNAUTHORIZED, "this request needs `Authorization: Bearer <admin token>`".into()))
        }
    }
}

fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    let Json(v) = body.map_err(|e| bad_request(e.body_text()))?;
    serde_json::from_value(v).map_err(|e| bad_request(format!("bad request body: {e}")))
}

/// Reads the table off the runtime: a view of 300,000 checks takes a while to build.
async fn all_views(ctx: &ChecksApi) -> Result<Vec<super::CheckView>, ApiError> {
    let engine = ctx.engine.clone();
    tokio::task::spawn_blocking(move || engine.status()).await.map_err(|e| internal(&e))
}

#[derive(Deserialize)]
struct StatusQuery {
    host: Option<String>,
    cluster: Option<String>,
    service: Option<String>,
}

async fn status(
    AxState(ctx): AxState<Arc<ChecksApi>>,
    Query(q): Query<StatusQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let mut all = all_views(&ctx).await?;
    all.retain(|c| {
        q.host.as_ref().is_none_or(|h| *h == c.host)
            && q.cluster.as_ref().is_none_or(|x| *x == c.cluster)
            && q.service.as_ref().is_none_or(|s| *s == c.service)
    });
    Ok(Json(all))
}

/// Non-OK checks, unhandled first (not acknowledged, not in downtime, not a service of
/// a host that is down); within each, host problems before services, most severe
/// first, longest-standing first.
async fn problems(AxState(ctx): AxState<Arc<ChecksApi>>) -> Result<impl IntoResponse, ApiError> {
    let mut all: Vec<_> = all_views(&ctx).await?.into_iter().filter(|c| c.problem && !c.pending).collect();
    let rank = |s: &str| match s {
        "DOWN" | "UNREACHABLE" | "CRITICAL" => 0,
        "WARNING" => 1,
        "UNKNOWN" => 2,
        _ => 3,
    };
    all.sort_by_key(|c| (c.handled, !c.service.is_empty(), rank(&c.state), c.last_state_change.unwrap_or(0)));
    Ok(Json(all))
}

#[derive(Deserialize)]
struct HistoryQuery {
    host: Option<String>,
    service: Option<String>,
    limit: Option<usize>,
}

async fn history(
    AxState(ctx): AxState<Arc<ChecksApi>>,
    Query(q): Query<HistoryQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let engine = ctx.engine.clone();
    let rows = tokio::task::spawn_blocking(move || {
        engine.history(q.host.as_deref(), q.service.as_deref(), q.limit.unwrap_or(500).min(10_000))
    })
    .await
    .map_err(|e| internal(&e))?
    .map_err(|e| internal(&format!("{e:#}")))?;
    Ok(Json(rows))
}

#[derive(Deserialize)]
struct ChecksQuery {
    host: String,
    cluster: Option<String>,
}

/// The effective checks of a host and where each setting came from.
async fn checks(
    AxState(ctx): AxState<Arc<ChecksApi>>,
    Query(q): Query<ChecksQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let cluster = match q.cluster {
        Some(c) => c,
        None => ctx
            .state
            .host_view(&q.host, None, Instant::now())
            .map(|h| h.summary.cluster)
            .or_else(|| ctx.engine.host_def(&q.host).map(|d| d.cluster.clone()))
            .ok_or_else(|| {
                ApiError(StatusCode::NOT_FOUND, format!("no host {}", ganglion_proto::name::escaped(&q.host)))
            })?,
    };
    let list: Vec<_> = ctx
        .engine
        .effective(&cluster, &q.host)
        .iter()
        .map(|e| {
            let (kind, what) = match &e.kind {
                super::defs::Kind::Metric { metric, divide_by, scale, thresholds, missing, aggregate, .. } => (
                    "metric",
                    json!({
                        "metric": metric,
                        "divide_by": divide_by,
                        "scale": scale,
                        "thresholds": format!("{thresholds:?}"),
                        "missing": missing.map(|s| s.to_string()),
                        "aggregate": aggregate.map(|(a, _)| a.as_str()),
                        "window_secs": aggregate.map(|(_, w)| w),
                    }),
                ),
                super::defs::Kind::Active { command, macros, timeout } => {
                    ("active", json!({ "command": command, "macros": macros, "timeout_secs": timeout.as_secs_f64() }))
                }
                super::defs::Kind::Passive { freshness, stale_state } => (
                    "passive",
                    json!({
                        "freshness_secs": freshness.map(|f| f.as_secs()),
                        "stale_state": stale_state.to_string(),
                    }),
                ),
            };
            json!({
                "service": e.name,
                "kind": kind,
                "check": what,
                "max_check_attempts": e.settings.max_check_attempts,
                "check_interval_secs": e.settings.check_interval_secs,
                "retry_interval_secs": e.settings.retry_interval_secs,
                "flap_detection": e.flap.is_some(),
                "low_flap_threshold": e.flap.map(|f| f.low),
                "high_flap_threshold": e.flap.map(|f| f.high),
                "origin": e.origin,
            })
        })
        .collect();
    let def = ctx.engine.host_def(&q.host).filter(|d| d.cluster == cluster);
    let host_def = def.map(|d| {
        json!({
            "address": d.address,
            "parents": d.parents,
            "check_command": d.check.as_ref().map(|c| &c.command),
            "max_check_attempts": d.check.as_ref().map(|c| c.settings.max_check_attempts),
        })
    });
    Ok(Json(json!({ "cluster": cluster, "host": q.host, "host_definition": host_def, "checks": list })))
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
    AxState(ctx): AxState<Arc<ChecksApi>>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&ctx, &headers)?;
    let Json(value) = body.map_err(|e| bad_request(e.body_text()))?;
    let items: Vec<ResultBody> = match value {
        Value::Array(_) => serde_json::from_value(value),
        v => serde_json::from_value(v).map(|one| vec![one]),
    }
    .map_err(|e| bad_request(format!("bad result: {e}")))?;
    let now = now_secs();
    let batch = items
        .into_iter()
        // Scripts write `\n` for a line break, as in external command lines.
        .map(|r| PassiveResult {
            host: r.host,
            service: r.service,
            code: r.status,
            output: command::unescape(&r.output),
            time: now,
        })
        .collect();
    let outcome = ctx.engine.submit_all(batch).await.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let all_ok = outcome.iter().all(Result::is_ok);
    let body: Vec<Value> = outcome
        .into_iter()
        .map(|r| match r {
            Ok(()) => json!({"accepted": true}),
            Err(e) => json!({"accepted": false, "error": e}),
        })
        .collect();
    let status = if all_ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    Ok((status, Json(body)))
}

fn default_author() -> String {
    "api".to_owned()
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    host: String,
    service: Option<String>,
    cluster: Option<String>,
    comment: String,
    #[serde(default = "default_author")]
    author: String,
    /// Kept until the check is OK again (not removed by a change between problem states).
    #[serde(default)]
    sticky: bool,
    /// Send an ACKNOWLEDGEMENT notification.
    #[serde(default = "yes")]
    notify: bool,
    /// Keep the comment after the acknowledgement is gone.
    #[serde(default)]
    persistent: bool,
}

async fn ack(
    AxState(ctx): AxState<Arc<ChecksApi>>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&ctx, &headers)?;
    let b: AckBody = json_body(body)?;
    let kind = if b.sticky { AckKind::Sticky } else { AckKind::Normal };
    let out = ctx
        .engine
        .control(Control::Ack {
            cluster: b.cluster,
            host: b.host,
            service: b.service.filter(|s| !s.is_empty()),
            kind,
            author: b.author,
            comment: b.comment,
            notify: b.notify,
            persistent: b.persistent,
        })
        .await?;
    Ok(Json(out))
}

#[derive(Deserialize)]
struct AckTarget {
    host: String,
    service: Option<String>,
    cluster: Option<String>,
}

async fn remove_ack(
    AxState(ctx): AxState<Arc<ChecksApi>>,
    headers: HeaderMap,
    Query(q): Query<AckTarget>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&ctx, &headers)?;
    let out = ctx
        .engine
        .control(Control::RemoveAck { cluster: q.cluster, host: q.host, service: q.service.filter(|s| !s.is_empty()) })
        .await?;
    Ok(Json(out))
}

/// `POST /api/v1/downtime`. One-off: `start` (default now) and `end` or
/// `duration_secs`; recurring: `cron` with `window_secs` (or `duration_secs`) and
/// `time_zone`. `flexible` downtime starts when the check enters a problem inside the
/// window and lasts `duration_secs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DowntimeBody {
    host: String,
    service: Option<String>,
    start: Option<i64>,
    end: Option<i64>,
    duration_secs: Option<u64>,
    #[serde(default)]
    flexible: bool,
    cron: Option<String>,
    window_secs: Option<u64>,
    time_zone: Option<String>,
    trigger: Option<u64>,
    #[serde(default = "default_author")]
    author: String,
    #[serde(default)]
    comment: String,
}

impl DowntimeBody {
    fn spec(self, now: i64) -> Result<DowntimeSpec, ApiError> {
        let schedule = match self.cron {
            Some(cron) => {
                if self.start.is_some() || self.end.is_some() {
                    return Err(bad_request("give either cron or start/end, not both"));
                }
                let window_secs = self
                    .window_secs
                    .or(if self.flexible { None } else { self.duration_secs })
                    .ok_or_else(|| bad_request("a recurring downtime needs window_secs"))?;
                Schedule::Recurring { cron, window_secs, time_zone: self.time_zone.unwrap_or_else(|| "UTC".into()) }
            }
            None => {
                let start = self.start.unwrap_or(now);
                let end = match (self.end, self.duration_secs) {
                    (Some(end), _) => end,
                    (None, Some(d)) if !self.flexible => start.saturating_add(i64::try_from(d).unwrap_or(i64::MAX)),
                    _ => return Err(bad_request("a downtime needs end (or duration_secs for a fixed one)")),
                };
                Schedule::Once { start, end }
            }
        };
        let mode = if self.flexible {
            let duration_secs =
                self.duration_secs.ok_or_else(|| bad_request("a flexible downtime needs duration_secs"))?;
            Mode::Flexible { duration_secs }
        } else {
            Mode::Fixed
        };
        Ok(DowntimeSpec {
            target: Target { host: self.host, service: self.service.filter(|s| !s.is_empty()) },
            schedule,
            mode,
            trigger: self.trigger,
            author: self.author,
            comment: self.comment,
        })
    }
}

async fn add_downtime(
    AxState(ctx): AxState<Arc<ChecksApi>>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&ctx, &headers)?;
    let b: DowntimeBody = json_body(body)?;
    let spec = b.spec(now_secs())?;
    let out = ctx.engine.control(Control::AddDowntime(spec)).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

async fn remove_downtime(
    AxState(ctx): AxState<Arc<ChecksApi>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&ctx, &headers)?;
    Ok(Json(ctx.engine.control(Control::RemoveDowntime(id)).await?))
}

async fn downtimes(AxState(ctx): AxState<Arc<ChecksApi>>) -> impl IntoResponse {
    Json(ctx.engine.downtimes())
}

async fn comments(AxState(ctx): AxState<Arc<ChecksApi>>) -> impl IntoResponse {
    Json(ctx.engine.comments())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    host: String,
    service: Option<String>,
    #[serde(default = "default_author")]
    author: String,
    text: String,
}

async fn add_comment(
    AxState(ctx): AxState<Arc<ChecksApi>>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&ctx, &headers)?;
    let b: CommentBody = json_body(body)?;
    let out = ctx
        .engine
        .control(Control::AddComment {
            host: b.host,
            service: b.service.filter(|s| !s.is_empty()),
            author: b.author,
            text: b.text,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(out)))
}

async fn remove_comment(
    AxState(ctx): AxState<Arc<ChecksApi>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&ctx, &headers)?;
    Ok(Json(ctx.engine.control(Control::RemoveComment(id)).await?))
}

/// Longest body of `POST /api/v1/commands`.
const MAX_COMMANDS_BYTES: usize = 4 << 20;

/// `POST /api/v1/commands`: Nagios external command lines, one per line, as scripts
/// write them to `nagios.cmd`. Answers one object per non-empty line.
async fn commands(
    AxState(ctx): AxState<Arc<ChecksApi>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&ctx, &headers)?;
    if body.len() > MAX_COMMANDS_BYTES {
        return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("at most {MAX_COMMANDS_BYTES} bytes of commands")));
    }
    let text = std::str::from_utf8(&body).map_err(|_| bad_request("command lines must be UTF-8"))?;
    let mut out = Vec::new();
    let mut all_ok = true;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let r = run_command(&ctx.engine, line).await;
        all_ok &= r.is_ok();
        out.push(match r {
            Ok(v) => json!({ "line": i + 1, "ok": true, "result": v }),
            Err(e) => json!({ "line": i + 1, "ok": false, "error": e }),
        });
    }
    let status = if all_ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    Ok((status, Json(out)))
}

async fn run_command(engine: &EngineHandle, line: &str) -> Result<Value, String> {
    let parsed = command::parse(line).map_err(|e| e.to_string())?;
    let time = parsed.entry_time;
    let control = match parsed.command {
        ExternalCommand::ProcessServiceCheckResult { host, service, return_code, output } => {
            engine.submit(PassiveResult { host, service, code: return_code, output, time }).await?;
            return Ok(json!({ "accepted": true }));
        }
        ExternalCommand::ProcessHostCheckResult { host, state, output } => {
            let r = PassiveResult { host, service: String::new(), code: i64::from(state.code()), output, time };
            engine.submit(r).await?;
            return Ok(json!({ "accepted": true }));
        }
        ExternalCommand::AcknowledgeServiceProblem { host, service, ack } => Control::Ack {
            cluster: None,
            host,
            service: Some(service),
            kind: ack.kind,
            author: ack.author,
            comment: ack.comment,
            notify: ack.notify,
            persistent: ack.persistent,
        },
        ExternalCommand::AcknowledgeHostProblem { host, ack } => Control::Ack {
            cluster: None,
            host,
            service: None,
            kind: ack.kind,
            author: ack.author,
            comment: ack.comment,
            notify: ack.notify,
            persistent: ack.persistent,
        },
        ExternalCommand::ScheduleServiceDowntime { host, service, downtime } => {
            Control::AddDowntime(downtime_spec(host, Some(service), downtime))
        }
        ExternalCommand::ScheduleHostDowntime { host, downtime } => {
            Control::AddDowntime(downtime_spec(host, None, downtime))
        }
        ExternalCommand::RemoveServiceAcknowledgement { host, service } => {
            Control::RemoveAck { cluster: None, host, service: Some(service) }
        }
        ExternalCommand::RemoveHostAcknowledgement { host } => {
            Control::RemoveAck { cluster: None, host, service: None }
        }
        ExternalCommand::DeleteServiceDowntime { id } | ExternalCommand::DeleteHostDowntime { id } => {
            Control::RemoveDowntime(id)
        }
        other => return Err(format!("{other:?} is not supported here")),
    };
    engine.control(control).await.map_err(|e| e.to_string())
}

fn downtime_spec(host: String, service: Option<String>, d: command::DowntimeArgs) -> DowntimeSpec {
    DowntimeSpec {
        target: Target { host, service },
        schedule: Schedule::Once { start: d.start, end: d.end },
        // Nagios: fixed downtime ignores the duration argument.
        mode: if d.fixed { Mode::Fixed } else { Mode::Flexible { duration_secs: d.duration_secs } },
        trigger: d.trigger_id,
        author: d.author,
        comment: d.comment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcdeg"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcdef0"));
    }

    #[test]
    fn downtime_bodies() {
        let body: DowntimeBody =
            serde_json::from_value(json!({"host": "h", "duration_secs": 60, "comment": "x"})).unwrap();
        let spec = body.spec(1000).unwrap();
        assert_eq!(spec.schedule, Schedule::Once { start: 1000, end: 1060 });
        assert_eq!(spec.mode, Mode::Fixed);
        let body: DowntimeBody = serde_json::from_value(
            json!({"host": "h", "service": "s", "cron": "0 2 * * Sun", "window_secs": 7200, "time_zone": "Europe/Berlin"}),
        )
        .unwrap();
        let spec = body.spec(0).unwrap();
        assert!(matches!(spec.schedule, Schedule::Recurring { window_secs: 7200, .. }));
        let body: DowntimeBody =
            serde_json::from_value(json!({"host": "h", "start": 10, "end": 100, "flexible": true})).unwrap();
        assert!(body.spec(0).is_err(), "flexible without a duration");
        let body: DowntimeBody = serde_json::from_value(json!({"host": "h"})).unwrap();
        assert!(body.spec(0).is_err(), "no end");
    }

    #[tokio::test]
    async fn write_routes_need_the_admin_token() {
        let (engine, dir) = super::super::tests::engine_with_host("h1", &["svc"]).await;
        let state = Arc::new(State::new(Default::default()));
        let app = |token: Option<&str>| {
            router(Arc::new(ChecksApi {
                engine: engine.clone(),
                state: state.clone(),
                admin_token: token.map(str::to_owned),
            }))
        };
        let post = |auth: Option<&str>| {
            let mut r = Request::post("/api/v1/results").header("content-type", "application/json");
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            r.body(Body::from(r#"{"host":"h1","service":"svc","status":2,"output":"down"}"#)).unwrap()
        };
        let token = "0123456789abcdef";
        for (app, auth, want) in [
            (app(None), Some("Bearer 0123456789abcdef"), StatusCode::UNAUTHORIZED),
            (app(Some(token)), None, StatusCode::UNAUTHORIZED),
            (app(Some(token)), Some("Bearer wrong"), StatusCode::UNAUTHORIZED),
            (app(Some(token)), Some("Bearer 0123456789abcdef"), StatusCode::OK),
        ] {
            let resp = app.oneshot(post(auth)).await.unwrap();
            assert_eq!(resp.status(), want, "{auth:?}");
        }
        // Reads need no token.
        let resp =
            app(Some(token)).oneshot(Request::get("/api/v1/downtime").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        drop(dir);
    }

    #[tokio::test]
    async fn external_command_lines_drive_results_acks_and_downtime() {
        let (engine, dir) = super::super::tests::engine_with_host("h1", &["svc"]).await;
        let app = router(Arc::new(ChecksApi {
            engine: engine.clone(),
            state: Arc::new(State::new(Default::default())),
            admin_token: Some("0123456789abcdef".into()),
        }));
        let post = |body: String| {
            Request::post("/api/v1/commands")
                .header("authorization", "Bearer 0123456789abcdef")
                .body(Body::from(body))
                .unwrap()
        };
        let now = now_secs();
        let lines = format!(
            "[{now}] PROCESS_SERVICE_CHECK_RESULT;h1;svc;2;CRITICAL - disk\\nsecond line|used=99%\n\
             [{now}] ACKNOWLEDGE_SVC_PROBLEM;h1;svc;2;1;0;ops;replacing the disk; today\n\
             [{now}] SCHEDULE_SVC_DOWNTIME;h1;svc;{now};{};1;0;0;ops;swap\n\
             [{now}] NO_SUCH_COMMAND;x\n",
            now + 3600
        );
        let resp = app.clone().oneshot(post(lines)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "one line is bad");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let ok: Vec<bool> = body.as_array().unwrap().iter().map(|r| r["ok"] == true).collect();
        assert_eq!(ok, [true, true, true, false], "{body}");
        assert!(body[3]["error"].as_str().unwrap().contains("unknown command"), "{body}");
        let id = body[2]["result"]["id"].as_u64().unwrap();
        let svc = engine.status().into_iter().find(|c| c.service == "svc").unwrap();
        assert_eq!(
            (svc.state.as_str(), svc.output.as_str(), svc.long_output.as_str()),
            ("CRITICAL", "CRITICAL - disk", "second line")
        );
        assert_eq!(svc.ack.as_ref().map(|a| (a.sticky, a.comment.as_str())), Some((true, "replacing the disk; today")));
        assert!(svc.in_downtime && svc.handled);
        let lines = format!("[{now}] DEL_SVC_DOWNTIME;{id}\n[{now}] REMOVE_SVC_ACKNOWLEDGEMENT;h1;svc\n");
        let resp = app.oneshot(post(lines)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let svc = engine.status().into_iter().find(|c| c.service == "svc").unwrap();
        assert!(!svc.acknowledged && !svc.in_downtime);
        drop(dir);
    }
}

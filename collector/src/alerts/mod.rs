//! Alerting: who is told what, when, and how, from the checks engine's state to email,
//! SMS and webhooks, through a durable outbox.
//!
//! It owns contacts, routes and escalations (`config`), the Nagios notification logic
//! driven by its own one-second timer (`logic`, pure and unit-tested), grouping and the
//! SMS rate limit, the outbox database `data_dir/notifications.db` and its delivery
//! (`outbox`, `send`), message texts (`render`), `GET /api/v1/notifications` and the
//! `alerts` counters of `/api/v1/health`. It does not own check states,
//! acknowledgements, downtime or flapping: it reads them from the engine
//! ([`crate::engine::EngineHandle::alert_view`]) and never writes to the engine, so a
//! slow mail server cannot hold checks or ingest.
//!
//! Layout:
//! - `config`: `[[contact]]`, `[[contactgroup]]`, `[[route]]`, `[[escalation]]`,
//!   `[alerts]`, `[smtp]`, `[[webhook]]`.
//! - `logic`: the state machine (time injected).
//! - `render`: subjects, plain-text and HTML bodies, short texts under 160 characters.
//! - `outbox`: the SQLite outbox, the grouping/writer thread and the sender thread.
//! - `send`: SMTP through lettre, webhooks through ureq.
//!
//! # Tasks, threads and bounds
//! - The **alerts task** (tokio) ticks every second: on a blocking thread it reads the
//!   engine's table (one short lock; only problems, flapping and watched checks are
//!   copied), runs [`logic::Machine::tick`], and hands the result to the writer through
//!   a channel of [`outbox::WRITER_QUEUE`] batches (waiting when it is full, which
//!   delays notifications, never checks).
//! - The **`alerts-outbox` thread** commits notes and records, then groups per contact
//!   once `group_window_secs` has passed since the contact's oldest waiting note.
//! - The **`alerts-sender` thread** delivers pending messages; retries back off
//!   exponentially from `retry_secs` to `max_retry_secs`, `max_tries` in all.

pub mod config;
pub mod logic;
pub mod outbox;
pub mod render;
pub mod send;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use self::config::AlertsConfig;
use self::logic::{Machine, Note, NoteKind};
use self::outbox::{AlertStats, GraphFn, ToWriter};
use self::send::{Channel, Outgoing};
use crate::engine::EngineHandle;

/// What the API needs of a running alerting layer.
#[derive(Clone)]
pub struct AlertsHandle {
    pub stats: Arc<AlertStats>,
    db: PathBuf,
}

impl AlertsHandle {
    /// A handle with nothing running behind it (API tests).
    #[cfg(test)]
    pub fn inactive(data_dir: &Path) -> AlertsHandle {
        AlertsHandle { stats: Arc::default(), db: data_dir.join("notifications.db") }
    }

    /// The `alerts` section of `/api/v1/health`.
    pub fn health(&self) -> serde_json::Value {
        self.stats.to_json()
    }

    /// The newest `limit` outbox messages with counts per state, as
    /// `GET /api/v1/notifications` shows them (for the dashboard); `None` when this
    /// collector has no outbox or it cannot be read (logged).
    pub fn outbox(&self, limit: usize) -> Option<serde_json::Value> {
        if !self.db.exists() {
            return None;
        }
        match outbox::list(&self.db, None, limit) {
            Ok((messages, counts)) => Some(serde_json::json!({ "counts": counts, "messages": messages })),
            Err(e) => {
                tracing::warn!(error = %e, "Could not read the outbox for the dashboard.");
                None
            }
        }
    }
}

/// Opens the outbox, resumes the stored records and pending messages, and starts the
/// task and threads. Without contacts and routes nothing runs, and the API shows an
/// empty outbox.
///
/// # Errors
/// When the outbox database cannot be opened or read.
pub fn start(
    cfg: &AlertsConfig,
    engine: EngineHandle,
    data_dir: &Path,
    graph: Option<GraphFn>,
    shutdown: CancellationToken,
) -> anyhow::Result<(AlertsHandle, Option<tokio::task::JoinHandle<()>>)> {
    let cfg = Arc::new(cfg.clone());
    let stats = Arc::new(AlertStats::default());
    let db = data_dir.join("notifications.db");
    let handle = AlertsHandle { stats: stats.clone(), db: db.clone() };
    if !cfg.enabled() {
        return Ok((handle, None));
    }
    let conn = outbox::open(&db)?;
    let tracks = outbox::load_tracks(&conn).with_context(|| format!("reading {}", db.display()))?;
    tracing::info!(records = tracks.len(), contacts = cfg.contacts.len(), "Alerting resumed.");
    let sender_conn = outbox::open(&db)?;
    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
    let (tx, rx) = std::sync::mpsc::sync_channel(outbox::WRITER_QUEUE);
    let writer =
        outbox::Writer { conn, cfg: cfg.clone(), stats: stats.clone(), wake_sender: wake_tx, graph, next_prune: 0 };
    std::thread::Builder::new().name("alerts-outbox".into()).spawn(move || writer.run(rx))?;
    let sender = outbox::Sender { conn: sender_conn, cfg: cfg.clone(), stats: stats.clone() };
    std::thread::Builder::new().name("alerts-sender".into()).spawn(move || sender.run(wake_rx))?;
    let mut machine = Some(Machine::new(cfg.clone(), tracks));
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let Some(mut m) = machine.take() else { return };
            let (engine, tx, stats, cfg) = (engine.clone(), tx.clone(), stats.clone(), cfg.clone());
            let done = tokio::task::spawn_blocking(move || {
                let (view, held) = engine.alert_view(&m.watched());
                let us = held.as_micros() as u64;
                stats.last_view_us.store(us, Ordering::Relaxed);
                stats.max_view_us.fetch_max(us, Ordering::Relaxed);
                let now = crate::engine::now_secs();
                let mut out = m.tick(now, view);
                // Outputs only for the checks notified about, in a second short hold of
                // the table (copying every problem's output each second would not be).
                if !out.intents.is_empty() {
                    let mut keys: Vec<crate::engine::CheckKey> = out
                        .intents
                        .iter()
                        .map(|i| (i.note.cluster.clone(), i.note.host.clone(), i.note.service.clone()))
                        .collect();
                    keys.sort_unstable();
                    keys.dedup();
                    let outputs = engine.alert_outputs(&keys);
                    for i in &mut out.intents {
                        let k = (i.note.cluster.clone(), i.note.host.clone(), i.note.service.clone());
                        if let Ok(j) = keys.binary_search(&k) {
                            // An acknowledgement's note already says who and why.
                            if i.note.output.is_empty() {
                                i.note.output = outputs[j].0.clone();
                            }
                            i.note.perfdata = outputs[j].1.clone();
                        }
                    }
                }
                stats.ticks.fetch_add(1, Ordering::Relaxed);
                stats.unrouted.fetch_add(out.unrouted, Ordering::Relaxed);
                if !out.intents.is_empty() || !out.changed.is_empty() {
                    stats.notifications.fetch_add(out.intents.len() as u64, Ordering::Relaxed);
                    let notes =
                        out.intents.into_iter().map(|i| (cfg.contacts[i.contact].name.clone(), i.note)).collect();
                    if tx.send(ToWriter::Tick { now, notes, changed: out.changed }).is_err() {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                m
            })
            .await;
            match done {
                Ok(m) => machine = Some(m),
                Err(e) => {
                    tracing::error!(error = %e, "Alerting round panicked; alerting stopped.");
                    return;
                }
            }
        }
    });
    Ok((handle, Some(task)))
}

/// Hours of history in an email's inline graph.
const GRAPH_HOURS: i64 = 6;

/// The inline graph of a notification: its series over the last [`GRAPH_HOURS`] hours
/// from storage, drawn by the dashboard's renderer. `None` (and the email goes without
/// it) when the check has no series or nothing could be read.
pub fn store_graph(store: Arc<ganglion_store::engine::Store>) -> GraphFn {
    Arc::new(move |n: &Note| {
        use ganglion_store::engine::SeriesKey;
        use ganglion_store::rrd::Cf;
        let metric = n.metric.as_ref()?;
        // Now rather than the notification's time: a group is drawn after its window.
        let end = crate::engine::now_secs().max(n.time);
        let start = end - GRAPH_HOURS * 3600;
        let f = store
            .fetch(
                &SeriesKey::new(&n.cluster, &n.host, metric),
                Cf::Average,
                u64::try_from(start).ok()?,
                u64::try_from(end).ok()?,
                1,
            )
            .ok()?;
        let points: Vec<(i64, Option<f64>)> = (0..f.rows.len())
            .map(|i| {
                let v = f.rows[i].first().copied().filter(|v| v.is_finite());
                (i64::try_from(f.time(i)).unwrap_or(0), v)
            })
            .collect();
        if points.iter().all(|p| p.1.is_none()) {
            return None;
        }
        let spec = ganglion_web::graph::GraphSpec {
            title: format!("{} {} (last {GRAPH_HOURS} h)", n.host, metric),
            width: 600,
            height: 200,
            start,
            end,
            lines: vec![ganglion_web::graph::Line::new(metric.clone(), "", points)],
            ..ganglion_web::graph::GraphSpec::default()
        };
        match ganglion_web::graph::render_png(&spec) {
            Ok(png) => Some(png),
            Err(e) => {
                tracing::warn!(host = %n.host, %metric, error = %e, "Could not draw the graph of a notification.");
                None
            }
        }
    })
}

#[derive(serde::Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/notifications?state=pending|sent|failed&limit=N`: the outbox, newest
/// first, with counts per state.
pub fn router(handle: AlertsHandle) -> Router {
    Router::new().route("/api/v1/notifications", get(list)).with_state(handle)
}

async fn list(AxState(h): AxState<AlertsHandle>, Query(q): Query<ListQuery>) -> impl IntoResponse {
    if !h.db.exists() {
        return (StatusCode::OK, Json(serde_json::json!({ "counts": {}, "messages": [] })));
    }
    let db = h.db.clone();
    let limit = q.limit.unwrap_or(100).min(10_000);
    let read = tokio::task::spawn_blocking(move || outbox::list(&db, q.state.as_deref(), limit)).await;
    match read {
        Ok(Ok((messages, counts))) => {
            (StatusCode::OK, Json(serde_json::json!({ "counts": counts, "messages": messages })))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Could not read the outbox.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({ "error": "could not read the outbox; see the collector log" })),
            )
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": e.to_string() }))),
    }
}

/// `ganglion notify test CONTACT`: sends one test message through each of the contact's
/// channels directly (not through a running collector's outbox) and says how each went.
///
/// # Errors
/// When the contact is unknown or a channel failed.
pub fn send_test(cfg: &AlertsConfig, contact: &str) -> anyhow::Result<Vec<String>> {
    let c =
        cfg.contacts.iter().find(|c| c.name == contact).with_context(|| format!("no [[contact]] named {contact:?}"))?;
    let now = crate::engine::now_secs();
    let note = Note {
        kind: NoteKind::Test,
        cluster: "-".into(),
        host: "ganglion".into(),
        service: "notify test".into(),
        state: "OK".into(),
        output: format!("Test message for {contact}: this channel works."),
        perfdata: String::new(),
        since: now,
        attempt: 1,
        max_attempts: 1,
        number: 0,
        escalated: false,
        time: now,
        metric: None,
    };
    let notes = std::slice::from_ref(&note);
    let key = hex::encode(rand::random::<[u8; 12]>());
    let mut out = Vec::new();
    let base = &cfg.dashboard_url;
    if let Some(e) = &c.email {
        out.push(Outgoing {
            key: format!("{key}.e"),
            channel: Channel::Email,
            contact: c.name.clone(),
            recipient: e.clone(),
            via: String::new(),
            subject: render::subject(notes),
            text: render::text(notes, base),
            html: Some(render::html(notes, base, None)),
            png: None,
        });
    }
    if let Some(s) = &c.sms_email {
        out.push(Outgoing {
            key: format!("{key}.s"),
            channel: Channel::SmsEmail,
            contact: c.name.clone(),
            recipient: s.clone(),
            via: String::new(),
            subject: "ganglion".into(),
            text: render::short(notes),
            html: None,
            png: None,
        });
    }
    if let Some(w) = c.webhook {
        out.push(Outgoing {
            key: format!("{key}.w"),
            channel: Channel::Webhook,
            contact: c.name.clone(),
            recipient: c.phone.clone().unwrap_or_default(),
            via: cfg.webhooks[w].name.clone(),
            subject: render::subject(notes),
            text: render::short(notes),
            html: None,
            png: None,
        });
    }
    let mailer = send::Mailer::new(&cfg.smtp, cfg.send_timeout).ok();
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for m in &out {
        match send::deliver(cfg, mailer.as_ref(), m) {
            Ok(()) => report.push(format!(
                "{} to {}: sent (Message-ID <{}@ganglion>)",
                m.channel.as_str(),
                m.recipient,
                m.key
            )),
            Err(e) => failed.push(format!("{} to {}: {e}", m.channel.as_str(), m.recipient)),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{}", report.iter().chain(failed.iter()).cloned().collect::<Vec<_>>().join("\n"));
    }
    Ok(report)
}

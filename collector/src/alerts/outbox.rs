//! The durable outbox: `data_dir/notifications.db` (SQLite, WAL, `synchronous=FULL`).
//!
//! Tables:
//! - `tracks`: the state machine's record per check ([`super::logic::Track`]);
//! - `notes`: notifications per contact waiting for their group window (`new`) or
//!   held back by the SMS rate limit (`folded`); deleted once in a message;
//! - `messages`: what goes out, one row per channel and recipient, `pending` until
//!   delivered (`sent`) or given up after `max_tries` (`failed`), with the stable key
//!   used as Message-ID and idempotency key; kept [`KEEP_MESSAGES_SECS`] after that.
//!
//! Two threads, each with its own connection:
//! - `alerts-outbox` ([`Writer`]) commits each tick's notes and record changes in one
//!   transaction (so a crash either keeps both or neither), then forms groups whose
//!   window has passed into messages, applying the SMS rate limit;
//! - `alerts-sender` ([`Sender`]) delivers due pending messages, with exponential
//!   backoff; a slow or dead mail server holds only this thread.
//!
//! A message is in the database before any attempt to send it, so a collector killed
//! at any point sends it after restart: at least once, never lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::config::AlertsConfig;
use super::logic::{Note, Track};
use super::render;
use super::send::{self, Channel, Mailer, Outgoing};
use crate::engine::CheckKey;

/// Batches a tick may queue for the writer before the alerts task waits.
pub const WRITER_QUEUE: usize = 64;

/// Sent and failed messages are kept this long for `GET /api/v1/notifications` (and the
/// SMS rate limit's window, which must be shorter), then deleted.
pub const KEEP_MESSAGES_SECS: i64 = 7 * 86_400;

/// Counters shown under `alerts` in `/api/v1/health`.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Notifications decided (one per contact), before grouping.
    pub notifications: AtomicU64,
    /// Messages written to the outbox.
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    /// Messages given up after `max_tries`.
    pub failed: AtomicU64,
    /// Failed attempts that will be tried again.
    pub retried: AtomicU64,
    /// Notifications lost: a record or note the database could not take, a contact no
    /// longer configured.
    pub dropped: AtomicU64,
    /// Problems due that no `[[route]]` sends to anyone.
    pub unrouted: AtomicU64,
    /// Short texts held back by the SMS rate limit (later sent as one summary).
    pub folded: AtomicU64,
    pub db_errors: AtomicU64,
    pub ticks: AtomicU64,
    /// Microseconds the last tick held the engine's table (reading what it needs), and
    /// the longest so far: the one cost alerting puts on checks.
    pub last_view_us: AtomicU64,
    pub max_view_us: AtomicU64,
}

impl AlertStats {
    pub fn to_json(&self) -> serde_json::Value {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "notifications": l(&self.notifications),
            "queued": l(&self.queued),
            "sent": l(&self.sent),
            "failed": l(&self.failed),
            "retried": l(&self.retried),
            "dropped": l(&self.dropped),
            "unrouted": l(&self.unrouted),
            "folded": l(&self.folded),
            "db_errors": l(&self.db_errors),
            "ticks": l(&self.ticks),
            "last_view_us": l(&self.last_view_us),
            "max_view_us": l(&self.max_view_us),
        })
    }
}

pub fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS tracks (
             cluster TEXT NOT NULL, host TEXT NOT NULL, service TEXT NOT NULL, body TEXT NOT NULL,
             PRIMARY KEY (cluster, host, service));
         CREATE TABLE IF NOT EXISTS notes (
             id INTEGER PRIMARY KEY, contact TEXT NOT NULL, created INTEGER NOT NULL,
             body TEXT NOT NULL, state TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS notes_state ON notes (state, contact);
         CREATE TABLE IF NOT EXISTS messages (
             id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, batch TEXT NOT NULL,
             contact TEXT NOT NULL, channel TEXT NOT NULL, recipient TEXT NOT NULL,
             via TEXT NOT NULL, short INTEGER NOT NULL, notes INTEGER NOT NULL,
             subject TEXT NOT NULL, text TEXT NOT NULL, html TEXT, png BLOB,
             state TEXT NOT NULL, tries INTEGER NOT NULL, next_try INTEGER NOT NULL,
             created INTEGER NOT NULL, sent_at INTEGER, last_error TEXT);
         CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_try);
         CREATE INDEX IF NOT EXISTS messages_short ON messages (contact, short, created);",
    )
    .with_context(|| format!("creating the tables of {}", path.display()))?;
    Ok(conn)
}

/// The stored state machine records.
pub fn load_tracks(conn: &Connection) -> anyhow::Result<HashMap<CheckKey, Track>> {
    let mut stmt = conn.prepare("SELECT cluster, host, service, body FROM tracks")?;
    let rows = stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get::<_, String>(3)?)))?;
    let mut out = HashMap::new();
    for row in rows {
        let (key, body) = row?;
        match serde_json::from_str(&body) {
            Ok(t) => {
                out.insert(key, t);
            }
            Err(e) => tracing::warn!(error = %e, "Ignored an unreadable notification record."),
        }
    }
    Ok(out)
}

/// What the alerts task hands to the writer.
pub enum ToWriter {
    Tick { now: i64, notes: Vec<(String, Note)>, changed: Vec<(CheckKey, Option<Track>)> },
}

/// Renders the graph PNG of a notification (or `None`).
pub type GraphFn = Arc<dyn Fn(&Note) -> Option<Vec<u8>> + Send + Sync>;

/// The `alerts-outbox` thread.
pub struct Writer {
    pub conn: Connection,
    pub cfg: Arc<AlertsConfig>,
    pub stats: Arc<AlertStats>,
    pub wake_sender: SyncSender<()>,
    pub graph: Option<GraphFn>,
    /// When old messages are next deleted.
    pub next_prune: i64,
}

fn new_key() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

impl Writer {
    pub fn run(mut self, rx: Receiver<ToWriter>) {
        loop {
            let msg = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let now = crate::engine::now_secs();
            let stored = match msg {
                Some(ToWriter::Tick { now: t, notes, changed }) => self.store_tick(t, notes, changed),
                None => Ok(()),
            };
            if let Err(e) = stored {
                self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "Could not store notifications; they are lost.");
            }
            if now >= self.next_prune {
                self.next_prune = now + 600;
                let pruned = self.conn.execute(
                    "DELETE FROM messages WHERE state != 'pending' AND created < ?1",
                    params![now - KEEP_MESSAGES_SECS.max(self.cfg.sms_rate_window_secs + 1)],
                );
                if let Err(e) = pruned {
                    tracing::warn!(error = %e, "Could not delete old messages.");
                }
            }
            match self.group(now) {
                Ok(0) => {}
                Ok(_) => {
                    let _ = self.wake_sender.try_send(());
                }
                Err(e) => {
                    self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "Could not group notifications; trying again.");
                }
            }
        }
    }

    fn store_tick(
        &mut self,
        now: i64,
        notes: Vec<(String, Note)>,
        changed: Vec<(CheckKey, Option<Track>)>,
    ) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO tracks (cluster, host, service, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM tracks WHERE cluster = ?1 AND host = ?2 AND service = ?3")?;
            for ((c, h, s), t) in &changed {
                match t {
                    Some(t) => put.execute(params![c, h, s, serde_json::to_string(t)?])?,
                    None => del.execute(params![c, h, s])?,
                };
            }
            let mut note =
                tx.prepare_cached("INSERT INTO notes (contact, created, body, state) VALUES (?1, ?2, ?3, 'new')")?;
            for (contact, n) in &notes {
                note.execute(params![contact, now, serde_json::to_string(n)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Turns groups whose window has passed into messages; returns how many were queued.
    pub fn group(&mut self, now: i64) -> anyhow::Result<usize> {
        let window = i64::try_from(self.cfg.group_window.as_secs()).unwrap_or(i64::MAX);
        let ready: Vec<String> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT contact FROM notes WHERE state = 'new' GROUP BY contact HAVING MIN(created) + ?1 <= ?2",
            )?;
            let rows = stmt.query_map(params![window, now], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let folded: Vec<String> = {
            let mut stmt = self.conn.prepare_cached("SELECT DISTINCT contact FROM notes WHERE state = 'folded'")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        // Held-back texts first: when the window has room again, their summary goes
        // before anything newer.
        let mut queued = 0;
        for contact in folded {
            queued += self.group_contact(&contact, now, "folded")?;
        }
        for contact in ready {
            queued += self.group_contact(&contact, now, "new")?;
        }
        Ok(queued)
    }

    fn short_sent_recently(tx: &rusqlite::Transaction<'_>, contact: &str, since: i64) -> rusqlite::Result<i64> {
        tx.query_row(
            "SELECT COUNT(DISTINCT batch) FROM messages WHERE contact = ?1 AND short = 1 AND created > ?2",
            params![contact, since],
            |r| r.get(0),
        )
    }

    fn group_contact(&mut self, name: &str, now: i64, state: &str) -> anyhow::Result<usize> {
        let tx = self.conn.transaction()?;
        let rows: Vec<(i64, String)> = {
            let mut stmt =
                tx.prepare_cached("SELECT id, body FROM notes WHERE contact = ?1 AND state = ?2 ORDER BY id")?;
            let rows = stmt.query_map(params![name, state], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let notes: Vec<Note> = rows.iter().filter_map(|(_, b)| serde_json::from_str(b).ok()).collect();
        let Some(contact) = self.cfg.contacts.iter().find(|c| c.name == name) else {
            tx.execute("DELETE FROM notes WHERE contact = ?1 AND state = ?2", params![name, state])?;
            tx.commit()?;
            self.stats.dropped.fetch_add(ids.len() as u64, Ordering::Relaxed);
            tracing::warn!(contact = %name, notes = ids.len(), "Dropped notifications of a contact no longer configured.");
            return Ok(0);
        };
        let mut out = Vec::new();
        let batch = new_key();
        let base = &self.cfg.dashboard_url;
        let has_short = contact.sms_email.is_some() || contact.webhook.is_some();
        let short_room = has_short
            && Self::short_sent_recently(&tx, name, now - self.cfg.sms_rate_window_secs)?
                < i64::from(self.cfg.sms_rate_limit);
        if state == "new" {
            if let Some(email) = &contact.email {
                let png = self.graph.as_ref().and_then(|g| notes.iter().find_map(|n| g(n)));
                out.push(Outgoing {
                    key: format!("{batch}.e"),
                    channel: Channel::Email,
                    contact: name.to_owned(),
                    recipient: email.clone(),
                    via: String::new(),
                    subject: render::subject(&notes),
                    text: render::text(&notes, base),
                    html: Some(render::html(&notes, base, png.as_ref().map(|_| "graph"))),
                    png,
                });
            }
        }
        let fold = has_short && !short_room;
        if has_short && short_room {
            let text = if state == "folded" { render::folded(&notes) } else { render::short(&notes) };
            if let Some(addr) = &contact.sms_email {
                out.push(Outgoing {
                    key: format!("{batch}.s"),
                    channel: Channel::SmsEmail,
                    contact: name.to_owned(),
                    recipient: addr.clone(),
                    via: String::new(),
                    subject: "ganglion".into(),
                    text: text.clone(),
                    html: None,
                    png: None,
                });
            }
            if let Some(w) = contact.webhook {
                out.push(Outgoing {
                    key: format!("{batch}.w"),
                    channel: Channel::Webhook,
                    contact: name.to_owned(),
                    recipient: contact.phone.clone().unwrap_or_default(),
                    via: self.cfg.webhooks[w].name.clone(),
                    subject: render::subject(&notes),
                    text,
                    html: None,
                    png: None,
                });
            }
        }
        if state == "folded" && fold {
            // Still no room: they wait.
            return Ok(0);
        }
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO messages (key, batch, contact, channel, recipient, via, short, notes, subject, text, html, png,
                                       state, tries, next_try, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'pending', 0, ?13, ?13)",
            )?;
            for m in &out {
                ins.execute(params![
                    m.key,
                    batch,
                    m.contact,
                    m.channel.as_str(),
                    m.recipient,
                    m.via,
                    i64::from(m.channel != Channel::Email),
                    ids.len() as i64,
                    m.subject,
                    m.text,
                    m.html,
                    m.png,
                    now
                ])?;
            }
            // Notes in a message are gone; held-back ones wait for their summary.
            let mut upd = tx.prepare_cached("UPDATE notes SET state = 'folded' WHERE id = ?1")?;
            let mut del = tx.prepare_cached("DELETE FROM notes WHERE id = ?1")?;
            for id in &ids {
                if fold {
                    upd.execute(params![id])?;
                } else {
                    del.execute(params![id])?;
                }
            }
        }
        tx.commit()?;
        if fold {
            self.stats.folded.fetch_add(ids.len() as u64, Ordering::Relaxed);
        }
        self.stats.queued.fetch_add(out.len() as u64, Ordering::Relaxed);
        if !out.is_empty() {
            tracing::info!(contact = %name, notifications = ids.len(), messages = out.len(), folded = fold, "Queued notifications.");
        }
        Ok(out.len())
    }
}

/// The `alerts-sender` thread.
pub struct Sender {
    pub conn: Connection,
    pub cfg: Arc<AlertsConfig>,
    pub stats: Arc<AlertStats>,
}

impl Sender {
    pub fn run(self, wake: Receiver<()>) {
        let mailer = match Mailer::new(&self.cfg.smtp, self.cfg.send_timeout) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(error = %e, "No SMTP transport; emails stay pending.");
                None
            }
        };
        loop {
            match self.send_due(mailer.as_ref()) {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => {
                    self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "Could not read the outbox; trying again.");
                }
            }
            match wake.recv_timeout(Duration::from_secs(1)) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Tries every due pending message once; returns how many were tried.
    fn send_due(&self, mailer: Option<&Mailer>) -> anyhow::Result<usize> {
        let now = crate::engine::now_secs();
        let due: Vec<(i64, u32, Outgoing)> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, tries, key, channel, contact, recipient, via, subject, text, html, png
                 FROM messages WHERE state = 'pending' AND next_try <= ?1 ORDER BY id LIMIT 100",
            )?;
            let rows = stmt.query_map(params![now], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, u32>(1)?,
                    Outgoing {
                        key: r.get(2)?,
                        channel: Channel::parse(&r.get::<_, String>(3)?).unwrap_or(Channel::Email),
                        contact: r.get(4)?,
                        recipient: r.get(5)?,
                        via: r.get(6)?,
                        subject: r.get(7)?,
                        text: r.get(8)?,
                        html: r.get(9)?,
                        png: r.get(10)?,
                    },
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let n = due.len();
        for (id, tries, m) in due {
            let result = send::deliver(&self.cfg, mailer, &m);
            let now = crate::engine::now_secs();
            match result {
                Ok(()) => {
                    self.conn.execute(
                        "UPDATE messages SET state = 'sent', tries = ?1, sent_at = ?2, last_error = NULL WHERE id = ?3",
                        params![tries + 1, now, id],
                    )?;
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(contact = %m.contact, channel = m.channel.as_str(), key = %m.key, "Sent a notification.");
                }
                Err(e) => {
                    let tries = tries + 1;
                    let err = e.to_string();
                    if tries >= self.cfg.max_tries {
                        self.conn.execute(
                            "UPDATE messages SET state = 'failed', tries = ?1, last_error = ?2 WHERE id = ?3",
                            params![tries, err, id],
                        )?;
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(contact = %m.contact, channel = m.channel.as_str(), tries, error = %err, "Gave up on a notification.");
                    } else {
                        let wait = backoff(self.cfg.retry_secs, self.cfg.max_retry_secs, tries);
                        self.conn.execute(
                            "UPDATE messages SET tries = ?1, last_error = ?2, next_try = ?3 WHERE id = ?4",
                            params![tries, err, now + i64::try_from(wait).unwrap_or(i64::MAX / 2), id],
                        )?;
                        self.stats.retried.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(contact = %m.contact, channel = m.channel.as_str(), tries, retry_in_secs = wait, error = %err, "Could not send a notification; will retry.");
                    }
                }
            }
        }
        Ok(n)
    }
}

/// Seconds before try `tries + 1`: `retry · 2^(tries-1)`, at most `max`.
pub fn backoff(retry: u64, max: u64, tries: u32) -> u64 {
    retry.saturating_mul(1u64 << (tries.saturating_sub(1)).min(40)).min(max)
}

/// One outbox row as `GET /api/v1/notifications` shows it.
#[derive(Debug, Serialize)]
pub struct MessageView {
    pub id: i64,
    pub key: String,
    pub contact: String,
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub text: String,
    /// Notifications in this message (more than one: a group).
    pub notifications: i64,
    pub state: String,
    pub tries: u32,
    pub created: i64,
    pub next_try: i64,
    pub sent_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Newest first, optionally of one state.
pub fn list(
    path: &PathBuf,
    state: Option<&str>,
    limit: usize,
) -> anyhow::Result<(Vec<MessageView>, serde_json::Value)> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut stmt = conn.prepare(
        "SELECT id, key, contact, channel, recipient, subject, text, notes, state, tries, created, next_try, sent_at, last_error
         FROM messages WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![state, limit as i64], |r| {
        Ok(MessageView {
            id: r.get(0)?,
            key: r.get(1)?,
            contact: r.get(2)?,
            channel: r.get(3)?,
            recipient: r.get(4)?,
            subject: r.get(5)?,
            text: r.get(6)?,
            notifications: r.get(7)?,
            state: r.get(8)?,
            tries: r.get(9)?,
            created: r.get(10)?,
            next_try: r.get(11)?,
            sent_at: r.get(12)?,
            last_error: r.get(13)?,
        })
    })?;
    let list = rows.collect::<Result<Vec<_>, _>>()?;
    let mut counts = serde_json::Map::new();
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM messages GROUP BY state")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (s, n) = row?;
        counts.insert(s, n.into());
    }
    let waiting: i64 = conn.query_row("SELECT COUNT(*) FROM notes", [], |r| r.get(0)).optional()?.unwrap_or(0);
    counts.insert("grouping".into(), waiting.into());
    Ok((list, serde_json::Value::Object(counts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b: Vec<u64> = (1..=6).map(|t| backoff(30, 200, t)).collect();
        assert_eq!(b, [30, 60, 120, 200, 200, 200]);
        assert_eq!(backoff(30, 3600, 100), 3600);
    }
}

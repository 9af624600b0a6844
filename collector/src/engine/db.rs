//! The state database: current status of every check with its flap history and
//! acknowledgement, the state history, downtimes and comments, in SQLite (WAL mode), so a
//! restarted collector resumes with the same states, attempts, acknowledgements and
//! freshness clocks and does not announce old problems as new.
//!
//! One thread owns the writing connection ([`Writer`]): the engine hands it [`Batch`]es
//! and never waits for SQLite. Each batch is one transaction. The API reads history
//! through its own read-only connection, which WAL lets run beside the writer.
//!
//! Statuses, flap histories, acknowledgements and downtimes are stored as JSON of the
//! `ganglion-checks` types, which are the one definition of what the state machine
//! remembers; a column per field would have to follow every change of them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use ganglion_checks::ack::Acknowledgement;
use ganglion_checks::downtime::{DowntimeId, DowntimeSpec, DowntimeState};
use ganglion_checks::flap::FlapDetector;
use ganglion_checks::plugin::PluginOutput;
use ganglion_checks::state::{CheckState, HostState, HostStatus, ServiceStatus, Transition};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::table::{Instance, Obj};
use super::{CheckKey, Comment, EngineStats};

/// What was saved of one service check.
#[derive(Debug, Clone)]
pub struct SavedCheck {
    pub status: ServiceStatus,
    pub output: PluginOutput,
    pub last_result: Option<i64>,
    /// `None` in rows written before flap detection was stored.
    pub flap: Option<FlapDetector>,
    pub ack: Option<Acknowledgement>,
    pub ack_comment: Option<u64>,
}

/// What was saved of one host check.
#[derive(Debug, Clone)]
pub struct SavedHost {
    pub status: HostStatus,
    pub output: String,
    pub flap: Option<FlapDetector>,
    pub ack: Option<Acknowledgement>,
    pub ack_comment: Option<u64>,
}

/// Everything read at start.
#[derive(Debug, Default)]
pub struct Saved {
    pub checks: HashMap<CheckKey, SavedCheck>,
    pub hosts: HashMap<(String, String), SavedHost>,
    pub downtimes: Vec<(DowntimeId, DowntimeSpec, DowntimeState)>,
    pub comments: Vec<Comment>,
    pub next_downtime_id: u64,
    pub next_comment_id: u64,
}

/// An acknowledgement as stored, with the id of its comment.
#[derive(Debug, Serialize, Deserialize)]
struct AckRecord {
    #[serde(flatten)]
    ack: Acknowledgement,
    comment_id: Option<u64>,
}

fn ack_json(ack: Option<&Acknowledgement>, comment_id: Option<u64>) -> Option<String> {
    ack.map(|a| {
        serde_json::to_string(&AckRecord { ack: a.clone(), comment_id }).expect("an acknowledgement always serializes")
    })
}

fn parse_ack(json: Option<String>) -> (Option<Acknowledgement>, Option<u64>) {
    match json.and_then(|j| serde_json::from_str::<AckRecord>(&j).ok()) {
        Some(r) => (Some(r.ack), r.comment_id),
        None => (None, None),
    }
}

/// One service row to write.
#[derive(Debug)]
pub struct ServiceRow {
    pub key: CheckKey,
    pub saved: SavedCheck,
}

impl ServiceRow {
    pub fn of(cluster: &str, host: &str, inst: &Instance) -> ServiceRow {
        ServiceRow {
            key: (cluster.to_owned(), host.to_owned(), inst.def.name.clone()),
            saved: SavedCheck {
                status: inst.obj.status.clone(),
                output: inst.output(),
                last_result: inst.last_result,
                flap: Some(inst.obj.flap.clone()),
                ack: inst.obj.ack.as_deref().cloned(),
                ack_comment: inst.obj.ack_comment,
            },
        }
    }
}

/// One host row to write.
#[derive(Debug)]
pub struct HostRow {
    pub key: (String, String),
    pub saved: SavedHost,
}

impl HostRow {
    pub fn of(cluster: &str, host: &str, obj: &Obj<HostState>) -> HostRow {
        HostRow {
            key: (cluster.to_owned(), host.to_owned()),
            saved: SavedHost {
                status: obj.status.clone(),
                output: obj.output.output.clone(),
                flap: Some(obj.flap.clone()),
                ack: obj.ack.as_deref().cloned(),
                ack_comment: obj.ack_comment,
            },
        }
    }
}

/// Changes to write in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub services: Vec<ServiceRow>,
    pub hosts: Vec<HostRow>,
    pub history: Vec<HistoryRow>,
    /// The complete set of downtimes, when any changed (there are few; rewriting them
    /// all keeps triggered chains consistent).
    pub downtimes: Option<Vec<(DowntimeId, DowntimeSpec, DowntimeState)>>,
    pub next_downtime_id: Option<u64>,
    pub comments: Vec<Comment>,
    pub deleted_comments: Vec<u64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.hosts.is_empty()
            && self.history.is_empty()
            && self.downtimes.is_none()
            && self.comments.is_empty()
            && self.deleted_comments.is_empty()
    }

    fn rows(&self) -> usize {
        self.services.len() + self.hosts.len()
    }

    /// Appends `later` so that its rows win where both write the same key.
    fn append(&mut self, mut later: Batch) {
        self.services.append(&mut later.services);
        self.hosts.append(&mut later.hosts);
        self.history.append(&mut later.history);
        if later.downtimes.is_some() {
            self.downtimes = later.downtimes;
        }
        self.next_downtime_id = later.next_downtime_id.or(self.next_downtime_id);
        self.comments.append(&mut later.comments);
        self.deleted_comments.append(&mut later.deleted_comments);
    }
}

/// One state change.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub time: i64,
    pub cluster: String,
    pub host: String,
    /// Empty for the host.
    pub service: String,
    pub state: String,
    pub state_type: String,
    pub attempt: u32,
    pub hard_change: bool,
    pub output: String,
}

impl HistoryRow {
    pub fn service<S: CheckState>(key: &CheckKey, t: &Transition<S>, output: &str, now: i64) -> HistoryRow {
        HistoryRow {
            time: now,
            cluster: key.0.clone(),
            host: key.1.clone(),
            service: key.2.clone(),
            state: t.state.to_string(),
            state_type: t.state_type.to_string(),
            attempt: t.attempt,
            hard_change: t.hard_state_change,
            output: output.to_owned(),
        }
    }
}

pub struct Db {
    conn: Connection,
}

/// Schema version in `PRAGMA user_version`: 1 had statuses and history only; 2 adds
/// flap histories and acknowledgements to the status tables, downtimes, comments and
/// the id counters.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS service_status (
    cluster TEXT NOT NULL, host TEXT NOT NULL, service TEXT NOT NULL,
    status TEXT NOT NULL, output TEXT NOT NULL, long_output TEXT NOT NULL, perfdata TEXT NOT NULL,
    last_result INTEGER,
    PRIMARY KEY (cluster, host, service)
);
CREATE TABLE IF NOT EXISTS host_status (
    cluster TEXT NOT NULL, host TEXT NOT NULL, status TEXT NOT NULL, output TEXT NOT NULL,
    PRIMARY KEY (cluster, host)
);
CREATE TABLE IF NOT EXISTS history (
    time INTEGER NOT NULL, cluster TEXT NOT NULL, host TEXT NOT NULL, service TEXT NOT NULL,
    state TEXT NOT NULL, state_type TEXT NOT NULL, attempt INTEGER NOT NULL, hard_change INTEGER NOT NULL,
    output TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_check ON history (host, service, time);
CREATE TABLE IF NOT EXISTS downtimes (id INTEGER PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY, host TEXT NOT NULL, service TEXT, time INTEGER NOT NULL,
    author TEXT NOT NULL, text TEXT NOT NULL, source TEXT NOT NULL, persistent INTEGER NOT NULL,
    downtime_id INTEGER
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

impl Db {
    /// Opens (or creates, or upgrades) the database file.
    ///
    /// # Errors
    /// When the file cannot be opened or is not a database of this layout.
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        // WAL: readers (the API) do not block the writer; NORMAL sync is durable across a
        // process crash, which is what a state file needs (a power cut may lose the last
        // second of states, never corrupt the file).
        conn.pragma_update(None, "journal_mode", "WAL").with_context(|| format!("WAL mode on {}", path.display()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA).with_context(|| format!("creating tables in {}", path.display()))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < 2 {
            for table in ["service_status", "host_status"] {
                let has: bool = conn
                    .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = 'flap'"))?
                    .exists([])?;
                if !has {
                    conn.execute_batch(&format!(
                        "ALTER TABLE {table} ADD COLUMN flap TEXT; ALTER TABLE {table} ADD COLUMN ack TEXT;"
                    ))
                    .with_context(|| format!("upgrading {table} in {}", path.display()))?;
                }
            }
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        Ok(Db { conn })
    }

    /// Reads everything saved. Rows that no longer decode (a layout from another
    /// version) are skipped with a warning: that check starts PENDING.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub fn load(&self) -> anyhow::Result<Saved> {
        let mut saved = Saved::default();
        let mut stmt = self.conn.prepare(
            "SELECT cluster, host, service, status, output, long_output, perfdata, last_result, flap, ack
             FROM service_status",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?),
                r.get::<_, String>(3)?,
                PluginOutput { output: r.get(4)?, long_output: r.get(5)?, perfdata: r.get(6)? },
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })?;
        for row in rows {
            let (key, json, output, last_result, flap, ack) = row?;
            match serde_json::from_str::<ServiceStatus>(&json) {
                Ok(status) => {
                    let flap = flap.and_then(|f| serde_json::from_str(&f).ok());
                    let (ack, ack_comment) = parse_ack(ack);
                    saved.checks.insert(key, SavedCheck { status, output, last_result, flap, ack, ack_comment });
                }
                Err(e) => {
                    tracing::warn!(host = %key.1, service = %key.2, error = %e, "Saved check state unreadable; it starts pending.")
                }
            }
        }
        let mut stmt = self.conn.prepare("SELECT cluster, host, status, output, flap, ack FROM host_status")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        for row in rows {
            let (key, json, output, flap, ack) = row?;
            if let Ok(status) = serde_json::from_str::<HostStatus>(&json) {
                let flap = flap.and_then(|f| serde_json::from_str(&f).ok());
                let (ack, ack_comment) = parse_ack(ack);
                saved.hosts.insert(key, SavedHost { status, output, flap, ack, ack_comment });
            }
        }
        let mut stmt = self.conn.prepare("SELECT id, spec, state FROM downtimes ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        for row in rows {
            let (id, spec, state) = row?;
            match (serde_json::from_str(&spec), serde_json::from_str(&state)) {
                (Ok(spec), Ok(state)) => saved.downtimes.push((id as u64, spec, state)),
                _ => tracing::warn!(id, "Saved downtime unreadable; dropped."),
            }
        }
        let mut stmt = self.conn.prepare(
            "SELECT id, host, service, time, author, text, source, persistent, downtime_id FROM comments ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, bool>(7)?,
                r.get::<_, Option<i64>>(8)?,
            ))
        })?;
        for row in rows {
            let (id, host, service, time, author, text, source, persistent, downtime_id) = row?;
            let Ok(source) = serde_json::from_value(serde_json::Value::String(source)) else { continue };
            saved.comments.push(Comment {
                id: id as u64,
                host,
                service,
                time,
                author,
                text,
                source,
                persistent,
                downtime_id: downtime_id.map(|d| d as u64),
            });
        }
        let meta = |key: &str| -> anyhow::Result<u64> {
            Ok(self
                .conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get::<_, i64>(0))
                .optional()?
                .unwrap_or(1) as u64)
        };
        saved.next_downtime_id = meta("next_downtime_id")?;
        saved.next_comment_id = meta("next_comment_id")?;
        Ok(saved)
    }

    /// Writes a batch in one transaction.
    ///
    /// # Errors
    /// When SQLite fails (disk full, I/O error); nothing of the batch is written then.
    pub fn write(&mut self, batch: &Batch) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut svc = tx.prepare_cached(
                "INSERT INTO service_status (cluster, host, service, status, output, long_output, perfdata,
                    last_result, flap, ack)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (cluster, host, service) DO UPDATE SET status = ?4, output = ?5, long_output = ?6,
                 perfdata = ?7, last_result = ?8, flap = ?9, ack = ?10",
            )?;
            for ServiceRow { key, saved } in &batch.services {
                svc.execute(params![
                    key.0,
                    key.1,
                    key.2,
                    serde_json::to_string(&saved.status)?,
                    saved.output.output,
                    saved.output.long_output,
                    saved.output.perfdata,
                    saved.last_result,
                    saved.flap.as_ref().map(serde_json::to_string).transpose()?,
                    ack_json(saved.ack.as_ref(), saved.ack_comment),
                ])?;
            }
            let mut host = tx.prepare_cached(
                "INSERT INTO host_status (cluster, host, status, output, flap, ack) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (cluster, host) DO UPDATE SET status = ?3, output = ?4, flap = ?5, ack = ?6",
            )?;
            for HostRow { key, saved } in &batch.hosts {
                host.execute(params![
                    key.0,
                    key.1,
                    serde_json::to_string(&saved.status)?,
                    saved.output,
                    saved.flap.as_ref().map(serde_json::to_string).transpose()?,
                    ack_json(saved.ack.as_ref(), saved.ack_comment),
                ])?;
            }
            let mut hist = tx.prepare_cached(
                "INSERT INTO history (time, cluster, host, service, state, state_type, attempt, hard_change, output)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for h in &batch.history {
                hist.execute(params![
                    h.time,
                    h.cluster,
                    h.host,
                    h.service,
                    h.state,
                    h.state_type,
                    h.attempt,
                    h.hard_change,
                    h.output
                ])?;
            }
            if let Some(downtimes) = &batch.downtimes {
                tx.execute("DELETE FROM downtimes", [])?;
                let mut ins = tx.prepare_cached("INSERT INTO downtimes (id, spec, state) VALUES (?1, ?2, ?3)")?;
                for (id, spec, state) in downtimes {
                    ins.execute(params![*id as i64, serde_json::to_string(spec)?, serde_json::to_string(state)?])?;
                }
            }
            let mut meta = tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = MAX(value, ?2)",
            )?;
            if let Some(next) = batch.next_downtime_id {
                meta.execute(params!["next_downtime_id", next as i64])?;
            }
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO comments (id, host, service, time, author, text, source, persistent, downtime_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for c in &batch.comments {
                let source = serde_json::to_value(c.source)?;
                ins.execute(params![
                    c.id as i64,
                    c.host,
                    c.service,
                    c.time,
                    c.author,
                    c.text,
                    source.as_str().unwrap_or("user"),
                    c.persistent,
                    c.downtime_id.map(|d| d as i64)
                ])?;
                meta.execute(params!["next_comment_id", c.id as i64 + 1])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM comments WHERE id = ?1")?;
            for id in &batch.deleted_comments {
                del.execute([*id as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// A read-only connection for history queries.
///
/// # Errors
/// When the file cannot be opened.
pub fn open_reader(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("opening {} for reading", path.display()))?;
    Ok(conn)
}

/// State changes, newest first.
///
/// # Errors
/// When the database cannot be read.
pub fn history(
    conn: &Connection,
    host: Option<&str>,
    service: Option<&str>,
    limit: usize,
) -> anyhow::Result<Vec<HistoryRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT time, cluster, host, service, state, state_type, attempt, hard_change, output FROM history
         WHERE (?1 IS NULL OR host = ?1) AND (?2 IS NULL OR service = ?2)
         ORDER BY time DESC, rowid DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![host, service, limit as i64], |r| {
        Ok(HistoryRow {
            time: r.get(0)?,
            cluster: r.get(1)?,
            host: r.get(2)?,
            service: r.get(3)?,
            state: r.get(4)?,
            state_type: r.get(5)?,
            attempt: r.get(6)?,
            hard_change: r.get(7)?,
            output: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Called once a batch is committed (or failed), e.g. to answer an API request only
/// when its acknowledgement is durable.
pub type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Rows kept for a retry after a failed write, at most; past that the oldest failed
/// batch is given up (logged as an error: those states are lost if the process dies
/// before they change again).
const MAX_RETRY_ROWS: usize = 1_000_000;

/// Batches a tick may have queued before the next tick skips collecting rows (they stay
/// dirty and are collected later): a slow disk delays state writes, never the engine.
const MAX_IN_FLIGHT: usize = 2;

/// The writer thread and the queue to it.
pub struct Writer {
    tx: Option<std::sync::mpsc::Sender<(Batch, Option<Done>)>>,
    in_flight: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread that owns `db`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(mut db: Db, stats: Arc<EngineStats>) -> anyhow::Result<Writer> {
        let (tx, rx) = std::sync::mpsc::channel::<(Batch, Option<Done>)>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = in_flight.clone();
        let thread = std::thread::Builder::new()
            .name("check-states".into())
            .spawn(move || {
                let mut retry: Option<Batch> = None;
                for (batch, done) in rx {
                    let batch = match retry.take() {
                        Some(mut r) => {
                            r.append(batch);
                            r
                        }
                        None => batch,
                    };
                    let rows = batch.rows() as u64;
                    match db.write(&batch) {
                        Ok(()) => {
                            stats.written.fetch_add(rows, Ordering::Relaxed);
                            if let Some(done) = done {
                                done(Ok(()));
                            }
                        }
                        Err(e) => {
                            stats.db_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(error = %format!("{e:#}"), rows, "Could not write check states; retrying with the next batch.");
                            if let Some(done) = done {
                                done(Err(format!("{e:#}")));
                            }
                            if batch.rows() + batch.history.len() <= MAX_RETRY_ROWS {
                                retry = Some(batch);
                            } else {
                                tracing::error!(rows, "Gave up writing a batch of check states.");
                            }
                        }
                    }
                    counter.fetch_sub(1, Ordering::Relaxed);
                }
            })
            .context("starting the check-state writer thread")?;
        Ok(Writer { tx: Some(tx), in_flight, thread: Some(thread) })
    }

    /// Whether a tick should collect rows now.
    pub fn has_room(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) < MAX_IN_FLIGHT
    }

    /// Whether every queued batch is written.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Queues a batch; `done` runs after its commit.
    pub fn send(&self, batch: Batch, done: Option<Done>) {
        let Some(tx) = &self.tx else { return };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Err(std::sync::mpsc::SendError((_, done))) = tx.send((batch, done)) {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Some(done) = done {
                done(Err("the state writer stopped".into()));
            }
        }
    }

    /// Writes what is queued and stops the thread (blocking).
    pub fn close(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_checks::ack::AckKind;
    use ganglion_checks::downtime::{Mode, Schedule, Target};
    use ganglion_checks::state::{ResultContext, ServiceState, StateSettings};

    #[test]
    fn everything_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut db = Db::open(&path).unwrap();
        let mut status = ServiceStatus::new();
        let t = status.apply(&StateSettings::default(), ServiceState::Critical, 100, ResultContext::default());
        let key: CheckKey = ("c".into(), "h".into(), "disk".into());
        let out = PluginOutput { output: "DISK CRITICAL".into(), long_output: "a\nb".into(), perfdata: "u=1".into() };
        let ack =
            Acknowledgement::place(ServiceState::Critical, AckKind::Sticky, "ann", "on it", true, false, 101).unwrap();
        let mut flap = FlapDetector::new(0);
        flap.record(2, Default::default());
        let spec = DowntimeSpec {
            target: Target { host: "h".into(), service: None },
            schedule: Schedule::Recurring { cron: "0 2 * * Sun".into(), window_secs: 7200, time_zone: "UTC".into() },
            mode: Mode::Fixed,
            trigger: None,
            author: "ann".into(),
            comment: "weekly".into(),
        };
        let comment = Comment {
            id: 7,
            host: "h".into(),
            service: Some("disk".into()),
            time: 101,
            author: "ann".into(),
            text: "on it".into(),
            source: super::super::CommentSource::Acknowledgement,
            persistent: false,
            downtime_id: None,
        };
        let batch = Batch {
            services: vec![ServiceRow {
                key: key.clone(),
                saved: SavedCheck {
                    status: status.clone(),
                    output: out,
                    last_result: Some(100),
                    flap: Some(flap.clone()),
                    ack: Some(ack.clone()),
                    ack_comment: Some(7),
                },
            }],
            history: vec![HistoryRow::service(&key, &t, "DISK CRITICAL", 100)],
            downtimes: Some(vec![(3, spec.clone(), DowntimeState::default())]),
            next_downtime_id: Some(4),
            comments: vec![comment.clone()],
            ..Batch::default()
        };
        db.write(&batch).unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        let saved = db.load().unwrap();
        let s = &saved.checks[&key];
        assert_eq!(s.status, status);
        assert_eq!(s.output.long_output, "a\nb");
        assert_eq!(s.last_result, Some(100));
        assert_eq!(s.flap.as_ref(), Some(&flap));
        assert_eq!(s.ack.as_ref(), Some(&ack));
        assert_eq!(s.ack_comment, Some(7));
        assert_eq!(saved.downtimes, vec![(3, spec, DowntimeState::default())]);
        assert_eq!(saved.next_downtime_id, 4);
        assert_eq!(saved.comments.len(), 1);
        assert_eq!(saved.comments[0].text, "on it");
        assert_eq!(saved.next_comment_id, 8);
        let reader = open_reader(&path).unwrap();
        let h = history(&reader, Some("h"), None, 10).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].state.as_str(), h[0].state_type.as_str()), ("CRITICAL", "SOFT"));
    }

    #[test]
    fn upgrades_a_version_1_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE service_status (cluster TEXT NOT NULL, host TEXT NOT NULL, service TEXT NOT NULL,
                    status TEXT NOT NULL, output TEXT NOT NULL, long_output TEXT NOT NULL, perfdata TEXT NOT NULL,
                    last_result INTEGER, PRIMARY KEY (cluster, host, service));
                 CREATE TABLE host_status (cluster TEXT NOT NULL, host TEXT NOT NULL, status TEXT NOT NULL,
                    output TEXT NOT NULL, PRIMARY KEY (cluster, host));",
            )
            .unwrap();
            let status = serde_json::to_string(&ServiceStatus::new()).unwrap();
            conn.execute("INSERT INTO service_status VALUES ('c', 'h', 's', ?1, 'old', '', '', 5)", [status]).unwrap();
        }
        let db = Db::open(&path).unwrap();
        let saved = db.load().unwrap();
        let s = &saved.checks[&("c".into(), "h".into(), "s".into())];
        assert_eq!(
            (s.output.output.as_str(), s.last_result, s.flap.is_none(), s.ack.is_none()),
            ("old", Some(5), true, true)
        );
    }
}

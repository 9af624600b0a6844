//! The state database: current status of every check and the state history, in SQLite
//! (WAL mode), so a restarted collector resumes with the same states, attempts and
//! freshness clocks and does not announce old problems as new.
//!
//! Statuses are stored as JSON of `ganglion-checks`' `Status`, which is the one
//! definition of what the state machine remembers; a column per field would have to
//! follow every change of it.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use ganglion_checks::plugin::PluginOutput;
use ganglion_checks::state::{CheckState, HostStatus, ServiceStatus, Transition};
use rusqlite::{params, Connection};
use serde::Serialize;

use super::CheckKey;

/// What was saved of one service check.
#[derive(Debug, Clone)]
pub struct SavedCheck {
    pub status: ServiceStatus,
    pub output: PluginOutput,
    pub last_result: Option<i64>,
}

/// Everything read at start.
#[derive(Debug, Default)]
pub struct Saved {
    pub checks: HashMap<CheckKey, SavedCheck>,
    pub hosts: HashMap<(String, String), (HostStatus, String)>,
}

/// One row to write.
pub enum Row {
    Check { key: CheckKey, saved: SavedCheck },
    Host { key: (String, String), status: HostStatus, output: String },
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

    pub fn host<S: CheckState>(cluster: &str, host: &str, t: &Transition<S>, output: &str, now: i64) -> HistoryRow {
        HistoryRow::service(&(cluster.to_owned(), host.to_owned(), String::new()), t, output, now)
    }
}

pub struct Db {
    conn: Connection,
    pending_history: Vec<HistoryRow>,
}

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
";

impl Db {
    /// Opens (or creates) the database file.
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
        Ok(Db { conn, pending_history: Vec::new() })
    }

    /// Reads every saved status. Rows that no longer decode (a status layout from
    /// another version) are skipped with a warning: that check starts PENDING.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub fn load(&self) -> anyhow::Result<Saved> {
        let mut saved = Saved::default();
        let mut stmt = self.conn.prepare(
            "SELECT cluster, host, service, status, output, long_output, perfdata, last_result FROM service_status",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?),
                r.get::<_, String>(3)?,
                PluginOutput { output: r.get(4)?, long_output: r.get(5)?, perfdata: r.get(6)? },
                r.get::<_, Option<i64>>(7)?,
            ))
        })?;
        for row in rows {
            let (key, json, output, last_result) = row?;
            match serde_json::from_str::<ServiceStatus>(&json) {
                Ok(status) => {
                    saved.checks.insert(key, SavedCheck { status, output, last_result });
                }
                Err(e) => {
                    tracing::warn!(host = %key.1, service = %key.2, error = %e, "Saved check state unreadable; it starts pending.")
                }
            }
        }
        let mut stmt = self.conn.prepare("SELECT cluster, host, status, output FROM host_status")?;
        let rows = stmt.query_map([], |r| {
            Ok(((r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?;
        for row in rows {
            let (key, json, output) = row?;
            if let Ok(status) = serde_json::from_str::<HostStatus>(&json) {
                saved.hosts.insert(key, (status, output));
            }
        }
        Ok(saved)
    }

    /// Keeps a state change for the next [`Db::write`].
    pub fn queue_history(&mut self, row: HistoryRow) {
        self.pending_history.push(row);
    }

    /// Writes statuses and queued history in one transaction.
    ///
    /// # Errors
    /// When SQLite fails (disk full, I/O error); the queued history is kept for the next
    /// attempt and the statuses are written again when they next change.
    pub fn write(&mut self, rows: Vec<Row>) -> anyhow::Result<()> {
        if rows.is_empty() && self.pending_history.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut svc = tx.prepare_cached(
                "INSERT INTO service_status (cluster, host, service, status, output, long_output, perfdata, last_result)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (cluster, host, service) DO UPDATE SET status = ?4, output = ?5, long_output = ?6,
                 perfdata = ?7, last_result = ?8",
            )?;
            let mut host = tx.prepare_cached(
                "INSERT INTO host_status (cluster, host, status, output) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (cluster, host) DO UPDATE SET status = ?3, output = ?4",
            )?;
            for row in &rows {
                match row {
                    Row::Check { key, saved } => {
                        svc.execute(params![
                            key.0,
                            key.1,
                            key.2,
                            serde_json::to_string(&saved.status)?,
                            saved.output.output,
                            saved.output.long_output,
                            saved.output.perfdata,
                            saved.last_result
                        ])?;
                    }
                    Row::Host { key, status, output } => {
                        host.execute(params![key.0, key.1, serde_json::to_string(status)?, output])?;
                    }
                }
            }
            let mut hist = tx.prepare_cached(
                "INSERT INTO history (time, cluster, host, service, state, state_type, attempt, hard_change, output)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for h in &self.pending_history {
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
        }
        tx.commit()?;
        self.pending_history.clear();
        Ok(())
    }

    /// State changes, newest first.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub fn history(&self, host: Option<&str>, service: Option<&str>, limit: usize) -> anyhow::Result<Vec<HistoryRow>> {
        let mut stmt = self.conn.prepare_cached(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_checks::state::{ResultContext, ServiceState, StateSettings};

    #[test]
    fn statuses_and_history_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut db = Db::open(&path).unwrap();
        let mut status = ServiceStatus::new();
        let t = status.apply(&StateSettings::default(), ServiceState::Critical, 100, ResultContext::default());
        let key: CheckKey = ("c".into(), "h".into(), "disk".into());
        db.queue_history(HistoryRow::service(&key, &t, "DISK CRITICAL", 100));
        let out = PluginOutput { output: "DISK CRITICAL".into(), long_output: "a\nb".into(), perfdata: "u=1".into() };
        db.write(vec![Row::Check {
            key: key.clone(),
            saved: SavedCheck { status: status.clone(), output: out, last_result: Some(100) },
        }])
        .unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        let saved = db.load().unwrap();
        let s = &saved.checks[&key];
        assert_eq!(s.status, status);
        assert_eq!(s.output.long_output, "a\nb");
        assert_eq!(s.last_result, Some(100));
        let h = db.history(Some("h"), None, 10).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].state, "CRITICAL");
        assert_eq!(h[0].state_type, "SOFT");
    }
}

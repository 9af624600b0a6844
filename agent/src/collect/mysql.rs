//! MySQL and MariaDB through a client connection: `SHOW GLOBAL STATUS`,
//! `SHOW GLOBAL VARIABLES` and, on a replica, `SHOW REPLICA STATUS`.
//!
//! This module owns the connection and turning the server's variables into `mysql_*`
//! readings: rates of the counters (restart-safe, with `Uptime` as the server's
//! uptime), the gauges, and the tuning ratios operators watch — MyISAM key cache
//! misses (`Key_reads / Key_read_requests`, keep below 1 %), on-disk temporary tables
//! (`Created_tmp_disk_tables / Created_tmp_tables`), InnoDB buffer pool misses
//! (`Innodb_buffer_pool_reads / Innodb_buffer_pool_read_requests`) and, where the
//! server still has an enabled query cache, its hit share and low-memory prunes.
//! Ratios are over the interval (what the server does now, not since it started)
//! and are left out for an interval in which their denominator did not move.
//!
//! One connection is kept open between collections (a reconnect per interval would
//! cost an authentication each time and show up in `Connections`); any error or
//! timeout drops it and the next collection reconnects. The client is async and runs
//! on the agent's runtime thread, so a slow server holds up nothing else. The status is
//! read every collection; the variables, which change only by an administrator's
//! hand, and the replica status of a server that is not a replica are read after each
//! connect and then every [`REREAD_EVERY`] collections, which keeps a collection to
//! one round trip. The queries need no privilege except the replica status, which
//! needs `REPLICATION CLIENT` (MySQL) or `SLAVE MONITOR` (MariaDB 10.5 and later);
//! without it the replica metrics are left out and the rest is reported. The server
//! applies such a GRANT to new sessions only, so it is asked for again after a login.
//! `docs/METRICS.md` has the GRANT.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlRow, MySqlSslMode};
use sqlx::{AssertSqlSafe, Column as _, ConnectOptions as _, Connection as _, Row as _};
use tokio::time::timeout_at;

use super::apps::{AppError, AppSource, Collecting};
use super::rate::ServerCounters;
use super::{counter, gauge, Reading};
use crate::config::{MysqlConfig, MysqlTarget};

/// A counter turned into a rate: metric name, status variable, unit, description,
/// and whether it belongs to the query cache (reported only when the cache is on).
const RATES: [(&str, &str, &str, &str, bool); 17] = [
    ("mysql_questions", "Questions", "queries/sec", "Statements sent by clients (Questions).", false),
    ("mysql_com_select", "Com_select", "queries/sec", "SELECT statements (Com_select).", false),
    ("mysql_com_insert", "Com_insert", "queries/sec", "INSERT statements (Com_insert).", false),
    ("mysql_com_update", "Com_update", "queries/sec", "UPDATE statements (Com_update).", false),
    ("mysql_com_delete", "Com_delete", "queries/sec", "DELETE statements (Com_delete).", false),
    ("mysql_slow_queries", "Slow_queries", "queries/sec", "Queries slower than long_query_time.", false),
    ("mysql_bytes_received", "Bytes_received", "bytes/sec", "Bytes received from clients.", false),
    ("mysql_bytes_sent", "Bytes_sent", "bytes/sec", "Bytes sent to clients.", false),
    ("mysql_aborted_connects", "Aborted_connects", "connections/sec", "Failed connection attempts.", false),
    ("mysql_created_tmp_tables", "Created_tmp_tables", "tables/sec", "Internal temporary tables created.", false),
    (
        "mysql_created_tmp_disk_tables",
        "Created_tmp_disk_tables",
        "tables/sec",
        "Internal temporary tables created on disk.",
        false,
    ),
    ("mysql_key_read_requests", "Key_read_requests", "reads/sec", "MyISAM key cache block reads.", false),
    ("mysql_key_reads", "Key_reads", "reads/sec", "MyISAM key blocks read from disk (key cache misses).", false),
    (
        "mysql_innodb_buffer_pool_read_requests",
        "Innodb_buffer_pool_read_requests",
        "reads/sec",
        "InnoDB logical reads.",
        false,
    ),
    (
        "mysql_innodb_buffer_pool_reads",
        "Innodb_buffer_pool_reads",
        "reads/sec",
        "InnoDB reads the buffer pool could not serve, from disk.",
        false,
    ),
    ("mysql_qcache_hits", "Qcache_hits", "queries/sec", "Queries answered from the query cache.", true),
    ("mysql_qcache_inserts", "Qcache_inserts", "queries/sec", "Queries added to the query cache.", true),
];

/// The counters' own values, as `<metric>_total`, in the order of [`RATES`]: spelled
/// out so a collection does not build 17 names.
const TOTALS: [&str; RATES.len()] = [
    "mysql_questions_total",
    "mysql_com_select_total",
    "mysql_com_insert_total",
    "mysql_com_update_total",
    "mysql_com_delete_total",
    "mysql_slow_queries_total",
    "mysql_bytes_received_total",
    "mysql_bytes_sent_total",
    "mysql_aborted_connects_total",
    "mysql_created_tmp_tables_total",
    "mysql_created_tmp_disk_tables_total",
    "mysql_key_read_requests_total",
    "mysql_key_reads_total",
    "mysql_innodb_buffer_pool_read_requests_total",
    "mysql_innodb_buffer_pool_reads_total",
    "mysql_qcache_hits_total",
    "mysql_qcache_inserts_total",
];

/// Counters not in [`RATES`] that are still read, and the gauges.
const OTHER_STATUS: [&str; 9] = [
    "Uptime",
    "Threads_connected",
    "Threads_running",
    "Max_used_connections",
    "Qcache_lowmem_prunes",
    "Qcache_free_memory",
    "Innodb_buffer_pool_pages_free",
    "Innodb_buffer_pool_pages_total",
    "Innodb_buffer_pool_pages_data",
];

const VARIABLES: [&str; 4] = ["max_connections", "have_query_cache", "query_cache_type", "query_cache_size"];

/// Number of status variables read: the counters of [`RATES`], then [`OTHER_STATUS`].
const STATUS_COUNT: usize = RATES.len() + OTHER_STATUS.len();

/// The status variables the agent uses, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlStatus {
    /// In the order of [`status_index`]: a fixed table rather than a hash map, since a
    /// collection looks up every name and hashing them cost more than the lookups.
    values: [Option<u64>; STATUS_COUNT],
}

impl MysqlStatus {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.values[status_index(name)?]
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.values.iter().flatten().count()
    }
}

/// The server variables the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlVariables {
    pub max_connections: Option<u64>,
    /// The server has a query cache and it is switched on with some memory.
    pub query_cache: bool,
}

/// Replication state of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    /// `Seconds_Behind_Master`/`_Source`; `None` when replication is not running.
    pub lag_secs: Option<u64>,
    pub io_running: bool,
    pub sql_running: bool,
}

/// Position of a status variable in [`MysqlStatus`]; names are matched ignoring case.
fn status_index(name: &str) -> Option<usize> {
    RATES.iter().map(|r| r.1).chain(OTHER_STATUS).position(|w| w.eq_ignore_ascii_case(name))
}

/// Picks the status variables the agent uses out of `SHOW GLOBAL STATUS` rows
/// (`Variable_name`, `Value`). Unknown names and values that are not whole
/// non-negative numbers are skipped: what a server lacks is simply not reported.
pub fn parse_status<'a>(rows: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> MysqlStatus {
    let mut s = MysqlStatus::default();
    for (name, value) in rows {
        s.record(name, value);
    }
    s
}

impl MysqlStatus {
    /// Takes one row if it is a variable the agent uses.
    fn record(&mut self, name: &str, value: Option<&str>) {
        if let (Some(i), Some(v)) = (status_index(name), value.and_then(|v| v.trim().parse::<u64>().ok())) {
            self.values[i] = Some(v);
        }
    }
}

/// Column `i` of a row of the text protocol as text; `None` for NULL.
fn text(row: &MySqlRow, i: usize) -> Option<&str> {
    row.try_get_unchecked::<Option<&str>, _>(i).ok().flatten()
}

/// Runs `SHOW GLOBAL STATUS` and reads its rows in place, without an owned string
/// per name and value: this runs every collection.
async fn read_status(conn: &mut MySqlConnection, query: &Arc<str>) -> Result<MysqlStatus, sqlx::Error> {
    let mut s = MysqlStatus::default();
    for row in sqlx::raw_sql(AssertSqlSafe(query.clone())).fetch_all(conn).await? {
        if let Some(name) = text(&row, 0) {
            s.record(name, text(&row, 1));
        }
    }
    Ok(s)
}

/// Reads `SHOW GLOBAL VARIABLES` rows.
pub fn parse_variables<'a>(rows: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> MysqlVariables {
    let (mut have, mut on, mut size) = (false, false, 0u64);
    let mut v = MysqlVariables::default();
    for (name, value) in rows {
        let value = value.unwrap_or("").trim();
        match name.to_ascii_lowercase().as_str() {
            "max_connections" => v.max_connections = value.parse().ok(),
            "have_query_cache" => have = value.eq_ignore_ascii_case("YES"),
            "query_cache_type" => on = !(value.eq_ignore_ascii_case("OFF") || value == "0"),
            "query_cache_size" => size = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    v.query_cache = have && on && size > 0;
    v
}

/// Reads the row of `SHOW REPLICA STATUS` (or `SHOW SLAVE STATUS`) as column name and
/// value; `None` when the row says nothing about replication (not a replica).
pub fn parse_replica<'a>(row: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Option<Replica> {
    let mut lag = None;
    let (mut io, mut sql) = (None, None);
    for (col, value) in row {
        let yes = value.is_some_and(|v| v.trim().eq_ignore_ascii_case("Yes"));
        match col {
            "Seconds_Behind_Master" | "Seconds_Behind_Source" => lag = value.and_then(|v| v.trim().parse().ok()),
            "Slave_IO_Running" | "Replica_IO_Running" => io = Some(yes),
            "Slave_SQL_Running" | "Replica_SQL_Running" => sql = Some(yes),
            _ => {}
        }
    }
    if io.is_none() && sql.is_none() {
        return None;
    }
    Some(Replica { lag_secs: lag, io_running: io.unwrap_or(false), sql_running: sql.unwrap_or(false) })
}

/// Share `part / whole` in percent over the interval; `None` when `whole` did not move.
fn ratio(part: Option<u64>, whole: Option<u64>) -> Option<f64> {
    match (part, whole) {
        (Some(p), Some(w)) if w > 0 => Some((p as f64 * 100.0 / w as f64).min(100.0)),
        _ => None,
    }
}

/// Turns one collection into readings; `counters` holds the previous collection.
pub(crate) fn push_status(
    out: &mut Vec<Reading>,
    s: &MysqlStatus,
    v: &MysqlVariables,
    replica: Option<&Replica>,
    counters: &mut ServerCounters,
    now: Instant,
) {
    let g = |name: &'static str, unit, description: &'static str, value: f64| {
        gauge(name, unit, "mysql", description, value)
    };
    counters.begin(now, s.get("Uptime"));
    // Changes of this interval, in the order of RATES.
    let mut deltas = [None; RATES.len()];
    for (i, (metric, var, unit, description, qcache)) in RATES.into_iter().enumerate() {
        if qcache && !v.query_cache {
            continue;
        }
        let Some(n) = s.values[i] else { continue };
        if let Some(d) = counters.delta(var, n) {
            deltas[i] = Some(d);
            if let Some(r) = counters.per_sec(d) {
                out.push(g(metric, unit, description, r));
            }
        }
        out.push(counter(TOTALS[i], total_unit(unit), "mysql", description, n));
    }
    if v.query_cache {
        if let Some(n) = s.get("Qcache_lowmem_prunes") {
            if let Some(r) = counters.rate("Qcache_lowmem_prunes", n) {
                out.push(g(
                    "mysql_qcache_lowmem_prunes",
                    "prunes/sec",
                    "Queries dropped from the query cache for lack of memory.",
                    r,
                ));
            }
        }
        if let Some(n) = s.get("Qcache_free_memory") {
            out.push(g("mysql_qcache_free_memory", "bytes", "Free query cache memory.", n as f64));
        }
        let hits = rate_delta(&deltas, "Qcache_hits");
        let lookups = hits.zip(rate_delta(&deltas, "Qcache_inserts")).map(|(h, i)| h.saturating_add(i));
        if let Some(p) = ratio(hits, lookups) {
            out.push(g("mysql_qcache_hit_pct", "%", "Query cache hits / (hits + inserts) over the interval.", p));
        }
    }
    let d = |var: &str| rate_delta(&deltas, var);
    let ratios = [
        (
            "mysql_key_miss_pct",
            d("Key_reads"),
            d("Key_read_requests"),
            "MyISAM key cache misses: Key_reads / Key_read_requests over the interval (keep below 1).",
        ),
        (
            "mysql_tmp_disk_pct",
            d("Created_tmp_disk_tables"),
            d("Created_tmp_tables"),
            "Temporary tables that went to disk: Created_tmp_disk_tables / Created_tmp_tables.",
        ),
        (
            "mysql_innodb_buffer_pool_miss_pct",
            d("Innodb_buffer_pool_reads"),
            d("Innodb_buffer_pool_read_requests"),
            "InnoDB reads from disk: Innodb_buffer_pool_reads / Innodb_buffer_pool_read_requests.",
        ),
    ];
    for (name, part, whole, description) in ratios {
        if let Some(p) = ratio(part, whole) {
            out.push(g(name, "%", description, p));
        }
    }
    let gauges = [
        ("mysql_threads_connected", "Threads_connected", "threads", "Open client connections."),
        ("mysql_threads_running", "Threads_running", "threads", "Connections running a statement."),
        ("mysql_max_used_connections", "Max_used_connections", "connections", "Most connections open at once."),
        ("mysql_innodb_buffer_pool_pages_free", "Innodb_buffer_pool_pages_free", "pages", "Free buffer pool pages."),
        ("mysql_innodb_buffer_pool_pages_total", "Innodb_buffer_pool_pages_total", "pages", "Buffer pool pages."),
        ("mysql_uptime", "Uptime", "s", "Time since the server started."),
    ];
    for (name, var, unit, description) in gauges {
        if let Some(n) = s.get(var) {
            out.push(g(name, unit, description, n as f64));
        }
    }
    if let Some(max) = v.max_connections {
        out.push(g("mysql_max_connections", "connections", "Connection limit (max_connections).", max as f64));
        if let (Some(c), true) = (s.get("Threads_connected"), max > 0) {
            out.push(g(
                "mysql_connections_used_pct",
                "%",
                "Threads_connected as a share of max_connections.",
                c as f64 * 100.0 / max as f64,
            ));
        }
    }
    if let Some(r) = replica {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        out.push(g("mysql_replica_io_running", "", "1 when the replica's I/O thread runs.", flag(r.io_running)));
        out.push(g("mysql_replica_sql_running", "", "1 when the replica's SQL thread runs.", flag(r.sql_running)));
        if let Some(lag) = r.lag_secs {
            out.push(g("mysql_replica_lag", "s", "How far the replica is behind its source.", lag as f64));
        }
    }
}

/// This interval's change of the [`RATES`] counter `var`, if it has one.
fn rate_delta(deltas: &[Option<u64>; RATES.len()], var: &str) -> Option<u64> {
    deltas[RATES.iter().position(|r| r.1 == var)?]
}

/// Unit of a counter whose rate has unit `rate_unit` (`queries/sec` → `queries`).
fn total_unit(rate_unit: &'static str) -> &'static str {
    rate_unit.strip_suffix("/sec").unwrap_or(rate_unit)
}

/// The query text, built once: only the variables used travel.
fn in_list(show: &str, names: impl IntoIterator<Item = &'static str>) -> String {
    let list: Vec<String> = names.into_iter().map(|n| format!("'{n}'")).collect();
    format!("{show} WHERE Variable_name IN ({})", list.join(", "))
}

/// How this server wants to be asked about replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplicaQuery {
    /// MySQL 8.0.22+, MariaDB 10.5.1+.
    Replica,
    /// Older servers.
    Slave,
    /// The user may not ask; tried again after a reconnect.
    Denied,
}

impl ReplicaQuery {
    fn text(self) -> &'static str {
        match self {
            ReplicaQuery::Replica => "SHOW REPLICA STATUS",
            ReplicaQuery::Slave | ReplicaQuery::Denied => "SHOW SLAVE STATUS",
        }
    }
}

/// Collections between two readings of the variables (and of the replica status of a
/// server that is not a replica): 5 minutes at the default interval.
const REREAD_EVERY: u32 = 20;

/// MySQL server error codes the source reacts to.
const ER_PARSE_ERROR: u16 = 1064;
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;
const ER_ACCESS_DENIED: u16 = 1045;

/// The server's error number, for an error the server sent.
fn server_error(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db.try_downcast_ref::<MySqlDatabaseError>().map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// The MySQL/MariaDB source.
pub(crate) struct MysqlSource {
    config: MysqlConfig,
    conn: Option<MySqlConnection>,
    counters: ServerCounters,
    status_query: Arc<str>,
    variables_query: Arc<str>,
    replica_query: ReplicaQuery,
    /// The variables as last read.
    variables: Option<MysqlVariables>,
    /// Whether the last replica status had a row.
    is_replica: bool,
    /// Collections since the variables were read.
    since_reread: u32,
}

impl MysqlSource {
    pub(crate) fn new(config: MysqlConfig) -> MysqlSource {
        MysqlSource {
            config,
            conn: None,
            counters: ServerCounters::default(),
            status_query: in_list("SHOW GLOBAL STATUS", RATES.iter().map(|r| r.1).chain(OTHER_STATUS)).into(),
            variables_query: in_list("SHOW GLOBAL VARIABLES", VARIABLES).into(),
            replica_query: ReplicaQuery::Replica,
            variables: None,
            is_replica: false,
            since_reread: 0,
        }
    }

    async fn connect(&self) -> Result<MySqlConnection, sqlx::Error> {
        // The session is left as the server sets it up: the client's usual `SET` of
        // sql_mode, time zone and character set after login would be one more
        // statement per connection, and the agent reads only numbers and names.
        let mut opts = MySqlConnectOptions::new()
            .username(&self.config.user)
            .ssl_mode(MySqlSslMode::Disabled)
            .statement_cache_capacity(0)
            .pipes_as_concat(false)
            .no_engine_substitution(false)
            .timezone(None)
            .set_names(false)
            .disable_statement_logging();
        if let Some(p) = &self.config.password {
            opts = opts.password(&p.0);
        }
        opts = match &self.config.target {
            MysqlTarget::Tcp { host, port } => opts.host(host).port(*port),
            MysqlTarget::Socket(path) => opts.socket(path),
        };
        opts.connect().await
    }

    /// One collection over an open connection: the status, and the variables and
    /// replica status when they are due.
    async fn query(&mut self, conn: &mut MySqlConnection) -> Result<Answers, sqlx::Error> {
        let status = read_status(conn, &self.status_query).await?;
        let reread = self.variables.is_none() || self.since_reread >= REREAD_EVERY;
        let variables = if reread {
            let rows = sqlx::raw_sql(AssertSqlSafe(self.variables_query.clone())).fetch_all(&mut *conn).await?;
            let pairs = rows.iter().filter_map(|r| Some((text(r, 0)?, text(r, 1))));
            Some(parse_variables(pairs))
        } else {
            None
        };
        let replica = loop {
            if self.replica_query == ReplicaQuery::Denied || !(reread || self.is_replica) {
                break None;
            }
            match sqlx::raw_sql(self.replica_query.text()).fetch_optional(&mut *conn).await {
                Ok(row) => break row.as_ref().and_then(|r| parse_replica(row_pairs(r))),
                Err(e) if server_error(&e) == Some(ER_PARSE_ERROR) && self.replica_query == ReplicaQuery::Replica => {
                    self.replica_query = ReplicaQuery::Slave;
                }
                Err(e) if matches!(server_error(&e), Some(ER_SPECIFIC_ACCESS_DENIED | ER_ACCESS_DENIED)) => {
                    tracing::warn!(
                        user = %self.config.user,
                        error = %e,
                        "MySQL user may not read the replica status; replication metrics are left out (see the GRANT in docs/METRICS.md, then restart the agent: the server applies it to new sessions only)."
                    );
                    self.replica_query = ReplicaQuery::Denied;
                }
                Err(e) => return Err(e),
            }
        };
        Ok((status, variables, replica))
    }

    /// One collection, connecting first if needed; everything within `timeout`.
    async fn read(&mut self, out: &mut Vec<Reading>) -> Result<(), AppError> {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let late = |what| AppError::Io { what, source: std::io::ErrorKind::TimedOut.into() };
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let c = timeout_at(deadline, self.connect()).await.map_err(|_| late("connecting to MySQL"))??;
                if self.replica_query == ReplicaQuery::Denied {
                    // Grants may have changed since; ask once more.
                    self.replica_query = ReplicaQuery::Replica;
                }
                // A new connection may be to a restarted or reconfigured server.
                self.variables = None;
                c
            }
        };
        // On error or timeout the connection is dropped here, in whatever state the
        // protocol was left, and made again next time.
        let (status, variables, replica) =
            timeout_at(deadline, self.query(&mut conn)).await.map_err(|_| late("waiting for MySQL's answer"))??;
        let now = Instant::now();
        self.conn = Some(conn);
        self.since_reread += 1;
        if let Some(v) = variables {
            self.variables = Some(v);
            self.is_replica = replica.is_some();
            self.since_reread = 0;
        } else if self.is_replica {
            self.is_replica = replica.is_some();
        }
        let v = self.variables.clone().unwrap_or_default();
        push_status(out, &status, &v, replica.as_ref(), &mut self.counters, now);
        Ok(())
    }
}

/// Rows of one collection: status, variables if read, and the replica row if any.
type Answers = (MysqlStatus, Option<MysqlVariables>, Option<Replica>);

/// A row as (column name, value) pairs.
fn row_pairs(row: &MySqlRow) -> impl Iterator<Item = (&str, Option<&str>)> {
    row.columns().iter().enumerate().map(|(i, col)| (col.name(), text(row, i)))
}

impl AppSource for MysqlSource {
    fn name(&self) -> &'static str {
        "mysql"
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }
    fn every(&self) -> u32 {
        self.config.every
    }
    fn collect<'a>(&'a mut self, _now: Instant, out: &'a mut Vec<Reading>) -> Collecting<'a> {
        Box::pin(self.read(out))
    }

    fn close(&mut self) -> Collecting<'_> {
        let conn = self.conn.take();
        Box::pin(async move {
            match conn {
                Some(c) => c.close().await.map_err(AppError::from),
                None => Ok(()),
            }
        })
    }
}

/// Rows of `mysql -B` output as (first column, second column) pairs, `NULL` as
/// `None`; for fixtures and fuzzing.
pub fn pairs_from_tsv(text: &str) -> Vec<(&str, Option<&str>)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k, (v != "NULL").then_some(v)))
        })
        .collect()
}

/// A `mysql -B` result with a header line as (column, value) pairs of its first row.
pub fn row_from_tsv(text: &str) -> Vec<(&str, Option<&str>)> {
    let mut lines = text.lines();
    let (Some(header), Some(row)) = (lines.next(), lines.next()) else { return Vec::new() };
    header.split('\t').zip(row.split('\t')).map(|(c, v)| (c, (v != "NULL").then_some(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{app_fixture, value};
    use proptest::prelude::*;

    /// A server that accepts the connection and never says a word is given up on at
    /// the source's timeout, with a reason, and the next collection tries again.
    #[tokio::test]
    async fn a_server_that_never_greets_is_given_up_at_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let config = MysqlConfig {
            target: MysqlTarget::Tcp { host: "127.0.0.1".into(), port },
            user: "ganglion".into(),
            password: None,
            timeout: Duration::from_millis(300),
            every: 1,
        };
        let mut src = MysqlSource::new(config);
        for _ in 0..2 {
            let t0 = std::time::Instant::now();
            let mut out = Vec::new();
            let err = src.collect(Instant::now(), &mut out).await.unwrap_err();
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(800), "took {took:?}");
            assert_eq!(err.to_string(), "connecting to MySQL: timed out");
            assert!(out.is_empty() && src.conn.is_none());
        }
        held.abort();
    }

    fn fixture_status() -> (MysqlStatus, MysqlVariables) {
        let s = app_fixture("mariadb-10.11-global-status.tsv");
        let v = app_fixture("mariadb-10.11-global-variables.tsv");
        (parse_status(pairs_from_tsv(&s)), parse_variables(pairs_from_tsv(&v)))
    }

    #[test]
    fn each_counter_total_is_its_metric_name_with_total() {
        for (rate, total) in RATES.iter().zip(TOTALS) {
            assert_eq!(format!("{}_total", rate.0), total);
        }
    }

    #[test]
    fn reads_status_and_variables_of_mariadb_10_11() {
        let (s, v) = fixture_status();
        assert_eq!(s.get("Questions"), Some(20));
        assert_eq!(s.get("Com_select"), Some(4));
        assert_eq!((s.get("Created_tmp_disk_tables"), s.get("Created_tmp_tables")), (Some(3), Some(4)));
        assert_eq!(s.get("Innodb_buffer_pool_pages_total"), Some(1014));
        assert_eq!(s.get("Uptime"), Some(7));
        assert_eq!(v.max_connections, Some(151));
        assert!(!v.query_cache, "MariaDB 10.11 has a query cache but query_cache_type is OFF");
    }

    #[test]
    fn first_collection_has_gauges_and_totals_and_the_second_has_rates_and_ratios() {
        let (s, v) = fixture_status();
        let mut counters = ServerCounters::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        push_status(&mut out, &s, &v, None, &mut counters, t0);
        assert_eq!(value(&out, "mysql_questions"), None);
        assert_eq!(value(&out, "mysql_questions_total"), Some(20.0));
        assert_eq!(value(&out, "mysql_threads_connected"), Some(1.0));
        assert_eq!(value(&out, "mysql_max_connections"), Some(151.0));
        assert!((value(&out, "mysql_connections_used_pct").unwrap() - 100.0 / 151.0).abs() < 1e-9);
        assert!(out.iter().all(|r| !r.name.starts_with("mysql_qcache") && !r.name.starts_with("mysql_replica")));

        let mut later = s.clone();
        for (k, add) in [
            ("Uptime", 10),
            ("Questions", 50),
            ("Com_select", 30),
            ("Created_tmp_tables", 10),
            ("Created_tmp_disk_tables", 4),
            ("Key_read_requests", 1000),
            ("Key_reads", 5),
            ("Innodb_buffer_pool_read_requests", 200),
        ] {
            let i = status_index(k).unwrap();
            later.values[i] = Some(later.values[i].unwrap() + add);
        }
        out.clear();
        push_status(&mut out, &later, &v, None, &mut counters, t0 + Duration::from_secs(10));
        assert_eq!(value(&out, "mysql_questions"), Some(5.0));
        assert_eq!(value(&out, "mysql_com_select"), Some(3.0));
        assert_eq!(value(&out, "mysql_created_tmp_disk_tables"), Some(0.4));
        assert_eq!(value(&out, "mysql_tmp_disk_pct"), Some(40.0));
        assert_eq!(value(&out, "mysql_key_miss_pct"), Some(0.5));
        assert_eq!(value(&out, "mysql_innodb_buffer_pool_miss_pct"), Some(0.0));
        let total = out.iter().find(|r| r.name == "mysql_com_select_total").unwrap();
        assert_eq!((&*total.desc.unit, total.desc.kind), ("queries", ganglion_proto::msg::MetricKind::Counter));
        for r in &out {
            ganglion_proto::name::validate(ganglion_proto::name::NameKind::Metric, &r.name).unwrap();
        }
    }

    #[test]
    fn ratio_is_left_out_when_nothing_happened() {
        assert_eq!(ratio(Some(0), Some(0)), None);
        assert_eq!(ratio(Some(3), None), None);
        assert_eq!(ratio(Some(1), Some(4)), Some(25.0));
    }

    #[test]
    fn query_cache_metrics_only_when_the_cache_is_on() {
        let rows = [
            ("have_query_cache", Some("YES")),
            ("query_cache_type", Some("ON")),
            ("query_cache_size", Some("1048576")),
        ];
        let v = parse_variables(rows);
        assert!(v.query_cache);
        let off = parse_variables([("have_query_cache", Some("YES")), ("query_cache_type", Some("ON"))]);
        assert!(!off.query_cache, "no memory, no cache");
        let t0 = Instant::now();
        let mut counters = ServerCounters::default();
        let s = parse_status([("Uptime", Some("100")), ("Qcache_hits", Some("10")), ("Qcache_inserts", Some("10"))]);
        push_status(&mut Vec::new(), &s, &v, None, &mut counters, t0);
        let s = parse_status([("Uptime", Some("110")), ("Qcache_hits", Some("40")), ("Qcache_inserts", Some("20"))]);
        let mut out = Vec::new();
        push_status(&mut out, &s, &v, None, &mut counters, t0 + Duration::from_secs(10));
        assert_eq!(value(&out, "mysql_qcache_hit_pct"), Some(75.0));
        assert_eq!(value(&out, "mysql_qcache_hits"), Some(3.0));
    }

    #[test]
    fn reads_replica_status_of_a_running_and_a_broken_replica() {
        let r = parse_replica(row_from_tsv(&app_fixture("mariadb-10.11-slave-status.tsv"))).unwrap();
        assert_eq!(r, Replica { lag_secs: Some(0), io_running: true, sql_running: true });
        let r = parse_replica(row_from_tsv(&app_fixture("mariadb-10.11-slave-status-io-stopped.tsv"))).unwrap();
        assert_eq!(r, Replica { lag_secs: None, io_running: false, sql_running: true });
        let mut out = Vec::new();
        let (s, v) = fixture_status();
        push_status(&mut out, &s, &v, Some(&r), &mut ServerCounters::default(), Instant::now());
        assert_eq!(value(&out, "mysql_replica_io_running"), Some(0.0));
        assert_eq!(value(&out, "mysql_replica_lag"), None, "no lag while replication is broken");
        // MySQL 8.4 names.
        let r = parse_replica([
            ("Replica_IO_Running", Some("Yes")),
            ("Replica_SQL_Running", Some("Yes")),
            ("Seconds_Behind_Source", Some("42")),
        ]);
        assert_eq!(r.unwrap().lag_secs, Some(42));
        assert_eq!(parse_replica([("Variable_name", Some("x"))]), None);
    }

    #[test]
    fn status_query_asks_only_for_what_is_used() {
        let q = in_list("SHOW GLOBAL STATUS", ["Uptime", "Questions"]);
        assert_eq!(q, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Uptime', 'Questions')");
    }

    proptest! {
        #[test]
        fn status_round_trips(values in proptest::collection::btree_map(
            proptest::sample::select(RATES.iter().map(|r| r.1).chain(OTHER_STATUS).collect::<Vec<_>>()), any::<u64>(), 0..20)) {
            let text: String = values.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
            let s = parse_status(pairs_from_tsv(&text));
            for (k, v) in &values {
                prop_assert_eq!(s.get(k), Some(*v));
            }
            prop_assert_eq!(s.len(), values.len());
        }

        #[test]
        fn garbage_never_panics(text in "\\PC{0,400}", rows in proptest::collection::vec(
            ("(Uptime|Questions|Com_select|Threads_connected|Key_reads|Key_read_requests|max_connections|query_cache_size)",
             "[-0-9a-zNUL.]{0,22}"), 0..12)) {
            let tsv: String = rows.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
            let mut counters = ServerCounters::default();
            for t in [text.as_str(), tsv.as_str()] {
                let s = parse_status(pairs_from_tsv(t));
                let v = parse_variables(pairs_from_tsv(t));
                let r = parse_replica(row_from_tsv(t));
                let mut out = Vec::new();
                push_status(&mut out, &s, &v, r.as_ref(), &mut counters, Instant::now());
                prop_assert!(out.iter().all(|r| r.value.is_finite() && r.value >= 0.0));
            }
        }
    }
}

//! Application metrics end to end, against the real servers: Apache 2.4 with
//! mod_status, MariaDB, memcached (all started by the harness on loopback), custom
//! metrics from `ganglion-agent send` and exec plugins. Every agent here collects
//! every second, and the tests read what reached the collector's API.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use ganglion_tests::{agent_once, bin, wait_for, Agent, Collector, Peer, Proc, MYSQL_PASSWORD, MYSQL_USER};

/// Every sample of a host's metrics seen in the API, by name: `(time_ms, value)`.
struct Recorder {
    host: String,
    points: HashMap<String, Vec<(i64, f64)>>,
    meta: HashMap<String, serde_json::Value>,
}

impl Recorder {
    fn new(host: &str) -> Recorder {
        Recorder { host: host.to_owned(), points: HashMap::new(), meta: HashMap::new() }
    }

    /// Reads the host once and keeps every value whose time is new.
    fn poll(&mut self, c: &Collector) {
        let Some(h) = c.host(&self.host) else { return };
        for m in h["metrics"].as_array().into_iter().flatten() {
            let (Some(name), Some(v), Some(t)) = (m["name"].as_str(), m["value"].as_f64(), m["time_ms"].as_i64())
            else {
                continue;
            };
            let series = self.points.entry(name.to_owned()).or_default();
            if series.last().is_none_or(|(last, _)| *last < t) {
                series.push((t, v));
            }
            self.meta.insert(name.to_owned(), m.clone());
        }
    }

    /// Polls every 100 ms until `done` holds; panics after `timeout` with the logs
    /// and what was recorded.
    fn until(
        &mut self,
        c: &Collector,
        procs: &[&Proc],
        timeout: Duration,
        what: &str,
        done: impl Fn(&Recorder) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll(c);
            if done(self) {
                return;
            }
            if Instant::now() > deadline {
                let logs: String = procs.iter().map(|p| p.tail(30)).collect();
                let mut names: Vec<_> = self.points.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
                names.sort();
                panic!("timed out after {timeout:?} waiting for {what}\nrecorded:\n{}\n{logs}", names.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn series(&self, name: &str) -> &[(i64, f64)] {
        self.points.get(name).map_or(&[], Vec::as_slice)
    }

    fn last(&self, name: &str) -> Option<f64> {
        self.series(name).last().map(|p| p.1)
    }

    fn count(&self, name: &str) -> usize {
        self.series(name).len()
    }

    /// Unit, kind and group of a metric as the API shows them.
    fn describe(&self, name: &str) -> (String, String, String) {
        let m = &self.meta[name];
        let s = |k: &str| m[k].as_str().unwrap_or("").to_owned();
        (s("unit"), s("kind"), s("group"))
    }
}

fn agent_with(dir: &std::path::Path, c: &Collector, host: &str, extra: &str) -> Agent {
    Agent::start(dir, host, &[&c.ingest], 1, extra)
}

/// The agent's `[mysql]` section for the harness's monitoring user, through the
/// server's Unix socket.
fn mysql_over_socket(db: &Peer) -> String {
    let socket = db.socket.as_ref().expect("a MariaDB peer has a socket");
    format!("[mysql]\nsocket = \"{}\"\nuser = \"{MYSQL_USER}\"\npassword = \"{MYSQL_PASSWORD}\"\n", socket.display())
}

/// A collector and an agent reading `mc` (plus `keys` in its `[memcached]` section).
fn memcached_agent(mc: &Peer, dir: &std::path::Path, host: &str, keys: &str) -> (Collector, Agent) {
    let c = Collector::start(dir, "");
    let agent = agent_with(dir, &c, host, &format!("[memcached]\naddress = \"{}\"\n{keys}", mc.addr()));
    (c, agent)
}

/// Over one connection: stores `k`, gets it `hits` times and a missing key `misses`
/// times; returns the server's answer.
fn memcached_gets(mc: &Peer, hits: usize, misses: usize) -> String {
    let req = format!("set k 0 0 5\r\nhello\r\n{}{}", "get k\r\n".repeat(hits), "get nothing\r\n".repeat(misses));
    mc.memcached_text(&req).unwrap()
}

/// The table `ganglion-agent --once` prints for the agent's config.
fn once_table(agent: &Agent) -> String {
    String::from_utf8_lossy(&agent_once(&agent.config, 0.3).stdout).into_owned()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The sum of `rate × seconds` over the samples after `from_ms` up to `to_ms`: the
/// count the rates stand for.
fn integrate(rec: &Recorder, rate: &str, from_ms: i64, to_ms: i64) -> f64 {
    let s = rec.series(rate);
    s.windows(2)
        .filter(|w| w[1].0 > from_ms && w[1].0 <= to_ms)
        .map(|w| w[1].1 * (w[1].0 - w[0].0) as f64 / 1000.0)
        .sum()
}

#[test]
fn apache_counts_the_requests_driven_and_restarts_give_no_negative_rate() {
    let mut apache = Peer::apache();
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), "");
    let url = format!("http://{}/server-status?auto", apache.addr());
    let agent = agent_with(dir.path(), &c, "apps-apache", &format!("[apache]\nurl = \"{url}\"\n"));
    let mut rec = Recorder::new("apps-apache");
    rec.until(&c, &[&agent.proc, &c.proc], Duration::from_secs(15), "two Apache samples", |r| {
        r.count("apache_accesses_total") >= 2 && r.count("apache_requests") >= 1
    });
    let before = *rec.series("apache_accesses_total").last().unwrap();

    const N: usize = 200;
    let http = ureq::agent();
    let page = format!("http://{}/index.html", apache.addr());
    for _ in 0..N {
        http.get(&page).call().expect("a request to the test page");
    }
    rec.until(&c, &[&agent.proc, &apache.proc], Duration::from_secs(10), "the requests in the counter", |r| {
        r.last("apache_accesses_total").is_some_and(|v| v >= before.1 + N as f64)
    });
    let series = rec.series("apache_accesses_total");
    let after = *series.last().unwrap();
    // Each status request counts once it is done, so in the next sample: the samples
    // since `before` are the agent's own requests in the difference.
    let own = series.iter().filter(|p| p.0 > before.0).count() as f64;
    assert_eq!(after.1 - before.1 - own, N as f64, "accesses {before:?} → {after:?} with {own} status requests");
    let counted = integrate(&rec, "apache_requests", before.0, after.0);
    assert!(
        (counted - (N as f64 + own)).abs() <= 0.1 * N as f64,
        "requests/s over the window stand for {counted:.1} requests, {} were made\n{:?}",
        N as f64 + own,
        rec.series("apache_requests")
    );
    assert_eq!(rec.describe("apache_requests").0, "requests/sec");
    assert_eq!(rec.describe("apache_accesses_total").1, "Counter");
    assert!(rec.last("apache_bytes").is_some_and(|b| b >= 0.0));

    // Workers and scoreboard: the status request itself keeps one worker busy.
    assert!(rec.last("apache_busy_workers").unwrap() >= 1.0);
    assert!(rec.last("apache_idle_workers").unwrap() >= 1.0);
    let max = rec.last("apache_max_workers").unwrap();
    assert_eq!(max, 400.0, "event MPM default: 16 servers × 25 threads");
    let states = ["waiting", "starting", "reading", "sending", "keepalive", "dns", "closing", "logging", "graceful"];
    let board: f64 =
        states.iter().chain(&["idle_cleanup", "open"]).map(|s| rec.last(&format!("apache_sb_{s}")).unwrap()).sum();
    assert_eq!(board, max, "scoreboard states add up to its size");
    assert!(rec.last("apache_busy_pct").unwrap() > 0.0);

    // SIGHUP restarts Apache with zeroed counters; then a full stop and start.
    let uptime = rec.last("apache_uptime").unwrap();
    apache.proc.notify(rustix::process::Signal::Hup);
    rec.until(&c, &[&agent.proc, &apache.proc], Duration::from_secs(15), "Apache's uptime to restart", |r| {
        r.last("apache_uptime").is_some_and(|u| u < uptime)
    });
    for _ in 0..20 {
        let _ = http.get(&page).call();
    }
    apache.stop();
    rec.until(&c, &[&agent.proc], Duration::from_secs(10), "apache_up 0 while stopped", |r| {
        r.last("apache_up") == Some(0.0)
    });
    apache.start();
    for _ in 0..20 {
        let _ = http.get(&page).call();
    }
    let n = rec.count("apache_requests");
    rec.until(&c, &[&agent.proc, &apache.proc], Duration::from_secs(15), "rates after the restart", |r| {
        r.last("apache_up") == Some(1.0) && r.count("apache_requests") >= n + 2
    });
    for (t, v) in rec.series("apache_requests") {
        assert!((0.0..=2.0 * N as f64).contains(v), "apache_requests {v} at {t}: {:?}", rec.series("apache_requests"));
    }
    for (_, v) in rec.series("apache_bytes") {
        assert!(*v >= 0.0 && *v < 10e6, "apache_bytes {v}");
    }
}

#[test]
fn mariadb_counters_follow_known_queries_and_agree_with_mysqladmin() {
    let db = Peer::mariadb();
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), "");
    let agent = agent_with(dir.path(), &c, "apps-mariadb", &mysql_over_socket(&db));
    let procs = [&agent.proc, &db.proc, &c.proc];
    let mut rec = Recorder::new("apps-mariadb");
    rec.until(&c, &procs, Duration::from_secs(20), "two MariaDB samples", |r| {
        r.count("mysql_com_select_total") >= 2 && r.last("mysql_up") == Some(1.0)
    });
    db.sql("CREATE DATABASE t; CREATE TABLE t.a (id INT PRIMARY KEY, s TEXT) ENGINE=InnoDB;");
    rec.until(&c, &procs, Duration::from_secs(5), "a sample after the table", |r| {
        r.count("mysql_com_select_total") >= 3
    });
    let at = |r: &Recorder, n: &str| r.last(n).unwrap_or_else(|| panic!("no {n}"));
    let before: HashMap<&str, f64> =
        ["select", "insert", "update", "delete"].map(|k| (k, at(&rec, &format!("mysql_com_{k}_total")))).into();
    let t_before = rec.series("mysql_com_select_total").last().unwrap().0;

    // Known statements, in one client session.
    let mut sql = "SELECT 1;".repeat(40);
    sql += "INSERT INTO t.a VALUES (1,'a'),(2,'b'); INSERT INTO t.a VALUES (3,'c'); INSERT INTO t.a VALUES (4,'d');";
    sql += "INSERT INTO t.a VALUES (5,'e'); INSERT INTO t.a VALUES (6,'f');";
    sql += "UPDATE t.a SET s='x' WHERE id=1; UPDATE t.a SET s='y' WHERE id=2; UPDATE t.a SET s='z';";
    sql += "DELETE FROM t.a WHERE id=6; DELETE FROM t.a WHERE id=5;";
    db.sql(&sql);
    let want = [("select", 40.0), ("insert", 5.0), ("update", 3.0), ("delete", 2.0)];
    rec.until(&c, &procs, Duration::from_secs(10), "the statements in Com_*", |r| {
        want.iter().all(|(k, n)| r.last(&format!("mysql_com_{k}_total")).unwrap_or(0.0) >= before[k] + n)
    });
    let t_after = rec.series("mysql_com_select_total").last().unwrap().0;
    for (k, n) in want {
        let got = at(&rec, &format!("mysql_com_{k}_total")) - before[k];
        assert_eq!(got, n, "Com_{k} moved by {got}, {n} statements were run");
        let counted = integrate(&rec, &format!("mysql_com_{k}"), t_before, t_after);
        assert!((counted - n).abs() <= 0.1 * n + 0.5, "mysql_com_{k} rates stand for {counted:.2}, {n} were run");
    }
    assert_eq!(rec.describe("mysql_com_select").0, "queries/sec");
    assert!(at(&rec, "mysql_questions_total") >= 50.0);

    // Temporary tables that cannot stay in memory (a long TEXT in a GROUP BY).
    let disk_before = at(&rec, "mysql_created_tmp_disk_tables_total");
    db.sql(
        "SELECT id, GROUP_CONCAT(s) FROM (SELECT a.id, CONCAT(a.s, REPEAT('x', 70000)) s FROM t.a a) x \
         GROUP BY id ORDER BY 2;",
    );
    rec.until(&c, &procs, Duration::from_secs(10), "Created_tmp_disk_tables to move", |r| {
        r.last("mysql_created_tmp_disk_tables_total").unwrap_or(0.0) > disk_before
    });
    rec.until(&c, &procs, Duration::from_secs(5), "mysql_tmp_disk_pct", |r| {
        r.series("mysql_tmp_disk_pct").iter().any(|p| p.1 > 0.0)
    });

    // The agent's values lie between two mysqladmin readings taken around them.
    let s0 = db.extended_status();
    let t0 = now_ms();
    rec.until(&c, &procs, Duration::from_secs(5), "a sample taken after mysqladmin", |r| {
        r.series("mysql_uptime").last().is_some_and(|p| p.0 > t0 + 200)
    });
    let s1 = db.extended_status();
    let n = |s: &HashMap<String, String>, k: &str| s[k].parse::<f64>().unwrap();
    for (metric, var) in [
        ("mysql_questions_total", "Questions"),
        ("mysql_com_select_total", "Com_select"),
        ("mysql_com_insert_total", "Com_insert"),
        ("mysql_bytes_received_total", "Bytes_received"),
        ("mysql_bytes_sent_total", "Bytes_sent"),
        ("mysql_innodb_buffer_pool_read_requests_total", "Innodb_buffer_pool_read_requests"),
        ("mysql_uptime", "Uptime"),
    ] {
        let v = at(&rec, metric);
        assert!(
            n(&s0, var) <= v && v <= n(&s1, var),
            "{metric} = {v} is not between mysqladmin's {var} {} and {}",
            n(&s0, var),
            n(&s1, var)
        );
    }
    assert_eq!(at(&rec, "mysql_innodb_buffer_pool_pages_total"), n(&s1, "Innodb_buffer_pool_pages_total"));
    let max = db.sql("SELECT @@max_connections").trim().parse::<f64>().unwrap();
    assert_eq!(at(&rec, "mysql_max_connections"), max);
    let used = at(&rec, "mysql_connections_used_pct");
    assert!(used > 0.0 && used <= 100.0 * 3.0 / max, "connections used {used} %");
    assert!(rec.count("mysql_replica_lag") == 0, "not a replica");
}

/// The agent keeps one session over its collections (no login, and no new entry in
/// the server's `Connections`, per collection); when the server ends that session the
/// next collection reports MySQL down once and the one after logs in again. MariaDB's
/// root gets in through the socket without a password, and neither `--once` nor the
/// agent's stop leaves an aborted client behind.
#[test]
fn mariadb_session_is_kept_across_collections_and_a_killed_one_is_replaced_and_root_needs_no_password() {
    let db = Peer::mariadb();
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), "");
    let mut agent = agent_with(dir.path(), &c, "apps-mariadb-session", &mysql_over_socket(&db));
    let procs = [&agent.proc, &db.proc, &c.proc];
    let sessions = || -> Vec<String> {
        let out =
            db.sql(&format!("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{MYSQL_USER}' ORDER BY ID"));
        out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    };
    let connections = || db.sql("SHOW GLOBAL STATUS LIKE 'Connections'").split_whitespace().nth(1).map(str::to_owned);
    let mut rec = Recorder::new("apps-mariadb-session");
    rec.until(&c, &procs, Duration::from_secs(20), "MariaDB up", |r| r.last("mysql_up") == Some(1.0));
    let first = sessions();
    assert_eq!(first.len(), 1, "one session of the agent: {first:?}");
    let logins = connections();
    let before = rec.series("mysql_up").len();
    rec.until(&c, &procs, Duration::from_secs(20), "10 more collections", |r| {
        r.series("mysql_up").len() >= before + 10
    });
    assert_eq!(sessions(), first, "the session was kept");
    // Each check is a login of its own: the `sessions` above and this count make two;
    // the agent made none.
    let made = connections().zip(logins).map(|(n, b)| n.parse::<u64>().unwrap() - b.parse::<u64>().unwrap());
    assert_eq!(made, Some(2), "logins over 10 collections, the checks' two included");
    db.sql(&format!("KILL {}", first[0]));
    let killed = rec.series("mysql_up").len();
    let since = Instant::now();
    let mut now = sessions();
    while now.len() != 1 || now == first {
        assert!(since.elapsed() < Duration::from_secs(10), "no new session 10 s after the kill: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
        rec.poll(&c);
        now = sessions();
    }
    rec.until(&c, &procs, Duration::from_secs(10), "up over the new session", |r| r.last("mysql_up") == Some(1.0));
    let ups = rec.series("mysql_up");
    let downs = ups[killed..].iter().filter(|p| p.1 == 0.0).count();
    assert!(downs <= 1, "more than the one collection over the dead session failed: {:?}", &ups[killed..]);
    assert!(rec.last("load_one").is_some(), "host metrics kept flowing");
    let log = agent.log();
    assert!(log.matches("source is down").count() <= 1, "one line for the failure at most:\n{log}");

    // From here on no session ends without its goodbye: neither `--once` nor the
    // agent when it stops leaves an aborted client behind.
    let aborted = || db.sql("SHOW GLOBAL STATUS LIKE 'Aborted_clients'").split_whitespace().nth(1).map(str::to_owned);
    let aborted_before = aborted();
    // MariaDB's root logs in through the socket by its Unix user, without a password
    // (the harness and the agent run as the same user).
    let config = std::fs::read_to_string(&agent.config).unwrap();
    let as_root =
        config.replace(&format!("user = \"{MYSQL_USER}\"\npassword = \"{MYSQL_PASSWORD}\"\n"), "user = \"root\"\n");
    assert_ne!(as_root, config, "the [mysql] section was rewritten");
    let root = dir.path().join("agent-root.toml");
    std::fs::write(&root, as_root).unwrap();
    let out = agent_once(&root, 0.3);
    let table = String::from_utf8_lossy(&out.stdout);
    let up = table.lines().find(|l| l.starts_with("mysql_up ")).map(|l| l.split_whitespace().nth(1));
    assert_eq!(
        up,
        Some(Some("1")),
        "socket login without a password:\n{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.proc.terminate(Duration::from_secs(5));
    // The server may take a moment to end the session on its side.
    wait_for(Duration::from_secs(5), "the agent's session to end with it", &[], || sessions().is_empty().then_some(()));
    assert_eq!(aborted(), aborted_before, "Aborted_clients moved: a session was dropped without QUIT");
}

#[test]
fn mariadb_replica_reports_its_lag_and_a_user_without_the_grant_gets_the_rest() {
    let source = Peer::mariadb_with(&["--log-bin={dir}/binlog", "--server-id=1"]);
    let replica = Peer::mariadb_with(&["--skip-log-bin", "--server-id=2"]);
    source.sql(
        "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl-pw'; GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';",
    );
    // Replicate from here on: the source's binary log also holds the harness's own
    // CREATE USER, which the replica ran too.
    let position = source.sql("SELECT @@gtid_binlog_pos").trim().to_owned();
    replica.sql(&format!(
        "SET GLOBAL gtid_slave_pos = '{position}'; \
         CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', MASTER_PASSWORD='repl-pw', \
         MASTER_USE_GTID=slave_pos; START SLAVE; \
         CREATE USER '{MYSQL_USER}'@'127.0.0.1' IDENTIFIED BY '{MYSQL_PASSWORD}'; \
         GRANT PROCESS, SLAVE MONITOR ON *.* TO '{MYSQL_USER}'@'127.0.0.1'; \
         CREATE USER 'nogrant'@'127.0.0.1' IDENTIFIED BY 'nogrant-pw';",
        source.port
    ));
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), "");
    // Over TCP this time; one agent with the documented GRANT, one with none.
    let tcp = |user: &str, pw: &str| {
        format!("[mysql]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{user}\"\npassword = \"{pw}\"\n", replica.port)
    };
    let agent = agent_with(dir.path(), &c, "apps-replica", &tcp(MYSQL_USER, MYSQL_PASSWORD));
    let plain = agent_with(dir.path(), &c, "apps-nogrant", &tcp("nogrant", "nogrant-pw"));
    let procs = [&agent.proc, &plain.proc, &replica.proc, &source.proc];
    let mut rec = Recorder::new("apps-replica");
    rec.until(&c, &procs, Duration::from_secs(20), "the replica's state", |r| {
        r.last("mysql_replica_io_running") == Some(1.0)
            && r.last("mysql_replica_sql_running") == Some(1.0)
            && r.last("mysql_replica_lag") == Some(0.0)
    });
    assert_eq!(rec.describe("mysql_replica_lag").0, "s");
    replica.sql("STOP SLAVE IO_THREAD;");
    let stopped = now_ms();
    rec.until(&c, &procs, Duration::from_secs(10), "the stopped I/O thread", |r| {
        r.series("mysql_replica_io_running").last().is_some_and(|p| p.0 > stopped && p.1 == 0.0)
    });
    // No lag while replication is broken: the last lag value is from before.
    rec.until(&c, &procs, Duration::from_secs(5), "two more samples", |r| {
        r.series("mysql_replica_io_running").iter().filter(|p| p.0 > stopped).count() >= 2
    });
    assert!(rec.series("mysql_replica_lag").last().unwrap().0 < stopped + 1_000);

    let mut other = Recorder::new("apps-nogrant");
    other.until(&c, &procs, Duration::from_secs(10), "the user without grants", |r| {
        r.last("mysql_up") == Some(1.0) && r.count("mysql_questions") >= 2
    });
    assert_eq!(other.count("mysql_replica_io_running"), 0, "no replica metrics without the grant");
    let log = plain.log();
    assert_eq!(log.lines().filter(|l| l.contains("may not read the replica status")).count(), 1, "{log}");
}

#[test]
fn memcached_hits_and_misses_after_known_gets() {
    let mc = Peer::memcached();
    let dir = tempfile::tempdir().unwrap();
    let (c, agent) = memcached_agent(&mc, dir.path(), "apps-memcached", "");
    let procs = [&agent.proc, &mc.proc, &c.proc];
    let mut rec = Recorder::new("apps-memcached");
    rec.until(&c, &procs, Duration::from_secs(15), "two memcached samples", |r| {
        r.count("memcached_get_hits_total") >= 2
    });
    let hits0 = rec.last("memcached_get_hits_total").unwrap();
    let misses0 = rec.last("memcached_get_misses_total").unwrap();
    // One connection, all at once: 7 hits and 3 misses.
    let answer = memcached_gets(&mc, 7, 3);
    assert!(answer.starts_with("STORED"), "{answer}");
    rec.until(&c, &procs, Duration::from_secs(10), "the gets in the counters", |r| {
        r.last("memcached_get_hits_total").unwrap_or(0.0) >= hits0 + 7.0
            && r.last("memcached_get_misses_total").unwrap_or(0.0) >= misses0 + 3.0
    });
    assert_eq!(rec.last("memcached_get_hits_total").unwrap() - hits0, 7.0);
    assert_eq!(rec.last("memcached_get_misses_total").unwrap() - misses0, 3.0);
    rec.until(&c, &procs, Duration::from_secs(5), "the hit share of that interval", |r| {
        r.series("memcached_hit_pct").iter().any(|p| p.1 == 70.0)
    });
    assert_eq!(rec.last("memcached_limit_maxbytes"), Some(16.0 * 1024.0 * 1024.0));
    assert!(rec.last("memcached_curr_connections").unwrap() >= 1.0);
    assert_eq!(rec.describe("memcached_get_hits").0, "gets/sec");

    // `--once` shows the sources of the config too.
    let table = once_table(&agent);
    assert!(table.contains("memcached_get_hits") && table.contains("memcached_up"), "{table}");
}

#[test]
fn a_source_with_its_own_interval_is_read_every_third_collection_and_its_rates_span_it() {
    let mc = Peer::memcached();
    let dir = tempfile::tempdir().unwrap();
    let (c, agent) = memcached_agent(&mc, dir.path(), "apps-every", "interval_secs = 3\n");
    let procs = [&agent.proc, &mc.proc, &c.proc];
    let mut rec = Recorder::new("apps-every");
    rec.until(&c, &procs, Duration::from_secs(20), "three memcached samples", |r| r.count("memcached_get_hits") >= 3);
    let (from, hits0) = *rec.series("memcached_get_hits_total").last().unwrap();
    assert!(memcached_gets(&mc, 12, 0).starts_with("STORED"));
    rec.until(&c, &procs, Duration::from_secs(15), "the gets in the counters, then one more sample", |r| {
        let s = r.series("memcached_get_hits_total");
        s.iter().any(|p| p.1 >= hits0 + 12.0) && s.last().is_some_and(|p| p.1 >= hits0 + 12.0 && p.0 > from + 6_000)
    });
    let to = rec.series("memcached_get_hits").last().unwrap().0;
    let counted = integrate(&rec, "memcached_get_hits", from, to);
    assert!((counted - 12.0).abs() <= 1.2, "gets/sec over the window stand for {counted:.2} hits, 12 were made");

    // The source's metrics come every third batch, the host's with every batch.
    let gaps = |name: &str| -> Vec<i64> { rec.series(name).windows(2).map(|w| w[1].0 - w[0].0).collect() };
    // An unchanged value too: the collector keeps a skipped metric's last value as the
    // base of the next difference, so the agent need not send it again.
    for name in ["memcached_up", "memcached_limit_maxbytes"] {
        let g = gaps(name);
        assert!(g.len() >= 4 && g.iter().all(|g| (2_700..=3_300).contains(g)), "{name} every {g:?} ms");
    }
    let load = gaps("load_one");
    assert!(load.len() >= 12 && load.iter().all(|g| (700..=1_300).contains(g)), "load_one every {load:?} ms");

    // `--once` reads the source although its interval is longer than the measurement.
    let table = once_table(&agent);
    assert!(table.contains("memcached_get_hits") && table.contains("memcached_up"), "{table}");
}

#[test]
fn stopped_source_reports_down_once_while_the_rest_keeps_flowing() {
    let mut mc = Peer::memcached();
    let dir = tempfile::tempdir().unwrap();
    let (c, agent) = memcached_agent(&mc, dir.path(), "apps-down", "");
    let mut rec = Recorder::new("apps-down");
    rec.until(&c, &[&agent.proc, &mc.proc], Duration::from_secs(15), "memcached up", |r| {
        r.last("memcached_up") == Some(1.0) && r.count("memcached_uptime") >= 2
    });
    mc.stop();
    rec.until(&c, &[&agent.proc], Duration::from_secs(10), "memcached_up 0", |r| r.last("memcached_up") == Some(0.0));
    let down_at = rec.series("memcached_up").last().unwrap().0;
    let load = rec.count("load_one");
    rec.until(&c, &[&agent.proc], Duration::from_secs(10), "four more batches", |r| {
        r.series("memcached_up").iter().filter(|p| p.0 > down_at).count() >= 4
    });
    assert!(rec.count("load_one") >= load + 4, "host metrics stopped while memcached was down");
    assert!(rec.series("memcached_up").iter().filter(|p| p.0 >= down_at).all(|p| p.1 == 0.0));
    assert!(
        rec.series("memcached_uptime").last().unwrap().0 < down_at,
        "memcached values kept coming while it was down"
    );
    let log = agent.log();
    let warnings = log.lines().filter(|l| l.contains("WARN") && l.contains("memcached")).count();
    assert_eq!(warnings, 1, "one warning for the outage, not one per interval:\n{log}");

    mc.start();
    rec.until(&c, &[&agent.proc, &mc.proc], Duration::from_secs(10), "memcached_up 1 again", |r| {
        r.last("memcached_up") == Some(1.0)
    });
    let log = agent.log();
    assert_eq!(log.lines().filter(|l| l.contains("up again") && l.contains("memcached")).count(), 1, "{log}");
}

fn send(agent: &Agent, args: &[&str]) -> std::process::Output {
    Command::new(bin("ganglion-agent"))
        .arg("send")
        .arg("--config")
        .arg(&agent.config)
        .args(args)
        .output()
        .expect("running ganglion-agent send")
}

#[test]
fn send_puts_custom_metrics_in_the_api_through_the_agent_and_directly() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), "");
    let agent = agent_with(dir.path(), &c, "apps-send", "");
    let procs = [&agent.proc, &c.proc];
    let mut rec = Recorder::new("apps-send");
    rec.until(&c, &procs, Duration::from_secs(10), "the agent's first batch", |r| r.count("load_one") >= 1);
    wait_for(Duration::from_secs(5), "the send socket", &procs, || agent.socket.exists().then_some(()));

    let out = send(&agent, &["--name", "queue_depth", "--value", "42", "--unit", "jobs", "--group", "app"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = send(&agent, &["--name", "jobs_done", "--value", "17", "--type", "counter"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rec.until(&c, &procs, Duration::from_secs(10), "the pushed metrics", |r| {
        r.last("queue_depth") == Some(42.0) && r.last("jobs_done") == Some(17.0)
    });
    assert_eq!(rec.describe("queue_depth"), ("jobs".into(), "Gauge".into(), "app".into()));
    assert_eq!(rec.describe("jobs_done"), ("".into(), "Counter".into(), "custom".into()));
    let out = send(&agent, &["--name", "temperature", "--value", "-3.5", "--unit", "C"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rec.until(&c, &procs, Duration::from_secs(10), "a negative value", |r| r.last("temperature") == Some(-3.5));

    // The agent's own names are not for custom metrics; nor are bad names.
    let out = send(&agent, &["--name", "load_one", "--value", "99"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("own metrics"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = send(&agent, &["--name", "../../etc", "--value", "1"]);
    assert!(!out.status.success());
    let out = send(&agent, &["--name", "mysql_questions", "--value", "1"]);
    assert!(!out.status.success(), "a source's prefix is the agent's");

    // Straight to the collector, as this host and as another one.
    let before = c.host("apps-send").unwrap();
    let out = send(&agent, &["--direct", "--name", "direct_metric", "--value", "7", "--unit", "s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rec.until(&c, &procs, Duration::from_secs(5), "the direct metric", |r| r.last("direct_metric") == Some(7.0));
    assert_eq!(rec.describe("direct_metric").0, "s");
    let out = send(&agent, &["--direct", "--host", "apps-spoofed", "--name", "lag", "--value", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut other = Recorder::new("apps-spoofed");
    other.until(&c, &procs, Duration::from_secs(5), "the spoofed host's metric", |r| r.last("lag") == Some(3.0));
    // As the agent's own host, from another process: the host keeps its agent's view.
    let out = send(&agent, &["--direct", "--host", "apps-send", "--name", "direct_again", "--value", "8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rec.until(&c, &procs, Duration::from_secs(5), "the second direct metric", |r| r.last("direct_again") == Some(8.0));
    // The agent's own batches go on.
    let n = rec.count("load_one");
    rec.until(&c, &procs, Duration::from_secs(5), "the agent's batches after --direct", |r| {
        r.count("load_one") > n + 1
    });
    let after = c.host("apps-send").unwrap();
    assert_eq!(after["seq"]["run"], before["seq"]["run"], "the agent's run is kept: {after}");
    assert_eq!(after["seq"]["gaps"], 0, "{after}");
    assert!(after["seq"]["batches"].as_u64() > before["seq"]["batches"].as_u64(), "{after}");
    assert_eq!(after["interval_secs"], before["interval_secs"]);
    assert_eq!(after["facts"], before["facts"]);
}

#[test]
fn exec_plugin_perfdata_appears_and_a_hanging_plugin_is_killed_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), "");
    let plugin = dir.path().join("check_queue");
    std::fs::write(&plugin, "#!/bin/sh\necho 'QUEUE OK - 3 jobs | jobs=3;10;20;0; latency=0.25s;1;2'\nexit 0\n")
        .unwrap();
    let child_pid = dir.path().join("hang-child.pid");
    let extra = format!(
        "[[exec]]\nname = \"queue\"\ncommand = [\"/bin/sh\", \"{}\"]\ninterval_secs = 1\n\
         [[exec]]\nname = \"hang\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 300 & echo $! > {}; wait\"]\n\
         interval_secs = 2\ntimeout_secs = 1\n",
        plugin.display(),
        child_pid.display()
    );
    let agent = agent_with(dir.path(), &c, "apps-exec", &extra);
    let procs = [&agent.proc, &c.proc];
    let mut rec = Recorder::new("apps-exec");
    rec.until(&c, &procs, Duration::from_secs(10), "the plugin's perfdata", |r| {
        r.last("exec_queue_jobs") == Some(3.0) && r.last("exec_queue_latency") == Some(0.25)
    });
    assert_eq!(rec.describe("exec_queue_latency").0, "s");
    assert_eq!(rec.last("exec_queue_status"), Some(0.0));
    assert_eq!(rec.last("exec_queue_up"), Some(1.0));

    rec.until(&c, &procs, Duration::from_secs(15), "the hanging plugin down twice", |r| {
        r.series("exec_hang_up").iter().filter(|p| p.1 == 0.0).count() >= 2
    });
    let child: i32 = std::fs::read_to_string(&child_pid).unwrap().trim().parse().unwrap();
    let gone = || std::fs::read_to_string(format!("/proc/{child}/stat")).map_or(true, |s| s.contains(") Z "));
    wait_for(Duration::from_secs(2), "the hanging plugin's child to be killed", &procs, || gone().then_some(()));
    let log = agent.log();
    let killed = log.lines().filter(|l| l.contains("exec_hang") && l.contains("killed its process group")).count();
    assert_eq!(killed, 1, "one warning for the hanging plugin, however often it hangs:\n{log}");
    assert!(rec.last("exec_hang_duration").is_none(), "a killed run has no duration");
}

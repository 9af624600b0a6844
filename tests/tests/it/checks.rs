//! The checks engine end to end: metric checks on a live agent's data, real Nagios
//! plugins (open and closed ports, a dummy, a disk, one that hangs), passive results
//! over HTTP with freshness, flapping, acknowledgements and downtime through the
//! `ganglion` CLI and external command lines, and states, acks and downtimes that
//! survive `kill -9` of the collector.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ganglion_tests::{bin, free_port, wait_for, Agent, Collector};
use serde_json::Value;

const TOKEN: &str = "test-admin-token-0123456789";

const PLUGINS: &str = "/usr/lib/nagios/plugins";

fn require_plugin(name: &str) {
    let p = Path::new(PLUGINS).join(name);
    assert!(
        p.is_file(),
        "{} is needed by this test: install the Debian package `monitoring-plugins` (scripts/test does this as root)",
        p.display()
    );
}

fn check<'a>(status: &'a Value, host: &str, service: &str) -> Option<&'a Value> {
    status.as_array()?.iter().find(|c| c["host"] == host && c["service"] == service)
}

fn state_of(c: &Collector, host: &str, service: &str) -> Option<(String, String)> {
    let s = c.get("/api/v1/status")?;
    let x = check(&s, host, service)?;
    if x["pending"] == true {
        return None;
    }
    Some((x["state"].as_str()?.to_owned(), x["state_type"].as_str()?.to_owned()))
}

fn post(c: &Collector, path: &str, body: &Value) -> (u16, Value) {
    let r = ureq::post(&format!("http://{}{path}", c.web))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .send_json(body.clone());
    match r {
        Ok(resp) => (resp.status(), resp.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("POST {path}: {e}"),
    }
}

/// Runs `ganglion ARGS --api URL --token TOKEN` and returns its stdout, failing with its
/// output and the collector's log.
fn cli(c: &Collector, args: &[&str]) -> String {
    let api = format!("http://{}", c.web);
    let out = Command::new(bin("ganglion"))
        .args(args)
        .args(["--api", &api, "--token", TOKEN])
        .output()
        .expect("running ganglion");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ganglion {args:?} failed ({}):\n{text}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        c.proc.tail(30)
    );
    text
}

#[test]
fn metric_active_and_passive_checks_reach_their_states_and_survive_a_crash() {
    for p in ["check_tcp", "check_dummy", "check_disk"] {
        require_plugin(p);
    }
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let extra = format!(
        r#"
[storage]
step_secs = 1
heartbeat_secs = 10

[checks]
default_pack = false
check_interval_secs = 1
retry_interval_secs = 1
max_check_attempts = 2

[[service]]
name = "cpus"
metric = "cpu_num"
critical = "@1:100000"

[[service]]
name = "uptime"
metric = "uptime"
warning = "0:"

[[service]]
name = "cpus_max"
metric = "cpu_num"
aggregate = "max"
window_secs = 120
critical = "@1:100000"
missing = "skip"

[[service]]
name = "no_such_metric"
metric = "not_reported_anywhere"
missing = "warning"

[[service]]
name = "tcp_open"
command = "check_tcp -H $_ADDR$ -p {open_port} -t 2"
macros = {{ ADDR = "127.0.0.1" }}

[[service]]
name = "tcp_closed"
command = "check_tcp -H 127.0.0.1 -p {closed} -t 2"

[[service]]
name = "dummy"
command = "check_dummy 1 'dummy on $HOSTNAME$'"

[[service]]
name = "disk"
command = "check_disk -w 1 -c 1 -u MB -p /"

[[service]]
name = "hang"
command = "/bin/sh -c 'sleep 30'"
timeout_secs = 1

[[service]]
name = "backup"
passive = true
freshness_secs = 3
stale_state = "critical"

[[service]]
name = "flappy"
passive = true
max_check_attempts = 1

[api]
admin_token = "{TOKEN}"
"#
    );
    let mut c = Collector::start(dir.path(), &extra);
    let agent = Agent::start(dir.path(), "chk-host", &[&c.ingest], 1, "");
    let procs = [&c.proc, &agent.proc];

    let want = [
        ("cpus", "CRITICAL", "HARD"),
        ("cpus_max", "CRITICAL", "HARD"),
        ("uptime", "OK", "HARD"),
        ("no_such_metric", "WARNING", "HARD"),
        ("tcp_open", "OK", "HARD"),
        ("tcp_closed", "CRITICAL", "HARD"),
        ("dummy", "WARNING", "HARD"),
        ("disk", "OK", "HARD"),
        ("hang", "CRITICAL", "HARD"),
    ];
    for (svc, state, typ) in want {
        wait_for(Duration::from_secs(20), &format!("{svc} to be {state} {typ}"), &procs, || {
            (state_of(&c, "chk-host", svc)? == (state.to_owned(), typ.to_owned())).then_some(())
        });
    }
    let status = c.get("/api/v1/status").unwrap();
    let hang = check(&status, "chk-host", "hang").unwrap();
    assert!(hang["output"].as_str().unwrap().starts_with("(Service check timed out after 1."), "{hang}");
    // Aggregate over the stored series, read through the storage engine.
    let cpus_max = check(&status, "chk-host", "cpus_max").unwrap();
    assert!(cpus_max["output"].as_str().unwrap().starts_with("CRITICAL - max of cpu_num over 120 s = "), "{cpus_max}");
    let dummy = check(&status, "chk-host", "dummy").unwrap();
    assert_eq!(dummy["output"], "WARNING: dummy on chk-host");
    let disk = check(&status, "chk-host", "disk").unwrap();
    assert!(disk["perfdata"].as_str().unwrap().contains("/="), "{disk}");
    // The plugin's performance data is stored as a series of the host (label `/`).
    wait_for(Duration::from_secs(10), "the disk plugin's perfdata series", &[&c.proc], || {
        c.get("/api/v1/series?host=chk-host&cluster=test&metric=disk_root&start=-300")
    });
    let host = check(&status, "chk-host", "").unwrap();
    assert_eq!(host["state"], "UP");

    // Passive: no result within 3 s → stale CRITICAL (after 2 attempts); a result fixes it.
    wait_for(Duration::from_secs(20), "backup to go stale", &procs, || {
        let (s, t) = state_of(&c, "chk-host", "backup")?;
        (s == "CRITICAL" && t == "HARD").then_some(())
    });
    let (code, body) = post(
        &c,
        "/api/v1/results",
        &serde_json::json!({"host": "chk-host", "service": "backup", "status": 0, "output": "backup done | size=10GB"}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(state_of(&c, "chk-host", "backup"), Some(("OK".into(), "HARD".into())));
    let (code, body) = post(
        &c,
        "/api/v1/results",
        &serde_json::json!([{"host": "nobody", "service": "x", "status": 0, "output": ""}]),
    );
    assert_eq!(code, 422, "{body}");
    assert_eq!(c.health()["checks"]["rejected"], 1);
    // Writes need the admin token.
    let r = ureq::post(&format!("http://{}/api/v1/results", c.web))
        .send_json(serde_json::json!({"host": "chk-host", "service": "backup", "status": 0, "output": "x"}));
    assert!(matches!(r, Err(ureq::Error::Status(401, _))), "{r:?}");

    // Flapping: alternating passive results, every one HARD.
    for i in 0..8 {
        let (code, body) = post(
            &c,
            "/api/v1/results",
            &serde_json::json!({"host": "chk-host", "service": "flappy", "status": (i % 2) * 2, "output": "flip"}),
        );
        assert_eq!(code, 200, "{body}");
    }
    let flappy = check(&c.get("/api/v1/status").unwrap(), "chk-host", "flappy").unwrap().clone();
    assert_eq!(flappy["flapping"], true, "{flappy}");
    assert!(flappy["percent_state_change"].as_f64().unwrap() >= 30.0, "{flappy}");

    // Acknowledge the closed port (sticky) with the CLI, the dummy with an external
    // command line; schedule a host downtime with the CLI.
    let out = cli(&c, &["ack", "chk-host", "tcp_closed", "--comment", "port closed on purpose", "--sticky"]);
    assert!(out.contains("acknowledged 1"), "{out}");
    let cmd = "[1700000000] ACKNOWLEDGE_SVC_PROBLEM;chk-host;dummy;0;1;1;ops;known dummy; stays\n";
    let resp = ureq::post(&format!("http://{}/api/v1/commands", c.web))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .send_string(cmd)
        .expect("commands");
    assert_eq!(resp.status(), 200);
    let ok = ureq::post(&format!("http://{}/api/v1/ack", c.web))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .send_json(serde_json::json!({"host": "chk-host", "service": "uptime", "comment": "x"}));
    assert!(matches!(ok, Err(ureq::Error::Status(409, _))), "an OK check cannot be acknowledged: {ok:?}");
    let out = cli(&c, &["downtime", "chk-host", "--duration", "2h", "--comment", "maintenance window"]);
    assert!(out.contains("scheduled downtime"), "{out}");
    let problems = c.get("/api/v1/status/problems").unwrap();
    let list = problems.as_array().unwrap();
    let first_handled = list.iter().position(|p| p["handled"] == true).unwrap_or(list.len());
    assert!(list[first_handled..].iter().all(|p| p["handled"] == true), "unhandled first: {problems}");
    let closed = check(&c.get("/api/v1/status").unwrap(), "chk-host", "tcp_closed").unwrap().clone();
    assert_eq!(
        (closed["acknowledged"].as_bool(), closed["in_downtime"].as_bool()),
        (Some(true), Some(true)),
        "{closed}"
    );
    assert_eq!(closed["ack"]["sticky"], true);
    let dummy = check(&c.get("/api/v1/status").unwrap(), "chk-host", "dummy").unwrap().clone();
    assert_eq!(dummy["ack"]["comment"], "known dummy; stays", "{dummy}");
    let table = cli(&c, &["status", "--problems"]);
    assert!(table.contains("tcp_closed") && table.contains("AD"), "{table}");
    let listed = cli(&c, &["checks", "list", "--host", "chk-host"]);
    assert!(listed.contains("tcp_open (active)") && listed.contains("service tcp_open (#5 in config)"), "{listed}");

    // kill -9 and restart: same states, same change times, acks, downtime and flapping
    // intact, no new state change in history.
    let before = c.get("/api/v1/status").unwrap();
    let changed_at = check(&before, "chk-host", "cpus").unwrap()["last_state_change"].clone();
    let history_len = |c: &Collector| {
        c.get("/api/v1/history?host=chk-host&service=cpus").and_then(|h| h.as_array().map(Vec::len)).unwrap_or(0)
    };
    let n = history_len(&c);
    assert!(n >= 1);
    // Routine states are written once per second (acks and downtimes when placed).
    std::thread::sleep(Duration::from_millis(1500));
    c.proc.kill9();
    c.restart();
    let after = wait_for(Duration::from_secs(20), "the host to reconnect", &[&c.proc, &agent.proc], || {
        let s = c.get("/api/v1/status")?;
        check(&s, "chk-host", "cpus").is_some().then_some(s)
    });
    let cpus = check(&after, "chk-host", "cpus").unwrap();
    assert_eq!((cpus["state"].as_str(), cpus["state_type"].as_str()), (Some("CRITICAL"), Some("HARD")), "{cpus}");
    assert_eq!(cpus["last_state_change"], changed_at, "the restart looked like a state change");
    let closed = check(&after, "chk-host", "tcp_closed").unwrap();
    assert_eq!(
        (closed["acknowledged"].as_bool(), closed["in_downtime"].as_bool()),
        (Some(true), Some(true)),
        "{closed}"
    );
    assert_eq!(check(&after, "chk-host", "flappy").unwrap()["flapping"], true);
    let downtimes = c.get("/api/v1/downtime").unwrap();
    assert_eq!(downtimes.as_array().map(Vec::len), Some(1), "{downtimes}");
    assert_eq!(downtimes[0]["comment"], "maintenance window");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(history_len(&c), n, "the restart added a state change to the history");
    let closed = check(&c.get("/api/v1/status").unwrap(), "chk-host", "tcp_closed").unwrap().clone();
    assert_eq!(closed["acknowledged"], true, "a sticky ack survives further CRITICAL results: {closed}");

    // Removing them through the CLI.
    cli(&c, &["downtime", "--delete", &downtimes[0]["id"].to_string()]);
    cli(&c, &["ack", "chk-host", "tcp_closed", "--remove"]);
    let closed = check(&c.get("/api/v1/status").unwrap(), "chk-host", "tcp_closed").unwrap().clone();
    assert_eq!(
        (closed["acknowledged"].as_bool(), closed["in_downtime"].as_bool()),
        (Some(false), Some(false)),
        "{closed}"
    );
}

/// Hosts without an agent (a switch checked by `check_tcp`, a box that only sends passive
/// results) and parents: when the switch fails, the agent host behind it goes
/// UNREACHABLE, never DOWN, as Nagios' reachability logic has it.
#[test]
fn agentless_hosts_and_parents_make_hosts_behind_a_failed_switch_unreachable() {
    require_plugin("check_tcp");
    let dir = tempfile::tempdir().unwrap();
    let switch = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = switch.local_addr().unwrap().port();
    let extra = format!(
        r#"
[hosts]
host_timeout_secs = 3

[checks]
default_pack = false
check_interval_secs = 1
retry_interval_secs = 1
max_check_attempts = 1

[[host]]
name = "sw1"
cluster = "net"
address = "127.0.0.1"
check_command = "check_tcp -H $HOSTADDRESS$ -p {port} -t 1"
check_interval_secs = 1
max_check_attempts = 1

[[host]]
name = "nas"
cluster = "net"

[[host]]
name = "web1"
cluster = "{cluster}"
parents = ["sw1"]

[[service]]
name = "backup"
passive = true
max_check_attempts = 1

[api]
admin_token = "{TOKEN}"
"#,
        cluster = ganglion_tests::CLUSTER
    );
    let c = Collector::start(dir.path(), &extra);
    let mut agent = Agent::start(dir.path(), "web1", &[&c.ingest], 1, "");
    let host_state = |h: &str| state_of(&c, h, "").map(|(s, _)| s);
    wait_for(Duration::from_secs(20), "sw1 UP by its check_tcp", &[&c.proc], || {
        (host_state("sw1")? == "UP").then_some(())
    });
    wait_for(Duration::from_secs(20), "web1 UP", &[&c.proc, &agent.proc], || {
        (host_state("web1")? == "UP").then_some(())
    });
    let status = c.get("/api/v1/status").unwrap();
    assert!(check(&status, "sw1", "backup").is_some(), "passive services apply to agent-less hosts");

    // The switch fails, then the host behind it falls silent.
    drop(switch);
    wait_for(Duration::from_secs(20), "sw1 DOWN", &[&c.proc], || (host_state("sw1")? == "DOWN").then_some(()));
    agent.proc.kill9();
    wait_for(Duration::from_secs(20), "web1 UNREACHABLE", &[&c.proc], || {
        (host_state("web1")? == "UNREACHABLE").then_some(())
    });
    let history = c.get("/api/v1/history?host=web1").unwrap();
    let states: Vec<&str> =
        history.as_array().unwrap().iter().filter(|r| r["service"] == "").filter_map(|r| r["state"].as_str()).collect();
    assert!(!states.contains(&"DOWN"), "web1 was never DOWN: {history}");

    // A host with neither agent nor command takes passive host and service results.
    let (code, body) =
        post(&c, "/api/v1/results", &serde_json::json!({"host": "nas", "status": 1, "output": "DOWN - no ping"}));
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(
        &c,
        "/api/v1/results",
        &serde_json::json!({"host": "nas", "service": "backup", "status": 2, "output": "backup failed"}),
    );
    assert_eq!(code, 200, "{body}");
    wait_for(Duration::from_secs(10), "nas DOWN", &[&c.proc], || (host_state("nas")? == "DOWN").then_some(()));
    assert_eq!(state_of(&c, "nas", "backup"), Some(("CRITICAL".to_owned(), "HARD".to_owned())));

    let listing = cli(&c, &["checks", "list", "--host", "sw1"]);
    assert!(listing.contains("from [[host]]") && listing.contains("check_tcp"), "{listing}");
}

//! Storage through the collector: agent samples reach the round-robin series, the API
//! serves them, and what was acknowledged survives `kill -9` of the collector.

use std::time::Duration;

use ganglion_tests::{bin, wait_for, Agent, Collector};
use serde_json::Value;

/// One-second steps and small archives keep the files of a test small.
const STORAGE: &str = r#"
[storage]
step_secs = 1
heartbeat_secs = 10
archives = ["RRA:AVERAGE:0.5:1:600", "RRA:MAX:0.5:1:600", "RRA:AVERAGE:0.5:10:360"]
"#;

fn known_points(v: &Value) -> Vec<(u64, f64)> {
    v["points"]
        .as_array()
        .map(|p| p.iter().filter_map(|x| Some((x[0].as_u64()?, x[1].as_f64()?))).collect())
        .unwrap_or_default()
}

#[test]
fn samples_reach_the_series_api_and_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Collector::start(dir.path(), STORAGE);
    let agent = Agent::start(dir.path(), "st-host", &[&c.ingest], 1, "");
    let url = "/api/v1/series?host=st-host&metric=mem_total&start=-120";
    let first = wait_for(Duration::from_secs(20), "5 known points of mem_total", &[&c.proc, &agent.proc], || {
        let v = c.get(url)?;
        (known_points(&v).len() >= 5).then_some(v)
    });
    assert_eq!(first["step"], 1, "{first}");
    let mem_total =
        c.host("st-host").unwrap()["metrics"].as_array().unwrap().iter().find(|m| m["name"] == "mem_total").unwrap()
            ["value"]
            .as_f64()
            .unwrap();
    for (t, v) in known_points(&first) {
        assert_eq!(v, mem_total, "mem_total at {t} is {v}, the host reports {mem_total}");
    }
    // MAX and the 10-second archive answer too; an unknown CF is a 400, an unknown
    // series a 404.
    assert!(c.get("/api/v1/series?host=st-host&metric=mem_total&cf=MAX&start=-60").is_some());
    assert!(c.get("/api/v1/series?host=st-host&metric=mem_total&cf=BOGUS").is_none());
    assert!(c.get("/api/v1/series?host=st-host&metric=no_such_metric").is_none());
    let h = c.health();
    assert!(h["storage"]["received"].as_u64().unwrap() > 0, "{h}");
    assert!(h["storage"]["journal_bytes"].as_u64().unwrap() > 0, "acks came without a journal: {h}");

    // Everything acknowledged before the kill is there after the restart.
    std::thread::sleep(Duration::from_secs(2));
    let acked = c.host("st-host").unwrap()["seq"]["last"].as_u64().unwrap();
    let before = known_points(&c.get(url).unwrap());
    c.proc.kill9();
    c.restart();
    let after = wait_for(Duration::from_secs(20), "the series after the restart", &[&c.proc, &agent.proc], || {
        let v = c.get(&format!("{url}&cluster=test"))?;
        Some(known_points(&v))
    });
    for p in &before {
        assert!(
            after.contains(p),
            "point {p:?} acknowledged before kill -9 is gone after the restart (acked seq {acked})"
        );
    }
}

/// An application counter that starts again from near zero (its process restarted)
/// must not read as a wrap-around: the interval of the reset is unknown, the rates
/// around it are the real ones.
#[test]
fn a_counter_reset_gives_a_gap_not_a_spike() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), STORAGE);
    let agent = Agent::start(dir.path(), "st-reset", &[&c.ingest], 1, "");
    let procs = [&c.proc, &agent.proc];
    wait_for(Duration::from_secs(20), "the agent's send socket", &procs, || agent.socket.exists().then_some(()));
    let send = |v: u64| {
        let out = std::process::Command::new(bin("ganglion-agent"))
            .arg("send")
            .arg("--config")
            .arg(&agent.config)
            .args(["--name", "jobs_total", "--type", "counter", "--value", &v.to_string()])
            .output()
            .expect("running ganglion-agent send");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let want = v as f64;
        wait_for(Duration::from_secs(10), &format!("jobs_total = {v} at the collector"), &procs, || {
            let h = c.host("st-reset")?;
            let m = h["metrics"].as_array()?.iter().find(|m| m["name"] == "jobs_total")?.clone();
            (m["value"].as_f64()? == want).then_some(())
        });
        std::thread::sleep(Duration::from_secs(3));
    };
    // Growth, a restart of the application (the counter starts again), growth.
    for v in [1_000, 1_600, 20, 620] {
        send(v);
    }
    let url = "/api/v1/series?host=st-reset&metric=jobs_total&start=-40";
    let v = c.get(url).expect("the jobs_total series");
    let points: Vec<(u64, Option<f64>)> =
        v["points"].as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64())).collect();
    let known: Vec<f64> = points.iter().filter_map(|p| p.1).collect();
    let max = known.iter().copied().fold(0.0, f64::max);
    assert!(max <= 600.0, "a rate above the largest real one (600/s): {max} in {points:?}");
    assert!(known.iter().filter(|&&r| r > 0.0).count() >= 2, "both increases are visible: {points:?}");
    // Between the last positive rate of the first run and the first of the second run
    // lies the reset, which must be unknown.
    let pos: Vec<usize> =
        points.iter().enumerate().filter(|(_, p)| p.1.is_some_and(|r| r > 0.0)).map(|(i, _)| i).collect();
    let gap = pos.windows(2).find(|w| w[1] > w[0] + 1).expect("two separate increases");
    assert!(points[gap[0] + 1..gap[1]].iter().any(|p| p.1.is_none()), "no unknown at the reset: {points:?}");
}

/// `[[storage.rule]]` gives matching series their own step and archives; the others
/// keep `[storage]`'s.
#[test]
fn storage_rules_choose_step_and_archives_per_metric() {
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        "{STORAGE}[[storage.rule]]\ncluster = \"te*\"\nmetric = \"mem_*\"\nstep_secs = 5\nheartbeat_secs = 20\n\
         archives = [\"RRA:LAST:0.5:1:100\"]\n"
    );
    let c = Collector::start(dir.path(), &rules);
    let agent = Agent::start(dir.path(), "st-rules", &[&c.ingest], 1, "");
    let procs = [&c.proc, &agent.proc];
    let get = |q: &str| {
        wait_for(Duration::from_secs(20), q, &procs, || {
            let v = c.get(&format!("/api/v1/series?host=st-rules&{q}&start=-60"))?;
            (!known_points(&v).is_empty()).then_some(v)
        })
    };
    assert_eq!(get("metric=mem_total&cf=LAST")["step"], 5);
    assert_eq!(get("metric=load_one")["step"], 1);
}

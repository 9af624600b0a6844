//! Storage through the collector: agent samples reach the round-robin series, the API
//! serves them, and what was acknowledged survives `kill -9` of the collector.

use std::time::Duration;

use ganglion_tests::{bin, require, wait_for, Agent, Collector};
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

/// Rows of `rrdtool fetch` output: (time, value; NaN for unknown).
fn rrdtool_fetch(file: &std::path::Path, cf: &str, start: u64, end: u64) -> Vec<(u64, f64)> {
    let out = std::process::Command::new(require("rrdtool", "rrdtool"))
        .args(["fetch", file.to_str().unwrap(), cf, "-s", &start.to_string(), "-e", &end.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "rrdtool fetch: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (t, v) = l.split_once(':')?;
            let v = v.trim();
            Some((t.trim().parse().ok()?, if v.contains("nan") { f64::NAN } else { v.parse().ok()? }))
        })
        .collect()
}

/// `ganglion import-rrd` on a tree made by the real rrdtool: refused while the
/// collector runs, then every file's series fetches through the collector's API as
/// `rrdtool fetch` reads the file; a damaged file is reported and left out.
#[test]
fn import_rrd_brings_a_ganglia_tree_into_a_collector() {
    let rrdtool = require("rrdtool", "rrdtool");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("rrds");
    let t0 = 1_699_999_995u64;
    let mut files = Vec::new();
    for (host, metric, kind) in [("web1", "cpu_user", "GAUGE"), ("web2", "bytes_in", "COUNTER")] {
        let d = tree.join("test").join(host);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join(format!("{metric}.rrd"));
        let run = |args: &[String]| {
            let out = std::process::Command::new(&rrdtool).args(args).output().unwrap();
            assert!(out.status.success(), "rrdtool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let mut create: Vec<String> = ["create", f.to_str().unwrap(), "--start", &t0.to_string(), "--step", "15"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        create.push(format!("DS:sum:{kind}:120:U:U"));
        create.extend(["RRA:AVERAGE:0.5:1:244", "RRA:AVERAGE:0.5:24:244", "RRA:MAX:0.5:24:244"].map(String::from));
        run(&create);
        // Six hours with a gap longer than the heartbeat.
        let mut t = t0;
        let mut counter = 5_000_000u64;
        let mut update = vec!["update".to_string(), f.to_str().unwrap().to_string()];
        for k in 0..1440u64 {
            t += if k == 700 { 600 } else { 15 };
            counter += k % 97 * 13;
            let v = if kind == "GAUGE" { format!("{}", (k * 37 % 1000) as f64 / 8.0) } else { counter.to_string() };
            update.push(format!("{t}:{v}"));
        }
        run(&update);
        files.push((host, metric, f, t));
    }
    std::fs::write(tree.join("test/web1/broken.rrd"), b"not an rrd file").unwrap();

    let mut c = Collector::start(dir.path(), "");
    let import = |c: &Collector| {
        std::process::Command::new(bin("ganglion"))
            .args(["import-rrd", "--config"])
            .arg(&c.config)
            .arg(&tree)
            .output()
            .unwrap()
    };
    let out = import(&c);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{}", String::from_utf8_lossy(&out.stderr));
    c.proc.stop();
    let out = import(&c);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "a file was left out\n{stdout}\n{stderr}");
    assert!(stdout.contains("imported 2 series"), "{stdout}\n{stderr}");
    assert!(stderr.contains("[3/3]") && stderr.contains("skipped") && stderr.contains("broken.rrd"), "{stderr}");
    c.restart();
    for (host, metric, file, last) in &files {
        for (cf, span) in [("AVERAGE", 3000), ("AVERAGE", 86_400), ("MAX", 86_400)] {
            let want = rrdtool_fetch(file, cf, last - span, *last);
            let url = format!(
                "/api/v1/series?cluster=test&host={host}&metric={metric}&cf={cf}&start={}&end={last}",
                last - span
            );
            let got = c.get(&url).unwrap_or_else(|| panic!("{url}\n{}", c.proc.tail(20)));
            let points: Vec<(u64, Option<f64>)> =
                got["points"].as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64())).collect();
            assert_eq!(points.len(), want.len(), "{url}");
            assert!(want.iter().filter(|w| !w.1.is_nan()).count() > 10, "{url}: too few known rows to compare");
            for ((t, v), (wt, wv)) in points.iter().zip(&want) {
                assert_eq!(t, wt, "{url}");
                match v {
                    None => assert!(wv.is_nan(), "{url} at {t}: unknown, rrdtool has {wv}"),
                    Some(v) => assert!((v - wv).abs() <= 1e-9 * wv.abs().max(1.0), "{url} at {t}: {v}, rrdtool {wv}"),
                }
            }
        }
    }
}

/// A series whose state record is damaged in both tables of its shard (the collector
/// stopped in between) is quarantined at start-up, listed in `/api/v1/health`, and
/// starts again from the agent's next samples while the collector keeps serving.
#[test]
fn damaged_series_are_quarantined_shown_in_health_and_start_again() {
    use ganglion_store::engine::shard::{decode_header, Layout};
    let dir = tempfile::tempdir().unwrap();
    let mut c = Collector::start(dir.path(), STORAGE);
    let agent = Agent::start(dir.path(), "st-damage", &[&c.ingest], 1, "");
    wait_for(Duration::from_secs(20), "samples of mem_total", &[&c.proc, &agent.proc], || {
        let v = c.get("/api/v1/series?host=st-damage&metric=mem_total&start=-60")?;
        (known_points(&v).len() >= 3).then_some(())
    });
    // A clean stop writes every series into its shard.
    c.proc.stop();
    let data = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("data-"))
        .unwrap();
    let shards: Vec<_> = std::fs::read_dir(data.join("store/shards")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(shards.len(), 1, "{shards:?}");
    let mut bytes = std::fs::read(&shards[0]).unwrap();
    let h = decode_header(&bytes[..4096]).unwrap();
    let layout = Layout::new(&h.def, h.capacity);
    for copy in 0..2 {
        // The record's last update time: in range, so only the checksum tells.
        bytes[layout.state_off(copy, 0) as usize + 24] ^= 0x01;
    }
    std::fs::write(&shards[0], &bytes).unwrap();
    c.restart();
    let procs = [&c.proc, &agent.proc];
    let q = wait_for(Duration::from_secs(20), "a quarantined series in health", &procs, || {
        let h = c.health();
        let q = h["storage"]["quarantined_series"].as_array()?.first()?.clone();
        Some(q)
    });
    let series = q["series"].as_str().unwrap().to_string();
    assert!(series.starts_with("test/st-damage/"), "{q}");
    assert!(!q["reason"].as_str().unwrap().is_empty(), "{q}");
    assert!(std::path::Path::new(q["path"].as_str().unwrap()).exists(), "the raw bytes are kept: {q}");
    assert!(c.health()["storage"]["quarantined"].as_u64().unwrap() >= 1);
    let metric = series.rsplit('/').next().unwrap().to_string();
    wait_for(Duration::from_secs(20), "new samples of the quarantined series", &procs, || {
        let v = c.get(&format!("/api/v1/series?host=st-damage&metric={metric}&start=-10"))?;
        (!known_points(&v).is_empty()).then_some(())
    });
}

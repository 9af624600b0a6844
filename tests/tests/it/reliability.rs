//! Delivery guarantees: the agent's spool across collector crashes and with two
//! collectors, and host liveness.

use std::time::Duration;

use ganglion_tests::{wait_for, Agent, Collector};
use serde_json::Value;

fn seq(c: &Collector, host: &str) -> Option<Value> {
    c.host(host).map(|h| h["seq"].clone())
}

fn last_seq(c: &Collector, host: &str) -> u64 {
    seq(c, host).and_then(|s| s["last"].as_u64()).unwrap_or(0)
}

#[test]
fn sigkill_collector_agent_replays_spool_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Collector::start(dir.path(), "");
    let agent = Agent::start(dir.path(), "crashy", &[&c.ingest], 1, "");
    let before = wait_for(Duration::from_secs(20), "three batches", &[&c.proc, &agent.proc], || {
        let s = seq(&c, "crashy")?;
        (s["last"].as_u64()? >= 3).then_some(s)
    });
    let run = before["run"].clone();
    let seen_before = before["last"].as_u64().unwrap();
    assert_eq!(before["gaps"], 0);
    c.proc.kill9();
    // The agent keeps collecting into its spool while the collector is gone.
    std::thread::sleep(Duration::from_secs(4));
    c.restart();
    let after = wait_for(Duration::from_secs(30), "the spool to be replayed", &[&c.proc, &agent.proc], || {
        let s = seq(&c, "crashy")?;
        (s["last"].as_u64()? >= seen_before + 6).then_some(s)
    });
    assert_eq!(after["run"], run, "same agent run");
    let first = after["first"].as_u64().unwrap();
    assert!(first <= seen_before + 1, "batches after {seen_before} were lost: restarted collector began at {first}");
    assert_eq!(after["gaps"], 0, "{after}");
    assert_eq!(after["duplicates"], 0, "{after}");
}

#[test]
fn two_collectors_one_stops_other_keeps_receiving_and_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let a = Collector::start(dir.path(), "");
    let mut b = Collector::start(dir.path(), "");
    let agent = Agent::start(dir.path(), "mirrored", &[&a.ingest, &b.ingest], 1, "");
    let procs = [&a.proc, &b.proc, &agent.proc];
    wait_for(Duration::from_secs(20), "both collectors receiving", &procs, || {
        (last_seq(&a, "mirrored") >= 2 && last_seq(&b, "mirrored") >= 2).then_some(())
    });
    b.proc.stop();
    let b_had = {
        let a_at_stop = last_seq(&a, "mirrored");
        wait_for(Duration::from_secs(20), "collector A to keep receiving", &[&a.proc, &agent.proc], || {
            (last_seq(&a, "mirrored") >= a_at_stop + 4).then_some(())
        });
        a_at_stop
    };
    b.restart();
    let procs = [&a.proc, &b.proc, &agent.proc];
    let s = wait_for(Duration::from_secs(30), "collector B to catch up", &procs, || {
        let s = seq(&b, "mirrored")?;
        (s["last"].as_u64()? >= last_seq(&a, "mirrored").saturating_sub(1)).then_some(s)
    });
    let first = s["first"].as_u64().unwrap();
    assert!(first <= b_had + 1, "B restarted at {first} but had only seen up to about {b_had}");
    assert_eq!(s["gaps"], 0, "{s}");
    assert_eq!(seq(&a, "mirrored").unwrap()["gaps"], 0);
}

#[test]
fn silent_host_goes_down_then_expires() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), "[hosts]\nhost_timeout_secs = 2\nhost_expire_secs = 5\n");
    let mut agent = Agent::start(dir.path(), "shortlived", &[&c.ingest], 1, "");
    wait_for(Duration::from_secs(20), "the host to be up", &[&c.proc, &agent.proc], || {
        c.host("shortlived").filter(|h| h["up"] == true)
    });
    agent.proc.kill9();
    let down = wait_for(Duration::from_secs(10), "the host to go down", &[&c.proc], || {
        c.host("shortlived").filter(|h| h["up"] == false)
    });
    assert!(down["silent_secs"].as_f64().unwrap() >= 2.0);
    let hosts = c.get("/api/v1/clusters").unwrap();
    assert_eq!(hosts[0]["hosts_down"], 1, "{hosts}");
    wait_for(Duration::from_secs(15), "the host to be forgotten", &[&c.proc], || {
        c.host("shortlived").is_none().then_some(())
    });
}

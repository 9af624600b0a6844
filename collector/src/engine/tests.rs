//! Engine tests.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::defs::{ChecksDefaults, Defs, RawService};
use super::*;
use crate::config::ClusterConfig;

pub(crate) fn clusters() -> BTreeMap<String, ClusterConfig> {
    let mut c = BTreeMap::new();
    c.insert(
        "c".to_owned(),
        ClusterConfig { key: b"0123456789abcdef".to_vec(), host_timeout: None, host_expire: None },
    );
    c
}

/// A running engine with one host of cluster `c` whose services are passive, one attempt.
pub(crate) async fn engine_with_host(host: &str, passive: &[&str]) -> (EngineHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(State::new(clusters()));
    state.host("c", host, "127.0.0.1:1".into());
    let services = passive
        .iter()
        .map(|s| RawService {
            name: (*s).to_owned(),
            passive: Some(true),
            max_check_attempts: Some(1),
            ..RawService::default()
        })
        .collect();
    let defs = Defs::build(vec![], services, false, ChecksDefaults::default()).unwrap();
    let cfg = EngineConfig {
        defs,
        state_db: dir.path().join("state.db"),
        plugin_dir: "/nonexistent".into(),
        max_concurrent_plugins: 1,
        timeout_state: ServiceState::Critical,
        host_check_interval_secs: 60,
        store: None,
        hosts: hosts::HostDefs::default(),
    };
    let (engine, _task) = start(cfg, state, CancellationToken::new()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !engine.status().iter().any(|c| c.host == host) {
        assert!(Instant::now() < deadline, "the engine never saw the host");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (engine, dir)
}

use ganglion_checks::downtime::{EventKind, Mode, Schedule, Target};
use ganglion_checks::state::Notify;
use ganglion_proto::msg::{MetricKind, MetricMeta};
use tokio::sync::broadcast::error::TryRecvError;

use super::table::Table;

const T0: i64 = 1_700_000_000;

struct Fixture {
    table: Table,
    state: State,
    events: broadcast::Receiver<CheckEvent>,
}

fn passive(name: &str, attempts: u32) -> RawService {
    RawService { name: name.into(), passive: Some(true), max_check_attempts: Some(attempts), ..RawService::default() }
}

fn fixture(services: Vec<RawService>, saved: db::Saved) -> Fixture {
    let state = State::new(clusters());
    state.host("c", "h1", "127.0.0.1:1".into());
    let defs = Defs::build(vec![], services, false, ChecksDefaults::default()).unwrap();
    let (tx, events) = broadcast::channel(1024);
    let table = Table::new(defs, "/nonexistent".into(), 60, saved, tx, Arc::new(EngineStats::default()), false, T0);
    let mut f = Fixture { table, state, events };
    f.table.tick(&f.state, T0, true);
    f.drain();
    f
}

impl Fixture {
    fn drain(&mut self) -> Vec<CheckEvent> {
        let mut out = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(e) => out.push(e),
                Err(TryRecvError::Empty) => return out,
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn result(&mut self, service: &str, code: i64, now: i64) -> Vec<CheckEvent> {
        let r = PassiveResult {
            host: "h1".into(),
            service: service.into(),
            code,
            output: format!("code {code}"),
            time: now,
        };
        self.table.apply_passive(r, now).unwrap();
        self.drain()
    }

    fn view(&self, service: &str) -> CheckView {
        self.table.views(T0).into_iter().find(|v| v.service == service).unwrap()
    }

    fn ack(&mut self, service: &str, kind: AckKind, now: i64) -> Result<usize, ControlError> {
        self.table.acknowledge(None, "h1", Some(service), kind, "ann", "looking", true, false, now).map(|(_, n)| n)
    }
}

/// (notify, suppressed) of the state events in `events`.
fn notes(events: &[CheckEvent]) -> Vec<(Notify, Option<Suppression>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            CheckEventKind::State { notify, suppressed, .. } => Some((*notify, *suppressed)),
            _ => None,
        })
        .collect()
}

#[test]
fn passive_results_reach_their_states_and_announce_problems() {
    let mut f = fixture(vec![passive("svc", 1)], db::Saved::default());
    let ev = f.result("svc", 2, T0 + 1);
    assert_eq!(notes(&ev), vec![(Notify::Problem, None)]);
    let v = f.view("svc");
    assert_eq!((v.state.as_str(), v.state_type.as_str(), v.handled), ("CRITICAL", "HARD", false));
    // Out-of-range passive codes are UNKNOWN (Nagios), unknown services are refused.
    f.result("svc", 7, T0 + 2);
    assert_eq!(f.view("svc").state, "UNKNOWN");
    let r = PassiveResult { host: "h1".into(), service: "nope".into(), code: 0, output: String::new(), time: T0 };
    assert!(f.table.apply_passive(r, T0).is_err());
}

#[test]
fn normal_acks_go_with_a_state_change_and_sticky_ones_with_recovery() {
    let mut f = fixture(vec![passive("svc", 1)], db::Saved::default());
    assert!(matches!(f.ack("svc", AckKind::Normal, T0), Err(ControlError::Conflict(_))), "OK cannot be acked");
    assert!(matches!(
        f.table.acknowledge(None, "nobody", None, AckKind::Normal, "a", "c", true, false, T0),
        Err(ControlError::NotFound(_))
    ));
    f.result("svc", 2, T0 + 1);
    assert_eq!(f.ack("svc", AckKind::Normal, T0 + 2).unwrap(), 1);
    let ev = f.drain();
    assert!(matches!(&ev[0].kind, CheckEventKind::Acknowledged { sticky: false, notify: true, .. }), "{ev:?}");
    assert_eq!(f.table.ctx.comments.len(), 1);
    let v = f.view("svc");
    assert!(v.acknowledged && v.handled);
    // Same problem again: the reminder is suppressed.
    assert_eq!(notes(&f.result("svc", 2, T0 + 3)), vec![(Notify::Reminder, Some(Suppression::Acknowledged))]);
    // CRITICAL → WARNING ends a normal ack, and that problem is announced.
    let ev = f.result("svc", 1, T0 + 4);
    assert!(ev.iter().any(|e| matches!(&e.kind, CheckEventKind::AckRemoved { reason } if reason == "state changed")));
    assert_eq!(notes(&ev), vec![(Notify::Problem, None)]);
    assert!(!f.view("svc").acknowledged);
    assert!(f.table.ctx.comments.is_empty(), "a non-persistent ack's comment goes with it");
    // A sticky ack survives WARNING → CRITICAL and goes on recovery, which is sent.
    f.ack("svc", AckKind::Sticky, T0 + 5).unwrap();
    assert_eq!(notes(&f.result("svc", 2, T0 + 6)), vec![(Notify::Problem, Some(Suppression::Acknowledged))]);
    assert!(f.view("svc").acknowledged);
    let ev = f.result("svc", 0, T0 + 7);
    assert_eq!(notes(&ev), vec![(Notify::Recovery, None)]);
    assert!(!f.view("svc").acknowledged);
    // Removing an ack that is not there.
    assert!(matches!(f.table.remove_ack(None, "h1", Some("svc"), T0 + 8), Err(ControlError::NotFound(_))));
}

fn downtime_spec(service: Option<&str>, start: i64, end: i64, mode: Mode) -> DowntimeSpec {
    DowntimeSpec {
        target: Target { host: "h1".into(), service: service.map(str::to_owned) },
        schedule: Schedule::Once { start, end },
        mode,
        trigger: None,
        author: "ann".into(),
        comment: "maintenance".into(),
    }
}

#[test]
fn host_downtime_suppresses_its_services_until_cancelled() {
    let mut f = fixture(vec![passive("svc", 1)], db::Saved::default());
    let (_, id) = f.table.add_downtime(downtime_spec(None, T0, T0 + 100, Mode::Fixed), T0).unwrap();
    let ev = f.drain();
    assert!(matches!(ev[0].kind, CheckEventKind::Downtime { kind: EventKind::Started, notify: true, .. }), "{ev:?}");
    assert_eq!(notes(&f.result("svc", 2, T0 + 1)), vec![(Notify::Problem, Some(Suppression::Downtime))]);
    let v = f.view("svc");
    assert!(v.in_downtime && v.handled);
    assert_eq!(f.table.ctx.comments.len(), 1, "the downtime's comment");
    f.table.remove_downtime(id, T0 + 2).unwrap();
    let ev = f.drain();
    assert!(matches!(ev[0].kind, CheckEventKind::Downtime { kind: EventKind::Cancelled, .. }), "{ev:?}");
    assert!(f.table.ctx.comments.is_empty());
    assert_eq!(notes(&f.result("svc", 2, T0 + 3)), vec![(Notify::Reminder, None)]);
    assert!(matches!(f.table.remove_downtime(id, T0 + 4), Err(ControlError::NotFound(_))));
}

#[test]
fn alerting_sees_healthy_checks_in_their_own_downtime_only() {
    let mut f = fixture(vec![passive("svc", 1), passive("other", 1)], db::Saved::default());
    f.result("svc", 0, T0 + 1);
    f.result("other", 0, T0 + 1);
    let seen = |f: &Fixture| {
        let mut v: Vec<(String, bool, bool)> = f
            .table
            .alert_view(T0 + 2, &Default::default())
            .into_iter()
            .map(|o| (o.key.2, o.in_downtime, o.own_downtime))
            .collect();
        v.sort();
        v
    };
    assert!(seen(&f).is_empty(), "nothing to say about healthy checks");
    let (_, svc_dt) = f.table.add_downtime(downtime_spec(Some("svc"), T0, T0 + 100, Mode::Fixed), T0 + 2).unwrap();
    assert_eq!(seen(&f), [("svc".to_owned(), true, true)]);
    // The host's downtime: the host check is in its own, its services in the host's.
    f.table.remove_downtime(svc_dt, T0 + 2).unwrap();
    f.table.add_downtime(downtime_spec(None, T0, T0 + 100, Mode::Fixed), T0 + 2).unwrap();
    assert_eq!(seen(&f), [(String::new(), true, true)], "the healthy services are held, not shown");
}

#[test]
fn flexible_downtime_starts_with_the_problem_and_ends_after_its_duration() {
    let mut f = fixture(vec![passive("svc", 1)], db::Saved::default());
    f.table.add_downtime(downtime_spec(Some("svc"), T0, T0 + 100, Mode::Flexible { duration_secs: 10 }), T0).unwrap();
    assert!(f.drain().is_empty(), "a flexible downtime waits for a problem");
    assert!(!f.view("svc").in_downtime);
    let ev = f.result("svc", 2, T0 + 5);
    assert!(ev.iter().any(|e| matches!(e.kind, CheckEventKind::Downtime { kind: EventKind::Started, .. })), "{ev:?}");
    assert_eq!(notes(&ev), vec![(Notify::Problem, Some(Suppression::Downtime))]);
    f.table.tick(&f.state, T0 + 16, true);
    let ev = f.drain();
    assert!(ev.iter().any(|e| matches!(e.kind, CheckEventKind::Downtime { kind: EventKind::Ended, .. })), "{ev:?}");
    assert_eq!(notes(&f.result("svc", 2, T0 + 17)), vec![(Notify::Reminder, None)]);
}

#[test]
fn flapping_starts_stops_and_suppresses() {
    let mut f = fixture(vec![passive("svc", 1)], db::Saved::default());
    let mut all = Vec::new();
    for i in 0..6 {
        all.extend(f.result("svc", if i % 2 == 0 { 2 } else { 0 }, T0 + 1 + i));
    }
    let started = all.iter().position(|e| matches!(e.kind, CheckEventKind::Flapping { started: true, .. })).unwrap();
    // Default thresholds 20/30 %: the fifth change (≈ 30.3 %) starts it.
    assert!(f.view("svc").flapping);
    assert!(f.view("svc").percent_state_change >= 30.0);
    let after: Vec<_> = notes(&all[started..]);
    assert!(after.iter().all(|(n, s)| *n == Notify::None || *s == Some(Suppression::Flapping)), "{after:?}");
    let mut stopped = false;
    for i in 0..25 {
        stopped |= f
            .result("svc", 0, T0 + 10 + i)
            .iter()
            .any(|e| matches!(e.kind, CheckEventKind::Flapping { started: false, .. }));
    }
    assert!(stopped && !f.view("svc").flapping);
}

fn write(db: &mut db::Db, batch: db::Batch) {
    db.write(&batch).unwrap();
}

#[test]
fn acks_flapping_downtime_and_states_resume_after_a_restart_without_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = db::Db::open(&dir.path().join("state.db")).unwrap();
    let mut f = fixture(vec![passive("svc", 3), passive("other", 1)], db::Saved::default());
    for i in 0..6 {
        f.result("other", if i % 2 == 0 { 2 } else { 0 }, T0 + 1 + i);
    }
    f.result("other", 2, T0 + 8);
    f.result("svc", 2, T0 + 9);
    f.result("svc", 2, T0 + 10);
    let (b, _) =
        f.table.acknowledge(None, "h1", Some("svc"), AckKind::Sticky, "ann", "disk swap", true, true, T0 + 11).unwrap();
    write(&mut db, b);
    let spec = DowntimeSpec {
        target: Target { host: "h1".into(), service: None },
        schedule: Schedule::Recurring { cron: "0 2 * * Sun".into(), window_secs: 3600, time_zone: "UTC".into() },
        mode: Mode::Fixed,
        trigger: None,
        author: "ann".into(),
        comment: "weekly".into(),
    };
    let (b, id) = f.table.add_downtime(spec, T0 + 12).unwrap();
    write(&mut db, b);
    let out = f.table.tick(&f.state, T0 + 13, true);
    write(&mut db, out.batch.unwrap());
    let before: Vec<CheckView> = f.table.views(T0);
    drop(f);

    let saved = db.load().unwrap();
    let mut g = fixture(vec![passive("svc", 3), passive("other", 1)], saved);
    let after = g.table.views(T0);
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (&a.service, &a.state, &a.state_type, a.attempt, a.last_state_change, a.acknowledged, a.flapping),
            (&b.service, &b.state, &b.state_type, b.attempt, b.last_state_change, b.acknowledged, b.flapping),
        );
    }
    let svc = g.view("svc");
    assert_eq!((svc.state.as_str(), svc.state_type.as_str(), svc.attempt), ("CRITICAL", "SOFT", 2));
    assert_eq!(svc.ack.as_ref().map(|a| (a.sticky, a.comment.as_str())), Some((true, "disk swap")));
    assert!(g.view("other").flapping);
    assert_eq!(g.table.ctx.downtime_views(T0).iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(g.table.ctx.comments.len(), 2, "the ack's and the downtime's comments");
    // The next result continues the attempts instead of starting over, and the sticky
    // ack holds.
    let ev = g.result("svc", 2, T0 + 20);
    assert_eq!(notes(&ev), vec![(Notify::Problem, Some(Suppression::Acknowledged))]);
    assert_eq!(g.view("svc").state_type, "HARD");
    // A new downtime gets a new id.
    let (_, id2) = g.table.add_downtime(downtime_spec(None, T0, T0 + 10, Mode::Fixed), T0 + 21).unwrap();
    assert!(id2 > id);
}

fn set_metric(state: &State, value: f64) {
    set_named(state, "load", value);
}

fn set_named(state: &State, name: &str, value: f64) {
    let h = state.host("c", "h1", "127.0.0.1:1".into());
    let mut g = lock(&h);
    let meta = MetricMeta {
        id: 0,
        name: name.into(),
        unit: String::new(),
        kind: MetricKind::Gauge,
        group: "cpu".into(),
        description: String::new(),
    };
    let slot = g.slot_for(&meta);
    g.slots[slot].value = value;
    g.slots[slot].time_ms = crate::state::now_ms();
    g.seq.batches = 2;
}

#[test]
fn routine_results_are_written_lazily_and_changes_at_once() {
    let metric = RawService {
        name: "load".into(),
        metric: Some("load".into()),
        warning: Some("5".into()),
        critical: Some("10".into()),
        check_interval_secs: Some(1),
        retry_interval_secs: Some(1),
        max_check_attempts: Some(1),
        ..RawService::default()
    };
    let mut f = fixture(vec![metric], db::Saved::default());
    set_metric(&f.state, 1.0);
    let rows = |f: &mut Fixture, now: i64| {
        let b = f.table.tick(&f.state, now, true).batch.unwrap_or_default();
        b.services.iter().map(|r| r.saved.status.state.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(rows(&mut f, T0 + 1), vec!["OK"], "a first result is written at once");
    assert!(rows(&mut f, T0 + 2).is_empty(), "OK again: written later");
    set_metric(&f.state, 50.0);
    assert_eq!(rows(&mut f, T0 + 3), vec!["CRITICAL"]);
    assert!(rows(&mut f, T0 + 4).is_empty());
    let later = T0 + 3 + table::LAZY_WRITE_SECS;
    assert_eq!(rows(&mut f, later), vec!["CRITICAL"], "refreshed after LAZY_WRITE_SECS");
    // No room at the writer: nothing is collected, and nothing is lost.
    set_metric(&f.state, 1.0);
    assert!(f.table.tick(&f.state, later + 1, false).batch.is_none());
    assert_eq!(rows(&mut f, later + 2), vec!["OK"]);
}

#[tokio::test]
async fn commands_through_the_handle_answer_after_the_write() {
    let (engine, dir) = engine_with_host("h1", &["svc"]).await;
    engine
        .submit(PassiveResult {
            host: "h1".into(),
            service: "svc".into(),
            code: 2,
            output: "bad".into(),
            time: now_secs(),
        })
        .await
        .unwrap();
    let out = engine
        .control(Control::Ack {
            cluster: None,
            host: "h1".into(),
            service: Some("svc".into()),
            kind: AckKind::Normal,
            author: "ann".into(),
            comment: "mine".into(),
            notify: false,
            persistent: false,
        })
        .await
        .unwrap();
    assert_eq!(out["acknowledged"], 1);
    // Durable already: a second connection sees the acknowledgement.
    let db = db::Db::open(&dir.path().join("state.db")).unwrap();
    let saved = db.load().unwrap();
    assert!(saved.checks[&("c".to_owned(), "h1".to_owned(), "svc".to_owned())].ack.is_some());
    let mut rx = engine.subscribe();
    engine
        .submit(PassiveResult {
            host: "h1".into(),
            service: "svc".into(),
            code: 0,
            output: "ok".into(),
            time: now_secs(),
        })
        .await
        .unwrap();
    let e = rx.recv().await.unwrap();
    assert!(matches!(e.kind, CheckEventKind::AckRemoved { .. }), "{e:?}");
}

#[test]
fn a_pattern_check_reports_the_worst_matching_metric() {
    let util = RawService {
        name: "disk_util".into(),
        metric: Some("diskio_*_util".into()),
        warning: Some("90".into()),
        critical: Some("98".into()),
        check_interval_secs: Some(1),
        retry_interval_secs: Some(1),
        max_check_attempts: Some(1),
        ..RawService::default()
    };
    let free = RawService {
        name: "fs_free".into(),
        metric: Some("fs_*_free_pct".into()),
        warning: Some("20:".into()),
        critical: Some("10:".into()),
        ..util.clone()
    };
    let mut f = fixture(vec![util, free], db::Saved::default());
    set_named(&f.state, "diskio_sda_util", 12.0);
    set_named(&f.state, "diskio_sdb_util", 95.0);
    set_named(&f.state, "diskio_sdc_await", 990.0); // not matched
    set_named(&f.state, "fs_root_free_pct", 50.0);
    set_named(&f.state, "fs_var_free_pct", 15.0);
    set_named(&f.state, "fs_tmp_free_pct", 30.0);
    f.table.tick(&f.state, T0 + 1, true);
    let v = f.view("disk_util");
    assert_eq!(v.state, "WARNING", "{v:?}");
    assert!(v.output.contains("diskio_sdb_util = 95") && v.output.contains("worst of 2"), "{}", v.output);
    let v = f.view("fs_free");
    assert_eq!(v.state, "WARNING", "{v:?}");
    assert!(v.output.contains("fs_var_free_pct = 15"), "lower bounds: the smallest is worst: {}", v.output);
    set_named(&f.state, "diskio_sda_util", 99.5);
    f.table.tick(&f.state, T0 + 2, true);
    let v = f.view("disk_util");
    assert_eq!(v.state, "CRITICAL");
    assert!(v.output.contains("diskio_sda_util = 99.5"), "{}", v.output);
}

#[test]
fn a_pattern_takes_no_ratio_or_aggregate() {
    let bad = RawService {
        name: "x".into(),
        metric: Some("diskio_*_util".into()),
        divide_by: Some("cpu_num".into()),
        ..RawService::default()
    };
    let err = Defs::build(vec![], vec![bad], false, ChecksDefaults::default()).unwrap_err();
    assert!(format!("{err:?}").contains("pattern"), "{err:?}");
}

fn host_defs(text: &str) -> hosts::HostDefs {
    #[derive(serde::Deserialize)]
    struct F {
        host: Vec<hosts::RawHost>,
    }
    let f: F = toml::from_str(text).unwrap();
    let d = hosts::HostDefaults {
        settings: ganglion_checks::state::StateSettings {
            max_check_attempts: 2,
            check_interval_secs: 60,
            retry_interval_secs: 10,
        },
        timeout: Duration::from_secs(10),
    };
    hosts::HostDefs::build(f.host, d).unwrap()
}

fn plugin_run(state: ServiceState, output: &str) -> plugin::PluginRun {
    plugin::PluginRun {
        state,
        exit_code: Some(state.as_code() as i32),
        output: ganglion_checks::plugin::parse_output(output),
        duration: Duration::from_millis(5),
        timed_out: false,
    }
}

fn host_state(t: &Table, host: &str) -> String {
    t.views(T0).into_iter().find(|v| v.host == host && v.service.is_empty()).map(|v| v.state).unwrap_or_default()
}

/// Makes an agent host silent for two minutes (past four 15 s intervals).
fn silence(state: &State, cluster: &str, host: &str) {
    let h = state.host(cluster, host, "127.0.0.1:1".into());
    lock(&h).last_seen = Instant::now() - Duration::from_secs(120);
}

#[test]
fn agentless_hosts_get_host_checks_and_passive_results_but_no_metric_checks() {
    let state = State::new(clusters());
    let services = vec![
        RawService {
            name: "load".into(),
            metric: Some("load".into()),
            critical: Some("10".into()),
            ..Default::default()
        },
        passive("backup", 1),
    ];
    let defs = Defs::build(vec![], services, false, ChecksDefaults::default()).unwrap();
    let (tx, mut rx) = broadcast::channel(1024);
    let mut t =
        Table::new(defs, "/plugins".into(), 60, db::Saved::default(), tx, Arc::new(EngineStats::default()), false, T0);
    t.set_hosts(host_defs(
        r#"
[[host]]
name = "sw1"
cluster = "net"
address = "192.0.2.7"
check_command = "check_ping -H $HOSTADDRESS$ -w 100,20% -c 500,60%"
[[host]]
name = "nas"
cluster = "net"
"#,
    ));
    // The first check of a configured host starts within its spread window.
    let mut jobs = Vec::new();
    for s in 0..=15 {
        jobs.extend(t.tick(&state, T0 + s, true).active);
    }
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!((job.host.as_str(), job.service.as_str()), ("sw1", ""));
    assert_eq!(job.argv[0], "/plugins/check_ping");
    assert_eq!(job.argv[2], "192.0.2.7", "$HOSTADDRESS$ is the configured address");
    let names: Vec<String> = t.views(T0).iter().filter(|v| v.host == "sw1").map(|v| v.service.clone()).collect();
    assert_eq!(names, vec!["".to_owned(), "backup".to_owned()], "no metric check without an agent");
    // Two attempts: SOFT DOWN, then HARD DOWN.
    t.apply_active(job, plugin_run(ServiceState::Critical, "PING CRITICAL - Packet loss = 100%"));
    assert_eq!(host_state(&t, "sw1"), "DOWN");
    let v = t.views(T0).into_iter().find(|v| v.host == "sw1" && v.service.is_empty()).unwrap();
    assert_eq!((v.state_type.as_str(), v.attempt), ("SOFT", 1));
    t.apply_active(job, plugin_run(ServiceState::Critical, "PING CRITICAL - Packet loss = 100%"));
    let v = t.views(T0).into_iter().find(|v| v.host == "sw1" && v.service.is_empty()).unwrap();
    assert_eq!((v.state_type.as_str(), v.output.as_str()), ("HARD", "PING CRITICAL - Packet loss = 100%"));
    t.apply_active(job, plugin_run(ServiceState::Warning, "PING WARNING - rta 150 ms"));
    assert_eq!(host_state(&t, "sw1"), "UP", "WARNING from a host check is UP, as Nagios has it");
    // A host with neither agent nor command takes passive results.
    let r = PassiveResult { host: "nas".into(), service: String::new(), code: 1, output: "down".into(), time: T0 + 20 };
    t.apply_passive(r, T0 + 20).unwrap();
    assert_eq!(host_state(&t, "nas"), "DOWN");
    let r =
        PassiveResult { host: "nas".into(), service: "backup".into(), code: 2, output: "failed".into(), time: T0 + 20 };
    t.apply_passive(r, T0 + 20).unwrap();
    while rx.try_recv().is_ok() {}
}

#[test]
fn a_host_behind_a_failed_parent_is_unreachable_not_down() {
    let t0 = T0;
    let state = State::new(clusters());
    state.host("c", "web1", "127.0.0.1:1".into());
    state.host("c", "web2", "127.0.0.1:1".into());
    let defs = Defs::build(vec![], vec![], false, ChecksDefaults::default()).unwrap();
    let (tx, mut rx) = broadcast::channel(1024);
    let mut t =
        Table::new(defs, "/plugins".into(), 60, db::Saved::default(), tx, Arc::new(EngineStats::default()), false, t0);
    t.set_hosts(host_defs(
        r#"
[[host]]
name = "sw1"
cluster = "net"
check_command = "check_ping -H $HOSTADDRESS$"
max_check_attempts = 1
[[host]]
name = "web1"
cluster = "c"
parents = ["sw1"]
"#,
    ));
    let mut job = None;
    for s in 0..=15 {
        job = job.or(t.tick(&state, t0 + s, true).active.pop());
    }
    let job = job.expect("the switch is checked");
    t.apply_active_at(&job, plugin_run(ServiceState::Ok, "PING OK"), t0 + 15);
    assert_eq!(host_state(&t, "sw1"), "UP");
    while rx.try_recv().is_ok() {}

    // Both agents fall silent; the switch was last checked long ago, so it is checked
    // again before web1 is called anything.
    silence(&state, "c", "web1");
    silence(&state, "c", "web2");
    // Within the switch's check interval, so only a recheck would check it.
    let now = t0 + 30;
    assert!(t.tick(&state, now, true).active.is_empty());
    assert_eq!(host_state(&t, "web1"), "UP", "waits for the parent's check");
    assert_eq!(host_state(&t, "web2"), "DOWN", "no parents: DOWN at once");
    let again = t.tick(&state, now + 1, true).active;
    assert_eq!(again.len(), 1, "the parent is checked now: {again:?}");
    t.apply_active_at(&again[0], plugin_run(ServiceState::Critical, "PING CRITICAL - Packet loss = 100%"), now + 1);
    assert_eq!(host_state(&t, "sw1"), "DOWN");
    t.tick(&state, now + 2, true);
    assert_eq!(host_state(&t, "web1"), "UNREACHABLE");
    let web1: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter(|e| e.host == "web1")
        .filter_map(|e| match e.kind {
            CheckEventKind::State { state, .. } => Some(state),
            _ => None,
        })
        .collect();
    assert_eq!(web1, vec!["UNREACHABLE".to_owned()], "web1 never went DOWN");

    // The switch comes back; web1 still silent: DOWN at its next host check.
    t.apply_active_at(&again[0], plugin_run(ServiceState::Ok, "PING OK"), now + 3);
    t.tick(&state, now + 3, true);
    assert_eq!(host_state(&t, "web1"), "UNREACHABLE", "given a host check interval to come back");
    // By then the switch's UP is a minute old: it is checked again first.
    let jobs = t.tick(&state, now + 2 + 61, true).active;
    assert_eq!(host_state(&t, "web1"), "UNREACHABLE");
    let sw = jobs.iter().find(|j| j.host == "sw1").expect("the switch is checked again");
    t.apply_active_at(sw, plugin_run(ServiceState::Ok, "PING OK"), now + 2 + 61);
    t.tick(&state, now + 2 + 62, true);
    assert_eq!(host_state(&t, "web1"), "DOWN");
}

#[test]
fn a_parent_that_is_never_checked_again_holds_its_child_for_a_bounded_time() {
    let t0 = T0;
    let state = State::new(clusters());
    state.host("c", "web1", "127.0.0.1:1".into());
    let defs = Defs::build(vec![], vec![], false, ChecksDefaults::default()).unwrap();
    let (tx, _rx) = broadcast::channel(1024);
    let mut t =
        Table::new(defs, "/plugins".into(), 60, db::Saved::default(), tx, Arc::new(EngineStats::default()), false, t0);
    t.set_hosts(host_defs(
        "[[host]]\nname = \"sw1\"\ncluster = \"net\"\ncheck_command = \"check_ping\"\n[[host]]\nname = \"web1\"\ncluster = \"c\"\nparents = [\"sw1\"]\n",
    ));
    let mut job = None;
    for s in 0..=15 {
        job = job.or(t.tick(&state, t0 + s, true).active.pop());
    }
    t.apply_active_at(&job.unwrap(), plugin_run(ServiceState::Ok, "PING OK"), t0 + 15);
    silence(&state, "c", "web1");
    // The parent's plugin never reports back (it hangs until its timeout elsewhere).
    for s in 0..30 {
        t.tick(&state, t0 + 100 + s, true);
        assert_eq!(host_state(&t, "web1"), "UP");
    }
    t.tick(&state, t0 + 130, true);
    assert_eq!(host_state(&t, "web1"), "DOWN");
}

#[test]
fn narrowed_views_and_worst_states_for_the_dashboard() {
    let mut f = fixture(vec![passive("a", 1), passive("b", 1)], db::Saved::default());
    f.result("a", 1, T0 + 1);
    let all = f.table.views(T0 + 2);
    assert_eq!(all.len(), 3, "host check and two services");
    let problems = f.table.views_where(T0 + 2, None, None, true);
    assert_eq!(problems.iter().map(|v| v.service.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(f.table.views_where(T0 + 2, Some("c"), Some("h1"), false).len(), 3);
    assert!(f.table.views_where(T0 + 2, Some("c"), Some("nope"), false).is_empty());
    assert!(f.table.views_where(T0 + 2, Some("other"), None, false).is_empty());
    // b has no result yet (pending): it does not count; a is WARNING.
    assert_eq!(f.table.worst_states("c"), vec![("h1".to_owned(), 1)]);
    f.result("b", 2, T0 + 3);
    assert_eq!(f.table.worst_states("c"), vec![("h1".to_owned(), 3)]);
    assert!(f.table.worst_states("other").is_empty());
}

#[test]
fn recheck_makes_checks_due_now() {
    let mut f = fixture(vec![passive("a", 1), passive("b", 1)], db::Saved::default());
    let due =
        |f: &Fixture, s: &str| f.table.hosts["c"]["h1"].services.iter().find(|i| i.def.name == s).unwrap().next_check;
    let later = T0 + 10_000;
    assert_eq!(f.table.recheck(None, "h1", Some("a"), later).unwrap(), 1);
    assert!(due(&f, "a") <= later);
    assert_eq!(f.table.recheck(Some("c"), "h1", None, later).unwrap(), 3, "the host check and both services");
    assert!(f.table.hosts["c"]["h1"].host_next_check <= later);
    assert!(matches!(f.table.recheck(None, "nope", None, later), Err(ControlError::NotFound(_))));
    assert!(matches!(f.table.recheck(Some("other"), "h1", None, later), Err(ControlError::NotFound(_))));
}

//! Alerting end to end, with a real SMTP server (Debian's aiosmtpd writing a Maildir)
//! and a webhook receiver on loopback: one email per HARD problem with the right
//! content, one recovery, reminders that acknowledgement stops (with one
//! ACKNOWLEDGEMENT notice), nothing in downtime, the graph inline,
//! 50 problems grouped into one email per contact, messages kept and delivered across
//! an SMTP outage and a `kill -9` of the collector, short texts under 160 characters
//! with the rate limit folding the excess into one summary, and `ganglion notify test`.

use std::process::Command;
use std::time::{Duration, Instant};

use ganglion_tests::{bin, wait_for, Agent, Collector, SmtpSink, WebhookReceiver};
use serde_json::{json, Value};

const TOKEN: &str = "test-admin-token-0123456789";
const HOST: &str = "alert-host";

fn post(c: &Collector, path: &str, body: &Value) -> Value {
    let r = ureq::post(&format!("http://{}{path}", c.web))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .send_json(body.clone());
    match r {
        Ok(resp) => resp.into_json().unwrap_or(Value::Null),
        Err(e) => panic!("POST {path}: {e}\n{}", c.proc.tail(30)),
    }
}

fn result(c: &Collector, service: &str, status: u8, output: &str) {
    post(c, "/api/v1/results", &json!({"host": HOST, "service": service, "status": status, "output": output}));
}

/// A passive service, HARD on the first result.
fn services(names: &[&str]) -> String {
    names.iter().map(|n| format!("[[service]]\nname = \"{n}\"\npassive = true\nmax_check_attempts = 1\n")).collect()
}

fn config(smtp_port: u16, alerts: &str, names: &[&str], contacts: &str) -> String {
    format!(
        "[checks]\ndefault_pack = false\n[api]\nadmin_token = \"{TOKEN}\"\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nfrom = \"ganglion <mon@example.com>\"\n\
         [alerts]\ndashboard_url = \"http://dash.example:8080\"\nretry_secs = 1\nmax_retry_secs = 2\n{alerts}\n\
         {contacts}\n[[route]]\ngroups = [\"ops\"]\n{}",
        services(names)
    )
}

const ALICE: &str = "[[contact]]\nname = \"alice\"\nemail = \"alice@example.com\"\n\
                     [[contactgroup]]\nname = \"ops\"\nmembers = [\"alice\"]\n";

/// Waits for the agent's host and its services to be in the checks engine (passive
/// results need them).
fn wait_host(c: &Collector, agent: &Agent) {
    wait_for(Duration::from_secs(20), "the agent's host in the checks engine", &[&c.proc, &agent.proc], || {
        let s = c.get(&format!("/api/v1/status?host={HOST}"))?;
        (s.as_array()?.len() > 1).then_some(())
    });
}

fn subjects(sink: &SmtpSink, to: &str) -> Vec<String> {
    sink.messages_to(to).iter().map(|m| m["subject"].as_str().unwrap_or("").to_owned()).collect()
}

/// Waits until `to` has `n` messages, then `settle` longer, and checks it is still `n`.
fn expect_count(sink: &SmtpSink, c: &Collector, to: &str, n: usize, settle: Duration) -> Vec<Value> {
    wait_for(Duration::from_secs(20), &format!("{n} messages to {to}"), &[&c.proc, &sink.proc], || {
        (sink.messages_to(to).len() >= n).then_some(())
    });
    std::thread::sleep(settle);
    let got = sink.messages_to(to);
    assert_eq!(got.len(), n, "messages to {to}: {:#?}\n{}", subjects(sink, to), c.proc.tail(40));
    got
}

fn notifications(c: &Collector) -> Value {
    c.get("/api/v1/notifications?limit=1000").expect("GET /api/v1/notifications")
}

#[test]
fn critical_sends_one_email_recovery_one_and_downtime_only_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path());
    let c = Collector::start(
        dir.path(),
        &config(sink.port, "group_window_secs = 1\nnotification_interval_secs = 0\n", &["web_http", "db_dump"], ALICE),
    );
    let agent = Agent::start(dir.path(), HOST, &[&c.ingest], 1, "");
    wait_host(&c, &agent);

    result(&c, "web_http", 2, "HTTP CRITICAL - connection refused | time=0.25s;1;2;0");
    let got = expect_count(&sink, &c, "alice@example.com", 1, Duration::from_secs(3));
    let m = &got[0];
    assert_eq!(m["subject"], "PROBLEM: alert-host/web_http is CRITICAL", "{m:#}");
    assert_eq!(m["from"], "ganglion <mon@example.com>");
    let text = m["text"].as_str().unwrap();
    for want in [
        "PROBLEM - alert-host/web_http in cluster test is CRITICAL",
        "Output:   HTTP CRITICAL - connection refused",
        "Perfdata: time=0.25s;1;2;0",
        "Since:    ",
        "Attempt:  1/1   Notification: #1",
        "Host:     http://dash.example:8080/host?c=test&h=alert-host",
        "Check:    http://dash.example:8080/check?c=test&h=alert-host&s=web_http",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    // A passive check's perfdata is not stored, so there is no graph to link or show.
    assert!(!text.contains("graph.png"), "{text}");
    let html = m["html"].as_str().expect("an HTML part");
    assert!(html.contains("HTTP CRITICAL - connection refused"), "{html}");
    assert_eq!(m["images"], json!([]));
    assert!(m["message_id"].as_str().unwrap().ends_with("@ganglion>"), "{m:#}");

    // More CRITICAL results do not notify again (interval 0: once).
    result(&c, "web_http", 2, "HTTP CRITICAL - still refused");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.messages_to("alice@").len(), 1);

    result(&c, "web_http", 0, "HTTP OK - 200 in 0.01 s");
    let got = expect_count(&sink, &c, "alice@example.com", 2, Duration::from_secs(3));
    let rec: Vec<&Value> = got.iter().filter(|m| m["subject"].as_str().unwrap().starts_with("RECOVERY")).collect();
    assert_eq!(rec.len(), 1, "{got:#?}");
    assert_eq!(rec[0]["subject"], "RECOVERY: alert-host/web_http is OK");

    // Downtime on db_dump: its start is announced, as Nagios' DOWNTIMESTART, though the
    // check is healthy; then it fails in the downtime, and nothing more is sent.
    post(
        &c,
        "/api/v1/downtime",
        &json!({"host": HOST, "service": "db_dump", "duration_secs": 600, "comment": "maintenance"}),
    );
    expect_count(&sink, &c, "alice@example.com", 3, Duration::from_secs(1));
    let all = subjects(&sink, "alice@");
    assert!(all.iter().any(|s| s.starts_with("DOWNTIME START: alert-host/db_dump")), "{all:?}");
    result(&c, "db_dump", 2, "dump failed");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(subjects(&sink, "alice@").len(), 3, "{:?}", subjects(&sink, "alice@"));
    let n = notifications(&c);
    assert_eq!(n["counts"]["sent"], 3, "{n:#}");
    let h = c.health();
    assert_eq!(h["alerts"]["sent"], 3, "{h:#}");
    assert_eq!(h["alerts"]["failed"], 0, "{h:#}");
}

#[test]
fn a_metric_problem_email_links_and_shows_its_graph() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path());
    // cpu_num is at least 1 on any machine: outside 0:0, so CRITICAL at once.
    let metric_check =
        "[[service]]\nname = \"cpus\"\nmetric = \"cpu_num\"\ncritical = \"0:0\"\nmax_check_attempts = 1\ncheck_interval_secs = 1\n\
         [storage]\nstep_secs = 1\n";
    let c = Collector::start(
        dir.path(),
        &format!(
            "{}{metric_check}",
            config(sink.port, "group_window_secs = 4\nnotification_interval_secs = 0\n", &[], ALICE)
        ),
    );
    let agent = Agent::start(dir.path(), HOST, &[&c.ingest], 1, "");
    let got = expect_count(&sink, &c, "alice@", 1, Duration::from_secs(1));
    let _ = &agent;
    let m = &got[0];
    assert_eq!(m["subject"], "PROBLEM: alert-host/cpus is CRITICAL", "{m:#}");
    let text = m["text"].as_str().unwrap();
    assert!(
        text.contains("Graph:    http://dash.example:8080/graph.png?c=test&h=alert-host&m=cpu_num&r=day"),
        "{text}"
    );
    assert_eq!(m["images"], json!(["image/png"]), "the graph inline: {m:#}");
    assert!(m["html"].as_str().unwrap().contains("<img src=\"cid:graph\""), "{m:#}");
}

#[test]
fn reminders_repeat_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path());
    let c = Collector::start(
        dir.path(),
        &config(sink.port, "group_window_secs = 0\nnotification_interval_secs = 2\n", &["queue"], ALICE),
    );
    let agent = Agent::start(dir.path(), HOST, &[&c.ingest], 1, "");
    wait_host(&c, &agent);
    result(&c, "queue", 2, "queue length 5000");
    // Reminders come from the timer: no further result is sent.
    wait_for(Duration::from_secs(20), "three notifications", &[&c.proc, &sink.proc], || {
        (sink.messages_to("alice@").len() >= 3).then_some(())
    });
    post(&c, "/api/v1/ack", &json!({"host": HOST, "service": "queue", "comment": "looking"}));
    // Those told about the problem are told it is acknowledged (Nagios' ACKNOWLEDGEMENT).
    let ack = wait_for(Duration::from_secs(10), "the acknowledgement notice", &[&c.proc], || {
        sink.messages_to("alice@").into_iter().find(|m| m["subject"] == "ACKNOWLEDGEMENT: alert-host/queue (CRITICAL)")
    });
    assert!(ack["text"].as_str().unwrap().contains(": looking"), "{ack:#}");
    // A reminder may have been on its way when the ack landed.
    std::thread::sleep(Duration::from_secs(2));
    let after_ack = sink.messages_to("alice@").len();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(sink.messages_to("alice@").len(), after_ack, "{:?}", subjects(&sink, "alice@"));
    let subs = subjects(&sink, "alice@");
    assert_eq!(subs.iter().filter(|s| s.starts_with("ACKNOWLEDGEMENT")).count(), 1, "{subs:?}");
    assert!(
        subs.iter().all(|s| s == "PROBLEM: alert-host/queue is CRITICAL" || s.starts_with("ACKNOWLEDGEMENT")),
        "{subs:?}"
    );
    let texts: Vec<String> =
        sink.messages_to("alice@").iter().map(|m| m["text"].as_str().unwrap_or("").to_owned()).collect();
    assert!(texts.iter().any(|t| t.contains("Notification: #3")), "{texts:#?}");
}

#[test]
fn fifty_services_failing_at_once_give_one_grouped_email_per_contact() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path());
    let names: Vec<String> = (0..50).map(|i| format!("svc{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let contacts = "[[contact]]\nname = \"alice\"\nemail = \"alice@example.com\"\n\
                    [[contact]]\nname = \"bob\"\nemail = \"bob@example.com\"\n\
                    [[contactgroup]]\nname = \"ops\"\nmembers = [\"alice\", \"bob\"]\n";
    let c = Collector::start(dir.path(), &config(sink.port, "group_window_secs = 3\n", &refs, contacts));
    let agent = Agent::start(dir.path(), HOST, &[&c.ingest], 1, "");
    wait_host(&c, &agent);
    let batch: Vec<Value> =
        names.iter().map(|n| json!({"host": HOST, "service": n, "status": 2, "output": format!("{n} down")})).collect();
    post(&c, "/api/v1/results", &Value::Array(batch));
    for to in ["alice@example.com", "bob@example.com"] {
        let got = expect_count(&sink, &c, to, 1, Duration::from_secs(4));
        assert_eq!(got[0]["subject"], "50 services CRITICAL on 1 host in cluster test", "{:#}", got[0]);
        let text = got[0]["text"].as_str().unwrap();
        for n in &names {
            assert!(text.contains(&format!("alert-host/{n} in cluster test is CRITICAL")), "{n} missing:\n{text}");
        }
    }
    let n = notifications(&c);
    assert_eq!(n["messages"].as_array().unwrap().len(), 2, "{n:#}");
    assert!(n["messages"].as_array().unwrap().iter().all(|m| m["notifications"] == 50), "{n:#}");
}

#[test]
fn smtp_outage_and_kill_9_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start(dir.path());
    let mut c = Collector::start(
        dir.path(),
        &config(sink.port, "group_window_secs = 0\nnotification_interval_secs = 0\n", &["a", "b"], ALICE),
    );
    let agent = Agent::start(dir.path(), HOST, &[&c.ingest], 1, "");
    wait_host(&c, &agent);

    // The mail server is down: the message waits, retried with backoff.
    sink.stop();
    result(&c, "a", 2, "a broke");
    wait_for(Duration::from_secs(20), "a failed try", &[&c.proc], || {
        let n = notifications(&c);
        let m = n["messages"].as_array()?.first()?.clone();
        (m["state"] == "pending" && m["tries"].as_u64()? >= 1 && m["last_error"].is_string()).then_some(())
    });
    assert!(c.health()["alerts"]["retried"].as_u64().unwrap() >= 1);
    sink.restart();
    let got = expect_count(&sink, &c, "alice@", 1, Duration::from_secs(2));
    assert_eq!(got[0]["subject"], "PROBLEM: alert-host/a is CRITICAL");
    wait_for(Duration::from_secs(10), "the message recorded as sent", &[&c.proc], || {
        (notifications(&c)["counts"]["sent"] == 1).then_some(())
    });

    // Down again; a new problem is queued; the collector is killed; both come back.
    sink.stop();
    result(&c, "b", 2, "b broke");
    wait_for(Duration::from_secs(20), "b pending", &[&c.proc], || {
        let n = notifications(&c);
        (n["counts"]["pending"] == 1).then_some(())
    });
    c.proc.kill9();
    sink.restart();
    c.restart();
    let got = expect_count(&sink, &c, "alice@", 2, Duration::from_secs(4));
    let subs: Vec<&str> = got.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert_eq!(
        subs.iter().filter(|s| **s == "PROBLEM: alert-host/b is CRITICAL").count(),
        1,
        "delivered once after the restart, not lost and not notified again: {subs:?}"
    );
    wait_for(Duration::from_secs(10), "both recorded as sent", &[&c.proc], || {
        (notifications(&c)["counts"]["sent"] == 2).then_some(())
    });
}

#[test]
fn webhook_texts_are_short_and_the_rate_limit_folds_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let hook = WebhookReceiver::start();
    let names = ["s1", "s2", "s3", "s4", "s5"];
    let contacts = format!(
        "[[webhook]]\nname = \"sms\"\nurl = \"http://{}/send\"\nheaders = {{ Authorization = \"Bearer sms-key\" }}\n\
         [[contact]]\nname = \"pager\"\nphone = \"+15550001\"\nwebhook = \"sms\"\n\
         [[contactgroup]]\nname = \"ops\"\nmembers = [\"pager\"]\n",
        hook.addr
    );
    // No SMTP server at all: this contact has no email.
    let c = Collector::start(
        dir.path(),
        &config(
            1,
            "group_window_secs = 0\nnotification_interval_secs = 0\nsms_rate_limit = 2\nsms_rate_window_secs = 8\n",
            &names,
            &contacts,
        ),
    );
    let agent = Agent::start(dir.path(), HOST, &[&c.ingest], 1, "");
    wait_host(&c, &agent);
    let long = "x".repeat(400);
    let started = Instant::now();
    for n in names {
        result(&c, n, 2, &format!("CRITICAL - {n} {long}"));
        std::thread::sleep(Duration::from_millis(1300));
    }
    let reqs = wait_for(Duration::from_secs(20), "3 webhook posts", &[&c.proc], || {
        let r = hook.requests();
        (r.len() >= 3).then_some(r)
    });
    std::thread::sleep(Duration::from_secs(2));
    let reqs_after = hook.requests();
    assert_eq!(reqs_after.len(), 3, "{reqs_after:#?}");
    assert!(started.elapsed() >= Duration::from_secs(8), "the summary waited for the window");
    let mut texts = Vec::new();
    for (line, headers, body) in &reqs {
        assert!(line.starts_with("POST /send "), "{line}");
        let h = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(h("authorization").as_deref(), Some("Bearer sms-key"));
        assert_eq!(h("content-type").as_deref(), Some("application/json"));
        assert!(h("idempotency-key").is_some_and(|k| k.len() >= 24), "{headers:?}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["to"], "+15550001");
        let text = v["text"].as_str().unwrap().to_owned();
        assert!(text.chars().count() <= 160, "{} chars: {text}", text.chars().count());
        texts.push(text);
    }
    assert!(texts[0].starts_with("CRIT alert-host/s1: CRITICAL - s1 xxx"), "{texts:?}");
    assert!(texts[1].starts_with("CRIT alert-host/s2:"), "{texts:?}");
    assert!(
        texts[2].starts_with("+3 more held by the SMS limit: 3 services CRITICAL on 1 host in cluster test"),
        "{texts:?}"
    );
    assert_eq!(c.health()["alerts"]["folded"], 3);
}

#[test]
fn notify_test_sends_through_every_channel_of_the_contact() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path());
    let hook = WebhookReceiver::start();
    let cfg = dir.path().join("notify.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[cluster]]\nname = \"t\"\nkey = \"0123456789abcdef\"\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\n\
             [[webhook]]\nname = \"sms\"\nurl = \"http://{}/hook\"\nformat = \"form\"\n\
             [[contact]]\nname = \"carol\"\nemail = \"carol@example.com\"\nsms_email = \"5550002@sms.example.com\"\nphone = \"+15550002\"\nwebhook = \"sms\"\n",
            sink.port, hook.addr
        ),
    )
    .unwrap();
    let out = Command::new(bin("ganglion")).args(["notify", "test", "carol", "--config"]).arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    wait_for(Duration::from_secs(10), "two emails", &[&sink.proc], || (sink.messages().len() == 2).then_some(()));
    assert_eq!(sink.messages_to("carol@example.com")[0]["subject"], "TEST: ganglion/notify test (OK)");
    let sms = &sink.messages_to("5550002@sms.example.com")[0];
    assert!(sms["text"].as_str().unwrap().trim().chars().count() <= 160);
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].2.starts_with("to=%2B15550002&text=OK+ganglion%2Fnotify+test"), "{}", reqs[0].2);

    // An unknown contact and an unreachable server are errors.
    let out = Command::new(bin("ganglion")).args(["notify", "test", "nobody", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [[contact]] named \"nobody\""));
}

#[test]
fn check_config_reports_bad_alerting_input_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[cluster]]\nname = \"t\"\nkey = \"0123456789abcdef\"\n\
         [[contact]]\nname = \"dave\"\nemail = \"dave-at-example\"\nperiod = [\"61 * * * *\"]\n\
         [[contactgroup]]\nname = \"ops\"\nmembers = [\"dave\", \"erin\"]\n\
         [[route]]\nhosts = \"[\"\ngroups = [\"opz\"]\n",
    )
    .unwrap();
    let out = Command::new(bin("ganglion")).arg("check-config").arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = cfg.display().to_string();
    for want in [
        format!("{file}:6:9: contact dave: email: \"dave-at-example\" is not an email address"),
        format!("{file}:7:11: contact dave: period: \"61 * * * *\" is neither a cron expression"),
        format!("{file}:10:20: contactgroup ops: unknown contact \"erin\""),
        format!("{file}:12:9: route.hosts: bad regular expression"),
        format!("{file}:13:11: route.groups: unknown contactgroup \"opz\""),
    ] {
        assert!(err.lines().any(|l| l.starts_with(&want)), "{want:?} not in:\n{err}");
    }
}

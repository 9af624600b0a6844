//! The NSCA listener against the real `send_nsca` (Debian `nsca-client`): every
//! encryption method the collector supports delivers a service and a host result that
//! show in `/api/v1/status` within a second; garbage, a wrong password, a bad CRC, a
//! replayed timestamp, a stale connection and a truncated packet are each rejected and
//! counted while another connection keeps working.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ganglion_checks::nsca::{Encoder, Method, INIT_PACKET_LEN};
use ganglion_tests::{free_port, require, wait_for, Agent, Collector};
use serde_json::Value;

const HOST: &str = "nsca-host";

fn status_of(c: &Collector, service: &str) -> Option<Value> {
    let s = c.get(&format!("/api/v1/status?host={HOST}"))?;
    s.as_array()?.iter().find(|x| x["service"] == service).cloned()
}

/// Runs the real send_nsca with `input` (results separated by ETB, 0x17).
fn send_nsca(dir: &Path, port: u16, method: u8, password: &str, input: &str) {
    let program = require("send_nsca", "nsca-client");
    let cfg = dir.join(format!("send_nsca-{method}-{}.cfg", password.len()));
    let mut text = format!("encryption_method={method}\n");
    if !password.is_empty() {
        text.push_str(&format!("password={password}\n"));
    }
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-to", "5", "-c"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "send_nsca (method {method}) failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replaces the `[nsca]` section (the last one of the file) and restarts the collector.
fn reconfigure(c: &mut Collector, nsca: &str) {
    let text = std::fs::read_to_string(&c.config).unwrap();
    let base = text.split("[nsca]").next().unwrap().to_owned();
    std::fs::write(&c.config, format!("{base}{nsca}")).unwrap();
    c.proc.stop();
    c.restart();
}

fn wait_for_host(c: &Collector, agent: &Agent) {
    wait_for(Duration::from_secs(20), "the host in the checks engine", &[&c.proc, &agent.proc], || {
        status_of(c, "svc").map(|_| ())
    });
}

fn nsca_section(port: u16, method: u8, password: &str, extra: &str) -> String {
    let pw = if password.is_empty() { String::new() } else { format!("password = \"{password}\"\n") };
    format!("[nsca]\nlisten = \"127.0.0.1:{port}\"\nmethod = {method}\n{pw}{extra}")
}

const SERVICES: &str =
    "[checks]\ndefault_pack = false\n[[service]]\nname = \"svc\"\npassive = true\nmax_check_attempts = 1\n";

#[test]
fn every_supported_method_of_the_real_send_nsca_reaches_the_status_within_a_second() {
    require("send_nsca", "nsca-client");
    let dir = tempfile::tempdir().unwrap();
    let first = free_port();
    let mut c = Collector::start(dir.path(), &format!("{SERVICES}{}", nsca_section(first, 0, "", "")));
    let agent = Agent::start(dir.path(), HOST, &[&c.ingest], 1, "");
    let methods: Vec<u8> = (0..=30).filter(|m| Method::from_code(*m).is_ok()).collect();
    assert_eq!(methods, [0, 1, 2, 3, 4, 5, 6, 8, 9, 11, 14, 20, 23]);
    let mut lags = Vec::new();
    for (i, &method) in methods.iter().enumerate() {
        let port = if i == 0 { first } else { free_port() };
        // 30 characters: longer than DES's key, shorter than RC2's.
        let password = if method == 0 { String::new() } else { format!("pw-{method}-0123456789abcdefghijklm") };
        if i > 0 {
            reconfigure(&mut c, &nsca_section(port, method, &password, ""));
        }
        wait_for_host(&c, &agent);
        let output = format!("CRITICAL - sent with method {method}");
        let input =
            format!("{HOST}\tsvc\t2\t{output}|rtt={method}ms\x17{HOST}\t0\tUP - host result over method {method}\x17");
        send_nsca(dir.path(), port, method, &password, &input);
        let sent = Instant::now();
        let host_output = format!("UP - host result over method {method}");
        let svc = wait_for(Duration::from_secs(5), &format!("the method {method} results"), &[&c.proc], || {
            let host = status_of(&c, "")?;
            let svc = status_of(&c, "svc").filter(|s| s["output"] == output.as_str())?;
            (host["output"] == host_output.as_str()).then_some(svc)
        });
        lags.push((method, sent.elapsed()));
        assert_eq!((svc["state"].as_str(), svc["state_type"].as_str()), (Some("CRITICAL"), Some("HARD")), "{svc}");
        assert_eq!(svc["perfdata"], format!("rtt={method}ms"));
        let health = c.health();
        assert_eq!(health["nsca"]["received"], 2, "method {method}: {}", health["nsca"]);
        assert_eq!(health["nsca"]["rejected_total"], 0, "method {method}: {}", health["nsca"]);
    }
    for (method, lag) in &lags {
        assert!(*lag < Duration::from_secs(1), "method {method}: the result took {lag:?} to show");
    }
}

/// A tiny deterministic generator for garbage bytes.
fn garbage(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A raw NSCA client connection, as send_nsca speaks.
struct Raw {
    stream: TcpStream,
    init: [u8; INIT_PACKET_LEN],
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut init = [0u8; INIT_PACKET_LEN];
        stream.read_exact(&mut init).unwrap();
        Raw { stream, init }
    }
}

const PW: &str = "negative-tests-pw";

fn rejected(c: &Collector, reason: &str) -> u64 {
    c.health()["nsca"]["rejected"][reason].as_u64().unwrap_or_else(|| panic!("no nsca counter {reason}"))
}

fn wait_rejected(c: &Collector, reason: &str, n: u64) {
    wait_for(Duration::from_secs(5), &format!("nsca rejected.{reason} = {n}"), &[&c.proc], || {
        (rejected(c, reason) == n).then_some(())
    });
}

#[test]
fn bad_packets_end_only_their_own_connection_and_are_counted() {
    require("send_nsca", "nsca-client");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = format!("{SERVICES}{}", nsca_section(port, 14, PW, "max_packet_age_secs = 4\n"));
    let c = Collector::start(dir.path(), &extra);
    let agent = Agent::start(dir.path(), HOST, &[&c.ingest], 1, "");
    wait_for_host(&c, &agent);
    let shows = |output: &str| {
        let output = output.to_owned();
        wait_for(Duration::from_secs(5), &format!("output {output:?}"), &[&c.proc], || {
            status_of(&c, "svc").filter(|s| s["output"] == output.as_str()).map(|_| ())
        })
    };

    // A good connection that stays open across the bad ones.
    let mut good = Raw::connect(port);
    let mut enc = Encoder::new(Method::Rijndael128, PW.as_bytes(), &good.init);
    good.stream.write_all(&enc.packet(1, HOST, "svc", "WARNING - first on the long connection", false)).unwrap();
    shows("WARNING - first on the long connection");

    // Garbage after the init packet.
    let mut g = Raw::connect(port);
    g.stream.write_all(&garbage(4304)).unwrap();
    wait_for(Duration::from_secs(5), "garbage to be rejected", &[&c.proc], || {
        (rejected(&c, "version") + rejected(&c, "crc") == 1).then_some(())
    });
    let garbage_as = if rejected(&c, "version") == 1 { "version" } else { "crc" };

    // The real send_nsca with a wrong password.
    send_nsca(dir.path(), port, 14, "not-the-password", &format!("{HOST}\tsvc\t2\tCRITICAL - forged\x17"));
    wait_for(Duration::from_secs(5), "the wrong password to be rejected", &[&c.proc], || {
        (rejected(&c, "version") + rejected(&c, "crc") == 2).then_some(())
    });

    // A flipped byte in the output: the CRC no longer matches.
    let mut b = Raw::connect(port);
    let mut p =
        Encoder::new(Method::Rijndael128, PW.as_bytes(), &b.init).packet(2, HOST, "svc", "CRITICAL - bad crc", false);
    p[1000] ^= 0x40;
    b.stream.write_all(&p).unwrap();
    wait_rejected(&c, "crc", u64::from(garbage_as == "crc") + 1);

    // A packet made for another connection's timestamp (a replay).
    let mut r = Raw::connect(port);
    let mut other = r.init;
    let ts = u32::from_be_bytes(other[128..132].try_into().unwrap()) - 60;
    other[128..132].copy_from_slice(&ts.to_be_bytes());
    let p =
        Encoder::new(Method::Rijndael128, PW.as_bytes(), &other).packet(2, HOST, "svc", "CRITICAL - replayed", false);
    r.stream.write_all(&p).unwrap();
    wait_rejected(&c, "timestamp", 1);

    // Half a packet, then the peer closes.
    let mut t = Raw::connect(port);
    t.stream.write_all(&garbage(100)).unwrap();
    drop(t);
    wait_rejected(&c, "truncated", 1);

    // The long connection still works.
    good.stream.write_all(&enc.packet(2, HOST, "svc", "CRITICAL - second on the long connection", false)).unwrap();
    shows("CRITICAL - second on the long connection");

    // A connection older than max_packet_age (4 s) is refused.
    let mut s = Raw::connect(port);
    std::thread::sleep(Duration::from_millis(5500));
    let p = Encoder::new(Method::Rijndael128, PW.as_bytes(), &s.init).packet(0, HOST, "svc", "OK - stale", false);
    s.stream.write_all(&p).unwrap();
    wait_rejected(&c, "too_old", 1);

    // And the listener still serves the real client.
    send_nsca(dir.path(), port, 14, PW, &format!("{HOST}\tsvc\t0\tOK - after all that\x17"));
    shows("OK - after all that");
    let nsca = c.health()["nsca"].clone();
    assert_eq!(nsca["received"], 3, "{nsca}");
    assert_eq!(nsca["rejected_total"], 6, "{nsca}");
    assert_eq!(nsca["listening"], true);
    for text in ["forged", "bad crc", "replayed", "stale"] {
        let history = c.get(&format!("/api/v1/history?host={HOST}&service=svc")).unwrap();
        assert!(!history.to_string().contains(text), "a rejected packet reached the checks: {history}");
    }
    drop((g, b, r, s));
}

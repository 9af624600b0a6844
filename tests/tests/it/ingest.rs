//! The collector's agent listener against hand-made and hostile clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ganglion_proto::frame::{self, Frame, Kind, Nonce};
use ganglion_proto::msg::{self, Ack, Batch, Challenge, Facts, Hello, MetricKind, MetricMeta};
use ganglion_tests::{wait_for, Collector, CLUSTER, KEY};

/// A hand-driven agent connection, written from PROTOCOL.md rather than with the
/// agent's code.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    nonce: Nonce,
    counter: u32,
    /// Run, seq and time of the previous batch: later ones are sent as differences.
    head: Option<(u64, u64, i64)>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

impl Client {
    fn connect(c: &Collector) -> Client {
        let stream = TcpStream::connect(&c.ingest).expect("connect to collector");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut cl = Client { stream, buf: Vec::new(), nonce: [0; 16], counter: 0, head: None };
        let ch = cl.read().expect("challenge");
        assert_eq!(ch.kind, Kind::Challenge);
        cl.nonce = msg::decode::<Challenge>(&ch.payload).expect("challenge payload").nonce;
        assert!(ch.belongs_to(&cl.nonce));
        cl
    }

    /// A connection whose hello for `host` (signed with the cluster key) is sent.
    fn session(c: &Collector, host: &str) -> Client {
        let mut cl = Client::connect(c);
        let h = cl.hello(host, KEY.as_bytes());
        cl.send(&h);
        cl
    }

    /// Next frame, or `None` when the collector closed the connection.
    fn read(&mut self) -> Option<Frame> {
        loop {
            if let Some((f, used)) = frame::decode(&self.buf, 1 << 20).expect("collector frames decode") {
                self.buf.drain(..used);
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn seal(&mut self, kind: Kind, key: &[u8], payload: &[u8]) -> Vec<u8> {
        let bytes = frame::seal(kind, self.counter, &self.nonce, Some(key), payload);
        self.counter += 1;
        bytes
    }

    fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    fn hello(&mut self, host: &str, key: &[u8]) -> Vec<u8> {
        let h = hello(CLUSTER, host);
        self.seal(Kind::Hello, key, &msg::encode(&h).unwrap())
    }

    /// A batch that asks for an ack, with `values` as they go on the wire (after the
    /// first batch, only the changed ones).
    fn batch(&mut self, seq: u64, values: Vec<(u32, f64)>) -> Vec<u8> {
        self.batch_with(seq, values, vec![], true)
    }

    fn batch_with(&mut self, seq: u64, values: Vec<(u32, f64)>, gone: Vec<u32>, ack: bool) -> Vec<u8> {
        let (run, time_ms) = (9, now_ms());
        // After the first batch: run XOR the previous one, seq and time as differences.
        let (w_run, w_seq, w_time) = match self.head {
            None => (run, seq, time_ms),
            Some((r, s, t)) => (run ^ r, seq.wrapping_sub(s), time_ms - t),
        };
        self.head = Some((run, seq, time_ms));
        let b = Batch {
            run: w_run,
            seq: w_seq,
            time_ms: w_time,
            defs: vec![],
            facts: None,
            values,
            gone,
            ack,
            skipped: vec![],
        };
        self.seal(Kind::Batch, KEY.as_bytes(), &msg::encode(&b).unwrap())
    }

    /// Reads until the collector closes; returns the refusal reason if it sent one.
    fn refusal(&mut self) -> Option<String> {
        let mut reason = None;
        while let Some(f) = self.read() {
            if f.kind == Kind::Error {
                let r: msg::Refusal = msg::decode(&f.payload).unwrap();
                reason = Some(r.reason);
            }
        }
        reason
    }
}

fn hello(cluster: &str, host: &str) -> Hello {
    Hello {
        cluster: cluster.into(),
        host: host.into(),
        agent_version: "test".into(),
        sent_at_ms: now_ms(),
        interval_secs: 1,
        facts: Facts::default(),
        metrics: vec![MetricMeta {
            id: 0,
            name: "test_metric".into(),
            unit: "x".into(),
            kind: MetricKind::Gauge,
            group: "test".into(),
            description: "a test metric".into(),
        }],
    }
}

fn value_of(c: &Collector, host: &str) -> Option<f64> {
    let h = c.host(host)?;
    h["metrics"].as_array()?.iter().find(|m| m["name"] == "test_metric")?["value"].as_f64()
}

#[test]
fn wrong_key_and_replayed_frames_are_rejected_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), "");

    // A good session that keeps its connection open through all of the following.
    let mut good = Client::session(&c, "good");
    let b1 = good.batch(1, vec![(0, 1.0)]);
    good.send(&b1);
    assert_eq!(good.read().expect("ack").kind, Kind::Ack);

    // Wrong key.
    let mut bad = Client::connect(&c);
    let h = bad.hello("intruder", b"not-the-key-0123456789");
    bad.send(&h);
    assert_eq!(bad.refusal().as_deref(), Some("bad_tag"));
    assert_eq!(c.rejected("bad_tag"), 1);
    assert!(c.host("intruder").is_none());

    // The good session's hello replayed on a new connection.
    let mut replay = Client::connect(&c);
    let recorded = {
        let mut other =
            Client { stream: good.stream.try_clone().unwrap(), buf: vec![], nonce: good.nonce, counter: 0, head: None };
        other.hello("good", KEY.as_bytes())
    };
    replay.send(&recorded);
    assert_eq!(replay.refusal().as_deref(), Some("replayed"));

    // A batch played twice on the same connection ends that connection.
    let mut twice = Client::session(&c, "twice");
    let b = twice.batch(1, vec![(0, 5.0)]);
    twice.send(&b);
    assert_eq!(twice.read().expect("ack").kind, Kind::Ack);
    twice.send(&b);
    assert_eq!(twice.refusal().as_deref(), Some("replayed"));
    assert_eq!(c.rejected("replayed"), 2);

    // The good connection is untouched.
    let b2 = good.batch(2, vec![(0, 2.0)]);
    good.send(&b2);
    assert_eq!(good.read().expect("ack after the attacks").kind, Kind::Ack);
    assert_eq!(value_of(&c, "good"), Some(2.0));
}

#[test]
fn bad_input_is_refused_counted_and_nothing_accepted_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), "");
    let mut good = Client::session(&c, "keeper");
    let b = good.batch(1, vec![(0, 42.0)]);
    good.send(&b);
    assert_eq!(good.read().unwrap().kind, Kind::Ack);

    // Garbage bytes.
    let mut g = Client::connect(&c);
    g.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    g.refusal();
    // Oversized length prefix.
    let mut o = Client::connect(&c);
    o.send(&[0x7f, 0xff, 0xff, 0xff, 1, 2]);
    assert_eq!(o.refusal().as_deref(), Some("too_large"));
    // Unknown protocol version.
    let mut v = Client::connect(&c);
    let mut bytes = v.hello("v", KEY.as_bytes());
    bytes[4] = 99;
    v.send(&bytes);
    assert_eq!(v.refusal().as_deref(), Some("version"));
    // Truncated frame, then close.
    let mut t = Client::connect(&c);
    let bytes = t.hello("t", KEY.as_bytes());
    t.send(&bytes[..bytes.len() / 2]);
    t.stream.shutdown(std::net::Shutdown::Write).unwrap();
    t.refusal();
    // Unknown cluster.
    let mut u = Client::connect(&c);
    let payload = msg::encode(&hello("nosuch", "u")).unwrap();
    let bytes = u.seal(Kind::Hello, KEY.as_bytes(), &payload);
    u.send(&bytes);
    assert_eq!(u.refusal().as_deref(), Some("unknown_cluster"));
    // Path tricks in the host name.
    let mut p = Client::connect(&c);
    let bytes = p.hello("../../etc/passwd", KEY.as_bytes());
    p.send(&bytes);
    assert_eq!(p.refusal().as_deref(), Some("bad_name"));
    // Control characters in the host name never reach the log as they are.
    let mut e = Client::connect(&c);
    let bytes = e.hello("evil\x1b[31mred", KEY.as_bytes());
    e.send(&bytes);
    assert_eq!(e.refusal().as_deref(), Some("bad_name"));
    // A stale hello (an hour old).
    let mut s = Client::connect(&c);
    let mut old = hello(CLUSTER, "stale");
    old.sent_at_ms -= 3_600_000;
    let bytes = s.seal(Kind::Hello, KEY.as_bytes(), &msg::encode(&old).unwrap());
    s.send(&bytes);
    assert_eq!(s.refusal().as_deref(), Some("stale"));
    // Garbage payload under a valid tag.
    let mut m = Client::connect(&c);
    let bytes = m.seal(Kind::Hello, KEY.as_bytes(), b"\xc1\xc1\xc1 not msgpack");
    m.send(&bytes);
    assert_eq!(m.refusal().as_deref(), Some("bad_payload"));

    // NaN and infinite values: the samples are refused, the batch is acknowledged.
    let b = good.batch(2, vec![(0, f64::NAN), (0, f64::INFINITY), (7, 1.0)]);
    good.send(&b);
    assert_eq!(good.read().unwrap().kind, Kind::Ack);

    let health = c.health();
    let r = &health["counters"]["rejected"];
    for reason in
        ["malformed", "too_large", "version", "unknown_cluster", "bad_name", "stale", "bad_payload", "bad_sample"]
    {
        assert!(r[reason].as_u64().unwrap() >= 1, "{reason} not counted: {health}");
    }
    let log = c.proc.tail(400);
    assert!(log.contains(r#"invalid host name "../../etc/passwd""#), "{log}");
    assert!(!log.contains('\x1b'), "a control character reached the log");
    assert_eq!(value_of(&c, "keeper"), Some(42.0), "an accepted value was lost");
    // Still serving new agents.
    let mut late = Client::session(&c, "late");
    let b = late.batch(1, vec![(0, 7.0)]);
    late.send(&b);
    assert_eq!(late.read().unwrap().kind, Kind::Ack);
    wait_for(Duration::from_secs(5), "the late host", &[&c.proc], || value_of(&c, "late"));
}

fn metric_time(c: &Collector, host: &str) -> Option<i64> {
    let h = c.host(host)?;
    h["metrics"].as_array()?.iter().find(|m| m["name"] == "test_metric")?["time_ms"].as_i64()
}

#[test]
fn unchanged_values_are_carried_forward_until_gone() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), "");
    let mut a = Client::session(&c, "delta");
    let b = a.batch(1, vec![(0, 5.0)]);
    a.send(&b);
    assert_eq!(a.read().unwrap().kind, Kind::Ack);
    let t1 = metric_time(&c, "delta").expect("first value stored");

    // Nothing changed: the batch carries no value, the metric still gets this batch's time.
    std::thread::sleep(Duration::from_millis(20));
    let b = a.batch(2, vec![]);
    a.send(&b);
    assert_eq!(a.read().unwrap().kind, Kind::Ack);
    let t2 = metric_time(&c, "delta").unwrap();
    assert!(t2 > t1, "unchanged value not carried to the second batch ({t1} → {t2})");
    assert_eq!(value_of(&c, "delta"), Some(5.0));

    // The metric is gone: no longer carried, its last value stays as it was.
    std::thread::sleep(Duration::from_millis(20));
    let bytes = a.batch_with(3, vec![], vec![0], true);
    a.send(&bytes);
    assert_eq!(a.read().unwrap().kind, Kind::Ack);
    assert_eq!(metric_time(&c, "delta"), Some(t2), "a gone metric was carried");

    // A new connection starts from nothing: its first batch is complete by rule.
    let mut b2 = Client::session(&c, "delta");
    let bytes = b2.batch(4, vec![]);
    b2.send(&bytes);
    assert_eq!(b2.read().unwrap().kind, Kind::Ack);
    assert_eq!(metric_time(&c, "delta"), Some(t2), "a value was carried across connections");
}

#[test]
fn only_batches_that_ask_are_acked_and_the_ack_covers_the_ones_before() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), "");
    let mut a = Client::session(&c, "quiet");
    for seq in 1..=3 {
        let b = a.batch_with(seq, vec![(0, seq as f64)], vec![], false);
        a.send(&b);
    }
    // Applied without an ack.
    wait_for(Duration::from_secs(5), "three unacknowledged batches applied", &[&c.proc], || {
        (value_of(&c, "quiet") == Some(3.0)).then_some(())
    });
    let b = a.batch_with(4, vec![], vec![], true);
    a.send(&b);
    let f = a.read().expect("an ack");
    assert_eq!(f.kind, Kind::Ack);
    assert_eq!(f.counter, 1, "no ack came before this one");
    f.verify(KEY.as_bytes(), &a.nonce).expect("ack signed with the cluster key");
    let ack: Ack = msg::decode(&f.payload).unwrap();
    assert_eq!((ack.run, ack.seq), (9, 4));
    let s = c.host("quiet").unwrap()["seq"].clone();
    assert_eq!((s["first"].as_u64(), s["last"].as_u64(), s["gaps"].as_u64()), (Some(1), Some(4), Some(0)), "{s}");
}

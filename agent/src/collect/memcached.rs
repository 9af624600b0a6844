//! memcached through its text protocol: `stats` on TCP (port 11211 by default).
//!
//! This module owns the exchange (`stats\r\n`, then `STAT name value` lines up to
//! `END`) and the `memcached_*` readings: get hits and misses per second and the hit
//! share over the interval, evictions per second, connections, and memory used
//! against `limit_maxbytes`. Counters follow the restart rule of
//! [`super::rate::ServerCounters`] with memcached's `uptime`. One connection is kept
//! between collections (on loopback, a connect and close cost more than the `stats`
//! itself); when it fails, one new connection is tried at once, so a memcached
//! restart costs no interval.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::apps::{done, AppError, AppSource, Collecting, ParseError};
use super::rate::ServerCounters;
use super::{counter, gauge, Reading};
use crate::config::MemcachedConfig;

/// Largest `stats` answer read; memcached 1.6 sends about 3 KB.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// The `stats` values the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemcachedStats {
    pub uptime: Option<u64>,
    pub get_hits: Option<u64>,
    pub get_misses: Option<u64>,
    pub evictions: Option<u64>,
    pub cmd_get: Option<u64>,
    pub cmd_set: Option<u64>,
    pub curr_connections: Option<u64>,
    pub curr_items: Option<u64>,
    pub bytes: Option<u64>,
    pub limit_maxbytes: Option<u64>,
}

/// Parses the answer to `stats`.
///
/// # Errors
/// [`ParseError::Incomplete`] when the answer has no `END` line yet (read more),
/// [`ParseError::Invalid`] for an `ERROR` answer or one without any `STAT` line.
pub fn parse_stats(text: &str) -> Result<MemcachedStats, ParseError> {
    let mut s = MemcachedStats::default();
    let mut stats = 0usize;
    let mut ended = false;
    for line in text.split_terminator('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        // Nearly every line is a STAT line, so that is asked first: testing every one of
        // the ~80 lines for END and the error answers made reading an answer a third dearer.
        let Some((name, value)) = line.strip_prefix("STAT ").and_then(|rest| rest.split_once(' ')) else {
            if line == "END" {
                ended = true;
                break;
            }
            if line == "ERROR" || line.starts_with("CLIENT_ERROR") || line.starts_with("SERVER_ERROR") {
                return Err(ParseError::Invalid("memcached answered stats with an error"));
            }
            continue;
        };
        stats += 1;
        let slot = match name {
            "uptime" => &mut s.uptime,
            "get_hits" => &mut s.get_hits,
            "get_misses" => &mut s.get_misses,
            "evictions" => &mut s.evictions,
            "cmd_get" => &mut s.cmd_get,
            "cmd_set" => &mut s.cmd_set,
            "curr_connections" => &mut s.curr_connections,
            "curr_items" => &mut s.curr_items,
            "bytes" => &mut s.bytes,
            "limit_maxbytes" => &mut s.limit_maxbytes,
            _ => continue,
        };
        *slot = value.trim().parse().ok();
    }
    if !ended {
        return Err(ParseError::Incomplete("no END line"));
    }
    if stats == 0 {
        return Err(ParseError::Invalid("no STAT lines: not a memcached stats answer"));
    }
    Ok(s)
}

/// Turns one `stats` answer into readings; `counters` holds the previous one.
pub(crate) fn push_stats(out: &mut Vec<Reading>, s: &MemcachedStats, counters: &mut ServerCounters, now: Instant) {
    let g = |name: &'static str, unit, description: &'static str, value: f64| {
        gauge(name, unit, "memcached", description, value)
    };
    counters.begin(now, s.uptime);
    let rates = [
        ("memcached_get_hits", "get_hits", s.get_hits, "gets/sec", "Gets that found their key."),
        ("memcached_get_misses", "get_misses", s.get_misses, "gets/sec", "Gets that did not find their key."),
        ("memcached_evictions", "evictions", s.evictions, "items/sec", "Live items evicted to make room."),
        ("memcached_cmd_get", "cmd_get", s.cmd_get, "commands/sec", "get commands."),
        ("memcached_cmd_set", "cmd_set", s.cmd_set, "commands/sec", "set commands."),
    ];
    let (mut hits, mut misses) = (None, None);
    for (metric, key, value, unit, description) in rates {
        let Some(n) = value else { continue };
        if let Some(d) = counters.delta(key, n) {
            match key {
                "get_hits" => hits = Some(d),
                "get_misses" => misses = Some(d),
                _ => {}
            }
            if let Some(r) = counters.per_sec(d) {
                out.push(g(metric, unit, description, r));
            }
        }
        let unit = unit.strip_suffix("/sec").unwrap_or(unit);
        out.push(counter(format!("{metric}_total"), unit, "memcached", description, n));
    }
    if let (Some(h), Some(m)) = (hits, misses) {
        let gets = h as f64 + m as f64;
        if gets > 0.0 {
            out.push(g("memcached_hit_pct", "%", "Gets that hit, over the interval.", h as f64 * 100.0 / gets));
        }
    }
    let gauges = [
        ("memcached_curr_connections", s.curr_connections, "connections", "Open connections."),
        ("memcached_curr_items", s.curr_items, "items", "Items stored."),
        ("memcached_bytes", s.bytes, "bytes", "Bytes used to store items."),
        ("memcached_limit_maxbytes", s.limit_maxbytes, "bytes", "Memory memcached may use for items (-m)."),
        ("memcached_uptime", s.uptime, "s", "Time since memcached started."),
    ];
    for (name, value, unit, description) in gauges {
        if let Some(v) = value {
            out.push(g(name, unit, description, v as f64));
        }
    }
    if let (Some(b), Some(l)) = (s.bytes, s.limit_maxbytes) {
        if l > 0 {
            out.push(g(
                "memcached_used_pct",
                "%",
                "Bytes used as a share of limit_maxbytes.",
                b as f64 * 100.0 / l as f64,
            ));
        }
    }
}

/// The memcached source.
pub(crate) struct MemcachedSource {
    config: MemcachedConfig,
    counters: ServerCounters,
    buf: Vec<u8>,
    conn: Option<TcpStream>,
    /// `stats` was sent on `conn` by [`begin`](AppSource::begin); its answer is due.
    sent: bool,
}

impl MemcachedSource {
    pub(crate) fn new(config: MemcachedConfig) -> MemcachedSource {
        MemcachedSource {
            config,
            counters: ServerCounters::default(),
            buf: Vec::with_capacity(4096),
            conn: None,
            sent: false,
        }
    }

    fn connect(&self) -> Result<TcpStream, AppError> {
        let io = |what| move |source| AppError::Io { what, source };
        let addr =
            self.config.address.to_socket_addrs().map_err(io("resolving the address"))?.next().ok_or_else(|| {
                AppError::Io { what: "resolving the address", source: std::io::ErrorKind::NotFound.into() }
            })?;
        let stream = TcpStream::connect_timeout(&addr, self.config.timeout).map_err(io("connecting"))?;
        stream.set_write_timeout(Some(self.config.timeout)).map_err(io("connecting"))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// `stats` over the kept connection, or over a new one when there is none or the
    /// kept one fails (memcached restarted, or closed it).
    fn stats(&mut self) -> Result<MemcachedStats, AppError> {
        let sent = std::mem::take(&mut self.sent);
        if let Some(mut stream) = self.conn.take() {
            let answer = if sent { self.read_answer(&mut stream) } else { self.exchange(&mut stream) };
            if let Ok(s) = answer {
                self.conn = Some(stream);
                return Ok(s);
            }
        }
        let mut stream = self.connect()?;
        let s = self.exchange(&mut stream)?;
        self.conn = Some(stream);
        Ok(s)
    }

    /// Asks `stats` and reads up to `END`, within the timeout.
    fn exchange(&mut self, stream: &mut TcpStream) -> Result<MemcachedStats, AppError> {
        stream.write_all(b"stats\r\n").map_err(|source| AppError::Io { what: "sending stats", source })?;
        self.read_answer(stream)
    }

    /// Reads the answer to `stats` up to `END`, within the timeout.
    fn read_answer(&mut self, stream: &mut TcpStream) -> Result<MemcachedStats, AppError> {
        let deadline = Instant::now() + self.config.timeout;
        let io = |what| move |source| AppError::Io { what, source };
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AppError::Overrun(self.config.timeout));
            }
            stream.set_read_timeout(Some(left)).map_err(io("reading stats"))?;
            let n = stream.read(&mut chunk).map_err(io("reading stats"))?;
            if n == 0 {
                return Err(AppError::Parse(ParseError::Incomplete("memcached closed the connection before END")));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            match parse_stats(&super::lossy_text(&self.buf)) {
                Err(ParseError::Incomplete(_)) if self.buf.len() < MAX_ANSWER_BYTES => {}
                other => return Ok(other?),
            }
        }
    }
}

impl AppSource for MemcachedSource {
    fn name(&self) -> &'static str {
        "memcached"
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }
    fn every(&self) -> u32 {
        self.config.every
    }

    fn begin(&mut self) -> bool {
        // Only over a kept connection: making a new one is left to `collect`, which
        // reports why it failed.
        let Some(stream) = self.conn.as_mut() else { return false };
        self.sent = stream.write_all(b"stats\r\n").is_ok();
        if !self.sent {
            self.conn = None;
        }
        self.sent
    }

    fn collect<'a>(&'a mut self, _now: Instant, out: &'a mut Vec<Reading>) -> Collecting<'a> {
        done(self.read(out))
    }
}

impl MemcachedSource {
    fn read(&mut self, out: &mut Vec<Reading>) -> Result<(), AppError> {
        let stats = self.stats()?;
        push_stats(out, &stats, &mut self.counters, Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{app_fixture, value};
    use proptest::prelude::*;

    #[test]
    fn parses_stats_of_memcached_1_6() {
        let s = parse_stats(&app_fixture("memcached-1.6.18-stats.txt")).unwrap();
        assert_eq!((s.get_hits, s.get_misses, s.cmd_get, s.cmd_set), (Some(2), Some(2), Some(4), Some(1)));
        assert_eq!((s.curr_connections, s.curr_items, s.bytes), (Some(1), Some(1), Some(65)));
        assert_eq!(s.limit_maxbytes, Some(16 * 1024 * 1024));
        assert_eq!(s.uptime, Some(2));
    }

    #[test]
    fn answer_without_end_is_incomplete_and_error_is_invalid() {
        let text = app_fixture("memcached-1.6.18-stats.txt");
        let cut = &text[..text.len() / 2];
        assert!(matches!(parse_stats(cut), Err(ParseError::Incomplete(_))));
        assert!(matches!(parse_stats("ERROR\r\n"), Err(ParseError::Invalid(_))));
        assert!(matches!(parse_stats("END\r\n"), Err(ParseError::Invalid(_))));
    }

    /// A memcached stand-in that answers every `stats` with the fixture, on
    /// `connections` connections one after the other, each closed after `per_conn`
    /// answers.
    fn fake_server(connections: usize, per_conn: usize) -> (String, std::thread::JoinHandle<()>) {
        use std::io::BufRead as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let answer = app_fixture("memcached-1.6.18-stats.txt");
        let server = std::thread::spawn(move || {
            for _ in 0..connections {
                let (s, _) = listener.accept().unwrap();
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                for _ in 0..per_conn {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 {
                        break;
                    }
                    assert_eq!(line, "stats\r\n");
                    w.write_all(answer.as_bytes()).unwrap();
                }
            }
        });
        (addr, server)
    }

    #[test]
    fn request_sent_ahead_is_answered_on_the_kept_connection_and_a_closed_one_is_remade() {
        let (address, server) = fake_server(2, 2);
        let mut src = MemcachedSource::new(MemcachedConfig { address, timeout: Duration::from_secs(2), every: 1 });
        assert!(!src.begin(), "nothing to send ahead on before the first connection");
        let mut out = Vec::new();
        src.read(&mut out).unwrap();
        assert!(src.begin());
        out.clear();
        src.read(&mut out).unwrap();
        assert_eq!(value(&out, "memcached_limit_maxbytes"), Some(16.0 * 1024.0 * 1024.0));
        // The server closed that connection after two answers: the request sent ahead
        // gets no answer and the collection is made again on a new connection.
        src.begin();
        out.clear();
        src.read(&mut out).unwrap();
        assert_eq!(value(&out, "memcached_curr_items"), Some(1.0));
        drop(src);
        server.join().unwrap();
    }

    #[test]
    fn hit_share_and_rates_over_the_interval() {
        let mut counters = ServerCounters::default();
        let t0 = Instant::now();
        let s = parse_stats(&app_fixture("memcached-1.6.18-stats.txt")).unwrap();
        let mut out = Vec::new();
        push_stats(&mut out, &s, &mut counters, t0);
        assert_eq!(value(&out, "memcached_hit_pct"), None);
        assert_eq!(value(&out, "memcached_get_hits_total"), Some(2.0));
        assert!((value(&out, "memcached_used_pct").unwrap() - 65.0 * 100.0 / 16_777_216.0).abs() < 1e-12);
        let later = MemcachedStats { uptime: Some(12), get_hits: Some(32), get_misses: Some(12), ..s };
        out.clear();
        push_stats(&mut out, &later, &mut counters, t0 + Duration::from_secs(10));
        assert_eq!(value(&out, "memcached_get_hits"), Some(3.0));
        assert_eq!(value(&out, "memcached_get_misses"), Some(1.0));
        assert_eq!(value(&out, "memcached_hit_pct"), Some(75.0));
        for r in &out {
            ganglion_proto::name::validate(ganglion_proto::name::NameKind::Metric, &r.name).unwrap();
        }
    }

    fn render(s: &MemcachedStats) -> String {
        let mut t = String::from("STAT pid 1\r\nSTAT version 1.6.18\r\n");
        for (k, v) in [
            ("uptime", s.uptime),
            ("get_hits", s.get_hits),
            ("get_misses", s.get_misses),
            ("evictions", s.evictions),
            ("cmd_get", s.cmd_get),
            ("cmd_set", s.cmd_set),
            ("curr_connections", s.curr_connections),
            ("curr_items", s.curr_items),
            ("bytes", s.bytes),
            ("limit_maxbytes", s.limit_maxbytes),
        ] {
            if let Some(v) = v {
                t.push_str(&format!("STAT {k} {v}\r\n"));
            }
        }
        t + "END\r\n"
    }

    proptest! {
        #[test]
        fn stats_round_trip(v in proptest::collection::vec(proptest::option::of(any::<u64>()), 10)) {
            let s = MemcachedStats {
                uptime: v[0], get_hits: v[1], get_misses: v[2], evictions: v[3], cmd_get: v[4],
                cmd_set: v[5], curr_connections: v[6], curr_items: v[7], bytes: v[8], limit_maxbytes: v[9],
            };
            prop_assert_eq!(parse_stats(&render(&s)).unwrap(), s);
        }

        #[test]
        fn garbage_never_panics(text in "\\PC{0,400}", lines in proptest::collection::vec(
            "STAT (uptime|get_hits|get_misses|bytes|limit_maxbytes) [-0-9a-z]{0,21}", 0..10)) {
            let mut counters = ServerCounters::default();
            for t in [text, lines.join("\r\n") + "\r\nEND\r\n"] {
                if let Ok(s) = parse_stats(&t) {
                    let mut out = Vec::new();
                    push_stats(&mut out, &s, &mut counters, Instant::now());
                    prop_assert!(out.iter().all(|r| r.value.is_finite() && r.value >= 0.0));
                }
            }
        }
    }
}

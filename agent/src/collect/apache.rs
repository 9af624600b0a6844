//! Apache httpd through mod_status's machine-readable page (`/server-status?auto`).
//!
//! This module owns fetching that page and turning it into `apache_*` readings; the
//! schedule and the up/down bookkeeping are in [`super::apps`]. The page is
//! `Key: value` lines. Counters (`Total Accesses`, `Total kBytes`) become rates under
//! the restart rule of [`super::rate::ServerCounters`] with `ServerUptimeSeconds`
//! as the uptime: a restart (SIGHUP, or stop and start) zeroes both, while a graceful
//! restart keeps both, and neither gives a negative or a huge rate. The worker limit
//! is the configured `max_workers` (MaxRequestWorkers), otherwise the scoreboard's
//! length, which is the server's hard limit ServerLimit × ThreadsPerChild.
//!
//! The requests/s and bytes/s counters need `ExtendedStatus On` (the default since
//! Apache 2.3.6 whenever mod_status is loaded).

use std::io::Read as _;
use std::time::{Duration, Instant};

use super::apps::{done, AppError, AppSource, Collecting, ParseError};
use super::rate::ServerCounters;
use super::{counter, gauge, Reading};
use crate::config::ApacheConfig;

/// Largest status page read; a real one is about 1 KB plus one byte per worker slot.
const MAX_PAGE_BYTES: u64 = 1 << 20;

/// The scoreboard's states, in the order of [`Scoreboard::counts`]: the character
/// mod_status prints, the metric and what it means.
pub const SCOREBOARD_STATES: [(u8, &str, &str); 11] = [
    (b'_', "apache_sb_waiting", "Workers waiting for a connection."),
    (b'S', "apache_sb_starting", "Workers starting up."),
    (b'R', "apache_sb_reading", "Workers reading a request."),
    (b'W', "apache_sb_sending", "Workers sending a reply."),
    (b'K', "apache_sb_keepalive", "Workers in keep-alive, waiting for the next request."),
    (b'D', "apache_sb_dns", "Workers doing a DNS lookup."),
    (b'C', "apache_sb_closing", "Workers closing a connection."),
    (b'L', "apache_sb_logging", "Workers writing to a log."),
    (b'G', "apache_sb_graceful", "Workers finishing a request during a graceful restart."),
    (b'I', "apache_sb_idle_cleanup", "Workers being cleaned up after being idle."),
    (b'.', "apache_sb_open", "Open slots with no process (room to grow up to the limit)."),
];

/// Worker slots counted by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scoreboard {
    /// Per state of [`SCOREBOARD_STATES`].
    pub counts: [u32; SCOREBOARD_STATES.len()],
    /// Every slot, including characters of no known state.
    pub slots: u32,
}

/// What the agent uses of a `?auto` page. Fields the page lacks are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApacheStatus {
    pub total_accesses: Option<u64>,
    pub total_kbytes: Option<u64>,
    pub uptime_secs: Option<u64>,
    pub busy_workers: Option<u64>,
    pub idle_workers: Option<u64>,
    pub processes: Option<u64>,
    pub conns_total: Option<u64>,
    pub cpu_load: Option<f64>,
    pub scoreboard: Option<Scoreboard>,
}

/// Parses mod_status's `?auto` page.
///
/// # Errors
/// [`ParseError::Invalid`] when the text has neither `BusyWorkers` nor a
/// `Scoreboard` (an HTML page, another server's answer): it is not a status page.
pub fn parse_status(text: &str) -> Result<ApacheStatus, ParseError> {
    let mut s = ApacheStatus::default();
    let mut uptime = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(": ") else { continue };
        let value = value.trim();
        let int = || value.parse::<u64>().ok();
        match key {
            "Total Accesses" => s.total_accesses = int(),
            "Total kBytes" => s.total_kbytes = int(),
            "ServerUptimeSeconds" => s.uptime_secs = int(),
            "Uptime" => uptime = int(),
            "BusyWorkers" => s.busy_workers = int(),
            "IdleWorkers" => s.idle_workers = int(),
            "Processes" => s.processes = int(),
            "ConnsTotal" => s.conns_total = int(),
            "CPULoad" => s.cpu_load = value.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0),
            "Scoreboard" => s.scoreboard = Some(count_scoreboard(value)),
            _ => {}
        }
    }
    // Apache before 2.4 has only `Uptime`.
    s.uptime_secs = s.uptime_secs.or(uptime);
    if s.busy_workers.is_none() && s.scoreboard.is_none() {
        return Err(ParseError::Invalid("no BusyWorkers or Scoreboard: not a mod_status ?auto page"));
    }
    Ok(s)
}

fn count_scoreboard(board: &str) -> Scoreboard {
    let mut sb = Scoreboard::default();
    for b in board.bytes() {
        sb.slots = sb.slots.saturating_add(1);
        if let Some(i) = SCOREBOARD_STATES.iter().position(|(c, _, _)| *c == b) {
            sb.counts[i] += 1;
        }
    }
    sb
}

/// Turns one status page into readings; `counters` holds the previous collection.
pub(crate) fn push_status(
    out: &mut Vec<Reading>,
    s: &ApacheStatus,
    counters: &mut ServerCounters,
    now: Instant,
    max_workers: Option<u32>,
) {
    let g = |name: &'static str, unit, description: &'static str, value: f64| {
        gauge(name, unit, "apache", description, value)
    };
    counters.begin(now, s.uptime_secs);
    if let Some(n) = s.total_accesses {
        if let Some(r) = counters.rate("accesses", n) {
            out.push(g("apache_requests", "requests/sec", "Requests served per second.", r));
        }
        out.push(counter(
            "apache_accesses_total",
            "requests",
            "apache",
            "Requests served since Apache started (Total Accesses).",
            n,
        ));
    }
    if let Some(kb) = s.total_kbytes {
        if let Some(r) = counters.rate("kbytes", kb) {
            out.push(g("apache_bytes", "bytes/sec", "Bytes sent per second.", r * 1024.0));
        }
        out.push(counter("apache_kbytes_total", "KiB", "apache", "KiB sent since Apache started (Total kBytes).", kb));
    }
    let limit = max_workers.map(u64::from).or(s.scoreboard.map(|sb| u64::from(sb.slots))).filter(|l| *l > 0);
    if let Some(busy) = s.busy_workers {
        out.push(g("apache_busy_workers", "workers", "Workers processing a request.", busy as f64));
        if let Some(limit) = limit {
            out.push(g("apache_busy_pct", "%", "Busy workers as a share of the worker limit.", pct(busy, limit)));
        }
    }
    if let Some(idle) = s.idle_workers {
        out.push(g("apache_idle_workers", "workers", "Idle workers ready for a request.", idle as f64));
    }
    if let Some(limit) = limit {
        out.push(g(
            "apache_max_workers",
            "workers",
            "Worker limit: max_workers from the agent config, else the scoreboard's size.",
            limit as f64,
        ));
    }
    if let Some(sb) = &s.scoreboard {
        for ((_, name, description), count) in SCOREBOARD_STATES.iter().zip(sb.counts) {
            out.push(g(name, "workers", description, f64::from(count)));
        }
    }
    if let Some(p) = s.processes {
        out.push(g("apache_processes", "processes", "Apache child processes.", p as f64));
    }
    if let Some(c) = s.conns_total {
        out.push(g("apache_connections", "connections", "Connections open (event MPM).", c as f64));
    }
    if let Some(l) = s.cpu_load {
        out.push(g("apache_cpu_load", "%", "Apache's CPU time as a share of its uptime (CPULoad).", l));
    }
    if let Some(u) = s.uptime_secs {
        out.push(g("apache_uptime", "s", "Time since Apache (re)started.", u as f64));
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole as f64
}

/// The Apache source.
pub(crate) struct ApacheSource {
    config: ApacheConfig,
    http: ureq::Agent,
    counters: ServerCounters,
    buf: String,
}

impl ApacheSource {
    pub(crate) fn new(config: ApacheConfig) -> ApacheSource {
        // Timeouts per connect, read and write rather than one deadline for the whole
        // request: a deadline makes the client reset both socket timeouts before every
        // read, a dozen system calls per collection for a reply that fits in one read.
        let http = ureq::AgentBuilder::new()
            .timeout_connect(config.timeout)
            .timeout_read(config.timeout)
            .timeout_write(config.timeout)
            .redirects(0)
            // No connection kept between collections: Apache closes an idle one after
            // its KeepAliveTimeout (5 s by default), well within an interval, so a kept
            // one is only probed, found closed and replaced, a dozen system calls for
            // nothing.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .user_agent(concat!("ganglion-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        ApacheSource { config, http, counters: ServerCounters::default(), buf: String::new() }
    }
}

impl AppSource for ApacheSource {
    fn name(&self) -> &'static str {
        "apache"
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }
    fn every(&self) -> u32 {
        self.config.every
    }

    fn collect<'a>(&'a mut self, _now: Instant, out: &'a mut Vec<Reading>) -> Collecting<'a> {
        done(self.read(out))
    }
}

impl ApacheSource {
    fn read(&mut self, out: &mut Vec<Reading>) -> Result<(), AppError> {
        let resp = self.http.get(&self.config.url).call().map_err(|e| AppError::Http(e.to_string()))?;
        // Rates are computed over the time the server answered, not when we asked.
        let now = Instant::now();
        self.buf.clear();
        resp.into_reader()
            .take(MAX_PAGE_BYTES)
            .read_to_string(&mut self.buf)
            .map_err(|source| AppError::Io { what: "reading the status page", source })?;
        let status = parse_status(&self.buf)?;
        push_status(out, &status, &mut self.counters, now, self.config.max_workers);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{app_fixture as fixture, value};
    use ganglion_proto::msg::MetricKind;
    use proptest::prelude::*;

    #[test]
    fn parses_event_mpm_page_of_apache_2_4() {
        let s = parse_status(&fixture("apache-event-2.4.71.txt")).unwrap();
        assert_eq!(s.total_accesses, Some(352));
        assert_eq!(s.total_kbytes, Some(907));
        assert_eq!(s.uptime_secs, Some(10));
        assert_eq!((s.busy_workers, s.idle_workers, s.processes, s.conns_total), (Some(1), Some(99), Some(4), Some(0)));
        assert_eq!(s.cpu_load, Some(1.0));
        let sb = s.scoreboard.unwrap();
        assert_eq!(sb.slots, 400, "event MPM default: 16 servers × 25 threads");
        assert_eq!((sb.counts[0], sb.counts[3], sb.counts[10]), (99, 1, 300));
    }

    #[test]
    fn parses_prefork_page_with_keepalive_workers() {
        let s = parse_status(&fixture("apache-prefork-2.4.71.txt")).unwrap();
        let sb = s.scoreboard.unwrap();
        assert_eq!(sb.slots, 256);
        assert_eq!((sb.counts[3], sb.counts[4]), (1, 4));
        assert_eq!(s.cpu_load, None, "no CPULoad line when Apache used no CPU yet");
        assert_eq!(s.conns_total, None, "prefork has no connection counts");
    }

    #[test]
    fn readings_of_two_pages_give_rates_and_worker_shares() {
        let mut counters = ServerCounters::default();
        let t0 = Instant::now();
        let first = parse_status(&fixture("apache-event-2.4.71.txt")).unwrap();
        let mut out = Vec::new();
        push_status(&mut out, &first, &mut counters, t0, None);
        assert_eq!(value(&out, "apache_requests"), None, "no rate from one page");
        assert_eq!(value(&out, "apache_accesses_total"), Some(352.0));
        assert_eq!(value(&out, "apache_max_workers"), Some(400.0));
        assert_eq!(value(&out, "apache_busy_pct"), Some(0.25));
        assert_eq!(value(&out, "apache_sb_open"), Some(300.0));
        let mut later = first.clone();
        later.total_accesses = Some(452);
        later.total_kbytes = Some(927);
        later.uptime_secs = Some(20);
        out.clear();
        push_status(&mut out, &later, &mut counters, t0 + Duration::from_secs(10), Some(150));
        assert_eq!(value(&out, "apache_requests"), Some(10.0));
        assert_eq!(value(&out, "apache_bytes"), Some(2048.0));
        assert_eq!(value(&out, "apache_max_workers"), Some(150.0));
        let total = out.iter().find(|r| r.name == "apache_accesses_total").unwrap();
        assert_eq!((total.desc.kind, &*total.desc.group), (MetricKind::Counter, "apache"));
        for r in &out {
            ganglion_proto::name::validate(ganglion_proto::name::NameKind::Metric, &r.name).unwrap();
        }
    }

    #[test]
    fn restart_with_counters_back_above_the_old_values_gives_no_rate() {
        let mut counters = ServerCounters::default();
        let t0 = Instant::now();
        let s = ApacheStatus {
            total_accesses: Some(100),
            uptime_secs: Some(50),
            busy_workers: Some(1),
            ..Default::default()
        };
        push_status(&mut Vec::new(), &s, &mut counters, t0, None);
        // SIGHUP zeroes Total Accesses and the uptime; 3 s later it is at 400 already.
        let after = ApacheStatus { total_accesses: Some(400), uptime_secs: Some(3), ..s.clone() };
        let mut out = Vec::new();
        push_status(&mut out, &after, &mut counters, t0 + Duration::from_secs(15), None);
        assert_eq!(value(&out, "apache_requests"), None);
        // A graceful restart keeps counters and uptime: the rate goes on.
        let graceful = parse_status(&fixture("apache-event-after-graceful.txt")).unwrap();
        assert!(graceful.total_accesses.is_some() && graceful.uptime_secs.is_some());
    }

    #[test]
    fn html_page_is_not_a_status_page() {
        assert!(parse_status("<html><body>It works!</body></html>").is_err());
        assert!(parse_status("").is_err());
    }

    fn render(s: &ApacheStatus, board: &str) -> String {
        let mut t = String::from("127.0.0.1\nServerVersion: Apache/2.4.71 (Debian)\n");
        let mut line = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                t.push_str(&format!("{k}: {v}\n"));
            }
        };
        line("ServerUptimeSeconds", s.uptime_secs.map(|v| v.to_string()));
        line("Total Accesses", s.total_accesses.map(|v| v.to_string()));
        line("Total kBytes", s.total_kbytes.map(|v| v.to_string()));
        line("CPULoad", s.cpu_load.map(|v| v.to_string()));
        line("BusyWorkers", s.busy_workers.map(|v| v.to_string()));
        line("IdleWorkers", s.idle_workers.map(|v| v.to_string()));
        line("Processes", s.processes.map(|v| v.to_string()));
        line("ConnsTotal", s.conns_total.map(|v| v.to_string()));
        t.push_str(&format!("Scoreboard: {board}\n"));
        t
    }

    proptest! {
        #[test]
        fn status_round_trips(accesses: Option<u64>, kbytes: Option<u64>, uptime: Option<u64>,
                              busy: Option<u32>, idle: Option<u32>, processes: Option<u16>, conns: Option<u32>,
                              cpu in proptest::option::of(0.0f64..1e6), board in "[_SRWKDCLGI.]{1,600}") {
            let s = ApacheStatus {
                total_accesses: accesses, total_kbytes: kbytes, uptime_secs: uptime,
                busy_workers: busy.map(u64::from), idle_workers: idle.map(u64::from),
                processes: processes.map(u64::from), conns_total: conns.map(u64::from), cpu_load: cpu,
                scoreboard: Some(count_scoreboard(&board)),
            };
            let back = parse_status(&render(&s, &board)).unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(back.scoreboard.unwrap().counts.iter().sum::<u32>(), board.len() as u32);
        }

        #[test]
        fn garbage_never_panics(text in "\\PC{0,300}", lines in proptest::collection::vec(
            "(Total Accesses|Total kBytes|BusyWorkers|Scoreboard|CPULoad|Uptime): [-0-9.eE_W]{0,24}", 0..10)) {
            let mut counters = ServerCounters::default();
            for t in [text, lines.join("\n")] {
                if let Ok(s) = parse_status(&t) {
                    let mut out = Vec::new();
                    push_status(&mut out, &s, &mut counters, Instant::now(), None);
                    prop_assert!(out.iter().all(|r| r.value.is_finite() && r.value >= 0.0));
                }
            }
        }
    }
}

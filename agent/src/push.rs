//! Custom metrics pushed from outside the agent, like Ganglia's `gmetric`.
//!
//! This module owns the local Unix socket of a running agent, the one-line text
//! format spoken on it, the table of pushed metrics waiting for the next batch, and
//! the client side of `ganglion-agent send` (through the socket, or `--direct` to
//! the collectors in a one-shot session). It owns no timer: the agent's collect loop
//! takes the pushed metrics with everything else, so they travel in the same
//! numbered, spooled batches and a new name is described in that batch's `defs`.
//!
//! The format, one metric per line, answered by one line `ok` or `error: …`:
//!
//! ```text
//! NAME VALUE [UNIT] [type=gauge|counter] [group=GROUP] [tmax=SECS]
//! backup_age 3600 s group=backup tmax=900
//! ```
//!
//! A gauge is repeated in every batch until `tmax` seconds (default 60) passed since
//! it was pushed, so a graph at the agent's interval has no holes between two pushes
//! and a sender that stopped shows as a gap instead of a flat line. A counter is sent
//! once per push: repeating a counter's value would read as a rate of zero.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_proto::msg::MetricKind;
use ganglion_proto::name::{self, NameKind};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::collect::{Desc, HostConfig, Reading};
use crate::config::AgentConfig;
use crate::send::SendError;
use ganglion_proto::msg::{Batch, Facts, Hello, MetricMeta};

/// Distinct custom metric names a running agent accepts; ids are never reused, so
/// this bounds the memory a careless script can make the agent hold.
pub const MAX_CUSTOM_METRICS: usize = 1024;
/// Bytes read from one connection.
const MAX_CONNECTION_BYTES: u64 = 64 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// How long one connection may stay open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Prefixes of the agent's application sources, which a push through the running
/// agent may not use.
pub const RESERVED_PREFIXES: [&str; 4] = ["apache_", "mysql_", "memcached_", "exec_"];
/// `tmax` when the sender does not give one (gmetric's default).
pub const DEFAULT_TMAX: Duration = Duration::from_secs(60);
const MAX_TMAX_SECS: u64 = 86_400;
const MAX_UNIT_LEN: usize = 24;
const MAX_GROUP_LEN: usize = 32;

/// One pushed metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// Gauge or counter.
    pub kind: MetricKind,
    pub group: String,
    pub tmax: Duration,
}

/// Why a pushed line was refused; the text goes back to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
}

impl Push {
    /// A gauge with the defaults: no unit, group `custom`, tmax 60 s.
    pub fn gauge(name: &str, value: f64) -> Push {
        Push {
            name: name.to_owned(),
            value,
            unit: String::new(),
            kind: MetricKind::Gauge,
            group: "custom".to_owned(),
            tmax: DEFAULT_TMAX,
        }
    }

    /// Checks what a parsed line or the command line gave.
    ///
    /// # Errors
    /// [`PushError::Invalid`] naming the first bad field.
    pub fn check(&self) -> Result<(), PushError> {
        let bad = |m: String| Err(PushError::Invalid(m));
        if let Err(e) = name::validate(NameKind::Metric, &self.name) {
            return bad(e.to_string());
        }
        if !self.value.is_finite() {
            return bad("value must be a finite number".into());
        }
        if !matches!(self.kind, MetricKind::Gauge | MetricKind::Counter) {
            return bad("type must be gauge or counter".into());
        }
        if self.unit.len() > MAX_UNIT_LEN || !self.unit.chars().all(|c| c.is_ascii_graphic() && c != '=') {
            return bad(format!("unit: at most {MAX_UNIT_LEN} printable characters without spaces or '='"));
        }
        let group_ok = !self.group.is_empty()
            && self.group.len() <= MAX_GROUP_LEN
            && self.group.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !group_ok {
            return bad(format!("group: 1 to {MAX_GROUP_LEN} of A-Z a-z 0-9 _ -"));
        }
        if self.tmax.is_zero() || self.tmax > Duration::from_secs(MAX_TMAX_SECS) {
            return bad(format!("tmax: between 1 and {MAX_TMAX_SECS} seconds"));
        }
        Ok(())
    }

    /// The line that [`parse_line`] reads back as this push.
    pub fn to_line(&self) -> String {
        let mut l = format!("{} {}", self.name, self.value);
        if !self.unit.is_empty() {
            l.push(' ');
            l.push_str(&self.unit);
        }
        if self.kind == MetricKind::Counter {
            l.push_str(" type=counter");
        }
        l.push_str(&format!(" group={} tmax={}", self.group, self.tmax.as_secs()));
        l
    }
}

/// Reads one line of the socket format.
///
/// # Errors
/// [`PushError::Invalid`] saying what is wrong with it.
pub fn parse_line(line: &str) -> Result<Push, PushError> {
    let invalid = |m: &str| PushError::Invalid(m.to_owned());
    let mut fields = line.split_ascii_whitespace();
    let name = fields.next().ok_or_else(|| invalid("empty line: expected NAME VALUE [UNIT] [key=value…]"))?;
    let value = fields.next().ok_or_else(|| invalid("no value after the name"))?;
    let value: f64 = value.parse().map_err(|_| invalid("value is not a number"))?;
    let mut p = Push::gauge(name, value);
    for (i, field) in fields.enumerate() {
        match field.split_once('=') {
            None if i == 0 => p.unit = field.to_owned(),
            None => return Err(invalid("only the unit may come without key=")),
            Some(("type", "gauge")) => p.kind = MetricKind::Gauge,
            Some(("type", "counter")) => p.kind = MetricKind::Counter,
            Some(("type", _)) => return Err(invalid("type must be gauge or counter")),
            Some(("group", g)) => p.group = g.to_owned(),
            Some(("tmax", t)) => {
                p.tmax = Duration::from_secs(t.parse().map_err(|_| invalid("tmax is not a whole number of seconds"))?);
            }
            Some(_) => return Err(invalid("unknown key; known: type, group, tmax")),
        }
    }
    p.check()?;
    Ok(p)
}

#[derive(Debug)]
struct Entry {
    desc: Desc,
    value: f64,
    pushed: Instant,
    tmax: Duration,
    sent: bool,
}

/// Pushed metrics waiting for the next batch.
#[derive(Debug, Default)]
pub struct CustomMetrics {
    entries: HashMap<String, Entry>,
}

impl CustomMetrics {
    /// Takes a push. A name keeps its unit, type and group while the agent runs,
    /// because collectors learn them once per metric id.
    ///
    /// # Errors
    /// [`PushError::Refused`] for a changed unit or type, or past
    /// [`MAX_CUSTOM_METRICS`] names.
    pub fn put(&mut self, p: Push, now: Instant) -> Result<(), PushError> {
        if let Some(e) = self.entries.get_mut(&p.name) {
            if e.desc.unit != p.unit || e.desc.kind != p.kind || e.desc.group != p.group {
                return Err(PushError::Refused(format!(
                    "{} was pushed before with unit {:?}, type {} and group {}; they cannot change while the agent runs",
                    p.name,
                    e.desc.unit,
                    e.desc.kind.as_str().to_lowercase(),
                    e.desc.group
                )));
            }
            e.value = p.value;
            e.pushed = now;
            e.tmax = p.tmax;
            e.sent = false;
            return Ok(());
        }
        if self.entries.len() >= MAX_CUSTOM_METRICS {
            return Err(PushError::Refused(format!("the agent already holds {MAX_CUSTOM_METRICS} custom metrics")));
        }
        let desc = Desc {
            unit: p.unit.into(),
            group: p.group.into(),
            kind: p.kind,
            description: "Pushed with ganglion-agent send.".into(),
        };
        self.entries.insert(p.name, Entry { desc, value: p.value, pushed: now, tmax: p.tmax, sent: false });
        Ok(())
    }

    /// Whether `name` is a custom metric.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Appends what the batch at `now` carries: every push not sent yet, and gauges
    /// pushed less than their `tmax` ago.
    pub fn take(&mut self, now: Instant, out: &mut Vec<Reading>) {
        for (name, e) in &mut self.entries {
            let fresh = e.desc.kind == MetricKind::Gauge && now.saturating_duration_since(e.pushed) < e.tmax;
            if !e.sent || fresh {
                e.sent = true;
                out.push(Reading { name: name.clone().into(), desc: e.desc.clone(), value: e.value });
            }
        }
    }
}

/// What the socket server asks of the agent.
pub(crate) trait PushSink: Send + Sync + 'static {
    /// Takes one push or says why not.
    fn push(&self, p: Push) -> Result<(), PushError>;
}

/// Binds the send socket: creates its directory, replaces a stale socket file left
/// by an agent that died, and lets the agent's user and group use it (mode 0660).
///
/// # Errors
/// When another agent is serving the path, when it is not a socket, or on I/O errors.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a socket"));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another agent is serving it"));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves the send socket until `shutdown`, then removes the socket file.
pub(crate) async fn serve(listener: UnixListener, sink: Arc<dyn PushSink>, shutdown: CancellationToken) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let path = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_owned));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "Could not accept on the send socket.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let mut s = stream;
            let _ = s.write_all(b"error: the agent is busy with other senders\n").await;
            continue;
        };
        let sink = sink.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, &*sink)).await;
            drop(permit);
        });
    }
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
}

async fn connection(stream: UnixStream, sink: &dyn PushSink) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(rd.take(MAX_CONNECTION_BYTES)).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let reply = match parse_line(&line).and_then(|p| sink.push(p)) {
            Ok(()) => "ok\n".to_owned(),
            Err(e) => {
                tracing::debug!(error = %e, "Refused a pushed metric.");
                format!("error: {e}\n")
            }
        };
        wr.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}

/// Client side: sends pushes to a running agent's socket and returns its answer to
/// each, in order.
///
/// # Errors
/// When the socket cannot be reached or stops answering within `timeout`.
pub fn send_to_socket(path: &Path, pushes: &[Push], timeout: Duration) -> std::io::Result<Vec<Result<(), String>>> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    for p in pushes {
        writeln!(s, "{}", p.to_line())?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut answers = Vec::with_capacity(pushes.len());
    for line in std::io::BufReader::new(s).lines() {
        let line = line?;
        answers.push(match line.strip_prefix("error: ") {
            Some(e) => Err(e.to_owned()),
            None if line == "ok" => Ok(()),
            None => Err(format!("unexpected answer {}", name::escaped(&line))),
        });
    }
    if answers.len() != pushes.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the agent did not answer every metric"));
    }
    Ok(answers)
}

/// Client side of `send --direct`: a one-shot session to each collector of `config`,
/// reporting as `host` in `cluster` (default: the config's own). Returns each
/// collector's outcome.
///
/// The hello carries this host's facts when reporting as itself, so the collector's
/// view of the host stays as the agent's hello left it; for another host name it
/// carries only that name.
pub async fn direct(
    config: &AgentConfig,
    cluster: Option<&str>,
    host: Option<&str>,
    pushes: &[Push],
) -> Vec<(String, Result<(), SendError>)> {
    let spoofed = host.is_some_and(|h| h != config.host);
    let facts = if spoofed {
        Facts { hostname: host.unwrap_or_default().to_owned(), ..Facts::default() }
    } else {
        crate::collect::facts(
            &HostConfig { skip_devices: config.skip_devices.clone(), ..HostConfig::default() },
            config.tags.clone(),
        )
    };
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let metrics: Vec<MetricMeta> = pushes
        .iter()
        .enumerate()
        .map(|(id, p)| MetricMeta {
            id: id as u32,
            name: p.name.clone(),
            unit: p.unit.clone(),
            kind: p.kind,
            group: p.group.clone(),
            description: "Pushed with ganglion-agent send --direct.".to_owned(),
        })
        .collect();
    let hello = Hello {
        cluster: cluster.unwrap_or(&config.cluster).to_owned(),
        host: host.unwrap_or(&config.host).to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        sent_at_ms: now_ms,
        // 0 and run 0 (below): a one-shot sender, not an agent (PROTOCOL.md), so the
        // collector keeps the host's own agent's interval, facts and sequence.
        interval_secs: 0,
        facts,
        metrics,
    };
    let batch = Batch {
        run: 0,
        seq: 1,
        time_ms: now_ms,
        defs: Vec::new(),
        facts: None,
        values: pushes.iter().enumerate().map(|(id, p)| (id as u32, p.value)).collect(),
        gone: Vec::new(),
        ack: true,
        skipped: Vec::new(),
    };
    let mut out = Vec::with_capacity(config.collectors.len());
    for addr in &config.collectors {
        out.push((addr.clone(), crate::send::one_shot(addr, &config.key, &hello, &batch).await));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Mutex;

    #[test]
    fn reads_lines_with_defaults_and_keys() {
        let p = parse_line("backup_age 3600 s group=backup tmax=900").unwrap();
        assert_eq!(
            p,
            Push {
                name: "backup_age".into(),
                value: 3600.0,
                unit: "s".into(),
                kind: MetricKind::Gauge,
                group: "backup".into(),
                tmax: Duration::from_secs(900)
            }
        );
        let c = parse_line("jobs_done 17 type=counter").unwrap();
        assert_eq!(
            (c.kind, c.unit.as_str(), c.group.as_str(), c.tmax),
            (MetricKind::Counter, "", "custom", DEFAULT_TMAX)
        );
        assert_eq!(parse_line("temp -3.5 C").unwrap().value, -3.5);
    }

    #[test]
    fn refuses_bad_lines_with_a_reason() {
        for (line, why) in [
            ("", "empty"),
            ("x", "no value"),
            ("x abc", "not a number"),
            ("x NaN", "finite"),
            ("../etc 1", "invalid metric name"),
            ("x 1 s extra", "only the unit"),
            ("x 1 type=derive", "gauge or counter"),
            ("x 1 color=red", "unknown key"),
            ("x 1 tmax=0", "tmax"),
            ("x 1 group=a/b", "group"),
        ] {
            let err = parse_line(line).unwrap_err().to_string();
            assert!(err.contains(why), "{line:?}: {err}");
        }
    }

    #[test]
    fn gauges_repeat_until_tmax_and_counters_go_once() {
        let mut m = CustomMetrics::default();
        let t0 = Instant::now();
        m.put(parse_line("g 1 tmax=30").unwrap(), t0).unwrap();
        m.put(parse_line("c 5 type=counter").unwrap(), t0).unwrap();
        let names = |m: &mut CustomMetrics, at: u64| {
            let mut out = Vec::new();
            m.take(t0 + Duration::from_secs(at), &mut out);
            let mut n: Vec<String> = out.into_iter().map(|r| r.name.into_owned()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&mut m, 0), ["c", "g"]);
        assert_eq!(names(&mut m, 15), ["g"]);
        assert_eq!(names(&mut m, 31), Vec::<String>::new());
        m.put(parse_line("c 6 type=counter").unwrap(), t0 + Duration::from_secs(40)).unwrap();
        assert_eq!(names(&mut m, 45), ["c"]);
    }

    #[test]
    fn a_name_keeps_its_unit_and_the_table_is_bounded() {
        let mut m = CustomMetrics::default();
        let now = Instant::now();
        m.put(parse_line("x 1 ms").unwrap(), now).unwrap();
        let err = m.put(parse_line("x 1 s").unwrap(), now).unwrap_err();
        assert!(err.to_string().contains("cannot change"), "{err}");
        for i in 1..MAX_CUSTOM_METRICS {
            m.put(Push::gauge(&format!("m{i}"), 1.0), now).unwrap();
        }
        assert!(m.put(Push::gauge("one_too_many", 1.0), now).is_err());
        assert!(m.put(Push::gauge("m1", 2.0), now).is_ok(), "known names still update");
    }

    struct Collect(Mutex<Vec<Push>>);

    impl PushSink for Collect {
        fn push(&self, p: Push) -> Result<(), PushError> {
            if p.name == "cpu_user" {
                return Err(PushError::Refused("cpu_user is one of the agent's own metrics".into()));
            }
            self.0.lock().unwrap().push(p);
            Ok(())
        }
    }

    #[tokio::test]
    async fn socket_answers_each_line_and_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/send.sock");
        // A socket file left by an agent that was killed.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listener = bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
        assert_eq!(bind(&path).unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
        let sink = Arc::new(Collect(Mutex::new(Vec::new())));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, sink.clone(), shutdown.clone()));
        let p = path.clone();
        let answers = tokio::task::spawn_blocking(move || {
            send_to_socket(&p, &[Push::gauge("queue_len", 3.0), Push::gauge("cpu_user", 1.0)], Duration::from_secs(5))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(answers[0], Ok(()));
        assert!(answers[1].as_ref().unwrap_err().contains("own metrics"));
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        shutdown.cancel();
        server.await.unwrap();
        assert!(!path.exists(), "socket file removed at shutdown");
    }

    proptest! {
        #[test]
        fn line_round_trips(name in "[a-z][a-z0-9_]{0,30}", value in -1e12f64..1e12, unit in "[a-zA-Z/%]{0,8}",
                            counter: bool, group in "[a-z_]{1,10}", tmax in 1u64..86_400) {
            let p = Push {
                name, value, unit, group, tmax: Duration::from_secs(tmax),
                kind: if counter { MetricKind::Counter } else { MetricKind::Gauge },
            };
            prop_assert_eq!(parse_line(&p.to_line()).unwrap(), p);
        }

        #[test]
        fn garbage_never_panics(line in "\\PC{0,200}", fields in proptest::collection::vec("[a-z=0-9.-]{0,12}", 0..6)) {
            let _ = parse_line(&line);
            if let Ok(p) = parse_line(&fields.join(" ")) {
                prop_assert!(p.check().is_ok());
            }
        }
    }
}

//! Exec plugins: programs the agent runs on their own interval, whose output
//! carries metrics, so existing Nagios plugins and Munin/collectd exec scripts work.
//!
//! This module owns running a plugin (no shell, stdin closed, in its own process
//! group, output bounded) and reading its output. Two formats are read:
//!
//! - **Nagios**: `TEXT | perfdata` on the first line, more perfdata after a `|` in the
//!   long text; each `'label'=value[UOM];warn;crit;min;max` item becomes
//!   `exec_<plugin>_<label>` with the UOM as its unit (`c` makes it a counter), and the
//!   exit code becomes `exec_<plugin>_status` (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
//! - **Lines**: `name value [unit]`, Munin's `name.value V` or collectd's
//!   `PUTVAL "host/plugin/type" N:V[:V…]`, one metric per line; other lines are
//!   skipped. The plugin is up when it exits 0.
//!
//! A plugin that is still running at its timeout is killed with its whole process
//! group (SIGKILL, as Nagios does), so a hung grandchild cannot hold its pipe open,
//! and reported down. Every run reports `exec_<plugin>_up` and, unless it could not
//! start, `exec_<plugin>_duration`; the newest run's readings wait in [`ExecResults`]
//! for the agent's next batch.

use std::borrow::Cow;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_proto::msg::MetricKind;
use ganglion_proto::name::{self, NameKind};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use super::apps::{up_reading, Health};
use super::{gauge, Desc, Reading};
use crate::config::{ExecConfig, ExecFormat};

/// Output kept per run; the rest is read and dropped so the plugin never blocks.
const MAX_STDOUT_BYTES: usize = 64 * 1024;
/// Standard error kept for the log line of a failing plugin.
const MAX_STDERR_BYTES: usize = 512;
/// Values taken from one run.
const MAX_VALUES: usize = 256;
/// Longest unit kept; longer ones are dropped rather than shown cut.
const MAX_UNIT_LEN: usize = 24;
/// How long the reaping of a killed plugin may take.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);

/// One value read from a plugin's output.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginValue {
    /// As the plugin wrote it; turned into a metric name by the caller.
    pub label: String,
    pub value: f64,
    pub unit: String,
    pub kind: MetricKind,
}

/// What one run printed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginOutput {
    pub values: Vec<PluginValue>,
    /// Read as a Nagios plugin (its exit code is a state).
    pub nagios: bool,
    /// Lines that carried no metric.
    pub skipped: usize,
}

/// Reads a plugin's standard output.
pub fn parse_output(text: &str, format: ExecFormat) -> PluginOutput {
    let first = text.lines().next().unwrap_or("");
    let nagios = match format {
        ExecFormat::Nagios => true,
        ExecFormat::Lines => false,
        ExecFormat::Auto => first.contains('|'),
    };
    let mut out = PluginOutput { nagios, ..PluginOutput::default() };
    if nagios {
        let mut perf = String::new();
        if let Some((_, p)) = first.split_once('|') {
            perf.push_str(p);
        }
        // Long text (lines 2…) may continue the perfdata after its first `|`.
        let long: Vec<&str> = text.lines().skip(1).collect();
        if let Some(i) = long.iter().position(|l| l.contains('|')) {
            perf.push(' ');
            perf.push_str(long[i].split_once('|').map_or("", |(_, p)| p));
            for l in &long[i + 1..] {
                perf.push(' ');
                perf.push_str(l);
            }
        }
        out.values = parse_perfdata(&perf);
    } else {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let before = out.values.len();
            parse_line(line, &mut out.values);
            if out.values.len() == before {
                out.skipped += 1;
            }
        }
    }
    out.values.truncate(MAX_VALUES);
    out
}

/// Nagios performance data: `'label'=value[UOM];warn;crit;min;max …`. Items that do
/// not parse, and `U` (unknown) values, are skipped.
pub fn parse_perfdata(text: &str) -> Vec<PluginValue> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() && out.len() < MAX_VALUES {
        let (label, after) = if let Some(quoted) = rest.strip_prefix('\'') {
            // A quoted label may hold spaces and `=`; `''` is a quote.
            let mut label = String::new();
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().map(|(_, c)| *c) == Some('\'') {
                        label.push('\'');
                        chars.next();
                        continue;
                    }
                    end = Some(i + 1);
                    break;
                }
                label.push(c);
            }
            match end.and_then(|e| quoted[e..].strip_prefix('=')) {
                Some(after) => (label, after),
                None => break,
            }
        } else {
            let token_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            match rest[..token_end].split_once('=') {
                Some((label, _)) => (label.to_owned(), &rest[label.len() + 1..]),
                None => {
                    rest = rest[token_end..].trim_start();
                    continue;
                }
            }
        };
        let token_end = after.find(char::is_whitespace).unwrap_or(after.len());
        let token = &after[..token_end];
        rest = after[token_end..].trim_start();
        let value_uom = token.split(';').next().unwrap_or("");
        let num_end = value_uom
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | ',')))
            .unwrap_or(value_uom.len());
        let Ok(value) = value_uom[..num_end].replace(',', ".").parse::<f64>() else { continue };
        if label.is_empty() || !value.is_finite() {
            continue;
        }
        let uom = &value_uom[num_end..];
        let (unit, kind) = if uom == "c" { ("", MetricKind::Counter) } else { (uom, MetricKind::Gauge) };
        out.push(PluginValue { label, value, unit: clean_unit(unit), kind });
    }
    out
}

/// One line of the lines format, appended to `out` when it carries values.
fn parse_line(line: &str, out: &mut Vec<PluginValue>) {
    if let Some(rest) = line.strip_prefix("PUTVAL ") {
        // collectd: PUTVAL "host/plugin-instance/type-instance" [interval=10] N:1.5[:2]
        let rest = rest.trim();
        let (id, tail) = match rest.strip_prefix('"') {
            Some(q) => match q.split_once('"') {
                Some(parts) => parts,
                None => return,
            },
            None => rest.split_once(char::is_whitespace).unwrap_or((rest, "")),
        };
        let label = id.split_once('/').map_or(id, |(_, l)| l);
        let Some(values) = tail.split_whitespace().last() else { return };
        let fields: Vec<&str> = values.split(':').skip(1).collect();
        for (i, v) in fields.iter().enumerate() {
            if let Ok(value) = v.parse::<f64>() {
                if value.is_finite() {
                    let label = if fields.len() == 1 { label.to_owned() } else { format!("{label}_{i}") };
                    out.push(PluginValue { label, value, unit: String::new(), kind: MetricKind::Gauge });
                }
            }
        }
        return;
    }
    let mut fields = line.split_whitespace();
    let (Some(name), Some(value)) = (fields.next(), fields.next()) else { return };
    // Munin: `load.value 0.42`, optionally `epoch:value`.
    let (label, value) = match name.strip_suffix(".value") {
        Some(field) => (field, value.rsplit(':').next().unwrap_or(value)),
        None => (name, value),
    };
    let Ok(value) = value.parse::<f64>() else { return };
    if !value.is_finite() || label.is_empty() {
        return;
    }
    let unit = fields.next().unwrap_or("");
    out.push(PluginValue { label: label.to_owned(), value, unit: clean_unit(unit), kind: MetricKind::Gauge });
}

/// A unit fit for the dashboard, or none.
fn clean_unit(unit: &str) -> String {
    let ok = unit.len() <= MAX_UNIT_LEN && unit.chars().all(|c| c.is_ascii_graphic() && c != '=' && c != ';');
    if ok {
        unit.to_owned()
    } else {
        String::new()
    }
}

/// Why a run gave no output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading its output: {0}")]
    Io(#[from] std::io::Error),
    #[error("still running after {0:?}; killed its process group")]
    TimedOut(Duration),
}

/// What a finished run left.
#[derive(Debug)]
pub struct Run {
    /// Exit code; `None` when a signal ended the plugin.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs a plugin once, killing its process group at the timeout.
///
/// # Errors
/// [`RunError`] when it cannot start, its pipes fail or it outlives its timeout.
pub async fn run(cfg: &ExecConfig) -> Result<Run, RunError> {
    let started = Instant::now();
    let program = cfg.command.first().map(String::as_str).unwrap_or("");
    let mut child = tokio::process::Command::new(program)
        .args(cfg.command.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RunError::Spawn { program: program.to_owned(), source })?;
    let pid = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32));
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RunError::Io(std::io::Error::other("no pipes to the plugin")));
    };
    let work = async {
        let (out, err) =
            tokio::join!(read_bounded(&mut stdout, MAX_STDOUT_BYTES), read_bounded(&mut stderr, MAX_STDERR_BYTES));
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out?, err?))
    };
    match tokio::time::timeout(cfg.timeout, work).await {
        Ok(result) => {
            let (status, out, err) = result?;
            Ok(Run {
                code: status.code(),
                stdout: String::from_utf8_lossy(&out).into_owned(),
                stderr: String::from_utf8_lossy(&err).trim().to_owned(),
                took: started.elapsed(),
            })
        }
        Err(_) => {
            if let Some(pid) = pid {
                // The plugin leads its own group (process_group(0)), so this reaches
                // whatever it started, too.
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::Kill);
            }
            let _ = tokio::time::timeout(REAP_TIMEOUT, child.wait()).await;
            Err(RunError::TimedOut(cfg.timeout))
        }
    }
}

/// Reads to the end, keeping the first `keep` bytes.
async fn read_bounded<R: AsyncRead + Unpin>(r: &mut R, keep: usize) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = keep.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// The metric name of a plugin's value, or `None` when no valid name can be made.
fn metric_name(plugin: &str, label: &str) -> Option<String> {
    let name = format!("exec_{plugin}_{}", name::sanitize(label));
    name::validate(NameKind::Metric, &name).is_ok().then_some(name)
}

/// Turns a run into readings (without `_up`); the error is why the plugin counts
/// as down.
pub(crate) fn readings(cfg: &ExecConfig, run: &Run, out: &mut Vec<Reading>) -> Result<(), String> {
    let parsed = parse_output(&run.stdout, cfg.format);
    let group: Cow<'static, str> = cfg.source().into();
    let mut seen = HashMap::new();
    for v in parsed.values {
        let Some(name) = metric_name(&cfg.name, &v.label) else { continue };
        let reading = Reading {
            name: name.clone().into(),
            desc: Desc {
                unit: v.unit.into(),
                group: group.clone(),
                kind: v.kind,
                description: format!("{} of exec plugin {}.", v.label, cfg.name).into(),
            },
            value: v.value,
        };
        // The last of two values that map to one name wins.
        match seen.get(&name) {
            Some(&i) => out[i] = reading,
            None => {
                seen.insert(name, out.len());
                out.push(reading);
            }
        }
    }
    out.push(exec_gauge(cfg, "duration", "s", "How long the plugin's last run took.", run.took.as_secs_f64()));
    let code = run.code;
    if parsed.nagios {
        if let Some(c @ 0..=3) = code {
            out.push(exec_gauge(
                cfg,
                "status",
                "",
                "Nagios state of the last run: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
                f64::from(c),
            ));
            return Ok(());
        }
    } else if code == Some(0) {
        return Ok(());
    }
    let how = code.map_or_else(|| "was ended by a signal".to_owned(), |c| format!("exited with status {c}"));
    Err(if run.stderr.is_empty() { how } else { format!("{how}: {}", run.stderr) })
}

fn exec_gauge(cfg: &ExecConfig, suffix: &str, unit: &'static str, description: &'static str, value: f64) -> Reading {
    let mut r = gauge(format!("exec_{}_{suffix}", cfg.name), unit, "", description, value);
    r.desc.group = cfg.source().into();
    r
}

/// Runs a plugin once and returns every reading, `_up` included.
pub(crate) async fn run_and_read(cfg: &ExecConfig, health: &mut Health) -> Vec<Reading> {
    let mut out = Vec::new();
    let result = match run(cfg).await {
        Ok(run) => readings(cfg, &run, &mut out),
        Err(e) => Err(e.to_string()),
    };
    let up = health.record(result.as_ref().err().map(|e| e as &dyn std::fmt::Display));
    let source = cfg.source();
    let mut up = up_reading(&source, "", up);
    up.desc.group = source.into();
    out.push(up);
    out
}

/// The newest readings of each plugin, waiting for the next batch.
#[derive(Debug, Default)]
pub struct ExecResults {
    by_plugin: Mutex<HashMap<String, Vec<Reading>>>,
}

impl ExecResults {
    /// Moves every waiting reading to `out`; returns the plugins they came from.
    pub fn drain_into(&self, out: &mut Vec<Reading>) -> Vec<String> {
        let mut m = self.by_plugin.lock().unwrap_or_else(|e| e.into_inner());
        m.drain()
            .map(|(plugin, readings)| {
                out.extend(readings);
                plugin
            })
            .collect()
    }

    fn put(&self, plugin: &str, readings: Vec<Reading>) {
        self.by_plugin.lock().unwrap_or_else(|e| e.into_inner()).insert(plugin.to_owned(), readings);
    }
}

/// Starts one task per plugin; each runs on its interval (the first run after a
/// random part of it, like the agent's own collections) until `shutdown`.
pub fn spawn(configs: &[ExecConfig], results: Arc<ExecResults>, shutdown: CancellationToken) {
    for cfg in configs.iter().cloned() {
        let results = results.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut health = Health::new(cfg.source());
            let delay = cfg.interval.mul_f64(rand::random::<f64>());
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + delay, cfg.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                let readings = tokio::select! {
                    r = run_and_read(&cfg, &mut health) => r,
                    () = shutdown.cancelled() => return,
                };
                results.put(&cfg.name, readings);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{app_fixture, value};
    use proptest::prelude::*;

    fn plugin(name: &str, command: &[&str], timeout_ms: u64) -> ExecConfig {
        ExecConfig {
            name: name.to_owned(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_millis(timeout_ms),
            format: ExecFormat::Auto,
        }
    }

    #[test]
    fn reads_perfdata_of_the_standard_plugins() {
        // Captured from monitoring-plugins 2.3.3 (Debian 12).
        let disk = parse_output(&app_fixture("nagios-check_disk-2.3.3.txt"), ExecFormat::Auto);
        assert!(disk.nagios);
        let v: Vec<_> = disk.values.iter().map(|v| (v.label.as_str(), v.value, v.unit.as_str())).collect();
        assert_eq!(v, [("/", 45_119_176_704.0, "B")]);
        let load = parse_output(&app_fixture("nagios-check_load-2.3.3.txt"), ExecFormat::Auto);
        let v: Vec<_> = load.values.iter().map(|v| (v.label.as_str(), v.value)).collect();
        assert_eq!(v, [("load1", 4.13), ("load5", 5.25), ("load15", 6.17)]);
        let procs = parse_output(&app_fixture("nagios-check_procs-2.3.3.txt"), ExecFormat::Auto);
        assert_eq!(
            procs.values,
            [PluginValue { label: "procs".into(), value: 108.0, unit: String::new(), kind: MetricKind::Gauge }]
        );
        // Quoted labels with spaces, as check_disk prints for such mount points.
        let quoted = parse_perfdata("'/boot fs'=68MB;88;93;0;98 inodes=85%;;;0;100");
        let v: Vec<_> = quoted.iter().map(|v| (v.label.as_str(), v.value, v.unit.as_str())).collect();
        assert_eq!(v, [("/boot fs", 68.0, "MB"), ("inodes", 85.0, "%")]);
    }

    #[test]
    fn reads_perfdata_of_the_long_text_and_counters() {
        let text = "OK - 3 queues\nqueue a fine\nqueue b fine | a=1;;;; b=2c\n'c''s'=3.5s\n";
        let out = parse_output(text, ExecFormat::Nagios);
        let v: Vec<_> = out.values.iter().map(|v| (v.label.as_str(), v.value, v.kind)).collect();
        assert_eq!(
            v,
            [("a", 1.0, MetricKind::Gauge), ("b", 2.0, MetricKind::Counter), ("c's", 3.5, MetricKind::Gauge)]
        );
        assert_eq!(
            parse_perfdata("x=U;1;2 y=1,5 bad =3 'open=4"),
            vec![PluginValue { label: "y".into(), value: 1.5, unit: String::new(), kind: MetricKind::Gauge }]
        );
    }

    #[test]
    fn reads_plain_munin_and_collectd_lines() {
        let text = "# comment\nqueue_length 12 jobs\nload.value 0.42\nPUTVAL \"h/exec-app/gauge-users\" interval=10 N:17\nPUTVAL h/if/octets N:1:2\nnonsense\n";
        let out = parse_output(text, ExecFormat::Auto);
        assert!(!out.nagios);
        let v: Vec<_> = out.values.iter().map(|v| (v.label.as_str(), v.value, v.unit.as_str())).collect();
        assert_eq!(
            v,
            [
                ("queue_length", 12.0, "jobs"),
                ("load", 0.42, ""),
                ("exec-app/gauge-users", 17.0, ""),
                ("if/octets_0", 1.0, ""),
                ("if/octets_1", 2.0, "")
            ]
        );
        assert_eq!(out.skipped, 1);
    }

    #[test]
    fn readings_are_named_after_plugin_and_label() {
        let cfg = plugin("disk", &["/bin/true"], 1000);
        let run = Run {
            code: Some(1),
            stdout: "WARN | '/var lib'=90%\n".into(),
            stderr: String::new(),
            took: Duration::from_millis(5),
        };
        let mut out = Vec::new();
        assert!(readings(&cfg, &run, &mut out).is_ok(), "a WARNING plugin still ran fine");
        assert_eq!(value(&out, "exec_disk_var_lib"), Some(90.0));
        assert_eq!(value(&out, "exec_disk_status"), Some(1.0));
        let lines = Run { code: Some(2), stdout: "x 1\n".into(), stderr: "no such queue".into(), took: Duration::ZERO };
        out.clear();
        let err = readings(&cfg, &lines, &mut out).unwrap_err();
        assert!(err.contains("status 2") && err.contains("no such queue"), "{err}");
    }

    #[tokio::test]
    async fn runs_a_plugin_and_reads_its_output() {
        let cfg = plugin("echo", &["/bin/sh", "-c", "echo 'users 5'; echo 'oops' >&2"], 5000);
        let mut health = Health::new("exec_echo");
        let out = run_and_read(&cfg, &mut health).await;
        assert_eq!(value(&out, "exec_echo_users"), Some(5.0));
        assert_eq!(value(&out, "exec_echo_up"), Some(1.0));
        assert!(value(&out, "exec_echo_duration").is_some());
    }

    #[tokio::test]
    async fn a_hanging_plugin_is_killed_with_its_children_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let cfg = plugin("hang", &["/bin/sh", "-c", &script], 300);
        let t0 = Instant::now();
        let err = run(&cfg).await.unwrap_err();
        assert!(matches!(err, RunError::TimedOut(_)), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
        let child: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // Killed children are reaped by init; give that a moment.
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_to_string(format!("/proc/{child}/stat")).map_or(true, |s| s.contains(") Z "))
        });
        assert!(gone, "the plugin's child {child} survived");
        let mut health = Health::new("exec_hang");
        let out = run_and_read(&cfg, &mut health).await;
        assert_eq!(value(&out, "exec_hang_up"), Some(0.0));
    }

    #[tokio::test]
    async fn a_missing_program_is_down_not_fatal() {
        let cfg = plugin("gone", &["/nonexistent/plugin"], 1000);
        let mut health = Health::new("exec_gone");
        let out = run_and_read(&cfg, &mut health).await;
        assert_eq!(value(&out, "exec_gone_up"), Some(0.0));
        assert_eq!(out.len(), 1);
    }

    #[tokio::test]
    async fn endless_output_is_bounded() {
        let cfg = plugin("yes", &["/bin/sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' 'y'; echo; echo 'n 1'"], 5000);
        let run = run(&cfg).await.unwrap();
        assert_eq!(run.stdout.len(), MAX_STDOUT_BYTES);
    }

    proptest! {
        #[test]
        fn perfdata_round_trips(items in proptest::collection::vec(
            ("[a-z][a-z0-9 _/']{0,15}", -1e9f64..1e9, proptest::sample::select(vec!["", "s", "ms", "%", "B", "KB", "c"])), 0..10)) {
            let text: String = items.iter().map(|(l, v, u)| format!("'{}'={v}{u};1;2;0;100 ", l.replace('\'', "''"))).collect();
            let back = parse_perfdata(&text);
            prop_assert_eq!(back.len(), items.len());
            for (b, (l, v, u)) in back.iter().zip(&items) {
                prop_assert_eq!(&b.label, l);
                prop_assert_eq!(b.value, *v);
                prop_assert_eq!(b.kind == MetricKind::Counter, *u == "c");
            }
        }

        #[test]
        fn garbage_never_panics(text in "\\PC{0,400}", lines in proptest::collection::vec(
            "(PUTVAL |'|[a-z.]{1,8}[ =])[-0-9a-z.:;'\"/ =|U]{0,30}", 0..10)) {
            let cfg = plugin("p", &["/bin/true"], 1000);
            for t in [text, lines.join("\n")] {
                for f in [ExecFormat::Auto, ExecFormat::Nagios, ExecFormat::Lines] {
                    let out = parse_output(&t, f);
                    prop_assert!(out.values.iter().all(|v| v.value.is_finite()));
                }
                let run = Run { code: Some(0), stdout: t, stderr: String::new(), took: Duration::ZERO };
                let mut out = Vec::new();
                let _ = readings(&cfg, &run, &mut out);
                for r in &out {
                    prop_assert!(name::validate(NameKind::Metric, &r.name).is_ok(), "{}", r.name);
                }
            }
        }
    }
}

//! Running active check plugins: one child process per check, in its own process group,
//! with a hard deadline and a cap on how many run at once.
//!
//! Plugins are expected to time themselves out (`-t`), but many do not or cannot (a hung
//! NFS mount, a script stuck on a pipe). The runner enforces its own deadline and then
//! kills the whole process group, so a plugin's children die with it and a hung check
//! costs one slot of the concurrency limit for at most its timeout.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_checks::plugin::{self, CheckSource, PluginOutput};
use ganglion_checks::state::ServiceState;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::Semaphore;

/// Bytes of stdout and of stderr kept from a plugin; the rest is read and discarded so a
/// chatty plugin cannot block on a full pipe.
const MAX_CAPTURE: usize = 64 * 1024;

/// Outcome of one plugin run.
#[derive(Debug, Clone)]
pub struct PluginRun {
    /// The service state the exit code (or the timeout) stands for.
    pub state: ServiceState,
    /// Exit code as the plugin returned it; `None` when it was killed or did not start.
    pub exit_code: Option<i32>,
    pub output: PluginOutput,
    pub duration: Duration,
    pub timed_out: bool,
}

/// Runs plugins with a shared concurrency limit.
#[derive(Clone)]
pub struct PluginRunner {
    permits: Arc<Semaphore>,
}

impl PluginRunner {
    pub fn new(max_concurrent: usize) -> PluginRunner {
        PluginRunner { permits: Arc::new(Semaphore::new(max_concurrent.max(1))) }
    }

    /// Runs `argv` (program and arguments, macros already expanded) and maps the result to
    /// a service state. A timeout gives `timeout_state` and Nagios' own wording.
    pub async fn run(&self, argv: &[String], timeout: Duration, timeout_state: ServiceState) -> PluginRun {
        let _permit = self.permits.acquire().await.expect("the plugin semaphore is never closed");
        let started = Instant::now();
        let Some((program, args)) = argv.split_first() else {
            return failed(started, "(Check command is empty)".to_owned());
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                // Nagios reports a missing plugin as exit code 127 → UNKNOWN with the shell's
                // message; say the same thing plainly.
                return failed(started, format!("(Could not start {}: {e})", ganglion_proto::name::escaped(program)));
            }
        };
        let pgid = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32));
        let mut stdout = child.stdout.take().expect("stdout was piped");
        let mut stderr = child.stderr.take().expect("stderr was piped");
        let work = async {
            let (out, err) = tokio::join!(read_capped(&mut stdout), read_capped(&mut stderr));
            let status = child.wait().await;
            (out, err, status)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok((out, err, status)) => {
                let duration = started.elapsed();
                let output = plugin::parse_process_output(&out, &err);
                match status {
                    Ok(s) => {
                        let code = s.code();
                        let state = plugin::service_state_from_exit_code(
                            code.map_or(i64::from(ServiceState::Unknown.code()), i64::from),
                            CheckSource::Active,
                        );
                        PluginRun { state, exit_code: code, output, duration, timed_out: false }
                    }
                    Err(e) => failed(started, format!("(Could not wait for the plugin: {e})")),
                }
            }
            Err(_) => {
                if let Some(pgid) = pgid {
                    // The group, not just the child: a shell script's `sleep` must die too.
                    let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::Kill);
                }
                let duration = started.elapsed();
                tracing::warn!(plugin = %ganglion_proto::name::escaped(program), secs = duration.as_secs_f64(), "Check timed out; killed its process group.");
                PluginRun {
                    state: timeout_state,
                    exit_code: None,
                    output: PluginOutput {
                        output: format!("(Service check timed out after {:.2} seconds)", duration.as_secs_f64()),
                        ..PluginOutput::default()
                    },
                    duration,
                    timed_out: true,
                }
            }
        }
    }
}

fn failed(started: Instant, output: String) -> PluginRun {
    PluginRun {
        state: ServiceState::Unknown,
        exit_code: None,
        output: PluginOutput { output, ..PluginOutput::default() },
        duration: started.elapsed(),
        timed_out: false,
    }
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_CAPTURE.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// Splits a command line into program and arguments the way a POSIX shell would quote
/// them, without running a shell: macro values can never inject commands.
///
/// # Errors
/// When quotes are unbalanced.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    match shlex::split(line) {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err("the command is empty".to_owned()),
        None => Err("unbalanced quotes in the command".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn maps_exit_codes_and_splits_output() {
        let r = PluginRunner::new(2);
        let run = r
            .run(
                &sh("echo 'DISK WARNING - 91% used | used=91%;80;95'; exit 1"),
                Duration::from_secs(5),
                ServiceState::Critical,
            )
            .await;
        assert_eq!(run.state, ServiceState::Warning);
        assert_eq!(run.exit_code, Some(1));
        assert_eq!(run.output.output, "DISK WARNING - 91% used");
        assert_eq!(run.output.perfdata, "used=91%;80;95");
        let run = r.run(&sh("echo weird; exit 7"), Duration::from_secs(5), ServiceState::Critical).await;
        // Out-of-range exit codes of active checks are CRITICAL, as measured on Nagios 4.
        assert_eq!(run.state, ServiceState::Critical);
    }

    #[tokio::test]
    async fn kills_the_whole_group_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survivor");
        // The child's child would create the marker after 2 s if it survived the kill.
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let r = PluginRunner::new(1);
        let started = Instant::now();
        let run = r.run(&sh(&script), Duration::from_millis(300), ServiceState::Critical).await;
        assert!(run.timed_out);
        assert_eq!(run.state, ServiceState::Critical);
        assert!(run.output.output.starts_with("(Service check timed out after 0."), "{}", run.output.output);
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "a grandchild of the plugin outlived the timeout");
    }

    #[tokio::test]
    async fn missing_program_is_unknown_with_a_reason() {
        let run = PluginRunner::new(1)
            .run(&["/nonexistent/check_x".to_owned()], Duration::from_secs(1), ServiceState::Critical)
            .await;
        assert_eq!(run.state, ServiceState::Unknown);
        assert!(run.output.output.contains("Could not start"), "{}", run.output.output);
    }

    #[test]
    fn splits_like_a_shell_without_running_one() {
        assert_eq!(
            split_command("check_tcp -H '10.0.0.1' -p 22").unwrap(),
            ["check_tcp", "-H", "10.0.0.1", "-p", "22"]
        );
        assert_eq!(split_command("x 'a; rm -rf /'").unwrap(), ["x", "a; rm -rf /"]);
        assert!(split_command("x 'open").is_err());
        assert!(split_command("  ").is_err());
    }
}

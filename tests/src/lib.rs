//! Test harness for ganglion's end-to-end tests.
//!
//! It owns starting the real binaries (`ganglion`, `ganglion-agent`) and real peers on
//! loopback with free ports, stopping them on drop, and failing with everything needed
//! to understand a failure: the command, and the tail of every process's log. It does
//! not own any assertion about ganglion's behaviour; those are in `tests/`.
//!
//! Layout: [`bin`] builds and finds a binary, [`Proc`] is a child process with a log
//! file, [`Collector`] and [`Agent`] wrap the two binaries, [`require`] fails with an
//! install hint when a peer program is missing, [`wait_for`] polls with a deadline.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of a workspace binary, built once per test run (a no-op when fresh).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(&cargo)
            .args(["build", "--quiet", "--bin", "ganglion", "--bin", "ganglion-agent"])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build for the binaries under test");
        assert!(status.success(), "cargo build of the binaries failed");
        // Test executables live in target/<profile>/deps.
        let exe = std::env::current_exe().expect("the test executable's path");
        exe.parent().and_then(Path::parent).expect("target/<profile>").to_owned()
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_owned()
}

/// Fails with an install hint when a peer program is missing. A missing peer is a
/// failure, never a silent pass.
pub fn require(cmd: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(cmd))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "`{cmd}` is needed by this test: install the Debian package `{package}` (scripts/test does this as root)"
        )
    })
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("binding 127.0.0.1:0")
}

/// A child process whose stdout and stderr go to a log file; killed on drop.
pub struct Proc {
    pub name: String,
    pub command: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = fs::OpenOptions::new().create(true).append(true).open(&log).expect("opening a log file");
        let err = out.try_clone().expect("cloning a log file handle");
        let command = format!("{cmd:?}");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).env("NO_COLOR", "1");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {command}: {e}"));
        Proc { name: name.to_owned(), command, log, child: Some(child) }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends a signal and waits for the process to end.
    pub fn signal(&mut self, sig: rustix::process::Signal) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                let _ = rustix::process::kill_process(pid, sig);
            }
            let _ = c.wait();
        }
    }

    pub fn kill9(&mut self) {
        self.signal(rustix::process::Signal::Kill);
    }

    pub fn stop(&mut self) {
        self.signal(rustix::process::Signal::Term);
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last lines of the log, for failure messages.
    pub fn tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!("--- {} ({}) log, last {} lines:\n{}\n", self.name, self.command, lines, all[start..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` with `what` and
/// the logs of `procs`.
pub fn wait_for<T>(timeout: Duration, what: &str, procs: &[&Proc], mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() > deadline {
            let logs: String = procs.iter().map(|p| p.tail(40)).collect();
            panic!("timed out after {timeout:?} waiting for {what}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A collector process with its config in a temporary directory.
pub struct Collector {
    pub proc: Proc,
    pub ingest: String,
    pub web: String,
    pub config: PathBuf,
    dir: PathBuf,
    starts: u32,
}

/// The cluster and key tests use unless they say otherwise.
pub const CLUSTER: &str = "test";
pub const KEY: &str = "test-key-0123456789abcdef";

impl Collector {
    /// Starts a collector with one cluster ([`CLUSTER`], [`KEY`]) plus `extra` config.
    pub fn start(dir: &Path, extra: &str) -> Collector {
        let ingest = format!("127.0.0.1:{}", free_port());
        let web = format!("127.0.0.1:{}", free_port());
        let config = dir.join(format!("collector-{}.toml", free_port()));
        // The collector's files stay in the test's directory, so tests never share them.
        let data_dir = toml_string(&dir.join("data").to_string_lossy());
        let text = format!(
            "data_dir = {data_dir}\n[ingest]\nlisten = \"{ingest}\"\n[web]\nlisten = \"{web}\"\n[[cluster]]\nname = \"{CLUSTER}\"\nkey = \"{KEY}\"\n{extra}"
        );
        fs::write(&config, text).expect("writing collector config");
        let mut c = Collector {
            proc: Proc::spawn("collector", Command::new("true"), dir.join("unused.log")),
            ingest,
            web,
            config,
            dir: dir.to_owned(),
            starts: 0,
        };
        c.restart();
        c
    }

    /// Starts (again) on the same ports and config, after a stop or kill.
    pub fn restart(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(bin("ganglion"));
        cmd.args(["--log", "info", "serve", "--config"]).arg(&self.config);
        let log = self.dir.join(format!("collector-{}-{}.log", self.web.replace([':', '.'], "_"), self.starts));
        self.proc = Proc::spawn("collector", cmd, log);
        let web = self.web.clone();
        let proc = &self.proc;
        wait_for(Duration::from_secs(20), "the collector's API", &[proc], || {
            ureq::get(&format!("http://{web}/api/v1/health")).call().ok()
        });
    }

    /// GETs an API path and returns the JSON body, or `None` for a non-2xx answer.
    pub fn get(&self, path: &str) -> Option<Value> {
        ureq::get(&format!("http://{}{path}", self.web)).call().ok()?.into_json().ok()
    }

    pub fn health(&self) -> Value {
        self.get("/api/v1/health").unwrap_or_else(|| panic!("health failed\n{}", self.proc.tail(40)))
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        self.health()["counters"]["rejected"][reason].as_u64().unwrap_or_else(|| panic!("no counter {reason}"))
    }

    pub fn host(&self, name: &str) -> Option<Value> {
        self.get(&format!("/api/v1/hosts/{name}"))
    }
}

/// An agent process.
pub struct Agent {
    pub proc: Proc,
}

impl Agent {
    /// Starts an agent for `collectors` with host name `host`; `extra` is appended to
    /// its config file.
    pub fn start(dir: &Path, host: &str, collectors: &[&str], interval_secs: u64, extra: &str) -> Agent {
        let list: Vec<String> = collectors.iter().map(|c| format!("\"{c}\"")).collect();
        let config = dir.join(format!("agent-{host}.toml"));
        let text = format!(
            "collectors = [{}]\ncluster = \"{CLUSTER}\"\nkey = \"{KEY}\"\nhost = \"{host}\"\ninterval_secs = {interval_secs}\nreconnect_max_secs = 1\n{extra}",
            list.join(", ")
        );
        fs::write(&config, text).expect("writing agent config");
        let mut cmd = Command::new(bin("ganglion-agent"));
        cmd.args(["--log", "info", "--config"]).arg(&config);
        Agent { proc: Proc::spawn(&format!("agent {host}"), cmd, dir.join(format!("agent-{host}.log"))) }
    }
}

/// A TOML basic string holding `s`.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

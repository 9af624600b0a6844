//! Test harness for ganglion's end-to-end tests.
//!
//! It owns starting the real binaries (`ganglion`, `ganglion-agent`) and real peers on
//! loopback with free ports, stopping them on drop, and failing with everything needed
//! to understand a failure: the command, and the tail of every process's log. It does
//! not own any assertion about ganglion's behaviour; those are in `tests/`.
//!
//! Layout: [`bin`] builds and finds a binary, [`Proc`] is a child process with a log
//! file, [`Collector`] and [`Agent`] wrap the two binaries, [`Peer`] runs a real
//! Apache, MariaDB or memcached on a free port with private directories,
//! [`require`] fails with an install hint when a peer program is missing,
//! [`wait_for`] polls with a deadline, [`browser::Browser`] drives headless Chromium.

pub mod browser;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// `ganglion-agent --once` over `over_secs` with the config file `config`: one
/// collection printed as a table on stdout.
pub fn agent_once(config: &Path, over_secs: f64) -> std::process::Output {
    Command::new(bin("ganglion-agent"))
        .args(["--once", "--over-secs", &over_secs.to_string(), "--config"])
        .arg(config)
        .output()
        .expect("running ganglion-agent --once")
}

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
/// failure, never a silent pass. Daemons live in `/usr/sbin`, which is not on every
/// user's `PATH`, so that is searched too.
pub fn require(cmd: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
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
    /// Leads its own process group, and the whole group is killed on drop (servers
    /// that fork workers).
    group: bool,
}

impl Proc {
    pub fn spawn(name: &str, cmd: Command, log: PathBuf) -> Proc {
        Proc::spawn_inner(name, cmd, log, false)
    }

    /// Like [`spawn`](Self::spawn), in a new process group that is killed as a whole.
    pub fn spawn_group(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        cmd.process_group(0);
        Proc::spawn_inner(name, cmd, log, true)
    }

    fn spawn_inner(name: &str, mut cmd: Command, log: PathBuf, group: bool) -> Proc {
        let out = fs::OpenOptions::new().create(true).append(true).open(&log).expect("opening a log file");
        let err = out.try_clone().expect("cloning a log file handle");
        let command = format!("{cmd:?}");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).env("NO_COLOR", "1");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {command}: {e}"));
        Proc { name: name.to_owned(), command, log, child: Some(child), group }
    }

    /// Asks the process (its group, for a group leader) to stop with SIGTERM, waits
    /// up to `grace`, then kills the group.
    pub fn terminate(&mut self, grace: Duration) {
        let Some(mut c) = self.child.take() else { return };
        let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) else { return };
        let send = |sig| {
            let _ = if self.group {
                rustix::process::kill_process_group(pid, sig)
            } else {
                rustix::process::kill_process(pid, sig)
            };
        };
        send(rustix::process::Signal::Term);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(c.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Also reaps workers still around after their parent left.
        send(rustix::process::Signal::Kill);
        let _ = c.wait();
    }

    /// Sends a signal without waiting (SIGHUP to restart a server).
    pub fn notify(&self, sig: rustix::process::Signal) {
        if let Some(pid) = self.child.as_ref().and_then(|c| rustix::process::Pid::from_raw(c.id() as i32)) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends a signal and waits for the process to end.
    pub fn signal(&mut self, sig: rustix::process::Signal) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                let _ = if self.group {
                    rustix::process::kill_process_group(pid, sig)
                } else {
                    rustix::process::kill_process(pid, sig)
                };
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
        // The collector's files stay in the test's directory, one per collector, so
        // neither tests nor the collectors of one test share them.
        let data_dir = toml_string(&dir.join(format!("data-{}", web.replace([':', '.'], "_"))).to_string_lossy());
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
    /// Its config file, for `ganglion-agent send --config`.
    pub config: PathBuf,
    /// Its send socket, private to the test (`send_socket` in the config).
    pub socket: PathBuf,
}

impl Agent {
    /// Starts an agent for `collectors` with host name `host`; `extra` is appended to
    /// its config file. Its send socket is in `dir`, so agents of parallel tests do
    /// not compete for the default path.
    pub fn start(dir: &Path, host: &str, collectors: &[&str], interval_secs: u64, extra: &str) -> Agent {
        let list: Vec<String> = collectors.iter().map(|c| format!("\"{c}\"")).collect();
        let config = dir.join(format!("agent-{host}.toml"));
        let socket = dir.join(format!("agent-{host}.sock"));
        let text = format!(
            "collectors = [{}]\ncluster = \"{CLUSTER}\"\nkey = \"{KEY}\"\nhost = \"{host}\"\ninterval_secs = {interval_secs}\nreconnect_max_secs = 1\nsend_socket = \"{}\"\n{extra}",
            list.join(", "),
            socket.display()
        );
        fs::write(&config, text).expect("writing agent config");
        let mut cmd = Command::new(bin("ganglion-agent"));
        cmd.args(["--log", "info", "--config"]).arg(&config);
        Agent {
            proc: Proc::spawn(&format!("agent {host}"), cmd, dir.join(format!("agent-{host}.log"))),
            config,
            socket,
        }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.proc.log).unwrap_or_default()
    }
}

/// Which real server a [`Peer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    Apache,
    MariaDb,
    Memcached,
}

/// A real server (Debian's `apache2`, `mariadbd`, `memcached`) started by root on
/// 127.0.0.1 with a free port, its config and data in a private temporary
/// directory. It is stopped on drop (SIGTERM, then SIGKILL to its process group).
pub struct Peer {
    pub kind: PeerKind,
    pub port: u16,
    pub proc: Proc,
    /// MariaDB's Unix socket.
    pub socket: Option<PathBuf>,
    program: PathBuf,
    args: Vec<String>,
    starts: u32,
    dir: tempfile::TempDir,
}

/// The MariaDB monitoring user the harness creates, with the GRANT of docs/METRICS.md.
pub const MYSQL_USER: &str = "ganglion";
pub const MYSQL_PASSWORD: &str = "ganglion-test-password";
/// How long a peer may take to come up.
const PEER_START: Duration = Duration::from_secs(30);

impl Peer {
    /// Apache 2.4 with mod_status (`ExtendedStatus On`) at `/server-status` and a
    /// static `/index.html`; event MPM, workers run as `nobody`.
    pub fn apache() -> Peer {
        let program = require("apache2", "apache2");
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Workers run as nobody and must read the document root.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod of the peer directory");
        let d = dir.path().display().to_string();
        let port = free_port();
        fs::create_dir_all(dir.path().join("htdocs")).expect("creating htdocs");
        fs::write(dir.path().join("htdocs/index.html"), "<p>ganglion test page</p>\n").expect("writing index.html");
        let m = "/usr/lib/apache2/modules";
        let conf = format!(
            "ServerRoot {d}\n\
             LoadModule mpm_event_module {m}/mod_mpm_event.so\n\
             LoadModule authz_core_module {m}/mod_authz_core.so\n\
             LoadModule authz_host_module {m}/mod_authz_host.so\n\
             LoadModule status_module {m}/mod_status.so\n\
             LoadModule dir_module {m}/mod_dir.so\n\
             LoadModule mime_module {m}/mod_mime.so\n\
             TypesConfig /etc/mime.types\n\
             Listen 127.0.0.1:{port}\n\
             ServerName 127.0.0.1\n\
             User nobody\n\
             Group nogroup\n\
             PidFile {d}/httpd.pid\n\
             ErrorLog /dev/stderr\n\
             DefaultRuntimeDir {d}\n\
             DocumentRoot {d}/htdocs\n\
             ExtendedStatus On\n\
             <Location \"/server-status\">\n  SetHandler server-status\n  Require ip 127.0.0.1\n</Location>\n"
        );
        let conf_path = dir.path().join("httpd.conf");
        fs::write(&conf_path, conf).expect("writing httpd.conf");
        let args = vec!["-d".into(), d.clone(), "-f".into(), conf_path.display().to_string(), "-DFOREGROUND".into()];
        Peer::launch(PeerKind::Apache, program, args, port, None, dir)
    }

    /// MariaDB with a fresh data directory made by `mariadb-install-db`, TCP on a free
    /// port and a socket in the private directory, and the monitoring user
    /// [`MYSQL_USER`] with the documented GRANT.
    pub fn mariadb() -> Peer {
        Peer::mariadb_with(&["--skip-log-bin"])
    }

    /// Like [`mariadb`](Self::mariadb) with more `mariadbd` options (a binary log and
    /// a server id for a replication source, a server id for a replica); `{dir}` in an
    /// option is the peer's private directory.
    pub fn mariadb_with(options: &[&str]) -> Peer {
        let program = require("mariadbd", "mariadb-server");
        let install = require("mariadb-install-db", "mariadb-server");
        require("mariadb", "mariadb-client");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data");
        let log = dir.path().join("install-db.log");
        let mut cmd = Command::new(&install);
        cmd.args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()));
        let command = format!("{cmd:?}");
        let out = fs::File::create(&log).expect("creating the install-db log");
        let status = cmd
            .stdout(out.try_clone().expect("cloning a log handle"))
            .stderr(out)
            .status()
            .unwrap_or_else(|e| panic!("running {command}: {e}"));
        assert!(status.success(), "{command} failed ({status}):\n{}", fs::read_to_string(&log).unwrap_or_default());
        let port = free_port();
        let socket = dir.path().join("mysqld.sock");
        let args = vec![
            "--no-defaults".into(),
            format!("--datadir={}", data.display()),
            format!("--socket={}", socket.display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--user=root".into(),
            format!("--pid-file={}", dir.path().join("mysqld.pid").display()),
            "--skip-name-resolve".into(),
            "--innodb-buffer-pool-size=16M".into(),
        ];
        let mut args = args;
        args.extend(options.iter().map(|o| o.replace("{dir}", &dir.path().display().to_string())));
        let peer = Peer::launch(PeerKind::MariaDb, program, args, port, Some(socket), dir);
        peer.sql(&format!(
            "CREATE USER '{MYSQL_USER}'@'localhost' IDENTIFIED BY '{MYSQL_PASSWORD}'; \
             GRANT PROCESS, SLAVE MONITOR ON *.* TO '{MYSQL_USER}'@'localhost';"
        ));
        peer
    }

    /// memcached with 16 MiB of memory, TCP only.
    pub fn memcached() -> Peer {
        let program = require("memcached", "memcached");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let args = ["-u", "nobody", "-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-m", "16"]
            .map(str::to_owned)
            .to_vec();
        Peer::launch(PeerKind::Memcached, program, args, port, None, dir)
    }

    fn launch(
        kind: PeerKind,
        program: PathBuf,
        args: Vec<String>,
        port: u16,
        socket: Option<PathBuf>,
        dir: tempfile::TempDir,
    ) -> Peer {
        let placeholder = Proc::spawn("placeholder", Command::new("true"), dir.path().join("placeholder.log"));
        let mut p = Peer { kind, port, proc: placeholder, socket, program, args, starts: 0, dir };
        p.start();
        p
    }

    /// The private directory (config, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, after [`stop`](Self::stop)) on the same port and
    /// directory and waits until it answers.
    pub fn start(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        let log = self.dir.path().join(format!("{:?}-{}.log", self.kind, self.starts).to_lowercase());
        self.proc = Proc::spawn_group(&format!("{:?}", self.kind).to_lowercase(), cmd, log);
        let what = format!("{:?} on {}", self.kind, self.addr());
        let proc = &self.proc;
        wait_for(PEER_START, &what, &[proc], || self.answers().then_some(()));
    }

    /// Stops the server and waits until it is gone.
    pub fn stop(&mut self) {
        self.proc.terminate(Duration::from_secs(20));
    }

    /// Whether the server answers its own protocol now.
    fn answers(&self) -> bool {
        match self.kind {
            PeerKind::Apache => ureq::get(&format!("http://{}/server-status?auto", self.addr()))
                .timeout(Duration::from_secs(2))
                .call()
                .is_ok(),
            PeerKind::MariaDb => self.try_sql("SELECT 1").is_ok_and(|o| o.trim() == "1"),
            PeerKind::Memcached => self.memcached_text("version\r\n").is_ok_and(|a| a.starts_with("VERSION")),
        }
    }

    /// Runs statements as MariaDB's root through the socket with the `mariadb`
    /// client (`-B -N`: tab-separated, no header) and returns what it printed.
    ///
    /// # Panics
    /// When the client fails, with its output and the server's log.
    pub fn sql(&self, statements: &str) -> String {
        self.try_sql(statements)
            .unwrap_or_else(|e| panic!("mariadb client failed on {statements:?}: {e}\n{}", self.proc.tail(30)))
    }

    fn try_sql(&self, statements: &str) -> Result<String, String> {
        let socket = self.socket.as_ref().expect("sql is for a MariaDB peer");
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-B", "-N", "--connect-timeout=5"])
            .arg(format!("--socket={}", socket.display()))
            .args(["-e", statements])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `mysqladmin extended-status` as root, as variable → value.
    pub fn extended_status(&self) -> std::collections::HashMap<String, String> {
        let socket = self.socket.as_ref().expect("extended_status is for a MariaDB peer");
        let out = Command::new("mysqladmin")
            .args(["--no-defaults", "-uroot"])
            .arg(format!("--socket={}", socket.display()))
            .arg("extended-status")
            .output()
            .expect("running mysqladmin");
        assert!(out.status.success(), "mysqladmin failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split('|').map(str::trim).collect();
                (cols.len() == 4 && !cols[1].is_empty() && cols[1] != "Variable_name")
                    .then(|| (cols[1].to_owned(), cols[2].to_owned()))
            })
            .collect()
    }

    /// Sends raw memcached text protocol and reads the answer to every command in it
    /// (memcached drops pipelined commands it has not run when the client leaves),
    /// within 5 s.
    ///
    /// # Errors
    /// When the server cannot be reached or does not finish its answer.
    pub fn memcached_text(&self, request: &str) -> std::io::Result<String> {
        let mut commands = 0;
        let mut lines = request.split("\r\n").filter(|l| !l.is_empty());
        while let Some(l) = lines.next() {
            commands += 1;
            if ["set ", "add ", "replace ", "append ", "prepend ", "cas "].iter().any(|c| l.starts_with(c)) {
                lines.next(); // the data block
            }
        }
        let mut s =
            TcpStream::connect_timeout(&self.addr().parse().expect("a socket address"), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        let answered = |a: &[u8]| {
            String::from_utf8_lossy(a)
                .split("\r\n")
                .filter(|l| {
                    matches!(*l, "END" | "STORED" | "NOT_STORED" | "EXISTS" | "NOT_FOUND" | "DELETED")
                        || l.starts_with("VERSION")
                        || l.contains("ERROR")
                })
                .count()
        };
        while answered(&answer) < commands {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
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

/// Reads a Maildir with Python's `email` package (a real MIME parser) and prints one
/// JSON object per message: headers, the decoded text and HTML parts, inline images.
const MAILDIR_TO_JSON: &str = r#"
import email, email.policy, json, os, sys
out = []
d = os.path.join(sys.argv[1], "new")
for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
    with open(os.path.join(d, name), "rb") as f:
        m = email.message_from_binary_file(f, policy=email.policy.default)
    text = m.get_body(preferencelist=("plain",))
    html = m.get_body(preferencelist=("html",))
    images = [p.get_content_type() for p in m.walk() if p.get_content_maintype() == "image"]
    out.append({
        "file": name,
        "to": str(m["To"]), "from": str(m["From"]), "subject": str(m["Subject"]),
        "message_id": str(m["Message-ID"]), "rcpt": str(m["X-RcptTo"]),
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
        "images": images,
    })
print(json.dumps(out))
"#;

/// A real SMTP server on loopback: Debian's `aiosmtpd` (python3-aiosmtpd) with its
/// Maildir handler, so every accepted message is a file.
pub struct SmtpSink {
    pub proc: Proc,
    pub port: u16,
    pub maildir: PathBuf,
    dir: PathBuf,
    starts: u32,
}

impl SmtpSink {
    pub fn start(dir: &Path) -> SmtpSink {
        require("aiosmtpd", "python3-aiosmtpd");
        let mut s = SmtpSink {
            proc: Proc::spawn("smtp-unused", Command::new("true"), dir.join("smtp-unused.log")),
            port: free_port(),
            maildir: dir.join("maildir"),
            dir: dir.to_owned(),
            starts: 0,
        };
        s.restart();
        s
    }

    /// Starts (again) on the same port and Maildir.
    pub fn restart(&mut self) {
        self.starts += 1;
        // The Debian script, run by the system Python that has the module (a `python3`
        // earlier on PATH may be another installation without it).
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args(["/usr/bin/aiosmtpd", "-n", "-l", &format!("127.0.0.1:{}", self.port)])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir);
        self.proc = Proc::spawn("aiosmtpd", cmd, self.dir.join(format!("smtp-{}.log", self.starts)));
        let port = self.port;
        wait_for(Duration::from_secs(15), "aiosmtpd to listen", &[&self.proc], || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Every message received so far, parsed (see [`MAILDIR_TO_JSON`]).
    pub fn messages(&self) -> Vec<Value> {
        let out = Command::new("/usr/bin/python3")
            .args(["-c", MAILDIR_TO_JSON])
            .arg(&self.maildir)
            .output()
            .expect("running /usr/bin/python3 to read the Maildir");
        assert!(out.status.success(), "reading the Maildir failed: {}", String::from_utf8_lossy(&out.stderr));
        match serde_json::from_slice(&out.stdout) {
            Ok(Value::Array(a)) => a,
            other => panic!("unexpected Maildir listing {other:?}"),
        }
    }

    /// Messages whose `To` contains `to`.
    pub fn messages_to(&self, to: &str) -> Vec<Value> {
        self.messages().into_iter().filter(|m| m["to"].as_str().is_some_and(|t| t.contains(to))).collect()
    }
}

/// One request a [`WebhookReceiver`] got: request line, headers (lower-case names), body.
pub type Request = (String, Vec<(String, String)>, String);

/// A small HTTP receiver for webhook tests: answers every request 200 and keeps the
/// requests.
pub struct WebhookReceiver {
    pub addr: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl WebhookReceiver {
    pub fn start() -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the webhook receiver");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address").to_string();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (reqs, halt) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                if let Some(req) = read_request(&mut conn) {
                    reqs.lock().unwrap_or_else(|e| e.into_inner()).push(req);
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                }
            }
        });
        WebhookReceiver { addr, requests, stop }
    }

    /// (request line, headers with lower-case names, body) of each request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((first, headers, String::from_utf8_lossy(&body).into_owned()))
}

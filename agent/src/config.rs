//! The agent's configuration file.
//!
//! Two stages, as in the collector: [`RawConfig`] is what serde reads (unknown keys are
//! errors, so a typo is reported instead of silently ignored) and [`AgentConfig`] is
//! the checked result. [`AgentConfig::from_raw`] reports every problem at once.
//!
//! Application sources (`[apache]`, `[mysql]`, `[memcached]`, `[[exec]]`) are on when
//! their section is present and cost nothing when it is not. Every key is listed with
//! its default in `docs/CONFIG.md` (a test below checks the example there parses).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ganglion_proto::name::{self, NameKind};
use serde::Deserialize;

/// The file as written by the operator. Every field has a default except the ones that
/// say who the agent is and where it reports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Collectors to report to, `host:port`. With two or more, every batch goes to each
    /// of them (mirroring), so losing one collector loses no data.
    pub collectors: Vec<String>,
    /// Cluster this host belongs to; the collector looks up the key by this name.
    pub cluster: String,
    /// Shared secret of the cluster (HMAC-SHA256 key). Either this or `key_file`.
    pub key: Option<String>,
    /// File holding the shared secret (first line), so the config can live in version
    /// control without it.
    pub key_file: Option<PathBuf>,
    /// Host name reported to the collector. Default: the kernel's host name.
    pub host: Option<String>,
    /// Seconds between collections. Default 15.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Operator tags sent with the host facts (`location`, `role`, …).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub spool: RawSpool,
    /// Block device name prefixes not reported. Default: loop, ram, zram, fd, sr.
    pub skip_devices: Option<Vec<String>>,
    /// Longest wait between reconnect attempts. Default 30.
    #[serde(default = "default_backoff_max")]
    pub reconnect_max_secs: u64,
    /// Longest time between two acks a collector is asked for. Default 60; 0 asks for
    /// one per batch.
    #[serde(default = "default_ack_interval")]
    pub ack_interval_secs: u64,
    /// Unix socket on which `ganglion-agent send` hands custom metrics to the running
    /// agent. Default `/run/ganglion-agent/send.sock`; `""` turns it off.
    pub send_socket: Option<PathBuf>,
    /// Apache mod_status source; on when present.
    pub apache: Option<RawApache>,
    /// MySQL/MariaDB source; on when present.
    pub mysql: Option<RawMysql>,
    /// memcached source; on when present.
    pub memcached: Option<RawMemcached>,
    /// Exec plugins, each with its own interval and timeout.
    #[serde(default)]
    pub exec: Vec<RawExec>,
}

/// `[apache]`: the `?auto` page of mod_status.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApache {
    /// Status page URL (plain HTTP). Default `http://127.0.0.1/server-status?auto`.
    #[serde(default = "default_apache_url")]
    pub url: String,
    /// The configured MaxRequestWorkers, for `apache_max_workers` and `apache_busy_pct`.
    /// Default: the scoreboard's length, which is ServerLimit × ThreadsPerChild (the
    /// hard limit, equal to MaxRequestWorkers only when those are set to match).
    pub max_workers: Option<u32>,
    /// Longest one status request may take. Default 5 s (at most the interval).
    pub timeout_secs: Option<u64>,
    /// Seconds between two collections of this source: a whole multiple of the agent's
    /// `interval_secs`. Default: every interval. (Ganglia's own modules poll Apache
    /// every 30 s and MySQL every 60 s.)
    pub interval_secs: Option<u64>,
}

/// `[mysql]`: a client connection to MySQL or MariaDB with a read-only user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMysql {
    /// TCP host; without it the agent uses `socket`.
    pub host: Option<String>,
    /// TCP port with `host`. Default 3306.
    pub port: Option<u16>,
    /// Unix socket. Default `/run/mysqld/mysqld.sock` (Debian's) when `host` is not set.
    pub socket: Option<PathBuf>,
    /// Monitoring user. Default `ganglion`.
    #[serde(default = "default_mysql_user")]
    pub user: String,
    /// Its password; or `password_file`; none for socket authentication.
    pub password: Option<String>,
    /// File holding the password (first line), so the config can be shared.
    pub password_file: Option<PathBuf>,
    /// Longest one collection may take, login included. Default 5 s (at most the
    /// interval).
    pub timeout_secs: Option<u64>,
    /// Seconds between two collections, as [`RawApache::interval_secs`].
    pub interval_secs: Option<u64>,
}

/// `[memcached]`: the text protocol's `stats`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemcached {
    /// `host:port`. Default `127.0.0.1:11211`.
    #[serde(default = "default_memcached_address")]
    pub address: String,
    /// Longest connect plus `stats` may take. Default 5 s (at most the interval).
    pub timeout_secs: Option<u64>,
    /// Seconds between two collections, as [`RawApache::interval_secs`].
    pub interval_secs: Option<u64>,
}

/// `[[exec]]`: a program run on its own interval whose output carries metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExec {
    /// Plugin name, in metric names `exec_<name>_…`: 1–32 of `a-z 0-9 _`.
    pub name: String,
    /// Program (absolute path) and arguments; run without a shell.
    pub command: Vec<String>,
    /// Seconds between runs. Default: the agent's `interval_secs`.
    pub interval_secs: Option<u64>,
    /// Seconds a run may take before its process group is killed. Default: the
    /// smaller of 10 and the plugin's interval.
    pub timeout_secs: Option<u64>,
    /// How the output is read. Default `auto`.
    #[serde(default)]
    pub format: ExecFormat,
}

/// How an exec plugin's output is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecFormat {
    /// `nagios` when the first line has a `|`, otherwise `lines`.
    #[default]
    Auto,
    /// A Nagios plugin: status text, `|`, performance data; the exit code is the state.
    Nagios,
    /// `name value [unit]`, Munin's `name.value V` or collectd's `PUTVAL id N:V` lines.
    Lines,
}

/// Where unacknowledged batches wait.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    /// Bytes of batches kept in memory before they spill to disk. Default 1 MiB.
    #[serde(default = "default_spool_memory")]
    pub memory_bytes: u64,
    /// Directory for spilled batches. Default: none (memory only).
    pub dir: Option<PathBuf>,
    /// Bytes of batches kept on disk; past it the oldest are dropped and counted.
    /// Default 64 MiB.
    #[serde(default = "default_spool_disk")]
    pub disk_bytes: u64,
}

impl Default for RawSpool {
    fn default() -> Self {
        RawSpool { memory_bytes: default_spool_memory(), dir: None, disk_bytes: default_spool_disk() }
    }
}

fn default_interval() -> u64 {
    15
}
fn default_backoff_max() -> u64 {
    30
}
fn default_ack_interval() -> u64 {
    60
}
fn default_spool_memory() -> u64 {
    1024 * 1024
}
fn default_spool_disk() -> u64 {
    64 * 1024 * 1024
}
fn default_apache_url() -> String {
    "http://127.0.0.1/server-status?auto".to_owned()
}
fn default_mysql_user() -> String {
    "ganglion".to_owned()
}
fn default_memcached_address() -> String {
    "127.0.0.1:11211".to_owned()
}

/// Where the send socket is when the config does not say.
pub const DEFAULT_SEND_SOCKET: &str = "/run/ganglion-agent/send.sock";
/// Debian's MySQL/MariaDB socket.
pub const DEFAULT_MYSQL_SOCKET: &str = "/run/mysqld/mysqld.sock";
/// Source timeout when the config does not say (and the interval is longer).
const DEFAULT_SOURCE_TIMEOUT_SECS: u64 = 5;
/// Exec plugin timeout when the config does not say (and its interval is longer).
const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 10;

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub collectors: Vec<String>,
    pub cluster: String,
    pub key: Vec<u8>,
    pub host: String,
    pub interval: Duration,
    pub tags: BTreeMap<String, String>,
    pub spool_memory_bytes: u64,
    pub spool_dir: Option<PathBuf>,
    pub spool_disk_bytes: u64,
    pub skip_devices: Vec<String>,
    pub reconnect_max: Duration,
    /// Longest time between two acks asked of a collector (see `send`).
    pub ack_interval: Duration,
    /// Delay before the first collection; `None` picks a random one within one interval
    /// so a fleet that boots together does not report in lock step.
    pub first_delay: Option<Duration>,
    /// Socket for `ganglion-agent send`; `None` when turned off.
    pub send_socket: Option<PathBuf>,
    pub apache: Option<ApacheConfig>,
    pub mysql: Option<MysqlConfig>,
    pub memcached: Option<MemcachedConfig>,
    pub exec: Vec<ExecConfig>,
}

/// A checked `[apache]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApacheConfig {
    pub url: String,
    pub max_workers: Option<u32>,
    pub timeout: Duration,
    /// Collections of the agent per collection of this source (1: every one).
    pub every: u32,
}

/// Where the MySQL server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MysqlTarget {
    Tcp { host: String, port: u16 },
    Socket(PathBuf),
}

/// A checked `[mysql]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlConfig {
    pub target: MysqlTarget,
    pub user: String,
    pub password: Option<Secret>,
    pub timeout: Duration,
    /// Collections of the agent per collection of this source (1: every one).
    pub every: u32,
}

/// A password, kept out of `Debug` output so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A checked `[memcached]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcachedConfig {
    pub address: String,
    pub timeout: Duration,
    /// Collections of the agent per collection of this source (1: every one).
    pub every: u32,
}

/// A checked `[[exec]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecConfig {
    pub name: String,
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub format: ExecFormat,
}

impl ExecConfig {
    /// The plugin as a source: `exec_<name>`, the prefix of its metrics, its group and
    /// its name in the log.
    pub fn source(&self) -> String {
        format!("exec_{}", self.name)
    }
}

/// Problems found in a configuration, all of them.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigError(pub Vec<String>);

impl AgentConfig {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`ConfigError`] with one line per problem, TOML syntax errors with line and column.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
        let raw: RawConfig =
            toml::from_str(&text).map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
        AgentConfig::from_raw(raw)
    }

    /// Checks a raw configuration.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem found.
    pub fn from_raw(raw: RawConfig) -> Result<AgentConfig, ConfigError> {
        let mut problems = Vec::new();
        if raw.collectors.is_empty() {
            problems.push("collectors: at least one collector address is needed".to_owned());
        }
        for c in &raw.collectors {
            if c.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                problems.push(format!("collectors: {} is not host:port", name::escaped(c)));
            }
        }
        if let Err(e) = name::validate(NameKind::Cluster, &raw.cluster) {
            problems.push(format!("cluster: {e}"));
        }
        let key = match (&raw.key, &raw.key_file) {
            (Some(k), None) => k.as_bytes().to_vec(),
            (None, Some(f)) => match std::fs::read_to_string(f) {
                Ok(text) => text.lines().next().unwrap_or("").trim().as_bytes().to_vec(),
                Err(e) => {
                    problems.push(format!("key_file: {}: {e}", f.display()));
                    Vec::new()
                }
            },
            (Some(_), Some(_)) => {
                problems.push("key and key_file: give only one".to_owned());
                Vec::new()
            }
            (None, None) => {
                problems.push("key: the cluster's shared key is needed (key or key_file)".to_owned());
                Vec::new()
            }
        };
        if !key.is_empty() && key.len() < 16 {
            problems.push("key: use at least 16 characters".to_owned());
        }
        let host = raw.host.clone().unwrap_or_else(default_host);
        if let Err(e) = name::validate(NameKind::Host, &host) {
            problems.push(format!("host: {e}"));
        }
        if raw.interval_secs == 0 || raw.interval_secs > 3600 {
            problems.push("interval_secs: must be between 1 and 3600".to_owned());
        }
        if raw.ack_interval_secs > 3600 {
            problems.push("ack_interval_secs: must be between 0 and 3600".to_owned());
        }
        if raw.spool.memory_bytes < 4096 {
            problems.push("spool.memory_bytes: must be at least 4096".to_owned());
        }
        let interval = raw.interval_secs.clamp(1, 3600);
        let apache = raw.apache.as_ref().map(|a| check_apache(a, interval, &mut problems));
        let mysql = raw.mysql.as_ref().map(|m| check_mysql(m, interval, &mut problems));
        let memcached = raw.memcached.as_ref().map(|m| check_memcached(m, interval, &mut problems));
        let exec = check_exec(&raw.exec, interval, &mut problems);
        let send_socket = match &raw.send_socket {
            None => Some(PathBuf::from(DEFAULT_SEND_SOCKET)),
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) if p.is_relative() => {
                problems.push(format!("send_socket: {} must be an absolute path", p.display()));
                None
            }
            Some(p) => Some(p.clone()),
        };
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(AgentConfig {
            collectors: raw.collectors,
            cluster: raw.cluster,
            key,
            host,
            interval: Duration::from_secs(raw.interval_secs),
            tags: raw.tags,
            spool_memory_bytes: raw.spool.memory_bytes,
            spool_dir: raw.spool.dir,
            spool_disk_bytes: raw.spool.disk_bytes,
            skip_devices: raw.skip_devices.unwrap_or_else(|| crate::collect::HostConfig::default().skip_devices),
            reconnect_max: Duration::from_secs(raw.reconnect_max_secs.max(1)),
            ack_interval: Duration::from_secs(raw.ack_interval_secs),
            first_delay: None,
            send_socket,
            apache,
            mysql,
            memcached,
            exec,
        })
    }
}

/// A source's timeout: the configured one, checked against the interval, or the
/// default capped at the interval (a collection must end before the next is due).
fn source_timeout(key: &str, given: Option<u64>, default: u64, interval: u64, problems: &mut Vec<String>) -> Duration {
    match given {
        Some(t) if t == 0 || t > interval => {
            problems.push(format!("{key}: must be between 1 and the interval ({interval} s)"));
            Duration::from_secs(1)
        }
        Some(t) => Duration::from_secs(t),
        None => Duration::from_secs(default.min(interval)),
    }
}

/// How many of the agent's collections make one of a source's: its `interval_secs`
/// must be a whole multiple of the agent's, so it is read on a collection and its
/// values leave in that collection's batch.
fn source_every(key: &str, given: Option<u64>, interval: u64, problems: &mut Vec<String>) -> u32 {
    match given {
        None => 1,
        Some(s) if s == 0 || s > 3600 || s % interval != 0 => {
            problems.push(format!("{key}: must be a multiple of interval_secs ({interval} s) up to 3600"));
            1
        }
        Some(s) => u32::try_from(s / interval).unwrap_or(1),
    }
}

/// An application source's `timeout_secs` and `interval_secs`, checked: its timeout
/// and how many of the agent's collections make one of its own.
fn source_schedule(
    section: &str,
    timeout_secs: Option<u64>,
    interval_secs: Option<u64>,
    interval: u64,
    problems: &mut Vec<String>,
) -> (Duration, u32) {
    let key = |k: &str| format!("{section}.{k}");
    let timeout = source_timeout(&key("timeout_secs"), timeout_secs, DEFAULT_SOURCE_TIMEOUT_SECS, interval, problems);
    (timeout, source_every(&key("interval_secs"), interval_secs, interval, problems))
}

fn check_apache(raw: &RawApache, interval: u64, problems: &mut Vec<String>) -> ApacheConfig {
    if !raw.url.starts_with("http://") {
        problems.push(format!("apache.url: {} is not an http:// URL", name::escaped(&raw.url)));
    }
    if raw.max_workers == Some(0) {
        problems.push("apache.max_workers: must be at least 1".to_owned());
    }
    let (timeout, every) = source_schedule("apache", raw.timeout_secs, raw.interval_secs, interval, problems);
    ApacheConfig { url: raw.url.clone(), max_workers: raw.max_workers, timeout, every }
}

fn check_mysql(raw: &RawMysql, interval: u64, problems: &mut Vec<String>) -> MysqlConfig {
    let target = match (&raw.host, &raw.socket) {
        (Some(_), Some(_)) => {
            problems.push("mysql: give host (TCP) or socket, not both".to_owned());
            MysqlTarget::Socket(PathBuf::new())
        }
        (Some(host), None) => MysqlTarget::Tcp { host: host.clone(), port: raw.port.unwrap_or(3306) },
        (None, socket) => {
            if raw.port.is_some() {
                problems.push("mysql.port: only with mysql.host".to_owned());
            }
            MysqlTarget::Socket(socket.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_MYSQL_SOCKET)))
        }
    };
    if raw.user.is_empty() {
        problems.push("mysql.user: must not be empty".to_owned());
    }
    let password = match (&raw.password, &raw.password_file) {
        (Some(p), None) => Some(Secret(p.clone())),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(text) => Some(Secret(text.lines().next().unwrap_or("").to_owned())),
            Err(e) => {
                problems.push(format!("mysql.password_file: {}: {e}", f.display()));
                None
            }
        },
        (Some(_), Some(_)) => {
            problems.push("mysql: give password or password_file, not both".to_owned());
            None
        }
        (None, None) => None,
    };
    let (timeout, every) = source_schedule("mysql", raw.timeout_secs, raw.interval_secs, interval, problems);
    MysqlConfig { target, user: raw.user.clone(), password, timeout, every }
}

fn check_memcached(raw: &RawMemcached, interval: u64, problems: &mut Vec<String>) -> MemcachedConfig {
    if raw.address.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
        problems.push(format!("memcached.address: {} is not host:port", name::escaped(&raw.address)));
    }
    let (timeout, every) = source_schedule("memcached", raw.timeout_secs, raw.interval_secs, interval, problems);
    MemcachedConfig { address: raw.address.clone(), timeout, every }
}

fn check_exec(raw: &[RawExec], interval: u64, problems: &mut Vec<String>) -> Vec<ExecConfig> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for e in raw {
        let key = format!("exec {}", name::escaped(&e.name));
        let good_name = !e.name.is_empty()
            && e.name.len() <= 32
            && e.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !good_name {
            problems.push(format!("{key}: name must be 1 to 32 of a-z 0-9 _"));
        } else if !seen.insert(e.name.clone()) {
            problems.push(format!("{key}: name used twice"));
        }
        match e.command.first() {
            None => problems.push(format!("{key}: command must name a program")),
            Some(p) if !Path::new(p).is_absolute() => {
                problems.push(format!("{key}: command {} must be an absolute path", name::escaped(p)));
            }
            Some(_) => {}
        }
        let every = e.interval_secs.unwrap_or(interval);
        if every == 0 || every > 86_400 {
            problems.push(format!("{key}: interval_secs must be between 1 and 86400"));
        }
        let every = every.clamp(1, 86_400);
        let timeout =
            source_timeout(&format!("{key}: timeout_secs"), e.timeout_secs, DEFAULT_EXEC_TIMEOUT_SECS, every, problems);
        out.push(ExecConfig {
            name: e.name.clone(),
            command: e.command.clone(),
            interval: Duration::from_secs(every),
            timeout,
            format: e.format,
        });
    }
    out
}

/// The kernel's host name, made acceptable as a ganglion host name.
pub fn default_host() -> String {
    let node = rustix::system::uname().nodename().to_string_lossy().into_owned();
    if name::validate(NameKind::Host, &node).is_ok() {
        node
    } else {
        name::sanitize(&node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError(vec![e.to_string()]))?;
        AgentConfig::from_raw(raw)
    }

    #[test]
    fn reads_minimal_file_with_defaults() {
        let c = parse("collectors = [\"10.0.0.1:8650\"]\ncluster = \"web\"\nkey = \"0123456789abcdef\"\n").unwrap();
        assert_eq!(c.interval, Duration::from_secs(15));
        assert_eq!(c.spool_memory_bytes, 1024 * 1024);
        assert!(c.spool_dir.is_none());
    }

    #[test]
    fn reports_every_problem_at_once() {
        let err = parse(
            "collectors = [\"nowhere\"]\ncluster = \"../x\"\nkey = \"short\"\ninterval_secs = 0\nhost = \"a b\"\n",
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 5, "{err}");
    }

    const MINIMAL: &str = "collectors = [\"10.0.0.1:8650\"]\ncluster = \"web\"\nkey = \"0123456789abcdef\"\n";

    #[test]
    fn application_sources_are_off_unless_configured() {
        let c = parse(MINIMAL).unwrap();
        assert!(c.apache.is_none() && c.mysql.is_none() && c.memcached.is_none() && c.exec.is_empty());
        assert_eq!(c.send_socket.as_deref(), Some(Path::new(DEFAULT_SEND_SOCKET)));
        let off = parse(&format!("{MINIMAL}send_socket = \"\"\n")).unwrap();
        assert!(off.send_socket.is_none());
    }

    #[test]
    fn application_sources_get_defaults() {
        let c = parse(&format!(
            "{MINIMAL}interval_secs = 3\n[apache]\n[mysql]\n[memcached]\n[[exec]]\nname = \"backup\"\ncommand = [\"/bin/true\"]\n"
        ))
        .unwrap();
        let a = c.apache.unwrap();
        assert_eq!(a.url, "http://127.0.0.1/server-status?auto");
        assert_eq!(a.timeout, Duration::from_secs(3), "capped at the interval");
        let m = c.mysql.unwrap();
        assert_eq!(m.target, MysqlTarget::Socket(PathBuf::from(DEFAULT_MYSQL_SOCKET)));
        assert_eq!(m.user, "ganglion");
        assert_eq!(c.memcached.unwrap().address, "127.0.0.1:11211");
        assert_eq!((a.every, m.every), (1, 1), "every interval");
        let e = &c.exec[0];
        assert_eq!(
            (e.interval, e.timeout, e.format),
            (Duration::from_secs(3), Duration::from_secs(3), ExecFormat::Auto)
        );
    }

    #[test]
    fn reports_every_application_source_problem_at_once() {
        let err = parse(&format!(
            "{MINIMAL}[apache]\nurl = \"https://x/\"\ntimeout_secs = 0\n[mysql]\nhost = \"db\"\nsocket = \"/s\"\n\
             [memcached]\naddress = \"nowhere\"\n[[exec]]\nname = \"Bad Name\"\ncommand = [\"relative\"]\n\
             [[exec]]\nname = \"x\"\ncommand = []\ntimeout_secs = 99\n"
        ))
        .unwrap_err();
        assert_eq!(err.0.len(), 8, "{err}");
    }

    #[test]
    fn a_source_interval_is_a_multiple_of_the_agents() {
        let c = parse(&format!(
            "{MINIMAL}[apache]\ninterval_secs = 30\n[mysql]\ninterval_secs = 60\n[memcached]\ninterval_secs = 15\n"
        ))
        .unwrap();
        assert_eq!((c.apache.unwrap().every, c.mysql.unwrap().every, c.memcached.unwrap().every), (2, 4, 1));
        let err = parse(&format!(
            "{MINIMAL}[apache]\ninterval_secs = 20\n[mysql]\ninterval_secs = 0\n[memcached]\ninterval_secs = 3615\n"
        ))
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(err.0[0].starts_with("apache.interval_secs: must be a multiple of interval_secs (15 s)"), "{err}");
    }

    #[test]
    fn password_stays_out_of_debug_output() {
        let c = parse(&format!("{MINIMAL}[mysql]\npassword = \"hunter2-secret\"\n")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn agent_example_in_config_docs_parses_and_lists_every_key() {
        let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIG.md")).unwrap();
        let agent = doc.split("## Agent").nth(1).expect("an Agent section in docs/CONFIG.md");
        let example = agent.split("```toml").nth(1).and_then(|s| s.split("```").next()).expect("a toml example");
        let raw: RawConfig = toml::from_str(example).unwrap_or_else(|e| panic!("docs/CONFIG.md agent example: {e}"));
        assert!(raw.apache.is_some() && raw.mysql.is_some() && raw.memcached.is_some() && !raw.exec.is_empty());
        for key in [
            "send_socket",
            "apache.url",
            "apache.max_workers",
            "apache.timeout_secs",
            "apache.interval_secs",
            "mysql.host",
            "mysql.port",
            "mysql.socket",
            "mysql.user",
            "mysql.password",
            "mysql.password_file",
            "mysql.timeout_secs",
            "mysql.interval_secs",
            "memcached.address",
            "memcached.timeout_secs",
            "memcached.interval_secs",
            "exec.name",
            "exec.command",
            "exec.interval_secs",
            "exec.timeout_secs",
            "exec.format",
        ] {
            assert!(agent.contains(&format!("| `{key}`")), "{key} is not in the agent table of docs/CONFIG.md");
        }
    }

    #[test]
    fn rejects_unknown_keys_with_position() {
        let err = parse("collectors = []\ncluster = \"c\"\nkey = \"k\"\nintervall = 3\n").unwrap_err().to_string();
        assert!(err.contains("intervall") && err.contains("line 4"), "{err}");
    }
}

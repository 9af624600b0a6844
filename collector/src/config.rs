//! The collector's configuration file.
//!
//! [`RawConfig`] is what serde reads, with unknown keys refused; [`Config::from_raw`]
//! checks it and returns every problem at once, each with the line and column it
//! comes from. [`Config::demo`] holds the embedded defaults `ganglion demo` runs on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ganglion_proto::name::{self, NameKind};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The file as the operator writes it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Directory for the collector's files (check states; storage). Default
    /// `/var/lib/ganglion`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub ingest: RawIngest,
    #[serde(default)]
    pub web: RawWeb,
    #[serde(default)]
    pub hosts: RawHosts,
    /// Clusters this collector accepts, each with its shared key.
    #[serde(default, rename = "cluster")]
    pub clusters: Vec<RawCluster>,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub checks: RawChecks,
    /// Check templates, used by services with `use = "name"`.
    #[serde(default, rename = "template")]
    pub templates: Vec<crate::engine::defs::RawService>,
    /// Service checks, attached to clusters and host-name patterns.
    #[serde(default, rename = "service")]
    pub services: Vec<crate::engine::defs::RawService>,
    /// Hosts without an agent, and parents of any host.
    #[serde(default, rename = "host")]
    pub hosts_defs: Vec<crate::engine::hosts::RawHost>,
    #[serde(default)]
    pub nsca: RawNsca,
    #[serde(default)]
    pub api: RawApi,
    /// Alerting: people, who gets what, timing, mail server, webhooks (`alerts::config`).
    #[serde(default, rename = "contact")]
    pub contacts: Vec<crate::alerts::config::RawContact>,
    #[serde(default, rename = "contactgroup")]
    pub contactgroups: Vec<crate::alerts::config::RawContactGroup>,
    #[serde(default, rename = "route")]
    pub routes: Vec<crate::alerts::config::RawRoute>,
    #[serde(default, rename = "escalation")]
    pub escalations: Vec<crate::alerts::config::RawEscalation>,
    #[serde(default)]
    pub alerts: crate::alerts::config::RawAlerts,
    pub smtp: Option<crate::alerts::config::RawSmtp>,
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<crate::alerts::config::RawWebhook>,
}

/// The NSCA listener for passive results from `send_nsca` (off unless `listen` is set).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNsca {
    /// Address to accept `send_nsca` on, e.g. `127.0.0.1:5667`. No listener when absent.
    pub listen: Option<Spanned<String>>,
    /// NSCA encryption method number (`decryption_method` of nsca.cfg; the client's
    /// `encryption_method`). Default 1 (XOR), as Debian's stock configurations.
    #[serde(default = "default_nsca_method")]
    pub method: u8,
    /// The shared password. Either this or `password_file`; neither means none.
    pub password: Option<String>,
    /// File whose first line (without its line end) is the password.
    pub password_file: Option<PathBuf>,
    /// Packets are refused once their connection is older than this; 0 accepts any
    /// age, as NSCA 2.10 does. Default 30.
    #[serde(default = "default_max_packet_age")]
    pub max_packet_age_secs: u32,
    /// Connections served at once. Default 1024.
    #[serde(default = "default_nsca_connections")]
    pub max_connections: usize,
}

impl Default for RawNsca {
    fn default() -> Self {
        toml::from_str("").expect("every [nsca] key has a default")
    }
}
fn default_nsca_method() -> u8 {
    1
}
fn default_max_packet_age() -> u32 {
    ganglion_checks::nsca::DEFAULT_MAX_PACKET_AGE_SECS
}
fn default_nsca_connections() -> usize {
    1024
}

/// The HTTP API's write access.
#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// Token that write requests (results, acks, downtime, comments, commands) send as
    /// `Authorization: Bearer <token>`; at least 16 characters. Without one, writes are
    /// refused.
    pub admin_token: Option<String>,
    /// File whose first line is the admin token, so the config can be kept in version
    /// control.
    pub admin_token_file: Option<PathBuf>,
}

/// Round-robin storage of every sample (files under `data_dir/store`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// When the journal is synced to disk: `interval` (group commit every
    /// `fsync_interval_ms`), `always` (before every acknowledgement) or `never`
    /// (acknowledged data survives a process crash, not a power cut). Default `interval`.
    #[serde(default = "default_fsync")]
    pub fsync: String,
    /// Group commit period. Default 1000.
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval_ms: u64,
    /// Every series is written to its file once per this period, spread over it.
    /// Default 3600.
    #[serde(default = "default_flush_interval")]
    pub flush_interval_secs: u64,
    /// Unflushed samples kept in memory before the flusher hurries. Default 256 MiB.
    #[serde(default = "default_unflushed")]
    pub max_unflushed_bytes: u64,
    /// Seconds per primary data point of new series. Default 15 (the agent interval).
    #[serde(default = "default_step")]
    pub step_secs: u64,
    /// Seconds without a sample after which an interval is unknown. Default 120.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Archives of new series, in rrdtool syntax (`RRA:AVERAGE:0.5:1:5760`). Default:
    /// Ganglia's set for `step_secs` (a day at full resolution, 1-minute rows for two
    /// weeks, 10-minute rows for a year), each as AVERAGE and MAX.
    pub archives: Option<Vec<Spanned<String>>>,
    /// Series of a host forgotten after `host_expire` are deleted this much later
    /// (if the host has not come back). Default 604800 (a week).
    #[serde(default = "default_expire_grace")]
    pub expire_grace_secs: u64,
    /// `[[storage.rule]]`: step, heartbeat and archives by cluster, host and metric
    /// pattern; the first rule matching a new series decides (a series keeps the
    /// definition it was created with).
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RawRule>>,
}

/// One `[[storage.rule]]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Pattern on the cluster name (`*` any run of characters, `?` one). Default: any.
    pub cluster: Option<Spanned<String>>,
    /// Pattern on the host name. Default: any.
    pub host: Option<Spanned<String>>,
    /// Pattern on the metric name. Default: any.
    pub metric: Option<Spanned<String>>,
    /// Default: `storage.step_secs`.
    pub step_secs: Option<Spanned<u64>>,
    /// Default: `storage.heartbeat_secs`.
    pub heartbeat_secs: Option<Spanned<u64>>,
    /// Default: `storage.archives`, or Ganglia's set for this rule's `step_secs` when
    /// `storage.archives` is not given.
    pub archives: Option<Vec<Spanned<String>>>,
}

impl Default for RawStorage {
    fn default() -> Self {
        toml::from_str("").expect("every [storage] key has a default")
    }
}
fn default_fsync() -> String {
    "interval".to_owned()
}
fn default_fsync_interval() -> u64 {
    1000
}
fn default_flush_interval() -> u64 {
    3600
}
fn default_unflushed() -> u64 {
    256 << 20
}
fn default_step() -> u64 {
    15
}
fn default_heartbeat() -> u64 {
    120
}
fn default_expire_grace() -> u64 {
    7 * 86_400
}

/// The checks engine.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawChecks {
    /// Built-in service checks on every host (CPU steal, disk, memory, …). Default true.
    #[serde(default = "yes")]
    pub default_pack: bool,
    /// Where relative plugin names are found. Default `/usr/lib/nagios/plugins`.
    #[serde(default = "default_plugin_dir")]
    pub plugin_dir: PathBuf,
    /// Plugins running at once. Default 8.
    #[serde(default = "default_max_plugins")]
    pub max_concurrent_plugins: usize,
    /// Deadline of a plugin run unless the service sets `timeout_secs`. Default 10.
    #[serde(default = "default_plugin_timeout")]
    pub plugin_timeout_secs: u64,
    /// State of a check whose plugin timed out (`critical` as Nagios, or `unknown`, …).
    #[serde(default = "default_timeout_state")]
    pub timeout_state: String,
    /// Attempts before a problem is HARD, unless a service says otherwise. Default 3.
    #[serde(default = "default_attempts")]
    pub max_check_attempts: u32,
    /// Seconds between checks in OK and HARD states. Default 60.
    #[serde(default = "default_check_interval")]
    pub check_interval_secs: u64,
    /// Seconds between checks of a SOFT problem. Default 15.
    #[serde(default = "default_retry_interval")]
    pub retry_interval_secs: u64,
    /// Nagios flap detection on checks that do not say otherwise. Default true.
    #[serde(default = "yes")]
    pub flap_detection: bool,
    /// Flapping stops at or below this percent state change. Default 20.
    #[serde(default = "default_low_flap")]
    pub low_flap_threshold: f64,
    /// Flapping starts at or above this percent state change. Default 30.
    #[serde(default = "default_high_flap")]
    pub high_flap_threshold: f64,
    /// Seconds between host-check results while a host's liveness does not change (a
    /// change is applied within a second). Default 60.
    #[serde(default = "default_check_interval")]
    pub host_check_interval_secs: u64,
}

impl Default for RawChecks {
    fn default() -> Self {
        toml::from_str("").expect("every [checks] key has a default")
    }
}
fn yes() -> bool {
    true
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/ganglion")
}
fn default_plugin_dir() -> PathBuf {
    PathBuf::from("/usr/lib/nagios/plugins")
}
fn default_max_plugins() -> usize {
    8
}
fn default_plugin_timeout() -> u64 {
    10
}
fn default_timeout_state() -> String {
    "critical".to_owned()
}
fn default_attempts() -> u32 {
    3
}
fn default_check_interval() -> u64 {
    60
}
fn default_retry_interval() -> u64 {
    15
}
fn default_low_flap() -> f64 {
    20.0
}
fn default_high_flap() -> f64 {
    30.0
}

/// The agent listener.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    /// Address agents connect to. Default `0.0.0.0:8650`.
    #[serde(default = "default_ingest")]
    pub listen: Spanned<String>,
    /// Largest frame accepted, in bytes. Default 1 MiB.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// Agent connections served at once; more wait in the kernel's backlog.
    /// Default 20000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A hello whose clock differs from ours by more is refused as stale. Default 300.
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: u64,
    /// A batch whose samples are older than this is acknowledged but discarded.
    /// Default 30 days.
    #[serde(default = "default_max_age")]
    pub max_sample_age_secs: u64,
}

/// The HTTP server (API and dashboard).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    /// Default `127.0.0.1:8080`.
    #[serde(default = "default_web")]
    pub listen: Spanned<String>,
    /// Seconds between the dashboard pages' refreshes; 0 = off. Default 60.
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
    /// Read-only pages open without signing in. Default true.
    #[serde(default = "default_true")]
    pub public_read: bool,
    /// How long a dashboard sign-in lasts. Default 43200 (12 h).
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// Mark the session cookie `Secure` (dashboard behind HTTPS). Default false.
    #[serde(default)]
    pub secure_cookies: bool,
    /// Memory for rendered graphs kept until a series they show gains a row (like
    /// `rrdtool graph --lazy`), least recently used out first; 0 = off. Default
    /// 16777216 (16 MiB).
    #[serde(default = "default_graph_cache_bytes")]
    pub graph_cache_bytes: usize,
    /// `[[web.admin]]`: accounts that may sign in and act (ack, downtime, recheck).
    #[serde(default)]
    pub admin: Vec<RawAdmin>,
}

/// One `[[web.admin]]` account.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub user: String,
    /// argon2 PHC string, from `ganglion hash-password`.
    pub password_hash: String,
}
fn default_refresh() -> u64 {
    60
}
fn default_true() -> bool {
    true
}
fn default_graph_cache_bytes() -> usize {
    ganglion_web::DEFAULT_GRAPH_CACHE_BYTES
}
fn default_session_ttl() -> u64 {
    43_200
}

/// Host liveness, as Ganglia's TMAX/DMAX.
#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHosts {
    /// Seconds of silence after which a host is down. Default: 4 of its intervals.
    pub host_timeout_secs: Option<u64>,
    /// Seconds of silence after which a host is forgotten; 0 = never. Default 86400.
    pub host_expire_secs: Option<u64>,
}

/// One `[[cluster]]` table.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: Spanned<String>,
    /// Shared key of the cluster's agents. Either this or `key_file`.
    pub key: Option<Spanned<String>>,
    /// File whose first line is the key, so the config can be kept in version control.
    pub key_file: Option<Spanned<PathBuf>>,
    /// Overrides `[hosts] host_timeout_secs` for this cluster.
    pub host_timeout_secs: Option<u64>,
    /// Overrides `[hosts] host_expire_secs` for this cluster.
    pub host_expire_secs: Option<u64>,
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest {
            listen: default_ingest(),
            max_frame_bytes: default_max_frame(),
            max_connections: default_max_connections(),
            max_clock_skew_secs: default_skew(),
            max_sample_age_secs: default_max_age(),
        }
    }
}
impl Default for RawWeb {
    fn default() -> Self {
        RawWeb {
            listen: default_web(),
            refresh_secs: default_refresh(),
            public_read: true,
            session_ttl_secs: default_session_ttl(),
            secure_cookies: false,
            graph_cache_bytes: default_graph_cache_bytes(),
            admin: Vec::new(),
        }
    }
}
fn unspanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}
fn default_ingest() -> Spanned<String> {
    unspanned("0.0.0.0:8650".to_owned())
}
fn default_web() -> Spanned<String> {
    unspanned("127.0.0.1:8080".to_owned())
}
fn default_max_frame() -> usize {
    ganglion_proto::frame::DEFAULT_MAX_FRAME_BYTES
}
fn default_max_connections() -> usize {
    20_000
}
fn default_skew() -> u64 {
    300
}
fn default_max_age() -> u64 {
    30 * 86_400
}
/// Default host_expire: one day, as Ganglia's `host_dmax` upstream default.
pub const DEFAULT_HOST_EXPIRE_SECS: u64 = 86_400;

/// A cluster as the collector uses it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub key: Vec<u8>,
    /// `None`: four of the host's own intervals.
    pub host_timeout: Option<Duration>,
    /// `None`: never forget.
    pub host_expire: Option<Duration>,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub ingest_listen: SocketAddr,
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub max_clock_skew: Duration,
    pub max_sample_age: Duration,
    pub web_listen: SocketAddr,
    /// `[web]`: the dashboard's settings.
    pub web: ganglion_web::WebConfig,
    pub clusters: BTreeMap<String, ClusterConfig>,
    pub data_dir: PathBuf,
    pub engine: crate::engine::EngineConfig,
    /// The NSCA listener, when `[nsca] listen` is set.
    pub nsca: Option<crate::nsca::NscaConfig>,
    /// `[api] admin_token`: needed by write requests.
    pub admin_token: Option<String>,
    pub storage: ganglion_store::engine::StoreConfig,
    /// `[[storage.rule]]`, in order.
    pub storage_rules: Vec<ganglion_store::engine::ArchiveRule>,
    pub expire_grace: Duration,
    pub alerts: crate::alerts::config::AlertsConfig,
}

/// Every problem of a configuration, one per line, with positions.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigError(pub Vec<String>);

/// 1-based line and column of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Archives in rrdtool syntax, each problem at its position.
fn archive_list(
    list: &[Spanned<String>],
    what: &str,
    text: &str,
    origin: &str,
    problems: &mut Vec<String>,
) -> Vec<ganglion_store::rrd::RraDef> {
    let mut out = Vec::new();
    for a in list {
        match ganglion_store::rrd::RraDef::parse(a.get_ref()) {
            Ok(r) => out.push(r),
            Err(e) => {
                problems.push(at(text, origin, a.span(), &format!("{what}: {}: {e}", name::escaped(a.get_ref()))))
            }
        }
    }
    if list.is_empty() {
        problems.push(format!("{origin}: {what}: at least one archive is needed"));
    }
    out
}

/// `origin:line:column: msg`, or `origin: msg` for a value that has no position (a
/// default).
fn at(text: &str, origin: &str, span: std::ops::Range<usize>, msg: &str) -> String {
    if span.is_empty() && span.start == 0 {
        format!("{origin}: {msg}")
    } else {
        let (l, c) = position(text, span.start);
        format!("{origin}:{l}:{c}: {msg}")
    }
}

/// Checks `[[storage.rule]]`: patterns (names with `*` and `?`; a cluster pattern must
/// match a configured cluster), a step, heartbeat or archive set to give, and the
/// definition the store would accept.
fn storage_rules(
    raw: &RawStorage,
    base: &ganglion_store::engine::StoreConfig,
    clusters: &BTreeMap<String, ClusterConfig>,
    text: &str,
    origin: &str,
    problems: &mut Vec<String>,
) -> Vec<ganglion_store::engine::ArchiveRule> {
    let mut out = Vec::new();
    for (n, rule) in raw.rules.iter().enumerate() {
        let r = rule.get_ref();
        let what = format!("storage.rule {}", n + 1);
        let before = problems.len();
        let mut bad = |span: std::ops::Range<usize>, msg: String| {
            problems.push(at(text, origin, span, &format!("{what}: {msg}")))
        };
        let mut pattern = |p: &Option<Spanned<String>>, kind: NameKind, key: &str| {
            let p = p.as_ref()?;
            // A pattern is a name in which `*` and `?` stand for name characters.
            let probe: String = p.get_ref().chars().map(|c| if c == '*' || c == '?' { 'x' } else { c }).collect();
            if let Err(e) = name::validate(kind, &probe) {
                bad(p.span(), format!("{key}: {e}"));
                return None;
            }
            Some(p.get_ref().clone())
        };
        let cluster = pattern(&r.cluster, NameKind::Cluster, "cluster");
        let host = pattern(&r.host, NameKind::Host, "host");
        let metric = pattern(&r.metric, NameKind::Metric, "metric");
        if let (Some(c), Some(span)) = (&cluster, r.cluster.as_ref().map(Spanned::span)) {
            if !clusters.keys().any(|name| ganglion_store::engine::glob_match(c, name)) {
                bad(span, format!("cluster: {} matches no [[cluster]]", name::escaped(c)));
            }
        }
        if r.step_secs.is_none() && r.heartbeat_secs.is_none() && r.archives.is_none() {
            bad(rule.span(), "sets none of step_secs, heartbeat_secs and archives".into());
        }
        let step = r.step_secs.as_ref().map(|s| *s.get_ref());
        let heartbeat = r.heartbeat_secs.as_ref().map(|s| *s.get_ref());
        if let Some(s) = r.step_secs.as_ref().filter(|s| *s.get_ref() == 0) {
            bad(s.span(), "step_secs must be at least 1".into());
        }
        let (eff_step, eff_hb) = (step.unwrap_or(base.step_secs), heartbeat.unwrap_or(base.heartbeat_secs));
        if eff_hb < eff_step {
            let span = r.heartbeat_secs.as_ref().or(r.step_secs.as_ref()).map_or_else(|| rule.span(), Spanned::span);
            bad(span, format!("heartbeat_secs ({eff_hb}) must be at least step_secs ({eff_step})"));
        }
        let archives = match (&r.archives, step) {
            (Some(list), _) => Some(archive_list(list, &format!("{what}: archives"), text, origin, problems)),
            // Ganglia's set follows the step, unless the operator chose the archives.
            (None, Some(s)) if raw.archives.is_none() && s > 0 => {
                Some(ganglion_store::engine::StoreConfig::ganglia_archives(s))
            }
            (None, _) => None,
        };
        let rule_def = ganglion_store::engine::ArchiveRule {
            cluster,
            host,
            metric,
            step_secs: step,
            heartbeat_secs: heartbeat,
            archives,
        };
        // Ranges rrdtool accepts but a shard cannot hold, once the rest is sound.
        let sound = problems.len() == before && (rule_def.archives.is_some() || !base.archives.is_empty());
        if let Some(e) = sound.then(|| rule_def.check(base).err()).flatten() {
            let span = r.archives.as_ref().and_then(|a| a.first()).map_or_else(|| rule.span(), Spanned::span);
            problems.push(at(text, origin, span, &format!("{what}: {e}")));
        }
        out.push(rule_def);
    }
    out
}

/// Checks `[nsca]`: the address, a method this collector can decode (with the reason
/// when not), the password.
fn nsca_config(raw: &RawNsca, text: &str, origin: &str, problems: &mut Vec<String>) -> Option<crate::nsca::NscaConfig> {
    let method = match ganglion_checks::nsca::Method::from_code(raw.method) {
        Ok(m) => Some(m),
        Err(e) => {
            problems.push(format!("{origin}: nsca.method: {e}"));
            None
        }
    };
    let password = match (&raw.password, &raw.password_file) {
        (Some(p), None) => p.as_bytes().to_vec(),
        (None, Some(f)) => match std::fs::read(f) {
            // Only the line end goes: trailing spaces belong to an NSCA password.
            Ok(bytes) => {
                let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
                line.strip_suffix(b"\r").unwrap_or(line).to_vec()
            }
            Err(e) => {
                problems.push(format!("{origin}: nsca.password_file {}: {e}", f.display()));
                Vec::new()
            }
        },
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => {
            problems.push(format!("{origin}: nsca: give at most one of password and password_file"));
            Vec::new()
        }
    };
    let listen = raw.listen.as_ref()?;
    let Ok(addr) = listen.get_ref().parse::<SocketAddr>() else {
        let (l, c) = position(text, listen.span().start);
        problems.push(format!(
            "{origin}:{l}:{c}: nsca.listen: {} is not an IP:port address",
            name::escaped(listen.get_ref())
        ));
        return None;
    };
    Some(crate::nsca::NscaConfig {
        listen: addr,
        codec: ganglion_checks::nsca::Config {
            method: method?,
            password,
            max_packet_age_secs: raw.max_packet_age_secs,
        },
        max_connections: raw.max_connections.max(1),
    })
}

impl Config {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem, each prefixed by `file:line:column`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Checks configuration text; `origin` names it in messages.
    ///
    /// # Errors
    /// [`ConfigError`] as for [`Config::load`].
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| position(text, s.start));
            let msg = e.message().to_owned();
            ConfigError(vec![match at {
                Some((l, c)) => format!("{origin}:{l}:{c}: {msg}"),
                None => format!("{origin}: {msg}"),
            }])
        })?;
        Config::from_raw(raw, text, origin)
    }

    /// Checks a raw configuration; `text` is used to turn spans into line:column.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem.
    pub fn from_raw(raw: RawConfig, text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |span: std::ops::Range<usize>, msg: String| {
            if span.is_empty() && span.start == 0 {
                problems.push(format!("{origin}: {msg}"));
            } else {
                let (l, c) = position(text, span.start);
                problems.push(format!("{origin}:{l}:{c}: {msg}"));
            }
        };
        let addr = |s: &Spanned<String>, what: &str, problem: &mut dyn FnMut(std::ops::Range<usize>, String)| match s
            .get_ref()
            .parse::<SocketAddr>()
        {
            Ok(a) => Some(a),
            Err(_) => {
                problem(s.span(), format!("{what}: {} is not an IP:port address", name::escaped(s.get_ref())));
                None
            }
        };
        let ingest_listen = addr(&raw.ingest.listen, "ingest.listen", &mut problem);
        let web_listen = addr(&raw.web.listen, "web.listen", &mut problem);
        if raw.ingest.max_frame_bytes < 4096 || raw.ingest.max_frame_bytes > 64 * 1024 * 1024 {
            problem(0..0, "ingest.max_frame_bytes: must be between 4096 and 67108864".into());
        }
        if raw.ingest.max_connections == 0 {
            problem(0..0, "ingest.max_connections: must be at least 1".into());
        }
        let mut clusters = BTreeMap::new();
        for c in raw.clusters {
            let cname = c.name.get_ref().clone();
            if let Err(e) = name::validate(NameKind::Cluster, &cname) {
                problem(c.name.span(), format!("cluster.name: {e}"));
                continue;
            }
            if clusters.contains_key(&cname) {
                problem(c.name.span(), format!("cluster {cname}: defined twice"));
                continue;
            }
            let key = match (&c.key, &c.key_file) {
                (Some(k), None) => {
                    if k.get_ref().len() < 16 {
                        problem(k.span(), format!("cluster {cname}: key must have at least 16 characters"));
                    }
                    k.get_ref().as_bytes().to_vec()
                }
                (None, Some(f)) => match std::fs::read_to_string(f.get_ref()) {
                    Ok(t) => t.lines().next().unwrap_or("").trim().as_bytes().to_vec(),
                    Err(e) => {
                        problem(f.span(), format!("cluster {cname}: key_file {}: {e}", f.get_ref().display()));
                        Vec::new()
                    }
                },
                _ => {
                    problem(c.name.span(), format!("cluster {cname}: give exactly one of key and key_file"));
                    Vec::new()
                }
            };
            let timeout = c.host_timeout_secs.or(raw.hosts.host_timeout_secs);
            if timeout == Some(0) {
                problem(c.name.span(), format!("cluster {cname}: host_timeout_secs must be at least 1"));
            }
            let expire = c.host_expire_secs.or(raw.hosts.host_expire_secs).unwrap_or(DEFAULT_HOST_EXPIRE_SECS);
            clusters.insert(
                cname.clone(),
                ClusterConfig {
                    key,
                    host_timeout: timeout.map(Duration::from_secs),
                    host_expire: (expire > 0).then(|| Duration::from_secs(expire)),
                },
            );
        }
        let alerts = crate::alerts::config::build(
            crate::alerts::config::RawSections {
                contacts: &raw.contacts,
                groups: &raw.contactgroups,
                routes: &raw.routes,
                escalations: &raw.escalations,
                alerts: &raw.alerts,
                smtp: raw.smtp.as_ref(),
                webhooks: &raw.webhooks,
            },
            web_listen,
            &mut problem,
        );
        if clusters.is_empty() {
            problems.push(format!("{origin}: no [[cluster]] defined; agents would all be refused"));
        }
        let fsync = match raw.storage.fsync.as_str() {
            "interval" => Some(ganglion_store::engine::FsyncPolicy::IntervalMs(raw.storage.fsync_interval_ms.max(1))),
            "always" => Some(ganglion_store::engine::FsyncPolicy::Always),
            "never" => Some(ganglion_store::engine::FsyncPolicy::Never),
            other => {
                problems.push(format!(
                    "{origin}: storage.fsync: {} is not interval, always or never",
                    name::escaped(other)
                ));
                None
            }
        };
        if raw.storage.step_secs == 0 || raw.storage.heartbeat_secs < raw.storage.step_secs {
            problems
                .push(format!("{origin}: storage: step_secs must be at least 1 and heartbeat_secs at least step_secs"));
        }
        let archives = match &raw.storage.archives {
            None => ganglion_store::engine::StoreConfig::ganglia_archives(raw.storage.step_secs.max(1)),
            Some(list) => archive_list(list, "storage.archives", text, origin, &mut problems),
        };
        let storage = ganglion_store::engine::StoreConfig {
            step_secs: raw.storage.step_secs,
            heartbeat_secs: raw.storage.heartbeat_secs,
            archives,
            fsync: fsync.unwrap_or(ganglion_store::engine::FsyncPolicy::Never),
            flush_interval_secs: raw.storage.flush_interval_secs.max(1),
            max_unflushed_bytes: raw.storage.max_unflushed_bytes,
            background: true,
        };
        let storage_rules = storage_rules(&raw.storage, &storage, &clusters, text, origin, &mut problems);
        let timeout_state = crate::engine::defs::parse_state(&raw.checks.timeout_state);
        if timeout_state.is_none() {
            problems.push(format!(
                "{origin}: checks.timeout_state: {} is not ok, warning, critical or unknown",
                name::escaped(&raw.checks.timeout_state)
            ));
        }
        let (low, high) = (raw.checks.low_flap_threshold, raw.checks.high_flap_threshold);
        if !(0.0..=100.0).contains(&low) || !(0.0..=100.0).contains(&high) || low > high {
            problems.push(format!(
                "{origin}: checks: low_flap_threshold {low} and high_flap_threshold {high} must be percentages with low <= high"
            ));
        }
        let defaults = crate::engine::defs::ChecksDefaults {
            plugin_timeout: Duration::from_secs(raw.checks.plugin_timeout_secs.max(1)),
            settings: ganglion_checks::state::StateSettings {
                max_check_attempts: raw.checks.max_check_attempts.max(1),
                check_interval_secs: raw.checks.check_interval_secs.max(1),
                retry_interval_secs: raw.checks.retry_interval_secs.max(1),
            },
            flap: raw.checks.flap_detection.then_some(ganglion_checks::flap::FlapThresholds { low, high }),
        };
        let host_defaults = crate::engine::hosts::HostDefaults {
            settings: ganglion_checks::state::StateSettings {
                check_interval_secs: raw.checks.host_check_interval_secs.max(1),
                ..defaults.settings
            },
            timeout: defaults.plugin_timeout,
        };
        let host_defs = match crate::engine::hosts::HostDefs::build(raw.hosts_defs, host_defaults) {
            Ok(d) => Some(d),
            Err(errs) => {
                for (span, msg) in errs {
                    if span.is_empty() && span.start == 0 {
                        problems.push(format!("{origin}: {msg}"));
                    } else {
                        let (l, c) = position(text, span.start);
                        problems.push(format!("{origin}:{l}:{c}: {msg}"));
                    }
                }
                None
            }
        };
        let nsca = nsca_config(&raw.nsca, text, origin, &mut problems);
        let admin_token = match (&raw.api.admin_token, &raw.api.admin_token_file) {
            (None, None) => None,
            (Some(t), None) => Some(t.clone()),
            (None, Some(f)) => match std::fs::read_to_string(f) {
                Ok(t) => Some(t.lines().next().unwrap_or("").trim().to_owned()),
                Err(e) => {
                    problems.push(format!("{origin}: api.admin_token_file {}: {e}", f.display()));
                    None
                }
            },
            (Some(_), Some(_)) => {
                problems.push(format!("{origin}: api: give at most one of admin_token and admin_token_file"));
                None
            }
        };
        if admin_token.as_ref().is_some_and(|t| t.chars().count() < 16) {
            problems.push(format!("{origin}: api.admin_token must have at least 16 characters"));
        }
        for a in &raw.web.admin {
            if a.user.is_empty() || !ganglion_web::auth::valid_hash(&a.password_hash) {
                problems.push(format!(
                    "{origin}: web.admin {}: needs a user and an argon2 password_hash (ganglion hash-password)",
                    name::escaped(&a.user)
                ));
            }
        }
        let web = ganglion_web::WebConfig {
            refresh_secs: raw.web.refresh_secs,
            public_read: raw.web.public_read,
            admins: raw
                .web
                .admin
                .iter()
                .map(|a| ganglion_web::Admin { user: a.user.clone(), password_hash: a.password_hash.clone() })
                .collect(),
            session_ttl: Duration::from_secs(raw.web.session_ttl_secs.max(60)),
            secure_cookies: raw.web.secure_cookies,
            graph_cache_bytes: raw.web.graph_cache_bytes,
        };
        let defs =
            match crate::engine::defs::Defs::build(raw.templates, raw.services, raw.checks.default_pack, defaults) {
                Ok(d) => Some(d),
                Err(errs) => {
                    problems.extend(errs.into_iter().map(|e| format!("{origin}: {e}")));
                    None
                }
            };
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(Config {
            ingest_listen: ingest_listen.expect("checked above"),
            web_listen: web_listen.expect("checked above"),
            web,
            max_frame_bytes: raw.ingest.max_frame_bytes,
            max_connections: raw.ingest.max_connections,
            max_clock_skew: Duration::from_secs(raw.ingest.max_clock_skew_secs),
            max_sample_age: Duration::from_secs(raw.ingest.max_sample_age_secs),
            clusters,
            engine: crate::engine::EngineConfig {
                defs: defs.expect("checked above"),
                state_db: raw.data_dir.join("state.db"),
                plugin_dir: raw.checks.plugin_dir,
                max_concurrent_plugins: raw.checks.max_concurrent_plugins.max(1),
                timeout_state: timeout_state.expect("checked above"),
                host_check_interval_secs: raw.checks.host_check_interval_secs.max(1),
                store: None,
                hosts: host_defs.expect("checked above"),
            },
            nsca,
            admin_token,
            storage: ganglion_store::engine::StoreConfig { fsync: fsync.expect("checked above"), ..storage },
            storage_rules,
            expire_grace: Duration::from_secs(raw.storage.expire_grace_secs),
            data_dir: raw.data_dir,
            alerts,
        })
    }

    /// The embedded defaults of `ganglion demo`: one cluster `demo` with `key`.
    pub fn demo(ingest: SocketAddr, web: SocketAddr, key: &str, data_dir: &Path) -> Config {
        let data_dir = toml::Value::String(data_dir.to_string_lossy().into_owned());
        let text = format!(
            "data_dir = {data_dir}\n[ingest]\nlisten = \"{ingest}\"\n[web]\nlisten = \"{web}\"\n[[cluster]]\nname = \"demo\"\nkey = \"{key}\"\n"
        );
        Config::parse(&text, "demo").expect("the demo configuration is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[ingest]
listen = "127.0.0.1:8650"

[[cluster]]
name = "web"
key = "0123456789abcdef"

[[cluster]]
name = "db"
key = "fedcba9876543210"
host_expire_secs = 0
"#;

    #[test]
    fn reads_clusters_with_defaults() {
        let c = Config::parse(GOOD, "t").unwrap();
        assert_eq!(c.clusters.len(), 2);
        assert_eq!(c.clusters["web"].host_expire, Some(Duration::from_secs(86_400)));
        assert_eq!(c.clusters["db"].host_expire, None);
        assert_eq!(c.clusters["web"].host_timeout, None);
        assert_eq!(c.web_listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = Config::parse("[ingest]\nlisten = \n", "f.toml").unwrap_err().to_string();
        assert!(err.starts_with("f.toml:2:"), "{err}");
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let err = Config::parse("[ingest]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n", "f.toml").unwrap_err().to_string();
        assert!(err.starts_with("f.toml:3:1:"), "{err}");
    }

    #[test]
    fn reports_every_semantic_problem_with_position() {
        let text = "[ingest]\nlisten = \"nowhere\"\n[[cluster]]\nname = \"../etc\"\nkey = \"0123456789abcdef\"\n[[cluster]]\nname = \"ok\"\nkey = \"short\"\n[[cluster]]\nname = \"ok\"\nkey = \"0123456789abcdef\"\n";
        let err = Config::parse(text, "f").unwrap_err();
        let lines = err.0;
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].starts_with("f:2:10: ingest.listen"), "{lines:?}");
        assert!(lines[1].starts_with("f:4:8: cluster.name"), "{lines:?}");
        assert!(lines[2].starts_with("f:8:7: cluster ok: key"), "{lines:?}");
        assert!(lines[3].starts_with("f:10:8: cluster ok: defined twice"), "{lines:?}");
    }

    /// Every key of the configuration appears in docs/CONFIG.md, and the documented
    /// example is a valid configuration.
    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../docs/CONFIG.md");
        let example = doc.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).unwrap();
        Config::parse(example, "CONFIG.md").unwrap();
        let mut raw: RawConfig = toml::from_str("").unwrap();
        raw.hosts = RawHosts { host_timeout_secs: Some(1), host_expire_secs: Some(1) };
        raw.clusters.push(RawCluster {
            name: unspanned("c".into()),
            key: Some(unspanned("k".into())),
            key_file: Some(unspanned("f".into())),
            host_timeout_secs: Some(1),
            host_expire_secs: Some(1),
        });
        let s = || Some("x".to_owned());
        raw.services.push(crate::engine::defs::RawService {
            name: "x".into(),
            use_: s(),
            clusters: Some(vec![]),
            hosts: s(),
            enabled: Some(true),
            metric: s(),
            divide_by: s(),
            scale: Some(1.0),
            warning: s(),
            critical: s(),
            missing: s(),
            command: s(),
            macros: Some(BTreeMap::new()),
            passive: Some(true),
            freshness_secs: Some(1),
            stale_state: s(),
            max_check_attempts: Some(1),
            check_interval_secs: Some(1),
            retry_interval_secs: Some(1),
            timeout_secs: Some(1),
            aggregate: s(),
            window_secs: Some(1),
            flap_detection: Some(true),
            low_flap_threshold: Some(1.0),
            high_flap_threshold: Some(1.0),
        });
        raw.hosts_defs.push(crate::engine::hosts::RawHost {
            name: unspanned("h".into()),
            cluster: unspanned("c".into()),
            address: s(),
            parents: vec![unspanned("p".into())],
            check_command: Some(unspanned("x".into())),
            macros: Some(BTreeMap::new()),
            check_interval_secs: Some(1),
            retry_interval_secs: Some(1),
            max_check_attempts: Some(1),
            timeout_secs: Some(1),
        });
        raw.nsca.listen = Some(unspanned("127.0.0.1:5667".into()));
        raw.nsca.password = s();
        raw.nsca.password_file = Some("f".into());
        raw.api = RawApi { admin_token: s(), admin_token_file: Some("f".into()) };
        let sp = || Some(unspanned("x".to_owned()));
        raw.storage.archives = Some(vec![]);
        raw.storage.rules.push(unspanned(RawRule {
            cluster: sp(),
            host: sp(),
            metric: sp(),
            step_secs: Some(unspanned(1)),
            heartbeat_secs: Some(unspanned(1)),
            archives: Some(vec![]),
        }));
        raw.web.admin.push(RawAdmin { user: "u".into(), password_hash: "h".into() });
        let value = toml::Value::try_from(&raw).unwrap();
        let mut missing = Vec::new();
        for (section, v) in value.as_table().unwrap() {
            let table = match v {
                toml::Value::Array(a) if a.is_empty() => continue,
                toml::Value::Array(a) => a[0].as_table().unwrap(),
                toml::Value::Table(t) => t,
                _ => {
                    let row = format!("`{section}`");
                    if !doc.contains(&row) {
                        missing.push(row);
                    }
                    continue;
                }
            };
            for (key, v) in table {
                let row = format!("`{section}.{key}`");
                if !doc.contains(&row) {
                    missing.push(row);
                }
                // Arrays of tables inside a section (`[[storage.rule]]`).
                if let Some(sub) = v.as_array().and_then(|a| a.first()).and_then(toml::Value::as_table) {
                    for k in sub.keys() {
                        let row = format!("`{section}.{key}.{k}`");
                        if !doc.contains(&row) {
                            missing.push(row);
                        }
                    }
                }
            }
        }
        assert!(missing.is_empty(), "not in docs/CONFIG.md: {missing:?}");
    }

    #[test]
    fn storage_rules_become_archive_rules() {
        let text = format!(
            "{GOOD}[storage]\n[[storage.rule]]\ncluster = \"db\"\nmetric = \"mysql_*\"\nstep_secs = 60\nheartbeat_secs = 480\n\
             [[storage.rule]]\nhost = \"web-??\"\narchives = [\"RRA:AVERAGE:0.5:1:100\"]\n"
        );
        let c = Config::parse(&text, "t").unwrap();
        let r = &c.storage_rules;
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].cluster.as_deref(), r[0].host.as_deref(), r[0].metric.as_deref()),
            (Some("db"), None, Some("mysql_*"))
        );
        assert_eq!((r[0].step_secs, r[0].heartbeat_secs), (Some(60), Some(480)));
        // Ganglia's set follows the rule's step: a day is 1,440 rows of 60 s.
        assert_eq!(r[0].archives, Some(ganglion_store::engine::StoreConfig::ganglia_archives(60)));
        assert_eq!(r[0].archives.as_ref().unwrap()[0].rows, 1440);
        assert_eq!(r[1].step_secs, None);
        assert_eq!(r[1].archives.as_ref().unwrap()[0].rows, 100);
        // With archives chosen in [storage], a rule's step keeps them.
        let text = format!(
            "{GOOD}[storage]\narchives = [\"RRA:MAX:0.5:1:50\"]\n[[storage.rule]]\nmetric = \"x\"\nstep_secs = 60\nheartbeat_secs = 120\n"
        );
        assert_eq!(Config::parse(&text, "t").unwrap().storage_rules[0].archives, None);
    }

    #[test]
    fn bad_storage_rules_are_reported_with_positions() {
        let text = format!(
            "{GOOD}[storage]\narchives = [\"RRA:AVERAGE:0.5:1\"]\n\
             [[storage.rule]]\ncluster = \"nosuch*\"\nstep_secs = 60\n\
             [[storage.rule]]\nmetric = \"a/b\"\narchives = [\"RRA:AVERAGE:0.5:1:10\", \"RRA:BOGUS:0.5:1:10\"]\n\
             [[storage.rule]]\nhost = \"web*\"\n\
             [[storage.rule]]\nstep_secs = 600\n\
             [[storage.rule]]\narchives = [\"RRA:AVERAGE:0.5:1:99999999\"]\n"
        );
        let lines = Config::parse(&text, "f").unwrap_err().0;
        let base = GOOD.lines().count();
        let want = [
            format!("f:{}:13: storage.archives: \"RRA:AVERAGE:0.5:1\": invalid RRA format", base + 2),
            format!("f:{}:11: storage.rule 1: cluster: \"nosuch*\" matches no [[cluster]]", base + 4),
            format!("f:{}:10: storage.rule 2: metric: invalid metric name", base + 7),
            format!("f:{}:37: storage.rule 2: archives: \"RRA:BOGUS:0.5:1:10\"", base + 8),
            format!("f:{}:1: storage.rule 3: sets none of", base + 9),
            format!("f:{}:13: storage.rule 4: heartbeat_secs (120) must be at least step_secs (600)", base + 12),
            format!("f:{}:13: storage.rule 5: archive RRA:AVERAGE:0.5:1:99999999 out of range", base + 14),
        ];
        assert_eq!(lines.len(), want.len(), "{lines:#?}");
        for (l, w) in lines.iter().zip(&want) {
            assert!(l.starts_with(w.as_str()), "{l}\nshould start with\n{w}\n(all: {lines:#?})");
        }
    }

    #[test]
    fn demo_defaults_parse() {
        let c = Config::demo(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            "0123456789abcdef0123",
            Path::new("/tmp/x \"y\""),
        );
        assert_eq!(c.data_dir, Path::new("/tmp/x \"y\""));
        assert!(c.clusters.contains_key("demo"));
    }
}

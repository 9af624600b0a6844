//! The agent's configuration file.
//!
//! Two stages, as in the collector: [`RawConfig`] is what serde reads (unknown keys are
//! errors, so a typo is reported instead of silently ignored) and [`AgentConfig`] is
//! the checked result. [`AgentConfig::from_raw`] reports every problem at once.

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
fn default_spool_memory() -> u64 {
    1024 * 1024
}
fn default_spool_disk() -> u64 {
    64 * 1024 * 1024
}

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
    /// Delay before the first collection; `None` picks a random one within one interval
    /// so a fleet that boots together does not report in lock step.
    pub first_delay: Option<Duration>,
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
        if raw.spool.memory_bytes < 4096 {
            problems.push("spool.memory_bytes: must be at least 4096".to_owned());
        }
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
            first_delay: None,
        })
    }
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

    #[test]
    fn rejects_unknown_keys_with_position() {
        let err = parse("collectors = []\ncluster = \"c\"\nkey = \"k\"\nintervall = 3\n").unwrap_err().to_string();
        assert!(err.contains("intervall") && err.contains("line 4"), "{err}");
    }
}

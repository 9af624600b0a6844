//! Host definitions from `[[host]]`: hosts without an agent (a switch, a router, a
//! box that only sends NSCA results) and the parents of any host.
//!
//! An agent-less host gets a host check from its `check_command` (a plugin, as Nagios'
//! `check_command` of a host) or only from passive results, and the active and passive
//! services that match it; metric checks need an agent and skip it. A host whose agent
//! reports uses the agent's liveness; its `[[host]]` table only adds an address and
//! parents.
//!
//! Parents work as Nagios' network reachability: a host that is down while every one of
//! its parents is DOWN or UNREACHABLE is UNREACHABLE, not DOWN, so the failure of a
//! switch pages once, for the switch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ganglion_checks::state::StateSettings;
use ganglion_proto::name::{self, NameKind};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// One `[[host]]` table as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub name: Spanned<String>,
    /// The cluster the host belongs to (need not have agents or a key).
    pub cluster: Spanned<String>,
    /// `$HOSTADDRESS$`; default: the address its agent reported, else the name.
    pub address: Option<String>,
    /// Hosts between this one and the collector (Nagios' `parents`).
    #[serde(default)]
    pub parents: Vec<Spanned<String>>,
    /// Plugin command line whose exit code is the host's state (0 or 1 UP, 2 or 3
    /// DOWN, as Nagios maps host check results). Without it, and without an agent, the
    /// host's state comes from passive results only.
    pub check_command: Option<Spanned<String>>,
    /// Custom `$_NAME$` macros of the host's commands.
    pub macros: Option<BTreeMap<String, String>>,
    /// Seconds between host checks while UP or HARD DOWN. Default `[checks]
    /// host_check_interval_secs`.
    pub check_interval_secs: Option<u64>,
    /// Seconds between checks while a failure is SOFT. Default `[checks] retry_interval_secs`.
    pub retry_interval_secs: Option<u64>,
    /// Attempts before DOWN is HARD. Default `[checks] max_check_attempts`.
    pub max_check_attempts: Option<u32>,
    /// Plugin timeout. Default `[checks] plugin_timeout_secs`.
    pub timeout_secs: Option<u64>,
}

/// A host's check command, checked.
#[derive(Debug, Clone)]
pub struct HostCheck {
    pub command: String,
    pub timeout: Duration,
    pub settings: StateSettings,
}

/// One host as configured.
#[derive(Debug, Clone)]
pub struct HostDef {
    pub cluster: String,
    pub name: String,
    pub address: Option<String>,
    pub parents: Vec<String>,
    pub check: Option<HostCheck>,
    pub macros: BTreeMap<String, String>,
}

/// Every `[[host]]`, looked up by cluster and name; parents by host name (Nagios host
/// names are global, and a parent may be in another cluster).
#[derive(Debug, Clone, Default)]
pub struct HostDefs {
    pub hosts: BTreeMap<(String, String), Arc<HostDef>>,
    pub parents: HashMap<String, Vec<String>>,
}

/// Defaults the `[[host]]` tables fall back to.
#[derive(Debug, Clone, Copy)]
pub struct HostDefaults {
    pub settings: StateSettings,
    pub timeout: Duration,
}

impl HostDefs {
    /// Checks the tables; returns every problem with the byte span it comes from.
    ///
    /// # Errors
    /// Invalid names, a host defined twice, an empty or unparsable command, a host that
    /// is its own parent or ancestor.
    pub fn build(raw: Vec<RawHost>, d: HostDefaults) -> Result<HostDefs, Vec<(std::ops::Range<usize>, String)>> {
        let mut problems = Vec::new();
        let mut out = HostDefs::default();
        for h in raw {
            let (name, cluster) = (h.name.get_ref().clone(), h.cluster.get_ref().clone());
            if let Err(e) = name::validate(NameKind::Host, &name) {
                problems.push((h.name.span(), format!("host.name: {e}")));
                continue;
            }
            if let Err(e) = name::validate(NameKind::Cluster, &cluster) {
                problems.push((h.cluster.span(), format!("host {name}: cluster: {e}")));
                continue;
            }
            let check = match &h.check_command {
                None => None,
                Some(c) => match crate::engine::plugin::split_command(c.get_ref()) {
                    Ok(_) => Some(HostCheck {
                        command: c.get_ref().clone(),
                        timeout: h.timeout_secs.map_or(d.timeout, Duration::from_secs),
                        settings: StateSettings {
                            max_check_attempts: h.max_check_attempts.unwrap_or(d.settings.max_check_attempts).max(1),
                            check_interval_secs: h.check_interval_secs.unwrap_or(d.settings.check_interval_secs).max(1),
                            retry_interval_secs: h.retry_interval_secs.unwrap_or(d.settings.retry_interval_secs).max(1),
                        },
                    }),
                    Err(e) => {
                        problems.push((c.span(), format!("host {name}: check_command: {e}")));
                        None
                    }
                },
            };
            let mut parents = Vec::new();
            for p in &h.parents {
                if p.get_ref() == &name {
                    problems.push((p.span(), format!("host {name}: a host cannot be its own parent")));
                } else if let Err(e) = name::validate(NameKind::Host, p.get_ref()) {
                    problems.push((p.span(), format!("host {name}: parents: {e}")));
                } else {
                    parents.push(p.get_ref().clone());
                }
            }
            let key = (cluster.clone(), name.clone());
            if out.hosts.contains_key(&key) {
                problems.push((h.name.span(), format!("host {name} in cluster {cluster}: defined twice")));
                continue;
            }
            if !parents.is_empty() {
                out.parents.entry(name.clone()).or_default().extend(parents.iter().cloned());
            }
            let def = HostDef {
                cluster,
                name,
                address: h.address.clone(),
                parents,
                check,
                macros: h.macros.clone().unwrap_or_default(),
            };
            out.hosts.insert(key, Arc::new(def));
        }
        if let Some(cycle) = out.cycle() {
            problems.push((0..0, format!("host parents form a loop: {}", cycle.join(" → "))));
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }

    /// A loop in the parent graph, if any (a loop would make every host in it
    /// UNREACHABLE forever).
    fn cycle(&self) -> Option<Vec<String>> {
        let mut done: HashSet<&str> = HashSet::new();
        for start in self.parents.keys() {
            let mut path: Vec<&str> = Vec::new();
            if let Some(c) = self.visit(start, &mut path, &mut done) {
                return Some(c);
            }
        }
        None
    }

    fn visit<'a>(&'a self, node: &'a str, path: &mut Vec<&'a str>, done: &mut HashSet<&'a str>) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == node) {
            let mut c: Vec<String> = path[i..].iter().map(|s| (*s).to_owned()).collect();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for p in self.parents.get(node).into_iter().flatten() {
            if let Some(c) = self.visit(p, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node);
        None
    }

    /// Every host name that is somebody's parent.
    pub fn parent_names(&self) -> HashSet<&str> {
        self.parents.values().flatten().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> HostDefaults {
        HostDefaults {
            settings: StateSettings { max_check_attempts: 3, check_interval_secs: 60, retry_interval_secs: 15 },
            timeout: Duration::from_secs(10),
        }
    }

    fn parse(text: &str) -> Result<HostDefs, Vec<String>> {
        #[derive(Deserialize)]
        struct F {
            host: Vec<RawHost>,
        }
        let f: F = toml::from_str(text).unwrap();
        HostDefs::build(f.host, defaults()).map_err(|e| e.into_iter().map(|(_, m)| m).collect())
    }

    #[test]
    fn hosts_with_parents_and_checks() {
        let d = parse(
            r#"
[[host]]
name = "core"
cluster = "net"
check_command = "check_ping -H $HOSTADDRESS$ -w 100,20% -c 500,60%"
max_check_attempts = 2
[[host]]
name = "web1"
cluster = "web"
parents = ["core"]
"#,
        )
        .unwrap();
        let core = &d.hosts[&("net".to_owned(), "core".to_owned())];
        let check = core.check.as_ref().unwrap();
        assert_eq!(check.settings.max_check_attempts, 2);
        assert_eq!(check.settings.retry_interval_secs, 15);
        assert_eq!(d.parents["web1"], vec!["core".to_owned()]);
        assert!(d.parent_names().contains("core"));
    }

    #[test]
    fn refuses_loops_self_parents_and_twice_defined_hosts() {
        let e = parse(
            r#"
[[host]]
name = "a"
cluster = "n"
parents = ["b"]
[[host]]
name = "b"
cluster = "n"
parents = ["c"]
[[host]]
name = "c"
cluster = "n"
parents = ["a"]
"#,
        )
        .unwrap_err();
        assert!(e.iter().any(|m| m.contains("loop")), "{e:?}");
        let e = parse("[[host]]\nname = \"a\"\ncluster = \"n\"\nparents = [\"a\"]\n").unwrap_err();
        assert!(e[0].contains("own parent"), "{e:?}");
        let e =
            parse("[[host]]\nname = \"a\"\ncluster = \"n\"\n[[host]]\nname = \"a\"\ncluster = \"n\"\n").unwrap_err();
        assert!(e[0].contains("defined twice"), "{e:?}");
        let e = parse("[[host]]\nname = \"a\"\ncluster = \"n\"\ncheck_command = \"'unclosed\"\n").unwrap_err();
        assert!(e[0].contains("check_command"), "{e:?}");
    }
}

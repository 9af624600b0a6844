//! Host facts: names, versions, sizes and addresses that change rarely.
//!
//! Addresses come from `/proc/net/fib_trie` (IPv4 addresses the kernel considers
//! local) and `/proc/net/if_inet6` (IPv6 addresses of global scope), so no
//! `getifaddrs` binding is needed and tests can use fixtures. Loopback and link-local
//! addresses are left out: they say nothing about where the host is.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ganglion_proto::msg::Facts;

use super::cpu::parse_stat;
use super::memory::parse_meminfo;
use super::HostConfig;

/// Where the OS name is found, in order (os-release(5)).
const OS_RELEASE: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];

/// Gathers the host's facts. A source that cannot be read leaves its fields at their
/// defaults and is logged; facts never fail as a whole.
pub fn facts(cfg: &HostConfig, tags: BTreeMap<String, String>) -> Facts {
    let uname = rustix::system::uname();
    let mut f = Facts {
        hostname: uname.nodename().to_string_lossy().into_owned(),
        kernel: uname.release().to_string_lossy().into_owned(),
        arch: uname.machine().to_string_lossy().into_owned(),
        tags,
        ..Facts::default()
    };
    f.os = OS_RELEASE
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().and_then(|t| parse_os_release(&t)))
        .unwrap_or_else(|| "Linux".to_owned());
    match read(&cfg.proc_root.join("stat")).map(|t| parse_stat(&t).map_err(str::to_owned)) {
        Ok(Ok(stat)) => {
            f.cpu_count = stat.cpu_count;
            f.boottime = stat.btime.unwrap_or(0);
        }
        Ok(Err(e)) | Err(e) => tracing::warn!(error = %e, "Could not read CPU count and boot time for the host facts."),
    }
    match read(&cfg.proc_root.join("meminfo")).map(|t| parse_meminfo(&t).map_err(str::to_owned)) {
        Ok(Ok(m)) => f.mem_total_bytes = m.total.saturating_mul(1024),
        Ok(Err(e)) | Err(e) => tracing::warn!(error = %e, "Could not read the memory size for the host facts."),
    }
    let net = cfg.proc_root.join("net");
    let mut addresses: Vec<String> = Vec::new();
    if let Ok(t) = read(&net.join("fib_trie")) {
        addresses.extend(parse_fib_trie(&t).into_iter().map(|a| a.to_string()));
    }
    if let Ok(t) = read(&net.join("if_inet6")) {
        addresses.extend(parse_if_inet6(&t).into_iter().map(|a| a.to_string()));
    }
    f.addresses = addresses;
    f
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `PRETTY_NAME` of an os-release file, quotes removed.
pub(crate) fn parse_os_release(text: &str) -> Option<String> {
    let value = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?.trim();
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    let cleaned: String = unquoted.replace("\\\"", "\"").chars().filter(|c| !c.is_control()).collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// Local IPv4 addresses from `/proc/net/fib_trie`: the `|-- a.b.c.d` leaf followed by
/// a `/32 host LOCAL` line, loopback excluded; sorted, without duplicates (the file
/// lists the main and local tables).
pub(crate) fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut leaf = None;
    for line in text.lines() {
        let line = line.trim_start();
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.trim().parse::<Ipv4Addr>().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(a) = leaf.take() {
                if !a.is_loopback() {
                    out.push(a);
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Global-scope IPv6 addresses from `/proc/net/if_inet6`
/// (`fd000000000000000000000000000002 04 40 00 82 eth0`), sorted.
pub(crate) fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut out: Vec<Ipv6Addr> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let hex = f.next()?;
            let scope = f.nth(2)?;
            if hex.len() != 32 || scope != "00" {
                return None;
            }
            let a = Ipv6Addr::from(u128::from_str_radix(hex, 16).ok()?);
            (!a.is_loopback()).then_some(a)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::fixture;
    use proptest::prelude::*;

    #[test]
    fn reads_pretty_name() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(parse_os_release(t).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(parse_os_release("PRETTY_NAME=Alpine\n").as_deref(), Some("Alpine"));
        assert_eq!(parse_os_release("PRETTY_NAME=''\n"), None);
        assert_eq!(parse_os_release("ID=x\n"), None);
    }

    #[test]
    fn finds_local_addresses_without_loopback_or_link_local() {
        let v4 = parse_fib_trie(&std::fs::read_to_string(fixture("vm/t0/net/fib_trie")).unwrap());
        assert_eq!(v4, [Ipv4Addr::new(10, 0, 3, 17), Ipv4Addr::new(172, 17, 0, 1)]);
        let v6 = parse_if_inet6(&std::fs::read_to_string(fixture("vm/t0/net/if_inet6")).unwrap());
        assert_eq!(v6, ["2001:db8:10::17".parse::<Ipv6Addr>().unwrap()]);
    }

    #[test]
    fn facts_from_fixture_root() {
        let cfg = HostConfig { proc_root: fixture("vm/t0"), ..HostConfig::default() };
        let f = facts(&cfg, BTreeMap::from([("role".to_owned(), "db".to_owned())]));
        assert_eq!(f.cpu_count, 4);
        assert_eq!(f.boottime, 1_717_400_000);
        assert_eq!(f.mem_total_bytes, 16_365_060 * 1024);
        assert_eq!(f.addresses, ["10.0.3.17", "172.17.0.1", "2001:db8:10::17"]);
        assert_eq!(f.tags["role"], "db");
        assert!(!f.hostname.is_empty() && !f.kernel.is_empty() && !f.arch.is_empty());
    }

    #[test]
    fn facts_survive_a_missing_proc() {
        let cfg = HostConfig { proc_root: "/nonexistent/proc".into(), ..HostConfig::default() };
        let f = facts(&cfg, BTreeMap::new());
        assert_eq!((f.cpu_count, f.mem_total_bytes), (0, 0));
        assert!(f.addresses.is_empty());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,400}") {
            let _ = parse_os_release(&s);
            let _ = parse_fib_trie(&s);
            let _ = parse_if_inet6(&s);
        }
    }
}

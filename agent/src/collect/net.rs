//! Network traffic from `/proc/net/dev`, per interface and in total.
//!
//! `lo` is left out everywhere: loopback traffic never leaves the host. Interfaces
//! whose name starts with one of the configured skip prefixes are left out too, so an
//! operator can silence short-lived ones (`veth` on container hosts).
//!
//! The totals (`bytes_in`, …) are the sums of the per-interface rates that exist for
//! the interval: an interface seen for the first time, or whose counter went
//! backwards, adds nothing to that interval's total rather than a spike. When no
//! interface has a rate for a metric, the total is absent too, never a false zero.

use std::collections::HashMap;
use std::time::Instant;

use super::rate::rate;
use super::{gauge, metric_names, Reading};

/// Counters kept per interface, in the order of [`METRICS`].
pub(crate) const FIELDS: usize = 8;

/// Per-interface suffix and total name, unit, description; same order as the
/// counters returned by [`parse_net_dev_line`].
const METRICS: [(&str, &str, &str); FIELDS] = [
    ("bytes_in", "bytes/sec", "Bytes received per second."),
    ("pkts_in", "packets/sec", "Packets received per second."),
    ("errs_in", "errors/sec", "Receive errors per second."),
    ("drops_in", "packets/sec", "Received packets dropped per second."),
    ("bytes_out", "bytes/sec", "Bytes sent per second."),
    ("pkts_out", "packets/sec", "Packets sent per second."),
    ("errs_out", "errors/sec", "Transmit errors per second."),
    ("drops_out", "packets/sec", "Packets dropped on transmit per second."),
];

/// Parses one `/proc/net/dev` line into the interface name and its counters (rx
/// bytes, packets, errs, drop, tx bytes, packets, errs, drop); `None` for the two
/// header lines and anything else that is not an interface line.
pub(crate) fn parse_net_dev_line(line: &str) -> Option<(&str, [u64; FIELDS])> {
    // Old kernels print `eth0:123` with no space once the number is wide, so split at
    // the colon rather than on whitespace; numbers never contain one.
    let (name, rest) = line.rsplit_once(':')?;
    let name = name.trim();
    if name.is_empty() || name.contains('|') {
        return None;
    }
    let mut v = [0u64; 16];
    let mut n = 0;
    for (slot, field) in v.iter_mut().zip(rest.split_ascii_whitespace()) {
        *slot = field.parse().ok()?;
        n += 1;
    }
    if n < 16 {
        return None;
    }
    Some((name, [v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]]))
}

#[derive(Debug)]
struct IfState {
    /// `net_<sanitized name>_<suffix>` for each row of [`METRICS`], built once.
    names: [String; FIELDS],
    prev: [u64; FIELDS],
    seen: u64,
}

/// Previous counters of every interface, and when they were read.
#[derive(Debug, Default)]
pub(crate) struct Interfaces {
    interfaces: HashMap<String, IfState>,
    at: Option<Instant>,
    generation: u64,
}

impl Interfaces {
    /// Turns a fresh `/proc/net/dev` into readings, remembering the counters for the
    /// next call.
    pub(crate) fn update(&mut self, text: &str, now: Instant, skip: &[String], out: &mut Vec<Reading>) {
        self.generation += 1;
        // No time passed (or `now` went backwards): nothing to divide by, no rates.
        let secs = self.at.map(|at| now.saturating_duration_since(at).as_secs_f64()).filter(|s| *s > 0.0);
        let mut totals: [Option<f64>; FIELDS] = [None; FIELDS];
        for (name, cur) in text.lines().filter_map(parse_net_dev_line) {
            if name == "lo" || skip.iter().any(|p| name.starts_with(p.as_str())) {
                continue;
            }
            let Some(state) = self.interfaces.get_mut(name) else {
                let names = metric_names("net", name, METRICS.map(|(suffix, ..)| suffix));
                self.interfaces.insert(name.to_owned(), IfState { names, prev: cur, seen: self.generation });
                continue;
            };
            state.seen = self.generation;
            if let Some(secs) = secs {
                for (i, (_, unit, description)) in METRICS.iter().enumerate() {
                    if let Some(r) = rate(state.prev[i], cur[i], secs) {
                        out.push(gauge(state.names[i].clone(), unit, "network", *description, r));
                        totals[i] = Some(totals[i].unwrap_or(0.0) + r);
                    }
                }
            }
            state.prev = cur;
        }
        for (total, (name, unit, description)) in totals.iter().zip(METRICS) {
            if let Some(v) = total {
                out.push(gauge(name, unit, "network", description, *v));
            }
        }
        let generation = self.generation;
        self.interfaces.retain(|_, s| s.seen == generation);
        self.at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{fixture, value};
    use proptest::prelude::*;
    use std::time::Duration;

    fn line(name: &str, rx: u64, tx: u64) -> String {
        format!("{name}: {rx} {} 0 0 0 0 0 0 {tx} {} 0 0 0 0 0 0\n", rx / 100, tx / 100)
    }

    #[test]
    fn computes_rates_and_totals_without_loopback() {
        let t0 = Instant::now();
        let mut ifs = Interfaces::default();
        let mut out = Vec::new();
        let read = |t| std::fs::read_to_string(fixture(&format!("vm/{t}/net/dev"))).unwrap();
        ifs.update(&read("t0"), t0, &[], &mut out);
        assert!(out.is_empty());
        ifs.update(&read("t1"), t0 + Duration::from_secs(10), &[], &mut out);
        // eth0 over 10 s (see the fixture's README): rx +12_345_670 bytes, +9_870
        // packets, +3 errs, +7 drops; tx +2_000_000 bytes, +4_000 packets.
        assert_eq!(value(&out, "net_eth0_bytes_in"), Some(1_234_567.0));
        assert_eq!(value(&out, "net_eth0_pkts_in"), Some(987.0));
        assert_eq!(value(&out, "net_eth0_errs_in"), Some(0.3));
        assert_eq!(value(&out, "net_eth0_drops_in"), Some(0.7));
        assert_eq!(value(&out, "net_eth0_bytes_out"), Some(200_000.0));
        assert_eq!(value(&out, "net_eth0_pkts_out"), Some(400.0));
        assert_eq!(value(&out, "net_lo_bytes_in"), None);
        // docker0 +1000 rx, +500 tx bytes; lo's 1 MB/s is not in the total.
        assert_eq!(value(&out, "net_docker0_bytes_in"), Some(100.0));
        assert_eq!(value(&out, "bytes_in"), Some(1_234_667.0));
        assert_eq!(value(&out, "bytes_out"), Some(200_050.0));
        assert_eq!(value(&out, "errs_out"), Some(0.0));
    }

    #[test]
    fn interface_reset_gives_no_spike_and_no_total_from_it() {
        let t0 = Instant::now();
        let mut ifs = Interfaces::default();
        let mut out = Vec::new();
        ifs.update(&format!("{}{}", line("eth0", 50_000_000_000, 9_000), line("eth1", 1000, 1000)), t0, &[], &mut out);
        // eth0 was reset (driver reload): its counters start again from small values.
        let t1 = t0 + Duration::from_secs(10);
        ifs.update(&format!("{}{}", line("eth0", 2_000, 10_000), line("eth1", 2000, 1000)), t1, &[], &mut out);
        assert_eq!(value(&out, "net_eth0_bytes_in"), None);
        assert_eq!(value(&out, "net_eth0_bytes_out"), Some(100.0));
        assert_eq!(value(&out, "bytes_in"), Some(100.0), "only eth1 in the total");
        assert_eq!(value(&out, "bytes_out"), Some(100.0));
    }

    #[test]
    fn hot_plugged_interface_counts_from_second_sighting() {
        let t0 = Instant::now();
        let mut ifs = Interfaces::default();
        let mut out = Vec::new();
        ifs.update(&line("eth0", 1000, 1000), t0, &[], &mut out);
        ifs.update(
            &format!("{}{}", line("eth0", 2000, 1000), line("wg0", 7_000_000, 0)),
            t0 + Duration::from_secs(10),
            &[],
            &mut out,
        );
        assert_eq!(value(&out, "net_wg0_bytes_in"), None);
        assert_eq!(value(&out, "bytes_in"), Some(100.0));
        out.clear();
        ifs.update(
            &format!("{}{}", line("eth0", 2000, 1000), line("wg0", 7_001_000, 0)),
            t0 + Duration::from_secs(20),
            &[],
            &mut out,
        );
        assert_eq!(value(&out, "net_wg0_bytes_in"), Some(100.0));
        assert_eq!(value(&out, "bytes_in"), Some(100.0));
    }

    #[test]
    fn no_rates_when_no_time_passed() {
        let t0 = Instant::now();
        let mut ifs = Interfaces::default();
        let mut out = Vec::new();
        ifs.update(&line("eth0", 1000, 1000), t0, &[], &mut out);
        ifs.update(&line("eth0", 2000, 1000), t0, &[], &mut out);
        assert!(out.is_empty(), "{out:?}");
        // The counters were still taken: the next rate is measured from them.
        ifs.update(&line("eth0", 3000, 1000), t0 + Duration::from_secs(10), &[], &mut out);
        assert_eq!(value(&out, "net_eth0_bytes_in"), Some(100.0));
    }

    #[test]
    fn skip_prefixes_apply_to_interfaces() {
        let t0 = Instant::now();
        let mut ifs = Interfaces::default();
        let mut out = Vec::new();
        let skip = vec!["veth".to_owned()];
        ifs.update(&line("veth12ab", 0, 0), t0, &skip, &mut out);
        ifs.update(&line("veth12ab", 1000, 0), t0 + Duration::from_secs(1), &skip, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn parses_old_kernel_line_without_space_after_colon() {
        let (name, c) = parse_net_dev_line("  eth0:58547320    2357    0    0    0     0          0         0   123800    1207    0    0    0     0       0          0").unwrap();
        assert_eq!((name, c[0], c[1], c[4], c[5]), ("eth0", 58_547_320, 2357, 123_800, 1207));
        assert_eq!(
            parse_net_dev_line("Inter-|   Receive                                                |  Transmit"),
            None
        );
        assert_eq!(parse_net_dev_line(" face |bytes    packets errs drop fifo frame compressed multicast|bytes"), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,400}", nums in proptest::collection::vec(any::<u64>(), 0..20)) {
            let _ = parse_net_dev_line(&s);
            let joined = nums.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
            let mut ifs = Interfaces::default();
            let mut out = Vec::new();
            let t0 = Instant::now();
            ifs.update(&format!("eth0: {joined}\n{s}"), t0, &[], &mut out);
            ifs.update(&format!("{s}\neth0: {joined}"), t0 + Duration::from_secs(1), &[], &mut out);
            for r in &out {
                prop_assert!(r.value.is_finite() && r.value >= 0.0, "{r:?}");
            }
        }
    }
}

//! Memory and swap from `/proc/meminfo`, in KiB as the kernel prints them.
//!
//! `mem_cached` is `Cached + SReclaimable`, the "cache" column of `free -w` (procps
//! 3.3.10 and later): reclaimable slab is page-cache-like memory the kernel gives back
//! under pressure, and with it `mem_total - mem_free - mem_buffers - mem_cached` is
//! exactly what `free` shows as "used".

use super::{gauge, Reading};

/// The `/proc/meminfo` fields the agent reports, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemInfo {
    pub total: u64,
    pub free: u64,
    /// Absent before Linux 3.14.
    pub available: Option<u64>,
    pub buffers: Option<u64>,
    pub cached: Option<u64>,
    pub sreclaimable: Option<u64>,
    pub shmem: Option<u64>,
    pub swap_total: Option<u64>,
    pub swap_free: Option<u64>,
}

/// Parses `/proc/meminfo`.
///
/// # Errors
/// When `MemTotal` or `MemFree` is missing or not a number; other fields are
/// optional because their presence depends on the kernel version and configuration.
pub(crate) fn parse_meminfo(text: &str) -> Result<MemInfo, &'static str> {
    let mut total = None;
    let mut free = None;
    let mut m = MemInfo::default();
    // The fields wanted are all in the first half of the file (SReclaimable is about
    // line 23 of 55), so the parse stops once each was seen.
    let mut seen = 0u16;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else { continue };
        let (bit, slot) = match key {
            "MemTotal" => (0, &mut total),
            "MemFree" => (1, &mut free),
            "MemAvailable" => (2, &mut m.available),
            "Buffers" => (3, &mut m.buffers),
            "Cached" => (4, &mut m.cached),
            "SReclaimable" => (5, &mut m.sreclaimable),
            "Shmem" => (6, &mut m.shmem),
            "SwapTotal" => (7, &mut m.swap_total),
            "SwapFree" => (8, &mut m.swap_free),
            _ => continue,
        };
        *slot = rest.split_ascii_whitespace().next().and_then(|v| v.parse().ok());
        seen |= 1 << bit;
        if seen == (1 << 9) - 1 {
            break;
        }
    }
    m.total = total.ok_or("MemTotal missing or not a number")?;
    m.free = free.ok_or("MemFree missing or not a number")?;
    Ok(m)
}

pub(crate) fn push_meminfo(out: &mut Vec<Reading>, m: &MemInfo) {
    let cached = m.cached.map(|c| c.saturating_add(m.sreclaimable.unwrap_or(0)));
    let rows: [(&str, Option<u64>, &'static str); 8] = [
        ("mem_total", Some(m.total), "Usable physical memory (MemTotal)."),
        ("mem_free", Some(m.free), "Memory not used at all (MemFree)."),
        (
            "mem_available",
            m.available,
            "Memory available for new work without swapping, the kernel's estimate (MemAvailable).",
        ),
        ("mem_buffers", m.buffers, "Memory in block device buffers (Buffers)."),
        ("mem_cached", cached, "Page cache and reclaimable slab (Cached + SReclaimable, as free -w)."),
        ("mem_shared", m.shmem, "Shared memory and tmpfs contents (Shmem)."),
        ("swap_total", m.swap_total, "Swap space (SwapTotal)."),
        ("swap_free", m.swap_free, "Swap space not in use (SwapFree)."),
    ];
    for (name, value, description) in rows {
        if let Some(v) = value {
            out.push(gauge(name, "KiB", "memory", description, v as f64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::fixture;
    use proptest::prelude::*;

    #[test]
    fn parses_meminfo_of_a_vm() {
        let m = parse_meminfo(&std::fs::read_to_string(fixture("vm/t0/meminfo")).unwrap()).unwrap();
        assert_eq!(m.total, 16_365_060);
        assert_eq!(m.free, 1_204_332);
        assert_eq!(m.available, Some(9_830_120));
        assert_eq!(m.buffers, Some(402_120));
        assert_eq!(m.cached, Some(7_650_440));
        assert_eq!(m.sreclaimable, Some(610_232));
        assert_eq!(m.shmem, Some(120_400));
        assert_eq!((m.swap_total, m.swap_free), (Some(2_097_148), Some(2_000_000)));
        let mut out = Vec::new();
        push_meminfo(&mut out, &m);
        let cached = out.iter().find(|r| r.name == "mem_cached").unwrap();
        assert_eq!(cached.value, 8_260_672.0);
        assert_eq!(cached.desc.unit, "KiB");
    }

    #[test]
    fn old_kernel_without_memavailable_omits_it() {
        let m = parse_meminfo("MemTotal: 100 kB\nMemFree: 50 kB\nCached: 10 kB\n").unwrap();
        let mut out = Vec::new();
        push_meminfo(&mut out, &m);
        let names: Vec<_> = out.iter().map(|r| r.name.as_ref()).collect();
        assert_eq!(names, ["mem_total", "mem_free", "mem_cached"]);
        assert!(parse_meminfo("MemFree: 50 kB\n").is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,400}", lines in proptest::collection::vec("(MemTotal|MemFree|Cached|x):[ 0-9a-zk]{0,12}", 0..8)) {
            let _ = parse_meminfo(&s);
            if let Ok(m) = parse_meminfo(&lines.join("\n")) {
                push_meminfo(&mut Vec::new(), &m);
            }
        }
    }
}

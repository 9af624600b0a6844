//! CPU time, CPU count and speed, load average, boot time and uptime: `/proc/stat`,
//! `/proc/loadavg`, `/proc/uptime`, `/proc/cpuinfo` and `cpufreq` in sysfs.
//!
//! CPU percentages follow `mpstat`: the kernel already counts guest time inside
//! `user` (and guest_nice inside `nice`), so `cpu_user` is `user - guest`,
//! `cpu_nice` is `nice - guest_nice`, the interval's total is the sum of the first
//! eight fields (user … steal, guest excluded), and guest time is reported on its own
//! as `cpu_guest`. The nine percentages add up to 100.

use super::rate::delta;
use super::{gauge, Reading};

/// Number of `cpu` fields kept: user nice system idle iowait irq softirq steal guest
/// guest_nice. Older kernels print fewer; the missing ones read as zero.
const CPU_FIELDS: usize = 10;

/// The aggregate `cpu` line of `/proc/stat`, in jiffies (USER_HZ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuTimes(pub [u64; CPU_FIELDS]);

/// What the agent uses from `/proc/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pub cpu: CpuTimes,
    /// Number of `cpuN` lines, i.e. online CPUs.
    pub cpu_count: u32,
    /// Boot time in seconds since the epoch.
    pub btime: Option<i64>,
}

/// Parses `/proc/stat`.
///
/// # Errors
/// When there is no aggregate `cpu` line with at least the four oldest fields.
pub(crate) fn parse_stat(text: &str) -> Result<Stat, &'static str> {
    let mut cpu = None;
    let mut cpu_count = 0u32;
    let mut btime = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu") {
            if rest.starts_with(' ') {
                let mut times = [0u64; CPU_FIELDS];
                let mut n = 0;
                for (slot, field) in times.iter_mut().zip(rest.split_ascii_whitespace()) {
                    *slot = field.parse().map_err(|_| "cpu line has a field that is not a number")?;
                    n += 1;
                }
                if n < 4 {
                    return Err("cpu line has fewer than four fields");
                }
                cpu = Some(CpuTimes(times));
            } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
                cpu_count = cpu_count.saturating_add(1);
            }
        } else if let Some(rest) = line.strip_prefix("btime ") {
            btime = rest.trim().parse().ok();
            // Nothing the agent needs comes after btime; the per-CPU lines and the long
            // `intr` line are already behind us.
            break;
        }
    }
    Ok(Stat { cpu: cpu.ok_or("no aggregate cpu line")?, cpu_count, btime })
}

/// Share of the interval's CPU time per state, in percent; `None` for a state whose
/// counter went backwards (the kernel's iowait counter is known to do that).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuPercent {
    pub user: Option<f64>,
    pub nice: Option<f64>,
    pub system: Option<f64>,
    pub idle: Option<f64>,
    pub wio: Option<f64>,
    pub intr: Option<f64>,
    pub sintr: Option<f64>,
    pub steal: Option<f64>,
    pub guest: Option<f64>,
}

/// Percentages between two `cpu` lines, as `mpstat` computes them (see module docs).
/// `None` when no jiffy passed.
pub(crate) fn cpu_percent(prev: &CpuTimes, cur: &CpuTimes) -> Option<CpuPercent> {
    let mut d = [None; CPU_FIELDS];
    for (i, slot) in d.iter_mut().enumerate() {
        *slot = delta(prev.0[i], cur.0[i]);
    }
    // A field that went backwards counts as zero in the total, as in sysstat.
    let total: u64 = d[..8].iter().map(|x| x.unwrap_or(0)).sum();
    if total == 0 {
        return None;
    }
    let pct = |v: Option<u64>| v.map(|v| v as f64 * 100.0 / total as f64);
    let guest = d[8].unwrap_or(0);
    let guest_nice = d[9].unwrap_or(0);
    Some(CpuPercent {
        user: pct(d[0].map(|u| u.saturating_sub(guest))),
        nice: pct(d[1].map(|n| n.saturating_sub(guest_nice))),
        system: pct(d[2]),
        idle: pct(d[3]),
        wio: pct(d[4]),
        intr: pct(d[5]),
        sintr: pct(d[6]),
        steal: pct(d[7]),
        guest: pct(d[8].zip(d[9]).map(|(g, gn)| g + gn)),
    })
}

pub(crate) fn push_cpu_percent(out: &mut Vec<Reading>, p: &CpuPercent) {
    let rows: [(&str, Option<f64>, &'static str); 9] = [
        ("cpu_user", p.user, "CPU time in user mode, guest time excluded (mpstat %usr)."),
        ("cpu_nice", p.nice, "CPU time in user mode at low priority, guest time excluded (mpstat %nice)."),
        ("cpu_system", p.system, "CPU time in the kernel (mpstat %sys)."),
        ("cpu_idle", p.idle, "CPU time idle with no I/O outstanding (mpstat %idle)."),
        ("cpu_wio", p.wio, "CPU time idle while waiting for I/O (mpstat %iowait)."),
        ("cpu_intr", p.intr, "CPU time servicing hardware interrupts (mpstat %irq)."),
        ("cpu_sintr", p.sintr, "CPU time servicing soft interrupts (mpstat %soft)."),
        ("cpu_steal", p.steal, "CPU time the hypervisor gave to other guests (mpstat %steal)."),
        ("cpu_guest", p.guest, "CPU time running virtual machines, nice or not (mpstat %guest + %gnice)."),
    ];
    for (name, value, description) in rows {
        if let Some(v) = value {
            out.push(gauge(name, "%", "cpu", description, v));
        }
    }
}

/// `/proc/loadavg`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    pub running: u64,
    pub total: u64,
}

/// Parses `/proc/loadavg` (`0.21 0.19 0.07 1/81 6747`).
///
/// # Errors
/// When a field is missing or not a number.
pub(crate) fn parse_loadavg(text: &str) -> Result<LoadAvg, &'static str> {
    let mut f = text.split_ascii_whitespace();
    let mut load = || -> Result<f64, &'static str> {
        let v: f64 = f.next().ok_or("missing field")?.parse().map_err(|_| "load is not a number")?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err("load is not finite")
        }
    };
    let (one, five, fifteen) = (load()?, load()?, load()?);
    let procs = f.next().ok_or("missing running/total field")?;
    let (running, total) = procs.split_once('/').ok_or("running/total field has no '/'")?;
    Ok(LoadAvg {
        one,
        five,
        fifteen,
        running: running.parse().map_err(|_| "running is not a number")?,
        total: total.parse().map_err(|_| "total is not a number")?,
    })
}

pub(crate) fn push_loadavg(out: &mut Vec<Reading>, l: &LoadAvg) {
    out.push(gauge("load_one", "", "load", "Load average over one minute.", l.one));
    out.push(gauge("load_five", "", "load", "Load average over five minutes.", l.five));
    out.push(gauge("load_fifteen", "", "load", "Load average over fifteen minutes.", l.fifteen));
    out.push(gauge(
        "proc_run",
        "processes",
        "process",
        "Runnable threads, this agent included (/proc/loadavg).",
        l.running as f64,
    ));
    out.push(gauge("proc_total", "processes", "process", "Threads in existence (/proc/loadavg).", l.total as f64));
}

/// Parses `/proc/uptime` (`1137.80 2138.41`) to the seconds since boot.
///
/// # Errors
/// When the first field is missing or not a finite non-negative number.
pub(crate) fn parse_uptime(text: &str) -> Result<f64, &'static str> {
    let v: f64 = text.split_ascii_whitespace().next().ok_or("empty")?.parse().map_err(|_| "uptime is not a number")?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("uptime is out of range")
    }
}

/// CPU speed in MHz from `cpufreq/cpuinfo_max_freq` (kHz), which is the nominal
/// maximum and so stable from one reading to the next.
pub(crate) fn parse_cpufreq_khz(text: &str) -> Option<f64> {
    let khz: u64 = text.trim().parse().ok()?;
    (khz > 0).then(|| khz as f64 / 1000.0)
}

/// CPU speed in MHz from the first `cpu MHz` line of `/proc/cpuinfo` (x86; other
/// architectures have no such line).
pub(crate) fn parse_cpuinfo_mhz(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split_once(':')?.1.trim().parse().ok()?;
    (mhz.is_finite() && mhz > 0.0).then_some(mhz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::fixture;
    use proptest::prelude::*;

    fn read(rel: &str) -> String {
        std::fs::read_to_string(fixture(rel)).unwrap()
    }

    #[test]
    fn parses_stat_of_a_vm() {
        let s = parse_stat(&read("vm/t0/stat")).unwrap();
        assert_eq!(s.cpu_count, 4);
        assert_eq!(s.btime, Some(1_717_400_000));
        assert_eq!(s.cpu.0, [1_203_400, 2_310, 310_220, 9_876_543, 12_090, 0, 8_410, 95_600, 150_000, 20]);
    }

    #[test]
    fn computes_cpu_percentages_like_mpstat_on_a_vm_with_steal() {
        // Between the two snapshots (see the fixture's README): user +1200 of which
        // guest +200, nice +80, system +400, idle +1600, iowait +120, irq +40,
        // softirq +160, steal +400, guest_nice +0: 4000 jiffies in all.
        let a = parse_stat(&read("vm/t0/stat")).unwrap();
        let b = parse_stat(&read("vm/t1/stat")).unwrap();
        let p = cpu_percent(&a.cpu, &b.cpu).unwrap();
        assert_eq!(p.user, Some(25.0));
        assert_eq!(p.nice, Some(2.0));
        assert_eq!(p.system, Some(10.0));
        assert_eq!(p.idle, Some(40.0));
        assert_eq!(p.wio, Some(3.0));
        assert_eq!(p.intr, Some(1.0));
        assert_eq!(p.sintr, Some(4.0));
        assert_eq!(p.steal, Some(10.0));
        assert_eq!(p.guest, Some(5.0));
        let sum: f64 = [p.user, p.nice, p.system, p.idle, p.wio, p.intr, p.sintr, p.steal, p.guest]
            .iter()
            .map(|v| v.unwrap())
            .sum();
        assert!((sum - 100.0).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn iowait_going_backwards_drops_only_cpu_wio() {
        let a = CpuTimes([100, 0, 100, 1000, 50, 0, 0, 0, 0, 0]);
        let b = CpuTimes([150, 0, 150, 1100, 40, 0, 0, 0, 0, 0]);
        let p = cpu_percent(&a, &b).unwrap();
        assert_eq!(p.wio, None);
        assert_eq!(p.user, Some(25.0));
        assert_eq!(p.idle, Some(50.0));
    }

    #[test]
    fn no_percentages_when_no_jiffy_passed() {
        let a = CpuTimes([100, 0, 100, 1000, 50, 0, 0, 0, 0, 0]);
        assert_eq!(cpu_percent(&a, &a), None);
    }

    #[test]
    fn old_kernel_stat_with_four_fields_parses() {
        let s = parse_stat("cpu  1 2 3 4\ncpu0 1 2 3 4\nbtime 5\n").unwrap();
        assert_eq!(s.cpu.0, [1, 2, 3, 4, 0, 0, 0, 0, 0, 0]);
        assert_eq!(s.cpu_count, 1);
        assert!(parse_stat("cpu  1 2 3\n").is_err());
        assert!(parse_stat("intr 5\n").is_err());
    }

    #[test]
    fn parses_loadavg_and_uptime() {
        let l = parse_loadavg(&read("vm/t0/loadavg")).unwrap();
        assert_eq!((l.one, l.five, l.fifteen, l.running, l.total), (1.52, 1.21, 0.98, 3, 612));
        assert_eq!(parse_uptime(&read("vm/t0/uptime")).unwrap(), 350_123.45);
        assert!(parse_loadavg("1 2 3 4 5").is_err());
        assert!(parse_loadavg("nan 2 3 1/4 5").is_err());
    }

    #[test]
    fn cpu_speed_prefers_max_frequency() {
        assert_eq!(parse_cpufreq_khz(&read("vm/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")), Some(3500.0));
        assert_eq!(parse_cpuinfo_mhz(&read("vm/t0/cpuinfo")), Some(2_899.998));
        assert_eq!(parse_cpuinfo_mhz("processor : 0\nBogoMIPS : 50.00\n"), None);
        assert_eq!(parse_cpufreq_khz("0\n"), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,400}", cpu in "cpu[ 0-9a-z]{0,60}\n{0,1}") {
            let _ = parse_stat(&s);
            let _ = parse_stat(&cpu);
            let _ = parse_loadavg(&s);
            let _ = parse_uptime(&s);
            let _ = parse_cpufreq_khz(&s);
            let _ = parse_cpuinfo_mhz(&s);
        }

        #[test]
        fn percentages_are_between_0_and_100(a in proptest::array::uniform10(0u64..1 << 40),
                                             d in proptest::array::uniform10(0u64..1 << 20)) {
            let mut b = a;
            for i in 0..10 {
                b[i] += d[i];
            }
            if let Some(p) = cpu_percent(&CpuTimes(a), &CpuTimes(b)) {
                for v in [p.user, p.nice, p.system, p.idle, p.wio, p.intr, p.sintr, p.steal].into_iter().flatten() {
                    prop_assert!((0.0..=100.0).contains(&v), "{v}");
                }
            }
        }
    }
}

//! `GET /graph.png` and `/graph.svg`: the query a graph URL carries (Ganglia's
//! `graph.php` names: `c`, `h`, `m`, `g`, `r`, `cs`, `ce`, `z`), reading the series
//! through the [`DashboardSource`] and drawing them with [`crate::graph`].
//!
//! Storage picks the archive closest to the resolution asked for (seconds per pixel,
//! as `rrdtool graph` does); rows finer than a pixel are then consolidated here with
//! the same function (average, min or max of the known values), so a graph never
//! draws more than about one point per pixel and a week graph reads the one-minute
//! archive, not a week of 15-second rows.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::graph::{BandPoint, GraphSpec, Line, Mode};
use crate::source::{Cf, DashboardSource};

/// The named time ranges of the range selector, in seconds.
pub const RANGES: [(&str, i64); 7] = [
    ("hour", 3600),
    ("2hr", 7200),
    ("4hr", 14_400),
    ("day", 86_400),
    ("week", 604_800),
    ("month", 2_678_400),
    ("year", 31_536_000),
];

/// Graph sizes by name: (width, height). Ganglia's names.
pub const SIZES: [(&str, u32, u32); 4] =
    [("small", 260, 110), ("medium", 400, 170), ("large", 600, 240), ("xlarge", 900, 340)];

/// What a graph URL asks for.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GraphQuery {
    /// Cluster (needed for a cluster aggregate; found from the host otherwise).
    pub c: Option<String>,
    /// Host; absent: the sum (or for percentages the mean) over the cluster's hosts.
    pub h: Option<String>,
    /// Metric.
    pub m: Option<String>,
    /// A report of several metrics: `cpu`, `load`, `mem`, `network`.
    pub g: Option<String>,
    /// Host regex for comparing hosts: one line per matching host of cluster `c`.
    pub hreg: Option<String>,
    /// Named range (`hour` … `year`); `custom` (or `cs`/`ce` given) uses `cs`/`ce`.
    pub r: Option<String>,
    /// Custom start and end, unix seconds; negative is relative to now.
    pub cs: Option<i64>,
    pub ce: Option<i64>,
    /// Named size; `w`/`ht` override.
    pub z: Option<String>,
    pub w: Option<u32>,
    pub ht: Option<u32>,
    /// `1` stacks the lines.
    pub stack: Option<u8>,
    pub title: Option<String>,
    /// `0` leaves the legend out.
    pub legend: Option<u8>,
    /// `AVERAGE` (default), `MIN`, `MAX`, `LAST`.
    pub cf: Option<String>,
    /// `1` draws the MIN–MAX band around the line where the archives keep them.
    pub band: Option<u8>,
}

/// A graph request that cannot be served, with its status.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
}

/// `(start, end)` of a query at `now`.
///
/// # Errors
/// An unknown range name or an empty custom range.
pub fn time_range(r: Option<&str>, cs: Option<i64>, ce: Option<i64>, now: i64) -> Result<(i64, i64), ChartError> {
    let abs = |t: i64| if t <= 0 { now + t } else { t };
    if r == Some("custom") || (r.is_none() && (cs.is_some() || ce.is_some())) {
        let end = abs(ce.unwrap_or(now));
        let start = abs(cs.unwrap_or(end - 3600));
        if end <= start {
            return Err(ChartError::BadRequest("the custom range must end after it starts".into()));
        }
        if end - start > 20 * 365 * 86_400 {
            return Err(ChartError::BadRequest("the custom range is longer than 20 years".into()));
        }
        return Ok((start, end));
    }
    let name = r.unwrap_or("hour");
    let secs = RANGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|r| r.1)
        .ok_or_else(|| ChartError::BadRequest(format!("unknown range {:?}", crate::html::clip(name, 40))))?;
    Ok((now - secs, now))
}

fn size_of(q: &GraphQuery) -> Result<(u32, u32), ChartError> {
    let name = q.z.as_deref().unwrap_or("medium");
    let (_, w, h) = SIZES
        .iter()
        .copied()
        .find(|s| s.0 == name)
        .ok_or_else(|| ChartError::BadRequest(format!("unknown size {:?}", crate::html::clip(name, 40))))?;
    Ok((q.w.unwrap_or(w), q.ht.unwrap_or(h)))
}

fn cf_of(q: &GraphQuery) -> Result<Cf, ChartError> {
    match q.cf.as_deref().unwrap_or("AVERAGE").to_ascii_uppercase().as_str() {
        "AVERAGE" => Ok(Cf::Average),
        "MIN" => Ok(Cf::Min),
        "MAX" => Ok(Cf::Max),
        "LAST" => Ok(Cf::Last),
        _ => Err(ChartError::BadRequest("cf must be AVERAGE, MIN, MAX or LAST".into())),
    }
}

/// The cache key of a graph query: every parameter that changes the drawing, with
/// defaults filled in and equivalent spellings made equal (`z=large` and `w=600&ht=240`,
/// `cf=max` and `cf=MAX`); the time range by name or as given, since it is resolved
/// against `now` when the entry is checked. `None` for a query `build` would refuse.
pub fn cache_key(q: &GraphQuery, svg: bool) -> Option<String> {
    let (w, h) = size_of(q).ok()?;
    let cf = cf_of(q).ok()?;
    let range = match (q.r.as_deref(), q.cs, q.ce) {
        (Some("custom"), cs, ce) | (None, cs @ Some(_), ce) | (None, cs, ce @ Some(_)) => {
            format!("custom:{cs:?}:{ce:?}")
        }
        (r, _, _) => r.unwrap_or("hour").to_owned(),
    };
    // Absent and empty differ for some parameters (`hreg=` matches every host).
    let field = |v: &Option<String>| {
        v.as_deref().map_or_else(|| "-".to_owned(), |v| format!("+{}", v.replace('\\', "\\\\").replace('|', "\\|")))
    };
    Some(format!(
        "{}|{w}x{h}|{cf:?}|{range}|c={}|h={}|m={}|g={}|hreg={}|title={}|stack={:?}|legend={}|band={}",
        if svg { "svg" } else { "png" },
        field(&q.c),
        field(&q.h),
        field(&q.m),
        field(&q.g),
        field(&q.hreg),
        field(&q.title),
        q.stack,
        q.legend != Some(0),
        q.band == Some(1),
    ))
}

/// One line of a report: metric, label, colour.
type ReportLine = (&'static str, &'static str, (u8, u8, u8));

/// Ganglia's standard reports.
fn report(name: &str) -> Option<(&'static str, Mode, &'static [ReportLine])> {
    const CPU: &[ReportLine] = &[
        ("cpu_user", "User", (0x33, 0x66, 0xcc)),
        ("cpu_nice", "Nice", (0x66, 0x99, 0xff)),
        ("cpu_system", "System", (0xdd, 0x44, 0x22)),
        ("cpu_wio", "Wait", (0xff, 0x99, 0x00)),
        ("cpu_steal", "Steal", (0x99, 0x00, 0x99)),
    ];
    const LOAD: &[ReportLine] = &[
        ("load_one", "1-min load", (0x33, 0x66, 0xcc)),
        ("cpu_num", "CPUs", (0xdd, 0x44, 0x22)),
        ("proc_run", "Running", (0x10, 0x96, 0x18)),
    ];
    // The agent reports what /proc/meminfo has (no "used"): total and available as
    // lines, with the cache and the free memory under them.
    const MEM: &[ReportLine] = &[
        ("mem_total", "Total", (0x99, 0x99, 0x99)),
        ("mem_available", "Available", (0x33, 0x66, 0xcc)),
        ("mem_cached", "Cache", (0x10, 0x96, 0x18)),
        ("mem_free", "Free", (0xff, 0x99, 0x00)),
    ];
    const NET: &[ReportLine] = &[("bytes_in", "In", (0x10, 0x96, 0x18)), ("bytes_out", "Out", (0x33, 0x66, 0xcc))];
    match name {
        "cpu" => Some(("CPU", Mode::Stacked, CPU)),
        "load" => Some(("Load", Mode::Lines, LOAD)),
        "mem" => Some(("Memory", Mode::Lines, MEM)),
        "network" => Some(("Network", Mode::Lines, NET)),
        _ => None,
    }
}

/// Names of the standard reports, in the order pages show them.
pub const REPORTS: [&str; 4] = ["load", "cpu", "mem", "network"];

/// `(unix seconds, value)` of one line.
pub type Points = Vec<(i64, Option<f64>)>;

/// Reads one series over `[start, end]` and consolidates it to at most `pixels` points.
fn read(
    src: &dyn DashboardSource,
    (cluster, host, metric): (&str, &str, &str),
    cf: Cf,
    (start, end): (i64, i64),
    pixels: u32,
) -> Result<Option<Points>, ChartError> {
    let resolution = ((end - start) / i64::from(pixels.max(1))).max(1) as u64;
    let series = crate::source::SeriesRef { cluster, host, metric };
    let fetched = match src.fetch(&series, cf, start, end, resolution) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        // A consolidation the archives do not keep (MIN with Ganglia's archive set) is
        // not an error for a band: the band is simply not drawn.
        Err(e) if e.contains("CF") || e.contains("consolidation") => return Ok(None),
        Err(e) => return Err(ChartError::Internal(e)),
    };
    let (lo, hi) = (start - fetched.step, end + fetched.step);
    let pts: Vec<(i64, Option<f64>)> = (1..)
        .map(|i| fetched.start + i * fetched.step)
        .zip(fetched.values.iter().copied())
        .filter(|(t, _)| *t > lo && *t <= hi)
        .collect();
    Ok(Some(consolidate(&pts, pixels as usize, cf)))
}

/// Merges consecutive rows so that at most `max` points remain, with the
/// consolidation function of the archive (known values only; unknown when none is).
pub fn consolidate(pts: &[(i64, Option<f64>)], max: usize, cf: Cf) -> Vec<(i64, Option<f64>)> {
    if pts.len() <= max.max(1) {
        return pts.to_vec();
    }
    let per = pts.len().div_ceil(max.max(1));
    pts.chunks(per)
        .map(|chunk| {
            let t = chunk.last().map_or(0, |p| p.0);
            let known = chunk.iter().filter_map(|p| p.1.filter(|v| v.is_finite()));
            let v = match cf {
                Cf::Max => known.fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v)))),
                Cf::Min => known.fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.min(v)))),
                Cf::Last => chunk.iter().rev().find_map(|p| p.1.filter(|v| v.is_finite())),
                Cf::Average => {
                    let (s, n) = known.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
                    (n > 0).then(|| s / n as f64)
                }
            };
            (t, v)
        })
        .collect()
}

/// Sum (or mean) per time over several series, counting known values only.
fn aggregate(series: &[Vec<(i64, Option<f64>)>], mean: bool) -> Vec<(i64, Option<f64>)> {
    let mut acc: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
    for s in series {
        for (t, v) in s {
            let e = acc.entry(*t).or_insert((0.0, 0));
            if let Some(v) = v.filter(|v| v.is_finite()) {
                e.0 += v;
                e.1 += 1;
            }
        }
    }
    acc.into_iter().map(|(t, (s, n))| (t, (n > 0).then(|| if mean { s / n as f64 } else { s }))).collect()
}

/// Builds the graph a query describes, reading every series it needs.
///
/// # Errors
/// [`ChartError::BadRequest`] for a query that makes no sense, `NotFound` for an unknown
/// host, cluster or series, `Internal` for a storage failure.
pub fn build(src: &dyn DashboardSource, q: &GraphQuery, now: i64) -> Result<GraphSpec, ChartError> {
    let (start, end) = time_range(q.r.as_deref(), q.cs, q.ce, now)?;
    let (width, height) = size_of(q)?;
    if !(crate::graph::MIN_WIDTH..=crate::graph::MAX_SIZE).contains(&width)
        || !(crate::graph::MIN_HEIGHT..=crate::graph::MAX_SIZE).contains(&height)
    {
        return Err(ChartError::BadRequest(format!("size {width}x{height} is out of range")));
    }
    let cf = cf_of(q)?;
    // The plot area is a little narrower than the image; one point per plot pixel.
    let pixels = width.saturating_sub(70).max(20);
    let host = q.h.as_deref().filter(|h| !h.is_empty());
    let cluster: String = match (q.c.as_deref().filter(|c| !c.is_empty()), host) {
        (Some(c), _) => c.to_owned(),
        (None, Some(h)) => src
            .host(None, h)
            .map(|d| d.host.cluster)
            .ok_or_else(|| ChartError::NotFound(format!("no host {}", crate::html::quoted(h))))?,
        (None, None) => return Err(ChartError::BadRequest("a graph needs a cluster (c) or a host (h)".into())),
    };
    let mut spec = GraphSpec { width, height, start, end, legend: q.legend != Some(0), ..GraphSpec::default() };
    if q.stack == Some(1) {
        spec.mode = Mode::Stacked;
    }
    // The hosts a cluster-wide line covers, read once.
    let cluster_hosts = || -> Result<Vec<String>, ChartError> {
        src.hosts(&cluster, "")
            .map(|hs| hs.into_iter().map(|h| h.name).collect())
            .ok_or_else(|| ChartError::NotFound(format!("no cluster {}", crate::html::quoted(&cluster))))
    };
    let unit_of = |metric: &str| -> String {
        let h = host.map(str::to_owned).or_else(|| cluster_hosts().ok().and_then(|v| v.into_iter().next()));
        h.and_then(|h| src.metric_unit(&cluster, &h, metric)).unwrap_or_default()
    };
    let where_ = host.map_or_else(|| format!("{cluster} (cluster)"), str::to_owned);

    if let Some(g) = q.g.as_deref() {
        let (title, mode, lines) = report(g)
            .ok_or_else(|| ChartError::BadRequest(format!("unknown report {:?}", crate::html::clip(g, 40))))?;
        if q.stack.is_none() {
            spec.mode = mode;
        }
        spec.title = q.title.clone().unwrap_or_else(|| format!("{title} on {where_}"));
        let hosts = match host {
            Some(h) => vec![h.to_owned()],
            None => cluster_hosts()?,
        };
        for (metric, label, color) in lines {
            // The mean for percentages (CPU), the sum for everything else, like Ganglia.
            let mean = g == "cpu";
            let mut per_host = Vec::new();
            for h in &hosts {
                if let Some(pts) = read(src, (&cluster, h, metric), cf, (start, end), pixels)? {
                    per_host.push(pts);
                }
            }
            if per_host.is_empty() {
                continue;
            }
            let points =
                if per_host.len() == 1 { per_host.pop().unwrap_or_default() } else { aggregate(&per_host, mean) };
            spec.lines.push(Line { color: Some(*color), ..Line::new(*label, unit_of(metric), points) });
        }
        spec.vertical_label = spec.lines.first().map(|l| l.unit.clone()).unwrap_or_default();
        return Ok(spec);
    }

    let metric =
        q.m.as_deref()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ChartError::BadRequest("a graph needs a metric (m) or a report (g)".into()))?;
    let unit = unit_of(metric);

    if let Some(re) = q.hreg.as_deref() {
        let re = regex::RegexBuilder::new(re).size_limit(1 << 20).build().map_err(|e| {
            ChartError::BadRequest(format!("bad host regex: {}", crate::html::clip(&e.to_string(), 200)))
        })?;
        let hosts: Vec<String> = cluster_hosts()?.into_iter().filter(|h| re.is_match(h)).take(32).collect();
        spec.title = q.title.clone().unwrap_or_else(|| format!("{metric} on {cluster}: {}", re.as_str()));
        for h in &hosts {
            if let Some(pts) = read(src, (&cluster, h, metric), cf, (start, end), pixels)? {
                spec.lines.push(Line::new(h.clone(), unit.clone(), pts));
            }
        }
        return Ok(spec);
    }

    spec.title = q.title.clone().unwrap_or_else(|| format!("{metric} on {where_}"));
    match host {
        Some(h) => {
            let pts = read(src, (&cluster, h, metric), cf, (start, end), pixels)?.ok_or_else(|| {
                ChartError::NotFound(format!(
                    "no series {} of host {}",
                    crate::html::quoted(metric),
                    crate::html::quoted(h)
                ))
            })?;
            let mut line = Line::new(metric, unit.clone(), pts);
            if q.band == Some(1) {
                let lo = read(src, (&cluster, h, metric), Cf::Min, (start, end), pixels)?;
                let hi = read(src, (&cluster, h, metric), Cf::Max, (start, end), pixels)?;
                if let Some(hi) = hi {
                    // Without a MIN archive the band runs from the average to the maximum.
                    let lo = lo.unwrap_or_else(|| line.points.clone());
                    let lo_at: BTreeMap<i64, Option<f64>> = lo.into_iter().collect();
                    let band: Vec<BandPoint> =
                        hi.into_iter().map(|(t, v)| (t, lo_at.get(&t).copied().flatten(), v)).collect();
                    line.band = Some(band);
                }
            }
            spec.lines.push(line);
        }
        None => {
            let mut per_host = Vec::new();
            for h in cluster_hosts()? {
                if let Some(pts) = read(src, (&cluster, &h, metric), cf, (start, end), pixels)? {
                    per_host.push(pts);
                }
            }
            spec.lines.push(Line::new(format!("{metric} (sum)"), unit.clone(), aggregate(&per_host, unit == "%")));
        }
    }
    spec.vertical_label = unit;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consolidates_to_at_most_max_points() {
        let pts: Vec<(i64, Option<f64>)> =
            (0..100).map(|i| (i, if i % 10 == 0 { None } else { Some(i as f64) })).collect();
        let c = consolidate(&pts, 10, Cf::Average);
        assert_eq!(c.len(), 10);
        assert_eq!(c[0], (9, Some(5.0)));
        let c = consolidate(&pts, 10, Cf::Max);
        assert_eq!(c[1], (19, Some(19.0)));
        let all_unknown: Vec<(i64, Option<f64>)> = (0..100).map(|i| (i, None)).collect();
        assert!(consolidate(&all_unknown, 7, Cf::Average).iter().all(|p| p.1.is_none()));
    }

    #[test]
    fn ranges() {
        assert_eq!(time_range(Some("day"), None, None, 100_000).unwrap(), (100_000 - 86_400, 100_000));
        assert_eq!(time_range(None, Some(-600), None, 100_000).unwrap(), (99_400, 100_000));
        assert_eq!(time_range(Some("custom"), Some(10), Some(20), 100_000).unwrap(), (10, 20));
        assert!(time_range(Some("custom"), Some(20), Some(10), 100_000).is_err());
        assert!(time_range(Some("decade"), None, None, 100_000).is_err());
    }

    #[test]
    fn aggregate_counts_known_values_only() {
        let a = vec![(1, Some(1.0)), (2, None), (3, Some(3.0))];
        let b = vec![(1, Some(2.0)), (2, None), (3, None)];
        assert_eq!(aggregate(&[a.clone(), b.clone()], false), vec![(1, Some(3.0)), (2, None), (3, Some(3.0))]);
        assert_eq!(aggregate(&[a, b], true), vec![(1, Some(1.5)), (2, None), (3, Some(3.0))]);
    }
}

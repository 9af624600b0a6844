//! `ganglion import-rrd DIR`: brings an existing Ganglia/gmetad RRD tree
//! (`DIR/<cluster>/<host>/<metric>.rrd`) into a collector's storage with its history.
//!
//! Each file is read through `rrdtool dump` (the XML every rrdtool version writes) and
//! becomes one series per data source with the file's own step, heartbeat, limits and
//! archives, its live state (so the next sample continues exactly as rrdtool would) and
//! every archive row. `rrdtool dump` prints values with 11 significant digits, so
//! imported history is exact to about 5·10⁻¹¹ relative. A file with one data source
//! becomes `cluster/host/metric`; with several (gmetad's summaries: `sum`, `num`) the
//! data source `sum` keeps the metric name and the others become `metric:ds`.
//!
//! The collector wires this as a subcommand; the store must be open in that process
//! (the collector stopped), and series that exist already are skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::engine::{SeriesKey, Store};
use crate::rrd::{parse_printed_value, CdpPrep, Cf, DsDef, DsType, PdpPrep, RraDef, Rrd};

/// Importing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not an rrdtool dump: {0}")]
    Parse(String),
    #[error("series {0} exists already")]
    Exists(String),
    #[error("cannot import: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Store(#[from] crate::file::FileError),
}

/// What [`import_tree`] did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// `cluster/host/metric` of every series imported.
    pub imported: Vec<String>,
    /// Files (or data sources) left out, and why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Imports every `DIR/<cluster>/<host>/<metric>.rrd` into `store` with `rrdtool dump`.
///
/// # Errors
/// [`ImportError::Io`] when `dir` cannot be read; problems with single files are
/// reported in [`ImportReport::skipped`].
pub fn import_tree(store: &Store, dir: &Path) -> Result<ImportReport, ImportError> {
    import_tree_with(store, dir, rrdtool_dump)
}

/// [`import_tree`] calling `progress(k, n, file)` before file `k` of `n` (1-based), so
/// the command can show how far a long import is.
///
/// # Errors
/// As [`import_tree`].
pub fn import_tree_progress(
    store: &Store,
    dir: &Path,
    progress: impl FnMut(usize, usize, &Path),
) -> Result<ImportReport, ImportError> {
    import_tree_inner(store, dir, rrdtool_dump, progress)
}

fn rrdtool_dump(p: &Path) -> std::io::Result<String> {
    let out = Command::new("rrdtool").arg("dump").arg(p).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    String::from_utf8(out.stdout).map_err(std::io::Error::other)
}

/// [`import_tree`] with another way to get a file's dump (tests).
///
/// # Errors
/// As [`import_tree`].
pub fn import_tree_with(
    store: &Store,
    dir: &Path,
    dump: impl Fn(&Path) -> std::io::Result<String>,
) -> Result<ImportReport, ImportError> {
    import_tree_inner(store, dir, dump, |_, _, _| {})
}

fn import_tree_inner(
    store: &Store,
    dir: &Path,
    dump: impl Fn(&Path) -> std::io::Result<String>,
    mut progress: impl FnMut(usize, usize, &Path),
) -> Result<ImportReport, ImportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Io { path, source }
    };
    let mut files = Vec::new();
    for c in sorted_dir(dir).map_err(io(dir))? {
        if !c.is_dir() {
            continue;
        }
        for h in sorted_dir(&c).map_err(io(&c))? {
            if !h.is_dir() {
                continue;
            }
            for f in sorted_dir(&h).map_err(io(&h))? {
                if f.extension().is_some_and(|e| e == "rrd") {
                    files.push(f);
                }
            }
        }
    }
    let mut report = ImportReport::default();
    let total = files.len();
    for (k, f) in files.into_iter().enumerate() {
        progress(k + 1, total, &f);
        let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
        let (Some(cluster), Some(host), Some(metric)) = (
            f.parent().and_then(Path::parent).and_then(name),
            f.parent().and_then(name),
            f.file_stem().and_then(|s| s.to_str()).map(str::to_string),
        ) else {
            report.skipped.push((f.clone(), "name is not UTF-8".into()));
            continue;
        };
        let db = match dump(&f).map_err(io(&f)).and_then(|x| parse_dump(&x)) {
            Ok(db) => db,
            Err(e) => {
                report.skipped.push((f.clone(), e.to_string()));
                continue;
            }
        };
        for (i, d) in db.ds.iter().enumerate() {
            let m = if db.ds.len() == 1 || d.name == "sum" { metric.clone() } else { format!("{metric}:{}", d.name) };
            let key = SeriesKey::new(&cluster, &host, &m);
            match store.import(&key, &db, i) {
                Ok(()) => report.imported.push(key.joined()),
                Err(e) => report.skipped.push((f.clone(), format!("{}: {e}", key.joined()))),
            }
        }
    }
    Ok(report)
}

fn sorted_dir(d: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(d)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

/// One piece of the XML: a start or end tag, or text.
#[derive(Debug, PartialEq)]
enum Tok<'a> {
    Start(&'a str),
    End(&'a str),
    Text(&'a str),
}

/// The tags and texts of an rrdtool dump (comments, declarations and attributes are
/// skipped; it is not a general XML parser).
fn tokens(x: &str) -> Result<Vec<Tok<'_>>, ImportError> {
    let mut out = Vec::new();
    let mut rest = x;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or_else(|| ImportError::Parse("unterminated comment".into()))?;
            rest = &r[end + 3..];
        } else if rest.starts_with("<?") || rest.starts_with("<!") {
            let end = rest.find('>').ok_or_else(|| ImportError::Parse("unterminated declaration".into()))?;
            rest = &rest[end + 1..];
        } else if let Some(r) = rest.strip_prefix('<') {
            let end = r.find('>').ok_or_else(|| ImportError::Parse("unterminated tag".into()))?;
            let tag = r[..end].trim();
            match tag.strip_prefix('/') {
                Some(name) => out.push(Tok::End(name.trim())),
                None => {
                    let name = tag.split_whitespace().next().unwrap_or("").trim_end_matches('/');
                    out.push(Tok::Start(name));
                    if tag.ends_with('/') {
                        out.push(Tok::End(name));
                    }
                }
            }
            rest = &r[end + 1..];
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let t = rest[..end].trim();
            if !t.is_empty() {
                out.push(Tok::Text(t));
            }
            rest = &rest[end..];
        }
    }
    Ok(out)
}

fn num<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, ImportError> {
    s.trim().parse().map_err(|_| ImportError::Parse(format!("{what}: '{s}'")))
}

fn value(what: &str, s: &str) -> Result<f64, ImportError> {
    parse_printed_value(s.trim()).ok_or_else(|| ImportError::Parse(format!("{what}: '{s}'")))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// Parses the output of `rrdtool dump` (or `ganglion rrd dump`) into a database that
/// holds the same definitions, live state and rows.
///
/// # Errors
/// [`ImportError::Parse`] for anything that is not such a dump;
/// [`ImportError::Unsupported`] for data source types or archives ganglion does not
/// have (COMPUTE, Holt-Winters).
pub fn parse_dump(x: &str) -> Result<Rrd, ImportError> {
    #[derive(Default)]
    struct Ds {
        name: String,
        kind: String,
        hb: u64,
        min: f64,
        max: f64,
        last: String,
        val: f64,
        unkn: u64,
    }
    #[derive(Default)]
    struct Ra {
        cf: String,
        pdp: u64,
        xff: f64,
        cdp: Vec<CdpPrep>,
        rows: Vec<Vec<f64>>,
    }
    let toks = tokens(x)?;
    let mut path: Vec<&str> = Vec::new();
    let (mut step, mut last_up) = (None, None);
    let mut dss: Vec<Ds> = Vec::new();
    let mut ras: Vec<Ra> = Vec::new();
    for t in toks {
        match t {
            Tok::Start(n) => {
                path.push(n);
                match path.as_slice() {
                    ["rrd", "ds"] => dss.push(Ds { min: f64::NAN, max: f64::NAN, val: f64::NAN, ..Ds::default() }),
                    ["rrd", "rra"] => ras.push(Ra::default()),
                    ["rrd", "rra", "cdp_prep", "ds"] => {
                        if let Some(r) = ras.last_mut() {
                            r.cdp.push(CdpPrep { val: f64::NAN, unkn_pdp: 0, primary: f64::NAN, secondary: f64::NAN });
                        }
                    }
                    ["rrd", "rra", "database", "row"] => {
                        if let Some(r) = ras.last_mut() {
                            r.rows.push(Vec::new());
                        }
                    }
                    _ => {}
                }
            }
            Tok::End(n) => {
                if path.last() != Some(&n) {
                    return Err(ImportError::Parse(format!("</{n}> does not close <{}>", path.last().unwrap_or(&""))));
                }
                path.pop();
            }
            Tok::Text(s) => {
                let ds = dss.last_mut();
                let ra = ras.last_mut();
                match (path.as_slice(), ds, ra) {
                    (["rrd", "step"], _, _) => step = Some(num::<u64>("step", s)?),
                    (["rrd", "lastupdate"], _, _) => last_up = Some(num::<u64>("lastupdate", s)?),
                    (["rrd", "ds", f], Some(d), _) => match *f {
                        "name" => d.name = s.to_string(),
                        "type" => d.kind = s.to_string(),
                        "minimal_heartbeat" => d.hb = num("minimal_heartbeat", s)?,
                        "min" => d.min = value("min", s)?,
                        "max" => d.max = value("max", s)?,
                        "last_ds" => d.last = unescape(s),
                        "value" => d.val = value("value", s)?,
                        "unknown_sec" => d.unkn = num("unknown_sec", s)?,
                        "cdef" => return Err(ImportError::Unsupported("COMPUTE data sources".into())),
                        _ => {}
                    },
                    (["rrd", "rra", "cf"], _, Some(r)) => r.cf = s.to_string(),
                    (["rrd", "rra", "pdp_per_row"], _, Some(r)) => r.pdp = num("pdp_per_row", s)?,
                    (["rrd", "rra", "params", "xff"], _, Some(r)) => r.xff = value("xff", s)?,
                    (["rrd", "rra", "cdp_prep", "ds", f], _, Some(r)) => {
                        if let Some(c) = r.cdp.last_mut() {
                            match *f {
                                "primary_value" => c.primary = value("primary_value", s)?,
                                "secondary_value" => c.secondary = value("secondary_value", s)?,
                                "value" => c.val = value("value", s)?,
                                "unknown_datapoints" => c.unkn_pdp = num("unknown_datapoints", s)?,
                                _ => {}
                            }
                        }
                    }
                    (["rrd", "rra", "database", "row", "v"], _, Some(r)) => {
                        if let Some(row) = r.rows.last_mut() {
                            row.push(value("v", s)?);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let step = step.ok_or_else(|| ImportError::Parse("no <step>".into()))?;
    let last_up = last_up.ok_or_else(|| ImportError::Parse("no <lastupdate>".into()))?;
    if dss.is_empty() || ras.is_empty() {
        return Err(ImportError::Parse("no data sources or no archives".into()));
    }
    let mut ds = Vec::new();
    for d in &dss {
        let kind =
            DsType::parse(&d.kind).ok_or_else(|| ImportError::Unsupported(format!("data source type {}", d.kind)))?;
        ds.push(DsDef { name: d.name.clone(), kind, heartbeat: d.hb, min: d.min, max: d.max });
    }
    let mut rra = Vec::new();
    for r in &ras {
        let cf = Cf::parse(&r.cf).ok_or_else(|| ImportError::Unsupported(format!("consolidation {}", r.cf)))?;
        if r.cdp.len() != ds.len() || r.rows.is_empty() || r.rows.iter().any(|row| row.len() != ds.len()) {
            return Err(ImportError::Parse("archive does not match its data sources".into()));
        }
        rra.push(RraDef { cf, xff: r.xff, pdp_cnt: r.pdp, rows: r.rows.len() as u64 });
    }
    let mut db = Rrd::create(step, last_up, ds, rra).map_err(|e| ImportError::Parse(e.to_string()))?;
    db.last_up = last_up;
    db.pdp = dss.iter().map(|d| PdpPrep { last_ds: d.last.clone(), val: d.val, unkn_sec: d.unkn }).collect();
    let n = db.ds.len();
    for (a, r) in ras.iter().enumerate() {
        for (i, c) in r.cdp.iter().enumerate() {
            db.cdp[a * n + i] = *c;
        }
        // Rows are listed oldest first: the newest is the last row written.
        let rows = r.rows.len();
        db.cur_row[a] = rows as u64 - 1;
        let base = db.rra_offset(a);
        for (k, row) in r.rows.iter().enumerate() {
            db.data[base + k * n..base + (k + 1) * n].copy_from_slice(row);
        }
    }
    db.mark_all_dirty();
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::render_dump;

    fn db() -> Rrd {
        let ds = vec![DsDef::parse("DS:sum:GAUGE:120:U:U").unwrap(), DsDef::parse("DS:num:COUNTER:120:0:U").unwrap()];
        let rra = ["RRA:AVERAGE:0.5:1:20", "RRA:MAX:0.5:4:10", "RRA:LAST:0.3:12:5"]
            .iter()
            .map(|s| RraDef::parse(s).unwrap())
            .collect();
        let mut db = Rrd::create(15, 1_700_000_000, ds, rra).unwrap();
        for k in 1..200u64 {
            let t = 1_700_000_000 + 15 * k + k % 7;
            let v = if k % 13 == 0 { "U".to_string() } else { format!("{}", (k * 37 % 101) as f64 / 4.0) };
            db.update(t, &[&v, &format!("{}", k * 1000)]).unwrap();
        }
        db
    }

    #[test]
    fn a_dump_parses_back_to_the_same_database() {
        let a = db();
        let b = parse_dump(&render_dump(&a)).unwrap();
        assert_eq!(render_dump(&a), render_dump(&b));
        for (cf, start, res) in
            [(Cf::Average, 1_700_000_000, 1), (Cf::Max, 1_700_001_000, 60), (Cf::Last, 1_700_000_000, 180)]
        {
            let (fa, fb) = (a.fetch(cf, start, a.last_up, res).unwrap(), b.fetch(cf, start, a.last_up, res).unwrap());
            assert_eq!((fa.start, fa.step, fa.rows.len()), (fb.start, fb.step, fb.rows.len()));
            for (x, y) in fa.rows.iter().zip(&fb.rows) {
                for (x, y) in x.iter().zip(y) {
                    assert!((x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * x.abs().max(1.0), "{x} {y}");
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        /// Random databases (type, limits, archives, irregular updates with unknowns)
        /// dump and parse back to the same dump.
        #[test]
        fn random_databases_round_trip(
            kind in 0usize..4, step in 1u64..600, hb_steps in 1u64..10,
            rras in proptest::collection::vec((0usize..4, 1u64..20, 1u64..50, 0u32..10), 1..5),
            ups in proptest::collection::vec((1u64..100, proptest::option::of(-1e6f64..1e6)), 1..80),
        ) {
            let kinds = ["GAUGE", "COUNTER", "DERIVE", "ABSOLUTE"];
            let ds = vec![DsDef::parse(&format!("DS:x:{}:{}:U:U", kinds[kind], step * hb_steps)).unwrap()];
            let rra = rras.iter().map(|&(cf, pdp, rows, xff)| RraDef {
                cf: [Cf::Average, Cf::Min, Cf::Max, Cf::Last][cf], xff: f64::from(xff) / 10.0, pdp_cnt: pdp, rows,
            }).collect();
            let mut db = Rrd::create(step, 1_700_000_000, ds, rra).unwrap();
            let mut t = 1_700_000_000;
            let mut c = 1000.0f64;
            for (dt, v) in ups {
                t += dt;
                let v = match v {
                    None => "U".to_string(),
                    Some(v) if kind == 0 => format!("{v}"),
                    Some(v) => { c += v.abs().floor(); format!("{c}") }
                };
                let _ = db.update(t, &[&v]);
            }
            let text = render_dump(&db);
            let back = parse_dump(&text).unwrap();
            proptest::prop_assert_eq!(render_dump(&back), text);
        }

        /// Damaged dumps (a stretch of a real one replaced by arbitrary text) are refused
        /// or parsed, never a panic.
        #[test]
        fn damaged_dumps_never_panic(at in 0usize..4000, len in 0usize..200, junk in "\\PC{0,40}") {
            let text = render_dump(&db());
            let mut a = at.min(text.len());
            while !text.is_char_boundary(a) { a -= 1; }
            let mut b = (a + len).min(text.len());
            while !text.is_char_boundary(b) { b -= 1; }
            let damaged = format!("{}{junk}{}", &text[..a], &text[b..]);
            if let Ok(db) = parse_dump(&damaged) {
                let _ = db.fetch(Cf::Average, db.last_up.saturating_sub(600), db.last_up, 1);
                let _ = render_dump(&db);
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_dump() {
        assert!(parse_dump("<rrd><step>15</step></rrd>").is_err());
        assert!(parse_dump("<html></body>").is_err());
        assert!(parse_dump("").is_err());
        let x = render_dump(&db()).replace("GAUGE", "COMPUTE");
        assert!(matches!(parse_dump(&x), Err(ImportError::Unsupported(_))));
        // Found by fuzzing (store_import_dump): archives rrdtool cannot have.
        for (from, to) in [("<pdp_per_row>4<", "<pdp_per_row>0<"), ("<xff>5.0000000000e-01<", "<xff>2<")] {
            let good = render_dump(&db());
            assert!(good.contains(from), "{from}");
            assert!(matches!(parse_dump(&good.replacen(from, to, 1)), Err(ImportError::Parse(_))), "{to}");
        }
    }
}

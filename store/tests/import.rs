//! Import of a Ganglia RRD tree made by the real `rrdtool` (Debian package `rrdtool`):
//! every imported series fetches like `rrdtool fetch` on its file, before and after
//! both receive the same further updates.

use std::path::Path;
use std::process::Command;

use ganglion_store::engine::{DsKind, SeriesKey, Store, StoreConfig, Update};
use ganglion_store::rrd::{parse_printed_value, Cf};

fn rrdtool(args: &[&str]) -> String {
    let out = Command::new("rrdtool").args(args).output().unwrap_or_else(|e| {
        panic!("the import test needs the real rrdtool: install the Debian package `rrdtool` ({e})")
    });
    assert!(out.status.success(), "rrdtool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `rrdtool fetch` rows: (time, first value).
fn fetch_file(path: &Path, cf: &str, start: u64, end: u64) -> Vec<(u64, f64)> {
    let out = rrdtool(&["fetch", path.to_str().unwrap(), cf, "-s", &start.to_string(), "-e", &end.to_string()]);
    out.lines()
        .skip(2)
        .filter_map(|l| {
            let (t, v) = l.split_once(':')?;
            Some((t.trim().parse().ok()?, parse_printed_value(v.split_whitespace().next()?)?))
        })
        .collect()
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn a_ganglia_tree_imports_with_its_history() {
    let tree = tempfile::tempdir().unwrap();
    let files = [("grid", "web1", "cpu_user", "GAUGE"), ("grid", "web2", "bytes_in", "COUNTER")];
    let rras = ["RRA:AVERAGE:0.5:1:244", "RRA:AVERAGE:0.5:24:244", "RRA:MAX:0.5:24:244", "RRA:AVERAGE:0.5:168:244"];
    let mut paths = Vec::new();
    for (c, h, m, kind) in files {
        let dir = tree.path().join(c).join(h);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{m}.rrd"));
        let ds = format!("DS:sum:{kind}:120:U:U");
        let mut args = vec!["create", p.to_str().unwrap(), "--start", "1699900000", "--step", "15", &ds];
        args.extend(rras);
        rrdtool(&args.iter().map(|s| &**s).collect::<Vec<_>>());
        // Two days of samples with gaps, in batches.
        let mut upd = Vec::new();
        let mut t = 1_699_900_000u64;
        let mut counter = 1_000_000u64;
        for k in 0..11_000u64 {
            t += if k % 997 == 0 { 300 } else { 15 };
            counter += k % 5000;
            let v = if kind == "GAUGE" { format!("{}", (k * 37 % 1000) as f64 / 7.0) } else { counter.to_string() };
            upd.push(format!("{t}:{v}"));
        }
        for chunk in upd.chunks(1000) {
            let mut a = vec!["update".to_string(), p.to_str().unwrap().to_string()];
            a.extend(chunk.iter().cloned());
            rrdtool(&a.iter().map(String::as_str).collect::<Vec<_>>());
        }
        paths.push((p, SeriesKey::new(c, h, m), t, kind));
    }
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), StoreConfig { background: false, ..StoreConfig::default() }).unwrap();
    let r = ganglion_store::import::import_tree(&store, tree.path()).unwrap();
    assert_eq!(r.imported.len(), 2, "{:?}", r.skipped);
    let check = |store: &Store, p: &Path, key: &SeriesKey, last: u64| {
        for (cf, cfn, span) in
            [(Cf::Average, "AVERAGE", 3000), (Cf::Average, "AVERAGE", 86_400), (Cf::Max, "MAX", 86_400)]
        {
            let want = fetch_file(p, cfn, last - span, last);
            let got = store.fetch(key, cf, last - span, last, 1).unwrap();
            assert_eq!(got.rows.len(), want.len(), "{key:?} {cfn} {span}");
            for (i, (t, v)) in want.iter().enumerate() {
                assert_eq!(got.time(i), *t);
                assert!(same(got.rows[i][0], *v), "{key:?} {cfn} {span} at {t}: {} vs {v}", got.rows[i][0]);
            }
        }
    };
    for (p, key, last, _) in &paths {
        check(&store, p, key, *last);
    }
    // The same further updates to both.
    for (p, key, last, kind) in &paths {
        let mut t = *last;
        for k in 1..=100u64 {
            t += 15;
            let v = if *kind == "GAUGE" { (k * 3) as f64 } else { (3_000_000_000 + k * 1000) as f64 };
            rrdtool(&["update", p.to_str().unwrap(), &format!("{t}:{v:.0}")]);
            let kind = if *kind == "GAUGE" { DsKind::Gauge } else { DsKind::Counter };
            store.append(&[Update { series: key.clone(), kind, time_ms: t as i64 * 1000, value: v }]).unwrap();
        }
        store.flush_all().unwrap();
        check(&store, p, key, t);
    }
}

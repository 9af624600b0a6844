//! Differential test against the real `rrdtool` (Debian package `rrdtool`).
//!
//! A property test generates random databases and update sequences (irregular times,
//! gaps beyond the heartbeat, counter wraps and resets, out-of-range values, `U`) for
//! every DS type and CF, feeds them to `rrdtool create/update/fetch` in a temp dir and
//! to ganglion the same way, and requires identical fetch output: the same timestamps
//! and the same values (relative tolerance 1e-9, unknowns included).
//!
//! `Tool` runs either implementation from the same argument lists, so the same case can
//! go through ganglion's model in process (fast, used by the property test) or through
//! the `ganglion rrd` command line end to end (`GANGLION_RRD` names that binary, e.g.
//! `GANGLION_RRD="target/debug/ganglion rrd"`; by default this crate's `ganglion-rrd`).

use std::path::Path;
use std::process::Command;

use ganglion_store::rrd::{parse_printed_value, Cf, DsDef, RraDef, Rrd};
use proptest::prelude::*;

const T0: u64 = 1_200_000_000;

/// Panics with the install hint when rrdtool is missing: never a silent pass.
fn require_rrdtool() {
    let ok = Command::new("rrdtool").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        ok,
        "the differential test needs the real rrdtool: install the Debian package `rrdtool` (apt-get install rrdtool)"
    );
}

/// A fetch result as printed: DS names, then (timestamp, values).
#[derive(Debug)]
struct Printed {
    names: Vec<String>,
    rows: Vec<(u64, Vec<f64>)>,
}

fn parse_fetch(out: &str) -> Printed {
    let mut lines = out.lines();
    let names = lines.next().unwrap_or("").split_whitespace().map(str::to_string).collect();
    let mut rows = Vec::new();
    for l in lines {
        if l.trim().is_empty() {
            continue;
        }
        let (t, vals) = l.split_once(':').unwrap_or_else(|| panic!("bad fetch line {l:?}"));
        let t = t.trim().parse().unwrap_or_else(|_| panic!("bad time in {l:?}"));
        let vals = vals
            .split_whitespace()
            .map(|v| parse_printed_value(v).unwrap_or_else(|| panic!("bad value {v:?} in {l:?}")))
            .collect();
        rows.push((t, vals));
    }
    Printed { names, rows }
}

fn same_value(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    // rrdtool prints 10 decimals; compare on that precision plus a hair.
    let scale = a.abs().max(b.abs());
    (a - b).abs() <= scale * 1e-9 + f64::MIN_POSITIVE
}

fn same(a: &Printed, b: &Printed) -> Result<(), String> {
    if a.names != b.names {
        return Err(format!("names {:?} vs {:?}", a.names, b.names));
    }
    if a.rows.len() != b.rows.len() {
        return Err(format!("{} rows vs {} rows", a.rows.len(), b.rows.len()));
    }
    for ((ta, va), (tb, vb)) in a.rows.iter().zip(&b.rows) {
        if ta != tb || va.len() != vb.len() || va.iter().zip(vb).any(|(x, y)| !same_value(*x, *y)) {
            return Err(format!("row {ta}: {va:?} vs row {tb}: {vb:?}"));
        }
    }
    Ok(())
}

/// One implementation driven by rrdtool's argument syntax.
enum Tool {
    /// `rrdtool …` as a process.
    Rrdtool,
    /// A ganglion command line as a process (`ganglion rrd …` or `ganglion-rrd …`).
    Binary(Vec<String>),
    /// ganglion's model in process, parsing the same arguments.
    Model(Option<Rrd>),
}

impl Tool {
    fn ganglion_binary() -> Tool {
        let cmd = std::env::var("GANGLION_RRD").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ganglion-rrd").to_string());
        Tool::Binary(cmd.split_whitespace().map(str::to_string).collect())
    }

    /// Runs one command; Ok(stdout) or Err(stderr).
    fn run(&mut self, args: &[String]) -> Result<String, String> {
        match self {
            Tool::Rrdtool => run_process(&["rrdtool".to_string()], args),
            Tool::Binary(cmd) => run_process(cmd, args),
            Tool::Model(db) => model(db, args),
        }
    }
}

fn run_process(cmd: &[String], args: &[String]) -> Result<String, String> {
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The in-process twin of the CLI for the argument shapes this test generates.
fn model(db: &mut Option<Rrd>, args: &[String]) -> Result<String, String> {
    match args[0].as_str() {
        "create" => {
            let mut step = 300;
            let mut start = 0;
            let (mut ds, mut rra) = (Vec::new(), Vec::new());
            let mut i = 2;
            while i < args.len() {
                match args[i].as_str() {
                    "--step" => {
                        step = args[i + 1].parse().map_err(|e| format!("{e}"))?;
                        i += 1;
                    }
                    "--start" => {
                        start = args[i + 1].parse().map_err(|e| format!("{e}"))?;
                        i += 1;
                    }
                    s if s.starts_with("DS:") => ds.push(DsDef::parse(s).map_err(|e| e.to_string())?),
                    s => rra.push(RraDef::parse(s).map_err(|e| e.to_string())?),
                }
                i += 1;
            }
            *db = Some(Rrd::create(step, start, ds, rra).map_err(|e| e.to_string())?);
            Ok(String::new())
        }
        "update" => {
            let d = db.as_mut().ok_or("no database")?;
            for a in &args[2..] {
                let mut parts = a.split(':');
                let t: u64 = parts.next().unwrap_or("").parse().map_err(|e| format!("{e}"))?;
                let vals: Vec<&str> = parts.collect();
                d.update(t, &vals).map_err(|e| e.to_string())?;
            }
            Ok(String::new())
        }
        "fetch" => {
            let d = db.as_ref().ok_or("no database")?;
            let cf = Cf::parse(&args[2]).ok_or("bad cf")?;
            let (mut s, mut e, mut r) = (0, 0, 1);
            let mut i = 3;
            while i < args.len() {
                let v: u64 = args[i + 1].parse().map_err(|e| format!("{e}"))?;
                match args[i].as_str() {
                    "-s" => s = v,
                    "-e" => e = v,
                    _ => r = v,
                }
                i += 2;
            }
            let f = d.fetch(cf, s, e, r).map_err(|e| e.to_string())?;
            Ok(ganglion_store::cli::render_fetch(&f))
        }
        other => Err(format!("unsupported {other}")),
    }
}

// ---------------------------------------------------------------------------------------
// Case generation

#[derive(Clone, Debug)]
struct Case {
    step: u64,
    start: u64,
    ds: Vec<String>,
    rra: Vec<String>,
    updates: Vec<String>,
    fetches: Vec<(String, u64, u64, u64)>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Gauge,
    Counter,
    Derive,
    Absolute,
    DCounter,
    DDerive,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Gauge),
        Just(Kind::Counter),
        Just(Kind::Derive),
        Just(Kind::Absolute),
        Just(Kind::DCounter),
        Just(Kind::DDerive),
    ]
}

fn ds_spec(i: usize, k: Kind, hb: u64, bounds: (Option<i32>, Option<i32>)) -> String {
    let name = match k {
        Kind::Gauge => "GAUGE",
        Kind::Counter => "COUNTER",
        Kind::Derive => "DERIVE",
        Kind::Absolute => "ABSOLUTE",
        Kind::DCounter => "DCOUNTER",
        Kind::DDerive => "DDERIVE",
    };
    let b = |v: Option<i32>| v.map_or("U".to_string(), |x| x.to_string());
    let (lo, hi) = match bounds {
        (Some(a), Some(b)) if a >= b => (Some(b - 1), Some(a)),
        x => x,
    };
    format!("DS:ds{i}:{name}:{hb}:{}:{}", b(lo), b(hi))
}

/// A stream of readings for one DS type: a mix of normal steps, wraps, resets and `U`.
fn reading(k: Kind, prev: &mut i128, r: u32, big: u32) -> String {
    if r.is_multiple_of(17) {
        return "U".to_string();
    }
    let small = i128::from(r % 500);
    match k {
        Kind::Gauge | Kind::Absolute | Kind::DCounter | Kind::DDerive => {
            let v = match k {
                Kind::DCounter => {
                    // Mostly increasing, sometimes a reset.
                    if r.is_multiple_of(11) {
                        *prev = small;
                    } else {
                        *prev += small;
                    }
                    *prev as f64 + 0.25
                }
                Kind::DDerive => {
                    *prev += small - 250;
                    *prev as f64 / 4.0
                }
                _ => (r % 2000) as f64 / 8.0 - 20.0,
            };
            format!("{v}")
        }
        Kind::Counter => {
            match big % 9 {
                // Near the 32-bit and 64-bit limits so the next step wraps.
                0 => *prev = 4_294_967_295 - small,
                1 => *prev = 18_446_744_073_709_551_615 - small * 1000,
                2 => *prev = small, // a reset
                _ => *prev += small * 7,
            }
            if *prev > 18_446_744_073_709_551_615 {
                *prev -= 18_446_744_073_709_551_616;
            }
            if *prev > 4_294_967_295 && big % 9 > 2 && *prev < 1 << 40 {
                *prev -= 4_294_967_296;
            }
            prev.to_string()
        }
        Kind::Derive => {
            *prev += small - 200;
            if big.is_multiple_of(13) {
                *prev = -*prev;
            }
            prev.to_string()
        }
    }
}

prop_compose! {
    fn case()(
        step in prop_oneof![Just(1u64), Just(5), Just(10), Just(15), Just(60), Just(300)],
        start_off in 0u64..600,
        kinds in prop::collection::vec((kind(), 1u64..8, prop::option::of(-50i32..50), prop::option::of(-10i32..400)), 1..=3),
        rras in prop::collection::vec((0usize..4, prop_oneof![Just(0.0), Just(0.25), Just(0.5), Just(0.9)], 1u64..7, 1u64..25), 1..=4),
        gaps in prop::collection::vec((1u64..100, any::<u32>(), any::<u32>()), 1..80),
        fetches in prop::collection::vec((0usize..4, 0u64..10_000, 0u64..4_000, prop_oneof![Just(1u64), 1u64..2000]), 1..6),
    ) -> Case {
        let cfs = ["AVERAGE", "MIN", "MAX", "LAST"];
        let ds: Vec<String> = kinds.iter().enumerate()
            .map(|(i, (k, hbm, lo, hi))| {
                // Counters get bounds only on the rate's scale, gauges on the value's.
                let bounds = if i % 2 == 0 { (*lo, *hi) } else { (None, None) };
                ds_spec(i, *k, (step * hbm / 2).max(1), bounds)
            })
            .collect();
        let rra: Vec<String> = rras.iter()
            .map(|(cf, xff, n, rows)| format!("RRA:{}:{}:{}:{}", cfs[*cf], xff, n, rows))
            .collect();
        let start = T0 + start_off;
        let mut t = start;
        let mut prev: Vec<i128> = vec![1000; kinds.len()];
        let mut updates = Vec::new();
        for (g, r, big) in &gaps {
            // Mostly sub-step and around-step gaps; some far beyond the heartbeat.
            let gap = match g % 10 {
                0 => step * (1 + g % 9) + g % step.max(1),
                1 | 2 => step,
                _ => 1 + (g * step) / 50,
            };
            t += gap.max(1);
            let vals: Vec<String> = kinds.iter().enumerate()
                .map(|(i, (k, ..))| reading(*k, &mut prev[i], r.rotate_left(i as u32 * 7), *big))
                .collect();
            updates.push(format!("{t}:{}", vals.join(":")));
        }
        let span = t - start + 1;
        let fetches = fetches.into_iter()
            .map(|(cf, s, len, res)| {
                let s = start.saturating_sub(step * 5) + s % (span + step * 10);
                let e = s + 1 + len % (span + step * 10);
                (cfs[cf].to_string(), s, e, res)
            })
            .collect();
        Case { step, start, ds, rra, updates, fetches }
    }
}

fn run_case(case: &Case, a: &mut Tool, b: &mut Tool, dir: &Path) -> Result<(), String> {
    let file = |t: &Tool| {
        let n = match t {
            Tool::Rrdtool => "a.rrd",
            _ => "b.grrd",
        };
        dir.join(n).display().to_string()
    };
    let (fa, fb) = (file(a), file(b));
    let mut create = vec!["create".to_string(), String::new(), "--start".into(), case.start.to_string()];
    create.extend(["--step".to_string(), case.step.to_string()]);
    create.extend(case.ds.iter().cloned());
    create.extend(case.rra.iter().cloned());
    let with = |mut v: Vec<String>, f: &str| {
        v[1] = f.to_string();
        v
    };
    a.run(&with(create.clone(), &fa)).map_err(|e| format!("create A: {e}"))?;
    b.run(&with(create, &fb)).map_err(|e| format!("create B: {e}"))?;
    let mut update = vec!["update".to_string(), String::new()];
    update.extend(case.updates.iter().cloned());
    let ua = a.run(&with(update.clone(), &fa));
    let ub = b.run(&with(update, &fb));
    if ua.is_ok() != ub.is_ok() {
        return Err(format!("update: {ua:?} vs {ub:?}"));
    }
    for (cf, s, e, r) in &case.fetches {
        let args = vec![
            "fetch".to_string(),
            String::new(),
            cf.clone(),
            "-s".into(),
            s.to_string(),
            "-e".into(),
            e.to_string(),
            "-r".into(),
            r.to_string(),
        ];
        let ra = a.run(&with(args.clone(), &fa));
        let rb = b.run(&with(args, &fb));
        match (ra, rb) {
            (Ok(x), Ok(y)) => {
                same(&parse_fetch(&x), &parse_fetch(&y)).map_err(|d| format!("fetch {cf} -s {s} -e {e} -r {r}: {d}"))?
            }
            (Err(_), Err(_)) => {}
            (x, y) => return Err(format!("fetch {cf} -s {s} -e {e} -r {r}: {x:?} vs {y:?}")),
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn model_matches_rrdtool(case in case()) {
        require_rrdtool();
        let dir = tempfile::tempdir().expect("temp dir");
        let r = run_case(&case, &mut Tool::Rrdtool, &mut Tool::Model(None), dir.path());
        prop_assert!(r.is_ok(), "{}\ncase: {:#?}", r.unwrap_err(), case);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    /// End to end through the binary and its on-disk files.
    #[test]
    fn binary_matches_rrdtool(case in case()) {
        require_rrdtool();
        let dir = tempfile::tempdir().expect("temp dir");
        let r = run_case(&case, &mut Tool::Rrdtool, &mut Tool::ganglion_binary(), dir.path());
        prop_assert!(r.is_ok(), "{}\ncase: {:#?}", r.unwrap_err(), case);
    }
}

#[test]
fn fetch_output_is_byte_identical_for_g1() {
    require_rrdtool();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut outs = Vec::new();
    for (mut tool, name) in [(Tool::Rrdtool, "a.rrd"), (Tool::ganglion_binary(), "b.grrd")] {
        let f = dir.path().join(name).display().to_string();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        tool.run(&s(&[
            "create",
            &f,
            "--start",
            "1200000000",
            "--step",
            "60",
            "DS:g:GAUGE:120:0:100",
            "DS:second_ds:COUNTER:120:U:U",
            "RRA:AVERAGE:0.5:1:20",
            "RRA:MAX:0.5:4:5",
        ]))
        .expect("create");
        tool.run(&s(&[
            "update",
            &f,
            "1200000030:10:5",
            "1200000060:20:10",
            "1200000090:200:400",
            "1200000120:40:U",
            "1200000185:80:500",
            "1200000560:5:600",
            "1200000600:7:4294967000",
        ]))
        .expect("update");
        let out = tool.run(&s(&["fetch", &f, "AVERAGE", "-s", "1200000000", "-e", "1200000960", "-r", "60"]));
        let max = tool.run(&s(&["fetch", &f, "MAX", "--start", "1200000000", "--end", "1200000959", "-r", "240"]));
        outs.push((out.expect("fetch"), max.expect("fetch MAX")));
    }
    assert_eq!(outs[0], outs[1]);
}

//! Golden cases G1–G4 of rrd.md §1.8, with the exact values `rrdtool fetch` printed.

use super::*;

const T0: u64 = 1_200_000_000;
const N: f64 = f64::NAN;

fn db(step: u64, ds: &[&str], rra: &[&str]) -> Rrd {
    let ds = ds.iter().map(|s| DsDef::parse(s).unwrap()).collect();
    let rra = rra.iter().map(|s| RraDef::parse(s).unwrap()).collect();
    Rrd::create(step, T0, ds, rra).unwrap()
}

fn feed(db: &mut Rrd, updates: &[(u64, &str)]) {
    for (off, v) in updates {
        let vals: Vec<&str> = v.split(':').collect();
        db.update(T0 + off, &vals).unwrap_or_else(|e| panic!("update {off}:{v}: {e}"));
    }
}

/// Compares as the printed `%0.10e` strings, which is what the golden output holds.
fn assert_rows(f: &Fetched, first: u64, expect: &[&[f64]]) {
    let got: Vec<(u64, Vec<String>)> =
        (0..f.rows.len()).map(|i| (f.time(i) - T0, f.rows[i].iter().map(|v| format_value(*v)).collect())).collect();
    let want: Vec<(u64, Vec<String>)> = expect
        .iter()
        .enumerate()
        .map(|(i, r)| (first + i as u64 * f.step, r.iter().map(|v| format_value(*v)).collect()))
        .collect();
    assert_eq!(got, want);
}

fn g1() -> Rrd {
    let mut d = db(
        60,
        &["DS:g:GAUGE:120:0:100"],
        &["RRA:AVERAGE:0.5:1:20", "RRA:AVERAGE:0.5:4:5", "RRA:MIN:0.5:4:5", "RRA:MAX:0.5:4:5", "RRA:LAST:0.5:4:5"],
    );
    feed(
        &mut d,
        &[
            (30, "10"),
            (60, "20"),
            (90, "200"),
            (120, "40"),
            (130, "50"),
            (175, "U"),
            (185, "80"),
            (240, "60"),
            (250, "30"),
            (560, "5"),
            (600, "7"),
            (660, "9"),
            (720, "11"),
            (780, "1"),
            (840, "2"),
            (900, "3"),
            (960, "U"),
        ],
    );
    d
}

#[test]
fn g1_gauge_time_weighting_unknowns_heartbeat() {
    let d = g1();
    let f = d.fetch(Cf::Average, T0, T0 + 960, 60).unwrap();
    assert_eq!(f.step, 60);
    let avg = 61.666_666_666_7;
    assert_rows(
        &f,
        60,
        &[
            &[15.0],
            &[40.0],
            &[N],
            &[avg],
            &[30.0],
            &[N],
            &[N],
            &[N],
            &[N],
            &[7.0],
            &[9.0],
            &[11.0],
            &[1.0],
            &[2.0],
            &[3.0],
            &[N],
            &[N],
        ],
    );
}

#[test]
fn g1_consolidation_xff_and_four_cfs() {
    let d = g1();
    let avg = 61.666_666_666_7;
    let cases: [(Cf, [f64; 4]); 4] = [
        (Cf::Average, [38.888_888_888_9, N, 9.0, 2.0]),
        (Cf::Min, [15.0, N, 7.0, 1.0]),
        (Cf::Max, [avg, N, 11.0, 3.0]),
        (Cf::Last, [avg, N, 11.0, N]),
    ];
    for (cf, want) in cases {
        let f = d.fetch(cf, T0, T0 + 959, 240).unwrap();
        assert_eq!(f.step, 240, "{cf}");
        let rows: Vec<&[f64]> = want.iter().map(std::slice::from_ref).collect();
        assert_rows(&f, 240, &rows);
    }
}

#[test]
fn g2_counter_types() {
    let mut d = db(
        60,
        &[
            "DS:c:COUNTER:120:U:U",
            "DS:cm:COUNTER:120:0:10",
            "DS:d:DERIVE:120:U:U",
            "DS:a:ABSOLUTE:120:U:U",
            "DS:dc:DCOUNTER:120:U:U",
            "DS:dd:DDERIVE:120:U:U",
        ],
        &["RRA:AVERAGE:0.5:1:10"],
    );
    feed(
        &mut d,
        &[
            (60, "4294967000:0:100:600:1.5:1.5"),
            (120, "200:600:40:120:7.5:0.5"),
            (180, "18446744073709551000:1300:-20:U:3.5:-2.5"),
            (240, "400:1360:-80:0:9.5:-8.5"),
            (300, "1000:1361:-20:30:10.0:-8.0"),
        ],
    );
    let f = d.fetch(Cf::Average, T0, T0 + 299, 60).unwrap();
    assert_rows(
        &f,
        60,
        &[
            &[N, N, N, 10.0, N, N],
            &[8.25, 10.0, -1.0, 2.0, 0.1, -0.016_666_666_666_7],
            &[3.074_457_345_6e17, N, N, N, N, -0.05],
            &[0.0, 1.0, -1.0, 0.0, 0.1, -0.1],
            &[10.0, 0.016_666_666_666_7, 1.0, 0.5, 0.008_333_333_333_3, 0.008_333_333_333_3],
        ],
    );
    // Errors from the same file, and nothing applied.
    let before = d.clone();
    assert_eq!(
        d.update(T0 + 360, &["1.5", "1", "1", "1", "1", "1"]),
        Err(UpdateError::NotInteger { sign: "unsigned", value: "1.5".into() })
    );
    assert_eq!(
        d.update(T0 + 300, &["1", "1", "1", "1", "1", "1"]).unwrap_err().to_string(),
        "illegal attempt to update using time 1200000300 when last update time is 1200000300 (minimum one second step)"
    );
    assert_eq!(format!("{d:?}"), format!("{before:?}"));
}

fn g3() -> Rrd {
    let mut d = db(
        60,
        &["DS:v:GAUGE:120:U:U"],
        &["RRA:AVERAGE:0.5:1:10", "RRA:AVERAGE:0.5:5:12", "RRA:MAX:0.5:5:12", "RRA:AVERAGE:0.5:60:24"],
    );
    for i in 1..=240u64 {
        d.update(T0 + 60 * i, &[&i.to_string()]).unwrap();
    }
    d
}

#[test]
fn g3_fetch_selection() {
    let d = g3();
    let l = T0 + 14400;
    let labels = |f: &Fetched| (0..f.rows.len()).map(|i| (f.time(i) - T0, format_value(f.rows[i][0]))).collect();
    let v = |xs: &[(u64, f64)]| xs.iter().map(|&(t, x)| (t, format_value(x))).collect::<Vec<_>>();
    let f = d.fetch(Cf::Average, l - 600, l, 1).unwrap();
    let mut want: Vec<(u64, f64)> = (0..10).map(|k| (13860 + 60 * k, 231.0 + k as f64)).collect();
    want.push((14460, N));
    assert_eq!(labels(&f), v(&want));
    let got: Vec<_> = labels(&d.fetch(Cf::Average, l - 601, l - 1, 1).unwrap());
    assert_eq!(got, v(&[(13800, 228.0), (14100, 233.0), (14400, 238.0)]));
    for r in [300, 1000] {
        assert_eq!(labels(&d.fetch(Cf::Average, l - 300, l - 1, r).unwrap()), v(&[(14400, 238.0)]));
    }
    assert_eq!(labels(&d.fetch(Cf::Average, l - 300, l - 1, 2000).unwrap()), v(&[(16800, N)]));
    assert_eq!(
        labels(&d.fetch(Cf::Average, l - 7200, l - 1, 3000).unwrap()),
        v(&[(9600, 130.5), (13200, 190.5), (16800, N)])
    );
    let want: Vec<(u64, f64)> = (0..5).map(|k| (14160 + 60 * k, 236.0 + k as f64)).collect();
    assert_eq!(labels(&d.fetch(Cf::Max, l - 300, l - 1, 1).unwrap()), v(&want));
    assert_eq!(labels(&d.fetch(Cf::Max, l - 300, l - 1, 300).unwrap()), v(&[(14400, 240.0)]));
    assert_eq!(labels(&d.fetch(Cf::Last, l - 120, l - 1, 1).unwrap()), v(&[(14340, 239.0), (14400, 240.0)]));
    let f = d.fetch(Cf::Average, l - 200_000, l - 190_000, 1).unwrap();
    assert_eq!(f.step, 3600);
    assert_eq!(f.rows.len(), 4);
    assert!(f.rows.iter().all(|r| r[0].is_nan()));
    assert_eq!(
        labels(&d.fetch(Cf::Average, l - 130, l + 70, 60).unwrap()),
        v(&[(14280, 238.0), (14340, 239.0), (14400, 240.0), (14460, N), (14520, N)])
    );
}

#[test]
fn g4_heartbeat_asymmetry() {
    for (last, want) in [(119, [N, N]), (121, [3.666_666_666_7, N])] {
        let mut d = db(60, &["DS:g:GAUGE:30:U:U"], &["RRA:AVERAGE:0.5:1:10"]);
        feed(&mut d, &[(15, "1"), (45, "5"), (last, "9")]);
        let f = d.fetch(Cf::Average, T0, T0 + 119, 60).unwrap();
        assert_rows(&f, 60, &[&[want[0]], &[want[1]]]);
    }
}

#[test]
fn no_matching_cf_is_an_error() {
    let d = db(60, &["DS:g:GAUGE:30:U:U"], &["RRA:AVERAGE:0.5:5:10"]);
    assert_eq!(d.fetch(Cf::Max, T0, T0 + 60, 1), Err(FetchError::NoMatchingCf));
}

#[test]
fn formats_like_glibc() {
    assert_eq!(format_value(15.0), "1.5000000000e+01");
    assert_eq!(format_value(1e300), "1.0000000000e+300");
    assert_eq!(format_value(-0.05), "-5.0000000000e-02");
    assert_eq!(format_value(0.0), "0.0000000000e+00");
    assert_eq!(format_value(f64::NAN), "-nan");
    assert_eq!(format_value(f64::NEG_INFINITY), "-inf");
}

/// One update completing more rows than the archive holds: rrdtool caps the count and
/// still writes the primary value first, so a one-row archive keeps the primary value
/// (here 212.125 / 21 s, the PDP the update closed first), not the unknown secondary
/// one. Found by the differential test; `rrdtool fetch` prints 1.0101190476e+01.
#[test]
fn a_one_row_archive_keeps_the_primary_value_when_several_rows_complete() {
    let ds = vec![DsDef::parse("DS:ds0:ABSOLUTE:60:U:U").unwrap()];
    let rra = vec![RraDef::parse("RRA:AVERAGE:0.5:2:1").unwrap()];
    let mut d = Rrd::create(60, 1_200_000_266, ds, rra).unwrap();
    for (t, v) in [(1_200_002_800u64, "142.75"), (1_200_002_860, "195.75"), (1_200_002_881, "212.125")] {
        d.update(t, &[v]).unwrap();
    }
    d.update(1_200_003_371, &["6.625"]).unwrap();
    let f = d.fetch(Cf::Average, 1_200_002_814, 1_200_003_337, 1729).unwrap();
    let last = f.rows.last().unwrap()[0];
    assert_eq!(format_value(last), "1.0101190476e+01", "{f:?}");
    assert_eq!(f.time(f.rows.len() - 1), 1_200_003_360);
}

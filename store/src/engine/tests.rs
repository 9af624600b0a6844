//! Crash, corruption and disk-full behaviour through the fault-injecting [`MemDisk`],
//! and equivalence of the engine with the standalone rrdtool model.

use super::*;
use crate::disk::MemDisk;
use crate::import::ImportError;
use crate::rrd::Rrd;
use proptest::prelude::*;

const T: i64 = 1_699_999_995; // a multiple of the 15 s step

fn cfg() -> StoreConfig {
    StoreConfig {
        archives: vec![
            RraDef { cf: Cf::Average, xff: 0.5, pdp_cnt: 1, rows: 100 },
            RraDef { cf: Cf::Max, xff: 0.5, pdp_cnt: 4, rows: 40 },
        ],
        background: false,
        ..StoreConfig::default()
    }
}

fn opts() -> StoreOptions {
    StoreOptions { shard_slots: 4, ..StoreOptions::default() }
}

fn key(h: &str) -> SeriesKey {
    SeriesKey::new("web", h, "load_one")
}

fn batch(from: i64, n: i64, hosts: &[&str]) -> Vec<Update> {
    let mut v = Vec::new();
    for i in 0..n {
        for h in hosts {
            let t = T + 15 * (from + i);
            v.push(Update { series: key(h), kind: DsKind::Gauge, time_ms: t * 1000, value: (from + i) as f64 });
        }
    }
    v
}

/// Values of rows `from..from+n` (row k holds value k).
fn values(s: &Store, h: &str, from: i64, n: i64) -> Vec<f64> {
    let start = (T + 15 * (from - 1)) as u64;
    let end = (T + 15 * (from + n - 1)) as u64;
    let f = s.fetch(&key(h), Cf::Average, start, end, 15).expect("fetch");
    f.rows.iter().take(n as usize).map(|r| r[0]).collect()
}

fn want(from: i64, n: i64) -> Vec<f64> {
    (from..from + n).map(|k| k as f64).collect()
}

fn open(disk: &MemDisk) -> Store {
    Store::open_on_with(Arc::new(disk.clone()), Path::new("/data"), cfg(), opts()).unwrap()
}

/// File offset of the block holding `row_time`'s row of archive 0 of series `h`.
fn block_of(s: &Store, h: &str, row_time: u64) -> (PathBuf, u64) {
    let idx = lock(&s.inner.index);
    let k = key(h);
    let sid = idx.find(key_hash(k.parts()), k.parts()).unwrap();
    let ser = &idx.series[sid as usize];
    let sh = read(&s.inner.shards)[ser.shard as usize].clone().unwrap();
    let row = (row_time / 15) % 100;
    (sh.path.clone(), sh.layout.block_off(0, (row / BLOCK_ROWS as u64) as u32, ser.slot))
}

#[test]
fn crash_before_fsync_loses_nothing_acked() {
    let disk = MemDisk::new();
    let s = open(&disk);
    let t = s.append(&batch(1, 20, &["a", "b"])).unwrap();
    s.durable(t).unwrap();
    // Flushed to shards half way, then more acked samples only in the journal.
    s.flush_all().unwrap();
    let t = s.append(&batch(21, 20, &["a", "b"])).unwrap();
    s.durable(t).unwrap();
    // Not acknowledged: may be lost.
    s.append(&batch(41, 5, &["a"])).unwrap();
    disk.crash(None);
    drop(s);
    let s = open(&disk);
    for h in ["a", "b"] {
        assert_eq!(values(&s, h, 2, 38), want(2, 38), "host {h} before flush");
    }
    s.flush_all().unwrap();
    disk.crash(None);
    drop(s);
    let s = open(&disk);
    assert_eq!(values(&s, "b", 2, 38), want(2, 38), "after the replayed samples were flushed");
}

/// Stops a flush after every possible number of writes and syncs, optionally tearing
/// the first unsynced write of each file, then restarts: every acknowledged sample is
/// there, and nothing is reported damaged.
#[test]
fn crash_at_every_point_of_a_flush_loses_nothing_acked() {
    let hosts = ["a", "b", "c", "d", "e", "f"];
    // Tears land on sector boundaries (the media assumption in docs/STORAGE.md).
    for tear in [None, Some(0), Some(512), Some(1536), Some(4096)] {
        let mut point = 0;
        loop {
            let disk = MemDisk::new();
            let s = open(&disk);
            let t = s.append(&batch(1, 30, &hosts)).unwrap();
            s.durable(t).unwrap();
            s.flush_all().unwrap();
            let t = s.append(&batch(31, 30, &hosts)).unwrap();
            s.durable(t).unwrap();
            s.remove_series(&key("f")).unwrap();
            // New series: the flush below creates shards for them.
            let t = s.append(&batch(61, 3, &["g", "h", "i", "j", "k", "l"])).unwrap();
            s.durable(t).unwrap();
            disk.fail_after(Some(point));
            let finished = s.flush_all().is_ok();
            disk.fail_after(None);
            disk.crash(tear);
            drop(s);
            let s = open(&disk);
            for h in &hosts[..5] {
                assert_eq!(values(&s, h, 2, 59), want(2, 59), "host {h}, crash after {point} ops, tear {tear:?}");
            }
            for h in ["g", "h", "i", "j", "k", "l"] {
                assert_eq!(values(&s, h, 62, 2), want(62, 2), "host {h}, crash after {point} ops, tear {tear:?}");
            }
            assert!(s.fetch(&key("f"), Cf::Average, T as u64, T as u64 + 600, 15).is_err());
            assert_eq!(s.stats().corrupt_files.load(Ordering::Relaxed), 0, "crash after {point}, tear {tear:?}");
            // And it keeps working.
            s.flush_all().unwrap();
            let t = s.append(&batch(61, 4, &hosts[..5])).unwrap();
            s.durable(t).unwrap();
            s.flush_all().unwrap();
            drop(s);
            let s = open(&disk);
            assert_eq!(values(&s, "a", 2, 63), want(2, 63));
            if finished {
                break;
            }
            point += 1;
        }
        assert!(point > 5, "the flush did only {point} operations");
    }
}

#[test]
fn torn_journal_tail_is_truncated_at_the_last_good_record() {
    let disk = MemDisk::new();
    let s = open(&disk);
    let t = s.append(&batch(1, 10, &["a"])).unwrap();
    s.durable(t).unwrap();
    s.append(&batch(11, 10, &["a"])).unwrap();
    disk.crash(Some(13)); // 13 bytes of the unsynced record survive
    drop(s);
    let s = open(&disk);
    assert_eq!(s.stats().journal_truncated.load(Ordering::Relaxed), 1);
    assert_eq!(values(&s, "a", 2, 9), want(2, 9));
    // New appends after the truncation replay cleanly.
    let t = s.append(&batch(11, 5, &["a"])).unwrap();
    s.durable(t).unwrap();
    drop(s);
    let s = open(&disk);
    assert_eq!(s.stats().journal_truncated.load(Ordering::Relaxed), 0);
    assert_eq!(values(&s, "a", 2, 14), want(2, 14));
}

#[test]
fn flipped_journal_byte_truncates_there() {
    let disk = MemDisk::new();
    let s = open(&disk);
    let t = s.append(&batch(1, 10, &["a"])).unwrap();
    s.durable(t).unwrap();
    let t = s.append(&batch(11, 10, &["a"])).unwrap();
    s.durable(t).unwrap();
    drop(s);
    let seg = disk.list(Path::new("/data/journal")).unwrap().pop().unwrap();
    let len = disk.file_len(&seg).unwrap();
    disk.flip(&seg, len - 3, 0x40);
    let s = open(&disk);
    assert_eq!(s.stats().journal_truncated.load(Ordering::Relaxed), 1);
    assert_eq!(values(&s, "a", 2, 9), want(2, 9));
}

#[test]
fn flipped_byte_in_a_data_block_is_quarantined_and_service_continues() {
    let disk = MemDisk::new();
    let s = open(&disk);
    s.append(&batch(1, 10, &["a", "b"])).unwrap();
    s.flush_all().unwrap();
    let (path, off) = block_of(&s, "a", (T + 15 * 5) as u64);
    disk.flip(&path, off + 8, 0x01);
    assert!(matches!(
        s.fetch(&key("a"), Cf::Average, T as u64, T as u64 + 150, 15),
        Err(ReadError::File(FileError::Corrupt { .. }))
    ));
    s.append(&batch(11, 10, &["a", "b"])).unwrap();
    s.flush_all().unwrap();
    assert_eq!(s.stats().quarantined.load(Ordering::Relaxed), 1);
    assert_eq!(disk.list(Path::new("/data/quarantine")).unwrap().len(), 1);
    assert_eq!(s.quarantined()[0].series, "web/a/load_one");
    // The recreated series serves new samples; the other series is untouched.
    assert_eq!(values(&s, "a", 12, 9), want(12, 9));
    assert_eq!(values(&s, "b", 2, 19), want(2, 19));
    drop(s);
    let s = open(&disk);
    assert_eq!(values(&s, "a", 12, 9), want(12, 9));
    assert_eq!(s.stats().corrupt_files.load(Ordering::Relaxed), 0);
}

#[test]
fn the_block_scan_finds_damage_nobody_read() {
    let disk = MemDisk::new();
    let s = open(&disk);
    s.append(&batch(1, 10, &["a", "b"])).unwrap();
    s.flush_all().unwrap();
    drop(s);
    let s = open(&disk);
    let (path, off) = block_of(&s, "b", (T + 15 * 3) as u64);
    disk.flip(&path, off + 100, 0x20);
    let shards: Vec<_> = read(&s.inner.shards).iter().flatten().cloned().collect();
    let bad: u64 = shards.iter().map(|sh| s.inner.scan_shard(sh)).sum();
    assert_eq!(bad, 1);
    assert!(s.stats().scan_blocks.load(Ordering::Relaxed) >= 2);
    s.flush_all().unwrap();
    assert_eq!(s.stats().quarantined.load(Ordering::Relaxed), 1);
    assert_eq!(values(&s, "a", 2, 9), want(2, 9));
}

#[test]
fn damaged_state_records_and_headers_are_found_at_start_up() {
    let disk = MemDisk::new();
    let s = open(&disk);
    // Two flushes, so both state tables hold a record of every series.
    s.append(&batch(1, 10, &["a", "b", "c", "d", "e"])).unwrap();
    s.flush_all().unwrap();
    s.append(&batch(11, 10, &["a", "b", "c", "d", "e"])).unwrap();
    s.flush_all().unwrap();
    let (sh0, sh1) = {
        let sh = read(&s.inner.shards);
        (sh[0].clone().unwrap(), sh[1].clone().unwrap())
    };
    let slot_a = {
        let idx = lock(&s.inner.index);
        let k = key("a");
        idx.series[idx.find(key_hash(k.parts()), k.parts()).unwrap() as usize].slot
    };
    drop(s);
    // The older copy of a state record damaged: detected, the current copy serves.
    let newer = *read(&s_cur(&disk));
    let older = 1 - newer;
    disk.flip(&sh0.path, sh0.layout.state_off(older, slot_a) + 30, 0x08);
    let s = open(&disk);
    assert_eq!(s.stats().corrupt_files.load(Ordering::Relaxed), 1);
    assert_eq!(values(&s, "a", 2, 19), want(2, 19));
    drop(s);
    let s = open(&disk);
    assert_eq!(s.stats().corrupt_files.load(Ordering::Relaxed), 0);
    drop(s);
    // Both copies damaged: the series is quarantined and starts again.
    disk.flip(&sh0.path, sh0.layout.state_off(0, slot_a) + 30, 0x08);
    disk.flip(&sh0.path, sh0.layout.state_off(1, slot_a) + 31, 0x08);
    let s = open(&disk);
    s.flush_all().unwrap();
    assert_eq!(s.stats().quarantined.load(Ordering::Relaxed), 1);
    s.append(&batch(21, 3, &["a"])).unwrap();
    assert_eq!(values(&s, "a", 22, 2), want(22, 2));
    assert_eq!(values(&s, "b", 2, 19), want(2, 19));
    drop(s);
    // A damaged header: the whole shard file is moved aside, its series carry on.
    disk.flip(&sh1.path, 100, 0x01);
    let s = open(&disk);
    assert_eq!(s.stats().quarantined.load(Ordering::Relaxed), 1);
    assert!(!disk.exists(&sh1.path));
    assert_eq!(s.quarantined()[0].series, "*");
    assert_eq!(s.series_count(), 5);
    s.append(&batch(30, 3, &["e"])).unwrap();
    s.flush_all().unwrap();
    assert_eq!(values(&s, "e", 31, 2), want(31, 2));
    assert_eq!(values(&s, "b", 2, 19), want(2, 19));
}

/// Which state table of shard 0 is current, as a fresh open sees it.
fn s_cur(disk: &MemDisk) -> RwLock<usize> {
    let s = open(disk);
    let c = read(&s.inner.shards)[0].as_ref().unwrap().cur.load(Ordering::Relaxed);
    RwLock::new(c)
}

#[test]
fn disk_full_gives_backpressure_then_recovers_with_nothing_lost() {
    let disk = MemDisk::new();
    let s = open(&disk);
    let t = s.append(&batch(1, 10, &["a"])).unwrap();
    s.durable(t).unwrap();
    disk.set_full(true);
    assert!(matches!(s.append(&batch(11, 10, &["a"])), Err(WriteError::Backpressure(_))));
    assert!(s.flush_all().is_err());
    disk.set_full(false);
    let t = s.append(&batch(11, 10, &["a"])).unwrap();
    s.durable(t).unwrap();
    s.flush_all().unwrap();
    disk.crash(None);
    drop(s);
    let s = open(&disk);
    assert_eq!(values(&s, "a", 2, 19), want(2, 19));
}

#[test]
fn rejects_old_and_non_integer_counter_samples() {
    let s = Store::open_on_with(Arc::new(MemDisk::new()), Path::new("/d"), cfg(), opts()).unwrap();
    s.append(&batch(5, 1, &["a"])).unwrap();
    s.append(&batch(4, 1, &["a"])).unwrap();
    let bad = Update { series: key("c"), kind: DsKind::Counter, time_ms: T * 1000, value: 1.5 };
    s.append(&[bad]).unwrap();
    let bad = Update { series: SeriesKey::new("web", "..", "x"), kind: DsKind::Gauge, time_ms: T * 1000, value: 1.0 };
    s.append(&[bad]).unwrap();
    assert_eq!(s.stats().rejected.load(Ordering::Relaxed), 3);
    assert_eq!(s.series_count(), 1);
}

#[test]
fn group_commit_syncs_once_for_many_appends() {
    let disk = MemDisk::new();
    let s = Store::open_on_with(Arc::new(disk.clone()), Path::new("/d"), cfg(), opts()).unwrap();
    let before = s.stats().fsyncs.load(Ordering::Relaxed);
    let mut last = None;
    for i in 0..50 {
        last = Some(s.append(&batch(1 + i, 1, &["a"])).unwrap());
    }
    s.durable(last.unwrap()).unwrap();
    assert_eq!(s.stats().fsyncs.load(Ordering::Relaxed) - before, 1);
}

#[test]
fn removed_series_free_their_slot_for_good() {
    let disk = MemDisk::new();
    let s = open(&disk);
    s.append(&batch(1, 5, &["a", "b"])).unwrap();
    s.flush_all().unwrap();
    s.remove_series(&key("a")).unwrap();
    s.append(&batch(6, 5, &["b", "c"])).unwrap();
    s.flush_all().unwrap();
    assert_eq!(s.series_count(), 2);
    assert_eq!(read(&s.inner.shards).len(), 1, "the freed slot was reused");
    drop(s);
    let s = open(&disk);
    assert!(matches!(s.fetch(&key("a"), Cf::Average, T as u64, T as u64 + 90, 15), Err(ReadError::NotFound)));
    assert_eq!(values(&s, "c", 7, 4), want(7, 4));
    // c took a's slot: none of a's rows show through.
    let f = s.fetch(&key("c"), Cf::Average, T as u64, T as u64 + 90, 15).unwrap();
    assert!(f.rows[..5].iter().all(|r| r[0].is_nan()), "{:?}", f.rows);
    assert_eq!(s.stats().corrupt_files.load(Ordering::Relaxed), 0);
}

#[test]
fn a_long_catalog_is_compacted() {
    let disk = MemDisk::new();
    let s = open(&disk);
    for round in 0..300 {
        s.append(&batch(round * 2 + 1, 1, &["a", "b", "c", "d", "e"])).unwrap();
        s.flush_all().unwrap();
        for h in ["a", "b", "c", "d", "e"] {
            s.remove_series(&key(h)).unwrap();
        }
    }
    s.append(&batch(1000, 2, &["z"])).unwrap();
    s.flush_all().unwrap();
    drop(s);
    let before = disk.file_len(Path::new("/data/catalog.log")).unwrap();
    let s = open(&disk);
    let after = disk.file_len(Path::new("/data/catalog.log")).unwrap();
    assert!(after < before / 10, "{before} -> {after}");
    assert_eq!(values(&s, "z", 1001, 1), want(1001, 1));
    drop(s);
    let s = open(&disk);
    assert_eq!(s.series_count(), 1);
}

#[test]
fn rules_pick_archives_by_pattern() {
    let c = cfg();
    let mut o = opts();
    o.rules.push(ArchiveRule {
        cluster: None,
        host: Some("db*".into()),
        metric: Some("disk_?".into()),
        step_secs: Some(60),
        heartbeat_secs: Some(600),
        archives: Some(vec![RraDef { cf: Cf::Average, xff: 0.5, pdp_cnt: 1, rows: 10 }]),
    });
    let set = Settings { cfg: c.clone(), opts: o.clone() };
    assert_eq!(set.def_for(["x", "db01", "disk_a"], DsKind::Gauge).step, 60);
    assert_eq!(set.def_for(["x", "db01", "disk_ab"], DsKind::Gauge).step, 15);
    assert_eq!(set.def_for(["x", "web", "disk_a"], DsKind::Gauge).step, 15);
    let s = Store::open_on_with(Arc::new(MemDisk::new()), Path::new("/d"), c, o).unwrap();
    let u = |h: &str, t: i64| Update {
        series: SeriesKey::new("x", h, "disk_a"),
        kind: DsKind::Gauge,
        time_ms: t * 1000,
        value: 1.0,
    };
    s.append(&[u("db01", 1_700_000_040), u("web", 1_700_000_040)]).unwrap();
    s.append(&[u("db01", 1_700_000_100), u("web", 1_700_000_100)]).unwrap();
    s.flush_all().unwrap();
    let f = s.fetch(&SeriesKey::new("x", "db01", "disk_a"), Cf::Average, 1_700_000_000, 1_700_000_100, 1).unwrap();
    assert_eq!(f.step, 60);
    assert_eq!(read(&s.inner.shards).len(), 2);
}

#[test]
fn glob_matching() {
    assert!(glob_match("*", ""));
    assert!(glob_match("a*c", "abbbc"));
    assert!(glob_match("a?c", "abc"));
    assert!(!glob_match("a?c", "ac"));
    assert!(glob_match("*.example.com", "web1.example.com"));
    assert!(!glob_match("web*", "db1"));
}

#[test]
fn keys_hash_apart_and_compare_by_parts() {
    assert_ne!(key_hash(["a", "bc", "d"]), key_hash(["ab", "c", "d"]));
    assert!(key_eq("a/bc/d", ["a", "bc", "d"]));
    assert!(!key_eq("a/bc/d", ["ab", "c", "d"]));
    let mut idx = Index::default();
    // Force a collision: two keys under one hash still resolve separately.
    idx.insert(7, "c/h/one".into(), DsKind::Gauge, 0, 1);
    idx.insert(7, "c/h/two".into(), DsKind::Gauge, 0, 1);
    assert_eq!(idx.find(7, ["c", "h", "one"]), Some(0));
    assert_eq!(idx.find(7, ["c", "h", "two"]), Some(1));
    idx.remove(0);
    assert_eq!(idx.find(7, ["c", "h", "two"]), Some(1));
}

/// One step of a random workload.
#[derive(Clone, Debug)]
enum Step {
    /// Advance time by this many seconds and store this value in series `s`.
    Sample {
        s: usize,
        dt: u64,
        v: f64,
    },
    Flush,
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0usize..3, prop_oneof![1u64..40, 100u64..400, Just(1500u64)], prop_oneof![
            (-1000i32..1000).prop_map(f64::from),
            (0.0f64..100.0),
            Just(f64::NAN)
        ]).prop_map(|(s, dt, v)| Step::Sample { s, dt, v }),
        1 => Just(Step::Flush),
        1 => Just(Step::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Whatever the flushes and restarts, a series fetched from the engine equals the
    /// same samples fed to the standalone rrdtool model.
    #[test]
    fn the_engine_fetches_what_rrdtool_would(steps in prop::collection::vec(step(), 1..120), step_s in prop_oneof![Just(10u64), Just(15), Just(60)]) {
        let archives = vec![
            RraDef { cf: Cf::Average, xff: 0.5, pdp_cnt: 1, rows: 37 },
            RraDef { cf: Cf::Max, xff: 0.5, pdp_cnt: 3, rows: 12 },
            RraDef { cf: Cf::Average, xff: 0.3, pdp_cnt: 7, rows: 40 },
        ];
        let c = StoreConfig { step_secs: step_s, heartbeat_secs: 4 * step_s, archives: archives.clone(), ..cfg() };
        let disk = MemDisk::new();
        let mut s = Store::open_on_with(Arc::new(disk.clone()), Path::new("/p"), c.clone(), opts()).unwrap();
        let mut models: Vec<Option<Rrd>> = vec![None, None, None];
        let mut t = [1_700_000_000u64; 3];
        for st in &steps {
            match st {
                Step::Sample { s: i, dt, v } => {
                    t[*i] += dt;
                    let k = SeriesKey::new("c", &format!("h{i}"), "m");
                    s.append(&[Update { series: k, kind: DsKind::Gauge, time_ms: t[*i] as i64 * 1000, value: *v }]).unwrap();
                    let m = models[*i].get_or_insert_with(|| {
                        let ds = DsDef { name: "value".into(), kind: DsType::Gauge, heartbeat: 4 * step_s, min: f64::NAN, max: f64::NAN };
                        Rrd::create(step_s, t[*i] - 1, vec![ds], archives.clone()).unwrap()
                    });
                    m.update(t[*i], &[&value_text(*v)]).unwrap();
                }
                Step::Flush => s.flush_all().unwrap(),
                Step::Reopen => {
                    drop(s);
                    s = Store::open_on_with(Arc::new(disk.clone()), Path::new("/p"), c.clone(), opts()).unwrap();
                }
            }
        }
        for (i, m) in models.iter().enumerate() {
            let Some(m) = m else { continue };
            let k = SeriesKey::new("c", &format!("h{i}"), "m");
            for (cf, span, res) in [(Cf::Average, 400, 1), (Cf::Max, 2000, 30), (Cf::Average, 20_000, 300), (Cf::Average, 100, 1)] {
                let end = m.last_up;
                let start = end - span;
                let want = m.fetch(cf, start, end, res).unwrap();
                let got = s.fetch(&k, cf, start, end, res).unwrap();
                prop_assert_eq!(got.step, want.step);
                prop_assert_eq!(got.start, want.start);
                prop_assert_eq!(got.rows.len(), want.rows.len());
                for (a, b) in got.rows.iter().zip(&want.rows) {
                    prop_assert!(a[0].to_bits() == b[0].to_bits() || (a[0].is_nan() && b[0].is_nan()), "{:?} vs {:?} ({cf:?} {span})", got.rows, want.rows);
                }
            }
        }
    }
}

#[test]
fn samples_by_resolved_id() {
    let disk = MemDisk::new();
    let s = open(&disk);
    let a = s.series_id(&key("a"), DsKind::Gauge).unwrap();
    assert_eq!(s.series_id(&key("a"), DsKind::Gauge), Some(a));
    assert_eq!(s.series_id(&key("a"), DsKind::Counter), None, "another kind");
    assert_eq!(s.series_id(&SeriesKey::new("c", "h/x", "m"), DsKind::Gauge), None);
    let samples: Vec<_> = (1..=10).map(|k| (a, (T + 15 * k) * 1000, k as f64)).collect();
    let t = s.append_ids(&samples).unwrap();
    s.durable(t).unwrap();
    assert_eq!(values(&s, "a", 2, 9), want(2, 9));
    disk.crash(None);
    drop(s);
    let s = open(&disk);
    assert_eq!(values(&s, "a", 2, 9), want(2, 9), "replayed from the journal");
    // Ids do not survive a restart; a stale id after a removal is rejected.
    let a = s.series_id(&key("a"), DsKind::Gauge).unwrap();
    s.remove_series(&key("a")).unwrap();
    let b = s.series_id(&key("b"), DsKind::Gauge).unwrap();
    // The strict form refuses the whole batch and says which samples are stale.
    let r = s.try_append_ids(&[(b, (T + 15 * 11) * 1000, 11.0), (a, (T + 15 * 11) * 1000, 11.0)]);
    assert!(matches!(r, Err(WriteError::Stale(ref k)) if k == &[1]), "{r:?}");
    s.append_ids(&[(a, (T + 15 * 11) * 1000, 11.0), (b, (T + 15 * 11) * 1000, 11.0)]).unwrap();
    assert_eq!(s.stats().rejected.load(Ordering::Relaxed), 1);
    assert!(matches!(s.fetch(&key("a"), Cf::Average, T as u64, T as u64 + 200, 15), Err(ReadError::NotFound)));
    s.append_ids(&[(b, (T + 15 * 12) * 1000, 12.0)]).unwrap();
    s.flush_all().unwrap();
    assert_eq!(values(&s, "b", 12, 1), want(12, 1));
}

#[test]
fn a_running_store_can_be_read_from_outside() {
    let disk = MemDisk::new();
    let s = open(&disk);
    let t = s.append(&batch(1, 20, &["a", "b"])).unwrap();
    s.durable(t).unwrap();
    s.flush_all().unwrap();
    let t = s.append(&batch(21, 10, &["a", "b"])).unwrap();
    s.durable(t).unwrap();
    let t = s.append(&batch(1, 5, &["new"])).unwrap();
    s.durable(t).unwrap();
    let (start, end) = (T as u64, (T + 15 * 30) as u64);
    for (name, host) in [("web/a/load_one", "a"), ("b/load_one", "b"), ("new/load_one", "new")] {
        let (k, got) = offline::fetch_on(&disk, Path::new("/data"), name, Cf::Average, start, end, 15).unwrap();
        assert_eq!(k, key(host));
        let want = s.fetch(&key(host), Cf::Average, start, end, 15).unwrap();
        assert_eq!(format!("{got:?}"), format!("{want:?}"), "{name}");
    }
    assert!(matches!(
        offline::fetch_on(&disk, Path::new("/data"), "zz/load_one", Cf::Average, start, end, 15),
        Err(ReadError::NotFound)
    ));
    // The same host/metric in two clusters needs the cluster.
    let other =
        Update { series: SeriesKey::new("db", "a", "load_one"), kind: DsKind::Gauge, time_ms: T * 1000, value: 1.0 };
    let t = s.append(&[other]).unwrap();
    s.durable(t).unwrap();
    assert!(matches!(
        offline::fetch_on(&disk, Path::new("/data"), "a/load_one", Cf::Average, start, end, 15),
        Err(ReadError::Ambiguous(_))
    ));
}

#[test]
fn an_imported_database_fetches_and_continues_like_rrdtool() {
    let ds = vec![DsDef { name: "sum".into(), kind: DsType::Gauge, heartbeat: 60, min: 0.0, max: 1000.0 }];
    let rra = ["RRA:AVERAGE:0.5:1:50", "RRA:MAX:0.5:4:30", "RRA:AVERAGE:0.5:20:12"]
        .iter()
        .map(|s| RraDef::parse(s).unwrap())
        .collect();
    let t0 = 1_700_000_000u64;
    let mut db = Rrd::create(15, t0, ds, rra).unwrap();
    let mut t = t0;
    for k in 0..700u64 {
        t += if k % 50 == 49 { 200 } else { 15 };
        let v = if k % 17 == 0 { "U".to_string() } else { format!("{}", (k * 37 % 1100) as f64 / 3.0) };
        db.update(t, &[&v]).unwrap();
    }
    let disk = MemDisk::new();
    let s = open(&disk);
    let k = SeriesKey::new("old", "h1", "cpu_user");
    s.import(&k, &db, 0).unwrap();
    assert!(matches!(s.import(&k, &db, 0), Err(ImportError::Exists(_))));
    let same = |s: &Store, db: &Rrd| {
        for (cf, span, res) in
            [(Cf::Average, 600, 1), (Cf::Max, 3000, 60), (Cf::Average, 20_000, 300), (Cf::Average, 100, 15)]
        {
            let end = db.last_up;
            let want = db.fetch(cf, end - span, end, res).unwrap();
            let got = s.fetch(&k, cf, end - span, end, res).unwrap();
            assert_eq!((got.start, got.step, got.rows.len()), (want.start, want.step, want.rows.len()));
            for (a, b) in got.rows.iter().zip(&want.rows) {
                assert!(
                    a[0].to_bits() == b[0].to_bits() || (a[0].is_nan() && b[0].is_nan()),
                    "{cf:?} {span}: {a:?} {b:?}"
                );
            }
        }
    };
    same(&s, &db);
    // New samples continue the imported state exactly.
    for j in 1..=30u64 {
        let tj = db.last_up + 15;
        let v = (j * 7) as f64;
        s.append(&[Update { series: k.clone(), kind: DsKind::Gauge, time_ms: tj as i64 * 1000, value: v }]).unwrap();
        db.update(tj, &[&value_text(v)]).unwrap();
        if j == 10 {
            s.flush_all().unwrap();
        }
    }
    same(&s, &db);
    drop(s);
    let s = open(&disk);
    same(&s, &db);
    assert_eq!(s.stats().corrupt_files.load(Ordering::Relaxed), 0);
}

#[test]
fn a_tree_of_rrd_files_is_imported() {
    let tree = tempfile::tempdir().unwrap();
    let mut dumps = std::collections::HashMap::new();
    for (c, h, m, ds) in
        [("c1", "web1", "load_one", 1), ("c1", "web2", "load_one", 1), ("c1", "__SummaryInfo__", "load_one", 2)]
    {
        let dir = tree.path().join(c).join(h);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{m}.rrd"));
        std::fs::write(&p, b"").unwrap();
        let mut defs = vec![DsDef::parse("DS:sum:GAUGE:120:U:U").unwrap()];
        if ds == 2 {
            defs.push(DsDef::parse("DS:num:GAUGE:120:U:U").unwrap());
        }
        let mut db =
            Rrd::create(15, 1_700_000_000, defs, vec![RraDef::parse("RRA:AVERAGE:0.5:1:100").unwrap()]).unwrap();
        for k in 1..50u64 {
            let vals: Vec<String> = (0..ds).map(|i| format!("{}", k + i)).collect();
            let vals: Vec<&str> = vals.iter().map(String::as_str).collect();
            db.update(1_700_000_000 + 15 * k, &vals).unwrap();
        }
        dumps.insert(p, crate::cli::render_dump(&db));
    }
    std::fs::write(tree.path().join("stray.rrd"), b"").unwrap();
    let disk = MemDisk::new();
    let s = open(&disk);
    s.append(&[Update {
        series: SeriesKey::new("c1", "web2", "load_one"),
        kind: DsKind::Gauge,
        time_ms: T * 1000,
        value: 1.0,
    }])
    .unwrap();
    let r = crate::import::import_tree_with(&s, tree.path(), |p| Ok(dumps[p].clone())).unwrap();
    assert_eq!(r.imported, vec!["c1/__SummaryInfo__/load_one", "c1/__SummaryInfo__/load_one:num", "c1/web1/load_one"]);
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped); // web2 exists already
    let f = s
        .fetch(&SeriesKey::new("c1", "__SummaryInfo__", "load_one:num"), Cf::Average, 1_700_000_600, 1_700_000_700, 15)
        .unwrap();
    assert!(f.rows.iter().any(|r| r[0] > 40.0), "{:?}", f.rows);
}

#[test]
fn a_flusher_that_falls_behind_stops_acknowledgements_until_it_catches_up() {
    let disk = MemDisk::new();
    let c = StoreConfig { max_unflushed_bytes: 16 * 40, ..cfg() };
    let s = Store::open_on_with(Arc::new(disk.clone()), Path::new("/data"), c, opts()).unwrap();
    s.append(&batch(1, 41, &["a", "b"])).unwrap(); // 82 samples: past twice the bound
    assert!(matches!(s.append(&batch(42, 1, &["a"])), Err(WriteError::Backpressure(_))));
    assert_eq!(s.stats().backpressure.load(Ordering::Relaxed), 1);
    s.flush_all().unwrap();
    s.append(&batch(42, 1, &["a"])).unwrap();
    assert_eq!(values(&s, "a", 2, 41), want(2, 41));
}

/// A counter that starts again near 0 (agent or application restart) gives one
/// unknown interval, not a wrap-around spike, before and after a flush and a restart.
#[test]
fn a_counter_reset_is_unknown_not_a_spike() {
    let disk = MemDisk::new();
    let s = open(&disk);
    let counter = |k: i64, v: f64| Update {
        series: SeriesKey::new("web", "a", "requests_total"),
        kind: DsKind::Counter,
        time_ms: (T + 15 * k) * 1000,
        value: v,
    };
    let readings = [1000.0, 1150.0, 1300.0, 30.0, 180.0, 330.0];
    let ups: Vec<Update> = readings.iter().enumerate().map(|(k, &v)| counter(k as i64 + 1, v)).collect();
    s.append(&ups).unwrap();
    let rates = |s: &Store| {
        let f = s.fetch(&ups[0].series, Cf::Average, T as u64, (T + 15 * 6) as u64, 15).unwrap();
        f.rows.iter().take(6).map(|r| r[0]).collect::<Vec<f64>>()
    };
    let check = |got: Vec<f64>| {
        assert!(got[0].is_nan(), "{got:?}");
        assert_eq!(&got[1..3], &[10.0, 10.0], "{got:?}");
        assert!(got[3].is_nan(), "the reset interval must be unknown: {got:?}");
        assert_eq!(&got[4..6], &[10.0, 10.0], "{got:?}");
    };
    check(rates(&s));
    s.flush_all().unwrap();
    check(rates(&s));
    drop(s);
    let s = open(&disk);
    check(rates(&s));
    s.append(&[counter(7, 480.0)]).unwrap();
    s.flush_all().unwrap();
    assert_eq!(rates(&s)[5], 10.0);
}

#[test]
fn newest_row_follows_appends_and_flushes_and_matches_fetch() {
    let s = open(&MemDisk::new());
    let (start, end) = ((T - 15) as u64, (T + 15 * 60) as u64);
    assert!(matches!(s.newest_row(&key("a"), Cf::Average, start, end, 15), Err(ReadError::NotFound)));
    let newest = |s: &Store| s.newest_row(&key("a"), Cf::Average, start, end, 15).unwrap();
    s.append(&batch(1, 10, &["a"])).unwrap();
    assert_eq!(newest(&s), (15, (T + 15 * 10) as u64), "unflushed samples count");
    // The fetch's last known row is the newest row, and a column is the fetch's rows.
    let c = s.fetch_column(&key("a"), Cf::Average, start, end, 15).unwrap();
    let last = c.values.iter().rposition(|v| !v.is_nan()).unwrap() as u64;
    assert_eq!(c.start + (last + 1) * c.step, newest(&s).1);
    let f = s.fetch(&key("a"), Cf::Average, start, end, 15).unwrap();
    assert!(f.rows.iter().map(|r| r[0]).zip(&c.values).all(|(a, b)| a.to_bits() == b.to_bits()));
    s.flush_all().unwrap();
    assert_eq!(newest(&s), (15, (T + 15 * 10) as u64), "the same after a flush");
    // A sample in the middle of the next row completes nothing; the one ending it does.
    s.append(&[Update { series: key("a"), kind: DsKind::Gauge, time_ms: (T + 15 * 10 + 7) * 1000, value: 1.0 }])
        .unwrap();
    assert_eq!(newest(&s).1, (T + 15 * 10) as u64);
    s.append(&batch(11, 1, &["a"])).unwrap();
    assert_eq!(newest(&s).1, (T + 15 * 11) as u64);
    // A longer range at a coarser resolution reads the 1-minute archive.
    assert_eq!(s.newest_row(&key("a"), Cf::Max, start, end, 60).unwrap().0, 60);
}

//! Crash, corruption and disk-full behaviour through the fault-injecting [`MemDisk`].

use super::*;
use crate::disk::MemDisk;

const T: i64 = 1_699_999_995; // a multiple of the 15 s step

fn cfg() -> StoreConfig {
    StoreConfig {
        archives: vec![RraDef { cf: Cf::Average, xff: 0.5, pdp_cnt: 1, rows: 100 }],
        background: false,
        ..StoreConfig::default()
    }
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

#[test]
fn crash_before_fsync_loses_nothing_acked() {
    let disk = MemDisk::new();
    let dir = Path::new("/data");
    let s = Store::open_on(Arc::new(disk.clone()), dir, cfg()).unwrap();
    let t = s.append(&batch(1, 20, &["a", "b"])).unwrap();
    s.durable(t).unwrap();
    // Flushed to files half way, then more acked samples only in the journal.
    s.flush_all().unwrap();
    let t = s.append(&batch(21, 20, &["a", "b"])).unwrap();
    s.durable(t).unwrap();
    // Not acknowledged: may be lost.
    s.append(&batch(41, 5, &["a"])).unwrap();
    disk.crash(None);
    drop(s);
    let s = Store::open_on(Arc::new(disk.clone()), dir, cfg()).unwrap();
    for h in ["a", "b"] {
        assert_eq!(values(&s, h, 2, 38), want(2, 38), "host {h} before flush");
    }
    s.flush_all().unwrap();
    disk.crash(None);
    drop(s);
    let s = Store::open_on(Arc::new(disk), dir, cfg()).unwrap();
    assert_eq!(values(&s, "b", 2, 38), want(2, 38), "after the replayed samples were flushed");
}

#[test]
fn torn_journal_tail_is_truncated_at_the_last_good_record() {
    let disk = MemDisk::new();
    let dir = Path::new("/data");
    let s = Store::open_on(Arc::new(disk.clone()), dir, cfg()).unwrap();
    let t = s.append(&batch(1, 10, &["a"])).unwrap();
    s.durable(t).unwrap();
    s.append(&batch(11, 10, &["a"])).unwrap();
    disk.crash(Some(13)); // 13 bytes of the unsynced record survive
    drop(s);
    let s = Store::open_on(Arc::new(disk.clone()), dir, cfg()).unwrap();
    assert_eq!(s.stats().journal_truncated.load(Ordering::Relaxed), 1);
    assert_eq!(values(&s, "a", 2, 9), want(2, 9));
    // New appends after the truncation replay cleanly.
    let t = s.append(&batch(11, 5, &["a"])).unwrap();
    s.durable(t).unwrap();
    drop(s);
    let s = Store::open_on(Arc::new(disk), dir, cfg()).unwrap();
    assert_eq!(s.stats().journal_truncated.load(Ordering::Relaxed), 0);
    assert_eq!(values(&s, "a", 2, 14), want(2, 14));
}

#[test]
fn flipped_journal_byte_truncates_there() {
    let disk = MemDisk::new();
    let dir = Path::new("/data");
    let s = Store::open_on(Arc::new(disk.clone()), dir, cfg()).unwrap();
    let t = s.append(&batch(1, 10, &["a"])).unwrap();
    s.durable(t).unwrap();
    let t = s.append(&batch(11, 10, &["a"])).unwrap();
    s.durable(t).unwrap();
    drop(s);
    let seg = disk.list(&dir.join("journal")).unwrap().pop().unwrap();
    let len = disk.file_len(&seg).unwrap();
    disk.flip(&seg, len - 3, 0x40);
    let s = Store::open_on(Arc::new(disk), dir, cfg()).unwrap();
    assert_eq!(s.stats().journal_truncated.load(Ordering::Relaxed), 1);
    assert_eq!(values(&s, "a", 2, 9), want(2, 9));
}

#[test]
fn flipped_byte_in_a_series_file_is_quarantined_and_service_continues() {
    let disk = MemDisk::new();
    let dir = Path::new("/data");
    let s = Store::open_on(Arc::new(disk.clone()), dir, cfg()).unwrap();
    s.append(&batch(1, 10, &["a", "b"])).unwrap();
    s.flush_all().unwrap();
    let path = s.inner.path_of(&key("a"));
    let data_off = {
        let (f, _) = RrdFile::open(&disk, &path).unwrap();
        f.layout().data_off
    };
    disk.flip(&path, data_off + 8, 0x01);
    assert!(matches!(
        s.fetch(&key("a"), Cf::Average, T as u64, T as u64 + 150, 15),
        Err(ReadError::File(FileError::Corrupt { .. }))
    ));
    s.append(&batch(11, 10, &["a", "b"])).unwrap();
    s.flush_all().unwrap();
    assert_eq!(s.stats().quarantined.load(Ordering::Relaxed), 1);
    assert_eq!(disk.list(&dir.join("quarantine")).unwrap().len(), 1);
    // The recreated file serves new samples; the other series is untouched.
    assert_eq!(values(&s, "a", 12, 9), want(12, 9));
    assert_eq!(values(&s, "b", 2, 19), want(2, 19));
}

#[test]
fn disk_full_gives_backpressure_then_recovers_with_nothing_lost() {
    let disk = MemDisk::new();
    let dir = Path::new("/data");
    let s = Store::open_on(Arc::new(disk.clone()), dir, cfg()).unwrap();
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
    let s = Store::open_on(Arc::new(disk), dir, cfg()).unwrap();
    assert_eq!(values(&s, "a", 2, 19), want(2, 19));
}

#[test]
fn rejects_old_and_non_integer_counter_samples() {
    let s = Store::open_on(Arc::new(MemDisk::new()), Path::new("/d"), cfg()).unwrap();
    s.append(&batch(5, 1, &["a"])).unwrap();
    s.append(&batch(4, 1, &["a"])).unwrap();
    let bad = Update { series: key("c"), kind: DsKind::Counter, time_ms: T * 1000, value: 1.5 };
    s.append(&[bad]).unwrap();
    assert_eq!(s.stats().rejected.load(Ordering::Relaxed), 2);
}

#[test]
fn group_commit_syncs_once_for_many_appends() {
    let disk = MemDisk::new();
    let s = Store::open_on(Arc::new(disk.clone()), Path::new("/d"), cfg()).unwrap();
    let before = s.stats().fsyncs.load(Ordering::Relaxed);
    let mut last = None;
    for i in 0..50 {
        last = Some(s.append(&batch(1 + i, 1, &["a"])).unwrap());
    }
    s.durable(last.unwrap()).unwrap();
    assert_eq!(s.stats().fsyncs.load(Ordering::Relaxed) - before, 1);
}

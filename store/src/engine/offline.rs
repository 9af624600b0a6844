//! Read-only access to a store that a collector may be writing at the same time:
//! `ganglion rrd fetch --data DIR host/metric`. Nothing is written, locked or
//! truncated; a journal record being written is simply not seen.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock};

use super::{catalog, fetch_snapshot, journal, seg_id, shard, split_key, ReadError, SeriesKey, Shard, Snapshot};
use crate::disk::{Disk, RealDisk};
use crate::file::FileError;
use crate::rrd::{Cf, Fetched};
use shard::{Layout, ShardDef};

/// A live catalog entry: (shard, slot) → (incarnation, created, key).
type Entry = ((u32, u32), (u32, u64, String));

fn io(path: &Path) -> impl Fn(std::io::Error) -> ReadError + '_ {
    move |source| ReadError::File(FileError::Io { path: path.to_path_buf(), source })
}

/// The series `name` (`cluster/host/metric`, or `host/metric` when only one cluster
/// has it) of the store in `dir`, fetched like [`super::Store::fetch`] (shard data and
/// journal merged).
///
/// # Errors
/// [`ReadError::NotFound`], [`ReadError::Ambiguous`], or file and fetch errors.
pub fn fetch(
    dir: &Path,
    name: &str,
    cf: Cf,
    start: u64,
    end: u64,
    res: u64,
) -> Result<(SeriesKey, Fetched), ReadError> {
    fetch_on(&RealDisk, dir, name, cf, start, end, res)
}

/// [`fetch`] on any [`Disk`].
///
/// # Errors
/// As [`fetch`].
pub fn fetch_on(
    disk: &dyn Disk,
    dir: &Path,
    name: &str,
    cf: Cf,
    start: u64,
    end: u64,
    res: u64,
) -> Result<(SeriesKey, Fetched), ReadError> {
    let want: Vec<&str> = name.split('/').collect();
    let matches = |key: &str| {
        let k = split_key(key);
        match want.as_slice() {
            [c, h, m] => k == [*c, *h, *m],
            [h, m] => k[1] == *h && k[2] == *m,
            _ => false,
        }
    };
    // The catalog: the live entry of the series, if it was ever flushed.
    let cpath = dir.join("catalog.log");
    let bytes = read_all(disk, &cpath)?;
    let mut live: std::collections::HashMap<(u32, u32), (u32, u64, String)> = std::collections::HashMap::new();
    for op in catalog::read_all(&bytes).ops {
        match op {
            catalog::Op::Add { shard, slot, incarnation, created, key, .. } => {
                live.insert((shard, slot), (incarnation, created, key));
            }
            catalog::Op::Remove { shard, slot, incarnation } => {
                if live.get(&(shard, slot)).is_some_and(|e| e.0 == incarnation) {
                    live.remove(&(shard, slot));
                }
            }
        }
    }
    let mut found: Vec<Entry> = live.into_iter().filter(|(_, e)| matches(&e.2)).collect();
    // The journal: samples not yet flushed (and series never flushed).
    let jdir = dir.join("journal");
    let mut pending: std::collections::HashMap<String, (super::DsKind, Vec<(u64, f64)>)> =
        std::collections::HashMap::new();
    for path in disk.list(&jdir).map_err(io(&jdir))? {
        if seg_id(&path).is_none() {
            continue;
        }
        let b = read_all(disk, &path)?;
        let mut ids: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
        let mut at = 0;
        while let journal::Decoded::Record(rec, used) = journal::decode(&b[at..]) {
            at += used;
            for d in rec.defines {
                let key = d.key.joined();
                if matches(&key) {
                    pending.entry(key.clone()).or_insert((d.kind, Vec::new()));
                }
                ids.insert(d.id, key);
            }
            for s in rec.samples {
                if let Some(p) = ids.get(&s.id).and_then(|k| pending.get_mut(k)) {
                    if p.1.last().is_none_or(|l| s.time > l.0) {
                        p.1.push((s.time, s.value));
                    }
                }
            }
            for k in rec.removes {
                pending.remove(&k.joined());
            }
        }
    }
    let mut names: Vec<String> = found.iter().map(|f| f.1 .2.clone()).collect();
    names.extend(pending.keys().cloned());
    names.sort();
    names.dedup();
    match names.len() {
        0 => return Err(ReadError::NotFound),
        1 => {}
        _ => return Err(ReadError::Ambiguous(names)),
    }
    let key = SeriesKey::from_joined(&names[0]).ok_or(ReadError::NotFound)?;
    let samples = pending.remove(&names[0]);
    let (sh, snap) = match found.pop() {
        Some(((shard_id, slot), (inc, created, _))) => {
            let path = dir.join("shards").join(format!("{shard_id:06}.gshard"));
            let file = disk.open(&path, false).map_err(io(&path))?;
            let mut head = vec![0u8; shard::HEADER_LEN as usize];
            file.read_at(&mut head, 0).map_err(io(&path))?;
            let h = shard::decode_header(&head)
                .map_err(|e| ReadError::File(FileError::Corrupt { path: path.clone(), reason: e.0 }))?;
            let layout = Layout::new(&h.def, h.capacity);
            // The copy holding the slot's current record.
            let mut best = (0usize, None::<u64>);
            for copy in 0..2 {
                let mut b = vec![0u8; layout.state_len];
                file.read_at(&mut b, layout.state_off(copy, slot)).map_err(io(&path))?;
                if let Ok(Some(st)) = shard::check_state(shard_id, slot, h.def.rra.len(), &b) {
                    if best.1.is_none_or(|g| st.gen > g) {
                        best = (copy, Some(st.gen));
                    }
                }
            }
            let mut last_up = 0;
            let mut b = vec![0u8; layout.state_len];
            file.read_at(&mut b, layout.state_off(best.0, slot)).map_err(io(&path))?;
            if let Ok(Some(st)) = shard::check_state(shard_id, slot, h.def.rra.len(), &b) {
                if st.incarnation == inc {
                    last_up = st.last_up;
                }
            }
            let def = Arc::new(h.def);
            let sh = Shard {
                id: shard_id,
                path,
                file,
                def: def.clone(),
                layout,
                io: RwLock::new(()),
                cur: AtomicUsize::new(best.0),
                gen: AtomicU64::new(0),
            };
            let mut p = samples.map(|s| s.1).unwrap_or_default();
            p.retain(|s| s.0 > last_up.max(created));
            (Some(sh), Snapshot { def, slot, incarnation: inc, created, pending: p })
        }
        None => {
            let (kind, p) = samples.ok_or(ReadError::NotFound)?;
            let created = p.first().map_or(0, |s| s.0.saturating_sub(1));
            // Never flushed: the definition it will get is not known here; the
            // collector's default archive set is assumed.
            let cfg = super::StoreConfig::default();
            let def = ShardDef { step: cfg.step_secs, ds: kind.ds_def(cfg.heartbeat_secs), rra: cfg.archives };
            (None, Snapshot { def: Arc::new(def), slot: 0, incarnation: 0, created, pending: p })
        }
    };
    let c = fetch_snapshot(sh.as_ref(), &snap, cf, start, end, res)?;
    let rows = c.values.into_iter().map(|v| vec![v]).collect();
    Ok((key, Fetched { start: c.start, end: c.end, step: c.step, ds_names: vec![snap.def.ds.name.clone()], rows }))
}

fn read_all(disk: &dyn Disk, path: &Path) -> Result<Vec<u8>, ReadError> {
    if !disk.exists(path) {
        return Ok(Vec::new());
    }
    let f = disk.open(path, false).map_err(io(path))?;
    let len = f.len().map_err(io(path))?;
    let mut b = vec![0u8; len as usize];
    f.read_at(&mut b, 0).map_err(io(path))?;
    Ok(b)
}

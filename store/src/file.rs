//! The standalone file of one round-robin database (format version 1).
//!
//! A file is preallocated at create time and never changes size. It holds a superblock
//! (definitions, written once), two state slots A/B (live state, written alternately
//! so a torn write never loses the previous state), and the archive rows in data blocks
//! that each carry a CRC32C. Blocks after the first end on 4 KiB boundaries, so one
//! block is one page and a flush that appends rows to an archive dirties as few pages
//! as possible. All integers and floats are little-endian. `docs/STORAGE.md` has the
//! byte tables; the constants here are the source of truth.

use std::path::{Path, PathBuf};

use crate::disk::{Disk, DiskFile};
use crate::rrd::{CdpPrep, Cf, DsDef, DsType, PdpPrep, RraDef, Rrd, LAST_DS_LEN};

/// First 8 bytes of every file.
pub const MAGIC: [u8; 8] = *b"GNGLRRD\0";
/// Format version written by this build.
pub const VERSION: u32 = 1;
/// Page size the layout is aligned to.
pub const PAGE: u64 = 4096;
/// Bytes after each data block's values: CRC32C (u32) and block index (u32).
pub const BLOCK_TRAILER: u64 = 8;
/// Bytes per data source definition in the superblock.
const DS_DEF_LEN: usize = 48;
/// Bytes per archive definition in the superblock.
const RRA_DEF_LEN: usize = 32;
/// Fixed superblock fields before the definitions.
const SB_FIXED: usize = 8 + 4 + 4 + 8 + 4 + 4;
/// Bytes per data source in a state slot.
const PDP_LEN: usize = 48;
/// Bytes per archive × data source in a state slot.
const CDP_LEN: usize = 32;
/// Most data sources / archives a file may declare (keeps a hostile header from asking
/// for gigabytes).
pub const MAX_DS: usize = 256;
pub const MAX_RRA: usize = 256;
/// Most rows over all archives.
pub const MAX_ROWS: u64 = 1 << 26;

/// Reading or writing a database file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// A problem found while decoding bytes (no path yet).
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("{0}")]
    Corrupt(String),
}

fn corrupt<T>(s: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError::Corrupt(s.into()))
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Where everything lives in a file with given definitions.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub sb_len: usize,
    pub slot_len: usize,
    /// Offset of slot A; slot B follows.
    pub slot_off: u64,
    pub data_off: u64,
    /// Per data block: (file offset, first value index, value count).
    pub blocks: Vec<(u64, usize, usize)>,
    pub file_len: u64,
}

impl Layout {
    /// Computes the layout for `ds_cnt` data sources and `rras`.
    pub fn new(ds_cnt: usize, rras: &[RraDef]) -> Layout {
        let sb_len = align8(SB_FIXED + DS_DEF_LEN * ds_cnt + RRA_DEF_LEN * rras.len() + 4);
        let slot_len = align8(16 + PDP_LEN * ds_cnt + CDP_LEN * ds_cnt * rras.len() + 8 * rras.len() + 4);
        let slot_off = sb_len as u64;
        let data_off = slot_off + 2 * slot_len as u64;
        let total: usize = rras.iter().map(|r| r.rows as usize).sum::<usize>() * ds_cnt;
        let mut blocks = Vec::new();
        let mut off = data_off;
        let mut first = 0;
        while first < total {
            let mut end = (off / PAGE + 1) * PAGE;
            if end - off < BLOCK_TRAILER + 8 {
                end += PAGE;
            }
            let cap = ((end - off - BLOCK_TRAILER) / 8) as usize;
            let n = cap.min(total - first);
            blocks.push((off, first, n));
            first += n;
            off = if n == cap { end } else { off + n as u64 * 8 + BLOCK_TRAILER };
        }
        Layout { sb_len, slot_len, slot_off, data_off, blocks, file_len: off }
    }

    /// The block holding value `idx`.
    pub fn block_of(&self, idx: usize) -> usize {
        self.blocks.partition_point(|&(_, first, n)| first + n <= idx)
    }
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_f64(b: &mut Vec<u8>, v: f64) {
    b.extend_from_slice(&v.to_bits().to_le_bytes());
}

/// A bounds-checked little-endian reader over a byte slice.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        match end {
            Some(end) => {
                let s = &self.b[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => corrupt("truncated"),
        }
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
}

/// Encodes the superblock (definitions) of `db`.
pub fn encode_superblock(db: &Rrd) -> Vec<u8> {
    let layout = Layout::new(db.ds.len(), &db.rra);
    let mut b = Vec::with_capacity(layout.sb_len);
    b.extend_from_slice(&MAGIC);
    put_u32(&mut b, VERSION);
    put_u32(&mut b, layout.sb_len as u32);
    put_u64(&mut b, db.step);
    put_u32(&mut b, db.ds.len() as u32);
    put_u32(&mut b, db.rra.len() as u32);
    for d in &db.ds {
        let mut name = [0u8; 20];
        name[..d.name.len()].copy_from_slice(d.name.as_bytes());
        b.extend_from_slice(&name);
        b.extend_from_slice(&[d.kind.code(), 0, 0, 0]);
        put_u64(&mut b, d.heartbeat);
        put_f64(&mut b, d.min);
        put_f64(&mut b, d.max);
    }
    for r in &db.rra {
        b.extend_from_slice(&[r.cf.code(), 0, 0, 0, 0, 0, 0, 0]);
        put_f64(&mut b, r.xff);
        put_u64(&mut b, r.pdp_cnt);
        put_u64(&mut b, r.rows);
    }
    b.resize(layout.sb_len - 4, 0);
    let crc = crc32c::crc32c(&b);
    put_u32(&mut b, crc);
    b
}

/// Definitions decoded from a superblock.
#[derive(Clone, Debug, PartialEq)]
pub struct Superblock {
    pub step: u64,
    pub ds: Vec<DsDef>,
    pub rra: Vec<RraDef>,
}

/// Decodes a superblock from the start of a file.
///
/// # Errors
/// [`DecodeError::Corrupt`] for a wrong magic, unknown version, bad checksum or
/// definitions out of range. Never panics, whatever the bytes.
pub fn decode_superblock(bytes: &[u8]) -> Result<Superblock, DecodeError> {
    let mut c = Cursor { b: bytes, at: 0 };
    if c.take(8)? != MAGIC {
        return corrupt("not a ganglion round-robin file (bad magic)");
    }
    let version = c.u32()?;
    if version != VERSION {
        return corrupt(format!("unsupported format version {version}"));
    }
    let sb_len = c.u32()? as usize;
    if sb_len < SB_FIXED + 4 || sb_len > bytes.len() {
        return corrupt("superblock length out of range");
    }
    let crc_at = sb_len - 4;
    let stored = u32::from_le_bytes([bytes[crc_at], bytes[crc_at + 1], bytes[crc_at + 2], bytes[crc_at + 3]]);
    if crc32c::crc32c(&bytes[..crc_at]) != stored {
        return corrupt("superblock checksum mismatch");
    }
    let step = c.u64()?;
    let ds_cnt = c.u32()? as usize;
    let rra_cnt = c.u32()? as usize;
    if step == 0 || ds_cnt == 0 || rra_cnt == 0 || ds_cnt > MAX_DS || rra_cnt > MAX_RRA {
        return corrupt("definition counts out of range");
    }
    if align8(SB_FIXED + DS_DEF_LEN * ds_cnt + RRA_DEF_LEN * rra_cnt + 4) != sb_len {
        return corrupt("superblock length does not match its definitions");
    }
    let mut ds = Vec::with_capacity(ds_cnt);
    for _ in 0..ds_cnt {
        let name = c.take(20)?;
        let len = name.iter().position(|&x| x == 0).unwrap_or(20);
        let name = std::str::from_utf8(&name[..len]).map_err(|_| DecodeError::Corrupt("DS name not UTF-8".into()))?;
        if !crate::rrd::def::valid_ds_name(name) {
            return corrupt("invalid DS name");
        }
        let kind = DsType::from_code(c.take(4)?[0]).ok_or_else(|| DecodeError::Corrupt("unknown DS type".into()))?;
        let heartbeat = c.u64()?;
        let (min, max) = (c.f64()?, c.f64()?);
        ds.push(DsDef { name: name.to_string(), kind, heartbeat, min, max });
    }
    let mut rra = Vec::with_capacity(rra_cnt);
    let mut rows_total = 0u64;
    for _ in 0..rra_cnt {
        let cf = Cf::from_code(c.take(8)?[0]).ok_or_else(|| DecodeError::Corrupt("unknown CF".into()))?;
        let xff = c.f64()?;
        let pdp_cnt = c.u64()?;
        let rows = c.u64()?;
        if pdp_cnt == 0 || rows == 0 || rows > MAX_ROWS || !(0.0..1.0).contains(&xff) {
            return corrupt("archive definition out of range");
        }
        rows_total += rows;
        rra.push(RraDef { cf, xff, pdp_cnt, rows });
    }
    if rows_total.saturating_mul(ds_cnt as u64) > MAX_ROWS {
        return corrupt("archives too large");
    }
    Ok(Superblock { step, ds, rra })
}

/// Encodes a state slot with generation `gen`.
pub fn encode_slot(db: &Rrd, gen: u64) -> Vec<u8> {
    let layout = Layout::new(db.ds.len(), &db.rra);
    let mut b = Vec::with_capacity(layout.slot_len);
    put_u64(&mut b, gen);
    put_u64(&mut b, db.last_up);
    for p in &db.pdp {
        let mut s = [0u8; 32];
        let n = p.last_ds.len().min(LAST_DS_LEN - 1);
        s[..n].copy_from_slice(&p.last_ds.as_bytes()[..n]);
        b.extend_from_slice(&s);
        put_f64(&mut b, p.val);
        put_u64(&mut b, p.unkn_sec);
    }
    for c in &db.cdp {
        put_f64(&mut b, c.val);
        put_u64(&mut b, c.unkn_pdp);
        put_f64(&mut b, c.primary);
        put_f64(&mut b, c.secondary);
    }
    for &r in &db.cur_row {
        put_u64(&mut b, r);
    }
    b.resize(layout.slot_len - 4, 0);
    let crc = crc32c::crc32c(&b);
    put_u32(&mut b, crc);
    b
}

/// Live state decoded from a slot.
#[derive(Clone, Debug)]
pub struct Slot {
    pub gen: u64,
    pub last_up: u64,
    pub pdp: Vec<PdpPrep>,
    pub cdp: Vec<CdpPrep>,
    pub cur_row: Vec<u64>,
}

/// Decodes a state slot for definitions `sb`.
///
/// # Errors
/// [`DecodeError::Corrupt`] on a checksum mismatch or values out of range.
pub fn decode_slot(bytes: &[u8], sb: &Superblock) -> Result<Slot, DecodeError> {
    let layout = Layout::new(sb.ds.len(), &sb.rra);
    if bytes.len() < layout.slot_len {
        return corrupt("state slot truncated");
    }
    let crc_at = layout.slot_len - 4;
    let stored = u32::from_le_bytes([bytes[crc_at], bytes[crc_at + 1], bytes[crc_at + 2], bytes[crc_at + 3]]);
    if crc32c::crc32c(&bytes[..crc_at]) != stored {
        return corrupt("state slot checksum mismatch");
    }
    let mut c = Cursor { b: bytes, at: 0 };
    let gen = c.u64()?;
    let last_up = c.u64()?;
    let mut pdp = Vec::with_capacity(sb.ds.len());
    for _ in 0..sb.ds.len() {
        let s = c.take(32)?;
        let n = s.iter().position(|&x| x == 0).unwrap_or(LAST_DS_LEN - 1).min(LAST_DS_LEN - 1);
        let last_ds = String::from_utf8_lossy(&s[..n]).into_owned();
        let val = c.f64()?;
        let unkn_sec = c.u64()?;
        pdp.push(PdpPrep { last_ds, val, unkn_sec });
    }
    let mut cdp = Vec::with_capacity(sb.ds.len() * sb.rra.len());
    for _ in 0..sb.ds.len() * sb.rra.len() {
        cdp.push(CdpPrep { val: c.f64()?, unkn_pdp: c.u64()?, primary: c.f64()?, secondary: c.f64()? });
    }
    let mut cur_row = Vec::with_capacity(sb.rra.len());
    for r in &sb.rra {
        let row = c.u64()?;
        if row >= r.rows {
            return corrupt("cur_row out of range");
        }
        cur_row.push(row);
    }
    Ok(Slot { gen, last_up, pdp, cdp, cur_row })
}

/// Encodes data block `k` of `db`'s values.
pub fn encode_block(layout: &Layout, k: usize, values: &[f64]) -> Vec<u8> {
    let (_, first, n) = layout.blocks[k];
    let mut b = Vec::with_capacity(n * 8 + BLOCK_TRAILER as usize);
    b.extend_from_slice(&(k as u32).to_le_bytes());
    for v in &values[first..first + n] {
        put_f64(&mut b, *v);
    }
    let crc = crc32c::crc32c(&b);
    b.drain(..4);
    put_u32(&mut b, crc);
    put_u32(&mut b, k as u32);
    b
}

/// Decodes data block `k` into `out[first..first+n]`.
///
/// # Errors
/// [`DecodeError::Corrupt`] when the checksum or block index does not match.
pub fn decode_block(layout: &Layout, k: usize, bytes: &[u8], out: &mut [f64]) -> Result<(), DecodeError> {
    let (_, first, n) = layout.blocks[k];
    if bytes.len() != n * 8 + BLOCK_TRAILER as usize || out.len() < first + n {
        return corrupt(format!("data block {k} has the wrong length"));
    }
    let mut c = Cursor { b: &bytes[n * 8..], at: 0 };
    let (crc, idx) = (c.u32()?, c.u32()?);
    let mut h = crc32c::crc32c(&(k as u32).to_le_bytes());
    h = crc32c::crc32c_append(h, &bytes[..n * 8]);
    if idx != k as u32 || h != crc {
        return corrupt(format!("data block {k} checksum mismatch"));
    }
    for (i, ch) in bytes[..n * 8].chunks_exact(8).enumerate() {
        let mut a = [0u8; 8];
        a.copy_from_slice(ch);
        out[first + i] = f64::from_bits(u64::from_le_bytes(a));
    }
    Ok(())
}

/// One database file open for reading and writing.
pub struct RrdFile {
    path: PathBuf,
    file: Box<dyn DiskFile>,
    layout: Layout,
    /// Generation of the slot that holds the current state.
    gen: u64,
}

impl RrdFile {
    fn io(&self, source: std::io::Error) -> FileError {
        FileError::Io { path: self.path.clone(), source }
    }

    fn corrupt(&self, e: DecodeError) -> FileError {
        let DecodeError::Corrupt(reason) = e;
        FileError::Corrupt { path: self.path.clone(), reason }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates `path` holding `db`: the whole file is written (not sparse) so later
    /// flushes never allocate, and synced when `sync`.
    ///
    /// # Errors
    /// [`FileError::Io`] (ENOSPC included).
    pub fn create(disk: &dyn Disk, path: &Path, db: &Rrd, sync: bool) -> Result<RrdFile, FileError> {
        let ioe = |source| FileError::Io { path: path.to_path_buf(), source };
        let layout = Layout::new(db.ds.len(), &db.rra);
        let mut bytes = encode_superblock(db);
        bytes.extend_from_slice(&encode_slot(db, 1));
        bytes.resize(layout.data_off as usize, 0);
        for k in 0..layout.blocks.len() {
            bytes.extend_from_slice(&encode_block(&layout, k, &db.data));
            let next = layout.blocks.get(k + 1).map_or(layout.file_len, |b| b.0);
            bytes.resize(next as usize, 0);
        }
        // Write to a temporary name and rename, so a crash never leaves half a file
        // under the real name.
        let tmp = path.with_extension("tmp");
        let f = disk.open(&tmp, true).map_err(ioe)?;
        f.set_len(0).map_err(ioe)?;
        f.write_at(&bytes, 0).map_err(ioe)?;
        if sync {
            f.sync().map_err(ioe)?;
        }
        drop(f);
        disk.rename(&tmp, path).map_err(ioe)?;
        let file = disk.open(path, false).map_err(ioe)?;
        Ok(RrdFile { path: path.to_path_buf(), file, layout, gen: 1 })
    }

    /// Opens `path` and loads the whole database, verifying every checksum.
    ///
    /// # Errors
    /// [`FileError::Io`] for I/O failures, [`FileError::Corrupt`] for any checksum or
    /// structure problem (the caller quarantines the file).
    pub fn open(disk: &dyn Disk, path: &Path) -> Result<(RrdFile, Rrd), FileError> {
        let ioe = |source| FileError::Io { path: path.to_path_buf(), source };
        let file = disk.open(path, false).map_err(ioe)?;
        let len = file.len().map_err(ioe)?;
        let mut head = vec![0u8; len.min(PAGE) as usize];
        file.read_at(&mut head, 0).map_err(ioe)?;
        let mut this = RrdFile { path: path.to_path_buf(), file, layout: Layout::new(1, &[]), gen: 0 };
        let sb = decode_superblock(&head).map_err(|e| this.corrupt(e))?;
        this.layout = Layout::new(sb.ds.len(), &sb.rra);
        if len != this.layout.file_len {
            return Err(FileError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("length {len}, expected {}", this.layout.file_len),
            });
        }
        let mut slots = vec![0u8; 2 * this.layout.slot_len];
        this.file.read_at(&mut slots, this.layout.slot_off).map_err(|e| this.io(e))?;
        let a = decode_slot(&slots[..this.layout.slot_len], &sb);
        let b = decode_slot(&slots[this.layout.slot_len..], &sb);
        let slot = match (a, b) {
            (Ok(a), Ok(b)) => {
                if a.gen >= b.gen {
                    a
                } else {
                    b
                }
            }
            (Ok(s), Err(_)) | (Err(_), Ok(s)) => s,
            (Err(e), Err(_)) => return Err(this.corrupt(e)),
        };
        this.gen = slot.gen;
        let mut db = Rrd::create(sb.step, 0, sb.ds, sb.rra)
            .map_err(|e| FileError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })?;
        let mut data = vec![0u8; (this.layout.file_len - this.layout.data_off) as usize];
        this.file.read_at(&mut data, this.layout.data_off).map_err(|e| this.io(e))?;
        for k in 0..this.layout.blocks.len() {
            let (off, _, n) = this.layout.blocks[k];
            let s = (off - this.layout.data_off) as usize;
            let bytes = &data[s..s + n * 8 + BLOCK_TRAILER as usize];
            decode_block(&this.layout, k, bytes, &mut db.data).map_err(|e| this.corrupt(e))?;
        }
        db.last_up = slot.last_up;
        db.pdp = slot.pdp;
        db.cdp = slot.cdp;
        db.cur_row = slot.cur_row;
        db.take_dirty();
        Ok((this, db))
    }

    /// Writes the data blocks `db` changed since the last save. Call
    /// [`RrdFile::write_state`] after (with a sync in between when crash safety
    /// matters), so a state never points at rows that are not on disk.
    ///
    /// # Errors
    /// [`FileError::Io`].
    pub fn write_data(&self, db: &mut Rrd) -> Result<(), FileError> {
        let mut blocks: Vec<usize> = match db.take_dirty() {
            None => (0..self.layout.blocks.len()).collect(),
            Some(rows) => {
                let ds_cnt = db.ds.len();
                let mut offs = Vec::new();
                let mut rra_off = vec![0usize; db.rra.len()];
                for r in 1..db.rra.len() {
                    rra_off[r] = rra_off[r - 1] + db.rra[r - 1].rows as usize * ds_cnt;
                }
                for (r, row) in rows {
                    let first = rra_off[r as usize] + row as usize * ds_cnt;
                    offs.push(self.layout.block_of(first));
                    offs.push(self.layout.block_of(first + ds_cnt - 1));
                }
                offs
            }
        };
        blocks.sort_unstable();
        blocks.dedup();
        for k in blocks {
            let bytes = encode_block(&self.layout, k, &db.data);
            self.file.write_at(&bytes, self.layout.blocks[k].0).map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// Writes the live state into the slot not holding the current state.
    ///
    /// # Errors
    /// [`FileError::Io`].
    pub fn write_state(&mut self, db: &Rrd) -> Result<(), FileError> {
        let gen = self.gen + 1;
        let slot = if gen % 2 == 1 { 0 } else { 1 };
        let bytes = encode_slot(db, gen);
        let off = self.layout.slot_off + (slot * self.layout.slot_len) as u64;
        self.file.write_at(&bytes, off).map_err(|e| self.io(e))?;
        self.gen = gen;
        Ok(())
    }

    /// Data, then state: what `rrdtool update` leaves behind, without fsync.
    ///
    /// # Errors
    /// [`FileError::Io`].
    pub fn save(&mut self, db: &mut Rrd) -> Result<(), FileError> {
        self.write_data(db)?;
        self.write_state(db)
    }

    /// `fdatasync`.
    ///
    /// # Errors
    /// [`FileError::Io`].
    pub fn sync(&self) -> Result<(), FileError> {
        self.file.sync().map_err(|e| self.io(e))
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use proptest::prelude::*;

    fn bench_db() -> Rrd {
        let ds = vec![DsDef::parse("DS:sum:GAUGE:120:U:U").unwrap()];
        let rra = ["1:244", "24:244", "168:244", "672:244", "5760:374"]
            .iter()
            .map(|s| RraDef::parse(&format!("RRA:AVERAGE:0.5:{s}")).unwrap())
            .collect();
        Rrd::create(15, 1_700_000_000, ds, rra).unwrap()
    }

    #[test]
    fn ganglia_archive_set_fits_in_three_pages() {
        let db = bench_db();
        let l = Layout::new(1, &db.rra);
        assert!(l.file_len <= 3 * PAGE, "{l:?}");
        // Blocks after the first end on page boundaries.
        for &(off, _, n) in &l.blocks[1..l.blocks.len() - 1] {
            assert_eq!(off % PAGE, 0);
            assert_eq!(n as u64 * 8 + BLOCK_TRAILER, PAGE);
        }
    }

    #[test]
    fn round_trips_through_a_file() {
        let disk = MemDisk::new();
        let path = Path::new("/x/a.grrd");
        let mut db = bench_db();
        let mut f = RrdFile::create(&disk, path, &db, true).unwrap();
        for k in 1..500u64 {
            db.update(1_700_000_000 + 15 * k, &[&format!("{}", k % 37)]).unwrap();
            if k % 50 == 0 {
                f.save(&mut db).unwrap();
            }
        }
        f.save(&mut db).unwrap();
        let (_, back) = RrdFile::open(&disk, path).unwrap();
        assert_eq!(format!("{db:?}"), format!("{back:?}"));
    }

    #[test]
    fn detects_a_flipped_byte_anywhere() {
        let disk = MemDisk::new();
        let path = Path::new("/x/a.grrd");
        let db = bench_db();
        RrdFile::create(&disk, path, &db, true).unwrap();
        let len = disk.file_len(path).unwrap();
        let l = Layout::new(1, &db.rra);
        for off in (0..len).step_by(97) {
            // Slot B is unused on a new file, and padding carries nothing.
            let in_slot_b = off >= l.slot_off + l.slot_len as u64 && off < l.data_off;
            disk.flip(path, off, 0x10);
            let r = RrdFile::open(&disk, path);
            disk.flip(path, off, 0x10);
            if !in_slot_b && l.blocks.iter().any(|&(o, _, n)| off >= o && off < o + n as u64 * 8 + 8) || off < 8 {
                assert!(matches!(r, Err(FileError::Corrupt { .. })), "flip at {off} undetected");
            }
        }
    }

    #[test]
    fn torn_state_write_falls_back_to_previous_slot() {
        let disk = MemDisk::new();
        let path = Path::new("/x/a.grrd");
        let mut db = bench_db();
        let mut f = RrdFile::create(&disk, path, &db, true).unwrap();
        db.update(1_700_000_015, &["5"]).unwrap();
        f.save(&mut db).unwrap();
        f.sync().unwrap();
        let saved = db.clone();
        db.update(1_700_000_030, &["6"]).unwrap();
        f.write_state(&db).unwrap();
        disk.crash(Some(20));
        let (_, back) = RrdFile::open(&disk, path).unwrap();
        assert_eq!(back.last_up, saved.last_up);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(sb) = decode_superblock(&bytes) {
                let _ = decode_slot(&bytes, &sb);
            }
        }

        #[test]
        fn garbage_after_a_valid_magic_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 16..2048)) {
            bytes[..8].copy_from_slice(&MAGIC);
            bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
            let _ = decode_superblock(&bytes);
        }
    }
}

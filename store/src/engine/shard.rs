//! Shard files: the on-disk home of many series that share one definition.
//!
//! A shard holds up to `capacity` series (slots) with the same step, data source type,
//! heartbeat and archives. Its layout puts what one flush writes next to each other:
//!
//! ```text
//! [header, 4 KiB][state table A: capacity records][state table B][archive 0][archive 1]…
//! archive a = columns 0..ceil(rows_a / 31); column c = one 256-byte block per slot
//! block (slot s, archive a, column c) = rows 31c..31c+30 of series s, incarnation, CRC32C
//! ```
//!
//! Rows sit at a position fixed by time: the CDP that ends at time `E` is row
//! `(E / (step · pdp_cnt)) mod rows` in every series of the shard. Series sampled
//! together therefore write the same columns, and a flush of a whole shard writes a
//! few contiguous column ranges (one `pwrite` each) plus one state table, whatever the
//! number of series. A series' own data is in its own 256-byte blocks: reading one
//! series reads nothing of another series' data beyond a block boundary.
//!
//! Blocks are 256 bytes and 256-byte aligned, so a block never straddles a 512-byte
//! sector: a torn write leaves every block wholly old or wholly new (the media
//! assumption in `docs/STORAGE.md`). Every block and state record carries a CRC32C
//! seeded with its position, so a block written to the wrong place fails too.
//!
//! Everything here is pure encoding and arithmetic; I/O is in the engine.

use crate::rrd::{CdpPrep, Cf, DsDef, DsType, RraDef, DNAN};

/// First 8 bytes of a shard file.
pub const MAGIC: [u8; 8] = *b"GNGLSHRD";
/// Format version written by this build (version 1 was one file per series).
pub const VERSION: u32 = 2;
/// Bytes of the header (one page).
pub const HEADER_LEN: u64 = 4096;
/// Bytes per data block.
pub const BLOCK_LEN: usize = 256;
/// Values (rows of one data source) per block.
pub const BLOCK_ROWS: usize = 31;
/// Offset of the incarnation in a block; the CRC follows it.
const BLOCK_INC_AT: usize = BLOCK_ROWS * 8;
/// Most archives per shard definition.
pub const MAX_ARCHIVES: usize = 64;
/// Most slots per shard.
pub const MAX_CAPACITY: u32 = 1 << 16;
/// Most rows per archive.
pub const MAX_ROWS: u64 = 1 << 24;
/// Fixed bytes of a state record before the per-archive part.
const STATE_FIXED: usize = 56;
/// Bytes per archive in a state record.
const STATE_PER_RRA: usize = 16;

/// A problem found while decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Corrupt(pub String);

fn corrupt<T>(s: impl Into<String>) -> Result<T, Corrupt> {
    Err(Corrupt(s.into()))
}

fn align(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn f64_at(b: &[u8], at: usize) -> f64 {
    f64::from_bits(u64_at(b, at))
}

/// What all series of a shard share.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardDef {
    pub step: u64,
    /// The one data source (named `value`).
    pub ds: DsDef,
    pub rra: Vec<RraDef>,
}

impl ShardDef {
    /// Rejects definitions a shard cannot hold.
    ///
    /// # Errors
    /// A description of the problem.
    pub fn check(&self) -> Result<(), String> {
        if self.step == 0 || self.ds.heartbeat == 0 {
            return Err("step and heartbeat must be positive".into());
        }
        if self.rra.is_empty() || self.rra.len() > MAX_ARCHIVES {
            return Err(format!("1 to {MAX_ARCHIVES} archives"));
        }
        for r in &self.rra {
            let name = format!("RRA:{}:{}:{}:{}", r.cf, r.xff, r.pdp_cnt, r.rows);
            if r.pdp_cnt == 0 || r.rows == 0 || r.rows > MAX_ROWS || !(0.0..1.0).contains(&r.xff) {
                return Err(format!("archive {name} out of range (1 to {MAX_ROWS} rows, xff below 1)"));
            }
            if self.step.checked_mul(r.pdp_cnt).and_then(|s| s.checked_mul(r.rows)).is_none() {
                return Err(format!("archive {name} spans too much time"));
            }
        }
        Ok(())
    }

    /// Whether two definitions are the same (floats compared bit for bit, so the `U`
    /// limits, NaN, compare equal).
    pub fn same(&self, other: &ShardDef) -> bool {
        encode_header(0, 1, self) == encode_header(0, 1, other)
    }

    /// Seconds per row of archive `a`.
    pub fn rra_step(&self, a: usize) -> u64 {
        self.step * self.rra[a].pdp_cnt
    }

    /// Data bytes of one series (blocks of all archives).
    pub fn bytes_per_series(&self) -> u64 {
        self.rra.iter().map(|r| r.rows.div_ceil(BLOCK_ROWS as u64) * BLOCK_LEN as u64).sum()
    }
}

/// Where everything of a shard lives.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub capacity: u32,
    pub state_len: usize,
    /// Offsets of state tables A and B.
    pub states: [u64; 2],
    /// Per archive: offset of column 0 and the number of columns.
    pub archives: Vec<(u64, u32)>,
    pub file_len: u64,
}

impl Layout {
    pub fn new(def: &ShardDef, capacity: u32) -> Layout {
        let state_len = state_len(def.rra.len());
        let table = align(table_len(capacity, state_len) as u64, 4096);
        let states = [HEADER_LEN, HEADER_LEN + table];
        let mut off = HEADER_LEN + 2 * table;
        let mut archives = Vec::with_capacity(def.rra.len());
        for r in &def.rra {
            let cols = r.rows.div_ceil(BLOCK_ROWS as u64);
            archives.push((off, cols as u32));
            off = align(off + cols * u64::from(capacity) * BLOCK_LEN as u64, 4096);
        }
        Layout { capacity, state_len, states, archives, file_len: off }
    }

    /// Offset of the state record of `slot` in table `copy` (0 = A, 1 = B).
    pub fn state_off(&self, copy: usize, slot: u32) -> u64 {
        self.states[copy] + state_pos(slot, self.state_len) as u64
    }

    /// Bytes of one state table.
    pub fn table_len(&self) -> usize {
        table_len(self.capacity, self.state_len)
    }

    /// Position of `slot`'s record inside a state table.
    pub fn state_pos(&self, slot: u32) -> std::ops::Range<usize> {
        let p = state_pos(slot, self.state_len);
        p..p + self.state_len
    }

    /// Offset of column `col` of archive `a` (the block of slot 0).
    pub fn column_off(&self, a: usize, col: u32) -> u64 {
        self.archives[a].0 + u64::from(col) * u64::from(self.capacity) * BLOCK_LEN as u64
    }

    /// Offset of the block of `slot` in column `col` of archive `a`.
    pub fn block_off(&self, a: usize, col: u32, slot: u32) -> u64 {
        self.column_off(a, col) + u64::from(slot) * BLOCK_LEN as u64
    }

    /// Bytes of one column.
    pub fn column_len(&self) -> usize {
        self.capacity as usize * BLOCK_LEN
    }
}

/// Bytes of one state record for `rra_cnt` archives.
pub fn state_len(rra_cnt: usize) -> usize {
    (STATE_FIXED + STATE_PER_RRA * rra_cnt + 4).div_ceil(8) * 8
}

/// Sector size state records never straddle.
pub const SECTOR: usize = 512;

/// Records of `len` bytes are packed `SECTOR / len` to a sector (or one per run of
/// whole sectors when longer), so a torn write leaves each record wholly old or new.
fn state_pos(slot: u32, len: usize) -> usize {
    if len <= SECTOR {
        let per = SECTOR / len;
        slot as usize / per * SECTOR + slot as usize % per * len
    } else {
        slot as usize * len.div_ceil(SECTOR) * SECTOR
    }
}

fn table_len(capacity: u32, len: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        state_pos(capacity - 1, len) + len
    }
}

/// Encodes the header of shard `id`.
pub fn encode_header(id: u32, capacity: u32, def: &ShardDef) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN as usize);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&capacity.to_le_bytes());
    b.extend_from_slice(&def.step.to_le_bytes());
    b.extend_from_slice(&[def.ds.kind.code(), 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&def.ds.heartbeat.to_le_bytes());
    b.extend_from_slice(&def.ds.min.to_bits().to_le_bytes());
    b.extend_from_slice(&def.ds.max.to_bits().to_le_bytes());
    b.extend_from_slice(&(def.rra.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for r in &def.rra {
        b.extend_from_slice(&[r.cf.code(), 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&r.xff.to_bits().to_le_bytes());
        b.extend_from_slice(&r.pdp_cnt.to_le_bytes());
        b.extend_from_slice(&r.rows.to_le_bytes());
    }
    b.resize(HEADER_LEN as usize - 4, 0);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// A decoded header.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub id: u32,
    pub capacity: u32,
    pub def: ShardDef,
}

/// Decodes a shard header. Never panics, whatever the bytes.
///
/// # Errors
/// [`Corrupt`] for a wrong magic, version, checksum or out-of-range definitions.
pub fn decode_header(b: &[u8]) -> Result<Header, Corrupt> {
    if b.len() < HEADER_LEN as usize {
        return corrupt("header truncated");
    }
    if b[..8] != MAGIC {
        return corrupt("not a ganglion shard (bad magic)");
    }
    let version = u32_at(b, 8);
    if version != VERSION {
        return corrupt(format!("unsupported shard version {version}"));
    }
    if u32_at(b, 12) != HEADER_LEN as u32 {
        return corrupt("header length mismatch");
    }
    let n = HEADER_LEN as usize - 4;
    if crc32c::crc32c(&b[..n]) != u32_at(b, n) {
        return corrupt("header checksum mismatch");
    }
    let id = u32_at(b, 16);
    let capacity = u32_at(b, 20);
    let step = u64_at(b, 24);
    let kind = DsType::from_code(b[32]).ok_or_else(|| Corrupt("unknown DS type".into()))?;
    let heartbeat = u64_at(b, 40);
    let (min, max) = (f64_at(b, 48), f64_at(b, 56));
    let rra_cnt = u32_at(b, 64) as usize;
    if capacity == 0 || capacity > MAX_CAPACITY || rra_cnt == 0 || rra_cnt > MAX_ARCHIVES {
        return corrupt("header counts out of range");
    }
    let mut rra = Vec::with_capacity(rra_cnt);
    for k in 0..rra_cnt {
        let at = 72 + 32 * k;
        let cf = Cf::from_code(b[at]).ok_or_else(|| Corrupt("unknown CF".into()))?;
        rra.push(RraDef { cf, xff: f64_at(b, at + 8), pdp_cnt: u64_at(b, at + 16), rows: u64_at(b, at + 24) });
    }
    let def = ShardDef { step, ds: DsDef { name: "value".into(), kind, heartbeat, min, max }, rra };
    def.check().map_err(Corrupt)?;
    Ok(Header { id, capacity, def })
}

/// The live state of one series as a state record holds it. `cdp` keeps rrdtool's
/// scratch `primary`/`secondary` only in memory (they are NaN after decoding).
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// Flush generation of the shard when this record was written.
    pub gen: u64,
    /// Which occupant of the slot this is (0: the slot is free).
    pub incarnation: u32,
    /// Rows at or before this time are unknown (the series' `--start`).
    pub created: u64,
    pub last_up: u64,
    /// The last reading (NaN = `U`).
    pub last: f64,
    pub pdp_val: f64,
    pub pdp_unkn: u64,
    pub cdp: Vec<CdpPrep>,
}

impl State {
    /// A new series starting at `start`, as `rrdtool create --start start` makes it.
    pub fn fresh(def: &ShardDef, incarnation: u32, start: u64) -> State {
        let step = def.step;
        let cdp = def
            .rra
            .iter()
            .map(|r| CdpPrep {
                val: DNAN,
                unkn_pdp: ((start - start % step) % (step * r.pdp_cnt)) / step,
                primary: DNAN,
                secondary: DNAN,
            })
            .collect();
        State {
            gen: 0,
            incarnation,
            created: start,
            last_up: start,
            last: f64::NAN,
            pdp_val: 0.0,
            pdp_unkn: start % step,
            cdp,
        }
    }

    /// The record of a free slot, written at flush generation `gen`.
    pub fn free(gen: u64) -> State {
        State {
            gen,
            incarnation: 0,
            created: 0,
            last_up: 0,
            last: f64::NAN,
            pdp_val: 0.0,
            pdp_unkn: 0,
            cdp: Vec::new(),
        }
    }

    /// Rows of archive `a` written since the series was created (at most its rows).
    pub fn rows_written(&self, def: &ShardDef, a: usize) -> u64 {
        let s = def.rra_step(a);
        (self.last_up / s - self.created / s).min(def.rra[a].rows)
    }
}

fn state_seed(shard: u32, slot: u32) -> u32 {
    let mut seed = [0u8; 8];
    seed[..4].copy_from_slice(&shard.to_le_bytes());
    seed[4..].copy_from_slice(&slot.to_le_bytes());
    crc32c::crc32c(&seed)
}

/// Encodes `st` as the record of `slot` in shard `shard` into `out` (`state_len` bytes).
pub fn encode_state(shard: u32, slot: u32, st: &State, out: &mut [u8]) {
    out.fill(0);
    out[0..8].copy_from_slice(&st.gen.to_le_bytes());
    out[8..12].copy_from_slice(&st.incarnation.to_le_bytes());
    out[16..24].copy_from_slice(&st.created.to_le_bytes());
    out[24..32].copy_from_slice(&st.last_up.to_le_bytes());
    out[32..40].copy_from_slice(&st.last.to_bits().to_le_bytes());
    out[40..48].copy_from_slice(&st.pdp_val.to_bits().to_le_bytes());
    out[48..56].copy_from_slice(&st.pdp_unkn.to_le_bytes());
    let mut at = STATE_FIXED;
    for k in 0..(out.len() - STATE_FIXED - 4) / STATE_PER_RRA {
        let c = st.cdp.get(k).copied().unwrap_or(CdpPrep { val: 0.0, unkn_pdp: 0, primary: 0.0, secondary: 0.0 });
        out[at..at + 8].copy_from_slice(&c.val.to_bits().to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&c.unkn_pdp.to_le_bytes());
        at += STATE_PER_RRA;
    }
    let crc = crc32c::crc32c_append(state_seed(shard, slot), &out[..at]);
    out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Encodes `st` for a shard whose archives number `rra_cnt` (the record length).
pub fn encode_state_vec(shard: u32, slot: u32, st: &State, rra_cnt: usize) -> Vec<u8> {
    let mut b = vec![0u8; state_len(rra_cnt)];
    encode_state(shard, slot, st, &mut b);
    b
}

/// What start-up needs of a state record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateHead {
    pub gen: u64,
    pub incarnation: u32,
    pub created: u64,
    pub last_up: u64,
}

/// Checks the record of `slot` without decoding the rest (no allocation).
/// `Ok(None)` for a record never written (all zero bytes).
///
/// # Errors
/// [`Corrupt`] on a checksum mismatch or values out of range. Never panics.
pub fn check_state(shard: u32, slot: u32, rra_cnt: usize, b: &[u8]) -> Result<Option<StateHead>, Corrupt> {
    let len = state_len(rra_cnt);
    if b.len() < len {
        return corrupt("state record truncated");
    }
    let b = &b[..len];
    let at = STATE_FIXED + STATE_PER_RRA * rra_cnt;
    let stored = u32_at(b, at);
    let crc = crc32c::crc32c_append(state_seed(shard, slot), &b[..at]);
    if crc != stored {
        if stored == 0 && b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        return corrupt(format!("state record of slot {slot} checksum mismatch"));
    }
    let h = StateHead { gen: u64_at(b, 0), incarnation: u32_at(b, 8), created: u64_at(b, 16), last_up: u64_at(b, 24) };
    if h.last_up < h.created {
        return corrupt(format!("state record of slot {slot} out of range"));
    }
    Ok(Some(h))
}

/// Decodes the record of `slot`. `Ok(None)` for a record never written (all zero
/// bytes); a free slot's record has incarnation 0.
///
/// # Errors
/// [`Corrupt`] on a checksum mismatch or values out of range. Never panics.
pub fn decode_state(shard: u32, slot: u32, def: &ShardDef, b: &[u8]) -> Result<Option<State>, Corrupt> {
    let len = state_len(def.rra.len());
    if b.len() < len {
        return corrupt("state record truncated");
    }
    let b = &b[..len];
    if b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    let at = STATE_FIXED + STATE_PER_RRA * def.rra.len();
    if crc32c::crc32c_append(state_seed(shard, slot), &b[..at]) != u32_at(b, at) {
        return corrupt(format!("state record of slot {slot} checksum mismatch"));
    }
    let st = State {
        gen: u64_at(b, 0),
        incarnation: u32_at(b, 8),
        created: u64_at(b, 16),
        last_up: u64_at(b, 24),
        last: f64_at(b, 32),
        pdp_val: f64_at(b, 40),
        pdp_unkn: u64_at(b, 48),
        cdp: (0..def.rra.len())
            .map(|k| {
                let o = STATE_FIXED + STATE_PER_RRA * k;
                CdpPrep { val: f64_at(b, o), unkn_pdp: u64_at(b, o + 8), primary: DNAN, secondary: DNAN }
            })
            .collect(),
    };
    if st.last_up < st.created {
        return corrupt(format!("state record of slot {slot} out of range"));
    }
    Ok(Some(st))
}

fn block_seed(shard: u32, slot: u32, archive: usize, col: u32) -> u32 {
    let mut seed = [0u8; 16];
    seed[..4].copy_from_slice(&shard.to_le_bytes());
    seed[4..8].copy_from_slice(&slot.to_le_bytes());
    seed[8..12].copy_from_slice(&(archive as u32).to_le_bytes());
    seed[12..].copy_from_slice(&col.to_le_bytes());
    crc32c::crc32c(&seed)
}

/// Puts the incarnation and CRC into the trailer of a block (256 bytes).
pub fn seal_block(shard: u32, slot: u32, archive: usize, col: u32, incarnation: u32, b: &mut [u8]) {
    b[BLOCK_INC_AT..BLOCK_INC_AT + 4].copy_from_slice(&incarnation.to_le_bytes());
    let crc = crc32c::crc32c_append(block_seed(shard, slot, archive, col), &b[..BLOCK_INC_AT + 4]);
    b[BLOCK_INC_AT + 4..BLOCK_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Checks a block (256 bytes) and returns the incarnation it was written by.
///
/// # Errors
/// [`Corrupt`] when the CRC does not match. Never panics.
pub fn check_block(shard: u32, slot: u32, archive: usize, col: u32, b: &[u8]) -> Result<u32, Corrupt> {
    if b.len() < BLOCK_LEN {
        return corrupt("block truncated");
    }
    let crc = crc32c::crc32c_append(block_seed(shard, slot, archive, col), &b[..BLOCK_INC_AT + 4]);
    if crc != u32_at(b, BLOCK_INC_AT + 4) {
        return corrupt(format!("block of slot {slot}, archive {archive}, column {col}: checksum mismatch"));
    }
    Ok(u32_at(b, BLOCK_INC_AT))
}

/// Fills the values of a block with unknowns (a block no row of the series was written
/// to yet).
pub fn clear_block(b: &mut [u8]) {
    for v in b[..BLOCK_INC_AT].chunks_exact_mut(8) {
        v.copy_from_slice(&DNAN.to_bits().to_le_bytes());
    }
}

/// Value `i` (0..31) of a block.
pub fn block_value(b: &[u8], i: usize) -> f64 {
    f64_at(b, i * 8)
}

/// Sets value `i` of a block.
pub fn set_block_value(b: &mut [u8], i: usize, v: f64) {
    b[i * 8..i * 8 + 8].copy_from_slice(&v.to_bits().to_le_bytes());
}

/// Whether block `col` of archive `a` holds any row the series `st` wrote (rows older
/// than its creation are unknown and need no block).
pub fn block_has_rows(def: &ShardDef, st: &State, a: usize, col: u32) -> bool {
    let rows = def.rra[a].rows;
    let written = st.rows_written(def, a);
    if written == 0 {
        return false;
    }
    let cur = (st.last_up / def.rra_step(a)) % rows;
    let first = u64::from(col) * BLOCK_ROWS as u64;
    let last = (first + BLOCK_ROWS as u64).min(rows);
    (first..last).any(|r| (cur + rows - r) % rows < written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn def() -> ShardDef {
        ShardDef {
            step: 15,
            ds: DsDef { name: "value".into(), kind: DsType::Gauge, heartbeat: 120, min: f64::NAN, max: f64::NAN },
            rra: ["1:244", "24:244", "168:244", "672:244", "5760:374"]
                .iter()
                .map(|s| RraDef::parse(&format!("RRA:AVERAGE:0.5:{s}")).unwrap())
                .collect(),
        }
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let d = def();
        let mut h = encode_header(7, 1024, &d);
        let back = decode_header(&h).unwrap();
        assert_eq!(back.id, 7);
        assert_eq!(back.capacity, 1024);
        assert_eq!(back.def.rra, d.rra);
        for at in [0, 9, 30, 100, 4000] {
            h[at] ^= 4;
            assert!(decode_header(&h).is_err(), "flip at {at}");
            h[at] ^= 4;
        }
    }

    #[test]
    fn ganglia_archive_set_costs_less_disk_than_rrdtool() {
        let d = def();
        let l = Layout::new(&d, 1024);
        let per_series = (l.file_len - HEADER_LEN) as f64 / 1024.0;
        // rrdtool: 12,288 bytes on disk for this file.
        assert!(per_series < 12_288.0, "{per_series}");
        assert_eq!(d.bytes_per_series(), 45 * 256);
        for &(off, _) in &l.archives {
            assert_eq!(off % 4096, 0);
        }
    }

    /// Disk per series with the collector's default archives (Ganglia's rows, AVERAGE
    /// and MAX), against `rrdtool create` with the same archives (1,257,472 bytes on
    /// disk, measured with rrdtool 1.7): at most 4 % more (an 8-byte trailer per 31
    /// rows). docs/STORAGE.md compares it with gmetad's AVERAGE-only default too.
    #[test]
    fn default_archives_cost_about_what_rrdtool_allocates() {
        let mut d = def();
        d.rra = crate::engine::StoreConfig::ganglia_archives(15);
        let l = Layout::new(&d, 16_384);
        let per_series = (l.file_len - HEADER_LEN) as f64 / 16_384.0;
        assert!(per_series > 1_257_472.0 && per_series < 1.04 * 1_257_472.0, "{per_series}");
        assert_eq!(d.bytes_per_series(), 2 * (186 + 651 + 1696) * 256);
    }

    #[test]
    fn state_round_trips_and_detects_damage() {
        let d = def();
        let mut st = State::fresh(&d, 3, 1_700_000_000);
        st.gen = 9;
        st.last = 12.5;
        let mut b = vec![0u8; state_len(d.rra.len())];
        encode_state(1, 2, &st, &mut b);
        let back = decode_state(1, 2, &d, &b).unwrap().unwrap();
        assert_eq!(encode_state_vec(1, 2, &back, d.rra.len()), b);
        assert_eq!((back.gen, back.last, back.created), (9, 12.5, 1_700_000_000));
        // A record in the wrong slot or shard fails.
        assert!(decode_state(1, 3, &d, &b).is_err());
        assert!(decode_state(2, 2, &d, &b).is_err());
        b[20] ^= 1;
        assert!(decode_state(1, 2, &d, &b).is_err());
        assert_eq!(decode_state(1, 2, &d, &vec![0u8; b.len()]).unwrap(), None);
        let free = encode_state_vec(1, 2, &State::free(4), d.rra.len());
        let back = decode_state(1, 2, &d, &free).unwrap().unwrap();
        assert_eq!((back.gen, back.incarnation), (4, 0));
    }

    #[test]
    fn state_records_never_straddle_a_sector() {
        for rras in [1, 5, 6, 20, 40, 64] {
            let len = state_len(rras);
            for slot in 0..100 {
                let p = state_pos(slot, len);
                assert!(len > SECTOR || p / SECTOR == (p + len - 1) / SECTOR, "{rras} {slot}");
                assert!(slot == 0 || p >= state_pos(slot - 1, len) + len);
            }
        }
    }

    #[test]
    fn blocks_carry_their_position() {
        let mut b = vec![0u8; BLOCK_LEN];
        clear_block(&mut b);
        set_block_value(&mut b, 3, 2.5);
        seal_block(1, 2, 3, 4, 5, &mut b);
        assert_eq!(check_block(1, 2, 3, 4, &b), Ok(5));
        assert!(check_block(1, 2, 3, 5, &b).is_err());
        assert!(check_block(1, 9, 3, 4, &b).is_err());
        assert_eq!(block_value(&b, 3), 2.5);
        b[17] ^= 0x80;
        assert!(check_block(1, 2, 3, 4, &b).is_err());
    }

    #[test]
    fn knows_which_blocks_hold_rows() {
        let d = def();
        let t0 = 1_700_000_000 - 1_700_000_000 % 86_400;
        let mut st = State::fresh(&d, 1, t0);
        assert!(!(0..8).any(|c| block_has_rows(&d, &st, 0, c)));
        st.last_up = t0 + 15 * 40;
        // 40 rows of archive 0 written: rows (t0/15 + 1 ..= t0/15 + 40) mod 244.
        let first = (t0 / 15 + 1) % 244;
        let cols: Vec<u32> = (0..8).filter(|&c| block_has_rows(&d, &st, 0, c)).collect();
        let want: Vec<u32> = {
            let mut v: Vec<u32> = (0..40).map(|k| (((first + k) % 244) / 31) as u32).collect();
            v.dedup();
            v.sort_unstable();
            v.dedup();
            v
        };
        assert_eq!(cols, want);
        st.last_up = t0 + 15 * 10_000;
        assert!((0..8).all(|c| block_has_rows(&d, &st, 0, c)));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..5000), slot in 0u32..4) {
            let _ = decode_header(&bytes);
            let _ = decode_state(0, slot, &def(), &bytes);
            let _ = check_block(0, slot, 0, 0, &bytes);
        }

        /// Any state a flush can write decodes to itself, bit for bit (NaN payloads
        /// included), in its own slot and shard only.
        #[test]
        fn states_round_trip(
            shard in any::<u32>(), slot in 0u32..65_536, gen in any::<u64>(), incarnation in 1u32..,
            created in any::<u64>(), age in any::<u64>(), last in any::<f64>(), pdp_val in any::<f64>(),
            pdp_unkn in any::<u64>(), cdp in prop::collection::vec((any::<f64>(), any::<u64>()), 5),
        ) {
            let st = State {
                gen, incarnation, created, last_up: created.saturating_add(age), last, pdp_val, pdp_unkn,
                cdp: cdp.iter().map(|&(val, unkn_pdp)| CdpPrep { val, unkn_pdp, primary: DNAN, secondary: DNAN }).collect(),
            };
            let b = encode_state_vec(shard, slot, &st, 5);
            let back = decode_state(shard, slot, &def(), &b).unwrap().unwrap();
            prop_assert_eq!(&encode_state_vec(shard, slot, &back, 5), &b);
            prop_assert_eq!((back.gen, back.incarnation, back.created, back.last_up), (gen, incarnation, st.created, st.last_up));
            prop_assert_eq!(check_state(shard, slot, 5, &b).unwrap().unwrap().last_up, st.last_up);
            prop_assert!(decode_state(shard, slot ^ 1, &def(), &b).is_err());
        }

        /// A header decodes to the definition it was written from.
        #[test]
        fn headers_round_trip(id in any::<u32>(), capacity in 1u32..=65_536, step in 1u64..100_000, rows in prop::collection::vec((0u8..4, 1u64..5000, 1u64..100), 1..10)) {
            let mut d = def();
            d.step = step;
            d.rra = rows.iter().map(|&(cf, rows, pdp_cnt)| RraDef {
                cf: [Cf::Average, Cf::Min, Cf::Max, Cf::Last][cf as usize], xff: 0.5, pdp_cnt, rows,
            }).collect();
            let h = decode_header(&encode_header(id, capacity, &d)).unwrap();
            prop_assert_eq!((h.id, h.capacity), (id, capacity));
            prop_assert!(h.def.same(&d));
        }

        #[test]
        fn garbage_after_a_valid_magic_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 4096..4200)) {
            bytes[..8].copy_from_slice(&MAGIC);
            bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
            bytes[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
            let n = HEADER_LEN as usize - 4;
            let crc = crc32c::crc32c(&bytes[..n]);
            bytes[n..n + 4].copy_from_slice(&crc.to_le_bytes());
            let _ = decode_header(&bytes);
        }
    }
}

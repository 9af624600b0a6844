//! RRDtool 1.7 semantics on one database held in memory.
//!
//! [`Rrd`] is the reference the rest of the crate builds on: the standalone file format
//! ([`crate::file`]) stores exactly its fields, and the engine loads one into memory to
//! apply a batch of updates. Every rule here is from `research/rrd.md` §1 and is checked
//! against the real `rrdtool` by the differential test (`tests/differential.rs`).
//!
//! Names follow rrdtool's C code (`pdp_prep`, `cdp_prep`, `cur_row`) so the two can be
//! read side by side.

pub mod def;
mod diff;
mod fetch;

pub use def::{Cf, DefError, DsDef, DsType, RraDef};
pub use diff::{rrd_diff, LAST_DS_LEN};
pub use fetch::{choose_rra, FetchError, Fetched};

/// The NaN that rrdtool stores and prints (`-nan` on x86-64 glibc): the sign bit is set
/// because it comes from the processor's default NaN. Kept so values round-trip bit for
/// bit through our files too.
pub const DNAN: f64 = f64::from_bits(0xfff8_0000_0000_0000);

/// Per data source state between updates (rrdtool `pdp_prep`).
#[derive(Clone, Debug, PartialEq)]
pub struct PdpPrep {
    /// The last reading as given (rrdtool keeps the string so COUNTER diffs stay exact);
    /// `"U"` when unknown. At most 29 bytes.
    pub last_ds: String,
    /// Σ rate·seconds of the known part of the PDP in progress (NaN = none yet).
    pub val: f64,
    /// Unknown seconds accumulated in the PDP in progress.
    pub unkn_sec: u64,
}

/// Per archive × data source consolidation state (rrdtool `cdp_prep`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CdpPrep {
    /// Running consolidation of the row in progress (sum for AVERAGE).
    pub val: f64,
    /// Unknown PDPs in the row in progress.
    pub unkn_pdp: u64,
    /// Value of the first row completed by the last update.
    pub primary: f64,
    /// Value of further rows completed by the same update.
    pub secondary: f64,
}

/// An update that rrdtool would refuse. Nothing of it is applied.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum UpdateError {
    #[error("illegal attempt to update using time {time} when last update time is {last} (minimum one second step)")]
    IllegalTime { time: u64, last: u64 },
    #[error("expected {expected} data source readings (got {got})")]
    Arity { expected: usize, got: usize },
    #[error("not a simple {sign} integer: '{value}'")]
    NotInteger { sign: &'static str, value: String },
    #[error("conversion of '{0}' to float not complete")]
    NotFloat(String),
}

/// One round-robin database: definitions, live state and all archive rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Rrd {
    /// Seconds per PDP.
    pub step: u64,
    pub ds: Vec<DsDef>,
    pub rra: Vec<RraDef>,
    /// Time of the last update (whole seconds).
    pub last_up: u64,
    /// One per data source.
    pub pdp: Vec<PdpPrep>,
    /// `rra_idx * ds_cnt + ds_idx`.
    pub cdp: Vec<CdpPrep>,
    /// Per archive: the row written last.
    pub cur_row: Vec<u64>,
    /// All rows of all archives, archive after archive, each row `ds_cnt` values.
    pub data: Vec<f64>,
    /// Row writes since the last [`Rrd::take_dirty`], so a file writer touches only
    /// the blocks that changed. `None` means "everything".
    dirty: Option<Vec<(u32, u32)>>,
}

/// More dirty rows than this and the writer just rewrites every block.
const MAX_DIRTY_ROWS: usize = 4096;

/// A reading as rrdtool keeps it (`LAST_DS_LEN` − 1 bytes at most).
pub fn truncate_reading(v: &str) -> String {
    let mut end = v.len().min(LAST_DS_LEN - 1);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// strtod-like parse of a float reading (rrdtool accepts what C `strtod` takes fully).
fn parse_float(v: &str) -> Option<f64> {
    let t = v.trim_start();
    if let Ok(x) = t.parse::<f64>() {
        return Some(x);
    }
    // strtod also takes "infinity"/"nan" with any case and a sign, which Rust mostly
    // does; the remaining forms (hex floats, "nan(...)") are rare enough to refuse.
    None
}

impl Rrd {
    /// A new database as `rrdtool create --start start --step step` makes it.
    ///
    /// # Errors
    /// [`DefError`] for definitions rrdtool refuses (no DS/RRA, duplicate names, step 0).
    pub fn create(step: u64, start: u64, ds: Vec<DsDef>, rra: Vec<RraDef>) -> Result<Rrd, DefError> {
        if step == 0 {
            return Err(DefError::Step);
        }
        if ds.is_empty() {
            return Err(DefError::NoDs);
        }
        if rra.is_empty() {
            return Err(DefError::NoRra);
        }
        for (i, d) in ds.iter().enumerate() {
            if ds[..i].iter().any(|o| o.name == d.name) {
                return Err(DefError::DuplicateDs(d.name.clone()));
            }
        }
        // What RraDef::parse refuses, for archives that come from elsewhere (a dump).
        for r in &rra {
            let name = || format!("RRA:{}:{}:{}:{}", r.cf, r.xff, r.pdp_cnt, r.rows);
            if !(0.0..1.0).contains(&r.xff) {
                return Err(DefError::Xff(name()));
            }
            if r.rows == 0 || step.checked_mul(r.pdp_cnt).and_then(|s| s.checked_mul(r.rows)).is_none_or(|s| s == 0) {
                return Err(DefError::Rra(name()));
            }
        }
        let ds_cnt = ds.len();
        let pdp = ds.iter().map(|_| PdpPrep { last_ds: "U".to_string(), val: 0.0, unkn_sec: start % step }).collect();
        let mut cdp = Vec::with_capacity(rra.len() * ds_cnt);
        for r in &rra {
            // Whole PDPs of the current row that lie before the start count as unknown.
            let unkn_pdp = ((start - start % step) % (step * r.pdp_cnt)) / step;
            for _ in 0..ds_cnt {
                cdp.push(CdpPrep { val: DNAN, unkn_pdp, primary: DNAN, secondary: DNAN });
            }
        }
        let total: u64 = rra.iter().map(|r| r.rows).sum();
        let values = usize::try_from(total).unwrap_or(usize::MAX).saturating_mul(ds_cnt);
        let cur_row = rra.iter().map(|r| r.rows - 1).collect();
        Ok(Rrd { step, ds, rra, last_up: start, pdp, cdp, cur_row, data: vec![DNAN; values], dirty: Some(Vec::new()) })
    }

    /// Index of the first value of archive `r` in [`Rrd::data`].
    pub fn rra_offset(&self, r: usize) -> usize {
        self.rra[..r].iter().map(|a| a.rows as usize).sum::<usize>() * self.ds.len()
    }

    /// Row writes since the last call (`None`: all rows may have changed).
    pub fn take_dirty(&mut self) -> Option<Vec<(u32, u32)>> {
        self.dirty.replace(Vec::new())
    }

    /// Marks every row dirty (after a load from a foreign format, say).
    pub fn mark_all_dirty(&mut self) {
        self.dirty = None;
    }

    /// Applies one update `t:v1:v2…` exactly as `rrdtool update` does.
    ///
    /// # Errors
    /// [`UpdateError`]; the database is then unchanged.
    pub fn update(&mut self, t: u64, vals: &[&str]) -> Result<(), UpdateError> {
        if vals.len() != self.ds.len() {
            return Err(UpdateError::Arity { expected: self.ds.len(), got: vals.len() });
        }
        if t <= self.last_up {
            return Err(UpdateError::IllegalTime { time: t, last: self.last_up });
        }
        let interval = (t - self.last_up) as f64;
        let mut pdp_new = vec![DNAN; self.ds.len()];
        for (i, (d, v)) in self.ds.iter().zip(vals).enumerate() {
            pdp_new[i] = reading_to_pdp(d, &self.pdp[i].last_ds, v, interval)?;
        }
        for (p, v) in self.pdp.iter_mut().zip(vals) {
            p.last_ds = truncate_reading(v);
        }
        let defs = Defs { step: self.step, ds: &self.ds, rra: &self.rra };
        let mut live = RrdLive {
            pdp: &mut self.pdp,
            cdp: &mut self.cdp,
            cur_row: &mut self.cur_row,
            data: &mut self.data,
            dirty: &mut self.dirty,
            rra: &self.rra,
            ds_cnt: self.ds.len(),
        };
        advance(&defs, &mut live, self.last_up, t, &pdp_new);
        self.last_up = t;
        Ok(())
    }

    /// Value of archive `r`, row `row` (physical), data source `ds`.
    pub fn value(&self, r: usize, row: u64, ds: usize) -> f64 {
        self.data[self.rra_offset(r) + row as usize * self.ds.len() + ds]
    }
}

/// Definitions the update algorithm needs, borrowed from wherever they live.
#[derive(Clone, Copy, Debug)]
pub struct Defs<'a> {
    pub step: u64,
    pub ds: &'a [DsDef],
    pub rra: &'a [RraDef],
}

/// The live state an update advances, wherever it is kept: [`Rrd`] keeps it with all
/// rows in memory, the engine keeps a compact record per series and sends rows to the
/// blocks of a shard file. `cdp` is indexed `rra * ds_cnt + ds` like [`Rrd::cdp`].
pub trait Live {
    /// Σ rate·seconds (`val`) and unknown seconds of the PDP in progress of `ds`.
    fn pdp(&mut self, ds: usize) -> (&mut f64, &mut u64);
    fn cdp(&mut self, i: usize) -> &mut CdpPrep;
    /// The row of archive `rra` written last.
    fn cur_row(&mut self, rra: usize) -> &mut u64;
    /// Stores value `v` of data source `ds` in row `row` of archive `rra`.
    fn put(&mut self, rra: usize, row: u64, ds: usize, v: f64);
}

struct RrdLive<'a> {
    pdp: &'a mut [PdpPrep],
    cdp: &'a mut [CdpPrep],
    cur_row: &'a mut [u64],
    data: &'a mut [f64],
    dirty: &'a mut Option<Vec<(u32, u32)>>,
    rra: &'a [RraDef],
    ds_cnt: usize,
}

impl Live for RrdLive<'_> {
    fn pdp(&mut self, ds: usize) -> (&mut f64, &mut u64) {
        let p = &mut self.pdp[ds];
        (&mut p.val, &mut p.unkn_sec)
    }
    fn cdp(&mut self, i: usize) -> &mut CdpPrep {
        &mut self.cdp[i]
    }
    fn cur_row(&mut self, rra: usize) -> &mut u64 {
        &mut self.cur_row[rra]
    }
    fn put(&mut self, rra: usize, row: u64, ds: usize, v: f64) {
        let base = self.rra[..rra].iter().map(|a| a.rows as usize).sum::<usize>() * self.ds_cnt;
        self.data[base + row as usize * self.ds_cnt + ds] = v;
        if ds == 0 {
            if let Some(d) = self.dirty {
                if d.len() >= MAX_DIRTY_ROWS {
                    *self.dirty = None;
                } else {
                    d.push((rra as u32, row as u32));
                }
            }
        }
    }
}

/// `a / b`, with a 32-bit division when both fit (several times faster on x86-64;
/// the same result).
#[inline]
fn div(a: u64, b: u64) -> u64 {
    if (a | b) >> 32 == 0 {
        u64::from(a as u32 / b as u32)
    } else {
        a / b
    }
}

/// `a % b`, like [`div`].
#[inline]
fn rem(a: u64, b: u64) -> u64 {
    if (a | b) >> 32 == 0 {
        u64::from(a as u32 % b as u32)
    } else {
        a % b
    }
}

/// Most data sources whose scratch values live on the stack during an update.
const STACK_DS: usize = 8;

/// Runs `f` with a scratch slice of `n` NaNs, on the stack when small.
fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f64]) -> R) -> R {
    if n <= STACK_DS {
        let mut a = [DNAN; STACK_DS];
        f(&mut a[..n])
    } else {
        f(&mut vec![DNAN; n])
    }
}

/// The part of `rrdtool update` after the readings became PDP contributions: advances
/// `live` from `last_up` to `t` (`t > last_up`) with `pdp_new` (one per data source,
/// NaN = unknown) and writes every completed row through [`Live::put`]. The caller
/// sets its last update time to `t` afterwards.
pub fn advance<L: Live + ?Sized>(d: &Defs<'_>, live: &mut L, last_up: u64, t: u64, pdp_new: &[f64]) {
    let interval = (t - last_up) as f64;
    let step = d.step;
    let proc_pdp_age = rem(last_up, step);
    let proc_pdp_st = last_up - proc_pdp_age;
    let occu_pdp_age = rem(t, step);
    let occu_pdp_st = t - occu_pdp_age;
    let (pre_int, post_int) =
        if occu_pdp_st > proc_pdp_st { ((occu_pdp_st - last_up) as f64, occu_pdp_age as f64) } else { (interval, 0.0) };
    let proc_pdp_cnt = div(proc_pdp_st, step);
    let elapsed = div(occu_pdp_st - proc_pdp_st, step);

    if elapsed == 0 {
        for (i, &n) in pdp_new.iter().enumerate() {
            let (val, unkn) = live.pdp(i);
            if n.is_nan() {
                *unkn += interval.floor() as u64;
            } else if val.is_nan() {
                *val = n;
            } else {
                *val += n;
            }
        }
    } else if elapsed >= 2 && proc_pdp_age != 0 {
        // rrdtool 1.7 closes the partly filled PDP on its own first (rrd.md §1.3): it
        // gets the share of this update that falls into it, and the heartbeat is
        // checked against that share only.
        let split = (step - proc_pdp_age) as f64;
        with_scratch(pdp_new.len(), |share| {
            for (s, &p) in share.iter_mut().zip(pdp_new) {
                *s = if p.is_nan() { DNAN } else { p / interval * split };
            }
            close_pdps(d, live, split, split, 0.0, 1, proc_pdp_cnt, share);
            for (s, &p) in share.iter_mut().zip(pdp_new) {
                *s = if p.is_nan() { DNAN } else { p / interval * (interval - split) };
            }
            close_pdps(d, live, interval - split, pre_int - split, post_int, elapsed - 1, proc_pdp_cnt + 1, share);
        });
    } else {
        close_pdps(d, live, interval, pre_int, post_int, elapsed, proc_pdp_cnt, pdp_new);
    }
}

/// rrdtool's `process_all_pdp_st` + `update_all_cdp_prep` + `write_to_rras` for an
/// update (or the part of one) that closes `elapsed` PDPs.
#[allow(clippy::too_many_arguments)] // mirrors the C function so the two read alike
fn close_pdps<L: Live + ?Sized>(
    d: &Defs<'_>,
    live: &mut L,
    interval: f64,
    pre_int: f64,
    post_int: f64,
    elapsed: u64,
    proc_pdp_cnt: u64,
    pdp_new: &[f64],
) {
    let step = d.step;
    let diff_pdp_st = elapsed * step;
    with_scratch(d.ds.len(), |pdp_temp| {
        for (i, def) in d.ds.iter().enumerate() {
            let (val, unkn_sec) = live.pdp(i);
            let n = pdp_new[i];
            let mut pre_unknown = 0.0;
            if n.is_nan() {
                pre_unknown = pre_int;
            } else {
                if val.is_nan() {
                    *val = 0.0;
                }
                *val += n / interval * pre_int;
            }
            pdp_temp[i] = if interval > def.heartbeat as f64 || (step as f64 / 2.0) < *unkn_sec as f64 {
                DNAN
            } else {
                *val / ((diff_pdp_st.wrapping_sub(*unkn_sec)) as f64 - pre_unknown)
            };
            if n.is_nan() {
                *unkn_sec = post_int.floor() as u64;
                *val = DNAN;
            } else {
                *unkn_sec = 0;
                *val = n / interval * post_int;
            }
        }

        let ds_cnt = d.ds.len();
        for (r, def) in d.rra.iter().enumerate() {
            let start_pdp_offset = def.pdp_cnt - rem(proc_pdp_cnt, def.pdp_cnt);
            let rra_step_cnt =
                if start_pdp_offset <= elapsed { div(elapsed - start_pdp_offset, def.pdp_cnt) + 1 } else { 0 };
            for (i, &pt) in pdp_temp.iter().enumerate() {
                let c = live.cdp(r * ds_cnt + i);
                if def.pdp_cnt > 1 {
                    update_cdp(c, def.cf, pt, rra_step_cnt, elapsed, start_pdp_offset, def.pdp_cnt, def.xff);
                } else {
                    c.primary = pt;
                    c.secondary = pt;
                }
            }
            if rra_step_cnt > 0 {
                write_rows(live, r, def.rows, ds_cnt, rra_step_cnt);
            }
        }
    });
}

/// Writes the primary row and `count - 1` secondary rows of archive `r`. rrdtool caps
/// the count at the archive's length (rrd.md §1.5) and still writes the primary value
/// first: when more rows were completed than the archive holds, the oldest row kept
/// gets the primary value (with one row, that row). The rows written are the newest
/// `min(count, rows)` positions, so an archive addressed by time stays in step.
fn write_rows<L: Live + ?Sized>(live: &mut L, r: usize, rows: u64, ds_cnt: usize, count: u64) {
    let skip = count.saturating_sub(rows);
    let mut row = rem(*live.cur_row(r) + skip, rows);
    for k in skip..count {
        row = if row + 1 == rows { 0 } else { row + 1 };
        for i in 0..ds_cnt {
            let c = *live.cdp(r * ds_cnt + i);
            let v = if k == skip { c.primary } else { c.secondary };
            live.put(r, row, i, v);
        }
    }
    *live.cur_row(r) = row;
}

/// rrdtool's `update_pdp_prep` for one data source: the reading `v` (text, as given to
/// `rrdtool update`) as rate·seconds for the interval, or NaN when unknown; `last_ds` is
/// the previous reading as stored (at most 29 bytes, `U` when unknown).
///
/// # Errors
/// [`UpdateError::NotInteger`] / [`UpdateError::NotFloat`] as rrdtool refuses them.
pub fn reading_to_pdp(d: &DsDef, last_ds: &str, v: &str, interval: f64) -> Result<f64, UpdateError> {
    let hb_ok = d.heartbeat as f64 >= interval;
    // After a heartbeat violation the previous reading is not used for a diff.
    let last_known = hb_ok && !last_ds.starts_with('U');
    if v.starts_with('U') || !hb_ok {
        return Ok(DNAN);
    }
    let (pdp, rate) = match d.kind {
        DsType::Counter | DsType::Derive => {
            let derive = d.kind == DsType::Derive;
            for (i, c) in v.bytes().enumerate() {
                if !(c.is_ascii_digit() || (derive && i == 0 && c == b'-')) {
                    let sign = if derive { "signed" } else { "unsigned" };
                    return Err(UpdateError::NotInteger { sign, value: v.to_string() });
                }
            }
            if !last_known {
                return Ok(DNAN);
            }
            let mut diff = rrd_diff(v, last_ds);
            if d.kind == DsType::Counter {
                // rrdtool's overflow catcher, with its 2^32-1 (sic) and the 64-bit step
                // done in doubles (rrd.md §1.2, G2).
                if diff < 0.0 {
                    diff += 4_294_967_295.0;
                }
                if diff < 0.0 {
                    diff += 18_446_744_069_414_584_320.0;
                }
            }
            (diff, diff / interval)
        }
        DsType::DCounter | DsType::DDerive => {
            let new = parse_float(v).ok_or_else(|| UpdateError::NotFloat(v.to_string()))?;
            if !last_known {
                return Ok(DNAN);
            }
            let old = parse_float(last_ds).unwrap_or(DNAN);
            if d.kind == DsType::DCounter && ((new > 0.0 && old > new) || (new < 0.0 && new > old)) {
                // A float counter never wraps: a step back is a reset, the interval unknown.
                return Ok(DNAN);
            }
            let diff = new - old;
            (diff, diff / interval)
        }
        DsType::Absolute => {
            let x = parse_float(v).ok_or_else(|| UpdateError::NotFloat(v.to_string()))?;
            (x, x / interval)
        }
        DsType::Gauge => {
            let x = parse_float(v).ok_or_else(|| UpdateError::NotFloat(v.to_string()))?;
            let p = x * interval;
            (p, p / interval)
        }
    };
    if !rate.is_nan() && ((!d.max.is_nan() && rate > d.max) || (!d.min.is_nan() && rate < d.min)) {
        return Ok(DNAN);
    }
    Ok(pdp)
}

/// rrdtool's `update_cdp` for one archive × data source with more than one PDP per row.
#[allow(clippy::too_many_arguments)] // mirrors the C function so the two read alike
fn update_cdp(
    c: &mut CdpPrep,
    cf: Cf,
    pdp_temp: f64,
    rra_step_cnt: u64,
    elapsed: u64,
    start_pdp_offset: u64,
    pdp_cnt: u64,
    xff: f64,
) {
    if rra_step_cnt > 0 {
        if pdp_temp.is_nan() {
            c.unkn_pdp += start_pdp_offset;
            c.secondary = DNAN;
        } else {
            c.secondary = pdp_temp;
        }
        // PDPs of this update that belong to the next row.
        let carry = rem(elapsed - start_pdp_offset, pdp_cnt);
        let carry_val = |v: f64| if carry > 0 { v } else { DNAN };
        if c.unkn_pdp as f64 > pdp_cnt as f64 * xff {
            c.primary = DNAN;
            c.val = match cf {
                Cf::Average => average_carry(pdp_temp, carry),
                _ => carry_val(pdp_temp),
            };
        } else {
            match cf {
                Cf::Average => {
                    let cum = if c.val.is_nan() { 0.0 } else { c.val };
                    let cur = if pdp_temp.is_nan() { 0.0 } else { pdp_temp };
                    c.primary = (cum + cur * start_pdp_offset as f64) / (pdp_cnt - c.unkn_pdp) as f64;
                    c.val = average_carry(pdp_temp, carry);
                }
                Cf::Max => {
                    let cum = if c.val.is_nan() { f64::NEG_INFINITY } else { c.val };
                    let cur = if pdp_temp.is_nan() { f64::NEG_INFINITY } else { pdp_temp };
                    c.primary = if cur > cum { cur } else { cum };
                    c.val = carry_val(pdp_temp);
                }
                Cf::Min => {
                    let cum = if c.val.is_nan() { f64::INFINITY } else { c.val };
                    let cur = if pdp_temp.is_nan() { f64::INFINITY } else { pdp_temp };
                    c.primary = if cur < cum { cur } else { cum };
                    c.val = carry_val(pdp_temp);
                }
                Cf::Last => {
                    c.primary = pdp_temp;
                    c.val = carry_val(pdp_temp);
                }
            }
        }
        c.unkn_pdp = if pdp_temp.is_nan() { carry } else { 0 };
    } else if pdp_temp.is_nan() {
        c.unkn_pdp += elapsed;
    } else {
        c.val = if c.val.is_nan() {
            match cf {
                Cf::Average => pdp_temp * elapsed as f64,
                _ => pdp_temp,
            }
        } else {
            match cf {
                Cf::Average => c.val + pdp_temp * elapsed as f64,
                Cf::Min => {
                    if pdp_temp < c.val {
                        pdp_temp
                    } else {
                        c.val
                    }
                }
                Cf::Max => {
                    if pdp_temp > c.val {
                        pdp_temp
                    } else {
                        c.val
                    }
                }
                Cf::Last => pdp_temp,
            }
        };
    }
}

fn average_carry(pdp_temp: f64, carry: u64) -> f64 {
    if pdp_temp.is_nan() {
        DNAN
    } else {
        pdp_temp * carry as f64
    }
}

#[cfg(test)]
mod tests;

/// A value as rrdtool's `fetch` prints it (`%0.10e` of glibc): `1.5000000000e+01`,
/// `-nan` for every NaN (rrdtool's NaN has the sign bit set on x86-64), `inf`/`-inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "-nan".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".to_string() } else { "-inf".to_string() };
    }
    let s = format!("{v:.10e}");
    // Rust writes `1.5000000000e1`; C writes at least two exponent digits with a sign.
    match s.split_once('e') {
        Some((mant, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mant}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// Parses a value printed by rrdtool (`-nan`, `nan`, `inf`, `1.0e+00`).
pub fn parse_printed_value(s: &str) -> Option<f64> {
    match s {
        "nan" | "-nan" | "NaN" => Some(f64::NAN),
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

//! `rrdtool fetch`: archive choice and row labelling (rrd.md §1.6).

use super::{Cf, RraDef, Rrd, DNAN};

/// Rows returned by a fetch. Row `i` is labelled `start + (i+1)·step` and covers
/// `(start + i·step, start + (i+1)·step]`, as rrdtool prints them.
#[derive(Clone, Debug, PartialEq)]
pub struct Fetched {
    /// Aligned start (exclusive).
    pub start: u64,
    /// Aligned end (inclusive label of the last row).
    pub end: u64,
    /// Seconds per row of the chosen archive.
    pub step: u64,
    pub ds_names: Vec<String>,
    /// `rows[i][ds]`; NaN = unknown.
    pub rows: Vec<Vec<f64>>,
}

impl Fetched {
    /// Timestamp label of row `i`.
    pub fn time(&self, i: usize) -> u64 {
        self.start + (i as u64 + 1) * self.step
    }
}

/// A fetch rrdtool would refuse.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum FetchError {
    #[error("start ({start}) should be less than end ({end})")]
    Range { start: u64, end: u64 },
    #[error("the RRD does not contain an RRA matching the chosen CF")]
    NoMatchingCf,
}

/// Chooses the archive for `cf` over `[start, end]` at `resolution` seconds the way
/// `rrd_fetch.c` does, for archives `rra` of a database with `step` last updated at
/// `last_up`. Returns its index.
///
/// # Errors
/// [`FetchError::NoMatchingCf`].
pub fn choose_rra(
    step: u64,
    rra: &[RraDef],
    last_up: u64,
    cf: Cf,
    start: u64,
    end: u64,
    resolution: u64,
) -> Result<usize, FetchError> {
    let (mut best_full, mut best_part) = (None::<usize>, None::<usize>);
    let (mut best_full_diff, mut best_part_diff, mut best_match) = (0i64, 0i64, 0i64);
    for (i, r) in rra.iter().enumerate() {
        if !(r.cf == cf || r.pdp_cnt == 1) {
            continue;
        }
        let rra_step = step * r.pdp_cnt;
        let cal_end = last_up - last_up % rra_step;
        let cal_start = cal_end as i64 - (rra_step * r.rows) as i64;
        let full_match = end as i64 - start as i64;
        // Ties between partial matches also go to the closest resolution (found by the
        // differential test: two archives with the same coverage start).
        let tmp_step_diff = (resolution as i64 - rra_step as i64).abs();
        if cal_start <= start as i64 {
            if best_full.is_none() || tmp_step_diff < best_full_diff {
                best_full = Some(i);
                best_full_diff = tmp_step_diff;
            }
        } else {
            let tmp_match = full_match - (cal_start - start as i64);
            if best_part.is_none()
                || best_match < tmp_match
                || (best_match == tmp_match && tmp_step_diff < best_part_diff)
            {
                best_part = Some(i);
                best_match = tmp_match;
                best_part_diff = tmp_step_diff;
            }
        }
    }
    best_full.or(best_part).ok_or(FetchError::NoMatchingCf)
}

impl Rrd {
    /// Chooses the archive for `cf` over `[start, end]` at `resolution` seconds the way
    /// `rrd_fetch.c` does. Returns its index.
    ///
    /// # Errors
    /// [`FetchError::NoMatchingCf`].
    pub fn choose_rra(&self, cf: Cf, start: u64, end: u64, resolution: u64) -> Result<usize, FetchError> {
        choose_rra(self.step, &self.rra, self.last_up, cf, start, end, resolution)
    }

    /// `rrdtool fetch FILE CF -s start -e end -r resolution`.
    ///
    /// # Errors
    /// [`FetchError`] as rrdtool reports it.
    pub fn fetch(&self, cf: Cf, start: u64, end: u64, resolution: u64) -> Result<Fetched, FetchError> {
        if start > end {
            return Err(FetchError::Range { start, end });
        }
        let r = self.choose_rra(cf, start, end, resolution)?;
        let def = &self.rra[r];
        let step = self.step * def.pdp_cnt;
        let start = start - start % step;
        let end = end + (step - end % step);
        let n = ((end - start) / step) as usize;
        let rra_end = self.last_up - self.last_up % step;
        let rows = def.rows;
        let ds_cnt = self.ds.len();
        let base = self.rra_offset(r);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let t = start + (i as u64 + 1) * step;
            // Age in rows relative to the newest complete row (0 = newest).
            let row = if t > rra_end || (rra_end - t) / step >= rows {
                None
            } else {
                let age = (rra_end - t) / step;
                Some((self.cur_row[r] + rows - age) % rows)
            };
            out.push(match row {
                None => vec![DNAN; ds_cnt],
                Some(row) => {
                    let at = base + row as usize * ds_cnt;
                    self.data[at..at + ds_cnt].to_vec()
                }
            });
        }
        Ok(Fetched { start, end, step, ds_names: self.ds.iter().map(|d| d.name.clone()).collect(), rows: out })
    }
}

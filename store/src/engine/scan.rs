//! The background block scan after start-up.

use super::*;

impl Inner {
    /// Reads every data block that holds rows and checks it; damaged series are
    /// flagged (the flusher quarantines them). Logs progress.
    pub(super) fn scan_all(self: Arc<Self>) {
        let t0 = Instant::now();
        let shards: Vec<Arc<Shard>> = read(&self.shards).iter().flatten().cloned().collect();
        let total = shards.len();
        let mut last_log = Instant::now();
        let mut bad = 0u64;
        for (i, sh) in shards.iter().enumerate() {
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            bad += self.scan_shard(sh);
            self.stats.scan_shards.fetch_add(1, Ordering::Relaxed);
            if last_log.elapsed() >= Duration::from_secs(10) {
                last_log = Instant::now();
                tracing::info!(
                    done = i + 1,
                    total,
                    blocks = self.stats.scan_blocks.load(Ordering::Relaxed),
                    "Block scan in progress."
                );
            }
        }
        self.stats.scan_done.store(1, Ordering::Relaxed);
        tracing::info!(
            shards = total,
            blocks = self.stats.scan_blocks.load(Ordering::Relaxed),
            damaged_series = bad,
            secs = t0.elapsed().as_secs_f64(),
            "Block scan complete."
        );
    }

    /// Checks one shard's blocks; returns how many series were found damaged.
    pub(super) fn scan_shard(&self, sh: &Shard) -> u64 {
        let _g = lock(&self.flush_lock);
        let def = &*sh.def;
        // Slots with a current state, from the current table.
        let who: Vec<(u32, u32)> = {
            let idx = lock(&self.index);
            let Some(sl) = idx.shards.get(sh.id as usize) else { return 0 };
            sl.slots
                .iter()
                .enumerate()
                .filter(|(_, &sid)| sid != NONE && idx.series[sid as usize].flags & F_CATALOGED != 0)
                .map(|(slot, &sid)| (slot as u32, sid))
                .collect()
        };
        let mut table = vec![0u8; sh.layout.table_len()];
        let cur = sh.cur.load(Ordering::Acquire);
        if sh.file.read_at(&mut table, sh.layout.states[cur]).is_err() {
            return 0;
        }
        let mut states: Vec<(u32, u32, State)> = Vec::new();
        for (slot, sid) in who {
            if let Ok(Some(st)) = shard::decode_state(sh.id, slot, def, &table[sh.layout.state_pos(slot)]) {
                let inc = lock(&self.index).series[sid as usize].incarnation;
                if st.incarnation != 0 && st.incarnation == inc {
                    states.push((slot, sid, st));
                }
            }
        }
        let mut damaged: Vec<u32> = Vec::new();
        let mut buf = vec![0u8; sh.layout.column_len()];
        let mut checked = 0u64;
        for (a, &(_, ncols)) in sh.layout.archives.iter().enumerate() {
            for col in 0..ncols {
                if !states.iter().any(|(_, _, st)| shard::block_has_rows(def, st, a, col)) {
                    continue;
                }
                if sh.file.read_at(&mut buf, sh.layout.column_off(a, col)).is_err() {
                    continue;
                }
                for (slot, sid, st) in &states {
                    if !shard::block_has_rows(def, st, a, col) || damaged.contains(sid) {
                        continue;
                    }
                    let b = &buf[*slot as usize * BLOCK_LEN..(*slot as usize + 1) * BLOCK_LEN];
                    checked += 1;
                    match shard::check_block(sh.id, *slot, a, col, b) {
                        Ok(inc) if inc == st.incarnation => {}
                        _ => damaged.push(*sid),
                    }
                }
            }
        }
        self.stats.scan_blocks.fetch_add(checked, Ordering::Relaxed);
        if !damaged.is_empty() {
            let mut idx = lock(&self.index);
            for sid in &damaged {
                idx.series[*sid as usize].flags |= F_CORRUPT;
                tracing::error!(series = %idx.series[*sid as usize].key, shard = sh.id, "Block scan found damaged data; the series will be quarantined.");
            }
        }
        damaged.len() as u64
    }
}

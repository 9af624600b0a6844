//! The flusher: placing series in shards, the two-barrier shard flush (columns,
//! sync, state tables, sync, switch) and the background cycle.

use super::*;

impl Inner {
    /// Gives every series that has no shard slot yet one (creating shards as needed).
    pub(super) fn place_unplaced(&self) -> std::io::Result<()> {
        let before = read(&self.shards).len();
        let r = self.place_unplaced_inner();
        if read(&self.shards).len() > before {
            self.disk.sync_dir(&self.dir.join("shards"))?;
        }
        r
    }

    pub(super) fn place_unplaced_inner(&self) -> std::io::Result<()> {
        let mut idx = lock(&self.index);
        let todo: Vec<u32> = idx
            .series
            .iter()
            .enumerate()
            .filter(|(_, s)| s.shard == NONE && s.flags & (F_REMOVED | F_FRESH) == 0 && !s.key.is_empty())
            .map(|(i, _)| i as u32)
            .collect();
        // Series still to place per group: a new shard is sized for them.
        let mut waiting: HashMap<u32, usize> = HashMap::new();
        for &sid in &todo {
            *waiting.entry(idx.series[sid as usize].group).or_default() += 1;
        }
        for sid in todo {
            let g = idx.series[sid as usize].group;
            let found =
                idx.groups[g as usize].shards.iter().copied().find(|&sh| !idx.shards[sh as usize].free.is_empty());
            if let Some(w) = waiting.get_mut(&g) {
                *w -= 1;
            }
            let shard_id = match found {
                Some(s) => s,
                None => {
                    let def = idx.groups[g as usize].def.clone();
                    let need = waiting.get(&g).copied().unwrap_or(0) + 1;
                    drop(idx);
                    let id = self.create_shard(def, need)?;
                    idx = lock(&self.index);
                    idx.reserve_shard(id, g);
                    let cap = read(&self.shards)[id as usize].as_ref().map_or(0, |s| s.layout.capacity);
                    let sl = &mut idx.shards[id as usize];
                    sl.group = g;
                    sl.slots = vec![NONE; cap as usize];
                    sl.incs = vec![0; cap as usize];
                    sl.free = (0..cap).rev().collect();
                    idx.groups[g as usize].shards.push(id);
                    id
                }
            };
            let sl = &mut idx.shards[shard_id as usize];
            let slot = sl.free.pop().expect("a shard with a free slot");
            sl.slots[slot as usize] = sid;
            sl.to_zero.retain(|&s| s != slot);
            let inc = sl.incs[slot as usize].wrapping_add(1).max(1);
            sl.incs[slot as usize] = inc;
            let s = &mut idx.series[sid as usize];
            s.shard = shard_id;
            s.slot = slot;
            s.incarnation = inc;
            s.flags &= !F_CATALOGED;
        }
        Ok(())
    }

    /// Creates a shard file for `need` series: preallocated, header written and synced.
    /// Its capacity is `need` rounded up to 64 slots, at most `shard_slots` and about
    /// 256 MiB of file.
    pub(super) fn create_shard(&self, def: Arc<ShardDef>, need: usize) -> std::io::Result<u32> {
        let id = read(&self.shards).len() as u32;
        let per = def.bytes_per_series().max(1);
        let most =
            ((256u64 << 20) / per).max(16).min(u64::from(self.cfg.opts.shard_slots.clamp(1, shard::MAX_CAPACITY)));
        let cap = ((need as u64).div_ceil(64) * 64).clamp(1, most) as u32;
        let layout = Layout::new(&def, cap);
        let sdir = self.dir.join("shards");
        let path = sdir.join(format!("{id:06}.gshard"));
        let file = self.disk.open(&path, true)?;
        file.set_len(0)?;
        file.allocate(layout.file_len)?;
        // The header becomes durable with the first flush's data barrier, before any
        // state refers to the shard; a file whose header never did is discarded at
        // start-up. The directory entry is synced by the caller.
        file.write_at(&shard::encode_header(id, cap, &def), 0)?;
        let sh = Arc::new(Shard {
            id,
            path,
            file,
            def,
            layout,
            io: RwLock::new(()),
            cur: AtomicUsize::new(0),
            gen: AtomicU64::new(0),
        });
        write(&self.shards).push(Some(sh));
        self.stats.shards.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Writes the pending samples of every series of `sh`: changed column ranges,
    /// catalog, sync, state table into the other copy, sync, then switch.
    pub(super) fn flush_shard(&self, sh: &Arc<Shard>) -> Result<(), FileError> {
        let Some(mut st) = self.stage_data(sh, 2)? else { return Ok(()) };
        self.append_catalog(&st.adds)?;
        self.sync_shard(sh)?;
        self.stage_states(&mut st)?;
        self.sync_shard(sh)?;
        self.commit(st);
        Ok(())
    }

    pub(super) fn sync_shard(&self, sh: &Shard) -> Result<(), FileError> {
        sh.file.sync().map_err(|source| {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            FileError::Io { path: sh.path.clone(), source }
        })
    }

    /// The first half of a shard flush: reads the current states and the columns the
    /// new rows land in, applies the samples (on `threads` threads, each over its own
    /// slots) and writes the columns. Nothing is synced. `None` when there is nothing
    /// to write.
    pub(super) fn stage_data(&self, sh: &Arc<Shard>, threads: usize) -> Result<Option<Staged>, FileError> {
        let def = &*sh.def;
        let cap = sh.layout.capacity;
        let ioerr = |source| {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            FileError::Io { path: sh.path.clone(), source }
        };
        // What to write.
        let mut idle_slots: Vec<u32> = Vec::new();
        let (mut work, zero) = {
            let mut idx = lock(&self.index);
            let Index { shards, series, .. } = &mut *idx;
            let Some(sl) = shards.get(sh.id as usize) else { return Ok(None) };
            let mut work: Vec<Work> = Vec::new();
            for (slot, &sid) in sl.slots.iter().enumerate() {
                if sid == NONE {
                    continue;
                }
                let s = &mut series[sid as usize];
                let corrupt = s.flags & F_CORRUPT != 0;
                if s.pending.is_empty() && s.flushing.is_none() && !corrupt && s.flags & F_CATALOGED != 0 {
                    idle_slots.push(slot as u32);
                    continue;
                }
                work.push(Work {
                    sid,
                    slot: slot as u32,
                    inc: s.incarnation,
                    created: s.created,
                    kind: s.kind,
                    samples: take_for_flush(s),
                    new_catalog: s.flags & F_CATALOGED == 0,
                    corrupt: corrupt.then(|| "damaged data found by a read".to_string()),
                    st: State::free(0),
                });
            }
            (work, sl.to_zero.clone())
        };
        if work.is_empty() && zero.is_empty() {
            return Ok(None);
        }
        // Current states.
        let cur = sh.cur.load(Ordering::Acquire);
        let mut table = vec![0u8; sh.layout.table_len()];
        sh.file.read_at(&mut table, sh.layout.states[cur]).map_err(ioerr)?;
        for w in &mut work {
            w.st = match shard::decode_state(sh.id, w.slot, def, &table[sh.layout.state_pos(w.slot)]) {
                Ok(Some(st)) if st.incarnation == w.inc && w.inc != 0 && !w.new_catalog => st,
                Ok(_) => State::fresh(def, w.inc, w.created),
                Err(e) => {
                    w.corrupt = Some(e.0);
                    State::fresh(def, w.inc, w.created)
                }
            };
            if w.corrupt.is_some() {
                self.reset_series(sh, w);
            }
        }
        // The shard is processed in chunks of slots, each with the column pieces its
        // series' new rows land in: memory stays bounded (about 1 MiB per thread) and
        // a series' blocks are close together. Two threads take chunks in turn.
        let touched_cols = |ws: &[Work]| -> Vec<Vec<bool>> {
            let mut touched: Vec<Vec<bool>> = sh.layout.archives.iter().map(|a| vec![false; a.1 as usize]).collect();
            for w in ws {
                let to = w.samples.last().map_or(w.st.last_up, |s| s.0).max(w.st.last_up);
                for (a, t) in touched.iter_mut().enumerate() {
                    let (first, n) = rows_touched(def, a, w.st.last_up, to);
                    let rows = def.rra[a].rows;
                    let mut last_col = usize::MAX;
                    for k in 0..n {
                        let col = (((first + k) % rows) / BLOCK_ROWS as u64) as usize;
                        if col != last_col {
                            t[col] = true;
                            last_col = col;
                        }
                    }
                }
            }
            touched
        };
        let per_slot: usize =
            touched_cols(&work).iter().map(|t| t.iter().filter(|&&x| x).count()).sum::<usize>() * BLOCK_LEN;
        let chunk_slots = ((1usize << 20) / per_slot.max(1)).clamp(1, cap as usize) as u32;
        let mut chunks: Vec<(u32, &mut [Work])> = Vec::new();
        {
            let mut rest = work.as_mut_slice();
            while let Some(first) = rest.first() {
                let lo = first.slot / chunk_slots * chunk_slots;
                let hi = (lo + chunk_slots).min(cap);
                let n = rest.iter().take_while(|x| x.slot < hi).count();
                let (c, r) = rest.split_at_mut(n);
                chunks.push((lo, c));
                rest = r;
            }
        }
        let n_chunks = chunks.len();
        let queue = Mutex::new(chunks.into_iter());
        let gen = sh.gen.load(Ordering::Relaxed) + 1;
        let idle_slots = &idle_slots;
        let worker = || -> Result<(u64, u64), FileError> {
            let (mut dropped, mut written) = (0, 0);
            let mut buf: Vec<u8> = Vec::new();
            loop {
                let Some((lo, ws)) = lock(&queue).next() else { break };
                let hi = (lo + chunk_slots).min(cap);
                let n = (hi - lo) as usize;
                // Column ranges of this chunk: (archive, first column, columns).
                let mut ranges: Vec<(usize, u32, u32)> = Vec::new();
                let mut lookup: Vec<Vec<u32>> = Vec::new();
                for (a, t) in touched_cols(ws).iter().enumerate() {
                    let mut lk = vec![NONE; t.len()];
                    let mut c = 0;
                    while c < t.len() {
                        if !t[c] {
                            c += 1;
                            continue;
                        }
                        let c0 = c;
                        while c < t.len() && t[c] {
                            lk[c] = ranges.len() as u32;
                            c += 1;
                        }
                        ranges.push((a, c0 as u32, (c - c0) as u32));
                    }
                    lookup.push(lk);
                }
                let piece = n * BLOCK_LEN;
                let total: usize = ranges.iter().map(|r| r.2 as usize * piece).sum();
                buf.clear();
                buf.resize(total, 0);
                let mut dirty = vec![false; total / BLOCK_LEN];
                // Read what is kept: blocks of series without new samples, and blocks
                // that already hold rows of a series being flushed. (A first flush of
                // new series reads nothing.)
                let idle = idle_slots.iter().any(|&s| s >= lo && s < hi);
                let mut at = 0;
                for &(a, c0, nc) in &ranges {
                    for col in c0..c0 + nc {
                        let keep = idle || ws.iter().any(|w| shard::block_has_rows(def, &w.st, a, col));
                        if keep {
                            let off = sh.layout.block_off(a, col, lo);
                            sh.file.read_at(&mut buf[at..at + piece], off).map_err(ioerr)?;
                        }
                        at += piece;
                    }
                }
                {
                    let mut view = ColView { lo, cols: Vec::new(), at: Vec::new(), lookup: &lookup };
                    let mut b_rest: &mut [u8] = &mut buf;
                    let mut d_rest: &mut [bool] = &mut dirty;
                    for &(a, c0, nc) in &ranges {
                        let mut cols = Vec::new();
                        for _ in 0..nc {
                            let (b1, b2) = std::mem::take(&mut b_rest).split_at_mut(piece);
                            let (d1, d2) = std::mem::take(&mut d_rest).split_at_mut(n);
                            cols.push((b1, d1));
                            b_rest = b2;
                            d_rest = d2;
                        }
                        view.cols.push(cols);
                        view.at.push((a, c0));
                    }
                    for w in ws.iter_mut() {
                        if let Err(reason) = prepare_blocks(sh, &mut view, w) {
                            w.corrupt = Some(reason);
                            self.reset_series(sh, w);
                            prepare_blocks(sh, &mut view, w).expect("an empty series needs no check");
                        }
                        let slot = w.slot;
                        dropped += apply_samples(def, &mut w.st, &w.samples, |a, row, v| {
                            let col = (row / BLOCK_ROWS as u64) as u32;
                            let (b, _) = view.block(a, col, slot);
                            shard::set_block_value(b, (row % BLOCK_ROWS as u64) as usize, v);
                        });
                        written += w.samples.len() as u64;
                        w.st.gen = gen;
                    }
                    view.seal(sh.id, |slot| ws.binary_search_by_key(&slot, |w| w.slot).map_or(0, |i| ws[i].inc));
                }
                let _w = write(&sh.io);
                let mut at = 0;
                for &(a, c0, nc) in &ranges {
                    for col in c0..c0 + nc {
                        sh.file.write_at(&buf[at..at + piece], sh.layout.block_off(a, col, lo)).map_err(ioerr)?;
                        at += piece;
                    }
                }
            }
            Ok((dropped, written))
        };
        let results: Vec<Result<(u64, u64), FileError>> = if n_chunks < 2 || threads < 2 {
            vec![worker()]
        } else {
            std::thread::scope(|scope| {
                let other = scope.spawn(worker);
                let mine = worker();
                let other = other.join().unwrap_or_else(|_| {
                    Err(FileError::Io { path: sh.path.clone(), source: std::io::Error::other("flush thread panicked") })
                });
                vec![mine, other]
            })
        };
        let mut dropped = 0;
        let mut written = 0;
        for r in results {
            let (d, w) = r?;
            dropped += d;
            written += w;
        }
        if dropped > 0 {
            self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        let adds = {
            let idx = lock(&self.index);
            work.iter()
                .filter(|w| w.new_catalog)
                .map(|w| catalog::Op::Add {
                    shard: sh.id,
                    slot: w.slot,
                    incarnation: w.inc,
                    kind: w.kind,
                    created: w.created,
                    key: idx.series[w.sid as usize].key.to_string(),
                })
                .collect()
        };
        Ok(Some(Staged { sh: sh.clone(), work, zero, table, cur, adds, written }))
    }

    /// The second half: the new states into the table that is not current (after the
    /// columns and the catalog are durable). Nothing is synced.
    pub(super) fn stage_states(&self, st: &mut Staged) -> Result<(), FileError> {
        let sh = &st.sh;
        let gen = sh.gen.load(Ordering::Relaxed) + 1;
        for w in &st.work {
            shard::encode_state(sh.id, w.slot, &w.st, &mut st.table[sh.layout.state_pos(w.slot)]);
        }
        for &slot in &st.zero {
            shard::encode_state(sh.id, slot, &State::free(gen), &mut st.table[sh.layout.state_pos(slot)]);
        }
        let _w = write(&sh.io);
        sh.file.write_at(&st.table, sh.layout.states[1 - st.cur]).map_err(|source| {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            FileError::Io { path: sh.path.clone(), source }
        })
    }

    /// Makes the new states current (after they are durable): the samples in them
    /// leave memory.
    pub(super) fn commit(&self, st: Staged) {
        let sh = &st.sh;
        {
            let _w = write(&sh.io);
            let mut idx = lock(&self.index);
            sh.cur.store(1 - st.cur, Ordering::Release);
            sh.gen.fetch_add(1, Ordering::Relaxed);
            let sl = &mut idx.shards[sh.id as usize];
            sl.to_zero.retain(|s| !st.zero.contains(s));
            for w in &st.work {
                let s = &mut idx.series[w.sid as usize];
                if s.flags & F_REMOVED != 0 || s.slot != w.slot {
                    continue;
                }
                s.flushing = None;
                s.flags = F_CATALOGED;
                s.incarnation = w.inc;
                s.created = w.created;
            }
        }
        self.stats.written.fetch_add(st.written, Ordering::Relaxed);
        self.stats.unflushed_bytes.fetch_sub(ENTRY_BYTES * st.written, Ordering::Relaxed);
    }

    /// Flushes `shards` together: all columns, one barrier (the shards synced in
    /// parallel, the catalog once), all state tables, a second barrier, then the
    /// switch. Returns the first error; shards that failed keep their samples.
    pub(super) fn flush_shards(&self, shards: &[Arc<Shard>]) -> Result<(), FileError> {
        let mut first_err = None;
        let mut staged = Vec::new();
        for sh in shards {
            match self.stage_data(sh, 2) {
                Ok(Some(s)) => staged.push(s),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let adds: Vec<catalog::Op> = staged.iter_mut().flat_map(|s| std::mem::take(&mut s.adds)).collect();
        // The first barrier: the catalog and every shard's columns, synced in parallel.
        let catalog_ok = AtomicBool::new(true);
        let sync_all = |staged: &[Staged], with_catalog: bool| -> Vec<bool> {
            let next = AtomicUsize::new(0);
            let ok: Vec<AtomicBool> = staged.iter().map(|_| AtomicBool::new(false)).collect();
            let worker = || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(s) = staged.get(i) else { break };
                ok[i].store(self.sync_shard(&s.sh).is_ok(), Ordering::Relaxed);
            };
            std::thread::scope(|scope| {
                if with_catalog {
                    scope.spawn(|| {
                        if let Err(e) = self.append_catalog(&adds) {
                            tracing::warn!(error = %e, "Catalog write failed; the flush is retried.");
                            catalog_ok.store(false, Ordering::Relaxed);
                        }
                    });
                }
                if staged.len() > 1 {
                    scope.spawn(worker);
                }
                worker();
            });
            ok.iter().map(|b| b.load(Ordering::Relaxed)).collect()
        };
        let ok = sync_all(&staged, !adds.is_empty());
        if !catalog_ok.load(Ordering::Relaxed) {
            let e = FileError::Io {
                path: self.dir.join("catalog.log"),
                source: std::io::Error::other("catalog write failed"),
            };
            return Err(first_err.unwrap_or(e));
        }
        let mut keep = Vec::new();
        for (mut s, ok) in staged.into_iter().zip(ok) {
            if !ok {
                first_err.get_or_insert(FileError::Io {
                    path: s.sh.path.clone(),
                    source: std::io::Error::other("sync failed"),
                });
                continue;
            }
            match self.stage_states(&mut s) {
                Ok(()) => keep.push(s),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let ok = sync_all(&keep, false);
        for (s, ok) in keep.into_iter().zip(ok) {
            if ok {
                self.commit(s);
            } else {
                first_err.get_or_insert(FileError::Io {
                    path: s.sh.path.clone(),
                    source: std::io::Error::other("sync failed"),
                });
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Quarantines the slot of `w` and starts the series again empty (new incarnation)
    /// from its first unflushed sample.
    pub(super) fn reset_series(&self, sh: &Shard, w: &mut Work) {
        let reason = w.corrupt.clone().unwrap_or_default();
        let key = lock(&self.index).series[w.sid as usize].key.to_string();
        self.quarantine_slot(sh, w.slot, &key, &reason);
        let start = w.samples.first().map_or(w.st.last_up, |s| s.0.saturating_sub(1));
        let inc = {
            let mut idx = lock(&self.index);
            let sl = &mut idx.shards[sh.id as usize];
            let inc = sl.incs[w.slot as usize].wrapping_add(1).max(1);
            sl.incs[w.slot as usize] = inc;
            inc
        };
        w.inc = inc;
        w.created = start;
        w.new_catalog = true;
        w.st = State::fresh(&sh.def, inc, start);
    }

    /// The flusher thread: group-commit syncs and spread-out shard flushes.
    pub(super) fn background(self: Arc<Self>) {
        let tick = Duration::from_millis(50);
        let mut last_sync = Instant::now();
        let mut order: Vec<Arc<Shard>> = Vec::new();
        let mut pos = 0usize;
        let mut boundary = 0u64;
        let mut cycle_ok = true;
        let mut cycle_start = Instant::now();
        while !self.closed.load(Ordering::SeqCst) {
            std::thread::sleep(tick);
            if let FsyncPolicy::IntervalMs(ms) = self.cfg.fsync {
                if last_sync.elapsed() >= Duration::from_millis(ms) {
                    self.sync_journal();
                    last_sync = Instant::now();
                }
            }
            if pos >= order.len() {
                // A cycle ended: every shard was flushed after `boundary` was opened.
                if cycle_ok && boundary > 0 {
                    self.drop_segments_before(boundary);
                }
                let _g = lock(&self.flush_lock);
                if let Err(e) = self.place_unplaced() {
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "Could not create a shard; retrying.");
                    continue;
                }
                order = read(&self.shards).iter().flatten().cloned().collect();
                order.shuffle(&mut rand::thread_rng());
                pos = 0;
                cycle_ok = true;
                cycle_start = Instant::now();
                boundary = match self.rotate() {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "Could not start a journal segment.");
                        0
                    }
                };
            }
            // Spread the cycle over the flush interval; go faster when memory is tight.
            let period = Duration::from_secs(self.cfg.flush_interval_secs.max(1));
            let due =
                ((cycle_start.elapsed().as_secs_f64() / period.as_secs_f64()) * order.len() as f64).ceil() as usize;
            let mut target = due.min(order.len());
            if self.stats.unflushed_bytes.load(Ordering::Relaxed) > self.cfg.max_unflushed_bytes {
                target = target.max((pos + 1).min(order.len()));
            }
            while pos < target && !self.closed.load(Ordering::SeqCst) {
                let _g = lock(&self.flush_lock);
                match self.flush_shard(&order[pos]) {
                    Ok(()) => {}
                    Err(e) => {
                        cycle_ok = false;
                        tracing::warn!(error = %e, "Shard flush failed; its samples stay in the journal.");
                    }
                }
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                pos += 1;
            }
        }
    }
}

/// Hands the unflushed samples of `s` to a flush without copying them: they move to
/// `flushing` (where reads still see them) until the flush commits. Samples of a
/// flush that failed are taken again, before the newer ones.
fn take_for_flush(s: &mut Series) -> Arc<Vec<(u64, f64)>> {
    let fresh = Vec::with_capacity(s.pending.len());
    let samples = match s.flushing.take() {
        None => std::mem::replace(&mut s.pending, fresh),
        Some(f) => {
            let mut v = Arc::try_unwrap(f).unwrap_or_else(|a| (*a).clone());
            v.append(&mut s.pending);
            v
        }
    };
    let samples = Arc::new(samples);
    s.flushing = Some(samples.clone());
    samples
}

/// Makes every block `w`'s samples will write ready in `cols`: a block that already
/// holds rows of the series is checked (CRC, incarnation); one that does not starts
/// as unknowns.
///
/// # Errors
/// The reason, when a block that should hold rows is damaged.
fn prepare_blocks(sh: &Shard, cols: &mut ColView<'_>, w: &Work) -> Result<(), String> {
    let def = &*sh.def;
    let to = w.samples.last().map_or(w.st.last_up, |s| s.0).max(w.st.last_up);
    for a in 0..def.rra.len() {
        let rows = def.rra[a].rows;
        let (first, n) = rows_touched(def, a, w.st.last_up, to);
        let mut last_col = u32::MAX;
        for k in 0..n {
            let col = (((first + k) % rows) / BLOCK_ROWS as u64) as u32;
            if col == last_col {
                continue;
            }
            last_col = col;
            let (b, dirty) = cols.block(a, col, w.slot);
            if *dirty {
                continue;
            }
            if shard::block_has_rows(def, &w.st, a, col) {
                match shard::check_block(sh.id, w.slot, a, col, b) {
                    Ok(inc) if inc == w.inc => {}
                    Ok(_) => return Err(format!("archive {a} column {col} holds another series' block")),
                    Err(e) => return Err(e.0),
                }
            } else {
                shard::clear_block(b);
            }
            *dirty = true;
        }
    }
    Ok(())
}

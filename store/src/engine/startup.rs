//! Start-up: the catalog, the shards' headers and state tables, journal replay,
//! and catalog compaction.

use super::*;

impl Store {
    /// [`Store::open_on`] with [`StoreOptions`].
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_on_with(
        disk: Arc<dyn Disk>,
        dir: &Path,
        cfg: StoreConfig,
        opts: StoreOptions,
    ) -> Result<Store, OpenError> {
        let t0 = Instant::now();
        let cfg = Settings { cfg, opts };
        cfg.check().map_err(OpenError::Config)?;
        let ioe = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        let jdir = dir.join("journal");
        let sdir = dir.join("shards");
        for d in [dir.to_path_buf(), jdir.clone(), sdir.clone(), dir.join("quarantine")] {
            disk.create_dir_all(&d).map_err(ioe(&d))?;
        }
        // Catalog.
        let cpath = dir.join("catalog.log");
        let cfile = disk.open(&cpath, true).map_err(ioe(&cpath))?;
        let clen = cfile.len().map_err(ioe(&cpath))?;
        let mut cbytes = vec![0u8; clen as usize];
        cfile.read_at(&mut cbytes, 0).map_err(ioe(&cpath))?;
        let cat = catalog::read_all(&cbytes);
        drop(cbytes);
        let stats = Stats::default();
        stats.catalog_skipped.store(cat.skipped, Ordering::Relaxed);
        if cat.skipped > 0 {
            tracing::warn!(skipped = cat.skipped, "Skipped damaged catalog records.");
        }
        // Latest add per (shard, slot), minus removes.
        let n_ops = cat.ops.len();
        let mut view = CatalogView::default();
        for op in cat.ops {
            match op {
                catalog::Op::Add { shard, slot, incarnation, kind, created, key } => {
                    if let Some(e) = view.slot_mut(shard, slot) {
                        e.max_inc = e.max_inc.max(incarnation);
                        e.live = Some(CatEntry { inc: incarnation, kind, created, key: key.into_boxed_str() });
                    }
                }
                catalog::Op::Remove { shard, slot, incarnation } => {
                    if let Some(e) = view.slot_mut(shard, slot) {
                        e.max_inc = e.max_inc.max(incarnation);
                        if e.live.as_ref().is_some_and(|l| l.inc == incarnation) {
                            e.live = None;
                        }
                    }
                }
            }
        }
        let inner = Inner {
            disk: disk.clone(),
            dir: dir.to_path_buf(),
            cfg,
            journal: Mutex::new(Journal {
                file: None,
                seg: 0,
                len: 0,
                seq: 0,
                enc: journal::Encoder::default(),
                buf: Vec::new(),
                undo: Vec::new(),
            }),
            durable_seq: Mutex::new(0),
            durable_cv: Condvar::new(),
            index: Mutex::new(Index::default()),
            shards: RwLock::new(Vec::new()),
            catalog: Mutex::new(CatalogFile { file: cfile, len: cat.good_len as u64 }),
            flush_lock: Mutex::new(()),
            quarantined: Mutex::new(Vec::new()),
            stats,
            closed: AtomicBool::new(false),
        };
        if (cat.good_len as u64) < clen {
            let c = lock(&inner.catalog);
            c.file.set_len(cat.good_len as u64).map_err(ioe(&cpath))?;
            c.file.sync().map_err(ioe(&cpath))?;
        }
        // Shards: header and both state tables of each, read and checked on two
        // threads, registered here one by one.
        let mut files = disk.list(&sdir).map_err(ioe(&sdir))?;
        files.retain(|p| p.extension().is_some_and(|e| e == "gshard"));
        let files: Vec<(u32, PathBuf)> =
            files.into_iter().filter_map(|p| Some((p.file_stem()?.to_str()?.parse::<u32>().ok()?, p))).collect();
        let mut live_adds = 0usize;
        {
            let next = AtomicUsize::new(0);
            let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<ShardRead>>(2);
            let inner = &inner;
            let files = &files;
            let res: Result<(), OpenError> = std::thread::scope(|scope| {
                for _ in 0..2 {
                    let tx = tx.clone();
                    let next = &next;
                    scope.spawn(move || loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((id, path)) = files.get(i) else { break };
                        let r = inner
                            .read_shard(path, *id)
                            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())));
                        if let Ok(None) = r {
                            continue;
                        }
                        if tx.send(r.map(|r| r.expect("None skipped above"))).is_err() {
                            break;
                        }
                    });
                }
                drop(tx);
                for r in rx {
                    let r = r.map_err(ioe(&sdir))?;
                    let path = r.sh.path.clone();
                    live_adds += inner.register_shard(r, &mut view).map_err(ioe(&path))?;
                }
                Ok(())
            });
            res?;
        }
        // Catalog entries of shards that are gone (quarantined or lost): the series
        // start again from the journal, and the catalog forgets them there so a later
        // shard with the same number starts clean.
        {
            let mut forget = Vec::new();
            let mut lost = Vec::new();
            for (shard, slots) in view.slots.iter_mut().enumerate() {
                for (slot, e) in slots.iter_mut().enumerate() {
                    if let Some(l) = e.live.take() {
                        forget.push(catalog::Op::Remove { shard: shard as u32, slot: slot as u32, incarnation: l.inc });
                        lost.push(l);
                    }
                }
            }
            if !forget.is_empty() {
                inner.append_catalog(&forget).map_err(|e| match e {
                    FileError::Io { path, source } => OpenError::Io { path, source },
                    other => OpenError::Io { path: cpath.clone(), source: std::io::Error::other(other.to_string()) },
                })?;
            }
            let mut idx = lock(&inner.index);
            for l in lost {
                let k = split_key(&l.key);
                let h = key_hash(k);
                if idx.find(h, k).is_none() && valid_parts(k) {
                    let g = idx.group_of(inner.cfg.def_for(k, l.kind));
                    idx.insert(h, l.key.clone(), l.kind, g, l.created);
                }
            }
        }
        // Journal replay.
        let segs = disk.list(&jdir).map_err(ioe(&jdir))?;
        let mut last_seg = 0;
        for path in &segs {
            let Some(id) = seg_id(path) else { continue };
            last_seg = last_seg.max(id);
            inner.replay(path).map_err(ioe(path))?;
        }
        lock(&inner.journal).seg = last_seg;
        // A catalog much longer than its live entries is rewritten.
        if n_ops > 2 * live_adds + 1024 {
            inner.compact_catalog().map_err(ioe(&cpath))?;
        }
        {
            let idx = lock(&inner.index);
            inner.stats.series.store(idx.live as u64, Ordering::Relaxed);
        }
        inner.stats.shards.store(read(&inner.shards).len() as u64, Ordering::Relaxed);
        let inner = Arc::new(inner);
        inner.rotate().map_err(ioe(&jdir))?;
        inner.stats.startup_ms.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
        tracing::info!(
            series = inner.stats.series.load(Ordering::Relaxed),
            shards = inner.stats.shards.load(Ordering::Relaxed),
            ms = inner.stats.startup_ms.load(Ordering::Relaxed),
            "Storage opened."
        );
        let store = Store { inner: inner.clone(), threads: Mutex::new(Vec::new()) };
        if inner.cfg.background {
            let i = inner.clone();
            let t = std::thread::Builder::new()
                .name("store-flusher".into())
                .spawn(move || i.background())
                .map_err(ioe(dir))?;
            lock(&store.threads).push(t);
            if inner.cfg.opts.scan_blocks {
                let i = inner.clone();
                let t = std::thread::Builder::new()
                    .name("store-scan".into())
                    .spawn(move || i.scan_all())
                    .map_err(ioe(dir))?;
                lock(&store.threads).push(t);
            }
        }
        Ok(store)
    }
}

impl Inner {
    /// Replays one journal segment into memory; truncates it at a damaged record.
    pub(super) fn replay(&self, path: &Path) -> std::io::Result<()> {
        let f = self.disk.open(path, false)?;
        let len = f.len()?;
        let mut bytes = vec![0u8; len as usize];
        f.read_at(&mut bytes, 0)?;
        // Segment-local id → series (ids are dense: the writer's series numbers).
        let mut ids: Vec<u32> = Vec::new();
        let mut at = 0usize;
        let mut idx = lock(&self.index);
        while at < bytes.len() {
            match journal::decode(&bytes[at..]) {
                journal::Decoded::Record(rec, used) => {
                    for d in rec.defines {
                        let k = d.key.parts();
                        let h = key_hash(k);
                        let sid = match idx.find(h, k) {
                            Some(sid) => sid,
                            None => {
                                let first = rec.samples.iter().find(|s| s.id == d.id).map_or(1, |s| s.time);
                                let g = idx.group_of(self.cfg.def_for(k, d.kind));
                                idx.insert(h, d.key.joined().into(), d.kind, g, first.saturating_sub(1))
                            }
                        };
                        if d.id < 1 << 26 {
                            let i = d.id as usize;
                            if ids.len() <= i {
                                ids.resize(i + 1, NONE);
                            }
                            ids[i] = sid;
                        }
                    }
                    for s in rec.samples {
                        let sid = ids.get(s.id as usize).copied().unwrap_or(NONE);
                        if sid == NONE {
                            continue;
                        }
                        let ser = &mut idx.series[sid as usize];
                        if s.time > ser.last && ser.flags & F_REMOVED == 0 {
                            ser.last = s.time;
                            ser.pending.push((s.time, s.value));
                            self.stats.unflushed_bytes.fetch_add(ENTRY_BYTES, Ordering::Relaxed);
                        }
                    }
                    for key in rec.removes {
                        let k = key.parts();
                        if let Some(sid) = idx.find(key_hash(k), k) {
                            let n = idx.series[sid as usize].pending.len() as u64;
                            self.stats.unflushed_bytes.fetch_sub(ENTRY_BYTES * n, Ordering::Relaxed);
                            for v in ids.iter_mut().filter(|v| **v == sid) {
                                *v = NONE;
                            }
                            idx.remove(sid);
                        }
                    }
                    at += used;
                }
                journal::Decoded::Incomplete | journal::Decoded::Invalid(_) => {
                    tracing::warn!(path = %path.display(), offset = at, "Truncated the journal at its last good record.");
                    self.stats.journal_truncated.fetch_add(1, Ordering::Relaxed);
                    f.set_len(at as u64)?;
                    f.sync()?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Reads one shard at start-up: header, both state tables, every record checked;
    /// picks the current record of each slot. `None` when the file was discarded
    /// (creation never completed) or quarantined (unreadable header).
    pub(super) fn read_shard(&self, path: &Path, id: u32) -> std::io::Result<Option<ShardRead>> {
        let file = self.disk.open(path, false)?;
        let len = file.len()?;
        let mut head = vec![0u8; shard::HEADER_LEN as usize];
        let header = if len >= shard::HEADER_LEN {
            file.read_at(&mut head, 0)?;
            shard::decode_header(&head).map_err(|e| e.0)
        } else {
            Err("shorter than its header".to_string())
        };
        let short = match &header {
            Ok(h) => len < Layout::new(&h.def, h.capacity).file_len,
            Err(_) => true,
        };
        if head.iter().all(|&b| b == 0) || short {
            // Created, but its first flush never completed (header and length are
            // durable before any state): nothing refers to it if no state was written.
            let mut next = vec![0u8; (len.saturating_sub(shard::HEADER_LEN)).min(1 << 16) as usize];
            if !next.is_empty() {
                file.read_at(&mut next, shard::HEADER_LEN)?;
            }
            if next.iter().all(|&b| b == 0) {
                tracing::info!(path = %path.display(), "Removing a shard whose creation did not complete.");
                drop(file);
                self.disk.remove(path)?;
                return Ok(None);
            }
        }
        let header = match header {
            Ok(h) if h.id == id && !short => h,
            Ok(_) => {
                self.quarantine_file(path, "shard number or length does not match its header");
                return Ok(None);
            }
            Err(e) => {
                self.quarantine_file(path, &e);
                return Ok(None);
            }
        };
        let cap = header.capacity;
        let layout = Layout::new(&header.def, cap);
        let mut tables = [vec![0u8; layout.table_len()], vec![0u8; layout.table_len()]];
        for (c, t) in tables.iter_mut().enumerate() {
            file.read_at(t, layout.states[c])?;
        }
        let rra_cnt = header.def.rra.len();
        // Per slot the valid record with the higher generation; a damaged record
        // falls back to the other table.
        let mut merged = tables[0].clone();
        let mut gen_max = [0u64; 2];
        let mut heads = Vec::with_capacity(cap as usize);
        let mut damaged: Vec<(u32, String)> = Vec::new();
        let mut damaged_copy = [false; 2];
        for slot in 0..cap {
            let r = layout.state_pos(slot);
            let a = shard::check_state(id, slot, rra_cnt, &tables[0][r.clone()]);
            let b = shard::check_state(id, slot, rra_cnt, &tables[1][r.clone()]);
            damaged_copy[0] |= a.is_err();
            damaged_copy[1] |= b.is_err();
            if let (Err(e), Ok(Some(_))) | (Ok(Some(_)), Err(e)) = (&a, &b) {
                // Records never straddle a sector, so this is damage, not a torn write:
                // the other copy serves, possibly older than what the shard held.
                self.stats.corrupt_files.fetch_add(1, Ordering::Relaxed);
                tracing::error!(shard = id, slot, reason = %e, "A state record is damaged; using its other copy.");
            }
            let pick = match (a, b) {
                (Ok(Some(a)), Ok(Some(b))) => Some(if b.gen > a.gen { (1, b) } else { (0, a) }),
                (Ok(Some(s)), Ok(None)) | (Ok(Some(s)), Err(_)) => Some((0, s)),
                (Ok(None), Ok(Some(s))) | (Err(_), Ok(Some(s))) => Some((1, s)),
                (Ok(None), Ok(None)) => None,
                (Err(e), _) | (_, Err(e)) => {
                    damaged.push((slot, e.0));
                    None
                }
            };
            match pick {
                Some((c, st)) => {
                    gen_max[c] = gen_max[c].max(st.gen);
                    if c == 1 {
                        merged[r.clone()].copy_from_slice(&tables[1][r]);
                    }
                    heads.push(Some(st).filter(|st| st.incarnation != 0));
                }
                None => {
                    merged[r].fill(0);
                    heads.push(None);
                }
            }
        }
        let cur = usize::from(gen_max[1] > gen_max[0]);
        let gen = gen_max[0].max(gen_max[1]) + 1;
        let rewrite = merged != tables[cur];
        let sh = Arc::new(Shard {
            id,
            path: path.to_path_buf(),
            file,
            def: Arc::new(header.def),
            layout,
            io: RwLock::new(()),
            cur: AtomicUsize::new(cur),
            gen: AtomicU64::new(gen),
        });
        Ok(Some(ShardRead { sh, heads, damaged, merged, rewrite, damaged_other: damaged_copy[1 - cur] }))
    }

    /// Registers a shard read at start-up: its slots against the catalog (the
    /// catalog's entries are taken out of `view`), orphans quarantined, the current
    /// table made whole. Returns the number of live series.
    pub(super) fn register_shard(&self, r: ShardRead, view: &mut CatalogView) -> std::io::Result<usize> {
        let ShardRead { sh, heads, damaged, mut merged, mut rewrite, damaged_other } = r;
        let id = sh.id;
        let cap = sh.layout.capacity;
        let gen = sh.gen.load(Ordering::Relaxed);
        {
            let mut shards = write(&self.shards);
            while shards.len() <= id as usize {
                shards.push(None);
            }
            shards[id as usize] = Some(sh.clone());
        }
        let mut live = 0;
        let mut orphans = damaged;
        {
            let mut idx = lock(&self.index);
            let g = idx.group_of((*sh.def).clone());
            idx.groups[g as usize].shards.push(id);
            idx.reserve_shard(id, g);
            idx.shards[id as usize] = Slots {
                group: g,
                slots: vec![NONE; cap as usize],
                incs: (0..cap)
                    .map(|s| view.max_inc(id, s).max(heads[s as usize].map_or(0, |h| h.incarnation)))
                    .collect(),
                free: Vec::new(),
                to_zero: Vec::new(),
            };
            for slot in (0..cap).rev() {
                let st = heads[slot as usize];
                let removed = view.max_inc(id, slot);
                let Some(entry) = view.take(id, slot) else {
                    if st.is_some_and(|st| st.incarnation > removed) {
                        orphans.push((slot, "slot in use but not in the catalog".into()));
                    } else if st.is_some() {
                        // A removed series whose slot was not cleared yet.
                        idx.shards[id as usize].free.push(slot);
                        idx.shards[id as usize].to_zero.push(slot);
                    } else if !orphans.iter().any(|o| o.0 == slot) {
                        idx.shards[id as usize].free.push(slot);
                    }
                    continue;
                };
                let k = split_key(&entry.key);
                let h = key_hash(k);
                if idx.find(h, k).is_some() || !valid_parts(k) || !entry.kind.fits(sh.def.ds.kind) {
                    tracing::warn!(key = %entry.key, shard = id, slot, "Duplicate or invalid catalog entry; slot freed.");
                    orphans.push((slot, "duplicate or invalid catalog entry".into()));
                    continue;
                }
                let sid = idx.insert(h, entry.key, entry.kind, g, entry.created);
                let s = &mut idx.series[sid as usize];
                s.shard = id;
                s.slot = slot;
                s.incarnation = entry.inc;
                s.flags = F_CATALOGED;
                match st {
                    Some(st) if st.incarnation == entry.inc => s.last = st.last_up,
                    // Catalogued but never flushed: it starts empty from the journal.
                    None => {}
                    Some(st) if st.incarnation < entry.inc => {}
                    Some(_) => s.flags |= F_CORRUPT,
                }
                if orphans.iter().any(|o| o.0 == slot) {
                    s.flags |= F_CORRUPT;
                }
                idx.shards[id as usize].slots[slot as usize] = sid;
                live += 1;
            }
        }
        for (slot, reason) in orphans {
            let sid = lock(&self.index).shards[id as usize].slots[slot as usize];
            if sid != NONE {
                continue; // a catalogued series: the flusher quarantines and recreates it
            }
            self.quarantine_slot(&sh, slot, "?", &reason);
            shard::encode_state(id, slot, &State::free(gen), &mut merged[sh.layout.state_pos(slot)]);
            lock(&self.index).shards[id as usize].free.push(slot);
            rewrite = true;
        }
        // Make the current table hold every current record (after a torn state write
        // they can be spread over both tables). A record rewritten with the same bytes
        // survives a tear, and the others are still in the other table.
        let cur = sh.cur.load(Ordering::Relaxed);
        if rewrite {
            sh.file.write_at(&merged, sh.layout.states[cur])?;
            sh.file.sync()?;
        }
        // A damaged record in the other table is replaced too (the current one now
        // holds everything, so a tear here loses nothing).
        if damaged_other {
            sh.file.write_at(&merged, sh.layout.states[1 - cur])?;
            sh.file.sync()?;
        }
        Ok(live)
    }

    /// Moves a whole unreadable shard file aside.
    pub(super) fn quarantine_file(&self, path: &Path, reason: &str) {
        let stamp = now_secs();
        let to = self
            .dir
            .join("quarantine")
            .join(format!("{}.{stamp}", path.file_name().and_then(|n| n.to_str()).unwrap_or("shard")));
        self.stats.corrupt_files.fetch_add(1, Ordering::Relaxed);
        match self.disk.rename(path, &to) {
            Ok(()) => {
                self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %path.display(), to = %to.display(), reason, "Quarantined an unreadable shard; its series start again from the journal.");
                lock(&self.quarantined).push(Quarantined {
                    series: "*".into(),
                    path: to,
                    reason: reason.into(),
                    at: stamp,
                });
            }
            Err(e) => tracing::error!(path = %path.display(), error = %e, "Could not quarantine an unreadable shard."),
        }
    }

    /// Rewrites the catalog with only the live entries (and, for free slots, the last
    /// incarnation used, so a later occupant gets a new one).
    pub(super) fn compact_catalog(&self) -> std::io::Result<()> {
        let mut buf = Vec::new();
        {
            let idx = lock(&self.index);
            for (shard, sl) in idx.shards.iter().enumerate() {
                for (slot, &sid) in sl.slots.iter().enumerate() {
                    let (shard, slot) = (shard as u32, slot as u32);
                    let s = (sid != NONE).then(|| &idx.series[sid as usize]);
                    let op = match s {
                        Some(s) if s.flags & F_CATALOGED != 0 => catalog::Op::Add {
                            shard,
                            slot,
                            incarnation: s.incarnation,
                            kind: s.kind,
                            created: s.created,
                            key: s.key.to_string(),
                        },
                        _ if sl.incs[slot as usize] > 0 => {
                            catalog::Op::Remove { shard, slot, incarnation: sl.incs[slot as usize] }
                        }
                        _ => continue,
                    };
                    catalog::encode(&op, &mut buf);
                }
            }
        }
        let path = self.dir.join("catalog.log");
        let tmp = self.dir.join("catalog.new");
        let f = self.disk.open(&tmp, true)?;
        f.set_len(0)?;
        f.write_at(&buf, 0)?;
        f.sync()?;
        drop(f);
        self.disk.rename(&tmp, &path)?;
        self.disk.sync_dir(&self.dir)?;
        let mut c = lock(&self.catalog);
        c.file = self.disk.open(&path, false)?;
        c.len = buf.len() as u64;
        tracing::info!(bytes = buf.len(), "Compacted the catalog.");
        Ok(())
    }
}

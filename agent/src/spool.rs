//! Batches that some collector has not yet acknowledged.
//!
//! Every batch gets the next sequence number and is kept until each configured
//! collector has acknowledged it, so one collector being down never holds back the
//! others and, when it returns, it receives exactly what it missed, in order. The
//! newest batches stay in memory up to `memory_bytes`; older ones spill to segment
//! files on disk up to `disk_bytes`; past that the oldest batches are dropped and
//! counted (a dead collector must not fill the host's disk).
//!
//! Segment files hold records `seq: u64 BE | len: u32 BE | payload`. Spilled batches
//! belong to the running agent: the directory is emptied when the agent starts, because
//! a new run numbers its batches afresh.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes per segment file before a new one is started.
const SEGMENT_BYTES: u64 = 1024 * 1024;

pub type Payload = Arc<[u8]>;

struct Segment {
    path: PathBuf,
    first: u64,
    /// Byte offset of each record, in sequence order starting at `first`.
    offsets: Vec<u64>,
    bytes: u64,
    file: Option<File>,
}

struct Disk {
    dir: PathBuf,
    limit: u64,
    bytes: u64,
    segments: VecDeque<Segment>,
}

/// Counters of a spool.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolStats {
    /// Batches held, in memory and on disk.
    pub batches: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// Batches dropped unacknowledged by some collector because the spool was full.
    pub dropped: u64,
    /// Spill or read failures of the disk part.
    pub disk_errors: u64,
}

pub struct Spool {
    mem: VecDeque<(u64, Payload)>,
    mem_bytes: u64,
    mem_limit: u64,
    disk: Option<Disk>,
    /// Lowest sequence number still held (on disk or in memory).
    first: u64,
    /// Sequence number the next batch gets.
    next: u64,
    /// Per collector: highest acknowledged sequence number.
    acked: Vec<u64>,
    dropped: u64,
    disk_errors: u64,
}

impl Spool {
    /// Creates a spool for `collectors` destinations. Sequence numbers start at 1.
    ///
    /// # Errors
    /// When the spool directory cannot be created or emptied.
    pub fn new(collectors: usize, mem_limit: u64, dir: Option<PathBuf>, disk_limit: u64) -> io::Result<Spool> {
        let disk = match dir {
            Some(dir) => {
                fs::create_dir_all(&dir)?;
                for entry in fs::read_dir(&dir)? {
                    let path = entry?.path();
                    if path.extension().is_some_and(|e| e == "seg") {
                        fs::remove_file(&path)?;
                    }
                }
                Some(Disk { dir, limit: disk_limit, bytes: 0, segments: VecDeque::new() })
            }
            None => None,
        };
        Ok(Spool {
            mem: VecDeque::new(),
            mem_bytes: 0,
            mem_limit,
            disk,
            first: 1,
            next: 1,
            acked: vec![0; collectors],
            dropped: 0,
            disk_errors: 0,
        })
    }

    /// The sequence number the next pushed batch will get.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Lowest sequence number still available.
    pub fn first_seq(&self) -> u64 {
        self.first
    }

    /// Highest sequence number collector `c` acknowledged.
    pub fn acked(&self, c: usize) -> u64 {
        self.acked[c]
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            batches: self.next - self.first,
            memory_bytes: self.mem_bytes,
            disk_bytes: self.disk.as_ref().map_or(0, |d| d.bytes),
            dropped: self.dropped,
            disk_errors: self.disk_errors,
        }
    }

    /// Adds a batch payload under the next sequence number and returns that number.
    pub fn push(&mut self, payload: Payload) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.mem_bytes += payload.len() as u64;
        self.mem.push_back((seq, payload));
        while self.mem_bytes > self.mem_limit && self.mem.len() > 1 {
            let Some((seq, payload)) = self.mem.pop_front() else { break };
            self.mem_bytes -= payload.len() as u64;
            if !self.spill(seq, &payload) {
                self.drop_through(seq);
            }
        }
        seq
    }

    /// The payload of batch `seq`, if it is still held.
    pub fn get(&mut self, seq: u64) -> Option<Payload> {
        if seq < self.first || seq >= self.next {
            return None;
        }
        if let Some((front, _)) = self.mem.front() {
            if seq >= *front {
                return self.mem.get((seq - front) as usize).map(|(_, p)| p.clone());
            }
        }
        match self.read_disk(seq) {
            Ok(p) => p,
            Err(e) => {
                self.disk_errors += 1;
                tracing::warn!(seq, error = %e, "Could not read spooled batch; skipping it.");
                None
            }
        }
    }

    /// Records that collector `c` has every batch up to `seq` and releases batches all
    /// collectors have.
    pub fn ack(&mut self, c: usize, seq: u64) {
        let seq = seq.min(self.next.saturating_sub(1));
        if seq > self.acked[c] {
            self.acked[c] = seq;
        }
        let all = self.acked.iter().copied().min().unwrap_or(0);
        self.release_through(all);
    }

    /// Forgets every batch up to `seq`: memory entries go at once, a segment file once
    /// all its records are behind `first`.
    fn release_through(&mut self, seq: u64) {
        self.first = self.first.max((seq + 1).min(self.next));
        while self.mem.front().is_some_and(|(f, _)| *f < self.first) {
            let (_, p) = self.mem.pop_front().expect("front checked above");
            self.mem_bytes -= p.len() as u64;
        }
        if let Some(disk) = self.disk.as_mut() {
            while let Some(s) = disk.segments.front() {
                if s.first + s.offsets.len() as u64 > self.first {
                    break;
                }
                let s = disk.segments.pop_front().expect("front checked above");
                disk.bytes -= s.bytes;
                let _ = fs::remove_file(&s.path);
            }
        }
    }

    /// Drops everything up to `seq` because there is no room; counts it once per batch.
    fn drop_through(&mut self, seq: u64) {
        if seq >= self.first {
            self.dropped += seq + 1 - self.first;
            tracing::warn!(batches = seq + 1 - self.first, "Spool full; dropped the oldest batches.");
        }
        self.release_through(seq);
    }

    /// Writes a batch to the newest segment. Returns false when there is no disk part or
    /// it failed, in which case the batch is lost.
    fn spill(&mut self, seq: u64, payload: &[u8]) -> bool {
        let Some(disk) = self.disk.as_mut() else { return false };
        let record = 12 + payload.len() as u64;
        // Make room first: the oldest segments go, their batches counted as dropped.
        while disk.bytes + record > disk.limit {
            let Some(s) = disk.segments.pop_front() else { break };
            disk.bytes -= s.bytes;
            let _ = fs::remove_file(&s.path);
            let last = s.first + s.offsets.len() as u64 - 1;
            if last >= self.first {
                self.dropped += last + 1 - self.first;
                tracing::warn!(
                    batches = last + 1 - self.first,
                    "Spool disk bound reached; dropped the oldest batches."
                );
                self.first = last + 1;
            }
        }
        if disk.bytes + record > disk.limit {
            return false;
        }
        let result = (|| -> io::Result<()> {
            let need_new = disk.segments.back().is_none_or(|s| s.bytes + record > SEGMENT_BYTES || s.file.is_none());
            if need_new {
                if let Some(s) = disk.segments.back_mut() {
                    s.file = None;
                }
                let path = disk.dir.join(format!("{seq:020}.seg"));
                let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
                disk.segments.push_back(Segment { path, first: seq, offsets: Vec::new(), bytes: 0, file: Some(file) });
            }
            let s = disk.segments.back_mut().expect("a segment was just ensured");
            let file = s.file.as_mut().expect("the newest segment is open");
            let mut rec = Vec::with_capacity(record as usize);
            rec.extend_from_slice(&seq.to_be_bytes());
            rec.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            rec.extend_from_slice(payload);
            file.write_all(&rec)?;
            s.offsets.push(s.bytes);
            s.bytes += record;
            disk.bytes += record;
            Ok(())
        })();
        match result {
            Ok(()) => true,
            Err(e) => {
                self.disk_errors += 1;
                tracing::warn!(error = %e, "Could not spill a batch to the spool directory.");
                false
            }
        }
    }

    fn read_disk(&mut self, seq: u64) -> io::Result<Option<Payload>> {
        let Some(disk) = self.disk.as_ref() else { return Ok(None) };
        let Some(s) = disk.segments.iter().find(|s| seq >= s.first && seq < s.first + s.offsets.len() as u64) else {
            return Ok(None);
        };
        let mut file = File::open(&s.path)?;
        file.seek(SeekFrom::Start(s.offsets[(seq - s.first) as usize]))?;
        let mut head = [0u8; 12];
        file.read_exact(&mut head)?;
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&head[..8]);
        if u64::from_be_bytes(seq_bytes) != seq {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "segment record has another sequence number"));
        }
        let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let mut payload = vec![0u8; len];
        file.read_exact(&mut payload)?;
        Ok(Some(payload.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seq: u64, len: usize) -> Payload {
        let mut v = vec![(seq % 251) as u8; len];
        v[..8].copy_from_slice(&seq.to_be_bytes());
        v.into()
    }

    #[test]
    fn keeps_batches_until_every_collector_acked() {
        let mut s = Spool::new(2, 1 << 20, None, 0).unwrap();
        for i in 1..=10 {
            assert_eq!(s.push(payload(i, 100)), i);
        }
        s.ack(0, 10);
        assert_eq!(s.first_seq(), 1, "collector 1 has acked nothing");
        s.ack(1, 4);
        assert_eq!(s.first_seq(), 5);
        assert!(s.get(4).is_none());
        assert_eq!(s.get(5).unwrap()[..8], 5u64.to_be_bytes());
    }

    #[test]
    fn spills_to_disk_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new(1, 1000, Some(dir.path().to_owned()), 1 << 20).unwrap();
        for i in 1..=100 {
            s.push(payload(i, 100));
        }
        assert!(s.stats().disk_bytes > 0);
        for i in 1..=100 {
            assert_eq!(s.get(i).unwrap()[..8], i.to_be_bytes(), "batch {i}");
        }
        s.ack(0, 50);
        assert_eq!(s.first_seq(), 51);
        assert_eq!(s.get(51).unwrap()[..8], 51u64.to_be_bytes());
        s.ack(0, 100);
        assert_eq!(s.stats().batches, 0);
        assert_eq!(s.stats().disk_bytes, 0);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn drops_and_counts_oldest_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new(1, 1000, Some(dir.path().to_owned()), 5000).unwrap();
        for i in 1..=200 {
            s.push(payload(i, 100));
        }
        let st = s.stats();
        assert!(st.dropped > 0);
        assert_eq!(st.dropped + st.batches, 200);
        assert!(st.disk_bytes <= 5000);
        // What is held is contiguous and ends at the newest batch.
        for i in s.first_seq()..=200 {
            assert_eq!(s.get(i).unwrap()[..8], i.to_be_bytes(), "batch {i}");
        }
    }

    #[test]
    fn memory_only_spool_drops_oldest() {
        let mut s = Spool::new(1, 1000, None, 0).unwrap();
        for i in 1..=50 {
            s.push(payload(i, 100));
        }
        assert_eq!(s.stats().dropped, 40);
        assert_eq!(s.first_seq(), 41);
    }
}

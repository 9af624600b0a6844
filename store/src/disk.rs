//! All file I/O of the crate goes through [`Disk`], so tests can put a fault-injecting
//! implementation ([`MemDisk`]) underneath and simulate what real media do: lose writes
//! that were not synced (a crash or power loss), tear a write in the middle, flip bytes,
//! or refuse writes because the disk is full.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One open file.
pub trait DiskFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `off`.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// Writes all of `buf` at `off`, extending the file if needed.
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Makes every write so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves the blocks of the first `len` bytes (reading as zeros) so later writes
    /// there never allocate: `fallocate` where the file system has it.
    fn allocate(&self, len: u64) -> io::Result<()> {
        if self.len()? < len {
            self.set_len(len)?;
        }
        Ok(())
    }
}

/// A file system: the few operations the store needs.
pub trait Disk: Send + Sync {
    /// Opens a file for reading and writing; creates it (empty) when `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>>;
    fn exists(&self, path: &Path) -> bool;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Files (not directories) directly in `dir`, sorted by name.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Every file below `dir`, recursively.
    fn walk(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Makes the entries of directory `dir` (files created or renamed in it) durable.
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

struct RealFile(std::fs::File);

impl DiskFile for RealFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, off)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        match rustix::fs::fallocate(&self.0, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            // File systems without fallocate: a plain (possibly sparse) extension.
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                if self.len()? < len {
                    self.set_len(len)?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Disk for RealDisk {
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let f = std::fs::OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                out.push(e.path());
            }
        }
        out.sort();
        Ok(out)
    }
    fn walk(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in rd {
                let e = e?;
                let t = e.file_type()?;
                if t.is_dir() {
                    stack.push(e.path());
                } else if t.is_file() {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        Ok(out)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Contents of one in-memory file: what a reader sees now, and what survives a crash.
#[derive(Default)]
struct MemInode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order, for tearing on crash.
    pending: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct MemState {
    files: BTreeMap<PathBuf, Arc<Mutex<MemInode>>>,
}

/// An in-memory [`Disk`] for crash and corruption tests.
///
/// Writes are visible at once but durable only after `sync`. [`MemDisk::crash`] forgets
/// every unsynced write (optionally keeping a torn prefix of the last one);
/// [`MemDisk::set_full`] makes writes fail with ENOSPC; [`MemDisk::flip`] corrupts a byte.
/// Directory operations (create, rename, remove) are taken as durable at once.
#[derive(Clone)]
pub struct MemDisk {
    state: Arc<Mutex<MemState>>,
    full: Arc<AtomicBool>,
    /// Writes, length changes and syncs still allowed before every further one fails
    /// (`u64::MAX`: no limit), to stop a flush at any point.
    budget: Arc<AtomicU64>,
    /// Counts syncs, so tests can see group commit at work.
    pub syncs: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test thread that panicked while holding the lock leaves plain data behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

/// Takes one operation from `budget`; an error once it is used up.
fn spend(budget: &AtomicU64) -> io::Result<()> {
    let ok = budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| match b {
        u64::MAX => Some(u64::MAX),
        0 => None,
        b => Some(b - 1),
    });
    ok.map(|_| ()).map_err(|_| io::Error::other("injected I/O failure"))
}

struct MemFile {
    inode: Arc<Mutex<MemInode>>,
    full: Arc<AtomicBool>,
    budget: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
}

impl DiskFile for MemFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let i = lock(&self.inode);
        let off = usize::try_from(off).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let end = off.checked_add(buf.len()).filter(|&e| e <= i.current.len());
        match end {
            Some(end) => {
                buf.copy_from_slice(&i.current[off..end]);
                Ok(())
            }
            None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        spend(&self.budget)?;
        let mut i = lock(&self.inode);
        let off = off as usize;
        if i.current.len() < off + buf.len() {
            i.current.resize(off + buf.len(), 0);
        }
        i.current[off..off + buf.len()].copy_from_slice(buf);
        i.pending.push((off as u64, buf.to_vec()));
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        spend(&self.budget)?;
        let mut i = lock(&self.inode);
        i.durable = i.current.clone();
        i.pending.clear();
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.inode).current.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) && len > self.len()? {
            return Err(enospc());
        }
        spend(&self.budget)?;
        let mut i = lock(&self.inode);
        i.current.resize(len as usize, 0);
        i.pending.push((len, Vec::new()));
        Ok(())
    }
}

impl Default for MemDisk {
    fn default() -> MemDisk {
        MemDisk {
            state: Arc::default(),
            full: Arc::default(),
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            syncs: Arc::default(),
        }
    }
}

impl MemDisk {
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    /// Lets `n` more writes, length changes and syncs succeed, then fails every further
    /// one (`None`: no limit again). With [`MemDisk::crash`] after it, a test stops the
    /// store at any point of a flush.
    pub fn fail_after(&self, n: Option<u64>) {
        self.budget.store(n.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Simulates power loss: every file goes back to its last synced contents. With
    /// `tear`, the first `tear` bytes of each file's first unsynced write survive.
    pub fn crash(&self, tear: Option<usize>) {
        let st = lock(&self.state);
        for inode in st.files.values() {
            let mut i = lock(inode);
            let mut after = i.durable.clone();
            if let (Some(n), Some((off, data))) = (tear, i.pending.first()) {
                let off = *off as usize;
                let n = n.min(data.len());
                if after.len() < off + n {
                    after.resize(off + n, 0);
                }
                after[off..off + n].copy_from_slice(&data[..n]);
            }
            i.current = after.clone();
            i.durable = after;
            i.pending.clear();
        }
    }

    /// Makes writes and syncs fail with ENOSPC (`true`) or work again (`false`).
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// XORs one byte of a file, in what is read now and what survives a crash.
    pub fn flip(&self, path: &Path, off: u64, mask: u8) {
        let st = lock(&self.state);
        if let Some(inode) = st.files.get(path) {
            let mut i = lock(inode);
            let off = off as usize;
            if off < i.current.len() {
                i.current[off] ^= mask;
            }
            if off < i.durable.len() {
                i.durable[off] ^= mask;
            }
        }
    }

    /// Length of a file now (for tests that corrupt its tail).
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        lock(&self.state).files.get(path).map(|i| lock(i).current.len() as u64)
    }
}

impl Disk for MemDisk {
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let mut st = lock(&self.state);
        let inode = match st.files.get(path) {
            Some(i) => i.clone(),
            None if create => {
                if self.full.load(Ordering::SeqCst) {
                    return Err(enospc());
                }
                let i = Arc::new(Mutex::new(MemInode::default()));
                st.files.insert(path.to_path_buf(), i.clone());
                i
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        Ok(Box::new(MemFile { inode, full: self.full.clone(), budget: self.budget.clone(), syncs: self.syncs.clone() }))
    }
    fn exists(&self, path: &Path) -> bool {
        lock(&self.state).files.contains_key(path)
    }
    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        let i = st.files.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.files.insert(to.to_path_buf(), i);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        lock(&self.state).files.remove(path).map(|_| ()).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(lock(&self.state).files.keys().filter(|p| p.parent() == Some(dir)).cloned().collect())
    }
    fn walk(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(lock(&self.state).files.keys().filter(|p| p.starts_with(dir)).cloned().collect())
    }
}

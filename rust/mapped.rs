//! Read-only file mappings that survive the file shrinking under them.
//!
//! Reading a page of a mapping that lies past the file's end (another process truncated the
//! file meanwhile) raises SIGBUS, which kills the process without a word (exit 135). A bundle is
//! a user's file and `cas bundle verify` maps it; so, in `cas verify`, are store objects. While
//! a `Mapped` is alive its range is registered here, and a SIGBUS inside a registered range maps
//! zeros over the rest of that range and marks it: the reads complete, on bytes that are not the
//! file's, and `Mapped::check` then says that the file changed while it was read. A SIGBUS
//! anywhere else is handed to whatever handled it before (by default: the process dies, as it
//! would have).
//!
//! The handler only reads atomics and calls `mmap` and `sigaction`, both plain system calls.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, IoContext, Result};

/// Mappings alive at once (each verify thread maps one file at a time); past this, a mapping
/// is still made, only without the safety net.
const SLOTS: usize = 64;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    shrank: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // only as the array's initialiser
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    shrank: AtomicBool::new(false),
};
static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
/// Whoever handled SIGBUS before us, as a raw `sigaction` (written only under `INSTALL`).
static PREVIOUS: Mutex<Option<libc::sigaction>> = Mutex::new(None);
static INSTALL: Mutex<()> = Mutex::new(());

/// A read-only map of a whole file, safe against the file shrinking while it is read.
pub(crate) struct Mapped {
    map: Option<memmap2::Mmap>,
    slot: Option<usize>,
    path: PathBuf,
}

impl Mapped {
    /// Map `file` (named `path` in errors). An empty file maps to an empty slice.
    pub(crate) fn map(file: &File, path: &Path) -> Result<Mapped> {
        let len = file.metadata().at(path, "stat")?.len();
        if len == 0 {
            return Ok(Mapped {
                map: None,
                slot: None,
                path: path.to_path_buf(),
            });
        }
        // SAFETY: the map is read-only and dropped with `self`. A file truncated meanwhile
        // makes reads fault: the handler below turns that into zeros and a mark, which
        // `check` reports (see the module's comment).
        let map = unsafe { memmap2::Mmap::map(file) }.at(path, "map")?;
        let _ = map.advise(memmap2::Advice::Sequential);
        let slot = install()
            .then(|| register(map.as_ptr() as usize, map.len()))
            .flatten();
        Ok(Mapped {
            map: Some(map),
            slot,
            path: path.to_path_buf(),
        })
    }

    /// Err when the file shrank while it was mapped: what was read is not the file.
    pub(crate) fn check(&self) -> Result<()> {
        let shrank = self
            .slot
            .is_some_and(|i| TABLE[i].shrank.load(Ordering::Acquire));
        if shrank {
            return Err(Error::io(
                &self.path,
                "read",
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file changed (shrank) while it was read",
                ),
            ));
        }
        Ok(())
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            // Unregistered before the unmap, so that no fault is ever taken for a range that
            // another mapping may reuse.
            TABLE[i].len.store(0, Ordering::Release);
            TABLE[i].start.store(0, Ordering::Release);
        }
    }
}

fn register(start: usize, len: usize) -> Option<usize> {
    for (i, slot) in TABLE.iter().enumerate() {
        if slot
            .start
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            slot.shrank.store(false, Ordering::Release);
            slot.len.store(len, Ordering::Release);
            return Some(i);
        }
    }
    None
}

/// Make sure our handler is SIGBUS's; false when it cannot be installed.
fn install() -> bool {
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: sigaction with a null new action only reads the current one into `current`.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut current) } != 0 {
        return false;
    }
    if current.sa_sigaction == on_sigbus as *const () as usize {
        return true;
    }
    // SAFETY: a zeroed sigaction is a valid value; we fill in the handler, an empty mask and
    // SA_SIGINFO (the handler reads si_addr) with SA_ONSTACK (run on an alternate stack where
    // the thread has one) and SA_NODEFER (a fault in the handler is not blocked forever).
    let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
    ours.sa_sigaction = on_sigbus as *const () as usize;
    ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
    unsafe { libc::sigemptyset(&mut ours.sa_mask) };
    *PREVIOUS.lock().unwrap_or_else(|p| p.into_inner()) = Some(current);
    // SAFETY: installs a valid action; the previous one is kept above to be restored.
    unsafe { libc::sigaction(libc::SIGBUS, &ours, std::ptr::null_mut()) == 0 }
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a handler installed with SA_SIGINFO.
    let addr = unsafe { (*info).si_addr() } as usize;
    // SAFETY: sysconf is a plain query.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    for slot in &TABLE {
        let start = slot.start.load(Ordering::Acquire);
        let len = slot.len.load(Ordering::Acquire);
        if start == 0 || addr < start || addr - start >= len {
            continue;
        }
        let from = addr & !(page - 1);
        let end = start + len;
        // SAFETY: replaces pages of our own read-only mapping (registered, alive until it is
        // unregistered in Drop, before the unmap) with anonymous zero pages; the map's
        // munmap later removes them with the rest.
        let done = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if done != libc::MAP_FAILED {
            slot.shrank.store(true, Ordering::Release);
            return;
        }
    }
    // Not ours: put the previous disposition back and return; the access faults again under it.
    let previous = PREVIOUS.try_lock().ok().and_then(|p| *p);
    // SAFETY: restores an action that sigaction itself reported (or the default).
    unsafe {
        match previous {
            Some(action) => libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()),
            None => {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
                0
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_that_shrinks_under_its_map_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shrinks");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        drop(f);
        let file = File::open(&path).unwrap();
        let mapped = Mapped::map(&file, &path).unwrap();
        assert!(mapped.check().is_ok());
        assert_eq!(mapped[4096], 7);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        // Past the new end: a SIGBUS without the handler.
        let sum: u64 = mapped.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(sum, 7 * 4096, "the pages past the end read as zeros");
        assert!(mapped.check().is_err());
        drop(mapped);
        let again = Mapped::map(&file, &path).unwrap();
        assert!(again.check().is_ok() && again.len() == 4096);
    }
}

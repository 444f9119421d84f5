//! sha256, blake3 and crc32 over buffers, files and streams, all in one read pass.
//!
//! sha256 is sequential, blake3 is a tree. When both are wanted, sha256 (with crc32, which is
//! nearly free) runs on one thread and blake3 on another, both over the same bytes: memory-mapped
//! for large files, or fed by a reader thread through a small ring of buffers. When sha256 is not
//! wanted, blake3 spreads its tree over the whole pool.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::control::{pool, Control};
use crate::error::{Error, IoContext, Result};
use crate::fsio::{open_checked, read_full, sync_range, Open, PageBuf};
use crate::mapped::Mapped;

/// Below this, work stays on one thread: splitting it costs more than it saves.
pub const PARALLEL_MIN: u64 = 16 << 20;
/// Pieces handed to each lane; large enough for blake3's rayon split, small enough to cancel fast.
const PIECE: usize = 4 << 20;
/// Buffers in flight between the reader and the lanes (PIECE each): bounds peak memory. Eight
/// let the sha256 lane run on while a direct write waits for the disk.
const RING: usize = 8;

/// Which digests to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Algos {
    pub sha256: bool,
    pub blake3: bool,
    pub crc32: bool,
}

impl Algos {
    pub const SHA256_BLAKE3: Algos = Algos {
        sha256: true,
        blake3: true,
        crc32: false,
    };

    /// Parse names such as `["sha256", "blake3"]`.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Algos> {
        let mut algos = Algos::default();
        for name in names {
            match name {
                "sha256" => algos.sha256 = true,
                "blake3" => algos.blake3 = true,
                "crc32" => algos.crc32 = true,
                other => {
                    return Err(Error::Invalid(format!(
                        "unknown digest algorithm {other:?}: expected sha256, blake3 or crc32"
                    )))
                }
            }
        }
        if algos == Algos::default() {
            return Err(Error::Invalid("no digest algorithm requested".into()));
        }
        Ok(algos)
    }
}

/// The digests of one byte stream, with its length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    pub sha256: Option<[u8; 32]>,
    pub blake3: Option<[u8; 32]>,
    pub crc32: Option<u32>,
}

/// Lowercase hex, as `sha256sum` prints it.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The sequential lane: sha256 and crc32.
#[derive(Clone, Default)]
struct SeqLane {
    sha256: Option<Sha256>,
    crc32: Option<crc32fast::Hasher>,
}

impl SeqLane {
    fn is_empty(&self) -> bool {
        self.sha256.is_none() && self.crc32.is_none()
    }

    fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.crc32 {
            h.update(data);
        }
    }
}

/// An incremental hasher: feed it bytes in any chunking, read the digests at any time.
#[derive(Clone)]
pub struct Hasher {
    size: u64,
    seq: SeqLane,
    blake3: Option<blake3::Hasher>,
}

impl Hasher {
    pub fn new(algos: Algos) -> Self {
        Hasher {
            size: 0,
            seq: SeqLane {
                sha256: algos.sha256.then(Sha256::new),
                crc32: algos.crc32.then(crc32fast::Hasher::new),
            },
            blake3: algos.blake3.then(blake3::Hasher::new),
        }
    }

    /// Hash `data` on the calling thread.
    pub fn update(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        self.seq.update(data);
        if let Some(h) = &mut self.blake3 {
            h.update(data);
        }
    }

    /// Hash `data`, using the pool when it is large enough to pay off.
    pub fn update_parallel(&mut self, data: &[u8], ctl: &Control) -> Result<()> {
        if (data.len() as u64) < PARALLEL_MIN {
            for piece in data.chunks(PIECE) {
                ctl.check()?;
                self.update(piece);
                ctl.advance(piece.len() as u64);
            }
            return Ok(());
        }
        let pool = pool()?;
        let size = &mut self.size;
        let seq = &mut self.seq;
        let b3 = &mut self.blake3;
        // Only one lane reports progress, so that bytes are not counted twice.
        let seq_reports = !seq.is_empty();
        let (a, b) = pool.install(|| {
            rayon::join(
                || {
                    for piece in data.chunks(PIECE) {
                        ctl.check()?;
                        seq.update(piece);
                        if seq_reports {
                            ctl.advance(piece.len() as u64);
                        }
                    }
                    Ok::<(), Error>(())
                },
                || {
                    if let Some(h) = b3 {
                        for piece in data.chunks(PIECE) {
                            ctl.check()?;
                            if seq_reports {
                                h.update(piece);
                            } else {
                                h.update_rayon(piece);
                                ctl.advance(piece.len() as u64);
                            }
                        }
                    }
                    Ok::<(), Error>(())
                },
            )
        });
        a?;
        b?;
        *size += data.len() as u64;
        Ok(())
    }

    pub fn finalize(&self) -> Digests {
        Digests {
            size: self.size,
            sha256: self.seq.sha256.clone().map(|h| h.finalize().into()),
            blake3: self.blake3.as_ref().map(|h| *h.finalize().as_bytes()),
            crc32: self.seq.crc32.clone().map(|h| h.finalize()),
        }
    }
}

/// Hash a buffer.
pub fn hash_bytes(data: &[u8], algos: Algos, ctl: &Control) -> Result<Digests> {
    let mut h = Hasher::new(algos);
    h.update_parallel(data, ctl)?;
    Ok(h.finalize())
}

/// How to read a file.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadMode {
    /// `Some(false)` never maps; `None` maps regular files of at least `PARALLEL_MIN` bytes.
    pub mmap: Option<bool>,
    /// Refuse symlinks (not followed) and anything but a regular file: for store objects,
    /// where a planted link or device must never be read as content.
    pub regular_only: bool,
    /// With `regular_only`, follow symlinks to a regular file instead of refusing them: for a
    /// user's source (an HF cache snapshot entry is a link), still never a FIFO or device.
    pub follow: bool,
}

impl ReadMode {
    fn open(&self) -> Open {
        match (self.regular_only, self.follow) {
            (false, _) => Open::Any,
            (true, true) => Open::Regular,
            (true, false) => Open::Object,
        }
    }
}

/// Hash one file in a single read pass.
pub fn hash_file(path: &Path, algos: Algos, mode: ReadMode, ctl: &Control) -> Result<Digests> {
    hash_file_split(path, algos, mode, 0, ctl)
}

/// `hash_file`, but a regular file smaller than `split_min` is read and hashed on the calling
/// thread alone, never spread over the pool (unless mapping is forced).
fn hash_file_split(
    path: &Path,
    algos: Algos,
    mode: ReadMode,
    split_min: u64,
    ctl: &Control,
) -> Result<Digests> {
    let (file, meta) = open_checked(path, mode.open())?;
    let size = meta.len();
    let regular = meta.file_type().is_file();
    if regular && size < split_min && mode.mmap != Some(true) {
        if size >= PARALLEL_MIN && mode.mmap.is_none() {
            return hash_mapped_here(&file, path, algos, ctl);
        }
        return hash_sequential(file, path, algos, size, ctl);
    }
    let map = mode.mmap.unwrap_or(size >= PARALLEL_MIN) && regular && size > 0;
    if map {
        // A file truncated meanwhile is an error, not a SIGBUS (`mapped.rs`).
        let mapped = Mapped::map(&file, path)?;
        let digests = hash_bytes(&mapped, algos, ctl)?;
        mapped.check()?;
        return Ok(digests);
    }
    if regular && size < PARALLEL_MIN {
        return hash_sequential(file, path, algos, size, ctl);
    }
    let digests = pipeline(file, path, Hasher::new(algos), None, ctl)?;
    Ok(digests)
}

/// Map a large file and hash it on the calling thread (the others hash other files).
///
/// Reading it instead would copy every byte from the page cache into a buffer first: over 40
/// files of 100 MiB, that copy was a third of `cas verify`'s CPU time (0.5 of 1.2 s, all of it
/// system time), where `b3sum`, which maps, spends 0.03 s.
fn hash_mapped_here(file: &File, path: &Path, algos: Algos, ctl: &Control) -> Result<Digests> {
    // A file truncated meanwhile is an error, not a SIGBUS (`mapped.rs`).
    let mapped = Mapped::map(file, path)?;
    let mut h = Hasher::new(algos);
    for piece in mapped.chunks(PIECE) {
        ctl.check()?;
        h.update(piece);
        ctl.advance(piece.len() as u64);
    }
    mapped.check()?;
    Ok(h.finalize())
}

/// Read and hash on the calling thread: the fast path for small files.
fn hash_sequential(
    mut file: File,
    path: &Path,
    algos: Algos,
    size_hint: u64,
    ctl: &Control,
) -> Result<Digests> {
    thread_local! {
        // One buffer per thread, reused from file to file: a fresh 1 MiB allocation per file
        // costs page faults and zeroing on every one of thousands of files.
        static BUF: std::cell::RefCell<Option<PageBuf>> = const { std::cell::RefCell::new(None) };
    }
    let cap = usize::try_from(size_hint.saturating_add(1))
        .unwrap_or(PIECE)
        .clamp(4096, 1 << 20);
    BUF.with_borrow_mut(|slot| {
        let buf = match slot {
            Some(buf) if buf.len() >= cap => buf,
            _ => slot.insert(PageBuf::new(cap)),
        };
        let buf = &mut buf[..cap];
        let mut h = Hasher::new(algos);
        loop {
            let n = read_full(&mut file, buf).at(path, "read")?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            ctl.advance(n as u64);
            ctl.check()?;
        }
        Ok(h.finalize())
    })
}

/// Hash many files in parallel across the pool. Results come back in input order; a failing
/// file yields its own error without affecting the others.
pub fn hash_files<P: AsRef<Path> + Sync>(
    paths: &[P],
    algos: Algos,
    mode: ReadMode,
    ctl: &Control,
) -> Result<Vec<Result<Digests>>> {
    let pool = pool()?;
    // While other files wait, each file is hashed by one thread (mapped when large, read into
    // a small buffer when small): no fan-out per file. The last files spread over the pool, so
    // no thread idles at the end.
    let threads = pool.current_num_threads();
    let waiting = std::sync::atomic::AtomicUsize::new(paths.len());
    let results: Vec<Result<Digests>> = pool.install(|| {
        paths
            .par_iter()
            .map(|p| {
                let others = waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) - 1;
                let split_min = if others >= threads { u64::MAX } else { 0 };
                hash_file_split(p.as_ref(), algos, mode, split_min, ctl)
            })
            .collect()
    });
    ctl.check()?;
    Ok(results)
}

/// Copy `src` to a new file `dst` while hashing it, reading `src` once. With `sync`, `dst` is
/// flushed to disk before this returns. `dst` must not exist; `src` must be a regular file
/// (symlinks to one are followed).
pub fn copy_file(
    src: &Path,
    dst: &Path,
    algos: Algos,
    sync: bool,
    ctl: &Control,
) -> Result<Digests> {
    let (file, _) = open_checked(src, Open::Regular)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .at(dst, "create")?;
    let sink = Writer::new(&mut out, dst, sync);
    let digests = pipeline(file, src, Hasher::new(algos), Some(sink), ctl)?;
    if sync {
        out.sync_all().at(dst, "sync")?;
    }
    Ok(digests)
}

/// A filled buffer shared by the lanes; it returns to the ring when the last lane drops it.
struct Chunk {
    data: Option<PageBuf>,
    len: usize,
    ring: SyncSender<Option<PageBuf>>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let _ = self.ring.try_send(self.data.take());
    }
}

enum Lane<'a> {
    Seq(SeqLane),
    Blake3(Box<blake3::Hasher>, Option<Arc<rayon::ThreadPool>>),
    Write(Writer<'a>),
}

/// The pipeline's output file, written at explicit offsets so that a refused direct write can
/// be redone in place.
///
/// A copy that must end up durable bypasses the page cache (`O_DIRECT`) where the filesystem
/// allows it: copying gigabytes into fresh page-cache pages costs more CPU than sha256 itself
/// (4 GiB `cas add` here: 5.2 s with 4.1 s of system time buffered, 2.x s direct), and the
/// data has to reach the disk before we return anyway. Elsewhere writeback of each window is
/// started as soon as the window is written, and the one before it is waited for, so the disk
/// works while we hash and the final fsync finds little left.
struct Writer<'a> {
    file: &'a mut File,
    path: &'a Path,
    durable: bool,
    direct: bool,
    written: u64,
    started: u64,
    waited: u64,
}

impl<'a> Writer<'a> {
    const WRITEBACK: u64 = 32 << 20;
    const ALIGN: usize = 4096;

    fn new(file: &'a mut File, path: &'a Path, durable: bool) -> Self {
        let mut w = Writer {
            file,
            path,
            durable,
            direct: false,
            written: 0,
            started: 0,
            waited: 0,
        };
        w.direct = durable && w.set_direct(true);
        w
    }

    /// Turn `O_DIRECT` on or off; false when the filesystem refuses.
    fn set_direct(&self, on: bool) -> bool {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        // SAFETY: plain fcntl calls on a descriptor we own, with no pointers.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            let wanted = if on {
                flags | libc::O_DIRECT
            } else {
                flags & !libc::O_DIRECT
            };
            flags >= 0 && libc::fcntl(fd, libc::F_SETFL, wanted) == 0
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if self.direct
            && (!data.len().is_multiple_of(Self::ALIGN)
                || !(data.as_ptr() as usize).is_multiple_of(Self::ALIGN))
        {
            // The unaligned tail goes through the page cache.
            self.direct = !self.set_direct(false);
        }
        let offset = self.written;
        match self.file.write_all_at(data, offset) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                self.direct = !self.set_direct(false);
                self.file.write_all_at(data, offset)
            }
            done => done,
        }
        .at(self.path, "write")?;
        self.written += data.len() as u64;
        if self.durable && !self.direct && self.written - self.started >= Self::WRITEBACK {
            // Errors are not lost: the fsync at the end reports them.
            sync_range(
                self.file,
                self.started,
                self.written,
                libc::SYNC_FILE_RANGE_WRITE,
            );
            sync_range(
                self.file,
                self.waited,
                self.started,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
            self.waited = self.started;
            self.started = self.written;
        }
        Ok(())
    }
}

impl Lane<'_> {
    fn consume(&mut self, data: &[u8]) -> Result<()> {
        match self {
            Lane::Seq(seq) => seq.update(data),
            Lane::Blake3(h, Some(pool)) => {
                pool.install(|| h.update_rayon(data));
            }
            Lane::Blake3(h, None) => {
                h.update(data);
            }
            Lane::Write(w) => w.write(data)?,
        }
        Ok(())
    }
}

/// One reader thread feeds every lane (sha256+crc32, blake3, and an optional writer), each on
/// its own thread, through a ring of `RING` buffers: peak memory stays at `RING * PIECE`.
fn pipeline<'a>(
    mut src: File,
    src_path: &Path,
    hasher: Hasher,
    sink: Option<Writer<'a>>,
    ctl: &Control,
) -> Result<Digests> {
    let Hasher {
        seq, blake3: b3, ..
    } = hasher;
    let mut lanes: Vec<Lane<'a>> = Vec::new();
    let seq_present = !seq.is_empty();
    if seq_present {
        lanes.push(Lane::Seq(seq));
    }
    if let Some(h) = b3 {
        // blake3 gets the whole pool only when it has no sha256 lane to share the cores with,
        // and only when this is not itself a pool thread (`hash_files`): its workers wait here
        // on channels, not on rayon, so work handed to the pool would wait for them forever.
        let nested = rayon::current_thread_index().is_some();
        let pool = if seq_present || nested {
            None
        } else {
            Some(pool()?)
        };
        lanes.push(Lane::Blake3(Box::new(h), pool));
    }
    if let Some(writer) = sink {
        lanes.push(Lane::Write(writer));
    }

    // Buffers are allocated on first use, so a short input never allocates the whole ring.
    let (ring_tx, ring_rx) = sync_channel::<Option<PageBuf>>(RING);
    for _ in 0..RING {
        let _ = ring_tx.try_send(None);
    }

    let (total, lanes) = std::thread::scope(|s| -> Result<(u64, Vec<Lane<'a>>)> {
        let mut senders: Vec<SyncSender<Arc<Chunk>>> = Vec::new();
        let mut handles = Vec::new();
        for mut lane in lanes {
            let (tx, rx): (SyncSender<Arc<Chunk>>, Receiver<Arc<Chunk>>) = sync_channel(RING);
            senders.push(tx);
            handles.push(s.spawn(move || -> Result<Lane<'a>> {
                for chunk in rx {
                    ctl.check()?;
                    lane.consume(chunk.data.as_deref().map_or(&[], |d| &d[..chunk.len]))?;
                }
                Ok(lane)
            }));
        }

        let read_result = (|| -> Result<u64> {
            let mut total = 0u64;
            loop {
                ctl.check()?;
                let Ok(slot) = ring_rx.recv() else {
                    return Ok(total);
                };
                let mut buf = slot.unwrap_or_else(|| PageBuf::new(PIECE));
                let n = read_full(&mut src, &mut buf).at(src_path, "read")?;
                if n == 0 {
                    return Ok(total);
                }
                total += n as u64;
                let chunk = Arc::new(Chunk {
                    data: Some(buf),
                    len: n,
                    ring: ring_tx.clone(),
                });
                for tx in &senders {
                    // A lane that stopped early reports its own error below.
                    if tx.send(Arc::clone(&chunk)).is_err() {
                        return Ok(total);
                    }
                }
                drop(chunk);
                ctl.advance(n as u64);
            }
        })();
        drop(senders);

        let mut finished = Vec::new();
        let mut lane_error = None;
        for h in handles {
            match h.join() {
                Ok(Ok(lane)) => finished.push(lane),
                Ok(Err(e)) => {
                    lane_error.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        if let Some(e) = lane_error {
            return Err(e);
        }
        Ok((read_result?, finished))
    })?;
    ctl.check()?;

    let mut h = Hasher::new(Algos::default());
    h.size = total;
    for lane in lanes {
        match lane {
            Lane::Seq(seq) => h.seq = seq,
            Lane::Blake3(b3, _) => h.blake3 = Some(*b3),
            Lane::Write(_) => {}
        }
    }
    Ok(h.finalize())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use std::io::{self, Write};

    fn reference(data: &[u8]) -> Digests {
        let mut h = Hasher::new(Algos {
            sha256: true,
            blake3: true,
            crc32: true,
        });
        for b in data.chunks(1) {
            h.update(b);
        }
        h.finalize()
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn known_vectors() {
        let d = hash_bytes(b"abc", Algos::SHA256_BLAKE3, &Control::default()).unwrap();
        assert_eq!(
            hex(&d.sha256.unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&d.blake3.unwrap()),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(d.size, 3);
    }

    #[test]
    fn parse_rejects_unknown_and_empty() {
        assert!(Algos::parse(["md5"]).is_err());
        assert!(Algos::parse([]).is_err());
        assert_eq!(
            Algos::parse(["sha256", "blake3"]).unwrap(),
            Algos::SHA256_BLAKE3
        );
    }

    #[test]
    fn every_path_agrees() {
        let all = Algos {
            sha256: true,
            blake3: true,
            crc32: true,
        };
        let data: Vec<u8> = (0..(PARALLEL_MIN as usize + PIECE + 12345))
            .map(|i| u8::try_from(i * 31 % 251).unwrap())
            .collect();
        let want = reference(&data[..5000]);
        let dir = std::env::temp_dir().join(format!("modelcas-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small");
        std::fs::File::create(&small)
            .unwrap()
            .write_all(&data[..5000])
            .unwrap();
        let ctl = Control::default();
        assert_eq!(
            hash_file(&small, all, ReadMode::default(), &ctl).unwrap(),
            want
        );

        let big = dir.join("big");
        std::fs::File::create(&big)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let want = hash_bytes(&data, all, &ctl).unwrap();
        let mut seq = Hasher::new(all);
        seq.update(&data);
        assert_eq!(seq.finalize(), want);
        for mmap in [Some(true), Some(false)] {
            assert_eq!(
                hash_file(
                    &big,
                    all,
                    ReadMode {
                        mmap,
                        regular_only: false,
                        follow: false,
                    },
                    &ctl
                )
                .unwrap(),
                want
            );
        }
        for algos in [
            Algos {
                sha256: false,
                blake3: true,
                crc32: false,
            },
            Algos {
                sha256: true,
                blake3: false,
                crc32: false,
            },
        ] {
            let one = hash_file(
                &big,
                algos,
                ReadMode {
                    mmap: Some(false),
                    regular_only: false,
                    follow: false,
                },
                &ctl,
            )
            .unwrap();
            assert_eq!(one.sha256.is_some(), algos.sha256);
            assert_eq!(one.blake3.is_some(), algos.blake3);
            assert!(one.sha256 == want.sha256 || one.blake3 == want.blake3);
        }

        let copy = dir.join("copy");
        let got = copy_file(&big, &copy, all, true, &ctl).unwrap();
        assert_eq!(got, want);
        assert_eq!(std::fs::read(&copy).unwrap(), data);
        assert!(
            copy_file(&big, &copy, all, true, &ctl).is_err(),
            "dst exists"
        );

        let many = hash_files(
            &[&small, &dir.join("missing"), &big],
            all,
            ReadMode::default(),
            &ctl,
        )
        .unwrap();
        assert!(many[0].is_ok() && many[2].is_ok());
        assert!(matches!(&many[1], Err(Error::Io { path, .. }) if path.ends_with("missing")));
        // Several large files read with bounded buffers (`cas hash --no-mmap`), blake3 alone:
        // the last ones go through the reader pipeline on pool threads. This used to deadlock
        // (the blake3 lane handed work to the pool whose threads were all waiting on it).
        let (tx, rx) = std::sync::mpsc::channel();
        let (two, want_b3) = (vec![big.clone(), big.clone()], want.blake3);
        std::thread::spawn(move || {
            let b3 = Algos {
                sha256: false,
                blake3: true,
                crc32: false,
            };
            let mode = ReadMode {
                mmap: Some(false),
                regular_only: false,
                follow: false,
            };
            let got = hash_files(&two, b3, mode, &Control::default()).unwrap();
            let _ = tx.send(
                got.into_iter()
                    .map(|r| r.unwrap().blake3)
                    .collect::<Vec<_>>(),
            );
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("hash_files of large files with mmap off finished (no deadlock)");
        assert_eq!(got, vec![want_b3; 2]);
        // More large files than threads: each but the last few is mapped and hashed by one
        // thread alone.
        let bigs = vec![&big; pool().unwrap().current_num_threads() + 2];
        for got in hash_files(&bigs, all, ReadMode::default(), &ctl).unwrap() {
            assert_eq!(got.unwrap(), want);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cancelled_work_stops() {
        let ctl = Control::default();
        ctl.cancel();
        let data = vec![0u8; PARALLEL_MIN as usize];
        assert!(matches!(
            hash_bytes(&data, Algos::SHA256_BLAKE3, &ctl),
            Err(Error::Cancelled)
        ));
    }

    #[test]
    fn directory_is_refused() {
        let err = hash_file(
            &std::env::temp_dir(),
            Algos::SHA256_BLAKE3,
            ReadMode::default(),
            &Control::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::IsADirectory)
        );
    }

    #[test]
    fn sources_never_hang_on_a_fifo_and_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a plain syscall with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let ctl = Control::default();
        // No writer ever opens the FIFO: a blocking open would hang here.
        let copied = copy_file(
            &fifo,
            &dir.path().join("out"),
            Algos::SHA256_BLAKE3,
            false,
            &ctl,
        );
        assert!(copied.is_err());
        let source = ReadMode {
            mmap: Some(false),
            regular_only: true,
            follow: true,
        };
        assert!(hash_file(&fifo, Algos::SHA256_BLAKE3, source, &ctl).is_err());
        let file = dir.path().join("file");
        std::fs::write(&file, b"abc").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let got = hash_file(&link, Algos::SHA256_BLAKE3, source, &ctl).unwrap();
        let want = reference(b"abc");
        assert_eq!((got.sha256, got.blake3), (want.sha256, want.blake3));
        let object = ReadMode {
            follow: false,
            ..source
        };
        assert!(hash_file(&link, Algos::SHA256_BLAKE3, object, &ctl).is_err());
    }
}

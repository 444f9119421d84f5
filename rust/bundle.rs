//! Zip bundles: a deterministic streaming writer, and a strict reader for untrusted archives.
//!
//! Writer: members go out in the caller's order, each read once while sha256, blake3 and crc32
//! are computed. The member being written goes straight into the output and its local header is
//! patched afterwards: the output is a regular file, so no data descriptors are needed, and
//! every tool can read the result. Meanwhile the next small compressed members are compressed
//! ahead on the pool into spools (memory, spilling to an unnamed temporary file); large ones
//! are compressed straight into the archive, in parallel pieces or by zstd's workers. A second
//! thread follows the writer and hashes the archive itself (for the `.sha256` sidecar) as soon
//! as each member's bytes are final, so the sidecar costs no read after the write; it also
//! hashes each stored member, side by side with the archive, and records the archive's
//! midstates for the manifest.
//!
//! Reader: the whole layout is validated when the archive is opened, before a byte is
//! extracted. Every byte of the file must belong to exactly one record: no gaps, no overlap, no
//! trailing data. Member data is then streamed, with the limits applied to the bytes actually
//! produced and the crc32 checked at the end.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;
use unicode_normalization::UnicodeNormalization;

use crate::control::{pool, Control};
use crate::error::{Error, IoContext, Result};
use crate::hash::{hex, read_full, sync_range, Algos, Digests, Hasher, PageBuf};
use crate::sha256::{state_bytes, Sha256};
use crate::zipfmt::*;

/// Bytes per piece moved through `pump`: big enough for fast I/O, small enough to cancel fast.
/// Tests use small sizes throughout, so that every path (several pieces, spills) runs quickly.
const PIECE: usize = if cfg!(test) { 64 << 10 } else { 4 << 20 };
/// Below this, `pump` does everything on the calling thread.
const SMALL: usize = if cfg!(test) { 8 << 10 } else { 256 << 10 };
/// Deflate compresses independent pieces of this size in parallel, each primed with the 32 KiB
/// before it (as pigz does). Fixed, so the output does not depend on the number of cores.
const DEFLATE_CHUNK: usize = if cfg!(test) { 16 << 10 } else { 1 << 20 };
const DEFLATE_WINDOW: usize = 32 << 10;
/// A spool keeps this much compressed data in memory before it spills to a temporary file.
const SPOOL_MEM: usize = if cfg!(test) { 64 << 10 } else { 4 << 20 };
/// Members at least this large use zstd's own worker threads.
const ZSTD_MT_MIN: u64 = if cfg!(test) { 256 << 10 } else { 8 << 20 };
/// zstd worker threads per large member. Fixed: with one worker or more the output is the same
/// for any count, but keeping it fixed keeps the resource use predictable.
const ZSTD_WORKERS: u32 = 4;
/// A skippable zstd frame (magic 0x184D2A50) with no content.
const ZSTD_SKIPPABLE_END: [u8; 8] = [0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0];
/// Unix file types and bits in the high half of the external attributes.
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
/// Host bytes of "version made by" whose external attributes hold a Unix mode.
const HOST_UNIX: u16 = 3;
const HOST_OSX: u16 = 19;

// ---------------------------------------------------------------------------------------------
// Shared: methods and names
// ---------------------------------------------------------------------------------------------

/// How a member's data is stored in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    Stored,
    Deflate,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Stored => "stored",
            Compression::Deflate => "deflate",
            Compression::Zstd => "zstd",
        }
    }

    pub fn zip_method(self) -> u16 {
        match self {
            Compression::Stored => METHOD_STORED,
            Compression::Deflate => METHOD_DEFLATE,
            Compression::Zstd => METHOD_ZSTD,
        }
    }

    fn version_needed(self) -> u16 {
        match self {
            Compression::Stored => VERSION_STORED,
            Compression::Deflate => VERSION_DEFLATE,
            Compression::Zstd => VERSION_ZSTD,
        }
    }
}

/// How the writer compresses a member, with its level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    #[default]
    Stored,
    /// Level 0 (no compression) to 9.
    Deflate { level: u32 },
    /// Level 1 to 22.
    Zstd { level: i32 },
}

impl Method {
    pub const DEFAULT_DEFLATE_LEVEL: u32 = 6;
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

    /// Parse `"stored"`, `"deflate"` or `"zstd"`, with an optional level.
    pub fn parse(name: &str, level: Option<i32>) -> Result<Method> {
        let method = match (name, level) {
            ("stored", None) => Method::Stored,
            ("stored", Some(_)) => {
                return Err(Error::Invalid(
                    "the stored method takes no compression level".into(),
                ))
            }
            ("deflate", level) => Method::Deflate {
                level: match level {
                    None => Self::DEFAULT_DEFLATE_LEVEL,
                    Some(l) => u32::try_from(l).unwrap_or(u32::MAX),
                },
            },
            ("zstd", level) => Method::Zstd {
                level: level.unwrap_or(Self::DEFAULT_ZSTD_LEVEL),
            },
            (other, _) => {
                return Err(Error::Invalid(format!(
                    "unknown compression method {other:?}: expected stored, deflate or zstd"
                )))
            }
        };
        method.validate()?;
        Ok(method)
    }

    pub fn compression(self) -> Compression {
        match self {
            Method::Stored => Compression::Stored,
            Method::Deflate { .. } => Compression::Deflate,
            Method::Zstd { .. } => Compression::Zstd,
        }
    }

    fn validate(self) -> Result<()> {
        match self {
            Method::Deflate { level } if level > 9 => Err(Error::Invalid(format!(
                "deflate level {level} is out of range: expected 0 to 9"
            ))),
            Method::Zstd { level } if !(1..=22).contains(&level) => Err(Error::Invalid(format!(
                "zstd level {level} is out of range: expected 1 to 22"
            ))),
            _ => Ok(()),
        }
    }
}

/// A name quoted for a message, with control characters and quotes escaped.
fn quote(name: &str) -> String {
    format!("'{}'", name.escape_debug())
}

/// Why `name` is not a safe member name, if it is not. Directory names end with `/`.
pub fn check_name(name: &str, max_len: usize) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > max_len {
        return Err(format!(
            "name is {} bytes long, over the limit of {max_len}",
            name.len()
        ));
    }
    if name.contains('\0') {
        return Err("name contains a NUL byte".into());
    }
    if name.contains('\\') {
        return Err("name contains a backslash (a Windows path separator)".into());
    }
    if name.chars().any(char::is_control) {
        return Err("name contains a control character".into());
    }
    if name.starts_with('/') {
        return Err("name is an absolute path".into());
    }
    let body = name.strip_suffix('/').unwrap_or(name);
    for part in body.split('/') {
        let b = part.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            return Err(format!(
                "name contains a drive letter ({:?})",
                &part[..2.min(part.len())]
            ));
        }
        match part {
            "" => return Err("name has an empty path component ('//')".into()),
            "." => return Err("name contains a '.' component".into()),
            ".." => return Err("name escapes the bundle (contains '..')".into()),
            _ => {}
        }
    }
    Ok(())
}

/// The key two names collide on when extracted to a case-insensitive or normalising file system.
fn fold(name: &str) -> String {
    let composed: String = name.nfc().collect();
    composed.to_uppercase().to_lowercase().nfc().collect()
}

/// Records names and refuses duplicates, case-folded duplicates, and a file used as a directory.
#[derive(Default)]
struct NameSet {
    /// Folded name (without a trailing `/`) to (name, is_dir).
    seen: HashMap<String, (String, bool)>,
}

impl NameSet {
    fn insert(&mut self, name: &str, is_dir: bool) -> std::result::Result<(), String> {
        let key = fold(name.strip_suffix('/').unwrap_or(name));
        if let Some((other, _)) = self.seen.get(&key) {
            return Err(if other == name {
                "duplicate name".into()
            } else {
                format!(
                    "name collides with {} (they differ only in case, Unicode form or a trailing '/')",
                    quote(other)
                )
            });
        }
        self.seen.insert(key, (name.to_string(), is_dir));
        Ok(())
    }

    /// Called once every name is in: refuses `a/b` when `a` is a file.
    fn check_parents(&self) -> std::result::Result<(), (String, String)> {
        for (key, (name, _)) in &self.seen {
            let mut end = 0;
            while let Some(i) = key[end..].find('/') {
                let parent = &key[..end + i];
                if let Some((pname, false)) = self.seen.get(parent) {
                    return Err((
                        name.clone(),
                        format!("its parent {} is a file, not a directory", quote(pname)),
                    ));
                }
                end += i + 1;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Shared: the pump that reads, hashes and consumes in parallel
// ---------------------------------------------------------------------------------------------

/// Fills the whole buffer unless the input ends; returns the bytes filled (0 at the end).
type Fill<'a> = dyn FnMut(&mut [u8]) -> Result<usize> + Send + 'a;
/// Takes each piece in order; `true` marks the last one (possibly empty).
type Sink<'a> = dyn FnMut(&[u8], bool) -> Result<()> + Send + 'a;

/// sha256 (when wanted) + crc32 on one lane, blake3 on the other.
struct Lanes {
    seq: Hasher,
    b3: Hasher,
}

impl Lanes {
    fn new(sha256: bool) -> Self {
        Lanes {
            seq: Hasher::new(Algos {
                sha256,
                blake3: false,
                crc32: true,
            }),
            b3: Hasher::new(Algos {
                sha256: false,
                blake3: true,
                crc32: false,
            }),
        }
    }

    /// Call inside the pool: both lanes run at once.
    fn update(&mut self, data: &[u8]) {
        let (seq, b3) = (&mut self.seq, &mut self.b3);
        rayon::join(|| seq.update(data), || b3.update(data));
    }

    fn finish(&self) -> Digests {
        let seq = self.seq.finalize();
        Digests {
            size: seq.size,
            sha256: seq.sha256,
            blake3: self.b3.finalize().blake3,
            crc32: seq.crc32,
        }
    }
}

/// Move a stream from `fill` to `sink` in pieces, hashing each piece on the way. While a piece is
/// hashed and consumed, the next one is being filled. Inputs smaller than `piece` stay on the
/// calling thread.
fn pump(
    sha256: bool,
    size_hint: u64,
    piece: usize,
    fill: &mut Fill<'_>,
    sink: &mut Sink<'_>,
    ctl: &Control,
) -> Result<Digests> {
    let mut lanes = Lanes::new(sha256);
    ctl.check()?;
    let first = usize::try_from(size_hint.saturating_add(1))
        .unwrap_or(piece)
        .clamp(4096, piece.max(4096));
    let mut cur = PageBuf::new(first);
    let mut n = fill(&mut cur)?;
    if n < cur.len() && n < SMALL {
        // Small inputs (most bundles hold a few) stay on this thread: handing them over costs
        // more than it saves.
        let data = cur.get(..n).unwrap_or_default();
        lanes.seq.update(data);
        lanes.b3.update(data);
        sink(data, true)?;
        ctl.advance(n as u64);
        return Ok(lanes.finish());
    }
    let mut next = PageBuf::new(piece.max(4096));
    pool()?.install(|| -> Result<()> {
        loop {
            ctl.check()?;
            let last = n < cur.len();
            let data = cur.get(..n).unwrap_or_default();
            if last {
                let (sunk, ()) = rayon::join(|| sink(data, true), || lanes.update(data));
                sunk?;
                ctl.advance(n as u64);
                return Ok(());
            }
            let (got, sunk) = rayon::join(
                || fill(&mut next),
                || {
                    let (sunk, ()) = rayon::join(|| sink(data, false), || lanes.update(data));
                    sunk
                },
            );
            sunk?;
            ctl.advance(n as u64);
            n = got?;
            std::mem::swap(&mut cur, &mut next);
        }
    })?;
    Ok(lanes.finish())
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, buf, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Flush a directory entry to disk after a rename into it.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).at(dir, "sync")?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A temporary file next to `dest`, with the mode a new file would get.
fn temp_beside(dest: &Path, mode: u32) -> Result<(tempfile::NamedTempFile, PathBuf)> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} has no file name", dest.display())))?;
    let mut b = tempfile::Builder::new();
    let prefix = format!(".{}.", name.to_string_lossy());
    b.prefix(&prefix).suffix(".partial");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let tmp = b.tempfile_in(&dir).at(&dir, "create a temporary file in")?;
    Ok((tmp, dir))
}

/// Rename a finished temporary file into place and make the rename durable.
fn persist(tmp: tempfile::NamedTempFile, dest: &Path, dir: &Path, overwrite: bool) -> Result<()> {
    tmp.as_file().sync_all().at(tmp.path(), "sync")?;
    let done = if overwrite {
        tmp.persist(dest).map(drop)
    } else {
        tmp.persist_noclobber(dest).map(drop)
    };
    // On failure the temporary file comes back inside the error and is removed when it drops.
    done.map_err(|e| Error::io(dest, "rename into", e.error))?;
    sync_dir(dir)
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// Where a member's bytes come from.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// One member to write.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// The name inside the archive: relative, `/`-separated, no `..`.
    pub name: String,
    pub source: Source,
    /// Overrides `WriteOptions::method` for this member.
    pub method: Option<Method>,
}

/// An MS-DOS date and time, as zip stores them (two-second resolution, local time, 1980-2107).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DosTime {
    pub date: u16,
    pub time: u16,
}

impl DosTime {
    /// 1980-01-01 00:00:00, the earliest time zip can store.
    pub const EPOCH: DosTime = DosTime {
        date: 1 << 5 | 1,
        time: 0,
    };

    /// The DOS time of a Unix timestamp (such as `SOURCE_DATE_EPOCH`), taken as UTC and clamped
    /// to the range zip can store.
    pub fn from_unix(secs: i64) -> DosTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        if year < 1980 {
            return DosTime::EPOCH;
        }
        if year > 2107 {
            return DosTime {
                date: 127 << 9 | 12 << 5 | 31,
                time: 23 << 11 | 59 << 5 | 29,
            };
        }
        let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
        DosTime {
            date: ((year - 1980) as u16) << 9 | (month as u16) << 5 | day as u16,
            time: (h as u16) << 11 | (m as u16) << 5 | (s / 2) as u16,
        }
    }
}

impl Default for DosTime {
    fn default() -> Self {
        DosTime::EPOCH
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// The method for members that do not name their own.
    pub method: Method,
    /// The timestamp of every member.
    pub mtime: DosTime,
    /// Replace an existing file at the output path; otherwise that is an error.
    pub overwrite: bool,
    /// Write ZIP64 records even where they are not needed (for testing readers).
    pub force_zip64: bool,
    /// When set, a last member with this name lists every other member's size, crc32, sha256
    /// and blake3 as JSON (see `manifest_json`), computed while they were written, so the
    /// bundle verifies itself without a second read of its inputs.
    pub manifest: Option<String>,
}

/// What `write_bundle` wrote: every member, and the sha256 of the whole archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub members: Vec<MemberReport>,
    pub sha256: [u8; 32],
}

/// What was written for one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberReport {
    pub name: String,
    pub method: Compression,
    /// Offset of the member's local header in the archive.
    pub offset: u64,
    pub size: u64,
    pub compressed_size: u64,
    pub crc32: u32,
    pub sha256: [u8; 32],
    pub blake3: [u8; 32],
}

impl MemberReport {
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    pub fn blake3_hex(&self) -> String {
        hex(&self.blake3)
    }
}

/// Write a zip archive of `members`, in that order, to `out_path`.
///
/// The archive is built in a temporary file beside `out_path` and renamed into place once it is
/// complete and flushed to disk; on error or cancellation the temporary file is removed and
/// `out_path` is untouched. The same inputs and options always give the same bytes.
pub fn write_bundle(
    out_path: &Path,
    members: &[MemberSpec],
    opts: &WriteOptions,
    ctl: &Control,
) -> Result<Written> {
    opts.method.validate()?;
    let mut names = NameSet::default();
    for m in members {
        let bad = |why: String| Error::Invalid(format!("member {}: {why}", quote(&m.name)));
        if let Some(method) = m.method {
            method.validate()?;
        }
        check_name(&m.name, Limits::default().max_name_len).map_err(bad)?;
        if m.name.ends_with('/') {
            return Err(bad(
                "name ends with '/': members are files; directories are implied".into(),
            ));
        }
        names.insert(&m.name, false).map_err(bad)?;
    }
    names
        .check_parents()
        .map_err(|(name, why)| Error::Invalid(format!("member {}: {why}", quote(&name))))?;

    let (tmp, dir) = temp_beside(out_path, 0o666)?;
    let written = {
        let mut out = ZipOut {
            file: tmp.as_file(),
            buf: BufWriter::with_capacity(1 << 20, tmp.as_file()),
            path: tmp.path(),
            pos: 0,
            central: Vec::with_capacity(members.len().min(1 << 16)),
            mtime: opts.mtime,
            force_zip64: opts.force_zip64,
            trailer: Trailer::start(tmp.as_file(), tmp.path())?,
        };
        let mut reports = write_members(&mut out, members, opts, &dir, ctl)?;
        if let Some(name) = &opts.manifest {
            let hashed = out.trailer.report()?;
            fill_stored(&mut reports, &hashed.stored)?;
            let spec = MemberSpec {
                name: name.clone(),
                source: Source::Bytes(manifest_json(&reports, &hashed.midstates).into_bytes()),
                method: Some(Method::Stored),
            };
            reports.extend(write_members(&mut out, &[spec], opts, &dir, ctl)?);
        }
        let hashed = out.finish()?;
        fill_stored(&mut reports, &hashed.stored)?;
        Written {
            sha256: hashed.archive,
            members: reports,
        }
    };
    ctl.check()?;
    persist(tmp, out_path, &dir, opts.overwrite)?;
    Ok(written)
}

/// Hashes the archive being written, on its own thread, following the writer: a range is
/// handed over once its bytes are final (a member's local header is patched after its data),
/// and is read back from the page cache while the next member is written. A stored member's
/// sha256 is computed here too, side by side with the archive's (its bytes are the same), which
/// costs much less than a second stream on the writer. Writeback of each hashed range starts at
/// once, so the final fsync finds little left.
struct Trailer {
    tx: Option<Sender<ToTrailer>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Hashed>>>,
}

enum ToTrailer {
    /// Bytes before `upto` are final; `stored` is the data of a stored member among them.
    Final {
        upto: u64,
        stored: Option<Range<u64>>,
    },
    /// Send back what is hashed so far.
    Report(Sender<Hashed>),
}

/// What the trailer computed: the archive's sha256 (all zero until it finishes), its midstates,
/// and each stored member's sha256, in archive order.
#[derive(Clone, Default)]
struct Hashed {
    archive: [u8; 32],
    midstates: Midstates,
    stored: Vec<[u8; 32]>,
}

/// The archive's sha256 state after every `step` bytes: `states[i]` after `(i + 1) * step`.
/// The manifest carries them so that a reader can check the sidecar in parallel segments (see
/// `hash::sha256_chained`). At most `MIDSTATES_MAX` are kept: past that, every other one is
/// dropped and the step doubles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Midstates {
    pub step: u64,
    pub states: Vec<[u32; 8]>,
}

const MIDSTATES_MAX: usize = if cfg!(test) { 8 } else { 1024 };
/// The first step between midstates: segments big enough to stream well.
const MIDSTATE_STEP: u64 = if cfg!(test) { 4 << 10 } else { 16 << 20 };

impl Default for Midstates {
    fn default() -> Self {
        Midstates {
            step: MIDSTATE_STEP,
            states: Vec::new(),
        }
    }
}

impl Midstates {
    /// The next offset at which a state is taken.
    fn next(&self) -> u64 {
        (self.states.len() as u64 + 1) * self.step
    }

    fn push(&mut self, state: [u32; 8]) {
        self.states.push(state);
        if self.states.len() == MIDSTATES_MAX {
            self.states = self.states.iter().skip(1).step_by(2).copied().collect();
            self.step *= 2;
        }
    }
}

impl Trailer {
    fn start(file: &File, path: &Path) -> Result<Self> {
        let file = file.try_clone().at(path, "open")?;
        let owned = path.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let (tx, rx) = channel::<ToTrailer>();
        let handle = std::thread::Builder::new()
            .name("modelcas-sidecar".into())
            .spawn(move || {
                let mut archive = Sha256::new();
                let mut hashed = Hashed::default();
                let mut buf = PageBuf::new(PIECE);
                let mut done = 0u64;
                for msg in rx {
                    let (upto, member) = match msg {
                        ToTrailer::Final { upto, stored } => (upto, stored),
                        ToTrailer::Report(reply) => {
                            let _ = reply.send(hashed.clone());
                            continue;
                        }
                    };
                    let from = done;
                    let mut m = Sha256::new();
                    while done < upto && !stopped.load(Ordering::Relaxed) {
                        let want =
                            usize::try_from(upto - done).map_or(buf.len(), |n| n.min(buf.len()));
                        let n = read_at(&file, &mut buf[..want], done).at(&owned, "read back")?;
                        if n == 0 {
                            return Err(Error::io(
                                &owned,
                                "read back",
                                io::Error::from(io::ErrorKind::UnexpectedEof),
                            ));
                        }
                        // Cut where a midstate is due, so it is taken at that exact offset.
                        let mut chunk = &buf[..n];
                        while !chunk.is_empty() {
                            let due = hashed.midstates.next();
                            let cut = usize::try_from(due - done)
                                .map_or(chunk.len(), |k| k.min(chunk.len()));
                            let (now, rest) = chunk.split_at(cut);
                            let end = done + now.len() as u64;
                            match &member {
                                Some(r) if r.start < end && done < r.end => {
                                    let lo = (r.start.max(done) - done) as usize;
                                    let hi = (r.end.min(end) - done) as usize;
                                    Sha256::update_pair(&mut archive, now, &mut m, &now[lo..hi]);
                                }
                                _ => archive.update(now),
                            }
                            done = end;
                            if done == due {
                                let state = archive.midstate().ok_or_else(|| {
                                    Error::Invalid("a midstate fell inside a block".into())
                                })?;
                                hashed.midstates.push(state);
                            }
                            chunk = rest;
                        }
                    }
                    if member.is_some() {
                        hashed.stored.push(m.finalize());
                    }
                    sync_range(&file, from, done, libc::SYNC_FILE_RANGE_WRITE);
                }
                hashed.archive = archive.finalize();
                Ok(hashed)
            })
            .at(path, "start a thread for")?;
        Ok(Trailer {
            tx: Some(tx),
            stop,
            handle: Some(handle),
        })
    }

    /// Bytes before `upto` are final and flushed; `stored` is a stored member's data in them.
    fn advance(&self, upto: u64, stored: Option<Range<u64>>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ToTrailer::Final { upto, stored });
        }
    }

    /// Everything handed over so far, once it is hashed.
    fn report(&mut self) -> Result<Hashed> {
        let (reply, answer) = channel();
        if let Some(tx) = &self.tx {
            let _ = tx.send(ToTrailer::Report(reply));
        }
        match answer.recv() {
            Ok(hashed) => Ok(hashed),
            // The thread stopped early: its error says why.
            Err(_) => self.join(),
        }
    }

    fn finish(mut self, end: u64) -> Result<Hashed> {
        self.advance(end, None);
        self.join()
    }

    fn join(&mut self) -> Result<Hashed> {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(Error::Invalid("the sidecar hasher is gone".into())),
        }
    }
}

impl Drop for Trailer {
    fn drop(&mut self) {
        // On error or cancellation: stop reading and wait, so no thread outlives the write.
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Put the trailer's sha256 of each stored member into its report.
fn fill_stored(reports: &mut [MemberReport], sums: &[[u8; 32]]) -> Result<()> {
    let mut sums = sums.iter();
    for r in reports
        .iter_mut()
        .filter(|r| r.method == Compression::Stored)
    {
        r.sha256 = *sums
            .next()
            .ok_or_else(|| Error::Invalid("a stored member was not hashed".into()))?;
    }
    Ok(())
}

/// The manifest: `{"members": {NAME: {"blake3", "crc32", "sha256", "size"}},
/// "sha256_midstates": {"states": [HEX, ...], "step": N}, "version": 1}`, members in archive
/// order, keys sorted, no whitespace: the same reports give the same bytes.
pub fn manifest_json(reports: &[MemberReport], midstates: &Midstates) -> String {
    let mut out = String::from("{\"members\":{");
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&mut out, &r.name);
        out.push_str(&format!(
            ":{{\"blake3\":\"{}\",\"crc32\":{},\"sha256\":\"{}\",\"size\":{}}}",
            r.blake3_hex(),
            r.crc32,
            r.sha256_hex(),
            r.size
        ));
    }
    out.push_str("},\"sha256_midstates\":{\"states\":[");
    for (i, state) in midstates.states.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("\"{}\"", hex(&state_bytes(state))));
    }
    out.push_str(&format!("],\"step\":{}}},\"version\":1}}", midstates.step));
    out
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A member compressed ahead of its turn.
struct Packed {
    digests: Digests,
    data: Spool,
}

fn write_members(
    out: &mut ZipOut<'_>,
    members: &[MemberSpec],
    opts: &WriteOptions,
    dir: &Path,
    ctl: &Control,
) -> Result<Vec<MemberReport>> {
    let pool = pool()?;
    let threads = pool.current_num_threads().max(1);
    // Members compressed ahead at most; each holds at most two pieces and a spool in memory.
    let window = threads.clamp(2, 8);
    let stop = AtomicBool::new(false);
    let method_of = |i: usize| members[i].method.unwrap_or(opts.method);
    pool.in_place_scope(|scope| {
        let result = (|| {
            let mut ahead = VecDeque::new();
            let mut next = 0;
            let mut reports = Vec::with_capacity(members.len());
            for (i, spec) in members.iter().enumerate() {
                ctl.check()?;
                // Later compressed members go to the pool; this one is written here, straight
                // into the output, unless it was sent ahead already.
                next = next.max(i + 1);
                while ahead.len() < window && next < members.len() {
                    let j = next;
                    next += 1;
                    let method = method_of(j);
                    if method == Method::Stored || !packs_ahead(&members[j]) {
                        continue;
                    }
                    let (tx, rx) = channel();
                    let (spec, stop) = (&members[j], &stop);
                    scope.spawn(move |_| {
                        let _ = tx.send(pack(spec, method, dir, threads, ctl, stop));
                    });
                    ahead.push_back((j, rx));
                }
                let method = method_of(i);
                let report = match ahead.front() {
                    Some((j, _)) if *j == i => {
                        let packed = match ahead.pop_front() {
                            Some((_, rx)) => rx.recv().map_err(|_| {
                                Error::Invalid("a compression worker stopped early".into())
                            })??,
                            None => return Err(Error::Invalid("compression queue empty".into())),
                        };
                        out.packed(&spec.name, method.compression(), packed)?
                    }
                    _ if method == Method::Stored => out.stored(spec, ctl)?,
                    _ => out.compressed(spec, method, threads, ctl, &stop)?,
                };
                reports.push(report);
            }
            Ok(reports)
        })();
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        result
    })
}

/// Whether a member is small enough to compress ahead into a spool. Larger ones are compressed
/// straight into the archive with zstd's own workers (or parallel deflate pieces), which keep
/// both cores busy without writing the compressed data twice.
fn packs_ahead(spec: &MemberSpec) -> bool {
    let size = match &spec.source {
        Source::Bytes(b) => b.len() as u64,
        Source::File(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
    };
    size < ZSTD_MT_MIN
}

/// An opened member source: a reader, its size when opened and a path for messages.
struct Input<'a> {
    src: Box<dyn Read + Send + 'a>,
    size: u64,
    path: PathBuf,
}

fn open_source(spec: &MemberSpec) -> Result<Input<'_>> {
    match &spec.source {
        Source::Bytes(b) => Ok(Input {
            src: Box::new(&b[..]),
            size: b.len() as u64,
            path: PathBuf::from(format!("<bytes of {}>", spec.name)),
        }),
        Source::File(path) => {
            let file = File::open(path).at(path, "open")?;
            let meta = file.metadata().at(path, "stat")?;
            if !meta.is_file() {
                return Err(Error::Invalid(format!(
                    "member {}: {} is not a regular file",
                    quote(&spec.name),
                    path.display()
                )));
            }
            Ok(Input {
                src: Box::new(file),
                size: meta.len(),
                path: path.clone(),
            })
        }
    }
}

fn changed_size(spec: &MemberSpec, path: &Path, expected: u64, got: u64) -> Error {
    Error::Integrity(format!(
        "member {}: {} changed size while it was being bundled ({expected} bytes when opened, \
         {got} read); bundle it again once nothing is writing to it",
        quote(&spec.name),
        path.display()
    ))
}

/// Whether a member gets ZIP64 sizes, decided from its input size alone, before compressing:
/// compressed data never exceeds its input by more than this margin (deflate and zstd both
/// stay well under 1/128 plus a little). Both write paths use it, so the bytes do not depend on
/// which one a member took.
fn needs_zip64(size: u64, method: Compression, force: bool) -> bool {
    force
        || match method {
            Compression::Stored => size >= MAX32,
            _ => size.saturating_add(size / 128).saturating_add(1 << 20) >= MAX32,
        }
}

/// Where compressed bytes go, and how a write error there is reported.
struct Output<'a> {
    w: &'a mut (dyn Write + Send),
    err: &'a (dyn Fn(io::Error) -> Error + Sync),
}

/// Read, hash and compress one member into `out`, reading its source once.
fn compress(
    spec: &MemberSpec,
    input: Input<'_>,
    method: Method,
    threads: usize,
    ctl: &Control,
    stop: &AtomicBool,
    out: Output<'_>,
) -> Result<Digests> {
    let Input {
        mut src,
        size,
        path,
    } = input;
    let Output { w, err } = out;
    let mut fill = |buf: &mut [u8]| -> Result<usize> {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        read_full(&mut src, buf).at(&path, "read")
    };
    let digests = match method {
        Method::Stored => return Err(Error::Invalid("stored members are not compressed".into())),
        Method::Deflate { level } => {
            let mut tail: Vec<u8> = Vec::new();
            let mut sink = |data: &[u8], last: bool| -> Result<()> {
                let parts: Vec<Vec<u8>> = if data.len() <= DEFLATE_CHUNK {
                    vec![deflate_chunk(data, &tail, level, false)?]
                } else {
                    data.par_chunks(DEFLATE_CHUNK)
                        .enumerate()
                        .map(|(k, chunk)| {
                            let dict = match k.checked_sub(1) {
                                None => &tail[..],
                                Some(p) => {
                                    let prev =
                                        data.chunks(DEFLATE_CHUNK).nth(p).unwrap_or_default();
                                    &prev[prev.len().saturating_sub(DEFLATE_WINDOW)..]
                                }
                            };
                            deflate_chunk(chunk, dict, level, false)
                        })
                        .collect::<Result<_>>()?
                };
                for p in &parts {
                    w.write_all(p).map_err(err)?;
                }
                if data.len() >= DEFLATE_WINDOW {
                    tail.clear();
                    tail.extend_from_slice(&data[data.len() - DEFLATE_WINDOW..]);
                } else {
                    tail.extend_from_slice(data);
                    let cut = tail.len().saturating_sub(DEFLATE_WINDOW);
                    tail.drain(..cut);
                }
                if last {
                    // Every piece ends with a sync flush, so the end is always an empty final
                    // block: the output never depends on where the pieces were cut.
                    let end = deflate_chunk(&[], &[], level, true)?;
                    w.write_all(&end).map_err(err)?;
                }
                Ok(())
            };
            let piece = DEFLATE_CHUNK * threads.clamp(1, 8);
            pump(true, size, piece, &mut fill, &mut sink, ctl)?
        }
        Method::Zstd { level } => {
            let zerr = |e: io::Error| Error::Invalid(format!("zstd: {e}"));
            let mut enc = zstd::stream::write::Encoder::new(&mut *w, level).map_err(zerr)?;
            enc.include_checksum(false).map_err(zerr)?;
            enc.include_contentsize(true).map_err(zerr)?;
            enc.set_pledged_src_size(Some(size)).map_err(zerr)?;
            // Always at least one worker: zstd's output differs between 0 and 1 workers, and is
            // the same for any count from 1 up.
            let workers = if size >= ZSTD_MT_MIN { ZSTD_WORKERS } else { 1 };
            enc.multithread(workers).map_err(zerr)?;
            let mut sink = |data: &[u8], _last: bool| enc.write_all(data).map_err(err);
            let digests = pump(true, size, PIECE, &mut fill, &mut sink, ctl)?;
            if digests.size != size {
                return Err(changed_size(spec, &path, size, digests.size));
            }
            let w = enc.finish().map_err(err)?;
            // An empty skippable frame after the data. libarchive (bsdtar 3.6, 3.7) takes a
            // member as finished only when its frame ends with the output buffer (256 KiB) not
            // full; for sizes that are multiples of 256 KiB, common for weights, it then asks
            // for input past the end and fails with "Truncated zstd file body". The extra frame
            // ends the member with no output.
            w.write_all(&ZSTD_SKIPPABLE_END).map_err(err)?;
            digests
        }
    };
    if digests.size != size {
        return Err(changed_size(spec, &path, size, digests.size));
    }
    Ok(digests)
}

/// Compress one member into a spool, ahead of its turn.
fn pack(
    spec: &MemberSpec,
    method: Method,
    dir: &Path,
    threads: usize,
    ctl: &Control,
    stop: &AtomicBool,
) -> Result<Packed> {
    let input = open_source(spec)?;
    let err = |e: io::Error| Error::io(dir, "write a spool file in", e);
    let mut spool = Spool::new(dir);
    let out = Output {
        w: &mut spool,
        err: &err,
    };
    let digests = compress(spec, input, method, threads, ctl, stop, out)?;
    spool.flush().map_err(err)?;
    Ok(Packed {
        digests,
        data: spool,
    })
}

/// Counts what passes through to the archive.
struct Counted<'a, W: Write> {
    w: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Compressed data must fit the header chosen by `needs_zip64`.
fn check_bound(name: &str, csize: u64, zip64: bool) -> Result<()> {
    if !zip64 && csize >= MAX32 {
        return Err(Error::Invalid(format!(
            "member {}: compressed to {csize} bytes, past the bound its header was sized for",
            quote(name)
        )));
    }
    Ok(())
}

/// Raw deflate of one chunk, primed with `dict` (the data before it). Not the final chunk: ends
/// on a byte boundary with a sync flush, so chunks concatenate into one valid stream.
fn deflate_chunk(data: &[u8], dict: &[u8], level: u32, finish: bool) -> Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let fail = |what: &str| Error::Invalid(format!("deflate failed: {what}"));
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(|e| fail(&e.to_string()))?;
    }
    let flush = if finish {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
    loop {
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let rest = data.get(consumed..).unwrap_or_default();
        let status = c
            .compress_vec(rest, &mut out, flush)
            .map_err(|e| fail(&e.to_string()))?;
        let all_in = c.total_in() == data.len() as u64;
        let done = match status {
            Status::StreamEnd => true,
            _ if finish => false,
            // A sync flush is complete once input is used up and output space was left over.
            _ => all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
        out.reserve(64 << 10);
    }
}

/// Compressed data held in memory up to `SPOOL_MEM`, then in an unnamed temporary file in the
/// output's directory (gone on close, even after a crash).
struct Spool {
    dir: PathBuf,
    mem: Vec<u8>,
    file: Option<BufWriter<File>>,
    len: u64,
}

impl Spool {
    fn new(dir: &Path) -> Self {
        Spool {
            dir: dir.to_path_buf(),
            mem: Vec::new(),
            file: None,
            len: 0,
        }
    }

    /// Hand the spooled bytes to `out` in pieces.
    fn drain(self, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let Some(file) = self.file else {
            return out(&self.mem);
        };
        let mut file = file
            .into_inner()
            .map_err(|e| Error::io(&self.dir, "write a spool file in", e.into_error()))?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(0)).at(&self.dir, "read a spool file in")?;
        let mut buf = PageBuf::new(PIECE);
        loop {
            let n = read_full(&mut file, &mut buf).at(&self.dir, "read a spool file in")?;
            if n == 0 {
                return Ok(());
            }
            out(&buf[..n])?;
        }
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.mem.len() + buf.len() > SPOOL_MEM {
            let mut f = BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(&self.dir)?);
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(buf)?,
            None => self.mem.extend_from_slice(buf),
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// A member as the central directory will describe it.
struct CentralRecord {
    name: String,
    method: Compression,
    crc32: u32,
    size: u64,
    compressed_size: u64,
    offset: u64,
    /// Sizes go in a ZIP64 extra field (in both headers).
    zip64: bool,
}

/// The archive being written: buffered output with position tracking.
struct ZipOut<'a> {
    file: &'a File,
    buf: BufWriter<&'a File>,
    path: &'a Path,
    pos: u64,
    central: Vec<CentralRecord>,
    mtime: DosTime,
    force_zip64: bool,
    trailer: Trailer,
}

impl ZipOut<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.write_all(bytes).at(self.path, "write")?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn local_header(
        &self,
        name: &str,
        method: Compression,
        crc32: u32,
        size: u64,
        csize: u64,
        zip64: bool,
    ) -> Vec<u8> {
        let mut extra = Vec::new();
        if zip64 {
            let mut z = Vec::with_capacity(16);
            put64(&mut z, size);
            put64(&mut z, csize);
            put_extra(&mut extra, EXTRA_ZIP64, &z);
        }
        let version_needed = if zip64 {
            method.version_needed().max(VERSION_ZIP64)
        } else {
            method.version_needed()
        };
        let mut out = Vec::with_capacity(LOCAL_LEN + name.len() + extra.len());
        LocalHeader {
            version_needed,
            flags: FLAG_UTF8,
            method: method.zip_method(),
            time: self.mtime.time,
            date: self.mtime.date,
            crc32,
            compressed_size: if zip64 { MAX32 as u32 } else { csize as u32 },
            size: if zip64 { MAX32 as u32 } else { size as u32 },
            name_len: name.len() as u16,
            extra_len: extra.len() as u16,
        }
        .encode(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&extra);
        out
    }

    fn record(
        &mut self,
        name: &str,
        method: Compression,
        d: &Digests,
        csize: u64,
        offset: u64,
        zip64: bool,
    ) -> Result<MemberReport> {
        let (Some(sha256), Some(blake3), Some(crc32)) = (d.sha256, d.blake3, d.crc32) else {
            return Err(Error::Invalid("a digest is missing".into()));
        };
        self.central.push(CentralRecord {
            name: name.to_string(),
            method,
            crc32,
            size: d.size,
            compressed_size: csize,
            offset,
            zip64,
        });
        Ok(MemberReport {
            name: name.to_string(),
            method,
            offset,
            size: d.size,
            compressed_size: csize,
            crc32,
            sha256,
            blake3,
        })
    }

    /// Fill in the crc32 and sizes of a local header written with placeholders.
    fn patch(
        &mut self,
        offset: u64,
        name_len: usize,
        crc32: u32,
        size: u64,
        csize: u64,
        zip64: bool,
    ) -> Result<()> {
        self.buf.flush().at(self.path, "write")?;
        let mut b = Vec::with_capacity(16);
        put32(&mut b, crc32);
        if !zip64 {
            put32(&mut b, csize as u32);
            put32(&mut b, size as u32);
        }
        write_all_at(self.file, &b, offset + 14).at(self.path, "write")?;
        if zip64 {
            let mut z = Vec::with_capacity(16);
            put64(&mut z, size);
            put64(&mut z, csize);
            // Past the header, the name, and the extra field's id and length.
            let at = offset + (LOCAL_LEN + name_len + 4) as u64;
            write_all_at(self.file, &z, at).at(self.path, "write")?;
        }
        Ok(())
    }

    /// Copy a stored member straight in, then patch its crc32 into the local header.
    fn stored(&mut self, spec: &MemberSpec, ctl: &Control) -> Result<MemberReport> {
        let Input {
            mut src,
            size,
            path,
        } = open_source(spec)?;
        let zip64 = needs_zip64(size, Compression::Stored, self.force_zip64);
        let offset = self.pos;
        let header = self.local_header(&spec.name, Compression::Stored, 0, size, size, zip64);
        self.put(&header)?;
        let (buf, out_path) = (&mut self.buf, self.path);
        let mut fill = |b: &mut [u8]| read_full(&mut src, b).at(&path, "read");
        let mut sink = |data: &[u8], _last: bool| buf.write_all(data).at(out_path, "write");
        // Its sha256 comes from the trailer, which reads these bytes back anyway.
        let mut digests = pump(false, size, PIECE, &mut fill, &mut sink, ctl)?;
        let data = self.pos..self.pos + digests.size;
        self.pos += digests.size;
        if digests.size != size {
            return Err(changed_size(spec, &path, size, digests.size));
        }
        let crc = digests.crc32.unwrap_or_default();
        self.patch(offset, spec.name.len(), crc, size, size, zip64)?;
        self.trailer.advance(self.pos, Some(data));
        digests.sha256 = Some([0; 32]); // filled in from the trailer
        self.record(
            &spec.name,
            Compression::Stored,
            &digests,
            size,
            offset,
            zip64,
        )
    }

    /// Compress a member straight into the archive, then patch its local header.
    fn compressed(
        &mut self,
        spec: &MemberSpec,
        method: Method,
        threads: usize,
        ctl: &Control,
        stop: &AtomicBool,
    ) -> Result<MemberReport> {
        let input = open_source(spec)?;
        let size = input.size;
        let comp = method.compression();
        let zip64 = needs_zip64(size, comp, self.force_zip64);
        let offset = self.pos;
        let header = self.local_header(&spec.name, comp, 0, size, 0, zip64);
        self.put(&header)?;
        let path = self.path;
        let err = |e: io::Error| Error::io(path, "write", e);
        let mut counted = Counted {
            w: &mut self.buf,
            n: 0,
        };
        let out = Output {
            w: &mut counted,
            err: &err,
        };
        let digests = compress(spec, input, method, threads, ctl, stop, out)?;
        let csize = counted.n;
        self.pos += csize;
        check_bound(&spec.name, csize, zip64)?;
        let crc = digests.crc32.unwrap_or_default();
        self.patch(offset, spec.name.len(), crc, size, csize, zip64)?;
        self.trailer.advance(self.pos, None);
        self.record(&spec.name, comp, &digests, csize, offset, zip64)
    }

    /// Append a member compressed ahead; its header is final from the start.
    fn packed(&mut self, name: &str, method: Compression, packed: Packed) -> Result<MemberReport> {
        let Packed { digests, data } = packed;
        let csize = data.len;
        let zip64 = needs_zip64(digests.size, method, self.force_zip64);
        check_bound(name, csize, zip64)?;
        let offset = self.pos;
        let header = self.local_header(
            name,
            method,
            digests.crc32.unwrap_or_default(),
            digests.size,
            csize,
            zip64,
        );
        self.put(&header)?;
        data.drain(&mut |piece| self.put(piece))?;
        self.buf.flush().at(self.path, "write")?;
        self.trailer.advance(self.pos, None);
        self.record(name, method, &digests, csize, offset, zip64)
    }

    /// The central directory and end records; returns the sha256 of the whole archive and of
    /// each stored member.
    fn finish(mut self) -> Result<Hashed> {
        let cd_offset = self.pos;
        let central = std::mem::take(&mut self.central);
        for rec in &central {
            let offset64 = self.force_zip64 || rec.offset >= MAX32;
            let mut z = Vec::new();
            if rec.zip64 {
                put64(&mut z, rec.size);
                put64(&mut z, rec.compressed_size);
            }
            if offset64 {
                put64(&mut z, rec.offset);
            }
            let mut extra = Vec::new();
            if !z.is_empty() {
                put_extra(&mut extra, EXTRA_ZIP64, &z);
            }
            let mut version_needed = rec.method.version_needed();
            if !extra.is_empty() {
                version_needed = version_needed.max(VERSION_ZIP64);
            }
            let mut b = Vec::with_capacity(CENTRAL_LEN + rec.name.len() + extra.len());
            CentralHeader {
                made_by: MADE_BY_UNIX,
                version_needed,
                flags: FLAG_UTF8,
                method: rec.method.zip_method(),
                time: self.mtime.time,
                date: self.mtime.date,
                crc32: rec.crc32,
                compressed_size: if rec.zip64 {
                    MAX32 as u32
                } else {
                    rec.compressed_size as u32
                },
                size: if rec.zip64 {
                    MAX32 as u32
                } else {
                    rec.size as u32
                },
                name_len: rec.name.len() as u16,
                extra_len: extra.len() as u16,
                comment_len: 0,
                disk_start: 0,
                internal_attr: 0,
                external_attr: (S_IFREG | 0o644) << 16,
                offset: if offset64 {
                    MAX32 as u32
                } else {
                    rec.offset as u32
                },
            }
            .encode(&mut b);
            b.extend_from_slice(rec.name.as_bytes());
            b.extend_from_slice(&extra);
            self.put(&b)?;
        }
        let cd_size = self.pos - cd_offset;
        let entries = central.len() as u64;
        let zip64 = self.force_zip64 || entries >= MAX16 || cd_size >= MAX32 || cd_offset >= MAX32;
        let mut tail = Vec::new();
        if zip64 {
            Zip64Eocd {
                record_size: (ZIP64_EOCD_LEN - 12) as u64,
                made_by: MADE_BY_UNIX,
                version_needed: VERSION_ZIP64,
                disk: 0,
                cd_disk: 0,
                entries_on_disk: entries,
                entries,
                cd_size,
                cd_offset,
            }
            .encode(&mut tail);
            Zip64Locator {
                disk: 0,
                eocd_offset: self.pos,
                total_disks: 1,
            }
            .encode(&mut tail);
        }
        let entries16 = entries.min(MAX16) as u16;
        Eocd {
            disk: 0,
            cd_disk: 0,
            entries_on_disk: entries16,
            entries: entries16,
            cd_size: cd_size.min(MAX32) as u32,
            cd_offset: cd_offset.min(MAX32) as u32,
            comment_len: 0,
        }
        .encode(&mut tail);
        self.put(&tail)?;
        self.buf.flush().at(self.path, "write")?;
        self.trailer.finish(self.pos)
    }
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/// What an archive may ask of its reader. Every limit is checked against the declared values
/// when the archive opens and against the bytes actually produced when a member is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_members: u64,
    pub max_member_size: u64,
    pub max_total_size: u64,
    /// Largest size / compressed size allowed for members over `ratio_min_size`.
    pub max_ratio: u64,
    pub ratio_min_size: u64,
    /// log2 of the largest zstd window a member may need (27: 128 MiB).
    pub zstd_window_log_max: u32,
    pub max_name_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_members: 100_000,
            max_member_size: 256 << 30,
            max_total_size: 1 << 40,
            max_ratio: 1000,
            ratio_min_size: 1 << 20,
            zstd_window_log_max: 27,
            max_name_len: 4096,
        }
    }
}

/// One member as listed by the central directory (after validation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub method: Compression,
    pub size: u64,
    pub compressed_size: u64,
    pub crc32: u32,
    /// Offset of the local header.
    pub offset: u64,
    /// Offset of the member's (compressed) data.
    pub data_offset: u64,
    pub is_dir: bool,
    flags: u16,
    /// Sizes came through a ZIP64 extra field: a data descriptor then holds 8-byte sizes.
    zip64_sizes: bool,
}

/// Digests a member must have; checked before an extracted file is renamed into place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub sha256: Option<[u8; 32]>,
    pub blake3: Option<[u8; 32]>,
}

/// An opened, fully validated archive.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    file: File,
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    limits: Limits,
}

/// Reads `[pos, end)` of a file with positioned reads, so several readers can share the file.
struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let got = read_at(self.file, &mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends early (was it truncated while open?)",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

/// The end-of-archive records, resolved.
struct End {
    entries: u64,
    cd_offset: u64,
    cd_size: u64,
}

/// Builds the messages for one archive.
struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn bad(&self, msg: impl std::fmt::Display) -> Error {
        Error::Unsafe(format!("{}: {msg}", self.path.display()))
    }

    fn bad_member(&self, name: &str, msg: impl std::fmt::Display) -> Error {
        Error::Unsafe(format!(
            "{}: member {}: {msg}",
            self.path.display(),
            quote(name)
        ))
    }

    fn limit(&self, msg: impl std::fmt::Display) -> Error {
        Error::Limit(format!("{}: {msg}", self.path.display()))
    }

    fn limit_member(&self, name: &str, msg: impl std::fmt::Display) -> Error {
        Error::Limit(format!(
            "{}: member {}: {msg}",
            self.path.display(),
            quote(name)
        ))
    }

    fn corrupt(&self, name: &str, msg: impl std::fmt::Display) -> Error {
        Error::Integrity(format!(
            "{}: member {}: {msg}",
            self.path.display(),
            quote(name)
        ))
    }

    /// Read exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, file: &File, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match read_at(file, &mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    return Err(self.bad(format_args!(
                        "the archive ends inside {what} (at offset {offset})"
                    )))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(self.path, "read", e)),
            }
        }
        Ok(())
    }
}

fn add(a: u64, b: u64) -> Option<u64> {
    a.checked_add(b)
}

impl Bundle {
    /// Open and validate an archive: its records, every name, the layout of every member and
    /// the limits, before anything can be read from it.
    pub fn open(path: &Path, limits: Limits) -> Result<Bundle> {
        if !(10..=31).contains(&limits.zstd_window_log_max) {
            return Err(Error::Invalid(format!(
                "zstd_window_log_max {} is out of range: expected 10 to 31",
                limits.zstd_window_log_max
            )));
        }
        let file = File::open(path).at(path, "open")?;
        let meta = file.metadata().at(path, "stat")?;
        if !meta.is_file() {
            return Err(Error::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let cx = Ctx { path };
        let len = meta.len();
        let end = find_end(&cx, &file, len, &limits)?;
        let entries = read_central(&cx, &file, &end, &limits)?;
        let entries = check_layout(&cx, &file, entries, &end, &limits)?;
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Ok(Bundle {
            path: path.to_path_buf(),
            file,
            entries,
            by_name,
            limits,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Members in central directory order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The index of the member with exactly this name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn entry(&self, index: usize) -> Result<&Entry> {
        self.entries.get(index).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no member #{index} (the bundle has {})",
                self.path.display(),
                self.entries.len()
            ))
        })
    }

    /// `(offset, length)` of a stored member's bytes in the archive file, to map it in place.
    /// The bytes are not verified here: `hash_member` does that.
    pub fn member_data_range(&self, index: usize) -> Result<(u64, u64)> {
        let e = self.entry(index)?;
        if e.method != Compression::Stored {
            return Err(Error::Invalid(format!(
                "{}: member {} is compressed ({}); only stored members can be mapped in place",
                self.path.display(),
                quote(&e.name),
                e.method.as_str()
            )));
        }
        Ok((e.data_offset, e.size))
    }

    /// Verify a member (size and crc32) and return its digests, writing nothing.
    /// With `sha256: false` only blake3 and crc32 are computed (routine verification).
    pub fn hash_member(&self, index: usize, sha256: bool, ctl: &Control) -> Result<Digests> {
        self.stream(index, sha256, &mut |_, _| Ok(()), ctl)
    }

    /// Read a whole verified member into memory; refused if it declares more than `max_bytes`.
    pub fn read_member(
        &self,
        index: usize,
        max_bytes: u64,
        ctl: &Control,
    ) -> Result<(Vec<u8>, Digests)> {
        let e = self.entry(index)?;
        if e.size > max_bytes {
            return Err(Ctx { path: &self.path }.limit_member(
                &e.name,
                format_args!(
                    "is {} bytes, over the {max_bytes} that may be read into memory",
                    e.size
                ),
            ));
        }
        let mut data = Vec::new();
        let digests = self.stream(
            index,
            true,
            &mut |piece, _| {
                data.extend_from_slice(piece);
                Ok(())
            },
            ctl,
        )?;
        Ok((data, digests))
    }

    /// Stream a verified member into `out`. On error, `out` may hold part of it.
    pub fn copy_member(
        &self,
        index: usize,
        out: &mut (dyn Write + Send),
        ctl: &Control,
    ) -> Result<Digests> {
        let name = self.entry(index)?.name.clone();
        let path = self.path.clone();
        self.stream(
            index,
            true,
            &mut |piece, _| {
                out.write_all(piece).map_err(|e| Error::Io {
                    path: path.clone(),
                    action: "write out a member of",
                    source: io::Error::new(e.kind(), format!("member {}: {e}", quote(&name))),
                })
            },
            ctl,
        )
    }

    /// Extract a member to `dest`: written to a new temporary file beside it, verified (size,
    /// crc32 and `expect`), flushed, then renamed into place. Nothing is written through a
    /// symlink; without `overwrite`, an existing `dest` is an error.
    pub fn extract_member(
        &self,
        index: usize,
        dest: &Path,
        expect: &Expected,
        overwrite: bool,
        ctl: &Control,
    ) -> Result<Digests> {
        let e = self.entry(index)?;
        if e.is_dir {
            return Err(Error::Invalid(format!(
                "{}: member {} is a directory; there is nothing to extract",
                self.path.display(),
                quote(&e.name)
            )));
        }
        let (tmp, dir) = temp_beside(dest, 0o644)?;
        let digests = {
            let (file, tmp_path) = (tmp.as_file(), tmp.path());
            let mut w = BufWriter::with_capacity(1 << 20, file);
            let digests = self.stream(
                index,
                true,
                &mut |piece, _| w.write_all(piece).at(tmp_path, "write"),
                ctl,
            )?;
            w.flush().at(tmp_path, "write")?;
            digests
        };
        let cx = Ctx { path: &self.path };
        for (what, want, got) in [
            ("sha256", expect.sha256, digests.sha256),
            ("blake3", expect.blake3, digests.blake3),
        ] {
            if let (Some(want), Some(got)) = (want, got) {
                if want != got {
                    return Err(cx.corrupt(
                        &e.name,
                        format_args!(
                            "{what} is {}, expected {}; the bundle does not hold what its \
                             manifest says: rebuild it or fetch it again",
                            hex(&got),
                            hex(&want)
                        ),
                    ));
                }
            }
        }
        ctl.check()?;
        persist(tmp, dest, &dir, overwrite)?;
        Ok(digests)
    }

    /// Decompress a member into `sink`, hashing it and enforcing the limits on the bytes
    /// actually produced; checks its size and crc32 at the end.
    fn stream(
        &self,
        index: usize,
        sha256: bool,
        sink: &mut Sink<'_>,
        ctl: &Control,
    ) -> Result<Digests> {
        let e = self.entry(index)?;
        let cx = Ctx { path: &self.path };
        let range = RangeReader {
            file: &self.file,
            pos: e.data_offset,
            end: e.data_offset.saturating_add(e.compressed_size),
        };
        let declared = e.size;
        let mut produced = 0u64;
        let io_err = |err: io::Error| Error::io(&self.path, "read", err);
        // Reads at most one byte past the declared size: enough to catch a member that lies.
        let mut bounded = |buf: &mut [u8], read: &mut dyn FnMut(&mut [u8]) -> Result<usize>| {
            let room = usize::try_from((declared - produced.min(declared)).saturating_add(1))
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = read(&mut buf[..room])?;
            produced += n as u64;
            if produced > declared {
                return Err(cx.limit_member(
                    &e.name,
                    format_args!(
                        "decompresses to more than the {declared} bytes it declares \
                         (a zip bomb, or corrupt data)"
                    ),
                ));
            }
            Ok(n)
        };
        let digests = match e.method {
            Compression::Stored => {
                let mut r = range;
                let mut fill =
                    |buf: &mut [u8]| bounded(buf, &mut |b| read_full(&mut r, b).map_err(io_err));
                pump(sha256, declared, PIECE, &mut fill, sink, ctl)?
            }
            Compression::Deflate => {
                let mut dec = flate2::bufread::DeflateDecoder::new(BufReader::with_capacity(
                    256 << 10,
                    range,
                ));
                let digests = {
                    let mut fill = |buf: &mut [u8]| {
                        bounded(buf, &mut |b| {
                            read_full(&mut dec, b).map_err(|err| {
                                cx.corrupt(&e.name, format_args!("deflate data is corrupt: {err}"))
                            })
                        })
                    };
                    pump(sha256, declared, PIECE, &mut fill, sink, ctl)?
                };
                if dec.total_in() != e.compressed_size && produced == declared {
                    return Err(cx.corrupt(
                        &e.name,
                        format_args!(
                            "its deflate stream ends after {} of its {} compressed bytes",
                            dec.total_in(),
                            e.compressed_size
                        ),
                    ));
                }
                digests
            }
            Compression::Zstd => {
                let buffered = BufReader::with_capacity(256 << 10, range);
                let mut dec = zstd::stream::read::Decoder::with_buffer(buffered)
                    .map_err(|err| Error::Invalid(format!("zstd: {err}")))?;
                dec.window_log_max(self.limits.zstd_window_log_max)
                    .map_err(|err| Error::Invalid(format!("zstd: {err}")))?;
                let wlog = self.limits.zstd_window_log_max;
                let mut fill = |buf: &mut [u8]| {
                    bounded(buf, &mut |b| {
                        read_full(&mut dec, b).map_err(|err| zstd_error(&cx, &e.name, err, wlog))
                    })
                };
                pump(sha256, declared, PIECE, &mut fill, sink, ctl)?
            }
        };
        if digests.size != declared {
            return Err(cx.corrupt(
                &e.name,
                format_args!(
                    "is truncated or corrupt: its data gives {} bytes, the archive says {declared}",
                    digests.size
                ),
            ));
        }
        let crc = digests.crc32.unwrap_or_default();
        if crc != e.crc32 {
            return Err(cx.corrupt(
                &e.name,
                format_args!(
                    "crc32 is {crc:08x}, the archive says {:08x}: the data is corrupt",
                    e.crc32
                ),
            ));
        }
        Ok(digests)
    }
}

fn zstd_error(cx: &Ctx<'_>, name: &str, err: io::Error, wlog: u32) -> Error {
    let text = err.to_string();
    if text.contains("too much memory") || text.contains("indow") {
        cx.limit_member(
            name,
            format_args!(
                "its zstd data needs a window over the limit of 2^{wlog} bytes \
                 (zstd_window_log_max)"
            ),
        )
    } else {
        cx.corrupt(name, format_args!("zstd data is corrupt: {text}"))
    }
}

/// The window a zstd frame header asks for, if the data starts with a regular frame.
fn zstd_window(head: &[u8]) -> Option<u64> {
    let mut r = Le::new(head);
    if r.u32()? != 0xFD2F_B528 {
        return None;
    }
    let fhd = r.u8()?;
    if fhd & 0x20 == 0 {
        let wd = r.u8()?;
        let base = 1u64 << (10 + u32::from(wd >> 3));
        return Some(base + base / 8 * u64::from(wd & 7));
    }
    // Single segment: the window is the content size.
    r.bytes([0, 1, 2, 4][usize::from(fhd & 3)])?;
    let fcs = r.bytes([1, 2, 4, 8][usize::from(fhd >> 6)])?;
    let mut v = 0u64;
    for (i, b) in fcs.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    Some(if fcs.len() == 2 { v + 256 } else { v })
}

/// Locate and check the end records. Exactly one end record must exist, ending the file.
fn find_end(cx: &Ctx<'_>, file: &File, len: u64, limits: &Limits) -> Result<End> {
    if len < EOCD_LEN as u64 {
        return Err(cx.bad(format_args!(
            "not a zip archive: {len} bytes is too short for an end-of-central-directory record"
        )));
    }
    let tail_len = len.min((EOCD_LEN + MAX_COMMENT) as u64) as usize;
    let tail_start = len - tail_len as u64;
    let mut tail = vec![0u8; tail_len];
    cx.read_exact_at(file, &mut tail, tail_start, "the end record")?;
    let sig = SIG_EOCD.to_le_bytes();
    // A candidate is valid when its comment reaches exactly the end of the file.
    let valid = |i: usize| -> bool {
        Eocd::decode(tail.get(i..).unwrap_or_default())
            .is_some_and(|e| i + EOCD_LEN + usize::from(e.comment_len) == tail_len)
    };
    let candidates: Vec<usize> = (0..=tail_len - EOCD_LEN)
        .rev()
        .filter(|&i| tail.get(i..i + 4) == Some(&sig[..]))
        .collect();
    let Some(&last) = candidates.first() else {
        return Err(cx.bad("not a zip archive: no end-of-central-directory record"));
    };
    let earlier_valid = candidates.iter().skip(1).any(|&i| valid(i));
    if earlier_valid {
        return Err(cx.bad(
            "it has two end-of-central-directory records (one hidden in the other's comment); \
             different tools would see different contents",
        ));
    }
    if !valid(last) {
        let comment = Eocd::decode(&tail[last..]).map_or(0, |e| usize::from(e.comment_len));
        let used = last + EOCD_LEN + comment;
        return Err(if used < tail_len {
            cx.bad(format_args!(
                "{} bytes of trailing data follow the end-of-central-directory record",
                tail_len - used
            ))
        } else {
            cx.bad("the end-of-central-directory comment runs past the end of the file")
        });
    }
    let eocd_pos = tail_start + last as u64;
    let eocd = Eocd::decode(&tail[last..])
        .ok_or_else(|| cx.bad("the end-of-central-directory record is malformed"))?;
    if eocd.disk != 0 || eocd.cd_disk != 0 || eocd.entries_on_disk != eocd.entries {
        return Err(cx.bad("multi-disk (spanned) archives are not supported"));
    }

    // ZIP64: a locator sits right before the end record.
    let mut locator = None;
    if eocd_pos >= ZIP64_LOCATOR_LEN as u64 {
        let mut b = [0u8; ZIP64_LOCATOR_LEN];
        let at = eocd_pos - ZIP64_LOCATOR_LEN as u64;
        cx.read_exact_at(file, &mut b, at, "the ZIP64 locator")?;
        locator = Zip64Locator::decode(&b).map(|l| (at, l));
    }
    let (entries, cd_offset, cd_size, cd_end) = match locator {
        Some((loc_pos, loc)) => {
            if loc.disk != 0 || loc.total_disks != 1 {
                return Err(cx.bad("multi-disk (spanned) archives are not supported"));
            }
            let rec_pos = loc.eocd_offset;
            if add(rec_pos, ZIP64_EOCD_LEN as u64).is_none_or(|e| e > loc_pos) {
                return Err(cx.bad(format_args!(
                    "the ZIP64 locator points at offset {rec_pos}, outside the archive's end area"
                )));
            }
            let mut b = [0u8; ZIP64_EOCD_LEN];
            cx.read_exact_at(file, &mut b, rec_pos, "the ZIP64 end record")?;
            let z = Zip64Eocd::decode(&b)
                .ok_or_else(|| cx.bad(format_args!("no ZIP64 end record at offset {rec_pos}")))?;
            if z.record_size < (ZIP64_EOCD_LEN - 12) as u64
                || add(rec_pos, 12).and_then(|p| add(p, z.record_size)) != Some(loc_pos)
            {
                return Err(cx.bad("the ZIP64 end record's size does not match its place"));
            }
            if z.disk != 0 || z.cd_disk != 0 || z.entries_on_disk != z.entries {
                return Err(cx.bad("multi-disk (spanned) archives are not supported"));
            }
            let agrees = |v32: u64, max: u64, v64: u64| v32 == max || v32 == v64;
            if !agrees(u64::from(eocd.entries), MAX16, z.entries)
                || !agrees(u64::from(eocd.cd_size), MAX32, z.cd_size)
                || !agrees(u64::from(eocd.cd_offset), MAX32, z.cd_offset)
            {
                return Err(cx.bad(
                    "the ZIP64 end record disagrees with the end record (entries, size or offset \
                     of the central directory)",
                ));
            }
            (z.entries, z.cd_offset, z.cd_size, rec_pos)
        }
        None => {
            if u64::from(eocd.cd_size) == MAX32 || u64::from(eocd.cd_offset) == MAX32 {
                return Err(
                    cx.bad("the end record defers to a ZIP64 end record, but there is none")
                );
            }
            (
                u64::from(eocd.entries),
                u64::from(eocd.cd_offset),
                u64::from(eocd.cd_size),
                eocd_pos,
            )
        }
    };
    match add(cd_offset, cd_size) {
        Some(e) if e == cd_end => {}
        Some(e) if e < cd_end => {
            return Err(cx.bad(format_args!(
                "{} unexplained bytes lie between the central directory and the end records",
                cd_end - e
            )))
        }
        _ => {
            return Err(cx.bad(format_args!(
                "the central directory (offset {cd_offset}, {cd_size} bytes) runs past the end \
                 records"
            )))
        }
    }
    if entries > limits.max_members {
        return Err(cx.limit(format_args!(
            "it has {entries} members, over the limit of {} (max_members)",
            limits.max_members
        )));
    }
    if entries.saturating_mul(CENTRAL_LEN as u64) > cd_size {
        return Err(cx.bad(format_args!(
            "a central directory of {cd_size} bytes cannot hold {entries} entries"
        )));
    }
    Ok(End {
        entries,
        cd_offset,
        cd_size,
    })
}

/// Parse and check every central directory entry: names, flags, method, ZIP64 fields,
/// attributes, duplicates and the declared-size limits.
fn read_central(cx: &Ctx<'_>, file: &File, end: &End, limits: &Limits) -> Result<Vec<Entry>> {
    let mut r = BufReader::with_capacity(
        64 << 10,
        RangeReader {
            file,
            pos: end.cd_offset,
            end: end.cd_offset + end.cd_size,
        },
    );
    let mut entries: Vec<Entry> = Vec::new();
    let mut names = NameSet::default();
    let mut consumed = 0u64;
    let mut total = 0u64;
    for k in 0..end.entries {
        let mut fixed = [0u8; CENTRAL_LEN];
        let short = |_| cx.bad(format_args!("the central directory ends inside entry #{k}"));
        r.read_exact(&mut fixed).map_err(short)?;
        let h = CentralHeader::decode(&fixed).ok_or_else(|| {
            cx.bad(format_args!(
                "central directory entry #{k} has a bad signature"
            ))
        })?;
        let mut raw_name = vec![0u8; usize::from(h.name_len)];
        let mut extra = vec![0u8; usize::from(h.extra_len)];
        let mut comment = vec![0u8; usize::from(h.comment_len)];
        r.read_exact(&mut raw_name).map_err(short)?;
        r.read_exact(&mut extra).map_err(short)?;
        r.read_exact(&mut comment).map_err(short)?;
        consumed += (CENTRAL_LEN + raw_name.len() + extra.len() + comment.len()) as u64;

        let name = decode_name(cx, k, &raw_name, h.flags, limits)?;
        let e = check_central(cx, &h, name, &extra, limits)?;
        names
            .insert(&e.name, e.is_dir)
            .map_err(|why| cx.bad_member(&e.name, why))?;
        total = total.saturating_add(e.size);
        if total > limits.max_total_size {
            return Err(cx.limit(format_args!(
                "its members add up to more than {} bytes (max_total_size)",
                limits.max_total_size
            )));
        }
        if e.offset >= end.cd_offset {
            return Err(cx.bad_member(
                &e.name,
                format_args!(
                    "its local header offset {} is not before the central directory",
                    e.offset
                ),
            ));
        }
        entries.push(e);
    }
    if consumed != end.cd_size {
        return Err(cx.bad(format_args!(
            "the central directory holds {} bytes beyond its {} entries",
            end.cd_size.saturating_sub(consumed),
            end.entries
        )));
    }
    names
        .check_parents()
        .map_err(|(name, why)| cx.bad_member(&name, why))?;
    Ok(entries)
}

fn decode_name(cx: &Ctx<'_>, k: u64, raw: &[u8], flags: u16, limits: &Limits) -> Result<String> {
    let shown = String::from_utf8_lossy(raw);
    if raw.len() > limits.max_name_len {
        return Err(cx.bad_member(
            &shown,
            format_args!(
                "name is {} bytes long, over the limit of {} (max_name_len)",
                raw.len(),
                limits.max_name_len
            ),
        ));
    }
    if raw.is_empty() {
        return Err(cx.bad(format_args!("entry #{k}: name is empty")));
    }
    let Ok(name) = std::str::from_utf8(raw) else {
        return Err(cx.bad_member(&shown, "name is not valid UTF-8"));
    };
    if flags & FLAG_UTF8 == 0 && !name.is_ascii() {
        return Err(cx.bad_member(
            name,
            "name is not ASCII and not marked as UTF-8, so tools disagree on what it is",
        ));
    }
    Ok(name.to_string())
}

/// The values a ZIP64 extra field supplies for the 32-bit fields set to all ones.
struct Zip64Fields {
    size: u64,
    compressed_size: u64,
    offset: u64,
    disk: u64,
    sizes_from_extra: bool,
}

fn check_central(
    cx: &Ctx<'_>,
    h: &CentralHeader,
    name: String,
    extra: &[u8],
    limits: &Limits,
) -> Result<Entry> {
    let bad = |msg: &dyn std::fmt::Display| cx.bad_member(&name, msg);
    check_name(&name, limits.max_name_len).map_err(|why| bad(&why))?;
    if h.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS) != 0
        || h.method == METHOD_AES
    {
        return Err(bad(&"it is encrypted; encrypted bundles are not supported"));
    }
    let method = match h.method {
        METHOD_STORED => Compression::Stored,
        METHOD_DEFLATE => Compression::Deflate,
        METHOD_ZSTD => Compression::Zstd,
        m => {
            return Err(bad(&format_args!(
                "unsupported compression method {m} (supported: stored, deflate, zstd)"
            )))
        }
    };
    let fields = extra_fields(extra).ok_or_else(|| bad(&"its extra field is malformed"))?;
    let z = zip64_fields(
        &fields,
        [
            u64::from(h.size),
            u64::from(h.compressed_size),
            u64::from(h.offset),
            u64::from(h.disk_start),
        ],
        true,
    )
    .map_err(|why| bad(&why))?;
    check_unicode_path(&fields, &name).map_err(|why| bad(&why))?;
    if z.disk != 0 {
        return Err(bad(
            &"it starts on another disk (spanned archives are not supported)",
        ));
    }

    let is_dir = name.ends_with('/');
    let host = h.made_by >> 8;
    if host == HOST_UNIX || host == HOST_OSX {
        let mode = h.external_attr >> 16;
        match mode & S_IFMT {
            0 | S_IFREG => {}
            S_IFDIR if is_dir => {}
            S_IFDIR => {
                return Err(bad(
                    &"it is marked as a directory but its name does not end in '/'",
                ))
            }
            S_IFLNK => {
                return Err(bad(
                    &"it is a symbolic link; links are not allowed in bundles",
                ))
            }
            t => {
                return Err(bad(&format_args!(
                    "it is a device or special file (mode {t:o}); only regular files are allowed"
                )))
            }
        }
        if mode & (S_ISUID | S_ISGID) != 0 {
            return Err(bad(&format_args!(
                "it has the setuid or setgid bit (mode {:o})",
                mode & 0o7777
            )));
        }
    }
    if is_dir && z.size != 0 {
        return Err(bad(&format_args!(
            "it is a directory but holds {} bytes",
            z.size
        )));
    }
    if method == Compression::Stored && z.size != z.compressed_size {
        return Err(bad(&format_args!(
            "it is stored, yet its size {} differs from its compressed size {}",
            z.size, z.compressed_size
        )));
    }
    if z.size > limits.max_member_size {
        return Err(cx.limit_member(
            &name,
            format_args!(
                "it is {} bytes, over the per-member limit of {} (max_member_size)",
                z.size, limits.max_member_size
            ),
        ));
    }
    if z.size > limits.ratio_min_size
        && u128::from(z.size) > u128::from(limits.max_ratio) * u128::from(z.compressed_size)
    {
        return Err(cx.limit_member(
            &name,
            format_args!(
                "compression ratio {}:1 exceeds the limit {}:1 (max_ratio)",
                z.size / z.compressed_size.max(1),
                limits.max_ratio
            ),
        ));
    }
    Ok(Entry {
        name,
        method,
        size: z.size,
        compressed_size: z.compressed_size,
        crc32: h.crc32,
        offset: z.offset,
        data_offset: 0,
        is_dir,
        flags: h.flags,
        zip64_sizes: z.sizes_from_extra,
    })
}

/// Resolve `[size, compressed size, offset, disk]` through the ZIP64 extra field. The field
/// must hold exactly the values whose 32-bit (or 16-bit) field is all ones, no more, no fewer:
/// anything else is an archive that says two different things.
fn zip64_fields(
    fields: &[(u16, &[u8])],
    v: [u64; 4],
    central: bool,
) -> std::result::Result<Zip64Fields, String> {
    let mut found = fields.iter().filter(|(id, _)| *id == EXTRA_ZIP64);
    let data = found.next().map(|(_, d)| *d);
    if found.next().is_some() {
        return Err("it has two ZIP64 extra fields".into());
    }
    let [size, csize, offset, disk] = v;
    let want = [
        size == MAX32,
        csize == MAX32,
        central && offset == MAX32,
        central && disk == MAX16,
    ];
    let need = 8 * want[..3].iter().filter(|w| **w).count() + 4 * usize::from(want[3]);
    let mut out = Zip64Fields {
        size,
        compressed_size: csize,
        offset,
        disk,
        sizes_from_extra: false,
    };
    let Some(data) = data else {
        if need > 0 {
            return Err(
                "a size or offset is set to 0xFFFFFFFF (defer to ZIP64) but there is no ZIP64 \
                 extra field"
                    .into(),
            );
        }
        return Ok(out);
    };
    if data.len() != need {
        return Err(format!(
            "its ZIP64 extra field holds {} bytes, but the header defers {need} bytes to it \
             (lying ZIP64 sizes)",
            data.len()
        ));
    }
    let mut r = Le::new(data);
    let bad = || "its ZIP64 extra field is malformed".to_string();
    if want[0] {
        out.size = r.u64().ok_or_else(bad)?;
        out.sizes_from_extra = true;
    }
    if want[1] {
        out.compressed_size = r.u64().ok_or_else(bad)?;
        out.sizes_from_extra = true;
    }
    if want[2] {
        out.offset = r.u64().ok_or_else(bad)?;
    }
    if want[3] {
        out.disk = u64::from(r.u32().ok_or_else(bad)?);
    }
    Ok(out)
}

/// An Info-ZIP Unicode path field would give the member another name in some tools.
fn check_unicode_path(fields: &[(u16, &[u8])], name: &str) -> std::result::Result<(), String> {
    for (_, data) in fields.iter().filter(|(id, _)| *id == EXTRA_UNICODE_PATH) {
        let path = data.get(5..).unwrap_or_default();
        if data.first() != Some(&1) || path != name.as_bytes() {
            return Err(
                "its Unicode path extra field names it differently, so tools disagree on its \
                 name"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Check every local header against its central entry, then require the members to tile the
/// file from offset 0 up to the central directory: no gaps, no overlap.
fn check_layout(
    cx: &Ctx<'_>,
    file: &File,
    mut entries: Vec<Entry>,
    end: &End,
    limits: &Limits,
) -> Result<Vec<Entry>> {
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter_mut().enumerate() {
        let span_end = check_local(cx, file, e, end.cd_offset, limits)?;
        spans.push((e.offset, span_end, i));
    }
    spans.sort_unstable();
    let mut at = 0u64;
    let mut prev: Option<usize> = None;
    for &(start, stop, i) in &spans {
        let name = &entries[i].name;
        if start < at {
            let other = prev.map(|p| quote(&entries[p].name)).unwrap_or_default();
            return Err(cx.bad_member(
                name,
                format_args!(
                    "it starts at offset {start}, inside member {other} (which ends at {at}): \
                     overlapping entries"
                ),
            ));
        }
        if start > at {
            return Err(cx.bad(format_args!(
                "{} bytes at offset {at} belong to no member (before member {})",
                start - at,
                quote(name)
            )));
        }
        at = stop;
        prev = Some(i);
    }
    if at != end.cd_offset {
        return Err(match prev {
            Some(p) if at > end.cd_offset => cx.bad_member(
                &entries[p].name,
                "its data runs into the central directory: overlapping entries",
            ),
            _ => cx.bad(format_args!(
                "{} bytes at offset {at} belong to no member (before the central directory)",
                end.cd_offset.saturating_sub(at)
            )),
        });
    }
    Ok(entries)
}

/// Check a local header against the central entry and set `data_offset`; returns where the
/// member's records end (after its data descriptor, if any).
fn check_local(
    cx: &Ctx<'_>,
    file: &File,
    e: &mut Entry,
    cd_offset: u64,
    limits: &Limits,
) -> Result<u64> {
    let name = e.name.clone();
    let bad = |msg: &dyn std::fmt::Display| cx.bad_member(&name, msg);
    let outside = || bad(&"its local header lies outside the member area");
    if add(e.offset, LOCAL_LEN as u64).is_none_or(|x| x > cd_offset) {
        return Err(outside());
    }
    let mut fixed = [0u8; LOCAL_LEN];
    cx.read_exact_at(file, &mut fixed, e.offset, "a local header")?;
    let h = LocalHeader::decode(&fixed)
        .ok_or_else(|| bad(&format_args!("no local header at offset {}", e.offset)))?;
    let var_len = usize::from(h.name_len) + usize::from(h.extra_len);
    let data_offset = add(e.offset, (LOCAL_LEN + var_len) as u64).ok_or_else(outside)?;
    if data_offset > cd_offset {
        return Err(outside());
    }
    let mut var = vec![0u8; var_len];
    cx.read_exact_at(
        file,
        &mut var,
        e.offset + LOCAL_LEN as u64,
        "a local header",
    )?;
    let (raw_name, extra) = var.split_at(usize::from(h.name_len));
    if raw_name != name.as_bytes() {
        return Err(bad(&format_args!(
            "its local header names it {} (local and central headers disagree)",
            quote(&String::from_utf8_lossy(raw_name))
        )));
    }
    let mask = FLAG_ENCRYPTED | FLAG_DESCRIPTOR | FLAG_UTF8 | FLAG_STRONG_ENCRYPTION;
    if h.flags & mask != e.flags & mask {
        return Err(bad(&"its local and central headers disagree on flags"));
    }
    if h.method != e.method.zip_method() {
        return Err(bad(&format_args!(
            "its local header says method {}, the central directory {} (local and central \
             headers disagree)",
            h.method,
            e.method.zip_method()
        )));
    }
    let fields = extra_fields(extra).ok_or_else(|| bad(&"its local extra field is malformed"))?;
    check_unicode_path(&fields, &name).map_err(|why| bad(&why))?;
    let local_zip64 = fields.iter().any(|(id, _)| *id == EXTRA_ZIP64);
    let (lsize, lcsize) = local_sizes(&fields, &h).map_err(|why| bad(&why))?;
    let descriptor = e.flags & FLAG_DESCRIPTOR != 0;
    let agree = |local: u64, central: u64| local == central || (descriptor && local == 0);
    if !agree(u64::from(h.crc32), u64::from(e.crc32))
        || !agree(lsize, e.size)
        || !agree(lcsize, e.compressed_size)
    {
        return Err(bad(&format_args!(
            "local header says crc32 {:08x}, size {lsize}, compressed size {lcsize}; the central \
             directory says {:08x}, {}, {} (local and central headers disagree)",
            h.crc32, e.crc32, e.size, e.compressed_size
        )));
    }
    let data_end = add(data_offset, e.compressed_size)
        .filter(|x| *x <= cd_offset)
        .ok_or_else(|| bad(&"its data runs into the central directory: overlapping entries"))?;
    e.data_offset = data_offset;
    let mut span_end = data_end;
    if descriptor {
        let wide = e.zip64_sizes || local_zip64;
        span_end = check_descriptor(cx, file, e, data_end, cd_offset, wide)?;
    }
    if e.method == Compression::Zstd && e.compressed_size > 0 {
        let mut head = [0u8; 14];
        let n = usize::try_from(e.compressed_size).unwrap_or(14).min(14);
        cx.read_exact_at(file, &mut head[..n], data_offset, "member data")?;
        if let Some(window) = zstd_window(&head[..n]) {
            let max = 1u64 << limits.zstd_window_log_max;
            if window > max {
                return Err(cx.limit_member(
                    &name,
                    format_args!(
                        "its zstd frame needs a {window}-byte window, over the limit of {max} \
                         bytes (zstd_window_log_max {})",
                        limits.zstd_window_log_max
                    ),
                ));
            }
        }
    }
    Ok(span_end)
}

/// Sizes from a local header, through its ZIP64 extra field when it has one. A local ZIP64
/// field holds both sizes; where a 32-bit field is not all ones, the two must agree.
fn local_sizes(
    fields: &[(u16, &[u8])],
    h: &LocalHeader,
) -> std::result::Result<(u64, u64), String> {
    let (size, csize) = (u64::from(h.size), u64::from(h.compressed_size));
    let mut found = fields.iter().filter(|(id, _)| *id == EXTRA_ZIP64);
    let Some((_, data)) = found.next() else {
        if size == MAX32 || csize == MAX32 {
            return Err(
                "its local header sets a size to 0xFFFFFFFF (defer to ZIP64) but has no ZIP64 \
                 extra field"
                    .into(),
            );
        }
        return Ok((size, csize));
    };
    if found.next().is_some() {
        return Err("its local header has two ZIP64 extra fields".into());
    }
    let mut r = Le::new(data);
    let (Some(zsize), Some(zcsize), 0) = (r.u64(), r.u64(), r.remaining()) else {
        return Err(format!(
            "its local ZIP64 extra field holds {} bytes, expected 16 (lying ZIP64 sizes)",
            data.len()
        ));
    };
    let pick = |v32: u64, v64: u64| -> std::result::Result<u64, String> {
        if v32 == MAX32 || v32 == v64 {
            Ok(v64)
        } else {
            Err(format!(
                "its local header says {v32} and its ZIP64 extra field {v64} for the same size \
                 (lying ZIP64 sizes)"
            ))
        }
    };
    Ok((pick(size, zsize)?, pick(csize, zcsize)?))
}

/// Check the data descriptor after a member's data; returns where it ends.
fn check_descriptor(
    cx: &Ctx<'_>,
    file: &File,
    e: &Entry,
    at: u64,
    cd_offset: u64,
    wide: bool,
) -> Result<u64> {
    let sizes = if wide { 16 } else { 8 };
    let room = usize::try_from(cd_offset - at)
        .unwrap_or(usize::MAX)
        .min(4 + 4 + sizes);
    let mut b = [0u8; 24];
    cx.read_exact_at(file, &mut b[..room], at, "a data descriptor")?;
    let b = &b[..room];
    let matches = |d: &[u8]| -> bool {
        let mut r = Le::new(d);
        let crc = r.u32();
        let (c, u) = if wide {
            (r.u64(), r.u64())
        } else {
            (r.u32().map(u64::from), r.u32().map(u64::from))
        };
        crc == Some(e.crc32) && c == Some(e.compressed_size) && u == Some(e.size)
    };
    if b.get(..4) == Some(&SIG_DESCRIPTOR.to_le_bytes()[..]) && matches(&b[4..]) {
        return Ok(at + 4 + 4 + sizes as u64);
    }
    if matches(b) {
        return Ok(at + 4 + sizes as u64);
    }
    Err(cx.bad_member(
        &e.name,
        "its data descriptor is missing or disagrees with the central directory",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_bytes;
    use sha2::Digest as _;

    fn member(name: &str, data: &[u8]) -> MemberSpec {
        MemberSpec {
            name: name.into(),
            source: Source::Bytes(data.to_vec()),
            method: None,
        }
    }

    fn with(mut m: MemberSpec, method: Method) -> MemberSpec {
        m.method = Some(method);
        m
    }

    /// Compressible but not trivial: words drawn by a small LCG.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let words: [&[u8]; 8] = [
            b"conv ",
            b"weight ",
            b"bias ",
            b"0.125 ",
            b"-3.5e-2 ",
            b"\n",
            b"layer.",
            b"norm ",
        ];
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let w = words[(x >> 61) as usize];
            out.extend_from_slice(w);
            out.push((x >> 33) as u8);
        }
        out.truncate(len);
        out
    }

    fn all_algos() -> Algos {
        Algos {
            sha256: true,
            blake3: true,
            crc32: true,
        }
    }

    fn write(
        dir: &Path,
        file: &str,
        members: &[MemberSpec],
        opts: &WriteOptions,
    ) -> (PathBuf, Vec<MemberReport>) {
        let out = dir.join(file);
        let written = write_bundle(&out, members, opts, &Control::default()).unwrap();
        let whole: [u8; 32] = sha2::Sha256::digest(std::fs::read(&out).unwrap()).into();
        assert_eq!(written.sha256, whole, "the sidecar digest is the file's");
        let reports = written.members;
        (out, reports)
    }

    fn contents(m: &MemberSpec) -> Vec<u8> {
        match &m.source {
            Source::Bytes(b) => b.clone(),
            Source::File(p) => std::fs::read(p).unwrap(),
        }
    }

    /// Open, read back every member and compare with what was written.
    fn check_round_trip(
        path: &Path,
        members: &[MemberSpec],
        reports: &[MemberReport],
        limits: Limits,
    ) {
        let b = Bundle::open(path, limits).unwrap();
        assert_eq!(b.entries().len(), members.len());
        let ctl = Control::default();
        for (i, (m, r)) in members.iter().zip(reports).enumerate() {
            let want = contents(m);
            let e = &b.entries()[i];
            assert_eq!(e.name, m.name);
            assert_eq!(e.size, want.len() as u64);
            assert_eq!(e.compressed_size, r.compressed_size);
            assert_eq!(e.offset, r.offset);
            assert_eq!(e.crc32, r.crc32);
            assert_eq!(b.index_of(&m.name), Some(i));
            let (data, d) = b.read_member(i, u64::MAX, &ctl).unwrap();
            assert!(data == want, "member {} differs", m.name);
            let reference = hash_bytes(&want, all_algos(), &ctl).unwrap();
            assert_eq!(d, reference);
            assert_eq!(r.sha256, reference.sha256.unwrap());
            assert_eq!(r.blake3, reference.blake3.unwrap());
            assert_eq!(r.crc32, reference.crc32.unwrap());
            assert_eq!(b.hash_member(i, true, &ctl).unwrap(), reference);
        }
    }

    fn methods() -> [Method; 3] {
        [
            Method::Stored,
            Method::Deflate { level: 6 },
            Method::Zstd { level: 3 },
        ]
    }

    #[test]
    fn round_trip_each_method() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("weights.bin");
        std::fs::write(&src, sample(3 * DEFLATE_CHUNK + 123, 7)).unwrap();
        for method in methods() {
            let members = vec![
                member("config.yml", b"models:\n  a: models/a.pt\n"),
                member("empty", b""),
                member("models/big.bin", &sample(2 * PIECE + 5, 1)),
                MemberSpec {
                    name: "models/from-file.bin".into(),
                    source: Source::File(src.clone()),
                    method: None,
                },
                member("unicode/caf\u{e9}.txt", "h\u{e9}llo".as_bytes()),
            ];
            let opts = WriteOptions {
                method,
                ..Default::default()
            };
            let (path, reports) = write(dir.path(), &format!("{method:?}.zip"), &members, &opts);
            for r in &reports {
                assert_eq!(r.method, method.compression());
            }
            if method != Method::Stored {
                assert!(reports[2].compressed_size < reports[2].size / 2);
            }
            check_round_trip(&path, &members, &reports, Limits::default());
        }
    }

    #[test]
    fn per_member_methods_keep_input_order() {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<MemberSpec> = (0..12)
            .map(|i| {
                let m = member(&format!("m{i:02}"), &sample(1000 + i * 40_000, i as u64));
                with(m, methods()[i % 3])
            })
            .collect();
        let (path, reports) = write(dir.path(), "mixed.zip", &members, &WriteOptions::default());
        assert!(reports.windows(2).all(|w| w[0].offset < w[1].offset));
        for (i, r) in reports.iter().enumerate() {
            assert_eq!(r.method, methods()[i % 3].compression());
        }
        check_round_trip(&path, &members, &reports, Limits::default());
    }

    #[test]
    fn manifest_midstates_chain_to_the_archive_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let members = vec![
            member("a.bin", &sample(3 * PIECE + 17, 3)),
            with(
                member("b.bin", &sample(ZSTD_MT_MIN as usize + 99, 4)),
                Method::Zstd { level: 3 },
            ),
            member("c.bin", &sample(5000, 5)),
        ];
        let opts = WriteOptions {
            manifest: Some("manifest.json".into()),
            ..Default::default()
        };
        let out = dir.path().join("m.zip");
        let written = write_bundle(&out, &members, &opts, &Control::default()).unwrap();
        let b = Bundle::open(&out, Limits::default()).unwrap();
        let i = b.index_of("manifest.json").unwrap();
        let (text, _) = b.read_member(i, u64::MAX, &Control::default()).unwrap();
        let text = String::from_utf8(text).unwrap();
        let list = text
            .split("\"states\":[")
            .nth(1)
            .unwrap()
            .split(']')
            .next()
            .unwrap();
        let states: Vec<[u32; 8]> = list
            .split(',')
            .map(|h| {
                let h = h.trim_matches('"');
                let bytes: Vec<u8> = (0..32)
                    .map(|k| u8::from_str_radix(&h[2 * k..2 * k + 2], 16).unwrap())
                    .collect();
                crate::sha256::state_from_bytes(&bytes.try_into().unwrap())
            })
            .collect();
        let step: u64 = text
            .split("\"step\":")
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // Thinned as the archive grew: never more than the cap, spread over the members.
        assert!(
            states.len() < MIDSTATES_MAX && step > MIDSTATE_STEP,
            "{} of {step}",
            states.len()
        );
        assert!(states.len() as u64 * step > written.members[1].offset);
        let got = crate::hash::sha256_chained(&out, step, &states, &Control::default()).unwrap();
        assert_eq!(got, Some(written.sha256));
    }

    #[test]
    fn output_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let members = vec![
            with(
                member("a.bin", &sample(3 * PIECE + 17, 3)),
                Method::Deflate { level: 1 },
            ),
            with(
                member("b.bin", &sample(ZSTD_MT_MIN as usize + 99, 4)),
                Method::Zstd { level: 3 },
            ),
            member("c.bin", &sample(5000, 5)),
            with(
                member("d.bin", &sample(DEFLATE_CHUNK * 8, 6)),
                Method::Deflate { level: 9 },
            ),
        ];
        let opts = WriteOptions {
            mtime: DosTime::from_unix(1_700_000_000),
            ..Default::default()
        };
        let (one, _) = write(dir.path(), "one.zip", &members, &opts);
        let (two, _) = write(dir.path(), "two.zip", &members, &opts);
        assert!(std::fs::read(one).unwrap() == std::fs::read(two).unwrap());
    }

    #[test]
    fn inline_and_ahead_members_are_written_alike() {
        // Member 0 is compressed straight into the output, member 1 ahead into a spool; with
        // names of equal length, their local records must match byte for byte but the name.
        let dir = tempfile::tempdir().unwrap();
        for (method, force_zip64) in [
            (Method::Deflate { level: 6 }, false),
            (Method::Zstd { level: 3 }, false),
            (Method::Zstd { level: 3 }, true),
        ] {
            let data = sample(3 * PIECE + 11, 8);
            let members = vec![
                with(member("a.bin", &data), method),
                with(member("b.bin", &data), method),
            ];
            let opts = WriteOptions {
                force_zip64,
                ..Default::default()
            };
            let (path, r) = write(dir.path(), "twins.zip", &members, &opts);
            let bytes = std::fs::read(&path).unwrap();
            let one = &bytes[r[0].offset as usize..r[1].offset as usize];
            let two = &bytes[r[1].offset as usize..(2 * r[1].offset - r[0].offset) as usize];
            let name_at = LOCAL_LEN;
            assert_eq!(one[..name_at], two[..name_at]);
            assert_eq!(one[name_at + 5..], two[name_at + 5..]);
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn zstd_members_end_with_a_skippable_frame() {
        let dir = tempfile::tempdir().unwrap();
        // A multiple of 256 KiB: the size that trips libarchive without the extra frame.
        let data = sample(1 << 20, 3);
        let members = vec![with(member("w.bin", &data), Method::Zstd { level: 3 })];
        let (path, r) = write(dir.path(), "z.zip", &members, &WriteOptions::default());
        let b = Bundle::open(&path, Limits::default()).unwrap();
        let e = &b.entries()[0];
        let bytes = std::fs::read(&path).unwrap();
        let end = (e.data_offset + e.compressed_size) as usize;
        assert_eq!(bytes[end - 8..end], ZSTD_SKIPPABLE_END);
        assert!(b.read_member(0, u64::MAX, &Control::default()).unwrap().0 == data);
        assert_eq!(r[0].size, data.len() as u64);
    }

    #[test]
    fn zstd_output_does_not_depend_on_worker_count() {
        let data = sample(12 << 20, 9);
        let compress = |workers: u32| {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            enc.include_contentsize(true).unwrap();
            enc.set_pledged_src_size(Some(data.len() as u64)).unwrap();
            enc.multithread(workers).unwrap();
            for piece in data.chunks(1 << 20) {
                enc.write_all(piece).unwrap();
            }
            enc.finish().unwrap()
        };
        let one = compress(1);
        assert!(one == compress(2));
        assert!(one == compress(4));
    }

    #[test]
    fn dos_time_from_unix() {
        assert_eq!(DosTime::from_unix(0), DosTime::EPOCH);
        // 2023-11-14 22:13:20 UTC
        let t = DosTime::from_unix(1_700_000_000);
        assert_eq!(t.date >> 9, 2023 - 1980);
        assert_eq!((t.date >> 5) & 0xf, 11);
        assert_eq!(t.date & 0x1f, 14);
        assert_eq!(t.time, 22 << 11 | 13 << 5 | 10);
        assert_eq!(DosTime::from_unix(i64::MAX / 4).date >> 9, 127);
        assert_eq!(DosTime::from_unix(-5), DosTime::EPOCH);
    }

    #[test]
    fn forced_zip64_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<MemberSpec> = methods()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                with(
                    member(&format!("m{i}"), &sample(70_000 * (i + 1), i as u64)),
                    *m,
                )
            })
            .collect();
        let opts = WriteOptions {
            force_zip64: true,
            ..Default::default()
        };
        let (path, reports) = write(dir.path(), "z64.zip", &members, &opts);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.windows(4).any(|w| w == SIG_ZIP64_EOCD.to_le_bytes()));
        check_round_trip(&path, &members, &reports, Limits::default());
    }

    #[test]
    fn more_than_65535_members_use_zip64() {
        let dir = tempfile::tempdir().unwrap();
        let n = 65_537;
        let members: Vec<MemberSpec> = (0..n)
            .map(|i| member(&format!("{i:05x}"), &[i as u8]))
            .collect();
        let (path, _) = write(dir.path(), "many.zip", &members, &WriteOptions::default());
        let limits = Limits {
            max_members: 70_000,
            ..Default::default()
        };
        let b = Bundle::open(&path, limits).unwrap();
        assert_eq!(b.entries().len(), n);
        let last = b.index_of(&format!("{:05x}", n - 1)).unwrap();
        let (data, _) = b.read_member(last, 10, &Control::default()).unwrap();
        assert_eq!(data, [(n - 1) as u8]);
        let fewer = Limits {
            max_members: 65_536,
            ..Default::default()
        };
        let err = Bundle::open(&path, fewer).map(|_| ()).unwrap_err();
        assert!(matches!(err, Error::Limit(_)), "{err}");
        assert!(
            err.to_string()
                .contains("65537 members, over the limit of 65536 (max_members)"),
            "{err}"
        );
    }

    #[test]
    fn writer_refuses_unsafe_names() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&[&str], &str)] = &[
            (&["models/../x.pth"], "escapes the bundle"),
            (&["/etc/passwd"], "absolute path"),
            (&["C:/x"], "drive letter"),
            (&["a\\b"], "backslash"),
            (&["a\0b"], "NUL"),
            (&[""], "empty"),
            (&["a//b"], "empty path component"),
            (&["./a"], "'.' component"),
            (&["dir/"], "ends with '/'"),
            (&["a", "a"], "duplicate name"),
            (&["Model.bin", "model.BIN"], "differ only in case"),
            (&["caf\u{e9}", "cafe\u{301}"], "Unicode form"),
            (&["a", "a/b"], "is a file, not a directory"),
        ];
        for (names, want) in cases {
            let members: Vec<MemberSpec> = names.iter().map(|n| member(n, b"x")).collect();
            let err = write_bundle(
                &dir.path().join("bad.zip"),
                &members,
                &WriteOptions::default(),
                &Control::default(),
            )
            .unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{names:?}: {err}");
            assert!(err.to_string().contains(want), "{names:?}: {err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn output_is_atomic_and_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b.zip");
        let members = vec![member("a", b"hello")];
        std::fs::write(&out, b"old").unwrap();
        let err = write_bundle(
            &out,
            &members,
            &WriteOptions::default(),
            &Control::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
        let opts = WriteOptions {
            overwrite: true,
            ..Default::default()
        };
        write_bundle(&out, &members, &opts, &Control::default()).unwrap();
        assert!(Bundle::open(&out, Limits::default()).is_ok());

        let empty = dir.path().join("empty.zip");
        write_bundle(&empty, &[], &WriteOptions::default(), &Control::default()).unwrap();
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), EOCD_LEN as u64);
        assert!(Bundle::open(&empty, Limits::default())
            .unwrap()
            .entries()
            .is_empty());
        std::fs::remove_file(&empty).unwrap();

        let ctl = Control::default();
        ctl.cancel();
        let big = vec![with(
            member("big", &sample(PIECE * 2, 1)),
            Method::Deflate { level: 1 },
        )];
        let err = write_bundle(
            &dir.path().join("c.zip"),
            &big,
            &WriteOptions::default(),
            &ctl,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        let missing = vec![MemberSpec {
            name: "m".into(),
            source: Source::File(dir.path().join("missing")),
            method: Some(Method::Zstd { level: 1 }),
        }];
        let err = write_bundle(
            &dir.path().join("d.zip"),
            &missing,
            &WriteOptions::default(),
            &Control::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Io { path, .. } if path.ends_with("missing")),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("b.zip")]);
    }

    #[test]
    fn extract_and_map_members() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample(300_000, 2);
        let members = vec![
            member("a.bin", &data),
            with(member("b.bin", &data), Method::Zstd { level: 3 }),
        ];
        let (path, reports) = write(dir.path(), "x.zip", &members, &WriteOptions::default());
        let b = Bundle::open(&path, Limits::default()).unwrap();
        let ctl = Control::default();

        let (off, len) = b.member_data_range(0).unwrap();
        let raw = std::fs::read(&path).unwrap();
        assert!(raw[off as usize..(off + len) as usize] == data[..]);
        assert!(b.member_data_range(1).is_err());

        let dest = dir.path().join("out.bin");
        let expect = Expected {
            sha256: Some(reports[1].sha256),
            blake3: Some(reports[1].blake3),
        };
        b.extract_member(1, &dest, &expect, false, &ctl).unwrap();
        assert!(std::fs::read(&dest).unwrap() == data);
        let err = b
            .extract_member(1, &dest, &expect, false, &ctl)
            .unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );

        let wrong = Expected {
            sha256: Some([0; 32]),
            blake3: None,
        };
        let other = dir.path().join("other.bin");
        let err = b
            .extract_member(0, &other, &wrong, false, &ctl)
            .unwrap_err();
        assert!(
            matches!(err, Error::Integrity(_)) && err.to_string().contains("sha256"),
            "{err}"
        );
        assert!(!other.exists());

        #[cfg(unix)]
        {
            let target = dir.path().join("target");
            std::fs::write(&target, b"keep").unwrap();
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&target, &link).unwrap();
            assert!(b
                .extract_member(0, &link, &Expected::default(), false, &ctl)
                .is_err());
            b.extract_member(0, &link, &Expected::default(), true, &ctl)
                .unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), b"keep");
            assert!(!std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink());
        }
        let mut sink = Vec::new();
        b.copy_member(0, &mut sink, &ctl).unwrap();
        assert!(sink == data);
        let err = b.read_member(0, 10, &ctl).unwrap_err();
        assert!(matches!(err, Error::Limit(_)), "{err}");
        assert!(b.entry(9).is_err());
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".partial")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    // ---- hostile archives, built by hand ----

    #[derive(Clone)]
    struct Raw {
        name: Vec<u8>,
        data: Vec<u8>,
        method: u16,
        flags: u16,
        crc: u32,
        size: u32,
        csize: u32,
        made_by: u16,
        external: u32,
        local_extra: Vec<u8>,
        central_extra: Vec<u8>,
        local_name: Option<Vec<u8>>,
        local_crc: Option<u32>,
        central_offset: Option<u32>,
    }

    fn crc(data: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(data);
        h.finalize()
    }

    fn raw(name: &str, content: &[u8]) -> Raw {
        Raw {
            name: name.as_bytes().to_vec(),
            data: content.to_vec(),
            method: METHOD_STORED,
            flags: FLAG_UTF8,
            crc: crc(content),
            size: content.len() as u32,
            csize: content.len() as u32,
            made_by: MADE_BY_UNIX,
            external: (S_IFREG | 0o644) << 16,
            local_extra: Vec::new(),
            central_extra: Vec::new(),
            local_name: None,
            local_crc: None,
            central_offset: None,
        }
    }

    fn raw_deflate(name: &str, content: &[u8]) -> Raw {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(content).unwrap();
        let data = enc.finish().unwrap();
        Raw {
            csize: data.len() as u32,
            data,
            method: METHOD_DEFLATE,
            ..raw(name, content)
        }
    }

    fn raw_zstd(name: &str, content: &[u8]) -> Raw {
        let data = zstd::encode_all(content, 19).unwrap();
        Raw {
            csize: data.len() as u32,
            data,
            method: METHOD_ZSTD,
            ..raw(name, content)
        }
    }

    fn build_with(entries: &[Raw], comment: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for e in entries {
            offsets.push(out.len() as u32);
            let name = e.local_name.clone().unwrap_or_else(|| e.name.clone());
            LocalHeader {
                version_needed: 20,
                flags: e.flags,
                method: e.method,
                time: 0,
                date: 0x21,
                crc32: e.local_crc.unwrap_or(e.crc),
                compressed_size: e.csize,
                size: e.size,
                name_len: name.len() as u16,
                extra_len: e.local_extra.len() as u16,
            }
            .encode(&mut out);
            out.extend_from_slice(&name);
            out.extend_from_slice(&e.local_extra);
            out.extend_from_slice(&e.data);
        }
        let cd_offset = out.len() as u32;
        for (e, off) in entries.iter().zip(offsets) {
            CentralHeader {
                made_by: e.made_by,
                version_needed: 20,
                flags: e.flags,
                method: e.method,
                time: 0,
                date: 0x21,
                crc32: e.crc,
                compressed_size: e.csize,
                size: e.size,
                name_len: e.name.len() as u16,
                extra_len: e.central_extra.len() as u16,
                comment_len: 0,
                disk_start: 0,
                internal_attr: 0,
                external_attr: e.external,
                offset: e.central_offset.unwrap_or(off),
            }
            .encode(&mut out);
            out.extend_from_slice(&e.name);
            out.extend_from_slice(&e.central_extra);
        }
        let cd_size = out.len() as u32 - cd_offset;
        Eocd {
            entries_on_disk: entries.len() as u16,
            entries: entries.len() as u16,
            cd_size,
            cd_offset,
            comment_len: comment.len() as u16,
            ..Default::default()
        }
        .encode(&mut out);
        out.extend_from_slice(comment);
        out
    }

    fn build(entries: &[Raw]) -> Vec<u8> {
        build_with(entries, b"")
    }

    fn open_bytes(bytes: &[u8], limits: Limits) -> Result<Bundle> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        Bundle::open(f.path(), limits)
    }

    /// Open must fail with an `Unsafe` error whose message contains `want` (and the member).
    fn refused(bytes: &[u8], want: &str) -> String {
        refused_with(bytes, Limits::default(), want)
    }

    fn refused_with(bytes: &[u8], limits: Limits, want: &str) -> String {
        let err = open_bytes(bytes, limits).expect_err(want);
        let text = err.to_string();
        assert!(text.contains(want), "wanted {want:?}, got: {text}");
        assert!(matches!(err, Error::Unsafe(_) | Error::Limit(_)), "{text}");
        text
    }

    fn zip64_extra(values: &[u64]) -> Vec<u8> {
        let mut z = Vec::new();
        for v in values {
            put64(&mut z, *v);
        }
        let mut out = Vec::new();
        put_extra(&mut out, EXTRA_ZIP64, &z);
        out
    }

    #[test]
    fn hand_built_archive_is_accepted() {
        let entries = [
            raw("a.txt", b"hello"),
            raw_deflate("b.txt", &sample(10_000, 1)),
            raw_zstd("c.txt", &sample(10_000, 2)),
            raw("dir/", b""),
        ];
        let b = open_bytes(&build(&entries), Limits::default()).unwrap();
        assert!(b.entries()[3].is_dir);
        for i in 0..3 {
            b.hash_member(i, true, &Control::default()).unwrap();
        }
    }

    #[test]
    fn refuses_unsafe_names() {
        for (name, want) in [
            (
                "models/../x.pth",
                "member 'models/../x.pth': name escapes the bundle (contains '..')",
            ),
            ("../x", "escapes the bundle"),
            ("/etc/passwd", "absolute path"),
            ("C:/Windows/x", "drive letter"),
            ("c:x", "drive letter"),
            ("a\\..\\b", "backslash"),
            ("a\0b", "NUL byte"),
            ("a\nb", "control character"),
            ("a//b", "empty path component"),
        ] {
            refused(&build(&[raw(name, b"x")]), want);
        }
        refused(&build(&[raw("", b"x")]), "name is empty");
        let long = "a".repeat(5000);
        refused(&build(&[raw(&long, b"x")]), "over the limit of 4096");
        let mut latin1 = raw("x", b"x");
        latin1.name = vec![b'a', 0xe9];
        latin1.flags = 0;
        refused(&build(&[latin1.clone()]), "not valid UTF-8");
        latin1.name = "caf\u{e9}".as_bytes().to_vec();
        refused(&build(&[latin1]), "not marked as UTF-8");
    }

    #[test]
    fn refuses_links_devices_and_setuid() {
        for (mode, want) in [
            (0o120_777, "symbolic link"),
            (0o020_644, "device or special file"),
            (0o060_644, "device or special file"),
            (0o010_644, "device or special file"),
            (0o104_755, "setuid or setgid"),
            (0o102_755, "setuid or setgid"),
            (0o040_755, "marked as a directory"),
        ] {
            let mut e = raw("x", b"data");
            e.external = mode << 16;
            refused(&build(&[e]), want);
        }
    }

    #[test]
    fn refuses_duplicates() {
        refused(
            &build(&[raw("a", b"1"), raw("a", b"2")]),
            "member 'a': duplicate name",
        );
        refused(
            &build(&[raw("Model.bin", b"1"), raw("model.BIN", b"2")]),
            "differ only in case",
        );
        refused(
            &build(&[raw("caf\u{e9}", b"1"), raw("cafe\u{301}", b"2")]),
            "Unicode form",
        );
        refused(
            &build(&[raw("stra\u{df}e", b"1"), raw("STRASSE", b"2")]),
            "collides",
        );
        refused(&build(&[raw("a", b"1"), raw("a/", b"")]), "collides");
        refused(
            &build(&[raw("a", b"1"), raw("a/b", b"2")]),
            "is a file, not a directory",
        );
    }

    #[test]
    fn refuses_encryption_and_unknown_methods() {
        let mut e = raw("secret", b"x");
        e.flags |= FLAG_ENCRYPTED;
        refused(&build(&[e]), "member 'secret': it is encrypted");
        let mut e = raw("aes", b"x");
        e.method = METHOD_AES;
        refused(&build(&[e]), "encrypted");
        let mut e = raw("bz", b"x");
        e.method = 12;
        refused(&build(&[e]), "unsupported compression method 12");
    }

    #[test]
    fn refuses_overlapping_entries() {
        // Fifield's construction: the first member's data runs over the second one's header.
        let second = raw("b", b"BBBB");
        let second_len = LOCAL_LEN + 1 + 4;
        let mut first = raw("a", b"AAAA");
        first.csize += second_len as u32;
        first.size = first.csize;
        refused(&build(&[first, second]), "overlapping entries");

        // Two central entries sharing one local header.
        let mut twin = raw("a", b"AAAA");
        twin.central_offset = Some(0);
        let mut bytes = build(&[raw("a", b"AAAA"), twin.clone()]);
        // Rename the second central entry, so only the shared offset is wrong.
        let pos = bytes
            .windows(4)
            .rposition(|w| w == SIG_CENTRAL.to_le_bytes())
            .unwrap();
        bytes[pos + CENTRAL_LEN] = b'z';
        refused(&bytes, "local and central headers disagree");
    }

    #[test]
    fn refuses_gaps_and_junk() {
        let mut bytes = build(&[raw("a", b"AAAA")]);
        bytes.extend_from_slice(b"junk");
        refused(&bytes, "4 bytes of trailing data");

        let mut prefixed = b"MZ stub".to_vec();
        prefixed.extend_from_slice(&build(&[raw("a", b"AAAA")]));
        refused(&prefixed, "");

        let mut first = raw("a", b"AAAA");
        first.data.extend_from_slice(b"hidden");
        let bytes = build(&[first, raw("b", b"B")]);
        refused(&bytes, "belong to no member");
    }

    #[test]
    fn refuses_two_end_records() {
        let inner = build(&[raw("a", b"AAAA")]);
        let eocd = &inner[inner.len() - EOCD_LEN..];
        let bytes = build_with(&[raw("a", b"AAAA")], eocd);
        refused(&bytes, "two end-of-central-directory records");
        // A comment that merely contains the signature is still a second, hidden end record.
        let mut sig_only = SIG_EOCD.to_le_bytes().to_vec();
        sig_only.extend_from_slice(&[0; 18]);
        let bytes = build_with(&[raw("a", b"AAAA")], &sig_only);
        refused(&bytes, "");
    }

    #[test]
    fn refuses_local_central_mismatch() {
        let mut e = raw("a.bin", b"AAAA");
        e.local_name = Some(b"b.bin".to_vec());
        refused(
            &build(&[e]),
            "member 'a.bin': its local header names it 'b.bin'",
        );
        let mut e = raw("a.bin", b"AAAA");
        e.local_crc = Some(1);
        refused(&build(&[e]), "local and central headers disagree");
    }

    #[test]
    fn refuses_lying_zip64_sizes() {
        // A ZIP64 extra field where the 32-bit fields do not defer to it.
        let mut e = raw("a", b"AAAA");
        e.central_extra = zip64_extra(&[4, 1 << 40]);
        refused(&build(&[e]), "lying ZIP64 sizes");
        // Deferring, but the extra field is short.
        let mut e = raw("a", b"AAAA");
        e.size = MAX32 as u32;
        e.csize = MAX32 as u32;
        e.central_extra = zip64_extra(&[4]);
        e.local_extra = zip64_extra(&[4, 4]);
        refused(&build(&[e]), "lying ZIP64 sizes");
        // Local ZIP64 values that contradict the local 32-bit fields.
        let mut e = raw("a", b"AAAA");
        e.local_extra = zip64_extra(&[999, 999]);
        refused(&build(&[e]), "lying ZIP64 sizes");
        // Deferring without any ZIP64 field.
        let mut e = raw("a", b"AAAA");
        e.size = MAX32 as u32;
        refused(&build(&[e]), "no ZIP64 extra field");
        // Consistent ZIP64 is fine.
        let mut e = raw("a", b"AAAA");
        e.size = MAX32 as u32;
        e.csize = MAX32 as u32;
        e.central_extra = zip64_extra(&[4, 4]);
        e.local_extra = zip64_extra(&[4, 4]);
        assert!(open_bytes(&build(&[e]), Limits::default()).is_ok());
    }

    #[test]
    fn refuses_disagreeing_end_records() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriteOptions {
            force_zip64: true,
            ..Default::default()
        };
        let (path, _) = write(
            dir.path(),
            "z.zip",
            &[member("a", b"A"), member("b", b"B")],
            &opts,
        );
        let mut bytes = std::fs::read(path).unwrap();
        let n = bytes.len();
        // The 16-bit entry count of the end record says 1, the ZIP64 record 2.
        bytes[n - EOCD_LEN + 8] = 1;
        bytes[n - EOCD_LEN + 10] = 1;
        refused(&bytes, "the ZIP64 end record disagrees with the end record");
        // The classic end record alone, pointing past the file.
        let mut bytes = build(&[raw("a", b"A")]);
        let n = bytes.len();
        bytes[n - 6] = 0x7f;
        refused(&bytes, "runs past the end records");
    }

    #[test]
    fn enforces_ratio_and_size_limits() {
        let zeros = vec![0u8; 4 << 20];
        let strict = Limits {
            max_ratio: 100,
            ..Default::default()
        };
        let text = refused_with(
            &build(&[raw_deflate("a.bin", &zeros)]),
            strict,
            "exceeds the limit 100:1",
        );
        assert!(text.contains("member 'a.bin': compression ratio"), "{text}");
        refused(
            &build(&[raw_zstd("z.bin", &zeros)]),
            "exceeds the limit 1000:1",
        );
        let small = Limits {
            max_member_size: 1000,
            ..Default::default()
        };
        refused_with(
            &build(&[raw("a", &[1; 2000])]),
            small.clone(),
            "per-member limit of 1000",
        );
        let total = Limits {
            max_total_size: 3000,
            ..Default::default()
        };
        refused_with(
            &build(&[raw("a", &[1; 2000]), raw("b", &[1; 2000])]),
            total,
            "max_total_size",
        );
        let few = Limits {
            max_members: 1,
            ..Default::default()
        };
        refused_with(
            &build(&[raw("a", b"1"), raw("b", b"2")]),
            few,
            "max_members",
        );
    }

    #[test]
    fn caps_output_that_exceeds_its_declared_size() {
        for mut e in [
            raw_deflate("bomb", &vec![0u8; 2 << 20]),
            raw_zstd("bomb", &vec![0u8; 2 << 20]),
        ] {
            e.size = 1000;
            let b = open_bytes(&build(&[e]), Limits::default()).unwrap();
            let err = b.hash_member(0, true, &Control::default()).unwrap_err();
            assert!(matches!(err, Error::Limit(_)), "{err}");
            assert!(
                err.to_string()
                    .contains("more than the 1000 bytes it declares"),
                "{err}"
            );
        }
    }

    /// A zstd frame with a raw block, declaring a `1 << log` window.
    fn zstd_frame_with_window(log: u8, content: &[u8]) -> Vec<u8> {
        let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
        f.push(0); // no single segment, no content size, no checksum
        f.push((log - 10) << 3);
        let header = (content.len() as u32) << 3 | 1; // last block, raw
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.extend_from_slice(content);
        f
    }

    #[test]
    fn limits_the_zstd_window() {
        let content = b"hello";
        let frame = zstd_frame_with_window(30, content);
        let mut dec = zstd::stream::read::Decoder::new(&frame[..]).unwrap();
        dec.window_log_max(31).unwrap();
        let mut plain = Vec::new();
        dec.read_to_end(&mut plain).unwrap();
        assert_eq!(plain, content);
        let mut e = raw("big-window", content);
        e.method = METHOD_ZSTD;
        e.csize = frame.len() as u32;
        e.data = frame;
        refused(
            &build(&[e.clone()]),
            "member 'big-window': its zstd frame needs a 1073741824-byte window",
        );
        let roomy = Limits {
            zstd_window_log_max: 30,
            ..Default::default()
        };
        let b = open_bytes(&build(&[e]), roomy).unwrap();
        assert_eq!(
            b.read_member(0, 100, &Control::default()).unwrap().0,
            content
        );

        // The second frame asks for the big window: the decoder's own limit catches it.
        let mut data = zstd_frame_with_window(20, b"ab");
        data.extend(zstd_frame_with_window(31, b"cd"));
        let mut e = raw("second", b"abcd");
        e.method = METHOD_ZSTD;
        e.csize = data.len() as u32;
        e.data = data;
        let b = open_bytes(&build(&[e]), Limits::default()).unwrap();
        let err = b.hash_member(0, true, &Control::default()).unwrap_err();
        assert!(matches!(err, Error::Limit(_)), "{err}");
        assert!(err.to_string().contains("window over the limit"), "{err}");
    }

    #[test]
    fn detects_corrupt_data() {
        let mut bytes = build(&[raw("a", b"hello world"), raw_deflate("b", &sample(5000, 1))]);
        bytes[LOCAL_LEN + 1 + 3] ^= 1;
        let b = open_bytes(&bytes, Limits::default()).unwrap();
        let err = b.hash_member(0, true, &Control::default()).unwrap_err();
        assert!(
            matches!(err, Error::Integrity(_)) && err.to_string().contains("crc32"),
            "{err}"
        );
        assert!(b.hash_member(1, true, &Control::default()).is_ok());
        for cut in [1, 10, 23, 100] {
            assert!(open_bytes(&bytes[..bytes.len() - cut], Limits::default()).is_err());
        }
    }

    #[test]
    fn data_descriptors_are_checked() {
        // As a streaming writer (Python's zipfile on a pipe) makes them.
        let content = sample(3000, 4);
        let mut e = raw_deflate("s", &content);
        e.flags |= FLAG_DESCRIPTOR;
        e.local_crc = Some(0);
        let mut desc = SIG_DESCRIPTOR.to_le_bytes().to_vec();
        put32(&mut desc, e.crc);
        put32(&mut desc, e.csize);
        put32(&mut desc, e.size);
        let mut with_desc = e.clone();
        with_desc.data.extend_from_slice(&desc);
        // The local header has zero sizes; build writes the central ones, so patch afterwards.
        let mut bytes = build(&[with_desc.clone(), raw("t", b"tail")]);
        bytes[18..26].fill(0);
        // The central entry's csize must not include the descriptor.
        let b = open_bytes(&bytes, Limits::default());
        // `build` set both compressed sizes to the data without the descriptor: accepted.
        let b = b.unwrap();
        assert_eq!(
            b.read_member(0, u64::MAX, &Control::default()).unwrap().0,
            content
        );

        let mut bad = bytes.clone();
        let at = LOCAL_LEN + 1 + e.data.len() + 4;
        bad[at] ^= 0xff;
        refused(&bad, "data descriptor");
    }

    /// A valid archive with every method, to mutate.
    fn fuzz_base() -> &'static [u8] {
        static BASE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        BASE.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let members = vec![
                member("a.txt", b"hello hello hello"),
                with(
                    member("m/b.bin", &sample(700, 1)),
                    Method::Deflate { level: 6 },
                ),
                with(
                    member("m/c.bin", &sample(900, 2)),
                    Method::Zstd { level: 3 },
                ),
            ];
            let (path, _) = write(dir.path(), "base.zip", &members, &WriteOptions::default());
            std::fs::read(path).unwrap()
        })
    }

    /// Opening and reading must never panic, whatever the bytes.
    fn exercise(bytes: &[u8]) {
        let limits = Limits {
            max_ratio: 50,
            ratio_min_size: 0,
            ..Default::default()
        };
        if let Ok(b) = open_bytes(bytes, limits) {
            for i in 0..b.entries().len() {
                let _ = b.hash_member(i, true, &Control::default());
                let _ = b.read_member(i, 1 << 20, &Control::default());
            }
        }
    }

    #[test]
    fn every_single_byte_flip_is_survived() {
        let base = fuzz_base();
        assert!(open_bytes(base, Limits::default()).is_ok());
        for i in 0..base.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut b = base.to_vec();
                b[i] ^= x;
                exercise(&b);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(300))]
        #[test]
        fn random_mutations_never_panic(
            edits in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 1..8),
            cut in proptest::option::of(0usize..4096),
            insert in proptest::option::of((0usize..4096, proptest::collection::vec(proptest::num::u8::ANY, 1..40))),
        ) {
            let mut b = fuzz_base().to_vec();
            for (at, v) in edits {
                let n = b.len();
                b[at % n] = v;
            }
            if let Some((at, bytes)) = insert {
                let at = at % (b.len() + 1);
                b.splice(at..at, bytes);
            }
            if let Some(cut) = cut {
                b.truncate(cut.min(b.len()));
            }
            exercise(&b);
        }
    }

    /// Writes sample bundles for checking with other tools:
    /// `MODELCAS_BUNDLE_SAMPLES=/tmp/s cargo test --lib write_samples -- --ignored`.
    #[test]
    #[ignore]
    fn write_samples() {
        let Some(dir) = std::env::var_os("MODELCAS_BUNDLE_SAMPLES") else {
            return;
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let members = vec![
            member("config.yml", b"models:\n  seg: models/Seg-seg.pt\n"),
            member("empty.txt", b""),
            member("models/Seg-seg.pt", &sample(5 << 20, 1)),
            member("metadata/caf\u{e9}.json", b"{\"k\": 1}\n"),
        ];
        for method in methods() {
            for zip64 in [false, true] {
                let opts = WriteOptions {
                    method,
                    force_zip64: zip64,
                    overwrite: true,
                    ..Default::default()
                };
                let name = format!(
                    "{}{}.zip",
                    method.compression().as_str(),
                    if zip64 { "-zip64" } else { "" }
                );
                write(&dir, &name, &members, &opts);
            }
        }
    }
}

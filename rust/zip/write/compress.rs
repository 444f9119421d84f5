//! Compressing members: deflate in independent pieces on the pool (as pigz does), zstd with its
//! own workers for large members, and spools for small members compressed ahead of their turn.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::{changed_size, open_source, Input, MemberSpec};
use crate::control::Control;
use crate::error::{Error, IoContext, Result};
use crate::fsio::{read_full, PageBuf};
use crate::hash::Digests;
use crate::zip::format::MAX32;
use crate::zip::method::{Compression, Method};
use crate::zip::names::quote;
use crate::zip::pump::{pump, PIECE};

/// Deflate compresses independent pieces of this size in parallel, each primed with the 32 KiB
/// before it (as pigz does). Fixed, so the output does not depend on the number of cores.
pub(super) const DEFLATE_CHUNK: usize = if cfg!(test) { 16 << 10 } else { 1 << 20 };
const DEFLATE_WINDOW: usize = 32 << 10;
/// A spool keeps this much compressed data in memory before it spills to a temporary file.
const SPOOL_MEM: usize = if cfg!(test) { 64 << 10 } else { 4 << 20 };
/// Members at least this large use zstd's own worker threads.
pub(super) const ZSTD_MT_MIN: u64 = if cfg!(test) { 256 << 10 } else { 8 << 20 };
/// zstd worker threads per large member. Fixed: with one worker or more the output is the same
/// for any count, but keeping it fixed keeps the resource use predictable.
const ZSTD_WORKERS: u32 = 4;
/// A skippable zstd frame (magic 0x184D2A50) with no content.
const ZSTD_SKIPPABLE_END: [u8; 8] = [0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0];

/// A member compressed ahead of its turn.
pub(super) struct Packed {
    pub(super) digests: Digests,
    pub(super) data: Spool,
}

/// Whether a member gets ZIP64 sizes, decided from its input size alone, before compressing:
/// compressed data never exceeds its input by more than this margin (deflate and zstd both
/// stay well under 1/128 plus a little). Both write paths use it, so the bytes do not depend on
/// which one a member took.
pub(super) fn needs_zip64(size: u64, method: Compression, force: bool) -> bool {
    force
        || match method {
            Compression::Stored => size >= MAX32,
            _ => size.saturating_add(size / 128).saturating_add(1 << 20) >= MAX32,
        }
}

/// Where compressed bytes go, and how a write error there is reported.
pub(super) struct Output<'a> {
    pub(super) w: &'a mut (dyn Write + Send),
    pub(super) err: &'a (dyn Fn(io::Error) -> Error + Sync),
}

/// Read, hash and compress one member into `out`, reading its source once.
pub(super) fn compress(
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
pub(super) fn pack(
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
pub(super) struct Counted<'a, W: Write> {
    pub(super) w: &'a mut W,
    pub(super) n: u64,
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
pub(super) fn check_bound(name: &str, csize: u64, zip64: bool) -> Result<()> {
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
pub(super) struct Spool {
    dir: PathBuf,
    mem: Vec<u8>,
    file: Option<BufWriter<File>>,
    pub(super) len: u64,
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
    pub(super) fn drain(self, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
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

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::zip::testkit::*;
    use crate::zip::{Archive, Limits, WriteOptions};

    #[test]
    fn zstd_members_end_with_a_skippable_frame() {
        let dir = tempfile::tempdir().unwrap();
        // A multiple of 256 KiB: the size that trips libarchive without the extra frame.
        let data = sample(1 << 20, 3);
        let members = vec![with(member("w.bin", &data), Method::Zstd { level: 3 })];
        let (path, r) = write(dir.path(), "z.zip", &members, &WriteOptions::default());
        let b = Archive::open(&path, Limits::default()).unwrap();
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
}

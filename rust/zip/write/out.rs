//! The archive being written: local headers patched after each member's data, the central
//! directory and the end records.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::compress::{check_bound, compress, needs_zip64, Counted, Output, Packed};
use super::trailer::{Hashed, Trailer};
use super::{changed_size, open_source, Input, MemberReport, MemberSpec};
use crate::control::Control;
use crate::error::{Error, IoContext, Result};
use crate::fsio::{read_full, write_all_at};
use crate::hash::Digests;
use crate::zip::dostime::DosTime;
use crate::zip::format::*;
use crate::zip::method::{Compression, Method};
use crate::zip::pump::{pump, PIECE};

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
pub(super) struct ZipOut<'a> {
    file: &'a File,
    buf: BufWriter<&'a File>,
    path: &'a Path,
    pos: u64,
    central: Vec<CentralRecord>,
    mtime: DosTime,
    force_zip64: bool,
    trailer: Trailer,
}

impl<'a> ZipOut<'a> {
    pub(super) fn new(
        file: &'a File,
        path: &'a Path,
        mtime: DosTime,
        force_zip64: bool,
    ) -> Result<Self> {
        Ok(ZipOut {
            file,
            buf: BufWriter::with_capacity(1 << 20, file),
            path,
            pos: 0,
            central: Vec::new(),
            mtime,
            force_zip64,
            trailer: Trailer::start(file, path)?,
        })
    }

    /// What the trailer has hashed of everything written so far.
    pub(super) fn hashed_so_far(&mut self) -> Result<Hashed> {
        self.trailer.report()
    }

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
            compressed_size: if zip64 { u32::MAX } else { sat32(csize) },
            size: if zip64 { u32::MAX } else { sat32(size) },
            name_len: sat16(name.len()),
            extra_len: sat16(extra.len()),
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
            put32(&mut b, sat32(csize));
            put32(&mut b, sat32(size));
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
    pub(super) fn stored(&mut self, spec: &MemberSpec, ctl: &Control) -> Result<MemberReport> {
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
    pub(super) fn compressed(
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
    pub(super) fn packed(
        &mut self,
        name: &str,
        method: Compression,
        packed: Packed,
    ) -> Result<MemberReport> {
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
    pub(super) fn finish(mut self) -> Result<Hashed> {
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
                    u32::MAX
                } else {
                    sat32(rec.compressed_size)
                },
                size: if rec.zip64 { u32::MAX } else { sat32(rec.size) },
                name_len: sat16(rec.name.len()),
                extra_len: sat16(extra.len()),
                comment_len: 0,
                disk_start: 0,
                internal_attr: 0,
                external_attr: (S_IFREG | 0o644) << 16,
                offset: if offset64 {
                    u32::MAX
                } else {
                    sat32(rec.offset)
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
        let entries16 = u16::try_from(entries).unwrap_or(u16::MAX);
        Eocd {
            disk: 0,
            cd_disk: 0,
            entries_on_disk: entries16,
            entries: entries16,
            cd_size: sat32(cd_size),
            cd_offset: sat32(cd_offset),
            comment_len: 0,
        }
        .encode(&mut tail);
        self.put(&tail)?;
        self.buf.flush().at(self.path, "write")?;
        self.trailer.finish(self.pos)
    }
}

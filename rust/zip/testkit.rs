//! Test helpers for the zip reader and writer: sample data, members, written bundles, and
//! archives built by hand field by field, to break one rule at a time.
#![allow(clippy::cast_possible_truncation)]

use std::io::Write;

use sha2::Digest as _;
use std::path::{Path, PathBuf};

use crate::control::Control;
use crate::error::{Error, Result};
use crate::hash::{hash_bytes, Algos};
use crate::zip::format::*;
use crate::zip::{
    write_bundle, Archive, Limits, MemberReport, MemberSpec, Method, Source, WriteOptions,
};

pub(crate) fn member(name: &str, data: &[u8]) -> MemberSpec {
    MemberSpec {
        name: name.into(),
        source: Source::Bytes(data.to_vec()),
        method: None,
        expect_sha256: None,
    }
}

pub(crate) fn with(mut m: MemberSpec, method: Method) -> MemberSpec {
    m.method = Some(method);
    m
}

/// Compressible but not trivial: words drawn by a small LCG.
pub(crate) fn sample(len: usize, seed: u64) -> Vec<u8> {
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

pub(crate) fn all_algos() -> Algos {
    Algos {
        sha256: true,
        blake3: true,
        crc32: true,
    }
}

pub(crate) fn write(
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

pub(crate) fn contents(m: &MemberSpec) -> Vec<u8> {
    match &m.source {
        Source::Bytes(b) => b.clone(),
        Source::File(p) => std::fs::read(p).unwrap(),
    }
}

/// Open, read back every member and compare with what was written.
pub(crate) fn check_round_trip(
    path: &Path,
    members: &[MemberSpec],
    reports: &[MemberReport],
    limits: Limits,
) {
    let b = Archive::open(path, limits).unwrap();
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

pub(crate) fn methods() -> [Method; 3] {
    [
        Method::Stored,
        Method::Deflate { level: 6 },
        Method::Zstd { level: 3 },
    ]
}

#[derive(Clone)]
pub(crate) struct Raw {
    pub(crate) name: Vec<u8>,
    pub(crate) data: Vec<u8>,
    pub(crate) method: u16,
    pub(crate) flags: u16,
    pub(crate) crc: u32,
    pub(crate) size: u32,
    pub(crate) csize: u32,
    pub(crate) made_by: u16,
    pub(crate) external: u32,
    pub(crate) local_extra: Vec<u8>,
    pub(crate) central_extra: Vec<u8>,
    pub(crate) local_name: Option<Vec<u8>>,
    pub(crate) local_crc: Option<u32>,
    pub(crate) central_offset: Option<u32>,
}

pub(crate) fn crc(data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(data);
    h.finalize()
}

pub(crate) fn raw(name: &str, content: &[u8]) -> Raw {
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

pub(crate) fn raw_deflate(name: &str, content: &[u8]) -> Raw {
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

pub(crate) fn raw_zstd(name: &str, content: &[u8]) -> Raw {
    let data = zstd::encode_all(content, 19).unwrap();
    Raw {
        csize: data.len() as u32,
        data,
        method: METHOD_ZSTD,
        ..raw(name, content)
    }
}

pub(crate) fn build_with(entries: &[Raw], comment: &[u8]) -> Vec<u8> {
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

pub(crate) fn build(entries: &[Raw]) -> Vec<u8> {
    build_with(entries, b"")
}

pub(crate) fn open_bytes(bytes: &[u8], limits: Limits) -> Result<Archive> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    Archive::open(f.path(), limits)
}

/// Open must fail with an `Unsafe` error whose message contains `want` (and the member).
pub(crate) fn refused(bytes: &[u8], want: &str) -> String {
    refused_with(bytes, Limits::default(), want)
}

pub(crate) fn refused_with(bytes: &[u8], limits: Limits, want: &str) -> String {
    let err = open_bytes(bytes, limits).expect_err(want);
    let text = err.to_string();
    assert!(text.contains(want), "wanted {want:?}, got: {text}");
    assert!(matches!(err, Error::Unsafe(_) | Error::Limit(_)), "{text}");
    text
}

pub(crate) fn zip64_extra(values: &[u64]) -> Vec<u8> {
    let mut z = Vec::new();
    for v in values {
        put64(&mut z, *v);
    }
    let mut out = Vec::new();
    put_extra(&mut out, EXTRA_ZIP64, &z);
    out
}

/// A zstd frame with a raw block, declaring a `1 << log` window.
pub(crate) fn zstd_frame_with_window(log: u8, content: &[u8]) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    f.push(0); // no single segment, no content size, no checksum
    f.push((log - 10) << 3);
    let header = (content.len() as u32) << 3 | 1; // last block, raw
    f.extend_from_slice(&header.to_le_bytes()[..3]);
    f.extend_from_slice(content);
    f
}

/// A valid archive with every method, to mutate.
pub(crate) fn fuzz_base() -> &'static [u8] {
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
pub(crate) fn exercise(bytes: &[u8]) {
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

/// A bundle with a manifest: a stored member of `stored_len` bytes, a zstd member of
/// `zstd_len` bytes and a small config, at `dir/b.zip`.
pub(crate) fn manifest_bundle(dir: &Path, stored_len: usize, zstd_len: usize) -> PathBuf {
    let members = vec![
        member("models/a.bin", &sample(stored_len, 1)),
        with(
            member("models/b.bin", &sample(zstd_len, 2)),
            Method::Zstd { level: 3 },
        ),
        member("config.yml", b"a: 1\n"),
    ];
    let opts = WriteOptions {
        manifest: true,
        ..Default::default()
    };
    write(dir, "b.zip", &members, &opts).0
}

/// Files left in `dir` whose names end in `.partial`.
pub(crate) fn partials(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        })
        .count()
}

//! The bundle reader: a strict reader for untrusted archives.
//!
//! The whole layout is validated when the archive is opened, before a byte is extracted: the end
//! records (`end`), every central directory entry (`central`), and every local header against
//! its entry (`layout`). Every byte of the file must belong to exactly one record: no gaps, no
//! overlap, no trailing data. Member data is then streamed (`stream`), with the limits applied
//! to the bytes actually produced and the crc32 checked at the end; `verify` checks a whole
//! bundle against its manifest and sidecar, and `extract` writes it below a directory.
#![deny(clippy::arithmetic_side_effects)]

mod central;
mod end;
mod extract;
mod layout;
mod listing;
mod stream;
mod verify;

pub use extract::ExtractOptions;
pub use listing::Problem;
pub use verify::Verified;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::control::Control;
use crate::error::{Error, IoContext, Result};
use crate::fsio::{open_checked, persist, read_at, temp_beside, Open};
use crate::hash::{hex, Digests};
use crate::zip::limits::Limits;
use crate::zip::method::Compression;
use crate::zip::names::quote;

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
    pub(crate) flags: u16,
    /// Sizes came through a ZIP64 extra field: a data descriptor then holds 8-byte sizes.
    pub(crate) zip64_sizes: bool,
}

/// Digests a member must have; checked before an extracted file is renamed into place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub sha256: Option<[u8; 32]>,
    pub blake3: Option<[u8; 32]>,
}

/// An opened, fully validated archive.
#[derive(Debug)]
pub struct Archive {
    path: PathBuf,
    file: File,
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    limits: Limits,
}

/// Reads `[pos, end)` of a file with positioned reads, so several readers can share the file.
pub(crate) struct RangeReader<'a> {
    pub(crate) file: &'a File,
    pub(crate) pos: u64,
    pub(crate) end: u64,
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
        self.pos = self.pos.saturating_add(got as u64);
        Ok(got)
    }
}

/// The end-of-archive records, resolved.
pub(crate) struct End {
    pub(crate) entries: u64,
    pub(crate) cd_offset: u64,
    pub(crate) cd_size: u64,
}

/// Builds the messages for one archive.
pub(crate) struct Ctx<'a> {
    pub(crate) path: &'a Path,
}

impl Ctx<'_> {
    pub(crate) fn bad(&self, msg: impl std::fmt::Display) -> Error {
        Error::Unsafe(format!("{}: {msg}", self.path.display()))
    }

    pub(crate) fn bad_member(&self, name: &str, msg: impl std::fmt::Display) -> Error {
        Error::Unsafe(format!(
            "{}: member {}: {msg}",
            self.path.display(),
            quote(name)
        ))
    }

    pub(crate) fn limit(&self, msg: impl std::fmt::Display) -> Error {
        Error::Limit(format!("{}: {msg}", self.path.display()))
    }

    pub(crate) fn limit_member(&self, name: &str, msg: impl std::fmt::Display) -> Error {
        Error::Limit(format!(
            "{}: member {}: {msg}",
            self.path.display(),
            quote(name)
        ))
    }

    pub(crate) fn corrupt(&self, name: &str, msg: impl std::fmt::Display) -> Error {
        Error::Integrity(format!(
            "{}: member {}: {msg}",
            self.path.display(),
            quote(name)
        ))
    }

    /// Read exactly `buf.len()` bytes at `offset`.
    pub(crate) fn read_exact_at(
        &self,
        file: &File,
        buf: &mut [u8],
        offset: u64,
        what: &str,
    ) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset.saturating_add(done as u64);
            match read_at(file, &mut buf[done..], at) {
                Ok(0) => {
                    return Err(self.bad(format_args!(
                        "the archive ends inside {what} (at offset {offset})"
                    )))
                }
                Ok(n) => done = done.saturating_add(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(self.path, "read", e)),
            }
        }
        Ok(())
    }
}

pub(crate) fn add(a: u64, b: u64) -> Option<u64> {
    a.checked_add(b)
}

impl Archive {
    /// Open and validate an archive: its records, every name, the layout of every member and
    /// the limits, before anything can be read from it.
    pub fn open(path: &Path, limits: Limits) -> Result<Archive> {
        if !(10..=31).contains(&limits.zstd_window_log_max) {
            return Err(Error::Invalid(format!(
                "zstd_window_log_max {} is out of range: expected 10 to 31",
                limits.zstd_window_log_max
            )));
        }
        // Never blocks on a FIFO, and refuses anything but a regular file before reading.
        let (file, meta) = open_checked(path, Open::Regular)?;
        let cx = Ctx { path };
        let len = meta.len();
        let end = end::find_end(&cx, &file, len, &limits)?;
        let entries = central::read_central(&cx, &file, &end, &limits)?;
        let entries = layout::check_layout(&cx, &file, entries, &end, &limits)?;
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Ok(Archive {
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
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::zip::testkit::*;
    use crate::zip::{Method, WriteOptions};
    use std::io;

    #[test]
    fn extract_members() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample(300_000, 2);
        let members = vec![
            member("a.bin", &data),
            with(member("b.bin", &data), Method::Zstd { level: 3 }),
        ];
        let (path, reports) = write(dir.path(), "x.zip", &members, &WriteOptions::default());
        let b = Archive::open(&path, Limits::default()).unwrap();
        let ctl = Control::default();

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
        let err = b.read_member(0, 10, &ctl).unwrap_err();
        assert!(matches!(err, Error::Limit(_)), "{err}");
        assert!(b.entry(9).is_err());
        let leftovers = crate::zip::testkit::partials(dir.path());
        assert_eq!(leftovers, 0);
    }

    // ---- hostile archives, built by hand ----

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

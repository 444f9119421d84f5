//! The bundle writer: a deterministic, streaming zip writer.
//!
//! Members go out in the caller's order, each read once while sha256, blake3 and crc32 are
//! computed. The member being written goes straight into the output and its local header is
//! patched afterwards (`out`): the output is a regular file, so no data descriptors are needed,
//! and every tool can read the result. Meanwhile the next small compressed members are
//! compressed ahead on the pool into spools; large ones are compressed straight into the archive
//! (`compress`). The trailer thread follows the writer and hashes the archive itself for the
//! `.sha256` sidecar and the manifest's midstates, and each stored member's sha256 beside it
//! (`trailer`). The bundle and its sidecar are then put in place as a pair.

mod compress;
mod out;
mod trailer;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;

use self::compress::{pack, ZSTD_MT_MIN};
use self::out::ZipOut;
use crate::control::{pool, Control};
use crate::error::{Error, IoContext, Result};
use crate::fsio::{persist, persist_pair, temp_beside};
use crate::hash::hex;
use crate::manifest::{self, Manifest};
use crate::zip::dostime::DosTime;
use crate::zip::limits::Limits;
use crate::zip::method::{Compression, Method};
use crate::zip::names::{check_name, quote, NameSet};

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
    /// The sha256 this member must have (a pinned store object): checked before the bundle
    /// is put in place, so a mismatch leaves nothing behind.
    pub expect_sha256: Option<[u8; 32]>,
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
    /// Append the manifest (`manifest::MEMBER`) as the last member: every other member's size,
    /// crc32, sha256 and blake3, computed while they were written, so the bundle verifies
    /// itself without a second read of its inputs.
    pub manifest: bool,
    /// Write a `.sha256` sidecar (`sha256sum` format) beside the bundle, replaced as a pair
    /// with it (see `fsio::persist_pair`).
    pub sidecar: bool,
}

/// What `write_bundle` wrote: every member, and the sha256 of the whole archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub members: Vec<MemberReport>,
    pub sha256: [u8; 32],
    /// The sidecar written beside the bundle, if one was asked for.
    pub sidecar: Option<PathBuf>,
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

    fn manifest_entry(&self) -> manifest::Entry {
        manifest::Entry {
            name: self.name.clone(),
            size: self.size,
            crc32: self.crc32,
            sha256: self.sha256,
            blake3: self.blake3,
        }
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
    check_members(members, opts)?;
    let (tmp, dir) = temp_beside(out_path, 0o666)?;
    let (reports, sha256) = {
        let mut out = ZipOut::new(tmp.as_file(), tmp.path(), opts.mtime, opts.force_zip64)?;
        let mut reports = write_members(&mut out, members, opts, &dir, ctl)?;
        if opts.manifest {
            let hashed = out.hashed_so_far()?;
            fill_stored(&mut reports, &hashed.stored)?;
            check_expected(members, &reports)?;
            let manifest = Manifest {
                members: reports.iter().map(MemberReport::manifest_entry).collect(),
                midstates: Some(hashed.midstates),
            };
            let spec = MemberSpec {
                name: manifest::MEMBER.into(),
                source: Source::Bytes(manifest.to_json().into_bytes()),
                method: Some(Method::Stored),
                expect_sha256: None,
            };
            reports.extend(write_members(&mut out, &[spec], opts, &dir, ctl)?);
        }
        let hashed = out.finish()?;
        fill_stored(&mut reports, &hashed.stored)?;
        check_expected(members, &reports)?;
        (reports, hashed.archive)
    };
    ctl.check()?;
    let sidecar = if opts.sidecar {
        let mut name = out_path.as_os_str().to_owned();
        name.push(".sha256");
        let sidecar = PathBuf::from(name);
        let (mut side, _) = temp_beside(&sidecar, 0o666)?;
        let line = sidecar_line(&hex(&sha256), out_path);
        side.write_all(&line).at(side.path(), "write")?;
        persist_pair(tmp, out_path, side, &sidecar, &dir, opts.overwrite)?;
        Some(sidecar)
    } else {
        persist(tmp, out_path, &dir, opts.overwrite)?;
        None
    };
    Ok(Written {
        members: reports,
        sha256,
        sidecar,
    })
}

/// Every name and method, checked before anything is written.
fn check_members(members: &[MemberSpec], opts: &WriteOptions) -> Result<()> {
    opts.method.validate()?;
    let mut names = NameSet::default();
    if opts.manifest {
        names
            .insert(manifest::MEMBER, false)
            .map_err(|why| Error::Invalid(format!("manifest: {why}")))?;
    }
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
        names
            .insert(&m.name, false)
            .map_err(|why| match why.as_str() {
                "duplicate name" if m.name == manifest::MEMBER => {
                    bad("the name is reserved for the bundle's manifest".into())
                }
                _ => bad(why),
            })?;
    }
    names
        .check_parents()
        .map_err(|(name, why)| Error::Invalid(format!("member {}: {why}", quote(&name))))
}

/// Members with a pinned sha256 must have been read with exactly those bytes.
fn check_expected(members: &[MemberSpec], reports: &[MemberReport]) -> Result<()> {
    for (m, r) in members.iter().zip(reports) {
        match m.expect_sha256 {
            Some(want) if want != r.sha256 => {
                let from = match &m.source {
                    Source::File(p) => p.display().to_string(),
                    Source::Bytes(_) => "its bytes".into(),
                };
                return Err(Error::Integrity(format!(
                    "member {}: {from} should have sha256 {} but {} was read; the bundle was \
                     not written",
                    quote(&m.name),
                    hex(&want),
                    hex(&r.sha256)
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The sidecar's line for the bundle, as `sha256sum` writes it: a name holding a backslash,
/// newline or carriage return is escaped and the line then starts with a backslash.
fn sidecar_line(hexdigest: &str, bundle: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let name = bundle.file_name().map_or(&[][..], |n| n.as_bytes());
    let mut escaped = Vec::with_capacity(name.len());
    for &c in name {
        match c {
            b'\\' => escaped.extend_from_slice(b"\\\\"),
            b'\n' => escaped.extend_from_slice(b"\\n"),
            b'\r' => escaped.extend_from_slice(b"\\r"),
            c => escaped.push(c),
        }
    }
    let mut line = Vec::with_capacity(escaped.len() + 68);
    if escaped.len() != name.len() {
        line.push(b'\\');
    }
    line.extend_from_slice(hexdigest.as_bytes());
    line.extend_from_slice(b"  ");
    line.extend_from_slice(&escaped);
    line.push(b'\n');
    line
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
        Source::Bytes(b) => u64::try_from(b.len()).unwrap_or(u64::MAX),
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
            size: u64::try_from(b.len()).unwrap_or(u64::MAX),
            path: PathBuf::from(format!("<bytes of {}>", spec.name)),
        }),
        Source::File(path) => {
            // O_NONBLOCK: a FIFO named as a member is refused, never waited on.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .at(path, "open")?;
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

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::compress::DEFLATE_CHUNK;
    use super::*;
    use crate::control::Control;
    use crate::zip::format::*;
    use crate::zip::pump::PIECE;
    use crate::zip::testkit::*;
    use crate::zip::Archive;
    use std::io;

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
                    expect_sha256: None,
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
    fn manifest_lists_every_member_and_midstates_chain_to_the_archive_sha256() {
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
            manifest: true,
            ..Default::default()
        };
        let out = dir.path().join("m.zip");
        let written = write_bundle(&out, &members, &opts, &Control::default()).unwrap();
        let b = Archive::open(&out, Limits::default()).unwrap();
        let i = b.index_of(manifest::MEMBER).unwrap();
        assert_eq!(i, members.len(), "the manifest is the last member");
        let (text, _) = b.read_member(i, u64::MAX, &Control::default()).unwrap();
        let m = Manifest::parse(&text).unwrap();
        for (e, r) in m.members.iter().zip(&written.members) {
            assert_eq!(e, &r.manifest_entry());
        }
        assert_eq!(m.members.len(), members.len());
        let mid = m.midstates.unwrap();
        // Thinned as the archive grew: never more than the cap, spread over the members.
        assert!(
            mid.states.len() < manifest::MIDSTATES_MAX && mid.step > manifest::MIDSTATE_STEP,
            "{} of {}",
            mid.states.len(),
            mid.step
        );
        assert!(mid.states.len() as u64 * mid.step > written.members[1].offset);
        let got = crate::chained::sha256_chained(&out, mid.step, &mid.states, &Control::default())
            .unwrap();
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
        let b = Archive::open(&path, limits).unwrap();
        assert_eq!(b.entries().len(), n);
        let last = b.index_of(&format!("{:05x}", n - 1)).unwrap();
        let (data, _) = b.read_member(last, 10, &Control::default()).unwrap();
        assert_eq!(data, [(n - 1) as u8]);
        let fewer = Limits {
            max_members: 65_536,
            ..Default::default()
        };
        let err = Archive::open(&path, fewer).map(|_| ()).unwrap_err();
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
        assert!(Archive::open(&out, Limits::default()).is_ok());

        let empty = dir.path().join("empty.zip");
        write_bundle(&empty, &[], &WriteOptions::default(), &Control::default()).unwrap();
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), EOCD_LEN as u64);
        assert!(Archive::open(&empty, Limits::default())
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
            expect_sha256: None,
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
}

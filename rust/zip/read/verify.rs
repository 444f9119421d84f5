//! A whole bundle checked against its manifest in one read: every member's size, crc32 and
//! blake3 (and sha256 when asked), and the archive's own sha256 for the sidecar, in parallel
//! segments from the manifest's midstates. Stored members and the archive digest are computed
//! from one mapping of the file, so each byte is read once for every check.
#![deny(clippy::arithmetic_side_effects)]

use rayon::prelude::*;

use super::{Archive, Problem};
use crate::chained::chained;
use crate::control::{pool, Control};
use crate::error::{Error, Result};
use crate::hash::{hex, Digests};
use crate::manifest::{self, Manifest};
use crate::mapped::Mapped;
use crate::sha256::Sha256;
use crate::zip::method::Compression;

/// Bytes hashed between checks for cancellation, and the unit crc32 is split into.
const SLICE: usize = 16 << 20;

/// What `Archive::verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Every problem, members in archive order.
    pub problems: Vec<Problem>,
    /// Members whose data was checked.
    pub checked: usize,
    /// The sha256 of the whole archive, when it was asked for.
    pub sha256: Option<[u8; 32]>,
}

impl Archive {
    /// Check every member the manifest lists against it, and find the members it does not
    /// list. With `whole`, also compute the archive's sha256 (for its sidecar), from the same
    /// read. A member whose data is corrupt is a problem; a member that breaks a limit while it
    /// is read is an error, as it is everywhere else.
    pub fn verify(
        &self,
        manifest: &Manifest,
        whole: bool,
        deep: bool,
        ctl: &Control,
    ) -> Result<Verified> {
        let mut problems = self.check_listing(manifest);
        let jobs: Vec<usize> = (0..self.entries.len())
            .filter(|&i| {
                self.entries.get(i).is_some_and(|e| {
                    !e.is_dir && e.name != manifest::MEMBER && manifest.get(&e.name).is_some()
                })
            })
            .collect();
        // A bundle truncated meanwhile is an error, not a SIGBUS (`mapped.rs`); the archive was
        // validated against its length when it opened.
        let map = Mapped::map(&self.file, &self.path)?;
        let data: &[u8] = &map;
        let (sha256, results) = pool()?.install(|| {
            rayon::join(
                || {
                    whole
                        .then(|| self.archive_sha256(data, manifest, ctl))
                        .transpose()
                },
                || {
                    jobs.par_iter()
                        .map(|&i| self.check_member(data, i, manifest, deep, ctl))
                        .collect::<Result<Vec<_>>>()
                },
            )
        });
        // Bytes read after the file shrank are zeros, not the file: say so, whatever they gave.
        map.check()?;
        let results = results?;
        let checked = results.len();
        let found: Vec<Problem> = results.into_iter().flatten().collect();
        // A member whose data fails is reported by that; a size or crc32 that also differs
        // from the manifest says the same thing again.
        problems.retain(|p| {
            !matches!(p.kind, "size" | "crc32")
                || !found
                    .iter()
                    .any(|f| f.member.is_some() && f.member == p.member)
        });
        problems.extend(found);
        // Keep archive order: listing problems first would separate a member's problems.
        let order = |p: &Problem| p.member.as_deref().and_then(|n| self.index_of(n));
        problems.sort_by_key(|p| order(p).unwrap_or(usize::MAX));
        Ok(Verified {
            problems,
            checked,
            sha256: sha256?,
        })
    }

    /// The archive's sha256: from the midstates when they chain, else in one pass.
    fn archive_sha256(&self, data: &[u8], manifest: &Manifest, ctl: &Control) -> Result<[u8; 32]> {
        if let Some(m) = &manifest.midstates {
            if let Some(digest) = chained(data, m.step, &m.states, ctl)? {
                return Ok(digest);
            }
        }
        let mut h = Sha256::new();
        for piece in data.chunks(SLICE) {
            ctl.check()?;
            h.update(piece);
        }
        Ok(h.finalize())
    }

    /// One member against the manifest: its problems (none when it is intact).
    fn check_member(
        &self,
        data: &[u8],
        index: usize,
        manifest: &Manifest,
        deep: bool,
        ctl: &Control,
    ) -> Result<Vec<Problem>> {
        let e = self.entry(index)?;
        let Some(want) = manifest.get(&e.name) else {
            return Ok(Vec::new());
        };
        let got = if e.method == Compression::Stored {
            let bytes = usize::try_from(e.data_offset)
                .ok()
                .zip(usize::try_from(e.size).ok())
                .and_then(|(at, n)| data.get(at..at.checked_add(n)?));
            let Some(bytes) = bytes else {
                let why = "its data lies outside the file (was it truncated?)";
                return Ok(vec![Problem::member(&e.name, "corrupt", why.into())]);
            };
            let d = digests(bytes, deep, ctl)?;
            if d.crc32 != Some(e.crc32) {
                let why = format!(
                    "crc32 is {:08x}, the archive says {:08x}: the data is corrupt",
                    d.crc32.unwrap_or_default(),
                    e.crc32
                );
                return Ok(vec![Problem::member(&e.name, "corrupt", why)]);
            }
            d
        } else {
            match self.hash_member(index, deep, ctl) {
                Ok(d) => d,
                Err(Error::Integrity(why)) => {
                    return Ok(vec![Problem {
                        member: Some(e.name.clone()),
                        kind: "corrupt",
                        message: why,
                    }])
                }
                Err(other) => return Err(other),
            }
        };
        let mut problems = Vec::new();
        for (algo, expected, actual) in [
            ("sha256", Some(want.sha256), got.sha256),
            ("blake3", Some(want.blake3), got.blake3),
        ] {
            if let (Some(x), Some(y)) = (expected, actual) {
                if x != y {
                    let why = format!("{algo} expected {}, found {}", hex(&x), hex(&y));
                    problems.push(Problem::member(&e.name, algo, why));
                }
            }
        }
        Ok(problems)
    }
}

/// blake3 and crc32 (and sha256 when `deep`) of `bytes`, on the pool: blake3 splits its tree
/// over the threads, crc32 runs in slices combined at the end.
fn digests(bytes: &[u8], deep: bool, ctl: &Control) -> Result<Digests> {
    let (b3, (crc, sha)) = rayon::join(
        || -> Result<blake3::Hash> {
            let mut h = blake3::Hasher::new();
            for piece in bytes.chunks(4 * SLICE) {
                ctl.check()?;
                h.update_rayon(piece);
                ctl.advance(piece.len() as u64);
            }
            Ok(h.finalize())
        },
        || {
            rayon::join(
                || {
                    let parts: Vec<crc32fast::Hasher> = bytes
                        .par_chunks(SLICE)
                        .map(|piece| {
                            let mut h = crc32fast::Hasher::new();
                            h.update(piece);
                            h
                        })
                        .collect();
                    let mut all = crc32fast::Hasher::new();
                    for p in &parts {
                        all.combine(p);
                    }
                    all.finalize()
                },
                || {
                    deep.then(|| {
                        let mut h = Sha256::new();
                        h.update(bytes);
                        h.finalize()
                    })
                },
            )
        },
    );
    Ok(Digests {
        size: bytes.len() as u64,
        sha256: sha,
        blake3: Some(*b3?.as_bytes()),
        crc32: Some(crc),
    })
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::zip::testkit::*;
    use crate::zip::Limits;
    use sha2::Digest as _;

    fn bundle(dir: &std::path::Path) -> std::path::PathBuf {
        manifest_bundle(dir, 3 << 20, 300_000)
    }

    #[test]
    fn an_intact_bundle_verifies_and_yields_its_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = bundle(dir.path());
        let a = Archive::open(&path, Limits::default()).unwrap();
        let ctl = Control::default();
        let m = a.manifest(&ctl).unwrap();
        for deep in [false, true] {
            let v = a.verify(&m, true, deep, &ctl).unwrap();
            assert_eq!(v.problems, vec![]);
            assert_eq!(v.checked, 3);
            let want: [u8; 32] = sha2::Sha256::digest(std::fs::read(&path).unwrap()).into();
            assert_eq!(v.sha256, Some(want));
        }
        assert_eq!(a.verify(&m, false, false, &ctl).unwrap().sha256, None);
    }

    #[test]
    fn a_flipped_byte_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = bundle(dir.path());
        let ctl = Control::default();
        let mut bytes = std::fs::read(&path).unwrap();
        let before = Archive::open(&path, Limits::default()).unwrap();
        let m = before.manifest(&ctl).unwrap();
        let at = before.entries()[0].data_offset as usize + 1000;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let a = Archive::open(&path, Limits::default()).unwrap();
        let v = a.verify(&m, true, false, &ctl).unwrap();
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert_eq!(v.problems[0].member.as_deref(), Some("models/a.bin"));
        assert_eq!(v.problems[0].kind, "corrupt");
        assert!(v.problems[0].message.contains("crc32"));
        let want: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        assert_eq!(
            v.sha256,
            Some(want),
            "the midstates no longer chain: one pass"
        );
    }

    #[test]
    fn a_manifest_that_lies_is_caught_by_blake3_and_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = bundle(dir.path());
        let ctl = Control::default();
        let a = Archive::open(&path, Limits::default()).unwrap();
        let mut m = a.manifest(&ctl).unwrap();
        m.members[1].blake3[0] ^= 1;
        m.members[0].sha256[0] ^= 1;
        let routine = a.verify(&m, false, false, &ctl).unwrap();
        let kinds: Vec<_> = routine.problems.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, ["blake3"]);
        let deep = a.verify(&m, false, true, &ctl).unwrap();
        let kinds: Vec<_> = deep.problems.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, ["sha256", "blake3"]);
    }
}

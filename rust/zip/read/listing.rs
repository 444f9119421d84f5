//! The archive against its manifest, without reading member data: the manifest itself, and
//! whether both list the same members with the same sizes and crc32s.
#![deny(clippy::arithmetic_side_effects)]

use super::Archive;
use crate::control::Control;
use crate::error::{Error, Result};
use crate::manifest::{self, Manifest};
use crate::zip::names::quote;

/// The most a manifest may take in memory: far more than 100,000 members need.
const MANIFEST_MAX: u64 = 64 << 20;

/// One thing a check found wrong with a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The member it concerns; `None` for the archive as a whole (its sidecar).
    pub member: Option<String>,
    /// `unlisted`, `missing`, `size`, `crc32`, `sha256`, `blake3`, `corrupt` or `sidecar`.
    pub kind: &'static str,
    pub message: String,
}

impl Problem {
    /// `message` follows the member's name: "is not in ..." as a clause, anything else after
    /// a colon.
    pub(crate) fn member(name: &str, kind: &'static str, message: String) -> Problem {
        let sep = if message.starts_with("is ") {
            " "
        } else {
            ": "
        };
        Problem {
            member: Some(name.to_string()),
            kind,
            message: format!("member {}{sep}{message}", quote(name)),
        }
    }
}

impl Archive {
    /// The bundle's manifest, read (verified by crc32) and parsed.
    pub fn manifest(&self, ctl: &Control) -> Result<Manifest> {
        let Some(index) = self.index_of(manifest::MEMBER) else {
            return Err(Error::Format(format!(
                "{} has no {}: it was not made by modelcas",
                self.path.display(),
                manifest::MEMBER
            )));
        };
        let (text, _) = self.read_member(index, MANIFEST_MAX, ctl)?;
        Manifest::parse(&text).map_err(|why| {
            Error::Format(format!(
                "{}: {} is malformed: {why}",
                self.path.display(),
                manifest::MEMBER
            ))
        })
    }

    /// Members the manifest does not list, members it lists that are not in the archive, and
    /// sizes or crc32s that differ between the two: everything that can be found without
    /// reading member data.
    pub fn check_listing(&self, manifest: &Manifest) -> Vec<Problem> {
        let mut problems = Vec::new();
        for e in self.entries() {
            if e.is_dir || e.name == manifest::MEMBER {
                continue;
            }
            let Some(want) = manifest.get(&e.name) else {
                problems.push(Problem::member(
                    &e.name,
                    "unlisted",
                    "is not in the manifest".into(),
                ));
                continue;
            };
            if want.size != e.size {
                problems.push(Problem::member(
                    &e.name,
                    "size",
                    format!(
                        "size expected {} (manifest), found {} (archive)",
                        want.size, e.size
                    ),
                ));
            } else if want.crc32 != e.crc32 {
                problems.push(Problem::member(
                    &e.name,
                    "crc32",
                    format!(
                        "crc32 expected {:08x} (manifest), found {:08x} (archive)",
                        want.crc32, e.crc32
                    ),
                ));
            }
        }
        for want in &manifest.members {
            if self.index_of(&want.name).is_none() {
                problems.push(Problem::member(
                    &want.name,
                    "missing",
                    "is in the manifest but not in the archive".into(),
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::zip::testkit::*;
    use crate::zip::{Archive, Limits};

    #[test]
    fn listing_finds_unlisted_missing_and_differing_members() {
        let entry = |name: &str, content: &[u8]| crate::manifest::Entry {
            name: name.into(),
            size: content.len() as u64,
            crc32: crc(content),
            sha256: [0; 32],
            blake3: [0; 32],
        };
        let m = Manifest {
            members: vec![
                entry("a", b"aa"),
                entry("b", b"bbb"),
                entry("c", b"c"),
                entry("gone", b""),
            ],
            midstates: None,
        };
        let bytes = build(&[
            raw("a", b"aa"),
            raw("b", b"bbbb"),
            raw("c", b"C"),
            raw("extra", b"x"),
            raw(manifest::MEMBER, m.to_json().as_bytes()),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.zip");
        std::fs::write(&path, bytes).unwrap();
        let archive = Archive::open(&path, Limits::default()).unwrap();
        assert_eq!(archive.manifest(&Control::default()).unwrap(), m);
        let found: Vec<_> = archive
            .check_listing(&m)
            .into_iter()
            .map(|p| (p.member.unwrap(), p.kind))
            .collect();
        assert_eq!(
            found,
            [
                ("b".into(), "size"),
                ("c".into(), "crc32"),
                ("extra".into(), "unlisted"),
                ("gone".to_string(), "missing"),
            ]
        );
    }

    #[test]
    fn a_missing_or_malformed_manifest_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.zip");
        for (bytes, want) in [
            (build(&[raw("a", b"x")]), "has no modelcas-manifest.json"),
            (
                build(&[raw(manifest::MEMBER, b"{\"version\": 7}")]),
                "is malformed: manifest version 7",
            ),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let archive = Archive::open(&path, Limits::default()).unwrap();
            let err = archive.manifest(&Control::default()).unwrap_err();
            assert!(matches!(err, Error::Format(_)), "{err}");
            assert!(err.to_string().contains(want), "{err}");
        }
    }
}

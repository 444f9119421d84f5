//! Extraction: every member the manifest lists, verified, written only below the destination.
#![deny(clippy::arithmetic_side_effects)]

use std::io::{BufWriter, Write};
use std::path::Path;

use super::Archive;
use crate::beneath::Beneath;
use crate::control::Control;
use crate::error::{Error, IoContext, Result};
use crate::hash::hex;
use crate::manifest::{self, Manifest};
use crate::zip::names::quote;

/// How `Archive::extract` writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExtractOptions {
    /// Replace existing files (never through a link: the link itself is replaced).
    pub overwrite: bool,
    /// Check each member's sha256 as well as its blake3 and crc32.
    pub deep: bool,
    /// Flush every file and folder to disk before returning (`unzip` does not).
    pub sync: bool,
}

impl Archive {
    /// Extract every member below `dest`, each checked against the manifest (size, crc32,
    /// blake3, and sha256 with `deep`) before it is renamed into place. A member the manifest
    /// does not list, or one it lists that is missing, fails the whole extraction before
    /// anything is written. Nothing is written outside `dest`: folders and files are created
    /// from a handle on it without following any link below it. All or nothing: on failure,
    /// what this call created is removed again. Returns the member names written.
    pub fn extract(
        &self,
        dest: &Path,
        manifest: &Manifest,
        opts: ExtractOptions,
        ctl: &Control,
    ) -> Result<Vec<String>> {
        let problems = self.check_listing(manifest);
        if let Some(first) = problems.first() {
            let more = match problems.len() {
                1 => String::new(),
                n => format!(" (and {} more problem(s))", n.saturating_sub(1)),
            };
            return Err(Error::Integrity(format!(
                "{}: {}{more}; extract writes only what the manifest lists, and all of it",
                self.path.display(),
                first.message
            )));
        }
        let mut out = Beneath::open(dest)?;
        let done = self.extract_into(&mut out, manifest, opts, ctl);
        if done.is_err() {
            out.rollback();
        }
        done
    }

    fn extract_into(
        &self,
        out: &mut Beneath,
        manifest: &Manifest,
        opts: ExtractOptions,
        ctl: &Control,
    ) -> Result<Vec<String>> {
        let mut written = Vec::new();
        for (index, e) in self.entries.iter().enumerate() {
            ctl.check()?;
            if e.is_dir {
                out.dir(e.name.trim_end_matches('/'))?;
                continue;
            }
            let (file, tmp) = out.temp_file(&e.name)?;
            let shown = out.root().join(&e.name);
            let checked = (|| -> Result<()> {
                let mut w = BufWriter::with_capacity(1 << 20, &file);
                let sink = &mut |piece: &[u8], _| w.write_all(piece).at(&shown, "write");
                let got = self.stream(index, opts.deep, sink, ctl)?;
                w.flush().at(&shown, "write")?;
                drop(w);
                // The manifest does not list itself: its crc32 is its check.
                if e.name != manifest::MEMBER {
                    let want = manifest.get(&e.name).ok_or_else(|| {
                        Error::Integrity(format!(
                            "member {} is not in the manifest",
                            quote(&e.name)
                        ))
                    })?;
                    for (what, expected, actual) in [
                        ("blake3", want.blake3, got.blake3),
                        ("sha256", want.sha256, got.sha256),
                    ] {
                        if actual.is_some_and(|a| a != expected) {
                            return Err(Error::Integrity(format!(
                                "{}: member {}: {what} is {}, expected {} (manifest); the \
                                 bundle does not hold what its manifest says: rebuild it or \
                                 fetch it again",
                                self.path.display(),
                                quote(&e.name),
                                hex(&actual.unwrap_or_default()),
                                hex(&expected)
                            )));
                        }
                    }
                }
                if opts.sync {
                    file.sync_all().at(&shown, "sync")?;
                }
                Ok(())
            })();
            if let Err(err) = checked {
                out.discard(&e.name, &tmp);
                return Err(err);
            }
            out.commit(&e.name, &tmp, opts.overwrite)?;
            written.push(e.name.clone());
        }
        if opts.sync {
            out.sync()?;
        }
        Ok(written)
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::zip::testkit::*;
    use crate::zip::Limits;

    fn bundle(dir: &Path) -> std::path::PathBuf {
        manifest_bundle(dir, 200_000, 90_000)
    }

    #[test]
    fn extracts_every_member_verified() {
        let dir = tempfile::tempdir().unwrap();
        let path = bundle(dir.path());
        let a = Archive::open(&path, Limits::default()).unwrap();
        let ctl = Control::default();
        let m = a.manifest(&ctl).unwrap();
        let dest = dir.path().join("out");
        let opts = ExtractOptions::default();
        let names = a.extract(&dest, &m, opts, &ctl).unwrap();
        assert_eq!(names.len(), 4);
        assert!(std::fs::read(dest.join("models/a.bin")).unwrap() == sample(200_000, 1));
        let err = a.extract(&dest, &m, opts, &ctl).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        let sync = ExtractOptions {
            overwrite: true,
            deep: true,
            sync: true,
        };
        a.extract(&dest, &m, sync, &ctl).unwrap();
    }

    #[test]
    fn a_wrong_digest_or_an_unlisted_member_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = bundle(dir.path());
        let a = Archive::open(&path, Limits::default()).unwrap();
        let ctl = Control::default();
        let mut m = a.manifest(&ctl).unwrap();
        m.members[2].blake3[0] ^= 1;
        let dest = dir.path().join("out");
        let err = a
            .extract(&dest, &m, ExtractOptions::default(), &ctl)
            .unwrap_err();
        assert!(matches!(err, Error::Integrity(_)), "{err}");
        assert!(err.to_string().contains("'config.yml': blake3"), "{err}");
        assert!(!dest.exists(), "rolled back, destination and all");
        m.members.remove(1);
        let err = a
            .extract(&dest, &m, ExtractOptions::default(), &ctl)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("'models/b.bin' is not in the manifest"),
            "{err}"
        );
        assert!(!dest.exists());
    }
}

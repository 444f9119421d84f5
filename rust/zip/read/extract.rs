//! Extraction: every member the manifest lists, verified, written only below the destination.
#![deny(clippy::arithmetic_side_effects)]

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use super::Archive;
use crate::beneath::Beneath;
use crate::control::Control;
use crate::error::{Error, IoContext, Result};
use crate::hash::{hex, Algos, Digests, Hasher};
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
    /// what this call created is removed again. Without `overwrite`, a regular file already
    /// at a member's name with the member's verified bytes is kept as it is (extracting again
    /// is a no-op), and anything else there is an `EEXIST` error. Returns the member names
    /// written (not those kept).
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
            let shown = out.root().join(&e.name);
            if !opts.overwrite {
                if let Some(there) = out.existing(&e.name)? {
                    // The member is still read and checked: "extracted" always means verified.
                    let got = self.stream(index, opts.deep, &mut |_, _| Ok(()), ctl)?;
                    self.check_extracted(manifest, &e.name, &got)?;
                    if same_bytes(there, &got, &shown, ctl)? {
                        continue;
                    }
                    return Err(Error::io(
                        &shown,
                        "create",
                        io::Error::from_raw_os_error(libc::EEXIST),
                    ));
                }
            }
            let (file, tmp) = out.temp_file(&e.name)?;
            let checked = (|| -> Result<()> {
                let mut w = BufWriter::with_capacity(1 << 20, &file);
                let sink = &mut |piece: &[u8], _| w.write_all(piece).at(&shown, "write");
                let got = self.stream(index, opts.deep, sink, ctl)?;
                w.flush().at(&shown, "write")?;
                drop(w);
                self.check_extracted(manifest, &e.name, &got)?;
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

    /// A member's digests against the manifest (which does not list itself: its crc32 is its
    /// check).
    fn check_extracted(&self, manifest: &Manifest, name: &str, got: &Digests) -> Result<()> {
        if name == manifest::MEMBER {
            return Ok(());
        }
        let want = manifest.get(name).ok_or_else(|| {
            Error::Integrity(format!("member {} is not in the manifest", quote(name)))
        })?;
        for (what, expected, actual) in [
            ("blake3", want.blake3, got.blake3),
            ("sha256", want.sha256, got.sha256),
        ] {
            if actual.is_some_and(|a| a != expected) {
                return Err(Error::Integrity(format!(
                    "{}: member {}: {what} is {}, expected {} (manifest); the bundle does not \
                     hold what its manifest says: rebuild it or fetch it again",
                    self.path.display(),
                    quote(name),
                    hex(&actual.unwrap_or_default()),
                    hex(&expected)
                )));
            }
        }
        Ok(())
    }
}

/// Whether `file` holds exactly the bytes whose digests are `got` (size, blake3, and sha256
/// when it was computed).
fn same_bytes(mut file: File, got: &Digests, shown: &Path, ctl: &Control) -> Result<bool> {
    let size = file.metadata().at(shown, "stat")?.len();
    if size != got.size {
        return Ok(false);
    }
    let mut h = Hasher::new(Algos {
        sha256: got.sha256.is_some(),
        blake3: true,
        crc32: false,
    });
    let mut buf = vec![0u8; 1 << 20];
    loop {
        ctl.check()?;
        let n = file.read(&mut buf).at(shown, "read")?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let have = h.finalize();
    Ok(have.size == got.size
        && have.blake3 == got.blake3
        && (got.sha256.is_none() || have.sha256 == got.sha256))
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
        // Again: the same verified bytes are there, so nothing is written and all is well.
        assert!(a.extract(&dest, &m, opts, &ctl).unwrap().is_empty());
        // Other bytes (even of the same size) or a link in a member's place: refused, and
        // what the call wrote before it met them is taken back.
        let b = dest.join("models/b.bin");
        let mut other = std::fs::read(&b).unwrap();
        other[0] ^= 1;
        std::fs::remove_file(&b).unwrap();
        std::fs::remove_file(dest.join("models/a.bin")).unwrap();
        std::fs::write(&b, &other).unwrap();
        let err = a.extract(&dest, &m, opts, &ctl).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        assert!(!dest.join("models/a.bin").exists(), "rolled back");
        std::fs::remove_file(&b).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &b).unwrap();
        let err = a.extract(&dest, &m, opts, &ctl).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        std::fs::remove_file(&b).unwrap();
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

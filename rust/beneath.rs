//! Files created below a directory, and only there: every path is walked one component at a
//! time from a handle on the directory, with `O_NOFOLLOW`, so a symbolic link planted anywhere
//! below it (or swapped in while we work) is refused rather than followed. The directory itself
//! may be a link. What was created can be taken back.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A directory handle that creates folders and files below it.
pub struct Beneath {
    root: PathBuf,
    /// Open folders by their path below `root` (`""` is `root`).
    dirs: HashMap<String, OwnedFd>,
    /// What this handle created, in order: (folder, name, is a folder).
    created: Vec<(String, String, bool)>,
    /// Folders above and including `root` that `open` created, outermost first.
    made_root: Vec<PathBuf>,
}

fn cstr(name: &str, at: &Path) -> Result<CString> {
    CString::new(name)
        .map_err(|_| Error::Invalid(format!("{}: a name holds a NUL byte", at.display())))
}

fn last_os_error() -> io::Error {
    io::Error::last_os_error()
}

impl Beneath {
    /// Open `root` (creating it and any missing parents; links in them are followed, as the
    /// caller named them).
    pub fn open(root: &Path) -> Result<Beneath> {
        let mut made_root = Vec::new();
        let mut missing = Vec::new();
        let mut p = root.to_path_buf();
        while std::fs::symlink_metadata(&p).is_err() {
            missing.push(p.clone());
            match p.parent() {
                Some(up) if !up.as_os_str().is_empty() => p = up.to_path_buf(),
                _ => break,
            }
        }
        for d in missing.iter().rev() {
            match std::fs::create_dir(d) {
                Ok(()) => made_root.push(d.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    undo_root(&made_root);
                    return Err(Error::io(d, "create", e));
                }
            }
        }
        let dir = File::open(root).and_then(|f| {
            if f.metadata()?.is_dir() {
                Ok(f)
            } else {
                Err(io::Error::from_raw_os_error(libc::ENOTDIR))
            }
        });
        let dir = match dir {
            Ok(d) => d,
            Err(e) => {
                undo_root(&made_root);
                return Err(Error::io(root, "open", e));
            }
        };
        let mut dirs = HashMap::new();
        dirs.insert(String::new(), OwnedFd::from(dir));
        Ok(Beneath {
            root: root.to_path_buf(),
            dirs,
            created: Vec::new(),
            made_root,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn shown(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn fd(&self, rel: &str) -> Result<&OwnedFd> {
        self.dirs
            .get(rel)
            .ok_or_else(|| Error::Invalid(format!("{} is not open", self.shown(rel).display())))
    }

    /// The folder `rel` (`a/b`), created as needed; refuses a link or a file on the way.
    pub fn dir(&mut self, rel: &str) -> Result<()> {
        if self.dirs.contains_key(rel) {
            return Ok(());
        }
        let (parent, name) = split(rel);
        self.dir(parent)?;
        let c = cstr(name, &self.shown(rel))?;
        let pfd = self.fd(parent)?.as_raw_fd();
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `pfd` is an open directory we own and `c` a NUL-terminated name.
        let mut fd = unsafe { libc::openat(pfd, c.as_ptr(), flags) };
        if fd < 0 && last_os_error().raw_os_error() == Some(libc::ENOENT) {
            // SAFETY: as above.
            if unsafe { libc::mkdirat(pfd, c.as_ptr(), 0o777) } == 0 {
                self.created
                    .push((parent.to_string(), name.to_string(), true));
            } else if last_os_error().raw_os_error() != Some(libc::EEXIST) {
                return Err(Error::io(&self.shown(rel), "create", last_os_error()));
            }
            // SAFETY: as above.
            fd = unsafe { libc::openat(pfd, c.as_ptr(), flags) };
        }
        if fd < 0 {
            let err = last_os_error();
            if matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
                && self.is_link(pfd, &c)
            {
                return Err(Error::Unsafe(format!(
                    "{} is a symbolic link: extraction writes only inside {} and follows no link \
                     below it; remove the link or extract elsewhere",
                    self.shown(rel).display(),
                    self.root.display()
                )));
            }
            return Err(Error::io(&self.shown(rel), "open", err));
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        self.dirs.insert(rel.to_string(), owned);
        Ok(())
    }

    fn is_link(&self, dirfd: i32, name: &CString) -> bool {
        // SAFETY: `st` is written by fstatat before it is read; the pointers are valid.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstatat(dirfd, name.as_ptr(), &raw mut st, libc::AT_SYMLINK_NOFOLLOW) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFLNK
        }
    }

    /// A new, empty temporary file beside `rel` (`.NAME.XXXXXXXX.partial`), its folder created
    /// as needed; returns the file and its temporary name.
    pub fn temp_file(&mut self, rel: &str) -> Result<(File, String)> {
        let (parent, name) = split(rel);
        self.dir(parent)?;
        let pfd = self.fd(parent)?.as_raw_fd();
        let seed = std::process::id() as usize ^ (&raw const *self as usize);
        for attempt in 0..100usize {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let tag = (seed ^ (nanos as usize)).wrapping_add(attempt.wrapping_mul(0x9E37_79B9));
            let tmp = format!(".{name}.{:08x}.partial", tag & 0xFFFF_FFFF);
            let c = cstr(&tmp, &self.shown(rel))?;
            let flags =
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: `pfd` is an open directory we own and `c` a NUL-terminated name.
            let fd = unsafe { libc::openat(pfd, c.as_ptr(), flags, 0o666 as libc::c_uint) };
            if fd >= 0 {
                // SAFETY: `fd` is a new descriptor that nothing else owns.
                return Ok((unsafe { File::from_raw_fd(fd) }, tmp));
            }
            let err = last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(Error::io(
                    &self.shown(rel),
                    "create a temporary file for",
                    err,
                ));
            }
        }
        Err(Error::io(
            &self.shown(rel),
            "create a temporary file for",
            io::Error::from_raw_os_error(libc::EEXIST),
        ))
    }

    /// The file already at `rel`, opened for reading, or `None` when there is none (its
    /// folder is created as needed). Anything there but a regular file (a link, a folder, a
    /// FIFO) is an `EEXIST` error: it is never opened, let alone followed.
    pub fn existing(&mut self, rel: &str) -> Result<Option<File>> {
        let (parent, name) = split(rel);
        self.dir(parent)?;
        let pfd = self.fd(parent)?.as_raw_fd();
        let c = cstr(name, &self.shown(rel))?;
        let exists = || {
            Err(Error::io(
                &self.shown(rel),
                "create",
                io::Error::from_raw_os_error(libc::EEXIST),
            ))
        };
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: `pfd` is an open directory we own and `c` a NUL-terminated name.
        let fd = unsafe { libc::openat(pfd, c.as_ptr(), flags) };
        if fd < 0 {
            let err = last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                Some(libc::ELOOP) => exists(), // a symbolic link: not followed
                _ => Err(Error::io(&self.shown(rel), "open", err)),
            };
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        let regular = file
            .metadata()
            .map_err(|err| Error::io(&self.shown(rel), "stat", err))?
            .is_file();
        if regular {
            Ok(Some(file))
        } else {
            exists()
        }
    }

    /// Remove a temporary file made by `temp_file`.
    pub fn discard(&self, rel: &str, tmp: &str) {
        let (parent, _) = split(rel);
        if let (Ok(fd), Ok(c)) = (self.fd(parent), CString::new(tmp)) {
            // SAFETY: an open directory we own and a NUL-terminated name.
            unsafe { libc::unlinkat(fd.as_raw_fd(), c.as_ptr(), 0) };
        }
    }

    /// Rename a temporary file onto `rel`. Without `overwrite`, an existing `rel` (even a
    /// link) is an error; with it, whatever is there is replaced (a link itself, never what it
    /// points to).
    pub fn commit(&mut self, rel: &str, tmp: &str, overwrite: bool) -> Result<()> {
        let (parent, name) = split(rel);
        let pfd = self.fd(parent)?.as_raw_fd();
        let (from, to) = (cstr(tmp, &self.shown(rel))?, cstr(name, &self.shown(rel))?);
        let existed = overwrite && {
            // SAFETY: `st` is only written; the pointers are valid.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            unsafe { libc::fstatat(pfd, to.as_ptr(), &raw mut st, libc::AT_SYMLINK_NOFOLLOW) == 0 }
        };
        let flags = if overwrite { 0 } else { libc::RENAME_NOREPLACE };
        // SAFETY: both descriptors are the same open directory; the names are NUL-terminated.
        let done = unsafe { libc::renameat2(pfd, from.as_ptr(), pfd, to.as_ptr(), flags) };
        if done != 0 {
            let err = last_os_error();
            self.discard(rel, tmp);
            return Err(Error::io(&self.shown(rel), "create", err));
        }
        if !existed {
            self.created
                .push((parent.to_string(), name.to_string(), false));
        }
        Ok(())
    }

    /// Flush every folder this handle touched (after the files were flushed).
    pub fn sync(&self) -> Result<()> {
        for (rel, fd) in &self.dirs {
            // SAFETY: an open directory we own.
            if unsafe { libc::fsync(fd.as_raw_fd()) } != 0 {
                return Err(Error::io(&self.shown(rel), "sync", last_os_error()));
            }
        }
        if let Some(up) = self.root.parent() {
            crate::fsio::sync_dir(if up.as_os_str().is_empty() {
                Path::new(".")
            } else {
                up
            })?;
        }
        Ok(())
    }

    /// Remove what this handle created, newest first: new files, then folders that are empty
    /// again, then the folders `open` made. Files that were replaced keep their new content.
    pub fn rollback(&mut self) {
        for (parent, name, is_dir) in self.created.drain(..).rev() {
            if is_dir {
                let rel = join(&parent, &name);
                self.dirs.remove(&rel);
            }
            if let (Some(fd), Ok(c)) = (self.dirs.get(&parent), CString::new(name)) {
                let flag = if is_dir { libc::AT_REMOVEDIR } else { 0 };
                // SAFETY: an open directory we own and a NUL-terminated name.
                unsafe { libc::unlinkat(fd.as_raw_fd(), c.as_ptr(), flag) };
            }
        }
        self.dirs.clear();
        undo_root(&self.made_root);
        self.made_root.clear();
    }
}

/// `a/b/c` to (`a/b`, `c`); `c` to (``, `c`).
fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn undo_root(made: &[PathBuf]) {
    for d in made.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn put(b: &mut Beneath, rel: &str, data: &[u8], overwrite: bool) -> Result<()> {
        let (mut f, tmp) = b.temp_file(rel)?;
        f.write_all(data).unwrap();
        b.commit(rel, &tmp, overwrite)
    }

    #[test]
    fn creates_below_and_takes_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("new/dest");
        let mut b = Beneath::open(&dest).unwrap();
        put(&mut b, "models/a/x.bin", b"x", false).unwrap();
        put(&mut b, "top.yml", b"t", false).unwrap();
        assert_eq!(std::fs::read(dest.join("models/a/x.bin")).unwrap(), b"x");
        let err = put(&mut b, "top.yml", b"again", false).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        put(&mut b, "top.yml", b"again", true).unwrap();
        b.sync().unwrap();
        b.rollback();
        assert!(
            !dir.path().join("new").exists(),
            "everything it made is gone"
        );
    }

    #[test]
    fn refuses_links_below_the_root_but_not_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&outside, real.join("models")).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut b = Beneath::open(&link).unwrap();
        put(&mut b, "ok.txt", b"fine", false).unwrap();
        assert_eq!(std::fs::read(real.join("ok.txt")).unwrap(), b"fine");
        let err = put(&mut b, "models/k1.bin", b"evil", false).unwrap_err();
        assert!(matches!(err, Error::Unsafe(_)), "{err}");
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // A link as the file itself: not written through, even with overwrite.
        std::fs::write(outside.join("keep"), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.join("keep"), real.join("f")).unwrap();
        assert!(put(&mut b, "f", b"new", false).is_err());
        put(&mut b, "f", b"new", true).unwrap();
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(real.join("f"))
            .unwrap()
            .is_symlink());
        let leftovers = crate::zip::testkit::partials(&real);
        assert_eq!(leftovers, 0);
    }
}

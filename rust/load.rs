//! Reading a file into memory the caller owns while blake3 hashes it, in one pass on all cores.
//!
//! A verified load must read every byte once anyway; reading and hashing separately touches
//! each byte twice (once to copy it in, once more from main memory to hash it). Here the input
//! is split along blake3's own tree: each subtree is read, a small piece at a time, into its
//! place in the destination and hashed right away, while the piece is still in the core's
//! cache. The subtrees' chaining values are merged into the root hash exactly as blake3 would,
//! so the digest is the ordinary blake3 of the file (checked against `blake3::hash` below).
//!
//! A file can also be read in consecutive pieces (into recycled staging buffers, for a GPU
//! copy): every piece but the last has the same power-of-two length, so each is a complete
//! subtree of the whole file's tree, and `finish` merges their chaining values.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use crate::control::{pool, Control};
use crate::error::{Error, IoContext, Result};
use crate::fsio::{open_checked, Open};

/// A subtree at most this long is read and hashed by one thread.
const LEAF: u64 = 4 << 20;
/// Read this much at a time inside a leaf: small enough to stay in the core's cache between
/// the copy and the hash.
const STEP: usize = 256 << 10;
/// Below this, the whole read stays on the calling thread.
const INLINE_MAX: u64 = 1 << 20;

/// What a read found: how many bytes the file had up to the expected size, whether it has
/// more, and the blake3 of what was read (`None` unless exactly the expected size was read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fill {
    pub found: u64,
    pub longer: bool,
    pub blake3: Option<[u8; 32]>,
}

/// One subtree's result.
enum Node {
    Cv(ChainingValue),
    Root([u8; 32]),
    /// The file ended at this offset, before the subtree did.
    Short(u64),
}

/// Reads one file front to back, in pieces of `piece` bytes, hashing as it goes.
pub struct FileReader {
    file: File,
    path: PathBuf,
    size: u64,
    piece: u64,
    pos: u64,
    cvs: Vec<ChainingValue>,
    root: Option<[u8; 32]>,
    short: Option<u64>,
}

impl FileReader {
    /// Open a store object (no symlinks, regular files only) expected to hold `size` bytes.
    /// `piece` (a power of two, at least 1 KiB) is how much each `read_into` reads; `None`
    /// reads the whole file in one call.
    pub fn open(path: &Path, size: u64, piece: Option<u64>) -> Result<FileReader> {
        let (file, _) = open_checked(path, Open::Object)?;
        FileReader::from_file(file, path, size, piece)
    }

    /// As `open`, for a file already open (a sealed memfd); `path` names it in errors.
    pub fn from_file(file: File, path: &Path, size: u64, piece: Option<u64>) -> Result<Self> {
        let piece = match piece {
            None => size.max(1),
            Some(p) if p >= blake3::CHUNK_LEN as u64 && p.is_power_of_two() => p,
            Some(p) => {
                return Err(Error::Invalid(format!(
                    "piece of {p} bytes: must be a power of two of at least 1024"
                )))
            }
        };
        let len = file.metadata().at(path, "stat")?.len();
        Ok(FileReader {
            file,
            path: path.to_path_buf(),
            size,
            piece,
            pos: 0,
            cvs: Vec::new(),
            root: None,
            // A file already too short is not read at all.
            short: (len < size).then_some(len),
        })
    }

    /// How many bytes the next `read_into` reads (0 at the end, or once the file fell short).
    pub fn next_len(&self) -> u64 {
        if self.short.is_some() {
            return 0;
        }
        self.piece.min(self.size - self.pos)
    }

    /// Read the next piece into the front of `dest` (or only hash it, when `dest` is `None`).
    /// Returns the bytes read: less than `next_len()` when the file ended early.
    pub fn read_into(&mut self, dest: Option<&mut [u8]>, ctl: &Control) -> Result<usize> {
        self.read_next(dest, None, ctl)
    }

    /// Read the next piece and write it at the same offset of `sink` (an in-memory file),
    /// from the small buffer it was hashed in: the bytes written are the bytes hashed.
    pub fn copy_into(&mut self, sink: &File, ctl: &Control) -> Result<usize> {
        self.read_next(None, Some(sink), ctl)
    }

    fn read_next(
        &mut self,
        dest: Option<&mut [u8]>,
        sink: Option<&File>,
        ctl: &Control,
    ) -> Result<usize> {
        let len = self.next_len();
        let Ok(n) = usize::try_from(len) else {
            return Err(Error::Invalid(format!(
                "a piece of {len} bytes does not fit"
            )));
        };
        let dest = match dest {
            Some(d) if d.len() < n => {
                return Err(Error::Invalid(format!(
                    "buffer of {} bytes, the piece needs {n}",
                    d.len()
                )))
            }
            Some(d) => Some(&mut d[..n]),
            None => None,
        };
        if n == 0 {
            return Ok(0);
        }
        let start = self.pos;
        let is_root = start == 0 && len == self.size;
        let job = Job {
            file: &self.file,
            path: &self.path,
            sink,
            ctl,
        };
        let node = if len <= INLINE_MAX {
            job.leaf(dest, start, len, is_root)?
        } else {
            pool()?.install(|| job.subtree(dest, start, len, is_root))?
        };
        match node {
            Node::Cv(cv) => self.cvs.push(cv),
            Node::Root(h) => self.root = Some(h),
            Node::Short(at) => {
                self.short = Some(at);
                return Ok(usize::try_from(at - start).unwrap_or(n));
            }
        }
        self.pos += len;
        Ok(n)
    }

    /// The outcome, once every piece was read (or the file fell short).
    pub fn finish(self) -> Result<Fill> {
        if let Some(found) = self.short {
            return Ok(Fill {
                found,
                longer: false,
                blake3: None,
            });
        }
        if self.pos < self.size {
            return Err(Error::Invalid(format!(
                "{}: finished after {} of {} bytes",
                self.path.display(),
                self.pos,
                self.size
            )));
        }
        let mut probe = [0u8; 1];
        let longer = read_at(&self.file, &mut probe, self.size).at(&self.path, "read")? > 0;
        let blake3 = match self.root {
            Some(h) => h,
            None if self.size == 0 => *blake3::hash(&[]).as_bytes(),
            None => merge(&self.cvs, self.piece, 0, self.size)?,
        };
        Ok(Fill {
            found: self.size,
            longer,
            blake3: Some(blake3),
        })
    }
}

/// The root hash of `0..size` from the chaining values of its pieces of `piece` bytes each.
fn merge(cvs: &[ChainingValue], piece: u64, start: u64, len: u64) -> Result<[u8; 32]> {
    let left = left_subtree_len(len);
    let l = merge_cv(cvs, piece, start, left)?;
    let r = merge_cv(cvs, piece, start + left, len - left)?;
    Ok(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
}

fn merge_cv(cvs: &[ChainingValue], piece: u64, start: u64, len: u64) -> Result<ChainingValue> {
    if len <= piece {
        // Pieces start at multiples of `piece`, and a subtree of at most `piece` bytes lies
        // within one piece: it is that piece.
        return usize::try_from(start / piece)
            .ok()
            .and_then(|i| cvs.get(i).copied())
            .ok_or_else(|| Error::Invalid(format!("no piece read at offset {start}")));
    }
    let left = left_subtree_len(len);
    let l = merge_cv(cvs, piece, start, left)?;
    let r = merge_cv(cvs, piece, start + left, len - left)?;
    Ok(merge_subtrees_non_root(&l, &r, Mode::Hash))
}

/// The state shared by the threads reading one piece.
struct Job<'a> {
    file: &'a File,
    path: &'a Path,
    /// Where bytes read into the scratch buffer are written, if anywhere.
    sink: Option<&'a File>,
    ctl: &'a Control,
}

impl Job<'_> {
    /// Hash the subtree `start..start + len`, splitting it along blake3's tree over the pool.
    fn subtree(&self, dest: Option<&mut [u8]>, start: u64, len: u64, root: bool) -> Result<Node> {
        if len <= LEAF {
            return self.leaf(dest, start, len, root);
        }
        let left = left_subtree_len(len);
        let (dl, dr) = match dest {
            Some(d) => {
                let Ok(cut) = usize::try_from(left) else {
                    return Err(Error::Invalid(format!(
                        "a subtree of {left} bytes does not fit"
                    )));
                };
                let (a, b) = d.split_at_mut(cut);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let (l, r) = rayon::join(
            || self.subtree(dl, start, left, false),
            || self.subtree(dr, start + left, len - left, false),
        );
        Ok(match (l?, r?) {
            (Node::Short(a), Node::Short(b)) => Node::Short(a.min(b)),
            (Node::Short(a), _) | (_, Node::Short(a)) => Node::Short(a),
            (Node::Cv(a), Node::Cv(b)) if root => {
                Node::Root(*merge_subtrees_root(&a, &b, Mode::Hash).as_bytes())
            }
            (Node::Cv(a), Node::Cv(b)) => Node::Cv(merge_subtrees_non_root(&a, &b, Mode::Hash)),
            _ => return Err(Error::Invalid("blake3 subtree out of place".into())),
        })
    }

    /// Read `start..start + len` a step at a time, hashing each step while it is hot.
    fn leaf(&self, dest: Option<&mut [u8]>, start: u64, len: u64, root: bool) -> Result<Node> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut h = blake3::Hasher::new();
        if start > 0 {
            h.set_input_offset(start);
        }
        let mut step = |buf: &mut [u8], at: u64| -> Result<usize> {
            self.ctl.check()?;
            let n = read_at(self.file, buf, at).at(self.path, "read")?;
            h.update(&buf[..n]);
            self.ctl.advance(n as u64);
            Ok(n)
        };
        let mut done = 0u64;
        match dest {
            Some(d) => {
                for piece in d.chunks_mut(STEP) {
                    let want = piece.len();
                    let n = step(piece, start + done)?;
                    done += n as u64;
                    if n < want {
                        return Ok(Node::Short(start + done));
                    }
                }
            }
            None => SCRATCH.with_borrow_mut(|buf| -> Result<()> {
                buf.resize(STEP, 0);
                while done < len {
                    let want = usize::try_from(len - done).map_or(STEP, |left| left.min(STEP));
                    let at = start + done;
                    let n = step(&mut buf[..want], at)?;
                    if let Some(sink) = self.sink {
                        sink.write_all_at(&buf[..n], at)
                            .at(self.path, "write a copy of")?;
                    }
                    done += n as u64;
                    if n < want {
                        break;
                    }
                }
                Ok(())
            })?,
        }
        if done < len {
            return Ok(Node::Short(start + done));
        }
        Ok(if root {
            Node::Root(*h.finalize().as_bytes())
        } else {
            Node::Cv(h.finalize_non_root())
        })
    }
}

/// Fill `buf` from `offset` as far as the file allows.
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Read the whole file into `dest` (exactly the expected size) while hashing it.
pub fn read_file_into(path: &Path, dest: &mut [u8], ctl: &Control) -> Result<Fill> {
    let mut r = FileReader::open(path, dest.len() as u64, None)?;
    r.read_into(Some(dest), ctl)?;
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(data: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, data).unwrap();
        (dir, path)
    }

    #[test]
    fn whole_reads_match_blake3_and_copy_every_byte() {
        let ctl = Control::default();
        // Around chunk, step, leaf and inline boundaries.
        for size in [
            0,
            1,
            1023,
            1024,
            1025,
            STEP - 1,
            STEP + 1,
            usize::try_from(INLINE_MAX).unwrap() + 1024,
            usize::try_from(LEAF).unwrap() * 3 + 77,
            usize::try_from(LEAF).unwrap() * 8,
        ] {
            let data = crate::noise(size, size as u64 + 5);
            let (_dir, path) = file_with(&data);
            let mut dest = vec![0u8; size];
            let fill = read_file_into(&path, &mut dest, &ctl).unwrap();
            assert_eq!(fill.blake3, Some(*blake3::hash(&data).as_bytes()), "{size}");
            assert_eq!((fill.found, fill.longer), (size as u64, false));
            assert!(dest == data, "{size} bytes copied");
            // Hash only, into scratch.
            let mut r = FileReader::open(&path, size as u64, None).unwrap();
            r.read_into(None, &ctl).unwrap();
            assert_eq!(r.finish().unwrap().blake3, fill.blake3);
        }
    }

    #[test]
    fn pieces_merge_to_the_same_hash() {
        let ctl = Control::default();
        for (size, piece) in [
            (1024usize, 1024u64),
            (5000, 1024),
            (4096, 2048),
            (3 << 20, 1 << 20),
            ((9 << 20) + 5, 2 << 20),
            ((8 << 20) + 1024, 8 << 20),
            (100, 1 << 20),
        ] {
            let data = crate::noise(size, 9);
            let (_dir, path) = file_with(&data);
            let mut r = FileReader::open(&path, size as u64, Some(piece)).unwrap();
            let mut staging = vec![0u8; usize::try_from(piece).unwrap()];
            let mut copy = Vec::new();
            loop {
                let n = r.read_into(Some(&mut staging), &ctl).unwrap();
                if n == 0 {
                    break;
                }
                copy.extend_from_slice(&staging[..n]);
            }
            assert!(copy == data);
            let fill = r.finish().unwrap();
            assert_eq!(
                fill.blake3,
                Some(*blake3::hash(&data).as_bytes()),
                "{size}/{piece}"
            );
        }
    }

    #[test]
    fn short_long_and_bad_pieces_are_reported() {
        let ctl = Control::default();
        let data = crate::noise(10_000, 3);
        let (_dir, path) = file_with(&data);
        // Expected more than there is.
        let mut dest = vec![0u8; 12_000];
        let fill = read_file_into(&path, &mut dest, &ctl).unwrap();
        assert_eq!((fill.found, fill.blake3), (10_000, None));
        // Expected less than there is.
        let mut dest = vec![0u8; 9_000];
        let fill = read_file_into(&path, &mut dest, &ctl).unwrap();
        assert!(fill.longer);
        assert_eq!(fill.blake3, Some(*blake3::hash(&data[..9_000]).as_bytes()));
        assert!(FileReader::open(&path, 10_000, Some(3000)).is_err());
        assert!(FileReader::open(&path, 10_000, Some(512)).is_err());
        let mut r = FileReader::open(&path, 10_000, Some(4096)).unwrap();
        let mut small = vec![0u8; 100];
        assert!(r.read_into(Some(&mut small), &ctl).is_err());
        // Symlinks are refused: a store object is never read through one.
        let link = path.with_file_name("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(FileReader::open(&link, 10_000, None).is_err());
    }

    #[test]
    fn a_file_that_shrinks_while_read_is_short() {
        let ctl = Control::default();
        let data = crate::noise(3 << 20, 4);
        let (_dir, path) = file_with(&data);
        let mut r = FileReader::open(&path, data.len() as u64, Some(1 << 20)).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(r.read_into(Some(&mut buf), &ctl).unwrap(), 1 << 20);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len((1 << 20) + 10)
            .unwrap();
        assert_eq!(r.read_into(Some(&mut buf), &ctl).unwrap(), 10);
        assert_eq!(r.read_into(Some(&mut buf), &ctl).unwrap(), 0);
        let fill = r.finish().unwrap();
        assert_eq!((fill.found, fill.blake3), ((1 << 20) + 10, None));
    }

    #[test]
    fn copies_into_a_file_are_the_hashed_bytes() {
        let ctl = Control::default();
        for size in [0usize, 1500, (5 << 20) + 3] {
            let data = crate::noise(size, 11);
            let (dir, path) = file_with(&data);
            let copy = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.path().join("copy"))
                .unwrap();
            let mut r = FileReader::open(&path, size as u64, None).unwrap();
            r.copy_into(&copy, &ctl).unwrap();
            assert_eq!(
                r.finish().unwrap().blake3,
                Some(*blake3::hash(&data).as_bytes())
            );
            assert!(std::fs::read(dir.path().join("copy")).unwrap() == data);
        }
    }

    #[test]
    fn cancelled_read_stops() {
        let ctl = Control::default();
        ctl.cancel();
        let data = crate::noise(2 << 20, 1);
        let (_dir, path) = file_with(&data);
        let mut dest = vec![0u8; data.len()];
        assert!(matches!(
            read_file_into(&path, &mut dest, &ctl),
            Err(Error::Cancelled)
        ));
    }
}

//! The Python bindings: the only file that knows about pyo3. Plain types cross the boundary;
//! `python/modelcas` wraps them in small dataclasses.

use std::path::PathBuf;
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{
    PyBufferError, PyFileNotFoundError, PyIsADirectoryError, PyKeyboardInterrupt, PyOSError,
    PyPermissionError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;

use crate::bundle::{self, DosTime, Expected, Limits, MemberSpec, Method, Source, WriteOptions};
use crate::control::Control;
use crate::error::{Error, Result};
use crate::hash::{self, hex, Algos, Digests, ReadMode};
use crate::load;
use crate::sha256::state_from_bytes;

pyo3::import_exception!(modelcas.errors, IntegrityError);
pyo3::import_exception!(modelcas.errors, UnsafeArchiveError);
pyo3::import_exception!(modelcas.errors, ArchiveLimitError);

/// How often a waiting call looks for Ctrl-C and reports progress.
const POLL: Duration = Duration::from_millis(50);
/// Buffers smaller than this are hashed without releasing the GIL: the round trip costs more.
const INLINE_MAX: usize = 64 << 10;

/// `(size, sha256 hex, blake3 hex, crc32)`.
type DigestTuple = (u64, Option<String>, Option<String>, Option<u32>);

fn to_tuple(d: Digests) -> DigestTuple {
    (
        d.size,
        d.sha256.map(|b| hex(&b)),
        d.blake3.map(|b| hex(&b)),
        d.crc32,
    )
}

/// Map a core error to the Python exception a caller would expect, with the path attached.
fn to_py(err: Error) -> PyErr {
    match err {
        Error::Io {
            path,
            action,
            source,
        } => {
            let reason = source.to_string();
            let reason = match reason.find(" (os error") {
                Some(cut) => reason[..cut].to_string(),
                None => reason,
            };
            let args = (
                source.raw_os_error(),
                format!("cannot {action}: {reason}"),
                // An OsString becomes a `str` (surrogate-escaped), as in Python's own OSError.
                path.into_os_string(),
            );
            match source.kind() {
                std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(args),
                std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(args),
                std::io::ErrorKind::IsADirectory => PyIsADirectoryError::new_err(args),
                _ => PyOSError::new_err(args),
            }
        }
        Error::Cancelled => PyKeyboardInterrupt::new_err(()),
        Error::Integrity(msg) => IntegrityError::new_err(msg),
        Error::Invalid(msg) => PyValueError::new_err(msg),
        Error::Unsafe(msg) => UnsafeArchiveError::new_err(msg),
        Error::Limit(msg) => ArchiveLimitError::new_err(msg),
    }
}

/// Run `work` on a worker thread with the GIL released. Meanwhile the calling thread wakes every
/// `POLL` to turn Ctrl-C into `KeyboardInterrupt` (cancelling the work) and to feed `progress`,
/// a callable taking the number of bytes done since its last call.
fn run<T: Send>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&Control) -> Result<T> + Send,
) -> PyResult<T> {
    let ctl = Control::default();
    std::thread::scope(|s| {
        let (tx, mut rx) = channel();
        let worker_ctl = &ctl;
        s.spawn(move || {
            let _ = tx.send(work(worker_ctl));
        });
        let mut reported = 0u64;
        let mut failure: Option<PyErr> = None;
        loop {
            // The receiver is moved through `detach` because it is `Send` but not `Sync`.
            let (back, waited) = py.detach(move || {
                let waited = rx.recv_timeout(POLL);
                (rx, waited)
            });
            rx = back;
            if failure.is_none() {
                let interrupt = py.check_signals().err();
                let report = match (progress, interrupt.is_none()) {
                    (Some(cb), true) => {
                        let done = ctl.done();
                        let delta = done.saturating_sub(reported);
                        reported = done;
                        if delta > 0 {
                            cb.call1((delta,)).err()
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                if let Some(e) = interrupt.or(report) {
                    ctl.cancel();
                    failure = Some(e);
                }
            }
            match waited {
                Ok(result) => {
                    return match failure {
                        Some(e) => Err(e),
                        None => result.map_err(to_py),
                    };
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(PyRuntimeError::new_err("modelcas worker thread failed"));
                }
            }
        }
    })
}

fn parse_algos(algos: Vec<String>) -> PyResult<Algos> {
    Algos::parse(algos.iter().map(String::as_str)).map_err(to_py)
}

/// A read-only view of any C-contiguous Python buffer, valid while `buf` lives.
fn bytes_of(buf: &PyUntypedBuffer) -> PyResult<&[u8]> {
    if !buf.is_c_contiguous() {
        return Err(PyBufferError::new_err(
            "buffer is not C-contiguous; pass bytes(...) or a contiguous copy",
        ));
    }
    let len = buf.len_bytes();
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: the exporter keeps `len` bytes at `buf_ptr` alive and in place while `buf` holds
    // the export. Another thread may still write to a mutable buffer; then the digests describe
    // some mix of old and new bytes, exactly as with hashlib.
    Ok(unsafe { std::slice::from_raw_parts(buf.buf_ptr().cast::<u8>(), len) })
}

/// A writable view of a C-contiguous Python buffer, valid while `buf` lives.
#[allow(clippy::mut_from_ref)]
fn bytes_of_mut(buf: &PyUntypedBuffer) -> PyResult<&mut [u8]> {
    if buf.readonly() {
        return Err(PyBufferError::new_err("buffer is read-only"));
    }
    if !buf.is_c_contiguous() {
        return Err(PyBufferError::new_err("buffer is not C-contiguous"));
    }
    let len = buf.len_bytes();
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: the exporter keeps `len` writable bytes at `buf_ptr` alive and in place while
    // `buf` holds the export, and said they may be written (not read-only). Python code that
    // writes to the same memory meanwhile races with us on its own bytes, as with readinto().
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.buf_ptr().cast::<u8>(), len) })
}

#[pyfunction]
#[pyo3(signature = (path, algos, *, mmap = None, regular_only = false, progress = None))]
fn hash_file(
    py: Python<'_>,
    path: PathBuf,
    algos: Vec<String>,
    mmap: Option<bool>,
    regular_only: bool,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<DigestTuple> {
    let algos = parse_algos(algos)?;
    let mode = ReadMode { mmap, regular_only };
    run(py, progress.as_ref(), |ctl| {
        hash::hash_file(&path, algos, mode, ctl)
    })
    .map(to_tuple)
}

#[pyfunction]
#[pyo3(signature = (paths, algos, *, mmap = None, regular_only = false, progress = None))]
fn hash_files(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    algos: Vec<String>,
    mmap: Option<bool>,
    regular_only: bool,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Vec<Py<PyAny>>> {
    let algos = parse_algos(algos)?;
    let results = run(py, progress.as_ref(), |ctl| {
        let mode = ReadMode { mmap, regular_only };
        hash::hash_files(&paths, algos, mode, ctl)
    })?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(d) => Ok(to_tuple(d).into_pyobject(py)?.into_any().unbind()),
            Err(e) => Ok(to_py(e).into_value(py).into_any()),
        })
        .collect()
}

#[pyfunction]
#[pyo3(signature = (data, algos))]
fn hash_buffer(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    algos: Vec<String>,
) -> PyResult<DigestTuple> {
    let algos = parse_algos(algos)?;
    let buf = PyUntypedBuffer::get(data)?;
    let bytes = bytes_of(&buf)?;
    if bytes.len() < INLINE_MAX {
        let mut h = hash::Hasher::new(algos);
        h.update(bytes);
        return Ok(to_tuple(h.finalize()));
    }
    run(py, None, |ctl| hash::hash_bytes(bytes, algos, ctl)).map(to_tuple)
}

#[pyfunction]
#[pyo3(signature = (src, dst, algos, *, fsync = true, progress = None))]
fn copy_file(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    algos: Vec<String>,
    fsync: bool,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<DigestTuple> {
    let algos = parse_algos(algos)?;
    run(py, progress.as_ref(), |ctl| {
        hash::copy_file(&src, &dst, algos, fsync, ctl)
    })
    .map(to_tuple)
}

/// An incremental hasher for streamed bytes (downloads).
#[pyclass(name = "Hasher", module = "modelcas._core", frozen)]
struct PyHasher {
    inner: Mutex<hash::Hasher>,
}

impl PyHasher {
    fn lock(&self) -> std::sync::MutexGuard<'_, hash::Hasher> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl PyHasher {
    #[new]
    fn new(algos: Vec<String>) -> PyResult<Self> {
        Ok(PyHasher {
            inner: Mutex::new(hash::Hasher::new(parse_algos(algos)?)),
        })
    }

    fn update(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let buf = PyUntypedBuffer::get(data)?;
        let bytes = bytes_of(&buf)?;
        if bytes.len() < INLINE_MAX {
            self.lock().update(bytes);
            return Ok(());
        }
        let mut snapshot = self.lock().clone();
        run(py, None, |ctl| snapshot.update_parallel(bytes, ctl))?;
        *self.lock() = snapshot;
        Ok(())
    }

    fn digest(&self) -> DigestTuple {
        to_tuple(self.lock().finalize())
    }

    fn copy(&self) -> PyHasher {
        PyHasher {
            inner: Mutex::new(self.lock().clone()),
        }
    }
}

/// Reads a store object front to back into caller buffers while blake3 hashes it.
#[pyclass(name = "FileReader", module = "modelcas._core", frozen)]
struct PyFileReader {
    inner: Mutex<Option<load::FileReader>>,
}

impl PyFileReader {
    /// The reader, unless another call is using it (holding the lock while that call waits for
    /// the GIL would deadlock) or it was finished.
    fn take(&self) -> PyResult<std::sync::MutexGuard<'_, Option<load::FileReader>>> {
        let guard = self
            .inner
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("FileReader is in use by another call"))?;
        if guard.is_none() {
            return Err(PyValueError::new_err("FileReader is finished"));
        }
        Ok(guard)
    }
}

#[pymethods]
impl PyFileReader {
    #[new]
    #[pyo3(signature = (path, size, *, piece = None, fd = None))]
    fn new(path: PathBuf, size: u64, piece: Option<u64>, fd: Option<i32>) -> PyResult<Self> {
        let reader = match fd {
            None => load::FileReader::open(&path, size, piece),
            Some(fd) => {
                // SAFETY: dup takes no pointers; a bad descriptor yields -1, handled below.
                let own = unsafe { libc::dup(fd) };
                if own < 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(to_py(Error::io(&path, "open", e)));
                }
                // SAFETY: `own` is a fresh descriptor that nothing else owns or closes.
                let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(own) };
                load::FileReader::from_file(file, &path, size, piece)
            }
        }
        .map_err(to_py)?;
        Ok(PyFileReader {
            inner: Mutex::new(Some(reader)),
        })
    }

    fn next_len(&self) -> PyResult<u64> {
        Ok(self.take()?.as_ref().map_or(0, load::FileReader::next_len))
    }

    #[pyo3(signature = (dest = None, *, progress = None))]
    fn read_into(
        &self,
        py: Python<'_>,
        dest: Option<&Bound<'_, PyAny>>,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let buf = dest.map(PyUntypedBuffer::get).transpose()?;
        let out = buf.as_ref().map(bytes_of_mut).transpose()?;
        let mut guard = self.take()?;
        let Some(reader) = guard.as_mut() else {
            return Err(PyValueError::new_err("FileReader is finished"));
        };
        if reader.next_len() < INLINE_MAX as u64 {
            // Small reads: a worker thread and the GIL round trip would cost more.
            return reader.read_into(out, &Control::default()).map_err(to_py);
        }
        run(py, progress.as_ref(), |ctl| reader.read_into(out, ctl))
    }

    /// Read the next piece and write it at the same offset of the file open as `fd` (a memfd),
    /// from the buffer it was hashed in. Returns the bytes read.
    fn copy_into(&self, py: Python<'_>, fd: i32) -> PyResult<usize> {
        let mut guard = self.take()?;
        let Some(reader) = guard.as_mut() else {
            return Err(PyValueError::new_err("FileReader is finished"));
        };
        // SAFETY: dup takes no pointers; a bad descriptor yields -1, handled below.
        let own = unsafe { libc::dup(fd) };
        if own < 0 {
            return Err(PyOSError::new_err(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        // SAFETY: `own` is a fresh descriptor that nothing else owns or closes.
        let sink = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(own) };
        run(py, None, |ctl| reader.copy_into(&sink, ctl))
    }

    /// The next piece as new bytes (the whole file, by default); zeros past a short end.
    fn read_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let mut guard = self.take()?;
        let Some(reader) = guard.as_mut() else {
            return Err(PyValueError::new_err("FileReader is finished"));
        };
        let len = usize::try_from(reader.next_len())
            .map_err(|_| PyValueError::new_err("too large for memory"))?;
        pyo3::types::PyBytes::new_with(py, len, |buf| {
            if len < INLINE_MAX {
                return reader
                    .read_into(Some(buf), &Control::default())
                    .map(|_| ())
                    .map_err(to_py);
            }
            run(py, None, |ctl| reader.read_into(Some(buf), ctl)).map(|_| ())
        })
    }

    /// `(bytes found up to the expected size, whether the file has more, blake3 hex or None)`.
    fn finish(&self) -> PyResult<(u64, bool, Option<String>)> {
        let reader = self.take()?.take();
        let Some(reader) = reader else {
            return Err(PyValueError::new_err("FileReader is finished"));
        };
        let fill = reader.finish().map_err(to_py)?;
        Ok((fill.found, fill.longer, fill.blake3.map(|b| hex(&b))))
    }
}

/// A member to write: bytes, or a path to read.
#[derive(FromPyObject)]
enum PySource {
    Bytes(Vec<u8>),
    Path(PathBuf),
}

/// `(name, method, offset, size, compressed_size, crc32, sha256 hex, blake3 hex)`.
type ReportTuple = (String, &'static str, u64, u64, u64, u32, String, String);

fn parse_method(name: &str, level: Option<i32>) -> PyResult<Method> {
    Method::parse(name, level).map_err(to_py)
}

fn parse_hex32(hex_digest: Option<&str>) -> PyResult<Option<[u8; 32]>> {
    let Some(text) = hex_digest else {
        return Ok(None);
    };
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err(PyValueError::new_err(format!(
            "not a 64-digit hex digest: {text:?}"
        )));
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
            _ => return Err(PyValueError::new_err(format!("not hex: {text:?}"))),
        }
    }
    Ok(Some(out))
}

/// A file's sha256 from parallel segments, checked against hex midstates taken every `step`
/// bytes; `None` when they do not chain to the file's bytes.
#[pyfunction]
#[pyo3(signature = (path, step, midstates, *, progress = None))]
fn sha256_chained(
    py: Python<'_>,
    path: PathBuf,
    step: u64,
    midstates: Vec<String>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Option<String>> {
    let states = midstates
        .iter()
        .map(|h| parse_hex32(Some(h)).map(|b| state_from_bytes(&b.unwrap_or_default())))
        .collect::<PyResult<Vec<_>>>()?;
    run(py, progress.as_ref(), |ctl| {
        hash::sha256_chained(&path, step, &states, ctl)
    })
    .map(|d| d.map(|d| hex(&d)))
}

/// Write a zip bundle. `members` are `(name, bytes or path, method or None, level or None)`.
/// Returns the member reports and the sha256 of the whole archive.
#[pyfunction]
#[pyo3(signature = (out_path, members, *, method = "stored", level = None, mtime = None,
                    overwrite = false, manifest = None, progress = None))]
#[allow(clippy::too_many_arguments)]
fn write_bundle(
    py: Python<'_>,
    out_path: PathBuf,
    members: Vec<(String, PySource, Option<String>, Option<i32>)>,
    method: &str,
    level: Option<i32>,
    mtime: Option<i64>,
    overwrite: bool,
    manifest: Option<String>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(Vec<ReportTuple>, String)> {
    let specs = members
        .into_iter()
        .map(|(name, source, m, l)| {
            Ok(MemberSpec {
                name,
                source: match source {
                    PySource::Bytes(b) => Source::Bytes(b),
                    PySource::Path(p) => Source::File(p),
                },
                method: m.map(|m| parse_method(&m, l)).transpose()?,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let opts = WriteOptions {
        method: parse_method(method, level)?,
        mtime: mtime.map(DosTime::from_unix).unwrap_or_default(),
        overwrite,
        force_zip64: false,
        manifest,
    };
    let written = run(py, progress.as_ref(), |ctl| {
        bundle::write_bundle(&out_path, &specs, &opts, ctl)
    })?;
    let whole = hex(&written.sha256);
    let reports = written
        .members
        .into_iter()
        .map(|r| {
            let (sha, b3) = (r.sha256_hex(), r.blake3_hex());
            (
                r.name,
                r.method.as_str(),
                r.offset,
                r.size,
                r.compressed_size,
                r.crc32,
                sha,
                b3,
            )
        })
        .collect();
    Ok((reports, whole))
}

/// `(name, method, size, compressed_size, crc32, offset, data_offset, is_dir)`.
type EntryTuple = (String, &'static str, u64, u64, u32, u64, u64, bool);

/// A zip bundle opened for safe reading: validated whole before anything is read.
#[pyclass(name = "ZipReader", module = "modelcas._core", frozen)]
struct PyZipReader {
    inner: bundle::Bundle,
}

#[pymethods]
impl PyZipReader {
    #[new]
    #[pyo3(signature = (path, *, max_members = None, max_member_size = None,
                        max_total_size = None, max_ratio = None, zstd_window_log_max = None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        max_members: Option<u64>,
        max_member_size: Option<u64>,
        max_total_size: Option<u64>,
        max_ratio: Option<u64>,
        zstd_window_log_max: Option<u32>,
    ) -> PyResult<Self> {
        let d = Limits::default();
        let limits = Limits {
            max_members: max_members.unwrap_or(d.max_members),
            max_member_size: max_member_size.unwrap_or(d.max_member_size),
            max_total_size: max_total_size.unwrap_or(d.max_total_size),
            max_ratio: max_ratio.unwrap_or(d.max_ratio),
            zstd_window_log_max: zstd_window_log_max.unwrap_or(d.zstd_window_log_max),
            ..d
        };
        let inner = run(py, None, |_| bundle::Bundle::open(&path, limits))?;
        Ok(PyZipReader { inner })
    }

    fn entries(&self) -> Vec<EntryTuple> {
        self.inner
            .entries()
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    e.method.as_str(),
                    e.size,
                    e.compressed_size,
                    e.crc32,
                    e.offset,
                    e.data_offset,
                    e.is_dir,
                )
            })
            .collect()
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.inner.index_of(name)
    }

    #[pyo3(signature = (index, *, sha256 = true, progress = None))]
    fn hash_member(
        &self,
        py: Python<'_>,
        index: usize,
        sha256: bool,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<DigestTuple> {
        run(py, progress.as_ref(), |ctl| {
            self.inner.hash_member(index, sha256, ctl)
        })
        .map(to_tuple)
    }

    fn read_member<'py>(
        &self,
        py: Python<'py>,
        index: usize,
        max_bytes: u64,
    ) -> PyResult<(Bound<'py, pyo3::types::PyBytes>, DigestTuple)> {
        let (data, digests) = run(py, None, |ctl| {
            self.inner.read_member(index, max_bytes, ctl)
        })?;
        Ok((pyo3::types::PyBytes::new(py, &data), to_tuple(digests)))
    }

    #[pyo3(signature = (index, dest, *, sha256 = None, blake3 = None, overwrite = false,
                        progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn extract_member(
        &self,
        py: Python<'_>,
        index: usize,
        dest: PathBuf,
        sha256: Option<&str>,
        blake3: Option<&str>,
        overwrite: bool,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<DigestTuple> {
        let expect = Expected {
            sha256: parse_hex32(sha256)?,
            blake3: parse_hex32(blake3)?,
        };
        run(py, progress.as_ref(), |ctl| {
            self.inner
                .extract_member(index, &dest, &expect, overwrite, ctl)
        })
        .map(to_tuple)
    }

    fn member_data_range(&self, index: usize) -> PyResult<(u64, u64)> {
        self.inner.member_data_range(index).map_err(to_py)
    }
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(hash_file, m)?)?;
    m.add_function(wrap_pyfunction!(hash_files, m)?)?;
    m.add_function(wrap_pyfunction!(hash_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(copy_file, m)?)?;
    m.add_function(wrap_pyfunction!(sha256_chained, m)?)?;
    m.add_class::<PyHasher>()?;
    m.add_class::<PyFileReader>()?;
    m.add_function(wrap_pyfunction!(write_bundle, m)?)?;
    m.add_class::<PyZipReader>()?;
    Ok(())
}

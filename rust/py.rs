//! The Python bindings: the only file that knows about pyo3. Results cross the boundary as
//! typed, frozen records with named getters (documented in `_core.pyi`), never as tuples.

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

use crate::control::Control;
use crate::error::{Error, Result};
use crate::hash::{self, hex, Algos, Digests, ReadMode};
use crate::load;
use crate::manifest::{self, parse_hex32, Manifest};
use crate::sha256::state_from_bytes;
use crate::zip::read::{ExtractOptions, Problem, Verified};
use crate::zip::{
    self as zipc, DosTime, Expected, Limits, MemberSpec, Method, Source, WriteOptions,
};

pyo3::import_exception!(modelcas.errors, IntegrityError);
pyo3::import_exception!(modelcas.errors, UnsafeArchiveError);
pyo3::import_exception!(modelcas.errors, ArchiveLimitError);
pyo3::import_exception!(modelcas.errors, BundleError);

/// How often a waiting call looks for Ctrl-C and reports progress.
const POLL: Duration = Duration::from_millis(50);
/// Buffers smaller than this are hashed without releasing the GIL: the round trip costs more.
const INLINE_MAX: usize = 64 << 10;

/// The digests of one byte stream: its size, and each digest that was asked for.
#[pyclass(name = "Digests", module = "modelcas._core", frozen, get_all)]
#[derive(Clone)]
struct PyDigests {
    size: u64,
    sha256: Option<String>,
    blake3: Option<String>,
    crc32: Option<u32>,
}

#[pymethods]
impl PyDigests {
    fn __repr__(&self) -> String {
        format!(
            "Digests(size={}, sha256={:?}, blake3={:?}, crc32={:?})",
            self.size, self.sha256, self.blake3, self.crc32
        )
    }
}

impl From<Digests> for PyDigests {
    fn from(d: Digests) -> Self {
        PyDigests {
            size: d.size,
            sha256: d.sha256.map(|b| hex(&b)),
            blake3: d.blake3.map(|b| hex(&b)),
            crc32: d.crc32,
        }
    }
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
        Error::Format(msg) => BundleError::new_err(msg),
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
#[pyo3(signature = (path, algos, *, mmap = None, regular_only = false, follow = false, progress = None))]
fn hash_file(
    py: Python<'_>,
    path: PathBuf,
    algos: Vec<String>,
    mmap: Option<bool>,
    regular_only: bool,
    follow: bool,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<PyDigests> {
    let algos = parse_algos(algos)?;
    let mode = ReadMode {
        mmap,
        regular_only,
        follow,
    };
    run(py, progress.as_ref(), |ctl| {
        hash::hash_file(&path, algos, mode, ctl)
    })
    .map(PyDigests::from)
}

#[pyfunction]
#[pyo3(signature = (paths, algos, *, mmap = None, regular_only = false, follow = false, progress = None))]
fn hash_files(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    algos: Vec<String>,
    mmap: Option<bool>,
    regular_only: bool,
    follow: bool,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Vec<Py<PyAny>>> {
    let algos = parse_algos(algos)?;
    let results = run(py, progress.as_ref(), |ctl| {
        let mode = ReadMode {
            mmap,
            regular_only,
            follow,
        };
        hash::hash_files(&paths, algos, mode, ctl)
    })?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(d) => Ok(Py::new(py, PyDigests::from(d))?.into_any()),
            Err(e) => Ok(to_py(e).into_value(py).into_any()),
        })
        .collect()
}

#[pyfunction]
#[pyo3(signature = (data, algos))]
fn hash_buffer(py: Python<'_>, data: &Bound<'_, PyAny>, algos: Vec<String>) -> PyResult<PyDigests> {
    let algos = parse_algos(algos)?;
    let buf = PyUntypedBuffer::get(data)?;
    let bytes = bytes_of(&buf)?;
    if bytes.len() < INLINE_MAX {
        let mut h = hash::Hasher::new(algos);
        h.update(bytes);
        return Ok(h.finalize().into());
    }
    run(py, None, |ctl| hash::hash_bytes(bytes, algos, ctl)).map(PyDigests::from)
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
) -> PyResult<PyDigests> {
    let algos = parse_algos(algos)?;
    run(py, progress.as_ref(), |ctl| {
        hash::copy_file(&src, &dst, algos, fsync, ctl)
    })
    .map(PyDigests::from)
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

    fn digest(&self) -> PyDigests {
        self.lock().finalize().into()
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

fn parse_method(name: &str, level: Option<i32>) -> PyResult<Method> {
    Method::parse(name, level).map_err(to_py)
}

fn hex32(text: Option<&str>) -> PyResult<Option<[u8; 32]>> {
    text.map(|t| {
        parse_hex32(t)
            .ok_or_else(|| PyValueError::new_err(format!("not a 64-digit hex digest: {t:?}")))
    })
    .transpose()
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
        .map(|h| hex32(Some(h)).map(|b| state_from_bytes(&b.unwrap_or_default())))
        .collect::<PyResult<Vec<_>>>()?;
    run(py, progress.as_ref(), |ctl| {
        crate::chained::sha256_chained(&path, step, &states, ctl)
    })
    .map(|d| d.map(|d| hex(&d)))
}

/// A member to write: its name in the archive and where its bytes come from.
#[pyclass(name = "Member", module = "modelcas._core", frozen)]
struct PyMember {
    spec: MemberSpec,
}

/// A member's bytes: a buffer, or a path to read.
#[derive(FromPyObject)]
enum PySource {
    Bytes(Vec<u8>),
    Path(PathBuf),
}

#[pymethods]
impl PyMember {
    #[new]
    #[pyo3(signature = (name, source, *, method = None, level = None, sha256 = None))]
    fn new(
        name: String,
        source: PySource,
        method: Option<&str>,
        level: Option<i32>,
        sha256: Option<&str>,
    ) -> PyResult<Self> {
        Ok(PyMember {
            spec: MemberSpec {
                name,
                source: match source {
                    PySource::Bytes(b) => Source::Bytes(b),
                    PySource::Path(p) => Source::File(p),
                },
                method: method.map(|m| parse_method(m, level)).transpose()?,
                expect_sha256: hex32(sha256)?,
            },
        })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn __repr__(&self) -> String {
        format!("Member({:?})", self.spec.name)
    }
}

/// What was written for one member.
#[pyclass(name = "WrittenMember", module = "modelcas._core", frozen, get_all)]
#[derive(Clone)]
struct PyWrittenMember {
    name: String,
    method: &'static str,
    offset: u64,
    size: u64,
    compressed_size: u64,
    crc32: u32,
    sha256: String,
    blake3: String,
}

#[pymethods]
impl PyWrittenMember {
    fn __repr__(&self) -> String {
        format!(
            "WrittenMember({:?}, {}, size={}, sha256={:?})",
            self.name, self.method, self.size, self.sha256
        )
    }
}

/// What `write_bundle` wrote: every member, the archive's sha256 and its sidecar.
#[pyclass(name = "Written", module = "modelcas._core", frozen, get_all)]
struct PyWritten {
    members: Vec<PyWrittenMember>,
    sha256: String,
    sidecar: Option<PathBuf>,
}

/// Write a zip bundle of `members`, in order. With `manifest`, the manifest is appended as the
/// last member; with `sidecar`, a `.sha256` file is written beside the bundle, as a pair.
#[pyfunction]
#[pyo3(signature = (out_path, members, *, method = "stored", level = None, mtime = None,
                    overwrite = false, manifest = false, sidecar = false, progress = None))]
#[allow(clippy::too_many_arguments)]
fn write_bundle(
    py: Python<'_>,
    out_path: PathBuf,
    members: Vec<PyRef<'_, PyMember>>,
    method: &str,
    level: Option<i32>,
    mtime: Option<i64>,
    overwrite: bool,
    manifest: bool,
    sidecar: bool,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<PyWritten> {
    let specs: Vec<MemberSpec> = members.iter().map(|m| m.spec.clone()).collect();
    let opts = WriteOptions {
        method: parse_method(method, level)?,
        mtime: mtime.map(DosTime::from_unix).unwrap_or_default(),
        overwrite,
        force_zip64: false,
        manifest,
        sidecar,
    };
    let written = run(py, progress.as_ref(), |ctl| {
        zipc::write_bundle(&out_path, &specs, &opts, ctl)
    })?;
    Ok(PyWritten {
        sha256: hex(&written.sha256),
        sidecar: written.sidecar,
        members: written
            .members
            .into_iter()
            .map(|r| PyWrittenMember {
                method: r.method.as_str(),
                sha256: r.sha256_hex(),
                blake3: r.blake3_hex(),
                offset: r.offset,
                size: r.size,
                compressed_size: r.compressed_size,
                crc32: r.crc32,
                name: r.name,
            })
            .collect(),
    })
}

/// One member as the central directory lists it.
#[pyclass(name = "Entry", module = "modelcas._core", frozen, get_all)]
#[derive(Clone)]
struct PyEntry {
    name: String,
    method: &'static str,
    size: u64,
    compressed_size: u64,
    crc32: u32,
    offset: u64,
    data_offset: u64,
    is_dir: bool,
}

#[pymethods]
impl PyEntry {
    fn __repr__(&self) -> String {
        format!(
            "Entry({:?}, {}, size={}, compressed_size={})",
            self.name, self.method, self.size, self.compressed_size
        )
    }
}

/// What a bundle's manifest records of one member.
#[pyclass(name = "ManifestEntry", module = "modelcas._core", frozen, get_all)]
#[derive(Clone)]
struct PyManifestEntry {
    name: String,
    size: u64,
    crc32: u32,
    sha256: String,
    blake3: String,
}

#[pymethods]
impl PyManifestEntry {
    fn __repr__(&self) -> String {
        format!(
            "ManifestEntry({:?}, size={}, sha256={:?})",
            self.name, self.size, self.sha256
        )
    }
}

/// A bundle's manifest (`rust/manifest.rs` owns the format).
#[pyclass(name = "Manifest", module = "modelcas._core", frozen)]
struct PyManifest {
    inner: Manifest,
}

#[pymethods]
impl PyManifest {
    #[getter]
    fn version(&self) -> u64 {
        manifest::VERSION
    }

    #[getter]
    fn members(&self) -> Vec<PyManifestEntry> {
        self.inner
            .members
            .iter()
            .map(|e| PyManifestEntry {
                name: e.name.clone(),
                size: e.size,
                crc32: e.crc32,
                sha256: hex(&e.sha256),
                blake3: hex(&e.blake3),
            })
            .collect()
    }

    #[getter]
    fn midstate_step(&self) -> Option<u64> {
        self.inner.midstates.as_ref().map(|m| m.step)
    }

    #[getter]
    fn midstates(&self) -> Vec<String> {
        self.inner.midstates.as_ref().map_or_else(Vec::new, |m| {
            m.states
                .iter()
                .map(|s| hex(&crate::sha256::state_bytes(s)))
                .collect()
        })
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    fn __repr__(&self) -> String {
        format!("Manifest({} members)", self.inner.members.len())
    }
}

/// One thing a check found wrong with a bundle.
#[pyclass(name = "Problem", module = "modelcas._core", frozen, get_all)]
#[derive(Clone)]
struct PyProblem {
    member: Option<String>,
    kind: &'static str,
    message: String,
}

#[pymethods]
impl PyProblem {
    fn __repr__(&self) -> String {
        format!("Problem({:?}, {:?})", self.kind, self.message)
    }
}

impl From<Problem> for PyProblem {
    fn from(p: Problem) -> Self {
        PyProblem {
            member: p.member,
            kind: p.kind,
            message: p.message,
        }
    }
}

/// What `Archive.verify` found.
#[pyclass(name = "Verified", module = "modelcas._core", frozen, get_all)]
struct PyVerified {
    problems: Vec<PyProblem>,
    checked: usize,
    sha256: Option<String>,
}

impl From<Verified> for PyVerified {
    fn from(v: Verified) -> Self {
        PyVerified {
            problems: v.problems.into_iter().map(PyProblem::from).collect(),
            checked: v.checked,
            sha256: v.sha256.map(|d| hex(&d)),
        }
    }
}

/// A zip archive opened for safe reading: validated whole before anything is read.
#[pyclass(name = "Archive", module = "modelcas._core", frozen)]
struct PyArchive {
    inner: zipc::Archive,
}

#[pymethods]
impl PyArchive {
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
        let inner = run(py, None, |_| zipc::Archive::open(&path, limits))?;
        Ok(PyArchive { inner })
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    fn entries(&self) -> Vec<PyEntry> {
        self.inner
            .entries()
            .iter()
            .map(|e| PyEntry {
                name: e.name.clone(),
                method: e.method.as_str(),
                size: e.size,
                compressed_size: e.compressed_size,
                crc32: e.crc32,
                offset: e.offset,
                data_offset: e.data_offset,
                is_dir: e.is_dir,
            })
            .collect()
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.inner.index_of(name)
    }

    fn manifest(&self, py: Python<'_>) -> PyResult<PyManifest> {
        let inner = run(py, None, |ctl| self.inner.manifest(ctl))?;
        Ok(PyManifest { inner })
    }

    fn check_listing(&self, manifest: PyRef<'_, PyManifest>) -> Vec<PyProblem> {
        self.inner
            .check_listing(&manifest.inner)
            .into_iter()
            .map(PyProblem::from)
            .collect()
    }

    #[pyo3(signature = (index, *, sha256 = true, progress = None))]
    fn hash_member(
        &self,
        py: Python<'_>,
        index: usize,
        sha256: bool,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<PyDigests> {
        run(py, progress.as_ref(), |ctl| {
            self.inner.hash_member(index, sha256, ctl)
        })
        .map(PyDigests::from)
    }

    #[pyo3(signature = (index, max_bytes, *, sha256 = None))]
    fn read_member<'py>(
        &self,
        py: Python<'py>,
        index: usize,
        max_bytes: u64,
        sha256: Option<&str>,
    ) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let want = hex32(sha256)?;
        let (data, digests) = run(py, None, |ctl| {
            self.inner.read_member(index, max_bytes, ctl)
        })?;
        if let (Some(want), Some(got)) = (want, digests.sha256) {
            if want != got {
                let name = self.inner.entry(index).map_or("?", |e| e.name.as_str());
                return Err(IntegrityError::new_err(format!(
                    "{}: member {name:?} has sha256 {}, the manifest says {}",
                    self.inner.path().display(),
                    hex(&got),
                    hex(&want)
                )));
            }
        }
        Ok(pyo3::types::PyBytes::new(py, &data))
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
    ) -> PyResult<PyDigests> {
        let expect = Expected {
            sha256: hex32(sha256)?,
            blake3: hex32(blake3)?,
        };
        run(py, progress.as_ref(), |ctl| {
            self.inner
                .extract_member(index, &dest, &expect, overwrite, ctl)
        })
        .map(PyDigests::from)
    }

    #[pyo3(signature = (dest, manifest, *, overwrite = false, deep = false, sync = false,
                        progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn extract(
        &self,
        py: Python<'_>,
        dest: PathBuf,
        manifest: PyRef<'_, PyManifest>,
        overwrite: bool,
        deep: bool,
        sync: bool,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Vec<String>> {
        let opts = ExtractOptions {
            overwrite,
            deep,
            sync,
        };
        let m = &manifest.inner;
        run(py, progress.as_ref(), |ctl| {
            self.inner.extract(&dest, m, opts, ctl)
        })
    }

    #[pyo3(signature = (manifest, *, whole = false, deep = false, progress = None))]
    fn verify(
        &self,
        py: Python<'_>,
        manifest: PyRef<'_, PyManifest>,
        whole: bool,
        deep: bool,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<PyVerified> {
        let m = &manifest.inner;
        run(py, progress.as_ref(), |ctl| {
            self.inner.verify(m, whole, deep, ctl)
        })
        .map(PyVerified::from)
    }

    fn __repr__(&self) -> String {
        format!("Archive({:?})", self.inner.path())
    }
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MANIFEST_MEMBER", manifest::MEMBER)?;
    m.add("MANIFEST_VERSION", manifest::VERSION)?;
    m.add_class::<PyDigests>()?;
    m.add_function(wrap_pyfunction!(hash_file, m)?)?;
    m.add_function(wrap_pyfunction!(hash_files, m)?)?;
    m.add_function(wrap_pyfunction!(hash_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(copy_file, m)?)?;
    m.add_function(wrap_pyfunction!(sha256_chained, m)?)?;
    m.add_class::<PyHasher>()?;
    m.add_class::<PyFileReader>()?;
    m.add_class::<PyMember>()?;
    m.add_class::<PyWrittenMember>()?;
    m.add_class::<PyWritten>()?;
    m.add_function(wrap_pyfunction!(write_bundle, m)?)?;
    m.add_class::<PyEntry>()?;
    m.add_class::<PyManifestEntry>()?;
    m.add_class::<PyManifest>()?;
    m.add_class::<PyProblem>()?;
    m.add_class::<PyVerified>()?;
    m.add_class::<PyArchive>()?;
    Ok(())
}

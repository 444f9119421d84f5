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

use crate::control::Control;
use crate::error::{Error, Result};
use crate::hash::{self, hex, Algos, Digests, ReadMode};

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
#[pyo3(signature = (paths, algos, *, mmap = None, progress = None))]
fn hash_files(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    algos: Vec<String>,
    mmap: Option<bool>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Vec<Py<PyAny>>> {
    let algos = parse_algos(algos)?;
    let results = run(py, progress.as_ref(), |ctl| {
        let mode = ReadMode {
            mmap,
            regular_only: false,
        };
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

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(hash_file, m)?)?;
    m.add_function(wrap_pyfunction!(hash_files, m)?)?;
    m.add_function(wrap_pyfunction!(hash_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(copy_file, m)?)?;
    m.add_class::<PyHasher>()?;
    Ok(())
}

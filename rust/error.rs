//! One error type for the core. The bindings map each variant to a Python exception.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Error {
    /// An I/O failure on a named file.
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// The caller asked us to stop (Ctrl-C).
    Cancelled,
    /// Bytes did not match what was expected of them.
    Integrity(String),
    /// The caller passed something we cannot work with.
    Invalid(String),
    /// An archive breaks a rule that protects its reader (an unsafe name, overlapping entries,
    /// disagreeing headers, encryption, an unsupported method); it is refused whole.
    Unsafe(String),
    /// Input goes over a configured limit (size, member count, compression ratio, zstd window).
    Limit(String),
    /// A document the core parses (a bundle's manifest) is missing or malformed.
    Format(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: &Path, action: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            Error::Cancelled => f.write_str("interrupted"),
            Error::Integrity(msg)
            | Error::Invalid(msg)
            | Error::Unsafe(msg)
            | Error::Limit(msg)
            | Error::Format(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Attach a path and an action to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: &Path, action: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path, action: &'static str) -> Result<T> {
        self.map_err(|e| Error::io(path, action, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_names_path_and_action() {
        let e = Error::io(
            Path::new("/x/best.pt"),
            "read",
            io::Error::from(io::ErrorKind::NotFound),
        );
        let text = e.to_string();
        assert!(text.contains("/x/best.pt"), "{text}");
        assert!(text.starts_with("cannot read"), "{text}");
    }
}

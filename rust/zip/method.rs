//! Compression methods: how a member is stored, and how the writer compresses it.

use crate::error::{Error, Result};
use crate::zip::format::{
    METHOD_DEFLATE, METHOD_STORED, METHOD_ZSTD, VERSION_DEFLATE, VERSION_STORED, VERSION_ZSTD,
};

/// How a member's data is stored in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    Stored,
    Deflate,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Stored => "stored",
            Compression::Deflate => "deflate",
            Compression::Zstd => "zstd",
        }
    }

    pub fn zip_method(self) -> u16 {
        match self {
            Compression::Stored => METHOD_STORED,
            Compression::Deflate => METHOD_DEFLATE,
            Compression::Zstd => METHOD_ZSTD,
        }
    }

    pub(crate) fn version_needed(self) -> u16 {
        match self {
            Compression::Stored => VERSION_STORED,
            Compression::Deflate => VERSION_DEFLATE,
            Compression::Zstd => VERSION_ZSTD,
        }
    }
}

/// How the writer compresses a member, with its level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    #[default]
    Stored,
    /// Level 0 (no compression) to 9.
    Deflate { level: u32 },
    /// Level 1 to 22.
    Zstd { level: i32 },
}

impl Method {
    pub const DEFAULT_DEFLATE_LEVEL: u32 = 6;
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

    /// Parse `"stored"`, `"deflate"` or `"zstd"`, with an optional level.
    pub fn parse(name: &str, level: Option<i32>) -> Result<Method> {
        let method = match (name, level) {
            ("stored", None) => Method::Stored,
            ("stored", Some(_)) => {
                return Err(Error::Invalid(
                    "the stored method takes no compression level".into(),
                ))
            }
            ("deflate", level) => Method::Deflate {
                level: match level {
                    None => Self::DEFAULT_DEFLATE_LEVEL,
                    Some(l) => u32::try_from(l).unwrap_or(u32::MAX),
                },
            },
            ("zstd", level) => Method::Zstd {
                level: level.unwrap_or(Self::DEFAULT_ZSTD_LEVEL),
            },
            (other, _) => {
                return Err(Error::Invalid(format!(
                    "unknown compression method {other:?}: expected stored, deflate or zstd"
                )))
            }
        };
        method.validate()?;
        Ok(method)
    }

    pub fn compression(self) -> Compression {
        match self {
            Method::Stored => Compression::Stored,
            Method::Deflate { .. } => Compression::Deflate,
            Method::Zstd { .. } => Compression::Zstd,
        }
    }

    pub(crate) fn validate(self) -> Result<()> {
        match self {
            Method::Deflate { level } if level > 9 => Err(Error::Invalid(format!(
                "deflate level {level} is out of range: expected 0 to 9"
            ))),
            Method::Zstd { level } if !(1..=22).contains(&level) => Err(Error::Invalid(format!(
                "zstd level {level} is out of range: expected 1 to 22"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_names_and_levels() {
        assert_eq!(Method::parse("stored", None).unwrap(), Method::Stored);
        assert_eq!(
            Method::parse("deflate", None).unwrap(),
            Method::Deflate { level: 6 }
        );
        assert_eq!(
            Method::parse("zstd", Some(19)).unwrap(),
            Method::Zstd { level: 19 }
        );
        for (name, level, want) in [
            ("stored", Some(1), "takes no compression level"),
            ("deflate", Some(10), "expected 0 to 9"),
            ("deflate", Some(-1), "expected 0 to 9"),
            ("zstd", Some(0), "expected 1 to 22"),
            ("zstd", Some(99), "expected 1 to 22"),
            ("bzip2", None, "unknown compression method"),
        ] {
            let err = Method::parse(name, level).unwrap_err().to_string();
            assert!(err.contains(want), "{name}:{level:?}: {err}");
        }
        assert_eq!(Compression::Zstd.zip_method(), METHOD_ZSTD);
        assert_eq!(
            Method::Deflate { level: 1 }.compression().as_str(),
            "deflate"
        );
    }
}

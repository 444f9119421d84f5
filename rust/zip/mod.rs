//! Zip bundles: a deterministic streaming writer (`write`), and a strict reader for untrusted
//! archives (`read`), over the record layouts in `format`.

pub mod dostime;
pub mod format;
pub mod limits;
pub mod method;
pub mod names;
pub(crate) mod pump;
pub mod read;
pub mod write;

#[cfg(test)]
pub(crate) mod testkit;

pub use dostime::DosTime;
pub use limits::Limits;
pub use method::{Compression, Method};
pub use read::{Archive, Entry, Expected};
pub use write::{write_bundle, MemberReport, MemberSpec, Source, WriteOptions, Written};

//! modelcas core: the byte-heavy work (hashing, later bundle packing), free of Python.
//! `py.rs` is the only file that knows about Python.

pub mod bundle;
pub mod control;
pub mod error;
pub mod hash;
pub mod sha256;
pub mod zipfmt;

#[cfg(feature = "python")]
mod py;

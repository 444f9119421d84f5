//! modelcas core: the byte-heavy work (hashing, bundle packing and reading, verified
//! reads into caller memory), free of Python.
//! `py.rs` is the only file that knows about Python.

pub mod beneath;
pub mod chained;
pub mod control;
pub mod error;
pub mod fsio;
pub mod hash;
pub mod json;
pub mod load;
pub mod manifest;
mod mapped;
pub mod sha256;
pub mod zip;

#[cfg(feature = "python")]
mod py;

/// Incompressible test bytes from a seed (xorshift).
#[cfg(test)]
pub(crate) fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

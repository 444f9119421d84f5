//! modelcas core: the byte-heavy work (hashing, packing, verified reads), free of Python.
//! `py.rs` is the only file that knows about Python.

pub mod bundle;
pub mod control;
pub mod error;
pub mod hash;
pub mod load;
pub mod sha256;
pub mod zipfmt;

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
            x as u8
        })
        .collect()
}

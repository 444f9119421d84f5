//! The sha256 of a file in parallel segments, from the midstates a bundle's manifest records.
//!
//! Segment `i` starts from the state after `i * step` bytes and must end in the state after
//! `(i + 1) * step`; two segments run side by side on each thread (SHA-NI pairing, see
//! `sha256.rs`). The midstates are checked, never trusted: when every link holds, the result is
//! the file's sha256, by induction from the initial state. `None` when a link fails (the file is
//! not the one they were taken from, or they are wrong); the caller then hashes the file from
//! start to end to find its actual digest.
#![deny(clippy::arithmetic_side_effects)]

use std::path::Path;

use rayon::prelude::*;

use crate::control::{pool, Control};
use crate::error::Result;
use crate::fsio::{open_checked, Open};
use crate::mapped::Mapped;
use crate::sha256::{state_bytes, Sha256};

/// Bytes hashed between checks for cancellation.
const SLICE: usize = 1 << 20;

/// The sha256 of the file at `path` (a symlink is followed), from its midstates.
pub fn sha256_chained(
    path: &Path,
    step: u64,
    midstates: &[[u32; 8]],
    ctl: &Control,
) -> Result<Option<[u8; 32]>> {
    let (file, meta) = open_checked(path, Open::Any)?;
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() == 0 {
        return chained(&[], step, midstates, ctl);
    }
    // A file truncated meanwhile is an error, not a SIGBUS (`mapped.rs`).
    let map = Mapped::map(&file, path)?;
    let digest = chained(&map, step, midstates, ctl)?;
    map.check()?;
    Ok(digest)
}

/// The sha256 of `data` from its midstates, on the pool; `None` when they do not chain.
pub fn chained(
    data: &[u8],
    step: u64,
    midstates: &[[u32; 8]],
    ctl: &Control,
) -> Result<Option<[u8; 32]>> {
    let Some(segments) = segments(data.len(), step, midstates.len()) else {
        return Ok(None);
    };
    let pairs: Vec<&[std::ops::Range<usize>]> = segments.chunks(2).collect();
    let ends = pool()?.install(|| {
        pairs
            .par_iter()
            .enumerate()
            .map(|(k, pair)| run_pair(data, pair, k.saturating_mul(2), midstates, ctl))
            .collect::<Result<Vec<_>>>()
    })?;
    let ends: Vec<Option<[u8; 32]>> = ends.into_iter().flatten().collect();
    let (last, middle) = ends.split_last().unwrap_or((&None, &[]));
    let linked = middle
        .iter()
        .zip(midstates)
        .all(|(end, want)| *end == Some(state_bytes(want)));
    Ok(if linked { *last } else { None })
}

/// The byte ranges of the segments: one per midstate and the rest; `None` when the step is not
/// a whole number of blocks or the midstates reach past the end.
fn segments(len: usize, step: u64, count: usize) -> Option<Vec<std::ops::Range<usize>>> {
    let step = usize::try_from(step)
        .ok()
        .filter(|s| *s > 0 && s % 64 == 0)?;
    let covered = count.checked_mul(step).filter(|c| *c <= len)?;
    let mut out: Vec<_> = (0..count)
        .map(|i| {
            let start = i.saturating_mul(step);
            start..start.saturating_add(step)
        })
        .collect();
    out.push(covered..len);
    Some(out)
}

/// Hash one or two segments side by side; yields how each ends: a middle segment in its
/// midstate (`None` mid-block), the last one in the data's digest.
fn run_pair(
    data: &[u8],
    pair: &[std::ops::Range<usize>],
    first: usize,
    midstates: &[[u32; 8]],
    ctl: &Control,
) -> Result<Vec<Option<[u8; 32]>>> {
    let start = |i: usize, at: usize| match i.checked_sub(1) {
        None => Sha256::new(),
        Some(prev) => Sha256::resume(midstates.get(prev).copied().unwrap_or_default(), at as u64),
    };
    let mut hs: Vec<Sha256> = pair
        .iter()
        .enumerate()
        .map(|(k, r)| start(first.saturating_add(k), r.start))
        .collect();
    let mut at: Vec<usize> = pair.iter().map(|r| r.start).collect();
    loop {
        ctl.check()?;
        let piece = |k: usize| {
            let (from, end) = (at.get(k).copied()?, pair.get(k)?.end);
            data.get(from..end.min(from.saturating_add(SLICE)))
        };
        let (a, b) = (piece(0).unwrap_or_default(), piece(1).unwrap_or_default());
        if a.is_empty() && b.is_empty() {
            break;
        }
        match hs.as_mut_slice() {
            [ha, hb] => Sha256::update_pair(ha, a, hb, b),
            [ha] => ha.update(a),
            _ => {}
        }
        for (k, n) in [a.len(), b.len()].into_iter().enumerate() {
            if let Some(x) = at.get_mut(k) {
                *x = x.saturating_add(n);
            }
        }
        ctl.advance(a.len().saturating_add(b.len()) as u64);
    }
    let last = midstates.len();
    Ok(hs
        .iter()
        .enumerate()
        .map(|(k, h)| {
            if first.saturating_add(k) == last {
                Some(h.finalize())
            } else {
                h.midstate().map(|s| state_bytes(&s))
            }
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    pub(crate) fn midstates_of(data: &[u8], step: usize) -> Vec<[u32; 8]> {
        let mut h = Sha256::new();
        data.chunks(step)
            .filter(|c| c.len() == step)
            .map(|c| {
                h.update(c);
                h.midstate().unwrap()
            })
            .collect()
    }

    #[test]
    fn sha256_chained_is_the_files_sha256_and_checks_every_link() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = Control::default();
        for (size, step) in [
            (0, 64),
            (1000, 64),
            (1024, 256),
            (300_000, 4096),
            (3 << 20, 65536),
        ] {
            let data = crate::noise(size, size as u64 + 1);
            let path = dir.path().join("f");
            std::fs::write(&path, &data).unwrap();
            let want: [u8; 32] = sha2::Sha256::digest(&data).into();
            let mids = midstates_of(&data, step);
            for count in (0..=mids.len()).step_by(mids.len() / 8 + 1) {
                let got = sha256_chained(&path, step as u64, &mids[..count], &ctl).unwrap();
                assert_eq!(got, Some(want), "{size} bytes, {count} midstates of {step}");
            }
            for k in (0..mids.len()).step_by(mids.len() / 8 + 1) {
                let mut bad = mids.clone();
                bad[k][3] ^= 1;
                let got = sha256_chained(&path, step as u64, &bad, &ctl).unwrap();
                assert_eq!(got, None, "{size} bytes, midstate {k} wrong");
            }
            // Steps that are not whole blocks, or midstates past the end, are not used.
            assert_eq!(sha256_chained(&path, 100, &[], &ctl).unwrap(), None);
            let past = vec![[0u32; 8]; size / step + 1];
            assert_eq!(
                sha256_chained(&path, step as u64, &past, &ctl).unwrap(),
                None
            );
        }
    }
}

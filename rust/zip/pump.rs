//! The pump that moves a member's bytes from a source to a sink in pieces, hashing each piece
//! on the way; the writer and the reader both stream members through it.

use crate::control::{pool, Control};
use crate::error::Result;
use crate::fsio::PageBuf;
use crate::hash::{Algos, Digests, Hasher};

/// Bytes per piece moved through `pump`: big enough for fast I/O, small enough to cancel fast.
/// Tests use small sizes throughout, so that every path (several pieces, spills) runs quickly.
pub(crate) const PIECE: usize = if cfg!(test) { 64 << 10 } else { 4 << 20 };
/// Below this, `pump` does everything on the calling thread.
const SMALL: usize = if cfg!(test) { 8 << 10 } else { 256 << 10 };

/// Fills the whole buffer unless the input ends; returns the bytes filled (0 at the end).
pub(crate) type Fill<'a> = dyn FnMut(&mut [u8]) -> Result<usize> + Send + 'a;
/// Takes each piece in order; `true` marks the last one (possibly empty).
pub(crate) type Sink<'a> = dyn FnMut(&[u8], bool) -> Result<()> + Send + 'a;

/// sha256 (when wanted) + crc32 on one lane, blake3 on the other.
struct Lanes {
    seq: Hasher,
    b3: Hasher,
}

impl Lanes {
    fn new(sha256: bool) -> Self {
        Lanes {
            seq: Hasher::new(Algos {
                sha256,
                blake3: false,
                crc32: true,
            }),
            b3: Hasher::new(Algos {
                sha256: false,
                blake3: true,
                crc32: false,
            }),
        }
    }

    /// Call inside the pool: both lanes run at once.
    fn update(&mut self, data: &[u8]) {
        let (seq, b3) = (&mut self.seq, &mut self.b3);
        rayon::join(|| seq.update(data), || b3.update(data));
    }

    fn finish(&self) -> Digests {
        let seq = self.seq.finalize();
        Digests {
            size: seq.size,
            sha256: seq.sha256,
            blake3: self.b3.finalize().blake3,
            crc32: seq.crc32,
        }
    }
}

/// Move a stream from `fill` to `sink` in pieces, hashing each piece on the way. While a piece is
/// hashed and consumed, the next one is being filled. Inputs smaller than `piece` stay on the
/// calling thread.
pub(crate) fn pump(
    sha256: bool,
    size_hint: u64,
    piece: usize,
    fill: &mut Fill<'_>,
    sink: &mut Sink<'_>,
    ctl: &Control,
) -> Result<Digests> {
    let mut lanes = Lanes::new(sha256);
    ctl.check()?;
    let first = usize::try_from(size_hint.saturating_add(1))
        .unwrap_or(piece)
        .clamp(4096, piece.max(4096));
    let mut cur = PageBuf::new(first);
    let mut n = fill(&mut cur)?;
    if n < cur.len() && n < SMALL {
        // Small inputs (most bundles hold a few) stay on this thread: handing them over costs
        // more than it saves.
        let data = cur.get(..n).unwrap_or_default();
        lanes.seq.update(data);
        lanes.b3.update(data);
        sink(data, true)?;
        ctl.advance(n as u64);
        return Ok(lanes.finish());
    }
    let mut next = PageBuf::new(piece.max(4096));
    pool()?.install(|| -> Result<()> {
        loop {
            ctl.check()?;
            let last = n < cur.len();
            let data = cur.get(..n).unwrap_or_default();
            if last {
                let (sunk, ()) = rayon::join(|| sink(data, true), || lanes.update(data));
                sunk?;
                ctl.advance(n as u64);
                return Ok(());
            }
            let (got, sunk) = rayon::join(
                || fill(&mut next),
                || {
                    let (sunk, ()) = rayon::join(|| sink(data, false), || lanes.update(data));
                    sunk
                },
            );
            sunk?;
            ctl.advance(n as u64);
            n = got?;
            std::mem::swap(&mut cur, &mut next);
        }
    })?;
    Ok(lanes.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_bytes;

    fn run(data: &[u8], sha256: bool) -> (Digests, Vec<u8>, usize) {
        let mut src = data;
        let mut fill = |buf: &mut [u8]| -> Result<usize> {
            Ok(crate::fsio::read_full(&mut src, buf).unwrap_or(0))
        };
        let (mut out, mut lasts) = (Vec::new(), 0);
        let mut sink = |piece: &[u8], last: bool| -> Result<()> {
            out.extend_from_slice(piece);
            lasts += usize::from(last);
            Ok(())
        };
        let d = pump(sha256, 0, PIECE, &mut fill, &mut sink, &Control::default()).unwrap();
        (d, out, lasts)
    }

    #[test]
    fn small_and_large_inputs_arrive_whole_and_hashed() {
        for len in [0, 100, SMALL + 1, 3 * PIECE + 17] {
            let data = crate::noise(len, 5);
            let (d, out, lasts) = run(&data, true);
            assert!(out == data, "{len}");
            assert_eq!(lasts, 1, "exactly one last piece for {len}");
            let all = Algos {
                sha256: true,
                blake3: true,
                crc32: true,
            };
            assert_eq!(d, hash_bytes(&data, all, &Control::default()).unwrap());
            assert_eq!(run(&data, false).0.sha256, None);
        }
    }
}

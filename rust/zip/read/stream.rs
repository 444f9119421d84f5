//! Streaming a member's data out: decompressed, hashed, bounded by its declared size and the
//! limits, and checked against its crc32 at the end.
#![deny(clippy::arithmetic_side_effects)]

use std::io::{self, BufReader};

use super::{Archive, Ctx, RangeReader};
use crate::control::Control;
use crate::error::{Error, Result};
use crate::fsio::read_full;
use crate::hash::Digests;
use crate::zip::method::Compression;
use crate::zip::pump::{pump, Sink, PIECE};

impl Archive {
    /// Decompress a member into `sink`, hashing it and enforcing the limits on the bytes
    /// actually produced; checks its size and crc32 at the end.
    pub(crate) fn stream(
        &self,
        index: usize,
        sha256: bool,
        sink: &mut Sink<'_>,
        ctl: &Control,
    ) -> Result<Digests> {
        let e = self.entry(index)?;
        let cx = Ctx { path: &self.path };
        let range = RangeReader {
            file: &self.file,
            pos: e.data_offset,
            end: e.data_offset.saturating_add(e.compressed_size),
        };
        let declared = e.size;
        let mut produced = 0u64;
        let io_err = |err: io::Error| Error::io(&self.path, "read", err);
        // Reads at most one byte past the declared size: enough to catch a member that lies.
        let mut bounded = |buf: &mut [u8], read: &mut dyn FnMut(&mut [u8]) -> Result<usize>| {
            let room = usize::try_from(declared.saturating_sub(produced).saturating_add(1))
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = read(&mut buf[..room])?;
            produced = produced.saturating_add(n as u64);
            if produced > declared {
                return Err(cx.limit_member(
                    &e.name,
                    format_args!(
                        "decompresses to more than the {declared} bytes it declares \
                         (a zip bomb, or corrupt data)"
                    ),
                ));
            }
            Ok(n)
        };
        let digests = match e.method {
            Compression::Stored => {
                let mut r = range;
                let mut fill =
                    |buf: &mut [u8]| bounded(buf, &mut |b| read_full(&mut r, b).map_err(io_err));
                pump(sha256, declared, PIECE, &mut fill, sink, ctl)?
            }
            Compression::Deflate => {
                let mut dec = flate2::bufread::DeflateDecoder::new(BufReader::with_capacity(
                    256 << 10,
                    range,
                ));
                let digests = {
                    let mut fill = |buf: &mut [u8]| {
                        bounded(buf, &mut |b| {
                            read_full(&mut dec, b).map_err(|err| {
                                cx.corrupt(&e.name, format_args!("deflate data is corrupt: {err}"))
                            })
                        })
                    };
                    pump(sha256, declared, PIECE, &mut fill, sink, ctl)?
                };
                if dec.total_in() != e.compressed_size && produced == declared {
                    return Err(cx.corrupt(
                        &e.name,
                        format_args!(
                            "its deflate stream ends after {} of its {} compressed bytes",
                            dec.total_in(),
                            e.compressed_size
                        ),
                    ));
                }
                digests
            }
            Compression::Zstd => {
                let buffered = BufReader::with_capacity(256 << 10, range);
                let mut dec = zstd::stream::read::Decoder::with_buffer(buffered)
                    .map_err(|err| Error::Invalid(format!("zstd: {err}")))?;
                dec.window_log_max(self.limits.zstd_window_log_max)
                    .map_err(|err| Error::Invalid(format!("zstd: {err}")))?;
                let wlog = self.limits.zstd_window_log_max;
                let mut fill = |buf: &mut [u8]| {
                    bounded(buf, &mut |b| {
                        read_full(&mut dec, b).map_err(|err| zstd_error(&cx, &e.name, err, wlog))
                    })
                };
                pump(sha256, declared, PIECE, &mut fill, sink, ctl)?
            }
        };
        if digests.size != declared {
            return Err(cx.corrupt(
                &e.name,
                format_args!(
                    "is truncated or corrupt: its data gives {} bytes, the archive says {declared}",
                    digests.size
                ),
            ));
        }
        let crc = digests.crc32.unwrap_or_default();
        if crc != e.crc32 {
            return Err(cx.corrupt(
                &e.name,
                format_args!(
                    "crc32 is {crc:08x}, the archive says {:08x}: the data is corrupt",
                    e.crc32
                ),
            ));
        }
        Ok(digests)
    }
}

fn zstd_error(cx: &Ctx<'_>, name: &str, err: io::Error, wlog: u32) -> Error {
    let text = err.to_string();
    if text.contains("too much memory") || text.contains("indow") {
        cx.limit_member(
            name,
            format_args!(
                "its zstd data needs a window over the limit of 2^{wlog} bytes \
                 (zstd_window_log_max)"
            ),
        )
    } else {
        cx.corrupt(name, format_args!("zstd data is corrupt: {text}"))
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::zip::format::LOCAL_LEN;
    use crate::zip::testkit::*;
    use crate::zip::Limits;

    #[test]
    fn caps_output_that_exceeds_its_declared_size() {
        for mut e in [
            raw_deflate("bomb", &vec![0u8; 2 << 20]),
            raw_zstd("bomb", &vec![0u8; 2 << 20]),
        ] {
            e.size = 1000;
            let b = open_bytes(&build(&[e]), Limits::default()).unwrap();
            let err = b.hash_member(0, true, &Control::default()).unwrap_err();
            assert!(matches!(err, Error::Limit(_)), "{err}");
            assert!(
                err.to_string()
                    .contains("more than the 1000 bytes it declares"),
                "{err}"
            );
        }
    }

    #[test]
    fn detects_corrupt_data() {
        let mut bytes = build(&[raw("a", b"hello world"), raw_deflate("b", &sample(5000, 1))]);
        bytes[LOCAL_LEN + 1 + 3] ^= 1;
        let b = open_bytes(&bytes, Limits::default()).unwrap();
        let err = b.hash_member(0, true, &Control::default()).unwrap_err();
        assert!(
            matches!(err, Error::Integrity(_)) && err.to_string().contains("crc32"),
            "{err}"
        );
        assert!(b.hash_member(1, true, &Control::default()).is_ok());
        for cut in [1, 10, 23, 100] {
            assert!(open_bytes(&bytes[..bytes.len() - cut], Limits::default()).is_err());
        }
    }
}

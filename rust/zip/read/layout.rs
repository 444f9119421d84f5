//! The layout: every local header agrees with its central entry, and the members tile the file
//! from offset 0 up to the central directory, with no gaps and no overlap.
#![deny(clippy::arithmetic_side_effects)]

use std::fs::File;

use super::central::check_unicode_path;
use super::{add, Ctx, End, Entry};
use crate::error::Result;
use crate::zip::format::*;
use crate::zip::limits::Limits;
use crate::zip::method::Compression;
use crate::zip::names::quote;

/// Check every local header against its central entry, then require the members to tile the
/// file from offset 0 up to the central directory: no gaps, no overlap.
pub(super) fn check_layout(
    cx: &Ctx<'_>,
    file: &File,
    mut entries: Vec<Entry>,
    end: &End,
    limits: &Limits,
) -> Result<Vec<Entry>> {
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter_mut().enumerate() {
        let span_end = check_local(cx, file, e, end.cd_offset, limits)?;
        spans.push((e.offset, span_end, i));
    }
    spans.sort_unstable();
    let mut at = 0u64;
    let mut prev: Option<usize> = None;
    for &(start, stop, i) in &spans {
        let name = &entries[i].name;
        if start < at {
            let other = prev.map(|p| quote(&entries[p].name)).unwrap_or_default();
            return Err(cx.bad_member(
                name,
                format_args!(
                    "it starts at offset {start}, inside member {other} (which ends at {at}): \
                     overlapping entries"
                ),
            ));
        }
        if start > at {
            return Err(cx.bad(format_args!(
                "{} bytes at offset {at} belong to no member (before member {})",
                start.saturating_sub(at),
                quote(name)
            )));
        }
        at = stop;
        prev = Some(i);
    }
    if at != end.cd_offset {
        return Err(match prev {
            Some(p) if at > end.cd_offset => cx.bad_member(
                &entries[p].name,
                "its data runs into the central directory: overlapping entries",
            ),
            _ => cx.bad(format_args!(
                "{} bytes at offset {at} belong to no member (before the central directory)",
                end.cd_offset.saturating_sub(at)
            )),
        });
    }
    Ok(entries)
}

/// Check a local header against the central entry and set `data_offset`; returns where the
/// member's records end (after its data descriptor, if any).
fn check_local(
    cx: &Ctx<'_>,
    file: &File,
    e: &mut Entry,
    cd_offset: u64,
    limits: &Limits,
) -> Result<u64> {
    let name = e.name.clone();
    let bad = |msg: &dyn std::fmt::Display| cx.bad_member(&name, msg);
    let outside = || bad(&"its local header lies outside the member area");
    if add(e.offset, LOCAL_LEN as u64).is_none_or(|x| x > cd_offset) {
        return Err(outside());
    }
    let mut fixed = [0u8; LOCAL_LEN];
    cx.read_exact_at(file, &mut fixed, e.offset, "a local header")?;
    let h = LocalHeader::decode(&fixed)
        .ok_or_else(|| bad(&format_args!("no local header at offset {}", e.offset)))?;
    let var_len = usize::from(h.name_len).saturating_add(usize::from(h.extra_len));
    let var_at = add(e.offset, LOCAL_LEN as u64).ok_or_else(outside)?;
    let data_offset = add(var_at, var_len as u64).ok_or_else(outside)?;
    if data_offset > cd_offset {
        return Err(outside());
    }
    let mut var = vec![0u8; var_len];
    cx.read_exact_at(file, &mut var, var_at, "a local header")?;
    let (raw_name, extra) = var.split_at(usize::from(h.name_len));
    if raw_name != name.as_bytes() {
        return Err(bad(&format_args!(
            "its local header names it {} (local and central headers disagree)",
            quote(&String::from_utf8_lossy(raw_name))
        )));
    }
    let mask = FLAG_ENCRYPTED | FLAG_DESCRIPTOR | FLAG_UTF8 | FLAG_STRONG_ENCRYPTION;
    if h.flags & mask != e.flags & mask {
        return Err(bad(&"its local and central headers disagree on flags"));
    }
    if h.method != e.method.zip_method() {
        return Err(bad(&format_args!(
            "its local header says method {}, the central directory {} (local and central \
             headers disagree)",
            h.method,
            e.method.zip_method()
        )));
    }
    let fields = extra_fields(extra).ok_or_else(|| bad(&"its local extra field is malformed"))?;
    check_unicode_path(&fields, &name).map_err(|why| bad(&why))?;
    let local_zip64 = fields.iter().any(|(id, _)| *id == EXTRA_ZIP64);
    let (lsize, lcsize) = local_sizes(&fields, &h).map_err(|why| bad(&why))?;
    let descriptor = e.flags & FLAG_DESCRIPTOR != 0;
    let agree = |local: u64, central: u64| local == central || (descriptor && local == 0);
    if !agree(u64::from(h.crc32), u64::from(e.crc32))
        || !agree(lsize, e.size)
        || !agree(lcsize, e.compressed_size)
    {
        return Err(bad(&format_args!(
            "local header says crc32 {:08x}, size {lsize}, compressed size {lcsize}; the central \
             directory says {:08x}, {}, {} (local and central headers disagree)",
            h.crc32, e.crc32, e.size, e.compressed_size
        )));
    }
    let data_end = add(data_offset, e.compressed_size)
        .filter(|x| *x <= cd_offset)
        .ok_or_else(|| bad(&"its data runs into the central directory: overlapping entries"))?;
    e.data_offset = data_offset;
    let mut span_end = data_end;
    if descriptor {
        let wide = e.zip64_sizes || local_zip64;
        span_end = check_descriptor(cx, file, e, data_end, cd_offset, wide)?;
    }
    if e.method == Compression::Zstd && e.compressed_size > 0 {
        let mut head = [0u8; 14];
        let n = usize::try_from(e.compressed_size).unwrap_or(14).min(14);
        cx.read_exact_at(file, &mut head[..n], data_offset, "member data")?;
        if let Some(window) = zstd_window(&head[..n]) {
            let max = 1u64 << limits.zstd_window_log_max;
            if window > max {
                return Err(cx.limit_member(
                    &name,
                    format_args!(
                        "its zstd frame needs a {window}-byte window, over the limit of {max} \
                         bytes (zstd_window_log_max {})",
                        limits.zstd_window_log_max
                    ),
                ));
            }
        }
    }
    Ok(span_end)
}

/// Sizes from a local header, through its ZIP64 extra field when it has one. A local ZIP64
/// field holds both sizes; where a 32-bit field is not all ones, the two must agree.
fn local_sizes(
    fields: &[(u16, &[u8])],
    h: &LocalHeader,
) -> std::result::Result<(u64, u64), String> {
    let (size, csize) = (u64::from(h.size), u64::from(h.compressed_size));
    let mut found = fields.iter().filter(|(id, _)| *id == EXTRA_ZIP64);
    let Some((_, data)) = found.next() else {
        if size == MAX32 || csize == MAX32 {
            return Err(
                "its local header sets a size to 0xFFFFFFFF (defer to ZIP64) but has no ZIP64 \
                 extra field"
                    .into(),
            );
        }
        return Ok((size, csize));
    };
    if found.next().is_some() {
        return Err("its local header has two ZIP64 extra fields".into());
    }
    let mut r = Le::new(data);
    let (Some(zsize), Some(zcsize), 0) = (r.u64(), r.u64(), r.remaining()) else {
        return Err(format!(
            "its local ZIP64 extra field holds {} bytes, expected 16 (lying ZIP64 sizes)",
            data.len()
        ));
    };
    let pick = |v32: u64, v64: u64| -> std::result::Result<u64, String> {
        if v32 == MAX32 || v32 == v64 {
            Ok(v64)
        } else {
            Err(format!(
                "its local header says {v32} and its ZIP64 extra field {v64} for the same size \
                 (lying ZIP64 sizes)"
            ))
        }
    };
    Ok((pick(size, zsize)?, pick(csize, zcsize)?))
}

/// Check the data descriptor after a member's data; returns where it ends.
fn check_descriptor(
    cx: &Ctx<'_>,
    file: &File,
    e: &Entry,
    at: u64,
    cd_offset: u64,
    wide: bool,
) -> Result<u64> {
    // Signature (optional), crc32, then two sizes of 4 or 8 bytes.
    let (signed, unsigned) = if wide { (24, 20) } else { (16, 12) };
    let room = usize::try_from(cd_offset.saturating_sub(at))
        .unwrap_or(usize::MAX)
        .min(signed);
    let mut b = [0u8; 24];
    cx.read_exact_at(file, &mut b[..room], at, "a data descriptor")?;
    let b = &b[..room];
    let matches = |d: &[u8]| -> bool {
        let mut r = Le::new(d);
        let crc = r.u32();
        let (c, u) = if wide {
            (r.u64(), r.u64())
        } else {
            (r.u32().map(u64::from), r.u32().map(u64::from))
        };
        crc == Some(e.crc32) && c == Some(e.compressed_size) && u == Some(e.size)
    };
    let end = |len: usize| add(at, len as u64).ok_or_else(|| cx.bad("offsets overflow"));
    if b.get(..4) == Some(&SIG_DESCRIPTOR.to_le_bytes()[..]) && matches(&b[4..]) {
        return end(signed);
    }
    if matches(b) {
        return end(unsigned);
    }
    Err(cx.bad_member(
        &e.name,
        "its data descriptor is missing or disagrees with the central directory",
    ))
}

/// The window a zstd frame header asks for, if the data starts with a regular frame.
fn zstd_window(head: &[u8]) -> Option<u64> {
    let mut r = Le::new(head);
    if r.u32()? != 0xFD2F_B528 {
        return None;
    }
    let fhd = r.u8()?;
    if fhd & 0x20 == 0 {
        let wd = r.u8()?;
        // Exponent 10 to 41 and a mantissa in eighths: far from overflowing.
        let base = 1u64.checked_shl(u32::from(wd >> 3).checked_add(10)?)?;
        return base.checked_add((base / 8).checked_mul(u64::from(wd & 7))?);
    }
    // Single segment: the window is the content size.
    r.bytes([0, 1, 2, 4][usize::from(fhd & 3)])?;
    let fcs = r.bytes([1, 2, 4, 8][usize::from(fhd >> 6)])?;
    let mut le = [0u8; 8];
    le.get_mut(..fcs.len())?.copy_from_slice(fcs);
    let v = u64::from_le_bytes(le);
    // A two-byte content size is stored minus 256.
    Some(if fcs.len() == 2 {
        v.checked_add(256)?
    } else {
        v
    })
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::control::Control;
    use crate::error::Error;
    use crate::zip::testkit::*;
    use std::io::Read;

    #[test]
    fn refuses_overlapping_entries() {
        // Fifield's construction: the first member's data runs over the second one's header.
        let second = raw("b", b"BBBB");
        let second_len = LOCAL_LEN + 1 + 4;
        let mut first = raw("a", b"AAAA");
        first.csize += second_len as u32;
        first.size = first.csize;
        refused(&build(&[first, second]), "overlapping entries");

        // Two central entries sharing one local header.
        let mut twin = raw("a", b"AAAA");
        twin.central_offset = Some(0);
        let mut bytes = build(&[raw("a", b"AAAA"), twin.clone()]);
        // Rename the second central entry, so only the shared offset is wrong.
        let pos = bytes
            .windows(4)
            .rposition(|w| w == SIG_CENTRAL.to_le_bytes())
            .unwrap();
        bytes[pos + CENTRAL_LEN] = b'z';
        refused(&bytes, "local and central headers disagree");
    }

    #[test]
    fn refuses_gaps_and_junk() {
        let mut bytes = build(&[raw("a", b"AAAA")]);
        bytes.extend_from_slice(b"junk");
        refused(&bytes, "4 bytes of trailing data");

        let mut prefixed = b"MZ stub".to_vec();
        prefixed.extend_from_slice(&build(&[raw("a", b"AAAA")]));
        refused(&prefixed, "");

        let mut first = raw("a", b"AAAA");
        first.data.extend_from_slice(b"hidden");
        let bytes = build(&[first, raw("b", b"B")]);
        refused(&bytes, "belong to no member");
    }

    #[test]
    fn refuses_local_central_mismatch() {
        let mut e = raw("a.bin", b"AAAA");
        e.local_name = Some(b"b.bin".to_vec());
        refused(
            &build(&[e]),
            "member 'a.bin': its local header names it 'b.bin'",
        );
        let mut e = raw("a.bin", b"AAAA");
        e.local_crc = Some(1);
        refused(&build(&[e]), "local and central headers disagree");
    }

    #[test]
    fn limits_the_zstd_window() {
        let content = b"hello";
        let frame = zstd_frame_with_window(30, content);
        let mut dec = zstd::stream::read::Decoder::new(&frame[..]).unwrap();
        dec.window_log_max(31).unwrap();
        let mut plain = Vec::new();
        dec.read_to_end(&mut plain).unwrap();
        assert_eq!(plain, content);
        let mut e = raw("big-window", content);
        e.method = METHOD_ZSTD;
        e.csize = frame.len() as u32;
        e.data = frame;
        refused(
            &build(&[e.clone()]),
            "member 'big-window': its zstd frame needs a 1073741824-byte window",
        );
        let roomy = Limits {
            zstd_window_log_max: 30,
            ..Default::default()
        };
        let b = open_bytes(&build(&[e]), roomy).unwrap();
        assert_eq!(
            b.read_member(0, 100, &Control::default()).unwrap().0,
            content
        );

        // The second frame asks for the big window: the decoder's own limit catches it.
        let mut data = zstd_frame_with_window(20, b"ab");
        data.extend(zstd_frame_with_window(31, b"cd"));
        let mut e = raw("second", b"abcd");
        e.method = METHOD_ZSTD;
        e.csize = data.len() as u32;
        e.data = data;
        let b = open_bytes(&build(&[e]), Limits::default()).unwrap();
        let err = b.hash_member(0, true, &Control::default()).unwrap_err();
        assert!(matches!(err, Error::Limit(_)), "{err}");
        assert!(err.to_string().contains("window over the limit"), "{err}");
    }

    #[test]
    fn data_descriptors_are_checked() {
        // As a streaming writer (Python's zipfile on a pipe) makes them.
        let content = sample(3000, 4);
        let mut e = raw_deflate("s", &content);
        e.flags |= FLAG_DESCRIPTOR;
        e.local_crc = Some(0);
        let mut desc = SIG_DESCRIPTOR.to_le_bytes().to_vec();
        put32(&mut desc, e.crc);
        put32(&mut desc, e.csize);
        put32(&mut desc, e.size);
        let mut with_desc = e.clone();
        with_desc.data.extend_from_slice(&desc);
        // The local header has zero sizes; build writes the central ones, so patch afterwards.
        let mut bytes = build(&[with_desc.clone(), raw("t", b"tail")]);
        bytes[18..26].fill(0);
        // The central entry's csize must not include the descriptor.
        let b = open_bytes(&bytes, Limits::default());
        // `build` set both compressed sizes to the data without the descriptor: accepted.
        let b = b.unwrap();
        assert_eq!(
            b.read_member(0, u64::MAX, &Control::default()).unwrap().0,
            content
        );

        let mut bad = bytes.clone();
        let at = LOCAL_LEN + 1 + e.data.len() + 4;
        bad[at] ^= 0xff;
        refused(&bad, "data descriptor");
    }
}

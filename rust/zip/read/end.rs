//! The end records: exactly one end-of-central-directory record, ending the file, and its
//! ZIP64 counterpart when there is one; they must agree with each other.
#![deny(clippy::arithmetic_side_effects)]

use std::fs::File;

use super::{add, Ctx, End};
use crate::error::Result;
use crate::zip::format::*;
use crate::zip::limits::Limits;

/// Locate and check the end records. Exactly one end record must exist, ending the file.
pub(super) fn find_end(cx: &Ctx<'_>, file: &File, len: u64, limits: &Limits) -> Result<End> {
    if len < EOCD_LEN as u64 {
        return Err(cx.bad(format_args!(
            "not a zip archive: {len} bytes is too short for an end-of-central-directory record"
        )));
    }
    // The last end record plus the longest comment it may carry; at least EOCD_LEN (above).
    const SEARCH: usize = EOCD_LEN + MAX_COMMENT;
    let tail_len = usize::try_from(len).map_or(SEARCH, |n| n.min(SEARCH));
    let tail_start = len.saturating_sub(tail_len as u64);
    let mut tail = vec![0u8; tail_len];
    cx.read_exact_at(file, &mut tail, tail_start, "the end record")?;
    let sig = SIG_EOCD.to_le_bytes();
    // A candidate is valid when its comment reaches exactly the end of the file.
    let valid = |i: usize| -> bool {
        Eocd::decode(tail.get(i..).unwrap_or_default())
            .is_some_and(|e| ends_at(i, e.comment_len) == Some(tail_len))
    };
    let candidates: Vec<usize> = (0..=tail_len.saturating_sub(EOCD_LEN))
        .rev()
        .filter(|&i| tail.get(i..).and_then(|t| t.get(..4)) == Some(&sig[..]))
        .collect();
    let Some(&last) = candidates.first() else {
        return Err(cx.bad("not a zip archive: no end-of-central-directory record"));
    };
    let earlier_valid = candidates.iter().skip(1).any(|&i| valid(i));
    if earlier_valid {
        return Err(cx.bad(
            "it has two end-of-central-directory records (one hidden in the other's comment); \
             different tools would see different contents",
        ));
    }
    if !valid(last) {
        let comment = Eocd::decode(&tail[last..]).map_or(0, |e| e.comment_len);
        let used = ends_at(last, comment).unwrap_or(usize::MAX);
        return Err(if used < tail_len {
            cx.bad(format_args!(
                "{} bytes of trailing data follow the end-of-central-directory record",
                tail_len.saturating_sub(used)
            ))
        } else {
            cx.bad("the end-of-central-directory comment runs past the end of the file")
        });
    }
    let eocd_pos = tail_start.saturating_add(last as u64);
    let eocd = Eocd::decode(&tail[last..])
        .ok_or_else(|| cx.bad("the end-of-central-directory record is malformed"))?;
    if eocd.disk != 0 || eocd.cd_disk != 0 || eocd.entries_on_disk != eocd.entries {
        return Err(cx.bad("multi-disk (spanned) archives are not supported"));
    }

    // ZIP64: a locator sits right before the end record.
    let mut locator = None;
    if eocd_pos >= ZIP64_LOCATOR_LEN as u64 {
        let mut b = [0u8; ZIP64_LOCATOR_LEN];
        let at = eocd_pos.saturating_sub(ZIP64_LOCATOR_LEN as u64);
        cx.read_exact_at(file, &mut b, at, "the ZIP64 locator")?;
        locator = Zip64Locator::decode(&b).map(|l| (at, l));
    }
    let (entries, cd_offset, cd_size, cd_end) = match locator {
        Some((loc_pos, loc)) => {
            if loc.disk != 0 || loc.total_disks != 1 {
                return Err(cx.bad("multi-disk (spanned) archives are not supported"));
            }
            let rec_pos = loc.eocd_offset;
            if add(rec_pos, ZIP64_EOCD_LEN as u64).is_none_or(|e| e > loc_pos) {
                return Err(cx.bad(format_args!(
                    "the ZIP64 locator points at offset {rec_pos}, outside the archive's end area"
                )));
            }
            let mut b = [0u8; ZIP64_EOCD_LEN];
            cx.read_exact_at(file, &mut b, rec_pos, "the ZIP64 end record")?;
            let z = Zip64Eocd::decode(&b)
                .ok_or_else(|| cx.bad(format_args!("no ZIP64 end record at offset {rec_pos}")))?;
            if z.record_size < (ZIP64_EOCD_LEN - 12) as u64
                || add(rec_pos, 12).and_then(|p| add(p, z.record_size)) != Some(loc_pos)
            {
                return Err(cx.bad("the ZIP64 end record's size does not match its place"));
            }
            if z.disk != 0 || z.cd_disk != 0 || z.entries_on_disk != z.entries {
                return Err(cx.bad("multi-disk (spanned) archives are not supported"));
            }
            let agrees = |v32: u64, max: u64, v64: u64| v32 == max || v32 == v64;
            if !agrees(u64::from(eocd.entries), MAX16, z.entries)
                || !agrees(u64::from(eocd.cd_size), MAX32, z.cd_size)
                || !agrees(u64::from(eocd.cd_offset), MAX32, z.cd_offset)
            {
                return Err(cx.bad(
                    "the ZIP64 end record disagrees with the end record (entries, size or offset \
                     of the central directory)",
                ));
            }
            (z.entries, z.cd_offset, z.cd_size, rec_pos)
        }
        None => {
            if u64::from(eocd.cd_size) == MAX32 || u64::from(eocd.cd_offset) == MAX32 {
                return Err(
                    cx.bad("the end record defers to a ZIP64 end record, but there is none")
                );
            }
            (
                u64::from(eocd.entries),
                u64::from(eocd.cd_offset),
                u64::from(eocd.cd_size),
                eocd_pos,
            )
        }
    };
    match add(cd_offset, cd_size) {
        Some(e) if e == cd_end => {}
        Some(e) if e < cd_end => {
            return Err(cx.bad(format_args!(
                "{} unexplained bytes lie between the central directory and the end records",
                cd_end.saturating_sub(e)
            )))
        }
        _ => {
            return Err(cx.bad(format_args!(
                "the central directory (offset {cd_offset}, {cd_size} bytes) runs past the end \
                 records"
            )))
        }
    }
    if entries > limits.max_members {
        return Err(cx.limit(format_args!(
            "it has {entries} members, over the limit of {} (max_members)",
            limits.max_members
        )));
    }
    if entries.saturating_mul(CENTRAL_LEN as u64) > cd_size {
        return Err(cx.bad(format_args!(
            "a central directory of {cd_size} bytes cannot hold {entries} entries"
        )));
    }
    Ok(End {
        entries,
        cd_offset,
        cd_size,
    })
}

/// Where an end record at `at` with a comment of `comment_len` bytes ends.
fn ends_at(at: usize, comment_len: u16) -> Option<usize> {
    at.checked_add(EOCD_LEN)?
        .checked_add(usize::from(comment_len))
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::zip::testkit::*;
    use crate::zip::WriteOptions;

    #[test]
    fn refuses_two_end_records() {
        let inner = build(&[raw("a", b"AAAA")]);
        let eocd = &inner[inner.len() - EOCD_LEN..];
        let bytes = build_with(&[raw("a", b"AAAA")], eocd);
        refused(&bytes, "two end-of-central-directory records");
        // A comment that merely contains the signature is still a second, hidden end record.
        let mut sig_only = SIG_EOCD.to_le_bytes().to_vec();
        sig_only.extend_from_slice(&[0; 18]);
        let bytes = build_with(&[raw("a", b"AAAA")], &sig_only);
        refused(&bytes, "");
    }

    #[test]
    fn refuses_disagreeing_end_records() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriteOptions {
            force_zip64: true,
            ..Default::default()
        };
        let (path, _) = write(
            dir.path(),
            "z.zip",
            &[member("a", b"A"), member("b", b"B")],
            &opts,
        );
        let mut bytes = std::fs::read(path).unwrap();
        let n = bytes.len();
        // The 16-bit entry count of the end record says 1, the ZIP64 record 2.
        bytes[n - EOCD_LEN + 8] = 1;
        bytes[n - EOCD_LEN + 10] = 1;
        refused(&bytes, "the ZIP64 end record disagrees with the end record");
        // The classic end record alone, pointing past the file.
        let mut bytes = build(&[raw("a", b"A")]);
        let n = bytes.len();
        bytes[n - 6] = 0x7f;
        refused(&bytes, "runs past the end records");
    }
}

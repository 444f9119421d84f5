//! The central directory: every entry parsed and checked (names, flags, method, ZIP64 fields,
//! attributes, duplicates, declared-size limits) before anything is read.
#![deny(clippy::arithmetic_side_effects)]

use std::fs::File;
use std::io::{BufReader, Read};

use super::{Ctx, End, Entry, RangeReader};
use crate::error::Result;
use crate::zip::format::*;
use crate::zip::limits::Limits;
use crate::zip::method::Compression;
use crate::zip::names::{check_name, NameSet};

/// Parse and check every central directory entry: names, flags, method, ZIP64 fields,
/// attributes, duplicates and the declared-size limits.
pub(super) fn read_central(
    cx: &Ctx<'_>,
    file: &File,
    end: &End,
    limits: &Limits,
) -> Result<Vec<Entry>> {
    let mut r = BufReader::with_capacity(
        64 << 10,
        RangeReader {
            file,
            pos: end.cd_offset,
            end: end.cd_offset.saturating_add(end.cd_size),
        },
    );
    let mut entries: Vec<Entry> = Vec::new();
    let mut names = NameSet::default();
    let mut consumed = 0u64;
    let mut total = 0u64;
    for k in 0..end.entries {
        let mut fixed = [0u8; CENTRAL_LEN];
        let short = |_| cx.bad(format_args!("the central directory ends inside entry #{k}"));
        r.read_exact(&mut fixed).map_err(short)?;
        let h = CentralHeader::decode(&fixed).ok_or_else(|| {
            cx.bad(format_args!(
                "central directory entry #{k} has a bad signature"
            ))
        })?;
        let mut raw_name = vec![0u8; usize::from(h.name_len)];
        let mut extra = vec![0u8; usize::from(h.extra_len)];
        let mut comment = vec![0u8; usize::from(h.comment_len)];
        r.read_exact(&mut raw_name).map_err(short)?;
        r.read_exact(&mut extra).map_err(short)?;
        r.read_exact(&mut comment).map_err(short)?;
        // Each part is at most 64 KiB: no overflow.
        let parts = [CENTRAL_LEN, raw_name.len(), extra.len(), comment.len()];
        consumed = parts
            .iter()
            .fold(consumed, |sum, n| sum.saturating_add(*n as u64));

        let name = decode_name(cx, k, &raw_name, h.flags, limits)?;
        let e = check_central(cx, &h, name, &extra, limits)?;
        names
            .insert(&e.name, e.is_dir)
            .map_err(|why| cx.bad_member(&e.name, why))?;
        total = total.saturating_add(e.size);
        if total > limits.max_total_size {
            return Err(cx.limit(format_args!(
                "its members add up to more than {} bytes (max_total_size)",
                limits.max_total_size
            )));
        }
        if e.offset >= end.cd_offset {
            return Err(cx.bad_member(
                &e.name,
                format_args!(
                    "its local header offset {} is not before the central directory",
                    e.offset
                ),
            ));
        }
        entries.push(e);
    }
    if consumed != end.cd_size {
        return Err(cx.bad(format_args!(
            "the central directory holds {} bytes beyond its {} entries",
            end.cd_size.saturating_sub(consumed),
            end.entries
        )));
    }
    names
        .check_parents()
        .map_err(|(name, why)| cx.bad_member(&name, why))?;
    Ok(entries)
}

fn decode_name(cx: &Ctx<'_>, k: u64, raw: &[u8], flags: u16, limits: &Limits) -> Result<String> {
    let shown = String::from_utf8_lossy(raw);
    if raw.len() > limits.max_name_len {
        return Err(cx.bad_member(
            &shown,
            format_args!(
                "name is {} bytes long, over the limit of {} (max_name_len)",
                raw.len(),
                limits.max_name_len
            ),
        ));
    }
    if raw.is_empty() {
        return Err(cx.bad(format_args!("entry #{k}: name is empty")));
    }
    let Ok(name) = std::str::from_utf8(raw) else {
        return Err(cx.bad_member(&shown, "name is not valid UTF-8"));
    };
    if flags & FLAG_UTF8 == 0 && !name.is_ascii() {
        return Err(cx.bad_member(
            name,
            "name is not ASCII and not marked as UTF-8, so tools disagree on what it is",
        ));
    }
    Ok(name.to_string())
}

/// The values a ZIP64 extra field supplies for the 32-bit fields set to all ones.
struct Zip64Fields {
    size: u64,
    compressed_size: u64,
    offset: u64,
    disk: u64,
    sizes_from_extra: bool,
}

fn check_central(
    cx: &Ctx<'_>,
    h: &CentralHeader,
    name: String,
    extra: &[u8],
    limits: &Limits,
) -> Result<Entry> {
    let bad = |msg: &dyn std::fmt::Display| cx.bad_member(&name, msg);
    check_name(&name, limits.max_name_len).map_err(|why| bad(&why))?;
    if h.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS) != 0
        || h.method == METHOD_AES
    {
        return Err(bad(&"it is encrypted; encrypted bundles are not supported"));
    }
    let method = match h.method {
        METHOD_STORED => Compression::Stored,
        METHOD_DEFLATE => Compression::Deflate,
        METHOD_ZSTD => Compression::Zstd,
        m => {
            return Err(bad(&format_args!(
                "unsupported compression method {m} (supported: stored, deflate, zstd)"
            )))
        }
    };
    let fields = extra_fields(extra).ok_or_else(|| bad(&"its extra field is malformed"))?;
    let z = zip64_fields(
        &fields,
        [
            u64::from(h.size),
            u64::from(h.compressed_size),
            u64::from(h.offset),
            u64::from(h.disk_start),
        ],
        true,
    )
    .map_err(|why| bad(&why))?;
    check_unicode_path(&fields, &name).map_err(|why| bad(&why))?;
    if z.disk != 0 {
        return Err(bad(
            &"it starts on another disk (spanned archives are not supported)",
        ));
    }

    let is_dir = name.ends_with('/');
    let host = h.made_by >> 8;
    if host == HOST_UNIX || host == HOST_OSX {
        let mode = h.external_attr >> 16;
        match mode & S_IFMT {
            0 | S_IFREG => {}
            S_IFDIR if is_dir => {}
            S_IFDIR => {
                return Err(bad(
                    &"it is marked as a directory but its name does not end in '/'",
                ))
            }
            S_IFLNK => {
                return Err(bad(
                    &"it is a symbolic link; links are not allowed in bundles",
                ))
            }
            t => {
                return Err(bad(&format_args!(
                    "it is a device or special file (mode {t:o}); only regular files are allowed"
                )))
            }
        }
        if mode & (S_ISUID | S_ISGID) != 0 {
            return Err(bad(&format_args!(
                "it has the setuid or setgid bit (mode {:o})",
                mode & 0o7777
            )));
        }
    }
    if is_dir && z.size != 0 {
        return Err(bad(&format_args!(
            "it is a directory but holds {} bytes",
            z.size
        )));
    }
    if method == Compression::Stored && z.size != z.compressed_size {
        return Err(bad(&format_args!(
            "it is stored, yet its size {} differs from its compressed size {}",
            z.size, z.compressed_size
        )));
    }
    if z.size > limits.max_member_size {
        return Err(cx.limit_member(
            &name,
            format_args!(
                "it is {} bytes, over the per-member limit of {} (max_member_size)",
                z.size, limits.max_member_size
            ),
        ));
    }
    if z.size > limits.ratio_min_size
        && u128::from(z.size)
            > u128::from(limits.max_ratio).saturating_mul(u128::from(z.compressed_size))
    {
        return Err(cx.limit_member(
            &name,
            format_args!(
                "compression ratio {}:1 exceeds the limit {}:1 (max_ratio)",
                z.size.checked_div(z.compressed_size).unwrap_or(z.size),
                limits.max_ratio
            ),
        ));
    }
    Ok(Entry {
        name,
        method,
        size: z.size,
        compressed_size: z.compressed_size,
        crc32: h.crc32,
        offset: z.offset,
        data_offset: 0,
        is_dir,
        flags: h.flags,
        zip64_sizes: z.sizes_from_extra,
    })
}

/// Resolve `[size, compressed size, offset, disk]` through the ZIP64 extra field. The field
/// must hold exactly the values whose 32-bit (or 16-bit) field is all ones, no more, no fewer:
/// anything else is an archive that says two different things.
fn zip64_fields(
    fields: &[(u16, &[u8])],
    v: [u64; 4],
    central: bool,
) -> std::result::Result<Zip64Fields, String> {
    let mut found = fields.iter().filter(|(id, _)| *id == EXTRA_ZIP64);
    let data = found.next().map(|(_, d)| *d);
    if found.next().is_some() {
        return Err("it has two ZIP64 extra fields".into());
    }
    let [size, csize, offset, disk] = v;
    let want = [
        size == MAX32,
        csize == MAX32,
        central && offset == MAX32,
        central && disk == MAX16,
    ];
    let need: usize = [8, 8, 8, 4]
        .iter()
        .zip(want)
        .filter(|(_, w)| *w)
        .map(|(n, _)| n)
        .sum();
    let mut out = Zip64Fields {
        size,
        compressed_size: csize,
        offset,
        disk,
        sizes_from_extra: false,
    };
    let Some(data) = data else {
        if need > 0 {
            return Err(
                "a size or offset is set to 0xFFFFFFFF (defer to ZIP64) but there is no ZIP64 \
                 extra field"
                    .into(),
            );
        }
        return Ok(out);
    };
    if data.len() != need {
        return Err(format!(
            "its ZIP64 extra field holds {} bytes, but the header defers {need} bytes to it \
             (lying ZIP64 sizes)",
            data.len()
        ));
    }
    let mut r = Le::new(data);
    let bad = || "its ZIP64 extra field is malformed".to_string();
    if want[0] {
        out.size = r.u64().ok_or_else(bad)?;
        out.sizes_from_extra = true;
    }
    if want[1] {
        out.compressed_size = r.u64().ok_or_else(bad)?;
        out.sizes_from_extra = true;
    }
    if want[2] {
        out.offset = r.u64().ok_or_else(bad)?;
    }
    if want[3] {
        out.disk = u64::from(r.u32().ok_or_else(bad)?);
    }
    Ok(out)
}

/// An Info-ZIP Unicode path field would give the member another name in some tools.
pub(super) fn check_unicode_path(
    fields: &[(u16, &[u8])],
    name: &str,
) -> std::result::Result<(), String> {
    for (_, data) in fields.iter().filter(|(id, _)| *id == EXTRA_UNICODE_PATH) {
        let path = data.get(5..).unwrap_or_default();
        if data.first() != Some(&1) || path != name.as_bytes() {
            return Err(
                "its Unicode path extra field names it differently, so tools disagree on its \
                 name"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::zip::testkit::*;

    #[test]
    fn refuses_unsafe_names() {
        for (name, want) in [
            (
                "models/../x.pth",
                "member 'models/../x.pth': name escapes the bundle (contains '..')",
            ),
            ("../x", "escapes the bundle"),
            ("/etc/passwd", "absolute path"),
            ("C:/Windows/x", "drive letter"),
            ("c:x", "drive letter"),
            ("a\\..\\b", "backslash"),
            ("a\0b", "NUL byte"),
            ("a\nb", "control character"),
            ("a//b", "empty path component"),
        ] {
            refused(&build(&[raw(name, b"x")]), want);
        }
        refused(&build(&[raw("", b"x")]), "name is empty");
        let long = "a".repeat(5000);
        refused(&build(&[raw(&long, b"x")]), "over the limit of 4096");
        let mut latin1 = raw("x", b"x");
        latin1.name = vec![b'a', 0xe9];
        latin1.flags = 0;
        refused(&build(&[latin1.clone()]), "not valid UTF-8");
        latin1.name = "caf\u{e9}".as_bytes().to_vec();
        refused(&build(&[latin1]), "not marked as UTF-8");
    }

    #[test]
    fn refuses_links_devices_and_setuid() {
        for (mode, want) in [
            (0o120_777, "symbolic link"),
            (0o020_644, "device or special file"),
            (0o060_644, "device or special file"),
            (0o010_644, "device or special file"),
            (0o104_755, "setuid or setgid"),
            (0o102_755, "setuid or setgid"),
            (0o040_755, "marked as a directory"),
        ] {
            let mut e = raw("x", b"data");
            e.external = mode << 16;
            refused(&build(&[e]), want);
        }
    }

    #[test]
    fn refuses_duplicates() {
        refused(
            &build(&[raw("a", b"1"), raw("a", b"2")]),
            "member 'a': duplicate name",
        );
        refused(
            &build(&[raw("Model.bin", b"1"), raw("model.BIN", b"2")]),
            "differ only in case",
        );
        refused(
            &build(&[raw("caf\u{e9}", b"1"), raw("cafe\u{301}", b"2")]),
            "Unicode form",
        );
        refused(
            &build(&[raw("stra\u{df}e", b"1"), raw("STRASSE", b"2")]),
            "collides",
        );
        refused(&build(&[raw("a", b"1"), raw("a/", b"")]), "collides");
        refused(
            &build(&[raw("a", b"1"), raw("a/b", b"2")]),
            "is a file, not a directory",
        );
    }

    #[test]
    fn refuses_encryption_and_unknown_methods() {
        let mut e = raw("secret", b"x");
        e.flags |= FLAG_ENCRYPTED;
        refused(&build(&[e]), "member 'secret': it is encrypted");
        let mut e = raw("aes", b"x");
        e.method = METHOD_AES;
        refused(&build(&[e]), "encrypted");
        let mut e = raw("bz", b"x");
        e.method = 12;
        refused(&build(&[e]), "unsupported compression method 12");
    }

    #[test]
    fn refuses_lying_zip64_sizes() {
        // A ZIP64 extra field where the 32-bit fields do not defer to it.
        let mut e = raw("a", b"AAAA");
        e.central_extra = zip64_extra(&[4, 1 << 40]);
        refused(&build(&[e]), "lying ZIP64 sizes");
        // Deferring, but the extra field is short.
        let mut e = raw("a", b"AAAA");
        e.size = MAX32 as u32;
        e.csize = MAX32 as u32;
        e.central_extra = zip64_extra(&[4]);
        e.local_extra = zip64_extra(&[4, 4]);
        refused(&build(&[e]), "lying ZIP64 sizes");
        // Local ZIP64 values that contradict the local 32-bit fields.
        let mut e = raw("a", b"AAAA");
        e.local_extra = zip64_extra(&[999, 999]);
        refused(&build(&[e]), "lying ZIP64 sizes");
        // Deferring without any ZIP64 field.
        let mut e = raw("a", b"AAAA");
        e.size = MAX32 as u32;
        refused(&build(&[e]), "no ZIP64 extra field");
        // Consistent ZIP64 is fine.
        let mut e = raw("a", b"AAAA");
        e.size = MAX32 as u32;
        e.csize = MAX32 as u32;
        e.central_extra = zip64_extra(&[4, 4]);
        e.local_extra = zip64_extra(&[4, 4]);
        assert!(open_bytes(&build(&[e]), Limits::default()).is_ok());
    }

    #[test]
    fn enforces_ratio_and_size_limits() {
        let zeros = vec![0u8; 4 << 20];
        let strict = Limits {
            max_ratio: 100,
            ..Default::default()
        };
        let text = refused_with(
            &build(&[raw_deflate("a.bin", &zeros)]),
            strict,
            "exceeds the limit 100:1",
        );
        assert!(text.contains("member 'a.bin': compression ratio"), "{text}");
        refused(
            &build(&[raw_zstd("z.bin", &zeros)]),
            "exceeds the limit 1000:1",
        );
        let small = Limits {
            max_member_size: 1000,
            ..Default::default()
        };
        refused_with(
            &build(&[raw("a", &[1; 2000])]),
            small.clone(),
            "per-member limit of 1000",
        );
        let total = Limits {
            max_total_size: 3000,
            ..Default::default()
        };
        refused_with(
            &build(&[raw("a", &[1; 2000]), raw("b", &[1; 2000])]),
            total,
            "max_total_size",
        );
        let few = Limits {
            max_members: 1,
            ..Default::default()
        };
        refused_with(
            &build(&[raw("a", b"1"), raw("b", b"2")]),
            few,
            "max_members",
        );
    }
}

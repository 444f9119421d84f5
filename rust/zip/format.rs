//! ZIP record layouts (PKWARE APPNOTE 6.3.10): encoders for the writer and bounds-checked
//! decoders for the reader. Decoders take the fixed-size part of a record and never index past
//! the slice they are given; the variable parts (names, extra fields) are at most 64 KiB each,
//! so nothing here allocates from a size an archive declares.

pub const SIG_LOCAL: u32 = 0x0403_4b50;
pub const SIG_CENTRAL: u32 = 0x0201_4b50;
pub const SIG_EOCD: u32 = 0x0605_4b50;
pub const SIG_ZIP64_EOCD: u32 = 0x0606_4b50;
pub const SIG_ZIP64_LOCATOR: u32 = 0x0706_4b50;
pub const SIG_DESCRIPTOR: u32 = 0x0807_4b50;

pub const LOCAL_LEN: usize = 30;
pub const CENTRAL_LEN: usize = 46;
pub const EOCD_LEN: usize = 22;
pub const ZIP64_EOCD_LEN: usize = 56;
pub const ZIP64_LOCATOR_LEN: usize = 20;
/// The longest comment an end record can carry; bounds the search for it.
pub const MAX_COMMENT: usize = 0xFFFF;

pub const METHOD_STORED: u16 = 0;
pub const METHOD_DEFLATE: u16 = 8;
pub const METHOD_ZSTD: u16 = 93;
pub const METHOD_AES: u16 = 99;

pub const FLAG_ENCRYPTED: u16 = 1 << 0;
pub const FLAG_DESCRIPTOR: u16 = 1 << 3;
pub const FLAG_STRONG_ENCRYPTION: u16 = 1 << 6;
pub const FLAG_UTF8: u16 = 1 << 11;
pub const FLAG_MASKED_HEADERS: u16 = 1 << 13;

pub const EXTRA_ZIP64: u16 = 0x0001;
pub const EXTRA_UNICODE_PATH: u16 = 0x7075;

/// A 32-bit field holding this value defers to the ZIP64 extra field.
pub const MAX32: u64 = 0xFFFF_FFFF;
pub const MAX16: u64 = 0xFFFF;

/// Version needed to extract: 1.0 stored, 2.0 deflate, 4.5 ZIP64, 6.3 zstd.
pub const VERSION_STORED: u16 = 10;
pub const VERSION_DEFLATE: u16 = 20;
pub const VERSION_ZIP64: u16 = 45;
pub const VERSION_ZSTD: u16 = 63;
/// Version made by: Unix host (3), so external attributes carry a Unix mode.
pub const MADE_BY_UNIX: u16 = 3 << 8 | VERSION_ZSTD;

/// Unix file types and bits in the high half of the external attributes.
pub const S_IFMT: u32 = 0o170_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;
/// Host bytes of "version made by" whose external attributes hold a Unix mode.
pub const HOST_UNIX: u16 = 3;
pub const HOST_OSX: u16 = 19;

/// A 16-bit field: names and extra fields are checked to fit before they are written.
pub fn sat16(v: usize) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// A 32-bit field: larger values are written as all ones, deferring to ZIP64.
pub fn sat32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Reads little-endian fields from a slice; `None` once it runs out.
pub struct Le<'a> {
    buf: &'a [u8],
}

impl<'a> Le<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Le { buf }
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.bytes(1).and_then(|b| b.first().copied())
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2)?.try_into().ok().map(u16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4)?.try_into().ok().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.bytes(8)?.try_into().ok().map(u64::from_le_bytes)
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalHeader {
    pub version_needed: u16,
    pub flags: u16,
    pub method: u16,
    pub time: u16,
    pub date: u16,
    pub crc32: u32,
    pub compressed_size: u32,
    pub size: u32,
    pub name_len: u16,
    pub extra_len: u16,
}

impl LocalHeader {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put32(out, SIG_LOCAL);
        put16(out, self.version_needed);
        put16(out, self.flags);
        put16(out, self.method);
        put16(out, self.time);
        put16(out, self.date);
        put32(out, self.crc32);
        put32(out, self.compressed_size);
        put32(out, self.size);
        put16(out, self.name_len);
        put16(out, self.extra_len);
    }

    /// `None` if `b` is short or does not start with the local header signature.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Le::new(b);
        if r.u32()? != SIG_LOCAL {
            return None;
        }
        Some(LocalHeader {
            version_needed: r.u16()?,
            flags: r.u16()?,
            method: r.u16()?,
            time: r.u16()?,
            date: r.u16()?,
            crc32: r.u32()?,
            compressed_size: r.u32()?,
            size: r.u32()?,
            name_len: r.u16()?,
            extra_len: r.u16()?,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CentralHeader {
    pub made_by: u16,
    pub version_needed: u16,
    pub flags: u16,
    pub method: u16,
    pub time: u16,
    pub date: u16,
    pub crc32: u32,
    pub compressed_size: u32,
    pub size: u32,
    pub name_len: u16,
    pub extra_len: u16,
    pub comment_len: u16,
    pub disk_start: u16,
    pub internal_attr: u16,
    pub external_attr: u32,
    pub offset: u32,
}

impl CentralHeader {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put32(out, SIG_CENTRAL);
        put16(out, self.made_by);
        put16(out, self.version_needed);
        put16(out, self.flags);
        put16(out, self.method);
        put16(out, self.time);
        put16(out, self.date);
        put32(out, self.crc32);
        put32(out, self.compressed_size);
        put32(out, self.size);
        put16(out, self.name_len);
        put16(out, self.extra_len);
        put16(out, self.comment_len);
        put16(out, self.disk_start);
        put16(out, self.internal_attr);
        put32(out, self.external_attr);
        put32(out, self.offset);
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Le::new(b);
        if r.u32()? != SIG_CENTRAL {
            return None;
        }
        Some(CentralHeader {
            made_by: r.u16()?,
            version_needed: r.u16()?,
            flags: r.u16()?,
            method: r.u16()?,
            time: r.u16()?,
            date: r.u16()?,
            crc32: r.u32()?,
            compressed_size: r.u32()?,
            size: r.u32()?,
            name_len: r.u16()?,
            extra_len: r.u16()?,
            comment_len: r.u16()?,
            disk_start: r.u16()?,
            internal_attr: r.u16()?,
            external_attr: r.u32()?,
            offset: r.u32()?,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Eocd {
    pub disk: u16,
    pub cd_disk: u16,
    pub entries_on_disk: u16,
    pub entries: u16,
    pub cd_size: u32,
    pub cd_offset: u32,
    pub comment_len: u16,
}

impl Eocd {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put32(out, SIG_EOCD);
        put16(out, self.disk);
        put16(out, self.cd_disk);
        put16(out, self.entries_on_disk);
        put16(out, self.entries);
        put32(out, self.cd_size);
        put32(out, self.cd_offset);
        put16(out, self.comment_len);
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Le::new(b);
        if r.u32()? != SIG_EOCD {
            return None;
        }
        Some(Eocd {
            disk: r.u16()?,
            cd_disk: r.u16()?,
            entries_on_disk: r.u16()?,
            entries: r.u16()?,
            cd_size: r.u32()?,
            cd_offset: r.u32()?,
            comment_len: r.u16()?,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zip64Eocd {
    /// Size of the rest of the record, excluding the signature and this field: 44 without
    /// extensible data.
    pub record_size: u64,
    pub made_by: u16,
    pub version_needed: u16,
    pub disk: u32,
    pub cd_disk: u32,
    pub entries_on_disk: u64,
    pub entries: u64,
    pub cd_size: u64,
    pub cd_offset: u64,
}

impl Zip64Eocd {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put32(out, SIG_ZIP64_EOCD);
        put64(out, self.record_size);
        put16(out, self.made_by);
        put16(out, self.version_needed);
        put32(out, self.disk);
        put32(out, self.cd_disk);
        put64(out, self.entries_on_disk);
        put64(out, self.entries);
        put64(out, self.cd_size);
        put64(out, self.cd_offset);
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Le::new(b);
        if r.u32()? != SIG_ZIP64_EOCD {
            return None;
        }
        Some(Zip64Eocd {
            record_size: r.u64()?,
            made_by: r.u16()?,
            version_needed: r.u16()?,
            disk: r.u32()?,
            cd_disk: r.u32()?,
            entries_on_disk: r.u64()?,
            entries: r.u64()?,
            cd_size: r.u64()?,
            cd_offset: r.u64()?,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zip64Locator {
    pub disk: u32,
    pub eocd_offset: u64,
    pub total_disks: u32,
}

impl Zip64Locator {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put32(out, SIG_ZIP64_LOCATOR);
        put32(out, self.disk);
        put64(out, self.eocd_offset);
        put32(out, self.total_disks);
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Le::new(b);
        if r.u32()? != SIG_ZIP64_LOCATOR {
            return None;
        }
        Some(Zip64Locator {
            disk: r.u32()?,
            eocd_offset: r.u64()?,
            total_disks: r.u32()?,
        })
    }
}

/// Append one extra field.
pub fn put_extra(out: &mut Vec<u8>, id: u16, data: &[u8]) {
    put16(out, id);
    put16(out, sat16(data.len()));
    out.extend_from_slice(data);
}

/// Split an extra block into `(id, data)` fields; `None` if a field runs past the block or
/// bytes are left over.
pub fn extra_fields(extra: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut r = Le::new(extra);
    let mut fields = Vec::new();
    while r.remaining() > 0 {
        let id = r.u16()?;
        let len = r.u16()?;
        fields.push((id, r.bytes(usize::from(len))?));
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let local = LocalHeader {
            version_needed: 20,
            flags: FLAG_UTF8,
            method: METHOD_DEFLATE,
            time: 1,
            date: 0x21,
            crc32: 0xdead_beef,
            compressed_size: 7,
            size: 9,
            name_len: 3,
            extra_len: 0,
        };
        let mut b = Vec::new();
        local.encode(&mut b);
        assert_eq!(b.len(), LOCAL_LEN);
        assert_eq!(LocalHeader::decode(&b), Some(local));
        assert_eq!(LocalHeader::decode(&b[..LOCAL_LEN - 1]), None);

        let central = CentralHeader {
            made_by: MADE_BY_UNIX,
            offset: 77,
            external_attr: 0o100644 << 16,
            ..Default::default()
        };
        let mut b = Vec::new();
        central.encode(&mut b);
        assert_eq!(b.len(), CENTRAL_LEN);
        assert_eq!(CentralHeader::decode(&b), Some(central));

        let mut b = Vec::new();
        Eocd::default().encode(&mut b);
        assert_eq!(b.len(), EOCD_LEN);
        let mut b = Vec::new();
        Zip64Eocd::default().encode(&mut b);
        assert_eq!(b.len(), ZIP64_EOCD_LEN);
        let mut b = Vec::new();
        Zip64Locator::default().encode(&mut b);
        assert_eq!(b.len(), ZIP64_LOCATOR_LEN);
    }

    #[test]
    fn extra_fields_are_bounds_checked() {
        let mut b = Vec::new();
        put_extra(&mut b, EXTRA_ZIP64, &[1; 8]);
        put_extra(&mut b, 0xcafe, &[]);
        let fields = extra_fields(&b).unwrap();
        assert_eq!(
            fields,
            vec![(EXTRA_ZIP64, &[1u8; 8][..]), (0xcafe, &[][..])]
        );
        assert!(extra_fields(&b[..b.len() - 1]).is_none());
        assert!(extra_fields(&[1, 0, 9, 0, 1]).is_none());
        assert!(extra_fields(&[1]).is_none());
    }
}

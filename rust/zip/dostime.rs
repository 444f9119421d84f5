//! The MS-DOS timestamps zip stores, from Unix time.

/// An MS-DOS date and time, as zip stores them (two-second resolution, local time, 1980-2107).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DosTime {
    pub date: u16,
    pub time: u16,
}

impl DosTime {
    /// 1980-01-01 00:00:00, the earliest time zip can store.
    pub const EPOCH: DosTime = DosTime {
        date: 1 << 5 | 1,
        time: 0,
    };

    /// The DOS time of a Unix timestamp (such as `SOURCE_DATE_EPOCH`), taken as UTC and clamped
    /// to the range zip can store.
    pub fn from_unix(secs: i64) -> DosTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        if year < 1980 {
            return DosTime::EPOCH;
        }
        if year > 2107 {
            return DosTime {
                date: 127 << 9 | 12 << 5 | 31,
                time: 23 << 11 | 59 << 5 | 29,
            };
        }
        // Every field is in range here: year 0..=127, month 1..=12, hours 0..=23 and so on.
        let f = |v: i64| u16::try_from(v).unwrap_or(0);
        let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
        DosTime {
            date: f(year - 1980) << 9 | f(month) << 5 | f(day),
            time: f(h) << 11 | f(m) << 5 | f(s / 2),
        }
    }
}

impl Default for DosTime {
    fn default() -> Self {
        DosTime::EPOCH
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_time_from_unix() {
        assert_eq!(DosTime::from_unix(0), DosTime::EPOCH);
        // 2023-11-14 22:13:20 UTC
        let t = DosTime::from_unix(1_700_000_000);
        assert_eq!(t.date >> 9, 2023 - 1980);
        assert_eq!((t.date >> 5) & 0xf, 11);
        assert_eq!(t.date & 0x1f, 14);
        assert_eq!(t.time, 22 << 11 | 13 << 5 | 10);
        assert_eq!(DosTime::from_unix(i64::MAX / 4).date >> 9, 127);
        assert_eq!(DosTime::from_unix(-5), DosTime::EPOCH);
    }
}

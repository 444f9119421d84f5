//! What an archive may ask of its reader.

/// Every limit is checked against the declared values when the archive opens and against the
/// bytes actually produced when a member is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_members: u64,
    pub max_member_size: u64,
    pub max_total_size: u64,
    /// Largest size / compressed size allowed for members over `ratio_min_size`.
    pub max_ratio: u64,
    pub ratio_min_size: u64,
    /// log2 of the largest zstd window a member may need (27: 128 MiB).
    pub zstd_window_log_max: u32,
    pub max_name_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_members: 100_000,
            max_member_size: 256 << 30,
            max_total_size: 1 << 40,
            max_ratio: 1000,
            ratio_min_size: 1 << 20,
            zstd_window_log_max: 27,
            max_name_len: 4096,
        }
    }
}

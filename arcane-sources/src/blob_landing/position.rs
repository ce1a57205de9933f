//! [`BlobLandingPosition`]: how far the source has read, independent of the number of files.

use serde::{Deserialize, Serialize};

/// The position of the blob-landing source, stored in the sink's commit manifest.
///
/// Files are read in lexicographic path order, so one file and an offset in it say everything:
/// every file whose path sorts before `file` is done, and `file` is done up to `records`
/// records (or completely when `done`). Dead-lettered records count as consumed.
///
/// ```json
/// { "file": "landing/orders-2026-11-21.ndjson", "records": 8192, "lines": 8193, "offset": 1630000, "done": false, "listedAtMs": 1795262400000 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobLandingPosition {
    /// The object-store path of the current file.
    pub file: String,
    /// Records of `file` consumed: rows decoded plus records dead-lettered (for Parquet, rows).
    pub records: u64,
    /// Physical lines of `file` consumed (NDJSON/CSV, including blank lines and a CSV
    /// header), so that line numbers stay exact after a resume.
    #[serde(default)]
    pub lines: u64,
    /// Bytes of the decompressed content consumed (NDJSON/CSV), where reading resumes.
    #[serde(default)]
    pub offset: u64,
    /// Whether `file` is completely read.
    #[serde(default)]
    pub done: bool,
    /// When the listing that found `file` finished (this process's clock, epoch
    /// milliseconds). After a restart, a file sorting before `file` whose last-modified time
    /// is later than this (beyond a few seconds of clock skew) landed after the stream had
    /// listed past it: a late file. Absent in positions written by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_at_ms: Option<i64>,
}

impl BlobLandingPosition {
    /// The start of `file`.
    pub fn start(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            records: 0,
            lines: 0,
            offset: 0,
            done: false,
            listed_at_ms: None,
        }
    }
}

//! [`BlobLandingPosition`]: how far the source has read, independent of the number of files.

use serde::{Deserialize, Serialize};

/// The position of the blob-landing source, stored in the sink's commit manifest.
///
/// Files are read in lexicographic path order, so one file and an offset in it say everything:
/// every file whose path sorts before `file` is done, and `file` is done up to `records`
/// records (or completely when `done`). Dead-lettered records count as consumed.
///
/// ```json
/// { "file": "landing/orders-2026-11-21.ndjson", "records": 8192, "lines": 8193, "offset": 1630000, "done": false }
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
        }
    }
}

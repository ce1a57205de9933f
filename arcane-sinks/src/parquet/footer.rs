//! Reading a committed file's Parquet footer (for a table format's file statistics).

use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

/// Bytes read from the end of a file at first: the footer of most files fits.
const FOOTER_GUESS: u64 = 64 * 1024;

/// The Parquet footer of the `size`-byte file at `path` (one ranged read, two when the footer
/// is larger than [`FOOTER_GUESS`]).
/// Why a footer could not be read: the store's error (classified as the store's errors are:
/// a missing file is permanent), or bytes that are not a Parquet footer.
pub(crate) enum FooterError {
    Store(object_store::Error),
    Bad(String),
}

pub(crate) async fn read_footer(
    store: &dyn object_store::ObjectStore,
    path: &Path,
    size: u64,
) -> std::result::Result<ParquetMetaData, FooterError> {
    if size < 12 {
        return Err(FooterError::Bad(format!(
            "{size} bytes are too few for a Parquet file"
        )));
    }
    let start = size.saturating_sub(FOOTER_GUESS);
    let tail = store
        .get_range(path, start..size)
        .await
        .map_err(FooterError::Store)?;
    let n = tail.len();
    if n < 8 || &tail[n - 4..] != b"PAR1" {
        return Err(FooterError::Bad(
            "not a Parquet file (no PAR1 magic at its end)".into(),
        ));
    }
    let len = u32::from_le_bytes([tail[n - 8], tail[n - 7], tail[n - 6], tail[n - 5]]) as u64;
    if len + 8 > size {
        return Err(FooterError::Bad(format!(
            "its footer length {len} is larger than the file"
        )));
    }
    let meta = if len + 8 <= n as u64 {
        tail.slice(n - 8 - len as usize..n - 8)
    } else {
        store
            .get_range(path, size - 8 - len..size - 8)
            .await
            .map_err(FooterError::Store)?
    };
    ParquetMetaDataReader::decode_metadata(&meta).map_err(|e| FooterError::Bad(e.to_string()))
}

//! Reading the committed rows of a dataset through its manifest.

use std::collections::BTreeMap;

use arcane_core::{Error, Result, Retry};
use arrow_array::RecordBatch;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::manifest::{self, FileEntry};
use super::store::{open_location, store_error};

/// The committed files of the current generation, as recorded by the manifests
/// (paths relative to the URL's prefix), in commit order.
pub async fn committed_files(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<Vec<FileEntry>> {
    let loc = open_location(url, options, "url")?;
    let name = format!("parquet {}", loc.display);
    let manifests = manifest::all(&loc, &name).await?;
    let Some(last) = manifests.last() else {
        return Ok(Vec::new());
    };
    let current = last.state.current_generation.clone();
    Ok(manifest::files_of(&manifests, &current).cloned().collect())
}

/// The newest manifest of the dataset at `url` (its state: current generation, checkpoints,
/// backfill progress), or `None` when nothing was committed there.
pub async fn latest_manifest(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<Option<manifest::Manifest>> {
    let loc = open_location(url, options, "url")?;
    let name = format!("parquet {}", loc.display);
    manifest::latest(&loc, &name).await
}

/// Every row of the current committed files, read with the Parquet reader (one or more
/// batches per file, in commit order). Each file is fetched whole: this is a helper for tests
/// and small datasets. A dataset without manifests has no rows.
pub async fn read_committed(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<Vec<RecordBatch>> {
    read_rows(url, options, usize::MAX).await
}

async fn read_rows(
    url: &str,
    options: &BTreeMap<String, String>,
    limit: usize,
) -> Result<Vec<RecordBatch>> {
    let loc = open_location(url, options, "url")?;
    let name = format!("parquet {}", loc.display);
    let mut out = Vec::new();
    let mut left = limit;
    for file in committed_files(url, options).await? {
        if left == 0 {
            break;
        }
        let path = loc.child(&file.path);
        let bytes = loc
            .store
            .get(&path)
            .await
            .map_err(|e| store_error(&name, format!("cannot read committed file {path}"), e))?
            .bytes()
            .await
            .map_err(|e| store_error(&name, format!("cannot read committed file {path}"), e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| read_error(&name, &path, e))?
            .with_limit(left)
            .build()
            .map_err(|e| read_error(&name, &path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| read_error(&name, &path, e.into()))?;
            left = left.saturating_sub(batch.num_rows());
            out.push(batch);
        }
    }
    Ok(out)
}

/// The first `limit` committed rows (files in commit order); like [`read_committed`], each
/// file read is fetched whole, but reading stops at the first file that completes `limit`.
pub async fn read_committed_head(
    url: &str,
    options: &BTreeMap<String, String>,
    limit: usize,
) -> Result<Vec<RecordBatch>> {
    read_rows(url, options, limit).await
}

fn read_error(
    name: &str,
    path: &object_store::path::Path,
    e: parquet::errors::ParquetError,
) -> Error {
    match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<object_store::Error>() {
                Ok(se) => store_error(name, format!("cannot read committed file {path}"), *se),
                Err(other) => Error::sink(
                    name,
                    format!("cannot read committed file {path}: {other}"),
                    Retry::Transient,
                    Some(other),
                ),
            }
        }
        other => Error::sink(
            name,
            format!("committed file {path} is not valid Parquet: {other}"),
            Retry::Permanent,
            Some(Box::new(other)),
        ),
    }
}

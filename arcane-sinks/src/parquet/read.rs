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

/// Every row of the current committed files, read with the Parquet reader (one or more
/// batches per file, in commit order). Each file is fetched whole: this is a helper for tests
/// and small datasets. A dataset without manifests has no rows.
pub async fn read_committed(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<Vec<RecordBatch>> {
    let loc = open_location(url, options, "url")?;
    let name = format!("parquet {}", loc.display);
    let mut out = Vec::new();
    for file in committed_files(url, options).await? {
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
            .build()
            .map_err(|e| read_error(&name, &path, e))?;
        for batch in reader {
            out.push(batch.map_err(|e| read_error(&name, &path, e.into()))?);
        }
    }
    Ok(out)
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

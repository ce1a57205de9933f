//! Reading the committed rows of a dataset through its manifest.

use std::collections::BTreeMap;

use arcane_core::{Error, Result, Retry};
use arrow_array::RecordBatch;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::manifest::{self, FileEntry, STAGING_DIR};
use super::store::{Location, store_error};
use super::upload;

/// Open `url` for reading: a local directory must exist (it is never created); `None` when it
/// does not.
pub(crate) fn open_read(url: &str, options: &BTreeMap<String, String>) -> Result<Option<Location>> {
    let resolved = arcane_core::location::location_url(url, "url")?;
    if let Ok(parsed) = url::Url::parse(&resolved)
        && parsed.scheme() == "file"
        && parsed.to_file_path().is_ok_and(|p| !p.is_dir())
    {
        return Ok(None);
    }
    arcane_store::open_location_with(
        &resolved,
        options,
        "url",
        arcane_store::LocalMode::ExistingDirectory,
    )
    .map(Some)
}

/// The committed files of the current generation, as recorded by the manifests
/// (paths relative to the URL's prefix), in commit order.
pub async fn committed_files(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<Vec<FileEntry>> {
    let Some(loc) = open_read(url, options)? else {
        return Ok(Vec::new());
    };
    let name = format!("parquet {}", loc.display);
    let manifests = manifest::all(&loc, &name).await?;
    Ok(current_files(&manifests))
}

fn current_files(manifests: &[manifest::Manifest]) -> Vec<FileEntry> {
    let Some(last) = manifests.last() else {
        return Vec::new();
    };
    let current = last.state.current_generation.clone();
    manifest::files_of(manifests, &current).cloned().collect()
}

/// The newest manifest of the dataset at `url` (its state: current generation, checkpoints,
/// backfill progress), or `None` when nothing was committed there.
pub async fn latest_manifest(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<Option<manifest::Manifest>> {
    let Some(loc) = open_read(url, options)? else {
        return Ok(None);
    };
    let name = format!("parquet {}", loc.display);
    manifest::latest(&loc, &name).await
}

/// The committed files of the current generation of the dataset at `url`, in commit order, as
/// a reader opens them: full URLs (`s3://bucket/prefix/…`), or absolute paths for a local
/// directory. Exactly the committed rows, whatever else lies under the prefix (retired
/// generations, files of an interrupted run, dead letters); what `arcane show --files`
/// prints.
///
/// Errors: the location does not exist or holds no manifest (nothing was committed there, or
/// the URL is wrong); or the last commit's files are not all visible yet (its writer stopped
/// after writing the manifest and before completing them, or is completing them now: the next
/// start of the stream finishes it).
pub async fn live_files(url: &str, options: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let Some(loc) = open_read(url, options)? else {
        let resolved = arcane_core::location::location_url(url, "url")?;
        let dir = url::Url::parse(&resolved)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .map_or(resolved, |p| p.display().to_string());
        return Err(Error::config(
            "url",
            format!("the directory {dir} does not exist; check the path"),
        ));
    };
    let name = format!("parquet {}", loc.display);
    let manifests = manifest::all(&loc, &name).await?;
    let Some(last) = manifests.last() else {
        return Err(Error::config(
            "url",
            format!(
                "{} has no committed data (no manifest under _arcane/manifests); check that it is the sink's `url`",
                loc.display
            ),
        ));
    };
    let files = current_files(&manifests);
    let pending = pending_in(&loc, &name, last).await?;
    if let Some(file) = files.iter().find(|f| pending.contains(&f.path)) {
        return Err(Error::sink(
            &name,
            format!(
                "the last commit (#{}) is not complete yet: its manifest is written but {} is not visible yet (the stream stopped between the two, or is finishing the commit right now); the next start of the stream completes it; try again then",
                last.sequence, file.path
            ),
            Retry::Transient,
            None,
        ));
    }
    Ok(files
        .iter()
        .map(|f| {
            let path = loc.child(&f.path);
            match &loc.local_root {
                Some(root) => root.join(path.as_ref()).to_string_lossy().into_owned(),
                None => loc.url_of(&path),
            }
        })
        .collect())
}

/// Paths (relative to the prefix) of files of the manifest `last` that are not visible yet:
/// those with an upload marker, or a staging file, of its sequence.
async fn pending_in(
    loc: &Location,
    name: &str,
    last: &manifest::Manifest,
) -> Result<std::collections::BTreeSet<String>> {
    let mut pending = std::collections::BTreeSet::new();
    for (_, marker) in upload::list_markers(loc, name).await? {
        if marker.sequence == last.sequence {
            pending.extend(marker.path);
        }
    }
    if loc.multipart.is_none() {
        let staging = format!("{STAGING_DIR}/{:020}/", last.sequence);
        for path in upload::list_staging(loc, name).await? {
            if let Some(rel) = loc.relative(&path).strip_prefix(&staging) {
                pending.insert(rel.to_string());
            }
        }
    }
    Ok(pending)
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
    let Some(loc) = open_read(url, options)? else {
        return Ok(Vec::new());
    };
    let name = format!("parquet {}", loc.display);
    let mut out = Vec::new();
    let mut left = limit;
    let manifests = manifest::all(&loc, &name).await?;
    for file in current_files(&manifests) {
        if left == 0 {
            break;
        }
        let path = loc.child(&file.path);
        let bytes = get_committed(&loc, &name, &path).await?;
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

/// A committed file's bytes. A commit's files become visible right after its manifest (a
/// rename or a multipart completion): a reader that comes in between waits for them up to
/// about a second before it reports the file missing.
async fn get_committed(loc: &Location, name: &str, path: &Path) -> Result<bytes::Bytes> {
    let mut waited = 0;
    loop {
        match loc.store.get(path).await {
            Ok(got) => {
                return got.bytes().await.map_err(|e| {
                    store_error(name, format!("cannot read committed file {path}"), e)
                });
            }
            Err(object_store::Error::NotFound { .. }) if waited < 50 => {
                waited += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::sink(
                    name,
                    format!(
                        "committed file {} is not visible: the run that committed it stopped before making it visible (its manifest is written first); the next start of the stream finishes the commit, so run the stream (or its sink) again and read after it started; nothing is lost",
                        loc.url_of(path)
                    ),
                    Retry::Transient,
                    None,
                ));
            }
            Err(e) => {
                return Err(store_error(
                    name,
                    format!("cannot read committed file {path}"),
                    e,
                ));
            }
        }
    }
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

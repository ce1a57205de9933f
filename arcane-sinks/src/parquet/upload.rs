//! How a file is written so that it becomes visible only after the manifest that commits it.
//!
//! * Stores with a multipart API ([`Location::multipart`]: S3, Azure, GCS, memory): a file is a
//!   multipart upload whose parts are uploaded as the file is written ([`PartUpload`]); it is
//!   completed only after the manifest recording its upload id and part ids is written. Each
//!   upload is recorded by a marker `_arcane/uploads/{sequence:020}-{name}.json` in the sink's
//!   prefix, written before the first part and deleted after the completion, so that recovery
//!   can complete the uploads a manifest committed and abort the others.
//! * Other stores (the local file system): a file is written under
//!   `_arcane/staging/{sequence:020}/` of its location and renamed to its final path after the
//!   manifest is written.
//!
//! Completing twice is harmless: when the completion fails, the file is checked with `head`
//! and accepted if it exists with the size the manifest recorded.

use std::sync::Arc;

use arcane_core::retry::RetryConfig;
use arcane_core::{Error, Result, Retry};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectStoreExt, PutPayload, PutPayloadMut};
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::ParquetError;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::manifest::{Completion, META_DIR, STAGING_DIR, UPLOADS_DIR};
use super::store::{Location, store_error};

/// Completions, aborts and deletions run this many requests at once.
pub(crate) const REQUEST_CONCURRENCY: usize = 16;
/// The local file system's staging files are written in pieces of at most this many bytes,
/// at most [`LOCAL_WRITES_IN_FLIGHT`] at a time: a local write is a system call, so
/// `writer.uploadPartSize` (sized for the network round trips of a multipart upload) would
/// only hold that many more bytes of a flushed row group in memory.
const LOCAL_WRITE_SIZE: usize = 1 << 20;
/// Local writes of a staging file in flight at once.
const LOCAL_WRITES_IN_FLIGHT: usize = 2;

/// The record of a multipart upload in progress, `_arcane/uploads/{sequence:020}-{name}.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UploadMarker {
    /// The commit sequence the file belongs to.
    pub(crate) sequence: u64,
    /// A data file: its path relative to the sink's prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    /// A dead-letter file: its URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dead_letter_file: Option<String>,
    /// The store's upload id.
    pub(crate) upload_id: String,
}

/// The path of the marker `name` of commit `sequence` in the sink's location `meta`.
pub(crate) fn marker_path(meta: &Location, sequence: u64, name: &str) -> Path {
    meta.child(&format!("{UPLOADS_DIR}/{sequence:020}-{name}.json"))
}

/// The staging path (relative to its location) of `rel` in commit `sequence`.
pub(crate) fn staging_rel(sequence: u64, rel: &str) -> String {
    format!("{STAGING_DIR}/{sequence:020}/{rel}")
}

/// A file being written; [`AsyncFileWriter`] for the Parquet writer.
pub(crate) enum FileUpload {
    /// Parts of a multipart upload (completed after the manifest).
    Multipart(PartUpload),
    /// A staging file (renamed after the manifest).
    Staged {
        /// Writes the staging file.
        writer: BufWriter,
        /// Its path relative to the location.
        from: String,
    },
}

impl FileUpload {
    /// How the file becomes visible; call after [`AsyncFileWriter::complete`].
    pub(crate) fn completion(&self) -> Completion {
        match self {
            FileUpload::Multipart(p) => Completion::Multipart {
                upload_id: p.id.clone(),
                parts: p
                    .parts
                    .iter()
                    .map(|p| p.as_ref().map(|p| p.content_id.clone()).unwrap_or_default())
                    .collect(),
            },
            FileUpload::Staged { from, .. } => Completion::Rename { from: from.clone() },
        }
    }
}

impl AsyncFileWriter for FileUpload {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            match self {
                FileUpload::Multipart(p) => p.write(bs).await,
                FileUpload::Staged { writer, .. } => writer.put(bs).await,
            }
            .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }

    /// Upload what is buffered and wait for every part; the file is **not** made visible.
    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            match self {
                FileUpload::Multipart(p) => p.finish().await,
                FileUpload::Staged { writer, .. } => tokio::io::AsyncWriteExt::shutdown(writer)
                    .await
                    .map_err(|e| object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    }),
            }
            .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }
}

/// Cuts written bytes into parts of exactly `part_size` bytes (the last one shorter) and
/// uploads them with at most `concurrency` in flight; memory is bounded by
/// `part_size × (concurrency + 1)`. Every file has at least one part.
pub(crate) struct PartUpload {
    store: Arc<dyn MultipartStore>,
    path: Path,
    id: MultipartId,
    part_size: usize,
    concurrency: usize,
    buffer: PutPayloadMut,
    in_flight: JoinSet<(usize, object_store::Result<PartId>)>,
    parts: Vec<Option<PartId>>,
}

impl PartUpload {
    async fn write(&mut self, mut bs: Bytes) -> object_store::Result<()> {
        while !bs.is_empty() {
            let room = self.part_size - self.buffer.content_length();
            let chunk = bs.split_to(room.min(bs.len()));
            self.buffer.push(chunk);
            if self.buffer.content_length() >= self.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn send_part(&mut self) -> object_store::Result<()> {
        while self.in_flight.len() >= self.concurrency {
            self.wait_one().await?;
        }
        let payload: PutPayload = std::mem::take(&mut self.buffer).freeze();
        let idx = self.parts.len();
        self.parts.push(None);
        let (store, path, id) = (self.store.clone(), self.path.clone(), self.id.clone());
        self.in_flight
            .spawn(async move { (idx, store.put_part(&path, &id, idx, payload).await) });
        Ok(())
    }

    async fn wait_one(&mut self) -> object_store::Result<()> {
        match self.in_flight.join_next().await {
            Some(Ok((idx, part))) => {
                self.parts[idx] = Some(part?);
                Ok(())
            }
            Some(Err(e)) => Err(object_store::Error::Generic {
                store: "multipart upload",
                source: Box::new(e),
            }),
            None => Ok(()),
        }
    }

    async fn finish(&mut self) -> object_store::Result<()> {
        if !self.buffer.is_empty() || self.parts.is_empty() {
            self.send_part().await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }
}

/// What a new upload writes.
pub(crate) struct NewUpload<'a> {
    /// The location of the file.
    pub(crate) loc: &'a Location,
    /// Its final path relative to `loc`.
    pub(crate) rel: &'a str,
    /// The commit sequence.
    pub(crate) sequence: u64,
    /// The sink's location, where markers go.
    pub(crate) meta: &'a Location,
    /// The marker's name within the sequence (`0003`, `dead-letters`).
    pub(crate) marker_name: &'a str,
    /// What the marker records as the file: its path (data) or URL (dead letters).
    pub(crate) marker_file: MarkerFile,
    /// `writer.uploadPartSize`.
    pub(crate) part_size: usize,
    /// `writer.uploadConcurrency`.
    pub(crate) concurrency: usize,
}

/// The file an upload marker records.
pub(crate) enum MarkerFile {
    /// A data file, relative to the sink's prefix.
    Data(String),
    /// A dead-letter file's URL.
    DeadLetter(String),
}

/// Start writing a file that stays invisible until [`complete`]: a multipart upload recorded
/// by a marker, or a staging file. Returns the writer and the marker's path.
pub(crate) async fn start(new: NewUpload<'_>, sink: &str) -> Result<(FileUpload, Option<Path>)> {
    let path = new.loc.child(new.rel);
    let Some(mp) = &new.loc.multipart else {
        let from = staging_rel(new.sequence, new.rel);
        let (size, in_flight) = match new.loc.local_root {
            Some(_) => (
                new.part_size.min(LOCAL_WRITE_SIZE),
                new.concurrency.min(LOCAL_WRITES_IN_FLIGHT),
            ),
            None => (new.part_size, new.concurrency),
        };
        let writer = BufWriter::with_capacity(new.loc.store.clone(), new.loc.child(&from), size)
            .with_max_concurrency(in_flight);
        return Ok((FileUpload::Staged { writer, from }, None));
    };
    let url = new.loc.url_of(&path);
    let id = mp
        .create_multipart(&path)
        .await
        .map_err(|e| store_error(sink, format!("cannot start the upload of {url}"), e))?;
    let (path_field, dead_letter_file) = match new.marker_file {
        MarkerFile::Data(p) => (Some(p), None),
        MarkerFile::DeadLetter(u) => (None, Some(u)),
    };
    let marker = UploadMarker {
        sequence: new.sequence,
        path: path_field,
        dead_letter_file,
        upload_id: id.clone(),
    };
    let marker_path = marker_path(new.meta, new.sequence, new.marker_name);
    let json = serde_json::to_vec(&marker)
        .map_err(|e| Error::fatal(format!("cannot encode upload marker {marker_path}: {e}")))?;
    if let Err(e) = new
        .meta
        .store
        .put(&marker_path, PutPayload::from(Bytes::from(json)))
        .await
    {
        // Without its marker nothing would abort the upload after a crash: abort it now.
        let _ = mp.abort_multipart(&path, &id).await;
        return Err(store_error(
            sink,
            format!("cannot record the upload of {url} in {marker_path}"),
            e,
        ));
    }
    let upload = PartUpload {
        store: mp.clone(),
        path,
        id,
        part_size: new.part_size.max(1),
        concurrency: new.concurrency.max(1),
        buffer: PutPayloadMut::new(),
        in_flight: JoinSet::new(),
        parts: Vec::new(),
    };
    Ok((FileUpload::Multipart(upload), Some(marker_path)))
}

/// Make the file at `path` (of `loc`) visible as `completion` says; `bytes` is its size as the
/// manifest recorded it. Harmless when already done: if the completion fails and the file
/// exists with that size, it was completed before. If it fails and the file does not exist,
/// the error is transient (retried by the next start) unless the store says the upload or the
/// staging file is gone, which is a FATAL error: the committed file is lost.
pub(crate) async fn complete(
    loc: &Location,
    path: &Path,
    completion: &Completion,
    bytes: u64,
    sink: &str,
) -> Result<()> {
    let url = loc.url_of(path);
    let failed = match completion {
        Completion::Multipart { upload_id, parts } => {
            let Some(mp) = &loc.multipart else {
                return Err(Error::sink(
                    sink,
                    format!(
                        "the manifest commits {url} as a multipart upload, but {} has no multipart API; open the dataset with the store that wrote it",
                        loc.display
                    ),
                    Retry::Permanent,
                    None,
                ));
            };
            let parts = parts
                .iter()
                .map(|p| PartId {
                    content_id: p.clone(),
                })
                .collect();
            match mp.complete_multipart(path, upload_id, parts).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            }
        }
        Completion::Rename { from } => match loc.store.rename(&loc.child(from), path).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        },
    };
    match loc.store.head(path).await {
        Ok(meta) if meta.size == bytes => Ok(()),
        Ok(meta) => Err(Error::sink(
            sink,
            format!(
                "committed file {url} has {} bytes, but its manifest recorded {bytes}; it was replaced by something other than this stream; restore it or backfill",
                meta.size
            ),
            Retry::Permanent,
            None,
        )),
        Err(object_store::Error::NotFound { .. }) => {
            let gone =
                is_upload_gone(&failed) || arcane_store::classify(&failed) == Retry::Permanent;
            match gone {
                false => Err(store_error(
                    sink,
                    format!("cannot make committed file {url} visible"),
                    failed,
                )),
                true => Err(Error::sink(
                    sink,
                    format!(
                        "committed file {url} cannot be made visible ({failed}) and does not exist: its upload or staging file is gone (a lifecycle rule that aborts incomplete multipart uploads, or a manual deletion); its rows are lost: backfill the stream, or restore the file"
                    ),
                    Retry::Permanent,
                    Some(Box::new(failed)),
                )),
            }
        }
        Err(e) => Err(store_error(sink, format!("cannot check {url}"), e)),
    }
}

/// Abort the multipart upload `id` of `path`; an upload that is already gone is fine.
pub(crate) async fn abort(loc: &Location, path: &Path, id: &str, sink: &str) -> Result<()> {
    let Some(mp) = &loc.multipart else {
        return Ok(());
    };
    match mp.abort_multipart(path, &id.to_string()).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) if is_upload_gone(&e) => Ok(()),
        Err(e) => {
            // The permission is the likely cause only when the store refused the call.
            let hint = match arcane_store::classify(&e) {
                Retry::Permanent => " (with S3 this needs the s3:AbortMultipartUpload permission)",
                Retry::Transient => "",
            };
            Err(store_error(
                sink,
                format!(
                    "cannot abort the incomplete upload {id} of {}{hint}",
                    loc.url_of(path)
                ),
                e,
            ))
        }
    }
}

/// Whether a store error says that a multipart upload (or its parts) does not exist (any more):
/// S3 and GCS `NoSuchUpload` (404), Azure `InvalidBlockList`, the memory store's
/// "MultipartUpload not found".
fn is_upload_gone(e: &object_store::Error) -> bool {
    let msg = e.to_string().to_ascii_lowercase();
    [
        "nosuchupload",
        "upload not found",
        "status 404",
        "invalidblocklist",
    ]
    .iter()
    .any(|p| msg.contains(p))
}

/// The local directory `rel` of `loc`, when `loc` is on the local file system.
fn local_dir(loc: &Location, rel: &str) -> Option<std::path::PathBuf> {
    let root = loc.local_root.as_ref()?;
    let mut dir = root.clone();
    for part in loc.prefix.parts() {
        dir.push(part.as_ref());
    }
    Some(dir.join(rel))
}

/// The upload markers of `meta`, in name order, with their paths. A marker that cannot be
/// parsed is an error naming it.
pub(crate) async fn list_markers(meta: &Location, sink: &str) -> Result<Vec<(Path, UploadMarker)>> {
    let dir = meta.child(UPLOADS_DIR);
    let mut metas: Vec<_> = meta
        .store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| store_error(sink, format!("cannot list upload markers under {dir}"), e))?;
    metas.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
    let mut out = Vec::with_capacity(metas.len());
    for m in metas {
        if !m.location.as_ref().ends_with(".json") {
            continue;
        }
        let bytes = match meta.store.get(&m.location).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => {
                return Err(store_error(
                    sink,
                    format!("cannot read upload marker {}", m.location),
                    e,
                ));
            }
        };
        let marker: UploadMarker = serde_json::from_slice(&bytes).map_err(|e| {
            Error::sink(
                sink,
                format!(
                    "upload marker {} is not valid ({e}); it was not written by this version of arcane-sinks; delete it once no run of the stream is active",
                    m.location
                ),
                Retry::Permanent,
                None,
            )
        })?;
        out.push((m.location, marker));
    }
    Ok(out)
}

/// Delete `paths` of `loc` in bulk requests (missing objects are fine).
pub(crate) async fn delete_all(
    loc: &Location,
    paths: Vec<Path>,
    sink: &str,
    retry: &RetryConfig,
) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    // Deleting is idempotent, so a call that failed (or timed out, which the store's client
    // does not retry for a bulk delete) is retried whole under the sink's policy.
    let what = format!("deleting under {}", loc.display);
    arcane_core::retry::retry(
        retry,
        &what,
        || {
            let paths = paths.clone();
            async move {
                let mut deleted = loc
                    .store
                    .delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed());
                while let Some(r) = deleted.next().await {
                    match r {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        },
        |e| arcane_store::classify(e) == Retry::Transient,
        None,
    )
    .await
    .map_err(|e| {
        store_error(
            sink,
            format!(
                "cannot delete under {} (after {} attempts)",
                loc.display, e.attempts
            ),
            e.error,
        )
    })
}

/// The staging files of `loc` (`_arcane/staging/`); none on stores with a multipart API.
pub(crate) async fn list_staging(loc: &Location, sink: &str) -> Result<Vec<Path>> {
    if loc.multipart.is_some() {
        return Ok(Vec::new());
    }
    let dir = loc.child(STAGING_DIR);
    loc.store
        .list(Some(&dir))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .map_err(|e| store_error(sink, format!("cannot list {dir}"), e))
}

/// Delete the staging `files` of `loc` no manifest commits, and on the local file system the
/// whole staging directory (partial files of interrupted writes, `…#N`, which listings skip,
/// and empty directories).
pub(crate) async fn remove_staging(
    loc: &Location,
    files: Vec<Path>,
    sink: &str,
    retry: &RetryConfig,
) -> Result<()> {
    for f in &files {
        tracing::info!(file = %loc.url_of(f), "deleting uncommitted staging file left by an interrupted run");
    }
    delete_all(loc, files, sink, retry).await?;
    if let Some(dir) = local_dir(loc, STAGING_DIR) {
        match std::fs::remove_dir_all(&dir) {
            // Also when the staging directory is gone already: a run stopped between
            // deleting it and its (then empty) metadata directory leaves the latter behind.
            Ok(()) => remove_empty_meta_dir(loc),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => remove_empty_meta_dir(loc),
            Err(e) => {
                return Err(Error::sink(
                    sink,
                    format!(
                        "cannot delete the staging directory {}: {e}; check its permissions",
                        dir.display()
                    ),
                    Retry::Transient,
                    Some(Box::new(e)),
                ));
            }
        }
    }
    Ok(())
}

/// Remove the metadata directory of the local location `loc` if it is empty (a dead-letter
/// location has no manifests: once its staging directory is gone, nothing is left in it).
fn remove_empty_meta_dir(loc: &Location) {
    if let Some(meta) = local_dir(loc, META_DIR) {
        let _ = std::fs::remove_dir(meta);
    }
}

/// Remove the (now empty) local staging directory of commit `sequence`.
pub(crate) fn remove_local_staging_dir(loc: &Location, sequence: u64) {
    if let Some(dir) = local_dir(loc, &format!("{STAGING_DIR}/{sequence:020}")) {
        let _ = std::fs::remove_dir_all(dir);
        // And the staging and metadata directories when they are empty now (a dead-letter
        // location has no manifests).
        if let Some(dir) = local_dir(loc, STAGING_DIR) {
            let _ = std::fs::remove_dir(dir);
        }
        remove_empty_meta_dir(loc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn location() -> Location {
        let store = Arc::new(InMemory::new());
        Location {
            store: store.clone(),
            multipart: Some(store),
            prefix: Path::from("data"),
            display: "memory:///data".into(),
            local_root: None,
        }
    }

    async fn upload(loc: &Location, rel: &str, part_size: usize) -> (FileUpload, Path) {
        let (up, marker) = start(
            NewUpload {
                loc,
                rel,
                sequence: 7,
                meta: loc,
                marker_name: "0000",
                marker_file: MarkerFile::Data(rel.into()),
                part_size,
                concurrency: 2,
            },
            "test",
        )
        .await
        .expect("start");
        (up, marker.expect("a marker"))
    }

    #[tokio::test]
    async fn parts_have_the_part_size_and_nothing_is_visible_before_completion() {
        let loc = location();
        let (mut up, marker) = upload(&loc, "a/f.parquet", 5).await;
        assert_eq!(
            marker.as_ref(),
            "data/_arcane/uploads/00000000000000000007-0000.json"
        );
        let recorded: UploadMarker =
            serde_json::from_slice(&loc.store.get(&marker).await.unwrap().bytes().await.unwrap())
                .unwrap();
        assert_eq!(recorded.path.as_deref(), Some("a/f.parquet"));
        for chunk in ["0123456", "789ab", "", "c"] {
            AsyncFileWriter::write(&mut up, Bytes::from(chunk))
                .await
                .unwrap();
        }
        AsyncFileWriter::complete(&mut up).await.unwrap();
        let FileUpload::Multipart(p) = &up else {
            panic!("multipart")
        };
        assert_eq!(p.parts.len(), 3, "13 bytes in parts of 5: 5 + 5 + 3");
        let path = loc.child("a/f.parquet");
        assert!(
            loc.store.head(&path).await.is_err(),
            "invisible until completed"
        );
        let completion = up.completion();
        complete(&loc, &path, &completion, 13, "test")
            .await
            .unwrap();
        let got = loc.store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"0123456789abc");
        // Twice is harmless: the upload is gone, the file is there with its size.
        complete(&loc, &path, &completion, 13, "test")
            .await
            .unwrap();
        // A different size is somebody else's file.
        let err = complete(&loc, &path, &completion, 14, "test")
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("has 13 bytes, but its manifest recorded 14"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_empty_file_is_one_part_and_an_aborted_upload_cannot_complete() {
        let loc = location();
        let (mut up, _) = upload(&loc, "empty.parquet", 5).await;
        AsyncFileWriter::complete(&mut up).await.unwrap();
        let FileUpload::Multipart(p) = &up else {
            panic!("multipart")
        };
        assert_eq!(p.parts.len(), 1, "at least one part");
        let path = loc.child("empty.parquet");
        let Completion::Multipart { upload_id, .. } = up.completion() else {
            panic!("multipart")
        };
        abort(&loc, &path, &upload_id, "test").await.unwrap();
        abort(&loc, &path, &upload_id, "test")
            .await
            .expect("aborting twice is fine");
        let err = complete(&loc, &path, &up.completion(), 0, "test")
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal, "{err}");
        assert!(err.to_string().contains("empty.parquet"), "{err}");
    }
}

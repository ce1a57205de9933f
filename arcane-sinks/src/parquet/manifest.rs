//! The commit manifest: one JSON object per commit under `{prefix}/_arcane/manifests/`.
//!
//! Each manifest records the files it committed and carries the whole sink state (current
//! generation, checkpoints, backfill progress, retired generations, learned schema), so that
//! recovery reads only the newest one. Names are `{sequence:020}.json`: listing order is
//! commit order. The format, as documented in the crate's `MANIFEST.md`:
//!
#![doc = include_str!("../../MANIFEST.md")]

use arcane_core::{Checkpoint, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::config::BackfillBehavior;
use super::store::{Location, store_error};

/// Directory of the sink's own metadata, relative to the prefix. Readers of Hive layouts
/// ignore directories starting with `_`.
pub(crate) const META_DIR: &str = "_arcane";
/// Directory of manifests, relative to the prefix.
pub(crate) const MANIFEST_DIR: &str = "_arcane/manifests";
/// Directory of `overwrite` generations, relative to the prefix.
pub(crate) const GENERATIONS_DIR: &str = "_generations";
/// Directory of upload markers (one per multipart upload in progress), relative to the prefix.
pub(crate) const UPLOADS_DIR: &str = "_arcane/uploads";
/// Directory of local staging files (files written before their commit), relative to a prefix.
pub(crate) const STAGING_DIR: &str = "_arcane/staging";
/// Manifest format version written by this version (see `MANIFEST.md`): 2 adds dead letters;
/// 3 writes the manifest before files become visible and records how each file is completed
/// (`completion`, `deadLetterCompletions`). Older binaries refuse version 3 manifests, which
/// they would recover wrongly.
pub const MANIFEST_VERSION: u32 = 3;

/// How many completed backfill ids the state remembers.
pub const COMPLETED_BACKFILLS_KEPT: usize = 32;

/// What a manifest entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Files (possibly none) and a checkpoint were committed.
    Commit,
    /// A backfill completed (and for `overwrite`, its generation became current).
    CompleteBackfill,
    /// Retired generations were deleted.
    Cleanup,
}

/// A committed data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Path relative to the sink's prefix.
    pub path: String,
    /// Hive partition (`date=2026-11-23/hour=07`), empty when unpartitioned.
    pub partition: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// How the file becomes visible at `path` after the manifest is written (format 3; absent
    /// in older manifests, whose files were complete before their manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<Completion>,
}

/// How a file named by a manifest becomes visible: the step after the manifest is written,
/// repeated by recovery until it is done (doing it twice is harmless).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Completion {
    /// Complete a multipart upload (S3, Azure, GCS, memory) whose parts are uploaded.
    Multipart {
        /// The store's upload id (empty on Azure, whose blocks are named by the part ids).
        #[serde(rename = "uploadId")]
        upload_id: String,
        /// The part ids (S3/GCS ETags, Azure block ids), in order.
        parts: Vec<String>,
    },
    /// Rename a complete staging file (local file system).
    Rename {
        /// The staging file, relative to the same prefix as the file
        /// (`_arcane/staging/{sequence:020}/…`).
        from: String,
    },
}

/// A dead-letter file of a manifest entry and how it becomes visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterCompletion {
    /// The file's URL (an entry of `deadLetterFiles`).
    pub url: String,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// How it becomes visible; a `rename` is relative to the file's directory.
    pub completion: Completion,
}

/// Progress of a backfill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackfillState {
    /// `STREAMCONTEXT__BACKFILL_ID`.
    pub id: String,
    /// Merge or overwrite.
    pub behavior: BackfillBehavior,
    /// The generation it writes to.
    pub generation: String,
    /// The checkpoint of its last commit.
    pub checkpoint: Option<Checkpoint>,
    /// True once `finish` ran.
    pub completed: bool,
}

/// A generation replaced by an `overwrite` backfill, waiting for its retention to expire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetiredGeneration {
    /// The generation (`""` is the root of the prefix).
    pub generation: String,
    /// When it was replaced, in seconds since the Unix epoch.
    pub retired_at: u64,
}

/// The sink's state after a manifest entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The generation readers see: `""` (files directly under the prefix) or
    /// `_generations/{backfillId}-{sequence}`.
    pub current_generation: String,
    /// Where the stream (not a backfill) resumes.
    pub stream_checkpoint: Option<Checkpoint>,
    /// The latest backfill.
    pub backfill: Option<BackfillState>,
    /// Replaced generations not yet deleted.
    #[serde(default)]
    pub retired: Vec<RetiredGeneration>,
    /// Ids of the last completed backfills (newest last, at most
    /// [`COMPLETED_BACKFILLS_KEPT`]): a rerun of one of them does nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed_backfills: Vec<String>,
    /// The target schema the sink learned from the first batch (Arrow's serde form).
    #[serde(default)]
    pub schema: Option<arrow_schema::Schema>,
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// Commit sequence (file names of this commit carry it).
    pub sequence: u64,
    /// The stream that wrote it.
    pub stream_id: String,
    /// RFC 3339 time of the commit.
    pub committed_at: String,
    /// What the entry did.
    pub action: Action,
    /// The generation `files` belong to.
    pub generation: String,
    /// Files committed by this entry.
    pub files: Vec<FileEntry>,
    /// Rows committed by this entry.
    pub rows: u64,
    /// Bytes committed by this entry.
    pub bytes: u64,
    /// The checkpoint through which this entry's rows go (verbatim from the source).
    pub checkpoint: Option<Checkpoint>,
    /// Dead letters committed by this entry (records read up to `checkpoint` that are not in
    /// the rows, kept with their reason).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dead_letters: u64,
    /// The dead-letter files of this entry (URLs), holding `deadLetters` records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead_letter_files: Vec<String>,
    /// How each dead-letter file becomes visible (format 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead_letter_completions: Vec<DeadLetterCompletion>,
    /// The sink state after this entry.
    pub state: State,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

pub(crate) fn manifest_path(loc: &Location, sequence: u64) -> Path {
    loc.child(&format!("{MANIFEST_DIR}/{sequence:020}.json"))
}

fn sequence_of(path: &Path) -> Option<u64> {
    path.filename()?.strip_suffix(".json")?.parse().ok()
}

/// Sequences of every manifest, ascending.
pub(crate) async fn list_sequences(loc: &Location, sink: &str) -> Result<Vec<u64>> {
    let dir = loc.child(MANIFEST_DIR);
    let metas: Vec<_> = loc
        .store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| store_error(sink, format!("cannot list manifests under {dir}"), e))?;
    let mut seqs: Vec<u64> = metas
        .iter()
        .filter_map(|m| sequence_of(&m.location))
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Read the manifest of `sequence`.
pub(crate) async fn read(loc: &Location, sink: &str, sequence: u64) -> Result<Manifest> {
    let path = manifest_path(loc, sequence);
    let bytes = loc
        .store
        .get(&path)
        .await
        .map_err(|e| store_error(sink, format!("cannot read manifest {path}"), e))?
        .bytes()
        .await
        .map_err(|e| store_error(sink, format!("cannot read manifest {path}"), e))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        arcane_core::Error::sink(
            sink,
            format!("manifest {path} is not valid ({e}); it was not written by this version of arcane-sinks or was edited by hand; restore it or use a new sink location"),
            arcane_core::Retry::Permanent,
            None,
        )
    })?;
    if manifest.sequence != sequence {
        // Recovery continues at the manifest's sequence + 1: a sequence other than the file's
        // would overwrite or skip manifests.
        return Err(arcane_core::Error::sink(
            sink,
            format!(
                "manifest {path} holds sequence {} but its name says {sequence}; it was edited by hand or copied; restore it or use a new sink location",
                manifest.sequence
            ),
            arcane_core::Retry::Permanent,
            None,
        ));
    }
    if manifest.version > MANIFEST_VERSION {
        return Err(arcane_core::Error::sink(
            sink,
            format!(
                "manifest {path} has format version {}, newer than this version of arcane-sinks reads ({MANIFEST_VERSION}); upgrade the binary",
                manifest.version
            ),
            arcane_core::Retry::Permanent,
            None,
        ));
    }
    Ok(manifest)
}

/// The manifest of `sequence`, or `None` when there is none.
pub(crate) async fn read_if_exists(
    loc: &Location,
    sink: &str,
    sequence: u64,
) -> Result<Option<Manifest>> {
    match loc.store.head(&manifest_path(loc, sequence)).await {
        Ok(_) => Ok(Some(read(loc, sink, sequence).await?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_error(
            sink,
            format!("cannot read manifest {}", manifest_path(loc, sequence)),
            e,
        )),
    }
}

/// The newest manifest, if any.
pub(crate) async fn latest(loc: &Location, sink: &str) -> Result<Option<Manifest>> {
    match list_sequences(loc, sink).await?.last() {
        Some(&seq) => Ok(Some(read(loc, sink, seq).await?)),
        None => Ok(None),
    }
}

/// Every manifest, in commit order.
pub(crate) async fn all(loc: &Location, sink: &str) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for seq in list_sequences(loc, sink).await? {
        out.push(read(loc, sink, seq).await?);
    }
    Ok(out)
}

/// Write a manifest (a single atomic put).
pub(crate) async fn write(loc: &Location, sink: &str, manifest: &Manifest) -> Result<()> {
    let path = manifest_path(loc, manifest.sequence);
    let json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| arcane_core::Error::fatal(format!("cannot encode manifest {path}: {e}")))?;
    loc.store
        .put(&path, PutPayload::from(Bytes::from(json)))
        .await
        .map_err(|e| store_error(sink, format!("cannot write manifest {path}"), e))?;
    Ok(())
}

/// Write a manifest only if no manifest of its sequence exists (put-if-absent): the commit
/// point of a writer that may race another one (two pods of the same shard, two shards
/// completing a backfill). `Ok(false)` when another writer already wrote this sequence.
pub(crate) async fn write_if_absent(
    loc: &Location,
    sink: &str,
    manifest: &Manifest,
) -> Result<bool> {
    let path = manifest_path(loc, manifest.sequence);
    let json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| arcane_core::Error::fatal(format!("cannot encode manifest {path}: {e}")))?;
    match loc
        .store
        .put_opts(
            &path,
            PutPayload::from(Bytes::from(json)),
            object_store::PutOptions::from(object_store::PutMode::Create),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(false),
        Err(e) => Err(store_error(
            sink,
            format!("cannot write manifest {path}"),
            e,
        )),
    }
}

/// Relative paths of the committed files of `generation`.
pub(crate) fn files_of<'a>(
    manifests: &'a [Manifest],
    generation: &'a str,
) -> impl Iterator<Item = &'a FileEntry> + 'a {
    manifests
        .iter()
        .filter(move |m| m.generation == generation)
        .flat_map(|m| m.files.iter())
}

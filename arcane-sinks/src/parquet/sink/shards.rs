//! Sharded backfills: each shard commits in its own manifest lineage, and the shard that finds
//! every shard done completes the backfill with one put-if-absent manifest of the stream.
//!
//! Layout under the sink's prefix, for backfill id `B` of `N` shards (`B` sanitized):
//!
//! * `_arcane/shards/B-of-N/{index:04}/_arcane/manifests/{sequence:020}.json` — the shard's
//!   manifests (same format as the stream's), each written put-if-absent; its upload markers
//!   are beside them (`…/_arcane/uploads/`).
//! * `_arcane/shards/B-of-N/done/{index:04}.json` — the shard's done marker: its final
//!   checkpoint, rows and files.
//! * data files in the backfill's generation (`_generations/B-of-N` for `overwrite`, the
//!   current generation for `merge`), named `part-{stream}-shard{index:04}-…`.
//!
//! The stream's own manifests (`_arcane/manifests/`) are untouched until the backfill
//! completes: readers see the old data until then.

#[allow(unused_imports)]
use super::*;

use std::sync::Arc;

use arcane_core::{Shard, ShardBoard};
use serde::{Deserialize, Serialize};

/// Computes the checkpoint a stream resumes from after a sharded backfill, from the final
/// checkpoints of its shards in index order (`None` for a shard that read nothing). A source
/// whose positions are ordered picks the furthest; `Ok(None)` makes the stream start from the
/// beginning.
pub type ShardResume = fn(&[Option<Checkpoint>]) -> Result<Option<Checkpoint>>;

/// Directory of sharded backfills, relative to the prefix.
pub(crate) const SHARDS_DIR: &str = "_arcane/shards";

/// How many times completing a sharded backfill re-reads the stream's manifests after losing a
/// put-if-absent race to another writer.
const COMPLETE_ATTEMPTS: usize = 5;

fn backfill_dir(id: &str, count: u32) -> String {
    format!("{SHARDS_DIR}/{}-of-{count}", sanitize(id))
}

fn shard_dir(id: &str, count: u32, index: u32) -> String {
    format!("{}/{index:04}", backfill_dir(id, count))
}

fn done_rel(id: &str, count: u32, index: u32) -> String {
    format!("{}/done/{index:04}.json", backfill_dir(id, count))
}

/// The location `rel` under `loc` (same store).
fn sub_location(loc: &Location, rel: &str) -> Location {
    Location {
        store: loc.store.clone(),
        multipart: loc.multipart.clone(),
        prefix: loc.child(rel),
        display: format!("{}/{rel}", loc.display.trim_end_matches('/')),
        local_root: loc.local_root.clone(),
    }
}

/// What a shard records when it committed its last part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DoneMarker {
    /// The backfill id.
    backfill_id: String,
    /// The shard's index.
    index: u32,
    /// The shard count.
    shards: u32,
    /// The shard's final checkpoint (`None`: it read nothing).
    checkpoint: Option<Checkpoint>,
    /// Rows the shard committed.
    rows: u64,
    /// Files the shard committed.
    files: u64,
    /// RFC 3339 time.
    done_at: String,
}

async fn read_json<T: serde::de::DeserializeOwned>(
    loc: &Location,
    path: &Path,
    sink: &str,
) -> Result<Option<T>> {
    let bytes = match loc.store.get(path).await {
        Ok(r) => r
            .bytes()
            .await
            .map_err(|e| store_error(sink, format!("cannot read {path}"), e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_error(sink, format!("cannot read {path}"), e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::sink(
            sink,
            format!("{path} is not valid ({e}); it was not written by this version of arcane-sinks or was edited by hand"),
            Retry::Permanent,
            None,
        )
    })
}

/// The [`ShardBoard`] of one sharded backfill: each value one object under
/// `_arcane/shards/B-of-N/board/`, written put-if-absent.
#[derive(Debug)]
struct Board {
    loc: Location,
    dir: String,
    sink: String,
}

impl Board {
    fn path(&self, name: &str) -> Path {
        self.loc.child(&format!("{}/{}", self.dir, sanitize(name)))
    }
}

#[async_trait::async_trait]
impl ShardBoard for Board {
    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(name);
        match self.loc.store.get(&path).await {
            Ok(r) => Ok(Some(
                r.bytes()
                    .await
                    .map_err(|e| store_error(&self.sink, format!("cannot read {path}"), e))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(&self.sink, format!("cannot read {path}"), e)),
        }
    }

    async fn put_if_absent(&self, name: &str, value: Vec<u8>) -> Result<bool> {
        let path = self.path(name);
        match self
            .loc
            .store
            .put_opts(
                &path,
                object_store::PutPayload::from(value),
                object_store::PutOptions::from(object_store::PutMode::Create),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(store_error(&self.sink, format!("cannot write {path}"), e)),
        }
    }

    fn location(&self, name: &str) -> String {
        self.loc.url_of(&self.path(name))
    }
}

impl ParquetSink {
    /// The board the shards of backfill `backfill_id` (`None`: the runner's default id,
    /// `unnamed`) share under this sink's prefix, for sources whose shards must agree on
    /// something before reading (see [`ShardBoard`]).
    pub fn shard_board(&self, backfill_id: Option<&str>, shard: Shard) -> Arc<dyn ShardBoard> {
        let id = backfill_id.unwrap_or("unnamed");
        Arc::new(Board {
            loc: self.loc.clone(),
            dir: format!("{}/board", backfill_dir(id, shard.count())),
            sink: self.sink_name(),
        })
    }
}

impl ParquetSink {
    /// The error of a writer that lost its manifest sequence to another process.
    pub(super) fn concurrent_writer(&self, sequence: u64) -> Error {
        self.err(
            format!(
                "manifest {sequence} under {} was written by another process: another pod of the same shard is running this backfill (or ran it since this one started); this process stops without committing, and what it uploaded is discarded by the next start",
                self.meta.display
            ),
            Retry::Transient,
        )
    }

    /// Open as shard `shard` of the backfill: a backfill the stream already completed does
    /// nothing; otherwise claim the next sequence of the shard's lineage (put-if-absent, so
    /// that a second pod of the same index fails here or at its next commit), then recover
    /// the lineage and resume from its checkpoint.
    pub(super) async fn open_shard(
        &mut self,
        ctx: &SinkContext,
        shard: Shard,
    ) -> Result<Option<Checkpoint>> {
        let name = self.sink_name();
        let id = ctx.backfill_id.clone().unwrap_or_else(|| "unnamed".into());
        self.file_stem = format!("{}-shard{:04}", sanitize(&ctx.stream_id), shard.index());
        let main = manifest::latest(&self.loc, &name).await?;
        let main_state = main.as_ref().map(|m| m.state.clone()).unwrap_or_default();
        let completed = main_state.completed_backfills.contains(&id)
            || main_state
                .backfill
                .as_ref()
                .is_some_and(|b| b.id == id && b.completed);
        if completed {
            tracing::info!(backfill_id = %id, shard = shard.index(), shards = shard.count(), generation = %main_state.current_generation, "this sharded backfill already completed; nothing to do");
            self.already_completed = true;
            self.backfilling = false;
            self.generation = main_state.current_generation.clone();
            self.state = main_state;
            self.next_seq = main.map_or(0, |m| m.sequence + 1);
            self.last_checkpoint = None;
            self.opened = true;
            return Ok(None);
        }
        self.sharded = true;
        self.backfilling = true;
        self.already_completed = false;
        self.meta = sub_location(&self.loc, &shard_dir(&id, shard.count(), shard.index()));
        let own = manifest::latest(&self.meta, &name).await?;
        let state = match &own {
            Some(m) => m.state.clone(),
            None => State {
                current_generation: main_state.current_generation.clone(),
                schema: main_state.schema.clone(),
                backfill: Some(BackfillState {
                    id: id.clone(),
                    behavior: self.config.backfill_behavior,
                    generation: match self.config.backfill_behavior {
                        BackfillBehavior::Merge => main_state.current_generation.clone(),
                        BackfillBehavior::Overwrite => {
                            format!("{GENERATIONS_DIR}/{}-of-{}", sanitize(&id), shard.count())
                        }
                    },
                    checkpoint: None,
                    completed: false,
                }),
                ..State::default()
            },
        };
        let Some(backfill) = state.backfill.clone() else {
            return Err(self.err(
                format!("the newest manifest under {} has no backfill state; it was edited by hand; restore it or use a new backfill id", self.meta.display),
                Retry::Permanent,
            ));
        };
        self.generation = backfill.generation.clone();
        self.state = state;
        self.next_seq = own.as_ref().map_or(0, |m| m.sequence + 1);
        // Claim the next sequence before recovery deletes anything: a second pod of this
        // index that is still writing can then never commit what recovery discards.
        let claim = Manifest {
            version: MANIFEST_VERSION,
            sequence: self.next_seq,
            stream_id: self.stream_id.clone(),
            committed_at: chrono::Utc::now().to_rfc3339(),
            action: Action::Commit,
            generation: self.generation.clone(),
            files: Vec::new(),
            rows: 0,
            bytes: 0,
            checkpoint: backfill.checkpoint.clone(),
            dead_letters: 0,
            dead_letter_files: Vec::new(),
            dead_letter_completions: Vec::new(),
            state: self.state.clone(),
        };
        self.write_manifest(&claim).await?;
        self.next_seq += 1;
        // Recovery completes the files of the newest manifest that commits any: claims (of
        // earlier starts killed before their recovery finished) commit none.
        let mut committing = own;
        while let Some(m) = &committing {
            if !m.files.is_empty() || !m.dead_letter_completions.is_empty() || m.sequence == 0 {
                break;
            }
            committing = manifest::read_if_exists(&self.meta, &name, m.sequence - 1).await?;
        }
        let removed = self.recover(committing.as_ref()).await?;
        if self.config.schema.is_none() {
            self.target = self.state.schema.clone().map(std::sync::Arc::new);
        }
        // An Iceberg table: the shard's files carry its field ids (the table is created now
        // when the schema is known); the shard publishes nothing until the completion.
        self.open_table_for_shard().await?;
        let resume = backfill.checkpoint;
        self.last_checkpoint = resume.clone();
        self.opened = true;
        self.set_files_open_gauge();
        tracing::info!(
            sink = %name,
            shard = shard.index(),
            shards = shard.count(),
            backfill_id = %id,
            generation = %self.generation,
            lineage = %self.meta.display,
            next_sequence = self.next_seq,
            removed_uncommitted = removed,
            resume_from = ?resume,
            "parquet sink opened for a shard of a sharded backfill"
        );
        Ok(resume)
    }

    /// The shard committed its last part: record it done, and complete the backfill when
    /// every shard is done.
    pub(super) async fn finish_shard(&mut self) -> Result<()> {
        let name = self.sink_name();
        let (Some((shard, resume)), Some(backfill)) = (self.shard, self.state.backfill.clone())
        else {
            return Err(self.err(
                "a shard finished without its shard settings or backfill state; this is a bug",
                Retry::Permanent,
            ));
        };
        let own = manifest::all(&self.meta, &name).await?;
        let marker = DoneMarker {
            backfill_id: backfill.id.clone(),
            index: shard.index(),
            shards: shard.count(),
            checkpoint: backfill.checkpoint.clone(),
            rows: own.iter().map(|m| m.rows).sum(),
            files: own.iter().map(|m| m.files.len() as u64).sum(),
            done_at: chrono::Utc::now().to_rfc3339(),
        };
        let path = self
            .loc
            .child(&done_rel(&backfill.id, shard.count(), shard.index()));
        let json = serde_json::to_vec_pretty(&marker)
            .map_err(|e| Error::fatal(format!("cannot encode done marker {path}: {e}")))?;
        self.loc
            .store
            .put(&path, object_store::PutPayload::from(json))
            .await
            .map_err(|e| store_error(&name, format!("cannot write done marker {path}"), e))?;
        self.failpoints.reach("after-shard-done").await;
        let mut done = Vec::with_capacity(shard.count() as usize);
        for i in 0..shard.count() {
            let p = self.loc.child(&done_rel(&backfill.id, shard.count(), i));
            done.push(read_json::<DoneMarker>(&self.loc, &p, &name).await?);
        }
        let finished = done.iter().filter(|d| d.is_some()).count();
        if finished < shard.count() as usize {
            tracing::info!(
                shard = shard.index(),
                shards = shard.count(),
                done = finished,
                rows = marker.rows,
                "shard done; the backfill completes when the last of its shards is done"
            );
            self.backfilling = false;
            return Ok(());
        }
        let finals: Vec<Option<Checkpoint>> = done
            .into_iter()
            .map(|d| d.and_then(|d| d.checkpoint))
            .collect();
        let resume_after = resume(&finals)?;
        self.complete_sharded(shard, &backfill, resume_after)
            .await?;
        self.backfilling = false;
        Ok(())
    }

    /// Every shard is done: write the stream's manifest completing the backfill (for
    /// `overwrite`, switching to its generation), listing every shard's files, put-if-absent
    /// so that exactly one shard does it.
    async fn complete_sharded(
        &mut self,
        shard: Shard,
        backfill: &BackfillState,
        resume_after: Option<Checkpoint>,
    ) -> Result<()> {
        let name = self.sink_name();
        for _ in 0..COMPLETE_ATTEMPTS {
            let main = manifest::latest(&self.loc, &name).await?;
            let before = main.as_ref().map(|m| m.state.clone()).unwrap_or_default();
            if before.completed_backfills.contains(&backfill.id) {
                tracing::info!(shard = shard.index(), shards = shard.count(), backfill_id = %backfill.id, "another shard completed the backfill");
                return Ok(());
            }
            let mut files = Vec::new();
            let (mut dead_letters, mut dead_letter_files) = (0u64, Vec::new());
            for i in 0..shard.count() {
                let meta = sub_location(&self.loc, &shard_dir(&backfill.id, shard.count(), i));
                for m in manifest::all(&meta, &name).await? {
                    if m.generation == backfill.generation {
                        files.extend(m.files.into_iter().map(|f| FileEntry {
                            completion: None,
                            ..f
                        }));
                    }
                    dead_letters += m.dead_letters;
                    dead_letter_files.extend(m.dead_letter_files);
                }
            }
            let rows: u64 = files.iter().map(|f| f.rows).sum();
            let bytes: u64 = files.iter().map(|f| f.bytes).sum();
            if backfill.behavior == BackfillBehavior::Overwrite
                && rows == 0
                && !self.config.allow_empty_overwrite
            {
                return Err(Error::EmptyOverwrite {
                    backfill_id: backfill.id.clone(),
                    source_name: if self.source_name.is_empty() {
                        "the source".into()
                    } else {
                        format!("{} ({} shards)", self.source_name, shard.count())
                    },
                    sink_name: name.clone(),
                });
            }
            let mut state = before.clone();
            if let Some(p) = state.backfill.take().filter(|p| {
                !p.completed
                    && p.generation != state.current_generation
                    && p.generation != backfill.generation
            }) {
                // An abandoned overwrite generation: never became current, delete it.
                state.retired.push(RetiredGeneration {
                    generation: p.generation,
                    retired_at: 0,
                });
            }
            state.backfill = Some(BackfillState {
                checkpoint: resume_after.clone(),
                completed: true,
                ..backfill.clone()
            });
            state.stream_checkpoint = resume_after.clone();
            state.completed_backfills.push(backfill.id.clone());
            let over = state
                .completed_backfills
                .len()
                .saturating_sub(manifest::COMPLETED_BACKFILLS_KEPT);
            state.completed_backfills.drain(..over);
            if backfill.behavior == BackfillBehavior::Overwrite
                && backfill.generation != state.current_generation
            {
                let old =
                    std::mem::replace(&mut state.current_generation, backfill.generation.clone());
                state.retired.push(RetiredGeneration {
                    generation: old,
                    retired_at: unix_now(),
                });
                // The new generation holds what the shards wrote.
                if self.state.schema.is_some() {
                    state.schema = self.state.schema.clone();
                }
            } else if state.schema.is_none() {
                state.schema = self.state.schema.clone();
            }
            let entry = Manifest {
                version: MANIFEST_VERSION,
                sequence: main.as_ref().map_or(0, |m| m.sequence + 1),
                stream_id: self.stream_id.clone(),
                committed_at: chrono::Utc::now().to_rfc3339(),
                action: Action::CompleteBackfill,
                generation: backfill.generation.clone(),
                files,
                rows,
                bytes,
                checkpoint: resume_after.clone(),
                dead_letters,
                dead_letter_files,
                dead_letter_completions: Vec::new(),
                state,
            };
            self.failpoints.reach("before-shard-switch").await;
            if manifest::write_if_absent(&self.loc, &name, &entry).await? {
                // The shard that completed the backfill publishes it to the table (a crash
                // before that: the stream's next start publishes it).
                self.publish_completion(&entry).await?;
                tracing::info!(
                    shard = shard.index(),
                    shards = shard.count(),
                    backfill_id = %backfill.id,
                    generation = %entry.state.current_generation,
                    files = entry.files.len(),
                    rows,
                    sequence = entry.sequence,
                    "every shard is done: sharded backfill complete"
                );
                return Ok(());
            }
            tracing::info!(
                sequence = entry.sequence,
                "another process wrote the stream's manifest first; checking again"
            );
        }
        Err(self.err(
            format!(
                "could not complete backfill {:?}: {COMPLETE_ATTEMPTS} times another process wrote the stream's manifest first (is a streaming run of this stream active during the backfill?); every shard is done, so a restart of this shard completes it",
                backfill.id
            ),
            Retry::Transient,
        ))
    }
}

/// Progress of one shard of a sharded backfill (`arcane show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardProgress {
    /// The shard's index.
    pub index: u32,
    /// Commits of the shard that committed files.
    pub committed_parts: u64,
    /// Rows the shard committed.
    pub rows: u64,
    /// The checkpoint of its last commit (`None` before the first).
    pub last_position: Option<Checkpoint>,
    /// Whether the shard committed its last part (its done marker exists).
    pub done: bool,
}

/// A sharded backfill found under a dataset (`arcane show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedBackfillProgress {
    /// The backfill id (as the shards recorded it; the directory name before any shard
    /// committed).
    pub backfill_id: String,
    /// The shard count.
    pub shards: u32,
    /// Whether the backfill completed (every shard done and the stream's manifest written).
    pub complete: bool,
    /// Each shard, in index order.
    pub progress: Vec<ShardProgress>,
}

/// The sharded backfills recorded under the dataset at `url`, with each shard's progress;
/// empty when there are none.
pub async fn sharded_backfills(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<Vec<ShardedBackfillProgress>> {
    let Some(loc) = crate::parquet::read::open_read(url, options)? else {
        return Ok(Vec::new());
    };
    let name = format!("parquet {}", loc.display);
    let dir = loc.child(SHARDS_DIR);
    let listed = loc
        .store
        .list_with_delimiter(Some(&dir))
        .await
        .map_err(|e| store_error(&name, format!("cannot list {dir}"), e))?;
    let main = manifest::latest(&loc, &name).await?;
    let completed = main
        .map(|m| m.state.completed_backfills)
        .unwrap_or_default();
    let mut out = Vec::new();
    for prefix in listed.common_prefixes {
        let Some(dir_name) = prefix.filename().map(str::to_string) else {
            continue;
        };
        let Some(count) = dir_name
            .rsplit_once("-of-")
            .and_then(|(_, n)| n.parse::<u32>().ok())
        else {
            continue;
        };
        let base = format!("{SHARDS_DIR}/{dir_name}");
        let mut backfill_id = dir_name
            .rsplit_once("-of-")
            .map_or(dir_name.clone(), |(id, _)| id.to_string());
        let mut progress = Vec::with_capacity(count as usize);
        for i in 0..count {
            let meta = sub_location(&loc, &format!("{base}/{i:04}"));
            let manifests = manifest::all(&meta, &name).await?;
            if let Some(b) = manifests.last().and_then(|m| m.state.backfill.as_ref()) {
                backfill_id = b.id.clone();
            }
            let done = loc
                .store
                .head(&loc.child(&format!("{base}/done/{i:04}.json")))
                .await
                .is_ok();
            progress.push(ShardProgress {
                index: i,
                committed_parts: manifests.iter().filter(|m| !m.files.is_empty()).count() as u64,
                rows: manifests.iter().map(|m| m.rows).sum(),
                last_position: manifests
                    .last()
                    .and_then(|m| m.state.backfill.as_ref())
                    .and_then(|b| b.checkpoint.clone()),
                done,
            });
        }
        out.push(ShardedBackfillProgress {
            complete: completed.contains(&backfill_id),
            backfill_id,
            shards: count,
            progress,
        });
    }
    Ok(out)
}

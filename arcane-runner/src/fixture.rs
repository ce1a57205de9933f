//! Test support (feature `fixture`): the stream kind run by the `arcane-runner-fixture` binary
//! in the process-level tests — [`GeneratorSource`] rows grouped into a durable NDJSON
//! directory sink ([`DirSink`]) — and helpers to read what it committed.
//!
//! [`DirSink`] commits each group as `part-{seq}.ndjson` (written to a temporary file and
//! renamed), then records `{seq, checkpoint}` in `checkpoint.json` (also written and renamed).
//! On open it deletes parts newer than the checkpoint (left by a run killed between the two
//! renames), so every committed row is in exactly one part and the generator resumes right
//! after the last committed one.

use std::fs;
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arcane_core::testing::GeneratorSource;
use arcane_core::{
    Checkpoint, Commit, Error, Group, GroupLimits, Result, Retry, Sink, SinkContext, StreamContext,
    StreamGraph, StreamGraphBuilder,
};
use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};

/// The fixture kind's spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixtureSpec {
    /// Directory of the NDJSON sink ([`DirSink`]); one of `dir` and `parquet` is required.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Write with `arcane_sinks::ParquetSink` instead (e.g. `{"url": "file:///tmp/out"}`).
    #[serde(default)]
    pub parquet: Option<arcane_sinks::ParquetSinkConfig>,
    /// Rows in total; unbounded when absent.
    #[serde(default)]
    pub total_rows: Option<u64>,
    /// Rows per source batch.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Pause between source batches, in milliseconds.
    #[serde(default = "default_pause_ms")]
    pub pause_ms: u64,
    /// Rows per group.
    #[serde(default = "default_group_rows")]
    pub group_rows: usize,
    /// Maximum age of a group, in milliseconds.
    #[serde(default = "default_group_interval_ms")]
    pub group_interval_ms: u64,
    /// Groups buffered by the sink before it commits (1: every group).
    #[serde(default = "default_commit_every")]
    pub commit_every: usize,
    /// Delay of the sink's flush (graceful shutdown), in milliseconds.
    #[serde(default)]
    pub flush_delay_ms: u64,
    /// Fail once this many rows were committed, with `failWith`.
    #[serde(default)]
    pub fail_after_rows: Option<u64>,
    /// `schemaMismatch`, `schemaInconsistent`, `fatal`, `custom` (a permanent source error
    /// named `fixture-custom`), `buildPanic` or `buildConfig`.
    #[serde(default)]
    pub fail_with: Option<String>,
}

fn default_batch_rows() -> usize {
    10
}
fn default_pause_ms() -> u64 {
    2
}
fn default_group_rows() -> usize {
    50
}
fn default_group_interval_ms() -> u64 {
    200
}
fn default_commit_every() -> usize {
    1
}

/// Builds the fixture graph.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixtureBuilder;

#[async_trait::async_trait]
impl StreamGraphBuilder for FixtureBuilder {
    type Spec = FixtureSpec;

    async fn build(&self, ctx: &StreamContext, spec: FixtureSpec) -> Result<StreamGraph> {
        match spec.fail_with.as_deref() {
            Some("buildPanic") => panic!("fixture builder panics as asked"),
            Some("buildConfig") => {
                return Err(Error::config(
                    "spec.failWith",
                    "the fixture refuses to build as asked",
                ));
            }
            _ => {}
        }
        let source = match spec.total_rows {
            Some(total) => GeneratorSource::new(total, spec.batch_rows),
            None => GeneratorSource::unbounded(spec.batch_rows),
        };
        let source = if spec.pause_ms > 0 {
            source.with_pause(Duration::from_millis(spec.pause_ms))
        } else {
            source
        };
        let group_rows = NonZeroUsize::new(spec.group_rows)
            .ok_or_else(|| Error::config("spec.groupRows", "must be at least 1"))?;
        let flow = StreamGraph::from_source(source).grouped_within(GroupLimits::new(
            group_rows,
            Duration::from_millis(spec.group_interval_ms.max(1)),
        ));
        tracing::info!(mode = ctx.mode().as_str(), "fixture graph built");
        match (&spec.dir, &spec.parquet) {
            (_, Some(config)) => {
                let sink = arcane_sinks::ParquetSink::new(config.clone())
                    .map_err(|e| Error::config("spec.parquet", e.to_string()))?;
                Ok(flow.to_sink(sink))
            }
            (Some(dir), None) => Ok(flow.to_sink(DirSink::new(dir, &spec))),
            (None, None) => Err(Error::config("spec", "set dir or parquet")),
        }
    }

    fn description(&self) -> &str {
        "synthetic rows into a local NDJSON directory (test fixture)"
    }
}

/// What `checkpoint.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    seq: u64,
    rows: u64,
    checkpoint: Checkpoint,
}

/// A durable NDJSON directory sink; see the module docs.
#[derive(Debug)]
pub struct DirSink {
    dir: PathBuf,
    commit_every: usize,
    flush_delay: Duration,
    fail_after_rows: Option<u64>,
    fail_with: Option<String>,
    seq: u64,
    rows: u64,
    pending: Vec<(RecordBatch, Checkpoint)>,
}

impl DirSink {
    fn new(dir: &Path, spec: &FixtureSpec) -> Self {
        Self {
            dir: dir.to_path_buf(),
            commit_every: spec.commit_every.max(1),
            flush_delay: Duration::from_millis(spec.flush_delay_ms),
            fail_after_rows: spec.fail_after_rows,
            fail_with: spec.fail_with.clone(),
            seq: 0,
            rows: 0,
            pending: Vec::new(),
        }
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::sink(
            format!("dir {}", self.dir.display()),
            format!("{what}: {e}"),
            Retry::Transient,
            Some(Box::new(e)),
        )
    }

    fn commit_pending(&mut self) -> Result<Option<Commit>> {
        let Some((_, checkpoint)) = self.pending.last().cloned() else {
            return Ok(None);
        };
        let batches: Vec<RecordBatch> = self.pending.drain(..).map(|(b, _)| b).collect();
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let seq = self.seq + 1;
        let name = format!("part-{seq:06}.ndjson");
        let mut buf = Vec::new();
        {
            let mut writer = arrow_json::LineDelimitedWriter::new(&mut buf);
            for b in &batches {
                // arrow-json cannot write named time zones without chrono-tz; keep the
                // columns the tests read.
                let keep: Vec<usize> = b
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| {
                        !matches!(f.data_type(), arrow_schema::DataType::Timestamp(..))
                    })
                    .map(|(i, _)| i)
                    .collect();
                writer.write(&b.project(&keep)?)?;
            }
            writer.finish()?;
        }
        write_atomic(&self.dir.join(&name), &buf).map_err(|e| self.io("write part", e))?;
        let manifest = Manifest {
            seq,
            rows: self.rows + rows,
            checkpoint: checkpoint.clone(),
        };
        let json = serde_json::to_vec(&manifest)
            .map_err(|e| Error::fatal(format!("cannot encode the fixture manifest: {e}")))?;
        write_atomic(&self.dir.join("checkpoint.json"), &json)
            .map_err(|e| self.io("write checkpoint", e))?;
        self.seq = seq;
        self.rows += rows;
        Ok(Some(Commit {
            checkpoint,
            rows,
            bytes: buf.len() as u64,
            files: vec![name],
            dead_letters: 0,
        }))
    }

    fn injected_failure(&self) -> Option<Error> {
        let after = self.fail_after_rows?;
        if self.rows < after {
            return None;
        }
        Some(match self.fail_with.as_deref()? {
            "schemaMismatch" => Error::SchemaMismatch {
                location: format!("dir {}", self.dir.display()),
                message: "column value: expected Float64, found Utf8 (injected)".into(),
            },
            "schemaInconsistent" => Error::SchemaInconsistent {
                location: format!("dir {}", self.dir.display()),
                message: "schema not yet visible everywhere (injected)".into(),
            },
            "custom" => {
                Error::source_permanent("fixture-custom", "a failure the binary classifies itself")
            }
            _ => Error::fatal("injected fatal failure"),
        })
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Sink for DirSink {
    fn name(&self) -> String {
        format!("dir {}", self.dir.display())
    }

    async fn open(&mut self, _ctx: &SinkContext) -> Result<Option<Checkpoint>> {
        fs::create_dir_all(&self.dir).map_err(|e| self.io("create dir", e))?;
        let manifest: Option<Manifest> = match fs::read(self.dir.join("checkpoint.json")) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                Error::sink(
                    self.name(),
                    format!("corrupt checkpoint.json: {e}"),
                    Retry::Permanent,
                    None,
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io("read checkpoint", e)),
        };
        let committed_seq = manifest.as_ref().map_or(0, |m| m.seq);
        for entry in fs::read_dir(&self.dir).map_err(|e| self.io("list dir", e))? {
            let path = entry.map_err(|e| self.io("list dir", e))?.path();
            let orphan = match part_seq(&path) {
                Some(seq) => seq > committed_seq,
                None => path.extension().is_some_and(|e| e == "tmp"),
            };
            if orphan {
                tracing::info!(file = %path.display(), "removing uncommitted file");
                fs::remove_file(&path).map_err(|e| self.io("remove orphan", e))?;
            }
        }
        self.seq = committed_seq;
        self.rows = manifest.as_ref().map_or(0, |m| m.rows);
        self.pending.clear();
        Ok(manifest.map(|m| m.checkpoint))
    }

    async fn write(&mut self, group: Group) -> Result<Option<Commit>> {
        if let Some(e) = self.injected_failure() {
            return Err(e);
        }
        self.pending.push((group.batch, group.checkpoint));
        if self.pending.len() >= self.commit_every {
            return self.commit_pending();
        }
        Ok(None)
    }

    async fn flush(&mut self) -> Result<Option<Commit>> {
        if !self.flush_delay.is_zero() && !self.pending.is_empty() {
            tokio::time::sleep(self.flush_delay).await;
        }
        self.commit_pending()
    }
}

fn part_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("part-")?
        .strip_suffix(".ndjson")?
        .parse()
        .ok()
}

/// The `id`s of every committed row in `dir`, in file order.
pub fn committed_ids(dir: &Path) -> std::io::Result<Vec<i64>> {
    let mut parts: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| part_seq(&p).map(|s| (s, p)))
        .collect();
    parts.sort();
    let mut ids = Vec::new();
    for (_, path) in parts {
        for line in fs::read_to_string(&path)?.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let id = v["id"].as_i64().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no id in {line}"))
            })?;
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The `id`s of every row committed by a `ParquetSink` at `url`, in commit order.
pub async fn committed_parquet_ids(url: &str) -> Result<Vec<i64>> {
    let batches = arcane_sinks::read_committed(url, &Default::default())
        .await
        .map_err(|e| Error::fatal(format!("cannot read {url}: {e}")))?;
    let mut ids = Vec::new();
    for b in batches {
        let col = b
            .column_by_name("id")
            .and_then(|c| c.as_any().downcast_ref::<arrow_array::Int64Array>())
            .ok_or_else(|| Error::fatal("committed Parquet files have no Int64 id column"))?;
        ids.extend(col.values().iter().copied());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arcane_core::testing::MemorySink;
    use serde_json::json;

    #[tokio::test]
    async fn dir_sink_commits_resumes_and_drops_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let spec: FixtureSpec = serde_json::from_value(json!({
            "dir": dir.path(), "totalRows": 120, "batchRows": 7, "pauseMs": 0, "groupRows": 25
        }))
        .unwrap();
        let ctx = StreamContext::new("s", "fixture", json!({})).with_backfill("b");
        let graph = FixtureBuilder.build(&ctx, spec.clone()).await.unwrap();
        let report = graph.run(&ctx).join().await;
        assert_eq!(report.outcome.unwrap(), arcane_core::Completion::Finished);
        assert_eq!(
            committed_ids(dir.path()).unwrap(),
            (0..120).collect::<Vec<_>>()
        );

        // An orphan part (written, checkpoint not) is removed on open; a rerun adds nothing.
        fs::write(dir.path().join("part-999999.ndjson"), "{\"id\":5}\n").unwrap();
        let graph = FixtureBuilder.build(&ctx, spec).await.unwrap();
        let report = graph.run(&ctx).join().await;
        assert_eq!(report.summary.rows_committed, 0);
        assert_eq!(
            committed_ids(dir.path()).unwrap(),
            (0..120).collect::<Vec<_>>()
        );
        let _ = MemorySink::new();
    }
}

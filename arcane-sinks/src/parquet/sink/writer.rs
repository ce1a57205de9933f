//! Open files: naming, the streaming Parquet writer over an upload, rolling, rejected rows.

#[allow(unused_imports)]
use super::*;

use std::sync::Arc;

use crate::parquet::config::Dictionary;
use crate::parquet::spill::{SpillError, SpillPages};

impl ParquetSink {
    /// The next file of this sequence: its relative path and its marker name.
    pub(super) fn file_path(&mut self, partition: &str) -> (String, String) {
        let n = self.files_in_seq;
        self.files_in_seq += 1;
        let name = format!(
            "part-{}-{:08}-{:04}.parquet",
            self.file_stem, self.next_seq, n
        );
        let mut rel = String::new();
        for part in [self.generation.as_str(), partition] {
            if !part.is_empty() {
                rel.push_str(part);
                rel.push('/');
            }
        }
        rel.push_str(&name);
        (rel, format!("{n:04}"))
    }

    /// Open a file of `partition` whose first rows are `first`.
    pub(super) async fn open_file(
        &mut self,
        partition: &str,
        first: &RecordBatch,
    ) -> Result<OpenFile> {
        let schema = first.schema();
        let props = match &self.props {
            Some(p) => p.clone(),
            None => {
                let p = self.config.writer_properties(&schema)?;
                if self.config.writer.dictionary == Dictionary::Auto {
                    // Kept once every string and binary column is decided; until then each
                    // file samples its first rows for the columns still open.
                    let decided = self.dictionary_auto.decide(first);
                    let p = self.dictionary_auto.apply(p);
                    if decided {
                        self.props = Some(p.clone());
                    }
                    p
                } else {
                    self.props = Some(p.clone());
                    p
                }
            }
        };
        let pool = self.encode_pool()?;
        let file_schema = self.file_schema(&schema)?;
        let (rel, marker_name) = self.file_path(partition);
        let (upload, marker) = upload::start(
            NewUpload {
                loc: &self.loc,
                rel: &rel,
                sequence: self.next_seq,
                meta: &self.meta,
                marker_name: &marker_name,
                marker_file: MarkerFile::Data(rel.clone()),
                part_size: self.config.writer.upload_part_size,
                concurrency: self.config.writer.upload_concurrency,
            },
            &self.sink_name(),
        )
        .await?;
        self.markers.extend(marker);
        let spill = self.spill_pages()?;
        let writer = EncodeWriter::try_new(upload, file_schema, props, pool, spill)
            .map_err(|e| self.parquet_err(format!("cannot create {rel}"), e))?;
        Ok(OpenFile {
            rel,
            partition: partition.to_string(),
            writer,
            rows: 0,
            opened_at: tokio::time::Instant::now(),
        })
    }

    /// The encoding threads, started with the first file.
    fn encode_pool(&mut self) -> Result<Arc<EncodePool>> {
        if let Some(pool) = &self.encode_pool {
            return Ok(pool.clone());
        }
        let threads = self.config.writer.encode_threads();
        let pool = Arc::new(EncodePool::new(threads).map_err(|e| {
            self.err(
                format!("cannot start {threads} encoding threads (sink.writer.encodeThreads): {e}"),
                Retry::Transient,
            )
        })?);
        self.encode_pool = Some(pool.clone());
        Ok(pool)
    }

    /// Where row groups keep their pages: a spill directory checked once (a directory that
    /// cannot take files is a configuration error), or the heap (`spillPages: false`).
    fn spill_pages(&mut self) -> Result<Option<SpillPages>> {
        let Some(dir) = self.config.writer.spill_directory() else {
            return Ok(None);
        };
        if let Some(spill) = &self.spill {
            return Ok(Some(spill.clone()));
        }
        let spill = SpillPages::new(dir.clone()).map_err(|e| {
            Error::config(
                "sink.writer.spillDirectory",
                format!(
                    "cannot create files in {} to keep the encoded pages of row groups in progress: {e}; point sink.writer.spillDirectory at a writable local directory (the Helm chart mounts an emptyDir on /tmp), or set sink.writer.spillPages: false to keep them in memory",
                    dir.display()
                ),
            )
        })?;
        tracing::info!(dir = %dir.display(), "row groups in progress keep their encoded pages in unnamed files in this directory (sink.writer.spillDirectory)");
        self.spill = Some(spill.clone());
        Ok(Some(spill))
    }

    /// Finish a file: every part uploaded (or the staging file written), not yet visible.
    pub(super) async fn close_file(&mut self, mut file: OpenFile) -> Result<()> {
        // Columns still being encoded: a failure there is the file's write failing (a
        // mistyped column), not its upload.
        file.writer
            .settle()
            .await
            .map_err(|e| self.parquet_err(format!("cannot write {}", file.rel), e))?;
        file.writer.finish().await.map_err(|e| {
            self.parquet_err(format!("cannot finish the upload of {}", file.rel), e)
        })?;
        let bytes = file.writer.bytes_written() as u64;
        let Some(upload) = file.writer.into_inner() else {
            return Err(self.parquet_err(
                format!("cannot finish the upload of {}", file.rel),
                parquet::errors::ParquetError::General(
                    "the file's last row group never gave its upload back".into(),
                ),
            ));
        };
        let completion = upload.completion();
        self.closed.push(FileEntry {
            path: file.rel,
            partition: file.partition,
            rows: file.rows,
            bytes,
            completion: Some(completion),
        });
        Ok(())
    }

    pub(super) async fn write_part(&mut self, key: String, part: RecordBatch) -> Result<()> {
        let max_rows = self.config.rolling.max_rows_per_file;
        let mut offset = 0;
        while offset < part.num_rows() {
            let file = match self.open_files.remove(&key) {
                Some(f) => f.into_inner(),
                None => {
                    self.open_file(&key, &part.slice(offset, part.num_rows() - offset))
                        .await?
                }
            };
            let mut file = file;
            let room = (max_rows - file.rows).min((part.num_rows() - offset) as u64) as usize;
            let slice = part.slice(offset, room);
            let write = file.writer.write(&slice).await;
            if let Err(e) = write {
                let err = self.parquet_err(format!("cannot write {}", file.rel), e);
                return Err(err);
            }
            file.rows += room as u64;
            offset += room;
            if file.writer.bytes_written() > self.config.writer.upload_part_size {
                self.failpoints.reach("mid-part").await;
            }
            if file.rows >= max_rows {
                self.close_file(file).await?;
            } else {
                self.open_files.insert(key.clone(), SyncCell::new(file));
            }
        }
        Ok(())
    }

    pub(super) fn size_of(file: &OpenFile) -> u64 {
        (file.writer.bytes_written() + file.writer.in_progress_size()) as u64
    }

    pub(super) fn roll_due(&self) -> bool {
        let r = &self.config.rolling;
        !self.closed.is_empty()
            || self.open_files.values().any(|f| {
                f.with(|f| Self::size_of(f) >= r.target_file_size || f.rows >= r.max_rows_per_file)
            })
    }

    pub(super) fn target_for(&mut self, batch: &RecordBatch) -> SchemaRef {
        if let Some(t) = &self.target {
            return t.clone();
        }
        let learned = schema::learn(&batch.schema());
        self.state.schema = Some(learned.as_ref().clone());
        self.target = Some(learned.clone());
        learned
    }

    /// The rows of `batch` that cannot be converted, as dead letters.
    pub(super) fn dead_letters_of(
        &self,
        batch: &RecordBatch,
        rows: &[(usize, String)],
        checkpoint: &Checkpoint,
    ) -> Vec<DeadLetter> {
        let mut out = Vec::with_capacity(rows.len());
        for (row, reason) in rows {
            let mut letter = DeadLetter::new(
                self.sink_name(),
                format!(
                    "row {row} of the group ending at {}",
                    checkpoint_text(checkpoint)
                ),
                reason.clone(),
            );
            if let Some(json) = row_json(batch, *row) {
                letter = letter.with_payload(json);
            }
            out.push(letter);
        }
        out
    }

    pub(super) fn parquet_err(&self, what: String, e: ParquetError) -> Error {
        // Store failures surface through the writer as `External` errors.
        match e {
            ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
                Ok(store) => store_error(&self.sink_name(), what, *store),
                Err(other) => {
                    // A failure to keep the row group's pages in the spill directory: a full
                    // or read-only volume needs someone; anything else may pass.
                    let (retry, hint) = match other.downcast_ref::<SpillError>() {
                        Some(spill) if spill.needs_someone() => (
                            Retry::Permanent,
                            "; free space on that volume or give it more (it needs rowGroupBytes per open file), point sink.writer.spillDirectory elsewhere, or set sink.writer.spillPages: false; everything committed is kept and the rerun resumes from the last commit",
                        ),
                        Some(_) => (
                            Retry::Transient,
                            "; the stream will restart and resume from the last commit",
                        ),
                        None => (Retry::Transient, ""),
                    };
                    Error::sink(
                        self.sink_name(),
                        format!("{what}: {}{hint}", arcane_core::error::Report(&*other)),
                        retry,
                        Some(other),
                    )
                }
            },
            other => Error::sink(
                self.sink_name(),
                format!("{what}: {other}"),
                Retry::Permanent,
                Some(Box::new(other)),
            ),
        }
    }

    pub(super) fn set_files_open_gauge(&self) {
        metrics::gauge!(m::FILES_OPEN, self.labels.clone()).set(self.open_files.len() as f64);
    }

    /// Split the conformed rows by partition and set aside every row that cannot be written
    /// (conversion or partition failures) as dead letters of this group: refused when dead
    /// letters are disabled or over the budget (after committing what came before).
    pub(super) async fn split_and_reject(
        &mut self,
        batch: &RecordBatch,
        conformed: schema::Conformed,
        checkpoint: &Checkpoint,
    ) -> Result<partition::Split> {
        let mut rejected = conformed.rejected;
        let split = partition::split(&conformed.batch, &self.config.partition_by).map_err(|m| {
            Error::config(
                "sink.partitionBy",
                format!("{m}; partition by columns of the sink schema"),
            )
        })?;
        if !split.rejected.is_empty() {
            // Indices of `split` refer to the conformed batch; map them back.
            let kept: Vec<usize> = (0..batch.num_rows())
                .filter(|i| !rejected.iter().any(|(r, _)| r == i))
                .collect();
            rejected.extend(split.rejected.iter().map(|(i, r)| (kept[*i], r.clone())));
        }
        if rejected.is_empty() {
            return Ok(split);
        }
        if !self.config.dead_letter.enabled {
            self.commit_all().await?;
            let (row, reason) = &rejected[0];
            return Err(self.err(
                format!("{} rows cannot be converted (row {row}: {reason}); enable sink.deadLetter to keep them aside, or fix the source", rejected.len()),
                Retry::Permanent,
            ));
        }
        let letters = self.dead_letters_of(batch, &rejected, checkpoint);
        if let Err(over_budget) = self.dead_letters.add_rejected(&letters) {
            // Commit what came before; this group is refused.
            self.commit_all().await?;
            return Err(over_budget);
        }
        self.pending_letters.extend(letters);
        Ok(split)
    }

    /// Whether writing `parts` would push an open file past the target size by more than
    /// committing it first leaves it under: then roll before writing.
    pub(super) fn pre_roll_due(&self, parts: &[(String, RecordBatch)]) -> bool {
        let r = &self.config.rolling;
        parts.iter().any(|(key, part)| {
            self.open_files.get(key).is_some_and(|f| {
                f.with(|f| {
                    let size = Self::size_of(f);
                    let per_row = size as f64 / f.rows.max(1) as f64;
                    let projected = size + (per_row * part.num_rows() as f64) as u64;
                    f.rows > 0
                        && projected > r.target_file_size
                        && projected - r.target_file_size
                            > r.target_file_size - size.min(r.target_file_size)
                })
            })
        })
    }
}

pub(super) fn row_json(batch: &RecordBatch, row: usize) -> Option<String> {
    let mut buf = Vec::new();
    let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
    w.write(&batch.slice(row, 1)).ok()?;
    w.finish().ok()?;
    String::from_utf8(buf)
        .ok()
        .map(|s| s.trim_end().to_string())
}

pub(super) fn checkpoint_text(c: &Checkpoint) -> String {
    serde_json::to_string(c).unwrap_or_else(|_| format!("{c:?}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use arcane_core::Position;
    use arcane_core::testing::GeneratorSource;
    use arrow_array::{ArrayRef, Int64Array};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    /// A batch whose column the open file has with another type fails the sink with an error
    /// naming the file and the column — the write itself or, as the columns are encoded in
    /// the background, at the latest the commit after it — whatever the number of encoding
    /// threads, and does not hang.
    #[tokio::test]
    async fn an_encoding_error_names_the_file() {
        for threads in [1, 4] {
            let config: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
                "url": "memory:///orders",
                "writer": { "encodeThreads": threads },
            }))
            .expect("config");
            let mut sink = ParquetSink::new(config).expect("sink");
            let ctx = SinkContext {
                stream_id: "orders".into(),
                ..SinkContext::default()
            };
            sink.open(&ctx).await.expect("open");
            let good = GeneratorSource::batch(0, 100);
            let checkpoint = Checkpoint::at(Position(serde_json::json!({ "rows": 100 })));
            sink.write(Group::new(good.clone(), checkpoint))
                .await
                .expect("write");
            let key = sink
                .open_files
                .keys()
                .next()
                .cloned()
                .expect("an open file");
            // `key` is Utf8 in the file.
            let mut fields: Vec<Field> = good
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields[1] = Field::new("key", DataType::Int64, false);
            let mut columns = good.columns().to_vec();
            columns[1] = Arc::new(Int64Array::from_iter_values(0..100)) as ArrayRef;
            let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("bad");
            let e = tokio::time::timeout(Duration::from_secs(60), async {
                sink.write_part(key, bad).await?;
                sink.flush().await.map(|_| ())
            })
            .await
            .expect("no hang")
            .expect_err("a mistyped column");
            let text = e.to_string();
            assert!(
                text.contains("cannot write part-orders-00000000-0000.parquet"),
                "{threads} threads: {text}"
            );
            assert!(text.contains("column key"), "{threads} threads: {text}");
            assert!(
                matches!(
                    e,
                    Error::Sink {
                        retry: Retry::Permanent,
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    }
}

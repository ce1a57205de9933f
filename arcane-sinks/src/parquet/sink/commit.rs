//! The commit: close the open files, write the dead letters and the manifest, make the files visible.

#[allow(unused_imports)]
use super::*;

impl ParquetSink {
    /// Close every open file and commit them with the last checkpoint in one manifest entry:
    /// upload everything, write the manifest (the commit point), then make the files visible
    /// and delete their upload markers.
    pub(super) async fn commit_all(&mut self) -> Result<Option<Commit>> {
        self.finish_unfinished().await?;
        if !self.dirty
            && self.open_files.is_empty()
            && self.closed.is_empty()
            && self.pending_letters.is_empty()
        {
            return Ok(None);
        }
        let started = Instant::now();
        let files = std::mem::take(&mut self.open_files);
        for (_, file) in files {
            self.close_file(file.into_inner()).await?;
        }
        self.set_files_open_gauge();
        let dead_letter_completion = self.write_pending_letters().await?;
        self.failpoints.reach("after-upload-before-manifest").await;
        let checkpoint = self.last_checkpoint.clone();
        let mut state = self.state.clone();
        match (&mut state.backfill, self.backfilling) {
            (Some(b), true) => b.checkpoint = checkpoint.clone(),
            _ => state.stream_checkpoint = checkpoint.clone(),
        }
        let files = std::mem::take(&mut self.closed);
        let rows = files.iter().map(|f| f.rows).sum();
        let bytes = files.iter().map(|f| f.bytes).sum();
        let dead_letters = if dead_letter_completion.is_some() {
            self.pending_letters.len() as u64
        } else {
            0
        };
        let entry = Manifest {
            version: MANIFEST_VERSION,
            sequence: self.next_seq,
            stream_id: self.stream_id.clone(),
            committed_at: chrono::Utc::now().to_rfc3339(),
            action: Action::Commit,
            generation: self.generation.clone(),
            files,
            rows,
            bytes,
            checkpoint: checkpoint.clone(),
            dead_letters,
            dead_letter_files: dead_letter_completion
                .iter()
                .map(|d| d.url.clone())
                .collect(),
            dead_letter_completions: dead_letter_completion.into_iter().collect(),
            state,
        };
        self.check_table_schema(&entry.state)?;
        self.write_manifest(&entry).await?;
        // Committed: whatever happens next, the state moves on; the files of this entry are
        // made visible now or, if that fails, before any later manifest (or by recovery).
        self.pending_letters.clear();
        self.state = entry.state.clone();
        self.next_seq += 1;
        self.files_in_seq = 0;
        self.dirty = false;
        self.dirty_since = None;
        let markers = std::mem::take(&mut self.markers);
        self.failpoints.reach("after-manifest").await;
        if let Err(e) = self.finish_commit(&entry, markers.clone()).await {
            self.unfinished = Some((entry, markers));
            return Err(e);
        }
        self.publish_table(Some(&entry)).await?;
        metrics::histogram!(m::BATCH_COMMIT_DURATION, self.labels.clone())
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(
            sequence = entry.sequence,
            files = entry.files.len(),
            rows,
            dead_letters,
            "committed"
        );
        Ok(Some(Commit {
            checkpoint: checkpoint.unwrap_or_default(),
            rows,
            bytes,
            files: entry
                .files
                .iter()
                .map(|f| format!("{}/{}", self.loc.display.trim_end_matches('/'), f.path))
                .collect(),
            dead_letters,
        }))
    }

    /// Make every file of the written manifest `entry` visible, then delete its upload
    /// `markers` and local staging directory. Harmless to repeat.
    pub(super) async fn finish_commit(&self, entry: &Manifest, markers: Vec<Path>) -> Result<()> {
        let name = self.sink_name();
        let mut jobs = Vec::new();
        for f in &entry.files {
            if let Some(c) = &f.completion {
                jobs.push((
                    self.loc.clone(),
                    self.loc.child(&f.path),
                    c.clone(),
                    f.bytes,
                ));
            }
        }
        for d in &entry.dead_letter_completions {
            let (loc, path) = self.locate_dead_letter(&d.url)?;
            jobs.push((loc, path, d.completion.clone(), d.bytes));
        }
        futures::stream::iter(jobs)
            .map(|(loc, path, completion, bytes)| {
                let name = name.clone();
                async move { upload::complete(&loc, &path, &completion, bytes, &name).await }
            })
            .buffer_unordered(REQUEST_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        self.failpoints.reach("after-completion").await;
        upload::delete_all(&self.meta, markers, &name, &self.config.retry).await?;
        if self.sharded {
            // The staging directory of a sequence is shared by the shards: leave it.
            return Ok(());
        }
        upload::remove_local_staging_dir(&self.loc, entry.sequence);
        if !entry.dead_letter_completions.is_empty() {
            upload::remove_local_staging_dir(&self.dl_loc, entry.sequence);
        }
        Ok(())
    }

    /// Finish a commit whose completion failed earlier in this run, before anything else is
    /// committed: recovery only rolls the newest manifest forward.
    pub(super) async fn finish_unfinished(&mut self) -> Result<()> {
        if let Some((entry, markers)) = self.unfinished.take()
            && let Err(e) = self.finish_commit(&entry, markers.clone()).await
        {
            self.unfinished = Some((entry, markers));
            return Err(e);
        }
        Ok(())
    }

    /// The location and path of the dead-letter file `url` (a URL recorded by a manifest or
    /// an upload marker).
    pub(super) fn locate_dead_letter(&self, url: &str) -> Result<(Location, Path)> {
        let base = format!("{}/", self.dl_loc.display.trim_end_matches('/'));
        if let Some(rel) = url.strip_prefix(&base) {
            return Ok((self.dl_loc.clone(), self.dl_loc.child(rel)));
        }
        // Written with another sink.deadLetter.url than the one configured now.
        let (dir, file) = url.rsplit_once('/').ok_or_else(|| {
            self.err(
                format!("dead-letter file URL {url:?} in a manifest is not a URL; the manifest was edited by hand"),
                Retry::Permanent,
            )
        })?;
        let loc = open_location_retrying(
            dir,
            &self.config.storage_options,
            "sink.deadLetter.url",
            &self.config.retry,
        )?;
        let path = loc.child(file);
        Ok((loc, path))
    }

    /// Upload the pending dead letters as one file of this sequence (invisible until the
    /// manifest commits it, like the data files).
    pub(super) async fn write_pending_letters(&mut self) -> Result<Option<DeadLetterCompletion>> {
        if self.pending_letters.is_empty() {
            return Ok(None);
        }
        let name = self.sink_name();
        let buf = encode_dead_letters(&self.stream_id, &self.pending_letters, &name)?;
        let file = format!(
            "part-{}-{:08}-dead-letters.parquet",
            self.file_stem, self.next_seq
        );
        let url = format!("{}/{file}", self.dl_loc.display.trim_end_matches('/'));
        let marker_name = format!("{:04}", self.files_in_seq);
        self.files_in_seq += 1;
        let (mut up, marker) = upload::start(
            NewUpload {
                loc: &self.dl_loc,
                rel: &file,
                sequence: self.next_seq,
                meta: &self.meta,
                marker_name: &marker_name,
                marker_file: MarkerFile::DeadLetter(url.clone()),
                part_size: self.config.writer.upload_part_size,
                concurrency: self.config.writer.upload_concurrency,
            },
            &name,
        )
        .await?;
        self.markers.extend(marker);
        let bytes = buf.len() as u64;
        let written = match up.write(buf).await {
            Ok(()) => up.complete().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| self.parquet_err(format!("cannot write dead letters to {url}"), e))?;
        Ok(Some(DeadLetterCompletion {
            url,
            bytes,
            completion: up.completion(),
        }))
    }

    /// Write a manifest entry that only changes the state.
    pub(super) async fn write_state(&mut self, action: Action, state: State) -> Result<()> {
        self.finish_unfinished().await?;
        let entry = Manifest {
            version: MANIFEST_VERSION,
            sequence: self.next_seq,
            stream_id: self.stream_id.clone(),
            committed_at: chrono::Utc::now().to_rfc3339(),
            action,
            generation: self.generation.clone(),
            files: Vec::new(),
            rows: 0,
            bytes: 0,
            checkpoint: self.last_checkpoint.clone(),
            dead_letters: 0,
            dead_letter_files: Vec::new(),
            dead_letter_completions: Vec::new(),
            state,
        };
        self.write_manifest(&entry).await?;
        self.state = entry.state.clone();
        self.next_seq += 1;
        self.files_in_seq = 0;
        self.publish_table(Some(&entry)).await
    }
}

pub(super) fn merge(a: Option<Commit>, b: Option<Commit>) -> Option<Commit> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            a.checkpoint = b.checkpoint;
            a.rows += b.rows;
            a.bytes += b.bytes;
            a.files.extend(b.files);
            a.dead_letters += b.dead_letters;
            Some(a)
        }
        (a, b) => b.or(a),
    }
}

//! Recovery on open: complete what the newest manifest committed, abort or delete the rest.

#[allow(unused_imports)]
use super::*;

impl ParquetSink {
    /// Recovery: make the files of the newest manifest visible where that was interrupted
    /// (roll forward), abort the multipart uploads and delete the staging files no manifest
    /// commits. Returns how many uploads and staging files were discarded.
    pub(super) async fn recover(&self, latest: Option<&Manifest>) -> Result<usize> {
        let name = self.sink_name();
        // Multipart uploads, by their markers.
        let markers = upload::list_markers(&self.meta, &name).await?;
        let (mut completed, mut aborted) = (0usize, 0usize);
        let mut done = Vec::with_capacity(markers.len());
        for (marker_path, marker) in markers {
            let covering = match latest {
                Some(m) if m.sequence == marker.sequence => Some(m.clone()),
                Some(m) if marker.sequence < m.sequence => {
                    manifest::read_if_exists(&self.meta, &name, marker.sequence).await?
                }
                _ => None,
            };
            let (loc, path) = match (&marker.path, &marker.dead_letter_file) {
                (Some(p), _) => (self.loc.clone(), self.loc.child(p)),
                (None, Some(url)) => self.locate_dead_letter(url)?,
                (None, None) => {
                    return Err(self.err(
                        format!("upload marker {marker_path} names no file; it was edited by hand; delete it once no run of the stream is active"),
                        Retry::Permanent,
                    ));
                }
            };
            match covering.as_ref().and_then(|m| committed_upload(m, &marker)) {
                Some((completion, bytes)) => {
                    upload::complete(&loc, &path, &completion, bytes, &name).await?;
                    completed += 1;
                }
                None => {
                    upload::abort(&loc, &path, &marker.upload_id, &name).await?;
                    aborted += 1;
                }
            }
            done.push(marker_path);
        }
        upload::delete_all(&self.meta, done, &name, &self.config.retry).await?;
        if completed > 0 {
            tracing::info!(
                files = completed,
                "completed the uploads of the last commit, interrupted after its manifest"
            );
        }
        if aborted > 0 {
            tracing::info!("aborted {aborted} incomplete uploads left by an interrupted run");
        }
        // Local staging files: rename those the newest manifest commits, delete the rest.
        let mut staged = self.own_staging(upload::list_staging(&self.loc, &name).await?);
        let dl_separate = self.dl_loc.display != self.loc.display;
        let mut dl_staged = if dl_separate {
            self.own_staging(upload::list_staging(&self.dl_loc, &name).await?)
        } else {
            Vec::new()
        };
        let mut renamed = 0usize;
        if let Some(m) = latest {
            let mut jobs = Vec::new();
            for f in &m.files {
                if let Some(c @ Completion::Rename { from }) = &f.completion
                    && take(&mut staged, &self.loc.child(from))
                {
                    jobs.push((
                        self.loc.clone(),
                        self.loc.child(&f.path),
                        c.clone(),
                        f.bytes,
                    ));
                }
            }
            for d in &m.dead_letter_completions {
                if let c @ Completion::Rename { from } = &d.completion {
                    let (loc, path) = self.locate_dead_letter(&d.url)?;
                    let pending = if loc.display == self.loc.display {
                        take(&mut staged, &loc.child(from))
                    } else if loc.display == self.dl_loc.display {
                        take(&mut dl_staged, &loc.child(from))
                    } else {
                        // Written with another sink.deadLetter.url than the one configured now.
                        self.staged(&loc, from).await?
                    };
                    if pending {
                        jobs.push((loc, path, c.clone(), d.bytes));
                    }
                }
            }
            renamed = jobs.len();
            for (loc, path, c, bytes) in jobs {
                upload::complete(&loc, &path, &c, bytes, &name).await?;
            }
        }
        if renamed > 0 {
            tracing::info!(
                files = renamed,
                "moved the files of the last commit into place, interrupted after its manifest"
            );
        }
        let discarded = staged.len() + dl_staged.len();
        if self.sharded {
            // Other shards stage files in the same directories: delete only this shard's.
            upload::delete_all(&self.loc, staged, &name, &self.config.retry).await?;
            upload::delete_all(&self.dl_loc, dl_staged, &name, &self.config.retry).await?;
        } else {
            upload::remove_staging(&self.loc, staged, &name, &self.config.retry).await?;
            if dl_separate {
                upload::remove_staging(&self.dl_loc, dl_staged, &name, &self.config.retry).await?;
            }
        }
        if discarded > 0 {
            tracing::info!(
                "deleted {discarded} uncommitted staging files left by an interrupted run"
            );
        }
        Ok(aborted + discarded)
    }

    /// The staging files of this writer among `listed`: all of them, or for a shard of a
    /// sharded backfill only its own (named `part-{stem}-…`, the stem carrying the shard).
    pub(super) fn own_staging(&self, listed: Vec<Path>) -> Vec<Path> {
        if !self.sharded {
            return listed;
        }
        let stem = format!("part-{}-", self.file_stem);
        listed
            .into_iter()
            .filter(|p| p.filename().is_some_and(|f| f.starts_with(&stem)))
            .collect()
    }

    /// Whether the staging file `from` of `loc` exists.
    pub(super) async fn staged(&self, loc: &Location, from: &str) -> Result<bool> {
        match loc.store.head(&loc.child(from)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_error(
                &self.sink_name(),
                format!("cannot check staging file {}", loc.url_of(&loc.child(from))),
                e,
            )),
        }
    }

    /// Delete data and dead-letter files of sequences that never got a manifest (left by a
    /// crash of a version before manifest format 3, which completed files before writing their
    /// manifest), and on a local file system the partial files of uploads that never
    /// completed.
    pub(super) async fn remove_uncommitted(&self) -> Result<usize> {
        let mut removed = self.remove_uncommitted_in(&self.loc).await?;
        let dl_inside = self
            .dl_loc
            .display
            .starts_with(self.loc.display.trim_end_matches('/'));
        if !dl_inside {
            removed += self.remove_uncommitted_in(&self.dl_loc).await?;
        }
        Ok(removed)
    }

    pub(super) async fn remove_uncommitted_in(&self, loc: &Location) -> Result<usize> {
        let name = self.sink_name();
        let metas: Vec<_> = loc
            .store
            .list(Some(&loc.prefix))
            .try_collect()
            .await
            .map_err(|e| store_error(&name, format!("cannot list {}", loc.display), e))?;
        let stem = format!("part-{}-", self.file_stem);
        let mut removed = 0;
        for meta in metas {
            let rel = loc.relative(&meta.location);
            if rel.starts_with(manifest::META_DIR) {
                continue;
            }
            let Some(file) = meta.location.filename() else {
                continue;
            };
            let Some(seq) = file
                .strip_prefix(&stem)
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if seq >= self.next_seq {
                tracing::info!(file = %meta.location, "deleting uncommitted file left by an interrupted run");
                loc.store.delete(&meta.location).await.map_err(|e| {
                    store_error(
                        &name,
                        format!("cannot delete uncommitted {}", meta.location),
                        e,
                    )
                })?;
                removed += 1;
            }
        }
        if let Some(root) = &loc.local_root {
            removed += remove_local_staging(root, &stem);
        }
        Ok(removed)
    }
}

/// Remove `path` from `listed`; whether it was there.
fn take(listed: &mut Vec<Path>, path: &Path) -> bool {
    match listed.iter().position(|p| p == path) {
        Some(i) => {
            listed.swap_remove(i);
            true
        }
        None => false,
    }
}

/// The completion and size of the upload `marker` records, if the manifest `m` commits it.
fn committed_upload(m: &Manifest, marker: &upload::UploadMarker) -> Option<(Completion, u64)> {
    let same = |c: &Completion| matches!(c, Completion::Multipart { upload_id, .. } if *upload_id == marker.upload_id);
    if let Some(p) = &marker.path {
        return m
            .files
            .iter()
            .find(|f| &f.path == p && f.completion.as_ref().is_some_and(same))
            .and_then(|f| f.completion.clone().map(|c| (c, f.bytes)));
    }
    let url = marker.dead_letter_file.as_ref()?;
    m.dead_letter_completions
        .iter()
        .find(|d| &d.url == url && same(&d.completion))
        .map(|d| (d.completion.clone(), d.bytes))
}

/// Remove `part-{stem}*.parquet#N` staging files of local uploads that never completed.
fn remove_local_staging(root: &std::path::Path, stem: &str) -> usize {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((file, suffix)) = name.split_once('#')
                && file.starts_with(stem)
                && suffix.bytes().all(|b| b.is_ascii_digit())
                && std::fs::remove_file(&path).is_ok()
            {
                tracing::info!(file = %path.display(), "deleted staging file of an upload that never completed");
                removed += 1;
            }
        }
    }
    removed
}

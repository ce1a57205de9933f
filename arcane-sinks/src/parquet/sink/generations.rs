//! Backfill generations: which one a backfill writes, completing it, expired ones deleted,
//! an empty overwrite refused.

#[allow(unused_imports)]
use super::*;

impl ParquetSink {
    /// Delete generations whose retention expired, then record it.
    pub(super) async fn remove_expired_generations(&mut self) -> Result<()> {
        let now = unix_now();
        let retention = self.config.generation_retention.as_secs();
        let (expired, kept): (Vec<_>, Vec<_>) = self
            .state
            .retired
            .iter()
            .cloned()
            .partition(|r| r.retired_at.saturating_add(retention) <= now);
        if expired.is_empty() {
            return Ok(());
        }
        let name = self.sink_name();
        let manifests = manifest::all(&self.loc, &name).await?;
        for r in &expired {
            let mut paths: Vec<Path> = manifest::files_of(&manifests, &r.generation)
                .map(|f| self.loc.child(&f.path))
                .collect();
            if r.generation.starts_with(GENERATIONS_DIR) {
                let dir = self.loc.child(&r.generation);
                let listed: Vec<_> = self
                    .loc
                    .store
                    .list(Some(&dir))
                    .try_collect()
                    .await
                    .map_err(|e| store_error(&name, format!("cannot list {dir}"), e))?;
                paths.extend(listed.into_iter().map(|m| m.location));
            }
            paths.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
            paths.dedup();
            tracing::info!(generation = %r.generation, files = paths.len(), "deleting expired generation");
            for p in paths {
                match self.loc.store.delete(&p).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store_error(&name, format!("cannot delete {p}"), e)),
                }
            }
        }
        let mut state = self.state.clone();
        state.retired = kept;
        self.write_state(Action::Cleanup, state).await
    }

    /// An `overwrite` backfill whose generation holds no rows must not replace the current
    /// data (unless `allowEmptyOverwrite`).
    pub(super) async fn refuse_empty_overwrite(&self) -> Result<()> {
        let Some(b) = self.state.backfill.as_ref().filter(|b| !b.completed) else {
            return Ok(());
        };
        if b.behavior != BackfillBehavior::Overwrite || self.config.allow_empty_overwrite {
            return Ok(());
        }
        let manifests = manifest::all(&self.loc, &self.sink_name()).await?;
        let rows: u64 = manifest::files_of(&manifests, &b.generation)
            .map(|f| f.rows)
            .sum();
        if rows > 0 {
            return Ok(());
        }
        Err(Error::EmptyOverwrite {
            backfill_id: b.id.clone(),
            source_name: if self.source_name.is_empty() {
                "the source".into()
            } else {
                self.source_name.clone()
            },
            sink_name: self.sink_name(),
        })
    }

    /// Backfill mode: resume this backfill id, start it (in the current generation for
    /// `merge`, a new one for `overwrite`), or notice that it already completed.
    pub(super) fn select_backfill(&mut self, ctx: &SinkContext) -> Option<Checkpoint> {
        self.backfilling = true;
        self.already_completed = false;
        let id = ctx.backfill_id.clone().unwrap_or_else(|| "unnamed".into());
        let completed_before = ctx.backfill_id.is_some()
            && (self.state.completed_backfills.contains(&id)
                || self
                    .state
                    .backfill
                    .as_ref()
                    .is_some_and(|b| b.id == id && b.completed));
        match self.state.backfill.clone() {
            // A rerun of a finished backfill (a pod restarted after the backfill
            // completed, before it could exit): running it again would append the
            // history twice (merge) or rewrite it (overwrite).
            _ if completed_before => {
                tracing::info!(backfill_id = %id, generation = %self.state.current_generation, "this backfill already completed; nothing to do");
                self.already_completed = true;
                self.backfilling = false;
                self.generation = self.state.current_generation.clone();
                None
            }
            Some(b) if b.id == id && !b.completed => {
                tracing::info!(backfill_id = %id, generation = %b.generation, "resuming backfill");
                self.generation = b.generation.clone();
                b.checkpoint
            }
            previous => {
                if let Some(p) = previous
                    .filter(|p| !p.completed && p.generation != self.state.current_generation)
                {
                    // An abandoned overwrite generation: never became current, delete it.
                    self.state.retired.push(RetiredGeneration {
                        generation: p.generation,
                        retired_at: 0,
                    });
                }
                let generation = match self.config.backfill_behavior {
                    BackfillBehavior::Merge => self.state.current_generation.clone(),
                    BackfillBehavior::Overwrite => {
                        format!("{GENERATIONS_DIR}/{}-{:08}", sanitize(&id), self.next_seq)
                    }
                };
                tracing::info!(backfill_id = %id, generation = %generation, "starting backfill");
                self.generation = generation.clone();
                self.state.backfill = Some(BackfillState {
                    id,
                    behavior: self.config.backfill_behavior,
                    generation,
                    checkpoint: None,
                    completed: false,
                });
                None
            }
        }
    }

    /// Record the running backfill complete; for `overwrite`, make its generation current
    /// (atomically, in one manifest entry) and retire the previous one.
    pub(super) async fn complete_backfill(&mut self) -> Result<()> {
        let mut state = self.state.clone();
        if let Some(b) = state.backfill.as_mut().filter(|b| !b.completed) {
            b.completed = true;
            state.stream_checkpoint = b.checkpoint.clone();
            let id = b.id.clone();
            if !state.completed_backfills.contains(&id) {
                state.completed_backfills.push(id);
                let over = state
                    .completed_backfills
                    .len()
                    .saturating_sub(manifest::COMPLETED_BACKFILLS_KEPT);
                state.completed_backfills.drain(..over);
            }
            if b.behavior == BackfillBehavior::Overwrite && b.generation != state.current_generation
            {
                let old = std::mem::replace(&mut state.current_generation, b.generation.clone());
                state.retired.push(RetiredGeneration {
                    generation: old,
                    retired_at: unix_now(),
                });
            }
            tracing::info!(backfill_id = %b.id, generation = %state.current_generation, "backfill complete");
            self.write_state(Action::CompleteBackfill, state).await?;
            self.backfilling = false;
        }
        Ok(())
    }
}

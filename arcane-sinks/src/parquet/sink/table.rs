//! The table format kept over the files (`sink.tableFormat`): opening the Delta log or the
//! Iceberg table and publishing committed manifests to it (see `crate::delta` with the
//! `delta` feature, `crate::iceberg` with the `iceberg` feature).

#[allow(unused_imports)]
use super::*;

impl ParquetSink {
    /// Refuse a table that records a manifest of this stream at or after this start's claim
    /// (the newest manifest): it holds commits the sink's manifests no longer have, whose rows
    /// would be `again` (appended, written) to the table a second time. `record` says what
    /// records them, `new_table` the settings that give the stream another table.
    #[cfg(any(feature = "delta", feature = "iceberg"))]
    fn refuse_table_ahead(
        &self,
        published: Option<u64>,
        record: &str,
        again: &str,
        new_table: &str,
    ) -> Result<()> {
        let claimed = self.next_seq.checked_sub(1);
        if let (Some(published), Some(claimed)) = (published, claimed)
            && published >= claimed
        {
            return Err(Error::sink(
                self.sink_name(),
                format!(
                    "the {record} this stream's manifest {published} as published, but the sink's manifests end before {claimed} (this start's claim): they were removed or reset, and the rows they committed would be {again} to the table again; restore them, or give the stream a new table ({new_table}) and backfill"
                ),
                Retry::Permanent,
                None,
            ));
        }
        Ok(())
    }

    /// A manifest missing from the range a table format (`format`) publishes, the sink having
    /// committed up to `last`.
    #[cfg(any(feature = "delta", feature = "iceberg"))]
    fn missing_manifest(&self, seq: u64, last: u64, format: &str) -> Error {
        Error::sink(
            self.sink_name(),
            format!(
                "manifest {seq} is missing although the sink committed up to {last}, so its files cannot be published to the {format} table; restore it (manifests are never deleted by the sink)"
            ),
            Retry::Permanent,
            None,
        )
    }

    /// The generation current before manifest `from`: `known` when the table format kept it,
    /// else read from manifest `from - 1` (none before the first).
    #[cfg(any(feature = "delta", feature = "iceberg"))]
    async fn generation_before(
        &self,
        from: u64,
        known: Option<String>,
        last: u64,
        format: &str,
    ) -> Result<String> {
        match known {
            Some(g) => Ok(g),
            None if from == 0 => Ok(String::new()),
            None => Ok(
                manifest::read_if_exists(&self.loc, &self.sink_name(), from - 1)
                    .await?
                    .ok_or_else(|| self.missing_manifest(from - 1, last, format))?
                    .state
                    .current_generation,
            ),
        }
    }

    /// Another process wrote the manifest this run was about to write (the manifests of a
    /// table-format sink are written put-if-absent).
    pub(super) fn concurrent_stream_writer(&self, sequence: u64) -> Error {
        self.err(
            format!(
                "manifest {sequence} under {} was written by another process: another runner of stream {:?} is writing the same sink at once; this one stops without committing (the table stays consistent, and what it uploaded is discarded by the next start); run one runner per stream",
                self.meta.display, self.stream_id
            ),
            Retry::Transient,
        )
    }

    /// With a table format, claim the next sequence before recovery deletes anything (as a
    /// shard does): a second runner of the stream that is still writing can then never commit
    /// what this one's recovery discards; it fails at its next commit. Returns the newest
    /// manifest that commits files (recovery rolls it forward): `latest`, or without a table
    /// format always `latest`.
    pub(super) async fn claim(&mut self, latest: Option<&Manifest>) -> Result<Option<Manifest>> {
        if self.config.table_format.is_none() {
            return Ok(latest.cloned());
        }
        let claim = Manifest {
            version: MANIFEST_VERSION,
            sequence: self.next_seq,
            stream_id: self.stream_id.clone(),
            committed_at: chrono::Utc::now().to_rfc3339(),
            action: Action::Commit,
            generation: self.state.current_generation.clone(),
            files: Vec::new(),
            rows: 0,
            bytes: 0,
            checkpoint: latest.and_then(|m| m.checkpoint.clone()),
            dead_letters: 0,
            dead_letter_files: Vec::new(),
            dead_letter_completions: Vec::new(),
            state: self.state.clone(),
        };
        self.write_manifest(&claim).await?;
        self.next_seq += 1;
        // Claims of earlier starts (killed before their recovery finished) commit nothing.
        let name = self.sink_name();
        let mut committing = latest.cloned();
        while let Some(m) = &committing {
            if !m.files.is_empty() || !m.dead_letter_completions.is_empty() || m.sequence == 0 {
                break;
            }
            committing = manifest::read_if_exists(&self.meta, &name, m.sequence - 1).await?;
        }
        Ok(committing)
    }

    /// A shard of a sharded backfill into an Iceberg table: open the table (creating it when
    /// the schema is known) so that the shard's files carry the table's field ids. Nothing is
    /// published: the shard that completes the backfill does that ([`Self::publish_completion`]).
    pub(super) async fn open_table_for_shard(&mut self) -> Result<()> {
        #[cfg(feature = "iceberg")]
        if let Some(crate::parquet::config::TableFormat::Iceberg(config)) =
            &self.config.table_format
        {
            let mut table = crate::iceberg::IcebergTable::open(
                self.loc.clone(),
                config.clone(),
                self.sink_name(),
                self.stream_id.clone(),
                self.config.retry,
                self.config.partition_by.columns.clone(),
            )
            .await?;
            if let Some(s) = self
                .state
                .schema
                .clone()
                .or(self.target.as_deref().cloned())
            {
                table.ensure_table(&s).await?;
            }
            self.iceberg = Some(table);
            self.check_table_schema(&self.state)?;
        }
        Ok(())
    }

    /// The stream's manifest `entry` completing a sharded backfill was written by this shard:
    /// publish it (and any stream manifest before it the table lacks) to the Iceberg table.
    pub(super) async fn publish_completion(&mut self, entry: &Manifest) -> Result<()> {
        #[cfg(feature = "iceberg")]
        if let Some(mut table) = self.iceberg.take() {
            self.failpoints.reach("before-table-commit").await;
            let current = entry.state.current_generation.clone();
            let result = self
                .publish_iceberg_upto(&mut table, Some(entry), entry.sequence, &current)
                .await;
            self.iceberg = Some(table);
            return result;
        }
        let _ = entry;
        Ok(())
    }

    /// `schema` as the Parquet files are written: for an Iceberg table with the table's field
    /// ids (`PARQUET:field_id`), else as it is.
    pub(super) fn file_schema(&self, schema: &SchemaRef) -> Result<SchemaRef> {
        #[cfg(feature = "iceberg")]
        {
            if let Some(t) = &self.iceberg {
                return t
                    .file_schema(schema)
                    .map(std::sync::Arc::new)
                    .map_err(|message| Error::config("sink.tableFormat.iceberg", message));
            }
        }
        Ok(schema.clone())
    }

    /// Open the table format's log (after recovery) and publish the manifests it lacks, in
    /// order, before anything new is written.
    pub(super) async fn open_table(&mut self) -> Result<()> {
        match &self.config.table_format {
            #[cfg(feature = "delta")]
            Some(crate::parquet::config::TableFormat::Delta(_)) => self.open_delta().await,
            #[cfg(feature = "iceberg")]
            Some(crate::parquet::config::TableFormat::Iceberg(_)) => self.open_iceberg().await,
            _ => Ok(()),
        }
    }

    #[cfg(feature = "iceberg")]
    async fn open_iceberg(&mut self) -> Result<()> {
        let Some(crate::parquet::config::TableFormat::Iceberg(config)) = &self.config.table_format
        else {
            return Ok(());
        };
        let mut table = crate::iceberg::IcebergTable::open(
            self.loc.clone(),
            config.clone(),
            self.sink_name(),
            self.stream_id.clone(),
            self.config.retry,
            self.config.partition_by.columns.clone(),
        )
        .await?;
        self.refuse_table_ahead(
            table.published,
            "Iceberg table's snapshots record",
            "appended",
            "sink.url and tableFormat.iceberg.table",
        )?;
        // A known schema creates the table now, so readers see it before the first rows.
        if let Some(s) = self
            .state
            .schema
            .clone()
            .or(self.target.as_deref().cloned())
        {
            table.ensure_table(&s).await?;
        }
        self.iceberg = Some(table);
        self.publish_table(None).await?;
        self.check_table_schema(&self.state)
    }

    #[cfg(feature = "delta")]
    async fn open_delta(&mut self) -> Result<()> {
        let Some(crate::parquet::config::TableFormat::Delta(config)) = &self.config.table_format
        else {
            return Ok(());
        };
        let log = crate::delta::DeltaLog::open(
            self.loc.clone(),
            config.clone(),
            self.sink_name(),
            self.stream_id.clone(),
            self.config.partition_by.columns.clone(),
        )
        .await?;
        self.refuse_table_ahead(
            log.published,
            "Delta table's log records",
            "written",
            "sink.url",
        )?;
        self.delta = Some(log);
        self.publish_table(None).await?;
        self.check_table_schema(&self.state)
    }

    /// A schema the table format cannot hold is refused before the manifest that would
    /// commit it: a committed manifest must always be publishable.
    pub(super) fn check_table_schema(&self, state: &State) -> Result<()> {
        #[cfg(feature = "delta")]
        {
            if let Some(log) = &self.delta
                && let Some(s) = state.schema.as_ref().or(self.target.as_deref())
            {
                log.check(s)
                    .map_err(|message| Error::config("sink.tableFormat.delta", message))?;
            }
        }
        #[cfg(feature = "iceberg")]
        {
            if let Some(t) = &self.iceberg
                && let Some(s) = state.schema.as_ref().or(self.target.as_deref())
            {
                t.check(s)
                    .map_err(|message| Error::config("sink.tableFormat.iceberg", message))?;
            }
        }
        let _ = state;
        Ok(())
    }

    /// Publish every committed manifest the table lacks, in sequence order (`known` is the
    /// manifest just written, saving its read).
    pub(super) async fn publish_table(&mut self, known: Option<&Manifest>) -> Result<()> {
        if self.sharded {
            return Ok(());
        }
        #[cfg(feature = "delta")]
        if let Some(mut log) = self.delta.take() {
            if known.is_some() {
                self.failpoints.reach("before-table-commit").await;
            }
            let result = self.publish_delta(&mut log, known).await;
            self.delta = Some(log);
            return result;
        }
        #[cfg(feature = "iceberg")]
        if let Some(mut table) = self.iceberg.take() {
            if known.is_some() {
                self.failpoints.reach("before-table-commit").await;
            }
            let result = self.publish_iceberg(&mut table, known).await;
            self.iceberg = Some(table);
            return result;
        }
        let _ = known;
        Ok(())
    }

    #[cfg(feature = "iceberg")]
    async fn publish_iceberg(
        &self,
        table: &mut crate::iceberg::IcebergTable,
        known: Option<&Manifest>,
    ) -> Result<()> {
        let Some(last) = self.next_seq.checked_sub(1) else {
            return Ok(());
        };
        let name = self.sink_name();
        if let Some(published) = table.published
            && published > last
        {
            if manifest::read_if_exists(&self.loc, &name, last + 1)
                .await?
                .is_some()
            {
                return Err(Error::sink(
                    &name,
                    format!(
                        "another runner of this stream committed manifest {} and published up to {published} in the Iceberg table meanwhile; this runner stops and its rerun continues after them",
                        last + 1
                    ),
                    Retry::Transient,
                    None,
                ));
            }
            return Err(Error::sink(
                &name,
                format!(
                    "the Iceberg table's snapshots record this stream's manifest {published} as published, but the sink's manifests end at {last}: they were removed or reset; restore them, or give the stream a new table and backfill"
                ),
                Retry::Permanent,
                None,
            ));
        }
        let current = self.state.current_generation.clone();
        self.publish_iceberg_upto(table, known, last, &current)
            .await
    }

    /// Publish the stream's manifests after the table's newest up to `last`, in order;
    /// `current` is the sink's current generation after `last`.
    #[cfg(feature = "iceberg")]
    async fn publish_iceberg_upto(
        &self,
        table: &mut crate::iceberg::IcebergTable,
        known: Option<&Manifest>,
        last: u64,
        current: &str,
    ) -> Result<()> {
        let name = self.sink_name();
        let from = table.published.max(table.considered).map_or(0, |p| p + 1);
        if from > last {
            return Ok(());
        }
        let configured = self.config.target_schema()?;
        let missing = |seq: u64| self.missing_manifest(seq, last, "Iceberg");
        // The generation current before `from`: a manifest that changes it is an overwrite
        // backfill's switch, published as one overwrite snapshot.
        let mut previous = self
            .generation_before(from, table.generation.take(), last, "Iceberg")
            .await?;
        let mut all: Option<Vec<Manifest>> = None;
        for seq in from..=last {
            let read;
            let m = match known {
                Some(k) if k.sequence == seq => k,
                _ => match manifest::read_if_exists(&self.loc, &name, seq).await? {
                    Some(m) => {
                        read = m;
                        &read
                    }
                    None => return Err(missing(seq)),
                },
            };
            let schema = m
                .state
                .schema
                .as_ref()
                .or(configured.as_deref())
                .or(self.target.as_deref());
            let switched = m.state.current_generation != previous;
            // A switch to a generation other than the sink's current one was itself replaced
            // by a later switch: that one publishes.
            let replace = if switched && m.state.current_generation == *current {
                if all.is_none() {
                    all = Some(manifest::all(&self.loc, &name).await?);
                }
                let mut seen = std::collections::HashSet::new();
                Some(
                    all.iter()
                        .flatten()
                        .filter(|x| {
                            x.generation == m.state.current_generation && x.sequence <= m.sequence
                        })
                        .flat_map(|x| x.files.iter())
                        .chain(m.files.iter())
                        .filter(|f| seen.insert(f.path.clone()))
                        .cloned()
                        .collect(),
                )
            } else {
                None
            };
            let result = table.publish(m, current, schema, replace).await;
            if let Err(e) = result {
                // Not published: the next attempt starts from the generation before `m`.
                table.generation = Some(previous);
                return Err(e);
            }
            previous = m.state.current_generation.clone();
        }
        table.generation = Some(previous);
        Ok(())
    }

    #[cfg(feature = "delta")]
    async fn publish_delta(
        &self,
        log: &mut crate::delta::DeltaLog,
        known: Option<&Manifest>,
    ) -> Result<()> {
        let Some(last) = self.next_seq.checked_sub(1) else {
            return Ok(());
        };
        let from = log.published.map_or(0, |p| p + 1);
        let name = self.sink_name();
        if from > last + 1 {
            // The table holds manifests this sink has not seen: nothing new would ever be
            // published after them. Another runner that committed meanwhile is a restart; a
            // manifest history that ends before the table's is not.
            let published = from - 1;
            if manifest::read_if_exists(&self.loc, &name, last + 1)
                .await?
                .is_some()
            {
                return Err(Error::sink(
                    &name,
                    format!(
                        "another runner of this stream committed manifest {} and published up to {published} in the Delta table meanwhile; this runner stops and its rerun continues after them",
                        last + 1
                    ),
                    Retry::Transient,
                    None,
                ));
            }
            return Err(Error::sink(
                &name,
                format!(
                    "the Delta table's log records this stream's manifest {published} as published, but the sink's manifests end at {last}: they were removed or reset; restore them, or give the stream a new table (sink.url) and backfill"
                ),
                Retry::Permanent,
                None,
            ));
        }
        if from > last {
            return Ok(());
        }
        let missing = |seq: u64| self.missing_manifest(seq, last, "Delta");
        let mut previous = self
            .generation_before(from, log.generation.take(), last, "Delta")
            .await?;
        let configured = self.config.target_schema()?;
        let mut all: Option<Vec<Manifest>> = None;
        for seq in from..=last {
            let read;
            let m = match known {
                Some(k) if k.sequence == seq => k,
                _ => match manifest::read_if_exists(&self.loc, &name, seq).await? {
                    Some(m) => {
                        read = m;
                        &read
                    }
                    None => return Err(missing(seq)),
                },
            };
            if m.state.current_generation != previous && all.is_none() {
                all = Some(manifest::all(&self.loc, &name).await?);
            }
            let schema = m
                .state
                .schema
                .as_ref()
                .or(configured.as_deref())
                .or(self.target.as_deref());
            log.publish(m, &previous, all.as_deref(), schema).await?;
            previous = m.state.current_generation.clone();
        }
        log.generation = Some(previous);
        Ok(())
    }
}

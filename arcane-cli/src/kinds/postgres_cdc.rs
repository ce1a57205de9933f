//! The `postgres-cdc` kind: a PostgreSQL table's snapshot and changes (logical decoding), as
//! Parquet.

use std::sync::Arc;

use arcane_core::{Checkpoint, Result, Shard, ShardBoard, Source, StreamContext};
use arcane_sources::postgres_cdc::{
    PostgresCdcSource, PostgresCdcSourceConfig, merge_shard_positions, retire,
};

use crate::kind::{KindSpec, SourceKind};

/// `arcane retire` for a `postgres-cdc` stream: drop its replication slot and publication (see
/// [`retire`]); the report, one line per object.
pub(crate) async fn retire_postgres_cdc(ctx: &StreamContext) -> Result<String> {
    let spec: KindSpec<PostgresCdcSourceConfig> = ctx.spec()?;
    Ok(retire(&spec.source, "spec.source").await?.join("\n"))
}

/// A consistent snapshot of one PostgreSQL table, then its inserts, updates and deletes
/// through a `pgoutput` replication slot; see [`arcane_sources::postgres_cdc`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresCdc;

#[async_trait::async_trait]
impl SourceKind for PostgresCdc {
    type Config = PostgresCdcSourceConfig;

    fn name(&self) -> &'static str {
        "postgres-cdc"
    }

    fn description(&self) -> &'static str {
        "a PostgreSQL table's snapshot, then its inserts, updates and deletes (logical decoding with pgoutput), landed as Parquet"
    }

    /// The table is split by its key (or heap blocks) into ranges, one per shard; see
    /// "Sharded backfills" in [`arcane_sources::postgres_cdc`].
    fn can_shard(&self) -> bool {
        true
    }

    /// The slot's consistent point with every shard's snapshot segments.
    fn resume_after_shards(finals: &[Option<Checkpoint>]) -> Result<Option<Checkpoint>> {
        merge_shard_positions(finals)
    }

    async fn shard_source(
        &self,
        _ctx: &StreamContext,
        config: Self::Config,
        shard: Shard,
        board: Arc<dyn ShardBoard>,
    ) -> Result<Box<dyn Source>> {
        Ok(Box::new(
            PostgresCdcSource::new_at(config, "spec.source")?.with_shard(shard, board),
        ))
    }

    async fn source(&self, _ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        Ok(Box::new(PostgresCdcSource::new_at(config, "spec.source")?))
    }
}

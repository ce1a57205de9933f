//! The `postgres-cdc` kind: a PostgreSQL table's snapshot and changes (logical decoding), as
//! Parquet.

use arcane_core::{Result, Source, StreamContext};
use arcane_sources::postgres_cdc::{PostgresCdcSource, PostgresCdcSourceConfig, retire};

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

    fn why_not_sharded(&self) -> &'static str {
        "its backfill is one consistent snapshot taken with the replication slot, and the stream resumes from that slot's position skipping what the snapshot saw; shards on separate pods would each take their own snapshot at another WAL position, which the stream does not yet reconcile, so it would apply changes already in a shard's snapshot a second time (see \"Sharded backfills\" in the README)"
    }

    async fn source(&self, _ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        Ok(Box::new(PostgresCdcSource::new_at(config, "spec.source")?))
    }
}

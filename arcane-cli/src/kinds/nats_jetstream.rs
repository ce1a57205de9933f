//! The `nats-jetstream` kind: a JetStream stream read by a durable pull consumer, as Parquet.

use arcane_core::{Result, Source, StreamContext};
use arcane_sources::nats::{NatsSource, NatsSourceConfig};

use super::rows_per_group;
use crate::kind::SourceKind;

/// A JetStream stream read by a durable pull consumer, exactly once; see
/// [`arcane_sources::nats`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NatsJetStream;

#[async_trait::async_trait]
impl SourceKind for NatsJetStream {
    type Config = NatsSourceConfig;

    fn name(&self) -> &'static str {
        "nats-jetstream"
    }

    fn description(&self) -> &'static str {
        "a NATS JetStream stream read by a durable pull consumer (acks after commit, exactly once), landed as Parquet"
    }

    async fn source(
        &self,
        ctx: &StreamContext,
        mut config: Self::Config,
    ) -> Result<Box<dyn Source>> {
        // Twice a group, so a group can fill while the previous one is committed and acked.
        config
            .max_ack_pending
            .get_or_insert(rows_per_group(ctx).saturating_mul(2));
        Ok(Box::new(NatsSource::new_at(config, "spec.source")?))
    }

    fn adjust_sink(&self, ctx: &StreamContext, sink: &mut arcane_sinks::ParquetSinkConfig) {
        super::commit_within_window(
            ctx,
            sink,
            "maxAckPending",
            rows_per_group(ctx).saturating_mul(2),
        );
    }
}

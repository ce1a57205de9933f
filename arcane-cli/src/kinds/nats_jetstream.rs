//! The `nats-jetstream` kind: a JetStream stream read by a durable pull consumer, as Parquet.

use arcane_core::{Result, Source, StreamContext};
use arcane_sources::nats::{NatsSource, NatsSourceConfig};

use crate::kind::{KindSpec, SourceKind};

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

    async fn source(&self, _ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        Ok(Box::new(NatsSource::new_at(config, "spec.source")?))
    }

    fn adjust_spec(&self, spec: &mut KindSpec<Self::Config>) {
        super::fit_broker_window(
            &mut spec.source.max_unacked,
            spec.rows_per_group,
            usize::MAX,
            &mut spec.sink,
        );
    }
}

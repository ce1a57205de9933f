//! The `rabbitmq` kind: a RabbitMQ queue consumed over AMQP 0-9-1, as Parquet.

use arcane_core::{Result, Source, StreamContext};
use arcane_sources::amqp::{AmqpSource, AmqpSourceConfig};

use super::rows_per_group;
use crate::kind::SourceKind;

/// A RabbitMQ queue with manual acks after commit; see [`arcane_sources::amqp`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RabbitMq;

#[async_trait::async_trait]
impl SourceKind for RabbitMq {
    type Config = AmqpSourceConfig;

    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn description(&self) -> &'static str {
        "a RabbitMQ queue over AMQP 0-9-1 (acks after commit; exactly once with a publisher sequence), landed as Parquet"
    }

    async fn source(
        &self,
        ctx: &StreamContext,
        mut config: Self::Config,
    ) -> Result<Box<dyn Source>> {
        // Twice a group (AMQP caps the prefetch at 65535), so a group can fill while the
        // previous one is committed and acked.
        let prefetch = rows_per_group(ctx)
            .saturating_mul(2)
            .min(usize::from(u16::MAX));
        config.prefetch.get_or_insert(prefetch as u16);
        Ok(Box::new(AmqpSource::new_at(config, "spec.source")?))
    }

    fn adjust_sink(&self, ctx: &StreamContext, sink: &mut arcane_sinks::ParquetSinkConfig) {
        super::commit_within_window(
            ctx,
            sink,
            "prefetch",
            rows_per_group(ctx)
                .saturating_mul(2)
                .min(usize::from(u16::MAX)),
        );
    }
}

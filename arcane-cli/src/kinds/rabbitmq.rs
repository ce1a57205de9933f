//! The `rabbitmq` kind: a RabbitMQ queue consumed over AMQP 0-9-1, as Parquet.

use arcane_core::{Result, Source, StreamContext};
use arcane_sources::amqp::{AmqpSource, AmqpSourceConfig, MAX_PREFETCH};

use crate::kind::{KindSpec, SourceKind};

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

    async fn source(&self, _ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        Ok(Box::new(AmqpSource::new_at(config, "spec.source")?))
    }

    fn adjust_spec(&self, spec: &mut KindSpec<Self::Config>) {
        super::fit_broker_window(
            &mut spec.source.max_unacked,
            spec.rows_per_group,
            MAX_PREFETCH,
            &mut spec.sink,
        );
    }
}

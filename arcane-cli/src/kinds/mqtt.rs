//! The `mqtt` kind: MQTT topics with QoS 1 in a persistent session, as Parquet.

use arcane_core::{Result, Source, StreamContext};
use arcane_sources::mqtt::{MqttSource, MqttSourceConfig};

use super::rows_per_group;
use crate::kind::SourceKind;

/// MQTT topic filters, QoS 1, at least once; see [`arcane_sources::mqtt`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Mqtt;

#[async_trait::async_trait]
impl SourceKind for Mqtt {
    type Config = MqttSourceConfig;

    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn description(&self) -> &'static str {
        "MQTT 5 topic filters with QoS 1 in a persistent session (acks after commit, at least once), landed as Parquet"
    }

    async fn source(
        &self,
        ctx: &StreamContext,
        mut config: Self::Config,
    ) -> Result<Box<dyn Source>> {
        let receive_maximum = rows_per_group(ctx)
            .saturating_mul(2)
            .min(usize::from(u16::MAX));
        config.receive_maximum.get_or_insert(receive_maximum as u16);
        Ok(Box::new(MqttSource::new_at(config, "spec.source")?))
    }

    fn adjust_sink(&self, ctx: &StreamContext, sink: &mut arcane_sinks::ParquetSinkConfig) {
        super::commit_within_window(
            ctx,
            sink,
            "receiveMaximum",
            rows_per_group(ctx)
                .saturating_mul(2)
                .min(usize::from(u16::MAX)),
        );
    }
}

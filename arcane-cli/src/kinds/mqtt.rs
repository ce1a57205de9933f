//! The `mqtt` kind: MQTT topics with QoS 1 in a persistent session, as Parquet.

use arcane_core::{Result, Source, StreamContext};
use arcane_sources::mqtt::{MAX_RECEIVE_MAXIMUM, MqttSource, MqttSourceConfig};

use crate::kind::{KindSpec, SourceKind};

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
        "MQTT 5 or 3.1.1 topic filters with QoS 1 in a persistent session (acks after commit, at least once), landed as Parquet"
    }

    async fn source(&self, _ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        Ok(Box::new(MqttSource::new_at(config, "spec.source")?))
    }

    fn adjust_spec(&self, spec: &mut KindSpec<Self::Config>) {
        super::fit_broker_window(
            &mut spec.source.max_unacked,
            spec.rows_per_group,
            MAX_RECEIVE_MAXIMUM,
            &mut spec.sink,
        );
    }
}

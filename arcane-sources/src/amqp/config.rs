//! [`AmqpSourceConfig`]: the serde/JSON Schema form of the RabbitMQ source's settings.

use std::time::Duration;

use arcane_core::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use arcane_core::retry::RetryConfig;

use crate::broker::{
    BrokerSettings, PayloadConfig, SecretValue, TlsConfig, broker_settings,
    default_backfill_idle_timeout, default_batch_rows, default_batch_timeout,
};

/// The largest `maxUnacked` AMQP allows (the prefetch count is 16 bits).
pub const MAX_PREFETCH: usize = u16::MAX as usize;
/// Default AMQP port.
pub const DEFAULT_AMQP_PORT: u16 = 5672;

/// Settings of the RabbitMQ (AMQP 0-9-1) source: one queue, consumed with manual acks.
///
/// ```json
/// {
///   "host": "rabbitmq.messaging",
///   "queue": "orders",
///   "declare": { "exchange": { "name": "orders", "type": "topic" }, "bindingKeys": ["orders.#"] },
///   "sequence": { "header": "x-sequence" },
///   "payload": { "format": "json", "schema": [{ "name": "id", "type": "int64" }] },
///   "username": "ingest",
///   "password": { "env": "RABBITMQ_PASSWORD" }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AmqpSourceConfig {
    /// Broker host name.
    pub host: String,
    /// Broker port (default 5672; usually 5671 with TLS).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Virtual host (default `/`).
    #[serde(default = "default_vhost")]
    pub virtual_host: String,
    /// User name (default `guest`).
    #[serde(default = "default_username")]
    pub username: String,
    /// Password (default `guest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretValue>,
    /// TLS to the broker (required when present; client certificates are not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The queue to consume.
    pub queue: String,
    /// Declare the queue (durable), and optionally an exchange and bindings, before consuming.
    /// Without it the queue must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declare: Option<DeclareConfig>,
    /// Where the publisher's sequence number is, for exactly-once delivery across restarts
    /// from a classic queue (a quorum queue is refused at its first redelivery: it puts
    /// returned messages behind later ones); without it delivery is at least once (see the
    /// module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceConfig>,
    /// How message payloads become rows.
    pub payload: PayloadConfig,
    /// Messages per decoded batch (default 1000).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// How long a partly filled batch waits for more messages (humantime, default `200ms`).
    #[serde(default = "default_batch_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub batch_timeout: Duration,
    /// Unacknowledged messages the broker may deliver (`basic.qos` prefetch count, at most
    /// 65535). Acks follow sink commits, so this bounds memory and a slow sink stops
    /// consumption. The `rabbitmq` kind defaults it to twice `rowsPerGroup` (capped at 65535)
    /// so a group can fill while the previous one is committed; elsewhere the default is 20000.
    /// (`prefetch` is accepted as its old name.)
    #[serde(default, alias = "prefetch", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub max_unacked: Option<usize>,
    /// In backfill mode, the stream ends after this long without a message (humantime, default
    /// `5s`).
    #[serde(default = "default_backfill_idle_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub backfill_idle_timeout: Duration,
    /// Retrying a failed connect (exponential backoff with jitter; every attempt is logged);
    /// when the attempts run out the stream stops with exit code 2 and the restarted process
    /// resumes from the last commit. (`reconnect` is accepted as its old name.)
    #[serde(default, alias = "reconnect")]
    pub retry: RetryConfig,
}

/// Queue, exchange and bindings to declare.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeclareConfig {
    /// Declare the exchange (durable) and bind the queue to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeConfig>,
    /// Routing keys binding the queue to `exchange` (default: one binding with the key `#`
    /// for topic exchanges, the queue name otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binding_keys: Vec<String>,
}

/// An exchange to declare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExchangeConfig {
    /// Exchange name.
    pub name: String,
    /// `direct`, `fanout`, `topic` (default) or `headers`.
    #[serde(default = "default_exchange_type", rename = "type")]
    pub exchange_type: String,
}

/// Where the publisher's sequence number is: a monotonically increasing integer per queue,
/// assigned by the publisher (e.g. an outbox id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SequenceConfig {
    /// The header holding it (an integer or a decimal string); when omitted, the `message_id`
    /// property is parsed as an integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

fn default_port() -> u16 {
    DEFAULT_AMQP_PORT
}
fn default_vhost() -> String {
    "/".into()
}
fn default_username() -> String {
    "guest".into()
}
fn default_exchange_type() -> String {
    "topic".into()
}

impl AmqpSourceConfig {
    /// Settings for `queue` on `host` with every other field at its default.
    pub fn new(host: impl Into<String>, queue: impl Into<String>, payload: PayloadConfig) -> Self {
        Self {
            host: host.into(),
            port: DEFAULT_AMQP_PORT,
            virtual_host: default_vhost(),
            username: default_username(),
            password: None,
            tls: None,
            queue: queue.into(),
            declare: None,
            sequence: None,
            payload,
            batch_rows: default_batch_rows(),
            batch_timeout: default_batch_timeout(),
            max_unacked: None,
            backfill_idle_timeout: default_backfill_idle_timeout(),
            retry: RetryConfig::default(),
        }
    }

    /// The settings every broker source shares, checked; `field` is the config's path.
    pub fn settings(&self, field: &str) -> Result<BrokerSettings> {
        broker_settings(
            &self.payload,
            self.batch_rows,
            self.batch_timeout,
            self.max_unacked,
            MAX_PREFETCH,
            &self.retry,
            field,
        )
    }

    /// Check every setting; `field` is the config's path (e.g. `spec.source`).
    pub fn validate(&self, field: &str) -> Result<()> {
        for (name, value) in [("host", &self.host), ("queue", &self.queue)] {
            if value.trim().is_empty() {
                return Err(Error::config(
                    format!("{field}.{name}"),
                    "must not be empty",
                ));
            }
        }
        self.settings(field)?;
        if self.backfill_idle_timeout.is_zero() {
            return Err(Error::config(
                format!("{field}.backfillIdleTimeout"),
                "must be longer than zero, e.g. \"5s\"",
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate(&format!("{field}.tls"))?;
            if tls.cert_file.is_some() {
                return Err(Error::config(
                    format!("{field}.tls.certFile"),
                    "client certificates are not supported by the rabbitmq source; authenticate with username/password",
                ));
            }
        }
        if let Some(declare) = &self.declare {
            if let Some(ex) = &declare.exchange {
                if !matches!(
                    ex.exchange_type.as_str(),
                    "direct" | "fanout" | "topic" | "headers"
                ) {
                    return Err(Error::config(
                        format!("{field}.declare.exchange.type"),
                        format!(
                            "\"{}\" is not an exchange type; use direct, fanout, topic or headers",
                            ex.exchange_type
                        ),
                    ));
                }
            } else if !declare.binding_keys.is_empty() {
                return Err(Error::config(
                    format!("{field}.declare.bindingKeys"),
                    "bindings need an `exchange`",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_has_one_name_and_old_specs_still_parse() {
        let old: AmqpSourceConfig = serde_json::from_value(serde_json::json!({
            "host": "h", "queue": "q", "payload": { "format": "raw" },
            "prefetch": 300, "reconnect": { "maxAttempts": 3 }
        }))
        .unwrap();
        assert_eq!(old.max_unacked, Some(300));
        assert_eq!(old.retry.max_attempts, 3);
        let mut big = old.clone();
        big.max_unacked = Some(70_000);
        let err = big.validate("spec.source").unwrap_err().to_string();
        assert!(
            err.starts_with("spec.source.maxUnacked") && err.contains("65535"),
            "{err}"
        );
    }
}

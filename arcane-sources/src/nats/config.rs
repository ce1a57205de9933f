//! [`NatsSourceConfig`]: the serde/JSON Schema form of the NATS JetStream source's settings.

use std::time::Duration;

use arcane_core::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use arcane_core::retry::RetryConfig;

use crate::broker::{
    BrokerSettings, DEFAULT_MAX_UNACKED, PayloadConfig, SecretValue, TlsConfig, broker_settings,
    default_batch_rows, default_batch_timeout,
};
/// Default `ackWait`: how long the server waits for an ack before redelivering.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(300);

/// Settings of the NATS JetStream source: a durable pull consumer on one stream.
///
/// ```json
/// {
///   "url": "nats://127.0.0.1:4222",
///   "stream": "ORDERS",
///   "consumer": "arcane-orders",
///   "filterSubject": "orders.>",
///   "payload": { "format": "json", "schema": [{ "name": "id", "type": "int64" }] },
///   "password": { "env": "NATS_PASSWORD" },
///   "username": "ingest"
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Server URL(s), comma-separated: `nats://host:4222`, `tls://host:4222`.
    pub url: String,
    /// The JetStream stream to read (it must exist).
    pub stream: String,
    /// Name of the durable pull consumer. The source (re)creates it at every start, positioned
    /// right after the last committed stream sequence, so it must not be shared with other
    /// readers.
    pub consumer: String,
    /// Only read messages whose subject matches this filter (e.g. `orders.>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_subject: Option<String>,
    /// Where to start when nothing was committed yet: `all` (default, the whole stream) or
    /// `new` (only messages published after the start; ignored in backfill mode).
    #[serde(default)]
    pub start: NatsStart,
    /// Start at the first message published at or after this RFC 3339 time when nothing was
    /// committed yet (overrides `start`; the backfill start date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// How message payloads become rows.
    pub payload: PayloadConfig,
    /// User name (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (with `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretValue>,
    /// Authentication token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretValue>,
    /// TLS to the server (required when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Messages per decoded batch (default 1000).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// How long a partly filled batch waits for more messages (humantime, default `200ms`).
    #[serde(default = "default_batch_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub batch_timeout: Duration,
    /// Messages delivered but not yet acked (acks follow sink commits): the consumer's
    /// `max_ack_pending`, which bounds memory and makes a slow sink stop consumption. The
    /// `nats-jetstream` kind defaults it to twice `rowsPerGroup` so a group can fill while the
    /// previous one is committed; elsewhere the default is 20000. (`maxAckPending` is accepted
    /// as its old name.)
    #[serde(
        default,
        alias = "maxAckPending",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1))]
    pub max_unacked: Option<usize>,
    /// How long the server waits for an ack before redelivering (humantime, default `5m`);
    /// redeliveries of messages already read are recognised by their sequence and skipped.
    #[serde(default = "default_ack_wait", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ack_wait: Duration,
    /// Retrying a failed connect or pull (exponential backoff with jitter; every attempt is
    /// logged); when the attempts run out the stream stops with exit code 2 and the restarted
    /// process resumes from the committed position. (`reconnect` is accepted as its old name.)
    #[serde(default, alias = "reconnect")]
    pub retry: RetryConfig,
}

/// Where a consumer without a committed position starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NatsStart {
    /// The first message of the stream.
    #[default]
    All,
    /// Messages published after the consumer is created.
    New,
}

fn default_ack_wait() -> Duration {
    DEFAULT_ACK_WAIT
}

impl NatsSourceConfig {
    /// Settings for `stream` on `url`, read by the durable consumer `consumer`, with every
    /// other field at its default.
    pub fn new(
        url: impl Into<String>,
        stream: impl Into<String>,
        consumer: impl Into<String>,
        payload: PayloadConfig,
    ) -> Self {
        Self {
            url: url.into(),
            stream: stream.into(),
            consumer: consumer.into(),
            filter_subject: None,
            start: NatsStart::All,
            start_time: None,
            payload,
            username: None,
            password: None,
            token: None,
            tls: None,
            batch_rows: default_batch_rows(),
            batch_timeout: default_batch_timeout(),
            max_unacked: None,
            ack_wait: DEFAULT_ACK_WAIT,
            retry: RetryConfig::default(),
        }
    }

    /// `maxUnacked` or its default.
    pub fn max_unacked(&self) -> usize {
        self.max_unacked.unwrap_or(DEFAULT_MAX_UNACKED)
    }

    /// The settings every broker source shares, checked; `field` is the config's path.
    pub fn settings(&self, field: &str) -> Result<BrokerSettings> {
        broker_settings(
            &self.payload,
            self.batch_rows,
            self.batch_timeout,
            self.max_unacked,
            usize::MAX,
            &self.retry,
            field,
        )
    }

    /// `startTime` parsed; `field` is the config's path.
    pub fn start_time(&self, field: &str) -> Result<Option<std::time::SystemTime>> {
        self.start_time
            .as_deref()
            .map(|t| {
                humantime::parse_rfc3339_weak(t).map_err(|e| {
                    Error::config(
                        format!("{field}.startTime"),
                        format!(
                            "\"{t}\" is not an RFC 3339 time ({e}); write e.g. 2026-11-25T00:00:00Z"
                        ),
                    )
                })
            })
            .transpose()
    }

    /// Check every setting; `field` is the config's path (e.g. `spec.source`).
    pub fn validate(&self, field: &str) -> Result<()> {
        for (name, value) in [
            ("url", &self.url),
            ("stream", &self.stream),
            ("consumer", &self.consumer),
        ] {
            if value.trim().is_empty() {
                return Err(Error::config(
                    format!("{field}.{name}"),
                    "must not be empty",
                ));
            }
        }
        if self
            .consumer
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
        {
            return Err(Error::config(
                format!("{field}.consumer"),
                "a durable consumer name cannot contain whitespace, '.', '*' or '>'",
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(Error::config(
                format!("{field}.password"),
                "set both `username` and `password`, or neither",
            ));
        }
        self.settings(field)?;
        if self.ack_wait.is_zero() {
            return Err(Error::config(
                format!("{field}.ackWait"),
                "must be longer than zero, e.g. \"5m\"",
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate(&format!("{field}.tls"))?;
        }
        self.start_time(field)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_has_one_name_and_old_specs_still_parse() {
        let old: NatsSourceConfig = serde_json::from_value(serde_json::json!({
            "url": "nats://h:4222", "stream": "S", "consumer": "c",
            "payload": { "format": "raw" },
            "maxAckPending": 300,
            "reconnect": { "maxAttempts": 3, "initialDelay": "1s", "maxDelay": "5s" }
        }))
        .unwrap();
        assert_eq!(old.max_unacked, Some(300));
        assert_eq!((old.retry.max_attempts, old.retry.jitter), (3, true));
        let settings = old.settings("spec.source").unwrap();
        assert_eq!(settings.max_unacked.get(), 300);
        let new: NatsSourceConfig = serde_json::from_value(serde_json::json!({
            "url": "nats://h:4222", "stream": "S", "consumer": "c",
            "payload": { "format": "raw" },
            "maxUnacked": 300, "retry": { "maxAttempts": 3, "initialDelay": "1s", "maxDelay": "5s" }
        }))
        .unwrap();
        assert_eq!(new, old);
        let err = serde_json::from_value::<NatsSourceConfig>(serde_json::json!({
            "url": "nats://h:4222", "stream": "S", "consumer": "c",
            "payload": { "format": "raw" }, "maxUnackd": 1
        }))
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `maxUnackd`"),
            "{err}"
        );
        let mut zero = new.clone();
        zero.max_unacked = Some(0);
        let err = zero.validate("spec.source").unwrap_err().to_string();
        assert!(err.starts_with("spec.source.maxUnacked"), "{err}");
    }
}

//! [`MqttSourceConfig`]: the serde/JSON Schema form of the MQTT source's settings.

use std::time::Duration;

use arcane_core::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use arcane_core::retry::RetryConfig;

use crate::broker::{
    BrokerSettings, PayloadConfig, SecretValue, TlsConfig, broker_settings,
    default_backfill_idle_timeout, default_batch_rows, default_batch_timeout,
};

/// Default MQTT port.
pub const DEFAULT_MQTT_PORT: u16 = 1883;
/// The largest `maxUnacked` MQTT 5 allows (the receive maximum is 16 bits).
pub const MAX_RECEIVE_MAXIMUM: usize = u16::MAX as usize;
/// Default `sessionExpiry`: how long the broker keeps the session (and queues messages) while
/// the source is not connected.
pub const DEFAULT_SESSION_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Settings of the MQTT source: topic filters subscribed with QoS 1 in a persistent session
/// (MQTT 5).
///
/// ```json
/// {
///   "host": "mqtt.iot",
///   "clientId": "arcane-sensors",
///   "topics": ["sensors/+/readings"],
///   "payload": { "format": "json", "schema": [{ "name": "value", "type": "float64" }], "metadataColumns": true }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Broker host name.
    pub host: String,
    /// Broker port (default 1883; usually 8883 with TLS).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The client id, which names the persistent session on the broker: keep it stable across
    /// restarts and unique per stream.
    pub client_id: String,
    /// Topic filters to subscribe to with QoS 1 (`+` and `#` wildcards allowed).
    pub topics: Vec<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (with `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretValue>,
    /// TLS to the broker (required when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The MQTT version to speak: `"5"` (default) or `"3.1.1"` for brokers without MQTT 5.
    /// With 3.1.1 the broker's own in-flight limit bounds the unacknowledged messages
    /// (`maxUnacked` cannot be sent), there are no user properties (`_headers` is null) and
    /// the session does not expire by itself (`sessionExpiry` is not sent).
    #[serde(default)]
    pub protocol_version: MqttProtocolVersion,
    /// How message payloads become rows.
    pub payload: PayloadConfig,
    /// Messages per decoded batch (default 1000).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// How long a partly filled batch waits for more messages (humantime, default `200ms`).
    #[serde(default = "default_batch_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub batch_timeout: Duration,
    /// QoS 1 messages the broker may send before they are acknowledged (the MQTT 5 receive
    /// maximum, at most 65535). Acks follow sink commits, so this bounds memory and a slow
    /// sink stops consumption. The `mqtt` kind defaults it to twice `rowsPerGroup` (capped at
    /// 65535); elsewhere the default is 20000. Brokers may apply a lower limit of their own.
    /// (`receiveMaximum` is accepted as its old name.)
    #[serde(
        default,
        alias = "receiveMaximum",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 65535))]
    pub max_unacked: Option<usize>,
    /// How long the broker keeps the session and queues messages while the source is
    /// disconnected (humantime, default `7days`).
    #[serde(default = "default_session_expiry", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub session_expiry: Duration,
    /// In backfill mode, the stream ends after this long without a message (humantime, default
    /// `5s`).
    #[serde(default = "default_backfill_idle_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub backfill_idle_timeout: Duration,
    /// Retrying a failed connect (exponential backoff with jitter; every attempt is logged);
    /// when the attempts run out the stream stops with exit code 2 and the broker's session
    /// keeps what was not acknowledged. (`reconnect` is accepted as its old name.)
    #[serde(default, alias = "reconnect")]
    pub retry: RetryConfig,
}

/// The MQTT protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MqttProtocolVersion {
    /// MQTT 5.
    #[default]
    #[serde(rename = "5")]
    V5,
    /// MQTT 3.1.1.
    #[serde(rename = "3.1.1")]
    V311,
}

fn default_port() -> u16 {
    DEFAULT_MQTT_PORT
}
fn default_session_expiry() -> Duration {
    DEFAULT_SESSION_EXPIRY
}

impl MqttSourceConfig {
    /// Settings for `topics` on `host` with every other field at its default.
    pub fn new(
        host: impl Into<String>,
        client_id: impl Into<String>,
        topics: Vec<String>,
        payload: PayloadConfig,
    ) -> Self {
        Self {
            host: host.into(),
            port: DEFAULT_MQTT_PORT,
            client_id: client_id.into(),
            topics,
            username: None,
            password: None,
            tls: None,
            protocol_version: MqttProtocolVersion::V5,
            payload,
            batch_rows: default_batch_rows(),
            batch_timeout: default_batch_timeout(),
            max_unacked: None,
            session_expiry: DEFAULT_SESSION_EXPIRY,
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
            MAX_RECEIVE_MAXIMUM,
            &self.retry,
            field,
        )
    }

    /// Check every setting; `field` is the config's path (e.g. `spec.source`).
    pub fn validate(&self, field: &str) -> Result<()> {
        for (name, value) in [("host", &self.host), ("clientId", &self.client_id)] {
            if value.trim().is_empty() {
                return Err(Error::config(
                    format!("{field}.{name}"),
                    "must not be empty",
                ));
            }
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.is_empty()) {
            return Err(Error::config(
                format!("{field}.topics"),
                "list at least one non-empty topic filter, e.g. [\"sensors/#\"]",
            ));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            if let Err(why) = check_topic_filter(topic) {
                return Err(Error::config(
                    format!("{field}.topics[{i}]"),
                    format!("{topic:?} is not a valid MQTT topic filter: {why}"),
                ));
            }
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(Error::config(
                format!("{field}.username"),
                "a password needs a `username`",
            ));
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
        }
        Ok(())
    }
}

/// The topic-filter rules of MQTT 3.1.1 §4.7 (the same in 5.0): at most 65535 bytes, no NUL
/// character, `#` only as the whole last level, `+` only as a whole level; a shared
/// subscription (`$share/{group}/{filter}`) needs a group without wildcards and a filter.
/// Checked here because the client library refuses an invalid filter before it reaches the
/// broker, where it would surface as a connection error and be retried for ever.
fn check_topic_filter(filter: &str) -> std::result::Result<(), &'static str> {
    if filter.len() > 65535 {
        return Err("it is longer than 65535 bytes");
    }
    if filter.contains('\0') {
        return Err("it contains a NUL character");
    }
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((group, f))
                if !group.is_empty() && !group.contains(['+', '#']) && !f.is_empty() =>
            {
                f
            }
            _ => {
                return Err(
                    "a shared subscription is `$share/{group}/{filter}`, with a group name without `+` or `#`",
                );
            }
        },
        None => filter,
    };
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("`#` must be a whole level and the last one, e.g. \"sensors/#\"");
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` must be a whole level, e.g. \"sensors/+/temperature\"");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters_follow_the_mqtt_rules() {
        for ok in [
            "a",
            "a/b",
            "#",
            "a/#",
            "+",
            "+/+/c",
            "a//b",
            "/",
            "$SYS/#",
            "$share/g/a/+",
            "sport/tennis/+/#",
        ] {
            assert_eq!(check_topic_filter(ok), Ok(()), "{ok}");
            // The client library's own check, which this one explains: they must agree (a
            // shared subscription is checked on its filter part).
            let plain = ok.strip_prefix("$share/g/").unwrap_or(ok);
            assert!(rumqttc::valid_filter(plain), "{ok}");
        }
        for bad in [
            "a#",
            "a/#/b",
            "#/a",
            "a+",
            "a/b+/c",
            "+a",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "a\0b",
        ] {
            assert!(check_topic_filter(bad).is_err(), "{bad}");
            if !bad.starts_with("$share") && !bad.contains('\0') {
                assert!(!rumqttc::valid_filter(bad), "{bad}");
            }
        }
    }

    #[test]
    fn an_invalid_topic_filter_is_a_config_error_naming_it() {
        let cfg: MqttSourceConfig = serde_json::from_value(serde_json::json!({
            "host": "h", "clientId": "c", "topics": ["ok/#", "sensors/#/temp"], "payload": { "format": "raw" }
        }))
        .unwrap();
        let err = cfg.validate("spec.source").unwrap_err().to_string();
        assert!(err.contains("spec.source.topics[1]"), "{err}");
        assert!(
            err.contains("\"sensors/#/temp\" is not a valid MQTT topic filter"),
            "{err}"
        );
        assert!(
            err.contains("`#` must be a whole level and the last one"),
            "{err}"
        );
    }

    #[test]
    fn the_window_has_one_name_and_old_specs_still_parse() {
        let old: MqttSourceConfig = serde_json::from_value(serde_json::json!({
            "host": "h", "clientId": "c", "topics": ["t/#"], "payload": { "format": "raw" },
            "receiveMaximum": 300, "reconnect": { "maxAttempts": 3 }
        }))
        .unwrap();
        assert_eq!(old.max_unacked, Some(300));
        assert_eq!(old.retry.max_attempts, 3);
        assert_eq!(old.settings("spec.source").unwrap().max_unacked.get(), 300);
    }
}

//! Settings shared by the broker sources: payload format, credentials, TLS, batching, the
//! unacknowledged window and the `retry` policy.

use std::time::Duration;

use std::num::NonZeroUsize;

use arcane_core::retry::RetryConfig;
use arcane_core::{Error, Result};
use arrow_schema::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::decode::FieldConfig;
use crate::decode::schema_from_fields;

/// Default messages per decoded batch (`batchRows`).
pub const DEFAULT_BROKER_BATCH_ROWS: usize = 1000;
/// Default time a partly filled batch waits for more messages (`batchTimeout`).
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_millis(200);
/// Default `maxUnacked` when neither the spec nor the kind sets it.
pub const DEFAULT_MAX_UNACKED: usize = 20_000;
/// Default time without messages after which a backfill of a queue or topic ends
/// (`backfillIdleTimeout`).
pub const DEFAULT_BACKFILL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How message payloads become rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PayloadConfig {
    /// `json` (default): every payload is one JSON object decoded into `schema`; a payload that
    /// is not valid JSON or does not fit is dead-lettered with the reason. `raw`: every payload
    /// is kept as bytes in a `payload` column next to the metadata columns.
    #[serde(default)]
    pub format: PayloadFormat,
    /// The columns of a `json` payload (required for `json`, not allowed for `raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<FieldConfig>>,
    /// Also add the metadata columns `_subject` (subject, routing key or topic, utf8),
    /// `_timestamp` (the broker's or publisher's timestamp, `timestamp[ms, UTC]`, null when
    /// unknown) and `_headers` (the headers or user properties as a JSON object, utf8, null
    /// when none) after the schema's columns. Always on for `raw`.
    #[serde(default)]
    pub metadata_columns: bool,
}

/// The payload format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PayloadFormat {
    /// One JSON object per message.
    #[default]
    Json,
    /// The bytes as they are.
    Raw,
}

impl PayloadConfig {
    /// A `json` payload of `fields`.
    pub fn json(fields: Vec<FieldConfig>) -> Self {
        Self {
            format: PayloadFormat::Json,
            schema: Some(fields),
            metadata_columns: false,
        }
    }

    /// A `raw` payload.
    pub fn raw() -> Self {
        Self {
            format: PayloadFormat::Raw,
            schema: None,
            metadata_columns: true,
        }
    }

    /// The schema of the payload columns (`None` for `raw`); `field` is the config's path.
    pub fn payload_schema(&self, field: &str) -> Result<Option<SchemaRef>> {
        match (self.format, &self.schema) {
            (PayloadFormat::Json, None) => Err(Error::config(
                format!("{field}.schema"),
                "a json payload needs a schema: list the columns, e.g. [{\"name\": \"id\", \"type\": \"int64\"}], or use format \"raw\"",
            )),
            (PayloadFormat::Json, Some(f)) if f.is_empty() => Err(Error::config(
                format!("{field}.schema"),
                "the schema has no fields; list the columns of the JSON payload",
            )),
            (PayloadFormat::Json, Some(f)) => {
                schema_from_fields(f, &format!("{field}.schema")).map(Some)
            }
            (PayloadFormat::Raw, Some(_)) => Err(Error::config(
                format!("{field}.schema"),
                "a raw payload has no schema (it is kept as bytes in the `payload` column); remove `schema` or use format \"json\"",
            )),
            (PayloadFormat::Raw, None) => Ok(None),
        }
    }
}

/// A secret value: given inline, read from an environment variable, or read from a file (e.g.
/// a mounted Kubernetes Secret). Exactly one of the three.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretValue {
    /// The value itself (avoid for real secrets: specs are not secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The environment variable holding the value (e.g. from `sourceSecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The file holding the value (trailing newlines are removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl SecretValue {
    /// A secret read from the environment variable `name`.
    pub fn from_env(name: impl Into<String>) -> Self {
        Self {
            env: Some(name.into()),
            ..Self::default()
        }
    }

    /// An inline value.
    pub fn inline(value: impl Into<String>) -> Self {
        Self {
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// The value; `field` is the config's path for errors.
    pub fn resolve(&self, field: &str) -> Result<String> {
        match (&self.value, &self.env, &self.file) {
            (Some(v), None, None) => Ok(v.clone()),
            (None, Some(var), None) => std::env::var(var).map_err(|_| {
                Error::config(
                    format!("{field}.env"),
                    format!("environment variable {var} is not set (or not UTF-8); set it, e.g. from the stream's sourceSecretRef"),
                )
            }),
            (None, None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| {
                    Error::config(
                        format!("{field}.file"),
                        format!("cannot read {path}: {e}"),
                    )
                }),
            _ => Err(Error::config(
                field,
                "set exactly one of `value`, `env` or `file`",
            )),
        }
    }
}

/// TLS to the broker. Present (even empty) means TLS is required; the server is verified
/// against the system's web PKI roots plus `caFile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with extra CA certificates to trust (e.g. a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM file with the client certificate (mutual TLS; needs `keyFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM file with the client private key (mutual TLS; needs `certFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

impl TlsConfig {
    /// Check that the files exist and come in pairs; `field` is the config's path.
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(Error::config(
                field,
                "mutual TLS needs both `certFile` and `keyFile`",
            ));
        }
        for (name, path) in [
            ("caFile", &self.ca_file),
            ("certFile", &self.cert_file),
            ("keyFile", &self.key_file),
        ] {
            if let Some(path) = path
                && !std::path::Path::new(path).is_file()
            {
                return Err(Error::config(
                    format!("{field}.{name}"),
                    format!("{path} is not a readable file"),
                ));
            }
        }
        Ok(())
    }
}

/// The settings every broker config has, under the same names: `payload`, `batchRows`,
/// `batchTimeout`, `maxUnacked` (at most `max_window`) and `retry`, checked; `field` is the
/// config's path (e.g. `spec.source`).
pub(crate) fn broker_settings(
    payload: &PayloadConfig,
    batch_rows: usize,
    batch_timeout: Duration,
    max_unacked: Option<usize>,
    max_window: usize,
    retry: &RetryConfig,
    field: &str,
) -> Result<super::BrokerSettings> {
    validate_batching(batch_rows, batch_timeout, field)?;
    let max_unacked = match max_unacked {
        None => DEFAULT_MAX_UNACKED.min(max_window),
        Some(n) if n > max_window => {
            return Err(Error::config(
                format!("{field}.maxUnacked"),
                format!("{n} is more than the broker allows ({max_window})"),
            ));
        }
        Some(n) => n,
    };
    let Some(max_unacked) = NonZeroUsize::new(max_unacked) else {
        return Err(Error::config(
            format!("{field}.maxUnacked"),
            "must be at least 1 (it bounds what is read before the sink commits)",
        ));
    };
    retry.validate(&format!("{field}.retry"))?;
    payload.payload_schema(&format!("{field}.payload"))?;
    Ok(super::BrokerSettings {
        payload: payload.clone(),
        batch_rows: NonZeroUsize::new(batch_rows).unwrap_or(NonZeroUsize::MIN),
        batch_timeout,
        max_unacked,
        retry: *retry,
    })
}

/// Check `batchRows` and `batchTimeout`; `field` is the config's path.
pub(crate) fn validate_batching(batch_rows: usize, timeout: Duration, field: &str) -> Result<()> {
    if batch_rows == 0 {
        return Err(Error::config(
            format!("{field}.batchRows"),
            format!("must be at least 1 (default {DEFAULT_BROKER_BATCH_ROWS})"),
        ));
    }
    if timeout.is_zero() {
        return Err(Error::config(
            format!("{field}.batchTimeout"),
            "must be longer than zero, e.g. \"200ms\"",
        ));
    }
    Ok(())
}

pub(crate) fn default_batch_rows() -> usize {
    DEFAULT_BROKER_BATCH_ROWS
}
pub(crate) fn default_batch_timeout() -> Duration {
    DEFAULT_BATCH_TIMEOUT
}
#[cfg_attr(not(any(feature = "amqp", feature = "mqtt")), allow(dead_code))]
pub(crate) fn default_backfill_idle_timeout() -> Duration {
    DEFAULT_BACKFILL_IDLE_TIMEOUT
}

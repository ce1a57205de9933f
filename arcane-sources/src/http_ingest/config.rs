//! [`HttpIngestSourceConfig`]: the `source` settings of the `http-ingest` kind.

use std::time::Duration;

use arcane_core::schema::FieldConfig;
use arcane_core::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default listen address.
pub const DEFAULT_ADDRESS: &str = "0.0.0.0:8080";
/// Default largest request body, in bytes (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default most events in one request.
pub const DEFAULT_MAX_EVENTS_PER_REQUEST: usize = 1000;
/// Default most request-body bytes held at once across all requests (64 MiB).
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;
/// Default time a request waits for its commit before it is answered 503.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `Retry-After` of 429 and 503 answers, in seconds.
pub const DEFAULT_RETRY_AFTER_SECONDS: u64 = 5;
/// Default number of event ids remembered for deduplication.
pub const DEFAULT_DEDUP_MAX_IDS: usize = 1_000;
/// Default age after which an event id is forgotten.
pub const DEFAULT_DEDUP_MAX_AGE: Duration = Duration::from_secs(3600);
/// Default idempotency header of webhook requests.
pub const DEFAULT_IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Default signature header.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// Default grouping interval of the kind, in seconds (a request waits about this long for its
/// commit when it is alone).
pub const DEFAULT_HTTP_INGEST_GROUPING_INTERVAL_SECONDS: u64 = 1;

/// How an event's `data` (or a webhook's JSON object) becomes columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DataFormat {
    /// Decoded into the columns of `schema` (a JSON object per event).
    #[default]
    Columns,
    /// Kept as it came in one `data` string column (JSON text, or the text of a non-JSON body;
    /// `data_base64` stays base64).
    Json,
}

/// How the CloudEvents extension attributes become the `ce_extensions` column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExtensionsFormat {
    /// A JSON object string (`{"traceparent": "00-…"}`).
    #[default]
    Json,
    /// A `map<utf8, utf8>` column; values that are not strings are their JSON text.
    Map,
}

/// Who may write: bearer tokens and/or an HMAC-SHA256 body signature. When both are set a
/// request must pass both. Secrets are read from environment variables (e.g. filled from the
/// stream's `sourceSecretRef`), never from the spec, and never echoed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// Environment variable holding the accepted bearer tokens (`Authorization: Bearer T`),
    /// separated by commas (several, for rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_tokens_env: Option<String>,
    /// Environment variable holding the HMAC-SHA256 secret of the body signature
    /// (GitHub-style `sha256=<hex of HMAC-SHA256(secret, body)>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_env: Option<String>,
    /// Header carrying the signature. Default `X-Hub-Signature-256`.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
}

/// Deduplication by `(source, id)` (webhooks: the idempotency header). The window is stored with
/// every commit, so a request retried after a restart is still recognised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DedupConfig {
    /// Most ids remembered (the oldest are forgotten first). Default 1000; 0 turns
    /// deduplication off. Size it to the events that arrive between a send and its retry
    /// (events per second × the longest restart plus retry delay): each id adds 16 bytes to the
    /// checkpoint, which every commit's manifest stores twice (about 32 KB per commit at 1000,
    /// and manifests are kept: at one commit per second that is 2.7 GB a day).
    #[serde(default = "default_dedup_max_ids")]
    pub max_ids: usize,
    /// Ids older than this are forgotten (humantime, e.g. `"1h"`). Default 1h.
    #[serde(default = "default_dedup_max_age", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_age: Duration,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            max_ids: DEFAULT_DEDUP_MAX_IDS,
            max_age: DEFAULT_DEDUP_MAX_AGE,
        }
    }
}

/// A sender registered at a path of its own (see `sourcePaths`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourcePath {
    /// The request path, matched exactly, e.g. `/hooks/github`.
    pub path: String,
    /// Who sends there. Webhook events posted to the path (they carry no `source` of their
    /// own) get it as `ce_source` (without a trailing `*`); CloudEvents posted there must carry
    /// a `source` equal to it, or starting with it when it ends in `*`
    /// (`"https://github.com/acme/*"`); others are refused with 403.
    pub source: String,
}

impl SourcePath {
    /// The `ce_source` of webhook events posted to this path.
    pub(crate) fn webhook_source(&self) -> &str {
        self.source.strip_suffix('*').unwrap_or(&self.source)
    }
}

/// Settings of the `http-ingest` source: an HTTP endpoint receiving CloudEvents (structured,
/// binary and batch modes) and JSON webhooks, answering 2xx only once the events are committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpIngestSourceConfig {
    /// Address to listen on (`HOST:PORT`; port 0 picks a free one, logged). Default
    /// `0.0.0.0:8080`. Plain HTTP: terminate TLS in the ingress or a sidecar.
    #[serde(default = "default_address")]
    pub address: String,
    /// Columns of the event `data` (CloudEvents) or of each webhook JSON object, e.g.
    /// `[{"name": "id", "type": "int64"}]`. Required when `dataFormat` is `columns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<FieldConfig>>,
    /// `columns` (decode `data` into `schema`) or `json` (keep it in a `data` string column).
    /// Default `columns`.
    #[serde(default)]
    pub data_format: DataFormat,
    /// `json` (the extension attributes as a JSON object string) or `map` (a `map<utf8, utf8>`
    /// column). Default `json`.
    #[serde(default)]
    pub extensions_format: ExtensionsFormat,
    /// CloudEvents `source` values allowed to write: exact values, or prefixes ending in `*`
    /// (`"https://github.com/acme/*"`). Empty: any source. Others are refused with 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_sources: Vec<String>,
    /// Senders by path: each sender posts to its own path, which names it (webhooks) or bounds
    /// the CloudEvents `source` it may use. When set, a POST to any other path is refused
    /// with 404 naming the registered paths. Empty: any path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_paths: Vec<SourcePath>,
    /// Who may write (401 otherwise). Default: anyone who reaches the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// Invalid events (missing required attribute, malformed JSON, data not fitting `schema`):
    /// `false` refuses the whole request with 400 naming them; `true` dead-letters them (within
    /// the sink's dead-letter budget), commits the rest and lists them in the 2xx answer.
    /// Default `false`.
    #[serde(default)]
    pub dead_letter_invalid: bool,
    /// Deduplication of retried events.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Header whose value identifies a webhook request (the events of a JSON array get
    /// `KEY:INDEX` as id). Default `Idempotency-Key`.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// Largest request body in bytes (413 above). Default 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    #[schemars(range(min = 1))]
    pub max_body_bytes: usize,
    /// Most events in one request (413 above). Default 1000.
    #[serde(default = "default_max_events_per_request")]
    #[schemars(range(min = 1))]
    pub max_events_per_request: usize,
    /// Most request-body bytes held at once across requests waiting for their commit; a request
    /// that would exceed it is answered 429 with `Retry-After`. Default 64 MiB.
    #[serde(default = "default_max_in_flight_bytes")]
    #[schemars(range(min = 1))]
    pub max_in_flight_bytes: usize,
    /// How long a request's body may take to arrive (408 after) and how long the request then
    /// waits for its commit (503 after) (humantime). Default 30s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub request_timeout: Duration,
    /// `Retry-After` seconds of 429 and 503 answers. Default 5.
    #[serde(default = "default_retry_after_seconds")]
    pub retry_after_seconds: u64,
}

fn default_address() -> String {
    DEFAULT_ADDRESS.into()
}
fn default_signature_header() -> String {
    DEFAULT_SIGNATURE_HEADER.into()
}
fn default_idempotency_header() -> String {
    DEFAULT_IDEMPOTENCY_HEADER.into()
}
fn default_dedup_max_ids() -> usize {
    DEFAULT_DEDUP_MAX_IDS
}
fn default_dedup_max_age() -> Duration {
    DEFAULT_DEDUP_MAX_AGE
}
fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_max_events_per_request() -> usize {
    DEFAULT_MAX_EVENTS_PER_REQUEST
}
fn default_max_in_flight_bytes() -> usize {
    DEFAULT_MAX_IN_FLIGHT_BYTES
}
fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}
fn default_retry_after_seconds() -> u64 {
    DEFAULT_RETRY_AFTER_SECONDS
}

impl HttpIngestSourceConfig {
    /// Settings listening on `address`, data kept as JSON, everything else default.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            schema: None,
            data_format: DataFormat::Json,
            extensions_format: ExtensionsFormat::Json,
            allowed_sources: Vec::new(),
            source_paths: Vec::new(),
            auth: None,
            dead_letter_invalid: false,
            dedup: DedupConfig::default(),
            idempotency_header: DEFAULT_IDEMPOTENCY_HEADER.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_events_per_request: DEFAULT_MAX_EVENTS_PER_REQUEST,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_after_seconds: DEFAULT_RETRY_AFTER_SECONDS,
        }
    }

    /// Check the settings; errors name the field under `at` (e.g. `spec.source`).
    pub fn validate(&self, at: &str) -> Result<()> {
        if self.data_format == DataFormat::Columns && self.schema.is_none() {
            return Err(Error::config(
                format!("{at}.schema"),
                "is required when dataFormat is columns; list the data's columns, or set dataFormat: json to keep data as a JSON string",
            ));
        }
        for (field, value) in [
            ("maxBodyBytes", self.max_body_bytes),
            ("maxEventsPerRequest", self.max_events_per_request),
            ("maxInFlightBytes", self.max_in_flight_bytes),
        ] {
            if value == 0 {
                return Err(Error::config(format!("{at}.{field}"), "must be at least 1"));
            }
        }
        if self.max_in_flight_bytes < self.max_body_bytes {
            return Err(Error::config(
                format!("{at}.maxInFlightBytes"),
                format!(
                    "({}) is smaller than maxBodyBytes ({}): no request of the largest size could ever be accepted",
                    self.max_in_flight_bytes, self.max_body_bytes
                ),
            ));
        }
        for (i, p) in self.source_paths.iter().enumerate() {
            let field = format!("{at}.sourcePaths[{i}]");
            if !p.path.starts_with('/') || p.path.contains(['?', '#', ' ']) {
                return Err(Error::config(
                    format!("{field}.path"),
                    format!(
                        "{:?} is not a request path; write it as `/hooks/github` (no query, no spaces)",
                        p.path
                    ),
                ));
            }
            if matches!(p.path.as_str(), "/healthz" | "/readyz") {
                return Err(Error::config(
                    format!("{field}.path"),
                    format!("{:?} is the probes' path; choose another", p.path),
                ));
            }
            if p.webhook_source().is_empty() {
                return Err(Error::config(
                    format!("{field}.source"),
                    "must name the sender, e.g. \"github\" or \"https://github.com/acme/*\"",
                ));
            }
            if self.source_paths[..i].iter().any(|q| q.path == p.path) {
                return Err(Error::config(
                    format!("{field}.path"),
                    format!("{:?} is listed twice; one sender per path", p.path),
                ));
            }
        }
        if self.request_timeout.is_zero() {
            return Err(Error::config(
                format!("{at}.requestTimeout"),
                "must be longer than 0s; a request waits this long for its commit",
            ));
        }
        if http_header_name(&self.idempotency_header).is_none() {
            return Err(Error::config(
                format!("{at}.idempotencyHeader"),
                format!(
                    "{:?} is not a valid HTTP header name",
                    self.idempotency_header
                ),
            ));
        }
        if let Some(auth) = &self.auth {
            if auth.bearer_tokens_env.is_none() && auth.hmac_secret_env.is_none() {
                return Err(Error::config(
                    format!("{at}.auth"),
                    "set bearerTokensEnv and/or hmacSecretEnv (or remove auth to accept anyone who reaches the port)",
                ));
            }
            if http_header_name(&auth.signature_header).is_none() {
                return Err(Error::config(
                    format!("{at}.auth.signatureHeader"),
                    format!(
                        "{:?} is not a valid HTTP header name",
                        auth.signature_header
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `name` as a lower-case header name, when it is one.
pub(crate) fn http_header_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_paths_are_checked_naming_the_entry() {
        let with = |paths: serde_json::Value| {
            let mut c = HttpIngestSourceConfig::new("127.0.0.1:0");
            c.source_paths = serde_json::from_value(paths).unwrap();
            c.validate("spec.source").map_err(|e| e.to_string())
        };
        assert!(
            with(
                serde_json::json!([{"path": "/a", "source": "a"}, {"path": "/b", "source": "b*"}])
            )
            .is_ok()
        );
        for (paths, needle) in [
            (
                serde_json::json!([{"path": "a", "source": "a"}]),
                "spec.source.sourcePaths[0].path",
            ),
            (
                serde_json::json!([{"path": "/readyz", "source": "a"}]),
                "the probes' path",
            ),
            (
                serde_json::json!([{"path": "/a", "source": "*"}]),
                "spec.source.sourcePaths[0].source",
            ),
            (
                serde_json::json!([{"path": "/a", "source": "a"}, {"path": "/a", "source": "b"}]),
                "sourcePaths[1].path",
            ),
        ] {
            let err = with(paths).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn defaults_and_validation_name_the_field() {
        let c: HttpIngestSourceConfig =
            serde_json::from_value(serde_json::json!({"dataFormat": "json"})).unwrap();
        assert_eq!(c.address, DEFAULT_ADDRESS);
        assert_eq!(c.dedup.max_ids, DEFAULT_DEDUP_MAX_IDS);
        c.validate("spec.source").unwrap();

        let c: HttpIngestSourceConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        let err = c.validate("spec.source").unwrap_err().to_string();
        assert!(err.starts_with("spec.source.schema: "), "{err}");

        let c: HttpIngestSourceConfig = serde_json::from_value(serde_json::json!({
            "dataFormat": "json", "auth": {}
        }))
        .unwrap();
        let err = c.validate("spec.source").unwrap_err().to_string();
        assert!(err.starts_with("spec.source.auth: "), "{err}");

        let err =
            serde_json::from_value::<HttpIngestSourceConfig>(serde_json::json!({"maxBodyByte": 5}))
                .unwrap_err();
        assert!(err.to_string().contains("maxBodyByte"), "{err}");
    }
}

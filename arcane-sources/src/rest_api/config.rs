//! [`RestApiSourceConfig`]: the serde/JSON Schema form of the source's settings.

use std::collections::BTreeMap;
use std::time::Duration;

use arcane_core::retry::RetryConfig;
use arcane_core::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::decode::FieldConfig;

/// Default `httpTimeout`: the whole request, body included.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `pollInterval`: the pause between polls in streaming mode.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Default `maxResponseBytes` (64 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// Default `flattenSeparator`.
pub const DEFAULT_FLATTEN_SEPARATOR: &str = "_";
/// Default OAuth2 `refreshBeforeExpiry`.
pub const DEFAULT_REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(60);
/// The template variable replaced by the current watermark.
pub const WATERMARK_VARIABLE: &str = "{{watermark}}";

/// Settings of the REST API source: records polled from an HTTP API.
///
/// ```json
/// {
///   "url": "https://api.example.com/v1/orders",
///   "query": { "updated_since": "{{watermark}}", "sort": "updated_at" },
///   "headers": { "Accept": "application/json" },
///   "recordsPointer": "/data",
///   "pagination": { "type": "cursor", "cursorPointer": "/next_cursor", "param": "cursor" },
///   "watermark": { "field": "updated_at", "type": "timestamp", "idField": "id",
///                  "start": "2026-01-01T00:00:00Z" },
///   "auth": { "type": "bearer", "token": { "env": "ORDERS_API_TOKEN" } },
///   "schema": [
///     { "name": "id", "type": "int64", "nullable": false },
///     { "name": "updated_at", "type": "timestamp[ms, UTC]", "nullable": false },
///     { "name": "amount", "type": "float64" }
///   ],
///   "pollInterval": "30s"
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestApiSourceConfig {
    /// The URL of the first page (`http://` or `https://`). May contain `{{watermark}}`
    /// (replaced by the current watermark, empty before the first one). Never put secrets in
    /// it: it appears in logs and errors; use `auth`.
    pub url: String,
    /// The HTTP method: `GET` (default) or `POST`.
    #[serde(default)]
    pub method: HttpMethod,
    /// Extra request headers; values may contain `{{watermark}}`. Never put secrets here:
    /// use `auth`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameters added to the first page's URL; values may contain `{{watermark}}`
    /// (e.g. `"updated_since": "{{watermark}}"`). A parameter whose value uses `{{watermark}}`
    /// is left out while there is no watermark yet (a first run without `watermark.start`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// The JSON body of a `POST`, as text; may contain `{{watermark}}` (quote it yourself
    /// when the watermark is a string: `{"since": "{{watermark}}"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_template: Option<String>,
    /// A JSON pointer (RFC 6901) to the array of records in a response: `/data`,
    /// `/result/items`; empty (default) when the response itself is the array. A missing or
    /// `null` array is an empty page.
    #[serde(default)]
    pub records_pointer: String,
    /// The columns of the records (Arrow types). Keys not listed are ignored; a record that
    /// does not fit (wrong type, missing non-nullable column) is dead-lettered with the
    /// reason. Nested objects are kept as `Struct` columns (type in Arrow syntax) unless
    /// `flattenNested` is set.
    pub schema: Vec<FieldConfig>,
    /// Flatten nested objects into top-level keys joined by `flattenSeparator`
    /// (`{"customer": {"id": 7}}` → `customer_id`) before decoding. Arrays are kept as they
    /// are. Default false.
    #[serde(default)]
    pub flatten_nested: bool,
    /// The separator of flattened keys. Default `_`.
    #[serde(default = "default_flatten_separator")]
    pub flatten_separator: String,
    /// How to get the next page. Default: no pagination (one request per poll).
    #[serde(default)]
    pub pagination: PaginationConfig,
    /// Incremental polling: the record field whose value is the stream's position. Required
    /// in streaming mode; without it a backfill reads every page once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<WatermarkConfig>,
    /// How to authenticate. Secrets are read from environment variables or files, never
    /// from the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// Timeout of one request, body included (humantime: `30s`). Default 30s.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub http_timeout: Duration,
    /// The pause between polls in streaming mode, once a poll has read every page
    /// (humantime). Default 30s.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub poll_interval: Duration,
    /// How a request is retried on 429, 5xx, 408, timeouts, connection errors and a response
    /// body that is not JSON (often an error page of a proxy): `maxAttempts` (default 8, the
    /// first included), `initialDelay` (default 250ms, doubled per attempt with random
    /// jitter), `maxDelay` (default 30s), `jitter` (default true). A `Retry-After` header
    /// replaces the delay. Each retry is logged at WARN with its cause and the next delay.
    /// When the attempts run out the source fails: with a transient error (exit code 2,
    /// RESTART), or a permanent one (exit code 1) when the body was still not JSON.
    #[serde(default)]
    pub retry: RetryConfig,
    /// At most this many requests per second (may be fractional: `0.5` is one request every
    /// two seconds); unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_second: Option<f64>,
    /// The largest response body accepted, in bytes; a larger one fails the source (make
    /// pages smaller). Default 64 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

fn default_flatten_separator() -> String {
    DEFAULT_FLATTEN_SEPARATOR.to_string()
}
fn default_http_timeout() -> Duration {
    DEFAULT_HTTP_TIMEOUT
}
fn default_poll_interval() -> Duration {
    DEFAULT_POLL_INTERVAL
}
fn default_max_response_bytes() -> u64 {
    DEFAULT_MAX_RESPONSE_BYTES
}

impl RestApiSourceConfig {
    /// Settings for `url` and `schema` with every other field at its default.
    pub fn new(url: impl Into<String>, schema: Vec<FieldConfig>) -> Self {
        Self {
            url: url.into(),
            method: HttpMethod::default(),
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
            body_template: None,
            records_pointer: String::new(),
            schema,
            flatten_nested: false,
            flatten_separator: default_flatten_separator(),
            pagination: PaginationConfig::default(),
            watermark: None,
            auth: None,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            retry: RetryConfig::default(),
            max_requests_per_second: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Check the settings that serde cannot; `at` is the path of these settings in the spec
    /// (`spec.source`), used in errors.
    pub(crate) fn validate(&self, at: &str) -> Result<url::Url> {
        let probe = self.url.replace(WATERMARK_VARIABLE, "0");
        let url = url::Url::parse(&probe).map_err(|e| {
            Error::config(
                format!("{at}.url"),
                format!("is not a URL ({e}); expected e.g. https://api.example.com/v1/items"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::config(
                format!("{at}.url"),
                format!(
                    "unsupported scheme \"{}\"; expected http or https",
                    url.scheme()
                ),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::config(
                format!("{at}.url"),
                "must not contain credentials; use auth with a secret from the environment or a file",
            ));
        }
        if !self.records_pointer.is_empty() && !self.records_pointer.starts_with('/') {
            return Err(Error::config(
                format!("{at}.recordsPointer"),
                format!(
                    "\"{}\" is not a JSON pointer; it starts with / (e.g. /data/items), or is empty for a response that is the array",
                    self.records_pointer
                ),
            ));
        }
        if self.body_template.is_some() && self.method == HttpMethod::Get {
            return Err(Error::config(
                format!("{at}.bodyTemplate"),
                "is only sent with method POST; set method to POST or remove it",
            ));
        }
        if self.flatten_separator.is_empty() {
            return Err(Error::config(
                format!("{at}.flattenSeparator"),
                "must not be empty (default _)",
            ));
        }
        if self.http_timeout.is_zero() {
            return Err(Error::config(
                format!("{at}.httpTimeout"),
                "must be more than 0 (default 30s)",
            ));
        }
        self.retry.validate(&format!("{at}.retry"))?;
        if let Some(rate) = self.max_requests_per_second
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(Error::config(
                format!("{at}.maxRequestsPerSecond"),
                "must be a positive number; omit it for no limit",
            ));
        }
        if self.max_response_bytes == 0 {
            return Err(Error::config(
                format!("{at}.maxResponseBytes"),
                "must be at least 1 (default 64 MiB)",
            ));
        }
        self.pagination.validate(&format!("{at}.pagination"))?;
        if let Some(w) = &self.watermark {
            if w.field.is_empty() {
                return Err(Error::config(
                    format!("{at}.watermark.field"),
                    "is empty; name the record field holding the watermark",
                ));
            }
            if let Some(start) = &w.start
                && super::watermark::Key::of(start, w.kind).is_none()
            {
                return Err(Error::config(
                    format!("{at}.watermark.start"),
                    format!("{start} is not a {} watermark", w.kind.as_str()),
                ));
            }
        }
        Ok(url)
    }
}

/// The HTTP method of the requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET`.
    #[default]
    Get,
    /// `POST` with `bodyTemplate` as the JSON body.
    Post,
}

/// How to get the next page of a pass. A pass paged by a cursor, a next URL or a `Link` header
/// ends only when there is no next page (an empty page with a next page is read past); one
/// paged by number or offset ends at an empty page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PaginationConfig {
    /// One request per poll.
    #[default]
    None,
    /// A page-number query parameter, incremented until an empty page.
    PageNumber(PageNumberPagination),
    /// Offset and limit query parameters; the offset grows by the records received, until an
    /// empty page.
    Offset(OffsetPagination),
    /// A cursor taken from the response body and sent as a query parameter, until the cursor
    /// is missing, null or empty (an empty page with a cursor is read past).
    Cursor(CursorPagination),
    /// The `Link` response header's `rel="next"` URL (RFC 8288), until there is none (an
    /// empty page with a next link is read past).
    LinkHeader,
    /// A next-page URL (absolute or relative) taken from the response body, until it is
    /// missing, null or empty (an empty page with a next URL is read past).
    NextUrl(NextUrlPagination),
}

impl PaginationConfig {
    fn validate(&self, at: &str) -> Result<()> {
        let pointer = |field: &str, p: &str| {
            if p.starts_with('/') {
                Ok(())
            } else {
                Err(Error::config(
                    format!("{at}.{field}"),
                    format!("\"{p}\" is not a JSON pointer; it starts with / (e.g. /next)"),
                ))
            }
        };
        match self {
            Self::Offset(o) if o.limit == 0 => {
                Err(Error::config(format!("{at}.limit"), "must be at least 1"))
            }
            Self::Cursor(c) => pointer("cursorPointer", &c.cursor_pointer),
            Self::NextUrl(n) => pointer("pointer", &n.pointer),
            _ => Ok(()),
        }
    }
}

/// Page-number pagination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PageNumberPagination {
    /// The page-number query parameter. Default `page`.
    #[serde(default = "default_page_param")]
    pub param: String,
    /// The first page's number. Default 1.
    #[serde(default = "default_one")]
    pub start: u64,
    /// A page-size query parameter to send (e.g. `per_page`), with `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_param: Option<String>,
    /// The page size sent in `sizeParam`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Offset/limit pagination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OffsetPagination {
    /// The offset query parameter. Default `offset`.
    #[serde(default = "default_offset_param")]
    pub offset_param: String,
    /// The limit query parameter. Default `limit`.
    #[serde(default = "default_limit_param")]
    pub limit_param: String,
    /// Records per page.
    pub limit: u64,
}

/// Cursor pagination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CursorPagination {
    /// A JSON pointer to the next cursor in the response body (e.g. `/meta/next_cursor`).
    pub cursor_pointer: String,
    /// The query parameter the cursor is sent in. Default `cursor`.
    #[serde(default = "default_cursor_param")]
    pub param: String,
}

/// Next-URL-in-the-body pagination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NextUrlPagination {
    /// A JSON pointer to the next page's URL in the response body (e.g. `/links/next`).
    pub pointer: String,
}

fn default_page_param() -> String {
    "page".into()
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_cursor_param() -> String {
    "cursor".into()
}
fn default_one() -> u64 {
    1
}

/// Incremental polling by a watermark field.
///
/// The API must accept the watermark in a query parameter (or the URL or body) meaning
/// "records with a watermark **at or after** this value". A *pass* (one poll: the first page
/// and every page after it) is one snapshot of the API, and the order of the records within
/// it does not matter: the next pass asks from the highest watermark of the completed pass and
/// skips, with `idField`, the records it landed at exactly that watermark, so records sharing
/// a watermark across a page, pass or restart boundary are landed exactly once. Without
/// `idField` the watermark must be strictly increasing (an auto-increment id, or an API whose
/// parameter means "after"): records at exactly the last watermark are skipped.
///
/// A restart inside a pass goes on with that pass at its next page (see the source's
/// guarantees for what that needs from the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WatermarkConfig {
    /// The record field holding the watermark (a top-level key, or a JSON pointer such as
    /// `/meta/updated_at`; read before `flattenNested`).
    pub field: String,
    /// How watermarks compare: `timestamp` (RFC 3339 strings or epoch numbers), `number`, or
    /// `string` (lexicographic). Default `timestamp`.
    #[serde(default, rename = "type")]
    pub kind: WatermarkKind,
    /// A field unique per record (top-level key or JSON pointer), used to skip records at
    /// exactly the last watermark that were already landed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_field: Option<String>,
    /// The lower bound of the first poll (and of a backfill): its value is sent as
    /// `{{watermark}}` and records before it are skipped. Without it the first poll reads
    /// from the beginning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Value>,
}

/// How watermark values compare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WatermarkKind {
    /// RFC 3339 timestamps (any offset) or epoch numbers, compared as instants.
    #[default]
    Timestamp,
    /// Integers or decimals.
    Number,
    /// Strings, compared byte-wise.
    String,
}

impl WatermarkKind {
    /// The name in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timestamp => "timestamp",
            Self::Number => "number",
            Self::String => "string",
        }
    }
}

/// How to authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AuthConfig {
    /// `Authorization: Bearer <token>` with a static token.
    Bearer(BearerAuth),
    /// An API key in a request header.
    ApiKey(ApiKeyAuth),
    /// HTTP basic authentication.
    Basic(BasicAuth),
    /// OAuth2 client credentials (RFC 6749 §4.4): a token from the token endpoint, refreshed
    /// before it expires and after a 401.
    #[serde(rename = "oauth2ClientCredentials")]
    OAuth2ClientCredentials(OAuth2Auth),
}

/// Static bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BearerAuth {
    /// Where the token is.
    pub token: SecretSource,
}

/// API key header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// The header carrying the key. Default `X-API-Key`.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// Where the key is.
    pub key: SecretSource,
}

fn default_api_key_header() -> String {
    "X-API-Key".into()
}

/// HTTP basic authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name (not a secret).
    pub username: String,
    /// Where the password is.
    pub password: SecretSource,
}

/// OAuth2 client credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OAuth2Auth {
    /// The token endpoint (`https://login.example.com/oauth2/token`).
    pub token_url: String,
    /// The client id (not a secret).
    pub client_id: String,
    /// Where the client secret is.
    pub client_secret: SecretSource,
    /// The scope to request, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Send the client id and secret in the form body instead of HTTP basic authentication
    /// (some providers require it). Default false.
    #[serde(default)]
    pub credentials_in_body: bool,
    /// Refresh the token this long before it expires (humantime). Default 60s.
    #[serde(default = "default_refresh_before_expiry", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub refresh_before_expiry: Duration,
}

fn default_refresh_before_expiry() -> Duration {
    DEFAULT_REFRESH_BEFORE_EXPIRY
}

/// Where a secret is: an environment variable or a file (e.g. a mounted Kubernetes Secret).
/// Its value never appears in logs or errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SecretSource {
    /// The name of an environment variable holding the secret.
    Env(String),
    /// The path of a file holding the secret (surrounding whitespace is trimmed).
    File(String),
}

impl SecretSource {
    /// Read the secret; the error names the variable or file, never the value.
    pub fn read(&self) -> Result<String> {
        let (name, value) = match self {
            Self::Env(var) => (
                format!("environment variable {var}"),
                std::env::var(var).map_err(|e| match e {
                    std::env::VarError::NotPresent => "is not set".to_string(),
                    std::env::VarError::NotUnicode(_) => "is not UTF-8".to_string(),
                }),
            ),
            Self::File(path) => (
                format!("file {path}"),
                std::fs::read_to_string(path)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| format!("cannot be read: {e}")),
            ),
        };
        match value {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => Err(Error::MissingSecret {
                name,
                message: "is empty".into(),
            }),
            Err(message) => Err(Error::MissingSecret { name, message }),
        }
    }
}

//! The REST API source (feature `rest-api`): records polled from an HTTP API, page by page,
//! incrementally by a watermark field, decoded into Arrow with the schema from the spec.
//!
//! # Configuration
//!
//! [`RestApiSourceConfig`] (the `source` of a `rest-api` stream): the URL, method, headers,
//! query parameters and `POST` body, each of which may contain `{{watermark}}`; a JSON
//! pointer to the records array (`recordsPointer`); the schema of the records; the
//! [pagination](PaginationConfig) style; the [watermark](WatermarkConfig); the
//! [authentication](AuthConfig); timeouts, retries, a request-rate limit and a response size
//! limit.
//!
//! # Polling and modes
//!
//! A *poll* requests the first page (with `{{watermark}}` filled in from the current
//! position) and follows the pagination until an empty page or until there is no next page.
//! Each page becomes one batch whose position is the watermark after its last record.
//! In **streaming** mode the source polls again every `pollInterval`, asking from the
//! watermark of the last record it yielded; a `watermark` is required. In **backfill** mode
//! it polls once from `watermark.start` (or the beginning) and ends when caught up; without a
//! `watermark` a backfill reads every page once.
//!
//! # Guarantees
//!
//! * **Exactly once, given an ordered API.** The position is the last landed watermark plus,
//!   with `watermark.idField`, the ids of the records landed at exactly that watermark
//!   ([`RestApiPosition`]). The next poll — and a restart from the sink's manifest — asks
//!   from that watermark (the API's parameter must mean *at or after*), skips records before
//!   it and the listed ids at it, and skips the rows of a partly committed page. Records that
//!   share a watermark across a page, poll or restart boundary are therefore landed once.
//!   Without `idField`, the watermark must be strictly increasing (records at exactly the
//!   last watermark are skipped). The API must return records in ascending watermark order; a
//!   record whose watermark goes backwards inside a poll is dead-lettered (not silently lost),
//!   and a record without a readable watermark too. Without a watermark, the position is the
//!   number of records landed in the pass: a restart re-reads the pass and skips them, which
//!   is exact as long as the API returns the same records in the same order.
//! * **Bad records** (wrong types, missing non-nullable columns) are dead-lettered with the
//!   reason, the URL and `page N record I`; they still advance the watermark. After a restart
//!   inside a partly committed page, dead letters of that page may be written again.
//! * **Errors.** 429, 5xx, 408, timeouts and connection errors are retried (`maxRetries`)
//!   with exponential backoff and jitter, honouring `Retry-After` (seconds or an HTTP date);
//!   then the source fails with a transient error (exit code 2). Other 4xx, a body that is
//!   not JSON, a records field that is not an array and a body over `maxResponseBytes` fail
//!   with a permanent error naming the URL and the HTTP status.
//! * **Secrets** come from environment variables or files named in the spec
//!   ([`SecretSource`]), are sent only in headers, and are replaced by `***` in every error
//!   and log line; the URL must not contain credentials. OAuth2 client-credentials tokens
//!   are refreshed `refreshBeforeExpiry` before `expires_in`, and once after a 401.
//!
//! # Type mapping
//!
//! JSON values are decoded by [`JsonDecoder`](crate::decode::JsonDecoder) into the types of
//! the schema ([`FieldConfig`]): numbers into integer, float and decimal columns, strings
//! into `utf8`, RFC 3339 strings or epoch numbers into timestamps, `true`/`false` into
//! `bool`, nested objects into `Struct` columns (or into top-level columns with
//! `flattenNested`: `{"customer": {"id": 7}}` → `customer_id`), arrays into `List` columns.
//! Keys not in the schema are ignored; missing keys are null.

mod config;
mod http;
mod source;
mod watermark;

pub use config::{
    ApiKeyAuth, AuthConfig, BasicAuth, BearerAuth, CursorPagination, DEFAULT_FLATTEN_SEPARATOR,
    DEFAULT_HTTP_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_RETRIES, DEFAULT_POLL_INTERVAL,
    DEFAULT_REFRESH_BEFORE_EXPIRY, DEFAULT_RETRY_INITIAL_BACKOFF, DEFAULT_RETRY_MAX_BACKOFF,
    FieldConfig, HttpMethod, NextUrlPagination, OAuth2Auth, OffsetPagination, PageNumberPagination,
    PaginationConfig, RestApiSourceConfig, SecretSource, WATERMARK_VARIABLE, WatermarkConfig,
    WatermarkKind,
};
pub use source::RestApiSource;
pub use watermark::RestApiPosition;

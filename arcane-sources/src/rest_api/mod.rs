//! The REST API source (feature `rest-api`): records polled from an HTTP API, page by page,
//! incrementally by a watermark field, decoded into Arrow with the schema from the spec.
//!
//! # Configuration
//!
//! [`RestApiSourceConfig`] (the `source` of a `rest-api` stream): the URL, method, headers,
//! query parameters and `POST` body, each of which may contain `{{watermark}}`; a JSON
//! pointer to the records array (`recordsPointer`); the schema of the records; the
//! [pagination](PaginationConfig) style; the [watermark](WatermarkConfig); the
//! [authentication](AuthConfig); timeouts, the `retry` policy ([`RetryConfig`]), a
//! request-rate limit and a response size limit.
//!
//! # Passes and modes
//!
//! A *pass* (one poll) requests the first page (with `{{watermark}}` filled in from where the
//! pass starts) and follows the pagination to its end: for cursor, next-URL and `Link`-header
//! pagination only the absence of a next page ends a pass — an empty page that has a next page
//! is read past (APIs that page over their ids and then filter by the watermark return such
//! pages) — and for page-number and offset pagination, which have no other end signal, an
//! empty page does. Each page becomes one batch. In **streaming** mode the source starts a pass
//! again every `pollInterval`, asking from the highest watermark of the completed pass; a
//! `watermark` is required. In **backfill** mode it makes one pass from `watermark.start` (or
//! the beginning) and ends when that pass ends; without a `watermark` a backfill reads every
//! page once.
//!
//! # Guarantees
//!
//! * **A pass is one snapshot; the order within it does not matter.** Records are judged
//!   against where the pass started: the ones before it (and, with `watermark.idField`, the
//!   ones at exactly its watermark that were landed before) are skipped, every other record is
//!   landed, in whatever order the API returns them. Between passes the position
//!   ([`RestApiPosition`]) is the highest watermark of the completed pass plus, with
//!   `idField`, the ids landed at exactly that watermark; the next pass asks from it (the
//!   API's parameter must mean *at or after*). Records that share a watermark across a page,
//!   pass or restart boundary are landed once. Without `idField` the watermark must be
//!   strictly increasing (records at exactly the last watermark are skipped).
//! * **A restart inside a pass goes on with that pass.** Inside a pass the position also
//!   holds where the pass started, its next page (the cursor, page number or offset sent for
//!   it, or its URL), how many of its records were consumed (landed, dead-lettered or skipped
//!   as landed before) and the id of the last one ([`PassPosition`]). A restart asks for that
//!   next page and skips the rows of a partly committed page, so nothing of the pass is read
//!   twice or skipped — **as long as the API answers the stored next page with the records
//!   that followed**, which holds for cursors over a stable key (an id, the watermark) and
//!   for snapshot cursors. If the API refuses it (a 4xx such as an expired cursor), the pass
//!   is read again from its start and the records consumed before the restart are skipped
//!   (logged at WARN); that needs the API to return the same records in the same order for
//!   the same request, except that records changed since, whose watermark is now above the
//!   highest one consumed, are recognised (with `idField`) and landed. Pagination by page
//!   number or offset keeps no pages across a restart while the pass comes in ascending
//!   watermark order: the restart asks from the highest watermark landed (which tolerates
//!   records added or changed in the meantime); once a record came out of order it goes on at the stored page or
//!   offset. An API paged by number or offset whose pass is sorted up to a restart point and
//!   unsorted after it can lose, on that restart, the records below that point's watermark.
//! * **Changes while a pass runs.** The next pass asks from the highest watermark of the
//!   completed one. An API that pages over something other than the watermark (e.g. its ids)
//!   without a consistent snapshot can give a record that changes during a pass, behind the
//!   page being read, a watermark below that maximum: that change is read only with the
//!   record's next one. Prefer APIs that page by the watermark, or snapshot cursors.
//! * **Bad records** (wrong types, missing non-nullable columns, a missing or unreadable
//!   watermark) are dead-lettered with the reason, the URL and `page N record I`; they commit
//!   with the position that covers them, so a restart does not write them again.
//! * **Errors keep their cause, and retries are visible.** 429, 5xx, 408, timeouts, refused or
//!   reset connections, and a response body that is not JSON (often a proxy's error page with
//!   status 200) are retried under the `retry` block ([`RetryConfig`]: `maxAttempts`,
//!   `initialDelay`, `maxDelay`, `jitter`) with exponential backoff and jitter, honouring
//!   `Retry-After` (seconds or an HTTP date); each retry is logged at WARN with the attempt,
//!   the whole cause chain (e.g. `tcp connect error: Connection refused`) and the next delay.
//!   When the attempts run out the source fails with an error that says how many attempts were
//!   made over how long and keeps the cause: transient (exit code 2) for the network and
//!   status failures, permanent (exit code 1) for a body that is still not JSON, with the URL,
//!   the status and the first 200 characters of the body. 401 (after one OAuth2 token
//!   refresh), 403, 404 and other 4xx, a records field that is not an array, a body over
//!   `maxResponseBytes` and a next page that names the same page fail at once with a
//!   permanent error naming the URL and the HTTP status.
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
pub(crate) mod http;
pub(crate) mod source;
pub(crate) mod watermark;

pub use arcane_core::retry::RetryConfig;
pub use config::{
    ApiKeyAuth, AuthConfig, BasicAuth, BearerAuth, CursorPagination, DEFAULT_FLATTEN_SEPARATOR,
    DEFAULT_HTTP_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_POLL_INTERVAL,
    DEFAULT_REFRESH_BEFORE_EXPIRY, FieldConfig, HttpMethod, NextUrlPagination, OAuth2Auth,
    OffsetPagination, PageNumberPagination, PaginationConfig, RestApiSourceConfig, SecretSource,
    WATERMARK_VARIABLE, WatermarkConfig, WatermarkKind,
};
pub use source::RestApiSource;
pub use watermark::{PassPosition, RestApiPosition};

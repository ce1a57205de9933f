//! Push ingestion over HTTP (feature `http-ingest`): CloudEvents 1.0 (structured, binary and
//! batch modes) and JSON / NDJSON webhooks, answered 2xx only once their events are committed.
//!
//! Every other source pulls; this one serves HTTP on `address` and turns each request into one
//! positioned batch:
//!
//! | request | `Content-Type` | events |
//! |---|---|---|
//! | CloudEvent, structured mode | `application/cloudevents+json` | the JSON object |
//! | CloudEvent, binary mode | any, with `ce-specversion`, `ce-id`, `ce-source`, `ce-type` headers (`ce-subject`, `ce-time`, `ce-dataschema`, other `ce-*` = extensions) | one; the body is `data`, its `Content-Type` the `datacontenttype` |
//! | CloudEvents, batch mode | `application/cloudevents-batch+json` | each element of the JSON array |
//! | webhook | `application/json` | the object, or each object of an array |
//! | webhook | `application/x-ndjson` | each line |
//!
//! **Rows.** The attributes become the columns `ce_id`, `ce_source`, `ce_type`, `ce_subject`,
//! `ce_time` (`timestamp[ms, UTC]`), `ce_datacontenttype`, `ce_dataschema` and `ce_extensions`
//! (the extension attributes as a JSON object string, or a `map<utf8, utf8>` with
//! `extensionsFormat: map`); `data` (a webhook's object) is decoded
//! into the spec's `schema` columns (`dataFormat: columns`, through
//! [`JsonDecoder`](crate::decode::JsonDecoder)) or kept in one `data` string column
//! (`dataFormat: json`). Webhook rows have null `ce_*` columns, except `ce_id` when the
//! request carries the idempotency header (`KEY`, or `KEY:INDEX` for the objects of an array).
//!
//! **Exactly once, acknowledged after commit.** A request is all or nothing: its events are
//! emitted as one batch with one position, and the handler holds the answer until the sink has
//! committed a checkpoint at or after that position ([`Source::commit`](arcane_core::Source::commit)
//! releases it), then answers `200` with `{"accepted", "duplicates", "deadLettered",
//! "rejected"}`. If the commit fails, the stream stops (SIGTERM) or `requestTimeout` passes
//! first, the answer is `503` with `Retry-After`: the sender retries, and the retry is
//! deduplicated. A SIGTERM stops accepting (new requests `503`, `/readyz` `503`), the runner
//! drains, requests in flight are answered after the final commit, and the process exits 0.
//!
//! **Idempotency window.** Events are deduplicated by `(source, id)` (webhooks: the idempotency
//! header) within `dedup.maxIds` ids and `dedup.maxAge`; a duplicate is not written again and is
//! answered 2xx once the original is committed. The window is stored in the position of every
//! commit (16 bytes of base64 per id), so a sender retrying after a crash, whose answer was
//! lost, gets no duplicate rows — including for a request that a commit split in two (the keys of a request
//! are stored with the position before it, and the checkpoint's row count says which are in).
//! Webhooks without the idempotency header cannot be deduplicated: a retry after a lost answer
//! writes them again (at least once).
//!
//! **Who may write.** `allowedSources` (exact or `prefix*` CloudEvents `source`; 403),
//! `sourcePaths` (a path per sender: other paths 404; webhooks there take the sender's name as
//! `ce_source`, CloudEvents there must match it, 403),
//! `auth.bearerTokensEnv` (401) and `auth.hmacSecretEnv` (GitHub-style
//! `X-Hub-Signature-256: sha256=<hex>` over the body; 401). Secrets come from environment
//! variables and are never echoed. TLS is not served: terminate it in the ingress.
//!
//! **Limits.** The body is read with `maxBodyBytes` (413), at most `maxEventsPerRequest` events
//! (413), at most `maxInFlightBytes` of bodies held across requests (429 with `Retry-After`), so
//! memory stays bounded under a flood. Invalid events (a missing required attribute, malformed
//! JSON, data not fitting the schema) refuse the request with 400 naming the field, or, with
//! `deadLetterInvalid`, are dead-lettered and listed in the 2xx answer.
//!
//! **Endpoints.** `POST` any path: events. `GET /healthz`: 200 while the process serves;
//! `GET /readyz`: 200 while accepting, 503 while stopping.
//!
//! **Metrics.** [`EVENTS`], [`BYTES`], [`REJECTS`] (tag `reason`), [`DUPLICATES`],
//! [`COMMIT_LATENCY`] (histogram, seconds), with the stream's tags and a `source` tag bounded
//! by the spec: with `sourcePaths`, the `source` of the path's entry; else the `allowedSources`
//! entry the CloudEvents' `source` matched (`*` without an allow-list), `webhook`, `mixed` (a
//! batch matching several entries) or [`UNKNOWN_SOURCE`] (refused before the source was known,
//! or a source no entry allows).

mod config;
mod event;
mod rows;
mod server;
mod source;
mod window;

#[cfg(feature = "fuzzing")]
pub(crate) use {
    event::{Mode, parse},
    rows::RowBuilder,
};

pub use config::{
    AuthConfig, DEFAULT_ADDRESS, DEFAULT_DEDUP_MAX_AGE, DEFAULT_DEDUP_MAX_IDS,
    DEFAULT_HTTP_INGEST_GROUPING_INTERVAL_SECONDS, DEFAULT_IDEMPOTENCY_HEADER,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENTS_PER_REQUEST, DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_AFTER_SECONDS, DEFAULT_SIGNATURE_HEADER, DataFormat,
    DedupConfig, ExtensionsFormat, HttpIngestSourceConfig, SourcePath,
};
pub use rows::{
    DATA_COLUMN, DATACONTENTTYPE_COLUMN, DATASCHEMA_COLUMN, EXTENSIONS_COLUMN, ID_COLUMN,
    SOURCE_COLUMN, SUBJECT_COLUMN, TIME_COLUMN, TYPE_COLUMN,
};
pub use source::{
    BYTES, COMMIT_LATENCY, DUPLICATES, EVENTS, HttpIngestSource, REJECTS, UNKNOWN_SOURCE,
};

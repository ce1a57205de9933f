//! Reusable sources for Arcane streams, one module and cargo feature per service.
//!
//! | feature | module | source |
//! |---|---|---|
//! | `blob-landing` (default) | [`blob_landing`] | files landing under an object-store prefix: NDJSON, CSV, Parquet, gzip/zstd |
//! | `postgres-cdc` | [`postgres_cdc`] | PostgreSQL change data capture: consistent snapshot + `pgoutput` logical decoding |
//! | `decode` (enabled by the sources) | [`decode`] | explicit schemas in specs and JSON → Arrow decoding with bad-record isolation |

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "blob-landing")]
pub mod blob_landing;
#[cfg(feature = "decode")]
pub mod decode;
#[cfg(feature = "postgres-cdc")]
pub mod postgres_cdc;

//! Decoding records into Arrow, shared by the sources (feature `decode`, enabled by every
//! source that decodes JSON or CSV).
//!
//! * [`FieldConfig`] / [`schema_from_fields`] / [`parse_type`] — an explicit schema in a spec
//!   (`[{ "name": "id", "type": "int64", "nullable": false }]`).
//! * [`JsonDecoder`] — JSON records into batches of that schema; records that do not fit are
//!   returned with the reason, for the dead-letter queue.

#[doc(hidden)]
pub mod bench;
pub(crate) mod block;
mod csv_fast;

pub(crate) use csv_fast::Special;
pub(crate) mod fast;
mod json;
mod types;

pub use json::{Decoded, JsonDecoder};
pub use types::{FieldConfig, parse_type, schema_from_fields};

//! What a source needs, in one import: `use arcane_sources::prelude::*;`.
//!
//! The traits and types of a [`Source`], the [source runtime](crate::runtime) that runs it,
//! the schema syntax of specs, and the crates a source is written with, at the versions Arcane
//! uses (`arrow_array`, `arrow_schema`, `futures`, `tracing`, `serde`, `schemars`,
//! `async_trait`), so that a source crate does not pin its own and end up with two Arrows.
//!
//! ```
//! use arcane_sources::prelude::*;
//!
//! #[derive(Debug)]
//! struct Numbers(u64);
//!
//! impl BlockingCursor for Numbers {
//!     type Cursor = u64;
//!     fn read_after(&mut self, after: Option<&u64>, limit: usize) -> Result<CursorPage<u64>> {
//!         let from = after.map_or(0, |c| c + 1);
//!         let to = (from + limit as u64).min(self.0);
//!         let ids: Vec<i64> = (from as i64..to as i64).collect();
//!         let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
//!         let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids))])
//!             .map_err(|e| Error::fatal(e.to_string()))?;
//!         Ok(CursorPage::new(batch, (to > from).then(|| to - 1)))
//!     }
//! }
//!
//! let source = CursorPollingSource::blocking("numbers", Numbers(1_000));
//! assert_eq!(source.name(), "numbers");
//! ```

pub use std::sync::Arc;

pub use arcane_core::schema::{FieldConfig, schema_from_fields};
pub use arcane_core::{
    Checkpoint, DeadLetter, Error, Mode, Position, PositionedBatch, PositionedStream, Result,
    Retry, RetryConfig, Source, SourceStart, StreamContext,
};
pub use arrow_array::{
    self, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
pub use arrow_schema::{self, DataType, Field, Schema, SchemaRef};
pub use async_trait::async_trait;
pub use futures::{self, StreamExt};
pub use schemars::{self, JsonSchema};
pub use serde::{self, Deserialize, Serialize};
pub use tracing;

pub use crate::runtime::{
    BlockingCursor, Closed, CursorPage, CursorPollingSource, CursorRead, Output, spawn_source,
};

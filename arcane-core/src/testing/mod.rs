//! Test support for sources and sinks (feature `testing`).
//!
//! * [`GeneratorSource`] — the deterministic synthetic source (the `generator` kind, re-exported
//!   from [`crate::generator`]) with exact resume.
//! * [`MemorySink`] — an in-memory sink with a shared [`MemoryStore`] that survives "restarts".
//! * [`conformance`] — suites every `Source`/`Sink` implementation runs in its tests.
//! * [`assert_batches_eq!`](crate::assert_batches_eq) — compare batches as pretty-printed tables.

pub mod conformance;
mod memory_sink;

pub use crate::generator::{GeneratorPosition, GeneratorSource, generated_row, generator_schema};
pub use memory_sink::{MemorySink, MemoryStore, MemoryStoreHandle};

use arrow_array::RecordBatch;

/// Pretty-print batches as a table (one string per line), for [`assert_batches_eq!`](crate::assert_batches_eq).
pub fn pretty_lines(batches: &[RecordBatch]) -> Vec<String> {
    match arrow_cast::pretty::pretty_format_batches(batches) {
        Ok(table) => table.to_string().lines().map(str::to_string).collect(),
        Err(e) => vec![format!("<cannot format batches: {e}>")],
    }
}

/// Total rows of `batches`.
pub fn total_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Assert that `batches` pretty-print as the `expected` table lines.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Int64Array, RecordBatch};
/// let batch = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
/// arcane_core::assert_batches_eq!(
///     ["+----+", "| id |", "+----+", "| 1  |", "| 2  |", "+----+"],
///     &[batch]
/// );
/// ```
#[macro_export]
macro_rules! assert_batches_eq {
    ($expected:expr, $batches:expr $(,)?) => {{
        let expected: Vec<String> = $expected.iter().map(|s| s.to_string()).collect();
        let actual = $crate::testing::pretty_lines($batches);
        assert_eq!(
            expected,
            actual,
            "\n\nexpected:\n\n{}\n\nactual:\n\n{}\n\n",
            expected.join("\n"),
            actual.join("\n")
        );
    }};
}

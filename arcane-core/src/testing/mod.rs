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
///
/// Timestamps with a time zone are shown as UTC instants (the zone is dropped: the printer
/// cannot resolve zone names without a time-zone database). Panics when the batches cannot be
/// printed: a comparison of two error messages would pass whatever the rows are.
pub fn pretty_lines(batches: &[RecordBatch]) -> Vec<String> {
    let printable: Vec<RecordBatch> = batches.iter().map(without_time_zones).collect();
    match arrow_cast::pretty::pretty_format_batches(&printable) {
        Ok(table) => table.to_string().lines().map(str::to_string).collect(),
        Err(e) => panic!("cannot pretty-print the batches to compare them: {e}"),
    }
}

/// `batch` with every `Timestamp(unit, Some(zone))` column as `Timestamp(unit, None)` (the same
/// instants, in UTC).
fn without_time_zones(batch: &RecordBatch) -> RecordBatch {
    use arrow_schema::{DataType, Field, Schema};
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(unit, Some(_)) => {
                let plain = DataType::Timestamp(*unit, None);
                let cast = arrow_cast::cast(column, &plain)
                    .unwrap_or_else(|e| panic!("cannot drop the zone of {}: {e}", field.name()));
                fields.push(Field::new(field.name(), plain, field.is_nullable()));
                columns.push(cast);
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
        .unwrap_or_else(|e| panic!("cannot rebuild the batch without zones: {e}"))
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

//! `sink.writer.dictionary: auto`: which columns of strings, bytes or fixed-width values
//! (numbers, decimals, dates, times) are written without a dictionary, decided from the first
//! batch of a file and kept for the sink's lifetime.

use std::collections::{BTreeMap, HashSet};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Fields};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::parquet::config::{
    DICTIONARY_MAX_DISTINCT_RATIO, DICTIONARY_MIN_SAMPLE, DICTIONARY_SAMPLE,
};

/// The decisions of `dictionary: auto`: per column path, whether it is written plain.
#[derive(Debug, Default)]
pub(crate) struct DictionaryAuto {
    plain: BTreeMap<Vec<String>, bool>,
}

impl DictionaryAuto {
    /// Decide the string, binary and fixed-width columns (top-level or in structs) not decided yet from
    /// `batch`, each on up to [`DICTIONARY_SAMPLE`] of its non-null values when it has at
    /// least [`DICTIONARY_MIN_SAMPLE`]; true when every such column is decided.
    pub(crate) fn decide(&mut self, batch: &RecordBatch) -> bool {
        let mut all = true;
        let fields = batch.schema().fields().clone();
        self.decide_fields(&fields, batch.columns(), &mut Vec::new(), &mut all);
        all
    }

    fn decide_fields(
        &mut self,
        fields: &Fields,
        arrays: &[ArrayRef],
        path: &mut Vec<String>,
        all: &mut bool,
    ) {
        for (field, array) in fields.iter().zip(arrays) {
            path.push(field.name().clone());
            match array.data_type() {
                DataType::Struct(children) => {
                    let s = array.as_struct();
                    self.decide_fields(children, s.columns(), path, all);
                }
                _ if !self.plain.contains_key(path.as_slice()) => {
                    if let Some((sampled, distinct)) = sample(array.as_ref()) {
                        if sampled >= DICTIONARY_MIN_SAMPLE {
                            let plain =
                                distinct as f64 > sampled as f64 * DICTIONARY_MAX_DISTINCT_RATIO;
                            if plain {
                                tracing::info!(column = %path.join("."), sampled, distinct, "dictionary: auto writes this column without a dictionary (mostly distinct values)");
                            }
                            self.plain.insert(path.clone(), plain);
                        } else {
                            *all = false;
                        }
                    }
                }
                _ => {}
            }
            path.pop();
        }
    }

    /// `props` with the dictionary turned off for the columns decided plain.
    pub(crate) fn apply(&self, props: WriterProperties) -> WriterProperties {
        let mut b = props.into_builder();
        for (path, plain) in &self.plain {
            if *plain {
                b = b.set_column_dictionary_enabled(ColumnPath::new(path.clone()), false);
            }
        }
        b.build()
    }

    /// The columns decided plain, as dotted paths.
    #[cfg(test)]
    pub(crate) fn plain_columns(&self) -> Vec<String> {
        self.plain
            .iter()
            .filter(|(_, p)| **p)
            .map(|(k, _)| k.join("."))
            .collect()
    }
}

/// For an array of strings, bytes or fixed-width values: how many of its first
/// [`DICTIONARY_SAMPLE`] non-null values were sampled and how many of them are distinct;
/// `None` for other types (booleans, nested types).
fn sample(array: &dyn Array) -> Option<(usize, usize)> {
    fn count<'a>(values: impl Iterator<Item = Option<&'a [u8]>>) -> (usize, usize) {
        let mut seen = HashSet::with_capacity(DICTIONARY_SAMPLE);
        let mut sampled = 0;
        for v in values.flatten().take(DICTIONARY_SAMPLE) {
            sampled += 1;
            seen.insert(v);
        }
        (sampled, seen.len())
    }
    Some(match array.data_type() {
        DataType::Utf8 => count(
            array
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::as_bytes)),
        ),
        DataType::LargeUtf8 => count(
            array
                .as_string::<i64>()
                .iter()
                .map(|v| v.map(str::as_bytes)),
        ),
        DataType::Utf8View => count(array.as_string_view().iter().map(|v| v.map(str::as_bytes))),
        DataType::Binary => count(array.as_binary::<i32>().iter()),
        DataType::LargeBinary => count(array.as_binary::<i64>().iter()),
        DataType::BinaryView => count(array.as_binary_view().iter()),
        DataType::FixedSizeBinary(_) => count(array.as_fixed_size_binary().iter()),
        // Integers, floats, decimals, dates and times: their values' bytes. (A unique key or
        // timestamp would otherwise be interned into a dictionary until it outgrows its page
        // limit, in every row group.)
        dt => {
            let width = dt.primitive_width()?;
            let data = array.to_data();
            let values = data.buffers().first()?.as_slice();
            let offset = data.offset();
            count((0..data.len()).map(|i| {
                data.is_valid(i)
                    .then(|| values.get((offset + i) * width..(offset + i + 1) * width))
                    .flatten()
            }))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray, StructArray};
    use arrow_schema::{Field, Schema};

    use super::*;

    fn strings(n: usize, distinct: usize) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("value-{}", i % distinct)),
        ))
    }

    #[test]
    fn mostly_distinct_string_columns_are_plain() {
        let inner = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("id", DataType::Utf8, false)),
            strings(10_000, 10_000),
        )]));
        let schema = Arc::new(Schema::new(vec![
            Field::new("uuid", DataType::Utf8, false),
            Field::new("country", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
            Field::new("s", inner.data_type().clone(), false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                strings(10_000, 10_000),
                strings(10_000, 50),
                Arc::new(Int64Array::from_iter_values((0..10_000).map(|i| i % 7))),
                inner,
            ],
        )
        .expect("batch");
        let mut auto = DictionaryAuto::default();
        assert!(auto.decide(&batch));
        assert_eq!(auto.plain_columns(), ["s.id", "uuid"]);
        let props = auto.apply(WriterProperties::builder().build());
        assert!(!props.dictionary_enabled(&ColumnPath::from("uuid")));
        assert!(!props.dictionary_enabled(&ColumnPath::new(vec!["s".into(), "id".into()])));
        assert!(props.dictionary_enabled(&ColumnPath::from("country")));
        assert!(props.dictionary_enabled(&ColumnPath::from("n")));
    }

    #[test]
    fn mostly_distinct_fixed_width_columns_are_plain_nulls_and_offsets_aside() {
        use arrow_array::{Float64Array, TimestampMicrosecondArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("score", DataType::Float64, true),
            Field::new(
                "at",
                TimestampMicrosecondArray::new_null(0).data_type().clone(),
                true,
            ),
            Field::new("flag", DataType::Boolean, false),
        ]));
        // `score`: distinct values only at odd rows, nulls at even ones; a slice whose offset
        // would read the wrong values if it were not applied.
        let score = Float64Array::from_iter((0..20_000).map(|i| (i % 2 == 1).then_some(i as f64)));
        let at = TimestampMicrosecondArray::from_iter_values((0..20_000).map(|i| i / 1000));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..20_000)),
                Arc::new(score),
                Arc::new(at),
                Arc::new(arrow_array::BooleanArray::from(vec![true; 20_000])),
            ],
        )
        .expect("batch");
        let mut auto = DictionaryAuto::default();
        assert!(auto.decide(&batch.slice(3, 15_000)));
        assert_eq!(auto.plain_columns(), ["id", "score"]);
        let props = auto.apply(WriterProperties::builder().build());
        assert!(!props.dictionary_enabled(&ColumnPath::from("id")));
        assert!(props.dictionary_enabled(&ColumnPath::from("at")));
        assert!(props.dictionary_enabled(&ColumnPath::from("flag")));
        // A column of few values at the start of its values buffer, sliced from after them:
        // all the same value, so it keeps its dictionary.
        let few = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, false)]));
        let n = arrow_array::Int32Array::from_iter_values(
            (0..20_000).map(|i| if i < 10_000 { i } else { 5 }),
        );
        let batch = RecordBatch::try_new(few, vec![Arc::new(n)]).expect("batch");
        let mut auto = DictionaryAuto::default();
        assert!(auto.decide(&batch.slice(10_000, 10_000)));
        assert!(auto.plain_columns().is_empty());
    }

    #[test]
    fn small_samples_wait_for_a_later_batch() {
        let schema = Arc::new(Schema::new(vec![Field::new("uuid", DataType::Utf8, true)]));
        let small =
            RecordBatch::try_new(schema.clone(), vec![strings(10, 10)]).expect("small batch");
        let mut auto = DictionaryAuto::default();
        assert!(!auto.decide(&small));
        assert!(auto.plain_columns().is_empty());
        let nulls: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>; 5000]));
        let empty = RecordBatch::try_new(schema.clone(), vec![nulls]).expect("null batch");
        assert!(!auto.decide(&empty));
        let big = RecordBatch::try_new(schema, vec![strings(3000, 3000)]).expect("big batch");
        assert!(auto.decide(&big));
        assert_eq!(auto.plain_columns(), ["uuid"]);
    }
}

//! Property: the NDJSON decoder ([`JsonDecoder`]) agrees with `arrow-json`'s own reader on
//! random records of a random schema. Each record is read alone by `arrow-json` (the oracle);
//! the records it reads must be exactly the rows of the decoder's batch (same values, same
//! nulls, in order) and the records it refuses exactly the decoder's rejections.
//!
//! Values are valid for their column, null, missing, or of another JSON type. Numbers with a
//! fraction in integer columns are left out: `arrow-json` truncates them, the decoder rejects
//! them on purpose (see `decode::block`).

use std::sync::Arc;

use arcane_sources::decode::JsonDecoder;
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// The column types of the random schemas.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Int,
    Float,
    Str,
    Bool,
}

impl Ty {
    fn data_type(self) -> DataType {
        match self {
            Ty::Int => DataType::Int64,
            Ty::Float => DataType::Float64,
            Ty::Str => DataType::Utf8,
            Ty::Bool => DataType::Boolean,
        }
    }

    /// A value of a record for a column of this type; `None` leaves the key out.
    fn value(self) -> BoxedStrategy<Option<Value>> {
        let valid: BoxedStrategy<Value> = match self {
            Ty::Int => any::<i64>().prop_map(Value::from).boxed(),
            Ty::Float => (-1e12f64..1e12).prop_map(|v| json!(v)).boxed(),
            Ty::Str => "[a-z é]{0,8}".prop_map(Value::from).boxed(),
            Ty::Bool => any::<bool>().prop_map(Value::from).boxed(),
        };
        let wrong: Value = match self {
            Ty::Int | Ty::Float => json!("x"),
            Ty::Str => json!({"nested": 1}),
            Ty::Bool => json!(7),
        };
        prop_oneof![
            6 => valid.prop_map(Some),
            1 => Just(None),
            1 => Just(Some(Value::Null)),
            1 => Just(Some(wrong)),
            1 => Just(Some(json!([1, 2]))),
        ]
        .boxed()
    }
}

fn ty() -> impl Strategy<Value = Ty> {
    prop_oneof![
        Just(Ty::Int),
        Just(Ty::Float),
        Just(Ty::Str),
        Just(Ty::Bool)
    ]
}

/// A schema of 1–5 columns and up to 20 records of it.
fn case() -> impl Strategy<Value = (SchemaRef, Vec<String>)> {
    prop::collection::vec((ty(), any::<bool>()), 1..=5).prop_flat_map(|columns| {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .enumerate()
                .map(|(i, (t, nullable))| Field::new(format!("c{i}"), t.data_type(), *nullable))
                .collect::<Vec<_>>(),
        ));
        let record = columns
            .iter()
            .map(|(t, _)| t.value())
            .collect::<Vec<_>>()
            .prop_map(|values| {
                let mut object = Map::new();
                for (i, v) in values.into_iter().enumerate() {
                    if let Some(v) = v {
                        object.insert(format!("c{i}"), v);
                    }
                }
                Value::Object(object).to_string()
            });
        (Just(schema), prop::collection::vec(record, 0..20))
    })
}

/// `arrow-json`'s reading of one record: its row, or `None` when it refuses it.
fn oracle(schema: &SchemaRef, record: &str) -> Option<RecordBatch> {
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .build_decoder()
        .ok()?;
    decoder.decode(record.as_bytes()).ok()?;
    decoder.flush().ok()?.filter(|b| b.num_rows() == 1)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_decoder_agrees_with_arrow_json((schema, records) in case()) {
        let out = JsonDecoder::new(schema.clone()).decode(&records);
        let expected: Vec<Option<RecordBatch>> =
            records.iter().map(|r| oracle(&schema, r)).collect();
        let refused: Vec<usize> = expected
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.is_none().then_some(i))
            .collect();
        let rejected: Vec<usize> = out.rejected.iter().map(|(i, _)| *i).collect();
        prop_assert_eq!(&rejected, &refused, "records: {:?}", records);
        let rows: Vec<RecordBatch> = expected.into_iter().flatten().collect();
        let rows = arrow_select::concat::concat_batches(&schema, &rows).unwrap();
        prop_assert_eq!(&out.batch, &rows, "records: {:?}", records);
    }
}

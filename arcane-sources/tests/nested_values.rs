//! Values inside structs and lists get the same care as top-level ones: a number with a
//! fraction in a nested integer field is rejected (never truncated), and nested `UTC`
//! timestamps are read.

use std::sync::Arc;

use arcane_sources::decode::JsonDecoder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ListArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};

fn schema() -> Arc<Schema> {
    let item = Fields::from(vec![
        Field::new("qty", DataType::Int64, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
    ]);
    Arc::new(Schema::new(vec![
        Field::new("s", DataType::Struct(item.clone()), true),
        Field::new(
            "items",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(item), true))),
            true,
        ),
        Field::new(
            "ints",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            true,
        ),
    ]))
}

#[test]
fn nested_integers_with_a_fraction_are_rejected_not_truncated() {
    let mut d = JsonDecoder::new(schema());
    let out = d.decode(&[
        r#"{"s": {"qty": 1.5}}"#,
        r#"{"items": [{"qty": 2}, {"qty": 2.25}]}"#,
        r#"{"ints": [1, 2.5]}"#,
        r#"{"ints": [1, 3000000000]}"#,
        r#"{"s": {"qty": 7}, "items": [{"qty": 8}], "ints": [9, 10.0]}"#,
    ]);
    let rejected: Vec<usize> = out.rejected.iter().map(|(i, _)| *i).collect();
    assert_eq!(rejected, [0, 1, 2, 3], "{:?}", out.rejected);
    for (_, reason) in &out.rejected[..3] {
        assert!(reason.contains("not an integer"), "{reason}");
    }
    // The reason names where the value is.
    let paths: Vec<&str> = out.rejected[..4]
        .iter()
        .map(|(_, r)| r.split('"').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(paths, ["s.qty", "items[].qty", "ints[]", "ints[]"]);
    assert!(
        out.rejected[3].1.contains("does not fit"),
        "{}",
        out.rejected[3].1
    );
    assert_eq!(out.batch.num_rows(), 1);
    let s = out
        .batch
        .column(0)
        .as_any()
        .downcast_ref::<StructArray>()
        .expect("struct");
    assert_eq!(s.column(0).as_primitive::<Int64Type>().value(0), 7);
    let ints = out
        .batch
        .column(2)
        .as_any()
        .downcast_ref::<ListArray>()
        .expect("list");
    let values = ints.value(0);
    let values = values.as_primitive::<arrow_array::types::Int32Type>();
    assert_eq!(values.values().to_vec(), [9, 10]);
}

#[test]
fn nested_utc_timestamps_are_read() {
    let mut d = JsonDecoder::new(schema());
    let out = d.decode(&[
        r#"{"s": {"at": "2026-01-02T03:04:05.678Z"}, "items": [{"at": "2026-01-02T03:04:05+01:00"}]}"#,
    ]);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.batch.schema(), schema());
    let s = out
        .batch
        .column(0)
        .as_any()
        .downcast_ref::<StructArray>()
        .expect("struct");
    let at = s.column(1).as_primitive::<TimestampMillisecondType>();
    assert_eq!(at.value(0), 1_767_323_045_678);
    let items = out
        .batch
        .column(1)
        .as_any()
        .downcast_ref::<ListArray>()
        .expect("list");
    let first = items.value(0);
    let first = first
        .as_any()
        .downcast_ref::<StructArray>()
        .expect("struct");
    let at = first.column(1).as_primitive::<TimestampMillisecondType>();
    assert_eq!(at.value(0), 1_767_319_445_000);
    assert!(at.is_valid(0));
}

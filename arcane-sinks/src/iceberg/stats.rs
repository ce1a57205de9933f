//! A data file's Iceberg metrics from its Parquet footer: `record_count`, and per leaf column
//! (by Parquet field id) `column_sizes`, `value_counts`, `null_value_counts`; lower and upper
//! bounds in Iceberg's single-value binary serialization for top-level `int`, `long`,
//! `float`, `double`, `date`, `timestamp`, `timestamptz`, `string` and `boolean` columns.
//! A column without exact statistics in every row group gets no bounds (allowed: readers then
//! read the file).

use std::collections::{BTreeMap, HashMap};

use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;

/// Strings longer than this (in bytes) get no bounds, so manifests stay small.
const MAX_STRING_BOUND: usize = 64;

/// The metrics of one data file, keyed by Iceberg field id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Rows in the file.
    pub record_count: i64,
    /// Compressed bytes of each leaf column.
    pub column_sizes: BTreeMap<i32, i64>,
    /// Values (nulls included) of each leaf column.
    pub value_counts: BTreeMap<i32, i64>,
    /// Nulls of each leaf column (only where every row group has the count).
    pub null_value_counts: BTreeMap<i32, i64>,
    /// Lower bounds (single-value serialization).
    pub lower_bounds: BTreeMap<i32, Vec<u8>>,
    /// Upper bounds (single-value serialization).
    pub upper_bounds: BTreeMap<i32, Vec<u8>>,
    /// The Parquet field id of each top-level column, by name (checked against the table).
    pub top_level_ids: BTreeMap<String, i32>,
}

/// The metrics of a file with footer `meta`; `types` maps field ids to Iceberg primitive
/// type names (from the table schema the file was written for).
pub fn metrics(meta: &ParquetMetaData, types: &HashMap<i64, String>) -> Metrics {
    let mut m = Metrics {
        record_count: meta.row_groups().iter().map(|g| g.num_rows()).sum(),
        ..Metrics::default()
    };
    let descr = meta.file_metadata().schema_descr();
    for f in descr.root_schema().get_fields() {
        let info = f.get_basic_info();
        if info.has_id() {
            m.top_level_ids.insert(info.name().to_string(), info.id());
        }
    }
    for col in 0..descr.num_columns() {
        let column = descr.column(col);
        let info = column.self_type().get_basic_info();
        if !info.has_id() {
            continue;
        }
        let id = info.id();
        let top_level = column.path().parts().len() == 1;
        let mut size = 0i64;
        let mut values = 0i64;
        let mut nulls = Some(0i64);
        let mut bounds: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut bounds_ok = top_level;
        let ty = types.get(&i64::from(id)).map(String::as_str);
        for rg in meta.row_groups() {
            let c = rg.column(col);
            size += c.compressed_size();
            values += c.num_values();
            let Some(s) = c.statistics() else {
                nulls = None;
                bounds_ok = false;
                continue;
            };
            nulls = nulls.zip(s.null_count_opt()).map(|(a, b)| a + b as i64);
            if !bounds_ok {
                continue;
            }
            if s.null_count_opt() == Some(rg.num_rows().max(0) as u64) {
                continue; // all null: no bounds
            }
            match (ty.and_then(|t| chunk_bounds(s, t)), bounds.take()) {
                (Some((lo, hi)), None) => bounds = Some((lo, hi)),
                (Some((lo, hi)), Some((a, b))) => {
                    let t = ty.unwrap_or_default();
                    bounds = Some((
                        if less(t, &lo, &a) { lo } else { a },
                        if less(t, &b, &hi) { hi } else { b },
                    ));
                }
                (None, _) => bounds_ok = false,
            }
        }
        m.column_sizes.insert(id, size);
        m.value_counts.insert(id, values);
        if let Some(n) = nulls {
            m.null_value_counts.insert(id, n);
        }
        if bounds_ok && let Some((lo, hi)) = bounds {
            m.lower_bounds.insert(id, lo);
            m.upper_bounds.insert(id, hi);
        }
    }
    m
}

/// Compare two serialized bounds of Iceberg type `t`.
fn less(t: &str, a: &[u8], b: &[u8]) -> bool {
    fn arr<const N: usize>(x: &[u8]) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&x[..N.min(x.len())]);
        out
    }
    match t {
        "int" | "date" if a.len() == 4 && b.len() == 4 => {
            i32::from_le_bytes(arr(a)) < i32::from_le_bytes(arr(b))
        }
        "long" | "timestamp" | "timestamptz" if a.len() == 8 && b.len() == 8 => {
            i64::from_le_bytes(arr(a)) < i64::from_le_bytes(arr(b))
        }
        "float" if a.len() == 4 && b.len() == 4 => {
            f32::from_le_bytes(arr(a)) < f32::from_le_bytes(arr(b))
        }
        "double" if a.len() == 8 && b.len() == 8 => {
            f64::from_le_bytes(arr(a)) < f64::from_le_bytes(arr(b))
        }
        // string (UTF-8 bytes order as code points do) and boolean (0 < 1)
        _ => a < b,
    }
}

/// One row group's (min, max) of a column chunk of Iceberg type `t`, serialized.
fn chunk_bounds(s: &Statistics, t: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    if !s.min_is_exact() || !s.max_is_exact() {
        return None;
    }
    match (s, t) {
        (Statistics::Int32(v), "int" | "date") => Some((
            v.min_opt()?.to_le_bytes().to_vec(),
            v.max_opt()?.to_le_bytes().to_vec(),
        )),
        (Statistics::Int64(v), "long" | "timestamp" | "timestamptz") => Some((
            v.min_opt()?.to_le_bytes().to_vec(),
            v.max_opt()?.to_le_bytes().to_vec(),
        )),
        (Statistics::Float(v), "float") => {
            let (lo, hi) = (*v.min_opt()?, *v.max_opt()?);
            (lo.is_finite() && hi.is_finite())
                .then(|| (lo.to_le_bytes().to_vec(), hi.to_le_bytes().to_vec()))
        }
        (Statistics::Double(v), "double") => {
            let (lo, hi) = (*v.min_opt()?, *v.max_opt()?);
            (lo.is_finite() && hi.is_finite())
                .then(|| (lo.to_le_bytes().to_vec(), hi.to_le_bytes().to_vec()))
        }
        (Statistics::Boolean(v), "boolean") => {
            Some((vec![u8::from(*v.min_opt()?)], vec![u8::from(*v.max_opt()?)]))
        }
        (Statistics::ByteArray(v), "string") => {
            let (lo, hi) = (v.min_opt()?.data(), v.max_opt()?.data());
            (std::str::from_utf8(lo).is_ok()
                && std::str::from_utf8(hi).is_ok()
                && lo.len() <= MAX_STRING_BOUND
                && hi.len() <= MAX_STRING_BOUND)
                .then(|| (lo.to_vec(), hi.to_vec()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iceberg::schema::{field_types, iceberg_schema, with_field_ids};
    use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::reader::FileReader;
    use parquet::file::serialized_reader::SerializedFileReader;
    use std::sync::Arc;

    #[test]
    fn metrics_by_field_id_with_single_value_bounds() {
        let arrow = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ok", DataType::Boolean, false),
        ]);
        let (ice, _) = iceberg_schema(&arrow, None, 0).expect("schema");
        let schema = Arc::new(with_field_ids(&arrow, &ice));
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, schema.clone(), None).expect("writer");
        for (ids, names) in [
            (
                vec![Some(5), None, Some(9)],
                vec![Some("m"), Some("b"), None],
            ),
            (
                vec![Some(-3), Some(4), Some(0)],
                vec![Some("z"), Some("c"), Some("d")],
            ),
        ] {
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
                Arc::new(BooleanArray::from(vec![true, false, true])),
            ];
            w.write(&RecordBatch::try_new(schema.clone(), cols).expect("batch"))
                .expect("write");
            w.flush().expect("row group");
        }
        w.close().expect("close");
        let meta = SerializedFileReader::new(bytes::Bytes::from(buf))
            .expect("read")
            .metadata()
            .clone();
        let m = metrics(&meta, &field_types(&ice));
        assert_eq!(m.record_count, 6);
        assert_eq!(m.value_counts, BTreeMap::from([(1, 6), (2, 6), (3, 6)]));
        assert_eq!(
            m.null_value_counts,
            BTreeMap::from([(1, 1), (2, 1), (3, 0)])
        );
        assert_eq!(m.lower_bounds[&1], (-3i64).to_le_bytes().to_vec());
        assert_eq!(m.upper_bounds[&1], 9i64.to_le_bytes().to_vec());
        assert_eq!(m.lower_bounds[&2], b"b".to_vec());
        assert_eq!(m.upper_bounds[&2], b"z".to_vec());
        assert_eq!(m.lower_bounds[&3], vec![0]);
        assert_eq!(m.upper_bounds[&3], vec![1]);
        assert!(m.column_sizes.values().all(|s| *s > 0));
        assert_eq!(
            m.top_level_ids,
            BTreeMap::from([("id".into(), 1), ("name".into(), 2), ("ok".into(), 3)])
        );
    }
}

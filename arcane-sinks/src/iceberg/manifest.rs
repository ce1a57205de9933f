//! Iceberg manifests and manifest lists (format v2) as Avro Object Container Files, with the
//! `field-id`s of the Iceberg specification's `manifest_entry`, `data_file` and
//! `manifest_file` structs.

use serde_json::Value;

use super::avro::{
    ContainerWriter, Datum, write_array, write_bool, write_bytes, write_long, write_string,
    write_union_branch,
};
use super::partition::{self, Tuple};
use super::stats::Metrics;

/// A map of field id → value, as Iceberg writes maps with non-string keys: an array of
/// key/value records with `logicalType: map`.
fn map_type(field: &str, id: u32, key_id: u32, value_id: u32, value: &str, doc: &str) -> String {
    format!(
        r#"{{"name":"{field}","type":["null",{{"type":"array","logicalType":"map","items":{{"type":"record","name":"k{key_id}_v{value_id}","fields":[{{"name":"key","type":"int","field-id":{key_id}}},{{"name":"value","type":"{value}","field-id":{value_id}}}]}}}}],"default":null,"field-id":{id},"doc":"{doc}"}}"#
    )
}

/// The Avro schema of a v2 manifest of a table whose partition spec has `spec` (its
/// `data_file.partition` record derived from the spec's fields).
pub fn manifest_entry_schema(spec: &[partition::Field]) -> String {
    let data_file = [
        r#"{"name":"content","type":"int","field-id":134,"doc":"Contents of the file: 0=data, 1=position deletes, 2=equality deletes"}"#.to_string(),
        r#"{"name":"file_path","type":"string","field-id":100,"doc":"Location URI with FS scheme"}"#.to_string(),
        r#"{"name":"file_format","type":"string","field-id":101,"doc":"File format name: avro, orc, or parquet"}"#.to_string(),
        format!(r#"{{"name":"partition","type":{},"field-id":102,"doc":"Partition data tuple, schema based on the partition spec"}}"#, partition::avro_record(spec)),
        r#"{"name":"record_count","type":"long","field-id":103,"doc":"Number of records in the file"}"#.to_string(),
        r#"{"name":"file_size_in_bytes","type":"long","field-id":104,"doc":"Total file size in bytes"}"#.to_string(),
        map_type("column_sizes", 108, 117, 118, "long", "Map of column id to total size on disk"),
        map_type("value_counts", 109, 119, 120, "long", "Map of column id to total count, including null and NaN"),
        map_type("null_value_counts", 110, 121, 122, "long", "Map of column id to null value count"),
        map_type("nan_value_counts", 137, 138, 139, "long", "Map of column id to number of NaN values in the column"),
        map_type("lower_bounds", 125, 126, 127, "bytes", "Map of column id to lower bound"),
        map_type("upper_bounds", 128, 129, 130, "bytes", "Map of column id to upper bound"),
        r#"{"name":"key_metadata","type":["null","bytes"],"default":null,"field-id":131,"doc":"Encryption key metadata blob"}"#.to_string(),
        r#"{"name":"split_offsets","type":["null",{"type":"array","items":"long","element-id":133}],"default":null,"field-id":132,"doc":"Splittable offsets"}"#.to_string(),
        r#"{"name":"equality_ids","type":["null",{"type":"array","items":"int","element-id":136}],"default":null,"field-id":135,"doc":"Equality comparison field IDs"}"#.to_string(),
        r#"{"name":"sort_order_id","type":["null","int"],"default":null,"field-id":140,"doc":"Sort order ID"}"#.to_string(),
    ];
    format!(
        r#"{{"type":"record","name":"manifest_entry","fields":[{{"name":"status","type":"int","field-id":0}},{{"name":"snapshot_id","type":["null","long"],"default":null,"field-id":1}},{{"name":"sequence_number","type":["null","long"],"default":null,"field-id":3}},{{"name":"file_sequence_number","type":["null","long"],"default":null,"field-id":4}},{{"name":"data_file","type":{{"type":"record","name":"r2","fields":[{}]}},"field-id":2}}]}}"#,
        data_file.join(",")
    )
}

/// The Avro schema of a v2 manifest list.
pub const MANIFEST_FILE_SCHEMA: &str = r#"{"type":"record","name":"manifest_file","fields":[
{"name":"manifest_path","type":"string","field-id":500,"doc":"Location URI with FS scheme"},
{"name":"manifest_length","type":"long","field-id":501,"doc":"Total file size in bytes"},
{"name":"partition_spec_id","type":"int","field-id":502,"doc":"Spec ID used to write"},
{"name":"content","type":"int","field-id":517,"doc":"Contents of the manifest: 0=data, 1=deletes"},
{"name":"sequence_number","type":"long","field-id":515,"doc":"Sequence number when the manifest was added"},
{"name":"min_sequence_number","type":"long","field-id":516,"doc":"Lowest sequence number in the manifest"},
{"name":"added_snapshot_id","type":"long","field-id":503,"doc":"Snapshot ID that added the manifest"},
{"name":"added_files_count","type":"int","field-id":504,"doc":"Added entry count"},
{"name":"existing_files_count","type":"int","field-id":505,"doc":"Existing entry count"},
{"name":"deleted_files_count","type":"int","field-id":506,"doc":"Deleted entry count"},
{"name":"added_rows_count","type":"long","field-id":512,"doc":"Added rows count"},
{"name":"existing_rows_count","type":"long","field-id":513,"doc":"Existing rows count"},
{"name":"deleted_rows_count","type":"long","field-id":514,"doc":"Deleted rows count"},
{"name":"partitions","type":["null",{"type":"array","items":{"type":"record","name":"r508","fields":[
  {"name":"contains_null","type":"boolean","field-id":509,"doc":"True if any file has a null partition value"},
  {"name":"contains_nan","type":["null","boolean"],"default":null,"field-id":518,"doc":"True if any file has a nan partition value"},
  {"name":"lower_bound","type":["null","bytes"],"default":null,"field-id":510,"doc":"Partition lower bound for all files"},
  {"name":"upper_bound","type":["null","bytes"],"default":null,"field-id":511,"doc":"Partition upper bound for all files"}]},"element-id":508}],
 "default":null,"field-id":507,"doc":"Summary for each partition"},
{"name":"key_metadata","type":["null","bytes"],"default":null,"field-id":519,"doc":"Encryption key metadata blob"}]}"#;

/// One data file of a manifest.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Its absolute URL.
    pub path: String,
    /// Its size in bytes.
    pub size: i64,
    /// Its metrics.
    pub metrics: Metrics,
    /// Its partition tuple (one value per spec field).
    pub partition: Tuple,
}

fn write_map<V>(
    out: &mut Vec<u8>,
    m: &std::collections::BTreeMap<i32, V>,
    value: impl Fn(&mut Vec<u8>, &V),
) {
    write_union_branch(out, true);
    let items: Vec<(&i32, &V)> = m.iter().collect();
    write_array(out, &items, |o, (k, v)| {
        write_long(o, i64::from(**k));
        value(o, v);
    });
}

/// A manifest adding `files` in snapshot `snapshot_id` (status ADDED, sequence numbers
/// inherited from the manifest list, so the file stays valid when a commit is retried at
/// another sequence number). `header` holds the Iceberg metadata keys.
pub fn write_manifest(
    files: &[DataFile],
    snapshot_id: i64,
    spec: &[partition::Field],
    header: &[(&str, String)],
) -> Vec<u8> {
    let schema = manifest_entry_schema(spec);
    let mut w = ContainerWriter::new(&schema, header);
    for f in files {
        w.append(|o| {
            write_long(o, 1); // status: ADDED
            write_union_branch(o, true);
            write_long(o, snapshot_id);
            write_union_branch(o, false); // sequence_number: inherited
            write_union_branch(o, false); // file_sequence_number: inherited
            write_long(o, 0); // content: data
            write_string(o, &f.path);
            write_string(o, "PARQUET");
            partition::write_tuple(o, spec, &f.partition);
            write_long(o, f.metrics.record_count);
            write_long(o, f.size);
            write_map(o, &f.metrics.column_sizes, |o, v| write_long(o, *v));
            write_map(o, &f.metrics.value_counts, |o, v| write_long(o, *v));
            write_map(o, &f.metrics.null_value_counts, |o, v| write_long(o, *v));
            write_union_branch(o, false); // nan_value_counts
            write_map(o, &f.metrics.lower_bounds, |o, v| write_bytes(o, v));
            write_map(o, &f.metrics.upper_bounds, |o, v| write_bytes(o, v));
            write_union_branch(o, false); // key_metadata
            write_union_branch(o, false); // split_offsets
            write_union_branch(o, false); // equality_ids
            write_union_branch(o, true);
            write_long(o, 0); // sort_order_id: unsorted
        });
    }
    w.finish()
}

/// A live data file of a manifest (status ADDED or EXISTING), with its sequence numbers
/// resolved, as an overwrite's DELETED entry lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveFile {
    /// `file_path`.
    pub path: String,
    /// `file_format`.
    pub format: String,
    /// `record_count`.
    pub record_count: i64,
    /// `file_size_in_bytes`.
    pub size: i64,
    /// The data sequence number.
    pub sequence_number: i64,
    /// The file sequence number.
    pub file_sequence_number: i64,
    /// Its partition tuple (by the fields of the spec it was read with).
    pub partition: Tuple,
}

/// The live data files of the data manifest `of` (read by field id, any v2 writer): entries
/// whose status is not DELETED (2); null sequence numbers are inherited from the manifest
/// list's entry, as the spec says for ADDED entries.
pub fn read_live_files(
    records: &[Datum],
    of: &ManifestFile,
    spec: &[partition::Field],
) -> Result<Vec<LiveFile>, String> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let status = r
            .field(0)
            .and_then(Datum::as_long)
            .ok_or_else(|| format!("entry {i} has no status (field 0)"))?;
        if status == 2 {
            continue;
        }
        let Some(df) = r.field(2) else {
            return Err(format!("entry {i} has no data_file (field 2)"));
        };
        if df.field(134).and_then(Datum::as_long).unwrap_or(0) != 0 {
            continue; // a delete file
        }
        let long = |id: i64| {
            df.field(id)
                .and_then(Datum::as_long)
                .ok_or_else(|| format!("entry {i}'s data_file has no field {id}"))
        };
        let string = |id: i64| match df.field(id) {
            Some(Datum::Str(s)) => Ok(s.clone()),
            _ => Err(format!("entry {i}'s data_file has no field {id}")),
        };
        let sequence_number = r
            .field(3)
            .and_then(Datum::as_long)
            .unwrap_or(of.sequence_number);
        out.push(LiveFile {
            path: string(100)?,
            format: string(101)?,
            record_count: long(103)?,
            size: long(104)?,
            sequence_number,
            file_sequence_number: r
                .field(4)
                .and_then(Datum::as_long)
                .unwrap_or(sequence_number),
            partition: partition::from_datum(spec, df.field(102)),
        });
    }
    Ok(out)
}

/// A manifest of DELETED entries removing `files` in snapshot `snapshot_id` (an overwrite),
/// with their sequence numbers explicit, as the spec requires for entries that are not ADDED.
pub fn write_deleted_manifest(
    files: &[LiveFile],
    snapshot_id: i64,
    spec: &[partition::Field],
    header: &[(&str, String)],
) -> Vec<u8> {
    let schema = manifest_entry_schema(spec);
    let mut w = ContainerWriter::new(&schema, header);
    for f in files {
        w.append(|o| {
            write_long(o, 2); // status: DELETED
            write_union_branch(o, true);
            write_long(o, snapshot_id);
            write_union_branch(o, true);
            write_long(o, f.sequence_number);
            write_union_branch(o, true);
            write_long(o, f.file_sequence_number);
            write_long(o, 0); // content: data
            write_string(o, &f.path);
            write_string(o, &f.format);
            partition::write_tuple(o, spec, &f.partition);
            write_long(o, f.record_count);
            write_long(o, f.size);
            for _ in 0..6 {
                write_union_branch(o, false); // column metrics: none
            }
            write_union_branch(o, false); // key_metadata
            write_union_branch(o, false); // split_offsets
            write_union_branch(o, false); // equality_ids
            write_union_branch(o, false); // sort_order_id
        });
    }
    w.finish()
}

/// A `field_summary` of a manifest list entry: (`contains_null`, `contains_nan`,
/// `lower_bound`, `upper_bound`).
pub type PartitionSummary = (bool, Option<bool>, Option<Vec<u8>>, Option<Vec<u8>>);

/// One entry of a manifest list.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestFile {
    /// `manifest_path`.
    pub path: String,
    /// `manifest_length`.
    pub length: i64,
    /// `partition_spec_id`.
    pub spec_id: i64,
    /// `content` (0 data, 1 deletes).
    pub content: i64,
    /// `sequence_number`.
    pub sequence_number: i64,
    /// `min_sequence_number`.
    pub min_sequence_number: i64,
    /// `added_snapshot_id`.
    pub added_snapshot_id: i64,
    /// `added_files_count`, `existing_files_count`, `deleted_files_count`.
    pub files: [i64; 3],
    /// `added_rows_count`, `existing_rows_count`, `deleted_rows_count`.
    pub rows: [i64; 3],
    /// `partitions`: a summary per partition field.
    pub partitions: Option<Vec<PartitionSummary>>,
    /// `key_metadata`.
    pub key_metadata: Option<Vec<u8>>,
}

fn opt_bytes(o: &mut Vec<u8>, b: &Option<Vec<u8>>) {
    write_union_branch(o, b.is_some());
    if let Some(b) = b {
        write_bytes(o, b);
    }
}

/// A manifest list with `manifests` (the new one first, then the parent snapshot's).
pub fn write_manifest_list(manifests: &[ManifestFile], header: &[(&str, String)]) -> Vec<u8> {
    let mut w = ContainerWriter::new(MANIFEST_FILE_SCHEMA, header);
    for m in manifests {
        w.append(|o| {
            write_string(o, &m.path);
            write_long(o, m.length);
            write_long(o, m.spec_id);
            write_long(o, m.content);
            write_long(o, m.sequence_number);
            write_long(o, m.min_sequence_number);
            write_long(o, m.added_snapshot_id);
            for n in m.files {
                write_long(o, n);
            }
            for n in m.rows {
                write_long(o, n);
            }
            write_union_branch(o, m.partitions.is_some());
            if let Some(p) = &m.partitions {
                write_array(o, p, |o, (contains_null, contains_nan, lo, hi)| {
                    write_bool(o, *contains_null);
                    write_union_branch(o, contains_nan.is_some());
                    if let Some(n) = contains_nan {
                        write_bool(o, *n);
                    }
                    opt_bytes(o, lo);
                    opt_bytes(o, hi);
                });
            }
            opt_bytes(o, &m.key_metadata);
        });
    }
    w.finish()
}

/// The entries of a manifest list written by any v2 writer (fields found by field id).
pub fn read_manifest_list(records: &[Datum]) -> Result<Vec<ManifestFile>, String> {
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let long = |id: i64, default: Option<i64>| -> Result<i64, String> {
            r.field(id)
                .and_then(Datum::as_long)
                .or(default)
                .ok_or_else(|| format!("entry {i} has no field {id}"))
        };
        let bytes = |d: Option<&Datum>| match d {
            Some(Datum::Bytes(b)) => Some(b.clone()),
            _ => None,
        };
        let path = match r.field(500) {
            Some(Datum::Str(s)) => s.clone(),
            _ => return Err(format!("entry {i} has no manifest_path (field 500)")),
        };
        let partitions = match r.field(507) {
            Some(Datum::Array(items)) => Some(
                items
                    .iter()
                    .map(|p| {
                        (
                            matches!(p.field(509), Some(Datum::Bool(true))),
                            match p.field(518) {
                                Some(Datum::Bool(b)) => Some(*b),
                                _ => None,
                            },
                            bytes(p.field(510)),
                            bytes(p.field(511)),
                        )
                    })
                    .collect(),
            ),
            _ => None,
        };
        out.push(ManifestFile {
            path,
            length: long(501, None)?,
            spec_id: long(502, None)?,
            content: long(517, Some(0))?,
            sequence_number: long(515, Some(0))?,
            min_sequence_number: long(516, Some(0))?,
            added_snapshot_id: long(503, None)?,
            files: [long(504, None)?, long(505, None)?, long(506, None)?],
            rows: [long(512, None)?, long(513, None)?, long(514, None)?],
            partitions,
            key_metadata: bytes(r.field(519)),
        });
    }
    Ok(out)
}

/// The header keys of a manifest of spec 0 (fields `spec`) for table schema `schema`.
pub fn manifest_header(
    schema: &Value,
    schema_id: i64,
    spec: &[partition::Field],
) -> Vec<(&'static str, String)> {
    vec![
        ("schema", schema.to_string()),
        ("schema-id", schema_id.to_string()),
        ("partition-spec", partition::spec_json(spec).to_string()),
        ("partition-spec-id", "0".into()),
        ("format-version", "2".into()),
        ("content", "data".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iceberg::avro::read_container;

    #[test]
    fn schemas_are_json_and_a_list_round_trips() {
        let entry: Value = serde_json::from_str(&manifest_entry_schema(&[])).expect("json");
        assert_eq!(entry["fields"][4]["field-id"], 2);
        let _: Value = serde_json::from_str(MANIFEST_FILE_SCHEMA).expect("json");
        let m = ManifestFile {
            path: "file:///t/metadata/a-m0.avro".into(),
            length: 1234,
            spec_id: 0,
            content: 0,
            sequence_number: 7,
            min_sequence_number: 7,
            added_snapshot_id: 99,
            files: [2, 0, 0],
            rows: [10, 0, 0],
            partitions: Some(vec![(false, Some(false), Some(vec![1]), None)]),
            key_metadata: None,
        };
        let file = write_manifest_list(std::slice::from_ref(&m), &[("format-version", "2".into())]);
        let c = read_container(&file).expect("avro");
        assert_eq!(
            read_manifest_list(&c.records).expect("list"),
            vec![m.clone()]
        );
        let files = [DataFile {
            path: "file:///t/data/a.parquet".into(),
            size: 10,
            metrics: Metrics {
                record_count: 3,
                lower_bounds: [(1, vec![1, 0, 0, 0])].into(),
                ..Metrics::default()
            },
            partition: Vec::new(),
        }];
        let manifest = write_manifest(
            &files,
            99,
            &[],
            &manifest_header(&serde_json::json!({}), 0, &[]),
        );
        let c = read_container(&manifest).expect("avro");
        let df = c.records[0].field(2).expect("data_file");
        assert_eq!(
            df.field(100),
            Some(&Datum::Str("file:///t/data/a.parquet".into()))
        );
        assert_eq!(df.field(103), Some(&Datum::Long(3)));
        assert_eq!(c.records[0].field(1), Some(&Datum::Long(99)));
        assert_eq!(c.records[0].field(3), Some(&Datum::Null));
        // The ADDED entry is live with the list's sequence number; as a DELETED entry it is
        // written with explicit sequence numbers and is no longer live.
        let live = read_live_files(&c.records, &m, &[]).expect("live files");
        assert_eq!(
            live,
            vec![LiveFile {
                path: "file:///t/data/a.parquet".into(),
                format: "PARQUET".into(),
                record_count: 3,
                size: 10,
                sequence_number: 7,
                file_sequence_number: 7,
                partition: Vec::new(),
            }]
        );
        let deleted = write_deleted_manifest(
            &live,
            100,
            &[],
            &manifest_header(&serde_json::json!({}), 0, &[]),
        );
        let c = read_container(&deleted).expect("avro");
        assert_eq!(c.records[0].field(0), Some(&Datum::Long(2)));
        assert_eq!(c.records[0].field(3), Some(&Datum::Long(7)));
        assert_eq!(c.records[0].field(1), Some(&Datum::Long(100)));
        assert!(
            read_live_files(&c.records, &m, &[])
                .expect("read")
                .is_empty()
        );
    }

    #[test]
    fn partition_tuples_round_trip_through_manifests() {
        use crate::iceberg::partition::{Field, Kind, PartitionValue};
        let spec = [
            Field {
                field_id: 1000,
                name: "city name".into(),
                source_id: 2,
                column: "city name".into(),
                kind: Kind::Str,
            },
            Field {
                field_id: 1001,
                name: "day".into(),
                source_id: 3,
                column: "day".into(),
                kind: Kind::Date,
            },
        ];
        let tuple = vec![None, Some(PartitionValue::Long(20_000))];
        let files = [DataFile {
            path: "file:///t/a.parquet".into(),
            size: 10,
            metrics: Metrics {
                record_count: 3,
                ..Metrics::default()
            },
            partition: tuple.clone(),
        }];
        let header = manifest_header(&serde_json::json!({}), 0, &spec);
        let c = read_container(&write_manifest(&files, 1, &spec, &header)).expect("avro");
        let of = ManifestFile {
            path: String::new(),
            length: 0,
            spec_id: 0,
            content: 0,
            sequence_number: 1,
            min_sequence_number: 1,
            added_snapshot_id: 1,
            files: [1, 0, 0],
            rows: [3, 0, 0],
            partitions: None,
            key_metadata: None,
        };
        let live = read_live_files(&c.records, &of, &spec).expect("live");
        assert_eq!(live[0].partition, tuple);
        let c = read_container(&write_deleted_manifest(&live, 2, &spec, &header)).expect("avro");
        let df = c.records[0].field(2).expect("data_file");
        assert_eq!(
            crate::iceberg::partition::from_datum(&spec, df.field(102)),
            tuple
        );
    }
}

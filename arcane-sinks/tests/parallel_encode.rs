//! `sink.writer.encodeThreads` (columns encoded in parallel) and `sink.writer.dictionary`
//! (`auto`, `true`, `false`), on the local file system.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arcane_core::testing::GeneratorSource;
use arcane_core::{Group, Sink, SinkContext};
use arcane_sinks::{Dictionary, ParquetSink, ParquetSinkConfig, committed_files};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use common::{SinkStore, Store, checkpoint, ids};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Encoding;
use parquet::file::metadata::ParquetMetaData;

fn ctx() -> SinkContext {
    SinkContext {
        stream_id: "orders-eu".into(),
        ..SinkContext::default()
    }
}

/// The generator's rows `from..to` with `uuid` (every value distinct) and `country` (12
/// values) string columns.
fn batch(from: u64, to: u64) -> RecordBatch {
    let base = GeneratorSource::batch(from, to);
    let uuid: ArrayRef =
        Arc::new(StringArray::from_iter_values((from..to).map(|i| {
            format!("{:016x}-{:08x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i)
        })));
    let country: ArrayRef = Arc::new(StringArray::from_iter(
        (from..to).map(|i| (i % 9 != 0).then(|| format!("country-{}", i % 12))),
    ));
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("uuid", DataType::Utf8, false));
    fields.push(Field::new("country", DataType::Utf8, true));
    let mut columns = base.columns().to_vec();
    columns.extend([uuid, country]);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch")
}

fn group(from: u64, to: u64) -> Group {
    Group::new(batch(from, to), checkpoint(to))
}

/// The Parquet files under `dir`, sorted (staging and metadata directories aside).
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                if !p.ends_with("_arcane") {
                    dirs.push(p);
                }
            } else if p.extension().is_some_and(|e| e == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn metadata(file: &Path) -> Arc<ParquetMetaData> {
    let bytes = Bytes::from(std::fs::read(file).expect("read"));
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .metadata()
        .clone()
}

fn rows_of(file: &Path) -> Vec<RecordBatch> {
    let bytes = Bytes::from(std::fs::read(file).expect("read"));
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .build()
        .expect("reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("batches")
}

/// What a file is made of: its name, rows, row groups' row counts, key-value metadata.
#[derive(Debug, PartialEq)]
struct Shape {
    name: String,
    rows: Vec<RecordBatch>,
    row_groups: Vec<i64>,
    key_values: Vec<(String, Option<String>)>,
    bytes: Vec<u8>,
}

fn shapes(dir: &Path) -> Vec<Shape> {
    parquet_files(dir)
        .into_iter()
        .map(|file| {
            let meta = metadata(&file);
            Shape {
                name: file
                    .strip_prefix(dir)
                    .expect("under dir")
                    .display()
                    .to_string(),
                rows: rows_of(&file),
                row_groups: meta.row_groups().iter().map(|rg| rg.num_rows()).collect(),
                key_values: meta
                    .file_metadata()
                    .key_value_metadata()
                    .map(|kv| {
                        kv.iter()
                            .map(|k| (k.key.clone(), k.value.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                bytes: std::fs::read(&file).expect("read"),
            }
        })
        .collect()
}

/// Write 60 000 rows in groups of 7 000 with `threads` encoding threads and small row groups
/// (by rows and by bytes) and files (by size); the files' shapes and the commits' files.
async fn write_with(threads: usize) -> (Vec<Shape>, Vec<(String, u64, u64)>) {
    let store = Store::local();
    let mut config: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
        "url": store.url(),
        "rolling": { "targetFileSize": 400_000 },
        "writer": {
            "encodeThreads": threads,
            "rowGroupSize": 5000,
            "rowGroupBytes": 120_000,
            "bloomFilters": [{ "column": "key" }],
            "sortingColumns": [{ "column": "id" }],
            "keyValueMetadata": { "owner": "team-a" },
        },
    }))
    .expect("config");
    config.storage_options = store.options();
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&ctx()).await.expect("open");
    let mut commits = 0;
    for i in 0..9 {
        let to = ((i + 1) * 7000).min(60_000);
        if sink
            .write(group(i * 7000, to))
            .await
            .expect("write")
            .is_some()
        {
            commits += 1;
        }
    }
    sink.flush().await.expect("flush");
    assert!(commits >= 2, "files roll by size: {commits} commits");
    assert_eq!(ids(&store.read().await), (0..60_000).collect::<Vec<_>>());
    let files = committed_files(&store.url(), &store.options())
        .await
        .expect("files")
        .into_iter()
        .map(|f| (f.path, f.rows, f.bytes))
        .collect();
    let Store::Local(dir) = &store else {
        unreachable!()
    };
    (shapes(&dir.path().join("stream")), files)
}

/// One encoding thread or four: the same files, byte for byte (rows, row groups, metadata),
/// rolled at the same places.
#[tokio::test]
async fn encode_threads_write_the_same_files() {
    let (one, one_files) = write_with(1).await;
    let (four, four_files) = write_with(4).await;
    assert!(one.len() >= 3, "{} files", one.len());
    assert!(
        one.iter().any(|s| s.row_groups.len() > 1),
        "files have several row groups"
    );
    for s in &one {
        assert!(
            s.key_values.iter().any(|(k, _)| k == "ARROW:schema"),
            "{}: the Arrow schema is in the metadata",
            s.name
        );
        assert!(
            s.key_values
                .iter()
                .any(|(k, v)| k == "owner" && v.as_deref() == Some("team-a"))
        );
    }
    assert_eq!(
        one_files, four_files,
        "the same files, rolled at the same rows"
    );
    assert_eq!(one.len(), four.len());
    for (a, b) in one.iter().zip(&four) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.rows, b.rows, "{}", a.name);
        assert_eq!(a.row_groups, b.row_groups, "{}", a.name);
        assert_eq!(a.key_values, b.key_values, "{}", a.name);
        assert!(a.bytes == b.bytes, "{}: the same bytes", a.name);
    }
}

/// Whether each column of the first row group of the files written with `dictionary` (absent:
/// the default) is dictionary-encoded: (column, dictionary-encoded).
async fn dictionary_use(dictionary: Option<serde_json::Value>) -> Vec<(String, bool)> {
    let store = Store::local();
    let mut writer = serde_json::Map::new();
    if let Some(d) = dictionary {
        writer.insert("dictionary".into(), d);
    }
    let mut config: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
        "url": store.url(),
        "writer": writer,
    }))
    .expect("config");
    config.storage_options = store.options();
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&ctx()).await.expect("open");
    sink.write(group(0, 10_000)).await.expect("write");
    sink.write(group(10_000, 20_000)).await.expect("write");
    sink.flush().await.expect("flush");
    // A second file of the same sink keeps the decision.
    sink.write(group(20_000, 20_100)).await.expect("write");
    sink.flush().await.expect("flush");
    let Store::Local(dir) = &store else {
        unreachable!()
    };
    let files = parquet_files(&dir.path().join("stream"));
    assert_eq!(files.len(), 2);
    let uses: Vec<Vec<(String, bool)>> = files
        .iter()
        .map(|file| {
            let meta = metadata(file);
            let rg = meta.row_group(0);
            rg.columns()
                .iter()
                .map(|c| {
                    let dict = c.encodings().any(|e| {
                        matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY)
                    });
                    assert_eq!(dict, c.dictionary_page_offset().is_some());
                    (c.column_path().string(), dict)
                })
                .collect()
        })
        .collect();
    assert_eq!(
        uses[0], uses[1],
        "later files keep the first file's decision"
    );
    uses[0].clone()
}

fn dictionary_of(uses: &[(String, bool)], column: &str) -> bool {
    uses.iter()
        .find(|(c, _)| c == column)
        .map(|(_, d)| *d)
        .expect("column")
}

#[tokio::test]
async fn dictionary_auto_writes_mostly_distinct_columns_plain() {
    assert_eq!(
        ParquetSinkConfig::new("memory:///x").writer.dictionary,
        Dictionary::Auto
    );
    for dictionary in [Some(serde_json::json!("auto")), None] {
        let uses = dictionary_use(dictionary).await;
        assert!(!dictionary_of(&uses, "uuid"), "{uses:?}");
        assert!(dictionary_of(&uses, "country"), "{uses:?}");
        assert!(dictionary_of(&uses, "key"), "{uses:?}");
        // Fixed-width columns are decided the same way: `id` is unique.
        assert!(!dictionary_of(&uses, "id"), "{uses:?}");
    }
}

#[tokio::test]
async fn dictionary_true_and_false_keep_their_meanings() {
    let on = dictionary_use(Some(serde_json::json!(true))).await;
    assert!(on.iter().all(|(_, d)| *d), "{on:?}");
    let off = dictionary_use(Some(serde_json::json!(false))).await;
    assert!(off.iter().all(|(_, d)| !*d), "{off:?}");
}

#[test]
fn dictionary_and_encode_threads_settings_parse_and_validate() {
    for (json, want) in [
        (serde_json::json!(true), Dictionary::On),
        (serde_json::json!(false), Dictionary::Off),
        (serde_json::json!("auto"), Dictionary::Auto),
    ] {
        let c: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
            "url": "s3://b/p", "writer": { "dictionary": json },
        }))
        .expect("parses");
        assert_eq!(c.writer.dictionary, want);
        let back = serde_json::to_value(&c).expect("serialize");
        assert_eq!(back["writer"]["dictionary"], json);
    }
    let bad = serde_json::from_value::<ParquetSinkConfig>(serde_json::json!({
        "url": "s3://b/p", "writer": { "dictionary": "sometimes" },
    }))
    .expect_err("not a dictionary setting")
    .to_string();
    assert!(bad.contains("true, false or \"auto\""), "{bad}");
    for (threads, ok) in [(0, false), (1, true), (4, true), (65, false)] {
        let c: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
            "url": "s3://b/p", "writer": { "encodeThreads": threads },
        }))
        .expect("parses");
        match c.validate() {
            Ok(()) => assert!(ok, "{threads}"),
            Err(arcane_core::Error::Config { field, .. }) => {
                assert!(!ok, "{threads}");
                assert_eq!(field, "sink.writer.encodeThreads");
            }
            Err(other) => panic!("{other:?}"),
        }
        assert_eq!(c.writer.encode_threads(), threads);
    }
    let default = ParquetSinkConfig::new("s3://b/p");
    assert!((1..=4).contains(&default.writer.encode_threads()));
}

//! The Parquet sink against real stores: memory, local FS, S3 (moto) and Azure Blob (azurite).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use arcane_core::testing::{GeneratorSource, conformance, pretty_lines};
use arcane_core::{Error, Group, Mode, Retry, Sink, SinkContext};
use arcane_sinks::{
    ParquetSink, ParquetSinkConfig, SchemaEvolution, committed_files, read_committed,
};
use common::{SinkStore, Store, checkpoint, ids};

fn ctx() -> SinkContext {
    SinkContext {
        stream_id: "orders-eu".into(),
        ..SinkContext::default()
    }
}

fn group(from: u64, to: u64) -> Group {
    Group::new(GeneratorSource::batch(from, to), checkpoint(to))
}

async fn conformance_on(store: &Store) {
    let config = store.config();
    conformance::sink_commits_exactly(
        || Box::new(ParquetSink::new(config.clone()).expect("sink")),
        || store.read(),
    )
    .await;
}

#[tokio::test]
async fn conformance_memory() {
    conformance_on(&Store::memory()).await;
}

#[tokio::test]
async fn conformance_local_fs() {
    conformance_on(&Store::local()).await;
}

#[tokio::test]
async fn conformance_s3_moto() {
    let store = Store::s3().await;
    conformance_on(&store).await;
    store.cleanup().await;
}

#[tokio::test]
async fn conformance_azure_azurite() {
    let store = Store::azure().await;
    conformance_on(&store).await;
    store.cleanup().await;
}

async fn round_trip(store: &Store) {
    let mut sink = ParquetSink::new(store.config()).expect("sink");
    assert_eq!(sink.open(&ctx()).await.expect("open"), None);
    let mut expected = Vec::new();
    for i in 0..5 {
        let g = group(i * 1000, (i + 1) * 1000);
        expected.push(g.batch.clone());
        assert!(
            sink.write(g).await.expect("write").is_none(),
            "nothing rolls before the target size"
        );
    }
    let commit = sink.flush().await.expect("flush").expect("a commit");
    assert_eq!(commit.rows, 5000);
    assert_eq!(commit.checkpoint, checkpoint(5000));
    assert_eq!(commit.files.len(), 1);
    assert!(
        commit.files[0].ends_with("stream/part-orders-eu-00000000-0000.parquet"),
        "{:?}",
        commit.files
    );
    let mut got = pretty_lines(&store.read().await);
    let mut want = pretty_lines(&expected);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let files = committed_files(&store.url(), &store.options())
        .await
        .expect("files");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].rows, 5000);
    assert_eq!(files[0].bytes, commit.bytes);
}

#[tokio::test]
async fn round_trip_local_fs() {
    let store = Store::local();
    round_trip(&store).await;
    // The local layout is a plain directory of Parquet files plus the manifest.
    let Store::Local(dir) = &store else {
        unreachable!()
    };
    assert!(
        dir.path()
            .join("stream/part-orders-eu-00000000-0000.parquet")
            .is_file()
    );
    assert!(
        dir.path()
            .join("stream/_arcane/manifests/00000000000000000000.json")
            .is_file()
    );
}

#[tokio::test]
async fn round_trip_memory() {
    round_trip(&Store::memory()).await;
}

#[tokio::test]
async fn round_trip_s3_moto() {
    let store = Store::s3().await;
    round_trip(&store).await;
    store.cleanup().await;
}

#[tokio::test]
async fn round_trip_azure_azurite() {
    let store = Store::azure().await;
    round_trip(&store).await;
    store.cleanup().await;
}

#[tokio::test]
async fn rolling_by_encoded_size_lands_within_ten_percent_of_the_target() {
    let store = Store::memory();
    let mut config = store.config();
    config.rolling.target_file_size = 256 * 1024;
    config.writer.compression = "uncompressed".into();
    config.writer.dictionary = false.into();
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&ctx()).await.expect("open");
    let mut commits = 0;
    for i in 0..100 {
        if sink
            .write(group(i * 500, (i + 1) * 500))
            .await
            .expect("write")
            .is_some()
        {
            commits += 1;
        }
    }
    sink.flush().await.expect("flush");
    let files = committed_files(&store.url(), &store.options())
        .await
        .expect("files");
    assert!(commits >= 3, "expected several rolls, got {commits}");
    let target = 256.0 * 1024.0;
    // Every file but the last (flushed early) is within 10% of the target.
    for f in &files[..files.len() - 1] {
        let ratio = f.bytes as f64 / target;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "file {} has {} bytes ({ratio:.3} of target)",
            f.path,
            f.bytes
        );
    }
    assert_eq!(ids(&store.read().await), (0..50_000).collect::<Vec<_>>());
}

#[tokio::test]
async fn max_rows_per_file_is_exact_and_commits_cover_the_last_group() {
    let store = Store::memory();
    let mut config = store.config();
    config.rolling.max_rows_per_file = 700;
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&ctx()).await.expect("open");
    let first = sink.write(group(0, 500)).await.expect("write");
    assert!(first.is_none());
    let commit = sink
        .write(group(500, 1000))
        .await
        .expect("write")
        .expect("roll at 700 rows");
    assert_eq!(
        commit.checkpoint,
        checkpoint(1000),
        "a commit covers every group written so far"
    );
    assert_eq!(commit.rows, 1000);
    let files = committed_files(&store.url(), &store.options())
        .await
        .expect("files");
    let rows: Vec<u64> = files.iter().map(|f| f.rows).collect();
    assert_eq!(rows, vec![700, 300]);
    assert_eq!(ids(&store.read().await), (0..1000).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn files_roll_on_max_age_without_new_data() {
    let store = Store::memory();
    let mut config = store.config();
    config.rolling.max_file_age = Duration::from_secs(60);
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&ctx()).await.expect("open");
    sink.write(group(0, 10)).await.expect("write");
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(
        sink.tick().await.expect("tick").is_none(),
        "not due before the max age"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    let commit = sink
        .tick()
        .await
        .expect("tick")
        .expect("due at the max age");
    assert_eq!((commit.rows, commit.checkpoint), (10, checkpoint(10)));
    assert!(sink.tick().await.expect("tick").is_none());
}

#[tokio::test]
async fn hive_partitions_by_column_and_event_time() {
    let store = Store::local();
    let config: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
        "url": store.url(),
        "partitionBy": { "columns": ["key"], "eventTime": { "column": "event_time", "format": "date=%Y-%m-%d/hour=%H" } },
        "maxOpenFiles": 200,
    }))
    .expect("config");
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&ctx()).await.expect("open");
    // ids 0..4000 are 1s apart from 2026-01-01T00:00:00Z: hours 00 and 01; keys key-0..key-96.
    sink.write(group(0, 4000)).await.expect("write");
    let commit = sink.flush().await.expect("flush").expect("commit");
    let files = committed_files(&store.url(), &store.options())
        .await
        .expect("files");
    assert_eq!(files.len(), 97 * 2);
    assert_eq!(commit.files.len(), files.len());
    assert!(
        files.iter().any(|f| f
            .path
            .starts_with("key=key-5/date=2026-01-01/hour=01/part-orders-eu-00000000-")),
        "{:?}",
        files.iter().take(3).collect::<Vec<_>>()
    );
    for f in &files {
        assert_eq!(f.path.split('/').count(), 4, "{}", f.path);
    }
    assert_eq!(ids(&store.read().await), (0..4000).collect::<Vec<_>>());
}

#[tokio::test]
async fn too_many_partitions_in_one_group_is_a_clear_error_after_committing() {
    let store = Store::memory();
    let mut config = store.config();
    config.partition_by.columns = vec!["key".into()];
    config.max_open_files = 10;
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&ctx()).await.expect("open");
    // 5 ids → 5 keys: fits.
    sink.write(group(0, 5)).await.expect("write");
    let err = sink
        .write(group(5, 105))
        .await
        .expect_err("97 partitions > 10");
    match &err {
        Error::Sink {
            retry: Retry::Permanent,
            message,
            ..
        } => {
            assert!(message.contains("sink.maxOpenFiles = 10"), "{message}")
        }
        other => panic!("expected a permanent sink error, got {other:?}"),
    }
    assert_eq!(
        ids(&store.read().await),
        (0..5).collect::<Vec<_>>(),
        "rows before the error are committed"
    );
}

#[tokio::test]
async fn writer_properties_reach_the_files() {
    let store = Store::local();
    let config: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
        "url": store.url(),
        "writer": {
            "compression": "zstd(3)",
            "rowGroupSize": 1000,
            "bloomFilters": [{ "column": "key", "fpp": 0.01 }],
            "sortingColumns": [{ "column": "id" }],
            "createdBy": "orders-test",
            "keyValueMetadata": { "owner": "team-a" },
        },
    }))
    .expect("config");
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&ctx()).await.expect("open");
    sink.write(group(0, 2500)).await.expect("write");
    sink.flush().await.expect("flush");
    let Store::Local(dir) = &store else {
        unreachable!()
    };
    let file = std::fs::File::open(
        dir.path()
            .join("stream/part-orders-eu-00000000-0000.parquet"),
    )
    .expect("file");
    let reader =
        parquet::file::serialized_reader::SerializedFileReader::new(file).expect("parquet");
    use parquet::file::reader::FileReader;
    let meta = reader.metadata();
    assert_eq!(
        meta.num_row_groups(),
        3,
        "rowGroupSize 1000 → 3 row groups for 2500 rows"
    );
    assert_eq!(meta.file_metadata().created_by(), Some("orders-test"));
    let kv = meta.file_metadata().key_value_metadata().expect("kv");
    assert!(
        kv.iter()
            .any(|k| k.key == "owner" && k.value.as_deref() == Some("team-a"))
    );
    let rg = meta.row_group(0);
    // Parquet records the codec, not its level.
    assert!(matches!(
        rg.column(0).compression(),
        parquet::basic::Compression::ZSTD(_)
    ));
    assert!(
        rg.column(1).bloom_filter_offset().is_some(),
        "bloom filter on key"
    );
    assert!(rg.column(0).bloom_filter_offset().is_none());
    assert_eq!(rg.sorting_columns().map(|s| s[0].column_idx), Some(0));
}

#[test]
fn config_defaults_validation_and_errors_name_the_field() {
    let c: ParquetSinkConfig =
        serde_json::from_value(serde_json::json!({ "url": "s3://b/p" })).expect("defaults");
    assert_eq!(
        c.rolling.target_file_size,
        arcane_sinks::DEFAULT_TARGET_FILE_SIZE
    );
    assert_eq!(c.rolling.max_file_age, arcane_sinks::DEFAULT_MAX_FILE_AGE);
    assert_eq!(c.writer.compression, "zstd(1)");
    c.validate().expect("valid");
    let unknown = serde_json::from_value::<ParquetSinkConfig>(
        serde_json::json!({ "url": "s3://b/p", "rollin": {} }),
    );
    assert!(
        unknown
            .expect_err("unknown field")
            .to_string()
            .contains("rollin")
    );
    let cases = [
        (
            serde_json::json!({ "url": "s4://b/p" }),
            "sink.url",
            "unsupported scheme \"s4\"; expected s3, az, abfss, gs, file or memory",
        ),
        (
            serde_json::json!({ "url": "s3://b/p", "writer": { "compression": "zstd(99)" } }),
            "sink.writer.compression",
            "zstd",
        ),
        (
            serde_json::json!({ "url": "s3://b/p", "writer": { "compression": "brotli(3)" } }),
            "sink.writer.compression",
            "not built",
        ),
        (
            serde_json::json!({ "url": "s3://b/p", "writer": { "compression": "zstd(" } }),
            "sink.writer.compression",
            "parentheses",
        ),
        (
            serde_json::json!({ "url": "s3://b/p", "rolling": { "targetFileSize": 0 } }),
            "sink.rolling.targetFileSize",
            "greater than 0",
        ),
        (
            serde_json::json!({ "url": "s3://b/p", "writer": { "uploadPartSize": 1024 } }),
            "sink.writer.uploadPartSize",
            "5 MiB",
        ),
        (
            serde_json::json!({ "url": "s3://b/p", "schema": [{ "name": "a", "type": "Int65" }] }),
            "sink.schema[0].type",
            "Int65",
        ),
        (
            serde_json::json!({ "url": "s3://b/p", "partitionBy": { "eventTime": { "column": "t", "format": "%Q" } } }),
            "sink.partitionBy.eventTime.format",
            "strftime",
        ),
    ];
    for (json, field, text) in cases {
        let c: ParquetSinkConfig = serde_json::from_value(json.clone()).expect("parses");
        match c.validate() {
            Err(Error::Config { field: f, message }) => {
                assert_eq!(f, field, "{json}");
                assert!(message.contains(text), "{json}: {message}");
            }
            other => panic!("{json}: expected a config error, got {other:?}"),
        }
    }
    let schema = schemars::schema_for!(ParquetSinkConfig);
    let text = serde_json::to_string(&schema).expect("schema json");
    assert!(
        text.contains("targetFileSize") && text.contains("Target encoded"),
        "field docs become descriptions"
    );
}

#[tokio::test]
async fn incompatible_schemas_are_schema_mismatch_after_committing() {
    let store = Store::memory();
    let mut sink = ParquetSink::new(store.config()).expect("sink");
    sink.open(&ctx()).await.expect("open");
    sink.write(group(0, 100)).await.expect("write");
    // Missing non-nullable column `value`.
    let b = GeneratorSource::batch(100, 200);
    let missing = b.project(&[0, 1, 3]).expect("project");
    let err = sink
        .write(Group::new(missing, checkpoint(200)))
        .await
        .expect_err("mismatch");
    match err {
        Error::SchemaMismatch { message, .. } => {
            assert!(message.contains("\"value\""), "{message}")
        }
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
    assert_eq!(ids(&store.read().await), (0..100).collect::<Vec<_>>());
    // The learned schema survives a restart.
    let mut sink = ParquetSink::new(store.config()).expect("sink");
    assert_eq!(
        sink.open(&ctx()).await.expect("open"),
        Some(checkpoint(100))
    );
    let changed = arrow_array::RecordBatch::try_from_iter([(
        "id",
        std::sync::Arc::new(arrow_array::Int32Array::from(vec![1])) as _,
    )])
    .expect("batch");
    assert!(
        sink.write(Group::new(changed, checkpoint(201)))
            .await
            .expect_err("changed type")
            .is_schema_mismatch()
    );
}

/// The generator rows `from..to` with an extra column `note` (`n-{id}`), nullable or not.
fn with_note(from: u64, to: u64, nullable: bool) -> arrow_array::RecordBatch {
    use std::sync::Arc;
    let b = GeneratorSource::batch(from, to);
    let mut fields: Vec<_> = b.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(arrow_schema::Field::new(
        "note",
        arrow_schema::DataType::Utf8,
        nullable,
    )));
    let mut columns = b.columns().to_vec();
    columns.push(Arc::new(arrow_array::StringArray::from_iter_values(
        (from..to).map(|i| format!("n-{i}")),
    )));
    arrow_array::RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns)
        .expect("batch")
}

#[tokio::test]
async fn added_nullable_columns_widen_the_schema_when_configured() {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    let store = Store::local();
    // By default a new column is a schema mismatch.
    let mut sink = ParquetSink::new(store.config()).expect("sink");
    sink.open(&ctx()).await.expect("open");
    sink.write(group(0, 100)).await.expect("write");
    let err = sink
        .write(Group::new(with_note(100, 150, true), checkpoint(150)))
        .await
        .expect_err("new column");
    assert!(err.is_schema_mismatch(), "{err}");
    assert!(err.to_string().contains("\"note\""), "{err}");

    // With addNullableColumns the same batch widens the schema in place.
    let mut config = store.config();
    config.schema_evolution = SchemaEvolution::AddNullableColumns;
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    assert_eq!(
        sink.open(&ctx()).await.expect("open"),
        Some(checkpoint(100))
    );
    sink.write(Group::new(with_note(100, 150, true), checkpoint(150)))
        .await
        .expect("widened");
    // Older-shaped rows still fit (the new column is null for them).
    sink.write(group(150, 160)).await.expect("old shape");
    // A new non-nullable column is still a mismatch, after committing what came before.
    let err = sink
        .write(Group {
            batch: with_note(160, 170, false)
                .project(&[0, 1, 2, 3, 4])
                .and_then(|b| {
                    let mut fields: Vec<_> = b.schema().fields().iter().cloned().collect();
                    fields[4] = std::sync::Arc::new(arrow_schema::Field::new(
                        "strict",
                        arrow_schema::DataType::Utf8,
                        false,
                    ));
                    arrow_array::RecordBatch::try_new(
                        std::sync::Arc::new(arrow_schema::Schema::new(fields)),
                        b.columns().to_vec(),
                    )
                })
                .expect("batch"),
            checkpoint: checkpoint(170),
            dead_letters: Vec::new(),
        })
        .await
        .expect_err("non-nullable new column");
    assert!(err.is_schema_mismatch(), "{err}");
    assert!(err.to_string().contains("\"strict\""), "{err}");

    let batches = store.read().await;
    assert_eq!(ids(&batches), (0..160).collect::<Vec<_>>());
    let mut notes = std::collections::BTreeMap::new();
    for b in &batches {
        let id = b
            .column_by_name("id")
            .expect("id")
            .as_primitive::<arrow_array::types::Int64Type>();
        match b.column_by_name("note") {
            None => assert!(
                id.values().iter().all(|i| *i < 100),
                "only the first file lacks note"
            ),
            Some(note) => {
                let note = note.as_string::<i32>();
                for r in 0..b.num_rows() {
                    notes.insert(
                        id.value(r),
                        note.is_valid(r).then(|| note.value(r).to_string()),
                    );
                }
            }
        }
    }
    assert_eq!(
        notes.len(),
        60,
        "rows 100..160 are in files with the note column"
    );
    for (id, note) in notes {
        let expected = (id < 150).then(|| format!("n-{id}"));
        assert_eq!(note, expected, "note of row {id}");
    }
    // The widened schema is kept in the manifest: a restarted sink accepts `note` at once.
    let mut sink = ParquetSink::new(config).expect("sink");
    assert_eq!(
        sink.open(&ctx()).await.expect("open"),
        Some(checkpoint(160))
    );
    sink.write(Group::new(with_note(160, 170, true), checkpoint(170)))
        .await
        .expect("write after restart");
    sink.flush().await.expect("flush");
    assert_eq!(ids(&store.read().await), (0..170).collect::<Vec<_>>());
    store.cleanup().await;
}

fn read_parquet_files(dir: &std::path::Path) -> Vec<arrow_array::RecordBatch> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .flat_map(|file| {
            let bytes = bytes::Bytes::from(std::fs::read(file).expect("read"));
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                .expect("parquet")
                .build()
                .expect("reader")
                .collect::<Result<Vec<_>, _>>()
                .expect("batches")
        })
        .collect()
}

#[tokio::test]
async fn dead_letters_commit_with_the_rows_in_one_manifest_entry() {
    use std::sync::Arc;
    let store = Store::local();
    let config: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
        "url": store.url(),
        "schema": [
            { "name": "id", "type": "int64", "nullable": false },
            { "name": "name", "type": "utf8", "nullable": false },
        ],
        "deadLetter": { "maxRatio": 0.5 },
    }))
    .expect("config");
    let tally = arcane_core::DeadLetterTally::new(config.dead_letter.budget(), Default::default());
    let ctx = SinkContext {
        dead_letters: tally.clone(),
        ..ctx()
    };
    let batch = || {
        arrow_array::RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3])) as _,
            ),
            (
                "name",
                Arc::new(arrow_array::StringArray::from(vec![
                    Some("a"),
                    None,
                    Some("c"),
                ])) as _,
            ),
        ])
        .expect("batch")
    };
    // A group with a row the sink cannot convert and a record the source could not decode.
    let group = || {
        let mut g = Group::new(batch(), checkpoint(4));
        g.dead_letters = vec![
            arcane_core::DeadLetter::new("/landing/a.ndjson", "line 4", "not JSON")
                .with_payload("{oops"),
        ];
        g
    };
    let Store::Local(dir) = &store else {
        unreachable!()
    };
    let dl_dir = dir.path().join("stream/_dead_letters");

    // Written but not committed ("crash"): no dead-letter file survives the recovery.
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    sink.open(&ctx).await.expect("open");
    assert!(sink.write(group()).await.expect("write").is_none());
    drop(sink);
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    assert_eq!(sink.open(&ctx).await.expect("reopen"), None);
    assert!(
        read_parquet_files(&dl_dir).is_empty(),
        "nothing was committed, so no dead letters may be visible"
    );

    // Committed: the rows and both dead letters, in one manifest entry.
    sink.write(group()).await.expect("write");
    let commit = sink.flush().await.expect("flush").expect("commit");
    assert_eq!((commit.rows, commit.dead_letters), (2, 2));
    assert_eq!(ids(&store.read().await), vec![1, 3]);
    let manifest = arcane_sinks::latest_manifest(&store.url(), &BTreeMap::new())
        .await
        .expect("manifest")
        .expect("one");
    assert_eq!(manifest.dead_letters, 2);
    assert_eq!(manifest.dead_letter_files.len(), 1);
    let letters = read_parquet_files(&dl_dir);
    assert_eq!(letters.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    let lines = pretty_lines(&[letters[0].project(&[0, 1, 2, 3, 4]).expect("project")]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/landing/a.ndjson") && l.contains("not JSON")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("orders-eu")
            && l.contains("row 1 of the group")
            && l.contains("is null")
            && l.contains(r#"{"id":2}"#)),
        "{lines:#?}"
    );
    assert_eq!(
        tally.counts().dead,
        2,
        "the sink counts its own rejects (one per write, the crashed one included)"
    );
    assert!(
        !dl_dir.join("_arcane").exists(),
        "the commit cleans up its staging"
    );

    // A run stopped after deleting the dead-letter staging directory but before its (then
    // empty) metadata directory: the next run's recovery deletes what is left.
    std::fs::create_dir(dl_dir.join("_arcane")).expect("mkdir");
    drop(sink);
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    sink.open(&ctx).await.expect("reopen");
    let left: Vec<_> = std::fs::read_dir(&dl_dir)
        .expect("dead-letter directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|name| name.ends_with(".parquet")),
        "only committed dead-letter files are left: {left:?}"
    );
}

/// Objects under `stream/{dir}` of `store`, relative to `stream/`.
async fn objects_under(store: &Store, dir: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let loc = arcane_store::open_location(&store.url(), &store.options(), "url").expect("store");
    let mut out: Vec<String> = loc
        .store
        .list(Some(&loc.child(dir)))
        .map_ok(|m| loc.relative(&m.location))
        .try_collect()
        .await
        .expect("list");
    out.sort();
    out
}

/// On object stores the dead-letter file is a multipart upload like the data files: invisible
/// when the run dies before its manifest (and aborted by the next start), completed by the next
/// start when the run dies after it.
async fn dead_letters_become_visible_only_when_committed(store: &Store) {
    let mut config = store.config();
    config.schema = Some(
        serde_json::from_value(serde_json::json!([
            { "name": "id", "dataType": "Int64", "nullable": false },
            { "name": "name", "dataType": "Utf8", "nullable": false },
        ]))
        .expect("schema"),
    );
    config.dead_letter.max_ratio = 0.5;
    let group = || {
        let batch = arrow_array::RecordBatch::try_from_iter([
            (
                "id",
                std::sync::Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3])) as _,
            ),
            (
                "name",
                std::sync::Arc::new(arrow_array::StringArray::from(vec![
                    Some("a"),
                    None,
                    Some("c"),
                ])) as _,
            ),
        ])
        .expect("batch");
        Group::new(batch, checkpoint(3))
    };
    let dir = tempfile::tempdir().expect("tmp");
    for point in ["after-upload-before-manifest", "after-manifest"] {
        let marker = dir.path().join(point);
        let mut sink = ParquetSink::new(config.clone())
            .expect("sink")
            .with_pause_at(point, 1, Some(&marker));
        let resume = sink.open(&ctx()).await.expect("open");
        sink.write(group()).await.expect("write");
        tokio::select! {
            _ = sink.flush() => panic!("the sink pauses at {point}"),
            _ = async {
                while !marker.exists() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } => {}
        }
        drop(sink); // the "crash"
        assert!(
            objects_under(store, "_dead_letters").await.is_empty(),
            "no dead-letter file is visible before its commit completes ({point})"
        );
        assert!(!objects_under(store, "_arcane/uploads").await.is_empty());
        let mut sink = ParquetSink::new(config.clone()).expect("sink");
        let after = sink.open(&ctx()).await.expect("recover");
        assert!(objects_under(store, "_arcane/uploads").await.is_empty());
        let visible = objects_under(store, "_dead_letters").await;
        match point {
            "after-upload-before-manifest" => {
                assert_eq!(after, resume, "nothing was committed");
                assert!(visible.is_empty(), "{visible:?}");
            }
            _ => {
                assert_eq!(after, Some(checkpoint(3)), "committed");
                let manifest = arcane_sinks::latest_manifest(&store.url(), &store.options())
                    .await
                    .expect("manifest")
                    .expect("one");
                assert_eq!(manifest.dead_letters, 1);
                assert_eq!(
                    manifest.dead_letter_files,
                    visible
                        .iter()
                        .map(|v| format!("{}/{v}", store.url()))
                        .collect::<Vec<_>>(),
                    "the committed dead-letter file is visible after recovery"
                );
            }
        }
    }
    if let Some(uploads) = store.incomplete_uploads().await {
        assert!(uploads.is_empty(), "{uploads:?}");
    }
}

#[tokio::test]
async fn dead_letters_become_visible_only_when_committed_memory() {
    dead_letters_become_visible_only_when_committed(&Store::memory()).await;
}

#[tokio::test]
async fn dead_letters_become_visible_only_when_committed_s3_moto() {
    let store = Store::s3().await;
    dead_letters_become_visible_only_when_committed(&store).await;
    store.cleanup().await;
}

#[tokio::test]
async fn dead_letters_become_visible_only_when_committed_azure_azurite() {
    let store = Store::azure().await;
    dead_letters_become_visible_only_when_committed(&store).await;
    store.cleanup().await;
}

/// `live_files` (what `arcane show --files` prints) lists the committed files, and refuses to
/// list a last commit whose files are not visible yet rather than hand a reader paths it cannot
/// open.
async fn live_files_wait_for_a_commit_to_be_visible(store: &Store) {
    let dir = tempfile::tempdir().expect("tmp");
    let marker = dir.path().join("paused");
    let mut sink = ParquetSink::new(store.config())
        .expect("sink")
        .with_pause_at("after-manifest", 1, Some(&marker));
    sink.open(&ctx()).await.expect("open");
    sink.write(group(0, 1000)).await.expect("write");
    tokio::select! {
        _ = sink.flush() => panic!("the sink pauses after its manifest"),
        _ = async {
            while !marker.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } => {}
    }
    drop(sink);
    let err = arcane_sinks::live_files(&store.url(), &store.options())
        .await
        .expect_err("the committed file is not visible yet");
    assert!(
        err.to_string()
            .contains("the last commit (#0) is not complete yet"),
        "{err}"
    );
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Restart, "{err}");
    let mut sink = ParquetSink::new(store.config()).expect("sink");
    sink.open(&ctx()).await.expect("recover");
    let files = arcane_sinks::live_files(&store.url(), &store.options())
        .await
        .expect("files");
    let expected = match store {
        Store::Local(dir) => dir
            .path()
            .join("stream/part-orders-eu-00000000-0000.parquet")
            .display()
            .to_string(),
        _ => format!("{}/part-orders-eu-00000000-0000.parquet", store.url()),
    };
    assert_eq!(files, vec![expected]);
}

#[tokio::test]
async fn live_files_wait_for_a_commit_to_be_visible_local_fs() {
    live_files_wait_for_a_commit_to_be_visible(&Store::local()).await;
}

#[tokio::test]
async fn live_files_wait_for_a_commit_to_be_visible_memory() {
    live_files_wait_for_a_commit_to_be_visible(&Store::memory()).await;
}

#[tokio::test]
async fn rejected_rows_over_the_budget_fail_the_group_and_commit_what_came_before() {
    use std::sync::Arc;
    let store = Store::memory();
    let config: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
        "url": store.url(),
        "schema": [{ "name": "id", "type": "int64", "nullable": false }],
    }))
    .expect("config");
    let tally = arcane_core::DeadLetterTally::new(config.dead_letter.budget(), Default::default());
    let ctx = SinkContext {
        dead_letters: tally.clone(),
        ..ctx()
    };
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&ctx).await.expect("open");
    let good = arrow_array::RecordBatch::try_from_iter([(
        "id",
        Arc::new(arrow_array::Int64Array::from_iter_values(0..100)) as _,
    )])
    .expect("batch");
    tally.add_read(100, &[]).expect("within budget");
    sink.write(Group::new(good, checkpoint(100)))
        .await
        .expect("write");
    // Twenty null ids: 20 dead letters of 120 records read, over 1 % of 1000.
    let bad = arrow_array::RecordBatch::try_from_iter([(
        "id",
        Arc::new(arrow_array::Int64Array::from(vec![None::<i64>; 20])) as _,
    )])
    .expect("batch");
    tally
        .add_read(20, &[])
        .expect("counted before the sink judges");
    let err = sink
        .write(Group::new(bad, checkpoint(120)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DeadLetterBudget { .. }), "{err}");
    assert!(err.to_string().contains("20 of 120 records"), "{err}");
    assert_eq!(
        ids(&store.read().await),
        (0..100).collect::<Vec<_>>(),
        "the group before the budget was crossed is committed, the one that crossed it is not"
    );
}

#[tokio::test]
async fn an_empty_overwrite_backfill_keeps_the_current_data() {
    let store = Store::memory();
    let mut config = store.config();
    config.generation_retention = Duration::ZERO;
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    sink.open(&ctx()).await.expect("open");
    sink.write(group(0, 300)).await.expect("write");
    sink.flush().await.expect("flush");
    let backfill = SinkContext {
        mode: Mode::Backfill,
        backfill_id: Some("typo".into()),
        source_name: "blob-landing s3://landing/ordrs/".into(),
        ..ctx()
    };
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    sink.open(&backfill).await.expect("open");
    let err = sink.finish().await.unwrap_err();
    assert!(matches!(err, Error::EmptyOverwrite { .. }), "{err}");
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal);
    assert!(
        err.to_string().contains("blob-landing s3://landing/ordrs/"),
        "{err}"
    );
    assert_eq!(ids(&store.read().await), (0..300).collect::<Vec<_>>());

    // Allowed explicitly, it publishes the empty generation.
    config.allow_empty_overwrite = true;
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&backfill).await.expect("open");
    sink.finish().await.expect("finish");
    assert!(ids(&store.read().await).is_empty());
}

#[test]
fn config_errors_name_the_path_in_the_spec() {
    let mut config = ParquetSinkConfig::new("s4://bucket/x");
    let err = ParquetSink::new_at(config.clone(), "spec.sink").unwrap_err();
    assert!(err.to_string().starts_with("spec.sink.url: "), "{err}");
    config.url = "memory:///x".into();
    config.writer.compression = "zip".into();
    let err = ParquetSink::new_at(config, "spec.sink").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("spec.sink.writer.compression: "),
        "{err}"
    );
}

#[tokio::test]
async fn overwrite_backfill_is_resumable_and_switches_generations_atomically() {
    let store = Store::memory();
    let mut config = store.config();
    config.generation_retention = Duration::ZERO;
    // The live generation: 0..300.
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    sink.open(&ctx()).await.expect("open");
    sink.write(group(0, 300)).await.expect("write");
    sink.flush().await.expect("flush");
    let backfill = SinkContext {
        mode: Mode::Backfill,
        backfill_id: Some("bf-1".into()),
        ..ctx()
    };
    // A backfill of 1000 rows, interrupted after committing 400.
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    assert_eq!(
        sink.open(&backfill).await.expect("open"),
        None,
        "a new backfill reads the whole history"
    );
    sink.write(group(0, 200)).await.expect("write");
    sink.flush().await.expect("flush");
    sink.write(group(200, 400)).await.expect("write");
    sink.flush().await.expect("flush");
    sink.write(group(400, 500)).await.expect("write"); // never committed
    drop(sink);
    assert_eq!(
        ids(&store.read().await),
        (0..300).collect::<Vec<_>>(),
        "readers see the old generation"
    );
    // Resume with the same id: continue after 400, do not rewrite finished parts.
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    assert_eq!(
        sink.open(&backfill).await.expect("open"),
        Some(checkpoint(400))
    );
    sink.write(group(400, 1000)).await.expect("write");
    sink.flush().await.expect("flush");
    assert_eq!(
        ids(&store.read().await),
        (0..300).collect::<Vec<_>>(),
        "still the old generation before finish"
    );
    sink.finish().await.expect("finish");
    let files = committed_files(&store.url(), &store.options())
        .await
        .expect("files");
    assert_eq!(
        files.len(),
        3,
        "two parts before the interruption and one after: {files:?}"
    );
    assert!(
        files
            .iter()
            .all(|f| f.path.starts_with("_generations/bf-1-"))
    );
    assert_eq!(ids(&store.read().await), (0..1000).collect::<Vec<_>>());
    // The stream continues from the backfill's end in the new generation.
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    assert_eq!(
        sink.open(&ctx()).await.expect("open"),
        Some(checkpoint(1000))
    );
    sink.write(group(1000, 1100)).await.expect("write");
    sink.flush().await.expect("flush");
    assert_eq!(ids(&store.read().await), (0..1100).collect::<Vec<_>>());
    // The old generation's files were deleted (retention 0).
    let url = url::Url::parse(&store.url()).expect("url");
    let _ = url;
    let all = read_committed(&store.url(), &BTreeMap::new())
        .await
        .expect("read");
    assert_eq!(ids(&all).len(), 1100);
}

#[tokio::test]
async fn merge_backfill_appends_to_the_live_dataset() {
    let store = Store::memory();
    let mut config = store.config();
    config.backfill_behavior = arcane_sinks::BackfillBehavior::Merge;
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    sink.open(&ctx()).await.expect("open");
    sink.write(group(1000, 1100)).await.expect("write");
    sink.flush().await.expect("flush");
    let backfill = SinkContext {
        mode: Mode::Backfill,
        backfill_id: Some("m".into()),
        ..ctx()
    };
    let mut sink = ParquetSink::new(config.clone()).expect("sink");
    assert_eq!(sink.open(&backfill).await.expect("open"), None);
    sink.write(group(0, 1000)).await.expect("write");
    sink.flush().await.expect("flush");
    sink.finish().await.expect("finish");
    let mut want: Vec<i64> = (0..1100).collect();
    want.sort_unstable();
    assert_eq!(ids(&store.read().await), want);
}

#[tokio::test]
async fn an_unreachable_store_is_a_transient_error_and_loses_nothing_committed() {
    let store = Store::s3().await;
    let mut sink = ParquetSink::new(store.config()).expect("sink");
    sink.open(&ctx()).await.expect("open");
    sink.write(group(0, 100)).await.expect("write");
    sink.flush().await.expect("flush");
    // The same bucket behind an endpoint nobody listens on.
    let mut config = store.config();
    config
        .storage_options
        .insert("aws_endpoint".into(), "http://127.0.0.1:9".into());
    config
        .storage_options
        .insert("connect_timeout".into(), "1s".into());
    let mut broken = ParquetSink::new(config).expect("sink");
    match broken.open(&ctx()).await {
        Err(Error::Sink {
            retry: Retry::Transient,
            message,
            ..
        }) => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a transient sink error, got {other:?}"),
    }
    assert_eq!(ids(&store.read().await), (0..100).collect::<Vec<_>>());
    let mut sink = ParquetSink::new(store.config()).expect("sink");
    assert_eq!(
        sink.open(&ctx()).await.expect("open"),
        Some(checkpoint(100))
    );
    store.cleanup().await;
}

#[tokio::test]
async fn a_missing_bucket_is_a_permanent_error() {
    let endpoint = std::env::var("ARCANE_TEST_S3_ENDPOINT")
        .expect("ARCANE_TEST_S3_ENDPOINT is not set; run scripts/test.sh");
    let mut config = ParquetSinkConfig::new("s3://arcane-sinks-no-such-bucket/stream");
    for (k, v) in [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "testing"),
        ("aws_secret_access_key", "testing"),
        ("aws_region", "us-east-1"),
    ] {
        config.storage_options.insert(k.into(), v.into());
    }
    let mut sink = ParquetSink::new(config).expect("sink");
    match sink.open(&ctx()).await {
        Err(Error::Sink {
            retry: Retry::Permanent,
            ..
        }) => {}
        other => panic!("expected a permanent sink error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_group_without_rows_moves_the_checkpoint_whatever_its_schema() {
    let store = Store::memory();
    let mut sink = ParquetSink::new(store.config()).unwrap();
    sink.open(&ctx()).await.unwrap();
    sink.write(group(0, 10)).await.unwrap();
    // A position-only group, e.g. flushed at shutdown after the source finished a file.
    let empty = Group {
        batch: arrow_array::RecordBatch::new_empty(std::sync::Arc::new(
            arrow_schema::Schema::empty(),
        )),
        checkpoint: checkpoint(11),
        dead_letters: Vec::new(),
    };
    assert_eq!(sink.write(empty).await.unwrap(), None);
    let commit = sink.flush().await.unwrap().unwrap();
    assert_eq!((commit.rows, commit.checkpoint), (10, checkpoint(11)));
    assert_eq!(ids(&store.read().await), (0..10).collect::<Vec<_>>());
    let mut reopened = ParquetSink::new(store.config()).unwrap();
    assert_eq!(reopened.open(&ctx()).await.unwrap(), Some(checkpoint(11)));
}

/// A group that opens no file (only the position moved, or every record was dead-lettered) is
/// committed once `rolling.maxFileAge` passed, without waiting for rows: a source acking after
/// commits (pushed requests) is answered.
#[tokio::test(start_paused = true)]
async fn position_only_groups_and_dead_letters_commit_by_age() {
    let store = Store::memory();
    let mut config = store.config();
    config.rolling.max_file_age = Duration::from_millis(200);
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&ctx()).await.expect("open");
    let empty = GeneratorSource::batch(0, 0);
    let mut g = Group::new(empty.clone(), checkpoint(10));
    g.dead_letters = vec![arcane_core::DeadLetter::new("test", "record 3", "bad")];
    assert!(sink.write(g).await.expect("write").is_none());
    assert!(sink.tick().await.expect("tick").is_none(), "not due yet");
    tokio::time::advance(Duration::from_millis(250)).await;
    let commit = sink.tick().await.expect("tick").expect("committed by age");
    assert_eq!(commit.checkpoint, checkpoint(10));
    assert_eq!((commit.rows, commit.dead_letters), (0, 1));
    // Only a position.
    assert!(
        sink.write(Group::new(empty, checkpoint(20)))
            .await
            .expect("write")
            .is_none()
    );
    tokio::time::advance(Duration::from_millis(250)).await;
    let commit = sink.tick().await.expect("tick").expect("committed by age");
    assert_eq!(commit.checkpoint, checkpoint(20));
    assert!(sink.tick().await.expect("tick").is_none(), "nothing left");
}

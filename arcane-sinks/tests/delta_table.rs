//! The Parquet sink with `tableFormat: delta`, read back by an independent reader (the Python
//! `deltalake` package, `ARCANE_TEST_PYTHON`): commits, a crash between the manifest and the
//! Delta commit, two writers of one stream, another engine's commits (OPTIMIZE, a
//! checkpoint), schema evolution, an overwrite backfill, and `partitionBy` columns as the
//! table's partition columns.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arcane_core::testing::GeneratorSource;
use arcane_core::{Group, Mode, Sink, SinkContext};
use arcane_sinks::{DeltaConfig, ParquetSink, ParquetSinkConfig, SchemaEvolution};
use arcane_test_support::delta::{read_delta, run_python};
use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use common::{SinkStore, Store, checkpoint};
use serde_json::Value;

const STREAM: &str = "orders";

fn config(store: &Store) -> ParquetSinkConfig {
    store.config().with_delta(DeltaConfig {
        name: Some("orders".into()),
        ..DeltaConfig::default()
    })
}

fn ctx() -> SinkContext {
    SinkContext {
        stream_id: STREAM.into(),
        ..SinkContext::default()
    }
}

async fn open(config: ParquetSinkConfig, ctx: &SinkContext) -> ParquetSink {
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(ctx).await.expect("open");
    sink
}

/// Write rows `from..to` and commit them.
async fn commit(sink: &mut ParquetSink, from: u64, to: u64) {
    sink.write(Group::new(GeneratorSource::batch(from, to), checkpoint(to)))
        .await
        .expect("write");
    sink.flush().await.expect("flush").expect("a commit");
}

fn local_path(store: &Store) -> String {
    store.url()
}

/// The JSON actions of Delta commit `version`.
fn log_actions(store: &Store, version: u64) -> Vec<Value> {
    let Store::Local(dir) = store else {
        panic!("local store only")
    };
    let path = dir
        .path()
        .join(format!("stream/_delta_log/{version:020}.json"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON action"))
        .collect()
}

fn kinds(actions: &[Value]) -> Vec<String> {
    actions
        .iter()
        .map(|a| {
            a.as_object()
                .expect("action")
                .keys()
                .next()
                .expect("key")
                .clone()
        })
        .collect()
}

#[tokio::test]
async fn commits_become_delta_versions_read_back_by_deltalake() {
    let store = Store::local();
    let mut sink = open(config(&store), &ctx()).await;
    commit(&mut sink, 0, 1000).await;
    commit(&mut sink, 1000, 2500).await;
    commit(&mut sink, 2500, 3000).await;
    let read = read_delta(&local_path(&store), &BTreeMap::new(), STREAM);
    assert_eq!(read.ids(), (0..3000).collect::<Vec<i64>>());
    // Manifest 0 is the start's claim, before the table exists (no schema yet).
    assert_eq!(read.version, 2);
    assert_eq!(
        read.txn,
        Some(3),
        "the stream's txn is the last manifest sequence"
    );
    assert_eq!(read.columns, ["id", "key", "value", "event_time"]);
    // The generator's millisecond timestamps are stored as microseconds.
    assert_eq!(
        read.rows.iter().find(|r| r["id"] == 1).expect("row 1")["event_time"],
        "2026-01-01 00:00:01+00:00"
    );

    let v0 = log_actions(&store, 0);
    assert_eq!(
        kinds(&v0),
        ["commitInfo", "protocol", "metaData", "txn", "add"]
    );
    assert_eq!(v0[2]["metaData"]["name"], "orders");
    assert_eq!(v0[0]["commitInfo"]["arcane"]["sequence"], 1);
    assert_eq!(
        v0[0]["commitInfo"]["arcane"]["checkpoint"]["position"]["rows"],
        1000
    );
    let stats: Value =
        serde_json::from_str(v0[4]["add"]["stats"].as_str().expect("stats")).expect("JSON");
    assert_eq!(stats["numRecords"], 1000);
    assert_eq!(stats["minValues"]["id"], 0);
    assert_eq!(stats["maxValues"]["id"], 999);
    assert_eq!(stats["nullCount"]["key"], 0);
    assert_eq!(kinds(&log_actions(&store, 1)), ["commitInfo", "txn", "add"]);

    // A restart publishes nothing twice and goes on: its claim (an empty commit), then the
    // new rows.
    drop(sink);
    let mut sink = open(config(&store), &ctx()).await;
    commit(&mut sink, 3000, 3100).await;
    let read = read_delta(&local_path(&store), &BTreeMap::new(), STREAM);
    assert_eq!(read.ids(), (0..3100).collect::<Vec<i64>>());
    assert_eq!((read.version, read.txn), (4, Some(5)));
    assert_eq!(kinds(&log_actions(&store, 3)), ["commitInfo", "txn"]);
}

/// A crash after the manifest (files visible or not) and before the Delta commit: the next
/// start publishes the manifest once.
#[tokio::test]
async fn a_crash_before_the_delta_commit_is_published_by_the_next_start() {
    for point in ["after-manifest", "before-table-commit"] {
        let store = Store::local();
        let mut sink = open(config(&store), &ctx()).await;
        commit(&mut sink, 0, 100).await;
        let mut crashing = ParquetSink::new(config(&store))
            .expect("sink")
            .with_pause_at(point, 1, None);
        crashing.open(&ctx()).await.expect("open");
        crashing
            .write(Group::new(
                GeneratorSource::batch(100, 300),
                checkpoint(300),
            ))
            .await
            .expect("write");
        let flushed = tokio::time::timeout(Duration::from_millis(500), crashing.flush()).await;
        assert!(flushed.is_err(), "{point}: the sink pauses there");
        drop(crashing); // the process dies
        drop(sink);
        let before = read_delta(&local_path(&store), &BTreeMap::new(), STREAM);
        assert_eq!(before.ids(), (0..100).collect::<Vec<i64>>(), "{point}");
        assert_eq!(
            before.txn,
            Some(2),
            "{point}: the crashed start's claim, not its commit"
        );

        let mut sink = open(config(&store), &ctx()).await;
        let read = read_delta(&local_path(&store), &BTreeMap::new(), STREAM);
        assert_eq!(read.ids(), (0..300).collect::<Vec<i64>>(), "{point}");
        assert_eq!((read.version, read.txn), (3, Some(4)), "{point}");
        commit(&mut sink, 300, 400).await;
        let read = read_delta(&local_path(&store), &BTreeMap::new(), STREAM);
        assert_eq!(read.ids(), (0..400).collect::<Vec<i64>>(), "{point}");
        assert_eq!(read.txn, Some(5), "{point}");
    }
}

/// Two runners of one stream at once: the one started first fails at its next commit (the
/// second one's start claimed the sequence), with an error saying so, and the table holds
/// every row once.
#[tokio::test]
async fn a_second_writer_of_the_stream_fails_and_the_table_stays_consistent() {
    let store = Store::local();
    let mut a = open(config(&store), &ctx()).await;
    commit(&mut a, 0, 100).await;
    let mut b = open(config(&store), &ctx()).await;
    a.write(Group::new(
        GeneratorSource::batch(100, 200),
        checkpoint(200),
    ))
    .await
    .expect("write");
    let err = a.flush().await.expect_err("the first writer fails");
    let message = err.to_string();
    assert!(
        message.contains("another runner of stream \"orders\""),
        "{message}"
    );
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Restart, "{message}");
    drop(a);
    commit(&mut b, 100, 200).await;
    let read = read_delta(&local_path(&store), &BTreeMap::new(), STREAM);
    assert_eq!(read.ids(), (0..200).collect::<Vec<i64>>());
    assert_eq!(read.txn, Some(3));
}

/// Another engine commits to the table between ours (delta-rs compacts it and writes a
/// checkpoint): the sink's next commit goes after it, and a restart reads the log again.
#[tokio::test]
async fn other_engines_commits_in_between_are_respected() {
    let store = Store::local();
    let mut sink = open(config(&store), &ctx()).await;
    commit(&mut sink, 0, 100).await;
    commit(&mut sink, 100, 200).await;
    let uri = local_path(&store);
    run_python(
        "dt = DeltaTable(sys.argv[1])\ndt.optimize.compact()\ndt.create_checkpoint()",
        &[&uri],
    );
    commit(&mut sink, 200, 300).await; // version 2 is taken by OPTIMIZE: goes to 3
    let read = read_delta(&uri, &BTreeMap::new(), STREAM);
    assert_eq!(read.ids(), (0..300).collect::<Vec<i64>>());
    assert_eq!((read.version, read.txn), (3, Some(3)));
    drop(sink);
    let mut sink = open(config(&store), &ctx()).await;
    commit(&mut sink, 300, 400).await;
    let read = read_delta(&uri, &BTreeMap::new(), STREAM);
    assert_eq!(read.ids(), (0..400).collect::<Vec<i64>>());
    assert_eq!((read.version, read.txn), (5, Some(5)));
}

fn batch_with(ids: std::ops::Range<i64>, note: Option<&str>) -> RecordBatch {
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    let mut cols: Vec<arrow_array::ArrayRef> =
        vec![Arc::new(Int64Array::from_iter_values(ids.clone()))];
    if let Some(n) = note {
        fields.push(Field::new("note", DataType::Utf8, true));
        cols.push(Arc::new(StringArray::from_iter_values(
            ids.map(|i| format!("{n}-{i}")),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("batch")
}

#[tokio::test]
async fn an_added_nullable_column_is_a_new_delta_schema() {
    let store = Store::local();
    let mut config = config(&store);
    config.schema_evolution = SchemaEvolution::AddNullableColumns;
    let mut sink = open(config, &ctx()).await;
    sink.write(Group::new(batch_with(0..10, None), checkpoint(10)))
        .await
        .expect("write");
    sink.flush().await.expect("flush");
    sink.write(Group::new(batch_with(10..20, Some("n")), checkpoint(20)))
        .await
        .expect("write");
    sink.flush().await.expect("flush");
    let read = read_delta(&local_path(&store), &BTreeMap::new(), STREAM);
    assert_eq!(read.columns, ["id", "note"]);
    assert_eq!(read.ids(), (0..20).collect::<Vec<i64>>());
    for r in &read.rows {
        let id = r["id"].as_i64().expect("id");
        let want = if id < 10 {
            Value::Null
        } else {
            Value::String(format!("n-{id}"))
        };
        assert_eq!(r["note"], want, "row {id}");
    }
    assert_eq!(
        kinds(&log_actions(&store, 1)),
        ["commitInfo", "metaData", "txn", "add"]
    );
}

#[tokio::test]
async fn an_overwrite_backfill_replaces_the_tables_rows_when_it_completes() {
    let store = Store::local();
    let mut sink = open(config(&store), &ctx()).await;
    commit(&mut sink, 0, 100).await;
    drop(sink);
    let backfill = SinkContext {
        mode: Mode::Backfill,
        backfill_id: Some("b1".into()),
        ..ctx()
    };
    let mut sink = open(config(&store), &backfill).await;
    commit(&mut sink, 1000, 1050).await;
    commit(&mut sink, 1050, 1100).await;
    // Not in the table while the backfill runs.
    let read = read_delta(&local_path(&store), &BTreeMap::new(), STREAM);
    assert_eq!(read.ids(), (0..100).collect::<Vec<i64>>());
    sink.finish().await.expect("finish");
    let read = read_delta(&local_path(&store), &BTreeMap::new(), STREAM);
    assert_eq!(read.ids(), (1000..1100).collect::<Vec<i64>>());
    assert_eq!(read.files, 2);
    let last = log_actions(&store, read.version);
    assert_eq!(kinds(&last), ["commitInfo", "txn", "remove", "add", "add"]);
}

#[test]
fn unknown_table_formats_and_unsupported_columns_are_config_errors() {
    let err = serde_json::from_value::<ParquetSinkConfig>(serde_json::json!({
        "url": "memory:///t", "tableFormat": {"hudi": {}}
    }))
    .expect_err("unknown format");
    assert!(err.to_string().contains("unknown variant `hudi`"), "{err}");
    let config: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
        "url": "memory:///t", "tableFormat": {"delta": {}},
        "schema": [{"name": "n", "type": "uint32"}]
    }))
    .expect("parses");
    let err = ParquetSink::new(config).expect_err("refused").to_string();
    assert!(
        err.contains("sink.schema") && err.contains("column \"n\"") && err.contains("unsigned"),
        "{err}"
    );
}

/// A table another engine created with other columns is refused before anything is
/// committed, with an error naming the column.
#[tokio::test]
async fn an_existing_table_with_other_columns_is_refused() {
    let store = Store::local();
    let uri = local_path(&store);
    run_python(
        "import pyarrow as pa\nschema = pa.schema([pa.field('id', pa.int64(), False), pa.field('other', pa.string())])\ndeltalake.write_deltalake(sys.argv[1], pa.table({'id': [1], 'other': ['x']}, schema=schema))",
        &[&uri],
    );
    let mut sink = open(config(&store), &ctx()).await;
    sink.write(Group::new(GeneratorSource::batch(0, 10), checkpoint(10)))
        .await
        .expect("write");
    let err = sink.flush().await.expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains("sink.tableFormat.delta") && message.contains("\"other\""),
        "{message}"
    );
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal, "{message}");
    let read = read_delta(&uri, &BTreeMap::new(), STREAM);
    assert_eq!(read.ids(), [1], "the table's rows are unchanged");
    assert_eq!(read.txn, Some(0), "only the start's claim is in the log");
}

/// The same on S3 (moto) and Azure Blob (azurite): conditional puts of the log, two
/// writers, read back by deltalake with the sink's storage options.
async fn on_object_store(store: Store) {
    let (url, options) = (store.url(), store.options());
    let mut a = open(config(&store), &ctx()).await;
    commit(&mut a, 0, 100).await;
    let mut b = open(config(&store), &ctx()).await;
    a.write(Group::new(
        GeneratorSource::batch(100, 200),
        checkpoint(200),
    ))
    .await
    .expect("write");
    let err = a.flush().await.expect_err("the first writer fails");
    assert!(err.to_string().contains("another runner"), "{err}");
    drop(a);
    commit(&mut b, 100, 250).await;
    let read = read_delta(&url, &options, STREAM);
    assert_eq!(read.ids(), (0..250).collect::<Vec<i64>>());
    assert_eq!((read.version, read.txn), (2, Some(3)));
}

#[tokio::test]
async fn delta_on_s3() {
    on_object_store(Store::s3().await).await;
}

#[tokio::test]
async fn delta_on_azure() {
    on_object_store(Store::azure().await).await;
}

/// The sink's manifests are the record of what it committed; a table whose log is ahead of
/// them (manifests removed) is refused with what to do, and a manifest missing from the range
/// the table still lacks is never skipped silently.
#[tokio::test]
async fn manifests_removed_behind_the_tables_back_are_refused_not_skipped() {
    let store = Store::local();
    let Store::Local(dir) = &store else {
        unreachable!()
    };
    let manifests = dir.path().join("stream/_arcane/manifests");
    let mut sink = open(config(&store), &ctx()).await;
    commit(&mut sink, 0, 100).await;
    commit(&mut sink, 100, 200).await;
    drop(sink);
    let mut names: Vec<_> = std::fs::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");

    // The newest manifest gone: the table records it, the sink's history ends before it.
    let newest = names.pop().unwrap();
    let kept = std::fs::read(&newest).unwrap();
    std::fs::remove_file(&newest).unwrap();
    let mut again = ParquetSink::new(config(&store)).expect("sink");
    let err = again.open(&ctx()).await.expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains("were removed or reset") && message.contains("backfill"),
        "{message}"
    );
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal, "{message}");
    std::fs::write(&newest, kept).unwrap();

    // The table one manifest behind (a crash before its Delta commit) and the manifest it
    // published last gone: an error naming it, not a publish that guesses the generation.
    let mut crashing = ParquetSink::new(config(&store))
        .expect("sink")
        .with_pause_at("before-table-commit", 1, None);
    crashing.open(&ctx()).await.expect("open");
    crashing
        .write(Group::new(
            GeneratorSource::batch(200, 300),
            checkpoint(300),
        ))
        .await
        .expect("write");
    let flushed = tokio::time::timeout(Duration::from_millis(500), crashing.flush()).await;
    assert!(flushed.is_err(), "the sink pauses before its Delta commit");
    drop(crashing);
    let mut names: Vec<_> = std::fs::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let last_published = &names[names.len() - 2];
    std::fs::remove_file(last_published).unwrap();
    let mut again = ParquetSink::new(config(&store)).expect("sink");
    let err = again.open(&ctx()).await.expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("is missing"), "{message}");
}

/// Rows of `id` and a nullable `city`: `a/b=c%` (escaped in the directory), null, `x`.
fn city_batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let cities: Vec<Option<&str>> = ids
        .clone()
        .map(|i| [Some("a/b=c%"), None, Some("x")][(i % 3) as usize])
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("city", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(cities)),
        ],
    )
    .expect("batch")
}

/// `sink.partitionBy.columns` makes a partitioned Delta table: `partitionColumns`, each
/// file's `partitionValues` (unescaped, null for the null partition), read back by deltalake
/// with partition filters; the files keep the column and deltalake reads it once.
#[tokio::test]
async fn partition_by_columns_make_a_partitioned_delta_table() {
    let store = Store::local();
    let mut config = config(&store);
    config.partition_by.columns = vec!["city".into()];
    let mut sink = open(config.clone(), &ctx()).await;
    sink.write(Group::new(city_batch(0..30), checkpoint(30)))
        .await
        .expect("write");
    sink.flush().await.expect("flush").expect("a commit");
    let v0 = log_actions(&store, 0);
    assert_eq!(
        v0[2]["metaData"]["partitionColumns"],
        serde_json::json!(["city"])
    );
    let mut values: Vec<String> = v0
        .iter()
        .filter_map(|a| a.get("add"))
        .map(|a| a["partitionValues"].to_string())
        .collect();
    values.sort();
    assert_eq!(
        values,
        [
            r#"{"city":"a/b=c%"}"#,
            r#"{"city":"x"}"#,
            r#"{"city":null}"#
        ]
    );
    let uri = local_path(&store);
    let out = run_python(
        r#"
dt = DeltaTable(sys.argv[1])
def ids(t):
    d = t.to_pydict()
    return sorted(zip(d['id'], d['city']))
print(json.dumps({
    'partition_columns': dt.metadata().partition_columns,
    'columns': dt.to_pyarrow_table().column_names,
    'all': len(dt.to_pyarrow_table()),
    'escaped': ids(dt.to_pyarrow_table(filters=[('city', '=', 'a/b=c%')])),
    'x': ids(dt.to_pyarrow_table(partitions=[('city', '=', 'x')])),
    'null': sorted(dt.to_pyarrow_dataset().to_table(filter=pyarrow.dataset.field('city').is_null()).to_pydict()['id']),
}))
"#
        .replace("dt = ", "import pyarrow.dataset\nimport pyarrow\ndt = ")
        .as_str(),
        &[&uri],
    );
    let got: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(got["partition_columns"], serde_json::json!(["city"]));
    assert_eq!(got["columns"], serde_json::json!(["id", "city"]));
    assert_eq!(got["all"], 30);
    let want = |rem: i64, city: Value| {
        Value::Array(
            (0..30)
                .filter(|i| i % 3 == rem)
                .map(|i| serde_json::json!([i, city]))
                .collect(),
        )
    };
    assert_eq!(got["escaped"], want(0, "a/b=c%".into()));
    assert_eq!(got["x"], want(2, "x".into()));
    assert_eq!(
        got["null"],
        Value::Array((0..30).filter(|i| i % 3 == 1).map(Value::from).collect())
    );

    // Another partitioning of the same table is refused, naming sink.partitionBy.
    drop(sink);
    let mut other = config.clone();
    other.partition_by.columns = vec![];
    let mut sink = ParquetSink::new(other).expect("sink");
    let err = match sink.open(&ctx()).await {
        Err(e) => e,
        Ok(_) => {
            sink.write(Group::new(city_batch(30..33), checkpoint(33)))
                .await
                .expect("write");
            sink.flush().await.expect_err("refused")
        }
    };
    let message = err.to_string();
    assert!(
        message.contains("sink.partitionBy") && message.contains("[\"city\"]"),
        "{message}"
    );
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal, "{message}");
}

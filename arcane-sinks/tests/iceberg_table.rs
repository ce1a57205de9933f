//! The Parquet sink with `tableFormat: iceberg`, a SQL catalog on the machine's PostgreSQL,
//! read back by an independent reader (pyiceberg's `SqlCatalog` on the same database,
//! `ARCANE_TEST_PYTHON`): commits as snapshots, a crash between the manifest and the Iceberg
//! commit, two writers of one stream, schema evolution, identity partition specs from
//! `partitionBy`, and what is refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arcane_core::testing::GeneratorSource;
use arcane_core::{Group, Mode, Sink, SinkContext};
use arcane_sinks::{ParquetSink, ParquetSinkConfig, SchemaEvolution};
use arcane_test_support::iceberg::TestCatalog;
use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use common::{SinkStore, Store, checkpoint};
use serde_json::Value;

const STREAM: &str = "orders";
const NS: &str = "sales";
const TABLE: &str = "orders";

fn config(store: &Store, catalog: &TestCatalog) -> ParquetSinkConfig {
    let mut c = store.config();
    c.table_format =
        Some(serde_json::from_value(catalog.table_format(NS, TABLE)).expect("table format"));
    c.backfill_behavior = arcane_sinks::BackfillBehavior::Merge;
    c
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

async fn commit(sink: &mut ParquetSink, from: u64, to: u64) {
    sink.write(Group::new(GeneratorSource::batch(from, to), checkpoint(to)))
        .await
        .expect("write");
    sink.flush().await.expect("flush").expect("a commit");
}

#[tokio::test]
async fn commits_become_snapshots_read_back_by_pyiceberg() {
    let store = Store::local();
    let catalog = TestCatalog::new();
    let mut sink = open(config(&store, &catalog), &ctx()).await;
    commit(&mut sink, 0, 1000).await;
    commit(&mut sink, 1000, 3000).await;
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.ids(), (0..3000).collect::<Vec<i64>>());
    assert_eq!(read.columns, ["id", "key", "value", "event_time"]);
    assert_eq!(read.field_ids, [1, 2, 3, 4]);
    // The generator's millisecond timestamps are stored as microseconds (timestamptz).
    assert_eq!(
        read.rows.iter().find(|r| r["id"] == 1).expect("row 1")["event_time"],
        "2026-01-01 00:00:01+00:00"
    );
    // Sequence 0 is the start's claim (no files): not a snapshot.
    assert_eq!(read.sequences(STREAM), [1, 2]);
    assert_eq!(read.snapshots[1]["summary"]["added-records"], "2000");
    assert_eq!(read.snapshots[1]["summary"]["total-records"], "3000");
    assert_eq!(read.snapshots[0]["summary"]["operation"], "append");
    assert!(
        read.properties["arcane-watermark"]
            .as_str()
            .is_some_and(|w| w.starts_with("20")),
        "{:?}",
        read.properties
    );

    // A restart publishes nothing twice and goes on.
    drop(sink);
    let mut sink = open(config(&store, &catalog), &ctx()).await;
    commit(&mut sink, 3000, 3100).await;
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.ids(), (0..3100).collect::<Vec<i64>>());
    assert_eq!(read.sequences(STREAM), [1, 2, 4]);
    assert_eq!(read.files, 3);
}

/// A crash after the manifest and before the Iceberg commit: the next start publishes the
/// manifest, once.
#[tokio::test]
async fn a_crash_before_the_iceberg_commit_is_published_by_the_next_start() {
    for point in ["after-manifest", "before-table-commit"] {
        let store = Store::local();
        let catalog = TestCatalog::new();
        let mut sink = open(config(&store, &catalog), &ctx()).await;
        commit(&mut sink, 0, 100).await;
        let mut crashing = ParquetSink::new(config(&store, &catalog))
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
        let before = catalog.read(NS, TABLE);
        assert_eq!(before.ids(), (0..100).collect::<Vec<i64>>(), "{point}");

        let mut sink = open(config(&store, &catalog), &ctx()).await;
        let read = catalog.read(NS, TABLE);
        assert_eq!(read.ids(), (0..300).collect::<Vec<i64>>(), "{point}");
        assert_eq!(read.sequences(STREAM), [1, 3], "{point}");
        commit(&mut sink, 300, 400).await;
        let read = catalog.read(NS, TABLE);
        assert_eq!(read.ids(), (0..400).collect::<Vec<i64>>(), "{point}");
        assert_eq!(read.sequences(STREAM), [1, 3, 5], "{point}");
    }
}

/// Two writers of one stream: the one started first fails at its next commit, and the table
/// holds every row once.
#[tokio::test]
async fn a_second_writer_of_the_stream_fails_and_the_table_stays_consistent() {
    let store = Store::local();
    let catalog = TestCatalog::new();
    let mut a = open(config(&store, &catalog), &ctx()).await;
    commit(&mut a, 0, 100).await;
    let mut b = open(config(&store, &catalog), &ctx()).await;
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
    commit(&mut b, 100, 200).await;
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.ids(), (0..200).collect::<Vec<i64>>());
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

/// `schemaEvolution: addNullableColumns`: the widened schema is a new Iceberg schema with a
/// new field id; pyiceberg reads nulls for the new column in the older files.
#[tokio::test]
async fn an_added_nullable_column_is_a_new_iceberg_schema() {
    let store = Store::local();
    let catalog = TestCatalog::new();
    let mut config = config(&store, &catalog);
    config.schema_evolution = SchemaEvolution::AddNullableColumns;
    let mut sink = open(config.clone(), &ctx()).await;
    sink.write(Group::new(batch_with(0..10, None), checkpoint(10)))
        .await
        .expect("write");
    sink.flush().await.expect("flush");
    sink.write(Group::new(batch_with(10..20, Some("n")), checkpoint(20)))
        .await
        .expect("write");
    sink.flush().await.expect("flush");
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.columns, ["id", "note"]);
    assert_eq!(read.field_ids, [1, 2]);
    assert_eq!(read.schemas, 2);
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
    // A retyped column stays a schema mismatch of the sink.
    let retyped = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["x"]))],
    )
    .expect("batch");
    let err = sink
        .write(Group::new(retyped, checkpoint(21)))
        .await
        .expect_err("mismatch");
    assert!(err.is_schema_mismatch(), "{err}");
}

/// An overwrite backfill: its files stay out of the table while it runs; its completion (the
/// sink's generation switch) is one `overwrite` snapshot that removes every live file and adds
/// the backfill's. A crash between the switch manifest and the Iceberg commit is published
/// by the next start, once.
#[tokio::test]
async fn an_overwrite_backfill_replaces_the_tables_rows_in_one_overwrite_snapshot() {
    let store = Store::local();
    let catalog = TestCatalog::new();
    let mut sink = open(config(&store, &catalog), &ctx()).await;
    commit(&mut sink, 0, 100).await;
    commit(&mut sink, 100, 200).await;
    drop(sink);
    let mut c = config(&store, &catalog);
    c.backfill_behavior = arcane_sinks::BackfillBehavior::Overwrite;
    let backfill = SinkContext {
        mode: Mode::Backfill,
        backfill_id: Some("b1".into()),
        ..ctx()
    };
    // The third table commit of this run is the switch's: the process dies before it.
    let mut crashing =
        ParquetSink::new(c.clone())
            .expect("sink")
            .with_pause_at("before-table-commit", 3, None);
    crashing.open(&backfill).await.expect("open");
    commit(&mut crashing, 1000, 1050).await;
    commit(&mut crashing, 1050, 1100).await;
    let read = catalog.read(NS, TABLE);
    assert_eq!(
        read.ids(),
        (0..200).collect::<Vec<i64>>(),
        "the old rows while the backfill runs"
    );
    let finished = tokio::time::timeout(Duration::from_millis(500), crashing.finish()).await;
    assert!(
        finished.is_err(),
        "the sink pauses before the Iceberg commit"
    );
    drop(crashing);
    let read = catalog.read(NS, TABLE);
    assert_eq!(
        read.ids(),
        (0..200).collect::<Vec<i64>>(),
        "not switched yet"
    );

    // The rerun of the backfill id finds it complete and publishes the switch.
    let sink = open(c.clone(), &backfill).await;
    drop(sink);
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.ids(), (1000..1100).collect::<Vec<i64>>());
    assert_eq!(read.files, 2);
    let last = &read.snapshots.last().expect("a snapshot")["summary"];
    assert_eq!(last["operation"], "overwrite", "{last}");
    assert_eq!(last["deleted-data-files"], "2", "{last}");
    assert_eq!(last["deleted-records"], "200", "{last}");
    assert_eq!(last["added-records"], "100", "{last}");
    assert_eq!(last["total-records"], "100", "{last}");
    assert_eq!(last["total-data-files"], "2", "{last}");
    let snapshots = read.snapshots.len();

    // Once: another start publishes nothing more; streaming goes on in the new generation.
    let mut sink = open(config(&store, &catalog), &ctx()).await;
    commit(&mut sink, 1100, 1150).await;
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.ids(), (1000..1150).collect::<Vec<i64>>());
    assert_eq!(read.snapshots.len(), snapshots + 1);
    assert_eq!(
        read.snapshots.last().expect("a snapshot")["summary"]["operation"],
        "append"
    );
}

/// A sharded backfill (two shards, in process): the shards write files with the table's field
/// ids and publish nothing; the shard whose put-if-absent completion manifest wins publishes
/// it once (`overwrite`: one overwrite snapshot; `merge`: one append).
#[tokio::test]
async fn a_sharded_backfill_is_published_once_by_the_completing_shard() {
    fn resume(
        finals: &[Option<arcane_core::Checkpoint>],
    ) -> arcane_core::Result<Option<arcane_core::Checkpoint>> {
        Ok(finals.iter().flatten().last().cloned())
    }
    for behavior in [
        arcane_sinks::BackfillBehavior::Overwrite,
        arcane_sinks::BackfillBehavior::Merge,
    ] {
        let store = Store::local();
        let catalog = TestCatalog::new();
        let mut sink = open(config(&store, &catalog), &ctx()).await;
        commit(&mut sink, 0, 100).await;
        drop(sink);
        let backfill = SinkContext {
            mode: Mode::Backfill,
            backfill_id: Some("b1".into()),
            ..ctx()
        };
        let mut shards = Vec::new();
        for i in 0..2u32 {
            let mut c = config(&store, &catalog);
            c.backfill_behavior = behavior;
            let mut s = ParquetSink::new(c)
                .expect("sink")
                .with_shard(arcane_core::Shard::new(i, 2).expect("shard"), resume);
            s.open(&backfill).await.expect("open");
            let from = 1000 + u64::from(i) * 100;
            commit(&mut s, from, from + 100).await;
            shards.push(s);
        }
        let read = catalog.read(NS, TABLE);
        assert_eq!(read.ids(), (0..100).collect::<Vec<i64>>(), "{behavior:?}");
        let finished = futures::future::join_all(shards.iter_mut().map(|s| s.finish())).await;
        for r in finished {
            r.expect("finish");
        }
        let read = catalog.read(NS, TABLE);
        let want: Vec<i64> = match behavior {
            arcane_sinks::BackfillBehavior::Overwrite => (1000..1200).collect(),
            _ => (0..100).chain(1000..1200).collect(),
        };
        assert_eq!(read.ids(), want, "{behavior:?}");
        assert_eq!(read.snapshots.len(), 2, "{behavior:?}: published once");
        assert_eq!(
            read.snapshots[1]["summary"]["operation"],
            match behavior {
                arcane_sinks::BackfillBehavior::Overwrite => "overwrite",
                _ => "append",
            },
            "{behavior:?}"
        );
        // The stream's next start publishes nothing more.
        let mut sink = open(config(&store, &catalog), &ctx()).await;
        commit(&mut sink, 2000, 2010).await;
        let read = catalog.read(NS, TABLE);
        assert_eq!(read.snapshots.len(), 3, "{behavior:?}");
        assert_eq!(read.rows.len(), want.len() + 10, "{behavior:?}");
    }
}

#[tokio::test]
async fn what_the_iceberg_format_cannot_do_is_refused_with_the_field() {
    let store = Store::local();
    let catalog = TestCatalog::new();
    // Columns Iceberg has no type for are refused when the spec is read.
    let mut c = config(&store, &catalog);
    c.schema = Some(
        serde_json::from_value(serde_json::json!([{"name": "n", "type": "uint32"}]))
            .expect("schema"),
    );
    let err = ParquetSink::new(c).expect_err("refused").to_string();
    assert!(
        err.contains("sink.schema") && err.contains("column \"n\"") && err.contains("unsigned"),
        "{err}"
    );
    // A catalog that is not PostgreSQL.
    let err = serde_json::from_value::<ParquetSinkConfig>(serde_json::json!({
        "url": "memory:///t",
        "tableFormat": {"iceberg": {"catalog": {"sql": {"uri": "mysql://x/y"}}, "namespace": "a", "table": "b"}}
    }))
    .map_err(|e| e.to_string())
    .and_then(|c| ParquetSink::new(c).map_err(|e| e.to_string()))
    .expect_err("refused");
    assert!(
        err.contains("sink.tableFormat.iceberg.catalog.sql.uri"),
        "{err}"
    );
    // Unknown fields are refused.
    let err = serde_json::from_value::<ParquetSinkConfig>(serde_json::json!({
        "url": "memory:///t",
        "tableFormat": {"iceberg": {"catalog": {"sql": {"uri": "postgresql://x/y"}}, "namespace": "a", "table": "b", "warehouse": "s3://x"}}
    }))
    .expect_err("unknown field");
    assert!(err.to_string().contains("warehouse"), "{err}");
    // Unreachable catalog: RESTART after the retries, naming the catalog.
    let mut c = config(&store, &catalog);
    c.table_format = Some(
        serde_json::from_value(serde_json::json!({"iceberg": {
            "catalog": {"sql": {"uri": "postgresql://postgres@127.0.0.1:1/test"}},
            "namespace": NS, "table": TABLE}}))
        .expect("format"),
    );
    c.retry.max_attempts = 2;
    c.retry.initial_delay = Duration::from_millis(10);
    let err = ParquetSink::new(c)
        .expect("sink")
        .open(&ctx())
        .await
        .expect_err("no catalog");
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Restart, "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

/// Nested columns (a struct, a list) and the other primitive types carry field ids in the
/// files and are read back by id.
#[tokio::test]
async fn nested_and_primitive_columns_are_read_back_by_field_id() {
    use arrow_array::{
        ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Int16Array, Int32Array,
        ListArray, StructArray, TimestampMicrosecondArray, types::Int32Type,
    };
    use arrow_schema::{Fields, TimeUnit};
    let store = Store::local();
    let catalog = TestCatalog::new();
    let mut sink = open(config(&store, &catalog), &ctx()).await;
    let point = Fields::from(vec![Field::new("x", DataType::Int32, true)]);
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("small", DataType::Int16, true),
        Field::new("ratio", DataType::Float32, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("day", DataType::Date32, true),
        Field::new(
            "local",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("amount", DataType::Decimal128(10, 2), true),
        Field::new("point", DataType::Struct(point.clone()), true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            true,
        ),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2])),
        Arc::new(Int16Array::from(vec![Some(7), None])),
        Arc::new(Float32Array::from(vec![Some(0.5), None])),
        Arc::new(BooleanArray::from(vec![Some(true), Some(false)])),
        Arc::new(Date32Array::from(vec![Some(20_000), None])),
        Arc::new(TimestampMicrosecondArray::from(vec![Some(1_000_000), None])),
        Arc::new(
            Decimal128Array::from(vec![Some(12_345), None])
                .with_precision_and_scale(10, 2)
                .expect("decimal"),
        ),
        Arc::new(StructArray::new(
            point,
            vec![Arc::new(Int32Array::from(vec![Some(3), None])) as ArrayRef],
            None,
        )),
        Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ])),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), cols).expect("batch");
    sink.write(Group::new(batch, checkpoint(2)))
        .await
        .expect("write");
    sink.flush().await.expect("flush").expect("a commit");
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.field_ids, [1, 2, 3, 4, 5, 6, 7, 8, 10]);
    let row = |id: i64| read.rows.iter().find(|r| r["id"] == id).expect("row");
    let one = row(1);
    assert_eq!(one["small"], 7);
    assert_eq!(one["ratio"], 0.5);
    assert_eq!(one["ok"], true);
    assert_eq!(one["day"], "2024-10-04");
    assert_eq!(one["local"], "1970-01-01 00:00:01");
    assert_eq!(one["amount"], "123.45");
    assert_eq!(one["point"], serde_json::json!({"x": 3}));
    assert_eq!(one["tags"], serde_json::json!([1, 2]));
    let two = row(2);
    assert_eq!(two["point"], serde_json::json!({"x": null}));
    assert_eq!(two["tags"], Value::Null);
    assert_eq!(two["small"], Value::Null);
}

/// The catalog's answer to the compare-and-swap is lost (the connection breaks while the
/// answer is held): the sink reads the table's row back on a new connection, finds its own
/// commit, and goes on; the files are in the table once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_resolved_by_reading_the_catalog() {
    use arcane_test_support::proxy::Proxy;
    let upstream = arcane_test_support::iceberg::postgres_uri();
    let upstream = url::Url::parse(&upstream).expect("uri");
    let addr = format!(
        "{}:{}",
        upstream.host_str().expect("host"),
        upstream.port().unwrap_or(5432)
    )
    .parse()
    .expect("address");
    let proxy = Proxy::start(addr).await;
    let store = Store::local();
    let catalog = TestCatalog::new();
    let mut via = upstream.clone();
    via.set_port(Some(proxy.port())).expect("port");
    let mut c = config(&store, &catalog);
    c.table_format = Some(
        serde_json::from_value(serde_json::json!({"iceberg": {
            "catalog": {"sql": {"uri": via.to_string()}},
            "catalogName": catalog.name, "namespace": NS, "table": TABLE}}))
        .expect("format"),
    );
    let mut sink = open(c, &ctx()).await;
    commit(&mut sink, 0, 100).await;
    sink.write(Group::new(
        GeneratorSource::batch(100, 200),
        checkpoint(200),
    ))
    .await
    .expect("write");
    let accepted = proxy.accepted();
    proxy.pause(true);
    let flush = tokio::spawn(async move {
        let r = sink.flush().await;
        (sink, r)
    });
    // The swap reaches PostgreSQL, its answer is held; then the connection breaks.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut();
    proxy.pause(false);
    let (mut sink, flushed) = flush.await.expect("flush task");
    flushed
        .expect("the outcome is read back")
        .expect("a commit");
    assert!(
        proxy.accepted() > accepted,
        "the sink reconnected to read the outcome"
    );
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.ids(), (0..200).collect::<Vec<i64>>());
    assert_eq!(read.sequences(STREAM), [1, 2]);
    commit(&mut sink, 200, 300).await;
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.ids(), (0..300).collect::<Vec<i64>>());
    assert_eq!(read.sequences(STREAM), [1, 2, 3]);
}

/// Another engine (pyiceberg) appends to the table between two of the stream's commits: the
/// stream's next snapshot keeps the other engine's manifests (read from its deflate-compressed
/// manifest list) and its rows.
#[tokio::test]
async fn another_engines_append_is_kept() {
    let store = Store::local();
    let catalog = TestCatalog::new();
    let mut sink = open(config(&store, &catalog), &ctx()).await;
    commit(&mut sink, 0, 100).await;
    catalog.run_python(
        "import pyarrow as pa\nt = catalog.load_table(sys.argv[1])\nn = 10\nschema = t.schema().as_arrow()\nimport datetime\ncols = {'id': list(range(1000, 1000 + n)), 'key': ['other'] * n, 'value': [0.5] * n, 'event_time': [datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)] * n}\nt.append(pa.Table.from_pydict(cols, schema=schema))",
        &[&format!("{NS}.{TABLE}")],
    );
    commit(&mut sink, 100, 200).await;
    let read = catalog.read(NS, TABLE);
    let mut want: Vec<i64> = (0..200).collect();
    want.extend(1000..1010);
    assert_eq!(read.ids(), want);
    assert_eq!(read.snapshots.len(), 3);
    assert_eq!(read.sequences(STREAM), [1, 2]);
    assert_eq!(read.snapshots[1]["summary"].get("arcane.stream-id"), None);
    // A restart finds the stream's last snapshot behind the other engine's.
    drop(sink);
    catalog.run_python(
        "import pyarrow as pa, datetime\nt = catalog.load_table(sys.argv[1])\nt.append(pa.Table.from_pydict({'id': [2000], 'key': ['x'], 'value': [1.0], 'event_time': [datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)]}, schema=t.schema().as_arrow()))",
        &[&format!("{NS}.{TABLE}")],
    );
    let mut sink = open(config(&store, &catalog), &ctx()).await;
    commit(&mut sink, 200, 250).await;
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.rows.len(), 200 + 10 + 1 + 50);
    assert_eq!(read.sequences(STREAM), [1, 2, 4]);
}

/// The same on S3 (moto): the metadata, manifests and files are written through the sink's
/// S3 client and read back by pyiceberg from S3.
#[tokio::test]
async fn iceberg_on_s3() {
    let store = Store::s3().await;
    let catalog = TestCatalog::new();
    let mut sink = open(config(&store, &catalog), &ctx()).await;
    commit(&mut sink, 0, 1000).await;
    drop(sink);
    let mut sink = open(config(&store, &catalog), &ctx()).await;
    commit(&mut sink, 1000, 1500).await;
    let props = TestCatalog::s3_properties(&store.options());
    let read = catalog.read_with(NS, TABLE, &props);
    assert_eq!(read.ids(), (0..1500).collect::<Vec<i64>>());
    assert_eq!(read.sequences(STREAM), [1, 3]);
}

/// Rows of `id`, a nullable `city` (`a/b=c%`, escaped in the directory; null; `x`) and a
/// `day` (date: 2026-01-01 or 2026-01-02).
fn city_batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let cities: Vec<Option<&str>> = ids
        .clone()
        .map(|i| [Some("a/b=c%"), None, Some("x")][(i % 3) as usize])
        .collect();
    let days: Vec<i32> = ids.clone().map(|i| 20_454 + (i % 2) as i32).collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("city", DataType::Utf8, true),
            Field::new("day", DataType::Date32, false),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(cities)),
            Arc::new(arrow_array::Date32Array::from(days)),
        ],
    )
    .expect("batch")
}

async fn commit_cities(sink: &mut ParquetSink, from: i64, to: i64) {
    sink.write(Group::new(city_batch(from..to), checkpoint(to as u64)))
        .await
        .expect("write");
    sink.flush().await.expect("flush").expect("a commit");
}

const PARTITIONS: &str = r#"
import datetime
from pyiceberg.expressions import EqualTo, IsNull, And
t = catalog.load_table(sys.argv[1])
spec = t.spec()
def ids(f):
    return sorted(t.scan(row_filter=f).to_arrow().column('id').to_pylist())
def files(f):
    return sorted(str(task.file.partition) for task in t.scan(row_filter=f).plan_files())
snap = t.current_snapshot()
summaries = []
for m in snap.manifests(t.io):
    summaries.append([[p.contains_null, p.lower_bound.hex() if p.lower_bound else None, p.upper_bound.hex() if p.upper_bound else None] for p in (m.partitions or [])])
entries = [e for m in snap.manifests(t.io) for e in m.fetch_manifest_entry(t.io, discard_deleted=False)]
print(json.dumps({
    'spec': [[f.field_id, f.name, f.source_id, str(f.transform)] for f in spec.fields],
    'spec_id': spec.spec_id,
    'last_partition_id': t.metadata.last_partition_id,
    'escaped': ids(EqualTo('city', 'a/b=c%')),
    'x_day2': ids(And(EqualTo('city', 'x'), EqualTo('day', '2026-01-02'))),
    'null': ids(IsNull('city')),
    'x_files': files(EqualTo('city', 'x')),
    'all': len(t.scan().to_arrow()),
    'summaries': summaries,
    'entries': sorted([int(e.status), str(e.data_file.partition[0]), str(e.data_file.partition[1])] for e in entries),
}, default=str))
"#;

fn read_partitions(catalog: &TestCatalog) -> Value {
    let out = catalog.run_python(PARTITIONS, &[&format!("{NS}.{TABLE}")]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn ids_where(range: std::ops::Range<i64>, keep: impl Fn(i64) -> bool) -> Value {
    Value::Array(range.filter(|i| keep(*i)).map(Value::from).collect())
}

/// `sink.partitionBy.columns` makes a partitioned Iceberg table: an identity spec on the
/// columns, each file's partition tuple (from its directory: unescaped, null for the null
/// partition, typed as the column) in the manifests and their summaries in the manifest list,
/// read back by pyiceberg with partition filters; an overwrite backfill's DELETED entries
/// carry the tuples of the files they remove; another partitioning is refused.
#[tokio::test]
async fn partition_by_columns_make_a_partitioned_iceberg_table() {
    let store = Store::local();
    let catalog = TestCatalog::new();
    let mut c = config(&store, &catalog);
    c.partition_by.columns = vec!["city".into(), "day".into()];
    let mut sink = open(c.clone(), &ctx()).await;
    commit_cities(&mut sink, 0, 30).await;
    commit_cities(&mut sink, 30, 60).await;
    let got = read_partitions(&catalog);
    assert_eq!(
        got["spec"],
        serde_json::json!([[1000, "city", 2, "identity"], [1001, "day", 3, "identity"]])
    );
    assert_eq!(got["spec_id"], 0);
    assert_eq!(got["last_partition_id"], 1001);
    assert_eq!(got["all"], 60);
    assert_eq!(got["escaped"], ids_where(0..60, |i| i % 3 == 0));
    assert_eq!(
        got["x_day2"],
        ids_where(0..60, |i| i % 3 == 2 && i % 2 == 1)
    );
    assert_eq!(got["null"], ids_where(0..60, |i| i % 3 == 1));
    // Planning prunes by the tuples: only the files of city x (two days, two commits).
    let x_files = got["x_files"].as_array().expect("files");
    assert_eq!(x_files.len(), 4, "{x_files:?}");
    assert!(
        x_files
            .iter()
            .all(|f| f.as_str().is_some_and(|f| f.starts_with("Record[x, "))),
        "{x_files:?}"
    );
    // Field summaries: city has nulls, bounds "a/b=c%" .. "x"; day 2026-01-01 .. 2026-01-02.
    let city = ["a/b=c%".as_bytes(), b"x"]
        .map(|b| b.iter().map(|c| format!("{c:02x}")).collect::<String>());
    let day = [20_454i32, 20_455].map(|d| {
        d.to_le_bytes()
            .iter()
            .map(|c| format!("{c:02x}"))
            .collect::<String>()
    });
    let want = serde_json::json!([[true, city[0], city[1]], [false, day[0], day[1]]]);
    for s in got["summaries"].as_array().expect("summaries") {
        assert_eq!(s, &want);
    }
    assert_eq!(got["summaries"].as_array().map(Vec::len), Some(2));
    drop(sink);

    // An overwrite backfill: its DELETED entries carry the removed files' tuples.
    let mut b = c.clone();
    b.backfill_behavior = arcane_sinks::BackfillBehavior::Overwrite;
    let backfill = SinkContext {
        mode: Mode::Backfill,
        backfill_id: Some("b1".into()),
        ..ctx()
    };
    let mut sink = open(b, &backfill).await;
    commit_cities(&mut sink, 1000, 1006).await;
    sink.finish().await.expect("finish");
    let got = read_partitions(&catalog);
    assert_eq!(got["all"], 6);
    assert_eq!(got["escaped"], ids_where(1000..1006, |i| i % 3 == 0));
    let entries = got["entries"].as_array().expect("entries");
    let deleted: Vec<&Value> = entries.iter().filter(|e| e[0] == 2).collect();
    assert_eq!(deleted.len(), 12, "{entries:?}");
    // Two commits, each with a file per (city, day): every tuple twice.
    let mut want = Vec::new();
    for city in ["None", "a/b=c%", "x"] {
        for day in ["20454", "20455"] {
            for _ in 0..2 {
                want.push(serde_json::json!([2, city, day]));
            }
        }
    }
    assert_eq!(deleted, want.iter().collect::<Vec<_>>());
    drop(sink);

    // Another partitioning of the same table is refused, naming the table and the field.
    let mut other = c.clone();
    other.partition_by.columns = vec!["city".into()];
    let mut sink = ParquetSink::new(other).expect("sink");
    let err = match sink.open(&ctx()).await {
        Err(e) => e,
        Ok(_) => {
            sink.write(Group::new(city_batch(2000..2003), checkpoint(2003)))
                .await
                .expect("write");
            sink.flush().await.expect_err("refused")
        }
    };
    let message = err.to_string();
    assert!(
        message.contains("sink.partitionBy") && message.contains(&format!("{NS}.{TABLE}")),
        "{message}"
    );
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal, "{message}");
}

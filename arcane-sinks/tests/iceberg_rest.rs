//! The Parquet sink with `tableFormat: iceberg` in an Iceberg REST catalog (the test catalog
//! of `arcane_test_support::iceberg_rest`, on 127.0.0.1), read back by an independent reader
//! (pyiceberg's `RestCatalog` on the same server, `ARCANE_TEST_PYTHON`): the protocol's
//! requests, commits whose answer is an error or never comes after they applied (never
//! appended twice), two writers of one stream, schema evolution, and refused credentials.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arcane_core::testing::GeneratorSource;
use arcane_core::{Group, Mode, Sink, SinkContext};
use arcane_sinks::{ParquetSink, ParquetSinkConfig, SchemaEvolution};
use arcane_test_support::iceberg_rest::{CatalogAuth, CommitFault, RestCatalogServer};
use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use common::{SinkStore, Store, checkpoint};
use serde_json::{Value, json};

const STREAM: &str = "orders";
const NS: &str = "sales";
const TABLE: &str = "orders";

fn config(store: &Store, server: &RestCatalogServer, rest: Value) -> ParquetSinkConfig {
    let mut c = store.config();
    c.table_format =
        Some(serde_json::from_value(server.table_format(NS, TABLE, rest)).expect("table format"));
    c.backfill_behavior = arcane_sinks::BackfillBehavior::Merge;
    c
}

fn ctx() -> SinkContext {
    SinkContext {
        stream_id: STREAM.into(),
        ..SinkContext::default()
    }
}

async fn open(config: ParquetSinkConfig) -> ParquetSink {
    let mut sink = ParquetSink::new(config).expect("sink");
    sink.open(&ctx()).await.expect("open");
    sink
}

async fn commit(sink: &mut ParquetSink, from: u64, to: u64) {
    sink.write(Group::new(GeneratorSource::batch(from, to), checkpoint(to)))
        .await
        .expect("write");
    sink.flush().await.expect("flush").expect("a commit");
}

/// The commits (`POST …/tables/orders`) the server answered.
fn commits(server: &RestCatalogServer) -> Vec<Value> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/tables/orders"))
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn commits_become_snapshots_through_the_rest_catalog() {
    let store = Store::local();
    let server = RestCatalogServer::start(CatalogAuth::None, "wh-lake");
    let config = config(&store, &server, json!({"warehouse": "lake"}));
    let mut sink = open(config.clone()).await;
    commit(&mut sink, 0, 1000).await;
    commit(&mut sink, 1000, 3000).await;
    let read = server
        .read(NS, TABLE, None)
        .expect("pyiceberg reads the table");
    assert_eq!(read.ids(), (0..3000).collect::<Vec<i64>>());
    assert_eq!(read.columns, ["id", "key", "value", "event_time"]);
    assert_eq!(read.sequences(STREAM), [1, 2]);
    assert_eq!(read.snapshots[1]["summary"]["total-records"], "3000");
    assert!(read.properties.contains_key("arcane-watermark"));

    // The protocol: the configuration with the warehouse, the prefix it gave, the namespace
    // and table created, and commits with requirements.
    let requests = server.requests();
    let config_request = &requests[0];
    assert_eq!(
        (config_request.path.as_str(), config_request.query.as_str()),
        ("/v1/config", "warehouse=lake")
    );
    assert!(requests.iter().any(|r| r.method == "POST"
        && r.path == "/v1/wh-lake/namespaces"
        && r.body["namespace"] == json!(["sales"])));
    assert!(requests.iter().any(|r| r.method == "POST"
        && r.path == "/v1/wh-lake/namespaces/sales/tables"
        && r.status == 200));
    let commits = commits(&server);
    assert_eq!(commits.len(), 2);
    let first = &read.snapshots[0]["id"];
    for (c, parent) in commits.iter().zip([Value::Null, first.clone()]) {
        let requirements = c["requirements"].as_array().expect("requirements");
        assert!(
            requirements
                .iter()
                .any(|r| r["type"] == "assert-table-uuid" && r["uuid"].is_string())
        );
        assert!(
            requirements
                .iter()
                .any(|r| r["type"] == "assert-ref-snapshot-id"
                    && r["ref"] == "main"
                    && r["snapshot-id"] == parent)
        );
        let actions: Vec<&str> = c["updates"]
            .as_array()
            .expect("updates")
            .iter()
            .filter_map(|u| u["action"].as_str())
            .collect();
        assert_eq!(
            actions,
            ["add-snapshot", "set-snapshot-ref", "set-properties"]
        );
    }

    // A restart publishes nothing twice and goes on.
    drop(sink);
    let mut sink = open(config).await;
    commit(&mut sink, 3000, 3100).await;
    let read = server.read(NS, TABLE, None).expect("read");
    assert_eq!(read.ids(), (0..3100).collect::<Vec<i64>>());
    assert_eq!(read.sequences(STREAM), [1, 2, 4]);
}

/// A commit the catalog applied but answered with 500, or whose answer never came (a hang
/// past `requestTimeout`): the sink reads the table back, finds its snapshot and does not
/// commit it again.
#[tokio::test]
async fn a_commit_applied_but_answered_with_an_error_is_not_appended_twice() {
    for fault in [
        CommitFault::ServerError,
        CommitFault::Hang(Duration::from_secs(3)),
    ] {
        let store = Store::local();
        let server = RestCatalogServer::start(CatalogAuth::None, "p");
        let mut sink = open(config(&store, &server, json!({"requestTimeout": "1s"}))).await;
        commit(&mut sink, 0, 100).await;
        server.fail_next_commit(fault.clone());
        commit(&mut sink, 100, 300).await;
        commit(&mut sink, 300, 400).await;
        let read = server.read(NS, TABLE, None).expect("read");
        assert_eq!(read.ids(), (0..400).collect::<Vec<i64>>(), "{fault:?}");
        assert_eq!(read.sequences(STREAM), [1, 2, 3], "{fault:?}");
        assert_eq!(
            commits(&server).len(),
            3,
            "{fault:?}: each commit sent once"
        );
        // The table was loaded again to learn the outcome.
        let loads = server
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/tables/orders"))
            .count();
        assert!(loads >= 2, "{fault:?}: {loads} loads");
    }
}

/// Two writers of one stream: the one started first stops at its next commit (RESTART), and
/// the table holds every row once.
#[tokio::test]
async fn a_failed_requirement_from_another_runner_stops_the_older_writer() {
    let store = Store::local();
    let server = RestCatalogServer::start(CatalogAuth::None, "p");
    let config = config(&store, &server, json!({}));
    let mut a = open(config.clone()).await;
    commit(&mut a, 0, 100).await;
    let mut b = open(config).await;
    a.write(Group::new(
        GeneratorSource::batch(100, 200),
        checkpoint(200),
    ))
    .await
    .expect("write");
    let err = a.flush().await.expect_err("the first writer fails");
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Restart, "{err}");
    commit(&mut b, 100, 200).await;
    let read = server.read(NS, TABLE, None).expect("read");
    assert_eq!(read.ids(), (0..200).collect::<Vec<i64>>());
}

/// Another engine (pyiceberg) appends between two of the stream's commits: the stream's next
/// commit fails its `assert-ref-snapshot-id` (409), the sink reads the table again and
/// commits on top of the other engine's snapshot.
#[tokio::test]
async fn another_engines_commit_in_between_is_a_failed_requirement_then_retried() {
    let store = Store::local();
    let server = RestCatalogServer::start(CatalogAuth::None, "p");
    let mut sink = open(config(&store, &server, json!({}))).await;
    commit(&mut sink, 0, 100).await;
    server.run_python(
        "import pyarrow as pa\nt = catalog.load_table('sales.orders')\nrows = t.scan(limit=1).to_arrow().slice(0, 1)\nrows = rows.set_column(0, rows.schema.field('id'), pa.array([1000000], pa.int64()))\nt.append(rows)",
    );
    commit(&mut sink, 100, 200).await;
    let read = server.read(NS, TABLE, None).expect("read");
    let mut want: Vec<i64> = (0..200).collect();
    want.push(1_000_000);
    assert_eq!(read.ids(), want);
    assert_eq!(read.snapshots.len(), 3);
    assert_eq!(read.sequences(STREAM), [1, 2]);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.path.ends_with("/tables/orders") && r.status == 409),
        "the stream's stale commit was refused"
    );
}

/// An overwrite backfill through the REST catalog: one `overwrite` snapshot at its
/// completion, after which pyiceberg sees exactly the backfill's rows.
#[tokio::test]
async fn an_overwrite_backfill_is_one_overwrite_commit() {
    let store = Store::local();
    let server = RestCatalogServer::start(CatalogAuth::None, "p");
    let mut sink = open(config(&store, &server, json!({}))).await;
    commit(&mut sink, 0, 100).await;
    drop(sink);
    let mut c = config(&store, &server, json!({}));
    c.backfill_behavior = arcane_sinks::BackfillBehavior::Overwrite;
    let backfill = SinkContext {
        mode: Mode::Backfill,
        backfill_id: Some("b1".into()),
        ..ctx()
    };
    let mut sink = ParquetSink::new(c).expect("sink");
    sink.open(&backfill).await.expect("open");
    commit(&mut sink, 500, 600).await;
    let read = server.read(NS, TABLE, None).expect("read");
    assert_eq!(read.ids(), (0..100).collect::<Vec<i64>>());
    sink.finish().await.expect("finish");
    let read = server.read(NS, TABLE, None).expect("read");
    assert_eq!(read.ids(), (500..600).collect::<Vec<i64>>());
    let last = &read.snapshots.last().expect("a snapshot")["summary"];
    assert_eq!(last["operation"], "overwrite", "{last}");
    assert_eq!(last["deleted-records"], "100", "{last}");
}

/// A widened schema is sent as `add-schema` + `set-current-schema`.
#[tokio::test]
async fn an_added_nullable_column_is_sent_as_a_new_schema() {
    let store = Store::local();
    let server = RestCatalogServer::start(CatalogAuth::None, "p");
    let mut config = config(&store, &server, json!({}));
    config.schema_evolution = SchemaEvolution::AddNullableColumns;
    let mut sink = open(config).await;
    let batch = |ids: std::ops::Range<i64>, note: bool| {
        let mut fields = vec![Field::new("id", DataType::Int64, false)];
        let mut cols: Vec<arrow_array::ArrayRef> =
            vec![Arc::new(Int64Array::from_iter_values(ids.clone()))];
        if note {
            fields.push(Field::new("note", DataType::Utf8, true));
            cols.push(Arc::new(StringArray::from_iter_values(
                ids.map(|i| format!("n-{i}")),
            )));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("batch")
    };
    sink.write(Group::new(batch(0..10, false), checkpoint(10)))
        .await
        .expect("write");
    sink.flush().await.expect("flush");
    sink.write(Group::new(batch(10..20, true), checkpoint(20)))
        .await
        .expect("write");
    sink.flush().await.expect("flush");
    let read = server.read(NS, TABLE, None).expect("read");
    assert_eq!(read.columns, ["id", "note"]);
    assert_eq!(read.field_ids, [1, 2]);
    assert_eq!(read.schemas, 2);
    assert_eq!(read.ids(), (0..20).collect::<Vec<i64>>());
    let last = commits(&server).pop().expect("a commit");
    let actions: Vec<&str> = last["updates"]
        .as_array()
        .expect("updates")
        .iter()
        .filter_map(|u| u["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "add-schema",
            "set-current-schema",
            "add-snapshot",
            "set-snapshot-ref",
            "set-properties"
        ]
    );
}

/// A catalog that wants credentials the spec does not give: FATAL, naming the setting.
#[tokio::test]
async fn a_catalog_refusing_the_request_is_fatal_naming_the_credential_setting() {
    let store = Store::local();
    let server = RestCatalogServer::start(CatalogAuth::Bearer("secret-token".into()), "p");
    let mut sink = ParquetSink::new(config(&store, &server, json!({}))).expect("sink");
    let err = sink.open(&ctx()).await.expect_err("refused");
    let message = err.to_string();
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal, "{message}");
    assert!(
        message.contains("sink.tableFormat.iceberg.catalog.rest.credentialEnv"),
        "{message}"
    );
    assert!(message.contains("401"), "{message}");
}

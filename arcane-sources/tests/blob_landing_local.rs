//! The blob-landing source on the local file system: formats, compression, schemas, dead
//! letters, exact resume and streaming.

mod support;

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use arcane_core::testing::{MemorySink, MemoryStoreHandle, conformance};
use arcane_core::{
    Checkpoint, Completion, GroupLimits, Source, StreamContext, StreamGraph, assert_batches_eq,
};
use arcane_sources::blob_landing::{
    BlobLandingPosition, BlobLandingSource, BlobLandingSourceConfig, FieldConfig, FileFormat,
};
use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use support::*;

fn config(dir: &std::path::Path) -> BlobLandingSourceConfig {
    BlobLandingSourceConfig::new(file_url(dir))
}

fn id_schema() -> Vec<FieldConfig> {
    vec![
        FieldConfig::new("id", "int64").required(),
        FieldConfig::new("name", "utf8"),
        FieldConfig::new("amount", "float64"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_resumes_exactly_on_local_ndjson_with_bad_lines() {
    // On the reading thread, and on several decode threads (results taken back in order).
    for threads in [1, 3] {
        conformance_on_ndjson_with_bad_lines(threads).await;
    }
}

async fn conformance_on_ndjson_with_bad_lines(threads: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ndjson(0..120);
    // Bad lines inside the batch the suite cuts in half.
    a.insert_str(0, "{broken\n\n");
    std::fs::write(dir.path().join("a.ndjson"), a).unwrap();
    std::fs::write(
        dir.path().join("b.ndjson.gz"),
        gzip(ndjson(120..300).as_bytes()),
    )
    .unwrap();
    let mut cfg = config(dir.path());
    cfg.batch_rows = 50;
    cfg.schema = Some(id_schema());
    cfg.decode_threads = std::num::NonZeroUsize::new(threads);
    conformance::source_resumes_exactly(|| {
        Box::new(BlobLandingSource::new(cfg.clone()).unwrap()) as Box<dyn Source>
    })
    .await;
    conformance::source_survives_stop_and_abort(|| {
        Box::new(BlobLandingSource::new(cfg.clone()).unwrap()) as Box<dyn Source>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_resumes_exactly_on_csv_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let csv: String = std::iter::once("id,name,amount\n".to_string())
        .chain((0..90).map(|i| format!("{i},\"n,{i}\",{}\n", i as f64 / 2.0)))
        .collect();
    std::fs::write(dir.path().join("a.csv.zst"), zstd(csv.as_bytes())).unwrap();
    write_parquet(&dir.path().join("b.parquet"), 90..200);
    let mut cfg = config(dir.path());
    cfg.batch_rows = 40;
    cfg.schema = Some(id_schema());
    conformance::source_resumes_exactly(|| {
        Box::new(BlobLandingSource::new(cfg.clone()).unwrap()) as Box<dyn Source>
    })
    .await;
}

fn id_batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let v: Vec<i64> = ids.collect();
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(v.clone())) as _),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                v.iter().map(|i| format!("n-{i}")),
            )) as _,
        ),
        (
            "amount",
            Arc::new(Float64Array::from_iter_values(
                v.iter().map(|&i| i as f64 * 1.5),
            )) as _,
        ),
    ])
    .unwrap()
}

fn write_parquet(path: &std::path::Path, ids: std::ops::Range<i64>) {
    let batch = id_batch(ids);
    let file = std::fs::File::create(path).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(30))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_orders_land_with_every_row_and_value() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/orders");
    let data = data.canonicalize().unwrap();
    let mut input_ids = Vec::new();
    let mut input_amount = 0.0;
    let mut files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            input_ids.push(v["order_id"].as_str().unwrap().to_string());
            input_amount += v["amount"].as_f64().unwrap();
        }
    }
    let store = MemoryStoreHandle::default();
    let letters = Letters::default();
    let report = land(
        BlobLandingSource::new(config(&data)).unwrap(),
        store.clone(),
        letters.clone(),
    )
    .await;
    assert_finished(&report);
    let batches = store.batches();
    assert_eq!(store.rows(), 24_000);
    assert_eq!(
        strings(&batches, "order_id"),
        input_ids,
        "every order, in file order"
    );
    let amount: f64 = batches
        .iter()
        .map(|b| {
            arrow_arith_sum(
                b.column_by_name("amount")
                    .unwrap()
                    .as_primitive::<Float64Type>(),
            )
        })
        .sum();
    assert!(
        (amount - input_amount).abs() < 1e-6,
        "{amount} != {input_amount}"
    );
    assert!(letters.all().is_empty(), "{:?}", letters.all());
    // Inferred from the first file: JSON numbers and strings.
    let schema = batches[0].schema();
    assert_eq!(
        schema.field_with_name("customer_id").unwrap().data_type(),
        &arrow_schema::DataType::Int64
    );
    assert_eq!(
        schema.field_with_name("event_time").unwrap().data_type(),
        &arrow_schema::DataType::Utf8
    );
}

fn arrow_arith_sum(a: &arrow_array::PrimitiveArray<Float64Type>) -> f64 {
    a.iter().flatten().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_schema_decodes_timestamps_and_missing_fields() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.jsonl"),
        "{\"id\":1,\"at\":\"2026-11-20T10:00:00.250Z\",\"day\":\"2026-11-20\",\"ok\":true,\"extra\":5}\n{\"id\":2,\"at\":\"2026-11-21T00:00:00Z\"}\n",
    )
    .unwrap();
    let mut cfg = config(dir.path());
    cfg.schema = Some(vec![
        FieldConfig::new("id", "int64").required(),
        FieldConfig::new("at", "timestamp[ms, UTC]"),
        FieldConfig::new("day", "date32"),
        FieldConfig::new("ok", "bool"),
    ]);
    let mut source = BlobLandingSource::new(cfg).unwrap();
    assert_eq!(source.schema().unwrap().fields().len(), 4);
    let (batches, letters) = read_backfill(&mut source, None).await;
    assert!(letters.is_empty(), "{letters:?}");
    let rows = rows_of(&batches);
    let at = rows[0].column_by_name("at").unwrap();
    assert_eq!(
        at.data_type(),
        &arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, Some("UTC".into()))
    );
    assert_eq!(
        at.as_primitive::<arrow_array::types::TimestampMillisecondType>()
            .values()
            .to_vec(),
        vec![1_795_168_800_250, 1_795_219_200_000]
    );
    // (Arrow formats named time zones only with chrono-tz, so print the other columns.)
    let printable = rows[0].project(&[0, 2, 3]).unwrap();
    assert_batches_eq!(
        [
            "+----+------------+------+",
            "| id | day        | ok   |",
            "+----+------------+------+",
            "| 1  | 2026-11-20 | true |",
            "| 2  |            |      |",
            "+----+------------+------+",
        ],
        &[printable]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_dead_lettered_with_line_numbers_and_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let content = [
        r#"{"id":1,"name":"a","amount":1.0}"#, // 1
        r#"{"id":2,"name":"b""#,               // 2 incomplete
        r#"{"id":3,"name":"c","amount":3.0}"#, // 3
        "",                                    // 4 blank
        r#"{"id":"x","name":"d"}"#,            // 5 wrong type
        r#"{"id":6}{"id":7}"#,                 // 6 two objects
        r#"[1,2]"#,                            // 7 not an object
        r#"{"name":"no id"}"#,                 // 8 required field missing
        r#"{"id":9,"name":"i","amount":9.0}"#, // 9
    ]
    .join("\n");
    std::fs::write(dir.path().join("a.ndjson"), content).unwrap();
    let mut cfg = config(dir.path());
    cfg.schema = Some(id_schema());
    cfg.batch_rows = 4;
    let mut source = BlobLandingSource::new(cfg).unwrap();
    let (batches, letters) = read_backfill(&mut source, None).await;
    assert_eq!(ids(&rows_of(&batches)), vec![1, 3, 9]);
    let got: Vec<(String, String)> = letters
        .iter()
        .map(|l| (l.locator.clone(), l.payload.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("line 2".to_string(), r#"{"id":2,"name":"b""#.to_string()),
            ("line 5".to_string(), r#"{"id":"x","name":"d"}"#.to_string()),
            ("line 6".to_string(), r#"{"id":6}{"id":7}"#.to_string()),
            ("line 7".to_string(), "[1,2]".to_string()),
            ("line 8".to_string(), r#"{"name":"no id"}"#.to_string()),
        ]
    );
    for l in &letters {
        assert!(l.origin.ends_with("a.ndjson"), "{l:?}");
        assert!(!l.reason.is_empty(), "{l:?}");
    }
    assert!(letters[1].reason.contains("id"), "{:?}", letters[1]);
    assert!(
        letters[2].reason.contains("2 JSON values") || letters[2].reason.contains("more than one"),
        "{:?}",
        letters[2]
    );
    // Every record, good or bad, is consumed; the file is done.
    let last: BlobLandingPosition = batches.last().unwrap().position.decode("t").unwrap();
    assert_eq!((last.records, last.lines, last.done), (8, 9, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_with_header_quotes_and_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let content = "id,name,amount\r\n1,\"multi\nline, quoted\",1.5\r\n2,b\r\nx,c,3\r\n4,\"say \"\"hi\"\"\",4.5\r\n";
    std::fs::write(dir.path().join("a.csv.gz"), gzip(content.as_bytes())).unwrap();
    let mut cfg = config(dir.path());
    cfg.schema = Some(id_schema());
    let mut source = BlobLandingSource::new(cfg).unwrap();
    let (batches, letters) = read_backfill(&mut source, None).await;
    assert_batches_eq!(
        [
            "+----+--------------+--------+",
            "| id | name         | amount |",
            "+----+--------------+--------+",
            "| 1  | multi        | 1.5    |",
            "|    | line, quoted |        |",
            "| 4  | say \"hi\"     | 4.5    |",
            "+----+--------------+--------+",
        ],
        &rows_of(&batches)
    );
    let got: Vec<&str> = letters.iter().map(|l| l.locator.as_str()).collect();
    assert_eq!(got, vec!["line 4", "line 5"], "{letters:?}");
    assert!(
        letters[0].reason.contains("number of fields"),
        "{letters:?}"
    );
    assert!(letters[1].reason.contains("'x'"), "{letters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inferred_csv_schema_uses_the_header() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.csv"),
        "city,pop,ok\nOslo,700000,true\nBergen,290000,false\n",
    )
    .unwrap();
    let mut source = BlobLandingSource::new(config(dir.path())).unwrap();
    let (batches, _) = read_backfill(&mut source, None).await;
    assert_batches_eq!(
        [
            "+--------+--------+-------+",
            "| city   | pop    | ok    |",
            "+--------+--------+-------+",
            "| Oslo   | 700000 | true  |",
            "| Bergen | 290000 | false |",
            "+--------+--------+-------+",
        ],
        &rows_of(&batches)
    );
    assert_eq!(
        rows_of(&batches)[0].schema().field(1).data_type(),
        &arrow_schema::DataType::Int64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_and_compression_lands_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = |ids: std::ops::Range<i64>| -> String {
        std::iter::once("id,name,amount\n".to_string())
            .chain(ids.map(|i| format!("{i},n-{i},{}\n", i as f64 * 1.5)))
            .collect()
    };
    std::fs::write(dir.path().join("01.ndjson"), ndjson(0..10)).unwrap();
    std::fs::write(
        dir.path().join("02.ndjson.gz"),
        gzip(ndjson(10..20).as_bytes()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("03.ndjson.zst"),
        zstd(ndjson(20..30).as_bytes()),
    )
    .unwrap();
    std::fs::write(dir.path().join("04.csv"), csv(30..40)).unwrap();
    std::fs::write(dir.path().join("05.csv.gz"), gzip(csv(40..50).as_bytes())).unwrap();
    std::fs::write(dir.path().join("06.csv.zst"), zstd(csv(50..60).as_bytes())).unwrap();
    write_parquet(&dir.path().join("07.parquet"), 60..70);
    std::fs::write(dir.path().join("README.txt"), "not data").unwrap();
    let mut cfg = config(dir.path());
    cfg.schema = Some(id_schema());
    cfg.glob = Some("0*".into());
    let store = MemoryStoreHandle::default();
    let letters = Letters::default();
    let report = land(
        BlobLandingSource::new(cfg).unwrap(),
        store.clone(),
        letters.clone(),
    )
    .await;
    assert_finished(&report);
    let batches = store.batches();
    assert_eq!(ids(&batches), (0..70).collect::<Vec<_>>());
    assert_eq!(
        strings(&batches, "name"),
        (0..70).map(|i| format!("n-{i}")).collect::<Vec<_>>()
    );
    assert!(letters.all().is_empty(), "{:?}", letters.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_files_are_one_dead_letter_each_and_the_rest_lands() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("1.ndjson"), ndjson(0..5)).unwrap();
    std::fs::write(dir.path().join("2.ndjson.gz"), b"this is not gzip at all").unwrap();
    let mut truncated = gzip(ndjson(100..20_000).as_bytes());
    truncated.truncate(truncated.len() / 2);
    std::fs::write(dir.path().join("3.ndjson.gz"), truncated).unwrap();
    std::fs::write(
        dir.path().join("4.parquet"),
        b"PAR1 garbage without a footer",
    )
    .unwrap();
    std::fs::write(dir.path().join("5.data"), b"{}").unwrap();
    std::fs::write(dir.path().join("6.ndjson"), ndjson(5..10)).unwrap();
    let mut cfg = config(dir.path());
    cfg.schema = Some(id_schema());
    let store = MemoryStoreHandle::default();
    let letters = Letters::default();
    let report = land(
        BlobLandingSource::new(cfg).unwrap(),
        store.clone(),
        letters.clone(),
    )
    .await;
    assert_finished(&report);
    let landed = ids(&store.batches());
    let letters = letters.all();
    let by_file: Vec<(String, String)> = letters
        .iter()
        .map(|l| {
            (
                l.origin.rsplit('/').next().unwrap().to_string(),
                l.locator.clone(),
            )
        })
        .collect();
    assert_eq!(by_file.len(), 4, "{letters:?}");
    assert_eq!(by_file[0], ("2.ndjson.gz".into(), "file".into()));
    assert_eq!(by_file[1].0, "3.ndjson.gz");
    assert!(by_file[1].1.starts_with("from line "), "{letters:?}");
    assert_eq!(by_file[2], ("4.parquet".into(), "file".into()));
    assert_eq!(by_file[3], ("5.data".into(), "file".into()));
    assert!(letters[3].reason.contains("format"), "{letters:?}");
    // The truncated file's complete lines before the break landed, in order, then file 6.
    let from_truncated: Vec<i64> = landed.iter().copied().filter(|&i| i >= 100).collect();
    assert!(!from_truncated.is_empty());
    assert_eq!(
        from_truncated,
        (100..100 + from_truncated.len() as i64).collect::<Vec<_>>()
    );
    let expected_line = from_truncated.len() + 1;
    assert_eq!(by_file[1].1, format!("from line {expected_line}"));
    assert_eq!(&landed[..5], &[0, 1, 2, 3, 4]);
    assert_eq!(&landed[landed.len() - 5..], &[5, 6, 7, 8, 9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_failed_run_lands_every_row_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ndjson(0..2_500);
    a.push_str("not json\n");
    a.push_str(&ndjson(2_500..3_000));
    std::fs::write(dir.path().join("a.ndjson.zst"), zstd(a.as_bytes())).unwrap();
    std::fs::write(dir.path().join("b.ndjson"), ndjson(3_000..7_000)).unwrap();
    let mut cfg = config(dir.path());
    cfg.schema = Some(id_schema());
    cfg.batch_rows = 700;
    let store = MemoryStoreHandle::default();
    let ctx = StreamContext::new("test", "blob_landing", serde_json::json!({})).with_backfill("b1");
    let limits = GroupLimits::new(NonZeroUsize::new(1_000).unwrap(), Duration::from_secs(5));

    // First run: the sink fails after 4 groups, i.e. in the middle of a file and of a batch.
    let report = StreamGraph::from_source(BlobLandingSource::new(cfg.clone()).unwrap())
        .grouped_within(limits)
        .to_sink(MemorySink::with_store(store.clone()).fail_after_writes(4))
        .run(&ctx)
        .join()
        .await;
    assert!(report.outcome.is_err());
    let checkpoint = store.checkpoint().expect("something was committed");
    assert!(
        checkpoint.rows > 0 || store.rows() % 700 != 0,
        "{checkpoint:?}"
    );
    assert_eq!(store.rows(), 4_000);

    // Second run resumes from the sink's checkpoint.
    let report = StreamGraph::from_source(BlobLandingSource::new(cfg).unwrap())
        .grouped_within(limits)
        .to_sink(MemorySink::with_store(store.clone()))
        .run(&ctx)
        .join()
        .await;
    assert_finished(&report);
    assert_eq!(report.summary.resumed_from, Some(checkpoint));
    assert_eq!(ids(&store.batches()), (0..7_000).collect::<Vec<_>>());
    // Committed by the sink with the rows: once, whichever run read it.
    let letters = store.dead_letters();
    assert_eq!(
        letters.len(),
        1,
        "the bad line is dead-lettered once: {letters:?}"
    );
    assert_eq!(letters[0].locator, "line 2501");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_inside_a_batch_skips_its_committed_rows_and_keeps_its_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ndjson(0..10);
    a.insert_str(0, "bad line\n");
    std::fs::write(dir.path().join("a.ndjson.gz"), gzip(a.as_bytes())).unwrap();
    let mut cfg = config(dir.path());
    cfg.schema = Some(id_schema());
    // Checkpoint: the file's start, plus 4 rows of the batch after it.
    let start = arcane_core::Position::encode(&BlobLandingPosition::start(
        dir.path()
            .join("a.ndjson.gz")
            .to_str()
            .unwrap()
            .trim_start_matches('/'),
    ))
    .unwrap();
    let mut source = BlobLandingSource::new(cfg).unwrap();
    let (batches, letters) = read_backfill(
        &mut source,
        Some(Checkpoint {
            position: Some(start),
            rows: 4,
        }),
    )
    .await;
    assert_eq!(ids(&rows_of(&batches)), (4..10).collect::<Vec<_>>());
    // The checkpoint covers 4 rows of the batch but not its end, and a batch's dead letters
    // are committed with its end: the resumed run must deliver the bad line's letter.
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].locator, "line 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_mode_picks_up_a_file_that_lands_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    std::fs::write(landing.join("2026-11-20.ndjson"), ndjson(0..100)).unwrap();
    let mut cfg = config(&landing);
    cfg.schema = Some(id_schema());
    cfg.format = FileFormat::Ndjson;
    cfg.poll_interval = Duration::from_millis(50);
    let store = MemoryStoreHandle::default();
    let ctx = StreamContext::new("test", "blob_landing", serde_json::json!({}));
    let running = StreamGraph::from_source(BlobLandingSource::new(cfg).unwrap())
        .grouped_within(GroupLimits::new(
            NonZeroUsize::new(1_000).unwrap(),
            Duration::from_millis(100),
        ))
        .to_sink(MemorySink::with_store(store.clone()))
        .run(&ctx);
    eventually("the first file", || store.rows() == 100).await;

    // Land a second file atomically (write elsewhere, rename into the prefix).
    let staged = dir.path().join("staged");
    std::fs::write(&staged, ndjson(100..150)).unwrap();
    std::fs::rename(&staged, landing.join("2026-11-21.ndjson")).unwrap();
    eventually("the file landed while running", || store.rows() == 150).await;

    running.kill_switch.shutdown();
    let report = running.join().await;
    assert_eq!(report.outcome.unwrap(), Completion::ShutDown);
    assert_eq!(ids(&store.batches()), (0..150).collect::<Vec<_>>());
    let position: BlobLandingPosition = store.checkpoint().unwrap().decode("t").unwrap().unwrap();
    assert!(
        position.file.ends_with("2026-11-21.ndjson") && position.done,
        "{position:?}"
    );
}

#[test]
fn config_errors_name_the_field() {
    let mut cfg = BlobLandingSourceConfig::new("file:///tmp/x/");
    cfg.schema = Some(vec![FieldConfig::new("a", "integer")]);
    let err = BlobLandingSource::new(cfg).unwrap_err().to_string();
    assert!(
        err.starts_with("source.schema[0].type: unknown type \"integer\""),
        "{err}"
    );
    let err = BlobLandingSource::new(BlobLandingSourceConfig::new("s4://bucket/landing/"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("source.url: unsupported scheme \"s4\""),
        "{err}"
    );
    // A local directory must exist: a typo is not an empty source.
    let err = BlobLandingSource::new(BlobLandingSourceConfig::new("file:///no/such/landing/"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("source.url: the directory /no/such/landing/ does not exist"),
        "{err}"
    );
    let err = BlobLandingSource::new(BlobLandingSourceConfig::new(" "))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("source.url:"), "{err}");
    // A plain path is a local directory, relative to the working directory.
    let dir = tempfile::tempdir().unwrap();
    let source =
        BlobLandingSource::new(BlobLandingSourceConfig::new(dir.path().to_str().unwrap())).unwrap();
    assert!(source.name().contains("file://"), "{}", source.name());
    let parsed: Result<BlobLandingSourceConfig, _> =
        serde_json::from_value(serde_json::json!({"url": "file:///x/", "pollIntervall": "1s"}));
    assert!(parsed.unwrap_err().to_string().contains("pollIntervall"));
    let parsed: BlobLandingSourceConfig = serde_json::from_value(serde_json::json!({
        "url": "s3://bucket/landing/",
        "format": "csv",
        "compression": "gzip",
        "csv": {"delimiter": ";"},
        "schema": [{"name": "id", "type": "int64", "nullable": false}],
        "pollInterval": "1m",
        "maxFilesPerPoll": 10
    }))
    .unwrap();
    assert_eq!(parsed.poll_interval, Duration::from_secs(60));
    assert_eq!(parsed.csv.delimiter, ';');
    assert!(parsed.csv.header);
    assert_eq!(
        parsed.batch_rows,
        arcane_sources::blob_landing::DEFAULT_BATCH_ROWS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_read_in_path_order_and_new_ones_after_the_position_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("b")).unwrap();
    std::fs::write(dir.path().join("b/2.ndjson"), ndjson(2..3)).unwrap();
    std::fs::write(dir.path().join("a.ndjson"), ndjson(1..2)).unwrap();
    std::fs::write(dir.path().join("c.ndjson"), ndjson(3..4)).unwrap();
    let mut cfg = config(dir.path());
    cfg.schema = Some(id_schema());
    let mut source = BlobLandingSource::new(cfg.clone()).unwrap();
    let (batches, _) = read_backfill(&mut source, None).await;
    assert_eq!(ids(&rows_of(&batches)), vec![1, 2, 3]);
    let files: BTreeSet<String> = batches
        .iter()
        .map(|b| b.position.decode::<BlobLandingPosition>("t").unwrap().file)
        .collect();
    assert_eq!(files.len(), 3);
    // Resuming after b/2 reads only c, even though "a0" lands later.
    let after_b = batches
        .iter()
        .find(|b| {
            let p: BlobLandingPosition = b.position.decode("t").unwrap();
            p.file.ends_with("b/2.ndjson") && p.done
        })
        .unwrap()
        .position
        .clone();
    std::fs::write(dir.path().join("a0.ndjson"), ndjson(0..1)).unwrap();
    let mut source = BlobLandingSource::new(cfg).unwrap();
    let (batches, _) = read_backfill(&mut source, Some(Checkpoint::at(after_b))).await;
    assert_eq!(ids(&rows_of(&batches)), vec![3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_then_restart_lands_every_row_exactly_once() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data/orders")
        .canonicalize()
        .unwrap();
    let mut cfg = config(&data);
    cfg.batch_rows = 300;
    let store = MemoryStoreHandle::default();
    let limits = GroupLimits::new(NonZeroUsize::new(1_000).unwrap(), Duration::from_secs(5));
    let graph = |cfg: BlobLandingSourceConfig| {
        StreamGraph::from_source(BlobLandingSource::new(cfg).unwrap())
            .grouped_within(limits)
            .to_sink(MemorySink::with_store(store.clone()))
    };

    // Streaming run, stopped (as on SIGTERM) as soon as something was committed.
    let ctx = StreamContext::new("test", "blob_landing", serde_json::json!({}));
    let running = graph(cfg.clone()).run(&ctx);
    eventually("a first commit", || store.commits() > 0).await;
    running.kill_switch.shutdown();
    let report = running.join().await;
    assert_eq!(report.outcome.unwrap(), Completion::ShutDown);
    let first_run = store.rows();
    let checkpoint = store.checkpoint().unwrap();
    let position: BlobLandingPosition = checkpoint.decode("t").unwrap().unwrap();
    // The position accounts for exactly the committed rows (6,000 per bundled file).
    let day: u64 = position.file.rsplit('-').next().unwrap()[..2]
        .parse()
        .unwrap();
    let before = (day - 20) * 6_000;
    let in_file = if position.done {
        6_000
    } else {
        position.records
    };
    assert_eq!(
        first_run as u64,
        before + in_file + checkpoint.rows,
        "{position:?} + {} rows",
        checkpoint.rows
    );

    // The restart resumes from the committed checkpoint and finishes the backfill.
    let report = graph(cfg)
        .run(&ctx.clone().with_backfill("b1"))
        .join()
        .await;
    assert_finished(&report);
    assert_eq!(report.summary.resumed_from, Some(checkpoint));
    let order_ids = strings(&store.batches(), "order_id");
    let expected: Vec<String> = (1..=24_000).map(|i| format!("ord-{i:08}")).collect();
    assert_eq!(order_ids.len(), 24_000, "no row lost or repeated");
    assert_eq!(order_ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_over_the_whole_first_file_widens_conflicting_types() {
    let dir = tempfile::tempdir().unwrap();
    // `n` is an integer for 5000 lines, then a float; `code` is a number, then text; `flag`
    // a boolean, then a number; `tags` is missing at first. A line whose `nested` is a
    // scalar where it was an object does not take part, and is dead-lettered.
    let mut lines = String::new();
    for i in 0..6_000 {
        let n = if i < 5_000 {
            format!("{i}")
        } else {
            format!("{i}.5")
        };
        let code = if i < 5_500 {
            format!("{i}")
        } else {
            format!("\"c{i}\"")
        };
        let flag = if i < 5_900 { "true" } else { "7" };
        let tags = if i < 5_999 { "" } else { ", \"tags\": [\"x\"]" };
        lines.push_str(&format!(
            "{{\"n\": {n}, \"code\": {code}, \"flag\": {flag}, \"nested\": {{\"a\": 1}}{tags}}}\n"
        ));
    }
    lines.push_str("{\"n\": 1, \"nested\": 5}\n");
    std::fs::write(dir.path().join("a.ndjson"), lines).unwrap();
    let mut source = BlobLandingSource::new(config(dir.path())).unwrap();
    let (batches, letters) = read_backfill(&mut source, None).await;
    let rows =
        arrow_select::concat::concat_batches(&rows_of(&batches)[0].schema(), &rows_of(&batches))
            .unwrap();
    use arrow_schema::DataType as D;
    let schema = rows.schema();
    let type_of = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
    assert_eq!(schema.fields().len(), 5, "{schema:?}");
    assert_eq!(type_of("n"), D::Float64);
    assert_eq!(type_of("code"), D::Utf8);
    assert_eq!(type_of("flag"), D::Utf8);
    assert!(matches!(type_of("nested"), D::Struct(_)), "{schema:?}");
    assert!(matches!(type_of("tags"), D::List(_)), "{schema:?}");
    assert_eq!(rows.num_rows(), 6_000);
    let column = |name: &str| rows.column(schema.index_of(name).unwrap()).clone();
    let n = column("n");
    let n = n.as_primitive::<Float64Type>();
    assert_eq!(n.value(4_999), 4_999.0);
    assert_eq!(n.value(5_000), 5_000.5);
    let code = column("code");
    let code = code.as_string::<i32>();
    assert_eq!(code.value(0), "0");
    assert_eq!(code.value(5_500), "c5500");
    let flag = column("flag");
    let flag = flag.as_string::<i32>();
    assert_eq!((flag.value(0), flag.value(5_999)), ("true", "7"));
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].locator, "line 6001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inferred_csv_schema_widens_over_the_whole_file_unless_limited() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,amount\n");
    for i in 0..3_000 {
        if i < 2_000 {
            csv.push_str(&format!("{i},{i}\n"));
        } else {
            csv.push_str(&format!("{i},{i}.25\n"));
        }
    }
    std::fs::write(dir.path().join("a.csv"), csv).unwrap();
    let mut source = BlobLandingSource::new(config(dir.path())).unwrap();
    let (batches, letters) = read_backfill(&mut source, None).await;
    let rows = rows_of(&batches);
    assert_eq!(
        rows[0].schema().field(1).data_type(),
        &arrow_schema::DataType::Float64
    );
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 3_000);
    assert!(letters.is_empty(), "{letters:?}");

    // Limited to the first 1000 records, the column is an integer and the floats do not fit.
    let mut cfg = config(dir.path());
    cfg.infer_schema_records = Some(1_000);
    let mut source = BlobLandingSource::new(cfg).unwrap();
    let (batches, letters) = read_backfill(&mut source, None).await;
    assert_eq!(
        rows_of(&batches)[0].schema().field(1).data_type(),
        &arrow_schema::DataType::Int64
    );
    assert_eq!(letters.len(), 1_000);
}

/// An in-memory store whose reads and listings fail with a reset connection (transient) when
/// `fails` says so for the call's number (1 for the first read or listing).
#[derive(Debug)]
struct FlakyStore {
    inner: object_store::memory::InMemory,
    calls: std::sync::atomic::AtomicUsize,
    fails: fn(usize) -> bool,
}

impl FlakyStore {
    fn new(fails: fn(usize) -> bool) -> Self {
        Self {
            inner: object_store::memory::InMemory::new(),
            calls: std::sync::atomic::AtomicUsize::new(0),
            fails,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A reset connection for this call, if it is one that fails.
    fn call(&self) -> object_store::Result<()> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if (self.fails)(n) {
            return Err(object_store::Error::Generic {
                store: "Flaky",
                source: format!("call {n}: connection reset by peer").into(),
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flaky({})", self.inner)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for FlakyStore {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.call()?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        use futures::StreamExt;
        match self.call() {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.call()?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Files under `landing/` of `store`: NDJSON, gzip NDJSON and Parquet, ids 0..900.
async fn put_flaky_files(store: &FlakyStore) {
    use object_store::ObjectStoreExt;
    let parquet = {
        let batch = id_batch(600..900);
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.into_inner().unwrap()
    };
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("landing/a.ndjson", ndjson(0..300).into_bytes()),
        ("landing/b.ndjson.gz", gzip(ndjson(300..600).as_bytes())),
        ("landing/c.parquet", parquet),
    ];
    for (path, bytes) in files {
        store
            .put(&object_store::path::Path::from(path), bytes.into())
            .await
            .unwrap();
    }
}

fn flaky_config(max_attempts: u32) -> BlobLandingSourceConfig {
    let mut cfg = BlobLandingSourceConfig::new("memory:///landing/");
    cfg.schema = Some(id_schema());
    cfg.batch_rows = 100;
    cfg.retry.max_attempts = max_attempts;
    cfg.retry.initial_delay = Duration::from_millis(1);
    cfg.retry.max_delay = Duration::from_millis(5);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_that_fail_transiently_are_retried_and_every_row_lands() {
    // Every other listing and read fails: each is retried and the files are read once.
    let store = Arc::new(FlakyStore::new(|n| n % 2 == 1));
    put_flaky_files(&store).await;
    let mut source = BlobLandingSource::with_store(
        store.clone(),
        object_store::path::Path::from("landing"),
        flaky_config(2),
    )
    .unwrap();
    let (batches, letters) = read_backfill(&mut source, None).await;
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(ids(&rows_of(&batches)), (0..900).collect::<Vec<_>>());
    // The listing, a ranged read per text file and the Parquet footer and row groups: each
    // call made twice.
    assert!(
        store.calls() >= 8 && store.calls().is_multiple_of(2),
        "{}",
        store.calls()
    );
}

/// A CSV file inferred from an object store: without quotes it is fetched once for inference
/// (read in blocks by two threads) and once to be read; with a quote it is fetched once more
/// for the one-pass inference; the types and rows are right either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_file_with_quotes_is_fetched_again_for_inference_and_lands_whole() {
    use object_store::ObjectStoreExt;
    let rows = |quoted: bool| -> String {
        std::iter::once("id,name,amount\n".to_string())
            .chain((0..500).map(|i| {
                let name = if quoted && i == 499 {
                    "\"a, b\"".to_string()
                } else {
                    format!("n{i}")
                };
                format!(
                    "{i},{name},{}\n",
                    if i < 400 {
                        format!("{i}")
                    } else {
                        format!("{i}.5")
                    }
                )
            }))
            .collect()
    };
    let mut calls = Vec::new();
    for quoted in [false, true] {
        let store = Arc::new(FlakyStore::new(|_| false));
        store
            .put(
                &object_store::path::Path::from("landing/a.csv"),
                rows(quoted).into(),
            )
            .await
            .unwrap();
        let mut cfg = BlobLandingSourceConfig::new("memory:///landing/");
        cfg.format = FileFormat::Csv;
        cfg.decode_threads = NonZeroUsize::new(2);
        let mut source = BlobLandingSource::with_store(
            store.clone(),
            object_store::path::Path::from("landing"),
            cfg,
        )
        .unwrap();
        let (batches, letters) = read_backfill(&mut source, None).await;
        assert!(letters.is_empty(), "quoted {quoted}: {letters:?}");
        let rows = rows_of(&batches);
        let types: Vec<_> = rows[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        use arrow_schema::DataType::{Float64, Int64, Utf8};
        assert_eq!(types, [Int64, Utf8, Float64], "quoted {quoted}");
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 500);
        let last = rows.last().unwrap();
        let names = last.column(1).as_string::<i32>();
        let want = if quoted { "a, b" } else { "n499" };
        assert_eq!(names.value(last.num_rows() - 1), want);
        calls.push(store.calls());
    }
    // The listing, the inference's read and the rows' read; with the quote, one read more.
    assert_eq!(
        calls[1],
        calls[0] + 1,
        "store calls without and with a quote: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_keeps_failing_is_a_transient_error_after_the_attempts() {
    let store = Arc::new(FlakyStore::new(|_| true));
    put_flaky_files(&store).await;
    let mut source = BlobLandingSource::with_store(
        store.clone(),
        object_store::path::Path::from("landing"),
        flaky_config(3),
    )
    .unwrap();
    let mut stream = source
        .open(arcane_core::SourceStart {
            mode: arcane_core::Mode::Backfill,
            ..arcane_core::SourceStart::default()
        })
        .await
        .unwrap();
    let err = futures::StreamExt::next(&mut stream)
        .await
        .expect("an error")
        .expect_err("the listing fails");
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Restart, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("cannot list") && text.contains("after 3 attempts"),
        "{text}"
    );
    assert!(text.contains("call 3: connection reset by peer"), "{text}");
    assert_eq!(store.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_reads_large_utf8_and_refuses_columns_it_cannot_hold_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.csv"),
        "id,name,blob\n1,x,aa\n2,,bb\n3,\"quoted, name\",cc\n",
    )
    .unwrap();
    // `large_utf8` is read as text, also by `arrow_csv` (a quoted field), which reads `utf8`
    // only: every record was refused.
    let mut cfg = config(dir.path());
    cfg.schema = Some(vec![
        FieldConfig::new("id", "int64").required(),
        FieldConfig::new("name", "large_utf8"),
        FieldConfig::new("blob", "utf8"),
    ]);
    let mut source = BlobLandingSource::new(cfg).unwrap();
    let (batches, letters) = read_backfill(&mut source, None).await;
    assert!(letters.is_empty(), "{letters:?}");
    let rows = rows_of(&batches);
    assert_eq!(ids(&rows), vec![1, 2, 3]);
    let names: Vec<Option<&str>> = rows
        .iter()
        .flat_map(|b| b.column_by_name("name").unwrap().as_string::<i64>().iter())
        .collect();
    assert_eq!(names, vec![Some("x"), None, Some("quoted, name")]);

    // A list column: one clear, permanent error naming it, not a dead letter per record.
    let mut cfg = config(dir.path());
    cfg.schema = Some(vec![
        FieldConfig::new("id", "int64").required(),
        FieldConfig::new("name", "utf8"),
        FieldConfig::new("blob", "List(Int64)"),
    ]);
    let mut source = BlobLandingSource::new(cfg).unwrap();
    let mut stream = source
        .open(arcane_core::SourceStart {
            mode: arcane_core::Mode::Backfill,
            ..arcane_core::SourceStart::default()
        })
        .await
        .expect("source opens");
    let mut error = None;
    while let Some(item) = futures::StreamExt::next(&mut stream).await {
        match item {
            Ok(b) => assert!(
                b.batch.num_rows() == 0 && b.dead_letters.is_empty(),
                "nothing is read: {b:?}"
            ),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let error = error.expect("an error");
    let message = format!("{error:#}");
    assert!(
        message.contains("column \"blob\"")
            && message.contains("List")
            && message.contains("a.csv"),
        "{message}"
    );
    assert_eq!(error.exit_code(), arcane_core::ExitCode::Fatal, "{message}");
}

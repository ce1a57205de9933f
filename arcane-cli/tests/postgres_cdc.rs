//! The `arcane` binary end to end with the `postgres-cdc` kind against the machine's PostgreSQL
//! (127.0.0.1:5432, trust auth, database `test`, `wal_level = logical`; `scripts/test.sh`
//! enables it; `ARCANE_TEST_PG` overrides the connection string): a snapshot with concurrent
//! writes, SIGKILLs at random moments while inserts, updates and deletes continue, and a
//! graceful SIGTERM. The committed Parquet is read back and its change log replayed (snapshot
//! rows, then changes in LSN order) must equal `SELECT * FROM` the table, with no change twice.
//! Every test uses its own table, slot and publication and drops them, even when it fails.
#![cfg(feature = "postgres-cdc")]
#![allow(clippy::print_stderr)] // the kill schedule (seed, kills), to reproduce a failure

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arcane_test_support::Store;
use nix::sys::signal::Signal;
use serde_json::{Map, Value, json};
use support::*;
use tokio_postgres::{Client, NoTls};

type Row = Map<String, Value>;

fn conn() -> String {
    std::env::var("ARCANE_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client() -> Client {
    let (client, connection) = tokio_postgres::connect(&conn(), NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A unique table/slot/publication name (all the same), dropped on drop.
struct Names {
    base: String,
}

impl Names {
    fn new(test: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000;
        Self {
            base: format!(
                "e2e_{test}_{}_{nanos}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let b = &self.base;
        let sql = format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{b}'; \
             DROP PUBLICATION IF EXISTS {b}; DROP TABLE IF EXISTS {b}, {b}_busy;"
        );
        // Retry: a killed process's backend may hold the slot for a moment.
        for _ in 0..40 {
            let ok = runtime().block_on(async {
                let Ok((c, connection)) = tokio_postgres::connect(&conn(), NoTls).await else {
                    return false;
                };
                tokio::spawn(connection);
                c.batch_execute(&sql).await.is_ok()
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        // A leftover slot retains WAL forever: fail the test (unless it already failed).
        if !std::thread::panicking() {
            panic!("could not drop {b}: drop its slot by hand");
        }
    }
}

/// A streaming spec capturing `table` into `sink_url`, committing every second.
fn spec(table: &str, sink_url: &str) -> Value {
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "PostgresCdcStream",
        "metadata": {"name": table.replace('_', "-")},
        "spec": {
            "source": {
                "connection": conn(),
                "table": table,
                "slot": table,
                "publication": table,
                "batchRows": 200,
                "pollInterval": "100ms",
                "retry": {"maxAttempts": 3}
            },
            "sink": {
                "url": sink_url,
                "rolling": {"maxFileAge": "200ms", "targetFileSize": 65536}
            },
            // A multiple of batchRows: group cuts fall on snapshot chunk boundaries.
            "rowsPerGroup": 400,
            "groupingIntervalSeconds": 1
        }
    })
}

/// `CREATE TABLE` with `rows` rows (ids 1..=rows).
async fn create_table(c: &Client, t: &str, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, v int4 NOT NULL, s text);
         INSERT INTO {t} SELECT g, 0, 'row ' || g FROM generate_series(1, {rows}) g;"
    ))
    .await
    .unwrap();
}

/// Inserts, updates and deletes in small transactions until stopped; returns the statements
/// run.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Writer {
    fn start(table: &str, first_new_id: i64, max_id: i64, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let t = table.to_string();
        let handle = std::thread::spawn(move || {
            runtime().block_on(async move {
                let c = client().await;
                let mut rng = seed;
                let mut next = |m: u64| {
                    rng = rng
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (rng >> 33) % m
                };
                let mut new_id = first_new_id;
                let mut statements = 0;
                while !flag.load(Ordering::Relaxed) {
                    let mut sql = String::from("BEGIN;");
                    for _ in 0..1 + next(4) {
                        let key = 1 + next(max_id as u64) as i64;
                        match next(10) {
                            0..=4 => {
                                sql += &format!(
                                    "INSERT INTO {t} VALUES ({new_id}, {}, 'new {new_id}');",
                                    next(1000)
                                );
                                new_id += 1;
                            }
                            5..=7 => {
                                sql += &format!(
                                    "UPDATE {t} SET v = v + 1, s = 'upd ' || v WHERE id = {key};"
                                );
                            }
                            _ => sql += &format!("DELETE FROM {t} WHERE id = {key};"),
                        }
                        statements += 1;
                    }
                    sql += "COMMIT;";
                    c.batch_execute(&sql).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                statements
            })
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The committed change log under `sink_url`.
fn change_log(sink_url: &str) -> Vec<Row> {
    change_log_in(sink_url, &BTreeMap::new())
}

/// [`change_log`] of a sink with storage options (S3).
fn change_log_in(sink_url: &str, options: &BTreeMap<String, String>) -> Vec<Row> {
    rows_as_json(&read_committed(sink_url, options))
}

fn op(r: &Row) -> &str {
    r["_op"].as_str().unwrap()
}
fn lsn(r: &Row) -> u64 {
    r["_lsn"].as_u64().unwrap()
}
fn id(r: &Row) -> i64 {
    r["id"].as_i64().unwrap()
}

/// The table's rows (without change metadata) after replaying `log`: the snapshot rows, then
/// the changes in LSN order (changes of one key are serialised by its row lock, so their LSN
/// order is their commit order). Panics on a change seen twice, an insert of a present key,
/// or an update/delete of an absent one.
fn replay(mut log: Vec<Row>) -> BTreeMap<i64, Row> {
    let snapshot_ids: Vec<i64> = log.iter().filter(|r| op(r) == "r").map(id).collect();
    let unique: BTreeSet<i64> = snapshot_ids.iter().copied().collect();
    assert_eq!(unique.len(), snapshot_ids.len(), "a snapshot row twice");
    let change_lsns: Vec<u64> = log.iter().filter(|r| op(r) != "r").map(lsn).collect();
    let unique: BTreeSet<u64> = change_lsns.iter().copied().collect();
    assert_eq!(unique.len(), change_lsns.len(), "a change twice");
    log.sort_by_key(|r| (op(r) != "r", lsn(r)));
    let mut state = BTreeMap::new();
    for mut r in log {
        let o = op(&r).to_string();
        let k = id(&r);
        r.retain(|c, _| !c.starts_with('_'));
        match o.as_str() {
            "r" | "c" => assert!(state.insert(k, r).is_none(), "row {k} inserted twice ({o})"),
            "u" => assert!(state.insert(k, r).is_some(), "update of absent row {k}"),
            "d" => assert!(state.remove(&k).is_some(), "delete of absent row {k}"),
            other => panic!("unexpected _op {other}"),
        }
    }
    state
}

/// `SELECT *` of the table as rows (nulls omitted, as arrow-json writes them).
async fn table_rows(c: &Client, t: &str) -> BTreeMap<i64, Row> {
    c.query(&format!("SELECT id, v, s FROM {t}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let k: i64 = r.get(0);
            let mut row = Row::new();
            row.insert("id".into(), json!(k));
            row.insert("v".into(), json!(r.get::<_, i32>(1)));
            if let Some(s) = r.get::<_, Option<String>>(2) {
                row.insert("s".into(), json!(s));
            }
            (k, row)
        })
        .collect()
}

/// Insert a sentinel row, run `arcane` until the sentinel is committed, then stop it with
/// SIGTERM (exit 0, nothing uncommitted).
fn catch_up(work: &std::path::Path, spec: &Value, t: &str, sink_url: &str, sentinel: i64) {
    runtime().block_on(async {
        client()
            .await
            .batch_execute(&format!("INSERT INTO {t} VALUES ({sentinel}, -1, 'end')"))
            .await
            .unwrap();
    });
    let proc = Arcane::run(work, spec, &[]);
    let start = std::time::Instant::now();
    while !change_log(sink_url).iter().any(|r| id(r) == sentinel) {
        let lines = proc.lines();
        assert!(
            start.elapsed() < WAIT,
            "the sentinel was not committed within {WAIT:?}; last log lines: {:#?}",
            &lines[lines.len().saturating_sub(30)..]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    proc.signal(Signal::SIGTERM);
    let exit = proc.wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(exit.summary("rowsUncommitted"), 0);
}

#[test]
fn sigkill_at_random_moments_during_snapshot_and_changes_loses_and_duplicates_nothing() {
    let n = Names::new("kill");
    let t = n.base.clone();
    let rows = 4_000;
    runtime().block_on(async { create_table(&client().await, &t, rows).await });
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let spec = spec(&t, &sink_url);
    let writer = Writer::start(&t, rows + 1, rows, 0x5eed_0000_0000_0001);

    let mut seed: u64 = 0x5eed_c0de_0000_0001;
    let mut kills = 0;
    let mut committed_before = 0;
    let mut grew = 0;
    for _ in 0..6 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis(300 + (seed >> 33) % 1_700);
        let proc = Arcane::run(work.path(), &spec, &[]);
        std::thread::sleep(delay);
        proc.signal(Signal::SIGKILL);
        let exit = proc.wait();
        assert_eq!(exit.code, -1, "{:#?}", exit.lines);
        kills += 1;
        let committed = change_log(&sink_url).len();
        assert!(committed >= committed_before, "committed rows went away");
        if committed > committed_before {
            grew += 1;
        }
        committed_before = committed;
    }
    let statements = writer.finish();
    assert!(statements > 0);
    assert!(grew > 0, "no run of {kills} committed anything");

    catch_up(work.path(), &spec, &t, &sink_url, -1);
    let log = change_log(&sink_url);
    assert!(log.iter().any(|r| op(r) == "r"), "no snapshot rows");
    for o in ["c", "u", "d"] {
        assert!(log.iter().any(|r| op(r) == o), "no {o} changes");
    }
    let expected = runtime().block_on(async { table_rows(&client().await, &t).await });
    let actual = replay(log);
    assert_eq!(actual.len(), expected.len(), "row count");
    assert_eq!(actual, expected);
}

#[test]
fn sigterm_exits_zero_with_every_emitted_row_committed_and_a_rerun_continues() {
    let n = Names::new("term");
    let t = n.base.clone();
    let rows = 2_000;
    runtime().block_on(async { create_table(&client().await, &t, rows).await });
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let mut spec = spec(&t, &sink_url);
    // Any retained WAL is over a 1-byte limit: the warning must be logged.
    spec["spec"]["source"]["retainedWalWarningBytes"] = json!(1);
    let writer = Writer::start(&t, rows + 1, rows, 0x5eed_0000_0000_0002);

    let proc = Arcane::run(work.path(), &spec, &[]);
    // Stop once the snapshot is in and some changes were committed.
    eventually("snapshot and changes committed", || {
        let log = change_log(&sink_url);
        log.iter().filter(|r| op(r) == "r").count() >= rows as usize
            && log.iter().any(|r| op(r) != "r")
    });
    std::thread::sleep(Duration::from_millis(700));
    proc.signal(Signal::SIGTERM);
    let exit = proc.wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(exit.termination["reason"], "shutDown");
    assert_eq!(exit.summary("rowsUncommitted"), 0);
    let warning = exit
        .lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l.to_string()
                .contains("retains more WAL than spec.source.retainedWalWarningBytes")
        });
    let Some(warning) = warning else {
        panic!("no retained-WAL warning: {:#?}", exit.lines);
    };
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert!(
        warning.to_string().contains(&format!("\"slot\":\"{t}\"")),
        "{warning}"
    );
    // What the stop reports committed is what the files hold.
    let log = change_log(&sink_url);
    assert_eq!(log.len() as u64, exit.summary("rowsCommitted"));
    // The committed prefix replays cleanly (no change twice, none out of place).
    let _ = replay(log);
    writer.finish();

    // A rerun resumes from the committed LSN and catches up to the table exactly.
    catch_up(work.path(), &spec, &t, &sink_url, -1);
    let expected = runtime().block_on(async { table_rows(&client().await, &t).await });
    assert_eq!(replay(change_log(&sink_url)), expected);
}

/// The slot moved past the committed position by someone else (a second stream on the same
/// slot, an operator's `pg_replication_slot_advance`): the changes in between are gone from the
/// slot, so a rerun that streamed from the slot would exit 0 without them. It is refused.
#[test]
fn a_slot_advanced_past_the_committed_position_is_refused_not_skipped() {
    let n = Names::new("moved");
    let t = n.base.clone();
    runtime().block_on(async { create_table(&client().await, &t, 100).await });
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let spec = spec(&t, &sink_url);
    catch_up(work.path(), &spec, &t, &sink_url, -1);
    let committed = change_log(&sink_url).len();
    // Changes the stream has not read, then the slot moved past them.
    runtime().block_on(async {
        let c = client().await;
        c.batch_execute(&format!(
            "INSERT INTO {t} SELECT g, 1, 'lost?' FROM generate_series(1001, 1010) g"
        ))
        .await
        .unwrap();
        // The stopped run's walsender may hold the slot a moment longer.
        let sql = format!("SELECT pg_replication_slot_advance('{t}', pg_current_wal_lsn())");
        for attempt in 0.. {
            match c.batch_execute(&sql).await {
                Ok(()) => break,
                Err(e) if attempt < 50 => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("advancing the slot: {e}"),
            }
        }
    });
    let exit = Arcane::run(work.path(), &spec, &[]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let message = exit.termination["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("replication slot {t} is at"))
            && message.contains("past this stream's committed position")
            && message.contains("backfill the stream"),
        "{}",
        exit.termination
    );
    assert_eq!(
        change_log(&sink_url).len(),
        committed,
        "nothing more committed"
    );
}

#[test]
fn a_quiet_published_table_keeps_the_slots_retained_wal_bounded_while_another_takes_64_mb() {
    let n = Names::new("quiet");
    let t = n.base.clone();
    let rows = 10;
    runtime().block_on(async {
        let c = client().await;
        create_table(&c, &t, rows).await;
        c.batch_execute(&format!(
            "CREATE TABLE {t}_busy (id serial PRIMARY KEY, pad text)"
        ))
        .await
        .unwrap();
    });
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let spec = spec(&t, &sink_url);
    let proc = Arcane::run(work.path(), &spec, &[]);
    eventually("snapshot committed", || {
        change_log(&sink_url).len() >= rows as usize
    });
    // 64 MB (ARCANE_PG_QUIET_MB: more, e.g. 500) into another table of the same database, in
    // transactions of 4 MB; the captured table takes no change at all.
    let megabytes: u64 = std::env::var("ARCANE_PG_QUIET_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let written = runtime().block_on(async {
        let c = client().await;
        for _ in 0..megabytes.div_ceil(4) {
            c.batch_execute(&format!(
                "INSERT INTO {t}_busy (pad) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 4000) g"
            ))
            .await
            .unwrap();
        }
        let lsn: String = c
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .unwrap()
            .get(0);
        arcane_sources::postgres_cdc::Lsn::parse(&lsn).unwrap().0
    });
    // The runner commits position-only groups, the slot follows; CHECKPOINT logs the running
    // transactions, from which a logical slot's restart point is taken.
    let mut last = (0, 0);
    eventually("the slot's retained WAL back under 16 MB", || {
        last = runtime().block_on(async {
            let c = client().await;
            c.batch_execute("CHECKPOINT").await.unwrap();
            let row = c
                .query_one(
                    "SELECT confirmed_flush_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 \
                     FROM pg_replication_slots WHERE slot_name = $1",
                    &[&t],
                )
                .await
                .unwrap();
            let confirmed = arcane_sources::postgres_cdc::Lsn::parse(row.get(0)).unwrap().0;
            (confirmed, row.get::<_, i64>(1))
        });
        std::thread::sleep(Duration::from_millis(200));
        last.0 >= written && last.1 < 16 << 20
    });
    eprintln!(
        "{megabytes} MB written elsewhere: confirmed {} (written {written}), retained {} bytes",
        last.0, last.1
    );
    proc.signal(Signal::SIGTERM);
    let exit = proc.wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(
        change_log(&sink_url).len(),
        rows as usize,
        "only the quiet table's rows"
    );
}

/// Start a run, wait for its snapshot of `rows` rows, then in one transaction: insert row 1001,
/// add a nullable column `note`, insert row 1002 with a note, and run `then` (`{t}` is the
/// table).
fn run_then_add_column(
    work: &std::path::Path,
    spec: &Value,
    t: &str,
    rows: i64,
    then: &str,
) -> Arcane {
    let sink_url = spec["spec"]["sink"]["url"].as_str().unwrap().to_string();
    let proc = Arcane::run(work, spec, &[]);
    eventually("snapshot committed", || {
        change_log(&sink_url)
            .iter()
            .filter(|r| op(r) == "r")
            .count()
            >= rows as usize
    });
    let then = then.replace("{t}", t);
    runtime().block_on(async {
        let c = client().await;
        c.batch_execute(&format!(
            "INSERT INTO {t} VALUES (1001, 1, 'before');
             ALTER TABLE {t} ADD COLUMN note text;
             INSERT INTO {t} VALUES (1002, 2, 'after', 'hello');
             {then};"
        ))
        .await
        .unwrap();
    });
    proc
}

#[test]
fn an_added_nullable_column_is_landed_in_place_with_add_nullable_columns() {
    let n = Names::new("addcol");
    let t = n.base.clone();
    let rows = 300;
    runtime().block_on(async { create_table(&client().await, &t, rows).await });
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let mut spec = spec(&t, &sink_url);
    spec["spec"]["sink"]["schemaEvolution"] = json!("addNullableColumns");

    let proc = run_then_add_column(
        work.path(),
        &spec,
        &t,
        rows,
        "UPDATE {t} SET note = 'updated' WHERE id = 1",
    );
    eventually("changes after the new column committed", || {
        change_log(&sink_url)
            .iter()
            .any(|r| id(r) == 1 && op(r) == "u")
    });
    proc.signal(Signal::SIGTERM);
    let exit = proc.wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);

    let log = change_log(&sink_url);
    let note = |id_: i64, op_: &str| {
        log.iter()
            .find(|r| id(r) == id_ && op(r) == op_)
            .unwrap_or_else(|| panic!("no {op_} of {id_} in {log:#?}"))
            .get("note")
            .cloned()
    };
    assert_eq!(
        note(1001, "c"),
        None,
        "a row from before the column has no note"
    );
    assert_eq!(note(1002, "c"), Some(json!("hello")));
    assert_eq!(note(1, "u"), Some(json!("updated")));
    // Every change is there once, and the log replays to the table (its id, v, s columns).
    let expected = runtime().block_on(async { table_rows(&client().await, &t).await });
    let mut replayed = replay(log);
    for row in replayed.values_mut() {
        row.remove("note");
    }
    assert_eq!(replayed, expected);
}

#[test]
fn an_added_column_without_schema_evolution_stops_the_stream_with_nothing_lost_or_dead_lettered() {
    let n = Names::new("addcol_none");
    let t = n.base.clone();
    let rows = 300;
    runtime().block_on(async { create_table(&client().await, &t, rows).await });
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let spec = spec(&t, &sink_url);

    let proc = run_then_add_column(
        work.path(),
        &spec,
        &t,
        rows,
        "INSERT INTO {t} VALUES (1003, 3, 'after', 'again')",
    );
    // Outside Kubernetes there is no Job to annotate: the mismatch is a FATAL stop that says
    // what changed (in a pod the runner annotates the Job and the operator backfills).
    let exit = proc.wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let all = exit.lines.join("\n");
    assert!(
        all.contains("note"),
        "the message names the new column: {all}"
    );
    assert!(
        all.contains("schemaEvolution") || all.contains("schema mismatch"),
        "the message says it is a schema change: {all}"
    );
    // The two rows of the new shape were read and refused, not acknowledged: the stop says so.
    assert_eq!(exit.summary("rowsUncommitted"), 2, "{all}");
    // Everything before the new column is committed; nothing after it went anywhere: no
    // dead letters (the later rows are not refused one by one), no rows of the new shape.
    let log = change_log(&sink_url);
    assert!(
        log.iter().any(|r| id(r) == 1001),
        "the change before the ALTER is committed"
    );
    assert!(!log.iter().any(|r| id(r) >= 1002));
    assert_eq!(
        exit.summary("rowsDeadLettered"),
        0,
        "nothing was dead-lettered: {all}"
    );
    // With evolution allowed, a rerun resumes there and lands the rest once.
    let mut evolving = spec.clone();
    evolving["spec"]["sink"]["schemaEvolution"] = json!("addNullableColumns");
    catch_up(work.path(), &evolving, &t, &sink_url, -1);
    let expected = runtime().block_on(async { table_rows(&client().await, &t).await });
    let mut replayed = replay(change_log(&sink_url));
    for row in replayed.values_mut() {
        row.remove("note");
    }
    assert_eq!(replayed, expected);
}

/// A port nobody listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn an_unreachable_server_exits_2_after_logging_every_retry() {
    let n = Names::new("down");
    let t = n.base.clone();
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let mut spec = spec(&t, &sink_url);
    spec["spec"]["source"]["connection"] = json!(format!(
        "host=127.0.0.1 port={} user=postgres dbname=test",
        closed_port()
    ));
    spec["spec"]["source"]["retry"] =
        json!({"maxAttempts": 3, "initialDelay": "50ms", "maxDelay": "100ms"});
    let exit = Arcane::run(work.path(), &spec, &[]).wait();
    assert_eq!(exit.code, 2, "{:#?}", exit.lines);
    let retries: Vec<Value> = exit
        .logs()
        .into_iter()
        .filter(|l| l["level"] == "WARN" && l.to_string().contains("retrying"))
        .collect();
    assert_eq!(
        retries.len(),
        2,
        "3 attempts, 2 retries logged: {:#?}",
        exit.lines
    );
    for line in &retries {
        assert!(
            line.to_string()
                .to_lowercase()
                .contains("connection refused"),
            "each retry says why: {line}"
        );
    }
    let message = exit.termination["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("gave up after 3 attempts")
            && message.to_lowercase().contains("connection refused"),
        "{}",
        exit.termination
    );
}

#[test]
fn an_unknown_user_exits_1_at_once_saying_what_to_fix() {
    let n = Names::new("auth");
    let t = n.base.clone();
    runtime().block_on(async { create_table(&client().await, &t, 1).await });
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let mut spec = spec(&t, &sink_url);
    let user = format!("{t}_nobody");
    spec["spec"]["source"]["connection"] = json!(format!(
        "{} user={user}",
        conn().replace("user=postgres", "")
    ));
    spec["spec"]["source"]["retry"] = json!({"maxAttempts": 5, "initialDelay": "5s"});
    let began = std::time::Instant::now();
    let exit = Arcane::run(work.path(), &spec, &[]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    assert!(began.elapsed() < Duration::from_secs(5), "retried");
    let message = exit.termination["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("role \"{user}\" does not exist"))
            && message.contains("spec.source.connection"),
        "{}",
        exit.termination
    );
}

/// Slots and publications named `name` on the server: (slots, publications).
async fn server_objects(c: &Client, name: &str) -> (i64, i64) {
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1), \
                    (SELECT count(*) FROM pg_publication WHERE pubname = $1)",
            &[&name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn a_keyless_table_is_refused_before_anything_is_created_and_the_app_keeps_updating_it() {
    let n = Names::new("keyless");
    let t = n.base.clone();
    runtime().block_on(async {
        client()
            .await
            .batch_execute(&format!(
                "CREATE TABLE {t} (id int8 NOT NULL, v int4 NOT NULL, s text);
                 INSERT INTO {t} SELECT g, 0, 'row ' || g FROM generate_series(1, 10) g;"
            ))
            .await
            .unwrap();
    });
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let exit = Arcane::run(work.path(), &spec(&t, &sink_url), &[]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let message = exit.termination["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("table public.{t} has no primary key"))
            && message.contains(&format!("ALTER TABLE public.{t} REPLICA IDENTITY FULL"))
            && message.contains("insertOnly"),
        "{}",
        exit.termination
    );
    runtime().block_on(async {
        let c = client().await;
        assert_eq!(
            server_objects(&c, &t).await,
            (0, 0),
            "something was created"
        );
        // The application's own writes still work.
        let updated = c
            .execute(&format!("UPDATE {t} SET v = 1 WHERE id <= 5"), &[])
            .await
            .expect("the application's UPDATE fails");
        assert_eq!(updated, 5);
        c.execute(&format!("DELETE FROM {t} WHERE id = 10"), &[])
            .await
            .expect("the application's DELETE fails");
    });
}

/// `arcane retire --spec FILE`: exit code and stdout.
fn retire(work: &std::path::Path, spec: &Value) -> (i32, String, String) {
    let file = work.join("retire-spec.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arcane"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ARCANE_LOG_FORMAT", "json")
        .current_dir(work)
        .args(["retire", "--spec", file.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn retire_drops_the_streams_slot_and_publication_and_is_idempotent() {
    let n = Names::new("retire");
    let t = n.base.clone();
    runtime().block_on(async { create_table(&client().await, &t, 50).await });
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let spec = spec(&t, &sink_url);
    let proc = Arcane::run(work.path(), &spec, &[]);
    eventually("snapshot committed", || {
        change_log(&sink_url)
            .iter()
            .filter(|r| op(r) == "r")
            .count()
            >= 50
    });
    // A running stream's slot is not dropped.
    let (code, _, stderr) = retire(work.path(), &spec);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("the stream is still running"), "{stderr}");
    proc.signal(Signal::SIGTERM);
    assert_eq!(proc.wait().code, 0);
    runtime().block_on(async {
        assert_eq!(server_objects(&client().await, &t).await, (1, 1));
    });

    // Retire: slot (after the killed backend lets go of it) and publication are gone.
    let mut last = (0, String::new(), String::new());
    for _ in 0..40 {
        last = retire(work.path(), &spec);
        if last.0 == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (code, stdout, stderr) = last;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("dropped replication slot {t}"))
            && stdout.contains(&format!("dropped publication {t}")),
        "{stdout}"
    );
    runtime().block_on(async {
        assert_eq!(server_objects(&client().await, &t).await, (0, 0));
    });
    // Again: nothing to drop, still a success.
    let (code, stdout, stderr) = retire(work.path(), &spec);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "replication slot {t} does not exist; nothing to drop"
        )) && stdout.contains(&format!("publication {t} does not exist; nothing to drop")),
        "{stdout}"
    );
}

/// A table whose rows are identified by a logical number `n` (unique, but for the capture
/// only the declared key counts), with the key columns derived from `n`.
struct KeyedTable {
    /// The declared key columns (`CREATE TABLE` text) and their values for `n` (SQL).
    columns: &'static str,
    values: fn(&str) -> String,
    /// Extra DDL after `CREATE TABLE` (`{t}` is the table).
    after: &'static str,
    /// The columns identifying a row in the change log (a delete carries only these unless
    /// the table has REPLICA IDENTITY FULL).
    key: &'static [&'static str],
}

const TEXT_KEY: KeyedTable = KeyedTable {
    columns: "k text PRIMARY KEY",
    values: |n| format!("'key-' || ({n})"),
    after: "",
    key: &["k"],
};
const UUID_KEY: KeyedTable = KeyedTable {
    columns: "u uuid PRIMARY KEY",
    values: |n| format!("md5(({n})::text)::uuid"),
    after: "",
    key: &["u"],
};
const COMPOSITE_KEY: KeyedTable = KeyedTable {
    columns: "a text NOT NULL, b int4 NOT NULL, PRIMARY KEY (a, b)",
    values: |n| format!("'g' || (({n}) % 7), {n}"),
    after: "",
    key: &["a", "b"],
};
const NO_KEY: KeyedTable = KeyedTable {
    columns: "x int4",
    values: |n| format!("({n}) % 3"),
    after: "ALTER TABLE {t} REPLICA IDENTITY FULL;",
    key: &["n"],
};

impl KeyedTable {
    async fn create(&self, c: &Client, t: &str, rows: i64) {
        let mut sql = format!(
            "CREATE TABLE {t} (n int8 NOT NULL, {}, v int4 NOT NULL, s text); {}",
            self.columns,
            self.after.replace("{t}", t)
        );
        sql += &format!(
            "INSERT INTO {t} SELECT g, {}, 0, 'row ' || g || ' ' || md5(g::text) FROM generate_series(1, {rows}) g;",
            (self.values)("g")
        );
        c.batch_execute(&sql).await.unwrap();
    }

    fn insert(&self, t: &str, n: i64, v: u64) -> String {
        format!(
            "INSERT INTO {t} SELECT {n}, {}, {v}, 'new {n}';",
            (self.values)(&n.to_string())
        )
    }
}

/// Inserts, updates and deletes by `n` in small transactions until stopped.
fn keyed_writer(
    table: &'static KeyedTable,
    t: &str,
    first_new: i64,
    max: i64,
    seed: u64,
) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let t = t.to_string();
    let handle = std::thread::spawn(move || {
        runtime().block_on(async move {
            let c = client().await;
            let mut rng = seed;
            let mut next = |m: u64| {
                rng = rng
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (rng >> 33) % m
            };
            let mut new_n = first_new;
            let mut statements = 0;
            while !flag.load(Ordering::Relaxed) {
                let mut sql = String::from("BEGIN;");
                for _ in 0..1 + next(4) {
                    let n = 1 + next(max as u64) as i64;
                    match next(10) {
                        0..=4 => {
                            sql += &table.insert(&t, new_n, next(1000));
                            new_n += 1;
                        }
                        5..=7 => {
                            sql +=
                                &format!("UPDATE {t} SET v = v + 1, s = 'upd ' || v WHERE n = {n};")
                        }
                        _ => sql += &format!("DELETE FROM {t} WHERE n = {n};"),
                    }
                    statements += 1;
                }
                sql += "COMMIT;";
                c.batch_execute(&sql).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            statements
        })
    });
    Writer {
        stop,
        handle: Some(handle),
    }
}

/// The committed change log, `None` while a committed file is not in place yet: a commit's
/// files are renamed into place right after its manifest, by the committing process or, when
/// that one was killed in between, by the next run's recovery.
fn committed_log_if_readable(sink_url: &str) -> Option<Vec<Row>> {
    committed_log_in(sink_url, &BTreeMap::new())
}

/// [`committed_log_if_readable`] of a sink with storage options (S3).
fn committed_log_in(sink_url: &str, options: &BTreeMap<String, String>) -> Option<Vec<Row>> {
    let rt = runtime();
    for _ in 0..4 {
        match rt.block_on(arcane_sinks::read_committed(sink_url, options)) {
            Ok(batches) => return Some(rows_as_json(&batches)),
            Err(e) if e.to_string().contains("is not visible") => {
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("read committed: {e}"),
        }
    }
    None
}

/// A row's identity: its key columns' JSON values.
fn row_key(key: &[&str], r: &Row) -> String {
    key.iter()
        .map(|k| r.get(*k).map(Value::to_string).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("|")
}

/// The table's rows as JSON by key (nulls omitted, as arrow-json writes them).
async fn rows_by_key(c: &Client, t: &str, key: &[&str]) -> BTreeMap<String, Row> {
    c.query(&format!("SELECT row_to_json(_t)::text FROM {t} AS _t"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let mut row: Row = serde_json::from_str(r.get::<_, &str>(0)).unwrap();
            row.retain(|_, v| !v.is_null());
            (row_key(key, &row), row)
        })
        .collect()
}

/// The change log replayed by key: snapshot rows, then changes in LSN order; panics on a
/// change seen twice, an insert of a present key, an update or delete of an absent one.
fn replay_by_key(mut log: Vec<Row>, key: &[&str]) -> BTreeMap<String, Row> {
    let snapshot: Vec<String> = log
        .iter()
        .filter(|r| op(r) == "r")
        .map(|r| row_key(key, r))
        .collect();
    let unique: BTreeSet<&String> = snapshot.iter().collect();
    assert_eq!(unique.len(), snapshot.len(), "a snapshot row twice");
    let change_lsns: Vec<u64> = log.iter().filter(|r| op(r) != "r").map(lsn).collect();
    let unique: BTreeSet<u64> = change_lsns.iter().copied().collect();
    assert_eq!(unique.len(), change_lsns.len(), "a change twice");
    log.sort_by_key(|r| (op(r) != "r", lsn(r)));
    let mut state = BTreeMap::new();
    for mut r in log {
        let o = op(&r).to_string();
        let k = row_key(key, &r);
        r.retain(|c, _| !c.starts_with('_'));
        match o.as_str() {
            "r" | "c" => assert!(
                state.insert(k.clone(), r).is_none(),
                "row {k} inserted twice ({o})"
            ),
            "u" => assert!(
                state.insert(k.clone(), r).is_some(),
                "update of absent row {k}"
            ),
            "d" => assert!(state.remove(&k).is_some(), "delete of absent row {k}"),
            other => panic!("unexpected _op {other}"),
        }
    }
    state
}

/// The stream of `spec` SIGKILLed at `kills` random moments while `writer` changes the
/// table, then the writer stopped, a sentinel row (`n = -1`) inserted and the stream run until
/// it is committed (SIGTERM, exit 0). The committed change log must hold every operation in
/// `ops` and replay, by `table`'s key, to exactly the table's rows.
#[allow(clippy::too_many_arguments)]
fn stream_with_kills_then_compare(
    work: &std::path::Path,
    spec: &Value,
    (t, table): (&str, &KeyedTable),
    (sink_url, options): (&str, &BTreeMap<String, String>),
    writer: Writer,
    kills: u32,
    seed: &mut u64,
    ops: &[&str],
) {
    for _ in 0..kills {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let proc = Arcane::run(work, spec, &[]);
        std::thread::sleep(Duration::from_millis(500 + (*seed >> 33) % 1_500));
        proc.signal(Signal::SIGKILL);
        proc.wait();
    }
    assert!(writer.finish() > 0);
    runtime().block_on(async {
        client()
            .await
            .batch_execute(&table.insert(t, -1, 0))
            .await
            .unwrap();
    });
    let proc = Arcane::run(work, spec, &[]);
    eventually("sentinel committed", || {
        committed_log_in(sink_url, options)
            .unwrap_or_default()
            .iter()
            .any(|r| r.get("n").and_then(Value::as_i64) == Some(-1))
    });
    proc.signal(Signal::SIGTERM);
    assert_eq!(proc.wait().code, 0);

    let log = change_log_in(sink_url, options);
    for o in ops {
        assert!(log.iter().any(|r| op(r) == *o), "no {o} rows");
    }
    let expected = runtime().block_on(async { rows_by_key(&client().await, t, table.key).await });
    let actual = replay_by_key(log, table.key);
    assert_eq!(actual.len(), expected.len(), "row count");
    assert_eq!(actual, expected);
}

/// Snapshot `rows` rows of `table`, SIGKILLed right after the first snapshot rows were
/// committed and then at random moments; `writes_during_snapshot` starts the writer at once
/// (else once the snapshot is committed). The replayed change log must equal the table by `n`.
fn snapshot_any_key_survives_kills(
    test: &str,
    table: &'static KeyedTable,
    writes_during_snapshot: bool,
) {
    let n = Names::new(test);
    let t = n.base.clone();
    let rows = 20_000;
    runtime().block_on(async { table.create(&client().await, &t, rows).await });
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let mut spec = spec(&t, &sink_url);
    spec["spec"]["source"]["batchRows"] = json!(100);
    spec["spec"]["rowsPerGroup"] = json!(200);
    // A file per group: the snapshot is committed in many steps, so a kill can fall between.
    spec["spec"]["sink"]["rolling"]["maxRowsPerFile"] = json!(200);
    let snapshot_rows = || {
        committed_log_if_readable(&sink_url)
            .unwrap_or_default()
            .iter()
            .filter(|r| op(r) == "r")
            .count()
    };
    let mut writer =
        writes_during_snapshot.then(|| keyed_writer(table, &t, rows + 1, rows, 0x5eed_0003));

    // Killed in the middle of the snapshot.
    let proc = Arcane::run(work.path(), &spec, &[]);
    eventually("first snapshot rows committed", || snapshot_rows() > 0);
    proc.signal(Signal::SIGKILL);
    assert_eq!(proc.wait().code, -1);
    let after_kill = snapshot_rows();
    assert!(
        after_kill < rows as usize,
        "the snapshot finished before the kill ({after_kill} rows)"
    );
    // Rerun until the snapshot is committed, killing it at random moments on the way.
    let mut seed: u64 = 0x5eed_c0de_0000_0003;
    while snapshot_rows() < rows as usize / 2 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let proc = Arcane::run(work.path(), &spec, &[]);
        std::thread::sleep(Duration::from_millis(300 + (seed >> 33) % 1_200));
        proc.signal(Signal::SIGKILL);
        proc.wait();
    }
    if writer.is_none() {
        let proc = Arcane::run(work.path(), &spec, &[]);
        eventually("snapshot committed", || snapshot_rows() >= rows as usize);
        proc.signal(Signal::SIGTERM);
        assert_eq!(proc.wait().code, 0);
        writer = Some(keyed_writer(table, &t, rows + 1, rows, 0x5eed_0004));
    }
    // Changes, with more kills.
    stream_with_kills_then_compare(
        work.path(),
        &spec,
        (&t, table),
        (&sink_url, &BTreeMap::new()),
        writer.take().unwrap(),
        3,
        &mut seed,
        &["r", "c", "u", "d"],
    );
}

#[test]
fn a_text_key_snapshot_resumes_after_kills_with_none_missing_or_twice() {
    snapshot_any_key_survives_kills("textkey", &TEXT_KEY, true);
}

#[test]
fn a_uuid_key_snapshot_resumes_after_kills_with_none_missing_or_twice() {
    snapshot_any_key_survives_kills("uuidkey", &UUID_KEY, true);
}

#[test]
fn a_composite_key_snapshot_resumes_after_kills_with_none_missing_or_twice() {
    snapshot_any_key_survives_kills("compkey", &COMPOSITE_KEY, true);
}

#[test]
fn a_keyless_replica_identity_full_table_is_snapshotted_by_ctid_and_resumes_after_kills() {
    snapshot_any_key_survives_kills("nokey", &NO_KEY, false);
}

/// Shard `index` of backfill `id` of `spec`, as the pod of an Indexed Job would run it.
fn start_shard(work: &std::path::Path, spec: &Value, id: &str, index: u32) -> Arcane {
    let index = index.to_string();
    Arcane::run_with_env(
        work,
        spec,
        &["--backfill", "--backfill-id", id],
        &[("JOB_COMPLETION_INDEX", index.as_str())],
    )
}

/// Run the `shards` shards of backfill `id` all at once until every one exits 0, SIGKILLing a
/// random running shard at a random moment in each of the first `kill_rounds` rounds (then
/// restarting it, as the Job controller would). Returns how many kills landed.
fn run_shards_killing(
    work: &std::path::Path,
    spec: &Value,
    id: &str,
    shards: u32,
    kill_rounds: u32,
    seed: &mut u64,
) -> u32 {
    let mut next = |m: u64| {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*seed >> 33) % m
    };
    let mut pending: Vec<u32> = (0..shards).collect();
    let mut landed = 0;
    for round in 0.. {
        assert!(round < kill_rounds + 5, "shards {pending:?} never finished");
        let procs: Vec<(u32, Arcane)> = pending
            .iter()
            .map(|&i| (i, start_shard(work, spec, id, i)))
            .collect();
        let started = std::time::Instant::now();
        if round < kill_rounds {
            // Anywhere from planning (the lock, the slot) to the last commit.
            std::thread::sleep(Duration::from_millis(next(350)));
            let victim = next(procs.len() as u64) as usize;
            procs[victim].1.signal(Signal::SIGKILL);
        }
        pending.clear();
        for (i, p) in procs {
            let exit = p.wait();
            match exit.code {
                0 => {}
                -1 => {
                    landed += 1;
                    pending.push(i);
                }
                code => panic!("shard {i} exited {code}: {:#?}", exit.lines),
            }
        }
        eprintln!(
            "round {round}: {:?}, shards {pending:?} killed",
            started.elapsed()
        );
        if pending.is_empty() {
            break;
        }
    }
    assert!(
        kill_rounds == 0 || landed > 0,
        "no kill landed while a shard ran"
    );
    landed
}

/// A sharded backfill of `rows` rows of `table` in `shards` shards (random shards SIGKILLed at
/// random moments and restarted), with inserts, updates and deletes during it when
/// `writes_during_backfill` (else after it), then the stream: the replayed change log must
/// equal the table by key, with no snapshot row or change twice.
#[allow(clippy::too_many_arguments)]
fn sharded_snapshot_survives_kills(
    test: &str,
    table: &'static KeyedTable,
    rows: i64,
    shards: u32,
    kill_rounds: u32,
    writes_during_backfill: bool,
    store: Store,
) {
    let n = Names::new(test);
    let t = n.base.clone();
    runtime().block_on(async { table.create(&client().await, &t, rows).await });
    let work = tempfile::tempdir().unwrap();
    let sink_url = store.url_of("out");
    let options = store.options();
    let mut spec = spec(&t, &sink_url);
    spec["spec"]["sink"]["storageOptions"] = json!(options);
    spec["spec"]["source"]["batchRows"] = json!(100);
    spec["spec"]["rowsPerGroup"] = json!(200);
    spec["spec"]["sink"]["rolling"]["maxRowsPerFile"] = json!(200);
    spec["spec"]["backfillShards"] = json!(shards);
    // An empty table's backfill replaces the (empty) output on purpose.
    spec["spec"]["sink"]["allowEmptyOverwrite"] = json!(rows == 0);
    let mut writer =
        writes_during_backfill.then(|| keyed_writer(table, &t, rows + 1, rows.max(1), 0x5eed_0024));

    let mut seed = arcane_test_support::rng::seed_from_env("ARCANE_TEST_SEED");
    eprintln!("kill schedule seed (ARCANE_TEST_SEED): {seed}");
    let landed = run_shards_killing(work.path(), &spec, "b1", shards, kill_rounds, &mut seed);
    eprintln!("{landed} kills landed");
    let text = show(&sink_url, &options);
    assert!(
        text.contains(&format!("sharded backfill b1 ({shards} shards): complete")),
        "{text}"
    );
    let snapshot_rows = change_log_in(&sink_url, &options)
        .iter()
        .filter(|r| op(r) == "r")
        .count();
    if !writes_during_backfill {
        assert_eq!(
            snapshot_rows, rows as usize,
            "snapshot rows after the backfill"
        );
    }
    // A shard restarted after the backfill completed does nothing and exits 0.
    let exit = start_shard(work.path(), &spec, "b1", shards - 1).wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);

    if writer.is_none() {
        writer = Some(keyed_writer(table, &t, rows + 1, rows.max(1), 0x5eed_0025));
    }
    // The stream goes on from the shards' merged position, killed a few times. A tiny
    // table's writer may update or delete nothing that exists.
    let ops: &[&str] = if rows >= 1_000 {
        &["c", "u", "d"]
    } else {
        &["c"]
    };
    stream_with_kills_then_compare(
        work.path(),
        &spec,
        (&t, table),
        (&sink_url, &options),
        writer.take().unwrap(),
        2,
        &mut seed,
        ops,
    );
}

#[test]
fn a_sharded_backfill_of_a_composite_key_table_with_writes_and_kills_lands_every_row_once() {
    sharded_snapshot_survives_kills("shcomp", &COMPOSITE_KEY, 60_000, 3, 3, true, Store::local());
}

/// The plan and the shards' lineages on S3 (moto): put-if-absent there too.
#[test]
fn a_sharded_backfill_into_s3_with_writes_and_kills_lands_every_row_once() {
    let store = runtime().block_on(Store::s3());
    sharded_snapshot_survives_kills("shs3", &TEXT_KEY, 30_000, 2, 2, true, store);
}

#[test]
fn a_sharded_backfill_of_a_keyless_table_splits_its_blocks_and_lands_every_row_once() {
    sharded_snapshot_survives_kills("shnokey", &NO_KEY, 40_000, 2, 2, false, Store::local());
}

#[test]
fn a_sharded_backfill_with_more_shards_than_rows_or_an_empty_table_lands_every_row_once() {
    sharded_snapshot_survives_kills("shfew", &TEXT_KEY, 2, 4, 0, false, Store::local());
    sharded_snapshot_survives_kills("shempty", &UUID_KEY, 0, 3, 0, false, Store::local());
}

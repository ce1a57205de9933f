//! The postgres-cdc source against the machine's PostgreSQL (127.0.0.1:5432, trust auth,
//! database `test`, `wal_level = logical`; `scripts/test.sh` enables it). Override the
//! connection with `ARCANE_TEST_PG` (a libpq connection string). Every test uses its own
//! table, slot and publication and drops them, even when it fails.
#![cfg(feature = "postgres-cdc")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arcane_core::{
    Checkpoint, Error, ExitCode, Mode, PositionedBatch, PositionedStream, Source, SourceStart,
};
use arcane_sources::postgres_cdc::{PgPosition, PostgresCdcSource, PostgresCdcSourceConfig};
use arcane_test_support::proxy::Proxy;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use futures::StreamExt;
use tokio_postgres::{Client, NoTls};

fn conn() -> String {
    std::env::var("ARCANE_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// A unique table/slot/publication name, dropped on drop.
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
                "cdc_{test}_{}_{nanos}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
    fn config(&self) -> PostgresCdcSourceConfig {
        let mut c = PostgresCdcSourceConfig::new(conn(), &self.base, &self.base, &self.base);
        c.poll_interval = Duration::from_millis(100);
        c
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let b = &self.base;
        let sql = format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('{b}', '{b}_watch'); \
             DROP PUBLICATION IF EXISTS {b}; DROP TABLE IF EXISTS {b}, {b}_busy; \
             DROP TYPE IF EXISTS {b}_mood; DROP DOMAIN IF EXISTS {b}_amount;"
        );
        // Retry a few times: the slot may be in use by a poll for a moment.
        for _ in 0..20 {
            let out = std::process::Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "test",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-qc",
                    &sql,
                ])
                .output();
            if out.map(|o| o.status.success()).unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A proxy in front of the test server, and the connection string that goes through it.
async fn proxied() -> (Proxy, String) {
    let cfg: tokio_postgres::Config = conn().parse().unwrap();
    let host = match &cfg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("the proxy needs a TCP host, not {other:?}"),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(upstream).await;
    let through = format!(
        "host=127.0.0.1 port={} user={} dbname={}",
        proxy.port(),
        cfg.get_user().unwrap_or("postgres"),
        cfg.get_dbname().unwrap_or("test")
    );
    (proxy, through)
}

/// Wait up to `within` for `cond`.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

async fn next_batch(stream: &mut PositionedStream) -> PositionedBatch {
    tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("no batch within 60 s")
        .expect("stream ended")
        .expect("source error")
}

fn ids_of(batches: &[RecordBatch]) -> Vec<i64> {
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
            id.values().to_vec()
        })
        .collect();
    ids.sort();
    ids
}

async fn client() -> Client {
    let (client, connection) = tokio_postgres::connect(&conn(), NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn start(mode: Mode, resume: Option<Checkpoint>) -> SourceStart {
    SourceStart {
        resume_from: resume,
        mode,
        ..Default::default()
    }
}

/// Rows as (op, id, val) from batches with columns `id` (int8) and `val` (text).
fn ops(batches: &[RecordBatch]) -> Vec<(String, i64, Option<String>)> {
    let mut out = Vec::new();
    for b in batches {
        let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let val = b.column_by_name("val").unwrap().as_string::<i32>();
        let op = b.column_by_name("_op").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            out.push((
                op.value(i).to_string(),
                id.value(i),
                (!val.is_null(i)).then(|| val.value(i).to_string()),
            ));
        }
    }
    out
}

/// Apply the change log to an empty table.
fn replay(ops: &[(String, i64, Option<String>)]) -> BTreeMap<i64, Option<String>> {
    let mut state = BTreeMap::new();
    for (op, id, val) in ops {
        match op.as_str() {
            "r" | "c" => assert!(
                state.insert(*id, val.clone()).is_none(),
                "row {id} arrived twice ({op})"
            ),
            "u" => assert!(
                state.insert(*id, val.clone()).is_some(),
                "update of unknown row {id}"
            ),
            "d" => assert!(state.remove(id).is_some(), "delete of unknown row {id}"),
            other => panic!("unexpected op {other}"),
        }
    }
    state
}

async fn table_state(c: &Client, table: &str) -> BTreeMap<i64, Option<String>> {
    c.query(&format!("SELECT id, val FROM {table}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn current_lsn(c: &Client) -> u64 {
    let s: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    arcane_sources::postgres_cdc::Lsn::parse(&s).unwrap().0
}

/// Read batches until the stream's position reaches `lsn` (everything committed before it).
async fn read_until(stream: &mut PositionedStream, lsn: u64, out: &mut Vec<PositionedBatch>) {
    loop {
        let b = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("no batch within 60 s")
            .expect("stream ended")
            .expect("source error");
        let pos: PgPosition = b.position.decode("test").unwrap();
        let done = pos.snapshot.is_none() && pos.tx.is_none() && pos.lsn.0 >= lsn;
        out.push(b);
        if done {
            return;
        }
    }
}

/// A stream opened at the start, with its snapshot read into the returned batches.
async fn open_after_snapshot(
    n: &Names,
) -> (PostgresCdcSource, PositionedStream, Vec<PositionedBatch>) {
    let mut source = PostgresCdcSource::new(n.config()).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, 0, &mut got).await;
    (source, stream, got)
}

fn batches(v: &[PositionedBatch]) -> Vec<RecordBatch> {
    v.iter().map(|b| b.batch.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_operation_arrives_in_commit_order() {
    let n = Names::new("types");
    let c = client().await;
    let t = &n.base;
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text, b bool, i2 int2, i4 int4, f4 real, f8 float8, \
         num numeric(10,2), big numeric, vc varchar(5), js jsonb, u uuid, by bytea, d date, tm time, \
         ts timestamp, tz timestamptz);
         ALTER TABLE {t} REPLICA IDENTITY FULL;
         INSERT INTO {t} (id, val, b, i2, i4, f4, f8, num, big, vc, js, u, by, d, tm, ts, tz) VALUES
           (1, 'one', true, 1, 10, 1.5, 2.25, 12.34, 123456789012345678901234567890.5, 'ab', '{{\"k\": 1}}',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff', '2026-01-02', '03:04:05.5', '2026-01-02 03:04:05.123456',
            '2026-01-02 03:04:05+02');"
    ))
    .await
    .unwrap();
    let (mut source, mut stream, mut got) = open_after_snapshot(&n).await;
    for sql in [
        format!("INSERT INTO {t} (id, val) VALUES (2, 'two')"),
        format!(
            "BEGIN; UPDATE {t} SET val = 'uno', num = -1.5 WHERE id = 1; DELETE FROM {t} WHERE id = 2; COMMIT;"
        ),
        format!("INSERT INTO {t} (id, val, num) VALUES (3, NULL, 'NaN')"),
    ] {
        c.batch_execute(&sql).await.unwrap();
    }
    let lsn = current_lsn(&c).await;
    read_until(&mut stream, lsn, &mut got).await;
    let all = arrow_select::concat::concat_batches(&got[0].batch.schema(), &batches(&got)).unwrap();
    // `tz` and `_commit_ts` are timestamp[us, UTC]: checked as numbers (pretty printing a
    // named zone needs chrono-tz).
    let tz = all
        .column_by_name("tz")
        .unwrap()
        .as_primitive::<arrow_array::types::TimestampMicrosecondType>();
    assert_eq!(tz.value(0), 1_767_315_845_000_000); // 2026-01-02T01:04:05Z
    let keep: Vec<usize> = (0..all.num_columns())
        .filter(|&i| !matches!(all.schema().field(i).name().as_str(), "tz" | "_commit_ts"))
        .collect();
    let printable = all.project(&keep).unwrap();
    let text = arrow_cast::pretty::pretty_format_batches(&[printable])
        .unwrap()
        .to_string();
    // Snapshot row with every type, then the changes in commit order; the NaN row is dead-lettered.
    let ops = ops(std::slice::from_ref(&all));
    assert_eq!(
        ops,
        vec![
            ("r".into(), 1, Some("one".into())),
            ("c".into(), 2, Some("two".into())),
            ("u".into(), 1, Some("uno".into())),
            ("d".into(), 2, Some("two".into())),
        ],
        "{text}"
    );
    for needle in [
        "| 1  | one | true | 1  | 10 | 1.5 | 2.25 | 12.34 | 123456789012345678901234567890.5 | ab | {\"k\": 1} | a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 | 00ff | 2026-01-02 | 03:04:05.500 | 2026-01-02T03:04:05.123456 |",
        "| -1.50 |",
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
    // Metadata: LSNs increase, the update and delete share a transaction and commit time.
    let lsns = all
        .column_by_name("_lsn")
        .unwrap()
        .as_primitive::<UInt64Type>();
    assert!(
        lsns.values()[1..].windows(2).all(|w| w[0] < w[1]) && lsns.value(0) <= lsns.value(1),
        "{text}"
    );
    let xid = all
        .column_by_name("_xid")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert!(xid.is_null(0) && !xid.is_null(1));
    assert_eq!(xid.value(2), xid.value(3));
    assert_ne!(xid.value(1), xid.value(2));
    // Committing advances the slot; nothing was consumed before. (The replication
    // connection's status update confirms it, sent at once but received a moment later.)
    let before = slot_lsn(&c, &n.base).await;
    assert!(before < lsn);
    let last = got.last().unwrap().position.clone();
    source.commit(&Checkpoint::at(last)).await.unwrap();
    wait_for_slot(&c, &n.base, lsn).await;
    drop(stream);
}

/// The values of list column `name` in row `row`, printed one by one (null as "NULL").
fn list_values(b: &RecordBatch, name: &str, row: usize) -> Option<Vec<String>> {
    let list = b.column_by_name(name).unwrap().as_list::<i32>();
    if list.is_null(row) {
        return None;
    }
    let items = list.value(row);
    let fmt = arrow_cast::display::ArrayFormatter::try_new(
        items.as_ref(),
        &arrow_cast::display::FormatOptions::default().with_null("NULL"),
    )
    .unwrap();
    Some((0..items.len()).map(|i| fmt.value(i).to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enums_domains_and_arrays_arrive_as_text_decimals_and_lists_in_snapshot_and_changes() {
    let n = Names::new("arrays");
    let c = client().await;
    let t = &n.base;
    c.batch_execute(&format!(
        "CREATE TYPE {t}_mood AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN {t}_amount AS numeric(5,1);
         CREATE TABLE {t} (id int8 PRIMARY KEY, mood {t}_mood, moods {t}_mood[], amount {t}_amount,
           ints int4[], texts text[], nums numeric(6,2)[], bins bytea[]);
         INSERT INTO {t} VALUES (1, 'ok', '{{sad,happy}}', 12.3, '{{1,NULL,3}}',
           ARRAY['a b', 'with \"quote\" and \\', NULL, 'c,d', 'NULL', ''], '{{1.5,-2.25}}', ARRAY['\\x00ff'::bytea]);"
    ))
    .await
    .unwrap();
    let (_source, mut stream, mut got) = open_after_snapshot(&n).await;
    write_and_read(
        &c,
        &format!(
        "INSERT INTO {t} (id, mood, moods, ints, texts) VALUES (2, 'happy', '{{}}', NULL, '{{}}');
         INSERT INTO {t} (id, ints) VALUES (3, '{{{{1,2}},{{3,4}}}}');
         UPDATE {t} SET moods = '{{ok,NULL}}', amount = -0.5 WHERE id = 1;"
    ),
        &mut stream,
        &mut got,
    )
    .await;
    drop(stream);
    let all = arrow_select::concat::concat_batches(&got[0].batch.schema(), &batches(&got)).unwrap();
    let schema = all.schema();
    let list = |dt: arrow_schema::DataType| {
        arrow_schema::DataType::List(std::sync::Arc::new(arrow_schema::Field::new(
            "item", dt, true,
        )))
    };
    use arrow_schema::DataType as D;
    for (col, dt) in [
        ("mood", D::Utf8),
        ("moods", list(D::Utf8)),
        ("amount", D::Decimal128(5, 1)),
        ("ints", list(D::Int32)),
        ("texts", list(D::Utf8)),
        ("nums", list(D::Decimal128(6, 2))),
        ("bins", list(D::Binary)),
    ] {
        assert_eq!(
            schema.field_with_name(col).unwrap().data_type(),
            &dt,
            "{col}"
        );
    }
    let ops: Vec<(String, i64)> = (0..all.num_rows())
        .map(|i| {
            (
                all.column_by_name("_op")
                    .unwrap()
                    .as_string::<i32>()
                    .value(i)
                    .to_string(),
                all.column_by_name("id")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .value(i),
            )
        })
        .collect();
    // Row 3's two-dimensional array cannot be a list: it is dead-lettered, with the reason.
    assert_eq!(ops, vec![("r".into(), 1), ("c".into(), 2), ("u".into(), 1)]);
    let letters: Vec<String> = got
        .iter()
        .flat_map(|b| b.dead_letters.iter().map(|l| l.reason.clone()))
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].contains("more than one dimension"),
        "{letters:?}"
    );
    let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let mood = all.column_by_name("mood").unwrap().as_string::<i32>();
    assert_eq!((mood.value(0), mood.value(1)), ("ok", "happy"));
    assert_eq!(list_values(&all, "moods", 0), strings(&["sad", "happy"]));
    assert_eq!(list_values(&all, "moods", 1), strings(&[]));
    assert_eq!(list_values(&all, "moods", 2), strings(&["ok", "NULL"]));
    assert!(
        all.column_by_name("moods")
            .unwrap()
            .as_list::<i32>()
            .value(2)
            .is_null(1)
    );
    let amount = all
        .column_by_name("amount")
        .unwrap()
        .as_primitive::<arrow_array::types::Decimal128Type>();
    assert_eq!((amount.value(0), amount.value(2)), (123, -5));
    assert_eq!(list_values(&all, "ints", 0), strings(&["1", "NULL", "3"]));
    assert_eq!(list_values(&all, "ints", 1), None);
    assert_eq!(
        list_values(&all, "texts", 0),
        strings(&["a b", "with \"quote\" and \\", "NULL", "c,d", "NULL", ""])
    );
    let texts = all
        .column_by_name("texts")
        .unwrap()
        .as_list::<i32>()
        .value(0);
    assert!(
        texts.is_null(2) && !texts.is_null(4),
        "NULL element vs the string 'NULL'"
    );
    assert_eq!(list_values(&all, "nums", 0), strings(&["1.50", "-2.25"]));
    assert_eq!(list_values(&all, "bins", 0), strings(&["00ff"]));
}

/// The slot's confirmed position and the WAL it retains (server position − `restart_lsn`).
async fn slot_state(c: &Client, slot: &str) -> (u64, i64) {
    let row = c
        .query_one(
            "SELECT confirmed_flush_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap();
    let confirmed = arcane_sources::postgres_cdc::Lsn::parse(row.get(0))
        .unwrap()
        .0;
    (confirmed, row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_table_does_not_pin_the_wal_other_tables_write() {
    let n = Names::new("quiet");
    let c = client().await;
    let t = &n.base;
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text); INSERT INTO {t} VALUES (1, 'only');
         CREATE TABLE {t}_busy (id serial PRIMARY KEY, pad text);"
    ))
    .await
    .unwrap();
    let (mut source, mut stream, mut got) = open_after_snapshot(&n).await;
    let (_, before) = slot_state(&c, t).await;
    // 64 MB into another table of the same database, in 16 transactions; the captured table
    // takes no change at all.
    for _ in 0..16 {
        c.batch_execute(&format!(
            "INSERT INTO {t}_busy (pad) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 4000) g"
        ))
        .await
        .unwrap();
    }
    let written = current_lsn(&c).await;
    // Commit whatever the stream emits, as the runner does after each sink commit; the slot
    // must follow the server. CHECKPOINT logs the running transactions, from which a logical
    // slot's restart point is taken.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut retained;
    loop {
        let b = next_batch(&mut stream).await;
        source
            .commit(&Checkpoint::at(b.position.clone()))
            .await
            .unwrap();
        got.push(b);
        c.batch_execute("CHECKPOINT").await.unwrap();
        let confirmed;
        (confirmed, retained) = slot_state(&c, t).await;
        if confirmed >= written && retained < 16 << 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot still retains {retained} bytes of WAL (confirmed {confirmed}, server past {written}) after another table took 64 MB"
        );
    }
    drop(stream);
    eprintln!("retained WAL: {before} bytes before, {retained} after 64 MB written elsewhere");
    // Nothing of the other table, and the quiet table's one row once.
    assert_eq!(ids_of(&batches(&got)), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_concurrent_writes_and_restarts_yields_every_row_once() {
    let n = Names::new("snap");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text);
         INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 5000) g;"
    ))
    .await
    .unwrap();
    let mut cfg = n.config();
    cfg.batch_rows = 700;
    // Writer: small transactions touching rows across the key space while the snapshot runs.
    let writer = {
        let t = t.clone();
        tokio::spawn(async move {
            let c = client().await;
            for i in 0..1500i64 {
                c.batch_execute(&format!(
                    "BEGIN; INSERT INTO {t} VALUES ({}, 'new{i}'); UPDATE {t} SET val = 'upd{i}' WHERE id = {};
                     DELETE FROM {t} WHERE id = {}; COMMIT;",
                    100_000 + i,
                    (i * 67) % 5000 + 1,
                    (i * 131 + 7) % 5000 + 1
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    // Read in pieces, dropping the stream and resuming from a checkpoint (some mid-batch)
    // several times, as after a crash: committed rows are kept, the rest is read again.
    let mut kept: Vec<RecordBatch> = Vec::new();
    let mut resume: Option<Checkpoint> = None;
    let mut restarts = 0;
    let mut partial_cuts = 0;
    loop {
        let mut source = PostgresCdcSource::new(cfg.clone()).unwrap();
        let mut stream = source
            .open(start(Mode::Stream, resume.clone()))
            .await
            .unwrap();
        if restarts < 10 && partial_cuts < 2 {
            // Take a few batches, "commit" all but part of the last one, then crash.
            let mut taken = Vec::new();
            for _ in 0..(3 + restarts % 4) {
                let next = tokio::time::timeout(Duration::from_secs(60), stream.next())
                    .await
                    .expect("a batch within 60 s");
                taken.push(next.unwrap().unwrap());
            }
            let last = taken.pop().unwrap();
            // Cut inside a batch only in the change stream: a cut inside a snapshot chunk is
            // exact only when that key range did not change (see the module docs).
            let in_snapshot = last
                .position
                .decode::<PgPosition>("test")
                .unwrap()
                .snapshot
                .is_some();
            let partial = if in_snapshot {
                0
            } else {
                last.batch.num_rows() / 2
            };
            kept.extend(taken.iter().map(|b| b.batch.clone()));
            kept.push(last.batch.slice(0, partial));
            partial_cuts += usize::from(partial > 0);
            let cp = Checkpoint {
                position: taken.last().map(|b| b.position.clone()),
                rows: partial as u64,
            };
            source.commit(&cp).await.unwrap();
            resume = Some(cp);
            restarts += 1;
            drop(stream);
            continue;
        }
        writer.await.unwrap();
        let lsn = current_lsn(&c).await;
        let mut rest = Vec::new();
        read_until(&mut stream, lsn, &mut rest).await;
        kept.extend(batches(&rest));
        break;
    }
    assert!(partial_cuts > 0, "no restart inside a change batch");
    let log = ops(&kept);
    assert!(log.iter().any(|o| o.0 == "r") && log.iter().any(|o| o.0 == "c"));
    assert_eq!(replay(&log), table_state(&c, &t).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_column_widens_the_schema_and_a_dropped_one_is_a_schema_mismatch() {
    let n = Names::new("ddl");
    let c = client().await;
    let t = &n.base;
    c.batch_execute(&format!("CREATE TABLE {t} (id int8 PRIMARY KEY, val text, extra int4); INSERT INTO {t} VALUES (1, 'a', 1);"))
        .await
        .unwrap();
    let (_source, mut stream, mut got) = open_after_snapshot(&n).await;
    write_and_read(&c, &format!(
        "INSERT INTO {t} VALUES (2, 'b', 2); ALTER TABLE {t} ADD COLUMN note text; INSERT INTO {t} VALUES (3, 'c', 3, 'hello');"
    ), &mut stream, &mut got).await;
    let last = got.iter().rev().find(|b| b.batch.num_rows() > 0).unwrap();
    assert_eq!(last.batch.schema().field(3).name(), "note");
    assert_eq!(
        last.batch
            .column_by_name("note")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "hello"
    );
    assert_eq!(
        ops(&batches(&got)).iter().map(|o| o.1).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // Dropping a column is incompatible.
    c.batch_execute(&format!(
        "ALTER TABLE {t} DROP COLUMN extra; INSERT INTO {t} VALUES (4, 'd', 'x');"
    ))
    .await
    .unwrap();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .unwrap()
            .unwrap()
        {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&err, Error::SchemaMismatch { message, .. } if message.contains("\"extra\"")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_slot_or_publication_is_a_clear_error_when_not_created() {
    let n = Names::new("missing");
    let c = client().await;
    c.batch_execute(&format!(
        "CREATE TABLE {} (id int8 PRIMARY KEY, val text)",
        n.base
    ))
    .await
    .unwrap();
    let mut cfg = n.config();
    cfg.create_publication = false;
    let err = PostgresCdcSource::new(cfg.clone())
        .unwrap()
        .open(start(Mode::Stream, None))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "spec.source.publication"),
        "{err}"
    );
    cfg.create_publication = true;
    cfg.create_slot = false;
    let err = PostgresCdcSource::new(cfg)
        .unwrap()
        .open(start(Mode::Stream, None))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "spec.source.slot"),
        "{err}"
    );
    // An unsupported column type names the table and column.
    c.batch_execute(&format!("ALTER TABLE {} ADD COLUMN p point", n.base))
        .await
        .unwrap();
    let err = PostgresCdcSource::new(n.config())
        .unwrap()
        .open(start(Mode::Stream, None))
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains(&format!("table public.{} column \"p\"", n.base)),
        "{err}"
    );
}

/// Run `sql`, then read batches into `out` until the stream's position covers it; the WAL
/// position after it.
async fn write_and_read(
    c: &Client,
    sql: &str,
    stream: &mut PositionedStream,
    out: &mut Vec<PositionedBatch>,
) -> u64 {
    c.batch_execute(sql).await.unwrap();
    let lsn = current_lsn(c).await;
    read_until(stream, lsn, out).await;
    lsn
}

/// Wait (at most 30 s) until the slot's confirmed position reaches `lsn`.
async fn wait_for_slot(c: &Client, slot: &str, lsn: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while slot_lsn(c, slot).await < lsn {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was not advanced to {lsn} (the committed position)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn slot_lsn(c: &Client, slot: &str) -> u64 {
    let v: String = c
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    arcane_sources::postgres_cdc::Lsn::parse(&v).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_stops_the_worker_and_closes_its_connections() {
    let n = Names::new("drop");
    let c = client().await;
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text);
         INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 20000) g;",
        t = n.base
    ))
    .await
    .unwrap();
    let (proxy, through) = proxied().await;
    let mut cfg = n.config();
    cfg.connection = through;
    cfg.batch_rows = 100;
    let mut source = PostgresCdcSource::new(cfg).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let first = next_batch(&mut stream).await;
    let pos: PgPosition = first.position.decode("test").unwrap();
    assert!(
        pos.snapshot.is_some(),
        "the first batch is a snapshot chunk"
    );
    // Hold the server's answers and drain what was read: the worker then waits on a query
    // in the middle of the snapshot.
    proxy.pause(true);
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await
    {
        item.unwrap();
    }
    // Two: the snapshot's transaction, and the connection its pages are copied on.
    assert!(
        eventually(Duration::from_secs(5), || proxy.open_connections() == 2).await,
        "the worker holds two connections in the snapshot ({} open)",
        proxy.open_connections()
    );
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || proxy.open_connections() == 0).await,
        "the worker's connections are still open 5 s after its stream was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_dead_lettered_before_a_restart_is_neither_lost_nor_repeated() {
    let n = Names::new("dlq");
    let c = client().await;
    let t = n.base.clone();
    // 40 rows; 13 and 27 hold a NaN, which a numeric(10,2) column cannot carry.
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text, num numeric(10, 2));
         INSERT INTO {t} SELECT g, 'v' || g, CASE WHEN g IN (13, 27) THEN 'NaN'::numeric ELSE g END
         FROM generate_series(1, 40) g;"
    ))
    .await
    .unwrap();
    let mut cfg = n.config();
    cfg.batch_rows = 10;

    // Run 1: chunks 1-10 and 11-20 (13 dead-lettered); the sink committed the first chunk
    // and the first 5 rows of the second, then the process died. The dead letter travels
    // with the second chunk's end, so it was not committed.
    let mut source = PostgresCdcSource::new(cfg.clone()).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let b1 = next_batch(&mut stream).await;
    let b2 = next_batch(&mut stream).await;
    assert_eq!(b2.dead_letters.len(), 1, "row 13 is dead-lettered");
    drop(stream);
    let mut kept = vec![b1.batch.clone(), b2.batch.slice(0, 5)];
    let cp = Checkpoint {
        position: Some(b1.position.clone()),
        rows: 5,
    };

    // Run 2: resume; the rest of the snapshot, then a transaction of 20 rows (43 bad) that
    // arrives in two batches.
    let mut source = PostgresCdcSource::new(cfg.clone()).unwrap();
    let mut stream = source.open(start(Mode::Stream, Some(cp))).await.unwrap();
    let mut run2 = Vec::new();
    read_until(&mut stream, 0, &mut run2).await;
    let lsn = write_and_read(
        &c,
        &format!(
            "INSERT INTO {t} SELECT g, 'v' || g, CASE WHEN g = 43 THEN 'NaN'::numeric ELSE g END
         FROM generate_series(41, 60) g;"
        ),
        &mut stream,
        &mut run2,
    )
    .await;
    drop(stream);
    kept.extend(batches(&run2));
    let expected: Vec<i64> = (1..=60).filter(|i| ![13, 27, 43].contains(i)).collect();
    assert_eq!(
        ids_of(&kept),
        expected,
        "rows lost or repeated after the resume"
    );
    let letters = locators(&run2);
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert_eq!(
        letters[..2],
        ["snapshot primary key 13", "snapshot primary key 27"]
    );
    assert!(letters[2].starts_with("change at "), "{letters:?}");

    // Run 3: the sink committed up to the batch before the transaction and the first 5
    // rows of its first batch (row 43 among the records they span).
    let first_tx = run2
        .iter()
        .position(|b| ids_of(std::slice::from_ref(&b.batch)).contains(&41))
        .unwrap();
    assert!(run2[first_tx].dead_letters.len() == 1 && first_tx > 0);
    let mut kept: Vec<RecordBatch> = run2[..first_tx].iter().map(|b| b.batch.clone()).collect();
    kept.push(run2[first_tx].batch.slice(0, 5));
    let cp = Checkpoint {
        position: Some(run2[first_tx - 1].position.clone()),
        rows: 5,
    };
    let mut source = PostgresCdcSource::new(cfg).unwrap();
    let mut stream = source.open(start(Mode::Stream, Some(cp))).await.unwrap();
    let mut run3 = Vec::new();
    read_until(&mut stream, lsn, &mut run3).await;
    kept.extend(batches(&run3));
    let tx_ids: Vec<i64> = ids_of(&kept).into_iter().filter(|i| *i > 40).collect();
    assert_eq!(
        tx_ids,
        expected[expected.len() - 19..],
        "rows of the transaction lost or repeated"
    );
    assert_eq!(
        locators(&run3),
        letters[2..],
        "the transaction's dead letter, once"
    );
}

fn locators(batches: &[PositionedBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.dead_letters.iter().map(|l| l.locator.clone()))
        .collect()
}

/// A retry policy with short delays.
fn quick_retry(attempts: u32) -> arcane_core::RetryConfig {
    arcane_core::RetryConfig {
        max_attempts: attempts,
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        jitter: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_retried_and_the_budget_renews_after_progress() {
    let n = Names::new("lost");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text); INSERT INTO {t} VALUES (1, 'a');"
    ))
    .await
    .unwrap();
    let (proxy, through) = proxied().await;
    let mut cfg = n.config();
    cfg.connection = through;
    // One retry per outage: a budget that did not renew would be spent by the second cut.
    cfg.retry = quick_retry(2);
    let mut source = PostgresCdcSource::new(cfg).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, 0, &mut got).await;
    let accepted = proxy.accepted();
    for id in 2..6 {
        proxy.cut();
        write_and_read(
            &c,
            &format!("INSERT INTO {t} VALUES ({id}, 'v{id}')"),
            &mut stream,
            &mut got,
        )
        .await;
    }
    assert!(
        proxy.accepted() >= accepted + 4,
        "the worker reconnected after each of the 4 cuts"
    );
    assert_eq!(replay(&ops(&batches(&got))), table_state(&c, &t).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_in_the_middle_of_a_snapshot_batch_repeats_none_of_its_rows() {
    let n = Names::new("midcut");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text);
         INSERT INTO {t} SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 4000) g;"
    ))
    .await
    .unwrap();
    let (proxy, through) = proxied().await;
    let mut cfg = n.config();
    cfg.connection = through;
    cfg.batch_rows = 500;
    cfg.retry = quick_retry(5);
    // About 2 MB of rows at 1 MB/s: the cut lands while the second batch is being read.
    proxy.set_bandwidth(Some(1_000_000));
    let mut source = PostgresCdcSource::new(cfg).unwrap();
    let mut stream = source.open(start(Mode::Backfill, None)).await.unwrap();
    let mut got = vec![next_batch(&mut stream).await];
    tokio::time::sleep(Duration::from_millis(150)).await;
    let accepted = proxy.accepted();
    proxy.cut();
    proxy.set_bandwidth(None);
    while let Some(item) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("the backfill ends within 60 s")
    {
        got.push(item.unwrap());
    }
    assert!(
        proxy.accepted() > accepted,
        "the worker reconnected after the cut"
    );
    assert_eq!(
        ids_of(&batches(&got)),
        (1..=4000).collect::<Vec<i64>>(),
        "every row of the table once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_restart_after_the_retry_budget() {
    let n = Names::new("down");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text); INSERT INTO {t} VALUES (1, 'a');"
    ))
    .await
    .unwrap();
    let (proxy, through) = proxied().await;
    let mut cfg = n.config();
    cfg.connection = through;
    cfg.retry = quick_retry(3);
    let mut source = PostgresCdcSource::new(cfg.clone()).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, 0, &mut got).await;

    // The server goes away for good: three attempts, then a transient error with the cause.
    proxy.refuse(true);
    let accepted = proxy.accepted();
    proxy.cut();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the stream gave up within 30 s")
            .expect("the stream ends with an error")
        {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    let report = err.report();
    assert_eq!(err.exit_code(), ExitCode::Restart, "{report}");
    assert!(report.contains("gave up after 3 attempts"), "{report}");
    assert!(
        report.contains("connecting: "),
        "the last cause is kept: {report}"
    );
    assert_eq!(proxy.accepted() - accepted, 3, "3 connection attempts");

    // Opening against the unreachable server gives up the same way.
    let err = PostgresCdcSource::new(cfg)
        .unwrap()
        .open(start(Mode::Stream, None))
        .await
        .err()
        .unwrap();
    assert_eq!(err.exit_code(), ExitCode::Restart, "{}", err.report());
    assert!(
        err.report().contains("gave up after 3 attempts"),
        "{}",
        err.report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_attempt_disables_retries_even_after_progress() {
    let n = Names::new("once");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text); INSERT INTO {t} VALUES (1, 'a');"
    ))
    .await
    .unwrap();
    let (proxy, through) = proxied().await;
    let mut cfg = n.config();
    cfg.connection = through;
    cfg.retry = quick_retry(1);
    let mut source = PostgresCdcSource::new(cfg).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, 0, &mut got).await;
    let accepted = proxy.accepted();
    proxy.cut();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the stream ended within 30 s")
            .expect("the stream ends with an error")
        {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(err.exit_code(), ExitCode::Restart, "{}", err.report());
    assert_eq!(proxy.accepted(), accepted, "no reconnection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_retries_connecting_to_advance_the_slot() {
    let n = Names::new("ack");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text); INSERT INTO {t} VALUES (1, 'a');"
    ))
    .await
    .unwrap();
    let (proxy, through) = proxied().await;
    let mut cfg = n.config();
    cfg.connection = through;
    cfg.retry = quick_retry(6);
    let mut source = PostgresCdcSource::new(cfg).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, 0, &mut got).await;
    let lsn = write_and_read(
        &c,
        &format!("INSERT INTO {t} VALUES (2, 'b')"),
        &mut stream,
        &mut got,
    )
    .await;
    // The stream has stopped (the runner's last commit, after a drain, comes when its
    // replication connection is closed): the commit connects to advance the slot itself, and
    // the server refuses new connections for a moment.
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while walsender(&c, &t).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the walsender stayed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.refuse(true);
    let accepted = proxy.accepted();
    let checkpoint = Checkpoint::at(got.last().unwrap().position.clone());
    let (committed, ()) = tokio::join!(source.commit(&checkpoint), async {
        tokio::time::sleep(Duration::from_millis(120)).await;
        proxy.refuse(false);
    });
    committed.unwrap();
    assert!(
        proxy.accepted() - accepted >= 2,
        "a refused attempt, then a connection"
    );
    wait_for_slot(&c, &n.base, lsn).await;
}

/// A role dropped on drop.
struct Role(String);

impl Drop for Role {
    fn drop(&mut self) {
        // Its grants go first (DROP OWNED), else the role cannot be dropped.
        for sql in [
            format!("DROP OWNED BY {}", self.0),
            format!("DROP ROLE IF EXISTS {}", self.0),
        ] {
            let _ = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
                .arg(sql)
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_permission_and_missing_table_errors_are_fatal_at_once() {
    let n = Names::new("fatal");
    let c = client().await;
    let t = n.base.clone();
    // Retries would take seconds: the errors below must come at once.
    let patient = arcane_core::RetryConfig {
        max_attempts: 5,
        initial_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(2),
        jitter: false,
    };
    let open = |cfg: PostgresCdcSourceConfig| async move {
        let began = std::time::Instant::now();
        let err = PostgresCdcSource::new(cfg)
            .unwrap()
            .open(start(Mode::Stream, None))
            .await
            .err()
            .expect("open fails");
        assert!(
            began.elapsed() < Duration::from_millis(1500),
            "retried: {}",
            err.report()
        );
        assert_eq!(err.exit_code(), ExitCode::Fatal, "{}", err.report());
        err.report()
    };

    // A missing table.
    let mut cfg = n.config();
    cfg.retry = patient;
    let report = open(cfg.clone()).await;
    assert!(
        report.contains(&format!("table public.{t} does not exist"))
            && report.contains("spec.source.table"),
        "{report}"
    );

    // An unknown user.
    c.batch_execute(&format!("CREATE TABLE {t} (id int8 PRIMARY KEY, val text)"))
        .await
        .unwrap();
    let role = Role(format!("{t}_r"));
    let base: tokio_postgres::Config = conn().parse().unwrap();
    let host = match &base.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("a TCP host, not {other:?}"),
    };
    cfg.connection = format!(
        "host={host} port={} user={} dbname={}",
        base.get_ports().first().copied().unwrap_or(5432),
        role.0,
        base.get_dbname().unwrap_or("test")
    );
    let report = open(cfg.clone()).await;
    assert!(
        report.contains(&format!("role \"{}\" does not exist", role.0))
            && report.contains("check the user in spec.source.connection"),
        "{report}"
    );

    // A user without the REPLICATION attribute, then without SELECT, then one that may not
    // create the publication: each refused before anything is created, saying what to run.
    let r = &role.0;
    c.batch_execute(&format!("CREATE ROLE {r} LOGIN"))
        .await
        .unwrap();
    let report = open(cfg.clone()).await;
    assert!(
        report.contains(&format!(
            "user {r} has neither the REPLICATION attribute nor superuser"
        )) && report.contains(&format!("ALTER ROLE {r} REPLICATION")),
        "{report}"
    );
    c.batch_execute(&format!("ALTER ROLE {r} REPLICATION"))
        .await
        .unwrap();
    let report = open(cfg.clone()).await;
    assert!(
        report.contains(&format!("GRANT SELECT ON public.{t} TO {r}")),
        "{report}"
    );
    c.batch_execute(&format!("GRANT SELECT ON {t} TO {r}"))
        .await
        .unwrap();
    let report = open(cfg).await;
    assert!(
        report.contains(&format!("user {r} may not create it"))
            && report.contains(&format!("CREATE PUBLICATION {t} FOR TABLE public.{t}")),
        "{report}"
    );
    assert_eq!(
        server_objects(&c, &t).await,
        (0, 0),
        "something was created"
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

/// The open error of a source for `cfg`, which must be FATAL.
async fn refused(cfg: PostgresCdcSourceConfig) -> Error {
    let err = PostgresCdcSource::new(cfg)
        .unwrap()
        .open(start(Mode::Stream, None))
        .await
        .err()
        .expect("open is refused");
    assert_eq!(err.exit_code(), ExitCode::Fatal, "{}", err.report());
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_replica_identity_is_refused_unless_insert_only() {
    let n = Names::new("ident");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 NOT NULL, val text);
         INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 5) g;"
    ))
    .await
    .unwrap();
    // No key, REPLICA IDENTITY DEFAULT: refused, nothing created, the app's writes work.
    let err = refused(n.config()).await;
    let report = err.report();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "spec.source.table")
            && report.contains(&format!(
                "table public.{t} has no primary key and REPLICA IDENTITY DEFAULT"
            ))
            && report.contains(&format!("ALTER TABLE public.{t} REPLICA IDENTITY FULL"))
            && report.contains("insertOnly: true"),
        "{report}"
    );
    assert_eq!(
        server_objects(&c, &t).await,
        (0, 0),
        "something was created"
    );
    c.batch_execute(&format!(
        "UPDATE {t} SET val = 'x' WHERE id = 1; DELETE FROM {t} WHERE id = 2"
    ))
    .await
    .expect("the application's UPDATE/DELETE fails");

    // REPLICA IDENTITY NOTHING, even with a primary key: refused.
    c.batch_execute(&format!(
        "ALTER TABLE {t} ADD PRIMARY KEY (id); ALTER TABLE {t} REPLICA IDENTITY NOTHING"
    ))
    .await
    .unwrap();
    let report = refused(n.config()).await.report();
    assert!(report.contains("has REPLICA IDENTITY NOTHING"), "{report}");
    assert_eq!(server_objects(&c, &t).await, (0, 0));

    // An existing publication that publishes its updates (the app's UPDATE fails already):
    // refused, saying so; the publication is not the run's to drop.
    c.batch_execute(&format!("CREATE PUBLICATION {t} FOR TABLE {t}"))
        .await
        .unwrap();
    let err = c
        .batch_execute(&format!("UPDATE {t} SET val = 'y' WHERE id = 1"))
        .await
        .expect_err("PostgreSQL refuses the UPDATE");
    assert!(
        err.to_string().contains("replica identity")
            || format!("{err:?}").contains("replica identity"),
        "{err:?}"
    );
    // (Even with insertOnly, which alone would accept the table.)
    let mut insert_only = n.config();
    insert_only.insert_only = true;
    let report = refused(insert_only).await.report();
    assert!(
        report.contains(&format!("publication {t} publishes updates or deletes of table public.{t}, which has no replica identity")),
        "{report}"
    );
    assert_eq!(server_objects(&c, &t).await, (0, 1));
    c.batch_execute(&format!("DROP PUBLICATION {t}"))
        .await
        .unwrap();

    // insertOnly: the publication publishes inserts only, the app's writes keep working and
    // the stream carries the snapshot and the inserts.
    let mut cfg = n.config();
    cfg.insert_only = true;
    let mut source = PostgresCdcSource::new(cfg).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, current_lsn(&c).await, &mut got).await;
    let row = c
        .query_one(
            "SELECT pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = $1",
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, bool>(0),
            row.get::<_, bool>(1),
            row.get::<_, bool>(2)
        ),
        (true, false, false)
    );
    c.batch_execute(&format!(
        "UPDATE {t} SET val = 'z' WHERE id = 3; DELETE FROM {t} WHERE id = 4; INSERT INTO {t} VALUES (6, 'new')"
    ))
    .await
    .expect("the application's writes fail");
    let upto = current_lsn(&c).await;
    read_until(&mut stream, upto, &mut got).await;
    let rows = ops(&batches(&got));
    assert!(rows.iter().filter(|r| r.0 == "r").count() == 4, "{rows:?}");
    assert!(
        rows.contains(&("c".to_string(), 6, Some("new".to_string()))),
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r.0 == "r" || r.0 == "c"), "{rows:?}");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_creating_the_publication_drops_it_but_not_what_others_created() {
    let n = Names::new("undo");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!("CREATE TABLE {t} (id int8 PRIMARY KEY, val text)"))
        .await
        .unwrap();
    // A slot of the same name in another database: this database's run sees no slot of its
    // own, creates its publication, and then cannot create the slot.
    let other = conn().replace("dbname=test", "dbname=postgres");
    let (o, connection) = tokio_postgres::connect(&other, NoTls).await.unwrap();
    tokio::spawn(connection);
    o.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&t],
    )
    .await
    .unwrap();
    let err = refused(n.config()).await;
    assert!(err.report().contains("already exists"), "{}", err.report());
    // The publication this run created is gone; the other database's slot is still there.
    assert_eq!(server_objects(&c, &t).await, (1, 0));
}

/// A table of `rows` rows whose row 7 holds a numeric NaN and row 30 the date `infinity`,
/// values the output types cannot carry (they go to the dead letters).
async fn table_with_bad_values(c: &Client, t: &str, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text, num numeric(10, 2), d date);
         INSERT INTO {t} SELECT g, 'v' || g, CASE WHEN g = 7 THEN 'NaN'::numeric ELSE g END,
           CASE WHEN g = 30 THEN 'infinity'::date ELSE DATE '2026-01-01' + g::int END
         FROM generate_series(1, {rows}) g;"
    ))
    .await
    .unwrap();
}

/// `batch` with `_commit_ts` in the zone `+00:00` instead of `UTC` (the same instants): the
/// pretty printer cannot format a named zone without chrono-tz.
fn printable(batch: &RecordBatch) -> RecordBatch {
    let Some(i) = batch.schema().index_of("_commit_ts").ok() else {
        return batch.clone();
    };
    let ts = batch
        .column(i)
        .as_primitive::<arrow_array::types::TimestampMicrosecondType>()
        .clone()
        .with_timezone("+00:00");
    let mut fields: Vec<arrow_schema::Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[i] = fields[i].clone().with_data_type(ts.data_type().clone());
    let mut columns = batch.columns().to_vec();
    columns[i] = std::sync::Arc::new(ts);
    RecordBatch::try_new(
        std::sync::Arc::new(arrow_schema::Schema::new(fields)),
        columns,
    )
    .unwrap()
}

/// The rows as sorted table lines.
fn sorted_lines(batches: &[RecordBatch]) -> Vec<String> {
    let printable: Vec<RecordBatch> = batches.iter().map(printable).collect();
    let mut lines = arcane_core::testing::pretty_lines(&printable);
    assert!(!lines[0].starts_with("<cannot format"), "{lines:?}");
    lines.sort();
    lines
}

/// The source with [`printable`] batches, for the conformance suite (which compares
/// pretty-printed rows).
#[derive(Debug)]
struct Printable(PostgresCdcSource);

#[async_trait::async_trait]
impl Source for Printable {
    fn name(&self) -> String {
        self.0.name()
    }

    async fn open(&mut self, start: SourceStart) -> arcane_core::Result<PositionedStream> {
        let stream = self.0.open(start).await?;
        Ok(stream
            .map(|item| {
                item.map(|mut b| {
                    b.batch = printable(&b.batch);
                    b
                })
            })
            .boxed())
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> arcane_core::Result<()> {
        self.0.commit(checkpoint).await
    }
}

/// [`Printable`] without `_lsn`: a fresh start takes a new snapshot, whose rows carry its own
/// LSN, so runs that each start afresh compare on the rows themselves.
#[derive(Debug)]
struct WithoutSnapshotLsn(PostgresCdcSource);

#[async_trait::async_trait]
impl Source for WithoutSnapshotLsn {
    fn name(&self) -> String {
        self.0.name()
    }

    async fn open(&mut self, start: SourceStart) -> arcane_core::Result<PositionedStream> {
        let stream = self.0.open(start).await?;
        Ok(stream
            .map(|item| {
                item.map(|mut b| {
                    let batch = printable(&b.batch);
                    let keep: Vec<usize> = (0..batch.num_columns())
                        .filter(|i| batch.schema().field(*i).name() != "_lsn")
                        .collect();
                    b.batch = batch.project(&keep).unwrap();
                    b
                })
            })
            .boxed())
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> arcane_core::Result<()> {
        self.0.commit(checkpoint).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_conformance_suite_passes() {
    let n = Names::new("conf");
    let c = client().await;
    table_with_bad_values(&c, &n.base, 95).await;
    let mut cfg = n.config();
    cfg.batch_rows = 20;
    // What the suite reads: every row but the two that cannot be converted.
    let mut source = PostgresCdcSource::new(cfg.clone()).unwrap();
    let read: Vec<PositionedBatch> = source
        .open(start(Mode::Backfill, None))
        .await
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
        .await;
    assert_eq!(
        sorted_lines(&batches(&read)).len(),
        93 + 4,
        "93 rows and the table's frame"
    );
    assert_eq!(
        locators(&read),
        ["snapshot primary key 7", "snapshot primary key 30"]
    );
    arcane_core::testing::conformance::source_resumes_exactly(|| {
        Box::new(Printable(PostgresCdcSource::new(cfg.clone()).unwrap()))
    })
    .await;
    arcane_core::testing::conformance::source_survives_stop_and_abort(|| {
        Box::new(WithoutSnapshotLsn(
            PostgresCdcSource::new(cfg.clone()).unwrap(),
        ))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_at_every_position_of_the_snapshot_and_the_changes_loses_and_repeats_nothing() {
    let n = Names::new("every");
    let c = client().await;
    let t = n.base.clone();
    table_with_bad_values(&c, &t, 45).await;
    let mut cfg = n.config();
    cfg.batch_rows = 10;
    let mut source = PostgresCdcSource::new(cfg.clone()).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let mut all = Vec::new();
    read_until(&mut stream, 0, &mut all).await;
    // A transaction split across three batches (row 50 bad), one that updates and deletes,
    // and a last insert.
    let lsn = write_and_read(&c, &format!(
        "INSERT INTO {t} SELECT g, 'v' || g, CASE WHEN g = 50 THEN 'NaN'::numeric ELSE g END, NULL
         FROM generate_series(46, 70) g;
         BEGIN; UPDATE {t} SET val = 'upd' WHERE id IN (1, 2, 3); DELETE FROM {t} WHERE id = 4; COMMIT;
         INSERT INTO {t} VALUES (71, 'x', 1, NULL);"
    ), &mut stream, &mut all).await;
    drop(stream);
    // The table without the rows that went to the dead letters.
    let mut expected_state = table_state(&c, &t).await;
    for bad in [7, 30, 50] {
        expected_state.remove(&bad);
    }
    let full = sorted_lines(&batches(&all));
    assert_eq!(replay(&ops(&batches(&all))), expected_state);
    assert_eq!(locators(&all).len(), 3, "{:?}", locators(&all));

    let mut resumes = 0;
    for i in 0..all.len() - 1 {
        let next = all[i + 1].batch.num_rows();
        let mut cuts = vec![0];
        if next > 1 {
            cuts.push(next / 2);
        }
        for cut in cuts {
            let cp = Checkpoint {
                position: Some(all[i].position.clone()),
                rows: cut as u64,
            };
            let mut source = PostgresCdcSource::new(cfg.clone()).unwrap();
            let mut stream = source
                .open(start(Mode::Stream, Some(cp.clone())))
                .await
                .unwrap();
            let mut rest = Vec::new();
            read_until(&mut stream, lsn, &mut rest).await;
            drop(stream);
            resumes += 1;
            let mut kept = batches(&all[..=i]);
            kept.push(all[i + 1].batch.slice(0, cut));
            kept.extend(batches(&rest));
            // Replaying what was kept gives the table: nothing lost, nothing twice.
            assert_eq!(replay(&ops(&kept)), expected_state, "resumed from {cp:?}");
            let in_changes = all[i]
                .position
                .decode::<PgPosition>("test")
                .unwrap()
                .snapshot
                .is_none();
            if in_changes {
                // After the snapshot the same rows come back, and the dead letters of the
                // records after the position, once.
                assert_eq!(sorted_lines(&kept), full, "resumed from {cp:?}");
                assert_eq!(
                    locators(&rest),
                    locators(&all[i + 1..]),
                    "resumed from {cp:?}"
                );
            }
        }
    }
    assert!(resumes >= 10, "{resumes} resumes");
}

/// `_unchanged_toast` of each row: `None` when null, else the column names.
fn unchanged_toast(batches: &[RecordBatch]) -> Vec<Option<Vec<String>>> {
    let mut out = Vec::new();
    for b in batches {
        let list = b
            .column_by_name(arcane_sources::postgres_cdc::UNCHANGED_TOAST_COLUMN)
            .unwrap()
            .as_list::<i32>();
        for i in 0..b.num_rows() {
            out.push((!list.is_null(i)).then(|| {
                let names = list.value(i);
                let names = names.as_string::<i32>();
                names.iter().map(|n| n.unwrap().to_string()).collect()
            }));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_toasted_value_is_named_in_unchanged_toast_never_a_silent_null() {
    let n = Names::new("toast");
    let c = client().await;
    let t = n.base.clone();
    // 22 400 characters of md5 hex: incompressible enough to be stored out of line.
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text, small int4, big text);
         INSERT INTO {t} VALUES (1, 'a', 0, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 700)));"
    ))
    .await
    .unwrap();
    // Really TOASTed out of line: the heap tuple is far smaller than the value.
    let toasted: bool = c
        .query_one(
            &format!("SELECT pg_column_size(big) < octet_length(big) / 2 OR (SELECT reltoastrelid <> 0 AND pg_relation_size(reltoastrelid) > 8192 FROM pg_class WHERE oid = '{t}'::regclass) FROM {t}"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(toasted, "the value was not TOASTed");
    let big: String = c
        .query_one(&format!("SELECT big FROM {t} WHERE id = 1"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(big.len(), 22_400);
    let mut source = PostgresCdcSource::new(n.config()).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, current_lsn(&c).await, &mut got).await;
    // An update of another column, under REPLICA IDENTITY DEFAULT, then under FULL.
    c.batch_execute(&format!(
        "UPDATE {t} SET small = 1 WHERE id = 1;
         ALTER TABLE {t} REPLICA IDENTITY FULL;
         UPDATE {t} SET small = 2 WHERE id = 1;"
    ))
    .await
    .unwrap();
    read_until(&mut stream, current_lsn(&c).await, &mut got).await;
    let all = batches(&got);
    let rows = ops(&all);
    let bigs: Vec<Option<usize>> = all
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name("big").unwrap().as_string::<i32>();
            (0..b.num_rows())
                .map(|i| (!col.is_null(i)).then(|| col.value(i).len()))
                .collect::<Vec<_>>()
        })
        .collect();
    let ops_only: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ops_only, ["r", "u", "u"]);
    // The snapshot row has the value; the first update cannot have it and says so; the
    // second (REPLICA IDENTITY FULL) has it.
    assert_eq!(bigs, [Some(22_400), None, Some(22_400)]);
    assert_eq!(
        unchanged_toast(&all),
        [None, Some(vec!["big".to_string()]), None]
    );
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_table_is_refused_before_anything_is_created() {
    let n = Names::new("parted");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text) PARTITION BY RANGE (id)"
    ))
    .await
    .unwrap();
    let report = refused(n.config()).await.report();
    assert!(
        report.contains(&format!("public.{t} is not a plain table")),
        "{report}"
    );
    assert_eq!(server_objects(&c, &t).await, (0, 0));
}

/// The walsender holding `slot` and its application name, if a replication connection is open.
async fn walsender(c: &Client, slot: &str) -> Option<(i32, String)> {
    c.query_opt(
        "SELECT r.pid, r.application_name FROM pg_replication_slots s \
         JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1",
        &[&slot],
    )
    .await
    .unwrap()
    .map(|row| (row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_stream_over_a_replication_connection_that_survives_being_terminated() {
    let n = Names::new("walsender");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text); INSERT INTO {t} VALUES (1, 'a');"
    ))
    .await
    .unwrap();
    let (mut source, mut stream, mut got) = open_after_snapshot(&n).await;
    let lsn = write_and_read(
        &c,
        &format!("INSERT INTO {t} VALUES (2, 'b'); UPDATE {t} SET val = 'a2' WHERE id = 1"),
        &mut stream,
        &mut got,
    )
    .await;
    // A walsender streams the slot to this source (not a polling SQL session).
    let (pid, application) = walsender(&c, &t)
        .await
        .expect("no walsender holds the slot");
    assert!(application.starts_with("arcane "), "{application}");
    // Committing confirms the position through the open replication connection: the slot
    // moves while the same walsender still holds it (pg_replication_slot_advance cannot move
    // an active slot).
    let last = got.last().unwrap().position.clone();
    source.commit(&Checkpoint::at(last)).await.unwrap();
    wait_for_slot(&c, &t, lsn).await;
    assert_eq!(walsender(&c, &t).await.map(|w| w.0), Some(pid));
    // The server ends the walsender (an administrator, a failover): the source reconnects
    // and resumes, losing and repeating nothing.
    c.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    write_and_read(&c, &format!(
        "INSERT INTO {t} VALUES (3, 'c'); DELETE FROM {t} WHERE id = 2; INSERT INTO {t} VALUES (4, 'd')"
    ), &mut stream, &mut got).await;
    let (again, _) = walsender(&c, &t)
        .await
        .expect("no walsender after the reconnect");
    assert_ne!(again, pid, "a new replication connection");
    assert_eq!(replay(&ops(&batches(&got))), table_state(&c, &t).await);
    let changes: Vec<(String, i64)> = ops(&batches(&got))
        .into_iter()
        .map(|(op, id, _)| (op, id))
        .collect();
    assert_eq!(
        changes,
        [("r", 1), ("c", 2), ("u", 1), ("c", 3), ("d", 2), ("c", 4)]
            .map(|(op, id)| (op.to_string(), id))
    );
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_writes_a_logical_message_into_the_captured_databases_wal() {
    let n = Names::new("heartbeat");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text); INSERT INTO {t} VALUES (1, 'a');"
    ))
    .await
    .unwrap();
    // A second slot (dropped with the test's names) sees every message written to the WAL.
    let watch = format!("{t}_watch");
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
        &[&watch],
    )
    .await
    .unwrap();
    let mut cfg = n.config();
    cfg.heartbeat_interval = Some(Duration::from_millis(200));
    let mut source = PostgresCdcSource::new(cfg).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, 0, &mut got).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_logical_slot_peek_changes($1, NULL, NULL) \
                 WHERE data LIKE 'message: transactional: 0 prefix: arcane.heartbeat%'",
                &[&watch],
            )
            .await
            .unwrap()
            .get(0);
        if seen >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{seen} heartbeats in the WAL after 30 s at one per 200 ms"
        );
        // Take what the stream hands on (positions), as the runner would.
        while let Ok(Some(b)) =
            tokio::time::timeout(Duration::from_millis(200), stream.next()).await
        {
            got.push(b.unwrap());
        }
    }
    // The messages are not rows: only the snapshot's one row came out.
    drop(stream);
    assert_eq!(ids_of(&batches(&got)), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_is_a_lost_connection_and_nothing_is_lost() {
    let n = Names::new("hang");
    let c = client().await;
    let t = n.base.clone();
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int8 PRIMARY KEY, val text); INSERT INTO {t} VALUES (1, 'a');"
    ))
    .await
    .unwrap();
    let (proxy, through) = proxied().await;
    let mut cfg = n.config();
    cfg.connection = through;
    cfg.idle_timeout = Duration::from_secs(2);
    cfg.retry = quick_retry(20);
    let mut source = PostgresCdcSource::new(cfg).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, 0, &mut got).await;
    let accepted = proxy.accepted();
    // The server's answers stop (held by the proxy, connections left open) for longer than
    // idleTimeout, while the table changes; then they flow again.
    proxy.pause(true);
    c.batch_execute(&format!("INSERT INTO {t} VALUES (2, 'b')"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.pause(false);
    write_and_read(
        &c,
        &format!("INSERT INTO {t} VALUES (3, 'c')"),
        &mut stream,
        &mut got,
    )
    .await;
    assert!(
        proxy.accepted() > accepted,
        "the silent connection was given up and a new one opened"
    );
    assert_eq!(replay(&ops(&batches(&got))), table_state(&c, &t).await);
    assert_eq!(ids_of(&batches(&got)), vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_numerics_and_composite_keys_are_read_from_binary_values_as_the_server_prints_them()
 {
    let n = Names::new("binnum");
    let c = client().await;
    let t = &n.base;
    // A key of text (with every character a row's text quotes), timestamptz (read as text)
    // and int2 (read from its binary value); numerics of every shape of weight and scale,
    // edges included; row 77 holds a NaN, which no numeric(p, s) carries.
    c.batch_execute(&format!(
        "CREATE TABLE {t} (k1 text, k2 timestamptz, k3 int2, n38 numeric(38,10), n5 numeric(5,0),
           n12 numeric(12,2), n4 numeric(4,4), bad numeric(6,1), PRIMARY KEY (k1, k2, k3));
         INSERT INTO {t}
         SELECT (ARRAY['', 'a b', 'x,y', 'q\"t', 'b\\s', '(p)', 'plain', 'ü'])[1 + g % 8],
           timestamptz '2026-01-01 00:00:00.5+00' + (g % 5) * interval '1 hour', g,
           round(((random() * 2 - 1) * 10 ^ (g % 29))::numeric, 10),
           round((random() * 199998 - 99999)::numeric),
           round(((random() * 2 - 1) * 10 ^ (g % 11))::numeric, 2),
           round((random() * 1.9998 - 0.9999)::numeric, 4),
           CASE WHEN g = 77 THEN 'NaN'::numeric ELSE 1.5 END
         FROM generate_series(1, 300) g;
         INSERT INTO {t} VALUES
           ('edge', now(), 1001, 9999999999999999999999999999.9999999999, 99999, 9999999999.99, 0.9999, 0),
           ('edge', now(), 1002, -9999999999999999999999999999.9999999999, -99999, -9999999999.99, -0.9999, 0),
           ('edge', now(), 1003, 0, 0, 0, 0, 0),
           ('edge', now(), 1004, 0.0000000001, 10000, 0.01, 0.0001, 0),
           ('edge', now(), 1005, 100000000000000000000, 1, 100000000, -0.0001, 0);"
    ))
    .await
    .unwrap();
    let mut cfg = n.config();
    cfg.batch_rows = 16; // 20 pages, each resuming after a composite key
    let mut source = PostgresCdcSource::new(cfg).unwrap();
    let mut stream = source.open(start(Mode::Stream, None)).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, 0, &mut got).await;
    drop(stream);

    let numerics = ["n38", "n5", "n12", "n4"];
    let mut read = BTreeMap::new();
    for b in batches(&got) {
        let k3 = b.column_by_name("k3").unwrap();
        let k3 = k3.as_primitive::<arrow_array::types::Int16Type>();
        for row in 0..b.num_rows() {
            let values: Vec<String> = numerics
                .iter()
                .map(|name| {
                    let col = b.column_by_name(name).unwrap();
                    col.as_primitive::<arrow_array::types::Decimal128Type>()
                        .value_as_string(row)
                })
                .collect();
            assert!(
                read.insert(k3.value(row), values).is_none(),
                "row {row} repeated"
            );
        }
    }
    let mut want = BTreeMap::new();
    for r in c
        .query(
            &format!("SELECT k3, n38::text, n5::text, n12::text, n4::text FROM {t} WHERE k3 <> 77"),
            &[],
        )
        .await
        .unwrap()
    {
        want.insert(
            r.get::<_, i16>(0),
            (1..=4).map(|i| r.get::<_, String>(i)).collect::<Vec<_>>(),
        );
    }
    assert_eq!(read.len(), 304);
    assert_eq!(read, want);
    // The dead letter is located by its key as the server prints the row.
    c.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let row: String = c
        .query_one(
            &format!("SELECT ROW(k1, k2, k3)::text FROM {t} WHERE k3 = 77"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locators(&got), [format!("snapshot primary key {row}")]);
}

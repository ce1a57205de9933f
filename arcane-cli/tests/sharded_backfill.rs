//! Sharded backfills end to end without a cluster: `N` `arcane` processes started with
//! `JOB_COMPLETION_INDEX=0..N-1` on one spec (as the pods of a Kubernetes Indexed Job), killed
//! with SIGKILL at random moments and restarted, then the output compared with the input:
//! every record exactly once, the backfill completed (for `overwrite`, the generation switched)
//! exactly once and only after every shard finished, readers seeing the old data until then.
//! Also: more shards than files, an index out of range, a kind that cannot shard, and two
//! processes of the same index at once.

#![allow(clippy::print_stderr)] // the kill schedule's seed, to reproduce a failure

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arcane_test_support::Store;
use futures::TryStreamExt;
use nix::sys::signal::Signal;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Value, json};
use support::*;

/// Lines per landed file; file `k` holds ids `k*LINES..(k+1)*LINES`. With files of 50 rows
/// a shard commits dozens of times, so that random kills land mid-run.
const LINES: u64 = 1000;

fn file_lines(k: u64) -> String {
    (k * LINES..(k + 1) * LINES)
        .map(|i| format!("{{\"id\": {i}, \"name\": \"n{i}\"}}\n"))
        .collect()
}

/// A blob-landing spec reading `landing` into `sink`, split into `shards`, overwriting.
fn landing_spec(
    landing: &str,
    sink: &str,
    shards: u32,
    behavior: &str,
    options: &BTreeMap<String, String>,
) -> Value {
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "BlobLandingStream",
        "metadata": {"name": "orders"},
        "spec": {
            "source": {
                "url": landing,
                "format": "ndjson",
                "suffix": ".ndjson",
                "storageOptions": options,
                "schema": [
                    {"name": "id", "type": "int64", "nullable": false},
                    {"name": "name", "type": "utf8"}
                ]
            },
            "sink": {
                "url": sink,
                "storageOptions": options,
                "backfillBehavior": behavior,
                "rolling": {"maxRowsPerFile": 50}
            },
            "backfillShards": shards,
            "rowsPerGroup": 50,
            "groupingIntervalSeconds": 1
        }
    })
}

fn shard_env(index: u32) -> String {
    index.to_string()
}

/// Start shard `index` of backfill `id`; `pause` makes it stop forever before completing the
/// backfill, creating `marker` when it gets there.
fn start_shard(
    work: &Path,
    spec: &Value,
    id: &str,
    index: u32,
    env: &[(String, String)],
    pause: Option<&Path>,
) -> Arcane {
    let index = shard_env(index);
    let mut vars: Vec<(&str, &str)> = vec![("JOB_COMPLETION_INDEX", index.as_str())];
    vars.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let marker;
    if let Some(m) = pause {
        marker = m.to_string_lossy().into_owned();
        vars.push(("ARCANE_SINK_PAUSE_AT", "before-shard-switch"));
        vars.push(("ARCANE_SINK_PAUSE_MARKER", marker.as_str()));
    }
    Arcane::run_with_env(work, spec, &["--backfill", "--backfill-id", id], &vars)
}

/// The ids committed under `url`, sorted.
fn committed_ids(url: &str, options: &BTreeMap<String, String>) -> Vec<i64> {
    let mut ids: Vec<i64> = rows_as_json(&read_committed(url, options))
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    ids.sort_unstable();
    ids
}

/// [`committed_ids`] from async code.
async fn committed_ids_async(url: &str, options: &BTreeMap<String, String>) -> Vec<i64> {
    let batches = arcane_sinks::read_committed(url, options).await.unwrap();
    let mut ids: Vec<i64> = rows_as_json(&batches)
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    ids.sort_unstable();
    ids
}

/// `actual` holds every id of `expected` exactly once; the message counts what is missing and
/// what is repeated (the lists are long).
fn assert_exactly_once(actual: &[i64], expected: std::ops::Range<i64>) {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for id in actual {
        *counts.entry(*id).or_default() += 1;
    }
    let missing: Vec<i64> = expected
        .clone()
        .filter(|i| !counts.contains_key(i))
        .collect();
    let repeated: Vec<(i64, usize)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, n)| (*i, *n))
        .collect();
    let foreign: Vec<i64> = counts
        .keys()
        .filter(|i| !expected.contains(i))
        .copied()
        .collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && foreign.is_empty(),
        "{} missing (first {:?}), {} repeated (first {:?}), {} unexpected (first {:?})",
        missing.len(),
        &missing[..missing.len().min(5)],
        repeated.len(),
        &repeated[..repeated.len().min(5)],
        foreign.len(),
        &foreign[..foreign.len().min(5)],
    );
}

/// The stream's manifests (not the shards') of the dataset at `prefix` in `store`.
async fn stream_manifests(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<Value> {
    let dir = object_store::path::Path::from(format!("{prefix}/_arcane/manifests"));
    let mut metas: Vec<_> = store.list(Some(&dir)).try_collect().await.unwrap();
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    let mut out = Vec::new();
    for m in metas {
        let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        out.push(serde_json::from_slice(&bytes).unwrap());
    }
    out
}

/// How many of `manifests` complete backfill `id`.
fn completions(manifests: &[Value], id: &str) -> usize {
    manifests
        .iter()
        .filter(|m| m["action"] == "completeBackfill" && m["state"]["backfill"]["id"] == id)
        .count()
}

/// A small xorshift generator: random kill moments, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        // xorshift needs a non-zero state.
        let seed = arcane_test_support::rng::seed_from_env("ARCANE_TEST_SEED") | 1;
        eprintln!("kill schedule seed (ARCANE_TEST_SEED): {seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Run shards `0..shards` at once, SIGKILL each at a random moment (at most `kills` times
/// each: once its lineage holds a random number of manifests more than when it started,
/// `commits(index)` counting them) and restart it, all with the switch paused; return once
/// every shard has exited 0 or is paused before the switch (the paused ones, still running),
/// and how many kills landed before the shard finished.
fn run_shards_with_kills(
    work: &Path,
    spec: &Value,
    id: &str,
    shards: u32,
    kills: u32,
    env: &[(String, String)],
    commits: impl Fn(u32) -> usize,
) -> (Vec<(u32, Arcane)>, u32) {
    let mut landed = 0;
    let mut rng = Rng::new();
    let markers = tempfile::tempdir().unwrap();
    let marker = |i: u32, n: u32| markers.path().join(format!("paused-{i}-{n}"));
    let mut runs: Vec<u32> = vec![0; shards as usize];
    let mut running: Vec<Option<(Arcane, usize)>> = (0..shards)
        .map(|i| {
            let kill_at = commits(i) + 1 + rng.below(30) as usize;
            Some((
                start_shard(work, spec, id, i, env, Some(&marker(i, 0))),
                kill_at,
            ))
        })
        .collect();
    let mut kills_left: Vec<u32> = vec![kills; shards as usize];
    let mut paused = Vec::new();
    let start = Instant::now();
    while running.iter().any(Option::is_some) {
        assert!(
            start.elapsed() < WAIT,
            "shards did not finish within {WAIT:?}"
        );
        for i in 0..shards {
            let slot = &mut running[i as usize];
            let Some((proc_, kill_at)) = slot.take() else {
                continue;
            };
            if marker(i, runs[i as usize]).exists() {
                paused.push((i, proc_));
                continue;
            }
            if kills_left[i as usize] > 0 && commits(i) >= kill_at {
                proc_.signal(Signal::SIGKILL);
                let exit = proc_.wait();
                kills_left[i as usize] -= 1;
                if exit.code == 0 {
                    // It finished before the kill landed.
                    continue;
                }
                landed += 1;
                runs[i as usize] += 1;
                let kill_at = commits(i) + 1 + rng.below(30) as usize;
                *slot = Some((
                    start_shard(work, spec, id, i, env, Some(&marker(i, runs[i as usize]))),
                    kill_at,
                ));
                continue;
            }
            *slot = Some((proc_, kill_at));
        }
        // Shards that exited on their own must have exited 0.
        for i in 0..shards {
            let slot = &mut running[i as usize];
            if let Some((p, k)) = slot.take() {
                match p.try_exit() {
                    Ok(exit) => {
                        assert_eq!(exit.code, 0, "shard {i} failed: {:#?}", exit.lines);
                        assert_shard_logs(&exit, i, shards);
                    }
                    Err(p) => *slot = Some((p, k)),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (paused, landed)
}

/// Every log line of a shard names its shard and the shard count.
fn assert_shard_logs(exit: &Exit, index: u32, shards: u32) {
    let logs = exit.logs();
    assert!(!logs.is_empty());
    for l in &logs {
        assert_eq!(l["shard"], index, "{l}");
        assert_eq!(l["shards"], shards, "{l}");
    }
}

/// The whole scenario on `store`: old data, a sharded overwrite backfill with random kills,
/// readers seeing the old data until the switch, then every record exactly once.
async fn sharded_overwrite_with_kills(store: Store, files: u64, shards: u32, kills: u32) {
    for k in 0..files {
        store
            .put(
                &format!("landing/{k:04}.ndjson"),
                file_lines(k).into_bytes(),
            )
            .await;
    }
    store
        .put("old/old.ndjson", file_lines(1000).into_bytes())
        .await;
    let options = store.options();
    let sink = store.url_of("out/orders");
    let env: Vec<(String, String)> = Vec::new();
    let work = tempfile::tempdir().unwrap();
    let work_path = work.path().to_path_buf();

    // The dataset before: one unsharded backfill of the old file.
    let old_spec = landing_spec(&store.url_of("old/"), &sink, 1, "overwrite", &options);
    let exit = tokio::task::spawn_blocking({
        let (w, s) = (work_path.clone(), old_spec.clone());
        move || Arcane::run(&w, &s, &["--backfill", "--backfill-id", "old"]).wait()
    })
    .await
    .unwrap();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    let old_ids: Vec<i64> = (1000 * LINES as i64..1001 * LINES as i64).collect();
    assert_eq!(committed_ids_async(&sink, &options).await, old_ids);

    let prefix = match &store {
        Store::Local(_) => {
            let dir = store.url_of("out/orders");
            dir.trim_start_matches("file://")
                .trim_start_matches('/')
                .to_string()
        }
        _ => "out/orders".to_string(),
    };
    let objects: Arc<dyn ObjectStore> = match &store {
        Store::Local(_) => Arc::new(object_store::local::LocalFileSystem::new()),
        _ => store.object_store(),
    };
    let spec = landing_spec(
        &store.url_of("landing/"),
        &sink,
        shards,
        "overwrite",
        &options,
    );
    let (paused, landed) = tokio::task::spawn_blocking({
        let (w, s, e) = (work_path.clone(), spec.clone(), env.clone());
        let (objects, prefix) = (objects.clone(), prefix.clone());
        let handle = tokio::runtime::Handle::current();
        move || {
            let commits = |i: u32| {
                let dir = object_store::path::Path::from(format!(
                    "{prefix}/_arcane/shards/b1-of-{shards}/{i:04}/_arcane/manifests"
                ));
                handle.block_on(async {
                    objects
                        .list(Some(&dir))
                        .try_collect::<Vec<_>>()
                        .await
                        .map_or(0, |l| l.len())
                })
            };
            run_shards_with_kills(&w, &s, "b1", shards, kills, &e, commits)
        }
    })
    .await
    .unwrap();
    assert!(!paused.is_empty(), "no shard reached the switch");
    eprintln!(
        "{landed} kills landed while shards ran; {} shards paused before the switch",
        paused.len()
    );
    assert!(landed > 0, "no kill landed while a shard was running");

    // Every shard is done, the switch is not written: readers see the old data.
    assert_eq!(committed_ids_async(&sink, &options).await, old_ids);
    let text = show(&sink, &options);
    assert!(
        text.contains(&format!(
            "sharded backfill b1 ({shards} shards): in progress, {shards} of {shards} shards done"
        )),
        "{text}"
    );
    assert_eq!(
        completions(&stream_manifests(&objects, &prefix).await, "b1"),
        0
    );

    // The paused shards are killed (as a node loss would) and restarted: exactly one of the
    // restarts completes the backfill; every one exits 0.
    for (_, p) in &paused {
        p.signal(Signal::SIGKILL);
    }
    let restarted: Vec<u32> = paused.iter().map(|(i, _)| *i).collect();
    drop(paused);
    let exits = tokio::task::spawn_blocking({
        let (w, s) = (work_path.clone(), spec.clone());
        move || {
            let procs: Vec<(u32, Arcane)> = restarted
                .iter()
                .map(|&i| (i, start_shard(&w, &s, "b1", i, &[], None)))
                .collect();
            procs
                .into_iter()
                .map(|(i, p)| (i, p.wait()))
                .collect::<Vec<_>>()
        }
    })
    .await
    .unwrap();
    for (i, exit) in &exits {
        assert_eq!(exit.code, 0, "shard {i}: {:#?}", exit.lines);
        assert_shard_logs(exit, *i, shards);
    }

    assert_exactly_once(
        &committed_ids_async(&sink, &options).await,
        0..files as i64 * LINES as i64,
    );
    let manifests = stream_manifests(&objects, &prefix).await;
    assert_eq!(
        completions(&manifests, "b1"),
        1,
        "the generation switched once"
    );
    let last = manifests.last().unwrap();
    assert_eq!(
        last["state"]["currentGeneration"],
        format!("_generations/b1-of-{shards}")
    );
    // The switch came after every shard's done marker.
    let switched =
        chrono::DateTime::parse_from_rfc3339(last["committedAt"].as_str().unwrap()).unwrap();
    for i in 0..shards {
        let path = object_store::path::Path::from(format!(
            "{prefix}/_arcane/shards/b1-of-{shards}/done/{i:04}.json"
        ));
        let bytes = objects.get(&path).await.unwrap().bytes().await.unwrap();
        let done: Value = serde_json::from_slice(&bytes).unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(done["doneAt"].as_str().unwrap()).unwrap();
        assert!(
            at <= switched,
            "shard {i} done at {at}, after the switch at {switched}"
        );
    }

    // A shard restarted after the switch does nothing and exits 0.
    let again = tokio::task::spawn_blocking({
        let (w, s) = (work_path.clone(), spec.clone());
        move || start_shard(&w, &s, "b1", 0, &[], None).wait()
    })
    .await
    .unwrap();
    assert_eq!(again.code, 0, "{:#?}", again.lines);
    assert_eq!(again.summary("rowsCommitted"), 0);
    assert_eq!(
        completions(&stream_manifests(&objects, &prefix).await, "b1"),
        1
    );

    let text = show(&sink, &options);
    assert!(
        text.contains(&format!("sharded backfill b1 ({shards} shards): complete")),
        "{text}"
    );
    let rows_listed: u64 = text
        .lines()
        .filter(|l| l.trim_start().starts_with("shard ") && l.contains(" done "))
        .map(|l| {
            let before = l.split(" rows").next().unwrap();
            before.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(rows_listed, files * LINES, "{text}");

    // The stream goes on after the furthest shard's position: a streaming run reads only a
    // file that landed since.
    let resume = &manifests.last().unwrap()["state"]["streamCheckpoint"]["position"];
    assert!(
        resume["file"]
            .as_str()
            .unwrap()
            .ends_with(&format!("landing/{:04}.ndjson", files - 1)),
        "{resume}"
    );
    assert_eq!(resume["done"], true, "{resume}");
    store
        .put("landing/9999.ndjson", file_lines(2000).into_bytes())
        .await;
    let stream = tokio::task::spawn_blocking({
        let (w, s) = (work_path.clone(), spec.clone());
        move || Arcane::run(&w, &s, &[])
    })
    .await
    .unwrap();
    let total = files as usize * LINES as usize + LINES as usize;
    let started = Instant::now();
    while committed_ids_async(&sink, &options).await.len() < total {
        assert!(
            started.elapsed() < WAIT,
            "the streaming run did not land the new file"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stream.signal(Signal::SIGTERM);
    let exit = tokio::task::spawn_blocking(move || stream.wait())
        .await
        .unwrap();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(exit.summary("rowsCommitted"), LINES);
    let (new, backfilled): (Vec<i64>, Vec<i64>) = committed_ids_async(&sink, &options)
        .await
        .into_iter()
        .partition(|&i| i >= 2000 * LINES as i64);
    assert_exactly_once(&backfilled, 0..files as i64 * LINES as i64);
    assert_exactly_once(&new, 2000 * LINES as i64..2001 * LINES as i64);
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_overwrite_on_local_disk_survives_kills_and_switches_once() {
    sharded_overwrite_with_kills(Store::local(), 12, 3, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_overwrite_on_s3_survives_kills_and_switches_once() {
    sharded_overwrite_with_kills(Store::s3().await, 6, 2, 1).await;
}

#[test]
fn more_shards_than_files_merge_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    for k in 0..2 {
        std::fs::write(landing.join(format!("{k}.ndjson")), file_lines(k)).unwrap();
    }
    let sink = format!("file://{}/out", dir.path().display());
    let url = format!("file://{}/", landing.display());
    let spec = landing_spec(&url, &sink, 5, "merge", &BTreeMap::new());
    let procs: Vec<Arcane> = (0..5)
        .map(|i| start_shard(dir.path(), &spec, "m1", i, &[], None))
        .collect();
    let mut committed = 0;
    for (i, p) in procs.into_iter().enumerate() {
        let exit = p.wait();
        assert_eq!(exit.code, 0, "shard {i}: {:#?}", exit.lines);
        committed += exit.summary("rowsCommitted");
    }
    assert_eq!(committed, 2 * LINES);
    assert_exactly_once(&committed_ids(&sink, &BTreeMap::new()), 0..2 * LINES as i64);
    let text = show(&sink, &BTreeMap::new());
    assert!(
        text.contains("sharded backfill m1 (5 shards): complete"),
        "{text}"
    );
    // Two files: at least three shards had nothing to read, and still completed their part.
    assert!(text.matches(" 0 parts  0 rows").count() >= 3, "{text}");
}

#[test]
fn an_index_out_of_range_or_missing_and_a_kind_that_cannot_shard_are_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    std::fs::write(landing.join("0.ndjson"), file_lines(0)).unwrap();
    let sink = format!("file://{}/out", dir.path().display());
    let url = format!("file://{}/", landing.display());
    let spec = landing_spec(&url, &sink, 3, "overwrite", &BTreeMap::new());
    let message = |exit: &Exit| {
        exit.termination["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };

    let exit = start_shard(dir.path(), &spec, "b", 3, &[], None).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    assert!(
        message(&exit)
            .contains("JOB_COMPLETION_INDEX: index 3 is out of range for spec.backfillShards = 3"),
        "{}",
        message(&exit)
    );
    let exit = Arcane::run(dir.path(), &spec, &["--backfill", "--backfill-id", "b"]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    assert!(
        message(&exit).contains("JOB_COMPLETION_INDEX: not set"),
        "{}",
        message(&exit)
    );
    // Nothing was read or written.
    assert!(!dir.path().join("out/_arcane").exists());

    // A streaming run ignores the shards (the spec is shared with the streaming Job) and
    // reads every file.
    let stream = Arcane::run(dir.path(), &spec, &[]);
    eventually("the streaming run commits the first files", || {
        committed_ids(&sink, &BTreeMap::new()).len() >= 100
    });
    stream.signal(Signal::SIGTERM);
    let exit = stream.wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(exit.summary("rowsCommitted"), LINES);

    // A kind that cannot shard refuses, naming the kind.
    let nats = json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "NatsJetstreamStream",
        "metadata": {"name": "n"},
        "spec": {
            "source": {
                "url": "nats://127.0.0.1:4222", "stream": "s", "consumer": "c",
                "payload": {"format": "json", "schema": [{"name": "id", "type": "int64"}]}
            },
            "sink": {"url": sink},
            "backfillShards": 2
        }
    });
    for args in [&["--backfill", "--backfill-id", "n"][..], &[][..]] {
        let exit =
            Arcane::run_with_env(dir.path(), &nats, args, &[("JOB_COMPLETION_INDEX", "0")]).wait();
        assert_eq!(exit.code, 1, "{:#?}", exit.lines);
        assert!(
            message(&exit)
                .contains("spec.backfillShards: the nats-jetstream kind cannot shard its backfill"),
            "{}",
            message(&exit)
        );
    }
}

#[test]
fn two_processes_of_the_same_index_one_fails_without_corrupting() {
    let dir = tempfile::tempdir().unwrap();
    let sink = format!("file://{}/out", dir.path().display());
    let spec = json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "GeneratorStream",
        "metadata": {"name": "gen"},
        "spec": {
            "source": {"totalRows": 2000, "batchRows": 10, "rowsPerSecond": 250},
            "sink": {"url": sink, "backfillBehavior": "overwrite", "rolling": {"maxRowsPerFile": 10}},
            "backfillShards": 2,
            "rowsPerGroup": 10,
            "groupingIntervalSeconds": 1
        }
    });
    let manifests = dir
        .path()
        .join("out/_arcane/shards/g1-of-2/0000/_arcane/manifests");
    let first = start_shard(dir.path(), &spec, "g1", 0, &[], None);
    eventually("the first process commits twice", || {
        std::fs::read_dir(&manifests)
            .map(|d| d.count())
            .unwrap_or(0)
            >= 3
    });
    let second = start_shard(dir.path(), &spec, "g1", 0, &[], None);
    let (a, b) = (first.wait(), second.wait());
    let (failed, ok) = match (a.code, b.code) {
        (0, _) => (b, a),
        _ => (a, b),
    };
    assert_eq!(ok.code, 0, "{:#?}", ok.lines);
    assert_eq!(failed.code, 2, "{:#?}", failed.lines);
    let text = failed.termination["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        text.contains("was written by another process: another pod of the same shard"),
        "{text}"
    );
    // The other shard completes the backfill: rows 0..2000 exactly once.
    let exit = start_shard(dir.path(), &spec, "g1", 1, &[], None).wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_exactly_once(&committed_ids(&sink, &BTreeMap::new()), 0..2000);
}

/// A sharded backfill template (an Indexed Job of `N` completions) carries the count as
/// `ARCANE_BACKFILL_SHARDS`: a spec without `backfillShards` backfills in `N` shards, and a spec
/// asking for another count is refused before anything is read.
#[test]
fn the_job_templates_shard_count_stands_in_for_the_spec_and_must_agree_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let sink = format!("file://{}/out", dir.path().display());
    let mut spec = json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "GeneratorStream",
        "metadata": {"name": "gen"},
        "spec": {
            "source": {"totalRows": 3000, "batchRows": 100},
            "sink": {"url": sink, "backfillBehavior": "overwrite"},
            "rowsPerGroup": 500,
            "groupingIntervalSeconds": 1
        }
    });
    let template = [("ARCANE_BACKFILL_SHARDS".to_string(), "3".to_string())];
    let procs: Vec<Arcane> = (0..3)
        .map(|i| start_shard(dir.path(), &spec, "t1", i, &template, None))
        .collect();
    let mut committed = 0;
    for (i, p) in procs.into_iter().enumerate() {
        let exit = p.wait();
        assert_eq!(exit.code, 0, "shard {i}: {:#?}", exit.lines);
        assert_shard_logs(&exit, i as u32, 3);
        committed += exit.summary("rowsCommitted");
    }
    assert_eq!(committed, 3000);
    assert_exactly_once(&committed_ids(&sink, &BTreeMap::new()), 0..3000);
    let text = show(&sink, &BTreeMap::new());
    assert!(
        text.contains("sharded backfill t1 (3 shards): complete"),
        "{text}"
    );

    // The spec asks for 2 shards, the template's Job runs 3: every pod refuses, nothing read.
    spec["spec"]["backfillShards"] = 2.into();
    spec["spec"]["sink"]["url"] = format!("file://{}/other", dir.path().display()).into();
    for i in [0, 2] {
        let exit = start_shard(dir.path(), &spec, "t2", i, &template, None).wait();
        assert_eq!(exit.code, 1, "{:#?}", exit.lines);
        let message = exit.termination["message"].as_str().unwrap_or("");
        assert!(
            message.contains("spec.backfillShards: 2, but the Job template runs 3 shards (ARCANE_BACKFILL_SHARDS=3"),
            "{message}"
        );
    }
    assert!(!dir.path().join("other").exists());
}

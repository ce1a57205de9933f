//! Sharded backfill: wall time of one `blob-landing` backfill run as 1 process and as `N`
//! shard processes (`backfillShards: N`, `JOB_COMPLETION_INDEX=0..N-1`, all started at once on
//! this machine, as the pods of an Indexed Job would run), on the same input, on the local file
//! system or on the S3 server (moto); and, with `--count-calls`, the object-store calls each
//! run makes, counted by an HTTP proxy in front of the S3 server
//! (`arcane_test_support::http_faults::FaultProxy` with no fault rules), per call kind and per
//! kind of object, so that the calls the shard protocol adds show against an unsharded run
//! (`metadata`: every call on manifests, upload markers and done markers, i.e. all but the
//! input and the data files).
//!
//! The input is generated deterministically (SplitMix64, seed 24): `--files` NDJSON files of
//! `--rows-per-file` rows (7 columns, about 150 bytes a row) under `landing/`. Every run is
//! checked: each process exits 0, the backfill is complete in the stream's manifest and the
//! committed files hold exactly `files × rows-per-file` rows.
//!
//! ```text
//! cargo build --workspace --all-features
//! T=${CARGO_TARGET_DIR:-target}/debug
//! $T/sharded_backfill --arcane $T/arcane --store local --files 64 --rows-per-file 25000
//! ARCANE_TEST_S3_ENDPOINT=http://127.0.0.1:PORT $T/sharded_backfill --arcane $T/arcane \
//!     --store s3 --files 32 --rows-per-file 25000 --count-calls
//! ```
//!
//! Options: `--shards 1,2,4` (shard counts to run; 1 is the unsharded backfill), `--rounds 2`,
//! `--work DIR` (local input and outputs; default `/var/tmp/arcane-bench-sharded`),
//! `--print-calls` (with `--count-calls`: every request, classified), `--max-rows-per-file N`
//! (the sink's `rolling.maxRowsPerFile`: more files, so more commits per shard).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use arcane_test_support::Store;
use arcane_test_support::http_faults::{Call, FaultProxy};
use arcane_test_support::rng::SplitMix64;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

const STATUSES: [&str; 5] = ["created", "paid", "shipped", "delivered", "refunded"];
const COUNTRIES: [&str; 6] = ["DE", "NL", "FR", "SE", "PL", "GB"];

/// File `k` of the input: rows `k*rows..(k+1)*rows`, the same bytes on every run.
fn input_file(k: u64, rows: u64) -> Vec<u8> {
    let mut rng = SplitMix64(24 ^ k.wrapping_mul(0x9e37_79b9));
    let mut out = Vec::with_capacity(rows as usize * 160);
    for i in k * rows..(k + 1) * rows {
        let ms = 1_767_225_600_000u64 + i * 37 + rng.between(0, 1000);
        let (secs, millis) = (ms / 1000, ms % 1000);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        writeln!(
            out,
            "{{\"id\": {i}, \"customer_id\": {}, \"event_time\": \"2026-01-{:02}T{:02}:{:02}:{:02}.{millis:03}Z\", \"status\": \"{}\", \"amount\": {}.{:02}, \"country\": \"{}\", \"note\": \"order {i} of customer, {} items\"}}",
            rng.between(1, 50_000),
            1 + (days - 20_454) % 28,
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            STATUSES[rng.between(0, 5) as usize],
            rng.between(1, 900),
            rng.between(0, 100),
            COUNTRIES[rng.between(0, 6) as usize],
            rng.between(1, 7),
        )
        .unwrap();
    }
    out
}

fn spec(
    input: &str,
    sink: &str,
    options: &BTreeMap<String, String>,
    shards: u32,
    max_rows_per_file: Option<u64>,
) -> String {
    let mut spec = serde_json::json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "BlobLandingStream",
        "metadata": {"name": "bench"},
        "spec": {
            "source": {
                "url": input,
                "format": "ndjson",
                "suffix": ".ndjson",
                "storageOptions": options,
                "schema": [
                    {"name": "id", "type": "int64", "nullable": false},
                    {"name": "customer_id", "type": "int64"},
                    {"name": "event_time", "type": "timestamp[ms, UTC]", "nullable": false},
                    {"name": "status", "type": "utf8"},
                    {"name": "amount", "type": "float64"},
                    {"name": "country", "type": "utf8"},
                    {"name": "note", "type": "utf8"}
                ]
            },
            "sink": {
                "url": sink,
                "storageOptions": options,
                "backfillBehavior": "overwrite"
            },
            "rowsPerGroup": 65536,
            "groupingIntervalSeconds": 5
        }
    });
    if shards > 1 {
        spec["spec"]["backfillShards"] = shards.into();
    }
    if let Some(rows) = max_rows_per_file {
        spec["spec"]["sink"]["rolling"] = serde_json::json!({ "maxRowsPerFile": rows });
    }
    spec.to_string()
}

/// One backfill of `shards` processes; returns the wall time (first start to last exit), each
/// process's own time, and the CPU seconds (user + system) of all processes together, from
/// `/usr/bin/time`.
fn run_backfill(
    arcane: &str,
    work: &Path,
    spec_json: &str,
    backfill_id: &str,
    shards: u32,
) -> (f64, Vec<f64>, f64) {
    let spec_file = work.join(format!("spec-{backfill_id}.json"));
    std::fs::write(&spec_file, spec_json).unwrap();
    let start = Instant::now();
    let mut children = Vec::new();
    for i in 0..shards {
        let log = std::fs::File::create(work.join(format!("{backfill_id}-{i}.log"))).unwrap();
        let mut cmd = Command::new("/usr/bin/time");
        cmd.args(["-f", "%U %S", "-o"])
            .arg(work.join(format!("{backfill_id}-{i}.time")))
            .arg(arcane)
            .args(["run", "--spec"])
            .arg(&spec_file)
            .args(["--backfill", "--backfill-id", backfill_id])
            .env("ARCANE_METRICS_ADDR", "off")
            .env("ARCANE_LOG_FORMAT", "json")
            .env("ARCANE_TERMINATION_LOG", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if shards > 1 {
            cmd.env("JOB_COMPLETION_INDEX", i.to_string());
        }
        children.push((i, cmd.spawn().expect("start arcane"), Instant::now()));
    }
    let mut each = vec![0.0; shards as usize];
    for (i, mut child, started) in children {
        let status = child.wait().unwrap();
        each[i as usize] = started.elapsed().as_secs_f64();
        assert!(
            status.success(),
            "shard {i} of {backfill_id} exited {status}; see {}",
            work.join(format!("{backfill_id}-{i}.log")).display()
        );
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = (0..shards)
        .map(|i| {
            let text =
                std::fs::read_to_string(work.join(format!("{backfill_id}-{i}.time"))).unwrap();
            let last = text.lines().last().unwrap_or_default();
            last.split_whitespace()
                .map(|v| v.parse::<f64>().expect("/usr/bin/time output"))
                .sum::<f64>()
        })
        .sum();
    (wall, each, cpu)
}

/// The backfill `id` completed at `url` and its committed files hold `rows` rows.
async fn check(url: &str, options: &BTreeMap<String, String>, id: &str, rows: u64) {
    let manifest = arcane_sinks::latest_manifest(url, options)
        .await
        .unwrap()
        .expect("a manifest");
    assert!(
        manifest.state.completed_backfills.iter().any(|b| b == id),
        "backfill {id} did not complete at {url}"
    );
    let files = arcane_sinks::committed_files(url, options).await.unwrap();
    let committed: u64 = files.iter().map(|f| f.rows).sum();
    assert_eq!(committed, rows, "rows committed at {url}");
}

/// The 1-minute load average (`/proc/loadavg`), to read a wall time on a shared machine by.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The kind of object a request touches, from its path (or a listing's `prefix`).
fn object_class(path: &str, query: &str) -> &'static str {
    let prefix = query
        .split('&')
        .find_map(|p| p.strip_prefix("prefix="))
        .map(|p| p.replace("%2F", "/").replace("%2f", "/"));
    let key = prefix.as_deref().unwrap_or(path);
    if query == "delete" {
        // S3's bulk delete; the sink's only one deletes a commit's upload markers once its
        // files are complete (the keys are in the body).
        "upload markers"
    } else if key.contains("landing/") {
        "input"
    } else if key.contains("_arcane/shards/") && key.contains("/done") {
        "shard done markers"
    } else if key.contains("_arcane/shards/") && key.contains("/_arcane/manifests") {
        "shard manifests"
    } else if key.contains("_arcane/shards/") {
        "shard upload markers, listings"
    } else if key.contains("_arcane/manifests") {
        "stream manifests"
    } else if key.contains("_arcane/") {
        "upload markers"
    } else {
        "data files"
    }
}

fn main() {
    let arcane = arg("--arcane", "target/debug/arcane");
    let store_kind = arg("--store", "local");
    let files: u64 = arg("--files", "64").parse().expect("--files");
    let rows_per_file: u64 = arg("--rows-per-file", "25000")
        .parse()
        .expect("--rows-per-file");
    let rounds: u32 = arg("--rounds", "2").parse().expect("--rounds");
    let shard_counts: Vec<u32> = arg("--shards", "1,2,4")
        .split(',')
        .map(|s| s.trim().parse().expect("--shards"))
        .collect();
    let count_calls = flag("--count-calls");
    let max_rows_per_file: Option<u64> =
        std::env::args()
            .any(|a| a == "--max-rows-per-file")
            .then(|| {
                arg("--max-rows-per-file", "")
                    .parse()
                    .expect("--max-rows-per-file")
            });
    let work = PathBuf::from(arg("--work", "/var/tmp/arcane-bench-sharded"));
    std::fs::create_dir_all(&work).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = files * rows_per_file;

    // The input, and where outputs go.
    let (store, input_url, input_bytes) = match store_kind.as_str() {
        "local" => {
            let dir = work.join(format!("input-{files}x{rows_per_file}"));
            let landing = dir.join("landing");
            let mut bytes = 0u64;
            if !dir.join(".done").exists() {
                std::fs::create_dir_all(&landing).unwrap();
                for k in 0..files {
                    let data = input_file(k, rows_per_file);
                    std::fs::write(landing.join(format!("{k:05}.ndjson")), data).unwrap();
                }
                std::fs::write(dir.join(".done"), b"").unwrap();
            }
            for k in 0..files {
                bytes += std::fs::metadata(landing.join(format!("{k:05}.ndjson")))
                    .unwrap()
                    .len();
            }
            (None, format!("{}/", landing.display()), bytes)
        }
        "s3" => {
            let store = rt.block_on(Store::s3());
            let mut bytes = 0u64;
            for k in 0..files {
                let data = input_file(k, rows_per_file);
                bytes += data.len() as u64;
                rt.block_on(store.put(&format!("landing/{k:05}.ndjson"), data));
            }
            let url = store.url_of("landing/");
            (Some(store), url, bytes)
        }
        other => panic!("--store {other}: expected local or s3"),
    };
    let options = store.as_ref().map(Store::options).unwrap_or_default();
    let out_url = |name: &str| match &store {
        Some(s) => s.url_of(name),
        None => format!("{}/{name}", work.display()),
    };
    let input_mb = input_bytes as f64 / 1e6;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "store={store_kind} files={files} rows={rows} input_mb={input_mb:.0} cores={cores} max_rows_per_file={max_rows_per_file:?} arcane={arcane}"
    );

    // Wall times.
    let mut baseline: Option<f64> = None;
    for &shards in &shard_counts {
        let mut walls = Vec::new();
        for round in 0..rounds {
            let id = format!("bench-{shards}-{round}");
            let name = format!("out-{shards}-{round}");
            let url = out_url(&name);
            let (wall, each, cpu) = run_backfill(
                &arcane,
                &work,
                &spec(&input_url, &url, &options, shards, max_rows_per_file),
                &id,
                shards,
            );
            rt.block_on(check(&url, &options, &id, rows));
            if store.is_none() {
                std::fs::remove_dir_all(work.join(&name)).unwrap();
            }
            let each: Vec<String> = each.iter().map(|s| format!("{s:.2}")).collect();
            println!(
                "store={store_kind} shards={shards} round={round} wall_s={wall:.2} mb_s={:.1} rows_s={:.0} cpu_s={cpu:.2} per_process_s=[{}] load={}",
                input_mb / wall,
                rows as f64 / wall,
                each.join(" "),
                load_average()
            );
            walls.push(wall);
        }
        walls.sort_by(f64::total_cmp);
        let median = walls[walls.len() / 2];
        let base = *baseline.get_or_insert(median);
        println!(
            "store={store_kind} shards={shards} median_wall_s={median:.2} speedup_vs_first={:.2}",
            base / median
        );
    }

    // Object-store calls, through a counting proxy (S3 only).
    if !count_calls {
        return;
    }
    let Some(Store::S3 { endpoint, .. }) = &store else {
        panic!("--count-calls needs --store s3");
    };
    let proxy = FaultProxy::start(endpoint, 0, Vec::new());
    let mut proxied = options.clone();
    proxied.insert("aws_endpoint".into(), proxy.url());
    let mut base: Option<BTreeMap<&'static str, u64>> = None;
    let mut base_meta: Option<(u64, u64)> = None;
    for &shards in &shard_counts {
        proxy.clear_requests();
        let id = format!("calls-{shards}");
        let url = out_url(&format!("calls-{shards}"));
        run_backfill(
            &arcane,
            &work,
            &spec(&input_url, &url, &proxied, shards, max_rows_per_file),
            &id,
            shards,
        );
        rt.block_on(check(&url, &options, &id, rows));
        let mut by: BTreeMap<(&'static str, Call), u64> = BTreeMap::new();
        let mut by_class: BTreeMap<&'static str, u64> = BTreeMap::new();
        let requests = proxy.requests();
        for r in &requests {
            let class = object_class(&r.path, &r.query);
            if flag("--print-calls") {
                println!(
                    "call shards={shards} class={class:?} call={:?} {} {}?{}",
                    r.call, r.method, r.path, r.query
                );
            }
            *by.entry((class, r.call)).or_default() += 1;
            *by_class.entry(class).or_default() += 1;
        }
        println!(
            "calls store=s3 shards={shards} total={} data_files_committed={}",
            requests.len(),
            rt.block_on(arcane_sinks::committed_files(&url, &options))
                .unwrap()
                .len()
        );
        for ((class, call), n) in &by {
            println!("calls shards={shards} class={class:?} call={call:?} n={n}");
        }
        let meta: u64 = by_class
            .iter()
            .filter(|(c, _)| **c != "input" && **c != "data files")
            .map(|(_, n)| n)
            .sum();
        let first = *base_meta.get_or_insert((requests.len() as u64, meta));
        println!(
            "calls shards={shards} total={} metadata={meta} extra_total_per_shard={:+.1} extra_metadata_per_shard={:+.1}",
            requests.len(),
            (requests.len() as f64 - first.0 as f64) / f64::from(shards),
            (meta as f64 - first.1 as f64) / f64::from(shards),
        );
        let base = base.get_or_insert_with(|| by_class.clone());
        let classes: std::collections::BTreeSet<&str> =
            by_class.keys().chain(base.keys()).copied().collect();
        for class in classes {
            let (now, before) = (
                by_class.get(class).copied().unwrap_or(0),
                base.get(class).copied().unwrap_or(0),
            );
            println!(
                "calls shards={shards} class={class:?} n={now} vs_first={:+} per_shard={:+.1}",
                now as i64 - before as i64,
                (now as f64 - before as f64) / f64::from(shards)
            );
        }
    }
}

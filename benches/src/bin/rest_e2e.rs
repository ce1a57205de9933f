//! End-to-end throughput of the `rest-api` kind: the `arcane` binary backfills `--records`
//! records from the local test API (cursor pagination, `--limit` records per page, watermark
//! with id, nested objects flattened) into local Parquet, and the harness prints records/s of
//! the whole run (process start to exit, everything committed). In the same run it times a
//! plain client reading every page (HTTP + JSON parse only), as the ceiling.
//!
//! ```text
//! cargo build --release --bin arcane -p arcane-cli
//! cargo run --release -p arcane-benches --bin rest_e2e -- --records 500000 --limit 1000 \
//!     --arcane target/release/arcane
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Instant;

use arcane_test_support::rest_api::TestApi;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let records: u64 = arg("--records", "500000").parse().expect("--records");
    let limit: u64 = arg("--limit", "1000").parse().expect("--limit");
    let rounds: u32 = arg("--rounds", "3").parse().expect("--rounds");
    let arcane = arg("--arcane", "target/release/arcane");
    let api = TestApi::start(records);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..rounds {
        // Ceiling: fetch and parse every page, nothing else.
        let start = Instant::now();
        let fetched = rt.block_on(async {
            let client = reqwest::Client::new();
            let mut cursor: Option<String> = None;
            let mut n = 0u64;
            loop {
                let mut url = format!("{}?limit={limit}", api.url("/items/cursor"));
                if let Some(c) = &cursor {
                    url.push_str(&format!("&cursor={c}"));
                }
                let body = client
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                n += v["data"].as_array().map_or(0, Vec::len) as u64;
                match v["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break n,
                }
            }
        });
        let fetch_secs = start.elapsed().as_secs_f64();
        assert_eq!(fetched, records);

        let dir = tempfile::tempdir().unwrap();
        let spec = serde_json::json!({
            "kind": "RestApiStream",
            "metadata": {"name": "bench"},
            "spec": {
                "source": {
                    "url": api.url("/items/cursor"),
                    "query": {"updated_since": "{{watermark}}", "limit": limit.to_string()},
                    "recordsPointer": "/data",
                    "pagination": {"type": "cursor", "cursorPointer": "/next_cursor", "param": "cursor"},
                    "watermark": {"field": "updated_at", "type": "timestamp", "idField": "id"},
                    "flattenNested": true,
                    "schema": [
                        {"name": "id", "type": "int64", "nullable": false},
                        {"name": "updated_at", "type": "timestamp[ms, UTC]", "nullable": false},
                        {"name": "name", "type": "utf8"},
                        {"name": "amount", "type": "float64"},
                        {"name": "customer_id", "type": "int64"},
                        {"name": "customer_country", "type": "utf8"}
                    ]
                },
                "sink": {"url": format!("file://{}/out", dir.path().display())},
                "rowsPerGroup": 100000
            }
        });
        let spec_file = dir.path().join("spec.json");
        std::fs::write(&spec_file, spec.to_string()).unwrap();
        let start = Instant::now();
        let out = Command::new(&arcane)
            .args(["run", "--spec", spec_file.to_str().unwrap(), "--backfill"])
            .env("ARCANE_METRICS_ADDR", "off")
            .env("ARCANE_LOG_FORMAT", "json")
            .env("ARCANE_TERMINATION_LOG", dir.path().join("termination"))
            .output()
            .expect("run arcane (build it with cargo build --release --bin arcane)");
        let secs = start.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let summary = std::fs::read_to_string(dir.path().join("termination")).unwrap();
        assert!(
            summary.contains(&format!("\"rowsCommitted\":{records}")),
            "{summary}"
        );
        println!(
            "round={round} records={records} page={limit} fetch_parse_only_records_s={:.0} arcane_records_s={:.0} arcane_secs={secs:.2} ratio={:.2}",
            records as f64 / fetch_secs,
            records as f64 / secs,
            fetch_secs / secs
        );
    }
}

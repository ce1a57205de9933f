//! The blob-landing source against an S3 server (moto) and the Azure Blob emulator (azurite).
//!
//! `scripts/test.sh` starts both and exports `ARCANE_TEST_S3_ENDPOINT`
//! (`http://127.0.0.1:PORT`) and `ARCANE_TEST_AZURITE_ENDPOINT`
//! (`http://127.0.0.1:PORT/devstoreaccount1`).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use arcane_core::testing::MemoryStoreHandle;
use arcane_sources::blob_landing::{BlobLandingSource, BlobLandingSourceConfig, FieldConfig};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts the emulators and exports it")
    })
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A minimal HTTP/1.1 request; returns the status code.
async fn http(method: &str, url: &str, headers: &[(String, String)]) -> u16 {
    let url = url::Url::parse(url).unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut target = url.path().to_string();
    if let Some(q) = url.query() {
        target = format!("{target}?{q}");
    }
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP response: {response}"))
}

/// Files of the end-to-end test, put into `store` under `landing/`.
async fn put_landing_files(store: &dyn ObjectStore) -> (Vec<i64>, f64) {
    let mut a = ndjson(0..3_000);
    a.push_str("{\"id\": oops}\n");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("landing/2026-11-20.ndjson", a.into_bytes()),
        (
            "landing/2026-11-21.ndjson.gz",
            gzip(ndjson(3_000..6_000).as_bytes()),
        ),
        (
            "landing/2026-11-22.ndjson.zst",
            zstd(ndjson(6_000..9_000).as_bytes()),
        ),
        (
            "other/ignored.ndjson",
            ndjson(100_000..100_010).into_bytes(),
        ),
    ];
    for (path, bytes) in files {
        store
            .put(&Path::from(path), PutPayload::from(bytes))
            .await
            .unwrap();
    }
    let ids: Vec<i64> = (0..9_000).collect();
    let amount = ids.iter().map(|&i| i as f64 * 1.5).sum();
    (ids, amount)
}

async fn land_and_check(url: String, options: BTreeMap<String, String>, expected: (Vec<i64>, f64)) {
    let mut cfg = BlobLandingSourceConfig::new(url);
    cfg.storage_options = options;
    cfg.batch_rows = 1_000;
    cfg.schema = Some(vec![
        FieldConfig::new("id", "int64").required(),
        FieldConfig::new("name", "utf8"),
        FieldConfig::new("amount", "float64"),
    ]);
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
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(ids, expected.0, "every row once, in file order");
    let amount: f64 = batches
        .iter()
        .flat_map(|b| b.column(2).as_primitive::<Float64Type>().values().to_vec())
        .sum();
    assert!(
        (amount - expected.1).abs() < 1e-6,
        "{amount} != {}",
        expected.1
    );
    let letters = letters.all();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].origin.ends_with("landing/2026-11-20.ndjson"),
        "{letters:?}"
    );
    assert_eq!(letters[0].locator, "line 3001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_files_land_with_every_row_and_bad_lines_dead_lettered() {
    let endpoint = env("ARCANE_TEST_S3_ENDPOINT");
    let bucket = unique("arcane-blob-landing");
    let status = http("PUT", &format!("{endpoint}/{bucket}"), &[]).await;
    assert_eq!(status, 200, "creating bucket {bucket}");
    let store: Arc<dyn ObjectStore> = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(&bucket)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap(),
    );
    let expected = put_landing_files(store.as_ref()).await;
    let options: BTreeMap<String, String> = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "testing"),
        ("aws_secret_access_key", "testing"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    land_and_check(format!("s3://{bucket}/landing/"), options, expected).await;

    // Clean up.
    let all: Vec<_> = futures::TryStreamExt::try_collect(store.list(None))
        .await
        .unwrap();
    for meta in all {
        store.delete(&meta.location).await.unwrap();
    }
    assert_eq!(
        http("DELETE", &format!("{endpoint}/{bucket}"), &[]).await,
        204
    );
}

/// Create a container with a SharedKey-signed request (object_store cannot).
async fn create_container(endpoint: &str, container: &str) {
    let date = httpdate_now();
    let version = "2021-08-06";
    let string_to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &b64_decode(AZURITE_KEY));
    let signature = b64_encode(aws_lc_rs::hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    let status = http(
        "PUT",
        &format!("{endpoint}/{container}?restype=container"),
        &[
            ("x-ms-date".into(), date),
            ("x-ms-version".into(), version.into()),
            (
                "Authorization".into(),
                format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
            ),
        ],
    )
    .await;
    assert_eq!(status, 201, "creating container {container}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_files_land_with_every_row_and_bad_lines_dead_lettered() {
    let endpoint = env("ARCANE_TEST_AZURITE_ENDPOINT");
    let container = unique("arcane-blob-landing");
    create_container(&endpoint, &container).await;
    let options: BTreeMap<String, String> = [
        ("azure_storage_account_name", AZURITE_ACCOUNT),
        ("azure_storage_account_key", AZURITE_KEY),
        ("azure_storage_endpoint", endpoint.as_str()),
        ("azure_allow_http", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut builder =
        object_store::azure::MicrosoftAzureBuilder::new().with_container_name(&container);
    for (k, v) in &options {
        builder = builder.with_config(k.parse().unwrap(), v);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(builder.build().unwrap());
    let expected = put_landing_files(store.as_ref()).await;
    land_and_check(format!("az://{container}/landing/"), options, expected).await;

    let all: Vec<_> = futures::TryStreamExt::try_collect(store.list(None))
        .await
        .unwrap();
    for meta in all {
        store.delete(&meta.location).await.unwrap();
    }
}

fn httpdate_now() -> String {
    // RFC 1123, e.g. "Mon, 23 Nov 2026 19:55:52 GMT".
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {h:02}:{m:02}:{s:02} GMT",
        months[(month - 1) as usize]
    )
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

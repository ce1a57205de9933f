//! Stores for the sink tests: memory, local FS, S3 (moto) and Azure Blob (azurite).
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use arcane_core::{Checkpoint, Position};
use arcane_sinks::{ParquetSinkConfig, read_committed};
use arrow_array::RecordBatch;
use base64::Engine;

/// Well-known key of the Azurite account `devstoreaccount1`.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug)]
pub enum Store {
    Memory(String),
    Local(tempfile::TempDir),
    S3 { endpoint: String, bucket: String },
    Azure { endpoint: String, container: String },
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())[..30].to_string()
}

impl Store {
    pub fn memory() -> Self {
        Store::Memory(unique("mem"))
    }

    pub fn local() -> Self {
        Store::Local(tempfile::tempdir().expect("temp dir"))
    }

    pub async fn s3() -> Self {
        let endpoint = std::env::var("ARCANE_TEST_S3_ENDPOINT")
            .expect("ARCANE_TEST_S3_ENDPOINT is not set; run scripts/test.sh (it starts moto)");
        let bucket = unique("arcane-sinks-");
        let resp = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .expect("moto reachable");
        assert!(
            resp.status().is_success(),
            "create bucket: {}",
            resp.status()
        );
        Store::S3 { endpoint, bucket }
    }

    pub async fn azure() -> Self {
        let endpoint = std::env::var("ARCANE_TEST_AZURITE_ENDPOINT").expect(
            "ARCANE_TEST_AZURITE_ENDPOINT is not set; run scripts/test.sh (it starts azurite)",
        );
        let container = unique("arcane-sinks-");
        let resp = azure_request("PUT", &endpoint, &container).await;
        assert!(
            resp.status().is_success(),
            "create container: {} {:?}",
            resp.status(),
            resp.text().await
        );
        Store::Azure {
            endpoint,
            container,
        }
    }

    pub fn url(&self) -> String {
        match self {
            Store::Memory(name) => format!("memory://{name}/stream"),
            Store::Local(dir) => format!("file://{}/stream", dir.path().display()),
            Store::S3 { bucket, .. } => format!("s3://{bucket}/stream"),
            Store::Azure { container, .. } => format!("az://{container}/stream"),
        }
    }

    pub fn options(&self) -> BTreeMap<String, String> {
        let pairs: Vec<(&str, String)> = match self {
            Store::Memory(_) | Store::Local(_) => vec![],
            Store::S3 { endpoint, .. } => vec![
                ("aws_endpoint", endpoint.clone()),
                ("aws_allow_http", "true".into()),
                ("aws_access_key_id", "testing".into()),
                ("aws_secret_access_key", "testing".into()),
                ("aws_region", "us-east-1".into()),
            ],
            Store::Azure { endpoint, .. } => vec![
                ("azure_storage_account_name", "devstoreaccount1".into()),
                ("azure_storage_account_key", AZURITE_KEY.into()),
                ("azure_storage_endpoint", endpoint.clone()),
                ("allow_http", "true".into()),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    pub fn config(&self) -> ParquetSinkConfig {
        let mut c = ParquetSinkConfig::new(self.url());
        c.storage_options = self.options();
        c
    }

    pub async fn read(&self) -> Vec<RecordBatch> {
        read_committed(&self.url(), &self.options())
            .await
            .expect("read committed")
    }

    /// Delete what the test created on an emulator.
    pub async fn cleanup(self) {
        match &self {
            Store::S3 { endpoint, bucket } => {
                // moto deletes a bucket with its objects through its reset-free API only when
                // empty; delete the objects through the store first.
                delete_all(&self).await;
                let _ = reqwest::Client::new()
                    .delete(format!("{endpoint}/{bucket}"))
                    .send()
                    .await;
            }
            Store::Azure {
                endpoint,
                container,
            } => {
                let _ = azure_request("DELETE", endpoint, container).await;
            }
            _ => {}
        }
    }
}

async fn delete_all(store: &Store) {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let url = url::Url::parse(&store.url()).expect("url");
    let (os, _) = object_store::parse_url_opts(&url, store.options()).expect("store");
    let os: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::from(os);
    let metas: Vec<_> = os.list(None).try_collect().await.unwrap_or_default();
    for m in metas {
        let _ = object_store::ObjectStoreExt::delete(os.as_ref(), &m.location).await;
    }
}

/// A SharedKey-signed container request to Azurite (`PUT`/`DELETE ?restype=container`).
async fn azure_request(method: &str, endpoint: &str, container: &str) -> reqwest::Response {
    let date = httpdate();
    let version = "2021-08-06";
    let account = "devstoreaccount1";
    let path = url::Url::parse(&format!("{endpoint}/{container}"))
        .expect("url")
        .path()
        .to_string();
    let string_to_sign = format!(
        "{method}\n\n\n{}\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{account}{path}\nrestype:container",
        ""
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .expect("key");
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        string_to_sign.as_bytes(),
    );
    let signature = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    let client = reqwest::Client::new();
    let req = match method {
        "PUT" => client
            .put(format!("{endpoint}/{container}?restype=container"))
            .header("Content-Length", "0"),
        _ => client.delete(format!("{endpoint}/{container}?restype=container")),
    };
    req.header("x-ms-date", date)
        .header("x-ms-version", version)
        .header("Authorization", format!("SharedKey {account}:{signature}"))
        .send()
        .await
        .expect("azurite reachable")
}

fn httpdate() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// The checkpoint after `rows` generator rows.
pub fn checkpoint(rows: u64) -> Checkpoint {
    Checkpoint::at(Position(serde_json::json!({ "rows": rows })))
}

/// Sorted ids of `batches` (column `id`).
pub fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    use arrow_array::cast::AsArray;
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .expect("id column")
                .as_primitive::<arrow_array::types::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    out.sort_unstable();
    out
}

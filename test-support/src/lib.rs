//! Test helpers shared by the Arcane crates' integration tests.
//!
//! [`Store`] is a fresh location on one of the stores the sink and the sources support: the
//! in-memory store, a local temporary directory, a bucket on the S3 server (moto) or a
//! container on the Azure Blob emulator (azurite). `scripts/test.sh` starts both emulators
//! on 127.0.0.1 and exports `ARCANE_TEST_S3_ENDPOINT` (`http://127.0.0.1:PORT`) and
//! `ARCANE_TEST_AZURITE_ENDPOINT` (`http://127.0.0.1:PORT/devstoreaccount1`); object_store
//! cannot create buckets or containers, so these helpers do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

pub mod brokers;
pub mod delta;
pub mod fuzz_corpus;
pub mod http_faults;
pub mod iceberg;
pub mod iceberg_rest;
pub mod proxy;
pub mod python;
pub mod rest_api;
pub mod rng;
pub mod server;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use object_store::ObjectStore;
use object_store::path::Path;

/// Name of the Azurite account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Well-known key of the Azurite account.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A name unique to this test run: `prefix` plus random hex, at most 30 characters, valid
/// as an S3 bucket or Azure container name when `prefix` is lower-case.
pub fn unique(prefix: &str) -> String {
    let mut name = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
    name.truncate(30);
    name
}

/// A fresh store location for one test.
#[derive(Debug)]
pub enum Store {
    /// `memory://NAME`.
    Memory(String),
    /// A temporary local directory (deleted when dropped).
    Local(tempfile::TempDir),
    /// A bucket on the S3 server.
    S3 {
        /// `http://127.0.0.1:PORT`.
        endpoint: String,
        /// The bucket.
        bucket: String,
    },
    /// A container on the Azure Blob emulator.
    Azure {
        /// `http://127.0.0.1:PORT/devstoreaccount1`.
        endpoint: String,
        /// The container.
        container: String,
    },
}

fn env(name: &str, what: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set; run the tests with scripts/test.sh, which starts {what}")
    })
}

impl Store {
    /// An in-memory location.
    pub fn memory() -> Self {
        Store::Memory(unique("mem"))
    }

    /// A temporary local directory.
    pub fn local() -> Self {
        Store::Local(tempfile::tempdir().expect("temp dir"))
    }

    /// A new bucket on the S3 server.
    pub async fn s3() -> Self {
        let endpoint = env("ARCANE_TEST_S3_ENDPOINT", "the S3 server (moto)");
        let bucket = unique("arcane-");
        let resp = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .expect("the S3 server is reachable");
        assert!(
            resp.status().is_success(),
            "create bucket: {}",
            resp.status()
        );
        Store::S3 { endpoint, bucket }
    }

    /// A new container on the Azure Blob emulator.
    pub async fn azure() -> Self {
        let endpoint = env(
            "ARCANE_TEST_AZURITE_ENDPOINT",
            "the Azure Blob emulator (azurite)",
        );
        let container = unique("arcane-");
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

    /// The URL of the location's `stream/` prefix, where tests put their dataset.
    pub fn url(&self) -> String {
        self.url_of("stream")
    }

    /// The URL of `path` inside the location (`s3://bucket/path`).
    pub fn url_of(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        match self {
            Store::Memory(name) => format!("memory://{name}/{path}"),
            Store::Local(dir) => format!("file://{}/{path}", dir.path().display()),
            Store::S3 { bucket, .. } => format!("s3://{bucket}/{path}"),
            Store::Azure { container, .. } => format!("az://{container}/{path}"),
        }
    }

    /// The `object_store` options (the spec's `storageOptions`) to reach the location.
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
                ("azure_storage_account_name", AZURITE_ACCOUNT.into()),
                ("azure_storage_account_key", AZURITE_KEY.into()),
                ("azure_storage_endpoint", endpoint.clone()),
                ("allow_http", "true".into()),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// The whole bucket/container/directory as an `object_store` (paths relative to its root).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        let url = url::Url::parse(&self.url_of("")).expect("url");
        match self {
            Store::Local(dir) => Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(dir.path())
                    .expect("local store"),
            ),
            _ => {
                let (store, _) = object_store::parse_url_opts(&url, self.options()).expect("store");
                Arc::from(store)
            }
        }
    }

    /// Put `bytes` at `path` (relative to the location's root).
    pub async fn put(&self, path: &str, bytes: Vec<u8>) {
        object_store::ObjectStoreExt::put(
            self.object_store().as_ref(),
            &Path::from(path),
            object_store::PutPayload::from(bytes),
        )
        .await
        .expect("put object");
    }

    /// The keys of the incomplete multipart uploads in the S3 bucket (ListMultipartUploads,
    /// which `object_store` has no call for); `None` for other stores.
    pub async fn incomplete_uploads(&self) -> Option<Vec<String>> {
        let Store::S3 { endpoint, bucket } = self else {
            return None;
        };
        let body = reqwest::Client::new()
            .get(format!("{endpoint}/{bucket}?uploads"))
            .send()
            .await
            .expect("the S3 server is reachable")
            .error_for_status()
            .expect("ListMultipartUploads")
            .text()
            .await
            .expect("body");
        let keys = body
            .split("<Upload>")
            .skip(1)
            .filter_map(|upload| {
                let start = upload.find("<Key>")? + "<Key>".len();
                let end = upload[start..].find("</Key>")? + start;
                Some(upload[start..end].to_string())
            })
            .collect();
        Some(keys)
    }

    /// Delete what the test created on an emulator (objects, then the bucket/container).
    pub async fn cleanup(self) {
        match &self {
            Store::S3 { endpoint, bucket } => {
                self.delete_all().await;
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
            Store::Memory(_) | Store::Local(_) => {}
        }
    }

    async fn delete_all(&self) {
        use futures::TryStreamExt;
        let store = self.object_store();
        let metas: Vec<_> = store.list(None).try_collect().await.unwrap_or_default();
        for m in metas {
            let _ = object_store::ObjectStoreExt::delete(store.as_ref(), &m.location).await;
        }
    }
}

/// A SharedKey-signed container request to Azurite (`PUT`/`DELETE ?restype=container`).
async fn azure_request(method: &str, endpoint: &str, container: &str) -> reqwest::Response {
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let path = url::Url::parse(&format!("{endpoint}/{container}"))
        .expect("url")
        .path()
        .to_string();
    let string_to_sign = format!(
        "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}{path}\nrestype:container"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .expect("key");
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
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
        .header(
            "Authorization",
            format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
        )
        .send()
        .await
        .expect("azurite is reachable")
}

//! # arcane-store
//!
//! Object-store locations shared by Arcane's sources and sinks, so that a URL means the same
//! store, the same options and the same errors everywhere.
//!
//! * [`open_location`] — a URL (`s3://`, `az://`/`abfss://`, `gs://`, `file://`, `memory://`,
//!   or a plain local path) and options → a [`Location`]: the store, the prefix inside it, a
//!   display form without credentials, and the [`MultipartStore`] view of cloud stores (whose
//!   uploads stay invisible until completed).
//! * [`store_error`] / [`classify`] — an `object_store` error as an Arcane error: missing
//!   buckets, permissions and credentials are permanent (exit code 1), network failures,
//!   timeouts and throttling transient (exit code 2); the store's message is kept.
//!
//! Options come from the environment's `AWS_*`, `AZURE_*`, `GOOGLE_*` and `OBJECT_STORE_*`
//! variables (as `object_store`'s `from_env` builders read them) and from the spec's
//! `storageOptions`, which win. An option in the spec that the store does not know is an
//! error naming it (a typo'd `aws_endpiont` would otherwise silently talk to AWS).
//!
//! ```
//! let loc = arcane_store::open_location("memory:///orders", std::iter::empty(), "sink.url").unwrap();
//! assert_eq!(loc.display, "memory:///orders");
//! assert_eq!(loc.child("_arcane/x.json").as_ref(), "orders/_arcane/x.json");
//! ```
//!
//! ## Features
//!
//! | feature | stores |
//! |---|---|
//! | `s3` | `s3://`, `s3a://` |
//! | `azure` | `az://`, `adl://`, `azure://`, `abfs://`, `abfss://` |
//! | `gcs` | `gs://` |
//! | always | `file://` (and local paths), `memory://` |
//!
//! A URL whose store is not compiled in is a configuration error that says which feature to
//! enable.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::sync::Arc;

use arcane_core::retry::RetryConfig;
use arcane_core::{Error, Result, Retry};
use object_store::ObjectStore;
use object_store::multipart::MultipartStore;
use object_store::path::Path;

/// The URL schemes Arcane knows (whether or not their store is compiled in).
pub const SUPPORTED_SCHEMES: &[&str] = &[
    "s3", "s3a", "az", "adl", "azure", "abfs", "abfss", "gs", "file", "memory",
];

/// Environment variable prefixes whose values become store options (`AWS_ENDPOINT` →
/// `aws_endpoint`), as `object_store`'s `from_env` builders do.
pub const ENV_PREFIXES: &[&str] = &["AWS_", "AZURE_", "GOOGLE_", "OBJECT_STORE_"];

/// An object store and the prefix Arcane owns (or reads) inside it.
#[derive(Clone)]
pub struct Location {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The same store's multipart API, for cloud and memory stores (uploads are invisible
    /// until completed, and can be completed or aborted by id later). `None` for the local
    /// file system.
    pub multipart: Option<Arc<dyn MultipartStore>>,
    /// The prefix inside the store.
    pub prefix: Path,
    /// The URL without credentials or query, for logs and errors.
    pub display: String,
    /// The directory of a `file://` URL.
    pub local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("display", &self.display)
            .field("prefix", &self.prefix)
            .field("multipart", &self.multipart.is_some())
            .finish_non_exhaustive()
    }
}

impl Location {
    /// `prefix/rel`.
    pub fn child(&self, rel: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// `path` relative to the prefix.
    pub fn relative(&self, path: &Path) -> String {
        let p = path.as_ref();
        let pre = self.prefix.as_ref();
        if pre.is_empty() {
            p.to_string()
        } else {
            p.strip_prefix(pre)
                .map(|r| r.trim_start_matches('/').to_string())
                .unwrap_or_else(|| p.to_string())
        }
    }

    /// The display URL of `path` (a path of this store).
    pub fn url_of(&self, path: &Path) -> String {
        format!(
            "{}/{}",
            self.display.trim_end_matches('/'),
            self.relative(path)
        )
    }
}

/// Parse `raw` (a URL, or a local path resolved against the working directory) and check its
/// scheme; errors are [`Error::Config`] naming `field`.
pub fn parse_url(raw: &str, field: &str) -> Result<url::Url> {
    let raw = &arcane_core::location::location_url(raw, field)?;
    let url = url::Url::parse(raw).map_err(|e| {
        Error::config(
            field,
            format!("\"{raw}\" is not a URL ({e}); expected e.g. s3://bucket/prefix or file:///data/stream"),
        )
    })?;
    if !SUPPORTED_SCHEMES.contains(&url.scheme()) {
        return Err(Error::config(
            field,
            format!(
                "unsupported scheme \"{}\"; expected s3, az, abfss, gs, file or memory",
                url.scheme()
            ),
        ));
    }
    Ok(url)
}

/// How a `file://` URL is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalMode {
    /// A directory Arcane writes: created if missing; the store is rooted at it (empty prefix).
    CreateDirectory,
    /// A directory Arcane reads: it must exist (a typo'd path is an error, not an empty
    /// source); the store is the whole file system and the prefix is the directory, so object
    /// paths are absolute paths without the leading `/`.
    ExistingDirectory,
}

/// Open the store of `url` with `options` (the spec's `storageOptions`) over the
/// environment's `AWS_*`/`AZURE_*`/`GOOGLE_*`/`OBJECT_STORE_*` variables. `field` names the
/// URL's setting in errors (options are named `{field's parent}.storageOptions.KEY`).
///
/// A `file://` directory is created if missing, so a fresh sink can start on an empty disk
/// ([`LocalMode::CreateDirectory`]; see [`open_location_with`] for sources).
pub fn open_location<'a>(
    url: &str,
    options: impl IntoIterator<Item = (&'a String, &'a String)>,
    field: &str,
) -> Result<Location> {
    open_location_with(url, options, field, LocalMode::CreateDirectory)
}

/// [`open_location`] with the given treatment of local directories.
pub fn open_location_with<'a>(
    url: &str,
    options: impl IntoIterator<Item = (&'a String, &'a String)>,
    field: &str,
    local: LocalMode,
) -> Result<Location> {
    open(url, options, field, local, None)
}

/// [`open_location`] for a writer whose store calls are retried under `retry` (the spec's
/// `retry` block): on S3, Azure and GCS every request is retried by the store's client —
/// after connection failures, timeouts, throttling (429) and server errors (5xx) — with
/// exponential backoff from `initialDelay` to `maxDelay` and `maxAttempts` attempts in all.
/// That client always adds jitter, whatever `retry.jitter` says; each retry is logged at
/// INFO by `object_store`. Local and in-memory stores do not retry.
pub fn open_location_retrying<'a>(
    url: &str,
    options: impl IntoIterator<Item = (&'a String, &'a String)>,
    field: &str,
    retry: &RetryConfig,
) -> Result<Location> {
    open(url, options, field, LocalMode::CreateDirectory, Some(retry))
}

/// The object-store client's retry settings for `retry`.
#[cfg(any(feature = "s3", feature = "azure", feature = "gcs"))]
pub fn client_retry(retry: &RetryConfig) -> object_store::RetryConfig {
    let attempts = retry.max_attempts.max(1);
    // Bounds the whole series of attempts of one request; long enough for every delay, and
    // never below the client's own default of three minutes.
    let delays = retry.max_delay.saturating_mul(attempts);
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: retry.initial_delay,
            max_backoff: retry.max_delay.max(retry.initial_delay),
            base: 2.0,
        },
        max_retries: (attempts - 1) as usize,
        retry_timeout: delays.max(std::time::Duration::from_secs(180)),
    }
}

fn open<'a>(
    url: &str,
    options: impl IntoIterator<Item = (&'a String, &'a String)>,
    field: &str,
    local: LocalMode,
    retry: Option<&RetryConfig>,
) -> Result<Location> {
    let parsed = parse_url(url, field)?;
    let spec_options: Vec<(String, String)> = options
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    match parsed.scheme() {
        "file" => open_local(&parsed, url, field, local),
        "memory" => {
            // One in-memory store per host name, shared by every sink and reader of the process.
            let host = parsed.host_str().unwrap_or_default().to_string();
            let store = memory_store(&host);
            let prefix = Path::from_url_path(parsed.path())
                .map_err(|e| Error::config(field, format!("invalid path in \"{url}\": {e}")))?;
            Ok(Location {
                store: store.clone(),
                multipart: Some(store),
                prefix,
                display: redact(&parsed),
                local_root: None,
            })
        }
        _ => open_cloud(&parsed, spec_options, field, retry),
    }
}

fn open_local(parsed: &url::Url, url: &str, field: &str, mode: LocalMode) -> Result<Location> {
    let dir = parsed.to_file_path().map_err(|()| {
        Error::config(
            field,
            format!("\"{url}\" is not an absolute file URL; use file:///absolute/path"),
        )
    })?;
    if mode == LocalMode::ExistingDirectory {
        if !dir.is_dir() {
            return Err(Error::config(
                field,
                format!(
                    "the directory {} does not exist (or is not a directory); check the path",
                    dir.display()
                ),
            ));
        }
        let prefix = Path::from_url_path(parsed.path())
            .map_err(|e| Error::config(field, format!("invalid path in \"{url}\": {e}")))?;
        return Ok(Location {
            store: Arc::new(object_store::local::LocalFileSystem::new()),
            multipart: None,
            prefix,
            display: redact(parsed),
            local_root: Some(std::path::PathBuf::from("/")),
        });
    }
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::config(
            field,
            format!(
                "cannot create directory {}: {e}; check the path and permissions",
                dir.display()
            ),
        )
    })?;
    let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| Error::config(field, format!("cannot open {}: {e}", dir.display())))?;
    Ok(Location {
        store: Arc::new(fs),
        multipart: None,
        prefix: Path::default(),
        display: redact(parsed),
        local_root: Some(dir),
    })
}

/// Options of the environment for a store.
fn env_options() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| ENV_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

#[cfg_attr(
    not(any(feature = "s3", feature = "azure", feature = "gcs")),
    allow(dead_code)
)]
fn options_field(field: &str, key: &str) -> String {
    let parent = field.rsplit_once('.').map_or("", |(p, _)| p);
    if parent.is_empty() {
        format!("storageOptions.{key}")
    } else {
        format!("{parent}.storageOptions.{key}")
    }
}

/// Apply `env` (unknown keys ignored: the environment holds other tools' variables too) and
/// `spec` (unknown keys are errors) to a builder.
#[cfg_attr(
    not(any(feature = "s3", feature = "azure", feature = "gcs")),
    allow(unused_macros)
)]
macro_rules! configure {
    ($builder:expr, $key:ty, $env:expr, $spec:expr, $field:expr) => {{
        let mut builder = $builder;
        for (k, v) in $env {
            if let Ok(key) = k.parse::<$key>() {
                builder = builder.with_config(key, v);
            }
        }
        for (k, v) in $spec {
            match k.parse::<$key>() {
                Ok(key) => builder = builder.with_config(key, v),
                Err(_) => {
                    return Err(Error::config(
                        options_field($field, &k),
                        format!(
                            "is not an option of this store; use object_store's keys (e.g. aws_endpoint, aws_region, azure_storage_account_name, google_service_account)"
                        ),
                    ));
                }
            }
        }
        builder
    }};
}

/// Build the store of `$builder` with the environment's and the spec's options
/// ([`configure!`]) and, for a writer, the client's retries under `retry`.
#[cfg_attr(
    not(any(feature = "s3", feature = "azure", feature = "gcs")),
    allow(unused_macros)
)]
macro_rules! cloud_store {
    ($builder:ident, $key:ty, $parsed:expr, $env:expr, $spec:expr, $field:expr, $retry:expr, $build_error:expr) => {{
        let builder = configure!(
            $builder::new().with_url($parsed.to_string()),
            $key,
            $env,
            $spec,
            $field
        );
        let builder = match $retry {
            Some(r) => builder.with_retry(client_retry(r)),
            None => builder,
        };
        let s = Arc::new(builder.build().map_err($build_error)?);
        (s.clone(), s)
    }};
}

// Without any cloud feature every arm returns an error and the tail is unreachable.
#[cfg_attr(
    not(any(feature = "s3", feature = "azure", feature = "gcs")),
    allow(unused_variables, unreachable_code)
)]
fn open_cloud(
    parsed: &url::Url,
    spec: Vec<(String, String)>,
    field: &str,
    retry: Option<&RetryConfig>,
) -> Result<Location> {
    let (scheme, prefix) = object_store::ObjectStoreScheme::parse(parsed)
        .map_err(|e| Error::config(field, format!("cannot open \"{}\": {e}", redact(parsed))))?;
    let display = redact(parsed);
    let build_error = |e: object_store::Error| {
        Error::config(
            field,
            format!("cannot open store for \"{display}\": {e}; check the URL and storageOptions"),
        )
    };
    let env = env_options();
    let (store, multipart): (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>) = match scheme {
        #[cfg(feature = "s3")]
        object_store::ObjectStoreScheme::AmazonS3 => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            cloud_store!(
                AmazonS3Builder,
                AmazonS3ConfigKey,
                parsed,
                env,
                spec,
                field,
                retry,
                build_error
            )
        }
        #[cfg(feature = "azure")]
        object_store::ObjectStoreScheme::MicrosoftAzure => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            cloud_store!(
                MicrosoftAzureBuilder,
                AzureConfigKey,
                parsed,
                env,
                spec,
                field,
                retry,
                build_error
            )
        }
        #[cfg(feature = "gcs")]
        object_store::ObjectStoreScheme::GoogleCloudStorage => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            cloud_store!(
                GoogleCloudStorageBuilder,
                GoogleConfigKey,
                parsed,
                env,
                spec,
                field,
                retry,
                build_error
            )
        }
        other => {
            let feature = match parsed.scheme() {
                "s3" | "s3a" => "s3",
                "gs" => "gcs",
                _ => "azure",
            };
            let _ = (spec, retry);
            return Err(Error::config(
                field,
                format!(
                    "\"{display}\" is a {other:?} URL, but this binary was built without the `{feature}` feature; rebuild with it (cargo build --features {feature}) or use another store"
                ),
            ));
        }
    };
    Ok(Location {
        store,
        multipart: Some(multipart),
        prefix,
        display,
        local_root: None,
    })
}

/// `url` without user, password or query (SAS tokens), for logs and errors.
pub fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.set_query(None);
    u.to_string()
}

/// Map a store error to a sink error named `sink`: missing containers, auth and permission
/// failures are permanent; everything else (network, timeouts, throttling, 5xx) is transient.
/// The store's error is kept as the cause, and its whole cause chain is in the message (the
/// reason of a failed request is often only in the innermost error: "connection refused").
pub fn store_error(sink: &str, what: String, e: object_store::Error) -> Error {
    let retry = classify(&e);
    let hint = match retry {
        _ if is_disk_full(&e) => DISK_FULL_HINT,
        Retry::Transient => {
            "the store may be unreachable; the stream will restart and resume from the last commit"
        }
        Retry::Permanent => {
            "check the bucket/container exists and the credentials in storageOptions or the environment"
        }
    };
    Error::sink(
        sink,
        format!("{what}: {}; {hint}", arcane_core::error::Report(&e)),
        retry,
        Some(Box::new(e)),
    )
}

/// Map a store error to a source error named `source`, classified like [`store_error`].
pub fn source_store_error(source: &str, what: String, e: object_store::Error) -> Error {
    let retry = classify(&e);
    let hint = match retry {
        _ if is_disk_full(&e) => DISK_FULL_HINT,
        Retry::Transient => {
            "the store may be unreachable; the stream will restart and resume from the last commit"
        }
        Retry::Permanent => {
            "check the URL (bucket/container and prefix) and the credentials in storageOptions or the environment"
        }
    };
    Error::Source {
        source_name: source.to_string(),
        message: format!("{what}: {}; {hint}", arcane_core::error::Report(&e)),
        retry,
        source: Some(Box::new(e)),
    }
}

/// What to do when a local volume is full.
const DISK_FULL_HINT: &str = "the disk is full: free space on that volume (or give it more) and rerun; everything committed is kept, nothing partial is visible, and the rerun resumes from the last commit";

/// Whether `e` says a local volume is full (or over its quota): restarting does not help
/// until someone frees space.
pub fn is_disk_full(e: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && (matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || io.raw_os_error() == Some(28))
        {
            return true;
        }
        cause = c.source();
    }
    // Some wrappers keep only the message of the I/O error.
    let text = arcane_core::error::Report(e).to_string();
    text.contains("No space left on device") || text.contains("os error 28")
}

/// Whether a store error may go away on retry. A full local disk does not (it needs someone
/// to free space), so it is permanent, like missing buckets and denied permissions.
pub fn classify(e: &object_store::Error) -> Retry {
    use object_store::Error as E;
    if is_disk_full(e) {
        return Retry::Permanent;
    }
    match e {
        E::Unauthenticated { .. }
        | E::PermissionDenied { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::NotFound { .. } => Retry::Permanent,
        E::Generic { source, .. } => {
            let msg = source.to_string().to_ascii_lowercase();
            if [
                "status 401",
                "status 403",
                "status 404",
                "nosuchbucket",
                "containernotfound",
                "authenticationfailed",
                "authorizationfailure",
                "accessdenied",
                "invalidaccesskeyid",
                "signaturedoesnotmatch",
            ]
            .iter()
            .any(|p| msg.contains(p))
            {
                Retry::Permanent
            } else {
                Retry::Transient
            }
        }
        _ => Retry::Transient,
    }
}

fn memory_store(host: &str) -> Arc<object_store::memory::InMemory> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static STORES: OnceLock<Mutex<HashMap<String, Arc<object_store::memory::InMemory>>>> =
        OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    stores.entry(host.to_string()).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn local_paths_and_file_urls_open_the_local_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/out", dir.path().display());
        let loc = open_location(&url, std::iter::empty(), "sink.url").unwrap();
        assert!(loc.multipart.is_none());
        assert_eq!(
            loc.local_root.as_deref(),
            Some(dir.path().join("out").as_path())
        );
        assert!(dir.path().join("out").is_dir());
    }

    #[test]
    fn a_source_directory_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/landing/", dir.path().display());
        let err = open_location_with(
            &url,
            std::iter::empty(),
            "spec.source.url",
            LocalMode::ExistingDirectory,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.source.url: the directory"),
            "{err}"
        );
        std::fs::create_dir(dir.path().join("landing")).unwrap();
        let loc = open_location_with(
            &url,
            std::iter::empty(),
            "spec.source.url",
            LocalMode::ExistingDirectory,
        )
        .unwrap();
        assert_eq!(
            loc.prefix.as_ref(),
            format!("{}/landing", dir.path().display()).trim_start_matches('/')
        );
    }

    #[test]
    fn errors_name_the_setting() {
        let err = open_location("s4://b/x", std::iter::empty(), "spec.sink.url").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.sink.url: unsupported scheme"),
            "{err}"
        );
        #[cfg(feature = "s3")]
        {
            let opts = BTreeMap::from([("aws_endpiont".to_string(), "http://x".to_string())]);
            let err = open_location("s3://b/x", &opts, "spec.sink.url").unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("spec.sink.storageOptions.aws_endpiont: "),
                "{err}"
            );
        }
        #[cfg(not(feature = "gcs"))]
        {
            let err = open_location("gs://b/x", &BTreeMap::new(), "spec.sink.url").unwrap_err();
            assert!(err.to_string().contains("`gcs` feature"), "{err}");
        }
    }

    #[test]
    fn classification() {
        let nf = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert_eq!(classify(&nf), Retry::Permanent);
        let generic = object_store::Error::Generic {
            store: "S3",
            source: "connection reset by peer".into(),
        };
        assert_eq!(classify(&generic), Retry::Transient);
        let err = source_store_error("blob-landing s3://b/", "listing failed".into(), nf);
        assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal);
        assert!(
            arcane_core::error::Report(&err)
                .to_string()
                .contains("gone")
        );
    }
}

//! Opening the object store named by a URL, and mapping its errors.

use std::sync::Arc;

use arcane_core::{Error, Result, Retry};
use object_store::ObjectStore;
use object_store::path::Path;

use super::config::parse_url;

/// An object store and the prefix the sink owns inside it.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    /// The URL without credentials, for logs and errors.
    pub(crate) display: String,
    /// The directory of a `file://` URL.
    pub(crate) local_root: Option<std::path::PathBuf>,
}

impl Location {
    /// `prefix/rel`.
    pub(crate) fn child(&self, rel: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// `path` relative to the prefix (as stored in manifests).
    pub(crate) fn relative(&self, path: &Path) -> String {
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
}

/// Environment variable prefixes whose values become store options (`AWS_ENDPOINT` →
/// `aws_endpoint`), as `object_store`'s `from_env` builders do.
const ENV_PREFIXES: &[&str] = &["AWS_", "AZURE_", "GOOGLE_", "OBJECT_STORE_"];

/// Open the store of `url` with `options` over the environment's `AWS_*`/`AZURE_*`/`GOOGLE_*`.
pub(crate) fn open_location<'a>(
    url: &str,
    options: impl IntoIterator<Item = (&'a String, &'a String)>,
    field: &str,
) -> Result<Location> {
    let parsed = parse_url(url, field)?;
    let mut opts: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| ENV_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    opts.extend(
        options
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
    );
    let mut local_root = None;
    let (store, prefix) = if parsed.scheme() == "file" {
        // A local directory: created if missing, so a fresh stream can start on an empty disk.
        let dir = parsed.to_file_path().map_err(|()| {
            Error::config(
                field,
                format!("\"{url}\" is not an absolute file URL; use file:///absolute/path"),
            )
        })?;
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
        local_root = Some(dir);
        (Arc::new(fs) as Arc<dyn ObjectStore>, Path::default())
    } else if parsed.scheme() == "memory" {
        // One in-memory store per host name, shared by every sink and reader of the process.
        let host = parsed.host_str().unwrap_or_default().to_string();
        let store = memory_store(&host);
        let prefix = Path::from_url_path(parsed.path())
            .map_err(|e| Error::config(field, format!("invalid path in \"{url}\": {e}")))?;
        (store, prefix)
    } else {
        let (store, prefix) = object_store::parse_url_opts(&parsed, opts).map_err(|e| {
            Error::config(
                field,
                format!(
                    "cannot open store for \"{}\": {e}; check the URL and sink.storageOptions",
                    redact(&parsed)
                ),
            )
        })?;
        (Arc::from(store), prefix)
    };
    Ok(Location {
        store,
        prefix,
        display: redact(&parsed),
        local_root,
    })
}

fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.set_query(None);
    u.to_string()
}

/// Map a store error to a sink error: missing containers, auth and permission failures are
/// permanent; everything else (network, timeouts, throttling, 5xx) is transient.
pub(crate) fn store_error(sink: &str, what: String, e: object_store::Error) -> Error {
    let retry = classify(&e);
    let hint = match retry {
        Retry::Transient => {
            "the store may be unreachable; the stream will restart and resume from the last commit"
        }
        Retry::Permanent => {
            "check the bucket/container exists and the credentials in sink.storageOptions or the environment"
        }
    };
    Error::sink(
        sink,
        format!("{what}: {e}; {hint}"),
        retry,
        Some(Box::new(e)),
    )
}

fn classify(e: &object_store::Error) -> Retry {
    use object_store::Error as E;
    match e {
        E::Unauthenticated { .. }
        | E::PermissionDenied { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. } => Retry::Permanent,
        E::NotFound { .. } => Retry::Permanent,
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

fn memory_store(host: &str) -> Arc<dyn ObjectStore> {
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

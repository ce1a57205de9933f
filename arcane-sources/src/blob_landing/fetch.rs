//! Reading an object as a blocking [`Read`] (for decoding on a blocking thread), with
//! decompression; every store call retried under the spec's `retry` policy ([`store_call`]).

use std::future::Future;
use std::io::{self, Read};
use std::sync::Arc;

use arcane_core::Retry;
use arcane_core::error::Report;
use arcane_core::retry::{Attempt, Exhausted, RetryConfig, retry_notify};
use bytes::{Buf, Bytes};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::config::Compression;

/// Bytes fetched per request: large enough that one request per chunk costs nothing (one
/// message, one wake-up), small enough to bound memory.
const FETCH_CHUNK_BYTES: u64 = 4 << 20;
/// Chunks fetched ahead of the decoder.
const FETCH_AHEAD_CHUNKS: usize = 2;

/// An error from the object store while reading (transient), as opposed to bad content.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct StoreReadError(pub(crate) object_store::Error);

/// Whether an I/O error came from the store rather than from the content.
pub(crate) fn store_error(e: &io::Error) -> Option<&object_store::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<StoreReadError>())
        .map(|s| &s.0)
}

/// How the source's store calls are retried, and how they are named in its logs.
#[derive(Debug, Clone)]
pub(crate) struct StoreRetry {
    pub(crate) policy: RetryConfig,
    /// The source's name, for the log lines.
    pub(crate) source: Arc<str>,
}

impl StoreRetry {
    /// Run the store call `op` (`what`: "listing s3://b/landing/", "reading s3://b/f.csv")
    /// under the policy: failures [`arcane_store::classify`] calls transient are retried, each
    /// logged at WARN with its cause chain and the next delay; others are returned at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future stops the call and the retries.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: &str,
        op: F,
    ) -> Result<T, Exhausted<object_store::Error>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        retry_notify(
            &self.policy,
            op,
            |e| arcane_store::classify(e) == Retry::Transient,
            None,
            |a: &Attempt<'_, object_store::Error>| {
                let cause = Report(a.error).to_string();
                let (made, attempts, delay) = (a.attempt, a.max_attempts, a.next_delay);
                tracing::warn!(
                    source = %self.source,
                    attempt = made,
                    attempts,
                    retry_in = ?delay,
                    error = %cause,
                    "{what} failed (attempt {made} of {attempts}): {cause}; retrying in {delay:.1?}"
                );
            },
        )
        .await
    }
}

/// The bytes of an object from `offset`, read with blocking calls: fetched by a Tokio task in
/// large ranged requests, or, for a file on the local file system, read from it directly
/// (no intermediate copies, no message per chunk).
///
/// Must be created inside a Tokio runtime and read outside of async code (a blocking thread).
#[derive(Debug)]
pub(crate) struct ChunkReader(Inner);

#[derive(Debug)]
enum Inner {
    Remote {
        rx: mpsc::Receiver<Result<Bytes, object_store::Error>>,
        current: Bytes,
        _fetch: AbortOnDropHandle<()>,
    },
    Local {
        path: std::path::PathBuf,
        offset: u64,
        file: Option<std::fs::File>,
    },
}

impl ChunkReader {
    /// Read `path` of `store` from `offset`, each ranged request retried as `retry` says
    /// (`origin` names the object in its log lines); `local` is the object's path on the local
    /// file system when the store is one.
    pub(crate) fn open(
        store: Arc<dyn ObjectStore>,
        path: Path,
        offset: u64,
        size: u64,
        local: Option<std::path::PathBuf>,
        retry: StoreRetry,
        origin: &str,
    ) -> Self {
        if let Some(path) = local {
            return Self(Inner::Local {
                path,
                offset,
                file: None,
            });
        }
        let (tx, rx) = mpsc::channel(FETCH_AHEAD_CHUNKS);
        // Ranged requests of FETCH_CHUNK_BYTES, one message each (a streamed GET yields chunks
        // of a few KiB, one wake-up of the decoder each).
        let what = format!("reading {origin}");
        let fetch = tokio::spawn(async move {
            let mut at = offset;
            while at < size {
                let end = (at + FETCH_CHUNK_BYTES).min(size);
                let chunk = retry
                    .call(&what, || store.get_range(&path, at..end))
                    .await
                    .map_err(|e| e.error);
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
                at = end;
            }
        });
        Self(Inner::Remote {
            rx,
            current: Bytes::new(),
            _fetch: AbortOnDropHandle::new(fetch),
        })
    }
}

/// A local I/O failure as a store failure (transient), not as bad content.
fn local_error(path: &std::path::Path, e: io::Error) -> io::Error {
    let path = path.display().to_string();
    let store_error = if e.kind() == io::ErrorKind::NotFound {
        object_store::Error::NotFound {
            path,
            source: Box::new(e),
        }
    } else {
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("{path}: {e}").into(),
        }
    };
    io::Error::other(StoreReadError(store_error))
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::Remote { rx, current, .. } => {
                while current.is_empty() {
                    match rx.blocking_recv() {
                        None => return Ok(0),
                        Some(Ok(chunk)) => *current = chunk,
                        Some(Err(e)) => return Err(io::Error::other(StoreReadError(e))),
                    }
                }
                let n = out.len().min(current.len());
                out[..n].copy_from_slice(&current[..n]);
                current.advance(n);
                Ok(n)
            }
            Inner::Local { path, offset, file } => {
                if file.is_none() {
                    use std::io::Seek;
                    let mut f = std::fs::File::open(&*path).map_err(|e| local_error(path, e))?;
                    if *offset > 0 {
                        f.seek(io::SeekFrom::Start(*offset))
                            .map_err(|e| local_error(path, e))?;
                    }
                    *file = Some(f);
                }
                match file.as_mut() {
                    Some(f) => loop {
                        match f.read(out) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            other => return other.map_err(|e| local_error(path, e)),
                        }
                    },
                    None => Ok(0),
                }
            }
        }
    }
}

/// The concrete compression of `path` under `setting`.
pub(crate) fn resolve_compression(setting: Compression, path: &str) -> Compression {
    match setting {
        Compression::Auto => {
            let lower = path.to_ascii_lowercase();
            if lower.ends_with(".gz") || lower.ends_with(".gzip") {
                Compression::Gzip
            } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
                Compression::Zstd
            } else {
                Compression::None
            }
        }
        other => other,
    }
}

/// Wrap `raw` in a decompressor.
pub(crate) fn decompress(
    raw: ChunkReader,
    compression: Compression,
) -> io::Result<Box<dyn Read + Send>> {
    Ok(match compression {
        Compression::Auto | Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(raw))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw)?),
    })
}

/// Where the raw (compressed) read of a file starts to resume at decompressed byte `offset`:
/// uncompressed objects are read with a ranged request, compressed ones from the start.
pub(crate) fn raw_offset(compression: Compression, offset: u64) -> u64 {
    match compression {
        Compression::Auto | Compression::None => offset,
        Compression::Gzip | Compression::Zstd => 0,
    }
}

/// Decompress `raw` (opened at [`raw_offset`]) and position it at decompressed byte `offset`.
pub(crate) fn open_decompressed(
    raw: ChunkReader,
    compression: Compression,
    offset: u64,
) -> io::Result<Box<dyn Read + Send>> {
    let mut reader = decompress(raw, compression)?;
    if raw_offset(compression, offset) < offset {
        let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink())?;
        if skipped < offset {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file holds {skipped} bytes after decompression but the stored position is at byte {offset}; was the file replaced?"
                ),
            ));
        }
    }
    Ok(reader)
}

//! Reading an object as a blocking [`Read`] (for decoding on a blocking thread), with
//! decompression.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::Compression;

/// Chunks fetched ahead of the decoder.
const FETCH_AHEAD_CHUNKS: usize = 16;

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

/// Aborts a task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The bytes of an object from `offset`, fetched by a Tokio task and read with blocking calls.
///
/// Must be created inside a Tokio runtime and read outside of async code (a blocking thread).
#[derive(Debug)]
pub(crate) struct ChunkReader {
    rx: mpsc::Receiver<Result<Bytes, object_store::Error>>,
    current: Bytes,
    _fetch: AbortOnDrop<()>,
}

impl ChunkReader {
    pub(crate) fn open(store: Arc<dyn ObjectStore>, path: Path, offset: u64, size: u64) -> Self {
        let (tx, rx) = mpsc::channel(FETCH_AHEAD_CHUNKS);
        let fetch = tokio::spawn(async move {
            if offset >= size {
                return;
            }
            let options = GetOptions {
                range: (offset > 0).then_some(GetRange::Offset(offset)),
                ..GetOptions::default()
            };
            let mut stream = match store.get_opts(&path, options).await {
                Ok(result) => result.into_stream(),
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        Self {
            rx,
            current: Bytes::new(),
            _fetch: AbortOnDrop(fetch),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(io::Error::other(StoreReadError(e))),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
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

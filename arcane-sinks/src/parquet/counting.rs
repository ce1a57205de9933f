//! A store that counts the requests made through it (tests only): the in-memory store behind
//! both [`ObjectStore`] and [`MultipartStore`], one counter per request kind as a cloud store
//! would send them (a bulk delete of up to 1 000 objects is one request, as on S3).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

use super::store::Location;

/// Request counts by kind (`put`, `get`, `head`, `list`, `delete`, `create_multipart`,
/// `put_part`, `complete_multipart`, `abort_multipart`, `copy`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts(Arc<Mutex<BTreeMap<&'static str, usize>>>);

impl Counts {
    fn add(&self, kind: &'static str, n: usize) {
        if n > 0 {
            *self
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(kind)
                .or_default() += n;
        }
    }

    /// The counts so far, and reset.
    pub(crate) fn take(&self) -> BTreeMap<&'static str, usize> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Total of `counts`.
pub(crate) fn total(counts: &BTreeMap<&'static str, usize>) -> usize {
    counts.values().sum()
}

#[derive(Debug)]
pub(crate) struct CountingStore {
    inner: Arc<InMemory>,
    counts: Counts,
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

/// A memory location `memory:///{prefix}` whose requests are counted in the returned
/// [`Counts`]. With `multipart == false` it has no multipart API (like the local file system).
pub(crate) fn counting_location(prefix: &str, multipart: bool) -> (Location, Counts) {
    let counts = Counts::default();
    let store = Arc::new(CountingStore {
        inner: Arc::new(InMemory::new()),
        counts: counts.clone(),
    });
    let loc = Location {
        store: store.clone(),
        multipart: multipart.then_some(store as Arc<dyn MultipartStore>),
        prefix: Path::from(prefix),
        display: format!("memory:///{prefix}"),
        local_root: None,
    };
    (loc, counts)
}

#[async_trait::async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.counts.add("put", 1);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.counts.add("create_multipart", 1);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload {
            inner,
            counts: self.counts.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.counts
            .add(if options.head { "head" } else { "get" }, 1);
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // Bulk deletes go out in chunks of up to 1 000 objects per request, as on S3.
        let inner = self.inner.clone();
        let counts = self.counts.clone();
        locations
            .chunks(1_000)
            .flat_map(move |chunk| {
                counts.add("delete", 1);
                inner.delete_stream(futures::stream::iter(chunk).boxed())
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counts.add("list", 1);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.counts.add("list", 1);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.counts.add("copy", 1);
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    counts: Counts,
}

#[async_trait::async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.counts.add("put_part", 1);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.counts.add("complete_multipart", 1);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.counts.add("abort_multipart", 1);
        self.inner.abort().await
    }
}

#[async_trait::async_trait]
impl MultipartStore for CountingStore {
    async fn create_multipart(&self, path: &Path) -> Result<MultipartId> {
        self.counts.add("create_multipart", 1);
        self.inner.create_multipart(path).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> Result<PartId> {
        self.counts.add("put_part", 1);
        self.inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> Result<PutResult> {
        self.counts.add("complete_multipart", 1);
        self.inner.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> Result<()> {
        self.counts.add("abort_multipart", 1);
        self.inner.abort_multipart(path, id).await
    }
}

//! What the query service may read: only files that a committed manifest entry names, through a
//! read-only view of the archive's object store.
//!
//! The archiver uploads a segment's files before it commits the segment's manifest entry, so the
//! store can hold files that are not part of the archive yet (or never will be: a crash leaves
//! them, and the next run overwrites them). [`CommittedIndex`] keeps the live files of every
//! committed entry (expired files excluded) with their sizes, and [`ArchiveView`] lists exactly
//! those, from the index rather than the store, and refuses every write, so DataFusion's listing
//! tables see exactly the archive. The registry
//! ([`ArchiveOnlyRegistry`]) knows no other store, so no SQL can read a local file or another
//! bucket.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures_util::stream::{BoxStream, StreamExt};
use meridian_archive::manifest::{self, ManifestEntry};
use meridian_archive::store::ArchiveStore;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};

use crate::error::Result;

/// The scheme and host under which the archive is registered in DataFusion.
pub const ARCHIVE_URL: &str = "meridian://archive";

/// The live files of every committed manifest entry, refreshed from the store.
#[derive(Debug, Default)]
pub struct CommittedIndex {
    /// Entries by (broker, manifest object path), with the e-tag/size they were read at.
    entries: RwLock<HashMap<String, (String, ManifestEntry)>>,
    /// Live files by path, sorted so that a folder's files are one range.
    live: RwLock<BTreeMap<String, LiveFile>>,
    refreshed: RwLock<Option<Instant>>,
}

impl CommittedIndex {
    /// Whether `path` is a live file of a committed entry.
    pub fn contains(&self, path: &str) -> bool {
        self.live.read().expect("index lock").contains_key(path)
    }

    /// Live files known.
    pub fn len(&self) -> usize {
        self.live.read().expect("index lock").len()
    }

    /// Whether no file is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every committed entry known, any order.
    pub fn entries(&self) -> Vec<ManifestEntry> {
        self.entries
            .read()
            .expect("index lock")
            .values()
            .map(|(_, entry)| entry.clone())
            .collect()
    }

    /// Reads new and changed manifest entries (at most every `min_interval`). Entries are listed,
    /// and only the ones whose object changed since the last read are loaded: a refresh of an
    /// unchanged archive costs one listing per broker.
    pub async fn refresh(&self, store: &ArchiveStore, min_interval: Duration) -> Result<()> {
        if let Some(last) = *self.refreshed.read().expect("index lock")
            && last.elapsed() < min_interval
        {
            return Ok(());
        }
        let mut seen = HashMap::new();
        for broker in manifest::brokers(store).await? {
            let dir = Path::from(format!("{}/{broker}", meridian_archive::layout::MANIFESTS));
            let listed: Vec<ObjectMeta> = store
                .inner
                .list(Some(&dir))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(store.error(format!("listing {dir}")))?;
            for meta in listed {
                let version = format!(
                    "{:?}/{}/{}",
                    meta.e_tag,
                    meta.size,
                    meta.last_modified.timestamp_millis()
                );
                seen.insert(meta.location.to_string(), (broker.clone(), meta, version));
            }
        }
        let known: HashMap<String, String> = self
            .entries
            .read()
            .expect("index lock")
            .iter()
            .map(|(path, (version, _))| (path.clone(), version.clone()))
            .collect();
        let mut loaded = Vec::new();
        for (path, (broker, meta, version)) in &seen {
            if known.get(path) == Some(version) {
                continue;
            }
            let Some(start) = meta
                .location
                .filename()
                .and_then(|name| name.strip_suffix(".json"))
                .and_then(|start| start.parse::<u64>().ok())
            else {
                continue;
            };
            loaded.push((
                path.clone(),
                version.clone(),
                manifest::load(store, broker, start).await?,
            ));
        }
        let mut entries = self.entries.write().expect("index lock");
        entries.retain(|path, _| seen.contains_key(path));
        for (path, version, entry) in loaded {
            entries.insert(path, (version, entry));
        }
        let live: BTreeMap<String, LiveFile> = entries.values().flat_map(|(_, entry)| queryable_files(entry)).collect();
        drop(entries);
        *self.live.write().expect("index lock") = live;
        *self.refreshed.write().expect("index lock") = Some(Instant::now());
        Ok(())
    }
}

/// A live file as its manifest entry describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LiveFile {
    size: u64,
    /// When its entry was committed (Unix ms): its "last modified" for DataFusion's caches, which
    /// key on size and time. A committed file never changes (a re-run rewrites uncommitted files
    /// only), so this identifies its contents as well as the store's own time would.
    committed_at: i64,
}

impl LiveFile {
    fn meta(&self, path: &str) -> ObjectMeta {
        ObjectMeta {
            location: Path::parse(path).unwrap_or_else(|_| Path::from(path)),
            last_modified: (UNIX_EPOCH + Duration::from_millis(self.committed_at.max(0) as u64)).into(),
            size: self.size,
            e_tag: None,
            version: None,
        }
    }
}

/// The files of `entry` that queries read: live (not expired) trace files and message files,
/// except the message files of the trace topic, whose records are the `traces` table (one row
/// per event) and would only be opaque protobuf bodies in `messages`.
fn queryable_files(entry: &ManifestEntry) -> Vec<(String, LiveFile)> {
    let live = |size: u64| LiveFile {
        size,
        committed_at: entry.archived_at,
    };
    let messages = entry
        .files
        .iter()
        .filter(|file| file.expired_at.is_none() && file.topic != meridian_proto::trace::TRACE_TOPIC)
        .map(|file| (file.path.clone(), live(file.bytes)));
    let traces = entry
        .traces
        .iter()
        .filter(|file| file.expired_at.is_none())
        .map(|file| (file.path.clone(), live(file.bytes)));
    messages.chain(traces).collect()
}

impl CommittedIndex {
    /// The live files under `prefix` (all with `None`), as a listing of the store would give them.
    fn list(&self, prefix: Option<&Path>) -> Vec<ObjectMeta> {
        let live = self.live.read().expect("index lock");
        let start = folder(prefix);
        live.range(start.clone()..)
            .take_while(|(path, _)| path.starts_with(&start))
            .map(|(path, file)| file.meta(path))
            .collect()
    }

    /// The live files directly in the folder `prefix`, and its sub-folders that hold live files.
    fn list_with_delimiter(&self, prefix: Option<&Path>) -> ListResult {
        let live = self.live.read().expect("index lock");
        let start = folder(prefix);
        let mut objects = Vec::new();
        let mut folders = BTreeSet::new();
        for (path, file) in live
            .range(start.clone()..)
            .take_while(|(path, _)| path.starts_with(&start))
        {
            match path[start.len()..].split_once('/') {
                Some((child, _)) => {
                    folders.insert(format!("{start}{child}"));
                }
                None => objects.push(file.meta(path)),
            }
        }
        ListResult {
            common_prefixes: folders.iter().map(|folder| Path::from(folder.as_str())).collect(),
            objects,
        }
    }
}

/// `prefix` as the start of the paths inside it: `a/b` gives `a/b/`, none gives the empty string.
fn folder(prefix: Option<&Path>) -> String {
    match prefix.map(|prefix| prefix.as_ref()) {
        None | Some("") => String::new(),
        Some(prefix) => format!("{prefix}/"),
    }
}

/// The archive as DataFusion sees it: listings show committed files only, writes are refused.
#[derive(Debug)]
pub struct ArchiveView {
    inner: Arc<dyn ObjectStore>,
    index: Arc<CommittedIndex>,
}

impl ArchiveView {
    /// A view of `store` through `index`.
    pub fn new(store: &ArchiveStore, index: Arc<CommittedIndex>) -> ArchiveView {
        ArchiveView {
            inner: store.inner.clone(),
            index,
        }
    }

    fn refused(operation: &str) -> object_store::Error {
        object_store::Error::NotSupported {
            source: format!("the query service reads the archive only; {operation} is refused").into(),
        }
    }
}

impl std::fmt::Display for ArchiveView {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "ArchiveView({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for ArchiveView {
    async fn put_opts(&self, _: &Path, _: PutPayload, _: PutOptions) -> object_store::Result<PutResult> {
        Err(ArchiveView::refused("writing"))
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(ArchiveView::refused("writing"))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        if !self.index.contains(location.as_ref()) {
            return Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: "not a committed archive file".into(),
            });
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(ArchiveView::refused("deleting"))).boxed()
    }

    // Listings come from the committed index, not the store: the manifests already name every
    // file with its size, and walking the store's folders for each query cost 15 to 20% of the
    // planning on a local disk (walkdir, a stat per file), and a round trip per folder on S3. A
    // committed file missing from the store fails the query that reads it, naming the file,
    // instead of silently dropping its rows.
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        futures_util::stream::iter(self.index.list(prefix).into_iter().map(Ok)).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        Ok(self.index.list_with_delimiter(prefix))
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> object_store::Result<()> {
        Err(ArchiveView::refused("copying"))
    }
}

/// An object store registry that knows the archive and nothing else: a URL of any other store
/// (`file://`, another bucket) is an error, so no query reads outside the archive.
#[derive(Debug)]
pub struct ArchiveOnlyRegistry {
    archive: Arc<dyn ObjectStore>,
}

impl ArchiveOnlyRegistry {
    /// A registry serving `archive` under [`ARCHIVE_URL`].
    pub fn new(archive: Arc<dyn ObjectStore>) -> ArchiveOnlyRegistry {
        ArchiveOnlyRegistry { archive }
    }
}

impl ObjectStoreRegistry for ArchiveOnlyRegistry {
    fn register_store(&self, _: &url::Url, _: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        // The registry is fixed at start; nothing registers stores at run time in this service.
        None
    }

    fn get_store(&self, url: &url::Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if url.scheme() == "meridian" && url.host_str() == Some("archive") {
            return Ok(self.archive.clone());
        }
        Err(datafusion::error::DataFusionError::Plan(format!(
            "{url} is outside the archive: the query service reads only the tables messages, traces and broker_stats (and their views)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(paths: &[&str]) -> CommittedIndex {
        let index = CommittedIndex::default();
        *index.live.write().unwrap() = paths
            .iter()
            .enumerate()
            .map(|(number, path)| {
                let file = LiveFile {
                    size: 100 + number as u64,
                    committed_at: 1_795_392_000_000,
                };
                (path.to_string(), file)
            })
            .collect();
        index
    }

    fn names(metas: &[ObjectMeta]) -> Vec<String> {
        metas.iter().map(|meta| meta.location.to_string()).collect()
    }

    /// Listings from the index behave as a store's: whole path segments, folders once each.
    #[test]
    fn listings_from_the_index_match_path_segments() {
        let index = index_of(&[
            "messages/topic=a/date=2026-11-25/broker-a-0.parquet",
            "messages/topic=a/date=2026-11-26/broker-a-1.parquet",
            "messages/topic=ab/date=2026-11-25/broker-a-0.parquet",
            "traces/date=2026-11-25/broker-a-0.parquet",
        ]);
        assert_eq!(index.list(None).len(), 4);
        assert_eq!(
            names(&index.list(Some(&Path::from("messages/topic=a")))),
            [
                "messages/topic=a/date=2026-11-25/broker-a-0.parquet",
                "messages/topic=a/date=2026-11-26/broker-a-1.parquet"
            ]
        );
        assert!(index.list(Some(&Path::from("messages/topic"))).is_empty());
        let listed = index.list_with_delimiter(Some(&Path::from("messages")));
        assert!(listed.objects.is_empty());
        assert_eq!(
            listed.common_prefixes,
            [Path::from("messages/topic=a"), Path::from("messages/topic=ab")]
        );
        let listed = index.list_with_delimiter(Some(&Path::from("traces/date=2026-11-25")));
        assert_eq!(names(&listed.objects), ["traces/date=2026-11-25/broker-a-0.parquet"]);
        assert_eq!(listed.objects[0].size, 103);
        assert_eq!(listed.objects[0].last_modified.timestamp_millis(), 1_795_392_000_000);
        assert_eq!(
            index.list_with_delimiter(None).common_prefixes,
            [Path::from("messages"), Path::from("traces")]
        );
    }
}

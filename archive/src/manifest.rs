//! The manifest: per broker, one entry object per archived segment
//! (`manifests/<broker>/<segment_start>.json`). An entry is written in one put, which every
//! object store makes atomic (S3 by nature, the local filesystem by writing a temporary file and
//! renaming it), and only after all of the segment's files are uploaded: a file is part of the
//! archive exactly when an entry names it. Entries are created with `PutMode::Create`, so two
//! archivers can never commit different contents for one segment.

use futures_util::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::convert::{ConvertedSegment, QueueRange};
use crate::error::{ArchiveError, Result};
use crate::layout;
use crate::store::ArchiveStore;

/// Version of the entry format.
pub const MANIFEST_VERSION: u32 = 1;

/// One archived file, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path in the store.
    pub path: String,
    /// Topic of every row.
    pub topic: String,
    /// UTC date of every row's store time (`yyyy-mm-dd`).
    pub date: String,
    /// Rows.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// crc32c of the file's bytes.
    pub checksum: u32,
    /// Smallest store time (Unix ms).
    pub min_store_time: i64,
    /// Largest store time (Unix ms).
    pub max_store_time: i64,
    /// Offsets per queue.
    pub queues: Vec<QueueRange>,
    /// When archive retention deleted the file (Unix ms); it no longer exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<i64>,
}

/// One archived file of trace events (see [`crate::traces`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceFileEntry {
    /// Path in the store.
    pub path: String,
    /// UTC date of every event's timestamp (`yyyy-mm-dd`).
    pub date: String,
    /// Events (rows).
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// crc32c of the file's bytes.
    pub checksum: u32,
    /// Smallest event timestamp (Unix ms).
    pub min_timestamp: i64,
    /// Largest event timestamp (Unix ms).
    pub max_timestamp: i64,
    /// When archive retention deleted the file (Unix ms); it no longer exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<i64>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One archived segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Entry format version.
    pub version: u32,
    /// Broker (group) name.
    pub broker: String,
    /// Global offset of the segment's first byte.
    pub segment_start: u64,
    /// Global offset just past its last entry.
    pub segment_end: u64,
    /// Records in the segment.
    pub records: u64,
    /// Commitlog bytes of those records.
    pub record_bytes: u64,
    /// Smallest store time in the segment (Unix ms; 0 when empty).
    pub min_store_time: i64,
    /// Largest store time in the segment (Unix ms; 0 when empty).
    pub max_store_time: i64,
    /// When the entry was committed (Unix ms).
    pub archived_at: i64,
    /// The files, sorted by path.
    pub files: Vec<FileEntry>,
    /// Files of the trace topic's events, sorted by path (absent in entries written before
    /// traces were archived, and for segments without trace records).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traces: Vec<TraceFileEntry>,
    /// Trace records that did not decode and were skipped (they stay in the message files).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub malformed_trace_records: u64,
    /// crc32c of the commitlog bytes archived (`segment_start` to `segment_end`): a broker
    /// deletes its local segment only when its own bytes have this checksum (absent in entries
    /// written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_checksum: Option<u32>,
    /// The group's epoch at which its master's archiver committed the entry (absent for an
    /// archiver outside a group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl ManifestEntry {
    /// The entry for a converted segment.
    pub fn new(broker: &str, segment: &ConvertedSegment, archived_at: i64) -> ManifestEntry {
        let files: Vec<FileEntry> = segment
            .files
            .iter()
            .map(|file| FileEntry {
                path: file.path.to_string(),
                topic: file.topic.clone(),
                date: layout::date_of_day(file.day),
                rows: file.rows,
                bytes: file.bytes.len() as u64,
                checksum: file.checksum,
                min_store_time: file.min_store_time,
                max_store_time: file.max_store_time,
                queues: file.queues.clone(),
                expired_at: None,
            })
            .collect();
        ManifestEntry {
            version: MANIFEST_VERSION,
            broker: broker.to_owned(),
            segment_start: segment.start,
            segment_end: segment.end,
            records: segment.records,
            record_bytes: segment.record_bytes,
            min_store_time: files.iter().map(|file| file.min_store_time).min().unwrap_or(0),
            max_store_time: files.iter().map(|file| file.max_store_time).max().unwrap_or(0),
            archived_at,
            files,
            traces: segment
                .traces
                .files
                .iter()
                .map(|file| TraceFileEntry {
                    path: file.path.to_string(),
                    date: layout::date_of_day(file.day),
                    rows: file.rows,
                    bytes: file.bytes.len() as u64,
                    checksum: file.checksum,
                    min_timestamp: file.min_timestamp,
                    max_timestamp: file.max_timestamp,
                    expired_at: None,
                })
                .collect(),
            malformed_trace_records: segment.traces.malformed_records,
            segment_checksum: Some(segment.checksum),
            epoch: None,
        }
    }

    /// Archived bytes (Parquet) of files not expired, trace files included.
    pub fn live_bytes(&self) -> u64 {
        let messages: u64 = self
            .files
            .iter()
            .filter(|file| file.expired_at.is_none())
            .map(|file| file.bytes)
            .sum();
        let traces: u64 = self
            .traces
            .iter()
            .filter(|file| file.expired_at.is_none())
            .map(|file| file.bytes)
            .sum();
        messages + traces
    }

    /// Whether two entries describe the same archive of a segment (ignoring when each was made).
    pub fn same_archive(&self, other: &ManifestEntry) -> bool {
        let key = |entry: &ManifestEntry| {
            (
                entry.segment_start,
                entry.segment_end,
                entry.records,
                entry
                    .files
                    .iter()
                    .map(|file| (file.path.clone(), file.checksum, file.rows))
                    .chain(
                        entry
                            .traces
                            .iter()
                            .map(|file| (file.path.clone(), file.checksum, file.rows)),
                    )
                    .collect::<Vec<_>>(),
            )
        };
        let checksums_agree = match (self.segment_checksum, other.segment_checksum) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => true,
        };
        checksums_agree && key(self) == key(other)
    }
}

impl ManifestEntry {
    /// Whether two entries archive the same commitlog bytes (the same segment checksum, end and
    /// record count), whatever their file names: two masters of one group, at different
    /// epochs, racing on a segment both hold confirmed.
    pub fn same_source(&self, other: &ManifestEntry) -> bool {
        self.segment_checksum.is_some()
            && self.segment_checksum == other.segment_checksum
            && (self.segment_start, self.segment_end, self.records)
                == (other.segment_start, other.segment_end, other.records)
    }
}

/// Commits `entry`: after this, its files are part of the archive. Committing the same archive
/// again (a re-run after a crash) succeeds; a different one for the same segment is an error.
pub async fn commit(store: &ArchiveStore, entry: &ManifestEntry) -> Result<()> {
    let path = layout::manifest_entry(&entry.broker, entry.segment_start)?;
    let bytes = serde_json::to_vec_pretty(entry).expect("manifest entries serialize");
    let options = PutOptions::from(PutMode::Create);
    match store.inner.put_opts(&path, PutPayload::from(bytes), options).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let existing = read_entry(store, &path).await?;
            if existing.same_archive(entry) || existing.same_source(entry) {
                Ok(())
            } else {
                Err(ArchiveError::Corrupt(format!(
                    "{path} already holds a different archive of segment {} (another archiver with the same broker name?)",
                    entry.segment_start
                )))
            }
        }
        Err(source) => Err(store.error(format!("committing {path}"))(source)),
    }
}

/// Replaces a committed entry (archive retention marking files expired).
pub async fn rewrite(store: &ArchiveStore, entry: &ManifestEntry) -> Result<()> {
    let path = layout::manifest_entry(&entry.broker, entry.segment_start)?;
    let bytes = serde_json::to_vec_pretty(entry).expect("manifest entries serialize");
    store
        .inner
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(store.error(format!("rewriting {path}")))?;
    Ok(())
}

async fn read_entry(store: &ArchiveStore, path: &object_store::path::Path) -> Result<ManifestEntry> {
    let bytes = store
        .inner
        .get(path)
        .await
        .map_err(store.error(format!("reading {path}")))?
        .bytes()
        .await
        .map_err(store.error(format!("reading {path}")))?;
    serde_json::from_slice(&bytes).map_err(|error| ArchiveError::Corrupt(format!("manifest entry {path}: {error}")))
}

/// Segment starts of every committed entry of `broker`, sorted. Only lists; reads no entry.
pub async fn committed_starts(store: &ArchiveStore, broker: &str) -> Result<Vec<u64>> {
    let dir = layout::manifest_dir(broker)?;
    let listed: Vec<object_store::ObjectMeta> = store
        .inner
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(store.error(format!("listing {dir}")))?;
    let mut starts: Vec<u64> = listed
        .iter()
        .filter_map(|meta| meta.location.filename()?.strip_suffix(".json")?.parse().ok())
        .collect();
    starts.sort_unstable();
    Ok(starts)
}

/// Reads the entry of one segment.
pub async fn load(store: &ArchiveStore, broker: &str, segment_start: u64) -> Result<ManifestEntry> {
    read_entry(store, &layout::manifest_entry(broker, segment_start)?).await
}

/// Every committed entry of `broker`, sorted by segment start.
pub async fn load_all(store: &ArchiveStore, broker: &str) -> Result<Vec<ManifestEntry>> {
    let mut entries = Vec::new();
    for start in committed_starts(store, broker).await? {
        entries.push(load(store, broker, start).await?);
    }
    Ok(entries)
}

/// Brokers that have a manifest in the store.
pub async fn brokers(store: &ArchiveStore) -> Result<Vec<String>> {
    let root = object_store::path::Path::from(layout::MANIFESTS);
    let listed = store
        .inner
        .list_with_delimiter(Some(&root))
        .await
        .map_err(store.error(format!("listing {root}")))?;
    let mut names: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|prefix| prefix.filename().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

//! Checks an archive against its manifest (`meridian archive verify`), reports where archiving
//! stands (`meridian archive status`), and applies archive retention.

use std::collections::BTreeSet;

use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::file::metadata::ParquetMetaDataReader;

use meridian_proto::time::now_millis;

use crate::error::Result;
use crate::layout;
use crate::manifest::{self, ManifestEntry};
use crate::store::{ArchiveConfig, ArchiveStore};

/// Something wrong in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Offsets between two committed segments are archived nowhere.
    Gap {
        /// End of the earlier segment.
        from: u64,
        /// Start of the next one.
        to: u64,
    },
    /// Two committed segments cover the same offsets (messages archived twice).
    Overlap {
        /// Start of the earlier segment.
        first: u64,
        /// Start of the overlapping one.
        second: u64,
    },
    /// A file the manifest names is missing.
    Missing(String),
    /// A file's bytes do not match the manifest's checksum or size.
    Checksum(String),
    /// A file is not readable Parquet, or holds another number of rows than the manifest says.
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A segment's records and its files' rows disagree.
    Count {
        /// The segment.
        segment: u64,
        /// Records of the segment.
        records: u64,
        /// Rows of its files.
        rows: u64,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Gap { from, to } => write!(formatter, "gap: offsets {from}..{to} are in no committed segment"),
            Problem::Overlap { first, second } => {
                write!(formatter, "duplicate: segments {first} and {second} overlap")
            }
            Problem::Missing(path) => write!(formatter, "missing: {path} is in the manifest but not in the store"),
            Problem::Checksum(path) => write!(formatter, "corrupt: {path} does not match its checksum"),
            Problem::Unreadable { path, reason } => write!(formatter, "corrupt: {path}: {reason}"),
            Problem::Count { segment, records, rows } => write!(
                formatter,
                "count: segment {segment} has {records} records but its files hold {rows} rows"
            ),
        }
    }
}

/// What `verify` found for one broker.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// The broker.
    pub broker: String,
    /// Committed segments.
    pub segments: usize,
    /// Live files checked.
    pub files: usize,
    /// Rows in them.
    pub rows: u64,
    /// Live trace files checked.
    pub trace_files: usize,
    /// Trace events in them.
    pub trace_events: u64,
    /// Problems, in offset order.
    pub problems: Vec<Problem>,
    /// Message files of this broker that no entry names: left by a crash before a commit, and
    /// overwritten by the next run. Not part of the archive, so not a problem.
    pub uncommitted: Vec<String>,
}

/// Checks every committed entry of `broker`: contiguous offsets, no overlap, each file (message
/// and trace files) present, matching its checksum, readable as Parquet with the recorded row
/// count. Reads every file.
pub async fn verify(store: &ArchiveStore, broker: &str) -> Result<VerifyReport> {
    let entries = manifest::load_all(store, broker).await?;
    let mut report = VerifyReport {
        broker: broker.to_owned(),
        segments: entries.len(),
        ..VerifyReport::default()
    };
    for pair in entries.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        if earlier.segment_end < later.segment_start {
            report.problems.push(Problem::Gap {
                from: earlier.segment_end,
                to: later.segment_start,
            });
        } else if earlier.segment_end > later.segment_start {
            report.problems.push(Problem::Overlap {
                first: earlier.segment_start,
                second: later.segment_start,
            });
        }
    }
    let mut named = BTreeSet::new();
    for entry in &entries {
        let rows: u64 = entry.files.iter().map(|file| file.rows).sum();
        if rows != entry.records {
            report.problems.push(Problem::Count {
                segment: entry.segment_start,
                records: entry.records,
                rows,
            });
        }
        for file in &entry.files {
            named.insert(file.path.clone());
            if file.expired_at.is_some() {
                continue;
            }
            report.files += 1;
            report.rows += file.rows;
            check_file(
                store,
                &file.path,
                file.bytes,
                file.checksum,
                file.rows,
                &mut report.problems,
            )
            .await?;
        }
        for file in &entry.traces {
            named.insert(file.path.clone());
            if file.expired_at.is_some() {
                continue;
            }
            report.trace_files += 1;
            report.trace_events += file.rows;
            check_file(
                store,
                &file.path,
                file.bytes,
                file.checksum,
                file.rows,
                &mut report.problems,
            )
            .await?;
        }
    }
    let suffix = format!("/{broker}-");
    let mut all: Vec<object_store::ObjectMeta> = store
        .inner
        .list(Some(&Path::from(layout::MESSAGES)))
        .try_collect()
        .await
        .map_err(store.error("listing message files"))?;
    let traces: Vec<object_store::ObjectMeta> = store
        .inner
        .list(Some(&Path::from(layout::TRACES)))
        .try_collect()
        .await
        .map_err(store.error("listing trace files"))?;
    all.extend(traces);
    report.uncommitted = all
        .into_iter()
        .map(|meta| meta.location.to_string())
        .filter(|path| path.contains(&suffix) && !named.contains(path))
        .collect();
    Ok(report)
}

/// Whether the archived copy of a segment matches the local segment file at `path`, so the
/// broker may delete the file: the local bytes up to the entry's end have the entry's checksum
/// and record count, the entry's files hold that many rows, and every live file is present,
/// matches its checksum and reads as Parquet with its rows. `Ok(Err(reason))` names the first
/// difference; an entry written before checksums were recorded is checked by record count.
pub async fn matches_local(
    store: &ArchiveStore,
    entry: &ManifestEntry,
    path: &std::path::Path,
) -> Result<std::result::Result<(), String>> {
    let digest = {
        let (path, start) = (path.to_owned(), entry.segment_start);
        tokio::task::spawn_blocking(move || -> Result<crate::convert::SegmentDigest> {
            let file = std::fs::File::open(&path)
                .map_err(crate::ArchiveError::io(format!("opening segment {}", path.display())))?;
            // SAFETY: a sealed segment is never written again, and only this broker deletes it.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(crate::ArchiveError::io(format!("mapping segment {}", path.display())))?;
            crate::convert::segment_digest(start, &map)
        })
        .await
        .map_err(|error| crate::ArchiveError::Corrupt(format!("segment check task failed: {error}")))??
    };
    let segment = entry.segment_start;
    if digest.end != entry.segment_end || digest.records != entry.records {
        return Ok(Err(format!(
            "local segment {segment} holds {} records up to offset {}, its archived copy {} up to {}",
            digest.records, digest.end, entry.records, entry.segment_end
        )));
    }
    if let Some(checksum) = entry.segment_checksum
        && checksum != digest.checksum
    {
        return Ok(Err(format!(
            "local segment {segment} has checksum {:#010x}, its archived copy was made from bytes with {checksum:#010x}",
            digest.checksum
        )));
    }
    let rows: u64 = entry.files.iter().map(|file| file.rows).sum();
    if rows != entry.records {
        return Ok(Err(Problem::Count {
            segment,
            records: entry.records,
            rows,
        }
        .to_string()));
    }
    let mut problems = Vec::new();
    for file in entry.files.iter().filter(|file| file.expired_at.is_none()) {
        check_file(store, &file.path, file.bytes, file.checksum, file.rows, &mut problems).await?;
    }
    match problems.first() {
        Some(problem) => Ok(Err(problem.to_string())),
        None => Ok(Ok(())),
    }
}

/// Checks one committed file: present, matching its size and checksum, readable Parquet with
/// `rows` rows. Problems go to `problems`; only a store that cannot be read is an error.
async fn check_file(
    store: &ArchiveStore,
    path: &str,
    size: u64,
    checksum: u32,
    rows: u64,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let location = Path::from(path);
    let bytes = match store.inner.get(&location).await {
        Ok(found) => found.bytes().await.map_err(store.error(format!("reading {path}")))?,
        Err(object_store::Error::NotFound { .. }) => {
            problems.push(Problem::Missing(path.to_owned()));
            return Ok(());
        }
        Err(source) => return Err(store.error(format!("reading {path}"))(source)),
    };
    if bytes.len() as u64 != size || crc32c::crc32c(&bytes) != checksum {
        problems.push(Problem::Checksum(path.to_owned()));
        return Ok(());
    }
    match ParquetMetaDataReader::new().parse_and_finish(&bytes) {
        Ok(metadata) if metadata.file_metadata().num_rows() as u64 == rows => {}
        Ok(metadata) => problems.push(Problem::Unreadable {
            path: path.to_owned(),
            reason: format!(
                "holds {} rows, the manifest says {rows}",
                metadata.file_metadata().num_rows()
            ),
        }),
        Err(error) => problems.push(Problem::Unreadable {
            path: path.to_owned(),
            reason: error.to_string(),
        }),
    }
    Ok(())
}

/// Where archiving of one broker stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The broker.
    pub broker: String,
    /// Committed segments.
    pub segments: usize,
    /// Commitlog offset up to which the archive is contiguous from its first segment.
    pub archived_until_offset: u64,
    /// Store time of the newest archived message (Unix ms; 0 if none).
    pub archived_until_time: i64,
    /// Records archived.
    pub records: u64,
    /// Commitlog bytes archived.
    pub record_bytes: u64,
    /// Parquet bytes in the archive (expired files excluded).
    pub parquet_bytes: u64,
    /// Files in the archive (expired excluded).
    pub files: usize,
}

/// Status of one broker from its manifest entries.
pub fn status_of(broker: &str, entries: &[ManifestEntry]) -> Status {
    let mut status = Status {
        broker: broker.to_owned(),
        segments: entries.len(),
        ..Status::default()
    };
    for entry in entries {
        if status.archived_until_offset == 0 || status.archived_until_offset == entry.segment_start {
            status.archived_until_offset = entry.segment_end;
        }
        status.archived_until_time = status.archived_until_time.max(entry.max_store_time);
        status.records += entry.records;
        status.record_bytes += entry.record_bytes;
        status.parquet_bytes += entry.live_bytes();
        status.files += entry.files.iter().filter(|file| file.expired_at.is_none()).count();
    }
    status
}

/// Status of one broker, reading its manifest.
pub async fn status(store: &ArchiveStore, broker: &str) -> Result<Status> {
    Ok(status_of(broker, &manifest::load_all(store, broker).await?))
}

/// Archive retention: deletes files of day partitions older than their topic's retention. The
/// entry is rewritten first (the file marked expired) and the file deleted after, so the
/// manifest never names a live file that is gone. Returns the files deleted.
pub async fn expire(
    store: &ArchiveStore,
    broker: &str,
    config: &ArchiveConfig,
    now_ms: Option<i64>,
) -> Result<Vec<String>> {
    let now_ms = now_ms.unwrap_or_else(now_millis);
    let today = layout::day_of(now_ms);
    let mut deleted = Vec::new();
    for mut entry in manifest::load_all(store, broker).await? {
        let mut expired_now = Vec::new();
        for file in entry.files.iter_mut().filter(|file| file.expired_at.is_none()) {
            let Some(days) = config.retention_days_of(&file.topic) else {
                continue;
            };
            // A day partition is expired once all of it is older than the retention.
            if layout::day_of(file.max_store_time) + i64::from(days) <= today {
                file.expired_at = Some(now_ms);
                expired_now.push(file.path.clone());
            }
        }
        // Trace files follow the trace topic's retention (`topic_retention_days.MERIDIAN_TRACE`).
        if let Some(days) = config.retention_days_of(meridian_proto::trace::TRACE_TOPIC) {
            for file in entry.traces.iter_mut().filter(|file| file.expired_at.is_none()) {
                if layout::day_of(file.max_timestamp) + i64::from(days) <= today {
                    file.expired_at = Some(now_ms);
                    expired_now.push(file.path.clone());
                }
            }
        }
        if expired_now.is_empty() {
            continue;
        }
        manifest::rewrite(store, &entry).await?;
        for path in expired_now {
            match store.inner.delete(&Path::from(path.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted.push(path),
                Err(source) => return Err(store.error(format!("deleting {path}"))(source)),
            }
        }
    }
    Ok(deleted)
}

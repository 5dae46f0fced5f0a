//! The archiver: finds a broker's sealed segments older than `archive_after`, converts each to
//! Parquet, uploads the files, then commits the segment's manifest entry. Idempotent by
//! construction: file names are deterministic (a re-run overwrites the same paths with the same
//! bytes), a segment counts as archived only once its entry exists, and committed segments are
//! skipped. A crash at any step therefore leaves at worst uncommitted files that the next run
//! overwrites, never a duplicate or a gap.
//!
//! The archiver only reads the broker's commitlog folder; deleting local segments is the
//! broker's decision (it reads the manifest and checks the archived copy against its segment),
//! so an archiver can run beside the broker as its own process (`meridian archiver`) or inside
//! it (`meridian dev`). With a [`GroupView`] (every service archiver has one), a run archives
//! only on the group's master, only segments wholly below the confirmed offset, and checks the
//! master's epoch again before each manifest commit (see [`crate::group`]).

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::{ObjectStoreExt, PutPayload};

use meridian_proto::time::now_millis;

use crate::convert::{self, ConvertOptions, ConvertedSegment};
pub use crate::error::CrashPoint;
use crate::error::{ArchiveError, Result};
use crate::group::{Gate, GroupView, Refusal};
use crate::manifest::{self, ManifestEntry};
use crate::store::ArchiveStore;

/// How a test crash happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Return [`ArchiveError::Crashed`] (unit tests).
    Error,
    /// Abort the process, as `kill -9` would stop it (end-to-end tests).
    Abort,
}

/// A sealed segment file of the commitlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Global offset of its first byte (its name).
    pub start: u64,
    /// The file.
    pub path: PathBuf,
    /// Size in bytes.
    pub len: u64,
    /// Last modification (the broker writes a segment's closing marker last).
    pub modified: SystemTime,
}

/// The segments in a commitlog folder, sorted by start, with whether each is sealed (a later
/// segment exists, so the broker has closed it and will never write it again).
pub fn list_segments(commitlog_dir: &FsPath) -> Result<Vec<(SegmentFile, bool)>> {
    let mut found = Vec::new();
    let listing = std::fs::read_dir(commitlog_dir).map_err(ArchiveError::io(format!(
        "listing commitlog folder {}",
        commitlog_dir.display()
    )))?;
    for entry in listing {
        let entry = entry.map_err(ArchiveError::io(format!("listing {}", commitlog_dir.display())))?;
        let Some(start) = entry.file_name().to_str().and_then(|name| name.parse::<u64>().ok()) else {
            continue;
        };
        let metadata = entry
            .metadata()
            .map_err(ArchiveError::io(format!("reading {}", entry.path().display())))?;
        found.push(SegmentFile {
            start,
            path: entry.path(),
            len: metadata.len(),
            modified: metadata.modified().unwrap_or(UNIX_EPOCH),
        });
    }
    found.sort_by_key(|segment| segment.start);
    let count = found.len();
    Ok(found
        .into_iter()
        .enumerate()
        .map(|(index, segment)| (segment, index + 1 < count))
        .collect())
}

/// Converts a segment file (mapped read-only, read sequentially).
pub fn convert_file(segment: &SegmentFile, options: &ConvertOptions) -> Result<ConvertedSegment> {
    let file = std::fs::File::open(&segment.path)
        .map_err(ArchiveError::io(format!("opening segment {}", segment.path.display())))?;
    // SAFETY: a sealed segment is never written again; the broker only deletes it (which keeps
    // the mapping valid) after its archive is committed.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(ArchiveError::io(format!("mapping segment {}", segment.path.display())))?;
    let _ = map.advise(memmap2::Advice::Sequential);
    convert::convert_segment(segment.start, &map, options)
}

/// What an archive run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Segments archived by this run.
    pub archived: Vec<u64>,
    /// Sealed segments already archived before.
    pub already_archived: usize,
    /// Sealed segments not old enough yet.
    pub too_young: usize,
    /// Records archived by this run.
    pub records: u64,
    /// Commitlog bytes archived by this run.
    pub record_bytes: u64,
    /// Parquet bytes written by this run (message and trace files).
    pub parquet_bytes: u64,
    /// Trace events archived by this run (rows of trace files).
    pub trace_events: u64,
    /// Sealed segments not wholly below the group's confirmed offset yet.
    pub above_confirmed: usize,
    /// Why the run archived nothing (or stopped before its next commit): this broker is not
    /// its group's master, or the group's epoch moved.
    pub refused: Option<Refusal>,
}

impl RunReport {
    /// Counts `converted` as archived by this run: its records, bytes and trace events. The one
    /// place these totals are kept (the sample-archive generator counts with it too).
    pub fn count(&mut self, converted: &ConvertedSegment) {
        self.archived.push(converted.start);
        self.records += converted.records;
        self.record_bytes += converted.record_bytes;
        let message_bytes = converted.files.iter().map(|file| file.bytes.len() as u64);
        let trace_bytes = converted.traces.files.iter().map(|file| file.bytes.len() as u64);
        self.parquet_bytes += message_bytes.chain(trace_bytes).sum::<u64>();
        self.trace_events += converted.traces.files.iter().map(|file| file.rows).sum::<u64>();
    }
}

/// Progress of a run, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Segments to archive in this run.
    pub total_segments: usize,
    /// Segments done.
    pub done_segments: usize,
    /// Commitlog bytes to archive in this run.
    pub total_bytes: u64,
    /// Commitlog bytes done.
    pub done_bytes: u64,
}

/// Archives one broker's segments.
pub struct Archiver {
    store: ArchiveStore,
    options: ConvertOptions,
    commitlog_dir: PathBuf,
    archive_after: Duration,
    crash_at: Option<(CrashPoint, CrashMode)>,
    group: Option<Arc<dyn GroupView>>,
}

impl Archiver {
    /// An archiver of the commitlog in `commitlog_dir` into `store`.
    pub fn new(
        store: ArchiveStore,
        options: ConvertOptions,
        commitlog_dir: impl Into<PathBuf>,
        archive_after: Duration,
    ) -> Result<Archiver> {
        meridian_proto::validate::validate_group(&options.broker)?;
        Ok(Archiver {
            store,
            options,
            commitlog_dir: commitlog_dir.into(),
            archive_after,
            crash_at: None,
            group: None,
        })
    }

    /// Archives as a member of a broker group: only on its master, only below its confirmed
    /// offset, with the epoch checked before each commit. Without one the archiver is the only
    /// writer of its broker's name and archives every sealed segment (tests, sample archives).
    pub fn with_group(mut self, group: Arc<dyn GroupView>) -> Archiver {
        self.group = Some(group);
        self
    }

    /// Makes the archiver crash at `point` (tests).
    pub fn crash_at(mut self, point: CrashPoint, mode: CrashMode) -> Archiver {
        self.crash_at = Some((point, mode));
        self
    }

    /// The store archived into.
    pub fn store(&self) -> &ArchiveStore {
        &self.store
    }

    /// The broker archived.
    pub fn broker(&self) -> &str {
        &self.options.broker
    }

    fn crash(&self, point: CrashPoint) -> Result<()> {
        match self.crash_at {
            Some((at, mode)) if at == point => {
                tracing::warn!(?point, "archiver crashing on purpose (test crash point)");
                if mode == CrashMode::Abort {
                    std::process::abort();
                }
                Err(ArchiveError::Crashed(point))
            }
            _ => Ok(()),
        }
    }

    /// Sealed segments old enough to archive and not archived yet, with the counts of the rest.
    pub async fn pending(&self, ignore_age: bool) -> Result<(Vec<SegmentFile>, usize, usize)> {
        let (pending, already, young, _) = self.pending_below(ignore_age, u64::MAX).await?;
        Ok((pending, already, young))
    }

    /// [`Archiver::pending`] for segments wholly below `confirmed` (a sealed segment ends where
    /// the next begins); the last count is of the sealed segments above it.
    async fn pending_below(&self, ignore_age: bool, confirmed: u64) -> Result<(Vec<SegmentFile>, usize, usize, usize)> {
        let committed = manifest::committed_starts(&self.store, &self.options.broker).await?;
        let now = SystemTime::now();
        let (mut pending, mut already, mut young, mut above) = (Vec::new(), 0, 0, 0);
        let segments = list_segments(&self.commitlog_dir)?;
        let next_starts: Vec<u64> = segments.iter().skip(1).map(|(segment, _)| segment.start).collect();
        for ((segment, sealed), next_start) in segments.into_iter().zip(next_starts) {
            if !sealed {
                continue;
            }
            if committed.binary_search(&segment.start).is_ok() {
                already += 1;
                continue;
            }
            if next_start > confirmed {
                above += 1;
                continue;
            }
            let age = now.duration_since(segment.modified).unwrap_or_default();
            if !ignore_age && age < self.archive_after {
                young += 1;
                continue;
            }
            pending.push(segment);
        }
        Ok((pending, already, young, above))
    }

    /// One pass: archives every pending segment in offset order. `now_all` ignores
    /// `archive_after` (`meridian archive run --now`). Stops at the first error; what was
    /// committed before it stays committed.
    pub async fn run_once(&self, now_all: bool, mut progress: impl FnMut(Progress)) -> Result<RunReport> {
        let gate = match &self.group {
            Some(view) => match Gate::open(view.as_ref(), &self.store, &self.options.broker).await? {
                Ok(gate) => Some(gate),
                Err(refusal) => {
                    return Ok(RunReport {
                        refused: Some(refusal),
                        ..RunReport::default()
                    });
                }
            },
            None => None,
        };
        let confirmed = match &gate {
            Some(gate) => gate.confirmed_offset().await?,
            None => u64::MAX,
        };
        let (pending, already_archived, too_young, above_confirmed) = self.pending_below(now_all, confirmed).await?;
        let mut report = RunReport {
            already_archived,
            too_young,
            above_confirmed,
            ..RunReport::default()
        };
        let mut state = Progress {
            total_segments: pending.len(),
            done_segments: 0,
            total_bytes: pending.iter().map(|segment| segment.len).sum(),
            done_bytes: 0,
        };
        progress(state);
        for segment in pending {
            let converted = {
                let mut options = self.options.clone();
                options.epoch = gate.as_ref().and_then(Gate::epoch);
                let segment = segment.clone();
                // Parquet encoding is CPU work: keep it off the async workers.
                tokio::task::spawn_blocking(move || convert_file(&segment, &options))
                    .await
                    .map_err(|error| ArchiveError::Corrupt(format!("conversion task failed: {error}")))??
            };
            if let Err(refusal) = self.publish_at(&converted, gate.as_ref()).await? {
                tracing::warn!(segment = converted.start, reason = %refusal, "archive run stopped before its commit");
                report.refused = Some(refusal);
                return Ok(report);
            }
            report.count(&converted);
            tracing::info!(
                segment = converted.start,
                records = converted.records,
                files = converted.files.len(),
                "segment archived"
            );
            state.done_segments += 1;
            state.done_bytes += segment.len;
            progress(state);
        }
        Ok(report)
    }

    /// Uploads a converted segment's files, then commits its manifest entry.
    pub async fn publish(&self, converted: &ConvertedSegment) -> Result<()> {
        self.publish_at(converted, None).await?.map_err(ArchiveError::from)
    }

    /// Deletes the files of `converted` after its commit was refused. They carry this run's
    /// epoch in their names, so no committed entry names them; left behind, a reader globbing the
    /// folders would count them. Best effort: what fails to go stays `uncommitted` in `verify`.
    async fn withdraw(&self, converted: &ConvertedSegment) {
        let paths = converted
            .files
            .iter()
            .map(|file| &file.path)
            .chain(converted.traces.files.iter().map(|file| &file.path));
        for path in paths {
            if let Err(error) = self.store.inner.delete(path).await {
                tracing::warn!(%path, %error, "could not delete a file whose commit was refused");
            }
        }
    }

    /// [`Archiver::publish`], checking `gate` (still master at the run's epoch, no later fence)
    /// before uploading and again right before the manifest commit.
    async fn publish_at(
        &self,
        converted: &ConvertedSegment,
        gate: Option<&Gate<'_>>,
    ) -> Result<std::result::Result<(), Refusal>> {
        if let Some(gate) = gate
            && let Err(refusal) = gate.check().await?
        {
            return Ok(Err(refusal));
        }
        for (index, file) in converted.files.iter().enumerate() {
            if index == 0 && self.crash_at.is_some_and(|(point, _)| point == CrashPoint::MidFile) {
                let half = file.bytes.slice(..file.bytes.len() / 2);
                self.store
                    .inner
                    .put(&file.path, PutPayload::from(half))
                    .await
                    .map_err(self.store.error(format!("uploading {}", file.path)))?;
                self.crash(CrashPoint::MidFile)?;
            }
            self.store
                .inner
                .put(&file.path, PutPayload::from(file.bytes.clone()))
                .await
                .map_err(self.store.error(format!("uploading {}", file.path)))?;
        }
        for file in &converted.traces.files {
            self.store
                .inner
                .put(&file.path, PutPayload::from(file.bytes.clone()))
                .await
                .map_err(self.store.error(format!("uploading {}", file.path)))?;
        }
        self.crash(CrashPoint::AfterFiles)?;
        let mut entry = ManifestEntry::new(&self.options.broker, converted, now_millis());
        if let Some(gate) = gate {
            if let Err(refusal) = gate.check().await? {
                self.withdraw(converted).await;
                return Ok(Err(refusal));
            }
            entry.epoch = gate.epoch();
        }
        manifest::commit(&self.store, &entry).await?;
        self.crash(CrashPoint::AfterManifest)?;
        Ok(Ok(()))
    }
}

//! Reading the archive back: an index of which file holds which offsets of which queue (built
//! from a broker's manifest), and replay of a queue's offsets as the records the broker stored,
//! byte for byte. The broker serves pulls below its local commitlog with this.
//!
//! A replay reads only the rows it needs: files are sorted by (queue, offset) and the manifest
//! says how many rows each queue has, so the row position of an offset is known and the Parquet
//! reader skips straight to it with the page index.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, RwLock};

use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, TimestampMillisecondType};
use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector};
use parquet::file::metadata::PageIndexPolicy;

use crate::error::{ArchiveError, Result};
use crate::manifest::{self, ManifestEntry};
use crate::schema::{BatchColumns, columns};
use crate::store::ArchiveStore;

/// Files kept in memory by a reader: a consumer replaying a queue reads one file many times.
const CACHED_FILES: usize = 4;

/// Where one queue's offsets lie in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFile {
    /// First offset of the queue in the file.
    pub first_offset: u64,
    /// Last offset (inclusive).
    pub last_offset: u64,
    /// Rows of the queue in the file.
    pub rows: u64,
    /// Rows of lower-numbered queues before them (the file is sorted by queue).
    pub rows_before: u64,
    /// The file.
    pub path: String,
    /// crc32c of the file.
    pub checksum: u32,
    /// Segment the file came from.
    pub segment_start: u64,
}

/// Which archived file holds which offsets, for one broker.
#[derive(Debug, Default, Clone)]
pub struct ArchiveIndex {
    entries: BTreeMap<u64, ManifestEntry>,
    queues: HashMap<(String, u32), Vec<QueueFile>>,
}

impl ArchiveIndex {
    /// An index of `entries`.
    pub fn from_entries(entries: impl IntoIterator<Item = ManifestEntry>) -> ArchiveIndex {
        let mut index = ArchiveIndex::default();
        for entry in entries {
            index.entries.insert(entry.segment_start, entry);
        }
        index.rebuild();
        index
    }

    fn rebuild(&mut self) {
        self.queues.clear();
        for entry in self.entries.values() {
            for file in entry.files.iter().filter(|file| file.expired_at.is_none()) {
                let mut rows_before = 0;
                for range in &file.queues {
                    self.queues
                        .entry((file.topic.clone(), range.queue_id))
                        .or_default()
                        .push(QueueFile {
                            first_offset: range.first_offset,
                            last_offset: range.last_offset,
                            rows: range.rows,
                            rows_before,
                            path: file.path.clone(),
                            checksum: file.checksum,
                            segment_start: entry.segment_start,
                        });
                    rows_before += range.rows;
                }
            }
        }
        for files in self.queues.values_mut() {
            files.sort_by_key(|file| file.first_offset);
        }
    }

    /// The committed entries, by segment start.
    pub fn entries(&self) -> &BTreeMap<u64, ManifestEntry> {
        &self.entries
    }

    /// Whether the segment starting at `start` is committed.
    pub fn is_committed(&self, start: u64) -> bool {
        self.entries.contains_key(&start)
    }

    /// Smallest archived offset of a queue still in the archive.
    pub fn min_offset(&self, topic: &str, queue_id: u32) -> Option<u64> {
        self.queues
            .get(&(topic.to_owned(), queue_id))?
            .first()
            .map(|file| file.first_offset)
    }

    /// One past the largest archived offset of a queue.
    pub fn max_offset(&self, topic: &str, queue_id: u32) -> Option<u64> {
        self.queues
            .get(&(topic.to_owned(), queue_id))?
            .iter()
            .map(|file| file.last_offset + 1)
            .max()
    }

    /// The files of a queue, by first offset.
    pub fn queue_files(&self, topic: &str, queue_id: u32) -> &[QueueFile] {
        self.queues
            .get(&(topic.to_owned(), queue_id))
            .map_or(&[], Vec::as_slice)
    }

    /// The file holding `offset` of a queue, or the first file after it when `offset` is not
    /// archived (expired, or never stored); `None` when nothing at or after it is archived.
    pub fn locate(&self, topic: &str, queue_id: u32, offset: u64) -> Option<&QueueFile> {
        let files = self.queues.get(&(topic.to_owned(), queue_id))?;
        let position = files.partition_point(|file| file.last_offset < offset);
        files.get(position)
    }
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Records from the offset asked for.
    Found {
        /// Concatenated records, as the broker stored them.
        records: Vec<u8>,
        /// How many.
        count: u64,
        /// The offset after the last one.
        next_offset: u64,
    },
    /// The offset is not archived; the next archived one is this.
    Moved(u64),
    /// Nothing at or after the offset is archived.
    NotArchived,
}

/// Reads one broker's archive.
pub struct ArchiveReader {
    store: ArchiveStore,
    broker: String,
    index: RwLock<ArchiveIndex>,
    cache: Mutex<VecDeque<(String, Bytes)>>,
}

impl ArchiveReader {
    /// A reader of `broker`'s archive in `store`; empty until [`ArchiveReader::refresh`].
    pub fn new(store: ArchiveStore, broker: impl Into<String>) -> Result<ArchiveReader> {
        let broker = broker.into();
        meridian_proto::validate::validate_group(&broker)?;
        Ok(ArchiveReader {
            store,
            broker,
            index: RwLock::new(ArchiveIndex::default()),
            cache: Mutex::new(VecDeque::new()),
        })
    }

    /// The store read from.
    pub fn store(&self) -> &ArchiveStore {
        &self.store
    }

    /// Reads the manifest again: entries committed since the last refresh, and every entry
    /// when `all` (to see files archive retention expired).
    pub async fn refresh(&self, all: bool) -> Result<()> {
        let starts = manifest::committed_starts(&self.store, &self.broker).await?;
        let known: Vec<u64> = if all {
            Vec::new()
        } else {
            self.index.read().expect("index lock").entries.keys().copied().collect()
        };
        let mut loaded = Vec::new();
        for start in starts.iter().filter(|start| known.binary_search(start).is_err()) {
            loaded.push(manifest::load(&self.store, &self.broker, *start).await?);
        }
        let mut index = self.index.write().expect("index lock");
        if all {
            index.entries.clear();
        }
        if all || !loaded.is_empty() {
            for entry in loaded {
                index.entries.insert(entry.segment_start, entry);
            }
            index.rebuild();
        }
        Ok(())
    }

    /// Calls `read` with the current index.
    pub fn with_index<T>(&self, read: impl FnOnce(&ArchiveIndex) -> T) -> T {
        read(&self.index.read().expect("index lock"))
    }

    async fn file_bytes(&self, path: &str, checksum: u32) -> Result<Bytes> {
        if let Some((_, bytes)) = self
            .cache
            .lock()
            .expect("cache lock")
            .iter()
            .find(|(cached, _)| cached == path)
        {
            return Ok(bytes.clone());
        }
        let location = Path::from(path);
        let bytes = self
            .store
            .inner
            .get(&location)
            .await
            .map_err(self.store.error(format!("reading {path}")))?
            .bytes()
            .await
            .map_err(self.store.error(format!("reading {path}")))?;
        if crc32c::crc32c(&bytes) != checksum {
            return Err(ArchiveError::Corrupt(format!(
                "{path} does not match the checksum its manifest entry records; `meridian archive verify` lists every such file"
            )));
        }
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHED_FILES {
            cache.pop_front();
        }
        cache.push_back((path.to_owned(), bytes.clone()));
        Ok(bytes)
    }

    /// The first archived offset of a queue stored at or after `timestamp` (Unix ms); `None`
    /// when every archived message of the queue is older, or none is archived. Segments whose
    /// newest message is older are skipped by their manifest entry; of the others, only the
    /// queue's rows of two columns are read, file by file, until one qualifies.
    pub async fn search_offset(&self, topic: &str, queue_id: u32, timestamp: i64) -> Result<Option<u64>> {
        let candidates: Vec<QueueFile> = self.with_index(|index| {
            index
                .queue_files(topic, queue_id)
                .iter()
                .filter(|file| {
                    index
                        .entries
                        .get(&file.segment_start)
                        .is_none_or(|entry| entry.max_store_time >= timestamp)
                })
                .cloned()
                .collect()
        });
        for file in candidates {
            let bytes = self.file_bytes(&file.path, file.checksum).await?;
            let path = file.path.clone();
            let found = tokio::task::spawn_blocking(move || first_at_or_after(bytes, &file, timestamp))
                .await
                .map_err(|error| ArchiveError::Corrupt(format!("searching {path} by time failed: {error}")))??;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Up to `max_count` records of a queue from `offset`, adding up to at most `max_bytes` (but
    /// at least one record), all from one file: the caller pulls again from `next_offset`.
    pub async fn read(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_count: u32,
        max_bytes: u32,
    ) -> Result<Replay> {
        let Some(file) = self.with_index(|index| index.locate(topic, queue_id, offset).cloned()) else {
            return Ok(Replay::NotArchived);
        };
        if file.first_offset > offset {
            return Ok(Replay::Moved(file.first_offset));
        }
        let bytes = self.file_bytes(&file.path, file.checksum).await?;
        let path = file.path.clone();
        let max_count = u64::from(max_count.max(1));
        tokio::task::spawn_blocking(move || decode_rows(bytes, &file, offset, max_count, max_bytes as usize))
            .await
            .map_err(|error| ArchiveError::Corrupt(format!("replay of {path} failed: {error}")))?
    }
}

/// The first offset among `file`'s rows of its queue stored at or after `timestamp`, reading
/// only the queue's rows of two columns.
fn first_at_or_after(bytes: Bytes, file: &QueueFile, timestamp: i64) -> Result<Option<u64>> {
    let parquet_error = |source| ArchiveError::Parquet {
        path: file.path.clone(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(parquet_error)?;
    let projection = ProjectionMask::columns(
        builder.parquet_schema(),
        [columns::QUEUE_OFFSET, columns::STORE_TIMESTAMP],
    );
    let selection = RowSelection::from(vec![
        RowSelector::skip(file.rows_before as usize),
        RowSelector::select(file.rows as usize),
    ]);
    let reader = builder
        .with_projection(projection)
        .with_row_selection(selection)
        .with_batch_size(8192)
        .build()
        .map_err(parquet_error)?;
    for batch in reader {
        let batch = batch.map_err(|source| ArchiveError::Arrow {
            context: format!("reading {}", file.path),
            source,
        })?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| ArchiveError::Corrupt(format!("{} lacks column {name}", file.path)))
        };
        let offsets = column(columns::QUEUE_OFFSET)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| ArchiveError::Corrupt(format!("{}: queue_offset is not Int64", file.path)))?;
        let stored = column(columns::STORE_TIMESTAMP)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| ArchiveError::Corrupt(format!("{}: store_timestamp is not a timestamp", file.path)))?;
        if let Some(row) = (0..batch.num_rows()).find(|row| stored.value(*row) >= timestamp) {
            return Ok(Some(offsets.value(row) as u64));
        }
    }
    Ok(None)
}

/// Decodes the rows of `file`'s queue from `offset` into records.
fn decode_rows(bytes: Bytes, file: &QueueFile, offset: u64, max_count: u64, max_bytes: usize) -> Result<Replay> {
    let parquet_error = |source| ArchiveError::Parquet {
        path: file.path.clone(),
        source,
    };
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options).map_err(parquet_error)?;
    let contiguous = file.rows == file.last_offset - file.first_offset + 1;
    // Without gaps, the row of an offset is known: read exactly the rows wanted.
    let (skip, take) = if contiguous {
        let skip = file.rows_before + (offset - file.first_offset);
        (skip, max_count.min(file.last_offset - offset + 1))
    } else {
        (file.rows_before, file.rows)
    };
    let selection = RowSelection::from(vec![
        RowSelector::skip(skip as usize),
        RowSelector::select(take as usize),
    ]);
    let reader = builder
        .with_row_selection(selection)
        .with_batch_size(take.clamp(1, 8192) as usize)
        .build()
        .map_err(parquet_error)?;
    let (mut records, mut count, mut next_offset) = (Vec::new(), 0u64, offset);
    let mut properties = Vec::with_capacity(256);
    'batches: for batch in reader {
        let batch = batch.map_err(|source| ArchiveError::Arrow {
            context: format!("reading {}", file.path),
            source,
        })?;
        let columns = BatchColumns::new(&batch)?;
        for row in 0..columns.len() {
            let row_offset = columns.queue_offset(row);
            if row_offset < offset {
                continue;
            }
            let before = records.len();
            columns.encode_record(row, &mut properties, &mut records)?;
            if count > 0 && records.len() > max_bytes {
                records.truncate(before);
                break 'batches;
            }
            count += 1;
            next_offset = row_offset + 1;
            if count >= max_count {
                break 'batches;
            }
        }
    }
    if count == 0 {
        return Err(ArchiveError::Corrupt(format!(
            "{} should hold offset {offset} of its queue but does not",
            file.path
        )));
    }
    Ok(Replay::Found {
        records,
        count,
        next_offset,
    })
}

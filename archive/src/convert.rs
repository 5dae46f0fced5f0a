//! One commitlog segment to Parquet: one file per topic and UTC day of store time, rows sorted by
//! queue and queue offset, zstd, statistics with page indexes, bloom filters on msg_id and keys.
//!
//! The segment is read twice, both times from the same mapping: a sequential pass checks every
//! record (CRC) and notes where each one is (16 bytes per record, no other allocation), then each
//! file's rows are appended in sorted order straight from the segment bytes into column builders.
//! Within a queue records are already in offset order, so the second pass reads forward too.

use std::collections::HashMap;

use bytes::Bytes;
use meridian_proto::record::{self, Entry, Record, RecordError};
use meridian_proto::trace::TRACE_TOPIC;
use meridian_proto::validate;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::error::{ArchiveError, Result};
use crate::layout;
pub use crate::options::ConvertOptions;
use crate::schema::{self, BatchBuilder, columns};
use crate::traces::{self, ConvertedTraces};

/// Rows per Arrow batch handed to the Parquet writer.
const BATCH_ROWS: usize = 16 * 1024;
/// A batch is cut earlier when its bodies reach this many bytes.
const BATCH_BODY_BYTES: usize = 32 << 20;
/// Rows per row group: small enough that a replay of one queue reads little beside it.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// The offsets of one queue held by a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRange {
    /// The queue.
    pub queue_id: u32,
    /// First queue offset in the file.
    pub first_offset: u64,
    /// Last queue offset in the file (inclusive).
    pub last_offset: u64,
    /// Rows of this queue (last - first + 1 unless the log had a gap).
    pub rows: u64,
}

/// One Parquet file made from a segment.
#[derive(Debug, Clone)]
pub struct ConvertedFile {
    /// Topic of every row.
    pub topic: String,
    /// UTC day (days since the epoch) of every row's store time.
    pub day: i64,
    /// Where it goes in the archive.
    pub path: Path,
    /// The encoded file.
    pub bytes: Bytes,
    /// Rows.
    pub rows: u64,
    /// Smallest store time (Unix ms).
    pub min_store_time: i64,
    /// Largest store time (Unix ms).
    pub max_store_time: i64,
    /// crc32c of `bytes`.
    pub checksum: u32,
    /// Offsets per queue, by queue id.
    pub queues: Vec<QueueRange>,
}

/// A converted segment.
#[derive(Debug, Clone)]
pub struct ConvertedSegment {
    /// Global offset of the segment's first byte.
    pub start: u64,
    /// Global offset just past its last entry (records and closing blank marker).
    pub end: u64,
    /// Records in the segment.
    pub records: u64,
    /// Bytes of those records (the commitlog bytes archived).
    pub record_bytes: u64,
    /// crc32c of the segment's bytes from `start` to `end` (see [`segment_digest`]).
    pub checksum: u32,
    /// The files, sorted by path.
    pub files: Vec<ConvertedFile>,
    /// The trace topic's events, one row per event (see [`crate::traces`]).
    pub traces: ConvertedTraces,
}

/// Where a record lies in the segment and how it sorts.
#[derive(Clone, Copy)]
struct RowRef {
    queue_offset: u64,
    position: u32,
    queue_id: u32,
}

/// Writer settings for message files.
pub fn writer_properties(options: &ConvertOptions) -> Result<WriterProperties> {
    let zstd = ZstdLevel::try_new(options.zstd_level).map_err(|source| ArchiveError::Parquet {
        path: "(writer settings)".into(),
        source,
    })?;
    let schema = schema::message_schema();
    let index_of = |name: &str| schema.index_of(name).expect("column of the message schema") as i32;
    let column = |name: &str| ColumnPath::from(name);
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        // Bodies are unique and big: no dictionary, and min/max of them help no query.
        .set_dictionary_enabled(false)
        .set_column_statistics_enabled(column(columns::BODY), EnabledStatistics::None)
        .set_column_statistics_enabled(column(columns::PROPERTIES), EnabledStatistics::None)
        .set_column_dictionary_enabled(column(columns::TOPIC), true)
        .set_column_dictionary_enabled(column(columns::TAGS), true)
        .set_column_dictionary_enabled(column(columns::BORN_HOST), true)
        .set_column_dictionary_enabled(column(columns::STORE_HOST), true)
        .set_column_dictionary_enabled(column(columns::IDC), true)
        .set_column_dictionary_enabled(column(columns::BROKER), true)
        .set_column_bloom_filter_enabled(column(columns::MSG_ID), true)
        .set_column_bloom_filter_enabled(
            ColumnPath::new(vec![columns::KEYS.into(), "list".into(), "item".into()]),
            true,
        )
        .set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: index_of(columns::QUEUE_ID),
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: index_of(columns::QUEUE_OFFSET),
                descending: false,
                nulls_first: false,
            },
        ]))
        .build())
}

/// Converts the bytes of the segment that starts at global offset `start`. Conversion stops at
/// the segment's closing blank marker or at unwritten space; any other unreadable bytes are an
/// error (the segment is not archived rather than archived with a hole).
pub fn convert_segment(start: u64, bytes: &[u8], options: &ConvertOptions) -> Result<ConvertedSegment> {
    validate::validate_group(&options.broker)?;
    // Pass 1: check every record and note where it lies, grouped by topic and day.
    let mut groups: HashMap<(&str, i64), Vec<RowRef>> = HashMap::new();
    let (mut position, mut records, mut record_bytes) = (0usize, 0u64, 0u64);
    while position < bytes.len() {
        match record::read_entry(&bytes[position..]) {
            Ok(Entry::Record(record)) => {
                let expected = start + position as u64;
                if record.commitlog_offset() != expected {
                    return Err(ArchiveError::Segment {
                        segment: start,
                        offset: expected,
                        error: RecordError::BadLayout,
                    });
                }
                validate::validate_topic(record.topic())?;
                let day = layout::day_of(record.store_timestamp());
                groups.entry((record.topic(), day)).or_default().push(RowRef {
                    queue_offset: record.queue_offset(),
                    position: u32::try_from(position).map_err(|_| {
                        ArchiveError::Corrupt(format!(
                            "segment {start} is larger than 4 GiB, which the archiver cannot read"
                        ))
                    })?,
                    queue_id: record.queue_id(),
                });
                records += 1;
                record_bytes += record.total_size() as u64;
                position += record.total_size();
            }
            Ok(Entry::Blank(len)) => position += len,
            Err(RecordError::Empty) => break,
            Err(error) => {
                return Err(ArchiveError::Segment {
                    segment: start,
                    offset: start + position as u64,
                    error,
                });
            }
        }
    }
    let end = start + position as u64;

    // The trace topic's records also become trace rows, in commitlog order.
    let mut trace_rows: Vec<u32> = groups
        .iter()
        .filter(|((topic, _), _)| *topic == TRACE_TOPIC)
        .flat_map(|(_, rows)| rows.iter().map(|row| row.position))
        .collect();
    trace_rows.sort_unstable();

    // Pass 2: one file per group, rows in (queue, offset) order.
    let properties = writer_properties(options)?;
    let mut files = Vec::with_capacity(groups.len());
    let mut builder = BatchBuilder::with_capacity(BATCH_ROWS);
    for ((topic, day), mut rows) in groups {
        rows.sort_unstable_by_key(|row| (row.queue_id, row.queue_offset));
        let path = layout::message_file_at(topic, day, &options.broker, start, options.epoch)?;
        let parquet_error = |source| ArchiveError::Parquet {
            path: path.to_string(),
            source,
        };
        let mut writer = ArrowWriter::try_new(
            Vec::with_capacity(record_bytes as usize / 4),
            schema::message_schema(),
            Some(properties.clone()),
        )
        .map_err(parquet_error)?;
        let (mut min_store_time, mut max_store_time) = (i64::MAX, i64::MIN);
        let mut queues: Vec<QueueRange> = Vec::new();
        for row in &rows {
            let record = Record::parse(&bytes[row.position as usize..]).expect("checked in the first pass");
            min_store_time = min_store_time.min(record.store_timestamp());
            max_store_time = max_store_time.max(record.store_timestamp());
            match queues.last_mut() {
                Some(range) if range.queue_id == row.queue_id => {
                    range.last_offset = row.queue_offset;
                    range.rows += 1;
                }
                _ => queues.push(QueueRange {
                    queue_id: row.queue_id,
                    first_offset: row.queue_offset,
                    last_offset: row.queue_offset,
                    rows: 1,
                }),
            }
            builder.append(&record, &options.broker, options.idc.as_deref())?;
            if builder.rows() >= BATCH_ROWS || builder.body_bytes() >= BATCH_BODY_BYTES {
                writer.write(&builder.finish()?).map_err(parquet_error)?;
            }
        }
        if builder.rows() > 0 {
            writer.write(&builder.finish()?).map_err(parquet_error)?;
        }
        let encoded = Bytes::from(writer.into_inner().map_err(parquet_error)?);
        files.push(ConvertedFile {
            topic: topic.to_owned(),
            day,
            checksum: crc32c::crc32c(&encoded),
            path,
            bytes: encoded,
            rows: rows.len() as u64,
            min_store_time,
            max_store_time,
            queues,
        });
    }
    files.sort_by(|left, right| left.path.cmp(&right.path));
    let traces = traces::convert_trace_records(start, trace_bodies(bytes, &trace_rows), options)?;
    Ok(ConvertedSegment {
        start,
        end,
        records,
        record_bytes,
        checksum: crc32c::crc32c(&bytes[..(end - start) as usize]),
        files,
        traces,
    })
}

/// What a segment holds, to compare a local segment with its archived copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentDigest {
    /// Global offset just past its last entry (records and closing blank marker).
    pub end: u64,
    /// Records in it.
    pub records: u64,
    /// crc32c of its bytes up to `end`.
    pub checksum: u32,
}

/// Walks the segment that starts at `start` as [`convert_segment`] does (every record's CRC
/// checked) and digests it.
pub fn segment_digest(start: u64, bytes: &[u8]) -> Result<SegmentDigest> {
    let (mut position, mut records) = (0usize, 0u64);
    while position < bytes.len() {
        match record::read_entry(&bytes[position..]) {
            Ok(Entry::Record(record)) => {
                records += 1;
                position += record.total_size();
            }
            Ok(Entry::Blank(len)) => position += len,
            Err(RecordError::Empty) => break,
            Err(error) => {
                return Err(ArchiveError::Segment {
                    segment: start,
                    offset: start + position as u64,
                    error,
                });
            }
        }
    }
    Ok(SegmentDigest {
        end: start + position as u64,
        records,
        checksum: crc32c::crc32c(&bytes[..position]),
    })
}

/// The bodies of the records at `positions` (checked in the first pass).
fn trace_bodies<'a>(bytes: &'a [u8], positions: &'a [u32]) -> impl Iterator<Item = &'a [u8]> + 'a {
    positions.iter().map(move |position| {
        Record::parse(&bytes[*position as usize..])
            .expect("checked in the first pass")
            .body()
    })
}

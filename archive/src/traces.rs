//! Trace events in the archive: the records of the system trace topic
//! ([`meridian_proto::trace::TRACE_TOPIC`]) decoded into one row per event, so SQL can join
//! messages with what happened to them.
//!
//! The archiver does this while it converts a segment, not the tracer: the trace topic's records
//! are in the broker's commitlog like any message, so its events reach the archive through the
//! same conversion, the same upload and the same manifest entry as the segment's messages. A trace
//! file is therefore committed atomically with its segment, has a deterministic name
//! (`traces/date=<yyyy-mm-dd>/<broker>-<segment_start>.parquet`), and a re-run after a crash
//! overwrites it instead of duplicating it. The trace topic's raw records stay in the message
//! files as well, so replaying the topic from the archive still works.
//!
//! Events are grouped by the UTC day of their own timestamp (when the step happened), sorted by
//! (timestamp, event id), with statistics, page indexes and bloom filters on msg_id and event_id.
//! A record that does not decode as a [`meridian_proto::trace::TraceBatch`] is counted in the
//! manifest entry and skipped, as the tracer skips it.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use meridian_proto::trace::{self, TraceEvent};
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{ArchiveError, Result};
use crate::layout;
use crate::options::ConvertOptions;

/// Rows per row group of a trace file.
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Rows per Arrow batch handed to the writer.
const BATCH_ROWS: usize = 16 * 1024;

/// Column names of trace files, in schema order.
pub mod columns {
    pub const EVENT_ID: &str = "event_id";
    pub const TRACE_TYPE: &str = "trace_type";
    pub const TIMESTAMP: &str = "timestamp";
    pub const MSG_ID: &str = "msg_id";
    pub const TOPIC: &str = "topic";
    pub const QUEUE_ID: &str = "queue_id";
    pub const QUEUE_OFFSET: &str = "queue_offset";
    pub const COMMITLOG_OFFSET: &str = "commitlog_offset";
    pub const KEYS: &str = "keys";
    pub const TAGS: &str = "tags";
    /// The producer or consumer group (`group` is an SQL keyword).
    pub const GROUP_NAME: &str = "group_name";
    pub const CLIENT_ID: &str = "client_id";
    pub const CLIENT_HOST: &str = "client_host";
    pub const BROKER_NAME: &str = "broker_name";
    pub const BROKER_MEMBER: &str = "broker_member";
    pub const BROKER_HOST: &str = "broker_host";
    pub const IDC: &str = "idc";
    pub const BORN_TIMESTAMP: &str = "born_timestamp";
    pub const STORE_TIMESTAMP: &str = "store_timestamp";
    pub const REPLICATED_TIMESTAMP: &str = "replicated_timestamp";
    pub const DELIVERED_TIMESTAMP: &str = "delivered_timestamp";
    pub const CONSUME_START_TIMESTAMP: &str = "consume_start_timestamp";
    pub const CONSUME_END_TIMESTAMP: &str = "consume_end_timestamp";
    pub const COST_US: &str = "cost_us";
    pub const STATUS: &str = "status";
    pub const ERROR_CODE: &str = "error_code";
    pub const ERROR: &str = "error";
    pub const BODY_SIZE: &str = "body_size";
    pub const RECONSUME_COUNT: &str = "reconsume_count";
    pub const SDK_VERSION: &str = "sdk_version";
    pub const SEND_TPS: &str = "send_tps";
    pub const PULL_TPS: &str = "pull_tps";
    pub const CPU_LOAD: &str = "cpu_load";
    pub const DISK_USED_RATIO: &str = "disk_used_ratio";
    pub const FLUSH_LATENCY_US: &str = "flush_latency_us";
    pub const REPLICATION_LATENCY_US: &str = "replication_latency_us";
    /// The broker whose trace topic held the event (the archiving broker).
    pub const ARCHIVED_BY: &str = "archived_by";
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use columns::*;
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let time = |name: &str, nullable: bool| Field::new(name, timestamp_type(), nullable);
    Arc::new(Schema::new(vec![
        text(EVENT_ID, false),
        text(TRACE_TYPE, false),
        time(TIMESTAMP, false),
        text(MSG_ID, false),
        text(TOPIC, false),
        Field::new(QUEUE_ID, DataType::Int32, false),
        Field::new(QUEUE_OFFSET, DataType::Int64, false),
        Field::new(COMMITLOG_OFFSET, DataType::Int64, false),
        Field::new(
            KEYS,
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            false,
        ),
        text(TAGS, true),
        text(GROUP_NAME, true),
        text(CLIENT_ID, true),
        text(CLIENT_HOST, true),
        text(BROKER_NAME, true),
        text(BROKER_MEMBER, true),
        text(BROKER_HOST, true),
        text(IDC, true),
        // Zero in the event (the step did not set it) is null here.
        time(BORN_TIMESTAMP, true),
        time(STORE_TIMESTAMP, true),
        time(REPLICATED_TIMESTAMP, true),
        time(DELIVERED_TIMESTAMP, true),
        time(CONSUME_START_TIMESTAMP, true),
        time(CONSUME_END_TIMESTAMP, true),
        Field::new(COST_US, DataType::Int64, false),
        text(STATUS, false),
        Field::new(ERROR_CODE, DataType::Int32, false),
        text(ERROR, true),
        Field::new(BODY_SIZE, DataType::Int32, false),
        Field::new(RECONSUME_COUNT, DataType::Int32, false),
        text(SDK_VERSION, true),
        // The server-stats snapshot; null when the event carries none (client-side events).
        Field::new(SEND_TPS, DataType::Float64, true),
        Field::new(PULL_TPS, DataType::Float64, true),
        Field::new(CPU_LOAD, DataType::Float64, true),
        Field::new(DISK_USED_RATIO, DataType::Float64, true),
        Field::new(FLUSH_LATENCY_US, DataType::Int64, true),
        Field::new(REPLICATION_LATENCY_US, DataType::Int64, true),
        text(ARCHIVED_BY, false),
    ]))
});

/// The schema of every trace file.
pub fn trace_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The file a segment's trace events of one UTC day go to. Deterministic, like message files.
pub fn trace_file(day: i64, broker: &str, segment_start: u64) -> Result<Path> {
    trace_file_at(day, broker, segment_start, None)
}

/// [`trace_file`] of a group's archiver at `epoch` (see [`layout`]).
pub fn trace_file_at(day: i64, broker: &str, segment_start: u64, epoch: Option<u64>) -> Result<Path> {
    meridian_proto::validate::validate_group(broker)?;
    Ok(Path::from(format!(
        "{}/date={}/{broker}-{segment_start:020}{}.parquet",
        layout::TRACES,
        layout::date_of_day(day),
        layout::epoch_suffix(epoch)
    )))
}

/// One trace file made from a segment.
#[derive(Debug, Clone)]
pub struct ConvertedTraceFile {
    /// UTC day (days since the epoch) of every event's timestamp.
    pub day: i64,
    /// Where it goes in the archive.
    pub path: Path,
    /// The encoded file.
    pub bytes: Bytes,
    /// Events (rows).
    pub rows: u64,
    /// Smallest event timestamp (Unix ms).
    pub min_timestamp: i64,
    /// Largest event timestamp (Unix ms).
    pub max_timestamp: i64,
    /// crc32c of `bytes`.
    pub checksum: u32,
}

/// Trace files of a segment, and how many trace records could not be decoded.
#[derive(Debug, Clone, Default)]
pub struct ConvertedTraces {
    /// The files, sorted by path.
    pub files: Vec<ConvertedTraceFile>,
    /// Trace records that were not a valid trace batch (skipped).
    pub malformed_records: u64,
}

/// Writer settings for trace files.
pub fn writer_properties(options: &ConvertOptions) -> Result<WriterProperties> {
    let zstd = ZstdLevel::try_new(options.zstd_level).map_err(|source| ArchiveError::Parquet {
        path: "(trace writer settings)".into(),
        source,
    })?;
    let schema = trace_schema();
    let index_of = |name: &str| schema.index_of(name).expect("column of the trace schema") as i32;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(ColumnPath::from(columns::MSG_ID), true)
        .set_column_bloom_filter_enabled(ColumnPath::from(columns::EVENT_ID), true)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: index_of(columns::TIMESTAMP),
            descending: false,
            nulls_first: false,
        }]))
        .build())
}

/// Column builders of one batch of trace rows.
struct TraceBatchBuilder {
    text: BTreeMap<String, StringBuilder>,
    times: BTreeMap<String, TimestampMillisecondBuilder>,
    ints32: BTreeMap<String, Int32Builder>,
    ints64: BTreeMap<String, Int64Builder>,
    floats: BTreeMap<String, Float64Builder>,
    keys: ListBuilder<StringBuilder>,
    rows: usize,
}

impl TraceBatchBuilder {
    fn new() -> TraceBatchBuilder {
        let mut builder = TraceBatchBuilder {
            text: BTreeMap::new(),
            times: BTreeMap::new(),
            ints32: BTreeMap::new(),
            ints64: BTreeMap::new(),
            floats: BTreeMap::new(),
            keys: ListBuilder::new(StringBuilder::new()),
            rows: 0,
        };
        for field in trace_schema().fields() {
            let name = field.name().clone();
            match field.data_type() {
                DataType::Utf8 => {
                    builder.text.insert(name, StringBuilder::new());
                }
                DataType::Timestamp(..) => {
                    builder
                        .times
                        .insert(name, TimestampMillisecondBuilder::new().with_timezone("UTC"));
                }
                DataType::Int32 => {
                    builder.ints32.insert(name, Int32Builder::new());
                }
                DataType::Int64 => {
                    builder.ints64.insert(name, Int64Builder::new());
                }
                DataType::Float64 => {
                    builder.floats.insert(name, Float64Builder::new());
                }
                _ => {}
            }
        }
        builder
    }

    fn text(&mut self, name: &str, value: &str) {
        self.text.get_mut(name).expect("text column").append_value(value);
    }

    /// Empty text is null: the event leaves a field it does not know empty.
    fn text_opt(&mut self, name: &str, value: &str) {
        let builder = self.text.get_mut(name).expect("text column");
        if value.is_empty() {
            builder.append_null();
        } else {
            builder.append_value(value);
        }
    }

    /// Zero is null: the step did not set that time.
    fn time_opt(&mut self, name: &str, value: i64) {
        let builder = self.times.get_mut(name).expect("time column");
        if value == 0 {
            builder.append_null();
        } else {
            builder.append_value(value);
        }
    }

    fn append(&mut self, event: &TraceEvent, archived_by: &str) {
        use columns::*;
        self.text(EVENT_ID, &event.event_id);
        self.text(TRACE_TYPE, event.kind().name());
        self.times
            .get_mut(TIMESTAMP)
            .expect("time")
            .append_value(event.timestamp);
        self.text(MSG_ID, &event.msg_id);
        self.text(TOPIC, &event.topic);
        self.ints32
            .get_mut(QUEUE_ID)
            .expect("int")
            .append_value(event.queue_id as i32);
        self.ints64
            .get_mut(QUEUE_OFFSET)
            .expect("int")
            .append_value(event.queue_offset as i64);
        self.ints64
            .get_mut(COMMITLOG_OFFSET)
            .expect("int")
            .append_value(event.commitlog_offset as i64);
        for key in &event.keys {
            self.keys.values().append_value(key);
        }
        self.keys.append(true);
        self.text_opt(TAGS, &event.tags);
        self.text_opt(GROUP_NAME, &event.group);
        self.text_opt(CLIENT_ID, &event.client_id);
        self.text_opt(CLIENT_HOST, &event.client_host);
        self.text_opt(BROKER_NAME, &event.broker_name);
        self.text_opt(BROKER_MEMBER, &event.broker_member);
        self.text_opt(BROKER_HOST, &event.broker_host);
        self.text_opt(IDC, &event.idc);
        self.time_opt(BORN_TIMESTAMP, event.born_timestamp);
        self.time_opt(STORE_TIMESTAMP, event.store_timestamp);
        self.time_opt(REPLICATED_TIMESTAMP, event.replicated_timestamp);
        self.time_opt(DELIVERED_TIMESTAMP, event.delivered_timestamp);
        self.time_opt(CONSUME_START_TIMESTAMP, event.consume_start_timestamp);
        self.time_opt(CONSUME_END_TIMESTAMP, event.consume_end_timestamp);
        self.ints64
            .get_mut(COST_US)
            .expect("int")
            .append_value(event.cost_us.min(i64::MAX as u64) as i64);
        self.text(STATUS, event.outcome().name());
        self.ints32
            .get_mut(ERROR_CODE)
            .expect("int")
            .append_value(event.error_code as i32);
        self.text_opt(ERROR, &event.error);
        self.ints32
            .get_mut(BODY_SIZE)
            .expect("int")
            .append_value(event.body_size as i32);
        self.ints32
            .get_mut(RECONSUME_COUNT)
            .expect("int")
            .append_value(event.reconsume_count as i32);
        self.text_opt(SDK_VERSION, &event.sdk_version);
        let stats = event.server_stats.as_ref();
        self.floats
            .get_mut(SEND_TPS)
            .expect("float")
            .append_option(stats.map(|stats| stats.send_tps));
        self.floats
            .get_mut(PULL_TPS)
            .expect("float")
            .append_option(stats.map(|stats| stats.pull_tps));
        self.floats
            .get_mut(CPU_LOAD)
            .expect("float")
            .append_option(stats.map(|stats| stats.cpu_load));
        self.floats
            .get_mut(DISK_USED_RATIO)
            .expect("float")
            .append_option(stats.map(|stats| stats.disk_used_ratio));
        self.ints64
            .get_mut(FLUSH_LATENCY_US)
            .expect("int")
            .append_option(stats.map(|stats| stats.flush_latency_us as i64));
        self.ints64
            .get_mut(REPLICATION_LATENCY_US)
            .expect("int")
            .append_option(stats.map(|stats| stats.replication_latency_us as i64));
        self.text(ARCHIVED_BY, archived_by);
        self.rows += 1;
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let schema = trace_schema();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let name = field.name().as_str();
            let array: ArrayRef = match field.data_type() {
                DataType::Utf8 => Arc::new(self.text.get_mut(name).expect("text").finish()),
                DataType::Timestamp(..) => Arc::new(self.times.get_mut(name).expect("time").finish()),
                DataType::Int32 => Arc::new(self.ints32.get_mut(name).expect("int").finish()),
                DataType::Int64 => Arc::new(self.ints64.get_mut(name).expect("int").finish()),
                DataType::Float64 => Arc::new(self.floats.get_mut(name).expect("float").finish()),
                _ => Arc::new(self.keys.finish()),
            };
            arrays.push(array);
        }
        self.rows = 0;
        RecordBatch::try_new(schema, arrays).map_err(|source| ArchiveError::Arrow {
            context: "building a batch of archived trace events".into(),
            source,
        })
    }
}

/// Decodes the bodies of a segment's trace-topic records and writes one Parquet file per UTC day
/// of the events' timestamps. `bodies` are the records' bodies in commitlog order.
pub fn convert_trace_records<'a>(
    segment_start: u64,
    bodies: impl IntoIterator<Item = &'a [u8]>,
    options: &ConvertOptions,
) -> Result<ConvertedTraces> {
    let mut by_day: BTreeMap<i64, Vec<TraceEvent>> = BTreeMap::new();
    let mut malformed_records = 0u64;
    for body in bodies {
        match trace::decode_batch(body) {
            Ok(batch) => {
                for event in batch.events {
                    by_day.entry(layout::day_of(event.timestamp)).or_default().push(event);
                }
            }
            Err(error) => {
                malformed_records += 1;
                tracing::warn!(segment = segment_start, %error, "skipping a malformed trace record");
            }
        }
    }
    let properties = writer_properties(options)?;
    let mut files = Vec::with_capacity(by_day.len());
    let mut builder = TraceBatchBuilder::new();
    for (day, mut events) in by_day {
        events.sort_by(|left, right| (left.timestamp, &left.event_id).cmp(&(right.timestamp, &right.event_id)));
        let path = trace_file_at(day, &options.broker, segment_start, options.epoch)?;
        let parquet_error = |source| ArchiveError::Parquet {
            path: path.to_string(),
            source,
        };
        let mut writer =
            ArrowWriter::try_new(Vec::new(), trace_schema(), Some(properties.clone())).map_err(parquet_error)?;
        for event in &events {
            builder.append(event, &options.broker);
            if builder.rows >= BATCH_ROWS {
                writer.write(&builder.finish()?).map_err(parquet_error)?;
            }
        }
        if builder.rows > 0 {
            writer.write(&builder.finish()?).map_err(parquet_error)?;
        }
        let encoded = Bytes::from(writer.into_inner().map_err(parquet_error)?);
        files.push(ConvertedTraceFile {
            day,
            checksum: crc32c::crc32c(&encoded),
            path,
            bytes: encoded,
            rows: events.len() as u64,
            min_timestamp: events.first().map(|event| event.timestamp).unwrap_or(0),
            max_timestamp: events.last().map(|event| event.timestamp).unwrap_or(0),
        });
    }
    Ok(ConvertedTraces {
        files,
        malformed_records,
    })
}

//! The Arrow schema of archived messages, and the columns of one batch built from records.
//!
//! Every field of a record is kept, so a message read back from the archive re-encodes to the
//! exact bytes the broker stored (same CRC): `properties` holds all properties in their stored
//! order, including the id, keys and tag that also have their own columns for SQL.
//!
//! Integer columns are signed (Int32/Int64) although the record's are unsigned: Spark and Trino
//! have no unsigned types, and offsets never reach 2^63.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Int32Builder, Int64Builder, ListBuilder, MapBuilder, RecordBatch,
    StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use meridian_proto::properties::{self, KEY_SEPARATOR, KEYS, MSG_ID, PropertiesIter, TAGS};
use meridian_proto::record::{self, Record, RecordFields};

use crate::error::{ArchiveError, Result};

/// Column names, in schema order.
pub mod columns {
    pub const TOPIC: &str = "topic";
    pub const QUEUE_ID: &str = "queue_id";
    pub const QUEUE_OFFSET: &str = "queue_offset";
    pub const COMMITLOG_OFFSET: &str = "commitlog_offset";
    pub const MSG_ID: &str = "msg_id";
    pub const KEYS: &str = "keys";
    pub const TAGS: &str = "tags";
    pub const BORN_TIMESTAMP: &str = "born_timestamp";
    pub const STORE_TIMESTAMP: &str = "store_timestamp";
    pub const BORN_HOST: &str = "born_host";
    pub const STORE_HOST: &str = "store_host";
    pub const IDC: &str = "idc";
    pub const RECONSUME_COUNT: &str = "reconsume_count";
    pub const FLAGS: &str = "flags";
    pub const PROPERTIES: &str = "properties";
    pub const BODY: &str = "body";
    pub const BODY_SIZE: &str = "body_size";
    pub const BROKER: &str = "broker";
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn keys_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn properties_type() -> DataType {
    let entries = DataType::Struct(
        vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ]
        .into(),
    );
    DataType::Map(Arc::new(Field::new("entries", entries, false)), false)
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use columns::*;
    Arc::new(Schema::new(vec![
        Field::new(TOPIC, DataType::Utf8, false),
        Field::new(QUEUE_ID, DataType::Int32, false),
        Field::new(QUEUE_OFFSET, DataType::Int64, false),
        Field::new(COMMITLOG_OFFSET, DataType::Int64, false),
        Field::new(MSG_ID, DataType::Utf8, false),
        Field::new(KEYS, keys_type(), false),
        Field::new(TAGS, DataType::Utf8, true),
        Field::new(BORN_TIMESTAMP, timestamp_type(), false),
        Field::new(STORE_TIMESTAMP, timestamp_type(), false),
        Field::new(BORN_HOST, DataType::Utf8, false),
        Field::new(STORE_HOST, DataType::Utf8, false),
        Field::new(IDC, DataType::Utf8, true),
        Field::new(RECONSUME_COUNT, DataType::Int32, false),
        Field::new(FLAGS, DataType::Int32, false),
        Field::new(PROPERTIES, properties_type(), false),
        Field::new(BODY, DataType::Binary, false),
        Field::new(BODY_SIZE, DataType::Int32, false),
        Field::new(BROKER, DataType::Utf8, false),
    ]))
});

/// The schema of every message file.
pub fn message_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Column builders for one batch. Appending a record copies its bytes into the builders' buffers
/// and allocates nothing per message.
pub struct BatchBuilder {
    topic: StringBuilder,
    queue_id: Int32Builder,
    queue_offset: Int64Builder,
    commitlog_offset: Int64Builder,
    msg_id: StringBuilder,
    keys: ListBuilder<StringBuilder>,
    tags: StringBuilder,
    born_timestamp: TimestampMillisecondBuilder,
    store_timestamp: TimestampMillisecondBuilder,
    born_host: StringBuilder,
    store_host: StringBuilder,
    idc: StringBuilder,
    reconsume_count: Int32Builder,
    flags: Int32Builder,
    properties: MapBuilder<StringBuilder, StringBuilder>,
    body: BinaryBuilder,
    body_size: Int32Builder,
    broker: StringBuilder,
    /// Reused for formatting host addresses.
    scratch: String,
    rows: usize,
    body_bytes: usize,
}

impl BatchBuilder {
    /// Builders sized for about `rows` records.
    pub fn with_capacity(rows: usize) -> BatchBuilder {
        BatchBuilder {
            topic: StringBuilder::with_capacity(rows, rows * 8),
            queue_id: Int32Builder::with_capacity(rows),
            queue_offset: Int64Builder::with_capacity(rows),
            commitlog_offset: Int64Builder::with_capacity(rows),
            msg_id: StringBuilder::with_capacity(rows, rows * 32),
            keys: ListBuilder::new(StringBuilder::new()),
            tags: StringBuilder::new(),
            born_timestamp: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            store_timestamp: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            born_host: StringBuilder::with_capacity(rows, rows * 16),
            store_host: StringBuilder::with_capacity(rows, rows * 16),
            idc: StringBuilder::new(),
            reconsume_count: Int32Builder::with_capacity(rows),
            flags: Int32Builder::with_capacity(rows),
            properties: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            body: BinaryBuilder::new(),
            body_size: Int32Builder::with_capacity(rows),
            broker: StringBuilder::with_capacity(rows, rows * 8),
            scratch: String::with_capacity(64),
            rows: 0,
            body_bytes: 0,
        }
    }

    /// Rows appended since the last [`BatchBuilder::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Body bytes appended since the last [`BatchBuilder::finish`].
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    fn append_host(builder: &mut StringBuilder, scratch: &mut String, host: SocketAddr) {
        use std::fmt::Write;
        scratch.clear();
        write!(scratch, "{host}").expect("writing to a String");
        builder.append_value(scratch.as_str());
    }

    /// Appends one record.
    pub fn append(&mut self, record: &Record<'_>, broker: &str, idc: Option<&str>) -> Result<()> {
        self.topic.append_value(record.topic());
        self.queue_id.append_value(record.queue_id() as i32);
        self.queue_offset.append_value(record.queue_offset() as i64);
        self.commitlog_offset.append_value(record.commitlog_offset() as i64);
        let (mut msg_id, mut tag) = (None, None);
        let keys = self.keys.values();
        for (name, value) in PropertiesIter::new(record.properties()) {
            match name {
                MSG_ID => msg_id = Some(value),
                TAGS => tag = Some(value),
                KEYS => value
                    .split(KEY_SEPARATOR)
                    .filter(|key| !key.is_empty())
                    .for_each(|key| keys.append_value(key)),
                _ => {}
            }
            self.properties.keys().append_value(name);
            self.properties.values().append_value(value);
        }
        self.keys.append(true);
        self.properties.append(true).map_err(|source| ArchiveError::Arrow {
            context: "appending properties".into(),
            source,
        })?;
        self.msg_id.append_value(msg_id.unwrap_or(""));
        self.tags.append_option(tag);
        self.born_timestamp.append_value(record.born_timestamp());
        self.store_timestamp.append_value(record.store_timestamp());
        Self::append_host(&mut self.born_host, &mut self.scratch, record.born_host());
        Self::append_host(&mut self.store_host, &mut self.scratch, record.store_host());
        self.idc.append_option(idc);
        self.reconsume_count.append_value(record.reconsume_count() as i32);
        self.flags.append_value(record.flags() as i32);
        self.body.append_value(record.body());
        self.body_size.append_value(record.body().len() as i32);
        self.broker.append_value(broker);
        self.rows += 1;
        self.body_bytes += record.body().len();
        Ok(())
    }

    /// The batch of everything appended; the builders start over.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.topic.finish()),
            Arc::new(self.queue_id.finish()),
            Arc::new(self.queue_offset.finish()),
            Arc::new(self.commitlog_offset.finish()),
            Arc::new(self.msg_id.finish()),
            Arc::new(self.keys.finish()),
            Arc::new(self.tags.finish()),
            Arc::new(self.born_timestamp.finish()),
            Arc::new(self.store_timestamp.finish()),
            Arc::new(self.born_host.finish()),
            Arc::new(self.store_host.finish()),
            Arc::new(self.idc.finish()),
            Arc::new(self.reconsume_count.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.properties.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.body_size.finish()),
            Arc::new(self.broker.finish()),
        ];
        self.rows = 0;
        self.body_bytes = 0;
        RecordBatch::try_new(message_schema(), arrays).map_err(|source| ArchiveError::Arrow {
            context: "building a batch of archived messages".into(),
            source,
        })
    }
}

/// Typed views of the columns of a batch read back from a message file.
pub struct BatchColumns<'a> {
    batch: &'a RecordBatch,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArchiveError::Corrupt(format!("message file lacks column {name}")))
}

impl<'a> BatchColumns<'a> {
    /// Checks that the batch has the message schema's columns.
    pub fn new(batch: &'a RecordBatch) -> Result<BatchColumns<'a>> {
        for field in message_schema().fields() {
            let found = column(batch, field.name())?;
            if found.data_type() != field.data_type() {
                return Err(ArchiveError::Corrupt(format!(
                    "column {} is {} instead of {}",
                    field.name(),
                    found.data_type(),
                    field.data_type()
                )));
            }
        }
        Ok(BatchColumns { batch })
    }

    fn col(&self, name: &str) -> &'a ArrayRef {
        column(self.batch, name).expect("checked in new")
    }

    /// Queue id of row `row`.
    pub fn queue_id(&self, row: usize) -> u32 {
        self.col(columns::QUEUE_ID).as_primitive::<Int32Type>().value(row) as u32
    }

    /// Queue offset of row `row`.
    pub fn queue_offset(&self, row: usize) -> u64 {
        self.col(columns::QUEUE_OFFSET).as_primitive::<Int64Type>().value(row) as u64
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }

    /// Re-encodes row `row` as the record the broker stored (byte for byte) and appends it to `out`.
    pub fn encode_record(&self, row: usize, properties_scratch: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<()> {
        let parse_host = |name: &str| -> Result<SocketAddr> {
            let text = self.col(name).as_string::<i32>().value(row);
            text.parse()
                .map_err(|_| ArchiveError::Corrupt(format!("column {name} holds {text:?}, not an address")))
        };
        properties_scratch.clear();
        let map = self.col(columns::PROPERTIES).as_map();
        let entries = map.value(row);
        let names = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_string::<i32>();
        for index in 0..entries.len() {
            properties_scratch.extend_from_slice(names.value(index).as_bytes());
            properties_scratch.push(1);
            properties_scratch.extend_from_slice(values.value(index).as_bytes());
            properties_scratch.push(2);
        }
        let fields = RecordFields {
            flags: self.col(columns::FLAGS).as_primitive::<Int32Type>().value(row) as u32,
            queue_id: self.queue_id(row),
            queue_offset: self.queue_offset(row),
            commitlog_offset: self
                .col(columns::COMMITLOG_OFFSET)
                .as_primitive::<Int64Type>()
                .value(row) as u64,
            born_timestamp: self
                .col(columns::BORN_TIMESTAMP)
                .as_primitive::<TimestampMillisecondType>()
                .value(row),
            store_timestamp: self
                .col(columns::STORE_TIMESTAMP)
                .as_primitive::<TimestampMillisecondType>()
                .value(row),
            born_host: parse_host(columns::BORN_HOST)?,
            store_host: parse_host(columns::STORE_HOST)?,
            reconsume_count: self
                .col(columns::RECONSUME_COUNT)
                .as_primitive::<Int32Type>()
                .value(row) as u32,
            topic: self.col(columns::TOPIC).as_string::<i32>().value(row),
            properties: properties_scratch,
            body: self.col(columns::BODY).as_binary::<i32>().value(row),
        };
        if fields.topic.len() > u8::MAX as usize || fields.properties.len() > u16::MAX as usize {
            return Err(ArchiveError::Corrupt(format!(
                "row {row} has a topic or properties too long for a record"
            )));
        }
        let start = out.len();
        out.resize(start + fields.encoded_len(), 0);
        record::encode_into(&mut out[start..], &fields);
        // A row whose properties were not what the broker wrote would not parse back.
        debug_assert!(properties::is_well_formed(fields.properties));
        Ok(())
    }
}

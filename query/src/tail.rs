//! The live tail: messages a broker stored that the archive does not hold yet, read from the
//! broker's commitlog folder, so that `messages` is the archive plus the live log.
//!
//! A segment is either committed to the archive (a manifest entry names it: its rows come from
//! Parquet) or not (its rows come from the commitlog file, up to the broker's stored offset), so
//! every stored message is in exactly one of the two: no gap, no duplicate. Both sides decide from
//! the same snapshot of the committed index: the service holds a read guard while it plans a
//! query (when listing tables list files and [`LiveTail::scan`] reads the tail) and refreshes the
//! index only under the write guard.
//!
//! A tail needs the broker's disk, so it exists where the query service runs beside the broker
//! (`meridian dev`); a query service of its own reads the archive alone. Start at [`TailSource`].

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use meridian_archive::archiver::list_segments;
use meridian_archive::layout;
use meridian_archive::schema::{BatchBuilder, columns};
use meridian_proto::record::{self, Entry, RecordError};

use crate::committed::CommittedIndex;

/// Rows per batch of the tail.
const TAIL_BATCH_ROWS: usize = 8192;

/// A broker whose commitlog folder this process can read.
#[derive(Clone)]
pub struct TailSource {
    /// The broker (group) name, as its archiver names it in the manifests.
    pub broker: String,
    /// Its data center (the `idc` column), if known.
    pub idc: Option<String>,
    /// Its commitlog folder (`DATA_DIR/commitlog`).
    pub commitlog_dir: PathBuf,
    /// The offset up to which records are stored: bytes past it may be half written.
    pub stored_until: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl fmt::Debug for TailSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TailSource")
            .field("broker", &self.broker)
            .field("commitlog_dir", &self.commitlog_dir)
            .finish()
    }
}

/// The table `live_messages`: the tail of every [`TailSource`], in the schema of the archive's
/// `archived_messages` table (partition columns `topic` and `date` included).
#[derive(Debug)]
pub struct LiveTail {
    sources: Vec<TailSource>,
    index: Arc<CommittedIndex>,
    schema: SchemaRef,
}

impl LiveTail {
    /// The tail of `sources`, leaving out the segments `index` knows as committed; rows in
    /// `schema` (the archive table's).
    pub fn new(sources: Vec<TailSource>, index: Arc<CommittedIndex>, schema: SchemaRef) -> LiveTail {
        LiveTail { sources, index, schema }
    }

    /// Every row of the tail now.
    pub fn read(&self) -> crate::Result<Vec<RecordBatch>> {
        let committed: HashSet<(String, u64)> = self
            .index
            .entries()
            .into_iter()
            .map(|entry| (entry.broker, entry.segment_start))
            .collect();
        let mut batches = Vec::new();
        for source in &self.sources {
            let stored_until = (source.stored_until)();
            let segments = list_segments(&source.commitlog_dir).map_err(|error| tail_error(source, error))?;
            for (segment, _sealed) in segments {
                if committed.contains(&(source.broker.clone(), segment.start)) || segment.start >= stored_until {
                    continue;
                }
                let readable = (stored_until - segment.start).min(segment.len) as usize;
                let bytes = read_prefix(&segment.path, readable).map_err(|error| tail_error(source, error))?;
                self.append_segment(source, segment.start, &bytes, &mut batches)?;
            }
        }
        Ok(batches)
    }

    fn append_segment(
        &self,
        source: &TailSource,
        start: u64,
        bytes: &[u8],
        batches: &mut Vec<RecordBatch>,
    ) -> crate::Result<()> {
        let mut builder = BatchBuilder::with_capacity(TAIL_BATCH_ROWS);
        let mut position = 0usize;
        while position < bytes.len() {
            match record::read_entry(&bytes[position..]) {
                Ok(Entry::Record(record)) => {
                    position += record.total_size();
                    // The trace topic's records are the `traces` table, as in the archive.
                    if record.topic() == meridian_proto::trace::TRACE_TOPIC {
                        continue;
                    }
                    builder
                        .append(&record, &source.broker, source.idc.as_deref())
                        .map_err(|error| tail_error(source, error))?;
                    if builder.rows() >= TAIL_BATCH_ROWS {
                        batches.push(self.conform(builder.finish().map_err(|error| tail_error(source, error))?)?);
                    }
                }
                Ok(Entry::Blank(len)) => position += len,
                Err(RecordError::Empty) => break,
                Err(error) => {
                    return Err(crate::QueryError::Execution(format!(
                        "reading the live tail of broker {}: the record at offset {} of segment {start} does not decode ({error}); the broker's commitlog in {} needs checking",
                        source.broker,
                        start + position as u64,
                        source.commitlog_dir.display()
                    )));
                }
            }
        }
        if builder.rows() > 0 {
            batches.push(self.conform(builder.finish().map_err(|error| tail_error(source, error))?)?);
        }
        Ok(())
    }

    /// A batch of the archive's file schema in the table's schema: view types, and the `date`
    /// partition column computed from the store time as the archiver names folders.
    fn conform(&self, batch: RecordBatch) -> crate::Result<RecordBatch> {
        let arrow_error = |error: arrow::error::ArrowError| {
            crate::QueryError::Execution(format!("shaping the live tail's rows: {error}"))
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let column: ArrayRef = if field.name() == "date" {
                let stored = batch
                    .column_by_name(columns::STORE_TIMESTAMP)
                    .expect("the message schema has a store time")
                    .as_primitive::<TimestampMillisecondType>();
                let mut dates = StringBuilder::with_capacity(stored.len(), stored.len() * 10);
                for timestamp in stored.values() {
                    dates.append_value(layout::date_of_day(layout::day_of(*timestamp)));
                }
                Arc::new(dates.finish())
            } else {
                batch.column_by_name(field.name()).cloned().ok_or_else(|| {
                    crate::QueryError::Execution(format!("the live tail has no column {}", field.name()))
                })?
            };
            arrays.push(cast(&column, field.data_type()).map_err(arrow_error)?);
        }
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(arrow_error)
    }
}

fn tail_error(source: &TailSource, error: impl fmt::Display) -> crate::QueryError {
    crate::QueryError::Execution(format!(
        "reading the live tail of broker {} from {}: {error}",
        source.broker,
        source.commitlog_dir.display()
    ))
}

/// The first `len` bytes of a file (a segment is pre-allocated: reading past the stored offset
/// would read unwritten space).
fn read_prefix(path: &std::path::Path, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(len);
    std::fs::File::open(path)?.take(len as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[async_trait]
impl TableProvider for LiveTail {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // Reading files blocks: on a multi-threaded runtime (the service's query threads) the
        // others go on meanwhile.
        let multi_threaded = tokio::runtime::Handle::try_current()
            .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let batches = if multi_threaded {
            tokio::task::block_in_place(|| self.read())
        } else {
            self.read()
        }
        .map_err(|error| DataFusionError::External(Box::new(error)))?;
        let table = MemTable::try_new(self.schema.clone(), vec![batches])?;
        table.scan(state, projection, filters, limit).await
    }
}

//! Archives with known contents, written through the archiver's own conversion and manifest
//! commit: the SQL test files run over a small one, `meridian bench archive-gen` writes large ones
//! for the benchmarks against DuckDB.
//!
//! Message `i` is [`meridian_archive::sample::message`]`(i, ...)`; every `trace_every`-th message
//! also gets its trace events (Pub, Store with a server-stats snapshot, SubBefore, SubAfter by the
//! group `billing`) with a consume latency of [`consume_latency_ms`]`(i)`, packed into trace
//! records on the trace topic of the same segment.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use meridian_archive::archiver::{Archiver, RunReport};
use meridian_archive::convert::{self, ConvertOptions};
use meridian_archive::sample;
use meridian_archive::store::ArchiveStore;

use crate::error::{QueryError, Result};

/// The consumer group of generated SubAfter events.
pub const GROUP: &str = "billing";

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateSpec {
    /// Messages.
    pub messages: u64,
    /// Topics (`topic-0` ...).
    pub topics: u32,
    /// Queues per topic.
    pub queues: u32,
    /// Store time of message 0 (Unix ms).
    pub first_store_time: i64,
    /// Store time between consecutive messages (ms).
    pub step_ms: i64,
    /// Body size in bytes (about).
    pub body_size: usize,
    /// Every this many messages one is traced (0: none).
    pub trace_every: u64,
    /// Messages per commitlog segment.
    pub messages_per_segment: u64,
    /// Broker name in the archive.
    pub broker: String,
}

impl GenerateSpec {
    /// The small archive the SQL test files describe (see `query/tests/slt/README.md`).
    pub fn test_archive() -> GenerateSpec {
        GenerateSpec {
            messages: 2400,
            topics: 3,
            queues: 4,
            // 2026-11-25T23:00:00Z: an hour and 20 minutes, across midnight UTC.
            first_store_time: 1_795_647_600_000,
            step_ms: 2000,
            body_size: 120,
            trace_every: 10,
            messages_per_segment: 500,
            broker: "broker-a".into(),
        }
    }
}

/// Consume latency (store to the end of the handler) of traced message `index`, in ms: 5 ms to
/// about 2 s, so a known share exceeds 1 s.
pub fn consume_latency_ms(index: u64) -> i64 {
    5 + (index.wrapping_mul(7919) % 2000) as i64
}

/// What was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerateReport {
    /// Messages archived.
    pub messages: u64,
    /// Trace events archived.
    pub trace_events: u64,
    /// Segments archived.
    pub segments: u64,
    /// Commitlog bytes of the records.
    pub record_bytes: u64,
    /// Parquet bytes written.
    pub parquet_bytes: u64,
}

/// Messages of `index < first` that map to each (topic, queue): message `i` goes to topic
/// `i % topics` and queue `(i / topics) % queues`, a pattern that repeats every
/// `topics * queues` messages, so a segment's first queue offsets are known without making the
/// segments before it.
fn queue_offsets_before(spec: &GenerateSpec, first: u64) -> HashMap<(String, u32), u64> {
    let period = u64::from(spec.topics) * u64::from(spec.queues);
    let mut offsets = HashMap::new();
    for slot in 0..period {
        let topic = format!("topic-{}", slot % u64::from(spec.topics));
        let queue = ((slot / u64::from(spec.topics)) % u64::from(spec.queues)) as u32;
        let before = first / period + u64::from(slot < first % period);
        offsets.insert((topic, queue), before);
    }
    offsets
}

/// Traced messages among `first..first + count`.
fn traced_in(spec: &GenerateSpec, first: u64, count: u64) -> u64 {
    if spec.trace_every == 0 {
        return 0;
    }
    (first + count).div_ceil(spec.trace_every) - first.div_ceil(spec.trace_every)
}

/// Trace events per trace record.
const EVENTS_PER_RECORD: usize = 64;

fn segment_range(spec: &GenerateSpec, segment: u64) -> (u64, u64) {
    let per_segment = spec.messages_per_segment.max(1);
    let first = segment * per_segment;
    (first, per_segment.min(spec.messages - first))
}

/// Bytes reserved for each segment: enough for its records; the rest is the blank tail a
/// broker's segment has too.
fn segment_len(spec: &GenerateSpec) -> usize {
    let per_segment = spec.messages_per_segment.max(1) as usize;
    let traced = if spec.trace_every == 0 {
        0
    } else {
        per_segment / spec.trace_every as usize + 1
    };
    per_segment * (spec.body_size + 320) + traced * 4 * 400 + 64 * 1024
}

/// Segment number `segment`: its messages and the trace records of the traced ones.
fn segment_bytes(spec: &GenerateSpec, segment: u64, trace_offset: u64) -> (Vec<u8>, u64, u64) {
    let (first, count) = segment_range(spec, segment);
    let mut records = Vec::with_capacity(count as usize + 16);
    let mut events = Vec::new();
    for index in first..first + count {
        let message = sample::message(
            index,
            spec.topics,
            spec.queues,
            spec.first_store_time,
            spec.step_ms,
            spec.body_size,
        );
        if spec.trace_every > 0 && index % spec.trace_every == 0 {
            events.extend(sample::trace_events(&message, GROUP, consume_latency_ms(index)));
        }
        records.push(message);
    }
    let trace_count = events.len() as u64;
    records.extend(sample::trace_records(
        &events,
        EVENTS_PER_RECORD,
        0xB000_0000_0000 + first,
    ));
    let mut offsets = queue_offsets_before(spec, first);
    offsets.insert((meridian_proto::trace::TRACE_TOPIC.to_owned(), 0), trace_offset);
    let start = segment * segment_len(spec) as u64;
    let bytes = sample::segment(start, segment_len(spec), &records, &mut offsets, true);
    (bytes, count, trace_count)
}

/// Writes the archive `spec` describes into `store`: segments are made and converted on every
/// core and committed in offset order; `progress` gets the messages done so far. Memory stays
/// at a few segments whatever the size.
pub async fn generate(
    store: &ArchiveStore,
    spec: &GenerateSpec,
    mut progress: impl FnMut(u64),
) -> Result<GenerateReport> {
    let options = ConvertOptions::new(spec.broker.clone());
    // The archiver's publish step (upload, then manifest commit) is what makes files visible; it
    // never reads the commitlog folder, so any folder will do.
    let archiver = Archiver::new(store.clone(), options.clone(), std::env::temp_dir(), Duration::ZERO)?;
    let segments = spec.messages.div_ceil(spec.messages_per_segment.max(1));
    let parallel = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
    let mut trace_offset = 0u64;
    let jobs = (0..segments).map(|segment| {
        let options = options.clone();
        let spec = spec.clone();
        let offset = trace_offset;
        let (first, count) = segment_range(&spec, segment);
        trace_offset += traced_in(&spec, first, count)
            .saturating_mul(4)
            .div_ceil(EVENTS_PER_RECORD as u64);
        async move {
            tokio::task::spawn_blocking(move || {
                let (bytes, count, traced) = segment_bytes(&spec, segment, offset);
                let start = segment * segment_len(&spec) as u64;
                convert::convert_segment(start, &bytes, &options).map(|converted| (converted, count, traced))
            })
            .await
            .map_err(|error| QueryError::Execution(format!("conversion task failed: {error}")))?
            .map_err(QueryError::from)
        }
    });
    let mut conversions = futures_util::stream::iter(jobs).buffered(parallel);
    let mut report = GenerateReport::default();
    // The archiver's own totals: what a real run of it would report for these segments.
    let mut archived = RunReport::default();
    while let Some(done) = conversions.next().await {
        let (converted, count, traced) = done?;
        archiver.publish(&converted).await?;
        archived.count(&converted);
        report.messages += count;
        report.trace_events += traced;
        progress(report.messages);
    }
    report.segments = archived.archived.len() as u64;
    report.record_bytes = archived.record_bytes;
    report.parquet_bytes = archived.parquet_bytes;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_offsets_follow_the_pattern() {
        let spec = GenerateSpec::test_archive();
        // 3 topics x 4 queues: message 13 is topic-1 queue 0, its second message there.
        let offsets = queue_offsets_before(&spec, 13);
        assert_eq!(offsets[&("topic-1".to_owned(), 0)], 1);
        assert_eq!(offsets[&("topic-0".to_owned(), 0)], 2);
        assert_eq!(offsets[&("topic-2".to_owned(), 3)], 1);
        assert_eq!(traced_in(&spec, 0, 10), 1);
        assert_eq!(traced_in(&spec, 5, 20), 2);
    }
}

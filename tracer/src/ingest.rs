//! Reading the trace topic into the index.
//!
//! One reader task per queue of the trace topic (every broker group holds
//! [`meridian_proto::trace::TRACE_TOPIC_QUEUES`] of them) long-polls its queue and hands what it
//! read to the indexer. The indexer checks each record ([`decode_batch`]: a malformed one is
//! counted and skipped, the rest of the queue goes on), adds its events on a blocking thread, and
//! every `commit_interval_ms` commits the index with the positions read, then commits the same
//! positions as the group's offsets on the brokers. A crash between the two re-reads from the
//! brokers' older offsets, and the index skips what its commits already hold.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_client::{ConnectionPool, RouteSource};
use meridian_proto::RequestCode;
use meridian_proto::messages::{
    BrokerRoute, CommitOffsetRequest, PullRequest, PullResponse, PullStatus, QueryOffsetRequest, QueryOffsetResponse,
    QueueInfoResponse, QueueRef,
};
use meridian_proto::record::{StoredMessage, decode_all};
use meridian_proto::trace::{TRACE_TOPIC, decode_batch};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TracerConfig;
use crate::index::{Added, Positions, TraceIndex, day_of, queue_key};
use crate::metrics::{SkipLabels, TracerMetrics};
use crate::worker::IndexThread;

const RETRY_BACKOFF: Duration = Duration::from_secs(1);
const LONG_POLL: Duration = Duration::from_millis(1000);

/// What one queue reader read.
struct Read {
    broker_name: String,
    queue_id: u32,
    messages: Vec<StoredMessage>,
    next_offset: u64,
}

/// Addresses to read each broker group from (its master, else its most advanced live slave).
type Addrs = Arc<Mutex<BTreeMap<String, String>>>;

fn read_addr(broker: &BrokerRoute) -> Option<String> {
    if !broker.addr.is_empty() {
        return Some(broker.addr.clone());
    }
    broker
        .replicas
        .iter()
        .filter(|replica| replica.alive && !replica.addr.is_empty())
        .max_by_key(|replica| replica.max_offset)
        .map(|replica| replica.addr.clone())
}

/// Everything the ingest tasks share.
struct Ingest {
    index: Arc<TraceIndex>,
    pool: ConnectionPool,
    config: TracerConfig,
    metrics: Arc<TracerMetrics>,
    addrs: Addrs,
    stop: CancellationToken,
    /// Where adds and commits run: one thread at a lower priority (`worker.rs`).
    indexer: IndexThread,
}

impl Ingest {
    fn addr(&self, broker_name: &str) -> Option<String> {
        self.addrs.lock().expect("addrs lock").get(broker_name).cloned()
    }

    fn timeout(&self) -> Duration {
        self.pool.config().request_timeout
    }

    /// Where a queue's reading starts: past what the index committed or the group committed on
    /// the broker, whichever is further; the queue's first offset when neither exists.
    async fn start_offset(&self, broker_name: &str, queue_id: u32) -> Result<u64, String> {
        let addr = self.addr(broker_name).ok_or("no address")?;
        let stored: QueryOffsetResponse = self
            .pool
            .call(
                &addr,
                RequestCode::QueryOffset,
                &QueryOffsetRequest {
                    group: self.config.group.clone(),
                    topic: TRACE_TOPIC.into(),
                    queue_id,
                    ..Default::default()
                },
                self.timeout(),
            )
            .await
            .map_err(|error| error.to_string())?;
        let indexed = self
            .index
            .committed_positions()
            .get(&queue_key(broker_name, queue_id))
            .copied();
        match stored.offset.max(indexed) {
            Some(offset) => Ok(offset),
            None => {
                let info: QueueInfoResponse = self
                    .pool
                    .call(
                        &addr,
                        RequestCode::QueueInfo,
                        &QueueRef {
                            topic: TRACE_TOPIC.into(),
                            queue_id,
                        },
                        self.timeout(),
                    )
                    .await
                    .map_err(|error| error.to_string())?;
                Ok(info.min_offset)
            }
        }
    }

    async fn pull(&self, broker_name: &str, queue_id: u32, offset: u64) -> Result<Read, String> {
        let addr = self.addr(broker_name).ok_or("no address")?;
        let request = PullRequest {
            group: self.config.group.clone(),
            topic: TRACE_TOPIC.into(),
            queue_id,
            offset,
            max_count: self.config.pull_batch,
            max_bytes: 8 << 20,
            long_poll_ms: LONG_POLL.as_millis() as u32,
            ..Default::default()
        };
        let response: PullResponse = self
            .pool
            .call(&addr, RequestCode::Pull, &request, self.timeout() + LONG_POLL)
            .await
            .map_err(|error| error.to_string())?;
        let messages = match PullStatus::try_from(response.status) {
            Ok(PullStatus::Found) => decode_all(&response.records).map_err(|error| error.to_string())?,
            _ => Vec::new(),
        };
        Ok(Read {
            broker_name: broker_name.to_owned(),
            queue_id,
            messages,
            next_offset: response.next_offset,
        })
    }
}

async fn read_queue(ingest: Arc<Ingest>, broker_name: String, queue_id: u32, reads: mpsc::Sender<Read>) {
    let mut offset = loop {
        match ingest.start_offset(&broker_name, queue_id).await {
            Ok(offset) => break offset,
            Err(error) => {
                tracing::debug!(
                    broker = broker_name,
                    queue_id,
                    error,
                    "cannot find where to start reading traces"
                );
                tokio::select! {
                    _ = ingest.stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_BACKOFF) => continue,
                }
            }
        }
    };
    tracing::info!(broker = broker_name, queue_id, offset, "reading trace queue");
    loop {
        let read = tokio::select! {
            _ = ingest.stop.cancelled() => return,
            read = ingest.pull(&broker_name, queue_id, offset) => read,
        };
        match read {
            Ok(read) => {
                let next = read
                    .next_offset
                    .max(read.messages.last().map_or(0, |last| last.queue_offset + 1));
                if next == offset && read.messages.is_empty() {
                    continue;
                }
                offset = next;
                if reads.send(read).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                ingest.metrics.broker_errors.inc();
                tracing::debug!(
                    broker = broker_name,
                    queue_id,
                    offset,
                    error,
                    "pulling traces failed, retrying"
                );
                tokio::select! {
                    _ = ingest.stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                }
            }
        }
    }
}

/// Keeps the brokers' addresses fresh and starts a reader for each queue the route shows.
async fn watch_route(
    ingest: Arc<Ingest>,
    route: Arc<dyn RouteSource>,
    reads: mpsc::Sender<Read>,
    readers: TaskTracker,
) {
    let mut started: HashSet<(String, u32)> = HashSet::new();
    loop {
        match route.route(TRACE_TOPIC).await {
            Ok(found) => {
                let mut addrs = ingest.addrs.lock().expect("addrs lock");
                for broker in &found.brokers {
                    if let Some(addr) = read_addr(broker) {
                        addrs.insert(broker.broker_name.clone(), addr);
                    }
                }
                drop(addrs);
                for broker in found.brokers {
                    for queue_id in 0..broker.queues {
                        if started.insert((broker.broker_name.clone(), queue_id)) {
                            readers.spawn(read_queue(
                                ingest.clone(),
                                broker.broker_name.clone(),
                                queue_id,
                                reads.clone(),
                            ));
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "no route for the trace topic yet"),
        }
        tokio::select! {
            _ = ingest.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Indexes what was read, off the runtime threads. Returns the positions it covers.
fn index_reads(
    index: &TraceIndex,
    metrics: &TracerMetrics,
    reads: Vec<Read>,
    oldest_day: i64,
    positions: &mut Positions,
) {
    for read in reads {
        let key = queue_key(&read.broker_name, read.queue_id);
        for message in &read.messages {
            metrics.records_read.inc();
            match decode_batch(&message.body[..]) {
                Err(error) => {
                    metrics.malformed_records.inc();
                    tracing::warn!(
                        broker = read.broker_name,
                        queue_id = read.queue_id,
                        offset = message.queue_offset,
                        %error,
                        "malformed trace record skipped"
                    );
                }
                Ok(batch) => {
                    for event in &batch.events {
                        match index.add(event, &key, message.queue_offset, oldest_day) {
                            Ok(Added::Indexed) => {
                                metrics.events_indexed.inc();
                            }
                            Ok(skipped) => {
                                let reason = match skipped {
                                    Added::Replayed => "replayed",
                                    Added::Duplicate => "duplicate",
                                    _ => "expired",
                                };
                                metrics.events_skipped.get_or_create(&SkipLabels { reason }).inc();
                            }
                            Err(error) => tracing::error!(%error, "indexing a trace event failed"),
                        }
                    }
                }
            }
        }
        let next = read
            .next_offset
            .max(read.messages.last().map_or(0, |last| last.queue_offset + 1));
        let position = positions.entry(key).or_insert(0);
        *position = (*position).max(next);
    }
}

/// The oldest day kept: `retention_days` days up to and including today.
fn oldest_day(retention_days: u32) -> i64 {
    let now = meridian_proto::time::now_millis();
    day_of(now) - i64::from(retention_days) + 1
}

/// Reads the trace topic into `index` until `stop`, then commits what it indexed.
pub async fn run(
    index: Arc<TraceIndex>,
    route: Arc<dyn RouteSource>,
    pool: ConnectionPool,
    config: TracerConfig,
    metrics: Arc<TracerMetrics>,
    stop: CancellationToken,
) {
    let base_interval = Duration::from_millis(config.commit_interval_ms);
    let mut commit_interval = base_interval;
    let retention_days = config.retention_days;
    let indexer = match IndexThread::start(config.index_nice) {
        Ok(indexer) => indexer,
        Err(error) => {
            tracing::error!(%error, "cannot start the tracer's indexing thread; nothing is indexed");
            return;
        }
    };
    let ingest = Arc::new(Ingest {
        indexer,
        index: index.clone(),
        pool,
        config,
        metrics: metrics.clone(),
        addrs: Arc::default(),
        stop: stop.clone(),
    });
    let (reads_tx, mut reads_rx) = mpsc::channel::<Read>(256);
    let readers = TaskTracker::new();
    readers.spawn(watch_route(ingest.clone(), route, reads_tx, readers.clone()));

    let mut positions: Positions = index.committed_positions();
    let mut uncommitted = false;
    let mut next_commit = tokio::time::Instant::now() + commit_interval;
    let mut retention_checked: Option<Instant> = None;
    loop {
        let mut batch = Vec::new();
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            received = reads_rx.recv_many(&mut batch, 256) => received == 0,
            _ = tokio::time::sleep_until(next_commit) => false,
        };
        if !batch.is_empty() {
            let oldest = oldest_day(retention_days);
            let (task_index, task_metrics) = (index.clone(), metrics.clone());
            let mut task_positions = std::mem::take(&mut positions);
            positions = match ingest
                .indexer
                .run(move || {
                    index_reads(&task_index, &task_metrics, batch, oldest, &mut task_positions);
                    task_positions
                })
                .await
            {
                Some(updated) => updated,
                None => {
                    tracing::error!("the tracer's indexing thread stopped");
                    return;
                }
            };
            uncommitted = true;
        }
        if let Some(next) = commit_due(tokio::time::Instant::now(), next_commit, commit_interval, stopping) {
            next_commit = next;
            if uncommitted {
                let took = commit(&ingest, &positions).await;
                uncommitted = false;
                commit_interval = adaptive_interval(base_interval, took);
                next_commit = tokio::time::Instant::now() + commit_interval;
            }
            if retention_checked.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                retention_checked = Some(Instant::now());
                let task_index = index.clone();
                let oldest = oldest_day(retention_days);
                match ingest.indexer.run(move || task_index.drop_before(oldest)).await {
                    Some(Ok(dropped)) if !dropped.is_empty() => {
                        tracing::info!(?dropped, "trace partitions past retention deleted")
                    }
                    Some(Err(error)) => tracing::warn!(%error, "deleting expired trace partitions failed"),
                    _ => {}
                }
                metrics.partitions.set(index.days().len() as i64);
            }
        }
        if stopping {
            break;
        }
    }
    stop.cancel();
    readers.close();
    readers.wait().await;
}

/// Whether the commit deadline `deadline` has come at `now` (or the loop is `stopping`), and if
/// so the next one. The deadline moves on whether or not anything waits to be committed: an idle
/// loop that left it in the past would find its sleep already over and spin.
fn commit_due(
    now: tokio::time::Instant,
    deadline: tokio::time::Instant,
    interval: Duration,
    stopping: bool,
) -> Option<tokio::time::Instant> {
    (stopping || now >= deadline).then(|| now + interval)
}

/// The interval to the next commit, given that the last one took `took`: `base`
/// (`commit_interval_ms`) while commits are quick, longer under load, so that committing (a
/// segment written and synced, the reader reloaded, the merges more segments bring) takes at most
/// about a tenth of the indexing thread; never more than 4 × `base` (2 s by default), which bounds
/// how long an event waits to be searchable.
fn adaptive_interval(base: Duration, took: Duration) -> Duration {
    (took * 10).clamp(base, base * 4)
}

/// Commits the index, then the same positions as the group's offsets on the brokers. Returns how
/// long the index's commit took.
async fn commit(ingest: &Ingest, positions: &Positions) -> Duration {
    let started = Instant::now();
    let index = ingest.index.clone();
    let task_positions = positions.clone();
    match ingest.indexer.run(move || index.commit(&task_positions)).await {
        Some(Ok(_)) => {}
        Some(Err(error)) => {
            tracing::error!(%error, "committing the trace index failed");
            return started.elapsed();
        }
        None => {
            tracing::error!("the tracer's indexing thread stopped before committing");
            return started.elapsed();
        }
    }
    let took = started.elapsed();
    ingest.metrics.commits.inc();
    ingest.metrics.commit_seconds.observe(took.as_secs_f64());
    ingest.metrics.indexed_documents.set(ingest.index.num_docs() as i64);
    for (key, offset) in positions {
        let Some((broker_name, queue_id)) = key.rsplit_once('/') else {
            continue;
        };
        let (Some(addr), Ok(queue_id)) = (ingest.addr(broker_name), queue_id.parse::<u32>()) else {
            continue;
        };
        let request = CommitOffsetRequest {
            group: ingest.config.group.clone(),
            topic: TRACE_TOPIC.into(),
            queue_id,
            offset: *offset,
            ..Default::default()
        };
        if let Err(error) = ingest
            .pool
            .call_empty(&addr, RequestCode::CommitOffset, &request, ingest.timeout())
            .await
        {
            ingest.metrics.broker_errors.inc();
            tracing::debug!(%error, broker = broker_name, queue_id, "committing the tracer's offset failed");
        }
    }
    took
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use meridian_proto::MessageId;
    use meridian_proto::trace::{TraceBatch, TraceEvent, TraceType};

    #[test]
    fn the_commit_deadline_moves_on_even_with_nothing_to_commit() {
        let start = tokio::time::Instant::now();
        let interval = Duration::from_millis(500);
        let deadline = start + interval;
        assert_eq!(commit_due(start, deadline, interval, false), None);
        let late = start + Duration::from_secs(3);
        let next = commit_due(late, deadline, interval, false).expect("the deadline passed");
        assert!(next > late, "a deadline left in the past makes the idle loop spin");
        assert_eq!(commit_due(late, next, interval, false), None);
        assert_eq!(commit_due(start, deadline, interval, true), Some(start + interval));
    }
    use prost::Message;

    #[test]
    fn commits_space_out_under_load_up_to_four_intervals() {
        let base = Duration::from_millis(500);
        assert_eq!(
            adaptive_interval(base, Duration::from_millis(3)),
            base,
            "quick commits keep the base"
        );
        assert_eq!(
            adaptive_interval(base, Duration::from_millis(120)),
            Duration::from_millis(1200),
            "a commit takes a tenth of the time at most"
        );
        assert_eq!(
            adaptive_interval(base, Duration::from_secs(5)),
            base * 4,
            "capped at four"
        );
    }

    fn record(queue_offset: u64, body: Vec<u8>) -> StoredMessage {
        StoredMessage {
            topic: TRACE_TOPIC.into(),
            queue_id: 0,
            queue_offset,
            commitlog_offset: queue_offset * 100,
            born_timestamp: 1,
            store_timestamp: 1,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_host: "127.0.0.1:2".parse().unwrap(),
            reconsume_count: 0,
            flags: 0,
            properties: Bytes::new(),
            body: Bytes::from(body),
        }
    }

    #[test]
    fn malformed_records_are_counted_and_skipped_and_the_rest_is_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let index = TraceIndex::open(dir.path(), 15_000_000).unwrap();
        let metrics = TracerMetrics::default();
        let msg_id = MessageId::generate().to_string();
        let event = TraceEvent {
            event_id: MessageId::generate().to_string(),
            trace_type: TraceType::Store as i32,
            timestamp: 1_795_631_410_823,
            msg_id: msg_id.clone(),
            topic: "orders".into(),
            broker_name: "broker-a".into(),
            ..TraceEvent::default()
        };
        let mut bad_event = event.clone();
        bad_event.msg_id = "forged".into();
        let reads = vec![Read {
            broker_name: "broker-a".into(),
            queue_id: 0,
            messages: vec![
                record(0, b"\xff\xfe not a batch".to_vec()),
                record(1, TraceBatch::from(vec![bad_event]).encode_to_vec()),
                record(2, TraceBatch::from(vec![event]).encode_to_vec()),
            ],
            next_offset: 3,
        }];
        let mut positions = Positions::new();
        index_reads(&index, &metrics, reads, 0, &mut positions);
        assert_eq!(metrics.malformed_records.get(), 2);
        assert_eq!(metrics.events_indexed.get(), 1);
        assert_eq!(positions, Positions::from([("broker-a/0".to_owned(), 3)]));
        index.commit(&positions).unwrap();
        assert_eq!(
            index
                .by_msg_id(&msg_id, &crate::index::Filter::default())
                .unwrap()
                .len(),
            1
        );
    }
}

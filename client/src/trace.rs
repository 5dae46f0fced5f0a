//! The consume-side trace hook: what only a consumer knows about a message (when its handler
//! started and ended, what it returned) as `SubBefore` and `SubAfter` trace events.
//!
//! The handler's path pays one short-locked push of a fixed-size row per event into a bounded
//! buffer: the message's properties are kept by reference count (`Bytes`), its topic and broker
//! group as an index into a few names held once, so no event is built, no string copied and no
//! memory allocated per message (the rows' vector grows to its working size and is reused). A
//! background task of the [`crate::PushConsumer`] takes the rows every 200 ms, or as soon as a
//! full report is waiting, builds the events off the handler's path and sends them as
//! [`meridian_proto::RequestCode::TraceReport`]s to the broker group that delivered the messages,
//! every report of a round at once; the broker stamps the client's address and writes them to the
//! trace topic. A full buffer drops events and counts them
//! ([`crate::PushConsumer::trace_events_dropped`]), never blocking the handler. Reports are not
//! retried: a lost report loses consume-side events, never messages.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use meridian_proto::MessageId;
use meridian_proto::properties;
use meridian_proto::record::StoredMessage;
use meridian_proto::time::now_millis;
use meridian_proto::trace::{MAX_REPORT_EVENTS, TraceEvent, TraceStatus, TraceType};

/// Most events waiting to be reported; more are dropped.
const BUFFER_EVENTS: usize = 64 * 1024;

/// One SubBefore or SubAfter waiting to be reported: what the event needs, nothing built.
struct Row {
    kind: TraceType,
    status: TraceStatus,
    /// Index of the (topic, broker group) pair in [`Rows::names`].
    names: u32,
    timestamp: i64,
    consume_start: i64,
    consume_end: i64,
    cost_us: u64,
    reconsume_count: u32,
    queue_id: u32,
    queue_offset: u64,
    commitlog_offset: u64,
    born_timestamp: i64,
    store_timestamp: i64,
    body_size: u32,
    /// The message's properties (msgId, keys, tag), shared with the delivered message.
    properties: Bytes,
}

/// What waits for the reporter.
#[derive(Default)]
struct Rows {
    rows: Vec<Row>,
    /// (topic, broker group) pairs the rows name: a consumer sees few, so a scan finds one.
    names: Vec<(String, String)>,
}

impl Rows {
    fn names_of(&mut self, topic: &str, broker_name: &str) -> u32 {
        let found = self
            .names
            .iter()
            .position(|(known_topic, known_broker)| known_topic == topic && known_broker == broker_name);
        let index = found.unwrap_or_else(|| {
            self.names.push((topic.to_owned(), broker_name.to_owned()));
            self.names.len() - 1
        });
        index as u32
    }
}

/// Collects one push consumer's trace events.
pub(crate) struct ConsumeTracer {
    group: String,
    client_id: String,
    /// The consumer's data center.
    idc: String,
    pending: Mutex<Rows>,
    dropped: AtomicU64,
    /// Woken when a full report is waiting, so a fast consumer reports before its buffer fills.
    pub(crate) full_report: Notify,
}

/// What [`ConsumeTracer::before`] hands to [`ConsumeTracer::after`].
pub(crate) struct Started {
    at_ms: i64,
    at: Instant,
}

impl ConsumeTracer {
    pub(crate) fn new(group: &str, client_id: &str, idc: &str) -> ConsumeTracer {
        ConsumeTracer {
            group: group.to_owned(),
            client_id: client_id.to_owned(),
            idc: idc.to_owned(),
            pending: Mutex::new(Rows::default()),
            dropped: AtomicU64::new(0),
            full_report: Notify::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        kind: TraceType,
        broker_name: &str,
        message: &StoredMessage,
        timestamp: i64,
        (consume_start, consume_end, cost_us): (i64, i64, u64),
        status: TraceStatus,
        attempt: u32,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if pending.rows.len() >= BUFFER_EVENTS {
            drop(pending);
            if self.dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(10_000) {
                tracing::warn!(
                    buffer = BUFFER_EVENTS,
                    "consume trace events dropped: the report buffer is full (PushConsumer::trace_events_dropped counts them)"
                );
            }
            return;
        }
        let names = pending.names_of(&message.topic, broker_name);
        pending.rows.push(Row {
            kind,
            status,
            names,
            timestamp,
            consume_start,
            consume_end,
            cost_us,
            // Attempts after the first are local retries of the same delivery.
            reconsume_count: message.reconsume_count + attempt.saturating_sub(1),
            queue_id: message.queue_id,
            queue_offset: message.queue_offset,
            commitlog_offset: message.commitlog_offset,
            born_timestamp: message.born_timestamp,
            store_timestamp: message.store_timestamp,
            body_size: message.body.len() as u32,
            properties: message.properties.clone(),
        });
        if pending.rows.len() == MAX_REPORT_EVENTS {
            self.full_report.notify_one();
        }
    }

    /// A handler is about to run on `message` (attempt `attempt`, from 1), delivered by `broker_name`.
    pub(crate) fn before(&self, broker_name: &str, message: &StoredMessage, attempt: u32) -> Started {
        let started = Started {
            at_ms: now_millis(),
            at: Instant::now(),
        };
        self.push(
            TraceType::SubBefore,
            broker_name,
            message,
            started.at_ms,
            (started.at_ms, 0, 0),
            TraceStatus::Ok,
            attempt,
        );
        started
    }

    /// The handler finished with `status`.
    pub(crate) fn after(
        &self,
        broker_name: &str,
        message: &StoredMessage,
        started: Started,
        status: TraceStatus,
        attempt: u32,
    ) {
        let end_ms = now_millis();
        self.push(
            TraceType::SubAfter,
            broker_name,
            message,
            end_ms.max(started.at_ms),
            (started.at_ms, end_ms, started.at.elapsed().as_micros() as u64),
            status,
            attempt,
        );
    }

    /// The event a row stands for.
    fn event(&self, event_id: MessageId, row: &Row, topic: &str, broker_name: &str) -> TraceEvent {
        let props = &row.properties[..];
        TraceEvent {
            event_id: event_id.to_string(),
            trace_type: row.kind as i32,
            timestamp: row.timestamp,
            msg_id: properties::get(props, properties::MSG_ID).unwrap_or("").to_owned(),
            topic: topic.to_owned(),
            queue_id: row.queue_id,
            queue_offset: row.queue_offset,
            commitlog_offset: row.commitlog_offset,
            keys: properties::get(props, properties::KEYS)
                .unwrap_or("")
                .split(properties::KEY_SEPARATOR)
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect(),
            tags: properties::get(props, properties::TAGS).unwrap_or("").to_owned(),
            group: self.group.clone(),
            client_id: self.client_id.clone(),
            idc: self.idc.clone(),
            broker_name: broker_name.to_owned(),
            born_timestamp: row.born_timestamp,
            store_timestamp: row.store_timestamp,
            consume_start_timestamp: row.consume_start,
            consume_end_timestamp: row.consume_end,
            cost_us: row.cost_us,
            status: row.status as i32,
            error: if row.status == TraceStatus::Failed {
                "the message handler panicked".into()
            } else {
                String::new()
            },
            body_size: row.body_size,
            reconsume_count: row.reconsume_count,
            sdk_version: meridian_proto::SDK_VERSION.to_owned(),
            ..TraceEvent::default()
        }
    }

    /// Takes what is waiting and builds its events, per broker group, in reports of at most
    /// [`MAX_REPORT_EVENTS`]. Called by the reporter, off the handler's path.
    pub(crate) fn take(&self) -> Vec<(String, Vec<TraceEvent>)> {
        let taken = {
            let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::take(&mut *pending)
        };
        let mut per_broker: BTreeMap<&str, Vec<TraceEvent>> = BTreeMap::new();
        // One clock read and one counter step for all the event ids.
        let first_id = MessageId::generate_many(taken.rows.len() as u32);
        for (index, row) in taken.rows.iter().enumerate() {
            let (topic, broker_name) = &taken.names[row.names as usize];
            per_broker.entry(broker_name).or_default().push(self.event(
                first_id.nth(index as u32),
                row,
                topic,
                broker_name,
            ));
        }
        let mut reports = Vec::new();
        for (broker_name, events) in per_broker {
            let mut events = events.into_iter().peekable();
            while events.peek().is_some() {
                reports.push((
                    broker_name.to_owned(),
                    events.by_ref().take(MAX_REPORT_EVENTS).collect(),
                ));
            }
        }
        reports
    }

    /// Events dropped because the buffer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use meridian_proto::trace::check_event;

    fn message() -> StoredMessage {
        let mut props = meridian_proto::properties::PropertiesBuilder::new();
        props.msg_id(&MessageId::generate().to_string());
        props.keys(&["order-1"]).unwrap();
        StoredMessage {
            topic: "orders".into(),
            queue_id: 1,
            queue_offset: 7,
            commitlog_offset: 900,
            born_timestamp: 1,
            store_timestamp: 2,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_host: "127.0.0.1:2".parse().unwrap(),
            reconsume_count: 0,
            flags: 0,
            properties: Bytes::from(props.finish()),
            body: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn before_and_after_make_valid_events_with_cost_and_result() {
        let tracer = ConsumeTracer::new("billing", "host@1@2", "dc1");
        let message = message();
        let started = tracer.before("broker-a", &message, 1);
        tracer.after("broker-a", &message, started, TraceStatus::RetryLater, 1);
        let started = tracer.before("broker-a", &message, 2);
        tracer.after("broker-a", &message, started, TraceStatus::Ok, 2);
        let reports = tracer.take();
        assert_eq!(reports.len(), 1);
        let (broker, events) = &reports[0];
        assert_eq!(broker, "broker-a");
        let kinds: Vec<_> = events
            .iter()
            .map(|event| (event.kind(), event.outcome(), event.reconsume_count))
            .collect();
        assert_eq!(
            kinds,
            [
                (TraceType::SubBefore, TraceStatus::Ok, 0),
                (TraceType::SubAfter, TraceStatus::RetryLater, 0),
                (TraceType::SubBefore, TraceStatus::Ok, 1),
                (TraceType::SubAfter, TraceStatus::Ok, 1)
            ]
        );
        for event in events {
            check_event(event).unwrap();
            assert_eq!(
                (event.group.as_str(), event.keys.as_slice()),
                ("billing", &["order-1".to_owned()][..])
            );
        }
        assert!(events[1].consume_end_timestamp >= events[1].consume_start_timestamp);
        assert!(tracer.take().is_empty());
        assert_eq!(tracer.dropped(), 0);
    }

    #[test]
    fn a_full_buffer_drops_and_counts_and_reports_keep_each_broker_and_topic() {
        let tracer = ConsumeTracer::new("billing", "host@1@2", "dc1");
        let mut other = message();
        other.topic = "refunds".into();
        for index in 0..BUFFER_EVENTS + 10 {
            let (broker, message) = if index % 2 == 0 {
                ("broker-a", &message())
            } else {
                ("broker-b", &other)
            };
            tracer.before(broker, message, 1);
        }
        assert_eq!(tracer.dropped(), 10);
        let reports = tracer.take();
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (broker, events) in &reports {
            assert!(events.len() <= MAX_REPORT_EVENTS);
            for event in events {
                assert_eq!(&event.broker_name, broker);
                *seen.entry((broker.clone(), event.topic.clone())).or_default() += 1;
            }
        }
        let half = BUFFER_EVENTS / 2;
        assert_eq!(
            seen,
            BTreeMap::from([
                (("broker-a".to_owned(), "orders".to_owned()), half),
                (("broker-b".to_owned(), "refunds".to_owned()), half)
            ])
        );
        assert!(tracer.take().is_empty());
    }

    #[tokio::test]
    async fn a_full_report_wakes_the_reporter_before_its_interval() {
        use std::time::Duration;
        let tracer = ConsumeTracer::new("billing", "host@1@2", "dc1");
        let message = message();
        let consume = || {
            let started = tracer.before("broker-a", &message, 1);
            tracer.after("broker-a", &message, started, TraceStatus::Ok, 1);
        };
        for _ in 0..MAX_REPORT_EVENTS / 2 - 1 {
            consume();
        }
        let early = tokio::time::timeout(Duration::from_millis(20), tracer.full_report.notified()).await;
        assert!(early.is_err(), "not woken before a full report waits");
        consume();
        tokio::time::timeout(Duration::from_secs(1), tracer.full_report.notified())
            .await
            .expect("woken by the full report");
        assert_eq!(tracer.take()[0].1.len(), MAX_REPORT_EVENTS);
    }
}

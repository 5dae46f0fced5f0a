//! The consume-side trace hook: what only a consumer knows about a message (when its handler
//! started and ended, what it returned) as `SubBefore` and `SubAfter` trace events.
//!
//! Events wait in a bounded buffer (full: dropped and counted, never blocking the handler) and a
//! background task of the [`crate::PushConsumer`] sends them every 200 ms, or as soon as a full
//! report is waiting, as a [`meridian_proto::RequestCode::TraceReport`] to the broker group that delivered the messages,
//! which stamps the client's address and writes them to the trace topic. Reports are not retried:
//! a lost report loses consume-side events, never messages.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

use meridian_proto::MessageId;
use meridian_proto::record::StoredMessage;
use meridian_proto::time::now_millis;
use meridian_proto::trace::{MAX_REPORT_EVENTS, TraceEvent, TraceStatus, TraceType};

/// Most events waiting to be reported; more are dropped.
const BUFFER_EVENTS: usize = 64 * 1024;

/// Collects one push consumer's trace events, per broker group.
pub(crate) struct ConsumeTracer {
    group: String,
    client_id: String,
    /// The consumer's data center.
    idc: String,
    pending: Mutex<(BTreeMap<String, Vec<TraceEvent>>, usize)>,
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
            pending: Mutex::new((BTreeMap::new(), 0)),
            dropped: AtomicU64::new(0),
            full_report: Notify::new(),
        }
    }

    fn event(&self, kind: TraceType, broker_name: &str, message: &StoredMessage, at_ms: i64) -> TraceEvent {
        TraceEvent {
            event_id: MessageId::generate().to_string(),
            trace_type: kind as i32,
            timestamp: at_ms,
            msg_id: message.msg_id().to_owned(),
            topic: message.topic.clone(),
            queue_id: message.queue_id,
            queue_offset: message.queue_offset,
            commitlog_offset: message.commitlog_offset,
            keys: message.keys().map(str::to_owned).collect(),
            tags: message.tag().unwrap_or("").to_owned(),
            group: self.group.clone(),
            client_id: self.client_id.clone(),
            idc: self.idc.clone(),
            broker_name: broker_name.to_owned(),
            born_timestamp: message.born_timestamp,
            store_timestamp: message.store_timestamp,
            consume_start_timestamp: at_ms,
            body_size: message.body.len() as u32,
            reconsume_count: message.reconsume_count,
            sdk_version: meridian_proto::SDK_VERSION.to_owned(),
            ..TraceEvent::default()
        }
    }

    fn push(&self, broker_name: &str, event: TraceEvent) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if pending.1 >= BUFFER_EVENTS {
            drop(pending);
            if self.dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(10_000) {
                tracing::warn!(
                    buffer = BUFFER_EVENTS,
                    "consume trace events dropped: the report buffer is full"
                );
            }
            return;
        }
        pending.1 += 1;
        pending.0.entry(broker_name.to_owned()).or_default().push(event);
        if pending.1 == MAX_REPORT_EVENTS {
            self.full_report.notify_one();
        }
    }

    /// A handler is about to run on `message` (attempt `attempt`, from 1), delivered by `broker_name`.
    pub(crate) fn before(&self, broker_name: &str, message: &StoredMessage, attempt: u32) -> Started {
        let started = Started {
            at_ms: now_millis(),
            at: Instant::now(),
        };
        let mut event = self.event(TraceType::SubBefore, broker_name, message, started.at_ms);
        // Attempts after the first are local retries of the same delivery.
        event.reconsume_count = message.reconsume_count + attempt.saturating_sub(1);
        self.push(broker_name, event);
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
        let mut event = self.event(TraceType::SubAfter, broker_name, message, end_ms.max(started.at_ms));
        event.consume_start_timestamp = started.at_ms;
        event.consume_end_timestamp = end_ms;
        event.cost_us = started.at.elapsed().as_micros() as u64;
        event.status = status as i32;
        event.reconsume_count = message.reconsume_count + attempt.saturating_sub(1);
        if status == TraceStatus::Failed {
            event.error = "the message handler panicked".into();
        }
        self.push(broker_name, event);
    }

    /// Takes what is waiting, per broker group, in reports of at most [`MAX_REPORT_EVENTS`].
    pub(crate) fn take(&self) -> Vec<(String, Vec<TraceEvent>)> {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.1 = 0;
        let taken = std::mem::take(&mut pending.0);
        drop(pending);
        let mut reports = Vec::new();
        for (broker_name, events) in taken {
            let mut events = events.into_iter().peekable();
            while events.peek().is_some() {
                reports.push((broker_name.clone(), events.by_ref().take(MAX_REPORT_EVENTS).collect()));
            }
        }
        reports
    }

    /// Events dropped because the buffer was full.
    #[cfg(test)]
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

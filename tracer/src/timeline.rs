//! A message's timeline: its events in order, where each happened, the time since the step before,
//! and the latency of each hop of its life (born → stored → replicated → delivered → consumed).
//!
//! The `ArchiveWrite` step is not an indexed event: the archive archives whole commitlog segments,
//! and its manifest says when each was committed and which file holds each queue's offsets. Given
//! an [`ArchiveSteps`] (the process running the tracer reads the manifests), a timeline adds the
//! step for every stored copy of the message whose segment is archived.

use meridian_proto::trace::{ServerStats, TraceEvent, TraceType};
use serde::{Deserialize, Serialize};

/// When and where the archive put one stored copy of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// When the segment's manifest entry was committed (Unix ms).
    pub archived_at: i64,
    /// The file holding the message (the store's URL and the path in it).
    pub file: String,
}

/// Finds the archive step of a stored copy of a message from the archive's manifests. The tracer
/// does not read the archive itself; the process that runs it passes one in.
pub trait ArchiveSteps: Send + Sync {
    /// The copy broker group `broker` stored at `commitlog_offset` (in `topic`, queue
    /// `queue_id`, offset `queue_offset`), if its segment is archived.
    fn archived(
        &self,
        broker: &str,
        commitlog_offset: u64,
        topic: &str,
        queue_id: u32,
        queue_offset: u64,
    ) -> Option<Archived>;
}

/// One step of a timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// `Pub`, `Store`, `Replicate`, `Deliver`, `SubBefore`, `SubAfter`, `Retry`, `DeadLetter`,
    /// `DelaySchedule`, `DelayFire`, `TxCommit`, `TxRollback`, `ArchiveWrite`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When (Unix ms).
    pub timestamp: i64,
    /// When, for people (UTC).
    pub time: String,
    /// Milliseconds since the step before (absent for the first).
    pub since_previous_ms: Option<i64>,
    /// Where it happened: the broker member and address, the client id and address, or
    /// `archive (FILE)` for `ArchiveWrite`.
    pub host: String,
    /// Broker group.
    pub broker: String,
    /// Data center.
    pub idc: String,
    /// Producer or consumer group.
    pub group: String,
    /// Client instance (consumers).
    pub client_id: String,
    /// Client address as the broker saw it.
    pub client_host: String,
    /// `ok`, `failed` or `retry_later`.
    pub status: String,
    /// What went wrong, if anything.
    pub error: String,
    /// Time the step took, in µs (handler time for SubAfter; store to ack for Replicate).
    pub cost_us: u64,
    /// Topic the message was in at this step (for Pub: the one the producer sent to; later
    /// steps may name a delay slot, retry, dead-letter or half topic).
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
    /// Position in the queue.
    pub queue_offset: u64,
    /// Times consumed again before this step.
    pub reconsume_count: u32,
    /// When a delayed message or retry is due (Unix ms; DelaySchedule, DelayFire, Retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_at: Option<i64>,
    /// The event's id.
    pub event_id: String,
    /// The broker's load at the time (broker steps).
    pub server_stats: Option<Stats>,
}

/// [`ServerStats`] for JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Messages stored per second.
    pub send_tps: f64,
    /// Messages pulled per second.
    pub pull_tps: f64,
    /// Load average per CPU.
    pub cpu_load: f64,
    /// Share of the data disk in use.
    pub disk_used_ratio: f64,
    /// Mean commitlog sync, µs.
    pub flush_latency_us: u64,
    /// Mean store-to-ack time, µs.
    pub replication_latency_us: u64,
}

impl From<&ServerStats> for Stats {
    fn from(stats: &ServerStats) -> Stats {
        Stats {
            send_tps: stats.send_tps,
            pull_tps: stats.pull_tps,
            cpu_load: stats.cpu_load,
            disk_used_ratio: stats.disk_used_ratio,
            flush_latency_us: stats.flush_latency_us,
            replication_latency_us: stats.replication_latency_us,
        }
    }
}

/// Latency of each hop, in ms; absent when a step has not happened (or was not traced).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hops {
    /// Producer's born time to the broker's store time.
    pub born_to_stored_ms: Option<i64>,
    /// Store to the ack policy being met.
    pub stored_to_replicated_ms: Option<i64>,
    /// Store to the first delivery.
    pub stored_to_delivered_ms: Option<i64>,
    /// First delivery to the end of the first successful handler run.
    pub delivered_to_consumed_ms: Option<i64>,
    /// Born to consumed.
    pub total_ms: Option<i64>,
}

/// A message's whole trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The message id.
    pub msg_id: String,
    /// Its broker-assigned offset id (`broker:OFFSET`), when its Store step was traced.
    pub offset_id: Option<String>,
    /// Topic.
    pub topic: String,
    /// Keys.
    pub keys: Vec<String>,
    /// Tag.
    pub tags: String,
    /// Body size in bytes.
    pub body_size: u32,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Latency of each hop.
    pub hops: Hops,
}

fn host(event: &TraceEvent) -> String {
    if event.kind().is_client_side() {
        if event.client_host.is_empty() {
            event.client_id.clone()
        } else {
            format!("{} ({})", event.client_id, event.client_host)
        }
    } else {
        format!("{} ({})", event.broker_member, event.broker_host)
    }
}

/// The events of a timeline with the Store step each Pub implies. A broker writes one Pub event
/// per stored message, carrying its store time and offsets, and a Store event of its own only
/// when the message first waits in a system topic (a delay slot, a half message); a Pub without a
/// Store of the same offset becomes both steps. Older indexes, written with both events, need
/// nothing added.
fn with_implied_stores(events: &[TraceEvent]) -> Vec<TraceEvent> {
    let stored: std::collections::HashSet<(&str, u64)> = events
        .iter()
        .filter(|event| event.kind() == TraceType::Store)
        .map(|event| (event.broker_name.as_str(), event.commitlog_offset))
        .collect();
    let implied: Vec<TraceEvent> = events
        .iter()
        .filter(|event| {
            event.kind() == TraceType::Pub
                && event.store_timestamp > 0
                && !stored.contains(&(event.broker_name.as_str(), event.commitlog_offset))
        })
        .map(|publish| TraceEvent {
            trace_type: TraceType::Store as i32,
            timestamp: publish.store_timestamp,
            cost_us: 0,
            ..publish.clone()
        })
        .collect();
    let mut all = events.to_vec();
    if !implied.is_empty() {
        all.extend(implied);
        crate::index::sort_timeline(&mut all);
    }
    all
}

/// The events without a second Pub, Store or DelaySchedule of the same stored copy (broker group and commitlog
/// offset). A broker that starts writing (after a crash, or promoted to master) derives the Pub
/// events of the messages at the end of its log again from the stored records, as it cannot know
/// whether their buffered events were written before the crash; the first one of a copy stands
/// for both. A message sent twice (a producer's retry) is two copies and keeps both.
fn without_repeats(events: &[TraceEvent]) -> Vec<TraceEvent> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter(|event| {
            !matches!(
                event.kind(),
                TraceType::Pub | TraceType::Store | TraceType::DelaySchedule
            ) || seen.insert((event.trace_type, event.broker_name.as_str(), event.commitlog_offset))
        })
        .cloned()
        .collect()
}

/// The events with an `ArchiveWrite` added for every Store whose segment `archive` knows to be
/// archived (shown as done by `archive`, at the archived file).
fn with_archive_steps(mut events: Vec<TraceEvent>, archive: Option<&dyn ArchiveSteps>) -> Vec<TraceEvent> {
    let Some(archive) = archive else {
        return events;
    };
    let archived: Vec<TraceEvent> = events
        .iter()
        .filter(|event| event.kind() == TraceType::Store && !event.broker_name.is_empty())
        .filter_map(|store| {
            let found = archive.archived(
                &store.broker_name,
                store.commitlog_offset,
                &store.topic,
                store.queue_id,
                store.queue_offset,
            )?;
            Some(TraceEvent {
                event_id: String::new(),
                trace_type: TraceType::ArchiveWrite as i32,
                timestamp: found.archived_at,
                broker_member: "archive".into(),
                broker_host: found.file,
                idc: String::new(),
                group: String::new(),
                client_host: String::new(),
                cost_us: 0,
                server_stats: None,
                deliver_at_timestamp: 0,
                ..store.clone()
            })
        })
        .collect();
    if !archived.is_empty() {
        events.extend(archived);
        crate::index::sort_timeline(&mut events);
    }
    events
}

/// Builds the timeline of one message from its events, already in order
/// ([`crate::index::sort_timeline`]), with its archive steps when `archive` is given. `None`
/// when there are none.
pub fn build(events: &[TraceEvent], archive: Option<&dyn ArchiveSteps>) -> Option<Timeline> {
    let events = &with_archive_steps(with_implied_stores(&without_repeats(events)), archive);
    let first = events.first()?;
    let with_keys = events.iter().find(|event| !event.keys.is_empty()).unwrap_or(first);
    let store = events.iter().find(|event| event.kind() == TraceType::Store);
    let find_time =
        |kind: TraceType, time: fn(&TraceEvent) -> i64| events.iter().find(|event| event.kind() == kind).map(time);
    let born = find_time(TraceType::Pub, |event| event.born_timestamp)
        .or_else(|| events.iter().map(|event| event.born_timestamp).find(|born| *born > 0));
    let stored = find_time(TraceType::Store, |event| event.store_timestamp);
    let replicated = find_time(TraceType::Replicate, |event| event.replicated_timestamp);
    let delivered = find_time(TraceType::Deliver, |event| event.delivered_timestamp);
    let consumed = events
        .iter()
        .find(|event| event.kind() == TraceType::SubAfter && event.outcome() == meridian_proto::trace::TraceStatus::Ok)
        .map(|event| event.consume_end_timestamp);
    let between = |from: Option<i64>, to: Option<i64>| Some(to? - from?);
    let mut previous: Option<i64> = None;
    let steps = events
        .iter()
        .map(|event| {
            let step = Step {
                kind: event.kind().name().to_owned(),
                timestamp: event.timestamp,
                time: meridian_proto::time::format_millis(event.timestamp),
                since_previous_ms: previous.map(|previous| event.timestamp - previous),
                host: host(event),
                broker: event.broker_name.clone(),
                idc: event.idc.clone(),
                group: event.group.clone(),
                client_id: event.client_id.clone(),
                client_host: event.client_host.clone(),
                status: event.outcome().name().to_owned(),
                error: event.error.clone(),
                cost_us: event.cost_us,
                topic: event.topic.clone(),
                queue_id: event.queue_id,
                queue_offset: event.queue_offset,
                reconsume_count: event.reconsume_count,
                deliver_at: (event.deliver_at_timestamp > 0).then_some(event.deliver_at_timestamp),
                event_id: event.event_id.clone(),
                server_stats: event.server_stats.as_ref().map(Stats::from),
            };
            previous = Some(event.timestamp);
            step
        })
        .collect();
    Some(Timeline {
        msg_id: first.msg_id.clone(),
        offset_id: store.and_then(TraceEvent::offset_id).map(|id| id.to_string()),
        topic: first.topic.clone(),
        keys: with_keys.keys.clone(),
        tags: with_keys.tags.clone(),
        body_size: store.unwrap_or(first).body_size,
        steps,
        hops: Hops {
            born_to_stored_ms: between(born, stored),
            stored_to_replicated_ms: between(stored, replicated),
            stored_to_delivered_ms: between(stored, delivered),
            delivered_to_consumed_ms: between(delivered, consumed),
            total_ms: between(born, consumed),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segments `[0, 1000)` of broker-a archived at 50.
    struct OneSegment;

    impl ArchiveSteps for OneSegment {
        fn archived(
            &self,
            broker: &str,
            offset: u64,
            topic: &str,
            queue_id: u32,
            queue_offset: u64,
        ) -> Option<Archived> {
            (broker == "broker-a" && offset < 1000).then(|| Archived {
                archived_at: 50,
                file: format!("file:///a/messages/topic={topic}/q{queue_id}-{queue_offset}.parquet"),
            })
        }
    }

    fn publish(broker: &str, commitlog_offset: u64) -> TraceEvent {
        TraceEvent {
            event_id: "01".into(),
            trace_type: TraceType::Pub as i32,
            timestamp: 10,
            msg_id: "M".into(),
            topic: "orders".into(),
            queue_id: 2,
            queue_offset: 7,
            commitlog_offset,
            broker_name: broker.into(),
            broker_member: "a-0".into(),
            broker_host: "127.0.0.1:7911".into(),
            born_timestamp: 9,
            store_timestamp: 11,
            ..TraceEvent::default()
        }
    }

    #[test]
    fn an_archived_copy_gets_an_archive_step_after_its_store() {
        let events = [publish("broker-a", 500)];
        let timeline = build(&events, Some(&OneSegment)).unwrap();
        let steps: Vec<(&str, i64, &str)> = timeline
            .steps
            .iter()
            .map(|step| (step.kind.as_str(), step.timestamp, step.host.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                ("Pub", 10, "a-0 (127.0.0.1:7911)"),
                ("Store", 11, "a-0 (127.0.0.1:7911)"),
                (
                    "ArchiveWrite",
                    50,
                    "archive (file:///a/messages/topic=orders/q2-7.parquet)"
                ),
            ]
        );
        assert_eq!(timeline.steps[2].queue_offset, 7);
        assert!(timeline.steps[2].server_stats.is_none());
        // Not archived (past the segment, another broker) or no archive given: no step.
        for (events, archive) in [
            ([publish("broker-a", 1000)], Some(&OneSegment as &dyn ArchiveSteps)),
            ([publish("broker-b", 500)], Some(&OneSegment as &dyn ArchiveSteps)),
            ([publish("broker-a", 500)], None),
        ] {
            let timeline = build(&events, archive).unwrap();
            assert!(timeline.steps.iter().all(|step| step.kind != "ArchiveWrite"));
        }
    }

    #[test]
    fn a_pub_derived_again_after_a_crash_shows_once_and_a_second_copy_shows_twice() {
        let original = publish("broker-a", 500);
        let recovered = TraceEvent {
            event_id: "02".into(),
            broker_member: "a-1".into(),
            ..original.clone()
        };
        let store = TraceEvent {
            event_id: "03".into(),
            trace_type: TraceType::Store as i32,
            timestamp: 11,
            ..original.clone()
        };
        let timeline = build(&[original.clone(), recovered.clone(), store.clone()], None).unwrap();
        let steps: Vec<(&str, &str)> = timeline
            .steps
            .iter()
            .map(|step| (step.kind.as_str(), step.event_id.as_str()))
            .collect();
        assert_eq!(steps, [("Pub", "01"), ("Store", "03")]);
        // Only the recovered one: still both steps.
        let timeline = build(&[recovered], None).unwrap();
        let kinds: Vec<&str> = timeline.steps.iter().map(|step| step.kind.as_str()).collect();
        assert_eq!(kinds, ["Pub", "Store"]);
        // A producer's retry stored the message twice: two copies, four steps.
        let again = TraceEvent {
            event_id: "04".into(),
            ..publish("broker-a", 900)
        };
        let timeline = build(&[original, again], None).unwrap();
        assert_eq!(timeline.steps.len(), 4);
    }
}

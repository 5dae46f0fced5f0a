//! A message's timeline: its events in order, where each happened, the time since the step before,
//! and the latency of each hop of its life (born → stored → replicated → delivered → consumed).

use meridian_proto::trace::{ServerStats, TraceEvent, TraceType};
use serde::{Deserialize, Serialize};

/// One step of a timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// `Pub`, `Store`, `Replicate`, `Deliver`, `SubBefore`, `SubAfter`, `Retry`, `DeadLetter`,
    /// `DelaySchedule`, `DelayFire`, `TxCommit`, `TxRollback`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When (Unix ms).
    pub timestamp: i64,
    /// When, for people (UTC).
    pub time: String,
    /// Milliseconds since the step before (absent for the first).
    pub since_previous_ms: Option<i64>,
    /// Where it happened: the broker member and address, or the client id and address.
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

/// Builds the timeline of one message from its events, already in order
/// ([`crate::index::sort_timeline`]). `None` when there are none.
pub fn build(events: &[TraceEvent]) -> Option<Timeline> {
    let events = &with_implied_stores(events);
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

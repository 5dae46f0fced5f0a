//! Prometheus metrics of the broker. Registered into the registry the binary serves at `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Request kind (send, pull, ...).
    pub request: &'static str,
}

/// Labels of metrics counted by outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What happened.
    pub outcome: &'static str,
}

/// Labels of error metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error code name.
    pub code: &'static str,
}

/// Labels of outcome metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

impl ResultLabels {
    /// The label of a success.
    pub const OK: ResultLabels = ResultLabels { result: "ok" };
    /// The label of a failure.
    pub const ERROR: ResultLabels = ResultLabels { result: "error" };
}

/// Labels of per-topic, per-producer-group metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProducerLabels {
    /// Topic.
    pub topic: String,
    /// Producer group as the send named it (empty: none).
    pub producer_group: String,
}

/// Every metric the broker exports.
#[derive(Debug)]
pub struct BrokerMetrics {
    /// Messages appended.
    pub messages_stored: Counter,
    /// Record bytes appended.
    pub bytes_stored: Counter,
    /// Messages returned by pulls.
    pub messages_pulled: Counter,
    /// Requests handled, by kind.
    pub requests: Family<RequestLabels, Counter>,
    /// Error responses, by code.
    pub errors: Family<ErrorLabels, Counter>,
    /// Frames that could not be decoded (their connections were closed).
    pub malformed_frames: Counter,
    /// RocketMQ requests refused for their AccessKey signature (missing, wrong, unknown user).
    pub remoting_signature_refusals: Counter,
    /// One-way requests that failed, by code: their senders got no answer.
    pub oneway_failures: Family<ErrorLabels, Counter>,
    /// Open client connections.
    pub connections: Gauge,
    /// Commitlog offset synced to disk.
    pub flushed_offset: Gauge,
    /// Commitlog offset dispatched to consume queues.
    pub dispatched_offset: Gauge,
    /// 1 once the store stopped after a disk failure (a restart is needed), else 0.
    pub store_failed: Gauge,
    /// Duration of each commitlog sync.
    pub flush_seconds: Histogram,
    /// Time from receiving a send to answering it.
    pub send_seconds: Histogram,
    /// Heartbeats sent to nameservers, by result (one per nameserver per interval).
    pub nameserver_heartbeats: Family<ResultLabels, Counter>,
    /// Full registrations sent to nameservers (asked for when a nameserver lacks the current one).
    pub nameserver_registrations: Counter,
    /// Messages refused because a failover drill evacuated this broker's data center.
    pub evacuated_refusals: Counter,
    /// Consumers removed from their groups because their connection closed (a crash, a kill).
    pub consumers_disconnected: Counter,
    /// Delayed messages released from a delay slot (moved to a smaller slot or delivered).
    pub delayed_released: Counter,
    /// Messages consumers sent back after failing them, by outcome (`retry`, `dead_letter`).
    pub sent_back: Family<OutcomeLabels, Counter>,
    /// Transactions ended, by outcome (`commit`, `rollback`, `expired`: rolled back after every
    /// check-back) and check-backs asked (`check`).
    pub transactions: Family<OutcomeLabels, Counter>,
    /// Bytes of heartbeat and registration request bodies sent to nameservers, to compute what
    /// heartbeating costs per second.
    pub nameserver_heartbeat_bytes: Counter,
    /// Fetches of the approved topics and groups from nameservers.
    pub nameserver_metadata_fetches: Counter,
    /// Commitlog bytes sent to slaves.
    pub replicated_bytes: Counter,
    /// Sends that did not reach their ack policy in time.
    pub replication_timeouts: Counter,
    /// Failed fetches from the master (on a slave).
    pub replication_fetch_errors: Counter,
    /// Divergent log tails truncated on the master's word (on a slave).
    pub replication_truncations: Counter,
    /// Bytes the master held beyond this slave at its last fetch.
    pub replication_lag_bytes: Gauge,
    /// The group epoch this broker's role belongs to.
    pub role_epoch: Gauge,
    /// 1 while this master acknowledges in degraded mode (replicas in a lost data center left out).
    pub ack_degraded: Gauge,
    /// Slaves the master holds in sync.
    pub in_sync_slaves: Gauge,
    /// Sends refused over their topic's produce limit, by topic and producer group.
    pub throttled_sends: Family<ProducerLabels, Counter>,
    /// Messages in those sends.
    pub throttled_messages: Family<ProducerLabels, Counter>,
    /// Trace emission ([`crate::trace`]).
    pub trace: std::sync::Arc<TraceMetrics>,
}

impl Default for BrokerMetrics {
    fn default() -> BrokerMetrics {
        BrokerMetrics {
            messages_stored: Counter::default(),
            bytes_stored: Counter::default(),
            messages_pulled: Counter::default(),
            requests: Family::default(),
            errors: Family::default(),
            malformed_frames: Counter::default(),
            remoting_signature_refusals: Counter::default(),
            oneway_failures: Family::default(),
            connections: Gauge::default(),
            flushed_offset: Gauge::default(),
            dispatched_offset: Gauge::default(),
            store_failed: Gauge::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            send_seconds: Histogram::new(exponential_buckets(0.000_02, 2.0, 18)),
            nameserver_heartbeats: Family::default(),
            nameserver_registrations: Counter::default(),
            evacuated_refusals: Counter::default(),
            consumers_disconnected: Counter::default(),
            delayed_released: Counter::default(),
            sent_back: Family::default(),
            transactions: Family::default(),
            nameserver_heartbeat_bytes: Counter::default(),
            nameserver_metadata_fetches: Counter::default(),
            replicated_bytes: Counter::default(),
            replication_timeouts: Counter::default(),
            replication_fetch_errors: Counter::default(),
            replication_truncations: Counter::default(),
            replication_lag_bytes: Gauge::default(),
            role_epoch: Gauge::default(),
            ack_degraded: Gauge::default(),
            in_sync_slaves: Gauge::default(),
            throttled_sends: Family::default(),
            throttled_messages: Family::default(),
            trace: std::sync::Arc::default(),
        }
    }
}

impl BrokerMetrics {
    /// Creates the metrics and registers them under `meridian_broker_`.
    pub fn register(registry: &mut Registry) -> BrokerMetrics {
        let metrics = BrokerMetrics {
            trace: std::sync::Arc::new(TraceMetrics::register(registry)),
            ..BrokerMetrics::default()
        };
        let registry = registry.sub_registry_with_prefix("meridian_broker");
        registry.register(
            "messages_stored",
            "Messages appended to the commitlog",
            metrics.messages_stored.clone(),
        );
        registry.register(
            "bytes_stored",
            "Record bytes appended to the commitlog",
            metrics.bytes_stored.clone(),
        );
        registry.register(
            "messages_pulled",
            "Messages returned to consumers",
            metrics.messages_pulled.clone(),
        );
        registry.register("requests", "Requests handled, by kind", metrics.requests.clone());
        registry.register("errors", "Error responses, by code", metrics.errors.clone());
        registry.register(
            "malformed_frames",
            "Undecodable frames; their connections were closed",
            metrics.malformed_frames.clone(),
        );
        registry.register(
            "remoting_signature_refusals",
            "RocketMQ requests refused for a missing or wrong AccessKey signature or an unknown user",
            metrics.remoting_signature_refusals.clone(),
        );
        registry.register("connections", "Open client connections", metrics.connections.clone());
        registry.register(
            "flushed_offset",
            "Commitlog offset synced to disk",
            metrics.flushed_offset.clone(),
        );
        registry.register(
            "dispatched_offset",
            "Commitlog offset in consume queues",
            metrics.dispatched_offset.clone(),
        );
        registry.register(
            "store_failed",
            "1 once the store stopped after a disk failure; restart the broker",
            metrics.store_failed.clone(),
        );
        registry.register(
            "flush_seconds",
            "Duration of commitlog syncs",
            metrics.flush_seconds.clone(),
        );
        registry.register(
            "send_seconds",
            "Time from receiving a send to answering it",
            metrics.send_seconds.clone(),
        );
        registry.register(
            "nameserver_heartbeats",
            "Heartbeats sent to nameservers, by result",
            metrics.nameserver_heartbeats.clone(),
        );
        registry.register(
            "nameserver_registrations",
            "Full registrations sent to nameservers",
            metrics.nameserver_registrations.clone(),
        );
        registry.register(
            "oneway_failures",
            "One-way requests that failed, by error code; their senders got no answer",
            metrics.oneway_failures.clone(),
        );
        registry.register(
            "evacuated_refusals",
            "Messages refused because a failover drill evacuated this broker's data center",
            metrics.evacuated_refusals.clone(),
        );
        registry.register(
            "consumers_disconnected",
            "Consumers removed from their groups because their connection closed",
            metrics.consumers_disconnected.clone(),
        );
        registry.register(
            "delayed_released",
            "Delayed messages released from a delay slot (moved to a smaller slot or delivered)",
            metrics.delayed_released.clone(),
        );
        registry.register(
            "sent_back",
            "Messages consumers failed, by where they went (retry or dead_letter)",
            metrics.sent_back.clone(),
        );
        registry.register(
            "transactions",
            "Transactions ended by outcome (commit, rollback, expired) and check-backs asked (check)",
            metrics.transactions.clone(),
        );
        registry.register(
            "nameserver_heartbeat_bytes",
            "Bytes of heartbeat and registration request bodies sent to nameservers",
            metrics.nameserver_heartbeat_bytes.clone(),
        );
        registry.register(
            "nameserver_metadata_fetches",
            "Fetches of the approved topics and consumer groups from nameservers",
            metrics.nameserver_metadata_fetches.clone(),
        );
        registry.register(
            "replicated_bytes",
            "Commitlog bytes sent to slaves",
            metrics.replicated_bytes.clone(),
        );
        registry.register(
            "replication_timeouts",
            "Sends that did not reach their ack policy in time",
            metrics.replication_timeouts.clone(),
        );
        registry.register(
            "replication_fetch_errors",
            "Failed fetches from the master (on a slave)",
            metrics.replication_fetch_errors.clone(),
        );
        registry.register(
            "replication_truncations",
            "Divergent log tails truncated on the master's word (on a slave)",
            metrics.replication_truncations.clone(),
        );
        registry.register(
            "replication_lag_bytes",
            "Bytes the master held beyond this slave at its last fetch",
            metrics.replication_lag_bytes.clone(),
        );
        registry.register(
            "role_epoch",
            "The group epoch this broker's role belongs to",
            metrics.role_epoch.clone(),
        );
        registry.register(
            "ack_degraded",
            "1 while this master acknowledges in degraded mode: replicas in a data center the nameservers declared lost are left out of its ack policy (replication.on_idc_lost)",
            metrics.ack_degraded.clone(),
        );
        registry.register(
            "in_sync_slaves",
            "Slaves the master holds in sync",
            metrics.in_sync_slaves.clone(),
        );
        registry.register(
            "throttled_sends",
            "Sends refused over their topic's produce limit, by topic and producer group",
            metrics.throttled_sends.clone(),
        );
        registry.register(
            "throttled_messages",
            "Messages in sends refused over their topic's produce limit, by topic and producer group",
            metrics.throttled_messages.clone(),
        );
        metrics
    }
}

/// Labels of dropped-event counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `buffer_full`, `not_master` or `write_failed`.
    pub reason: &'static str,
}

/// Metrics of trace emission, registered under `meridian_broker_trace_`.
#[derive(Debug, Default)]
pub struct TraceMetrics {
    /// Events written to the trace topic.
    pub events_written: Counter,
    /// Trace-topic messages appended.
    pub batches_written: Counter,
    /// Events dropped, by reason.
    pub events_dropped: Family<DropLabels, Counter>,
    /// Events that were waiting in the buffers when the flusher last took them.
    pub buffered: Gauge,
    /// Client reports refused as malformed.
    pub reports_refused: Counter,
    /// Pub events derived again from stored records when the broker began writing
    /// (`trace/recover.rs`).
    pub events_recovered: Counter,
    /// Sum of commitlog sync durations in µs, and their count, for [`meridian_proto::trace::ServerStats`] (the
    /// Prometheus histogram does not expose its sum).
    pub(crate) flushes: (AtomicU64, AtomicU64),
}

impl TraceMetrics {
    /// Notes one commitlog sync (called by the flusher).
    pub fn note_flush(&self, took: Duration) {
        self.flushes.0.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.flushes.1.fetch_add(1, Ordering::Relaxed);
    }

    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> TraceMetrics {
        let metrics = TraceMetrics::default();
        let registry = registry.sub_registry_with_prefix("meridian_broker_trace");
        registry.register(
            "events_written",
            "Trace events written to the trace topic",
            metrics.events_written.clone(),
        );
        registry.register(
            "batches_written",
            "Trace-topic messages appended",
            metrics.batches_written.clone(),
        );
        registry.register(
            "events_dropped",
            "Trace events dropped, by reason",
            metrics.events_dropped.clone(),
        );
        registry.register(
            "buffered",
            "Trace events that were waiting to be written when the flusher last took them",
            metrics.buffered.clone(),
        );
        registry.register(
            "reports_refused",
            "Client trace reports refused as malformed",
            metrics.reports_refused.clone(),
        );
        registry.register(
            "events_recovered",
            "Pub events derived from stored records whose buffered events were lost (a crash or a failover)",
            metrics.events_recovered.clone(),
        );
        metrics
    }
}

//! Prometheus metrics of a nameserver, registered into the registry its HTTP listener serves at
//! `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of per-request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Request kind.
    pub request: &'static str,
}

/// Labels of error metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error code name.
    pub code: &'static str,
}

/// Labels of election metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ElectionLabels {
    /// Why: `failover` (the master went silent), `bootstrap` (the group's first master) or
    /// `switchover` (an operator fenced the master).
    pub reason: &'static str,
}

/// Labels of per-data-center metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdcLabels {
    /// The data center.
    pub idc: String,
}

/// Every metric a nameserver exports.
#[derive(Debug, Default)]
pub struct NameserverMetrics {
    /// Framed requests handled, by kind.
    pub requests: Family<RequestLabels, Counter>,
    /// Error answers, by code.
    pub errors: Family<ErrorLabels, Counter>,
    /// Frames that could not be decoded (their connections were closed).
    pub malformed_frames: Counter,
    /// Open connections.
    pub connections: Gauge,
    /// Route lookups answered.
    pub route_lookups: Counter,
    /// Broker heartbeats received.
    pub heartbeats: Counter,
    /// Broker registrations received.
    pub registrations: Counter,
    /// Request bytes received from brokers (heartbeats and registrations).
    pub broker_bytes: Counter,
    /// Writes forwarded to the leader.
    pub forwarded_writes: Counter,
    /// Masters elected by this node's failover controller, by reason.
    pub elections: Family<ElectionLabels, Counter>,
    /// Broker groups with no master this node heard within the broker timeout (no master
    /// elected, or a silent one); every node computes it from its own liveness view.
    pub groups_without_live_master: Gauge,
    /// 1 while the nameservers hold the data center lost, else 0 (from this node's applied state).
    pub idc_lost: Family<IdcLabels, Gauge>,
}

impl NameserverMetrics {
    /// Metrics registered in `registry` under `meridian_nameserver_`.
    pub fn register(registry: &mut Registry) -> NameserverMetrics {
        let metrics = NameserverMetrics::default();
        let registry = registry.sub_registry_with_prefix("meridian_nameserver");
        registry.register("requests", "Framed requests handled, by kind", metrics.requests.clone());
        registry.register("errors", "Error answers, by code", metrics.errors.clone());
        registry.register(
            "malformed_frames",
            "Frames that could not be decoded",
            metrics.malformed_frames.clone(),
        );
        registry.register("connections", "Open connections", metrics.connections.clone());
        registry.register("route_lookups", "Route lookups answered", metrics.route_lookups.clone());
        registry.register("heartbeats", "Broker heartbeats received", metrics.heartbeats.clone());
        registry.register(
            "registrations",
            "Broker registrations received",
            metrics.registrations.clone(),
        );
        registry.register(
            "broker_bytes",
            "Request bytes received from brokers (heartbeats and registrations)",
            metrics.broker_bytes.clone(),
        );
        registry.register(
            "forwarded_writes",
            "Writes forwarded to the Raft leader",
            metrics.forwarded_writes.clone(),
        );
        registry.register(
            "elections",
            "Masters elected by this node's failover controller, by reason (failover, bootstrap, switchover)",
            metrics.elections.clone(),
        );
        registry.register(
            "groups_without_live_master",
            "Broker groups with no master heard within the broker timeout, as this node sees them",
            metrics.groups_without_live_master.clone(),
        );
        registry.register(
            "idc_lost",
            "1 while the nameservers hold the data center lost (none of its brokers heard for continuity.idc_lost_after_ms)",
            metrics.idc_lost.clone(),
        );
        metrics
    }
}

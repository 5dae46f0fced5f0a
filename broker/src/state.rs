//! [`BrokerState`]: what every request handler and background task of a broker shares (the store,
//! replication, governance, consumer groups, trace emission, metrics). Built in
//! [`crate::server`]; the checks a request must pass are in [`crate::permission`].

use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;

use meridian_proto::validate::Limits;
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::groups::ConsumerGroups;
use crate::locks::QueueLocks;
use crate::metrics::BrokerMetrics;
use crate::registry::Governance;
use crate::replication::Replication;
use crate::store::MessageStore;

/// What every handler shares.
pub struct BrokerState {
    /// The storage engine.
    pub store: Arc<MessageStore>,
    /// Consumer group members.
    pub groups: ConsumerGroups,
    /// Metrics.
    pub metrics: Arc<BrokerMetrics>,
    /// The broker's config.
    pub config: BrokerConfig,
    /// Size limits in force.
    pub limits: Limits,
    /// Address clients should use for this broker.
    pub advertise_addr: String,
    /// Cancelled when the broker shuts down, so long polls end at once.
    pub shutdown: CancellationToken,
    /// What the nameservers approved, on a governed broker (`nameservers` set); `None` on a
    /// standalone broker, which serves every topic and group.
    pub governance: Option<Arc<Governance>>,
    /// This broker's role in its group, its lease, and its slaves' acknowledgements.
    pub replication: Arc<Replication>,
    /// Trace emission: the hot paths push into its bounded buffer ([`crate::trace`]).
    pub trace: Arc<crate::trace::TraceEmitter>,
    /// Queue locks of orderly consumers.
    pub locks: QueueLocks,
    /// Throttles the warning for failed one-way requests (no answer carries their error).
    pub oneway_failure_log: meridian_proto::throttle::Throttle,
    /// The last commits of each group's queues, for the lag status ([`crate::lag`]).
    pub lag: crate::lag::LagTracker,
    /// Producers' latency and message-size reports ([`crate::producers`]).
    pub producers: crate::producers::ProducerReports,
    /// TLS of the broker's listeners (`[tls]`), `None` when off; its certificate reloads itself.
    pub tls: Option<Arc<meridian_proto::tls::TlsServer>>,
    /// The `[connections]` limits and the connections they count.
    pub connection_limits: Arc<meridian_proto::serve::ConnectionLimiter>,
    /// Recent put/get rates, per-topic put rates and disk use, sampled from the metrics
    /// ([`crate::stats`]), for the console.
    pub stats: Arc<crate::stats::BrokerStats>,
}
impl BrokerState {
    /// A master's state around `config` and an opened `store`, for unit tests of handlers.
    #[cfg(test)]
    pub(crate) fn for_tests(
        config: BrokerConfig,
        store: Arc<MessageStore>,
        governance: Option<Arc<Governance>>,
    ) -> Arc<BrokerState> {
        let metrics: Arc<crate::metrics::BrokerMetrics> = Arc::default();
        let shutdown = CancellationToken::new();
        let replication = Replication::new(&config, store.clone(), metrics.clone(), shutdown.clone());
        replication.assume_master_for_tests();
        Arc::new(BrokerState {
            store,
            groups: ConsumerGroups::new(Duration::from_secs(10)),
            metrics,
            limits: config.limits.limits(),
            advertise_addr: "127.0.0.1:7911".into(),
            tls: None,
            connection_limits: meridian_proto::serve::ConnectionLimiter::new(config.connections.clone()),
            config,
            shutdown,
            governance,
            replication,
            trace: Arc::new(crate::trace::TraceEmitter::new(
                crate::trace::TraceConfig::default(),
                crate::trace::Identity::default(),
                Arc::default(),
            )),
            locks: QueueLocks::new(Duration::from_secs(30)),
            oneway_failure_log: meridian_proto::throttle::Throttle::new(Duration::from_secs(10)),
            lag: crate::lag::LagTracker::default(),
            producers: crate::producers::ProducerReports::default(),
            stats: Arc::default(),
        })
    }
}

//! The clients a broker knows, for `meridian client list` and `GET /api/broker/clients`: every
//! live consumer with the SDK it reported and the policy's verdict on it, and the producers whose
//! SDK broke the policy recently (compliant producers are not tracked: that would cost every send).
//!
//! It is also the consumer-health view the alert evaluator reads (`nameserver/src/alerts.rs`):
//! each consumer's host, subscription and heartbeat age, the queue it blocks if it blocks one
//! ([`blocked_queue`]: it pulled the queue last, the queue has a backlog, and neither its pull
//! offset nor the group's commit moved since), and the consumers that went away without leaving
//! ([`crate::groups::Departed`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_proto::client_stats::percentile;
use serde::Serialize;

use crate::groups::LiveMember;
use crate::state::BrokerState;

/// How long a producer that broke the SDK policy stays listed after its last send.
pub const FLAGGED_PRODUCER_TTL: Duration = Duration::from_secs(600);

/// At most this many clients are listed in one report (`truncated` says when more exist).
pub const MAX_LISTED_CLIENTS: usize = 10_000;

/// The queue a consumer holds up: it pulled it last, messages wait, and since `idle_ms` it has
/// neither pulled on nor committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockedQueue {
    /// Topic of the queue.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
    /// Messages waiting in it for the group.
    pub lag_messages: u64,
    /// Time since its pull offset or the group's commit last moved, in ms.
    pub idle_ms: u64,
}

/// A consumer that went away without leaving (killed, crashed or cut off) in the last
/// [`crate::groups::DEPARTED_TTL`], and has not come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DepartedEntry {
    /// Its group.
    pub group: String,
    /// Its client id.
    pub client_id: String,
    /// The IP address it connected from.
    pub host: String,
    /// Its data center; empty when unknown.
    pub idc: String,
    /// `connection closed` or `heartbeat expired`.
    pub reason: &'static str,
    /// When it went, ms since the Unix epoch.
    pub departed_ms: u64,
    /// When it was last heard, ms since the Unix epoch.
    pub last_heartbeat_ms: u64,
}

/// One consumer and the policy's verdict on its SDK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientEntry {
    /// `consumer` or `producer`.
    pub kind: &'static str,
    /// Its consumer group (empty for a producer).
    pub group: String,
    /// Its client id, or a producer's address.
    pub client_id: String,
    /// Its data center; empty when unknown.
    pub idc: String,
    /// SDK language.
    pub sdk_language: String,
    /// SDK version; empty when it reported none.
    pub sdk_version: String,
    /// `null` when it complies, else what is wrong and what to do.
    pub sdk_violation: Option<String>,
    /// The IP address it connects from.
    pub host: String,
    /// Topics a consumer subscribes to, sorted (empty for a producer).
    pub topics: Vec<String>,
    /// A consumer's tag filter; empty: every message.
    pub subscription: String,
    /// Time since a consumer's last heartbeat, in ms.
    pub heartbeat_age_ms: Option<u64>,
    /// The queue a consumer holds up, the longest idle one, if any.
    pub blocked: Option<BlockedQueue>,
    /// Messages a consumer's handler finished since it started; `null` when it reports no
    /// figures (an SDK that predates them, or a producer).
    pub consumed: Option<u64>,
    /// A consumer's median handler time per message (µs, upper bound of its power-of-two
    /// bucket), since it started; `null` before its first message.
    pub consume_p50_us: Option<u64>,
    /// A consumer's 99th percentile handler time per message (µs), since it started.
    pub consume_p99_us: Option<u64>,
}

/// A consumer's figures from the handler times it reported: (messages, p50 µs, p99 µs).
pub fn consume_figures(consume_latency_us: &[u64]) -> (Option<u64>, Option<u64>, Option<u64>) {
    if consume_latency_us.is_empty() {
        return (None, None, None);
    }
    (
        Some(consume_latency_us.iter().sum()),
        percentile(consume_latency_us, 0.5),
        percentile(consume_latency_us, 0.99),
    )
}

/// The clients of one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientsReport {
    /// Whether the policy refuses offenders (they are only flagged otherwise).
    pub refuse: bool,
    /// Consumers, then flagged producers.
    pub clients: Vec<ClientEntry>,
    /// Consumers that went away without leaving, by group and client id.
    pub departed: Vec<DepartedEntry>,
    /// Producers reporting their send latency and message sizes, by client id.
    pub producers: Vec<crate::producers::ProducerStatsEntry>,
    /// More than [`MAX_LISTED_CLIENTS`] clients or departed consumers exist; the first are listed.
    pub truncated: bool,
}

/// The backlogged queue `member` pulled last whose pull offset and commits have not moved for the
/// longest time, or `None`.
pub fn blocked_queue(state: &BrokerState, member: &LiveMember, now_ms: u64) -> Option<BlockedQueue> {
    let mut worst: Option<BlockedQueue> = None;
    for topic in &member.info.topics {
        for (queue_id, pull) in state.lag.pulls(&member.group, topic) {
            if pull.peer != member.peer {
                continue;
            }
            let Ok(queue) = state.store.consume_queue(topic, queue_id) else {
                continue;
            };
            let committed = state
                .store
                .query_offset(&member.group, topic, queue_id)
                .ok()
                .flatten()
                .unwrap_or(pull.from_offset);
            let lag_messages = queue.max_offset().saturating_sub(committed);
            if lag_messages == 0 {
                continue;
            }
            let moved_ms = state
                .lag
                .last_commit_ms(&member.group, topic, queue_id)
                .map_or(pull.progressed_ms, |committed_ms| committed_ms.max(pull.progressed_ms));
            let idle_ms = now_ms.saturating_sub(moved_ms);
            if worst.as_ref().is_none_or(|worst| idle_ms > worst.idle_ms) {
                worst = Some(BlockedQueue {
                    topic: topic.clone(),
                    queue_id,
                    lag_messages,
                    idle_ms,
                });
            }
        }
    }
    worst
}

/// Builds [`ClientsReport`]s of a running broker.
#[derive(Clone)]
pub struct ClientsView {
    state: Arc<BrokerState>,
}

impl ClientsView {
    /// A view over the broker's groups and governance.
    pub fn new(state: Arc<BrokerState>) -> ClientsView {
        ClientsView { state }
    }

    /// The clients now.
    pub fn report(&self) -> ClientsReport {
        let governance = self.state.governance.as_ref();
        let judge = |language: &str, version: &str| {
            governance.and_then(|governance| {
                governance
                    .judge_sdk(language, version)
                    .err()
                    .map(|violation| violation.to_string())
            })
        };
        let now = Instant::now();
        let now_ms = crate::lag::now_ms();
        let live = self.state.groups.live(now);
        let mut truncated = live.len() > MAX_LISTED_CLIENTS;
        let mut clients: Vec<ClientEntry> = live
            .into_iter()
            .take(MAX_LISTED_CLIENTS)
            .map(|member| {
                let blocked = blocked_queue(&self.state, &member, now_ms);
                let mut topics = member.info.topics.clone();
                topics.sort();
                let info = member.info;
                let (consumed, consume_p50_us, consume_p99_us) = consume_figures(&info.consume_latency_us);
                ClientEntry {
                    kind: "consumer",
                    sdk_violation: judge(&info.sdk_language, &info.sdk_version),
                    group: member.group,
                    client_id: member.client_id,
                    idc: info.idc,
                    sdk_language: info.sdk_language,
                    sdk_version: info.sdk_version,
                    host: member.peer.ip().to_string(),
                    topics,
                    subscription: info.subscription,
                    heartbeat_age_ms: Some(u64::try_from(member.heartbeat_age.as_millis()).unwrap_or(u64::MAX)),
                    blocked,
                    consumed,
                    consume_p50_us,
                    consume_p99_us,
                }
            })
            .collect();
        for (peer, sdk) in governance.map_or_else(Vec::new, |governance| {
            governance.flagged_producers(FLAGGED_PRODUCER_TTL)
        }) {
            let (language, version) = meridian_proto::sdk::split_sdk(&sdk);
            clients.push(ClientEntry {
                kind: "producer",
                group: String::new(),
                client_id: peer.to_string(),
                idc: String::new(),
                sdk_language: language.to_owned(),
                sdk_version: version.to_owned(),
                sdk_violation: judge(language, version),
                host: peer.ip().to_string(),
                topics: Vec::new(),
                subscription: String::new(),
                heartbeat_age_ms: None,
                blocked: None,
                consumed: None,
                consume_p50_us: None,
                consume_p99_us: None,
            });
        }
        let departed = self.state.groups.departed(now);
        truncated |= departed.len() > MAX_LISTED_CLIENTS;
        let mut producers = self.state.producers.report(now);
        for producer in &mut producers {
            let (language, version) = meridian_proto::sdk::split_sdk(&producer.sdk);
            producer.sdk_violation = judge(language, version);
        }
        ClientsReport {
            producers,
            refuse: governance.is_some_and(|governance| governance.sdk_policy().refuse),
            clients,
            departed: departed
                .into_iter()
                .take(MAX_LISTED_CLIENTS)
                .map(|gone| DepartedEntry {
                    host: gone.peer.ip().to_string(),
                    idc: gone.info.idc,
                    group: gone.group,
                    client_id: gone.client_id,
                    reason: gone.reason,
                    departed_ms: gone.departed_ms,
                    last_heartbeat_ms: gone.last_heartbeat_ms,
                })
                .collect(),
            truncated,
        }
    }
}

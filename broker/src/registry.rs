//! A governed broker's side of the nameservers: heartbeats, registration, and the approved topics
//! and consumer groups it enforces.
//!
//! [`Governance`] holds what the nameservers approved for this broker group as one immutable
//! [`Approved`] snapshot, swapped whole when new metadata arrives, so a request is checked with one
//! read lock and one hash lookup. [`Heartbeats`] is what [`crate::Broker::run`] starts when
//! `nameservers` is set: one loop per nameserver (RocketMQ-style, a broker heartbeats every
//! nameserver, so a dead one delays nobody), each sending a small [`BrokerHeartbeat`] every
//! `heartbeat_interval_ms` and once at start. A nameserver that lacks the registration the
//! heartbeat's digest names gets the full [`BrokerRegistration`]. When a nameserver reports a newer
//! metadata version, the broker fetches [`messages::BrokerMetadata`], creates the topics it lacks,
//! grows the ones granted more queues, then swaps the snapshot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_proto::messages::{
    self, BrokerHeartbeat, BrokerHeartbeatResponse, BrokerMetadataRequest, BrokerRegistration, GroupGrant, TopicGrant,
    TopicList, TopicQueues, perm, role,
};
use meridian_proto::sdk::{self, SdkPolicyGrant, SdkViolation};
use meridian_proto::topics::{self, TopicKind};
use meridian_proto::transport::{ConnectionPool, TransportConfig, TransportError};
use meridian_proto::{RequestCode, compress};
use prost::Message;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::error::{BrokerError, Result};
use crate::metrics::ResultLabels;
use crate::replication::Role;
use crate::store::MessageStore;
use crate::throttle::Throttles;

/// What the nameservers approved for this broker group, as of one metadata version.
#[derive(Debug, Default)]
pub struct Approved {
    /// Version of the metadata this came from; `None` until the first metadata arrived.
    pub version: Option<u64>,
    /// Approved topics placed on this broker group, by name.
    pub topics: HashMap<String, TopicGrant>,
    /// Approved consumer groups, by name.
    pub groups: HashMap<String, GroupGrant>,
    /// Token buckets of the topics with a produce limit.
    pub throttles: Throttles,
    /// The cluster's SDK version policy (empty: nothing judged).
    pub sdk_policy: SdkPolicyGrant,
    /// Users' verifiers, for logins when `[auth]` is on ([`crate::auth`]).
    pub users: HashMap<String, meridian_proto::auth::Verifier>,
    /// The cluster's ACL, for `[auth] authorization` ([`crate::permission`]).
    pub acl: meridian_proto::acl::Acl,
    /// Sealed secrets of the users with RocketMQ access, for AccessKey signatures
    /// ([`crate::remoting`]).
    pub rocketmq_secrets: HashMap<String, String>,
}

impl Approved {
    /// The snapshot of a [`messages::BrokerMetadata`] answer.
    pub fn from_metadata(metadata: messages::BrokerMetadata) -> Approved {
        let acl = if metadata.acl_json.is_empty() {
            meridian_proto::acl::Acl::default()
        } else {
            serde_json::from_str(&metadata.acl_json).unwrap_or_else(|error| {
                error!(%error, "the nameserver's ACL is unreadable; only nodes and super users pass until the next metadata");
                meridian_proto::acl::Acl::default()
            })
        };
        Approved {
            acl,
            version: Some(metadata.version),
            throttles: Throttles::from_grants(&metadata.topics, Instant::now()),
            sdk_policy: metadata.sdk_policy.unwrap_or_default(),
            rocketmq_secrets: metadata
                .users
                .iter()
                .filter(|grant| !grant.rocketmq_sealed.is_empty())
                .map(|grant| (grant.name.clone(), grant.rocketmq_sealed.clone()))
                .collect(),
            users: metadata
                .users
                .into_iter()
                .filter_map(|grant| Some((grant.name, grant.verifier?)))
                .collect(),
            topics: metadata
                .topics
                .into_iter()
                .map(|grant| (grant.name.clone(), grant))
                .collect(),
            groups: metadata
                .groups
                .into_iter()
                .map(|grant| (grant.name.clone(), grant))
                .collect(),
        }
    }
}

/// The approved topics and groups of a governed broker, and the checks requests go through.
#[derive(Debug)]
pub struct Governance {
    broker_group: String,
    nameservers: Vec<String>,
    // A std lock around an Arc: readers hold it for one lookup, the writer only to swap the Arc.
    approved: RwLock<Arc<Approved>>,
    /// Held from deciding to fetch metadata until it is applied, so two nameservers announcing
    /// the same version do not both fetch it, and an older answer never overtakes a newer one.
    applying: tokio::sync::Mutex<()>,
    /// Data centers a failover drill evacuated, from the last nameserver answer, sorted.
    evacuated: RwLock<Vec<String>>,
    /// Producers whose SDK broke the policy, by address: what they reported and when last.
    /// Written only when a send breaks the policy, so compliant sends never touch it.
    flagged_producers: Mutex<HashMap<SocketAddr, (String, Instant)>>,
}

impl Governance {
    /// Nothing approved yet: every checked request fails with [`BrokerError::ApprovalsPending`]
    /// until the first [`Governance::replace`].
    pub fn new(broker_group: String, nameservers: Vec<String>) -> Governance {
        Governance {
            broker_group,
            nameservers,
            approved: RwLock::new(Arc::new(Approved::default())),
            applying: tokio::sync::Mutex::new(()),
            evacuated: RwLock::new(Vec::new()),
            flagged_producers: Mutex::new(HashMap::new()),
        }
    }

    /// Data centers a failover drill evacuated, as the nameservers last said, sorted.
    pub fn evacuated(&self) -> Vec<String> {
        self.evacuated
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records what a nameserver said about evacuated data centers; logs when it changes.
    pub fn set_evacuated(&self, mut idcs: Vec<String>) {
        idcs.sort();
        idcs.dedup();
        let mut current = self.evacuated.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *current != idcs {
            info!(evacuated = ?idcs, "failover drill: evacuated data centers changed");
            *current = idcs;
        }
    }

    /// Whether a drill evacuated data center `idc` (never true for an empty name).
    pub fn is_evacuated(&self, idc: &str) -> bool {
        !idc.is_empty()
            && self
                .evacuated
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .any(|evacuated| evacuated == idc)
    }

    /// The refusal of a write to a broker of this group in evacuated data center `idc`.
    pub fn evacuated_error(&self, idc: &str) -> BrokerError {
        BrokerError::Evacuated {
            broker_group: self.broker_group.clone(),
            idc: idc.to_owned(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Arc<Approved>> {
        self.approved.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the ACL in force lets `principal` do `action` on `resource`; one read lock, no
    /// allocation unless refused.
    pub fn authorize(
        &self,
        principal: &meridian_proto::auth::Principal,
        action: meridian_proto::acl::Action,
        resource: meridian_proto::acl::Resource<'_>,
    ) -> std::result::Result<(), meridian_proto::acl::AccessDenied> {
        self.read().acl.check(principal, action, resource)
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Approved> {
        self.read().clone()
    }

    /// Version of the snapshot in force; `None` before the first metadata.
    pub fn applied_version(&self) -> Option<u64> {
        self.read().version
    }

    /// Puts `approved` in force, unless the snapshot in force is of a newer version.
    /// Returns whether it was put in force.
    pub fn replace(&self, mut approved: Approved) -> bool {
        let mut current = self.approved.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        // `None` (nothing received yet) sorts before every version.
        if current.version > approved.version {
            return false;
        }
        approved.throttles.carry_over(&current.throttles);
        *current = Arc::new(approved);
        true
    }

    fn pending(&self) -> BrokerError {
        BrokerError::ApprovalsPending {
            broker_group: self.broker_group.clone(),
            nameservers: self.nameservers.clone(),
        }
    }

    /// Whether `topic` is approved for this broker group, whatever its permissions: what a route
    /// asked of the broker itself answers, so an admin waiting on it sees the approval applied.
    pub fn check_approved(&self, topic: &str) -> Result<()> {
        match self.check_send(topic) {
            Err(BrokerError::TopicNotWritable { .. }) => Ok(()),
            other => other,
        }
    }

    /// Whether producers may send to `topic`: approved for this broker group, with write permission.
    pub fn check_send(&self, topic: &str) -> Result<()> {
        let approved = self.read();
        if approved.version.is_none() {
            return Err(self.pending());
        }
        match approved.topics.get(topic) {
            None => Err(BrokerError::TopicNotApproved {
                topic: topic.to_owned(),
                broker_group: self.broker_group.clone(),
            }),
            Some(grant) if grant.perm & perm::WRITE == 0 => Err(BrokerError::TopicNotWritable {
                topic: topic.to_owned(),
                broker_group: self.broker_group.clone(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Whether a send of `messages` messages and `bytes` bytes to `topic` fits this master's share
    /// of the topic's produce limit at `now` ([`crate::throttle`]); topics without one always fit.
    pub fn check_throttle(&self, topic: &str, messages: u32, bytes: u64, now: Instant) -> Result<()> {
        let approved = self.read();
        let Some(throttle) = approved.throttles.get(topic) else {
            return Ok(());
        };
        throttle
            .admit(messages, bytes, now)
            .map_err(|wait| BrokerError::Throttled {
                topic: topic.to_owned(),
                broker_group: self.broker_group.clone(),
                limit: throttle.limit().to_string(),
                // Rounded up, so a client waiting exactly this long finds the bucket out of debt.
                retry_after_ms: wait.as_micros().div_ceil(1000) as u64,
            })
    }

    /// Judges an SDK against the cluster's policy: `Ok` when it complies (or reports no version).
    pub fn judge_sdk(&self, language: &str, version: &str) -> std::result::Result<(), SdkViolation> {
        sdk::judge(&self.read().sdk_policy, language, version)
    }

    /// Checks a client's SDK: a violation is refused when the policy says `refuse`, and only
    /// flagged (returned as `Ok(Some(..))`) otherwise.
    pub fn check_sdk(&self, language: &str, version: &str) -> Result<Option<SdkViolation>> {
        let approved = self.read();
        match sdk::judge(&approved.sdk_policy, language, version) {
            Ok(()) => Ok(None),
            Err(violation) if approved.sdk_policy.refuse => Err(BrokerError::SdkRefused(violation.to_string())),
            Err(violation) => Ok(Some(violation)),
        }
    }

    /// Checks a producer's reported SDK (`language/version` bytes of a send) and remembers a
    /// flagged producer for the client listing.
    pub fn check_producer_sdk(&self, reported: &[u8], peer: SocketAddr) -> Result<()> {
        if reported.is_empty() {
            return Ok(());
        }
        let reported = std::str::from_utf8(reported).unwrap_or("?/not-utf8");
        let (language, version) = sdk::split_sdk(reported);
        let refused = self.check_sdk(language, version);
        if !matches!(refused, Ok(None)) {
            let mut flagged = self
                .flagged_producers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match flagged.get_mut(&peer) {
                Some((sdk, seen)) if sdk == reported => *seen = Instant::now(),
                _ => {
                    tracing::warn!(%peer, sdk = reported, refused = refused.is_err(), "producer breaks the sdk policy");
                    flagged.insert(peer, (reported.to_owned(), Instant::now()));
                }
            }
        }
        refused.map(|_| ())
    }

    /// Producers flagged for their SDK within `within`, as `(address, language/version)`.
    pub fn flagged_producers(&self, within: Duration) -> Vec<(SocketAddr, String)> {
        let mut flagged = self
            .flagged_producers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        flagged.retain(|_, (_, seen)| seen.elapsed() <= within);
        let mut listed: Vec<_> = flagged.iter().map(|(peer, (sdk, _))| (*peer, sdk.clone())).collect();
        listed.sort();
        listed
    }

    /// The SDK policy in force.
    pub fn sdk_policy(&self) -> SdkPolicyGrant {
        self.read().sdk_policy.clone()
    }

    /// Whether consumer group `group` may consume each of `topics`: the group is approved, each
    /// topic is among its approved topics, and none is approved without read permission.
    pub fn check_consume<'a>(&self, group: &str, topics: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let approved = self.read();
        if approved.version.is_none() {
            return Err(self.pending());
        }
        let grant = approved
            .groups
            .get(group)
            .ok_or_else(|| BrokerError::GroupNotApproved {
                group: group.to_owned(),
            })?;
        for topic in topics {
            if !grant.topics.iter().any(|allowed| allowed == topic) {
                return Err(BrokerError::GroupTopicNotApproved {
                    group: group.to_owned(),
                    topic: topic.to_owned(),
                    topics: grant.topics.clone(),
                });
            }
            if let Some(topic_grant) = approved.topics.get(topic)
                && topic_grant.perm & perm::READ == 0
            {
                return Err(BrokerError::TopicNotReadable {
                    topic: topic.to_owned(),
                    broker_group: self.broker_group.clone(),
                });
            }
        }
        Ok(())
    }

    /// The grant of consumer group `group`, if it is approved.
    pub fn group(&self, group: &str) -> Option<GroupGrant> {
        self.read().groups.get(group).cloned()
    }

    /// The refusal of a `CreateTopic` request: topics come from the nameservers.
    pub fn refuse_topic_creation(&self, topic: &str) -> BrokerError {
        BrokerError::TopicsGoverned {
            topic: topic.to_owned(),
            nameservers: self.nameservers.clone(),
        }
    }
}

/// The topics a broker registers, `(name, queues)` sorted by name as the digest requires.
pub fn topic_list(mut topics: Vec<(String, u32)>) -> Vec<TopicQueues> {
    topics.sort_unstable_by(|left, right| left.0.cmp(&right.0));
    topics
        .into_iter()
        .map(|(name, queues)| TopicQueues { name, queues })
        .collect()
}

/// Where a broker stands in its group, as its heartbeats report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// Whether it is the master.
    pub master: bool,
    /// The epoch its role belongs to.
    pub epoch: u64,
    /// End of its commitlog.
    pub max_offset: u64,
    /// The slaves it holds in sync (a master only), sorted.
    pub in_sync: Vec<String>,
    /// Its confirmed offset (a master only; see [`BrokerHeartbeat::confirmed_offset`]).
    pub confirmed_offset: u64,
    /// Why it acknowledges in degraded mode (a master only); empty under its full ack policy.
    pub degraded: String,
    /// The members it leaves out of its ack policy in degraded mode (a master only), sorted.
    pub left_out: Vec<String>,
}

/// Who this broker is, as a heartbeat says it, with the digest of what it would register.
/// `topics` must be sorted by name ([`topic_list`]). The digest leaves `max_offset` out, so a
/// broker taking writes does not re-register every interval.
pub fn build_heartbeat(
    config: &crate::BrokerConfig,
    addr: &str,
    standing: Standing,
    topics: &[TopicQueues],
) -> BrokerHeartbeat {
    let mut heartbeat = BrokerHeartbeat {
        group: config.broker_name.clone(),
        name: config.member_name().to_owned(),
        addr: addr.to_owned(),
        idc: config.idc.clone(),
        role: if standing.master { role::MASTER } else { role::SLAVE },
        epoch: standing.epoch,
        max_offset: standing.max_offset,
        registration_digest: 0,
        in_sync: standing.in_sync,
        remoting_addr: config.remoting.advertise_addr.clone().unwrap_or_default(),
        confirmed_offset: standing.confirmed_offset,
        degraded: standing.degraded,
        ack_policy: if standing.master {
            config.replication.ack_policy.as_str().to_owned()
        } else {
            String::new()
        },
        ack_replicas: if standing.master {
            config.replication.replicas
        } else {
            0
        },
        left_out: standing.left_out,
    };
    heartbeat.registration_digest = messages::registration_digest(&heartbeat, topics);
    heartbeat
}

/// The full registration: the heartbeat and the compressed topic list its digest covers.
pub fn build_registration(heartbeat: BrokerHeartbeat, topics: Vec<TopicQueues>) -> BrokerRegistration {
    let list = TopicList { topics };
    BrokerRegistration {
        heartbeat: Some(heartbeat),
        topics_compressed: Bytes::from(compress::compress(&list.encode_to_vec())),
    }
}

/// How long a heartbeat, registration or metadata request to a nameserver may take.
const NAMESERVER_TIMEOUT: Duration = Duration::from_secs(3);
/// Consecutive heartbeats a nameserver may report an older metadata version than the one in
/// force before it is worth a warning: a follower lagging for a moment is normal.
const STALE_VERSION_WARN_AFTER: u32 = 3;

/// The heartbeat loops of a governed broker, until [`Heartbeats::stop`] (or until the token given
/// to [`Heartbeats::start`] is cancelled).
pub struct Heartbeats {
    tracker: TaskTracker,
    cancel: CancellationToken,
    pool: ConnectionPool,
}

/// What the heartbeat loops read of the broker, handed over when they start, so this module does
/// not depend on the broker's whole state (which holds this module's [`Governance`]).
pub struct HeartbeatSource {
    /// The broker's config: its name, IDC, nameservers and heartbeat interval.
    pub config: crate::config::BrokerConfig,
    /// Size limits of the connections to the nameservers.
    pub limits: meridian_proto::validate::Limits,
    /// The store: topics to register, offsets to report, where applied metadata creates topics.
    pub store: Arc<MessageStore>,
    /// The broker's role, which the nameservers' answers change.
    pub replication: Arc<crate::replication::Replication>,
    /// Address clients should use for this broker.
    pub advertise_addr: String,
    /// Metrics.
    pub metrics: Arc<crate::metrics::BrokerMetrics>,
}

impl Heartbeats {
    /// Starts one heartbeat loop per nameserver of `state.config`. The loops end when `cancel` is
    /// cancelled (or at [`Heartbeats::stop`]).
    pub fn start(state: Arc<HeartbeatSource>, governance: Arc<Governance>, cancel: CancellationToken) -> Heartbeats {
        let pool = ConnectionPool::new(TransportConfig {
            limits: state.limits,
            request_timeout: NAMESERVER_TIMEOUT,
            connect_timeout: NAMESERVER_TIMEOUT,
            credentials: state.config.auth.node_credentials.clone(),
            tls: state.config.tls_client.clone(),
            source_ip: meridian_proto::transport::source_ip_for(state.config.listen.ip()),
        });
        let (registration_changed_tx, registration_changed_rx) = watch::channel(0u64);
        let interval = Duration::from_millis(state.config.heartbeat_interval_ms);
        let shared = Arc::new(Shared {
            state,
            governance,
            pool: pool.clone(),
            cancel: cancel.clone(),
            registration_changed_tx,
        });
        let tracker = TaskTracker::new();
        for addr in shared.state.config.nameservers.clone() {
            let link = Link {
                addr,
                failing: false,
                stale_streak: 0,
            };
            tracker.spawn(heartbeat_loop(
                shared.clone(),
                link,
                interval,
                registration_changed_rx.clone(),
            ));
        }
        info!(
            nameservers = ?shared.state.config.nameservers,
            interval_ms = interval.as_millis() as u64,
            "heartbeating nameservers"
        );
        Heartbeats { tracker, cancel, pool }
    }

    /// Stops the loops (a metadata update being applied finishes first) and closes the connections.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.pool.shutdown().await;
    }
}

/// What every heartbeat loop shares.
struct Shared {
    state: Arc<HeartbeatSource>,
    governance: Arc<Governance>,
    pool: ConnectionPool,
    cancel: CancellationToken,
    /// Bumped when applying metadata changed the store's topics, so every loop heartbeats at once
    /// (and registers the new topics) instead of at its next tick.
    registration_changed_tx: watch::Sender<u64>,
}

/// One nameserver as its loop sees it.
struct Link {
    addr: String,
    /// Whether the last exchange failed: an outage is logged once, when it starts.
    failing: bool,
    /// Consecutive heartbeats that reported an older metadata version than the one in force.
    stale_streak: u32,
}

async fn heartbeat_loop(
    shared: Arc<Shared>,
    mut link: Link,
    interval: Duration,
    mut registration_changed_rx: watch::Receiver<u64>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut silenced = false;
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = ticks.tick() => {}
            changed = registration_changed_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        // A broker whose disk failed goes silent: its lease lapses and the controller promotes
        // an in-sync slave, exactly as for a crashed master. Its slaves still drain its log.
        if let Some(failure) = shared.state.store.failure() {
            if !silenced {
                error!(
                    nameserver = %link.addr,
                    reason = failure,
                    "store failed: no more heartbeats, so the nameservers fail this broker over; restart it to rejoin"
                );
                silenced = true;
            }
            continue;
        }
        let outcome = shared.exchange(&mut link).await;
        if shared.cancel.is_cancelled() {
            return;
        }
        match outcome {
            Ok(()) if link.failing => {
                info!(nameserver = %link.addr, "nameserver answers heartbeats again");
                link.failing = false;
            }
            Ok(()) => {}
            Err(error) if !link.failing => {
                warn!(
                    nameserver = %link.addr,
                    %error,
                    "heartbeat to nameserver failed; retrying every interval while serving the other nameservers"
                );
                link.failing = true;
            }
            Err(error) => debug!(nameserver = %link.addr, %error, "heartbeat to nameserver failed again"),
        }
    }
}

impl Shared {
    /// Sends `request` to `addr`; ends at once with [`TransportError::Shutdown`] when the broker stops.
    async fn call<Req, Resp>(&self, addr: &str, code: RequestCode, request: &Req) -> Result<Resp, TransportError>
    where
        Req: Message,
        Resp: Message + Default,
    {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(TransportError::Shutdown),
            response = self.pool.call(addr, code, request, NAMESERVER_TIMEOUT) => response,
        }
    }

    /// One heartbeat to one nameserver, with the registration and the metadata fetch it may call for.
    async fn exchange(&self, link: &mut Link) -> Result<(), TransportError> {
        let state = &self.state;
        // Retry, dead-letter, delay and transaction topics are the broker's own: not registered.
        let topics = topic_list(
            state
                .store
                .topics()
                .into_iter()
                .filter(|(name, _)| matches!(topics::kind(name), TopicKind::User | TopicKind::Trace))
                .collect(),
        );
        let role = state.replication.role();
        let master = matches!(role, Role::Master { .. });
        let standing = Standing {
            master,
            epoch: role.epoch(),
            max_offset: state.store.committed_offset(),
            in_sync: state.replication.in_sync(),
            confirmed_offset: if master { state.store.confirmed_offset() } else { 0 },
            degraded: state.replication.degraded().unwrap_or_default(),
            left_out: if master {
                state.replication.left_out()
            } else {
                Vec::new()
            },
        };
        let heartbeat = build_heartbeat(&state.config, &state.advertise_addr, standing, &topics);
        let sent_at = std::time::Instant::now();
        let metrics = &state.metrics;
        let result: Result<BrokerHeartbeatResponse, _> =
            self.call(&link.addr, RequestCode::BrokerHeartbeat, &heartbeat).await;
        if was_sent(&result) {
            metrics
                .nameserver_heartbeat_bytes
                .inc_by(heartbeat.encoded_len() as u64);
        }
        let labels = if result.is_ok() {
            ResultLabels::OK
        } else {
            ResultLabels::ERROR
        };
        metrics.nameserver_heartbeats.get_or_create(&labels).inc();
        let mut response = result?;
        let mut answered_at = sent_at;
        if !response.registered {
            answered_at = std::time::Instant::now();
            let topic_count = topics.len();
            let registration = build_registration(heartbeat, topics);
            let result = self.call(&link.addr, RequestCode::RegisterBroker, &registration).await;
            if was_sent(&result) {
                metrics.nameserver_registrations.inc();
                metrics
                    .nameserver_heartbeat_bytes
                    .inc_by(registration.encoded_len() as u64);
            }
            response = result?;
            info!(nameserver = %link.addr, topics = topic_count, "registered with nameserver");
        }
        self.governance
            .set_evacuated(std::mem::take(&mut response.evacuated_idcs));
        state.replication.on_nameserver_answer(answered_at, &response).await;
        state.replication.on_lost_members(&response);
        self.follow_metadata(link, response.metadata_version).await
    }

    /// Fetches and applies the metadata when `reported` (what `link`'s nameserver holds) is newer
    /// than the version in force. Versions only grow in a nameserver cluster, so an older one comes
    /// from a lagging nameserver and is not fetched.
    async fn follow_metadata(&self, link: &mut Link, reported: u64) -> Result<(), TransportError> {
        let applied = self.governance.applied_version();
        match applied {
            Some(applied) if reported < applied => {
                link.stale_streak += 1;
                if link.stale_streak == STALE_VERSION_WARN_AFTER {
                    warn!(
                        nameserver = %link.addr,
                        reported,
                        applied,
                        "nameserver keeps reporting an older metadata version than the one in force; keeping the newer one (restart the broker if the nameserver cluster was rebuilt from scratch)"
                    );
                }
                return Ok(());
            }
            Some(applied) if reported == applied => {
                link.stale_streak = 0;
                return Ok(());
            }
            _ => link.stale_streak = 0,
        }
        let _applying = self.governance.applying.lock().await;
        // Another nameserver's loop may have applied it while this one waited.
        if self
            .governance
            .applied_version()
            .is_some_and(|applied| applied >= reported)
        {
            return Ok(());
        }
        self.state.metrics.nameserver_metadata_fetches.inc();
        let request = BrokerMetadataRequest {
            group: self.state.config.broker_name.clone(),
        };
        let metadata: messages::BrokerMetadata = self.call(&link.addr, RequestCode::BrokerMetadata, &request).await?;
        if self
            .governance
            .applied_version()
            .is_some_and(|applied| metadata.version < applied)
        {
            debug!(nameserver = %link.addr, version = metadata.version, "ignoring older metadata");
            return Ok(());
        }
        self.apply(metadata).await;
        Ok(())
    }

    /// Creates and grows the granted topics, then puts the snapshot in force. Topics come first,
    /// so an approved topic is never missing from the store.
    async fn apply(&self, metadata: messages::BrokerMetadata) {
        let store = self.state.store.clone();
        let grants = metadata.topics.clone();
        // Creating a topic writes and syncs metadata files: keep it off the runtime threads.
        let changed = tokio::task::spawn_blocking(move || provision_topics(&store, &grants))
            .await
            .unwrap_or_else(|join_error| {
                error!(%join_error, "provisioning approved topics panicked");
                false
            });
        let (version, topics, groups) = (metadata.version, metadata.topics.len(), metadata.groups.len());
        if self.governance.replace(Approved::from_metadata(metadata)) {
            info!(version, topics, groups, "applied approved topics and consumer groups");
        }
        if changed {
            self.registration_changed_tx.send_modify(|generation| *generation += 1);
        }
    }
}

/// Whether a request left this process: it failed neither to connect nor before sending.
fn was_sent<T>(result: &Result<T, TransportError>) -> bool {
    !matches!(
        result,
        Err(TransportError::Connect { .. } | TransportError::Shutdown | TransportError::FrameTooLarge { .. })
    )
}

/// Makes the store hold every granted topic with at least its granted queues. Returns whether
/// the store's topics changed. Failures are logged per topic; the others still go ahead.
fn provision_topics(store: &MessageStore, grants: &[TopicGrant]) -> bool {
    let mut changed = false;
    for grant in grants {
        let (name, granted) = (grant.name.as_str(), grant.queues);
        match store.topic_queues(name) {
            None => match store.create_topic(name, granted) {
                Ok(created) => changed |= created,
                Err(error) => error!(topic = name, queues = granted, %error, "cannot create approved topic"),
            },
            Some(existing) if granted > existing => match store.grow_topic(name, granted) {
                Ok(grown) => changed |= grown,
                Err(error) => warn!(
                    topic = name,
                    existing,
                    granted,
                    %error,
                    "cannot grow topic to its approved queue count; serving its existing queues"
                ),
            },
            Some(existing) if granted < existing => debug!(
                topic = name,
                existing, granted, "topic has more queues than approved; keeping them (they may hold messages)"
            ),
            Some(_) => {}
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BrokerConfig;
    use meridian_proto::ErrorCode;

    fn governance() -> Governance {
        Governance::new(
            "broker-a".into(),
            vec!["127.0.0.1:7800".into(), "127.0.0.1:7801".into()],
        )
    }

    fn metadata(version: u64) -> messages::BrokerMetadata {
        messages::BrokerMetadata {
            version,
            topics: vec![
                TopicGrant {
                    name: "orders".into(),
                    queues: 4,
                    perm: perm::READ | perm::WRITE,
                    ..TopicGrant::default()
                },
                TopicGrant {
                    name: "archive".into(),
                    queues: 1,
                    perm: perm::READ,
                    ..TopicGrant::default()
                },
                TopicGrant {
                    name: "sink".into(),
                    queues: 1,
                    perm: perm::WRITE,
                    ..TopicGrant::default()
                },
            ],
            groups: vec![GroupGrant {
                name: "billing".into(),
                topics: vec!["orders".into(), "sink".into()],
                max_retries: 16,
                broadcasting: false,
            }],
            sdk_policy: None,
            users: Vec::new(),
            acl_json: String::new(),
        }
    }

    #[test]
    fn nothing_is_served_before_the_first_metadata() {
        let governance = governance();
        let error = governance.check_send("orders").unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unavailable);
        assert!(error.to_string().contains("127.0.0.1:7800, 127.0.0.1:7801"), "{error}");
        let error = governance.check_consume("billing", ["orders"]).unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unavailable);
    }

    #[test]
    fn sends_need_an_approved_writable_topic() {
        let governance = governance();
        assert!(governance.replace(Approved::from_metadata(metadata(3))));
        governance.check_send("orders").unwrap();
        let error = governance.check_send("payments").unwrap_err();
        assert_eq!(error.code(), ErrorCode::NotApproved);
        assert_eq!(
            error.to_string(),
            "topic \"payments\" is not approved on broker group \"broker-a\" (it is unknown, awaiting approval or rejected; \
             `meridian topic describe payments` shows which): request it with \
             `meridian topic request payments --owner TEAM --queues N` and have an admin approve it"
        );
        let error = governance.check_send("archive").unwrap_err();
        assert_eq!(error.code(), ErrorCode::FailedPrecondition);
        assert!(error.to_string().contains("read-only"), "{error}");
    }

    #[test]
    fn consumers_need_an_approved_group_granted_the_topic() {
        let governance = governance();
        governance.replace(Approved::from_metadata(metadata(3)));
        governance.check_consume("billing", ["orders"]).unwrap();
        governance.check_consume("billing", []).unwrap();
        let error = governance.check_consume("audit", ["orders"]).unwrap_err();
        assert_eq!(error.code(), ErrorCode::NotApproved);
        assert_eq!(
            error.to_string(),
            "consumer group \"audit\" is not approved (unknown, awaiting approval or rejected; \
             `meridian group describe audit` shows which): request it with \
             `meridian group request audit --owner TEAM --topics T` and have an admin approve it"
        );
        let error = governance.check_consume("billing", ["orders", "archive"]).unwrap_err();
        assert_eq!(error.code(), ErrorCode::FailedPrecondition);
        let message = error.to_string();
        assert!(
            message.contains("\"billing\"") && message.contains("\"archive\"") && message.contains("[orders, sink]"),
            "{message}"
        );
        let error = governance.check_consume("billing", ["sink"]).unwrap_err();
        assert!(error.to_string().contains("write-only"), "{error}");
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let governance = governance();
        assert!(governance.replace(Approved::from_metadata(metadata(5))));
        let mut older = metadata(4);
        older.topics.clear();
        assert!(!governance.replace(Approved::from_metadata(older)));
        assert_eq!(governance.applied_version(), Some(5));
        governance.check_send("orders").unwrap();
        let mut newer = metadata(6);
        newer.topics.retain(|grant| grant.name != "orders");
        assert!(governance.replace(Approved::from_metadata(newer)));
        assert_eq!(governance.snapshot().topics.len(), 2);
        assert_eq!(
            governance.check_send("orders").unwrap_err().code(),
            ErrorCode::NotApproved
        );
    }

    #[test]
    fn creating_topics_on_a_governed_broker_names_the_nameservers() {
        let message = governance().refuse_topic_creation("orders").to_string();
        assert!(message.contains("(127.0.0.1:7800, 127.0.0.1:7801)"), "{message}");
        assert!(
            message.contains("`meridian topic create orders --queues N --nameserver 127.0.0.1:7800`"),
            "{message}"
        );
        assert!(message.contains("`meridian topic request orders"), "{message}");
    }

    /// A master at epoch 3 holding `max_offset` bytes, with one slave in sync.
    fn at(max_offset: u64) -> Standing {
        Standing {
            master: true,
            epoch: 3,
            max_offset,
            in_sync: vec!["a-2".into()],
            ..Standing::default()
        }
    }

    #[test]
    fn registrations_list_topics_sorted_and_their_digest_ignores_the_max_offset() {
        let config = BrokerConfig {
            broker_name: "broker-a".into(),
            member_name: Some("a-1".into()),
            idc: "dc1".into(),
            ..BrokerConfig::default()
        };
        let topics = topic_list(vec![("zeta".into(), 2), ("alpha".into(), 8), ("mid".into(), 1)]);
        let names: Vec<&str> = topics.iter().map(|topic| topic.name.as_str()).collect();
        assert_eq!(names, ["alpha", "mid", "zeta"]);

        let heartbeat = build_heartbeat(&config, "10.0.0.5:7911", at(100), &topics);
        assert_eq!(
            (
                heartbeat.group.as_str(),
                heartbeat.name.as_str(),
                heartbeat.idc.as_str()
            ),
            ("broker-a", "a-1", "dc1")
        );
        assert_eq!(
            (heartbeat.role, heartbeat.epoch, heartbeat.max_offset),
            (role::MASTER, 3, 100)
        );
        assert_eq!(heartbeat.in_sync, ["a-2"]);
        let later = build_heartbeat(&config, "10.0.0.5:7911", at(1 << 30), &topics);
        assert_eq!(later.registration_digest, heartbeat.registration_digest);
        // A change of role, epoch or in-sync set registers again (the nameservers replicate it).
        for changed in [
            Standing {
                master: false,
                ..at(100)
            },
            Standing { epoch: 4, ..at(100) },
            Standing {
                in_sync: Vec::new(),
                ..at(100)
            },
        ] {
            assert_ne!(
                build_heartbeat(&config, "10.0.0.5:7911", changed, &topics).registration_digest,
                heartbeat.registration_digest
            );
        }
        let more = topic_list(vec![("alpha".into(), 8), ("mid".into(), 1), ("zeta".into(), 3)]);
        assert_ne!(
            build_heartbeat(&config, "10.0.0.5:7911", at(100), &more).registration_digest,
            heartbeat.registration_digest
        );
        // The member name defaults to the group name.
        let unnamed = BrokerConfig {
            member_name: None,
            ..config
        };
        assert_eq!(build_heartbeat(&unnamed, "x:1", at(0), &topics).name, "broker-a");

        let registration = build_registration(heartbeat.clone(), topics.clone());
        assert_eq!(registration.heartbeat.as_ref(), Some(&heartbeat));
        let decompressed = compress::decompress(&registration.topics_compressed, 1 << 20).unwrap();
        assert_eq!(TopicList::decode(decompressed.as_slice()).unwrap().topics, topics);
    }

    #[test]
    fn provisioning_creates_missing_topics_and_grows_smaller_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(
            dir.path(),
            crate::store::StoreConfig {
                segment_size: 1 << 20,
                ..Default::default()
            },
            "127.0.0.1:7911".parse().unwrap(),
            Arc::default(),
        )
        .unwrap();
        store.create_topic("orders", 2).unwrap();
        store.create_topic("big", 8).unwrap();
        let mut grants = metadata(1).topics;
        grants.push(TopicGrant {
            name: "big".into(),
            queues: 4,
            perm: perm::READ | perm::WRITE,
            ..TopicGrant::default()
        });
        assert!(provision_topics(&store, &grants));
        assert_eq!(
            store.topics(),
            [
                ("archive".to_owned(), 1),
                ("big".to_owned(), 8),
                ("orders".to_owned(), 4),
                ("sink".to_owned(), 1)
            ]
        );
        assert!(!provision_topics(&store, &grants), "a second pass changes nothing");
        store.shutdown();
    }
}

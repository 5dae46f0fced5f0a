//! [`NameserverService`]: everything a nameserver answers, whichever way the question arrives (the
//! framed protocol of [`crate::server`], or the HTTP API of [`crate::http`]).
//!
//! - Writes ([`WriteOp`]) go through the Raft leader. A follower forwards them once, over the
//!   framed protocol, to the leader it knows; a forwarded write that lands on a node that is not
//!   the leader either (an election in between) is refused as retriable rather than bounced on.
//!   The leader waits at most `write_timeout` for the entry to commit.
//! - Reads ([`Query`], routes, broker metadata) are answered from this node's applied state, which
//!   may lag the leader by a replication round trip.
//! - Broker heartbeats only touch this node's [`Liveness`]; registrations are writes. Both answer
//!   the group's epoch and master; a master's also says whether this node is the Raft leader,
//!   confirmed by a quorum, which is what renews the master's lease.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::compress::decompress;
use meridian_proto::messages::{
    BrokerHeartbeat, BrokerHeartbeatResponse, BrokerMetadata, BrokerRegistration, IdcLookupResponse, TopicList,
    TopicRoute, role,
};
use meridian_proto::transport::{ConnectionPool, TransportError};
use meridian_proto::validate::{validate_group, validate_topic};
use meridian_proto::{ErrorCode, RequestCode};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, NameserverError};
use crate::liveness::Liveness;
use crate::metrics::NameserverMetrics;
use crate::raft::NameserverRaft;
use crate::routes;
use crate::state::{
    BrokerRegistration as Registration, BrokerRole, Command, Drill, IdcRule, MetadataState, Response, SdkPolicy,
    validate_broker_identity, validate_broker_topics,
};
use crate::types::{Node, NodeId};

/// The read side of the admin contract: questions and the views that answer them.
pub use meridian_proto::admin::read::{
    BrokerGroupView, BrokerMemberView, ClusterNode, ClusterView, GroupDetail, Query, Services, TopicDetail,
};

/// A change, as a client or another nameserver sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum WriteOp {
    /// A change to the metadata.
    Command {
        /// The change.
        command: Command,
    },
    /// Adds a nameserver to the cluster: as a learner until it caught up, then as a voter.
    AddNode {
        /// Its id.
        id: NodeId,
        /// Its addresses and IDC.
        node: Node,
    },
    /// Removes a nameserver from the cluster.
    RemoveNode {
        /// Its id.
        id: NodeId,
    },
}

/// The body of a [`RequestCode::NameserverWrite`] request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The change.
    pub op: WriteOp,
    /// Set by a nameserver forwarding the write to the leader, so it is forwarded at most once.
    #[serde(default)]
    pub forwarded: bool,
}

/// Settings of the service around its Raft node.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Longest a write waits to commit (membership changes wait [`MEMBERSHIP_TIMEOUT`]).
    pub write_timeout: Duration,
    /// Largest registration topic list, uncompressed.
    pub max_registration_bytes: usize,
    /// Data center of clients no IDC rule matches (empty: none).
    pub client_idc: String,
    /// The services clients are told about ([`Query::Services`]).
    pub services: Services,
    /// How long none of a data center's brokers must be heard before it is declared lost.
    pub idc_lost_after: Duration,
    /// Seals users' RocketMQ secrets before they enter the log; `None` without a node secret
    /// (then RocketMQ access cannot be given).
    pub access_key_sealer: Option<Arc<meridian_proto::remoting::acl::AccessKeySealer>>,
}

/// Longest a membership change may take: adding a node waits until it has caught up.
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(120);

/// What a nameserver answers.
pub struct NameserverService {
    raft: NameserverRaft,
    liveness: Liveness,
    pool: ConnectionPool,
    settings: ServiceSettings,
    metrics: Arc<NameserverMetrics>,
    /// Groups the failover controller cannot give a master, with why (set on the Raft leader
    /// each tick; see [`BrokerGroupView::read_only`]).
    read_only: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl NameserverService {
    /// A service around `raft`, forwarding writes over `pool`.
    pub fn new(
        raft: NameserverRaft,
        liveness: Liveness,
        pool: ConnectionPool,
        settings: ServiceSettings,
        metrics: Arc<NameserverMetrics>,
    ) -> NameserverService {
        NameserverService {
            raft,
            liveness,
            pool,
            settings,
            metrics,
            read_only: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// Why group `group` takes no writes, as this node's failover controller last judged it.
    pub fn read_only(&self, group: &str) -> Option<String> {
        self.read_only
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(group)
            .cloned()
    }

    /// Every group without a master, with why (the controller's last verdicts).
    pub fn read_only_groups(&self) -> std::collections::BTreeMap<String, String> {
        self.read_only
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces what [`NameserverService::read_only`] answers (the controller, every tick).
    pub fn set_read_only(&self, groups: std::collections::BTreeMap<String, String>) {
        *self.read_only.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = groups;
    }

    /// The Raft node.
    pub fn raft(&self) -> &NameserverRaft {
        &self.raft
    }

    /// The metrics.
    pub fn metrics(&self) -> &NameserverMetrics {
        &self.metrics
    }

    /// Applies `request` through the leader: here when this node leads, else forwarded to it once.
    pub async fn write(&self, mut request: WriteRequest) -> Result<Response, ApiError> {
        // An admin request over HTTP carries where it came from into the audit log.
        if let Some(origin) = crate::origin::current_origin() {
            attribute(&mut request.op, origin);
        }
        seal_rocketmq_secret(&mut request.op, self.settings.access_key_sealer.as_deref())?;
        match self.write_here(request.op.clone()).await {
            Err(NameserverError::ForwardToLeader {
                leader_id: Some(leader_id),
                leader: Some(leader),
                ..
            }) if !request.forwarded && leader_id != self.raft.node_id() => {
                self.forward(leader_id, &leader, request.op).await
            }
            result => result.map_err(ApiError::from),
        }
    }

    async fn write_here(&self, op: WriteOp) -> Result<Response, NameserverError> {
        let (timeout, what) = match &op {
            WriteOp::Command { .. } => (self.settings.write_timeout, "the write"),
            WriteOp::AddNode { .. } | WriteOp::RemoveNode { .. } => (MEMBERSHIP_TIMEOUT, "the membership change"),
        };
        let work = async {
            match op {
                WriteOp::Command { command } => self.raft.write(command).await,
                WriteOp::AddNode { id, node } => self.raft.add_node(id, node).await.map(|()| Response::Done),
                WriteOp::RemoveNode { id } => self.raft.remove_node(id).await.map(|()| Response::Done),
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(NameserverError::Stalled { what, after: timeout }))
    }

    async fn forward(&self, leader_id: NodeId, leader: &Node, op: WriteOp) -> Result<Response, ApiError> {
        self.metrics.forwarded_writes.inc();
        let timeout = match op {
            WriteOp::Command { .. } => self.settings.write_timeout,
            _ => MEMBERSHIP_TIMEOUT,
        } + Duration::from_secs(1);
        let body = serde_json::to_vec(&WriteRequest { op, forwarded: true }).expect("writes encode as JSON");
        let answer = self
            .pool
            .request(&leader.addr, RequestCode::NameserverWrite, Bytes::from(body), timeout)
            .await
            .map_err(|error| match error {
                TransportError::Remote { code, message, .. } => ApiError::new(code, message),
                other => ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "nameserver node {} forwards writes to the leader, node {leader_id} at {}, which failed: {other}",
                        self.raft.node_id(),
                        leader.addr
                    ),
                ),
            })?;
        serde_json::from_slice(&answer.body).map_err(|error| {
            ApiError::new(
                ErrorCode::Internal,
                format!("the leader's answer does not decode: {error}; are both nameservers the same version?"),
            )
        })
    }

    /// Shortcut for [`NameserverService::write`] of one command.
    pub async fn command(&self, command: Command) -> Result<Response, ApiError> {
        self.write(WriteRequest {
            op: WriteOp::Command { command },
            forwarded: false,
        })
        .await
    }

    /// The route of `topic`, from this node's state and liveness.
    /// Refused with `Unavailable` (clients ask the next nameserver) while this node is cut off
    /// from the Raft majority ([`NameserverService::cut_off`]).
    pub fn route(&self, topic: &str) -> Result<TopicRoute, ApiError> {
        self.metrics.route_lookups.inc();
        if let Some(why) = self.cut_off() {
            return Err(ApiError::new(ErrorCode::Unavailable, why));
        }
        self.raft.read_state(|state| {
            self.liveness
                .with(|liveness| routes::topic_route(state, liveness, topic))
        })
    }

    /// Why this node's view may be stale, while it has been out of touch with the Raft majority
    /// for longer than the broker timeout: by then the majority may have failed over groups this
    /// node still routes to (a partitioned data center's nameserver). `None` otherwise.
    pub fn cut_off(&self) -> Option<String> {
        let silent = self.raft.out_of_touch_for()?;
        let timeout = self.liveness.timeout();
        (silent > timeout).then(|| {
            format!(
                "nameserver node {} has been out of touch with the Raft majority for {} ms (longer than the broker timeout, {} ms): it may be cut off from it and its routes stale; ask another nameserver",
                self.raft.node_id(),
                silent.as_millis(),
                timeout.as_millis()
            )
        })
    }

    /// A broker's heartbeat: marks it alive if it is registered, says whether the registration
    /// this node holds is the one the broker describes, and who is master at which epoch.
    ///
    /// A heartbeat from a broker that claims to be master, or that the group's state names master,
    /// waits while this node, if it leads, confirms its leadership with a quorum (one round trip
    /// to the followers): only such an answer renews the master's lease. Any other slave's
    /// heartbeat never waits.
    pub async fn heartbeat(&self, heartbeat: &BrokerHeartbeat) -> Result<BrokerHeartbeatResponse, ApiError> {
        validate_broker(heartbeat)?;
        self.metrics.heartbeats.inc();
        let (known, registered) = self.raft.read_state(|state| {
            let member = state
                .broker_groups()
                .get(&heartbeat.group)
                .and_then(|group| group.members.get(&heartbeat.name));
            (
                member.is_some(),
                member.is_some_and(|member| member.registration_digest == heartbeat.registration_digest),
            )
        });
        // An unknown broker changes nothing until it registers.
        if known {
            self.liveness
                .touch(&heartbeat.group, &heartbeat.name, heartbeat.max_offset);
            if heartbeat.role == role::MASTER {
                self.liveness.report_master(
                    &heartbeat.group,
                    heartbeat.confirmed_offset,
                    &heartbeat.degraded,
                    heartbeat.left_out.clone(),
                );
            }
        }
        Ok(self
            .heartbeat_answer(
                &heartbeat.group,
                &heartbeat.name,
                heartbeat.role == role::MASTER,
                registered,
            )
            .await)
    }

    /// A broker's full registration: decompressed, checked, committed through the leader.
    pub async fn register(&self, registration: BrokerRegistration) -> Result<BrokerHeartbeatResponse, ApiError> {
        let mut heartbeat = registration.heartbeat.ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                "broker registration has no heartbeat (who the broker is)",
            )
        })?;
        validate_broker(&heartbeat)?;
        let raw =
            decompress(&registration.topics_compressed, self.settings.max_registration_bytes).map_err(|error| {
                ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "topic list of broker {:?} of group {:?}: {error}",
                        heartbeat.name, heartbeat.group
                    ),
                )
            })?;
        let list = TopicList::decode(raw.as_slice()).map_err(|error| {
            ApiError::new(
                ErrorCode::MalformedFrame,
                format!("topic list of broker {:?} does not decode: {error}", heartbeat.name),
            )
        })?;
        let topics: std::collections::BTreeMap<String, u32> = list
            .topics
            .into_iter()
            .map(|topic| (topic.name, topic.queues))
            .collect();
        // Refused here, before it reaches the Raft log.
        validate_broker_topics(&topics)?;
        self.metrics.registrations.inc();
        let group = heartbeat.group.clone();
        let name = heartbeat.name.clone();
        let claims_master = heartbeat.role == role::MASTER;
        let (confirmed_offset, degraded, left_out) = (
            heartbeat.confirmed_offset,
            heartbeat.degraded.clone(),
            std::mem::take(&mut heartbeat.left_out),
        );
        // An unknown spelling (a newer broker's policy) counts as unknown: failover then relies on
        // the confirmed offset alone, as it did before brokers reported their policy.
        let ack_policy = heartbeat.ack_policy.parse().ok();
        self.command(Command::RegisterBroker {
            group: heartbeat.group,
            member: Registration {
                name: heartbeat.name,
                addr: heartbeat.addr,
                idc: heartbeat.idc,
                role: if claims_master {
                    BrokerRole::Master
                } else {
                    BrokerRole::Slave
                },
                epoch: heartbeat.epoch,
                max_offset: heartbeat.max_offset,
                registration_digest: heartbeat.registration_digest,
                in_sync: heartbeat.in_sync,
                ack_policy,
                ack_replicas: heartbeat.ack_replicas,
            },
            topics,
        })
        .await?;
        self.liveness.touch(&group, &name, heartbeat.max_offset);
        if claims_master {
            self.liveness
                .report_master(&group, confirmed_offset, &degraded, left_out);
        }
        Ok(self.heartbeat_answer(&group, &name, claims_master, true).await)
    }

    /// The answer to a heartbeat or a registration from broker `name` of `group`. When the broker
    /// says it is master (`claims_master`), or the state names it master (it was just elected and
    /// does not know yet: confirming now lets it take writes one heartbeat sooner), the answer
    /// says whether this node leads, confirmed by a quorum now. The state is read after that
    /// confirmation, so a confirmed answer names the master as of the confirmation.
    async fn heartbeat_answer(
        &self,
        group: &str,
        name: &str,
        claims_master: bool,
        registered: bool,
    ) -> BrokerHeartbeatResponse {
        let lease = self.lease();
        let named_master = || {
            self.raft.read_state(|state| {
                state
                    .broker_groups()
                    .get(group)
                    .and_then(|group| group.master.as_deref())
                    == Some(name)
            })
        };
        let leader = (claims_master || named_master()) && self.confirm_leadership(lease).await;
        let (metadata_version, group_epoch, master, master_addr, evacuated_idcs, lost_members, group_members) =
            self.raft.read_state(|state| {
                let group = state.broker_groups().get(group);
                let master = group.and_then(|group| group.master());
                let continuity = state.continuity();
                let lost_members = group
                    .map(|group| {
                        group
                            .members
                            .values()
                            .filter(|member| continuity.is_lost(&member.idc))
                            .map(|member| member.name.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    state.metadata_version(),
                    group.map_or(0, |group| group.epoch),
                    master.map(|master| master.name.clone()).unwrap_or_default(),
                    master.map(|master| master.addr.clone()).unwrap_or_default(),
                    state.evacuated_idcs(),
                    lost_members,
                    group
                        .map(|group| group.members.keys().cloned().collect())
                        .unwrap_or_default(),
                )
            });
        BrokerHeartbeatResponse {
            registered,
            metadata_version,
            group_epoch,
            master,
            master_addr,
            leader,
            lease_ms: lease.as_millis() as u64,
            evacuated_idcs,
            lost_members,
            group_members,
        }
    }

    /// Whether this node is the Raft leader, confirmed by a quorum within `timeout` (a read index
    /// round: a leader cut off from its followers cannot confirm, so it cannot renew a lease).
    async fn confirm_leadership(&self, timeout: Duration) -> bool {
        if self.raft.current_leader() != Some(self.raft.node_id()) {
            return false;
        }
        matches!(
            tokio::time::timeout(timeout, self.raft.raft().ensure_linearizable()).await,
            Ok(Ok(_))
        )
    }

    /// How long a master may accept writes after sending a heartbeat that a confirmed leader
    /// answered: half the broker timeout, so its lease has lapsed before any leader may declare it
    /// dead (a leader waits a whole broker timeout after the last heartbeat it saw, and a new
    /// leader a whole broker timeout after it was elected).
    pub fn lease(&self) -> Duration {
        self.liveness.timeout() / 2
    }

    /// How long none of a data center's brokers must be heard before it is declared lost.
    pub fn idc_lost_after(&self) -> Duration {
        self.settings.idc_lost_after
    }

    /// Brokers' liveness as this node sees it.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// A switchover of broker group `group` to its member `to`: commits
    /// [`Command::FenceMaster`]; the failover controller elects `to` at the next epoch once the
    /// fenced master's lease has surely lapsed (within the broker timeout).
    pub async fn switchover(
        &self,
        group: &str,
        to: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<Response, ApiError> {
        validate_group(group)?;
        validate_group(to)?;
        self.command(Command::FenceMaster {
            group: group.to_owned(),
            preferred: to.to_owned(),
            by: by.to_owned(),
            reason,
        })
        .await
    }

    /// Commits `command` on this node only if it leads; never forwarded. For decisions only the
    /// leader may take (the failover controller's): a node that lost the lead must not have its
    /// decision applied by the next leader, which decides from its own view.
    pub async fn write_as_leader(&self, command: Command) -> Result<Response, NameserverError> {
        self.write_here(WriteOp::Command { command }).await
    }

    /// What broker group `group` may serve.
    pub fn broker_metadata(&self, group: &str) -> Result<BrokerMetadata, ApiError> {
        validate_group(group)?;
        Ok(self.raft.read_state(|state| routes::broker_metadata(state, group)))
    }

    /// Answers `query` from this node's state, as JSON.
    pub fn read(&self, query: &Query) -> Result<serde_json::Value, ApiError> {
        let value = match query {
            Query::Topic { name } => to_json(&self.raft.read_state(|state| topic_detail(state, name))?),
            Query::Topics { status } => to_json(&self.raft.read_state(|state| {
                state
                    .topics()
                    .values()
                    .filter(|topic| status.is_none_or(|status| topic.approval.status == status))
                    .cloned()
                    .collect::<Vec<_>>()
            })),
            Query::Group { name } => to_json(&self.raft.read_state(|state| group_detail(state, name))?),
            Query::Groups { status } => to_json(&self.raft.read_state(|state| {
                state
                    .consumer_groups()
                    .values()
                    .filter(|group| status.is_none_or(|status| group.approval.status == status))
                    .cloned()
                    .collect::<Vec<_>>()
            })),
            Query::Brokers => to_json(&self.brokers()),
            Query::Cluster => to_json(&self.cluster()),
            Query::IdcRules => to_json(&self.raft.read_state(|state| state.idc_rules().to_vec())),
            Query::SdkPolicy => to_json(&self.raft.read_state(|state| state.sdk_policy().clone())),
            Query::Drill => to_json(&self.drill()),
            Query::Services => to_json(&self.settings.services),
            Query::Users => to_json(&self.raft.read_state(|state| crate::state::users::views(state.users()))),
            Query::Acl => to_json(&self.raft.read_state(|state| state.acl())),
            Query::Audit { after, limit } => to_json(
                &self
                    .raft
                    .read_state(|state| state.audit().since(*after, (*limit).max(1))),
            ),
        };
        Ok(value)
    }

    /// Broker groups with their members and liveness.
    pub fn brokers(&self) -> Vec<BrokerGroupView> {
        self.raft.read_state(|state| {
            self.liveness.with(|liveness| {
                state
                    .broker_groups()
                    .values()
                    .map(|group| BrokerGroupView {
                        confirmed_offset: liveness.confirmed_offset(&group.name),
                        degraded: liveness.report(&group.name).and_then(|report| report.degraded.clone()),
                        read_only: self.read_only(&group.name),
                        name: group.name.clone(),
                        epoch: group.epoch,
                        master: group.master().map(|master| master.name.clone()),
                        in_sync: group.in_sync.clone(),
                        preferred: group.preferred.clone(),
                        history: group.history.clone(),
                        members: group
                            .members
                            .values()
                            .map(|member| {
                                let seen = liveness.get(&group.name, &member.name);
                                BrokerMemberView {
                                    name: member.name.clone(),
                                    addr: member.addr.clone(),
                                    idc: member.idc.clone(),
                                    role: if group.master.as_deref() == Some(member.name.as_str()) {
                                        BrokerRole::Master
                                    } else {
                                        BrokerRole::Slave
                                    },
                                    epoch: member.epoch,
                                    registered_at_ms: member.last_heartbeat_ms,
                                    topics: member.topics.len(),
                                    alive: seen.is_some_and(|(_, alive)| alive),
                                    last_heartbeat_ago_ms: seen.map(|(seen, _)| seen.at.elapsed().as_millis() as u64),
                                    max_offset: seen.map_or(member.max_offset, |(seen, _)| seen.max_offset),
                                }
                            })
                            .collect(),
                    })
                    .collect()
            })
        })
    }

    /// The Raft cluster as this node sees it.
    pub fn cluster(&self) -> ClusterView {
        let metrics = self.raft.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        ClusterView {
            node_id: metrics.id,
            role: format!("{:?}", metrics.state),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|log_id| log_id.index),
            snapshot: metrics.snapshot.map(|log_id| log_id.index),
            purged: metrics.purged.map(|log_id| log_id.index),
            nodes: membership
                .nodes()
                .map(|(id, node)| ClusterNode {
                    id: *id,
                    addr: node.addr.clone(),
                    http_addr: node.http_addr.clone(),
                    idc: node.idc.clone(),
                    voter: voters.contains(id),
                })
                .collect(),
            lost_idcs: self.raft.read_state(|state| state.continuity().lost.clone()),
        }
    }

    /// The IDC map.
    pub fn idc_rules(&self) -> Vec<IdcRule> {
        self.raft.read_state(|state| state.idc_rules().to_vec())
    }

    /// Failover drills: what is evacuated now and every step taken.
    pub fn drill(&self) -> Drill {
        self.raft.read_state(|state| state.drill().clone())
    }

    /// Which data center `ip` is in by the IDC map, and every data center the cluster knows (its
    /// brokers', its nameservers' and its IDC rules').
    pub fn idc_lookup(&self, ip: &str) -> Result<IdcLookupResponse, ApiError> {
        let address: std::net::IpAddr = ip.trim().parse().map_err(|error| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("IDC lookup of {ip:?}: not an IP address ({error}); give an IPv4 or IPv6 address"),
            )
        })?;
        let nodes: Vec<String> = self
            .raft
            .metrics()
            .membership_config
            .membership()
            .nodes()
            .map(|(_, node)| node.idc.clone())
            .collect();
        Ok(self.raft.read_state(|state| {
            let rule = state.idc_rule_for(address);
            let mut known = state.known_idcs();
            known.extend(nodes.into_iter().filter(|idc| !idc.is_empty()));
            // No rule: the `client_idc` setting, if any (one data center has no choice to make).
            let (idc, cidr) = match rule {
                Some(rule) => (rule.idc.clone(), rule.cidr()),
                None if !self.settings.client_idc.is_empty() => {
                    (self.settings.client_idc.clone(), "client_idc setting".to_owned())
                }
                None => (String::new(), String::new()),
            };
            if !idc.is_empty() {
                known.insert(idc.clone());
            }
            IdcLookupResponse {
                idc,
                cidr,
                known_idcs: known.into_iter().collect(),
            }
        }))
    }

    /// The SDK policy.
    pub fn sdk_policy(&self) -> SdkPolicy {
        self.raft.read_state(|state| state.sdk_policy().clone())
    }

    /// Stops the Raft node and closes connections to peers.
    pub async fn shutdown(&self) -> Result<(), NameserverError> {
        let result = self.raft.shutdown().await;
        self.pool.shutdown().await;
        result
    }
}

fn to_json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("metadata encodes as JSON")
}

/// A topic and its history, or what to do when there is none.
pub fn topic_detail(state: &MetadataState, name: &str) -> Result<TopicDetail, ApiError> {
    validate_topic(name)?;
    let topic = state.topic(name).cloned();
    let history = state.topic_history(name).to_vec();
    if topic.is_none() && history.is_empty() {
        return Err(ApiError::new(
            ErrorCode::TopicNotFound,
            format!(
                "topic {name:?} does not exist and never did: request it with `meridian topic request {name} --owner TEAM --queues N`"
            ),
        ));
    }
    Ok(TopicDetail { topic, history })
}

/// A consumer group and its history, or what to do when there is none.
pub fn group_detail(state: &MetadataState, name: &str) -> Result<GroupDetail, ApiError> {
    validate_group(name)?;
    let group = state.consumer_group(name).cloned();
    let history = state.group_history(name).to_vec();
    if group.is_none() && history.is_empty() {
        return Err(ApiError::new(
            ErrorCode::GroupNotFound,
            format!(
                "consumer group {name:?} does not exist and never did: request it with `meridian group request {name} --owner TEAM --topics TOPIC`"
            ),
        ));
    }
    Ok(GroupDetail { group, history })
}

fn validate_broker(heartbeat: &BrokerHeartbeat) -> Result<(), ApiError> {
    validate_broker_identity(&heartbeat.group, &heartbeat.name, &heartbeat.addr)?;
    if heartbeat.role != role::MASTER && heartbeat.role != role::SLAVE {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("broker role {} is unknown: 0 (master) or 1 (slave)", heartbeat.role),
        ));
    }
    Ok(())
}

/// Seals a user's RocketMQ secret (`RocketmqSecret::Plain`, as an admin client sends it) in a
/// create or rotate, so only the sealed form is forwarded and enters the Raft log.
pub fn seal_rocketmq_secret(
    op: &mut WriteOp,
    sealer: Option<&meridian_proto::remoting::acl::AccessKeySealer>,
) -> Result<(), ApiError> {
    use meridian_proto::admin::RocketmqSecret;
    let WriteOp::Command { command } = op else {
        return Ok(());
    };
    let mut command = command;
    while let Command::Audited { command: inner, .. } = command {
        command = inner;
    }
    let (Command::CreateUser { name, rocketmq, .. } | Command::RotateUser { name, rocketmq, .. }) = command else {
        return Ok(());
    };
    let Some(RocketmqSecret::Plain { secret }) = rocketmq.as_ref() else {
        return Ok(());
    };
    let Some(sealer) = sealer else {
        return Err(ApiError::new(
            ErrorCode::FailedPrecondition,
            format!(
                "user {name:?} cannot get RocketMQ access: the nameservers have no node secret to seal its secret with; turn on [auth] with node_secret_file on every node (or `meridian dev --auth`)"
            ),
        ));
    };
    let sealed = sealer.seal(name, secret);
    *rocketmq = Some(RocketmqSecret::Sealed { sealed });
    Ok(())
}

/// Records where a write came from for the audit log: wraps its command in
/// [`Command::Audited`] with `origin`, replacing any origin the client claimed (only nodes
/// forwarding a write may pass one on, and they do not come through here).
pub fn attribute(op: &mut WriteOp, origin: crate::state::Origin) {
    if let WriteOp::Command { command } = op {
        let inner = match std::mem::replace(
            command,
            Command::DeleteUser {
                name: String::new(),
                by: String::new(),
            },
        ) {
            Command::Audited { command, .. } => *command,
            other => other,
        };
        *command = Command::Audited {
            origin,
            command: Box::new(inner),
        };
    }
}

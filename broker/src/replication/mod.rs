//! Broker groups: one master, its slaves, and when a write counts.
//!
//! A governed broker takes its role from its nameservers: the controller in the nameserver Raft
//! leader elects one member of each group master at an epoch, and every heartbeat answer names
//! the group's epoch and master ([`Replication::on_nameserver_answer`]). Brokers obey the highest
//! epoch they have seen.
//!
//! - **Master**: takes writes only while it holds a lease, renewed by every heartbeat answer in
//!   which the Raft leader confirmed it ([`Replication::check_writable`]). The lease is shorter than
//!   the nameservers' broker timeout, so a master cut off from the leader stops writing before the
//!   controller may promote another. Slaves fetch its commitlog as raw byte ranges
//!   ([`Replication::serve_fetch`]); each fetch also reports what the slave holds, and a send is
//!   acknowledged once its group's [`AckPolicy`] is met ([`acks`]).
//! - **Slave**: runs one fetch loop against its master ([`follower`]), appends what it receives,
//!   and serves pulls. A slave whose log holds a tail its master's lineage lacks (it was master in
//!   an older epoch) truncates it first, found through the epoch list in `meta/epochs.json`.
//! - A standalone broker (no nameservers) is always the master of a group of one.
//!
//! Consumers see only confirmed records (see [`crate::store`]). On a master whose policy needs
//! slaves, a record is confirmed once the [`AckTracker`] acknowledges it; every fetch answer
//! carries the master's confirmed offset, and a slave serves nothing past it.

mod acks;
mod follower;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use meridian_proto::messages::{BrokerHeartbeatResponse, ReplicaFetch, ReplicaFetchResponse};
use meridian_proto::validate::Limits;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::BrokerConfig;
pub use crate::config::ReplicationConfig;
use crate::error::{BrokerError, Result};
use crate::metrics::BrokerMetrics;
use crate::store::{FlushMode, MessageStore};
pub use acks::{AckPolicy, AckTracker, OnIdcLost};
use follower::{Follower, Upstream};

/// How often a slave's fetch waiting at the log's end looks whether the master's confirmed offset
/// passed what the slave knows (see [`Replication::serve_fetch`]).
const CONFIRM_RECHECK: Duration = Duration::from_millis(10);

/// What this broker is in its group right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The master at this epoch.
    Master {
        /// The epoch.
        epoch: u64,
    },
    /// A slave following `master` at this epoch.
    Slave {
        /// The epoch.
        epoch: u64,
        /// The master's name.
        master: String,
        /// The master's address.
        master_addr: String,
    },
    /// No role yet (before the first nameserver answer), or the group has no master.
    Waiting {
        /// Highest epoch seen.
        epoch: u64,
    },
}

impl Role {
    /// The epoch the role belongs to.
    pub fn epoch(&self) -> u64 {
        match self {
            Role::Master { epoch } | Role::Slave { epoch, .. } | Role::Waiting { epoch } => *epoch,
        }
    }

    /// `"master"`, `"slave"` or `"waiting"`.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Master { .. } => "master",
            Role::Slave { .. } => "slave",
            Role::Waiting { .. } => "waiting",
        }
    }
}

/// A broker's place in its group: role, lease, the slaves it acknowledges with, and the fetch
/// loop it follows its master with.
pub struct Replication {
    config: ReplicationConfig,
    group: String,
    name: String,
    idc: String,
    store: Arc<MessageStore>,
    metrics: Arc<BrokerMetrics>,
    limits: Limits,
    nameservers: Vec<String>,
    /// Standalone brokers are masters of a group of one forever, with no lease.
    governed: bool,
    role: Mutex<Role>,
    /// The lease ends at this many ns after `clock` (0: no lease).
    lease_until_ns: AtomicU64,
    clock: Instant,
    /// Woken when records are appended, for fetches waiting at the log's end.
    appended: Notify,
    acks: AckTracker,
    follower: Mutex<Option<Follower>>,
    /// Serializes role changes: every nameserver's heartbeat loop may bring one.
    transition: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    /// What this broker logs in to its master with (`[auth]`).
    node_credentials: Option<meridian_proto::auth::Credentials>,
    /// TLS of the fetches a slave sends its master (`[tls] ca_file`).
    tls_client: Option<Arc<meridian_proto::tls::TlsClient>>,
    source_ip: Option<std::net::IpAddr>,
    /// With `[auth]` on, fetches count only from the group's registered members, as the
    /// nameservers last named them.
    members_only: bool,
    members: Mutex<Vec<String>>,
}

impl Replication {
    /// A broker's replication state at start: a standalone broker is master at once; a governed one
    /// waits for its nameservers.
    pub fn new(
        config: &BrokerConfig,
        store: Arc<MessageStore>,
        metrics: Arc<BrokerMetrics>,
        shutdown: CancellationToken,
    ) -> Arc<Replication> {
        let governed = config.is_governed();
        let epoch = store.seen_epoch();
        let role = if governed {
            Role::Waiting { epoch }
        } else {
            Role::Master { epoch }
        };
        let replication = &config.replication;
        let sync_flush = config.store.flush_mode == FlushMode::Sync;
        Arc::new(Replication {
            acks: AckTracker::with_on_idc_lost(
                replication.ack_policy,
                replication.replicas,
                config.idc.clone(),
                sync_flush,
                replication.on_idc_lost,
            ),
            config: replication.clone(),
            group: config.broker_name.clone(),
            name: config.member_name().to_owned(),
            idc: config.idc.clone(),
            store,
            metrics,
            limits: config.limits.limits(),
            nameservers: config.nameservers.clone(),
            governed,
            role: Mutex::new(role),
            lease_until_ns: AtomicU64::new(0),
            clock: Instant::now(),
            appended: Notify::new(),
            follower: Mutex::new(None),
            transition: tokio::sync::Mutex::new(()),
            shutdown,
            node_credentials: config.auth.node_credentials.clone(),
            tls_client: config.tls_client.clone(),
            source_ip: meridian_proto::transport::source_ip_for(config.listen.ip()),
            members_only: config.auth.enabled,
            members: Mutex::new(Vec::new()),
        })
    }

    fn role_lock(&self) -> MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role_lock().clone()
    }

    /// The settings.
    pub fn config(&self) -> &ReplicationConfig {
        &self.config
    }

    fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// Whether the lease is held now (always, on a standalone broker).
    pub fn lease_held(&self) -> bool {
        !self.governed || self.now_ns() < self.lease_until_ns.load(Ordering::Acquire)
    }

    /// How long the lease still runs (`None` on a standalone broker, zero when lapsed).
    pub fn lease_remaining(&self) -> Option<Duration> {
        self.governed.then(|| {
            Duration::from_nanos(
                self.lease_until_ns
                    .load(Ordering::Acquire)
                    .saturating_sub(self.now_ns()),
            )
        })
    }

    /// Whether this broker may take a write now: it is the master and holds its lease. The error
    /// names the master to send to instead when it knows one.
    pub fn check_writable(&self) -> Result<()> {
        let role = self.role_lock().clone();
        match role {
            Role::Master { .. } if self.lease_held() => Ok(()),
            Role::Master { epoch } => Err(BrokerError::NotMaster(format!(
                "broker {} was master of group {:?} at epoch {epoch} but cannot renew its lease with the nameserver leader, so it takes no writes (another member may be promoted); the producer refreshes its route and retries",
                self.name, self.group
            ))),
            Role::Slave {
                epoch,
                master,
                master_addr,
            } => Err(BrokerError::NotMaster(format!(
                "broker {} is a slave of group {:?} at epoch {epoch}; send to its master {master} ({master_addr}); the producer refreshes its route and retries",
                self.name, self.group
            ))),
            Role::Waiting { epoch } => Err(BrokerError::NotMaster(format!(
                "broker {} of group {:?} is not master at epoch {epoch}: its nameservers ({}) have not named it master (they elect one within their broker timeout); retry shortly, and check that the nameservers are running",
                self.name,
                self.group,
                self.nameservers.join(", ")
            ))),
        }
    }

    /// Makes this broker master at its seen epoch with a lease for an hour (unit tests of handlers).
    #[cfg(test)]
    pub(crate) fn assume_master_for_tests(&self) {
        *self.role_lock() = Role::Master {
            epoch: self.store.seen_epoch(),
        };
        let hour = (self.clock.elapsed() + Duration::from_secs(3600)).as_nanos() as u64;
        self.lease_until_ns.store(hour, Ordering::Release);
    }

    /// Whether records are confirmed by the group rather than by the broker alone: a governed
    /// broker whose ack policy needs more than the master (see
    /// [`crate::store::StoreOptions::replicated`]).
    pub fn confirms_by_group(config: &BrokerConfig) -> bool {
        let replication = &config.replication;
        config.is_governed()
            && (replication.ack_policy.needed(replication.replicas.max(1) as usize) > 1
                || replication.ack_policy == AckPolicy::IdcSafe)
    }

    /// Whether sends wait for slaves (the ack policy needs more than the master).
    pub fn needs_slaves(&self) -> bool {
        self.acks.needs_slaves()
    }

    /// Tells fetches waiting at the log's end that records were appended.
    pub fn notify_appended(&self) {
        self.appended.notify_waiters();
    }

    /// Waits until the write ending at `end_offset` meets the group's ack policy, then checks the
    /// lease once more: a write is acknowledged only while its master still holds the lease.
    pub async fn wait_acked(&self, end_offset: u64) -> Result<()> {
        if !self.acks.needs_slaves() {
            return Ok(());
        }
        let timeout = Duration::from_millis(self.config.ack_timeout_ms);
        match tokio::time::timeout(timeout, self.acks.wait(end_offset)).await {
            Ok(Ok(())) => {}
            // The tracker gave the send up: the master stepped down or is stopping. Either way the
            // send was not replicated as its policy needs, so it is never acknowledged.
            Ok(Err(())) => return Err(self.check_writable().err().unwrap_or(BrokerError::ShuttingDown)),
            Err(_) => {
                self.metrics.replication_timeouts.inc();
                // Sends acknowledged by the master alone (degraded) never pass through a fetch.
                return Err(BrokerError::ReplicationTimeout {
                    policy: self.config.ack_policy.as_str(),
                    shortfall: self.acks.shortfall(end_offset),
                    timeout_ms: self.config.ack_timeout_ms,
                });
            }
        }
        self.check_writable()?;
        // Acknowledged (and still master): confirmed. Under the full policy a fetch already
        // raised the limit this far; a master acknowledging alone in degraded mode has no fetch
        // to do it.
        self.store.raise_replication_limit(end_offset);
        Ok(())
    }

    /// Applies the lost members a nameserver's answer names. Only an answer from the confirmed
    /// Raft leader counts, and only on a master: that is the answer that lets it take writes, so
    /// it never acknowledges by an older word than the one its lease rests on.
    pub fn on_lost_members(&self, answer: &BrokerHeartbeatResponse) {
        if !answer.leader || answer.master != self.name {
            return;
        }
        let confirmed = self.store.confirmed_offset();
        if self.acks.set_lost_members(&self.name, &answer.lost_members, confirmed) {
            match self.acks.degraded() {
                Some(why) => {
                    warn!(event = "ack_degraded", group = %self.group, lost_members = ?answer.lost_members, why, "acknowledging in degraded mode: replicas in a lost data center are left out");
                }
                None if answer.lost_members.is_empty() => {
                    info!(group = %self.group, confirmed, "lost data center cleared: full ack policy once its replicas hold the confirmed offset");
                }
                None => {}
            }
        }
        self.metrics.ack_degraded.set(i64::from(self.acks.degraded().is_some()));
    }

    /// Why this master acknowledges with fewer replicas than its ack policy names, if it does
    /// (see [`ReplicationConfig::on_idc_lost`]).
    pub fn degraded(&self) -> Option<String> {
        if !matches!(self.role(), Role::Master { .. }) {
            return None;
        }
        self.acks.degraded()
    }

    /// The members this master leaves out of its ack policy, sorted (empty unless a degraded
    /// master).
    pub fn left_out(&self) -> Vec<String> {
        if !matches!(self.role(), Role::Master { .. }) {
            return Vec::new();
        }
        self.acks.left_out()
    }

    /// Names of the slaves in sync now, sorted (empty unless master).
    pub fn in_sync(&self) -> Vec<String> {
        if !matches!(self.role(), Role::Master { .. }) {
            return Vec::new();
        }
        self.acks.in_sync(
            self.store.committed_offset(),
            self.config.in_sync_lag_bytes,
            Duration::from_millis(self.config.in_sync_timeout_ms),
        )
    }

    /// What the master knows of each slave, for status pages.
    pub fn slaves(&self) -> Vec<acks::SlaveProgress> {
        self.acks.slaves()
    }

    /// Applies a nameserver's answer to a heartbeat sent at `sent_at`: adopts a newer epoch, takes
    /// or gives up the master role, follows the named master, and renews the lease when the Raft
    /// leader confirmed this broker as master.
    pub async fn on_nameserver_answer(self: &Arc<Self>, sent_at: Instant, answer: &BrokerHeartbeatResponse) {
        let _transition = self.transition.lock().await;
        let epoch = answer.group_epoch;
        let seen = self.store.seen_epoch();
        if epoch < seen {
            return; // A lagging nameserver.
        }
        if epoch > seen
            && let Err(error) = self.store.observe_epoch(epoch)
        {
            warn!(%error, epoch, "cannot record the group's new epoch; ignoring the answer");
            return;
        }
        if !answer.group_members.is_empty() {
            let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
            if *members != answer.group_members {
                members.clone_from(&answer.group_members);
            }
        }
        let current = self.role();
        if answer.master == self.name {
            if current != (Role::Master { epoch }) {
                self.become_master(epoch).await;
            }
            if answer.leader && self.role() == (Role::Master { epoch }) {
                let until = (sent_at.saturating_duration_since(self.clock) + Duration::from_millis(answer.lease_ms))
                    .as_nanos() as u64;
                self.lease_until_ns.fetch_max(until, Ordering::AcqRel);
            }
            return;
        }
        if answer.master.is_empty() {
            match current {
                Role::Master { .. } => {
                    self.step_down(Role::Waiting { epoch }, "the group has no master at this epoch")
                        .await;
                }
                // A slave keeps draining its fenced master (whose log no longer grows) until the
                // next master is elected: the members then report equal offsets, and a
                // switchover's target is as far ahead as anyone.
                Role::Slave { .. } | Role::Waiting { .. } if current.epoch() != epoch => {
                    *self.role_lock() = Role::Waiting { epoch };
                    self.metrics.role_epoch.set(epoch as i64);
                }
                _ => {}
            }
            return;
        }
        let wanted = Role::Slave {
            epoch,
            master: answer.master.clone(),
            master_addr: answer.master_addr.clone(),
        };
        if current != wanted {
            self.step_down(wanted, "another member is master").await;
        }
    }

    /// Takes the master role at `epoch`: stops following, records where the epoch starts, then
    /// (with the lease the same answer may bring) takes writes.
    async fn become_master(self: &Arc<Self>, epoch: u64) {
        self.stop_following().await;
        let store = self.store.clone();
        let begun = tokio::task::spawn_blocking(move || {
            if store.last_epoch() < epoch {
                store.begin_epoch(epoch).map(Some)
            } else {
                Ok(None)
            }
        })
        .await
        .unwrap_or_else(|join_error| Err(BrokerError::Corrupt(format!("epoch task failed: {join_error}"))));
        match begun {
            Ok(start) => {
                self.acks.reset();
                *self.role_lock() = Role::Master { epoch };
                self.metrics.role_epoch.set(epoch as i64);
                info!(group = %self.group, epoch, start_offset = ?start, "became master");
            }
            Err(error) => warn!(%error, epoch, "cannot begin the epoch; staying out of the master role"),
        }
    }

    /// Leaves the master role (failing sends that wait for acks) or changes whom to follow.
    async fn step_down(self: &Arc<Self>, next: Role, why: &str) {
        let was_master = matches!(self.role(), Role::Master { .. });
        self.lease_until_ns.store(0, Ordering::Release);
        *self.role_lock() = next.clone();
        self.metrics.role_epoch.set(next.epoch() as i64);
        if was_master {
            warn!(group = %self.group, epoch = next.epoch(), why, "no longer master: fenced, taking no writes");
            self.acks.fail_all();
        }
        self.stop_following().await;
        if let Role::Slave {
            epoch,
            master,
            master_addr,
        } = next
        {
            info!(group = %self.group, epoch, %master, %master_addr, "following master");
            let upstream = Upstream {
                config: self.config.clone(),
                group: self.group.clone(),
                name: self.name.clone(),
                idc: self.idc.clone(),
                store: self.store.clone(),
                metrics: self.metrics.clone(),
                limits: self.limits,
                shutdown: self.shutdown.clone(),
                node_credentials: self.node_credentials.clone(),
                tls_client: self.tls_client.clone(),
                source_ip: self.source_ip,
            };
            let follower = Follower::start(Arc::new(upstream), master_addr, epoch);
            *self.follower.lock().unwrap_or_else(PoisonError::into_inner) = Some(follower);
        }
    }

    async fn stop_following(&self) {
        let follower = self.follower.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(follower) = follower {
            follower.stop().await;
        }
    }

    /// Fails the sends waiting for acknowledgements and stops the fetch loop (at shutdown).
    pub async fn stop(&self) {
        self.acks.fail_all();
        self.stop_following().await;
    }

    /// With `[auth]` on, refuses a fetch that names anything but a registered member of the group
    /// (another member than this master): only they count toward acknowledgements. The
    /// connection already proved it is a node.
    fn check_member(&self, name: &str) -> Result<()> {
        if !self.members_only {
            return Ok(());
        }
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if name != self.name && members.iter().any(|member| member == name) {
            return Ok(());
        }
        Err(BrokerError::ReplicationRefused(format!(
            "replica {name:?} is not a registered member of group {:?} (members: {}); a slave must register with the nameservers before it fetches",
            self.group,
            members.join(", ")
        )))
    }

    /// Answers a slave's fetch: refuses a slave from a newer epoch (this master is stale: it steps
    /// down) or with a different segment size, tells a slave with a divergent tail where to cut,
    /// records what the slave holds (acknowledging sends), then sends the next chunk, waiting up
    /// to `wait_ms` for one when the slave is at the end.
    pub async fn serve_fetch(self: &Arc<Self>, request: ReplicaFetch) -> Result<Bytes> {
        // A fenced master waiting for its successor still serves its final log, so its slaves
        // drain it; it takes no writes, so its log no longer grows.
        let epoch = match self.role() {
            Role::Master { epoch } => epoch,
            Role::Waiting { epoch } if self.store.last_epoch() > 0 => epoch,
            _ => {
                return Err(BrokerError::NotMaster(format!(
                    "broker {} is not the master of group {:?}; fetch from the master the nameservers name",
                    self.name, self.group
                )));
            }
        };
        if request.group != self.group {
            return Err(BrokerError::ReplicationRefused(format!(
                "slave {} belongs to group {:?}, this master to {:?}",
                request.name, request.group, self.group
            )));
        }
        self.check_member(&request.name)?;
        if request.epoch > epoch {
            let _transition = self.transition.lock().await;
            let _ = self.store.observe_epoch(request.epoch);
            self.step_down(Role::Waiting { epoch: request.epoch }, "a slave has seen a newer epoch")
                .await;
            return Err(BrokerError::NotMaster(format!(
                "this master's epoch {epoch} is older than slave {}'s epoch {}: it is fenced",
                request.name, request.epoch
            )));
        }
        let segment_size = self.store.config().segment_size;
        if request.segment_size != segment_size {
            return Err(BrokerError::ReplicationRefused(format!(
                "slave {} has store.segment_size {} but the master has {segment_size}; every member of a group needs the same segment size",
                request.name, request.segment_size
            )));
        }
        let epochs = self.store.epochs();
        let master_end = self.store.committed_offset();
        let master_last_epoch = self.store.last_epoch();
        if request.last_epoch > master_last_epoch {
            return Err(BrokerError::ReplicationRefused(format!(
                "slave {}'s log reaches epoch {} but this master's only epoch {master_last_epoch}",
                request.name, request.last_epoch
            )));
        }
        let lineage_end = self.store.epoch_end(request.last_epoch).min(master_end);
        if request.from_offset > lineage_end {
            info!(slave = %request.name, from = request.from_offset, to = lineage_end, "slave must truncate a divergent tail");
            return Ok(encode(&ReplicaFetchResponse {
                epoch,
                truncate_to: Some(lineage_end),
                data: Bytes::new(),
                master_offset: master_end,
                epochs,
                consumer_offsets: Bytes::new(),
                offsets_version: 0,
                confirmed_offset: 0,
            }));
        }
        let acked = self
            .acks
            .report(&request.name, &request.idc, request.from_offset, request.flushed_offset);
        // Slaves waiting at the log's end are not woken for this: a wake-up per report made the
        // slaves wake each other in turn under load. They learn it with the next record, or
        // within `CONFIRM_RECHECK` when none comes.
        if self.acks.needs_slaves() {
            // A master acknowledging alone (degraded) counts everything acknowledged; the limit
            // must still never pass what is written.
            self.store
                .raise_replication_limit(acked.min(self.store.committed_offset()));
        }

        let wait = Duration::from_millis(u64::from(request.wait_ms).min(5_000));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let appended = self.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            // A slave of an older version sends no confirmed offset (0): it only waits for records.
            let knows_confirmed = request.confirmed_offset > 0;
            if self.store.committed_offset() > request.from_offset
                || (knows_confirmed && self.store.confirmed_offset() > request.confirmed_offset)
                || wait.is_zero()
            {
                break;
            }
            // Records the slave holds but does not know confirmed become so by another slave's
            // report or, under sync flush, by this master's sync, neither of which wakes this
            // wait: look again shortly.
            let unconfirmed = knows_confirmed && self.store.committed_offset() > request.confirmed_offset;
            let recheck = tokio::time::Instant::now() + CONFIRM_RECHECK;
            tokio::select! {
                _ = &mut appended => {}
                _ = tokio::time::sleep_until(recheck), if unconfirmed => {}
                _ = tokio::time::sleep_until(deadline) => break,
                _ = self.shutdown.cancelled() => break,
            }
        }
        let max_bytes = self.config.fetch_max_bytes.min(request.max_bytes.max(1)) as usize;
        let len = self.store.replica_chunk_len(request.from_offset, max_bytes);
        let (offsets_version, consumer_offsets) = if request.offsets_version != self.store.offsets_version() {
            self.store.export_offsets()
        } else {
            (0, Bytes::new())
        };
        let head = ReplicaFetchResponse {
            epoch,
            truncate_to: None,
            data: Bytes::new(),
            master_offset: self.store.committed_offset(),
            epochs,
            consumer_offsets,
            offsets_version,
            confirmed_offset: self.store.confirmed_offset(),
        };
        // The data field is written by hand so the records are copied once, from the page cache
        // straight into the answer.
        let mut out = BytesMut::with_capacity(prost::Message::encoded_len(&head) + 16 + len);
        prost::Message::encode(&head, &mut out).expect("buffer has capacity");
        if len > 0 {
            prost::encoding::encode_key(3, prost::encoding::WireType::LengthDelimited, &mut out);
            prost::encoding::encode_varint(len as u64, &mut out);
            self.store.copy_replica(request.from_offset, len, &mut out)?;
        }
        self.metrics.replicated_bytes.inc_by(len as u64);
        Ok(out.freeze())
    }
}

fn encode(message: &impl prost::Message) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_send_waiting_for_its_replicas_when_the_master_stops_is_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig {
            nameservers: vec!["127.0.0.1:7800".into()],
            ..BrokerConfig::default()
        };
        config.replication.replicas = 3;
        let store = MessageStore::open(
            dir.path(),
            config.store.clone(),
            "127.0.0.1:7911".parse().unwrap(),
            Arc::default(),
        )
        .unwrap();
        let replication = Replication::new(&config, store.clone(), Arc::default(), CancellationToken::new());
        replication.assume_master_for_tests();
        let tasks = tokio_util::task::TaskTracker::new();
        let waiting = tasks.spawn({
            let replication = replication.clone();
            async move { replication.wait_acked(100).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        replication.stop().await;
        let refused = waiting.await.unwrap().unwrap_err();
        assert!(matches!(refused, BrokerError::ShuttingDown), "{refused}");
        store.shutdown();
    }
}

//! [`NameserverRaft`]: one nameserver's Raft node, from its data dir, settings and a network.
//!
//! Writes go through the leader ([`NameserverRaft::write`] answers
//! [`NameserverError::ForwardToLeader`] elsewhere, naming the leader); reads are served by any node
//! from its applied state ([`NameserverRaft::read_state`]), which may lag the leader by a
//! replication round trip.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{ChangeMembers, RaftNetworkFactory, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::error::NameserverError;
use crate::log_store::{LOG_FILE, LogStore};
use crate::state::{Command, MetadataState, Response};
use crate::state_machine::{StateMachineStore, StateReader};
use crate::types::{LogId, Node, NodeId, Raft, RaftMetrics, Request, TypeConfig};

// How long `shutdown` waits for openraft's background tasks to release the log file.
const STORAGE_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Raft settings of a nameserver (the `[raft]` table of its config). The defaults suit nodes in
/// different data centers a few tens of ms apart; tests shorten the timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Name of the cluster, in logs.
    pub cluster_name: String,
    /// How often the leader sends heartbeats, in ms.
    pub heartbeat_interval_ms: u64,
    /// Shortest time a follower waits for the leader before it starts an election, in ms.
    pub election_timeout_min_ms: u64,
    /// Longest such time, in ms (each node picks at random in between, so elections rarely tie).
    pub election_timeout_max_ms: u64,
    /// Longest time to send and install one snapshot chunk, in ms.
    pub install_snapshot_timeout_ms: u64,
    /// Build a snapshot (and compact the log) once this many entries were applied since the last.
    pub snapshot_logs_since_last: u64,
    /// Entries already in a snapshot kept in the log anyway, so a briefly lagging follower
    /// catches up from the log rather than with a whole snapshot.
    pub max_in_snapshot_log_to_keep: u64,
    /// Most entries sent in one replication request.
    pub max_payload_entries: u64,
}

impl Default for RaftConfig {
    fn default() -> RaftConfig {
        RaftConfig {
            cluster_name: "meridian".into(),
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            install_snapshot_timeout_ms: 5000,
            snapshot_logs_since_last: 1000,
            max_in_snapshot_log_to_keep: 200,
            max_payload_entries: 300,
        }
    }
}

impl RaftConfig {
    /// openraft's config for these settings, or what to fix.
    pub fn to_openraft(&self) -> Result<openraft::Config, NameserverError> {
        let invalid = |message: String| Err(NameserverError::Config { message });
        if self.heartbeat_interval_ms == 0 {
            return invalid("raft.heartbeat_interval_ms must be at least 1".into());
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms {
            return invalid(format!(
                "raft.election_timeout_min_ms ({}) must exceed raft.heartbeat_interval_ms ({}), by a few heartbeats, or followers start elections between heartbeats",
                self.election_timeout_min_ms, self.heartbeat_interval_ms
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return invalid(format!(
                "raft.election_timeout_max_ms ({}) must exceed raft.election_timeout_min_ms ({})",
                self.election_timeout_max_ms, self.election_timeout_min_ms
            ));
        }
        if self.snapshot_logs_since_last == 0 {
            return invalid("raft.snapshot_logs_since_last must be at least 1, or the log would grow forever".into());
        }
        if self.max_payload_entries == 0 {
            return invalid("raft.max_payload_entries must be at least 1".into());
        }
        let config = openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            max_payload_entries: self.max_payload_entries,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            // openraft wants the lag threshold above the snapshot interval, or a lagging follower
            // may never be counted as caught up.
            replication_lag_threshold: (self.snapshot_logs_since_last * 2).max(1000),
            ..openraft::Config::default()
        };
        config.validate().map_err(|error| NameserverError::Config {
            message: error.to_string(),
        })
    }
}

/// A nameserver's Raft node: the replicated [`MetadataState`], its log and snapshots on disk.
pub struct NameserverRaft {
    node_id: NodeId,
    data_dir: PathBuf,
    raft: Raft,
    state: StateReader,
    log_liveness: Weak<redb::Database>,
    leader_contact: LeaderContact,
}

/// When a current leader's AppendEntries last reached this node: shared with whatever hands
/// incoming RPCs to Raft ([`crate::network::serve_raft_rpc`], or a test's in-process network).
#[derive(Debug, Clone)]
pub struct LeaderContact {
    /// When the node started, the base of `last_ms`.
    started: std::time::Instant,
    /// Ms after `started` of the last contact (0: none yet).
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl LeaderContact {
    fn new() -> LeaderContact {
        LeaderContact {
            started: std::time::Instant::now(),
            last_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Records an AppendEntries answered with `response`, if it came from a current leader
    /// (anything but a refusal for a stale vote).
    pub fn observe(&self, response: &openraft::raft::AppendEntriesResponse<NodeId>) {
        if matches!(response, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
            return;
        }
        let now = self.started.elapsed().as_millis().max(1) as u64;
        self.last_ms.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// Time since the last contact, or since the node started.
    fn silence(&self) -> Duration {
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(last))
    }
}

impl NameserverRaft {
    /// Starts the node `node_id` from `data_dir` (created if missing): restores the latest
    /// snapshot, then openraft re-applies the committed log entries after it. `network` sends Raft
    /// RPCs to peers; incoming RPCs go to [`NameserverRaft::raft`].
    pub async fn start<N>(
        node_id: NodeId,
        data_dir: &Path,
        config: &RaftConfig,
        network: N,
    ) -> Result<NameserverRaft, NameserverError>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        let openraft_config = Arc::new(config.to_openraft()?);
        let dir = data_dir.to_owned();
        let (log_store, state_machine) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|error| NameserverError::Storage {
                path: dir.clone(),
                message: format!("cannot create the data dir: {error}"),
            })?;
            let log_store = LogStore::open(&dir.join(LOG_FILE), node_id)?;
            let state_machine = StateMachineStore::open(&dir)?;
            Ok::<_, NameserverError>((log_store, state_machine))
        })
        .await
        .map_err(|join_error| NameserverError::Storage {
            path: data_dir.to_owned(),
            message: format!("opening the data dir failed: {join_error}"),
        })??;
        let state = state_machine.reader();
        let log_liveness = log_store.liveness();
        let raft = Raft::new(node_id, openraft_config, network, log_store, state_machine)
            .await
            .map_err(|fatal| stopped(node_id, fatal))?;
        tracing::info!(node_id, data_dir = %data_dir.display(), last_applied = ?state.last_applied(), "nameserver raft started");
        Ok(NameserverRaft {
            node_id,
            data_dir: data_dir.to_owned(),
            raft,
            state,
            log_liveness,
            leader_contact: LeaderContact::new(),
        })
    }

    /// Where the network layer records each leader's AppendEntries this node answers.
    pub fn leader_contact(&self) -> &LeaderContact {
        &self.leader_contact
    }

    /// How long this node has been out of touch with the Raft majority, when it may be: as the
    /// leader, since a quorum last acknowledged it; otherwise since a leader's AppendEntries last
    /// reached it (or since it started). `None` for the only voter of its cluster, which is its
    /// own majority.
    ///
    /// Used to tell a node cut off from the majority (a partitioned data center's nameserver,
    /// still answering its side's clients from a state that no longer moves) from one that
    /// serves current routes.
    pub fn out_of_touch_for(&self) -> Option<Duration> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.membership_config.membership().voter_ids().count() <= 1 {
            return None;
        }
        if metrics.state == openraft::ServerState::Leader {
            return Some(match metrics.millis_since_quorum_ack {
                Some(millis) => Duration::from_millis(millis),
                None => self.leader_contact.started.elapsed(),
            });
        }
        Some(self.leader_contact.silence())
    }

    /// Forms a new cluster of `members` (this node among them). Call it on one node of a fresh
    /// cluster (for `meridian dev`: the only node). On a node that is already part of a cluster it
    /// does nothing.
    pub async fn initialize(&self, members: BTreeMap<NodeId, Node>) -> Result<(), NameserverError> {
        // Asked first: openraft logs an ERROR when a formed node is asked to initialize, which
        // every normal restart would otherwise print.
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|fatal| stopped(self.node_id, fatal))?;
        if initialized {
            tracing::debug!(node_id = self.node_id, "raft cluster already initialized");
            return Ok(());
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::info!(node_id = self.node_id, "raft cluster already initialized");
                Ok(())
            }
            Err(RaftError::APIError(error)) => Err(NameserverError::Initialize {
                message: error.to_string(),
            }),
            Err(RaftError::Fatal(fatal)) => Err(stopped(self.node_id, fatal)),
        }
    }

    /// Commits `command` through the leader and returns what applying it answered. Not the leader:
    /// [`NameserverError::ForwardToLeader`]. Refused by the metadata: [`NameserverError::Command`]
    /// (the refusal is in the log too, and changed nothing).
    pub async fn write(&self, command: Command) -> Result<Response, NameserverError> {
        let request = Request {
            command,
            // The proposer's clock, recorded in the log entry: applying never reads a clock.
            now_ms: meridian_proto::time::now_millis() as u64,
        };
        let response = self
            .raft
            .client_write(request)
            .await
            .map_err(|error| self.client_write_error(error))?;
        Ok(response.data?)
    }

    /// Runs `read` on this node's applied state.
    pub fn read_state<R>(&self, read: impl FnOnce(&MetadataState) -> R) -> R {
        self.state.read(read)
    }

    /// Log id of the last entry this node applied.
    pub fn last_applied(&self) -> Option<LogId> {
        self.state.last_applied()
    }

    /// Adds `id` as a learner and waits until it has caught up with the leader (from the log, or
    /// from a snapshot when the log it needs was compacted). Leader only.
    pub async fn add_learner(&self, id: NodeId, node: Node) -> Result<(), NameserverError> {
        self.raft
            .add_learner(id, node, true)
            .await
            .map_err(|error| self.client_write_error(error))?;
        Ok(())
    }

    /// Makes `voters` the voting members. With `retain`, removed voters stay as learners;
    /// without, they leave the cluster. Leader only.
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>, retain: bool) -> Result<(), NameserverError> {
        self.change(ChangeMembers::ReplaceAllVoters(voters), retain).await
    }

    /// Adds a node to the cluster as a voter: first as a learner until it caught up, then as a
    /// voter. Leader only.
    pub async fn add_node(&self, id: NodeId, node: Node) -> Result<(), NameserverError> {
        self.add_learner(id, node).await?;
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
    }

    /// Removes a node (voter or learner) from the cluster. Leader only.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), NameserverError> {
        let is_voter = self
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .any(|voter| voter == id);
        let changes = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change(changes, false).await
    }

    async fn change(&self, changes: ChangeMembers<NodeId, Node>, retain: bool) -> Result<(), NameserverError> {
        tracing::info!(node_id = self.node_id, ?changes, retain, "change raft membership");
        self.raft
            .change_membership(changes, retain)
            .await
            .map_err(|error| self.client_write_error(error))?;
        Ok(())
    }

    /// This node's Raft metrics (role, leader, term, applied, snapshot, purged, membership).
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// The current leader as this node knows it.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// This node's data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The openraft handle: the network layer hands incoming RPCs to its `append_entries`, `vote`
    /// and `install_snapshot`; tests wait on its metrics.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Stops the node and waits until its log file is closed, so the data dir can be reopened.
    pub async fn shutdown(&self) -> Result<(), NameserverError> {
        self.raft
            .shutdown()
            .await
            .map_err(|join_error| NameserverError::Stopped {
                node_id: self.node_id,
                reason: format!("raft core task failed: {join_error}"),
            })?;
        // openraft's replication and state-machine tasks end shortly after its core; the last of
        // them to go closes the log file.
        let deadline = Instant::now() + STORAGE_CLOSE_TIMEOUT;
        while self.log_liveness.strong_count() > 0 {
            if Instant::now() >= deadline {
                tracing::warn!(node_id = self.node_id, "raft log still open after shutdown");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(node_id = self.node_id, "nameserver raft stopped");
        Ok(())
    }

    fn client_write_error(&self, error: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> NameserverError {
        match error {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => NameserverError::ForwardToLeader {
                node_id: self.node_id,
                leader_id: forward.leader_id,
                leader: forward.leader_node,
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => NameserverError::Membership {
                message: error.to_string(),
            },
            RaftError::Fatal(fatal) => stopped(self.node_id, fatal),
        }
    }
}

fn stopped(node_id: NodeId, fatal: Fatal<NodeId>) -> NameserverError {
    NameserverError::Stopped {
        node_id,
        reason: fatal.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_errors_name_the_field_and_the_fix() {
        assert!(RaftConfig::default().to_openraft().is_ok());
        let config = RaftConfig {
            election_timeout_min_ms: 100,
            ..RaftConfig::default()
        };
        let message = config.to_openraft().unwrap_err().to_string();
        assert!(
            message.contains("raft.election_timeout_min_ms (100) must exceed raft.heartbeat_interval_ms (100)"),
            "{message}"
        );
        let config = RaftConfig {
            snapshot_logs_since_last: 0,
            ..RaftConfig::default()
        };
        assert!(
            config
                .to_openraft()
                .unwrap_err()
                .to_string()
                .contains("snapshot_logs_since_last")
        );
        let parsed: RaftConfig = serde_json::from_str(r#"{"snapshot_logs_since_last": 50}"#).unwrap();
        let openraft_config = parsed.to_openraft().unwrap();
        assert!(matches!(
            openraft_config.snapshot_policy,
            SnapshotPolicy::LogsSinceLast(50)
        ));
        assert!(serde_json::from_str::<RaftConfig>(r#"{"snapshot_every": 50}"#).is_err());
    }
}

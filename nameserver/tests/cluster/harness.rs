//! A test cluster: nodes with their own data dirs under one temp dir, wired through a [`Router`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meridian_nameserver::openraft::ServerState;
use meridian_nameserver::state::{PERM_READ_WRITE, TopicRequest};
use meridian_nameserver::{Command, NameserverRaft, Node, NodeId, RaftConfig};
use tempfile::TempDir;

use crate::router::Router;

/// Generous bound for anything Raft does in these tests (elections take a few hundred ms).
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Short Raft timeouts so tests run in seconds.
pub fn test_config() -> RaftConfig {
    RaftConfig {
        cluster_name: "test".into(),
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 150,
        election_timeout_max_ms: 300,
        install_snapshot_timeout_ms: 2000,
        ..RaftConfig::default()
    }
}

pub fn node_info(id: NodeId) -> Node {
    Node {
        addr: format!("10.0.0.{id}:7800"),
        http_addr: format!("10.0.0.{id}:8080"),
        idc: format!("dc{id}"),
    }
}

pub fn request_topic(name: &str, requested_by: &str) -> Command {
    Command::RequestTopic(TopicRequest {
        name: name.into(),
        owner: "team-a".into(),
        description: format!("{name} of the shop"),
        queues: BTreeMap::from([("broker-a".to_owned(), 4)]),
        perm: PERM_READ_WRITE,
        produce_limit: None,
        requested_by: requested_by.into(),
    })
}

pub fn approve_topic(name: &str) -> Command {
    Command::ApproveTopic {
        name: name.into(),
        decided_by: "admin".into(),
        reason: Some("owner known".into()),
    }
}

pub struct Cluster {
    root: TempDir,
    router: Router,
    config: RaftConfig,
    nodes: BTreeMap<NodeId, NameserverRaft>,
}

impl Cluster {
    /// Starts nodes `ids` and initializes the cluster with all of them as voters.
    pub async fn start(ids: &[NodeId], config: RaftConfig) -> Cluster {
        let mut cluster = Cluster {
            root: tempfile::tempdir().expect("temp dir"),
            router: Router::default(),
            config,
            nodes: BTreeMap::new(),
        };
        for id in ids {
            cluster.start_node(*id).await;
        }
        let members = ids.iter().map(|id| (*id, node_info(*id))).collect();
        cluster.node(ids[0]).initialize(members).await.expect("initialize");
        cluster
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    /// Starts node `id` from its data dir (as it was left, or empty) and makes it reachable.
    pub async fn start_node(&mut self, id: NodeId) -> &NameserverRaft {
        let node = NameserverRaft::start(id, &self.data_dir(id), &self.config, self.router.network(id))
            .await
            .expect("start node");
        self.router
            .register(id, node.raft().clone(), node.leader_contact().clone());
        self.nodes.insert(id, node);
        &self.nodes[&id]
    }

    /// Cuts node `id` off, as if it crashed, then stops it so its data dir can be reused.
    pub async fn crash(&mut self, id: NodeId) {
        self.router.cut(id);
        let node = self.nodes.remove(&id).expect("running node");
        node.shutdown().await.expect("shutdown");
        self.router.remove(id);
    }

    pub fn node(&self, id: NodeId) -> &NameserverRaft {
        &self.nodes[&id]
    }

    pub fn running(&self) -> impl Iterator<Item = &NameserverRaft> {
        self.nodes.values()
    }

    /// Waits until one running node is leader and every running voter agrees.
    pub async fn wait_for_leader(&self, timeout: Duration) -> NodeId {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self
                .running()
                .find(|node| node.metrics().state == ServerState::Leader)
                .map(NameserverRaft::node_id);
            if let Some(leader) = leader {
                let voters: BTreeSet<NodeId> = self.node(leader).metrics().membership_config.voter_ids().collect();
                let agreed = self
                    .running()
                    .filter(|node| voters.contains(&node.node_id()))
                    .all(|node| node.current_leader() == Some(leader));
                if agreed {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {}",
                self.describe()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node has applied what the leader has applied.
    pub async fn wait_converged(&self, leader: NodeId) {
        let index = self.node(leader).last_applied().map(|log_id| log_id.index);
        for node in self.running() {
            node.raft()
                .wait(Some(PATIENCE))
                .applied_index_at_least(index, format!("node {} catches up", node.node_id()))
                .await
                .unwrap_or_else(|error| panic!("{error}: {}", self.describe()));
        }
    }

    pub fn describe(&self) -> String {
        self.running()
            .map(|node| {
                let metrics = node.metrics();
                format!(
                    "node {} {:?} leader {:?} applied {:?} snapshot {:?} purged {:?}",
                    node.node_id(),
                    metrics.state,
                    metrics.current_leader,
                    metrics.last_applied,
                    metrics.snapshot,
                    metrics.purged
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.crash(id).await;
        }
    }
}

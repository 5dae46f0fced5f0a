//! An in-process Raft network for tests: delivers each RPC to the target's `Raft` handle in this
//! process. A node that is cut off (or not registered) is `Unreachable`, as a crashed peer is over
//! TCP; errors the target's Raft returns travel back as `RemoteError`.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use meridian_nameserver::network::{TransportStage, rpc_error_from_io};
use meridian_nameserver::openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError};
use meridian_nameserver::openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use meridian_nameserver::openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use meridian_nameserver::raft::LeaderContact;
use meridian_nameserver::types::Raft;
use meridian_nameserver::{Node, NodeId, TypeConfig};

/// Routes RPCs between the nodes of one test cluster.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<Mutex<RouterInner>>,
}

#[derive(Default)]
struct RouterInner {
    nodes: BTreeMap<NodeId, (Raft, LeaderContact)>,
    cut: BTreeSet<NodeId>,
}

impl Router {
    /// The network factory node `source` uses.
    pub fn network(&self, source: NodeId) -> RouterNetwork {
        RouterNetwork {
            router: self.clone(),
            source,
        }
    }

    /// Makes `id` reachable at `raft`, recording its leaders' AppendEntries in `contact`.
    pub fn register(&self, id: NodeId, raft: Raft, contact: LeaderContact) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.nodes.insert(id, (raft, contact));
        inner.cut.remove(&id);
    }

    /// Cuts `id` off: RPCs from and to it fail with `Unreachable`, as if it crashed.
    pub fn cut(&self, id: NodeId) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).cut.insert(id);
    }

    /// Forgets `id`.
    pub fn remove(&self, id: NodeId) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .nodes
            .remove(&id);
    }

    fn connect(&self, source: NodeId, target: NodeId) -> Result<(Raft, LeaderContact), io::Error> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let raft = if inner.cut.contains(&source) || inner.cut.contains(&target) {
            None
        } else {
            inner.nodes.get(&target).cloned()
        };
        raft.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("node {target} is not reachable from node {source}"),
            )
        })
    }
}

/// Node `source`'s view of the network.
pub struct RouterNetwork {
    router: Router,
    source: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for RouterNetwork {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> Connection {
        Connection {
            router: self.router.clone(),
            source: self.source,
            target,
        }
    }
}

/// A connection from `source` to `target`.
pub struct Connection {
    router: Router,
    source: NodeId,
    target: NodeId,
}

impl Connection {
    fn reach(&self) -> Result<(Raft, LeaderContact), io::Error> {
        self.router.connect(self.source, self.target)
    }

    fn remote<E: Error>(&self, error: RaftError<NodeId, E>) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, error))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let (raft, contact) = self
            .reach()
            .map_err(|error| rpc_error_from_io(&error, TransportStage::Connect))?;
        let answer = raft.append_entries(rpc).await.map_err(|error| self.remote(error))?;
        contact.observe(&answer);
        // A node cut off while the call was in flight loses the answer too.
        self.reach()
            .map_err(|error| rpc_error_from_io(&error, TransportStage::Exchange))?;
        Ok(answer)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        let (raft, _) = self
            .reach()
            .map_err(|error| rpc_error_from_io(&error, TransportStage::Connect))?;
        let answer = raft.install_snapshot(rpc).await.map_err(|error| self.remote(error))?;
        // A node cut off while the call was in flight loses the answer too.
        self.reach()
            .map_err(|error| rpc_error_from_io(&error, TransportStage::Exchange))?;
        Ok(answer)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let (raft, _) = self
            .reach()
            .map_err(|error| rpc_error_from_io(&error, TransportStage::Connect))?;
        let answer = raft.vote(rpc).await.map_err(|error| self.remote(error))?;
        // A node cut off while the call was in flight loses the answer too.
        self.reach()
            .map_err(|error| rpc_error_from_io(&error, TransportStage::Exchange))?;
        Ok(answer)
    }
}

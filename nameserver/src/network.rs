//! The Raft network: [`FramedNetwork`] sends openraft's RPCs to peers over the project's framed
//! protocol, and [`serve_raft_rpc`] answers them; plus what every transport must get right about
//! errors (the framed one here, and the in-process one of the tests).
//!
//! On the wire: `RaftAppend` and `RaftVote` bodies are the openraft request as JSON; `RaftSnapshot`
//! is a [`RaftSnapshotChunk`] (the request as JSON without its data, and the data as raw bytes, so
//! a chunk is not inflated). Every answer is an OK frame whose body is JSON of
//! `Result<openraft response, openraft RaftError>`: a refusal by the peer's Raft is data, not a
//! transport failure. A body that does not decode is answered with `MalformedFrame`, and nothing
//! reaches Raft.
//!
//! openraft treats the two transport failures differently: [`Unreachable`] means the peer is down
//! and replication to it backs off (see [`openraft::RaftNetwork::backoff`]); a [`NetworkError`]
//! is transient and the RPC is retried at once. Reporting a dead peer as `Network` makes the
//! leader spin on it; reporting a hiccup as `Unreachable` delays replication for nothing.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::messages::RaftSnapshotChunk;
use meridian_proto::transport::{ConnectionPool, TransportError};
use meridian_proto::{ErrorCode, RequestCode};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::NameserverRaft;
use crate::types::{Node, NodeId, TypeConfig};

/// Where in an RPC the transport failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportStage {
    /// Opening a connection to the peer: any failure means it cannot be reached now.
    Connect,
    /// Sending the request or reading the answer on an established connection.
    Exchange,
}

/// The RPC error openraft expects for an I/O error of the transport.
pub fn rpc_error_from_io<E: StdError>(error: &io::Error, stage: TransportStage) -> RPCError<NodeId, Node, E> {
    if is_unreachable(error, stage) {
        RPCError::Unreachable(Unreachable::new(error))
    } else {
        RPCError::Network(NetworkError::new(error))
    }
}

/// Whether an I/O error means the peer is down or cut off, rather than a transient failure.
pub fn is_unreachable(error: &io::Error, stage: TransportStage) -> bool {
    stage == TransportStage::Connect
        || matches!(
            error.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::NotConnected
        )
}

/// Raft RPCs to peers over the framed protocol, sharing one connection pool (one connection per
/// peer, opened on first use and reopened when it dies).
#[derive(Clone)]
pub struct FramedNetwork {
    node_id: NodeId,
    pool: ConnectionPool,
}

impl FramedNetwork {
    /// The network node `node_id` uses to reach its peers over `pool`.
    pub fn new(node_id: NodeId, pool: ConnectionPool) -> FramedNetwork {
        FramedNetwork { node_id, pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for FramedNetwork {
    type Network = FramedPeer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> FramedPeer {
        FramedPeer {
            source: self.node_id,
            target,
            addr: node.addr.clone(),
            pool: self.pool.clone(),
        }
    }
}

/// One peer, as [`FramedNetwork`] reaches it.
pub struct FramedPeer {
    source: NodeId,
    target: NodeId,
    addr: String,
    pool: ConnectionPool,
}

impl FramedPeer {
    async fn call<Resp, E>(
        &self,
        action: RPCTypes,
        code: RequestCode,
        body: Bytes,
        option: &RPCOption,
        entries: u64,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        let timeout = option.hard_ttl();
        let frame = self
            .pool
            .request(&self.addr, code, body, timeout)
            .await
            .map_err(|error| self.transport_error(error, action, timeout, entries))?;
        let answer: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&frame.body).map_err(|error| {
            RPCError::Network(NetworkError::new(&io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{action} answer from node {} ({}) does not decode: {error}",
                    self.target, self.addr
                ),
            )))
        })?;
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }

    fn transport_error<E: StdError>(
        &self,
        error: TransportError,
        action: RPCTypes,
        timeout: Duration,
        entries: u64,
    ) -> RPCError<NodeId, Node, E> {
        match error {
            TransportError::Connect { source, .. } => rpc_error_from_io(&source, TransportStage::Connect),
            TransportError::Timeout { .. } => RPCError::Timeout(Timeout {
                action,
                id: self.source,
                target: self.target,
                timeout,
            }),
            // Halving the batch until it fits; openraft sends one entry at least.
            TransportError::FrameTooLarge { .. } if entries > 1 => {
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2))
            }
            // A peer that is stopping answers `Unavailable` and then closes: it is going down.
            TransportError::Remote {
                code: ErrorCode::Unavailable,
                ..
            }
            | TransportError::Shutdown => RPCError::Unreachable(Unreachable::new(&error)),
            other => RPCError::Network(NetworkError::new(&other)),
        }
    }
}

fn json_body(value: &impl Serialize) -> Bytes {
    // openraft's messages and our commands are plain data: encoding them cannot fail.
    Bytes::from(serde_json::to_vec(value).expect("raft messages encode as JSON"))
}

impl RaftNetwork<TypeConfig> for FramedPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        self.call(
            RPCTypes::AppendEntries,
            RequestCode::RaftAppend,
            json_body(&rpc),
            &option,
            entries,
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        let data = Bytes::from(std::mem::take(&mut rpc.data));
        let chunk = RaftSnapshotChunk {
            request_json: json_body(&rpc),
            data,
        };
        self.call(
            RPCTypes::InstallSnapshot,
            RequestCode::RaftSnapshot,
            Bytes::from(chunk.encode_to_vec()),
            &option,
            0,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, RequestCode::RaftVote, json_body(&rpc), &option, 0)
            .await
    }
}

/// Why an incoming Raft RPC was not handed to Raft.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what}: {message}")]
pub struct MalformedRpc {
    what: &'static str,
    message: String,
}

impl MalformedRpc {
    /// The wire code to answer with.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::MalformedFrame
    }
}

fn decode_json<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T, MalformedRpc> {
    serde_json::from_slice(body).map_err(|error| MalformedRpc {
        what,
        message: error.to_string(),
    })
}

/// Answers one incoming Raft RPC (`code` is `RaftAppend`, `RaftVote` or `RaftSnapshot`) with the
/// body to send back. A body that does not decode is refused before it reaches Raft.
pub async fn serve_raft_rpc(node: &NameserverRaft, code: RequestCode, body: Bytes) -> Result<Bytes, MalformedRpc> {
    let raft = node.raft();
    match code {
        RequestCode::RaftAppend => {
            let request: AppendEntriesRequest<TypeConfig> = decode_json("AppendEntries request", &body)?;
            let response = raft.append_entries(request).await;
            if let Ok(answer) = &response {
                node.leader_contact().observe(answer);
            }
            Ok(json_body(&response))
        }
        RequestCode::RaftVote => {
            let request: VoteRequest<NodeId> = decode_json("Vote request", &body)?;
            Ok(json_body(&raft.vote(request).await))
        }
        RequestCode::RaftSnapshot => {
            let chunk = RaftSnapshotChunk::decode(body).map_err(|error| MalformedRpc {
                what: "InstallSnapshot chunk",
                message: error.to_string(),
            })?;
            let mut request: InstallSnapshotRequest<TypeConfig> =
                decode_json("InstallSnapshot request", &chunk.request_json)?;
            request.data = chunk.data.to_vec();
            Ok(json_body(&raft.install_snapshot(request).await))
        }
        other => Err(MalformedRpc {
            what: "Raft RPC",
            message: format!("{} is not a Raft RPC", other.as_str()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::error::RaftError;

    type Error = RPCError<NodeId, Node, RaftError<NodeId>>;

    #[test]
    fn dead_peers_are_unreachable_and_hiccups_are_network_errors() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        assert!(matches!(
            rpc_error_from_io::<RaftError<NodeId>>(&refused, TransportStage::Exchange),
            Error::Unreachable(_)
        ));
        assert!(matches!(
            rpc_error_from_io::<RaftError<NodeId>>(&timed_out, TransportStage::Connect),
            Error::Unreachable(_)
        ));
        assert!(matches!(
            rpc_error_from_io::<RaftError<NodeId>>(&reset, TransportStage::Exchange),
            Error::Network(_)
        ));
    }
}

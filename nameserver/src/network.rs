//! What a Raft transport must get right about errors, shared by every implementation of
//! [`openraft::RaftNetwork`] (the framed TCP one, and the in-process one of the tests).
//!
//! openraft treats the two transport failures differently: [`Unreachable`] means the peer is down
//! and replication to it backs off (see [`openraft::RaftNetwork::backoff`]); a [`NetworkError`]
//! is transient and the RPC is retried at once. Reporting a dead peer as `Network` makes the
//! leader spin on it; reporting a hiccup as `Unreachable` delays replication for nothing.

use std::error::Error as StdError;
use std::io;

use openraft::error::{NetworkError, RPCError, Unreachable};

use crate::types::{Node, NodeId};

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

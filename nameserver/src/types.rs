//! The Raft type configuration: node ids and addresses, what a log entry carries and what applying
//! it returns, and short aliases for the openraft types the rest of the crate (and the network
//! layer) names.

// openraft 0.9's `declare_raft_types!` names `Cursor` unqualified for the default snapshot type.
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::{Command, CommandError, Response};

/// Identifies a nameserver in the Raft cluster. Stable for the life of its data dir.
pub type NodeId = u64;

/// How to reach a nameserver. Stored in the Raft membership, so every node knows every peer's
/// addresses, and a follower can tell a client where the leader is. A record of the admin
/// contract (`cluster add-node` sends it), so it is defined in [`meridian_proto::admin`].
pub use meridian_proto::admin::Node;

/// One log entry's payload: a command and the time the leader proposed it. Applying uses this
/// time, never the applying node's clock, so every node computes the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The change.
    pub command: Command,
    /// Wall-clock time at the proposing node, in ms since the Unix epoch.
    pub now_ms: u64,
}

/// What applying one log entry returns. A refused command is a normal, replicated outcome (every
/// node refuses it the same way), so it travels as data, not as a storage error.
pub type CommandResult = Result<Response, CommandError>;

openraft::declare_raft_types!(
    /// openraft's type configuration for the nameserver.
    pub TypeConfig:
        D = Request,
        R = CommandResult,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running openraft node of the nameserver.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// The membership as of a log id.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// What a snapshot covers.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot and its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The storage error openraft expects from storage.
pub type StorageError = openraft::StorageError<NodeId>;
/// Metrics of one node.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;

//! Errors of the nameserver: [`NameserverError`] for everything a caller of
//! [`crate::NameserverRaft`] can meet, and [`ApiError`], how an API answers. The refusals of the
//! replicated state, [`CommandError`] and [`SdkVersionError`], live with the state
//! ([`crate::state::error`]) and are re-exported here.

use std::path::PathBuf;

use meridian_proto::{ErrorCode, ValidationError};

pub use crate::state::{CommandError, SdkVersionError, Subject};
use crate::types::{Node, NodeId};

/// Everything that can go wrong when running a nameserver's Raft node.
#[derive(Debug, thiserror::Error)]
pub enum NameserverError {
    /// The metadata refused the command; nothing changed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Writes go through the leader, and this node is not it. Send the request to `leader`.
    #[error("nameserver node {node_id} is not the Raft leader: {}", forward_hint(*.leader_id, .leader.as_ref()))]
    ForwardToLeader {
        /// This node.
        node_id: NodeId,
        /// The leader, when known.
        leader_id: Option<NodeId>,
        /// The leader's addresses, when known.
        leader: Option<Node>,
    },
    /// A membership change was refused (another change in progress, unknown learner, empty set).
    #[error("membership change refused: {message}")]
    Membership {
        /// openraft's reason.
        message: String,
    },
    /// The cluster could not be initialized with these members.
    #[error("cannot initialize the nameserver cluster: {message}")]
    Initialize {
        /// openraft's reason.
        message: String,
    },
    /// The Raft node stopped (shut down, or a storage error it cannot survive).
    #[error("nameserver node {node_id} stopped: {reason}")]
    Stopped {
        /// This node.
        node_id: NodeId,
        /// Why.
        reason: String,
    },
    /// The data directory cannot be used.
    #[error("nameserver data at {}: {message}", path.display())]
    Storage {
        /// File or directory.
        path: PathBuf,
        /// What went wrong and what to do.
        message: String,
    },
    /// The data directory belongs to another node.
    #[error(
        "nameserver data at {} belongs to node {found}, not node {expected}: give each node its own data dir, or wipe it and re-add the node",
        path.display()
    )]
    WrongNode {
        /// The log database.
        path: PathBuf,
        /// Node id recorded in it.
        found: NodeId,
        /// Node id this process runs as.
        expected: NodeId,
    },
    /// A write or membership change did not commit in time. It may still commit later.
    #[error(
        "{what} did not commit within {after:?}: the cluster may have lost its majority (check `meridian nameserver status`); it may still be applied, so check before retrying"
    )]
    Stalled {
        /// What was attempted.
        what: &'static str,
        /// The timeout.
        after: std::time::Duration,
    },
    /// The Raft settings do not fit together.
    #[error("invalid raft settings: {message}")]
    Config {
        /// Which settings and how to fix them.
        message: String,
    },
}

impl NameserverError {
    /// The wire error code, for the protocol and HTTP layers.
    pub fn code(&self) -> ErrorCode {
        match self {
            NameserverError::Command(error) => error.code(),
            // Unavailable is retriable; the message and `leader` say where to retry.
            NameserverError::ForwardToLeader { .. }
            | NameserverError::Stopped { .. }
            | NameserverError::Stalled { .. } => ErrorCode::Unavailable,
            NameserverError::Membership { .. }
            | NameserverError::Initialize { .. }
            | NameserverError::Config { .. }
            | NameserverError::WrongNode { .. } => ErrorCode::InvalidArgument,
            NameserverError::Storage { .. } => ErrorCode::Internal,
        }
    }
}

/// An error as an API answers it, over the framed protocol or HTTP: a wire code and a message
/// that names the problem and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The wire code (and through it the HTTP status).
    pub code: ErrorCode,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

impl From<NameserverError> for ApiError {
    fn from(error: NameserverError) -> ApiError {
        ApiError::new(error.code(), error.to_string())
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> ApiError {
        ApiError::new(error.code(), error.to_string())
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> ApiError {
        ApiError::new(error.code(), error.to_string())
    }
}

fn forward_hint(leader_id: Option<NodeId>, leader: Option<&Node>) -> String {
    match (leader_id, leader) {
        (Some(leader_id), Some(leader)) => format!(
            "send writes to node {leader_id} at {} (HTTP {})",
            leader.addr, leader.http_addr
        ),
        (Some(leader_id), None) => format!("send writes to node {leader_id}"),
        _ => "no leader is known yet; retry after the election (within a few election timeouts)".to_owned(),
    }
}

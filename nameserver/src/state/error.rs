//! Why the metadata refuses a command ([`CommandError`], replicated with the log entry, so plain
//! serializable data) or a client's SDK version ([`SdkVersionError`]), and the checks every
//! concept shares: a person named, a reason given.
//!
//! Below every module of the state that applies commands; above [`super::approval`] only.

use meridian_proto::{ErrorCode, ValidationError};
use serde::{Deserialize, Serialize};

use super::approval::{ApprovalStatus, DecisionAction, Subject, format_time_ms};

/// Why [`super::MetadataState::apply`] refused a command. The message names the thing and
/// the fix. It is part of the replicated result of a log entry, hence `Serialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum CommandError {
    /// A field breaks a rule (name, size, CIDR, version, missing person or reason).
    #[error("{message}")]
    Invalid {
        /// The full message.
        message: String,
    },
    /// The topic or group exists and is not rejected.
    #[error(
        "{subject} {name:?} was already requested by {requested_by} at {} and is {status}: {}",
        format_time_ms(*.requested_at_ms),
        already_requested_fix(*.status)
    )]
    AlreadyRequested {
        /// Topic or group.
        subject: Subject,
        /// Its name.
        name: String,
        /// Who requested it first.
        requested_by: String,
        /// When.
        requested_at_ms: u64,
        /// Where it stands.
        status: ApprovalStatus,
    },
    /// No such topic or group.
    #[error("{subject} {name:?} does not exist: request it first, with an owner")]
    NotFound {
        /// Topic or group.
        subject: Subject,
        /// Its name.
        name: String,
    },
    /// Approving or rejecting something that is no longer requested.
    #[error(
        "cannot {} {subject} {name:?}: it was {status} by {decided_by} at {}{}; {}",
        .attempted.verb(),
        format_time_ms(*.decided_at_ms),
        reason.as_ref().map(|reason| format!(" ({reason})")).unwrap_or_default(),
        already_decided_fix(*.status, *.attempted)
    )]
    AlreadyDecided {
        /// Topic or group.
        subject: Subject,
        /// Its name.
        name: String,
        /// Its current status.
        status: ApprovalStatus,
        /// Who decided.
        decided_by: String,
        /// When.
        decided_at_ms: u64,
        /// Why.
        reason: Option<String>,
        /// What the command tried.
        attempted: DecisionAction,
    },
    /// A topic cannot be approved before it is placed on a broker group.
    #[error(
        "topic {name:?} has no queues on any broker group: update it with queues (e.g. broker-a=8) before approving it"
    )]
    NoQueues {
        /// Topic name.
        name: String,
    },
    /// A consumer group subscribes to a topic that is not (or no longer) usable.
    #[error(
        "consumer group {group:?} subscribes to topic {topic:?}, which is {status}: {}",
        if *.status == ApprovalStatus::Rejected { "subscribe to another topic" } else { "approve the topic first" }
    )]
    TopicNotApproved {
        /// Group name.
        group: String,
        /// Topic name.
        topic: String,
        /// The topic's status.
        status: ApprovalStatus,
    },
    /// A topic still has subscribers.
    #[error(
        "topic {name:?} is used by consumer groups {}: delete those groups first",
        quoted_list(.groups)
    )]
    TopicInUse {
        /// Topic name.
        name: String,
        /// Groups subscribing to it.
        groups: Vec<String>,
    },
    /// Unregistering a broker that is not registered.
    #[error("broker {member:?} is not registered in broker group {group:?}: nothing to unregister")]
    BrokerNotFound {
        /// Broker group name.
        group: String,
        /// Broker name.
        member: String,
    },
    /// An election that is not at the group's next epoch: another decision was applied first.
    #[error(
        "cannot elect {member:?} master of broker group {group:?} at epoch {epoch}: the group is at epoch {group_epoch}{}, so the next election is at epoch {}; read the group again before deciding",
        .master.as_ref().map(|master| format!(" with master {master:?}")).unwrap_or_default(),
        .group_epoch + 1
    )]
    StaleElection {
        /// Broker group name.
        group: String,
        /// The broker the election named.
        member: String,
        /// Epoch the election named.
        epoch: u64,
        /// The group's epoch.
        group_epoch: u64,
        /// The group's master, if any.
        master: Option<String>,
    },
    /// A switchover to a slave that is not in sync with the master: promoting it would lose
    /// writes the master acknowledged.
    #[error(
        "cannot switch broker group {group:?} over to {member:?}: it is not in sync with master {master:?} ({}); wait until it has caught up, or pick one of those",
        if .in_sync.is_empty() { "no slave is in sync".to_owned() } else { format!("in sync: {}", quoted_list(.in_sync)) }
    )]
    NotInSync {
        /// Broker group name.
        group: String,
        /// The target.
        member: String,
        /// The current master.
        master: String,
        /// The slaves in sync with it.
        in_sync: Vec<String>,
    },
    /// An election or switchover names a broker that is not a member of the group.
    #[error(
        "broker group {group:?} has no member {member:?}: {}",
        if .members.is_empty() { "no broker of that group is registered (check `meridian cluster status`)".to_owned() } else { format!("its members are {}", quoted_list(.members)) }
    )]
    MemberNotFound {
        /// Broker group name.
        group: String,
        /// The broker named.
        member: String,
        /// The group's members.
        members: Vec<String>,
    },
    /// A failover drill step that the cluster's state does not allow.
    #[error("{message}")]
    Drill {
        /// What is wrong and what to do.
        message: String,
    },
    /// Removing an IDC rule that does not exist.
    #[error("there is no IDC rule for {cidr}: list the rules to see which exist")]
    IdcRuleNotFound {
        /// The CIDR, in canonical form.
        cidr: String,
    },
    /// Creating a user whose name is taken.
    #[error("user {name:?} already exists: rotate its secret with `meridian user rotate {name}`, or pick another name")]
    UserExists {
        /// User name.
        name: String,
    },
    /// No such user.
    #[error("user {name:?} does not exist: `meridian user list` shows the users")]
    UserNotFound {
        /// User name.
        name: String,
    },
}

impl From<ValidationError> for CommandError {
    fn from(error: ValidationError) -> CommandError {
        CommandError::Invalid {
            message: error.to_string(),
        }
    }
}

impl CommandError {
    /// The wire error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::AlreadyRequested { .. } | CommandError::UserExists { .. } => ErrorCode::AlreadyExists,
            CommandError::UserNotFound { .. } => ErrorCode::InvalidArgument,
            CommandError::NotFound {
                subject: Subject::Topic,
                ..
            } => ErrorCode::TopicNotFound,
            CommandError::NotFound {
                subject: Subject::Group,
                ..
            } => ErrorCode::GroupNotFound,
            CommandError::AlreadyDecided { .. }
            | CommandError::NoQueues { .. }
            | CommandError::TopicNotApproved { .. }
            | CommandError::TopicInUse { .. }
            | CommandError::StaleElection { .. }
            | CommandError::NotInSync { .. }
            | CommandError::Drill { .. } => ErrorCode::FailedPrecondition,
            CommandError::Invalid { .. }
            | CommandError::BrokerNotFound { .. }
            | CommandError::MemberNotFound { .. }
            | CommandError::IdcRuleNotFound { .. } => ErrorCode::InvalidArgument,
        }
    }
}

fn already_requested_fix(status: ApprovalStatus) -> &'static str {
    match status {
        ApprovalStatus::Requested => "wait for an admin to approve or reject it, or pick another name",
        ApprovalStatus::Approved => "use it as it is, or update it",
        ApprovalStatus::Rejected => "request it again",
    }
}

fn already_decided_fix(status: ApprovalStatus, attempted: DecisionAction) -> &'static str {
    match (status, attempted) {
        (ApprovalStatus::Approved, DecisionAction::Approved) => "nothing to do",
        (ApprovalStatus::Approved, _) => "delete it instead",
        _ => "request it again to reopen it",
    }
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the SDK version policy refuses a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdkVersionError {
    /// The version is on the blocked list.
    #[error("client SDK {version} is blocked by the cluster's SDK policy: upgrade the client")]
    Blocked {
        /// Version the client reported.
        version: String,
    },
    /// The version is older than the minimum.
    #[error(
        "client SDK {version} is older than the minimum {min_version} of the cluster's SDK policy: upgrade the client"
    )]
    TooOld {
        /// Version the client reported.
        version: String,
        /// The policy's minimum.
        min_version: String,
    },
    /// The version cannot be compared with the minimum.
    #[error("client SDK version {version:?} is not MAJOR.MINOR.PATCH, so the cluster's minimum cannot be checked")]
    Unparsable {
        /// Version the client reported.
        version: String,
    },
}

/// Refuses an empty person (`owner`, `requested_by`, `decided_by`, ...): every request and
/// decision names who made it.
pub(super) fn require_person(field: &str, value: &str) -> Result<(), CommandError> {
    if value.trim().is_empty() {
        return Err(CommandError::Invalid {
            message: format!("{field} is empty: every request and decision names who made it"),
        });
    }
    Ok(())
}

/// Refuses an empty reason where the history must say why.
pub(super) fn require_reason(subject: Subject, name: &str, doing: &str, reason: &str) -> Result<(), CommandError> {
    if reason.trim().is_empty() {
        return Err(CommandError::Invalid {
            message: format!("{doing} {subject} {name:?} needs a reason: say why, it is kept in the history"),
        });
    }
    Ok(())
}

//! The approval workflow shared by topics and consumer groups: [`Approval`], the one record of
//! where a topic or group stands (requested, approved, rejected) and who moved it there, and
//! [`Decision`], one entry of their histories.
//!
//! A leaf of the state: it names nothing else of the crate, so [`super::error`] can describe
//! refusals in its terms. The rules that move an approval live in [`super::governance`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a governance error or decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
}

impl fmt::Display for Subject {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Subject::Topic => "topic",
            Subject::Group => "consumer group",
        })
    }
}

/// Where a topic or consumer group stands in the approval workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Requested by its owner; not usable yet.
    Requested,
    /// Approved: brokers serve it.
    Approved,
    /// Rejected; may be requested again.
    Rejected,
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            ApprovalStatus::Requested => "requested",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
        })
    }
}

/// Where a topic or consumer group stands in governance, and who put it there. Topics and
/// consumer groups embed it flattened, so its fields sit in their JSON (snapshots, Raft log
/// entries, the HTTP API) exactly where the fields of each used to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Approval status.
    pub status: ApprovalStatus,
    /// Who requested it (the latest request when it was requested again after a rejection).
    pub requested_by: String,
    /// When it was requested, in ms since the Unix epoch.
    pub requested_at_ms: u64,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// When it was approved or rejected.
    pub decided_at_ms: Option<u64>,
    /// Why it was approved or rejected.
    pub decision_reason: Option<String>,
}

impl Approval {
    /// A new request by `by` at `at_ms`, not decided yet.
    pub fn requested(by: String, at_ms: u64) -> Approval {
        Approval {
            status: ApprovalStatus::Requested,
            requested_by: by,
            requested_at_ms: at_ms,
            decided_by: None,
            decided_at_ms: None,
            decision_reason: None,
        }
    }

    /// Whether it blocks a new request of the same name: everything but a rejection does.
    pub fn blocks_request(&self) -> bool {
        self.status != ApprovalStatus::Rejected
    }

    /// Records an approval or rejection.
    pub(super) fn decide(&mut self, status: ApprovalStatus, by: String, at_ms: u64, reason: Option<String>) {
        self.status = status;
        self.decided_by = Some(by);
        self.decided_at_ms = Some(at_ms);
        self.decision_reason = reason;
    }
}

/// A step in the life of a topic or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionAction {
    /// Requested by its owner.
    Requested,
    /// Approved.
    Approved,
    /// Rejected.
    Rejected,
    /// Settings changed.
    Updated,
    /// Deleted.
    Deleted,
}

impl DecisionAction {
    /// The verb, as in "cannot approve topic ...".
    pub fn verb(self) -> &'static str {
        match self {
            DecisionAction::Requested => "request",
            DecisionAction::Approved => "approve",
            DecisionAction::Rejected => "reject",
            DecisionAction::Updated => "update",
            DecisionAction::Deleted => "delete",
        }
    }
}

impl fmt::Display for DecisionAction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            DecisionAction::Requested => "requested",
            DecisionAction::Approved => "approved",
            DecisionAction::Rejected => "rejected",
            DecisionAction::Updated => "updated",
            DecisionAction::Deleted => "deleted",
        })
    }
}

/// One entry of a topic's or group's history: who did what, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// When, in ms since the Unix epoch (time of the log entry).
    pub at_ms: u64,
    /// Who.
    pub by: String,
    /// What.
    pub action: DecisionAction,
    /// Why, as the person said it.
    pub reason: Option<String>,
    /// What changed, for updates; the owner, for requests.
    pub detail: Option<String>,
}

/// Formats ms since the Unix epoch as UTC RFC 3339 to the second, e.g. `2026-11-25T09:30:00Z`.
pub fn format_time_ms(ms: u64) -> String {
    meridian_proto::time::format_seconds(ms as i64)
}

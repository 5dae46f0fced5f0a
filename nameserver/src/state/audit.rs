//! The audit log: every admin action applied to the metadata (approvals, limits and other topic
//! changes, deletions, switchovers, drills, IDC rules, the SDK policy, user changes), with who,
//! when and from where. Replicated like everything else, so every nameserver answers
//! `GET /api/audit` the same.
//!
//! Who: the authenticated user when the request came over an authenticated channel
//! ([`Origin::user`]); otherwise the person the request declared (`--by`), marked
//! unauthenticated. [`describe`] says which commands are admin actions and what they did.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::commands::Command;

pub use super::commands::Origin;
/// An entry as clients read it, defined in the admin contract.
pub use meridian_proto::admin::AuditEntry;

/// Entries kept; older ones are dropped first.
pub const AUDIT_LEN: usize = 10_000;

/// The audit log held in the metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLog {
    entries: VecDeque<AuditEntry>,
    next_seq: u64,
}

impl AuditLog {
    /// Whether nothing was ever recorded (the state leaves the log out then).
    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }

    /// Entries with `seq > after`, oldest first, at most `limit`.
    pub fn since(&self, after: u64, limit: usize) -> Vec<AuditEntry> {
        self.entries
            .iter()
            .filter(|entry| entry.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Records an applied admin action.
    pub(super) fn record(&mut self, now_ms: u64, origin: Option<&Origin>, action: Action) {
        self.next_seq = self.next_seq.max(1);
        let (who, authenticated) = match origin.and_then(|origin| origin.user.clone()) {
            Some(user) => (user, true),
            None => (action.declared_by, false),
        };
        self.entries.push_back(AuditEntry {
            seq: self.next_seq,
            at_ms: now_ms,
            who,
            authenticated,
            from: origin.map(|origin| origin.from.clone()).unwrap_or_default(),
            action: action.name.to_owned(),
            subject: action.subject,
            detail: action.detail,
        });
        self.next_seq += 1;
        while self.entries.len() > AUDIT_LEN {
            self.entries.pop_front();
        }
    }
}

/// An admin action as [`describe`] reads it from its command.
pub(super) struct Action {
    name: &'static str,
    subject: String,
    declared_by: String,
    detail: String,
}

fn action(name: &'static str, subject: String, by: &str, detail: impl Into<String>) -> Option<Action> {
    Some(Action {
        name,
        subject,
        declared_by: by.to_owned(),
        detail: detail.into(),
    })
}

/// The admin action a command is, or `None` for what nodes do on their own (registrations,
/// elections, alerts, data-center loss).
pub(super) fn describe(command: &Command) -> Option<Action> {
    let reason = |reason: &Option<String>| reason.clone().unwrap_or_default();
    match command {
        Command::RequestTopic(request) => action(
            "request_topic",
            format!("topic {}", request.name),
            &request.requested_by,
            format!("owner {}", request.owner),
        ),
        Command::ApproveTopic {
            name,
            decided_by,
            reason: why,
        } => action("approve_topic", format!("topic {name}"), decided_by, reason(why)),
        Command::RejectTopic {
            name,
            decided_by,
            reason,
        } => action("reject_topic", format!("topic {name}"), decided_by, reason.clone()),
        Command::UpdateTopic {
            name,
            updated_by,
            changes,
            reason: why,
        } => action(
            "update_topic",
            format!("topic {name}"),
            updated_by,
            format!(
                "{}{}",
                serde_json::to_string(changes).unwrap_or_default(),
                why.as_ref().map(|why| format!(" ({why})")).unwrap_or_default()
            ),
        ),
        Command::DeleteTopic {
            name,
            deleted_by,
            reason,
        } => action("delete_topic", format!("topic {name}"), deleted_by, reason.clone()),
        Command::RequestGroup(request) => action(
            "request_group",
            format!("group {}", request.name),
            &request.requested_by,
            format!("owner {}", request.owner),
        ),
        Command::ApproveGroup {
            name,
            decided_by,
            reason: why,
        } => action("approve_group", format!("group {name}"), decided_by, reason(why)),
        Command::RejectGroup {
            name,
            decided_by,
            reason,
        } => action("reject_group", format!("group {name}"), decided_by, reason.clone()),
        Command::DeleteGroup {
            name,
            deleted_by,
            reason,
        } => action("delete_group", format!("group {name}"), deleted_by, reason.clone()),
        Command::FenceMaster {
            group,
            preferred,
            by,
            reason: why,
        } => action(
            "switchover",
            format!("broker group {group}"),
            by,
            format!(
                "to {preferred}{}",
                why.as_ref().map(|why| format!(" ({why})")).unwrap_or_default()
            ),
        ),
        Command::SetIdcRule { cidr, idc } => action("set_idc_rule", format!("cidr {cidr}"), "", format!("idc {idc}")),
        Command::RemoveIdcRule { cidr } => action("remove_idc_rule", format!("cidr {cidr}"), "", ""),
        Command::Evacuate { idc, by, reason: why } => action("drill_evacuate", format!("idc {idc}"), by, reason(why)),
        Command::Restore { by, reason: why } => action("drill_restore", "all data centers".into(), by, reason(why)),
        Command::SetSdkPolicy { min_version, .. } => action(
            "set_sdk_policy",
            "sdk policy".into(),
            "",
            format!("min_version {}", min_version.as_deref().unwrap_or("none")),
        ),
        Command::CreateUser { name, by, .. } => action("create_user", format!("user {name}"), by, ""),
        Command::RotateUser { name, by, .. } => action("rotate_user", format!("user {name}"), by, ""),
        Command::DeleteUser { name, by } => action("delete_user", format!("user {name}"), by, ""),
        Command::AclAdd { rule, by } => action(
            match rule.effect {
                meridian_proto::acl::Effect::Allow => "acl_grant",
                meridian_proto::acl::Effect::Deny => "acl_deny",
            },
            format!("{} on {}", rule.subject, rule.resource),
            by,
            rule.actions
                .iter()
                .map(|action| action.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        Command::AclRevoke {
            subject,
            actions,
            resource,
            by,
        } => action(
            "acl_revoke",
            format!("{subject} on {resource}"),
            by,
            actions
                .iter()
                .map(|action| action.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        Command::SetUserTeams { name, teams, by } => action(
            "set_user_teams",
            format!("user {name}"),
            by,
            format!("teams {}", teams.iter().cloned().collect::<Vec<_>>().join(",")),
        ),
        Command::SetSuperUser { name, super_user, by } => action(
            if *super_user {
                "add_super_user"
            } else {
                "remove_super_user"
            },
            format!("user {name}"),
            by,
            "",
        ),
        Command::RegisterBroker { .. }
        | Command::ElectMaster { .. }
        | Command::UnregisterBroker { .. }
        | Command::DeclareIdcLost { .. }
        | Command::ClearIdcLost { .. }
        | Command::RecordAlert(_)
        | Command::Audited { .. } => None,
    }
}

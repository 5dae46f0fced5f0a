//! The admin contract ([`meridian_proto::admin`]) at the nameserver's boundary: an operator's
//! [`AdminCommand`] becomes the Raft [`Command`] of the same name, an [`AdminWrite`] the
//! [`WriteOp`] the service applies. Their JSON is the same, so a nameserver reads an admin
//! client's write as its own; the tests below pin that, variant by variant.

use meridian_proto::admin::{AdminCommand, AdminWrite};

use crate::service::WriteOp;
use crate::state::Command;

impl From<AdminCommand> for Command {
    fn from(command: AdminCommand) -> Command {
        match command {
            AdminCommand::RequestTopic(request) => Command::RequestTopic(request),
            AdminCommand::ApproveTopic {
                name,
                decided_by,
                reason,
            } => Command::ApproveTopic {
                name,
                decided_by,
                reason,
            },
            AdminCommand::RejectTopic {
                name,
                decided_by,
                reason,
            } => Command::RejectTopic {
                name,
                decided_by,
                reason,
            },
            AdminCommand::UpdateTopic {
                name,
                updated_by,
                reason,
                changes,
            } => Command::UpdateTopic {
                name,
                updated_by,
                reason,
                changes,
            },
            AdminCommand::DeleteTopic {
                name,
                deleted_by,
                reason,
            } => Command::DeleteTopic {
                name,
                deleted_by,
                reason,
            },
            AdminCommand::RequestGroup(request) => Command::RequestGroup(request),
            AdminCommand::ApproveGroup {
                name,
                decided_by,
                reason,
            } => Command::ApproveGroup {
                name,
                decided_by,
                reason,
            },
            AdminCommand::RejectGroup {
                name,
                decided_by,
                reason,
            } => Command::RejectGroup {
                name,
                decided_by,
                reason,
            },
            AdminCommand::DeleteGroup {
                name,
                deleted_by,
                reason,
            } => Command::DeleteGroup {
                name,
                deleted_by,
                reason,
            },
            AdminCommand::FenceMaster {
                group,
                preferred,
                by,
                reason,
            } => Command::FenceMaster {
                group,
                preferred,
                by,
                reason,
            },
            AdminCommand::SetIdcRule { cidr, idc } => Command::SetIdcRule { cidr, idc },
            AdminCommand::RemoveIdcRule { cidr } => Command::RemoveIdcRule { cidr },
            AdminCommand::Evacuate { idc, by, reason } => Command::Evacuate { idc, by, reason },
            AdminCommand::Restore { by, reason } => Command::Restore { by, reason },
            AdminCommand::SetSdkPolicy {
                min_version,
                blocked_versions,
                refuse,
                language_min_versions,
            } => Command::SetSdkPolicy {
                min_version,
                blocked_versions,
                refuse,
                language_min_versions,
            },
            AdminCommand::CreateUser {
                name,
                verifier,
                by,
                rocketmq,
            } => Command::CreateUser {
                name,
                verifier,
                by,
                rocketmq,
            },
            AdminCommand::RotateUser {
                name,
                verifier,
                by,
                rocketmq,
            } => Command::RotateUser {
                name,
                verifier,
                by,
                rocketmq,
            },
            AdminCommand::DeleteUser { name, by } => Command::DeleteUser { name, by },
            AdminCommand::AclAdd { rule, by } => Command::AclAdd { rule, by },
            AdminCommand::AclRevoke {
                subject,
                actions,
                resource,
                by,
            } => Command::AclRevoke {
                subject,
                actions,
                resource,
                by,
            },
            AdminCommand::SetUserTeams { name, teams, by } => Command::SetUserTeams { name, teams, by },
            AdminCommand::SetSuperUser { name, super_user, by } => Command::SetSuperUser { name, super_user, by },
        }
    }
}

impl From<AdminWrite> for WriteOp {
    fn from(write: AdminWrite) -> WriteOp {
        match write {
            AdminWrite::Command { command } => WriteOp::Command {
                command: command.into(),
            },
            AdminWrite::AddNode { id, node } => WriteOp::AddNode { id, node },
            AdminWrite::RemoveNode { id } => WriteOp::RemoveNode { id },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use meridian_proto::admin::{
        AdminWriteRequest, ConsumeMode, GroupRequest, Node, ProduceLimitChange, StoredVerifier, TopicChanges,
        TopicRequest,
    };

    use super::*;
    use crate::service::WriteRequest;

    fn verifier() -> StoredVerifier {
        StoredVerifier::from_verifier(&meridian_proto::auth::Verifier::generate(b"a secret"))
    }

    fn every_command() -> Vec<AdminCommand> {
        let reason = Some("because".to_owned());
        vec![
            AdminCommand::RequestTopic(TopicRequest {
                name: "orders".into(),
                owner: "shop".into(),
                description: "orders placed".into(),
                queues: BTreeMap::from([("broker-a".to_owned(), 4)]),
                perm: 3,
                produce_limit: Some(100),
                requested_by: "ana".into(),
            }),
            AdminCommand::ApproveTopic {
                name: "orders".into(),
                decided_by: "bo".into(),
                reason: reason.clone(),
            },
            AdminCommand::RejectTopic {
                name: "orders".into(),
                decided_by: "bo".into(),
                reason: "no".into(),
            },
            AdminCommand::UpdateTopic {
                name: "orders".into(),
                updated_by: "bo".into(),
                reason: None,
                changes: TopicChanges {
                    queues: None,
                    perm: Some(1),
                    produce_limit: ProduceLimitChange::Set(50),
                    owner: Some("ops".into()),
                    description: None,
                },
            },
            AdminCommand::DeleteTopic {
                name: "orders".into(),
                deleted_by: "bo".into(),
                reason: "gone".into(),
            },
            AdminCommand::RequestGroup(GroupRequest {
                name: "billing".into(),
                owner: "finance".into(),
                description: String::new(),
                topics: BTreeSet::from(["orders".to_owned()]),
                max_retries: None,
                consume_mode: ConsumeMode::Broadcasting,
                requested_by: "ana".into(),
            }),
            AdminCommand::ApproveGroup {
                name: "billing".into(),
                decided_by: "bo".into(),
                reason: None,
            },
            AdminCommand::RejectGroup {
                name: "billing".into(),
                decided_by: "bo".into(),
                reason: "no".into(),
            },
            AdminCommand::DeleteGroup {
                name: "billing".into(),
                deleted_by: "bo".into(),
                reason: "gone".into(),
            },
            AdminCommand::FenceMaster {
                group: "broker-a".into(),
                preferred: "a-1".into(),
                by: "bo".into(),
                reason: reason.clone(),
            },
            AdminCommand::SetIdcRule {
                cidr: "10.1.0.0/16".into(),
                idc: "dc1".into(),
            },
            AdminCommand::RemoveIdcRule {
                cidr: "10.1.0.0/16".into(),
            },
            AdminCommand::Evacuate {
                idc: "dc1".into(),
                by: "bo".into(),
                reason: reason.clone(),
            },
            AdminCommand::Restore {
                by: "bo".into(),
                reason: None,
            },
            AdminCommand::SetSdkPolicy {
                min_version: Some("1.2.0".into()),
                blocked_versions: BTreeSet::from(["1.3.1".to_owned()]),
                refuse: true,
                language_min_versions: BTreeMap::from([("java".to_owned(), "5.0.0".to_owned())]),
            },
            AdminCommand::CreateUser {
                name: "alice".into(),
                verifier: verifier(),
                by: "bo".into(),
                rocketmq: None,
            },
            AdminCommand::RotateUser {
                name: "alice".into(),
                verifier: verifier(),
                by: "bo".into(),
                rocketmq: Some(meridian_proto::admin::RocketmqSecret::Sealed { sealed: "v1:00".into() }),
            },
            AdminCommand::DeleteUser {
                name: "alice".into(),
                by: "bo".into(),
            },
            AdminCommand::AclAdd {
                rule: meridian_proto::acl::Rule {
                    subject: meridian_proto::acl::Subject::Team("payments".into()),
                    effect: meridian_proto::acl::Effect::Deny,
                    actions: [meridian_proto::acl::Action::Sql].into(),
                    resource: meridian_proto::acl::ResourcePattern::parse("topic:pay*").unwrap(),
                },
                by: "bo".into(),
            },
            AdminCommand::AclRevoke {
                subject: meridian_proto::acl::Subject::Anyone,
                actions: [meridian_proto::acl::Action::Pub].into(),
                resource: meridian_proto::acl::ResourcePattern::Any,
                by: "bo".into(),
            },
            AdminCommand::SetUserTeams {
                name: "alice".into(),
                teams: BTreeSet::from(["payments".to_owned()]),
                by: "bo".into(),
            },
            AdminCommand::SetSuperUser {
                name: "alice".into(),
                super_user: true,
                by: "bo".into(),
            },
        ]
    }

    #[test]
    fn every_admin_command_is_its_raft_command_in_the_same_json() {
        for command in every_command() {
            let sent = serde_json::to_value(&command).unwrap();
            let raft: Command = command.clone().into();
            assert_eq!(sent, serde_json::to_value(&raft).unwrap(), "{command:?}");
            let read: Command = serde_json::from_value(sent).unwrap();
            assert_eq!(read, raft);
        }
    }

    #[test]
    fn an_admin_write_request_reads_as_the_services_write_request() {
        let node = Node {
            addr: "127.0.0.1:7801".into(),
            http_addr: "127.0.0.1:8081".into(),
            idc: "dc1".into(),
        };
        let writes = every_command()
            .into_iter()
            .map(|command| AdminWrite::Command { command })
            .chain([AdminWrite::AddNode { id: 2, node }, AdminWrite::RemoveNode { id: 2 }]);
        for write in writes {
            let body = serde_json::to_vec(&AdminWriteRequest {
                op: write.clone(),
                forwarded: false,
            })
            .unwrap();
            let read: WriteRequest = serde_json::from_slice(&body).unwrap();
            assert_eq!(read.op, WriteOp::from(write));
            assert!(!read.forwarded);
        }
    }
}

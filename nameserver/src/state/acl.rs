//! Authorization rules, super users and users' teams, replicated like users
//! ([`super::Command::AclAdd`], `AclRevoke`, `SetUserTeams`, `SetSuperUser`). The model and the
//! decision are [`meridian_proto::acl`]; this module only stores and changes the parts of it the
//! nameservers own. [`snapshot`] joins them with the owners of approved topics and groups into
//! the [`Acl`] served to brokers (in their metadata), the tracer and the query service
//! (`GET /api/acl`).

use std::collections::{BTreeMap, BTreeSet};

use meridian_proto::acl::{self, Acl, Action, ResourcePattern, Rule, Subject};
use serde::{Deserialize, Serialize};

use super::ApprovalStatus;
use super::commands::Command;
use super::error::{CommandError, require_person};
use super::governance::{ConsumerGroup, Topic};
use super::users::User;

/// The authorization part of the metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclState {
    /// Rules in the order they were added.
    pub rules: Vec<Rule>,
    /// Users who may do everything.
    pub super_users: BTreeSet<String>,
    /// Each user's teams.
    pub teams: BTreeMap<String, BTreeSet<String>>,
}

impl AclState {
    /// Whether nothing was ever set (the state leaves it out then).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.super_users.is_empty() && self.teams.is_empty()
    }
}

fn invalid(message: String) -> CommandError {
    CommandError::Invalid { message }
}

/// The authorization part, lent by [`super::MetadataState::apply`] with the users it names.
pub(super) struct AclStore<'a> {
    pub acl: &'a mut AclState,
    pub users: &'a BTreeMap<String, User>,
}

impl AclStore<'_> {
    pub fn add(&mut self, rule: Rule, by: &str) -> Result<(), CommandError> {
        require_person("by", by)?;
        acl::validate_rule(&rule).map_err(invalid)?;
        let Rule {
            subject,
            effect,
            actions,
            resource,
        } = rule;
        // The same merge the decision's own tests use.
        let mut model = Acl {
            rules: std::mem::take(&mut self.acl.rules),
            ..Acl::default()
        };
        model.add(subject, effect, actions, resource);
        self.acl.rules = model.rules;
        Ok(())
    }

    pub fn revoke(
        &mut self,
        subject: &Subject,
        actions: &BTreeSet<Action>,
        resource: &ResourcePattern,
        by: &str,
    ) -> Result<(), CommandError> {
        require_person("by", by)?;
        let mut model = Acl {
            rules: std::mem::take(&mut self.acl.rules),
            ..Acl::default()
        };
        let removed = model.revoke(subject, actions, resource);
        self.acl.rules = model.rules;
        if removed == 0 {
            return Err(invalid(format!(
                "no rule gives {subject} any of those actions on {resource}: `meridian acl list` shows the rules"
            )));
        }
        Ok(())
    }

    pub fn set_teams(&mut self, name: String, teams: BTreeSet<String>, by: &str) -> Result<(), CommandError> {
        require_person("by", by)?;
        if !self.users.contains_key(&name) {
            return Err(CommandError::UserNotFound { name });
        }
        for team in &teams {
            acl::validate_team(team).map_err(invalid)?;
        }
        if teams.is_empty() {
            self.acl.teams.remove(&name);
        } else {
            self.acl.teams.insert(name, teams);
        }
        Ok(())
    }

    pub fn set_super_user(&mut self, name: String, super_user: bool, by: &str) -> Result<(), CommandError> {
        require_person("by", by)?;
        if super_user {
            if !self.users.contains_key(&name) {
                return Err(CommandError::UserNotFound { name });
            }
            self.acl.super_users.insert(name);
        } else if !self.acl.super_users.remove(&name) {
            return Err(invalid(format!(
                "user {name:?} is not a super user: `meridian acl list` shows the super users"
            )));
        }
        Ok(())
    }

    /// A deleted user keeps no rights: a user made later with the same name starts with none.
    pub fn forget_user(&mut self, name: &str) {
        self.acl.teams.remove(name);
        self.acl.super_users.remove(name);
        self.acl
            .rules
            .retain(|rule| !matches!(&rule.subject, Subject::User(user) if user == name));
    }
}

/// Refuses `user` unless a super user; the error says what needed it and how to become one.
pub fn require_super_user(acl: &Acl, user: &str, doing: &str) -> Result<(), String> {
    if acl.super_users.contains(user) {
        return Ok(());
    }
    Err(format!(
        "user {user:?} may not {doing}: only super users may; ask a super user for `meridian acl super-user add {user}`"
    ))
}

/// What a user's admin write needs: ADMIN on the topic or group it names (approve, reject,
/// update, delete; an ACL rule on one literal topic or group), super user for everything
/// cluster-wide (switchovers, drills, IDC rules, the SDK policy, users, teams, super users, rules
/// on prefixes or `*`). Asking for a topic or group needs nothing: approving it does.
pub fn authorize_command(acl: &Acl, user: &str, command: &Command) -> Result<(), String> {
    use meridian_proto::acl::{NamePattern, Resource};
    let admin_on = |resource: Resource<'_>, doing: &str| -> Result<(), String> {
        if acl.allowed(
            &meridian_proto::auth::Principal::User(user.to_owned()),
            Action::Admin,
            resource,
        ) {
            return Ok(());
        }
        Err(format!(
            "user {user:?} may not {doing}: it needs ADMIN on {resource}; ask an administrator for `meridian acl grant user:{user} ADMIN {resource}`"
        ))
    };
    match command {
        Command::Audited { command, .. } => authorize_command(acl, user, command),
        Command::RequestTopic(_) | Command::RequestGroup(_) => Ok(()),
        Command::ApproveTopic { name, .. }
        | Command::RejectTopic { name, .. }
        | Command::UpdateTopic { name, .. }
        | Command::DeleteTopic { name, .. } => admin_on(Resource::Topic(name), "change this topic"),
        Command::ApproveGroup { name, .. } | Command::RejectGroup { name, .. } | Command::DeleteGroup { name, .. } => {
            admin_on(Resource::Group(name), "change this consumer group")
        }
        Command::AclAdd { rule, .. } => match &rule.resource {
            ResourcePattern::Topic(NamePattern::Literal(name)) => admin_on(Resource::Topic(name), "change its rules"),
            ResourcePattern::Group(NamePattern::Literal(name)) => admin_on(Resource::Group(name), "change its rules"),
            _ => require_super_user(acl, user, "add rules on prefixes or *"),
        },
        Command::AclRevoke { resource, .. } => match resource {
            ResourcePattern::Topic(NamePattern::Literal(name)) => admin_on(Resource::Topic(name), "change its rules"),
            ResourcePattern::Group(NamePattern::Literal(name)) => admin_on(Resource::Group(name), "change its rules"),
            _ => require_super_user(acl, user, "revoke rules on prefixes or *"),
        },
        _ => require_super_user(
            acl,
            user,
            "make cluster-wide changes (switchovers, drills, IDC rules, the SDK policy, users, teams)",
        ),
    }
}

/// The whole model as nodes decide with it: the rules, super users and teams, with the owners of
/// approved topics and groups.
pub fn snapshot(
    state: &AclState,
    topics: &BTreeMap<String, Topic>,
    consumer_groups: &BTreeMap<String, ConsumerGroup>,
) -> Acl {
    Acl {
        rules: state.rules.clone(),
        super_users: state.super_users.clone(),
        teams: state.teams.clone(),
        topic_owners: topics
            .values()
            .filter(|topic| topic.approval.status == ApprovalStatus::Approved)
            .map(|topic| (topic.name.clone(), topic.owner.clone()))
            .collect(),
        group_owners: consumer_groups
            .values()
            .filter(|group| group.approval.status == ApprovalStatus::Approved)
            .map(|group| (group.name.clone(), group.owner.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use meridian_proto::acl::{Effect, Resource};
    use meridian_proto::auth::{Principal, Verifier};

    use crate::state::{Command, CommandError, MetadataState, Origin, StoredVerifier, TopicRequest};

    use super::*;

    fn create_user(state: &mut MetadataState, name: &str) {
        state
            .apply(
                Command::CreateUser {
                    name: name.into(),
                    verifier: StoredVerifier::from_verifier(&Verifier::generate(b"a secret")),
                    by: "ops".into(),
                    rocketmq: None,
                },
                1,
            )
            .unwrap();
    }

    fn rule(effect: Effect, subject: &str, actions: &str, resource: &str) -> Rule {
        Rule {
            subject: Subject::parse(subject).unwrap(),
            effect,
            actions: Action::parse_list(actions).unwrap(),
            resource: ResourcePattern::parse(resource).unwrap(),
        }
    }

    fn audited(user: &str, command: Command) -> Command {
        Command::Audited {
            origin: Origin {
                from: "127.0.0.1:5000".into(),
                user: Some(user.into()),
            },
            command: Box::new(command),
        }
    }

    #[test]
    fn acl_rules_teams_and_super_users_apply_survive_a_snapshot_and_are_audited() {
        let mut state = MetadataState::default();
        create_user(&mut state, "alice");
        create_user(&mut state, "root");
        let version = state.metadata_version();
        state
            .apply(
                audited(
                    "root",
                    Command::AclAdd {
                        rule: rule(Effect::Allow, "team:payments", "PUB,SUB", "topic:pay*"),
                        by: "root".into(),
                    },
                ),
                2,
            )
            .unwrap();
        assert!(state.metadata_version() > version, "brokers must refetch the ACL");
        state
            .apply(
                Command::AclAdd {
                    rule: rule(Effect::Deny, "user:alice", "SUB", "topic:payments"),
                    by: "root".into(),
                },
                3,
            )
            .unwrap();
        state
            .apply(
                Command::SetUserTeams {
                    name: "alice".into(),
                    teams: ["payments".to_owned()].into(),
                    by: "root".into(),
                },
                4,
            )
            .unwrap();
        state
            .apply(
                Command::SetSuperUser {
                    name: "root".into(),
                    super_user: true,
                    by: "meridian dev".into(),
                },
                5,
            )
            .unwrap();
        let model = state.acl();
        let alice = Principal::User("alice".into());
        assert!(model.allowed(&alice, Action::Pub, Resource::Topic("payments")));
        assert!(!model.allowed(&alice, Action::Sub, Resource::Topic("payments")));
        assert!(model.allowed(&alice, Action::Sub, Resource::Topic("pay-eu")));
        assert!(model.allowed(&Principal::User("root".into()), Action::Admin, Resource::Topic("x")));

        // A snapshot (the state's JSON) gives the same state back.
        let json = serde_json::to_string(&state).unwrap();
        let restored: MetadataState = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, state);
        assert_eq!(restored.acl(), model);

        let audit = state.audit().since(0, 100);
        let grant = audit.iter().find(|entry| entry.action == "acl_grant").unwrap();
        assert_eq!((grant.who.as_str(), grant.authenticated), ("root", true));
        assert_eq!(grant.subject, "team:payments on topic:pay*");
        assert_eq!(grant.detail, "PUB,SUB");
        assert!(audit.iter().any(|entry| entry.action == "acl_deny"));
        assert!(audit.iter().any(|entry| entry.action == "set_user_teams"));
        assert!(audit.iter().any(|entry| entry.action == "add_super_user"));

        // Revoking removes the actions; revoking nothing is an error that changes nothing.
        state
            .apply(
                Command::AclRevoke {
                    subject: Subject::User("alice".into()),
                    actions: [Action::Sub].into(),
                    resource: ResourcePattern::parse("topic:payments").unwrap(),
                    by: "root".into(),
                },
                6,
            )
            .unwrap();
        assert!(state.acl().allowed(&alice, Action::Sub, Resource::Topic("payments")));
        let before = state.clone();
        let error = state
            .apply(
                Command::AclRevoke {
                    subject: Subject::User("alice".into()),
                    actions: [Action::Sub].into(),
                    resource: ResourcePattern::parse("topic:payments").unwrap(),
                    by: "root".into(),
                },
                7,
            )
            .unwrap_err();
        assert!(error.to_string().contains("meridian acl list"), "{error}");
        assert_eq!(state, before);

        // A deleted user keeps nothing.
        state
            .apply(
                Command::DeleteUser {
                    name: "root".into(),
                    by: "ops".into(),
                },
                8,
            )
            .unwrap();
        assert!(state.acl().super_users.is_empty());
    }

    #[test]
    fn acl_commands_refuse_unknown_users_and_invalid_rules() {
        let mut state = MetadataState::default();
        let error = state
            .apply(
                Command::SetSuperUser {
                    name: "ghost".into(),
                    super_user: true,
                    by: "ops".into(),
                },
                1,
            )
            .unwrap_err();
        assert!(matches!(error, CommandError::UserNotFound { .. }));
        let mut empty = rule(Effect::Allow, "*", "PUB", "*");
        empty.actions.clear();
        let error = state
            .apply(
                Command::AclAdd {
                    rule: empty,
                    by: "ops".into(),
                },
                1,
            )
            .unwrap_err();
        assert!(error.to_string().contains("names no action"), "{error}");
        assert_eq!(state, MetadataState::default());
    }

    #[test]
    fn acl_snapshot_gives_owners_of_approved_topics_only() {
        let mut state = MetadataState::default();
        for (name, approve) in [("orders", true), ("drafts", false)] {
            state
                .apply(
                    Command::RequestTopic(TopicRequest {
                        name: name.into(),
                        owner: "shop".into(),
                        description: String::new(),
                        queues: BTreeMap::from([("broker-a".to_owned(), 1)]),
                        perm: 3,
                        produce_limit: None,
                        requested_by: "ana".into(),
                    }),
                    1,
                )
                .unwrap();
            if approve {
                state
                    .apply(
                        Command::ApproveTopic {
                            name: name.into(),
                            decided_by: "bo".into(),
                            reason: None,
                        },
                        2,
                    )
                    .unwrap();
            }
        }
        let model = state.acl();
        assert_eq!(
            model.topic_owners,
            BTreeMap::from([("orders".to_owned(), "shop".to_owned())])
        );
    }
}

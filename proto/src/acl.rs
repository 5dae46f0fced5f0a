//! Authorization: who may do what to which topic or consumer group. Pure: no I/O, no clock.
//!
//! The model ([`Acl`]): [`Rule`]s of `{subject, effect, actions, resource}`, super users, users'
//! teams, and the owners the approval workflow recorded on topics and groups. One function decides
//! ([`Acl::decide`], [`Acl::check`]):
//!
//! 1. cluster nodes ([`Principal::Node`]) and super users may do everything;
//! 2. of the rules whose subject is the user, one of the user's teams or `*`, that name the action
//!    and whose resource pattern matches, only the **most specific** count: a literal name beats a
//!    longer prefix, which beats a shorter prefix, which beats `*` ([`Specificity`]);
//! 3. among those, **deny beats allow** (RocketMQ ACL 2.0 had this inverted until late 2025);
//! 4. the owner recorded on an approved topic (a user, or a team the user is in) has an implicit
//!    allow of PUB, SUB, TRACE and SQL on it, and of SUB on an owned group, at literal specificity
//!    (an explicit deny on the literal name still wins);
//! 5. nothing matched: denied.
//!
//! The nameservers keep rules, super users and teams in their Raft state and hand the whole
//! [`Acl`] (owners filled in) to brokers, the tracer and the query service, which decide locally.
//! Start with [`Acl::decide`]; the text forms (`user:alice`, `topic:orders*`) are in
//! [`Subject::parse`] and [`ResourcePattern::parse`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::auth::{self, Principal};
use crate::topics::{self, TopicKind};

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Produce to a topic (send, batch, transaction end).
    Pub,
    /// Consume a topic, or consume as a group (pull, subscribe, offsets).
    Sub,
    /// Administer a topic or group (offset resets, dead-letter resends, governance writes).
    Admin,
    /// Look up a topic's message traces.
    Trace,
    /// Query a topic's messages with SQL.
    Sql,
}

impl Action {
    /// Every action, in order.
    pub const ALL: [Action; 5] = [Action::Pub, Action::Sub, Action::Admin, Action::Trace, Action::Sql];

    /// The upper-case name, as rules and errors spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pub => "PUB",
            Action::Sub => "SUB",
            Action::Admin => "ADMIN",
            Action::Trace => "TRACE",
            Action::Sql => "SQL",
        }
    }

    /// Parses one action name, in any case.
    pub fn parse(text: &str) -> Result<Action, String> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| format!("action {text:?} is unknown: use PUB, SUB, ADMIN, TRACE or SQL"))
    }

    /// Parses a comma-separated list (`PUB,SUB`); `ALL` means every action.
    pub fn parse_list(text: &str) -> Result<BTreeSet<Action>, String> {
        if text.trim().eq_ignore_ascii_case("all") {
            return Ok(Action::ALL.into_iter().collect());
        }
        text.split(',').map(Action::parse).collect()
    }
}

impl fmt::Display for Action {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Whether a rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Allows.
    Allow,
    /// Denies; beats an allow of the same specificity.
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

/// Whom a rule is about: `user:<name>`, `team:<name>` or `*` (every authenticated user).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Subject {
    /// Every authenticated user.
    Anyone,
    /// One user.
    User(String),
    /// Every user of a team ([`Acl::teams`]).
    Team(String),
}

impl Subject {
    /// Parses `user:<name>`, `team:<name>` or `*`; names follow the user-name rule.
    pub fn parse(text: &str) -> Result<Subject, String> {
        let subject = if text == "*" {
            Subject::Anyone
        } else if let Some(name) = text.strip_prefix("user:") {
            Subject::User(name.to_owned())
        } else if let Some(name) = text.strip_prefix("team:") {
            Subject::Team(name.to_owned())
        } else {
            return Err(format!(
                "subject {text:?} is invalid: write user:<name>, team:<name> or * (every user)"
            ));
        };
        validate_subject(&subject)?;
        Ok(subject)
    }
}

impl TryFrom<String> for Subject {
    type Error = String;
    fn try_from(text: String) -> Result<Subject, String> {
        Subject::parse(&text)
    }
}

impl From<Subject> for String {
    fn from(subject: Subject) -> String {
        subject.to_string()
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Anyone => formatter.write_str("*"),
            Subject::User(name) => write!(formatter, "user:{name}"),
            Subject::Team(name) => write!(formatter, "team:{name}"),
        }
    }
}

/// A name or a prefix of names (written with a trailing `*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NamePattern {
    /// Exactly this name.
    Literal(String),
    /// Every name starting with this (possibly empty: every name).
    Prefix(String),
}

impl NamePattern {
    fn parse(text: &str) -> NamePattern {
        match text.strip_suffix('*') {
            Some(prefix) => NamePattern::Prefix(prefix.to_owned()),
            None => NamePattern::Literal(text.to_owned()),
        }
    }

    fn specificity(&self, name: &str) -> Option<Specificity> {
        match self {
            NamePattern::Literal(literal) => (literal == name).then_some(Specificity::Literal),
            NamePattern::Prefix(prefix) => name
                .starts_with(prefix.as_str())
                .then_some(Specificity::Prefix(prefix.len())),
        }
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamePattern::Literal(name) => formatter.write_str(name),
            NamePattern::Prefix(prefix) => write!(formatter, "{prefix}*"),
        }
    }
}

/// What a rule applies to: `topic:<name>`, `topic:<prefix>*`, `group:<name>`, `group:<prefix>*`
/// or `*` (every topic and group).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ResourcePattern {
    /// Every topic and group.
    Any,
    /// Topics.
    Topic(NamePattern),
    /// Consumer groups.
    Group(NamePattern),
}

impl ResourcePattern {
    /// Parses the text form; names and prefixes may hold only what topic and group names may.
    pub fn parse(text: &str) -> Result<ResourcePattern, String> {
        let pattern = if text == "*" {
            ResourcePattern::Any
        } else if let Some(name) = text.strip_prefix("topic:") {
            ResourcePattern::Topic(NamePattern::parse(name))
        } else if let Some(name) = text.strip_prefix("group:") {
            ResourcePattern::Group(NamePattern::parse(name))
        } else {
            return Err(format!(
                "resource {text:?} is invalid: write topic:<name>, topic:<prefix>*, group:<name>, group:<prefix>* or *"
            ));
        };
        validate_resource_pattern(&pattern)?;
        Ok(pattern)
    }

    /// How specifically this pattern names `resource`; `None` when it does not match.
    pub fn specificity(&self, resource: Resource<'_>) -> Option<Specificity> {
        match (self, resource) {
            (ResourcePattern::Any, _) => Some(Specificity::Any),
            (ResourcePattern::Topic(pattern), Resource::Topic(name)) => pattern.specificity(name),
            (ResourcePattern::Group(pattern), Resource::Group(name)) => pattern.specificity(name),
            _ => None,
        }
    }
}

impl TryFrom<String> for ResourcePattern {
    type Error = String;
    fn try_from(text: String) -> Result<ResourcePattern, String> {
        ResourcePattern::parse(&text)
    }
}

impl From<ResourcePattern> for String {
    fn from(pattern: ResourcePattern) -> String {
        pattern.to_string()
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourcePattern::Any => formatter.write_str("*"),
            ResourcePattern::Topic(pattern) => write!(formatter, "topic:{pattern}"),
            ResourcePattern::Group(pattern) => write!(formatter, "group:{pattern}"),
        }
    }
}

/// How specifically a pattern matched; more specific patterns decide. Ordered: `Any` <
/// `Prefix(shorter)` < `Prefix(longer)` < `Literal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Specificity {
    /// `*`.
    Any,
    /// A prefix of this many bytes (`topic:*` is a prefix of 0 bytes: more specific than `*`).
    Prefix(usize),
    /// The exact name.
    Literal,
}

/// A resource a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource<'a> {
    /// A topic.
    Topic(&'a str),
    /// A consumer group.
    Group(&'a str),
}

impl<'a> Resource<'a> {
    /// The resource a topic name stands for: a group's retry and dead-letter topics are the
    /// group's, every other topic is itself.
    pub fn of_topic(topic: &'a str) -> Resource<'a> {
        match topics::kind(topic) {
            TopicKind::Retry(group) | TopicKind::DeadLetter(group) => Resource::Group(group),
            _ => Resource::Topic(topic),
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Topic(name) => write!(formatter, "topic:{name}"),
            Resource::Group(name) => write!(formatter, "group:{name}"),
        }
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Whom it is about.
    pub subject: Subject,
    /// Allow or deny.
    pub effect: Effect,
    /// The actions it covers (never empty).
    pub actions: BTreeSet<Action>,
    /// What it applies to.
    pub resource: ResourcePattern,
}

impl fmt::Display for Rule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions: Vec<&str> = self.actions.iter().map(|action| action.as_str()).collect();
        write!(
            formatter,
            "{} {} {} {}",
            self.effect,
            self.subject,
            actions.join(","),
            self.resource
        )
    }
}

/// Checks a subject's name: the user-name rule, for teams too.
pub fn validate_subject(subject: &Subject) -> Result<(), String> {
    match subject {
        Subject::Anyone => Ok(()),
        Subject::User(name) => auth::validate_user_name(name),
        Subject::Team(name) => validate_team(name),
    }
}

/// Checks a team name: the user-name rule.
pub fn validate_team(name: &str) -> Result<(), String> {
    auth::validate_user_name(name).map_err(|message| message.replacen("user name", "team name", 1))
}

/// Checks a resource pattern: a literal must be a valid topic or group name, a prefix may hold
/// only the characters names may (`[A-Za-z0-9_%|-]`) and at most 127 of them.
pub fn validate_resource_pattern(pattern: &ResourcePattern) -> Result<(), String> {
    let (kind, name) = match pattern {
        ResourcePattern::Any => return Ok(()),
        ResourcePattern::Topic(name) => ("topic", name),
        ResourcePattern::Group(name) => ("group", name),
    };
    match name {
        NamePattern::Literal(literal) => match kind {
            "topic" => crate::validate::validate_topic(literal).map_err(|error| error.to_string()),
            _ => crate::validate::validate_group(literal).map_err(|error| error.to_string()),
        },
        NamePattern::Prefix(prefix) => {
            let valid = prefix.len() <= 127
                && prefix
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'%' | b'|'));
            if valid {
                Ok(())
            } else {
                Err(format!(
                    "{kind} prefix {prefix:?} is invalid: only [A-Za-z0-9_%|-], at most 127 chars, then one trailing *"
                ))
            }
        }
    }
}

/// Checks a rule: its subject, its resource, and at least one action.
pub fn validate_rule(rule: &Rule) -> Result<(), String> {
    validate_subject(&rule.subject)?;
    validate_resource_pattern(&rule.resource)?;
    if rule.actions.is_empty() {
        return Err(format!(
            "the rule for {} on {} names no action: give at least one of PUB, SUB, ADMIN, TRACE, SQL",
            rule.subject, rule.resource
        ));
    }
    Ok(())
}

/// Everything a node needs to decide: rules, super users, teams, and the owners of approved
/// topics and groups. The JSON of `GET /api/acl` and of the brokers' metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Acl {
    /// Rules, in the order they were granted (order never decides).
    pub rules: Vec<Rule>,
    /// Users who may do everything.
    pub super_users: BTreeSet<String>,
    /// Each user's teams.
    pub teams: BTreeMap<String, BTreeSet<String>>,
    /// Owner (a user or a team) of each approved topic.
    pub topic_owners: BTreeMap<String, String>,
    /// Owner (a user or a team) of each approved consumer group.
    pub group_owners: BTreeMap<String, String>,
}

/// Where a service that is not a nameserver reads the ACL it filters with (the tracer and the
/// query service): a snapshot kept fresh by its owner, read once per request, never a round trip.
pub trait AclSource: Send + Sync + 'static {
    /// The model in force now.
    fn acl(&self) -> std::sync::Arc<Acl>;
}

/// The outcome of [`Acl::decide`], with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// A cluster node.
    AllowedNode,
    /// A super user.
    AllowedSuperUser,
    /// The most specific matching rule allows.
    AllowedBy(&'a Rule),
    /// The user (or a team of theirs) owns the topic or group.
    AllowedOwner,
    /// The most specific matching rules include this deny.
    DeniedBy(&'a Rule),
    /// No rule matched.
    DeniedNoRule,
    /// Not logged in.
    DeniedAnonymous,
}

impl Decision<'_> {
    /// Whether the request may go on.
    pub fn is_allowed(&self) -> bool {
        matches!(
            self,
            Decision::AllowedNode | Decision::AllowedSuperUser | Decision::AllowedBy(_) | Decision::AllowedOwner
        )
    }
}

/// A refusal: who, what, on which resource, why, and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AccessDenied {
    /// The whole message.
    pub message: String,
}

impl AccessDenied {
    /// The refusal of `action` on `resource` for `principal`.
    pub fn new(principal: &Principal, action: Action, resource: Resource<'_>, decision: &Decision<'_>) -> AccessDenied {
        let who = match principal {
            Principal::User(user) => format!("user:{user}"),
            _ => "user:<name>".to_owned(),
        };
        let why = match decision {
            Decision::DeniedBy(rule) => format!("the rule \"{rule}\" denies it"),
            Decision::DeniedAnonymous => "the connection did not log in".to_owned(),
            _ => "no rule allows it".to_owned(),
        };
        AccessDenied {
            message: format!(
                "{principal} may not {action} {resource}: {why}; ask an administrator for `meridian acl grant {who} {action} {resource}`{}",
                if matches!(decision, Decision::DeniedBy(_)) {
                    " (and the deny to be revoked: a deny beats an allow as specific)"
                } else {
                    ""
                }
            ),
        }
    }
}

impl Acl {
    /// Whether `user` is a super user.
    pub fn is_super_user(&self, user: &str) -> bool {
        self.super_users.contains(user)
    }

    /// Whether `user` is `owner` or in the team `owner`.
    fn owns(&self, user: &str, owner: &str) -> bool {
        user == owner || self.in_team(user, owner)
    }

    fn in_team(&self, user: &str, team: &str) -> bool {
        self.teams.get(user).is_some_and(|teams| teams.contains(team))
    }

    fn subject_matches(&self, subject: &Subject, user: &str) -> bool {
        match subject {
            Subject::Anyone => true,
            Subject::User(name) => name == user,
            Subject::Team(team) => self.in_team(user, team),
        }
    }

    /// Whether the owner recorded on `resource` grants `user` the implicit allow of `action`.
    fn owner_allows(&self, user: &str, action: Action, resource: Resource<'_>) -> bool {
        match resource {
            Resource::Topic(topic) => {
                matches!(action, Action::Pub | Action::Sub | Action::Trace | Action::Sql)
                    && self.topic_owners.get(topic).is_some_and(|owner| self.owns(user, owner))
            }
            Resource::Group(group) => {
                action == Action::Sub && self.group_owners.get(group).is_some_and(|owner| self.owns(user, owner))
            }
        }
    }

    /// Decides whether `principal` may do `action` on `resource` (see the module doc for the
    /// order). Allocates nothing.
    pub fn decide<'a>(&'a self, principal: &Principal, action: Action, resource: Resource<'_>) -> Decision<'a> {
        let user = match principal {
            Principal::Node => return Decision::AllowedNode,
            Principal::Anonymous => return Decision::DeniedAnonymous,
            Principal::User(user) => user.as_str(),
        };
        if self.is_super_user(user) {
            return Decision::AllowedSuperUser;
        }
        let mut best: Option<(Specificity, Decision<'a>)> = None;
        if self.owner_allows(user, action, resource) {
            best = Some((Specificity::Literal, Decision::AllowedOwner));
        }
        for rule in &self.rules {
            if !rule.actions.contains(&action) || !self.subject_matches(&rule.subject, user) {
                continue;
            }
            let Some(specificity) = rule.resource.specificity(resource) else {
                continue;
            };
            let decision = match rule.effect {
                Effect::Allow => Decision::AllowedBy(rule),
                Effect::Deny => Decision::DeniedBy(rule),
            };
            best = match best {
                None => Some((specificity, decision)),
                Some((best_specificity, _)) if specificity > best_specificity => Some((specificity, decision)),
                // As specific: a deny replaces an allow, never the other way round.
                Some((best_specificity, best_decision))
                    if specificity == best_specificity && rule.effect == Effect::Deny && best_decision.is_allowed() =>
                {
                    Some((specificity, decision))
                }
                kept => kept,
            };
        }
        best.map_or(Decision::DeniedNoRule, |(_, decision)| decision)
    }

    /// Whether `principal` may do `action` on `resource`.
    pub fn allowed(&self, principal: &Principal, action: Action, resource: Resource<'_>) -> bool {
        self.decide(principal, action, resource).is_allowed()
    }

    /// [`Acl::decide`] as a result whose error names the user, the action, the resource and the
    /// fix. Allocates only on refusal.
    pub fn check(&self, principal: &Principal, action: Action, resource: Resource<'_>) -> Result<(), AccessDenied> {
        let decision = self.decide(principal, action, resource);
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(AccessDenied::new(principal, action, resource, &decision))
        }
    }

    /// [`Acl::check`] of a topic named in a request: a group's retry and dead-letter topics are
    /// checked as the group ([`Resource::of_topic`]).
    pub fn check_topic(&self, principal: &Principal, action: Action, topic: &str) -> Result<(), AccessDenied> {
        self.check(principal, action, Resource::of_topic(topic))
    }

    /// Of `topics`, those `principal` may do `action` on (the tracer's and the query service's
    /// filter).
    pub fn permitted_topics<'t>(
        &self,
        principal: &Principal,
        action: Action,
        topics: impl IntoIterator<Item = &'t str>,
    ) -> Vec<&'t str> {
        topics
            .into_iter()
            .filter(|topic| self.allowed(principal, action, Resource::Topic(topic)))
            .collect()
    }

    /// Adds `actions` to the rule of `subject`, `effect` and `resource` (made when missing).
    pub fn add(&mut self, subject: Subject, effect: Effect, actions: BTreeSet<Action>, resource: ResourcePattern) {
        match self
            .rules
            .iter_mut()
            .find(|rule| rule.subject == subject && rule.effect == effect && rule.resource == resource)
        {
            Some(rule) => rule.actions.extend(actions),
            None => self.rules.push(Rule {
                subject,
                effect,
                actions,
                resource,
            }),
        }
    }

    /// Removes `actions` from the allow and deny rules of `subject` on `resource` (a rule left
    /// without actions goes); returns how many actions were removed.
    pub fn revoke(&mut self, subject: &Subject, actions: &BTreeSet<Action>, resource: &ResourcePattern) -> usize {
        let mut removed = 0;
        for rule in &mut self.rules {
            if &rule.subject == subject && &rule.resource == resource {
                let before = rule.actions.len();
                rule.actions.retain(|action| !actions.contains(action));
                removed += before - rule.actions.len();
            }
        }
        self.rules.retain(|rule| !rule.actions.is_empty());
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(effect: Effect, subject: &str, actions: &str, resource: &str) -> Rule {
        Rule {
            subject: Subject::parse(subject).unwrap(),
            effect,
            actions: Action::parse_list(actions).unwrap(),
            resource: ResourcePattern::parse(resource).unwrap(),
        }
    }

    fn user(name: &str) -> Principal {
        Principal::User(name.into())
    }

    fn acl(rules: Vec<Rule>) -> Acl {
        Acl {
            rules,
            ..Acl::default()
        }
    }

    #[test]
    fn acl_deny_beats_allow_at_equal_specificity_in_either_order() {
        // RocketMQ ACL 2.0's comparator let the allow win until late 2025 (#9784).
        let allow = rule(Effect::Allow, "user:alice", "SUB", "topic:orders");
        let deny = rule(Effect::Deny, "user:alice", "SUB", "topic:orders");
        for rules in [vec![allow.clone(), deny.clone()], vec![deny.clone(), allow.clone()]] {
            let acl = acl(rules);
            assert_eq!(
                acl.decide(&user("alice"), Action::Sub, Resource::Topic("orders")),
                Decision::DeniedBy(&deny)
            );
        }
        // Also between a team's allow and everyone's deny on the same prefix.
        let mut acl = acl(vec![
            rule(Effect::Allow, "team:payments", "PUB", "topic:pay*"),
            rule(Effect::Deny, "*", "PUB", "topic:pay*"),
        ]);
        acl.teams.insert("alice".into(), ["payments".to_owned()].into());
        assert!(!acl.allowed(&user("alice"), Action::Pub, Resource::Topic("payments")));
    }

    #[test]
    fn acl_literal_beats_longer_prefix_beats_shorter_prefix_beats_any() {
        let acl = acl(vec![
            rule(Effect::Deny, "*", "SUB", "*"),
            rule(Effect::Allow, "user:alice", "SUB", "topic:*"),
            rule(Effect::Deny, "user:alice", "SUB", "topic:ord*"),
            rule(Effect::Allow, "user:alice", "SUB", "topic:orders-eu*"),
            rule(Effect::Allow, "user:alice", "SUB", "topic:ord-public"),
        ]);
        let alice = user("alice");
        assert!(
            acl.allowed(&alice, Action::Sub, Resource::Topic("payments")),
            "topic:* beats *"
        );
        assert!(
            !acl.allowed(&alice, Action::Sub, Resource::Topic("orders")),
            "ord* beats topic:*"
        );
        assert!(
            acl.allowed(&alice, Action::Sub, Resource::Topic("orders-eu-1")),
            "longer prefix"
        );
        assert!(
            acl.allowed(&alice, Action::Sub, Resource::Topic("ord-public")),
            "literal"
        );
        assert!(
            !acl.allowed(&alice, Action::Sub, Resource::Group("g")),
            "* deny on groups"
        );
        assert!(
            !acl.allowed(&alice, Action::Pub, Resource::Topic("payments")),
            "no PUB rule"
        );
        assert!(!acl.allowed(&user("bob"), Action::Sub, Resource::Topic("orders")));
    }

    #[test]
    fn acl_no_rule_denies_and_the_error_names_user_action_resource_and_fix() {
        let acl = Acl::default();
        let error = acl
            .check(&user("bob"), Action::Sub, Resource::Topic("orders"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("user \"bob\""), "{error}");
        assert!(error.contains("SUB topic:orders"), "{error}");
        assert!(
            error.contains("meridian acl grant user:bob SUB topic:orders"),
            "{error}"
        );
        assert!(!acl.allowed(&Principal::Anonymous, Action::Sub, Resource::Topic("orders")));
    }

    #[test]
    fn acl_super_users_and_nodes_pass_even_an_explicit_deny() {
        let mut acl = acl(vec![rule(Effect::Deny, "*", "ALL", "*")]);
        acl.super_users.insert("root".into());
        for action in Action::ALL {
            assert!(acl.allowed(&user("root"), action, Resource::Topic("orders")));
            assert!(acl.allowed(&Principal::Node, action, Resource::Group("g")));
            assert!(!acl.allowed(&user("alice"), action, Resource::Topic("orders")));
        }
    }

    #[test]
    fn acl_owners_team_gets_pub_sub_trace_sql_on_topic_and_sub_on_group_but_a_literal_deny_wins() {
        let mut acl = Acl::default();
        acl.teams.insert("alice".into(), ["payments".to_owned()].into());
        acl.topic_owners.insert("payments".into(), "payments".into());
        acl.group_owners.insert("payments-audit".into(), "payments".into());
        acl.topic_owners.insert("bobs".into(), "bob".into());
        let alice = user("alice");
        for action in [Action::Pub, Action::Sub, Action::Trace, Action::Sql] {
            assert!(acl.allowed(&alice, action, Resource::Topic("payments")), "{action}");
            assert!(acl.allowed(&user("bob"), action, Resource::Topic("bobs")), "{action}");
            assert!(!acl.allowed(&alice, action, Resource::Topic("bobs")), "{action}");
        }
        assert!(!acl.allowed(&alice, Action::Admin, Resource::Topic("payments")));
        assert!(acl.allowed(&alice, Action::Sub, Resource::Group("payments-audit")));
        assert!(acl.allowed(&alice, Action::Sub, Resource::of_topic("%RETRY%payments-audit")));
        assert!(!acl.allowed(&alice, Action::Pub, Resource::Group("payments-audit")));
        // A prefix deny is less specific than the owner's literal allow; a literal deny is not.
        acl.add(
            Subject::Team("payments".into()),
            Effect::Deny,
            [Action::Sub].into(),
            ResourcePattern::parse("topic:pay*").unwrap(),
        );
        assert!(acl.allowed(&alice, Action::Sub, Resource::Topic("payments")));
        acl.add(
            Subject::User("alice".into()),
            Effect::Deny,
            [Action::Sub].into(),
            ResourcePattern::parse("topic:payments").unwrap(),
        );
        assert!(!acl.allowed(&alice, Action::Sub, Resource::Topic("payments")));
        assert!(acl.allowed(&alice, Action::Pub, Resource::Topic("payments")));
    }

    #[test]
    fn acl_text_forms_parse_validate_and_round_trip_through_json() {
        for text in ["*", "topic:orders", "topic:ord*", "topic:*", "group:g1", "group:pay*"] {
            let pattern = ResourcePattern::parse(text).unwrap();
            assert_eq!(pattern.to_string(), text);
        }
        for bad in ["orders", "topic:a b", "topic:", "queue:x", "group:a*b*"] {
            assert!(ResourcePattern::parse(bad).is_err(), "{bad}");
        }
        assert!(Subject::parse("alice").unwrap_err().contains("user:<name>"));
        assert!(Action::parse("READ").unwrap_err().contains("PUB, SUB"));
        let mut acl = acl(vec![rule(Effect::Deny, "team:ops", "PUB,SQL", "topic:ord*")]);
        acl.super_users.insert("root".into());
        let json = serde_json::to_string(&acl).unwrap();
        assert!(json.contains("\"team:ops\"") && json.contains("\"topic:ord*\"") && json.contains("\"SQL\""));
        assert_eq!(serde_json::from_str::<Acl>(&json).unwrap(), acl);
        assert!(
            serde_json::from_str::<Rule>(r#"{"subject":"x","effect":"allow","actions":["PUB"],"resource":"*"}"#)
                .is_err()
        );
    }

    #[test]
    fn acl_add_merges_and_revoke_removes_actions_then_empty_rules() {
        let mut acl = Acl::default();
        let subject = Subject::User("alice".into());
        let resource = ResourcePattern::parse("topic:orders").unwrap();
        acl.add(subject.clone(), Effect::Allow, [Action::Pub].into(), resource.clone());
        acl.add(subject.clone(), Effect::Allow, [Action::Sub].into(), resource.clone());
        acl.add(subject.clone(), Effect::Deny, [Action::Sql].into(), resource.clone());
        assert_eq!(acl.rules.len(), 2);
        assert_eq!(acl.revoke(&subject, &[Action::Pub, Action::Sql].into(), &resource), 2);
        assert_eq!(
            acl.rules,
            vec![rule(Effect::Allow, "user:alice", "SUB", "topic:orders")]
        );
    }

    fn arb_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("o"),
            Just("or"),
            Just("ord"),
            Just("orders"),
            Just("pay"),
            Just("payments")
        ]
        .prop_map(str::to_owned)
    }

    fn arb_pattern() -> impl Strategy<Value = ResourcePattern> {
        prop_oneof![
            Just(ResourcePattern::Any),
            arb_name().prop_map(|name| ResourcePattern::Topic(NamePattern::Literal(name))),
            arb_name().prop_map(|name| ResourcePattern::Topic(NamePattern::Prefix(name))),
            Just(ResourcePattern::Topic(NamePattern::Prefix(String::new()))),
            arb_name().prop_map(|name| ResourcePattern::Group(NamePattern::Literal(name))),
        ]
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        (
            prop_oneof![
                Just(Subject::Anyone),
                Just(Subject::User("alice".into())),
                Just(Subject::User("bob".into())),
                Just(Subject::Team("payments".into())),
            ],
            prop_oneof![Just(Effect::Allow), Just(Effect::Deny)],
            proptest::sample::subsequence(Action::ALL.to_vec(), 1..=5),
            arb_pattern(),
        )
            .prop_map(|(subject, effect, actions, resource)| Rule {
                subject,
                effect,
                actions: actions.into_iter().collect(),
                resource,
            })
    }

    fn arb_acl() -> impl Strategy<Value = Acl> {
        (proptest::collection::vec(arb_rule(), 0..12), any::<bool>()).prop_map(|(rules, alice_in_payments)| {
            let mut acl = Acl {
                rules,
                ..Acl::default()
            };
            if alice_in_payments {
                acl.teams.insert("alice".into(), ["payments".to_owned()].into());
            }
            acl
        })
    }

    /// The decision, computed the slow and obvious way: sort the applicable rules by specificity
    /// and look only at the top ones.
    fn reference(acl: &Acl, user: &str, action: Action, resource: Resource<'_>) -> bool {
        let applicable: Vec<(Specificity, Effect)> = acl
            .rules
            .iter()
            .filter(|rule| rule.actions.contains(&action) && acl.subject_matches(&rule.subject, user))
            .filter_map(|rule| Some((rule.resource.specificity(resource)?, rule.effect)))
            .collect();
        let Some(top) = applicable.iter().map(|(specificity, _)| *specificity).max() else {
            return false;
        };
        applicable
            .iter()
            .filter(|(specificity, _)| *specificity == top)
            .all(|(_, effect)| *effect == Effect::Allow)
    }

    proptest! {
        #[test]
        fn acl_decision_matches_the_reference_and_does_not_depend_on_rule_order(
            acl in arb_acl(),
            user in prop_oneof![Just("alice"), Just("bob"), Just("carol")],
            action in proptest::sample::select(Action::ALL.to_vec()),
            name in arb_name(),
            group in any::<bool>(),
        ) {
            let resource = if group { Resource::Group(&name) } else { Resource::Topic(&name) };
            let principal = Principal::User(user.into());
            let decided = acl.allowed(&principal, action, resource);
            prop_assert_eq!(decided, reference(&acl, user, action, resource));
            let mut reversed = acl.clone();
            reversed.rules.reverse();
            prop_assert_eq!(reversed.allowed(&principal, action, resource), decided);
            // Adding a deny at least as specific as everything that matched always denies.
            let mut denied = acl.clone();
            let literal = NamePattern::Literal(name.clone());
            denied.add(
                Subject::User(user.into()),
                Effect::Deny,
                [action].into(),
                if group { ResourcePattern::Group(literal) } else { ResourcePattern::Topic(literal) },
            );
            prop_assert!(!denied.allowed(&principal, action, resource));
            // A super user passes whatever the rules say.
            denied.super_users.insert(user.into());
            prop_assert!(denied.allowed(&principal, action, resource));
        }
    }
}

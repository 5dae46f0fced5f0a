//! The checks a request passes before it touches the store: may this user do this to the topic or
//! group (the cluster's ACL, [`BrokerState::authorize`]), may this producer send to the topic
//! (approvals, produce limits, SDK policy), may this group consume these topics, is this broker
//! the writable master. Methods of [`BrokerState`], called by every protocol's handlers.
//!
//! Authorization (`[auth] enabled` and `authorization`): sends and transaction ends need PUB on
//! the topic; pulls, heartbeats, offsets, queue locks and send-backs need SUB on the group and on
//! each topic (a group's retry and dead-letter topics count as the group); offset resets and
//! dead-letter resends need ADMIN on the group. Decided once per request from the ACL the broker
//! learned with its metadata ([`crate::registry::Approved::acl`]).

use std::net::SocketAddr;
use std::time::Instant;

use meridian_proto::acl::{Action, Resource};
use meridian_proto::auth::Principal;
use meridian_proto::topics::TopicKind;
use meridian_proto::validate;
use meridian_proto::{topics, trace};

use crate::error::{BrokerError, Result};
use crate::state::BrokerState;

impl BrokerState {
    /// Whether `principal` may do `action` on `resource` (always, unless `[auth] enabled` and
    /// `authorization`). Nodes pass at once; a standalone broker knows no users, so only nodes
    /// ever log in to it. Allocates nothing unless refused.
    pub fn authorize(&self, principal: &Principal, action: Action, resource: Resource<'_>) -> Result<()> {
        if !self.config.auth.authorizes() || principal.is_node() {
            return Ok(());
        }
        let refused = match &self.governance {
            Some(governance) => governance.authorize(principal, action, resource),
            None => meridian_proto::acl::Acl::default().check(principal, action, resource),
        };
        refused.map_err(|denied| {
            tracing::info!(%principal, action = action.as_str(), %resource, "request refused by the acl");
            BrokerError::PermissionDenied(denied)
        })
    }

    /// [`BrokerState::authorize`] of `action` on a topic named in a request (a group's retry and
    /// dead-letter topics count as the group).
    pub fn authorize_topic(&self, principal: &Principal, action: Action, topic: &str) -> Result<()> {
        self.authorize(principal, action, Resource::of_topic(topic))
    }

    /// What a consumer request needs: SUB on the group and on each topic.
    pub fn authorize_consume<'a>(
        &self,
        principal: &Principal,
        group: &str,
        topics: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        if !self.config.auth.authorizes() || principal.is_node() {
            return Ok(());
        }
        self.authorize(principal, Action::Sub, Resource::Group(group))?;
        for topic in topics {
            self.authorize_topic(principal, Action::Sub, topic)?;
        }
        Ok(())
    }

    /// Whether producers may send to `topic` (always, on a standalone broker).
    pub(crate) fn check_send(&self, topic: &str) -> Result<()> {
        self.governance
            .as_ref()
            .map_or(Ok(()), |governance| governance.check_send(topic))
    }

    /// Whether a send of `messages` messages and `bytes` bytes to `topic` fits this master's share
    /// of the topic's produce limit (always, on a standalone broker); a refusal is counted by
    /// topic and producer group. Every protocol's send path calls it once per send request, after
    /// the request is validated.
    pub fn throttle_send(&self, topic: &str, producer_group: &str, messages: u32, bytes: u64) -> Result<()> {
        let Some(governance) = &self.governance else {
            return Ok(());
        };
        let refused = governance.check_throttle(topic, messages, bytes, Instant::now());
        if refused.is_err() {
            let labels = crate::metrics::ProducerLabels {
                topic: topic.to_owned(),
                producer_group: producer_group.to_owned(),
            };
            self.metrics.throttled_sends.get_or_create(&labels).inc();
            self.metrics
                .throttled_messages
                .get_or_create(&labels)
                .inc_by(u64::from(messages));
        }
        refused
    }

    /// Judges a producer's reported SDK (`language/version`) against the cluster's policy (never,
    /// on a standalone broker): refused when the policy says so, flagged otherwise. Every
    /// protocol's send path calls it once per send request.
    pub fn check_producer_sdk(&self, reported: &[u8], peer: SocketAddr) -> Result<()> {
        self.governance
            .as_ref()
            .map_or(Ok(()), |governance| governance.check_producer_sdk(reported, peer))
    }

    /// Checks a consumer request's group and topic with the shared rules and the approvals.
    pub(crate) fn check_group_topic(&self, group: &str, topic: &str) -> Result<()> {
        validate::validate_group(group)?;
        topics::validate_consumable(topic)?;
        self.check_consume(group, [topic])
    }

    /// Fails unless this broker is the writable master of its group.
    pub(crate) fn check_master(&self) -> Result<()> {
        self.replication
            .check_writable()
            .map_err(|error| BrokerError::NotMaster(error.to_string()))
    }

    /// Whether consumer group `group` may consume `wanted` (always, on a standalone broker). A
    /// group's own retry and dead-letter topics need only the group's approval; other system
    /// topics are refused, but tracer groups read the trace topic freely.
    pub(crate) fn check_consume<'a>(&self, group: &str, wanted: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let wanted: Vec<&str> = wanted.into_iter().collect();
        if trace::is_tracer_group(group) && wanted.iter().all(|topic| trace::is_system_topic(topic)) {
            return Ok(());
        }
        let mut user_topics = Vec::with_capacity(wanted.len());
        for topic in wanted {
            match topics::kind(topic) {
                TopicKind::User => user_topics.push(topic),
                TopicKind::Retry(owner) | TopicKind::DeadLetter(owner) if owner == group => {}
                _ => {
                    return Err(BrokerError::Refused(format!(
                        "topic {topic:?} is a system topic: group {group:?} may read only its own {} and {}",
                        topics::retry_topic(group),
                        topics::dlq_topic(group)
                    )));
                }
            }
        }
        self.governance
            .as_ref()
            .map_or(Ok(()), |governance| governance.check_consume(group, user_topics))
    }
}

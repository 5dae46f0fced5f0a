//! The checks a request passes before it touches the store: may this producer send to the topic
//! (approvals, produce limits, SDK policy), may this group consume these topics, is this broker
//! the writable master. Methods of [`BrokerState`], called by every protocol's handlers.

use std::net::SocketAddr;
use std::time::Instant;

use meridian_proto::topics::TopicKind;
use meridian_proto::validate;
use meridian_proto::{topics, trace};

use crate::error::{BrokerError, Result};
use crate::state::BrokerState;

impl BrokerState {
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

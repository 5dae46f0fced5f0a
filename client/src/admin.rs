//! Administrative calls: create topics, read routes, reset a group's offsets, and inspect and
//! resend a group's dead letters.

use std::sync::Arc;

use meridian_proto::RequestCode;
use meridian_proto::messages::{
    CreateTopicRequest, DeadLetterResendRequest, DeadLetterResendResponse, PullRequest, PullResponse,
    ResetOffsetRequest, ResetOffsetResponse, ResetTarget, TopicRoute,
};
use meridian_proto::record::{StoredMessage, decode_all};
use meridian_proto::topics;
use meridian_proto::validate::{validate_group, validate_queue_count, validate_topic};
use meridian_proto::{ErrorCode, MessageId};

use crate::error::ClientError;
use crate::route::{NameserverRoute, RouteSource};
use meridian_proto::transport::ConnectionPool;
use meridian_proto::transport::TransportConfig as ClientConfig;

/// Where [`Admin::reset_offsets`] moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The first message stored at or after this time (Unix ms).
    Timestamp(i64),
    /// The oldest message each queue holds.
    Earliest,
    /// Past the newest message.
    Latest,
}

/// A dead letter and the broker group holding it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The broker group.
    pub broker_name: String,
    /// The message as dead-lettered: its reconsume count says how often it failed, its
    /// `RETRY_TOPIC` property the topic it was first sent to.
    pub message: StoredMessage,
}

/// Administrative client.
pub struct Admin {
    route: Arc<dyn RouteSource>,
    pool: ConnectionPool,
}

impl Admin {
    /// An admin client reading routes through `route`. Connections open on first use.
    pub fn new(route: Arc<dyn RouteSource>, config: ClientConfig) -> Admin {
        Admin {
            route,
            pool: ConnectionPool::new(config),
        }
    }

    /// An admin client reading routes from the nameservers at `nameservers` (`host:port` each; see
    /// [`NameserverRoute`]). Brokers governed by nameservers refuse [`Admin::create_topic`]: their
    /// topics are requested and approved through the nameservers.
    pub fn with_nameservers(nameservers: Vec<String>, config: ClientConfig) -> Admin {
        let pool = ConnectionPool::new(config);
        Admin {
            route: Arc::new(NameserverRoute::new(nameservers, pool.clone())),
            pool,
        }
    }

    /// Creates `topic` with `queues` queues on the standalone broker at `broker_addr`. An existing
    /// topic fails with [`meridian_proto::ErrorCode::AlreadyExists`]; a broker governed by
    /// nameservers refuses with [`meridian_proto::ErrorCode::FailedPrecondition`].
    pub async fn create_topic(&self, broker_addr: &str, topic: &str, queues: u32) -> Result<(), ClientError> {
        validate_topic(topic)?;
        validate_queue_count(queues)?;
        let request = CreateTopicRequest {
            topic: topic.to_owned(),
            queues,
        };
        let timeout = self.pool.config().request_timeout;
        self.pool
            .call_empty(broker_addr, RequestCode::CreateTopic, &request, timeout)
            .await
            .map_err(ClientError::from)
    }

    /// The current route of `topic`, fetched now (not cached).
    pub async fn topic_route(&self, topic: &str) -> Result<TopicRoute, ClientError> {
        validate_topic(topic)?;
        self.route.route(topic).await
    }

    /// Moves `group`'s offsets of `topic` on every broker group serving it; running consumers
    /// continue from the new position at their next pull. Returns the new offsets per broker
    /// group as `(broker, [(queue, offset)])`.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<(String, Vec<(u32, u64)>)>, ClientError> {
        validate_group(group)?;
        validate_topic(topic)?;
        let (target, timestamp) = match to {
            ResetTo::Timestamp(at) => (ResetTarget::Timestamp, at),
            ResetTo::Earliest => (ResetTarget::Earliest, 0),
            ResetTo::Latest => (ResetTarget::Latest, 0),
        };
        let request = ResetOffsetRequest {
            group: group.to_owned(),
            topic: topic.to_owned(),
            target: target as i32,
            timestamp,
        };
        let route = self.route.route(topic).await?;
        let timeout = self.pool.config().request_timeout;
        let mut moved = Vec::new();
        for broker in &route.brokers {
            let response: ResetOffsetResponse = self
                .pool
                .call(&broker.addr, RequestCode::ResetOffset, &request, timeout)
                .await?;
            let queues = response
                .queues
                .into_iter()
                .map(|queue| (queue.queue_id, queue.offset))
                .collect();
            moved.push((broker.broker_name.clone(), queues));
        }
        Ok(moved)
    }

    /// Every dead letter of `group` on the broker groups serving `topic` (one of the group's
    /// topics), oldest first per broker group.
    pub async fn dead_letters(&self, group: &str, topic: &str) -> Result<Vec<DeadLetter>, ClientError> {
        validate_group(group)?;
        let route = self.route.route(topic).await?;
        let dlq = topics::dlq_topic(group);
        let timeout = self.pool.config().request_timeout;
        let mut letters = Vec::new();
        for broker in &route.brokers {
            let mut offset = 0;
            loop {
                let request = PullRequest {
                    group: group.to_owned(),
                    topic: dlq.clone(),
                    queue_id: 0,
                    offset,
                    max_count: 256,
                    max_bytes: 4 << 20,
                    ..PullRequest::default()
                };
                let response: PullResponse =
                    match self.pool.call(&broker.addr, RequestCode::Pull, &request, timeout).await {
                        Ok(response) => response,
                        // No consumer of the group ever failed a message on this broker.
                        Err(meridian_proto::transport::TransportError::Remote {
                            code: ErrorCode::TopicNotFound,
                            ..
                        }) => break,
                        Err(error) => return Err(error.into()),
                    };
                let messages = decode_all(&response.records)
                    .map_err(|error| ClientError::Decode(format!("dead letters from {}: {error}", broker.addr)))?;
                if response.next_offset <= offset {
                    break;
                }
                offset = response.next_offset;
                letters.extend(messages.into_iter().map(|message| DeadLetter {
                    broker_name: broker.broker_name.clone(),
                    message,
                }));
            }
        }
        Ok(letters)
    }

    /// Puts dead letters of `group` (those with `msg_ids`; every one when empty) back on the
    /// group's retry topic with their reconsume count at 0, on every broker group serving
    /// `topic`. Returns how many were resent and the requested ids no broker held.
    pub async fn resend_dead_letters(
        &self,
        group: &str,
        topic: &str,
        msg_ids: &[String],
    ) -> Result<(u32, Vec<String>), ClientError> {
        validate_group(group)?;
        for msg_id in msg_ids {
            MessageId::parse(msg_id)
                .map_err(|_| ClientError::InvalidArgument(format!("{msg_id:?} is not a message id (32 hex digits)")))?;
        }
        let route = self.route.route(topic).await?;
        let request = DeadLetterResendRequest {
            group: group.to_owned(),
            msg_ids: msg_ids.to_vec(),
        };
        let timeout = self.pool.config().request_timeout;
        let mut resent = 0;
        let mut missing: Option<Vec<String>> = None;
        for broker in &route.brokers {
            let response: DeadLetterResendResponse = self
                .pool
                .call(&broker.addr, RequestCode::DeadLetterResend, &request, timeout)
                .await?;
            resent += response.resent;
            missing = Some(match missing {
                None => response.missing,
                Some(before) => before.into_iter().filter(|id| response.missing.contains(id)).collect(),
            });
        }
        Ok((resent, missing.unwrap_or_default()))
    }

    /// Closes the connections.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::StaticRoute;
    use crate::test_support::FakeBroker;
    use meridian_proto::ErrorCode;
    use meridian_proto::messages::perm;

    #[tokio::test]
    async fn creates_topics_and_reads_their_route() {
        let broker = FakeBroker::start(&[]).await;
        let route = Arc::new(StaticRoute::new(
            broker.addr.clone(),
            ConnectionPool::new(ClientConfig::default()),
        ));
        let admin = Admin::new(route, ClientConfig::default());
        admin.create_topic(&broker.addr, "orders", 8).await.unwrap();
        let error = admin.create_topic(&broker.addr, "orders", 8).await.unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::Broker {
                    code: ErrorCode::AlreadyExists,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(matches!(
            admin.create_topic(&broker.addr, "orders", 0).await,
            Err(ClientError::Validation(_))
        ));
        let route = admin.topic_route("orders").await.unwrap();
        assert_eq!(route.brokers.len(), 1);
        assert_eq!(route.brokers[0].queues, 8);
        assert_eq!(route.brokers[0].perm, perm::READ | perm::WRITE);
        // A lone broker's advertised address is replaced by the one it was reached at.
        assert_eq!(route.brokers[0].addr, broker.addr);
        admin.shutdown().await;
    }
}

//! The low-level pull consumer: pull from a queue at an offset, read and store group offsets.

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::RequestCode;
use meridian_proto::messages::{
    CommitOffsetRequest, LockQueuesRequest, LockQueuesResponse, PullRequest, PullResponse, PullStatus,
    QueryOffsetRequest, QueryOffsetResponse, QueueInfoResponse, QueueRef, SearchOffsetRequest, SearchOffsetResponse,
    SendBackRequest, SendBackResponse, perm,
};
use meridian_proto::record::{StoredMessage, decode_all};
use meridian_proto::topics::validate_consumable as validate_topic;
use meridian_proto::validate::validate_group;

use crate::error::ClientError;
use crate::route::{NameserverRoute, RouteCache, RouteSource, route_queues};
use meridian_proto::transport::ConnectionPool;
use meridian_proto::transport::TransportConfig as ClientConfig;

/// Most record bytes one pull asks for. The broker returns at least one record even if larger.
const PULL_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Room left in a response frame for everything but the records.
const PULL_RESPONSE_OVERHEAD: usize = 64 * 1024;

/// What one pull returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResult {
    /// Whether messages were found, none were there, or the offset was out of range.
    pub status: PullStatus,
    /// Offset to pull from next (after `OffsetMoved`: where to restart).
    pub next_offset: u64,
    /// Smallest offset the queue holds.
    pub min_offset: u64,
    /// One past the largest offset the queue holds.
    pub max_offset: u64,
    /// The messages, in queue order; they share the response buffer (no copies).
    pub messages: Vec<StoredMessage>,
    /// With [`PullStatus::OffsetReset`]: the offset generation to continue with.
    pub offset_generation: u64,
}

/// How a pull asks: a tag filter, and the offset generation its position came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct PullOptions<'a> {
    pub(crate) subscription: &'a str,
    pub(crate) offset_generation: Option<u64>,
}

/// A group's stored position in a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredOffset {
    /// The offset, `None` when never committed.
    pub(crate) offset: Option<u64>,
    /// How many times the group's offsets of the topic were reset.
    pub(crate) generation: u64,
}

/// Pulls messages and manages offsets of one consumer group, queue by queue, with no rebalancing
/// (see [`crate::PushConsumer`] for that).
///
/// Queues are named by topic and queue id. When several brokers serve a topic, the first readable
/// broker (by name) holding that queue id is used.
pub struct PullConsumer {
    pub(crate) group: String,
    pub(crate) config: ClientConfig,
    pub(crate) pool: ConnectionPool,
    pub(crate) routes: RouteCache,
}

impl PullConsumer {
    /// A consumer of `group` finding topics through `route`. Connections open on first use.
    pub fn new(route: Arc<dyn RouteSource>, config: ClientConfig, group: impl Into<String>) -> PullConsumer {
        PullConsumer {
            group: group.into(),
            pool: ConnectionPool::new(config.clone()),
            routes: RouteCache::new(route),
            config,
        }
    }

    /// A consumer of `group` finding topics through the nameservers at `nameservers` (`host:port`
    /// each; see [`NameserverRoute`]). Route lookups share the consumer's connections.
    pub fn with_nameservers(nameservers: Vec<String>, config: ClientConfig, group: impl Into<String>) -> PullConsumer {
        let pool = ConnectionPool::new(config.clone());
        let route = Arc::new(NameserverRoute::new(nameservers, pool.clone()));
        PullConsumer {
            group: group.into(),
            pool,
            routes: RouteCache::new(route),
            config,
        }
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Pulls up to `max_count` messages from `offset`. When none are there yet, the broker holds
    /// the request up to `long_poll` and answers as soon as one arrives.
    pub async fn pull(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_count: u32,
        long_poll: Duration,
    ) -> Result<PullResult, ClientError> {
        let addr = self.queue_addr(topic, queue_id).await?;
        let result = self
            .pull_at(
                &addr,
                topic,
                queue_id,
                offset,
                max_count,
                long_poll,
                &PullOptions::default(),
            )
            .await;
        self.refresh_route_after(topic, result)
    }

    /// The smallest offset a queue holds and one past its largest: `(min, max)`.
    pub async fn queue_info(&self, topic: &str, queue_id: u32) -> Result<(u64, u64), ClientError> {
        let addr = self.queue_addr(topic, queue_id).await?;
        let result = self.queue_info_at(&addr, topic, queue_id).await;
        self.refresh_route_after(topic, result)
    }

    /// Stores the group's next offset for a queue.
    pub async fn commit_offset(&self, topic: &str, queue_id: u32, offset: u64) -> Result<(), ClientError> {
        let addr = self.queue_addr(topic, queue_id).await?;
        let result = self.commit_offset_at(&addr, topic, queue_id, offset, None, "").await;
        self.refresh_route_after(topic, result)
    }

    /// The group's stored offset for a queue; `None` when the group never committed one.
    pub async fn query_offset(&self, topic: &str, queue_id: u32) -> Result<Option<u64>, ClientError> {
        let addr = self.queue_addr(topic, queue_id).await?;
        let result = self.query_offset_at(&addr, topic, queue_id, "").await;
        self.refresh_route_after(topic, result.map(|stored| stored.offset))
    }

    /// The first offset of a queue stored at or after `timestamp_ms` (Unix ms); the queue's max
    /// offset when every message is older.
    pub async fn search_offset(&self, topic: &str, queue_id: u32, timestamp_ms: i64) -> Result<u64, ClientError> {
        validate_topic(topic)?;
        let addr = self.queue_addr(topic, queue_id).await?;
        let request = SearchOffsetRequest {
            topic: topic.to_owned(),
            queue_id,
            timestamp: timestamp_ms,
        };
        let result: Result<SearchOffsetResponse, _> = self
            .pool
            .call(&addr, RequestCode::SearchOffset, &request, self.config.request_timeout)
            .await;
        self.refresh_route_after(topic, result.map(|response| response.offset).map_err(ClientError::from))
    }

    /// The readable queues of a topic as `(broker address, queue id)`, sorted by broker name and id.
    pub async fn queues(&self, topic: &str) -> Result<Vec<(String, u32)>, ClientError> {
        let route = self.routes.get(topic).await?;
        Ok(route_queues(&route, perm::READ)
            .into_iter()
            .map(|(queue, addr)| (addr, queue.queue_id))
            .collect())
    }

    /// Closes the connections.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }

    async fn queue_addr(&self, topic: &str, queue_id: u32) -> Result<String, ClientError> {
        let route = self.routes.get(topic).await?;
        let readable = route_queues(&route, perm::READ);
        if readable.is_empty() {
            return Err(ClientError::NoRoute {
                topic: topic.to_owned(),
            });
        }
        let count = readable.len();
        readable
            .into_iter()
            .find(|(queue, _)| queue.queue_id == queue_id)
            .map(|(_, addr)| addr)
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "topic {topic:?} has no readable queue {queue_id} ({count} readable queues); pick a queue id the topic has"
                ))
            })
    }

    fn refresh_route_after<T>(&self, topic: &str, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(error) = &result
            && error.suggests_stale_route()
        {
            self.routes.invalidate(topic);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn pull_at(
        &self,
        addr: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_count: u32,
        long_poll: Duration,
        options: &PullOptions<'_>,
    ) -> Result<PullResult, ClientError> {
        validate_group(&self.group)?;
        validate_topic(topic)?;
        // The whole response must fit one frame, or the codec would drop the connection.
        let max_bytes = PULL_MAX_BYTES.min(
            self.config
                .limits
                .max_frame_size
                .saturating_sub(PULL_RESPONSE_OVERHEAD)
                .max(1),
        );
        let request = PullRequest {
            group: self.group.clone(),
            topic: topic.to_owned(),
            queue_id,
            offset,
            max_count,
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
            long_poll_ms: u32::try_from(long_poll.as_millis()).unwrap_or(u32::MAX),
            subscription: options.subscription.to_owned(),
            offset_generation: options.offset_generation,
        };
        let timeout = self.config.request_timeout + long_poll;
        let response: PullResponse = self.pool.call(addr, RequestCode::Pull, &request, timeout).await?;
        let status = PullStatus::try_from(response.status).map_err(|_| {
            ClientError::Decode(format!(
                "Pull response from {addr} has unknown status {}",
                response.status
            ))
        })?;
        let messages = decode_all(&response.records)
            .map_err(|error| ClientError::Decode(format!("records of Pull response from {addr}: {error}")))?;
        Ok(PullResult {
            status,
            next_offset: response.next_offset,
            min_offset: response.min_offset,
            max_offset: response.max_offset,
            messages,
            offset_generation: response.offset_generation,
        })
    }

    pub(crate) async fn queue_info_at(
        &self,
        addr: &str,
        topic: &str,
        queue_id: u32,
    ) -> Result<(u64, u64), ClientError> {
        validate_topic(topic)?;
        let request = QueueRef {
            topic: topic.to_owned(),
            queue_id,
        };
        let response: QueueInfoResponse = self
            .pool
            .call(addr, RequestCode::QueueInfo, &request, self.config.request_timeout)
            .await?;
        Ok((response.min_offset, response.max_offset))
    }

    pub(crate) async fn commit_offset_at(
        &self,
        addr: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
        generation: Option<u64>,
        member: &str,
    ) -> Result<(), ClientError> {
        validate_group(&self.group)?;
        validate_topic(topic)?;
        let request = CommitOffsetRequest {
            group: self.group.clone(),
            topic: topic.to_owned(),
            queue_id,
            offset,
            generation,
            member: member.to_owned(),
        };
        self.pool
            .call_empty(addr, RequestCode::CommitOffset, &request, self.config.request_timeout)
            .await
            .map_err(ClientError::from)
    }

    pub(crate) async fn query_offset_at(
        &self,
        addr: &str,
        topic: &str,
        queue_id: u32,
        member: &str,
    ) -> Result<StoredOffset, ClientError> {
        validate_group(&self.group)?;
        validate_topic(topic)?;
        let request = QueryOffsetRequest {
            group: self.group.clone(),
            topic: topic.to_owned(),
            queue_id,
            member: member.to_owned(),
        };
        let response: QueryOffsetResponse = self
            .pool
            .call(addr, RequestCode::QueryOffset, &request, self.config.request_timeout)
            .await?;
        Ok(StoredOffset {
            offset: response.offset,
            generation: response.generation,
        })
    }

    /// Tells the broker at `addr` the group failed `message` (consumed from `topic` there): it
    /// goes to the group's retry topic, or its dead-letter topic past the group's maximum.
    pub(crate) async fn send_back_at(
        &self,
        addr: &str,
        topic: &str,
        message: &StoredMessage,
        delay_level: u32,
    ) -> Result<SendBackResponse, ClientError> {
        let request = SendBackRequest {
            group: self.group.clone(),
            topic: topic.to_owned(),
            commitlog_offset: message.commitlog_offset,
            msg_id: message.msg_id().to_owned(),
            delay_level,
        };
        Ok(self
            .pool
            .call(addr, RequestCode::SendBack, &request, self.config.request_timeout)
            .await?)
    }

    /// Takes or renews (`lock`) or releases queue locks at the broker at `addr`; returns the
    /// queues this member holds (empty after an unlock).
    pub(crate) async fn lock_at(
        &self,
        addr: &str,
        client_id: &str,
        topic: &str,
        queue_ids: &[u32],
        lock: bool,
    ) -> Result<Vec<u32>, ClientError> {
        let request = LockQueuesRequest {
            group: self.group.clone(),
            client_id: client_id.to_owned(),
            topic: topic.to_owned(),
            queue_ids: queue_ids.to_vec(),
        };
        let timeout = self.config.request_timeout;
        if lock {
            let response: LockQueuesResponse = self.pool.call(addr, RequestCode::LockQueues, &request, timeout).await?;
            Ok(response.locked)
        } else {
            self.pool
                .call_empty(addr, RequestCode::UnlockQueues, &request, timeout)
                .await?;
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::StaticRoute;
    use crate::test_support::FakeBroker;
    use bytes::Bytes;
    use meridian_proto::ErrorCode;

    fn consumer(broker: &FakeBroker) -> PullConsumer {
        let pool = ConnectionPool::new(ClientConfig::default());
        let route = Arc::new(StaticRoute::new(broker.addr.clone(), pool));
        PullConsumer::new(route, ClientConfig::default(), "readers")
    }

    #[tokio::test]
    async fn pulls_decode_records_in_order() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        for index in 0..5 {
            broker.append("orders", 1, format!("m{index}").as_bytes());
        }
        let consumer = consumer(&broker);
        let result = consumer.pull("orders", 1, 1, 3, Duration::ZERO).await.unwrap();
        assert_eq!(result.status, PullStatus::Found);
        assert_eq!(result.next_offset, 4);
        assert_eq!((result.min_offset, result.max_offset), (0, 5));
        let bodies: Vec<Bytes> = result.messages.iter().map(|message| message.body.clone()).collect();
        assert_eq!(bodies, [b"m1", b"m2", b"m3"].map(|body| Bytes::from_static(body)));
        assert!(result.messages.iter().all(|message| message.queue_id == 1));
        assert_eq!(consumer.queue_info("orders", 1).await.unwrap(), (0, 5));

        let empty = consumer
            .pull("orders", 0, 0, 3, Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(empty.status, PullStatus::NoNewMessage);
        let moved = consumer.pull("orders", 1, 99, 3, Duration::ZERO).await.unwrap();
        assert_eq!((moved.status, moved.next_offset), (PullStatus::OffsetMoved, 5));
        consumer.shutdown().await;
    }

    #[tokio::test]
    async fn a_long_poll_answers_when_a_message_arrives() {
        let broker = FakeBroker::start(&[("orders", 1)]).await;
        let consumer = consumer(&broker);
        let (result, ()) = tokio::join!(consumer.pull("orders", 0, 0, 8, Duration::from_secs(30)), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            broker.append("orders", 0, b"late");
        });
        let result = result.unwrap();
        assert_eq!(result.status, PullStatus::Found);
        assert_eq!(result.messages[0].body, Bytes::from_static(b"late"));
        consumer.shutdown().await;
    }

    #[tokio::test]
    async fn offsets_are_absent_until_committed() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        let consumer = consumer(&broker);
        assert_eq!(consumer.query_offset("orders", 0).await.unwrap(), None);
        consumer.commit_offset("orders", 0, 7).await.unwrap();
        assert_eq!(consumer.query_offset("orders", 0).await.unwrap(), Some(7));
        assert_eq!(consumer.query_offset("orders", 1).await.unwrap(), None);
        let queues = consumer.queues("orders").await.unwrap();
        assert_eq!(queues, [(broker.addr.clone(), 0), (broker.addr.clone(), 1)]);
        consumer.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_queues_and_topics_are_named() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        let consumer = consumer(&broker);
        let error = consumer.pull("orders", 5, 0, 1, Duration::ZERO).await.unwrap_err();
        assert!(error.to_string().contains("no readable queue 5"), "{error}");
        let error = consumer.query_offset("missing", 0).await.unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::Broker {
                    code: ErrorCode::TopicNotFound,
                    ..
                }
            ),
            "{error:?}"
        );
        consumer.shutdown().await;
    }
}

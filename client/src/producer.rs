//! The producer: validates messages, picks a queue, sends, retries transient failures.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::client_stats::{ClientStats, LatencyHistogram, SizeHistogram};
use meridian_proto::messages::ProducerHeartbeat;
use meridian_proto::messages::{SendRequest, SendResponse, TopicRoute, perm};
use meridian_proto::validate::validate_group;
use meridian_proto::{ErrorCode, RequestCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::error::ClientError;
use crate::fault::FaultTracker;
use crate::message::{EncodedMessage, Message, SendResult};
use crate::route::{NameserverRoute, ROUTE_REFRESH_INTERVAL, RouteCache, RouteSource, route_queues};
use meridian_proto::allocate::QueueId;
use meridian_proto::idc::IdcSettings;
use meridian_proto::transport::ConnectionPool;
use meridian_proto::transport::TransportConfig as ClientConfig;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// Settings of a [`Producer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// Producer group (may be empty).
    pub group: String,
    /// Connection and request settings.
    pub client: ClientConfig,
    /// How many times a send is retried after a retriable failure (so `retries + 1` attempts).
    pub retries: u32,
    /// Wait before the first retry; doubles for each further one...
    pub retry_backoff: Duration,
    /// ...up to this. A failover takes a few seconds: a capped back-off finds the new master
    /// within this long of its election instead of sleeping through it.
    pub max_retry_backoff: Duration,
    /// Where this producer's data center comes from ([`meridian_proto::idc`]).
    pub idc: IdcSettings,
    /// Whether sends prefer brokers in this producer's data center.
    pub locality: Locality,
    /// A broker that failed a send is avoided this long (doubling with each failure in a row)...
    pub fault_backoff: Duration,
    /// ...at most this long.
    pub max_fault_backoff: Duration,
    /// A send slower than this avoids its broker for `fault_backoff` too.
    pub slow_send: Duration,
    /// How long a topic's route is trusted before it is fetched again (errors refetch it at once).
    pub route_refresh: Duration,
    /// A send over its topic's produce limit waits as long as the broker says and is sent again,
    /// without counting against `retries`, until it has waited this long in all; then it fails
    /// with the broker's [`meridian_proto::ErrorCode::Throttled`] error.
    pub max_throttle_wait: Duration,
    /// How often the brokers it sends to get its send latency and message sizes
    /// ([`meridian_proto::messages::ProducerHeartbeat`]); zero: never.
    pub report_interval: Duration,
    /// Messages with a body over this many bytes count as large: the brokers flag the producer
    /// with a hint to compress (default 10 KB).
    pub large_message_bytes: u64,
    /// Unique id of this producer instance in its reports (default `host@pid@random`).
    pub client_id: String,
}

/// Which brokers a producer sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locality {
    /// Brokers in the producer's own data center while any of them is writable and not failing;
    /// the other data centers only then (near-by principle).
    #[default]
    LocalFirst,
    /// Every writable broker in turn, wherever it is.
    Any,
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig {
            group: String::new(),
            client: ClientConfig::default(),
            retries: 2,
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(1),
            idc: IdcSettings::default(),
            locality: Locality::default(),
            fault_backoff: Duration::from_secs(1),
            max_fault_backoff: Duration::from_secs(30),
            slow_send: Duration::from_millis(550),
            route_refresh: ROUTE_REFRESH_INTERVAL,
            max_throttle_wait: Duration::from_secs(10),
            report_interval: Duration::from_secs(10),
            large_message_bytes: meridian_proto::client_stats::DEFAULT_LARGE_MESSAGE_BYTES,
            client_id: crate::push::default_client_id(),
        }
    }
}

impl ProducerConfig {
    /// The wait before retry number `attempt + 1`: `retry_backoff` doubled `attempt` times, at most
    /// `max_retry_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.retry_backoff
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_retry_backoff)
    }
}

/// Sends messages to topics. Cheap to clone; clones share connections, routes and the round-robin
/// position.
///
/// Each send picks the next writable queue of the topic's route in turn, among brokers of the
/// producer's own data center first ([`Locality::LocalFirst`]): other data centers get sends only
/// while no local broker is writable and healthy. A broker that failed a send or answered slowly
/// is avoided for a back-off ([`ProducerConfig::fault_backoff`]), then tried again. Retriable
/// failures ([`ClientError::is_retriable`]) are retried on another queue after a back-off; a
/// retried message keeps its id, so a duplicate (the first attempt landed after all) carries the
/// same id.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

struct ProducerInner {
    config: ProducerConfig,
    pool: ConnectionPool,
    routes: RouteCache,
    /// Round-robin position over writable queues, shared by all topics.
    next_queue: AtomicUsize,
    /// Runs `send_async` sends, so shutdown waits for them.
    tracker: TaskTracker,
    closed: AtomicBool,
    /// Brokers to avoid for now.
    faults: FaultTracker,
    /// This producer's data center, decided on the first send.
    idc: OnceCell<String>,
    /// "send failed, retrying" at most once a second.
    retry_log: meridian_proto::throttle::Throttle,
    /// Send latency of every successful attempt, reported to the brokers.
    send_latency: LatencyHistogram,
    /// Body sizes of every message prepared.
    message_sizes: SizeHistogram,
    /// Brokers it sent to (its reports go to them), and topics (named in its reports).
    sent_to: std::sync::Mutex<SentTo>,
    /// Stops the report loop at shutdown.
    stop: CancellationToken,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    RoundRobin,
    Queue(u32),
    /// The writable queue at this hash modulo their number (ordered messages).
    Sharded(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    AwaitResult,
    Oneway,
}

/// Validated messages of one topic, sent in one request.
struct Batch {
    topic: String,
    messages: Vec<EncodedMessage>,
}

impl Producer {
    /// A producer finding topics through `route`. Connections open on first send.
    pub fn new(route: Arc<dyn RouteSource>, config: ProducerConfig) -> Producer {
        let pool = ConnectionPool::new(config.client.clone());
        Producer::with_pool(route, pool, config)
    }

    /// A producer finding topics through the nameservers at `nameservers` (`host:port` each; see
    /// [`NameserverRoute`]). Route lookups share the producer's connections.
    pub fn with_nameservers(nameservers: Vec<String>, config: ProducerConfig) -> Producer {
        let pool = ConnectionPool::new(config.client.clone());
        let route = Arc::new(NameserverRoute::new(nameservers, pool.clone()));
        Producer::with_pool(route, pool, config)
    }

    fn with_pool(route: Arc<dyn RouteSource>, pool: ConnectionPool, config: ProducerConfig) -> Producer {
        let mut routes = RouteCache::new(route);
        routes.set_refresh(config.route_refresh);
        let producer = Producer {
            inner: Arc::new(ProducerInner {
                send_latency: LatencyHistogram::default(),
                message_sizes: SizeHistogram::new(config.large_message_bytes),
                sent_to: std::sync::Mutex::new(SentTo::default()),
                stop: CancellationToken::new(),
                pool,
                routes,
                faults: FaultTracker::new(config.fault_backoff, config.max_fault_backoff, config.slow_send),
                idc: OnceCell::new(),
                retry_log: meridian_proto::throttle::Throttle::new(Duration::from_secs(1)),
                // Start at a random queue so many producers do not all hit queue 0 first.
                next_queue: AtomicUsize::new(fastrand::usize(..1024)),
                tracker: TaskTracker::new(),
                closed: AtomicBool::new(false),
                config,
            }),
        };
        if !producer.inner.config.report_interval.is_zero()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let _entered = runtime.enter();
            producer.inner.tracker.spawn(report_loop(producer.inner.clone()));
        }
        producer
    }

    /// The settings this producer was built with.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Sends one message and waits for the broker to store it.
    pub async fn send(&self, msg: Message) -> Result<SendResult, ClientError> {
        let batch = self.prepare(vec![msg])?;
        self.inner.send_single(batch, Target::RoundRobin).await
    }

    /// Validates the message and starts sending it at once; the returned future resolves to the
    /// result and need not be polled for the send to progress, so a caller can start many sends
    /// and await them later. Must be called within a tokio runtime.
    pub fn send_async(&self, msg: Message) -> impl Future<Output = Result<SendResult, ClientError>> + Send + 'static {
        let spawned = self.prepare(vec![msg]).map(|batch| {
            let inner = self.inner.clone();
            self.inner
                .tracker
                .spawn(async move { inner.send_single(batch, Target::RoundRobin).await })
        });
        async move {
            match spawned?.await {
                Ok(result) => result,
                Err(join_error) => match join_error.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(_) => Err(ClientError::Shutdown),
                },
            }
        }
    }

    /// Sends one message without waiting for the broker (`FLAG_ONEWAY`): returns once the request
    /// is queued on the connection, with the id the message is stored under if it arrives. Fast,
    /// but a lost message goes unnoticed.
    pub async fn send_oneway(&self, msg: Message) -> Result<String, ClientError> {
        let batch = self.prepare(vec![msg])?;
        let msg_id = batch.messages[0].msg_id.clone();
        self.inner.deliver(&batch, Target::RoundRobin, Delivery::Oneway).await?;
        Ok(msg_id)
    }

    /// Sends messages of one topic in one request to one queue, stored all or nothing with
    /// consecutive offsets. Results are in the order of `msgs`.
    pub async fn send_batch(&self, msgs: Vec<Message>) -> Result<Vec<SendResult>, ClientError> {
        let batch = self.prepare(msgs)?;
        self.inner
            .deliver(&batch, Target::RoundRobin, Delivery::AwaitResult)
            .await
    }

    /// Sends one message to queue `queue_id` of its topic. When several brokers serve the topic,
    /// the first writable one (by broker name) holding that queue is used.
    pub async fn send_to_queue(&self, msg: Message, queue_id: u32) -> Result<SendResult, ClientError> {
        let batch = self.prepare(vec![msg])?;
        self.inner.send_single(batch, Target::Queue(queue_id)).await
    }

    /// Sends an ordered message: every message with the same `sharding_key` goes to the same queue
    /// (by a stable hash over the topic's writable queues, sorted by broker and id), so an orderly
    /// consumer sees them in send order. Retries stay on that queue; the key is kept in the
    /// message's `SHARDING_KEY` property. Send the messages of one key one after another (await
    /// each), or their order is the order they reach the broker.
    pub async fn send_ordered(&self, msg: Message, sharding_key: &str) -> Result<SendResult, ClientError> {
        let mut msg = msg;
        msg.sharding_key = Some(sharding_key.to_owned());
        let batch = self.prepare(vec![msg])?;
        let hash = meridian_proto::properties::tag_hash(sharding_key);
        self.inner.send_single(batch, Target::Sharded(hash)).await
    }

    /// This producer's data center (empty: none), deciding it first if no send has yet.
    pub async fn idc(&self) -> &str {
        self.inner.idc().await
    }

    /// Stops accepting sends, waits for sends started with [`Producer::send_async`], then closes
    /// the connections.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.stop.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        self.inner.pool.shutdown().await;
    }

    fn prepare(&self, msgs: Vec<Message>) -> Result<Batch, ClientError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Shutdown);
        }
        let config = &self.inner.config;
        if !config.group.is_empty() {
            validate_group(&config.group)?;
        }
        let Some(first) = msgs.first() else {
            return Err(ClientError::InvalidArgument(
                "a batch needs at least one message".to_owned(),
            ));
        };
        let topic = first.topic.clone();
        if let Some(other) = msgs.iter().find(|msg| msg.topic != topic) {
            return Err(ClientError::InvalidArgument(format!(
                "a batch goes to one topic, but this one mixes {topic:?} and {:?}; send one batch per topic",
                other.topic
            )));
        }
        let messages = msgs
            .iter()
            .map(|msg| msg.encode(&config.client.limits))
            .collect::<Result<Vec<_>, _>>()?;
        for msg in &msgs {
            self.inner.message_sizes.record(msg.body.len() as u64);
        }
        Ok(Batch { topic, messages })
    }
}

#[derive(Debug, Default)]
struct SentTo {
    brokers: std::collections::BTreeSet<String>,
    topics: std::collections::BTreeSet<String>,
}

/// Sends the producer's figures to every broker it sent to, every `report_interval`, until
/// shutdown. A broker that does not know the request (older) is skipped quietly.
async fn report_loop(inner: Arc<ProducerInner>) {
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(inner.config.report_interval) => {}
        }
        let (brokers, topics): (Vec<String>, Vec<String>) = {
            let sent_to = inner.sent_to.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (
                sent_to.brokers.iter().cloned().collect(),
                sent_to.topics.iter().cloned().collect(),
            )
        };
        if brokers.is_empty() {
            continue;
        }
        let request = ProducerHeartbeat {
            client_id: inner.config.client_id.clone(),
            group: inner.config.group.clone(),
            sdk: meridian_proto::sdk::SDK_ID.to_owned(),
            idc: inner.idc.get().cloned().unwrap_or_default(),
            stats: Some(ClientStats {
                send_latency_us: inner.send_latency.snapshot(),
                consume_latency_us: Vec::new(),
                message_bytes: inner.message_sizes.snapshot(),
                large_threshold_bytes: inner.message_sizes.threshold(),
                large_messages: inner.message_sizes.over_threshold(),
                largest_message_bytes: inner.message_sizes.largest(),
            }),
            topics,
        };
        let timeout = inner.config.client.request_timeout;
        for addr in brokers {
            let result = tokio::select! {
                _ = inner.stop.cancelled() => return,
                result = inner.pool.call_empty(&addr, RequestCode::ProducerHeartbeat, &request, timeout) => result,
            };
            if let Err(error) = result {
                debug!(addr, %error, "producer report not taken");
            }
        }
    }
}

impl ProducerInner {
    /// Remembers a broker and topic it sent to (allocates only the first time).
    fn note_sent(&self, addr: &str, topic: &str) {
        let mut sent_to = self.sent_to.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !sent_to.brokers.contains(addr) {
            sent_to.brokers.insert(addr.to_owned());
        }
        // Bounded: a producer of very many topics names the first ones.
        if sent_to.topics.len() < 64 && !sent_to.topics.contains(topic) {
            sent_to.topics.insert(topic.to_owned());
        }
    }

    async fn idc(&self) -> &str {
        self.idc
            .get_or_init(|| async {
                crate::idc::detect(self.routes.source(), &self.config.idc, "producer")
                    .await
                    .idc
            })
            .await
    }

    async fn send_single(&self, batch: Batch, target: Target) -> Result<SendResult, ClientError> {
        let results = self.deliver(&batch, target, Delivery::AwaitResult).await?;
        results
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Decode("Send response has no result".to_owned()))
    }

    /// Sends `batch`, retrying retriable failures with a doubling back-off.
    async fn deliver(&self, batch: &Batch, target: Target, delivery: Delivery) -> Result<Vec<SendResult>, ClientError> {
        let mut request = SendRequest {
            topic: batch.topic.clone(),
            queue_id: 0,
            messages: batch.messages.iter().map(|message| message.data.clone()).collect(),
            producer_group: self.config.group.clone(),
            sdk: Bytes::from_static(meridian_proto::sdk::SDK_ID.as_bytes()),
        };
        let mut attempt = 0u32;
        let mut throttled_for = Duration::ZERO;
        loop {
            let error = match self.attempt(batch, &mut request, target, delivery).await {
                Ok(results) => return Ok(results),
                Err(error) => error,
            };
            if error.suggests_stale_route() {
                self.routes.invalidate(&batch.topic);
            }
            if let Some(wait) = error.throttled_wait() {
                // Over the topic's limit: the broker named the wait; it is not a failure to count.
                throttled_for += wait;
                if throttled_for > self.config.max_throttle_wait || self.closed.load(Ordering::SeqCst) {
                    return Err(error);
                }
                debug!(topic = %batch.topic, ?wait, "send throttled, waiting as the broker said");
                tokio::time::sleep(wait).await;
                continue;
            }
            if !error.is_retriable() || attempt >= self.config.retries || self.closed.load(Ordering::SeqCst) {
                return Err(error);
            }
            let backoff = self.config.backoff(attempt);
            if let Some(left_out) = self.retry_log.due() {
                warn!(
                    topic = %batch.topic,
                    attempt = attempt + 1,
                    retries = self.config.retries,
                    ?backoff,
                    %error,
                    other_retries_not_logged = left_out,
                    "send failed, retrying (logged at most once a second)"
                );
            }
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        batch: &Batch,
        request: &mut SendRequest,
        target: Target,
        delivery: Delivery,
    ) -> Result<Vec<SendResult>, ClientError> {
        let idc = self.idc().await;
        let route = self.routes.get(&batch.topic).await?;
        let (queue, addr) = self.pick_queue(&batch.topic, &route, target, idc)?;
        request.queue_id = queue.queue_id as i32;
        let started = Instant::now();
        let mut result = self.send_to(batch, request, delivery, &queue, &addr).await;
        if let Err(ClientError::Broker {
            code: ErrorCode::NotApproved,
            message,
        }) = &result
            && self.routes.source().routes_only_approved_topics()
        {
            result = Err(self.approval_not_applied(&batch.topic, &queue, &addr, message).await);
        }
        match &result {
            Ok(_) => {
                let elapsed = started.elapsed();
                self.send_latency.record(elapsed);
                self.faults.succeeded(&queue.broker_name, elapsed);
                self.note_sent(&addr, &batch.topic);
            }
            // Refusals about the message itself, or over the topic's limit, say nothing about the
            // broker.
            Err(error) if error.throttled_wait().is_some() => {}
            Err(error) if error.is_retriable() || error.suggests_stale_route() => {
                self.faults.failed(&queue.broker_name);
            }
            Err(_) => {}
        }
        result
    }

    /// The broker refused a topic the nameservers gave a route to. Asks the nameservers again: if
    /// they still route it, the topic is approved and the broker is only behind; otherwise their
    /// refusal (rejected, deleted) is the answer.
    async fn approval_not_applied(&self, topic: &str, queue: &QueueId, addr: &str, message: &str) -> ClientError {
        self.routes.invalidate(topic);
        match self.routes.get(topic).await {
            Ok(_) => ClientError::ApprovalNotApplied {
                topic: topic.to_owned(),
                broker_group: queue.broker_name.clone(),
                addr: addr.to_owned(),
                message: message.to_owned(),
            },
            Err(error) => error,
        }
    }

    async fn send_to(
        &self,
        batch: &Batch,
        request: &SendRequest,
        delivery: Delivery,
        queue: &QueueId,
        addr: &str,
    ) -> Result<Vec<SendResult>, ClientError> {
        if delivery == Delivery::Oneway {
            let body = Bytes::from(prost::Message::encode_to_vec(request));
            self.pool.send_oneway(addr, RequestCode::Send, body).await?;
            return Ok(Vec::new());
        }
        let timeout = self.config.client.request_timeout;
        let response: SendResponse = self.pool.call(addr, RequestCode::Send, request, timeout).await?;
        if response.results.len() != batch.messages.len() {
            return Err(ClientError::Decode(format!(
                "Send response from {addr} has {} results for {} messages",
                response.results.len(),
                batch.messages.len()
            )));
        }
        debug!(topic = %batch.topic, %queue, messages = batch.messages.len(), "sent");
        Ok(response
            .results
            .into_iter()
            .zip(&batch.messages)
            .map(|(result, message)| SendResult {
                msg_id: if result.msg_id.is_empty() {
                    message.msg_id.clone()
                } else {
                    result.msg_id
                },
                topic: batch.topic.clone(),
                queue_id: result.queue_id,
                queue_offset: result.queue_offset,
                commitlog_offset: result.commitlog_offset,
                store_timestamp: result.store_timestamp,
                broker_name: queue.broker_name.clone(),
            })
            .collect())
    }

    fn pick_queue(
        &self,
        topic: &str,
        route: &TopicRoute,
        target: Target,
        idc: &str,
    ) -> Result<(QueueId, String), ClientError> {
        let writable = route_queues(route, perm::WRITE);
        if writable.is_empty() {
            return Err(ClientError::NoRoute {
                topic: topic.to_owned(),
            });
        }
        match target {
            Target::RoundRobin => {
                let candidates = self.candidates(route, &writable, idc);
                let index = self.next_queue.fetch_add(1, Ordering::Relaxed) % candidates.len();
                Ok(candidates[index].clone())
            }
            Target::Sharded(hash) => {
                let index = (hash % writable.len() as u64) as usize;
                Ok(writable[index].clone())
            }
            Target::Queue(queue_id) => {
                let count = writable.len();
                writable
                    .into_iter()
                    .find(|(queue, _)| queue.queue_id == queue_id)
                    .ok_or_else(|| {
                        ClientError::InvalidArgument(format!(
                            "topic {topic:?} has no writable queue {queue_id} ({count} writable queues); pick a queue id the topic has"
                        ))
                    })
            }
        }
    }
}

impl ProducerInner {
    /// The queues a round-robin send chooses among: healthy queues in this producer's data center;
    /// if there are none (or locality is `Any`, or the data center is unknown or evacuated), healthy
    /// queues anywhere; if every broker is failing, every writable queue.
    fn candidates<'a>(
        &self,
        route: &TopicRoute,
        writable: &'a [(QueueId, String)],
        idc: &str,
    ) -> Vec<&'a (QueueId, String)> {
        let avoided = self.faults.avoided();
        let healthy: Vec<&(QueueId, String)> = writable
            .iter()
            .filter(|(queue, _)| !avoided.contains(&queue.broker_name))
            .collect();
        let local_first = self.config.locality == Locality::LocalFirst
            && !idc.is_empty()
            && !route.evacuated_idcs.iter().any(|evacuated| evacuated == idc);
        if local_first {
            let in_idc = |broker_name: &str| {
                route
                    .brokers
                    .iter()
                    .any(|broker| broker.broker_name == broker_name && broker.idc == idc)
            };
            let local: Vec<&(QueueId, String)> = healthy
                .iter()
                .copied()
                .filter(|(queue, _)| in_idc(&queue.broker_name))
                .collect();
            if !local.is_empty() {
                return local;
            }
        }
        if healthy.is_empty() {
            writable.iter().collect()
        } else {
            healthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::StaticRoute;
    use crate::test_support::{BROKER_NAME, FakeBroker, FakeNameserver, eventually, refused_addr};
    use meridian_proto::messages::BrokerRoute;
    use meridian_proto::properties::{self, KEYS, MSG_ID, TAGS};
    use meridian_proto::record::decode_all;

    fn producer(broker: &FakeBroker, retries: u32) -> Producer {
        let pool = ConnectionPool::new(ClientConfig::default());
        let route = Arc::new(StaticRoute::new(broker.addr.clone(), pool));
        Producer::new(
            route,
            ProducerConfig {
                group: "test-producers".into(),
                retries,
                retry_backoff: Duration::from_millis(1),
                ..ProducerConfig::default()
            },
        )
    }

    fn two_idc_route(evacuated: &[&str]) -> TopicRoute {
        let group = |name: &str, idc: &str| BrokerRoute {
            broker_name: name.into(),
            addr: format!("{name}:7911"),
            idc: idc.into(),
            queues: 2,
            perm: perm::READ | perm::WRITE,
            replicas: Vec::new(),
        };
        TopicRoute {
            topic: "orders".into(),
            brokers: vec![group("a", "dc1"), group("b", "dc2"), group("c", "dc1")],
            evacuated_idcs: evacuated.iter().map(|idc| (*idc).to_owned()).collect(),
            lost_idcs: Vec::new(),
        }
    }

    fn brokers_of(candidates: &[&(QueueId, String)]) -> Vec<String> {
        let mut brokers: Vec<String> = candidates.iter().map(|(queue, _)| queue.broker_name.clone()).collect();
        brokers.dedup();
        brokers
    }

    #[tokio::test(start_paused = true)]
    async fn sends_stay_in_their_idc_while_a_local_broker_is_healthy_and_fall_back_across() {
        let config = |locality| ProducerConfig {
            locality,
            fault_backoff: Duration::from_secs(1),
            ..ProducerConfig::default()
        };
        let producer = Producer::new(
            Arc::new(StaticRoute::new(
                refused_addr(),
                ConnectionPool::new(ClientConfig::default()),
            )),
            config(Locality::LocalFirst),
        );
        let inner = &producer.inner;
        let route = two_idc_route(&[]);
        let writable = route_queues(&route, perm::WRITE);
        let pick = |idc: &str| brokers_of(&inner.candidates(&route, &writable, idc));
        assert_eq!(pick("dc1"), ["a", "c"]);
        assert_eq!(pick("dc2"), ["b"]);
        assert_eq!(pick(""), ["a", "b", "c"], "no IDC: no preference");
        assert_eq!(pick("dc9"), ["a", "b", "c"], "no broker in its IDC: any");

        inner.faults.failed("a");
        assert_eq!(pick("dc1"), ["c"], "a failing local broker is avoided");
        inner.faults.failed("c");
        assert_eq!(pick("dc1"), ["b"], "every local broker failing: the other IDC");
        inner.faults.failed("b");
        assert_eq!(pick("dc1"), ["a", "b", "c"], "every broker failing: try them all");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(pick("dc1"), ["a", "c"], "back home once the back-off passed");

        let evacuated = two_idc_route(&["dc1"]);
        let writable_evacuated = route_queues(&evacuated, perm::WRITE);
        assert_eq!(
            brokers_of(&inner.candidates(&evacuated, &writable_evacuated, "dc1")),
            ["a", "b", "c"]
        );

        let any = Producer::new(
            Arc::new(StaticRoute::new(
                refused_addr(),
                ConnectionPool::new(ClientConfig::default()),
            )),
            config(Locality::Any),
        );
        assert_eq!(
            brokers_of(&any.inner.candidates(&route, &writable, "dc1")),
            ["a", "b", "c"]
        );
    }

    #[tokio::test]
    async fn sends_round_robin_over_the_writable_queues() {
        let broker = FakeBroker::start(&[("orders", 4)]).await;
        let producer = producer(&broker, 2);
        let mut results = Vec::new();
        for index in 0..8 {
            let msg = Message::new("orders", format!("body-{index}"))
                .with_key(format!("key-{index}"))
                .with_tag("created");
            results.push(producer.send(msg).await.unwrap());
        }
        for pair in results.windows(2) {
            assert_eq!(pair[1].queue_id, (pair[0].queue_id + 1) % 4);
        }
        for (index, result) in results.iter().enumerate() {
            assert_eq!(result.topic, "orders");
            assert_eq!(result.queue_offset, index as u64 / 4);
        }
        let records = broker.records("orders", results[0].queue_id);
        let stored = decode_all(&records[0]).unwrap().remove(0);
        assert_eq!(stored.msg_id(), results[0].msg_id);
        assert_eq!(
            properties::get(&stored.properties, MSG_ID),
            Some(results[0].msg_id.as_str())
        );
        assert_eq!(properties::get(&stored.properties, KEYS), Some("key-0"));
        assert_eq!(properties::get(&stored.properties, TAGS), Some("created"));
        assert_eq!(broker.send_requests()[0].producer_group, "test-producers");
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn retriable_errors_are_retried_with_the_same_message_id() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        broker.fail_next_sends(&[ErrorCode::Busy, ErrorCode::FlushTimeout]);
        let producer = producer(&broker, 2);
        producer.send(Message::new("orders", "x")).await.unwrap();
        let requests = broker.send_requests();
        assert_eq!(requests.len(), 3);
        let ids: Vec<_> = requests
            .iter()
            .map(|request| {
                properties::get(&request.messages[0].properties, MSG_ID)
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]));
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn throttled_sends_wait_and_go_again_without_spending_retries_until_their_deadline() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        broker.fail_next_sends(&[ErrorCode::Throttled; 3]);
        // No retries at all: throttling is not a failure, so the fourth attempt goes through.
        let producer = producer(&broker, 0);
        let started = Instant::now();
        producer.send(Message::new("orders", "x")).await.unwrap();
        assert_eq!(broker.send_requests().len(), 4);
        // The fake names no wait, so each is the 100 ms default.
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );

        broker.fail_next_sends(&[ErrorCode::Throttled; 5]);
        let impatient = Producer::new(
            Arc::new(StaticRoute::new(
                broker.addr.clone(),
                ConnectionPool::new(ClientConfig::default()),
            )),
            ProducerConfig {
                max_throttle_wait: Duration::from_millis(250),
                ..producer.config().clone()
            },
        );
        let error = impatient.send(Message::new("orders", "x")).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::Throttled), "{error}");
        assert_eq!(broker.send_requests().len(), 4 + 3, "waited 100 + 100 ms, then gave up");
        producer.shutdown().await;
        impatient.shutdown().await;
    }

    #[test]
    fn the_back_off_doubles_up_to_its_cap() {
        let config = ProducerConfig::default();
        let waits: Vec<u128> = (0..6).map(|attempt| config.backoff(attempt).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(config.backoff(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn retries_stop_after_the_configured_count() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        broker.fail_next_sends(&[ErrorCode::Busy, ErrorCode::Busy, ErrorCode::Busy]);
        let producer = producer(&broker, 1);
        let error = producer.send(Message::new("orders", "x")).await.unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::Broker {
                    code: ErrorCode::Busy,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(broker.send_requests().len(), 2);
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn non_retriable_errors_fail_at_once_with_the_brokers_remark() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        broker.fail_next_sends(&[ErrorCode::InvalidArgument]);
        let producer = producer(&broker, 2);
        let error = producer.send(Message::new("orders", "x")).await.unwrap_err();
        assert!(error.to_string().contains("injected invalid_argument"), "{error}");
        assert_eq!(broker.send_requests().len(), 1);

        let error = producer.send(Message::new("missing", "x")).await.unwrap_err();
        assert!(
            matches!(&error, ClientError::Broker { code: ErrorCode::TopicNotFound, message } if message.contains("missing")),
            "{error:?}"
        );
        assert_eq!(broker.request_count(RequestCode::TopicRoute), 2);
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn not_approved_is_not_retried_and_keeps_the_brokers_message() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        broker.fail_next_sends(&[ErrorCode::NotApproved]);
        let producer = producer(&broker, 2);
        let error = producer.send(Message::new("orders", "x")).await.unwrap_err();
        assert!(
            matches!(&error, ClientError::Broker { code: ErrorCode::NotApproved, message } if message == "injected not_approved"),
            "{error:?}"
        );
        assert_eq!(broker.send_requests().len(), 1);
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn a_broker_behind_the_nameservers_approval_is_named_and_retried() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        let nameserver = FakeNameserver::start().await;
        nameserver.set_route(TopicRoute {
            topic: "orders".into(),
            brokers: vec![BrokerRoute {
                broker_name: BROKER_NAME.into(),
                addr: broker.addr.clone(),
                idc: String::new(),
                queues: 2,
                perm: perm::READ | perm::WRITE,
                replicas: Vec::new(),
            }],
            evacuated_idcs: Vec::new(),
            lost_idcs: Vec::new(),
        });
        let producer = Producer::with_nameservers(
            vec![nameserver.addr.clone()],
            ProducerConfig {
                retries: 1,
                retry_backoff: Duration::from_millis(1),
                ..ProducerConfig::default()
            },
        );
        // Refused twice: both attempts fail, and the error says the broker is behind.
        broker.fail_next_sends(&[ErrorCode::NotApproved, ErrorCode::NotApproved]);
        let error = producer.send(Message::new("orders", "x")).await.unwrap_err();
        assert!(
            matches!(&error, ClientError::ApprovalNotApplied { topic, broker_group, .. } if topic == "orders" && broker_group == BROKER_NAME),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("has not applied the approval yet"),
            "{error}"
        );
        assert!(!error.to_string().contains("request it"), "{error}");
        // Refused once: the retry goes through once the broker caught up.
        broker.fail_next_sends(&[ErrorCode::NotApproved]);
        producer.send(Message::new("orders", "x")).await.unwrap();
        assert_eq!(broker.message_count("orders"), 1);
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn producers_built_on_nameservers_send_only_to_groups_with_a_live_master() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        let nameserver = FakeNameserver::start().await;
        let group = |name: &str, addr: &str| BrokerRoute {
            broker_name: name.into(),
            addr: addr.into(),
            idc: String::new(),
            queues: 2,
            perm: perm::READ | perm::WRITE,
            replicas: Vec::new(),
        };
        nameserver.set_route(TopicRoute {
            topic: "orders".into(),
            brokers: vec![group(BROKER_NAME, &broker.addr), group("broker-b", "")],
            evacuated_idcs: Vec::new(),
            lost_idcs: Vec::new(),
        });
        nameserver.refuse(
            "payments",
            ErrorCode::NotApproved,
            "topic \"payments\" is awaiting approval",
        );
        let producer = Producer::with_nameservers(
            vec![refused_addr(), nameserver.addr.clone()],
            ProducerConfig {
                retry_backoff: Duration::from_millis(1),
                ..ProducerConfig::default()
            },
        );
        for _ in 0..6 {
            producer.send(Message::new("orders", "x")).await.unwrap();
        }
        assert_eq!(broker.message_count("orders"), 6);
        let error = producer.send(Message::new("payments", "x")).await.unwrap_err();
        assert!(
            matches!(&error, ClientError::Nameserver { code: ErrorCode::NotApproved, message, .. } if message.contains("awaiting approval")),
            "{error:?}"
        );
        // One lookup for orders (cached after), one for payments: the refusal is not retried.
        assert_eq!(nameserver.lookups(), 2);
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn invalid_messages_never_reach_the_broker() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        let producer = producer(&broker, 2);
        assert!(matches!(
            producer.send(Message::new("bad topic", "x")).await,
            Err(ClientError::Validation(_))
        ));
        assert!(matches!(
            producer.send_async(Message::new("orders", "")).await,
            Err(ClientError::Validation(_))
        ));
        assert!(matches!(
            producer.send_batch(Vec::new()).await,
            Err(ClientError::InvalidArgument(_))
        ));
        let mixed = vec![Message::new("orders", "a"), Message::new("other", "b")];
        assert!(matches!(
            producer.send_batch(mixed).await,
            Err(ClientError::InvalidArgument(_))
        ));
        assert_eq!(broker.total_requests(), 0);
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn send_async_progresses_without_being_polled() {
        let broker = FakeBroker::start(&[("orders", 4)]).await;
        let producer = producer(&broker, 2);
        let pending: Vec<_> = (0..50)
            .map(|index| producer.send_async(Message::new("orders", format!("m{index}"))))
            .collect();
        eventually(|| broker.message_count("orders") == 50).await;
        let mut ids = std::collections::HashSet::new();
        for send in pending {
            ids.insert(send.await.unwrap().msg_id);
        }
        assert_eq!(ids.len(), 50);
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn a_batch_is_one_request_to_one_queue() {
        let broker = FakeBroker::start(&[("orders", 4)]).await;
        let producer = producer(&broker, 2);
        let msgs = (0..5)
            .map(|index| Message::new("orders", format!("m{index}")))
            .collect();
        let results = producer.send_batch(msgs).await.unwrap();
        assert_eq!(broker.send_requests().len(), 1);
        assert!(results.iter().all(|result| result.queue_id == results[0].queue_id));
        let offsets: Vec<u64> = results.iter().map(|result| result.queue_offset).collect();
        assert_eq!(offsets, [0, 1, 2, 3, 4]);
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn send_to_queue_uses_that_queue_or_names_the_problem() {
        let broker = FakeBroker::start(&[("orders", 4)]).await;
        let producer = producer(&broker, 2);
        for _ in 0..3 {
            let result = producer.send_to_queue(Message::new("orders", "x"), 2).await.unwrap();
            assert_eq!(result.queue_id, 2);
        }
        let error = producer
            .send_to_queue(Message::new("orders", "x"), 9)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no writable queue 9"), "{error}");
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn oneway_sends_are_flagged_and_stored() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        let producer = producer(&broker, 2);
        producer.send_oneway(Message::new("orders", "fire")).await.unwrap();
        eventually(|| broker.message_count("orders") == 1).await;
        assert_eq!(broker.oneway_count(), 1);
        producer.shutdown().await;
    }

    #[tokio::test]
    async fn sends_after_shutdown_are_refused() {
        let broker = FakeBroker::start(&[("orders", 2)]).await;
        let producer = producer(&broker, 2);
        let pending = producer.send_async(Message::new("orders", "in flight"));
        producer.shutdown().await;
        pending.await.unwrap();
        assert!(matches!(
            producer.send(Message::new("orders", "late")).await,
            Err(ClientError::Shutdown)
        ));
    }
}

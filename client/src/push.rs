//! The push consumer: joins a group, shares the topic's queues with the other members, pulls each
//! of its queues in order and hands every message to a handler, committing what was handled.
//!
//! Tasks, all on one [`TaskTracker`]:
//! - heartbeat: tells every broker of the topic this member is alive;
//! - rebalance: lists the members, allocates queues ([`allocate_by_idc`]), stops the loops of
//!   queues taken away (after the message in hand, then commits them) and starts loops for new ones;
//! - one pull loop per owned queue: pull, hand messages to the handler one by one, retry a message
//!   in place while the handler asks to, advance the queue's processed offset on success;
//! - commit: stores each queue's processed offset every `commit_interval`.
//!
//! The committed offset is never past a message whose handler has not returned `Success` or been
//! handed to the broker's retry topic, so delivery is at least once.
//!
//! Modes ([`ConsumeMode`], [`ConsumerConfig::broadcasting`]):
//! - concurrently (default): a failed message is sent back to the broker, which redelivers it from
//!   the group's retry topic `%RETRY%<group>` after a growing back-off (10 s, 30 s, 1 m, ...) and
//!   dead-letters it after the group's maximum; the queue moves on meanwhile. Every member also
//!   consumes its share of the retry topic.
//! - orderly: a member consumes a queue only while it holds the queue's lock at the broker, one
//!   message at a time; a failed message is retried in place, holding back its queue.
//! - broadcasting: every member consumes every queue with offsets of its own (keyed by its
//!   `client_id`, so give members stable ids to resume after a restart); failures retry in place.
//!
//! A tag filter ([`ConsumerConfig::subscription`]) is applied by the broker and checked again here.
//! When an operator resets the group's offsets, the next pull of each queue says so and the
//! queue continues from the new position.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use meridian_proto::client_stats::{ClientStats, LatencyHistogram};
use meridian_proto::filter::TagFilter;
use meridian_proto::idc::IdcSettings;
use meridian_proto::messages::{
    ConsumerHeartbeat, ConsumerListResponse, ConsumerMember, GroupMember, PullStatus, TopicRoute, perm,
};
use meridian_proto::properties::RETRY_TOPIC;
use meridian_proto::record::StoredMessage;
use meridian_proto::topics;
use meridian_proto::validate::{validate_client_id, validate_group, validate_topic};
use meridian_proto::{RequestCode, SDK_VERSION};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::consumer::{PullConsumer, PullOptions};
use crate::error::ClientError;
use crate::route::{ROUTE_REFRESH_INTERVAL, RouteSource, broker_addr, broker_addrs, broker_idcs, route_queues};
use meridian_proto::allocate::{ALLOCATION, Deployment, QueueId, allocate_by_idc};
use meridian_proto::transport::TransportConfig as ClientConfig;

/// First wait before a message whose handler returned [`ConsumeResult::Retry`] is handed again.
pub(crate) const CONSUME_RETRY_FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two attempts at the same message.
pub(crate) const CONSUME_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Wait after a failed pull (or offset lookup) before trying the queue again.
const PULL_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Where a queue starts when the group has no committed offset for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumeFrom {
    /// The oldest message the queue still holds.
    Earliest,
    /// Only messages sent after the consumer started.
    #[default]
    Latest,
}

/// How the members of a group consume their queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumeMode {
    /// Failed messages go to the group's retry topic and the queue moves on.
    #[default]
    Concurrently,
    /// One member per queue at a time (broker-side lock), in order; failures retry in place.
    Orderly,
}

/// Renew orderly queue locks this often (brokers expire them after 30 s by default).
const LOCK_RENEW_INTERVAL: Duration = Duration::from_secs(10);

/// What a handler says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    /// Done; the offset may move past it.
    Success,
    /// Consume it again later. Concurrently: from the group's retry topic after the broker's
    /// back-off, while the queue moves on. Orderly and broadcasting: in place after a back-off
    /// (1 s, doubling, at most 30 s), holding back later messages of the queue.
    Retry,
}

/// Settings of a [`PushConsumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Consumer group; members of a group share the topic's queues.
    pub group: String,
    /// Topic to consume.
    pub topic: String,
    /// Connection and request settings.
    pub client: ClientConfig,
    /// Unique id of this member in the group.
    pub client_id: String,
    /// Where a queue starts when the group has no committed offset for it.
    pub consume_from: ConsumeFrom,
    /// How often the brokers hear that this member is alive (they expire it after 10 s).
    pub heartbeat_interval: Duration,
    /// How often the queues are shared out again among the members.
    pub rebalance_interval: Duration,
    /// Most messages one pull fetches.
    pub pull_batch: u32,
    /// How long a pull waits at the broker for new messages.
    pub long_poll: Duration,
    /// How often processed offsets are committed.
    pub commit_interval: Duration,
    /// Where this consumer's data center comes from ([`meridian_proto::idc`]).
    pub idc: IdcSettings,
    /// How the group spans data centers; every member must use the same.
    pub deployment: Deployment,
    /// How long the topic's route is trusted before it is fetched again.
    pub route_refresh: Duration,
    /// Report consume-side trace events (SubBefore, SubAfter with cost and result) to the brokers,
    /// which add them to the message's trace (default true).
    pub trace: bool,
    /// Tag filter expression: `*` (default) or tags joined by `||`.
    pub subscription: String,
    /// Concurrently (default) or orderly.
    pub mode: ConsumeMode,
    /// Every member gets every message (the group must be registered as broadcasting).
    pub broadcasting: bool,
    /// Delay level before a failed message is redelivered from the retry topic; 0 (default): the
    /// broker's back-off growing with the number of failures.
    pub retry_delay_level: u32,
}

impl ConsumerConfig {
    /// Defaults for consuming `topic` in `group`.
    pub fn new(group: impl Into<String>, topic: impl Into<String>) -> ConsumerConfig {
        ConsumerConfig {
            group: group.into(),
            topic: topic.into(),
            ..ConsumerConfig::default()
        }
    }
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            group: String::new(),
            topic: String::new(),
            client: ClientConfig::default(),
            client_id: default_client_id(),
            consume_from: ConsumeFrom::default(),
            heartbeat_interval: Duration::from_secs(2),
            rebalance_interval: Duration::from_secs(1),
            pull_batch: 32,
            long_poll: Duration::from_secs(5),
            commit_interval: Duration::from_secs(1),
            idc: IdcSettings::default(),
            deployment: Deployment::default(),
            route_refresh: ROUTE_REFRESH_INTERVAL,
            trace: true,
            subscription: "*".to_owned(),
            mode: ConsumeMode::default(),
            broadcasting: false,
            retry_delay_level: 0,
        }
    }
}

/// `host@pid@random`: readable in the console and unique even for two consumers in one process.
pub(crate) fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let host: String = host
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' {
                ch
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}@{}@{:08x}", std::process::id(), fastrand::u32(..))
}

type BoxedHandler = Arc<dyn Fn(StoredMessage) -> Pin<Box<dyn Future<Output = ConsumeResult> + Send>> + Send + Sync>;

/// A member of a consumer group that pulls its share of the topic's queues and hands each message
/// to a handler. See the module docs for how it works; call [`PushConsumer::shutdown`] to commit
/// and leave the group (dropping it only stops the tasks).
pub struct PushConsumer {
    inner: Arc<PushInner>,
}

struct PushInner {
    config: ConsumerConfig,
    pull: PullConsumer,
    handler: BoxedHandler,
    tracker: TaskTracker,
    cancel: CancellationToken,
    workers: Mutex<BTreeMap<QueueKey, QueueWorker>>,
    /// The parsed [`ConsumerConfig::subscription`].
    filter: TagFilter,
    /// Rebalances run one at a time (the first one in `start`, then the periodic ones).
    rebalance_lock: tokio::sync::Mutex<()>,
    /// This member's data center (empty: none).
    idc: String,
    /// What the last rebalance found worth a warning, so each is logged once when it appears.
    findings: Mutex<Findings>,
    /// Consume-side trace events waiting to be reported (`None` with `trace` off).
    trace: Option<crate::trace::ConsumeTracer>,
    /// The handler's time per call, sent cumulatively in every heartbeat.
    consume_latency: Arc<LatencyHistogram>,
}

/// Problems the last rebalance saw in the group.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Findings {
    /// Members allocating differently from this one: `client_id allocation deployment`.
    disagreeing: Vec<String>,
    /// Data centers with queues but no consumers (dual-side).
    unserved_idcs: Vec<String>,
}

struct QueueWorker {
    stop: CancellationToken,
    progress: Arc<QueueProgress>,
    handle: JoinHandle<()>,
}

/// A queue of one of the topics a member consumes: its topic, or its group's retry topic.
type QueueKey = (String, QueueId);

#[derive(Default)]
struct QueueProgress {
    offsets: Mutex<Offsets>,
    /// Serializes commits of one queue so two in flight cannot land out of order and move the
    /// stored offset backwards.
    commit_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Offsets {
    /// Offset after the last message handled with `Success`; `None` until the start is known.
    processed: Option<u64>,
    /// What the broker holds, as far as this member knows.
    committed: Option<u64>,
    /// The offset generation the position came from (see [`PullStatus::OffsetReset`]).
    generation: u64,
}

impl QueueProgress {
    fn lock(&self) -> MutexGuard<'_, Offsets> {
        self.offsets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_processed(&self, offset: u64) {
        self.lock().processed = Some(offset);
    }
}

impl PushConsumer {
    /// Joins the group and starts consuming: sends a first heartbeat, takes a share of the queues
    /// and starts their pull loops. Fails when the group or topic name is invalid, the topic has no
    /// route, or no broker accepts the heartbeat.
    pub async fn start<F, Fut>(
        route: Arc<dyn RouteSource>,
        config: ConsumerConfig,
        handler: F,
    ) -> Result<PushConsumer, ClientError>
    where
        F: Fn(StoredMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        let pull = PullConsumer::new(route, config.client.clone(), config.group.clone());
        PushConsumer::start_with(pull, config, handler).await
    }

    /// Like [`PushConsumer::start`], finding the topic through the nameservers at `nameservers`
    /// (`host:port` each; see [`crate::NameserverRoute`]).
    pub async fn start_with_nameservers<F, Fut>(
        nameservers: Vec<String>,
        config: ConsumerConfig,
        handler: F,
    ) -> Result<PushConsumer, ClientError>
    where
        F: Fn(StoredMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        let pull = PullConsumer::with_nameservers(nameservers, config.client.clone(), config.group.clone());
        PushConsumer::start_with(pull, config, handler).await
    }

    async fn start_with<F, Fut>(
        pull: PullConsumer,
        config: ConsumerConfig,
        handler: F,
    ) -> Result<PushConsumer, ClientError>
    where
        F: Fn(StoredMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        let validated = validate_group(&config.group)
            .and_then(|()| validate_topic(&config.topic))
            .and_then(|()| validate_client_id(&config.client_id))
            .map_err(ClientError::from)
            .and_then(|()| check_settings(&config));
        let filter = match validated.and_then(|()| TagFilter::parse(&config.subscription).map_err(ClientError::from)) {
            Ok(filter) => filter,
            Err(error) => {
                pull.shutdown().await;
                return Err(error);
            }
        };
        let mut pull = pull;
        pull.routes.set_refresh(config.route_refresh);
        let idc = crate::idc::detect(pull.routes.source(), &config.idc, "consumer")
            .await
            .idc;
        // Every handler call is timed here, so all paths (in place, retried, orderly) count; the
        // future was boxed already, timing adds an `Instant` and one atomic add per call.
        let consume_latency = Arc::new(LatencyHistogram::default());
        let timed = consume_latency.clone();
        let handler: BoxedHandler = Arc::new(move |message| {
            let timed = timed.clone();
            let handled = handler(message);
            Box::pin(async move {
                let started = Instant::now();
                let result = handled.await;
                timed.record(started.elapsed());
                result
            })
        });
        let inner = Arc::new(PushInner {
            consume_latency,
            pull,
            handler,
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            workers: Mutex::new(BTreeMap::new()),
            filter,
            rebalance_lock: tokio::sync::Mutex::new(()),
            trace: config
                .trace
                .then(|| crate::trace::ConsumeTracer::new(&config.group, &config.client_id, &idc)),
            idc,
            findings: Mutex::new(Findings::default()),
            config,
        });
        let started = async {
            inner.heartbeat().await?;
            inner.rebalance().await
        };
        if let Err(error) = started.await {
            inner.shutdown().await;
            return Err(error);
        }
        inner.tracker.spawn(heartbeat_loop(inner.clone()));
        inner.tracker.spawn(rebalance_loop(inner.clone()));
        inner.tracker.spawn(commit_loop(inner.clone()));
        inner.tracker.spawn(trace_report_loop(inner.clone()));
        info!(
            group = %inner.config.group,
            topic = %inner.config.topic,
            client_id = %inner.config.client_id,
            queues = inner.lock_workers().len(),
            "push consumer started"
        );
        Ok(PushConsumer { inner })
    }

    /// The queues of the topic this member consumes now, sorted (its share of the group's retry
    /// topic is not listed).
    pub fn assigned_queues(&self) -> Vec<QueueId> {
        self.inner
            .lock_workers()
            .keys()
            .filter(|(topic, _)| *topic == self.inner.config.topic)
            .map(|(_, queue)| queue.clone())
            .collect()
    }

    /// This member's data center (empty: none).
    pub fn idc(&self) -> &str {
        &self.inner.idc
    }

    /// Members of the group that allocate queues differently from this one (another algorithm,
    /// version or deployment model), as `client_id allocation deployment`: while any is listed,
    /// queues may go unconsumed or be consumed twice. Empty when the group agrees.
    pub fn disagreeing_members(&self) -> Vec<String> {
        self.inner.lock_findings().disagreeing.clone()
    }

    /// Consume-side trace events dropped so far because the report buffer was full (the handler
    /// outran the reports to the brokers); 0 with `trace` off.
    pub fn trace_events_dropped(&self) -> u64 {
        self.inner
            .trace
            .as_ref()
            .map_or(0, crate::trace::ConsumeTracer::dropped)
    }

    /// The settings this consumer was started with.
    pub fn config(&self) -> &ConsumerConfig {
        &self.inner.config
    }

    /// Stops the pull loops (each after the message in hand), commits what was processed, leaves
    /// the group so the others take over its queues at once, and closes the connections.
    pub async fn shutdown(self) {
        self.inner.shutdown().await;
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        // Without shutdown nothing is committed on the way out; at least stop the tasks.
        self.inner.cancel.cancel();
    }
}

fn check_settings(config: &ConsumerConfig) -> Result<(), ClientError> {
    let intervals = [
        ("heartbeat_interval", config.heartbeat_interval),
        ("rebalance_interval", config.rebalance_interval),
        ("commit_interval", config.commit_interval),
    ];
    for (name, interval) in intervals {
        if interval.is_zero() {
            return Err(ClientError::InvalidArgument(format!(
                "{name} is zero; give it a positive duration"
            )));
        }
    }
    if config.pull_batch == 0 {
        return Err(ClientError::InvalidArgument(
            "pull_batch is zero; pull at least 1 message at a time".to_owned(),
        ));
    }
    if config.client_id.is_empty() {
        return Err(ClientError::InvalidArgument(
            "client_id is empty; leave the default or give each member a unique id".to_owned(),
        ));
    }
    Ok(())
}

impl PushInner {
    fn lock_workers(&self) -> MutexGuard<'_, BTreeMap<QueueKey, QueueWorker>> {
        self.workers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn topic(&self) -> &str {
        &self.config.topic
    }

    async fn route(&self) -> Result<Arc<TopicRoute>, ClientError> {
        self.pull.routes.get(self.topic()).await
    }

    async fn queue_addr(&self, queue: &QueueId) -> Result<String, ClientError> {
        let route = self.route().await?;
        broker_addr(&route, &queue.broker_name)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::NoRoute {
                topic: self.topic().to_owned(),
            })
    }

    fn note_error(&self, error: &ClientError) {
        if error.suggests_stale_route() {
            self.pull.routes.invalidate(self.topic());
        }
    }

    /// Tells every broker of the topic that this member is alive. Succeeds if one accepted.
    async fn heartbeat(&self) -> Result<(), ClientError> {
        let route = self.route().await.inspect_err(|error| self.note_error(error))?;
        let request = ConsumerHeartbeat {
            group: self.config.group.clone(),
            client_id: self.config.client_id.clone(),
            topics: vec![self.config.topic.clone()],
            sdk_version: SDK_VERSION.to_owned(),
            idc: self.idc.clone(),
            allocation: ALLOCATION.to_owned(),
            deployment: self.config.deployment.as_str().to_owned(),
            broadcasting: self.config.broadcasting,
            subscription: self.config.subscription.clone(),
            sdk_language: meridian_proto::sdk::SDK_LANGUAGE.to_owned(),
            stats: Some(ClientStats {
                consume_latency_us: self.consume_latency.snapshot(),
                ..ClientStats::default()
            }),
        };
        let timeout = self.config.client.request_timeout;
        let sends = broker_addrs(&route).into_iter().map(|addr| {
            let request = &request;
            async move {
                let result = self
                    .pull
                    .pool
                    .call_empty(&addr, RequestCode::ConsumerHeartbeat, request, timeout)
                    .await;
                (addr, result)
            }
        });
        let mut failures = Vec::new();
        let mut accepted = false;
        for (addr, result) in futures_util::future::join_all(sends).await {
            match result {
                Ok(()) => accepted = true,
                Err(error) => {
                    let error = ClientError::from(error);
                    self.note_error(&error);
                    failures.push((addr, error));
                }
            }
        }
        if !accepted && let Some((_, error)) = failures.pop() {
            // Every broker refused: the caller reports it (once), not each refusal here.
            return Err(error);
        }
        for (addr, error) in failures {
            warn!(addr, %error, group = %self.config.group, "heartbeat failed");
        }
        Ok(())
    }

    fn lock_findings(&self) -> MutexGuard<'_, Findings> {
        self.findings.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live members of the group, from the first broker of the topic that answers.
    async fn members(&self, route: &TopicRoute) -> Result<ConsumerListResponse, ClientError> {
        let request = GroupMember {
            group: self.config.group.clone(),
            client_id: String::new(),
        };
        let mut last_error = ClientError::NoRoute {
            topic: self.topic().to_owned(),
        };
        for addr in broker_addrs(route) {
            let result: Result<ConsumerListResponse, _> = self
                .pull
                .pool
                .call(
                    &addr,
                    RequestCode::ConsumerList,
                    &request,
                    self.config.client.request_timeout,
                )
                .await;
            match result {
                Ok(response) => return Ok(response),
                Err(error) => {
                    warn!(addr, %error, group = %self.config.group, "listing group members failed");
                    last_error = error.into();
                }
            }
        }
        Err(last_error)
    }

    /// Shares the queues out again and starts or stops pull loops to match.
    async fn rebalance(self: &Arc<Self>) -> Result<(), ClientError> {
        let _one_at_a_time = self.rebalance_lock.lock().await;
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        let route = self.route().await.inspect_err(|error| self.note_error(error))?;
        let idcs = broker_idcs(&route);
        let queues: Vec<(QueueId, String)> = route_queues(&route, perm::READ)
            .into_iter()
            .map(|(queue, _)| {
                let idc = idcs
                    .get(queue.broker_name.as_str())
                    .copied()
                    .unwrap_or_default()
                    .to_owned();
                (queue, idc)
            })
            .collect();
        let me = self.config.client_id.as_str();
        let mut listed = self.members(&route).await?;
        if !listed.client_ids.iter().any(|member| member == me) {
            // The brokers forgot this member (restart, expiry after a pause): announce it again
            // rather than give up every queue.
            debug!(client_id = me, "member missing from the group list, heartbeating again");
            self.heartbeat().await?;
            listed = self.members(&route).await?;
        }
        // The broker hears of a drill within a heartbeat; the cached route may be older.
        let mut evacuated = route.evacuated_idcs.clone();
        evacuated.extend(listed.evacuated_idcs.iter().cloned());
        evacuated.sort();
        evacuated.dedup();
        if evacuated != route.evacuated_idcs {
            self.pull.routes.invalidate(self.topic());
        }
        let members: Vec<(String, String)> = if listed.members.is_empty() {
            // A broker that does not report members' data centers.
            listed.client_ids.iter().map(|id| (id.clone(), String::new())).collect()
        } else {
            listed
                .members
                .iter()
                .map(|member| (member.client_id.clone(), member.idc.clone()))
                .collect()
        };
        let mut wanted: Vec<QueueKey> = Vec::new();
        if self.config.broadcasting {
            wanted.extend(
                queues
                    .iter()
                    .map(|(queue, _)| (self.config.topic.clone(), queue.clone())),
            );
        } else {
            let allocation = allocate_by_idc(&queues, &members, me, self.config.deployment, &evacuated);
            self.note_findings(&listed.members, allocation.unserved_idcs);
            wanted.extend(
                allocation
                    .queues
                    .into_iter()
                    .map(|queue| (self.config.topic.clone(), queue)),
            );
        }
        if self.uses_retry_topic() {
            // The group's retry topic: one queue on each broker of the topic, shared the same way.
            let mut retry_queues: Vec<(QueueId, String)> = Vec::new();
            for (queue, idc) in &queues {
                if !retry_queues
                    .iter()
                    .any(|(known, _)| known.broker_name == queue.broker_name)
                {
                    retry_queues.push((QueueId::new(queue.broker_name.clone(), 0), idc.clone()));
                }
            }
            let retry_topic = topics::retry_topic(&self.config.group);
            let allocation = allocate_by_idc(&retry_queues, &members, me, self.config.deployment, &evacuated);
            wanted.extend(allocation.queues.into_iter().map(|queue| (retry_topic.clone(), queue)));
        }

        let taken_away: Vec<(QueueKey, QueueWorker)> = {
            let mut workers = self.lock_workers();
            // A loop that ended by itself (an orderly queue whose lock was lost) starts again.
            let gone: Vec<QueueKey> = workers
                .iter()
                .filter(|(queue, worker)| !wanted.contains(queue) || worker.handle.is_finished())
                .map(|(queue, _)| queue.clone())
                .collect();
            gone.into_iter()
                .filter_map(|queue| workers.remove(&queue).map(|worker| (queue, worker)))
                .collect()
        };
        // Stop them all first so they wind down together, then commit each.
        for (_, worker) in &taken_away {
            worker.stop.cancel();
        }
        for ((topic, queue), worker) in taken_away {
            if let Err(join_error) = worker.handle.await {
                error!(%queue, %join_error, "pull loop ended abnormally");
            }
            let key = (topic, queue);
            if let Err(error) = self.commit_queue(&key, &worker.progress).await {
                warn!(queue = %key.1, %error, "commit of a queue taken away failed; its next owner may see messages again");
            }
            if self.config.mode == ConsumeMode::Orderly {
                self.lock_queue(&key, false).await;
            }
            info!(topic = %key.0, queue = %key.1, group = %self.config.group, "queue taken away");
        }

        let mut workers = self.lock_workers();
        for key in wanted {
            if !workers.contains_key(&key) && !self.cancel.is_cancelled() {
                info!(topic = %key.0, queue = %key.1, group = %self.config.group, "queue assigned");
                let worker = self.spawn_worker(key.clone());
                workers.insert(key, worker);
            }
        }
        Ok(())
    }

    /// Whether failed messages go through the group's retry topic (concurrent clustering).
    fn uses_retry_topic(&self) -> bool {
        self.config.mode == ConsumeMode::Concurrently && !self.config.broadcasting
    }

    /// The member whose own offsets are used: this one when broadcasting, else the group's.
    fn offsets_member(&self) -> &str {
        if self.config.broadcasting {
            &self.config.client_id
        } else {
            ""
        }
    }

    /// Takes (or renews) the broker-side lock of an orderly queue, or releases it; returns whether
    /// this member holds it.
    async fn lock_queue(&self, key: &QueueKey, lock: bool) -> bool {
        let (topic, queue) = key;
        let result = match self.queue_addr(queue).await {
            Ok(addr) => {
                self.pull
                    .lock_at(&addr, &self.config.client_id, topic, &[queue.queue_id], lock)
                    .await
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(locked) => locked.contains(&queue.queue_id),
            Err(error) => {
                debug!(%queue, %error, lock, "queue lock request failed");
                self.note_error(&error);
                false
            }
        }
    }

    /// Warns once about members that allocate differently and about data centers nobody
    /// consumes, each time the set changes.
    fn note_findings(&self, members: &[ConsumerMember], unserved_idcs: Vec<String>) {
        let deployment = self.config.deployment.as_str();
        let disagreeing: Vec<String> = members
            .iter()
            .filter(|member| member.allocation != ALLOCATION || member.deployment != deployment)
            .map(|member| format!("{} {} {}", member.client_id, member.allocation, member.deployment))
            .collect();
        let findings = Findings {
            disagreeing,
            unserved_idcs,
        };
        let mut last = self.lock_findings();
        if findings.disagreeing != last.disagreeing && !findings.disagreeing.is_empty() {
            warn!(
                group = %self.config.group,
                mine = %format!("{ALLOCATION} {deployment}"),
                others = ?findings.disagreeing,
                "members of this group allocate queues differently: queues may go unconsumed or be consumed twice; run every member on the same SDK version and deployment model"
            );
        }
        if findings.unserved_idcs != last.unserved_idcs && !findings.unserved_idcs.is_empty() {
            warn!(
                group = %self.config.group,
                idcs = ?findings.unserved_idcs,
                "dual-side group: these data centers have queues but no consumers, so their messages wait; start consumers there, or evacuate them with a drill"
            );
        }
        *last = findings;
    }

    fn spawn_worker(self: &Arc<Self>, queue: QueueKey) -> QueueWorker {
        let stop = self.cancel.child_token();
        let progress = Arc::new(QueueProgress::default());
        let handle = self
            .tracker
            .spawn(run_queue(self.clone(), queue, progress.clone(), stop.clone()));
        QueueWorker { stop, progress, handle }
    }

    /// Where a queue starts: the committed offset (with its generation) or, without one, where
    /// `consume_from` says (the retry topic always from its earliest).
    async fn start_offset(&self, key: &QueueKey) -> Result<Offsets, ClientError> {
        let (topic, queue) = key;
        let addr = self.queue_addr(queue).await?;
        let stored = self
            .pull
            .query_offset_at(&addr, topic, queue.queue_id, self.offsets_member())
            .await?;
        if let Some(offset) = stored.offset {
            return Ok(Offsets {
                processed: Some(offset),
                committed: Some(offset),
                generation: stored.generation,
            });
        }
        let (min, max) = self.pull.queue_info_at(&addr, topic, queue.queue_id).await?;
        let start = match self.config.consume_from {
            _ if *topic != self.config.topic => min,
            ConsumeFrom::Earliest => min,
            ConsumeFrom::Latest => max,
        };
        Ok(Offsets {
            processed: Some(start),
            committed: None,
            generation: stored.generation,
        })
    }

    /// Commits a queue's processed offset if it moved since the last commit.
    async fn commit_queue(&self, key: &QueueKey, progress: &QueueProgress) -> Result<(), ClientError> {
        let (topic, queue) = key;
        let _in_order = progress.commit_lock.lock().await;
        let offsets = *progress.lock();
        let Some(processed) = offsets.processed else {
            return Ok(());
        };
        if offsets.committed == Some(processed) {
            return Ok(());
        }
        let addr = self.queue_addr(queue).await?;
        self.pull
            .commit_offset_at(
                &addr,
                topic,
                queue.queue_id,
                processed,
                Some(offsets.generation),
                self.offsets_member(),
            )
            .await
            .inspect_err(|error| self.note_error(error))?;
        progress.lock().committed = Some(processed);
        debug!(%queue, offset = processed, "committed offset");
        Ok(())
    }

    async fn commit_all(&self) {
        let snapshot: Vec<(QueueKey, Arc<QueueProgress>)> = self
            .lock_workers()
            .iter()
            .map(|(queue, worker)| (queue.clone(), worker.progress.clone()))
            .collect();
        for (queue, progress) in snapshot {
            if let Err(error) = self.commit_queue(&queue, &progress).await {
                warn!(queue = %queue.1, %error, "offset commit failed, will retry");
            }
        }
    }

    async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        // Pull loops finish the message in hand; a rebalance in progress finishes its commits.
        self.tracker.wait().await;
        let workers = std::mem::take(&mut *self.lock_workers());
        for (queue, worker) in workers {
            if let Err(error) = self.commit_queue(&queue, &worker.progress).await {
                warn!(queue = %queue.1, %error, "final offset commit failed; the next owner may see messages again");
            }
        }
        self.leave().await;
        self.report_traces().await;
        self.pull.shutdown().await;
        info!(group = %self.config.group, client_id = %self.config.client_id, "push consumer stopped");
    }

    /// Tells every broker this member left, so the others rebalance without waiting for expiry.
    async fn leave(&self) {
        let Ok(route) = self.route().await else {
            return;
        };
        let request = GroupMember {
            group: self.config.group.clone(),
            client_id: self.config.client_id.clone(),
        };
        let timeout = self.config.client.request_timeout;
        for addr in broker_addrs(&route) {
            if let Err(error) = self
                .pull
                .pool
                .call_empty(&addr, RequestCode::ConsumerLeave, &request, timeout)
                .await
            {
                warn!(addr, %error, "leaving the group failed; the broker will expire this member");
            }
        }
    }
}

async fn heartbeat_loop(inner: Arc<PushInner>) {
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tokio::time::sleep(inner.config.heartbeat_interval) => {}
        }
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            // Errors are logged inside; the next beat tries again.
            result = inner.heartbeat() => {
                if let Err(error) = result {
                    warn!(%error, group = %inner.config.group, "heartbeat failed");
                }
            }
        }
    }
}

async fn rebalance_loop(inner: Arc<PushInner>) {
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tokio::time::sleep(inner.config.rebalance_interval) => {}
        }
        // Not cancellable midway: a rebalance that took queues away must commit them.
        if let Err(error) = inner.rebalance().await {
            warn!(%error, group = %inner.config.group, "rebalance failed, keeping the current queues");
        }
    }
}

/// Sends the consume-side trace events every 200 ms (and once more on shutdown).
async fn trace_report_loop(inner: Arc<PushInner>) {
    let Some(trace) = &inner.trace else {
        return;
    };
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = trace.full_report.notified() => {}
        }
        inner.report_traces().await;
    }
}

impl PushInner {
    /// Sends each broker group the trace events of the messages it delivered, every report of
    /// the round at once (one after another, a slow broker would let the buffer fill behind
    /// them). Not retried: a lost report loses trace events, never messages.
    async fn report_traces(&self) {
        let Some(trace) = &self.trace else {
            return;
        };
        let reports = trace.take();
        futures_util::future::join_all(
            reports
                .into_iter()
                .map(|(broker_name, events)| self.report_trace(broker_name, events)),
        )
        .await;
    }

    /// Sends one report to `broker_name`; a failure is logged and its events are lost.
    async fn report_trace(&self, broker_name: String, events: Vec<meridian_proto::trace::TraceEvent>) {
        let count = events.len();
        let queue = QueueId::new(broker_name, 0);
        let sent = match self.queue_addr(&queue).await {
            Ok(addr) => self
                .pull
                .pool
                .call_empty(
                    &addr,
                    meridian_proto::RequestCode::TraceReport,
                    &meridian_proto::trace::TraceBatch::from(events),
                    self.config.client.request_timeout,
                )
                .await
                .map_err(ClientError::from),
            Err(error) => Err(error),
        };
        if let Err(error) = sent {
            debug!(broker = %queue.broker_name, count, %error, "consume trace report failed; its events are lost");
        }
    }
}

async fn commit_loop(inner: Arc<PushInner>) {
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tokio::time::sleep(inner.config.commit_interval) => {}
        }
        inner.commit_all().await;
    }
}

/// Sleeps for `duration` unless `stop` fires first; returns whether it slept the whole time.
async fn sleep_unless_stopped(stop: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

/// The pull loop of one queue.
async fn run_queue(inner: Arc<PushInner>, key: QueueKey, progress: Arc<QueueProgress>, stop: CancellationToken) {
    let queue = &key.1;
    let orderly = inner.config.mode == ConsumeMode::Orderly;
    // An orderly queue is consumed only under its broker-side lock.
    let mut locked_at = loop {
        if !orderly || inner.lock_queue(&key, true).await {
            break tokio::time::Instant::now();
        }
        debug!(%queue, "queue locked by another member, waiting");
        if !sleep_unless_stopped(&stop, PULL_ERROR_BACKOFF).await {
            return;
        }
    };
    let mut offset = loop {
        let resolved = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            resolved = inner.start_offset(&key) => resolved,
        };
        match resolved {
            Ok(start) => {
                // Recording the start as processed commits it, so a start at the latest offset
                // sticks even if no message comes before a rebalance.
                *progress.lock() = start;
                debug!(%queue, offset = ?start.processed, "pull loop starting");
                break start.processed.unwrap_or_default();
            }
            Err(error) => {
                warn!(%queue, %error, "cannot find where to start the queue, retrying");
                inner.note_error(&error);
                if !sleep_unless_stopped(&stop, PULL_ERROR_BACKOFF).await {
                    return;
                }
            }
        }
    };
    while !stop.is_cancelled() {
        if orderly && locked_at.elapsed() >= LOCK_RENEW_INTERVAL {
            if !inner.lock_queue(&key, true).await {
                warn!(%queue, "lost the queue lock (another member holds it now); stopping this queue");
                return;
            }
            locked_at = tokio::time::Instant::now();
        }
        let generation = progress.lock().generation;
        // Biased: once stopped, a pull that completes at the same moment is not handled.
        let pulled = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            pulled = pull_once(&inner, &key, offset, generation) => pulled,
        };
        let result = match pulled {
            Ok(result) => result,
            Err(error) => {
                warn!(%queue, offset, %error, "pull failed, retrying");
                inner.note_error(&error);
                if !sleep_unless_stopped(&stop, PULL_ERROR_BACKOFF).await {
                    return;
                }
                continue;
            }
        };
        match result.status {
            PullStatus::Found => {
                for message in result.messages {
                    // The broker starts at the requested offset; anything before it was handled.
                    if message.queue_offset < offset {
                        continue;
                    }
                    let next = message.queue_offset + 1;
                    // The broker filters by tag hash; hashes can collide, so check the tag itself.
                    if inner.filter.matches_tag(message.tag()) && !consume_one(&inner, &key, message, &stop).await {
                        return;
                    }
                    offset = next;
                    progress.set_processed(offset);
                    if stop.is_cancelled() {
                        return;
                    }
                }
                // Past the batch, the broker's next offset is authoritative (it may skip
                // entries this group never sees).
                if result.next_offset > offset {
                    offset = result.next_offset;
                    progress.set_processed(offset);
                }
            }
            // The next offset of an empty answer is the offset asked for; keep ours.
            PullStatus::NoNewMessage => {}
            PullStatus::OffsetMoved => {
                warn!(%queue, offset, next_offset = result.next_offset, "offset out of range, moving");
                offset = result.next_offset;
                progress.set_processed(offset);
            }
            PullStatus::OffsetReset => {
                info!(%queue, from = offset, to = result.next_offset, "the group's offsets were reset; continuing from the new position");
                offset = result.next_offset;
                let mut offsets = progress.lock();
                offsets.processed = Some(offset);
                offsets.committed = Some(offset);
                offsets.generation = result.offset_generation;
            }
        }
    }
}

async fn pull_once(
    inner: &PushInner,
    key: &QueueKey,
    offset: u64,
    generation: u64,
) -> Result<crate::consumer::PullResult, ClientError> {
    let (topic, queue) = key;
    let addr = inner.queue_addr(queue).await?;
    let options = PullOptions {
        subscription: &inner.config.subscription,
        offset_generation: Some(generation),
    };
    inner
        .pull
        .pull_at(
            &addr,
            topic,
            queue.queue_id,
            offset,
            inner.config.pull_batch,
            inner.config.long_poll,
            &options,
        )
        .await
}

/// Hands one message to the handler. Concurrently, a failure goes back to the broker's retry
/// topic (in place only when the broker cannot be told); orderly and broadcasting, it is retried
/// in place. Returns false if `stop` fired while the message was still unhandled.
async fn consume_one(inner: &PushInner, key: &QueueKey, message: StoredMessage, stop: &CancellationToken) -> bool {
    let (topic, queue) = key;
    let trace = inner.trace.as_ref();
    let mut message = message;
    if topics::owning_group(topic).is_some()
        && let Some(first) = message.property(RETRY_TOPIC)
    {
        // Handlers see a retried message under the topic it was sent to.
        message.topic = first.to_owned();
    }
    if !inner.uses_retry_topic() {
        return consume_with_retries(&inner.handler, message, stop, queue, trace).await;
    }
    // The first attempt of this delivery; the trace adds the message's own reconsume count.
    let started = trace.map(|trace| trace.before(&queue.broker_name, &message, 1));
    let outcome = AssertUnwindSafe(async { (inner.handler)(message.clone()).await })
        .catch_unwind()
        .await;
    if let (Some(trace), Some(started)) = (trace, started) {
        trace.after(&queue.broker_name, &message, started, trace_status(&outcome), 1);
    }
    if matches!(outcome, Ok(ConsumeResult::Success)) {
        return true;
    }
    let sent_back = match inner.queue_addr(queue).await {
        Ok(addr) => {
            inner
                .pull
                .send_back_at(&addr, topic, &message, inner.config.retry_delay_level)
                .await
        }
        Err(error) => Err(error),
    };
    match sent_back {
        Ok(response) => {
            debug!(%queue, msg_id = message.msg_id(), to = response.topic, dead_lettered = response.dead_lettered, "failed message sent back");
            true
        }
        Err(error) => {
            warn!(%queue, msg_id = message.msg_id(), %error, "cannot send the failed message back; retrying it here");
            sleep_unless_stopped(stop, CONSUME_RETRY_FIRST_BACKOFF).await
                && consume_with_retries(&inner.handler, message, stop, queue, trace).await
        }
    }
}

fn trace_status(outcome: &std::thread::Result<ConsumeResult>) -> meridian_proto::trace::TraceStatus {
    match outcome {
        Ok(ConsumeResult::Success) => meridian_proto::trace::TraceStatus::Ok,
        Ok(ConsumeResult::Retry) => meridian_proto::trace::TraceStatus::RetryLater,
        Err(_) => meridian_proto::trace::TraceStatus::Failed,
    }
}

/// Hands `message` to the handler until it succeeds, waiting between attempts. Returns false if
/// `stop` fired while waiting to retry (the message was not handled). A handler that panics is
/// treated like one that asked for a retry, so one bad message cannot kill the queue's loop.
async fn consume_with_retries(
    handler: &BoxedHandler,
    message: StoredMessage,
    stop: &CancellationToken,
    queue: &QueueId,
    trace: Option<&crate::trace::ConsumeTracer>,
) -> bool {
    let mut backoff = CONSUME_RETRY_FIRST_BACKOFF;
    let mut attempts = 0u32;
    loop {
        let started = trace.map(|trace| trace.before(&queue.broker_name, &message, attempts + 1));
        let outcome = AssertUnwindSafe(async { handler(message.clone()).await })
            .catch_unwind()
            .await;
        attempts += 1;
        if let (Some(trace), Some(started)) = (trace, started) {
            trace.after(&queue.broker_name, &message, started, trace_status(&outcome), attempts);
        }
        match outcome {
            Ok(ConsumeResult::Success) => return true,
            Ok(ConsumeResult::Retry) => {
                debug!(%queue, offset = message.queue_offset, attempts, ?backoff, "handler asked to retry the message");
            }
            Err(_) => {
                error!(%queue, offset = message.queue_offset, attempts, ?backoff, "message handler panicked, retrying the message");
            }
        }
        if !sleep_unless_stopped(stop, backoff).await {
            return false;
        }
        backoff = (backoff * 2).min(CONSUME_RETRY_MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::StaticRoute;
    use crate::test_support::{BROKER_NAME, FakeBroker, FakeNameserver, eventually, refused_addr, test_message};
    use bytes::Bytes;
    use meridian_proto::messages::{BrokerRoute, perm};
    use meridian_proto::transport::ConnectionPool;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn config(client_id: &str) -> ConsumerConfig {
        ConsumerConfig {
            client_id: client_id.to_owned(),
            consume_from: ConsumeFrom::Earliest,
            heartbeat_interval: Duration::from_millis(50),
            rebalance_interval: Duration::from_millis(50),
            long_poll: Duration::from_millis(100),
            commit_interval: Duration::from_millis(20),
            ..ConsumerConfig::new("workers", "orders")
        }
    }

    fn route(broker: &FakeBroker) -> Arc<dyn RouteSource> {
        Arc::new(StaticRoute::new(
            broker.addr.clone(),
            ConnectionPool::new(ClientConfig::default()),
        ))
    }

    type Seen = Arc<Mutex<Vec<(u32, u64, Bytes)>>>;

    async fn recording_consumer(broker: &FakeBroker, config: ConsumerConfig) -> (PushConsumer, Seen) {
        let seen: Seen = Arc::default();
        let sink = seen.clone();
        let consumer = PushConsumer::start(route(broker), config, move |message: StoredMessage| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push((message.queue_id, message.queue_offset, message.body.clone()));
                ConsumeResult::Success
            }
        })
        .await
        .unwrap();
        (consumer, seen)
    }

    #[tokio::test]
    async fn consumes_every_queue_in_order_and_commits_on_shutdown() {
        let broker = FakeBroker::start(&[("orders", 3)]).await;
        for index in 0..30u32 {
            broker.append("orders", index % 3, format!("m{index}").as_bytes());
        }
        let (consumer, seen) = recording_consumer(&broker, config("solo")).await;
        assert_eq!(consumer.assigned_queues().len(), 3);
        eventually(|| seen.lock().unwrap().len() == 30).await;
        broker.append("orders", 1, b"later");
        eventually(|| seen.lock().unwrap().len() == 31).await;
        eventually(|| broker.committed("workers", "orders", 1) == Some(11)).await;
        consumer.shutdown().await;

        let seen = seen.lock().unwrap().clone();
        for queue_id in 0..3 {
            let offsets: Vec<u64> = seen
                .iter()
                .filter(|(queue, _, _)| *queue == queue_id)
                .map(|(_, offset, _)| *offset)
                .collect();
            let expected: Vec<u64> = (0..offsets.len() as u64).collect();
            assert_eq!(offsets, expected, "queue {queue_id} out of order");
            assert_eq!(
                broker.committed("workers", "orders", queue_id),
                Some(offsets.len() as u64)
            );
        }
        assert_eq!(broker.left(), ["solo"]);
        assert!(broker.members("workers").is_empty());
    }

    #[tokio::test]
    async fn consumers_built_on_nameservers_read_only_groups_with_a_live_master() {
        let broker = FakeBroker::start(&[("orders", 3)]).await;
        let nameserver = FakeNameserver::start().await;
        let group = |name: &str, addr: &str, queues| BrokerRoute {
            broker_name: name.into(),
            addr: addr.into(),
            idc: String::new(),
            queues,
            perm: perm::READ | perm::WRITE,
            replicas: Vec::new(),
        };
        nameserver.set_route(TopicRoute {
            topic: "orders".into(),
            brokers: vec![group(BROKER_NAME, &broker.addr, 3), group("broker-b", "", 2)],
            evacuated_idcs: Vec::new(),
            lost_idcs: Vec::new(),
        });
        for index in 0..6u32 {
            broker.append("orders", index % 3, format!("m{index}").as_bytes());
        }
        let seen = Arc::new(AtomicU32::new(0));
        let counter = seen.clone();
        let consumer = PushConsumer::start_with_nameservers(
            vec![refused_addr(), nameserver.addr.clone()],
            config("solo"),
            move |_message: StoredMessage| {
                counter.fetch_add(1, Ordering::SeqCst);
                async { ConsumeResult::Success }
            },
        )
        .await
        .unwrap();
        let queues = consumer.assigned_queues();
        assert_eq!(queues.len(), 3);
        assert!(
            queues.iter().all(|queue| queue.broker_name == BROKER_NAME),
            "{queues:?}"
        );
        eventually(|| seen.load(Ordering::SeqCst) == 6).await;
        assert_eq!(broker.members("workers"), ["solo"]);
        consumer.shutdown().await;
    }

    #[tokio::test]
    async fn latest_skips_old_messages_and_resumes_from_the_committed_offset() {
        let broker = FakeBroker::start(&[("orders", 1)]).await;
        broker.append("orders", 0, b"old");
        let latest = ConsumerConfig {
            consume_from: ConsumeFrom::Latest,
            ..config("first")
        };
        let (consumer, seen) = recording_consumer(&broker, latest).await;
        // The start offset is committed even before anything is consumed.
        eventually(|| broker.committed("workers", "orders", 0) == Some(1)).await;
        broker.append("orders", 0, b"new");
        eventually(|| seen.lock().unwrap().len() == 1).await;
        assert_eq!(seen.lock().unwrap()[0].2, Bytes::from_static(b"new"));
        consumer.shutdown().await;

        broker.append("orders", 0, b"while away");
        let (consumer, seen) = recording_consumer(&broker, config("second")).await;
        eventually(|| seen.lock().unwrap().len() == 1).await;
        assert_eq!(seen.lock().unwrap()[0].1, 2);
        consumer.shutdown().await;
    }

    #[tokio::test]
    async fn members_share_the_queues_and_take_over_when_one_leaves() {
        let broker = FakeBroker::start(&[("orders", 4)]).await;
        let (first, first_seen) = recording_consumer(&broker, config("member-a")).await;
        assert_eq!(first.assigned_queues().len(), 4);
        let (second, second_seen) = recording_consumer(&broker, config("member-b")).await;
        let expect = |ids: &[u32]| -> Vec<QueueId> { ids.iter().map(|id| QueueId::new("broker-a", *id)).collect() };
        assert_eq!(second.assigned_queues(), expect(&[2, 3]));
        eventually(|| first.assigned_queues() == expect(&[0, 1])).await;

        for index in 0..40u32 {
            broker.append("orders", index % 4, format!("m{index}").as_bytes());
        }
        eventually(|| first_seen.lock().unwrap().len() + second_seen.lock().unwrap().len() == 40).await;
        assert!(first_seen.lock().unwrap().iter().all(|(queue, _, _)| *queue < 2));
        assert!(second_seen.lock().unwrap().iter().all(|(queue, _, _)| *queue >= 2));

        second.shutdown().await;
        eventually(|| first.assigned_queues().len() == 4).await;
        broker.append("orders", 3, b"after takeover");
        eventually(|| {
            first_seen
                .lock()
                .unwrap()
                .iter()
                .any(|(queue, offset, _)| (*queue, *offset) == (3, 10))
        })
        .await;
        // Nothing consumed twice: the second member committed before leaving.
        assert_eq!(first_seen.lock().unwrap().len() + second_seen.lock().unwrap().len(), 41);
        first.shutdown().await;
    }

    #[tokio::test]
    async fn start_fails_for_a_missing_topic_and_bad_settings() {
        let broker = FakeBroker::start(&[("orders", 1)]).await;
        let handler = |_message: StoredMessage| async { ConsumeResult::Success };
        let missing = ConsumerConfig::new("workers", "missing");
        let error = PushConsumer::start(route(&broker), missing, handler)
            .await
            .err()
            .unwrap();
        assert!(error.to_string().contains("missing"), "{error}");
        let bad_group = ConsumerConfig::new("bad group", "orders");
        assert!(matches!(
            PushConsumer::start(route(&broker), bad_group, handler).await,
            Err(ClientError::Validation(_))
        ));
        let zero = ConsumerConfig {
            pull_batch: 0,
            ..ConsumerConfig::new("workers", "orders")
        };
        assert!(matches!(
            PushConsumer::start(route(&broker), zero, handler).await,
            Err(ClientError::InvalidArgument(_))
        ));
    }

    #[test]
    fn default_client_ids_are_unique_and_readable() {
        let first = ConsumerConfig::default().client_id;
        let second = ConsumerConfig::default().client_id;
        assert_ne!(first, second);
        assert!(first.contains(&format!("@{}@", std::process::id())), "{first}");
    }

    fn counting_handler(retries_before_success: u32, attempts: Arc<AtomicU32>) -> BoxedHandler {
        Arc::new(move |_message| {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if attempt == 1 {
                    panic!("a handler bug");
                }
                if attempt < retries_before_success {
                    ConsumeResult::Retry
                } else {
                    ConsumeResult::Success
                }
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_doubling_and_survive_panics() {
        let attempts = Arc::new(AtomicU32::new(0));
        let handler = counting_handler(4, attempts.clone());
        let queue = QueueId::new("broker-a", 0);
        let started = tokio::time::Instant::now();
        let trace = crate::trace::ConsumeTracer::new("workers", "c1", "dc1");
        let handled = consume_with_retries(
            &handler,
            test_message(0),
            &CancellationToken::new(),
            &queue,
            Some(&trace),
        )
        .await;
        assert!(handled);
        assert_eq!(attempts.load(Ordering::SeqCst), 5);
        // Waits of 1, 2, 4 and 8 seconds between the five attempts.
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        // Each attempt is traced: SubBefore, then SubAfter with its result.
        let reports = trace.take();
        let results: Vec<_> = reports[0]
            .1
            .iter()
            .filter(|event| event.kind() == meridian_proto::trace::TraceType::SubAfter)
            .map(|event| event.outcome())
            .collect();
        use meridian_proto::trace::TraceStatus;
        let retry = TraceStatus::RetryLater;
        assert_eq!(results.len(), 5, "{results:?}");
        assert_eq!(*results.last().unwrap(), TraceStatus::Ok);
        assert!(
            results[..4]
                .iter()
                .all(|status| *status == retry || *status == TraceStatus::Failed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_back_off_is_capped() {
        let attempts = Arc::new(AtomicU32::new(0));
        let handler = counting_handler(8, attempts.clone());
        let queue = QueueId::new("broker-a", 0);
        let started = tokio::time::Instant::now();
        assert!(consume_with_retries(&handler, test_message(0), &CancellationToken::new(), &queue, None).await);
        // Nine attempts: 1 + 2 + 4 + 8 + 16 + 30 + 30 + 30 seconds between them.
        assert_eq!(attempts.load(Ordering::SeqCst), 9);
        assert_eq!(started.elapsed(), Duration::from_secs(121));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_during_a_retry_leaves_the_message_unhandled() {
        let attempts = Arc::new(AtomicU32::new(0));
        let handler = counting_handler(u32::MAX, attempts.clone());
        let stop = CancellationToken::new();
        let queue = QueueId::new("broker-a", 0);
        let stopper = stop.clone();
        let (handled, ()) = tokio::join!(
            consume_with_retries(&handler, test_message(0), &stop, &queue, None),
            async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                stopper.cancel();
            }
        );
        assert!(!handled);
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_retried_message_holds_back_its_queue_and_is_committed_only_after_success() {
        let broker = FakeBroker::start(&[("orders", 1)]).await;
        broker.append("orders", 0, b"first");
        broker.append("orders", 0, b"second");
        let attempts = Arc::new(AtomicU32::new(0));
        let seen: Seen = Arc::default();
        let (counter, sink) = (attempts.clone(), seen.clone());
        let consumer = PushConsumer::start(route(&broker), config("retrier"), move |message: StoredMessage| {
            let first_attempt = counter.fetch_add(1, Ordering::SeqCst) == 0;
            let sink = sink.clone();
            async move {
                if first_attempt {
                    return ConsumeResult::Retry;
                }
                sink.lock()
                    .unwrap()
                    .push((message.queue_id, message.queue_offset, message.body.clone()));
                ConsumeResult::Success
            }
        })
        .await
        .unwrap();
        // During the one-second back-off the offset stays before the first message.
        eventually(|| broker.committed("workers", "orders", 0) == Some(0)).await;
        assert!(seen.lock().unwrap().is_empty());
        eventually(|| seen.lock().unwrap().len() == 2).await;
        let offsets: Vec<u64> = seen.lock().unwrap().iter().map(|(_, offset, _)| *offset).collect();
        assert_eq!(offsets, [0, 1]);
        consumer.shutdown().await;
        assert_eq!(broker.committed("workers", "orders", 0), Some(2));
    }
}

//! Transactional messages: a producer whose sends are tied to a local transaction.
//!
//! [`TransactionProducer::send`] stores the message as a *half message* (invisible to consumers),
//! runs [`TransactionListener::execute`] (the local transaction), and ends the transaction with
//! the outcome: commit delivers the message, rollback discards it. When the outcome is
//! [`TransactionOutcome::Unknown`], or the producer dies before answering, the broker asks the
//! producer group later: it has no way to call a producer, so every transaction producer polls
//! the brokers it sends to (`CheckTransactions`, every [`TransactionProducerConfig::check_poll_interval`])
//! and answers each check with [`TransactionListener::check`]. A transaction left undecided through
//! the broker's `transaction.check_max` checks is rolled back.
//!
//! Checks go to any member of the producer group, so `check` must answer from shared state (the
//! database the local transaction wrote to), not from the memory of the producer that sent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::RequestCode;
pub use meridian_proto::messages::TransactionOutcome;
use meridian_proto::messages::{
    CheckTransactionsRequest, CheckTransactionsResponse, EndTransactionRequest, TransactionCheck, perm,
};
use meridian_proto::properties::{KEY_SEPARATOR, KEYS, PropertiesIter, TAGS};
use meridian_proto::transport::ConnectionPool;
use meridian_proto::validate::{RESERVED_PROPERTY_NAMES, validate_group};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::error::ClientError;
use crate::message::{Message, SendResult};
use crate::producer::{Producer, ProducerConfig};
use crate::route::{NameserverRoute, RouteCache, RouteSource, route_queues};

/// The user property a half message carries its producer group in, which the broker reads to
/// know whom to ask about it (`PGROUP` is reserved for the broker). Must match the broker's
/// `meridian_broker::transaction::GROUP_PROPERTY`; the broker removes it on commit.
const GROUP_PROPERTY: &str = "meridian.tx.group";
/// Checks asked for per poll of one broker.
const CHECKS_PER_POLL: u32 = 64;
/// Most answered checks remembered (beyond, the memory is cleared: at worst a check runs twice).
const MAX_REMEMBERED_CHECKS: usize = 65_536;

/// The application's side of a transaction.
pub trait TransactionListener: Send + Sync + 'static {
    /// Runs the local transaction of `message`, which is stored as a half message already, and
    /// says how it ended. [`TransactionOutcome::Unknown`] leaves it to a later [`Self::check`].
    fn execute(&self, message: &Message) -> impl Future<Output = TransactionOutcome> + Send;

    /// The broker asks how the transaction of a half message ended (its producer answered
    /// Unknown, failed to answer, or died). Answer from durable state; Unknown asks again later.
    fn check(&self, check: &TransactionCheckView) -> impl Future<Output = TransactionOutcome> + Send;
}

/// A half message the broker asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionCheckView {
    /// The message id (the one [`TransactionProducer::send`] returned).
    pub msg_id: String,
    /// The topic it is for.
    pub topic: String,
    /// Its keys.
    pub keys: Vec<String>,
    /// Its tag.
    pub tag: Option<String>,
    /// Its user properties, in order.
    pub properties: Vec<(String, String)>,
    /// Its body.
    pub body: Bytes,
    /// How many times the broker asked, this time included.
    pub check_count: u32,
    /// The broker group asking.
    pub broker_name: String,
}

impl TransactionCheckView {
    fn new(check: &TransactionCheck, broker_name: &str) -> TransactionCheckView {
        let mut view = TransactionCheckView {
            msg_id: check.msg_id.clone(),
            topic: check.topic.clone(),
            keys: Vec::new(),
            tag: None,
            properties: Vec::new(),
            body: check.body.clone(),
            check_count: check.check_count,
            broker_name: broker_name.to_owned(),
        };
        for (name, value) in PropertiesIter::new(&check.properties) {
            match name {
                KEYS => view.keys = value.split(KEY_SEPARATOR).map(str::to_owned).collect(),
                TAGS => view.tag = Some(value.to_owned()),
                _ if RESERVED_PROPERTY_NAMES.contains(&name) || name == GROUP_PROPERTY || name.starts_with('%') => {}
                _ => view.properties.push((name.to_owned(), value.to_owned())),
            }
        }
        view
    }
}

/// Settings of a [`TransactionProducer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionProducerConfig {
    /// The producer's settings; `group` is required: it is whom brokers ask about transactions.
    pub producer: ProducerConfig,
    /// How often the brokers are asked for check-backs (default 5 s).
    pub check_poll_interval: Duration,
    /// Topics whose brokers are polled from the start, before this producer sends to them: a
    /// restarted producer answers for transactions its previous run left open. Topics it sends
    /// to are added.
    pub check_topics: Vec<String>,
}

impl Default for TransactionProducerConfig {
    fn default() -> TransactionProducerConfig {
        TransactionProducerConfig {
            producer: ProducerConfig::default(),
            check_poll_interval: Duration::from_secs(5),
            check_topics: Vec::new(),
        }
    }
}

/// What [`TransactionProducer::send`] did.
#[derive(Debug)]
pub struct TransactionSendResult {
    /// Where the half message was stored (its `commitlog_offset` names it to the broker).
    pub send: SendResult,
    /// What the local transaction answered.
    pub outcome: TransactionOutcome,
    /// Why ending the transaction failed, if it did: the broker then checks back later, so the
    /// outcome still takes effect (through [`TransactionListener::check`]).
    pub end_error: Option<ClientError>,
}

/// A producer of transactional messages. Cheap to share behind an `Arc`; call
/// [`TransactionProducer::shutdown`] to stop polling for check-backs.
pub struct TransactionProducer<L: TransactionListener> {
    producer: Producer,
    shared: Arc<Shared<L>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

struct Shared<L> {
    listener: L,
    group: String,
    client_id: String,
    pool: ConnectionPool,
    routes: RouteCache,
    request_timeout: Duration,
    /// Topics whose brokers are polled.
    topics: Mutex<BTreeSet<String>>,
    /// Highest check count answered per message id, so a check repeated by the next poll (the
    /// broker offers it until the answer lands) does not run the listener twice.
    answered: Mutex<HashMap<String, u32>>,
}

impl<L: TransactionListener> TransactionProducer<L> {
    /// A transaction producer finding topics through `route`, answering with `listener`. Starts
    /// polling for check-backs at once, so it must be called within a tokio runtime.
    pub fn new(
        route: Arc<dyn RouteSource>,
        config: TransactionProducerConfig,
        listener: L,
    ) -> Result<TransactionProducer<L>, ClientError> {
        let pool = ConnectionPool::new(config.producer.client.clone());
        TransactionProducer::with_pool(route, pool, config, listener)
    }

    /// A transaction producer finding topics through the nameservers at `nameservers`.
    pub fn with_nameservers(
        nameservers: Vec<String>,
        config: TransactionProducerConfig,
        listener: L,
    ) -> Result<TransactionProducer<L>, ClientError> {
        let pool = ConnectionPool::new(config.producer.client.clone());
        let route = Arc::new(NameserverRoute::new(nameservers, pool.clone()));
        TransactionProducer::with_pool(route, pool, config, listener)
    }

    fn with_pool(
        route: Arc<dyn RouteSource>,
        pool: ConnectionPool,
        config: TransactionProducerConfig,
        listener: L,
    ) -> Result<TransactionProducer<L>, ClientError> {
        check_config(&config)?;
        let shared = Arc::new(Shared {
            listener,
            group: config.producer.group.clone(),
            client_id: format!("{}@{:016x}", std::process::id(), fastrand::u64(..)),
            pool,
            routes: RouteCache::new(route.clone()),
            request_timeout: config.producer.client.request_timeout,
            topics: Mutex::new(config.check_topics.iter().cloned().collect()),
            answered: Mutex::new(HashMap::new()),
        });
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        tasks.spawn(poll_checks(shared.clone(), config.check_poll_interval, stop.clone()));
        tasks.close();
        Ok(TransactionProducer {
            producer: Producer::new(route, config.producer),
            shared,
            tasks,
            stop,
        })
    }

    /// Sends `message` as a half message, runs the local transaction, and ends the transaction
    /// with its outcome. Fails only when the half message was not stored (then the local
    /// transaction did not run); a failure to end the transaction is in
    /// [`TransactionSendResult::end_error`], and the broker's check-back settles it.
    pub async fn send(&self, message: Message) -> Result<TransactionSendResult, ClientError> {
        let mut half = message.clone();
        half.transactional = true;
        half.properties
            .push((GROUP_PROPERTY.to_owned(), self.shared.group.clone()));
        let send = self.producer.send(half).await?;
        self.shared.watch(&send.topic);
        let outcome = self.shared.listener.execute(&message).await;
        let end_error = match outcome {
            TransactionOutcome::Unknown => None,
            outcome => self.end_transaction(&send, outcome).await.err(),
        };
        if let Some(error) = &end_error {
            warn!(msg_id = send.msg_id, ?outcome, %error, "ending a transaction failed; the broker will check back");
        }
        Ok(TransactionSendResult {
            send,
            outcome,
            end_error,
        })
    }

    /// Ends the transaction of a half message this producer group sent (possibly in an earlier
    /// run). Committing or rolling back twice with the same outcome is harmless; the other outcome
    /// after the first is refused.
    pub async fn end_transaction(&self, sent: &SendResult, outcome: TransactionOutcome) -> Result<(), ClientError> {
        let addr = self.shared.master_addr(&sent.topic, &sent.broker_name).await?;
        self.shared
            .end(&addr, &sent.msg_id, sent.commitlog_offset, outcome, false)
            .await
    }

    /// Adds a topic whose brokers are polled for check-backs.
    pub fn watch(&self, topic: &str) {
        self.shared.watch(topic);
    }

    /// Stops polling for check-backs and shuts the producer down.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
        self.producer.shutdown().await;
        self.shared.pool.shutdown().await;
    }
}

impl<L: TransactionListener> Drop for TransactionProducer<L> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn check_config(config: &TransactionProducerConfig) -> Result<(), ClientError> {
    if config.producer.group.is_empty() {
        return Err(ClientError::InvalidArgument(
            "a transaction producer needs a producer group (ProducerConfig::group): brokers ask the group about transactions they cannot settle".to_owned(),
        ));
    }
    validate_group(&config.producer.group)?;
    if config.check_poll_interval.is_zero() {
        return Err(ClientError::InvalidArgument(
            "check_poll_interval must be more than zero (default 5 s)".to_owned(),
        ));
    }
    Ok(())
}

impl<L: TransactionListener> Shared<L> {
    fn watch(&self, topic: &str) {
        let mut topics = self.topics.lock().expect("topics lock");
        if !topics.contains(topic) {
            topics.insert(topic.to_owned());
        }
    }

    /// The master address of broker group `broker_name` in `topic`'s route.
    async fn master_addr(&self, topic: &str, broker_name: &str) -> Result<String, ClientError> {
        for attempt in 0..2 {
            let route = self.routes.get(topic).await?;
            if let Some((_, addr)) = route_queues(&route, perm::WRITE)
                .into_iter()
                .find(|(queue, _)| queue.broker_name == broker_name)
            {
                return Ok(addr);
            }
            if attempt == 0 {
                self.routes.invalidate(topic);
            }
        }
        Err(ClientError::InvalidArgument(format!(
            "broker group {broker_name:?} has no writable master in the route of topic {topic:?}; end the transaction once it is back (the broker checks back meanwhile)"
        )))
    }

    async fn end(
        &self,
        addr: &str,
        msg_id: &str,
        half_offset: u64,
        outcome: TransactionOutcome,
        from_check: bool,
    ) -> Result<(), ClientError> {
        let request = EndTransactionRequest {
            producer_group: self.group.clone(),
            msg_id: msg_id.to_owned(),
            half_offset,
            outcome: outcome as i32,
            from_check,
        };
        let () = self
            .pool
            .call(addr, RequestCode::EndTransaction, &request, self.request_timeout)
            .await?;
        debug!(msg_id, ?outcome, from_check, "transaction ended");
        Ok(())
    }

    /// Whether check number `check_count` of `msg_id` is new to this producer (and claims it).
    fn claim(&self, msg_id: &str, check_count: u32) -> bool {
        let mut answered = self.answered.lock().expect("answered lock");
        if answered.get(msg_id).is_some_and(|seen| *seen >= check_count) {
            return false;
        }
        if answered.len() >= MAX_REMEMBERED_CHECKS {
            answered.clear();
        }
        answered.insert(msg_id.to_owned(), check_count);
        true
    }

    /// Forgets a claim whose answer did not reach the broker, so the next poll tries again.
    fn release(&self, msg_id: &str) {
        self.answered.lock().expect("answered lock").remove(msg_id);
    }

    /// Asks every master of the watched topics for check-backs and answers them.
    async fn poll_once(&self) {
        let topics: Vec<String> = self.topics.lock().expect("topics lock").iter().cloned().collect();
        let mut masters: BTreeMap<String, String> = BTreeMap::new();
        for topic in &topics {
            match self.routes.get(topic).await {
                Ok(route) => {
                    for (queue, addr) in route_queues(&route, perm::WRITE) {
                        masters.insert(addr, queue.broker_name);
                    }
                }
                Err(error) => debug!(topic, %error, "no route for check-backs yet"),
            }
        }
        for (addr, broker_name) in masters {
            let request = CheckTransactionsRequest {
                producer_group: self.group.clone(),
                client_id: self.client_id.clone(),
                max: CHECKS_PER_POLL,
            };
            let response: CheckTransactionsResponse = match self
                .pool
                .call(&addr, RequestCode::CheckTransactions, &request, self.request_timeout)
                .await
            {
                Ok(response) => response,
                Err(error) => {
                    debug!(broker = addr, %error, "polling for check-backs failed; trying again next interval");
                    continue;
                }
            };
            for check in response.checks {
                if !self.claim(&check.msg_id, check.check_count) {
                    continue;
                }
                let view = TransactionCheckView::new(&check, &broker_name);
                let outcome = self.listener.check(&view).await;
                debug!(
                    msg_id = check.msg_id,
                    check_count = check.check_count,
                    ?outcome,
                    "checked back"
                );
                if outcome == TransactionOutcome::Unknown {
                    continue;
                }
                if let Err(error) = self.end(&addr, &check.msg_id, check.half_offset, outcome, true).await {
                    warn!(msg_id = check.msg_id, ?outcome, %error, "answering a check-back failed; trying again next poll");
                    self.release(&check.msg_id);
                }
            }
        }
    }
}

async fn poll_checks<L: TransactionListener>(shared: Arc<Shared<L>>, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.poll_once() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::properties::PropertiesBuilder;

    struct Never;

    impl TransactionListener for Never {
        async fn execute(&self, _message: &Message) -> TransactionOutcome {
            TransactionOutcome::Unknown
        }

        async fn check(&self, _check: &TransactionCheckView) -> TransactionOutcome {
            TransactionOutcome::Unknown
        }
    }

    #[test]
    fn a_check_shows_the_message_as_the_producer_built_it() {
        let mut builder = PropertiesBuilder::new();
        builder.msg_id("0A0B").keys(&["order-1", "customer-2"]).unwrap();
        builder.tag("created").unwrap();
        builder.property("trace.id", "t-1").unwrap();
        builder.system(GROUP_PROPERTY, "payments");
        builder.system("TRAN_MSG", "true");
        builder.system("%TX_CHECKS", "2");
        let check = TransactionCheck {
            msg_id: "0A0B".into(),
            half_offset: 42,
            topic: "orders".into(),
            properties: Bytes::from(builder.finish()),
            body: Bytes::from_static(b"pay"),
            check_count: 2,
        };
        let view = TransactionCheckView::new(&check, "broker-a");
        assert_eq!(view.keys, ["order-1", "customer-2"]);
        assert_eq!(view.tag.as_deref(), Some("created"));
        assert_eq!(view.properties, [("trace.id".to_owned(), "t-1".to_owned())]);
        assert_eq!((view.topic.as_str(), view.check_count), ("orders", 2));
        assert_eq!(view.broker_name, "broker-a");
    }

    #[tokio::test]
    async fn a_transaction_producer_needs_a_valid_producer_group() {
        let pool = ConnectionPool::new(meridian_proto::transport::TransportConfig::default());
        let route: Arc<dyn RouteSource> = Arc::new(crate::StaticRoute::new("127.0.0.1:1".into(), pool.clone()));
        let refused = |config: TransactionProducerConfig| match TransactionProducer::new(route.clone(), config, Never) {
            Err(error) => error.to_string(),
            Ok(_) => panic!("expected a refusal"),
        };
        let error = refused(TransactionProducerConfig::default());
        assert!(error.contains("needs a producer group"), "{error}");
        let mut config = TransactionProducerConfig::default();
        config.producer.group = "bad group".into();
        assert!(matches!(
            TransactionProducer::new(route.clone(), config.clone(), Never),
            Err(ClientError::Validation(_))
        ));
        config.producer.group = "payments".into();
        config.check_poll_interval = Duration::ZERO;
        assert!(refused(config.clone()).contains("check_poll_interval"));
        config.check_poll_interval = Duration::from_millis(10);
        let producer = TransactionProducer::new(route, config, Never).unwrap();
        producer.shutdown().await;
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn a_check_is_answered_once_per_count_unless_its_answer_failed() {
        let pool = ConnectionPool::new(meridian_proto::transport::TransportConfig::default());
        let route: Arc<dyn RouteSource> = Arc::new(crate::StaticRoute::new("127.0.0.1:1".into(), pool.clone()));
        let mut config = TransactionProducerConfig::default();
        config.producer.group = "payments".into();
        let producer = TransactionProducer::new(route, config, Never).unwrap();
        let shared = &producer.shared;
        assert!(shared.claim("m1", 1));
        assert!(!shared.claim("m1", 1), "the same check offered again");
        assert!(shared.claim("m1", 2), "the next check");
        shared.release("m1");
        assert!(shared.claim("m1", 2), "an answer that failed is tried again");
        producer.shutdown().await;
        pool.shutdown().await;
    }
}

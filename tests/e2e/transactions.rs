//! Transactional messages against a real `meridian dev`: a half message is invisible until its
//! commit, a rollback discards it, an undecided one is checked back with its producer group (and
//! rolled back after `transaction.check_max` checks), each across a broker restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_client::proto::RequestCode;
use meridian_client::proto::messages::{MessageData, SendRequest, SendResponse};
use meridian_client::proto::properties::PropertiesBuilder;
use meridian_client::{
    ClientConfig, ConnectionPool, Message, Producer, ProducerConfig, SendResult, TransactionCheckView,
    TransactionListener, TransactionOutcome, TransactionProducer, TransactionProducerConfig,
};
use meridian_tests::DevNode;

use crate::read_all;

const TOPIC: &str = "tx-orders";
const GROUP: &str = "tx-payments";

fn write_config(dir: &Path, check_max: u32) -> PathBuf {
    let path = dir.join("broker.toml");
    std::fs::write(
        &path,
        format!("[transaction]\ncheck_interval_ms = 1000\ncheck_max = {check_max}\n"),
    )
    .unwrap();
    path
}

/// Decisions the broker has recorded: op records in its half-op queue (one per commit or roll
/// back), from its `/api/broker/topics`.
fn decisions_recorded(node: &DevNode) -> u64 {
    let Some(topics) = meridian_tests::http_get_json(node.http, "/api/broker/topics") else {
        return 0;
    };
    topics["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|topic| topic["name"] == meridian_client::proto::topics::HALF_OP_TOPIC)
        .flat_map(|topic| topic["queues"].as_array().cloned().unwrap_or_default())
        .filter_map(|queue| queue["max_offset"].as_u64())
        .sum()
}

fn start(dir: &Path, config: &Path) -> DevNode {
    DevNode::start(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

/// A local transaction answering `execute` as told, and check-backs by the message's key:
/// `commit-*` commits, `rollback-*` rolls back, anything else stays unknown. Remembers the checks.
#[derive(Clone)]
struct Ledger {
    execute: TransactionOutcome,
    checks: Arc<Mutex<Vec<(String, u32)>>>,
}

impl Ledger {
    fn new(execute: TransactionOutcome) -> Ledger {
        Ledger {
            execute,
            checks: Arc::default(),
        }
    }

    fn checks_of(&self, msg_id: &str) -> Vec<u32> {
        let checks = self.checks.lock().unwrap();
        checks
            .iter()
            .filter(|(id, _)| id == msg_id)
            .map(|(_, count)| *count)
            .collect()
    }
}

impl TransactionListener for Ledger {
    async fn execute(&self, _message: &Message) -> TransactionOutcome {
        self.execute
    }

    async fn check(&self, check: &TransactionCheckView) -> TransactionOutcome {
        assert_eq!(check.topic, TOPIC);
        self.checks
            .lock()
            .unwrap()
            .push((check.msg_id.clone(), check.check_count));
        let key = check.keys.first().map(String::as_str).unwrap_or_default();
        if key.starts_with("commit-") {
            TransactionOutcome::Commit
        } else if key.starts_with("rollback-") {
            TransactionOutcome::Rollback
        } else {
            TransactionOutcome::Unknown
        }
    }
}

fn transaction_producer(
    node: &DevNode,
    pool: &ConnectionPool,
    ledger: &Ledger,
    poll: Duration,
) -> TransactionProducer<Ledger> {
    let config = TransactionProducerConfig {
        producer: ProducerConfig {
            group: GROUP.into(),
            ..ProducerConfig::default()
        },
        check_poll_interval: poll,
        check_topics: vec![TOPIC.into()],
    };
    TransactionProducer::new(node.route(pool), config, ledger.clone()).unwrap()
}

async fn send(producer: &TransactionProducer<Ledger>, key: &str) -> SendResult {
    let sent = producer
        .send(Message::new(TOPIC, format!("body of {key}")).with_key(key))
        .await
        .unwrap();
    assert!(sent.end_error.is_none(), "{:?}", sent.end_error);
    sent.send
}

async fn delivered_ids(node: &DevNode) -> Vec<String> {
    let mut ids: Vec<String> = read_all(node, TOPIC)
        .await
        .iter()
        .map(|message| message.msg_id().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    ids.sort();
    ids
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Commit and rollback, decided at once or after a broker restart; repeated and contradicting
/// outcomes; EndTransaction for something that is not a half message; a transactional send
/// without a producer group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_commit_and_rollback_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Enough checks that the undecided transactions outlive the restart.
    let config = write_config(dir.path(), 60);
    let node = start(dir.path(), &config);
    node.create_topic(TOPIC, 2).await;
    let pool = ConnectionPool::new(ClientConfig::default());

    let committer = transaction_producer(
        &node,
        &pool,
        &Ledger::new(TransactionOutcome::Commit),
        Duration::from_secs(3600),
    );
    let committed_at_once = send(&committer, "now-1").await;
    let rollbacker = transaction_producer(
        &node,
        &pool,
        &Ledger::new(TransactionOutcome::Rollback),
        Duration::from_secs(3600),
    );
    let rolled_back_at_once = send(&rollbacker, "now-2").await;
    let undecided = transaction_producer(
        &node,
        &pool,
        &Ledger::new(TransactionOutcome::Unknown),
        Duration::from_secs(3600),
    );
    let to_commit = send(&undecided, "later-1").await;
    let to_roll_back = send(&undecided, "later-2").await;
    assert_eq!(
        delivered_ids(&node).await,
        sorted(&[&committed_at_once.msg_id]),
        "only the committed message is visible; the undecided ones are not"
    );
    // The same outcome again is harmless; the other one is refused.
    committer
        .end_transaction(&committed_at_once, TransactionOutcome::Commit)
        .await
        .unwrap();
    let error = committer
        .end_transaction(&committed_at_once, TransactionOutcome::Rollback)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("already committed; it cannot be rolled back"), "{error}");
    let error = rollbacker
        .end_transaction(&rolled_back_at_once, TransactionOutcome::Commit)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("already rolled back"), "{error}");

    // Invalid input: an ordinary message is not a half message; an offset where no record starts.
    let plain = Producer::new(node.route(&pool), ProducerConfig::default());
    let ordinary = plain
        .send(Message::new(TOPIC, "plain").with_key("plain"))
        .await
        .unwrap();
    let error = committer
        .end_transaction(&ordinary, TransactionOutcome::Commit)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("is not half message"), "{error}");
    let nowhere = SendResult {
        commitlog_offset: ordinary.commitlog_offset + 3,
        ..ordinary.clone()
    };
    let error = committer
        .end_transaction(&nowhere, TransactionOutcome::Commit)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no message record starts at commitlog offset"),
        "{error}"
    );
    // A transactional send without a producer group, as a client other than the SDK could make.
    let mut properties = PropertiesBuilder::new();
    properties.transactional();
    let request = SendRequest {
        topic: TOPIC.into(),
        queue_id: 0,
        messages: vec![MessageData {
            flags: 0,
            born_timestamp: 1,
            properties: Bytes::from(properties.finish()),
            body: Bytes::from_static(b"x"),
            reconsume_count: 0,
        }],
        producer_group: String::new(),
        sdk: Default::default(),
    };
    let error = pool
        .call::<_, SendResponse>(&node.broker_addr(), RequestCode::Send, &request, Duration::from_secs(5))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("needs a producer group"), "{error}");
    for producer in [&committer, &rollbacker, &undecided] {
        producer.shutdown().await;
    }
    plain.shutdown().await;
    pool.shutdown().await;
    node.stop();

    // After a restart the half messages sent before it are still there to be ended.
    let node = start(dir.path(), &config);
    let pool = ConnectionPool::new(ClientConfig::default());
    let restarted = transaction_producer(
        &node,
        &pool,
        &Ledger::new(TransactionOutcome::Unknown),
        Duration::from_secs(3600),
    );
    assert_eq!(
        delivered_ids(&node).await,
        sorted(&[&committed_at_once.msg_id, &ordinary.msg_id])
    );
    restarted
        .end_transaction(&to_commit, TransactionOutcome::Commit)
        .await
        .unwrap();
    restarted
        .end_transaction(&to_roll_back, TransactionOutcome::Rollback)
        .await
        .unwrap();
    let messages = read_all(&node, TOPIC).await;
    let mut ids: Vec<String> = messages.iter().map(|message| message.msg_id().to_owned()).collect();
    ids.sort();
    assert_eq!(
        ids,
        sorted(&[&committed_at_once.msg_id, &ordinary.msg_id, &to_commit.msg_id])
    );
    let committed = messages
        .iter()
        .find(|message| message.msg_id() == to_commit.msg_id)
        .unwrap();
    assert_eq!(committed.keys().collect::<Vec<_>>(), ["later-1"]);
    assert_eq!(&committed.body[..], b"body of later-1");
    assert_eq!(committed.property("REAL_TOPIC"), None);
    restarted.shutdown().await;
    pool.shutdown().await;
    node.stop();
}

/// Producers that answered Unknown die with the broker; after the restart another member of the
/// producer group is checked back and commits one transaction and rolls back the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_check_back_settles_half_messages_sent_before_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 15);
    let node = start(dir.path(), &config);
    node.create_topic(TOPIC, 2).await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let first_run = transaction_producer(
        &node,
        &pool,
        &Ledger::new(TransactionOutcome::Unknown),
        Duration::from_secs(3600),
    );
    let to_commit = send(&first_run, "commit-1").await;
    let to_roll_back = send(&first_run, "rollback-1").await;
    first_run.shutdown().await;
    pool.shutdown().await;
    node.stop();

    let node = start(dir.path(), &config);
    assert!(
        delivered_ids(&node).await.is_empty(),
        "undecided transactions stay invisible"
    );
    let pool = ConnectionPool::new(ClientConfig::default());
    let ledger = Ledger::new(TransactionOutcome::Unknown);
    let second_run = transaction_producer(&node, &pool, &ledger, Duration::from_millis(200));
    wait_until("the check-back commits the first transaction", || async {
        !delivered_ids(&node).await.is_empty()
    })
    .await;
    wait_until("both transactions are checked back", || {
        let checked = !ledger.checks_of(&to_roll_back.msg_id).is_empty();
        async move { checked }
    })
    .await;
    assert_eq!(ledger.checks_of(&to_commit.msg_id)[0], 1, "the first check counts 1");
    // The producer sends its answer right after the listener returns; wait until the broker has
    // recorded both decisions (probing with a commit any earlier could commit the transaction
    // itself).
    wait_until("the broker recorded both decisions", || {
        let recorded = decisions_recorded(&node);
        async move { recorded >= 2 }
    })
    .await;
    let error = second_run
        .end_transaction(&to_roll_back, TransactionOutcome::Commit)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("already rolled back"), "{error}");
    assert_eq!(delivered_ids(&node).await, sorted(&[&to_commit.msg_id]));
    // Settled transactions are asked about no more.
    let asked = ledger.checks.lock().unwrap().len();
    // The quiet period is what is tested: no check-back within 2.5 s (several check rounds).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(ledger.checks.lock().unwrap().len(), asked, "no check after the answers");
    assert_eq!(
        delivered_ids(&node).await,
        sorted(&[&to_commit.msg_id]),
        "delivered once"
    );
    second_run.shutdown().await;
    pool.shutdown().await;
    node.stop();
}

/// A transaction its producer group never decides is checked `check_max` times, then rolled
/// back by the broker, also when a restart comes between the checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_left_undecided_is_rolled_back_after_check_max() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 3);
    let node = start(dir.path(), &config);
    node.create_topic(TOPIC, 2).await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let ledger = Ledger::new(TransactionOutcome::Unknown);
    let producer = transaction_producer(&node, &pool, &ledger, Duration::from_millis(200));
    let undecided = send(&producer, "undecided-1").await;
    wait_until("the first check-back", || {
        let checked = !ledger.checks_of(&undecided.msg_id).is_empty();
        async move { checked }
    })
    .await;
    producer.shutdown().await;
    pool.shutdown().await;
    node.stop();

    let node = start(dir.path(), &config);
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = transaction_producer(&node, &pool, &ledger, Duration::from_millis(200));
    wait_until("the broker gives up on the transaction and warns", || {
        let warned = node.log().contains("transaction rolled back");
        async move { warned }
    })
    .await;
    let error = producer
        .end_transaction(&undecided, TransactionOutcome::Commit)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("already rolled back"), "{error}");
    let mut counts = ledger.checks_of(&undecided.msg_id);
    counts.dedup();
    assert!(
        counts.first() == Some(&1) && counts.last() == Some(&3) && counts.windows(2).all(|pair| pair[0] < pair[1]),
        "asked up to check_max times, counting up across the restart: {counts:?}"
    );
    assert!(delivered_ids(&node).await.is_empty());
    producer.shutdown().await;
    pool.shutdown().await;
    node.stop();
}

/// `meridian produce --transaction`: a commit is delivered and a rollback is not; `unknown` leaves
/// the transaction to the check-back, which a running member of the producer group answers, and
/// which rolls it back after `check_max` when no member answers; transactions are sent one at a
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_outcomes_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 2);
    let node = start(dir.path(), &config);
    node.create_topic(TOPIC, 2).await;
    let produce = |end: &str, key: &str, group: &str| {
        let body = format!("body of {key}");
        let args = [
            "produce",
            "--topic",
            TOPIC,
            "--key",
            key,
            "--body",
            &body,
            "--transaction",
            end,
            "--producer-group",
            group,
        ];
        let (ok, stdout, stderr) = node.cli(&args, "");
        assert!(ok, "produce --transaction {end}: {stderr}");
        (stdout.trim().to_owned(), stderr)
    };
    let (committed, _) = produce("commit", "cli-commit", "meridian-cli");
    let (rolled_back, _) = produce("rollback", "cli-rollback", "meridian-cli");
    assert_ne!(committed, rolled_back);
    let delivered = read_all(&node, TOPIC).await;
    assert_eq!(delivered.len(), 1, "only the committed message is delivered");
    assert_eq!(delivered[0].msg_id(), committed);
    assert_eq!(&delivered[0].body[..], b"body of cli-commit");

    // The member's check commits keys starting with `commit-`; nobody answers for meridian-cli.
    let pool = ConnectionPool::new(ClientConfig::default());
    let ledger = Ledger::new(TransactionOutcome::Unknown);
    let member = transaction_producer(&node, &pool, &ledger, Duration::from_millis(200));
    let (decided_by_member, note) = produce("unknown", "commit-by-member", GROUP);
    assert!(note.contains("left undecided") && note.contains(GROUP), "{note}");
    let (abandoned, _) = produce("unknown", "commit-abandoned", "meridian-cli");
    wait_until("the member's check-back answer commits its group's transaction", || {
        let node = &node;
        let id = decided_by_member.clone();
        async move { delivered_ids(node).await.contains(&id) }
    })
    .await;
    wait_until("the broker rolls back the transaction nobody answers for", || {
        let warned = node.log().contains("transaction rolled back");
        async move { warned }
    })
    .await;
    assert!(!ledger.checks_of(&decided_by_member).is_empty());
    assert!(
        ledger.checks_of(&abandoned).is_empty(),
        "another group's transaction is not offered to the member"
    );
    assert_eq!(delivered_ids(&node).await, sorted(&[&committed, &decided_by_member]));

    let (ok, _, stderr) = node.cli(
        &[
            "produce",
            "--topic",
            TOPIC,
            "--body",
            "x",
            "--transaction",
            "commit",
            "--mode",
            "async",
        ],
        "",
    );
    assert!(!ok && stderr.contains("one message at a time"), "{stderr}");
    member.shutdown().await;
    pool.shutdown().await;
    node.stop();
}

//! Push consumer groups: every message reaches the group at least once, and committed offsets
//! survive a broker restart.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_client::{
    ClientConfig, ConnectionPool, ConsumeFrom, ConsumeResult, ConsumerConfig, Message, Producer, ProducerConfig,
    PushConsumer,
};
use meridian_tests::{DevNode, eventually};

async fn produce(node: &DevNode, topic: &str, count: usize, prefix: &str) -> BTreeSet<String> {
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    let mut ids = BTreeSet::new();
    for index in 0..count {
        ids.insert(
            producer
                .send(Message::new(topic, format!("{prefix}-{index}")))
                .await
                .unwrap()
                .msg_id,
        );
    }
    producer.shutdown().await;
    pool.shutdown().await;
    ids
}

/// msgIds a consumer handled, in order.
type Seen = Arc<Mutex<Vec<String>>>;

async fn start_consumer(node: &DevNode, pool: &ConnectionPool, name: &str, seen: Seen) -> PushConsumer {
    let mut config = ConsumerConfig::new("billing", "payments");
    config.client_id = name.to_owned();
    config.consume_from = ConsumeFrom::Earliest;
    config.rebalance_interval = Duration::from_millis(500);
    config.heartbeat_interval = Duration::from_millis(500);
    PushConsumer::start(node.route(pool), config, move |message| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(message.msg_id().to_owned());
            ConsumeResult::Success
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_group_of_two_gets_every_message_and_offsets_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("payments", 8).await;
    node.create_group("billing", &["payments"]).await;
    let first_batch = produce(&node, "payments", 400, "first").await;

    let pool = ConnectionPool::new(ClientConfig::default());
    let seen_a: Seen = Arc::default();
    let seen_b: Seen = Arc::default();
    let consumer_a = start_consumer(&node, &pool, "consumer-a", seen_a.clone()).await;
    let consumer_b = start_consumer(&node, &pool, "consumer-b", seen_b.clone()).await;
    let union = || {
        seen_a
            .lock()
            .unwrap()
            .iter()
            .chain(seen_b.lock().unwrap().iter())
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    let balanced = || {
        let (a, b) = (consumer_a.assigned_queues(), consumer_b.assigned_queues());
        a.len() == 4 && b.len() == 4 && a.iter().all(|queue| !b.contains(queue))
    };
    assert!(
        eventually(Duration::from_secs(30), || union() == first_batch && balanced()).await,
        "group got {} of 400",
        union().len()
    );
    assert!(
        !seen_a.lock().unwrap().is_empty() && !seen_b.lock().unwrap().is_empty(),
        "both members consumed"
    );
    consumer_a.shutdown().await;
    consumer_b.shutdown().await;
    node.stop();

    // After a restart the group resumes where it committed: only new messages arrive.
    let node = DevNode::start(dir.path(), &[]);
    let second_batch = produce(&node, "payments", 100, "second").await;
    let seen_c: Seen = Arc::default();
    let pool = ConnectionPool::new(ClientConfig::default());
    let consumer_c = start_consumer(&node, &pool, "consumer-c", seen_c.clone()).await;
    let received = || seen_c.lock().unwrap().iter().cloned().collect::<BTreeSet<_>>();
    assert!(
        eventually(Duration::from_secs(30), || received() == second_batch).await,
        "got {} of 100 new",
        received().len()
    );
    // The quiet period is what is tested: no old message redelivered (offsets lost) within 1 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let replayed: Vec<String> = seen_c
        .lock()
        .unwrap()
        .iter()
        .filter(|id| first_batch.contains(*id))
        .cloned()
        .collect();
    assert!(
        replayed.is_empty(),
        "{} messages consumed before the restart came again",
        replayed.len()
    );
    consumer_c.shutdown().await;
    pool.shutdown().await;
    node.stop();
}

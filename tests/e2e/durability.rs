//! Acknowledged messages survive restarts and `kill -9`, byte for byte.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_client::{ClientConfig, ConnectionPool, Message, Producer, ProducerConfig};
use meridian_tests::DevNode;

use crate::read_all;

fn random_body(random: &mut fastrand::Rng) -> Bytes {
    let len = random.usize(1..3000);
    Bytes::from((0..len).map(|_| random.u8(..)).collect::<Vec<u8>>())
}

fn assert_all_stored(
    acknowledged: &HashMap<String, (Bytes, String)>,
    stored: &[meridian_proto::record::StoredMessage],
) {
    let by_id: HashMap<&str, &meridian_proto::record::StoredMessage> =
        stored.iter().map(|message| (message.msg_id(), message)).collect();
    let mut missing = 0;
    for (msg_id, (body, key)) in acknowledged {
        match by_id.get(msg_id.as_str()) {
            Some(message) => {
                assert_eq!(&message.body, body, "body of acknowledged message {msg_id} changed");
                assert_eq!(message.keys().collect::<Vec<_>>(), [key.as_str()], "keys of {msg_id}");
            }
            None => missing += 1,
        }
    }
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged messages are missing",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_every_acknowledged_message_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &["--flush-mode", "sync"]);
    node.create_topic("orders", 4).await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    let mut random = fastrand::Rng::with_seed(7);
    let mut acknowledged = HashMap::new();
    for index in 0..1000 {
        let body = random_body(&mut random);
        let key = format!("order-{index}");
        let sent = producer
            .send(Message::new("orders", body.clone()).with_key(key.clone()))
            .await
            .unwrap();
        acknowledged.insert(sent.msg_id, (body, key));
    }
    producer.shutdown().await;
    pool.shutdown().await;
    node.stop();

    let node = DevNode::start(dir.path(), &["--flush-mode", "sync"]);
    let stored = read_all(&node, "orders").await;
    assert_eq!(stored.len(), acknowledged.len(), "nothing lost, nothing added");
    assert_all_stored(&acknowledged, &stored);
    node.stop();
}

/// Producers send as fast as they can while the broker is `kill -9`ed. After a restart every
/// acknowledged message is there and identical, and the broker takes new sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_send_storm_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2u64 {
        let node = DevNode::start(dir.path(), &["--flush-mode", "sync"]);
        if round == 0 {
            node.create_topic("storm", 8).await;
        }
        let pool = ConnectionPool::new(ClientConfig::default());
        let producer = Producer::new(
            node.route(&pool),
            ProducerConfig {
                retries: 0,
                ..ProducerConfig::default()
            },
        );
        let acknowledged: Arc<Mutex<HashMap<String, (Bytes, String)>>> = Arc::default();
        let tasks = tokio_util::task::TaskTracker::new();
        for worker in 0..8u64 {
            let (producer, acknowledged) = (producer.clone(), acknowledged.clone());
            tasks.spawn(async move {
                let mut random = fastrand::Rng::with_seed(round * 100 + worker);
                // Several sends in flight per worker, so the kill lands mid-batch of a group commit.
                let mut in_flight = std::collections::VecDeque::new();
                for index in 0.. {
                    let body = random_body(&mut random);
                    let key = format!("w{worker}-{index}");
                    let message = Message::new("storm", body.clone()).with_key(key.clone());
                    in_flight.push_back((producer.send_async(message), body, key));
                    if in_flight.len() < 4 {
                        continue;
                    }
                    let (send, body, key) = in_flight.pop_front().expect("non-empty");
                    match send.await {
                        Ok(sent) => {
                            acknowledged.lock().unwrap().insert(sent.msg_id, (body, key));
                        }
                        Err(_) => break,
                    }
                }
            });
        }
        tasks.close();
        let started = Instant::now();
        while acknowledged.lock().unwrap().len() < 2000 && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node.kill9();
        tasks.wait().await;
        producer.shutdown().await;
        pool.shutdown().await;
        let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
        assert!(
            acknowledged.len() >= 2000,
            "the storm acknowledged only {} sends",
            acknowledged.len()
        );

        let node = DevNode::start(dir.path(), &["--flush-mode", "sync"]);
        let stored = read_all(&node, "storm").await;
        assert_all_stored(&acknowledged, &stored);
        let pool = ConnectionPool::new(ClientConfig::default());
        let producer = Producer::new(node.route(&pool), ProducerConfig::default());
        producer
            .send(Message::new("storm", "after the crash"))
            .await
            .expect("a recovered broker accepts sends");
        producer.shutdown().await;
        pool.shutdown().await;
        node.stop();
    }
}

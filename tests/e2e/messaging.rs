//! Messaging features against a real `meridian dev` node, each with a `kill -9` and restart of
//! the node in the middle: delayed delivery, retries into the dead-letter queue and back, offset
//! reset, ordered consumption through a consumer crash, tag filters and broadcasting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_client::{
    ClientConfig, ConnectionPool, ConsumeFrom, ConsumeMode, ConsumeResult, ConsumerConfig, Message, Producer,
    ProducerConfig, PushConsumer, StoredMessage,
};
use meridian_proto::time::now_millis;
use meridian_tests::{DevNode, eventually};

/// Messages a consumer handled, in order.
type Seen = Arc<Mutex<Vec<StoredMessage>>>;

fn consumer_config(group: &str, topic: &str, client_id: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(group, topic);
    config.client_id = client_id.to_owned();
    config.consume_from = ConsumeFrom::Earliest;
    config.rebalance_interval = Duration::from_millis(300);
    config.heartbeat_interval = Duration::from_millis(300);
    config.long_poll = Duration::from_millis(500);
    config.commit_interval = Duration::from_millis(100);
    config
}

async fn recording(node: &DevNode, pool: &ConnectionPool, config: ConsumerConfig) -> (PushConsumer, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let consumer = PushConsumer::start(node.route(pool), config, move |message| {
        sink.lock().unwrap().push(message);
        async { ConsumeResult::Success }
    })
    .await
    .unwrap();
    (consumer, seen)
}

fn producer(node: &DevNode, pool: &ConnectionPool) -> Producer {
    Producer::new(
        node.route(pool),
        ProducerConfig {
            group: "e2e-producers".into(),
            ..ProducerConfig::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_are_never_early_survive_a_crash_and_bad_delays_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("reminders", 2).await;
    node.create_group("notifier", &["reminders"]).await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = producer(&node, &pool);

    // Asked delay of each message, by msgId, and when the broker stored the delayed original.
    let mut asked: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (index, level) in [2u32, 2, 3].into_iter().enumerate() {
        let sent = producer
            .send(Message::new("reminders", format!("level-{index}")).with_delay_level(level))
            .await
            .unwrap();
        let delay = [1_000, 5_000, 10_000][level as usize - 1];
        asked.insert(sent.msg_id, (sent.store_timestamp, delay));
    }
    let at = now_millis() + 7_000;
    let sent = producer
        .send(Message::new("reminders", "at-time").with_deliver_at(at))
        .await
        .unwrap();
    asked.insert(sent.msg_id, (at, 0));

    // Bad delays are refused before anything is stored, naming the rule.
    let error = producer
        .send(Message::new("reminders", "x").with_delay_level(19))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("delay level \"19\" is invalid: levels are 1 to 18"),
        "{error}"
    );
    let error = producer
        .send(Message::new("reminders", "x").with_deliver_at(now_millis() + 40 * 86_400_000))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("over the limit of 30 days"), "{error}");
    let (ok, _, stderr) = node.cli(
        &["produce", "--topic", "reminders", "--body", "x", "--delay-level", "0"],
        "",
    );
    assert!(!ok && stderr.contains("delay level \"0\" is invalid"), "{stderr}");
    producer.shutdown().await;
    pool.shutdown().await;

    // The node crashes while every message still waits; they are delivered after the restart.
    let node = node.crash_restart(&[]);
    let pool = ConnectionPool::new(ClientConfig::default());
    let (consumer, seen) = recording(&node, &pool, consumer_config("notifier", "reminders", "n1")).await;
    assert!(
        eventually(Duration::from_secs(40), || seen.lock().unwrap().len() >= asked.len()).await,
        "delivered {} of {}",
        seen.lock().unwrap().len(),
        asked.len()
    );
    // The quiet period is what is tested: no duplicate shows up within 500 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer.shutdown().await;
    let seen = seen.lock().unwrap().clone();
    let ids: BTreeSet<&str> = seen.iter().map(StoredMessage::msg_id).collect();
    assert_eq!(ids.len(), seen.len(), "no message delivered twice");
    for message in &seen {
        let (base, delay) = asked[message.msg_id()];
        let due = base + delay;
        // Stored in the real topic (the delivery) no earlier than due, by the broker's clock.
        assert!(
            message.store_timestamp >= due,
            "{} delivered {} ms early",
            message.msg_id(),
            due - message.store_timestamp
        );
        assert_eq!(message.topic, "reminders");
        assert!(
            message.property("REAL_TOPIC").is_none(),
            "routing properties are removed"
        );
    }
    pool.shutdown().await;
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_failing_too_often_is_dead_lettered_with_its_history_and_can_be_resent() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("orders", 2).await;
    let (ok, _, stderr) = node.cli(
        &["group", "create", "billing", "--topics", "orders", "--max-retries", "2"],
        "",
    );
    assert!(ok, "{stderr}");
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = producer(&node, &pool);
    let poison = producer
        .send(
            Message::new("orders", "poison")
                .with_key("order-13")
                .with_tag("created"),
        )
        .await
        .unwrap()
        .msg_id;
    for index in 0..5 {
        producer
            .send(Message::new("orders", format!("fine-{index}")))
            .await
            .unwrap();
    }
    producer.shutdown().await;

    // Every delivery of the poison message fails; the others succeed.
    let attempts: Seen = Arc::default();
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = |node: &DevNode, pool: &ConnectionPool| {
        let (attempts, healed) = (attempts.clone(), healed.clone());
        let mut config = consumer_config("billing", "orders", "b1");
        config.retry_delay_level = 1;
        PushConsumer::start(node.route(pool), config, move |message: StoredMessage| {
            let fail = message.body.as_ref() == b"poison" && !healed.load(std::sync::atomic::Ordering::SeqCst);
            attempts.lock().unwrap().push(message);
            async move {
                if fail {
                    ConsumeResult::Retry
                } else {
                    ConsumeResult::Success
                }
            }
        })
    };
    let poison_attempts = |attempts: &Seen| {
        attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|message| message.msg_id() == poison)
            .map(|message| message.reconsume_count)
            .collect::<Vec<_>>()
    };
    let consumer = start(&node, &pool).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || !poison_attempts(&attempts).is_empty()).await);
    consumer.shutdown().await;
    pool.shutdown().await;
    // Committed offsets reach disk with the next checkpoint (1 s); without waiting, the crash
    // would replay the first delivery too (at least once), starting a second chain of retries.
    node.wait_offsets_durable("billing");

    // A crash between the first failure and the retries loses none of them.
    let node = node.crash_restart(&[]);
    let pool = ConnectionPool::new(ClientConfig::default());
    let consumer = start(&node, &pool).await.unwrap();
    let dead_lettered = || {
        let (ok, stdout, _) = node.cli(&["dlq", "list", "--group", "billing", "--json"], "");
        ok && stdout.contains(&poison)
    };
    assert!(
        eventually(Duration::from_secs(40), dead_lettered).await,
        "attempts so far: {:?}",
        poison_attempts(&attempts)
    );
    // The original delivery and two retries (max-retries 2), in order, each seeing its count.
    let counts = poison_attempts(&attempts);
    assert_eq!(
        counts.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1, 2]),
        "{counts:?}"
    );
    let retried = attempts
        .lock()
        .unwrap()
        .iter()
        .find(|message| message.msg_id() == poison && message.reconsume_count == 2)
        .cloned()
        .unwrap();
    assert_eq!(
        retried.topic, "orders",
        "a retried message is handed over under its own topic"
    );
    assert_eq!(retried.keys().collect::<Vec<_>>(), ["order-13"]);

    let (ok, stdout, stderr) = node.cli(&["dlq", "show", "--group", "billing", "--json", &poison], "");
    assert!(ok, "{stderr}");
    let letter: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(letter["topic"], "orders");
    assert_eq!(letter["reconsume_count"], 3);
    assert_eq!(letter["keys"], serde_json::json!(["order-13"]));
    assert_eq!(letter["tag"], "created");
    assert_eq!(letter["body"], "poison");

    // Resent once healed, it is consumed again, with its count starting over.
    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    let before = poison_attempts(&attempts).len();
    let (ok, stdout, stderr) = node.cli(&["dlq", "resend", "--group", "billing", &poison], "");
    assert!(
        ok && stdout.contains("1 dead letters of group billing resent"),
        "{stdout}{stderr}"
    );
    assert!(
        eventually(Duration::from_secs(20), || poison_attempts(&attempts)[before..] == [0]).await,
        "{:?}",
        poison_attempts(&attempts)
    );
    consumer.shutdown().await;

    // Unknown groups and ids get errors that say so.
    let (ok, _, stderr) = node.cli(&["dlq", "list", "--group", "nosuch"], "");
    assert!(
        !ok && stderr.contains("consumer group \"nosuch\" does not exist"),
        "{stderr}"
    );
    let (ok, _, stderr) = node.cli(
        &[
            "dlq",
            "resend",
            "--group",
            "billing",
            "0123456789ABCDEF0123456789ABCDEF",
        ],
        "",
    );
    assert!(
        !ok && stderr.contains("no dead letter of group billing has these ids"),
        "{stderr}"
    );
    pool.shutdown().await;
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_reset_to_a_time_replays_exactly_the_messages_stored_since_to_running_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("events", 3).await;
    node.create_group("audit", &["events"]).await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = producer(&node, &pool);
    for index in 0..30 {
        producer
            .send(Message::new("events", format!("old-{index}")))
            .await
            .unwrap();
    }
    // Store timestamps are in ms: `since` is a ms after the last old store, and the new ones
    // are stored after it is read.
    let last_old = now_millis();
    while now_millis() <= last_old {
        tokio::task::yield_now().await;
    }
    let since = now_millis();
    let mut newer = BTreeSet::new();
    for index in 0..30 {
        newer.insert(
            producer
                .send(Message::new("events", format!("new-{index}")))
                .await
                .unwrap()
                .msg_id,
        );
    }
    producer.shutdown().await;
    let (consumer, seen) = recording(&node, &pool, consumer_config("audit", "events", "a1")).await;
    assert!(eventually(Duration::from_secs(20), || seen.lock().unwrap().len() == 60).await);
    // Every delivery committed and on disk, so the crash replays none of them: all that arrives
    // after it is what the reset replays.
    let lag = || {
        meridian_tests::http_get_json(node.http, "/api/broker/lag").and_then(|report| {
            report["groups"]
                .as_array()?
                .iter()
                .find(|lag| lag["group"] == "audit")
                .and_then(|lag| lag["lag_messages"].as_u64())
        })
    };
    assert!(
        eventually(Duration::from_secs(20), || lag() == Some(0)).await,
        "audit never committed all 60: lag {:?}",
        lag()
    );
    node.wait_offsets_durable("audit");

    // The node crashes and comes back; the consumer reconnects by itself.
    let node = node.crash_restart(&[]);
    let before = seen.lock().unwrap().len();
    assert_eq!(before, 60, "nothing redelivered by the crash");
    let (ok, stdout, stderr) = node.cli(
        &[
            "group",
            "reset-offset",
            "--group",
            "audit",
            "--topic",
            "events",
            "--to-timestamp",
            &since.to_string(),
        ],
        "",
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(
        eventually(Duration::from_secs(20), || seen.lock().unwrap().len()
            >= before + newer.len())
        .await,
        "replayed {} of {}",
        seen.lock().unwrap().len() - before,
        newer.len()
    );
    // The quiet period is what is tested: nothing replays twice within 500 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let replayed: BTreeSet<String> = seen.lock().unwrap()[before..]
        .iter()
        .map(|message| message.msg_id().to_owned())
        .collect();
    assert_eq!(replayed, newer, "exactly the messages stored since the time");
    assert_eq!(seen.lock().unwrap().len() - before, newer.len(), "each once");

    let (ok, _, stderr) = node.cli(
        &[
            "group",
            "reset-offset",
            "--group",
            "audit",
            "--topic",
            "events",
            "--to-timestamp",
            "yesterday",
        ],
        "",
    );
    assert!(!ok && stderr.contains("is not a time"), "{stderr}");
    consumer.shutdown().await;
    pool.shutdown().await;
    node.stop();
}

/// `key:seq` bodies of ordered messages.
fn key_seq(message: &StoredMessage) -> (String, u32) {
    let body = String::from_utf8_lossy(&message.body).into_owned();
    let (key, seq) = body.split_once(':').unwrap();
    (key.to_owned(), seq.parse().unwrap())
}

/// Whether each key's sequence numbers only go up within one consumer's stream.
fn in_order(stream: &[(String, u32)]) -> Result<(), String> {
    let mut last: BTreeMap<&str, u32> = BTreeMap::new();
    for (key, seq) in stream {
        if let Some(previous) = last.insert(key, *seq)
            && previous >= *seq
        {
            return Err(format!("key {key}: {seq} after {previous}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_messages_keep_per_key_order_through_a_consumer_crash_a_rebalance_and_a_node_crash() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("ledger", 4).await;
    node.create_group("posting", &["ledger"]).await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = producer(&node, &pool);
    let keys: Vec<String> = (0..8).map(|key| format!("account{key}")).collect();
    let send_round = |round: std::ops::Range<u32>| {
        let producer = &producer;
        let keys = keys.clone();
        async move {
            for seq in round {
                for key in &keys {
                    producer
                        .send_ordered(Message::new("ledger", format!("{key}:{seq}")), key)
                        .await
                        .unwrap();
                }
            }
        }
    };
    send_round(0..20).await;

    // A separate process consumes orderly and is killed mid-stream (it holds queue locks).
    let crasher_output = dir.path().join("crasher.jsonl");
    let mut crashing = std::process::Command::new(meridian_tests::meridian_bin())
        .args([
            "consume",
            "--topic",
            "ledger",
            "--group",
            "posting",
            "--orderly",
            "--from-beginning",
            "--json",
            "--client-id",
            "crasher",
            "--nameserver",
        ])
        .arg(node.nameserver.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&crasher_output).unwrap())
        .stderr(std::fs::File::create(dir.path().join("crasher.log")).unwrap())
        .spawn()
        .unwrap();
    let printed = || {
        std::fs::read_to_string(&crasher_output)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(
        eventually(Duration::from_secs(20), || printed() > 0).await,
        "the orderly CLI consumer got nothing"
    );
    let mut config = consumer_config("posting", "ledger", "survivor");
    config.mode = ConsumeMode::Orderly;
    let (survivor, seen) = recording(&node, &pool, config).await;
    send_round(20..40).await;
    // The fault's timing, not a condition: a kill at any moment mid-stream must lose nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    crashing.kill().unwrap();
    crashing.wait().unwrap();
    let crashed_output = std::fs::read_to_string(&crasher_output).unwrap();

    // The node crashes too; the survivor takes every queue and finishes the stream.
    let node = node.crash_restart(&[]);
    let pool2 = ConnectionPool::new(ClientConfig::default());
    let producer2 = producer_for(&node, &pool2);
    for seq in 40..50 {
        for key in &keys {
            producer2
                .send_ordered(Message::new("ledger", format!("{key}:{seq}")), key)
                .await
                .unwrap();
        }
    }
    let complete = || {
        let streams = seen.lock().unwrap();
        keys.iter().all(|key| {
            streams
                .iter()
                .map(key_seq)
                .any(|(seen_key, seq)| &seen_key == key && seq == 49)
        })
    };
    assert!(
        eventually(Duration::from_secs(60), complete).await,
        "the survivor did not reach the end"
    );
    survivor.shutdown().await;

    let survivor_stream: Vec<(String, u32)> = seen.lock().unwrap().iter().map(key_seq).collect();
    in_order(&survivor_stream).unwrap_or_else(|problem| panic!("survivor out of order: {problem}"));
    let crasher_stream: Vec<(String, u32)> = crashed_output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|value| value["body"].as_str().map(str::to_owned))
        .map(|body| {
            let (key, seq) = body.split_once(':').unwrap();
            (key.to_owned(), seq.parse().unwrap())
        })
        .collect();
    in_order(&crasher_stream).unwrap_or_else(|problem| panic!("crashed consumer out of order: {problem}"));
    // Nothing is lost: together they saw every message of every key.
    let all: BTreeSet<(String, u32)> = survivor_stream.iter().chain(&crasher_stream).cloned().collect();
    assert_eq!(all.len(), keys.len() * 50, "every message consumed at least once");
    producer.shutdown().await;
    producer2.shutdown().await;
    pool.shutdown().await;
    pool2.shutdown().await;
    node.stop();
}

fn producer_for(node: &DevNode, pool: &ConnectionPool) -> Producer {
    producer(node, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_and_broadcasting_deliver_what_each_member_asked_for_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("shipments", 2).await;
    node.create_group("packers", &["shipments"]).await;
    let (ok, _, stderr) = node.cli(
        &["group", "create", "screens", "--topics", "shipments", "--broadcasting"],
        "",
    );
    assert!(ok, "{stderr}");
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = producer(&node, &pool);
    let send = |tag: &'static str, index: u32| {
        let producer = &producer;
        async move {
            producer
                .send(Message::new("shipments", format!("{tag}-{index}")).with_tag(tag))
                .await
                .unwrap()
        }
    };
    for index in 0..10 {
        send("express", index).await;
        send("ground", index).await;
        send("freight", index).await;
    }
    let node = node.crash_restart(&[]);
    for index in 10..15 {
        send("express", index).await;
        send("freight", index).await;
    }

    let mut filtered = consumer_config("packers", "shipments", "p1");
    filtered.subscription = "express || freight".into();
    let (packer, packed) = recording(&node, &pool, filtered).await;
    let screen = |id: &str| {
        let mut config = consumer_config("screens", "shipments", id);
        config.broadcasting = true;
        config
    };
    let (screen_a, seen_a) = recording(&node, &pool, screen("screen-a")).await;
    let (screen_b, seen_b) = recording(&node, &pool, screen("screen-b")).await;
    assert!(eventually(Duration::from_secs(20), || packed.lock().unwrap().len() >= 30).await);
    assert!(
        eventually(Duration::from_secs(20), || seen_a.lock().unwrap().len() >= 40
            && seen_b.lock().unwrap().len() >= 40)
        .await
    );
    // The quiet period is what is tested: no message beyond the expected ones within 500 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tags = |seen: &Seen| {
        seen.lock()
            .unwrap()
            .iter()
            .map(|message| message.tag().unwrap_or("-").to_owned())
            .collect::<Vec<_>>()
    };
    let packed_tags = tags(&packed);
    assert_eq!(packed_tags.len(), 30, "exactly the express and freight messages");
    assert!(
        packed_tags.iter().all(|tag| tag == "express" || tag == "freight"),
        "{packed_tags:?}"
    );
    assert_eq!(tags(&seen_a).len(), 40, "a broadcasting member gets every message");
    assert_eq!(tags(&seen_b).len(), 40, "and so does every other member");

    // A malformed expression and a mode the group was not registered with are refused.
    let mut bad = consumer_config("packers", "shipments", "p2");
    bad.subscription = "express ||".into();
    let error = PushConsumer::start(node.route(&pool), bad, |_| async { ConsumeResult::Success })
        .await
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("tag expression \"express ||\" is invalid"),
        "{error}"
    );
    let mut wrong_mode = consumer_config("packers", "shipments", "p3");
    wrong_mode.broadcasting = true;
    let error = PushConsumer::start(node.route(&pool), wrong_mode, |_| async { ConsumeResult::Success })
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("registered as clustering"), "{error}");

    for consumer in [packer, screen_a, screen_b] {
        consumer.shutdown().await;
    }
    producer.shutdown().await;
    pool.shutdown().await;
    node.stop();
}

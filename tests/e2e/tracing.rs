//! Message tracing end to end: brokers and the push consumer emit trace events, the tracer indexes
//! them, and lookups return each message's timeline; a killed tracer loses and doubles nothing, and
//! a master killed right after acknowledging leaves every message its Pub and Store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_client::TransportError;
use meridian_client::{
    ClientConfig, ConnectionPool, ConsumeFrom, ConsumeResult, ConsumerConfig, Message, Producer, ProducerConfig,
    PushConsumer, TransactionCheckView, TransactionListener, TransactionOutcome, TransactionProducer,
    TransactionProducerConfig,
};
use meridian_proto::messages::{MessageData, SendRequest};
use meridian_proto::trace::TRACE_TOPIC;
use meridian_proto::{ErrorCode, RequestCode};
use meridian_tests::{DevNode, GroupCluster, GroupOptions, ServiceProcess, eventually, http_get_json, http_get_text};
use serde_json::Value;

fn step_types(timeline: &Value) -> Vec<String> {
    timeline["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|step| step["type"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumed_message_has_every_step_in_order_with_hosts_groups_and_hops() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("orders", 2).await;
    node.create_group("billing", &["orders"]).await;

    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    let sent_at = Instant::now();
    let sent = producer
        .send(
            Message::new("orders", "order 42")
                .with_key("order-42")
                .with_tag("created"),
        )
        .await
        .unwrap();
    // Send to searchable: the Store event answers a lookup by msgId.
    let path = format!("/api/traces/{}", sent.msg_id);
    assert!(
        eventually(Duration::from_secs(10), || http_get_json(node.http, &path).is_some()).await,
        "the message never became searchable; log:\n{}",
        node.log()
    );
    let searchable = sent_at.elapsed();
    println!("send to searchable: {searchable:?}");
    assert!(
        searchable < Duration::from_secs(3),
        "searchable only after {searchable:?}"
    );

    // The handler fails the first time and succeeds the second, when the message comes back from
    // the group's retry topic one second later (delay level 1).
    let attempts = Arc::new(AtomicU32::new(0));
    let mut config = ConsumerConfig::new("billing", "orders");
    config.consume_from = ConsumeFrom::Earliest;
    config.client_id = "e2e-consumer".into();
    config.retry_delay_level = 1;
    let counter = attempts.clone();
    let consumer = PushConsumer::start(node.route(&pool), config, move |_message| {
        let counter = counter.clone();
        async move {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                ConsumeResult::Retry
            } else {
                ConsumeResult::Success
            }
        }
    })
    .await
    .unwrap();
    let expected = [
        "Pub",
        "Store",
        "Deliver",
        "SubBefore",
        "SubAfter",
        "Retry",
        "DelayFire",
        "Deliver",
        "SubBefore",
        "SubAfter",
    ];
    let timeline = timeline_with(&node, &sent.msg_id, &expected).await;
    consumer.shutdown().await;
    producer.shutdown().await;

    let steps = timeline["steps"].as_array().unwrap();
    let statuses: Vec<&str> = steps.iter().map(|step| step["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["ok", "ok", "ok", "ok", "retry_later", "ok", "ok", "ok", "ok", "ok"]
    );
    for step in steps {
        assert_eq!(step["broker"], "broker-a", "{step}");
    }
    assert_eq!(steps[0]["host"], format!("broker-a ({})", node.broker));
    for step in &steps[2..] {
        assert_eq!(step["group"], "billing", "{step}");
    }
    for step in steps
        .iter()
        .filter(|step| step["type"] == "SubBefore" || step["type"] == "SubAfter")
    {
        assert!(
            step["host"].as_str().unwrap().starts_with("e2e-consumer (127.0.0.1:"),
            "{step}"
        );
    }
    assert_eq!(
        steps[8]["reconsume_count"], 1,
        "the second attempt counts one reconsume"
    );
    let times: Vec<i64> = steps.iter().map(|step| step["timestamp"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
    assert_eq!(timeline["keys"], serde_json::json!(["order-42"]));
    assert_eq!(timeline["tags"], "created");
    let hops = &timeline["hops"];
    assert!(hops["born_to_stored_ms"].as_i64().unwrap() >= 0, "{hops}");
    assert!(
        hops["delivered_to_consumed_ms"].as_i64().unwrap() >= 1000,
        "one retry back-off: {hops}"
    );

    // The same timeline by key and by offset id.
    let page = http_get_json(node.http, "/api/traces?key=order-42").unwrap();
    assert_eq!(page["total"], 1);
    assert_eq!(page["messages"][0]["msg_id"], sent.msg_id.as_str());
    let offset_id = timeline["offset_id"].as_str().unwrap().to_owned();
    let by_offset = http_get_json(node.http, &format!("/api/traces/{offset_id}")).unwrap();
    assert_eq!(by_offset["msg_id"], sent.msg_id.as_str());

    // The CLI prints it; bad lookups say what is wrong.
    let http = node.http.to_string();
    let (ok, stdout, stderr) = node.cli(&["trace", &sent.msg_id, "--tracer", &http], "");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("SubAfter") && stdout.contains("billing") && stdout.contains("hops:"),
        "{stdout}"
    );
    let (ok, _, stderr) = node.cli(&["trace", "nothex", "--tracer", &http], "");
    assert!(!ok && stderr.contains("neither a msgId"), "{stderr}");
    let (ok, _, stderr) = node.cli(
        &[
            "trace", "--key", "order-42", "--from", "2", "--to", "1", "--tracer", &http,
        ],
        "",
    );
    assert!(!ok && stderr.contains("time range is empty"), "{stderr}");

    // Ordinary clients cannot write the trace topic.
    let request = SendRequest {
        topic: TRACE_TOPIC.into(),
        queue_id: 0,
        messages: vec![MessageData {
            flags: 0,
            born_timestamp: 1,
            properties: Bytes::new(),
            body: Bytes::from_static(b"forged"),
            reconsume_count: 0,
        }],
        producer_group: String::new(),
        sdk: Default::default(),
    };
    let refused = pool
        .call_empty(&node.broker_addr(), RequestCode::Send, &request, Duration::from_secs(3))
        .await
        .unwrap_err();
    match refused {
        TransportError::Remote { code, message, .. } => {
            assert_eq!(code, ErrorCode::InvalidArgument);
            assert!(message.contains("is a system topic"), "{message}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    pool.shutdown().await;
    node.stop();
}

/// A transaction listener that ends every transaction the same way.
struct Decide(TransactionOutcome);

impl TransactionListener for Decide {
    async fn execute(&self, _message: &Message) -> TransactionOutcome {
        self.0
    }

    async fn check(&self, _check: &TransactionCheckView) -> TransactionOutcome {
        self.0
    }
}

/// Waits until the timeline of `msg_id` has exactly the steps `expected`, and returns it.
async fn timeline_with(node: &DevNode, msg_id: &str, expected: &[&str]) -> Value {
    let path = format!("/api/traces/{msg_id}");
    let mut timeline = Value::Null;
    let complete = eventually(Duration::from_secs(20), || {
        timeline = http_get_json(node.http, &path).unwrap_or(Value::Null);
        step_types(&timeline) == expected
    })
    .await;
    assert!(complete, "expected steps {expected:?}, got timeline {timeline:#}");
    timeline
}

/// The detours a message can take are steps of its timeline, each naming the topic the message
/// was in and the group it happened for: a delay (DelaySchedule, then DelayFire no earlier than
/// due), retries into the dead-letter topic (Retry, DelayFire, DeadLetter), and a transaction's
/// end (TxCommit before the delivery it allows; TxRollback, then nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_retries_dead_letters_and_transactions_are_steps_of_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("orders", 2).await;
    let (ok, _, stderr) = node.cli(
        &["group", "create", "billing", "--topics", "orders", "--max-retries", "1"],
        "",
    );
    assert!(ok, "{stderr}");
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    let delayed = producer
        .send(
            Message::new("orders", "later")
                .with_key("delayed-1")
                .with_delay_level(1),
        )
        .await
        .unwrap();
    let doomed = producer
        .send(Message::new("orders", "doomed").with_key("doomed-1"))
        .await
        .unwrap();
    let transactions = |outcome| {
        let config = TransactionProducerConfig {
            producer: ProducerConfig {
                group: "checkout".into(),
                ..ProducerConfig::default()
            },
            check_poll_interval: Duration::from_secs(3600),
            check_topics: vec!["orders".into()],
        };
        TransactionProducer::new(node.route(&pool), config, Decide(outcome)).unwrap()
    };
    let committer = transactions(TransactionOutcome::Commit);
    let committed = committer
        .send(Message::new("orders", "paid").with_key("tx-1"))
        .await
        .unwrap();
    assert!(committed.end_error.is_none(), "{:?}", committed.end_error);
    let rollbacker = transactions(TransactionOutcome::Rollback);
    let rolled_back = rollbacker
        .send(Message::new("orders", "cancelled").with_key("tx-2"))
        .await
        .unwrap();
    assert!(rolled_back.end_error.is_none(), "{:?}", rolled_back.end_error);

    // Every message succeeds but "doomed", which fails each time, one second apart.
    let mut config = ConsumerConfig::new("billing", "orders");
    config.consume_from = ConsumeFrom::Earliest;
    config.client_id = "e2e-consumer".into();
    config.retry_delay_level = 1;
    let consumer = PushConsumer::start(node.route(&pool), config, |message| {
        let failed = &message.body[..] == b"doomed";
        async move {
            if failed {
                ConsumeResult::Retry
            } else {
                ConsumeResult::Success
            }
        }
    })
    .await
    .unwrap();

    let consumed = ["Deliver", "SubBefore", "SubAfter"];
    let timeline = timeline_with(
        &node,
        &delayed.msg_id,
        &[&["Pub", "Store", "DelaySchedule", "DelayFire"][..], &consumed].concat(),
    )
    .await;
    let steps = timeline["steps"].as_array().unwrap();
    assert_eq!(timeline["topic"], "orders");
    assert_eq!(
        steps[1]["topic"], "MERIDIAN_DELAY",
        "it waits in a delay slot: {}",
        steps[1]
    );
    let due = steps[2]["deliver_at"].as_i64().unwrap();
    assert!(
        due >= steps[0]["timestamp"].as_i64().unwrap() + 1000,
        "level 1 is 1 s: {timeline:#}"
    );
    assert_eq!(steps[3]["topic"], "orders");
    assert_eq!(steps[3]["deliver_at"], due);
    assert!(
        steps[3]["timestamp"].as_i64().unwrap() >= due,
        "never early: {timeline:#}"
    );

    let attempt = ["Deliver", "SubBefore", "SubAfter"];
    let timeline = timeline_with(
        &node,
        &doomed.msg_id,
        &[
            &["Pub", "Store"][..],
            &attempt,
            &["Retry", "DelayFire"],
            &attempt,
            &["DeadLetter"],
        ]
        .concat(),
    )
    .await;
    let steps = timeline["steps"].as_array().unwrap();
    let retry = &steps[5];
    assert_eq!(
        (retry["group"].as_str(), retry["status"].as_str()),
        (Some("billing"), Some("ok"))
    );
    // Level 1 is one second from when the broker took the send-back: after the failed attempt
    // ended (its SubAfter) and no later than the retry copy was stored (the Retry step's time).
    let deliver_at = retry["deliver_at"].as_i64().unwrap();
    let failed_at = steps[4]["timestamp"].as_i64().unwrap();
    let stored_at = retry["timestamp"].as_i64().unwrap();
    assert_eq!(steps[4]["type"], "SubAfter", "{timeline:#}");
    assert!(
        (failed_at + 1000..=stored_at + 1000).contains(&deliver_at),
        "due 1 s after the send-back: {timeline:#}"
    );
    assert_eq!(
        steps[6]["topic"], "%RETRY%billing",
        "the retry comes back through the group's retry topic"
    );
    assert_eq!(steps[7]["topic"], "%RETRY%billing");
    assert_eq!(steps[7]["reconsume_count"], 1);
    let dead = &steps[10];
    assert_eq!(dead["topic"], "%DLQ%billing");
    assert_eq!(dead["group"], "billing");
    assert_eq!(dead["status"], "failed");
    assert!(dead["error"].as_str().unwrap().contains("max_retries of 1"), "{dead}");

    let timeline = timeline_with(
        &node,
        &committed.send.msg_id,
        &[&["Pub", "Store", "TxCommit"][..], &consumed].concat(),
    )
    .await;
    let steps = timeline["steps"].as_array().unwrap();
    assert_eq!(steps[1]["topic"], "MERIDIAN_HALF", "a half message first: {}", steps[1]);
    assert_eq!(
        (steps[2]["topic"].as_str(), steps[2]["group"].as_str()),
        (Some("orders"), Some("checkout"))
    );
    let timeline = timeline_with(&node, &rolled_back.send.msg_id, &["Pub", "Store", "TxRollback"]).await;
    assert_eq!(timeline["steps"][2]["group"], "checkout");
    // The quiet period is what is tested: still nothing after the rollback 500 ms later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let timeline = http_get_json(node.http, &format!("/api/traces/{}", rolled_back.send.msg_id)).unwrap();
    assert_eq!(step_types(&timeline), ["Pub", "Store", "TxRollback"]);

    // The broker counts how transactions ended.
    let metrics = http_get_text(node.http, "/metrics").unwrap();
    for outcome in ["commit", "rollback"] {
        let line = format!("meridian_broker_transactions_total{{outcome=\"{outcome}\"}} 1");
        assert!(metrics.lines().any(|found| found == line), "no {line:?} in\n{metrics}");
    }

    // The CLI shows where each step happened and when a delay is due.
    let http = node.http.to_string();
    let (ok, stdout, stderr) = node.cli(&["trace", &delayed.msg_id, "--tracer", &http], "");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("DelaySchedule") && stdout.contains("MERIDIAN_DELAY queue") && stdout.contains(" due "),
        "{stdout}"
    );

    consumer.shutdown().await;
    committer.shutdown().await;
    rollbacker.shutdown().await;
    producer.shutdown().await;
    pool.shutdown().await;
    node.stop();
}

fn start_tracer(config: &std::path::Path, log_dir: &std::path::Path) -> ServiceProcess {
    let args = ["tracer", "--config"].map(std::ffi::OsStr::new);
    let mut args = args.to_vec();
    args.push(config.as_os_str());
    ServiceProcess::start(&args, log_dir, |line| line.trim_start().starts_with("http "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracer_killed_while_producing_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(&dir.path().join("node"), &[]);
    node.create_topic("payments", 4).await;
    let tracer_dir = dir.path().join("tracer");
    let config = dir.path().join("tracer.toml");
    std::fs::write(
        &config,
        format!(
            "nameservers = [\"{}\"]\ngroup = \"MERIDIAN_TRACER-e2e\"\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:0\"\ncommit_interval_ms = 200\nwriter_heap_bytes = 16000000\n",
            node.nameserver,
            tracer_dir.display()
        ),
    )
    .unwrap();
    let tracer = start_tracer(&config, &tracer_dir);

    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    // kill -9 the tracer 1.2 s into producing, restart it 0.8 s later (the fault's timing, not a
    // condition).
    let restart = {
        let (config, tracer_dir) = (config.clone(), tracer_dir.clone());
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(1200));
            tracer.kill9();
            std::thread::sleep(Duration::from_millis(800));
            start_tracer(&config, &tracer_dir)
        })
    };
    let mut ids = Vec::new();
    for index in 0..600 {
        let message = Message::new("payments", format!("payment {index}")).with_key(format!("pay-{index}"));
        ids.push(producer.send(message).await.unwrap().msg_id);
        // Pacing, not a condition: production spans the tracer's kill and restart.
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    let tracer = restart.await.unwrap();
    let http = tracer.address("http").unwrap();

    // Every message: exactly its Pub and its Store, once.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let complete = eventually(Duration::from_secs(20), || {
        for id in &ids {
            if counts.get(id) == Some(&2) {
                continue;
            }
            let steps =
                http_get_json(http, &format!("/api/traces/{id}")).map_or(0, |timeline| step_types(&timeline).len());
            counts.insert(id.clone(), steps);
        }
        counts.values().all(|steps| *steps == 2)
    })
    .await;
    let wrong: Vec<_> = counts.iter().filter(|(_, steps)| **steps != 2).take(5).collect();
    assert!(
        complete,
        "messages without exactly Pub and Store: {wrong:?}; tracer log:\n{}",
        tracer.log()
    );
    // And the index holds nothing twice: a key finds its one message.
    let page = http_get_json(http, "/api/traces?key=pay-599").unwrap();
    assert_eq!(page["total"], 1);
    producer.shutdown().await;
    pool.shutdown().await;
    tracer.stop();
    node.stop();
}

/// The number of steps of each type in a timeline.
fn step_counts(timeline: &Value) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for kind in step_types(timeline) {
        *counts.entry(kind).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_right_after_acknowledging_leaves_every_message_its_pub_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = GroupCluster::prepare(dir.path(), GroupOptions::default());
    // Trace events wait 3 s in the master's buffer: the kill below finds the last sends' events
    // there, never written, and the new master must derive them from its log.
    for index in 0..3 {
        let config = dir.path().join(format!("broker-{index}.toml"));
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("\n[trace]\nflush_interval_ms = 3000\n");
        std::fs::write(&config, text).unwrap();
    }
    cluster.launch();
    let (ok, _, stderr) = cluster.cli(&["topic", "create", "orders", "--queues", "4", "--on", "broker-a"]);
    assert!(ok, "{stderr}");

    let tracer_dir = dir.path().join("tracer");
    let config = dir.path().join("tracer.toml");
    std::fs::write(
        &config,
        format!(
            "nameservers = [\"{}\"]\ngroup = \"MERIDIAN_TRACER-e2e\"\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:0\"\ncommit_interval_ms = 200\nwriter_heap_bytes = 16000000\n",
            cluster.nameserver_addr,
            tracer_dir.display()
        ),
    )
    .unwrap();
    let tracer = start_tracer(&config, &tracer_dir);
    let http = tracer.address("http").unwrap();

    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(cluster.route(&pool), ProducerConfig::default());
    let mut ids = Vec::new();
    for index in 0..30 {
        let message = Message::new("orders", format!("order {index}")).with_key(format!("order-{index}"));
        ids.push(producer.send(message).await.unwrap().msg_id);
    }
    // kill -9 at once: the quorum acknowledged every message, its trace events were not written.
    cluster.kill9(0);
    let untraced_at_kill = ids
        .iter()
        .filter(|id| http_get_json(http, &format!("/api/traces/{id}")).is_none())
        .count();
    let promoted = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(index) = [1, 2]
                .into_iter()
                .find(|index| cluster.role(*index).is_some_and(|(role, _)| role == "master"))
            {
                cluster.wait_role(index, "master");
                break index;
            }
            assert!(Instant::now() < deadline, "no new master");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // Every acknowledged message: its Pub and its Store, once each.
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let complete = eventually(Duration::from_secs(30), || {
        for id in &ids {
            let counts = counts.entry(id.clone()).or_default();
            if counts.get("Pub") == Some(&1) && counts.get("Store") == Some(&1) {
                continue;
            }
            *counts = http_get_json(http, &format!("/api/traces/{id}"))
                .map(|timeline| step_counts(&timeline))
                .unwrap_or_default();
        }
        counts
            .values()
            .all(|steps| steps.get("Pub") == Some(&1) && steps.get("Store") == Some(&1))
    })
    .await;
    let wrong: Vec<_> = counts
        .iter()
        .filter(|(_, steps)| steps.get("Pub") != Some(&1) || steps.get("Store") != Some(&1))
        .take(5)
        .collect();
    let new_master = cluster.members[promoted].process.as_ref().unwrap().log();
    assert!(
        complete,
        "{} of {} acknowledged messages without exactly one Pub and one Store ({untraced_at_kill} untraced at the kill), e.g. {wrong:?}; new master's log:\n{new_master}\ntracer log:\n{}",
        counts.len(),
        ids.len(),
        tracer.log()
    );
    assert!(
        new_master.contains("trace recovery derived the pub events"),
        "the new master did not recover: {new_master}"
    );
    println!("{untraced_at_kill} of {} messages had no trace at the kill", ids.len());
    producer.shutdown().await;
    pool.shutdown().await;
    tracer.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_broker_killed_right_after_acknowledging_traces_every_message_after_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("orders", 2).await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    let mut ids = Vec::new();
    for index in 0..20 {
        let message = Message::new("orders", format!("order {index}")).with_key(format!("order-{index}"));
        ids.push(producer.send(message).await.unwrap().msg_id);
    }
    producer.shutdown().await;
    pool.shutdown().await;
    // kill -9 within the flush interval of the last acknowledgement, then start again.
    let node = node.crash_restart(&[]);
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let complete = eventually(Duration::from_secs(20), || {
        for id in &ids {
            let counts = counts.entry(id.clone()).or_default();
            if counts.get("Pub") == Some(&1) && counts.get("Store") == Some(&1) {
                continue;
            }
            *counts = http_get_json(node.http, &format!("/api/traces/{id}"))
                .map(|timeline| step_counts(&timeline))
                .unwrap_or_default();
        }
        counts
            .values()
            .all(|steps| steps.get("Pub") == Some(&1) && steps.get("Store") == Some(&1))
    })
    .await;
    let wrong: Vec<_> = counts
        .iter()
        .filter(|(_, steps)| steps.get("Pub") != Some(&1) || steps.get("Store") != Some(&1))
        .take(5)
        .collect();
    assert!(
        complete,
        "messages without exactly one Pub and one Store after the restart, e.g. {wrong:?}; log:\n{}",
        node.log()
    );
    node.stop();
}

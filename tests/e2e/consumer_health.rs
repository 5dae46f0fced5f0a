//! Consumer health alerts on a `meridian dev` node, each condition created for real: a consumer
//! process killed with `kill -9` (offline), a consumer whose handler hangs so it stops pulling on
//! with messages waiting (unresponsive), and two members of one group with different tag filters
//! (subscriptions differ). Each alert reaches the webhook receiver of `alerts.rs` once when it
//! fires, with the group's owner, the client id, host and data center, and once when it resolves.
//! A producer of 20 KB messages is listed by the broker with its send p50/p99 and a hint to
//! compress, and fires `large_messages` with the topic's owner until it sends small ones again.
//! A push consumer whose handler takes ~20 ms is listed with that consume p50.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_client::{
    ClientConfig, ConnectionPool, ConsumeResult, ConsumerConfig, Message, Producer, ProducerConfig, PushConsumer,
};
use meridian_tests::{DevNode, eventually};

use crate::alerts::webhook_receiver;

type Received = Arc<Mutex<Vec<serde_json::Value>>>;

/// A dev node evaluating the consumer rules every 200 ms, with `topic` and `group` (owned by
/// `owner`) created.
async fn node_with_rules(dir: &std::path::Path, url: &str, topic: &str, group: &str, owner: &str) -> DevNode {
    let rules = dir.join("alerts.toml");
    std::fs::write(
        &rules,
        format!(
            r#"evaluation_interval_ms = 200
webhooks = ["{url}"]

[[rules]]
name = "offline"
condition = "consumer_offline"
severity = "warning"

[[rules]]
name = "stuck"
condition = "consumer_unresponsive"
threshold_ms = 2000
severity = "critical"

[[rules]]
name = "mixed"
condition = "subscriptions_differ"
severity = "warning"

[[rules]]
name = "large"
condition = "large_messages"
window_ms = 2000
severity = "info"
"#
        ),
    )
    .unwrap();
    let node = DevNode::start(&dir.join("node"), &["--alerts", rules.to_str().unwrap()]);
    node.create_topic(topic, 1).await;
    let (ok, _, stderr) = node.cli(&["group", "create", group, "--topics", topic, "--owner", owner], "");
    assert!(ok, "{stderr}");
    node
}

/// The webhook events of one alert key in one state.
fn changes(received: &Received, key: &str, status: &str) -> Vec<serde_json::Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|event| event["key"] == key && event["status"] == status)
        .cloned()
        .collect()
}

async fn wait_for_change(received: &Received, node: &DevNode, key: &str, status: &str) -> serde_json::Value {
    assert!(
        eventually(Duration::from_secs(30), || !changes(received, key, status).is_empty()).await,
        "no {status} webhook for {key}; received {:?}; node log:\n{}",
        received.lock().unwrap(),
        node.log()
    );
    changes(received, key, status).remove(0)
}

/// Several evaluation rounds later, still exactly one webhook per state change.
async fn assert_once_per_change(received: &Received, key: &str) {
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(changes(received, key, "firing").len(), 1, "{key}");
    assert_eq!(changes(received, key, "resolved").len(), 1, "{key}");
}

fn consumer_process(node: &DevNode, topic: &str, group: &str, client_id: &str) -> Child {
    Command::new(meridian_tests::meridian_bin())
        .args([
            "consume",
            "--topic",
            topic,
            "--group",
            group,
            "--client-id",
            client_id,
            "--idc",
            "dc-east",
            "--timeout",
            "120",
        ])
        .env("MERIDIAN_NAMESERVER", node.nameserver.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting meridian consume")
}

async fn wait_listed(node: &DevNode, client_id: &str) {
    assert!(
        eventually(Duration::from_secs(20), || {
            meridian_tests::http_get_json(node.http, "/api/broker/clients").is_some_and(|report| {
                report["clients"]
                    .as_array()
                    .is_some_and(|clients| clients.iter().any(|client| client["client_id"] == client_id))
            })
        })
        .await,
        "{client_id} never joined; node log:\n{}",
        node.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_fires_offline_with_its_host_and_data_center_and_resolves_when_it_returns() {
    let (url, received) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_rules(dir.path(), &url, "parcels", "couriers", "logistics-team").await;

    let mut consumer = consumer_process(&node, "parcels", "couriers", "courier-7");
    wait_listed(&node, "courier-7").await;
    consumer.kill().expect("kill -9");
    consumer.wait().expect("reaping");

    let key = "offline/group=couriers client=courier-7";
    let fired = wait_for_change(&received, &node, key, "firing").await;
    assert_eq!(fired["owner"], "logistics-team", "{fired}");
    let message = fired["message"].as_str().unwrap();
    for expected in [
        "courier-7",
        "couriers",
        "host 127.0.0.1",
        "data center dc-east",
        "connection closed",
    ] {
        assert!(message.contains(expected), "{expected:?} missing: {message}");
    }
    let report = meridian_tests::http_get_json(node.http, "/api/broker/clients").unwrap();
    assert_eq!(report["departed"][0]["client_id"], "courier-7", "{report}");
    let (ok, stdout, stderr) = node.cli(&["client", "list", "--http", &node.http.to_string()], "");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("DEPARTED CONSUMER") && stdout.contains("courier-7"),
        "{stdout}"
    );

    // The same client id comes back: resolved.
    let mut back = consumer_process(&node, "parcels", "couriers", "courier-7");
    let resolved = wait_for_change(&received, &node, key, "resolved").await;
    assert_eq!(resolved["owner"], "logistics-team", "{resolved}");
    assert_once_per_change(&received, key).await;

    back.kill().expect("kill -9");
    back.wait().expect("reaping");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_pulling_with_a_backlog_fires_unresponsive_and_resolves_once_it_consumes() {
    let (url, received) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_rules(dir.path(), &url, "invoices", "bookkeepers", "finance-team").await;
    let pool = ConnectionPool::new(ClientConfig::default());
    // The handler hangs (a deadlock in the application) until the test releases it.
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let config = ConsumerConfig {
        client_id: "bookkeeper-1".into(),
        long_poll: Duration::from_millis(500),
        ..ConsumerConfig::new("bookkeepers", "invoices")
    };
    let consumer = PushConsumer::start(node.route(&pool), config, move |_message| {
        let mut release_rx = release_rx.clone();
        async move {
            let _ = release_rx.wait_for(|released| *released).await;
            ConsumeResult::Success
        }
    })
    .await
    .unwrap();
    wait_listed(&node, "bookkeeper-1").await;
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    for index in 0..10 {
        producer
            .send(Message::new("invoices", format!("invoice-{index}")))
            .await
            .unwrap();
    }

    let key = "stuck/group=bookkeepers client=bookkeeper-1";
    let fired = wait_for_change(&received, &node, key, "firing").await;
    assert_eq!(fired["owner"], "finance-team", "{fired}");
    assert_eq!(fired["severity"], "critical", "{fired}");
    let message = fired["message"].as_str().unwrap();
    for expected in [
        "bookkeeper-1",
        "bookkeepers",
        "host 127.0.0.1",
        "data center",
        "topic invoices",
        "10 messages wait",
    ] {
        assert!(message.contains(expected), "{expected:?} missing: {message}");
    }
    // Still heartbeating: not offline.
    assert!(changes(&received, "offline/group=bookkeepers client=bookkeeper-1", "firing").is_empty());

    release_tx.send(true).unwrap();
    wait_for_change(&received, &node, key, "resolved").await;
    assert_once_per_change(&received, key).await;

    consumer.shutdown().await;
    producer.shutdown().await;
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_different_tag_filters_fire_subscriptions_differ_and_resolve_when_one_leaves() {
    let (url, received) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_rules(dir.path(), &url, "shipments", "dispatchers", "ops-team").await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let start = |client_id: &str, tags: &str| {
        let config = ConsumerConfig {
            client_id: client_id.into(),
            subscription: tags.into(),
            ..ConsumerConfig::new("dispatchers", "shipments")
        };
        PushConsumer::start(node.route(&pool), config, |_message| async { ConsumeResult::Success })
    };
    let express = start("dispatcher-express", "express").await.unwrap();
    let freight = start("dispatcher-freight", "freight || bulk").await.unwrap();

    let key = "mixed/group=dispatchers";
    let fired = wait_for_change(&received, &node, key, "firing").await;
    assert_eq!(fired["owner"], "ops-team", "{fired}");
    let message = fired["message"].as_str().unwrap();
    for expected in [
        "dispatcher-express (host 127.0.0.1",
        "\"express\"",
        "dispatcher-freight (host 127.0.0.1",
        "\"freight || bulk\"",
    ] {
        assert!(message.contains(expected), "{expected:?} missing: {message}");
    }

    // One leaves cleanly: the group agrees again, and a clean leave is not offline.
    freight.shutdown().await;
    wait_for_change(&received, &node, key, "resolved").await;
    assert_once_per_change(&received, key).await;
    assert!(
        changes(
            &received,
            "offline/group=dispatchers client=dispatcher-freight",
            "firing"
        )
        .is_empty()
    );

    express.shutdown().await;
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_of_20_kb_messages_is_flagged_with_a_hint_and_fires_large_messages_with_the_topic_owner() {
    let (url, received) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_rules(dir.path(), &url, "thumbnails", "renderers", "render-team").await;
    let (ok, _, stderr) = node.cli(
        &["topic", "create", "videos", "--queues", "1", "--owner", "media-team"],
        "",
    );
    assert!(ok, "{stderr}");
    let pool = ConnectionPool::new(ClientConfig::default());
    let config = ProducerConfig {
        client_id: "uploader-1".into(),
        report_interval: Duration::from_millis(200),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(node.route(&pool), config);
    let frame = vec![b'v'; 20 * 1024];
    for _ in 0..5 {
        producer.send(Message::new("videos", frame.clone())).await.unwrap();
    }

    let key = "large/producer=uploader-1";
    let fired = wait_for_change(&received, &node, key, "firing").await;
    assert_eq!(fired["owner"], "media-team", "{fired}");
    let message = fired["message"].as_str().unwrap();
    for expected in [
        "uploader-1",
        "host 127.0.0.1",
        "5 messages over 10240 bytes",
        "largest 20480 bytes",
        "[videos]",
        "compress",
    ] {
        assert!(message.contains(expected), "{expected:?} missing: {message}");
    }
    let report = meridian_tests::http_get_json(node.http, "/api/broker/clients").unwrap();
    let listed = &report["producers"][0];
    assert_eq!(listed["client_id"], "uploader-1", "{report}");
    assert_eq!(listed["large_messages"], 5, "{report}");
    assert!(listed["send_p50_us"].as_u64().unwrap() > 0, "{report}");
    assert!(
        listed["send_p99_us"].as_u64().unwrap() >= listed["send_p50_us"].as_u64().unwrap(),
        "{report}"
    );
    assert!(listed["hint"].as_str().unwrap().contains("compress"), "{report}");
    let (ok, stdout, stderr) = node.cli(&["client", "list", "--http", &node.http.to_string()], "");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("SEND p99") && stdout.contains("uploader-1") && stdout.contains("5 messages over 10240 bytes"),
        "{stdout}"
    );

    // Small messages from now on: once the window passes without a large one, it resolves.
    for index in 0..3 {
        producer
            .send(Message::new("videos", format!("ref-{index}")))
            .await
            .unwrap();
    }
    wait_for_change(&received, &node, key, "resolved").await;
    assert_once_per_change(&received, key).await;

    producer.shutdown().await;
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_handler_takes_20_ms_is_listed_with_that_consume_p50() {
    let (url, _received) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_rules(dir.path(), &url, "reports", "renderers", "report-team").await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let config = ConsumerConfig {
        client_id: "renderer-1".into(),
        heartbeat_interval: Duration::from_millis(200),
        long_poll: Duration::from_millis(500),
        ..ConsumerConfig::new("renderers", "reports")
    };
    let consumer = PushConsumer::start(node.route(&pool), config, |_message| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        ConsumeResult::Success
    })
    .await
    .unwrap();
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    for index in 0..20 {
        producer
            .send(Message::new("reports", format!("report-{index}")))
            .await
            .unwrap();
    }
    let listed = || {
        let report = meridian_tests::http_get_json(node.http, "/api/broker/clients")?;
        report["clients"]
            .as_array()?
            .iter()
            .find(|client| client["client_id"] == "renderer-1")
            .cloned()
    };
    assert!(
        eventually(Duration::from_secs(20), || listed()
            .is_some_and(|client| client["consumed"].as_u64() >= Some(20)))
        .await,
        "the consumer never reported 20 handled messages: {:?}; node log:\n{}",
        listed(),
        node.log()
    );
    let client = listed().unwrap();
    let p50 = client["consume_p50_us"].as_u64().unwrap();
    assert!((10_000..=100_000).contains(&p50), "{client}");
    assert!(client["consume_p99_us"].as_u64().unwrap() >= p50, "{client}");
    let (ok, stdout, stderr) = node.cli(&["client", "list", "--http", &node.http.to_string()], "");
    assert!(ok, "{stderr}");
    let row = stdout
        .lines()
        .find(|line| line.starts_with("renderers") && line.contains("renderer-1") && line.contains("ms"))
        .unwrap_or_else(|| panic!("no consume row for renderer-1: {stdout}"));
    // No more messages arrive, so the CLI sees the same counts as the API did.
    let shown = format!("{:.1}ms", p50 as f64 / 1000.0);
    assert!(
        stdout.contains("CONSUME p50") && row.contains(&shown),
        "{shown}: {stdout}"
    );

    consumer.shutdown().await;
    producer.shutdown().await;
    node.stop();
}

//! Governance on a `meridian dev` node: topics and consumer groups must be requested and approved
//! before use, the refusals say what to do, and approvals take effect without restarting anything.

use std::time::{Duration, Instant};

use meridian_tests::DevNode;

/// Runs a CLI command until it succeeds, up to `within`; returns its stdout, or panics with the
/// last failure.
fn until_ok(node: &DevNode, args: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (ok, stdout, stderr) = node.cli(args, "");
        if ok {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} kept failing for {within:?}: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn topics_and_groups_work_only_once_approved_and_every_decision_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);

    // Unknown topic: the error names it and how to request it.
    let (ok, _, stderr) = node.cli(&["produce", "--topic", "orders", "--body", "x"], "");
    assert!(!ok);
    assert!(
        stderr.contains(
            "topic \"orders\" does not exist: request it with `meridian topic request orders --owner TEAM --queues N`"
        ),
        "{stderr}"
    );
    // No broker-side auto-create either: the broker refuses the admin shortcut of a standalone broker.
    let (ok, stdout, stderr) = node.cli(
        &[
            "topic", "request", "orders", "--owner", "shop", "--queues", "2", "--by", "alice",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("topic orders requested"), "{stdout}");

    // Requested, not approved: refused with its status and who approves.
    let (ok, _, stderr) = node.cli(&["produce", "--topic", "orders", "--body", "x"], "");
    assert!(!ok);
    assert!(
        stderr.contains("topic \"orders\" was requested by alice at ")
            && stderr.contains("is not approved yet: an admin approves it with `meridian topic approve orders`"),
        "{stderr}"
    );

    let (ok, _, stderr) = node.cli(
        &["topic", "approve", "orders", "--by", "bob", "--reason", "owner known"],
        "",
    );
    assert!(ok, "{stderr}");
    // The broker learns the approval on its next heartbeat; no restart.
    let sent = until_ok(
        &node,
        &["produce", "--topic", "orders", "--body", "first"],
        Duration::from_secs(10),
    );
    assert!(meridian_proto::MessageId::parse(sent.trim()).is_ok(), "{sent}");

    // A consumer group: unknown, then requested, then approved.
    let consume = [
        "consume",
        "--topic",
        "orders",
        "--group",
        "billing",
        "--from-beginning",
        "--max",
        "1",
        "--timeout",
        "10",
    ];
    let (ok, _, stderr) = node.cli(&consume, "");
    assert!(!ok);
    assert!(
        stderr.contains("consumer group \"billing\" is not approved"),
        "{stderr}"
    );
    assert!(stderr.contains("meridian group request billing"), "{stderr}");
    let (ok, _, stderr) = node.cli(
        &[
            "group", "request", "billing", "--owner", "shop", "--topics", "orders", "--by", "carol",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = node.cli(&consume, "");
    assert!(!ok, "a requested group is not approved");
    assert!(
        stderr.contains("consumer group \"billing\" is not approved"),
        "{stderr}"
    );
    let (ok, _, stderr) = node.cli(&["group", "approve", "billing", "--by", "bob"], "");
    assert!(ok, "{stderr}");
    let consumed = until_ok(&node, &consume, Duration::from_secs(10));
    assert!(consumed.contains("first"), "{consumed}");

    // A rejected topic: refused with who rejected it and why.
    let (ok, _, stderr) = node.cli(
        &[
            "topic", "request", "spam", "--owner", "growth", "--queues", "1", "--by", "dave",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = node.cli(
        &[
            "topic",
            "reject",
            "spam",
            "--by",
            "bob",
            "--reason",
            "use the marketing topic",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = node.cli(&["produce", "--topic", "spam", "--body", "x"], "");
    assert!(!ok);
    assert!(
        stderr.contains("topic \"spam\" was rejected by bob at ") && stderr.contains("(use the marketing topic)"),
        "{stderr}"
    );
    // Approving it now is refused, and changes nothing.
    let (ok, _, stderr) = node.cli(&["topic", "approve", "spam", "--by", "mallory"], "");
    assert!(!ok);
    assert!(
        stderr.contains("cannot approve topic \"spam\": it was rejected by bob"),
        "{stderr}"
    );

    // Every decision is in the history: who, what, why.
    let (ok, history, stderr) = node.cli(&["topic", "history", "orders"], "");
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(
        lines[0].contains("requested") && lines[0].contains("alice"),
        "{history}"
    );
    assert!(
        lines[1].contains("approved") && lines[1].contains("bob") && lines[1].contains("owner known"),
        "{history}"
    );
    let (ok, history, _) = node.cli(&["topic", "history", "spam"], "");
    assert!(ok && history.lines().count() == 3, "{history}");
    let (ok, listed, _) = node.cli(&["topic", "list", "--status", "approved"], "");
    assert!(ok && listed.contains("orders") && !listed.contains("spam"), "{listed}");
    let (ok, described, _) = node.cli(&["topic", "describe", "orders"], "");
    assert!(ok, "{described}");
    assert!(described.contains("status       approved"), "{described}");
    assert!(
        described.contains("alive"),
        "the route shows the broker alive: {described}"
    );
    node.stop();
}

/// `approve` returns only once the broker applied the decision: a send (and a consume) right
/// after it succeeds, every time; the window in which it used to fail was about half a second.
#[test]
fn sends_and_consumes_right_after_approve_succeed_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    for round in 0..20 {
        let topic = format!("approved-{round}");
        let group = format!("readers-{round}");
        let (ok, _, stderr) = node.cli(&["topic", "request", &topic, "--owner", "shop", "--queues", "1"], "");
        assert!(ok, "{stderr}");
        let (ok, stdout, stderr) = node.cli(&["topic", "approve", &topic], "");
        assert!(ok && stdout.contains("approved"), "{stdout}{stderr}");
        let (ok, stdout, stderr) = node.cli(&["produce", "--topic", &topic, "--body", "right after"], "");
        assert!(ok, "round {round}: produce right after approve failed: {stderr}");
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let (ok, _, stderr) = node.cli(&["group", "request", &group, "--owner", "shop", "--topics", &topic], "");
        assert!(ok, "{stderr}");
        let (ok, _, stderr) = node.cli(&["group", "approve", &group], "");
        assert!(ok, "{stderr}");
        let (ok, stdout, stderr) = node.cli(
            &[
                "consume",
                "--topic",
                &topic,
                "--group",
                &group,
                "--from-beginning",
                "--max",
                "1",
                "--timeout",
                "5",
            ],
            "",
        );
        assert!(
            ok && stdout.contains("right after"),
            "round {round}: consume right after approve: {stdout}{stderr}"
        );
    }
    node.stop();
}

/// Where `USER` is unset (containers), requests and decisions record the OS account's name.
#[test]
fn who_acted_falls_back_to_the_os_account_when_user_is_unset() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    let account = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("running id -un");
    let account = String::from_utf8(account.stdout).unwrap().trim().to_owned();
    assert!(!account.is_empty());
    let output = std::process::Command::new(meridian_tests::meridian_bin())
        .args(["topic", "request", "no-user", "--owner", "shop", "--queues", "1"])
        .env("MERIDIAN_NAMESERVER", node.nameserver.to_string())
        .env_remove("USER")
        .env_remove("MERIDIAN_USER")
        .output()
        .expect("running meridian");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let (ok, history, stderr) = node.cli(&["topic", "history", "no-user"], "");
    assert!(ok, "{stderr}");
    let requested = history
        .lines()
        .find(|line| line.contains("requested"))
        .expect("a request line");
    assert!(requested.contains(&account), "expected {account:?} in {history}");
    node.stop();
}

/// The sum of a counter family on the node's `/metrics` over the samples whose labels contain
/// every one of `labels` (e.g. `topic="hot"`).
fn metric_sum(node: &DevNode, name: &str, labels: &[&str]) -> f64 {
    let text = meridian_tests::http_get_text(node.http, "/metrics").unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with(name) && labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_limit_holds_producers_to_its_rate_and_counts_what_it_throttled() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use meridian_client::{ClientConfig, ConnectionPool, Message, Producer, ProducerConfig};

    const LIMIT: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("hot", 4).await;

    // Invalid limits are refused with the rule and the fix, before anything is sent.
    let (ok, _, stderr) = node.cli(&["topic", "limit", "hot", "--messages", "0"], "");
    assert!(!ok);
    assert!(
        stderr.contains("produce limit 0 msg/s is invalid: give 1 to 10000000 msg/s")
            && stderr.contains("write permission"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = node.cli(&["topic", "limit", "hot", "--messages", &LIMIT.to_string()], "");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("topic hot limited to 200 msg/s"), "{stdout}");

    // Eight producers sending as fast as the limit lets them.
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(
        node.route(&pool),
        ProducerConfig {
            group: "hot-producers".into(),
            ..ProducerConfig::default()
        },
    );
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // A failed send (a throttled one that waited past its deadline) is counted, not panicked on:
    // a panic inside a tracked task would not fail the test.
    let failed = Arc::new(AtomicU64::new(0));
    let tasks = tokio_util::task::TaskTracker::new();
    for _ in 0..8 {
        let (producer, sent, failed, stop) = (producer.clone(), sent.clone(), failed.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match producer.send(Message::new("hot", "x".repeat(100))).await {
                    Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    // Once the broker throttles, the limit is in force and its starting burst is spent: measure
    // from there.
    let throttled = |node: &DevNode| {
        metric_sum(
            node,
            "meridian_broker_throttled_sends_total",
            &["topic=\"hot\"", "producer_group=\"hot-producers\""],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while throttled(&node) == 0.0 {
        assert!(Instant::now() < deadline, "the broker never throttled topic hot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (start_count, started) = (sent.load(Ordering::Relaxed), Instant::now());
    // The measuring window is what is tested: the send rate over 5 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (end_count, elapsed) = (sent.load(Ordering::Relaxed), started.elapsed());
    stop.store(true, Ordering::Relaxed);
    tasks.close();
    tasks.wait().await;
    assert_eq!(failed.load(Ordering::Relaxed), 0, "throttled sends must wait, not fail");
    let rate = (end_count - start_count) as f64 / elapsed.as_secs_f64();
    let expected = f64::from(LIMIT);
    println!(
        "achieved {rate:.1} msg/s against a limit of {LIMIT} msg/s, {} sends throttled",
        throttled(&node)
    );
    assert!(
        (rate - expected).abs() <= expected * 0.10,
        "achieved {rate:.1} msg/s against a limit of {LIMIT} msg/s"
    );
    // Many more sends were refused than the one that proved the limit in force, all counted.
    assert!(throttled(&node) > 10.0, "throttled sends: {}", throttled(&node));
    assert!(metric_sum(&node, "meridian_broker_throttled_messages_total", &["topic=\"hot\""]) >= throttled(&node));

    // Removing the limit lets the same producers through unthrottled.
    let (ok, stdout, stderr) = node.cli(&["topic", "limit", "hot", "--remove"], "");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("topic hot has no produce limit"), "{stdout}");
    producer.shutdown().await;
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_what_was_produced_minus_what_was_consumed_in_messages_and_in_time() {
    use meridian_client::{ClientConfig, ConnectionPool, Message, Producer, ProducerConfig, PullConsumer};

    const PRODUCED: u64 = 20;
    const CONSUMED: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("ledger", 1).await;
    node.create_group("auditors", &["ledger"]).await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    for index in 0..PRODUCED {
        producer
            .send(Message::new("ledger", format!("entry-{index}")))
            .await
            .unwrap();
    }
    let consumer = PullConsumer::new(node.route(&pool), ClientConfig::default(), "auditors");
    let pulled = consumer
        .pull("ledger", 0, 0, CONSUMED as u32, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(pulled.messages.len() as u64, CONSUMED);
    let oldest_unconsumed_store_ms = {
        let rest = consumer.pull("ledger", 0, CONSUMED, 1, Duration::ZERO).await.unwrap();
        rest.messages[0].store_timestamp
    };
    consumer.commit_offset("ledger", 0, pulled.next_offset).await.unwrap();
    // Time passing is what is measured: the oldest unconsumed message gets a measurable age.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let report = meridian_tests::http_get_json(node.http, "/api/broker/lag").expect("lag API answers");
    let group = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|group| group["group"] == "auditors" && group["topic"] == "ledger")
        .unwrap_or_else(|| panic!("no lag of auditors on ledger in {report}"))
        .clone();
    assert_eq!(group["lag_messages"], PRODUCED - CONSUMED, "{group}");
    assert_eq!(group["status"], "OK", "{group}");
    let queue = &group["queues"][0];
    assert_eq!(queue["committed_offset"], CONSUMED);
    assert_eq!(queue["max_offset"], PRODUCED);
    assert_eq!(
        queue["oldest_unconsumed_store_ms"], oldest_unconsumed_store_ms,
        "{queue}"
    );
    assert!(queue["lag_ms"].as_u64().unwrap() >= 300, "{queue}");

    // The same figures on /metrics, under Meridian's names and rocketmq-exporter's.
    let metrics = meridian_tests::http_get_text(node.http, "/metrics").unwrap();
    let sample = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(prefix) && line.contains("group=\"auditors\""))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} sample of auditors in:\n{metrics}"))
    };
    assert_eq!(
        sample("meridian_broker_consumer_lag_messages{"),
        (PRODUCED - CONSUMED) as f64
    );
    assert_eq!(sample("rocketmq_group_diff{"), (PRODUCED - CONSUMED) as f64);
    assert!(sample("meridian_broker_consumer_lag_seconds{") >= 0.3);
    assert!(sample("rocketmq_group_get_latency_by_storetime{") >= 300.0);

    // Consuming the rest brings both lags to zero.
    consumer.commit_offset("ledger", 0, PRODUCED).await.unwrap();
    let report = meridian_tests::http_get_json(node.http, "/api/broker/lag").unwrap();
    let group = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|group| group["group"] == "auditors")
        .unwrap()
        .clone();
    assert_eq!(group["lag_messages"], 0, "{group}");
    assert_eq!(group["lag_ms"], 0, "{group}");
    consumer.shutdown().await;
    producer.shutdown().await;
    node.stop();
}

/// A send of one message to `orders` straight to the node's broker, reporting SDK `sdk`.
async fn send_as(
    node: &DevNode,
    pool: &meridian_client::ConnectionPool,
    sdk: &'static str,
) -> Result<(), meridian_proto::transport::TransportError> {
    use meridian_proto::messages::{MessageData, SendRequest, SendResponse};
    let request = SendRequest {
        topic: "orders".into(),
        queue_id: 0,
        messages: vec![MessageData {
            flags: 0,
            born_timestamp: 0,
            properties: bytes::Bytes::new(),
            body: bytes::Bytes::from_static(b"from an old client"),
            reconsume_count: 0,
        }],
        producer_group: String::new(),
        sdk: bytes::Bytes::from_static(sdk.as_bytes()),
    };
    let _: SendResponse = pool
        .call(
            &node.broker_addr(),
            meridian_proto::RequestCode::Send,
            &request,
            Duration::from_secs(5),
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_sdk_versions_are_flagged_in_the_client_list_and_refused_when_the_policy_says_so() {
    use meridian_client::{ClientConfig, ConnectionPool, Message, Producer, ProducerConfig};
    use meridian_proto::messages::ConsumerHeartbeat;

    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("orders", 2).await;
    node.create_group("billing", &["orders"]).await;
    let http = node.http.to_string();
    let client_list = || {
        let (ok, stdout, stderr) = node.cli(&["client", "list", "--http", &http], "");
        assert!(ok, "{stderr}");
        stdout
    };

    // An unparsable minimum is refused with the rule.
    let (ok, _, stderr) = node.cli(&["client", "policy", "--min-version", "one"], "");
    assert!(!ok);
    assert!(
        stderr.contains("SDK version \"one\" is invalid: write it as MAJOR.MINOR.PATCH"),
        "{stderr}"
    );

    // Flag only: clients older than this SDK's own version are listed, not refused.
    let current = meridian_proto::SDK_VERSION;
    let (ok, stdout, stderr) = node.cli(&["client", "policy", "--min-version", current], "");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("minimum          {current}")) && stdout.contains("not refused"),
        "{stdout}"
    );

    let pool = ConnectionPool::new(ClientConfig::default());
    let old_consumer = ConsumerHeartbeat {
        group: "billing".into(),
        client_id: "old-consumer".into(),
        topics: vec!["orders".into()],
        sdk_version: "0.0.3".into(),
        sdk_language: "rust".into(),
        ..ConsumerHeartbeat::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        pool.call_empty(
            &node.broker_addr(),
            meridian_proto::RequestCode::ConsumerHeartbeat,
            &old_consumer,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        send_as(&node, &pool, "rust/0.0.3").await.unwrap();
        let listed = client_list();
        if listed.matches("FLAGGED").count() == 2 {
            assert!(listed.contains("SDK POLICY (flags offenders)"), "{listed}");
            let consumer = listed.lines().find(|line| line.contains("old-consumer")).unwrap();
            assert!(
                consumer.contains("rust/0.0.3")
                    && consumer.contains(&format!("client SDK rust/0.0.3 is older than the minimum {current}")),
                "{listed}"
            );
            assert!(
                listed
                    .lines()
                    .any(|line| line.starts_with("producer") && line.contains("rust/0.0.3")),
                "{listed}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old clients were never flagged:\n{listed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Refuse: the old producer's send and the old consumer's heartbeat fail with the version and
    // the policy; Meridian's own SDK, at the minimum, keeps working.
    let (ok, stdout, stderr) = node.cli(&["client", "policy", "--min-version", current, "--refuse"], "");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("offenders        refused"), "{stdout}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        if let Err(error) = send_as(&node, &pool, "rust/0.0.3").await {
            break error.to_string();
        }
        assert!(Instant::now() < deadline, "the old producer was never refused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        refusal.contains(&format!(
            "client SDK rust/0.0.3 is older than the minimum {current} of the cluster's SDK policy"
        )),
        "{refusal}"
    );
    let heartbeat = pool
        .call_empty(
            &node.broker_addr(),
            meridian_proto::RequestCode::ConsumerHeartbeat,
            &old_consumer,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(heartbeat.to_string().contains("client SDK rust/0.0.3"), "{heartbeat}");
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    producer.send(Message::new("orders", "from this SDK")).await.unwrap();
    producer.shutdown().await;
    node.stop();
}

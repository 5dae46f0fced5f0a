//! Alerts on a `meridian dev` node, created for real: a consumer group that falls behind fires an
//! alert carrying the group's owner, delivered once to a webhook (a tiny HTTP server in the test)
//! and listed by `GET /api/alerts` and `meridian alerts`; consuming resolves it, delivered once.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_tests::{DevNode, eventually};

/// An HTTP server on 127.0.0.1:0 that answers 200 to every POST and keeps the JSON bodies.
pub(crate) fn webhook_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/meridian", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    // Lives as long as the test process: the listener thread ends with it.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            // Read the head, then as many body bytes as Content-Length says.
            let body = loop {
                let Ok(read) = stream.read(&mut buffer) else { break None };
                if read == 0 {
                    break None;
                }
                request.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("Content-Length: "))
                        .and_then(|value| value.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        assert!(head.starts_with("POST /hooks/meridian "), "{head}");
                        break Some(body[..length].to_owned());
                    }
                }
            };
            if let Some(body) = body {
                sink.lock().unwrap().push(serde_json::from_str(&body).unwrap());
            }
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_behind_fires_an_alert_with_its_owner_once_and_resolves_once_it_consumes() {
    use meridian_client::{ClientConfig, ConnectionPool, Message, Producer, ProducerConfig, PullConsumer};

    let (url, received) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("alerts.toml");
    std::fs::write(
        &rules,
        format!(
            r#"evaluation_interval_ms = 200
webhooks = ["{url}"]

[[rules]]
name = "backlog"
condition = "group_lag_messages"
threshold = 5
severity = "warning"
"#
        ),
    )
    .unwrap();
    let node = DevNode::start(&dir.path().join("node"), &["--alerts", rules.to_str().unwrap()]);
    node.create_topic("ledger", 1).await;
    let (ok, _, stderr) = node.cli(
        &[
            "group",
            "create",
            "auditors",
            "--topics",
            "ledger",
            "--owner",
            "payments-team",
        ],
        "",
    );
    assert!(ok, "{stderr}");

    // 20 produced, 2 consumed: 18 behind, over the threshold of 5.
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    for index in 0..20 {
        producer
            .send(Message::new("ledger", format!("entry-{index}")))
            .await
            .unwrap();
    }
    let consumer = PullConsumer::new(node.route(&pool), ClientConfig::default(), "auditors");
    consumer.commit_offset("ledger", 0, 2).await.unwrap();

    let key = "backlog/group=auditors topic=ledger";
    let changes = |status: &str| -> Vec<serde_json::Value> {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|event| event["key"] == key && event["status"] == status)
            .cloned()
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(20), || !changes("firing").is_empty()).await,
        "no firing webhook; node log:\n{}",
        node.log()
    );
    let fired = &changes("firing")[0];
    assert_eq!(fired["owner"], "payments-team", "{fired}");
    assert_eq!(fired["severity"], "warning");
    assert!(
        fired["message"].as_str().unwrap().contains("18 messages behind"),
        "{fired}"
    );

    // The API and the CLI list it, by owner.
    let listed = meridian_tests::http_get_json(node.http, "/api/alerts?owner=payments-team").unwrap();
    assert_eq!(listed["firing"], 1, "{listed}");
    assert_eq!(listed["alerts"][0]["key"], key, "{listed}");
    let (ok, stdout, stderr) = node.cli(&["alerts", "--http", &node.http.to_string()], "");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("firing") && stdout.contains("backlog") && stdout.contains("payments-team"),
        "{stdout}"
    );

    // Consuming everything resolves it.
    consumer.commit_offset("ledger", 0, 20).await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || !changes("resolved").is_empty()).await,
        "no resolved webhook; node log:\n{}",
        node.log()
    );
    let listed = meridian_tests::http_get_json(node.http, "/api/alerts").unwrap();
    assert_eq!(listed["firing"], 0, "{listed}");
    assert_eq!(listed["alerts"][0]["history"].as_array().unwrap().len(), 2, "{listed}");

    // The quiet period is what is tested: several evaluation rounds later, still one webhook per
    // state change.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(changes("firing").len(), 1);
    assert_eq!(changes("resolved").len(), 1);

    consumer.shutdown().await;
    producer.shutdown().await;
    node.stop();
}

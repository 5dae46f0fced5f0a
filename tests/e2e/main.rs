//! End-to-end tests: real `meridian` processes on loopback, driven by the real client SDK and CLI.

mod alerts;
mod archive;
mod archive_duckdb;
mod cli;
mod cluster;
mod compat;
mod console;
mod consumer_health;
mod consumers;
mod continuity;
mod durability;
mod faults;
mod first_hour;
mod governance;
mod inspect;
mod messaging;
mod nameserver;
mod near_by;
mod readme;
mod rebalance;
mod replication;
mod security;
mod tracing;
mod transactions;

use std::time::Duration;

use meridian_client::{ClientConfig, ConnectionPool, PullConsumer};
use meridian_proto::record::StoredMessage;
use meridian_tests::DevNode;

/// Every message of `topic` on `node`, queue by queue, from each queue's first offset, read by
/// the consumer group `e2e-reader-TOPIC` (created on first use).
pub async fn read_all(node: &DevNode, topic: &str) -> Vec<StoredMessage> {
    let group = format!("e2e-reader-{topic}");
    let (exists, _, _) = node.cli(&["group", "describe", &group], "");
    if !exists {
        node.create_group(&group, &[topic]).await;
    }
    let pool = ConnectionPool::new(ClientConfig::default());
    let messages = read_through(node.route(&pool), &group, topic).await;
    pool.shutdown().await;
    messages
}

/// [`read_through`] again until what it reads holds every msgId of `acked`, for up to 20 s: an
/// acknowledgement can reach the producer a moment before the master's dispatcher indexes the
/// message for consumers, so a read right after the last acknowledgement may miss the newest.
/// The last read; the caller's assertion names what is still missing.
pub async fn read_holding(
    route: std::sync::Arc<dyn meridian_client::RouteSource>,
    group: &str,
    topic: &str,
    acked: &std::collections::HashSet<String>,
) -> Vec<StoredMessage> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let messages = read_through(route.clone(), group, topic).await;
        let stored: std::collections::HashSet<&str> = messages.iter().map(StoredMessage::msg_id).collect();
        if acked.iter().all(|msg_id| stored.contains(msg_id.as_str())) || std::time::Instant::now() >= deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every message of `topic`, queue by queue from each queue's first offset, read through `route`
/// by consumer group `group` (which must be approved).
pub async fn read_through(
    route: std::sync::Arc<dyn meridian_client::RouteSource>,
    group: &str,
    topic: &str,
) -> Vec<StoredMessage> {
    let consumer = PullConsumer::new(route, ClientConfig::default(), group);
    let mut messages = Vec::new();
    for (_, queue_id) in consumer.queues(topic).await.expect("route of topic") {
        let (mut offset, max) = consumer.queue_info(topic, queue_id).await.expect("queue info");
        while offset < max {
            let pulled = consumer
                .pull(topic, queue_id, offset, 256, Duration::ZERO)
                .await
                .expect("pull");
            assert!(
                !pulled.messages.is_empty() || pulled.next_offset > offset,
                "pull made no progress at {offset}"
            );
            messages.extend(pulled.messages);
            offset = pulled.next_offset;
        }
    }
    consumer.shutdown().await;
    messages
}

//! Index and lookup measurements over a large index, ignored by default (minutes in a debug
//! build). Run in release, as `scripts/bench-tracing.sh` does:
//!
//! ```text
//! MERIDIAN_TRACE_BENCH_EVENTS=1000000 cargo test --release -p meridian-tracer -- --ignored --nocapture bench_
//! ```
//!
//! Indexes events the way the ingester does (one thread, a commit every 50k events), then answers
//! lookups by msgId and by key over HTTP (axum on loopback, one keep-alive connection) and checks
//! that each returns exactly the events of that message or key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_proto::MessageId;
use meridian_proto::trace::{TraceEvent, TraceType};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::index::{Positions, TraceIndex};
use crate::metrics::TracerMetrics;

/// Messages per key: a key lookup returns this many timelines.
const MESSAGES_PER_KEY: usize = 10;
/// Events per message: Pub, Store, Deliver.
const EVENTS_PER_MESSAGE: usize = 3;

fn events_of(message: usize, msg_id: &str, base_ms: i64) -> Vec<TraceEvent> {
    let key = format!("key-{}", message / MESSAGES_PER_KEY);
    [TraceType::Pub, TraceType::Store, TraceType::Deliver]
        .into_iter()
        .enumerate()
        .map(|(step, kind)| TraceEvent {
            event_id: MessageId::generate().to_string(),
            trace_type: kind as i32,
            timestamp: base_ms + message as i64 + step as i64,
            msg_id: msg_id.to_owned(),
            topic: "orders".into(),
            queue_id: (message % 8) as u32,
            queue_offset: message as u64,
            commitlog_offset: message as u64 * 1100,
            keys: vec![key.clone()],
            group: if kind == TraceType::Deliver {
                "billing".into()
            } else {
                "shop".into()
            },
            client_host: "10.0.0.7:51234".into(),
            broker_name: "broker-a".into(),
            broker_member: "a-0".into(),
            broker_host: "10.0.0.1:7911".into(),
            idc: "dc1".into(),
            born_timestamp: base_ms + message as i64,
            store_timestamp: base_ms + message as i64 + 1,
            body_size: 1024,
            ..TraceEvent::default()
        })
        .collect()
}

fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * quantile).round() as usize]
}

/// One GET on a keep-alive connection: status and body.
async fn get(stream: &mut BufReader<tokio::net::TcpStream>, path: &str) -> (u16, serde_json::Value) {
    stream
        .get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await.unwrap();
    let status: u16 = status_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).await.unwrap();
        if header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: minutes in a debug build; run by scripts/bench-tracing.sh"]
async fn bench_index_and_lookups() {
    let events: usize = std::env::var("MERIDIAN_TRACE_BENCH_EVENTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000_000);
    let messages = events / EVENTS_PER_MESSAGE;
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(TraceIndex::open(dir.path(), 64 << 20).unwrap());
    let base_ms = 1_795_600_000_000;
    let msg_ids: Vec<String> = (0..messages).map(|_| MessageId::generate().to_string()).collect();

    let started = Instant::now();
    let indexing = {
        let (index, msg_ids) = (index.clone(), msg_ids.clone());
        tokio::task::spawn_blocking(move || {
            let mut positions = Positions::new();
            let mut since_commit = 0;
            for (message, msg_id) in msg_ids.iter().enumerate() {
                for event in events_of(message, msg_id, base_ms) {
                    index.add(&event, "broker-a/0", message as u64, 0).unwrap();
                }
                since_commit += EVENTS_PER_MESSAGE;
                if since_commit >= 50_000 {
                    positions.insert("broker-a/0".into(), message as u64 + 1);
                    index.commit(&positions).unwrap();
                    since_commit = 0;
                }
            }
            positions.insert("broker-a/0".into(), msg_ids.len() as u64);
            index.commit(&positions).unwrap();
        })
    };
    indexing.await.unwrap();
    let indexing_seconds = started.elapsed().as_secs_f64();
    let indexed = messages * EVENTS_PER_MESSAGE;
    assert_eq!(index.num_docs(), indexed as u64);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = crate::http::router(index.clone(), Arc::new(TracerMetrics::default()), None);
    let server = tokio_util::task::TaskTracker::new();
    server.spawn(async move { axum::serve(listener, router).await });
    let mut stream = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());

    let lookups = 1000.min(messages);
    let mut by_msg_id = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let message = fastrand_index(messages);
        let lookup = Instant::now();
        let (status, body) = get(&mut stream, &format!("/api/traces/{}", msg_ids[message])).await;
        by_msg_id.push(lookup.elapsed());
        assert_eq!(status, 200);
        assert_eq!(body["msg_id"], msg_ids[message].as_str());
        assert_eq!(
            body["steps"].as_array().unwrap().len(),
            EVENTS_PER_MESSAGE,
            "exactly its events"
        );
    }
    let keys = messages / MESSAGES_PER_KEY;
    let mut by_key = Vec::with_capacity(lookups);
    for _ in 0..lookups.min(keys) {
        let key = fastrand_index(keys);
        let lookup = Instant::now();
        let (status, body) = get(&mut stream, &format!("/api/traces?key=key-{key}")).await;
        by_key.push(lookup.elapsed());
        assert_eq!(status, 200);
        assert_eq!(body["total"], MESSAGES_PER_KEY, "exactly the key's messages");
        let expected: Vec<&str> = (key * MESSAGES_PER_KEY..(key + 1) * MESSAGES_PER_KEY)
            .map(|message| msg_ids[message].as_str())
            .collect();
        let found: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|timeline| timeline["msg_id"].as_str().unwrap())
            .collect();
        assert_eq!(found, expected);
    }
    by_msg_id.sort();
    by_key.sort();
    println!(
        "{{\"events\": {indexed}, \"index_seconds\": {indexing_seconds:.2}, \"index_events_per_s\": {:.0}, \"msg_id_p50_ms\": {:.2}, \"msg_id_p99_ms\": {:.2}, \"key_p50_ms\": {:.2}, \"key_p99_ms\": {:.2}, \"partitions\": {}}}",
        indexed as f64 / indexing_seconds,
        percentile(&by_msg_id, 0.5).as_secs_f64() * 1e3,
        percentile(&by_msg_id, 0.99).as_secs_f64() * 1e3,
        percentile(&by_key, 0.5).as_secs_f64() * 1e3,
        percentile(&by_key, 0.99).as_secs_f64() * 1e3,
        index.days().len(),
    );
}

/// A pseudo-random index below `bound` (a small xorshift: no dependency for a benchmark).
fn fastrand_index(bound: usize) -> usize {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) });
    STATE.with(|state| {
        let mut value = state.get();
        value ^= value << 13;
        value ^= value >> 7;
        value ^= value << 17;
        state.set(value);
        (value % bound as u64) as usize
    })
}

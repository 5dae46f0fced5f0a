//! The broker's wire contract, exercised over real sockets with raw frames: pipelining,
//! validation errors, malformed frames, long polling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use meridian_broker::{Broker, BrokerConfig};
use meridian_proto::messages::{
    CreateTopicRequest, MessageData, PullRequest, PullResponse, PullStatus, SendRequest, SendResponse,
};
use meridian_proto::properties::PropertiesBuilder;
use meridian_proto::{ErrorCode, Frame, FrameCodec, MessageId, RequestCode};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

struct TestBroker {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start_broker() -> TestBroker {
    start_broker_with(|_| {}).await
}

async fn start_broker_with(configure: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    config.store.segment_size = 32 << 20;
    configure(&mut config);
    let broker = Broker::bind(config, Arc::default()).await.unwrap();
    let addr = broker.local_addr();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    #[allow(clippy::disallowed_methods)] // the test owns and joins this task
    let task = tokio::spawn(async move { broker.run(stopped.cancelled_owned()).await.unwrap() });
    TestBroker {
        addr,
        stop,
        task,
        _dir: dir,
    }
}

impl TestBroker {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

type Conn = Framed<TcpStream, FrameCodec>;

async fn connect(addr: std::net::SocketAddr) -> Conn {
    Framed::new(TcpStream::connect(addr).await.unwrap(), FrameCodec::new(64 << 20))
}

async fn call(conn: &mut Conn, request_id: u64, code: RequestCode, body: impl Message) -> Frame {
    conn.send(Frame::request(request_id, code, Bytes::from(body.encode_to_vec())))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), conn.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.header.request_id, request_id);
    response
}

fn message(body: &[u8]) -> MessageData {
    let mut properties = PropertiesBuilder::new();
    properties.msg_id(&MessageId::generate().to_string());
    MessageData {
        flags: 0,
        born_timestamp: 0,
        properties: Bytes::from(properties.finish()),
        body: Bytes::copy_from_slice(body),
        reconsume_count: 0,
    }
}

fn send_request(topic: &str, body: &[u8]) -> SendRequest {
    SendRequest {
        topic: topic.into(),
        queue_id: 0,
        messages: vec![message(body)],
        producer_group: String::new(),
        sdk: Default::default(),
    }
}

async fn create_topic(conn: &mut Conn, topic: &str) {
    let response = call(
        conn,
        1,
        RequestCode::CreateTopic,
        CreateTopicRequest {
            topic: topic.into(),
            queues: 2,
        },
    )
    .await;
    assert_eq!(response.error_code(), ErrorCode::Ok, "{}", response.header.remark);
}

/// Reads until the broker closes the connection; returns the frames it sent first.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<Frame> {
    let mut buffer = BytesMut::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("broker must close the connection");
    let mut codec = FrameCodec::new(1 << 20);
    let mut frames = Vec::new();
    while let Some(frame) = tokio_util::codec::Decoder::decode(&mut codec, &mut buffer).unwrap() {
        frames.push(frame);
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_an_error_and_a_closed_connection_while_others_keep_working() {
    let broker = start_broker().await;
    let mut healthy = connect(broker.addr).await;
    create_topic(&mut healthy, "orders").await;

    let mut huge_length = BytesMut::new();
    huge_length.put_u32(u32::MAX);
    huge_length.put_u32(4);
    let mut header_too_long = BytesMut::new();
    header_too_long.put_u32(8);
    header_too_long.put_u32(100);
    header_too_long.put_slice(&[0; 8]);
    let mut bad_header = BytesMut::new();
    bad_header.put_u32(8);
    bad_header.put_u32(4);
    bad_header.put_slice(&[0xFF; 4]);
    bad_header.put_slice(&[0; 4]);
    let mut unknown_code = BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut FrameCodec::new(1 << 20),
        Frame {
            header: meridian_proto::Header {
                request_id: 7,
                code: 9999,
                flags: 0,
                version: 1,
                remark: String::new(),
            },
            body: Bytes::new(),
        },
        &mut unknown_code,
    )
    .unwrap();
    let mut bad_body = BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut FrameCodec::new(1 << 20),
        Frame::request(8, RequestCode::Send, Bytes::from_static(&[0xFF, 0xFF, 0xFF])),
        &mut bad_body,
    )
    .unwrap();

    let cases: Vec<(&str, Vec<u8>, ErrorCode, &str)> = vec![
        (
            "huge length",
            huge_length.to_vec(),
            ErrorCode::MalformedFrame,
            "exceeds the limit",
        ),
        (
            "header longer than frame",
            header_too_long.to_vec(),
            ErrorCode::MalformedFrame,
            "does not fit",
        ),
        (
            "header not protobuf",
            bad_header.to_vec(),
            ErrorCode::MalformedFrame,
            "not valid protobuf",
        ),
        (
            "unknown request code",
            unknown_code.to_vec(),
            ErrorCode::UnsupportedRequest,
            "request code 9999 is not supported",
        ),
        (
            "body not protobuf",
            bad_body.to_vec(),
            ErrorCode::MalformedFrame,
            "request body is malformed",
        ),
    ];
    for (name, bytes, code, text) in cases {
        let mut stream = TcpStream::connect(broker.addr).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let frames = read_until_closed(&mut stream).await;
        assert_eq!(frames.len(), 1, "{name}: exactly one error frame before closing");
        assert_eq!(frames[0].error_code(), code, "{name}");
        assert!(
            frames[0].header.remark.contains(text),
            "{name}: {:?}",
            frames[0].header.remark
        );
    }
    // Random garbage: whatever it decodes to, the broker answers with an error or nothing, and
    // closes or keeps reading; it never stops serving others.
    for seed in 0..20u64 {
        let mut random = fastrand::Rng::with_seed(seed);
        let garbage: Vec<u8> = (0..random.usize(1..2048)).map(|_| random.u8(..)).collect();
        let mut stream = TcpStream::connect(broker.addr).await.unwrap();
        stream.write_all(&garbage).await.unwrap();
        stream.shutdown().await.unwrap();
        for frame in read_until_closed(&mut stream).await {
            assert_ne!(frame.error_code(), ErrorCode::Ok);
        }
    }

    let response = call(
        &mut healthy,
        2,
        RequestCode::Send,
        send_request("orders", b"still works"),
    )
    .await;
    assert_eq!(response.error_code(), ErrorCode::Ok, "{}", response.header.remark);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_and_oversize_bodies_get_errors_naming_the_rule_and_limit() {
    let broker = start_broker().await;
    let mut conn = connect(broker.addr).await;
    create_topic(&mut conn, "orders").await;

    let response = call(&mut conn, 2, RequestCode::Send, send_request("bad topic!", b"x")).await;
    assert_eq!(response.error_code(), ErrorCode::InvalidArgument);
    assert_eq!(
        response.header.remark,
        r#"topic name "bad topic!" is invalid: only [A-Za-z0-9_-], at most 127 chars"#
    );

    let oversize = vec![b'x'; 4 * 1024 * 1024 + 1];
    let response = call(&mut conn, 3, RequestCode::Send, send_request("orders", &oversize)).await;
    assert_eq!(response.error_code(), ErrorCode::MessageTooLarge);
    assert!(
        response
            .header
            .remark
            .contains("exceeds the limit of 4194304 bytes (max_body_size)"),
        "{}",
        response.header.remark
    );

    let response = call(&mut conn, 4, RequestCode::Send, send_request("nowhere", b"x")).await;
    assert_eq!(response.error_code(), ErrorCode::TopicNotFound);
    assert!(
        response.header.remark.contains("meridian topic create nowhere"),
        "{}",
        response.header.remark
    );

    let mut bad_key = send_request("orders", b"x");
    bad_key.messages[0].properties = Bytes::from_static(b"KEYS\x01bad\tkey\x02");
    let response = call(&mut conn, 5, RequestCode::Send, bad_key).await;
    assert_eq!(response.error_code(), ErrorCode::InvalidArgument);

    let response = call(
        &mut conn,
        6,
        RequestCode::CreateTopic,
        CreateTopicRequest {
            topic: "../etc".into(),
            queues: 1,
        },
    )
    .await;
    assert_eq!(response.error_code(), ErrorCode::InvalidArgument);

    let pull = PullRequest {
        group: "bad group".into(),
        topic: "orders".into(),
        queue_id: 0,
        offset: 0,
        max_count: 1,
        max_bytes: 1 << 20,
        long_poll_ms: 0,
        ..Default::default()
    };
    let response = call(&mut conn, 7, RequestCode::Pull, pull).await;
    assert!(
        response
            .header
            .remark
            .starts_with(r#"group name "bad group" is invalid"#),
        "{}",
        response.header.remark
    );

    // Errors do not close the connection.
    let response = call(&mut conn, 8, RequestCode::Send, send_request("orders", b"fine")).await;
    assert_eq!(response.error_code(), ErrorCode::Ok);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_by_id() {
    let broker = start_broker().await;
    let mut conn = connect(broker.addr).await;
    create_topic(&mut conn, "orders").await;
    for request_id in 100..600u64 {
        let request = send_request("orders", format!("m{request_id}").as_bytes());
        conn.feed(Frame::request(
            request_id,
            RequestCode::Send,
            Bytes::from(request.encode_to_vec()),
        ))
        .await
        .unwrap();
    }
    conn.flush().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 500 {
        let frame = tokio::time::timeout(Duration::from_secs(10), conn.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(frame.error_code(), ErrorCode::Ok);
        let response = SendResponse::decode(frame.body).unwrap();
        assert_eq!(response.results.len(), 1);
        assert!(seen.insert(frame.header.request_id));
    }
    assert_eq!(seen, (100..600).collect());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_a_message_arrives() {
    let broker = start_broker().await;
    let mut consumer = connect(broker.addr).await;
    let mut producer = connect(broker.addr).await;
    create_topic(&mut producer, "orders").await;
    let pull = PullRequest {
        group: "g".into(),
        topic: "orders".into(),
        queue_id: 0,
        offset: 0,
        max_count: 32,
        max_bytes: 1 << 20,
        long_poll_ms: 20_000,
        ..Default::default()
    };
    let started = Instant::now();
    consumer
        .send(Frame::request(1, RequestCode::Pull, Bytes::from(pull.encode_to_vec())))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = call(&mut producer, 2, RequestCode::Send, send_request("orders", b"wake up")).await;
    assert_eq!(response.error_code(), ErrorCode::Ok);
    let frame = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let pulled = PullResponse::decode(frame.body).unwrap();
    assert_eq!(pulled.status, PullStatus::Found as i32);
    let messages = meridian_proto::record::decode_all(&pulled.records).unwrap();
    assert_eq!(messages[0].body, Bytes::from_static(b"wake up"));
    assert_eq!(pulled.next_offset, 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the long poll must end when the message arrives, not at its deadline"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_never_blocks_producers() {
    let broker = start_broker().await;
    let mut producer = connect(broker.addr).await;
    create_topic(&mut producer, "big").await;
    let body = vec![b'b'; 64 * 1024];
    for request_id in 0..64u64 {
        let response = call(
            &mut producer,
            10 + request_id,
            RequestCode::Send,
            send_request("big", &body),
        )
        .await;
        assert_eq!(response.error_code(), ErrorCode::Ok);
    }
    // A consumer floods 4 MiB pulls and never reads an answer: far more than socket buffers and
    // the broker's per-connection budget hold.
    let mut stalled = TcpStream::connect(broker.addr).await.unwrap();
    let mut requests = BytesMut::new();
    for request_id in 0..2000u64 {
        let pull = PullRequest {
            group: "slow".into(),
            topic: "big".into(),
            queue_id: 0,
            offset: 0,
            max_count: 64,
            max_bytes: 4 << 20,
            long_poll_ms: 0,
            ..Default::default()
        };
        tokio_util::codec::Encoder::encode(
            &mut FrameCodec::new(1 << 20),
            Frame::request(request_id, RequestCode::Pull, Bytes::from(pull.encode_to_vec())),
            &mut requests,
        )
        .unwrap();
    }
    let rss_before = resident_bytes();
    let flood = tokio::time::timeout(Duration::from_secs(2), stalled.write_all(&requests));
    // The broker stops reading this connection once its budget is full, so the write may stall.
    let _ = flood.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = resident_bytes().saturating_sub(rss_before);
    // 2000 answers of 4 MiB would be 8 GB; the default budget is 64 MiB plus socket buffers.
    assert!(
        grown < 400 << 20,
        "a stalled reader made the broker grow by {} MiB",
        grown >> 20
    );

    let started = Instant::now();
    for request_id in 0..200u64 {
        let response = call(
            &mut producer,
            1000 + request_id,
            RequestCode::Send,
            send_request("big", b"small"),
        )
        .await;
        assert_eq!(response.error_code(), ErrorCode::Ok);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "producers were held up by a stalled consumer"
    );
    drop(stalled);
    broker.stop().await;
}

/// Resident memory of this process (the broker runs in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_governed_broker_serves_nothing_before_approval_and_stops_while_its_nameserver_is_down() {
    // A port nobody listens on: connecting to it is refused.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nameserver = down.local_addr().unwrap().to_string();
    drop(down);
    let broker = start_broker_with(|config| {
        config.nameservers = vec![nameserver.clone()];
        config.heartbeat_interval_ms = 100;
    })
    .await;
    let mut conn = connect(broker.addr).await;

    let response = call(
        &mut conn,
        1,
        RequestCode::CreateTopic,
        CreateTopicRequest {
            topic: "orders".into(),
            queues: 2,
        },
    )
    .await;
    assert_eq!(response.error_code(), ErrorCode::FailedPrecondition);
    let remark = &response.header.remark;
    assert!(remark.contains("governed by its nameservers"), "{remark}");
    assert!(remark.contains(&format!("--nameserver {nameserver}")), "{remark}");

    // Until the nameservers answer, no member is master and nothing is approved: retriable, and
    // the remark says why.
    let response = call(&mut conn, 2, RequestCode::Send, send_request("orders", b"x")).await;
    assert_eq!(response.error_code(), ErrorCode::NotMaster);
    assert!(
        response.header.remark.contains(&nameserver),
        "{}",
        response.header.remark
    );
    let pull = PullRequest {
        group: "billing".into(),
        topic: "orders".into(),
        queue_id: 0,
        offset: 0,
        max_count: 1,
        max_bytes: 1 << 20,
        long_poll_ms: 0,
        ..Default::default()
    };
    let response = call(&mut conn, 3, RequestCode::Pull, pull).await;
    assert_eq!(response.error_code(), ErrorCode::Unavailable);

    // Heartbeats to a dead nameserver never hold up shutdown.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    broker.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

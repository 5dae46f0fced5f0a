//! RocketMQ compatibility: `meridian dev`'s remoting listeners spoken to over real sockets, first
//! by hand (route, send V1/V2/batch, heartbeat, offsets, pull with a tag filter, bad input), then
//! by an unmodified RocketMQ client written by others: PyPI `rocketmq` 0.4.4 (Apache's C++ core),
//! driven by `tests/compat/rocketmq_python.py`. The client is installed by
//! `scripts/install-rocketmq-clients.sh` (`scripts/test.sh` exports
//! `MERIDIAN_TEST_ROCKETMQ_PYTHON`); without it the test fails, it does not skip.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meridian_proto::MessageId;
use meridian_proto::properties::PropertiesBuilder;
use meridian_proto::remoting::codes::{request, response};
use meridian_proto::remoting::command::{SerializeType, decode_frame};
use meridian_proto::remoting::message::{BatchEntry, decode_all_stored, encode_batch, parse_offset_msg_id};
use meridian_proto::remoting::{Decoded, RemotingCommand};
use meridian_tests::{DevNode, eventually};
use serde_json::Value;

/// A blocking remoting connection, as a RocketMQ client holds one.
struct Wire {
    stream: TcpStream,
    opaque: i32,
}

impl Wire {
    fn connect(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect(addr).expect("connecting to the remoting listener");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Wire { stream, opaque: 0 }
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn read(&mut self) -> Decoded {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).expect("reading a response length");
        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut frame).expect("reading a response");
        decode_frame(Bytes::from(frame)).expect("a well-formed response frame")
    }

    /// Sends `command` and returns its response (skipping broker-initiated requests).
    fn call(&mut self, mut command: RemotingCommand) -> RemotingCommand {
        self.opaque += 1;
        command.opaque = self.opaque;
        let mut buffer = BytesMut::new();
        command.encode(&mut buffer);
        self.write_raw(&buffer);
        loop {
            match self.read() {
                Decoded::Command(answer) if answer.is_response() => {
                    assert_eq!(answer.opaque, command.opaque, "responses carry the request's opaque");
                    assert_eq!(
                        answer.serialize_type, command.serialize_type,
                        "answered in the request's encoding"
                    );
                    return answer;
                }
                Decoded::Command(_) => continue,
                other => panic!("unreadable response {other:?}"),
            }
        }
    }
}

fn request(code: i32, fields: &[(&str, &str)]) -> RemotingCommand {
    let mut command = RemotingCommand::request(code, 0);
    command.language = 1;
    for (name, value) in fields {
        command = command.with(name, value);
    }
    command
}

fn remark(answer: &RemotingCommand) -> &str {
    answer.remark.as_deref().unwrap_or("")
}

fn properties(key: &str, tag: &str, msg_id: &str) -> String {
    let mut builder = PropertiesBuilder::new();
    builder.keys(&[key]).unwrap().tag(tag).unwrap().msg_id(msg_id);
    String::from_utf8(builder.finish()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remoting_client_routes_sends_and_pulls_through_meridian_rules() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("rmq-wire", 2).await;
    node.create_group("rmq-wire-g", &["rmq-wire"]).await;

    // Routes: unknown topics are refused with what to request; known ones name the remoting broker.
    let mut nameserver = Wire::connect(node.rocketmq_nameserver);
    let unknown = nameserver.call(request(request::GET_ROUTEINFO_BY_TOPIC, &[("topic", "nope")]));
    assert_eq!(unknown.code, response::TOPIC_NOT_EXIST);
    assert!(
        remark(&unknown).contains("meridian topic request nope"),
        "{}",
        remark(&unknown)
    );
    let route = nameserver.call(request(request::GET_ROUTEINFO_BY_TOPIC, &[("topic", "rmq-wire")]));
    assert_eq!(route.code, response::SUCCESS, "{}", remark(&route));
    let body: Value = serde_json::from_slice(&route.body).unwrap();
    assert_eq!(
        body["brokerDatas"][0]["brokerAddrs"]["0"],
        node.rocketmq_broker.to_string()
    );
    assert_eq!(body["queueDatas"][0]["writeQueueNums"], 2);
    assert_eq!(body["queueDatas"][0]["perm"], 6);
    let mut old = request(request::GET_ROUTEINFO_BY_TOPIC, &[("topic", "rmq-wire")]);
    old.version = 317;
    let old = nameserver.call(old);
    let text = String::from_utf8(old.body.to_vec()).unwrap();
    assert!(
        text.contains(&format!("{{0:\"{}\"}}", node.rocketmq_broker)),
        "fastjson form for 4.5: {text}"
    );

    let mut broker = Wire::connect(node.rocketmq_broker);
    // A V2 send in the binary header encoding, with keys, a tag and the client's UNIQ_KEY.
    let ids: Vec<String> = (0..4).map(|_| MessageId::generate().to_string()).collect();
    let mut send_ids = Vec::new();
    for (index, msg_id) in ids.iter().enumerate() {
        let tag = if index % 2 == 0 { "TagA" } else { "TagB" };
        let props = properties(&format!("key-{index}"), tag, msg_id);
        let mut send = request(
            request::SEND_MESSAGE_V2,
            &[
                ("a", "rmq-producer"),
                ("b", "rmq-wire"),
                ("e", "0"),
                ("f", "0"),
                ("g", "1700000000000"),
                ("h", "0"),
                ("i", &props),
                ("j", "0"),
                ("k", "false"),
                ("m", "false"),
            ],
        )
        .with_body(format!("body-{index}").into_bytes());
        send.serialize_type = SerializeType::Binary;
        let answer = broker.call(send);
        assert_eq!(answer.code, response::SUCCESS, "{}", remark(&answer));
        let offset_id = &answer.ext_fields["msgId"];
        let (host, _) = parse_offset_msg_id(offset_id).expect("an offset msgId");
        assert_eq!(host, node.rocketmq_broker, "offset msgIds name the remoting broker");
        send_ids.push(offset_id.clone());
    }
    // A V1 send of a compressed-less batch of two.
    let batch_props = [
        properties("batch-0", "TagA", &MessageId::generate().to_string()),
        properties("batch-1", "TagA", &MessageId::generate().to_string()),
    ];
    let batch = encode_batch(&[
        BatchEntry {
            flag: 0,
            body: b"batch-0",
            properties: batch_props[0].as_bytes(),
        },
        BatchEntry {
            flag: 0,
            body: b"batch-1",
            properties: batch_props[1].as_bytes(),
        },
    ]);
    let answer = broker.call(
        request(
            request::SEND_BATCH_MESSAGE,
            &[
                ("a", "rmq-producer"),
                ("b", "rmq-wire"),
                ("e", "1"),
                ("g", "1"),
                ("m", "true"),
            ],
        )
        .with_body(batch),
    );
    assert_eq!(answer.code, response::SUCCESS, "{}", remark(&answer));
    assert_eq!(answer.ext_fields["msgId"].split(',').count(), 2);
    // Auto-create is off: an unknown topic is refused with what to request.
    let refused = broker.call(
        request(
            request::SEND_MESSAGE,
            &[
                ("producerGroup", "rmq-producer"),
                ("topic", "rmq-unknown"),
                ("queueId", "0"),
            ],
        )
        .with_body(b"x".to_vec()),
    );
    assert_eq!(refused.code, response::TOPIC_NOT_EXIST, "{}", remark(&refused));
    assert!(remark(&refused).contains("rmq-unknown"), "{}", remark(&refused));
    // Bad input gets an answer and keeps the connection: an unknown code, a missing field, a bad header.
    let unsupported = broker.call(request(9999, &[]));
    assert_eq!(unsupported.code, response::REQUEST_CODE_NOT_SUPPORTED);
    let missing = broker.call(request(request::PULL_MESSAGE, &[("consumerGroup", "rmq-wire-g")]));
    assert_eq!(missing.code, response::INVALID_PARAMETER);
    assert!(remark(&missing).contains("`topic`"), "{}", remark(&missing));
    let header = b"{\"code\":";
    let mut frame = Vec::new();
    frame.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
    frame.extend_from_slice(header);
    broker.write_raw(&frame);
    assert!(matches!(broker.read(), Decoded::Command(answer) if answer.code == response::SYSTEM_ERROR));

    // A consumer: heartbeat, offset of a new group, a tag-filtered pull.
    let heartbeat = serde_json::json!({
        "clientID": "127.0.0.1@compat-test",
        "producerDataSet": [],
        "consumerDataSet": [{
            "groupName": "rmq-wire-g", "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING",
            "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET", "unitMode": false,
            "subscriptionDataSet": [
                {"topic": "rmq-wire", "subString": "TagA", "tagsSet": ["TagA"], "codeSet": [], "subVersion": 1, "expressionType": "TAG"},
                {"topic": "%RETRY%rmq-wire-g", "subString": "*", "tagsSet": [], "codeSet": [], "subVersion": 1}
            ]
        }]
    });
    let answer = broker.call(request(request::HEART_BEAT, &[]).with_body(heartbeat.to_string().into_bytes()));
    assert_eq!(answer.code, response::SUCCESS, "{}", remark(&answer));
    // A second member joins: the first one's connection is told to rebalance.
    let mut second = Wire::connect(node.rocketmq_broker);
    let mut joining = heartbeat.clone();
    joining["clientID"] = "127.0.0.2@compat-test".into();
    let answer = second.call(request(request::HEART_BEAT, &[]).with_body(joining.to_string().into_bytes()));
    assert_eq!(answer.code, response::SUCCESS, "{}", remark(&answer));
    match broker.read() {
        Decoded::Command(notify) => {
            assert_eq!(notify.code, request::NOTIFY_CONSUMER_IDS_CHANGED);
            assert!(notify.is_oneway() && !notify.is_response());
            assert_eq!(notify.ext_fields["consumerGroup"], "rmq-wire-g");
        }
        other => panic!("expected NOTIFY_CONSUMER_IDS_CHANGED, got {other:?}"),
    }
    let answer = second.call(request(
        request::UNREGISTER_CLIENT,
        &[("clientID", "127.0.0.2@compat-test"), ("consumerGroup", "rmq-wire-g")],
    ));
    assert_eq!(answer.code, response::SUCCESS, "{}", remark(&answer));
    let members = broker.call(request(
        request::GET_CONSUMER_LIST_BY_GROUP,
        &[("consumerGroup", "rmq-wire-g")],
    ));
    let members: Value = serde_json::from_slice(&members.body).unwrap();
    assert_eq!(members["consumerIdList"], serde_json::json!(["127.0.0.1@compat-test"]));
    let offset = broker.call(request(
        request::QUERY_CONSUMER_OFFSET,
        &[("consumerGroup", "rmq-wire-g"), ("topic", "rmq-wire"), ("queueId", "0")],
    ));
    assert_eq!(
        (offset.code, offset.ext_fields["offset"].as_str()),
        (response::SUCCESS, "0")
    );
    // Sends are acknowledged before the consume queue is built (as on a Java broker): wait for
    // the four sends to queue 0 to be readable.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let max = broker.call(request(
            request::GET_MAX_OFFSET,
            &[("topic", "rmq-wire"), ("queueId", "0")],
        ));
        if max.ext_fields["offset"] == "4" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue 0 never reached 4 messages: {max:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pull = broker.call(request(
        request::PULL_MESSAGE,
        &[
            ("consumerGroup", "rmq-wire-g"),
            ("topic", "rmq-wire"),
            ("queueId", "0"),
            ("queueOffset", "0"),
            ("maxMsgNums", "32"),
            ("sysFlag", "6"),
            ("commitOffset", "0"),
            ("suspendTimeoutMillis", "1000"),
            ("subscription", "TagA"),
            ("subVersion", "1"),
            ("expressionType", "TAG"),
        ],
    ));
    assert_eq!(pull.code, response::SUCCESS, "{}", remark(&pull));
    assert_eq!(pull.ext_fields["nextBeginOffset"], "4");
    let messages = decode_all_stored(&pull.body).unwrap();
    let bodies: Vec<&[u8]> = messages.iter().map(|message| message.body).collect();
    assert_eq!(bodies, [&b"body-0"[..], &b"body-2"[..]], "only TagA, in order");
    assert_eq!(
        meridian_proto::properties::get(messages[0].properties, "UNIQ_KEY"),
        Some(ids[0].as_str())
    );
    assert_eq!(
        meridian_proto::properties::get(messages[0].properties, "KEYS"),
        Some("key-0")
    );
    // A long poll at the end answers PULL_NOT_FOUND after its suspend time, not before.
    let waited = std::time::Instant::now();
    let empty = broker.call(request(
        request::PULL_MESSAGE,
        &[
            ("consumerGroup", "rmq-wire-g"),
            ("topic", "rmq-wire"),
            ("queueId", "0"),
            ("queueOffset", "4"),
            ("sysFlag", "3"),
            ("commitOffset", "4"),
            ("suspendTimeoutMillis", "500"),
        ],
    ));
    assert_eq!(empty.code, response::PULL_NOT_FOUND);
    assert!(waited.elapsed() >= Duration::from_millis(400), "{:?}", waited.elapsed());
    let committed = broker.call(request(
        request::QUERY_CONSUMER_OFFSET,
        &[("consumerGroup", "rmq-wire-g"), ("topic", "rmq-wire"), ("queueId", "0")],
    ));
    assert_eq!(
        committed.ext_fields["offset"], "4",
        "the piggy-backed commit was applied"
    );
    // An unapproved group is refused with what to request.
    let stranger = broker.call(request(
        request::QUERY_CONSUMER_OFFSET,
        &[
            ("consumerGroup", "rmq-stranger"),
            ("topic", "rmq-wire"),
            ("queueId", "0"),
        ],
    ));
    assert_eq!(stranger.code, response::SUBSCRIPTION_GROUP_NOT_EXIST);
    assert!(
        remark(&stranger).contains("meridian group request rmq-stranger"),
        "{}",
        remark(&stranger)
    );

    // A console looks messages up by key and by offset msgId.
    let by_key = broker.call(request(
        request::QUERY_MESSAGE,
        &[
            ("topic", "rmq-wire"),
            ("key", "key-2"),
            ("maxNum", "32"),
            ("beginTimestamp", "0"),
            ("endTimestamp", &i64::MAX.to_string()),
        ],
    ));
    assert_eq!(by_key.code, response::SUCCESS, "{}", remark(&by_key));
    let found = decode_all_stored(&by_key.body).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].body, b"body-2");
    let none = broker.call(request(
        request::QUERY_MESSAGE,
        &[("topic", "rmq-wire"), ("key", "no-such-key")],
    ));
    assert_eq!(none.code, response::QUERY_NOT_FOUND);
    let (_, commitlog_offset) = parse_offset_msg_id(&send_ids[1]).unwrap();
    let viewed = broker.call(request(
        request::VIEW_MESSAGE_BY_ID,
        &[("offset", &commitlog_offset.to_string())],
    ));
    assert_eq!(viewed.code, response::SUCCESS, "{}", remark(&viewed));
    assert_eq!(decode_all_stored(&viewed.body).unwrap()[0].body, b"body-1");

    // What remoting producers sent is what Meridian's SDK reads: same ids, keys and tags.
    let read = crate::read_all(&node, "rmq-wire").await;
    assert_eq!(read.len(), 6);
    let first = read
        .iter()
        .find(|message| message.msg_id() == ids[0])
        .expect("the UNIQ_KEY is Meridian's msgId");
    assert_eq!(first.keys().collect::<Vec<_>>(), ["key-0"]);
    assert_eq!(first.tag(), Some("TagA"));
    node.stop();
}

/// The venv python with PyPI rocketmq 0.4.4: `MERIDIAN_TEST_ROCKETMQ_PYTHON`, or where
/// `scripts/install-rocketmq-clients.sh` puts it.
fn rocketmq_python() -> PathBuf {
    let path = std::env::var_os("MERIDIAN_TEST_ROCKETMQ_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/meridian-compat/rocketmq-venv/bin/python"))
        })
        .filter(|path| path.exists());
    path.expect("the RocketMQ C++-core client is not installed: run scripts/install-rocketmq-clients.sh (scripts/test.sh does) and set MERIDIAN_TEST_ROCKETMQ_PYTHON to the path it prints")
}

/// Runs `tests/compat/rocketmq_python.py` with `mode` against `node`; its JSON report, after
/// checking the client found nothing wrong.
fn run_scenario(node: &DevNode, home: &std::path::Path, topic: &str, group: &str, mode: &str) -> Value {
    run_scenario_with(node, home, topic, group, mode, &[])
}

/// [`run_scenario`] with extra environment (`ROCKETMQ_ACCESS_KEY`/`ROCKETMQ_SECRET_KEY` to sign).
fn run_scenario_with(
    node: &DevNode,
    home: &std::path::Path,
    topic: &str,
    group: &str,
    mode: &str,
    envs: &[(&str, &str)],
) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat/rocketmq_python.py");
    let output = std::process::Command::new(rocketmq_python())
        .arg(&script)
        .args([&node.rocketmq_nameserver.to_string(), topic, group, mode])
        // The C++ core logs under $HOME/logs.
        .env("HOME", home)
        .envs(envs.iter().copied())
        .output()
        .expect("running the RocketMQ client scenario");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report from the client; stderr:\n{}\nlog:\n{}",
                String::from_utf8_lossy(&output.stderr),
                node.log()
            )
        });
    assert!(
        output.status.success(),
        "client checks failed: {}\nlog:\n{}",
        report["errors"],
        node.log()
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rocketmq_cpp_client_produces_and_consumes_exactly_its_tag_and_traces_find_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("rmq-cpp", 4).await;
    node.create_group("rmq-cpp-g", &["rmq-cpp"]).await;
    let report = run_scenario(&node, dir.path(), "rmq-cpp", "rmq-cpp-g", "5");
    assert_eq!(
        report["received"].as_array().map(Vec::len),
        Some(10),
        "5 sync + 5 one-way TagA messages, once each"
    );

    // `meridian trace` finds a RocketMQ message by the UNIQ_KEY its producer made.
    let sent_id = report["sent"][0]["id"].as_str().unwrap().to_owned();
    let http = node.http.to_string();
    let found = eventually(Duration::from_secs(20), || {
        let (ok, stdout, _) = node.cli(&["trace", "--tracer", &http, &sent_id], "");
        ok && stdout.contains("Deliver") && stdout.contains("rmq-cpp-g")
    })
    .await;
    assert!(
        found,
        "meridian trace {sent_id} never showed the delivery; log:\n{}",
        node.log()
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rocketmq_cpp_client_gets_delayed_messages_late_and_failed_ones_again_from_the_retry_topic() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("rmq-retry", 2).await;
    node.create_group("rmq-retry-g", &["rmq-retry"]).await;
    let report = run_scenario(&node, dir.path(), "rmq-retry", "rmq-retry-g", "retry");
    // The failed message's timeline shows the retry through the delay slots and the redelivery.
    let failed = report["deliveries"]
        .as_array()
        .and_then(|deliveries| deliveries.iter().find(|entry| entry["body"] == "fail-once-body"))
        .and_then(|entry| entry["id"].as_str())
        .expect("the failed message was delivered")
        .to_owned();
    let http = node.http.to_string();
    let found = eventually(Duration::from_secs(20), || {
        let (ok, stdout, _) = node.cli(&["trace", "--tracer", &http, &failed], "");
        ok && stdout.contains("Retry") && stdout.contains("%RETRY%rmq-retry-g")
    })
    .await;
    assert!(
        found,
        "meridian trace {failed} never showed the retry; log:\n{}",
        node.log()
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rocketmq_cpp_pull_consumer_reads_exactly_its_tag_from_every_queue() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("rmq-pull", 2).await;
    node.create_group("rmq-pull-g", &["rmq-pull"]).await;
    let report = run_scenario(&node, dir.path(), "rmq-pull", "rmq-pull-g", "pull");
    assert_eq!(report["received"].as_array().map(Vec::len), Some(4));
    // The large body was sent compressed and is stored inflated: Meridian's SDK reads it as sent.
    let read = crate::read_all(&node, "rmq-pull").await;
    let big = read
        .iter()
        .find(|message| message.keys().any(|key| key == "pull-big"))
        .expect("the large message");
    assert_eq!(big.body.len(), "pull-TagA-big-".len() + 10_000);
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remoting_producer_is_asked_about_its_undecided_transaction_and_its_commit_delivers_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "[transaction]\ncheck_interval_ms = 1000\n").unwrap();
    let node = DevNode::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    node.create_topic("rmq-tx", 1).await;
    let mut producer = Wire::connect(node.rocketmq_broker);
    let heartbeat = serde_json::json!({
        "clientID": "127.0.0.1@tx-test",
        "producerDataSet": [{"groupName": "rmq-tx-producer"}, {"groupName": "CLIENT_INNER_PRODUCER"}],
        "consumerDataSet": []
    });
    let answer = producer.call(request(request::HEART_BEAT, &[]).with_body(heartbeat.to_string().into_bytes()));
    assert_eq!(answer.code, response::SUCCESS, "{}", remark(&answer));
    // A half message whose local transaction the producer leaves undecided.
    let msg_id = MessageId::generate().to_string();
    let mut builder = PropertiesBuilder::new();
    builder
        .keys(&["tx-1"])
        .unwrap()
        .msg_id(&msg_id)
        .transactional()
        .system("PGROUP", "rmq-tx-producer");
    let props = String::from_utf8(builder.finish()).unwrap();
    let sent = producer.call(
        request(
            request::SEND_MESSAGE_V2,
            &[
                ("a", "rmq-tx-producer"),
                ("b", "rmq-tx"),
                ("e", "0"),
                ("f", "4"),
                ("i", &props),
            ],
        )
        .with_body(b"tx-body".to_vec()),
    );
    assert_eq!(sent.code, response::SUCCESS, "{}", remark(&sent));
    assert_eq!(sent.ext_fields["transactionId"], msg_id);
    // The broker asks, over the producer's own connection, after the check interval.
    let check = loop {
        match producer.read() {
            Decoded::Command(check) if check.code == request::CHECK_TRANSACTION_STATE => break check,
            Decoded::Command(_) => continue,
            other => panic!("unreadable frame {other:?}"),
        }
    };
    assert_eq!(check.ext_fields["msgId"], msg_id);
    let message = &decode_all_stored(&check.body).unwrap()[0];
    assert_eq!((message.topic, message.body), ("rmq-tx", &b"tx-body"[..]));
    // The producer's answer commits it: the message reaches its topic.
    let end = producer.call(request(
        request::END_TRANSACTION,
        &[
            ("producerGroup", "rmq-tx-producer"),
            ("tranStateTableOffset", &check.ext_fields["tranStateTableOffset"]),
            ("commitLogOffset", &check.ext_fields["commitLogOffset"]),
            ("commitOrRollback", "8"),
            ("fromTransactionCheck", "true"),
            ("msgId", &msg_id),
            ("transactionId", &msg_id),
        ],
    ));
    assert_eq!(end.code, response::SUCCESS, "{}", remark(&end));
    let mut delivered = Vec::new();
    for _ in 0..100 {
        delivered = crate::read_all(&node, "rmq-tx").await;
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered.len(), 1, "the committed message, once");
    assert_eq!(delivered[0].msg_id(), msg_id);
    node.stop();
}

/// The folder holding npm ali-ons 3.12.0: `MERIDIAN_TEST_ALI_ONS`, or where
/// `scripts/install-ali-ons.sh` puts it.
fn ali_ons_dir() -> PathBuf {
    let dir = std::env::var_os("MERIDIAN_TEST_ALI_ONS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/meridian-compat/ali-ons-3.12.0"))
        })
        .filter(|dir| dir.join("node_modules/ali-ons/package.json").exists());
    dir.expect("the ali-ons RocketMQ client is not installed: run scripts/install-ali-ons.sh (scripts/test.sh does) and set MERIDIAN_TEST_ALI_ONS to the folder it prints")
}

/// Runs `tests/compat/ali_ons.js` with `args` against `node`; its JSON report, after checking the
/// client found nothing wrong.
fn run_ali_ons(node: &DevNode, home: &std::path::Path, topic: &str, group: &str, args: &[&str]) -> Value {
    run_ali_ons_with(node, home, topic, group, args, &[])
}

/// [`run_ali_ons`] with extra environment (`ROCKETMQ_ACCESS_KEY`/`ROCKETMQ_SECRET_KEY` to sign).
fn run_ali_ons_with(
    node: &DevNode,
    home: &std::path::Path,
    topic: &str,
    group: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat/ali_ons.js");
    let output = std::process::Command::new("node")
        .arg(&script)
        .arg(ali_ons_dir())
        .args([&node.rocketmq_nameserver.to_string(), topic, group])
        .args(args)
        // ali-ons keeps offsets and logs under $HOME.
        .env("HOME", home)
        .envs(envs.iter().copied())
        .output()
        .expect("running the ali-ons scenario (is node installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report from ali-ons; stderr:\n{}\nlog:\n{}",
                String::from_utf8_lossy(&output.stderr),
                node.log()
            )
        });
    assert!(
        output.status.success(),
        "ali-ons checks failed: {}\nstderr:\n{}\nlog:\n{}",
        report["errors"],
        String::from_utf8_lossy(&output.stderr),
        node.log()
    );
    report
}

/// Waits until `meridian trace ID` shows every one of `wanted`.
async fn trace_shows(node: &DevNode, id: &str, wanted: &[&str]) -> String {
    let http = node.http.to_string();
    let mut last = String::new();
    let found = eventually(Duration::from_secs(20), || {
        let (ok, stdout, stderr) = node.cli(&["trace", "--tracer", &http, id], "");
        last = format!("{stdout}{stderr}");
        ok && wanted.iter().all(|want| stdout.contains(want))
    })
    .await;
    assert!(
        found,
        "meridian trace {id} never showed {wanted:?}; last answer:\n{last}\nlog:\n{}",
        node.log()
    );
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ali_ons_client_produces_and_its_push_consumer_gets_exactly_its_tag() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(&dir.path().join("data"), &[]);
    node.create_topic("ons-tags", 4).await;
    node.create_group("ons-tags-g", &["ons-tags"]).await;
    let report = run_ali_ons(&node, dir.path(), "ons-tags", "ons-tags-g", &["tags", "5"]);
    let sent = report["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 10, "5 TagA and 5 TagB sends acknowledged");
    let received = report["received"].as_array().unwrap();
    assert_eq!(received.len(), 5, "exactly the TagA messages, once each: {received:?}");
    for message in received {
        assert_eq!(message["tag"], "TagA");
        assert_eq!(message["topic"], "ons-tags");
        let index = message["keys"].as_str().unwrap().strip_prefix("key-TagA-").unwrap();
        assert_eq!(message["body"], format!("TagA-body-{index}"));
    }
    // ali-ons makes no UNIQ_KEY: the broker's msgId stands in, and what the application holds is
    // the offset msgId the send answered with. Meridian's SDK reads the same messages.
    let read = crate::read_all(&node, "ons-tags").await;
    assert_eq!(read.len(), 10);
    assert!(read.iter().all(|message| !message.msg_id().is_empty()));
    trace_shows(&node, "--key=key-TagA-0", &["Deliver", "ons-tags-g"]).await;
    // The offset msgId finds the same timeline: the broker it names says which message it is.
    let offset_msg_id = sent[0]["id"].as_str().unwrap();
    assert_eq!(offset_msg_id.len(), 32, "an IPv4 offset msgId: {offset_msg_id}");
    let (broker, _) = parse_offset_msg_id(offset_msg_id).unwrap();
    assert_eq!(broker, node.rocketmq_broker);
    let timeline = trace_shows(&node, offset_msg_id, &["Deliver", "ons-tags-g", "key-TagA-0"]).await;
    let stored = read
        .iter()
        .find(|message| message.keys().any(|key| key == "key-TagA-0"))
        .unwrap();
    assert!(
        timeline.contains(&format!("offset msgId {offset_msg_id} is msgId {}", stored.msg_id())),
        "{timeline}"
    );
    // An offset msgId naming an offset where no message is stored says so.
    let nowhere = meridian_proto::remoting::message::offset_msg_id(node.rocketmq_broker, 1 << 40);
    let (ok, _, stderr) = node.cli(&["trace", "--tracer", &node.http.to_string(), &nowhere], "");
    assert!(!ok);
    assert!(
        stderr.contains("RocketMQ offset msgId") && stderr.contains(&node.rocketmq_broker.to_string()),
        "{stderr}"
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ali_ons_consumer_fails_a_message_and_gets_it_again_from_the_retry_topic() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(&dir.path().join("data"), &[]);
    node.create_topic("ons-retry", 2).await;
    node.create_group("ons-retry-g", &["ons-retry"]).await;
    let report = run_ali_ons(&node, dir.path(), "ons-retry", "ons-retry-g", &["retry"]);
    let deliveries = report["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    assert_eq!(deliveries[1]["reconsume_times"], 1);
    trace_shows(&node, "--key=fail-once", &["Retry", "%RETRY%ons-retry-g"]).await;
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ali_ons_transaction_producer_is_checked_back_and_its_answer_decides_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "[transaction]\ncheck_interval_ms = 1000\n").unwrap();
    let node = DevNode::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    node.create_topic("ons-tx", 2).await;
    node.create_group("ons-tx-g", &["ons-tx"]).await;
    let report = run_ali_ons(&node, dir.path(), "ons-tx", "ons-tx-g", &["transaction"]);
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.iter().any(|check| check["keys"] == "tx-commit"), "{checks:?}");
    assert!(checks.iter().any(|check| check["keys"] == "tx-rollback"), "{checks:?}");
    // Meridian's SDK sees the same outcome: the committed message only.
    let read = crate::read_all(&node, "ons-tx").await;
    assert_eq!(read.len(), 1, "only the committed message reached the topic");
    assert_eq!(read[0].keys().collect::<Vec<_>>(), ["tx-commit"]);
    trace_shows(&node, "--key=tx-commit", &["Deliver", "ons-tx-g"]).await;
    node.stop();
}

/// Java clients older than 4.5.1 send to the broker's VIP channel (port − 2), and RocketMQ 5
/// producers may compress with LZ4 or ZSTD: both reach the same broker, whose main port serves
/// the bodies inflated (sysFlag without the compression bits) to any client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vip_channel_takes_lz4_and_zstd_bodies_and_the_main_port_serves_them_inflated() {
    use meridian_proto::remoting::message::{
        COMPRESSION_LZ4, COMPRESSION_ZLIB, COMPRESSION_ZSTD, SYSFLAG_COMPRESSED, compress_body,
    };
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("rmq-vip", 1).await;
    let vip = node.rocketmq_broker_vip.expect("meridian dev serves the VIP channel");
    assert_ne!(vip, node.rocketmq_broker);
    let mut vip_wire = Wire::connect(vip);
    let bodies: Vec<Vec<u8>> = [COMPRESSION_LZ4, COMPRESSION_ZSTD, COMPRESSION_ZLIB]
        .iter()
        .map(|kind| format!("compressed with type {kind}; ").repeat(300).into_bytes())
        .collect();
    for (kind, body) in [COMPRESSION_LZ4, COMPRESSION_ZSTD, COMPRESSION_ZLIB]
        .iter()
        .zip(&bodies)
    {
        let sys_flag = (SYSFLAG_COMPRESSED | kind << 8).to_string();
        let props = properties(&format!("key-{kind}"), "TagZ", &MessageId::generate().to_string());
        let answer = vip_wire.call(
            request(
                request::SEND_MESSAGE_V2,
                &[
                    ("a", "rmq-vip-p"),
                    ("b", "rmq-vip"),
                    ("e", "0"),
                    ("f", &sys_flag),
                    ("i", &props),
                ],
            )
            .with_body(compress_body(body, *kind)),
        );
        assert_eq!(answer.code, response::SUCCESS, "type {kind}: {}", remark(&answer));
    }
    // A body that claims LZ4 but is not an LZ4 frame is refused naming the format.
    let bad = vip_wire.call(
        request(
            request::SEND_MESSAGE_V2,
            &[
                ("a", "rmq-vip-p"),
                ("b", "rmq-vip"),
                ("e", "0"),
                ("f", &(SYSFLAG_COMPRESSED | COMPRESSION_LZ4 << 8).to_string()),
            ],
        )
        .with_body(b"not lz4".to_vec()),
    );
    assert_eq!(bad.code, response::MESSAGE_ILLEGAL);
    assert!(remark(&bad).contains("LZ4 frame"), "{}", remark(&bad));

    let mut main = Wire::connect(node.rocketmq_broker);
    // Sends are acknowledged before the consume queue is built: wait until the three are readable.
    let queued = eventually(Duration::from_secs(10), || {
        let max = main.call(request(
            request::GET_MAX_OFFSET,
            &[("topic", "rmq-vip"), ("queueId", "0")],
        ));
        max.ext_fields.get("offset").map(String::as_str) == Some("3")
    })
    .await;
    assert!(queued, "the three compressed sends never became readable");
    node.create_group("rmq-vip-g", &["rmq-vip"]).await;
    let pull = main.call(request(
        request::PULL_MESSAGE,
        &[
            ("consumerGroup", "rmq-vip-g"),
            ("topic", "rmq-vip"),
            ("queueId", "0"),
            ("queueOffset", "0"),
            ("maxMsgNums", "32"),
            ("sysFlag", "2"),
            ("suspendTimeoutMillis", "1000"),
        ],
    ));
    assert_eq!(pull.code, response::SUCCESS, "{}", remark(&pull));
    let messages = decode_all_stored(&pull.body).unwrap();
    let got: Vec<&[u8]> = messages.iter().map(|message| message.body).collect();
    let want: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    assert_eq!(got, want, "stored and served inflated, in order");
    assert!(
        messages
            .iter()
            .all(|message| message.sys_flag & (SYSFLAG_COMPRESSED | 0x700) == 0),
        "served without compression bits, so clients of any version read them"
    );
    node.stop();
}

/// Runs the CLI against `node` as `user` with `secret` (for `meridian dev --auth`).
fn cli_as(node: &DevNode, user: &str, secret: &str, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(meridian_tests::meridian_bin())
        .args(args)
        .env("MERIDIAN_NAMESERVER", node.nameserver.to_string())
        .env("MERIDIAN_USER", user)
        .env("MERIDIAN_SECRET", secret)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running meridian");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn exported(text: &str, name: &str) -> String {
    let prefix = format!("export {name}=");
    text.lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_owned()
}

/// A SEND_MESSAGE_V2 of one TagA message to `topic`.
fn send_v2(topic: &str, body: &str) -> RemotingCommand {
    let props = properties("signed-key", "TagA", &MessageId::generate().to_string());
    request(
        request::SEND_MESSAGE_V2,
        &[("a", "signed-producer"), ("b", topic), ("e", "0"), ("i", &props)],
    )
    .with_body(body.as_bytes().to_vec())
}

fn signed(mut command: RemotingCommand, user: &str, secret: &str) -> RemotingCommand {
    meridian_proto::remoting::acl::sign(&mut command.ext_fields, &command.body, user, secret.as_bytes());
    command
}

/// With `[auth]` on, RocketMQ requests must carry an AccessKey signature of a user given RocketMQ
/// access (`meridian user create NAME --rocketmq`): unmodified clients configured with that
/// accessKey/secretKey (ali-ons, PyPI `rocketmq`) produce and consume; unsigned requests, a wrong
/// secret, a user without RocketMQ access, an unknown user and a stale timestamp are refused with
/// NO_PERMISSION naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocketmq_clients_sign_with_their_access_key_and_everything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(&dir.path().join("data"), &["--auth"]);
    let banner = node.banner().join("\n");
    let admin_secret = exported(&banner, "MERIDIAN_SECRET");
    for args in [
        &["topic", "create", "signed-wire", "--queues", "1"][..],
        &["topic", "create", "signed-ons", "--queues", "2"][..],
        &["topic", "create", "signed-py", "--queues", "2"][..],
        &["group", "create", "signed-ons-g", "--topics", "signed-ons"][..],
        &["group", "create", "signed-py-g", "--topics", "signed-py"][..],
    ] {
        let (ok, _, stderr) = cli_as(&node, "admin", &admin_secret, args);
        assert!(ok, "{args:?}: {stderr}");
    }
    let (ok, stdout, stderr) = cli_as(
        &node,
        "admin",
        &admin_secret,
        &["user", "create", "rmq-app", "--rocketmq"],
    );
    assert!(
        ok && stdout.contains("RocketMQ clients: accessKey rmq-app"),
        "{stdout}{stderr}"
    );
    let app_secret = exported(&stdout, "MERIDIAN_SECRET");
    // Authorization is on with auth: the application may produce to and consume its topics.
    for args in [
        &["acl", "grant", "user:rmq-app", "PUB,SUB", "topic:signed-*"][..],
        &["acl", "grant", "user:rmq-app", "SUB", "group:signed-*"][..],
    ] {
        let (ok, _, stderr) = cli_as(&node, "admin", &admin_secret, args);
        assert!(ok, "{args:?}: {stderr}");
    }
    let (ok, stdout, stderr) = cli_as(&node, "admin", &admin_secret, &["user", "create", "native-only"]);
    assert!(ok, "{stderr}");
    let native_secret = exported(&stdout, "MERIDIAN_SECRET");
    let (ok, stdout, _) = cli_as(&node, "admin", &admin_secret, &["user", "list", "--json"]);
    assert!(ok);
    let users: Value = serde_json::from_str(&stdout).unwrap();
    let rocketmq_of = |name: &str| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|user| user["name"] == name)
            .map(|user| user["rocketmq"].clone())
    };
    assert_eq!(rocketmq_of("rmq-app"), Some(Value::Bool(true)));
    assert_eq!(rocketmq_of("native-only"), Some(Value::Bool(false)));
    // The secret is nowhere in the nameserver's state, log or snapshots, only sealed.
    for entry in walk(&dir.path().join("data").join("nameserver")) {
        if let Ok(bytes) = std::fs::read(&entry) {
            assert!(
                !bytes
                    .windows(app_secret.len())
                    .any(|window| window == app_secret.as_bytes()),
                "{} holds the secret in the clear",
                entry.display()
            );
        }
    }

    // By hand: every refusal names its problem; the right signature is accepted.
    let mut broker = Wire::connect(node.rocketmq_broker);
    let wait_for_users = eventually(Duration::from_secs(10), || {
        broker
            .call(signed(send_v2("signed-wire", "first"), "rmq-app", &app_secret))
            .code
            == response::SUCCESS
    })
    .await;
    assert!(
        wait_for_users,
        "the broker never accepted rmq-app's signature; log:\n{}",
        node.log()
    );
    let cases = [
        (send_v2("signed-wire", "unsigned"), "authentication required"),
        (
            signed(send_v2("signed-wire", "wrong"), "rmq-app", "not-the-secret"),
            "does not match",
        ),
        (
            signed(send_v2("signed-wire", "native"), "native-only", &native_secret),
            "has no RocketMQ access",
        ),
        (
            signed(send_v2("signed-wire", "ghost"), "ghost", "x"),
            "has no RocketMQ access",
        ),
    ];
    for (command, expected) in cases {
        let answer = broker.call(command);
        assert_eq!(answer.code, response::NO_PERMISSION, "{}", remark(&answer));
        assert!(remark(&answer).contains(expected), "{expected}: {}", remark(&answer));
        assert!(!remark(&answer).contains(&app_secret));
    }
    // A body changed after signing is refused; a signed Timestamp must be fresh.
    let mut tampered = signed(send_v2("signed-wire", "original"), "rmq-app", &app_secret);
    tampered.body = Bytes::from_static(b"tampered");
    assert_eq!(broker.call(tampered).code, response::NO_PERMISSION);
    let now = meridian_proto::time::now_millis();
    let stale = signed(
        send_v2("signed-wire", "stale").with("Timestamp", (now - 3_600_000).to_string()),
        "rmq-app",
        &app_secret,
    );
    let answer = broker.call(stale);
    assert!(
        remark(&answer).contains("outside the 300000 ms window"),
        "{}",
        remark(&answer)
    );
    let fresh = signed(
        send_v2("signed-wire", "fresh").with("Timestamp", now.to_string()),
        "rmq-app",
        &app_secret,
    );
    assert_eq!(broker.call(fresh).code, response::SUCCESS);

    // Unmodified clients given accessKey rmq-app and its secret.
    let credentials = [
        ("ROCKETMQ_ACCESS_KEY", "rmq-app"),
        ("ROCKETMQ_SECRET_KEY", app_secret.as_str()),
    ];
    let report = run_ali_ons_with(
        &node,
        dir.path(),
        "signed-ons",
        "signed-ons-g",
        &["tags", "3"],
        &credentials,
    );
    assert_eq!(report["received"].as_array().map(Vec::len), Some(3), "{report}");
    let report = run_scenario_with(&node, dir.path(), "signed-py", "signed-py-g", "3", &credentials);
    let received = report["received"].as_array().unwrap();
    assert!(
        received
            .iter()
            .filter(|entry| entry["origin"] == "rocketmq-python")
            .count()
            >= 3,
        "{report}"
    );
    node.stop();
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if entry.metadata().is_ok_and(|metadata| metadata.len() < 64 << 20) {
                files.push(path);
            }
        }
    }
    files
}

/// RocketMQ SDKs with tracing on send `TraceDataEncoder` records to `RMQ_SYS_TRACE_TOPIC`: the
/// nameserver routes that topic to every broker without approval, the broker acknowledges the send,
/// and the consumer steps (SubBefore, SubAfter) appear in the message's timeline next to the
/// broker's own steps; the Pub record is not stored again and the topic holds no messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocketmq_trace_records_become_client_side_steps_of_the_timeline() {
    use meridian_proto::remoting::trace::RMQ_TRACE_TOPIC;
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(&dir.path().join("data"), &[]);
    node.create_topic("rmq-traced", 1).await;
    node.create_group("rmq-traced-g", &["rmq-traced"]).await;

    let mut nameserver = Wire::connect(node.rocketmq_nameserver);
    let route = nameserver.call(request(request::GET_ROUTEINFO_BY_TOPIC, &[("topic", RMQ_TRACE_TOPIC)]));
    assert_eq!(route.code, response::SUCCESS, "{}", remark(&route));
    let body: Value = serde_json::from_slice(&route.body).unwrap();
    assert_eq!(
        body["brokerDatas"][0]["brokerAddrs"]["0"],
        node.rocketmq_broker.to_string()
    );
    assert_eq!(body["queueDatas"][0]["perm"], 6);

    let mut broker = Wire::connect(node.rocketmq_broker);
    let msg_id = MessageId::generate().to_string();
    let props = properties("traced-key", "TagA", &msg_id);
    let sent = broker.call(
        request(
            request::SEND_MESSAGE_V2,
            &[("a", "traced-producer"), ("b", "rmq-traced"), ("e", "0"), ("i", &props)],
        )
        .with_body(b"traced body".to_vec()),
    );
    assert_eq!(sent.code, response::SUCCESS, "{}", remark(&sent));
    let offset_msg_id = sent.ext_fields["msgId"].clone();

    // What a Java consumer's AsyncTraceDispatcher sends, built by hand in TraceDataEncoder's format.
    let now = meridian_proto::time::now_millis();
    let records = [
        vec![
            "Pub".to_owned(),
            now.to_string(),
            "DefaultRegion".into(),
            "traced-producer".into(),
            "rmq-traced".into(),
            msg_id.clone(),
            "TagA".into(),
            "traced-key".into(),
            node.rocketmq_broker.to_string(),
            "11".into(),
            "2".into(),
            "0".into(),
            offset_msg_id,
            "true".into(),
        ],
        vec![
            "SubBefore".to_owned(),
            (now + 50).to_string(),
            "DefaultRegion".into(),
            "rmq-traced-g".into(),
            "req-1".into(),
            msg_id.clone(),
            "0".into(),
            "traced-key".into(),
        ],
        vec![
            "SubAfter".to_owned(),
            "req-1".into(),
            msg_id.clone(),
            "7".into(),
            "true".into(),
            "traced-key".into(),
            "0".into(),
            (now + 57).to_string(),
            "rmq-traced-g".into(),
        ],
    ]
    .iter()
    .map(|fields| format!("{}\u{2}", fields.join("\u{1}")))
    .collect::<String>();
    let trace_props = {
        let mut builder = PropertiesBuilder::new();
        builder.keys(&[msg_id.as_str(), "traced-key"]).unwrap();
        String::from_utf8(builder.finish()).unwrap()
    };
    let answer = broker.call(
        request(
            request::SEND_MESSAGE_V2,
            &[
                ("a", "_INNER_TRACE_PRODUCER-rmq-traced-g"),
                ("b", RMQ_TRACE_TOPIC),
                ("e", "0"),
                ("i", &trace_props),
            ],
        )
        .with_body(records.into_bytes()),
    );
    assert_eq!(answer.code, response::SUCCESS, "{}", remark(&answer));
    assert!(answer.ext_fields.contains_key("msgId"));

    let timeline = trace_shows(
        &node,
        &msg_id,
        &["Pub", "Store", "SubBefore", "SubAfter", "rmq-traced-g"],
    )
    .await;
    assert_eq!(
        timeline.lines().filter(|line| line.contains(" Pub ")).count(),
        1,
        "the SDK's Pub record is not a second Pub:\n{timeline}"
    );
    node.stop();
}

/// A SQL-92 subscription (`expressionType = SQL92`) is accepted on heartbeat and evaluated by the
/// broker on pull over the messages' user properties and tags; a malformed one is refused with
/// SUBSCRIPTION_PARSE_FAILED naming the position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql92_subscription_gets_exactly_the_messages_whose_properties_match() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(&dir.path().join("data"), &[]);
    node.create_topic("rmq-sql", 1).await;
    node.create_group("rmq-sql-g", &["rmq-sql"]).await;
    let mut broker = Wire::connect(node.rocketmq_broker);
    for (index, (amount, region, tag)) in [
        ("1", "eu", "TagA"),
        ("5", "eu", "TagA"),
        ("10", "us", "TagB"),
        ("7", "eu", "TagB"),
    ]
    .iter()
    .enumerate()
    {
        let mut builder = PropertiesBuilder::new();
        builder
            .tag(tag)
            .unwrap()
            .msg_id(&MessageId::generate().to_string())
            .property("amount", amount)
            .unwrap()
            .property("region", region)
            .unwrap();
        let props = String::from_utf8(builder.finish()).unwrap();
        let answer = broker.call(
            request(
                request::SEND_MESSAGE_V2,
                &[("a", "sql-producer"), ("b", "rmq-sql"), ("e", "0"), ("i", &props)],
            )
            .with_body(format!("sql-{index}").into_bytes()),
        );
        assert_eq!(answer.code, response::SUCCESS, "{}", remark(&answer));
    }
    let heartbeat = serde_json::json!({
        "clientID": "127.0.0.1@sql-test",
        "producerDataSet": [],
        "consumerDataSet": [{
            "groupName": "rmq-sql-g", "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING",
            "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET", "unitMode": false,
            "subscriptionDataSet": [{"topic": "rmq-sql", "subString": "amount > 3 AND region = 'eu'",
                "tagsSet": [], "codeSet": [], "subVersion": 1, "expressionType": "SQL92"}]
        }]
    });
    let answer = broker.call(request(request::HEART_BEAT, &[]).with_body(heartbeat.to_string().into_bytes()));
    assert_eq!(answer.code, response::SUCCESS, "{}", remark(&answer));
    let queued = eventually(Duration::from_secs(10), || {
        let max = broker.call(request(
            request::GET_MAX_OFFSET,
            &[("topic", "rmq-sql"), ("queueId", "0")],
        ));
        max.ext_fields.get("offset").map(String::as_str) == Some("4")
    })
    .await;
    assert!(queued);
    let pull = |broker: &mut Wire, fields: &[(&str, &str)]| {
        let mut all = vec![
            ("consumerGroup", "rmq-sql-g"),
            ("topic", "rmq-sql"),
            ("queueId", "0"),
            ("queueOffset", "0"),
            ("maxMsgNums", "32"),
        ];
        all.extend_from_slice(fields);
        broker.call(request(request::PULL_MESSAGE, &all))
    };
    // The expression registered by heartbeat (no subscription in the pull).
    let registered = pull(&mut broker, &[("sysFlag", "0")]);
    assert_eq!(registered.code, response::SUCCESS, "{}", remark(&registered));
    let bodies: Vec<Vec<u8>> = decode_all_stored(&registered.body)
        .unwrap()
        .iter()
        .map(|message| message.body.to_vec())
        .collect();
    assert_eq!(bodies, [b"sql-1".to_vec(), b"sql-3".to_vec()]);
    // One carried by the pull, over tags and a BETWEEN.
    let carried = pull(
        &mut broker,
        &[
            ("sysFlag", "4"),
            ("subscription", "TAGS = 'TagB' AND amount BETWEEN 8 AND 20"),
            ("expressionType", "SQL92"),
        ],
    );
    let bodies: Vec<Vec<u8>> = decode_all_stored(&carried.body)
        .unwrap()
        .iter()
        .map(|message| message.body.to_vec())
        .collect();
    assert_eq!(bodies, [b"sql-2".to_vec()]);
    let nothing = pull(
        &mut broker,
        &[
            ("sysFlag", "4"),
            ("subscription", "amount > 100"),
            ("expressionType", "SQL92"),
        ],
    );
    assert_eq!(nothing.code, response::PULL_RETRY_IMMEDIATELY);
    assert_eq!(nothing.ext_fields["nextBeginOffset"], "4");
    let bad = pull(
        &mut broker,
        &[
            ("sysFlag", "4"),
            ("subscription", "amount >"),
            ("expressionType", "SQL92"),
        ],
    );
    assert_eq!(bad.code, response::SUBSCRIPTION_PARSE_FAILED);
    assert!(remark(&bad).contains("at byte"), "{}", remark(&bad));
    node.stop();
}

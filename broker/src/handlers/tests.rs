//! Handler tests across request families: sends, pulls, offsets and consumers on a governed
//! broker.

use super::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_proto::filter::TagFilter;
use meridian_proto::messages::{
    CommitOffsetRequest, ConsumerHeartbeat, CreateTopicRequest, PullRequest, PullResponse, PullStatus,
    ResetOffsetRequest, SendRequest, SendResponse, perm,
};
use prost::Message;

use crate::config::BrokerConfig;
use crate::error::Result;
use crate::registry::Approved;
use crate::registry::Governance;
use crate::state::BrokerState;
use crate::store::MessageStore;
use consumers::consumer_heartbeat;
use meridian_proto::ErrorCode;
use meridian_proto::auth::Principal;
use meridian_proto::messages::{BrokerMetadata, GroupGrant, MessageData, TopicGrant};
use offsets::commit_offset;
use pull::try_pull;
use send::decode_send;
use topics::create_topic;

fn governed_state(dir: &std::path::Path) -> Arc<BrokerState> {
    let config = BrokerConfig {
        nameservers: vec!["127.0.0.1:7800".into()],
        data_dir: dir.to_owned(),
        idc: "dc1".into(),
        ..BrokerConfig::default()
    };
    let mut store_config = config.store.clone();
    store_config.segment_size = 1 << 20;
    let store = MessageStore::open(dir, store_config, "127.0.0.1:7911".parse().unwrap(), Arc::default()).unwrap();
    let governance = Arc::new(Governance::new(config.broker_name.clone(), config.nameservers.clone()));
    let grant = |name: &str, perm| TopicGrant {
        name: name.into(),
        queues: 2,
        perm,
        ..TopicGrant::default()
    };
    governance.replace(Approved::from_metadata(BrokerMetadata {
        version: 1,
        topics: vec![grant("orders", perm::READ | perm::WRITE), grant("archive", perm::READ)],
        groups: vec![GroupGrant {
            name: "billing".into(),
            topics: vec!["orders".into()],
            max_retries: 16,
            broadcasting: false,
        }],
        sdk_policy: None,
        users: Vec::new(),
        acl_json: String::new(),
    }));
    for topic in ["orders", "archive", "payments"] {
        store.create_topic(topic, 2).unwrap();
    }
    BrokerState::for_tests(config, store, Some(governance))
}

fn send_body(topic: &str) -> Bytes {
    let request = SendRequest {
        topic: topic.into(),
        queue_id: 0,
        messages: vec![MessageData {
            flags: 0,
            born_timestamp: 1,
            properties: Bytes::new(),
            body: Bytes::from_static(b"x"),
            reconsume_count: 0,
        }],
        producer_group: String::new(),
        sdk: Default::default(),
    };
    Bytes::from(request.encode_to_vec())
}

fn now(reply: Reply) -> Result<Bytes> {
    match reply {
        Reply::Now(result) => result,
        Reply::Later(_) => panic!("expected an immediate answer"),
    }
}

#[test]
fn a_pull_past_the_confirmed_messages_waits_for_them_instead_of_moving_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig::default();
    let options = crate::store::StoreOptions {
        replicated: true,
        ..Default::default()
    };
    let store = MessageStore::open_with(
        dir.path(),
        config.store.clone(),
        "127.0.0.1:7911".parse().unwrap(),
        Arc::default(),
        options,
    )
    .unwrap();
    store.create_topic("orders", 1).unwrap();
    let state = BrokerState::for_tests(config, store, None);
    let peer = "127.0.0.1:5000".parse().unwrap();
    let appended = state
        .store
        .append(
            "orders",
            Some(0),
            &[decode_send(&state, &Principal::Node, send_body("orders"), peer)
                .unwrap()
                .messages[0]
                .clone()],
            peer,
        )
        .unwrap();
    let pull_at = |offset| PullRequest {
        group: "billing".into(),
        topic: "orders".into(),
        queue_id: 0,
        offset,
        max_count: 32,
        max_bytes: 1 << 20,
        ..Default::default()
    };
    let all = TagFilter::parse("*").unwrap();
    assert!(
        try_pull(&state, &pull_at(0), &all).unwrap().is_none(),
        "nothing is confirmed yet"
    );
    assert!(
        try_pull(&state, &pull_at(1), &all).unwrap().is_none(),
        "an offset within what is written waits"
    );
    let moved = PullResponse::decode(try_pull(&state, &pull_at(5), &all).unwrap().unwrap()).unwrap();
    assert_eq!(
        moved.status,
        PullStatus::OffsetMoved as i32,
        "an offset past what is written moves"
    );
    state.store.raise_replication_limit(appended.end_offset);
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        if let Some(body) = try_pull(&state, &pull_at(0), &all).unwrap() {
            break PullResponse::decode(body).unwrap();
        }
        assert!(Instant::now() < deadline, "the confirmed message never became visible");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!((found.status, found.next_offset), (PullStatus::Found as i32, 1));
    state.store.shutdown();
}

#[test]
fn a_refused_topic_fails_only_its_own_send_in_a_combined_append() {
    let dir = tempfile::tempdir().unwrap();
    let state = governed_state(dir.path());
    let peer = "127.0.0.1:5000".parse().unwrap();
    let bodies = vec![
        send_body("orders"),
        send_body("payments"),
        send_body("archive"),
        send_body("orders"),
    ];
    let outcomes: Vec<std::result::Result<u64, ErrorCode>> = send_many(&state, &Principal::Node, bodies, peer)
        .into_iter()
        .map(|reply| {
            now(reply)
                .map(|body| SendResponse::decode(body).unwrap().results[0].queue_offset)
                .map_err(|error| error.code())
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            Ok(0),
            Err(ErrorCode::NotApproved),
            Err(ErrorCode::FailedPrecondition),
            Ok(1)
        ]
    );
    state.store.shutdown();
}

#[test]
fn a_broker_in_an_evacuated_idc_refuses_sends_until_restored() {
    let dir = tempfile::tempdir().unwrap();
    let state = governed_state(dir.path());
    let peer = "127.0.0.1:5000".parse().unwrap();
    let governance = state.governance.clone().unwrap();
    let send = || {
        now(send_many(&state, &Principal::Node, vec![send_body("orders")], peer)
            .pop()
            .unwrap())
    };
    governance.set_evacuated(vec!["dc2".into()]);
    assert!(send().is_ok(), "another IDC's drill changes nothing here");
    governance.set_evacuated(vec!["dc1".into()]);
    let error = send().unwrap_err();
    assert_eq!(error.code(), ErrorCode::Evacuated);
    assert!(error.code().is_retriable());
    assert!(
        error.to_string().contains("\"dc1\", which a failover drill evacuated"),
        "{error}"
    );
    governance.set_evacuated(Vec::new());
    assert!(send().is_ok());
    state.store.shutdown();
}

#[test]
fn consumer_requests_need_an_approved_group_granted_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let state = governed_state(dir.path());
    let commit = |group: &str, topic: &str| {
        let request = CommitOffsetRequest {
            group: group.into(),
            topic: topic.into(),
            queue_id: 0,
            offset: 0,
            ..Default::default()
        };
        commit_offset(&state, &Principal::Node, Bytes::from(request.encode_to_vec())).map_err(|error| error.code())
    };
    assert_eq!(commit("billing", "orders"), Ok(Bytes::new()));
    assert_eq!(commit("audit", "orders"), Err(ErrorCode::NotApproved));
    assert_eq!(commit("billing", "archive"), Err(ErrorCode::FailedPrecondition));

    let heartbeat = |topics: &[&str]| {
        let request = ConsumerHeartbeat {
            group: "billing".into(),
            client_id: "c1".into(),
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            sdk_version: String::new(),
            ..ConsumerHeartbeat::default()
        };
        consumer_heartbeat(
            &state,
            &Principal::Node,
            Bytes::from(request.encode_to_vec()),
            "127.0.0.1:5000".parse().unwrap(),
        )
        .map_err(|error| error.code())
    };
    assert!(heartbeat(&["orders"]).is_ok());
    assert_eq!(heartbeat(&["orders", "payments"]), Err(ErrorCode::FailedPrecondition));

    let pull = PullRequest {
        group: "audit".into(),
        topic: "orders".into(),
        queue_id: 0,
        offset: 0,
        max_count: 1,
        max_bytes: 1024,
        long_poll_ms: 0,
        ..Default::default()
    };
    let error = now(super::pull(
        &state,
        &Principal::Node,
        Bytes::from(pull.encode_to_vec()),
        "127.0.0.1:5000".parse().unwrap(),
    ))
    .unwrap_err();
    assert_eq!(error.code(), ErrorCode::NotApproved);
    assert!(error.to_string().contains("meridian group request audit"), "{error}");

    let create = CreateTopicRequest {
        topic: "new".into(),
        queues: 1,
    };
    let error = now(create_topic(
        &state,
        &Principal::Node,
        Bytes::from(create.encode_to_vec()),
    ))
    .unwrap_err();
    assert_eq!(error.code(), ErrorCode::FailedPrecondition);
    state.store.shutdown();
}

#[test]
fn consumers_report_handler_times_and_the_clients_view_shows_their_percentiles() {
    use meridian_proto::client_stats::{BUCKETS, ClientStats};

    let dir = tempfile::tempdir().unwrap();
    let state = governed_state(dir.path());
    let heartbeat = |client_id: &str, stats: Option<ClientStats>| {
        let request = ConsumerHeartbeat {
            group: "billing".into(),
            client_id: client_id.into(),
            topics: vec!["orders".into()],
            stats,
            ..ConsumerHeartbeat::default()
        };
        consumer_heartbeat(
            &state,
            &Principal::Node,
            Bytes::from(request.encode_to_vec()),
            "127.0.0.1:5000".parse().unwrap(),
        )
    };
    // 98 messages of ~20 ms (bucket 15: 16.4-32.8 ms), 2 of ~1 s (bucket 20).
    let mut consume_latency_us = vec![0; BUCKETS];
    consume_latency_us[15] = 98;
    consume_latency_us[20] = 2;
    let stats = ClientStats {
        consume_latency_us,
        ..ClientStats::default()
    };
    heartbeat("timed", Some(stats.clone())).unwrap();
    heartbeat("old-sdk", None).unwrap();

    let oversized = ClientStats {
        consume_latency_us: vec![1; BUCKETS + 1],
        ..ClientStats::default()
    };
    let error = heartbeat("bad", Some(oversized)).unwrap_err();
    assert_eq!(error.code(), ErrorCode::MalformedFrame);
    assert!(
        error
            .to_string()
            .contains("consume_latency_us has 33 buckets, at most 32"),
        "{error}"
    );

    let report = crate::clients::ClientsView::new(state.clone()).report();
    let consumer = |client_id: &str| {
        report
            .clients
            .iter()
            .find(|entry| entry.client_id == client_id)
            .unwrap_or_else(|| panic!("{client_id} is listed: {:?}", report.clients))
    };
    let timed = consumer("timed");
    assert_eq!(timed.consumed, Some(100));
    assert_eq!(timed.consume_p50_us, Some(32_767));
    assert_eq!(timed.consume_p99_us, Some(1_048_575));
    let old = consumer("old-sdk");
    assert_eq!(
        (old.consumed, old.consume_p50_us, old.consume_p99_us),
        (None, None, None)
    );
    assert!(report.clients.iter().all(|entry| entry.client_id != "bad"));
    let json = serde_json::to_value(timed).unwrap();
    assert_eq!(json["consume_p50_us"], 32_767);
    assert_eq!(json["consumed"], 100);
    state.store.shutdown();
}

/// A governed broker with `[auth]` on and an ACL: alice may SUB `orders` as `billing`, bob may
/// PUB `orders` but is denied it on the literal name by a deny as specific as his allow.
fn authorizing_state(dir: &std::path::Path) -> Arc<BrokerState> {
    let state = governed_state(dir);
    let mut config = state.config.clone();
    config.auth.enabled = true;
    let governance = state.governance.clone();
    let acl = serde_json::json!({
        "rules": [
            {"subject": "user:alice", "effect": "allow", "actions": ["SUB"], "resource": "topic:ord*"},
            {"subject": "user:alice", "effect": "allow", "actions": ["SUB"], "resource": "group:billing"},
            {"subject": "user:bob", "effect": "allow", "actions": ["PUB"], "resource": "topic:orders"},
            {"subject": "user:carol", "effect": "allow", "actions": ["PUB"], "resource": "topic:orders"},
            {"subject": "user:carol", "effect": "deny", "actions": ["PUB"], "resource": "topic:orders"},
        ],
    });
    let grant = |name: &str| TopicGrant {
        name: name.into(),
        queues: 2,
        perm: perm::READ | perm::WRITE,
        ..TopicGrant::default()
    };
    governance
        .as_ref()
        .unwrap()
        .replace(Approved::from_metadata(BrokerMetadata {
            version: 2,
            topics: vec![grant("orders")],
            groups: vec![GroupGrant {
                name: "billing".into(),
                topics: vec!["orders".into()],
                max_retries: 16,
                broadcasting: false,
            }],
            sdk_policy: None,
            users: Vec::new(),
            acl_json: acl.to_string(),
        }));
    BrokerState::for_tests(config, state.store.clone(), governance)
}

#[test]
fn authorization_sends_need_pub_consumers_need_sub_on_group_and_topic_and_deny_beats_allow() {
    let dir = tempfile::tempdir().unwrap();
    let state = authorizing_state(dir.path());
    let peer = "127.0.0.1:5000".parse().unwrap();
    let user = |name: &str| Principal::User(name.into());
    let send = |principal: &Principal| {
        now(send_many(&state, principal, vec![send_body("orders")], peer)
            .pop()
            .unwrap())
    };
    assert!(send(&user("bob")).is_ok());
    assert!(send(&Principal::Node).is_ok());
    let refused = send(&user("alice")).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::PermissionDenied);
    let message = refused.to_string();
    assert!(message.contains("user \"alice\" may not PUB topic:orders"), "{message}");
    assert!(
        message.contains("meridian acl grant user:alice PUB topic:orders"),
        "{message}"
    );
    let denied = send(&user("carol")).unwrap_err().to_string();
    assert!(denied.contains("denies it"), "{denied}");
    // A connection that did not log in gets nothing when authorization is on.
    assert_eq!(
        send(&Principal::Anonymous).unwrap_err().code(),
        ErrorCode::PermissionDenied
    );

    let commit = |principal: &Principal| {
        let request = CommitOffsetRequest {
            group: "billing".into(),
            topic: "orders".into(),
            queue_id: 0,
            offset: 0,
            ..Default::default()
        };
        commit_offset(&state, principal, Bytes::from(request.encode_to_vec())).map_err(|error| error.code())
    };
    assert_eq!(commit(&user("alice")), Ok(Bytes::new()));
    assert_eq!(commit(&user("bob")), Err(ErrorCode::PermissionDenied));
    let pull = |principal: &Principal| {
        let request = PullRequest {
            group: "billing".into(),
            topic: "orders".into(),
            queue_id: 0,
            offset: 0,
            max_count: 1,
            max_bytes: 1024,
            long_poll_ms: 0,
            ..Default::default()
        };
        match super::pull(&state, principal, Bytes::from(request.encode_to_vec()), peer) {
            Reply::Now(Err(error)) => Err(error.code()),
            _ => Ok(()),
        }
    };
    assert_eq!(pull(&user("alice")), Ok(()));
    assert_eq!(pull(&user("bob")), Err(ErrorCode::PermissionDenied));
    // Offset resets need ADMIN on the group, which alice lacks.
    let reset = ResetOffsetRequest {
        group: "billing".into(),
        topic: "orders".into(),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime
        .block_on(offsets::reset_offset(
            state.clone(),
            user("alice"),
            Bytes::from(reset.encode_to_vec()),
        ))
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::PermissionDenied);
    assert!(error.to_string().contains("ADMIN group:billing"), "{error}");
    state.store.shutdown();
}

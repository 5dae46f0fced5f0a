//! Nameservers serving the framed protocol on loopback sockets: Raft between them over TCP,
//! writes forwarded to the leader, routes with broker liveness, and bad frames refused.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_nameserver::config::MemberConfig;
use meridian_nameserver::metrics::NameserverMetrics;
use meridian_nameserver::service::{Query, WriteOp, WriteRequest};
use meridian_nameserver::state::Response;
use meridian_nameserver::{Nameserver, NameserverConfig, NameserverService};
use meridian_proto::compress::compress;
use meridian_proto::messages::{
    BrokerHeartbeat, BrokerHeartbeatResponse, BrokerRegistration, TopicList, TopicQueues, TopicRoute,
    TopicRouteRequest, registration_digest, role,
};
use meridian_proto::transport::{ConnectionPool, TransportConfig, TransportError};
use meridian_proto::{ErrorCode, RequestCode};
use prost::Message;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::harness::{PATIENCE, approve_topic, request_topic, test_config};

struct Running {
    addr: String,
    service: Arc<NameserverService>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

fn config(dir: &TempDir, node_id: u64, addrs: &[std::net::SocketAddr]) -> NameserverConfig {
    NameserverConfig {
        node_id,
        listen: addrs[node_id as usize - 1],
        http_listen: None,
        data_dir: dir.path().join(format!("node-{node_id}")),
        members: addrs
            .iter()
            .enumerate()
            .map(|(index, addr)| MemberConfig {
                id: index as u64 + 1,
                addr: addr.to_string(),
                http_addr: String::new(),
                idc: format!("dc{}", index + 1),
            })
            .collect(),
        broker_timeout_ms: 1000,
        write_timeout_ms: 3000,
        raft: test_config(),
        ..NameserverConfig::default()
    }
}

async fn start(config: NameserverConfig) -> Running {
    let nameserver = Nameserver::bind(config, None, Arc::new(NameserverMetrics::default()))
        .await
        .unwrap();
    let addr = nameserver.local_addr().to_string();
    let service = nameserver.service();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    #[allow(clippy::disallowed_methods)] // the test owns and joins this task
    let task = tokio::spawn(async move { nameserver.run(stopped.cancelled_owned()).await.unwrap() });
    Running {
        addr,
        service,
        stop,
        task,
    }
}

fn pool() -> ConnectionPool {
    ConnectionPool::new(TransportConfig {
        request_timeout: Duration::from_secs(5),
        ..TransportConfig::default()
    })
}

async fn write(
    pool: &ConnectionPool,
    addr: &str,
    command: meridian_nameserver::Command,
) -> Result<Response, TransportError> {
    let body = serde_json::to_vec(&WriteRequest {
        op: WriteOp::Command { command },
        forwarded: false,
    })
    .unwrap();
    let frame = pool
        .request(
            addr,
            RequestCode::NameserverWrite,
            Bytes::from(body),
            Duration::from_secs(5),
        )
        .await?;
    Ok(serde_json::from_slice(&frame.body).unwrap())
}

async fn wait_for_leader(nodes: &[&Running]) -> u64 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let leaders: Vec<_> = nodes
            .iter()
            .filter_map(|node| node.service.raft().current_leader())
            .collect();
        if leaders.len() == nodes.len() && leaders.iter().all(|leader| *leader == leaders[0]) {
            return leaders[0];
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn heartbeat(addr: &str, topics: &[TopicQueues]) -> BrokerHeartbeat {
    let mut heartbeat = BrokerHeartbeat {
        group: "broker-a".into(),
        name: "a-0".into(),
        addr: addr.into(),
        idc: "dc1".into(),
        role: role::MASTER,
        epoch: 0,
        max_offset: 99,
        registration_digest: 0,
        in_sync: Vec::new(),
        remoting_addr: String::new(),
        confirmed_offset: 0,
        degraded: String::new(),
        ack_policy: String::new(),
        ack_replicas: 0,
        left_out: Vec::new(),
    };
    heartbeat.registration_digest = registration_digest(&heartbeat, topics);
    heartbeat
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nameservers_over_tcp_forward_writes_serve_routes_and_refuse_bad_frames() {
    let dir = TempDir::new().unwrap();
    let addrs = [free_addr().await, free_addr().await, free_addr().await];
    let mut nodes = Vec::new();
    for node_id in 1..=3 {
        nodes.push(start(config(&dir, node_id, &addrs)).await);
    }
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let follower = nodes
        .iter()
        .find(|node| node.service.raft().node_id() != leader)
        .unwrap();
    let pool = pool();

    // A write sent to a follower is forwarded to the leader and committed.
    let response = write(&pool, &follower.addr, request_topic("orders", "alice"))
        .await
        .unwrap();
    assert!(matches!(response, Response::Topic(_)), "{response:?}");
    write(&pool, &follower.addr, approve_topic("orders")).await.unwrap();
    // A refused command comes back with its code and message, from whichever node was asked.
    let refused = write(&pool, &follower.addr, request_topic("orders", "bob"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, TransportError::Remote { code: ErrorCode::AlreadyExists, message, .. } if message.contains("already requested by alice")),
        "{refused}"
    );

    // The broker is not registered: its heartbeat asks for a registration and changes nothing.
    let topics = vec![TopicQueues {
        name: "orders".into(),
        queues: 4,
    }];
    let beat = heartbeat("127.0.0.1:7911", &topics);
    let answer: BrokerHeartbeatResponse = pool
        .call(
            &follower.addr,
            RequestCode::BrokerHeartbeat,
            &beat,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(!answer.registered);
    let registration = BrokerRegistration {
        heartbeat: Some(beat.clone()),
        topics_compressed: Bytes::from(compress(&TopicList { topics: topics.clone() }.encode_to_vec())),
    };
    let answer: BrokerHeartbeatResponse = pool
        .call(
            &follower.addr,
            RequestCode::RegisterBroker,
            &registration,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(answer.registered);
    assert!(answer.metadata_version >= 2);

    // The broker heartbeats every node. The leader's controller elects it, the group's only
    // member: it holds data (max offset 99), so only once the leader has led for a broker timeout.
    // Every node then names it master at epoch 1; only the leader's answer says `leader`.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut answers = Vec::new();
    while answers.len() < nodes.len() {
        answers.clear();
        for node in &nodes {
            let answer: BrokerHeartbeatResponse = pool
                .call(&node.addr, RequestCode::BrokerHeartbeat, &beat, Duration::from_secs(5))
                .await
                .unwrap();
            if answer.registered && answer.master == "a-0" {
                answers.push((node.service.raft().node_id(), answer));
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no node names a master: {:?}",
            nodes[0].service.brokers()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (node_id, answer) in &answers {
        assert_eq!(
            (
                answer.group_epoch,
                answer.master_addr.as_str(),
                answer.leader,
                answer.lease_ms
            ),
            (1, "127.0.0.1:7911", *node_id == leader, 500),
            "node {node_id}"
        );
    }

    // Every node serves the route; the broker is alive where it heartbeats.
    for node in &nodes {
        let route: TopicRoute = pool
            .call(
                &node.addr,
                RequestCode::TopicRoute,
                &TopicRouteRequest { topic: "orders".into() },
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(route.brokers.len(), 1);
        assert_eq!(route.brokers[0].addr, "127.0.0.1:7911");
        assert!(route.brokers[0].replicas[0].alive);
    }

    // Garbage in a Raft RPC, a heartbeat and a write: clear errors, nothing changed.
    let metadata = |node: &Running| {
        let mut brokers = node.service.read(&Query::Brokers).unwrap();
        // Liveness moves on its own with the clock.
        for member in brokers[0]["members"].as_array_mut().unwrap() {
            member["last_heartbeat_ago_ms"] = serde_json::Value::Null;
            member["alive"] = serde_json::Value::Null;
        }
        (brokers, node.service.read(&Query::Topics { status: None }).unwrap())
    };
    let before = metadata(&nodes[0]);
    for (code, body) in [
        (RequestCode::RaftAppend, &b"{not json"[..]),
        (RequestCode::RaftVote, &b"[]"[..]),
        (RequestCode::RaftSnapshot, &b"\xff\xff\xff"[..]),
        (RequestCode::BrokerHeartbeat, &b"\xff\xff\xff"[..]),
        (
            RequestCode::NameserverWrite,
            &br#"{"op":"command","command":{"launch":"rockets"}}"#[..],
        ),
    ] {
        let error = pool
            .request(&nodes[0].addr, code, Bytes::from_static(body), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, TransportError::Remote { code: ErrorCode::MalformedFrame, message, .. } if message.contains("malformed")),
            "{code:?}: {error}"
        );
    }
    // An unknown broker name in a write, and an invalid one in a heartbeat.
    let unknown = write(
        &pool,
        &nodes[0].addr,
        meridian_nameserver::Command::UnregisterBroker {
            group: "broker-a".into(),
            member: "nobody".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        unknown.to_string().contains("\"nobody\" is not registered"),
        "{unknown}"
    );
    let invalid = pool
        .call::<_, BrokerHeartbeatResponse>(
            &nodes[0].addr,
            RequestCode::BrokerHeartbeat,
            &BrokerHeartbeat {
                name: "a b".into(),
                ..beat.clone()
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(invalid.to_string().contains("name \"a b\" is invalid"), "{invalid}");
    // The refused write is in the log (refusals replicate), but the brokers and topics are as
    // they were.
    assert_eq!(metadata(&nodes[0]), before);

    // The broker goes silent: within the heartbeat timeout, routes show it down.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let route = nodes[0].service.route("orders").unwrap();
    assert_eq!(route.brokers[0].addr, "", "a silent master is not offered");
    assert!(!route.brokers[0].replicas[0].alive);

    for node in nodes {
        node.stop.cancel();
        node.task.await.unwrap();
    }
    pool.shutdown().await;
}

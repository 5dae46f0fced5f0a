//! The failover controller of a single-node nameserver, driven by simulated brokers that heartbeat
//! and register over the framed protocol on loopback: the first master of a fresh group, a
//! failover to the furthest in-sync slave when the master goes silent, and a switchover.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use meridian_nameserver::metrics::NameserverMetrics;
use meridian_nameserver::service::{WriteOp, WriteRequest};
use meridian_nameserver::state::{EpochAction, Response};
use meridian_nameserver::{Command, Nameserver, NameserverConfig, NameserverService};
use meridian_proto::compress::compress;
use meridian_proto::messages::{
    BrokerHeartbeat, BrokerHeartbeatResponse, BrokerRegistration, TopicList, TopicQueues, registration_digest, role,
};
use meridian_proto::transport::{ConnectionPool, TransportConfig, TransportError};
use meridian_proto::{ErrorCode, RequestCode};
use prost::Message;
use tempfile::TempDir;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::harness::{PATIENCE, approve_topic, request_topic, test_config};

const BROKER_TIMEOUT: Duration = Duration::from_millis(1000);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);

/// What one simulated broker says about itself; the test changes it as a broker would.
#[derive(Debug, Clone)]
struct Broker {
    role: u32,
    epoch: u64,
    max_offset: u64,
    in_sync: Vec<String>,
    silent: bool,
}

type Brokers = Arc<Mutex<BTreeMap<String, Broker>>>;
type Answers = Arc<Mutex<BTreeMap<String, BrokerHeartbeatResponse>>>;

fn topics() -> Vec<TopicQueues> {
    vec![TopicQueues {
        name: "orders".into(),
        queues: 4,
    }]
}

fn addr_of(name: &str) -> String {
    format!("127.0.0.1:79{}", name.as_bytes()[0] - b'a' + 10)
}

fn heartbeat(name: &str, broker: &Broker) -> BrokerHeartbeat {
    let mut heartbeat = BrokerHeartbeat {
        group: "g".into(),
        name: name.into(),
        addr: addr_of(name),
        idc: "dc1".into(),
        role: broker.role,
        epoch: broker.epoch,
        max_offset: broker.max_offset,
        registration_digest: 0,
        in_sync: broker.in_sync.clone(),
        remoting_addr: String::new(),
        confirmed_offset: 0,
        degraded: String::new(),
        ack_policy: String::new(),
        ack_replicas: 0,
        left_out: Vec::new(),
    };
    heartbeat.registration_digest = registration_digest(&heartbeat, &topics());
    heartbeat
}

/// Every broker that is not silent heartbeats every [`HEARTBEAT_EVERY`], and registers when the
/// nameserver asks for it, as the broker's registry does; the last answer each got is kept.
async fn heartbeat_loop(
    pool: ConnectionPool,
    addr: String,
    brokers: Brokers,
    answers: Answers,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let beating: Vec<(String, Broker)> = brokers
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, broker)| !broker.silent)
            .map(|(name, broker)| (name.clone(), broker.clone()))
            .collect();
        for (name, broker) in beating {
            let beat = heartbeat(&name, &broker);
            let mut answer: BrokerHeartbeatResponse = pool
                .call(&addr, RequestCode::BrokerHeartbeat, &beat, Duration::from_secs(5))
                .await
                .unwrap();
            if !answer.registered {
                let registration = BrokerRegistration {
                    heartbeat: Some(beat),
                    topics_compressed: Bytes::from(compress(&TopicList { topics: topics() }.encode_to_vec())),
                };
                answer = pool
                    .call(
                        &addr,
                        RequestCode::RegisterBroker,
                        &registration,
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
            }
            answers.lock().unwrap().insert(name, answer);
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
        }
    }
}

/// Waits until `check` holds for the answers the brokers last got; answers how long it took.
async fn wait_for(
    answers: &Answers,
    what: &str,
    check: impl Fn(&BTreeMap<String, BrokerHeartbeatResponse>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if check(&answers.lock().unwrap()) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}; answers {:?}",
            answers.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn master_named(answers: &BTreeMap<String, BrokerHeartbeatResponse>, master: &str, epoch: u64) -> bool {
    answers.len() == 4
        && answers
            .values()
            .all(|answer| answer.master == master && answer.group_epoch == epoch)
}

fn set(brokers: &Brokers, name: &str, change: impl FnOnce(&mut Broker)) {
    change(brokers.lock().unwrap().get_mut(name).unwrap());
}

fn route_master(service: &NameserverService) -> (String, Vec<(String, u32, u64)>) {
    let route = service.route("orders").unwrap();
    let group = &route.brokers[0];
    (
        group.addr.clone(),
        group
            .replicas
            .iter()
            .map(|replica| (replica.name.clone(), replica.role, replica.epoch))
            .collect(),
    )
}

/// Four brokers of group `g`: a fresh group gets its first master within a tick or two; when the
/// master goes silent, the in-sync slave with the greatest offset replaces it after the broker
/// timeout (never `d`, further but not in sync); a switchover fences the master, then elects the
/// target at the next epoch once the fenced master's lease lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_elects_fails_over_and_switches_over() {
    let dir = TempDir::new().unwrap();
    let config = NameserverConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: None,
        data_dir: dir.path().join("nameserver"),
        raft: test_config(),
        broker_timeout_ms: BROKER_TIMEOUT.as_millis() as u64,
        write_timeout_ms: 3000,
        ..NameserverConfig::default()
    };
    let metrics = Arc::new(NameserverMetrics::default());
    let nameserver = Nameserver::bind(config, None, metrics.clone()).await.unwrap();
    let addr = nameserver.local_addr().to_string();
    let service = nameserver.service();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    #[allow(clippy::disallowed_methods)] // the test owns and joins this task
    let server = tokio::spawn(async move { nameserver.run(stopped.cancelled_owned()).await.unwrap() });
    let deadline = Instant::now() + PATIENCE;
    while service.raft().current_leader() != Some(1) {
        assert!(Instant::now() < deadline, "no leader within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut request = request_topic("orders", "alice");
    if let Command::RequestTopic(request) = &mut request {
        request.queues = BTreeMap::from([("g".to_owned(), 4)]);
    }
    service.command(request).await.unwrap();
    service.command(approve_topic("orders")).await.unwrap();

    // Four fresh brokers: every one alive and empty, so the first master needs no wait.
    let brokers: Brokers = Arc::new(Mutex::new(
        ["a", "b", "c", "d"]
            .into_iter()
            .map(|name| {
                let broker = Broker {
                    role: role::SLAVE,
                    epoch: 0,
                    max_offset: 0,
                    in_sync: Vec::new(),
                    silent: false,
                };
                (name.to_owned(), broker)
            })
            .collect(),
    ));
    let answers: Answers = Arc::default();
    let pool = ConnectionPool::new(TransportConfig {
        request_timeout: Duration::from_secs(5),
        ..TransportConfig::default()
    });
    let heartbeats_stop = CancellationToken::new();
    #[allow(clippy::disallowed_methods)] // the test owns and joins this task
    let heartbeats = tokio::spawn(heartbeat_loop(
        pool.clone(),
        addr.clone(),
        brokers.clone(),
        answers.clone(),
        heartbeats_stop.clone(),
    ));
    let took = wait_for(&answers, "the first master", |answers| master_named(answers, "a", 1)).await;
    eprintln!("first master after {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "a fresh group waited {took:?} for its master"
    );
    let first = answers.lock().unwrap()["b"].clone();
    assert_eq!(
        (first.master_addr.as_str(), first.leader, first.lease_ms),
        (addr_of("a").as_str(), false, 500),
        "a slave's answer names the master; it is not asked to confirm the leadership"
    );
    let elected = answers.lock().unwrap()["a"].clone();
    assert!(
        elected.leader,
        "the elected broker's answer confirms the leadership before it claims the role, so it may take writes at once"
    );

    // a obeys: it heartbeats as master of epoch 1 and reports b and c in sync (a registration,
    // since the digest covers the in-sync set). The answers to a master confirm the leadership.
    set(&brokers, "a", |broker| {
        broker.role = role::MASTER;
        broker.epoch = 1;
        broker.in_sync = vec!["b".into(), "c".into()];
    });
    wait_for(&answers, "the master's lease", |answers| {
        answers["a"].leader && service.brokers()[0].in_sync == ["b", "c"]
    })
    .await;
    assert_eq!(
        answers.lock().unwrap()["a"].lease_ms,
        BROKER_TIMEOUT.as_millis() as u64 / 2
    );
    assert_eq!(
        route_master(&service),
        (
            addr_of("a"),
            vec![
                ("a".to_owned(), role::MASTER, 1),
                ("b".to_owned(), role::SLAVE, 0),
                ("c".to_owned(), role::SLAVE, 0),
                ("d".to_owned(), role::SLAVE, 0),
            ]
        )
    );

    // The master goes silent; the slaves keep reporting their offsets. d is furthest but not in
    // sync: c, the furthest in-sync slave, takes over at epoch 2 after the broker timeout.
    for (name, offset) in [("b", 50), ("c", 70), ("d", 1000)] {
        set(&brokers, name, |broker| {
            broker.max_offset = offset;
            broker.epoch = 1;
        });
    }
    tokio::time::sleep(HEARTBEAT_EVERY * 2).await;
    set(&brokers, "a", |broker| broker.silent = true);
    let took = wait_for(&answers, "the failover", |answers| {
        ["b", "c", "d"]
            .iter()
            .all(|name| answers[*name].master == "c" && answers[*name].group_epoch == 2)
    })
    .await;
    eprintln!("failover after {took:?}");
    assert!(
        took >= BROKER_TIMEOUT - HEARTBEAT_EVERY * 2 && took < BROKER_TIMEOUT * 3,
        "failover after {took:?}, with a broker timeout of {BROKER_TIMEOUT:?}"
    );
    let (route_addr, replicas) = route_master(&service);
    assert_eq!(route_addr, addr_of("c"));
    assert_eq!(replicas[2], ("c".to_owned(), role::MASTER, 2));
    assert_eq!(replicas[0].1, role::SLAVE, "the old master is a slave in routes");
    let group = &service.brokers()[0];
    assert_eq!((group.epoch, group.master.as_deref()), (2, Some("c")));
    assert_eq!(group.in_sync, ["b"], "the old in-sync set minus the new master");
    let elected = group.history.last().unwrap();
    assert!(
        elected
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("master a silent for"),
        "{elected:?}"
    );

    // c obeys and reports b in sync; a comes back as a slave.
    set(&brokers, "c", |broker| {
        broker.role = role::MASTER;
        broker.epoch = 2;
        broker.in_sync = vec!["b".into()];
    });
    set(&brokers, "a", |broker| {
        broker.role = role::SLAVE;
        broker.epoch = 2;
        broker.in_sync.clear();
        broker.silent = false;
    });
    wait_for(&answers, "c's report", |answers| {
        answers["c"].leader && answers["a"].master == "c" && service.brokers()[0].in_sync == ["b"]
    })
    .await;

    // Switchover to d, which is not in sync: refused, naming the in-sync set.
    let switchover = |to: &str| {
        let body = serde_json::to_vec(&WriteRequest {
            op: WriteOp::Command {
                command: Command::FenceMaster {
                    group: "g".into(),
                    preferred: to.into(),
                    by: "admin".into(),
                    reason: Some("maintenance of c".into()),
                },
            },
            forwarded: false,
        })
        .unwrap();
        let pool = pool.clone();
        let addr = addr.clone();
        async move {
            pool.request(
                &addr,
                RequestCode::NameserverWrite,
                Bytes::from(body),
                Duration::from_secs(5),
            )
            .await
            .map(|frame| serde_json::from_slice::<Response>(&frame.body).unwrap())
        }
    };
    let refused = switchover("d").await.unwrap_err();
    assert!(
        matches!(&refused, TransportError::Remote { code: ErrorCode::FailedPrecondition, message, .. }
            if message.contains("not in sync with master \"c\" (in sync: \"b\")")),
        "{refused}"
    );
    // The same through the service, as the HTTP API calls it.
    let refused = service.switchover("g", "d", "admin", None).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::FailedPrecondition, "{refused}");

    // Switchover to b: epoch 3 has no master (c is fenced); b, caught up with c, is elected at
    // epoch 4 once c's lease surely lapsed. d, further, is not in sync: b is the only candidate.
    set(&brokers, "b", |broker| broker.max_offset = 70);
    let Response::EpochChange { change, .. } = switchover("b").await.unwrap() else {
        panic!("a switchover answers with the epoch change");
    };
    assert_eq!(
        (
            change.epoch,
            change.action,
            change.previous_master.as_deref(),
            change.preferred.as_deref()
        ),
        (3, EpochAction::Fenced, Some("c"), Some("b"))
    );
    let fenced_at = Instant::now();
    wait_for(&answers, "the fencing", |answers| master_named(answers, "", 3)).await;
    assert!(route_master(&service).0.is_empty(), "no master to send to while fenced");
    for name in ["a", "c"] {
        set(&brokers, name, |broker| {
            broker.role = role::SLAVE;
            broker.epoch = 3;
            broker.in_sync.clear();
        });
    }
    wait_for(&answers, "the switchover", |answers| master_named(answers, "b", 4)).await;
    let took = fenced_at.elapsed();
    eprintln!("switchover after {took:?}");
    assert!(
        took >= BROKER_TIMEOUT - HEARTBEAT_EVERY && took < BROKER_TIMEOUT * 3,
        "switchover after {took:?}"
    );
    assert_eq!(route_master(&service).0, addr_of("b"));
    let group = &service.brokers()[0];
    assert_eq!((group.preferred.as_deref(), group.history.len()), (None, 4));

    let mut exported = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("elections", "", metrics.elections.clone());
    prometheus_client::encoding::text::encode(&mut exported, &registry).unwrap();
    for kind in ["bootstrap", "failover", "switchover"] {
        assert!(
            exported.contains(&format!("elections_total{{reason=\"{kind}\"}} 1")),
            "{exported}"
        );
    }

    heartbeats_stop.cancel();
    heartbeats.await.unwrap();
    pool.shutdown().await;
    stop.cancel();
    server.await.unwrap();
}

//! Losing a data center: a nameserver in dc2 (the Raft leader) with simulated brokers in dc1 and
//! dc2 heartbeating over the framed protocol on loopback. When every dc1 broker goes silent for
//! `continuity.idc_lost_after_ms`, dc1 is declared lost through the Raft log (state, routes,
//! cluster view, metric); when one comes back, it is cleared.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use meridian_nameserver::config::ContinuityConfig;
use meridian_nameserver::metrics::{IdcLabels, NameserverMetrics};
use meridian_nameserver::{Command, Nameserver, NameserverConfig, NameserverService};
use meridian_proto::RequestCode;
use meridian_proto::compress::compress;
use meridian_proto::messages::{
    BrokerHeartbeat, BrokerHeartbeatResponse, BrokerRegistration, TopicList, TopicQueues, registration_digest, role,
};
use meridian_proto::transport::{ConnectionPool, TransportConfig};
use prost::Message;
use tempfile::TempDir;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::harness::{PATIENCE, approve_topic, request_topic, test_config};

const BROKER_TIMEOUT: Duration = Duration::from_millis(1000);
const LOST_AFTER: Duration = Duration::from_millis(1500);

fn topics(group: &str) -> Vec<TopicQueues> {
    vec![TopicQueues {
        name: format!("orders-{group}"),
        queues: 2,
    }]
}

/// Group `group`'s one broker in `idc` heartbeats every 100 ms while `beating`, registering
/// when asked, as a broker's registry does.
async fn broker(
    pool: ConnectionPool,
    addr: String,
    group: &'static str,
    idc: &'static str,
    port: u16,
    beating: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut epoch = 0;
    while !stop.is_cancelled() {
        if beating.load(Ordering::SeqCst) {
            let mut beat = BrokerHeartbeat {
                group: group.into(),
                name: format!("{group}-0"),
                addr: format!("127.0.0.1:{port}"),
                idc: idc.into(),
                role: if epoch > 0 { role::MASTER } else { role::SLAVE },
                epoch,
                max_offset: 0,
                registration_digest: 0,
                in_sync: Vec::new(),
                remoting_addr: String::new(),
                confirmed_offset: 0,
                degraded: String::new(),
                ack_policy: String::new(),
                ack_replicas: 0,
                left_out: Vec::new(),
            };
            beat.registration_digest = registration_digest(&beat, &topics(group));
            let mut answer: BrokerHeartbeatResponse = pool
                .call(&addr, RequestCode::BrokerHeartbeat, &beat, Duration::from_secs(5))
                .await
                .unwrap();
            if !answer.registered {
                let registration = BrokerRegistration {
                    heartbeat: Some(beat),
                    topics_compressed: Bytes::from(compress(&TopicList { topics: topics(group) }.encode_to_vec())),
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
            epoch = answer.group_epoch;
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

async fn wait_until(what: &str, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < PATIENCE, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn lost_in_route(service: &NameserverService) -> Vec<String> {
    service
        .route("orders-b")
        .map(|route| route.lost_idcs)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_data_center_is_declared_lost_through_the_log_and_cleared_when_it_returns() {
    let dir = TempDir::new().unwrap();
    let config = NameserverConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: None,
        idc: "dc2".into(),
        data_dir: dir.path().join("nameserver"),
        raft: test_config(),
        broker_timeout_ms: BROKER_TIMEOUT.as_millis() as u64,
        write_timeout_ms: 3000,
        continuity: ContinuityConfig {
            idc_lost_after_ms: LOST_AFTER.as_millis() as u64,
        },
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
    wait_until("a leader", || service.raft().current_leader() == Some(1)).await;
    for group in ["a", "b"] {
        let topic = format!("orders-{group}");
        let mut request = request_topic(&topic, "alice");
        if let Command::RequestTopic(request) = &mut request {
            request.queues = BTreeMap::from([(group.to_owned(), 2)]);
        }
        service.command(request).await.unwrap();
        service.command(approve_topic(&topic)).await.unwrap();
    }

    let pool = ConnectionPool::new(TransportConfig {
        request_timeout: Duration::from_secs(5),
        ..TransportConfig::default()
    });
    let dc1 = Arc::new(AtomicBool::new(true));
    let dc2 = Arc::new(AtomicBool::new(true));
    let brokers_stop = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(broker(
        pool.clone(),
        addr.clone(),
        "a",
        "dc1",
        7991,
        dc1.clone(),
        brokers_stop.clone(),
    ));
    tasks.spawn(broker(
        pool.clone(),
        addr.clone(),
        "b",
        "dc2",
        7992,
        dc2.clone(),
        brokers_stop.clone(),
    ));
    wait_until("both groups registered", || service.brokers().len() == 2).await;
    let gauge = |idc: &str| metrics.idc_lost.get_or_create(&IdcLabels { idc: idc.into() }).get();
    wait_until("the gauge published", || gauge("dc1") == 0 && gauge("dc2") == 0).await;
    // Longer than idc_lost_after with every broker heard: nothing is lost.
    tokio::time::sleep(LOST_AFTER + Duration::from_millis(300)).await;
    assert!(
        service.cluster().lost_idcs.is_empty(),
        "{:?}",
        service.cluster().lost_idcs
    );

    // dc1 goes dark.
    dc1.store(false, Ordering::SeqCst);
    let took = wait_until("dc1 declared lost", || service.cluster().lost_idcs.contains_key("dc1")).await;
    assert!(
        took >= LOST_AFTER - Duration::from_millis(150),
        "declared after only {took:?}"
    );
    let cluster = service.cluster();
    assert_eq!(
        cluster.lost_idcs.keys().collect::<Vec<_>>(),
        ["dc1"],
        "dc2 still has a live broker"
    );
    let reason = &cluster.lost_idcs["dc1"].reason;
    assert!(reason.contains("a/a-0 silent for"), "{reason}");
    assert_eq!(lost_in_route(&service), ["dc1"], "routes tell clients");
    wait_until("the gauge says dc1 lost", || gauge("dc1") == 1 && gauge("dc2") == 0).await;
    let history = service.raft().read_state(|state| state.continuity().history.clone());
    assert_eq!(history.len(), 1, "declared once, in the log: {history:?}");
    assert!(history[0].lost && history[0].idc == "dc1");

    // dc1 comes back: cleared, through the log.
    dc1.store(true, Ordering::SeqCst);
    wait_until("dc1 cleared", || service.cluster().lost_idcs.is_empty()).await;
    assert!(lost_in_route(&service).is_empty());
    wait_until("the gauge says dc1 back", || gauge("dc1") == 0).await;
    let history = service.raft().read_state(|state| state.continuity().history.clone());
    assert_eq!(
        history.iter().map(|event| event.lost).collect::<Vec<_>>(),
        [true, false]
    );
    assert!(history[1].reason.contains("heard again from a/a-0"), "{history:?}");

    // The leader's own data center is never declared lost.
    dc2.store(false, Ordering::SeqCst);
    tokio::time::sleep(LOST_AFTER + Duration::from_millis(500)).await;
    assert!(!service.cluster().lost_idcs.contains_key("dc2"), "the leader is in dc2");

    brokers_stop.cancel();
    tasks.close();
    tasks.wait().await;
    stop.cancel();
    server.await.unwrap();
}

//! Broker groups of three separate processes (master + two slaves, one in another IDC) under one
//! nameserver: a killed master is replaced by its most advanced in-sync slave with no acknowledged
//! message lost, a partitioned master stops acknowledging within its lease, `idc_safe` survives
//! losing a data center, and a slave that fell far behind catches up. With an archiver beside
//! every member, only the master's archives and the archive is the group's history, also after a
//! failover that cut a divergent tail off the old master.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_client::{ClientConfig, ConnectionPool, Message, Producer, ProducerConfig};
use meridian_proto::RequestCode;
use meridian_proto::messages::{MessageData, SendRequest, SendResponse};
use meridian_proto::properties::PropertiesBuilder;
use meridian_tests::{FaultyProxy, GroupCluster, GroupOptions};
use tokio_util::task::TaskTracker;

use crate::{read_holding, read_through};

/// What a storm of producers got acknowledged, with when.
#[derive(Default)]
struct Acked {
    messages: Mutex<Vec<(String, Instant)>>,
    failures: std::sync::atomic::AtomicU64,
}

impl Acked {
    fn ids(&self) -> HashSet<String> {
        self.messages.lock().unwrap().iter().map(|(id, _)| id.clone()).collect()
    }

    fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    /// Waits (up to 30 s) until `count` sends were acknowledged at or after `since`: a storm
    /// that has really run (before a fault) or carried on (after one), whatever the machine's load.
    async fn wait_count_since(&self, since: Instant, count: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let acknowledged = self
                .messages
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, at)| *at >= since)
                .count();
            if acknowledged >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {acknowledged} of {count} sends acknowledged within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first acknowledgement at or after `since`.
    fn first_after(&self, since: Instant) -> Option<Instant> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|(_, at)| *at)
            .filter(|at| *at >= since)
            .min()
    }
}

/// Waits (up to 20 s) until member `index` holds `offset` as `group`'s committed offset of
/// `topic` queue `queue_id` (its `/api/broker/lag`; a slave gets offsets with its fetches).
async fn wait_offset_replicated(
    cluster: &GroupCluster,
    index: usize,
    group: &str,
    topic: &str,
    queue_id: u32,
    offset: u64,
) {
    let held = || {
        let report = meridian_tests::http_get_json(cluster.members[index].http, "/api/broker/lag")?;
        let lag = report["groups"]
            .as_array()?
            .iter()
            .find(|lag| lag["group"] == group && lag["topic"] == topic)?;
        lag["queues"]
            .as_array()?
            .iter()
            .find(|queue| queue["queue_id"] == queue_id)?["committed_offset"]
            .as_u64()
    };
    assert!(
        meridian_tests::eventually(Duration::from_secs(20), || held() == Some(offset)).await,
        "{} never held {group}'s offset {offset} of {topic} queue {queue_id}: {:?}",
        cluster.members[index].name,
        held()
    );
}

/// Producers sending 1 KiB messages through the nameserver's routes until stopped, retrying
/// through a failover.
struct Storm {
    acked: Arc<Acked>,
    stop: Arc<AtomicBool>,
    tasks: TaskTracker,
    producer: Producer,
}

impl Storm {
    fn start(
        cluster: &GroupCluster,
        pool: &ConnectionPool,
        topic: &'static str,
        senders: usize,
        retries: u32,
    ) -> Storm {
        let producer = Producer::new(
            cluster.route(pool),
            ProducerConfig {
                retries,
                retry_backoff: Duration::from_millis(50),
                ..ProducerConfig::default()
            },
        );
        let (acked, stop, tasks) = (
            Arc::new(Acked::default()),
            Arc::new(AtomicBool::new(false)),
            TaskTracker::new(),
        );
        for sender in 0..senders {
            let (producer, acked, stop) = (producer.clone(), acked.clone(), stop.clone());
            tasks.spawn(async move {
                let body = Bytes::from(vec![b'm'; 1024]);
                let mut index = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let message = Message::new(topic, body.clone()).with_key(format!("s{sender}-{index}"));
                    match producer.send(message).await {
                        Ok(sent) => acked.messages.lock().unwrap().push((sent.msg_id, Instant::now())),
                        Err(_) => {
                            acked.failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    index += 1;
                }
            });
        }
        Storm {
            acked,
            stop,
            tasks,
            producer,
        }
    }

    async fn finish(self) -> Arc<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.close();
        self.tasks.wait().await;
        self.producer.shutdown().await;
        self.acked
    }
}

/// Creates topic `topic` (4 queues) on broker-a and the consumer group `readers` for it.
fn create_topic_and_group(cluster: &GroupCluster, topic: &str) {
    let (ok, _, stderr) = cluster.cli(&["topic", "create", topic, "--queues", "4", "--on", "broker-a"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cluster.cli(&["group", "create", "readers", "--topics", topic]);
    assert!(ok, "{stderr}");
}

/// Reads the whole topic through the routes and checks that every acknowledged message is there;
/// returns how many acknowledged messages were stored more than once (retries across a failover).
async fn assert_nothing_lost(cluster: &GroupCluster, topic: &str, acked: &HashSet<String>) -> usize {
    let pool = ConnectionPool::new(ClientConfig::default());
    let stored = read_holding(cluster.route(&pool), "readers", topic, acked).await;
    pool.shutdown().await;
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for message in &stored {
        *copies.entry(message.msg_id()).or_default() += 1;
    }
    let missing: Vec<&String> = acked.iter().filter(|id| !copies.contains_key(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages are missing after failover, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    copies.values().filter(|count| **count > 1).count()
}

/// The member other than `except` that becomes master; waits for it.
fn new_master(cluster: &GroupCluster, candidates: &[usize]) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for &index in candidates {
            if cluster.role(index).is_some_and(|(role, _)| role == "master") {
                return (index, cluster.wait_role(index, "master"));
            }
        }
        assert!(Instant::now() < deadline, "no new master among {candidates:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_caught_up(cluster: &GroupCluster, slave: usize, master: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (held, target) = (cluster.committed(slave), cluster.committed(master));
        if held.is_some() && held == target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not catch up: holds {held:?} of {target:?}",
            cluster.members[slave].name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_without_losing_an_acknowledged_message_and_rejoins_as_a_slave() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = GroupCluster::start(dir.path(), GroupOptions::default());
    create_topic_and_group(&cluster, "orders");

    let pool = ConnectionPool::new(ClientConfig::default());
    let storm = Storm::start(&cluster, &pool, "orders", 4, 8);
    let began = Instant::now();
    storm.acked.wait_count_since(began, 100, "before the kill").await;
    // A consumer group's committed offset replicates with the log.
    let consumer = meridian_client::PullConsumer::new(cluster.route(&pool), ClientConfig::default(), "readers");
    consumer.commit_offset("orders", 1, 7).await.unwrap();
    for slave in [1, 2] {
        wait_offset_replicated(&cluster, slave, "readers", "orders", 1, 7).await;
    }
    cluster.kill9(0);
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(20);
    let first = loop {
        if let Some(first) = storm.acked.first_after(killed) {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "no send acknowledged within 20 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    storm.acked.wait_count_since(first, 20, "on the new master").await;
    let acked = storm.finish().await;
    let failover = first - killed;
    let (master, epoch) = new_master(&cluster, &[1, 2]);
    assert_eq!(epoch, 2, "one election");
    eprintln!(
        "failover: {failover:?} from kill -9 to the first acknowledged send on {}",
        cluster.members[master].name
    );
    // The nameserver waits one broker timeout (2 s) before it may promote; the rest is heartbeats.
    assert!(failover < Duration::from_secs(8), "failover took {failover:?}");

    // The pull consumer refreshes its route after the first failure (the dead master); the caller
    // retries, as with any retriable error.
    let mut committed = consumer.query_offset("orders", 1).await;
    if committed.as_ref().is_err_and(|error| error.is_retriable()) {
        committed = consumer.query_offset("orders", 1).await;
    }
    assert_eq!(
        committed.unwrap(),
        Some(7),
        "the consumer group resumes where it committed"
    );
    consumer.shutdown().await;
    let duplicates = assert_nothing_lost(&cluster, "orders", &acked.ids()).await;
    eprintln!(
        "{} acknowledged, {duplicates} stored twice (at-least-once retries), {} sends failed",
        acked.count(),
        acked.failures.load(Ordering::Relaxed)
    );

    // The old master returns as a slave of the new epoch and catches up (cutting any tail it
    // wrote that the new master never had), and the new master holds it in sync again.
    cluster.start_member(0);
    assert_eq!(cluster.wait_role(0, "slave"), 2);
    wait_caught_up(&cluster, 0, master);
    let epochs = |index: usize| cluster.health(index).unwrap()["replication"]["epochs"].clone();
    assert_eq!(epochs(0), epochs(master), "the old master adopted the new lineage");
    assert_eq!(cluster.wait_in_sync(master, 2).len(), 2);
    pool.shutdown().await;
}

/// Sends one message straight to `addr` (not through routes); its msgId if acknowledged.
async fn send_direct(pool: &ConnectionPool, addr: &str, index: u64) -> Option<String> {
    let msg_id = meridian_proto::MessageId::generate().to_string();
    send_direct_as(pool, addr, index, &msg_id).await.then_some(msg_id)
}

/// Sends `count` messages straight to `addr`, `concurrency` at a time, with queue ids from
/// `first` on; the msgIds acknowledged and those refused (or unanswered).
async fn send_many(
    pool: &ConnectionPool,
    addr: &str,
    first: u64,
    count: u64,
    concurrency: u64,
) -> (Vec<String>, Vec<String>) {
    let tasks = TaskTracker::new();
    let senders: Vec<_> = (0..concurrency)
        .map(|lane| {
            let (pool, addr) = (pool.clone(), addr.to_string());
            tasks.spawn(async move {
                let mut results = Vec::new();
                for index in (first + lane..first + count).step_by(concurrency as usize) {
                    let msg_id = meridian_proto::MessageId::generate().to_string();
                    let acked = send_direct_as(&pool, &addr, index, &msg_id).await;
                    results.push((msg_id, acked));
                }
                results
            })
        })
        .collect();
    tasks.close();
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for sender in senders {
        for (msg_id, ok) in sender.await.unwrap() {
            if ok { acked.push(msg_id) } else { refused.push(msg_id) }
        }
    }
    (acked, refused)
}

/// Sends one message with msgId `msg_id` straight to `addr`; whether it was acknowledged.
async fn send_direct_as(pool: &ConnectionPool, addr: &str, index: u64, msg_id: &str) -> bool {
    let mut properties = PropertiesBuilder::new();
    properties.msg_id(msg_id);
    let request = SendRequest {
        topic: "orders".into(),
        queue_id: (index % 4) as i32,
        messages: vec![MessageData {
            flags: 0,
            born_timestamp: 0,
            properties: Bytes::from(properties.finish()),
            body: Bytes::from(vec![b'd'; 1024]),
            reconsume_count: 0,
        }],
        producer_group: String::new(),
        sdk: Default::default(),
    };
    let response: Result<SendResponse, _> = pool
        .call(addr, RequestCode::Send, &request, Duration::from_secs(5))
        .await;
    response.is_ok_and(|response| !response.results.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_partitioned_from_the_nameserver_and_its_slaves_stops_acknowledging_within_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let options = GroupOptions::default();
    let lease = Duration::from_millis(options.broker_timeout_ms / 2);
    let mut cluster = GroupCluster::prepare(dir.path(), options);
    // a-0 reaches the nameserver, and is reached by its slaves and by routed clients, only
    // through proxies; a client next to it still reaches it directly.
    let to_nameserver = FaultyProxy::start("127.0.0.61:0", cluster.nameserver_addr).await;
    let to_master = FaultyProxy::start("127.0.0.62:0", cluster.members[0].listen).await;
    cluster.write_config(0, &to_nameserver.addr().to_string(), Some(to_master.addr()));
    // a-0 binds port 0: the proxy learns where to forward once it listens, before any slave.
    cluster.start_member(0);
    to_master.retarget(cluster.members[0].listen);
    cluster.launch();
    create_topic_and_group(&cluster, "orders");

    let pool = ConnectionPool::new(ClientConfig::default());
    let storm = Storm::start(&cluster, &pool, "orders", 2, 8);
    storm.acked.wait_count_since(Instant::now(), 50, "before the cut").await;
    let direct_addr = cluster.members[0].listen.to_string();
    let mut direct_acked = HashSet::new();
    assert!(
        send_direct(&pool, &direct_addr, 0).await.is_some(),
        "the master takes direct sends before the cut"
    );

    // First only the nameserver link: the slaves still replicate, so acknowledgements stop only
    // because the master can no longer renew its lease.
    to_nameserver.cut();
    let cut = Instant::now();
    let mut last_direct_ack = None;
    let mut index = 1;
    while cut.elapsed() < lease * 4 {
        if let Some(msg_id) = send_direct(&pool, &direct_addr, index).await {
            direct_acked.insert(msg_id);
            last_direct_ack = Some(cut.elapsed());
        }
        index += 1;
    }
    // The lease runs from the last heartbeat the leader confirmed, sent before the cut.
    assert!(
        last_direct_ack.is_some_and(|at| at <= lease),
        "the partitioned master acknowledged a send {last_direct_ack:?} after the cut; its lease is {lease:?}"
    );
    // Now the slaves lose it too: the partition is complete.
    to_master.cut();
    let (master, epoch) = new_master(&cluster, &[1, 2]);
    assert!(epoch >= 2);
    // Routed producers carry on with the new master.
    let resumed = Instant::now();
    while storm.acked.first_after(resumed).is_none() {
        assert!(
            resumed.elapsed() < Duration::from_secs(20),
            "routed sends never resumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acked = storm.finish().await;
    let mut all = acked.ids();
    all.extend(direct_acked.iter().cloned());
    assert_nothing_lost(&cluster, "orders", &all).await;
    eprintln!(
        "partition: {} routed and {} direct sends acknowledged; the old master's last direct ack came {last_direct_ack:?} after the cut",
        acked.count(),
        direct_acked.len()
    );

    // The partition heals: the old master learns the new epoch and rejoins as a slave.
    to_nameserver.heal();
    to_master.heal();
    assert_eq!(cluster.wait_role(0, "slave"), epoch);
    wait_caught_up(&cluster, 0, master);
    pool.shutdown().await;
    to_nameserver.stop().await;
    to_master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_moves_the_master_role_under_load_without_losing_an_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = GroupCluster::start(dir.path(), GroupOptions::default());
    create_topic_and_group(&cluster, "orders");
    let pool = ConnectionPool::new(ClientConfig::default());
    let storm = Storm::start(&cluster, &pool, "orders", 4, 8);
    storm
        .acked
        .wait_count_since(Instant::now(), 50, "before the switchover")
        .await;
    let (ok, stdout, stderr) = cluster.cli(&[
        "broker",
        "switchover",
        "--group",
        "broker-a",
        "--to",
        "a-2",
        "--by",
        "e2e",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("a-2"), "{stdout}");
    let switched = Instant::now();
    let epoch = cluster.wait_role(2, "master");
    assert!(epoch >= 3, "fenced at 2, elected at 3: {epoch}");
    let elected = Instant::now();
    while storm.acked.first_after(elected).is_none() {
        assert!(switched.elapsed() < Duration::from_secs(20), "sends never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    storm.acked.wait_count_since(elected, 20, "on the new master").await;
    let acked = storm.finish().await;
    assert_eq!(
        cluster.wait_role(0, "slave"),
        epoch,
        "the old master follows the new one"
    );
    assert_nothing_lost(&cluster, "orders", &acked.ids()).await;
    eprintln!(
        "switchover: a-0 -> a-2 at epoch {epoch} in {:?}; {} acknowledged",
        switched.elapsed(),
        acked.count()
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idc_safe_loses_no_acknowledged_message_when_the_masters_data_center_goes_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = GroupCluster::start(
        dir.path(),
        GroupOptions {
            ack_policy: "idc_safe",
            ..GroupOptions::default()
        },
    );
    create_topic_and_group(&cluster, "orders");
    let pool = ConnectionPool::new(ClientConfig::default());
    // Few retries: with dc1 gone no send can reach idc_safe again, so waiting on them only wastes time.
    let storm = Storm::start(&cluster, &pool, "orders", 4, 1);
    storm
        .acked
        .wait_count_since(Instant::now(), 100, "before dc1 goes dark")
        .await;
    // dc1 goes dark: the master and the slave beside it die together.
    cluster.kill9(0);
    cluster.kill9(1);
    let acked = storm.finish().await;
    assert!(acked.count() > 0);
    // The slave in dc2 is promoted and holds every acknowledged message.
    let (master, _) = new_master(&cluster, &[2]);
    assert_eq!(master, 2);
    let duplicates = assert_nothing_lost(&cluster, "orders", &acked.ids()).await;
    eprintln!("idc_safe: {} acknowledged, {duplicates} duplicates", acked.count());
    // Alone, the new master cannot meet idc_safe: a send is refused, never acknowledged.
    let lone = Producer::new(
        cluster.route(&pool),
        ProducerConfig {
            retries: 0,
            ..ProducerConfig::default()
        },
    );
    let refused = lone
        .send(Message::new("orders", Bytes::from_static(b"x")))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(meridian_proto::ErrorCode::ReplicationTimeout),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("idc_safe") && refused.to_string().contains("NOT acknowledged"),
        "{refused}"
    );
    // It says what is missing: no replica outside dc2 holds it, and the two dead ones in dc1 (the
    // new master's epoch started without them).
    assert!(
        refused
            .to_string()
            .contains("no replica outside data center \"dc2\" holds it"),
        "{refused}"
    );
    assert!(
        refused
            .to_string()
            .contains("missing: 2 replicas never fetched from this master"),
        "{refused}"
    );
    lone.shutdown().await;
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_restarted_far_behind_catches_up_and_reenters_the_in_sync_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = GroupCluster::start(
        dir.path(),
        GroupOptions {
            in_sync_lag_bytes: 64 << 10,
            ..GroupOptions::default()
        },
    );
    create_topic_and_group(&cluster, "orders");
    cluster.stop_member(2);
    // Quorum still holds with the master and a-1: about 3 MB the stopped slave lacks.
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(cluster.route(&pool), ProducerConfig::default());
    let body = Bytes::from(vec![b'x'; 16 << 10]);
    for _ in 0..200 {
        producer.send(Message::new("orders", body.clone())).await.unwrap();
    }
    assert_eq!(
        cluster.wait_in_sync(0, 1),
        ["a-1"],
        "the stopped slave left the in-sync set"
    );
    cluster.start_member(2);
    assert_eq!(cluster.wait_role(2, "slave"), 1);
    wait_caught_up(&cluster, 2, 0);
    assert_eq!(cluster.wait_in_sync(0, 2), ["a-1", "a-2"]);
    // The slave serves reads of what it replicated (consume queues built from its own log).
    let pull = meridian_proto::messages::PullRequest {
        group: "readers".into(),
        topic: "orders".into(),
        queue_id: 0,
        offset: 0,
        max_count: 1000,
        max_bytes: 8 << 20,
        long_poll_ms: 0,
        ..Default::default()
    };
    let slave_addr = cluster.members[2].listen.to_string();
    // A slave serves only what it knows the group confirmed and has indexed: it learns the
    // confirmed offset with its next fetch, so a pull the instant its log caught up may find
    // nothing yet. Wait for the records, up to 10 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let records = loop {
        let pulled: meridian_proto::messages::PullResponse = pool
            .call(&slave_addr, RequestCode::Pull, &pull, Duration::from_secs(5))
            .await
            .unwrap();
        let records = meridian_proto::record::decode_all(&pulled.records).unwrap();
        if !records.is_empty() || std::time::Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !records.is_empty() && records.iter().all(|record| record.body == body),
        "{} records",
        records.len()
    );
    producer.shutdown().await;
    pool.shutdown().await;
}

/// One `meridian bench produce --json` run against the cluster's nameserver.
fn bench_produce(cluster: &GroupCluster, extra: &[&str]) -> serde_json::Value {
    let nameserver = cluster.nameserver_addr.to_string();
    let mut args = vec![
        "bench",
        "produce",
        "--nameserver",
        &nameserver,
        "--topic",
        "bench",
        "--queues",
        "8",
        "--size",
        "1024",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = meridian_tests::run_cli(&args, &[], "");
    assert!(ok, "bench produce failed: {stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("bench prints JSON")
}

/// Benchmark, not a test (run by `scripts/bench-replication.sh`): produce rate and latency of a
/// lone broker, a group acknowledging with `quorum`, and one with `idc_safe`, all measured in the
/// same run: first as fast as 64 sends in flight allow, then paced at half that rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-replication.sh runs it"]
async fn bench_produce_single_quorum_idc_safe() {
    let count = std::env::var("MERIDIAN_BENCH_COUNT").unwrap_or_else(|_| "300000".into());
    let mut rows = Vec::new();
    for (label, policy, replicas) in [
        ("single broker", "quorum", 1),
        ("group, quorum", "quorum", 3),
        ("group, idc_safe", "idc_safe", 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = GroupOptions {
            ack_policy: policy,
            replicas,
            broker_timeout_ms: 3000,
            heartbeat_interval_ms: 500,
            ..GroupOptions::default()
        };
        let mut cluster = GroupCluster::prepare(dir.path(), options);
        if replicas == 1 {
            cluster.launch_one();
        } else {
            cluster.launch();
        }
        let max = bench_produce(&cluster, &["--count", &count, "--concurrency", "64"]);
        let rate = max["msgs_per_s"].as_f64().unwrap();
        let half = (rate / 2.0) as u64;
        let paced_count = (half * 8).to_string();
        let paced = bench_produce(
            &cluster,
            &[
                "--count",
                &paced_count,
                "--concurrency",
                "64",
                "--rate",
                &half.to_string(),
            ],
        );
        rows.push(serde_json::json!({"setup": label, "max": max, "half_rate": paced}));
    }
    let single = rows[0]["max"]["msgs_per_s"].as_f64().unwrap();
    println!("| setup | msgs/s (64 in flight) | × single | p50 ms | p99 ms | p99 ms at half rate |");
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        let max = &row["max"];
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            row["setup"].as_str().unwrap(),
            max["msgs_per_s"].as_f64().unwrap(),
            max["msgs_per_s"].as_f64().unwrap() / single,
            max["latency_ms"]["p50"].as_f64().unwrap(),
            max["latency_ms"]["p99"].as_f64().unwrap(),
            row["half_rate"]["latency_ms"]["p99"].as_f64().unwrap()
        );
    }
    println!("{}", serde_json::json!({"produce": rows}));
}

/// Benchmark, not a test (run by `scripts/bench-replication.sh`): failover time from `kill -9` of
/// the master to the first acknowledged send on its successor, over `MERIDIAN_FAILOVER_TRIALS`
/// trials (default 10) with the production defaults (3 s broker timeout, 500 ms heartbeats), and
/// the acknowledged messages missing afterwards (must be 0). Each trial kills the current master
/// and restarts the previous victim as a slave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-replication.sh runs it"]
async fn bench_failover_trials() {
    let trials: usize = std::env::var("MERIDIAN_FAILOVER_TRIALS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = GroupCluster::start(
        dir.path(),
        GroupOptions {
            broker_timeout_ms: 3000,
            heartbeat_interval_ms: 500,
            ..GroupOptions::default()
        },
    );
    create_topic_and_group(&cluster, "orders");
    let pool = ConnectionPool::new(ClientConfig::default());
    let mut master = 0;
    let mut times = Vec::new();
    let mut acknowledged = HashSet::new();
    for trial in 0..trials {
        let storm = Storm::start(&cluster, &pool, "orders", 4, 10);
        storm
            .acked
            .wait_count_since(Instant::now(), 50, "before the kill")
            .await;
        cluster.kill9(master);
        let killed = Instant::now();
        let first = loop {
            if let Some(first) = storm.acked.first_after(killed) {
                break first;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "trial {trial}: no ack within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        storm.acked.wait_count_since(first, 10, "on the new master").await;
        let acked = storm.finish().await;
        acknowledged.extend(acked.ids());
        times.push((first - killed).as_millis() as u64);
        let others: Vec<usize> = (0..3).filter(|index| *index != master).collect();
        let (successor, epoch) = new_master(&cluster, &others);
        eprintln!(
            "trial {trial}: {} ms, {} -> {} at epoch {epoch}",
            times[trial], cluster.members[master].name, cluster.members[successor].name
        );
        cluster.start_member(master);
        wait_caught_up(&cluster, master, successor);
        cluster.wait_in_sync(successor, 2);
        master = successor;
    }
    let duplicates = assert_nothing_lost(&cluster, "orders", &acknowledged).await;
    let worst = times.iter().max().copied().unwrap_or(0);
    let mean = times.iter().sum::<u64>() as f64 / times.len().max(1) as f64;
    println!(
        "failover over {trials} trials: mean {mean:.0} ms, worst {worst} ms; {} acknowledged, 0 lost, {duplicates} duplicates",
        acknowledged.len()
    );
    println!(
        "{}",
        serde_json::json!({"failover_ms": times, "worst_ms": worst, "acknowledged": acknowledged.len(), "lost": 0, "duplicates": duplicates})
    );
    pool.shutdown().await;
}

/// One archiver beside every member of a group, all writing into one archive: only the master's
/// archives; after a switchover the new master's archiver takes over at the new epoch. The
/// archive then holds exactly the group's history: DuckDB, reading the Parquet files on its own,
/// finds every row once and each at the queue offset where the group's current master serves the
/// same message, and `meridian archive verify` finds no problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_archiver_per_group_archives_from_the_master_and_the_archive_is_the_groups_history() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut cluster = GroupCluster::prepare(root, GroupOptions::default());
    let archive = root.join("archive");
    let archiver_configs = archive_configs(&cluster, &archive);
    cluster.launch();
    let first_epoch = cluster.wait_role(0, "master");
    let archivers = start_archivers(&cluster, &archiver_configs, root);
    create_topic_and_group(&cluster, "orders");
    let pool = ConnectionPool::new(ClientConfig::default());
    let storm = Storm::start(&cluster, &pool, "orders", 4, 8);

    let entries = || manifest_entries(&archive);
    let archived_at = |epoch: u64| entries().iter().any(|entry| entry["epoch"] == epoch);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !archived_at(first_epoch) {
        assert!(Instant::now() < deadline, "the master a-0 archived nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (ok, _, stderr) = cluster.cli(&[
        "broker",
        "switchover",
        "--group",
        "broker-a",
        "--to",
        "a-2",
        "--by",
        "e2e",
    ]);
    assert!(ok, "{stderr}");
    let second_epoch = cluster.wait_role(2, "master");
    let elected = Instant::now();
    let deadline = elected + Duration::from_secs(60);
    while !archived_at(second_epoch) || storm.acked.first_after(elected).is_none() {
        assert!(Instant::now() < deadline, "the new master a-2 archived nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acked = storm.finish().await;
    assert!(acked.count() > 0);

    // The slaves' archivers said why they do nothing.
    for slave in &archivers[1..] {
        let log = std::fs::read_to_string(&slave.log_path).unwrap();
        assert!(log.contains("not archiving"), "{log}");
    }
    // Stopped (SIGTERM ends a round midway, like a crash: files not yet committed may stay).
    for archiver in archivers {
        archiver.stop();
    }

    // Entries in offset order: a-0's epoch, then a-2's; nothing from another epoch.
    let entries = entries();
    let epochs: Vec<u64> = entries.iter().map(|entry| entry["epoch"].as_u64().unwrap()).collect();
    assert!(
        epochs.windows(2).all(|pair| pair[0] <= pair[1])
            && epochs
                .iter()
                .all(|epoch| *epoch == first_epoch || *epoch == second_epoch),
        "epochs of the entries: {epochs:?} (a-0 at {first_epoch}, a-2 at {second_epoch})"
    );

    // DuckDB reads the files by itself: each row once, each where the group serves it now.
    // The archive is what the manifest names: DuckDB reads those files.
    let rows = duckdb_rows(&archive, &entries);
    let pool = ConnectionPool::new(ClientConfig::default());
    let stored = read_through(cluster.route(&pool), "readers", "orders").await;
    pool.shutdown().await;
    let history: HashMap<(u32, u64), &str> = stored
        .iter()
        .map(|message| ((message.queue_id, message.queue_offset), message.msg_id()))
        .collect();
    let mut seen = HashSet::new();
    for (queue_id, queue_offset, msg_id) in &rows {
        assert!(
            seen.insert((*queue_id, *queue_offset)),
            "queue {queue_id} offset {queue_offset} archived twice"
        );
        assert_eq!(
            history.get(&(*queue_id, *queue_offset)).copied(),
            Some(msg_id.as_str()),
            "queue {queue_id} offset {queue_offset}: the archive holds another message than the group"
        );
    }
    assert!(!rows.is_empty());
    let (ok, stdout, stderr) = cluster_cli_archive_verify(&archiver_configs[2]);
    assert!(ok, "{stdout}{stderr}");
}

/// A master cut off from its slaves goes on writing sends no quorum holds and refuses each (a
/// divergent tail past its confirmed offset); it loses its lease, a slave is promoted and takes
/// more sends, and the old master rejoins as a slave and cuts the tail. With an archiver beside
/// every member throughout, the archive holds exactly the acknowledged history: every
/// acknowledged message once, no refused one, as DuckDB counts on its own and `meridian archive
/// verify` confirms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergent_tail_cut_by_a_failover_never_reaches_the_archive_which_holds_exactly_the_acknowledged_history() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut cluster = GroupCluster::prepare(root, GroupOptions::default());
    // a-0 reaches the nameserver, and is reached by its slaves, only through proxies.
    let to_nameserver = FaultyProxy::start("127.0.0.63:0", cluster.nameserver_addr).await;
    let to_master = FaultyProxy::start("127.0.0.64:0", cluster.members[0].listen).await;
    cluster.write_config(0, &to_nameserver.addr().to_string(), Some(to_master.addr()));
    let archive = root.join("archive");
    let archiver_configs = archive_configs(&cluster, &archive);
    // a-0 binds port 0: the proxy learns where to forward once it listens, before any slave.
    cluster.start_member(0);
    to_master.retarget(cluster.members[0].listen);
    cluster.launch();
    let first_epoch = cluster.wait_role(0, "master");
    let archivers = start_archivers(&cluster, &archiver_configs, root);
    create_topic_and_group(&cluster, "orders");
    cluster.wait_in_sync(0, 2);
    let pool = ConnectionPool::new(ClientConfig::default());
    let old_addr = cluster.members[0].listen.to_string();

    // Acknowledged on a-0 with both slaves in sync: enough to seal a segment or two.
    let (mut acked, refused) = send_many(&pool, &old_addr, 0, 400, 8).await;
    assert!(
        refused.is_empty(),
        "{} sends refused with the group healthy",
        refused.len()
    );

    // The slaves lose a-0; it still holds its lease, so it writes each send and refuses it after
    // the ack timeout: no quorum holds them.
    to_master.cut();
    let (tail_acked, divergent) = send_many(&pool, &old_addr, 400, 20, 20).await;
    assert!(
        tail_acked.is_empty(),
        "a-0 acknowledged {tail_acked:?} cut off from its slaves"
    );
    let (committed, confirmed, _) = offsets(&cluster, 0).expect("a-0 health");
    assert!(
        committed > confirmed,
        "a-0 wrote the refused sends past its confirmed offset (the divergent tail): committed {committed}, confirmed {confirmed}"
    );

    // Then the nameserver loses it too: its lease runs out and a slave is promoted, without the tail.
    to_nameserver.cut();
    let (master, second_epoch) = new_master(&cluster, &[1, 2]);
    assert!(second_epoch > first_epoch);
    assert!(
        cluster.committed(master).unwrap() < committed,
        "the new master does not hold a-0's divergent tail"
    );
    cluster.wait_in_sync(master, 1);
    let new_addr = cluster.members[master].listen.to_string();
    let (more, refused) = send_many(&pool, &new_addr, 420, 400, 8).await;
    assert!(refused.is_empty(), "{} sends refused by the new master", refused.len());
    acked.extend(more);

    // The partition heals: a-0 rejoins as a slave of the new epoch and cuts its divergent tail.
    to_nameserver.heal();
    to_master.heal();
    assert_eq!(cluster.wait_role(0, "slave"), second_epoch);
    wait_caught_up(&cluster, 0, master);

    // More acknowledged sends until the segment holding the last of `acked` is sealed, then the
    // archivers get to it.
    let history_end = cluster.committed(master).unwrap();
    assert!(
        history_end > committed,
        "the archived range must cover the offsets where a-0 wrote its divergent tail"
    );
    let mut filler = Vec::new();
    while cluster.committed(master).unwrap() < history_end + 262_144 {
        let (more, refused) = send_many(&pool, &new_addr, 820 + filler.len() as u64, 100, 8).await;
        assert!(refused.is_empty(), "{} sends refused after the heal", refused.len());
        filler.extend(more);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !manifest_entries(&archive)
        .iter()
        .any(|entry| entry["segment_end"].as_u64().is_some_and(|end| end >= history_end))
    {
        assert!(
            Instant::now() < deadline,
            "the archive never reached offset {history_end}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for archiver in archivers {
        archiver.stop();
    }
    pool.shutdown().await;

    let entries = manifest_entries(&archive);
    let epochs: Vec<u64> = entries.iter().map(|entry| entry["epoch"].as_u64().unwrap()).collect();
    assert!(
        epochs.windows(2).all(|pair| pair[0] <= pair[1])
            && epochs
                .iter()
                .all(|epoch| *epoch == first_epoch || *epoch == second_epoch),
        "epochs of the entries: {epochs:?} (a-0 at {first_epoch}, a-{master} at {second_epoch})"
    );
    let rows = duckdb_rows(&archive, &entries);
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for (_, _, msg_id) in &rows {
        *copies.entry(msg_id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "archived more than once: {twice:?}");
    let leaked: Vec<&String> = divergent.iter().filter(|id| copies.contains_key(id.as_str())).collect();
    assert!(
        leaked.is_empty(),
        "refused sends of the divergent tail reached the archive: {leaked:?}"
    );
    let missing: Vec<&String> = acked.iter().filter(|id| !copies.contains_key(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages are not in the archive, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    // Every archived row is an acknowledged message (the history, or filler acknowledged after it).
    let acknowledged: HashSet<&str> = acked.iter().chain(&filler).map(String::as_str).collect();
    let unacknowledged: Vec<&&str> = copies.keys().filter(|id| !acknowledged.contains(**id)).collect();
    assert!(
        unacknowledged.is_empty(),
        "archived but never acknowledged: {unacknowledged:?}"
    );
    let archived_filler = filler.iter().filter(|id| copies.contains_key(id.as_str())).count();
    assert_eq!(
        rows.len(),
        acked.len() + archived_filler,
        "DuckDB counts exactly the acknowledged messages"
    );
    let (ok, stdout, stderr) = cluster_cli_archive_verify(&archiver_configs[master]);
    assert!(ok, "{stdout}{stderr}");
    eprintln!(
        "divergent tail: a-0 committed {committed} past confirmed {confirmed} ({} refused sends); archive holds {} rows: {} acknowledged before the heal, {archived_filler} filler",
        divergent.len(),
        rows.len(),
        acked.len()
    );
    to_nameserver.stop().await;
    to_master.stop().await;
}

/// Turns every member of `cluster` (prepared, not launched) into one with small segments (a few
/// seconds of sends seal several) and writes an archiver config beside each, archiving into
/// `archive`; the archiver configs, in member order.
fn archive_configs(cluster: &GroupCluster, archive: &std::path::Path) -> Vec<std::path::PathBuf> {
    (0..cluster.members.len())
        .map(|index| {
            let config_path = cluster.root.join(format!("broker-{index}.toml"));
            let config = std::fs::read_to_string(&config_path)
                .unwrap()
                .replace("segment_size = 67108864", "segment_size = 262144")
                + "\n[limits]\nmax_body_size = 65536\n";
            std::fs::write(&config_path, &config).unwrap();
            let archiver_config = cluster.root.join(format!("archiver-{index}.toml"));
            std::fs::write(
                &archiver_config,
                format!(
                    "{config}\n[archive]\nenabled = true\nstore = \"{}\"\narchive_after_secs = 0\ninterval_secs = 1\n",
                    archive.display()
                ),
            )
            .unwrap();
            archiver_config
        })
        .collect()
}

/// One `meridian archiver` per config (member order, the group launched), started once it says
/// for which broker it archives. Each config first learns the addresses its member bound (the
/// archiver asks the broker's HTTP for the confirmed offset).
fn start_archivers(
    cluster: &GroupCluster,
    configs: &[std::path::PathBuf],
    root: &std::path::Path,
) -> Vec<meridian_tests::ServiceProcess> {
    configs
        .iter()
        .zip(&cluster.members)
        .map(|(config, member)| {
            meridian_tests::pin_listen_addresses(config, member.listen, Some(member.http));
            meridian_tests::ServiceProcess::start(
                &["archiver".as_ref(), "--config".as_ref(), config.as_os_str()],
                root,
                |line| line.starts_with("meridian archiver for broker"),
            )
        })
        .collect()
}

/// broker-a's manifest entries in `archive`, in offset order.
fn manifest_entries(archive: &std::path::Path) -> Vec<serde_json::Value> {
    let mut entries: Vec<(u64, serde_json::Value)> = std::fs::read_dir(archive.join("manifests/broker-a"))
        .map(|listing| {
            listing
                .filter_map(|entry| {
                    let bytes = std::fs::read(entry.ok()?.path()).ok()?;
                    let entry: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
                    Some((entry["segment_start"].as_u64()?, entry))
                })
                .collect()
        })
        .unwrap_or_default();
    entries.sort_by_key(|(start, _)| *start);
    entries.into_iter().map(|(_, entry)| entry).collect()
}

/// The topic `orders` rows (queue id, queue offset, msgId) of the Parquet files `entries` name,
/// as DuckDB reads them on its own; asserts it counts as many as the manifest says.
fn duckdb_rows(archive: &std::path::Path, entries: &[serde_json::Value]) -> Vec<(u32, u64, String)> {
    let files: Vec<String> = entries
        .iter()
        .flat_map(|entry| entry["files"].as_array().unwrap())
        .filter(|file| file["topic"] == "orders")
        .map(|file| format!("'{}/{}'", archive.display(), file["path"].as_str().unwrap()))
        .collect();
    let (ok, stdout, stderr) = run_duckdb(&format!(
        "import duckdb, json\nrows = duckdb.sql(\"SELECT queue_id, queue_offset, msg_id FROM read_parquet([{}], hive_partitioning = false)\").fetchall()\nprint(json.dumps(rows))",
        files.join(", ")
    ));
    assert!(ok, "{stderr}");
    let rows: Vec<(u32, u64, String)> = serde_json::from_str(&stdout).unwrap();
    let archived_records: u64 = entries
        .iter()
        .flat_map(|entry| entry["files"].as_array().unwrap())
        .filter(|file| file["topic"] == "orders")
        .map(|file| file["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(
        rows.len() as u64,
        archived_records,
        "DuckDB counts what the manifest says"
    );
    rows
}

/// `meridian archive verify` with an archiver's config.
fn cluster_cli_archive_verify(config: &std::path::Path) -> (bool, String, String) {
    meridian_tests::run_cli(&["archive", "verify", "--config", config.to_str().unwrap()], &[], "")
}

/// Runs a Python script with DuckDB (see `archive_duckdb`).
fn run_duckdb(script: &str) -> (bool, String, String) {
    let output = std::process::Command::new(crate::archive_duckdb::duckdb_python())
        .args(["-c", script])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The master's `/api/health` offsets: (committed, confirmed, dispatched).
fn offsets(cluster: &GroupCluster, index: usize) -> Option<(u64, u64, u64)> {
    let health = cluster.health(index)?;
    let broker = &health["broker"];
    Some((
        broker["committed_offset"].as_u64()?,
        broker["confirmed_offset"].as_u64()?,
        broker["dispatched_offset"].as_u64()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_slaves_stopped_a_quorum_master_acknowledges_nothing_and_consumers_see_nothing_until_they_return() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = GroupCluster::start(dir.path(), GroupOptions::default());
    create_topic_and_group(&cluster, "orders");
    let pool = ConnectionPool::new(ClientConfig::default());
    let master_addr = cluster.members[0].listen.to_string();
    let acked_before = send_direct(&pool, &master_addr, 0)
        .await
        .expect("acknowledged with the slaves up");

    cluster.stop_member(1);
    cluster.stop_member(2);
    // Twenty sends at once, each refused after the ack timeout: the master wrote them, but no
    // slave holds them.
    let tasks = TaskTracker::new();
    let sends: Vec<_> = (1..=20)
        .map(|index| {
            let (pool, addr) = (pool.clone(), master_addr.clone());
            tasks.spawn(async move { send_direct(&pool, &addr, index).await })
        })
        .collect();
    tasks.close();
    for send in sends {
        assert_eq!(
            send.await.unwrap(),
            None,
            "a quorum master acknowledged a send with both slaves down"
        );
    }
    let (committed, confirmed, dispatched) = offsets(&cluster, 0).expect("master health");
    assert!(
        committed > confirmed,
        "the refused sends are in the master's log, past the confirmed offset"
    );
    assert_eq!(
        dispatched, confirmed,
        "consumers are served up to the confirmed offset, no further"
    );
    let seen = read_through(cluster.route(&pool), "readers", "orders").await;
    let ids: Vec<&str> = seen.iter().map(|message| message.msg_id()).collect();
    assert_eq!(ids, [acked_before.as_str()], "a consumer saw a message no quorum held");

    // The slaves return: they fetch the tail, the quorum holds it, it becomes visible, and new
    // sends are acknowledged again.
    cluster.start_member(1);
    cluster.start_member(2);
    cluster.wait_in_sync(0, 2);
    let acked_after = loop {
        if let Some(msg_id) = send_direct(&pool, &master_addr, 21).await {
            break msg_id;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = read_through(cluster.route(&pool), "readers", "orders").await;
        if seen.iter().any(|message| message.msg_id() == acked_after) {
            // The refused sends were stored, so they are delivered now that a quorum holds them.
            assert_eq!(seen.len(), 22, "one acknowledged before, twenty refused, one after");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the message acknowledged after the slaves returned never became visible"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (committed, confirmed, _) = offsets(&cluster, 0).expect("master health");
    assert_eq!(committed, confirmed);
    pool.shutdown().await;
}

/// A tmpfs mounted for one test (needs root: `None` elsewhere), unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, bytes: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| SmallDisk(dir.to_owned()))
    }

    /// Takes every byte left, as another process filling the disk would.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![b'f'; 64 << 10];
        while filler.write_all(&chunk).is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `GET /api/health` whatever its status: (status code, body).
fn raw_health(addr: std::net::SocketAddr) -> Option<(u16, serde_json::Value)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /api/health HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_disk_fails_stops_acknowledging_reports_unhealthy_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = GroupCluster::prepare(dir.path(), GroupOptions::default());
    // a-0's data dir on a small disk: room for its preallocated 64 MiB segment and a little more.
    let Some(disk) = SmallDisk::mount(&dir.path().join("a-0"), 72 << 20) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    cluster.launch();
    create_topic_and_group(&cluster, "orders");
    let pool = ConnectionPool::new(ClientConfig::default());
    let master_addr = cluster.members[0].listen.to_string();
    let mut acked = HashSet::new();
    acked.insert(
        send_direct(&pool, &master_addr, 0)
            .await
            .expect("acknowledged before the disk fills"),
    );

    // The disk fills: the next consume queue, checkpoint or metadata write fails, and the store
    // stops for good. Sends until then may be acknowledged (they are replicated); none after.
    disk.fill();
    let filled = Instant::now();
    let failure = loop {
        if let Some((503, health)) = raw_health(cluster.members[0].http) {
            assert_eq!(health["status"], "unhealthy");
            break health["store_failure"].as_str().unwrap_or_default().to_owned();
        }
        if let Some(msg_id) = send_direct(&pool, &master_addr, acked.len() as u64).await {
            acked.insert(msg_id);
        }
        assert!(
            filled.elapsed() < Duration::from_secs(20),
            "the full disk never failed the store"
        );
    };
    assert!(
        failure.contains("No space left") && failure.contains("restart"),
        "{failure}"
    );
    for index in 0..5 {
        assert_eq!(
            send_direct(&pool, &master_addr, 100 + index).await,
            None,
            "a broker whose store failed acknowledged a send"
        );
    }
    // Its heartbeats stopped: the controller promotes an in-sync slave, which has every
    // acknowledged message.
    let (master, epoch) = new_master(&cluster, &[1, 2]);
    assert!(epoch >= 2);
    eprintln!(
        "disk full: store failed with {failure:?}; {} promoted at epoch {epoch} {:?} after the fill",
        cluster.members[master].name,
        filled.elapsed()
    );
    assert_nothing_lost(&cluster, "orders", &acked).await;
    pool.shutdown().await;
    cluster.kill9(0);
    drop(cluster);
    drop(disk);
}

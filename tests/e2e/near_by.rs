//! The near-by principle across two data centers: a nameserver and two broker groups, `broker-a`
//! in `dc1` and `broker-b` in `dc2`, each its own `meridian broker` process. Producers and
//! consumers tagged with a data center stay in it while it is healthy, cross over when its brokers
//! die or a drill evacuates it, and come back; nothing acknowledged is lost on the way.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_client::{
    ConnectionPool, ConsumeFrom, ConsumeResult, ConsumerConfig, Deployment, IdcSettings, Message, Producer,
    ProducerConfig, PushConsumer, RouteSource,
};
use meridian_tests::{ServiceProcess, eventually, run_cli};
use tokio_util::task::TaskTracker;

/// A single-node nameserver in `dc1` on `ip`, its files under `root`.
fn start_nameserver(root: &Path, ip: &str) -> (ServiceProcess, SocketAddr) {
    let config = root.join("nameserver.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{ip}:0\"\nhttp_listen = \"{ip}:0\"\ndata_dir = \"{}\"\nidc = \"dc1\"\nbroker_timeout_ms = 2000\n",
            root.join("nameserver").display()
        ),
    )
    .unwrap();
    // Port 0: the nameserver reports the port it got in its ready file.
    let (process, addrs) =
        ServiceProcess::start_ready(&["nameserver".as_ref(), "--config".as_ref(), config.as_os_str()], root);
    (process, meridian_tests::ready_addr(&addrs, "nameserver"))
}

/// A nameserver and one single-broker group per data center.
struct TwoIdcCluster {
    root: PathBuf,
    _nameserver: ServiceProcess,
    nameserver_addr: SocketAddr,
    /// `(group, idc, config path, process)`.
    brokers: Vec<(String, String, PathBuf, Option<ServiceProcess>)>,
}

impl TwoIdcCluster {
    fn start(root: &Path) -> TwoIdcCluster {
        let (nameserver, nameserver_addr) = start_nameserver(root, "127.0.0.50");
        let mut cluster = TwoIdcCluster {
            root: root.to_owned(),
            _nameserver: nameserver,
            nameserver_addr,
            brokers: Vec::new(),
        };
        for (index, (group, idc)) in [("broker-a", "dc1"), ("broker-b", "dc2")].into_iter().enumerate() {
            let ip = format!("127.0.0.{}", 51 + index);
            let config = root.join(format!("{group}.toml"));
            std::fs::write(
                &config,
                format!(
                    "broker_name = \"{group}\"\nlisten = \"{ip}:0\"\nhttp_listen = \"{ip}:0\"\ndata_dir = \"{}\"\nidc = \"{idc}\"\nnameservers = [\"{nameserver_addr}\"]\nheartbeat_interval_ms = 200\n\n[store]\nsegment_size = 67108864\n\n[replication]\nreplicas = 1\n",
                    root.join(group).display()
                ),
            )
            .unwrap();
            cluster.brokers.push((group.into(), idc.into(), config, None));
            cluster.start_broker(index);
        }
        cluster
    }

    /// Starts broker `index`: port 0 the first time, then the addresses it bound (its config is
    /// pinned to them), so a restart comes back where the routes had it.
    fn start_broker(&mut self, index: usize) {
        let (process, _, _) = meridian_tests::start_broker(&self.brokers[index].2, &self.root);
        self.brokers[index].3 = Some(process);
    }

    fn kill9(&mut self, index: usize) {
        self.brokers[index].3.take().expect("running").kill9();
    }

    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let nameserver = self.nameserver_addr.to_string();
        run_cli(args, &[("MERIDIAN_NAMESERVER", &nameserver)], "")
    }

    fn route(&self, pool: &ConnectionPool) -> Arc<dyn RouteSource> {
        Arc::new(meridian_client::NameserverRoute::new(
            vec![self.nameserver_addr.to_string()],
            pool.clone(),
        ))
    }

    /// Waits until both groups have a live master in the route of `topic`.
    async fn wait_writable(&self, pool: &ConnectionPool, topic: &str, groups: usize) {
        let route = self.route(pool);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(route) = route.route(topic).await
                && route.brokers.iter().filter(|broker| !broker.addr.is_empty()).count() == groups
            {
                return;
            }
            assert!(Instant::now() < deadline, "brokers never became writable for {topic}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates `topic` with 4 queues on each group, and consumer group `group` of it.
    async fn topic_and_group(&self, pool: &ConnectionPool, topic: &str, group: &str) {
        let (ok, _, stderr) = self.cli(&["topic", "create", topic, "--queues", "4", "--on", "broker-a,broker-b"]);
        assert!(ok, "{stderr}");
        let (ok, _, stderr) = self.cli(&["group", "create", group, "--topics", topic]);
        assert!(ok, "{stderr}");
        self.wait_writable(pool, topic, 2).await;
    }

    fn producer(&self, pool: &ConnectionPool, idc: &str) -> Producer {
        Producer::new(
            self.route(pool),
            ProducerConfig {
                idc: IdcSettings {
                    idc: idc.into(),
                    ..IdcSettings::default()
                },
                retries: 6,
                retry_backoff: Duration::from_millis(50),
                route_refresh: Duration::from_secs(1),
                ..ProducerConfig::default()
            },
        )
    }
}

/// Every message id a group of consumers handled.
#[derive(Default, Clone)]
struct Consumed(Arc<Mutex<HashSet<String>>>);

impl Consumed {
    fn count_of(&self, ids: &BTreeSet<String>) -> usize {
        let seen = self.0.lock().unwrap();
        ids.iter().filter(|id| seen.contains(*id)).count()
    }
}

async fn consumer(
    cluster: &TwoIdcCluster,
    pool: &ConnectionPool,
    topic: &str,
    group: &str,
    idc: &str,
    deployment: Deployment,
    consumed: &Consumed,
) -> PushConsumer {
    let config = ConsumerConfig {
        client_id: format!("{idc}-consumer"),
        consume_from: ConsumeFrom::Earliest,
        idc: IdcSettings {
            idc: idc.into(),
            ..IdcSettings::default()
        },
        deployment,
        route_refresh: Duration::from_secs(1),
        long_poll: Duration::from_millis(500),
        ..ConsumerConfig::new(group, topic)
    };
    let seen = consumed.0.clone();
    PushConsumer::start(cluster.route(pool), config, move |message| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().insert(message.msg_id().to_owned());
            ConsumeResult::Success
        }
    })
    .await
    .unwrap()
}

fn brokers_of(consumer: &PushConsumer) -> BTreeSet<String> {
    consumer
        .assigned_queues()
        .into_iter()
        .map(|queue| queue.broker_name)
        .collect()
}

/// Sends `count` messages from `producer`; returns the broker group of each and their ids. Every
/// send must succeed: failures never reach the application.
async fn send_some(producer: &Producer, topic: &str, count: usize) -> (Vec<String>, BTreeSet<String>) {
    let mut brokers = Vec::new();
    let mut ids = BTreeSet::new();
    for index in 0..count {
        let result = producer
            .send(Message::new(topic, format!("m{index}")))
            .await
            .unwrap_or_else(|error| panic!("send {index} reached the application as an error: {error}"));
        brokers.push(result.broker_name);
        ids.insert(result.msg_id);
    }
    (brokers, ids)
}

fn share(brokers: &[String], broker: &str) -> f64 {
    brokers.iter().filter(|name| *name == broker).count() as f64 / brokers.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producers_and_consumers_stay_in_their_idc_and_cross_over_only_while_it_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TwoIdcCluster::start(dir.path());
    let pool = ConnectionPool::new(meridian_client::ClientConfig::default());
    cluster.topic_and_group(&pool, "orders", "readers").await;

    let consumed = Consumed::default();
    let dc1 = consumer(
        &cluster,
        &pool,
        "orders",
        "readers",
        "dc1",
        Deployment::SingleSide,
        &consumed,
    )
    .await;
    let dc2 = consumer(
        &cluster,
        &pool,
        "orders",
        "readers",
        "dc2",
        Deployment::SingleSide,
        &consumed,
    )
    .await;
    assert_eq!(dc1.idc(), "dc1");
    let split = eventually(Duration::from_secs(10), || {
        brokers_of(&dc1) == BTreeSet::from(["broker-a".to_owned()])
            && brokers_of(&dc2) == BTreeSet::from(["broker-b".to_owned()])
            && dc1.assigned_queues().len() == 4
            && dc2.assigned_queues().len() == 4
    })
    .await;
    assert!(
        split,
        "each consumer holds only its IDC's queues: {:?} {:?}",
        dc1.assigned_queues(),
        dc2.assigned_queues()
    );

    // Healthy: every send stays in its producer's IDC.
    let (producer1, producer2) = (cluster.producer(&pool, "dc1"), cluster.producer(&pool, "dc2"));
    let mut acked = BTreeSet::new();
    let (brokers, ids) = send_some(&producer1, "orders", 200).await;
    assert!(share(&brokers, "broker-a") >= 0.99, "dc1 sends: {brokers:?}");
    acked.extend(ids);
    let local1 = share(&brokers, "broker-a");
    let (brokers, ids) = send_some(&producer2, "orders", 200).await;
    assert!(share(&brokers, "broker-b") >= 0.99, "dc2 sends: {brokers:?}");
    acked.extend(ids);
    eprintln!(
        "healthy two-IDC cluster: {:.1}% of dc1 sends and {:.1}% of dc2 sends crossed IDCs",
        (1.0 - local1) * 100.0,
        (1.0 - share(&brokers, "broker-b")) * 100.0
    );

    // dc1's brokers die: its producer crosses over with no error reaching the application.
    cluster.kill9(0);
    let (brokers, ids) = send_some(&producer1, "orders", 100).await;
    acked.extend(ids);
    assert!(
        share(&brokers[5..], "broker-b") == 1.0,
        "after the kill dc1 sends go to dc2: {brokers:?}"
    );

    // They come back: sends return home once the back-off passed and the route shows them.
    cluster.start_broker(0);
    cluster.wait_writable(&pool, "orders", 2).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (brokers, ids) = send_some(&producer1, "orders", 20).await;
        acked.extend(ids);
        if share(&brokers, "broker-a") == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "dc1 sends never returned home: {brokers:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Nothing acknowledged was lost: both consumers together handled every message.
    let all = eventually(Duration::from_secs(30), || consumed.count_of(&acked) == acked.len()).await;
    assert!(
        all,
        "consumed {} of {} acknowledged messages",
        consumed.count_of(&acked),
        acked.len()
    );
    for consumer in [dc1, dc2] {
        consumer.shutdown().await;
    }
    for producer in [producer1, producer2] {
        producer.shutdown().await;
    }
    pool.shutdown().await;
}

/// Producers in both IDCs sending until stopped, recording what was acknowledged and where.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: TaskTracker,
    acked: Arc<Mutex<Vec<Acked>>>,
}

/// `(producer idc, when, broker group, msg id)` of one acknowledged send.
type Acked = (String, Instant, String, String);

impl Load {
    fn start(producers: Vec<(String, Producer)>, topic: &'static str) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            tasks: TaskTracker::new(),
            acked: Arc::default(),
        };
        for (idc, producer) in producers {
            let (stop, acked) = (load.stop.clone(), load.acked.clone());
            load.tasks.spawn(async move {
                let mut index = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let result = producer
                        .send(Message::new(topic, format!("{idc}-{index}")))
                        .await
                        .unwrap_or_else(|error| panic!("a send from {idc} failed: {error}"));
                    acked
                        .lock()
                        .unwrap()
                        .push((idc.clone(), Instant::now(), result.broker_name, result.msg_id));
                    index += 1;
                    // Pacing of a steady load, not a condition.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                producer.shutdown().await;
            });
        }
        load
    }

    /// Broker groups that acknowledged sends made since `since`, per producer IDC.
    fn destinations_since(&self, since: Instant) -> BTreeMap<String, BTreeSet<String>> {
        let mut destinations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (idc, at, broker, _) in self.acked.lock().unwrap().iter() {
            if *at >= since {
                destinations.entry(idc.clone()).or_default().insert(broker.clone());
            }
        }
        destinations
    }

    async fn stop(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.close();
        self.tasks.wait().await;
        self.acked
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, _, id)| id.clone())
            .collect()
    }
}

/// Waits until every producer's sends since a moment after now go only to `expected`, and the
/// consumers hold what `holds` says; returns how long that took.
async fn wait_for_traffic(load: &Load, expected: &[(&str, &[&str])], holds: impl Fn() -> bool, what: &str) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    loop {
        let mark = Instant::now();
        // A sampling window, inside a wait on the condition: where 600 ms of sends went.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let destinations = load.destinations_since(mark);
        let wanted: BTreeMap<String, BTreeSet<String>> = expected
            .iter()
            .map(|(idc, brokers)| {
                (
                    (*idc).to_owned(),
                    brokers.iter().map(|broker| (*broker).to_owned()).collect(),
                )
            })
            .collect();
        if destinations == wanted && holds() {
            return started.elapsed();
        }
        assert!(Instant::now() < deadline, "{what}: traffic went {destinations:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drills_move_all_traffic_out_of_an_idc_and_back_without_losing_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TwoIdcCluster::start(dir.path());
    let pool = ConnectionPool::new(meridian_client::ClientConfig::default());
    cluster.topic_and_group(&pool, "payments", "settlers").await;
    let consumed = Consumed::default();
    let dc1 = consumer(
        &cluster,
        &pool,
        "payments",
        "settlers",
        "dc1",
        Deployment::DualSide,
        &consumed,
    )
    .await;
    let dc2 = consumer(
        &cluster,
        &pool,
        "payments",
        "settlers",
        "dc2",
        Deployment::DualSide,
        &consumed,
    )
    .await;
    let load = Load::start(
        vec![
            ("dc1".to_owned(), cluster.producer(&pool, "dc1")),
            ("dc2".to_owned(), cluster.producer(&pool, "dc2")),
        ],
        "payments",
    );
    let a = BTreeSet::from(["broker-a".to_owned()]);
    let b = BTreeSet::from(["broker-b".to_owned()]);
    let both = BTreeSet::from(["broker-a".to_owned(), "broker-b".to_owned()]);
    let dual = || brokers_of(&dc1) == a && brokers_of(&dc2) == b;
    wait_for_traffic(
        &load,
        &[("dc1", &["broker-a"]), ("dc2", &["broker-b"])],
        dual,
        "dual-center",
    )
    .await;

    for (idc, remaining, home, other) in [("dc1", "broker-b", &dc1, &dc2), ("dc2", "broker-a", &dc2, &dc1)] {
        let (ok, stdout, stderr) = cluster.cli(&["drill", "evacuate", "--idc", idc, "--reason", "quarterly drill"]);
        assert!(ok, "{stderr}");
        assert!(stdout.contains(&format!("data center {idc} evacuated")), "{stdout}");
        let evacuated = || home.assigned_queues().is_empty() && brokers_of(other) == both;
        let took = wait_for_traffic(
            &load,
            &[("dc1", &[remaining]), ("dc2", &[remaining])],
            evacuated,
            &format!("evacuating {idc}"),
        )
        .await;
        eprintln!("evacuating {idc}: all traffic moved within {took:?}");
        let (ok, stdout, _) = cluster.cli(&["drill", "status"]);
        assert!(
            ok && stdout.contains(&format!("data center {idc} is EVACUATED")),
            "{stdout}"
        );

        let (ok, _, stderr) = cluster.cli(&["drill", "restore"]);
        assert!(ok, "{stderr}");
        let took = wait_for_traffic(
            &load,
            &[("dc1", &["broker-a"]), ("dc2", &["broker-b"])],
            dual,
            "restoring",
        )
        .await;
        eprintln!("restoring after {idc}: traffic back home within {took:?}");
    }

    let acked = load.stop().await;
    let all = eventually(Duration::from_secs(30), || consumed.count_of(&acked) == acked.len()).await;
    assert!(
        all,
        "consumed {} of {} acknowledged messages",
        consumed.count_of(&acked),
        acked.len()
    );

    // Every step is recorded with who ran it and when.
    let (ok, stdout, _) = cluster.cli(&["drill", "status"]);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("dual-center"), "{stdout}");
    let steps: Vec<&str> = stdout.lines().filter(|line| line.contains(" by e2e")).collect();
    assert_eq!(steps.len(), 4, "{stdout}");
    assert!(
        steps[0].contains("evacuate dc1") && steps[0].contains("(quarterly drill)"),
        "{stdout}"
    );
    assert!(steps[3].contains("restore  dc2"), "{stdout}");
    for consumer in [dc1, dc2] {
        consumer.shutdown().await;
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_an_idc_setting_takes_it_from_the_idc_map_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_nameserver, nameserver_addr) = start_nameserver(root, "127.0.0.55");
    let nameserver = nameserver_addr.to_string();
    let cli = |args: &[&str]| run_cli(args, &[("MERIDIAN_NAMESERVER", &nameserver)], "");

    let (ok, stdout, stderr) = cli(&["idc", "set", "127.0.0.0/8", "dc1"]);
    assert!(ok && stdout.contains("127.0.0.0/8 → dc1"), "{stdout}{stderr}");
    let (ok, _, stderr) = cli(&["idc", "set", "127.0.0.56/32", "dc3"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning: 127.0.0.56/32 overlaps 127.0.0.0/8 → dc1; the longer prefix decides"),
        "{stderr}"
    );
    let (ok, stdout, _) = cli(&["idc", "lookup", "127.0.0.56"]);
    assert!(
        ok && stdout.contains("127.0.0.56: dc3 (rule 127.0.0.56/32)"),
        "{stdout}"
    );
    let (ok, _, stderr) = cli(&["idc", "set", "10.0.0.0/8", "dc 9"]);
    assert!(!ok && stderr.contains("IDC name \"dc 9\" is invalid"), "{stderr}");

    // No idc setting, an IDC file that is missing: the map decides, and the log says why.
    let ip = "127.0.0.56";
    let config = root.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "broker_name = \"broker-c\"\nlisten = \"{ip}:0\"\nhttp_listen = \"{ip}:0\"\ndata_dir = \"{}\"\nidc_file = \"{}\"\nnameservers = [\"{nameserver}\"]\n\n[replication]\nreplicas = 1\n",
            root.join("broker").display(),
            root.join("no-such-idc-file").display()
        ),
    )
    .unwrap();
    let broker = ServiceProcess::start(
        &["broker".as_ref(), "--config".as_ref(), config.as_os_str()],
        root,
        |line| line.starts_with("  http"),
    );
    let log = broker.log();
    assert!(log.contains("cannot read the IDC file"), "{log}");
    assert!(log.contains("idc=dc3"), "{log}");
    let registered = eventually(Duration::from_secs(10), || {
        let (_, stdout, _) = cli(&["cluster", "status"]);
        stdout.contains("idc dc3")
    })
    .await;
    assert!(registered, "cluster status shows the broker in dc3");
    broker.stop();
}

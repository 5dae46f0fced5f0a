//! Nameserver clusters of separate processes on 127.0.0.x: losing the leader, catching up from
//! the log or a snapshot, a wiped node re-added, racing requests, and broker liveness in routes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meridian_tests::{ServiceProcess, run_cli};
use serde_json::Value;

/// Generous bound for elections and catching up on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(20);

struct NameserverCluster {
    root: PathBuf,
    /// Node `id`'s address at `id - 1`: port 0 until it first starts, then the address it bound
    /// (its config is pinned to it, so a restart re-binds it).
    addrs: Vec<String>,
    nodes: Vec<Option<ServiceProcess>>,
}

impl NameserverCluster {
    /// Binds before forming: node 1 starts alone on port 0 and forms a cluster of one; every
    /// other node starts empty (`join = true`) on port 0, and node 1 adds it by the address it
    /// reported, as `meridian cluster add-node` does for an operator. No port is chosen before a
    /// process binds it.
    fn start(root: &Path, size: u64) -> NameserverCluster {
        let mut cluster = NameserverCluster {
            root: root.to_owned(),
            addrs: (1..=size).map(|id| format!("127.0.0.{}:0", 10 + id)).collect(),
            nodes: Vec::new(),
        };
        for id in 1..=size {
            cluster.write_config(id, id != 1);
            let node = cluster.spawn(id);
            cluster.nodes.push(Some(node));
        }
        // Node 1 leads its cluster of one as soon as it has elected itself.
        let deadline = Instant::now() + PATIENCE;
        while cluster
            .status(1)
            .and_then(|status| status["cluster"]["leader"].as_u64())
            != Some(1)
        {
            assert!(Instant::now() < deadline, "node 1 never led its cluster of one");
            std::thread::sleep(Duration::from_millis(50));
        }
        for id in 2..=size {
            let (ok, stdout, stderr) = run_cli(
                &[
                    "cluster",
                    "add-node",
                    &id.to_string(),
                    "--addr",
                    cluster.addr(id),
                    "--idc",
                    &format!("dc{id}"),
                    "--nameserver",
                    cluster.addr(1),
                ],
                &[],
                "",
            );
            assert!(ok, "adding node {id}: {stdout}{stderr}");
        }
        cluster
    }

    fn config_path(&self, id: u64) -> PathBuf {
        self.root.join(format!("nameserver-{id}.toml"))
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("node-{id}"))
    }

    fn addr(&self, id: u64) -> &str {
        &self.addrs[id as usize - 1]
    }

    /// Writes node `id`'s config: it forms a cluster of itself alone, or (`join`) waits to be
    /// added; a restart of a formed node skips either (its data dir holds the membership).
    fn write_config(&self, id: u64, join: bool) {
        let ip = self.addr(id).split(':').next().unwrap();
        let config = format!(
            "node_id = {id}\nlisten = \"{}\"\nhttp_listen = \"{ip}:0\"\nidc = \"dc{id}\"\ndata_dir = \"{}\"\njoin = {join}\nbroker_timeout_ms = 2000\nwrite_timeout_ms = 3000\n\n[raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\nsnapshot_logs_since_last = 20\nmax_in_snapshot_log_to_keep = 0\n",
            self.addr(id),
            self.data_dir(id).display(),
        );
        std::fs::write(self.config_path(id), config).unwrap();
    }

    /// Starts node `id` and, on its first start, records (and pins in its config) the address it
    /// bound.
    fn spawn(&mut self, id: u64) -> ServiceProcess {
        let config = self.config_path(id);
        let args = [
            std::ffi::OsStr::new("nameserver"),
            "--config".as_ref(),
            config.as_os_str(),
        ];
        let (node, bound) = ServiceProcess::start_ready(&args, &self.root);
        let listen = meridian_tests::ready_addr(&bound, "nameserver");
        meridian_tests::pin_listen_addresses(&config, listen, Some(meridian_tests::ready_addr(&bound, "http")));
        self.addrs[id as usize - 1] = listen.to_string();
        node
    }

    fn restart(&mut self, id: u64) {
        let node = self.spawn(id);
        self.nodes[id as usize - 1] = Some(node);
    }

    fn kill9(&mut self, id: u64) {
        self.nodes[id as usize - 1].take().expect("node is running").kill9();
    }

    fn running(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64)
            .filter(|id| self.nodes[*id as usize - 1].is_some())
            .collect()
    }

    /// `meridian cluster status --json` as node `id` answers it.
    fn status(&self, id: u64) -> Option<Value> {
        let (ok, stdout, _) = run_cli(&["cluster", "status", "--json", "--nameserver", self.addr(id)], &[], "");
        ok.then(|| serde_json::from_str(&stdout).unwrap())
    }

    /// The leader every running node agrees on.
    fn wait_for_leader(&self) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leaders: Vec<Option<u64>> = self
                .running()
                .iter()
                .map(|id| self.status(*id).and_then(|status| status["cluster"]["leader"].as_u64()))
                .collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|other| *other == Some(*leader))
                && self.running().contains(leader)
            {
                return *leader;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {PATIENCE:?}: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let addrs: Vec<&str> = self.running().iter().map(|id| self.addr(*id)).collect();
        let joined = addrs.join(",");
        run_cli(args, &[("MERIDIAN_NAMESERVER", &joined)], "")
    }

    fn applied(&self, id: u64) -> Option<u64> {
        self.status(id)?["cluster"]["last_applied"].as_u64()
    }

    /// Waits until node `id` has applied everything node `leader` has.
    fn wait_caught_up(&self, id: u64, leader: u64) {
        let target = self.applied(leader).expect("leader answers");
        let deadline = Instant::now() + PATIENCE;
        while self.applied(id).is_none_or(|applied| applied < target) {
            assert!(
                Instant::now() < deadline,
                "node {id} did not catch up to {target}: {:?}",
                self.status(id)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn request(cluster: &NameserverCluster, topic: &str) -> (bool, String, String) {
    cluster.cli(&[
        "topic", "request", topic, "--owner", "shop", "--queues", "2", "--on", "broker-a", "--by", "e2e",
    ])
}

#[test]
fn a_three_node_cluster_survives_kill9_of_its_leader_and_nodes_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NameserverCluster::start(dir.path(), 3);
    let leader = cluster.wait_for_leader();

    // Enough writes that every node takes a snapshot and compacts its log.
    for index in 0..25 {
        let (ok, _, stderr) = request(&cluster, &format!("topic-{index}"));
        assert!(ok, "request {index}: {stderr}");
    }

    // Two clients race for one topic through different nodes: exactly one request is recorded.
    let racers: Vec<_> = (1..=2_u64)
        .map(|id| {
            let addr = cluster.addr(id).to_owned();
            std::thread::spawn(move || {
                run_cli(
                    &[
                        "topic",
                        "request",
                        "contested",
                        "--owner",
                        &format!("team-{id}"),
                        "--queues",
                        "1",
                        "--on",
                        "broker-a",
                        "--nameserver",
                        &addr,
                        "--by",
                        &format!("racer-{id}"),
                    ],
                    &[],
                    "",
                )
            })
        })
        .collect();
    let outcomes: Vec<(bool, String, String)> = racers.into_iter().map(|racer| racer.join().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|(ok, _, _)| *ok).count(), 1, "{outcomes:?}");
    let loser = outcomes.iter().find(|(ok, _, _)| !ok).unwrap();
    assert!(loser.2.contains("was already requested by racer-"), "{}", loser.2);
    let (ok, history, _) = cluster.cli(&["topic", "history", "contested"]);
    assert!(ok);
    assert_eq!(
        history.lines().filter(|line| line.contains("requested")).count(),
        1,
        "{history}"
    );

    // kill -9 the leader: a new one is elected and requests keep succeeding within seconds.
    cluster.kill9(leader);
    let killed_at = Instant::now();
    loop {
        let (ok, _, stderr) = request(&cluster, "after-failover");
        if ok {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "no successful request 10 s after the leader died: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = killed_at.elapsed();
    let new_leader = cluster.wait_for_leader();
    assert_ne!(new_leader, leader);
    eprintln!("writes resumed {took:?} after the leader was killed");

    // The killed node restarts from its data dir and catches up.
    cluster.restart(leader);
    cluster.wait_caught_up(leader, new_leader);
    let (ok, described, stderr) = run_cli(
        &[
            "topic",
            "describe",
            "after-failover",
            "--nameserver",
            cluster.addr(leader),
        ],
        &[],
        "",
    );
    assert!(
        ok && described.contains("status       requested"),
        "{described}{stderr}"
    );

    // A follower loses its disk: removed, wiped, started empty and re-added, it catches up from a
    // snapshot (the others compacted the log it would need).
    let wiped = (1..=3).find(|id| *id != new_leader).unwrap();
    let leader_status = cluster.status(new_leader).unwrap();
    assert!(
        leader_status["cluster"]["purged"].as_u64().is_some(),
        "the leader compacted its log: {leader_status}"
    );
    cluster.kill9(wiped);
    let (ok, _, stderr) = cluster.cli(&["cluster", "remove-node", &wiped.to_string()]);
    assert!(ok, "{stderr}");
    std::fs::remove_dir_all(cluster.data_dir(wiped)).unwrap();
    cluster.write_config(wiped, true);
    cluster.restart(wiped);
    let addr = cluster.addr(wiped).to_owned();
    let (ok, stdout, stderr) = cluster.cli(&[
        "cluster",
        "add-node",
        &wiped.to_string(),
        "--addr",
        &addr,
        "--idc",
        "dc-new",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("node {wiped} added")), "{stdout}");
    let leader = cluster.wait_for_leader();
    cluster.wait_caught_up(wiped, leader);
    let status = cluster.status(wiped).unwrap();
    assert!(
        status["cluster"]["snapshot"].as_u64().is_some(),
        "installed a snapshot: {status}"
    );
    let (ok, described, _) = run_cli(&["topic", "describe", "contested", "--nameserver", &addr], &[], "");
    assert!(ok && described.contains("topic        contested"), "{described}");
    let voters = status["cluster"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["voter"] == true)
        .count();
    assert_eq!(voters, 3, "{status}");
}

#[test]
fn routes_show_a_silent_broker_down_within_the_heartbeat_timeout_and_back_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("nameserver.toml"),
        format!(
            "listen = \"127.0.0.21:0\"\nhttp_listen = \"127.0.0.21:0\"\ndata_dir = \"{}\"\nbroker_timeout_ms = 1500\n",
            root.join("ns").display()
        ),
    )
    .unwrap();
    let config = root.join("nameserver.toml");
    // Port 0: the nameserver reports the port it got in its ready file.
    let (_nameserver, addrs) =
        ServiceProcess::start_ready(&["nameserver".as_ref(), "--config".as_ref(), config.as_os_str()], root);
    let nameserver_addr = meridian_tests::ready_addr(&addrs, "nameserver").to_string();
    std::fs::write(
        root.join("broker.toml"),
        format!(
            "broker_name = \"broker-a\"\nlisten = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nidc = \"dc1\"\nnameservers = [\"{nameserver_addr}\"]\nheartbeat_interval_ms = 200\n",
            root.join("broker").display()
        ),
    )
    .unwrap();
    let broker_config = root.join("broker.toml");
    let start_broker = || {
        ServiceProcess::start(
            &["broker".as_ref(), "--config".as_ref(), broker_config.as_os_str()],
            root,
            |line| line.starts_with("meridian broker"),
        )
    };
    let broker = start_broker();
    let env = [("MERIDIAN_NAMESERVER", nameserver_addr.as_str())];
    let (ok, _, stderr) = run_cli(
        &["topic", "create", "orders", "--queues", "2", "--on", "broker-a"],
        &env,
        "",
    );
    assert!(ok, "{stderr}");
    let describe = || run_cli(&["topic", "describe", "orders"], &env, "").1;
    assert!(describe().contains("alive"), "{}", describe());

    broker.kill9();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(5);
    while !describe().contains("DOWN") {
        assert!(
            Instant::now() < deadline,
            "still alive 5 s after the broker died: {}",
            describe()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let noticed = killed.elapsed();
    assert!(describe().contains("master none alive"), "{}", describe());
    assert!(
        noticed >= Duration::from_millis(1000),
        "marked down before the timeout: {noticed:?}"
    );

    let _broker = start_broker();
    let deadline = Instant::now() + Duration::from_secs(10);
    while describe().contains("DOWN") {
        assert!(Instant::now() < deadline, "never came back: {}", describe());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!describe().contains("master none alive"), "{}", describe());
}

//! Fault injection for the cluster suites (`e2e/cluster.rs`, `e2e/faults.rs`).
//!
//! - [`LinkProxy`]: a TCP proxy in front of a node that can cut the link (a black hole, like
//!   [`crate::FaultyProxy`]) or slow it (each chunk held back a fixed delay, both ways).
//! - [`IpPartition`]: a partition between sets of the nodes' loopback addresses (`ip rule`
//!   blackholes), for a whole data center cut off while it keeps running. Needs a private network
//!   namespace ([`IpPartition::available`]).
//! - [`LocalCluster`]: a two-IDC cluster spec with one 127.0.0.x address per node, brought up and driven
//!   only through `meridian cluster up|status|kill|restart|down`, as an operator would. Dropping it
//!   kills whatever its cluster dir still runs, so a failed test leaves no process behind.
//! - [`Load`]: producers sending through the nameservers' routes until stopped, recording every
//!   acknowledged msgId with its send time and latency.
//! - [`Watch`]: a consumer reading through the routes during the fault, recording every msgId it
//!   received, for [`phantom_reads`] (messages a consumer saw that the final history lacks).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_client::{
    ClientConfig, ConnectionPool, Message, NameserverRoute, Producer, ProducerConfig, PullConsumer, RouteSource,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{http_get_json, run_cli};

/// What a [`LinkProxy`] does to its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Passes everything at once.
    Up,
    /// Drops open connections and holds new ones without a byte either way (a partition).
    Cut,
    /// Holds every chunk back this long, in each direction (a slow, far link).
    Slow(Duration),
}

/// A TCP proxy whose link can be cut, slowed and healed.
pub struct LinkProxy {
    addr: SocketAddr,
    link_tx: tokio::sync::watch::Sender<Link>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link_rx: tokio::sync::watch::Receiver<Link>,
) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let Ok(read) = from.read(&mut buffer).await else { return };
        if read == 0 {
            let _ = to.shutdown().await;
            return;
        }
        let link = *link_rx.borrow();
        if let Link::Slow(delay) = link {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl LinkProxy {
    /// Listens on `bind` (e.g. `127.0.0.181:0`) and forwards to `target`.
    pub async fn start(bind: &str, target: SocketAddr) -> LinkProxy {
        let listener = tokio::net::TcpListener::bind(bind).await.expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (link_tx, link_rx) = tokio::sync::watch::channel(Link::Up);
        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        let (accept_tasks, accept_cancel) = (tasks.clone(), cancel.clone());
        tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = accept_cancel.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else { continue };
                let mut link_rx = link_rx.clone();
                let cancel = accept_cancel.clone();
                let pumps = accept_tasks.clone();
                accept_tasks.spawn(async move {
                    if *link_rx.borrow_and_update() == Link::Cut {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = link_rx.wait_for(|link| *link != Link::Cut) => {}
                        }
                        return;
                    }
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    let both = CancellationToken::new();
                    for (from, to) in [(in_read, out_write), (out_read, in_write)] {
                        let (link_rx, both, cancel) = (link_rx.clone(), both.clone(), cancel.clone());
                        let mut cut_rx = link_rx.clone();
                        pumps.spawn(async move {
                            tokio::select! {
                                _ = cancel.cancelled() => {}
                                _ = both.cancelled() => {}
                                _ = cut_rx.wait_for(|link| *link == Link::Cut) => {}
                                _ = pump(from, to, link_rx) => {}
                            }
                            // One direction ending (or a cut) ends the connection both ways.
                            both.cancel();
                        });
                    }
                });
            }
        });
        LinkProxy {
            addr,
            link_tx,
            tasks,
            cancel,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what the link does from now on.
    pub fn set(&self, link: Link) {
        self.link_tx.send_replace(link);
    }

    /// Stops the proxy and its connections.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A partition between two sets of loopback addresses: `ip rule` blackholes, both ways, in this
/// process's network namespace. Nodes of a [`LocalCluster`] connect from their own address
/// (`meridian_proto::transport::source_ip_for`), so this cuts exactly the links between the two
/// sides, while both keep running; connections from 127.0.0.1 (the test's clients) still reach
/// both sides. A packet to the other side is dropped at once (`EINVAL` to a new connection, lost
/// retransmissions on an open one), as on a routed network that lost its link.
///
/// It changes the namespace's routing rules, so it runs only where the namespace is private:
/// `scripts/bench-faults.sh` runs the suite under `unshare -n` and sets `MERIDIAN_FAULTS_NETNS=1`.
pub struct IpPartition {
    rules: Vec<(IpAddr, IpAddr)>,
}

/// Priority of the partition's rules: before the local table's rule, which [`IpPartition::cut`]
/// moves behind them (at priority 0 it would deliver every loopback packet first).
const PARTITION_PREF: &str = "10";

fn ip_command(args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("running `ip {}`: {error}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl IpPartition {
    /// Whether this process runs in a private network namespace it may change.
    pub fn available() -> bool {
        std::env::var("MERIDIAN_FAULTS_NETNS").is_ok_and(|value| value == "1")
    }

    /// Cuts every link between an address of `left` and one of `right`.
    pub fn cut(left: &[IpAddr], right: &[IpAddr]) -> Result<IpPartition, String> {
        if !IpPartition::available() {
            return Err("a partition needs a private network namespace: run scripts/bench-faults.sh".into());
        }
        // Once per namespace: the local table's rule moves from priority 0 to 100.
        let _ = ip_command(&["rule", "add", "pref", "100", "table", "local"]);
        let _ = ip_command(&["rule", "del", "pref", "0"]);
        let mut partition = IpPartition { rules: Vec::new() };
        for a in left {
            for b in right {
                for (from, to) in [(*a, *b), (*b, *a)] {
                    let (from_text, to_text) = (from.to_string(), to.to_string());
                    ip_command(&[
                        "rule",
                        "add",
                        "pref",
                        PARTITION_PREF,
                        "from",
                        &from_text,
                        "to",
                        &to_text,
                        "blackhole",
                    ])?;
                    partition.rules.push((from, to));
                }
            }
        }
        Ok(partition)
    }

    /// Heals it: every rule removed.
    pub fn heal(self) {
        for (from, to) in &self.rules {
            let (from_text, to_text) = (from.to_string(), to.to_string());
            if let Err(error) = ip_command(&[
                "rule",
                "del",
                "pref",
                PARTITION_PREF,
                "from",
                &from_text,
                "to",
                &to_text,
                "blackhole",
            ]) {
                eprintln!("healing the partition: {error}");
            }
        }
    }
}

/// One node of a [`LocalCluster`]: where it listens.
#[derive(Debug, Clone)]
pub struct NodeAddrs {
    /// Its data center.
    pub idc: String,
    /// Framed-protocol address (nameservers and brokers).
    pub listen: Option<SocketAddr>,
    /// HTTP address.
    pub http: Option<SocketAddr>,
}

/// How a [`LocalCluster`]'s spec is written.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `ack_policy` of broker-a (master a-0 and a-1 in dc1, a-2 in dc2).
    pub group_a_policy: &'static str,
    /// `ack_policy` of broker-b (master b-0 and b-1 in dc2, b-2 in dc1).
    pub group_b_policy: &'static str,
    /// The nameservers' `broker_timeout_ms`.
    pub broker_timeout_ms: u64,
    /// Every broker's `heartbeat_interval_ms`.
    pub heartbeat_interval_ms: u64,
    /// The nameservers' `continuity.idc_lost_after_ms`: how long every broker of a data center
    /// must be silent before it is declared lost (and groups go on in degraded mode).
    pub idc_lost_after_ms: u64,
    /// Run an archiver beside every broker.
    pub archivers: bool,
    /// Run the tracer.
    pub tracer: bool,
    /// Run the query service.
    pub query: bool,
    /// Run the web console (`meridian ui`).
    pub ui: bool,
    /// Per member: an inline TOML table merged into its config (`{ advertise_addr = "..." }`).
    pub member_overrides: BTreeMap<String, String>,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            // As examples/two-idc.toml ships them.
            group_a_policy: "idc_safe",
            group_b_policy: "idc_safe",
            broker_timeout_ms: 2000,
            heartbeat_interval_ms: 250,
            // Half a second above the broker timeout: a data center is lost soon after its
            // masters are replaced, so writes resume within the 5 s.
            idc_lost_after_ms: 2500,
            archivers: true,
            tracer: true,
            query: true,
            ui: false,
            member_overrides: BTreeMap::new(),
        }
    }
}

/// The seed's topology (3 nameservers in dc1, dc2 and a witness; broker-a and broker-b, each a
/// master and a slave in one IDC and a slave in the other; archivers; a tracer; the query service), run by
/// `meridian cluster up` in a cluster dir, every node on its own 127.0.0.x address.
pub struct LocalCluster {
    /// The cluster dir (`--dir`).
    pub dir: PathBuf,
    /// The spec file.
    pub spec_path: PathBuf,
    /// Every node by name.
    pub nodes: BTreeMap<String, NodeAddrs>,
    /// The nameservers' addresses.
    pub nameservers: Vec<SocketAddr>,
    /// How the spec is written (change `member_overrides` before [`LocalCluster::write_spec`]).
    pub options: ClusterOptions,
}

/// The framed-protocol and HTTP ports every node of a [`LocalCluster`] listens on, each node on
/// its own 127.0.0.x address. `meridian cluster up` is the operator's tool: its spec names every
/// node's address and writes them into each other's configs (the nameservers' members, the
/// brokers' nameservers) before anything starts, so it has no port 0 to offer. Nothing is probed
/// and released: the address is the node's alone (each suite lays its clusters out on its own
/// range of 127.0.0.x), and the ports sit below the kernel's ephemeral range (32768-60999 by
/// default), so no client connection can be handed one of them. `cluster up` checks every address
/// is free before it starts anything, so a clash would fail loudly, never silently.
const NODE_LISTEN_PORT: u16 = 17_911;
const NODE_HTTP_PORT: u16 = 18_080;

fn addr_on(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("a 127.0.0.x address"), port)
}

impl LocalCluster {
    /// The addresses of every node in one of `idcs`, sorted.
    pub fn idc_ips(&self, idcs: &[&str]) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .nodes
            .values()
            .filter(|node| idcs.contains(&node.idc.as_str()))
            .flat_map(|node| node.listen.into_iter().chain(node.http))
            .map(|addr| addr.ip())
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// Lays the cluster out under `root` on 127.0.0.`first_ip` and the addresses after it (14
    /// of them), each node on its own address; nothing is written or started yet.
    pub fn layout(root: &Path, first_ip: u8, options: ClusterOptions) -> LocalCluster {
        let mut nodes = BTreeMap::new();
        let mut next_ip = first_ip;
        let mut ip = || {
            let ip = format!("127.0.0.{next_ip}");
            next_ip += 1;
            ip
        };
        for (id, idc) in [(1, "dc1"), (2, "dc2"), (3, "witness")] {
            let ip = ip();
            nodes.insert(
                format!("ns-{id}"),
                NodeAddrs {
                    idc: idc.into(),
                    listen: Some(addr_on(&ip, NODE_LISTEN_PORT)),
                    http: Some(addr_on(&ip, NODE_HTTP_PORT)),
                },
            );
        }
        for (name, idc) in [
            ("a-0", "dc1"),
            ("a-1", "dc1"),
            ("a-2", "dc2"),
            ("b-0", "dc2"),
            ("b-1", "dc2"),
            ("b-2", "dc1"),
        ] {
            let ip = ip();
            nodes.insert(
                name.into(),
                NodeAddrs {
                    idc: idc.into(),
                    listen: Some(addr_on(&ip, NODE_LISTEN_PORT)),
                    http: Some(addr_on(&ip, NODE_HTTP_PORT)),
                },
            );
        }
        for service in ["tracer", "query", "ui"] {
            let ip = ip();
            nodes.insert(
                service.into(),
                NodeAddrs {
                    idc: "dc1".into(),
                    listen: None,
                    http: Some(addr_on(&ip, NODE_HTTP_PORT)),
                },
            );
        }
        let nameservers = (1..=3)
            .map(|id| nodes[&format!("ns-{id}")].listen.expect("listen"))
            .collect();
        LocalCluster {
            dir: root.join("cluster"),
            spec_path: root.join("two-idc.toml"),
            nodes,
            nameservers,
            options,
        }
    }

    /// The spec's text.
    pub fn spec(&self) -> String {
        let options = &self.options;
        let mut spec = String::from("name = \"e2e-two-idc\"\nidcs = [\"dc1\", \"dc2\", \"witness\"]\n\n");
        for id in 1..=3 {
            let node = &self.nodes[&format!("ns-{id}")];
            spec += &format!(
                "[[nameservers]]\nid = {id}\nidc = \"{}\"\nlisten = \"{}\"\nhttp = \"{}\"\n\n",
                node.idc,
                node.listen.expect("listen"),
                node.http.expect("http")
            );
        }
        for (group, policy, prefix) in [
            ("broker-a", options.group_a_policy, "a"),
            ("broker-b", options.group_b_policy, "b"),
        ] {
            spec += &format!("[[broker_groups]]\nname = \"{group}\"\nack_policy = \"{policy}\"\n\n");
            for index in 0..3 {
                let name = format!("{prefix}-{index}");
                let node = &self.nodes[&name];
                spec += &format!(
                    "[[broker_groups.members]]\nname = \"{name}\"\nrole = \"{}\"\nidc = \"{}\"\nlisten = \"{}\"\nhttp = \"{}\"\n",
                    if index == 0 { "master" } else { "slave" },
                    node.idc,
                    node.listen.expect("listen"),
                    node.http.expect("http")
                );
                if let Some(overrides) = options.member_overrides.get(&name) {
                    spec += &format!("overrides = {overrides}\n");
                }
                spec += "\n";
            }
        }
        if options.tracer {
            spec += &format!(
                "[tracer]\nidc = \"dc1\"\nhttp = \"{}\"\n\n",
                self.nodes["tracer"].http.expect("http")
            );
        }
        if options.query {
            spec += &format!(
                "[query]\nidc = \"dc1\"\nhttp = \"{}\"\n\n",
                self.nodes["query"].http.expect("http")
            );
        }
        if options.ui {
            spec += &format!(
                "[ui]\nidc = \"dc1\"\nhttp = \"{}\"\n\n",
                self.nodes["ui"].http.expect("http")
            );
        }
        spec += &format!(
            "[archiver]\nenabled = {}\n\n[overrides.broker]\nheartbeat_interval_ms = {}\n\n[overrides.broker.store]\nsegment_size = 67108864\n\n[overrides.nameserver]\nbroker_timeout_ms = {}\n\n[overrides.nameserver.continuity]\nidc_lost_after_ms = {}\n",
            options.archivers, options.heartbeat_interval_ms, options.broker_timeout_ms, options.idc_lost_after_ms
        );
        spec
    }

    /// Writes the spec file.
    pub fn write_spec(&self) {
        std::fs::write(&self.spec_path, self.spec()).expect("writing the cluster spec");
    }

    /// Runs `meridian ARGS` with this cluster's dir and nameservers in the environment.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let dir = self.dir.display().to_string();
        let nameservers = self.nameserver_list();
        run_cli(
            args,
            &[
                ("MERIDIAN_CLUSTER_DIR", dir.as_str()),
                ("MERIDIAN_NAMESERVER", nameservers.as_str()),
            ],
            "",
        )
    }

    /// `A,B,C`.
    pub fn nameserver_list(&self) -> String {
        self.nameservers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Writes the spec and runs `meridian cluster up`; panics with its output if it fails.
    pub fn up(&self) -> String {
        self.write_spec();
        let spec = self.spec_path.display().to_string();
        let (ok, stdout, stderr) = self.cli(&["cluster", "up", "--config", &spec]);
        assert!(ok, "cluster up failed:\n{stdout}\n{stderr}");
        stdout
    }

    /// `meridian cluster kill NODE` (kill -9).
    pub fn kill9(&self, node: &str) {
        let (ok, stdout, stderr) = self.cli(&["cluster", "kill", node]);
        assert!(ok, "cluster kill {node}: {stdout}{stderr}");
    }

    /// `meridian cluster restart NODE`.
    pub fn restart(&self, node: &str) {
        let (ok, stdout, stderr) = self.cli(&["cluster", "restart", node]);
        assert!(ok, "cluster restart {node}: {stdout}{stderr}");
    }

    /// `meridian cluster status --json`: `processes`, `cluster` and `brokers`.
    pub fn status(&self) -> serde_json::Value {
        let (ok, stdout, stderr) = self.cli(&["cluster", "status", "--json"]);
        assert!(ok, "cluster status: {stdout}{stderr}");
        serde_json::from_str(stdout.trim()).expect("cluster status --json prints JSON")
    }

    /// Every pid in the cluster dir's pid files.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let pid = std::fs::read_to_string(entry.path().join("meridian.pid")).ok()?;
                Some((
                    entry.file_name().to_string_lossy().into_owned(),
                    pid.trim().parse().ok()?,
                ))
            })
            .collect()
    }

    /// A broker's role and epoch from its health, if it answers.
    pub fn role(&self, node: &str) -> Option<(String, u64, bool)> {
        let health = http_get_json(self.nodes[node].http?, "/api/health")?;
        let replication = &health["replication"];
        Some((
            replication["role"].as_str()?.to_owned(),
            replication["epoch"].as_u64()?,
            replication["writable"].as_bool()?,
        ))
    }

    /// Waits (up to `timeout`) until one of `candidates` is a writable master; its name and epoch.
    pub fn wait_master(&self, candidates: &[&str], timeout: Duration) -> (String, u64) {
        let deadline = Instant::now() + timeout;
        loop {
            for candidate in candidates {
                if let Some((role, epoch, true)) = self.role(candidate)
                    && role == "master"
                {
                    return ((*candidate).to_owned(), epoch);
                }
            }
            assert!(Instant::now() < deadline, "no writable master among {candidates:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether every process runs and is healthy, and every master holds both its slaves in sync.
    pub fn fully_healthy(&self) -> bool {
        let (ok, stdout, _) = self.cli(&["cluster", "status", "--json"]);
        let Some(status) = ok
            .then(|| serde_json::from_str::<serde_json::Value>(stdout.trim()).ok())
            .flatten()
        else {
            return false;
        };
        let Some(processes) = status["processes"].as_array() else {
            return false;
        };
        processes.iter().all(|process| {
            process["healthy"] == true
                && (process["role"] != "master" || process["in_sync"].as_array().is_some_and(|names| names.len() == 2))
        })
    }

    /// A route source asking every nameserver, as applications do.
    pub fn route(&self, pool: &ConnectionPool) -> Arc<dyn RouteSource> {
        Arc::new(NameserverRoute::new(
            self.nameservers.iter().map(ToString::to_string).collect(),
            pool.clone(),
        ))
    }

    /// Kills (SIGKILL) whatever the cluster dir's pid files name that still runs from this dir.
    pub fn kill_leftovers(&self) -> Vec<String> {
        let mut killed = Vec::new();
        for (name, pid) in self.pids() {
            if process_runs_from(pid, &self.dir) {
                // SAFETY: a plain syscall on a pid whose command line names our cluster dir.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                killed.push(name);
            }
        }
        killed
    }
}

/// Whether `pid` is alive (not a zombie) and its command line mentions `dir`.
pub fn process_runs_from(pid: u32, dir: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X') | None) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = dir.as_os_str().as_encoded_bytes();
    cmdline.windows(needle.len()).any(|window| window == needle)
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let killed = self.kill_leftovers();
        if !killed.is_empty() {
            eprintln!("killed processes the test left running: {killed:?}");
        }
    }
}

/// One acknowledged send.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The msgId.
    pub msg_id: String,
    /// Its topic.
    pub topic: &'static str,
    /// When the send began.
    pub sent: Instant,
    /// How long until it was acknowledged.
    pub latency: Duration,
}

/// What a [`Load`] saw.
#[derive(Default)]
pub struct LoadRecord {
    acks: Mutex<Vec<Ack>>,
    failures: Mutex<Vec<(&'static str, Instant)>>,
}

impl LoadRecord {
    /// Every acknowledgement so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().expect("acks lock").clone()
    }

    /// The acknowledged msgIds of `topic`.
    pub fn ids(&self, topic: &str) -> HashSet<String> {
        self.acks
            .lock()
            .expect("acks lock")
            .iter()
            .filter(|ack| ack.topic == topic)
            .map(|ack| ack.msg_id.clone())
            .collect()
    }

    /// Acknowledgements of `topic` sent at or after `since`.
    pub fn count_since(&self, topic: &str, since: Instant) -> usize {
        self.acks
            .lock()
            .expect("acks lock")
            .iter()
            .filter(|ack| ack.topic == topic && ack.sent >= since)
            .count()
    }

    /// Sends that failed (after the producer's retries), with when.
    pub fn failures(&self) -> Vec<(&'static str, Instant)> {
        self.failures.lock().expect("failures lock").clone()
    }

    /// The longest time between consecutive acknowledgements of `topic` in `[from, to]` (the
    /// edges count as acknowledgements): how long the topic could not be written.
    pub fn longest_gap(&self, topic: &str, from: Instant, to: Instant) -> Duration {
        let mut times: Vec<Instant> = self
            .acks
            .lock()
            .expect("acks lock")
            .iter()
            .filter(|ack| ack.topic == topic)
            .map(|ack| ack.sent + ack.latency)
            .filter(|at| *at >= from && *at <= to)
            .collect();
        times.push(from);
        times.push(to);
        times.sort();
        times.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or_default()
    }

    /// The `quantile` latency of sends begun in `[from, to]` that were acknowledged.
    pub fn latency_quantile(&self, from: Instant, to: Instant, quantile: f64) -> Option<Duration> {
        let mut latencies: Vec<Duration> = self
            .acks
            .lock()
            .expect("acks lock")
            .iter()
            .filter(|ack| ack.sent >= from && ack.sent <= to)
            .map(|ack| ack.latency)
            .collect();
        if latencies.is_empty() {
            return None;
        }
        latencies.sort();
        let index = ((latencies.len() as f64 * quantile).ceil() as usize).clamp(1, latencies.len()) - 1;
        Some(latencies[index])
    }
}

/// Producers sending 1 KiB messages to some topics through the routes until stopped.
pub struct Load {
    /// What they saw.
    pub record: Arc<LoadRecord>,
    stop: Arc<AtomicBool>,
    tasks: TaskTracker,
    producer: Producer,
    sent: Arc<AtomicU64>,
}

impl Load {
    /// `senders` sending tasks per topic, with `retries` retries per send.
    pub fn start(route: Arc<dyn RouteSource>, topics: &[&'static str], senders: usize, retries: u32) -> Load {
        let producer = Producer::new(
            route,
            ProducerConfig {
                retries,
                retry_backoff: Duration::from_millis(100),
                ..ProducerConfig::default()
            },
        );
        let (record, stop, tasks, sent) = (
            Arc::new(LoadRecord::default()),
            Arc::new(AtomicBool::new(false)),
            TaskTracker::new(),
            Arc::new(AtomicU64::new(0)),
        );
        for &topic in topics {
            for sender in 0..senders {
                let (producer, record, stop, sent) = (producer.clone(), record.clone(), stop.clone(), sent.clone());
                tasks.spawn(async move {
                    let body = Bytes::from(vec![b'f'; 1024]);
                    let mut index = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let message = Message::new(topic, body.clone()).with_key(format!("{topic}-{sender}-{index}"));
                        let began = Instant::now();
                        sent.fetch_add(1, Ordering::Relaxed);
                        match producer.send(message).await {
                            Ok(result) => record.acks.lock().expect("acks lock").push(Ack {
                                msg_id: result.msg_id,
                                topic,
                                sent: began,
                                latency: began.elapsed(),
                            }),
                            Err(_) => {
                                record
                                    .failures
                                    .lock()
                                    .expect("failures lock")
                                    .push((topic, Instant::now()));
                                // Do not spin while nothing can be written.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                        index += 1;
                    }
                });
            }
        }
        Load {
            record,
            stop,
            tasks,
            producer,
            sent,
        }
    }

    /// Sends begun so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops sending and waits for the sends in flight.
    pub async fn finish(self) -> Arc<LoadRecord> {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.close();
        self.tasks.wait().await;
        self.producer.shutdown().await;
        self.record
    }
}

/// Acknowledged msgIds missing from `stored`, and how many acknowledged ones are stored twice.
pub fn lost_and_duplicated<'a>(
    acked: &HashSet<String>,
    stored: impl IntoIterator<Item = &'a str>,
) -> (Vec<String>, usize) {
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for msg_id in stored {
        *copies.entry(msg_id).or_default() += 1;
    }
    let lost = acked
        .iter()
        .filter(|msg_id| !copies.contains_key(msg_id.as_str()))
        .cloned()
        .collect();
    let duplicates = acked
        .iter()
        .filter(|msg_id| copies.get(msg_id.as_str()).is_some_and(|count| *count > 1))
        .count();
    (lost, duplicates)
}

/// A consumer that keeps reading `topics` through the routes (whichever member serves each queue
/// at the moment) until stopped, recording every msgId it received.
pub struct Watch {
    received: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
    tasks: TaskTracker,
}

impl Watch {
    /// One reading task per topic, as consumer group `group`, from offset 0 of every queue.
    pub fn start(route: Arc<dyn RouteSource>, topics: &[&'static str], group: &'static str) -> Watch {
        let (received, stop, tasks) = (
            Arc::new(Mutex::new(HashSet::new())),
            Arc::new(AtomicBool::new(false)),
            TaskTracker::new(),
        );
        for &topic in topics {
            let (route, received, stop) = (route.clone(), received.clone(), stop.clone());
            tasks.spawn(async move {
                let consumer = PullConsumer::new(route, ClientConfig::default(), group);
                let mut next: HashMap<u32, u64> = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(queues) = consumer.queues(topic).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    for (_, queue_id) in queues {
                        let offset = next.entry(queue_id).or_insert(0);
                        match consumer
                            .pull(topic, queue_id, *offset, 256, Duration::from_millis(100))
                            .await
                        {
                            Ok(pulled) => {
                                let mut received = received.lock().expect("received lock");
                                received.extend(pulled.messages.iter().map(|message| message.msg_id().to_owned()));
                                *offset = pulled.next_offset;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
                consumer.shutdown().await;
            });
        }
        Watch { received, stop, tasks }
    }

    /// Stops reading; every msgId received.
    pub async fn finish(self) -> HashSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.close();
        self.tasks.wait().await;
        std::mem::take(&mut *self.received.lock().expect("received lock"))
    }
}

/// Phantom reads: msgIds a consumer received that the final history (`stored`, read back after
/// the fault) does not hold. A consumer must see only what the group confirmed, which a failover
/// never takes back.
pub fn phantom_reads<'a>(received: &HashSet<String>, stored: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let stored: HashSet<&str> = stored.into_iter().collect();
    received
        .iter()
        .filter(|msg_id| !stored.contains(msg_id.as_str()))
        .cloned()
        .collect()
}

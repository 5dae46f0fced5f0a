//! The harness of Meridian's end-to-end tests: real `meridian` processes on loopback ports,
//! started, stopped and killed the way an operator (or a crash) would.
//!
//! [`DevNode`] runs `meridian dev` on port 0 and reads the bound addresses from its banner, so
//! tests never fight over ports; [`ServiceProcess`] runs any other `meridian` service (a
//! nameserver or broker of a cluster) the same way: [`ServiceProcess::start_ready`] passes
//! `--ready-file` and reads the addresses the process bound, and [`start_broker`] then pins the
//! broker's config to them ([`pin_listen_addresses`]), so a restart after `kill -9` comes back
//! where clients and the nameserver had it. [`GroupCluster`] builds a broker group that way. No
//! port is chosen before a process binds it, except by `meridian cluster up` (see
//! `faults::LocalCluster`). [`run_cli`] runs a client command. The tests themselves live in
//! `e2e/` (one binary, many modules).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_client::{ConnectionPool, NameserverRoute, RouteSource};

pub mod faults;

/// The `meridian` binary under test: `$MERIDIAN_BIN`, or the one cargo built next to this test.
pub fn meridian_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MERIDIAN_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/meridian
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("meridian");
    assert!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build --bin meridian` (scripts/test.sh does), or set MERIDIAN_BIN",
        bin.display()
    );
    bin
}

/// A running `meridian` service process (dev, nameserver or broker), its stderr in a log file.
pub struct ServiceProcess {
    child: Child,
    /// The banner it printed on stdout, up to its ready line.
    pub banner: Vec<String>,
    /// Where its log (stderr) goes.
    pub log_path: PathBuf,
}

impl ServiceProcess {
    /// Runs `meridian ARGS`, logging to a new file in `log_dir`, and waits (up to 60 s) until a
    /// line of its stdout satisfies `ready`.
    pub fn start(args: &[&std::ffi::OsStr], log_dir: &Path, ready: impl Fn(&str) -> bool) -> ServiceProcess {
        ServiceProcess::start_logging(args, log_dir, ready, Some("info"))
    }

    /// [`ServiceProcess::start`] with `RUST_LOG` set to `rust_log`, or unset (the binary's
    /// default filter) for `None`.
    pub fn start_logging(
        args: &[&std::ffi::OsStr],
        log_dir: &Path,
        ready: impl Fn(&str) -> bool,
        rust_log: Option<&str>,
    ) -> ServiceProcess {
        std::fs::create_dir_all(log_dir).expect("creating the log dir");
        let log_path = log_dir.join(format!("meridian-{}.log", fastrand::u32(..)));
        let log = std::fs::File::create(&log_path).expect("creating the log file");
        let mut command = Command::new(meridian_bin());
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG").env_remove("MERIDIAN_LOG"),
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting meridian");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut banner = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(remaining) {
                Ok(line) => {
                    let done = ready(&line);
                    banner.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "meridian {:?} did not become ready; stdout:\n{}\nlog:\n{}",
                        args,
                        banner.join("\n"),
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
        }
        ServiceProcess {
            child,
            banner,
            log_path,
        }
    }

    /// The address printed after `label` in the banner.
    pub fn address(&self, label: &str) -> Option<SocketAddr> {
        self.banner.iter().find_map(|line| address_after(line, label))
    }

    /// SIGTERM, then waits for a clean exit (panics if it does not exit cleanly within 30 s).
    pub fn stop(mut self) {
        // SAFETY: plain syscall on our child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for meridian") {
                assert!(status.success(), "meridian exited with {status}; log:\n{}", self.log());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "meridian did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`: the process gets no chance to flush or checkpoint.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping meridian");
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `meridian dev` process: a single-node nameserver and a broker it governs.
pub struct DevNode {
    process: ServiceProcess,
    /// Nameserver address.
    pub nameserver: SocketAddr,
    /// Broker address.
    pub broker: SocketAddr,
    /// HTTP address (admin API, /metrics).
    pub http: SocketAddr,
    /// RocketMQ remoting address of the nameserver (RocketMQ clients' `namesrvAddr`).
    pub rocketmq_nameserver: SocketAddr,
    /// RocketMQ remoting address of the broker.
    pub rocketmq_broker: SocketAddr,
    /// The broker's RocketMQ VIP-channel address (`(VIP channel ADDR)` on the broker's line).
    pub rocketmq_broker_vip: Option<SocketAddr>,
    /// The node's data dir.
    pub data_dir: PathBuf,
    /// Where its log (stderr) goes.
    pub log_path: PathBuf,
}

fn address_after(line: &str, label: &str) -> Option<SocketAddr> {
    let rest = line.trim_start().strip_prefix(label)?.trim_start();
    let word = rest.split_whitespace().next()?;
    word.trim_start_matches("http://")
        .trim_start_matches("https://")
        .parse()
        .ok()
}

/// Runs the `meridian` CLI to completion: (success, stdout, stderr).
pub fn run_cli(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(meridian_bin())
        .args(args)
        .envs(envs.iter().copied())
        .env("MERIDIAN_USER", "e2e")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running meridian");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("writing stdin");
    let output = child.wait_with_output().expect("waiting for meridian");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

impl DevNode {
    /// Starts `meridian dev` on `data_dir` with extra arguments (e.g. `--flush-mode sync`) and
    /// waits until it is ready.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> DevNode {
        DevNode::start_on(data_dir, ["127.0.0.1:0"; 5], extra_args, Some("info"))
    }

    /// [`DevNode::start`] with the binary's default log filter (no `RUST_LOG`), as a user runs it.
    pub fn start_quiet(data_dir: &Path) -> DevNode {
        DevNode::start_on(data_dir, ["127.0.0.1:0"; 5], &[], None)
    }

    /// `kill -9`s the node and starts it again on the same data dir and addresses, so clients
    /// holding its addresses reconnect to it.
    pub fn crash_restart(self, extra_args: &[&str]) -> DevNode {
        let listen = [
            self.nameserver,
            self.broker,
            self.http,
            self.rocketmq_nameserver,
            self.rocketmq_broker,
        ]
        .map(|addr| addr.to_string());
        let data_dir = self.data_dir.clone();
        self.process.kill9();
        let listen = listen.each_ref().map(String::as_str);
        DevNode::start_on(&data_dir, listen, extra_args, Some("info"))
    }

    /// Starts `meridian dev` with the nameserver, broker, HTTP and the RocketMQ nameserver and
    /// broker listening on `listen`.
    fn start_on(data_dir: &Path, listen: [&str; 5], extra_args: &[&str], rust_log: Option<&str>) -> DevNode {
        let fixed = [
            "dev",
            "--nameserver-listen",
            listen[0],
            "--broker-listen",
            listen[1],
            "--http-listen",
            listen[2],
            "--rocketmq-nameserver-listen",
            listen[3],
            "--rocketmq-broker-listen",
            listen[4],
            "--data-dir",
        ];
        let mut args: Vec<&std::ffi::OsStr> = fixed.iter().map(std::ffi::OsStr::new).collect();
        args.push(data_dir.as_os_str());
        args.extend(extra_args.iter().map(std::ffi::OsStr::new));
        let process = ServiceProcess::start_logging(&args, data_dir, |line| line.starts_with("ready"), rust_log);
        DevNode {
            nameserver: process
                .address("nameserver")
                .expect("banner names the nameserver address"),
            broker: process.address("broker").expect("banner names the broker address"),
            http: process.address("http").expect("banner names the http address"),
            rocketmq_nameserver: process
                .address("rocketmq-nameserver")
                .expect("banner names the RocketMQ nameserver address"),
            rocketmq_broker: process
                .address("rocketmq-broker")
                .expect("banner names the RocketMQ broker address"),
            rocketmq_broker_vip: process.banner.iter().find_map(|line| {
                let rest = line.split_once("(VIP channel ")?.1;
                rest.trim_end_matches(')').parse().ok()
            }),
            data_dir: data_dir.to_owned(),
            log_path: process.log_path.clone(),
            process,
        }
    }

    /// What the node printed before `ready` (addresses, and with `--auth` the admin's secret).
    pub fn banner(&self) -> &[String] {
        &self.process.banner
    }

    /// The broker address as clients take it.
    pub fn broker_addr(&self) -> String {
        self.broker.to_string()
    }

    /// A route source asking this node's nameserver, as applications do.
    pub fn route(&self, pool: &ConnectionPool) -> Arc<dyn RouteSource> {
        Arc::new(NameserverRoute::new(vec![self.nameserver.to_string()], pool.clone()))
    }

    /// Runs the CLI against this node.
    pub fn cli(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let nameserver = self.nameserver.to_string();
        run_cli(args, &[("MERIDIAN_NAMESERVER", &nameserver)], stdin)
    }

    /// Creates a topic with `meridian topic create` (request and approve; waits until served).
    pub async fn create_topic(&self, topic: &str, queues: u32) {
        let queues = queues.to_string();
        let (ok, _, stderr) = self.cli(&["topic", "create", topic, "--queues", &queues], "");
        assert!(ok, "creating topic {topic}: {stderr}");
    }

    /// Creates a consumer group of `topics` with `meridian group create`.
    pub async fn create_group(&self, group: &str, topics: &[&str]) {
        let topics = topics.join(",");
        let (ok, _, stderr) = self.cli(&["group", "create", group, "--topics", &topics], "");
        assert!(ok, "creating consumer group {group}: {stderr}");
    }

    /// Waits (up to 20 s) until `group`'s committed offsets, as the broker serves them
    /// (`/api/broker/lag`), are on disk too (`offsets/consumer_offsets.json`, written at each
    /// checkpoint): a crash from then on replays nothing the group committed.
    pub fn wait_offsets_durable(&self, group: &str) {
        let file = self.data_dir.join("broker/offsets/consumer_offsets.json");
        let durable = || {
            let served = http_get_json(self.http, "/api/broker/lag")?;
            let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
            let lags: Vec<&serde_json::Value> = served["groups"]
                .as_array()?
                .iter()
                .filter(|lag| lag["group"] == group)
                .collect();
            let all_on_disk = lags.iter().all(|lag| {
                lag["queues"].as_array().is_some_and(|queues| {
                    queues.iter().all(|queue| {
                        let (Some(topic), Some(queue_id)) = (lag["topic"].as_str(), queue["queue_id"].as_u64()) else {
                            return false;
                        };
                        on_disk[group][topic][queue_id.to_string()] == queue["committed_offset"]
                    })
                })
            });
            Some(!lags.is_empty() && all_on_disk)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while durable() != Some(true) {
            assert!(
                Instant::now() < deadline,
                "{group}'s committed offsets did not reach {} within 20 s",
                file.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for a clean exit (panics if it does not exit cleanly within 30 s).
    pub fn stop(self) {
        self.process.stop();
    }

    /// `kill -9`: the process gets no chance to flush or checkpoint.
    pub fn kill9(self) {
        self.process.kill9();
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// `GET path` on an HTTP listener, parsed as JSON; `None` when it cannot be reached or answers
/// anything but 200 with JSON.
pub fn http_get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get_text(addr, path)?).ok()
}

/// `GET path` on an HTTP listener: the body of a 200 answer, `None` otherwise. (A dozen lines of
/// HTTP/1.0 keep an HTTP client out of the tests.)
pub fn http_get_text(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.split_whitespace()
        .nth(1)
        .is_some_and(|status| status == "200")
        .then(|| body.to_owned())
}

/// A TCP proxy that can cut the network between its clients and its target, like a partition:
/// [`FaultyProxy::cut`] drops every connection through it and leaves new ones hanging unanswered
/// (a black hole, not a refusal) until [`FaultyProxy::heal`].
pub struct FaultyProxy {
    addr: SocketAddr,
    cut_tx: tokio::sync::watch::Sender<bool>,
    target_tx: tokio::sync::watch::Sender<SocketAddr>,
    tasks: tokio_util::task::TaskTracker,
    cancel: tokio_util::sync::CancellationToken,
}

impl FaultyProxy {
    /// Listens on `bind` (e.g. `127.0.0.51:0`) and forwards to `target` (which may be a port-0
    /// placeholder until [`FaultyProxy::retarget`] names the address the target bound).
    pub async fn start(bind: &str, target: SocketAddr) -> FaultyProxy {
        let listener = tokio::net::TcpListener::bind(bind).await.expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
        let (target_tx, target_rx) = tokio::sync::watch::channel(target);
        let tasks = tokio_util::task::TaskTracker::new();
        let cancel = tokio_util::sync::CancellationToken::new();
        let (accept_tasks, accept_cancel) = (tasks.clone(), cancel.clone());
        tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = accept_cancel.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let mut cut_rx = cut_rx.clone();
                let target = *target_rx.borrow();
                let cancel = accept_cancel.clone();
                accept_tasks.spawn(async move {
                    if *cut_rx.borrow_and_update() {
                        // Partitioned: hold the connection without a byte either way.
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = cut_rx.wait_for(|cut| !*cut) => {}
                        }
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        FaultyProxy {
            addr,
            cut_tx,
            target_tx,
            tasks,
            cancel,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards new connections to `target` from now on (a process behind the proxy bound port 0
    /// and reported the port it got).
    pub fn retarget(&self, target: SocketAddr) {
        self.target_tx.send_replace(target);
    }

    /// Partitions: open connections drop, new ones hang.
    pub fn cut(&self) {
        self.cut_tx.send_replace(true);
    }

    /// Ends the partition.
    pub fn heal(&self) {
        self.cut_tx.send_replace(false);
    }

    /// Stops the proxy and its connections.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl ServiceProcess {
    /// Runs `meridian ARGS --ready-file FILE` and waits (up to 60 s) until FILE appears: the
    /// process bound what its config names (port 0 included) and wrote the addresses it got
    /// (`{"nameserver": "ip:port", "broker": ..., "http": ..., "pid": ...}`).
    pub fn start_ready(args: &[&std::ffi::OsStr], log_dir: &Path) -> (ServiceProcess, serde_json::Value) {
        std::fs::create_dir_all(log_dir).expect("creating the log dir");
        let ready_file = log_dir.join(format!("ready-{}.json", fastrand::u32(..)));
        let mut all = args.to_vec();
        all.extend(["--ready-file".as_ref(), ready_file.as_os_str()]);
        // Its first stdout line comes once it listens; the file is written by then or soon after.
        let process = ServiceProcess::start(&all, log_dir, |_| true);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addrs) = std::fs::read(&ready_file)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            {
                return (process, addrs);
            }
            assert!(
                Instant::now() < deadline,
                "meridian {args:?} wrote no ready file {}",
                ready_file.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The address named `key` in a ready file's JSON (see [`ServiceProcess::start_ready`]).
pub fn ready_addr(addrs: &serde_json::Value, key: &str) -> SocketAddr {
    addrs[key]
        .as_str()
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no {key} address in the ready file: {addrs}"))
}

/// Rewrites the top-level `listen` and `http_listen` lines of the TOML config at `path` to the
/// addresses a process reported it bound (see [`ServiceProcess::start_ready`]), so a config that
/// said port 0 re-binds, after a restart, the addresses clients already hold. Tables below the top
/// level (`[remoting]`, ...) are left alone.
pub fn pin_listen_addresses(path: &Path, listen: SocketAddr, http: Option<SocketAddr>) {
    let text = std::fs::read_to_string(path).expect("reading a config to pin");
    let mut top_level = true;
    let pinned: Vec<String> = text
        .lines()
        .map(|line| {
            top_level &= !line.trim_start().starts_with('[');
            let key = line.split('=').next().unwrap_or_default().trim();
            let bound = match key {
                "listen" => Some(listen),
                "http_listen" => http,
                _ => None,
            };
            match bound {
                Some(addr) if top_level => format!("{key} = \"{addr}\""),
                _ => line.to_owned(),
            }
        })
        .collect();
    std::fs::write(path, pinned.join("\n") + "\n").expect("writing a pinned config");
}

/// Starts `meridian broker --config CONFIG` (logging into `log_dir`) and waits until it listens;
/// then pins its config to the addresses it bound ([`pin_listen_addresses`]), so a config may say
/// port 0 and a restart still comes back where it was. Its client and HTTP addresses.
pub fn start_broker(config: &Path, log_dir: &Path) -> (ServiceProcess, SocketAddr, Option<SocketAddr>) {
    let (process, addrs) =
        ServiceProcess::start_ready(&["broker".as_ref(), "--config".as_ref(), config.as_os_str()], log_dir);
    let listen = ready_addr(&addrs, "broker");
    let http = addrs["http"].as_str().map(|_| ready_addr(&addrs, "http"));
    pin_listen_addresses(config, listen, http);
    (process, listen, http)
}

/// How a [`GroupCluster`] is set up.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// `replication.ack_policy` of every member.
    pub ack_policy: &'static str,
    /// `store.flush_mode` of every member.
    pub flush_mode: &'static str,
    /// `replication.in_sync_lag_bytes` of every member.
    pub in_sync_lag_bytes: u64,
    /// The nameserver's `broker_timeout_ms` (the lease is half of it).
    pub broker_timeout_ms: u64,
    /// `replication.replicas`: 3, or 1 for a lone broker ([`GroupCluster::launch_one`]).
    pub replicas: u32,
    /// Every broker's `heartbeat_interval_ms`.
    pub heartbeat_interval_ms: u64,
}

impl Default for GroupOptions {
    fn default() -> GroupOptions {
        GroupOptions {
            ack_policy: "quorum",
            flush_mode: "async",
            in_sync_lag_bytes: 4 << 20,
            broker_timeout_ms: 2000,
            replicas: 3,
            heartbeat_interval_ms: 200,
        }
    }
}

/// One broker of a [`GroupCluster`].
pub struct Member {
    /// Its name in the group (`a-0`, `a-1`, `a-2`).
    pub name: String,
    /// Its data center.
    pub idc: String,
    /// Where it listens for clients: port 0 until its first start, then the address it bound,
    /// which its config is pinned to so a restart keeps it.
    pub listen: SocketAddr,
    /// Its HTTP listener (port 0 until its first start, like `listen`).
    pub http: SocketAddr,
    config: PathBuf,
    /// The process, while running.
    pub process: Option<ServiceProcess>,
}

/// A single-node nameserver and one broker group of three separate `meridian broker` processes:
/// `a-0` and `a-1` in `dc1`, `a-2` in `dc2`, on 127.0.0.4x addresses.
pub struct GroupCluster {
    /// Where configs, data and logs go.
    pub root: PathBuf,
    /// The nameserver process.
    pub nameserver: ServiceProcess,
    /// Its address.
    pub nameserver_addr: SocketAddr,
    /// The three brokers.
    pub members: Vec<Member>,
    options: GroupOptions,
}

impl GroupCluster {
    /// [`GroupCluster::prepare`] then [`GroupCluster::launch`].
    pub fn start(root: &Path, options: GroupOptions) -> GroupCluster {
        let mut cluster = GroupCluster::prepare(root, options);
        cluster.launch();
        cluster
    }

    /// Starts the nameserver and writes every broker's config, starting no broker (a test may
    /// rewrite a config first, e.g. to put a proxy in front of a member).
    pub fn prepare(root: &Path, options: GroupOptions) -> GroupCluster {
        let ns_ip = "127.0.0.40";
        let ns_config = root.join("nameserver.toml");
        std::fs::write(
            &ns_config,
            format!(
                "listen = \"{ns_ip}:0\"\nhttp_listen = \"{ns_ip}:0\"\ndata_dir = \"{}\"\nbroker_timeout_ms = {}\n",
                root.join("nameserver").display(),
                options.broker_timeout_ms
            ),
        )
        .expect("writing the nameserver config");
        // Port 0: the nameserver reports the port it got in its ready file.
        let (nameserver, addrs) = ServiceProcess::start_ready(
            &["nameserver".as_ref(), "--config".as_ref(), ns_config.as_os_str()],
            root,
        );
        let nameserver_addr = ready_addr(&addrs, "nameserver");
        let members = (0..3)
            .map(|index| {
                let ip = format!("127.0.0.{}", 41 + index);
                Member {
                    name: format!("a-{index}"),
                    idc: if index < 2 { "dc1" } else { "dc2" }.into(),
                    listen: format!("{ip}:0").parse().expect("address"),
                    http: format!("{ip}:0").parse().expect("address"),
                    config: root.join(format!("broker-{index}.toml")),
                    process: None,
                }
            })
            .collect();
        let cluster = GroupCluster {
            root: root.to_owned(),
            nameserver,
            nameserver_addr,
            members,
            options,
        };
        for index in 0..3 {
            cluster.write_config(index, &nameserver_addr.to_string(), None);
        }
        cluster
    }

    /// Starts `a-0` (so it is elected the first master; unless a test started it already, e.g. to
    /// learn its address for a proxy), then the slaves, and waits until the master holds both
    /// slaves in sync.
    pub fn launch(&mut self) {
        if self.members[0].process.is_none() {
            self.start_member(0);
        }
        self.wait_role(0, "master");
        self.start_member(1);
        self.start_member(2);
        self.wait_in_sync(0, 2);
    }

    /// Starts `a-0` alone (a group of one, `replicas = 1`) and waits until it is master.
    pub fn launch_one(&mut self) {
        self.start_member(0);
        self.wait_role(0, "master");
    }

    /// Writes member `index`'s config: it heartbeats `nameserver`, and tells clients and slaves
    /// to reach it at `advertise` (its own address when `None`).
    pub fn write_config(&self, index: usize, nameserver: &str, advertise: Option<SocketAddr>) {
        let member = &self.members[index];
        let advertise = advertise
            .map(|addr| format!("advertise_addr = \"{addr}\"\n"))
            .unwrap_or_default();
        let options = &self.options;
        let config = format!(
            "broker_name = \"broker-a\"\nmember_name = \"{}\"\nlisten = \"{}\"\nhttp_listen = \"{}\"\n{advertise}data_dir = \"{}\"\nidc = \"{}\"\nnameservers = [\"{nameserver}\"]\nheartbeat_interval_ms = {}\n\n[store]\nsegment_size = 67108864\nflush_mode = \"{}\"\n\n[replication]\nack_policy = \"{}\"\nreplicas = {}\nin_sync_lag_bytes = {}\n",
            member.name,
            member.listen,
            member.http,
            self.root.join(&member.name).display(),
            member.idc,
            options.heartbeat_interval_ms,
            options.flush_mode,
            options.ack_policy,
            options.replicas,
            options.in_sync_lag_bytes,
        );
        std::fs::write(&member.config, config).expect("writing a broker config");
    }

    /// Starts member `index` (again): the first start binds port 0 and records (and pins in its
    /// config) the addresses it got; a restart re-binds them.
    pub fn start_member(&mut self, index: usize) {
        let member = &mut self.members[index];
        let (process, listen, http) = start_broker(&member.config, &self.root);
        member.listen = listen;
        member.http = http.expect("a group member serves HTTP");
        member.process = Some(process);
    }

    /// `kill -9` of member `index`.
    pub fn kill9(&mut self, index: usize) {
        self.members[index].process.take().expect("member is running").kill9();
    }

    /// SIGTERM of member `index`.
    pub fn stop_member(&mut self, index: usize) {
        self.members[index].process.take().expect("member is running").stop();
    }

    /// Member `index`'s `/api/health`, if it answers.
    pub fn health(&self, index: usize) -> Option<serde_json::Value> {
        http_get_json(self.members[index].http, "/api/health")
    }

    /// Member `index`'s role (`master`, `slave`, `waiting`) and epoch, if it answers.
    pub fn role(&self, index: usize) -> Option<(String, u64)> {
        let health = self.health(index)?;
        let replication = &health["replication"];
        Some((replication["role"].as_str()?.to_owned(), replication["epoch"].as_u64()?))
    }

    /// Waits (up to 20 s) until member `index` has `role`; returns its epoch.
    pub fn wait_role(&self, index: usize, role: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((found, epoch)) = self.role(index)
                && found == role
                && (role != "master"
                    || self
                        .health(index)
                        .is_some_and(|health| health["replication"]["writable"] == true))
            {
                return epoch;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became {role}: {:?}",
                self.members[index].name,
                self.health(index)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to 30 s) until master `index` holds `count` slaves in sync; returns their names.
    pub fn wait_in_sync(&self, index: usize, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let in_sync: Vec<String> = self
                .health(index)
                .and_then(|health| {
                    health["replication"]["in_sync"].as_array().map(|names| {
                        names
                            .iter()
                            .filter_map(|name| name.as_str().map(str::to_owned))
                            .collect()
                    })
                })
                .unwrap_or_default();
            if in_sync.len() == count {
                return in_sync;
            }
            assert!(
                Instant::now() < deadline,
                "master {} never held {count} slaves in sync: {:?}",
                self.members[index].name,
                self.health(index)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Member `index`'s committed commitlog offset.
    pub fn committed(&self, index: usize) -> Option<u64> {
        self.health(index)?["broker"]["committed_offset"].as_u64()
    }

    /// Runs the CLI against the nameserver.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let nameserver = self.nameserver_addr.to_string();
        run_cli(args, &[("MERIDIAN_NAMESERVER", &nameserver)], "")
    }

    /// A route source asking the nameserver, as applications do.
    pub fn route(&self, pool: &ConnectionPool) -> Arc<dyn RouteSource> {
        Arc::new(NameserverRoute::new(
            vec![self.nameserver_addr.to_string()],
            pool.clone(),
        ))
    }
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_addresses_are_parsed() {
        assert_eq!(
            address_after("  broker     127.0.0.1:4000 (flush: async)", "broker"),
            Some("127.0.0.1:4000".parse().unwrap())
        );
        assert_eq!(
            address_after("  http       http://127.0.0.1:80  (/metrics)", "http"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(address_after("ready; press Ctrl-C", "broker"), None);
    }
}

//! The harness of Meridian's end-to-end tests: real `meridian` processes on loopback ports,
//! started, stopped and killed the way an operator (or a crash) would.
//!
//! [`DevNode`] runs `meridian dev` on port 0 and reads the bound addresses from its banner, so
//! tests never fight over ports; [`ServiceProcess`] runs any other `meridian` service (a
//! nameserver or broker of a cluster) the same way, and [`run_cli`] runs a client command. The tests themselves live in `e2e/` (one binary, many modules).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_client::{ConnectionPool, NameserverRoute, RouteSource};

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
        std::fs::create_dir_all(log_dir).expect("creating the log dir");
        let log_path = log_dir.join(format!("meridian-{}.log", fastrand::u32(..)));
        let log = std::fs::File::create(&log_path).expect("creating the log file");
        let mut child = Command::new(meridian_bin())
            .args(args)
            .env("RUST_LOG", "info")
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
    /// The node's data dir.
    pub data_dir: PathBuf,
    /// Where its log (stderr) goes.
    pub log_path: PathBuf,
}

fn address_after(line: &str, label: &str) -> Option<SocketAddr> {
    let rest = line.trim_start().strip_prefix(label)?.trim_start();
    let word = rest.split_whitespace().next()?;
    word.trim_start_matches("http://").parse().ok()
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
        let mut args: Vec<&std::ffi::OsStr> = [
            "dev",
            "--nameserver-listen",
            "127.0.0.1:0",
            "--broker-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
        args.push(data_dir.as_os_str());
        args.extend(extra_args.iter().map(std::ffi::OsStr::new));
        let process = ServiceProcess::start(&args, data_dir, |line| line.starts_with("ready"));
        DevNode {
            nameserver: process
                .address("nameserver")
                .expect("banner names the nameserver address"),
            broker: process.address("broker").expect("banner names the broker address"),
            http: process.address("http").expect("banner names the http address"),
            data_dir: data_dir.to_owned(),
            log_path: process.log_path.clone(),
            process,
        }
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

//! The harness of Meridian's end-to-end tests: real `meridian` processes on loopback ports,
//! started, stopped and killed the way an operator (or a crash) would.
//!
//! [`DevNode`] runs `meridian dev` on port 0 and reads the bound addresses from its banner, so
//! tests never fight over ports. The tests themselves live in `e2e/` (one binary, many modules).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_client::{Admin, ClientConfig, ConnectionPool, RouteSource, StaticRoute};

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

/// A running `meridian dev` process.
pub struct DevNode {
    child: Child,
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

impl DevNode {
    /// Starts `meridian dev` on `data_dir` with extra arguments (e.g. `--flush-mode sync`) and
    /// waits until it is ready.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> DevNode {
        std::fs::create_dir_all(data_dir).expect("creating the data dir");
        let log_path = data_dir.join(format!("meridian-{}.log", fastrand::u32(..)));
        let log = std::fs::File::create(&log_path).expect("creating the log file");
        let mut child = Command::new(meridian_bin())
            .args([
                "dev",
                "--broker-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting meridian dev");
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
        let (mut broker, mut http) = (None, None);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = match lines_rx.recv_timeout(remaining) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "meridian dev did not become ready; log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            };
            broker = broker.or_else(|| address_after(&line, "broker"));
            http = http.or_else(|| address_after(&line, "http"));
            if line.starts_with("ready") {
                break;
            }
        }
        DevNode {
            child,
            broker: broker.expect("banner names the broker address"),
            http: http.expect("banner names the http address"),
            data_dir: data_dir.to_owned(),
            log_path,
        }
    }

    /// The broker address as clients take it.
    pub fn broker_addr(&self) -> String {
        self.broker.to_string()
    }

    /// A route source pointing at this node's broker.
    pub fn route(&self, pool: &ConnectionPool) -> Arc<dyn RouteSource> {
        Arc::new(StaticRoute::new(self.broker_addr(), pool.clone()))
    }

    /// Creates a topic.
    pub async fn create_topic(&self, topic: &str, queues: u32) {
        let pool = ConnectionPool::new(ClientConfig::default());
        let admin = Admin::new(self.route(&pool), ClientConfig::default());
        admin
            .create_topic(&self.broker_addr(), topic, queues)
            .await
            .expect("creating topic");
        admin.shutdown().await;
        pool.shutdown().await;
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

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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

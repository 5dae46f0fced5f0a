//! Authentication over the real binary: `meridian dev --auth` refuses connections that do not
//! log in, log in with a wrong secret, or replay a captured handshake; users are created, rotated
//! and deleted with the CLI (their secrets printed once, never logged); the audit log names who
//! did what from where; and a process posing as a slave cannot fetch from the master.

use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use meridian_proto::auth::{self, AuthProof, ClientHandshake, Credentials};
use meridian_proto::messages::ReplicaFetch;
use meridian_proto::{ErrorCode, Frame, FrameCodec, RequestCode};
use meridian_tests::{ServiceProcess, meridian_bin};
use prost::Message;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Runs the CLI with exactly these credentials (none when `user` is `None`).
fn cli(nameserver: &str, credentials: Option<(&str, &str)>, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(meridian_bin());
    command
        .args(args)
        .env("MERIDIAN_NAMESERVER", nameserver)
        .env_remove("MERIDIAN_USER")
        .env_remove("MERIDIAN_SECRET")
        .stdin(Stdio::null());
    if let Some((user, secret)) = credentials {
        command.env("MERIDIAN_USER", user).env("MERIDIAN_SECRET", secret);
    }
    let output = command.output().expect("running meridian");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The value of `export NAME=value` in `text`.
fn exported(text: &str, name: &str) -> String {
    let prefix = format!("export {name}=");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_owned()
}

type Raw = Framed<TcpStream, FrameCodec>;

async fn raw(addr: &str) -> Raw {
    Framed::new(TcpStream::connect(addr).await.unwrap(), FrameCodec::new(16 << 20))
}

async fn exchange(connection: &mut Raw, request_id: u64, code: RequestCode, body: Vec<u8>) -> Frame {
    connection
        .send(Frame::request(request_id, code, Bytes::from(body)))
        .await
        .unwrap();
    connection.next().await.expect("an answer").expect("a frame")
}

/// Logs in on a raw connection; returns the hello and proof bodies sent.
async fn log_in(connection: &mut Raw, credentials: Credentials) -> (Vec<u8>, Vec<u8>, Frame) {
    let (mut handshake, hello) = ClientHandshake::start(credentials);
    let hello = hello.encode_to_vec();
    let challenge = exchange(connection, 1, RequestCode::AuthHello, hello.clone()).await;
    assert_eq!(challenge.error_code(), ErrorCode::Ok, "{}", challenge.header.remark);
    let challenge = auth::decode("challenge", &challenge.body).unwrap();
    let proof: AuthProof = handshake.respond(&challenge).unwrap().expect("login required");
    let proof = proof.encode_to_vec();
    let answer = exchange(connection, 2, RequestCode::AuthProof, proof.clone()).await;
    (hello, proof, answer)
}

fn fetch(name: &str) -> Vec<u8> {
    ReplicaFetch {
        group: "broker-a".into(),
        name: name.into(),
        epoch: 1,
        max_bytes: 1024,
        wait_ms: 0,
        segment_size: 1 << 30,
        ..ReplicaFetch::default()
    }
    .encode_to_vec()
}

/// `meridian dev --auth` in `dir` (data in `dir/data`) on loopback port 0, without the RocketMQ
/// listeners, with `extra` flags, logging at `log` when given; returns once it is ready.
fn dev_auth(dir: &Path, extra: &[&str], log: Option<&str>) -> ServiceProcess {
    let data_dir = dir.join("data");
    let args: Vec<&std::ffi::OsStr> = [
        "dev",
        "--auth",
        "--nameserver-listen",
        "127.0.0.1:0",
        "--broker-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--no-rocketmq",
    ]
    .iter()
    .chain(extra)
    .map(std::ffi::OsStr::new)
    .chain([std::ffi::OsStr::new("--data-dir"), data_dir.as_os_str()])
    .collect();
    ServiceProcess::start_logging(&args, dir, |line| line.starts_with("ready"), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_dev_auth_refuses_strangers_and_audits_admins() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let node = dev_auth(dir.path(), &["--no-archive"], Some("debug"));
    let banner = node.banner.join("\n");
    let nameserver = node.address("nameserver").expect("nameserver address").to_string();
    let broker = node.address("broker").expect("broker address").to_string();
    assert_eq!(exported(&banner, "MERIDIAN_USER"), "admin");
    let admin_secret = exported(&banner, "MERIDIAN_SECRET");
    let admin = Some(("admin", admin_secret.as_str()));

    // Unauthenticated and wrong-secret clients are refused, naming the fix and not the secret.
    let (ok, _, stderr) = cli(
        &nameserver,
        None,
        &["topic", "create", "secure-orders", "--queues", "2"],
    );
    assert!(!ok && stderr.contains("authentication required"), "{stderr}");
    let (ok, _, stderr) = cli(&nameserver, Some(("admin", "wrong-secret")), &["topic", "list"]);
    assert!(
        !ok && stderr.contains("authentication failed for user \"admin\""),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-secret"));

    // The admin works as before, and the broker lets it produce and consume.
    let (ok, _, stderr) = cli(
        &nameserver,
        admin,
        &["topic", "create", "secure-orders", "--queues", "2"],
    );
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = cli(
        &nameserver,
        admin,
        &["produce", "--topic", "secure-orders", "--body", "paid"],
    );
    assert!(ok, "{stdout}{stderr}");
    let (ok, _, stderr) = cli(
        &nameserver,
        admin,
        &["group", "create", "auditors", "--topics", "secure-orders"],
    );
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = cli(
        &nameserver,
        admin,
        &[
            "consume",
            "--topic",
            "secure-orders",
            "--group",
            "auditors",
            "--from-beginning",
            "--max",
            "1",
            "--timeout",
            "10",
        ],
    );
    assert!(ok && stdout.contains("paid"), "{stdout}{stderr}");

    // Users: the secret is printed once, listed never, and rotation retires the old one.
    let (ok, stdout, stderr) = cli(&nameserver, admin, &["user", "create", "alice"]);
    assert!(ok, "{stderr}");
    let alice_first = exported(&stdout, "MERIDIAN_SECRET");
    let (ok, _, stderr) = cli(&nameserver, Some(("alice", &alice_first)), &["topic", "list"]);
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = cli(&nameserver, admin, &["user", "list", "--json"]);
    assert!(
        ok && stdout.contains("\"alice\"") && !stdout.contains(&alice_first),
        "{stdout}"
    );
    let (ok, stdout, stderr) = cli(&nameserver, admin, &["user", "rotate", "alice"]);
    assert!(ok, "{stderr}");
    let alice_second = exported(&stdout, "MERIDIAN_SECRET");
    let (ok, _, stderr) = cli(&nameserver, Some(("alice", &alice_first)), &["topic", "list"]);
    assert!(!ok && stderr.contains("authentication failed"), "{stderr}");
    let (ok, _, stderr) = cli(&nameserver, Some(("alice", &alice_second)), &["topic", "list"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cli(&nameserver, admin, &["user", "delete", "alice"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cli(&nameserver, Some(("alice", &alice_second)), &["topic", "list"]);
    assert!(!ok && stderr.contains("authentication failed"), "{stderr}");

    // The audit log names the authenticated user and where the request came from.
    let (ok, stdout, stderr) = cli(&nameserver, admin, &["audit", "--json"]);
    assert!(ok, "{stderr}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let find = |action: &str, subject: &str| {
        entries
            .iter()
            .find(|entry| entry["action"] == action && entry["subject"] == subject)
            .unwrap_or_else(|| panic!("no {action} of {subject} in {stdout}"))
            .clone()
    };
    for (action, subject) in [
        ("approve_topic", "topic secure-orders"),
        ("create_user", "user alice"),
        ("rotate_user", "user alice"),
        ("delete_user", "user alice"),
    ] {
        let entry = find(action, subject);
        assert_eq!(entry["who"], "admin", "{entry}");
        assert_eq!(entry["authenticated"], true, "{entry}");
        assert!(entry["from"].as_str().unwrap().starts_with("127.0.0.1:"), "{entry}");
    }

    // A process posing as a slave: no login, a user's login, a node login naming no member.
    let mut stranger = raw(&broker).await;
    let answer = exchange(&mut stranger, 1, RequestCode::ReplicaFetch, fetch("broker-b")).await;
    assert_eq!(
        answer.error_code(),
        ErrorCode::Unauthenticated,
        "{}",
        answer.header.remark
    );
    assert!(stranger.next().await.is_none(), "the broker closes the connection");

    let mut user = raw(&broker).await;
    let (hello, proof, answer) = log_in(&mut user, Credentials::new("admin", admin_secret.clone())).await;
    assert_eq!(answer.error_code(), ErrorCode::Ok, "{}", answer.header.remark);
    let answer = exchange(&mut user, 3, RequestCode::ReplicaFetch, fetch("broker-b")).await;
    assert_eq!(
        answer.error_code(),
        ErrorCode::PermissionDenied,
        "{}",
        answer.header.remark
    );

    // The admin's captured handshake, replayed on a new connection, is refused.
    let mut replay = raw(&broker).await;
    let challenge = exchange(&mut replay, 1, RequestCode::AuthHello, hello).await;
    assert_eq!(challenge.error_code(), ErrorCode::Ok);
    let answer = exchange(&mut replay, 2, RequestCode::AuthProof, proof).await;
    assert_eq!(
        answer.error_code(),
        ErrorCode::Unauthenticated,
        "{}",
        answer.header.remark
    );

    let node_secret = auth::read_node_secret(&data_dir.join("node.secret")).unwrap();
    let mut impostor = raw(&broker).await;
    let (_, _, answer) = log_in(&mut impostor, Credentials::node(node_secret.clone())).await;
    assert_eq!(answer.error_code(), ErrorCode::Ok);
    let answer = exchange(&mut impostor, 3, RequestCode::ReplicaFetch, fetch("broker-z")).await;
    assert_eq!(
        answer.error_code(),
        ErrorCode::FailedPrecondition,
        "{}",
        answer.header.remark
    );
    assert!(
        answer.header.remark.contains("not a registered member"),
        "{}",
        answer.header.remark
    );

    // No secret reaches the log, even at debug level.
    let log = node.log();
    node.stop();
    for secret in [&admin_secret, &alice_first, &alice_second, &node_secret] {
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
    }
    assert!(log.contains("connection refused"), "refusals are logged");
    let _ = std::fs::remove_dir_all(Path::new(&data_dir));
}

/// One HTTP/1.0 request: the status, the head and the body.
async fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connecting to the HTTP listener");
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Runs the CLI with the HTTP services at `http_addr` and exactly these credentials.
fn cli_http(
    nameserver: &str,
    http_addr: &str,
    credentials: Option<(&str, &str)>,
    args: &[&str],
) -> (bool, String, String) {
    let mut command = Command::new(meridian_bin());
    command
        .args(args)
        .env("MERIDIAN_NAMESERVER", nameserver)
        .env("MERIDIAN_QUERY", http_addr)
        .env("MERIDIAN_TRACER", http_addr)
        .env_remove("MERIDIAN_USER")
        .env_remove("MERIDIAN_SECRET")
        .env_remove("MERIDIAN_SECRET_FILE")
        .stdin(Stdio::null());
    if let Some((user, secret)) = credentials {
        command.env("MERIDIAN_USER", user).env("MERIDIAN_SECRET", secret);
    }
    let output = command.output().expect("running meridian");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `meridian dev --tls` with the broker's `[connections]` limits from `broker_toml`: the node, the
/// CA file it printed, and the broker's and HTTP addresses.
fn dev_tls(dir: &Path, broker_toml: &str) -> (ServiceProcess, String, String, String, String) {
    let data_dir = dir.join("data");
    let config = dir.join("broker.toml");
    std::fs::write(&config, broker_toml).unwrap();
    let args: Vec<&std::ffi::OsStr> = [
        "dev",
        "--tls",
        "--nameserver-listen",
        "127.0.0.1:0",
        "--broker-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--no-rocketmq",
        "--no-archive",
        "--config",
    ]
    .iter()
    .map(std::ffi::OsStr::new)
    .chain([
        config.as_os_str(),
        std::ffi::OsStr::new("--data-dir"),
        data_dir.as_os_str(),
    ])
    .collect();
    let node = ServiceProcess::start(&args, dir, |line| line.starts_with("ready"));
    let banner = node.banner.join("\n");
    let ca = exported(&banner, "MERIDIAN_TLS_CA");
    let nameserver = node.address("nameserver").expect("nameserver address").to_string();
    let broker = node.address("broker").expect("broker address").to_string();
    let http = node.address("http").expect("http address").to_string();
    assert!(banner.contains(&format!("https://{http}")), "{banner}");
    (node, ca, nameserver, broker, http)
}

/// Runs the CLI against `nameserver` with `MERIDIAN_TLS_CA` set to `ca` (unset for `None`).
fn tls_cli(nameserver: &str, ca: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(meridian_bin());
    command
        .args(args)
        .env("MERIDIAN_NAMESERVER", nameserver)
        .env_remove("MERIDIAN_USER")
        .env_remove("MERIDIAN_SECRET")
        .env_remove("MERIDIAN_TLS_CA")
        .stdin(Stdio::null());
    if let Some(ca) = ca {
        command.env("MERIDIAN_TLS_CA", ca);
    }
    let output = command.output().expect("running meridian");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every file under `dir` (logs, the audit log's Raft state) as lossy text.
fn all_text_under(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.metadata().is_ok_and(|meta| meta.len() < 64 << 20) {
                // Segments are preallocated: read only what holds data.
                let bytes = std::fs::read(&path).unwrap_or_default();
                let end = bytes.iter().rposition(|&byte| byte != 0).map_or(0, |at| at + 1);
                found.push((path, String::from_utf8_lossy(&bytes[..end]).into_owned()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_http_apis_need_a_login_and_audit_the_logged_in_user() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let node = dev_auth(dir.path(), &[], Some("debug"));
    let banner = node.banner.join("\n");
    let nameserver = node.address("nameserver").expect("nameserver address").to_string();
    let http_addr = node.address("http").expect("http address").to_string();
    let admin_secret = exported(&banner, "MERIDIAN_SECRET");
    let basic = meridian_proto::http_auth::basic_authorization("admin", &admin_secret);
    let wrong = meridian_proto::http_auth::basic_authorization("admin", "not-the-secret");
    let json = ("Content-Type", "application/json");

    // Probes stay open, and carry no secret.
    for path in ["/metrics", "/api/health", "/api/nameserver/health"] {
        let (status, _, body) = http(&http_addr, "GET", path, &[], "").await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.contains(&admin_secret));
    }

    // Without credentials, or with a wrong secret: 401 saying how to log in.
    let request_topic =
        r#"{"name": "http-orders", "owner": "payments", "queues": {"broker-a": 2}, "requested_by": "admin"}"#;
    let refused = [
        ("POST", "/api/sql", "select 1"),
        ("GET", "/api/traces?key=k1", ""),
        ("GET", "/api/traces/0123456789abcdef0123456789abcdef", ""),
        ("GET", "/api/topics", ""),
        ("POST", "/api/topics", request_topic),
        ("POST", "/api/topics/http-orders/approve", "{}"),
        ("GET", "/api/audit", ""),
    ];
    for (method, path, body) in refused {
        let (status, head, answer) = http(&http_addr, method, path, &[json], body).await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
        assert!(
            answer.contains("POST /api/login") && answer.contains("unauthenticated"),
            "{answer}"
        );
        assert!(head.to_ascii_lowercase().contains("www-authenticate"), "{head}");
        let (status, _, answer) = http(&http_addr, method, path, &[json, ("Authorization", &wrong)], body).await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
        assert!(!answer.contains("not-the-secret"), "{answer}");
    }
    let (status, _, answer) = http(&http_addr, "GET", "/api/topics", &[("Authorization", "Basic !!")], "").await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("malformed"), "{answer}");

    // With Basic: 200, and admin writes are made by the logged-in user.
    let admin = [json, ("Authorization", basic.as_str())];
    let (status, _, answer) = http(&http_addr, "POST", "/api/topics", &admin, request_topic).await;
    assert_eq!(status, 201, "{answer}");
    let (status, _, answer) = http(
        &http_addr,
        "POST",
        "/api/topics/http-orders/approve",
        &admin,
        r#"{"by": "mallory"}"#,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("logged in as \\\"admin\\\""), "{answer}");
    let (status, _, answer) = http(&http_addr, "POST", "/api/topics/http-orders/approve", &admin, "{}").await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = http(&http_addr, "POST", "/api/sql", &admin[1..], "select 1 as one").await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = http(&http_addr, "GET", "/api/traces?key=k1", &admin[1..], "").await;
    assert_eq!(status, 200, "{answer}");

    // Login: the token works as Bearer until logout.
    let (status, _, answer) = http(&http_addr, "POST", "/api/login", &admin[1..], "").await;
    assert_eq!(status, 200, "{answer}");
    let login: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(login["user"], "admin");
    let token = login["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let (status, _, answer) = http(
        &http_addr,
        "GET",
        "/api/topics/http-orders",
        &[("Authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = http(&http_addr, "GET", "/api/session", &[("Authorization", &bearer)], "").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"admin\""), "{answer}");
    let (status, _, answer) = http(&http_addr, "POST", "/api/login", &[("Authorization", &wrong)], "").await;
    assert_eq!(status, 401, "{answer}");
    let (status, _, answer) = http(&http_addr, "POST", "/api/logout", &[("Authorization", &bearer)], "").await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = http(&http_addr, "GET", "/api/topics", &[("Authorization", &bearer)], "").await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("log in again"), "{answer}");

    // The CLI sends MERIDIAN_USER and MERIDIAN_SECRET on its HTTP calls.
    let admin_env = Some(("admin", admin_secret.as_str()));
    let (ok, stdout, stderr) = cli_http(&nameserver, &http_addr, admin_env, &["sql", "select 1 as one"]);
    assert!(ok, "{stdout}{stderr}");
    let (ok, _, stderr) = cli_http(&nameserver, &http_addr, None, &["sql", "select 1 as one"]);
    assert!(!ok && stderr.contains("authentication required"), "{stderr}");
    let (ok, _, stderr) = cli_http(
        &nameserver,
        &http_addr,
        Some(("admin", "not-the-secret")),
        &["sql", "select 1"],
    );
    assert!(!ok && stderr.contains("authentication failed"), "{stderr}");
    assert!(!stderr.contains("not-the-secret"), "{stderr}");

    // The audit log names the logged-in user for the HTTP approval.
    let (ok, stdout, stderr) = cli(&nameserver, admin_env, &["audit", "--json"]);
    assert!(ok, "{stderr}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let approval = entries
        .iter()
        .find(|entry| entry["action"] == "approve_topic" && entry["subject"] == "topic http-orders")
        .unwrap_or_else(|| panic!("no approval in {stdout}"));
    assert_eq!(approval["who"], "admin", "{approval}");
    assert_eq!(approval["authenticated"], true, "{approval}");

    // No secret or token in any log or file the node wrote (debug level), nor in its stdout.
    let node_secret = auth::read_node_secret(&data_dir.join("node.secret")).unwrap();
    let log = node.log();
    node.stop();
    let basic_value = basic.trim_start_matches("Basic ").to_owned();
    let secrets = [admin_secret.as_str(), token.as_str(), basic_value.as_str()];
    assert!(!banner.contains(&token));
    for secret in secrets {
        assert!(!log.contains(secret), "a secret or token is in the log");
    }
    for (path, text) in all_text_under(&data_dir) {
        if path.ends_with("node.secret") {
            continue;
        }
        for secret in secrets.iter().chain([&node_secret.as_str()]) {
            assert!(!text.contains(secret), "a secret or token is in {}", path.display());
        }
    }
    let _ = std::fs::remove_dir_all(Path::new(&data_dir));
}

/// `cluster up` with `auth = true`: makes the node secret and the user `admin`, its secret in a
/// file only its owner reads, and prints the variables a client needs; the CLI logs in with them
/// (`MERIDIAN_SECRET_FILE`) and is refused without them; the nodes' HTTP APIs need a login too.
#[test]
fn security_cluster_up_with_auth_creates_an_administrator() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let spec = root.path().join("spec.toml");
    // Its own loopback address (127.0.0.93), below the ephemeral port range.
    std::fs::write(
        &spec,
        r#"name = "secure"
idcs = ["local"]
auth = true

[[nameservers]]
id = 1
idc = "local"
listen = "127.0.0.93:7800"
http = "127.0.0.93:8080"

[[broker_groups]]
name = "broker-a"

[[broker_groups.members]]
name = "a-0"
role = "master"
idc = "local"
listen = "127.0.0.93:7911"
http = "127.0.0.93:8081"

[archiver]
enabled = false

[overrides.broker.store]
segment_size = 67108864
"#,
    )
    .unwrap();
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let output = Command::new(meridian_bin())
            .args(args)
            .env_remove("MERIDIAN_USER")
            .env_remove("MERIDIAN_SECRET")
            .env_remove("MERIDIAN_SECRET_FILE")
            .env("MERIDIAN_NAMESERVER", "127.0.0.93:7800")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("running meridian");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let dir_text = dir.to_str().unwrap();
    let (ok, stdout, stderr) = run(
        &["cluster", "up", "--config", spec.to_str().unwrap(), "--dir", dir_text],
        &[],
    );
    let down = || run(&["cluster", "down", "--purge", "--dir", dir_text], &[]);
    if !ok {
        down();
        panic!("cluster up failed: {stdout}{stderr}");
    }
    let user = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("export MERIDIAN_USER="));
    let secret_file = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("export MERIDIAN_SECRET_FILE="))
        .map(str::to_owned);
    let checks = std::panic::catch_unwind(|| {
        assert_eq!(user, Some("admin"), "{stdout}");
        let secret_file = secret_file.clone().expect("cluster up prints MERIDIAN_SECRET_FILE");
        let mode = std::fs::metadata(&secret_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the admin's secret file is for its owner only");
        let secret = std::fs::read_to_string(&secret_file).unwrap().trim().to_owned();
        assert!(!stdout.contains(&secret), "cluster up printed the secret");
        let admin = [
            ("MERIDIAN_USER", "admin"),
            ("MERIDIAN_SECRET_FILE", secret_file.as_str()),
        ];
        let (ok, _, stderr) = run(&["topic", "create", "secure-orders", "--queues", "1"], &admin);
        assert!(ok, "{stderr}");
        let (ok, _, stderr) = run(&["topic", "list"], &[]);
        assert!(!ok && stderr.contains("authentication required"), "{stderr}");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let basic = meridian_proto::http_auth::basic_authorization("admin", &secret);
        for addr in ["127.0.0.93:8080", "127.0.0.93:8081"] {
            let path = if addr.ends_with("8080") {
                "/api/topics"
            } else {
                "/api/broker/topics"
            };
            let (status, _, body) = runtime.block_on(http(addr, "GET", path, &[], ""));
            assert_eq!(status, 401, "{addr}{path}: {body}");
            let (status, _, body) = runtime.block_on(http(addr, "GET", path, &[("Authorization", &basic)], ""));
            assert_eq!(status, 200, "{addr}{path}: {body}");
        }
        // No secret in the nodes' logs.
        let node_secret = auth::read_node_secret(&dir.join("node.secret")).unwrap();
        for (path, text) in all_text_under(&dir) {
            if path.ends_with("node.secret") || path.ends_with("admin.secret") {
                continue;
            }
            assert!(
                !text.contains(&secret) && !text.contains(&node_secret),
                "a secret is in {}",
                path.display()
            );
        }
    });
    let (ok, stdout, stderr) = down();
    if let Err(panic) = checks {
        std::panic::resume_unwind(panic);
    }
    assert!(ok, "cluster down: {stdout}{stderr}");
}

/// `GET path` over HTTP/1.0, with TLS verified against `ca` or in plaintext: status and body.
async fn https_get(addr: &str, ca: Option<&str>, path: &str) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let tls = ca.map(|ca| meridian_proto::tls::TlsClient::new("ca", Path::new(ca), None).unwrap());
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut stream = meridian_proto::tls::connect_maybe_tls(tls.as_deref(), addr, stream)
        .await
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    meridian_proto::tls::read_to_close(&mut stream, &mut response)
        .await
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_dev_tls_serves_the_cli_and_http_over_tls_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (node, ca, nameserver, _broker, http) = dev_tls(dir.path(), "");
    let ca = Some(ca.as_str());

    // Produce and consume with the CLI, trusting the printed CA.
    let (ok, _, stderr) = tls_cli(&nameserver, ca, &["topic", "create", "tls-orders", "--queues", "2"]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = tls_cli(
        &nameserver,
        ca,
        &["produce", "--topic", "tls-orders", "--body", "sealed"],
    );
    assert!(ok, "{stdout}{stderr}");
    let (ok, _, stderr) = tls_cli(
        &nameserver,
        ca,
        &["group", "create", "tls-readers", "--topics", "tls-orders"],
    );
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = tls_cli(
        &nameserver,
        ca,
        &[
            "consume",
            "--topic",
            "tls-orders",
            "--group",
            "tls-readers",
            "--from-beginning",
            "--max",
            "1",
            "--timeout",
            "10",
        ],
    );
    assert!(ok && stdout.contains("sealed"), "{stdout}{stderr}");

    // A plaintext client is refused with a readable reason.
    let (ok, _, stderr) = tls_cli(&nameserver, None, &["topic", "list"]);
    assert!(
        !ok && stderr.contains("requires TLS") && stderr.contains("MERIDIAN_TLS_CA"),
        "{stderr}"
    );

    // HTTP: https with the CA works; plaintext gets a 400 that says to use https.
    let (status, body) = https_get(&http, ca, "/api/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("broker-a"), "{body}");
    let (status, body) = https_get(&http, None, "/api/health").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("requires HTTPS"), "{body}");

    // A client trusting another CA is refused during the handshake.
    let other = tempfile::tempdir().unwrap();
    let (other_node, other_ca, _, _, _) = dev_tls(other.path(), "");
    other_node.stop();
    let (ok, _, stderr) = tls_cli(&nameserver, Some(&other_ca), &["topic", "list"]);
    assert!(!ok && stderr.contains("TLS handshake"), "{stderr}");

    let log = node.log();
    node.stop();
    assert!(log.contains("plaintext connection refused"), "refusals are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_limits_connections_per_address_are_refused_naming_the_setting() {
    use meridian_proto::transport::{Connection, TransportConfig, TransportError};
    let dir = tempfile::tempdir().unwrap();
    let (node, ca, _, broker, _) = dev_tls(dir.path(), "[connections]\nmax_per_address = 12\n");
    let config = TransportConfig {
        tls: Some(meridian_proto::tls::TlsClient::new("ca", Path::new(&ca), None).unwrap()),
        ..TransportConfig::default()
    };
    let (tracker, cancel) = (
        tokio_util::task::TaskTracker::new(),
        tokio_util::sync::CancellationToken::new(),
    );
    let mut open = Vec::new();
    let refusal = loop {
        assert!(open.len() <= 12, "more than max_per_address connections were served");
        let connection = Connection::connect(&broker, &config, &tracker, &cancel).await.unwrap();
        match connection
            .request(RequestCode::TopicRoute, Bytes::new(), std::time::Duration::from_secs(5))
            .await
        {
            Err(TransportError::Remote {
                code: ErrorCode::Busy,
                message,
                ..
            }) => break message,
            _ => open.push(connection),
        }
    };
    assert!(
        refusal.contains("max_per_address = 12") && refusal.contains("127.0.0.1"),
        "{refusal}"
    );
    // The node's own connections from 127.0.0.1 count too, but most of the 12 were ours.
    assert!(
        open.len() >= 8,
        "refused after only {} connections: {refusal}",
        open.len()
    );
    cancel.cancel();
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_limits_idle_and_silent_connections_are_closed() {
    use meridian_proto::transport::{Connection, TransportConfig};
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (node, ca, _, broker, _) = dev_tls(
        dir.path(),
        "[connections]\nidle_timeout_secs = 2\nhandshake_timeout_secs = 2\n",
    );
    // Handshake timeout: a connection that never starts TLS is closed.
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(&broker).await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), silent.read(&mut buffer))
        .await
        .expect("the broker never closed a connection that sent nothing");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "closed before the timeout"
    );

    // Idle timeout: a TLS connection that asks once, then nothing, is closed.
    let config = TransportConfig {
        tls: Some(meridian_proto::tls::TlsClient::new("ca", Path::new(&ca), None).unwrap()),
        ..TransportConfig::default()
    };
    let (tracker, cancel) = (
        tokio_util::task::TaskTracker::new(),
        tokio_util::sync::CancellationToken::new(),
    );
    let connection = Connection::connect(&broker, &config, &tracker, &cancel).await.unwrap();
    let _ = connection
        .request(RequestCode::TopicRoute, Bytes::new(), std::time::Duration::from_secs(5))
        .await;
    assert!(connection.is_alive());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while connection.is_alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle connection was never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    cancel.cancel();
    let log = node.log();
    node.stop();
    assert!(log.contains("closing idle connection"), "idle closes are logged");
}

/// One 1 KiB send straight to `addr` on `orders`; whether the group acknowledged it.
async fn send_one(pool: &meridian_client::ConnectionPool, addr: &str) -> Result<(), String> {
    use meridian_proto::messages::{MessageData, SendRequest, SendResponse};
    let mut properties = meridian_proto::properties::PropertiesBuilder::new();
    properties.msg_id(&meridian_proto::MessageId::generate().to_string());
    let request = SendRequest {
        topic: "orders".into(),
        queue_id: 0,
        messages: vec![MessageData {
            flags: 0,
            born_timestamp: 0,
            properties: Bytes::from(properties.finish()),
            body: Bytes::from(vec![b'q'; 1024]),
            reconsume_count: 0,
        }],
        producer_group: String::new(),
        sdk: Default::default(),
    };
    let response: Result<SendResponse, _> = pool
        .call(addr, RequestCode::Send, &request, std::time::Duration::from_secs(5))
        .await;
    match response {
        Ok(response) if !response.results.is_empty() => Ok(()),
        Ok(_) => Err("no result".into()),
        Err(error) => Err(error.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_a_stranger_posing_as_a_slave_does_not_count_toward_the_groups_quorum() {
    use meridian_tests::{GroupCluster, GroupOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = GroupCluster::start(dir.path(), GroupOptions::default());
    let (ok, _, stderr) = cluster.cli(&["topic", "create", "orders", "--queues", "4", "--on", "broker-a"]);
    assert!(ok, "{stderr}");
    let epoch = cluster.wait_role(0, "master");
    cluster.wait_in_sync(0, 2);
    let master = cluster.members[0].listen.to_string();
    let pool = meridian_client::ConnectionPool::new(meridian_client::ClientConfig::default());
    send_one(&pool, &master)
        .await
        .expect("the group acknowledges with its slaves");

    // The real slaves stop; a stranger fetches as "broker-z", claiming to hold far more than the
    // master wrote (quorum needs one replica besides the master). The send is not acknowledged.
    cluster.stop_member(1);
    cluster.stop_member(2);
    let fetches = tokio_util::task::TaskTracker::new();
    let stranger = fetches.spawn({
        let (pool, master) = (pool.clone(), master.clone());
        async move {
            let mut refusals = Vec::new();
            for _ in 0..20 {
                let request = ReplicaFetch {
                    group: "broker-a".into(),
                    name: "broker-z".into(),
                    epoch,
                    last_epoch: epoch,
                    from_offset: 1 << 40,
                    flushed_offset: 1 << 40,
                    max_bytes: 1024,
                    wait_ms: 0,
                    // The group's segment size, so only membership can refuse it.
                    segment_size: 64 << 20,
                    ..ReplicaFetch::default()
                };
                let answer = pool
                    .request(
                        &master,
                        RequestCode::ReplicaFetch,
                        Bytes::from(request.encode_to_vec()),
                        std::time::Duration::from_secs(5),
                    )
                    .await;
                refusals.push(answer.map(|_| ()).map_err(|error| error.to_string()));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            refusals
        }
    });
    let error = send_one(&pool, &master)
        .await
        .expect_err("the master acknowledged a send that only the stranger claims to hold");
    assert!(error.contains("replication_timeout"), "{error}");
    // Without `[auth]` the master answers the stranger (with `[auth]` on it refuses a fetch that
    // names no registered member: the dev test above); either way the claim counts for nothing.
    assert_eq!(stranger.await.unwrap().len(), 20);
    let health = cluster.health(0).expect("the master's health");
    assert!(!health.to_string().contains("broker-z"), "{health}");
    pool.shutdown().await;
}

/// Runs the CLI until `done` accepts its outcome (the broker applies ACL changes with its next
/// metadata fetch); returns the last outcome. Polls a condition, never sleeps a fixed time for it.
fn cli_until(
    nameserver: &str,
    credentials: Option<(&str, &str)>,
    args: &[&str],
    done: impl Fn(&(bool, String, String)) -> bool,
) -> (bool, String, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let outcome = cli(nameserver, credentials, args);
        if done(&outcome) || std::time::Instant::now() > deadline {
            return outcome;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// [`dev_auth`] without the archive: the node, its nameserver and the admin's secret.
fn start_dev_auth(dir: &Path) -> (ServiceProcess, String, String) {
    let node = dev_auth(dir, &["--no-archive"], None);
    let banner = node.banner.join("\n");
    let nameserver = node.address("nameserver").expect("nameserver address").to_string();
    let admin_secret = exported(&banner, "MERIDIAN_SECRET");
    (node, nameserver, admin_secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_acl_pub_and_sub_need_grants_deny_beats_allow_and_admin_writes_need_admin() {
    let dir = tempfile::tempdir().unwrap();
    let (node, nameserver, admin_secret) = start_dev_auth(dir.path());
    let admin = Some(("admin", admin_secret.as_str()));
    let run = |credentials, args: &[&str]| {
        let outcome = cli(&nameserver, credentials, args);
        assert!(outcome.0, "{args:?}: {}{}", outcome.1, outcome.2);
        outcome.1
    };
    run(admin, &["topic", "create", "acl-orders", "--queues", "1"]);
    run(admin, &["produce", "--topic", "acl-orders", "--body", "paid"]);
    run(admin, &["group", "create", "acl-readers", "--topics", "acl-orders"]);
    let bob_secret = exported(&run(admin, &["user", "create", "bob"]), "MERIDIAN_SECRET");
    let bob = Some(("bob", bob_secret.as_str()));
    let consume = [
        "consume",
        "--topic",
        "acl-orders",
        "--group",
        "acl-readers",
        "--from-beginning",
        "--max",
        "1",
        "--timeout",
        "5",
    ];

    // PUB: refused without a grant, naming the user, the action, the resource and the fix.
    let produce = ["produce", "--topic", "acl-orders", "--body", "from-bob"];
    // The broker learns bob's verifier with its next metadata: until then his login fails.
    let (ok, stdout, stderr) = cli_until(&nameserver, bob, &produce, |outcome| {
        !outcome.2.contains("authentication failed")
    });
    assert!(!ok, "{stdout}{stderr}");
    assert!(
        stderr.contains("user \"bob\" may not PUB topic:acl-orders")
            && stderr.contains("meridian acl grant user:bob PUB topic:acl-orders"),
        "{stderr}"
    );
    run(admin, &["acl", "grant", "user:bob", "PUB", "topic:acl-orders"]);
    let (ok, stdout, stderr) = cli_until(&nameserver, bob, &produce, |outcome| outcome.0);
    assert!(ok, "with PUB bob produces: {stdout}{stderr}");

    // SUB: refused without a grant on the topic and the group; served with both.
    let (ok, stdout, stderr) = cli(&nameserver, bob, &consume);
    assert!(
        !stdout.contains("paid"),
        "bob consumed without SUB: {ok} {stdout}{stderr}"
    );
    run(admin, &["acl", "grant", "user:bob", "SUB", "topic:acl-*"]);
    run(admin, &["acl", "grant", "user:bob", "SUB", "group:acl-readers"]);
    let (ok, stdout, stderr) = cli_until(&nameserver, bob, &consume, |outcome| outcome.1.contains("paid"));
    assert!(ok && stdout.contains("paid"), "with SUB bob consumes: {stdout}{stderr}");

    // Deny beats allow at the same specificity: the same prefix, denied.
    run(admin, &["acl", "deny", "user:bob", "SUB", "topic:acl-*"]);
    let (ok, stdout, stderr) = cli_until(&nameserver, bob, &consume, |outcome| {
        !outcome.0 && outcome.2.contains("denies it")
    });
    assert!(
        !ok && !stdout.contains("paid") && stderr.contains("may not SUB topic:acl-orders"),
        "the deny wins: {stdout}{stderr}"
    );

    // Admin writes: bob may neither delete the topic nor grant himself rights.
    let (ok, _, stderr) = cli(
        &nameserver,
        bob,
        &["topic", "delete", "acl-orders", "--reason", "mine now"],
    );
    assert!(!ok && stderr.contains("needs ADMIN on topic:acl-orders"), "{stderr}");
    let (ok, _, stderr) = cli(&nameserver, bob, &["acl", "grant", "user:bob", "SUB", "*"]);
    assert!(!ok && stderr.contains("only super users may"), "{stderr}");

    // Rules are listed, and every change is audited with the authenticated admin.
    let listed = run(admin, &["acl", "list", "--json"]);
    let model: meridian_proto::acl::Acl = serde_json::from_str(&listed).unwrap();
    assert!(model.super_users.contains("admin"), "{listed}");
    assert_eq!(model.rules.len(), 4, "{listed}");
    let audit: Vec<serde_json::Value> = serde_json::from_str(&run(admin, &["audit", "--json"])).unwrap();
    let grants: Vec<&serde_json::Value> = audit.iter().filter(|entry| entry["action"] == "acl_grant").collect();
    assert_eq!(grants.len(), 3, "{audit:?}");
    assert!(
        grants
            .iter()
            .all(|entry| entry["who"] == "admin" && entry["authenticated"] == true)
    );
    assert!(
        audit
            .iter()
            .any(|entry| entry["action"] == "acl_deny" && entry["subject"] == "user:bob on topic:acl-*")
    );
    node.stop();
}

/// Rows of a `/api/sql` answer as the caller `authorization` sees them (status, rows).
async fn sql_rows(http_addr: &str, authorization: &str, sql: &str) -> (u16, Vec<serde_json::Value>) {
    let (status, _, body) = http(http_addr, "POST", "/api/sql", &[("Authorization", authorization)], sql).await;
    let rows = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|answer| answer["rows"].as_array().cloned())
        .unwrap_or_default();
    (status, rows)
}

/// Authorization over HTTP, end to end: the HTTP layer names the caller and SQL and trace lookups
/// answer only over the topics the caller may read, whatever the query's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_acl_http_sql_and_traces_show_only_topics_the_caller_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let node = dev_auth(dir.path(), &[], None);
    let banner = node.banner.join("\n");
    let nameserver = node.address("nameserver").expect("nameserver address").to_string();
    let http_addr = node.address("http").expect("http address").to_string();
    let admin_secret = exported(&banner, "MERIDIAN_SECRET");
    let admin = Some(("admin", admin_secret.as_str()));
    let run = |args: &[&str]| {
        let outcome = cli(&nameserver, admin, args);
        assert!(outcome.0, "{args:?}: {}{}", outcome.1, outcome.2);
        outcome.1
    };
    for topic in ["acl-http-open", "acl-http-closed"] {
        run(&["topic", "create", topic, "--queues", "1"]);
        run(&[
            "produce",
            "--topic",
            topic,
            "--key",
            &format!("key-{topic}"),
            "--body",
            topic,
        ]);
    }
    let carol_secret = exported(&run(&["user", "create", "carol"]), "MERIDIAN_SECRET");
    run(&["acl", "grant", "user:carol", "SQL,TRACE", "topic:acl-http-open"]);
    let admin_basic = meridian_proto::http_auth::basic_authorization("admin", &admin_secret);
    let carol_basic = meridian_proto::http_auth::basic_authorization("carol", &carol_secret);

    // The super user sees both messages once they are stored and traced.
    let both = "SELECT topic FROM messages WHERE topic LIKE 'acl-http-%' ORDER BY topic";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, rows) = sql_rows(&http_addr, &admin_basic, both).await;
        if status == 200 && rows.len() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "admin never saw both messages: {status} {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let traced = |key: &'static str, authorization: String| {
        let http_addr = http_addr.clone();
        async move {
            let (status, _, body) = http(
                &http_addr,
                "GET",
                &format!("/api/traces?key={key}"),
                &[("Authorization", authorization.as_str())],
                "",
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let page: serde_json::Value = serde_json::from_str(&body).unwrap();
            page["messages"].as_array().map_or(0, Vec::len)
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while traced("key-acl-http-closed", admin_basic.clone()).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed topic's message was never traced"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Carol may read one topic: every shape of query answers over that topic only.
    for sql in [
        both,
        "SELECT topic FROM messages WHERE topic = 'acl-http-closed'",
        "SELECT topic FROM messages WHERE topic LIKE 'acl-http-%' UNION ALL SELECT topic FROM live_messages WHERE topic = 'acl-http-closed'",
        "SELECT topic FROM (SELECT * FROM messages) AS inner_messages WHERE topic LIKE 'acl-http-%'",
    ] {
        let (status, rows) = sql_rows(&http_addr, &carol_basic, sql).await;
        assert_eq!(status, 200, "{sql}");
        assert!(
            rows.iter().all(|row| row.to_string().contains("acl-http-open")),
            "{sql}: carol saw another topic's rows: {rows:?}"
        );
    }
    let (_, rows) = sql_rows(&http_addr, &carol_basic, both).await;
    assert_eq!(rows.len(), 1, "carol sees the topic she may read: {rows:?}");
    assert_eq!(traced("key-acl-http-open", carol_basic.clone()).await, 1);
    assert_eq!(traced("key-acl-http-closed", carol_basic.clone()).await, 0);
    drop(node);
    let _ = std::fs::remove_dir_all(&data_dir);
}

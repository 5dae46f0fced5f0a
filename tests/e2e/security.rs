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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_dev_auth_refuses_strangers_and_audits_admins() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
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
        "--no-archive",
        "--data-dir",
    ]
    .iter()
    .map(std::ffi::OsStr::new)
    .chain([data_dir.as_os_str()])
    .collect();
    let node = ServiceProcess::start_logging(&args, dir.path(), |line| line.starts_with("ready"), Some("debug"));
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

fn start_dev_auth(dir: &Path) -> (ServiceProcess, String, String) {
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
        "--no-archive",
        "--data-dir",
    ]
    .iter()
    .map(std::ffi::OsStr::new)
    .chain([data_dir.as_os_str()])
    .collect();
    let node = ServiceProcess::start_logging(&args, dir, |line| line.starts_with("ready"), None);
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

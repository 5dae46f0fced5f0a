//! `meridian inspect health` against real processes: a `meridian dev` node passes every check,
//! the canary included, and exits 0; a second broker group (its own `meridian broker` process)
//! killed with `kill -9` makes it exit 1 naming that group.

use std::time::Duration;

use meridian_tests::{DevNode, eventually};

/// `meridian inspect health ARGS` against `node`'s nameserver and HTTP API.
fn inspect(node: &DevNode, args: &[&str]) -> (bool, String, String) {
    let http = node.http.to_string();
    let mut all = vec!["inspect", "health", "--http", &http];
    all.extend_from_slice(args);
    node.cli(&all, "")
}

/// The machine running the tests may have little disk free: that is not what these tests check.
const DISK: [&str; 4] = ["--min-disk-free-pct", "0.01", "--warn-disk-free-pct", "0.01"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_node_passes_every_check_and_the_canary_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic("meridian-canary", 1).await;
    node.create_group("meridian-canary", &["meridian-canary"]).await;

    // The broker's rates exist once it has sampled twice (every 2 s).
    let mut last = (false, String::new(), String::new());
    let passed = eventually(Duration::from_secs(20), || {
        last = inspect(&node, &[&DISK[..], &["--canary"]].concat());
        last.0 && !last.1.contains("WARN ")
    })
    .await;
    let (ok, stdout, stderr) = last;
    assert!(
        passed && ok,
        "inspect health fails on a healthy dev node:\n{stdout}{stderr}"
    );
    for check in [
        "nameserver ",
        "nameservers ",
        "raft ",
        "master ",
        "broker ",
        "groups ",
        "slaves ",
        "idc ",
        "broker health ",
        "write tps ",
        "read tps ",
        "disk free ",
        "canary ",
    ] {
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with("PASS") && line.contains(check)),
            "no passing {check:?} check:\n{stdout}"
        );
    }
    assert!(stdout.contains("consumed back in"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");

    let (ok, json, stderr) = inspect(&node, &[&DISK[..], &["--canary", "--json"]].concat());
    assert!(ok, "{json}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(report["fail"], 0, "{json}");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|check| check["check"] == "canary" && check["status"] == "PASS"),
        "{json}"
    );

    // A threshold no disk meets fails the check, and the command with it.
    let (ok, stdout, stderr) = inspect(&node, &["--min-disk-free-pct", "100", "--warn-disk-free-pct", "100"]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("FAIL") && line.contains("disk free")),
        "{stdout}"
    );
    assert!(stderr.contains("health check(s) failed: disk free"), "{stderr}");
    // A canary topic nobody approved fails the canary, naming the group.
    let (ok, stdout, _) = inspect(
        &node,
        &[&DISK[..], &["--canary", "--canary-topic", "no-such-topic"]].concat(),
    );
    assert!(!ok, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("FAIL") && line.contains("canary") && line.contains("broker-")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_group_fails_the_inspection_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let node = DevNode::start(&root.join("dev"), &[]);
    let config = root.join("broker-b.toml");
    std::fs::write(
        &config,
        format!(
            "broker_name = \"broker-b\"\nlisten = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nnameservers = [\"{}\"]\nheartbeat_interval_ms = 200\n\n[store]\nsegment_size = 67108864\n\n[replication]\nreplicas = 1\n",
            root.join("broker-b").display(),
            node.nameserver
        ),
    )
    .unwrap();
    let (broker_b, _, broker_b_http) = meridian_tests::start_broker(&config, root);
    let broker_b_http = broker_b_http.expect("the broker serves HTTP").to_string();
    let brokers_http = format!("{},{broker_b_http}", node.http);
    let args = [&DISK[..], &["--broker-http", &brokers_http]].concat();

    let mut last = (false, String::new(), String::new());
    let both_up = eventually(Duration::from_secs(20), || {
        last = inspect(&node, &args);
        last.0
            && last.1.contains("broker-b/")
            && last
                .1
                .lines()
                .any(|line| line.starts_with("PASS") && line.contains("master") && line.contains("broker-b"))
    })
    .await;
    assert!(both_up, "two live groups should pass:\n{}{}", last.1, last.2);

    broker_b.kill9();
    let failed = eventually(Duration::from_secs(20), || {
        last = inspect(&node, &args);
        !last.0
            && last
                .1
                .lines()
                .any(|line| line.starts_with("FAIL") && line.contains("master") && line.contains("broker-b"))
    })
    .await;
    let (_, stdout, stderr) = last;
    assert!(
        failed,
        "a killed broker-b should fail the inspection:\n{stdout}{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("FAIL") && line.contains("broker health") && line.contains(&broker_b_http)),
        "{stdout}"
    );
    assert!(stderr.contains("master broker-b"), "{stderr}");
    // broker-a is untouched.
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("PASS") && line.contains("master") && line.contains("broker-a")),
        "{stdout}"
    );
}

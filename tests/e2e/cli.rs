//! The `meridian` CLI against a running node: what a user types in the README.

use std::process::Command;

use meridian_tests::{DevNode, meridian_bin};

fn meridian(node: &DevNode, args: &[&str], stdin: &str) -> (bool, String, String) {
    node.cli(args, stdin)
}

#[test]
fn produce_and_consume_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    let (ok, stdout, stderr) = meridian(&node, &["topic", "create", "greetings", "--queues", "2"], "");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("topic greetings ready with 2 queues"), "{stdout}");
    let (ok, stdout, stderr) = meridian(&node, &["group", "create", "readers", "--topics", "greetings"], "");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("consumer group readers ready on greetings"), "{stdout}");

    let (ok, stdout, stderr) = meridian(
        &node,
        &["produce", "--topic", "greetings", "--key", "k1", "--tag", "hello"],
        "hi\nthere\n",
    );
    assert!(ok, "{stderr}");
    let ids: Vec<&str> = stdout.lines().collect();
    assert_eq!(ids.len(), 2, "one msgId per line of stdin: {stdout}");
    assert!(
        ids.iter().all(|id| meridian_proto::MessageId::parse(id).is_ok()),
        "{stdout}"
    );
    let (ok, stdout, _) = meridian(
        &node,
        &["produce", "--topic", "greetings", "--mode", "oneway", "--body", "fire"],
        "",
    );
    assert!(
        ok && meridian_proto::MessageId::parse(stdout.trim()).is_ok(),
        "one-way sends print their msgId: {stdout}"
    );

    let (ok, stdout, stderr) = meridian(
        &node,
        &[
            "consume",
            "--topic",
            "greetings",
            "--group",
            "readers",
            "--from-beginning",
            "--max",
            "3",
            "--timeout",
            "10",
            "--json",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for id in &ids {
        let line = lines
            .iter()
            .find(|line| line.contains(id))
            .unwrap_or_else(|| panic!("{id} not consumed: {stdout}"));
        assert!(
            line.contains(r#""keys":["k1"]"#) && line.contains(r#""tag":"hello""#),
            "{line}"
        );
    }

    let (ok, _, stderr) = meridian(&node, &["produce", "--topic", "bad/topic", "--body", "x"], "");
    assert!(!ok);
    assert!(
        stderr.contains(r#"topic name "bad/topic" is invalid: only [A-Za-z0-9_-], at most 127 chars"#),
        "{stderr}"
    );
    let (ok, _, stderr) = meridian(&node, &["produce", "--topic", "missing", "--body", "x"], "");
    assert!(!ok);
    assert!(
        stderr.contains("meridian topic request missing --owner TEAM"),
        "{stderr}"
    );
    node.stop();
}

#[test]
fn a_bad_config_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "broker_name = \"b\"\n[store]\nflush_mod = \"sync\"\n").unwrap();
    let output = Command::new(meridian_bin())
        .args(["broker", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("flush_mod"),
        "the error names the unknown key: {stderr}"
    );
}

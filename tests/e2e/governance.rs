//! Governance on a `meridian dev` node: topics and consumer groups must be requested and approved
//! before use, the refusals say what to do, and approvals take effect without restarting anything.

use std::time::{Duration, Instant};

use meridian_tests::DevNode;

/// Runs a CLI command until it succeeds, up to `within`; returns its stdout, or panics with the
/// last failure.
fn until_ok(node: &DevNode, args: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (ok, stdout, stderr) = node.cli(args, "");
        if ok {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} kept failing for {within:?}: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn topics_and_groups_work_only_once_approved_and_every_decision_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);

    // Unknown topic: the error names it and how to request it.
    let (ok, _, stderr) = node.cli(&["produce", "--topic", "orders", "--body", "x"], "");
    assert!(!ok);
    assert!(
        stderr.contains(
            "topic \"orders\" does not exist: request it with `meridian topic request orders --owner TEAM --queues N`"
        ),
        "{stderr}"
    );
    // No broker-side auto-create either: the broker refuses the admin shortcut of a standalone broker.
    let (ok, stdout, stderr) = node.cli(
        &[
            "topic", "request", "orders", "--owner", "shop", "--queues", "2", "--by", "alice",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("topic orders requested"), "{stdout}");

    // Requested, not approved: refused with its status and who approves.
    let (ok, _, stderr) = node.cli(&["produce", "--topic", "orders", "--body", "x"], "");
    assert!(!ok);
    assert!(
        stderr.contains("topic \"orders\" was requested by alice at ")
            && stderr.contains("is not approved yet: an admin approves it with `meridian topic approve orders`"),
        "{stderr}"
    );

    let (ok, _, stderr) = node.cli(
        &["topic", "approve", "orders", "--by", "bob", "--reason", "owner known"],
        "",
    );
    assert!(ok, "{stderr}");
    // The broker learns the approval on its next heartbeat; no restart.
    let sent = until_ok(
        &node,
        &["produce", "--topic", "orders", "--body", "first"],
        Duration::from_secs(10),
    );
    assert!(meridian_proto::MessageId::parse(sent.trim()).is_ok(), "{sent}");

    // A consumer group: unknown, then requested, then approved.
    let consume = [
        "consume",
        "--topic",
        "orders",
        "--group",
        "billing",
        "--from-beginning",
        "--max",
        "1",
        "--timeout",
        "10",
    ];
    let (ok, _, stderr) = node.cli(&consume, "");
    assert!(!ok);
    assert!(
        stderr.contains("consumer group \"billing\" is not approved"),
        "{stderr}"
    );
    assert!(stderr.contains("meridian group request billing"), "{stderr}");
    let (ok, _, stderr) = node.cli(
        &[
            "group", "request", "billing", "--owner", "shop", "--topics", "orders", "--by", "carol",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = node.cli(&consume, "");
    assert!(!ok, "a requested group is not approved");
    assert!(
        stderr.contains("consumer group \"billing\" is not approved"),
        "{stderr}"
    );
    let (ok, _, stderr) = node.cli(&["group", "approve", "billing", "--by", "bob"], "");
    assert!(ok, "{stderr}");
    let consumed = until_ok(&node, &consume, Duration::from_secs(10));
    assert!(consumed.contains("first"), "{consumed}");

    // A rejected topic: refused with who rejected it and why.
    let (ok, _, stderr) = node.cli(
        &[
            "topic", "request", "spam", "--owner", "growth", "--queues", "1", "--by", "dave",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = node.cli(
        &[
            "topic",
            "reject",
            "spam",
            "--by",
            "bob",
            "--reason",
            "use the marketing topic",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = node.cli(&["produce", "--topic", "spam", "--body", "x"], "");
    assert!(!ok);
    assert!(
        stderr.contains("topic \"spam\" was rejected by bob at ") && stderr.contains("(use the marketing topic)"),
        "{stderr}"
    );
    // Approving it now is refused, and changes nothing.
    let (ok, _, stderr) = node.cli(&["topic", "approve", "spam", "--by", "mallory"], "");
    assert!(!ok);
    assert!(
        stderr.contains("cannot approve topic \"spam\": it was rejected by bob"),
        "{stderr}"
    );

    // Every decision is in the history: who, what, why.
    let (ok, history, stderr) = node.cli(&["topic", "history", "orders"], "");
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(
        lines[0].contains("requested") && lines[0].contains("alice"),
        "{history}"
    );
    assert!(
        lines[1].contains("approved") && lines[1].contains("bob") && lines[1].contains("owner known"),
        "{history}"
    );
    let (ok, history, _) = node.cli(&["topic", "history", "spam"], "");
    assert!(ok && history.lines().count() == 3, "{history}");
    let (ok, listed, _) = node.cli(&["topic", "list", "--status", "approved"], "");
    assert!(ok && listed.contains("orders") && !listed.contains("spam"), "{listed}");
    let (ok, described, _) = node.cli(&["topic", "describe", "orders"], "");
    assert!(ok, "{described}");
    assert!(described.contains("status       approved"), "{described}");
    assert!(
        described.contains("alive"),
        "the route shows the broker alive: {described}"
    );
    node.stop();
}

/// `approve` returns only once the broker applied the decision: a send (and a consume) right
/// after it succeeds, every time; the window in which it used to fail was about half a second.
#[test]
fn sends_and_consumes_right_after_approve_succeed_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    for round in 0..20 {
        let topic = format!("approved-{round}");
        let group = format!("readers-{round}");
        let (ok, _, stderr) = node.cli(&["topic", "request", &topic, "--owner", "shop", "--queues", "1"], "");
        assert!(ok, "{stderr}");
        let (ok, stdout, stderr) = node.cli(&["topic", "approve", &topic], "");
        assert!(ok && stdout.contains("approved"), "{stdout}{stderr}");
        let (ok, stdout, stderr) = node.cli(&["produce", "--topic", &topic, "--body", "right after"], "");
        assert!(ok, "round {round}: produce right after approve failed: {stderr}");
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let (ok, _, stderr) = node.cli(&["group", "request", &group, "--owner", "shop", "--topics", &topic], "");
        assert!(ok, "{stderr}");
        let (ok, _, stderr) = node.cli(&["group", "approve", &group], "");
        assert!(ok, "{stderr}");
        let (ok, stdout, stderr) = node.cli(
            &[
                "consume",
                "--topic",
                &topic,
                "--group",
                &group,
                "--from-beginning",
                "--max",
                "1",
                "--timeout",
                "5",
            ],
            "",
        );
        assert!(
            ok && stdout.contains("right after"),
            "round {round}: consume right after approve: {stdout}{stderr}"
        );
    }
    node.stop();
}

/// Where `USER` is unset (containers), requests and decisions record the OS account's name.
#[test]
fn who_acted_falls_back_to_the_os_account_when_user_is_unset() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    let account = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("running id -un");
    let account = String::from_utf8(account.stdout).unwrap().trim().to_owned();
    assert!(!account.is_empty());
    let output = std::process::Command::new(meridian_tests::meridian_bin())
        .args(["topic", "request", "no-user", "--owner", "shop", "--queues", "1"])
        .env("MERIDIAN_NAMESERVER", node.nameserver.to_string())
        .env_remove("USER")
        .env_remove("MERIDIAN_USER")
        .output()
        .expect("running meridian");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let (ok, history, stderr) = node.cli(&["topic", "history", "no-user"], "");
    assert!(ok, "{stderr}");
    let requested = history
        .lines()
        .find(|line| line.contains("requested"))
        .expect("a request line");
    assert!(requested.contains(&account), "expected {account:?} in {history}");
    node.stop();
}

//! What a new user meets in the first hour with `meridian dev`: SQL sees the messages just sent,
//! client commands print no warnings, a restart logs no error, relative delays work, and
//! `meridian sql`/`trace`/`env` find their services through the nameserver alone.

use std::time::{Duration, Instant};

use meridian_tests::DevNode;

/// Runs `args` until `check` accepts its stdout, up to `within`; returns that stdout.
fn until(node: &DevNode, args: &[&str], within: Duration, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (ok, stdout, stderr) = node.cli(args, "");
        if ok && check(&stdout) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} not as expected within {within:?}: {stdout}{stderr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SQL in `meridian dev` answers from the archive plus the live log: messages are in `messages`
/// as soon as they are stored, though no segment is archived; an empty answer and an archive run
/// that finds nothing say why.
#[test]
fn sql_in_dev_sees_messages_as_soon_as_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.cli(&["topic", "create", "orders", "--queues", "2"], "");
    let (ok, stdout, stderr) = node.cli(
        &["produce", "--topic", "orders", "--key", "order-42"],
        "first\nsecond\nthird\n",
    );
    assert!(ok, "{stderr}");
    let ids: Vec<&str> = stdout.lines().collect();
    assert_eq!(ids.len(), 3);
    assert!(
        stderr.is_empty(),
        "client commands against dev print no warning: {stderr}"
    );

    // Only MERIDIAN_NAMESERVER is set: `meridian sql` asks the nameserver where the query service is.
    let stdout = until(
        &node,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT msg_id, CAST(body AS VARCHAR) AS body FROM messages WHERE topic = 'orders' ORDER BY body",
        ],
        Duration::from_secs(5),
        |stdout| stdout.lines().count() == 4,
    );
    for id in &ids {
        assert!(stdout.contains(id), "{id} missing from {stdout}");
    }
    assert!(stdout.contains(",first\n") && stdout.contains(",third\n"), "{stdout}");
    // Exactly once each (no duplicate between the archive and the live log).
    let (ok, stdout, stderr) = node.cli(
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT msg_id) AS ids FROM messages WHERE topic = 'orders'",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "n,ids\n3,3\n");

    let (ok, _, stderr) = node.cli(&["sql", "SELECT * FROM messages WHERE topic = 'nothing-here'"], "");
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("note: no rows:") && stderr.contains("live log of broker broker-a"),
        "{stderr}"
    );
    let broker_dir = dir.path().join("broker").display().to_string();
    let (ok, stdout, stderr) = node.cli(&["archive", "run", "--now", "--data-dir", &broker_dir], "");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("archived 0 segment(s)")
            && stdout.contains("nothing to archive: ")
            && stdout.contains("still being written"),
        "{stdout}"
    );
    node.stop();
}

/// A normal restart of `meridian dev` logs no ERROR (openraft's complaint about initializing a
/// formed cluster was one), and dependency logs stay at WARN unless `--log` says otherwise.
#[test]
fn a_restart_of_dev_logs_no_error_and_dependencies_stay_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.stop();
    let node = DevNode::start_quiet(dir.path());
    node.cli(&["topic", "create", "after-restart", "--queues", "1"], "");
    let log = node.log();
    node.stop();
    let errors: Vec<&str> = log.lines().filter(|line| line.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "a normal restart logged errors: {errors:?}");
    assert!(!log.contains("openraft"), "openraft logs at INFO by default: {log}");
    assert!(
        log.contains("nameserver raft started"),
        "meridian's own INFO lines stay: {log}"
    );
}

/// `--delay 5s` and `--deliver-at +5s` hold a message back that long; out of bounds is refused
/// with the SDK's limit.
#[test]
fn produce_takes_relative_delays() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.cli(&["topic", "create", "later", "--queues", "1"], "");
    node.cli(&["group", "create", "waiters", "--topics", "later"], "");
    let sent = Instant::now();
    let (ok, _, stderr) = node.cli(
        &["produce", "--topic", "later", "--body", "by delay", "--delay", "3s"],
        "",
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = node.cli(
        &[
            "produce",
            "--topic",
            "later",
            "--body",
            "by deliver-at",
            "--deliver-at",
            "+3s",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = node.cli(
        &[
            "consume",
            "--topic",
            "later",
            "--group",
            "waiters",
            "--from-beginning",
            "--max",
            "2",
            "--timeout",
            "15",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("by delay") && stdout.contains("by deliver-at"),
        "{stdout}"
    );
    assert!(
        sent.elapsed() >= Duration::from_secs(3),
        "delivered early: {:?}",
        sent.elapsed()
    );

    let (ok, _, stderr) = node.cli(&["produce", "--topic", "later", "--body", "x", "--delay", "31d"], "");
    assert!(!ok);
    assert!(
        stderr.contains("delay \"31d\" is invalid: 31.0 days ahead, over the limit of 30 days"),
        "{stderr}"
    );
    let (ok, _, stderr) = node.cli(
        &[
            "produce",
            "--topic",
            "later",
            "--body",
            "x",
            "--deliver-at",
            "+5 parsecs",
        ],
        "",
    );
    assert!(!ok);
    assert!(stderr.contains("not a duration"), "{stderr}");
    node.stop();
}

/// `meridian env` prints what a client needs, and `meridian trace` finds the tracer through the
/// nameserver.
#[test]
fn env_and_trace_find_services_through_the_nameserver() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    let (ok, stdout, stderr) = node.cli(&["env"], "");
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "export MERIDIAN_NAMESERVER={}\nexport MERIDIAN_TRACER={}\nexport MERIDIAN_QUERY=http://{}\n",
            node.nameserver, node.http, node.http
        )
    );
    node.cli(&["topic", "create", "traced", "--queues", "1"], "");
    let (ok, stdout, _) = node.cli(&["produce", "--topic", "traced", "--body", "x"], "");
    assert!(ok);
    let id = stdout.trim().to_owned();
    let stdout = until(&node, &["trace", &id], Duration::from_secs(20), |stdout| {
        stdout.contains("Store")
    });
    assert!(stdout.contains(&format!("msgId {id}")), "{stdout}");
    node.stop();
}

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

/// `meridian sql` as a shell over a real query service. Piped statements may span lines, an
/// error names its position and the statements after it still run, the exit status says that one
/// failed, and nothing goes to the history. On a terminal (a pty made by script(1)) the up arrow
/// brings back the last statement, in the same session and, from ~/.meridian_sql_history, in the
/// next one.
#[test]
fn the_sql_shell_runs_piped_statements_and_recalls_history_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive").display().to_string();
    let (ok, _, stderr) = meridian_tests::run_cli(
        &["bench", "archive-gen", "--store", &archive, "--messages", "1000"],
        &[],
        "",
    );
    assert!(ok, "{stderr}");
    let args = ["query", "--store", &archive, "--listen", "127.0.0.1:0"].map(std::ffi::OsStr::new);
    let query = meridian_tests::ServiceProcess::start(&args, dir.path(), |line| line.starts_with("ready"));
    let server = format!(
        "http://{}",
        query.address("http").expect("banner names the http address")
    );
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let home_var = home.display().to_string();
    let history = home.join(".meridian_sql_history");

    let (ok, stdout, stderr) = meridian_tests::run_cli(
        &["sql", "--server", &server, "--format", "csv"],
        &[("HOME", &home_var)],
        "SELECT count(*) AS n\n  FROM messages;\nSELEC 1;\nSELECT 2 AS two;\n",
    );
    assert!(!ok, "a failed statement fails the run: {stdout}{stderr}");
    assert_eq!(stdout, "n\n1000\ntwo\n2\n", "{stderr}");
    assert!(
        stderr.contains("SELEC 1\n  ^") && stderr.contains("1 statements failed"),
        "{stderr}"
    );
    assert!(!history.exists(), "piped statements are not history");

    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("script(1) (util-linux) is not installed: the terminal half of this test is skipped");
        return;
    }
    // On a terminal: a statement, then up arrow + Enter runs it again; Ctrl-D ends the session.
    let command = format!("{} sql --server {server} --format csv", meridian_bin().display());
    let session = |steps: &[(&str, &str)]| on_terminal(&command, &home, steps);
    let output = session(&[
        ("sql> ", "SELECT 41 + 1 AS answer;\r"),
        ("answer\n42\n", "\x1b[A\r"),
        ("answer\n42\n", "\x04"),
    ]);
    assert_eq!(
        output.matches("answer\n42\n").count(),
        2,
        "run, then recalled and run again: {output:?}"
    );
    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(kept.contains("SELECT 41 + 1 AS answer;"), "{kept}");
    let output = session(&[("sql> ", "\x1b[A\r"), ("answer\n42\n", "\x04")]);
    assert_eq!(
        output.matches("answer\n42\n").count(),
        1,
        "recalled from the history file: {output:?}"
    );
    query.stop();
}

/// Runs `command` on a pseudo-terminal (script(1)) with `HOME` set: for each step, waits until the
/// output since the previous step holds its text, then types its keys. Returns the whole output,
/// without carriage returns.
fn on_terminal(command: &str, home: &std::path::Path, steps: &[(&str, &str)]) -> String {
    use std::io::{Read, Write};
    let mut child = Command::new("script")
        .args(["-qefc", command, "/dev/null"])
        .env("HOME", home)
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running script(1)");
    let mut stdout = child.stdout.take().unwrap();
    let (bytes_tx, bytes_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(read) = stdout.read(&mut buffer) {
            if read == 0 || bytes_tx.send(buffer[..read].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut output = String::new();
    let mut seen = 0;
    for (wait_for, keys) in steps {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !output[seen..].replace('\r', "").contains(wait_for) {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            match bytes_rx.recv_timeout(remaining) {
                Ok(bytes) => output.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("waited 30 s for {wait_for:?} on the terminal; it shows {output:?}"),
            }
        }
        seen = output.len();
        stdin.write_all(keys.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    drop(stdin);
    let status = child.wait().unwrap();
    while let Ok(bytes) = bytes_rx.recv_timeout(std::time::Duration::from_secs(5)) {
        output.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert!(
        status.success(),
        "{command} on a terminal exited with {status}: {output:?}"
    );
    output.replace('\r', "")
}

/// A standalone broker (no nameservers) gets its topics with `topic create --broker`, and its
/// refusal of an unknown topic says so.
#[test]
fn a_standalone_broker_gets_topics_with_topic_create_broker() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "broker_name = \"solo\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let args = ["broker".as_ref(), "--config".as_ref(), config.as_os_str()];
    let broker = meridian_tests::ServiceProcess::start(&args, dir.path(), |line| line.contains("listening on"));
    let addr = broker.banner[0].rsplit(' ').next().expect("an address").to_owned();

    let (ok, _, stderr) = meridian_tests::run_cli(
        &["produce", "--broker", &addr, "--topic", "solo-t", "--body", "x"],
        &[],
        "",
    );
    assert!(!ok);
    assert!(
        stderr.contains("meridian topic create solo-t --queues N --broker HOST:PORT"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = meridian_tests::run_cli(
        &["topic", "create", "solo-t", "--queues", "2", "--broker", &addr],
        &[],
        "",
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        format!("topic solo-t ready with 2 queues on the standalone broker at {addr}\n")
    );
    let (ok, stdout, stderr) = meridian_tests::run_cli(
        &["produce", "--broker", &addr, "--topic", "solo-t", "--body", "x"],
        &[],
        "",
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    broker.stop();
}

//! `meridian cluster up|status|kill|restart|down` on the seed's two-IDC topology (three
//! nameservers, two broker groups of three, an archiver per broker, the tracer, the query service, the console: 18 processes):
//! produce and consume with a `quorum` and an `idc_safe` group while a master is killed and
//! another is partitioned, every acknowledged message is consumed afterwards, and `down` leaves
//! no process or port behind. Bad specs are refused before anything starts.

use std::time::{Duration, Instant};

use meridian_client::{ClientConfig, ConnectionPool};
use meridian_tests::faults::{
    ClusterOptions, Link, LinkProxy, Load, LocalCluster, lost_and_duplicated, process_runs_from,
};

use crate::read_holding;

/// Runs a blocking CLI call without starving the runtime that carries the proxies' traffic.
fn blocking<T>(call: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(call)
}

/// Every address of `cluster` can be listened on again.
fn every_port_free(cluster: &LocalCluster) -> Vec<String> {
    cluster
        .nodes
        .iter()
        .flat_map(|(name, node)| {
            [node.listen, node.http]
                .into_iter()
                .flatten()
                .map(move |addr| (name, addr))
        })
        .filter(|(_, addr)| std::net::TcpListener::bind(addr).is_err())
        .map(|(name, addr)| format!("{name} {addr}"))
        .collect()
}

async fn wait_acks_resume(load: &Load, topic: &str, since: Instant, what: &str) {
    wait_acks(load, topic, since, 1, what).await;
}

/// Waits (up to 20 s) until `count` sends to `topic` begun at or after `since` are acknowledged.
async fn wait_acks(load: &Load, topic: &str, since: Instant, count: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while load.record.count_since(topic, since) < count {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {count} sends to {topic} acknowledged within 20 s",
            load.record.count_since(topic, since)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_two_idc_cluster_comes_up_in_one_command_survives_a_killed_master_and_a_partition_and_goes_down_leaving_nothing()
 {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::layout(
        root.path(),
        160,
        ClusterOptions {
            ui: true,
            ..ClusterOptions::default()
        },
    );
    // b-0, the master of the idc_safe group, is reached by clients and slaves, and reaches the
    // nameservers, only through proxies: cutting them partitions it without killing it.
    let to_b0 = LinkProxy::start("127.0.0.180:0", cluster.nodes["b-0"].listen.unwrap()).await;
    let mut b0_to_nameservers = Vec::new();
    for (index, nameserver) in cluster.nameservers.clone().into_iter().enumerate() {
        b0_to_nameservers.push(LinkProxy::start(&format!("127.0.0.{}:0", 181 + index), nameserver).await);
    }
    let via: Vec<String> = b0_to_nameservers
        .iter()
        .map(|proxy| format!("\"{}\"", proxy.addr()))
        .collect();
    cluster.options.member_overrides.insert(
        "b-0".into(),
        format!(
            "{{ advertise_addr = \"{}\", nameservers = [{}] }}",
            to_b0.addr(),
            via.join(", ")
        ),
    );

    let stdout = blocking(|| cluster.up());
    assert!(
        stdout.contains("starting cluster e2e-two-idc: 18 processes"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|line| line == "ready"), "{stdout}");
    let pids = cluster.pids();
    assert_eq!(pids.len(), 18, "{pids:?}");

    let status = blocking(|| cluster.status());
    let processes = status["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 18);
    assert!(
        processes.iter().all(|process| process["healthy"] == true),
        "{processes:#?}"
    );
    let role = |name: &str| {
        processes.iter().find(|process| process["name"] == name).unwrap()["role"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        (role("a-0"), role("b-0"), role("a-2"), role("b-2")),
        ("master".into(), "master".into(), "slave".into(), "slave".into())
    );
    let leaders: Vec<&str> = processes
        .iter()
        .filter_map(|process| process["role"].as_str())
        .filter(|role| *role == "leader")
        .collect();
    assert_eq!(leaders.len(), 1, "one Raft leader");
    assert_eq!(status["brokers"].as_array().unwrap().len(), 2);
    let (ok, text, stderr) = blocking(|| cluster.cli(&["cluster", "status"]));
    assert!(ok, "{stderr}");
    assert!(
        text.contains("18 of 18 processes running, 18 healthy") && text.contains("raft leader: ns-"),
        "{text}"
    );
    assert!(
        text.contains("broker-b epoch 1, master b-0, in sync: b-1, b-2"),
        "{text}"
    );
    // The console answers its Overview, reading the nameservers and brokers `cluster up` gave it.
    let console = cluster.nodes["ui"].http.unwrap();
    assert!(stdout.contains(&format!("console: http://{console}/")), "{stdout}");
    let page = blocking(|| meridian_tests::http_get_text(console, "/"))
        .expect("the console answers / with 200 (its Overview)");
    assert!(
        page.contains("data-idc=\"dc1\"") && page.contains("data-idc=\"dc2\""),
        "{page}"
    );
    // The query service answers SQL over the archivers' store.
    let query = format!("http://{}", cluster.nodes["query"].http.unwrap());
    let (ok, text, stderr) = blocking(|| {
        cluster.cli(&[
            "sql",
            "--server",
            &query,
            "--format",
            "csv",
            "SELECT count(*) AS archived FROM messages",
        ])
    });
    assert!(ok && text.starts_with("archived\n"), "{text}{stderr}");
    // With only MERIDIAN_NAMESERVER, clients find the query service and the tracer through the
    // nameservers; `cluster up` printed every variable, and `meridian env` prints them again.
    let tracer = cluster.nodes["tracer"].http.unwrap().to_string();
    assert!(
        stdout.contains(&format!("  export MERIDIAN_QUERY={query}\n"))
            && stdout.contains(&format!("  export MERIDIAN_TRACER={tracer}\n")),
        "{stdout}"
    );
    let (ok, text, stderr) =
        blocking(|| cluster.cli(&["sql", "--format", "csv", "SELECT count(*) AS archived FROM messages"]));
    assert!(ok && text.starts_with("archived\n"), "{text}{stderr}");
    let (ok, text, stderr) = blocking(|| cluster.cli(&["env"]));
    assert!(
        ok && text.contains(&format!("export MERIDIAN_QUERY={query}\n"))
            && text.contains(&format!("export MERIDIAN_TRACER={tracer}\n"))
            && text.contains(&format!("export MERIDIAN_NAMESERVER={}\n", cluster.nameserver_list())),
        "{text}{stderr}"
    );
    // A second `up` on a running cluster is refused.
    let spec = cluster.spec_path.display().to_string();
    let (ok, _, stderr) = blocking(|| cluster.cli(&["cluster", "up", "--config", &spec]));
    assert!(
        !ok && stderr.contains("is already running (18 of 18 processes"),
        "{stderr}"
    );

    for args in [
        &["topic", "create", "orders", "--queues", "4", "--on", "broker-a"][..],
        &["topic", "create", "payments", "--queues", "4", "--on", "broker-b"],
        &["group", "create", "readers", "--topics", "orders,payments"],
    ] {
        let (ok, _, stderr) = blocking(|| cluster.cli(args));
        assert!(ok, "{args:?}: {stderr}");
    }

    let pool = ConnectionPool::new(ClientConfig::default());
    let started = Instant::now();
    let load = Load::start(cluster.route(&pool), &["orders", "payments"], 2, 8);
    for topic in ["orders", "payments"] {
        wait_acks(&load, topic, started, 50, "before the faults").await;
    }

    // kill -9 of the quorum group's master: a slave takes over, sends resume.
    blocking(|| cluster.kill9("a-0"));
    let killed = Instant::now();
    let (new_a, epoch) = blocking(|| cluster.wait_master(&["a-1", "a-2"], Duration::from_secs(20)));
    assert_eq!(epoch, 2);
    wait_acks_resume(&load, "orders", Instant::now(), "after the kill of a-0").await;
    eprintln!("a-0 killed: {new_a} is master after {:?}", killed.elapsed());

    // Partition of the idc_safe group's master: it is fenced, a slave takes over.
    to_b0.set(Link::Cut);
    for proxy in &b0_to_nameservers {
        proxy.set(Link::Cut);
    }
    let cut = Instant::now();
    let (new_b, _) = blocking(|| cluster.wait_master(&["b-1", "b-2"], Duration::from_secs(20)));
    wait_acks_resume(&load, "payments", Instant::now(), "after the partition of b-0").await;
    eprintln!("b-0 partitioned: {new_b} is master after {:?}", cut.elapsed());
    let resumed = Instant::now();
    wait_acks(&load, "payments", resumed, 10, "on the new master of broker-b").await;
    let record = load.finish().await;

    // Heal and restart: both old masters rejoin as slaves.
    to_b0.set(Link::Up);
    for proxy in &b0_to_nameservers {
        proxy.set(Link::Up);
    }
    blocking(|| cluster.restart("a-0"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !blocking(|| cluster.fully_healthy()) {
        assert!(
            Instant::now() < deadline,
            "the cluster did not recover: {:#}",
            blocking(|| cluster.status())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(cluster.role("a-0").unwrap().0, "slave");
    assert_eq!(cluster.role("b-0").unwrap().0, "slave");

    // Every acknowledged message is consumed.
    for topic in ["orders", "payments"] {
        let acked = record.ids(topic);
        let stored = read_holding(cluster.route(&pool), "readers", topic, &acked).await;
        let (lost, duplicates) = lost_and_duplicated(&acked, stored.iter().map(|message| message.msg_id()));
        assert!(
            lost.is_empty(),
            "{topic}: {} of {} acknowledged messages lost, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
        eprintln!("{topic}: {} acknowledged, 0 lost, {duplicates} duplicates", acked.len());
    }
    pool.shutdown().await;

    // Down: every process gone, every port free, nothing left for Drop to kill.
    let pids = cluster.pids();
    let (ok, stdout, stderr) = blocking(|| cluster.cli(&["cluster", "down"]));
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("18 process(es) stopped, every port free"), "{stdout}");
    let left: Vec<&(String, u32)> = pids
        .iter()
        .filter(|(_, pid)| process_runs_from(*pid, &cluster.dir))
        .collect();
    assert!(left.is_empty(), "still running after down: {left:?}");
    assert!(cluster.pids().is_empty(), "pid files removed");
    assert_eq!(every_port_free(&cluster), Vec::<String>::new());
    let (ok, text, _) = blocking(|| cluster.cli(&["cluster", "status"]));
    assert!(!ok && text.contains("0 of 18 processes running"), "{text}");
    // Scripts get the process view as JSON even with no nameserver to answer, and why.
    let (ok, text, _) = blocking(|| cluster.cli(&["cluster", "status", "--json"]));
    let view: serde_json::Value = serde_json::from_str(text.lines().next().unwrap_or_default())
        .unwrap_or_else(|error| panic!("not JSON ({error}): {text}"));
    assert!(!ok, "{text}");
    assert_eq!(view["processes"].as_array().map(Vec::len), Some(18), "{view}");
    assert!(!view["error"].as_str().unwrap_or_default().is_empty(), "{view}");
    to_b0.stop().await;
    for proxy in b0_to_nameservers {
        proxy.stop().await;
    }
}

#[test]
fn bad_specs_are_refused_before_anything_starts_with_the_reason() {
    let root = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::layout(root.path(), 240, ClusterOptions::default());
    let good = cluster.spec();
    let a0 = cluster.nodes["a-0"].listen.unwrap().to_string();
    let b1 = cluster.nodes["b-1"].listen.unwrap().to_string();
    let cases = [
        (
            good.replace(&b1, &a0),
            format!("duplicate port: b-1 listen and a-0 listen both use {a0}"),
        ),
        (
            good.replace("idc = \"witness\"", "idc = \"dc9\""),
            "nameserver ns-3 is in IDC \"dc9\", which is not in idcs".to_owned(),
        ),
        (
            good.replacen("role = \"master\"", "role = \"slave\"", 1),
            "broker group \"broker-a\" has no master".to_owned(),
        ),
    ];
    for (spec, reason) in cases {
        std::fs::write(&cluster.spec_path, spec).unwrap();
        let path = cluster.spec_path.display().to_string();
        let (ok, stdout, stderr) = cluster.cli(&["cluster", "up", "--config", &path]);
        assert!(!ok, "a bad spec was accepted: {stdout}");
        assert!(
            stderr.contains(&reason) && stderr.contains("nothing was started"),
            "{reason}: {stderr}"
        );
        assert!(!cluster.dir.exists(), "nothing is written for a bad spec");
    }
    // A port taken by another program: refused before anything starts.
    let squatter = std::net::TcpListener::bind(cluster.nodes["a-1"].http.unwrap()).unwrap();
    cluster.write_spec();
    let path = cluster.spec_path.display().to_string();
    let (ok, _, stderr) = cluster.cli(&["cluster", "up", "--config", &path]);
    assert!(
        !ok && stderr.contains("a-1 http") && stderr.contains("nothing was started"),
        "{stderr}"
    );
    assert!(cluster.pids().is_empty());
    drop(squatter);
    assert_eq!(every_port_free(&cluster), Vec::<String>::new());
}

#[test]
fn the_deployment_artifacts_pass_their_checks() {
    // Kubernetes manifests (structure, zone anti-affinity, mounts, and the Kubernetes schemas via
    // kubernetes-validate, in the venv of scripts/duckdb-env.sh), systemd units (systemd-analyze
    // verify, when installed) and the Dockerfile: scripts/check-deploy.py.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check-deploy.py");
    let output = std::process::Command::new(crate::archive_duckdb::duckdb_python())
        .arg(&script)
        .env("MERIDIAN_BIN", meridian_tests::meridian_bin())
        .output()
        .expect("running python3 scripts/check-deploy.py");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

//! The archive end to end: a real `meridian dev` archives sealed segments to Parquet, deletes
//! them locally, and serves consumers from the archive; the archiver crashes at each step and a
//! re-run repairs everything.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_client::{ClientConfig, ConnectionPool, Message, Producer, ProducerConfig};
use meridian_proto::record::StoredMessage;
use meridian_tests::{DevNode, eventually, http_get_json, run_cli};

use crate::read_all;

pub(crate) fn write_config(dir: &Path, archive_after_secs: u64) -> PathBuf {
    let path = dir.join("broker.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nsegment_size = 262144\n\n[limits]\nmax_body_size = 65536\n\n[archive]\narchive_after_secs = {archive_after_secs}\nlocal_retention_secs = 0\ninterval_secs = 1\n"
        ),
    )
    .unwrap();
    path
}

async fn produce(node: &DevNode, topic: &str, first: usize, count: usize) {
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    for index in first..first + count {
        let body = format!(
            "{{\"order\":{index},\"customer\":\"c-{}\",\"items\":[{{\"sku\":\"S{}\",\"qty\":{}}}],\"note\":\"{}\"}}",
            index % 97,
            index * 7919 % 10_000,
            index % 5 + 1,
            "x".repeat(index % 300)
        );
        producer
            .send(
                Message::new(topic, Bytes::from(body))
                    .with_key(format!("order-{index}"))
                    .with_tag("created"),
            )
            .await
            .unwrap();
    }
    producer.shutdown().await;
    pool.shutdown().await;
}

pub(crate) fn local_segments(data_dir: &Path) -> Vec<u64> {
    let mut starts: Vec<u64> = std::fs::read_dir(data_dir.join("broker/commitlog"))
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    starts.sort();
    starts
}

fn committed_segments(data_dir: &Path) -> Vec<u64> {
    std::fs::read_dir(data_dir.join("archive/manifests/broker-a"))
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn sorted(mut messages: Vec<StoredMessage>) -> Vec<StoredMessage> {
    messages.sort_by_key(|message| (message.queue_id, message.queue_offset));
    messages
}

fn archive_cli(data_dir: &Path, config: &Path, args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let broker_dir = data_dir.join("broker");
    let mut all = args.to_vec();
    all.extend([
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        broker_dir.to_str().unwrap(),
    ]);
    run_cli(&all, envs, "")
}

pub(crate) async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Archive, delete locally, consume from the beginning: every message comes back identical
/// (ids, offsets, timestamps, hosts, properties, bodies), in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_then_deleted_messages_are_consumed_identically_from_the_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = write_config(dir.path(), 0);
    let node = DevNode::start(&data_dir, &["--config", config.to_str().unwrap()]);
    node.create_topic("orders", 4).await;
    produce(&node, "orders", 0, 2000).await;
    let before = sorted(read_all(&node, "orders").await);
    assert_eq!(before.len(), 2000);
    // Counted locally and in the archive: with archive_after_secs = 0 the archiver may already
    // have archived and deleted some while the sends ran.
    let segments: std::collections::BTreeSet<u64> = local_segments(&data_dir)
        .into_iter()
        .chain(committed_segments(&data_dir))
        .collect();
    assert!(
        segments.len() >= 3,
        "the test needs several sealed segments: {segments:?}"
    );

    // The archiver in `meridian dev` archives every sealed segment, then the broker deletes them.
    wait_until("every sealed segment is archived and deleted", || {
        local_segments(&data_dir).len() == 1
    })
    .await;
    let after = sorted(read_all(&node, "orders").await);
    assert_eq!(after.len(), before.len());
    for (archived, original) in after.iter().zip(&before) {
        assert_eq!(
            archived,
            original,
            "message {} changed in the archive",
            original.msg_id()
        );
    }

    let (ok, stdout, stderr) = archive_cli(&data_dir, &config, &["archive", "verify"], &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("ok: no gaps, no duplicates"), "{stdout}");
    // Reading through the archive wrote trace events, which may seal a segment more: the
    // archiver catches up with it.
    wait_until("archive status shows no lag", || {
        let (ok, stdout, _) = archive_cli(&data_dir, &config, &["archive", "status"], &[]);
        ok && stdout.contains("broker-a") && stdout.contains(" 0 seg")
    })
    .await;
    assert!(
        std::fs::read_dir(data_dir.join("archive/messages/topic=orders")).is_ok(),
        "Hive layout under DATA_DIR/archive"
    );

    // Reads from the archive are traced like any delivery: a second Deliver for each message.
    let path = format!("/api/traces/{}", before[0].msg_id());
    let delivers = || {
        http_get_json(node.http, &path).map_or(0, |timeline| {
            timeline["steps"]
                .as_array()
                .map_or(0, |steps| steps.iter().filter(|step| step["type"] == "Deliver").count())
        })
    };
    assert!(
        eventually(Duration::from_secs(10), || delivers() == 2).await,
        "{} Deliver steps for {path}",
        delivers()
    );
    // The archive step comes from the manifest: when the segment was archived, in which file.
    let archive_step = || {
        http_get_json(node.http, &path).and_then(|timeline| {
            let steps = timeline["steps"].as_array()?.clone();
            let at = steps.iter().position(|step| step["type"] == "ArchiveWrite")?;
            Some((steps, at))
        })
    };
    assert!(
        eventually(Duration::from_secs(15), || archive_step().is_some()).await,
        "no ArchiveWrite step for {path}"
    );
    let (steps, at) = archive_step().unwrap();
    let step = &steps[at];
    let host = step["host"].as_str().unwrap();
    let segment_start: u64 = host
        .rsplit_once("/broker-a-")
        .and_then(|(_, name)| name.strip_suffix(".parquet)"))
        // A group's archiver names its files `<start>-e<epoch>`.
        .and_then(|name| name.split("-e").next()?.parse().ok())
        .unwrap_or_else(|| panic!("no segment file in {step}"));
    assert!(
        host.starts_with("archive (file://") && host.contains("/messages/topic=orders/date="),
        "{step}"
    );
    assert!(
        segment_start <= before[0].commitlog_offset && committed_segments(&data_dir).contains(&segment_start),
        "{step}: the file of the segment holding offset {}",
        before[0].commitlog_offset
    );
    assert_eq!(
        (step["broker"].as_str(), step["topic"].as_str()),
        (Some("broker-a"), Some("orders"))
    );
    assert_eq!(step["queue_offset"], before[0].queue_offset);
    let store_at = steps.iter().position(|step| step["type"] == "Store").unwrap();
    assert!(store_at < at, "archived after it was stored: {steps:?}");
    assert!(step["timestamp"].as_i64().unwrap() >= before[0].store_timestamp);

    // Resetting a group to a time now only in the archive finds, in every queue, the first
    // message stored at or after it.
    node.create_group("billing", &["orders"]).await;
    let time = before[before.len() / 4].store_timestamp;
    let (ok, stdout, stderr) = node.cli(
        &[
            "group",
            "reset-offset",
            "--group",
            "billing",
            "--topic",
            "orders",
            "--to-timestamp",
            &time.to_string(),
        ],
        "",
    );
    assert!(ok, "{stdout}{stderr}");
    for queue in 0..4u32 {
        let expected = before
            .iter()
            .filter(|message| message.queue_id == queue)
            .find(|message| message.store_timestamp >= time)
            .map_or(0, |message| message.queue_offset);
        assert!(
            stdout.contains(&format!("broker-a orders:{queue} -> {expected}\n")),
            "queue {queue} should reset to {expected}: {stdout}"
        );
    }
    let local_start = local_segments(&data_dir)[0];
    assert!(
        before[before.len() / 4].commitlog_offset < local_start,
        "the time must fall in the archive (local commitlog starts at {local_start})"
    );
    node.stop();
}

/// The archiver is killed (abort, as by kill -9) mid-file, after the files before the manifest,
/// and after the manifest before deletion. Each time: verify finds no gap or duplicate, no
/// segment was deleted unarchived, and a re-run completes the same archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiver_killed_at_each_step_leaves_no_gap_no_duplicate_and_deletes_nothing_unarchived() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    // The archiver inside dev waits an hour: only the CLI runs below archive.
    let config = write_config(dir.path(), 3600);
    let node = DevNode::start(&data_dir, &["--config", config.to_str().unwrap()]);
    node.create_topic("orders", 2).await;
    let mut produced = 0;
    for point in ["mid_file", "after_files", "after_manifest"] {
        produce(&node, "orders", produced, 900).await;
        produced += 900;
        let local_before = local_segments(&data_dir);
        let (ok, _, stderr) = archive_cli(
            &data_dir,
            &config,
            &["archive", "run", "--now"],
            &[("MERIDIAN_ARCHIVE_CRASH_AT", point)],
        );
        assert!(!ok, "{point}: the archiver should have crashed: {stderr}");
        let (ok, stdout, stderr) = archive_cli(&data_dir, &config, &["archive", "verify"], &[]);
        assert!(ok, "{point}: {stdout}{stderr}");
        // The quiet period is what is tested: retention (every second) deletes no unarchived
        // segment within 1.5 s.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (committed, local_now) = (committed_segments(&data_dir), local_segments(&data_dir));
        for start in &local_before {
            assert!(
                local_now.contains(start) || committed.contains(start),
                "{point}: segment {start} was deleted without being archived"
            );
        }
        if point != "after_manifest" {
            assert!(
                stdout.contains("uncommitted"),
                "{point}: the crash left files: {stdout}"
            );
        }
        let (ok, stdout, stderr) = archive_cli(&data_dir, &config, &["archive", "run", "--now"], &[]);
        assert!(ok, "{point}: re-run: {stdout}{stderr}");
        let (ok, stdout, stderr) = archive_cli(&data_dir, &config, &["archive", "verify"], &[]);
        assert!(ok, "{point}: {stdout}{stderr}");
        assert!(
            !stdout.contains("uncommitted"),
            "{point}: a re-run overwrites what a crash left: {stdout}"
        );
    }
    wait_until("archived segments are deleted locally", || {
        local_segments(&data_dir).len() == 1
    })
    .await;
    let stored = read_all(&node, "orders").await;
    assert_eq!(
        stored.len(),
        produced,
        "every message once, from the archive and the local log"
    );
    node.stop();
}

/// Pulls served from the archive apply the tag filter on the broker, as local pulls do: a
/// consumer subscribed to one tag gets only that tag's messages, below and above the local log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_pulls_apply_the_tag_filter_like_local_pulls() {
    use meridian_proto::RequestCode;
    use meridian_proto::messages::{PullRequest, PullResponse};

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = write_config(dir.path(), 0);
    let node = DevNode::start(&data_dir, &["--config", config.to_str().unwrap()]);
    node.create_topic("orders", 1).await;
    node.create_group("tagged", &["orders"]).await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    let body = "x".repeat(400);
    for index in 0..1500usize {
        let tag = if index % 3 == 0 { "paid" } else { "created" };
        producer
            .send(Message::new("orders", Bytes::from(format!("{index} {body}"))).with_tag(tag))
            .await
            .unwrap();
    }
    producer.shutdown().await;
    wait_until("every sealed segment is archived and deleted", || {
        local_segments(&data_dir).len() == 1
    })
    .await;

    // The first segments are gone from the broker's disk: their offsets come from the archive.
    assert!(local_segments(&data_dir)[0] > 0);
    let addr = node.broker_addr();
    let mut offset = 0;
    let mut paid = Vec::new();
    loop {
        let request = PullRequest {
            group: "tagged".into(),
            topic: "orders".into(),
            queue_id: 0,
            offset,
            max_count: 64,
            max_bytes: 1 << 20,
            long_poll_ms: 0,
            subscription: "paid".into(),
            offset_generation: None,
        };
        let response: PullResponse = pool
            .call(&addr, RequestCode::Pull, &request, Duration::from_secs(10))
            .await
            .unwrap();
        if response.next_offset == offset {
            break;
        }
        let messages = meridian_proto::record::decode_all(&response.records).unwrap();
        for message in &messages {
            assert_eq!(
                message.tag(),
                Some("paid"),
                "offset {} passed the filter",
                message.queue_offset
            );
        }
        paid.extend(messages.into_iter().map(|message| message.queue_offset));
        offset = response.next_offset;
    }
    let expected: Vec<u64> = (0..1500u64).filter(|index| index % 3 == 0).collect();
    assert_eq!(paid, expected, "every paid message once, in order, nothing else");
    pool.shutdown().await;
    node.stop();
}

/// A full disk stops the archiver with the reason instead of retrying silently: `meridian
/// archiver` archives into a 64 KiB tmpfs (mounted in a private mount namespace, so no
/// privilege is needed), fills it, logs why it stopped and exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_archiver_with_the_reason() {
    use std::process::{Command, Stdio};
    let namespaces = Command::new("unshare")
        .args(["-rm", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !namespaces {
        eprintln!(
            "skipped: `unshare -rm` (unprivileged mount namespaces) is unavailable, so no small tmpfs can be mounted"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let dev_config = dir.path().join("dev.toml");
    std::fs::write(
        &dev_config,
        "[store]\nsegment_size = 262144\n\n[limits]\nmax_body_size = 65536\n",
    )
    .unwrap();
    let node = DevNode::start(&data_dir, &["--config", dev_config.to_str().unwrap(), "--no-archive"]);
    node.create_topic("orders", 4).await;
    produce(&node, "orders", 0, 2000).await;
    assert!(local_segments(&data_dir).len() >= 3);

    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    let config = dir.path().join("archiver.toml");
    std::fs::write(
        &config,
        format!(
            "http_listen = \"{}\"\n\n[store]\nsegment_size = 262144\n\n[limits]\nmax_body_size = 65536\n\n[archive]\nenabled = true\nstore = \"{}\"\narchive_after_secs = 0\ninterval_secs = 1\n",
            node.http,
            full.display()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("archiver.log");
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs '{}' && exec '{}' archiver --config '{}' --data-dir '{}'",
        full.display(),
        meridian_tests::meridian_bin().display(),
        config.display(),
        data_dir.join("broker").display()
    );
    let mut archiver = Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = archiver.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = archiver.kill();
            panic!(
                "the archiver kept running on a full disk:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("archiver stopped: retrying cannot fix this") && log.contains("No space left on device"),
        "{log}"
    );
    node.stop();
}

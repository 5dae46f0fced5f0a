//! The archive read by an independent engine: a real `meridian dev` archives (and deletes
//! locally) what was produced, then DuckDB from PyPI (`scripts/archive-duckdb.py`, no Meridian
//! code) reads the Parquet files the committed manifest names and must find the same messages per
//! topic and the same bodies by message id.
//!
//! DuckDB comes from the venv `scripts/duckdb-env.sh` makes; `scripts/test.sh` exports its python
//! as `MERIDIAN_TEST_DUCKDB_PYTHON`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use meridian_client::{ClientConfig, ConnectionPool, Message, Producer, ProducerConfig};
use meridian_tests::DevNode;

use crate::archive::{local_segments, wait_until, write_config};

/// The Python with DuckDB and kubernetes-validate: `MERIDIAN_TEST_DUCKDB_PYTHON`, else the venv's
/// default place.
pub(crate) fn duckdb_python() -> PathBuf {
    if let Some(path) = std::env::var_os("MERIDIAN_TEST_DUCKDB_PYTHON") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .expect("HOME is set");
    let python = cache.join("meridian/duckdb-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/duckdb-env.sh (scripts/test.sh does) or set MERIDIAN_TEST_DUCKDB_PYTHON",
        python.display()
    );
    python
}

/// What `scripts/archive-duckdb.py` printed for `archive` and `msg_ids`.
fn read_with_duckdb(archive: &Path, msg_ids: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/archive-duckdb.py");
    let mut command = Command::new(duckdb_python());
    command.arg(&script).arg(archive);
    for msg_id in msg_ids {
        command.args(["--msg-id", msg_id]);
    }
    let output = command.output().expect("running scripts/archive-duckdb.py");
    assert!(
        output.status.success(),
        "archive-duckdb.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("archive-duckdb.py prints JSON")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A message produced: its topic and body.
struct Produced {
    topic: String,
    body: Bytes,
}

/// Sends `bodies` to `topic` one by one; the message ids the broker gave them, with what was sent.
async fn produce(producer: &Producer, topic: &str, bodies: Vec<Bytes>, sent: &mut BTreeMap<String, Produced>) {
    for (index, body) in bodies.into_iter().enumerate() {
        let result = producer
            .send(Message::new(topic, body.clone()).with_key(format!("{topic}-{index}")))
            .await
            .expect("send");
        sent.insert(
            result.msg_id,
            Produced {
                topic: topic.to_owned(),
                body,
            },
        );
    }
}

/// DuckDB finds every produced message of each topic once, with the body that was sent, in the
/// archive a real broker wrote, after the broker deleted the segments locally; files an
/// interrupted archiver would leave (in no manifest entry) are not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_the_same_counts_per_topic_and_bodies_by_msg_id_from_the_archive() {
    let python = duckdb_python();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = write_config(dir.path(), 0);
    let node = DevNode::start(&data_dir, &["--config", config.to_str().unwrap()]);
    for (topic, queues) in [("orders", 4), ("clicks", 2), ("blobs", 1), ("filler", 1)] {
        node.create_topic(topic, queues).await;
    }

    let pool = ConnectionPool::new(ClientConfig::default());
    let producer = Producer::new(node.route(&pool), ProducerConfig::default());
    let mut sent = BTreeMap::new();
    let orders = (0..600)
        .map(|index| Bytes::from(format!("{{\"order\":{index},\"note\":\"{}\"}}", "é".repeat(index % 90))))
        .collect();
    produce(&producer, "orders", orders, &mut sent).await;
    let clicks = (0..900).map(|index| Bytes::from(format!("click {index}"))).collect();
    produce(&producer, "clicks", clicks, &mut sent).await;
    // Binary bodies with every byte value, which a text round trip would mangle.
    let mut rng = fastrand::Rng::with_seed(8);
    let blobs = (0..40)
        .map(|_| {
            let len = rng.usize(1..8192);
            Bytes::from((0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>())
        })
        .collect();
    produce(&producer, "blobs", blobs, &mut sent).await;
    // 360 KB after the last of them: more than a 256 KiB segment, so each of them lies in a sealed
    // segment (a later one exists), which the archiver archives; only the open one is never.
    let filler = (0..6).map(|_| Bytes::from(vec![b'f'; 60_000])).collect();
    let mut filler_sent = BTreeMap::new();
    produce(&producer, "filler", filler, &mut filler_sent).await;
    producer.shutdown().await;
    pool.shutdown().await;
    assert!(
        local_segments(&data_dir).len() >= 3,
        "the test needs several sealed segments"
    );

    wait_until("every sealed segment is archived and deleted locally", || {
        local_segments(&data_dir).len() == 1
    })
    .await;

    let archive = data_dir.join("archive");
    let samples: Vec<&str> = sent
        .iter()
        .enumerate()
        .filter(|(index, (_, produced))| produced.topic == "blobs" || index % 37 == 0)
        .map(|(_, (msg_id, _))| msg_id.as_str())
        .collect();
    let read = read_with_duckdb(&archive, &samples);
    assert_eq!(read["duckdb"], "2.0.1", "{python:?} is not the pinned DuckDB");

    let mut produced_counts: BTreeMap<&str, u64> = BTreeMap::new();
    for produced in sent.values() {
        *produced_counts.entry(&produced.topic).or_default() += 1;
    }
    for (topic, produced) in &produced_counts {
        assert_eq!(
            read["counts"][topic].as_u64(),
            Some(*produced),
            "DuckDB's count of {topic}: {read:#}"
        );
    }
    // Every topic (the filler and the broker's trace topic too): DuckDB's rows are the manifest's.
    assert_eq!(read["counts"], read["manifest_counts"], "{read:#}");
    assert!(read["counts"]["filler"].as_u64().is_some_and(|rows| rows < 6));

    assert!(samples.len() >= 60, "{} samples", samples.len());
    for msg_id in &samples {
        let bodies = read["bodies"][msg_id].as_array().expect("bodies of each msgId");
        let expected = hex(&sent[*msg_id].body);
        assert_eq!(bodies.len(), 1, "{msg_id} should be archived once: {bodies:?}");
        assert_eq!(
            bodies[0].as_str(),
            Some(expected.as_str()),
            "body of {msg_id} ({})",
            sent[*msg_id].topic
        );
    }

    // What a crash between upload and commit leaves: a whole file under a name no entry has.
    let orders_dir = std::fs::read_dir(archive.join("messages/topic=orders"))
        .unwrap()
        .next()
        .expect("a date= folder of orders")
        .unwrap()
        .path();
    let committed = std::fs::read_dir(&orders_dir).unwrap().next().unwrap().unwrap().path();
    std::fs::copy(&committed, orders_dir.join("broker-a-99999999999999999999.parquet")).unwrap();
    let again = read_with_duckdb(&archive, &[]);
    assert_eq!(again["counts"], read["counts"], "an uncommitted file was read");
    node.stop();
}

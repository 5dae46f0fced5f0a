//! The archive conformance suite, run against every store: local filesystem, in-memory, and a
//! real S3-compatible server (s3s-fs on loopback, which `scripts/test.sh` installs; no mocks).

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_proto::record::{self, Entry};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use crate::archiver::{Archiver, CrashMode, CrashPoint};
use crate::convert::ConvertOptions;
use crate::reader::{ArchiveReader, Replay};
use crate::sample;
use crate::store::{ArchiveConfig, ArchiveStore, AzureConfig, GcsConfig, S3Config};
use crate::verify::{self, Problem};

const SEGMENT_LEN: usize = 256 * 1024;
const BROKER: &str = "broker-a";

/// A commitlog folder with three sealed segments and an open one, and every record's bytes by
/// (topic, queue, offset).
struct Commitlog {
    dir: tempfile::TempDir,
    records: HashMap<(String, u32, u64), Vec<u8>>,
}

fn write_commitlog() -> Commitlog {
    let dir = tempfile::tempdir().unwrap();
    let commitlog = dir.path().join("commitlog");
    std::fs::create_dir_all(&commitlog).unwrap();
    // Store times cross midnight UTC, so a topic gets two day partitions.
    let first = 1_795_651_190_000; // 2026-11-25T23:59:50Z
    let messages = sample::messages(1200, 3, 4, first, 20, 300);
    let mut offsets = HashMap::new();
    let mut records = HashMap::new();
    for (index, chunk) in messages.chunks(300).enumerate() {
        let start = (index * SEGMENT_LEN) as u64;
        let bytes = sample::segment(start, SEGMENT_LEN, chunk, &mut offsets, index < 3);
        let mut position = 0;
        while let Ok(Entry::Record(record)) = record::read_entry(&bytes[position..]) {
            records.insert(
                (record.topic().to_owned(), record.queue_id(), record.queue_offset()),
                record.as_bytes().to_vec(),
            );
            position += record.total_size();
        }
        std::fs::write(commitlog.join(format!("{start:020}")), bytes).unwrap();
    }
    Commitlog { dir, records }
}

impl Commitlog {
    fn commitlog_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("commitlog")
    }
    fn archived_records(&self) -> HashMap<(String, u32, u64), Vec<u8>> {
        // The first three segments (900 messages) are sealed.
        let sealed_end = 3 * SEGMENT_LEN as u64;
        self.records
            .iter()
            .filter(|(_, bytes)| record::Record::parse(bytes).unwrap().commitlog_offset() < sealed_end)
            .map(|(key, bytes)| (key.clone(), bytes.clone()))
            .collect()
    }
}

fn archiver(store: &ArchiveStore, log: &Commitlog) -> Archiver {
    Archiver::new(
        store.clone(),
        ConvertOptions::new(BROKER),
        log.commitlog_dir(),
        Duration::from_secs(3600),
    )
    .unwrap()
}

async fn replay_everything(reader: &ArchiveReader) -> HashMap<(String, u32, u64), Vec<u8>> {
    let mut found = HashMap::new();
    for topic in 0..3 {
        let topic = format!("topic-{topic}");
        for queue in 0..4u32 {
            let Some(mut offset) = reader.with_index(|index| index.min_offset(&topic, queue)) else {
                continue;
            };
            loop {
                match reader.read(&topic, queue, offset, 7, 1 << 20).await.unwrap() {
                    Replay::Found {
                        records,
                        count,
                        next_offset,
                    } => {
                        let messages = record::decode_all(&bytes::Bytes::from(records.clone())).unwrap();
                        assert_eq!(messages.len() as u64, count);
                        let mut position = 0;
                        for message in messages {
                            assert_eq!((message.topic.as_str(), message.queue_id), (topic.as_str(), queue));
                            let parsed = record::Record::parse(&records[position..]).unwrap();
                            position += parsed.total_size();
                            assert!(
                                found
                                    .insert((topic.clone(), queue, message.queue_offset), parsed.as_bytes().to_vec())
                                    .is_none(),
                                "offset {} replayed twice",
                                message.queue_offset
                            );
                        }
                        assert!(next_offset > offset);
                        offset = next_offset;
                    }
                    Replay::Moved(next) => panic!("unexpected gap at {offset}, next {next}"),
                    Replay::NotArchived => break,
                }
            }
        }
    }
    found
}

/// Every queue searched by time at each store time it holds, before the first and after the
/// last: the first archived offset at or after the time, exactly.
async fn search_by_time_finds_the_first_message_at_or_after(
    reader: &ArchiveReader,
    archived: &HashMap<(String, u32, u64), Vec<u8>>,
) {
    let mut queues: HashMap<(String, u32), Vec<(u64, i64)>> = HashMap::new();
    for ((topic, queue, offset), bytes) in archived {
        let stored = record::Record::parse(bytes).unwrap().store_timestamp();
        queues
            .entry((topic.clone(), *queue))
            .or_default()
            .push((*offset, stored));
    }
    for ((topic, queue), mut messages) in queues {
        messages.sort();
        let mut times: Vec<i64> = messages.iter().map(|(_, stored)| *stored).collect();
        times.extend([0, times[0] - 1, times.last().unwrap() + 1]);
        for time in times {
            let expected = messages
                .iter()
                .find(|(_, stored)| *stored >= time)
                .map(|(offset, _)| *offset);
            let found = reader.search_offset(&topic, queue, time).await.unwrap();
            assert_eq!(found, expected, "{topic}/{queue} searched at {time}");
        }
    }
}

/// The suite: every test of it runs against `store`, which must be empty.
async fn conformance(store: ArchiveStore) {
    archive_replay_is_byte_identical(&store).await;
    for point in [CrashPoint::MidFile, CrashPoint::AfterFiles, CrashPoint::AfterManifest] {
        crash_then_rerun_gives_the_same_archive(point).await;
    }
    corrupt_files_are_named_by_verify(&store).await;
    trace_records_become_trace_files(&store).await;
}

async fn archive_replay_is_byte_identical(store: &ArchiveStore) {
    let log = write_commitlog();
    let archiver = archiver(store, &log);
    // Fresh segments are younger than archive_after: nothing happens without --now.
    let report = archiver.run_once(false, |_| {}).await.unwrap();
    assert_eq!((report.archived.len(), report.too_young), (0, 3));
    let mut last_progress = None;
    let report = archiver
        .run_once(true, |progress| last_progress = Some(progress))
        .await
        .unwrap();
    assert_eq!(report.archived, vec![0, SEGMENT_LEN as u64, 2 * SEGMENT_LEN as u64]);
    assert_eq!(report.records, 900);
    let progress = last_progress.unwrap();
    assert_eq!((progress.done_segments, progress.total_segments), (3, 3));

    let reader = ArchiveReader::new(store.clone(), BROKER).unwrap();
    reader.refresh(false).await.unwrap();
    let replayed = replay_everything(&reader).await;
    let expected = log.archived_records();
    assert_eq!(replayed.len(), expected.len());
    for (key, bytes) in &expected {
        assert_eq!(replayed.get(key), Some(bytes), "{key:?} differs after the archive");
    }
    search_by_time_finds_the_first_message_at_or_after(&reader, &expected).await;

    // A re-run changes nothing: same files, no duplicates.
    let files_before = list(store, "messages").await;
    let report = archiver.run_once(true, |_| {}).await.unwrap();
    assert_eq!((report.archived.len(), report.already_archived), (0, 3));
    assert_eq!(list(store, "messages").await, files_before);
    // Two topics cross midnight: 3 topics x 3 segments, plus the second day's files.
    assert!(
        files_before.iter().any(|path| path.contains("date=2026-11-26")),
        "{files_before:?}"
    );
    let report = verify::verify(store, BROKER).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.segments, report.rows), (3, 900));
    assert!(report.uncommitted.is_empty());

    let status = verify::status(store, BROKER).await.unwrap();
    assert_eq!(status.archived_until_offset, 3 * SEGMENT_LEN as u64);
    assert_eq!(status.records, 900);
    assert!(status.parquet_bytes > 0 && status.parquet_bytes < status.record_bytes);
    clear(store).await;
}

async fn crash_then_rerun_gives_the_same_archive(point: CrashPoint) {
    let log = write_commitlog();
    // The reference archive: an uninterrupted run into a store of its own.
    let clean = ArchiveStore::in_memory();
    archiver(&clean, &log).run_once(true, |_| {}).await.unwrap();

    let store = ArchiveStore::in_memory();
    let crashing = archiver(&store, &log).crash_at(point, CrashMode::Error);
    let error = crashing.run_once(true, |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("crash point"), "{error}");
    // After a crash before the commit, nothing is visible, only uncommitted files.
    let report = verify::verify(&store, BROKER).await.unwrap();
    assert!(report.problems.is_empty(), "{point:?}: {:?}", report.problems);
    let committed = if point == CrashPoint::AfterManifest { 1 } else { 0 };
    assert_eq!(report.segments, committed, "{point:?}");
    if point != CrashPoint::AfterManifest {
        assert!(!report.uncommitted.is_empty(), "{point:?}: the crash left files");
    }

    archiver(&store, &log).run_once(true, |_| {}).await.unwrap();
    let report = verify::verify(&store, BROKER).await.unwrap();
    assert!(report.problems.is_empty(), "{point:?}: {:?}", report.problems);
    assert!(report.uncommitted.is_empty(), "{point:?}: {:?}", report.uncommitted);
    assert_eq!((report.segments, report.rows), (3, 900));
    // Byte-identical to the archive made without a crash.
    let files = list(&store, "messages").await;
    assert_eq!(files, list(&clean, "messages").await);
    for path in files {
        assert_eq!(get(&store, &path).await, get(&clean, &path).await, "{path}");
    }
}

async fn corrupt_files_are_named_by_verify(store: &ArchiveStore) {
    let log = write_commitlog();
    archiver(store, &log).run_once(true, |_| {}).await.unwrap();
    let files = list(store, "messages").await;
    let victim = files[1].clone();
    let mut bytes = get(store, &victim).await;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    store
        .inner
        .put(&Path::from(victim.as_str()), PutPayload::from(bytes))
        .await
        .unwrap();
    let missing = files[2].clone();
    store.inner.delete(&Path::from(missing.as_str())).await.unwrap();
    let report = verify::verify(store, BROKER).await.unwrap();
    assert_eq!(
        report.problems,
        vec![Problem::Checksum(victim.clone()), Problem::Missing(missing.clone())]
    );
    assert!(report.problems[0].to_string().contains(&victim));

    // Replay refuses the corrupt file instead of serving wrong bytes.
    let reader = ArchiveReader::new(store.clone(), BROKER).unwrap();
    reader.refresh(false).await.unwrap();
    let topic = victim
        .split("topic=")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut refused = false;
    for queue in 0..4 {
        let first_offset = reader.with_index(|index| {
            index
                .queue_files(&topic, queue)
                .iter()
                .find(|file| file.path == victim)
                .map(|file| file.first_offset)
        });
        if let Some(min) = first_offset {
            let error = reader.read(&topic, queue, min, 10, 1 << 20).await.unwrap_err();
            assert!(error.to_string().contains("archive verify"), "{error}");
            refused = true;
        }
    }
    assert!(refused);
    clear(store).await;
}

/// A commitlog whose sealed segment holds messages and their trace records (one of them
/// malformed), across midnight UTC; returns the folder and the events written.
fn write_commitlog_with_traces() -> (tempfile::TempDir, Vec<meridian_proto::trace::TraceEvent>) {
    let dir = tempfile::tempdir().unwrap();
    let commitlog = dir.path().join("commitlog");
    std::fs::create_dir_all(&commitlog).unwrap();
    let first = 1_795_651_190_000; // 2026-11-25T23:59:50Z
    let messages = sample::messages(60, 2, 2, first, 250, 100);
    let events: Vec<_> = messages
        .iter()
        .enumerate()
        .flat_map(|(index, message)| sample::trace_events(message, "billing", 5 + index as i64 * 40))
        .collect();
    let mut records = messages.clone();
    records.extend(sample::trace_records(&events, 7, 0xB000_0000));
    let mut malformed = records.last().unwrap().clone();
    malformed.msg_id = format!("{:032X}", 0xC000_0000u64);
    malformed.body = b"not a trace batch".to_vec();
    records.push(malformed);
    records.sort_by_key(|record| record.store_timestamp);
    let mut offsets = HashMap::new();
    for (index, chunk) in [&records[..], &[]].into_iter().enumerate() {
        let start = (index * SEGMENT_LEN) as u64;
        let bytes = sample::segment(start, SEGMENT_LEN, chunk, &mut offsets, index == 0);
        std::fs::write(commitlog.join(format!("{start:020}")), bytes).unwrap();
    }
    (dir, events)
}

async fn trace_records_become_trace_files(store: &ArchiveStore) {
    use arrow::array::{Array, AsArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let (dir, events) = write_commitlog_with_traces();
    let make = || {
        Archiver::new(
            store.clone(),
            ConvertOptions::new(BROKER),
            dir.path().join("commitlog"),
            Duration::from_secs(3600),
        )
        .unwrap()
    };
    // A crash after the files and before the manifest, then a re-run: the same trace files, once.
    let error = make()
        .crash_at(CrashPoint::AfterFiles, CrashMode::Error)
        .run_once(true, |_| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("crash point"), "{error}");
    assert_eq!(verify::verify(store, BROKER).await.unwrap().uncommitted.len(), 8);
    let report = make().run_once(true, |_| {}).await.unwrap();
    assert_eq!(report.trace_events, events.len() as u64);

    let trace_files = list(store, "traces").await;
    assert_eq!(
        trace_files,
        vec![
            "traces/date=2026-11-25/broker-a-00000000000000000000.parquet".to_owned(),
            "traces/date=2026-11-26/broker-a-00000000000000000000.parquet".to_owned(),
        ]
    );
    // The trace topic's raw records stay in the message files, for replay.
    assert!(
        list(store, "messages/topic=MERIDIAN_TRACE").await.len() == 2,
        "{:?}",
        list(store, "messages").await
    );
    let entry = crate::manifest::load(store, BROKER, 0).await.unwrap();
    assert_eq!(entry.malformed_trace_records, 1);
    assert_eq!(
        entry.traces.iter().map(|file| file.rows).sum::<u64>(),
        events.len() as u64
    );
    let report = verify::verify(store, BROKER).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.uncommitted.is_empty(), "{:?}", report.uncommitted);
    assert_eq!((report.trace_files, report.trace_events), (2, events.len() as u64));

    // Every event is there once, in its day's file, with its fields.
    let mut seen = Vec::new();
    for path in &trace_files {
        let bytes = bytes::Bytes::from(get(store, path).await);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("event_id").unwrap().as_string::<i32>();
            let kinds = batch.column_by_name("trace_type").unwrap().as_string::<i32>();
            let groups = batch.column_by_name("group_name").unwrap().as_string::<i32>();
            for row in 0..batch.num_rows() {
                seen.push((
                    ids.value(row).to_owned(),
                    kinds.value(row).to_owned(),
                    groups.is_null(row),
                ));
            }
        }
    }
    let mut expected: Vec<_> = events
        .iter()
        .map(|event| {
            (
                event.event_id.clone(),
                event.kind().name().to_owned(),
                event.group.is_empty(),
            )
        })
        .collect();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);

    // A corrupt trace file is named by verify like a message file.
    let victim = trace_files[0].clone();
    let mut bytes = get(store, &victim).await;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    store
        .inner
        .put(&Path::from(victim.as_str()), PutPayload::from(bytes))
        .await
        .unwrap();
    let report = verify::verify(store, BROKER).await.unwrap();
    assert_eq!(report.problems, vec![Problem::Checksum(victim)]);
    clear(store).await;
}

async fn list(store: &ArchiveStore, prefix: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let mut paths: Vec<String> = store
        .inner
        .list(Some(&Path::from(prefix)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    paths.sort();
    paths
}

async fn get(store: &ArchiveStore, path: &str) -> Vec<u8> {
    store
        .inner
        .get(&Path::from(path))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

async fn clear(store: &ArchiveStore) {
    for path in list(store, "").await {
        store.inner.delete(&Path::from(path.as_str())).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    conformance(ArchiveStore::local(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    conformance(ArchiveStore::in_memory()).await;
}

/// A real S3-compatible server on loopback, stopped on drop.
pub(crate) struct S3Server {
    child: Child,
    pub endpoint: String,
    _root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The s3s-fs binary: `MERIDIAN_TEST_S3S_FS`, else `~/.cargo/bin/s3s-fs` where
/// `scripts/install-s3s-fs.sh` puts it.
fn s3s_fs_binary() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("MERIDIAN_TEST_S3S_FS") {
        return path.into();
    }
    let home =
        std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    FsPath::new(&home).join("bin/s3s-fs")
}

pub(crate) fn start_s3s(bucket: &str) -> S3Server {
    let binary = s3s_fs_binary();
    assert!(
        binary.exists(),
        "{} is missing: run scripts/install-s3s-fs.sh (scripts/test.sh does) or set MERIDIAN_TEST_S3S_FS",
        binary.display()
    );
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(bucket)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            "meridian",
            "--secret-key",
            "meridian-secret",
        ])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    S3Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        _root: root,
    }
}

pub(crate) fn s3_config(endpoint: &str, url: &str) -> ArchiveConfig {
    ArchiveConfig {
        store: url.into(),
        s3: S3Config {
            endpoint: Some(endpoint.into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("meridian".into()),
            secret_access_key: Some("meridian-secret".into()),
            allow_http: true,
        },
        max_retries: 1,
        request_timeout_secs: 5,
        ..ArchiveConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_s3() {
    let server = start_s3s("archive");
    let config = s3_config(&server.endpoint, "s3://archive/meridian");
    let store = ArchiveStore::open(&config, FsPath::new("unused")).unwrap();
    conformance(store).await;
}

/// A real Azure Blob Storage server on loopback (Azurite, from npm), stopped on drop.
pub(crate) struct AzuriteServer {
    child: Child,
    /// The blob endpoint of Azurite's well-known account.
    pub endpoint: String,
}

impl Drop for AzuriteServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Azurite's well-known development account and key (public, the same in every install).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Starts Azurite's blob service with an empty `container`. Azurite and the Azure SDK that
/// creates the container come from `MERIDIAN_TEST_AZURITE` (a folder with their node_modules),
/// which `scripts/install-azurite.sh` makes and `scripts/test.sh` exports.
pub(crate) fn start_azurite(container: &str) -> AzuriteServer {
    let dir = std::env::var("MERIDIAN_TEST_AZURITE").unwrap_or_default();
    let modules = FsPath::new(&dir).join("node_modules");
    assert!(
        modules.join(".bin/azurite-blob").exists(),
        "Azurite is missing from MERIDIAN_TEST_AZURITE={dir:?}: run scripts/install-azurite.sh (scripts/test.sh does) and set MERIDIAN_TEST_AZURITE to the folder it prints"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(modules.join(".bin/azurite-blob"))
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--silent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = AzuriteServer {
        child,
        endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "Azurite did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let script = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/azurite-container.js");
    let created = Command::new("node")
        .arg(script)
        .args([&server.endpoint, AZURITE_ACCOUNT, AZURITE_KEY, container])
        .env("NODE_PATH", &modules)
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "creating container {container}: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    server
}

pub(crate) fn azure_config(endpoint: &str, url: &str) -> ArchiveConfig {
    ArchiveConfig {
        store: url.into(),
        azure: AzureConfig {
            account: Some(AZURITE_ACCOUNT.into()),
            access_key: Some(AZURITE_KEY.into()),
            endpoint: Some(endpoint.into()),
            allow_http: true,
        },
        max_retries: 1,
        request_timeout_secs: 5,
        ..ArchiveConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_azure() {
    let server = start_azurite("archive");
    let config = azure_config(&server.endpoint, "az://archive/meridian");
    let store = ArchiveStore::open(&config, FsPath::new("unused")).unwrap();
    conformance(store).await;
    // A wrong key is refused and named, not taken for an empty archive.
    let mut config = azure_config(&server.endpoint, "az://archive");
    config.azure.access_key = Some(AZURITE_KEY.replace('E', "F"));
    let store = ArchiveStore::open(&config, FsPath::new("unused")).unwrap();
    let error = archiver(&store, &write_commitlog())
        .run_once(true, |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("object store az://archive"), "{error}");
}

#[test]
fn gcs_and_azure_urls_take_their_settings_from_the_config() {
    use object_store::azure::AzureConfigKey;
    use object_store::gcp::GoogleConfigKey;
    let config = ArchiveConfig {
        gcs: GcsConfig {
            service_account_path: Some("/etc/meridian/gcs.json".into()),
            endpoint: Some("http://127.0.0.1:4443".into()),
            allow_http: true,
        },
        azure: AzureConfig {
            account: Some("meridianarchive".into()),
            access_key: Some(AZURITE_KEY.into()),
            endpoint: None,
            allow_http: false,
        },
        ..ArchiveConfig::default()
    };
    let gcs = crate::store::gcs_builder("bucket-a", &config);
    assert_eq!(
        gcs.get_config_value(&GoogleConfigKey::Bucket).as_deref(),
        Some("bucket-a")
    );
    assert_eq!(
        gcs.get_config_value(&GoogleConfigKey::ServiceAccount).as_deref(),
        Some("/etc/meridian/gcs.json")
    );
    let azure = crate::store::azure_builder("container-a", &config);
    assert_eq!(
        azure.get_config_value(&AzureConfigKey::ContainerName).as_deref(),
        Some("container-a")
    );
    assert_eq!(
        azure.get_config_value(&AzureConfigKey::AccountName).as_deref(),
        Some("meridianarchive")
    );
    // A service account key that is not there is named when the store is opened.
    let error = ArchiveStore::open(
        &ArchiveConfig {
            store: "gs://bucket-a".into(),
            ..config.clone()
        },
        FsPath::new("unused"),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("configuring Google Cloud Storage"), "{error}");
    let mut config = config;
    config.gcs.service_account_path = None;
    // Both URLs open a prefixed store under the name they were given.
    for url in ["gs://bucket-a/meridian", "az://container-a/meridian"] {
        let store = ArchiveStore::open(
            &ArchiveConfig {
                store: url.into(),
                ..config.clone()
            },
            FsPath::new("unused"),
        )
        .unwrap();
        assert_eq!(store.url, url);
    }
    // A URL without its bucket or container says which it lacks.
    for (url, lacking) in [
        ("gs://", "gs://bucket or gs://bucket/prefix"),
        ("az:///x", "az://container or az://container/prefix"),
    ] {
        let error = ArchiveStore::open(
            &ArchiveConfig {
                store: url.into(),
                ..config.clone()
            },
            FsPath::new("unused"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains(lacking), "{error}");
    }
    // An Azure account left unset everywhere is named when the store is opened.
    if std::env::var_os("AZURE_STORAGE_ACCOUNT_NAME").is_none() {
        let error = ArchiveStore::open(
            &ArchiveConfig {
                store: "az://container-a".into(),
                ..ArchiveConfig::default()
            },
            FsPath::new("unused"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("Azure Blob Storage (account, key, endpoint"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_a_clear_error_after_retries() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = s3_config(&format!("http://127.0.0.1:{port}"), "s3://archive");
    let store = ArchiveStore::open(&config, FsPath::new("unused")).unwrap();
    let log = write_commitlog();
    let started = Instant::now();
    let error = archiver(&store, &log)
        .run_once(true, |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("object store s3://archive"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Wrong credentials: refused, named.
    let server = start_s3s("archive");
    let mut config = s3_config(&server.endpoint, "s3://archive");
    config.s3.secret_access_key = Some("wrong".into());
    let store = ArchiveStore::open(&config, FsPath::new("unused")).unwrap();
    let error = archiver(&store, &log)
        .run_once(true, |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("object store s3://archive"), "{error}");
    let error = ArchiveStore::open(
        &ArchiveConfig {
            store: "ftp://x".into(),
            ..ArchiveConfig::default()
        },
        FsPath::new("unused"),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("unknown scheme"), "{error}");
}

#[tokio::test]
async fn files_have_zstd_statistics_page_index_and_bloom_filters() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::serialized_reader::ReadOptionsBuilder;
    let log = write_commitlog();
    let store = ArchiveStore::in_memory();
    archiver(&store, &log).run_once(true, |_| {}).await.unwrap();
    let path = list(&store, "messages").await.remove(0);
    let bytes = bytes::Bytes::from(get(&store, &path).await);
    let properties = parquet::file::properties::ReaderProperties::builder()
        .set_read_bloom_filter(true)
        .build();
    let options = ReadOptionsBuilder::new()
        .with_page_index()
        .with_reader_properties(properties)
        .build();
    let reader = SerializedFileReader::new_with_options(bytes, options).unwrap();
    let metadata = reader.metadata();
    assert!(
        metadata.column_index().is_some() && metadata.offset_index().is_some(),
        "page index"
    );
    let row_group = reader.get_row_group(0).unwrap();
    let schema = metadata.file_metadata().schema_descr();
    let column_of = |name: &str| {
        (0..schema.num_columns())
            .find(|index| schema.column(*index).path().string() == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let msg_id = column_of("msg_id");
    let keys = column_of("keys.list.item");
    let chunk = metadata.row_group(0).column(msg_id);
    assert!(matches!(chunk.compression(), parquet::basic::Compression::ZSTD(_)));
    assert!(chunk.statistics().is_some());
    let first_id = {
        let messages = sample::messages(1, 1, 1, 0, 0, 10);
        messages[0].msg_id.clone()
    };
    let bloom = row_group
        .get_column_bloom_filter(msg_id)
        .expect("bloom filter on msg_id");
    assert!(bloom.check(&first_id.as_str()) || !path.contains("topic-0"));
    assert!(!bloom.check(&"NOT-AN-ID"));
    assert!(
        row_group.get_column_bloom_filter(keys).is_some(),
        "bloom filter on keys"
    );
    let sorting = metadata.row_group(0).sorting_columns().expect("sorting columns");
    assert_eq!(sorting.len(), 2);
    let _ = Arc::new(());
}

#[tokio::test]
async fn archive_retention_deletes_old_days_per_topic_and_verify_stays_clean() {
    let log = write_commitlog();
    let store = ArchiveStore::in_memory();
    archiver(&store, &log).run_once(true, |_| {}).await.unwrap();
    let config = ArchiveConfig {
        retention_days: Some(1),
        // topic-1 is kept forever.
        topic_retention_days: [("topic-1".to_owned(), 0)].into_iter().collect(),
        ..ArchiveConfig::default()
    };
    // Two days after the newest message: every day partition of topic-0 and topic-2 is expired.
    let later = 1_795_651_190_000 + 3 * 86_400_000;
    let deleted = verify::expire(&store, BROKER, &config, Some(later)).await.unwrap();
    assert!(!deleted.is_empty());
    assert!(
        deleted.iter().all(|path| !path.contains("topic=topic-1/")),
        "{deleted:?}"
    );
    let remaining = list(&store, "messages").await;
    assert!(
        remaining.iter().all(|path| path.contains("topic=topic-1/")),
        "{remaining:?}"
    );
    let report = verify::verify(&store, BROKER).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let reader = ArchiveReader::new(store.clone(), BROKER).unwrap();
    reader.refresh(true).await.unwrap();
    assert_eq!(
        reader.read("topic-0", 0, 0, 10, 1 << 20).await.unwrap(),
        Replay::NotArchived
    );
    assert!(matches!(
        reader.read("topic-1", 0, 0, 10, 1 << 20).await.unwrap(),
        Replay::Found { .. }
    ));
    // Expiring again deletes nothing more.
    assert!(
        verify::expire(&store, BROKER, &config, Some(later))
            .await
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_s3_region_comes_from_the_config_else_from_the_aws_environment() {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let region = |s3: S3Config| {
        let config = ArchiveConfig {
            s3,
            ..ArchiveConfig::default()
        };
        crate::store::s3_builder("bucket", &config).get_config_value(&AmazonS3ConfigKey::Region)
    };
    let configured = S3Config {
        region: Some("eu-west-3".into()),
        ..S3Config::default()
    };
    assert_eq!(region(configured).as_deref(), Some("eu-west-3"));
    // Left out: whatever AWS_REGION / AWS_DEFAULT_REGION say, not a fixed default over them.
    assert_eq!(
        region(S3Config::default()),
        AmazonS3Builder::from_env().get_config_value(&AmazonS3ConfigKey::Region)
    );
}

//! A power-loss simulator for the store, and the tests that use it.
//!
//! [`SimDisk`] implements [`Durability`] by keeping a shadow of the disk: at every sync it
//! snapshots the synced file (what a real `fdatasync` made durable), and at every atomic replace
//! the new content. [`SimDisk::crash_image`] then builds the data dir a machine would find after
//! losing power: every file as last synced, with each page written since kept, dropped or torn
//! at random (a page cache that wrote back some pages and not others). `kill -9` keeps the page
//! cache, so only this catches a missing or misplaced sync. It also injects sync failures.
//!
//! Simplifications, on the safe side for what is tested: directory operations (creating,
//! renaming, removing files) are durable at once, and a commitlog segment not yet synced is as
//! created (preallocated zeros). Start reading at [`sync_mode_acknowledged_messages_survive_power_loss`].

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use meridian_proto::MessageId;
use meridian_proto::messages::MessageData;
use meridian_proto::properties::PropertiesBuilder;

use super::durability::Durability;
use super::*;

const PAGE: usize = 4096;

/// A disk that remembers what was synced; see the module doc.
#[derive(Default)]
pub(crate) struct SimDisk {
    /// Durable content by path.
    shadow: Mutex<HashMap<PathBuf, Vec<u8>>>,
    /// When set, every sync fails with EIO (the page cache keeps the written bytes).
    failing: AtomicBool,
}

impl SimDisk {
    fn eio() -> io::Error {
        io::Error::from_raw_os_error(libc::EIO)
    }

    /// Makes every later sync fail, as a disk whose writeback failed.
    pub fn fail_syncs(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }

    /// Writes into `image` the data dir `live` as power loss would leave it; `rng` picks which
    /// unsynced pages survive.
    pub fn crash_image(&self, live: &Path, image: &Path, rng: &mut fastrand::Rng) {
        let shadow = self.shadow.lock().unwrap();
        let mut files = Vec::new();
        collect_files(live, &mut files);
        for path in files {
            if path.extension().is_some_and(|extension| extension == "tmp") {
                continue;
            }
            let current = fs::read(&path).unwrap();
            let in_commitlog = path.parent().is_some_and(|parent| parent.ends_with("commitlog"));
            let synced = match shadow.get(&path) {
                Some(synced) => synced.clone(),
                // A segment is created preallocated, and its directory synced.
                None if in_commitlog => vec![0; current.len()],
                // A file never synced may not exist at all.
                None if rng.bool() => continue,
                None => Vec::new(),
            };
            let out = image.join(path.strip_prefix(live).unwrap());
            fs::create_dir_all(out.parent().unwrap()).unwrap();
            fs::write(&out, mix(&synced, &current, rng)).unwrap();
        }
    }
}

/// What a file holds after power loss: `synced`, with the pages written since (`current`) kept,
/// dropped or torn at random, and for a file that grew, a random part of the growth.
fn mix(synced: &[u8], current: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
    let len = if current.len() > synced.len() {
        let grown_pages = (current.len() - synced.len()).div_ceil(PAGE);
        (synced.len() + rng.usize(0..=grown_pages) * PAGE).min(current.len())
    } else {
        current.len()
    };
    let mut out = synced.to_vec();
    out.resize(len, 0);
    for start in (0..len).step_by(PAGE) {
        let end = (start + PAGE).min(len);
        if out[start..end] == current[start..end] {
            continue;
        }
        match rng.u8(0..3) {
            0 => {}
            1 => out[start..end].copy_from_slice(&current[start..end]),
            _ => {
                let cut = rng.usize(start..=end);
                out[start..cut].copy_from_slice(&current[start..cut]);
            }
        }
    }
    out
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

impl Durability for SimDisk {
    fn sync_data(&self, path: &Path, _file: &File) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(SimDisk::eio());
        }
        let bytes = fs::read(path)?;
        self.shadow.lock().unwrap().insert(path.to_owned(), bytes);
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(SimDisk::eio());
        }
        Ok(())
    }

    fn replace_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(SimDisk::eio());
        }
        let temp = path.with_extension("tmp");
        fs::write(&temp, bytes)?;
        fs::rename(&temp, path)?;
        self.shadow.lock().unwrap().insert(path.to_owned(), bytes.to_vec());
        Ok(())
    }
}

const HOST: &str = "127.0.0.1:7911";

fn config(flush_mode: FlushMode) -> StoreConfig {
    StoreConfig {
        segment_size: 16 * 1024,
        cq_entries_per_file: 8,
        flush_mode,
        flush_interval_ms: 5,
        sync_flush_timeout_ms: 5_000,
        checkpoint_interval_ms: 3,
    }
}

fn open_on(dir: &Path, flush_mode: FlushMode, options: StoreOptions) -> Arc<MessageStore> {
    MessageStore::open_with(dir, config(flush_mode), HOST.parse().unwrap(), Arc::default(), options).unwrap()
}

fn message(body: String) -> MessageData {
    let mut properties = PropertiesBuilder::new();
    properties.msg_id(&MessageId::generate().to_string());
    MessageData {
        flags: 0,
        born_timestamp: 1_700_000_000_000,
        properties: Bytes::from(properties.finish()),
        body: Bytes::from(body),
        reconsume_count: 0,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Bodies of every message a consumer can read from a queue, in queue order.
fn visible(store: &MessageStore, topic: &str, queue_id: u32) -> Vec<Bytes> {
    let queue = store.consume_queue(topic, queue_id).unwrap();
    let mut offset = queue.min_offset();
    let mut bodies = Vec::new();
    while offset < queue.max_offset() {
        let entries = store.read_entries(&queue, offset, 64, u32::MAX).unwrap();
        let mut buffer = bytes::BytesMut::new();
        for entry in &entries {
            store.copy_record(entry, &mut buffer).unwrap();
        }
        for (index, stored) in record::decode_all(&buffer.freeze()).unwrap().into_iter().enumerate() {
            assert_eq!(stored.queue_offset, offset + index as u64, "consume queue order");
            bodies.push(stored.body);
        }
        offset += entries.len() as u64;
    }
    bodies
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

const QUEUES: u32 = 2;

/// One random run: sends (some waited for, i.e. acknowledged), a crash at a random point, a
/// random power-loss image, recovery. Checks the contract and returns how many acknowledged
/// messages were checked.
fn crash_case(seed: u64) -> usize {
    let mut rng = fastrand::Rng::with_seed(seed);
    let root = tempfile::tempdir().unwrap();
    let (live, image) = (root.path().join("live"), root.path().join("image"));
    let disk = Arc::new(SimDisk::default());
    let options = StoreOptions {
        replicated: false,
        disk: disk.clone(),
    };
    let store = open_on(&live, FlushMode::Sync, options);
    store.create_topic("t", QUEUES).unwrap();
    let runtime = runtime();
    let mut sent: Vec<Vec<Bytes>> = vec![Vec::new(); QUEUES as usize];
    let mut acked: Vec<usize> = vec![0; QUEUES as usize];
    let sends = rng.usize(1..40);
    for send in 0..sends {
        let queue_id = rng.u32(0..QUEUES);
        let batch: Vec<MessageData> = (0..rng.usize(1..4))
            .map(|index| message(format!("{seed}-{send}-{index}-{}", "p".repeat(rng.usize(0..900)))))
            .collect();
        let appended = store
            .append("t", Some(queue_id), &batch, HOST.parse().unwrap())
            .unwrap();
        sent[queue_id as usize].extend(batch.iter().map(|message| message.body.clone()));
        // Half the sends are acknowledged (their producers waited for the sync); the others are
        // in flight at the crash.
        if rng.bool() {
            runtime.block_on(store.wait_flushed(appended.end_offset)).unwrap();
            acked[queue_id as usize] = sent[queue_id as usize].len();
        }
        // Now and then the flusher and the checkpoint get ahead.
        if rng.u8(0..4) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if rng.u8(0..8) == 0 {
            let queue = store.consume_queue("t", queue_id).unwrap();
            store.commit_offset("g", "t", queue_id, queue.max_offset()).unwrap();
        }
    }
    store.crash();
    disk.crash_image(&live, &image, &mut rng);
    drop(store);

    if std::env::var("CRASH_DEBUG").is_ok() {
        debug_dump(&live, "live");
        debug_dump(&image, "image");
    }
    // Recovery's own syncs go to a fresh simulated disk: real fsyncs would only slow the loop.
    let recovered = MessageStore::open_with(
        &image,
        config(FlushMode::Sync),
        HOST.parse().unwrap(),
        Arc::default(),
        StoreOptions {
            replicated: false,
            disk: Arc::new(SimDisk::default()),
        },
    )
    .unwrap_or_else(|error| panic!("seed {seed}: recovery failed: {error}"));
    // The log is a CRC-valid prefix of what was appended, per queue; consume queues index
    // exactly its records.
    let mut in_log: Vec<Vec<Bytes>> = vec![Vec::new(); QUEUES as usize];
    let end = recovered.commitlog.scan(
        recovered.commitlog.min_offset(),
        recovered.committed_offset(),
        |found, _| {
            assert!(
                record::Record::parse(found.as_bytes()).is_ok(),
                "seed {seed}: recovered record fails its CRC"
            );
            in_log[found.queue_id() as usize].push(Bytes::copy_from_slice(found.body()));
        },
    );
    assert_eq!(
        end,
        recovered.committed_offset(),
        "seed {seed}: unreadable record below the end"
    );
    let mut checked = 0;
    for queue_id in 0..QUEUES {
        let index = queue_id as usize;
        let bodies = visible(&recovered, "t", queue_id);
        assert_eq!(
            bodies, in_log[index],
            "seed {seed}: consume queue {queue_id} disagrees with the log"
        );
        assert!(
            bodies.len() >= acked[index],
            "seed {seed}: queue {queue_id} lost acknowledged messages: {} of {} acknowledged survive",
            bodies.len(),
            acked[index]
        );
        assert_eq!(
            bodies[..],
            sent[index][..bodies.len()],
            "seed {seed}: queue {queue_id} is not a prefix of what was sent"
        );
        let queue = recovered.consume_queue("t", queue_id).unwrap();
        if let Some(offset) = recovered.query_offset("g", "t", queue_id).unwrap() {
            assert!(
                offset <= queue.max_offset(),
                "seed {seed}: consumer offset past the queue's end"
            );
        }
        assert_eq!(recovered.queue_offsets_end("t", queue_id), queue.max_offset());
        checked += acked[index];
    }
    // The recovered store takes writes where the log ends.
    let next = recovered
        .append("t", Some(0), &[message("after".into())], HOST.parse().unwrap())
        .unwrap();
    assert_eq!(next.results[0].queue_offset, in_log[0].len() as u64);
    recovered.shutdown();
    checked
}

/// Over many random crash points and power-loss images, in sync mode: every acknowledged message
/// survives, the recovered log is a CRC-valid prefix of what was sent, and consume queues, queue
/// offsets and consumer offsets agree with it.
#[test]
fn sync_mode_acknowledged_messages_survive_power_loss() {
    let started = std::time::Instant::now();
    let mut checked = 0;
    let seeds = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .map_or(0..120, |seed: u64| seed..seed + 1);
    for seed in seeds {
        checked += crash_case(seed);
    }
    assert!(
        checked > 500,
        "the cases acknowledged too little to mean anything: {checked}"
    );
    eprintln!("{checked} acknowledged messages checked in {:?}", started.elapsed());
}

#[test]
fn a_failed_sync_fails_the_waiting_sends_and_every_later_one_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(SimDisk::default());
    let options = StoreOptions {
        replicated: false,
        disk: disk.clone(),
    };
    let store = open_on(dir.path(), FlushMode::Sync, options);
    store.create_topic("t", 1).unwrap();
    let runtime = runtime();
    let host = HOST.parse().unwrap();
    let first = store.append("t", Some(0), &[message("synced".into())], host).unwrap();
    runtime.block_on(store.wait_flushed(first.end_offset)).unwrap();
    wait_until("the synced message is visible", || visible(&store, "t", 0).len() == 1);

    disk.fail_syncs();
    let lost = store
        .append("t", Some(0), &[message("not synced".into())], host)
        .unwrap();
    let refused = runtime.block_on(store.wait_flushed(lost.end_offset)).unwrap_err();
    assert!(matches!(refused, BrokerError::DiskFailed(_)), "{refused}");
    let text = refused.to_string();
    assert!(text.contains("disk failed") && text.contains("restart"), "{text}");
    assert!(store.failure().is_some());
    // Nothing later is acknowledged, or even taken.
    let later = store
        .append("t", Some(0), &[message("later".into())], host)
        .unwrap_err();
    assert!(matches!(later, BrokerError::DiskFailed(_)), "{later}");
    // Consumers never see what was not synced.
    assert_eq!(store.confirmed_offset(), first.end_offset);
    assert_eq!(visible(&store, "t", 0), [Bytes::from("synced")]);
    store.shutdown();

    // A restart recovers from what is on disk (here the page cache still holds the failed
    // write, as it may on Linux: recovery finds it CRC-valid and keeps it).
    let reopened = open_on(dir.path(), FlushMode::Sync, StoreOptions::default());
    assert!(reopened.failure().is_none());
    let after = reopened
        .append("t", Some(0), &[message("after restart".into())], host)
        .unwrap();
    runtime.block_on(reopened.wait_flushed(after.end_offset)).unwrap();
    reopened.shutdown();
}

#[test]
fn a_replicated_store_serves_only_what_its_group_confirmed_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let host = HOST.parse().unwrap();
    let replicated = || StoreOptions {
        replicated: true,
        disk: Arc::new(RealDisk),
    };
    let store = open_on(dir.path(), FlushMode::Async, replicated());
    store.create_topic("t", 1).unwrap();
    let first = store.append("t", Some(0), &[message("one".into())], host).unwrap();
    let second = store.append("t", Some(0), &[message("two".into())], host).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(store.confirmed_offset(), 0);
    assert!(visible(&store, "t", 0).is_empty(), "nothing is confirmed yet");

    assert!(store.raise_replication_limit(first.end_offset));
    wait_until("the first message is visible", || visible(&store, "t", 0).len() == 1);
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(
        visible(&store, "t", 0),
        [Bytes::from("one")],
        "the second is not confirmed"
    );
    assert!(
        !store.raise_replication_limit(0),
        "the confirmed offset never goes back"
    );
    assert_eq!(store.confirmed_offset(), first.end_offset);
    store.shutdown();

    // After a restart the broker serves what its group had confirmed, not what it wrote, and
    // gives new messages queue offsets after the unconfirmed one.
    let reopened = open_on(dir.path(), FlushMode::Async, replicated());
    assert_eq!(reopened.confirmed_offset(), first.end_offset);
    assert_eq!(visible(&reopened, "t", 0), [Bytes::from("one")]);
    let third = reopened.append("t", Some(0), &[message("three".into())], host).unwrap();
    assert_eq!(third.results[0].queue_offset, 2);
    reopened.raise_replication_limit(third.end_offset);
    wait_until("all three are visible", || visible(&reopened, "t", 0).len() == 3);
    assert!(second.end_offset < third.end_offset);
    reopened.shutdown();
}

/// A record whose header was zeroed ends the log; recovery must also zero what lies behind it,
/// or a new record of the same size written there later lets the next recovery read on into the
/// old records.
#[test]
fn recovery_zeroes_behind_a_zero_header_so_old_records_never_revive() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let host = HOST.parse().unwrap();
    let body = |name: &str| format!("{name}-{}", "x".repeat(200));
    let store = open_on(dir.path(), FlushMode::Sync, StoreOptions::default());
    store.create_topic("t", 1).unwrap();
    let mut offsets = Vec::new();
    for name in ["a", "b", "c"] {
        offsets.push(
            store
                .append("t", Some(0), &[message(body(name))], host)
                .unwrap()
                .results[0]
                .commitlog_offset,
        );
    }
    store.shutdown();
    drop(store);
    let segment = dir.path().join("commitlog").join(segment::segment_file_name(0));
    File::options()
        .write(true)
        .open(&segment)
        .unwrap()
        .write_all_at(&[0; 8], offsets[1])
        .unwrap();

    let store = open_on(dir.path(), FlushMode::Sync, StoreOptions::default());
    assert_eq!(store.committed_offset(), offsets[1], "the log ends at the zero header");
    // "d" has the size "b" had, so it ends exactly where "c" began.
    let d = store.append("t", Some(0), &[message(body("d"))], host).unwrap();
    assert_eq!(d.end_offset, offsets[2]);
    store.shutdown();
    drop(store);

    let store = open_on(dir.path(), FlushMode::Sync, StoreOptions::default());
    assert_eq!(
        store.committed_offset(),
        offsets[2],
        "\"c\" came back from behind the zero header"
    );
    assert_eq!(
        visible(&store, "t", 0),
        [Bytes::from(body("a")), Bytes::from(body("d"))]
    );
    store.shutdown();
}

fn debug_dump(dir: &Path, label: &str) {
    eprintln!(
        "== {label}: checkpoint {:?}",
        fs::read_to_string(dir.join("checkpoint")).ok()
    );
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.sort();
    for path in files {
        let bytes = fs::read(&path).unwrap();
        if path.parent().unwrap().ends_with("commitlog") {
            let start: u64 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
            let mut position = 0;
            while position < bytes.len() {
                match record::read_entry(&bytes[position..]) {
                    Ok(record::Entry::Record(found)) => {
                        eprintln!(
                            "  log {} q{} qo{} size {}",
                            start + position as u64,
                            found.queue_id(),
                            found.queue_offset(),
                            found.total_size()
                        );
                        position += found.total_size();
                    }
                    Ok(record::Entry::Blank(len)) => {
                        eprintln!("  blank {} +{len}", start + position as u64);
                        position += len
                    }
                    Err(error) => {
                        eprintln!("  end {} {error}", start + position as u64);
                        break;
                    }
                }
            }
        } else if path.to_str().unwrap().contains("consumequeue") {
            let entries: Vec<(u64, u32)> = bytes
                .chunks_exact(consume_queue::ENTRY_LEN)
                .map(|chunk| {
                    let entry = CqEntry::decode(chunk);
                    (entry.commitlog_offset, entry.size)
                })
                .collect();
            eprintln!("  cq {} {:?}", path.display(), entries);
        }
    }
}

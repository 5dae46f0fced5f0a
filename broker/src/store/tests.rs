//! Contract tests of the storage engine: what is acknowledged survives restarts and crashes,
//! byte for byte, and damaged tails are cut back to a valid prefix.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use meridian_proto::MessageId;
use meridian_proto::messages::MessageData;
use meridian_proto::properties::PropertiesBuilder;
use meridian_proto::record::{self, StoredMessage};
use proptest::prelude::*;

use super::*;

const HOST: &str = "127.0.0.1:7911";

fn small_config(flush_mode: FlushMode) -> StoreConfig {
    StoreConfig {
        segment_size: 64 * 1024,
        cq_entries_per_file: 16,
        flush_mode,
        flush_interval_ms: 20,
        sync_flush_timeout_ms: 5_000,
        checkpoint_interval_ms: 50,
    }
}

fn open(dir: &Path, config: &StoreConfig) -> Arc<MessageStore> {
    MessageStore::open(dir, config.clone(), HOST.parse().unwrap(), Arc::default()).unwrap()
}

fn message(index: usize, tag: &str) -> MessageData {
    let mut properties = PropertiesBuilder::new();
    properties
        .msg_id(&MessageId::generate().to_string())
        .keys(&[format!("key-{index}")])
        .unwrap()
        .tag(tag)
        .unwrap();
    MessageData {
        flags: 0,
        born_timestamp: 1_700_000_000_000 + index as i64,
        properties: Bytes::from(properties.finish()),
        body: Bytes::from(format!("body-{index}-{}", "x".repeat(index % 300))),
        reconsume_count: 0,
    }
}

/// Reads every message of a queue, from its min offset to its max.
fn read_all(store: &MessageStore, topic: &str, queue_id: u32) -> Vec<StoredMessage> {
    let queue = store.consume_queue(topic, queue_id).unwrap();
    let mut offset = queue.min_offset();
    let mut messages = Vec::new();
    while offset < queue.max_offset() {
        let entries = store.read_entries(&queue, offset, 7, u32::MAX).unwrap();
        let mut buffer = BytesMut::new();
        for entry in &entries {
            store.copy_record(entry, &mut buffer).unwrap();
        }
        messages.extend(record::decode_all(&buffer.freeze()).unwrap());
        offset += entries.len() as u64;
    }
    messages
}

fn wait_dispatched(store: &MessageStore) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.dispatched_offset() < store.committed_offset() {
        assert!(std::time::Instant::now() < deadline, "dispatcher stalled");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn assert_same(stored: &[StoredMessage], sent: &[MessageData]) {
    assert_eq!(stored.len(), sent.len());
    for (index, (stored, sent)) in stored.iter().zip(sent).enumerate() {
        assert_eq!(stored.queue_offset, index as u64);
        assert_eq!(stored.body, sent.body, "body of message {index}");
        assert_eq!(stored.properties, sent.properties, "properties of message {index}");
        assert_eq!(stored.born_timestamp, sent.born_timestamp);
    }
}

#[test]
fn restart_keeps_every_message_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(FlushMode::Sync);
    let store = open(dir.path(), &config);
    store.create_topic("orders", 2).unwrap();
    let sent: Vec<MessageData> = (0..500).map(|index| message(index, "created")).collect();
    for chunk in sent.chunks(5) {
        let appended = store
            .append("orders", Some(1), chunk, "10.0.0.1:4000".parse().unwrap())
            .unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(store.wait_flushed(appended.end_offset))
            .unwrap();
        assert!(store.flushed_offset() >= appended.end_offset);
    }
    store.shutdown();
    drop(store);

    let store = open(dir.path(), &config);
    assert!(!store.recovery_report().torn_tail);
    assert_eq!(
        store.queue_bounds("orders", 1).unwrap(),
        QueueBounds {
            min_offset: 0,
            max_offset: 500
        }
    );
    assert_same(&read_all(&store, "orders", 1), &sent);
    assert!(read_all(&store, "orders", 0).is_empty());
    // 500 messages of up to ~400 bytes roll over several 64 KiB segments.
    assert!(std::fs::read_dir(dir.path().join("commitlog")).unwrap().count() > 2);
    store.shutdown();
}

#[test]
fn crash_without_checkpoint_rebuilds_consume_queues() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(FlushMode::Async);
    let store = open(dir.path(), &config);
    store.create_topic("t", 1).unwrap();
    let sent: Vec<MessageData> = (0..200).map(|index| message(index, "a")).collect();
    for chunk in sent.chunks(10) {
        store
            .append("t", Some(0), chunk, "10.0.0.1:4000".parse().unwrap())
            .unwrap();
    }
    store.crash();
    // Lose every consume queue and the checkpoint: both are derived from the commitlog.
    std::fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();

    let reopened = open(dir.path(), &config);
    assert_eq!(reopened.recovery_report().redispatched, 200);
    assert_same(&read_all(&reopened, "t", 0), &sent);
    let appended = reopened
        .append("t", Some(0), &[message(200, "a")], "10.0.0.1:4000".parse().unwrap())
        .unwrap();
    assert_eq!(appended.results[0].queue_offset, 200);
    reopened.shutdown();
}

/// How the last record is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The write stopped at this byte: everything after it was never written.
    Torn(usize),
    /// This byte was flipped.
    Flipped(usize),
}

fn damage_last_record_and_recover(damage: Damage, count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(FlushMode::Async);
    let store = open(dir.path(), &config);
    store.create_topic("t", 1).unwrap();
    let sent: Vec<MessageData> = (0..count).map(|index| message(index, "a")).collect();
    let mut last = None;
    for one in &sent {
        last = Some(
            store
                .append(
                    "t",
                    Some(0),
                    std::slice::from_ref(one),
                    "10.0.0.1:4000".parse().unwrap(),
                )
                .unwrap(),
        );
    }
    wait_dispatched(&store);
    let last_offset = last.unwrap().results[0].commitlog_offset;
    let last_len = (store.committed_offset() - last_offset) as usize;
    // Let the checkpoint cover everything, so recovery must find the damage by itself.
    store.shutdown();

    let segment_start = last_offset - last_offset % config.segment_size;
    let path = dir
        .path()
        .join("commitlog")
        .join(segment::segment_file_name(segment_start));
    let mut bytes = std::fs::read(&path).unwrap();
    let start = (last_offset - segment_start) as usize;
    match damage {
        Damage::Torn(at) => bytes[start + at % last_len..start + last_len].fill(0),
        Damage::Flipped(at) => bytes[start + at % last_len] ^= 0x5A,
    }
    std::fs::write(&path, &bytes).unwrap();

    let reopened = open(dir.path(), &config);
    assert_eq!(reopened.recovery_report().valid_end, last_offset, "{damage:?}");
    // A write torn within the record's leading zero bytes leaves only unwritten space behind.
    if let Damage::Flipped(_) = damage {
        assert!(reopened.recovery_report().torn_tail);
    }
    assert_same(&read_all(&reopened, "t", 0), &sent[..count - 1]);
    // The repaired log takes new writes where the damaged record was.
    let appended = reopened
        .append("t", Some(0), &[message(999, "a")], "10.0.0.1:4000".parse().unwrap())
        .unwrap();
    assert_eq!(appended.results[0].queue_offset as usize, count - 1);
    assert_eq!(appended.results[0].commitlog_offset, last_offset);
    reopened.shutdown();
    drop(reopened);
    let again = open(dir.path(), &config);
    assert_eq!(read_all(&again, "t", 0).len(), count);
    again.shutdown();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn a_torn_last_record_is_cut_back_to_a_valid_prefix(at in 0usize..10_000, count in 2usize..40) {
        damage_last_record_and_recover(Damage::Torn(at), count);
    }

    #[test]
    fn a_corrupt_last_record_is_cut_back_to_a_valid_prefix(at in 0usize..10_000, count in 2usize..40) {
        damage_last_record_and_recover(Damage::Flipped(at), count);
    }
}

#[test]
fn consume_queue_entries_past_the_repaired_end_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(FlushMode::Async);
    let store = open(dir.path(), &config);
    store.create_topic("t", 1).unwrap();
    let sent: Vec<MessageData> = (0..30).map(|index| message(index, "a")).collect();
    let appended = store
        .append("t", Some(0), &sent, "10.0.0.1:4000".parse().unwrap())
        .unwrap();
    wait_dispatched(&store);
    store.shutdown();
    // Tear the commitlog in the middle of the batch after its entries were synced.
    let cut = appended.results[20].commitlog_offset as usize + 10;
    let path = dir.path().join("commitlog").join(segment::segment_file_name(0));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[cut..].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    let reopened = open(dir.path(), &config);
    assert_eq!(reopened.queue_bounds("t", 0).unwrap().max_offset, 20);
    assert_same(&read_all(&reopened, "t", 0), &sent[..20]);
    reopened.shutdown();
}

#[test]
fn search_offset_finds_the_first_message_at_or_after_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &small_config(FlushMode::Async));
    store.create_topic("t", 1).unwrap();
    let mut times = Vec::new();
    for index in 0..6 {
        let appended = store
            .append("t", Some(0), &[message(index, "a")], "10.0.0.1:4000".parse().unwrap())
            .unwrap();
        times.push(appended.results[0].store_timestamp);
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    wait_dispatched(&store);
    assert_eq!(store.search_offset("t", 0, 0).unwrap(), 0);
    assert_eq!(store.search_offset("t", 0, times[3]).unwrap(), 3);
    assert_eq!(store.search_offset("t", 0, times[5] + 1).unwrap(), 6);
    store.shutdown();
}

#[test]
fn offsets_survive_a_restart_and_unknown_topics_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(FlushMode::Async);
    let store = open(dir.path(), &config);
    store.create_topic("t", 2).unwrap();
    assert!(
        !store.create_topic("t", 2).unwrap(),
        "creating the same topic again is a no-op"
    );
    assert!(matches!(
        store.create_topic("t", 3),
        Err(BrokerError::TopicExists { queues: 2, .. })
    ));
    store.commit_offset("g", "t", 1, 0).unwrap();
    assert!(matches!(
        store.commit_offset("g", "missing", 0, 1),
        Err(BrokerError::TopicNotFound(_))
    ));
    assert!(matches!(
        store.append("missing", None, &[message(0, "a")], HOST.parse().unwrap()),
        Err(BrokerError::TopicNotFound(_))
    ));
    assert!(matches!(
        store.append("t", Some(9), &[message(0, "a")], HOST.parse().unwrap()),
        Err(BrokerError::QueueNotFound { .. })
    ));
    store.shutdown();
    let store = open(dir.path(), &config);
    assert_eq!(store.query_offset("g", "t", 1).unwrap(), Some(0));
    assert_eq!(store.query_offset("g", "t", 0).unwrap(), None);
    assert_eq!(store.topics(), [("t".to_string(), 2)]);
    store.shutdown();
}

#[test]
fn messages_without_an_id_get_one_and_records_too_large_for_a_segment_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &small_config(FlushMode::Async));
    store.create_topic("t", 1).unwrap();
    let bare = MessageData {
        flags: 0,
        born_timestamp: 1,
        properties: Bytes::new(),
        body: Bytes::from_static(b"x"),
        reconsume_count: 0,
    };
    let appended = store
        .append("t", None, std::slice::from_ref(&bare), HOST.parse().unwrap())
        .unwrap();
    assert!(MessageId::parse(&appended.results[0].msg_id).is_ok());
    let huge = MessageData {
        body: Bytes::from(vec![1u8; 70 * 1024]),
        ..bare
    };
    assert!(matches!(
        store.append("t", None, &[huge], HOST.parse().unwrap()),
        Err(BrokerError::RecordTooLarge { .. })
    ));
    wait_dispatched(&store);
    let stored = read_all(&store, "t", 0);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].msg_id(), appended.results[0].msg_id);
    store.shutdown();
}

#[test]
fn combined_appends_fail_alone_roll_segments_and_keep_queue_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(FlushMode::Async);
    let store = open(dir.path(), &config);
    store.create_topic("t", 2).unwrap();
    let host: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let sent: Vec<MessageData> = (0..400).map(|index| message(index, "a")).collect();
    // Groups of 10 sends of 4 messages, with a bad request in the middle of each group; 64 KiB
    // segments force rolls inside groups.
    let mut expected = Vec::new();
    for group in sent.chunks(40) {
        let mut requests: Vec<AppendRequest<'_>> = group
            .chunks(4)
            .map(|messages| AppendRequest {
                topic: "t",
                queue_id: Some(1),
                messages,
                born_host: host,
            })
            .collect();
        requests.insert(
            3,
            AppendRequest {
                topic: "missing",
                queue_id: None,
                messages: &group[..1],
                born_host: host,
            },
        );
        requests.insert(
            5,
            AppendRequest {
                topic: "t",
                queue_id: Some(7),
                messages: &group[..1],
                born_host: host,
            },
        );
        let outcomes = store.append_many(&requests);
        assert_eq!(outcomes.len(), requests.len());
        assert!(matches!(outcomes[3], Err(BrokerError::TopicNotFound(_))));
        assert!(matches!(outcomes[5], Err(BrokerError::QueueNotFound { .. })));
        for (index, outcome) in outcomes
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != 3 && *index != 5)
        {
            let appended = outcome
                .as_ref()
                .unwrap_or_else(|error| panic!("request {index}: {error}"));
            assert!(appended.end_offset <= store.committed_offset());
            for result in &appended.results {
                assert_eq!(
                    result.queue_offset as usize,
                    expected.len(),
                    "queue offsets follow request order"
                );
                expected.push(result.msg_id.clone());
            }
        }
    }
    wait_dispatched(&store);
    assert_same(&read_all(&store, "t", 1), &sent);
    assert!(
        std::fs::read_dir(dir.path().join("commitlog")).unwrap().count() >= 2,
        "groups rolled segments"
    );
    store.shutdown();
    drop(store);
    let reopened = open(dir.path(), &config);
    assert_same(&read_all(&reopened, "t", 1), &sent);
    reopened.shutdown();
}

#[test]
fn grown_topics_keep_their_messages_and_serve_the_new_queues_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(FlushMode::Async);
    let store = open(dir.path(), &config);
    store.create_topic("t", 2).unwrap();
    let before: Vec<MessageData> = (0..5).map(|index| message(index, "a")).collect();
    store.append("t", Some(1), &before, HOST.parse().unwrap()).unwrap();
    assert!(store.grow_topic("t", 4).unwrap());
    assert!(!store.grow_topic("t", 3).unwrap(), "queues are never taken away");
    assert!(matches!(
        store.grow_topic("missing", 4),
        Err(BrokerError::TopicNotFound(_))
    ));
    assert_eq!(store.topic_queues("t"), Some(4));
    let after: Vec<MessageData> = (0..3).map(|index| message(index, "b")).collect();
    let appended = store.append("t", Some(3), &after, HOST.parse().unwrap()).unwrap();
    assert_eq!(appended.results[0].queue_offset, 0);
    wait_dispatched(&store);
    assert_same(&read_all(&store, "t", 1), &before);
    assert_same(&read_all(&store, "t", 3), &after);
    store.shutdown();

    let store = open(dir.path(), &config);
    assert_eq!(store.topics(), [("t".to_string(), 4)]);
    assert_same(&read_all(&store, "t", 3), &after);
    store.shutdown();
}

/// Copies everything `master` holds past `replica`'s end into `replica`, chunk by chunk, the way
/// a slave's fetch loop does. Returns how many chunks it took.
fn replicate(master: &MessageStore, replica: &MessageStore, max_bytes: usize) -> usize {
    let mut chunks = 0;
    loop {
        let from = replica.committed_offset();
        let len = master.replica_chunk_len(from, max_bytes);
        if len == 0 {
            return chunks;
        }
        let mut chunk = BytesMut::new();
        master.copy_replica(from, len, &mut chunk).unwrap();
        assert_eq!(replica.append_replica(from, &chunk).unwrap(), from + len as u64);
        chunks += 1;
    }
}

fn commitlog_bytes(store: &MessageStore) -> Vec<u8> {
    let end = store.committed_offset();
    let mut all = Vec::new();
    let mut offset = 0;
    while offset < end {
        let len = store.replica_chunk_len(offset, usize::MAX);
        let mut chunk = BytesMut::new();
        store.copy_replica(offset, len, &mut chunk).unwrap();
        all.extend_from_slice(&chunk);
        offset += len as u64;
    }
    all
}

/// Two fresh stores with the same small config, in their own temp dirs (kept alive by the first
/// value).
fn master_and_replica() -> (
    [tempfile::TempDir; 2],
    StoreConfig,
    Arc<MessageStore>,
    Arc<MessageStore>,
) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let config = small_config(FlushMode::Async);
    let (master, replica) = (open(dirs[0].path(), &config), open(dirs[1].path(), &config));
    (dirs, config, master, replica)
}

#[test]
fn a_replica_holds_the_masters_log_byte_for_byte_across_segments() {
    let (_dirs, config, master, replica) = master_and_replica();
    master.create_topic("orders", 3).unwrap();
    master.create_topic("audit", 1).unwrap();
    let sent: Vec<MessageData> = (0..1000).map(|index| message(index, "t")).collect();
    for (index, chunk) in sent.chunks(10).enumerate() {
        let (topic, queue_id) = if index % 5 == 0 {
            ("audit", 0)
        } else {
            ("orders", index as u32 % 3)
        };
        master
            .append(topic, Some(queue_id), chunk, HOST.parse().unwrap())
            .unwrap();
    }
    assert!(
        master.committed_offset() > 3 * config.segment_size,
        "the test spans several segments"
    );

    // Small chunks: many whole records per chunk, never a partial one, never across a segment.
    let chunks = replicate(&master, &replica, 8 * 1024);
    assert!(chunks > 10, "{chunks} chunks");
    assert_eq!(replica.committed_offset(), master.committed_offset());
    assert_eq!(commitlog_bytes(&replica), commitlog_bytes(&master));
    wait_dispatched(&master);
    wait_dispatched(&replica);
    assert_eq!(
        replica.topics(),
        master.topics(),
        "topics and queues come with the records"
    );
    for (topic, queues) in master.topics() {
        for queue_id in 0..queues {
            let (on_master, on_replica) = (
                read_all(&master, &topic, queue_id),
                read_all(&replica, &topic, queue_id),
            );
            assert_eq!(on_master, on_replica, "{topic}/{queue_id}");
        }
    }
    // The replica, promoted, continues every queue where the master left it.
    let appended = replica
        .append("orders", Some(1), &[message(9_999, "t")], HOST.parse().unwrap())
        .unwrap();
    assert_eq!(
        appended.results[0].queue_offset,
        master.queue_bounds("orders", 1).unwrap().max_offset
    );
}

#[test]
fn a_corrupt_or_misplaced_chunk_is_refused_and_changes_nothing() {
    let (_dirs, _, master, replica) = master_and_replica();
    master.create_topic("orders", 1).unwrap();
    let sent: Vec<MessageData> = (0..5).map(|index| message(index, "t")).collect();
    master.append("orders", Some(0), &sent, HOST.parse().unwrap()).unwrap();
    let len = master.replica_chunk_len(0, usize::MAX);
    let mut chunk = BytesMut::new();
    master.copy_replica(0, len, &mut chunk).unwrap();

    let misplaced = replica.append_replica(100, &chunk).unwrap_err().to_string();
    assert!(misplaced.contains("this log ends at 0"), "{misplaced}");
    let mut corrupt = chunk.to_vec();
    corrupt[len - 1] ^= 0xff;
    let refused = replica.append_replica(0, &corrupt).unwrap_err().to_string();
    assert!(refused.contains("not a valid record"), "{refused}");
    assert_eq!(replica.committed_offset(), 0);
    assert!(replica.topics().is_empty());
}

#[test]
fn a_divergent_tail_is_truncated_and_the_log_continues_from_the_masters_lineage() {
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = small_config(FlushMode::Async);
    // The old master at epoch 1 writes 30 messages; the new one replicated only the first 20.
    let old_master = open(old_dir.path(), &config);
    let new_master = open(new_dir.path(), &config);
    old_master.begin_epoch(1).unwrap();
    old_master.create_topic("orders", 2).unwrap();
    let sent: Vec<MessageData> = (0..30).map(|index| message(index, "t")).collect();
    for chunk in sent.chunks(10) {
        old_master
            .append("orders", Some(0), chunk, HOST.parse().unwrap())
            .unwrap();
    }
    let shared_end = {
        let mut end = 0;
        while end < old_master.committed_offset() {
            let len = old_master.replica_chunk_len(end, 1);
            let mut chunk = BytesMut::new();
            old_master.copy_replica(end, len, &mut chunk).unwrap();
            new_master.append_replica(end, &chunk).unwrap();
            end += len as u64;
            if new_master.queue_offsets_end("orders", 0) == 20 {
                break;
            }
        }
        end
    };
    new_master.adopt_epochs(&old_master.epochs()).unwrap();
    old_master.commit_offset("billing", "orders", 0, 28).unwrap();
    // Promoted at epoch 2, the new master writes its own records.
    assert_eq!(new_master.begin_epoch(2).unwrap(), shared_end);
    new_master
        .append("orders", Some(0), &[message(100, "new")], HOST.parse().unwrap())
        .unwrap();
    assert_eq!(new_master.epoch_end(1), shared_end);

    // The old master returns as a slave: it cuts back to where epoch 2 began, then replicates.
    wait_dispatched(&old_master);
    old_master
        .truncate_to(new_master.epoch_end(old_master.last_epoch()))
        .unwrap();
    assert_eq!(old_master.committed_offset(), shared_end);
    assert_eq!(old_master.queue_bounds("orders", 0).unwrap().max_offset, 20);
    assert_eq!(
        old_master.query_offset("billing", "orders", 0).unwrap(),
        Some(20),
        "a consumer offset past the cut is lowered to it"
    );
    replicate(&new_master, &old_master, 4096);
    old_master.adopt_epochs(&new_master.epochs()).unwrap();
    assert_eq!(commitlog_bytes(&old_master), commitlog_bytes(&new_master));
    assert_eq!(old_master.last_epoch(), 2);
    wait_dispatched(&old_master);
    let messages = read_all(&old_master, "orders", 0);
    assert_eq!(messages.len(), 21);
    assert_eq!(messages[20].body, message(100, "new").body);

    // Everything survives a restart: the cut, the epochs, the queues.
    old_master.shutdown();
    drop(old_master);
    let reopened = open(old_dir.path(), &config);
    assert_eq!(reopened.committed_offset(), new_master.committed_offset());
    assert_eq!(reopened.epochs(), new_master.epochs());
    assert_eq!(read_all(&reopened, "orders", 0).len(), 21);
}

#[test]
fn consumer_offsets_replicate_with_a_version() {
    let (_dirs, _, master, replica) = master_and_replica();
    for store in [&master, &replica] {
        store.create_topic("orders", 2).unwrap();
    }
    let before = master.offsets_version();
    master.commit_offset("billing", "orders", 1, 7).unwrap();
    assert!(master.offsets_version() > before);
    let (version, json) = master.export_offsets();
    replica.import_offsets(version, &json).unwrap();
    assert_eq!(replica.offsets_version(), version);
    assert_eq!(replica.query_offset("billing", "orders", 1).unwrap(), Some(7));
    assert!(replica.import_offsets(1, b"{not json").is_err());
}

//! Local retention of archived segments: with `[archive] enabled`, the broker reads its archive's
//! manifest and deletes its oldest sealed segments once each is committed there, its archived
//! copy matches the local bytes (checksum, record count, every file's checksum and rows), and it
//! is older than `local_retention_secs`. Deletion goes strictly oldest first, so the local log stays one
//! contiguous range; nothing unarchived is ever deleted, and with archiving off nothing is.
//!
//! Nor is a segment holding a message the broker itself still has to read: a delayed message not
//! yet released from its delay slot, or a half message whose transaction is not settled (the
//! scheduler and the check-back read them from the local log, however long the delay).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meridian_archive::reader::ArchiveReader;
use meridian_archive::store::{ArchiveConfig, ArchiveStore};
use meridian_proto::topics::{DELAY_TOPIC, HALF_TOPIC};
use tokio_util::sync::CancellationToken;

use crate::error::{BrokerError, Result};
use crate::schedule::SCHEDULER_GROUP;
use crate::store::MessageStore;
use crate::transaction::TRANSACTION_GROUP;

/// The archive folder when `archive.store` is empty: `archive` beside the broker's data dir
/// (`meridian-data/archive` for `meridian-data/broker`).
pub fn default_archive_dir(data_dir: &Path) -> PathBuf {
    data_dir
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("archive")
}

/// Opens the archive store the config names.
pub fn open_store(config: &ArchiveConfig, data_dir: &Path) -> Result<ArchiveStore> {
    ArchiveStore::open(config, &default_archive_dir(data_dir)).map_err(|error| BrokerError::Config(error.to_string()))
}

/// Deletes what may be deleted now; returns the segments deleted. The manifest is read first, so
/// a segment committed a moment ago is seen.
pub async fn apply(store: &MessageStore, archive: &ArchiveReader, local_retention: Duration) -> Result<Vec<u64>> {
    archive
        .refresh(false)
        .await
        .map_err(|error| BrokerError::Corrupt(format!("reading the archive manifest: {error}")))?;
    let now = SystemTime::now();
    let pinned = pinned_offset(store)?;
    let mut deleted = Vec::new();
    for (start, end, path) in store.sealed_segments() {
        if pinned.is_some_and(|pinned| end > pinned) {
            break;
        }
        let entry = archive.with_index(|index| index.entries().get(&start).cloned());
        let modified = std::fs::metadata(&path)
            .and_then(|metadata| metadata.modified())
            .unwrap_or(now);
        let old_enough = now.duration_since(modified).unwrap_or_default() >= local_retention;
        let Some(entry) = entry.filter(|_| old_enough) else {
            break;
        };
        // Verify before delete: the archived copy must be this segment's bytes, whole.
        let verified = meridian_archive::verify::matches_local(archive.store(), &entry, &path)
            .await
            .map_err(|error| BrokerError::Corrupt(format!("checking segment {start} against its archive: {error}")))?;
        if let Err(reason) = verified {
            tracing::warn!(segment = start, %reason, "keeping a local segment whose archived copy does not match it");
            break;
        }
        if !store.delete_archived_segment(start)? {
            break;
        }
        deleted.push(start);
    }
    Ok(deleted)
}

/// The smallest commitlog offset the broker still has to read itself: the first message not yet
/// released from each delay slot, and the first half message the transaction check-back has not
/// passed. `None` when nothing waits.
pub fn pinned_offset(store: &MessageStore) -> Result<Option<u64>> {
    let waiting = |topic: &str, queue_id: u32, group: &str| -> Result<Option<u64>> {
        let Ok(queue) = store.consume_queue(topic, queue_id) else {
            return Ok(None);
        };
        let position = store
            .query_offset(group, topic, queue_id)?
            .unwrap_or(0)
            .max(queue.min_offset());
        if position >= queue.max_offset() {
            return Ok(None);
        }
        Ok(queue.get(position)?.map(|entry| entry.commitlog_offset))
    };
    let mut pinned: Option<u64> = None;
    for slot in 0..meridian_proto::delay::slot_count() {
        if let Some(offset) = waiting(DELAY_TOPIC, slot, SCHEDULER_GROUP)? {
            pinned = Some(pinned.map_or(offset, |pinned| pinned.min(offset)));
        }
    }
    if let Some(offset) = waiting(HALF_TOPIC, 0, TRANSACTION_GROUP)? {
        pinned = Some(pinned.map_or(offset, |pinned| pinned.min(offset)));
    }
    Ok(pinned)
}

/// Runs [`apply`] every `config.interval_secs` until `stop`. Errors (an unreachable store) are
/// logged and retried on the next round; they never delete anything.
pub async fn run(
    store: Arc<MessageStore>,
    archive: Arc<ArchiveReader>,
    config: ArchiveConfig,
    stop: CancellationToken,
) {
    let interval = Duration::from_secs(config.interval_secs);
    let local_retention = Duration::from_secs(config.local_retention_secs);
    loop {
        match apply(&store, &archive, local_retention).await {
            Ok(deleted) if !deleted.is_empty() => tracing::info!(?deleted, "local retention deleted archived segments"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "local retention skipped this round; nothing deleted"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use meridian_archive::archiver::Archiver;
    use meridian_archive::convert::ConvertOptions;
    use meridian_archive::reader::Replay;
    use meridian_proto::messages::MessageData;
    use meridian_proto::properties::PropertiesBuilder;

    use crate::store::StoreConfig;

    fn messages(count: usize) -> Vec<MessageData> {
        (0..count)
            .map(|index| {
                let mut properties = PropertiesBuilder::new();
                properties.msg_id(&format!("ID{index:06}"));
                properties.keys(&[format!("k{index}")]).unwrap();
                MessageData {
                    flags: 0,
                    born_timestamp: 1_795_600_000_000 + index as i64,
                    properties: Bytes::from(properties.finish()),
                    body: Bytes::from(format!("{{\"n\":{index},\"pad\":\"{}\"}}", "x".repeat(200))),
                    reconsume_count: 0,
                }
            })
            .collect()
    }

    fn stored_records(store: &MessageStore, topic: &str, queue_id: u32) -> Vec<Vec<u8>> {
        let queue = store.consume_queue(topic, queue_id).unwrap();
        let entries = store
            .read_entries(&queue, queue.min_offset(), 100_000, u32::MAX)
            .unwrap();
        entries
            .iter()
            .map(|entry| {
                let mut out = BytesMut::new();
                store.copy_record(entry, &mut out).unwrap();
                out.to_vec()
            })
            .collect()
    }

    /// A delayed message waiting in its slot keeps its segment, and every later one, on local
    /// disk however old and archived they are; once released, they go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn segments_holding_unreleased_delayed_messages_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            segment_size: 64 * 1024,
            ..StoreConfig::default()
        };
        let data_dir = dir.path().join("broker");
        let store = MessageStore::open(&data_dir, config, "127.0.0.1:7911".parse().unwrap(), Arc::default()).unwrap();
        crate::schedule::ensure_topics(&store).unwrap();
        store.create_topic("orders", 1).unwrap();
        let host = "10.0.0.1:5000".parse().unwrap();
        let slot = 100;
        store.append(DELAY_TOPIC, Some(slot), &messages(1), host).unwrap();
        for chunk in messages(1000).chunks(10) {
            store.append("orders", Some(0), chunk, host).unwrap();
        }
        while store.dispatched_offset() < store.committed_offset() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pinned_offset(&store).unwrap(), Some(0));
        let sealed = store.sealed_segments();
        assert!(sealed.len() >= 3, "{sealed:?}");
        let archive = ArchiveStore::in_memory();
        let reader = ArchiveReader::new(archive.clone(), "broker-a").unwrap();
        Archiver::new(
            archive.clone(),
            ConvertOptions::new("broker-a"),
            data_dir.join("commitlog"),
            Duration::ZERO,
        )
        .unwrap()
        .run_once(true, |_| {})
        .await
        .unwrap();
        assert!(apply(&store, &reader, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(store.sealed_segments(), sealed);

        // Released: the scheduler's position passed it.
        store.commit_offset(SCHEDULER_GROUP, DELAY_TOPIC, slot, 1).unwrap();
        assert_eq!(pinned_offset(&store).unwrap(), None);
        let deleted = apply(&store, &reader, Duration::ZERO).await.unwrap();
        assert_eq!(deleted, sealed.iter().map(|(start, _, _)| *start).collect::<Vec<_>>());
        store.shutdown();
    }

    /// Verify before delete: a committed archive whose checksum does not match the local
    /// segment (an archive made from other bytes) keeps that segment and every later one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_whose_archive_does_not_match_it_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            segment_size: 64 * 1024,
            ..StoreConfig::default()
        };
        let data_dir = dir.path().join("broker");
        let store = MessageStore::open(&data_dir, config, "127.0.0.1:7911".parse().unwrap(), Arc::default()).unwrap();
        store.create_topic("orders", 1).unwrap();
        for chunk in messages(1000).chunks(10) {
            store
                .append("orders", Some(0), chunk, "10.0.0.1:5000".parse().unwrap())
                .unwrap();
        }
        while store.dispatched_offset() < store.committed_offset() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let sealed = store.sealed_segments();
        assert!(sealed.len() >= 3, "{sealed:?}");
        let archive = ArchiveStore::in_memory();
        Archiver::new(
            archive.clone(),
            ConvertOptions::new("broker-a"),
            data_dir.join("commitlog"),
            Duration::ZERO,
        )
        .unwrap()
        .run_once(true, |_| {})
        .await
        .unwrap();
        // The second segment's entry claims other bytes.
        let second = sealed[1].0;
        let mut entry = meridian_archive::manifest::load(&archive, "broker-a", second)
            .await
            .unwrap();
        entry.segment_checksum = entry.segment_checksum.map(|checksum| checksum ^ 1);
        meridian_archive::manifest::rewrite(&archive, &entry).await.unwrap();

        let reader = ArchiveReader::new(archive.clone(), "broker-a").unwrap();
        let deleted = apply(&store, &reader, Duration::ZERO).await.unwrap();
        assert_eq!(deleted, vec![sealed[0].0], "only the segment before the mismatch goes");
        assert_eq!(store.sealed_segments(), sealed[1..].to_vec());
        store.shutdown();
    }

    /// Archive, delete locally, read every offset back: identical records; nothing unarchived
    /// is deleted, and a reopened store keeps the moved min offsets.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn archived_segments_are_deleted_and_served_from_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            segment_size: 64 * 1024,
            ..StoreConfig::default()
        };
        let data_dir = dir.path().join("broker");
        let store = MessageStore::open(
            &data_dir,
            config.clone(),
            "127.0.0.1:7911".parse().unwrap(),
            Arc::default(),
        )
        .unwrap();
        store.create_topic("orders", 2).unwrap();
        let all = messages(1000);
        for (index, chunk) in all.chunks(10).enumerate() {
            store
                .append(
                    "orders",
                    Some((index % 2) as u32),
                    chunk,
                    "10.0.0.1:5000".parse().unwrap(),
                )
                .unwrap();
        }
        while store.dispatched_offset() < store.committed_offset() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before: Vec<Vec<Vec<u8>>> = (0..2).map(|queue| stored_records(&store, "orders", queue)).collect();
        let sealed = store.sealed_segments();
        assert!(sealed.len() >= 3, "{sealed:?}");

        let archive = ArchiveStore::in_memory();
        let reader = ArchiveReader::new(archive.clone(), "broker-a").unwrap();
        // Nothing archived yet: nothing is deleted, whatever the retention.
        assert!(apply(&store, &reader, Duration::ZERO).await.unwrap().is_empty());
        let archiver = Archiver::new(
            archive.clone(),
            ConvertOptions::new("broker-a"),
            data_dir.join("commitlog"),
            Duration::ZERO,
        )
        .unwrap();
        archiver.run_once(true, |_| {}).await.unwrap();
        // Archived but younger than the local retention: kept.
        assert!(
            apply(&store, &reader, Duration::from_secs(3600))
                .await
                .unwrap()
                .is_empty()
        );
        let deleted = apply(&store, &reader, Duration::ZERO).await.unwrap();
        assert_eq!(deleted, sealed.iter().map(|(start, _, _)| *start).collect::<Vec<_>>());
        assert!(store.sealed_segments().is_empty());
        store.set_archive(Arc::new(reader));

        for queue_id in 0..2u32 {
            let local_min = store.consume_queue("orders", queue_id).unwrap().min_offset();
            assert!(local_min > 0, "queue {queue_id} kept everything locally");
            assert_eq!(store.queue_bounds("orders", queue_id).unwrap().min_offset, 0);
            let mut replayed = Vec::new();
            let mut offset = 0;
            while offset < local_min {
                match store
                    .archive()
                    .unwrap()
                    .read("orders", queue_id, offset, 64, 1 << 20)
                    .await
                    .unwrap()
                {
                    Replay::Found {
                        records, next_offset, ..
                    } => {
                        let mut position = 0;
                        while position < records.len() {
                            let record = meridian_proto::record::Record::parse(&records[position..]).unwrap();
                            replayed.push(record.as_bytes().to_vec());
                            position += record.total_size();
                        }
                        offset = next_offset;
                    }
                    other => panic!("offset {offset}: {other:?}"),
                }
            }
            replayed.truncate(local_min as usize);
            replayed.extend(stored_records(&store, "orders", queue_id));
            assert_eq!(replayed, before[queue_id as usize], "queue {queue_id}");
        }
        store.shutdown();
        drop(store);
        let reopened =
            MessageStore::open(&data_dir, config, "127.0.0.1:7911".parse().unwrap(), Arc::default()).unwrap();
        let queue = reopened.consume_queue("orders", 0).unwrap();
        assert!(queue.min_offset() > 0);
        assert_eq!(
            stored_records(&reopened, "orders", 0),
            before[0][queue.min_offset() as usize..]
        );
        reopened.shutdown();
    }
}

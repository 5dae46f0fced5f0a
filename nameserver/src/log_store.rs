//! The Raft log on disk, in one redb database (`<data_dir>/raft-log.redb`).
//!
//! Two tables: `entries` (log index → JSON of the openraft entry) and `meta` (vote, last committed
//! log id, last purged log id, and the node id that owns the file). Every write is its own redb
//! transaction committed with `Durability::Immediate` (fsync) before the call returns, so openraft's
//! rule "all write I/O is serialized and durable before it is acknowledged" holds: `append` calls
//! the [`LogFlushed`] callback only after the commit. All redb calls run on tokio's blocking pool:
//! a commit waits for fsync.

use std::error::Error as StdError;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Weak};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::NameserverError;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

/// File name of the log database inside the node's data dir.
pub const LOG_FILE: &str = "raft-log.redb";

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const NODE_ID: &str = "node_id";

// redb's page cache defaults to 1 GiB; the metadata log is small and read mostly at its tail.
const CACHE_BYTES: usize = 32 << 20;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The Raft log store: entries, vote, committed and last purged log ids, in redb.
pub struct LogStore {
    db: Arc<Database>,
}

/// Reads entries for replication, concurrently with the store's writes (redb readers see the last
/// committed transaction).
#[derive(Clone)]
pub struct LogReader {
    db: Arc<Database>,
}

impl LogStore {
    /// Opens (or creates) the log database at `path` for node `node_id`. A file written by another
    /// node is refused: a node that takes over another's log would break Raft's safety. Blocking.
    pub fn open(path: &Path, node_id: NodeId) -> Result<LogStore, NameserverError> {
        let storage_error = |message: String| NameserverError::Storage {
            path: path.to_owned(),
            message,
        };
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|error| storage_error(format!("cannot open the Raft log database: {error}")))?;
        let found = (|| -> Result<Option<NodeId>, BoxError> {
            let transaction = db.begin_write()?;
            let found = {
                transaction.open_table(ENTRIES)?;
                let mut meta = transaction.open_table(META)?;
                let found: Option<NodeId> = match meta.get(NODE_ID)? {
                    Some(value) => Some(serde_json::from_slice(value.value())?),
                    None => None,
                };
                if found.is_none() {
                    meta.insert(NODE_ID, serde_json::to_vec(&node_id)?.as_slice())?;
                }
                found
            };
            transaction.commit()?;
            Ok(found)
        })()
        .map_err(|error| storage_error(format!("cannot prepare the Raft log database: {error}")))?;
        if let Some(found) = found
            && found != node_id
        {
            return Err(NameserverError::WrongNode {
                path: path.to_owned(),
                found,
                expected: node_id,
            });
        }
        tracing::info!(path = %path.display(), node_id, "opened raft log");
        Ok(LogStore { db: Arc::new(db) })
    }

    /// A handle that is dead once the store and every reader are dropped, i.e. once the file is
    /// closed; [`crate::NameserverRaft::shutdown`] waits for it.
    pub(crate) fn liveness(&self) -> Weak<Database> {
        Arc::downgrade(&self.db)
    }

    async fn write<T, F>(&self, subject: ErrorSubject<NodeId>, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, BoxError> + Send + 'static,
    {
        blocking(&self.db, work)
            .await
            .map_err(|error| storage_error(subject, ErrorVerb::Write, error))
    }

    async fn read_meta<T>(&self, key: &'static str, subject: ErrorSubject<NodeId>) -> Result<Option<T>, StorageError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        blocking(&self.db, move |db| read_meta(db, key))
            .await
            .map_err(|error| storage_error(subject, ErrorVerb::Read, error))
    }

    async fn write_meta<T>(
        &self,
        key: &'static str,
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError>
    where
        T: Serialize,
    {
        let encoded = serde_json::to_vec(value)
            .map_err(|error| storage_error(subject.clone(), ErrorVerb::Write, error.into()))?;
        self.write(subject, move |db| {
            let transaction = db.begin_write()?;
            transaction.open_table(META)?.insert(key, encoded.as_slice())?;
            transaction.commit()?;
            Ok(())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.db, range).await
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.db, range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        blocking(&self.db, |db| {
            let last_purged_log_id: Option<LogId> = read_meta(db, LAST_PURGED)?;
            let transaction = db.begin_read()?;
            let entries = transaction.open_table(ENTRIES)?;
            let last_log_id = match entries.last()? {
                Some((_, value)) => Some(serde_json::from_slice::<Entry>(value.value())?.log_id),
                None => last_purged_log_id,
            };
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await
        .map_err(|error| storage_error(ErrorSubject::Logs, ErrorVerb::Read, error))
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            db: Arc::clone(&self.db),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE, ErrorSubject::Vote).await
    }

    // Saved so a restarted node re-applies committed entries at once instead of waiting for the
    // leader; one more fsync per commit advance, affordable at the nameserver's write rate.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_meta(COMMITTED, &committed, ErrorSubject::Store).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId>>(COMMITTED, ErrorSubject::Store)
            .await?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|entry| Ok((entry.log_id.index, serde_json::to_vec(&entry)?)))
            .collect::<Result<Vec<(u64, Vec<u8>)>, serde_json::Error>>()
            .map_err(|error| storage_error(ErrorSubject::Logs, ErrorVerb::Write, error.into()))?;
        let result = self
            .write(ErrorSubject::Logs, move |db| {
                let transaction = db.begin_write()?;
                {
                    let mut table = transaction.open_table(ENTRIES)?;
                    for (index, bytes) in &encoded {
                        table.insert(index, bytes.as_slice())?;
                    }
                }
                transaction.commit()?;
                Ok(())
            })
            .await;
        // The commit above is durable: only now may openraft count these entries as flushed.
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(error) => callback.log_io_completed(Err(io::Error::other(error.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncate raft log");
        self.write(ErrorSubject::Logs, move |db| {
            let transaction = db.begin_write()?;
            transaction
                .open_table(ENTRIES)?
                .retain_in(log_id.index.., |_, _| false)?;
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purge raft log");
        let encoded = serde_json::to_vec(&log_id)
            .map_err(|error| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, error.into()))?;
        // One transaction: after a crash either both the entries are gone and last_purged moved,
        // or neither, so the log never shows a hole.
        self.write(ErrorSubject::Logs, move |db| {
            let transaction = db.begin_write()?;
            transaction
                .open_table(ENTRIES)?
                .retain_in(..=log_id.index, |_, _| false)?;
            transaction.open_table(META)?.insert(LAST_PURGED, encoded.as_slice())?;
            transaction.commit()?;
            Ok(())
        })
        .await
    }
}

async fn read_entries<RB: RangeBounds<u64>>(db: &Arc<Database>, range: RB) -> Result<Vec<Entry>, StorageError> {
    let start = range.start_bound().cloned();
    let end = range.end_bound().cloned();
    blocking(db, move |db| {
        if range_is_empty(start, end) {
            return Ok(Vec::new());
        }
        let transaction = db.begin_read()?;
        let table = transaction.open_table(ENTRIES)?;
        let mut entries = Vec::new();
        for item in table.range::<u64>((start, end))? {
            let (_, value) = item?;
            entries.push(serde_json::from_slice::<Entry>(value.value())?);
        }
        Ok(entries)
    })
    .await
    .map_err(|error| storage_error(ErrorSubject::Logs, ErrorVerb::Read, error))
}

fn range_is_empty(start: Bound<u64>, end: Bound<u64>) -> bool {
    let first = match start {
        Bound::Included(index) => Some(index),
        Bound::Excluded(index) => index.checked_add(1),
        Bound::Unbounded => Some(0),
    };
    match (first, end) {
        (None, _) => true,
        (Some(first), Bound::Included(last)) => first > last,
        (Some(first), Bound::Excluded(end)) => first >= end,
        (Some(_), Bound::Unbounded) => false,
    }
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, BoxError> {
    let transaction = db.begin_read()?;
    let table = transaction.open_table(META)?;
    let value = match table.get(key)? {
        Some(value) => Some(serde_json::from_slice(value.value())?),
        None => None,
    };
    Ok(value)
}

async fn blocking<T, F>(db: &Arc<Database>, work: F) -> Result<T, BoxError>
where
    T: Send + 'static,
    F: FnOnce(&Database) -> Result<T, BoxError> + Send + 'static,
{
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || work(&db)).await?
}

fn storage_error(subject: ErrorSubject<NodeId>, verb: ErrorVerb, error: BoxError) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::from_dyn(error.as_ref(), None)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_ranges() {
        assert!(range_is_empty(Bound::Included(3), Bound::Excluded(3)));
        assert!(range_is_empty(Bound::Included(5), Bound::Included(4)));
        assert!(range_is_empty(Bound::Excluded(u64::MAX), Bound::Unbounded));
        assert!(!range_is_empty(Bound::Included(3), Bound::Included(3)));
        assert!(!range_is_empty(Bound::Unbounded, Bound::Unbounded));
    }

    #[test]
    fn a_data_dir_belongs_to_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        drop(LogStore::open(&path, 1).unwrap());
        drop(LogStore::open(&path, 1).unwrap());
        let error = LogStore::open(&path, 2).err().expect("another node's log is refused");
        assert!(
            matches!(
                error,
                NameserverError::WrongNode {
                    found: 1,
                    expected: 2,
                    ..
                }
            ),
            "{error}"
        );
    }
}

//! The Raft state machine: [`MetadataState`] in memory, made durable by snapshots on disk.
//!
//! Applying an entry only changes memory; the log (see [`crate::log_store`]) is what makes it
//! durable until the next snapshot. A snapshot is the JSON of the state plus its openraft
//! metadata, written to `<data_dir>/snapshots/current.snapshot` atomically (temp file, fsync,
//! rename, fsync of the directory), so the directory always holds exactly one complete snapshot,
//! the latest. On start the state is restored from that file, and openraft re-applies the
//! committed entries after it from the log.
//!
//! File format: one line of JSON header ([`SnapshotMeta`], data length, CRC32C of the data), a
//! newline, then the data: the JSON of [`MetadataState`] exactly as sent to followers.

use std::error::Error as StdError;
use std::fs::{self, File};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use crate::error::NameserverError;
use crate::state::{MetadataState, Response};
use crate::types::{
    CommandResult, Entry, LogId, NodeId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// Folder of the snapshot inside the node's data dir.
pub const SNAPSHOT_DIR: &str = "snapshots";
/// The latest snapshot.
pub const SNAPSHOT_FILE: &str = "current.snapshot";
const SNAPSHOT_TEMP_FILE: &str = "current.snapshot.tmp";
const SNAPSHOT_FORMAT: u32 = 1;

type BoxError = Box<dyn StdError + Send + Sync>;

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHeader {
    format: u32,
    meta: SnapshotMeta,
    data_len: u64,
    data_crc32c: u32,
}

/// The applied state, as of `last_applied`.
#[derive(Debug, Default)]
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: MetadataState,
}

struct Shared {
    // std lock: never held across an await; readers (any node answers reads) take it briefly.
    applied: RwLock<Applied>,
    dir: PathBuf,
    // Taken on a blocking thread while a snapshot file is written. Holds the log id of the file on
    // disk, so a snapshot built from an older state never replaces a newer one.
    written: Mutex<Option<LogId>>,
    snapshot_seq: AtomicU64,
}

/// openraft's state machine for the nameserver.
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

/// Builds snapshots concurrently with applying (openraft runs it in its own task).
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

/// Reads the applied state of a node. Cheap to clone.
#[derive(Clone)]
pub struct StateReader {
    shared: Arc<Shared>,
}

impl StateReader {
    /// Runs `read` on the applied state. Holds a read lock meanwhile: keep `read` short.
    pub fn read<R>(&self, read: impl FnOnce(&MetadataState) -> R) -> R {
        read(&self.shared.applied.read().unwrap_or_else(PoisonError::into_inner).state)
    }

    /// Log id of the last applied entry.
    pub fn last_applied(&self) -> Option<LogId> {
        self.shared
            .applied
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_applied
    }
}

impl StateMachineStore {
    /// Opens the state machine of the node whose data dir is `data_dir`, restoring the latest
    /// snapshot if there is one. Blocking.
    pub fn open(data_dir: &Path) -> Result<StateMachineStore, NameserverError> {
        let dir = data_dir.join(SNAPSHOT_DIR);
        let storage_error = |path: &Path, message: String| NameserverError::Storage {
            path: path.to_owned(),
            message,
        };
        fs::create_dir_all(&dir).map_err(|error| storage_error(&dir, format!("cannot create: {error}")))?;
        // A temp file is a snapshot write that a crash interrupted; the previous file is intact.
        let temp = dir.join(SNAPSHOT_TEMP_FILE);
        if temp.exists() {
            fs::remove_file(&temp).map_err(|error| storage_error(&temp, format!("cannot remove: {error}")))?;
        }
        let path = dir.join(SNAPSHOT_FILE);
        let applied = match read_snapshot_file(&dir) {
            Ok(None) => Applied::default(),
            Ok(Some((meta, data))) => {
                let state: MetadataState = serde_json::from_slice(&data)
                    .map_err(|error| storage_error(&path, format!("snapshot state is unreadable: {error}")))?;
                tracing::info!(path = %path.display(), meta = %meta, "restored state from snapshot");
                Applied {
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership,
                    state,
                }
            }
            Err(error) => {
                return Err(storage_error(
                    &path,
                    format!(
                        "snapshot is unreadable ({error}); move it away and restart: the node then catches up from the leader"
                    ),
                ));
            }
        };
        let written = applied.last_applied;
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                applied: RwLock::new(applied),
                dir,
                written: Mutex::new(written),
                snapshot_seq: AtomicU64::new(0),
            }),
        })
    }

    /// A reader of the applied state, for serving reads on any node.
    pub fn reader(&self) -> StateReader {
        StateReader {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Shared {
    /// Writes a snapshot file unless a newer one is already on disk (`replace` forces it: an
    /// installed snapshot replaces the state whatever was built before).
    async fn persist(self: &Arc<Self>, meta: SnapshotMeta, data: Vec<u8>, replace: bool) -> Result<(), StorageError> {
        let shared = Arc::clone(self);
        let signature = meta.signature();
        let result = tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
            let mut written = shared.written.lock().unwrap_or_else(PoisonError::into_inner);
            if !replace && *written > meta.last_log_id {
                return Ok(());
            }
            write_snapshot_file(&shared.dir, &meta, &data)?;
            *written = meta.last_log_id;
            tracing::info!(meta = %meta, bytes = data.len(), "wrote snapshot");
            Ok(())
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(snapshot_error(Some(signature), ErrorVerb::Write, error)),
            Err(join_error) => Err(snapshot_error(Some(signature), ErrorVerb::Write, join_error.into())),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (meta, data) = {
            let applied = self.shared.applied.read().unwrap_or_else(PoisonError::into_inner);
            let data = serde_json::to_vec(&applied.state)
                .map_err(|error| snapshot_error(None, ErrorVerb::Write, error.into()))?;
            let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match &applied.last_applied {
                Some(log_id) => format!("{}-{}-{seq}", log_id.leader_id.term, log_id.index),
                None => format!("none-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        self.shared.persist(meta.clone(), data.clone(), false).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.shared.applied.read().unwrap_or_else(PoisonError::into_inner);
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.shared.applied.write().unwrap_or_else(PoisonError::into_inner);
        let mut results = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => Ok(Response::Done),
                EntryPayload::Normal(request) => {
                    let result = applied.state.apply(request.command, request.now_ms);
                    if let Err(error) = &result {
                        tracing::debug!(log_id = %entry.log_id, %error, "command refused");
                    }
                    result
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(Response::Done)
                }
            };
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: MetadataState = serde_json::from_slice(&data)
            .map_err(|error| snapshot_error(Some(meta.signature()), ErrorVerb::Read, error.into()))?;
        // Durable first: if the node crashes now it restarts from this snapshot, not from a state
        // that the leader has already purged from its log.
        self.shared.persist(meta.clone(), data, true).await?;
        let mut applied = self.shared.applied.write().unwrap_or_else(PoisonError::into_inner);
        *applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        tracing::info!(meta = %meta, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let dir = self.shared.dir.clone();
        let loaded = tokio::task::spawn_blocking(move || read_snapshot_file(&dir))
            .await
            .map_err(|join_error| snapshot_error(None, ErrorVerb::Read, join_error.into()))?
            .map_err(|error| snapshot_error(None, ErrorVerb::Read, error))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

fn write_snapshot_file(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<(), BoxError> {
    let header = serde_json::to_vec(&SnapshotHeader {
        format: SNAPSHOT_FORMAT,
        meta: meta.clone(),
        data_len: data.len() as u64,
        data_crc32c: crc32c::crc32c(data),
    })?;
    let temp = dir.join(SNAPSHOT_TEMP_FILE);
    let mut file = File::create(&temp)?;
    file.write_all(&header)?;
    file.write_all(b"\n")?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, dir.join(SNAPSHOT_FILE))?;
    // The rename is durable only once the directory is.
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn read_snapshot_file(dir: &Path) -> Result<Option<(SnapshotMeta, Vec<u8>)>, BoxError> {
    let mut bytes = match fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    // The header is compact JSON, which has no raw newline.
    let newline = bytes.iter().position(|byte| *byte == b'\n').ok_or("no header line")?;
    let header: SnapshotHeader = serde_json::from_slice(&bytes[..newline])?;
    if header.format != SNAPSHOT_FORMAT {
        return Err(format!(
            "unknown snapshot format {} (this build reads {SNAPSHOT_FORMAT})",
            header.format
        )
        .into());
    }
    let data = bytes.split_off(newline + 1);
    if data.len() as u64 != header.data_len || crc32c::crc32c(&data) != header.data_crc32c {
        return Err(format!(
            "data is damaged: {} bytes with CRC32C {:#010x}, header says {} bytes with {:#010x}",
            data.len(),
            crc32c::crc32c(&data),
            header.data_len,
            header.data_crc32c
        )
        .into());
    }
    Ok(Some((header.meta, data)))
}

fn snapshot_error(
    signature: Option<openraft::storage::SnapshotSignature<NodeId>>,
    verb: ErrorVerb,
    error: BoxError,
) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(signature),
        verb,
        AnyError::from_dyn(error.as_ref(), None),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_snapshot_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = dir.path().join(SNAPSHOT_DIR);
        fs::create_dir_all(&snapshots).unwrap();
        let data = serde_json::to_vec(&MetadataState::default()).unwrap();
        write_snapshot_file(&snapshots, &SnapshotMeta::default(), &data).unwrap();
        assert!(read_snapshot_file(&snapshots).unwrap().is_some());
        drop(StateMachineStore::open(dir.path()).unwrap());

        let path = snapshots.join(SNAPSHOT_FILE);
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let error = StateMachineStore::open(dir.path())
            .err()
            .expect("damaged snapshot is refused");
        let message = error.to_string();
        assert!(message.contains("data is damaged"), "{message}");
        assert!(message.contains("move it away and restart"), "{message}");
    }
}

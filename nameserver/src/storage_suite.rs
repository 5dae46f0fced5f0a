//! The storage against openraft's conformance suite, plus what the suite does not check: that
//! everything survives closing and reopening the data dir.

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite, log_id};
use openraft::{AnyError, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, StorageIOError};
use tempfile::TempDir;

use crate::log_store::{LOG_FILE, LogStore};
use crate::state::{Command, PERM_READ_WRITE, Response, TopicRequest};
use crate::state_machine::StateMachineStore;
use crate::types::{Entry, Request, StorageError, TypeConfig, Vote};

struct TempDirStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempDirStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|error| StorageIOError::write(AnyError::new(&error)))?;
        let (log_store, state_machine) = open(&dir);
        Ok((dir, log_store, state_machine))
    }
}

fn open(dir: &TempDir) -> (LogStore, StateMachineStore) {
    let log_store = LogStore::open(&dir.path().join(LOG_FILE), 0).expect("open log");
    let state_machine = StateMachineStore::open(dir.path()).expect("open state machine");
    (log_store, state_machine)
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(TempDirStores).expect("storage conforms to openraft's suite");
}

fn request_topic_entry(index: u64, name: &str) -> Entry {
    Entry {
        log_id: log_id(1, 0, index),
        payload: EntryPayload::Normal(Request {
            command: Command::RequestTopic(TopicRequest {
                name: name.into(),
                owner: "team-a".into(),
                description: String::new(),
                queues: BTreeMap::from([("broker-a".to_owned(), 4)]),
                perm: PERM_READ_WRITE,
                produce_limit: None,
                requested_by: "alice".into(),
            }),
            now_ms: 1_000 + index,
        }),
    }
}

#[tokio::test]
async fn log_and_snapshot_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let membership = Membership::new(vec![BTreeSet::from([0])], ());
    {
        let (mut log_store, mut state_machine) = open(&dir);
        let mut entries = vec![Entry {
            log_id: log_id(1, 0, 1),
            payload: EntryPayload::Membership(membership.clone()),
        }];
        entries.extend((2..=10).map(|index| request_topic_entry(index, &format!("topic-{index}"))));
        log_store.blocking_append(entries.clone()).await.unwrap();
        log_store.save_vote(&Vote::new(1, 0)).await.unwrap();
        log_store.save_committed(Some(log_id(1, 0, 10))).await.unwrap();
        let results = state_machine.apply(entries[..6].to_vec()).await.unwrap();
        assert!(matches!(results[1], Ok(Response::Topic(_))));
        let snapshot = state_machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 0, 6)));
        log_store.purge(log_id(1, 0, 4)).await.unwrap();
        log_store.truncate(log_id(1, 0, 10)).await.unwrap();
    }

    let (mut log_store, mut state_machine) = open(&dir);
    assert_eq!(log_store.read_vote().await.unwrap(), Some(Vote::new(1, 0)));
    assert_eq!(log_store.read_committed().await.unwrap(), Some(log_id(1, 0, 10)));
    let log_state = log_store.get_log_state().await.unwrap();
    assert_eq!(log_state.last_purged_log_id, Some(log_id(1, 0, 4)));
    assert_eq!(log_state.last_log_id, Some(log_id(1, 0, 9)), "entry 10 was truncated");
    let remaining = log_store.try_get_log_entries(0..).await.unwrap();
    let indexes: Vec<u64> = remaining.iter().map(|entry| entry.log_id.index).collect();
    assert_eq!(indexes, (5..=9).collect::<Vec<_>>());

    let (last_applied, stored_membership) = state_machine.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(1, 0, 6)), "state restored from the snapshot");
    assert_eq!(stored_membership.membership(), &membership);
    let current = state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot kept");
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 0, 6)));
    let topics = state_machine.reader().read(|state| state.topics().len());
    assert_eq!(topics, 5);
}

//! One archiver per broker group ([`crate::group`]): two members' archivers over one store, a
//! master demoted mid-run, a stale nameserver answer, and the confirmed offset. The group's view
//! is scripted here (what the nameservers answer, and when the election happens); the stores
//! are real (local filesystem, in-memory, and s3s-fs over loopback).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::archiver::Archiver;
use crate::convert::{ConvertOptions, segment_digest};
use crate::group::{self, GroupFuture, GroupView, Refusal, Standing};
use crate::manifest;
use crate::sample::{self, SampleMessage};
use crate::store::ArchiveStore;
use crate::verify;

const SEGMENT_LEN: usize = 256 * 1024;
const GROUP: &str = "broker-a";

/// What the nameservers answer: the group's epoch and its master.
type Election = Arc<Mutex<(u64, String)>>;

/// One member's view: the shared election, optionally changed at this member's `at`-th
/// question (the election happening exactly then), and a fixed confirmed offset.
struct Member {
    name: String,
    election: Election,
    questions: AtomicUsize,
    elect_at: Option<(usize, u64, String)>,
    confirmed: Mutex<u64>,
}

impl Member {
    fn new(name: &str, election: &Election) -> Member {
        Member {
            name: name.to_owned(),
            election: election.clone(),
            questions: AtomicUsize::new(0),
            elect_at: None,
            confirmed: Mutex::new(u64::MAX),
        }
    }
}

impl GroupView for Member {
    fn standing(&self) -> GroupFuture<'_, Option<Standing>> {
        let asked = self.questions.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((at, epoch, master)) = &self.elect_at
            && asked == *at
        {
            *self.election.lock().unwrap() = (*epoch, master.clone());
        }
        let (epoch, master) = self.election.lock().unwrap().clone();
        Box::pin(async move {
            Ok(Some(Standing {
                epoch,
                master: master == self.name,
            }))
        })
    }

    fn confirmed_offset(&self) -> GroupFuture<'_, u64> {
        let confirmed = *self.confirmed.lock().unwrap();
        Box::pin(async move { Ok(confirmed) })
    }
}

/// A commitlog folder with one segment per chunk, all sealed but the last.
fn write_log(segments: &[&[SampleMessage]]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let commitlog = dir.path().join("commitlog");
    std::fs::create_dir_all(&commitlog).unwrap();
    let mut offsets = HashMap::new();
    for (index, chunk) in segments.iter().enumerate() {
        let start = (index * SEGMENT_LEN) as u64;
        let bytes = sample::segment(start, SEGMENT_LEN, chunk, &mut offsets, index + 1 < segments.len());
        std::fs::write(commitlog.join(format!("{start:020}")), bytes).unwrap();
    }
    dir
}

fn archiver(store: &ArchiveStore, log: &tempfile::TempDir, view: Arc<Member>) -> Archiver {
    Archiver::new(
        store.clone(),
        ConvertOptions::new(GROUP),
        log.path().join("commitlog"),
        Duration::from_secs(3600),
    )
    .unwrap()
    .with_group(view)
}

fn digest(log: &tempfile::TempDir, start: u64) -> crate::convert::SegmentDigest {
    let bytes = std::fs::read(log.path().join(format!("commitlog/{start:020}"))).unwrap();
    segment_digest(start, &bytes).unwrap()
}

/// Master `a` (epoch 1) archives segment 0; as it is about to commit segment 1, `b` is
/// elected (epoch 2). `a` commits nothing more, `b` archives its own (divergent) segments 1 and
/// 2, and `a` stays out on its next run, and even when its nameserver answer is stale (the
/// fence stops it). Every committed entry is the new master's history.
async fn only_the_masters_entries_land(store: ArchiveStore) {
    let first = 1_795_651_190_000;
    let common = sample::messages(300, 3, 4, first, 20, 300);
    let ours = sample::messages(900, 3, 4, first + 60_000, 20, 300);
    let theirs = sample::messages(900, 3, 4, first + 90_000, 20, 200);
    let log_a = write_log(&[&common, &ours[..300], &ours[300..600], &ours[600..]]);
    let log_b = write_log(&[&common, &theirs[..300], &theirs[300..600], &theirs[600..]]);
    let seg = SEGMENT_LEN as u64;
    assert_ne!(
        digest(&log_a, seg),
        digest(&log_b, seg),
        "the test needs divergent logs"
    );

    let election: Election = Arc::new(Mutex::new((1, "a".to_owned())));
    // Questions of a's run: 1 opens it, 2 and 3 check segment 0 before upload and commit, 4
    // checks segment 1 before upload; at 5 (before its commit) b has been elected.
    let mut member_a = Member::new("a", &election);
    member_a.elect_at = Some((5, 2, "b".to_owned()));
    let report = archiver(&store, &log_a, Arc::new(member_a))
        .run_once(true, |_| {})
        .await
        .unwrap();
    assert_eq!(report.archived, vec![0]);
    assert_eq!(report.refused, Some(Refusal::EpochMoved { started: 1, now: 2 }));
    assert_eq!(manifest::committed_starts(&store, GROUP).await.unwrap(), vec![0]);

    let report = archiver(&store, &log_b, Arc::new(Member::new("b", &election)))
        .run_once(true, |_| {})
        .await
        .unwrap();
    assert_eq!((report.archived, report.already_archived), (vec![seg, 2 * seg], 1));

    // a again, told the truth: not the master.
    let report = archiver(&store, &log_a, Arc::new(Member::new("a", &election)))
        .run_once(true, |_| {})
        .await
        .unwrap();
    assert_eq!(report.refused, Some(Refusal::NotMaster { epoch: 2 }));
    // a again, with a stale answer (still master at 1): the fence of epoch 2 stops it.
    let stale: Election = Arc::new(Mutex::new((1, "a".to_owned())));
    let report = archiver(&store, &log_a, Arc::new(Member::new("a", &stale)))
        .run_once(true, |_| {})
        .await
        .unwrap();
    assert_eq!(report.refused, Some(Refusal::EpochMoved { started: 1, now: 2 }));
    assert!(report.archived.is_empty());
    assert_eq!(group::highest_fence(&store, GROUP).await.unwrap(), 2);

    // Every entry is b's history: its bytes' checksum, record count and end.
    let entries = manifest::load_all(&store, GROUP).await.unwrap();
    assert_eq!(entries.len(), 3);
    for entry in &entries {
        let local = digest(&log_b, entry.segment_start);
        assert_eq!(
            (entry.segment_checksum, entry.records, entry.segment_end),
            (Some(local.checksum), local.records, local.end),
            "segment {}",
            entry.segment_start
        );
    }
    assert_eq!(
        entries.iter().map(|entry| entry.epoch).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(2)]
    );
    // a's upload of segment 1 went to names of its own epoch and was deleted when its commit
    // was refused: b's files are intact and nothing uncommitted is left for a glob to count.
    let report = verify::verify(&store, GROUP).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.rows, 900);
    assert!(report.uncommitted.is_empty(), "{:?}", report.uncommitted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_masters_entries_land_in_memory() {
    only_the_masters_entries_land(ArchiveStore::in_memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_masters_entries_land_on_the_local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let store = ArchiveStore::open(&crate::store::ArchiveConfig::default(), dir.path()).unwrap();
    only_the_masters_entries_land(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_masters_entries_land_on_s3() {
    let server = crate::tests::start_s3s("archive");
    let config = crate::tests::s3_config(&server.endpoint, "s3://archive");
    let store = ArchiveStore::open(&config, std::path::Path::new("unused")).unwrap();
    only_the_masters_entries_land(store).await;
}

/// A segment that ends above the confirmed offset waits; once the offset passes its end, it is
/// archived. A slave archives nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_above_the_confirmed_offset_are_not_archived() {
    let messages = sample::messages(1200, 3, 4, 1_795_651_190_000, 20, 300);
    let log = write_log(&[
        &messages[..300],
        &messages[300..600],
        &messages[600..900],
        &messages[900..],
    ]);
    let store = ArchiveStore::in_memory();
    let seg = SEGMENT_LEN as u64;
    let election: Election = Arc::new(Mutex::new((3, "a".to_owned())));

    let slave = Arc::new(Member::new("b", &election));
    let report = archiver(&store, &log, slave).run_once(true, |_| {}).await.unwrap();
    assert_eq!(report.refused, Some(Refusal::NotMaster { epoch: 3 }));
    assert!(manifest::committed_starts(&store, GROUP).await.unwrap().is_empty());

    let master = Arc::new(Member::new("a", &election));
    // Segment 2 holds records up to 3 * seg; the confirmed offset is inside it.
    *master.confirmed.lock().unwrap() = 2 * seg + 100;
    let report = archiver(&store, &log, master.clone())
        .run_once(true, |_| {})
        .await
        .unwrap();
    assert_eq!((report.archived, report.above_confirmed), (vec![0, seg], 1));
    assert_eq!(manifest::committed_starts(&store, GROUP).await.unwrap(), vec![0, seg]);

    *master.confirmed.lock().unwrap() = 3 * seg;
    let report = archiver(&store, &log, master).run_once(true, |_| {}).await.unwrap();
    assert_eq!((report.archived, report.above_confirmed), (vec![2 * seg], 0));
    let entries = manifest::load_all(&store, GROUP).await.unwrap();
    assert!(entries.iter().all(|entry| entry.epoch == Some(3)));
}

/// Local segment against its archived copy: equal bytes match; other bytes, a corrupt file or
/// a wrong count are named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_segment_is_checked_against_its_archived_copy() {
    use object_store::{ObjectStoreExt, PutPayload};
    let messages = sample::messages(600, 3, 4, 1_795_651_190_000, 20, 300);
    let log = write_log(&[&messages[..300], &messages[300..]]);
    let other = write_log(&[&messages[1..301], &messages[300..]]);
    let store = ArchiveStore::in_memory();
    Archiver::new(
        store.clone(),
        ConvertOptions::new(GROUP),
        log.path().join("commitlog"),
        Duration::ZERO,
    )
    .unwrap()
    .run_once(true, |_| {})
    .await
    .unwrap();
    let entry = manifest::load(&store, GROUP, 0).await.unwrap();
    let path = log.path().join(format!("commitlog/{:020}", 0));
    assert_eq!(verify::matches_local(&store, &entry, &path).await.unwrap(), Ok(()));

    let other_path = other.path().join(format!("commitlog/{:020}", 0));
    let reason = verify::matches_local(&store, &entry, &other_path)
        .await
        .unwrap()
        .unwrap_err();
    assert!(reason.contains("checksum") || reason.contains("records"), "{reason}");

    let mut wrong_count = entry.clone();
    wrong_count.files[0].rows += 1;
    let reason = verify::matches_local(&store, &wrong_count, &path)
        .await
        .unwrap()
        .unwrap_err();
    assert!(reason.contains("rows"), "{reason}");

    let file = object_store::path::Path::from(entry.files[0].path.as_str());
    store
        .inner
        .put(&file, PutPayload::from(vec![0u8; entry.files[0].bytes as usize]))
        .await
        .unwrap();
    let reason = verify::matches_local(&store, &entry, &path).await.unwrap().unwrap_err();
    assert!(reason.contains("does not match its checksum"), "{reason}");
}

/// Which errors stop the service: a full disk does, an unreachable store does not.
#[test]
fn a_full_disk_is_fatal_and_a_timeout_is_not() {
    let store_error = |source: std::io::Error| crate::ArchiveError::Store {
        store: "file:///archive".into(),
        context: "uploading".into(),
        source: object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(source),
        },
    };
    // 28 is ENOSPC on Linux: "No space left on device".
    assert!(store_error(std::io::Error::from_raw_os_error(28)).is_fatal());
    assert!(!store_error(std::io::Error::from(std::io::ErrorKind::TimedOut)).is_fatal());
    assert!(crate::ArchiveError::Config("bad".into()).is_fatal());
    assert!(!crate::ArchiveError::Refused("not master".into()).is_fatal());
}

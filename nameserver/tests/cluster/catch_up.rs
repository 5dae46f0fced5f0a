use std::time::{Duration, Instant};

use meridian_nameserver::RaftConfig;

use crate::harness::{Cluster, PATIENCE, node_info, request_topic, test_config};

/// A follower that was down restarts from its data dir with what it had, then catches up on what
/// it missed from the leader's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_recovers_its_data_dir_and_catches_up() {
    let mut cluster = Cluster::start(&[1, 2, 3], test_config()).await;
    let leader = cluster.wait_for_leader(PATIENCE).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    cluster
        .node(leader)
        .write(request_topic("before", "alice"))
        .await
        .unwrap();
    cluster.wait_converged(leader).await;

    cluster.crash(follower).await;
    for name in ["missed-1", "missed-2", "missed-3"] {
        cluster.node(leader).write(request_topic(name, "alice")).await.unwrap();
    }

    let node = cluster.start_node(follower).await;
    let recovered = node.read_state(|state| state.topics().keys().cloned().collect::<Vec<_>>());
    assert_eq!(
        recovered,
        ["before"],
        "state from its own data dir, before hearing from the leader"
    );
    cluster.wait_converged(leader).await;
    let topics = cluster.node(follower).read_state(|state| state.topics().len());
    assert_eq!(topics, 4);
    cluster.shutdown().await;
}

/// With a small snapshot threshold the leader compacts its log. A node whose data dir is wiped is
/// removed and added again (the admin procedure: a node that lost its log must not vote as if it
/// had it); the entries it lacks are gone from every log, so it can only catch up by installing a
/// snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_re_added_and_catches_up_from_a_snapshot() {
    let config = RaftConfig {
        snapshot_logs_since_last: 5,
        max_in_snapshot_log_to_keep: 0,
        ..test_config()
    };
    let mut cluster = Cluster::start(&[1, 2, 3], config).await;
    let leader = cluster.wait_for_leader(PATIENCE).await;
    for index in 0..20 {
        cluster
            .node(leader)
            .write(request_topic(&format!("topic-{index}"), "alice"))
            .await
            .unwrap();
    }
    cluster.wait_converged(leader).await;

    // Snapshots are built in the background: wait until the leader has compacted its log.
    let deadline = Instant::now() + PATIENCE;
    let purged = loop {
        let metrics = cluster.node(leader).metrics();
        if let (Some(_), Some(purged)) = (metrics.snapshot, metrics.purged)
            && purged.index >= 10
        {
            break purged;
        }
        assert!(
            Instant::now() < deadline,
            "leader never compacted its log: {}",
            cluster.describe()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let snapshot_file = cluster.data_dir(leader).join("snapshots").join("current.snapshot");
    assert!(
        snapshot_file.exists(),
        "snapshot persisted at {}",
        snapshot_file.display()
    );

    let wiped = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    cluster.crash(wiped).await;
    std::fs::remove_dir_all(cluster.data_dir(wiped)).unwrap();
    cluster.node(leader).remove_node(wiped).await.unwrap();

    cluster.start_node(wiped).await;
    cluster.node(leader).add_node(wiped, node_info(wiped)).await.unwrap();
    cluster.wait_converged(leader).await;

    let metrics = cluster.node(wiped).metrics();
    let installed = metrics.snapshot.expect("the wiped node holds a snapshot");
    assert!(
        installed.index >= purged.index,
        "snapshot {installed} covers the purged log up to {purged}: {}",
        cluster.describe()
    );
    let topics = cluster.node(wiped).read_state(|state| state.topics().len());
    assert_eq!(topics, 20, "the whole state arrived");
    let voters: Vec<_> = cluster.node(leader).metrics().membership_config.voter_ids().collect();
    assert_eq!(voters, [1, 2, 3]);

    cluster
        .node(leader)
        .write(request_topic("after", "alice"))
        .await
        .unwrap();
    cluster.wait_converged(leader).await;
    assert_eq!(cluster.node(wiped).read_state(|state| state.topics().len()), 21);
    cluster.shutdown().await;
}

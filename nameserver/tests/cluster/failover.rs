use std::time::{Duration, Instant};

use meridian_nameserver::NameserverError;
use meridian_nameserver::state::ApprovalStatus;

use crate::harness::{Cluster, PATIENCE, approve_topic, node_info, request_topic, test_config};

/// Three nodes elect a leader and replicate to everyone; a follower refuses writes and names the
/// leader; when the leader dies, the two others elect a new one within a few seconds and writes go
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_survive_the_loss_of_the_leader() {
    let mut cluster = Cluster::start(&[1, 2, 3], test_config()).await;
    let leader = cluster.wait_for_leader(PATIENCE).await;
    cluster
        .node(leader)
        .write(request_topic("orders", "alice"))
        .await
        .unwrap();
    cluster.node(leader).write(approve_topic("orders")).await.unwrap();
    cluster.wait_converged(leader).await;
    for node in cluster.running() {
        let status = node.read_state(|state| state.topic("orders").map(|topic| topic.approval.status));
        assert_eq!(
            status,
            Some(ApprovalStatus::Approved),
            "node {} reads the write",
            node.node_id()
        );
    }

    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let error = cluster
        .node(follower)
        .write(request_topic("payments", "alice"))
        .await
        .unwrap_err();
    match &error {
        NameserverError::ForwardToLeader {
            leader_id,
            leader: node,
            ..
        } => {
            assert_eq!(*leader_id, Some(leader));
            assert_eq!(node.as_ref(), Some(&node_info(leader)));
        }
        other => panic!("expected ForwardToLeader, got {other}"),
    }
    assert!(error.to_string().contains(&node_info(leader).addr), "{error}");

    let lost_at = Instant::now();
    cluster.crash(leader).await;
    let new_leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    assert_ne!(new_leader, leader);
    eprintln!("new leader {new_leader} after {:?}", lost_at.elapsed());

    cluster
        .node(new_leader)
        .write(request_topic("payments", "bob"))
        .await
        .unwrap();
    cluster.wait_converged(new_leader).await;
    for node in cluster.running() {
        assert!(node.read_state(|state| state.topic("payments").is_some()));
        assert_eq!(node.read_state(|state| state.topics().len()), 2);
    }
    cluster.shutdown().await;
}

/// A node knows when it is out of touch with the Raft majority: a follower since the leader's
/// last AppendEntries reached it, a leader since a quorum last acknowledged it. A nameserver cut
/// off for longer than the broker timeout refuses routes with `Unavailable` (its state no longer
/// moves while the majority fails its groups over), so clients ask the next nameserver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_the_majority_knows_how_long_it_has_been_out_of_touch() {
    let mut cluster = Cluster::start(&[1, 2, 3], test_config()).await;
    let leader = cluster.wait_for_leader(PATIENCE).await;
    // Past the first 800 ms, "since it started" no longer passes for being in touch.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let in_touch = |cluster: &Cluster| {
        cluster.running().all(|node| {
            node.out_of_touch_for()
                .is_some_and(|silent| silent < Duration::from_millis(500))
        })
    };
    let deadline = Instant::now() + PATIENCE;
    while !in_touch(&cluster) {
        assert!(Instant::now() < deadline, "{}", cluster.describe());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The leader loses both followers: it keeps its role, but no quorum acknowledges it.
    for id in [1, 2, 3].into_iter().filter(|id| *id != leader) {
        cluster.crash(id).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let silent = cluster.node(leader).out_of_touch_for().expect("three voters");
    assert!(silent >= Duration::from_millis(1200), "{silent:?}");

    // One follower returns: the pair is a majority again, and both know it.
    let back = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    cluster.start_node(back).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let deadline = Instant::now() + PATIENCE;
    while !in_touch(&cluster) {
        assert!(Instant::now() < deadline, "{}", cluster.describe());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.shutdown().await;
}

use meridian_nameserver::state::{ApprovalStatus, DecisionAction};
use meridian_nameserver::{NameserverError, Response};

use crate::harness::{Cluster, PATIENCE, approve_topic, request_topic, test_config};

/// `meridian dev`: one node initializes itself, leads, applies writes, and after a restart has
/// its state back from its data dir before it is even leader again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_cluster_applies_writes_and_recovers_them() {
    let mut cluster = Cluster::start(&[1], test_config()).await;
    assert_eq!(cluster.wait_for_leader(PATIENCE).await, 1);

    let node = cluster.node(1);
    let response = node.write(request_topic("orders", "alice")).await.unwrap();
    assert!(matches!(&response, Response::Topic(topic) if topic.approval.status == ApprovalStatus::Requested));
    node.write(approve_topic("orders")).await.unwrap();
    let refused = node.write(approve_topic("orders")).await.unwrap_err();
    assert!(
        matches!(&refused, NameserverError::Command(_)) && refused.to_string().contains("it was approved by admin"),
        "{refused}"
    );
    assert_eq!(
        node.read_state(|state| state.topic("orders").map(|topic| topic.approval.status)),
        Some(ApprovalStatus::Approved)
    );

    cluster.crash(1).await;
    let node = cluster.start_node(1).await;
    let history = node.read_state(|state| state.topic_history("orders").to_vec());
    let actions: Vec<_> = history.iter().map(|decision| decision.action).collect();
    assert_eq!(
        actions,
        [DecisionAction::Requested, DecisionAction::Approved],
        "recovered from the log on start"
    );
    assert_eq!(cluster.wait_for_leader(PATIENCE).await, 1);
    cluster.node(1).write(request_topic("payments", "alice")).await.unwrap();
    cluster.shutdown().await;
}

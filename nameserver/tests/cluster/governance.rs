use meridian_nameserver::state::DecisionAction;
use meridian_nameserver::{CommandError, NameserverError};

use crate::harness::{Cluster, PATIENCE, request_topic, test_config};

/// Two clients request the same topic at the same time through the leader: the log orders them,
/// so exactly one request is recorded and the other is told who was first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_requests_for_one_topic_record_exactly_one() {
    let cluster = Cluster::start(&[1, 2, 3], test_config()).await;
    let leader = cluster.wait_for_leader(PATIENCE).await;
    let node = cluster.node(leader);
    let (first, second) = tokio::join!(
        node.write(request_topic("orders", "team-a")),
        node.write(request_topic("orders", "team-b"))
    );
    let (winner, loser_error) = match (first, second) {
        (Ok(_), Err(error)) => ("team-a", error),
        (Err(error), Ok(_)) => ("team-b", error),
        other => panic!("exactly one request must succeed: {other:?}"),
    };
    match &loser_error {
        NameserverError::Command(CommandError::AlreadyRequested { requested_by, .. }) => {
            assert_eq!(requested_by, winner);
        }
        other => panic!("expected AlreadyRequested, got {other}"),
    }
    assert!(
        loser_error
            .to_string()
            .starts_with(&format!("topic \"orders\" was already requested by {winner} at ")),
        "{loser_error}"
    );

    cluster.wait_converged(leader).await;
    for node in cluster.running() {
        let history = node.read_state(|state| state.topic_history("orders").to_vec());
        assert_eq!(history.len(), 1, "node {}: one request recorded", node.node_id());
        assert_eq!(history[0].action, DecisionAction::Requested);
        assert_eq!(history[0].by, winner);
    }
    cluster.shutdown().await;
}

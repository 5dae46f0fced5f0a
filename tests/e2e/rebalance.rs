//! Rebalancing of a consumer group of ten: nine push consumers in this process and one
//! `meridian consume` process. After a member joins, leaves cleanly or is killed with -9, the
//! group converges on the allocation every member computes, no queue held twice and none orphaned.
//! The measured convergence times are printed; `scripts/bench-rebalance.sh` records them.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_client::{
    ClientConfig, ConnectionPool, ConsumeFrom, ConsumeResult, ConsumerConfig, Deployment, PushConsumer, QueueId,
    allocate_by_idc,
};
use meridian_proto::RequestCode;
use meridian_proto::messages::{ConsumerListResponse, GroupMember};
use meridian_tests::{DevNode, meridian_bin};

const TOPIC: &str = "rebalanced";
const GROUP: &str = "rebalancers";
const QUEUES: u32 = 40;

struct Group {
    node: DevNode,
    pool: ConnectionPool,
    consumers: Vec<PushConsumer>,
}

impl Group {
    /// Live members as the broker lists them: `(client_id, idc)`.
    async fn members(&self) -> Vec<(String, String)> {
        let request = GroupMember {
            group: GROUP.into(),
            client_id: String::new(),
        };
        let listed: ConsumerListResponse = self
            .pool
            .call(
                &self.node.broker_addr(),
                RequestCode::ConsumerList,
                &request,
                Duration::from_secs(3),
            )
            .await
            .expect("listing members");
        listed
            .members
            .into_iter()
            .map(|member| (member.client_id, member.idc))
            .collect()
    }

    fn queues(&self) -> Vec<(QueueId, String)> {
        (0..QUEUES)
            .map(|id| (QueueId::new("broker-a", id), "local".to_owned()))
            .collect()
    }

    /// Whether the group has `count` members and each consumer here holds exactly what the
    /// allocation gives it (so the one elsewhere holds the rest: nothing twice, nothing orphaned).
    async fn converged(&self, count: usize) -> bool {
        let members = self.members().await;
        if members.len() != count {
            return false;
        }
        let queues = self.queues();
        let mut held = BTreeSet::new();
        for consumer in &self.consumers {
            let expected = allocate_by_idc(
                &queues,
                &members,
                &consumer.config().client_id,
                Deployment::SingleSide,
                &[],
            );
            let mine = consumer.assigned_queues();
            if mine != expected.queues {
                return false;
            }
            held.extend(mine);
        }
        let others: usize = members
            .iter()
            .filter(|(client_id, _)| {
                !self
                    .consumers
                    .iter()
                    .any(|consumer| consumer.config().client_id == *client_id)
            })
            .map(|(client_id, _)| {
                allocate_by_idc(&queues, &members, client_id, Deployment::SingleSide, &[])
                    .queues
                    .len()
            })
            .sum();
        held.len() + others == QUEUES as usize
    }

    /// How long until [`Group::converged`] holds (panics after 30 s).
    async fn converge(&self, count: usize, what: &str) -> Duration {
        let started = Instant::now();
        while !self.converged(count).await {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{what}: the group never converged; members {:?}",
                self.members().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    fn consumer_process(&self) -> Child {
        Command::new(meridian_bin())
            .args(["consume", "--topic", TOPIC, "--group", GROUP, "--idc", "local"])
            .env("MERIDIAN_NAMESERVER", self.node.nameserver.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting meridian consume")
    }
}

async fn start_consumer(node: &DevNode, pool: &ConnectionPool, index: usize) -> PushConsumer {
    let config = ConsumerConfig {
        client_id: format!("member-{index:02}"),
        consume_from: ConsumeFrom::Earliest,
        long_poll: Duration::from_millis(500),
        idc: meridian_client::IdcSettings {
            idc: "local".into(),
            ..Default::default()
        },
        ..ConsumerConfig::new(GROUP, TOPIC)
    };
    PushConsumer::start(node.route(pool), config, |_| async { ConsumeResult::Success })
        .await
        .expect("starting a consumer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_of_ten_converges_after_a_join_a_leave_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), &[]);
    node.create_topic(TOPIC, QUEUES).await;
    node.create_group(GROUP, &[TOPIC]).await;
    let pool = ConnectionPool::new(ClientConfig::default());
    let mut group = Group {
        consumers: Vec::new(),
        pool,
        node,
    };
    for index in 0..9 {
        let consumer = start_consumer(&group.node, &group.pool, index).await;
        group.consumers.push(consumer);
    }
    group.converge(9, "nine members").await;

    // A tenth member joins (another process).
    let mut tenth = group.consumer_process();
    let joined = group.converge(10, "a member joined").await;

    // It crashes: its connection closes and the brokers drop it at once.
    tenth.kill().expect("kill -9");
    tenth.wait().expect("reaping");
    let crashed = group.converge(9, "a member crashed").await;

    // A member leaves cleanly, and a new one joins in this process.
    let leaving = group.consumers.pop().expect("a member");
    leaving.shutdown().await;
    let left = group.converge(8, "a member left").await;
    let consumer = start_consumer(&group.node, &group.pool, 9).await;
    group.consumers.push(consumer);
    group.converge(9, "a member rejoined").await;

    eprintln!(
        "rebalance of a group of 10 over {QUEUES} queues: join {:.0} ms, crash (kill -9) {:.0} ms, clean leave {:.0} ms",
        joined.as_secs_f64() * 1e3,
        crashed.as_secs_f64() * 1e3,
        left.as_secs_f64() * 1e3
    );
    for consumer in group.consumers.drain(..) {
        consumer.shutdown().await;
    }
    group.pool.shutdown().await;
    group.node.stop();
}

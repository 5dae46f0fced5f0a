//! Administrative calls: create topics, read routes.

use std::sync::Arc;

use meridian_proto::RequestCode;
use meridian_proto::messages::{CreateTopicRequest, TopicRoute};
use meridian_proto::validate::{validate_queue_count, validate_topic};

use crate::ClientConfig;
use crate::error::ClientError;
use crate::route::{NameserverRoute, RouteSource};
use meridian_proto::transport::ConnectionPool;

/// Administrative client.
pub struct Admin {
    route: Arc<dyn RouteSource>,
    pool: ConnectionPool,
}

impl Admin {
    /// An admin client reading routes through `route`. Connections open on first use.
    pub fn new(route: Arc<dyn RouteSource>, config: ClientConfig) -> Admin {
        Admin {
            route,
            pool: ConnectionPool::new(config),
        }
    }

    /// An admin client reading routes from the nameservers at `nameservers` (`host:port` each; see
    /// [`NameserverRoute`]). Brokers governed by nameservers refuse [`Admin::create_topic`]: their
    /// topics are requested and approved through the nameservers.
    pub fn with_nameservers(nameservers: Vec<String>, config: ClientConfig) -> Admin {
        let pool = ConnectionPool::new(config);
        Admin {
            route: Arc::new(NameserverRoute::new(nameservers, pool.clone())),
            pool,
        }
    }

    /// Creates `topic` with `queues` queues on the standalone broker at `broker_addr`. An existing
    /// topic fails with [`meridian_proto::ErrorCode::AlreadyExists`]; a broker governed by
    /// nameservers refuses with [`meridian_proto::ErrorCode::FailedPrecondition`].
    pub async fn create_topic(&self, broker_addr: &str, topic: &str, queues: u32) -> Result<(), ClientError> {
        validate_topic(topic)?;
        validate_queue_count(queues)?;
        let request = CreateTopicRequest {
            topic: topic.to_owned(),
            queues,
        };
        let timeout = self.pool.config().request_timeout;
        self.pool
            .call_empty(broker_addr, RequestCode::CreateTopic, &request, timeout)
            .await
            .map_err(ClientError::from)
    }

    /// The current route of `topic`, fetched now (not cached).
    pub async fn topic_route(&self, topic: &str) -> Result<TopicRoute, ClientError> {
        validate_topic(topic)?;
        self.route.route(topic).await
    }

    /// Closes the connections.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::StaticRoute;
    use crate::test_support::FakeBroker;
    use meridian_proto::ErrorCode;
    use meridian_proto::messages::perm;

    #[tokio::test]
    async fn creates_topics_and_reads_their_route() {
        let broker = FakeBroker::start(&[]).await;
        let route = Arc::new(StaticRoute::new(
            broker.addr.clone(),
            ConnectionPool::new(ClientConfig::default()),
        ));
        let admin = Admin::new(route, ClientConfig::default());
        admin.create_topic(&broker.addr, "orders", 8).await.unwrap();
        let error = admin.create_topic(&broker.addr, "orders", 8).await.unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::Broker {
                    code: ErrorCode::AlreadyExists,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(matches!(
            admin.create_topic(&broker.addr, "orders", 0).await,
            Err(ClientError::Validation(_))
        ));
        let route = admin.topic_route("orders").await.unwrap();
        assert_eq!(route.brokers.len(), 1);
        assert_eq!(route.brokers[0].queues, 8);
        assert_eq!(route.brokers[0].perm, perm::READ | perm::WRITE);
        // A lone broker's advertised address is replaced by the one it was reached at.
        assert_eq!(route.brokers[0].addr, broker.addr);
        admin.shutdown().await;
    }
}

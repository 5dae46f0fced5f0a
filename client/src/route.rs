//! Where topics live: the [`RouteSource`] trait, the single-broker [`StaticRoute`], and the
//! per-topic cache producers and consumers keep.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_proto::RequestCode;
use meridian_proto::messages::{TopicRoute, TopicRouteRequest};
use meridian_proto::validate::validate_topic;
use tokio::time::Instant;
use tracing::debug;

use crate::allocate::QueueId;
use crate::error::ClientError;
use meridian_proto::transport::ConnectionPool;

/// How long a cached route is trusted before it is fetched again.
pub(crate) const ROUTE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Looks up the route of a topic. Boxed futures keep the trait dyn-compatible, so producers and
/// consumers hold an `Arc<dyn RouteSource>` whether routes come from one broker or a nameserver.
pub trait RouteSource: Send + Sync + 'static {
    /// The brokers serving `topic`, with their queues and permissions.
    fn route<'a>(
        &'a self,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<TopicRoute, ClientError>> + Send + 'a>>;
}

/// Routes from one broker, asked directly (no nameserver).
pub struct StaticRoute {
    broker_addr: String,
    pool: ConnectionPool,
}

impl StaticRoute {
    /// Asks the broker at `broker_addr` for routes, over `pool`.
    pub fn new(broker_addr: String, pool: ConnectionPool) -> StaticRoute {
        StaticRoute { broker_addr, pool }
    }
}

impl RouteSource for StaticRoute {
    fn route<'a>(
        &'a self,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<TopicRoute, ClientError>> + Send + 'a>> {
        Box::pin(async move {
            validate_topic(topic)?;
            let request = TopicRouteRequest {
                topic: topic.to_owned(),
            };
            let timeout = self.pool.config().request_timeout;
            let mut route: TopicRoute = self
                .pool
                .call(&self.broker_addr, RequestCode::TopicRoute, &request, timeout)
                .await?;
            // A lone broker answers with the address it advertises, which may not be reachable
            // from here (a wildcard bind, NAT); the address we just reached it at certainly is.
            if let [broker] = route.brokers.as_mut_slice() {
                broker.addr.clone_from(&self.broker_addr);
            }
            Ok(route)
        })
    }
}

/// The queues of `route` whose broker grants `permission` (a [`meridian_proto::messages::perm`]
/// bit), sorted, each with its broker's address.
pub(crate) fn route_queues(route: &TopicRoute, permission: u32) -> Vec<(QueueId, String)> {
    let mut queues: Vec<(QueueId, String)> = route
        .brokers
        .iter()
        .filter(|broker| broker.perm & permission != 0)
        .flat_map(|broker| {
            (0..broker.queues).map(|queue_id| (QueueId::new(&broker.broker_name, queue_id), broker.addr.clone()))
        })
        .collect();
    queues.sort();
    queues
}

/// The address of the broker named `broker_name` in `route`.
pub(crate) fn broker_addr<'a>(route: &'a TopicRoute, broker_name: &str) -> Option<&'a str> {
    route
        .brokers
        .iter()
        .find(|broker| broker.broker_name == broker_name)
        .map(|broker| broker.addr.as_str())
}

/// Every distinct broker address of `route`, sorted.
pub(crate) fn broker_addrs(route: &TopicRoute) -> Vec<String> {
    let mut addrs: Vec<String> = route.brokers.iter().map(|broker| broker.addr.clone()).collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

struct CachedRoute {
    route: Arc<TopicRoute>,
    fetched_at: Instant,
}

/// Routes per topic, refreshed every [`ROUTE_REFRESH_INTERVAL`] and after errors that suggest the
/// route is stale.
pub(crate) struct RouteCache {
    source: Arc<dyn RouteSource>,
    entries: Mutex<HashMap<String, CachedRoute>>,
}

impl RouteCache {
    pub(crate) fn new(source: Arc<dyn RouteSource>) -> RouteCache {
        RouteCache {
            source,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The route of `topic`, from the cache when fresh. Concurrent misses may fetch twice, which
    /// is cheaper than making every reader wait on a lock held across the fetch.
    pub(crate) async fn get(&self, topic: &str) -> Result<Arc<TopicRoute>, ClientError> {
        {
            let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(cached) = entries.get(topic)
                && cached.fetched_at.elapsed() < ROUTE_REFRESH_INTERVAL
            {
                return Ok(cached.route.clone());
            }
        }
        let route = self.source.route(topic).await?;
        if route.brokers.is_empty() {
            return Err(ClientError::NoRoute {
                topic: topic.to_owned(),
            });
        }
        debug!(topic, brokers = route.brokers.len(), "fetched topic route");
        let route = Arc::new(route);
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(
                topic.to_owned(),
                CachedRoute {
                    route: route.clone(),
                    fetched_at: Instant::now(),
                },
            );
        Ok(route)
    }

    /// Forgets the route of `topic` so the next [`RouteCache::get`] fetches it again.
    pub(crate) fn invalidate(&self, topic: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::messages::{BrokerRoute, perm};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingRoute {
        fetches: AtomicUsize,
        route: TopicRoute,
    }

    impl RouteSource for CountingRoute {
        fn route<'a>(
            &'a self,
            _topic: &'a str,
        ) -> Pin<Box<dyn Future<Output = Result<TopicRoute, ClientError>> + Send + 'a>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let route = self.route.clone();
            Box::pin(async move { Ok(route) })
        }
    }

    fn broker(name: &str, queues: u32, perm: u32) -> BrokerRoute {
        BrokerRoute {
            broker_name: name.to_owned(),
            addr: format!("{name}:7911"),
            idc: String::new(),
            queues,
            perm,
            replicas: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn routes_are_cached_for_thirty_seconds_and_after_invalidation_refetched() {
        let source = Arc::new(CountingRoute {
            fetches: AtomicUsize::new(0),
            route: TopicRoute {
                topic: "orders".into(),
                brokers: vec![broker("a", 2, perm::READ | perm::WRITE)],
            },
        });
        let cache = RouteCache::new(source.clone());
        cache.get("orders").await.unwrap();
        cache.get("orders").await.unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(ROUTE_REFRESH_INTERVAL).await;
        cache.get("orders").await.unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
        cache.invalidate("orders");
        cache.get("orders").await.unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_route_without_brokers_is_no_route() {
        let source = Arc::new(CountingRoute {
            fetches: AtomicUsize::new(0),
            route: TopicRoute {
                topic: "orders".into(),
                brokers: Vec::new(),
            },
        });
        let cache = RouteCache::new(source);
        assert!(matches!(cache.get("orders").await, Err(ClientError::NoRoute { .. })));
    }

    #[test]
    fn queues_follow_permissions_and_sort_by_broker() {
        let route = TopicRoute {
            topic: "orders".into(),
            brokers: vec![
                broker("b", 2, perm::READ | perm::WRITE),
                broker("a", 1, perm::READ),
                broker("c", 1, 0),
            ],
        };
        let writable: Vec<String> = route_queues(&route, perm::WRITE)
            .into_iter()
            .map(|(queue, _)| queue.to_string())
            .collect();
        assert_eq!(writable, ["b#0", "b#1"]);
        let readable: Vec<(String, String)> = route_queues(&route, perm::READ)
            .into_iter()
            .map(|(queue, addr)| (queue.to_string(), addr))
            .collect();
        assert_eq!(readable[0], ("a#0".to_owned(), "a:7911".to_owned()));
        assert_eq!(readable.len(), 3);
        assert_eq!(broker_addr(&route, "c"), Some("c:7911"));
        assert_eq!(broker_addrs(&route).len(), 3);
    }
}

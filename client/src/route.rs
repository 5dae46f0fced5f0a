//! Where topics live: the [`RouteSource`] trait, the single-broker [`StaticRoute`], the
//! [`NameserverRoute`] that asks a cluster's nameservers, and the per-topic cache producers and
//! consumers keep.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::net::IpAddr;

use meridian_proto::{ErrorCode, RequestCode};

use meridian_proto::idc::local_ip_towards;
use meridian_proto::messages::{BrokerRoute, IdcLookupRequest, IdcLookupResponse, TopicRoute, TopicRouteRequest, perm};
use meridian_proto::transport::TransportError;
use meridian_proto::validate::validate_topic;
use tokio::time::Instant;
use tracing::debug;

use crate::error::ClientError;
use meridian_proto::allocate::QueueId;
use meridian_proto::transport::ConnectionPool;

/// How long a cached route is trusted before it is fetched again.
pub(crate) const ROUTE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// What [`RouteSource::idc_lookup`] returns: the address looked up and the IDC map's answer.
pub type IdcLookupFuture<'a> = Pin<Box<dyn Future<Output = Option<(IpAddr, IdcLookupResponse)>> + Send + 'a>>;

/// Looks up the route of a topic. Boxed futures keep the trait dyn-compatible, so producers and
/// consumers hold an `Arc<dyn RouteSource>` whether routes come from one broker or a nameserver.
pub trait RouteSource: Send + Sync + 'static {
    /// The brokers serving `topic`, with their queues and permissions.
    fn route<'a>(
        &'a self,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<TopicRoute, ClientError>> + Send + 'a>>;

    /// The IDC map's answer for `ip` (default: the address this host uses to reach the source),
    /// with the address looked up; `None` when the source keeps no map (a lone broker) or no
    /// nameserver answered.
    fn idc_lookup<'a>(&'a self, _ip: Option<IpAddr>) -> IdcLookupFuture<'a> {
        Box::pin(async { None })
    }

    /// Whether a route from this source means the topic is approved (nameservers give no route
    /// to a topic awaiting approval); false for a lone broker, which serves every topic.
    fn routes_only_approved_topics(&self) -> bool {
        false
    }

    /// Whether the source keeps an IDC map and brokers in several data centers (nameservers);
    /// false for a lone broker, where knowing no data center is normal, not worth a warning.
    fn has_idc_map(&self) -> bool {
        false
    }
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

/// Routes from a cluster's nameservers. A lookup asks the nameserver that answered last; when it
/// is down, unreachable or busy, the next one in the list, each at most once per lookup. An answer
/// that another nameserver would repeat (an unknown or unapproved topic) is returned at once.
pub struct NameserverRoute {
    addrs: Vec<String>,
    pool: ConnectionPool,
    /// Index into `addrs` of the nameserver that answered last: lookups start there.
    current: AtomicUsize,
}

impl NameserverRoute {
    /// Asks the nameservers at `addrs` (`host:port`) for routes, over `pool`.
    pub fn new(addrs: Vec<String>, pool: ConnectionPool) -> NameserverRoute {
        NameserverRoute {
            addrs,
            pool,
            current: AtomicUsize::new(0),
        }
    }

    /// The nameserver addresses, in the order given.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The pool requests to the nameservers go over.
    pub(crate) fn pool(&self) -> &ConnectionPool {
        &self.pool
    }

    /// Sends `ask` to the nameserver that answered last, and while one is down, unreachable or
    /// busy, to the next, each at most once: the failover every nameserver request of the SDK
    /// shares (route lookups, [`crate::NameserverAdmin`]). A refusal another nameserver would
    /// repeat ends the round at once.
    pub(crate) async fn ask_each<'a, T, Ask, Answer>(&'a self, mut ask: Ask) -> Result<T, Unanswered>
    where
        Ask: FnMut(&'a str) -> Answer,
        Answer: Future<Output = Result<T, TransportError>>,
    {
        let start = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        let mut undone = true;
        for step in 0..self.addrs.len() {
            let index = (start + step) % self.addrs.len();
            let addr: &'a str = &self.addrs[index];
            match ask(addr).await {
                Ok(answer) => {
                    if index != start {
                        debug!(nameserver = %addr, "nameserver requests move to this nameserver");
                    }
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(error) if error.is_retriable() => {
                    debug!(nameserver = %addr, %error, "nameserver did not answer; trying the next one");
                    // Only a request that surely did not reach a leader may be sent again.
                    undone &= matches!(
                        error,
                        TransportError::Connect { .. }
                            | TransportError::Remote {
                                code: ErrorCode::Unavailable,
                                ..
                            }
                    );
                    failures.push((addr.to_owned(), failure_reason(&error)));
                }
                Err(TransportError::Remote { addr, code, message }) => {
                    return Err(Unanswered::Refused { addr, code, message });
                }
                Err(error) => return Err(Unanswered::Failed(error)),
            }
        }
        Err(Unanswered::NoneAnswered { failures, undone })
    }

    async fn lookup(&self, topic: &str) -> Result<TopicRoute, ClientError> {
        validate_topic(topic)?;
        if self.addrs.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no nameserver addresses were given; pass at least one host:port".to_owned(),
            ));
        }
        let request = TopicRouteRequest {
            topic: topic.to_owned(),
        };
        let timeout = self.pool.config().request_timeout;
        let answer = self
            .ask_each(|addr| self.pool.call(addr, RequestCode::TopicRoute, &request, timeout))
            .await;
        match answer {
            Ok(route) => Ok(route),
            Err(Unanswered::Refused { addr, code, message }) => Err(ClientError::Nameserver { addr, code, message }),
            Err(Unanswered::Failed(error)) => Err(error.into()),
            Err(Unanswered::NoneAnswered { failures, .. }) => Err(ClientError::NameserversUnreachable {
                topic: topic.to_owned(),
                failures,
            }),
        }
    }
}

/// Why [`NameserverRoute::ask_each`] has no answer.
pub(crate) enum Unanswered {
    /// A nameserver refused with an error another would repeat.
    Refused {
        /// The nameserver.
        addr: String,
        /// Its code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// A failure that asking another nameserver cannot help (a request too large to send).
    Failed(TransportError),
    /// Each nameserver was down, unreachable or busy.
    NoneAnswered {
        /// Each address tried, with why it failed.
        failures: Vec<(String, String)>,
        /// Whether every failure left the request surely undone (no connection, or refused as
        /// unavailable), so sending it again cannot apply a write twice.
        undone: bool,
    },
}

/// Why one nameserver did not answer, briefly: the whole error goes on to name the fix once.
fn failure_reason(error: &TransportError) -> String {
    match error {
        TransportError::Connect { source, .. } => format!("cannot connect ({source})"),
        TransportError::Timeout { after, .. } => format!("no answer within {after:?}"),
        TransportError::ConnectionClosed => "connection closed before the answer".to_owned(),
        TransportError::Remote { code, message, .. } => format!("{code}: {message}"),
        other => other.to_string(),
    }
}

impl RouteSource for NameserverRoute {
    fn routes_only_approved_topics(&self) -> bool {
        true
    }

    fn has_idc_map(&self) -> bool {
        true
    }

    fn route<'a>(
        &'a self,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<TopicRoute, ClientError>> + Send + 'a>> {
        Box::pin(self.lookup(topic))
    }

    fn idc_lookup<'a>(&'a self, ip: Option<IpAddr>) -> IdcLookupFuture<'a> {
        Box::pin(async move {
            let timeout = self.pool.config().request_timeout;
            for addr in &self.addrs {
                let Some(ip) = ip.or_else(|| local_ip_towards(addr)) else {
                    continue;
                };
                let request = IdcLookupRequest { ip: ip.to_string() };
                match self.pool.call(addr, RequestCode::IdcLookup, &request, timeout).await {
                    Ok(response) => return Some((ip, response)),
                    Err(error) => debug!(nameserver = %addr, %error, "IDC lookup failed; trying the next nameserver"),
                }
            }
            None
        })
    }
}

/// The data center of each broker group of `route`, by group name.
pub(crate) fn broker_idcs(route: &TopicRoute) -> HashMap<&str, &str> {
    route
        .brokers
        .iter()
        .map(|broker| (broker.broker_name.as_str(), broker.idc.as_str()))
        .collect()
}

/// Where to write to a broker group: its live master; `None` when it has none.
fn write_addr(broker: &BrokerRoute) -> Option<&str> {
    Some(broker.addr.as_str()).filter(|addr| !addr.is_empty())
}

/// Where to read from a broker group: its live master, or while it has none (a failover is under
/// way) the live slave holding the most, so consumers keep reading what the group stored.
fn read_addr(broker: &BrokerRoute) -> Option<&str> {
    write_addr(broker).or_else(|| {
        broker
            .replicas
            .iter()
            .filter(|replica| replica.alive && !replica.addr.is_empty())
            .max_by_key(|replica| replica.max_offset)
            .map(|replica| replica.addr.as_str())
    })
}

/// The queues of `route` whose broker grants `permission` (a [`meridian_proto::messages::perm`]
/// bit), sorted, each with the address to use: the group's live master, or for reads alone a live
/// slave while the group has no live master. Groups with neither are left out.
pub(crate) fn route_queues(route: &TopicRoute, permission: u32) -> Vec<(QueueId, String)> {
    let pick = if permission & perm::WRITE != 0 {
        write_addr
    } else {
        read_addr
    };
    let mut queues: Vec<(QueueId, String)> = route
        .brokers
        .iter()
        .filter(|broker| broker.perm & permission != 0)
        .filter_map(|broker| pick(broker).map(|addr| (broker, addr)))
        .flat_map(|(broker, addr)| {
            (0..broker.queues).map(move |queue_id| (QueueId::new(&broker.broker_name, queue_id), addr.to_owned()))
        })
        .collect();
    queues.sort();
    queues
}

/// The address to read from broker group `broker_name` of `route` (see [`route_queues`]); `None`
/// when the route lacks it or the group has no live member.
pub(crate) fn broker_addr<'a>(route: &'a TopicRoute, broker_name: &str) -> Option<&'a str> {
    route
        .brokers
        .iter()
        .find(|broker| broker.broker_name == broker_name)
        .and_then(read_addr)
}

/// Every distinct address consumers read from in `route`, sorted; groups with no live member are
/// left out.
pub(crate) fn broker_addrs(route: &TopicRoute) -> Vec<String> {
    let mut addrs: Vec<String> = route.brokers.iter().filter_map(read_addr).map(str::to_owned).collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

struct CachedRoute {
    route: Arc<TopicRoute>,
    fetched_at: Instant,
}

/// Routes per topic, refreshed every [`ROUTE_REFRESH_INTERVAL`] (or the interval set) and after
/// errors that suggest the route is stale.
pub(crate) struct RouteCache {
    source: Arc<dyn RouteSource>,
    entries: Mutex<HashMap<String, CachedRoute>>,
    refresh: Duration,
}

impl RouteCache {
    pub(crate) fn new(source: Arc<dyn RouteSource>) -> RouteCache {
        RouteCache {
            source,
            entries: Mutex::new(HashMap::new()),
            refresh: ROUTE_REFRESH_INTERVAL,
        }
    }

    /// Trust cached routes for `refresh` instead.
    pub(crate) fn set_refresh(&mut self, refresh: Duration) {
        self.refresh = refresh;
    }

    /// Where routes come from.
    pub(crate) fn source(&self) -> &dyn RouteSource {
        &*self.source
    }

    /// The route of `topic`, from the cache when fresh. Concurrent misses may fetch twice, which
    /// is cheaper than making every reader wait on a lock held across the fetch.
    pub(crate) async fn get(&self, topic: &str) -> Result<Arc<TopicRoute>, ClientError> {
        {
            let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(cached) = entries.get(topic)
                && cached.fetched_at.elapsed() < self.refresh
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
    use crate::test_support::{FakeNameserver, refused_addr};
    use meridian_proto::ErrorCode;
    use meridian_proto::messages::{BrokerRoute, perm};

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
                evacuated_idcs: Vec::new(),
                lost_idcs: Vec::new(),
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
                evacuated_idcs: Vec::new(),
                lost_idcs: Vec::new(),
            },
        });
        let cache = RouteCache::new(source);
        assert!(matches!(cache.get("orders").await, Err(ClientError::NoRoute { .. })));
    }

    fn nameserver_route(addrs: &[&String]) -> NameserverRoute {
        NameserverRoute::new(
            addrs.iter().map(|addr| (*addr).clone()).collect(),
            ConnectionPool::new(crate::ClientConfig::default()),
        )
    }

    fn orders_route() -> TopicRoute {
        TopicRoute {
            topic: "orders".into(),
            brokers: vec![broker("a", 2, perm::READ | perm::WRITE)],
            evacuated_idcs: Vec::new(),
            lost_idcs: Vec::new(),
        }
    }

    #[tokio::test]
    async fn lookups_skip_a_dead_nameserver_and_stay_with_the_one_that_answered() {
        let dead = refused_addr();
        let live = FakeNameserver::start().await;
        live.set_route(orders_route());
        let source = nameserver_route(&[&dead, &live.addr]);
        assert_eq!(source.route("orders").await.unwrap(), orders_route());
        assert_eq!(source.current.load(Ordering::Relaxed), 1);
        assert_eq!(source.route("orders").await.unwrap(), orders_route());
        assert_eq!(live.lookups(), 2);
        // An answer that any nameserver would repeat comes back as it is.
        let error = source.route("missing").await.unwrap_err();
        assert!(
            matches!(&error, ClientError::Nameserver { code: ErrorCode::TopicNotFound, addr, .. } if *addr == live.addr),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_returned_at_once_without_asking_the_next_nameserver() {
        let refusing = FakeNameserver::start().await;
        let message = "topic \"payments\" is awaiting approval: have an admin approve it";
        refusing.refuse("payments", ErrorCode::NotApproved, message);
        let other = FakeNameserver::start().await;
        let source = nameserver_route(&[&refusing.addr, &other.addr]);
        let error = source.route("payments").await.unwrap_err();
        match &error {
            ClientError::Nameserver {
                code, message: remark, ..
            } => {
                assert_eq!(*code, ErrorCode::NotApproved);
                assert_eq!(remark, message);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(!error.is_retriable());
        assert_eq!(other.lookups(), 0);
    }

    #[tokio::test]
    async fn a_busy_nameserver_is_passed_over_like_a_dead_one() {
        let busy = FakeNameserver::start().await;
        busy.refuse("orders", ErrorCode::Unavailable, "not the leader yet");
        let live = FakeNameserver::start().await;
        live.set_route(orders_route());
        let source = nameserver_route(&[&busy.addr, &live.addr]);
        assert_eq!(source.route("orders").await.unwrap(), orders_route());
        assert_eq!((busy.lookups(), live.lookups()), (1, 1));
    }

    #[tokio::test]
    async fn when_every_nameserver_is_down_the_error_names_each_one() {
        let (first, second) = (refused_addr(), refused_addr());
        let source = nameserver_route(&[&first, &second]);
        let error = source.route("orders").await.unwrap_err();
        assert!(matches!(&error, ClientError::NameserversUnreachable { failures, .. } if failures.len() == 2));
        assert!(error.is_retriable());
        let message = error.to_string();
        assert!(message.contains(&first) && message.contains(&second), "{message}");
        assert!(message.contains("check that the nameservers are running"), "{message}");
        let none = NameserverRoute::new(Vec::new(), ConnectionPool::new(crate::ClientConfig::default()));
        assert!(matches!(
            none.route("orders").await,
            Err(ClientError::InvalidArgument(_))
        ));
    }

    use meridian_proto::messages::ReplicaRoute;

    #[test]
    fn groups_without_a_live_master_are_skipped() {
        let mut headless = broker("b", 2, perm::READ | perm::WRITE);
        headless.addr.clear();
        let route = TopicRoute {
            topic: "orders".into(),
            brokers: vec![broker("a", 1, perm::READ | perm::WRITE), headless],
            evacuated_idcs: Vec::new(),
            lost_idcs: Vec::new(),
        };
        for permission in [perm::READ, perm::WRITE] {
            let queues: Vec<String> = route_queues(&route, permission)
                .into_iter()
                .map(|(queue, _)| queue.to_string())
                .collect();
            assert_eq!(queues, ["a#0"]);
        }
        assert_eq!(broker_addr(&route, "b"), None);
        assert_eq!(broker_addrs(&route), ["a:7911"]);
    }

    #[test]
    fn while_a_group_has_no_live_master_reads_go_to_its_most_advanced_live_slave() {
        let replica = |name: &str, alive: bool, max_offset: u64| ReplicaRoute {
            name: name.into(),
            addr: format!("{name}:7911"),
            idc: "dc1".into(),
            role: meridian_proto::messages::role::SLAVE,
            epoch: 1,
            alive,
            max_offset,
        };
        let mut failing = broker("b", 1, perm::READ | perm::WRITE);
        failing.addr.clear();
        failing.replicas = vec![
            replica("b-0", false, 900),
            replica("b-1", true, 500),
            replica("b-2", true, 700),
        ];
        let route = TopicRoute {
            topic: "orders".into(),
            brokers: vec![failing],
            evacuated_idcs: Vec::new(),
            lost_idcs: Vec::new(),
        };
        assert!(route_queues(&route, perm::WRITE).is_empty(), "writes need the master");
        assert_eq!(route_queues(&route, perm::READ)[0].1, "b-2:7911");
        assert_eq!(broker_addr(&route, "b"), Some("b-2:7911"));
        assert_eq!(broker_addrs(&route), ["b-2:7911"]);
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
            evacuated_idcs: Vec::new(),
            lost_idcs: Vec::new(),
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

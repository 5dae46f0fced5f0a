//! The nameserver's RocketMQ 4.x remoting listener (9876 by default): RocketMQ clients look up
//! routes (`GET_ROUTEINFO_BY_TOPIC`), the cluster (`GET_BROKER_CLUSTER_INFO`) and the topic list
//! (`GET_ALL_TOPIC_LIST_FROM_NAMESERVER`) here.
//!
//! A route answer is Meridian's own route ([`crate::routes::topic_route`]: approved topics only,
//! live masters, a drill's evacuated data center read-only) translated into RocketMQ's
//! `TopicRouteData`, with two additions: brokers are named by their remoting addresses (which
//! they report in heartbeats, kept here in [`BrokerRemotingAddrs`]), and near-by routing: when
//! the client's data center (by the IDC map, from its address) has a writable broker with a live
//! master, brokers in other data centers are offered read-only, so an unmodified producer sends
//! locally and falls back at its next route refresh when the local brokers fail.
//!
//! Clients older than 4.9.4 (version < 401, unless they send `acceptStandardJsonOnly=true`) get
//! fastjson's form with unquoted numeric keys in `brokerAddrs`, as the Java nameserver sends it.
//! A consumer group's `%RETRY%` and `%DLQ%` topics route to every broker group with a live master
//! once the group is approved.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use meridian_proto::messages::{BrokerHeartbeat, perm};
use meridian_proto::remoting::codes::{request, request_name, response};
use meridian_proto::remoting::command::V4_9_4;
use meridian_proto::remoting::trace::RMQ_TRACE_TOPIC;
use meridian_proto::remoting::{Decoded, RemotingCodec, RemotingCommand};
use meridian_proto::tls::{Accepted, TlsServer};
use meridian_proto::topics::{self, TopicKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::service::NameserverService;
use crate::state::ApprovalStatus;

/// The `[remoting]` table of the nameserver config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemotingConfig {
    /// Serve the RocketMQ remoting protocol.
    pub enabled: bool,
    /// Address to listen on (default 127.0.0.1:9876).
    pub listen: SocketAddr,
    /// Cluster name RocketMQ clients and consoles see.
    pub cluster: String,
}

impl Default for RemotingConfig {
    fn default() -> RemotingConfig {
        RemotingConfig {
            enabled: false,
            listen: "127.0.0.1:9876".parse().expect("valid address"),
            cluster: "meridian".into(),
        }
    }
}

/// RocketMQ permission bits (`PermName`).
const RMQ_PERM_READ: u32 = 4;
const RMQ_PERM_WRITE: u32 = 2;

/// Brokers' remoting addresses by (group, member), from their heartbeats. In memory, like
/// liveness: a restarted nameserver learns them again within a heartbeat interval.
#[derive(Debug, Default)]
pub struct BrokerRemotingAddrs {
    addrs: Mutex<HashMap<(String, String), String>>,
}

impl BrokerRemotingAddrs {
    /// Records what a heartbeat says.
    pub fn record(&self, heartbeat: &BrokerHeartbeat) {
        let mut addrs = self.addrs.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (heartbeat.group.clone(), heartbeat.name.clone());
        if heartbeat.remoting_addr.is_empty() {
            addrs.remove(&key);
        } else if addrs.get(&key) != Some(&heartbeat.remoting_addr) {
            addrs.insert(key, heartbeat.remoting_addr.clone());
        }
    }

    fn get(&self, group: &str, member: &str) -> Option<String> {
        self.addrs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(group.to_owned(), member.to_owned()))
            .cloned()
    }
}

/// Serves RocketMQ clients until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    service: Arc<NameserverService>,
    addrs: Arc<BrokerRemotingAddrs>,
    config: RemotingConfig,
    tls: Option<(Arc<TlsServer>, Duration)>,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    let config = Arc::new(config);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "nameserver remoting listener serving RocketMQ clients");
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(accept_connection(service.clone(), addrs.clone(), config.clone(), tls.clone(), stream, peer, stop.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "remoting accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    connections.close();
    connections.wait().await;
}

/// Sniffs and handshakes TLS per `[tls]`, then serves the connection.
async fn accept_connection(
    service: Arc<NameserverService>,
    addrs: Arc<BrokerRemotingAddrs>,
    config: Arc<RemotingConfig>,
    tls: Option<(Arc<TlsServer>, Duration)>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let Some((tls, timeout)) = tls else {
        let (read_half, write_half) = stream.into_split();
        return serve_connection(service, addrs, config, read_half, write_half, peer, stop).await;
    };
    let accepted = tokio::select! {
        _ = stop.cancelled() => return,
        accepted = tls.accept(stream, timeout) => accepted,
    };
    match accepted {
        Ok(Accepted::Plain(stream)) => {
            let (read_half, write_half) = stream.into_split();
            serve_connection(service, addrs, config, read_half, write_half, peer, stop).await
        }
        Ok(Accepted::Tls(stream)) => {
            let (read_half, write_half) = tokio::io::split(*stream);
            serve_connection(service, addrs, config, read_half, write_half, peer, stop).await
        }
        Ok(Accepted::PlaintextRefused(_)) => {
            tracing::warn!(%peer, "plaintext remoting connection refused: [tls] mode is required; enable TLS in the RocketMQ client (tls.enable=true)");
        }
        Err(error) => tracing::warn!(%peer, %error, "remoting tls handshake failed; closing connection"),
    }
}

async fn serve_connection<R, W>(
    service: Arc<NameserverService>,
    addrs: Arc<BrokerRemotingAddrs>,
    config: Arc<RemotingConfig>,
    read_half: R,
    write_half: W,
    peer: SocketAddr,
    stop: CancellationToken,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let codec = RemotingCodec::default();
    let mut frames = FramedRead::new(read_half, codec.clone());
    let mut sink = FramedWrite::new(write_half, codec);
    let (tx, mut rx) = mpsc::channel::<RemotingCommand>(64);
    let writer = TaskTracker::new();
    writer.spawn(async move {
        while let Some(command) = rx.recv().await {
            if sink.send(command).await.is_err() {
                return;
            }
        }
    });
    writer.close();
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            next = frames.next() => next,
        };
        let answer = match next {
            None => break,
            Some(Ok(Decoded::Command(command))) if command.is_response() => continue,
            Some(Ok(Decoded::Command(command))) => {
                let oneway = command.is_oneway();
                let answer = answer(&service, &addrs, &config, &command, peer);
                if oneway {
                    continue;
                }
                answer
            }
            Some(Ok(Decoded::BadHeader {
                opaque,
                serialize_type,
                error,
            })) => {
                service.metrics().malformed_frames.inc();
                RemotingCommand {
                    opaque,
                    serialize_type,
                    ..RemotingCommand::default()
                }
                .respond(response::SYSTEM_ERROR, Some(error.to_string()))
            }
            Some(Err(error)) => {
                service.metrics().malformed_frames.inc();
                tracing::warn!(%peer, %error, "malformed remoting frame; closing connection");
                break;
            }
        };
        if tx.send(answer).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer.wait().await;
}

/// Answers one request.
pub fn answer(
    service: &NameserverService,
    addrs: &BrokerRemotingAddrs,
    config: &RemotingConfig,
    command: &RemotingCommand,
    peer: SocketAddr,
) -> RemotingCommand {
    match command.code {
        request::GET_ROUTEINFO_BY_TOPIC => {
            let Some(topic) = command.fields().opt_str(&["topic"]) else {
                return command.respond(
                    response::INVALID_PARAMETER,
                    Some("GET_ROUTEINFO_BY_TOPIC (105) needs header field `topic`".into()),
                );
            };
            service.metrics().route_lookups.inc();
            let standard = command.version >= V4_9_4
                || command.fields().bool_or(&["acceptStandardJsonOnly"], false).unwrap_or(false);
            // A nameserver cut off from the majority answers no route from its stale state.
            if let Some(why) = service.cut_off() {
                return command.respond(response::SYSTEM_ERROR, Some(why));
            }
            match route(service, addrs, config, topic, peer) {
                Ok(route) => command.success().with_body(encode_route(&route, standard)),
                Err(remark) => {
                    tracing::debug!(%peer, topic, %remark, "RocketMQ route refused");
                    command.respond(response::TOPIC_NOT_EXIST, Some(remark))
                }
            }
        }
        request::GET_BROKER_CLUSTER_INFO => command.success().with_body(cluster_info(service, addrs, config).to_string()),
        request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => {
            let topics: Vec<String> = service.raft().read_state(|state| {
                state
                    .topics()
                    .values()
                    .filter(|topic| topic.approval.status == ApprovalStatus::Approved)
                    .map(|topic| topic.name.clone())
                    .collect()
            });
            command.success().with_body(json!({ "topicList": topics }).to_string())
        }
        request::GET_KVLIST_BY_NAMESPACE => command.respond(
            response::QUERY_NOT_FOUND,
            Some("Meridian keeps no RocketMQ KV config (order topic config comes from the route)".into()),
        ),
        code => command.respond(
            response::REQUEST_CODE_NOT_SUPPORTED,
            Some(format!(
                "request type {code} ({}) not supported by Meridian's RocketMQ nameserver listener; docs/compat.md lists what is",
                request_name(code)
            )),
        ),
    }
}

/// One broker group in a RocketMQ route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteBroker {
    /// Broker group name.
    pub name: String,
    /// Queues of the topic on it.
    pub queues: u32,
    /// RocketMQ perm bits.
    pub perm: u32,
    /// Broker id (0 master, 1.. others) → remoting address.
    pub addrs: BTreeMap<u64, String>,
}

/// A topic's route for RocketMQ clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Cluster name.
    pub cluster: String,
    /// Brokers, ordered by name.
    pub brokers: Vec<RouteBroker>,
}

fn route(
    service: &NameserverService,
    addrs: &BrokerRemotingAddrs,
    config: &RemotingConfig,
    topic: &str,
    peer: SocketAddr,
) -> Result<Route, String> {
    // Where a topic every broker group takes goes: a group's retry and dead-letter topics, and the
    // trace topic RocketMQ SDKs send their trace records to (the brokers ingest those as trace
    // events, so it needs no approval, like Meridian's own trace topic).
    let everywhere = match topics::kind(topic) {
        TopicKind::User => topic == RMQ_TRACE_TOPIC,
        TopicKind::Retry(_) | TopicKind::DeadLetter(_) => true,
        _ => false,
    };
    let placements: Vec<Placement> = match topics::kind(topic) {
        kind if everywhere => {
            let group = match kind {
                TopicKind::Retry(group) | TopicKind::DeadLetter(group) => group,
                _ => "",
            };
            let approved = group.is_empty()
                || service.raft().read_state(|state| {
                    state
                        .consumer_groups()
                        .get(group)
                        .is_some_and(|found| found.approval.status == ApprovalStatus::Approved)
                });
            if !approved {
                return Err(format!(
                    "topic {topic:?} belongs to consumer group {group:?}, which is not approved: request it with `meridian group request {group} --topics TOPIC`, then have an admin approve it"
                ));
            }
            service
                .brokers()
                .into_iter()
                .map(|group| {
                    let idc = group
                        .members
                        .first()
                        .map(|member| member.idc.clone())
                        .unwrap_or_default();
                    let members = group
                        .members
                        .iter()
                        .map(|member| {
                            (
                                member.name.clone(),
                                group.master.as_deref() == Some(&member.name),
                                member.alive,
                            )
                        })
                        .collect();
                    (
                        group.name,
                        idc,
                        topics::GROUP_TOPIC_QUEUES,
                        perm::READ | perm::WRITE,
                        members,
                    )
                })
                .collect()
        }
        _ => service
            .route(topic)
            .map_err(|error| error.message)?
            .brokers
            .into_iter()
            .map(|broker| {
                let members = broker
                    .replicas
                    .iter()
                    .map(|replica| {
                        (
                            replica.name.clone(),
                            replica.role == meridian_proto::messages::role::MASTER && replica.addr == broker.addr,
                            replica.alive,
                        )
                    })
                    .collect();
                (broker.broker_name, broker.idc, broker.queues, broker.perm, members)
            })
            .collect(),
    };
    let client_idc = service
        .idc_lookup(&peer.ip().to_string())
        .map(|found| found.idc)
        .unwrap_or_default();
    let writable = near_by_writable(&placements, &client_idc);
    let brokers = placements
        .into_iter()
        .zip(writable)
        .map(|((name, _, queues, meridian_perm, members), writable)| {
            let mut addrs_by_id = BTreeMap::new();
            let mut next_id = 1;
            for (member, master, alive) in &members {
                let Some(addr) = addrs.get(&name, member) else { continue };
                if *master && *alive {
                    addrs_by_id.insert(0, addr);
                } else if *alive {
                    addrs_by_id.insert(next_id, addr);
                    next_id += 1;
                }
            }
            let mut rmq_perm = 0;
            if meridian_perm & perm::READ != 0 {
                rmq_perm |= RMQ_PERM_READ;
            }
            if writable {
                rmq_perm |= RMQ_PERM_WRITE;
            }
            RouteBroker {
                name,
                queues,
                perm: rmq_perm,
                addrs: addrs_by_id,
            }
        })
        .filter(|broker| !broker.addrs.is_empty())
        .collect::<Vec<_>>();
    if brokers.is_empty() {
        return Err(format!(
            "topic {topic:?} has no broker with a live RocketMQ listener: start its brokers with [remoting] enabled = true"
        ));
    }
    Ok(Route {
        cluster: config.cluster.clone(),
        brokers,
    })
}

/// A broker group's place in a route: (group, idc, queues, Meridian perm, [(member, is master,
/// alive)]).
type Placement = (String, String, u32, u32, Vec<(String, bool, bool)>);

/// Near-by routing: which placements RocketMQ clients in `client_idc` may write to. When the
/// client's data center has a writable group with a live master, only its own data center's
/// groups; otherwise (unknown data center, or no live local master) every writable group.
fn near_by_writable(placements: &[Placement], client_idc: &str) -> Vec<bool> {
    let local_live = |(_, idc, _, meridian_perm, members): &Placement| {
        !client_idc.is_empty()
            && idc == client_idc
            && meridian_perm & perm::WRITE != 0
            && members.iter().any(|(_, master, alive)| *master && *alive)
    };
    let local_only = placements.iter().any(local_live);
    placements
        .iter()
        .map(|(_, idc, _, meridian_perm, _)| meridian_perm & perm::WRITE != 0 && (!local_only || idc == client_idc))
        .collect()
}

/// `TopicRouteData` JSON: standard (quoted keys) or fastjson's (unquoted numeric keys in
/// `brokerAddrs`) for clients older than 4.9.4.
pub fn encode_route(route: &Route, standard: bool) -> Vec<u8> {
    let queue_datas: Vec<Value> = route
        .brokers
        .iter()
        .map(|broker| {
            json!({
                "brokerName": broker.name,
                "perm": broker.perm,
                "readQueueNums": broker.queues,
                "topicSysFlag": 0,
                "topicSynFlag": 0,
                "writeQueueNums": broker.queues,
            })
        })
        .collect();
    let broker_datas: Vec<Value> = route
        .brokers
        .iter()
        .enumerate()
        .map(|(index, broker)| {
            let addrs: Value = if standard {
                json!(
                    broker
                        .addrs
                        .iter()
                        .map(|(id, addr)| (id.to_string(), addr.clone()))
                        .collect::<BTreeMap<_, _>>()
                )
            } else {
                // Replaced below by the unquoted form; topic and broker names cannot hold '@'.
                Value::String(format!("@@ADDRS{index}@@"))
            };
            json!({ "brokerAddrs": addrs, "brokerName": broker.name, "cluster": route.cluster })
        })
        .collect();
    let text = json!({
        "brokerDatas": broker_datas,
        "filterServerTable": {},
        "queueDatas": queue_datas,
    })
    .to_string();
    if standard {
        return text.into_bytes();
    }
    let mut text = text;
    for (index, broker) in route.brokers.iter().enumerate() {
        let entries: Vec<String> = broker
            .addrs
            .iter()
            .map(|(id, addr)| format!("{id}:{}", Value::String(addr.clone())))
            .collect();
        text = text.replace(&format!("\"@@ADDRS{index}@@\""), &format!("{{{}}}", entries.join(",")));
    }
    text.into_bytes()
}

fn cluster_info(service: &NameserverService, addrs: &BrokerRemotingAddrs, config: &RemotingConfig) -> Value {
    let mut broker_table = serde_json::Map::new();
    let mut names = Vec::new();
    for group in service.brokers() {
        let mut broker_addrs = BTreeMap::new();
        let mut next_id = 1;
        for member in &group.members {
            let Some(addr) = addrs.get(&group.name, &member.name) else {
                continue;
            };
            if group.master.as_deref() == Some(member.name.as_str()) {
                broker_addrs.insert("0".to_owned(), addr);
            } else {
                broker_addrs.insert(next_id.to_string(), addr);
                next_id += 1;
            }
        }
        if broker_addrs.is_empty() {
            continue;
        }
        names.push(group.name.clone());
        broker_table.insert(
            group.name.clone(),
            json!({ "brokerAddrs": broker_addrs, "brokerName": group.name, "cluster": config.cluster }),
        );
    }
    json!({ "brokerAddrTable": broker_table, "clusterAddrTable": { config.cluster.clone(): names } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Route {
        Route {
            cluster: "meridian".into(),
            brokers: vec![RouteBroker {
                name: "broker-a".into(),
                queues: 4,
                perm: RMQ_PERM_READ | RMQ_PERM_WRITE,
                addrs: BTreeMap::from([(0, "127.0.0.1:10911".into()), (1, "127.0.0.1:10921".into())]),
            }],
        }
    }

    #[test]
    fn new_clients_get_standard_json_and_old_ones_fastjson_keys() {
        let standard: Value = serde_json::from_slice(&encode_route(&sample(), true)).unwrap();
        assert_eq!(standard["brokerDatas"][0]["brokerAddrs"]["0"], "127.0.0.1:10911");
        assert_eq!(standard["queueDatas"][0]["perm"], 6);
        assert_eq!(standard["queueDatas"][0]["writeQueueNums"], 4);
        let old = String::from_utf8(encode_route(&sample(), false)).unwrap();
        assert!(
            old.contains(r#""brokerAddrs":{0:"127.0.0.1:10911",1:"127.0.0.1:10921"}"#),
            "{old}"
        );
        assert!(
            serde_json::from_str::<Value>(&old).is_err(),
            "fastjson's form is not standard JSON"
        );
    }

    fn placement(name: &str, idc: &str, master_alive: bool) -> Placement {
        (
            name.into(),
            idc.into(),
            4,
            perm::READ | perm::WRITE,
            vec![(format!("{name}-0"), true, master_alive)],
        )
    }

    #[test]
    fn clients_write_in_their_own_data_center_while_it_has_a_live_master() {
        let both = [placement("a", "dc1", true), placement("b", "dc2", true)];
        assert_eq!(near_by_writable(&both, "dc1"), [true, false]);
        assert_eq!(near_by_writable(&both, "dc2"), [false, true]);
        assert_eq!(
            near_by_writable(&both, ""),
            [true, true],
            "unknown data center: anywhere"
        );
        assert_eq!(
            near_by_writable(&both, "dc3"),
            [true, true],
            "no local broker: anywhere"
        );
        let local_down = [placement("a", "dc1", false), placement("b", "dc2", true)];
        assert_eq!(
            near_by_writable(&local_down, "dc1"),
            [true, true],
            "local master gone: fall back"
        );
        let mut read_only = placement("a", "dc1", true);
        read_only.3 = perm::READ;
        assert_eq!(
            near_by_writable(&[read_only, placement("b", "dc2", true)], "dc1"),
            [false, true]
        );
    }

    #[test]
    fn heartbeats_without_a_listener_forget_the_address() {
        let addrs = BrokerRemotingAddrs::default();
        let mut heartbeat = BrokerHeartbeat {
            group: "broker-a".into(),
            name: "a-0".into(),
            remoting_addr: "127.0.0.1:10911".into(),
            ..BrokerHeartbeat::default()
        };
        addrs.record(&heartbeat);
        assert_eq!(addrs.get("broker-a", "a-0").as_deref(), Some("127.0.0.1:10911"));
        heartbeat.remoting_addr.clear();
        addrs.record(&heartbeat);
        assert_eq!(addrs.get("broker-a", "a-0"), None);
    }
}

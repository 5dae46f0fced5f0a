//! The broker's console endpoints (issue 26): a consumer group's queue allocation and its dead
//! letters, for the web console's group page, merged with [`crate::http::router`] by the
//! `meridian` binary. They run the allocation every consumer runs
//! ([`meridian_proto::allocate::allocate_by_idc`]) and send their pull and resend requests to this
//! broker's own listener, so they are checked exactly as a client's are. Every handler makes a fixed number of calls
//! (one member list, one route lookup, one bounded pull), whatever the size of the cluster or of
//! the group's backlog.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meridian_proto::ErrorCode;
use meridian_proto::messages::{TopicRoute, TopicRouteRequest};
use meridian_proto::transport::{ConnectionPool, TransportConfig, TransportError};
use serde_json::json;

use crate::Broker;
use crate::http::{GroupTopicQuery, offsets_error};

/// Where the console endpoints reach the broker and the cluster's routes.
#[derive(Clone)]
struct ConsoleApiState {
    broker_name: String,
    /// The broker's own framed-protocol address: members, dead letters and resends go through its
    /// request handlers, checked exactly as a client's requests are.
    broker_addr: SocketAddr,
    /// The nameservers the broker heartbeats (empty: a standalone broker, whose routes are its own).
    nameservers: Vec<String>,
}

/// Dead letters one `GET /api/broker/dead-letters` returns at most.
const MAX_DEAD_LETTERS_PAGE: u32 = 100;

/// The console's broker endpoints: `GET /api/broker/allocation`, `GET /api/broker/dead-letters`,
/// `POST /api/broker/dead-letters/resend` (docs/api.md).
pub fn console_router(broker: &Broker, broker_name: String, nameservers: Vec<String>) -> Router {
    Router::new()
        .route("/api/broker/allocation", get(allocation))
        .route("/api/broker/dead-letters", get(dead_letters))
        .route(
            "/api/broker/dead-letters/resend",
            axum::routing::post(resend_dead_letters),
        )
        .with_state(ConsoleApiState {
            broker_name,
            broker_addr: broker.local_addr(),
            nameservers,
        })
}

fn client_error_response(context: String, error: &TransportError) -> Response {
    let error_code = match error {
        TransportError::Remote { code, .. } => Some(*code),
        _ => None,
    };
    let code = error_code.map_or("unavailable", |code| code.as_str());
    let status = error_code
        .and_then(|code| StatusCode::from_u16(code.http_status()).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    offsets_error(status, code, format!("{context}: {error}"))
}

/// The route of `topic` as a consumer gets it: from this broker when it is standalone, else from
/// the first of its nameservers that answers (one that is down, unreachable or busy is skipped;
/// a refusal another nameserver would repeat, such as an unknown topic, is returned at once).
async fn route_of(
    pool: &ConnectionPool,
    broker_addr: SocketAddr,
    nameservers: &[String],
    topic: &str,
) -> Result<TopicRoute, TransportError> {
    let request = TopicRouteRequest {
        topic: topic.to_owned(),
    };
    let timeout = pool.config().request_timeout;
    if nameservers.is_empty() {
        let broker_addr = broker_addr.to_string();
        let mut route: TopicRoute = pool
            .call(&broker_addr, meridian_proto::RequestCode::TopicRoute, &request, timeout)
            .await?;
        // A lone broker advertises its configured address; the one just reached certainly works.
        if let [broker] = route.brokers.as_mut_slice() {
            broker.addr = broker_addr;
        }
        return Ok(route);
    }
    let mut last_error = None;
    for addr in nameservers {
        match pool
            .call::<_, TopicRoute>(addr, meridian_proto::RequestCode::TopicRoute, &request, timeout)
            .await
        {
            Ok(route) => return Ok(route),
            Err(error) if error.is_retriable() => last_error = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or(TransportError::Shutdown))
}

/// `GET /api/broker/allocation?group=G&topic=T`: which live member of the group holds which queue
/// of the topic, per data center. The members come from this broker (as a consumer lists them),
/// the queues and data centers from the topic's route (the nameservers'), and each member's share
/// from [`meridian_proto::allocate::allocate_by_idc`], the function every Meridian consumer runs on the same
/// inputs: so this is the allocation the members themselves compute, not a guess.
async fn allocation(
    State(state): State<ConsoleApiState>,
    query: Result<axum::extract::Query<GroupTopicQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(query)) = query else {
        return offsets_error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "give the consumer group and one of its topics: /api/broker/allocation?group=G&topic=T".to_owned(),
        );
    };
    if let Err(error) = meridian_proto::validate::validate_group(&query.group) {
        return offsets_error(StatusCode::BAD_REQUEST, "invalid_argument", error.to_string());
    }
    if let Err(error) = meridian_proto::validate::validate_topic(&query.topic) {
        return offsets_error(StatusCode::BAD_REQUEST, "invalid_argument", error.to_string());
    }
    let config = TransportConfig::default();
    let timeout = config.request_timeout;
    let pool = ConnectionPool::new(config);
    let members_request = meridian_proto::messages::GroupMember {
        group: query.group.clone(),
        client_id: String::new(),
    };
    let broker_addr = state.broker_addr.to_string();
    let (route, listed) = tokio::join!(
        route_of(&pool, state.broker_addr, &state.nameservers, &query.topic),
        pool.call::<_, meridian_proto::messages::ConsumerListResponse>(
            &broker_addr,
            meridian_proto::RequestCode::ConsumerList,
            &members_request,
            timeout,
        )
    );
    pool.shutdown().await;
    let route = match route {
        Ok(route) => route,
        Err(error) => return client_error_response(format!("the route of topic {}", query.topic), &error),
    };
    let listed = match listed {
        Ok(listed) => listed,
        Err(error) => {
            return client_error_response(
                format!("the members of group {} on broker {}", query.group, state.broker_name),
                &error,
            );
        }
    };
    Json(allocation_report(&state.broker_name, &query.group, &route, &listed)).into_response()
}

/// The allocation of `route`'s readable queues among `listed`'s members (pure, unit-tested).
fn allocation_report(
    broker_name: &str,
    group: &str,
    route: &TopicRoute,
    listed: &meridian_proto::messages::ConsumerListResponse,
) -> serde_json::Value {
    use meridian_proto::allocate::{Deployment, QueueId, allocate_by_idc};
    use meridian_proto::messages::perm;
    // The queues a consumer reads, as the client's `route_queues(route, READ)` picks them: readable
    // broker groups with a master, or a live slave to read from while a failover is under way.
    let queues: Vec<(QueueId, String)> = route
        .brokers
        .iter()
        .filter(|broker| broker.perm & perm::READ != 0)
        .filter(|broker| {
            !broker.addr.is_empty()
                || broker
                    .replicas
                    .iter()
                    .any(|replica| replica.alive && !replica.addr.is_empty())
        })
        .flat_map(|broker| {
            (0..broker.queues).map(|queue_id| (QueueId::new(&broker.broker_name, queue_id), broker.idc.clone()))
        })
        .collect();
    let members: Vec<(String, String)> = if listed.members.is_empty() {
        listed.client_ids.iter().map(|id| (id.clone(), String::new())).collect()
    } else {
        listed
            .members
            .iter()
            .map(|member| (member.client_id.clone(), member.idc.clone()))
            .collect()
    };
    let mut evacuated = route.evacuated_idcs.clone();
    evacuated.extend(listed.evacuated_idcs.iter().cloned());
    evacuated.sort();
    evacuated.dedup();
    // Members of one group run one deployment model (the broker warns when they do not); the
    // first member's is the one shown, and each member's own is listed beside it.
    let deployment = listed
        .members
        .first()
        .and_then(|member| member.deployment.parse::<Deployment>().ok())
        .unwrap_or(Deployment::SingleSide);
    let mut holder: std::collections::BTreeMap<QueueId, String> = std::collections::BTreeMap::new();
    let mut unserved = Vec::new();
    let mut member_rows = Vec::with_capacity(members.len());
    for (index, (client_id, idc)) in members.iter().enumerate() {
        let share = allocate_by_idc(&queues, &members, client_id, deployment, &evacuated);
        unserved.clone_from(&share.unserved_idcs);
        for queue in &share.queues {
            holder.insert(queue.clone(), client_id.clone());
        }
        let reported = listed.members.get(index);
        member_rows.push(json!({
            "client_id": client_id,
            "idc": idc,
            "allocation": reported.map(|member| member.allocation.as_str()),
            "deployment": reported.map(|member| member.deployment.as_str()),
            "sdk_version": reported.map(|member| member.sdk_version.as_str()),
            "queues": share.queues.iter().map(|queue| json!({"broker": queue.broker_name, "queue_id": queue.queue_id})).collect::<Vec<_>>(),
        }));
    }
    let queue_rows: Vec<_> = queues
        .iter()
        .map(|(queue, idc)| {
            json!({"broker": queue.broker_name, "queue_id": queue.queue_id, "idc": idc, "client_id": holder.get(queue)})
        })
        .collect();
    // The group's retry topic as its consumers share it (`client/src/push.rs`): queue 0 on each
    // broker of the topic, allocated by the same function among the same members.
    let mut retry_queues: Vec<(QueueId, String)> = Vec::new();
    for (queue, idc) in &queues {
        if !retry_queues
            .iter()
            .any(|(known, _)| known.broker_name == queue.broker_name)
        {
            retry_queues.push((QueueId::new(queue.broker_name.clone(), 0), idc.clone()));
        }
    }
    let mut retry_holder: std::collections::BTreeMap<QueueId, String> = std::collections::BTreeMap::new();
    let retry_members: Vec<_> = members
        .iter()
        .map(|(client_id, idc)| {
            let share = allocate_by_idc(&retry_queues, &members, client_id, deployment, &evacuated);
            for queue in &share.queues {
                retry_holder.insert(queue.clone(), client_id.clone());
            }
            json!({
                "client_id": client_id,
                "idc": idc,
                "queues": share.queues.iter().map(|queue| json!({"broker": queue.broker_name, "queue_id": queue.queue_id})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let retry_rows: Vec<_> = retry_queues
        .iter()
        .map(|(queue, idc)| {
            json!({"broker": queue.broker_name, "queue_id": queue.queue_id, "idc": idc, "client_id": retry_holder.get(queue)})
        })
        .collect();
    json!({
        "retry": {
            "topic": meridian_proto::topics::retry_topic(group),
            "members": retry_members,
            "queues": retry_rows,
        },
        "broker": broker_name,
        "group": group,
        "topic": route.topic,
        "deployment": deployment.as_str(),
        "evacuated_idcs": evacuated,
        "unserved_idcs": unserved,
        "members": member_rows,
        "queues": queue_rows,
    })
}

#[derive(serde::Deserialize)]
struct DeadLettersQuery {
    group: String,
    /// The first dead letter to return (0 is the oldest this broker holds).
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /api/broker/dead-letters?group=G&offset=N&limit=L`: one page (at most 100) of the group's
/// dead letters on this broker, oldest first, each with its first topic, failures, properties and
/// body, and `next_offset`/`total` to page on. One bounded pull of the group's dead-letter queue
/// (`Admin::dead_letters` reads the whole queue, which a page view must not).
async fn dead_letters(
    State(state): State<ConsoleApiState>,
    query: Result<axum::extract::Query<DeadLettersQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(query)) = query else {
        return offsets_error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "give the consumer group: /api/broker/dead-letters?group=G&offset=0&limit=50".to_owned(),
        );
    };
    if let Err(error) = meridian_proto::validate::validate_group(&query.group) {
        return offsets_error(StatusCode::BAD_REQUEST, "invalid_argument", error.to_string());
    }
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_DEAD_LETTERS_PAGE);
    let config = TransportConfig::default();
    let timeout = config.request_timeout;
    let pool = ConnectionPool::new(config);
    let request = meridian_proto::messages::PullRequest {
        group: query.group.clone(),
        topic: meridian_proto::topics::dlq_topic(&query.group),
        queue_id: 0,
        offset: query.offset,
        max_count: limit,
        max_bytes: 4 << 20,
        ..meridian_proto::messages::PullRequest::default()
    };
    let answer: Result<meridian_proto::messages::PullResponse, _> = pool
        .call(
            &state.broker_addr.to_string(),
            meridian_proto::RequestCode::Pull,
            &request,
            timeout,
        )
        .await;
    pool.shutdown().await;
    let empty = |total: u64| {
        Json(json!({"broker": state.broker_name, "group": query.group, "offset": query.offset, "next_offset": null, "total": total, "letters": []}))
            .into_response()
    };
    let response = match answer {
        Ok(response) => response,
        // No consumer of the group ever failed a message on this broker.
        Err(TransportError::Remote {
            code: ErrorCode::TopicNotFound,
            ..
        }) => return empty(0),
        Err(error) => {
            return client_error_response(
                format!(
                    "the dead letters of group {} on broker {}",
                    query.group, state.broker_name
                ),
                &error,
            );
        }
    };
    let messages = match meridian_proto::record::decode_all(&response.records) {
        Ok(messages) => messages,
        Err(error) => {
            return offsets_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!(
                    "the dead letters of group {} on broker {} do not decode: {error}",
                    query.group, state.broker_name
                ),
            );
        }
    };
    let letters: Vec<_> = messages.iter().map(dead_letter_json).collect();
    let next_offset = (response.next_offset < response.max_offset && response.next_offset > query.offset)
        .then_some(response.next_offset);
    Json(json!({
        "broker": state.broker_name,
        "group": query.group,
        "offset": query.offset,
        "next_offset": next_offset,
        "total": response.max_offset.saturating_sub(response.min_offset),
        "letters": letters,
    }))
    .into_response()
}

/// A dead letter as `meridian dlq list --json` prints it.
fn dead_letter_json(message: &meridian_proto::record::StoredMessage) -> serde_json::Value {
    let properties: serde_json::Map<String, serde_json::Value> =
        meridian_proto::properties::PropertiesIter::new(&message.properties)
            .map(|(name, value)| (name.to_owned(), json!(value)))
            .collect();
    json!({
        "msg_id": message.msg_id(),
        "topic": message.property(meridian_proto::properties::RETRY_TOPIC).unwrap_or(""),
        "reconsume_count": message.reconsume_count,
        "born_timestamp": message.born_timestamp,
        "dead_lettered_at": message.store_timestamp,
        "keys": message.keys().collect::<Vec<_>>(),
        "tag": message.tag(),
        "properties": properties,
        "body": String::from_utf8_lossy(&message.body),
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResendBody {
    group: String,
    /// The dead letters to resend; empty with `"all": true` resends every one.
    #[serde(default)]
    msg_ids: Vec<String>,
    #[serde(default)]
    all: bool,
}

/// `POST /api/broker/dead-letters/resend` (`{"group", "msg_ids": [...]}` or `{"group", "all":
/// true}`): puts the dead letters back on the group's retry topic with their count at 0, through
/// the broker's own `DeadLetterResend` request (what `meridian dlq resend` sends). JSON only, so a
/// browser cannot send it cross-site.
async fn resend_dead_letters(
    State(state): State<ConsoleApiState>,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return offsets_error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "the request body must be JSON sent with Content-Type: application/json".to_owned(),
        );
    }
    let request: ResendBody = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return offsets_error(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                format!("the request body is not valid: {error} (fields: group, msg_ids, all)"),
            );
        }
    };
    if request.msg_ids.is_empty() != request.all {
        return offsets_error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "name the dead letters to resend in \"msg_ids\", or send \"all\": true (not both)".to_owned(),
        );
    }
    for msg_id in &request.msg_ids {
        if meridian_proto::MessageId::parse(msg_id).is_err() {
            return offsets_error(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                format!("{msg_id:?} is not a message id (32 hex digits)"),
            );
        }
    }
    // The same request `Admin::resend_dead_letters` sends to each broker of a topic's route, sent
    // to this broker alone: the letters are in its dead-letter queue, and the console asks every
    // broker (a route would need one of the group's topics, which this broker may not store).
    let config = TransportConfig::default();
    let timeout = config.request_timeout;
    let pool = ConnectionPool::new(config);
    let resend = meridian_proto::messages::DeadLetterResendRequest {
        group: request.group.clone(),
        msg_ids: request.msg_ids.clone(),
    };
    let result: Result<meridian_proto::messages::DeadLetterResendResponse, TransportError> = pool
        .call(
            &state.broker_addr.to_string(),
            meridian_proto::RequestCode::DeadLetterResend,
            &resend,
            timeout,
        )
        .await;
    pool.shutdown().await;
    let result = result.map(|response| (response.resent, response.missing));
    match result {
        Ok((resent, missing)) => {
            tracing::info!(group = request.group, resent, "dead letters resent over http");
            Json(json!({"broker": state.broker_name, "group": request.group, "resent": resent, "missing": missing}))
                .into_response()
        }
        Err(TransportError::Remote {
            code: ErrorCode::TopicNotFound,
            ..
        }) => {
            Json(json!({"broker": state.broker_name, "group": request.group, "resent": 0, "missing": request.msg_ids}))
                .into_response()
        }
        Err(error) => client_error_response(
            format!(
                "resending dead letters of group {} on broker {}",
                request.group, state.broker_name
            ),
            &error,
        ),
    }
}

#[cfg(test)]
mod console_api_tests {
    use meridian_proto::messages::{BrokerRoute, ConsumerListResponse, ConsumerMember, TopicRoute, perm};

    use super::allocation_report;

    fn broker(name: &str, idc: &str, queues: u32) -> BrokerRoute {
        BrokerRoute {
            broker_name: name.into(),
            addr: format!("{name}:1"),
            idc: idc.into(),
            queues,
            perm: perm::READ | perm::WRITE,
            replicas: Vec::new(),
        }
    }

    fn member(client_id: &str, idc: &str) -> ConsumerMember {
        ConsumerMember {
            client_id: client_id.into(),
            idc: idc.into(),
            allocation: meridian_proto::allocate::ALLOCATION.into(),
            deployment: "single-side".into(),
            sdk_version: "0.1.0".into(),
        }
    }

    #[test]
    fn each_data_center_consumes_its_own_queues_and_none_is_left_out() {
        let route = TopicRoute {
            topic: "orders".into(),
            brokers: vec![broker("broker-a", "dc1", 2), broker("broker-b", "dc2", 2)],
            evacuated_idcs: Vec::new(),
            lost_idcs: Vec::new(),
        };
        let listed = ConsumerListResponse {
            client_ids: vec!["c1".into(), "c2".into()],
            members: vec![member("c1", "dc1"), member("c2", "dc2")],
            evacuated_idcs: Vec::new(),
        };
        let report = allocation_report("broker-a", "billing", &route, &listed);
        let queues_of = |client: &str| -> Vec<String> {
            report["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["client_id"] == client)
                .unwrap()["queues"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| format!("{}#{}", q["broker"].as_str().unwrap(), q["queue_id"]))
                .collect()
        };
        assert_eq!(queues_of("c1"), ["broker-a#0", "broker-a#1"]);
        assert_eq!(queues_of("c2"), ["broker-b#0", "broker-b#1"]);
        // The retry topic: queue 0 of each broker, each data center's member holding its own.
        assert_eq!(report["retry"]["topic"], "%RETRY%billing");
        let retry: Vec<(String, String)> = report["retry"]["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| {
                (
                    format!("{}#{}", q["broker"].as_str().unwrap(), q["queue_id"]),
                    q["client_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            retry,
            [
                ("broker-a#0".to_owned(), "c1".to_owned()),
                ("broker-b#0".to_owned(), "c2".to_owned())
            ]
        );
        assert!(
            report["queues"]
                .as_array()
                .unwrap()
                .iter()
                .all(|q| q["client_id"].is_string())
        );

        // dc2 evacuated: its member gets nothing and c1 takes every queue.
        let mut evacuated = listed.clone();
        evacuated.evacuated_idcs = vec!["dc2".into()];
        let report = allocation_report("broker-a", "billing", &route, &evacuated);
        let holders: Vec<&str> = report["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["client_id"].as_str().unwrap())
            .collect();
        assert_eq!(holders, ["c1"; 4]);
        assert_eq!(report["evacuated_idcs"], serde_json::json!(["dc2"]));
    }
}

//! The broker's HTTP API: `/metrics` (Prometheus) and the JSON admin API (`docs/api.md`):
//! health with the broker's place in its group, local topics, a group's offsets and their reset,
//! consumer lag and the client inventory, recent rates and disk use (`/api/broker/stats`), and one
//! stored message by its offset id (`/api/broker/message`). [`router`] builds it from a running [`Broker`]; the
//! `meridian` binary only binds a listener and serves it (beside other services' routers).
//! [`metrics_router`] is `/metrics` alone, for processes without a broker.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meridian_proto::RequestCode;
use meridian_proto::messages::{ResetOffsetRequest, ResetOffsetResponse, ResetTarget};
use meridian_proto::transport::{ConnectionPool, TransportConfig, TransportError};
use meridian_proto::validate::{validate_group, validate_topic};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::Broker;
use crate::clients::ClientsView;
use crate::lag::LagCollector;
use crate::replication::{Replication, Role};
use crate::store::MessageStore;

#[derive(Clone)]
struct HttpState {
    broker_name: String,
    /// The broker's own framed-protocol address: offset resets go through its request handler,
    /// so they are checked exactly as `meridian group reset-offset` is.
    broker_addr: SocketAddr,
    store: Arc<MessageStore>,
    replication: Arc<Replication>,
    lag: LagCollector,
    clients: ClientsView,
    stats: Arc<crate::stats::BrokerStats>,
    idc: String,
}

/// The routes of a broker process: its health (with its place in its group), its local topics,
/// consumer lag and `/metrics` (where consumer lag is computed at each scrape).
pub fn router(mut registry: Registry, broker_name: String, broker: &Broker) -> Router {
    let lag = broker.lag_collector();
    registry.register_collector(Box::new(lag.clone()));
    Router::new()
        .route("/api/health", get(health))
        .route("/api/broker/topics", get(topics))
        .route("/api/broker/offsets", get(offsets))
        .route("/api/broker/offsets/reset", axum::routing::post(reset_offsets))
        .route("/api/broker/lag", get(lag_report))
        .route("/api/broker/clients", get(clients_report))
        .route("/api/broker/stats", get(stats_report))
        .route("/api/broker/message", get(message))
        .route("/api/broker/digest", get(digest))
        .with_state(HttpState {
            broker_name,
            broker_addr: broker.local_addr(),
            store: broker.store(),
            replication: broker.replication(),
            lag,
            clients: broker.clients_view(),
            stats: broker.stats(),
            idc: broker.idc(),
        })
        .merge(metrics_router(Arc::new(registry)))
}

/// The clients this broker knows, with the SDK policy's verdict on each (`meridian client list`).
async fn clients_report(State(state): State<HttpState>) -> Json<crate::clients::ClientsReport> {
    Json(state.clients.report())
}

/// Lag of every consumer group on this broker, per topic and queue, with its status
/// (`docs/governance.md`).
async fn lag_report(State(state): State<HttpState>) -> Json<serde_json::Value> {
    let groups = tokio::task::spawn_blocking(move || state.lag.report())
        .await
        .unwrap_or_default();
    Json(json!({ "groups": groups }))
}

/// `/metrics` alone, for processes without a broker.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(registry)
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {error}"),
        )
            .into_response(),
    }
}

/// The broker's state; 503 once its store failed (a disk error: restart it).
async fn health(State(state): State<HttpState>) -> (StatusCode, Json<serde_json::Value>) {
    let replication = &state.replication;
    let role = replication.role();
    let master = match &role {
        Role::Slave {
            master, master_addr, ..
        } => json!({"name": master, "addr": master_addr}),
        _ => serde_json::Value::Null,
    };
    let config = replication.config();
    let failure = state.store.failure();
    let status = if failure.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({
            "status": if failure.is_some() { "unhealthy" } else { "ok" },
            "store_failure": failure,
            "version": env!("CARGO_PKG_VERSION"),
            "broker": {
                "name": state.broker_name,
                "idc": state.idc,
                "committed_offset": state.store.committed_offset(),
                "flushed_offset": state.store.flushed_offset(),
                "confirmed_offset": state.store.confirmed_offset(),
                "dispatched_offset": state.store.dispatched_offset(),
                "flush_mode": state.store.config().flush_mode,
            },
            "stats": state.stats.summary(),
            "replication": {
                "role": role.name(),
                "epoch": role.epoch(),
                "master": master,
                "writable": replication.check_writable().is_ok(),
                "degraded": replication.degraded(),
                "lease_remaining_ms": replication.lease_remaining().map(|lease| lease.as_millis() as u64),
                "ack_policy": config.ack_policy,
                "replicas": config.replicas,
                "in_sync": replication.in_sync(),
                "slaves": replication.slaves(),
                "epochs": state.store.epochs().iter().map(|entry| json!({"epoch": entry.epoch, "start_offset": entry.start_offset})).collect::<Vec<_>>(),
            }
        })),
    )
}

#[derive(serde::Deserialize)]
struct DigestQuery {
    /// First offset (a record boundary); default: the first this replica holds.
    from: Option<u64>,
    /// End offset (a record boundary, at most the committed offset).
    to: u64,
}

/// This replica's records in `[from, to)` summed up for comparing replicas record by record
/// (`meridian cluster verify`): how many, their bytes, and a CRC32C over every record's bytes in
/// order (replicas hold the master's records byte for byte). 409 while the replica holds less
/// than `to`.
async fn digest(
    State(state): State<HttpState>,
    query: Result<axum::extract::Query<DigestQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(query)) = query else {
        return offsets_error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "give the end offset: /api/broker/digest?to=OFFSET (and optionally &from=OFFSET)".to_owned(),
        );
    };
    let store = state.store.clone();
    let from = query.from.unwrap_or_else(|| store.min_offset());
    let committed = store.committed_offset();
    if query.to > committed {
        let message = format!(
            "this replica holds up to offset {committed}, short of {}: wait until it caught up, or pass a smaller `to`",
            query.to
        );
        return offsets_error(StatusCode::CONFLICT, "unavailable", message);
    }
    if from > query.to || from < store.min_offset() {
        let message = format!(
            "from = {from} must lie between this replica's first offset {} and to = {}",
            store.min_offset(),
            query.to
        );
        return offsets_error(StatusCode::BAD_REQUEST, "invalid_argument", message);
    }
    let to = query.to;
    let summed = tokio::task::spawn_blocking(move || {
        let (mut records, mut bytes, mut crc) = (0u64, 0u64, 0u32);
        let stopped = store.scan_records(from, to, |record, _| {
            records += 1;
            bytes += record.total_size() as u64;
            crc = crc32c::crc32c_append(crc, record.as_bytes());
        });
        json!({
            "from": from,
            "to": to,
            "stopped": stopped,
            "records": records,
            "bytes": bytes,
            "crc32c": format!("{crc:08x}"),
        })
    })
    .await;
    match summed {
        Ok(summed) => Json(summed).into_response(),
        Err(error) => offsets_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("digest failed: {error}"),
        ),
    }
}

async fn topics(State(state): State<HttpState>) -> Json<serde_json::Value> {
    let topics: Vec<_> = state
        .store
        .topics()
        .into_iter()
        .map(|(name, queues)| {
            let queues: Vec<_> = (0..queues)
                .filter_map(|queue_id| state.store.queue_bounds(&name, queue_id).ok().map(|bounds| (queue_id, bounds)))
                .map(|(queue_id, bounds)| json!({"queue_id": queue_id, "min_offset": bounds.min_offset, "max_offset": bounds.max_offset}))
                .collect();
            json!({"name": name, "queues": queues})
        })
        .collect();
    Json(json!({ "topics": topics }))
}

#[derive(serde::Deserialize)]
struct StatsQuery {
    #[serde(default)]
    topic: Option<String>,
}

/// `GET /api/broker/stats?topic=T`: put and get rates of the last sample and of the last minute,
/// the data directory's disk use, the rates of every sample of the last five minutes, and with
/// `topic` that topic's put rate per sample (`stats.rs`). Reads the sampler's ring only.
async fn stats_report(
    State(state): State<HttpState>,
    query: Result<axum::extract::Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let topic = match query {
        Ok(axum::extract::Query(query)) => query.topic.filter(|topic| !topic.is_empty()),
        Err(_) => {
            return offsets_error(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                "the only parameter is the topic: /api/broker/stats?topic=T".to_owned(),
            );
        }
    };
    if let Some(topic) = &topic
        && let Err(error) = meridian_proto::topics::validate_consumable(topic)
    {
        return offsets_error(StatusCode::BAD_REQUEST, "invalid_argument", error.to_string());
    }
    let mut report = state.stats.report(topic.as_deref());
    report["broker"] = json!(state.broker_name);
    Json(report).into_response()
}

/// Body bytes `GET /api/broker/message` returns at most (the rest is counted in `body_size`).
pub const MAX_MESSAGE_BODY: usize = 64 << 10;

#[derive(serde::Deserialize)]
struct MessageQuery {
    offset_id: String,
    #[serde(default)]
    msg_id: Option<String>,
}

/// `GET /api/broker/message?offset_id=BROKER:OFFSET&msg_id=ID`: the message stored at commitlog
/// offset `OFFSET` (16 hex digits) of broker group `BROKER` (this one), with its properties and
/// the first [`MAX_MESSAGE_BODY`] bytes of its body as text. With `msg_id`, a record with another
/// id is not found. One record read, for the console's Trace page before the archive has it.
async fn message(
    State(state): State<HttpState>,
    query: Result<axum::extract::Query<MessageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(query)) = query else {
        return offsets_error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "give the message's offset id: /api/broker/message?offset_id=broker-a:00000000000001F4 (and optionally &msg_id=)".to_owned(),
        );
    };
    let parsed = query
        .offset_id
        .rsplit_once(':')
        .filter(|(_, hex)| hex.len() == 16)
        .and_then(|(broker, hex)| u64::from_str_radix(hex, 16).ok().map(|offset| (broker, offset)));
    let Some((broker, offset)) = parsed else {
        return offsets_error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!(
                "{:?} is not an offset id: write BROKER:OFFSET with the offset in 16 hex digits, e.g. broker-a:00000000000001F4",
                query.offset_id
            ),
        );
    };
    if broker != state.broker_name {
        return offsets_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "{} was stored by broker group {broker}; this is broker group {}: ask one of {broker}'s brokers",
                query.offset_id, state.broker_name
            ),
        );
    }
    let store = state.store.clone();
    let read = tokio::task::spawn_blocking(move || store.read_record(offset)).await;
    let record = match read {
        Ok(Ok(record)) => record,
        Ok(Err(error)) => {
            return offsets_error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "broker {} holds no message at {}: {error} (it may have been deleted by retention; the archive may have it)",
                    state.broker_name, query.offset_id
                ),
            );
        }
        Err(error) => {
            return offsets_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("reading {} failed: {error}", query.offset_id),
            );
        }
    };
    let Some(stored) = meridian_proto::record::decode_all(&record)
        .ok()
        .and_then(|messages| messages.into_iter().next())
    else {
        return offsets_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the record at {} does not decode", query.offset_id),
        );
    };
    if let Some(wanted) = query.msg_id.as_deref().filter(|id| !id.is_empty())
        && !stored.msg_id().eq_ignore_ascii_case(wanted)
    {
        return offsets_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "the message at {} is {}, not {wanted}",
                query.offset_id,
                stored.msg_id()
            ),
        );
    }
    let properties: serde_json::Map<String, serde_json::Value> =
        meridian_proto::properties::PropertiesIter::new(&stored.properties)
            .map(|(name, value)| (name.to_owned(), json!(value)))
            .collect();
    let shown = &stored.body[..stored.body.len().min(MAX_MESSAGE_BODY)];
    Json(json!({
        "broker": state.broker_name,
        "offset_id": query.offset_id,
        "msg_id": stored.msg_id(),
        "topic": stored.topic,
        "queue_id": stored.queue_id,
        "queue_offset": stored.queue_offset,
        "born_timestamp": stored.born_timestamp,
        "store_timestamp": stored.store_timestamp,
        "reconsume_count": stored.reconsume_count,
        "properties": properties,
        "body_size": stored.body.len(),
        "body_truncated": shown.len() < stored.body.len(),
        "body": String::from_utf8_lossy(shown),
    }))
    .into_response()
}

/// The `?group=G&topic=T` of every broker endpoint about one group's view of one topic (offsets,
/// and the console's allocation in the cli).
#[derive(serde::Deserialize)]
pub struct GroupTopicQuery {
    /// The consumer group.
    pub group: String,
    /// The topic.
    pub topic: String,
}

/// `GET /api/broker/offsets?group=G&topic=T`: the group's stored offset of every queue of the
/// topic on this broker, with each queue's bounds and lag in messages (`max_offset` minus the
/// group's offset; the whole queue when the group has none yet). One read of the offset table per
/// queue, no disk access: the console calls it per group and topic of a group's page.
async fn offsets(
    State(state): State<HttpState>,
    query: Result<axum::extract::Query<GroupTopicQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(query)) = query else {
        return offsets_error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "give the consumer group and the topic: /api/broker/offsets?group=G&topic=T".to_owned(),
        );
    };
    let Some(queues) = state
        .store
        .topics()
        .into_iter()
        .find_map(|(name, queues)| (name == query.topic).then_some(queues))
    else {
        return offsets_error(
            StatusCode::NOT_FOUND,
            "topic_not_found",
            format!(
                "broker {} stores no topic {:?}: GET /api/broker/topics lists the topics it stores",
                state.broker_name, query.topic
            ),
        );
    };
    let mut total_lag = 0u64;
    let mut rows = Vec::with_capacity(queues as usize);
    for queue_id in 0..queues {
        let (Ok(bounds), Ok(consumer_offset)) = (
            state.store.queue_bounds(&query.topic, queue_id),
            state.store.query_offset(&query.group, &query.topic, queue_id),
        ) else {
            continue;
        };
        let from = consumer_offset.unwrap_or(bounds.min_offset).max(bounds.min_offset);
        let lag = bounds.max_offset.saturating_sub(from);
        total_lag += lag;
        rows.push(json!({
            "queue_id": queue_id,
            "min_offset": bounds.min_offset,
            "max_offset": bounds.max_offset,
            "consumer_offset": consumer_offset,
            "lag": lag,
        }));
    }
    Json(json!({
        "broker": state.broker_name,
        "group": query.group,
        "topic": query.topic,
        "lag": total_lag,
        "queues": rows,
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    group: String,
    topic: String,
    /// `earliest`, `latest` or `timestamp`.
    to: String,
    /// Unix ms, with `"to": "timestamp"`.
    #[serde(default)]
    timestamp: Option<i64>,
}

/// `POST /api/broker/offsets/reset` (`{"group", "topic", "to": "earliest|latest|timestamp",
/// "timestamp"?}`): moves the group's offsets of the topic on this broker, through the broker's own
/// `ResetOffset` request (the same checks as `meridian group reset-offset`: the group is approved
/// for the topic, this broker is the master). JSON only, so a browser cannot send it cross-site.
async fn reset_offsets(State(state): State<HttpState>, headers: axum::http::HeaderMap, body: bytes::Bytes) -> Response {
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
    let request: ResetBody = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return offsets_error(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                format!("the request body is not valid: {error} (fields: group, topic, to, timestamp)"),
            );
        }
    };
    let (target, timestamp) = match (request.to.as_str(), request.timestamp) {
        ("earliest", _) => (ResetTarget::Earliest, 0),
        ("latest", _) => (ResetTarget::Latest, 0),
        ("timestamp", Some(at)) => (ResetTarget::Timestamp, at),
        (other, _) => {
            return offsets_error(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                format!("\"to\": {other:?} is not earliest, latest, or timestamp (with \"timestamp\" in Unix ms)"),
            );
        }
    };
    if let Err(error) = validate_group(&request.group).and_then(|()| validate_topic(&request.topic)) {
        return offsets_error(StatusCode::BAD_REQUEST, "invalid_argument", error.to_string());
    }
    let reset = ResetOffsetRequest {
        group: request.group.clone(),
        topic: request.topic.clone(),
        target: target as i32,
        timestamp,
    };
    // Through the broker's own listener, so the request meets the same checks and logs as one
    // from `meridian group reset-offset`; one short-lived connection per reset (a rare admin act).
    let pool = ConnectionPool::new(TransportConfig::default());
    let timeout = pool.config().request_timeout;
    let result: Result<ResetOffsetResponse, TransportError> = pool
        .call(
            &state.broker_addr.to_string(),
            RequestCode::ResetOffset,
            &reset,
            timeout,
        )
        .await;
    pool.shutdown().await;
    match result {
        Ok(moved) => {
            let queues: Vec<_> = moved
                .queues
                .iter()
                .map(|queue| json!({"queue_id": queue.queue_id, "offset": queue.offset}))
                .collect();
            tracing::info!(
                group = request.group,
                topic = request.topic,
                to = request.to,
                "offsets reset over http"
            );
            Json(json!({"broker": state.broker_name, "group": request.group, "topic": request.topic, "queues": queues}))
                .into_response()
        }
        Err(error) => {
            let code = match &error {
                TransportError::Remote { code, .. } => Some(*code),
                _ => None,
            };
            let status = code
                .and_then(|code| StatusCode::from_u16(code.http_status()).ok())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            offsets_error(
                status,
                code.map_or("unavailable", |code| code.as_str()),
                format!(
                    "resetting offsets of group {} on {}: {error}",
                    request.group, request.topic
                ),
            )
        }
    }
}

/// The JSON error body of every broker HTTP endpoint: `{"error": {"code", "message"}}`.
pub fn offsets_error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

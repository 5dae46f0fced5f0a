//! The nameserver's HTTP admin API ([`router`]): JSON over HTTP/1.1, documented endpoint by endpoint
//! in `docs/api.md` ("Nameserver admin API").
//!
//! Every handler is a thin translation onto [`NameserverService`]: writes become a [`WriteOp`]
//! (forwarded to the Raft leader by the service), reads are answered from this node's applied
//! state. Every error, including a body or query string that does not parse, answers
//! `{"error": {"code": "<ErrorCode::as_str>", "message": "..."}}` with the status of
//! [`ErrorCode::http_status`]; axum's own plain-text rejections never reach a client, which is why
//! the extractors here (`JsonBody`, `BodyOrQuery`, `PathParam`, `QueryParams`) wrap axum's.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error as _;
use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use meridian_proto::ErrorCode;
use meridian_proto::messages::{TopicRoute, role};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ApiError;
use crate::service::{NameserverService, Query, WriteOp, WriteRequest};
use crate::state::{
    ApprovalStatus, Command, ConsumeMode, GroupRequest, IdcRule, PERM_READ_WRITE, ProduceLimitChange, TopicChanges,
    TopicRequest,
};
use crate::types::{Node, NodeId};

type SharedService = Arc<NameserverService>;

/// The admin API's routes, ready to serve or to merge into a bigger router (`meridian dev`).
///
/// Unknown paths under `/api/` and known paths with the wrong method answer in the API's error
/// shape. The router sets no global fallback, so it merges with routers that have one.
pub fn router(service: Arc<NameserverService>) -> Router {
    Router::new()
        .route("/api/nameserver/health", get(health))
        .route("/api/cluster", get(cluster))
        .route("/api/cluster/nodes", post(add_node))
        .route("/api/cluster/nodes/{id}", axum::routing::delete(remove_node))
        .route("/api/topics", get(list_topics).post(request_topic))
        .route(
            "/api/topics/{name}",
            get(topic_detail).patch(update_topic).delete(delete_topic),
        )
        .route("/api/topics/{name}/history", get(topic_history))
        .route("/api/topics/{name}/route", get(topic_route))
        .route("/api/topics/{name}/approve", post(approve_topic))
        .route("/api/topics/{name}/reject", post(reject_topic))
        .route("/api/groups", get(list_groups).post(request_group))
        .route("/api/groups/{name}", get(group_detail).delete(delete_group))
        .route("/api/groups/{name}/history", get(group_history))
        .route("/api/groups/{name}/approve", post(approve_group))
        .route("/api/groups/{name}/reject", post(reject_group))
        .route("/api/brokers", get(brokers))
        .route("/api/brokers/{group}/switchover", post(switchover))
        .route(
            "/api/idc-rules",
            get(idc_rules).put(set_idc_rule).delete(remove_idc_rule),
        )
        .route("/api/sdk-policy", get(sdk_policy).put(set_sdk_policy))
        .route("/api/alerts", get(alerts))
        .route("/api/drill", get(drill))
        .route("/api/drill/evacuate", post(drill_evacuate))
        .route("/api/drill/restore", post(drill_restore))
        .route("/api/idc-lookup/{ip}", get(idc_lookup))
        .merge(crate::security_api::router())
        .route("/api/{*path}", any(unknown_endpoint))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(service)
        .layer(axum::middleware::from_fn(crate::origin::record_origin))
}

// ---------------------------------------------------------------------------------------------
// Errors and answers

impl IntoResponse for ApiError {
    fn into_response(self) -> HttpResponse {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        error_response(status, self.code, self.message)
    }
}

fn error_response(status: StatusCode, code: ErrorCode, message: String) -> HttpResponse {
    if code == ErrorCode::Internal {
        tracing::error!(%message, "admin API request failed");
    }
    let body = serde_json::json!({ "error": { "code": code.as_str(), "message": message } });
    (status, Json(body)).into_response()
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, message)
}

fn answer(status: StatusCode, value: impl Serialize) -> HttpResponse {
    (status, Json(value)).into_response()
}

fn ok(value: impl Serialize) -> HttpResponse {
    answer(StatusCode::OK, value)
}

// The two answers whose status is not their code's `http_status()`: a missing endpoint is
// conventionally 404/405 in HTTP, where the framed protocol's closest code is `unsupported_request`
// (501), which would tell a client the server lacks a feature rather than that the URL is wrong.
async fn unknown_endpoint(method: Method, uri: Uri) -> HttpResponse {
    error_response(
        StatusCode::NOT_FOUND,
        ErrorCode::UnsupportedRequest,
        format!(
            "the nameserver has no endpoint {method} {}: see docs/api.md (\"Nameserver admin API\") for the endpoints",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> HttpResponse {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::UnsupportedRequest,
        format!(
            "{} does not accept {method}: see docs/api.md (\"Nameserver admin API\") for its methods",
            uri.path()
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Extractors: axum's, with rejections in the API's error shape

/// A JSON request body. An empty body, a body sent without `Content-Type: application/json`, bad
/// JSON, a missing, mistyped or unknown field: 400 `invalid_argument` naming the field. Too large:
/// 413 `message_too_large`.
///
/// The content type is required on purpose: a browser can send a cross-site form or `text/plain`
/// POST without asking first, but not an `application/json` one, so the requirement keeps other
/// web pages from driving this (unauthenticated) admin API.
struct JsonBody<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody<T>, ApiError> {
        let headers = request.headers().clone();
        let bytes = Bytes::from_request(request, state).await.map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(invalid(
                "the request body is empty: send a JSON object with Content-Type: application/json (see docs/api.md for its fields)",
            ));
        }
        parse_json(&headers, &bytes).map(JsonBody)
    }
}

/// `T` from a JSON body, or from the query string when there is no body (`DELETE` requests, which
/// many clients send without one).
struct BodyOrQuery<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for BodyOrQuery<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<BodyOrQuery<T>, ApiError> {
        let headers = request.headers().clone();
        let uri = request.uri().clone();
        let bytes = Bytes::from_request(request, state).await.map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            let axum::extract::Query(value) = axum::extract::Query::try_from_uri(&uri).map_err(|rejection| {
                let ApiError { code, message } = query_rejection(rejection);
                ApiError::new(
                    code,
                    format!("{message} (send the fields as the query string, or as a JSON body)"),
                )
            })?;
            return Ok(BodyOrQuery(value));
        }
        parse_json(&headers, &bytes).map(BodyOrQuery)
    }
}

fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    if !is_json(headers) {
        return Err(invalid(
            "the request body must be JSON sent with Content-Type: application/json (curl: -H 'content-type: application/json')",
        ));
    }
    Json::<T>::from_bytes(bytes)
        .map(|Json(value)| value)
        .map_err(json_rejection)
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    // The source is serde_path_to_error's error: `field.path: what is wrong at line L column C`,
    // or just `missing field `x`` at the top level. axum's own text adds only a generic prefix.
    let detail = rejection
        .source()
        .map_or_else(|| rejection.body_text(), |source| source.to_string());
    invalid(format!(
        "the request body is not valid: {detail} (see docs/api.md for the fields)"
    ))
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "the request body is too large for the admin API: {}",
                rejection.body_text()
            ),
        );
    }
    invalid(format!("the request body could not be read: {}", rejection.body_text()))
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    let detail = rejection
        .source()
        .map_or_else(|| rejection.body_text(), |source| source.to_string());
    invalid(format!("the query string is not valid: {detail}"))
}

/// A path parameter (`{name}`, `{id}`) that answers in the API's error shape when it does not parse.
struct PathParam<T>(T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PathParam<T>, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParam(value))
            .map_err(|rejection: PathRejection| invalid(format!("the path is not valid: {}", rejection.body_text())))
    }
}

/// A query string that answers in the API's error shape when it does not parse.
struct QueryParams<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<QueryParams<T>, ApiError> {
        axum::extract::Query::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| QueryParams(value))
            .map_err(query_rejection)
    }
}

/// Every change names who made it. The state refuses an empty name too, but under its own field
/// name (`decided_by`, `deleted_by`); this names the field the HTTP client sent.
///
/// With `[auth]` on, the change is made by the logged-in user: an empty `by` becomes that user, and
/// a `by` naming someone else is refused (the audit log names who authenticated, never a claim).
fn require_by(by: &str) -> Result<String, ApiError> {
    let logged_in = crate::origin::current_origin().and_then(|origin| origin.user);
    match logged_in {
        Some(user) if by.trim().is_empty() || by.trim() == user => Ok(user),
        Some(user) => Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!(
                "\"by\" is {by:?} but this request is logged in as {user:?}: with [auth] on, changes are made by the logged-in user; leave --by out or log in as {by:?}"
            ),
        )),
        None if by.trim().is_empty() => Err(invalid("\"by\" is empty: every request and decision names who made it")),
        None => Ok(by.to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNodeBody {
    id: NodeId,
    addr: String,
    #[serde(default)]
    http_addr: String,
    #[serde(default)]
    idc: String,
}

#[derive(Debug, Deserialize)]
struct StatusFilter {
    #[serde(default)]
    status: Option<ApprovalStatus>,
    /// Only names or owners containing this (case-insensitive).
    #[serde(default)]
    q: Option<String>,
    /// With `limit`: the page's first item (default 0).
    #[serde(default)]
    offset: Option<usize>,
    /// A page of at most this many (1 to [`MAX_PAGE`]); the answer becomes
    /// `{total, offset, limit, next_offset?, <items>}`. Without it: the whole list, as before.
    #[serde(default)]
    limit: Option<usize>,
}

/// Largest page of `GET /api/topics` and `GET /api/groups`; more is refused, not cut.
pub const MAX_PAGE: usize = 1000;

impl StatusFilter {
    /// `(offset, limit)` when a page was asked for; `None` for the whole list.
    fn bounds(&self) -> Result<Option<(usize, usize)>, ApiError> {
        let Some(limit) = self.limit else {
            if self.offset.is_some() {
                return Err(invalid(
                    "\"offset\" needs \"limit\": ask for a page, e.g. ?offset=50&limit=50",
                ));
            }
            return Ok(None);
        };
        if limit == 0 || limit > MAX_PAGE {
            return Err(invalid(format!(
                "\"limit\" is {limit}: a page holds 1 to {MAX_PAGE} items; page through with \"offset\""
            )));
        }
        Ok(Some((self.offset.unwrap_or(0), limit)))
    }

    fn needle(&self) -> Option<String> {
        self.q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_lowercase)
    }

    /// Whether an item with this status, name and owner is listed.
    fn keeps(&self, needle: Option<&str>, status: ApprovalStatus, name: &str, owner: &str) -> bool {
        self.status.is_none_or(|wanted| wanted == status)
            && needle.is_none_or(|needle| name.to_lowercase().contains(needle) || owner.to_lowercase().contains(needle))
    }

    /// The listed items of `items` (`(status, name, owner, item)`): all of them as a JSON list, or
    /// with a `limit` one page under `key` with the total count. Only the page's items are cloned
    /// and serialized, so a page costs the same at 10 or 10,000 items.
    fn list<'a, T: Serialize + 'a>(
        &self,
        items: impl Iterator<Item = (ApprovalStatus, &'a str, &'a str, &'a T)>,
        key: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let bounds = self.bounds()?;
        let needle = self.needle();
        let kept = items.filter(|(status, name, owner, _)| self.keeps(needle.as_deref(), *status, name, owner));
        let to_json = |item: &T| {
            serde_json::to_value(item).map_err(|error| ApiError::new(ErrorCode::Internal, error.to_string()))
        };
        let Some((offset, limit)) = bounds else {
            let all = kept
                .map(|(_, _, _, item)| to_json(item))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(serde_json::Value::Array(all));
        };
        let mut total = 0usize;
        let mut page = Vec::with_capacity(limit);
        for (_, _, _, item) in kept {
            if total >= offset && page.len() < limit {
                page.push(to_json(item)?);
            }
            total += 1;
        }
        let mut answer = serde_json::json!({ "total": total, "offset": offset, "limit": limit, key: page });
        if offset + limit < total {
            answer["next_offset"] = serde_json::json!(offset + limit);
        }
        Ok(answer)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicRequestBody {
    name: String,
    owner: String,
    #[serde(default)]
    description: String,
    // May be empty until an admin places the topic; it cannot be approved without queues.
    #[serde(default)]
    queues: BTreeMap<String, u32>,
    #[serde(default = "default_perm")]
    perm: u8,
    #[serde(default)]
    produce_limit: Option<u32>,
    requested_by: String,
}

fn default_perm() -> u8 {
    PERM_READ_WRITE
}

/// Approve: `reason` optional. Reject and delete: `reason` required, but left to the state to
/// refuse when missing or blank, because its message says why a reason matters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicUpdateBody {
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    queues: Option<BTreeMap<String, u32>>,
    #[serde(default)]
    perm: Option<u8>,
    // Outer `None`: absent, keep the limit; `Some(None)`: `null`, remove it (JSON merge patch).
    #[serde(default, deserialize_with = "present")]
    produce_limit: Option<Option<u32>>,
    #[serde(default)]
    remove_produce_limit: bool,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Marks a field that is present, even as `null`; absent fields get the `default`, `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

impl TopicUpdateBody {
    fn produce_limit_change(&self) -> Result<ProduceLimitChange, ApiError> {
        match (self.produce_limit, self.remove_produce_limit) {
            (Some(Some(limit)), true) => Err(invalid(format!(
                "\"produce_limit\": {limit} and \"remove_produce_limit\": true contradict each other: send one of them"
            ))),
            (Some(Some(limit)), false) => Ok(ProduceLimitChange::Set(limit)),
            (Some(None), _) | (None, true) => Ok(ProduceLimitChange::Remove),
            (None, false) => Ok(ProduceLimitChange::Keep),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRequestBody {
    name: String,
    owner: String,
    #[serde(default)]
    description: String,
    // Left to the state to refuse when empty: its message says what to do.
    #[serde(default)]
    topics: BTreeSet<String>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    consume_mode: ConsumeMode,
    requested_by: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchoverBody {
    to: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvacuateBody {
    idc: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdcRuleBody {
    cidr: String,
    idc: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CidrBody {
    cidr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SdkPolicyBody {
    #[serde(default)]
    min_version: Option<String>,
    // Required: PUT replaces the whole policy, and an omitted list would silently unblock
    // every blocked version.
    blocked_versions: BTreeSet<String>,
    /// Refuse offenders instead of only flagging them.
    #[serde(default)]
    refuse: bool,
    /// Minimum per SDK language, e.g. `{"java": "4.9.0"}`.
    #[serde(default)]
    language_min_versions: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------------
// Answers that are not the service's own types

/// A topic's route as JSON ([`TopicRoute`] is a protobuf message, not serde).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteJson {
    /// Topic name.
    pub topic: String,
    /// One entry per broker group the topic is placed on.
    pub brokers: Vec<BrokerRouteJson>,
}

/// One broker group of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRouteJson {
    /// Broker group name.
    pub broker_name: String,
    /// Address of its live master; empty when it has none (sends cannot go there).
    pub addr: String,
    /// Data center of that master.
    pub idc: String,
    /// Queues of the topic on this group.
    pub queues: u32,
    /// Permission bits: 1 read, 2 write.
    pub perm: u32,
    /// Every member, live or not.
    pub replicas: Vec<ReplicaJson>,
}

/// One member of a broker group in a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaJson {
    /// Broker name.
    pub name: String,
    /// Address clients connect to.
    pub addr: String,
    /// Data center.
    pub idc: String,
    /// `"master"` or `"slave"`.
    pub role: String,
    /// Epoch it registered with.
    pub epoch: u64,
    /// Whether this nameserver heard its heartbeat within the heartbeat timeout.
    pub alive: bool,
    /// Greatest commitlog offset it reported.
    pub max_offset: u64,
}

impl From<TopicRoute> for RouteJson {
    fn from(route: TopicRoute) -> RouteJson {
        RouteJson {
            topic: route.topic,
            brokers: route
                .brokers
                .into_iter()
                .map(|broker| BrokerRouteJson {
                    broker_name: broker.broker_name,
                    addr: broker.addr,
                    idc: broker.idc,
                    queues: broker.queues,
                    perm: broker.perm,
                    replicas: broker
                        .replicas
                        .into_iter()
                        .map(|replica| ReplicaJson {
                            name: replica.name,
                            addr: replica.addr,
                            idc: replica.idc,
                            role: role::name(replica.role).to_owned(),
                            epoch: replica.epoch,
                            alive: replica.alive,
                            max_offset: replica.max_offset,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// An IDC rule with its CIDR spelled out, as `DELETE /api/idc-rules?cidr=` takes it.
#[derive(Debug, Serialize)]
struct IdcRuleJson {
    cidr: String,
    #[serde(flatten)]
    rule: IdcRule,
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn health(State(service): State<SharedService>) -> HttpResponse {
    let view = service.cluster();
    let cut_off = service.cut_off();
    let (status, word) = match (view.leader, &cut_off) {
        (None, _) => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
        (Some(_), Some(_)) => (StatusCode::SERVICE_UNAVAILABLE, "cut_off"),
        (Some(_), None) => (StatusCode::OK, "ok"),
    };
    answer(
        status,
        serde_json::json!({
            "status": word,
            "node_id": view.node_id,
            "role": view.role,
            "leader": view.leader,
            "cut_off": cut_off,
        }),
    )
}

async fn cluster(State(service): State<SharedService>) -> HttpResponse {
    ok(service.cluster())
}

async fn add_node(
    State(service): State<SharedService>,
    JsonBody(body): JsonBody<AddNodeBody>,
) -> Result<HttpResponse, ApiError> {
    if body.id == 0 {
        return Err(invalid("\"id\" must be at least 1: node ids start at 1"));
    }
    if body.addr.trim().is_empty() {
        return Err(invalid(format!(
            "\"addr\" of node {} is empty: give the framed-protocol address the other nameservers reach it at",
            body.id
        )));
    }
    let op = WriteOp::AddNode {
        id: body.id,
        node: Node {
            addr: body.addr,
            http_addr: body.http_addr,
            idc: body.idc,
        },
    };
    write(&service, op).await.map(ok)
}

async fn remove_node(
    State(service): State<SharedService>,
    PathParam(id): PathParam<NodeId>,
) -> Result<HttpResponse, ApiError> {
    write(&service, WriteOp::RemoveNode { id }).await.map(ok)
}

async fn write(service: &NameserverService, op: WriteOp) -> Result<crate::state::Response, ApiError> {
    service.write(WriteRequest { op, forwarded: false }).await
}

async fn list_topics(
    State(service): State<SharedService>,
    QueryParams(filter): QueryParams<StatusFilter>,
) -> Result<HttpResponse, ApiError> {
    filter.bounds()?;
    service
        .raft()
        .read_state(|state| {
            let topics = state.topics().values();
            filter.list(
                topics.map(|t| (t.approval.status, t.name.as_str(), t.owner.as_str(), t)),
                "topics",
            )
        })
        .map(ok)
}

async fn topic_detail(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
) -> Result<HttpResponse, ApiError> {
    service.read(&Query::Topic { name }).map(ok)
}

async fn topic_history(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
) -> Result<HttpResponse, ApiError> {
    let mut detail = service.read(&Query::Topic { name })?;
    Ok(ok(detail["history"].take()))
}

async fn topic_route(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
) -> Result<HttpResponse, ApiError> {
    service.route(&name).map(|route| ok(RouteJson::from(route)))
}

async fn request_topic(
    State(service): State<SharedService>,
    JsonBody(body): JsonBody<TopicRequestBody>,
) -> Result<HttpResponse, ApiError> {
    let command = Command::RequestTopic(TopicRequest {
        name: body.name,
        owner: body.owner,
        description: body.description,
        queues: body.queues,
        perm: body.perm,
        produce_limit: body.produce_limit,
        requested_by: body.requested_by,
    });
    service
        .command(command)
        .await
        .map(|response| answer(StatusCode::CREATED, response))
}

async fn approve_topic(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    let by = require_by(&body.by)?;
    let command = Command::ApproveTopic {
        name,
        decided_by: by,
        reason: body.reason,
    };
    service.command(command).await.map(ok)
}

async fn reject_topic(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    let by = require_by(&body.by)?;
    let command = Command::RejectTopic {
        name,
        decided_by: by,
        reason: body.reason.unwrap_or_default(),
    };
    service.command(command).await.map(ok)
}

async fn update_topic(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
    JsonBody(body): JsonBody<TopicUpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let by = require_by(&body.by)?;
    let produce_limit = body.produce_limit_change()?;
    let command = Command::UpdateTopic {
        name,
        updated_by: by,
        reason: body.reason,
        changes: TopicChanges {
            queues: body.queues,
            perm: body.perm,
            produce_limit,
            owner: body.owner,
            description: body.description,
        },
    };
    service.command(command).await.map(ok)
}

async fn delete_topic(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
    BodyOrQuery(body): BodyOrQuery<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    let by = require_by(&body.by)?;
    let command = Command::DeleteTopic {
        name,
        deleted_by: by,
        reason: body.reason.unwrap_or_default(),
    };
    service.command(command).await.map(ok)
}

async fn list_groups(
    State(service): State<SharedService>,
    QueryParams(filter): QueryParams<StatusFilter>,
) -> Result<HttpResponse, ApiError> {
    filter.bounds()?;
    service
        .raft()
        .read_state(|state| {
            let groups = state.consumer_groups().values();
            filter.list(
                groups.map(|g| (g.approval.status, g.name.as_str(), g.owner.as_str(), g)),
                "groups",
            )
        })
        .map(ok)
}

async fn group_detail(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
) -> Result<HttpResponse, ApiError> {
    service.read(&Query::Group { name }).map(ok)
}

async fn group_history(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
) -> Result<HttpResponse, ApiError> {
    let mut detail = service.read(&Query::Group { name })?;
    Ok(ok(detail["history"].take()))
}

async fn request_group(
    State(service): State<SharedService>,
    JsonBody(body): JsonBody<GroupRequestBody>,
) -> Result<HttpResponse, ApiError> {
    let command = Command::RequestGroup(GroupRequest {
        name: body.name,
        owner: body.owner,
        description: body.description,
        topics: body.topics,
        max_retries: body.max_retries,
        consume_mode: body.consume_mode,
        requested_by: body.requested_by,
    });
    service
        .command(command)
        .await
        .map(|response| answer(StatusCode::CREATED, response))
}

async fn approve_group(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    let by = require_by(&body.by)?;
    let command = Command::ApproveGroup {
        name,
        decided_by: by,
        reason: body.reason,
    };
    service.command(command).await.map(ok)
}

async fn reject_group(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    let by = require_by(&body.by)?;
    let command = Command::RejectGroup {
        name,
        decided_by: by,
        reason: body.reason.unwrap_or_default(),
    };
    service.command(command).await.map(ok)
}

async fn delete_group(
    State(service): State<SharedService>,
    PathParam(name): PathParam<String>,
    BodyOrQuery(body): BodyOrQuery<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    let by = require_by(&body.by)?;
    let command = Command::DeleteGroup {
        name,
        deleted_by: by,
        reason: body.reason.unwrap_or_default(),
    };
    service.command(command).await.map(ok)
}

async fn brokers(State(service): State<SharedService>) -> HttpResponse {
    ok(service.brokers())
}

async fn switchover(
    State(service): State<SharedService>,
    PathParam(group): PathParam<String>,
    JsonBody(body): JsonBody<SwitchoverBody>,
) -> Result<HttpResponse, ApiError> {
    let by = require_by(&body.by)?;
    service.switchover(&group, &body.to, &by, body.reason).await.map(ok)
}

async fn idc_rules(State(service): State<SharedService>) -> HttpResponse {
    let rules: Vec<IdcRuleJson> = service
        .idc_rules()
        .into_iter()
        .map(|rule| IdcRuleJson {
            cidr: rule.cidr(),
            rule,
        })
        .collect();
    ok(rules)
}

async fn set_idc_rule(
    State(service): State<SharedService>,
    JsonBody(body): JsonBody<IdcRuleBody>,
) -> Result<HttpResponse, ApiError> {
    let command = Command::SetIdcRule {
        cidr: body.cidr,
        idc: body.idc,
    };
    service.command(command).await.map(ok)
}

async fn remove_idc_rule(
    State(service): State<SharedService>,
    BodyOrQuery(body): BodyOrQuery<CidrBody>,
) -> Result<HttpResponse, ApiError> {
    service
        .command(Command::RemoveIdcRule { cidr: body.cidr })
        .await
        .map(ok)
}

/// Query of `GET /api/alerts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    /// Only alerts of this owner.
    owner: Option<String>,
    /// Only `firing` or `resolved` alerts.
    status: Option<String>,
}

/// Alerts, firing first, then the most recently changed, each with its history
/// (`docs/governance.md`, "Alerts").
async fn alerts(State(service): State<SharedService>, QueryParams(query): QueryParams<AlertsQuery>) -> HttpResponse {
    if let Some(status) = query.status.as_deref()
        && status != "firing"
        && status != "resolved"
    {
        return ApiError::new(
            ErrorCode::InvalidArgument,
            format!("status {status:?} must be firing or resolved"),
        )
        .into_response();
    }
    let mut alerts: Vec<crate::state::Alert> = service.raft().read_state(|state| {
        state
            .alerts()
            .values()
            .filter(|alert| query.owner.as_deref().is_none_or(|owner| alert.owner == owner))
            .filter(|alert| {
                query
                    .status
                    .as_deref()
                    .is_none_or(|status| alert.status.as_str() == status)
            })
            .cloned()
            .collect()
    });
    alerts.sort_by_key(|alert| {
        (
            alert.status != crate::state::AlertStatus::Firing,
            std::cmp::Reverse(alert.last_change_ms),
        )
    });
    let firing = alerts
        .iter()
        .filter(|alert| alert.status == crate::state::AlertStatus::Firing)
        .count();
    ok(serde_json::json!({ "firing": firing, "alerts": alerts }))
}

async fn drill(State(service): State<SharedService>) -> HttpResponse {
    ok(service.drill())
}

async fn drill_evacuate(
    State(service): State<SharedService>,
    JsonBody(body): JsonBody<EvacuateBody>,
) -> Result<HttpResponse, ApiError> {
    let by = require_by(&body.by)?;
    let command = Command::Evacuate {
        idc: body.idc,
        by,
        reason: body.reason,
    };
    service.command(command).await.map(ok)
}

async fn drill_restore(
    State(service): State<SharedService>,
    JsonBody(body): JsonBody<RestoreBody>,
) -> Result<HttpResponse, ApiError> {
    let by = require_by(&body.by)?;
    let command = Command::Restore {
        by,
        reason: body.reason,
    };
    service.command(command).await.map(ok)
}

async fn idc_lookup(
    State(service): State<SharedService>,
    PathParam(ip): PathParam<String>,
) -> Result<HttpResponse, ApiError> {
    let answer = service.idc_lookup(&ip)?;
    Ok(ok(serde_json::json!({
        "ip": ip,
        "idc": Some(answer.idc).filter(|idc| !idc.is_empty()),
        "cidr": Some(answer.cidr).filter(|cidr| !cidr.is_empty()),
        "known_idcs": answer.known_idcs,
    })))
}

/// Every field, defaults included: the stored form leaves defaults out so that snapshots written
/// before a field existed read back unchanged, but an API answer says everything.
async fn sdk_policy(State(service): State<SharedService>) -> HttpResponse {
    let policy = service.sdk_policy();
    ok(serde_json::json!({
        "min_version": policy.min_version,
        "blocked_versions": policy.blocked_versions,
        "refuse": policy.refuse,
        "language_min_versions": policy.language_min_versions,
    }))
}

async fn set_sdk_policy(
    State(service): State<SharedService>,
    JsonBody(body): JsonBody<SdkPolicyBody>,
) -> Result<HttpResponse, ApiError> {
    let command = Command::SetSdkPolicy {
        min_version: body.min_version,
        blocked_versions: body.blocked_versions,
        refuse: body.refuse,
        language_min_versions: body.language_min_versions,
    };
    service.command(command).await.map(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: &str) -> Result<ProduceLimitChange, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        parse_json::<TopicUpdateBody>(&headers, json.as_bytes())?.produce_limit_change()
    }

    #[test]
    fn produce_limit_is_kept_set_or_removed_and_contradictions_are_refused() {
        assert_eq!(update(r#"{"by": "bob"}"#).unwrap(), ProduceLimitChange::Keep);
        assert_eq!(
            update(r#"{"by": "bob", "produce_limit": 100}"#).unwrap(),
            ProduceLimitChange::Set(100)
        );
        assert_eq!(
            update(r#"{"by": "bob", "produce_limit": null}"#).unwrap(),
            ProduceLimitChange::Remove
        );
        assert_eq!(
            update(r#"{"by": "bob", "remove_produce_limit": true}"#).unwrap(),
            ProduceLimitChange::Remove
        );
        let error = update(r#"{"by": "bob", "produce_limit": 5, "remove_produce_limit": true}"#).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(error.message.contains("contradict"), "{}", error.message);
    }

    #[test]
    fn body_errors_name_the_field() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json; charset=utf-8".parse().unwrap());
        // `by` may be left out (with `[auth]` on, the logged-in user makes the change).
        let missing = parse_json::<TopicRequestBody>(&headers, br#"{"name": "a", "owner": "o"}"#).unwrap_err();
        assert!(
            missing.message.contains("missing field `requested_by`"),
            "{}",
            missing.message
        );
        let mistyped = parse_json::<TopicRequestBody>(
            &headers,
            br#"{"name":"a","owner":"o","requested_by":"r","queues":{"broker-a":"x"}}"#,
        )
        .unwrap_err();
        assert!(mistyped.message.contains("queues.broker-a"), "{}", mistyped.message);
        let unknown = parse_json::<DecisionBody>(&headers, br#"{"by": "a", "resaon": "x"}"#).unwrap_err();
        assert!(
            unknown.message.contains("unknown field `resaon`"),
            "{}",
            unknown.message
        );
        let perm = parse_json::<TopicUpdateBody>(&headers, br#"{"by": "a", "perm": 300}"#).unwrap_err();
        assert!(perm.message.contains("perm"), "{}", perm.message);

        let form = HeaderMap::new();
        let untyped = parse_json::<DecisionBody>(&form, br#"{"by": "a"}"#).unwrap_err();
        assert!(
            untyped.message.contains("Content-Type: application/json"),
            "{}",
            untyped.message
        );
        let mut vendor = HeaderMap::new();
        vendor.insert(header::CONTENT_TYPE, "application/vnd.meridian+json".parse().unwrap());
        assert!(parse_json::<DecisionBody>(&vendor, br#"{"by": "a"}"#).is_ok());
    }
}

#[cfg(test)]
mod page_tests {
    use serde_json::json;

    use super::*;

    fn filter(q: Option<&str>, offset: Option<usize>, limit: Option<usize>) -> StatusFilter {
        StatusFilter {
            status: None,
            q: q.map(str::to_owned),
            offset,
            limit,
        }
    }

    fn items(n: usize) -> Vec<(String, String, serde_json::Value)> {
        (0..n)
            .map(|i| {
                let name = format!("topic-{i:03}");
                let owner = if i % 2 == 0 { "Team-Even" } else { "team-odd" }.to_owned();
                let value = json!({"name": name, "owner": owner});
                (name, owner, value)
            })
            .collect()
    }

    fn list(
        filter: &StatusFilter,
        items: &[(String, String, serde_json::Value)],
    ) -> Result<serde_json::Value, ApiError> {
        filter.list(
            items
                .iter()
                .map(|(name, owner, value)| (ApprovalStatus::Approved, name.as_str(), owner.as_str(), value)),
            "topics",
        )
    }

    #[test]
    fn a_page_counts_every_match_and_names_the_next_one() {
        let all = items(100);
        let page = list(&filter(None, Some(40), Some(25)), &all).unwrap();
        assert_eq!(page["total"], 100);
        assert_eq!(page["topics"].as_array().unwrap().len(), 25);
        assert_eq!(page["topics"][0]["name"], "topic-040");
        assert_eq!(page["next_offset"], 65);
        let last = list(&filter(None, Some(90), Some(25)), &all).unwrap();
        assert_eq!(last["topics"].as_array().unwrap().len(), 10);
        assert!(last.get("next_offset").is_none());
    }

    #[test]
    fn search_matches_names_and_owners_case_insensitively() {
        let page = list(&filter(Some("EVEN"), None, Some(1000)), &items(10)).unwrap();
        assert_eq!(page["total"], 5);
        let unpaged = list(&filter(Some("topic-00"), None, None), &items(20)).unwrap();
        assert_eq!(
            unpaged.as_array().unwrap().len(),
            10,
            "without limit the answer stays a list"
        );
        let mut approved_only = filter(None, None, None);
        approved_only.status = Some(ApprovalStatus::Rejected);
        assert_eq!(list(&approved_only, &items(3)).unwrap(), json!([]));
    }

    #[test]
    fn pages_out_of_bounds_are_refused_with_the_limit() {
        let error = list(&filter(None, None, Some(MAX_PAGE + 1)), &items(1)).unwrap_err();
        assert!(error.message.contains("1 to 1000"), "{}", error.message);
        assert!(list(&filter(None, None, Some(0)), &items(1)).is_err());
        assert!(list(&filter(None, Some(5), None), &items(1)).is_err());
    }
}

//! The web console (axum): the data centers at a glance, topics and groups with approvals and lag,
//! a message's journey as a picture, SQL with charts, forecasts, alerts, drills; served as HTML rendered
//! on the server, with one small script and one stylesheet compiled into the binary.
//!
//! It talks to the services only over their HTTP APIs (`docs/api.md`), through [`client`]; it
//! never links a service crate. Every page makes a fixed, small number of calls, whatever the
//! cluster's size (lists are fetched one page at a time), and shows a failed call as an error box
//! naming the service, its address and its answer, never as an empty page.
//!
//! Start at [`router`]; each page's HTML is a pure function in [`pages`] (unit-tested), and the
//! handlers here only fetch and pass on.

// An `ApiError` carries what a page shows about a failed call (service, address, request,
// status, code, message, position) and a refusal is a whole `Response`: both are built once per
// request, off any hot path, so boxing them would only add noise.
#![allow(clippy::result_large_err)]

pub mod client;
pub mod html;
pub mod lag;
pub mod login;
pub mod pages;
pub mod session;
pub mod svg;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::client::{ApiError, Upstream, decode_form, encode};
use crate::pages::{alerts, drills, groups, members, others, overview, sql, topics, trace};

/// Where the console finds the services' HTTP APIs (`host:port` each).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The nameserver admin API (any node of the cluster).
    pub nameserver: String,
    /// Broker HTTP APIs (`/api/health`, `/api/broker/offsets`); may be empty.
    pub brokers: Vec<String>,
    /// The tracer's lookup API, if any.
    pub tracer: Option<String>,
    /// The query service, if any.
    pub query: Option<String>,
    /// Deadline of one call to a service (SQL gets four times as long).
    pub timeout: Duration,
    /// Call the services over TLS, verifying them against this CA; `None`: plaintext.
    pub tls: Option<Arc<meridian_proto::tls::TlsClient>>,
}

impl ConsoleConfig {
    /// Every API on one address, as `meridian dev` serves them.
    pub fn single(addr: &str, with_query: bool) -> ConsoleConfig {
        ConsoleConfig {
            nameserver: addr.to_owned(),
            brokers: vec![addr.to_owned()],
            tracer: Some(addr.to_owned()),
            query: with_query.then(|| addr.to_owned()),
            timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

struct Console {
    nameserver: Upstream,
    brokers: Vec<Upstream>,
    tracer: Option<Upstream>,
    query: Option<Upstream>,
    /// Each group's lag, sampled on every view of the Groups pages.
    lag_history: lag::LagHistory,
}

type Shared = Arc<Console>;
type Params = Query<HashMap<String, String>>;

const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");

/// The console's routes: pages at `/`, `/topics`, `/groups`, `/trace`, `/sql`, `/forecasts`,
/// `/drills`, `/clients`, `/alerts`, and `/assets/*`. No route under `/api/`, so it merges with the
/// services' routers on one listener.
pub fn router(config: ConsoleConfig) -> Router {
    let tls = config.tls.clone();
    let upstream = |service: &'static str, addr: String, timeout: Duration| {
        Upstream::new(service, addr, timeout).with_tls(tls.clone())
    };
    let console = Console {
        nameserver: upstream("nameserver", config.nameserver, config.timeout),
        brokers: config
            .brokers
            .into_iter()
            .map(|addr| upstream("broker", addr, config.timeout))
            .collect(),
        tracer: config.tracer.map(|addr| upstream("tracer", addr, config.timeout)),
        query: config
            .query
            .map(|addr| upstream("query service", addr, config.timeout * 4)),
        lag_history: lag::LagHistory::new(),
    };
    Router::new()
        .route("/", get(overview_page))
        .route("/topics", get(topics_page).post(request_topic))
        .route("/topics/{name}", get(topic_page))
        .route("/topics/{name}/approve", post(approve_topic))
        .route("/topics/{name}/reject", post(reject_topic))
        .route("/topics/{name}/limit", post(limit_topic))
        .route("/groups", get(groups_page))
        .route("/groups/{name}", get(group_page))
        .route("/groups/{name}/approve", post(approve_group))
        .route("/groups/{name}/reject", post(reject_group))
        .route("/groups/{name}/reset", post(reset_group))
        .route("/groups/{name}/dead-letters/resend", post(resend_dead_letters))
        .route("/trace", get(trace_page))
        .route("/sql", get(sql_page))
        .route("/sql.csv", get(sql_csv))
        .route("/forecasts", get(forecasts_page))
        .route("/drills", get(drills_page))
        .route("/drills/evacuate", post(evacuate))
        .route("/drills/restore", post(restore))
        .route("/clients", get(clients_page))
        .route("/alerts", get(alerts_page))
        .route("/login", get(login::login_page).post(login_post))
        .route("/logout", post(logout))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
        .with_state(Arc::new(console))
        // The user's session reaches the pages, the forms and the calls to the APIs.
        .layer(axum::middleware::from_fn(login::with_session))
}

async fn login_post(State(console): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    login::login(&console.nameserver, &headers, &body).await
}

async fn logout(State(console): State<Shared>) -> Response {
    login::logout(&console.nameserver).await
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// 200 when the page's main call worked; 404 when it named nothing that exists; 502 when it
/// failed otherwise (the page still shows why).
fn page_status<T>(main: &Result<T, ApiError>) -> StatusCode {
    match main {
        Ok(_) => StatusCode::OK,
        Err(error) if error.status == Some(404) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> &'a str {
    params.get(name).map_or("", String::as_str)
}

fn offset_of(params: &HashMap<String, String>) -> usize {
    param(params, "offset").parse().unwrap_or(0)
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

// ---------------------------------------------------------------------------------------------
// Pages

async fn overview_page(State(console): State<Shared>) -> Response {
    let ns = &console.nameserver;
    let health = futures_util::future::join_all(
        console
            .brokers
            .iter()
            .map(|broker| broker.get_json_also("/api/health", &[503])),
    );
    let (cluster, brokers, drill, topics, groups, broker_health, alerts) = tokio::join!(
        ns.get_json("/api/cluster"),
        ns.get_json("/api/brokers"),
        ns.get_json("/api/drill"),
        ns.get_json("/api/topics?limit=1"),
        ns.get_json("/api/groups?limit=1"),
        health,
        ns.get_json("/api/alerts?status=firing"),
    );
    let status = page_status(&cluster);
    html(
        status,
        overview::render(&overview::OverviewData {
            cluster,
            brokers,
            drill,
            topics,
            groups,
            broker_health,
            alerts,
        }),
    )
}

fn broker_group_names(brokers: &Result<Value, ApiError>) -> Vec<String> {
    brokers
        .as_ref()
        .ok()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|group| group["name"].as_str().map(str::to_owned))
        .collect()
}

async fn topics_page(State(console): State<Shared>, Query(params): Params) -> Response {
    let (q, status, offset) = (param(&params, "q"), param(&params, "status"), offset_of(&params));
    let path = format!(
        "/api/topics?q={}&offset={offset}&limit={}{}",
        encode(q),
        topics::PAGE,
        if status.is_empty() {
            String::new()
        } else {
            format!("&status={}", encode(status))
        }
    );
    let (page, brokers) = tokio::join!(
        console.nameserver.get_json(&path),
        console.nameserver.get_json("/api/brokers")
    );
    let code = page_status(&page);
    html(
        code,
        topics::render_list(&topics::TopicList {
            q,
            status,
            offset,
            page,
            broker_groups: broker_group_names(&brokers),
            ok: params.get("ok").map(String::as_str),
            error: params.get("error").map(String::as_str),
        }),
    )
}

async fn topic_page(State(console): State<Shared>, Path(name): Path<String>, Query(params): Params) -> Response {
    let detail_path = format!("/api/topics/{}", encode(&name));
    let detail = console.nameserver.get_json(&detail_path);
    let volume = async {
        let query = console.query.as_ref()?;
        let sql = format!(
            "SELECT hour, messages FROM hourly_volume WHERE topic = {} ORDER BY hour DESC LIMIT 168",
            others::sql_string(&name)
        );
        Some(run_sql(query, &sql).await)
    };
    // One stats call per configured broker, whatever the number of topics.
    let rates_path = format!("/api/broker/stats?topic={}", encode(&name));
    let rates = futures_util::future::join_all(console.brokers.iter().map(|broker| broker.get_json(&rates_path)));
    let (detail, volume, rates) = tokio::join!(detail, volume, rates);
    let rates = console
        .brokers
        .iter()
        .map(|broker| broker.addr.clone())
        .zip(rates)
        .collect();
    let code = page_status(&detail);
    html(
        code,
        topics::render_detail(&topics::TopicDetail {
            name: &name,
            detail,
            volume,
            rates,
            ok: params.get("ok").map(String::as_str),
            error: params.get("error").map(String::as_str),
        }),
    )
}

async fn groups_page(State(console): State<Shared>, Query(params): Params) -> Response {
    let (q, offset) = (param(&params, "q"), offset_of(&params));
    let path = format!("/api/groups?q={}&offset={offset}&limit={}", encode(q), groups::PAGE);
    // One lag call per broker, whatever the number of groups.
    let (page, lag) = tokio::join!(console.nameserver.get_json(&path), broker_lag(&console));
    if let Ok(answer) = &page {
        let names: Vec<&str> = answer["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|group| group["name"].as_str())
            .collect();
        sample_lag(&console, &names, &lag);
    }
    html(
        page_status(&page),
        groups::render_list(&groups::GroupList { q, offset, page, lag }),
    )
}

/// `GET /api/broker/lag` of every configured broker, concurrently.
async fn broker_lag(console: &Console) -> Vec<Result<Value, ApiError>> {
    futures_util::future::join_all(console.brokers.iter().map(|broker| broker.get_json("/api/broker/lag"))).await
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Records the lag of `groups` now in the console's history; a group no broker reports lag for
/// gets no sample (nothing is known, which is not zero), nor does any group when a broker failed
/// (its share would be missing from the sum).
fn sample_lag(console: &Console, groups: &[&str], lag: &[Result<Value, ApiError>]) {
    if lag.is_empty() || lag.iter().any(Result::is_err) {
        return;
    }
    let summary = lag::summarize(lag.iter().filter_map(|answer| answer.as_ref().ok()));
    let at_ms = now_ms();
    for group in groups {
        if let Some(found) = summary.get(*group) {
            console.lag_history.record(
                group,
                lag::Sample {
                    at_ms,
                    lag_messages: found.lag_messages,
                    lag_ms: found.lag_ms,
                },
            );
        }
    }
}

async fn group_page(State(console): State<Shared>, Path(name): Path<String>, Query(params): Params) -> Response {
    let detail = console
        .nameserver
        .get_json(&format!("/api/groups/{}", encode(&name)))
        .await;
    // One call per topic of the group per broker: bounded by the group, never by the cluster.
    let topics: Vec<String> = detail
        .as_ref()
        .ok()
        .and_then(|d| d["group"]["topics"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .take(32)
        .collect();
    let group = encode(&name);
    let mut paths: Vec<(&Upstream, String)> = Vec::new();
    for broker in &console.brokers {
        for topic in &topics {
            paths.push((
                broker,
                format!("/api/broker/offsets?group={group}&topic={}", encode(topic)),
            ));
        }
    }
    let dlq_offset: u64 = param(&params, "dlq_offset").parse().unwrap_or(0);
    let dead_letters_path = format!(
        "/api/broker/dead-letters?group={group}&offset={dlq_offset}&limit={}",
        members::DEAD_LETTER_PAGE
    );
    let (offsets, lag, allocation, dead_letters) = tokio::join!(
        futures_util::future::join_all(paths.iter().map(|(broker, path)| broker.get_json(path))),
        broker_lag(&console),
        group_allocation(&console, &group, &topics),
        futures_util::future::join_all(console.brokers.iter().map(|broker| broker.get_json(&dead_letters_path))),
    );
    sample_lag(&console, &[name.as_str()], &lag);
    let history = console.lag_history.of(&name);
    let lag = console
        .brokers
        .iter()
        .map(|broker| broker.addr.clone())
        .zip(lag)
        .collect();
    html(
        page_status(&detail),
        groups::render_detail(&groups::GroupDetail {
            name: &name,
            detail,
            offsets,
            lag,
            history,
            has_brokers: !console.brokers.is_empty(),
            allocation,
            dead_letters,
            dlq_offset,
            ok: params.get("ok").map(String::as_str),
            error: params.get("error").map(String::as_str),
        }),
    )
}

/// The group's allocation per topic (at most [`ALLOCATION_TOPICS`]): every broker is asked, since
/// a broker lists only the members that heartbeat it, and the answer naming the most members is
/// shown; an error only when no broker answered.
async fn group_allocation(console: &Console, group: &str, topics: &[String]) -> Vec<Result<Value, ApiError>> {
    let asked = topics.iter().take(ALLOCATION_TOPICS).map(|topic| async move {
        let path = format!("/api/broker/allocation?group={group}&topic={}", encode(topic));
        let answers = futures_util::future::join_all(console.brokers.iter().map(|broker| broker.get_json(&path))).await;
        let members = |answer: &Value| answer["members"].as_array().map_or(0, Vec::len);
        let best = answers
            .iter()
            .filter_map(|answer| answer.as_ref().ok())
            .max_by_key(|answer| members(answer))
            .cloned();
        match best {
            Some(best) => Ok(best),
            None => answers.into_iter().next().unwrap_or_else(|| {
                Err(ApiError {
                    service: "broker".into(),
                    addr: "(none)".into(),
                    request: "GET /api/broker/allocation".into(),
                    status: None,
                    code: "not_configured".into(),
                    message: "the console knows no broker HTTP API (meridian ui --broker-http ADDR)".into(),
                    position: None,
                })
            }),
        }
    });
    futures_util::future::join_all(asked).await
}

/// Topics of one group whose allocation the group page shows.
const ALLOCATION_TOPICS: usize = 8;

async fn trace_page(State(console): State<Shared>, Query(params): Params) -> Response {
    let q = param(&params, "q");
    let offset = offset_of(&params);
    let lookup = trace::classify(q);
    let answer = match (&console.tracer, &lookup) {
        (_, trace::Lookup::Nothing) => None,
        (None, _) => Some(Err(ApiError {
            service: "tracer".into(),
            addr: "(none)".into(),
            request: "GET /api/traces".into(),
            status: None,
            code: "not_configured".into(),
            message: "the console was started without a tracer (meridian ui --tracer-http ADDR)".into(),
            position: None,
        })),
        (Some(tracer), trace::Lookup::Id(id)) => Some(tracer.get_json(&format!("/api/traces/{}", encode(id))).await),
        (Some(tracer), trace::Lookup::Key(key)) => Some(
            tracer
                .get_json(&format!(
                    "/api/traces?key={}&offset={offset}&limit={}",
                    encode(key),
                    trace::PAGE
                ))
                .await,
        ),
    };
    // The body: from the broker that stored the message (by its offset id, the one searched for
    // or the timeline's), and from the archive by SQL as the fallback, both at once.
    let offset_id = match &lookup {
        trace::Lookup::Id(id) if id.contains(':') => Some(id.clone()),
        trace::Lookup::Id(_) => answer
            .as_ref()
            .and_then(|answer| answer.as_ref().ok())
            .and_then(|timeline| timeline["offset_id"].as_str())
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
        _ => None,
    };
    let msg_id = match &lookup {
        trace::Lookup::Id(id) if !id.contains(':') => Some(id.as_str()),
        _ => None,
    };
    let archived = async {
        match (&console.query, msg_id) {
            (Some(query), Some(id)) => Some(run_sql(query, &trace::archive_sql(id)).await),
            _ => None,
        }
    };
    let from_broker = async {
        match &offset_id {
            Some(offset_id) => message_from_brokers(&console, offset_id, msg_id).await,
            None => None,
        }
    };
    let (archived, from_broker) = tokio::join!(archived, from_broker);
    let status = match &answer {
        Some(Err(error)) if error.status != Some(404) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::OK,
    };
    html(
        status,
        trace::render(&trace::TraceView {
            q,
            lookup,
            offset,
            answer,
            archived,
            from_broker,
        }),
    )
}

/// The message at `offset_id` from whichever configured broker holds it (each is asked; a broker
/// of another group answers 404): the first answer, else the failure of a broker that did not
/// answer (it may be the one holding it), else a 404. `None` without broker HTTP APIs.
async fn message_from_brokers(
    console: &Console,
    offset_id: &str,
    msg_id: Option<&str>,
) -> Option<Result<Value, ApiError>> {
    if console.brokers.is_empty() {
        return None;
    }
    let path = format!(
        "/api/broker/message?offset_id={}{}",
        encode(offset_id),
        msg_id.map(|id| format!("&msg_id={}", encode(id))).unwrap_or_default()
    );
    let answers = futures_util::future::join_all(console.brokers.iter().map(|broker| broker.get_json(&path))).await;
    let (mut not_found, mut failed) = (None, None);
    for answer in answers {
        match answer {
            Ok(message) => return Some(Ok(message)),
            Err(error) if error.status == Some(404) => {
                not_found.get_or_insert(error);
            }
            Err(error) => {
                failed.get_or_insert(error);
            }
        }
    }
    failed.or(not_found).map(Err)
}

async fn run_sql(query: &Upstream, sql: &str) -> Result<Value, ApiError> {
    query.send_json("POST", "/api/sql", &json!({ "sql": sql })).await
}

async fn sql_page(State(console): State<Shared>, Query(params): Params) -> Response {
    let text = param(&params, "q");
    let answer = match (&console.query, text.trim().is_empty()) {
        (Some(query), false) => Some(run_sql(query, text).await),
        _ => None,
    };
    let status = match &answer {
        Some(Err(error)) if error.status.is_some_and(|s| s < 500) => StatusCode::BAD_REQUEST,
        Some(Err(_)) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::OK,
    };
    html(
        status,
        sql::render(&sql::SqlView {
            sql: text,
            answer,
            unavailable: console.query.is_none(),
        }),
    )
}

async fn sql_csv(State(console): State<Shared>, Query(params): Params) -> Response {
    let text = param(&params, "q");
    let Some(query) = &console.query else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no query service is configured\n").into_response();
    };
    let body = json!({ "sql": text, "format": "csv" }).to_string().into_bytes();
    match query
        .request("POST", "/api/sql", Some(("application/json", body)))
        .await
    {
        Ok(reply) if reply.status == 200 => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"result.csv\""),
            ],
            reply.body,
        )
            .into_response(),
        Ok(reply) => {
            let parsed = serde_json::from_slice(&reply.body).ok();
            let error = query.status_error("POST /api/sql", reply.status, parsed, &reply.body);
            (StatusCode::BAD_GATEWAY, format!("{error}\n")).into_response()
        }
        Err(error) => (StatusCode::BAD_GATEWAY, format!("{error}\n")).into_response(),
    }
}

async fn forecasts_page(State(console): State<Shared>, Query(params): Params) -> Response {
    let kind = if param(&params, "kind") == "group" {
        "group"
    } else {
        "topic"
    };
    let name = param(&params, "name").trim();
    let step = match param(&params, "step") {
        step @ ("30s" | "15m" | "1h" | "1d") => step,
        _ => "1h",
    };
    let horizon: u32 = param(&params, "horizon").parse().unwrap_or(24).clamp(1, 1000);
    let (history, forecast) = match (&console.query, name.is_empty()) {
        (Some(query), false) => {
            let forecast_sql = if kind == "group" {
                format!(
                    "SELECT * FROM forecast_backlog({}, '{step}', {horizon})",
                    others::sql_string(name)
                )
            } else {
                format!(
                    "SELECT * FROM forecast_topic_volume({}, '{step}', {horizon})",
                    others::sql_string(name)
                )
            };
            let history = async {
                if kind == "topic" && step == "1h" {
                    let sql = format!(
                        "SELECT hour, messages FROM hourly_volume WHERE topic = {} ORDER BY hour",
                        others::sql_string(name)
                    );
                    Some(run_sql(query, &sql).await)
                } else {
                    None
                }
            };
            let (history, forecast) = tokio::join!(history, run_sql(query, &forecast_sql));
            (history, Some(forecast))
        }
        _ => (None, None),
    };
    html(
        StatusCode::OK,
        others::render_forecasts(&others::ForecastView {
            kind,
            name,
            step,
            horizon,
            history,
            forecast,
            unavailable: console.query.is_none(),
        }),
    )
}

async fn drills_page(State(console): State<Shared>, Query(params): Params) -> Response {
    let (drill, brokers) = tokio::join!(
        console.nameserver.get_json("/api/drill"),
        console.nameserver.get_json("/api/brokers")
    );
    html(
        page_status(&drill),
        drills::render(&drills::DrillView {
            drill,
            brokers,
            ok: params.get("ok").map(String::as_str),
            error: params.get("error").map(String::as_str),
        }),
    )
}

async fn clients_page(State(console): State<Shared>, Query(params): Params) -> Response {
    // One call to the nameserver and one per broker, whatever the number of clients.
    let (policy, clients) = tokio::join!(
        console.nameserver.get_json("/api/sdk-policy"),
        futures_util::future::join_all(
            console
                .brokers
                .iter()
                .map(|broker| broker.get_json("/api/broker/clients"))
        ),
    );
    let status = match clients.iter().find(|answer| answer.is_err()) {
        Some(failed) => page_status(failed),
        None => page_status(&policy),
    };
    let brokers = console
        .brokers
        .iter()
        .map(|broker| broker.addr.clone())
        .zip(clients)
        .collect();
    html(
        status,
        others::render_clients(&others::ClientsView {
            policy,
            brokers,
            q: param(&params, "q"),
            verdict: param(&params, "verdict"),
            offset: offset_of(&params),
        }),
    )
}

async fn alerts_page(State(console): State<Shared>, Query(params): Params) -> Response {
    let (owner, status) = (param(&params, "owner"), param(&params, "status"));
    let answer = console.nameserver.get_json(&alerts::api_path(owner, status)).await;
    html(
        page_status(&answer),
        alerts::render(&alerts::AlertsView {
            owner,
            status,
            severity: param(&params, "severity"),
            offset: offset_of(&params),
            answer,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Actions: a form POST, one call to the nameserver, then a redirect (303) back to the page with
// `ok=` or `error=`, so reloading never repeats the action.

/// A form POST from another site is refused: the console turns forms into JSON calls the
/// nameserver would refuse from a browser, so it must check the origin itself.
fn same_origin(headers: &HeaderMap) -> Result<(), Response> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (None, _) => Ok(()),
        (Some(origin), Some(host)) if origin.split_once("://").map(|(_, rest)| rest) == Some(host) => Ok(()),
        (Some(origin), _) => Err((
            StatusCode::FORBIDDEN,
            format!("refused: a form from {origin} may not change this cluster; use the console's own pages\n"),
        )
            .into_response()),
    }
}

struct Form(HashMap<String, String>);

impl Form {
    fn parse(body: &Bytes) -> Form {
        Form(decode_form(&String::from_utf8_lossy(body)).into_iter().collect())
    }

    fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", |v| v.trim())
    }

    fn optional(&self, name: &str) -> Option<String> {
        Some(self.get(name)).filter(|v| !v.is_empty()).map(str::to_owned)
    }
}

fn back(to: &str, result: Result<String, String>) -> Response {
    let join = if to.contains('?') { '&' } else { '?' };
    let location = match result {
        Ok(message) => format!("{to}{join}ok={}", encode(&message)),
        Err(message) => format!("{to}{join}error={}", encode(&message)),
    };
    Redirect::to(&location).into_response()
}

/// `broker-a=4, broker-b=4` as `{"broker-a": 4, "broker-b": 4}`.
fn parse_queues(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    let mut queues = serde_json::Map::new();
    for part in text.split([',', ' ']).filter(|p| !p.trim().is_empty()) {
        let (group, count) = part
            .split_once('=')
            .ok_or_else(|| format!("queues: {part:?} is not GROUP=COUNT; write e.g. broker-a=4, broker-b=4"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("queues: the count of {group:?} is not a number: {count:?}"))?;
        queues.insert(group.trim().to_owned(), json!(count));
    }
    Ok(queues)
}

async fn request_topic(State(console): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused;
    }
    let form = Form::parse(&body);
    let name = form.get("name").to_owned();
    let queues = match parse_queues(form.get("queues")) {
        Ok(queues) => queues,
        Err(message) => return back("/topics", Err(message)),
    };
    let mut request = json!({
        "name": name,
        "owner": form.get("owner"),
        "description": form.get("description"),
        "requested_by": form.get("requested_by"),
        "queues": queues,
    });
    if let Some(limit) = form.optional("produce_limit") {
        match limit.parse::<u32>() {
            Ok(limit) => request["produce_limit"] = json!(limit),
            Err(_) => return back("/topics", Err(format!("produce limit {limit:?} is not a whole number"))),
        }
    }
    match console.nameserver.send_json("POST", "/api/topics", &request).await {
        Ok(_) => back(
            &format!("/topics/{}", encode(&name)),
            Ok(format!("topic {name} requested; an admin approves or rejects it here")),
        ),
        Err(error) => back("/topics", Err(error.to_string())),
    }
}

async fn decide(console: &Console, kind: &str, name: &str, verb: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    if let Err(refused) = same_origin(headers) {
        return refused;
    }
    let form = Form::parse(body);
    let mut decision = json!({ "by": form.get("by") });
    if let Some(reason) = form.optional("reason") {
        decision["reason"] = json!(reason);
    }
    let page = format!("/{kind}s/{}", encode(name));
    let path = format!("/api/{kind}s/{}/{verb}", encode(name));
    match console.nameserver.send_json("POST", &path, &decision).await {
        Ok(_) => back(&page, Ok(format!("{kind} {name} {verb}d"))),
        Err(error) => back(&page, Err(error.to_string())),
    }
}

async fn approve_topic(
    State(console): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    decide(&console, "topic", &name, "approve", &headers, &body).await
}

async fn reject_topic(
    State(console): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    decide(&console, "topic", &name, "reject", &headers, &body).await
}

async fn approve_group(
    State(console): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    decide(&console, "group", &name, "approve", &headers, &body).await
}

async fn reject_group(
    State(console): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    decide(&console, "group", &name, "reject", &headers, &body).await
}

async fn limit_topic(
    State(console): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused;
    }
    let form = Form::parse(&body);
    let page = format!("/topics/{}", encode(&name));
    let mut change = json!({ "by": form.get("by") });
    if let Some(reason) = form.optional("reason") {
        change["reason"] = json!(reason);
    }
    let said = match form.optional("produce_limit") {
        None => {
            change["remove_produce_limit"] = json!(true);
            "removed".to_owned()
        }
        Some(limit) => match limit.parse::<u32>() {
            Ok(limit) => {
                change["produce_limit"] = json!(limit);
                format!("set to {limit} msg/s")
            }
            Err(_) => return back(&page, Err(format!("produce limit {limit:?} is not a whole number"))),
        },
    };
    match console
        .nameserver
        .send_json("PATCH", &format!("/api/topics/{}", encode(&name)), &change)
        .await
    {
        Ok(_) => back(&page, Ok(format!("produce limit of {name} {said}"))),
        Err(error) => back(&page, Err(error.to_string())),
    }
}

async fn reset_group(
    State(console): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused;
    }
    let form = Form::parse(&body);
    let page = format!("/groups/{}", encode(&name));
    if form.get("confirm") != name {
        return back(
            &page,
            Err(format!(
                "offsets not reset: type the group's name ({name}) in the confirmation box to reset them"
            )),
        );
    }
    let (topic, to) = (form.get("topic"), form.get("to"));
    if console.brokers.is_empty() {
        return back(
            &page,
            Err("offsets not reset: the console knows no broker HTTP API (--broker-http)".into()),
        );
    }
    let mut request = json!({ "group": name, "topic": topic, "to": to });
    let mut said = to.to_owned();
    if to == "timestamp" {
        match parse_utc(form.get("at")) {
            Ok(at_ms) => {
                request["timestamp"] = json!(at_ms);
                said = format!("{} UTC", html::time_ms(at_ms));
            }
            Err(message) => return back(&page, Err(format!("offsets not reset: {message}"))),
        }
    }
    let mut moved = 0usize;
    for broker in &console.brokers {
        match broker.send_json("POST", "/api/broker/offsets/reset", &request).await {
            Ok(answer) => moved += answer["queues"].as_array().map_or(0, Vec::len),
            Err(error) => return back(&page, Err(error.to_string())),
        }
    }
    tracing::info!(
        group = name,
        topic,
        to,
        by = form.get("by"),
        "offsets reset from the console"
    );
    back(
        &page,
        Ok(format!(
            "offsets of {name} on {topic} reset to {said} ({moved} queues); consumers continue there at their next pull"
        )),
    )
}

/// A `datetime-local` value (`2026-12-07T22:30`, `...:05`, `...:05.250`) read as UTC, in Unix ms.
fn parse_utc(text: &str) -> Result<i64, String> {
    let bad = || format!("the time {text:?} is not YYYY-MM-DDTHH:MM[:SS[.mmm]] (UTC); pick one in the time field");
    let (date, time) = text.trim().split_once(['T', ' ']).ok_or_else(bad)?;
    let mut date_parts = date.splitn(3, '-').map(str::parse::<i64>);
    let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day))) = (date_parts.next(), date_parts.next(), date_parts.next())
    else {
        return Err(bad());
    };
    let (clock, millis) = match time.split_once('.') {
        Some((clock, fraction)) => {
            let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
            (clock, digits.parse::<i64>().map_err(|_| bad())?)
        }
        None => (time, 0),
    };
    let mut clock_parts = clock.split(':').map(str::parse::<i64>);
    let (Some(Ok(hour)), Some(Ok(minute))) = (clock_parts.next(), clock_parts.next()) else {
        return Err(bad());
    };
    let second = match clock_parts.next() {
        Some(Ok(second)) => second,
        Some(Err(_)) => return Err(bad()),
        None => 0,
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + millis)
}

async fn resend_dead_letters(
    State(console): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused;
    }
    let pairs = decode_form(&String::from_utf8_lossy(&body));
    let form = Form(pairs.iter().cloned().collect());
    // Ticked boxes arrive as repeated `msg_id` fields, which the map above keeps only one of.
    let msg_ids: Vec<String> = pairs
        .into_iter()
        .filter(|(field, value)| field == "msg_id" && !value.trim().is_empty())
        .map(|(_, value)| value.trim().to_owned())
        .collect();
    let page = format!("/groups/{}", encode(&name));
    if form.get("confirm") != name {
        return back(
            &page,
            Err(format!(
                "dead letters not resent: type the group's name ({name}) in the confirmation box to resend them"
            )),
        );
    }
    if console.brokers.is_empty() {
        return back(
            &page,
            Err("dead letters not resent: the console knows no broker HTTP API (--broker-http)".into()),
        );
    }
    let request = if msg_ids.is_empty() {
        json!({ "group": name, "all": true })
    } else {
        json!({ "group": name, "msg_ids": msg_ids })
    };
    let mut resent = 0u64;
    // An id is missing only when no broker held it.
    let mut missing: Option<Vec<String>> = None;
    for broker in &console.brokers {
        match broker
            .send_json("POST", "/api/broker/dead-letters/resend", &request)
            .await
        {
            Ok(answer) => {
                resent += answer["resent"].as_u64().unwrap_or(0);
                let here: Vec<String> = answer["missing"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect();
                missing = Some(match missing {
                    None => here,
                    Some(before) => before.into_iter().filter(|id| here.contains(id)).collect(),
                });
            }
            Err(error) => return back(&page, Err(error.to_string())),
        }
    }
    tracing::info!(
        group = name,
        resent,
        by = form.get("by"),
        "dead letters resent from the console"
    );
    let missing = missing.unwrap_or_default();
    if !missing.is_empty() {
        return back(
            &page,
            Err(format!(
                "{resent} dead letters of {name} resent; no broker holds these: {}",
                missing.join(", ")
            )),
        );
    }
    back(
        &page,
        Ok(format!(
            "{resent} dead letters of {name} resent to its retry topic; its consumers get them again"
        )),
    )
}

async fn evacuate(State(console): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused;
    }
    let form = Form::parse(&body);
    let idc = form.get("idc");
    if idc.is_empty() || form.get("confirm") != idc {
        return back(
            "/drills",
            Err(format!(
                "not evacuated: type the data center's name ({idc}) in the confirmation box to evacuate it"
            )),
        );
    }
    let mut request = json!({ "idc": idc, "by": form.get("by") });
    if let Some(reason) = form.optional("reason") {
        request["reason"] = json!(reason);
    }
    match console
        .nameserver
        .send_json("POST", "/api/drill/evacuate", &request)
        .await
    {
        Ok(_) => back("/drills", Ok(format!("data center {idc} evacuated"))),
        Err(error) => back("/drills", Err(error.to_string())),
    }
}

async fn restore(State(console): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused;
    }
    let form = Form::parse(&body);
    let evacuated = match console.nameserver.get_json("/api/drill").await {
        Ok(drill) => drill["evacuated"].as_str().unwrap_or_default().to_owned(),
        Err(error) => return back("/drills", Err(error.to_string())),
    };
    let expected = format!("restore {evacuated}");
    if form.get("confirm") != expected {
        return back(
            "/drills",
            Err(format!(
                "not restored: type \"{expected}\" in the confirmation box to restore"
            )),
        );
    }
    let mut request = json!({ "by": form.get("by") });
    if let Some(reason) = form.optional("reason") {
        request["reason"] = json!(reason);
    }
    match console
        .nameserver
        .send_json("POST", "/api/drill/restore", &request)
        .await
    {
        Ok(_) => back("/drills", Ok(format!("data center {evacuated} restored"))),
        Err(error) => back("/drills", Err(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    fn unreachable_config() -> ConsoleConfig {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut config = ConsoleConfig::single(&addr, true);
        config.timeout = Duration::from_secs(2);
        config
    }

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn every_page_says_which_service_failed_instead_of_going_blank() {
        let router = router(unreachable_config());
        for path in [
            "/",
            "/topics",
            "/topics/orders",
            "/groups",
            "/groups/billing",
            "/trace?q=k",
            "/trace?q=broker-a:00000000000001F4",
            "/sql?q=SELECT+1",
            "/drills",
            "/clients",
            "/alerts",
        ] {
            let (status, body) = get(&router, path).await;
            assert!(
                status == StatusCode::BAD_GATEWAY || status == StatusCode::OK,
                "{path}: {status}"
            );
            assert!(
                body.contains("role=\"alert\"") && body.contains("did not answer"),
                "{path}: {body}"
            );
            assert!(body.contains("</html>"), "{path}");
        }
        let (_, script) = get(&router, "/assets/console.js").await;
        assert!(script.contains("data-remember"));
    }

    #[tokio::test]
    async fn a_form_from_another_site_is_refused() {
        let router = router(unreachable_config());
        let request = Request::post("/drills/restore")
            .header("host", "127.0.0.1:8080")
            .header("origin", "http://evil.example")
            .body(Body::from("confirm=restore+dc1&by=x"))
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn reset_times_are_read_as_utc() {
        for ms in [0i64, 1_796_688_000_123, 951_782_400_000, 1_765_147_230_000] {
            let text = html::time_ms(ms).replace(' ', "T");
            assert_eq!(parse_utc(&text), Ok(ms), "{text}");
        }
        assert_eq!(parse_utc("2026-12-07T22:30"), Ok(1_796_682_600_000));
        assert!(parse_utc("yesterday").unwrap_err().contains("YYYY-MM-DD"));
        assert!(parse_utc("2026-13-01T00:00").is_err());
    }

    #[test]
    fn queues_parse_from_the_form() {
        let queues = parse_queues("broker-a=4, broker-b=2").unwrap();
        assert_eq!(Value::Object(queues), json!({"broker-a": 4, "broker-b": 2}));
        assert!(parse_queues("broker-a").unwrap_err().contains("GROUP=COUNT"));
    }
}

//! The lookup API (see `docs/api.md`):
//!
//! - `GET /api/traces/{id}`: the timeline of one message, by msgId (32 hex digits) or by its
//!   broker-assigned offset id (`broker-a:00000000000001F4`).
//! - `GET /api/traces?key=K[&topic=T][&from=..][&to=..][&offset=N][&limit=N]`: the timelines of
//!   every message with key K, earliest first, a page at a time; `total` counts them all and
//!   `next_offset` names the next page (no cap: every match can be paged through).
//!
//! Times are Unix ms or RFC 3339 UTC (`2026-11-25T18:30:00Z`); `to` is exclusive.
//!
//! Authorization: when the HTTP layer authenticated the caller (a `Principal` request extension)
//! and the tracer has the cluster's ACL ([`router_with_acl`]), lookups answer only about topics
//! the caller may TRACE: a message of another topic is not found, and key lookups leave it out
//! of the page and of `total`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use meridian_proto::MessageId;
use meridian_proto::acl::{Acl, AclSource, Action, Resource};
use meridian_proto::auth::Principal;
use meridian_proto::trace::OffsetId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::TracerError;
use crate::index::{Filter, TraceIndex};
use crate::metrics::{LookupLabels, TracerMetrics};
use crate::timeline::{self, ArchiveSteps, Timeline};

/// Largest page a key lookup returns; asking for more is refused, not silently cut.
pub const MAX_PAGE: usize = 1000;
/// Page size when none is asked for.
pub const DEFAULT_PAGE: usize = 20;

#[derive(Clone)]
struct LookupState {
    index: Arc<TraceIndex>,
    metrics: Arc<TracerMetrics>,
    archive: Option<Arc<dyn ArchiveSteps>>,
    acl: Option<Arc<dyn AclSource>>,
}

/// The routes of the lookup API over `index`; timelines show archive steps when `archive` is given.
pub fn router(index: Arc<TraceIndex>, metrics: Arc<TracerMetrics>, archive: Option<Arc<dyn ArchiveSteps>>) -> Router {
    router_with_acl(index, metrics, archive, None)
}

/// [`router`], answering authenticated callers only about topics `acl` lets them TRACE.
pub fn router_with_acl(
    index: Arc<TraceIndex>,
    metrics: Arc<TracerMetrics>,
    archive: Option<Arc<dyn ArchiveSteps>>,
    acl: Option<Arc<dyn AclSource>>,
) -> Router {
    Router::new()
        .route("/api/traces", get(by_key))
        .route("/api/traces/{id}", get(by_id))
        .with_state(LookupState {
            index,
            metrics,
            archive,
            acl,
        })
}

/// Which topics a caller may TRACE: everything without an ACL or a principal.
#[derive(Clone)]
pub enum TraceAccess {
    /// No filtering (authentication off, or no ACL known).
    All,
    /// Only topics this ACL lets this principal TRACE.
    Restricted(Arc<Acl>, Principal),
}

impl TraceAccess {
    /// Whether events of `topic` may be shown.
    pub fn may_trace(&self, topic: &str) -> bool {
        match self {
            TraceAccess::All => true,
            TraceAccess::Restricted(acl, principal) => acl.allowed(principal, Action::Trace, Resource::Topic(topic)),
        }
    }

    fn of(state: &LookupState, principal: Option<Extension<Principal>>) -> TraceAccess {
        match (&state.acl, principal) {
            (Some(source), Some(Extension(principal))) => TraceAccess::Restricted(source.acl(), principal),
            _ => TraceAccess::All,
        }
    }
}

struct ApiError(TracerError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            TracerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            other => {
                let code = other.code();
                (
                    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    code.as_str(),
                )
            }
        };
        (status, Json(json!({ "error": self.0.to_string(), "code": code }))).into_response()
    }
}

impl From<TracerError> for ApiError {
    fn from(error: TracerError) -> ApiError {
        ApiError(error)
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TracerError> + Send + 'static,
) -> Result<T, TracerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| TracerError::Index(format!("lookup task failed: {error}")))?
}

/// [`lookup_id`] for a caller with `access`: a message of a topic it may not TRACE is not found
/// (the same answer as a message never traced, so its existence is not revealed).
pub fn lookup_id_as(
    index: &TraceIndex,
    id: &str,
    archive: Option<&dyn ArchiveSteps>,
    access: &TraceAccess,
) -> Result<Timeline, TracerError> {
    let timeline = lookup_id(index, id, archive)?;
    if access.may_trace(&timeline.topic) {
        Ok(timeline)
    } else {
        Err(TracerError::NotFound(format!(
            "no trace events for {id} that you may see: it was never traced, or its topic needs TRACE (`meridian acl grant user:<you> TRACE topic:<topic>`)"
        )))
    }
}

/// The timeline of a message by msgId or offset id.
pub fn lookup_id(index: &TraceIndex, id: &str, archive: Option<&dyn ArchiveSteps>) -> Result<Timeline, TracerError> {
    let msg_id = if id.contains(':') {
        let offset_id = OffsetId::parse(id).map_err(|error| TracerError::InvalidLookup(error.to_string()))?;
        let ids = index.msg_ids_by_offset_id(&offset_id)?;
        ids.into_iter().next().ok_or_else(|| {
            TracerError::NotFound(format!(
                "no message is traced at offset id {id}: it was never stored there, its Store event was not indexed yet (within 2 s of the send), or it is older than the tracer's retention"
            ))
        })?
    } else {
        MessageId::parse(id).map_err(|_| {
            TracerError::InvalidLookup(format!(
                "{id:?} is neither a msgId (32 hex digits, e.g. 01A213F8EE85600F847EED30C2D27E52) nor an offset id (BROKER:OFFSET, e.g. broker-a:00000000000001F4)"
            ))
        })?;
        id.to_ascii_uppercase()
    };
    let events = index.by_msg_id(&msg_id, &Filter::default())?;
    timeline::build(&events, archive).ok_or_else(|| {
        TracerError::NotFound(format!(
            "no trace events for msgId {msg_id}: it was never sent to a traced topic, its events are not indexed yet (within 2 s of the send), or they are older than the tracer's retention"
        ))
    })
}

async fn by_id(
    State(state): State<LookupState>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Json<Timeline>, ApiError> {
    let started = Instant::now();
    let by = if id.contains(':') { "offset_id" } else { "msg_id" };
    let access = TraceAccess::of(&state, principal);
    let (index, archive) = (state.index.clone(), state.archive.clone());
    let timeline = blocking(move || lookup_id_as(&index, &id, archive.as_deref(), &access)).await?;
    state.metrics.lookups.get_or_create(&LookupLabels { by }).inc();
    state.metrics.lookup_seconds.observe(started.elapsed().as_secs_f64());
    Ok(Json(timeline))
}

/// Query string of a key lookup.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyQuery {
    /// The message key (required).
    pub key: Option<String>,
    /// Only messages of this topic.
    pub topic: Option<String>,
    /// Only events at or after this time.
    pub from: Option<String>,
    /// Only events before this time.
    pub to: Option<String>,
    /// Messages to skip (default 0).
    pub offset: Option<usize>,
    /// Messages per page (default 20, at most 1000).
    pub limit: Option<usize>,
}

/// A page of a key lookup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyPage {
    /// The key.
    pub key: String,
    /// Messages with the key in the range, over every page.
    pub total: usize,
    /// Messages skipped before this page.
    pub offset: usize,
    /// Page size asked for.
    pub limit: usize,
    /// `offset` of the next page; absent on the last.
    pub next_offset: Option<usize>,
    /// Timelines of this page's messages, earliest first.
    pub messages: Vec<Timeline>,
}

/// Parses a time given as Unix ms or RFC 3339 UTC (`2026-11-25T18:30:00Z`, optional `.mmm`).
pub fn parse_time(name: &str, text: &str) -> Result<i64, TracerError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let invalid = || {
        TracerError::InvalidLookup(format!(
            "{name}={text:?} is not a time: give Unix ms (1795631410823) or RFC 3339 UTC (2026-11-25T18:30:10Z)"
        ))
    };
    let (date, rest) = text.split_once('T').ok_or_else(invalid)?;
    let day = crate::index::parse_day(date).ok_or_else(invalid)?;
    let rest = rest.strip_suffix('Z').ok_or_else(invalid)?;
    let (clock, millis) = match rest.split_once('.') {
        Some((clock, fraction)) if fraction.len() == 3 => (clock, fraction.parse::<i64>().map_err(|_| invalid())?),
        Some(_) => return Err(invalid()),
        None => (rest, 0),
    };
    let parts: Vec<i64> = clock
        .split(':')
        .map(|part| part.parse::<i64>().map_err(|_| invalid()))
        .collect::<Result<_, _>>()?;
    let [hours, minutes, seconds] = parts[..] else {
        return Err(invalid());
    };
    if !(0..24).contains(&hours) || !(0..60).contains(&minutes) || !(0..60).contains(&seconds) {
        return Err(invalid());
    }
    Ok(day * 86_400_000 + ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis)
}

/// Answers a key lookup.
pub fn lookup_key(
    index: &TraceIndex,
    query: &KeyQuery,
    archive: Option<&dyn ArchiveSteps>,
) -> Result<KeyPage, TracerError> {
    lookup_key_as(index, query, archive, &TraceAccess::All)
}

/// [`lookup_key`] for a caller with `access`: messages of topics it may not TRACE are left out
/// of the page and of `total`.
pub fn lookup_key_as(
    index: &TraceIndex,
    query: &KeyQuery,
    archive: Option<&dyn ArchiveSteps>,
    access: &TraceAccess,
) -> Result<KeyPage, TracerError> {
    let key = query
        .key
        .clone()
        .filter(|key| !key.is_empty())
        .ok_or_else(|| TracerError::InvalidLookup("a key lookup needs key=K (GET /api/traces?key=K)".into()))?;
    meridian_proto::validate::validate_key(&key).map_err(|error| TracerError::InvalidLookup(error.to_string()))?;
    if let Some(topic) = &query.topic {
        meridian_proto::validate::validate_topic(topic)
            .map_err(|error| TracerError::InvalidLookup(error.to_string()))?;
    }
    let from_ms = query.from.as_deref().map(|from| parse_time("from", from)).transpose()?;
    let to_ms = query.to.as_deref().map(|to| parse_time("to", to)).transpose()?;
    if let (Some(from), Some(to)) = (from_ms, to_ms)
        && from >= to
    {
        return Err(TracerError::InvalidLookup(format!(
            "the time range is empty: from ({from}) must be before to ({to})"
        )));
    }
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(TracerError::InvalidLookup(format!(
            "limit={limit} is out of range: 1 to {MAX_PAGE} messages per page; page through more with offset"
        )));
    }
    let offset = query.offset.unwrap_or(0);
    let filter = Filter {
        topic: query.topic.clone(),
        from_ms,
        to_ms,
    };
    let ids = index.msg_ids_by_key(&key, &filter)?;
    let (total, messages) = match access {
        TraceAccess::All => {
            let mut messages = Vec::new();
            for (msg_id, _) in ids.iter().skip(offset).take(limit) {
                // The whole timeline, not just the events in the range: the range picks messages.
                let events = index.by_msg_id(msg_id, &Filter::default())?;
                messages.extend(timeline::build(&events, archive));
            }
            (ids.len(), messages)
        }
        // A message's topic is known once its events are read: every match is read to count
        // and page the ones the caller may see.
        TraceAccess::Restricted(..) => {
            let (mut total, mut messages) = (0, Vec::new());
            for (msg_id, _) in &ids {
                let events = index.by_msg_id(msg_id, &Filter::default())?;
                let Some(timeline) = timeline::build(&events, archive) else {
                    continue;
                };
                if !access.may_trace(&timeline.topic) {
                    continue;
                }
                if total >= offset && messages.len() < limit {
                    messages.push(timeline);
                }
                total += 1;
            }
            (total, messages)
        }
    };
    let next = offset + limit;
    Ok(KeyPage {
        key,
        total,
        offset,
        limit,
        next_offset: (next < total).then_some(next),
        messages,
    })
}

async fn by_key(
    State(state): State<LookupState>,
    principal: Option<Extension<Principal>>,
    Query(query): Query<KeyQuery>,
) -> Result<Json<KeyPage>, ApiError> {
    let started = Instant::now();
    let access = TraceAccess::of(&state, principal);
    let (index, archive) = (state.index.clone(), state.archive.clone());
    let page = blocking(move || lookup_key_as(&index, &query, archive.as_deref(), &access)).await?;
    state.metrics.lookups.get_or_create(&LookupLabels { by: "key" }).inc();
    state.metrics.lookup_seconds.observe(started.elapsed().as_secs_f64());
    Ok(Json(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_ms_or_rfc3339_and_bad_ones_say_how() {
        assert_eq!(parse_time("from", "1795631410823").unwrap(), 1_795_631_410_823);
        let ms = parse_time("from", "2026-11-25T18:30:10.823Z").unwrap();
        assert_eq!(meridian_proto::time::format_millis(ms), "2026-11-25T18:30:10.823Z");
        assert_eq!(parse_time("to", "2026-11-25T18:30:10Z").unwrap(), ms - 823);
        for bad in [
            "yesterday",
            "2026-11-25",
            "2026-11-25T25:00:00Z",
            "2026-11-25T18:30:10+01:00",
        ] {
            let error = parse_time("from", bad).unwrap_err().to_string();
            assert!(error.contains("Unix ms") && error.contains(bad), "{error}");
        }
    }

    #[test]
    fn authorization_lookups_show_only_topics_the_caller_may_trace() {
        use crate::index::Positions;
        use meridian_proto::trace::{TraceEvent, TraceType};
        let dir = tempfile::tempdir().unwrap();
        let index = TraceIndex::open(dir.path(), 15_000_000).unwrap();
        let day = 20_417 * 86_400_000;
        let mut ids = Vec::new();
        for (offset, topic) in ["orders", "payments", "orders"].into_iter().enumerate() {
            let msg_id = MessageId::generate().to_string();
            let event = TraceEvent {
                event_id: MessageId::generate().to_string(),
                trace_type: TraceType::Pub as i32,
                timestamp: day + offset as i64,
                msg_id: msg_id.clone(),
                topic: topic.into(),
                keys: vec!["order-1".into()],
                broker_name: "broker-a".into(),
                ..TraceEvent::default()
            };
            index.add(&event, "broker-a/0", offset as u64, 0).unwrap();
            ids.push(msg_id);
        }
        index.commit(&Positions::from([("broker-a/0".to_owned(), 3)])).unwrap();
        let acl: Acl = serde_json::from_value(json!({
            "rules": [{"subject": "user:alice", "effect": "allow", "actions": ["TRACE"], "resource": "topic:ord*"}],
        }))
        .unwrap();
        let alice = TraceAccess::Restricted(Arc::new(acl.clone()), Principal::User("alice".into()));
        let bob = TraceAccess::Restricted(Arc::new(acl), Principal::User("bob".into()));
        assert_eq!(lookup_id_as(&index, &ids[0], None, &alice).unwrap().topic, "orders");
        let hidden = lookup_id_as(&index, &ids[1], None, &alice).unwrap_err();
        assert!(matches!(hidden, TracerError::NotFound(_)), "{hidden}");
        assert!(lookup_id_as(&index, &ids[1], None, &TraceAccess::All).is_ok());
        let query = KeyQuery {
            key: Some("order-1".into()),
            limit: Some(1),
            ..KeyQuery::default()
        };
        let page = lookup_key_as(&index, &query, None, &alice).unwrap();
        assert_eq!((page.total, page.next_offset), (2, Some(1)));
        assert!(page.messages.iter().all(|timeline| timeline.topic == "orders"));
        let second = KeyQuery {
            offset: Some(1),
            ..query.clone()
        };
        let page = lookup_key_as(&index, &second, None, &alice).unwrap();
        assert_eq!((page.total, page.messages.len(), page.next_offset), (2, 1, None));
        assert_eq!(page.messages[0].topic, "orders");
        let page = lookup_key_as(&index, &query, None, &bob).unwrap();
        assert_eq!((page.total, page.messages.len()), (0, 0));
        assert_eq!(lookup_key(&index, &query, None).unwrap().total, 3);
    }

    #[test]
    fn bad_lookups_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let index = TraceIndex::open(dir.path(), 15_000_000).unwrap();
        let error = lookup_id(&index, "not-a-msgid", None).unwrap_err();
        assert!(matches!(error, TracerError::InvalidLookup(_)) && error.to_string().contains("32 hex digits"));
        let error = lookup_id(&index, "broker-a:12", None).unwrap_err();
        assert!(error.to_string().contains("BROKER_NAME:OFFSET"), "{error}");
        let missing = MessageId::generate().to_string();
        assert!(matches!(
            lookup_id(&index, &missing, None),
            Err(TracerError::NotFound(_))
        ));
        let query = |key: &str, from: &str, to: &str, limit: usize| KeyQuery {
            key: Some(key.into()),
            from: Some(from.into()),
            to: Some(to.into()),
            limit: Some(limit),
            ..KeyQuery::default()
        };
        assert!(
            lookup_key(&index, &KeyQuery::default(), None)
                .unwrap_err()
                .to_string()
                .contains("needs key=K")
        );
        assert!(
            lookup_key(&index, &query("k", "2", "1", 5), None)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            lookup_key(&index, &query("k", "1", "2", 5000), None)
                .unwrap_err()
                .to_string()
                .contains("1 to 1000")
        );
        let page = lookup_key(&index, &query("k", "1", "2", 5), None).unwrap();
        assert_eq!((page.total, page.next_offset), (0, None));
    }
}

//! `POST /api/sql`: one SQL statement in, the answer out as JSON (default), CSV or Arrow IPC.
//!
//! The body is either the SQL text itself (`Content-Type: text/plain` or none) or a JSON object
//! `{"sql": "...", "format": "csv"}`; `?format=` works with either. Errors are JSON
//! `{"error": "...", "kind": "...", "position": {"line": 1, "column": 8}}` with a status that
//! says which kind: 400 bad SQL, 403 read-only, 408 timeout, 413 too many rows, 507 memory.
//! An answer without rows carries `X-Meridian-Empty-Reason`: what the archive holds and whether
//! messages not archived yet are read.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use crate::error::QueryError;
use crate::format::{self, Format};
use crate::service::QueryService;

/// Header of an answer without rows: why the service found none (see
/// [`QueryService::empty_reason`]).
pub const EMPTY_REASON: &str = "x-meridian-empty-reason";

/// The query API's routes.
pub fn router(service: Arc<QueryService>) -> Router {
    Router::new().route("/api/sql", post(sql)).with_state(service)
}

struct ApiError(QueryError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "error": self.0.to_string(),
            "kind": self.0.kind(),
            "position": self.0.position(),
        });
        (status, Json(body)).into_response()
    }
}

#[derive(Debug, Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    format: Option<String>,
}

async fn sql(
    State(service): State<Arc<QueryService>>,
    // Put there by the HTTP authentication layer; absent when authentication is off.
    principal: Option<axum::Extension<meridian_proto::auth::Principal>>,
    Query(query): Query<FormatQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let (text, body_format) = if is_json {
        let request: SqlRequest = serde_json::from_slice(&body).map_err(|error| {
            ApiError(QueryError::BadRequest(format!(
                "the JSON body must be {{\"sql\": \"...\", \"format\": \"json|csv|arrow\"}}: {error}"
            )))
        })?;
        (request.sql, request.format)
    } else {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError(QueryError::BadRequest("the SQL is not UTF-8".into())))?;
        (text, None)
    };
    let format: Format = query
        .format
        .or(body_format)
        .unwrap_or_else(|| "json".into())
        .parse()
        .map_err(ApiError)?;
    // Only the topics the caller may SQL, when the ACL is known and the caller is not a super user.
    let readable = principal.and_then(|axum::Extension(principal)| service.readable_topics(&principal));
    let answer = service.sql_over(&text, readable.as_deref()).await.map_err(ApiError)?;
    let bytes = format::encode(&answer, format).map_err(ApiError)?;
    let mut response = ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response();
    // An empty answer says why (what the archive holds, whether the live log is read).
    if answer.rows == 0
        && let Ok(reason) = header::HeaderValue::from_str(&service.empty_reason())
    {
        response.headers_mut().insert(EMPTY_REASON, reason);
    }
    Ok(response)
}

//! The admin API of users and the audit log (`/api/users`, `/api/audit`), and the record of
//! where each admin request came from.
//!
//! Users are created and rotated with a verifier the client computed (`meridian user create`
//! makes the secret, prints it once and sends only salt, iterations, `StoredKey` and `ServerKey`),
//! so no secret ever crosses this API or enters the Raft log.
//!
//! Where each admin request came from is recorded by [`crate::origin`].

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use meridian_proto::ErrorCode;
use serde::Deserialize;

use crate::error::ApiError;
use crate::service::NameserverService;
use crate::state::{AuditEntry, Command, StoredVerifier, UserView};

/// The routes of this module, merged into the admin API's router.
pub fn router() -> Router<Arc<NameserverService>> {
    Router::new()
        .route("/api/users", get(list_users).post(create_user))
        .route("/api/users/{name}", axum::routing::delete(delete_user))
        .route("/api/users/{name}/rotate", post(rotate_user))
        .route("/api/audit", get(audit))
        .route("/api/acl", get(acl))
}

/// `GET /api/acl`: the authorization model the tracer and the query service decide with.
async fn acl(State(service): State<Arc<NameserverService>>) -> Json<meridian_proto::acl::Acl> {
    Json(service.raft().read_state(|state| state.acl()))
}

/// `POST /api/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUserBody {
    name: String,
    verifier: StoredVerifier,
    by: String,
}

/// `POST /api/users/{name}/rotate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateUserBody {
    verifier: StoredVerifier,
    by: String,
}

/// `DELETE /api/users/{name}?by=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteUserQuery {
    by: String,
}

/// `GET /api/audit?after=&limit=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

const DEFAULT_AUDIT_LIMIT: usize = 1000;

async fn list_users(State(service): State<Arc<NameserverService>>) -> Json<Vec<UserView>> {
    Json(
        service
            .raft()
            .read_state(|state| crate::state::users::views(state.users())),
    )
}

async fn create_user(
    State(service): State<Arc<NameserverService>>,
    Json(body): Json<CreateUserBody>,
) -> Result<HttpResponse, ApiError> {
    let name = body.name.clone();
    service
        .command(Command::CreateUser {
            name: body.name,
            verifier: body.verifier,
            by: body.by,
            rocketmq: None,
        })
        .await?;
    Ok(user_view(&service, &name).into_response())
}

async fn rotate_user(
    State(service): State<Arc<NameserverService>>,
    Path(name): Path<String>,
    Json(body): Json<RotateUserBody>,
) -> Result<HttpResponse, ApiError> {
    service
        .command(Command::RotateUser {
            name: name.clone(),
            verifier: body.verifier,
            by: body.by,
            rocketmq: None,
        })
        .await?;
    Ok(user_view(&service, &name).into_response())
}

async fn delete_user(
    State(service): State<Arc<NameserverService>>,
    Path(name): Path<String>,
    Query(query): Query<DeleteUserQuery>,
) -> Result<HttpResponse, ApiError> {
    service.command(Command::DeleteUser { name, by: query.by }).await?;
    Ok(Json(serde_json::json!({"deleted": true})).into_response())
}

fn user_view(service: &NameserverService, name: &str) -> Json<Option<UserView>> {
    Json(service.raft().read_state(|state| {
        crate::state::users::views(state.users())
            .into_iter()
            .find(|user| user.name == name)
    }))
}

async fn audit(
    State(service): State<Arc<NameserverService>>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if limit == 0 || limit > crate::state::audit::AUDIT_LEN {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("limit {limit} is out of range: 1 to {}", crate::state::audit::AUDIT_LEN),
        ));
    }
    Ok(Json(
        service
            .raft()
            .read_state(|state| state.audit().since(query.after, limit)),
    ))
}

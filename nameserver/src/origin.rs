//! Where the admin request being served came from, for the audit log.
//!
//! [`record_origin`] is a middleware around the whole admin router: it keeps the client's
//! address for the request, and [`current_origin`] lets [`crate::service::NameserverService::write`]
//! wrap the command in [`crate::state::Command::Audited`] so the audit log says where it came
//! from. A task-local is used on purpose, not a global: it lives exactly as long as one request's
//! future.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response as HttpResponse;

use meridian_proto::auth::{NODE_USER, Principal};

use crate::state::Origin;

tokio::task_local! {
    static ORIGIN: Origin;
}

/// Where the admin request being served came from, when it came over HTTP.
pub fn current_origin() -> Option<Origin> {
    ORIGIN.try_with(Origin::clone).ok()
}

/// Middleware: runs the rest of the request with its client's address as its [`Origin`].
pub async fn record_origin(request: Request, next: Next) -> HttpResponse {
    let from = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string())
        .unwrap_or_default();
    // With `[auth]` on, the HTTP layer (`meridian_proto::http_layer`) put who logged in here.
    let user = match request.extensions().get::<Principal>() {
        Some(Principal::User(user)) => Some(user.clone()),
        Some(Principal::Node) => Some(NODE_USER.to_owned()),
        Some(Principal::Anonymous) | None => None,
    };
    ORIGIN.scope(Origin { from, user }, next.run(request)).await
}

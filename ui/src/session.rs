//! The console's session for the request being served: who is logged in, the `Authorization`
//! its calls to the APIs carry, and the CSRF field of its forms. A task-local set by
//! [`crate::login::with_session`] around each request; read by the API client
//! ([`crate::client`]) and the page frame ([`crate::html`]).

use meridian_proto::http_auth::{CSRF_FIELD, csrf_token};

/// The session of the request being served.
#[derive(Clone, Default)]
pub struct ConsoleSession {
    pub(crate) token: Option<String>,
    pub(crate) user: Option<String>,
    /// `Authorization` to send instead of the session's (the login call's Basic).
    pub(crate) authorization: Option<String>,
}

tokio::task_local! {
    // A task-local, not a global: it lives exactly as long as one request's future.
    pub(crate) static SESSION: ConsoleSession;
}

pub(crate) fn current() -> ConsoleSession {
    SESSION.try_with(ConsoleSession::clone).unwrap_or_default()
}

/// The `Authorization` value the console's calls to the APIs carry for this request.
pub fn authorization() -> Option<String> {
    let session = current();
    session
        .authorization
        .or_else(|| session.token.map(|token| format!("Bearer {token}")))
}

/// Who is logged in, for the header and the forms' `by`.
pub fn current_user() -> Option<String> {
    current().token.and(current().user)
}

/// The hidden CSRF field of a form; empty without a session.
pub fn csrf_field() -> String {
    match current().token {
        Some(token) => format!(
            "<input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">",
            csrf_token(&token)
        ),
        None => String::new(),
    }
}

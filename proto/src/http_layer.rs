//! The one axum layer that protects a Meridian HTTP router when `[auth]` is on (feature `http`):
//! every request but the open probes must authenticate, and the caller's
//! [`Principal`] goes into the request's extensions for the handlers
//! (`Option<Extension<Principal>>`). The logic lives in [`crate::http_auth`]; this file only
//! reads headers and answers.
//!
//! Start at [`protect`]. It also adds the session endpoints:
//!
//! - `POST /api/login` with `Authorization: Basic ...`: `{"token", "user", "csrf_token",
//!   "expires_in_s"}`; the token works as `Authorization: Bearer TOKEN` (and as the console's
//!   cookie) until logout, expiry or a restart of this process.
//! - `POST /api/logout` with the token (header or cookie): ends the session.
//! - `GET /api/session`: who the caller is, and the session's CSRF token.
//!
//! Open without credentials: `/metrics`, `/api/health`, `/api/nameserver/health`, `/healthz`,
//! `/login` (the console's login page) and `/assets/*` (its stylesheet and script); none carries
//! a secret. A request authenticated by the session cookie that changes state (any method but
//! GET, HEAD, OPTIONS) must carry the session's CSRF token (`csrf_token` form field or
//! `X-CSRF-Token` header), and its `Origin` or `Referer`, when present, must be this host.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth::{NODE_USER, Principal};
use crate::http_auth::{
    CSRF_FIELD, CSRF_HEADER, HttpAuthError, HttpAuthenticator, SESSION_COOKIE, check_csrf, check_origin, csrf_token,
};

/// Largest form body read to find its CSRF token (the console's forms are a few hundred bytes).
const MAX_FORM_BODY: usize = 1 << 20;

/// Paths anyone may read: probes and the console's login page with its assets.
pub fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/metrics" | "/api/health" | "/api/nameserver/health" | "/healthz" | "/api/login" | "/login"
    ) || path.starts_with("/assets/")
}

/// `router` with every route behind authentication (see the module doc), plus the session
/// endpoints. Apply it last, to the router with every route merged in.
pub fn protect(router: Router, auth: Arc<HttpAuthenticator>) -> Router {
    router
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/session", get(session_info))
        .layer(axum::middleware::from_fn_with_state(auth, require))
}

/// The name a principal acts under in audit records and answers.
pub fn principal_name(principal: &Principal) -> String {
    match principal {
        Principal::User(user) => user.clone(),
        Principal::Node => NODE_USER.to_owned(),
        Principal::Anonymous => String::new(),
    }
}

/// The value of cookie `name` in `headers`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim().to_owned())
        })
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The value of field `name` in a form-urlencoded body (CSRF tokens are hex: no decoding needed
/// beyond `+` and `%xx`, which a hex token never contains).
fn form_field<'a>(body: &'a [u8], name: &str) -> Option<&'a str> {
    std::str::from_utf8(body).ok()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then_some(value)
    })
}

/// Who sent `request`: by `Authorization` header or by session cookie. A cookie-authenticated
/// state change must also pass the CSRF and origin checks, which may need the form body: the
/// request comes back rebuilt.
async fn authenticate(auth: &Arc<HttpAuthenticator>, request: Request) -> (Request, Result<Principal, HttpAuthError>) {
    let now = Instant::now();
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let value = value.as_bytes().to_vec();
        if let Some(principal) = auth.remembered(&value, now) {
            return (request, Ok(principal));
        }
        // A Basic check derives PBKDF2 (milliseconds of CPU): off the runtime's threads.
        let checker = auth.clone();
        let result = tokio::task::spawn_blocking(move || checker.authenticate(&value, now))
            .await
            .unwrap_or(Err(HttpAuthError::Malformed("the check did not finish")));
        return (request, result);
    }
    let Some(token) = cookie(request.headers(), SESSION_COOKIE) else {
        return (request, Err(HttpAuthError::Missing));
    };
    let principal = match auth.session(&token, now) {
        Ok(principal) => principal,
        Err(error) => return (request, Err(error)),
    };
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return (request, Ok(principal));
    }
    let headers = request.headers();
    if let Err(error) = check_origin(
        header_str(headers, header::ORIGIN),
        header_str(headers, header::REFERER),
        header_str(headers, header::HOST),
    ) {
        return (request, Err(error));
    }
    if let Some(presented) = headers.get(CSRF_HEADER).and_then(|value| value.to_str().ok()) {
        let checked = check_csrf(&token, Some(presented)).map(|()| principal);
        return (request, checked);
    }
    let is_form = header_str(headers, header::CONTENT_TYPE)
        .is_some_and(|kind| kind.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return (request, Err(HttpAuthError::Csrf));
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return (Request::from_parts(parts, Body::empty()), Err(HttpAuthError::Csrf));
        }
    };
    let checked = check_csrf(&token, form_field(&bytes, CSRF_FIELD)).map(|()| principal);
    (Request::from_parts(parts, Body::from(bytes)), checked)
}

async fn require(State(auth): State<Arc<HttpAuthenticator>>, mut request: Request, next: Next) -> Response {
    // The session endpoints find the authenticator here.
    request.extensions_mut().insert(auth.clone());
    if is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let (mut request, result) = authenticate(&auth, request).await;
    match result {
        Ok(principal) => {
            request.extensions_mut().insert(auth);
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => refusal(&request, &error),
    }
}

/// The answer to a refused request: a person's browser asking for a page goes to the login page;
/// anything else gets the status and a JSON error saying how to log in.
fn refusal(request: &Request, error: &HttpAuthError) -> Response {
    let path = request.uri().path();
    let wants_page = matches!(*request.method(), Method::GET | Method::HEAD)
        && !path.starts_with("/api/")
        && header_str(request.headers(), header::ACCEPT).is_some_and(|accept| accept.contains("text/html"));
    if wants_page && error.http_status() == 401 {
        let next = request.uri().path_and_query().map(|path| path.as_str()).unwrap_or("/");
        let location = format!("/login?next={}", percent_encode(next));
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, location)],
            "log in first: /login",
        )
            .into_response();
    }
    tracing::debug!(path, status = error.http_status(), "http request refused");
    error_response(error)
}

/// The JSON error every Meridian API answers with: `{"error": {"code", "message"}}`.
pub fn error_response(error: &HttpAuthError) -> Response {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let body = serde_json::json!({ "error": { "code": error.code().as_str(), "message": error.to_string() } });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        // Bearer, not Basic: a browser shows no password dialog of its own.
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"meridian\""),
        );
    }
    response
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// `POST /api/login`: the Basic credentials (checked in full, never from the cache) become a
/// session.
async fn login(request: Request) -> Response {
    let Some(auth) = request.extensions().get::<Arc<HttpAuthenticator>>().cloned() else {
        return error_response(&HttpAuthError::Missing);
    };
    // `require` already authenticated the request; a session may not open another session.
    let basic = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes().to_vec())
        .filter(|value| value.len() > 6 && value[..6].eq_ignore_ascii_case(b"basic "));
    let Some(basic) = basic else {
        return error_response(&HttpAuthError::Malformed(
            "POST /api/login needs `Authorization: Basic base64(user:secret)`",
        ));
    };
    let now = Instant::now();
    let checker = auth.clone();
    let principal = match tokio::task::spawn_blocking(move || checker.authenticate(&basic, now)).await {
        Ok(Ok(principal)) => principal,
        Ok(Err(error)) => return error_response(&error),
        Err(_) => return error_response(&HttpAuthError::Malformed("the check did not finish")),
    };
    let session = auth.login(principal, now);
    let user = principal_name(&session.principal);
    tracing::info!(%user, "http session opened");
    axum::Json(serde_json::json!({
        "token": session.token,
        "user": user,
        "csrf_token": session.csrf_token,
        "expires_in_s": session.ttl.as_secs(),
    }))
    .into_response()
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    header_str(headers, header::AUTHORIZATION)
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
        })
        .or_else(|| cookie(headers, SESSION_COOKIE))
}

/// `POST /api/logout`.
async fn logout(request: Request) -> Response {
    let auth = request.extensions().get::<Arc<HttpAuthenticator>>().cloned();
    match (auth, session_token(request.headers())) {
        (Some(auth), Some(token)) => {
            let ended = auth.logout(&token);
            axum::Json(serde_json::json!({ "logged_out": ended })).into_response()
        }
        _ => error_response(&HttpAuthError::Malformed(
            "POST /api/logout needs the session: `Authorization: Bearer TOKEN` or the console's cookie",
        )),
    }
}

/// `GET /api/session`: who the caller is; with a session, its CSRF token.
async fn session_info(request: Request) -> Response {
    let principal = request.extensions().get::<Principal>().cloned();
    let csrf = session_token(request.headers()).map(|token| csrf_token(&token));
    axum::Json(serde_json::json!({
        "user": principal.as_ref().map(principal_name),
        "node": principal.as_ref().is_some_and(Principal::is_node),
        "csrf_token": csrf,
    }))
    .into_response()
}

//! Logging in to the console when the services have `[auth]` on: the login page, logout, the
//! session cookie, and the CSRF token every state-changing form carries.
//!
//! The console keeps no credentials of its own: `POST /login` trades the user's name and secret
//! for a session at the nameserver's `POST /api/login`, and the session token goes into the
//! `meridian_session` cookie (`HttpOnly; SameSite=Strict`, `Secure` when the page came over
//! https). Each request then runs inside [`with_session`], which forwards the token to the APIs
//! as `Authorization: Bearer` (so the audit log names the user, not the console) and gives
//! [`crate::html::by_field`] the user's name and the session's CSRF token. The services' auth layer
//! (`meridian_proto::http_layer`) checks that token and the `Origin` on every form post; this
//! module checks them too, so a console served apart from the APIs (`meridian ui`) refuses
//! forged posts by itself. Sessions belong to the process that made them: the console must talk
//! to the APIs of that process (`meridian dev` serves all of them on one listener).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use meridian_proto::http_auth::{CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, check_csrf, check_origin};

use crate::client::{Upstream, decode_form};
use crate::html::{attr, esc};
use crate::session::{ConsoleSession, SESSION, current};

/// The cookie that holds the logged-in user's name, for the header (not a credential).
pub const USER_COOKIE: &str = "meridian_user";

/// Largest form body read to check its CSRF token.
const MAX_FORM_BODY: usize = 1 << 20;

/// The value of cookie `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name && !value.is_empty()).then(|| value.trim().to_owned())
        })
}

fn forbidden(message: String) -> Response {
    (StatusCode::FORBIDDEN, format!("refused: {message}\n")).into_response()
}

/// Middleware around the console's routes: runs the request inside its session, and refuses a
/// state-changing request by cookie without the session's CSRF token or from another origin.
pub async fn with_session(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let token = cookie(headers, SESSION_COOKIE);
    let session = ConsoleSession {
        user: cookie(headers, USER_COOKIE),
        token: token.clone(),
        authorization: None,
    };
    let request = match token {
        Some(token) if request.method() == axum::http::Method::POST && request.uri().path() != "/login" => {
            let header = |name| headers.get(name).and_then(|value| value.to_str().ok());
            if let Err(error) = check_origin(header(header::ORIGIN), header(header::REFERER), header(header::HOST)) {
                return forbidden(error.to_string());
            }
            let presented = headers
                .get(CSRF_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BODY).await else {
                return forbidden("the form is larger than 1 MiB".into());
            };
            let from_form = decode_form(&String::from_utf8_lossy(&bytes))
                .into_iter()
                .find_map(|(name, value)| (name == CSRF_FIELD).then_some(value));
            if let Err(error) = check_csrf(&token, presented.or(from_form).as_deref()) {
                return forbidden(error.to_string());
            }
            Request::from_parts(parts, Body::from(bytes))
        }
        _ => request,
    };
    SESSION.scope(session, next.run(request)).await
}

/// `GET /login`: the login form.
pub async fn login_page(
    headers: HeaderMap,
    query: axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let next = safe_next(query.get("next").map(String::as_str));
    let error = query
        .get("error")
        .map(|message| crate::html::error_text(message))
        .unwrap_or_default();
    let logged_in = match cookie(&headers, USER_COOKIE) {
        Some(user) if cookie(&headers, SESSION_COOKIE).is_some() => {
            format!("<p class=\"notice\">You are logged in as {}.</p>", esc(&user))
        }
        _ => String::new(),
    };
    let body = format!(
        "{logged_in}{error}<form class=\"panel\" id=\"login\" method=\"post\" action=\"/login\"><h3>Log in</h3>\
<input type=\"hidden\" name=\"next\" value=\"{next}\">\
<label>user <input name=\"user\" required maxlength=\"64\" autocomplete=\"username\"></label>\
<label>secret <input name=\"secret\" type=\"password\" required autocomplete=\"current-password\"></label>\
<button>Log in</button></form>\
<p>Users and their secrets come from <code>meridian user create NAME</code>; <code>meridian dev --auth</code> prints the admin's.</p>",
        next = attr(&next),
    );
    Html(crate::html::page("Log in", crate::html::Nav::Login, &body)).into_response()
}

/// Only paths on this console: never an absolute URL elsewhere.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next) if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') => next.to_owned(),
        _ => "/".to_owned(),
    }
}

fn login_failed(next: &str, message: &str) -> Response {
    Redirect::to(&format!(
        "/login?next={}&error={}",
        crate::client::encode(next),
        crate::client::encode(message)
    ))
    .into_response()
}

/// `POST /login`: the name and secret become a session at the nameserver; the cookie holds it.
pub async fn login(nameserver: &Upstream, headers: &HeaderMap, body: &[u8]) -> Response {
    let header = |name| headers.get(name).and_then(|value| value.to_str().ok());
    if let Err(error) = check_origin(header(header::ORIGIN), header(header::REFERER), header(header::HOST)) {
        return forbidden(error.to_string());
    }
    let form: std::collections::HashMap<String, String> =
        decode_form(&String::from_utf8_lossy(body)).into_iter().collect();
    let next = safe_next(form.get("next").map(String::as_str));
    let user = form.get("user").map(|user| user.trim()).unwrap_or_default();
    let secret = form.get("secret").map(String::as_str).unwrap_or_default();
    if user.is_empty() || secret.is_empty() {
        return login_failed(&next, "give a user and its secret");
    }
    let session = ConsoleSession {
        authorization: Some(meridian_proto::http_auth::basic_authorization(user, secret)),
        ..ConsoleSession::default()
    };
    let answer = SESSION
        .scope(
            session,
            nameserver.send_json("POST", "/api/login", &serde_json::json!({})),
        )
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        // The nameserver's message names the user and the fix, never the secret.
        Err(error) => return login_failed(&next, &error.message),
    };
    let (Some(token), Some(user)) = (answer["token"].as_str(), answer["user"].as_str()) else {
        return login_failed(&next, "the nameserver's login answer has no token");
    };
    let secure = if header(header::ORIGIN).is_some_and(|origin| origin.starts_with("https://")) {
        "; Secure"
    } else {
        ""
    };
    let max_age = answer["expires_in_s"].as_u64().unwrap_or(3600);
    let mut response = Redirect::to(&next).into_response();
    for cookie in [
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"),
        format!(
            // User names are [A-Za-z0-9_.@-] (the nameserver's rule): safe in a cookie as they are.
            "{USER_COOKIE}={user}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ),
    ] {
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// `POST /logout`: ends the session at the nameserver and forgets the cookie.
pub async fn logout(nameserver: &Upstream) -> Response {
    if current().token.is_some()
        && let Err(error) = nameserver
            .send_json("POST", "/api/logout", &serde_json::json!({}))
            .await
    {
        tracing::warn!(error = %error, "ending the console session failed");
    }
    let mut response = Redirect::to("/login").into_response();
    for name in [SESSION_COOKIE, USER_COOKIE] {
        if let Ok(value) = format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0").parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use meridian_proto::http_auth::csrf_token;

    use super::*;
    use crate::session::{authorization, csrf_field, current_user};

    #[test]
    fn next_stays_on_this_console() {
        assert_eq!(safe_next(Some("/topics?q=a")), "/topics?q=a");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn forms_carry_the_session_csrf_token_and_the_user() {
        assert_eq!(csrf_field(), "");
        let token = "ab".repeat(32);
        let session = ConsoleSession {
            token: Some(token.clone()),
            user: Some("alice".into()),
            authorization: None,
        };
        let (field, user, authorization) =
            SESSION.sync_scope(session, || (csrf_field(), current_user(), authorization()));
        assert!(field.contains(&csrf_token(&token)), "{field}");
        assert!(!field.contains(&token));
        assert_eq!(user.as_deref(), Some("alice"));
        assert_eq!(authorization, Some(format!("Bearer {token}")));
    }
}

//! Authentication of Meridian's HTTP APIs and console when `[auth]` is on, without any HTTP
//! framework: parsing `Authorization` headers, checking a Basic secret against the user's SCRAM
//! [`Verifier`], login sessions for `Authorization: Bearer` and the console's cookie, CSRF tokens
//! and the `Origin`/`Referer` check. The axum middleware that applies all this to a router is
//! [`crate::http_layer`] (feature `http`).
//!
//! Start with [`HttpAuthenticator::authenticate`] (one `Authorization` header value in, a
//! [`Principal`] out), then [`HttpAuthenticator::login`] / [`HttpAuthenticator::session`].
//!
//! - Basic: `base64(user:secret)`, checked by deriving `ClientKey` from the secret with the
//!   verifier's salt and iterations and comparing `H(ClientKey)` to `StoredKey`. PBKDF2 is slow on
//!   purpose, so a successful check is remembered for [`BASIC_CACHE_TTL`] under an HMAC of the whole
//!   header with a key made at start (never the secret itself), together with the `StoredKey` it
//!   matched: a rotated secret or a deleted user stops working at once.
//! - Sessions: `POST /api/login` makes a random 256-bit token; the server keeps only its SHA-256,
//!   with the principal and an expiry ([`DEFAULT_SESSION_TTL`]). Sessions live in the memory of
//!   the process that made them (a restart logs everyone out; another node does not know them).
//! - CSRF: a session's CSRF token is `SHA-256("meridian csrf" || session token)`: the console can
//!   put it in its forms, a page on another site cannot learn it, and it dies with the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::digest;

use crate::auth::{
    NODE_USER, Principal, UserDirectory, Verifier, equal_in_constant_time, from_hex, hmac_sha256, random_bytes,
    salted_password, to_hex, validate_user_name,
};

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "meridian_session";
/// The form field that carries the CSRF token in the console's forms.
pub const CSRF_FIELD: &str = "csrf_token";
/// The header that carries the CSRF token for scripts.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lives after login.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a successful Basic check is remembered.
pub const BASIC_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most sessions one process keeps; the oldest go first past it.
pub const MAX_SESSIONS: usize = 10_000;
/// Most remembered Basic checks.
const MAX_CACHED: usize = 10_000;
/// Longest `Authorization` value read (a 64-character name and a long secret fit many times).
pub const MAX_AUTHORIZATION_LEN: usize = 4096;
/// Random bytes in a session token (printed as 64 hex digits).
pub const TOKEN_BYTES: usize = 32;

/// How to log in, appended to every refusal.
const HOW_TO_LOG_IN: &str = "send `Authorization: Basic base64(user:secret)` with a user made by `meridian user create`, or `Authorization: Bearer TOKEN` with a token from `POST /api/login`; the CLI does this from MERIDIAN_USER and MERIDIAN_SECRET, the console at /login";

/// Why an HTTP request was refused. No variant carries a secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpAuthError {
    /// No credentials at all.
    #[error("authentication required: this server has [auth] enabled; {HOW_TO_LOG_IN}")]
    Missing,
    /// The `Authorization` header is not one we read.
    #[error("the Authorization header is malformed: {0}; {HOW_TO_LOG_IN}")]
    Malformed(&'static str),
    /// Unknown user or wrong secret (not told apart).
    #[error(
        "authentication failed for user {user:?}: unknown user or wrong secret; check MERIDIAN_USER and MERIDIAN_SECRET, or `meridian user rotate {user}` for a new secret"
    )]
    Failed {
        /// Who tried.
        user: String,
    },
    /// The token is unknown, logged out or expired (sessions do not survive a restart).
    #[error(
        "the session token is unknown or expired (sessions last {} h and end at logout or restart); log in again with `POST /api/login` or at /login",
        DEFAULT_SESSION_TTL.as_secs() / 3600
    )]
    Session,
    /// A state-changing request by cookie without the session's CSRF token.
    #[error(
        "the form's CSRF token is missing or wrong: reload the page and submit again (scripts send the `{CSRF_HEADER}` header from `GET /api/session`)"
    )]
    Csrf,
    /// A state-changing request by cookie from another site.
    #[error("cross-site request refused: it came from {origin:?}, not from this console at {host:?}")]
    CrossSite {
        /// What `Origin` or `Referer` named.
        origin: String,
        /// This server's `Host`.
        host: String,
    },
}

impl HttpAuthError {
    /// The HTTP status: 401 for missing or bad credentials, 403 for a forged request.
    pub fn http_status(&self) -> u16 {
        match self {
            HttpAuthError::Csrf | HttpAuthError::CrossSite { .. } => 403,
            _ => 401,
        }
    }

    /// The shared error code.
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            HttpAuthError::Csrf | HttpAuthError::CrossSite { .. } => crate::ErrorCode::PermissionDenied,
            _ => crate::ErrorCode::Unauthenticated,
        }
    }
}

/// What an `Authorization` header holds.
#[derive(Clone, PartialEq, Eq)]
pub enum HttpCredential {
    /// `Basic base64(user:secret)`.
    Basic {
        /// The user (or [`NODE_USER`]).
        user: String,
        /// The secret.
        secret: String,
    },
    /// `Bearer TOKEN`, a session token.
    Bearer(String),
}

impl std::fmt::Debug for HttpCredential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpCredential::Basic { user, .. } => formatter
                .debug_struct("Basic")
                .field("user", user)
                .field("secret", &"<redacted>")
                .finish(),
            HttpCredential::Bearer(_) => formatter.write_str("Bearer(<redacted>)"),
        }
    }
}

/// Parses an `Authorization` header value: `Basic` (RFC 7617) or `Bearer` (RFC 6750), schemes
/// in any case. Never echoes the value in its error.
pub fn parse_authorization(value: &[u8]) -> Result<HttpCredential, HttpAuthError> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(HttpAuthError::Malformed("longer than 4096 bytes"));
    }
    let value = std::str::from_utf8(value).map_err(|_| HttpAuthError::Malformed("not UTF-8"))?;
    let (scheme, rest) = value.trim().split_once(' ').ok_or(HttpAuthError::Malformed(
        "expected `Basic CREDENTIALS` or `Bearer TOKEN`",
    ))?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest).ok_or(HttpAuthError::Malformed("Basic credentials are not base64"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| HttpAuthError::Malformed("Basic credentials are not UTF-8"))?;
        let (user, secret) = decoded.split_once(':').ok_or(HttpAuthError::Malformed(
            "Basic credentials have no `:` between user and secret",
        ))?;
        if user.is_empty() || secret.is_empty() {
            return Err(HttpAuthError::Malformed("Basic credentials need a user and a secret"));
        }
        Ok(HttpCredential::Basic {
            user: user.to_owned(),
            secret: secret.to_owned(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.len() != TOKEN_BYTES * 2 || !rest.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(HttpAuthError::Malformed("a Bearer token is 64 hex digits"));
        }
        Ok(HttpCredential::Bearer(rest.to_ascii_lowercase()))
    } else {
        Err(HttpAuthError::Malformed("the scheme is neither Basic nor Bearer"))
    }
}

/// The `Authorization` value for `user` and `secret` (what the CLI sends).
pub fn basic_authorization(user: &str, secret: &str) -> String {
    format!("Basic {}", base64_encode(format!("{user}:{secret}").as_bytes()))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(BASE64[((word >> (18 - 6 * index)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padding optional; `None` on anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut word = 0u32;
    let mut bits = 0u32;
    for byte in text.bytes() {
        let value = BASE64.iter().position(|&symbol| symbol == byte)? as u32;
        word = (word << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((word >> bits) as u8);
            word &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Whether `secret` is the one `verifier` was made from: `H(ClientKey) == StoredKey`.
pub fn secret_matches(verifier: &Verifier, secret: &str) -> bool {
    if verifier.check().is_err() {
        return false;
    }
    let salted = salted_password(secret.as_bytes(), &verifier.salt, verifier.iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    equal_in_constant_time(stored_key.as_ref(), &verifier.stored_key)
}

/// The CSRF token of the session whose token is `session_token`.
pub fn csrf_token(session_token: &str) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"meridian csrf\0");
    context.update(session_token.as_bytes());
    to_hex(context.finish().as_ref())
}

/// Checks a presented CSRF token against the session's.
pub fn check_csrf(session_token: &str, presented: Option<&str>) -> Result<(), HttpAuthError> {
    match presented {
        Some(presented)
            if equal_in_constant_time(csrf_token(session_token).as_bytes(), presented.trim().as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(HttpAuthError::Csrf),
    }
}

/// The `host[:port]` of an absolute URL (`Origin` or `Referer`), lowercased.
fn authority_of(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    (!authority.is_empty()).then(|| authority.to_ascii_lowercase())
}

/// The same-origin rule for state-changing requests by cookie: when `Origin` (or else `Referer`)
/// is present, its host and port must be this server's `Host`. Absent both, the CSRF token alone
/// decides (some browsers and privacy tools strip them).
pub fn check_origin(origin: Option<&str>, referer: Option<&str>, host: Option<&str>) -> Result<(), HttpAuthError> {
    let Some(claimed) = origin.or(referer) else {
        return Ok(());
    };
    let host = host.unwrap_or_default().trim().to_ascii_lowercase();
    match authority_of(claimed) {
        Some(authority) if !host.is_empty() && authority == host => Ok(()),
        _ => Err(HttpAuthError::CrossSite {
            origin: claimed.chars().take(200).collect(),
            host,
        }),
    }
}

struct CachedCheck {
    principal: Principal,
    stored_key: Vec<u8>,
    until: Instant,
}

struct Session {
    principal: Principal,
    until: Instant,
}

/// A new login session.
#[derive(Clone)]
pub struct NewSession {
    /// The bearer token (shown once, to the client that logged in).
    pub token: String,
    /// Who it belongs to.
    pub principal: Principal,
    /// Its CSRF token ([`csrf_token`]).
    pub csrf_token: String,
    /// How long it lives.
    pub ttl: Duration,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NewSession")
            .field("principal", &self.principal)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// One process's HTTP authentication: the users, the node verifier, remembered Basic checks and
/// login sessions.
pub struct HttpAuthenticator {
    node: Option<Verifier>,
    users: Arc<dyn UserDirectory>,
    cache_key: [u8; 32],
    checked: Mutex<HashMap<[u8; 32], CachedCheck>>,
    // Keyed by SHA-256 of the token: a memory dump does not give away usable tokens.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    session_ttl: Duration,
}

impl std::fmt::Debug for HttpAuthenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HttpAuthenticator")
            .field("node_credential", &self.node.is_some())
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn token_key(token: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    key
}

impl HttpAuthenticator {
    /// Users from `users`; nodes log in as [`NODE_USER`] with `node_secret`.
    pub fn new(node_secret: Option<&str>, users: Arc<dyn UserDirectory>) -> HttpAuthenticator {
        HttpAuthenticator {
            node: node_secret.map(|secret| Verifier::for_node_secret(secret.as_bytes())),
            users,
            cache_key: random_bytes::<32>(),
            checked: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            session_ttl: DEFAULT_SESSION_TTL,
        }
    }

    /// Sessions last `ttl` instead of [`DEFAULT_SESSION_TTL`].
    pub fn with_session_ttl(mut self, ttl: Duration) -> HttpAuthenticator {
        self.session_ttl = ttl;
        self
    }

    fn verifier_of(&self, user: &str) -> Option<(Verifier, Principal)> {
        if user == NODE_USER {
            return self.node.clone().map(|verifier| (verifier, Principal::Node));
        }
        validate_user_name(user).ok()?;
        self.users
            .verifier(user)
            .map(|verifier| (verifier, Principal::User(user.to_owned())))
    }

    /// Who an `Authorization` header value authenticates, when a recent check of the very same
    /// value succeeded (cheap: no PBKDF2); `None` when it must be checked in full.
    pub fn remembered(&self, authorization: &[u8], now: Instant) -> Option<Principal> {
        let key = hmac_sha256(&self.cache_key, authorization);
        let checked = lock(&self.checked);
        let entry = checked.get(&key).filter(|entry| entry.until > now)?;
        let user = match &entry.principal {
            Principal::User(user) => user.as_str(),
            Principal::Node => NODE_USER,
            Principal::Anonymous => return None,
        };
        // A rotated secret or a deleted user: the remembered check no longer holds.
        let (verifier, _) = self.verifier_of(user)?;
        equal_in_constant_time(&verifier.stored_key, &entry.stored_key).then(|| entry.principal.clone())
    }

    /// Who an `Authorization` header value authenticates. A Basic check costs a PBKDF2
    /// derivation (milliseconds) unless [`HttpAuthenticator::remembered`]: run it off the runtime.
    pub fn authenticate(&self, authorization: &[u8], now: Instant) -> Result<Principal, HttpAuthError> {
        if let Some(principal) = self.remembered(authorization, now) {
            return Ok(principal);
        }
        match parse_authorization(authorization)? {
            HttpCredential::Bearer(token) => self.session(&token, now),
            HttpCredential::Basic { user, secret } => {
                let (principal, stored_key) = self.check_secret(&user, &secret)?;
                let mut checked = lock(&self.checked);
                if checked.len() >= MAX_CACHED {
                    checked.retain(|_, entry| entry.until > now);
                    if checked.len() >= MAX_CACHED {
                        checked.clear();
                    }
                }
                checked.insert(
                    hmac_sha256(&self.cache_key, authorization),
                    CachedCheck {
                        principal: principal.clone(),
                        stored_key,
                        until: now + BASIC_CACHE_TTL,
                    },
                );
                Ok(principal)
            }
        }
    }

    /// Checks `secret` against `user`'s verifier (always in full).
    pub fn check_secret(&self, user: &str, secret: &str) -> Result<(Principal, Vec<u8>), HttpAuthError> {
        let failed = || HttpAuthError::Failed { user: user.to_owned() };
        let (verifier, principal) = self.verifier_of(user).ok_or_else(failed)?;
        if !secret_matches(&verifier, secret) {
            return Err(failed());
        }
        Ok((principal, verifier.stored_key))
    }

    /// Opens a session for `principal` (after a successful [`HttpAuthenticator::authenticate`]).
    pub fn login(&self, principal: Principal, now: Instant) -> NewSession {
        let token = to_hex(&random_bytes::<TOKEN_BYTES>());
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, session| session.until > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, session)| session.until)
                .map(|(key, _)| *key)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            token_key(&token),
            Session {
                principal: principal.clone(),
                until: now + self.session_ttl,
            },
        );
        NewSession {
            csrf_token: csrf_token(&token),
            token,
            principal,
            ttl: self.session_ttl,
        }
    }

    /// Who the session `token` belongs to, while it lasts.
    pub fn session(&self, token: &str, now: Instant) -> Result<Principal, HttpAuthError> {
        if token.len() != TOKEN_BYTES * 2 || from_hex(token).is_none() {
            return Err(HttpAuthError::Session);
        }
        let key = token_key(&token.to_ascii_lowercase());
        let mut sessions = lock(&self.sessions);
        match sessions.get(&key) {
            Some(session) if session.until > now => Ok(session.principal.clone()),
            Some(_) => {
                sessions.remove(&key);
                Err(HttpAuthError::Session)
            }
            None => Err(HttpAuthError::Session),
        }
    }

    /// Ends the session `token`; whether it existed.
    pub fn logout(&self, token: &str) -> bool {
        lock(&self.sessions)
            .remove(&token_key(&token.to_ascii_lowercase()))
            .is_some()
    }

    /// How many sessions are open (for a gauge).
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserCache;

    const ALICE_SECRET: &str = "correct horse battery staple";
    const NODE_SECRET: &str = "0123456789abcdef0123456789abcdef-node";

    fn authenticator() -> (HttpAuthenticator, Arc<UserCache>) {
        let users = Arc::new(UserCache::default());
        users.replace(HashMap::from([(
            "alice".to_owned(),
            Verifier::generate(ALICE_SECRET.as_bytes()),
        )]));
        (HttpAuthenticator::new(Some(NODE_SECRET), users.clone()), users)
    }

    #[test]
    fn base64_round_trips_and_refuses_other_alphabets() {
        for text in ["", "a", "ab", "abc", "abcd", "alice:s3cr:et", "\u{e9}t\u{e9}"] {
            let encoded = base64_encode(text.as_bytes());
            assert_eq!(base64_decode(&encoded).unwrap(), text.as_bytes(), "{encoded}");
        }
        // RFC 7617's example.
        assert_eq!(base64_encode(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(
            base64_decode("QWxhZGRpbjpvcGVuIHNlc2FtZQ").unwrap(),
            b"Aladdin:open sesame"
        );
        assert!(base64_decode("a$bc").is_none());
        assert!(base64_decode("abcde").is_none());
    }

    #[test]
    fn authorization_headers_parse_or_say_what_is_wrong_without_echoing() {
        assert_eq!(
            parse_authorization(basic_authorization("alice", "p:w").as_bytes()).unwrap(),
            HttpCredential::Basic {
                user: "alice".into(),
                secret: "p:w".into()
            }
        );
        let token = "ab".repeat(32);
        assert_eq!(
            parse_authorization(format!("bearer {token}").as_bytes()).unwrap(),
            HttpCredential::Bearer(token.clone())
        );
        let malformed = [
            "".to_owned(),
            "Basic".to_owned(),
            "Basic !!!!".to_owned(),
            format!("Basic {}", base64_encode(b"no-colon")),
            format!("Basic {}", base64_encode(b":secret-only")),
            format!("Basic {}", base64_encode(b"user-only:")),
            "Bearer short".to_owned(),
            format!("Bearer {}", "zz".repeat(32)),
            "Digest username=x".to_owned(),
            format!("Basic {}", "A".repeat(MAX_AUTHORIZATION_LEN)),
        ];
        for value in malformed {
            let error = parse_authorization(value.as_bytes()).unwrap_err();
            assert!(matches!(error, HttpAuthError::Malformed(_)), "{value}: {error}");
            assert!(error.to_string().contains("POST /api/login"), "{error}");
        }
        assert!(parse_authorization(b"Basic \xff\xfe").is_err());
        let secret_in_error = parse_authorization(format!("Basic {}", base64_encode(b"user-only-s3cret")).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(!secret_in_error.contains("s3cret"));
        assert!(
            !format!(
                "{:?}",
                parse_authorization(basic_authorization("a", "s3cret").as_bytes())
            )
            .contains("s3cret")
        );
    }

    #[test]
    fn basic_accepts_the_right_secret_and_refuses_wrong_ones_and_strangers() {
        let (auth, _) = authenticator();
        let now = Instant::now();
        assert_eq!(
            auth.authenticate(basic_authorization("alice", ALICE_SECRET).as_bytes(), now),
            Ok(Principal::User("alice".into()))
        );
        assert_eq!(
            auth.authenticate(basic_authorization("alice", "wrong").as_bytes(), now),
            Err(HttpAuthError::Failed { user: "alice".into() })
        );
        assert_eq!(
            auth.authenticate(basic_authorization("mallory", ALICE_SECRET).as_bytes(), now),
            Err(HttpAuthError::Failed { user: "mallory".into() })
        );
        assert_eq!(
            auth.authenticate(basic_authorization(NODE_USER, NODE_SECRET).as_bytes(), now),
            Ok(Principal::Node)
        );
        assert!(
            auth.authenticate(basic_authorization(NODE_USER, ALICE_SECRET).as_bytes(), now)
                .is_err()
        );
    }

    #[test]
    fn the_cache_does_not_accept_a_wrong_secret_after_a_right_one_and_forgets_rotated_secrets() {
        let (auth, users) = authenticator();
        let now = Instant::now();
        let right = basic_authorization("alice", ALICE_SECRET);
        assert!(auth.authenticate(right.as_bytes(), now).is_ok());
        assert!(auth.remembered(right.as_bytes(), now).is_some());
        let wrong = basic_authorization("alice", "correct horse battery stapl");
        assert!(auth.remembered(wrong.as_bytes(), now).is_none());
        assert!(auth.authenticate(wrong.as_bytes(), now).is_err());
        // Remembered for a short time only.
        assert!(auth.remembered(right.as_bytes(), now + BASIC_CACHE_TTL).is_none());
        // Rotation: the remembered check stops holding at once.
        users.replace(HashMap::from([(
            "alice".to_owned(),
            Verifier::generate(b"a new secret"),
        )]));
        assert!(auth.remembered(right.as_bytes(), now).is_none());
        assert!(auth.authenticate(right.as_bytes(), now).is_err());
        // Deletion too.
        assert!(
            auth.authenticate(basic_authorization("alice", "a new secret").as_bytes(), now)
                .is_ok()
        );
        users.replace(HashMap::new());
        assert!(
            auth.authenticate(basic_authorization("alice", "a new secret").as_bytes(), now)
                .is_err()
        );
    }

    #[test]
    fn sessions_work_until_logout_or_expiry() {
        let (auth, _) = authenticator();
        let auth = auth.with_session_ttl(Duration::from_secs(60));
        let now = Instant::now();
        let session = auth.login(Principal::User("alice".into()), now);
        assert_eq!(session.token.len(), 64);
        assert!(!format!("{session:?}").contains(&session.token));
        let bearer = format!("Bearer {}", session.token);
        assert_eq!(
            auth.authenticate(bearer.as_bytes(), now),
            Ok(Principal::User("alice".into()))
        );
        assert_eq!(
            auth.authenticate(format!("Bearer {}", session.token.to_uppercase()).as_bytes(), now),
            Ok(Principal::User("alice".into()))
        );
        // Expired.
        assert_eq!(
            auth.authenticate(bearer.as_bytes(), now + Duration::from_secs(60)),
            Err(HttpAuthError::Session)
        );
        // Unknown.
        assert_eq!(
            auth.authenticate(format!("Bearer {}", "0".repeat(64)).as_bytes(), now),
            Err(HttpAuthError::Session)
        );
        // Logged out.
        let other = auth.login(Principal::User("alice".into()), now);
        assert!(auth.session(&other.token, now).is_ok());
        assert!(auth.logout(&other.token));
        assert_eq!(auth.session(&other.token, now), Err(HttpAuthError::Session));
        assert!(!auth.logout(&other.token));
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let (auth, _) = authenticator();
        let now = Instant::now();
        let one = auth.login(Principal::User("alice".into()), now);
        let two = auth.login(Principal::User("alice".into()), now);
        assert_eq!(one.csrf_token, csrf_token(&one.token));
        assert!(check_csrf(&one.token, Some(&one.csrf_token)).is_ok());
        assert_eq!(check_csrf(&one.token, Some(&two.csrf_token)), Err(HttpAuthError::Csrf));
        assert_eq!(check_csrf(&one.token, None), Err(HttpAuthError::Csrf));
        assert_eq!(check_csrf(&one.token, Some("")), Err(HttpAuthError::Csrf));
        assert_ne!(one.csrf_token, one.token);
    }

    #[test]
    fn origin_and_referer_must_name_this_host_when_present() {
        let host = Some("127.0.0.1:8080");
        assert!(check_origin(None, None, host).is_ok());
        assert!(check_origin(Some("http://127.0.0.1:8080"), None, host).is_ok());
        assert!(check_origin(None, Some("http://127.0.0.1:8080/topics/a?x=1"), host).is_ok());
        assert!(check_origin(Some("https://evil.example"), None, host).is_err());
        assert!(check_origin(Some("null"), None, host).is_err());
        assert!(check_origin(Some("http://127.0.0.1:8081"), None, host).is_err());
        assert!(check_origin(None, Some("http://127.0.0.1:8080.evil.example/"), host).is_err());
        // Origin wins over Referer.
        assert!(check_origin(Some("http://evil.example"), Some("http://127.0.0.1:8080/"), host).is_err());
        let error = check_origin(Some("http://evil.example"), None, host).unwrap_err();
        assert_eq!(error.http_status(), 403);
        assert!(check_origin(Some("http://127.0.0.1:8080"), None, None).is_err());
    }
}

//! The HTTP credential parsers on arbitrary bytes ([`meridian_proto::http_auth`]): the input as an
//! `Authorization` header value through `parse_authorization` and a full `HttpAuthenticator`
//! check, as base64, and split in two as an `Origin` and a `Host` for the same-origin rule.
//! Nothing may panic; no fuzzed header may authenticate (it would have to hold alice's secret or
//! a session token, and none is opened); base64 must round-trip whatever it decodes.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use meridian_proto::auth::{UserCache, Verifier, MIN_ITERATIONS};
use meridian_proto::http_auth::{self, HttpAuthenticator, HttpCredential};

fuzz_target!(|data: &[u8]| {
    let users = UserCache::default();
    users.replace([("alice".to_owned(), Verifier::derive(b"the-secret", b"salt", MIN_ITERATIONS))].into());
    let authenticator = HttpAuthenticator::new(Some("fuzzing-node-secret-0123456789abcdef"), Arc::new(users));
    let parsed = http_auth::parse_authorization(data);
    if let Ok(HttpCredential::Basic { user, secret }) = &parsed {
        assert!(!user.is_empty() && !secret.is_empty());
    }
    // A full check costs a PBKDF2 derivation: only for inputs that parse.
    if parsed.is_ok() {
        let accepted = authenticator.authenticate(data, Instant::now());
        if let Ok(principal) = accepted {
            assert!(
                matches!(&parsed, Ok(HttpCredential::Basic { secret, .. }) if secret == "the-secret"),
                "a fuzzed header authenticated as {principal}"
            );
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(bytes) = http_auth::base64_decode(text) {
            assert_eq!(
                http_auth::base64_decode(&http_auth::base64_encode(&bytes)).as_deref(),
                Some(bytes.as_slice())
            );
        }
        let (origin, host) = text.split_at(text.len() / 2);
        if http_auth::check_origin(Some(origin), None, Some(host)).is_ok() {
            assert!(origin.contains("://"));
        }
    }
});

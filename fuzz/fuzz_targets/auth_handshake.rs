//! The login handshake's parsers and state machines on arbitrary bytes ([`meridian_proto::auth`]).
//!
//! The input is split in two: the first half decoded as a client's `AuthHello`, the second as its
//! `AuthProof`, run through a server's `Authenticator`; then the same halves as a server's
//! `AuthChallenge` and `AuthOk` through a client's `ClientHandshake`, and the whole as a stored
//! `Verifier`. Nothing may panic, and no fuzzed proof may log in (it would have to break
//! SHA-256). Challenges asking more than the minimum iterations are skipped: each costs the
//! client that many HMACs, a slowness the client bounds with `MAX_ITERATIONS`, not a bug.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use meridian_proto::auth::{
    self, AuthChallenge, AuthHello, AuthOk, AuthProof, Authenticator, ClientHandshake, Credentials, UserCache,
    Verifier,
};

fuzz_target!(|data: &[u8]| {
    let (first, second) = data.split_at(data.len() / 2);
    let users = UserCache::default();
    users.replace([("alice".to_owned(), Verifier::derive(b"secret", b"salt", auth::MIN_ITERATIONS))].into());
    let server = Authenticator::new(true, Some("fuzzing-node-secret-0123456789abcdef"), Arc::new(users));
    if let Ok(hello) = auth::decode::<AuthHello>("hello", first)
        && let Ok((handshake, challenge)) = server.challenge(hello, 0)
    {
        assert!(challenge.required);
        if let Ok(proof) = auth::decode::<AuthProof>("proof", second) {
            assert!(handshake.finish(&proof).is_err(), "a fuzzed proof logged in");
        }
    }

    let (mut client, _) = ClientHandshake::start(Credentials::new("alice", "secret"));
    if let Ok(challenge) = auth::decode::<AuthChallenge>("challenge", first)
        && challenge.iterations <= auth::MIN_ITERATIONS
        && client.respond(&challenge).is_ok()
        && let Ok(ok) = auth::decode::<AuthOk>("ok", second)
    {
        // Only a server holding alice's verifier can sign this run's fresh client nonce.
        assert!(client.verify(&ok, "fuzz").is_err(), "a fuzzed server signature was accepted");
    }

    if let Ok(verifier) = auth::decode::<Verifier>("verifier", data) {
        let _ = verifier.check();
    }
});

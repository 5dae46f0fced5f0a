//! RocketMQ 4.x AccessKey signatures, as `AclClientRPCHook` makes them and a broker with ACL
//! checks them, and the sealed copies of users' secrets that let every Meridian node check them.
//!
//! A signing client adds `AccessKey` (the user name) to a request's ext fields, then
//! `Signature` = base64(HMAC-SHA1(secret, the values of every other ext field in key order, then
//! the body)) (`AclUtils.combineRequestContent`, `AclSigner`). Clients add fields of their own
//! (`OnsChannel`, `SecurityToken`) before signing; they are signed like the rest.
//!
//! Start with [`parse_signed`] (what a request claims, the function the fuzz target drives), then
//! [`verify`]. Meridian stores only SCRAM verifiers for its own protocol, but an HMAC can only be
//! checked with the secret: a user given RocketMQ access has its secret kept sealed
//! ([`AccessKeySealer`], AES-256-GCM under a key derived from the cluster's node secret, bound to
//! the user name), so every node with the node secret can check signatures and nobody reading the
//! Raft log or a snapshot can.
//!
//! Freshness, which RocketMQ lacks: a request that carries [`TIMESTAMP`] (ms since the Unix
//! epoch, signed like every field) is refused outside [`SIGNATURE_WINDOW_MS`] of the server's
//! clock. 4.x clients send none, so their signed requests can be replayed by whoever captured
//! them; TLS on the connection closes that.

use std::collections::BTreeMap;

use base64::Engine;
use ring::{aead, hkdf, hmac};

/// A user's HMAC-SHA1 signing key ([`signing_key`]).
pub use ring::hmac::Key as SigningKey;

/// Ext field naming the user (RocketMQ's access key).
pub const ACCESS_KEY: &str = "AccessKey";
/// Ext field holding the signature.
pub const SIGNATURE: &str = "Signature";
/// Meridian's freshness field: ms since the Unix epoch. Not a RocketMQ field.
pub const TIMESTAMP: &str = "Timestamp";
/// How far a signed [`TIMESTAMP`] may be from the server's clock, either way.
pub const SIGNATURE_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Ext field old Java clients add after signing (`MixAll.UNIQUE_MSG_QUERY_FLAG`); skipped for
/// them as the Java broker does.
const UNIQUE_KEY_QUERY: &str = "_UNIQUE_KEY_QUERY";
/// Newest client version (`MQVersion` ordinal of V4_9_3) that adds [`UNIQUE_KEY_QUERY`] unsigned.
const LAST_UNSIGNED_UNIQUE_QUERY_VERSION: i32 = 400;
/// Longest access key read: a user name is at most 64 characters.
const MAX_ACCESS_KEY_LEN: usize = crate::auth::MAX_USER_NAME_LEN;
/// Bytes of an HMAC-SHA1 tag.
const TAG_LEN: usize = 20;
/// HKDF info of the key that seals RocketMQ secrets.
const SEALING_INFO: &[u8] = b"meridian rocketmq access key";
/// Prefix of a sealed secret (the format version).
const SEALED_PREFIX: &str = "v1:";

/// Why a request's signature is refused. Each names what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `AccessKey` field.
    #[error(
        "authentication required: this cluster checks RocketMQ AccessKey signatures; give the client accessKey = a Meridian user made with `meridian user create NAME --rocketmq` and secretKey = its secret"
    )]
    MissingAccessKey,
    /// An `AccessKey` that cannot be a user name.
    #[error("AccessKey {0:?} is not a user name (1 to 64 of [A-Za-z0-9_.@-])")]
    BadAccessKey(String),
    /// `AccessKey` but no usable `Signature`.
    #[error("request of user {user:?} has {problem}; the client must sign with its secretKey (AclClientRPCHook)")]
    BadSignatureField {
        /// The user.
        user: String,
        /// What is wrong with the field.
        problem: &'static str,
    },
    /// A `Timestamp` that is not ms since the epoch.
    #[error("Timestamp {0:?} is not milliseconds since the Unix epoch")]
    BadTimestamp(String),
    /// A `Timestamp` outside the window.
    #[error(
        "request of user {user:?} is signed {skew_ms} ms away from the server's clock, outside the {window_ms} ms window: check the client's clock (or drop the Timestamp field)"
    )]
    Stale {
        /// The user.
        user: String,
        /// Server time minus the request's.
        skew_ms: i64,
        /// [`SIGNATURE_WINDOW_MS`].
        window_ms: i64,
    },
    /// No such user, or one without RocketMQ access.
    #[error(
        "user {0:?} has no RocketMQ access: create it with `meridian user create NAME --rocketmq` (or give it a new secret with `meridian user rotate NAME --rocketmq`)"
    )]
    UnknownUser(String),
    /// The signature does not match.
    #[error(
        "signature of user {0:?} does not match: the client's secretKey is not this user's secret (or a proxy changed the request)"
    )]
    WrongSignature(String),
    /// The sealed secret cannot be opened.
    #[error(
        "the RocketMQ secret of user {0:?} cannot be unsealed with this node's node secret: every node needs the same [auth] node_secret_file"
    )]
    Unsealable(String),
}

/// What a signed request claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest<'a> {
    /// The user.
    pub access_key: &'a str,
    /// The HMAC-SHA1 tag, decoded.
    pub signature: [u8; TAG_LEN],
    /// The signed [`TIMESTAMP`], when the client sent one.
    pub timestamp_ms: Option<i64>,
}

/// Reads the signature fields of a request: the access key, the signature (base64 of 20 bytes)
/// and an optional timestamp. Never panics, whatever the fields hold.
pub fn parse_signed(fields: &BTreeMap<String, String>) -> Result<SignedRequest<'_>, SignatureError> {
    let access_key = fields.get(ACCESS_KEY).map(|key| key.trim()).unwrap_or("");
    if access_key.is_empty() {
        return Err(SignatureError::MissingAccessKey);
    }
    if access_key.len() > MAX_ACCESS_KEY_LEN || crate::auth::validate_user_name(access_key).is_err() {
        let shown: String = access_key.chars().take(MAX_ACCESS_KEY_LEN).collect();
        return Err(SignatureError::BadAccessKey(shown));
    }
    let bad = |problem| SignatureError::BadSignatureField {
        user: access_key.to_owned(),
        problem,
    };
    let encoded = fields.get(SIGNATURE).ok_or_else(|| bad("no Signature field"))?;
    // Base64 of 20 bytes is 28 characters; anything much longer is not a signature.
    if encoded.len() > 64 {
        return Err(bad("a Signature field too long for an HMAC-SHA1"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad("a Signature field that is not base64"))?;
    let signature: [u8; TAG_LEN] = decoded
        .try_into()
        .map_err(|_| bad("a Signature field that is not 20 bytes (HMAC-SHA1)"))?;
    let timestamp_ms = match fields.get(TIMESTAMP) {
        None => None,
        Some(text) => Some(
            text.trim()
                .parse::<i64>()
                .map_err(|_| SignatureError::BadTimestamp(text.chars().take(32).collect()))?,
        ),
    };
    Ok(SignedRequest {
        access_key,
        signature,
        timestamp_ms,
    })
}

/// The HMAC-SHA1 key of a secret (what clients call secretKey).
pub fn signing_key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret)
}

/// The tag over the values of `fields` in key order (but `Signature`, and for clients of
/// `version` ≤ 4.9.3 `_UNIQUE_KEY_QUERY`), then `body`. Hashed in place: no copy of the body.
fn tag(key: &hmac::Key, fields: &BTreeMap<String, String>, body: &[u8], version: i32) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    for (name, value) in fields {
        if name == SIGNATURE || (version <= LAST_UNSIGNED_UNIQUE_QUERY_VERSION && name == UNIQUE_KEY_QUERY) {
            continue;
        }
        context.update(value.as_bytes());
    }
    context.update(body);
    context.sign()
}

/// Signs a request as `AclClientRPCHook` does: adds `AccessKey` and `Signature` to `fields`
/// (for tests and tools; a client of `version` > 4.9.3 signs every field).
pub fn sign(fields: &mut BTreeMap<String, String>, body: &[u8], user: &str, secret: &[u8]) {
    fields.insert(ACCESS_KEY.to_owned(), user.to_owned());
    fields.remove(SIGNATURE);
    let signature = tag(&signing_key(secret), fields, body, i32::MAX);
    fields.insert(
        SIGNATURE.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
    );
}

/// Checks `signed` against the request it came from, with the user's key, at `now_ms`.
pub fn verify(
    key: &hmac::Key,
    signed: &SignedRequest<'_>,
    fields: &BTreeMap<String, String>,
    body: &[u8],
    version: i32,
    now_ms: i64,
) -> Result<(), SignatureError> {
    let expected = tag(key, fields, body, version);
    // Constant time: the difference of every byte is folded before deciding.
    let difference = expected
        .as_ref()
        .iter()
        .zip(signed.signature.iter())
        .fold(0u8, |folded, (left, right)| folded | (left ^ right));
    if difference != 0 {
        return Err(SignatureError::WrongSignature(signed.access_key.to_owned()));
    }
    if let Some(timestamp_ms) = signed.timestamp_ms {
        let skew_ms = now_ms.saturating_sub(timestamp_ms);
        if skew_ms.unsigned_abs() > SIGNATURE_WINDOW_MS.unsigned_abs() {
            return Err(SignatureError::Stale {
                user: signed.access_key.to_owned(),
                skew_ms,
                window_ms: SIGNATURE_WINDOW_MS,
            });
        }
    }
    Ok(())
}

/// Seals and opens users' RocketMQ secrets with AES-256-GCM under
/// HKDF-SHA256(node secret, info "meridian rocketmq access key"). The user name is the
/// associated data, so a sealed secret copied to another user does not open. `Debug` shows no key.
pub struct AccessKeySealer {
    key: aead::LessSafeKey,
}

impl std::fmt::Debug for AccessKeySealer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AccessKeySealer(<key redacted>)")
    }
}

impl AccessKeySealer {
    /// The sealer of a cluster, from its node secret.
    pub fn new(node_secret: &str) -> AccessKeySealer {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(node_secret.trim().as_bytes());
        let okm = prk
            .expand(&[SEALING_INFO], &aead::AES_256_GCM)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        AccessKeySealer {
            key: aead::LessSafeKey::new(aead::UnboundKey::from(okm)),
        }
    }

    /// `secret` sealed for `user`: `v1:` then hex of a random 96-bit nonce, the ciphertext and
    /// the tag.
    pub fn seal(&self, user: &str, secret: &str) -> String {
        let mut nonce = [0u8; aead::NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .expect("the system random number generator works");
        let mut sealed = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(user.as_bytes()),
                &mut sealed,
            )
            .expect("a secret is far below AES-GCM's length limit");
        let mut out = Vec::with_capacity(nonce.len() + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", crate::auth::to_hex(&out))
    }

    /// The secret `sealed` holds for `user`.
    pub fn open(&self, user: &str, sealed: &str) -> Result<String, SignatureError> {
        let unsealable = || SignatureError::Unsealable(user.to_owned());
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(crate::auth::from_hex)
            .ok_or_else(unsealable)?;
        if bytes.len() < aead::NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return Err(unsealable());
        }
        let (nonce, ciphertext) = bytes.split_at(aead::NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| unsealable())?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(user.as_bytes()), &mut buffer)
            .map_err(|_| unsealable())?;
        String::from_utf8(plain.to_vec()).map_err(|_| unsealable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    /// The content `AclUtils.combineRequestContent` hashes for a SEND_MESSAGE_V2 of ali-ons:
    /// AccessKey and OnsChannel are signed with the header fields, in key order, then the body.
    #[test]
    fn the_signature_matches_an_independent_hmac_sha1_over_the_java_content() {
        let mut request = fields(&[("b", "orders"), ("a", "pg"), ("OnsChannel", "ALIYUN")]);
        sign(&mut request, b"hello", "alice", b"s3cret");
        // Sorted keys: AccessKey, OnsChannel, a, b -> "alice" "ALIYUN" "pg" "orders", then the body.
        let content = b"aliceALIYUNpgordershello";
        let expected = hmac::sign(&signing_key(b"s3cret"), content);
        assert_eq!(
            request[SIGNATURE],
            base64::engine::general_purpose::STANDARD.encode(expected.as_ref())
        );
        let signed = parse_signed(&request).unwrap();
        assert_eq!(signed.access_key, "alice");
        assert_eq!(
            verify(&signing_key(b"s3cret"), &signed, &request, b"hello", 401, 0),
            Ok(())
        );
    }

    #[test]
    fn wrong_secrets_changed_fields_and_bodies_are_refused() {
        let mut request = fields(&[("topic", "orders")]);
        sign(&mut request, b"body", "alice", b"right");
        let signed = parse_signed(&request).unwrap();
        let key = signing_key(b"right");
        assert_eq!(
            verify(&signing_key(b"wrong"), &signed, &request, b"body", 401, 0),
            Err(SignatureError::WrongSignature("alice".into()))
        );
        assert!(verify(&key, &signed, &request, b"other body", 401, 0).is_err());
        let mut changed = request.clone();
        changed.insert("topic".into(), "payments".into());
        assert!(verify(&key, &signed, &changed, b"body", 401, 0).is_err());
        // Old Java clients add _UNIQUE_KEY_QUERY after signing: ignored for them only.
        let mut unique = request.clone();
        unique.insert(UNIQUE_KEY_QUERY.into(), "true".into());
        assert_eq!(verify(&key, &signed, &unique, b"body", 317, 0), Ok(()));
        assert!(verify(&key, &signed, &unique, b"body", 401, 0).is_err());
    }

    #[test]
    fn missing_and_malformed_signature_fields_name_the_problem() {
        assert_eq!(
            parse_signed(&fields(&[("topic", "t")])),
            Err(SignatureError::MissingAccessKey)
        );
        let missing = parse_signed(&fields(&[(ACCESS_KEY, "alice")])).unwrap_err();
        assert!(missing.to_string().contains("no Signature field"), "{missing}");
        let short = parse_signed(&fields(&[(ACCESS_KEY, "alice"), (SIGNATURE, "AAAA")])).unwrap_err();
        assert!(short.to_string().contains("not 20 bytes"), "{short}");
        let garbage = parse_signed(&fields(&[(ACCESS_KEY, "alice"), (SIGNATURE, "!!")])).unwrap_err();
        assert!(garbage.to_string().contains("not base64"), "{garbage}");
        let bad_user = parse_signed(&fields(&[(ACCESS_KEY, "al ice"), (SIGNATURE, "x")])).unwrap_err();
        assert!(matches!(bad_user, SignatureError::BadAccessKey(_)), "{bad_user}");
    }

    #[test]
    fn a_signed_timestamp_must_be_within_the_window() {
        let now = 1_700_000_000_000i64;
        let key = signing_key(b"k");
        for (timestamp, fresh) in [
            (now, true),
            (now - SIGNATURE_WINDOW_MS, true),
            (now + SIGNATURE_WINDOW_MS + 1, false),
            (now - SIGNATURE_WINDOW_MS - 1, false),
        ] {
            let mut request = fields(&[("topic", "t"), (TIMESTAMP, &timestamp.to_string())]);
            sign(&mut request, b"", "alice", b"k");
            let signed = parse_signed(&request).unwrap();
            assert_eq!(signed.timestamp_ms, Some(timestamp));
            let result = verify(&key, &signed, &request, b"", 401, now);
            assert_eq!(result.is_ok(), fresh, "{timestamp}: {result:?}");
        }
        let bad = fields(&[
            (ACCESS_KEY, "a"),
            (SIGNATURE, "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            (TIMESTAMP, "soon"),
        ]);
        assert_eq!(parse_signed(&bad), Err(SignatureError::BadTimestamp("soon".into())));
    }

    #[test]
    fn sealed_secrets_open_only_for_their_user_with_the_same_node_secret() {
        let sealer = AccessKeySealer::new("node secret of this cluster, 32+ chars");
        let sealed = sealer.seal("alice", "the secret");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("the secret"));
        assert_ne!(sealed, sealer.seal("alice", "the secret"), "fresh nonce each time");
        assert_eq!(sealer.open("alice", &sealed).unwrap(), "the secret");
        let same_cluster = AccessKeySealer::new("node secret of this cluster, 32+ chars\n");
        assert_eq!(same_cluster.open("alice", &sealed).unwrap(), "the secret");
        assert!(sealer.open("bob", &sealed).is_err(), "bound to the user");
        let other = AccessKeySealer::new("another cluster's node secret, 32+ chars");
        assert_eq!(
            other.open("alice", &sealed),
            Err(SignatureError::Unsealable("alice".into()))
        );
        assert!(sealer.open("alice", "v1:00").is_err());
        assert!(sealer.open("alice", "garbage").is_err());
    }

    proptest! {
        #[test]
        fn signatures_round_trip(
            pairs in proptest::collection::btree_map("[A-Za-z]{1,8}", ".{0,20}", 0..6),
            body in proptest::collection::vec(any::<u8>(), 0..100),
            secret in proptest::collection::vec(any::<u8>(), 1..40),
        ) {
            let mut request: BTreeMap<String, String> = pairs;
            request.remove(TIMESTAMP);
            sign(&mut request, &body, "user-1", &secret);
            let signed = parse_signed(&request).unwrap();
            prop_assert_eq!(verify(&signing_key(&secret), &signed, &request, &body, 401, 0), Ok(()));
        }

        #[test]
        fn parsing_never_panics(pairs in proptest::collection::btree_map(
            prop_oneof![Just(ACCESS_KEY.to_owned()), Just(SIGNATURE.to_owned()), Just(TIMESTAMP.to_owned()), ".{0,5}"],
            ".{0,80}", 0..5)) {
            let _ = parse_signed(&pairs);
        }
    }
}

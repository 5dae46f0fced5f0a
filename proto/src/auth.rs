//! Authentication of Meridian's framed protocol: users' secrets as SCRAM-SHA-256 verifiers
//! (RFC 5802 / RFC 7677), the per-connection handshake, and node credentials.
//!
//! Start with [`Verifier`] (what the nameservers store instead of a secret: salt, iterations,
//! `StoredKey`, `ServerKey`; a stolen verifier cannot log in), then the handshake:
//!
//! ```text
//! client                                   server
//! AuthHello {user, client_nonce}      ->
//!                                     <-   AuthChallenge {salt, iterations, server_nonce, server_time_ms}
//! AuthProof {ClientProof}             ->   (ClientProof over the auth message, which holds both nonces)
//!                                     <-   AuthOk {ServerSignature}   (the client checks it)
//! ```
//!
//! The server nonce is fresh for every connection, so a captured handshake cannot be replayed.
//! [`ClientHandshake`] and [`ServerHandshake`] are the two pure state machines; the connection
//! loop ([`crate::serve`]) runs the server side through an [`Authenticator`], and
//! [`crate::transport`] runs the client side when its config carries [`Credentials`].
//!
//! Nodes (brokers, nameservers) log in as [`NODE_USER`] with the cluster's node secret
//! (`[auth] node_secret_file`); every node derives the same verifier from that file, so it needs
//! no replicated state. Requests only nodes send ([`RequestCode::is_node_only`]) are refused from
//! anything else when authentication is on.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prost::Message;
use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};

use crate::RequestCode;

/// The user name nodes log in as with the cluster's node secret. Not a valid name for a user
/// ([`validate_user_name`] refuses `$`), so no user can take it.
pub const NODE_USER: &str = "$node";
/// Fewest PBKDF2 iterations accepted (RFC 7677's minimum).
pub const MIN_ITERATIONS: u32 = 4096;
/// Iterations of verifiers made here. Each login costs the client this many HMACs; the server
/// needs only two.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Most iterations a server may ask a client for: bounds the work a hostile server can cause.
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// Length of the nonces each side contributes.
pub const NONCE_LEN: usize = 24;
/// Length of the salts made here.
pub const SALT_LEN: usize = 16;
/// Bytes of randomness in a generated secret (printed as 64 hex digits).
pub const SECRET_BYTES: usize = 32;
/// Fewest characters of a node secret file.
pub const MIN_NODE_SECRET_LEN: usize = 32;
/// Longest user name.
pub const MAX_USER_NAME_LEN: usize = 64;

const KEY_LEN: usize = 32;

/// What a server keeps for one secret (RFC 5802 section 3): enough to check a proof, not enough
/// to make one.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Verifier {
    /// Random per secret.
    #[prost(bytes = "vec", tag = "1")]
    pub salt: Vec<u8>,
    /// PBKDF2-HMAC-SHA256 iterations.
    #[prost(uint32, tag = "2")]
    pub iterations: u32,
    /// `H(ClientKey)`.
    #[prost(bytes = "vec", tag = "3")]
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    #[prost(bytes = "vec", tag = "4")]
    pub server_key: Vec<u8>,
}

impl Verifier {
    /// The verifier of `secret` with `salt` and `iterations`.
    pub fn derive(secret: &[u8], salt: &[u8], iterations: u32) -> Verifier {
        let salted = salted_password(secret, salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        Verifier {
            salt: salt.to_vec(),
            iterations,
            stored_key: digest::digest(&digest::SHA256, &client_key).as_ref().to_vec(),
            server_key: hmac_sha256(&salted, b"Server Key").to_vec(),
        }
    }

    /// The verifier of `secret` with a fresh random salt and [`DEFAULT_ITERATIONS`].
    pub fn generate(secret: &[u8]) -> Verifier {
        Verifier::derive(secret, &random_bytes::<SALT_LEN>(), DEFAULT_ITERATIONS)
    }

    /// The verifier every node derives from the cluster's node secret: its salt comes from the
    /// secret itself, so all nodes agree without sharing state.
    pub fn for_node_secret(secret: &[u8]) -> Verifier {
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(b"meridian node salt\0");
        context.update(secret);
        let salt = context.finish();
        Verifier::derive(secret, &salt.as_ref()[..SALT_LEN], DEFAULT_ITERATIONS)
    }

    /// Whether the verifier is well formed (a stored or received one may not be).
    pub fn check(&self) -> Result<(), AuthError> {
        if self.stored_key.len() != KEY_LEN || self.server_key.len() != KEY_LEN || self.salt.is_empty() {
            return Err(AuthError::Protocol(
                "verifier keys must be 32 bytes and the salt non-empty".into(),
            ));
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&self.iterations) {
            return Err(AuthError::Protocol(format!(
                "verifier iterations {} outside {MIN_ITERATIONS}..={MAX_ITERATIONS}",
                self.iterations
            )));
        }
        Ok(())
    }
}

/// A user name and its secret, as a client or node presents them. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user (or [`NODE_USER`]).
    pub user: String,
    /// The secret, as printed by `meridian user create` or read from the node secret file.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// A user's credentials.
    pub fn new(user: impl Into<String>, secret: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            secret: secret.into(),
        }
    }

    /// A node's credentials from the cluster's node secret.
    pub fn node(secret: impl Into<String>) -> Credentials {
        Credentials::new(NODE_USER, secret)
    }
}

/// Reads and checks a node secret file (`[auth] node_secret_file`): its trimmed content is the
/// secret, at least [`MIN_NODE_SECRET_LEN`] characters.
pub fn read_node_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        format!(
            "cannot read the node secret file {}: {error}; create it with `meridian user node-secret > {}` and give every node the same file",
            path.display(),
            path.display()
        )
    })?;
    let secret = text.trim().to_owned();
    if secret.len() < MIN_NODE_SECRET_LEN {
        return Err(format!(
            "node secret file {} holds {} characters, fewer than {MIN_NODE_SECRET_LEN}; write a longer random secret (`meridian user node-secret`)",
            path.display(),
            secret.len()
        ));
    }
    Ok(secret)
}

/// The one rule for user names: 1 to 64 of `[A-Za-z0-9_.@-]`.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_USER_NAME_LEN
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'@' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?} is invalid: 1 to {MAX_USER_NAME_LEN} characters of [A-Za-z0-9_.@-]"
        ))
    }
}

/// A new strong secret: [`SECRET_BYTES`] random bytes as lowercase hex.
pub fn generate_secret() -> String {
    to_hex(&random_bytes::<SECRET_BYTES>())
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

/// The bytes of a hex string, or `None` when it is not hex of whole bytes.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The system RNG fails only when the OS has none, which no supported platform lacks.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random number generator works");
    bytes
}

pub(crate) fn salted_password(secret: &[u8], salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    let mut salted = [0u8; KEY_LEN];
    let iterations = std::num::NonZeroU32::new(iterations.max(1)).expect("at least one iteration");
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, secret, &mut salted);
    salted
}

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Compares without leaking where two byte strings differ.
pub(crate) fn equal_in_constant_time(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len() && left.iter().zip(right).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// SCRAM's `ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)`, from the salted password.
fn client_proof(salted: &[u8; KEY_LEN], auth_message: &[u8]) -> [u8; KEY_LEN] {
    let client_key = hmac_sha256(salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    let signature = hmac_sha256(stored_key.as_ref(), auth_message);
    std::array::from_fn(|index| client_key[index] ^ signature[index])
}

/// Checks a client proof against a verifier; on success, the `ServerSignature` to send back.
fn verify_proof(verifier: &Verifier, auth_message: &[u8], proof: &[u8]) -> Option<[u8; KEY_LEN]> {
    if proof.len() != KEY_LEN {
        return None;
    }
    let signature = hmac_sha256(&verifier.stored_key, auth_message);
    let client_key: [u8; KEY_LEN] = std::array::from_fn(|index| proof[index] ^ signature[index]);
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    equal_in_constant_time(stored_key.as_ref(), &verifier.stored_key)
        .then(|| hmac_sha256(&verifier.server_key, auth_message))
}

/// The bytes both sides sign: every value of the exchange, both nonces included, so a proof is
/// good for one challenge only.
pub fn auth_message(user: &str, hello: &AuthHello, challenge: &AuthChallenge) -> Vec<u8> {
    format!(
        "meridian-scram-sha-256,n={user},r={},s={},i={},r={},t={}",
        to_hex(&hello.client_nonce),
        to_hex(&challenge.salt),
        challenge.iterations,
        to_hex(&challenge.server_nonce),
        challenge.server_time_ms
    )
    .into_bytes()
}

/// [`RequestCode::AuthHello`] request: who logs in.
#[derive(Clone, PartialEq, Message)]
pub struct AuthHello {
    /// The user, or [`NODE_USER`].
    #[prost(string, tag = "1")]
    pub user: String,
    /// [`NONCE_LEN`] random bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub client_nonce: Vec<u8>,
}

/// Answer to [`AuthHello`].
#[derive(Clone, PartialEq, Message)]
pub struct AuthChallenge {
    /// False when the server does not require authentication: the client goes on without it.
    #[prost(bool, tag = "1")]
    pub required: bool,
    /// The user's salt.
    #[prost(bytes = "vec", tag = "2")]
    pub salt: Vec<u8>,
    /// The user's PBKDF2 iterations.
    #[prost(uint32, tag = "3")]
    pub iterations: u32,
    /// [`NONCE_LEN`] random bytes, fresh for this connection.
    #[prost(bytes = "vec", tag = "4")]
    pub server_nonce: Vec<u8>,
    /// The server's clock, in ms since the Unix epoch (signed with the rest).
    #[prost(uint64, tag = "5")]
    pub server_time_ms: u64,
}

/// [`RequestCode::AuthProof`] request.
#[derive(Clone, PartialEq, Message)]
pub struct AuthProof {
    /// SCRAM `ClientProof` over [`auth_message`].
    #[prost(bytes = "vec", tag = "1")]
    pub client_proof: Vec<u8>,
}

/// Answer to a valid [`AuthProof`].
#[derive(Clone, PartialEq, Message)]
pub struct AuthOk {
    /// SCRAM `ServerSignature`: proves the server holds the user's verifier.
    #[prost(bytes = "vec", tag = "1")]
    pub server_signature: Vec<u8>,
}

/// Why a login failed. No variant carries a secret, a proof or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A request came before the connection authenticated.
    #[error(
        "authentication required: this server has [auth] enabled; set MERIDIAN_USER and MERIDIAN_SECRET (or the client config's user and secret) to a user made with `meridian user create`"
    )]
    Required,
    /// Unknown user or wrong secret (not told apart, so names cannot be probed).
    #[error(
        "authentication failed for user {user:?}: unknown user or wrong secret; check MERIDIAN_USER and MERIDIAN_SECRET, or `meridian user rotate {user}` for a new secret"
    )]
    Failed {
        /// Who tried.
        user: String,
    },
    /// The server's signature did not match: it does not hold this user's verifier.
    #[error(
        "the server at {addr} could not prove it knows user {user:?}: it may be an impostor or hold an old secret; check the address"
    )]
    ServerNotVerified {
        /// The server.
        addr: String,
        /// Who logged in.
        user: String,
    },
    /// Only nodes may send this request.
    #[error(
        "request {code} is for cluster nodes only; {principal} is not a node (nodes log in with the cluster's [auth] node_secret_file)"
    )]
    NodeOnly {
        /// The request.
        code: &'static str,
        /// Who sent it.
        principal: String,
    },
    /// The exchange broke the protocol (wrong order, bad sizes).
    #[error("authentication handshake broken: {0}")]
    Protocol(String),
}

/// Who a connection authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is off on this server (or the client did not log in where it is optional).
    Anonymous,
    /// A user made with `meridian user create`.
    User(String),
    /// A cluster node, by the node secret.
    Node,
}

impl Principal {
    /// Whether this is a cluster node.
    pub fn is_node(&self) -> bool {
        matches!(self, Principal::Node)
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => formatter.write_str("an unauthenticated connection"),
            Principal::User(user) => write!(formatter, "user {user:?}"),
            Principal::Node => formatter.write_str("a cluster node"),
        }
    }
}

/// Where a server looks up users' verifiers (the nameserver's Raft state, a broker's copy of it).
pub trait UserDirectory: Send + Sync + 'static {
    /// The verifier of `user`, if it exists.
    fn verifier(&self, user: &str) -> Option<Verifier>;
}

/// A directory of users held in memory, replaced whole when the source changes (brokers: on each
/// metadata fetch).
#[derive(Default)]
pub struct UserCache {
    users: RwLock<Arc<HashMap<String, Verifier>>>,
}

impl UserCache {
    /// Replaces every user.
    pub fn replace(&self, users: HashMap<String, Verifier>) {
        *self.users.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(users);
    }

    /// How many users are known.
    pub fn len(&self) -> usize {
        self.users.read().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Whether no user is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl UserDirectory for UserCache {
    fn verifier(&self, user: &str) -> Option<Verifier> {
        self.users
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(user)
            .cloned()
    }
}

/// A server's authentication settings: whether connections must log in, the users, and the node
/// verifier.
pub struct Authenticator {
    required: bool,
    node: Option<Verifier>,
    users: Arc<dyn UserDirectory>,
    // Unknown users get a challenge with a salt made from this key, the same each time for the
    // same name, so a probe cannot tell unknown users from known ones.
    decoy_key: [u8; KEY_LEN],
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Authenticator")
            .field("required", &self.required)
            .field("node_credential", &self.node.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Settings of a server: `required` makes every connection log in first; `node_secret` lets
    /// nodes log in as [`NODE_USER`].
    pub fn new(required: bool, node_secret: Option<&str>, users: Arc<dyn UserDirectory>) -> Authenticator {
        Authenticator {
            required,
            node: node_secret.map(|secret| Verifier::for_node_secret(secret.as_bytes())),
            users,
            decoy_key: random_bytes::<KEY_LEN>(),
        }
    }

    /// Whether connections must log in before any request.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Starts a login: the challenge to send, and the state that checks the proof.
    pub fn challenge(&self, hello: AuthHello, now_ms: u64) -> Result<(ServerHandshake, AuthChallenge), AuthError> {
        if hello.client_nonce.len() != NONCE_LEN {
            return Err(AuthError::Protocol(format!(
                "the client nonce must be {NONCE_LEN} bytes"
            )));
        }
        let found = if hello.user == NODE_USER {
            self.node.clone().map(|verifier| (verifier, Principal::Node))
        } else if validate_user_name(&hello.user).is_ok() {
            self.users
                .verifier(&hello.user)
                .filter(|verifier| verifier.check().is_ok())
                .map(|verifier| (verifier, Principal::User(hello.user.clone())))
        } else {
            None
        };
        let (salt, iterations) = match &found {
            Some((verifier, _)) => (verifier.salt.clone(), verifier.iterations),
            None => (
                hmac_sha256(&self.decoy_key, hello.user.as_bytes())[..SALT_LEN].to_vec(),
                DEFAULT_ITERATIONS,
            ),
        };
        let challenge = AuthChallenge {
            required: true,
            salt,
            iterations,
            server_nonce: random_bytes::<NONCE_LEN>().to_vec(),
            server_time_ms: now_ms,
        };
        let auth_message = auth_message(&hello.user, &hello, &challenge);
        Ok((
            ServerHandshake {
                user: hello.user,
                found,
                auth_message,
            },
            challenge,
        ))
    }
}

/// The server's side of one login, between the challenge and the proof.
pub struct ServerHandshake {
    user: String,
    found: Option<(Verifier, Principal)>,
    auth_message: Vec<u8>,
}

impl ServerHandshake {
    /// Checks the client's proof: who logged in and the answer that proves the server to it.
    pub fn finish(self, proof: &AuthProof) -> Result<(Principal, AuthOk), AuthError> {
        let failed = || AuthError::Failed {
            user: self.user.clone(),
        };
        let (verifier, principal) = self.found.as_ref().ok_or_else(failed)?;
        let signature = verify_proof(verifier, &self.auth_message, &proof.client_proof).ok_or_else(failed)?;
        Ok((
            principal.clone(),
            AuthOk {
                server_signature: signature.to_vec(),
            },
        ))
    }
}

/// The client's side of one login.
pub struct ClientHandshake {
    credentials: Credentials,
    hello: AuthHello,
    expected_signature: Option<[u8; KEY_LEN]>,
}

impl ClientHandshake {
    /// Starts a login: the hello to send.
    pub fn start(credentials: Credentials) -> (ClientHandshake, AuthHello) {
        let hello = AuthHello {
            user: credentials.user.clone(),
            client_nonce: random_bytes::<NONCE_LEN>().to_vec(),
        };
        (
            ClientHandshake {
                credentials,
                hello: hello.clone(),
                expected_signature: None,
            },
            hello,
        )
    }

    /// The proof answering `challenge`; `None` when the server does not require a login.
    pub fn respond(&mut self, challenge: &AuthChallenge) -> Result<Option<AuthProof>, AuthError> {
        if !challenge.required {
            return Ok(None);
        }
        if challenge.server_nonce.len() != NONCE_LEN || challenge.salt.is_empty() {
            return Err(AuthError::Protocol("the server's challenge is malformed".into()));
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&challenge.iterations) {
            return Err(AuthError::Protocol(format!(
                "the server asks for {} iterations, outside {MIN_ITERATIONS}..={MAX_ITERATIONS}",
                challenge.iterations
            )));
        }
        let salted = salted_password(
            self.credentials.secret.as_bytes(),
            &challenge.salt,
            challenge.iterations,
        );
        let auth_message = auth_message(&self.credentials.user, &self.hello, challenge);
        let server_key = hmac_sha256(&salted, b"Server Key");
        self.expected_signature = Some(hmac_sha256(&server_key, &auth_message));
        Ok(Some(AuthProof {
            client_proof: client_proof(&salted, &auth_message).to_vec(),
        }))
    }

    /// Checks the server's signature.
    pub fn verify(&self, ok: &AuthOk, addr: &str) -> Result<(), AuthError> {
        match &self.expected_signature {
            Some(expected) if equal_in_constant_time(expected, &ok.server_signature) => Ok(()),
            _ => Err(AuthError::ServerNotVerified {
                addr: addr.to_owned(),
                user: self.credentials.user.clone(),
            }),
        }
    }
}

impl RequestCode {
    /// Requests only cluster nodes send (replication, Raft, broker registration): refused from
    /// users when authentication is on.
    pub fn is_node_only(self) -> bool {
        matches!(
            self,
            RequestCode::ReplicaFetch
                | RequestCode::RaftAppend
                | RequestCode::RaftVote
                | RequestCode::RaftSnapshot
                | RequestCode::BrokerHeartbeat
                | RequestCode::RegisterBroker
                | RequestCode::BrokerMetadata
        )
    }

    /// The two requests of the login handshake.
    pub fn is_auth(self) -> bool {
        matches!(self, RequestCode::AuthHello | RequestCode::AuthProof)
    }
}

/// Decodes a handshake message, naming it in the error (for servers and the fuzz target).
pub fn decode<M: Message + Default>(what: &str, body: &[u8]) -> Result<M, AuthError> {
    M::decode(body).map_err(|error| AuthError::Protocol(format!("cannot decode the {what}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        from_hex(text).unwrap()
    }

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn scram_math_matches_the_rfc_7677_test_vector() {
        let salt = hex("5b6d99689d12358eeca04b141236fa81");
        let auth_message = b"n=user,r=rOprNGfwEbeRWgbNEkqO,\
r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let salted = salted_password(b"pencil", &salt, 4096);
        let proof = client_proof(&salted, auth_message);
        assert_eq!(
            to_hex(&proof),
            "747cdb65aa56224e2352137e52d7bdcad6a0f738df30782caa69a2cfb0277554"
        );
        let verifier = Verifier::derive(b"pencil", &salt, 4096);
        let signature = verify_proof(&verifier, auth_message, &proof).expect("the RFC's proof verifies");
        // v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=
        assert_eq!(
            to_hex(&signature),
            "eabae24d1062db75a9451ff0b6ea7e98c8546549ff741e672d3251b2397de46e"
        );
        let mut wrong = proof;
        wrong[0] ^= 1;
        assert!(verify_proof(&verifier, auth_message, &wrong).is_none());
    }

    fn authenticator(users: &[(&str, &str)]) -> Authenticator {
        let cache = UserCache::default();
        cache.replace(
            users
                .iter()
                .map(|(user, secret)| (user.to_string(), Verifier::generate(secret.as_bytes())))
                .collect(),
        );
        Authenticator::new(true, Some("a-node-secret-of-at-least-32-characters"), Arc::new(cache))
    }

    fn login(server: &Authenticator, credentials: Credentials) -> Result<Principal, AuthError> {
        let (mut client, hello) = ClientHandshake::start(credentials);
        let (handshake, challenge) = server.challenge(hello, 1)?;
        let proof = client.respond(&challenge)?.expect("required");
        let (principal, ok) = handshake.finish(&proof)?;
        client.verify(&ok, "test")?;
        Ok(principal)
    }

    #[test]
    fn users_and_nodes_log_in_and_wrong_secrets_or_unknown_users_do_not() {
        let server = authenticator(&[("alice", "s3cret")]);
        assert_eq!(
            login(&server, Credentials::new("alice", "s3cret")),
            Ok(Principal::User("alice".into()))
        );
        assert_eq!(
            login(&server, Credentials::node("a-node-secret-of-at-least-32-characters")),
            Ok(Principal::Node)
        );
        for credentials in [
            Credentials::new("alice", "not-alices-secret-42"),
            Credentials::new("bob", "s3cret"),
            Credentials::node("another-node-secret-of-32-characters!"),
        ] {
            let error = login(&server, credentials.clone()).unwrap_err();
            assert!(matches!(error, AuthError::Failed { .. }), "{error}");
            assert!(!error.to_string().contains(&credentials.secret));
        }
    }

    #[test]
    fn a_captured_proof_does_not_answer_another_challenge() {
        let server = authenticator(&[("alice", "s3cret")]);
        let (mut client, hello) = ClientHandshake::start(Credentials::new("alice", "s3cret"));
        let (_, challenge) = server.challenge(hello.clone(), 1).unwrap();
        let captured = client.respond(&challenge).unwrap().unwrap();
        // The attacker replays the same hello and proof; the server's nonce is new.
        let (handshake, _) = server.challenge(hello, 1).unwrap();
        assert!(matches!(handshake.finish(&captured), Err(AuthError::Failed { .. })));
    }

    #[test]
    fn unknown_users_get_a_stable_decoy_salt_and_a_client_checks_the_server() {
        let server = authenticator(&[]);
        let hello = |user: &str| AuthHello {
            user: user.into(),
            client_nonce: vec![7; NONCE_LEN],
        };
        let (_, first) = server.challenge(hello("ghost"), 1).unwrap();
        let (_, second) = server.challenge(hello("ghost"), 1).unwrap();
        assert_eq!(first.salt, second.salt);
        assert_ne!(first.server_nonce, second.server_nonce);

        let (mut client, _) = ClientHandshake::start(Credentials::new("alice", "s3cret"));
        client.respond(&first).unwrap();
        let forged = AuthOk {
            server_signature: vec![0; KEY_LEN],
        };
        assert!(matches!(
            client.verify(&forged, "x"),
            Err(AuthError::ServerNotVerified { .. })
        ));
        let greedy = AuthChallenge {
            iterations: u32::MAX,
            ..first
        };
        assert!(matches!(client.respond(&greedy), Err(AuthError::Protocol(_))));
    }

    #[test]
    fn names_hex_and_debug_output_follow_their_rules() {
        assert!(validate_user_name("alice.ops@team-1").is_ok());
        for bad in ["", "$node", "a b", &"x".repeat(65)] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
        let secret = generate_secret();
        assert_eq!(secret.len(), 64);
        assert_eq!(from_hex(&to_hex(b"\x00\xffab")), Some(b"\x00\xffab".to_vec()));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        let shown = format!("{:?}", Credentials::new("alice", secret.clone()));
        assert!(!shown.contains(&secret));
    }
}

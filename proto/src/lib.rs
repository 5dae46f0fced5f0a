//! The contract every Meridian process shares: what crosses the wire, what lies on disk, and which
//! inputs are valid.
//!
//! - [`frame`]: the length-prefixed frame (a prost [`frame::Header`] and an opaque body) and its
//!   tokio-util [`frame::FrameCodec`]. Start reading here.
//! - [`codes`]: request codes, and the one [`codes::ErrorCode`] list that every error crossing the
//!   wire maps to (and that maps once to an HTTP status).
//! - [`messages`]: the prost bodies of each request and response.
//! - [`record`]: the on-disk message record the broker appends to its commitlog and serves to
//!   consumers byte for byte, with its CRC32C.
//! - [`properties`]: message properties (msgId, keys, tags, delay, user properties) in their
//!   compact encoded form.
//! - [`validate`]: one function per validation rule (names, keys, tags, sizes), used by the client,
//!   the broker and the nameserver alike.
//! - [`compress`]: LZ4 for large repetitive bodies, with a bounded decompression.
//! - [`idc`]: which data center a process is in, decided the same way everywhere; [`ack`]: when a
//!   send counts as stored in a broker group, and which survivors provably hold every acknowledged
//!   message.
//! - [`msgid`]: globally unique, time-sortable message ids; [`time`]: the wall clock
//!   ([`time::now_millis`]) and timestamps for people.
//! - [`trace`]: trace events (Pub, Store, Replicate, Deliver, SubBefore, SubAfter, ...), the
//!   system trace topic they travel on, and the check every reader of that topic applies.
//! - [`topics`]: the system topics (delay, transaction, retry, dead-letter, trace); [`delay`]:
//!   delay levels, delivery times and the delay slots; [`filter`]: tag filter expressions.
//! - [`quota`]: per-topic produce limits: their validation rule and the wait a throttled send is
//!   told.
//! - [`allocate`]: which queues of a topic each member of a consumer group consumes (RocketMQ's
//!   average allocation and the IDC-aware one every Meridian consumer runs).
//! - [`sdk`]: the SDK language and version clients report, and the policy brokers judge them by.
//! - [`throttle`]: log lines at most once per interval, with the count left out.
//! - [`remoting`]: RocketMQ 4.x's remoting frames, headers and message encodings, for the
//!   compatibility listeners.
//! - [`auth`]: users' SCRAM-SHA-256 verifiers, the per-connection login handshake and node
//!   credentials; [`http_auth`]: the same users on the HTTP APIs and console (Basic, sessions,
//!   CSRF), applied to axum routers by `http_layer` (feature `http`); `http_serve` serves those
//!   routers, with or without TLS (feature `http`).
//! - [`transport`]: the requesting side of the protocol: pipelined connections and a pool, used by
//!   clients, brokers and nameservers alike; [`serve`]: the answering side, the one connection
//!   loop of the broker and the nameserver.
#![warn(missing_docs)]

pub mod ack;
pub mod acl;
pub mod admin;
pub mod allocate;
pub mod auth;
pub mod client_stats;
pub mod codes;
pub mod compress;
pub mod delay;
pub mod filter;
pub mod frame;
pub mod http_auth;
#[cfg(feature = "http")]
pub mod http_layer;
#[cfg(feature = "http")]
pub mod http_serve;
pub mod idc;
pub mod messages;
pub mod msgid;
pub mod properties;
pub mod quota;
pub mod record;
pub mod remoting;
pub mod sdk;
pub mod serve;
pub mod throttle;
pub mod time;
pub mod tls;
pub mod topics;
pub mod trace;
pub mod transport;
pub mod validate;

pub use codes::{ErrorCode, RequestCode};
pub use frame::{Frame, FrameCodec, Header, PROTOCOL_VERSION};
pub use msgid::MessageId;
pub use validate::{Limits, ValidationError};

/// Version of the client SDK, reported to brokers so they can check it against the cluster's policy.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

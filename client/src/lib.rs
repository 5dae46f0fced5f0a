//! The Meridian client SDK: producers, pull and push consumers, and admin calls, speaking the
//! framed protocol of [`meridian_proto`] to brokers.
//!
//! - [`Producer`] sends [`Message`]s (sync, async, one-way, batch), choosing queues round robin
//!   and retrying transient failures. Start reading here.
//! - [`PushConsumer`] joins a consumer group, shares the topic's queues with the other members
//!   ([`allocate_averagely`]) and hands each message to a handler, in order per queue, at least once.
//! - [`PullConsumer`] is the low level: pull a queue at an offset, read and commit offsets.
//! - [`Admin`] creates topics and reads routes; [`NameserverAdmin`] sends a cluster's admin reads
//!   and writes (topics, groups, brokers, drills, the SDK policy) to its nameservers.
//! - Underneath: [`ConnectionPool`] of pipelined [`Connection`]s, and a [`RouteSource`] that says
//!   where a topic lives: [`StaticRoute`] asks one standalone broker, [`NameserverRoute`] asks a
//!   cluster's nameservers. Each client type is built from either (`new` / `start` take a route
//!   source; `with_nameservers` / `start_with_nameservers` take nameserver addresses).
//!
//! Every call fails with a [`ClientError`] that names the problem and the fix; messages are
//! validated with the broker's own rules before anything is sent.
#![warn(missing_docs)]

mod admin;
mod consumer;
mod error;
mod fault;
mod idc;
mod message;
mod nameserver_admin;
mod producer;
mod push;
mod route;
#[cfg(test)]
mod test_support;
mod trace;
mod transaction;

pub use admin::{Admin, DeadLetter, ResetTo};
pub use consumer::{PullConsumer, PullResult};
pub use error::ClientError;
/// Queue allocation lives in `proto` (the broker's console endpoints run it too); re-exported here.
pub use meridian_proto::allocate::{
    ALLOCATION, Deployment, IdcAllocation, QueueId, allocate_averagely, allocate_by_idc,
};
pub use meridian_proto::idc::IdcSettings;
/// Connection and request settings shared by producers, consumers and admin.
pub use meridian_proto::transport::TransportConfig as ClientConfig;
pub use meridian_proto::transport::{Connection, ConnectionPool, TransportError};
pub use message::{Delay, Message, SendResult};
pub use nameserver_admin::NameserverAdmin;
pub use producer::{Locality, Producer, ProducerConfig};
pub use push::{ConsumeFrom, ConsumeMode, ConsumeResult, ConsumerConfig, PushConsumer};
pub use route::{IdcLookupFuture, NameserverRoute, RouteSource, StaticRoute};
pub use transaction::{
    TransactionCheckView, TransactionListener, TransactionOutcome, TransactionProducer, TransactionProducerConfig,
    TransactionSendResult,
};

/// The wire protocol crate, re-exported so users need no second dependency.
pub use meridian_proto as proto;
pub use meridian_proto::messages::{BrokerRoute, PullStatus, TopicRoute};
pub use meridian_proto::record::StoredMessage;
pub use meridian_proto::{ErrorCode, Limits, ValidationError};

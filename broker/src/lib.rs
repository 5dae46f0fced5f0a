//! The broker: stores messages durably and serves producers and consumers.
//!
//! - [`store::MessageStore`] is the storage engine: a segmented, memory-mapped commitlog, consume
//!   queues built from it by a dispatcher thread, consumer offsets, flushing (async, or sync with
//!   group commit) and crash recovery. Start reading at `store/mod.rs`.
//! - [`server`] accepts connections, decodes frames, and answers pipelined requests out of order.
//! - [`handlers`] turns each request into store calls, one file per request family; they share
//!   [`state::BrokerState`], answer with [`reply::Reply`] and check with [`permission`].
//!   [`groups`] tracks consumer group members.
//! - [`trace`]: every message's Pub/Store/Replicate/Deliver events (and clients' reports), batched
//!   into the system trace topic off the hot path.
//! - [`schedule`]: delayed messages wait in delay slots and are released when due; the same
//!   moves serve retries, dead letters and transactions ([`retry`], [`locks`] for orderly consumers).
//! - [`registry`]: with `nameservers` set, the broker heartbeats every nameserver, registers its
//!   topics, and serves only the topics and consumer groups they approved (a governed broker);
//!   without, it is standalone and serves anything.
//!
//! - [`http`]: the HTTP admin API (health, topics, offsets, lag, clients) and `/metrics`.
//! - [`remoting`]: the RocketMQ 4.x remoting listener, translating RocketMQ clients' requests
//!   into the native ones.
//! - [`auth`]: the `[auth]` table: who may connect (users learned from the nameservers, nodes by
//!   the node secret).
//!
//! A broker runs with [`Broker::bind`] then [`Broker::run`], or [`run`] in one call.

pub mod auth;
pub mod clients;
pub mod config;
pub mod console_api;
pub mod error;
pub mod groups;
pub mod handlers;
pub mod http;
pub mod lag;
pub mod locks;
pub mod metrics;
pub mod permission;
pub mod producers;
pub mod registry;
pub mod remoting;
pub mod replication;
pub mod reply;
pub mod retention;
pub mod retry;
pub mod schedule;
pub mod server;
pub mod state;
pub mod stats;
pub mod store;
pub mod throttle;
pub mod trace;
pub mod transaction;

pub use config::BrokerConfig;
pub use error::{BrokerError, Result};
pub use server::{Broker, run};

//! The nameserver: where clients find brokers and where cluster metadata lives, replicated with
//! Raft (openraft) over 1 node (`meridian dev`) or 3/5 nodes.
//!
//! It owns the replicated metadata (broker groups and members, topics and consumer groups with
//! their owners, approvals and history, the IDC map, the client SDK version policy), its Raft log
//! and snapshots on disk, and membership changes. Routes, heartbeat handling, the failover
//! controller, the framed-TCP Raft network and the HTTP API build on it (see
//! `docs/architecture.md`).
//!
//! Where to start reading:
//! - [`state`]: [`MetadataState`] and [`Command`], pure and deterministic; every change goes
//!   through [`MetadataState::apply`], which lends each concept's module (governance, brokers,
//!   IDC and drills, SDK policy) the part of the state it changes.
//! - [`raft`]: [`NameserverRaft`], a node: `start`, `initialize`, `write` (leader only; else
//!   [`NameserverError::ForwardToLeader`]), `read_state` (any node), membership changes, `shutdown`.
//! - [`types`]: the openraft type configuration ([`TypeConfig`], [`Node`], [`Request`]).
//! - [`log_store`] (redb) and [`state_machine`] (snapshot files): openraft's storage traits, checked
//!   with openraft's conformance suite.
//! - [`network`]: how a transport reports errors to openraft (`Unreachable` vs `Network`).
//! - [`service`]: [`NameserverService`], what a nameserver answers whichever way a request arrives;
//!   [`server`] serves it over the framed protocol, [`http`] as the JSON admin API (`docs/api.md`).
//! - [`remoting`]: the RocketMQ 4.x remoting listener (routes, cluster info, topic list).
//! - [`controller`]: the failover controller, run by [`Nameserver::run`]: while the node leads, it
//!   elects each broker group's master ([`Command::ElectMaster`]) from the brokers' heartbeats.
//! - [`alerts`]: the alert evaluator, also run on the leader only: rules, webhooks, and the
//!   replicated alert records ([`state::alerts`]) that `GET /api/alerts` lists.
//!
//! On disk, under a node's data dir: `raft-log.redb` (log entries, vote, committed and purged log
//! ids, owning node id) and `snapshots/current.snapshot` (the latest snapshot).
//!
//! openraft is re-exported as [`openraft`] so that crates composing the nameserver (the network
//! layer, `cli`) use this exact version without depending on it themselves.

pub mod admin;
pub mod alerts;
pub mod auth;
pub mod config;
pub mod continuity;
pub mod controller;
pub mod error;
pub mod http;
pub mod liveness;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod origin;
pub mod raft;
pub mod remoting;
pub mod routes;
pub mod security_api;
pub mod server;
pub mod service;
pub mod state;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod storage_suite;

pub use config::NameserverConfig;
pub use error::{ApiError, CommandError, NameserverError};
pub use openraft;
pub use raft::{NameserverRaft, RaftConfig};
pub use server::Nameserver;
pub use service::NameserverService;
pub use state::{Command, MetadataState, Response};
pub use types::{Node, NodeId, Request, TypeConfig};

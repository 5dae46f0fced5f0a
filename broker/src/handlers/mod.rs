//! One function per request code: decode the body, validate with the shared rules, check it
//! against what the nameservers approved (governed brokers only, see [`crate::registry`]), call the
//! store, encode the answer. Most requests are answered at once ([`Reply::Now`]); sends under sync
//! flush, long-polling pulls and topic creation finish later ([`Reply::Later`]).
//!
//! This module is the dispatch ([`handle`]); each request family has its file: [`send`], [`pull`],
//! [`offsets`], [`consumers`], [`topics`], [`retries`], [`transactions`], [`replica`], [`reports`].
//! What they share: [`crate::state::BrokerState`], [`crate::reply`], [`crate::permission`].

mod consumers;
mod offsets;
mod pull;
mod replica;
mod reports;
mod retries;
mod send;
#[cfg(test)]
mod tests;
mod topics;
mod transactions;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use meridian_proto::RequestCode;
use meridian_proto::auth::Principal;

use crate::error::{BrokerError, Result};
use crate::metrics::RequestLabels;
use crate::reply::{Reply, later};
use crate::state::BrokerState;
use consumers::{consumer_heartbeat, consumer_leave, consumer_list, lock_queues, unlock_queues};
use offsets::{commit_offset, query_offset, queue_info, reset_offset, search_offset};
use pull::pull;
use replica::replica_fetch;
use reports::trace_report;
use retries::{dead_letter_resend, send_back};
use send::send;
pub use send::send_many;
use topics::{create_topic, topic_route};

/// Handles one request from `peer`, who logged in as `principal` (checked against the ACL by
/// each handler once it decoded the topic and group, see [`crate::permission`]).
pub fn handle(
    state: &Arc<BrokerState>,
    principal: &Principal,
    code: RequestCode,
    body: Bytes,
    peer: SocketAddr,
) -> Reply {
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels { request: code.as_str() })
        .inc();
    let now = |result: Result<Bytes>| Reply::Now(result);
    match code {
        RequestCode::Send => send(state, principal, body, peer),
        RequestCode::Pull => pull(state, principal, body, peer),
        RequestCode::TraceReport => now(trace_report(state, body, peer)),
        RequestCode::SendBack => send_back(state, principal, body),
        RequestCode::ResetOffset => {
            let principal = principal.clone();
            later(state, body, move |state, body| reset_offset(state, principal, body))
        }
        RequestCode::DeadLetterResend => dead_letter_resend(state, principal, body),
        RequestCode::LockQueues => now(lock_queues(state, principal, body)),
        RequestCode::UnlockQueues => now(unlock_queues(state, principal, body)),
        RequestCode::EndTransaction | RequestCode::CheckTransactions => {
            transactions::handle(state, principal, code, body)
        }
        RequestCode::CommitOffset => now(commit_offset(state, principal, body)),
        RequestCode::QueryOffset => now(query_offset(state, principal, body)),
        RequestCode::QueueInfo => now(queue_info(state, principal, body)),
        RequestCode::SearchOffset => {
            let principal = principal.clone();
            later(state, body, move |state, body| search_offset(state, principal, body))
        }
        RequestCode::CreateTopic => create_topic(state, principal, body),
        RequestCode::TopicRoute => now(topic_route(state, body)),
        RequestCode::ConsumerHeartbeat => now(consumer_heartbeat(state, principal, body, peer)),
        RequestCode::ConsumerList => now(consumer_list(state, principal, body)),
        RequestCode::ConsumerLeave => now(consumer_leave(state, principal, body)),
        RequestCode::ProducerHeartbeat => now(crate::producers::producer_heartbeat(&state.producers, body, peer)),
        RequestCode::ReplicaFetch => replica_fetch(state, body),
        RequestCode::BrokerHeartbeat
        | RequestCode::RegisterBroker
        | RequestCode::BrokerMetadata
        | RequestCode::NameserverWrite
        | RequestCode::NameserverRead
        | RequestCode::IdcLookup
        | RequestCode::RaftAppend
        | RequestCode::RaftVote
        | RequestCode::RaftSnapshot
        | RequestCode::AuthHello
        | RequestCode::AuthProof => now(Err(BrokerError::NotABrokerRequest(code))),
    }
}

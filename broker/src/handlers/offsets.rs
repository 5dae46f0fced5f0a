//! Consumer offsets: commit, query, reset (to the earliest, the latest, or a time) and the offset
//! of a time, the archive included; a queue's bounds.

use std::sync::Arc;

use bytes::Bytes;
use meridian_proto::acl::{Action, Resource};
use meridian_proto::auth::Principal;
use meridian_proto::messages::{
    CommitOffsetRequest, QueryOffsetRequest, QueryOffsetResponse, QueueInfoResponse, QueueOffset, QueueRef,
    ResetOffsetRequest, ResetOffsetResponse, ResetTarget, SearchOffsetRequest, SearchOffsetResponse,
};
use meridian_proto::topics;
use meridian_proto::validate;

use crate::error::{BrokerError, Result};
use crate::reply::{decode, encoded};
use crate::state::BrokerState;
use crate::store::MessageStore;

pub(super) fn commit_offset(state: &BrokerState, principal: &Principal, body: Bytes) -> Result<Bytes> {
    let request: CommitOffsetRequest = decode(body)?;
    state.check_group_topic(&request.group, &request.topic)?;
    state.authorize_consume(principal, &request.group, [request.topic.as_str()])?;
    if !request.member.is_empty() {
        validate::validate_client_id(&request.member)?;
    }
    if let Some(given) = request.generation {
        let current = state.store.offset_generation(&request.group, &request.topic);
        if given != current {
            return Err(BrokerError::OffsetReset {
                group: request.group,
                topic: request.topic,
                current,
                given,
            });
        }
    }
    let key = MessageStore::offset_key(&request.group, &request.member);
    state
        .store
        .commit_offset(&key, &request.topic, request.queue_id, request.offset)?;
    let max_offset = state
        .store
        .consume_queue(&request.topic, request.queue_id)?
        .max_offset();
    state.lag.record_commit(
        &key,
        &request.topic,
        request.queue_id,
        request.offset,
        max_offset,
        crate::lag::now_ms(),
    );
    Ok(Bytes::new())
}

pub(super) fn query_offset(state: &BrokerState, principal: &Principal, body: Bytes) -> Result<Bytes> {
    let request: QueryOffsetRequest = decode(body)?;
    state.check_group_topic(&request.group, &request.topic)?;
    state.authorize_consume(principal, &request.group, [request.topic.as_str()])?;
    if !request.member.is_empty() {
        validate::validate_client_id(&request.member)?;
    }
    let key = MessageStore::offset_key(&request.group, &request.member);
    let offset = state.store.query_offset(&key, &request.topic, request.queue_id)?;
    let generation = state.store.offset_generation(&request.group, &request.topic);
    encoded(&QueryOffsetResponse { offset, generation })
}

/// Moves a group's offsets of a topic on this broker; its consumers notice at their next pull
/// ([`PullStatus::OffsetReset`]) and continue from there.
pub(super) async fn reset_offset(state: Arc<BrokerState>, principal: Principal, body: Bytes) -> Result<Bytes> {
    let request: ResetOffsetRequest = decode(body)?;
    state.check_group_topic(&request.group, &request.topic)?;
    state.authorize(&principal, Action::Admin, Resource::Group(&request.group))?;
    state.check_master()?;
    let target = ResetTarget::try_from(request.target)
        .map_err(|_| BrokerError::MalformedBody(format!("reset target {} is unknown", request.target)))?;
    let queues = state
        .store
        .topic_queues(&request.topic)
        .ok_or_else(|| BrokerError::TopicNotFound(request.topic.clone()))?;
    let mut offsets = Vec::with_capacity(queues as usize);
    for queue_id in 0..queues {
        let bounds = state.store.queue_bounds(&request.topic, queue_id)?;
        let offset = match target {
            ResetTarget::Earliest => bounds.min_offset,
            ResetTarget::Latest => bounds.max_offset,
            ResetTarget::Timestamp => search_by_time(&state, &request.topic, queue_id, request.timestamp).await?,
        };
        offsets.push((queue_id, offset));
    }
    let generation = state.store.reset_offsets(&request.group, &request.topic, &offsets);
    tracing::info!(
        group = request.group,
        topic = request.topic,
        ?target,
        timestamp = request.timestamp,
        generation,
        ?offsets,
        "consumer offsets reset"
    );
    encoded(&ResetOffsetResponse {
        queues: offsets
            .into_iter()
            .map(|(queue_id, offset)| QueueOffset { queue_id, offset })
            .collect(),
        generation,
    })
}

pub(super) fn queue_info(state: &BrokerState, principal: &Principal, body: Bytes) -> Result<Bytes> {
    let request: QueueRef = decode(body)?;
    topics::validate_consumable(&request.topic)?;
    state.authorize_topic(principal, Action::Sub, &request.topic)?;
    let bounds = state.store.queue_bounds(&request.topic, request.queue_id)?;
    encoded(&QueueInfoResponse {
        min_offset: bounds.min_offset,
        max_offset: bounds.max_offset,
    })
}

pub(super) async fn search_offset(state: Arc<BrokerState>, principal: Principal, body: Bytes) -> Result<Bytes> {
    let request: SearchOffsetRequest = decode(body)?;
    topics::validate_consumable(&request.topic)?;
    state.authorize_topic(&principal, Action::Sub, &request.topic)?;
    let offset = search_by_time(&state, &request.topic, request.queue_id, request.timestamp).await?;
    encoded(&SearchOffsetResponse { offset })
}

/// The first offset of a queue stored at or after `timestamp`, the archive included: when the
/// local commitlog's first message of the queue is already that late, older ones may have been
/// archived and deleted locally, so the archive is asked.
pub(super) async fn search_by_time(state: &BrokerState, topic: &str, queue_id: u32, timestamp: i64) -> Result<u64> {
    let local = state.store.search_offset(topic, queue_id, timestamp)?;
    let local_min = state.store.consume_queue(topic, queue_id)?.min_offset();
    let Some(archive) = state.store.archive().cloned().filter(|_| local == local_min) else {
        return Ok(local);
    };
    let archived = archive
        .search_offset(topic, queue_id, timestamp)
        .await
        .map_err(|error| BrokerError::Io {
            context: format!("searching {topic}/{queue_id} of the archive for time {timestamp}"),
            source: std::io::Error::other(error.to_string()),
        })?;
    Ok(archived.filter(|offset| *offset < local).unwrap_or(local))
}

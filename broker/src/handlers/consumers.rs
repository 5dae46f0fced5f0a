//! Consumer group members: heartbeats (with the SDK policy and the group's mode), the member
//! list, leaving, and the queue locks of orderly consumers.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use meridian_proto::auth::Principal;
use meridian_proto::filter::TagFilter;
use meridian_proto::messages::{
    ConsumerHeartbeat, ConsumerListResponse, ConsumerMember, GroupMember, LockQueuesRequest, LockQueuesResponse,
};
use meridian_proto::validate;

use crate::error::{BrokerError, Result};
use crate::groups::MemberInfo;
use crate::reply::{decode, encoded};
use crate::state::BrokerState;

pub(super) fn decode_lock_request(
    state: &BrokerState,
    principal: &Principal,
    body: Bytes,
) -> Result<LockQueuesRequest> {
    let request: LockQueuesRequest = decode(body)?;
    state.check_group_topic(&request.group, &request.topic)?;
    state.authorize_consume(principal, &request.group, [request.topic.as_str()])?;
    validate::validate_client_id(&request.client_id)?;
    Ok(request)
}

pub(super) fn lock_queues(state: &BrokerState, principal: &Principal, body: Bytes) -> Result<Bytes> {
    let request = decode_lock_request(state, principal, body)?;
    let locked = state.locks.lock(
        &request.group,
        &request.client_id,
        &request.topic,
        &request.queue_ids,
        Instant::now(),
    );
    encoded(&LockQueuesResponse { locked })
}

pub(super) fn unlock_queues(state: &BrokerState, principal: &Principal, body: Bytes) -> Result<Bytes> {
    let request = decode_lock_request(state, principal, body)?;
    state
        .locks
        .unlock(&request.group, &request.client_id, &request.topic, &request.queue_ids);
    Ok(Bytes::new())
}

pub(super) fn consumer_heartbeat(
    state: &BrokerState,
    principal: &Principal,
    body: Bytes,
    peer: SocketAddr,
) -> Result<Bytes> {
    let request: ConsumerHeartbeat = decode(body)?;
    validate::validate_group(&request.group)?;
    for topic in &request.topics {
        validate::validate_topic(topic)?;
    }
    if !request.idc.is_empty() {
        validate::validate_idc(&request.idc)?;
    }
    if request.client_id.is_empty() {
        return Err(BrokerError::MalformedBody(
            "consumer heartbeat needs a client_id".into(),
        ));
    }
    TagFilter::parse(&request.subscription)?;
    if let Some(stats) = &request.stats {
        stats
            .validate_buckets()
            .map_err(|error| BrokerError::MalformedBody(format!("consumer heartbeat: {error}")))?;
    }
    state.check_consume(&request.group, request.topics.iter().map(String::as_str))?;
    state.authorize_consume(principal, &request.group, request.topics.iter().map(String::as_str))?;
    let sdk_language = if request.sdk_language.is_empty() {
        meridian_proto::sdk::SDK_LANGUAGE.to_owned()
    } else {
        request.sdk_language.to_ascii_lowercase()
    };
    if let Some(governance) = &state.governance
        && let Some(violation) = governance.check_sdk(&sdk_language, &request.sdk_version)?
    {
        tracing::debug!(group = request.group, client_id = request.client_id, %violation, "consumer breaks the sdk policy");
    }
    if let Some(grant) = state
        .governance
        .as_ref()
        .and_then(|governance| governance.group(&request.group))
        && grant.broadcasting != request.broadcasting
    {
        let (registered, started) = if grant.broadcasting {
            ("broadcasting", "clustering (members share the queues)")
        } else {
            ("clustering", "broadcasting")
        };
        return Err(BrokerError::Refused(format!(
            "consumer group {:?} is registered as {registered}, but this member started as {started}; start it in the group's mode, or request a group of the other mode",
            request.group
        )));
    }
    if !request.broadcasting && state.replication.check_writable().is_ok() {
        crate::retry::ensure_group_topics(state, &request.group)?;
    }
    let info = MemberInfo {
        topics: request.topics,
        sdk_version: request.sdk_version,
        sdk_language,
        idc: request.idc,
        allocation: request.allocation,
        deployment: request.deployment,
        subscription: request.subscription,
        consume_latency_us: request.stats.map(|stats| stats.consume_latency_us).unwrap_or_default(),
    };
    let (allocation, deployment, idc) = (info.allocation.clone(), info.deployment.clone(), info.idc.clone());
    let joined = state
        .groups
        .heartbeat(&request.group, &request.client_id, info, peer, Instant::now());
    if joined.new {
        tracing::info!(
            group = request.group,
            client_id = request.client_id,
            idc,
            allocation,
            "consumer joined group"
        );
    }
    if let Some((other, other_allocation, other_deployment)) = joined.disagrees_with {
        tracing::warn!(
            group = request.group,
            client_id = request.client_id,
            allocation,
            deployment,
            other,
            other_allocation,
            other_deployment,
            "members of a consumer group allocate queues differently: some queues may go unconsumed or be consumed twice; run every member on the same SDK version and deployment model"
        );
    }
    Ok(Bytes::new())
}

pub(super) fn consumer_list(state: &BrokerState, principal: &Principal, body: Bytes) -> Result<Bytes> {
    let request: GroupMember = decode(body)?;
    validate::validate_group(&request.group)?;
    state.authorize_consume(principal, &request.group, [])?;
    let members = state.groups.members(&request.group, Instant::now());
    encoded(&ConsumerListResponse {
        client_ids: members.iter().map(|(client_id, _)| client_id.clone()).collect(),
        members: members
            .into_iter()
            .map(|(client_id, info)| ConsumerMember {
                client_id,
                idc: info.idc,
                allocation: info.allocation,
                deployment: info.deployment,
                sdk_version: info.sdk_version,
            })
            .collect(),
        evacuated_idcs: state
            .governance
            .as_ref()
            .map(|governance| governance.evacuated())
            .unwrap_or_default(),
    })
}

pub(super) fn consumer_leave(state: &BrokerState, principal: &Principal, body: Bytes) -> Result<Bytes> {
    let request: GroupMember = decode(body)?;
    validate::validate_group(&request.group)?;
    state.authorize_consume(principal, &request.group, [])?;
    state.locks.release_member(&request.group, &request.client_id);
    if state.groups.leave(&request.group, &request.client_id) {
        tracing::info!(
            group = request.group,
            client_id = request.client_id,
            "consumer left group"
        );
    }
    Ok(Bytes::new())
}

//! Topics: creation on a standalone broker and a topic's route as this broker serves it.

use std::sync::Arc;

use bytes::Bytes;
use meridian_proto::messages::{BrokerRoute, CreateTopicRequest, TopicRoute, TopicRouteRequest, perm};
use meridian_proto::topics;
use meridian_proto::validate;

use crate::error::{BrokerError, Result};
use crate::reply::{Reply, decode, encoded};
use crate::state::BrokerState;

pub(super) fn create_topic(
    state: &Arc<BrokerState>,
    principal: &meridian_proto::auth::Principal,
    body: Bytes,
) -> Reply {
    let request = match decode::<CreateTopicRequest>(body).and_then(|request| {
        state.authorize(
            principal,
            meridian_proto::acl::Action::Admin,
            meridian_proto::acl::Resource::Topic(&request.topic),
        )?;
        Ok(request)
    }) {
        Ok(request) => request,
        Err(error) => return Reply::Now(Err(error)),
    };
    if let Some(governance) = &state.governance {
        return Reply::Now(Err(governance.refuse_topic_creation(&request.topic)));
    }
    let store = state.store.clone();
    Reply::Later(Box::pin(async move {
        // Creating a topic writes and syncs metadata files: keep it off the runtime threads.
        tokio::task::spawn_blocking(move || store.create_topic(&request.topic, request.queues))
            .await
            .map_err(|error| BrokerError::Corrupt(format!("topic creation task failed: {error}")))??;
        Ok(Bytes::new())
    }))
}

pub(super) fn topic_route(state: &BrokerState, body: Bytes) -> Result<Bytes> {
    let request: TopicRouteRequest = decode(body)?;
    validate::validate_topic(&request.topic)?;
    // A governed broker creates a topic's queues before it puts the approval in force: answer
    // only once both are, so `meridian topic approve|create` return when sends succeed.
    if let Some(governance) = &state.governance
        && !topics::is_system(&request.topic)
    {
        governance.check_approved(&request.topic)?;
    }
    let queues = state
        .store
        .topic_queues(&request.topic)
        .ok_or_else(|| BrokerError::TopicNotFound(request.topic.clone()))?;
    encoded(&TopicRoute {
        topic: request.topic,
        brokers: vec![BrokerRoute {
            broker_name: state.config.broker_name.clone(),
            addr: state.advertise_addr.clone(),
            idc: state.config.idc.clone(),
            queues,
            perm: perm::READ | perm::WRITE,
            replicas: Vec::new(),
        }],
        evacuated_idcs: Vec::new(),
        lost_idcs: Vec::new(),
    })
}

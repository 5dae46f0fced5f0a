//! Sends: each request validated with the shared rules (properties, sizes, the producer's SDK,
//! approvals, produce limits) on its own, then the valid ones appended together, answered once
//! as durable as the flush mode and ack policy promise. Delayed and transactional messages are
//! rehomed first ([`crate::schedule::rehome`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use meridian_proto::acl::{Action, Resource};
use meridian_proto::auth::Principal;
use meridian_proto::messages::{SendRequest, SendResponse};
use meridian_proto::properties::{
    self, DELAY, DELIVER_AT, KEY_SEPARATOR, KEYS, MSG_ID, PRODUCER_GROUP, SHARDING_KEY, TAGS, TRANSACTION,
};
use meridian_proto::validate::{self, Limits, ValidationError};
use meridian_proto::{delay, topics};

use crate::error::{BrokerError, Result};
use crate::metrics::RequestLabels;
use crate::reply::{Reply, decode, encoded};
use crate::schedule::{self, Special};
use crate::state::BrokerState;
use crate::store::{AppendRequest, FlushMode};

/// Checks a message's properties with the shared rules: well formed, within the size limit,
/// valid keys, tag and delay; says whether the message is delayed or transactional.
pub(super) fn validate_properties(encoded: &[u8], limits: &Limits) -> Result<Special, ValidationError> {
    validate::validate_properties_size(encoded.len(), limits)?;
    if !properties::is_well_formed(encoded) {
        return Err(ValidationError::Property {
            name: "<encoded properties>".into(),
            max: validate::MAX_PROPERTY_NAME_LEN,
        });
    }
    let mut special = Special::default();
    for (name, value) in properties::PropertiesIter::new(encoded) {
        match name {
            KEYS => value.split(KEY_SEPARATOR).try_for_each(validate::validate_key)?,
            DELAY => {
                delay::level_delay_ms(value)?;
                special.delayed = true;
            }
            // The time is checked against the clock when the message is moved (schedule::rehome).
            DELIVER_AT => special.delayed = true,
            TRANSACTION => special.transactional = value == "true",
            SHARDING_KEY => validate::validate_key(value)?,
            TAGS => validate::validate_tag(value)?,
            PRODUCER_GROUP => validate::validate_group(value)?,
            MSG_ID => {
                meridian_proto::MessageId::parse(value).map_err(|_| ValidationError::Property {
                    name: format!("{MSG_ID}={value}"),
                    max: validate::MAX_PROPERTY_NAME_LEN,
                })?;
            }
            _ => validate::validate_property(name, value)?,
        }
    }
    Ok(special)
}

pub(super) fn send(state: &Arc<BrokerState>, principal: &Principal, body: Bytes, peer: SocketAddr) -> Reply {
    send_many(state, principal, vec![body], peer)
        .pop()
        .expect("one reply per send")
}

pub(super) fn decode_send(
    state: &BrokerState,
    principal: &Principal,
    body: Bytes,
    peer: SocketAddr,
) -> Result<SendRequest> {
    let request: SendRequest = decode(body)?;
    let mut request = request;
    state.check_producer_sdk(&request.sdk, peer)?;
    validate::validate_topic(&request.topic)?;
    if topics::is_system(&request.topic) {
        return Err(BrokerError::SystemTopic(request.topic));
    }
    // Once per request, whatever the number of messages.
    state.authorize(principal, Action::Pub, Resource::Topic(&request.topic))?;
    state.check_send(&request.topic)?;
    if request.messages.is_empty() {
        return Err(BrokerError::MalformedBody(
            "a send request needs at least one message".into(),
        ));
    }
    let mut special = Special::default();
    let mut bytes = 0_u64;
    for message in &request.messages {
        validate::validate_body_size(message.body.len(), &state.limits)?;
        let found = validate_properties(&message.properties, &state.limits)?;
        special.delayed |= found.delayed;
        special.transactional |= found.transactional;
        bytes += (message.body.len() + message.properties.len()) as u64;
    }
    let messages = u32::try_from(request.messages.len()).unwrap_or(u32::MAX);
    state.throttle_send(&request.topic, &request.producer_group, messages, bytes)?;
    if special.any() {
        schedule::rehome(&mut request, special, meridian_proto::time::now_millis())?;
    }
    Ok(request)
}

/// Handles sends a connection had already sent, in order: each is validated (and, on a governed
/// broker, checked against the approved topics) on its own, so a refused one fails only its own
/// frame, and the valid ones are appended together with one write (see
/// [`MessageStore::append_many`]).
pub fn send_many(state: &Arc<BrokerState>, principal: &Principal, bodies: Vec<Bytes>, peer: SocketAddr) -> Vec<Reply> {
    let started = Instant::now();
    let count = bodies.len() as u64;
    if count > 1 {
        state
            .metrics
            .requests
            .get_or_create(&RequestLabels { request: "send" })
            .inc_by(count - 1);
    }
    if let Err(error) = state.replication.check_writable() {
        let reason = error.to_string();
        return (0..count)
            .map(|_| Reply::Now(Err(BrokerError::NotMaster(reason.clone()))))
            .collect();
    }
    if let Some(governance) = &state.governance
        && governance.is_evacuated(&state.config.idc)
    {
        state.metrics.evacuated_refusals.inc_by(count);
        return (0..count)
            .map(|_| Reply::Now(Err(governance.evacuated_error(&state.config.idc))))
            .collect();
    }
    let decoded: Vec<Result<SendRequest>> = bodies
        .into_iter()
        .map(|body| decode_send(state, principal, body, peer))
        .collect();
    let requests: Vec<AppendRequest<'_>> = decoded
        .iter()
        .flatten()
        .map(|request| AppendRequest {
            topic: &request.topic,
            queue_id: u32::try_from(request.queue_id).ok(),
            messages: &request.messages,
            born_host: peer,
        })
        .collect();
    let mut appended = state.store.append_many(&requests).into_iter();
    state.replication.notify_appended();
    let sync = state.store.config().flush_mode == FlushMode::Sync;
    let replicated = state.replication.needs_slaves();
    decoded
        .into_iter()
        .map(|request| {
            let (request, appended) = match request {
                Err(error) => return Reply::Now(Err(error)),
                Ok(request) => (request, appended.next().expect("one outcome per valid request")),
            };
            let appended = match appended {
                Ok(appended) => appended,
                Err(error) => return Reply::Now(Err(error)),
            };
            let response = SendResponse {
                results: appended.results,
            };
            let trace = |results| {
                state.trace.stored(
                    &request.topic,
                    &request.producer_group,
                    peer,
                    &request.messages,
                    results,
                );
            };
            if !sync && !replicated {
                let answer = encoded(&response);
                trace(response.results);
                state.metrics.send_seconds.observe(started.elapsed().as_secs_f64());
                return Reply::Now(answer);
            }
            trace(response.results.clone());
            let state = state.clone();
            Reply::Later(Box::pin(async move {
                if sync {
                    state.store.wait_flushed(appended.end_offset).await?;
                }
                state.replication.wait_acked(appended.end_offset).await?;
                if replicated {
                    state.trace.replicated(&request.topic, &response.results);
                }
                state.metrics.send_seconds.observe(started.elapsed().as_secs_f64());
                encoded(&response)
            }))
        })
        .collect()
}

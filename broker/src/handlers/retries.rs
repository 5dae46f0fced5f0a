//! A consumer's failed message to the retry or dead-letter topic, and dead letters resent
//! ([`crate::retry`] does the work).

use std::sync::Arc;

use bytes::Bytes;
use meridian_proto::acl::{Action, Resource};
use meridian_proto::auth::Principal;
use meridian_proto::messages::{DeadLetterResendRequest, SendBackRequest};

use crate::reply::{Reply, decode, encoded};
use crate::schedule;
use crate::state::BrokerState;

/// A consumer failed a message: to the retry topic or the dead-letter topic, answered once the
/// copy is as durable as an acknowledged send.
pub(super) fn send_back(state: &Arc<BrokerState>, principal: &Principal, body: Bytes) -> Reply {
    let sent = decode::<SendBackRequest>(body).and_then(|request| {
        state.authorize_consume(principal, &request.group, [request.topic.as_str()])?;
        crate::retry::send_back(state, &request)
    });
    let sent = match sent {
        Ok(sent) => sent,
        Err(error) => return Reply::Now(Err(error)),
    };
    let state = state.clone();
    Reply::Later(Box::pin(async move {
        schedule::wait_durable(&state, sent.end_offset).await?;
        encoded(&sent.response)
    }))
}

pub(super) fn dead_letter_resend(state: &Arc<BrokerState>, principal: &Principal, body: Bytes) -> Reply {
    let resent = decode::<DeadLetterResendRequest>(body).and_then(|request| {
        state.authorize(principal, Action::Admin, Resource::Group(&request.group))?;
        crate::retry::resend_dead_letters(state, &request)
    });
    let (response, end_offset) = match resent {
        Ok(resent) => resent,
        Err(error) => return Reply::Now(Err(error)),
    };
    let state = state.clone();
    Reply::Later(Box::pin(async move {
        if end_offset > 0 {
            schedule::wait_durable(&state, end_offset).await?;
        }
        encoded(&response)
    }))
}

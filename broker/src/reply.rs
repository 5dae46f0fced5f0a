//! How the broker answers a request: [`Reply`] (now, or when a future completes), and the body
//! codec every request handler shares ([`decode`], [`encoded`], [`later`]). The handlers are in
//! [`crate::handlers`].

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::error::{BrokerError, Result};
use crate::state::BrokerState;

/// A response body still being produced.
pub type PendingReply = meridian_proto::serve::PendingAnswer<BrokerError>;

/// How a request is answered: now, or when a future completes ([`meridian_proto::serve::Answer`]).
pub type Reply = meridian_proto::serve::Answer<BrokerError>;

pub(crate) fn decode<T: Message + Default>(body: Bytes) -> Result<T> {
    T::decode(body).map_err(|error| BrokerError::MalformedBody(error.to_string()))
}

pub(crate) fn encoded(message: &impl Message) -> Result<Bytes> {
    Ok(Bytes::from(message.encode_to_vec()))
}

/// Runs an async handler that needs the state beyond the request's borrow.
pub(crate) fn later<F>(
    state: &Arc<BrokerState>,
    body: Bytes,
    handler: impl FnOnce(Arc<BrokerState>, Bytes) -> F,
) -> Reply
where
    F: std::future::Future<Output = Result<Bytes>> + Send + 'static,
{
    Reply::Later(Box::pin(handler(state.clone(), body)))
}

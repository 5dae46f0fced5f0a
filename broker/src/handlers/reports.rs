//! Clients' trace reports, buffered for the trace topic ([`crate::trace`]).

use std::net::SocketAddr;

use bytes::Bytes;

use crate::error::{BrokerError, Result};
use crate::state::BrokerState;

/// A client's trace report: checked, stamped with the client's address, buffered for the trace topic.
pub(super) fn trace_report(state: &BrokerState, body: Bytes, peer: SocketAddr) -> Result<Bytes> {
    state
        .trace
        .report(body, peer)
        .map_err(|error| BrokerError::InvalidTrace(error.to_string()))?;
    Ok(Bytes::new())
}

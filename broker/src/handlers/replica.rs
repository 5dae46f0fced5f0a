//! A slave's fetch of the commitlog, served by [`crate::replication`].

use std::sync::Arc;

use bytes::Bytes;
use meridian_proto::messages::ReplicaFetch;

use crate::reply::{Reply, decode};
use crate::state::BrokerState;

/// A slave's fetch of the commitlog (answered when there is data, or after the slave's wait).
pub(super) fn replica_fetch(state: &Arc<BrokerState>, body: Bytes) -> Reply {
    let request: ReplicaFetch = match decode(body) {
        Ok(request) => request,
        Err(error) => return Reply::Now(Err(error)),
    };
    let replication = state.replication.clone();
    Reply::Later(Box::pin(async move { replication.serve_fetch(request).await }))
}

//! Transactions: a producer's commit or rollback of a half message ([`RequestCode::EndTransaction`],
//! answered once what it wrote is durable) and the pending check-backs a producer asks for
//! ([`RequestCode::CheckTransactions`]). [`crate::transaction`] does the work.

use std::sync::Arc;

use bytes::Bytes;
use meridian_proto::RequestCode;
use meridian_proto::messages::{CheckTransactionsRequest, EndTransactionRequest};
use prost::Message;

use crate::reply::{Reply, decode};
use crate::schedule;
use crate::state::BrokerState;
use crate::transaction::{end_transaction, pending_checks};

/// Serves [`RequestCode::EndTransaction`] (answered once what it wrote is durable) and
/// [`RequestCode::CheckTransactions`].
pub(super) fn handle(
    state: &Arc<BrokerState>,
    principal: &meridian_proto::auth::Principal,
    code: RequestCode,
    body: Bytes,
) -> Reply {
    if code == RequestCode::CheckTransactions {
        let answer = decode::<CheckTransactionsRequest>(body)
            .and_then(|request| pending_checks(state, &request))
            .map(|response| Bytes::from(response.encode_to_vec()));
        return Reply::Now(answer);
    }
    // PUB on the topic the half message is for, read from the half message itself.
    let authorize = |topic: &str| {
        state.authorize(
            principal,
            meridian_proto::acl::Action::Pub,
            meridian_proto::acl::Resource::Topic(topic),
        )
    };
    let end_offset =
        match decode::<EndTransactionRequest>(body).and_then(|request| end_transaction(state, &request, authorize)) {
            Ok(end_offset) => end_offset,
            Err(error) => return Reply::Now(Err(error)),
        };
    if end_offset == 0 {
        return Reply::Now(Ok(Bytes::new()));
    }
    let state = state.clone();
    Reply::Later(Box::pin(async move {
        schedule::wait_durable(&state, end_offset).await?;
        Ok(Bytes::new())
    }))
}

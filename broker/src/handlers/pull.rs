//! Pulls: from the consume queue (records copied once, straight from the commitlog), long-polled
//! when there is nothing yet, from the archive below the local queue, with tag filters and offset
//! resets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meridian_proto::filter::TagFilter;
use meridian_proto::messages::{PullRequest, PullResponse, PullStatus};
use meridian_proto::topics;
use meridian_proto::validate;
use prost::Message;

use crate::error::{BrokerError, Result};
use crate::reply::{Reply, decode, encoded};
use crate::state::BrokerState;
use crate::store::CqEntry;

/// Encodes a pull response, copying records from the commitlog straight into the body: the
/// records field is written by hand so the bytes are copied once, not once per layer.
pub(super) fn encode_pull(
    state: &BrokerState,
    status: PullStatus,
    next: u64,
    min: u64,
    max: u64,
    entries: &[CqEntry],
) -> Result<Bytes> {
    let head = PullResponse {
        status: status as i32,
        next_offset: next,
        min_offset: min,
        max_offset: max,
        records: Bytes::new(),
        ..Default::default()
    };
    let records_len: usize = entries.iter().map(|entry| entry.size as usize).sum();
    let mut out = BytesMut::with_capacity(head.encoded_len() + 16 + records_len);
    head.encode(&mut out).expect("buffer has capacity");
    if records_len > 0 {
        prost::encoding::encode_key(5, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(records_len as u64, &mut out);
        for entry in entries {
            state.store.copy_record(entry, &mut out)?;
        }
    }
    Ok(out.freeze())
}

/// One attempt at a pull. `None` when there is nothing yet at the offset. With a tag filter, only
/// entries whose tag hash matches are read; `next_offset` passes the ones skipped.
pub(super) fn try_pull(state: &BrokerState, request: &PullRequest, filter: &TagFilter) -> Result<Option<Bytes>> {
    let queue = state.store.consume_queue(&request.topic, request.queue_id)?;
    let (min, max) = (queue.min_offset(), queue.max_offset());
    // Past the consume queue but not past what is written: those messages are stored and not
    // yet confirmed (a slave behind its master's confirmation, a broker just restarted). The
    // consumer waits for them instead of being moved back to re-read what it had.
    if request.offset > max && request.offset <= state.store.queue_offsets_end(&request.topic, request.queue_id) {
        return Ok(None);
    }
    if request.offset < min || request.offset > max {
        let next = request.offset.clamp(min, max);
        return encode_pull(state, PullStatus::OffsetMoved, next, min, max, &[]).map(Some);
    }
    if request.offset == max {
        return Ok(None);
    }
    // Leave room for the response's own fields inside the frame limit.
    let max_bytes = request.max_bytes.min((state.limits.max_frame_size - 4096) as u32);
    let mut entries = state
        .store
        .read_entries(&queue, request.offset, request.max_count.clamp(1, 1024), max_bytes)?;
    let next = request.offset + entries.len() as u64;
    if !filter.is_all() {
        entries.retain(|entry| filter.matches_hash(entry.tag_hash));
    }
    state.metrics.messages_pulled.inc_by(entries.len() as u64);
    encode_pull(state, PullStatus::Found, next, min, max, &entries).map(Some)
}

pub(super) fn pull(
    state: &Arc<BrokerState>,
    principal: &meridian_proto::auth::Principal,
    body: Bytes,
    peer: SocketAddr,
) -> Reply {
    let (request, filter) = match decode::<PullRequest>(body).and_then(|request| {
        validate::validate_group(&request.group)?;
        topics::validate_consumable(&request.topic)?;
        state.authorize_consume(principal, &request.group, [request.topic.as_str()])?;
        let filter = TagFilter::parse(&request.subscription)?;
        state.check_consume(&request.group, [request.topic.as_str()])?;
        Ok((request, filter))
    }) {
        Ok(request) => request,
        Err(error) => return Reply::Now(Err(error)),
    };
    state.lag.record_pull(
        &request.group,
        &request.topic,
        request.queue_id,
        request.offset,
        peer,
        crate::lag::now_ms(),
    );
    if let Some(generation) = request.offset_generation {
        let current = state.store.offset_generation(&request.group, &request.topic);
        if generation != current {
            return Reply::Now(offset_reset(state, &request, current));
        }
    }
    // Below the local consume queue: served from the archive, same ids and offsets.
    if let Some(archive) = state.store.archive().cloned()
        && state
            .store
            .consume_queue(&request.topic, request.queue_id)
            .is_ok_and(|queue| request.offset < queue.min_offset())
    {
        let state = state.clone();
        return Reply::Later(Box::pin(async move {
            let body = pull_archived(&state, &archive, &request, &filter).await?;
            state.trace.delivered(&request.topic, &request.group, peer, &body);
            Ok(body)
        }));
    }
    match try_pull(state, &request, &filter) {
        Ok(Some(body)) => {
            state.trace.delivered(&request.topic, &request.group, peer, &body);
            return Reply::Now(Ok(body));
        }
        Err(error) => return Reply::Now(Err(error)),
        Ok(None) if request.long_poll_ms == 0 => return Reply::Now(no_new_message(state, &request)),
        Ok(None) => {}
    }
    let state = state.clone();
    Reply::Later(Box::pin(async move {
        let queue = state.store.consume_queue(&request.topic, request.queue_id)?;
        let wait = Duration::from_millis(u64::from(request.long_poll_ms).min(state.config.max_long_poll_ms));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = queue.new_entries.notified();
            tokio::pin!(notified);
            // Register before checking, so an append between the check and the wait still wakes us.
            notified.as_mut().enable();
            if let Some(body) = try_pull(&state, &request, &filter)? {
                state.trace.delivered(&request.topic, &request.group, peer, &body);
                return Ok(body);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return no_new_message(&state, &request),
                _ = state.shutdown.cancelled() => return no_new_message(&state, &request),
            }
        }
    }))
}

/// A pull below the local consume queue, answered from the archive: the records re-encoded from
/// Parquet are the bytes the broker once stored, so clients see the same ids, offsets and CRCs.
/// An offset the archive no longer holds moves the consumer to the next one that exists. The tag
/// filter applies as to local pulls: `next_offset` passes the records it drops.
pub(super) async fn pull_archived(
    state: &BrokerState,
    archive: &meridian_archive::reader::ArchiveReader,
    request: &PullRequest,
    filter: &TagFilter,
) -> Result<Bytes> {
    use meridian_archive::reader::Replay;
    let local_min = state
        .store
        .consume_queue(&request.topic, request.queue_id)?
        .min_offset();
    let bounds = state.store.queue_bounds(&request.topic, request.queue_id)?;
    let max_bytes = request.max_bytes.min((state.limits.max_frame_size - 4096) as u32);
    let replay = archive
        .read(
            &request.topic,
            request.queue_id,
            request.offset,
            request.max_count.clamp(1, 1024),
            max_bytes,
        )
        .await
        .map_err(|error| BrokerError::Io {
            context: format!(
                "reading offset {} of {}/{} from the archive",
                request.offset, request.topic, request.queue_id
            ),
            source: std::io::Error::other(error.to_string()),
        })?;
    let (status, next, records) = match replay {
        Replay::Found {
            records,
            count,
            next_offset,
        } => {
            let (records, count) = if filter.is_all() {
                (records, count)
            } else {
                matching_records(&records, filter)?
            };
            state.metrics.messages_pulled.inc_by(count);
            (PullStatus::Found, next_offset, Bytes::from(records))
        }
        Replay::Moved(next) => (PullStatus::OffsetMoved, next.min(local_min), Bytes::new()),
        Replay::NotArchived => (PullStatus::OffsetMoved, local_min, Bytes::new()),
    };
    Ok(PullResponse {
        status: status as i32,
        next_offset: next,
        min_offset: bounds.min_offset,
        max_offset: bounds.max_offset,
        records,
        ..Default::default()
    }
    .encode_to_vec()
    .into())
}

/// The records of `records` (stored records, back to back) whose tag `filter` takes, and their
/// count. The archive holds each record's tag, so the exact check is made here.
pub(super) fn matching_records(records: &[u8], filter: &TagFilter) -> Result<(Vec<u8>, u64)> {
    let (mut kept, mut count, mut position) = (Vec::with_capacity(records.len()), 0, 0);
    while position < records.len() {
        let record = meridian_proto::record::Record::parse(&records[position..])
            .map_err(|error| BrokerError::Corrupt(format!("a record read back from the archive: {error}")))?;
        if filter.matches_tag(record.tag()) {
            kept.extend_from_slice(record.as_bytes());
            count += 1;
        }
        position += record.total_size();
    }
    Ok((kept, count))
}

/// The answer to a pull whose position predates a reset of the group's offsets: where the group
/// continues now, and the generation to continue with.
pub(super) fn offset_reset(state: &BrokerState, request: &PullRequest, generation: u64) -> Result<Bytes> {
    let bounds = state.store.queue_bounds(&request.topic, request.queue_id)?;
    let next = state
        .store
        .query_offset(&request.group, &request.topic, request.queue_id)?
        .unwrap_or(bounds.min_offset);
    encoded(&PullResponse {
        status: PullStatus::OffsetReset as i32,
        next_offset: next,
        min_offset: bounds.min_offset,
        max_offset: bounds.max_offset,
        records: Bytes::new(),
        offset_generation: generation,
    })
}

pub(super) fn no_new_message(state: &BrokerState, request: &PullRequest) -> Result<Bytes> {
    let bounds = state.store.queue_bounds(&request.topic, request.queue_id)?;
    encode_pull(
        state,
        PullStatus::NoNewMessage,
        request.offset,
        bounds.min_offset,
        bounds.max_offset,
        &[],
    )
}

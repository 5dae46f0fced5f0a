//! One function per request code: decode the body, validate with the shared rules, check it
//! against what the nameservers approved (governed brokers only, see [`crate::registry`]), call the
//! store, encode the answer. Most requests are answered at once ([`Reply::Now`]); sends under sync
//! flush, long-polling pulls and topic creation finish later ([`Reply::Later`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use meridian_proto::RequestCode;
use meridian_proto::filter::TagFilter;
use meridian_proto::messages::{
    BrokerRoute, CommitOffsetRequest, ConsumerHeartbeat, ConsumerListResponse, ConsumerMember, CreateTopicRequest,
    DeadLetterResendRequest, GroupMember, LockQueuesRequest, LockQueuesResponse, PullRequest, PullResponse, PullStatus,
    QueryOffsetRequest, QueryOffsetResponse, QueueInfoResponse, QueueOffset, QueueRef, ReplicaFetch,
    ResetOffsetRequest, ResetOffsetResponse, ResetTarget, SearchOffsetRequest, SearchOffsetResponse, SendBackRequest,
    SendRequest, SendResponse, TopicRoute, TopicRouteRequest, perm,
};
use meridian_proto::properties::{
    self, DELAY, DELIVER_AT, KEY_SEPARATOR, KEYS, MSG_ID, PRODUCER_GROUP, SHARDING_KEY, TAGS, TRANSACTION,
};
use meridian_proto::topics::TopicKind;
use meridian_proto::trace;
use meridian_proto::validate::{self, Limits, ValidationError};
use meridian_proto::{delay, topics};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::groups::{ConsumerGroups, MemberInfo};
use crate::locks::QueueLocks;
use crate::metrics::{BrokerMetrics, RequestLabels};
use crate::registry::Governance;
use crate::replication::Replication;
use crate::schedule::{self, Special};
use crate::store::{AppendRequest, CqEntry, FlushMode, MessageStore};

/// A response body still being produced.
pub type PendingReply = meridian_proto::serve::PendingAnswer<BrokerError>;

/// How a request is answered: now, or when a future completes ([`meridian_proto::serve::Answer`]).
pub type Reply = meridian_proto::serve::Answer<BrokerError>;

/// What every handler shares.
pub struct BrokerState {
    /// The storage engine.
    pub store: Arc<MessageStore>,
    /// Consumer group members.
    pub groups: ConsumerGroups,
    /// Metrics.
    pub metrics: Arc<BrokerMetrics>,
    /// The broker's config.
    pub config: BrokerConfig,
    /// Size limits in force.
    pub limits: Limits,
    /// Address clients should use for this broker.
    pub advertise_addr: String,
    /// Cancelled when the broker shuts down, so long polls end at once.
    pub shutdown: CancellationToken,
    /// What the nameservers approved, on a governed broker (`nameservers` set); `None` on a
    /// standalone broker, which serves every topic and group.
    pub governance: Option<Arc<Governance>>,
    /// This broker's role in its group, its lease, and its slaves' acknowledgements.
    pub replication: Arc<Replication>,
    /// Trace emission: the hot paths push into its bounded buffer ([`crate::trace`]).
    pub trace: Arc<crate::trace::TraceEmitter>,
    /// Queue locks of orderly consumers.
    pub locks: QueueLocks,
    /// Throttles the warning for failed one-way requests (no answer carries their error).
    pub oneway_failure_log: meridian_proto::throttle::Throttle,
    /// The last commits of each group's queues, for the lag status ([`crate::lag`]).
    pub lag: crate::lag::LagTracker,
    /// Producers' latency and message-size reports ([`crate::producers`]).
    pub producers: crate::producers::ProducerReports,
}

impl BrokerState {
    /// Whether producers may send to `topic` (always, on a standalone broker).
    fn check_send(&self, topic: &str) -> Result<()> {
        self.governance
            .as_ref()
            .map_or(Ok(()), |governance| governance.check_send(topic))
    }

    /// Whether a send of `messages` messages and `bytes` bytes to `topic` fits this master's share
    /// of the topic's produce limit (always, on a standalone broker); a refusal is counted by
    /// topic and producer group. Every protocol's send path calls it once per send request, after
    /// the request is validated.
    pub fn throttle_send(&self, topic: &str, producer_group: &str, messages: u32, bytes: u64) -> Result<()> {
        let Some(governance) = &self.governance else {
            return Ok(());
        };
        let refused = governance.check_throttle(topic, messages, bytes, Instant::now());
        if refused.is_err() {
            let labels = crate::metrics::ProducerLabels {
                topic: topic.to_owned(),
                producer_group: producer_group.to_owned(),
            };
            self.metrics.throttled_sends.get_or_create(&labels).inc();
            self.metrics
                .throttled_messages
                .get_or_create(&labels)
                .inc_by(u64::from(messages));
        }
        refused
    }

    /// Judges a producer's reported SDK (`language/version`) against the cluster's policy (never,
    /// on a standalone broker): refused when the policy says so, flagged otherwise. Every
    /// protocol's send path calls it once per send request.
    pub fn check_producer_sdk(&self, reported: &[u8], peer: SocketAddr) -> Result<()> {
        self.governance
            .as_ref()
            .map_or(Ok(()), |governance| governance.check_producer_sdk(reported, peer))
    }

    /// Checks a consumer request's group and topic with the shared rules and the approvals.
    pub(crate) fn check_group_topic(&self, group: &str, topic: &str) -> Result<()> {
        validate::validate_group(group)?;
        topics::validate_consumable(topic)?;
        self.check_consume(group, [topic])
    }

    /// Fails unless this broker is the writable master of its group.
    pub(crate) fn check_master(&self) -> Result<()> {
        self.replication
            .check_writable()
            .map_err(|error| BrokerError::NotMaster(error.to_string()))
    }

    /// Whether consumer group `group` may consume `wanted` (always, on a standalone broker). A
    /// group's own retry and dead-letter topics need only the group's approval; other system
    /// topics are refused, but tracer groups read the trace topic freely.
    pub(crate) fn check_consume<'a>(&self, group: &str, wanted: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let wanted: Vec<&str> = wanted.into_iter().collect();
        if trace::is_tracer_group(group) && wanted.iter().all(|topic| trace::is_system_topic(topic)) {
            return Ok(());
        }
        let mut user_topics = Vec::with_capacity(wanted.len());
        for topic in wanted {
            match topics::kind(topic) {
                TopicKind::User => user_topics.push(topic),
                TopicKind::Retry(owner) | TopicKind::DeadLetter(owner) if owner == group => {}
                _ => {
                    return Err(BrokerError::Refused(format!(
                        "topic {topic:?} is a system topic: group {group:?} may read only its own {} and {}",
                        topics::retry_topic(group),
                        topics::dlq_topic(group)
                    )));
                }
            }
        }
        self.governance
            .as_ref()
            .map_or(Ok(()), |governance| governance.check_consume(group, user_topics))
    }
}

impl BrokerState {
    /// A master's state around `config` and an opened `store`, for unit tests of handlers.
    #[cfg(test)]
    pub(crate) fn for_tests(
        config: BrokerConfig,
        store: Arc<MessageStore>,
        governance: Option<Arc<Governance>>,
    ) -> Arc<BrokerState> {
        let metrics: Arc<crate::metrics::BrokerMetrics> = Arc::default();
        let shutdown = CancellationToken::new();
        let replication = Replication::new(&config, store.clone(), metrics.clone(), shutdown.clone());
        replication.assume_master_for_tests();
        Arc::new(BrokerState {
            store,
            groups: ConsumerGroups::new(Duration::from_secs(10)),
            metrics,
            limits: config.limits.limits(),
            advertise_addr: "127.0.0.1:7911".into(),
            config,
            shutdown,
            governance,
            replication,
            trace: Arc::new(crate::trace::TraceEmitter::new(
                crate::trace::TraceConfig::default(),
                crate::trace::Identity::default(),
                Arc::default(),
            )),
            locks: QueueLocks::new(Duration::from_secs(30)),
            oneway_failure_log: meridian_proto::throttle::Throttle::new(Duration::from_secs(10)),
            lag: crate::lag::LagTracker::default(),
            producers: crate::producers::ProducerReports::default(),
        })
    }
}

fn decode<T: Message + Default>(body: Bytes) -> Result<T> {
    T::decode(body).map_err(|error| BrokerError::MalformedBody(error.to_string()))
}

fn encoded(message: &impl Message) -> Result<Bytes> {
    Ok(Bytes::from(message.encode_to_vec()))
}

/// Handles one request from `peer`.
pub fn handle(state: &Arc<BrokerState>, code: RequestCode, body: Bytes, peer: SocketAddr) -> Reply {
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels { request: code.as_str() })
        .inc();
    let now = |result: Result<Bytes>| Reply::Now(result);
    match code {
        RequestCode::Send => send(state, body, peer),
        RequestCode::Pull => pull(state, body, peer),
        RequestCode::TraceReport => now(trace_report(state, body, peer)),
        RequestCode::SendBack => send_back(state, body),
        RequestCode::ResetOffset => later(state, body, reset_offset),
        RequestCode::DeadLetterResend => dead_letter_resend(state, body),
        RequestCode::LockQueues => now(lock_queues(state, body)),
        RequestCode::UnlockQueues => now(unlock_queues(state, body)),
        RequestCode::EndTransaction | RequestCode::CheckTransactions => crate::transaction::handle(state, code, body),
        RequestCode::CommitOffset => now(commit_offset(state, body)),
        RequestCode::QueryOffset => now(query_offset(state, body)),
        RequestCode::QueueInfo => now(queue_info(state, body)),
        RequestCode::SearchOffset => later(state, body, search_offset),
        RequestCode::CreateTopic => create_topic(state, body),
        RequestCode::TopicRoute => now(topic_route(state, body)),
        RequestCode::ConsumerHeartbeat => now(consumer_heartbeat(state, body, peer)),
        RequestCode::ConsumerList => now(consumer_list(state, body)),
        RequestCode::ConsumerLeave => now(consumer_leave(state, body)),
        RequestCode::ProducerHeartbeat => now(crate::producers::producer_heartbeat(state, body, peer)),
        RequestCode::ReplicaFetch => replica_fetch(state, body),
        RequestCode::BrokerHeartbeat
        | RequestCode::RegisterBroker
        | RequestCode::BrokerMetadata
        | RequestCode::NameserverWrite
        | RequestCode::NameserverRead
        | RequestCode::IdcLookup
        | RequestCode::RaftAppend
        | RequestCode::RaftVote
        | RequestCode::RaftSnapshot => now(Err(BrokerError::NotABrokerRequest(code))),
    }
}

/// Checks a message's properties with the shared rules: well formed, within the size limit,
/// valid keys, tag and delay; says whether the message is delayed or transactional.
fn validate_properties(encoded: &[u8], limits: &Limits) -> Result<Special, ValidationError> {
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

fn send(state: &Arc<BrokerState>, body: Bytes, peer: SocketAddr) -> Reply {
    send_many(state, vec![body], peer).pop().expect("one reply per send")
}

fn decode_send(state: &BrokerState, body: Bytes, peer: SocketAddr) -> Result<SendRequest> {
    let request: SendRequest = decode(body)?;
    let mut request = request;
    state.check_producer_sdk(&request.sdk, peer)?;
    validate::validate_topic(&request.topic)?;
    if topics::is_system(&request.topic) {
        return Err(BrokerError::SystemTopic(request.topic));
    }
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
pub fn send_many(state: &Arc<BrokerState>, bodies: Vec<Bytes>, peer: SocketAddr) -> Vec<Reply> {
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
    let decoded: Vec<Result<SendRequest>> = bodies.into_iter().map(|body| decode_send(state, body, peer)).collect();
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

/// A slave's fetch of the commitlog (answered when there is data, or after the slave's wait).
fn replica_fetch(state: &Arc<BrokerState>, body: Bytes) -> Reply {
    let request: ReplicaFetch = match decode(body) {
        Ok(request) => request,
        Err(error) => return Reply::Now(Err(error)),
    };
    let replication = state.replication.clone();
    Reply::Later(Box::pin(async move { replication.serve_fetch(request).await }))
}

/// Encodes a pull response, copying records from the commitlog straight into the body: the
/// records field is written by hand so the bytes are copied once, not once per layer.
fn encode_pull(
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
fn try_pull(state: &BrokerState, request: &PullRequest, filter: &TagFilter) -> Result<Option<Bytes>> {
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

fn pull(state: &Arc<BrokerState>, body: Bytes, peer: SocketAddr) -> Reply {
    let (request, filter) = match decode::<PullRequest>(body).and_then(|request| {
        validate::validate_group(&request.group)?;
        topics::validate_consumable(&request.topic)?;
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
async fn pull_archived(
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
fn matching_records(records: &[u8], filter: &TagFilter) -> Result<(Vec<u8>, u64)> {
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
fn offset_reset(state: &BrokerState, request: &PullRequest, generation: u64) -> Result<Bytes> {
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

fn no_new_message(state: &BrokerState, request: &PullRequest) -> Result<Bytes> {
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

/// A client's trace report: checked, stamped with the client's address, buffered for the trace topic.
fn trace_report(state: &BrokerState, body: Bytes, peer: SocketAddr) -> Result<Bytes> {
    state
        .trace
        .report(body, peer)
        .map_err(|error| BrokerError::InvalidTrace(error.to_string()))?;
    Ok(Bytes::new())
}

fn commit_offset(state: &BrokerState, body: Bytes) -> Result<Bytes> {
    let request: CommitOffsetRequest = decode(body)?;
    state.check_group_topic(&request.group, &request.topic)?;
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

fn query_offset(state: &BrokerState, body: Bytes) -> Result<Bytes> {
    let request: QueryOffsetRequest = decode(body)?;
    state.check_group_topic(&request.group, &request.topic)?;
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
async fn reset_offset(state: Arc<BrokerState>, body: Bytes) -> Result<Bytes> {
    let request: ResetOffsetRequest = decode(body)?;
    state.check_group_topic(&request.group, &request.topic)?;
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

/// A consumer failed a message: to the retry topic or the dead-letter topic, answered once the
/// copy is as durable as an acknowledged send.
fn send_back(state: &Arc<BrokerState>, body: Bytes) -> Reply {
    let sent = decode::<SendBackRequest>(body).and_then(|request| crate::retry::send_back(state, &request));
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

fn dead_letter_resend(state: &Arc<BrokerState>, body: Bytes) -> Reply {
    let resent =
        decode::<DeadLetterResendRequest>(body).and_then(|request| crate::retry::resend_dead_letters(state, &request));
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

fn decode_lock_request(state: &BrokerState, body: Bytes) -> Result<LockQueuesRequest> {
    let request: LockQueuesRequest = decode(body)?;
    state.check_group_topic(&request.group, &request.topic)?;
    validate::validate_client_id(&request.client_id)?;
    Ok(request)
}

fn lock_queues(state: &BrokerState, body: Bytes) -> Result<Bytes> {
    let request = decode_lock_request(state, body)?;
    let locked = state.locks.lock(
        &request.group,
        &request.client_id,
        &request.topic,
        &request.queue_ids,
        Instant::now(),
    );
    encoded(&LockQueuesResponse { locked })
}

fn unlock_queues(state: &BrokerState, body: Bytes) -> Result<Bytes> {
    let request = decode_lock_request(state, body)?;
    state
        .locks
        .unlock(&request.group, &request.client_id, &request.topic, &request.queue_ids);
    Ok(Bytes::new())
}

fn queue_info(state: &BrokerState, body: Bytes) -> Result<Bytes> {
    let request: QueueRef = decode(body)?;
    topics::validate_consumable(&request.topic)?;
    let bounds = state.store.queue_bounds(&request.topic, request.queue_id)?;
    encoded(&QueueInfoResponse {
        min_offset: bounds.min_offset,
        max_offset: bounds.max_offset,
    })
}

async fn search_offset(state: Arc<BrokerState>, body: Bytes) -> Result<Bytes> {
    let request: SearchOffsetRequest = decode(body)?;
    topics::validate_consumable(&request.topic)?;
    let offset = search_by_time(&state, &request.topic, request.queue_id, request.timestamp).await?;
    encoded(&SearchOffsetResponse { offset })
}

/// The first offset of a queue stored at or after `timestamp`, the archive included: when the
/// local commitlog's first message of the queue is already that late, older ones may have been
/// archived and deleted locally, so the archive is asked.
async fn search_by_time(state: &BrokerState, topic: &str, queue_id: u32, timestamp: i64) -> Result<u64> {
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

/// Runs an async handler that needs the state beyond the request's borrow.
fn later<F>(state: &Arc<BrokerState>, body: Bytes, handler: impl FnOnce(Arc<BrokerState>, Bytes) -> F) -> Reply
where
    F: std::future::Future<Output = Result<Bytes>> + Send + 'static,
{
    Reply::Later(Box::pin(handler(state.clone(), body)))
}

fn create_topic(state: &Arc<BrokerState>, body: Bytes) -> Reply {
    let request = match decode::<CreateTopicRequest>(body) {
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

fn topic_route(state: &BrokerState, body: Bytes) -> Result<Bytes> {
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

fn consumer_heartbeat(state: &BrokerState, body: Bytes, peer: SocketAddr) -> Result<Bytes> {
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
    state.check_consume(&request.group, request.topics.iter().map(String::as_str))?;
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

fn consumer_list(state: &BrokerState, body: Bytes) -> Result<Bytes> {
    let request: GroupMember = decode(body)?;
    validate::validate_group(&request.group)?;
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

fn consumer_leave(state: &BrokerState, body: Bytes) -> Result<Bytes> {
    let request: GroupMember = decode(body)?;
    validate::validate_group(&request.group)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Approved;
    use meridian_proto::ErrorCode;
    use meridian_proto::messages::{BrokerMetadata, GroupGrant, MessageData, TopicGrant};

    fn governed_state(dir: &std::path::Path) -> Arc<BrokerState> {
        let config = BrokerConfig {
            nameservers: vec!["127.0.0.1:7800".into()],
            data_dir: dir.to_owned(),
            idc: "dc1".into(),
            ..BrokerConfig::default()
        };
        let mut store_config = config.store.clone();
        store_config.segment_size = 1 << 20;
        let store = MessageStore::open(dir, store_config, "127.0.0.1:7911".parse().unwrap(), Arc::default()).unwrap();
        let governance = Arc::new(Governance::new(config.broker_name.clone(), config.nameservers.clone()));
        let grant = |name: &str, perm| TopicGrant {
            name: name.into(),
            queues: 2,
            perm,
            ..TopicGrant::default()
        };
        governance.replace(Approved::from_metadata(BrokerMetadata {
            version: 1,
            topics: vec![grant("orders", perm::READ | perm::WRITE), grant("archive", perm::READ)],
            groups: vec![GroupGrant {
                name: "billing".into(),
                topics: vec!["orders".into()],
                max_retries: 16,
                broadcasting: false,
            }],
            sdk_policy: None,
        }));
        for topic in ["orders", "archive", "payments"] {
            store.create_topic(topic, 2).unwrap();
        }
        BrokerState::for_tests(config, store, Some(governance))
    }

    fn send_body(topic: &str) -> Bytes {
        let request = SendRequest {
            topic: topic.into(),
            queue_id: 0,
            messages: vec![MessageData {
                flags: 0,
                born_timestamp: 1,
                properties: Bytes::new(),
                body: Bytes::from_static(b"x"),
                reconsume_count: 0,
            }],
            producer_group: String::new(),
            sdk: Default::default(),
        };
        Bytes::from(request.encode_to_vec())
    }

    fn now(reply: Reply) -> Result<Bytes> {
        match reply {
            Reply::Now(result) => result,
            Reply::Later(_) => panic!("expected an immediate answer"),
        }
    }

    #[test]
    fn a_pull_past_the_confirmed_messages_waits_for_them_instead_of_moving_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::default();
        let options = crate::store::StoreOptions {
            replicated: true,
            ..Default::default()
        };
        let store = MessageStore::open_with(
            dir.path(),
            config.store.clone(),
            "127.0.0.1:7911".parse().unwrap(),
            Arc::default(),
            options,
        )
        .unwrap();
        store.create_topic("orders", 1).unwrap();
        let state = BrokerState::for_tests(config, store, None);
        let peer = "127.0.0.1:5000".parse().unwrap();
        let appended = state
            .store
            .append(
                "orders",
                Some(0),
                &[decode_send(&state, send_body("orders"), peer).unwrap().messages[0].clone()],
                peer,
            )
            .unwrap();
        let pull_at = |offset| PullRequest {
            group: "billing".into(),
            topic: "orders".into(),
            queue_id: 0,
            offset,
            max_count: 32,
            max_bytes: 1 << 20,
            ..Default::default()
        };
        let all = TagFilter::parse("*").unwrap();
        assert!(
            try_pull(&state, &pull_at(0), &all).unwrap().is_none(),
            "nothing is confirmed yet"
        );
        assert!(
            try_pull(&state, &pull_at(1), &all).unwrap().is_none(),
            "an offset within what is written waits"
        );
        let moved = PullResponse::decode(try_pull(&state, &pull_at(5), &all).unwrap().unwrap()).unwrap();
        assert_eq!(
            moved.status,
            PullStatus::OffsetMoved as i32,
            "an offset past what is written moves"
        );
        state.store.raise_replication_limit(appended.end_offset);
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            if let Some(body) = try_pull(&state, &pull_at(0), &all).unwrap() {
                break PullResponse::decode(body).unwrap();
            }
            assert!(Instant::now() < deadline, "the confirmed message never became visible");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!((found.status, found.next_offset), (PullStatus::Found as i32, 1));
        state.store.shutdown();
    }

    #[test]
    fn a_refused_topic_fails_only_its_own_send_in_a_combined_append() {
        let dir = tempfile::tempdir().unwrap();
        let state = governed_state(dir.path());
        let peer = "127.0.0.1:5000".parse().unwrap();
        let bodies = vec![
            send_body("orders"),
            send_body("payments"),
            send_body("archive"),
            send_body("orders"),
        ];
        let outcomes: Vec<std::result::Result<u64, ErrorCode>> = send_many(&state, bodies, peer)
            .into_iter()
            .map(|reply| {
                now(reply)
                    .map(|body| SendResponse::decode(body).unwrap().results[0].queue_offset)
                    .map_err(|error| error.code())
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                Ok(0),
                Err(ErrorCode::NotApproved),
                Err(ErrorCode::FailedPrecondition),
                Ok(1)
            ]
        );
        state.store.shutdown();
    }

    #[test]
    fn a_broker_in_an_evacuated_idc_refuses_sends_until_restored() {
        let dir = tempfile::tempdir().unwrap();
        let state = governed_state(dir.path());
        let peer = "127.0.0.1:5000".parse().unwrap();
        let governance = state.governance.clone().unwrap();
        let send = || now(send_many(&state, vec![send_body("orders")], peer).pop().unwrap());
        governance.set_evacuated(vec!["dc2".into()]);
        assert!(send().is_ok(), "another IDC's drill changes nothing here");
        governance.set_evacuated(vec!["dc1".into()]);
        let error = send().unwrap_err();
        assert_eq!(error.code(), ErrorCode::Evacuated);
        assert!(error.code().is_retriable());
        assert!(
            error.to_string().contains("\"dc1\", which a failover drill evacuated"),
            "{error}"
        );
        governance.set_evacuated(Vec::new());
        assert!(send().is_ok());
        state.store.shutdown();
    }

    #[test]
    fn consumer_requests_need_an_approved_group_granted_the_topic() {
        let dir = tempfile::tempdir().unwrap();
        let state = governed_state(dir.path());
        let commit = |group: &str, topic: &str| {
            let request = CommitOffsetRequest {
                group: group.into(),
                topic: topic.into(),
                queue_id: 0,
                offset: 0,
                ..Default::default()
            };
            commit_offset(&state, Bytes::from(request.encode_to_vec())).map_err(|error| error.code())
        };
        assert_eq!(commit("billing", "orders"), Ok(Bytes::new()));
        assert_eq!(commit("audit", "orders"), Err(ErrorCode::NotApproved));
        assert_eq!(commit("billing", "archive"), Err(ErrorCode::FailedPrecondition));

        let heartbeat = |topics: &[&str]| {
            let request = ConsumerHeartbeat {
                group: "billing".into(),
                client_id: "c1".into(),
                topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
                sdk_version: String::new(),
                ..ConsumerHeartbeat::default()
            };
            consumer_heartbeat(
                &state,
                Bytes::from(request.encode_to_vec()),
                "127.0.0.1:5000".parse().unwrap(),
            )
            .map_err(|error| error.code())
        };
        assert!(heartbeat(&["orders"]).is_ok());
        assert_eq!(heartbeat(&["orders", "payments"]), Err(ErrorCode::FailedPrecondition));

        let pull = PullRequest {
            group: "audit".into(),
            topic: "orders".into(),
            queue_id: 0,
            offset: 0,
            max_count: 1,
            max_bytes: 1024,
            long_poll_ms: 0,
            ..Default::default()
        };
        let error = now(super::pull(
            &state,
            Bytes::from(pull.encode_to_vec()),
            "127.0.0.1:5000".parse().unwrap(),
        ))
        .unwrap_err();
        assert_eq!(error.code(), ErrorCode::NotApproved);
        assert!(error.to_string().contains("meridian group request audit"), "{error}");

        let create = CreateTopicRequest {
            topic: "new".into(),
            queues: 1,
        };
        let error = now(create_topic(&state, Bytes::from(create.encode_to_vec()))).unwrap_err();
        assert_eq!(error.code(), ErrorCode::FailedPrecondition);
        state.store.shutdown();
    }
}

//! Transactional messages: half messages, their outcomes, and check-backs.
//!
//! A transactional send is stored as a *half message* of [`HALF_TOPIC`] (queue 0) by
//! [`crate::schedule::rehome`]; consumers never see that topic. The producer runs its local
//! transaction and ends it with [`RequestCode::EndTransaction`](meridian_proto::RequestCode):
//! - *commit* appends the message to its real topic and queue (same id, keys, tag, body, born time
//!   and host; delayed first when it carries a delay), then an *op record* to [`HALF_OP_TOPIC`];
//! - *rollback* appends only the op record.
//!
//! Both are acknowledged once what they wrote is as durable as an acknowledged send. The op record
//! settles the half message for good: it names the transaction by the commitlog offset of its
//! first half message (its *key*), kept as the op record's tag, so the consume queue of the op
//! topic finds the ops of a key by tag hash without reading the commitlog. An EndTransaction for a
//! transaction that is already settled is answered from its op record: the same outcome again is a
//! no-op (a retried request), the other outcome is refused (a late commit cannot resurrect a
//! transaction the broker already rolled back).
//!
//! **Check-back.** On the master, [`run`] walks the half queue from its persisted position (an
//! offset of the reserved group [`TRANSACTION_GROUP`]): a half message with an op record is
//! skipped; one younger than `check_interval_ms` stops the walk (the queue is in store-time
//! order); any other is due for a check. As RocketMQ does, a due half message is appended again at
//! the tail of the half queue with its check count one higher, and the position moves past the
//! old one; the copy is what producers are asked about. Past `check_max` checks the transaction is
//! rolled back (an op record, a warning). Everything is in the commitlog and the replicated
//! offsets table, so a restarted broker or a new master after a failover continues where the old
//! one stopped; a crash between appending copies and committing the position only makes a
//! transaction be asked about twice.
//!
//! Unlike RocketMQ, the broker does not call producers (our protocol has no server-to-client
//! requests): producers poll [`RequestCode::CheckTransactions`](meridian_proto::RequestCode) and
//! get the copies waiting for an answer that belong to their producer group ([`pending_checks`]).
//!
//! Nothing here keeps memory between requests: every answer is computed from the half and op
//! queues, from the position on (one check interval of traffic) for check-backs, from the
//! transaction's first half message on for EndTransaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use meridian_proto::messages::{
    CheckTransactionsRequest, CheckTransactionsResponse, EndTransactionRequest, MessageData, SendRequest, SendResult,
    TransactionCheck, TransactionOutcome,
};
use meridian_proto::properties::{self, DELAY, DELIVER_AT, PRODUCER_GROUP, PropertiesBuilder, REAL_QUEUE, REAL_TOPIC};
use meridian_proto::record::Record;
use meridian_proto::time::now_millis;
use meridian_proto::topics::{HALF_OP_TOPIC, HALF_TOPIC};
use meridian_proto::trace::TraceType;
use meridian_proto::validate;
use tokio_util::sync::CancellationToken;

use crate::error::{BrokerError, Result};
use crate::metrics::OutcomeLabels;
use crate::schedule::{self, Special, copy_message, ensure_destination, real_destination};
use crate::state::BrokerState;
use crate::store::{AppendRequest, MessageStore};
use crate::trace::Step;

/// The reserved group whose offset of [`HALF_TOPIC`] queue 0 is how far the check-back walk went.
pub const TRANSACTION_GROUP: &str = "%TRANSACTION%";
/// Set by the broker on a half message it appended again for a check-back: the checks so far.
/// `%` keeps these names apart from every user property (user names are `[A-Za-z0-9_.-]`).
const CHECKS: &str = "%TX_CHECKS";
/// Set by the broker on a check-back copy: `<key>@<store ms>` of the transaction's first half.
const FIRST: &str = "%TX_FIRST";
/// On an op record: `commit` or `rollback`.
const OUTCOME: &str = "%TX_OUTCOME";
/// On an op record: why (`producer`, `check`, `expired`).
const REASON: &str = "%TX_REASON";
/// The producer group, as the Meridian SDK also records it in a user property: `PGROUP` is
/// reserved, and the send path keeps the request's producer group only to check it is there.
/// Read when `PGROUP` is absent; removed when the message is committed.
pub const GROUP_PROPERTY: &str = "meridian.tx.group";
/// Ops written up to this long before a half message was stored are looked at too, so a clock
/// step (or a new master's clock) cannot hide an op record.
const CLOCK_MARGIN_MS: i64 = 60_000;
/// Most half messages the check-back walk looks at per round.
const CHECK_BATCH: u32 = 256;
/// Most half messages one CheckTransactions poll reads.
const POLL_SCAN_LIMIT: u64 = 8192;
/// Most checks one poll returns.
const MAX_CHECKS_PER_POLL: u32 = 256;

pub use crate::config::TransactionConfig;

fn corrupt(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Corrupt(error.to_string())
}

/// What a half message (first or check-back copy) says about its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Half {
    /// Commitlog offset of the transaction's first half message: names the transaction.
    key: u64,
    /// When the first half message was stored (Unix ms): no op record of it is older.
    since_ms: i64,
    /// Check-backs so far (0 on the first half message).
    checks: u32,
}

impl Half {
    fn of(record: &Record<'_>, commitlog_offset: u64) -> Half {
        let props = record.properties();
        let first = properties::get(props, FIRST).and_then(|first| {
            let (key, since) = first.split_once('@')?;
            Some((key.parse().ok()?, since.parse().ok()?))
        });
        let (key, since_ms) = first.unwrap_or((commitlog_offset, record.store_timestamp()));
        let checks = properties::get(props, CHECKS)
            .and_then(|checks| checks.parse().ok())
            .unwrap_or(0);
        Half { key, since_ms, checks }
    }
}

/// The producer group of a half message.
fn producer_group<'a>(record: &Record<'a>) -> Option<&'a str> {
    let props = record.properties();
    properties::get(props, PRODUCER_GROUP)
        .or_else(|| properties::get(props, GROUP_PROPERTY))
        .filter(|group| !group.is_empty())
}

/// Properties of a committed message as its real topic stores it, and as a check shows it: the
/// producer's own, without what the broker added to route and check it.
fn user_properties(record: &Record<'_>) -> Bytes {
    let mut builder = PropertiesBuilder::new();
    builder.copy_except(
        record.properties(),
        &[REAL_TOPIC, REAL_QUEUE, CHECKS, FIRST, GROUP_PROPERTY],
    );
    Bytes::from(builder.finish())
}

/// How an op record ended a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Commit,
    Rollback,
}

impl Settled {
    fn as_str(self) -> &'static str {
        match self {
            Settled::Commit => "commit",
            Settled::Rollback => "rollback",
        }
    }

    fn past_tense(self) -> &'static str {
        match self {
            Settled::Commit => "committed",
            Settled::Rollback => "rolled back",
        }
    }
}

/// The op records written since a time, by tag hash (the key's), pointing at their records.
struct OpIndex {
    by_hash: HashMap<u64, Vec<u64>>,
}

impl OpIndex {
    /// Every op record stored at or after `since_ms` minus [`CLOCK_MARGIN_MS`].
    fn since(store: &MessageStore, since_ms: i64) -> Result<OpIndex> {
        let queue = store.consume_queue(HALF_OP_TOPIC, 0)?;
        let mut offset = store.search_offset(HALF_OP_TOPIC, 0, since_ms.saturating_sub(CLOCK_MARGIN_MS))?;
        let mut by_hash: HashMap<u64, Vec<u64>> = HashMap::new();
        while offset < queue.max_offset() {
            let entries = store.read_entries(&queue, offset, 1024, u32::MAX)?;
            if entries.is_empty() {
                break;
            }
            offset += entries.len() as u64;
            for entry in entries {
                by_hash.entry(entry.tag_hash).or_default().push(entry.commitlog_offset);
            }
        }
        Ok(OpIndex { by_hash })
    }

    /// How the transaction `key` was settled, if an op record says.
    fn outcome(&self, store: &MessageStore, key: u64) -> Result<Option<Settled>> {
        let tag = key.to_string();
        let Some(candidates) = self.by_hash.get(&properties::tag_hash(&tag)) else {
            return Ok(None);
        };
        for op_offset in candidates {
            let bytes = store.read_record(*op_offset)?;
            let record = Record::parse(&bytes).map_err(corrupt)?;
            if record.tag() == Some(tag.as_str()) {
                return Ok(Some(match properties::get(record.properties(), OUTCOME) {
                    Some("commit") => Settled::Commit,
                    _ => Settled::Rollback,
                }));
            }
        }
        Ok(None)
    }
}

/// An op record settling transaction `key`.
fn op_record(key: u64, msg_id: &str, outcome: Settled, reason: &str) -> MessageData {
    let mut builder = PropertiesBuilder::new();
    builder.system(properties::TAGS, &key.to_string());
    builder.system(OUTCOME, outcome.as_str());
    builder.system(REASON, reason);
    MessageData {
        flags: 0,
        born_timestamp: now_millis(),
        properties: Bytes::from(builder.finish()),
        body: Bytes::copy_from_slice(msg_id.as_bytes()),
        reconsume_count: 0,
    }
}

/// One append of an EndTransaction or a check-back round.
struct Write {
    topic: String,
    queue_id: Option<u32>,
    message: MessageData,
    born_host: std::net::SocketAddr,
}

/// Appends `writes` in order with one write; returns the commitlog offset past them (0: none)
/// and where each write went.
fn append_all(state: &BrokerState, writes: &[Write]) -> Result<(u64, Vec<SendResult>)> {
    if writes.is_empty() {
        return Ok((0, Vec::new()));
    }
    let requests: Vec<AppendRequest<'_>> = writes
        .iter()
        .map(|write| AppendRequest {
            topic: &write.topic,
            queue_id: write.queue_id,
            messages: std::slice::from_ref(&write.message),
            born_host: write.born_host,
        })
        .collect();
    let mut end_offset = 0;
    let mut placed = Vec::with_capacity(writes.len());
    for outcome in state.store.append_many(&requests) {
        let appended = outcome?;
        end_offset = end_offset.max(appended.end_offset);
        placed.extend(appended.results);
    }
    state.replication.notify_appended();
    Ok((end_offset, placed))
}

/// Traces the end of a transaction: `placed` is the topic a committed message went to (its real
/// one, or a delay slot's) and where in it.
fn trace_end(
    state: &BrokerState,
    record: &Record<'_>,
    outcome: Settled,
    placed: Option<(&str, &SendResult)>,
    error: &str,
) {
    let real_topic = real_destination(record).map(|(topic, _)| topic).unwrap_or_default();
    let kind = match outcome {
        Settled::Commit => TraceType::TxCommit,
        Settled::Rollback => TraceType::TxRollback,
    };
    state.trace.step(
        record,
        Step {
            kind,
            user_topic: &real_topic,
            topic: placed.map_or(HALF_TOPIC, |(topic, _)| topic),
            placed: placed.map(|(_, result)| result),
            group: producer_group(record).unwrap_or_default(),
            deliver_at: 0,
            error,
        },
    );
}

/// The committed message: to its real topic and queue, or to a delay slot when it carries a delay
/// (counted from the commit, as RocketMQ does).
fn committed_write(record: &Record<'_>, producer_group: &str) -> Result<Write> {
    let Some((topic, queue_id)) = real_destination(record) else {
        return Err(BrokerError::Corrupt(format!(
            "half message {} has no real topic",
            record.msg_id().unwrap_or_default()
        )));
    };
    let message = copy_message(record, user_properties(record), record.reconsume_count());
    let delayed = properties::get(&message.properties, DELAY).is_some()
        || properties::get(&message.properties, DELIVER_AT).is_some();
    if !delayed {
        return Ok(Write {
            topic,
            queue_id,
            message,
            born_host: record.born_host(),
        });
    }
    let mut request = SendRequest {
        topic,
        queue_id: queue_id.map_or(-1, |queue| queue as i32),
        messages: vec![message],
        producer_group: producer_group.to_owned(),
        sdk: Default::default(),
    };
    let special = Special {
        delayed: true,
        transactional: false,
    };
    schedule::rehome(&mut request, special, now_millis())?;
    let message = request.messages.pop().expect("rehome keeps the one message");
    Ok(Write {
        queue_id: u32::try_from(request.queue_id).ok(),
        topic: request.topic,
        message,
        born_host: record.born_host(),
    })
}

/// Ends a transaction as its producer says. Returns the commitlog offset past what it appended
/// (0 when nothing was: an unknown outcome, or a repeated one), to be waited on before answering.
/// `authorize` is asked about the half message's real topic before anything changes (the
/// caller's ACL check: PUB on that topic).
pub fn end_transaction(
    state: &BrokerState,
    request: &EndTransactionRequest,
    authorize: impl FnOnce(&str) -> Result<()>,
) -> Result<u64> {
    validate::validate_group(&request.producer_group)?;
    let outcome = TransactionOutcome::try_from(request.outcome).map_err(|_| {
        BrokerError::MalformedBody(format!(
            "transaction outcome {} is unknown: 0 unknown, 1 commit, 2 rollback",
            request.outcome
        ))
    })?;
    state.check_master()?;
    let bytes = state.store.read_record(request.half_offset)?;
    let record = Record::parse(&bytes).map_err(corrupt)?;
    if record.topic() != HALF_TOPIC || record.msg_id() != Some(request.msg_id.as_str()) {
        return Err(BrokerError::Refused(format!(
            "the record at commitlog offset {} is not half message {:?}; end a transaction with the commitlog_offset and msg_id of its transactional send (or of the check-back)",
            request.half_offset, request.msg_id
        )));
    }
    if let Some(group) = producer_group(&record)
        && group != request.producer_group
    {
        return Err(BrokerError::Refused(format!(
            "half message {} belongs to producer group {group:?}, not {:?}; only its own group may end it",
            request.msg_id, request.producer_group
        )));
    }
    authorize(properties::get(record.properties(), REAL_TOPIC).unwrap_or_default())?;
    let wanted = match outcome {
        // The check-back asks again later.
        TransactionOutcome::Unknown => return Ok(0),
        TransactionOutcome::Commit => Settled::Commit,
        TransactionOutcome::Rollback => Settled::Rollback,
    };
    let half = Half::of(&record, request.half_offset);
    let ops = OpIndex::since(&state.store, half.since_ms)?;
    match ops.outcome(&state.store, half.key)? {
        Some(done) if done == wanted => return Ok(0),
        Some(done) => {
            return Err(BrokerError::Refused(format!(
                "the transaction of message {} was already {}; it cannot be {} now",
                request.msg_id,
                done.past_tense(),
                wanted.past_tense()
            )));
        }
        None => {}
    }
    let reason = if request.from_check { "check" } else { "producer" };
    let mut writes = Vec::with_capacity(2);
    if wanted == Settled::Commit {
        if let Some((topic, _)) = real_destination(&record) {
            ensure_destination(&state.store, &topic)?;
        }
        // The message before its op record: a crash between them can only make a check-back
        // commit it twice, never lose it.
        writes.push(committed_write(&record, &request.producer_group)?);
    }
    writes.push(Write {
        topic: HALF_OP_TOPIC.to_owned(),
        queue_id: Some(0),
        message: op_record(half.key, &request.msg_id, wanted, reason),
        born_host: record.born_host(),
    });
    let (end_offset, placed) = append_all(state, &writes)?;
    let committed = (wanted == Settled::Commit)
        .then(|| Some((writes[0].topic.as_str(), placed.first()?)))
        .flatten();
    trace_end(state, &record, wanted, committed, "");
    state
        .metrics
        .transactions
        .get_or_create(&OutcomeLabels {
            outcome: wanted.as_str(),
        })
        .inc();
    tracing::debug!(
        msg_id = request.msg_id,
        producer_group = request.producer_group,
        outcome = wanted.as_str(),
        reason,
        "transaction ended"
    );
    Ok(end_offset)
}

/// The half messages of `request.producer_group` waiting for a check-back answer.
pub fn pending_checks(state: &BrokerState, request: &CheckTransactionsRequest) -> Result<CheckTransactionsResponse> {
    validate::validate_group(&request.producer_group)?;
    state.check_master()?;
    let max = if request.max == 0 {
        32
    } else {
        request.max.min(MAX_CHECKS_PER_POLL)
    } as usize;
    let store = &state.store;
    let queue = store.consume_queue(HALF_TOPIC, 0)?;
    let start = store
        .query_offset(TRANSACTION_GROUP, HALF_TOPIC, 0)?
        .unwrap_or(0)
        .max(queue.min_offset());
    let end = queue.max_offset().min(start + POLL_SCAN_LIMIT);
    let mut checks = Vec::new();
    if start >= end {
        return Ok(CheckTransactionsResponse { checks });
    }
    let mut ops: Option<OpIndex> = None;
    let mut seen = HashSet::new();
    let mut offset = start;
    while offset < end && checks.len() < max {
        let entries = store.read_entries(&queue, offset, (end - offset).min(256) as u32, 8 << 20)?;
        if entries.is_empty() {
            break;
        }
        offset += entries.len() as u64;
        for entry in entries {
            let bytes = store.read_record(entry.commitlog_offset)?;
            let record = Record::parse(&bytes).map_err(corrupt)?;
            if ops.is_none() {
                ops = Some(OpIndex::since(store, record.store_timestamp())?);
            }
            let half = Half::of(&record, entry.commitlog_offset);
            if half.checks == 0
                || producer_group(&record) != Some(request.producer_group.as_str())
                || !seen.insert(half.key)
                || ops.as_ref().expect("built above").outcome(store, half.key)?.is_some()
            {
                continue;
            }
            checks.push(TransactionCheck {
                msg_id: record.msg_id().unwrap_or_default().to_owned(),
                half_offset: entry.commitlog_offset,
                topic: real_destination(&record).map(|(topic, _)| topic).unwrap_or_default(),
                properties: user_properties(&record),
                body: Bytes::copy_from_slice(record.body()),
                check_count: half.checks,
            });
            if checks.len() >= max {
                break;
            }
        }
    }
    Ok(CheckTransactionsResponse { checks })
}

/// What one round of the check-back walk did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Round {
    /// Half messages the position moved past.
    passed: u64,
    /// Appended again for a check-back.
    checked: u64,
    /// Rolled back after `check_max` checks.
    expired: u64,
}

/// One round of the check-back walk from the persisted position.
async fn check_round(state: &BrokerState, config: &TransactionConfig, now_ms: i64) -> Result<Round> {
    let store = &state.store;
    let queue = store.consume_queue(HALF_TOPIC, 0)?;
    let start = store
        .query_offset(TRANSACTION_GROUP, HALF_TOPIC, 0)?
        .unwrap_or(0)
        .max(queue.min_offset());
    if start >= queue.max_offset() {
        return Ok(Round::default());
    }
    let entries = store.read_entries(&queue, start, CHECK_BATCH, 8 << 20)?;
    let mut ops: Option<OpIndex> = None;
    let mut writes = Vec::new();
    let mut expired = Vec::new();
    let mut round = Round::default();
    let interval = config.check_interval_ms as i64;
    for entry in &entries {
        let bytes = store.read_record(entry.commitlog_offset)?;
        let record = Record::parse(&bytes).map_err(corrupt)?;
        if ops.is_none() {
            ops = Some(OpIndex::since(store, record.store_timestamp())?);
        }
        let half = Half::of(&record, entry.commitlog_offset);
        let settled = ops.as_ref().expect("built above").outcome(store, half.key)?.is_some();
        if !settled && now_ms - record.store_timestamp() < interval {
            // In store-time order: nothing after this one is due either.
            break;
        }
        round.passed += 1;
        if settled {
            continue;
        }
        let msg_id = record.msg_id().unwrap_or_default();
        if half.checks >= config.check_max {
            tracing::warn!(
                msg_id,
                producer_group = producer_group(&record).unwrap_or_default(),
                topic = real_destination(&record).map(|(topic, _)| topic).unwrap_or_default(),
                checks = half.checks,
                "transaction rolled back: its producer group left it undecided through every check-back (transaction.check_max)"
            );
            round.expired += 1;
            expired.push(bytes.clone());
            writes.push(Write {
                topic: HALF_OP_TOPIC.to_owned(),
                queue_id: Some(0),
                message: op_record(half.key, msg_id, Settled::Rollback, "expired"),
                born_host: record.born_host(),
            });
            continue;
        }
        let mut builder = PropertiesBuilder::new();
        builder.copy_except(record.properties(), &[CHECKS, FIRST]);
        builder.system(CHECKS, &(half.checks + 1).to_string());
        builder.system(FIRST, &format!("{}@{}", half.key, half.since_ms));
        round.checked += 1;
        writes.push(Write {
            topic: HALF_TOPIC.to_owned(),
            queue_id: Some(0),
            message: copy_message(&record, Bytes::from(builder.finish()), record.reconsume_count()),
            born_host: record.born_host(),
        });
    }
    if round.passed == 0 {
        return Ok(round);
    }
    let (end_offset, _) = append_all(state, &writes)?;
    for record in &expired {
        let record = Record::parse(record).map_err(corrupt)?;
        let error = format!(
            "left undecided through {} check-backs (transaction.check_max); rolled back",
            config.check_max
        );
        trace_end(state, &record, Settled::Rollback, None, &error);
    }
    let metrics = &state.metrics.transactions;
    metrics
        .get_or_create(&OutcomeLabels { outcome: "expired" })
        .inc_by(round.expired);
    metrics
        .get_or_create(&OutcomeLabels { outcome: "check" })
        .inc_by(round.checked);
    if end_offset > 0 {
        schedule::wait_durable(state, end_offset).await?;
    }
    store.commit_offset(TRANSACTION_GROUP, HALF_TOPIC, 0, start + round.passed)?;
    Ok(round)
}

/// Checks back undecided transactions while this broker is a writable master.
pub async fn run(state: Arc<BrokerState>, stop: CancellationToken) {
    let config = state.config.transaction.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.tick()) => {}
        }
        if state.replication.check_writable().is_err() {
            continue;
        }
        loop {
            match check_round(&state, &config, now_millis()).await {
                Ok(round) => {
                    if round.checked + round.expired > 0 {
                        tracing::debug!(
                            checked = round.checked,
                            expired = round.expired,
                            "transactions checked back"
                        );
                    }
                    // A full batch: more may be due.
                    if round.passed < u64::from(CHECK_BATCH) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "checking back transactions failed; retrying next tick");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::handlers::send_many;
    use crate::reply::Reply;
    use meridian_proto::ErrorCode;
    use meridian_proto::messages::SendResponse;
    use meridian_proto::topics::DELAY_TOPIC;
    use prost::Message;
    use std::time::Duration;

    const GROUP: &str = "payments-tx";

    fn state(dir: &std::path::Path, transaction: TransactionConfig) -> Arc<BrokerState> {
        let config = BrokerConfig {
            data_dir: dir.to_owned(),
            transaction,
            ..BrokerConfig::default()
        };
        let mut store_config = config.store.clone();
        store_config.segment_size = 1 << 20;
        let store = MessageStore::open(dir, store_config, "127.0.0.1:7911".parse().unwrap(), Arc::default()).unwrap();
        schedule::ensure_topics(&store).unwrap();
        store.create_topic("orders", 2).unwrap();
        BrokerState::for_tests(config, store, None)
    }

    fn fast() -> TransactionConfig {
        TransactionConfig {
            check_interval_ms: 100,
            check_max: 2,
        }
    }

    /// Waits until everything appended is in the consume queues.
    fn dispatched(state: &BrokerState) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while state.store.dispatched_offset() < state.store.committed_offset() {
            assert!(std::time::Instant::now() < deadline, "dispatch did not catch up");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends a message through the send path; returns (msg_id, commitlog offset).
    fn send(state: &Arc<BrokerState>, transactional: bool, group: &str, extra: &[(&str, &str)]) -> (String, u64) {
        let mut builder = PropertiesBuilder::new();
        builder.msg_id(&meridian_proto::MessageId::generate().to_string());
        builder.keys(&["order-1"]).unwrap();
        builder.tag("created").unwrap();
        if transactional {
            builder.transactional();
        }
        for (name, value) in extra {
            builder.system(name, value);
        }
        let request = SendRequest {
            topic: "orders".into(),
            queue_id: 1,
            messages: vec![MessageData {
                flags: 0,
                born_timestamp: 7,
                properties: Bytes::from(builder.finish()),
                body: Bytes::from_static(b"pay 10"),
                reconsume_count: 0,
            }],
            producer_group: group.into(),
            sdk: Default::default(),
        };
        let reply = send_many(
            state,
            &meridian_proto::auth::Principal::Node,
            vec![Bytes::from(request.encode_to_vec())],
            "127.0.0.1:5000".parse().unwrap(),
        )
        .pop()
        .unwrap();
        let Reply::Now(body) = reply else {
            panic!("an async-flush standalone broker answers sends at once")
        };
        let result = SendResponse::decode(body.unwrap()).unwrap().results.remove(0);
        dispatched(state);
        (result.msg_id, result.commitlog_offset)
    }

    fn end(
        state: &Arc<BrokerState>,
        msg_id: &str,
        half_offset: u64,
        outcome: TransactionOutcome,
    ) -> std::result::Result<u64, BrokerError> {
        let request = EndTransactionRequest {
            producer_group: GROUP.into(),
            msg_id: msg_id.into(),
            half_offset,
            outcome: outcome as i32,
            from_check: false,
        };
        let ended = end_transaction(state, &request, |_| Ok(()));
        dispatched(state);
        ended
    }

    fn stored(state: &BrokerState, topic: &str) -> Vec<meridian_proto::record::StoredMessage> {
        let mut found = Vec::new();
        for queue_id in 0..state.store.topic_queues(topic).unwrap() {
            let queue = state.store.consume_queue(topic, queue_id).unwrap();
            for entry in state.store.read_entries(&queue, 0, 1024, u32::MAX).unwrap() {
                let bytes = state.store.read_record(entry.commitlog_offset).unwrap();
                found.extend(meridian_proto::record::decode_all(&bytes).unwrap());
            }
        }
        found
    }

    fn checks(state: &BrokerState, group: &str) -> Vec<TransactionCheck> {
        let request = CheckTransactionsRequest {
            producer_group: group.into(),
            client_id: "p1".into(),
            max: 0,
        };
        pending_checks(state, &request).unwrap().checks
    }

    #[test]
    fn a_committed_half_message_reaches_its_topic_once_with_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), fast());
        let (msg_id, offset) = send(&state, true, GROUP, &[(GROUP_PROPERTY, GROUP)]);
        assert!(stored(&state, "orders").is_empty(), "a half message is invisible");
        assert_eq!(stored(&state, HALF_TOPIC).len(), 1);

        assert!(end(&state, &msg_id, offset, TransactionOutcome::Commit).unwrap() > 0);
        let delivered = stored(&state, "orders");
        assert_eq!(delivered.len(), 1);
        let message = &delivered[0];
        assert_eq!(message.msg_id(), msg_id);
        assert_eq!(message.queue_id, 1, "the queue the producer picked");
        assert_eq!(message.keys().collect::<Vec<_>>(), ["order-1"]);
        assert_eq!(message.tag(), Some("created"));
        assert_eq!(message.born_timestamp, 7);
        assert_eq!(&message.body[..], b"pay 10");
        for hidden in [REAL_TOPIC, REAL_QUEUE, GROUP_PROPERTY, CHECKS, FIRST] {
            assert_eq!(message.property(hidden), None, "{hidden} is not delivered");
        }

        // A retried commit changes nothing; a rollback after it is refused.
        assert_eq!(end(&state, &msg_id, offset, TransactionOutcome::Commit).unwrap(), 0);
        let error = end(&state, &msg_id, offset, TransactionOutcome::Rollback).unwrap_err();
        assert!(error.to_string().contains("already committed"), "{error}");
        assert_eq!(stored(&state, "orders").len(), 1);
        state.store.shutdown();
    }

    #[test]
    fn a_rolled_back_half_message_is_never_delivered_nor_checked() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), fast());
        let (msg_id, offset) = send(&state, true, GROUP, &[(GROUP_PROPERTY, GROUP)]);
        assert_eq!(end(&state, &msg_id, offset, TransactionOutcome::Unknown).unwrap(), 0);
        assert!(end(&state, &msg_id, offset, TransactionOutcome::Rollback).unwrap() > 0);
        let error = end(&state, &msg_id, offset, TransactionOutcome::Commit).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(error.to_string().contains("already rolled back"), "{error}");
        assert!(stored(&state, "orders").is_empty());
        state.store.shutdown();
    }

    #[tokio::test]
    async fn invalid_requests_are_refused_with_what_to_pass_instead() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), fast());
        let (plain_id, plain_offset) = send(&state, false, "", &[]);
        let error = end(&state, &plain_id, plain_offset, TransactionOutcome::Commit).unwrap_err();
        assert!(error.to_string().contains("is not half message"), "{error}");
        let error = end(&state, &plain_id, plain_offset + 1, TransactionOutcome::Commit).unwrap_err();
        assert!(matches!(error, BrokerError::InvalidOffset(_)), "{error}");

        let (msg_id, offset) = send(&state, true, GROUP, &[(GROUP_PROPERTY, GROUP)]);
        let request = EndTransactionRequest {
            producer_group: "other-group".into(),
            msg_id: msg_id.clone(),
            half_offset: offset,
            outcome: TransactionOutcome::Commit as i32,
            from_check: false,
        };
        let error = end_transaction(&state, &request, |_| Ok(())).unwrap_err();
        assert!(error.to_string().contains("belongs to producer group"), "{error}");
        let request = EndTransactionRequest {
            producer_group: GROUP.into(),
            outcome: 9,
            ..request
        };
        assert_eq!(
            end_transaction(&state, &request, |_| Ok(())).unwrap_err().code(),
            ErrorCode::MalformedFrame
        );

        // Without a producer group the send path refuses a transactional message.
        let body = SendRequest {
            topic: "orders".into(),
            queue_id: 0,
            messages: vec![MessageData {
                flags: 0,
                born_timestamp: 1,
                properties: Bytes::from({
                    let mut builder = PropertiesBuilder::new();
                    builder.transactional();
                    builder.finish()
                }),
                body: Bytes::from_static(b"x"),
                reconsume_count: 0,
            }],
            producer_group: String::new(),
            sdk: Default::default(),
        };
        let Reply::Now(Err(error)) = send_many(
            &state,
            &meridian_proto::auth::Principal::Node,
            vec![Bytes::from(body.encode_to_vec())],
            "127.0.0.1:5000".parse().unwrap(),
        )
        .pop()
        .unwrap() else {
            panic!("a transactional send without a group is refused")
        };
        assert!(error.to_string().contains("needs a producer group"), "{error}");
        state.store.shutdown();
    }

    #[tokio::test]
    async fn undecided_transactions_are_checked_back_then_rolled_back_after_check_max() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), fast());
        let config = fast();
        let (first_id, first_offset) = send(&state, true, GROUP, &[(GROUP_PROPERTY, GROUP)]);
        let (second_id, _) = send(&state, true, GROUP, &[(GROUP_PROPERTY, GROUP)]);
        let now = now_millis();
        // Not due yet: nothing moves, nothing to check.
        assert_eq!(check_round(&state, &config, now).await.unwrap(), Round::default());
        assert!(checks(&state, GROUP).is_empty());

        let round = check_round(&state, &config, now + 200).await.unwrap();
        assert_eq!((round.passed, round.checked, round.expired), (2, 2, 0));
        dispatched(&state);
        let pending = checks(&state, GROUP);
        assert_eq!(pending.len(), 2);
        assert!(
            checks(&state, "someone-else").is_empty(),
            "checks go to the message's own group"
        );
        let first = pending.iter().find(|check| check.msg_id == first_id).unwrap();
        assert_eq!((first.topic.as_str(), first.check_count), ("orders", 1));
        assert_eq!(properties::get(&first.properties, REAL_TOPIC), None);
        assert_ne!(first.half_offset, first_offset, "the check names the copy");

        // The producer answers one check with a commit; the other stays undecided.
        end(&state, &first_id, first.half_offset, TransactionOutcome::Commit).unwrap();
        assert_eq!(stored(&state, "orders").len(), 1);
        assert_eq!(
            checks(&state, GROUP)
                .iter()
                .map(|check| check.msg_id.as_str())
                .collect::<Vec<_>>(),
            [second_id.as_str()]
        );
        let round = check_round(&state, &config, now + 400).await.unwrap();
        assert_eq!((round.passed, round.checked, round.expired), (2, 1, 0));
        dispatched(&state);
        assert_eq!(checks(&state, GROUP)[0].check_count, 2);
        let round = check_round(&state, &config, now + 600).await.unwrap();
        assert_eq!((round.passed, round.checked, round.expired), (1, 0, 1));
        dispatched(&state);
        assert!(checks(&state, GROUP).is_empty());
        assert_eq!(check_round(&state, &config, now + 800).await.unwrap(), Round::default());

        // The expired one can no longer be committed, by its first offset or a copy's.
        let second = stored(&state, HALF_TOPIC)
            .into_iter()
            .find(|half| half.msg_id() == second_id)
            .unwrap();
        let error = end(&state, &second_id, second.commitlog_offset, TransactionOutcome::Commit).unwrap_err();
        assert!(error.to_string().contains("already rolled back"), "{error}");
        assert_eq!(stored(&state, "orders").len(), 1);
        assert_eq!(
            state.store.query_offset(TRANSACTION_GROUP, HALF_TOPIC, 0).unwrap(),
            Some(5),
            "the walk's position is kept as an offset of the reserved group"
        );
        state.store.shutdown();
    }

    #[test]
    fn a_committed_delayed_message_waits_in_a_delay_slot() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), fast());
        let (msg_id, offset) = send(&state, true, GROUP, &[(GROUP_PROPERTY, GROUP), (DELAY, "2")]);
        end(&state, &msg_id, offset, TransactionOutcome::Commit).unwrap();
        assert!(stored(&state, "orders").is_empty(), "not before its delay");
        let delayed = stored(&state, DELAY_TOPIC);
        assert_eq!(delayed.len(), 1);
        assert_eq!(delayed[0].msg_id(), msg_id);
        assert_eq!(delayed[0].property(REAL_TOPIC), Some("orders"));
        assert_eq!(delayed[0].property(REAL_QUEUE), Some("1"));
        assert!(delayed[0].property(DELIVER_AT).is_some());
        state.store.shutdown();
    }

    #[test]
    fn the_config_table_refuses_values_that_cannot_work() {
        TransactionConfig::default().validate().unwrap();
        let error = TransactionConfig {
            check_interval_ms: 10,
            ..TransactionConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            error.to_string().contains("transaction.check_interval_ms (10)"),
            "{error}"
        );
        let error = TransactionConfig {
            check_max: 0,
            ..TransactionConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(error.to_string().contains("transaction.check_max"), "{error}");
        let parsed: BrokerConfig = serde_json::from_str(r#"{"transaction": {"check_interval_ms": 1000}}"#).unwrap();
        assert_eq!(parsed.transaction.check_interval_ms, 1000);
        assert_eq!(parsed.transaction.check_max, 15);
    }
}

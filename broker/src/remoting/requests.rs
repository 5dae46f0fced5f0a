//! One function per RocketMQ request code: read the header and body leniently, build the native
//! request Meridian's SDK would send, run it through [`handlers::handle`] (so every rule is
//! applied once, in one place), and turn the native answer into RocketMQ's response.
//!
//! Where RocketMQ differs from Meridian, the difference is made here and listed in
//! `docs/compat.md`: a new group's offset query answers 0 while a queue still starts at 0 (the
//! Java broker's page-cache quirk), send-back's `delayLevel` -1 counts as 0 and the group's
//! approved max retries win over the client's `maxReconsumeTimes`, SQL-92 subscriptions are
//! evaluated here on what the native pull returned ([`meridian_proto::remoting::sql92`]), and sends to `RMQ_SYS_TRACE_TOPIC` become trace
//! events instead of messages ([`ingest_client_traces`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};

use bytes::{Bytes, BytesMut};
use meridian_proto::RequestCode;
use meridian_proto::auth::Principal;
use meridian_proto::messages::{
    CheckTransactionsRequest, CheckTransactionsResponse, CommitOffsetRequest, ConsumerHeartbeat, ConsumerListResponse,
    EndTransactionRequest, GroupMember, LockQueuesRequest, LockQueuesResponse, MessageData, PullRequest, PullResponse,
    PullStatus, QueryOffsetRequest, QueryOffsetResponse, QueueInfoResponse, QueueRef, SearchOffsetRequest,
    SearchOffsetResponse, SendBackRequest, SendRequest, SendResponse, TransactionCheck, TransactionOutcome,
};
use meridian_proto::properties::{self, TRANSACTION};
use meridian_proto::record::{self, Record};
use meridian_proto::remoting::RemotingCommand;
use meridian_proto::remoting::codes::{Operation, request, request_name, response, response_code};
use meridian_proto::remoting::fields::FieldError;
use meridian_proto::remoting::message::{self as rmq, SYSFLAG_COMPRESSED, StoredMessage};
use meridian_proto::remoting::sql92;
use meridian_proto::remoting::trace::{self as client_trace, ClientStep, RMQ_TRACE_TOPIC};
use prost::Message;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Remoting;
use crate::error::BrokerError;
use crate::handlers;
use crate::reply::Reply;

/// A response being produced.
pub type Pending = Pin<Box<dyn Future<Output = RemotingCommand> + Send>>;

/// How a remoting request is answered.
pub enum Answer {
    /// Now (`None`: nothing to send, e.g. a notification).
    Now(Option<RemotingCommand>),
    /// When the future completes.
    Later(Pending),
}

/// Pull sysFlag bits (`PullSysFlag`).
const PULL_COMMIT_OFFSET: i64 = 0x1;
const PULL_SUSPEND: i64 = 0x2;
/// The most messages one pull returns when the client does not say.
const DEFAULT_PULL_BATCH: i64 = 32;

fn failed(command: &RemotingCommand, error: &BrokerError, operation: Operation) -> RemotingCommand {
    tracing::debug!(request = request_name(command.code), %error, "RocketMQ request refused");
    command.respond(response_code(error.code(), operation), Some(error.to_string()))
}

fn field_failed(command: &RemotingCommand, error: &FieldError) -> RemotingCommand {
    let code = match command.code {
        request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => response::MESSAGE_ILLEGAL,
        _ => response::INVALID_PARAMETER,
    };
    command.respond(code, Some(error.to_string()))
}

/// Runs a native request and maps its answer.
fn native<M: Message>(
    remoting: &Arc<Remoting>,
    principal: &Principal,
    code: RequestCode,
    message: &M,
    peer: SocketAddr,
    finish: impl FnOnce(crate::error::Result<Bytes>) -> RemotingCommand + Send + 'static,
) -> Answer {
    match handlers::handle(
        &remoting.state,
        principal,
        code,
        Bytes::from(message.encode_to_vec()),
        peer,
    ) {
        Reply::Now(result) => Answer::Now(Some(finish(result))),
        Reply::Later(pending) => Answer::Later(Box::pin(async move { finish(pending.await) })),
    }
}

/// A native request that answers at once (offsets, queue info, membership).
fn native_now<M: Message>(
    remoting: &Arc<Remoting>,
    principal: &Principal,
    code: RequestCode,
    message: &M,
    peer: SocketAddr,
) -> crate::error::Result<Bytes> {
    match handlers::handle(
        &remoting.state,
        principal,
        code,
        Bytes::from(message.encode_to_vec()),
        peer,
    ) {
        Reply::Now(result) => result,
        Reply::Later(_) => Err(BrokerError::Corrupt(format!(
            "{} unexpectedly answered later",
            code.as_str()
        ))),
    }
}

fn decode<T: Message + Default>(body: Bytes) -> crate::error::Result<T> {
    T::decode(body).map_err(|error| BrokerError::Corrupt(format!("native answer unreadable: {error}")))
}

/// Handles one request from `peer`; `connection` sends broker-initiated requests to it.
pub fn handle(
    remoting: &Arc<Remoting>,
    command: RemotingCommand,
    peer: SocketAddr,
    principal: &Principal,
    connection: &mpsc::Sender<RemotingCommand>,
) -> Answer {
    let answer = |result: Result<RemotingCommand, FieldError>| match result {
        Ok(answer) => Answer::Now(Some(answer)),
        Err(error) => Answer::Now(Some(field_failed(&command, &error))),
    };
    match command.code {
        request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
            send(remoting, &command, peer, principal, connection)
        }
        request::PULL_MESSAGE => pull(remoting, &command, peer, principal),
        request::HEART_BEAT => Answer::Now(Some(heartbeat(remoting, &command, peer, principal, connection))),
        request::UNREGISTER_CLIENT => answer(unregister(remoting, &command, peer, principal)),
        request::GET_CONSUMER_LIST_BY_GROUP => answer(consumer_list(remoting, &command, peer, principal)),
        request::QUERY_CONSUMER_OFFSET => answer(query_offset(remoting, &command, peer, principal)),
        request::UPDATE_CONSUMER_OFFSET => answer(update_offset(remoting, &command, peer, principal)),
        request::GET_MAX_OFFSET | request::GET_MIN_OFFSET => answer(queue_bound(remoting, &command, peer, principal)),
        request::SEARCH_OFFSET_BY_TIMESTAMP => search_offset(remoting, &command, peer, principal),
        request::CONSUMER_SEND_MSG_BACK => send_back(remoting, &command, peer, principal),
        request::END_TRANSACTION => end_transaction(remoting, &command, peer, principal),
        request::LOCK_BATCH_MQ | request::UNLOCK_BATCH_MQ => {
            Answer::Now(Some(lock_batch(remoting, &command, peer, principal)))
        }
        request::VIEW_MESSAGE_BY_ID => answer(view_message(remoting, &command)),
        request::QUERY_MESSAGE => query_message(remoting, &command),
        code => {
            tracing::debug!(%peer, code, "unsupported RocketMQ request");
            Answer::Now(Some(command.respond(
                response::REQUEST_CODE_NOT_SUPPORTED,
                Some(format!(
                    "request type {code} ({}) not supported by Meridian's RocketMQ listener; docs/compat.md lists what is",
                    request_name(code)
                )),
            )))
        }
    }
}

/// The send header, V1 (long names) or V2 (one letter).
struct SendHeader<'a> {
    producer_group: &'a str,
    topic: &'a str,
    queue_id: i64,
    sys_flag: i64,
    born_timestamp: i64,
    flag: i64,
    properties: &'a str,
    reconsume_times: i64,
    batch: bool,
}

fn send_header(command: &RemotingCommand) -> Result<SendHeader<'_>, FieldError> {
    let fields = command.fields();
    Ok(SendHeader {
        producer_group: fields.opt_str(&["a", "producerGroup"]).unwrap_or(""),
        topic: fields.str(&["b", "topic"])?,
        queue_id: fields.int_or(&["e", "queueId"], -1)?,
        sys_flag: fields.int_or(&["f", "sysFlag"], 0)?,
        born_timestamp: fields.int_or(&["g", "bornTimestamp"], meridian_proto::time::now_millis())?,
        flag: fields.int_or(&["h", "flag"], 0)?,
        properties: fields.raw(&["i", "properties"]).unwrap_or(""),
        reconsume_times: fields.int_or(&["j", "reconsumeTimes"], 0)?,
        batch: fields.bool_or(&["m", "batch"], command.code == request::SEND_BATCH_MESSAGE)?,
    })
}

fn send_request(remoting: &Remoting, command: &RemotingCommand) -> Result<SendRequest, RemotingCommand> {
    let header = send_header(command).map_err(|error| field_failed(command, &error))?;
    let illegal = |remark: String| command.respond(response::MESSAGE_ILLEGAL, Some(remark));
    let mut messages = Vec::new();
    if header.batch {
        let entries = rmq::decode_batch(&command.body).map_err(|error| illegal(error.to_string()))?;
        for entry in entries {
            messages.push(MessageData {
                flags: entry.flag as u32,
                born_timestamp: header.born_timestamp,
                properties: command.body.slice_ref(entry.properties),
                body: command.body.slice_ref(entry.body),
                reconsume_count: 0,
            });
        }
    } else {
        let body = if header.sys_flag & i64::from(SYSFLAG_COMPRESSED) != 0 {
            let max = remoting.state.limits.max_body_size;
            Bytes::from(
                rmq::decompress_body(&command.body, header.sys_flag as i32, max)
                    .map_err(|error| illegal(error.to_string()))?,
            )
        } else {
            command.body.clone()
        };
        messages.push(MessageData {
            flags: header.flag as u32,
            born_timestamp: header.born_timestamp,
            properties: Bytes::copy_from_slice(header.properties.as_bytes()),
            body,
            reconsume_count: u32::try_from(header.reconsume_times).unwrap_or(0),
        });
    }
    Ok(SendRequest {
        topic: header.topic.to_owned(),
        queue_id: i32::try_from(header.queue_id).unwrap_or(-1),
        messages,
        producer_group: header.producer_group.to_owned(),
        // A RocketMQ header carries a version ordinal, not a semantic version the SDK policy can
        // judge; the consumer heartbeat names the client's language and ordinal instead.
        sdk: Default::default(),
    })
}

fn send(
    remoting: &Arc<Remoting>,
    command: &RemotingCommand,
    peer: SocketAddr,
    principal: &Principal,
    connection: &mpsc::Sender<RemotingCommand>,
) -> Answer {
    if command.fields().raw(&["b", "topic"]) == Some(RMQ_TRACE_TOPIC) {
        return Answer::Now(Some(ingest_client_traces(remoting, command, peer)));
    }
    let request = match send_request(remoting, command) {
        Ok(request) => request,
        Err(answer) => return Answer::Now(Some(answer)),
    };
    let transactional: Vec<bool> = request
        .messages
        .iter()
        .map(|message| properties::get(&message.properties, TRANSACTION) == Some("true"))
        .collect();
    // A half message's producer is asked about it over this connection even before its first
    // heartbeat reaches this broker: clients heartbeat every 30 s, and only the brokers they knew
    // at the last one (a producer's first send to a new topic comes before that).
    if transactional.contains(&true) && !request.producer_group.is_empty() {
        remoting
            .producers
            .register(&request.producer_group, &format!("{peer}"), peer, connection);
    }
    let request_command = command.clone().with_body(Bytes::new());
    let advertise = remoting.advertise;
    native(remoting, principal, RequestCode::Send, &request, peer, move |result| {
        let results = match result.and_then(decode::<SendResponse>) {
            Ok(response) => response.results,
            Err(error) => return failed(&request_command, &error, Operation::Send),
        };
        let Some(first) = results.first() else {
            return request_command.respond(response::SYSTEM_ERROR, Some("the broker stored nothing".into()));
        };
        let offset_ids: Vec<String> = results
            .iter()
            .map(|result| rmq::offset_msg_id(advertise, result.commitlog_offset))
            .collect();
        let mut answer = request_command
            .success()
            .with("msgId", offset_ids.join(","))
            .with("queueId", first.queue_id)
            .with("queueOffset", first.queue_offset)
            .with("MSG_REGION", "DefaultRegion")
            .with("TRACE_ON", "true");
        if transactional.first() == Some(&true) {
            answer = answer.with("transactionId", &first.msg_id);
        }
        answer
    })
}

/// The topic a consumer-side trace record of `group` is about: the group's subscription as its
/// RocketMQ members registered it, else the first topic the group is approved for.
fn consumed_topic(remoting: &Remoting, group: &str) -> Option<String> {
    let subscribed = remoting
        .subscriptions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .keys()
        .filter(|(member_group, topic)| {
            member_group == group && !topic.starts_with(meridian_proto::topics::RETRY_PREFIX)
        })
        .map(|(_, topic)| topic.clone())
        .min();
    subscribed.or_else(|| {
        let governance = remoting.state.governance.as_ref()?;
        governance.snapshot().groups.get(group)?.topics.first().cloned()
    })
}

/// RocketMQ SDKs with tracing on send trace records to `RMQ_SYS_TRACE_TOPIC`. They are not stored
/// as messages: their consumer steps (SubBefore, SubAfter) become client-side events of the
/// messages' timelines, reported through the broker's trace emitter exactly as a Meridian SDK
/// reports its own, so the tracer indexes them from Meridian's trace topic. Their Pub and
/// EndTransaction records are dropped: the broker traced those steps itself. The send is
/// acknowledged so the SDK's trace dispatcher goes on.
fn ingest_client_traces(remoting: &Remoting, command: &RemotingCommand, peer: SocketAddr) -> RemotingCommand {
    let request = match send_request(remoting, command) {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let now_ms = meridian_proto::time::now_millis();
    let mut events = Vec::new();
    let mut skipped = 0;
    for message in &request.messages {
        let Ok(text) = std::str::from_utf8(&message.body) else {
            skipped += 1;
            continue;
        };
        let parsed = client_trace::parse_records(text);
        skipped += parsed.skipped;
        for record in &parsed.records {
            if matches!(record.step, ClientStep::Pub { .. } | ClientStep::EndTransaction { .. }) {
                continue;
            }
            match consumed_topic(remoting, record.group)
                .and_then(|topic| client_trace::to_trace_event(record, &topic, now_ms))
            {
                Some(event) => events.push(event),
                None => skipped += 1,
            }
        }
    }
    let mut reported = 0;
    for chunk in events.chunks(meridian_proto::trace::MAX_REPORT_EVENTS) {
        let body = Bytes::from(meridian_proto::trace::TraceBatch::from(chunk.to_vec()).encode_to_vec());
        match remoting.state.trace.report(body, peer) {
            Ok(count) => reported += count,
            Err(error) => tracing::debug!(%peer, %error, "RocketMQ trace records refused"),
        }
    }
    tracing::debug!(%peer, reported, skipped, "RocketMQ trace records ingested");
    command
        .success()
        .with("msgId", rmq::offset_msg_id(remoting.advertise, 0))
        .with("queueId", 0)
        .with("queueOffset", 0)
        .with("MSG_REGION", "DefaultRegion")
        .with("TRACE_ON", "false")
}

/// Converts native pull records into RocketMQ's stored-message encoding: one pass, one copy of
/// each message into the response body; with a SQL-92 `filter`, only the messages whose
/// properties pass it.
fn convert_records(
    records: &Bytes,
    store_host: SocketAddr,
    filter: Option<&sql92::Filter>,
) -> crate::error::Result<(Bytes, usize)> {
    let messages = record::decode_all(records).map_err(|error| BrokerError::Corrupt(error.to_string()))?;
    let mut out = BytesMut::with_capacity(records.len() + messages.len() * 16);
    let mut converted = 0;
    for message in &messages {
        if let Some(filter) = filter
            && !filter.matches(|name| properties::get(&message.properties, name))
        {
            continue;
        }
        to_rocketmq(message, store_host).encode(&mut out);
        converted += 1;
    }
    Ok((out.freeze(), converted))
}

fn to_rocketmq(message: &record::StoredMessage, store_host: SocketAddr) -> StoredMessage<'_> {
    StoredMessage {
        queue_id: message.queue_id as i32,
        flag: message.flags as i32,
        queue_offset: message.queue_offset as i64,
        physical_offset: message.commitlog_offset as i64,
        sys_flag: 0,
        born_timestamp: message.born_timestamp,
        born_host: message.born_host,
        store_timestamp: message.store_timestamp,
        store_host,
        reconsume_times: message.reconsume_count as i32,
        prepared_transaction_offset: 0,
        body: &message.body,
        topic: &message.topic,
        properties: &message.properties,
    }
}

/// A pull request's header.
struct PullHeader {
    group: String,
    topic: String,
    queue_id: i64,
    offset: i64,
    max: i64,
    sys_flag: i64,
    commit: i64,
    suspend: i64,
    max_bytes: i64,
    subscription: Option<String>,
    expression: String,
}

fn pull_header(command: &RemotingCommand) -> Result<PullHeader, FieldError> {
    let fields = command.fields();
    Ok(PullHeader {
        group: fields.str(&["consumerGroup"])?.to_owned(),
        topic: fields.str(&["topic"])?.to_owned(),
        queue_id: fields.int(&["queueId"])?,
        offset: fields.int(&["queueOffset"])?,
        max: fields.int_or(&["maxMsgNums"], DEFAULT_PULL_BATCH)?,
        sys_flag: fields.int_or(&["sysFlag"], 0)?,
        commit: fields.int_or(&["commitOffset"], -1)?,
        suspend: fields.int_or(&["suspendTimeoutMillis"], 0)?,
        max_bytes: fields.int_or(&["maxMsgBytes"], i64::from(u32::MAX))?,
        subscription: fields.opt_str(&["subscription"]).map(str::to_owned),
        expression: fields.opt_str(&["expressionType"]).unwrap_or("TAG").to_owned(),
    })
}

fn pull(remoting: &Arc<Remoting>, command: &RemotingCommand, peer: SocketAddr, principal: &Principal) -> Answer {
    let PullHeader {
        group,
        topic,
        queue_id,
        offset,
        max,
        sys_flag,
        commit,
        suspend,
        max_bytes,
        subscription,
        expression,
    } = match pull_header(command) {
        Ok(header) => header,
        Err(error) => return Answer::Now(Some(field_failed(command, &error))),
    };
    let (expression, subscription) = match subscription {
        Some(subscription) => (expression, subscription),
        None => remoting
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(group.clone(), topic.clone()))
            .cloned()
            .unwrap_or_else(|| ("TAG".to_owned(), String::new())),
    };
    // A SQL-92 subscription pulls every tag natively and filters the answer here.
    let (subscription, filter) = if expression.eq_ignore_ascii_case("SQL92") {
        match sql92::parse(&subscription) {
            Ok(filter) => (String::new(), Some(filter)),
            Err(error) => {
                return Answer::Now(Some(
                    command.respond(response::SUBSCRIPTION_PARSE_FAILED, Some(error.to_string())),
                ));
            }
        }
    } else if expression.eq_ignore_ascii_case("TAG") {
        (subscription, None)
    } else {
        return Answer::Now(Some(command.respond(
            response::SUBSCRIPTION_PARSE_FAILED,
            Some(format!(
                "expression type {expression} is not supported by Meridian: subscribe with tags (`TagA || TagB` or `*`) or SQL92"
            )),
        )));
    };
    let (Ok(queue_id), Ok(offset)) = (u32::try_from(queue_id), u64::try_from(offset)) else {
        return Answer::Now(Some(command.respond(
            response::INVALID_PARAMETER,
            Some(format!(
                "queueId {queue_id} and queueOffset {offset} must not be negative"
            )),
        )));
    };
    if sys_flag & PULL_COMMIT_OFFSET != 0 && commit >= 0 {
        let request = CommitOffsetRequest {
            group: group.clone(),
            topic: topic.clone(),
            queue_id,
            offset: commit as u64,
            ..Default::default()
        };
        if let Err(error) = native_now(remoting, principal, RequestCode::CommitOffset, &request, peer) {
            tracing::debug!(%peer, group, topic, %error, "piggy-backed offset commit refused");
        }
    }
    let request = PullRequest {
        group,
        topic,
        queue_id,
        offset,
        max_count: max.clamp(1, 1024) as u32,
        max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX).max(1),
        long_poll_ms: if sys_flag & PULL_SUSPEND != 0 {
            u32::try_from(suspend).unwrap_or(0)
        } else {
            0
        },
        subscription,
        offset_generation: None,
    };
    let request_command = command.clone().with_body(Bytes::new());
    let store_host = remoting.advertise;
    native(remoting, principal, RequestCode::Pull, &request, peer, move |result| {
        let pulled = match result.and_then(decode::<PullResponse>) {
            Ok(pulled) => pulled,
            Err(error) => return failed(&request_command, &error, Operation::Consume),
        };
        let (code, body) = match PullStatus::try_from(pulled.status) {
            Ok(PullStatus::Found) => match convert_records(&pulled.records, store_host, filter.as_ref()) {
                Ok((_, 0)) => (response::PULL_RETRY_IMMEDIATELY, Bytes::new()),
                Ok((body, _)) => (response::SUCCESS, body),
                Err(error) => return failed(&request_command, &error, Operation::Consume),
            },
            Ok(PullStatus::NoNewMessage) => (response::PULL_NOT_FOUND, Bytes::new()),
            Ok(PullStatus::OffsetMoved | PullStatus::OffsetReset) | Err(_) => {
                (response::PULL_OFFSET_MOVED, Bytes::new())
            }
        };
        request_command
            .respond(code, None)
            .with("suggestWhichBrokerId", 0)
            .with("nextBeginOffset", pulled.next_offset)
            .with("minOffset", pulled.min_offset)
            .with("maxOffset", pulled.max_offset)
            .with_body(body)
    })
}

fn json_str<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str)
}

/// `BROADCASTING`/`CLUSTERING` by name, or by ordinal (0 broadcasting, 1 clustering).
fn is_broadcasting(value: Option<&Value>) -> bool {
    match value {
        Some(Value::String(name)) => name.eq_ignore_ascii_case("BROADCASTING") || name == "0",
        Some(Value::Number(number)) => number.as_i64() == Some(0),
        _ => false,
    }
}

fn heartbeat(
    remoting: &Arc<Remoting>,
    command: &RemotingCommand,
    peer: SocketAddr,
    principal: &Principal,
    connection: &mpsc::Sender<RemotingCommand>,
) -> RemotingCommand {
    let body: Value = match serde_json::from_slice(&command.body) {
        Ok(body) => body,
        Err(error) => {
            tracing::debug!(%peer, %error, body = %String::from_utf8_lossy(&command.body), "RocketMQ heartbeat body unreadable");
            return command.respond(
                response::INVALID_PARAMETER,
                Some(format!("HEART_BEAT body is not heartbeat JSON: {error}")),
            );
        }
    };
    let Some(client_id) = json_str(&body, "clientID") else {
        return command.respond(
            response::INVALID_PARAMETER,
            Some("HEART_BEAT body has no clientID".into()),
        );
    };
    let language = meridian_proto::remoting::codes::language_name(command.language);
    let consumers = body
        .get("consumerDataSet")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for consumer in &consumers {
        let Some(group) = json_str(consumer, "groupName") else {
            continue;
        };
        let subscriptions = consumer
            .get("subscriptionDataSet")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut topics = Vec::new();
        let mut expression = String::new();
        for subscription in &subscriptions {
            let Some(topic) = json_str(subscription, "topic") else {
                continue;
            };
            let sub = json_str(subscription, "subString").unwrap_or("*");
            let kind = json_str(subscription, "expressionType").unwrap_or("TAG");
            let sql = kind.eq_ignore_ascii_case("SQL92");
            if sql && let Err(error) = sql92::parse(sub) {
                return command.respond(
                    response::SUBSCRIPTION_PARSE_FAILED,
                    Some(format!("group {group:?} subscribes {topic:?} with {error}")),
                );
            }
            if !sql && !kind.eq_ignore_ascii_case("TAG") {
                return command.respond(
                    response::SUBSCRIPTION_PARSE_FAILED,
                    Some(format!(
                        "group {group:?} subscribes {topic:?} with a {kind} expression; Meridian filters by tags (`TagA || TagB` or `*`) or SQL92"
                    )),
                );
            }
            if meridian_proto::topics::owning_group(topic).is_none() && expression.is_empty() {
                // A SQL-92 subscription takes every tag from the native side.
                expression = if sql { "*".to_owned() } else { sub.to_owned() };
            }
            remoting
                .subscriptions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    (group.to_owned(), topic.to_owned()),
                    (if sql { "SQL92" } else { "TAG" }.to_owned(), sub.to_owned()),
                );
            // The group's own retry topic is Meridian's to manage (created with the group's
            // approval); only user topics are registered.
            if meridian_proto::topics::owning_group(topic) != Some(group) {
                topics.push(topic.to_owned());
            }
        }
        let native_heartbeat = ConsumerHeartbeat {
            group: group.to_owned(),
            client_id: client_id.to_owned(),
            topics,
            sdk_version: format!("rocketmq-{}/{}", language.to_ascii_lowercase(), command.version),
            sdk_language: format!("rocketmq-{}", language.to_ascii_lowercase()),
            idc: String::new(),
            allocation: "rocketmq/client-side".into(),
            deployment: String::new(),
            broadcasting: is_broadcasting(consumer.get("messageModel")),
            subscription: if expression == "*" { String::new() } else { expression },
            stats: None,
        };
        let new = remoting.state.groups.describe(group, client_id).is_none();
        if let Err(error) = native_now(
            remoting,
            principal,
            RequestCode::ConsumerHeartbeat,
            &native_heartbeat,
            peer,
        ) {
            return failed(command, &error, Operation::Consume);
        }
        remoting.clients.register(group, client_id, peer, connection);
        if new {
            remoting.clients.notify_changed(group);
        }
    }
    // Producer groups are remembered for transaction check-backs (the C++ core's internal
    // producer group is not a real one).
    for producer in body
        .get("producerDataSet")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(group) = json_str(producer, "groupName").filter(|group| *group != "CLIENT_INNER_PRODUCER") {
            remoting.producers.register(group, client_id, peer, connection);
        }
    }
    command.success()
}

fn unregister(
    remoting: &Arc<Remoting>,
    command: &RemotingCommand,
    peer: SocketAddr,
    principal: &Principal,
) -> Result<RemotingCommand, FieldError> {
    let fields = command.fields();
    let client_id = fields.str(&["clientID"])?;
    if let Some(group) = fields.opt_str(&["consumerGroup"]) {
        let leave = GroupMember {
            group: group.to_owned(),
            client_id: client_id.to_owned(),
        };
        if let Err(error) = native_now(remoting, principal, RequestCode::ConsumerLeave, &leave, peer) {
            return Ok(failed(command, &error, Operation::Consume));
        }
        remoting.clients.forget(group, client_id);
        remoting.clients.notify_changed(group);
    }
    Ok(command.success())
}

fn consumer_list(
    remoting: &Arc<Remoting>,
    command: &RemotingCommand,
    peer: SocketAddr,
    principal: &Principal,
) -> Result<RemotingCommand, FieldError> {
    let group = command.fields().str(&["consumerGroup"])?;
    let request = GroupMember {
        group: group.to_owned(),
        client_id: String::new(),
    };
    let members = match native_now(remoting, principal, RequestCode::ConsumerList, &request, peer)
        .and_then(decode::<ConsumerListResponse>)
    {
        Ok(members) => members,
        Err(error) => return Ok(failed(command, &error, Operation::Consume)),
    };
    if members.client_ids.is_empty() {
        return Ok(command.respond(response::SYSTEM_ERROR, Some(format!("no consumer for group {group:?}"))));
    }
    let body = json!({ "consumerIdList": members.client_ids });
    Ok(command.success().with_body(body.to_string().into_bytes()))
}

fn queue_of(command: &RemotingCommand) -> Result<(String, u32), FieldError> {
    let fields = command.fields();
    let topic = fields.str(&["topic"])?.to_owned();
    let queue_id = fields.int(&["queueId"])?;
    let queue_id = u32::try_from(queue_id).map_err(|_| FieldError {
        code: command.code,
        request: request_name(command.code),
        field: "queueId".into(),
        found: format!(" as a queue number, found {queue_id}"),
    })?;
    Ok((topic, queue_id))
}

fn query_offset(
    remoting: &Arc<Remoting>,
    command: &RemotingCommand,
    peer: SocketAddr,
    principal: &Principal,
) -> Result<RemotingCommand, FieldError> {
    let group = command.fields().str(&["consumerGroup"])?.to_owned();
    let zero_if_not_found = command.fields().bool_or(&["setZeroIfNotFound"], true)?;
    let (topic, queue_id) = queue_of(command)?;
    let request = QueryOffsetRequest {
        group,
        topic: topic.clone(),
        queue_id,
        member: String::new(),
    };
    let found = native_now(remoting, principal, RequestCode::QueryOffset, &request, peer)
        .and_then(decode::<QueryOffsetResponse>);
    Ok(match found {
        Ok(QueryOffsetResponse {
            offset: Some(offset), ..
        }) => command.success().with("offset", offset),
        Ok(_) => {
            // As the Java broker: a group new to a queue that still starts at 0 reads it from the start.
            let starts_at_zero = remoting
                .state
                .store
                .queue_bounds(&topic, queue_id)
                .is_ok_and(|bounds| bounds.min_offset == 0);
            if zero_if_not_found && starts_at_zero {
                command.success().with("offset", 0)
            } else {
                command.respond(
                    response::QUERY_NOT_FOUND,
                    Some("no committed offset for this queue yet".into()),
                )
            }
        }
        Err(error) => failed(command, &error, Operation::Consume),
    })
}

fn update_offset(
    remoting: &Arc<Remoting>,
    command: &RemotingCommand,
    peer: SocketAddr,
    principal: &Principal,
) -> Result<RemotingCommand, FieldError> {
    let group = command.fields().str(&["consumerGroup"])?.to_owned();
    let offset = command.fields().int(&["commitOffset"])?;
    let (topic, queue_id) = queue_of(command)?;
    let request = CommitOffsetRequest {
        group,
        topic,
        queue_id,
        offset: u64::try_from(offset).unwrap_or(0),
        ..Default::default()
    };
    Ok(
        match native_now(remoting, principal, RequestCode::CommitOffset, &request, peer) {
            Ok(_) => command.success(),
            Err(error) => failed(command, &error, Operation::Consume),
        },
    )
}

fn queue_bound(
    remoting: &Arc<Remoting>,
    command: &RemotingCommand,
    peer: SocketAddr,
    principal: &Principal,
) -> Result<RemotingCommand, FieldError> {
    let (topic, queue_id) = queue_of(command)?;
    let request = QueueRef { topic, queue_id };
    Ok(
        match native_now(remoting, principal, RequestCode::QueueInfo, &request, peer)
            .and_then(decode::<QueueInfoResponse>)
        {
            Ok(info) if command.code == request::GET_MAX_OFFSET => command.success().with("offset", info.max_offset),
            Ok(info) => command.success().with("offset", info.min_offset),
            Err(error) => failed(command, &error, Operation::Consume),
        },
    )
}

fn search_offset(
    remoting: &Arc<Remoting>,
    command: &RemotingCommand,
    peer: SocketAddr,
    principal: &Principal,
) -> Answer {
    let parsed = queue_of(command).and_then(|queue| Ok((queue, command.fields().int(&["timestamp"])?)));
    let ((topic, queue_id), timestamp) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return Answer::Now(Some(field_failed(command, &error))),
    };
    let request = SearchOffsetRequest {
        topic,
        queue_id,
        timestamp,
    };
    let request_command = command.clone().with_body(Bytes::new());
    native(
        remoting,
        principal,
        RequestCode::SearchOffset,
        &request,
        peer,
        move |result| match result.and_then(decode::<SearchOffsetResponse>) {
            Ok(found) => request_command.success().with("offset", found.offset),
            Err(error) => failed(&request_command, &error, Operation::Consume),
        },
    )
}

fn send_back(remoting: &Arc<Remoting>, command: &RemotingCommand, peer: SocketAddr, principal: &Principal) -> Answer {
    let fields = command.fields();
    let parsed = (|| {
        Ok::<_, FieldError>((
            fields.str(&["group"])?.to_owned(),
            fields.int(&["offset"])?,
            fields.int_or(&["delayLevel"], 0)?,
            fields.opt_str(&["originMsgId"]).map(str::to_owned),
        ))
    })();
    let (group, offset, delay_level, origin) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return Answer::Now(Some(field_failed(command, &error))),
    };
    let commitlog_offset = u64::try_from(offset).unwrap_or(u64::MAX);
    // The record tells the topic and id the native send-back checks against.
    let bytes = match remoting.state.store.read_record(commitlog_offset) {
        Ok(bytes) => bytes,
        Err(error) => return Answer::Now(Some(failed(command, &error, Operation::Consume))),
    };
    let (topic, msg_id) = match Record::parse(&bytes) {
        Ok(record) => (
            record.topic().to_owned(),
            record.msg_id().unwrap_or_default().to_owned(),
        ),
        Err(error) => {
            return Answer::Now(Some(command.respond(
                response::INVALID_PARAMETER,
                Some(format!("no message at commitlog offset {offset}: {error}")),
            )));
        }
    };
    if let Some(origin) = origin
        && origin != msg_id
        && origin != rmq::offset_msg_id(remoting.advertise, commitlog_offset)
    {
        return Answer::Now(Some(command.respond(
            response::INVALID_PARAMETER,
            Some(format!(
                "the message at commitlog offset {offset} is {msg_id}, not originMsgId {origin}; send back the offset the message was delivered with"
            )),
        )));
    }
    let request = SendBackRequest {
        group,
        topic,
        commitlog_offset,
        msg_id,
        delay_level: u32::try_from(delay_level).unwrap_or(0),
    };
    let request_command = command.clone().with_body(Bytes::new());
    native(
        remoting,
        principal,
        RequestCode::SendBack,
        &request,
        peer,
        move |result| match result {
            Ok(_) => request_command.success(),
            Err(error) => failed(&request_command, &error, Operation::Consume),
        },
    )
}

fn end_transaction(
    remoting: &Arc<Remoting>,
    command: &RemotingCommand,
    peer: SocketAddr,
    principal: &Principal,
) -> Answer {
    let fields = command.fields();
    let parsed = (|| {
        Ok::<_, FieldError>((
            fields.str(&["producerGroup"])?.to_owned(),
            fields.str(&["msgId"])?.to_owned(),
            fields.int(&["commitLogOffset"])?,
            fields.int(&["commitOrRollback"])?,
            fields.bool_or(&["fromTransactionCheck"], false)?,
        ))
    })();
    let (producer_group, msg_id, half_offset, kind, from_check) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return Answer::Now(Some(field_failed(command, &error))),
    };
    let outcome = match kind {
        8 => TransactionOutcome::Commit,
        12 => TransactionOutcome::Rollback,
        _ => TransactionOutcome::Unknown,
    };
    let request = EndTransactionRequest {
        producer_group,
        msg_id,
        half_offset: u64::try_from(half_offset).unwrap_or(u64::MAX),
        outcome: outcome as i32,
        from_check,
    };
    let request_command = command.clone().with_body(Bytes::new());
    native(
        remoting,
        principal,
        RequestCode::EndTransaction,
        &request,
        peer,
        move |result| match result {
            Ok(_) => request_command.success(),
            Err(error) => failed(&request_command, &error, Operation::Other),
        },
    )
}

fn lock_batch(
    remoting: &Arc<Remoting>,
    command: &RemotingCommand,
    peer: SocketAddr,
    principal: &Principal,
) -> RemotingCommand {
    let body: Value = match serde_json::from_slice(&command.body) {
        Ok(body) => body,
        Err(error) => {
            return command.respond(
                response::INVALID_PARAMETER,
                Some(format!("lock body is not JSON: {error}")),
            );
        }
    };
    let (Some(group), Some(client_id)) = (json_str(&body, "consumerGroup"), json_str(&body, "clientId")) else {
        return command.respond(
            response::INVALID_PARAMETER,
            Some("lock body needs consumerGroup and clientId".into()),
        );
    };
    let queues = body.get("mqSet").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut by_topic: std::collections::BTreeMap<String, Vec<(u32, Value)>> = std::collections::BTreeMap::new();
    for queue in queues {
        let topic = json_str(&queue, "topic").unwrap_or_default().to_owned();
        let queue_id = queue
            .get("queueId")
            .and_then(|id| id.as_u64().or_else(|| id.as_str()?.parse().ok()));
        if let Some(queue_id) = queue_id.and_then(|id| u32::try_from(id).ok()) {
            by_topic.entry(topic).or_default().push((queue_id, queue));
        }
    }
    let lock = command.code == request::LOCK_BATCH_MQ;
    let mut locked = Vec::new();
    for (topic, queues) in by_topic {
        let request = LockQueuesRequest {
            group: group.to_owned(),
            client_id: client_id.to_owned(),
            topic,
            queue_ids: queues.iter().map(|(queue_id, _)| *queue_id).collect(),
        };
        let code = if lock {
            RequestCode::LockQueues
        } else {
            RequestCode::UnlockQueues
        };
        match native_now(remoting, principal, code, &request, peer) {
            Ok(body) if lock => {
                let granted = decode::<LockQueuesResponse>(body)
                    .map(|answer| answer.locked)
                    .unwrap_or_default();
                locked.extend(
                    queues
                        .into_iter()
                        .filter(|(queue_id, _)| granted.contains(queue_id))
                        .map(|(_, queue)| queue),
                );
            }
            Ok(_) => {}
            Err(error) => return failed(command, &error, Operation::Consume),
        }
    }
    if lock {
        command
            .success()
            .with_body(json!({ "lockOKMQSet": locked }).to_string().into_bytes())
    } else {
        command.success()
    }
}

fn view_message(remoting: &Arc<Remoting>, command: &RemotingCommand) -> Result<RemotingCommand, FieldError> {
    let offset = command.fields().int(&["offset"])?;
    let bytes = match remoting
        .state
        .store
        .read_record(u64::try_from(offset).unwrap_or(u64::MAX))
    {
        Ok(bytes) => bytes,
        Err(error) => return Ok(command.respond(response::SYSTEM_ERROR, Some(error.to_string()))),
    };
    Ok(
        match convert_records(
            &bytes.slice(..Record::parse(&bytes).map_or(0, |record| record.total_size())),
            remoting.advertise,
            None,
        ) {
            Ok((body, 1)) => command.success().with_body(body),
            Ok(_) => command.respond(
                response::SYSTEM_ERROR,
                Some(format!("no message at commitlog offset {offset}")),
            ),
            Err(error) => command.respond(response::SYSTEM_ERROR, Some(error.to_string())),
        },
    )
}

/// The half messages of `producer_group` waiting for a decision, as Meridian's SDK polls them.
pub(super) fn pending_checks(
    remoting: &Arc<Remoting>,
    producer_group: &str,
    client_id: &str,
) -> crate::error::Result<Vec<TransactionCheck>> {
    let request = CheckTransactionsRequest {
        producer_group: producer_group.to_owned(),
        client_id: client_id.to_owned(),
        max: 32,
    };
    let peer = remoting.advertise;
    native_now(
        remoting,
        &Principal::Node,
        RequestCode::CheckTransactions,
        &request,
        peer,
    )
    .and_then(decode::<CheckTransactionsResponse>)
    .map(|response| response.checks)
}

/// `CHECK_TRANSACTION_STATE` for one half message: the header names it by its commitlog offset
/// and ids, the body is the message (with its real topic) in the stored-message encoding.
pub(super) fn check_transaction_state(remoting: &Remoting, check: &TransactionCheck, opaque: i32) -> RemotingCommand {
    let offset_id = rmq::offset_msg_id(remoting.advertise, check.half_offset);
    let mut body = BytesMut::new();
    StoredMessage {
        queue_id: 0,
        flag: 0,
        queue_offset: 0,
        physical_offset: check.half_offset as i64,
        sys_flag: 0x4,
        born_timestamp: 0,
        born_host: remoting.advertise,
        store_timestamp: 0,
        store_host: remoting.advertise,
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body: &check.body,
        topic: &check.topic,
        properties: &check.properties,
    }
    .encode(&mut body);
    let mut command = RemotingCommand::request(request::CHECK_TRANSACTION_STATE, opaque)
        .with("topic", &check.topic)
        .with("tranStateTableOffset", check.half_offset)
        .with("commitLogOffset", check.half_offset)
        .with("msgId", &check.msg_id)
        .with("transactionId", &check.msg_id)
        .with("offsetMsgId", offset_id)
        .with_body(body.freeze());
    command.flag = meridian_proto::remoting::command::FLAG_ONEWAY;
    command
}

/// Most consume queue entries one `QUERY_MESSAGE` reads per queue: a key lookup without an index
/// scans the time range, so a range too wide is cut here (narrow `beginTimestamp`/`endTimestamp`,
/// or use `meridian trace --key`, which has an index).
const QUERY_SCAN_LIMIT: u64 = 20_000;

/// `QUERY_MESSAGE`: messages of a topic with a key (or, with `_UNIQUE_KEY_QUERY`, a UNIQ_KEY)
/// stored within a time range, as a console looks them up. Scans each queue from the first
/// message at `beginTimestamp`, at most [`QUERY_SCAN_LIMIT`] entries, off the runtime threads.
fn query_message(remoting: &Arc<Remoting>, command: &RemotingCommand) -> Answer {
    let fields = command.fields();
    let parsed = (|| {
        Ok::<_, FieldError>((
            fields.str(&["topic"])?.to_owned(),
            fields.str(&["key"])?.to_owned(),
            fields.int_or(&["maxNum"], 32)?.clamp(1, 1024) as usize,
            fields.int_or(&["beginTimestamp"], 0)?,
            fields.int_or(&["endTimestamp"], i64::MAX)?,
            fields.bool_or(&["_UNIQUE_KEY_QUERY"], false)?,
        ))
    })();
    let (topic, key, max, begin, end, unique) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return Answer::Now(Some(field_failed(command, &error))),
    };
    if let Err(error) = meridian_proto::topics::validate_consumable(&topic) {
        return Answer::Now(Some(
            command.respond(response::INVALID_PARAMETER, Some(error.to_string())),
        ));
    }
    let remoting = remoting.clone();
    let request_command = command.clone().with_body(Bytes::new());
    Answer::Later(Box::pin(async move {
        let store = remoting.state.store.clone();
        let store_host = remoting.advertise;
        let found = tokio::task::spawn_blocking(move || -> crate::error::Result<(Bytes, usize)> {
            let queues = store
                .topic_queues(&topic)
                .ok_or_else(|| BrokerError::TopicNotFound(topic.clone()))?;
            let mut out = BytesMut::new();
            let mut count = 0;
            for queue_id in 0..queues {
                let queue = store.consume_queue(&topic, queue_id)?;
                let mut offset = store.search_offset(&topic, queue_id, begin)?;
                let stop = queue.max_offset().min(offset + QUERY_SCAN_LIMIT);
                'queue: while offset < stop && count < max {
                    let entries = store.read_entries(&queue, offset, 256, 8 << 20)?;
                    if entries.is_empty() {
                        break;
                    }
                    offset += entries.len() as u64;
                    for entry in entries {
                        let bytes = store.read_record(entry.commitlog_offset)?;
                        let Ok(record) = Record::parse(&bytes) else { continue };
                        if record.store_timestamp() > end {
                            break 'queue;
                        }
                        let matches = if unique {
                            record.msg_id() == Some(key.as_str())
                        } else {
                            properties::get(record.properties(), properties::KEYS)
                                .is_some_and(|keys| keys.split(properties::KEY_SEPARATOR).any(|one| one == key))
                        };
                        if matches {
                            let (body, _) = convert_records(&bytes.slice(..record.total_size()), store_host, None)?;
                            out.extend_from_slice(&body);
                            count += 1;
                            if count >= max {
                                break 'queue;
                            }
                        }
                    }
                }
            }
            Ok((out.freeze(), count))
        })
        .await
        .map_err(|error| BrokerError::Corrupt(format!("query task failed: {error}")))
        .and_then(|result| result);
        match found {
            Ok((_, 0)) => request_command.respond(
                response::QUERY_NOT_FOUND,
                Some("no message with this key in the time range".into()),
            ),
            Ok((body, _)) => request_command
                .success()
                .with("indexLastUpdateTimestamp", meridian_proto::time::now_millis())
                .with("indexLastUpdatePhyoffset", 0)
                .with_body(body),
            Err(error) => failed(&request_command, &error, Operation::Other),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_models_are_read_by_name_or_ordinal() {
        assert!(is_broadcasting(Some(&json!("BROADCASTING"))));
        assert!(
            is_broadcasting(Some(&json!(0))),
            "MessageModel.BROADCASTING is ordinal 0"
        );
        assert!(!is_broadcasting(Some(&json!("CLUSTERING"))));
        assert!(!is_broadcasting(Some(&json!(1))));
        assert!(!is_broadcasting(None), "clustering unless said otherwise");
    }

    #[test]
    fn v1_and_v2_send_headers_read_the_same() {
        let v2 = RemotingCommand::request(request::SEND_MESSAGE_V2, 1)
            .with("a", "pg")
            .with("b", "orders")
            .with("e", "3")
            .with("f", 1)
            .with("m", "1");
        let v1 = RemotingCommand::request(request::SEND_MESSAGE, 1)
            .with("producerGroup", "pg")
            .with("topic", "orders")
            .with("queueId", 3)
            .with("sysFlag", "1")
            .with("batch", "true");
        for command in [v2, v1] {
            let header = send_header(&command).unwrap();
            assert_eq!(
                (
                    header.producer_group,
                    header.topic,
                    header.queue_id,
                    header.sys_flag,
                    header.batch
                ),
                ("pg", "orders", 3, 1, true)
            );
        }
        let missing = send_header(&RemotingCommand::request(request::SEND_MESSAGE_V2, 1))
            .err()
            .unwrap();
        assert_eq!(missing.field, "b");
    }
}

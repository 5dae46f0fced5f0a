//! An in-memory fake broker speaking the real frames, for unit tests of producers and consumers.
//! It answers each request in its own task, so long polls and pipelining behave as with the real
//! broker; it keeps records, offsets and group members in memory.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use meridian_proto::frame::FrameCodec;
use meridian_proto::messages::{
    BrokerRoute, CommitOffsetRequest, ConsumerHeartbeat, ConsumerListResponse, ConsumerMember, CreateTopicRequest,
    GroupMember, MessageData, PullRequest, PullResponse, PullStatus, QueryOffsetRequest, QueryOffsetResponse,
    QueueInfoResponse, QueueRef, SendRequest, SendResponse, SendResult, TopicRoute, TopicRouteRequest, perm,
};
use meridian_proto::properties::PropertiesBuilder;
use meridian_proto::record::{RecordFields, StoredMessage, UNKNOWN_HOST, encode_into};
use meridian_proto::{ErrorCode, Frame, MessageId, RequestCode};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Name the fake broker gives itself in routes.
pub(crate) const BROKER_NAME: &str = "broker-a";
/// Address the fake broker advertises in routes: unreachable on purpose, so tests prove that
/// [`crate::StaticRoute`] uses the address it dialled.
const ADVERTISED_ADDR: &str = "advertised.invalid:7911";

pub(crate) struct FakeBroker {
    pub(crate) addr: String,
    state: Arc<State>,
    cancel: CancellationToken,
}

#[derive(Default)]
struct State {
    data: Mutex<Data>,
    appended: Notify,
}

#[derive(Default)]
struct Data {
    /// topic → queues → records.
    topics: HashMap<String, Vec<Vec<Bytes>>>,
    /// (group, topic, queue) → committed offset.
    offsets: HashMap<(String, String, u32), u64>,
    /// group → client id → what it reported.
    members: BTreeMap<String, BTreeMap<String, ConsumerMember>>,
    left: Vec<String>,
    send_failures: VecDeque<ErrorCode>,
    send_requests: Vec<SendRequest>,
    request_counts: HashMap<RequestCode, usize>,
    oneway_frames: usize,
    commitlog_offset: u64,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap()
    }
}

impl FakeBroker {
    pub(crate) async fn start(topics: &[(&str, u32)]) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State::default());
        for (topic, queues) in topics {
            state
                .lock()
                .topics
                .insert((*topic).to_owned(), vec![Vec::new(); *queues as usize]);
        }
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(listener, state.clone(), cancel.clone(), tracker.clone()));
        FakeBroker { addr, state, cancel }
    }

    /// Stores a message as if a producer had sent it.
    pub(crate) fn append(&self, topic: &str, queue_id: u32, body: &[u8]) {
        let mut properties = PropertiesBuilder::new();
        properties.msg_id(&MessageId::generate().to_string());
        let data = MessageData {
            flags: 0,
            born_timestamp: 1,
            properties: Bytes::from(properties.finish()),
            body: Bytes::copy_from_slice(body),
            reconsume_count: 0,
        };
        store(&mut self.state.lock(), topic, queue_id, &data);
        self.state.appended.notify_waiters();
    }

    /// Makes the next sends fail with these codes, one each.
    pub(crate) fn fail_next_sends(&self, codes: &[ErrorCode]) {
        self.state.lock().send_failures.extend(codes);
    }

    pub(crate) fn records(&self, topic: &str, queue_id: u32) -> Vec<Bytes> {
        self.state.lock().topics[topic][queue_id as usize].clone()
    }

    pub(crate) fn message_count(&self, topic: &str) -> usize {
        self.state.lock().topics[topic].iter().map(Vec::len).sum()
    }

    pub(crate) fn send_requests(&self) -> Vec<SendRequest> {
        self.state.lock().send_requests.clone()
    }

    pub(crate) fn request_count(&self, code: RequestCode) -> usize {
        self.state.lock().request_counts.get(&code).copied().unwrap_or(0)
    }

    pub(crate) fn total_requests(&self) -> usize {
        self.state.lock().request_counts.values().sum()
    }

    pub(crate) fn oneway_count(&self) -> usize {
        self.state.lock().oneway_frames
    }

    pub(crate) fn committed(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.state
            .lock()
            .offsets
            .get(&(group.to_owned(), topic.to_owned(), queue_id))
            .copied()
    }

    pub(crate) fn members(&self, group: &str) -> Vec<String> {
        self.state
            .lock()
            .members
            .get(group)
            .map(|members| members.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn left(&self) -> Vec<String> {
        self.state.lock().left.clone()
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Polls `condition` until it holds; fails the test after 10 s.
pub(crate) async fn eventually(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A stored message at `queue_offset` with an arbitrary body.
pub(crate) fn test_message(queue_offset: u64) -> StoredMessage {
    StoredMessage {
        topic: "orders".into(),
        queue_id: 0,
        queue_offset,
        commitlog_offset: 0,
        born_timestamp: 0,
        store_timestamp: 0,
        born_host: UNKNOWN_HOST,
        store_host: UNKNOWN_HOST,
        reconsume_count: 0,
        flags: 0,
        properties: Bytes::new(),
        body: Bytes::from_static(b"body"),
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, cancel: CancellationToken, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((socket, _)) = accepted else { return };
        let (read_half, write_half) = socket.into_split();
        let (replies_tx, mut replies_rx) = mpsc::unbounded_channel::<Frame>();
        let writer_cancel = cancel.clone();
        tracker.spawn(async move {
            let mut writer = FramedWrite::new(write_half, FrameCodec::new(64 << 20));
            loop {
                let reply = tokio::select! {
                    _ = writer_cancel.cancelled() => return,
                    reply = replies_rx.recv() => reply,
                };
                let Some(reply) = reply else { return };
                if writer.send(reply).await.is_err() {
                    return;
                }
            }
        });
        let (state, cancel, request_tracker) = (state.clone(), cancel.clone(), tracker.clone());
        tracker.spawn(async move {
            let mut reader = FramedRead::new(read_half, FrameCodec::new(64 << 20));
            loop {
                let frame = tokio::select! {
                    _ = cancel.cancelled() => return,
                    frame = reader.next() => frame,
                };
                let Some(Ok(frame)) = frame else { return };
                let (state, replies_tx) = (state.clone(), replies_tx.clone());
                request_tracker.spawn(async move {
                    if let Some(reply) = handle(&state, frame).await {
                        let _ = replies_tx.send(reply);
                    }
                });
            }
        });
    }
}

fn decode<T: prost::Message + Default>(frame: &Frame) -> T {
    T::decode(frame.body.clone()).expect("the client sent a malformed body")
}

fn ok(request_id: u64, body: &impl prost::Message) -> Option<Frame> {
    Some(Frame::response(request_id, Bytes::from(body.encode_to_vec())))
}

fn store(data: &mut Data, topic: &str, queue_id: u32, message: &MessageData) -> SendResult {
    let commitlog_offset = data.commitlog_offset;
    let queue = &mut data.topics.get_mut(topic).unwrap()[queue_id as usize];
    let queue_offset = queue.len() as u64;
    let store_host: SocketAddr = "127.0.0.1:7911".parse().unwrap();
    let fields = RecordFields {
        flags: message.flags,
        queue_id,
        queue_offset,
        commitlog_offset,
        born_timestamp: message.born_timestamp,
        store_timestamp: message.born_timestamp + 1,
        born_host: UNKNOWN_HOST,
        store_host,
        reconsume_count: message.reconsume_count,
        topic,
        properties: &message.properties,
        body: &message.body,
    };
    let mut record = vec![0u8; fields.encoded_len()];
    encode_into(&mut record, &fields);
    data.commitlog_offset += record.len() as u64;
    queue.push(Bytes::from(record));
    SendResult {
        msg_id: meridian_proto::properties::get(&message.properties, meridian_proto::properties::MSG_ID)
            .unwrap_or("")
            .to_owned(),
        queue_id,
        queue_offset,
        commitlog_offset,
        store_timestamp: message.born_timestamp + 1,
    }
}

fn topic_missing(request_id: u64, topic: &str) -> Option<Frame> {
    Some(Frame::error(
        request_id,
        ErrorCode::TopicNotFound,
        format!("topic {topic:?} does not exist on this broker; create it first"),
    ))
}

async fn handle(state: &State, frame: Frame) -> Option<Frame> {
    let id = frame.header.request_id;
    let code = RequestCode::from_u32(frame.header.code)?;
    {
        let mut data = state.lock();
        *data.request_counts.entry(code).or_default() += 1;
        if frame.is_oneway() {
            data.oneway_frames += 1;
        }
    }
    let reply = match code {
        RequestCode::Pull => return pull(state, id, decode(&frame)).await,
        RequestCode::Send => send(state, id, decode(&frame)),
        RequestCode::TopicRoute => {
            let request: TopicRouteRequest = decode(&frame);
            let data = state.lock();
            match data.topics.get(&request.topic) {
                None => topic_missing(id, &request.topic),
                Some(queues) => ok(
                    id,
                    &TopicRoute {
                        topic: request.topic.clone(),
                        brokers: vec![BrokerRoute {
                            broker_name: BROKER_NAME.to_owned(),
                            addr: ADVERTISED_ADDR.to_owned(),
                            idc: "local".to_owned(),
                            queues: queues.len() as u32,
                            perm: perm::READ | perm::WRITE,
                            replicas: Vec::new(),
                        }],
                        evacuated_idcs: Vec::new(),
                        lost_idcs: Vec::new(),
                    },
                ),
            }
        }
        RequestCode::CreateTopic => {
            let request: CreateTopicRequest = decode(&frame);
            let mut data = state.lock();
            match data.topics.entry(request.topic) {
                Entry::Occupied(_) => Some(Frame::error(id, ErrorCode::AlreadyExists, "topic exists")),
                Entry::Vacant(entry) => {
                    entry.insert(vec![Vec::new(); request.queues as usize]);
                    ok(id, &())
                }
            }
        }
        RequestCode::QueueInfo => {
            let request: QueueRef = decode(&frame);
            let data = state.lock();
            match data.topics.get(&request.topic) {
                None => topic_missing(id, &request.topic),
                Some(queues) => ok(
                    id,
                    &QueueInfoResponse {
                        min_offset: 0,
                        max_offset: queues[request.queue_id as usize].len() as u64,
                    },
                ),
            }
        }
        RequestCode::QueryOffset => {
            let request: QueryOffsetRequest = decode(&frame);
            let data = state.lock();
            if !data.topics.contains_key(&request.topic) {
                return topic_missing(id, &request.topic);
            }
            let offset = data
                .offsets
                .get(&(request.group, request.topic, request.queue_id))
                .copied();
            ok(id, &QueryOffsetResponse { offset, generation: 0 })
        }
        RequestCode::CommitOffset => {
            let request: CommitOffsetRequest = decode(&frame);
            state
                .lock()
                .offsets
                .insert((request.group, request.topic, request.queue_id), request.offset);
            ok(id, &())
        }
        RequestCode::ConsumerHeartbeat => {
            let request: ConsumerHeartbeat = decode(&frame);
            let member = ConsumerMember {
                client_id: request.client_id.clone(),
                idc: request.idc,
                allocation: request.allocation,
                deployment: request.deployment,
                sdk_version: request.sdk_version,
            };
            state
                .lock()
                .members
                .entry(request.group)
                .or_default()
                .insert(request.client_id, member);
            ok(id, &())
        }
        RequestCode::ConsumerList => {
            let request: GroupMember = decode(&frame);
            let members: Vec<ConsumerMember> = state
                .lock()
                .members
                .get(&request.group)
                .map(|members| members.values().cloned().collect())
                .unwrap_or_default();
            let response = ConsumerListResponse {
                client_ids: members.iter().map(|member| member.client_id.clone()).collect(),
                members,
                evacuated_idcs: Vec::new(),
            };
            ok(id, &response)
        }
        RequestCode::ConsumerLeave => {
            let request: GroupMember = decode(&frame);
            let mut data = state.lock();
            if let Some(members) = data.members.get_mut(&request.group) {
                members.remove(&request.client_id);
            }
            data.left.push(request.client_id);
            ok(id, &())
        }
        _ => Some(Frame::error(id, ErrorCode::UnsupportedRequest, "not in the fake")),
    };
    if frame.is_oneway() { None } else { reply }
}

fn send(state: &State, id: u64, request: SendRequest) -> Option<Frame> {
    let reply = {
        let mut data = state.lock();
        data.send_requests.push(request.clone());
        if let Some(code) = data.send_failures.pop_front() {
            return Some(Frame::error(id, code, format!("injected {code}")));
        }
        let Some(queues) = data.topics.get(&request.topic) else {
            return topic_missing(id, &request.topic);
        };
        if request.queue_id < 0 || request.queue_id as usize >= queues.len() {
            return Some(Frame::error(id, ErrorCode::QueueNotFound, "no such queue"));
        }
        let results = request
            .messages
            .iter()
            .map(|message| store(&mut data, &request.topic, request.queue_id as u32, message))
            .collect();
        ok(id, &SendResponse { results })
    };
    state.appended.notify_waiters();
    reply
}

async fn pull(state: &State, id: u64, request: PullRequest) -> Option<Frame> {
    let deadline = Instant::now() + Duration::from_millis(u64::from(request.long_poll_ms));
    loop {
        // Registered before looking, so an append between the look and the wait is not missed.
        let appended = state.appended.notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        {
            let data = state.lock();
            let Some(queues) = data.topics.get(&request.topic) else {
                return topic_missing(id, &request.topic);
            };
            let queue = &queues[request.queue_id as usize];
            let max_offset = queue.len() as u64;
            let mut response = PullResponse {
                status: PullStatus::Found as i32,
                next_offset: request.offset,
                min_offset: 0,
                max_offset,
                records: Bytes::new(),
                ..Default::default()
            };
            if request.offset > max_offset {
                response.status = PullStatus::OffsetMoved as i32;
                response.next_offset = max_offset;
                return ok(id, &response);
            }
            if request.offset < max_offset {
                let end = max_offset.min(request.offset + u64::from(request.max_count));
                let mut records = Vec::new();
                for record in &queue[request.offset as usize..end as usize] {
                    records.extend_from_slice(record);
                }
                response.records = Bytes::from(records);
                response.next_offset = end;
                return ok(id, &response);
            }
            if Instant::now() >= deadline {
                response.status = PullStatus::NoNewMessage as i32;
                return ok(id, &response);
            }
        }
        let _ = tokio::time::timeout_at(deadline, appended).await;
    }
}

/// A fake nameserver answering `TopicRoute` from routes and refusals the test sets, and admin
/// reads and writes (`NameserverRead`, `NameserverWrite`) with one answer the test sets.
pub(crate) struct FakeNameserver {
    pub(crate) addr: String,
    answers: Arc<Mutex<NameserverAnswers>>,
    cancel: CancellationToken,
}

#[derive(Default)]
struct NameserverAnswers {
    routes: HashMap<String, TopicRoute>,
    refusals: HashMap<String, (ErrorCode, String)>,
    lookups: usize,
    /// The answer to every admin request: a JSON body, or a refusal.
    admin: Option<Result<Bytes, (ErrorCode, String)>>,
    admin_requests: usize,
}

impl FakeNameserver {
    pub(crate) async fn start() -> FakeNameserver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let answers = Arc::new(Mutex::new(NameserverAnswers::default()));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (task_answers, task_cancel, task_tracker) = (answers.clone(), cancel.clone(), tracker.clone());
        tracker.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = task_cancel.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((socket, _)) = accepted else { return };
                let (answers, cancel) = (task_answers.clone(), task_cancel.clone());
                task_tracker.spawn(async move {
                    let mut framed = tokio_util::codec::Framed::new(socket, FrameCodec::new(1 << 20));
                    loop {
                        let frame = tokio::select! {
                            _ = cancel.cancelled() => return,
                            frame = framed.next() => frame,
                        };
                        let Some(Ok(frame)) = frame else { return };
                        let reply = answer_route(&answers, &frame);
                        if framed.send(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeNameserver { addr, answers, cancel }
    }

    /// Answers lookups of `route.topic` with `route`.
    pub(crate) fn set_route(&self, route: TopicRoute) {
        self.answers.lock().unwrap().routes.insert(route.topic.clone(), route);
    }

    /// Answers lookups of `topic` with an error.
    pub(crate) fn refuse(&self, topic: &str, code: ErrorCode, message: &str) {
        self.answers
            .lock()
            .unwrap()
            .refusals
            .insert(topic.to_owned(), (code, message.to_owned()));
    }

    /// Answers every admin read and write with `body`.
    pub(crate) fn set_admin_answer(&self, body: &'static str) {
        self.answers.lock().unwrap().admin = Some(Ok(Bytes::from_static(body.as_bytes())));
    }

    /// Refuses every admin read and write.
    pub(crate) fn refuse_admin(&self, code: ErrorCode, message: &str) {
        self.answers.lock().unwrap().admin = Some(Err((code, message.to_owned())));
    }

    /// Admin reads and writes seen so far.
    pub(crate) fn admin_requests(&self) -> usize {
        self.answers.lock().unwrap().admin_requests
    }

    /// Route lookups answered so far.
    pub(crate) fn lookups(&self) -> usize {
        self.answers.lock().unwrap().lookups
    }
}

impl Drop for FakeNameserver {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn answer_route(answers: &Mutex<NameserverAnswers>, frame: &Frame) -> Frame {
    let id = frame.header.request_id;
    match RequestCode::from_u32(frame.header.code) {
        Some(RequestCode::TopicRoute) => {}
        Some(RequestCode::NameserverRead | RequestCode::NameserverWrite) => {
            let mut answers = answers.lock().unwrap();
            answers.admin_requests += 1;
            return match &answers.admin {
                Some(Ok(body)) => Frame::response(id, body.clone()),
                Some(Err((code, message))) => Frame::error(id, *code, message.clone()),
                None => Frame::error(id, ErrorCode::UnsupportedRequest, "the test set no admin answer"),
            };
        }
        _ => {
            return Frame::error(
                id,
                ErrorCode::UnsupportedRequest,
                "the fake nameserver only answers TopicRoute, NameserverRead and NameserverWrite",
            );
        }
    }
    let request: TopicRouteRequest = decode(frame);
    let mut answers = answers.lock().unwrap();
    answers.lookups += 1;
    if let Some((code, message)) = answers.refusals.get(&request.topic) {
        return Frame::error(id, *code, message.clone());
    }
    match answers.routes.get(&request.topic) {
        Some(route) => Frame::response(id, Bytes::from(prost::Message::encode_to_vec(route))),
        None => Frame::error(
            id,
            ErrorCode::TopicNotFound,
            format!("topic {:?} is unknown to the nameserver", request.topic),
        ),
    }
}

/// An address nothing listens on: connecting to it is refused.
pub(crate) fn refused_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

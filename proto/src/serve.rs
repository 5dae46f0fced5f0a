//! The answering side of the framed protocol: [`serve_connection`], the one connection loop of
//! every Meridian server (the broker and the nameserver), with the per-service part behind
//! [`FrameService`]. [`crate::transport`] is the requesting side.
//!
//! Each connection has a reader (the task that runs [`serve_connection`]) and a writer task. The
//! reader decodes frames and asks the service for each request's [`Answer`]: one computed at once
//! is queued for the writer inline; one that completes later runs as a task of the connection, at
//! most [`ConnectionSettings::max_inflight`] at once, and is answered out of order by request id.
//! The writer sends everything already queued with one flush, so pipelined clients share
//! syscalls. With [`ConnectionSettings::max_pending_response_bytes`] set, queued answers also
//! wait within a byte budget: a client that stops reading its responses only stalls itself,
//! holding bounded memory.
//!
//! A frame that cannot be decoded gets an error and closes its connection; what happens on an
//! unsupported request code or a bad body is the service's call. Requests of the code that
//! [`FrameService::batched_code`] names, read back to back, are answered together (the broker
//! combines sends into one append).
//!
//! With [`ConnectionSettings::auth`] requiring it, a connection must log in first
//! ([`crate::auth`]): anything before a successful login is refused and closes the connection,
//! and requests only cluster nodes send are refused from users.
//!
//! The service is a type parameter, not a trait object: each server gets its own copy of the
//! loop, with no dynamic dispatch per frame.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, AuthError, Authenticator, Principal, ServerHandshake};
use crate::frame::FrameError;
use crate::{ErrorCode, Frame, FrameCodec, RequestCode};

/// Most requests of the batched code answered together: bounds the latency the first of them
/// waits for the rest.
pub const MAX_BATCH: usize = 64;

/// A future answer to one request.
pub type PendingAnswer<E> = Pin<Box<dyn Future<Output = Result<Bytes, E>> + Send>>;

/// How a service answers one request.
pub enum Answer<E> {
    /// Answered now: the body of the response, or why the request failed.
    Now(Result<Bytes, E>),
    /// Answered when the future completes; it runs as a task of the connection.
    Later(PendingAnswer<E>),
}

impl<E: Send + 'static> Answer<E> {
    /// Answers inline when `work` completes without waiting, else as a task of the connection.
    pub fn now_or_later(work: impl Future<Output = Result<Bytes, E>> + Send + 'static) -> Answer<E> {
        let mut work = Box::pin(work);
        match (&mut work).now_or_never() {
            Some(result) => Answer::Now(result),
            None => Answer::Later(work),
        }
    }
}

/// What [`serve_connection`] does after a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterError {
    /// Answer the error (unless the request was one-way) and go on reading.
    Answer,
    /// Answer the error, even to a one-way request, and close the connection.
    AnswerAndClose,
}

/// The part of a connection that differs between services: how requests are answered, how errors
/// become frames, and what is counted and logged.
pub trait FrameService: Send + Sync + 'static {
    /// Why a request failed.
    type Error: Send + 'static;

    /// Answers one request from `peer`.
    fn answer(&self, code: RequestCode, body: Bytes, peer: SocketAddr) -> Answer<Self::Error>;

    /// Answers one request from `peer`, who logged in as `principal` ([`Principal::Anonymous`]
    /// where no login is required). Services that record or check who asks override this.
    fn answer_as(
        &self,
        _principal: &Principal,
        code: RequestCode,
        body: Bytes,
        peer: SocketAddr,
    ) -> Answer<Self::Error> {
        self.answer(code, body, peer)
    }

    /// Requests of this code, read back to back, go to [`FrameService::answer_batch`] together.
    fn batched_code(&self) -> Option<RequestCode> {
        None
    }

    /// Answers requests of [`FrameService::batched_code`] together, one answer per body, in order.
    fn answer_batch(&self, bodies: Vec<Bytes>, peer: SocketAddr) -> Vec<Answer<Self::Error>> {
        let code = self
            .batched_code()
            .expect("answer_batch is only called for the batched code");
        bodies.into_iter().map(|body| self.answer(code, body, peer)).collect()
    }

    /// [`FrameService::answer_batch`] for a connection logged in as `principal`. Services that
    /// check who asks override this.
    fn answer_batch_as(
        &self,
        _principal: &Principal,
        bodies: Vec<Bytes>,
        peer: SocketAddr,
    ) -> Vec<Answer<Self::Error>> {
        self.answer_batch(bodies, peer)
    }

    /// The error response to request `request_id` (counting and logging it as the service does).
    fn error_frame(&self, request_id: u64, error: Self::Error) -> Frame;

    /// Called for every failed request before it is answered; `deferred` when the answer came
    /// from a task ([`Answer::Later`]), where the connection can no longer be closed.
    fn after_error(
        &self,
        _peer: SocketAddr,
        _code: RequestCode,
        _error: &Self::Error,
        _oneway: bool,
        _deferred: bool,
    ) -> AfterError {
        AfterError::Answer
    }

    /// The answer to a frame whose request code this service does not know (`code` as sent), and
    /// whether the connection closes after it.
    fn unsupported(&self, peer: SocketAddr, request_id: u64, code: u32) -> (Frame, AfterError);

    /// A frame could not be decoded (it closes the connection), or its code was unknown.
    fn malformed_frame(&self) {}

    /// A connection was accepted.
    fn connection_opened(&self, _peer: SocketAddr) {}

    /// A connection logged in (`Ok`) or failed to (`Err`, which closes it).
    fn connection_authenticated(&self, _peer: SocketAddr, _outcome: Result<&Principal, &AuthError>) {}

    /// The connection stopped reading (peer closed, bad frame or shutdown). Called before waiting
    /// for the requests still running, which may take a while (long polls).
    fn connection_reader_closed(&self, _peer: SocketAddr) {}

    /// The connection is closed and its requests done.
    fn connection_closed(&self, _peer: SocketAddr) {}
}

/// Limits of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Codec with the largest frame the server accepts.
    pub codec: FrameCodec,
    /// Requests running at once ([`Answer::Later`]); more wait for a slot. Also the length of the
    /// writer's queue.
    pub max_inflight: usize,
    /// Bytes of responses queued for the writer before answers wait; `None`: bounded by
    /// `max_inflight` frames only.
    pub max_pending_response_bytes: Option<usize>,
    /// Who may connect; `None`: anyone, without logging in.
    pub auth: Option<Arc<Authenticator>>,
}

/// Where a connection's login stands.
enum LoginState {
    /// Requests are served: the connection logged in, or none is required.
    Open(Principal),
    /// Nothing but an [`RequestCode::AuthHello`] is answered.
    AwaitHello,
    /// Challenged: nothing but the [`RequestCode::AuthProof`] is answered.
    AwaitProof(ServerHandshake),
}

/// One connection's login.
struct Login {
    auth: Option<Arc<Authenticator>>,
    state: LoginState,
}

impl Login {
    fn new(auth: Option<Arc<Authenticator>>) -> Login {
        let required = auth.as_ref().is_some_and(|auth| auth.required());
        Login {
            auth: auth.filter(|_| required),
            state: if required {
                LoginState::AwaitHello
            } else {
                LoginState::Open(Principal::Anonymous)
            },
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.state, LoginState::Open(_))
    }

    fn principal(&self) -> &Principal {
        static ANONYMOUS: Principal = Principal::Anonymous;
        match &self.state {
            LoginState::Open(principal) => principal,
            _ => &ANONYMOUS,
        }
    }

    /// Why a logged-in connection may not make this request, if it may not.
    fn refuses(&self, code: RequestCode) -> Option<AuthError> {
        match &self.state {
            LoginState::Open(principal) if self.auth.is_some() && code.is_node_only() && !principal.is_node() => {
                Some(AuthError::NodeOnly {
                    code: code.as_str(),
                    principal: principal.to_string(),
                })
            }
            _ => None,
        }
    }

    /// Answers a login request, or any request before the login: the answer, and whether the
    /// connection closes after it.
    fn step<S: FrameService>(
        &mut self,
        service: &S,
        peer: SocketAddr,
        code: RequestCode,
        request_id: u64,
        body: &[u8],
    ) -> (Frame, bool) {
        let refuse = |error: AuthError| {
            service.connection_authenticated(peer, Err(&error));
            tracing::warn!(%peer, %error, "connection refused");
            let code = match error {
                AuthError::Protocol(_) => ErrorCode::InvalidArgument,
                _ => ErrorCode::Unauthenticated,
            };
            (Frame::error(request_id, code, error.to_string()), true)
        };
        let state = std::mem::replace(&mut self.state, LoginState::AwaitHello);
        match (code, state, &self.auth) {
            // No login required: a client configured with credentials is told so and goes on.
            (RequestCode::AuthHello, LoginState::Open(Principal::Anonymous), None) => {
                self.state = LoginState::Open(Principal::Anonymous);
                let challenge = auth::AuthChallenge {
                    required: false,
                    ..Default::default()
                };
                (Frame::response(request_id, encode(&challenge)), false)
            }
            (RequestCode::AuthHello, LoginState::AwaitHello, Some(authenticator)) => {
                let challenged = auth::decode("login hello", body)
                    .and_then(|hello| authenticator.challenge(hello, crate::time::now_millis().max(0) as u64));
                match challenged {
                    Ok((handshake, challenge)) => {
                        self.state = LoginState::AwaitProof(handshake);
                        (Frame::response(request_id, encode(&challenge)), false)
                    }
                    Err(error) => refuse(error),
                }
            }
            (RequestCode::AuthProof, LoginState::AwaitProof(handshake), Some(_)) => {
                match auth::decode("login proof", body).and_then(|proof| handshake.finish(&proof)) {
                    Ok((principal, ok)) => {
                        service.connection_authenticated(peer, Ok(&principal));
                        tracing::debug!(%peer, %principal, "connection authenticated");
                        self.state = LoginState::Open(principal);
                        (Frame::response(request_id, encode(&ok)), false)
                    }
                    Err(error) => refuse(error),
                }
            }
            (code, LoginState::AwaitHello, _) if !code.is_auth() => refuse(AuthError::Required),
            (code, _, _) => refuse(AuthError::Protocol(format!(
                "{} out of order: send auth_hello once, then auth_proof, before any other request",
                code.as_str()
            ))),
        }
    }
}

fn encode(message: &impl prost::Message) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// Responses waiting for the writer, bounded in number and, with a budget, in bytes.
#[derive(Clone)]
struct Responses {
    frames_tx: mpsc::Sender<(Frame, Option<OwnedSemaphorePermit>)>,
    /// One permit per KiB of queued responses.
    budget: Option<(Arc<Semaphore>, u32)>,
}

impl Responses {
    /// Queues a response, waiting while the connection's queued bytes are over budget.
    async fn send(&self, frame: Frame) -> Result<(), ()> {
        let permit = match &self.budget {
            Some((budget, budget_kib)) => {
                // A single response larger than the budget takes all of it rather than waiting forever.
                let kib = (frame.encoded_len() / 1024 + 1).min(*budget_kib as usize) as u32;
                Some(budget.clone().acquire_many_owned(kib).await.map_err(drop)?)
            }
            None => None,
        };
        self.frames_tx.send((frame, permit)).await.map_err(drop)
    }
}

async fn write_frames(
    mut sink: FramedWrite<OwnedWriteHalf, FrameCodec>,
    mut frames: mpsc::Receiver<(Frame, Option<OwnedSemaphorePermit>)>,
) {
    let mut written = Vec::new();
    while let Some((frame, permit)) = frames.recv().await {
        if sink.feed(frame).await.is_err() {
            return;
        }
        written.extend(permit);
        // Write everything already queued with one flush: pipelined clients share syscalls.
        while let Ok((frame, permit)) = frames.try_recv() {
            if sink.feed(frame).await.is_err() {
                return;
            }
            written.extend(permit);
        }
        if sink.flush().await.is_err() {
            return;
        }
        // The bytes left the process: give their budget back.
        written.clear();
    }
}

/// What answering a request on one connection needs.
struct Connection<'a, S: FrameService> {
    service: &'a Arc<S>,
    peer: SocketAddr,
    responses: &'a Responses,
    permits: &'a Arc<Semaphore>,
    tasks: &'a TaskTracker,
}

impl<S: FrameService> Connection<'_, S> {
    /// Sends (or schedules) the answer to one request. False when the connection must close.
    async fn dispatch(&self, code: RequestCode, answer: Answer<S::Error>, request_id: u64, oneway: bool) -> bool {
        match answer {
            Answer::Now(Ok(body)) => oneway || self.responses.send(Frame::response(request_id, body)).await.is_ok(),
            Answer::Now(Err(error)) => {
                let after = self.service.after_error(self.peer, code, &error, oneway, false);
                let close = after == AfterError::AnswerAndClose;
                if (!oneway || close)
                    && self
                        .responses
                        .send(self.service.error_frame(request_id, error))
                        .await
                        .is_err()
                {
                    return false;
                }
                !close
            }
            Answer::Later(pending) => {
                let Ok(permit) = self.permits.clone().acquire_owned().await else {
                    return false;
                };
                let responses = self.responses.clone();
                let service = self.service.clone();
                let peer = self.peer;
                self.tasks.spawn(async move {
                    let result = pending.await;
                    if let Err(error) = &result {
                        service.after_error(peer, code, error, oneway, true);
                    }
                    if !oneway {
                        let frame = match result {
                            Ok(body) => Frame::response(request_id, body),
                            Err(error) => service.error_frame(request_id, error),
                        };
                        let _ = responses.send(frame).await;
                    }
                    drop(permit);
                });
                true
            }
        }
    }
}

/// Serves one accepted connection until the peer closes it, a frame cannot be decoded, the
/// service closes it, or `shutdown` is cancelled; returns once the connection's requests finished.
pub async fn serve_connection<S: FrameService>(
    service: Arc<S>,
    settings: ConnectionSettings,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    service.connection_opened(peer);
    tracing::debug!(%peer, "connection opened");
    let (read_half, write_half) = stream.into_split();
    let mut frames = FramedRead::with_capacity(read_half, settings.codec.clone(), 64 * 1024);
    let mut sink = FramedWrite::new(write_half, settings.codec);
    sink.set_backpressure_boundary(256 * 1024);
    let (frames_tx, frames_rx) = mpsc::channel(settings.max_inflight);
    let responses = Responses {
        frames_tx,
        budget: settings.max_pending_response_bytes.map(|bytes| {
            let budget_kib = (bytes / 1024).max(1) as u32;
            (Arc::new(Semaphore::new(budget_kib as usize)), budget_kib)
        }),
    };
    let tasks = TaskTracker::new();
    tasks.spawn(write_frames(sink, frames_rx));
    let permits = Arc::new(Semaphore::new(settings.max_inflight));
    let connection = Connection {
        service: &service,
        peer,
        responses: &responses,
        permits: &permits,
        tasks: &tasks,
    };
    let batched_code = service.batched_code();
    let mut login = Login::new(settings.auth.clone());
    // A frame read while gathering a batch that was not itself of the batched code: handled next.
    let mut carried: Option<Option<Result<Frame, FrameError>>> = None;
    loop {
        let next = match carried.take() {
            Some(next) => next,
            None => tokio::select! {
                _ = shutdown.cancelled() => break,
                next = frames.next() => next,
            },
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                service.malformed_frame();
                tracing::warn!(%peer, %error, "malformed frame; closing connection");
                let _ = responses
                    .send(Frame::error(0, ErrorCode::MalformedFrame, error.to_string()))
                    .await;
                break;
            }
        };
        let request_id = frame.header.request_id;
        let oneway = frame.is_oneway();
        let Some(code) = RequestCode::from_u32(frame.header.code).filter(|_| !frame.is_response()) else {
            service.malformed_frame();
            let (answer, after) = service.unsupported(peer, request_id, frame.header.code);
            if responses.send(answer).await.is_err() || after == AfterError::AnswerAndClose {
                break;
            }
            continue;
        };
        if code.is_auth() || !login.is_open() {
            let (answer, close) = login.step(&*service, peer, code, request_id, &frame.body);
            if responses.send(answer).await.is_err() || close {
                break;
            }
            continue;
        }
        if let Some(error) = login.refuses(code) {
            tracing::warn!(%peer, %error, "request refused");
            if !oneway {
                let answer = Frame::error(request_id, ErrorCode::PermissionDenied, error.to_string());
                if responses.send(answer).await.is_err() {
                    break;
                }
            }
            continue;
        }
        if Some(code) != batched_code {
            let answer = service.answer_as(login.principal(), code, frame.body, peer);
            if !connection.dispatch(code, answer, request_id, oneway).await {
                break;
            }
            continue;
        }
        // Requests of the batched code already read are answered together.
        let mut batch = vec![(request_id, oneway, frame.body)];
        while batch.len() < MAX_BATCH {
            match frames.next().now_or_never() {
                Some(Some(Ok(next))) if !next.is_response() && next.header.code == code as u32 => {
                    batch.push((next.header.request_id, next.is_oneway(), next.body));
                }
                Some(other) => {
                    carried = Some(other);
                    break;
                }
                None => break,
            }
        }
        let (ids, bodies): (Vec<(u64, bool)>, Vec<Bytes>) = batch
            .into_iter()
            .map(|(request_id, oneway, body)| ((request_id, oneway), body))
            .unzip();
        let answers = service.answer_batch_as(login.principal(), bodies, peer);
        let mut open = true;
        for ((request_id, oneway), answer) in ids.into_iter().zip(answers) {
            if !connection.dispatch(code, answer, request_id, oneway).await {
                open = false;
                break;
            }
        }
        if !open {
            break;
        }
    }
    service.connection_reader_closed(peer);
    drop(responses);
    tasks.close();
    tasks.wait().await;
    service.connection_closed(peer);
    tracing::debug!(%peer, "connection closed");
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    use super::*;
    use crate::frame::FLAG_ONEWAY;

    /// A service whose answers the test chooses by body: `later` waits for `release`, `fail`
    /// fails, `close` fails and closes the connection; anything else is echoed.
    #[derive(Default)]
    struct Scripted {
        release: Arc<Notify>,
        batches: Mutex<Vec<usize>>,
        malformed: AtomicU32,
        opened: AtomicU32,
        closed: AtomicU32,
    }

    impl FrameService for Scripted {
        type Error = String;

        fn answer(&self, _code: RequestCode, body: Bytes, _peer: SocketAddr) -> Answer<String> {
            match &body[..] {
                b"later" => {
                    let release = self.release.clone();
                    Answer::Later(Box::pin(async move {
                        release.notified().await;
                        Ok(body)
                    }))
                }
                b"fail" => Answer::Now(Err("failed as asked".to_owned())),
                b"close" => Answer::Now(Err("closing as asked".to_owned())),
                _ => Answer::Now(Ok(body)),
            }
        }

        fn batched_code(&self) -> Option<RequestCode> {
            Some(RequestCode::Send)
        }

        fn answer_batch(&self, bodies: Vec<Bytes>, peer: SocketAddr) -> Vec<Answer<String>> {
            self.batches.lock().unwrap().push(bodies.len());
            bodies
                .into_iter()
                .map(|body| self.answer(RequestCode::Send, body, peer))
                .collect()
        }

        fn error_frame(&self, request_id: u64, error: String) -> Frame {
            Frame::error(request_id, ErrorCode::InvalidArgument, error)
        }

        fn after_error(&self, _: SocketAddr, _: RequestCode, error: &String, _: bool, _: bool) -> AfterError {
            if error.starts_with("closing") {
                AfterError::AnswerAndClose
            } else {
                AfterError::Answer
            }
        }

        fn unsupported(&self, _peer: SocketAddr, request_id: u64, code: u32) -> (Frame, AfterError) {
            let message = format!("request code {code} is not supported");
            (
                Frame::error(request_id, ErrorCode::UnsupportedRequest, message),
                AfterError::Answer,
            )
        }

        fn malformed_frame(&self) {
            self.malformed.fetch_add(1, Ordering::Relaxed);
        }

        fn connection_opened(&self, _peer: SocketAddr) {
            self.opened.fetch_add(1, Ordering::Relaxed);
        }

        fn connection_closed(&self, _peer: SocketAddr) {
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    type Client = (
        FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>,
        FramedWrite<OwnedWriteHalf, FrameCodec>,
    );

    /// A server of `service` for one connection on a loopback port, and a client connected to it.
    async fn serve_one(service: Arc<Scripted>) -> (Client, TaskTracker) {
        let (addr, tasks) = serve_many(service, None, 1).await;
        let (read_half, write_half) = TcpStream::connect(addr).await.unwrap().into_split();
        let codec = FrameCodec::new(1 << 20);
        (
            (
                FramedRead::new(read_half, codec.clone()),
                FramedWrite::new(write_half, codec),
            ),
            tasks,
        )
    }

    /// A server of `service` for `connections` connections on a loopback port.
    async fn serve_many(
        service: Arc<Scripted>,
        auth: Option<Arc<Authenticator>>,
        connections: usize,
    ) -> (SocketAddr, TaskTracker) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = TaskTracker::new();
        let serving = tasks.clone();
        tasks.spawn(async move {
            for _ in 0..connections {
                let (stream, peer) = listener.accept().await.unwrap();
                let settings = ConnectionSettings {
                    codec: FrameCodec::new(1 << 20),
                    max_inflight: 4,
                    max_pending_response_bytes: Some(64 * 1024),
                    auth: auth.clone(),
                };
                serving.spawn(serve_connection(
                    service.clone(),
                    settings,
                    stream,
                    peer,
                    CancellationToken::new(),
                ));
            }
        });
        tasks.close();
        (addr, tasks)
    }

    fn request(request_id: u64, code: RequestCode, body: &'static str) -> Frame {
        Frame::request(request_id, code, Bytes::from_static(body.as_bytes()))
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_by_id_with_back_to_back_sends_in_one_batch() {
        let service = Arc::new(Scripted::default());
        let ((mut responses, mut requests), tasks) = serve_one(service.clone()).await;
        let mut oneway = request(6, RequestCode::TopicRoute, "unanswered");
        oneway.header.flags |= FLAG_ONEWAY;
        for frame in [
            request(1, RequestCode::Send, "a"),
            request(2, RequestCode::Send, "b"),
            request(3, RequestCode::Send, "c"),
            request(4, RequestCode::TopicRoute, "later"),
            request(5, RequestCode::TopicRoute, "now"),
            oneway,
            request(7, RequestCode::TopicRoute, "fail"),
        ] {
            requests.feed(frame).await.unwrap();
        }
        requests.flush().await.unwrap();

        let mut answered = Vec::new();
        while answered.len() < 5 {
            let frame = responses.next().await.unwrap().unwrap();
            assert!(frame.is_response());
            answered.push((frame.header.request_id, frame.error_code(), frame.body));
        }
        // Request 4 waits for its task: everything after it was answered first.
        assert_eq!(
            answered,
            [
                (1, ErrorCode::Ok, Bytes::from_static(b"a")),
                (2, ErrorCode::Ok, Bytes::from_static(b"b")),
                (3, ErrorCode::Ok, Bytes::from_static(b"c")),
                (5, ErrorCode::Ok, Bytes::from_static(b"now")),
                (7, ErrorCode::InvalidArgument, Bytes::new()),
            ]
        );
        service.release.notify_one();
        let later = responses.next().await.unwrap().unwrap();
        assert_eq!((later.header.request_id, &later.body[..]), (4, &b"later"[..]));
        assert_eq!(
            *service.batches.lock().unwrap(),
            [3],
            "the three sends arrived together"
        );

        drop(requests);
        assert!(responses.next().await.is_none(), "one-way request 6 got no answer");
        tasks.wait().await;
        assert_eq!(service.opened.load(Ordering::Relaxed), 1);
        assert_eq!(service.closed.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn unknown_codes_are_answered_while_closing_errors_and_bad_frames_close() {
        let service = Arc::new(Scripted::default());
        let ((mut responses, mut requests), tasks) = serve_one(service.clone()).await;
        let mut unknown = request(1, RequestCode::TopicRoute, "x");
        unknown.header.code = 9_999;
        requests.send(unknown).await.unwrap();
        let answer = responses.next().await.unwrap().unwrap();
        assert_eq!(
            (answer.header.request_id, answer.error_code()),
            (1, ErrorCode::UnsupportedRequest)
        );
        assert_eq!(service.malformed.load(Ordering::Relaxed), 1);
        // The service chose to keep the connection: the next request is served.
        requests
            .send(request(2, RequestCode::TopicRoute, "still here"))
            .await
            .unwrap();
        assert_eq!(&responses.next().await.unwrap().unwrap().body[..], b"still here");
        // An error the service closes on is answered even to a one-way request, then the
        // connection closes.
        let mut closing = request(3, RequestCode::TopicRoute, "close");
        closing.header.flags |= FLAG_ONEWAY;
        requests.send(closing).await.unwrap();
        let answer = responses.next().await.unwrap().unwrap();
        assert_eq!(
            (answer.header.request_id, answer.error_code()),
            (3, ErrorCode::InvalidArgument)
        );
        assert!(responses.next().await.is_none());
        tasks.wait().await;

        // A frame that cannot be decoded gets MalformedFrame for request 0, then the connection closes.
        let ((mut responses, requests), tasks) = serve_one(service.clone()).await;
        let mut raw = requests.into_inner();
        raw.write_all(&[0xFF; 8]).await.unwrap();
        let answer = responses.next().await.unwrap().unwrap();
        assert_eq!(
            (answer.header.request_id, answer.error_code()),
            (0, ErrorCode::MalformedFrame)
        );
        assert!(responses.next().await.is_none());
        tasks.wait().await;
        assert_eq!(service.malformed.load(Ordering::Relaxed), 2);
        assert_eq!(service.closed.load(Ordering::Relaxed), 2);
    }

    mod auth_required {
        use super::*;
        use crate::auth::{AuthHello, AuthProof, ClientHandshake, Credentials, UserCache, Verifier};
        use crate::transport::{ConnectionPool, TransportConfig, TransportError};
        use prost::Message;
        use std::time::Duration;

        const NODE_SECRET: &str = "node-secret-for-tests-0123456789abcdef";

        fn authenticator() -> Arc<Authenticator> {
            let users = UserCache::default();
            users.replace([("alice".to_owned(), Verifier::generate(b"alice-secret"))].into());
            Arc::new(Authenticator::new(true, Some(NODE_SECRET), Arc::new(users)))
        }

        fn pool(credentials: Option<Credentials>) -> ConnectionPool {
            ConnectionPool::new(TransportConfig {
                credentials,
                ..TransportConfig::default()
            })
        }

        async fn raw_client(addr: SocketAddr) -> Client {
            let (read_half, write_half) = TcpStream::connect(addr).await.unwrap().into_split();
            let codec = FrameCodec::new(1 << 20);
            (
                FramedRead::new(read_half, codec.clone()),
                FramedWrite::new(write_half, codec),
            )
        }

        async fn exchange(client: &mut Client, frame: Frame) -> Frame {
            client.1.send(frame).await.unwrap();
            client.0.next().await.unwrap().unwrap()
        }

        #[tokio::test]
        async fn auth_logged_in_users_are_served_and_others_refused_and_closed() {
            let service = Arc::new(Scripted::default());
            let (addr, tasks) = serve_many(service.clone(), Some(authenticator()), 3).await;
            let addr_text = addr.to_string();

            let alice = pool(Some(Credentials::new("alice", "alice-secret")));
            let answer = alice
                .request(
                    &addr_text,
                    RequestCode::TopicRoute,
                    Bytes::from_static(b"now"),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            assert_eq!(&answer.body[..], b"now");

            let wrong = pool(Some(Credentials::new("alice", "not-her-secret")));
            let error = wrong
                .request(
                    &addr_text,
                    RequestCode::TopicRoute,
                    Bytes::from_static(b"now"),
                    Duration::from_secs(5),
                )
                .await
                .unwrap_err();
            let TransportError::Remote { code, message, .. } = &error else {
                panic!("{error}")
            };
            assert_eq!(*code, ErrorCode::Unauthenticated);
            assert!(
                message.contains("authentication failed for user \"alice\""),
                "{message}"
            );
            assert!(!message.contains("not-her-secret"));

            // No login at all: refused, and the connection closes.
            let mut anonymous = raw_client(addr).await;
            let answer = exchange(&mut anonymous, request(1, RequestCode::TopicRoute, "now")).await;
            assert_eq!(answer.error_code(), ErrorCode::Unauthenticated);
            assert!(
                answer.header.remark.contains("MERIDIAN_USER"),
                "{}",
                answer.header.remark
            );
            assert!(anonymous.0.next().await.is_none());
            alice.shutdown().await;
            wrong.shutdown().await;
            tasks.wait().await;
        }

        #[tokio::test]
        async fn auth_a_replayed_handshake_is_refused() {
            let service = Arc::new(Scripted::default());
            let (addr, tasks) = serve_many(service, Some(authenticator()), 2).await;
            // The real client logs in; an eavesdropper records its hello and proof.
            let (mut handshake, hello) = ClientHandshake::start(Credentials::new("alice", "alice-secret"));
            let hello_body = Bytes::from(hello.encode_to_vec());
            let mut victim = raw_client(addr).await;
            let challenge = exchange(
                &mut victim,
                Frame::request(1, RequestCode::AuthHello, hello_body.clone()),
            )
            .await;
            let challenge = crate::auth::decode("challenge", &challenge.body).unwrap();
            let proof: AuthProof = handshake.respond(&challenge).unwrap().unwrap();
            let proof_body = Bytes::from(proof.encode_to_vec());
            let ok = exchange(
                &mut victim,
                Frame::request(2, RequestCode::AuthProof, proof_body.clone()),
            )
            .await;
            assert_eq!(ok.error_code(), ErrorCode::Ok);

            let mut attacker = raw_client(addr).await;
            let replayed_hello: AuthHello = crate::auth::decode("hello", &hello_body).unwrap();
            assert_eq!(replayed_hello.user, "alice");
            let challenge = exchange(&mut attacker, Frame::request(1, RequestCode::AuthHello, hello_body)).await;
            assert_eq!(challenge.error_code(), ErrorCode::Ok);
            let refused = exchange(&mut attacker, Frame::request(2, RequestCode::AuthProof, proof_body)).await;
            assert_eq!(refused.error_code(), ErrorCode::Unauthenticated);
            assert!(attacker.0.next().await.is_none(), "the connection closes");
            drop(victim);
            tasks.wait().await;
        }

        #[tokio::test]
        async fn auth_node_only_requests_are_refused_from_users_and_served_to_nodes() {
            let service = Arc::new(Scripted::default());
            let (addr, tasks) = serve_many(service, Some(authenticator()), 2).await;
            let addr_text = addr.to_string();
            let alice = pool(Some(Credentials::new("alice", "alice-secret")));
            let error = alice
                .request(
                    &addr_text,
                    RequestCode::ReplicaFetch,
                    Bytes::from_static(b"now"),
                    Duration::from_secs(5),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(&error, TransportError::Remote { code: ErrorCode::PermissionDenied, message, .. } if message.contains("cluster nodes only")),
                "{error}"
            );
            let node = pool(Some(Credentials::node(NODE_SECRET)));
            let answer = node
                .request(
                    &addr_text,
                    RequestCode::ReplicaFetch,
                    Bytes::from_static(b"now"),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            assert_eq!(&answer.body[..], b"now");
            alice.shutdown().await;
            node.shutdown().await;
            tasks.wait().await;
        }

        #[tokio::test]
        async fn auth_a_client_with_credentials_still_talks_to_a_server_without_auth() {
            let service = Arc::new(Scripted::default());
            let (addr, tasks) = serve_many(service, None, 1).await;
            let alice = pool(Some(Credentials::new("alice", "alice-secret")));
            let answer = alice
                .request(
                    &addr.to_string(),
                    RequestCode::TopicRoute,
                    Bytes::from_static(b"now"),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            assert_eq!(&answer.body[..], b"now");
            alice.shutdown().await;
            tasks.wait().await;
        }
    }
}

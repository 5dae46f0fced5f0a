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
//! With [`ConnectionSettings::tls`], a connection is sniffed and TLS-handshaken first
//! ([`crate::tls::TlsServer::accept`]); `required` mode answers a plaintext client with a readable
//! error frame and closes it. [`ConnectionLimits`] bound connections per client address, the time
//! to finish TLS and log in, and idle time; each refusal names the limit and its setting.
//!
//! The service is a type parameter, not a trait object: each server gets its own copy of the
//! loop, with no dynamic dispatch per frame.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, AuthError, Authenticator, Principal, ServerHandshake};
use crate::frame::FrameError;
use crate::tls::{Accepted, MaybeTls, ServerStream, TlsServer};
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
    /// TLS for this listener; `None`: plaintext only.
    pub tls: Option<Arc<TlsServer>>,
    /// Connection limits, shared by every connection of the listener (clones share the counts).
    pub limits: Arc<ConnectionLimiter>,
}

/// The `[connections]` table of a server's config: limits on each client's connections. Zero
/// turns a limit off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Connections open at once from one client IP address.
    pub max_per_address: usize,
    /// A connection that sends no request and has none running for this long is closed.
    pub idle_timeout_secs: u64,
    /// A connection must finish its TLS handshake, and log in where logins are required, within
    /// this long.
    pub handshake_timeout_secs: u64,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_per_address: 1000,
            idle_timeout_secs: 600,
            handshake_timeout_secs: 10,
        }
    }
}

impl ConnectionLimits {
    /// The handshake timeout; a zero setting means no limit (a day).
    pub fn handshake_timeout(&self) -> Duration {
        match self.handshake_timeout_secs {
            0 => Duration::from_secs(86_400),
            secs => Duration::from_secs(secs),
        }
    }

    /// The idle timeout, `None` when off.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }
}

/// [`ConnectionLimits`] and the open connections per client address they count.
#[derive(Debug, Default)]
pub struct ConnectionLimiter {
    limits: ConnectionLimits,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionLimiter {
    /// A limiter of `limits`, with nothing open.
    pub fn new(limits: ConnectionLimits) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter {
            limits,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The limits.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Counts one more connection from `ip`, or says why it is refused.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<AddressSlot, String> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(ip).or_insert(0);
        let max = self.limits.max_per_address;
        if max > 0 && *count >= max {
            return Err(format!(
                "too many connections from {ip}: {count} open, the limit is max_per_address = {max} ([connections] in the server's config); reuse connections or raise the limit"
            ));
        }
        *count += 1;
        Ok(AddressSlot {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// One counted connection; uncounted on drop.
struct AddressSlot {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .limiter
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
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

async fn write_frames<W: AsyncWrite + Unpin>(
    mut sink: FramedWrite<W, FrameCodec>,
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
    let stream = match &settings.tls {
        None => Some(MaybeTls::Plain(stream)),
        Some(tls) => {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => None,
                accepted = tls.accept(stream, settings.limits.limits().handshake_timeout()) => Some(accepted),
            };
            match accepted {
                None => None,
                Some(Ok(Accepted::Plain(stream))) => Some(MaybeTls::Plain(stream)),
                Some(Ok(Accepted::Tls(stream))) => Some(MaybeTls::Tls(stream)),
                Some(Ok(Accepted::PlaintextRefused(stream))) => {
                    tracing::warn!(%peer, "plaintext connection refused: [tls] mode is required");
                    let message = "this server requires TLS ([tls] mode = \"required\"): connect with TLS, \
                                   trusting the cluster's CA (MERIDIAN_TLS_CA=/path/to/ca.pem)";
                    refuse(
                        &settings.codec,
                        ServerStream::Plain(stream),
                        ErrorCode::Unauthenticated,
                        message,
                    )
                    .await;
                    None
                }
                Some(Err(error)) => {
                    tracing::warn!(%peer, %error, "tls handshake failed; closing connection");
                    None
                }
            }
        }
    };
    if let Some(stream) = stream {
        match settings.limits.enter(peer.ip()) {
            Err(message) => {
                tracing::warn!(%peer, limit = "max_per_address", "{message}");
                refuse(&settings.codec, stream, ErrorCode::Busy, &message).await;
            }
            Ok(_slot) => match stream {
                MaybeTls::Plain(stream) => {
                    let (read_half, write_half) = stream.into_split();
                    serve_halves(service.clone(), settings, read_half, write_half, peer, shutdown).await;
                }
                MaybeTls::Tls(stream) => {
                    let (read_half, write_half) = tokio::io::split(*stream);
                    serve_halves(service.clone(), settings, read_half, write_half, peer, shutdown).await;
                }
            },
        }
    }
    service.connection_closed(peer);
    tracing::debug!(%peer, "connection closed");
}

/// Answers a connection that is not served with one error frame, then closes it; waits briefly
/// for the peer to read it (closing with unread input would reset the connection and lose it).
async fn refuse<T: AsyncRead + AsyncWrite + Unpin>(
    codec: &FrameCodec,
    stream: MaybeTls<T>,
    code: ErrorCode,
    message: &str,
) {
    let mut sink = FramedWrite::new(stream, codec.clone());
    let sent = tokio::time::timeout(Duration::from_secs(2), async {
        sink.send(Frame::error(0, code, message.to_owned()))
            .await
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        let mut stream = sink.into_inner();
        stream.shutdown().await?;
        let mut drain = [0u8; 1024];
        while stream.read(&mut drain).await? > 0 {}
        Ok::<(), std::io::Error>(())
    });
    let _ = sent.await;
}

/// The loop of [`serve_connection`] over a connection's halves (plaintext or TLS).
async fn serve_halves<S, R, W>(
    service: Arc<S>,
    settings: ConnectionSettings,
    read_half: R,
    write_half: W,
    peer: SocketAddr,
    shutdown: CancellationToken,
) where
    S: FrameService,
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
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
    // One timer for the login deadline and the idle timeout, reset only when it fires: no timer
    // work per frame.
    let limits = settings.limits.limits();
    let idle_timeout = limits.idle_timeout();
    let opened = tokio::time::Instant::now();
    let login_deadline = opened + limits.handshake_timeout();
    let mut last_read = opened;
    let first_deadline = |last_read: tokio::time::Instant, login_open: bool| {
        let idle = idle_timeout.map(|idle| last_read + idle);
        let login = (!login_open).then_some(login_deadline);
        match (idle, login) {
            (Some(idle), Some(login)) => idle.min(login),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) => last_read + Duration::from_secs(86_400 * 365),
        }
    };
    let timer = tokio::time::sleep_until(first_deadline(last_read, login.is_open()));
    tokio::pin!(timer);
    loop {
        let next = match carried.take() {
            Some(next) => next,
            None => tokio::select! {
                _ = shutdown.cancelled() => break,
                next = frames.next() => {
                    last_read = tokio::time::Instant::now();
                    next
                }
                _ = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if !login.is_open() && now >= login_deadline {
                        let message = format!(
                            "did not log in within {:?} (handshake_timeout_secs in [connections]); log in right after connecting",
                            limits.handshake_timeout()
                        );
                        tracing::warn!(%peer, limit = "handshake_timeout_secs", "closing connection: {message}");
                        let _ = responses.send(Frame::error(0, ErrorCode::Unauthenticated, message)).await;
                        break;
                    }
                    let running = permits.available_permits() < settings.max_inflight;
                    if let Some(idle) = idle_timeout
                        && !running
                        && now >= last_read + idle
                    {
                        tracing::info!(%peer, limit = "idle_timeout_secs", idle_secs = idle.as_secs(), "closing idle connection");
                        break;
                    }
                    // Requests still running count as activity.
                    let next = if running { now.max(last_read) } else { last_read };
                    timer.as_mut().reset(first_deadline(next, login.is_open()).max(now + Duration::from_millis(10)));
                    continue;
                }
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
        FramedWrite<tokio::net::tcp::OwnedWriteHalf, FrameCodec>,
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
                    tls: None,
                    limits: ConnectionLimiter::new(ConnectionLimits::default()),
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

    mod tls_and_limits {
        use super::*;
        use crate::auth::{Credentials, UserCache, Verifier};
        use crate::tls::test_certs::{TempDir, TestCa};
        use crate::tls::{TlsClient, TlsMode};
        use crate::transport::{ConnectionPool, TransportConfig, TransportError};
        use std::time::Duration;

        /// A server of `service` with `settings` for every connection, on a loopback port.
        async fn serve_with(
            service: Arc<Scripted>,
            settings: ConnectionSettings,
        ) -> (SocketAddr, TaskTracker, CancellationToken) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let tasks = TaskTracker::new();
            let stop = CancellationToken::new();
            let serving = tasks.clone();
            let stopped = stop.clone();
            tasks.spawn(async move {
                loop {
                    let (stream, peer) = tokio::select! {
                        _ = stopped.cancelled() => return,
                        accepted = listener.accept() => accepted.unwrap(),
                    };
                    serving.spawn(serve_connection(
                        service.clone(),
                        settings.clone(),
                        stream,
                        peer,
                        stopped.clone(),
                    ));
                }
            });
            (addr, tasks, stop)
        }

        fn settings(tls: Option<Arc<TlsServer>>, limits: ConnectionLimits) -> ConnectionSettings {
            ConnectionSettings {
                codec: FrameCodec::new(1 << 20),
                max_inflight: 4,
                max_pending_response_bytes: None,
                auth: None,
                tls,
                limits: ConnectionLimiter::new(limits),
            }
        }

        fn pool(tls: Option<Arc<TlsClient>>) -> ConnectionPool {
            ConnectionPool::new(TransportConfig {
                tls,
                ..TransportConfig::default()
            })
        }

        async fn ask(pool: &ConnectionPool, addr: SocketAddr) -> Result<Frame, TransportError> {
            pool.request(
                &addr.to_string(),
                RequestCode::TopicRoute,
                Bytes::from_static(b"now"),
                Duration::from_secs(5),
            )
            .await
        }

        fn client_of(ca: &std::path::Path) -> Arc<TlsClient> {
            TlsClient::new("ca_file", ca, None).unwrap()
        }

        /// A TLS server in `mode` with a certificate from a fresh CA named `ca_name` (files in
        /// `dir`), `tune` applied to its settings first: its address, the settings (their
        /// `ca_file` is what clients trust) and its stop token.
        async fn tls_server(
            dir: &TempDir,
            ca_name: &str,
            mode: TlsMode,
            tune: impl FnOnce(&mut crate::tls::TlsSettings),
        ) -> (SocketAddr, crate::tls::TlsSettings, TaskTracker, CancellationToken) {
            let mut tls_settings = TestCa::new(ca_name).settings(&dir.0, mode);
            tune(&mut tls_settings);
            let server = TlsServer::load(&tls_settings).unwrap();
            let (addr, tasks, stop) = serve_with(
                Arc::new(Scripted::default()),
                settings(server, ConnectionLimits::default()),
            )
            .await;
            (addr, tls_settings, tasks, stop)
        }

        #[tokio::test]
        async fn tls_required_serves_tls_clients_and_refuses_plaintext_with_a_readable_error() {
            let dir = TempDir::new("required");
            let (addr, tls_settings, _tasks, stop) = tls_server(&dir, "required ca", TlsMode::Required, |_| ()).await;

            let secure = pool(Some(client_of(tls_settings.ca_file.as_ref().unwrap())));
            assert_eq!(&ask(&secure, addr).await.unwrap().body[..], b"now");

            let plain = pool(None);
            let error = ask(&plain, addr).await.unwrap_err();
            let TransportError::Remote { code, message, .. } = &error else {
                panic!("expected the server's refusal, got {error}")
            };
            assert_eq!(*code, ErrorCode::Unauthenticated);
            assert!(
                message.contains("requires TLS") && message.contains("MERIDIAN_TLS_CA"),
                "{message}"
            );
            stop.cancel();
        }

        #[tokio::test]
        async fn tls_permissive_serves_tls_and_plaintext_on_one_port() {
            let dir = TempDir::new("permissive");
            let (addr, tls_settings, _tasks, stop) =
                tls_server(&dir, "permissive ca", TlsMode::Permissive, |_| ()).await;
            let secure = pool(Some(client_of(tls_settings.ca_file.as_ref().unwrap())));
            assert_eq!(&ask(&secure, addr).await.unwrap().body[..], b"now");
            let plain = pool(None);
            assert_eq!(&ask(&plain, addr).await.unwrap().body[..], b"now");
            stop.cancel();
        }

        #[tokio::test]
        async fn tls_client_with_the_wrong_ca_is_refused() {
            let dir = TempDir::new("wrong-ca");
            let (addr, _, _tasks, stop) = tls_server(&dir, "right ca", TlsMode::Required, |_| ()).await;
            let other_dir = TempDir::new("wrong-ca-other");
            let (other_ca, _, _) = TestCa::new("another ca").write_node(&other_dir.0, "other");
            let error = ask(&pool(Some(client_of(&other_ca))), addr).await.unwrap_err();
            let TransportError::Connect { source, .. } = &error else {
                panic!("expected a failed handshake, got {error}")
            };
            assert!(source.to_string().contains("TLS handshake"), "{source}");
            stop.cancel();
        }

        #[tokio::test]
        async fn tls_reload_new_connections_see_the_new_certificate_without_restart() {
            let dir = TempDir::new("reload");
            let first = TestCa::new("first ca");
            let tls_settings = first.settings(&dir.0, TlsMode::Required);
            let server = TlsServer::load(&tls_settings).unwrap().unwrap();
            let watch_stop = CancellationToken::new();
            let watcher = TaskTracker::new();
            watcher.spawn(server.clone().watch(Duration::from_millis(50), watch_stop.clone()));
            let (addr, _tasks, stop) = serve_with(
                Arc::new(Scripted::default()),
                settings(Some(server), ConnectionLimits::default()),
            )
            .await;
            let first_ca = dir.0.join("first-ca.pem");
            std::fs::copy(tls_settings.ca_file.as_ref().unwrap(), &first_ca).unwrap();
            assert!(ask(&pool(Some(client_of(&first_ca))), addr).await.is_ok());

            // Swap in a certificate from another CA, in place.
            let second = TestCa::new("second ca");
            second.write_node(&dir.0, "node");
            let second_ca = client_of(tls_settings.ca_file.as_ref().unwrap());
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                // A fresh pool: a new connection each time.
                if ask(&pool(Some(second_ca.clone())), addr).await.is_ok() {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the new certificate was never served"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // And the old CA no longer verifies what the server presents.
            assert!(ask(&pool(Some(client_of(&first_ca))), addr).await.is_err());
            watch_stop.cancel();
            stop.cancel();
        }

        #[tokio::test]
        async fn tls_verify_clients_serves_only_clients_with_a_certificate_from_the_ca() {
            let dir = TempDir::new("mutual");
            let (addr, tls_settings, _tasks, stop) = tls_server(&dir, "mutual ca", TlsMode::Required, |tls| {
                tls.verify_clients = true;
            })
            .await;
            let ca_file = tls_settings.ca_file.clone().unwrap();
            // A node presenting its certificate is served.
            let node = TlsClient::from_settings(&tls_settings).unwrap();
            assert_eq!(&ask(&pool(node), addr).await.unwrap().body[..], b"now");
            // A client trusting the CA but presenting no certificate is not.
            assert!(ask(&pool(Some(client_of(&ca_file))), addr).await.is_err());
            // Nor one presenting a certificate from another CA.
            let other_dir = TempDir::new("mutual-other");
            let (_, cert, key) = TestCa::new("other ca").write_node(&other_dir.0, "other");
            let stranger = TlsClient::new("ca_file", &ca_file, Some((&cert, &key))).unwrap();
            assert!(ask(&pool(Some(stranger)), addr).await.is_err());
            stop.cancel();
        }

        #[tokio::test]
        async fn limits_connections_per_address_are_refused_naming_the_setting() {
            let limits = ConnectionLimits {
                max_per_address: 2,
                ..ConnectionLimits::default()
            };
            let server_settings = settings(None, limits);
            let limiter = server_settings.limits.clone();
            let (addr, _tasks, stop) = serve_with(Arc::new(Scripted::default()), server_settings).await;
            let (first, second) = (pool(None), pool(None));
            assert!(ask(&first, addr).await.is_ok());
            assert!(ask(&second, addr).await.is_ok());
            let error = ask(&pool(None), addr).await.unwrap_err();
            let TransportError::Remote { code, message, .. } = &error else {
                panic!("expected the limit's refusal, got {error}")
            };
            assert_eq!(*code, ErrorCode::Busy);
            assert!(
                message.contains("max_per_address = 2") && message.contains("127.0.0.1"),
                "{message}"
            );
            // Closing one makes room again.
            first.shutdown().await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while limiter.open_from(addr.ip()) > 1 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the closed connection was never uncounted"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(ask(&pool(None), addr).await.is_ok());
            stop.cancel();
        }

        #[tokio::test]
        async fn limits_idle_connections_are_closed_but_busy_ones_are_not() {
            let limits = ConnectionLimits {
                idle_timeout_secs: 1,
                ..ConnectionLimits::default()
            };
            let service = Arc::new(Scripted::default());
            let (addr, _tasks, stop) = serve_with(service.clone(), settings(None, limits)).await;
            let idle = pool(None);
            let idle_connection = idle.get(&addr.to_string()).await.unwrap();
            // A request that runs longer than the idle timeout keeps its connection open.
            let busy = pool(None);
            let addr_text = addr.to_string();
            let requests = TaskTracker::new();
            let long = requests.spawn(async move {
                busy.request(
                    &addr_text,
                    RequestCode::TopicRoute,
                    Bytes::from_static(b"later"),
                    Duration::from_secs(10),
                )
                .await
            });
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while idle_connection.is_alive() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the idle connection was never closed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(1200)).await;
            service.release.notify_one();
            assert_eq!(&long.await.unwrap().unwrap().body[..], b"later");
            stop.cancel();
        }

        #[tokio::test]
        async fn limits_connections_that_do_not_log_in_or_finish_tls_in_time_are_closed() {
            let limits = ConnectionLimits {
                handshake_timeout_secs: 1,
                ..ConnectionLimits::default()
            };
            // Logins required; the client connects and says nothing.
            let users = UserCache::default();
            users.replace([("alice".to_owned(), Verifier::generate(b"alice-secret"))].into());
            let mut with_auth = settings(None, limits.clone());
            with_auth.auth = Some(Arc::new(Authenticator::new(true, None, Arc::new(users))));
            let (addr, _tasks, stop) = serve_with(Arc::new(Scripted::default()), with_auth).await;
            let (mut read_half, _write_half) = TcpStream::connect(addr).await.unwrap().into_split();
            let mut frames = FramedRead::new(&mut read_half, FrameCodec::new(1 << 20));
            let refusal = tokio::time::timeout(Duration::from_secs(10), frames.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(refusal.error_code(), ErrorCode::Unauthenticated);
            assert!(
                refusal.header.remark.contains("handshake_timeout_secs"),
                "{}",
                refusal.header.remark
            );
            assert!(
                tokio::time::timeout(Duration::from_secs(10), frames.next())
                    .await
                    .unwrap()
                    .is_none()
            );
            // A logged-in client is not affected.
            let alice = ConnectionPool::new(TransportConfig {
                credentials: Some(Credentials::new("alice", "alice-secret")),
                ..TransportConfig::default()
            });
            assert!(ask(&alice, addr).await.is_ok());
            stop.cancel();

            // TLS required; the client connects and never starts the handshake.
            let dir = TempDir::new("handshake");
            let tls = TlsServer::load(&TestCa::new("handshake ca").settings(&dir.0, TlsMode::Required)).unwrap();
            let (addr, _tasks, stop) = serve_with(Arc::new(Scripted::default()), settings(tls, limits)).await;
            let mut silent = TcpStream::connect(addr).await.unwrap();
            let mut buffer = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buffer))
                .await
                .unwrap();
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "the server must close a connection that never handshakes"
            );
            stop.cancel();
        }
    }
}

//! The client side of the framed protocol: pipelined connections and a pool of them keyed by
//! address. Clients, brokers (heartbeats, replication) and nameservers (Raft RPCs) all talk to
//! each other through it, which is why it lives here and not in the client SDK.
//!
//! A [`Connection`] owns two tasks: a writer that drains a queue of frames into one buffer and
//! writes it with a single syscall (so concurrent requests share syscalls), and a reader that hands
//! each response to the request waiting for its id. Responses may arrive in any order. When the
//! socket fails, every waiting request fails with [`TransportError::ConnectionClosed`] and the
//! connection reports itself dead; the [`ConnectionPool`] opens a new one on the next request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::auth::{AuthChallenge, AuthError, AuthOk, ClientHandshake, Credentials};
use crate::frame::{FLAG_ONEWAY, FrameCodec};
use crate::tls::TlsClient;
use crate::{ErrorCode, Frame, Limits, RequestCode};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Connection and request settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Size limits checked before sending; keep them equal to the peer's.
    pub limits: Limits,
    /// How long a request may wait for its response (pulls add their long-poll time to it).
    pub request_timeout: Duration,
    /// How long opening a TCP connection may take.
    pub connect_timeout: Duration,
    /// Log in with these on every new connection ([`crate::auth`]); `None`: do not log in.
    pub credentials: Option<Credentials>,
    /// Connect with TLS, verifying servers against this CA ([`crate::tls`]); `None`: plaintext.
    pub tls: Option<Arc<TlsClient>>,
    /// Connect from this address (bound before connecting, to loopback peers only); `None`: the
    /// kernel picks. Nodes set it with [`source_ip_for`].
    pub source_ip: Option<IpAddr>,
}

/// The address a node listening on `listen` connects to other nodes from: its own when that is a
/// loopback address other than 127.0.0.1, else `None` (the kernel picks).
///
/// `meridian cluster up` runs every node of a topology on one machine, each on its own 127.0.0.x,
/// where the kernel would make every connection leave from 127.0.0.1. Leaving from the node's own
/// address makes the machine behave like the hosts it stands for: a peer sees who connects, and a
/// partition drawn between addresses (the fault suite's `ip rule` between data centers) cuts
/// exactly the connections it would cut between hosts.
pub fn source_ip_for(listen: IpAddr) -> Option<IpAddr> {
    let own = listen.is_loopback() && listen != IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    own.then_some(listen)
}

/// Connects to `addr` from `source` when both are loopback addresses of one family; else as the
/// kernel decides.
async fn connect_from(source: Option<IpAddr>, addr: &str) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let mut last_error = None;
    for target in tokio::net::lookup_host(addr).await? {
        let socket = match target.ip() {
            ip if !ip.is_loopback() || ip.is_ipv4() != source.is_ipv4() => match TcpStream::connect(target).await {
                Ok(stream) => return Ok(stream),
                Err(error) => {
                    last_error = Some(error);
                    continue;
                }
            },
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        match socket.connect(target).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{addr} resolves to no address"))))
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            limits: Limits::default(),
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            credentials: None,
            tls: None,
            source_ip: None,
        }
    }
}

/// Why a request over the framed protocol failed. Each message names what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer answered with an error; `message` is its own explanation.
    #[error("{addr} refused the request ({code}): {message}")]
    Remote {
        /// Who answered.
        addr: String,
        /// The peer's error code.
        code: ErrorCode,
        /// The peer's remark: names the problem, the limit and the fix.
        message: String,
    },
    /// A request does not fit in one frame; nothing was sent.
    #[error(
        "request of {size} bytes exceeds the frame limit of {max} bytes (max_frame_size); send smaller batches or raise the limit on both sides"
    )]
    FrameTooLarge {
        /// Encoded size of the request frame.
        size: usize,
        /// `limits.max_frame_size`.
        max: usize,
    },
    /// No answer in time. The request may still take effect.
    #[error("{what} timed out after {after:?}; check that the server is up and not overloaded, or raise the timeout")]
    Timeout {
        /// What was attempted, e.g. `Send request to 127.0.0.1:7911`.
        what: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {source}; check the address and that the server is running")]
    Connect {
        /// Address dialled.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The connection broke before the response arrived; the request may or may not have taken
    /// effect. The next request reconnects.
    #[error("connection closed before the response arrived; the request may or may not have taken effect, retry it")]
    ConnectionClosed,
    /// The response could not be decoded.
    #[error("cannot decode the response: {0}; the peer may speak another protocol version")]
    Decode(String),
    /// The pool was shut down.
    #[error("the connection pool was shut down; create a new one to continue")]
    Shutdown,
    /// Logging in failed on the client's side (the server's refusals are [`TransportError::Remote`]).
    #[error("cannot log in to {addr}: {source}")]
    Auth {
        /// Address dialled.
        addr: String,
        /// What went wrong.
        source: AuthError,
    },
}

impl TransportError {
    /// Whether the same request may succeed if sent again after a back-off: the peer's retriable
    /// codes ([`ErrorCode::is_retriable`]) and connection failures or timeouts.
    pub fn is_retriable(&self) -> bool {
        match self {
            TransportError::Remote { code, .. } => code.is_retriable(),
            TransportError::Timeout { .. } | TransportError::Connect { .. } | TransportError::ConnectionClosed => true,
            _ => false,
        }
    }
}

/// Frames waiting for the writer. Bounded so a stalled socket pushes back on senders instead of
/// buffering without limit.
const WRITE_QUEUE_CAPACITY: usize = 4096;
/// The writer stops coalescing queued frames into one write once its buffer holds this much.
const MAX_COALESCED_BYTES: usize = 256 * 1024;
/// Longest a single socket write may block before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A write buffer that grew past this (one huge batch) is released instead of kept.
const MAX_RETAINED_BUFFER: usize = 4 * 1024 * 1024;

/// One TCP connection to a peer, shared by any number of concurrent requests. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<ConnectionInner>,
}

struct ConnectionInner {
    frames_tx: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
    next_request_id: AtomicU64,
    max_frame_size: usize,
    /// Bounds how long a one-way send may wait for room in the write queue.
    queue_timeout: Duration,
}

/// State the two tasks and the request side all touch.
struct Shared {
    addr: String,
    pending: Mutex<Pending>,
    cancel: CancellationToken,
}

struct Pending {
    /// Set once, when the connection dies; checked under the same lock as inserts so no request
    /// can be registered after the waiters were failed.
    closed: bool,
    waiters: HashMap<u64, oneshot::Sender<Frame>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the connection dead and fails every waiting request (dropping a waiter's sender
    /// wakes it with an error, which reads as [`TransportError::ConnectionClosed`]).
    fn close(&self) {
        let waiters = {
            let mut pending = self.lock();
            pending.closed = true;
            std::mem::take(&mut pending.waiters)
        };
        if !waiters.is_empty() {
            debug!(addr = %self.addr, failed = waiters.len(), "connection closed with requests in flight");
        }
        drop(waiters);
        self.cancel.cancel();
    }
}

/// Removes a request's waiter when the request gives up (timeout or the caller dropped it), so the
/// map never keeps waiters of abandoned requests.
struct WaiterGuard<'a> {
    shared: &'a Shared,
    request_id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().waiters.remove(&self.request_id);
    }
}

impl Connection {
    /// Opens a connection to `addr` and starts its reader and writer on `tracker`. The tasks stop
    /// when `parent` is cancelled, when the socket fails, or when the last handle is dropped.
    pub async fn connect(
        addr: &str,
        config: &TransportConfig,
        tracker: &TaskTracker,
        parent: &CancellationToken,
    ) -> Result<Connection, TransportError> {
        let stream = match tokio::time::timeout(config.connect_timeout, connect_from(config.source_ip, addr)).await {
            Err(_) => {
                return Err(TransportError::Timeout {
                    what: format!("connecting to {addr}"),
                    after: config.connect_timeout,
                });
            }
            Ok(Err(source)) => {
                return Err(TransportError::Connect {
                    addr: addr.to_owned(),
                    source,
                });
            }
            Ok(Ok(stream)) => stream,
        };
        // Latency matters more than packet count: the writer already batches frames itself.
        stream.set_nodelay(true).map_err(|source| TransportError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
        match &config.tls {
            None => {
                let stream = Connection::log_in_if_asked(stream, addr, config).await?;
                let (read_half, write_half) = stream.into_split();
                Ok(Connection::start(addr, config, tracker, parent, read_half, write_half))
            }
            Some(tls) => {
                // A handshake is a few round trips and some signing: it gets the longer budget.
                let budget = config.connect_timeout.max(config.request_timeout);
                let stream = match tokio::time::timeout(budget, tls.connect(addr, stream)).await {
                    Err(_) => {
                        return Err(TransportError::Timeout {
                            what: format!("TLS handshake with {addr}"),
                            after: budget,
                        });
                    }
                    Ok(Err(source)) => {
                        return Err(TransportError::Connect {
                            addr: addr.to_owned(),
                            source,
                        });
                    }
                    Ok(Ok(stream)) => stream,
                };
                let stream = Connection::log_in_if_asked(stream, addr, config).await?;
                let (read_half, write_half) = tokio::io::split(stream);
                Ok(Connection::start(addr, config, tracker, parent, read_half, write_half))
            }
        }
    }

    async fn log_in_if_asked<T: AsyncRead + AsyncWrite + Unpin>(
        stream: T,
        addr: &str,
        config: &TransportConfig,
    ) -> Result<T, TransportError> {
        match &config.credentials {
            Some(credentials) => {
                let login = log_in(stream, addr, credentials, config);
                match tokio::time::timeout(config.request_timeout, login).await {
                    Ok(result) => result,
                    Err(_) => Err(TransportError::Timeout {
                        what: format!("logging in to {addr}"),
                        after: config.request_timeout,
                    }),
                }
            }
            None => Ok(stream),
        }
    }

    fn start<R, W>(
        addr: &str,
        config: &TransportConfig,
        tracker: &TaskTracker,
        parent: &CancellationToken,
        read_half: R,
        write_half: W,
    ) -> Connection
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            pending: Mutex::new(Pending {
                closed: false,
                waiters: HashMap::new(),
            }),
            cancel: parent.child_token(),
        });
        let (frames_tx, frames_rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let codec = FrameCodec::new(config.limits.max_frame_size);
        tracker.spawn(read_loop(shared.clone(), FramedRead::new(read_half, codec.clone())));
        tracker.spawn(write_loop(shared.clone(), frames_rx, write_half, codec));
        debug!(addr, tls = config.tls.is_some(), "connected");
        Connection {
            inner: Arc::new(ConnectionInner {
                frames_tx,
                shared,
                next_request_id: AtomicU64::new(1),
                max_frame_size: config.limits.max_frame_size,
                queue_timeout: config.request_timeout,
            }),
        }
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.inner.shared.addr
    }

    /// Whether the connection can still carry requests. A dead connection never comes back.
    pub fn is_alive(&self) -> bool {
        !self.inner.shared.cancel.is_cancelled()
    }

    /// Closes the connection; requests in flight fail with [`TransportError::ConnectionClosed`].
    pub fn close(&self) {
        self.inner.shared.close();
    }

    fn check_size(&self, frame: &Frame) -> Result<(), TransportError> {
        // frame_len, which the limit applies to, excludes its own 4 bytes.
        let size = frame.encoded_len() - 4;
        if size > self.inner.max_frame_size {
            return Err(TransportError::FrameTooLarge {
                size,
                max: self.inner.max_frame_size,
            });
        }
        Ok(())
    }

    /// Sends a request and waits up to `timeout` for its response. A response with a non-zero
    /// code becomes [`TransportError::Remote`]; on success the whole response frame is returned.
    pub async fn request(&self, code: RequestCode, body: Bytes, timeout: Duration) -> Result<Frame, TransportError> {
        let deadline = Instant::now() + timeout;
        let request_id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::request(request_id, code, body);
        self.check_size(&frame)?;
        let shared = &*self.inner.shared;
        let (response_tx, response_rx) = oneshot::channel();
        {
            let mut pending = shared.lock();
            if pending.closed {
                return Err(TransportError::ConnectionClosed);
            }
            pending.waiters.insert(request_id, response_tx);
        }
        let _waiter_guard = WaiterGuard { shared, request_id };
        let timed_out = || TransportError::Timeout {
            what: format!("{code:?} request to {}", shared.addr),
            after: timeout,
        };
        match tokio::time::timeout_at(deadline, self.inner.frames_tx.send(frame)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(_)) => return Err(TransportError::ConnectionClosed),
            Ok(Ok(())) => {}
        }
        let response = match tokio::time::timeout_at(deadline, response_rx).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(_)) => return Err(TransportError::ConnectionClosed),
            Ok(Ok(response)) => response,
        };
        match response.error_code() {
            ErrorCode::Ok => Ok(response),
            code => {
                let message = if response.header.remark.is_empty() {
                    format!("{code} (no details given)")
                } else {
                    response.header.remark
                };
                Err(TransportError::Remote {
                    addr: self.addr().to_owned(),
                    code,
                    message,
                })
            }
        }
    }

    /// Queues a request that expects no response (`FLAG_ONEWAY`). Returns once the frame is in the
    /// write queue: delivery is not confirmed.
    pub async fn send_oneway(&self, code: RequestCode, body: Bytes) -> Result<(), TransportError> {
        let request_id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Frame::request(request_id, code, body);
        frame.header.flags |= FLAG_ONEWAY;
        self.check_size(&frame)?;
        if !self.is_alive() {
            return Err(TransportError::ConnectionClosed);
        }
        match tokio::time::timeout(self.inner.queue_timeout, self.inner.frames_tx.send(frame)).await {
            Err(_) => Err(TransportError::Timeout {
                what: format!("queueing a one-way {code:?} to {}", self.addr()),
                after: self.inner.queue_timeout,
            }),
            Ok(Err(_)) => Err(TransportError::ConnectionClosed),
            Ok(Ok(())) => Ok(()),
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut frames: FramedRead<R, FrameCodec>) {
    loop {
        let next = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            next = frames.next() => next,
        };
        match next {
            // Request id 0 is never a request's: an error with it is about the whole connection
            // (TLS required, too many connections, login timeout). Every waiting request gets it,
            // so the caller sees why instead of a bare "connection closed".
            Some(Ok(frame))
                if frame.is_response() && frame.header.request_id == 0 && frame.error_code() != ErrorCode::Ok =>
            {
                warn!(addr = %shared.addr, code = %frame.error_code(), remark = %frame.header.remark, "the server refused the connection");
                let waiters = std::mem::take(&mut shared.lock().waiters);
                for (_, waiter) in waiters {
                    let _ = waiter.send(frame.clone());
                }
            }
            Some(Ok(frame)) if frame.is_response() => {
                let request_id = frame.header.request_id;
                let waiter = shared.lock().waiters.remove(&request_id);
                match waiter {
                    // The requester may have given up in the meantime; nothing to do then.
                    Some(waiter) => drop(waiter.send(frame)),
                    None => debug!(addr = %shared.addr, request_id, "response to a request that stopped waiting"),
                }
            }
            Some(Ok(frame)) => {
                warn!(addr = %shared.addr, code = frame.header.code, "ignoring a request frame sent by the broker");
            }
            Some(Err(error)) => {
                warn!(addr = %shared.addr, %error, "closing connection after a read error");
                break;
            }
            None => {
                debug!(addr = %shared.addr, "broker closed the connection");
                break;
            }
        }
    }
    shared.close();
}

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut frames_rx: mpsc::Receiver<Frame>,
    mut socket: W,
    mut codec: FrameCodec,
) {
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    loop {
        // Queued frames go out even after the connection is asked to close: a one-way send that
        // returned Ok must not vanish because the process shut down right after it.
        let first = tokio::select! {
            biased;
            frame = frames_rx.recv() => match frame {
                Some(frame) => frame,
                // Every handle was dropped: nobody can send on this connection any more.
                None => break,
            },
            _ = shared.cancel.cancelled() => match frames_rx.try_recv() {
                Ok(frame) => frame,
                Err(_) => break,
            },
        };
        encode_frame(&shared, &mut codec, first, &mut buffer);
        while buffer.len() < MAX_COALESCED_BYTES {
            match frames_rx.try_recv() {
                Ok(frame) => encode_frame(&shared, &mut codec, frame, &mut buffer),
                Err(_) => break,
            }
        }
        // Never abandon a write halfway (the peer would see a torn frame); bound it instead.
        match tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(&buffer)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(addr = %shared.addr, %error, "closing connection after a write error");
                break;
            }
            Err(_) => {
                warn!(addr = %shared.addr, timeout = ?WRITE_TIMEOUT, "closing connection: the peer stopped reading");
                break;
            }
        }
        buffer.clear();
        if buffer.capacity() > MAX_RETAINED_BUFFER {
            buffer = BytesMut::with_capacity(8 * 1024);
        }
    }
    let _ = socket.shutdown().await;
    shared.close();
}

fn encode_frame(shared: &Shared, codec: &mut FrameCodec, frame: Frame, buffer: &mut BytesMut) {
    let request_id = frame.header.request_id;
    if let Err(error) = codec.encode(frame, buffer) {
        // Sizes are checked before queueing, so this is a bug; fail only this request.
        warn!(addr = %shared.addr, request_id, %error, "dropping a frame that cannot be encoded");
        shared.lock().waiters.remove(&request_id);
    }
}

/// Runs the client side of the login handshake on a fresh connection, before its reader and
/// writer start; the server sends nothing unasked, so no byte is left in the read buffer.
async fn log_in<T: AsyncRead + AsyncWrite + Unpin>(
    stream: T,
    addr: &str,
    credentials: &Credentials,
    config: &TransportConfig,
) -> Result<T, TransportError> {
    use futures_util::SinkExt;
    let mut framed = tokio_util::codec::Framed::new(stream, FrameCodec::new(config.limits.max_frame_size));
    let (mut handshake, hello) = ClientHandshake::start(credentials.clone());
    let auth_error = |source: AuthError| TransportError::Auth {
        addr: addr.to_owned(),
        source,
    };
    let mut exchange = async |request_id: u64, code: RequestCode, body: Vec<u8>| -> Result<Bytes, TransportError> {
        let closed = |_| TransportError::ConnectionClosed;
        framed
            .send(Frame::request(request_id, code, Bytes::from(body)))
            .await
            .map_err(closed)?;
        let response = match framed.next().await {
            Some(Ok(response)) => response,
            Some(Err(error)) => return Err(TransportError::Decode(error.to_string())),
            None => return Err(TransportError::ConnectionClosed),
        };
        match response.error_code() {
            ErrorCode::Ok => Ok(response.body),
            code => Err(TransportError::Remote {
                addr: addr.to_owned(),
                code,
                message: response.header.remark,
            }),
        }
    };
    let body = exchange(0, RequestCode::AuthHello, prost::Message::encode_to_vec(&hello)).await?;
    let challenge: AuthChallenge = crate::auth::decode("login challenge", &body).map_err(auth_error)?;
    if let Some(proof) = handshake.respond(&challenge).map_err(auth_error)? {
        let body = exchange(0, RequestCode::AuthProof, prost::Message::encode_to_vec(&proof)).await?;
        let ok: AuthOk = crate::auth::decode("login answer", &body).map_err(auth_error)?;
        handshake.verify(&ok, addr).map_err(auth_error)?;
        debug!(addr, user = %credentials.user, "logged in");
    }
    let parts = framed.into_parts();
    if !parts.read_buf.is_empty() {
        return Err(TransportError::Decode(format!(
            "{addr} sent {} unasked bytes during the login",
            parts.read_buf.len()
        )));
    }
    Ok(parts.io)
}

/// Connections keyed by peer address, opened on first use and reopened lazily when they die.
/// Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct ConnectionPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: TransportConfig,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

#[derive(Default)]
struct Slot {
    connection: Mutex<Option<Connection>>,
    /// Held while dialling, so concurrent requests to a dead address wait for one connect
    /// instead of each opening a socket.
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn live(&self) -> Option<Connection> {
        let connection = self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        connection.as_ref().filter(|connection| connection.is_alive()).cloned()
    }
}

impl ConnectionPool {
    /// An empty pool; connections open on first use.
    pub fn new(config: TransportConfig) -> ConnectionPool {
        ConnectionPool {
            inner: Arc::new(PoolInner {
                config,
                slots: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        }
    }

    /// The settings connections and requests use.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// A live connection to `addr`, opening one if there is none or the last one died.
    pub async fn get(&self, addr: &str) -> Result<Connection, TransportError> {
        if self.inner.cancel.is_cancelled() {
            return Err(TransportError::Shutdown);
        }
        let slot = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slots.entry(addr.to_owned()).or_default().clone()
        };
        if let Some(connection) = slot.live() {
            return Ok(connection);
        }
        let _dialling = slot.connecting.lock().await;
        if let Some(connection) = slot.live() {
            return Ok(connection);
        }
        let connection = Connection::connect(addr, &self.inner.config, &self.inner.tracker, &self.inner.cancel).await?;
        *slot.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(connection.clone());
        Ok(connection)
    }

    /// Sends a request to `addr` (see [`Connection::request`]).
    pub async fn request(
        &self,
        addr: &str,
        code: RequestCode,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Frame, TransportError> {
        self.get(addr).await?.request(code, body, timeout).await
    }

    /// Queues a one-way request to `addr` (see [`Connection::send_oneway`]).
    pub async fn send_oneway(&self, addr: &str, code: RequestCode, body: Bytes) -> Result<(), TransportError> {
        self.get(addr).await?.send_oneway(code, body).await
    }

    /// Encodes `request`, sends it and decodes the response body as `Resp`.
    pub async fn call<Req, Resp>(
        &self,
        addr: &str,
        code: RequestCode,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, TransportError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let response = self
            .request(addr, code, Bytes::from(request.encode_to_vec()), timeout)
            .await?;
        Resp::decode(response.body)
            .map_err(|error| TransportError::Decode(format!("{code:?} response from {addr}: {error}")))
    }

    /// Like [`ConnectionPool::call`] for requests whose response body is empty.
    pub async fn call_empty<Req: prost::Message>(
        &self,
        addr: &str,
        code: RequestCode,
        request: &Req,
        timeout: Duration,
    ) -> Result<(), TransportError> {
        self.request(addr, code, Bytes::from(request.encode_to_vec()), timeout)
            .await
            .map(drop)
    }

    /// Closes every connection and waits for their tasks. Requests in flight fail with
    /// [`TransportError::ConnectionClosed`]; later ones with [`TransportError::Shutdown`].
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FLAG_RESPONSE;
    use futures_util::SinkExt;
    use tokio::net::TcpListener;
    use tokio_util::codec::Framed;

    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn listener() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        (listener, addr)
    }

    async fn accept(listener: &TcpListener) -> Framed<TcpStream, FrameCodec> {
        let (socket, _) = listener.accept().await.unwrap();
        Framed::new(socket, FrameCodec::new(1 << 20))
    }

    #[tokio::test]
    async fn responses_are_matched_by_request_id_when_answered_out_of_order() {
        let (listener, addr) = listener().await;
        let tracker = TaskTracker::new();
        let server = tracker.spawn(async move {
            let mut framed = accept(&listener).await;
            let mut requests = Vec::new();
            while requests.len() < 16 {
                requests.push(framed.next().await.unwrap().unwrap());
            }
            // Answer in reverse order of arrival, echoing each body.
            for request in requests.into_iter().rev() {
                framed
                    .send(Frame::response(request.header.request_id, request.body))
                    .await
                    .unwrap();
            }
        });
        let pool = ConnectionPool::new(TransportConfig::default());
        let connection = pool.get(&addr).await.unwrap();
        let requests = (0..16u32).map(|index| {
            let connection = connection.clone();
            async move {
                let body = Bytes::from(format!("request-{index}"));
                let response = connection
                    .request(RequestCode::Pull, body.clone(), TIMEOUT)
                    .await
                    .unwrap();
                assert!(response.header.flags & FLAG_RESPONSE != 0);
                assert_eq!(response.body, body);
            }
        });
        futures_util::future::join_all(requests).await;
        server.await.unwrap();
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn a_node_on_its_own_loopback_address_connects_from_it() {
        let own: IpAddr = "127.0.0.57".parse().unwrap();
        assert_eq!(source_ip_for(own), Some(own));
        assert_eq!(
            source_ip_for("127.0.0.1".parse().unwrap()),
            None,
            "the default: the kernel picks"
        );
        assert_eq!(
            source_ip_for("10.1.2.3".parse().unwrap()),
            None,
            "a real host's address: routing decides"
        );
        assert_eq!(source_ip_for("0.0.0.0".parse().unwrap()), None);

        let (listener, addr) = listener().await;
        let pool = ConnectionPool::new(TransportConfig {
            source_ip: source_ip_for(own),
            ..TransportConfig::default()
        });
        let connecting = pool.get(&addr);
        let accepting = listener.accept();
        let (connection, accepted) = tokio::join!(connecting, accepting);
        connection.unwrap();
        let (_, peer) = accepted.unwrap();
        assert_eq!(peer.ip(), own);
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn broker_errors_carry_the_code_and_remark() {
        let (listener, addr) = listener().await;
        let tracker = TaskTracker::new();
        tracker.spawn(async move {
            let mut framed = accept(&listener).await;
            let request = framed.next().await.unwrap().unwrap();
            let reply = Frame::error(
                request.header.request_id,
                ErrorCode::TopicNotFound,
                "topic \"x\" does not exist",
            );
            framed.send(reply).await.unwrap();
            // Keep the socket open until the client is done.
            let _ = framed.next().await;
        });
        let pool = ConnectionPool::new(TransportConfig::default());
        let error = pool
            .request(&addr, RequestCode::Send, Bytes::new(), TIMEOUT)
            .await
            .unwrap_err();
        match error {
            TransportError::Remote { code, message, .. } => {
                assert_eq!(code, ErrorCode::TopicNotFound);
                assert_eq!(message, "topic \"x\" does not exist");
            }
            other => panic!("unexpected error {other:?}"),
        }
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn dropped_connection_fails_pending_requests_and_the_pool_reconnects() {
        let (listener, addr) = listener().await;
        let tracker = TaskTracker::new();
        let (received_tx, received_rx) = oneshot::channel();
        tracker.spawn(async move {
            let mut first = accept(&listener).await;
            let mut seen = 0;
            while seen < 3 {
                first.next().await.unwrap().unwrap();
                seen += 1;
            }
            received_tx.send(()).unwrap();
            drop(first);
            let mut second = accept(&listener).await;
            while let Some(Ok(request)) = second.next().await {
                second
                    .send(Frame::response(request.header.request_id, Bytes::from_static(b"pong")))
                    .await
                    .unwrap();
            }
        });
        let pool = ConnectionPool::new(TransportConfig::default());
        let connection = pool.get(&addr).await.unwrap();
        let pending = (0..3).map(|_| connection.request(RequestCode::Pull, Bytes::new(), TIMEOUT));
        let (results, ()) = tokio::join!(futures_util::future::join_all(pending), async {
            received_rx.await.unwrap();
        });
        for result in results {
            assert!(matches!(result, Err(TransportError::ConnectionClosed)), "{result:?}");
        }
        assert!(!connection.is_alive());
        assert!(matches!(
            connection.request(RequestCode::Pull, Bytes::new(), TIMEOUT).await,
            Err(TransportError::ConnectionClosed)
        ));
        let response = pool
            .request(&addr, RequestCode::Pull, Bytes::new(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(response.body, Bytes::from_static(b"pong"));
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn a_timed_out_request_leaves_the_connection_usable() {
        let (listener, addr) = listener().await;
        let tracker = TaskTracker::new();
        tracker.spawn(async move {
            let mut framed = accept(&listener).await;
            // Ignore the first request, answer the rest.
            framed.next().await.unwrap().unwrap();
            while let Some(Ok(request)) = framed.next().await {
                framed
                    .send(Frame::response(request.header.request_id, Bytes::new()))
                    .await
                    .unwrap();
            }
        });
        let pool = ConnectionPool::new(TransportConfig::default());
        let error = pool
            .request(&addr, RequestCode::Pull, Bytes::new(), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(error, TransportError::Timeout { .. }), "{error:?}");
        assert!(error.to_string().contains("Pull request to"), "{error}");
        pool.request(&addr, RequestCode::Pull, Bytes::new(), TIMEOUT)
            .await
            .unwrap();
        let connection = pool.get(&addr).await.unwrap();
        assert!(connection.inner.shared.lock().waiters.is_empty());
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn oneway_frames_carry_the_flag() {
        let (listener, addr) = listener().await;
        let tracker = TaskTracker::new();
        let server = tracker.spawn(async move {
            let mut framed = accept(&listener).await;
            framed.next().await.unwrap().unwrap()
        });
        let pool = ConnectionPool::new(TransportConfig::default());
        pool.send_oneway(&addr, RequestCode::Send, Bytes::from_static(b"fire"))
            .await
            .unwrap();
        let received = server.await.unwrap();
        assert!(received.is_oneway());
        assert_eq!(received.body, Bytes::from_static(b"fire"));
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn oversized_requests_are_refused_before_sending() {
        let (_listener, addr) = listener().await;
        let mut config = TransportConfig::default();
        config.limits.max_frame_size = 100;
        let pool = ConnectionPool::new(config);
        let error = pool
            .request(&addr, RequestCode::Send, Bytes::from(vec![0u8; 200]), TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(error, TransportError::FrameTooLarge { max: 100, .. }),
            "{error:?}"
        );
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn connect_failures_name_the_address() {
        let (listener, addr) = listener().await;
        drop(listener);
        let pool = ConnectionPool::new(TransportConfig::default());
        let error = pool.get(&addr).await.err().unwrap();
        assert!(matches!(error, TransportError::Connect { .. }), "{error:?}");
        assert!(error.to_string().contains(&addr), "{error}");
        assert!(error.is_retriable());
        pool.shutdown().await;
        assert!(matches!(pool.get(&addr).await, Err(TransportError::Shutdown)));
    }
}

//! The TCP server: accepts connections and answers pipelined requests.
//!
//! Each connection has a reader (this task) and a writer task. The reader decodes frames and
//! handles each request; requests that finish later run as tasks of the connection, at most
//! `max_inflight_per_connection` at once, and answers wait for the writer within a byte budget
//! (`max_pending_response_bytes`), so a client that stops reading its responses only stalls
//! itself, holding bounded memory. A frame that cannot be decoded gets an error response and closes its connection; other
//! connections are unaffected.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use meridian_proto::frame::FrameError;
use meridian_proto::idc::{IdcSettings, LocalIdc};
use meridian_proto::messages::{IdcLookupRequest, IdcLookupResponse};
use meridian_proto::transport::{ConnectionPool, TransportConfig};
use meridian_proto::{ErrorCode, Frame, FrameCodec, PROTOCOL_VERSION, RequestCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::groups::ConsumerGroups;
use crate::handlers::{self, BrokerState, Reply};
use crate::metrics::{BrokerMetrics, ErrorLabels};
use crate::registry::{Governance, Heartbeats};
use crate::replication::Replication;
use crate::store::{MessageStore, StoreOptions};

/// A broker that has recovered its store and bound its port, ready to [`Broker::run`].
pub struct Broker {
    listener: TcpListener,
    state: Arc<BrokerState>,
}

/// This broker's data center by the shared rules ([`meridian_proto::idc`]): `MERIDIAN_IDC`, the
/// `idc` setting, the IDC file, then the nameservers' IDC map for the advertised address.
async fn detect_idc(config: &BrokerConfig) -> String {
    let settings = IdcSettings {
        idc: config.idc.clone(),
        file: config.idc_file.clone(),
        ip: None,
    };
    let local = LocalIdc::read(&settings);
    let mut map = None;
    if config.is_governed() {
        let advertised = config
            .advertise_addr
            .as_deref()
            .and_then(|addr| addr.parse::<SocketAddr>().ok())
            .map_or(config.listen.ip(), |addr| addr.ip());
        let pool = ConnectionPool::new(TransportConfig {
            request_timeout: Duration::from_secs(2),
            ..TransportConfig::default()
        });
        for nameserver in &config.nameservers {
            let ip = if advertised.is_unspecified() {
                match meridian_proto::idc::local_ip_towards(nameserver) {
                    Some(ip) => ip,
                    None => continue,
                }
            } else {
                advertised
            };
            let request = IdcLookupRequest { ip: ip.to_string() };
            let answer: std::result::Result<IdcLookupResponse, _> = pool
                .call(nameserver, RequestCode::IdcLookup, &request, Duration::from_secs(2))
                .await;
            match answer {
                Ok(answer) => {
                    map = (!answer.idc.is_empty()).then_some((ip, answer.cidr, answer.idc));
                    break;
                }
                Err(error) => tracing::debug!(nameserver, %error, "IDC lookup failed; trying the next nameserver"),
            }
        }
        pool.shutdown().await;
    }
    // A broker's IDC is what makes clients there local: the first broker of a new IDC is not
    // warned that its IDC is unknown (clients are).
    let detected = local.decide(map, &[]);
    detected.log(&format!("broker {}", config.member_name()));
    detected.idc
}

/// Runs a broker until `shutdown` completes.
pub async fn run(config: BrokerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    Broker::bind(config, Arc::new(BrokerMetrics::default()))
        .await?
        .run(shutdown)
        .await
}

impl Broker {
    /// Validates the config, binds the listener and opens (recovers) the store.
    pub async fn bind(mut config: BrokerConfig, metrics: Arc<BrokerMetrics>) -> Result<Broker> {
        config.idc = detect_idc(&config).await;
        config.validate()?;
        let listener = TcpListener::bind(config.listen).await.map_err(BrokerError::io(format!(
            "binding broker listener on {} (is another broker running?)",
            config.listen
        )))?;
        let local_addr = listener
            .local_addr()
            .map_err(BrokerError::io("reading the bound address"))?;
        let advertise_addr = config.advertise_addr.clone().unwrap_or_else(|| local_addr.to_string());
        let store_host: SocketAddr = advertise_addr.parse().unwrap_or(local_addr);
        let data_dir = config.data_dir.clone();
        let store_config = config.store.clone();
        let store_metrics = metrics.clone();
        let store_options = StoreOptions {
            replicated: Replication::confirms_by_group(&config),
            ..StoreOptions::default()
        };
        let store = tokio::task::spawn_blocking(move || {
            let store = MessageStore::open_with(&data_dir, store_config, store_host, store_metrics, store_options)?;
            crate::trace::ensure_topic(&store)?;
            crate::schedule::ensure_topics(&store)?;
            Ok::<_, BrokerError>(store)
        })
        .await
        .map_err(|error| BrokerError::Corrupt(format!("store recovery task failed: {error}")))??;
        if config.archive.enabled {
            let archive = crate::retention::open_store(&config.archive, &config.data_dir)?;
            let reader = meridian_archive::reader::ArchiveReader::new(archive, config.broker_name.clone())
                .map_err(|error| BrokerError::Config(error.to_string()))?;
            // An unreachable archive must not keep the broker down: the retention task retries.
            if let Err(error) = reader.refresh(false).await {
                tracing::warn!(%error, "archive manifest unreadable at start; retrying in the background");
            }
            store.set_archive(Arc::new(reader));
        }
        let governance = config
            .is_governed()
            .then(|| Arc::new(Governance::new(config.broker_name.clone(), config.nameservers.clone())));
        let shutdown = CancellationToken::new();
        let replication = Replication::new(&config, store.clone(), metrics.clone(), shutdown.clone());
        let trace = Arc::new(crate::trace::TraceEmitter::new(
            config.trace.clone(),
            crate::trace::Identity {
                broker_name: config.broker_name.clone(),
                member: config.member_name().to_owned(),
                host: advertise_addr.clone(),
                idc: config.idc.clone(),
            },
            metrics.trace.clone(),
        ));
        let state = Arc::new(BrokerState {
            trace,
            replication,
            governance,
            store,
            groups: ConsumerGroups::new(Duration::from_millis(config.consumer_expiry_ms)),
            locks: crate::locks::QueueLocks::new(Duration::from_millis(config.queue_lock_expiry_ms)),
            metrics,
            limits: config.limits.limits(),
            advertise_addr,
            config,
            shutdown,
        });
        Ok(Broker { listener, state })
    }

    /// The address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// This broker's place in its group (role, lease, slaves), for status pages.
    pub fn replication(&self) -> Arc<Replication> {
        self.state.replication.clone()
    }

    /// The storage engine, for composition in one process and for tests.
    pub fn store(&self) -> Arc<MessageStore> {
        self.state.store.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (long polls end at once), and shuts the store down (flush, checkpoint). A governed broker
    /// (`nameservers` set) heartbeats its nameservers from the start until it stops accepting.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Broker { listener, state } = self;
        let connections = TaskTracker::new();
        tracing::info!(addr = %listener.local_addr().map_err(BrokerError::io("reading the bound address"))?, broker = state.config.broker_name, "broker listening");
        let heartbeats = state
            .governance
            .clone()
            .map(|governance| Heartbeats::start(state.clone(), governance, state.shutdown.child_token()));
        // The trace flusher outlives the connections, so events of the last requests are written.
        let trace_stop = CancellationToken::new();
        let trace_flusher = TaskTracker::new();
        trace_flusher.spawn(crate::trace::flush_loop(
            state.trace.clone(),
            state.store.clone(),
            state.replication.clone(),
            state.metrics.clone(),
            state.config.data_dir.clone(),
            state
                .advertise_addr
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            trace_stop.clone(),
        ));
        trace_flusher.close();
        let retention_stop = CancellationToken::new();
        let retention = TaskTracker::new();
        if let Some(archive) = state.store.archive() {
            retention.spawn(crate::retention::run(
                state.store.clone(),
                archive.clone(),
                state.config.archive.clone(),
                retention_stop.clone(),
            ));
        }
        retention.spawn(crate::schedule::run(state.clone(), retention_stop.clone()));
        retention.spawn(crate::transaction::run(state.clone(), retention_stop.clone()));
        retention.close();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(state.clone(), stream, peer));
                    }
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        tracing::info!("broker stopping: draining connections");
        state.shutdown.cancel();
        connections.close();
        if tokio::time::timeout(Duration::from_secs(10), connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections did not drain within 10 s; stopping anyway");
        }
        retention_stop.cancel();
        retention.wait().await;
        trace_stop.cancel();
        trace_flusher.wait().await;
        if let Some(heartbeats) = heartbeats {
            heartbeats.stop().await;
        }
        state.replication.stop().await;
        let store = state.store.clone();
        tokio::task::spawn_blocking(move || store.shutdown())
            .await
            .map_err(|error| BrokerError::Corrupt(format!("store shutdown task failed: {error}")))?;
        tracing::info!("broker stopped");
        Ok(())
    }
}

/// Responses waiting for the writer, bounded in bytes as well as in number.
#[derive(Clone)]
struct Responses {
    frames_tx: mpsc::Sender<(Frame, OwnedSemaphorePermit)>,
    /// One permit per KiB of queued responses.
    budget: Arc<Semaphore>,
    budget_kib: u32,
}

impl Responses {
    /// Queues a response, waiting while the connection's queued bytes are over budget.
    async fn send(&self, frame: Frame) -> std::result::Result<(), ()> {
        // A single response larger than the budget takes all of it rather than waiting forever.
        let kib = (frame.encoded_len() / 1024 + 1).min(self.budget_kib as usize) as u32;
        let permit = self.budget.clone().acquire_many_owned(kib).await.map_err(drop)?;
        self.frames_tx.send((frame, permit)).await.map_err(drop)
    }
}

async fn write_frames(
    mut sink: FramedWrite<tokio::net::tcp::OwnedWriteHalf, FrameCodec>,
    mut frames: mpsc::Receiver<(Frame, OwnedSemaphorePermit)>,
) {
    let mut written = Vec::new();
    while let Some((frame, permit)) = frames.recv().await {
        if sink.feed(frame).await.is_err() {
            return;
        }
        written.push(permit);
        // Write everything already queued with one flush: pipelined clients share syscalls.
        while let Ok((frame, permit)) = frames.try_recv() {
            if sink.feed(frame).await.is_err() {
                return;
            }
            written.push(permit);
        }
        if sink.flush().await.is_err() {
            return;
        }
        // The bytes left the process: give their budget back.
        written.clear();
    }
}

fn to_frame(state: &BrokerState, request_id: u64, result: Result<Bytes>) -> Frame {
    match result {
        Ok(body) => Frame::response(request_id, body),
        Err(error) => {
            let code = error.code();
            state
                .metrics
                .errors
                .get_or_create(&ErrorLabels { code: code.as_str() })
                .inc();
            if code == ErrorCode::Internal {
                tracing::error!(%error, "request failed");
            }
            Frame::error(request_id, code, error.to_string())
        }
    }
}

/// Most sends combined into one append: bounds the latency the first of them waits for the rest.
const MAX_COMBINED_SENDS: usize = 64;

/// What answering a request on one connection needs.
struct ConnectionState<'a> {
    state: &'a Arc<BrokerState>,
    peer: SocketAddr,
    responses_tx: &'a Responses,
    permits: &'a Arc<Semaphore>,
    tasks: &'a TaskTracker,
}

impl ConnectionState<'_> {
    /// Sends (or schedules) the answer to one request. False when the connection must close.
    async fn dispatch(&self, reply: Reply, request_id: u64, oneway: bool) -> bool {
        match reply {
            Reply::Now(result) => {
                let fatal = matches!(result, Err(BrokerError::MalformedBody(_)));
                if fatal {
                    self.state.metrics.malformed_frames.inc();
                }
                if !oneway || fatal {
                    if self
                        .responses_tx
                        .send(to_frame(self.state, request_id, result))
                        .await
                        .is_err()
                    {
                        return false;
                    }
                } else if let Err(error) = result {
                    tracing::debug!(peer = %self.peer, %error, "one-way request failed");
                }
                if fatal {
                    tracing::warn!(peer = %self.peer, "malformed request body; closing connection");
                    return false;
                }
                true
            }
            Reply::Later(pending) => {
                let Ok(permit) = self.permits.clone().acquire_owned().await else {
                    return false;
                };
                let responses_tx = self.responses_tx.clone();
                let state = self.state.clone();
                self.tasks.spawn(async move {
                    let result = pending.await;
                    if !oneway {
                        let _ = responses_tx.send(to_frame(&state, request_id, result)).await;
                    }
                    drop(permit);
                });
                true
            }
        }
    }
}

async fn serve_connection(state: Arc<BrokerState>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    state.metrics.connections.inc();
    tracing::debug!(%peer, "connection opened");
    let codec = FrameCodec::new(state.limits.max_frame_size);
    let (read_half, write_half) = stream.into_split();
    let mut frames = FramedRead::with_capacity(read_half, codec.clone(), 64 * 1024);
    let mut sink = FramedWrite::new(write_half, codec);
    sink.set_backpressure_boundary(256 * 1024);
    let inflight = state.config.max_inflight_per_connection;
    let (frames_tx, frames_rx) = mpsc::channel(inflight);
    let budget_kib = (state.config.max_pending_response_bytes / 1024).max(1) as u32;
    let responses_tx = Responses {
        frames_tx,
        budget: Arc::new(Semaphore::new(budget_kib as usize)),
        budget_kib,
    };
    let tasks = TaskTracker::new();
    tasks.spawn(write_frames(sink, frames_rx));
    let permits = Arc::new(Semaphore::new(inflight));

    let connection = ConnectionState {
        state: &state,
        peer,
        responses_tx: &responses_tx,
        permits: &permits,
        tasks: &tasks,
    };
    // A frame read while gathering sends that was not itself a send: handled next.
    let mut carried: Option<Option<Result<Frame, FrameError>>> = None;
    loop {
        let next = match carried.take() {
            Some(next) => next,
            None => tokio::select! {
                _ = state.shutdown.cancelled() => break,
                next = frames.next() => next,
            },
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                state.metrics.malformed_frames.inc();
                tracing::warn!(%peer, %error, "malformed frame; closing connection");
                let _ = responses_tx
                    .send(Frame::error(0, ErrorCode::MalformedFrame, error.to_string()))
                    .await;
                break;
            }
        };
        let request_id = frame.header.request_id;
        let Some(code) = RequestCode::from_u32(frame.header.code).filter(|_| !frame.is_response()) else {
            state.metrics.malformed_frames.inc();
            let message = format!(
                "request code {} is not supported by this broker (protocol version {PROTOCOL_VERSION}); upgrade the broker or use a matching client",
                frame.header.code
            );
            tracing::warn!(%peer, code = frame.header.code, "unsupported request; closing connection");
            let _ = responses_tx
                .send(Frame::error(request_id, ErrorCode::UnsupportedRequest, message))
                .await;
            break;
        };
        if code != RequestCode::Send {
            let oneway = frame.is_oneway();
            let reply = handlers::handle(&state, code, frame.body, peer);
            if !connection.dispatch(reply, request_id, oneway).await {
                break;
            }
            continue;
        }
        // Sends this connection has already sent go into one append and one write.
        let mut sends = vec![(request_id, frame.is_oneway(), frame.body)];
        while sends.len() < MAX_COMBINED_SENDS {
            match frames.next().now_or_never() {
                Some(Some(Ok(next))) if !next.is_response() && next.header.code == RequestCode::Send as u32 => {
                    sends.push((next.header.request_id, next.is_oneway(), next.body));
                }
                Some(other) => {
                    carried = Some(other);
                    break;
                }
                None => break,
            }
        }
        let (ids, bodies): (Vec<(u64, bool)>, Vec<Bytes>) = sends
            .into_iter()
            .map(|(request_id, oneway, body)| ((request_id, oneway), body))
            .unzip();
        let replies = handlers::send_many(&state, bodies, peer);
        let mut open = true;
        for ((request_id, oneway), reply) in ids.into_iter().zip(replies) {
            if !connection.dispatch(reply, request_id, oneway).await {
                open = false;
                break;
            }
        }
        if !open {
            break;
        }
    }
    // A consumer whose connection closed crashed or was killed (a clean one leaves first): its
    // group rebalances now, not after the heartbeat expiry. Done before waiting for the
    // connection's long polls, which may hold for seconds.
    if !state.shutdown.is_cancelled() {
        for (group, client_id) in state.groups.disconnected(peer) {
            // An orderly member that crashed frees its queues for the others at once.
            state.locks.release_member(&group, &client_id);
            state.metrics.consumers_disconnected.inc();
            tracing::info!(%peer, group, client_id, "consumer connection closed; removed from its group");
        }
    }
    drop(responses_tx);
    tasks.close();
    tasks.wait().await;
    state.metrics.connections.dec();
    tracing::debug!(%peer, "connection closed");
}

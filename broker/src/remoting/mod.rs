//! The broker's RocketMQ 4.x remoting listener (10911 by default): unmodified RocketMQ clients
//! (Java, C++ and the Python/Go clients on them) produce and consume here.
//!
//! The listener only translates. Each remoting request becomes the native request Meridian's own
//! SDK would send, answered by [`crate::handlers::handle`] (the same validation, governance
//! checks, confirmed-offset reads, trace emission and metrics), and the native answer becomes the
//! RocketMQ response. Start reading at [`requests::handle`]; this file owns the sockets: one
//! reader per connection, a writer task, requests that finish later (long polls, synced sends) run
//! as tasks of the connection, AccessKey signatures are checked before anything else when
//! `[auth]` is on ([`access`]), and broker-initiated requests (`NOTIFY_CONSUMER_IDS_CHANGED`,
//! `CHECK_TRANSACTION_STATE` from [`check_back`]) go out through [`Clients`].

pub mod access;
pub mod requests;
mod shared;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use meridian_proto::auth::Principal;
use meridian_proto::remoting::codes::response;
use meridian_proto::remoting::{Decoded, RemotingCodec, RemotingCommand};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::task::TaskTracker;

use crate::state::BrokerState;
use meridian_proto::tls::Accepted;

pub use crate::config::RemotingConfig;
pub use shared::{Clients, Remoting};

/// Requests one remoting connection may have running at once.
const MAX_INFLIGHT: usize = 256;

/// Accepts remoting connections on every listener (the main one, then the VIP channel if
/// configured) until the broker shuts down; all share one [`Remoting`], so a client may use both.
pub async fn serve(
    listeners: Vec<TcpListener>,
    state: Arc<BrokerState>,
    advertise: SocketAddr,
    connections: TaskTracker,
) {
    tracing::info!(addr = %advertise, broker = state.config.broker_name, "remoting listener serving RocketMQ clients");
    let remoting = Arc::new(Remoting {
        state: state.clone(),
        advertise,
        clients: Clients::default(),
        producers: Clients::default(),
        asked: Mutex::new(std::collections::HashSet::new()),
        subscriptions: Mutex::new(HashMap::new()),
        access: access::AccessCheck::new(&state),
    });
    connections.spawn(check_back(remoting.clone()));
    for (index, listener) in listeners.into_iter().enumerate() {
        if index > 0
            && let Ok(addr) = listener.local_addr()
        {
            tracing::info!(%addr, "remoting VIP channel serving RocketMQ clients");
        }
        connections.spawn(accept(listener, remoting.clone(), connections.clone()));
    }
}

async fn accept(listener: TcpListener, remoting: Arc<Remoting>, connections: TaskTracker) {
    let state = remoting.state.clone();
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(remoting.clone(), stream, peer));
                }
                Err(error) => {
                    tracing::warn!(%error, "remoting accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn write_commands<W: AsyncWrite + Unpin>(
    mut sink: FramedWrite<W, RemotingCodec>,
    mut commands: mpsc::Receiver<RemotingCommand>,
) {
    while let Some(command) = commands.recv().await {
        if sink.feed(command).await.is_err() {
            return;
        }
        while let Ok(command) = commands.try_recv() {
            if sink.feed(command).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// Sniffs and handshakes TLS per `[tls]` (RocketMQ clients with `tls.enable` send a handshake
/// first), then serves the connection.
async fn serve_connection(remoting: Arc<Remoting>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = remoting.state.tls.clone() else {
        let (read_half, write_half) = stream.into_split();
        return serve_halves(remoting, read_half, write_half, peer).await;
    };
    let timeout = remoting.state.connection_limits.limits().handshake_timeout();
    let accepted = tokio::select! {
        _ = remoting.state.shutdown.cancelled() => return,
        accepted = tls.accept(stream, timeout) => accepted,
    };
    match accepted {
        Ok(Accepted::Plain(stream)) => {
            let (read_half, write_half) = stream.into_split();
            serve_halves(remoting, read_half, write_half, peer).await
        }
        Ok(Accepted::Tls(stream)) => {
            let (read_half, write_half) = tokio::io::split(*stream);
            serve_halves(remoting, read_half, write_half, peer).await
        }
        Ok(Accepted::PlaintextRefused(_)) => {
            tracing::warn!(%peer, "plaintext remoting connection refused: [tls] mode is required; enable TLS in the RocketMQ client (tls.enable=true)");
        }
        Err(error) => tracing::warn!(%peer, %error, "remoting tls handshake failed; closing connection"),
    }
}

async fn serve_halves<R, W>(remoting: Arc<Remoting>, read_half: R, write_half: W, peer: SocketAddr)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let state = &remoting.state;
    state.metrics.connections.inc();
    tracing::debug!(%peer, "remoting connection opened");
    let codec = RemotingCodec::new(state.limits.max_frame_size);
    let mut frames = FramedRead::with_capacity(read_half, codec.clone(), 64 * 1024);
    let (tx, rx) = mpsc::channel(MAX_INFLIGHT);
    let tasks = TaskTracker::new();
    tasks.spawn(write_commands(FramedWrite::new(write_half, codec), rx));
    let permits = Arc::new(Semaphore::new(MAX_INFLIGHT));
    loop {
        let next = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            next = frames.next() => next,
        };
        let command = match next {
            None => break,
            Some(Ok(Decoded::Command(command))) => command,
            Some(Ok(Decoded::BadHeader {
                opaque,
                serialize_type,
                error,
            })) => {
                state.metrics.malformed_frames.inc();
                tracing::debug!(%peer, %error, "remoting header unreadable");
                let mut answer = RemotingCommand {
                    opaque,
                    serialize_type,
                    ..RemotingCommand::default()
                }
                .respond(response::SYSTEM_ERROR, Some(error.to_string()));
                answer.serialize_type = serialize_type;
                if tx.send(answer).await.is_err() {
                    break;
                }
                continue;
            }
            Some(Err(error)) => {
                state.metrics.malformed_frames.inc();
                tracing::warn!(%peer, %error, "malformed remoting frame; closing connection");
                break;
            }
        };
        if command.is_response() {
            // Answers to what the broker sent (notifications are one-way; nothing waits).
            continue;
        }
        let oneway = command.is_oneway();
        let principal = match &remoting.access {
            None => Principal::Anonymous,
            Some(access) => match access.authenticate(state, &command) {
                Ok(principal) => principal,
                Err(error) => {
                    state.metrics.remoting_signature_refusals.inc();
                    tracing::debug!(%peer, code = command.code, %error, "RocketMQ request refused for its signature");
                    if !oneway
                        && tx
                            .send(command.respond(response::NO_PERMISSION, Some(error.to_string())))
                            .await
                            .is_err()
                    {
                        break;
                    }
                    continue;
                }
            },
        };
        let span = tracing::trace_span!("remoting_request", %principal, code = command.code);
        let handled = span.in_scope(|| requests::handle(&remoting, command, peer, &principal, &tx));
        match handled {
            requests::Answer::Now(answer) => {
                if let Some(answer) = answer.filter(|_| !oneway)
                    && tx.send(answer).await.is_err()
                {
                    break;
                }
            }
            requests::Answer::Later(pending) => {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let tx = tx.clone();
                tasks.spawn(async move {
                    let answer = pending.await;
                    if !oneway {
                        let _ = tx.send(answer).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    remoting.clients.forget_peer(peer);
    remoting.producers.forget_peer(peer);
    if !state.shutdown.is_cancelled() {
        let mut changed = Vec::new();
        for (group, client_id) in state.groups.disconnected(peer) {
            state.locks.release_member(&group, &client_id);
            state.metrics.consumers_disconnected.inc();
            tracing::info!(%peer, group, client_id, "RocketMQ consumer connection closed; removed from its group");
            changed.push(group);
        }
        changed.dedup();
        for group in changed {
            remoting.clients.notify_changed(&group);
        }
    }
    drop(tx);
    tasks.close();
    tasks.wait().await;
    state.metrics.connections.dec();
    tracing::debug!(%peer, "remoting connection closed");
}

/// Most half messages remembered as asked about; past it the set starts again (a producer may
/// then be asked about a transaction twice, which RocketMQ producers answer idempotently).
const MAX_ASKED: usize = 100_000;

/// Transaction check-back for RocketMQ producers: Meridian's SDK polls for the half messages its
/// producer group must decide ([`crate::transaction::pending_checks`]); RocketMQ producers are
/// asked instead. Each due copy is sent once, as `CHECK_TRANSACTION_STATE`, to one connected
/// member of its producer group, which answers with a one-way `END_TRANSACTION`.
async fn check_back(remoting: Arc<Remoting>) {
    let state = remoting.state.clone();
    let tick = Duration::from_millis((state.config.transaction.check_interval_ms / 2).clamp(100, 5_000));
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        for group in remoting.producers.groups() {
            let Some((client_id, sender)) = remoting.producers.any(&group) else {
                continue;
            };
            let checks = match requests::pending_checks(&remoting, &group, &client_id) {
                Ok(checks) => checks,
                Err(error) => {
                    tracing::debug!(group, %error, "transaction check-back skipped");
                    continue;
                }
            };
            for check in checks {
                {
                    let mut asked = remoting.asked.lock().unwrap_or_else(PoisonError::into_inner);
                    if asked.len() >= MAX_ASKED {
                        asked.clear();
                    }
                    if !asked.insert(check.half_offset) {
                        continue;
                    }
                }
                let opaque = remoting.clients.opaque.fetch_add(1, Ordering::Relaxed);
                let command = requests::check_transaction_state(&remoting, &check, opaque);
                if sender.try_send(command).is_err() {
                    // Not sent: ask again at the next tick.
                    remoting
                        .asked
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&check.half_offset);
                }
            }
        }
    }
}

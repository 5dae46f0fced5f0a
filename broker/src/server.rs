//! The TCP server: accepts connections and answers pipelined requests.
//!
//! Each connection runs the shared loop of [`meridian_proto::serve`] with [`BrokerFrames`], the
//! broker's part: requests that finish later run as tasks of the connection, at most
//! `max_inflight_per_connection` at once, and answers wait for the writer within a byte budget
//! (`max_pending_response_bytes`), so a client that stops reading its responses only stalls
//! itself, holding bounded memory. A frame that cannot be decoded, an unknown request code or a
//! body that cannot be decoded gets an error response and closes its connection; other
//! connections are unaffected. Sends read back to back are combined into one append.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::idc::{IdcSettings, LocalIdc};
use meridian_proto::messages::{IdcLookupRequest, IdcLookupResponse};
use meridian_proto::serve::{self, AfterError, ConnectionLimiter, ConnectionSettings, FrameService};
use meridian_proto::tls::{RELOAD_INTERVAL, TlsClient, TlsServer};
use meridian_proto::transport::{ConnectionPool, TransportConfig};
use meridian_proto::{ErrorCode, Frame, FrameCodec, PROTOCOL_VERSION, RequestCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::groups::ConsumerGroups;
use crate::handlers;
use crate::metrics::{BrokerMetrics, ErrorLabels};
use crate::registry::{Governance, Heartbeats};
use crate::replication::Replication;
use crate::reply::Reply;
use crate::state::BrokerState;
use crate::store::{MessageStore, StoreOptions};

/// A broker that has recovered its store and bound its port, ready to [`Broker::run`].
pub struct Broker {
    listener: TcpListener,
    /// The RocketMQ remoting listener, the address clients are told and the VIP-channel listener
    /// (`[remoting] vip_listen`), when `[remoting]` is on.
    remoting: Option<(TcpListener, SocketAddr, Option<TcpListener>)>,
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
            credentials: config.auth.node_credentials.clone(),
            tls: config.tls_client.clone(),
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
        config.auth.load()?;
        let tls = TlsServer::load(&config.tls).map_err(|error| BrokerError::Config(error.to_string()))?;
        config.tls_client =
            TlsClient::from_settings(&config.tls).map_err(|error| BrokerError::Config(error.to_string()))?;
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
        let remoting = if config.remoting.enabled {
            let listener = TcpListener::bind(config.remoting.listen)
                .await
                .map_err(BrokerError::io(format!(
                    "binding the RocketMQ remoting listener on {} (is a RocketMQ broker or another Meridian broker running? set [remoting] listen)",
                    config.remoting.listen
                )))?;
            let bound = listener
                .local_addr()
                .map_err(BrokerError::io("reading the bound remoting address"))?;
            let advertise = match &config.remoting.advertise_addr {
                Some(addr) => addr.parse().map_err(|_| {
                    BrokerError::Config(format!(
                        "[remoting] advertise_addr {addr:?} must be ip:port, e.g. 10.0.0.5:10911"
                    ))
                })?,
                None => bound,
            };
            config.remoting.advertise_addr = Some(advertise.to_string());
            let vip = match config.remoting.vip_listen {
                Some(vip_listen) => Some(TcpListener::bind(vip_listen).await.map_err(BrokerError::io(format!(
                    "binding the RocketMQ VIP-channel listener on {vip_listen} (is a RocketMQ broker running? change or remove [remoting] vip_listen)"
                )))?),
                None => None,
            };
            Some((listener, advertise, vip))
        } else {
            None
        };
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
            stats: Arc::default(),
            trace,
            replication,
            governance,
            store,
            groups: ConsumerGroups::new(Duration::from_millis(config.consumer_expiry_ms)),
            locks: crate::locks::QueueLocks::new(Duration::from_millis(config.queue_lock_expiry_ms)),
            lag: crate::lag::LagTracker::default(),
            producers: crate::producers::ProducerReports::default(),
            metrics,
            limits: config.limits.limits(),
            advertise_addr,
            tls,
            connection_limits: ConnectionLimiter::new(config.connections.clone()),
            config,
            shutdown,
            oneway_failure_log: meridian_proto::throttle::Throttle::new(Duration::from_secs(10)),
        });
        Ok(Broker {
            listener,
            remoting,
            state,
        })
    }

    /// Computes consumer lag from this broker's offsets and commits, for `/metrics` and the API.
    pub fn lag_collector(&self) -> crate::lag::LagCollector {
        crate::lag::LagCollector::new(self.state.clone())
    }

    /// The clients this broker knows and the SDK policy's verdict on them.
    pub fn clients_view(&self) -> crate::clients::ClientsView {
        crate::clients::ClientsView::new(self.state.clone())
    }

    /// The address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The bound RocketMQ remoting address, when `[remoting]` is on.
    pub fn remoting_addr(&self) -> Option<SocketAddr> {
        self.remoting
            .as_ref()
            .map(|(listener, _, _)| listener.local_addr().expect("bound listener has an address"))
    }

    /// The bound RocketMQ VIP-channel address, when `[remoting] vip_listen` is set.
    pub fn remoting_vip_addr(&self) -> Option<SocketAddr> {
        self.remoting
            .as_ref()
            .and_then(|(_, _, vip)| vip.as_ref())
            .map(|listener| listener.local_addr().expect("bound listener has an address"))
    }

    /// This broker's place in its group (role, lease, slaves), for status pages.
    pub fn replication(&self) -> Arc<Replication> {
        self.state.replication.clone()
    }

    /// The data center this broker runs in (empty when none is configured).
    pub fn idc(&self) -> String {
        self.state.config.idc.clone()
    }

    /// Recent rates and disk use, sampled while the broker runs (`GET /api/broker/stats`).
    pub fn stats(&self) -> Arc<crate::stats::BrokerStats> {
        self.state.stats.clone()
    }

    /// The authentication of this broker's HTTP API: `None` when `[auth]` is off.
    pub fn http_authenticator(&self) -> Option<Arc<meridian_proto::http_auth::HttpAuthenticator>> {
        crate::auth::http_authenticator(&self.state.config.auth, self.state.governance.as_ref())
    }

    /// TLS of the broker's listeners (`[tls]`), shared with the HTTP listener of the same
    /// process; the broker reloads its certificate while it runs.
    pub fn tls(&self) -> Option<Arc<TlsServer>> {
        self.state.tls.clone()
    }

    /// The storage engine, for composition in one process and for tests.
    pub fn store(&self) -> Arc<MessageStore> {
        self.state.store.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (long polls end at once), and shuts the store down (flush, checkpoint). A governed broker
    /// (`nameservers` set) heartbeats its nameservers from the start until it stops accepting.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Broker {
            listener,
            remoting,
            state,
        } = self;
        let connections = TaskTracker::new();
        if let Some((remoting_listener, advertise, vip_listener)) = remoting {
            let listeners = std::iter::once(remoting_listener).chain(vip_listener).collect();
            connections.spawn(crate::remoting::serve(
                listeners,
                state.clone(),
                advertise,
                connections.clone(),
            ));
        }
        tracing::info!(addr = %listener.local_addr().map_err(BrokerError::io("reading the bound address"))?, broker = state.config.broker_name, "broker listening");
        let heartbeats = state.governance.clone().map(|governance| {
            let source = crate::registry::HeartbeatSource {
                config: state.config.clone(),
                limits: state.limits,
                store: state.store.clone(),
                replication: state.replication.clone(),
                advertise_addr: state.advertise_addr.clone(),
                metrics: state.metrics.clone(),
            };
            Heartbeats::start(Arc::new(source), governance, state.shutdown.child_token())
        });
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
        retention.spawn(crate::stats::sample_loop(
            state.stats.clone(),
            state.metrics.clone(),
            state.store.clone(),
            state.config.data_dir.clone(),
            retention_stop.clone(),
        ));
        retention.close();
        let frames = Arc::new(BrokerFrames { state: state.clone() });
        let settings = ConnectionSettings {
            codec: FrameCodec::new(state.limits.max_frame_size),
            max_inflight: state.config.max_inflight_per_connection,
            max_pending_response_bytes: Some(state.config.max_pending_response_bytes),
            auth: crate::auth::authenticator(&state.config.auth, state.governance.as_ref()),
            tls: state.tls.clone(),
            limits: state.connection_limits.clone(),
        };
        if let Some(tls) = &state.tls {
            connections.spawn(tls.clone().watch(RELOAD_INTERVAL, state.shutdown.clone()));
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve::serve_connection(
                            frames.clone(),
                            settings.clone(),
                            stream,
                            peer,
                            state.shutdown.clone(),
                        ));
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

/// A one-way request failed: no answer carries the error, so it is counted (by code, in
/// `oneway_failures` and `errors`) and logged at most once per 10 s, never dropped in silence.
fn oneway_failed(state: &BrokerState, peer: SocketAddr, error: &BrokerError) {
    let labels = ErrorLabels {
        code: error.code().as_str(),
    };
    state.metrics.errors.get_or_create(&labels).inc();
    state.metrics.oneway_failures.get_or_create(&labels).inc();
    if let Some(left_out) = state.oneway_failure_log.due() {
        tracing::warn!(
            %peer,
            code = labels.code,
            %error,
            other_failures_not_logged = left_out,
            "one-way request failed; its sender gets no answer (logged at most once per 10 s, counted in oneway_failures)"
        );
    }
}

/// The broker's side of a framed connection: the loop itself is [`serve::serve_connection`].
struct BrokerFrames {
    state: Arc<BrokerState>,
}

impl FrameService for BrokerFrames {
    type Error = BrokerError;

    fn answer(&self, code: RequestCode, body: Bytes, peer: SocketAddr) -> Reply {
        handlers::handle(
            &self.state,
            &meridian_proto::auth::Principal::Anonymous,
            code,
            body,
            peer,
        )
    }

    fn answer_as(
        &self,
        principal: &meridian_proto::auth::Principal,
        code: RequestCode,
        body: Bytes,
        peer: SocketAddr,
    ) -> Reply {
        handlers::handle(&self.state, principal, code, body, peer)
    }

    /// Sends this connection has already sent go into one append and one write.
    fn batched_code(&self) -> Option<RequestCode> {
        Some(RequestCode::Send)
    }

    fn answer_batch(&self, bodies: Vec<Bytes>, peer: SocketAddr) -> Vec<Reply> {
        handlers::send_many(&self.state, &meridian_proto::auth::Principal::Anonymous, bodies, peer)
    }

    fn answer_batch_as(
        &self,
        principal: &meridian_proto::auth::Principal,
        bodies: Vec<Bytes>,
        peer: SocketAddr,
    ) -> Vec<Reply> {
        handlers::send_many(&self.state, principal, bodies, peer)
    }

    fn error_frame(&self, request_id: u64, error: BrokerError) -> Frame {
        let code = error.code();
        self.state
            .metrics
            .errors
            .get_or_create(&ErrorLabels { code: code.as_str() })
            .inc();
        if code == ErrorCode::Internal {
            tracing::error!(%error, "request failed");
        }
        Frame::error(request_id, code, error.to_string())
    }

    fn after_error(
        &self,
        peer: SocketAddr,
        _code: RequestCode,
        error: &BrokerError,
        oneway: bool,
        deferred: bool,
    ) -> AfterError {
        if oneway {
            oneway_failed(&self.state, peer, error);
        }
        if deferred {
            return AfterError::Answer;
        }
        if matches!(error, BrokerError::MalformedBody(_)) {
            self.state.metrics.malformed_frames.inc();
            tracing::warn!(%peer, "malformed request body; closing connection");
            return AfterError::AnswerAndClose;
        }
        AfterError::Answer
    }

    fn unsupported(&self, peer: SocketAddr, request_id: u64, code: u32) -> (Frame, AfterError) {
        let message = format!(
            "request code {code} is not supported by this broker (protocol version {PROTOCOL_VERSION}); upgrade the broker or use a matching client"
        );
        tracing::warn!(%peer, code, "unsupported request; closing connection");
        (
            Frame::error(request_id, ErrorCode::UnsupportedRequest, message),
            AfterError::AnswerAndClose,
        )
    }

    fn malformed_frame(&self) {
        self.state.metrics.malformed_frames.inc();
    }

    fn connection_opened(&self, _peer: SocketAddr) {
        self.state.metrics.connections.inc();
    }

    /// A consumer whose connection closed crashed or was killed (a clean one leaves first): its
    /// group rebalances now, not after the heartbeat expiry. Done before waiting for the
    /// connection's long polls, which may hold for seconds.
    fn connection_reader_closed(&self, peer: SocketAddr) {
        let state = &self.state;
        if state.shutdown.is_cancelled() {
            return;
        }
        for (group, client_id) in state.groups.disconnected(peer) {
            // An orderly member that crashed frees its queues for the others at once.
            state.locks.release_member(&group, &client_id);
            state.metrics.consumers_disconnected.inc();
            tracing::info!(%peer, group, client_id, "consumer connection closed; removed from its group");
        }
    }

    fn connection_closed(&self, _peer: SocketAddr) {
        self.state.metrics.connections.dec();
    }
}

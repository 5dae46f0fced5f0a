//! [`Nameserver`]: binds the framed-protocol listener, starts the Raft node (forming the cluster
//! when it is new) and answers brokers, clients and peers until shutdown.
//!
//! Each connection runs the shared loop of [`meridian_proto::serve`] with `NameserverFrames`, the
//! nameserver's part. Quick answers (routes, heartbeats, reads) are computed inline; writes,
//! registrations and Raft RPCs run as tasks of the connection, at most
//! [`MAX_INFLIGHT_PER_CONNECTION`] at once, and are answered out of order by request id. A frame
//! that cannot be decoded gets an error and closes its connection; a well-framed request with a
//! bad body or an unknown code gets an error and changes nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::messages::{
    BrokerHeartbeat, BrokerMetadataRequest, BrokerRegistration, IdcLookupRequest, TopicRouteRequest,
};
use meridian_proto::serve::{self, AfterError, ConnectionLimiter, ConnectionSettings, FrameService};
use meridian_proto::tls::{RELOAD_INTERVAL, TlsClient, TlsServer};
use meridian_proto::transport::{ConnectionPool, TransportConfig};
use meridian_proto::validate::Limits;
use meridian_proto::{ErrorCode, Frame, FrameCodec, PROTOCOL_VERSION, RequestCode};
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NameserverConfig;
use crate::controller;
use crate::error::{ApiError, NameserverError};
use crate::liveness::Liveness;
use crate::metrics::{ErrorLabels, NameserverMetrics, RequestLabels};
use crate::network::{FramedNetwork, serve_raft_rpc};
use crate::raft::NameserverRaft;
use crate::service::{NameserverService, Query, ServiceSettings, WriteRequest};
use crate::types::Node;

pub use crate::config::MAX_INFLIGHT_PER_CONNECTION;

/// A nameserver whose Raft node runs and whose listener is bound, ready to [`Nameserver::run`].
pub struct Nameserver {
    listener: TcpListener,
    /// The RocketMQ remoting listener and its settings, when `[remoting]` is on.
    remoting: Option<(TcpListener, crate::remoting::RemotingConfig)>,
    /// Brokers' remoting addresses from their heartbeats.
    remoting_addrs: Arc<crate::remoting::BrokerRemotingAddrs>,
    service: Arc<NameserverService>,
    codec: FrameCodec,
    shutdown: CancellationToken,
    alerts: crate::alerts::AlertsConfig,
    auth: Option<Arc<meridian_proto::auth::Authenticator>>,
    /// TLS of the listeners (`[tls]`), `None` when off.
    tls: Option<Arc<TlsServer>>,
    /// The `[connections]` limits and the connections they count.
    limits: Arc<ConnectionLimiter>,
    max_inflight: usize,
    /// `[auth] enabled` and `authorization`: users' admin writes are checked against the ACL.
    authorizes: bool,
}

impl Nameserver {
    /// Validates `config`, binds the listener, opens the data dir and starts Raft; a node of a new
    /// cluster forms it (idempotent on restart). `http_addr` is the HTTP address to advertise
    /// (the caller binds HTTP), if any.
    pub async fn bind(
        mut config: NameserverConfig,
        http_addr: Option<SocketAddr>,
        metrics: Arc<NameserverMetrics>,
    ) -> Result<Nameserver, NameserverError> {
        // The IDC map lives here, so a nameserver's own sources are the local ones.
        let settings = meridian_proto::idc::IdcSettings {
            idc: config.idc.clone(),
            file: config.idc_file.clone(),
            ip: None,
        };
        let detected = meridian_proto::idc::LocalIdc::read(&settings).decide(None, &[]);
        detected.log(&format!("nameserver {}", config.node_id));
        config.idc = detected.idc;
        config.validate()?;
        config.auth.load()?;
        config.alerts.node_credentials = config.auth.node_credentials.clone();
        let tls_error = |error: meridian_proto::tls::TlsError| NameserverError::Config {
            message: error.to_string(),
        };
        let tls = TlsServer::load(&config.tls).map_err(tls_error)?;
        config.tls_client = TlsClient::from_settings(&config.tls).map_err(tls_error)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|error| NameserverError::Config {
                message: format!(
                    "cannot listen on {} ({error}): is another nameserver running there? Change `listen`",
                    config.listen
                ),
            })?;
        let remoting = if config.remoting.enabled {
            let remoting_listener =
                TcpListener::bind(config.remoting.listen)
                    .await
                    .map_err(|error| NameserverError::Config {
                        message: format!(
                            "cannot listen for RocketMQ clients on {} ({error}): is a RocketMQ nameserver running there? Change [remoting] listen",
                            config.remoting.listen
                        ),
                    })?;
            Some((remoting_listener, config.remoting.clone()))
        } else {
            None
        };
        let local_addr = listener.local_addr().map_err(|error| NameserverError::Config {
            message: format!("cannot read the bound address: {error}"),
        })?;
        let this = Node {
            addr: config.advertise_addr.clone().unwrap_or_else(|| local_addr.to_string()),
            http_addr: config
                .http_advertise_addr
                .clone()
                .or_else(|| http_addr.map(|addr| addr.to_string()))
                .unwrap_or_default(),
            idc: config.idc.clone(),
        };
        let limits = Limits {
            max_frame_size: config.max_frame_size,
            ..Limits::default()
        };
        let pool = ConnectionPool::new(TransportConfig {
            limits,
            request_timeout: config.write_timeout(),
            connect_timeout: Duration::from_secs(1),
            credentials: config.auth.node_credentials.clone(),
            tls: config.tls_client.clone(),
            source_ip: meridian_proto::transport::source_ip_for(config.listen.ip()),
        });
        let network = FramedNetwork::new(config.node_id, pool.clone());
        let raft = NameserverRaft::start(config.node_id, &config.data_dir, &config.raft, network).await?;
        if !config.join {
            raft.initialize(config.initial_members(&this)).await?;
        }
        tracing::info!(node_id = config.node_id, addr = %this.addr, http = %this.http_addr, idc = %this.idc, join = config.join, "nameserver started");
        let service = Arc::new(NameserverService::new(
            raft,
            Liveness::new(config.broker_timeout()),
            pool,
            ServiceSettings {
                write_timeout: config.write_timeout(),
                max_registration_bytes: config.max_frame_size,
                client_idc: config.client_idc.clone(),
                services: crate::service::Services {
                    tracer_http: (!config.tracer_http.is_empty()).then(|| config.tracer_http.clone()),
                    query_http: (!config.query_http.is_empty()).then(|| config.query_http.clone()),
                },
                idc_lost_after: Duration::from_millis(config.continuity.idc_lost_after_ms),
                access_key_sealer: config.auth.node_credentials.as_ref().map(|credentials| {
                    Arc::new(meridian_proto::remoting::acl::AccessKeySealer::new(&credentials.secret))
                }),
            },
            metrics,
        ));
        let auth = crate::auth::authenticator(&config.auth, &service);
        Ok(Nameserver {
            authorizes: config.auth.authorizes(),
            auth,
            listener,
            remoting,
            remoting_addrs: Arc::default(),
            service,
            codec: FrameCodec::new(config.max_frame_size),
            shutdown: CancellationToken::new(),
            alerts: crate::alerts::AlertsConfig {
                tls: config.tls_client.clone(),
                ..config.alerts.clone()
            },
            tls,
            limits: ConnectionLimiter::new(config.connections.clone()),
            max_inflight: config.max_inflight_per_connection,
        })
    }

    /// TLS of the listeners (`[tls]`), shared with the HTTP listener of the same process; the
    /// nameserver reloads its certificate while it runs.
    pub fn tls(&self) -> Option<Arc<TlsServer>> {
        self.tls.clone()
    }

    /// The bound framed-protocol address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The bound RocketMQ remoting address, when `[remoting]` is on.
    pub fn remoting_addr(&self) -> Option<SocketAddr> {
        self.remoting
            .as_ref()
            .map(|(listener, _)| listener.local_addr().expect("bound listener has an address"))
    }

    /// The service, for the HTTP API and for tests.
    pub fn service(&self) -> Arc<NameserverService> {
        self.service.clone()
    }

    /// Serves, and runs the failover controller ([`crate::controller`]), until `shutdown`
    /// completes; then stops the controller and accepting, lets running requests finish and stops
    /// Raft.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), NameserverError> {
        let Nameserver {
            listener,
            remoting,
            remoting_addrs,
            service,
            codec,
            shutdown: stop,
            alerts,
            auth,
            tls,
            limits,
            max_inflight,
            authorizes,
        } = self;
        let connections = TaskTracker::new();
        let background = TaskTracker::new();
        background.spawn(controller::run(service.clone(), stop.clone()));
        background.spawn(crate::alerts::run(service.clone(), alerts, stop.clone()));
        if let Some((remoting_listener, remoting_config)) = remoting {
            background.spawn(crate::remoting::serve(
                remoting_listener,
                service.clone(),
                remoting_addrs.clone(),
                remoting_config,
                tls.clone().map(|tls| (tls, limits.limits().handshake_timeout())),
                stop.clone(),
            ));
        }
        if let Some(tls) = &tls {
            background.spawn(tls.clone().watch(RELOAD_INTERVAL, stop.clone()));
        }
        background.close();
        let frames = Arc::new(NameserverFrames {
            authorizes,
            service: service.clone(),
            remoting_addrs: remoting_addrs.clone(),
        });
        let settings = ConnectionSettings {
            codec,
            max_inflight,
            max_pending_response_bytes: None,
            auth,
            tls,
            limits,
        };
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
                            stop.clone(),
                        ));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        stop.cancel();
        background.wait().await;
        connections.close();
        if tokio::time::timeout(Duration::from_secs(10), connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("nameserver connections did not drain within 10 s; stopping anyway");
        }
        service.shutdown().await
    }
}

/// How a request is answered: now, or as a task of the connection.
type Answer = serve::Answer<ApiError>;

fn decode<T: Message + Default>(what: &str, body: Bytes) -> Result<T, ApiError> {
    T::decode(body).map_err(|error| ApiError::new(ErrorCode::MalformedFrame, format!("malformed {what}: {error}")))
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::new(ErrorCode::MalformedFrame, format!("malformed {what} (JSON): {error}")))
}

fn json(value: &impl serde::Serialize) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|error| ApiError::new(ErrorCode::Internal, format!("cannot encode the answer: {error}")))
}

fn answer(
    service: &Arc<NameserverService>,
    remoting_addrs: &Arc<crate::remoting::BrokerRemotingAddrs>,
    code: RequestCode,
    body: Bytes,
) -> Answer {
    service
        .metrics()
        .requests
        .get_or_create(&RequestLabels { request: code.as_str() })
        .inc();
    match code {
        RequestCode::TopicRoute => Answer::Now(
            decode::<TopicRouteRequest>("route request", body)
                .and_then(|request| service.route(&request.topic))
                .map(|route| Bytes::from(route.encode_to_vec())),
        ),
        RequestCode::BrokerHeartbeat => {
            service.metrics().broker_bytes.inc_by(body.len() as u64);
            let heartbeat = match decode::<BrokerHeartbeat>("broker heartbeat", body) {
                Ok(heartbeat) => heartbeat,
                Err(error) => return Answer::Now(Err(error)),
            };
            remoting_addrs.record(&heartbeat);
            let service = service.clone();
            // A slave's heartbeat completes at once and is answered inline; a master's waits for
            // a quorum to confirm this node's leadership, so it runs as a task.
            Answer::now_or_later(async move {
                let response = service.heartbeat(&heartbeat).await?;
                Ok(Bytes::from(response.encode_to_vec()))
            })
        }
        RequestCode::BrokerMetadata => Answer::Now(
            decode::<BrokerMetadataRequest>("broker metadata request", body)
                .and_then(|request| service.broker_metadata(&request.group))
                .map(|metadata| Bytes::from(metadata.encode_to_vec())),
        ),
        RequestCode::NameserverRead => Answer::Now(
            decode_json::<Query>("nameserver query", &body)
                .and_then(|query| service.read(&query))
                .and_then(|value| json(&value)),
        ),
        RequestCode::IdcLookup => Answer::Now(
            decode::<IdcLookupRequest>("IDC lookup", body)
                .and_then(|request| service.idc_lookup(&request.ip))
                .map(|response| Bytes::from(response.encode_to_vec())),
        ),
        RequestCode::RegisterBroker => {
            service.metrics().broker_bytes.inc_by(body.len() as u64);
            let service = service.clone();
            let remoting_addrs = remoting_addrs.clone();
            Answer::Later(Box::pin(async move {
                let registration = decode::<BrokerRegistration>("broker registration", body)?;
                if let Some(heartbeat) = &registration.heartbeat {
                    remoting_addrs.record(heartbeat);
                }
                let response = service.register(registration).await?;
                Ok(Bytes::from(response.encode_to_vec()))
            }))
        }
        RequestCode::NameserverWrite => {
            let service = service.clone();
            Answer::Later(Box::pin(async move {
                let request = decode_json::<WriteRequest>("nameserver write", &body)?;
                json(&service.write(request).await?)
            }))
        }
        RequestCode::RaftAppend | RequestCode::RaftVote | RequestCode::RaftSnapshot => {
            let service = service.clone();
            Answer::Later(Box::pin(async move {
                serve_raft_rpc(service.raft(), code, body)
                    .await
                    .map_err(|error| ApiError::new(error.code(), error.to_string()))
            }))
        }
        RequestCode::AuthHello | RequestCode::AuthProof => Answer::Now(Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "login requests are answered by the connection loop, never here".to_owned(),
        ))),
        RequestCode::Send
        | RequestCode::Pull
        | RequestCode::CommitOffset
        | RequestCode::QueryOffset
        | RequestCode::QueueInfo
        | RequestCode::SearchOffset
        | RequestCode::TraceReport
        | RequestCode::SendBack
        | RequestCode::ResetOffset
        | RequestCode::EndTransaction
        | RequestCode::DeadLetterResend
        | RequestCode::CheckTransactions
        | RequestCode::CreateTopic
        | RequestCode::ConsumerHeartbeat
        | RequestCode::ConsumerList
        | RequestCode::ConsumerLeave
        | RequestCode::LockQueues
        | RequestCode::UnlockQueues
        | RequestCode::ProducerHeartbeat
        | RequestCode::ReplicaFetch => Answer::Now(Err(ApiError::new(
            ErrorCode::UnsupportedRequest,
            format!(
                "{} is a broker request; send it to a broker (a nameserver answers routes: `meridian topic describe`)",
                code.as_str()
            ),
        ))),
    }
}

/// The nameserver's side of a framed connection: the loop itself is [`serve::serve_connection`].
struct NameserverFrames {
    /// `[auth] enabled` and `authorization`: users' writes are checked against the ACL.
    authorizes: bool,
    service: Arc<NameserverService>,
    remoting_addrs: Arc<crate::remoting::BrokerRemotingAddrs>,
}

impl FrameService for NameserverFrames {
    type Error = ApiError;

    fn answer(&self, code: RequestCode, body: Bytes, _peer: SocketAddr) -> Answer {
        answer(&self.service, &self.remoting_addrs, code, body)
    }

    fn answer_as(
        &self,
        principal: &meridian_proto::auth::Principal,
        code: RequestCode,
        body: Bytes,
        peer: SocketAddr,
    ) -> Answer {
        use meridian_proto::auth::Principal;
        // A write from anything but a node forwarding it is audited with who sent it and from
        // where, whatever origin it claims.
        if code != RequestCode::NameserverWrite || principal.is_node() {
            return self.answer(code, body, peer);
        }
        // Without authentication (anonymous), a write another nameserver forwarded keeps the
        // origin the first node recorded.
        let anonymous = *principal == Principal::Anonymous;
        let origin = crate::state::Origin {
            from: peer.to_string(),
            user: match principal {
                Principal::User(user) => Some(user.clone()),
                _ => None,
            },
        };
        let service = self.service.clone();
        let authorizes = self.authorizes;
        let user = origin.user.clone();
        service
            .metrics()
            .requests
            .get_or_create(&RequestLabels { request: code.as_str() })
            .inc();
        Answer::Later(Box::pin(async move {
            let mut request = decode_json::<WriteRequest>("nameserver write", &body)?;
            if authorizes && let Some(user) = &user {
                service
                    .raft()
                    .read_state(|state| match &request.op {
                        crate::service::WriteOp::Command { command } => {
                            crate::state::acl::authorize_command(&state.acl(), user, command)
                        }
                        crate::service::WriteOp::AddNode { .. } | crate::service::WriteOp::RemoveNode { .. } => {
                            crate::state::acl::require_super_user(
                                &state.acl(),
                                user,
                                "change the nameservers' membership",
                            )
                        }
                    })
                    .map_err(|denied| ApiError::new(ErrorCode::PermissionDenied, denied))?;
            }
            if !(anonymous && request.forwarded) {
                crate::service::attribute(&mut request.op, origin);
            }
            json(&service.write(request).await?)
        }))
    }

    fn error_frame(&self, request_id: u64, error: ApiError) -> Frame {
        self.service
            .metrics()
            .errors
            .get_or_create(&ErrorLabels {
                code: error.code.as_str(),
            })
            .inc();
        if error.code == ErrorCode::Internal {
            tracing::error!(%error, "request failed");
        }
        Frame::error(request_id, error.code, error.message)
    }

    /// A well-framed request with a bad body gets an error and changes nothing; the connection
    /// stays open.
    fn after_error(
        &self,
        peer: SocketAddr,
        code: RequestCode,
        error: &ApiError,
        _oneway: bool,
        _deferred: bool,
    ) -> AfterError {
        if error.code == ErrorCode::MalformedFrame {
            self.service.metrics().malformed_frames.inc();
            tracing::warn!(%peer, code = code.as_str(), "malformed request body");
        }
        AfterError::Answer
    }

    fn unsupported(&self, _peer: SocketAddr, request_id: u64, code: u32) -> (Frame, AfterError) {
        let message = format!(
            "request code {code} is not supported by this nameserver (protocol version {PROTOCOL_VERSION}); upgrade it or use a matching client"
        );
        (
            Frame::error(request_id, ErrorCode::UnsupportedRequest, message),
            AfterError::Answer,
        )
    }

    fn malformed_frame(&self) {
        self.service.metrics().malformed_frames.inc();
    }

    fn connection_opened(&self, _peer: SocketAddr) {
        self.service.metrics().connections.inc();
    }

    fn connection_closed(&self, _peer: SocketAddr) {
        self.service.metrics().connections.dec();
    }
}

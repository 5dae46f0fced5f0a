//! The serving commands: `meridian dev` (everything in one process), `meridian broker` and
//! `meridian nameserver`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use meridian_broker::metrics::BrokerMetrics;
use meridian_broker::store::FlushMode;
use meridian_broker::{Broker, BrokerConfig};
use meridian_nameserver::metrics::NameserverMetrics;
use meridian_nameserver::{Nameserver, NameserverConfig};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::signal::shutdown_signal;
use crate::{config, http};

/// Arguments of `meridian dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where all data lives (DATA_DIR/nameserver, DATA_DIR/broker).
    #[arg(long, env = "MERIDIAN_DATA_DIR", default_value = "meridian-data")]
    data_dir: PathBuf,
    /// Nameserver listen address (routes, governance, broker heartbeats).
    #[arg(long, default_value = "127.0.0.1:7800")]
    nameserver_listen: SocketAddr,
    /// Broker listen address.
    #[arg(long, default_value = "127.0.0.1:7911")]
    broker_listen: SocketAddr,
    /// HTTP listen address (admin API and /metrics).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// When a send counts as stored: `async` (page cache) or `sync` (synced to disk).
    #[arg(long, value_parser = ["async", "sync"])]
    flush_mode: Option<String>,
    /// Broker config file for anything else (flags above win over it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Do not archive (by default `meridian dev` archives sealed segments into DATA_DIR/archive).
    #[arg(long)]
    no_archive: bool,
    /// Once ready, write the bound addresses here as JSON (`{"nameserver": ..., "broker": ...,
    /// "http": ..., "pid": ...}`), so a caller can pass port 0 and learn the ports.
    #[arg(long, env = "MERIDIAN_READY_FILE")]
    ready_file: Option<PathBuf>,
    /// Where RocketMQ 4.x clients find the nameserver (their `namesrvAddr`).
    #[arg(long, default_value = "127.0.0.1:9876")]
    rocketmq_nameserver_listen: SocketAddr,
    /// Where RocketMQ 4.x clients reach the broker (the route names this address).
    #[arg(long, default_value = "127.0.0.1:10911")]
    rocketmq_broker_listen: SocketAddr,
    /// The broker's RocketMQ VIP channel, which Java clients older than 4.5.1 send to (the broker
    /// port − 2, RocketMQ's 10909). Default: `--rocketmq-broker-listen`'s port − 2 (port 0 when that
    /// is below 2).
    #[arg(long)]
    rocketmq_broker_vip_listen: Option<SocketAddr>,
    /// Do not serve RocketMQ clients (no remoting listeners).
    #[arg(long)]
    no_rocketmq: bool,
    /// Alert rules, webhooks and evaluation interval (TOML, the keys of the nameserver's
    /// `[alerts]` table; `docs/configuration.md`). Default: the default rules, no webhooks.
    #[arg(long)]
    alerts: Option<PathBuf>,
    /// Require every connection to log in (`[auth] enabled`): makes DATA_DIR/node.secret if
    /// missing, creates (or rotates) the user `admin` and prints its MERIDIAN_USER and
    /// MERIDIAN_SECRET.
    #[arg(long)]
    auth: bool,
    /// Require TLS on every listener (`[tls] mode = "required"`): makes a self-signed CA and a node
    /// certificate in DATA_DIR/tls if missing and prints the MERIDIAN_TLS_CA clients need.
    #[arg(long)]
    tls: bool,
}

/// Arguments of `meridian broker`.
#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// Broker config file (TOML); defaults apply to anything it leaves out.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Once listening, write the bound addresses here as JSON (`{"broker": ..., "http": ...,
    /// "pid": ...}`), so a config may say port 0 and a caller learn the ports.
    #[arg(long, env = "MERIDIAN_READY_FILE")]
    ready_file: Option<PathBuf>,
}

/// Arguments of `meridian nameserver`.
#[derive(Debug, clap::Args)]
pub struct NameserverArgs {
    /// Nameserver config file (TOML); defaults apply to anything it leaves out.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Once listening, write the bound addresses here as JSON (`{"nameserver": ..., "http":
    /// ..., "pid": ...}`), so a config may say port 0 and a caller learn the ports.
    #[arg(long, env = "MERIDIAN_READY_FILE")]
    ready_file: Option<PathBuf>,
}

/// Writes the ready file (see `--ready-file`): `addrs` and the pid as JSON, through a temporary
/// file and a rename, so a reader never sees half of it.
fn write_ready_file(path: Option<&std::path::Path>, mut addrs: serde_json::Value) -> Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    addrs["pid"] = std::process::id().into();
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, serde_json::to_vec(&addrs)?)
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("writing the ready file {}", path.display()))
}

/// What one process serves.
#[derive(Default)]
struct Services {
    nameserver: Option<Nameserver>,
    broker: Option<Broker>,
    tracer: Option<meridian_tracer::Tracer>,
    http: Option<(tokio::net::TcpListener, axum::Router)>,
    /// TLS of the HTTP listener (the broker's or nameserver's `[tls]`), `None`: plaintext.
    http_tls: Option<Arc<meridian_proto::tls::TlsServer>>,
    /// The archiver of the broker's segments (`meridian dev`).
    archiver: Option<meridian_archive::service::ArchiverService>,
    /// The archive's manifests, for the archive steps of trace timelines (`meridian dev`).
    archive_steps: Option<Arc<crate::archive_steps::ManifestSteps>>,
}

/// Runs `services`, then `ready` (the banner), until a shutdown signal; then stops the broker
/// before the nameserver, so the broker's last heartbeats still find it.
async fn run(services: Services, ready: impl std::future::Future<Output = ()>) -> Result<()> {
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    if let Some((listener, router)) = services.http {
        let stopped = stop.clone();
        let tls = services.http_tls.clone();
        tasks.spawn(async move {
            if let Err(error) = http::serve_http(listener, router, tls, stopped.cancelled_owned()).await {
                tracing::error!(%error, "http listener failed");
            }
        });
    }
    // The tracer stops first: its last commit of offsets still finds the broker.
    let tracer_stop = CancellationToken::new();
    let tracer_task = services.tracer.map(|tracer| {
        let stopped = tracer_stop.clone();
        tasks.spawn(async move { tracer.run(stopped.cancelled_owned()).await })
    });
    if let Some(archiver) = services.archiver {
        // An error it cannot retry stops only the archiver; it logs why.
        let stopped = stop.clone();
        tasks.spawn(async move {
            let _ = archiver.run(stopped.cancelled_owned()).await;
        });
    }
    if let Some(steps) = services.archive_steps {
        tasks.spawn(steps.run(stop.clone()));
    }
    let broker_stop = CancellationToken::new();
    let broker_task = services.broker.map(|broker| {
        let stopped = broker_stop.clone();
        tasks.spawn(async move { broker.run(stopped.cancelled_owned()).await })
    });
    let nameserver_stop = CancellationToken::new();
    let nameserver_task = services.nameserver.map(|nameserver| {
        let stopped = nameserver_stop.clone();
        tasks.spawn(async move { nameserver.run(stopped.cancelled_owned()).await })
    });
    tasks.close();
    // One listener from before the banner to the end: a signal right after "ready" is not lost.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    tokio::select! {
        _ = ready => (&mut shutdown).await,
        _ = &mut shutdown => {}
    }
    stop.cancel();
    tracer_stop.cancel();
    let mut result = Ok(());
    if let Some(task) = tracer_task {
        result = task.await.context("tracer task panicked")?.context("tracer failed");
    }
    broker_stop.cancel();
    if let Some(task) = broker_task {
        let stopped = task.await.context("broker task panicked")?.context("broker failed");
        result = result.and(stopped);
    }
    nameserver_stop.cancel();
    if let Some(task) = nameserver_task {
        let stopped = task
            .await
            .context("nameserver task panicked")?
            .context("nameserver failed");
        result = result.and(stopped);
    }
    tasks.wait().await;
    result
}

/// `meridian dev`: a single-node nameserver and a broker governed by it, one HTTP listener.
/// The data center of an all-in-one node (`MERIDIAN_IDC` still wins): one node is one data center.
const DEV_IDC: &str = "local";

pub async fn dev(args: DevArgs) -> Result<()> {
    let mut registry = Registry::default();
    let http_listener = http::bind(args.http_listen).await?;
    let http_addr = http_listener.local_addr()?;
    let mut broker_config: BrokerConfig = config::load("broker", args.config.as_deref())?;
    // The archiver (and the query service over its archive) runs unless `--no-archive`.
    let with_archive = !args.no_archive || broker_config.archive.enabled;

    let dev_tls = if args.tls {
        let ips = [
            args.nameserver_listen.ip(),
            args.broker_listen.ip(),
            args.http_listen.ip(),
            args.rocketmq_nameserver_listen.ip(),
            args.rocketmq_broker_listen.ip(),
        ];
        Some(crate::dev_tls::ensure(&args.data_dir, &ips)?)
    } else {
        None
    };
    let node_secret_file = if args.auth {
        Some(crate::user_cmds::ensure_node_secret(&args.data_dir)?)
    } else {
        None
    };
    let nameserver_config = NameserverConfig {
        auth: meridian_nameserver::auth::AuthConfig {
            enabled: args.auth,
            node_secret_file: node_secret_file.clone(),
            ..Default::default()
        },
        listen: args.nameserver_listen,
        http_listen: None,
        data_dir: args.data_dir.join("nameserver"),
        idc: DEV_IDC.to_owned(),
        // Clients of an all-in-one node are in its data center: no rule needed, no warning.
        client_idc: DEV_IDC.to_owned(),
        // The tracer and the query service share the one HTTP listener.
        tracer_http: http_addr.to_string(),
        query_http: if with_archive {
            http_addr.to_string()
        } else {
            String::new()
        },
        remoting: meridian_nameserver::remoting::RemotingConfig {
            enabled: !args.no_rocketmq,
            listen: args.rocketmq_nameserver_listen,
            ..Default::default()
        },
        alerts: {
            let mut alerts: meridian_nameserver::alerts::AlertsConfig = config::load("alerts", args.alerts.as_deref())?;
            // The broker's lag report is on the one HTTP listener.
            if alerts.broker_http.is_empty() {
                alerts.broker_http = vec![http_addr.to_string()];
            }
            alerts
        },
        tls: dev_tls.as_ref().map(|tls| tls.settings.clone()).unwrap_or_default(),
        ..NameserverConfig::default()
    };
    let nameserver_metrics = Arc::new(NameserverMetrics::register(&mut registry));
    let nameserver = Nameserver::bind(nameserver_config, Some(http_addr), nameserver_metrics)
        .await
        .context("starting the nameserver")?;
    let nameserver_addr = nameserver.local_addr();
    let rocketmq_nameserver = nameserver.remoting_addr();

    if args.auth {
        broker_config.auth.enabled = true;
        broker_config.auth.node_secret_file = node_secret_file.clone();
    }
    if let Some(tls) = &dev_tls {
        broker_config.tls = tls.settings.clone();
    }
    broker_config.data_dir = args.data_dir.join("broker");
    broker_config.listen = args.broker_listen;
    broker_config.http_listen = None;
    broker_config.nameservers = vec![nameserver_addr.to_string()];
    if !args.no_rocketmq {
        broker_config.remoting.enabled = true;
        broker_config.remoting.listen = args.rocketmq_broker_listen;
        broker_config.remoting.vip_listen = Some(args.rocketmq_broker_vip_listen.unwrap_or_else(|| {
            let main = args.rocketmq_broker_listen;
            SocketAddr::new(main.ip(), main.port().saturating_sub(2))
        }));
    }
    if broker_config.idc.is_empty() {
        broker_config.idc = DEV_IDC.to_owned();
    }
    // Approvals reach the broker on its next heartbeat: keep that short on a laptop.
    broker_config.heartbeat_interval_ms = broker_config.heartbeat_interval_ms.min(1000);
    if let Some(mode) = args.flush_mode.as_deref() {
        broker_config.store.flush_mode = if mode == "sync" {
            FlushMode::Sync
        } else {
            FlushMode::Async
        };
    }
    // The archiver runs inside `meridian dev`, into DATA_DIR/archive unless the config says
    // otherwise; `--no-archive` turns it off.
    if !args.no_archive {
        broker_config.archive.enabled = true;
    }
    let query_archive = broker_config.archive.enabled.then(|| {
        let default_dir = meridian_broker::retention::default_archive_dir(&broker_config.data_dir);
        (broker_config.archive.clone(), default_dir)
    });
    let commitlog_dir = broker_config.data_dir.join("commitlog");
    let broker_idc = broker_config.idc.clone();
    let flush_mode = broker_config.store.flush_mode;
    let broker_name = broker_config.broker_name.clone();
    let archiver_broker = broker_config.archive.enabled.then(|| broker_config.clone());
    let broker_metrics = Arc::new(BrokerMetrics::register(&mut registry));
    let broker = Broker::bind(broker_config, broker_metrics)
        .await
        .context("starting the broker")?;
    // The archiver asks this process's nameserver who is master and this broker how far its
    // log is confirmed.
    let archiver = match archiver_broker {
        Some(config) => {
            let local = Some((nameserver.service(), broker.store()));
            let service_config = crate::archive_cmds::service_config(&config, local, false)?;
            Some(meridian_archive::service::ArchiverService::new(service_config).context("starting the archiver")?)
        }
        None => None,
    };
    let broker_addr = broker.local_addr();
    let rocketmq_broker = broker.remoting_addr();
    let rocketmq_broker_vip = broker.remoting_vip_addr();
    let tracer_config = meridian_tracer::TracerConfig {
        nameservers: vec![nameserver_addr.to_string()],
        data_dir: args.data_dir.join("tracer"),
        http_listen: None,
        // The tracer is part of this node: it logs in as one.
        credentials: match &node_secret_file {
            Some(path) => Some(meridian_proto::auth::Credentials::node(
                meridian_proto::auth::read_node_secret(path).map_err(anyhow::Error::msg)?,
            )),
            None => None,
        },
        tls: match &dev_tls {
            Some(tls) => meridian_proto::tls::TlsClient::from_settings(&tls.settings)?,
            None => None,
        },
        ..meridian_tracer::TracerConfig::default()
    };
    let tracer_metrics = Arc::new(meridian_tracer::TracerMetrics::register(&mut registry));
    let mut tracer = meridian_tracer::Tracer::open(tracer_config, tracer_metrics).context("opening the trace index")?;
    // Timelines show when the archive took each message (from the archive's manifests).
    let archive_steps = match &query_archive {
        Some((archive, default_dir)) => {
            let store = meridian_archive::store::ArchiveStore::open(archive, default_dir)
                .context("opening the archive store")?;
            let steps = crate::archive_steps::ManifestSteps::new(store);
            tracer = tracer.with_archive(steps.clone());
            Some(steps)
        }
        None => None,
    };
    // Authenticated HTTP callers see traces and SQL rows of the topics the ACL lets them.
    let local_acl: Arc<dyn meridian_proto::acl::AclSource> =
        Arc::new(meridian_nameserver::auth::LocalAcl::new(nameserver.service()));
    tracer = tracer.with_acl(local_acl.clone());
    let tracer_router = tracer.router();
    // The query service reads the archive the archiver writes (nothing to read without one).
    let query_router = match &query_archive {
        Some((archive, default_dir)) => {
            // `messages` is the archive plus what the broker stored since: SQL sees a message
            // as soon as it is stored (docs/query.md, "The live tail").
            let store = broker.store();
            let tail = meridian_query::tail::TailSource {
                broker: broker_name.clone(),
                idc: (!broker_idc.is_empty()).then(|| broker_idc.clone()),
                commitlog_dir: commitlog_dir.clone(),
                stored_until: Arc::new(move || store.committed_offset()),
            };
            let service = crate::sql_cmds::open_service(
                archive,
                default_dir,
                meridian_query::QueryConfig::default(),
                &mut registry,
                vec![tail],
            )
            .await?;
            service.set_acl_source(local_acl.clone());
            meridian_query::http::router(service)
        }
        None => axum::Router::new(),
    };
    let with_query = query_archive.is_some();
    let router = meridian_broker::http::router(registry, broker_name.clone(), &broker)
        .merge(meridian_broker::console_api::console_router(
            &broker,
            broker_name,
            vec![nameserver_addr.to_string()],
        ))
        .merge(meridian_nameserver::http::router(nameserver.service()))
        .merge(tracer_router)
        .merge(query_router)
        // The web console at `/`, reading the APIs above over this same listener.
        .merge(meridian_ui::router(meridian_ui::ConsoleConfig {
            tls: match &dev_tls {
                Some(tls) => meridian_proto::tls::TlsClient::from_settings(&tls.settings)?,
                None => None,
            },
            ..meridian_ui::ConsoleConfig::single(&http_addr.to_string(), with_query)
        }));
    let http_tls = broker.tls();
    let scheme = if http_tls.is_some() { "https" } else { "http" };
    let ca_file = dev_tls.as_ref().map(|tls| tls.ca_file.clone());

    // `--auth`: every HTTP route but the probes needs a user or a session (docs/security.md).
    let router = match &node_secret_file {
        Some(path) => {
            let node_secret = meridian_proto::auth::read_node_secret(path).map_err(anyhow::Error::msg)?;
            let users = meridian_nameserver::auth::user_directory(&nameserver.service());
            let auth = meridian_proto::http_auth::HttpAuthenticator::new(Some(&node_secret), users);
            meridian_proto::http_layer::protect(router, Arc::new(auth))
        }
        None => router,
    };

    let service = nameserver.service();
    let replication = broker.replication();
    let ready_file = args.ready_file.clone();
    let with_auth = args.auth;
    let ready = async move {
        // "ready" means usable: the broker has registered and heartbeated, so topics can be
        // placed on it and routes name it, and the nameserver elected it master of its group.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let broker_alive = || {
            service
                .brokers()
                .iter()
                .any(|group| group.members.iter().any(|member| member.alive))
                && replication.check_writable().is_ok()
        };
        while !broker_alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        println!("meridian dev {}: all-in-one local node", env!("CARGO_PKG_VERSION"));
        println!("  data dir   {}", args.data_dir.display());
        println!("  nameserver {nameserver_addr} (single node; topics and groups need approval)");
        println!(
            "  broker     {broker_addr} (flush: {})",
            if flush_mode == FlushMode::Sync { "sync" } else { "async" }
        );
        if let (Some(nameserver), Some(broker)) = (rocketmq_nameserver, rocketmq_broker) {
            println!("  rocketmq-nameserver {nameserver} (RocketMQ 4.x clients: namesrvAddr)");
            match rocketmq_broker_vip {
                Some(vip) => println!("  rocketmq-broker     {broker} (VIP channel {vip})"),
                None => println!("  rocketmq-broker     {broker}"),
            }
        }
        println!(
            "  http       {scheme}://{http_addr}  (/api/health, /api/topics, /api/cluster, /api/traces, /metrics)"
        );
        println!("  console    {scheme}://{http_addr}/");
        if with_query {
            println!("  query      SQL over the archive and the live log: POST /api/sql, or `meridian sql`");
        }
        println!(
            "  tracer     indexing the trace topic into {}",
            args.data_dir.join("tracer").display()
        );
        if let Some(ca_file) = &ca_file {
            let ca_file = std::path::absolute(ca_file).unwrap_or_else(|_| ca_file.clone());
            println!("  tls        required on every listener; clients trust the dev CA:");
            println!("export MERIDIAN_TLS_CA={}", ca_file.display());
        }
        if with_auth {
            match crate::user_cmds::dev_admin(&service).await {
                Ok(secret) => {
                    println!("  auth       on: every connection logs in; the admin's secret is shown only this once:");
                    println!("export MERIDIAN_USER=admin");
                    println!("export MERIDIAN_SECRET={secret}");
                }
                Err(error) => tracing::error!(error = %format!("{error:#}"), "the admin user was not created"),
            }
        }
        if let Err(error) = write_ready_file(
            ready_file.as_deref(),
            serde_json::json!({
                "nameserver": nameserver_addr,
                "broker": broker_addr,
                "http": http_addr,
                "rocketmq_nameserver": rocketmq_nameserver,
                "rocketmq_broker": rocketmq_broker,
                "rocketmq_broker_vip": rocketmq_broker_vip,
            }),
        ) {
            tracing::error!(error = %format!("{error:#}"), "the ready file was not written");
        }
        println!("ready; press Ctrl-C to stop");
    };
    run(
        Services {
            nameserver: Some(nameserver),
            broker: Some(broker),
            tracer: Some(tracer),
            http: Some((http_listener, router)),
            http_tls,
            archiver,
            archive_steps,
        },
        ready,
    )
    .await
}

/// `meridian broker --config FILE`.
pub async fn broker(args: BrokerArgs) -> Result<()> {
    let broker_config: BrokerConfig = config::load("broker", args.config.as_deref())?;
    let mut registry = Registry::default();
    let metrics = Arc::new(BrokerMetrics::register(&mut registry));
    let name = broker_config.broker_name.clone();
    let http_listen = broker_config.http_listen;
    let nameservers = broker_config.nameservers.clone();
    let broker = Broker::bind(broker_config, metrics)
        .await
        .context("starting the broker")?;
    let http_listener = match http_listen {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    write_ready_file(
        args.ready_file.as_deref(),
        serde_json::json!({
            "broker": broker.local_addr(),
            "http": http_listener.as_ref().map(|listener| listener.local_addr()).transpose()?,
        }),
    )?;
    println!("meridian broker {name} listening on {}", broker.local_addr());
    let http = match http_listener {
        Some(listener) => {
            println!(
                "  http http://{}  (/api/health, /api/broker/topics, /metrics)",
                listener.local_addr()?
            );
            let router = meridian_broker::http::router(registry, name.clone(), &broker)
                .merge(meridian_broker::console_api::console_router(&broker, name, nameservers));
            let router = match broker.http_authenticator() {
                Some(auth) => meridian_proto::http_layer::protect(router, auth),
                None => router,
            };
            Some((listener, router))
        }
        None => None,
    };
    let http_tls = broker.tls();
    run(
        Services {
            broker: Some(broker),
            http,
            http_tls,
            ..Services::default()
        },
        std::future::ready(()),
    )
    .await
}

/// `meridian nameserver --config FILE`.
pub async fn nameserver(args: NameserverArgs) -> Result<()> {
    let config: NameserverConfig = config::load("nameserver", args.config.as_deref())?;
    let mut registry = Registry::default();
    let metrics = Arc::new(NameserverMetrics::register(&mut registry));
    let http_listener = match config.http_listen {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    let http_addr = http_listener
        .as_ref()
        .map(|listener| listener.local_addr())
        .transpose()?;
    let node_id = config.node_id;
    let mut http_auth_config = config.auth.clone();
    let nameserver = Nameserver::bind(config, http_addr, metrics)
        .await
        .context("starting the nameserver")?;
    write_ready_file(
        args.ready_file.as_deref(),
        serde_json::json!({"nameserver": nameserver.local_addr(), "http": http_addr}),
    )?;
    println!(
        "meridian nameserver node {node_id} listening on {}",
        nameserver.local_addr()
    );
    // Bind already checked the node secret file; this reads it again for the HTTP side.
    http_auth_config.load()?;
    let http_auth = meridian_nameserver::auth::http_authenticator(&http_auth_config, &nameserver.service());
    let http = http_listener.map(|listener| {
        let router =
            meridian_nameserver::http::router(nameserver.service()).merge(http::metrics_router(Arc::new(registry)));
        let router = match http_auth {
            Some(auth) => meridian_proto::http_layer::protect(router, auth),
            None => router,
        };
        (listener, router)
    });
    if let Some(addr) = http_addr {
        println!("  http http://{addr}  (/api/cluster, /api/topics, /api/groups, /metrics)");
    }
    let http_tls = nameserver.tls();
    run(
        Services {
            nameserver: Some(nameserver),
            http,
            http_tls,
            ..Services::default()
        },
        std::future::ready(()),
    )
    .await
}

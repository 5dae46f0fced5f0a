//! The serving commands: `meridian dev` (everything in one process) and `meridian broker`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use meridian_broker::metrics::BrokerMetrics;
use meridian_broker::store::FlushMode;
use meridian_broker::{Broker, BrokerConfig};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Endpoints, config, http, shutdown_signal};

/// Arguments of `meridian dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where all data lives (the broker uses DATA_DIR/broker).
    #[arg(long, env = "MERIDIAN_DATA_DIR", default_value = "meridian-data")]
    data_dir: PathBuf,
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
}

/// Arguments of `meridian broker`.
#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// Broker config file (TOML); defaults apply to anything it leaves out.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Runs a broker and its HTTP listener until a shutdown signal.
async fn run_broker(
    broker_config: BrokerConfig,
    http_listen: Option<SocketAddr>,
    banner: impl FnOnce(&Endpoints),
) -> Result<()> {
    let mut registry = Registry::default();
    let metrics = Arc::new(BrokerMetrics::register(&mut registry));
    let broker_name = broker_config.broker_name.clone();
    let broker = Broker::bind(broker_config, metrics)
        .await
        .context("starting the broker")?;
    let broker_addr = broker.local_addr();
    let http_listener = match http_listen {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    let http_addr = http_listener
        .as_ref()
        .map(|listener| listener.local_addr())
        .transpose()?;
    banner(&Endpoints {
        broker: broker_addr,
        http: http_addr,
    });

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    if let Some(listener) = http_listener {
        let router = http::router(Arc::new(registry), broker_name, broker.store());
        let stopped = stop.clone();
        tasks.spawn(async move {
            if let Err(error) = http::serve(listener, router, stopped.cancelled_owned()).await {
                tracing::error!(%error, "http listener failed");
            }
        });
    }
    let broker_stop = stop.clone();
    let broker_task = tasks.spawn(async move { broker.run(broker_stop.cancelled_owned()).await });
    tasks.close();
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = stop.cancelled() => {}
    }
    stop.cancel();
    let result = broker_task.await.context("broker task panicked")?;
    tasks.wait().await;
    result.context("broker failed")?;
    Ok(())
}

/// `meridian dev`.
pub async fn dev(args: DevArgs) -> Result<()> {
    let mut broker_config: BrokerConfig = config::load("broker", args.config.as_deref())?;
    broker_config.data_dir = args.data_dir.join("broker");
    broker_config.listen = args.broker_listen;
    broker_config.http_listen = None;
    if let Some(mode) = args.flush_mode.as_deref() {
        broker_config.store.flush_mode = if mode == "sync" {
            FlushMode::Sync
        } else {
            FlushMode::Async
        };
    }
    let flush_mode = broker_config.store.flush_mode;
    run_broker(broker_config, Some(args.http_listen), |endpoints| {
        println!("meridian dev {}: all-in-one local node", env!("CARGO_PKG_VERSION"));
        println!("  data dir   {}", args.data_dir.display());
        println!(
            "  broker     {} (flush: {})",
            endpoints.broker,
            if flush_mode == FlushMode::Sync { "sync" } else { "async" }
        );
        if let Some(http) = endpoints.http {
            println!("  http       http://{http}  (/api/health, /api/topics, /metrics)");
        }
        println!("ready; press Ctrl-C to stop");
    })
    .await
}

/// `meridian broker --config FILE`.
pub async fn broker(args: BrokerArgs) -> Result<()> {
    let broker_config: BrokerConfig = config::load("broker", args.config.as_deref())?;
    let http_listen = broker_config.http_listen;
    let name = broker_config.broker_name.clone();
    run_broker(broker_config, http_listen, |endpoints| {
        println!("meridian broker {name} listening on {}", endpoints.broker);
        if let Some(http) = endpoints.http {
            println!("  http http://{http}  (/api/health, /api/topics, /metrics)");
        }
    })
    .await
}

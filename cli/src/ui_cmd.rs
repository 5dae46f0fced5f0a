//! `meridian ui`: the web console on its own listener, reading a cluster's services over their
//! HTTP APIs (the console itself is the `meridian-ui` crate; `meridian dev` mounts the same
//! router at `/` of its one listener).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;

/// Arguments of `meridian ui`.
#[derive(Debug, clap::Args)]
pub struct UiArgs {
    /// Where the console listens.
    #[arg(long, env = "MERIDIAN_UI_LISTEN", default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// A nameserver's HTTP admin API (any node), host:port.
    #[arg(long, env = "MERIDIAN_UI_NAMESERVER_HTTP", default_value = "127.0.0.1:8082")]
    nameserver_http: String,
    /// A broker's HTTP API (health, offsets); repeat for each broker.
    #[arg(long = "broker-http", env = "MERIDIAN_UI_BROKER_HTTP", value_delimiter = ',')]
    brokers_http: Vec<String>,
    /// The tracer's HTTP API (Message & Trace page).
    #[arg(long, env = "MERIDIAN_UI_TRACER_HTTP")]
    tracer_http: Option<String>,
    /// The query service's HTTP API (SQL, forecasts, volume charts).
    #[arg(long, env = "MERIDIAN_UI_QUERY_HTTP")]
    query_http: Option<String>,
    /// Deadline of one call to a service, in milliseconds (SQL gets four times as long).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// `meridian ui`: serves the console until Ctrl-C or SIGTERM.
pub async fn ui(args: UiArgs) -> Result<()> {
    let listener = crate::http::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let config = meridian_ui::ConsoleConfig {
        nameserver: args.nameserver_http,
        brokers: args.brokers_http,
        tracer: args.tracer_http,
        query: args.query_http,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
    };
    println!("meridian ui {}: console on http://{addr}", env!("CARGO_PKG_VERSION"));
    println!("  nameserver {}", config.nameserver);
    println!(
        "  brokers    {}",
        if config.brokers.is_empty() {
            "(none: --broker-http ADDR for health and lag)".to_owned()
        } else {
            config.brokers.join(", ")
        }
    );
    println!(
        "  tracer     {}",
        config.tracer.as_deref().unwrap_or("(none: --tracer-http ADDR)")
    );
    println!(
        "  query      {}",
        config.query.as_deref().unwrap_or("(none: --query-http ADDR)")
    );
    println!("ready; press Ctrl-C to stop");
    crate::http::serve(listener, meridian_ui::router(config), crate::shutdown_signal()).await
}

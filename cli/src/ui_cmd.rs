//! `meridian ui`: the web console on its own listener, reading a cluster's services over their
//! HTTP APIs (the console itself is the `meridian-ui` crate; `meridian dev` mounts the same
//! router at `/` of its one listener). Settings come from flags and environment variables, or
//! from a TOML file (`--config`, [`UiConfig`]), which `meridian cluster up` and the deploy files
//! write.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Arguments of `meridian ui`.
#[derive(Debug, clap::Args)]
pub struct UiArgs {
    /// A TOML file with the settings below (`listen`, `nameserver_http`, `broker_http` a list,
    /// `tracer_http`, `query_http`, `timeout_ms`); a key it sets wins over its flag.
    #[arg(long, env = "MERIDIAN_UI_CONFIG")]
    config: Option<PathBuf>,
    /// Where the console listens.
    #[arg(long, env = "MERIDIAN_UI_LISTEN", default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// A nameserver's HTTP admin API (any node), host:port.
    #[arg(long, env = "MERIDIAN_UI_NAMESERVER_HTTP", default_value = "127.0.0.1:8082")]
    nameserver_http: String,
    /// A broker's HTTP API (health, offsets, lag, clients); repeat for each broker.
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

/// `meridian ui --config FILE`: every key optional; an absent key keeps its flag's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Where the console listens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// A nameserver's HTTP admin API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nameserver_http: Option<String>,
    /// Every broker's HTTP API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_http: Option<Vec<String>>,
    /// The tracer's HTTP API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracer_http: Option<String>,
    /// The query service's HTTP API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_http: Option<String>,
    /// Deadline of one call to a service, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl UiConfig {
    /// Checks what a console needs: a nameserver address and a non-zero deadline.
    pub fn validate(&self) -> Result<()> {
        if self
            .nameserver_http
            .as_deref()
            .is_some_and(|addr| addr.trim().is_empty())
        {
            bail!("nameserver_http is empty: give a nameserver's HTTP address (host:port)");
        }
        if self.timeout_ms == Some(0) {
            bail!("timeout_ms is 0: give the deadline of one call in milliseconds (default 10000)");
        }
        Ok(())
    }
}

/// `meridian ui`: serves the console until Ctrl-C or SIGTERM.
pub async fn ui(mut args: UiArgs) -> Result<()> {
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: UiConfig =
            toml::from_str(&text).with_context(|| format!("{} is not a valid console config", path.display()))?;
        file.validate()
            .with_context(|| format!("{} is not a valid console config", path.display()))?;
        args.listen = file.listen.unwrap_or(args.listen);
        args.nameserver_http = file.nameserver_http.unwrap_or(args.nameserver_http);
        args.brokers_http = file.broker_http.unwrap_or(args.brokers_http);
        args.tracer_http = file.tracer_http.or(args.tracer_http);
        args.query_http = file.query_http.or(args.query_http);
        args.timeout_ms = file.timeout_ms.unwrap_or(args.timeout_ms);
    }
    let listener = crate::http::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let config = meridian_ui::ConsoleConfig {
        nameserver: args.nameserver_http,
        brokers: args.brokers_http,
        tracer: args.tracer_http,
        query: args.query_http,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        tls: meridian_proto::tls::TlsClient::from_env()?,
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
    crate::http::serve(listener, meridian_ui::router(config), crate::signal::shutdown_signal()).await
}

//! How clients find the services beside the brokers with only `MERIDIAN_NAMESERVER` set: the
//! nameservers know the HTTP addresses of the tracer and the query service (their `tracer_http`
//! and `query_http` settings, which `meridian dev` and `meridian cluster up` fill in), and
//! `meridian trace` / `meridian sql` ask them when `--tracer` / `--server` is not given.
//! `meridian env` prints every variable a client needs. Start at [`service_addr`].

use anyhow::{Result, bail};
use meridian_proto::admin::read::{ClusterView, Query, Services};

use crate::nameservers::{NameserverAddrs, NameserverClient};

/// A service clients reach over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The tracer (`meridian trace`).
    Tracer,
    /// The query service (`meridian sql`).
    Query,
}

impl Service {
    fn describe(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Service::Tracer => ("the tracer", "--tracer", "MERIDIAN_TRACER", "tracer_http"),
            Service::Query => ("the query service", "--server", "MERIDIAN_QUERY", "query_http"),
        }
    }
}

/// The HTTP address of `service`: `explicit` (the flag or its variable) when given, else what
/// the nameservers at `addrs` know.
pub async fn service_addr(explicit: Option<String>, addrs: &NameserverAddrs, service: Service) -> Result<String> {
    if let Some(addr) = explicit.filter(|addr| !addr.trim().is_empty()) {
        return Ok(addr);
    }
    let (what, flag, variable, setting) = service.describe();
    let services = match read_services(addrs).await {
        Ok(services) => services,
        Err(error) => bail!(
            "cannot find {what}: no {flag} or {variable} given, and asking the nameservers ({}) where it is failed: {error:#}; set {variable}, or MERIDIAN_NAMESERVER to a running cluster (`meridian env` prints both)",
            addrs.nameservers.join(",")
        ),
    };
    let known = match service {
        Service::Tracer => services.tracer_http,
        Service::Query => services.query_http,
    };
    match known {
        Some(addr) => Ok(addr),
        None => bail!(
            "cannot find {what}: no {flag} or {variable} given, and the nameservers ({}) know none (their {setting} setting is empty); pass {flag} HOST:PORT",
            addrs.nameservers.join(",")
        ),
    }
}

async fn read_services(addrs: &NameserverAddrs) -> Result<Services> {
    let client = NameserverClient::new(addrs)?;
    let services = client.read(&Query::Services).await;
    client.shutdown().await;
    services
}

/// `meridian env`: the variables a client of the cluster at `--nameserver` needs.
#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    #[command(flatten)]
    addrs: NameserverAddrs,
}

/// Prints `export NAME=VALUE` lines (for `eval "$(meridian env)"`): every nameserver of the Raft
/// cluster, the tracer and the query service when the nameservers know them.
pub async fn env(args: EnvArgs) -> Result<()> {
    let client = NameserverClient::new(&args.addrs)?;
    let answers = async {
        let cluster: ClusterView = client.read(&Query::Cluster).await?;
        let services: Services = client.read(&Query::Services).await?;
        anyhow::Ok((cluster, services))
    }
    .await;
    client.shutdown().await;
    let (cluster, services) = answers?;
    let nameservers: Vec<String> = cluster.nodes.into_iter().map(|node| node.addr).collect();
    for line in client_variables(&nameservers, &services) {
        println!("export {line}");
    }
    Ok(())
}

/// `NAME=VALUE` for each variable a client needs, in the order `meridian env` prints them.
pub fn client_variables(nameservers: &[String], services: &Services) -> Vec<String> {
    let mut lines = vec![format!("MERIDIAN_NAMESERVER={}", nameservers.join(","))];
    if let Some(tracer) = &services.tracer_http {
        lines.push(format!("MERIDIAN_TRACER={tracer}"));
    }
    if let Some(query) = &services.query_http {
        lines.push(format!("MERIDIAN_QUERY=http://{}", query.trim_start_matches("http://")));
    }
    lines
}

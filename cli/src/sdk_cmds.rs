//! `meridian client list` (the clients a broker knows, with the SDK policy's verdict on each) and
//! `meridian client policy` (show or replace the cluster's SDK version policy).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow, bail};
use meridian_proto::admin::AdminCommand;
use meridian_proto::admin::SdkPolicy;
use meridian_proto::admin::read::Query;

use crate::nameservers::{NameserverAddrs, NameserverClient};

/// `meridian client ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// List the clients a broker knows (consumers, and producers whose SDK broke the policy) with
    /// their SDK and the policy's verdict.
    List {
        /// The broker's HTTP address (`meridian dev` prints it as `http`).
        #[arg(long, env = "MERIDIAN_HTTP", default_value = "127.0.0.1:8080")]
        http: SocketAddr,
    },
    /// Show the cluster's SDK version policy; with any option, replace it.
    Policy(PolicyArgs),
}

/// `meridian client policy`.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// Oldest SDK version allowed, MAJOR.MINOR.PATCH.
    #[arg(long)]
    min_version: Option<String>,
    /// Versions refused whatever the minimum, comma-separated.
    #[arg(long, value_delimiter = ',')]
    block: Vec<String>,
    /// A minimum for one SDK language, e.g. `java=4.9.0`; repeat for more.
    #[arg(long = "language-min")]
    language_min: Vec<String>,
    /// Refuse offenders' requests (default: only flag them).
    #[arg(long)]
    refuse: bool,
    #[command(flatten)]
    addrs: NameserverAddrs,
}

/// Runs a `meridian client` command.
pub async fn client(command: ClientCommand) -> Result<()> {
    match command {
        ClientCommand::List { http } => list(http).await,
        ClientCommand::Policy(args) => {
            let addrs = args.addrs.clone();
            NameserverClient::with(&addrs, args, policy).await
        }
    }
}

async fn list(http: SocketAddr) -> Result<()> {
    let (status, body) = crate::probe::http_get(http, "/api/broker/clients")
        .await
        .ok_or_else(|| anyhow!("broker HTTP API at {http} did not answer: pass the broker's --http address"))?;
    if status != 200 {
        bail!("broker HTTP API at {http} answered {status}: {body}");
    }
    let report: serde_json::Value = serde_json::from_str(&body).context("reading the broker's client list")?;
    let clients = report["clients"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<9} {:<20} {:<36} {:<8} {:<16} SDK POLICY ({})",
        "KIND",
        "GROUP",
        "CLIENT",
        "IDC",
        "SDK",
        if report["refuse"] == true {
            "refuses offenders"
        } else {
            "flags offenders"
        }
    );
    for client in clients {
        let text = |key: &str| client[key].as_str().unwrap_or_default().to_owned();
        let sdk = match text("sdk_version").as_str() {
            "" => format!("{}/?", text("sdk_language")),
            version => format!("{}/{version}", text("sdk_language")),
        };
        let verdict = client["sdk_violation"]
            .as_str()
            .map_or("ok".to_owned(), |violation| format!("FLAGGED: {violation}"));
        println!(
            "{:<9} {:<20} {:<36} {:<8} {:<16} {verdict}",
            text("kind"),
            text("group"),
            text("client_id"),
            text("idc"),
            sdk
        );
        if let Some(blocked) = client["blocked"].as_object() {
            println!(
                "          blocks queue {} of {}: {} messages waiting, no pull or commit for {} ms",
                blocked["queue_id"],
                blocked["topic"].as_str().unwrap_or_default(),
                blocked["lag_messages"],
                blocked["idle_ms"]
            );
        }
    }
    print_client_health(&report);
    Ok(())
}

/// Consumers' handler times and producers' own latency and size reports, and consumers gone
/// without leaving.
fn print_client_health(report: &serde_json::Value) {
    let micros = |value: &serde_json::Value| {
        value
            .as_u64()
            .map_or("-".to_owned(), |us| format!("{:.1}ms", us as f64 / 1000.0))
    };
    let consumers: Vec<serde_json::Value> = report["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|client| client["kind"] == "consumer")
        .cloned()
        .collect();
    if !consumers.is_empty() {
        println!();
        println!(
            "{:<20} {:<36} {:<16} {:>11} {:>11} {:>9}",
            "GROUP", "CONSUMER", "HOST", "CONSUME p50", "CONSUME p99", "CONSUMED"
        );
        for consumer in consumers {
            println!(
                "{:<20} {:<36} {:<16} {:>11} {:>11} {:>9}",
                consumer["group"].as_str().unwrap_or_default(),
                consumer["client_id"].as_str().unwrap_or_default(),
                consumer["host"].as_str().unwrap_or_default(),
                micros(&consumer["consume_p50_us"]),
                micros(&consumer["consume_p99_us"]),
                consumer["consumed"]
                    .as_u64()
                    .map_or("-".to_owned(), |count| count.to_string())
            );
        }
    }
    let producers = report["producers"].as_array().cloned().unwrap_or_default();
    if !producers.is_empty() {
        println!();
        println!(
            "{:<36} {:<16} {:>10} {:>10} {:>8} {:>7}  HINT",
            "PRODUCER", "HOST", "SEND p50", "SEND p99", "SENDS", "LARGE"
        );
        for producer in producers {
            println!(
                "{:<36} {:<16} {:>10} {:>10} {:>8} {:>7}  {}",
                producer["client_id"].as_str().unwrap_or_default(),
                producer["host"].as_str().unwrap_or_default(),
                micros(&producer["send_p50_us"]),
                micros(&producer["send_p99_us"]),
                producer["sends"],
                producer["large_messages"],
                producer["hint"].as_str().unwrap_or("-")
            );
        }
    }
    let departed = report["departed"].as_array().cloned().unwrap_or_default();
    if !departed.is_empty() {
        println!();
        println!(
            "{:<20} {:<36} {:<16} {:<8} GONE (without leaving)",
            "GROUP", "DEPARTED CONSUMER", "HOST", "IDC"
        );
        for gone in departed {
            println!(
                "{:<20} {:<36} {:<16} {:<8} {}",
                gone["group"].as_str().unwrap_or_default(),
                gone["client_id"].as_str().unwrap_or_default(),
                gone["host"].as_str().unwrap_or_default(),
                gone["idc"].as_str().filter(|idc| !idc.is_empty()).unwrap_or("-"),
                gone["reason"].as_str().unwrap_or_default()
            );
        }
    }
}

async fn policy(client: &NameserverClient, args: PolicyArgs) -> Result<()> {
    let PolicyArgs {
        min_version,
        block,
        language_min,
        refuse,
        ..
    } = args;
    if min_version.is_some() || !block.is_empty() || !language_min.is_empty() || refuse {
        let mut language_min_versions = BTreeMap::new();
        for entry in &language_min {
            let (language, version) = entry.split_once('=').ok_or_else(|| {
                anyhow!("--language-min {entry:?} is invalid: write LANGUAGE=VERSION, e.g. java=4.9.0")
            })?;
            language_min_versions.insert(language.to_owned(), version.to_owned());
        }
        client
            .command(AdminCommand::SetSdkPolicy {
                min_version,
                blocked_versions: block.into_iter().collect::<BTreeSet<_>>(),
                refuse,
                language_min_versions,
            })
            .await?;
        println!("SDK policy replaced");
    }
    let policy: SdkPolicy = client.read(&Query::SdkPolicy).await?;
    println!("minimum          {}", policy.min_version.as_deref().unwrap_or("none"));
    for (language, version) in &policy.language_min_versions {
        println!("minimum {language:<8} {version}");
    }
    let blocked: Vec<&str> = policy.blocked_versions.iter().map(String::as_str).collect();
    println!(
        "blocked          {}",
        if blocked.is_empty() {
            "none".to_owned()
        } else {
            blocked.join(", ")
        }
    );
    println!(
        "offenders        {}",
        if policy.refuse {
            "refused"
        } else {
            "flagged in `meridian client list`, not refused"
        }
    );
    Ok(())
}

//! `meridian alerts`: the cluster's alerts (firing first, then resolved), as the nameservers
//! recorded them, read from a nameserver's `GET /api/alerts`. The rules and webhooks live in
//! the nameserver config (`[alerts]`, see `docs/configuration.md`).

use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow, bail};

/// `meridian alerts`.
#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    /// A nameserver's HTTP address (`meridian dev` prints it as `http`).
    #[arg(long, env = "MERIDIAN_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Only alerts of this owner.
    #[arg(long)]
    owner: Option<String>,
    /// Only `firing` or `resolved` alerts.
    #[arg(long, value_parser = ["firing", "resolved"])]
    status: Option<String>,
    /// Print each alert's history too.
    #[arg(long)]
    history: bool,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `meridian alerts`.
pub async fn alerts(args: AlertsArgs) -> Result<()> {
    let mut query = Vec::new();
    if let Some(owner) = &args.owner {
        query.push(format!("owner={}", percent_encode(owner)));
    }
    if let Some(status) = &args.status {
        query.push(format!("status={status}"));
    }
    let path = if query.is_empty() {
        "/api/alerts".to_owned()
    } else {
        format!("/api/alerts?{}", query.join("&"))
    };
    let http = args.http;
    let (status, body) = crate::probe::http_get(http, &path)
        .await
        .ok_or_else(|| anyhow!("nameserver HTTP API at {http} did not answer: pass a nameserver's --http address"))?;
    if status != 200 {
        bail!("nameserver HTTP API at {http} answered {status}: {body}");
    }
    let report: serde_json::Value = serde_json::from_str(&body).context("reading the nameserver's alerts")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let alerts = report["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        println!("no alerts");
        return Ok(());
    }
    println!(
        "{:<9} {:<9} {:<20} {:<40} {:<12} {:<24} MESSAGE",
        "STATUS", "SEVERITY", "RULE", "SUBJECT", "OWNER", "SINCE"
    );
    let text = |value: &serde_json::Value| value.as_str().unwrap_or("").to_owned();
    for alert in &alerts {
        let owner = text(&alert["owner"]);
        println!(
            "{:<9} {:<9} {:<20} {:<40} {:<12} {:<24} {}",
            text(&alert["status"]),
            text(&alert["severity"]),
            text(&alert["rule"]),
            text(&alert["subject"]),
            if owner.is_empty() { "-".to_owned() } else { owner },
            meridian_proto::admin::format_time_ms(alert["last_change_ms"].as_u64().unwrap_or(0)),
            text(&alert["message"]),
        );
        if args.history {
            for change in alert["history"].as_array().into_iter().flatten() {
                println!(
                    "    {} {:<9} {}",
                    meridian_proto::admin::format_time_ms(change["at_ms"].as_u64().unwrap_or(0)),
                    text(&change["status"]),
                    text(&change["message"]),
                );
            }
        }
    }
    println!(
        "{} firing, {} in all",
        report["firing"].as_u64().unwrap_or(0),
        alerts.len()
    );
    Ok(())
}

// Owner names are free text: encode what a query string cannot carry as is.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

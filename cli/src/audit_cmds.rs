//! `meridian audit`: the audit log of admin actions (who, when, from where, what), as the
//! nameservers replicated it ([`meridian_proto::admin::AuditEntry`]).

use anyhow::Result;
use meridian_proto::admin::read::Query;
use meridian_proto::admin::{AuditEntry, format_time_ms};

use crate::governance::{NameserverAddrs, NameserverClient};

/// `meridian audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    nameservers: NameserverAddrs,
    /// Only entries after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Most entries to print.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `meridian audit`.
pub async fn audit(args: AuditArgs) -> Result<()> {
    let client = NameserverClient::new(&args.nameservers)?;
    let entries = client
        .read::<Vec<AuditEntry>>(&Query::Audit {
            after: args.after,
            limit: args.limit,
        })
        .await;
    client.shutdown().await;
    let entries = entries?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("no admin actions recorded");
        return Ok(());
    }
    println!(
        "{:<6} {:<24} {:<20} {:<22} {:<16} {:<28} DETAIL",
        "SEQ", "WHEN", "WHO", "FROM", "ACTION", "SUBJECT"
    );
    for entry in entries {
        let who = if entry.authenticated {
            entry.who
        } else {
            format!("{} (unauthenticated)", entry.who)
        };
        println!(
            "{:<6} {:<24} {:<20} {:<22} {:<16} {:<28} {}",
            entry.seq,
            format_time_ms(entry.at_ms),
            who,
            if entry.from.is_empty() { "-" } else { &entry.from },
            entry.action,
            entry.subject,
            entry.detail
        );
    }
    Ok(())
}

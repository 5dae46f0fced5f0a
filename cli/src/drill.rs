//! `meridian drill` (failover drills: evacuate a data center, restore, status) and `meridian idc`
//! (the nameservers' CIDR → IDC map, and which data center an address is in).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use meridian_proto::RequestCode;
use meridian_proto::admin::format_time_ms;
use meridian_proto::admin::read::{BrokerGroupView, Query, Response};
use meridian_proto::admin::{AdminCommand, AdminWrite};
use meridian_proto::admin::{Drill, DrillAction, IdcRule};
use meridian_proto::messages::{IdcLookupRequest, IdcLookupResponse};

use crate::nameservers::{NameserverAddrs, NameserverClient, Who};

/// `meridian drill ...`.
#[derive(Debug, clap::Subcommand)]
pub enum DrillCommand {
    /// Move all production and consumption out of a data center: its brokers stop taking writes,
    /// producers send to the other data center, and consumers there hand their queues over.
    Evacuate {
        /// The data center to empty.
        #[arg(long)]
        idc: String,
        /// Why (kept with the step).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// End the drill: both data centers take traffic again.
    Restore {
        /// Why (kept with the step).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// Where traffic goes now (each data center's broker groups and whether they take writes),
    /// and every drill step with who ran it and when.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
}

/// `meridian idc ...`.
#[derive(Debug, clap::Subcommand)]
pub enum IdcCommand {
    /// The CIDR → IDC rules, in the order they were added.
    List {
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// Map a CIDR to a data center (replacing the rule for the same CIDR).
    Set {
        /// E.g. 10.1.0.0/16.
        cidr: String,
        /// The data center.
        idc: String,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// Remove the rule for a CIDR.
    Remove {
        /// E.g. 10.1.0.0/16.
        cidr: String,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// Which data center an address is in by the map (the longest matching prefix wins).
    Lookup {
        /// An IPv4 or IPv6 address.
        ip: String,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
}

pub async fn drill(command: DrillCommand) -> Result<()> {
    let addrs = match &command {
        DrillCommand::Evacuate { addrs, .. }
        | DrillCommand::Restore { addrs, .. }
        | DrillCommand::Status { addrs, .. } => addrs.clone(),
    };
    NameserverClient::with(&addrs, command, run_drill).await
}

async fn run_drill(client: &NameserverClient, command: DrillCommand) -> Result<()> {
    match command {
        DrillCommand::Evacuate { idc, reason, who, .. } => {
            let by = who.name()?;
            client
                .write(AdminWrite::Command {
                    command: AdminCommand::Evacuate {
                        idc: idc.clone(),
                        by,
                        reason,
                    },
                })
                .await?;
            println!(
                "data center {idc} evacuated: its brokers refuse writes, producers move to the other data center and consumers there hand their queues over within seconds"
            );
        }
        DrillCommand::Restore { reason, who, .. } => {
            let by = who.name()?;
            client
                .write(AdminWrite::Command {
                    command: AdminCommand::Restore { by, reason },
                })
                .await?;
            println!("restored: both data centers take traffic again (producers return as their routes refresh)");
        }
        DrillCommand::Status { json, .. } => {
            let drill: Drill = client.read(&Query::Drill).await?;
            let brokers: Vec<BrokerGroupView> = client.read(&Query::Brokers).await?;
            if json {
                println!("{}", serde_json::json!({"drill": drill, "brokers": brokers}));
                return Ok(());
            }
            print_status(&drill, &brokers);
        }
    }
    Ok(())
}

/// The data center a broker group serves from, as the status shows it: its master's.
fn group_idc(group: &BrokerGroupView) -> String {
    group
        .master
        .as_ref()
        .and_then(|master| group.members.iter().find(|member| member.name == *master))
        .map_or_else(|| "-".to_owned(), |member| member.idc.clone())
}

fn print_status(drill: &Drill, brokers: &[BrokerGroupView]) {
    match &drill.evacuated {
        None => println!("dual-center: no data center is evacuated"),
        Some(idc) => println!("data center {idc} is EVACUATED: all traffic goes to the others"),
    }
    let mut by_idc: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for group in brokers {
        let master = group.master.clone().unwrap_or_else(|| "no master".to_owned());
        by_idc
            .entry(group_idc(group))
            .or_default()
            .push(format!("{} ({master})", group.name));
    }
    println!("{:<14} {:<8} BROKER GROUPS (MASTER)", "DATA CENTER", "WRITES");
    for (idc, groups) in &by_idc {
        let writes = if drill.evacuated.as_ref() == Some(idc) {
            "no"
        } else {
            "yes"
        };
        println!("{idc:<14} {writes:<8} {}", groups.join(", "));
    }
    if drill.steps.is_empty() {
        println!("no drill has been run");
        return;
    }
    println!("steps, oldest first:");
    for step in &drill.steps {
        let action = match step.action {
            DrillAction::Evacuate => "evacuate",
            DrillAction::Restore => "restore ",
        };
        println!(
            "  {}  {action} {:<10} by {}{}",
            format_time_ms(step.at_ms),
            step.idc,
            step.by,
            step.reason
                .as_ref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        );
    }
}

pub async fn idc(command: IdcCommand) -> Result<()> {
    let addrs = match &command {
        IdcCommand::List { addrs }
        | IdcCommand::Set { addrs, .. }
        | IdcCommand::Remove { addrs, .. }
        | IdcCommand::Lookup { addrs, .. } => addrs.clone(),
    };
    NameserverClient::with(&addrs, command, run_idc).await
}

async fn run_idc(client: &NameserverClient, command: IdcCommand) -> Result<()> {
    match command {
        IdcCommand::List { .. } => {
            let rules: Vec<IdcRule> = client.read(&Query::IdcRules).await?;
            if rules.is_empty() {
                println!("no IDC rules: add one with `meridian idc set CIDR IDC`");
            }
            for rule in rules {
                println!("{:<40} {}", rule.cidr(), rule.idc);
            }
        }
        IdcCommand::Set { cidr, idc, .. } => {
            let response = client
                .write(AdminWrite::Command {
                    command: AdminCommand::SetIdcRule { cidr, idc },
                })
                .await?;
            if let Response::IdcRule { rule, overlaps } = response {
                println!("{} → {}", rule.cidr(), rule.idc);
                for other in overlaps {
                    eprintln!(
                        "warning: {} overlaps {} → {}; the longer prefix decides for the addresses they share",
                        rule.cidr(),
                        other.cidr(),
                        other.idc
                    );
                }
            }
        }
        IdcCommand::Remove { cidr, .. } => {
            client
                .write(AdminWrite::Command {
                    command: AdminCommand::RemoveIdcRule { cidr: cidr.clone() },
                })
                .await?;
            println!("removed the rule for {cidr}");
        }
        IdcCommand::Lookup { ip, .. } => {
            let body = bytes::Bytes::from(prost::Message::encode_to_vec(&IdcLookupRequest { ip: ip.clone() }));
            let answer = client.request_raw(RequestCode::IdcLookup, body).await?;
            let answer: IdcLookupResponse =
                prost::Message::decode(answer).context("the nameserver's IDC answer does not decode")?;
            if answer.idc.is_empty() {
                println!(
                    "{ip}: no rule matches (known data centers: {})",
                    answer.known_idcs.join(", ")
                );
            } else {
                println!("{ip}: {} (rule {})", answer.idc, answer.cidr);
            }
        }
    }
    Ok(())
}

//! `meridian cluster verify`: whether every replica of every broker group holds the same
//! confirmed history, compared record by record. Each member sums up its records below its
//! group's master's confirmed offset (`GET /api/broker/digest`: count, bytes, and a CRC32C over
//! every record's bytes in order, which replicas hold byte for byte); the sums must agree.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;
use tokio::time::Instant;

use super::commands::DirArgs;
use super::plan::{Kind, Node, load};
use crate::probe::{http_get, http_json};

/// Arguments of `meridian cluster verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// How long slaves may take to catch up to their master's confirmed offset, in seconds.
    #[arg(long, default_value_t = 30)]
    pub wait_secs: u64,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// One member's sum.
struct Sum {
    member: String,
    role: String,
    records: u64,
    bytes: u64,
    crc: String,
}

/// `meridian cluster verify`.
pub async fn verify(args: VerifyArgs) -> Result<()> {
    let plan = load(&args.dir.dir)?;
    let mut groups: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
    for node in plan.nodes.iter().filter(|node| node.kind == Kind::Broker) {
        if let Some(group) = node.group.as_deref() {
            groups.entry(group).or_default().push(node);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let mut problems = Vec::new();
    let mut agreed = Vec::new();
    println!(
        "{:<12} {:<10} {:<8} {:>10} {:>12} {:>10}",
        "GROUP", "MEMBER", "ROLE", "RECORDS", "BYTES", "CRC32C"
    );
    for (group, members) in groups {
        match verify_group(members, deadline).await {
            Ok((to, sums)) => {
                for sum in &sums {
                    println!(
                        "{group:<12} {:<10} {:<8} {:>10} {:>12} {:>10}",
                        sum.member, sum.role, sum.records, sum.bytes, sum.crc
                    );
                }
                let first = &sums[0];
                let differ: Vec<String> = sums
                    .iter()
                    .filter(|sum| (sum.records, sum.bytes, &sum.crc) != (first.records, first.bytes, &first.crc))
                    .map(|sum| sum.member.clone())
                    .collect();
                if differ.is_empty() {
                    agreed.push(format!("{group} {} records below offset {to}", first.records));
                } else {
                    problems.push(format!(
                        "{group}: {} hold(s) a different history below offset {to} than {}",
                        differ.join(", "),
                        first.member
                    ));
                }
            }
            Err(why) => problems.push(format!("{group}: {why}")),
        }
    }
    if !problems.is_empty() {
        bail!(
            "replicas differ or could not be compared:\n  {}\n(each member's log shows what it truncated or refused; `meridian cluster status` shows who is behind)",
            problems.join("\n  ")
        );
    }
    println!("every replica holds the same confirmed history: {}", agreed.join("; "));
    Ok(())
}

/// The group's master's confirmed offset, and every member's sum below it (the master first);
/// retried until `deadline` while a member is behind or unreachable.
async fn verify_group(members: Vec<&Node>, deadline: Instant) -> std::result::Result<(u64, Vec<Sum>), String> {
    loop {
        let attempt = sum_group(&members).await;
        match attempt {
            Ok(done) => return Ok(done),
            Err(why) if Instant::now() >= deadline => return Err(why),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn sum_group(members: &[&Node]) -> std::result::Result<(u64, Vec<Sum>), String> {
    let mut roles = Vec::new();
    for node in members {
        let http = node.http.ok_or_else(|| format!("{} has no HTTP address", node.name))?;
        let health = http_json(http, "/api/health")
            .await
            .ok_or_else(|| format!("{} does not answer on {http}", node.name))?;
        let role = health["replication"]["role"].as_str().unwrap_or("unknown").to_owned();
        let confirmed = health["broker"]["confirmed_offset"].as_u64().unwrap_or(0);
        roles.push((*node, role, confirmed));
    }
    roles.sort_by_key(|(_, role, _)| role != "master");
    let Some((_, _, to)) = roles.iter().find(|(_, role, _)| role == "master") else {
        return Err("no member is master".to_owned());
    };
    let to = *to;
    // Compare from the latest first offset any member holds (retention may have removed older
    // segments on some).
    let mut from = None;
    let mut sums = Vec::new();
    for pass in 0..2 {
        sums.clear();
        let mut firsts = Vec::new();
        for (node, role, _) in &roles {
            let http = node.http.expect("checked above");
            let path = match from {
                Some(from) => format!("/api/broker/digest?from={from}&to={to}"),
                None => format!("/api/broker/digest?to={to}"),
            };
            let (status, body) = http_get(http, &path)
                .await
                .ok_or_else(|| format!("{} does not answer on {http}", node.name))?;
            let answer: Value = serde_json::from_str(&body).unwrap_or_default();
            if status != 200 {
                return Err(format!(
                    "{}: {}",
                    node.name,
                    answer["error"]["message"].as_str().unwrap_or(body.as_str())
                ));
            }
            firsts.push(answer["from"].as_u64().unwrap_or(0));
            sums.push(Sum {
                member: node.name.clone(),
                role: role.clone(),
                records: answer["records"].as_u64().unwrap_or(0),
                bytes: answer["bytes"].as_u64().unwrap_or(0),
                crc: answer["crc32c"].as_str().unwrap_or("").to_owned(),
            });
        }
        let latest = firsts.iter().copied().max().unwrap_or(0);
        if pass == 0 && firsts.iter().any(|first| *first != latest) {
            from = Some(latest);
            continue;
        }
        break;
    }
    Ok((to, sums))
}

//! `meridian dlq list|show|resend` and `meridian group reset-offset`: a group's dead letters and
//! offsets, on every broker group serving its topics.

use anyhow::{Context, Result, bail};
use meridian_client::{Admin, ConnectionPool, DeadLetter, ResetTo};
use meridian_proto::admin::read::{GroupDetail, Query};
use meridian_proto::properties::RETRY_TOPIC;
use meridian_proto::time::format_millis;
use serde_json::json;

use crate::nameservers::NameserverClient;
use crate::target::ClientTarget;
use crate::target::route_source;

/// `meridian dlq ...`.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List a group's dead letters: id, first topic, failures, when dead-lettered, body preview.
    List(DlqArgs),
    /// Show dead letters in full (properties and body), by message id.
    Show {
        #[command(flatten)]
        dlq: DlqArgs,
        /// Message ids to show.
        #[arg(required = true)]
        msg_ids: Vec<String>,
    },
    /// Put dead letters back on the group's retry topic (reconsume count 0): the ids given, or
    /// every one with --all.
    Resend {
        #[command(flatten)]
        dlq: DlqArgs,
        /// Message ids to resend.
        msg_ids: Vec<String>,
        /// Resend every dead letter of the group.
        #[arg(long, conflicts_with = "msg_ids")]
        all: bool,
    },
}

/// Which group's dead letters.
#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// One of the group's topics, to find its brokers (default: the group's topics as the
    /// nameservers list them; required with --broker).
    #[arg(long)]
    topic: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: ClientTarget,
}

/// Arguments of `meridian group reset-offset`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["to_timestamp", "to_earliest", "to_latest"])))]
pub struct ResetOffsetArgs {
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// Topic whose offsets move.
    #[arg(long)]
    topic: String,
    /// The first message stored at or after this time: Unix ms or RFC 3339 UTC
    /// (2026-11-25T18:30:00Z).
    #[arg(long)]
    to_timestamp: Option<String>,
    /// The oldest message each queue holds.
    #[arg(long)]
    to_earliest: bool,
    /// Past the newest message: skip everything stored so far.
    #[arg(long)]
    to_latest: bool,
    #[command(flatten)]
    target: ClientTarget,
}

fn admin(target: &ClientTarget) -> (Admin, ConnectionPool) {
    let pool = ConnectionPool::new(crate::credentials::client_config());
    let admin = Admin::new(route_source(target, &pool), crate::credentials::client_config());
    (admin, pool)
}

/// `meridian group reset-offset`.
pub async fn reset_offset(args: ResetOffsetArgs) -> Result<()> {
    let to = match (&args.to_timestamp, args.to_earliest) {
        (Some(at), _) => ResetTo::Timestamp(
            meridian_tracer::http::parse_time("--to-timestamp", at).map_err(|error| anyhow::anyhow!("{error}"))?,
        ),
        (None, true) => ResetTo::Earliest,
        (None, false) => ResetTo::Latest,
    };
    let (admin, pool) = admin(&args.target);
    let result = admin.reset_offsets(&args.group, &args.topic, to).await;
    admin.shutdown().await;
    pool.shutdown().await;
    let moved = result.with_context(|| format!("resetting offsets of group {} on {}", args.group, args.topic))?;
    for (broker, queues) in moved {
        for (queue, offset) in queues {
            println!("{broker} {}:{queue} -> {offset}", args.topic);
        }
    }
    println!(
        "offsets of group {} on {} reset; running consumers continue from there at their next pull",
        args.group, args.topic
    );
    Ok(())
}

/// The topics to find a group's brokers by: the one given, or the group's topics.
async fn group_topics(args: &DlqArgs) -> Result<Vec<String>> {
    meridian_proto::validate::validate_group(&args.group)?;
    if let Some(topic) = &args.topic {
        return Ok(vec![topic.clone()]);
    }
    if args.target.broker.is_some() {
        bail!("with --broker, name one of the group's topics with --topic");
    }
    let client = NameserverClient::new(&args.target.nameservers)?;
    let detail = client
        .read::<GroupDetail>(&Query::Group {
            name: args.group.clone(),
        })
        .await;
    client.shutdown().await;
    match detail? {
        GroupDetail { group: Some(group), .. } => Ok(group.topics.into_iter().collect()),
        _ => bail!(
            "consumer group {:?} is unknown to the nameservers: `meridian group list` shows the groups",
            args.group
        ),
    }
}

/// Every dead letter of the group, once each (a broker group serving several of its topics is
/// asked once).
async fn dead_letters(admin: &Admin, args: &DlqArgs, topics: &[String]) -> Result<Vec<DeadLetter>> {
    let mut letters: Vec<DeadLetter> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for topic in topics {
        for letter in admin.dead_letters(&args.group, topic).await? {
            if seen.insert((letter.broker_name.clone(), letter.message.commitlog_offset)) {
                letters.push(letter);
            }
        }
    }
    Ok(letters)
}

fn print_letter(letter: &DeadLetter, json: bool, full: bool) {
    let message = &letter.message;
    let first_topic = message.property(RETRY_TOPIC).unwrap_or("");
    let body = String::from_utf8_lossy(&message.body);
    if json {
        let properties: serde_json::Map<String, serde_json::Value> =
            meridian_proto::properties::PropertiesIter::new(&message.properties)
                .map(|(name, value)| (name.to_owned(), json!(value)))
                .collect();
        println!(
            "{}",
            json!({
                "msg_id": message.msg_id(),
                "broker": letter.broker_name,
                "topic": first_topic,
                "reconsume_count": message.reconsume_count,
                "born_timestamp": message.born_timestamp,
                "dead_lettered_at": message.store_timestamp,
                "keys": message.keys().collect::<Vec<_>>(),
                "tag": message.tag(),
                "properties": properties,
                "body": body,
            })
        );
        return;
    }
    let preview: String = body.chars().take(if full { usize::MAX } else { 40 }).collect();
    println!(
        "{}  {first_topic}  failed {} times  dead-lettered {}  born {}  on {}  {preview}",
        message.msg_id(),
        message.reconsume_count,
        format_millis(message.store_timestamp),
        format_millis(message.born_timestamp),
        letter.broker_name,
    );
    if full {
        for (name, value) in meridian_proto::properties::PropertiesIter::new(&message.properties) {
            println!("    {name} = {value}");
        }
    }
}

/// `meridian dlq ...`.
pub async fn dlq(command: DlqCommand) -> Result<()> {
    let args = match &command {
        DlqCommand::List(args) | DlqCommand::Show { dlq: args, .. } | DlqCommand::Resend { dlq: args, .. } => args,
    };
    let topics = group_topics(args).await?;
    let (admin, pool) = admin(&args.target);
    let result = run_dlq(&admin, &command, &topics).await;
    admin.shutdown().await;
    pool.shutdown().await;
    result
}

async fn run_dlq(admin: &Admin, command: &DlqCommand, topics: &[String]) -> Result<()> {
    match command {
        DlqCommand::List(args) => {
            let letters = dead_letters(admin, args, topics).await?;
            for letter in &letters {
                print_letter(letter, args.json, false);
            }
            if !args.json {
                println!("{} dead letters of group {}", letters.len(), args.group);
            }
        }
        DlqCommand::Show { dlq: args, msg_ids } => {
            let letters = dead_letters(admin, args, topics).await?;
            for msg_id in msg_ids {
                let found: Vec<&DeadLetter> = letters
                    .iter()
                    .filter(|letter| letter.message.msg_id() == msg_id)
                    .collect();
                if found.is_empty() {
                    bail!(
                        "group {} has no dead letter {msg_id}; `meridian dlq list --group {}` lists them",
                        args.group,
                        args.group
                    );
                }
                for letter in found {
                    print_letter(letter, args.json, true);
                }
            }
        }
        DlqCommand::Resend {
            dlq: args,
            msg_ids,
            all,
        } => {
            if msg_ids.is_empty() && !all {
                bail!("name the dead letters to resend by message id, or pass --all");
            }
            let mut resent = 0;
            let mut missing: Option<Vec<String>> = None;
            for topic in topics {
                let (count, not_found) = admin.resend_dead_letters(&args.group, topic, msg_ids).await?;
                resent += count;
                missing = Some(match missing {
                    None => not_found,
                    Some(before) => before.into_iter().filter(|id| not_found.contains(id)).collect(),
                });
            }
            let missing = missing.unwrap_or_default();
            println!(
                "{resent} dead letters of group {} resent to its retry topic",
                args.group
            );
            if !missing.is_empty() {
                bail!(
                    "no dead letter of group {} has these ids: {}",
                    args.group,
                    missing.join(", ")
                );
            }
        }
    }
    Ok(())
}

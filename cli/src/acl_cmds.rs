//! `meridian acl grant|deny|revoke|list|super-user`: who may do what to which topic or group
//! when `[auth] authorization` is on. The model and its text forms (`user:alice`, `team:ops`, `*`;
//! `topic:orders`, `topic:ord*`, `group:billing`, `*`; `PUB,SUB,ADMIN,TRACE,SQL`) are
//! [`meridian_proto::acl`]; the rules live in the nameservers' Raft state
//! (`meridian_nameserver::state::acl`), and each change is audited with the authenticated user.

use std::collections::BTreeSet;

use anyhow::{Result, anyhow};
use meridian_nameserver::service::Query;
use meridian_proto::acl::{Acl, Action, Effect, ResourcePattern, Rule, Subject};
use meridian_proto::admin::AdminCommand as Command;

use crate::governance::{NameserverAddrs, NameserverClient, Who};
use crate::user_cmds::write;

/// A rule as typed: subject, actions, resource.
#[derive(Debug, clap::Args)]
pub struct RuleArgs {
    /// Whom: `user:<name>`, `team:<name>` or `*` (every user).
    subject: String,
    /// What: `PUB`, `SUB`, `ADMIN`, `TRACE`, `SQL`, comma-separated, or `ALL`.
    actions: String,
    /// On what: `topic:<name>`, `topic:<prefix>*`, `group:<name>`, `group:<prefix>*` or `*`.
    resource: String,
    #[command(flatten)]
    who: Who,
    #[command(flatten)]
    nameservers: NameserverAddrs,
}

impl RuleArgs {
    fn parse(&self) -> Result<(Subject, BTreeSet<Action>, ResourcePattern)> {
        Ok((
            Subject::parse(&self.subject).map_err(|message| anyhow!(message))?,
            Action::parse_list(&self.actions).map_err(|message| anyhow!(message))?,
            ResourcePattern::parse(&self.resource).map_err(|message| anyhow!(message))?,
        ))
    }
}

/// `meridian acl ...`.
#[derive(Debug, clap::Subcommand)]
pub enum AclCommand {
    /// Allow: `meridian acl grant user:alice PUB,SUB topic:orders`.
    Grant(RuleArgs),
    /// Deny (beats an allow that is as specific): `meridian acl deny team:interns SQL topic:pay*`.
    Deny(RuleArgs),
    /// Remove actions from a subject's allow and deny rules on a resource, as granted.
    Revoke(RuleArgs),
    /// List the rules, super users, teams and owners.
    List {
        #[command(flatten)]
        nameservers: NameserverAddrs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a user a super user (`add`) or no longer (`remove`).
    SuperUser {
        /// `add` or `remove`.
        #[arg(value_parser = ["add", "remove"])]
        change: String,
        /// User name.
        name: String,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        nameservers: NameserverAddrs,
    },
}

/// Runs `meridian acl ...`.
pub async fn acl(command: AclCommand) -> Result<()> {
    match command {
        AclCommand::Grant(args) => add(args, Effect::Allow).await?,
        AclCommand::Deny(args) => add(args, Effect::Deny).await?,
        AclCommand::Revoke(args) => {
            let (subject, actions, resource) = args.parse()?;
            let by = args.who.name()?;
            let shown = format!("{subject} {} {resource}", join(&actions));
            write(
                &args.nameservers,
                Command::AclRevoke {
                    subject,
                    actions,
                    resource,
                    by,
                },
            )
            .await?;
            println!("revoked {shown}");
        }
        AclCommand::List { nameservers, json } => {
            let client = NameserverClient::new(&nameservers)?;
            let model = client.read::<Acl>(&Query::Acl).await;
            client.shutdown().await;
            let model = model?;
            if json {
                println!("{}", serde_json::to_string_pretty(&model)?);
            } else {
                print(&model);
            }
        }
        AclCommand::SuperUser {
            change,
            name,
            who,
            nameservers,
        } => {
            let super_user = change == "add";
            let by = who.name()?;
            write(
                &nameservers,
                Command::SetSuperUser {
                    name: name.clone(),
                    super_user,
                    by,
                },
            )
            .await?;
            println!(
                "user {name} {}",
                if super_user {
                    "is a super user"
                } else {
                    "is no longer a super user"
                }
            );
        }
    }
    Ok(())
}

async fn add(args: RuleArgs, effect: Effect) -> Result<()> {
    let (subject, actions, resource) = args.parse()?;
    let by = args.who.name()?;
    let rule = Rule {
        subject,
        effect,
        actions,
        resource,
    };
    let shown = rule.to_string();
    write(&args.nameservers, Command::AclAdd { rule, by }).await?;
    println!("{shown}");
    Ok(())
}

fn join(actions: &BTreeSet<Action>) -> String {
    actions
        .iter()
        .map(|action| action.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn print(model: &Acl) {
    if model.rules.is_empty() {
        println!("no rules (only super users, nodes and owners may act)");
    } else {
        println!("{:<6} {:<24} {:<24} RESOURCE", "EFFECT", "SUBJECT", "ACTIONS");
        for rule in &model.rules {
            println!(
                "{:<6} {:<24} {:<24} {}",
                rule.effect.to_string(),
                rule.subject.to_string(),
                join(&rule.actions),
                rule.resource
            );
        }
    }
    let super_users: Vec<&str> = model.super_users.iter().map(String::as_str).collect();
    println!(
        "super users: {}",
        if super_users.is_empty() {
            "none".to_owned()
        } else {
            super_users.join(", ")
        }
    );
    for (user, teams) in &model.teams {
        println!(
            "teams of {user}: {}",
            teams.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    for (topic, owner) in &model.topic_owners {
        println!("topic {topic} owned by {owner} (PUB,SUB,TRACE,SQL)");
    }
    for (group, owner) in &model.group_owners {
        println!("group {group} owned by {owner} (SUB)");
    }
}

//! `meridian user create|rotate|delete|list|node-secret`: users who may connect when `[auth]` is
//! on. The secret is made here and printed once; the nameservers receive only its SCRAM-SHA-256
//! verifier ([`meridian_proto::auth::Verifier`]), unless `--rocketmq` gives the user RocketMQ
//! access: AccessKey signatures are HMACs that need the secret itself, so it is sent over the
//! CLI's authenticated connection and sealed by the nameserver with the cluster's node secret
//! before it is stored ([`meridian_proto::admin::RocketmqSecret`]). The CLI's own login is
//! [`crate::credentials`].

use anyhow::{Result, bail};
use meridian_proto::admin::read::Query;
use meridian_proto::admin::{AdminCommand as Command, RocketmqSecret, StoredVerifier};
use meridian_proto::admin::{UserView, format_time_ms};
use meridian_proto::auth::{self, Verifier};

use crate::governance::{NameserverAddrs, NameserverClient, Who};

/// `meridian user ...`.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user; prints its new secret once (keep it: it is stored nowhere).
    Create {
        /// User name: 1 to 64 of [A-Za-z0-9_.@-].
        name: String,
        /// A team the user is in (repeat for several): rules about `team:<name>` and the topics
        /// and groups the team owns apply to the user.
        #[arg(long = "team")]
        teams: Vec<String>,
        /// Also let RocketMQ 4.x clients sign as this user (accessKey = the name, secretKey = the
        /// secret); needs [auth] with a node secret on the nameservers.
        #[arg(long)]
        rocketmq: bool,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        nameservers: NameserverAddrs,
    },
    /// Give a user a new secret, printed once; the old one stops working for new connections.
    Rotate {
        /// User name.
        name: String,
        /// Keep RocketMQ access, with the new secret (without it, RocketMQ access ends).
        #[arg(long)]
        rocketmq: bool,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        nameservers: NameserverAddrs,
    },
    /// Delete a user.
    Delete {
        /// User name.
        name: String,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        nameservers: NameserverAddrs,
    },
    /// Replace a user's teams (none: no team).
    Teams {
        /// User name.
        name: String,
        /// The teams, e.g. `--team payments --team orders`.
        #[arg(long = "team")]
        teams: Vec<String>,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        nameservers: NameserverAddrs,
    },
    /// List users (names and dates, never credentials).
    List {
        #[command(flatten)]
        nameservers: NameserverAddrs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a new random node secret, for `[auth] node_secret_file` (the same file on every
    /// broker and nameserver).
    NodeSecret,
}

/// Runs `meridian user ...`.
pub async fn user(command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Create {
            name,
            teams,
            rocketmq,
            who,
            nameservers,
        } => {
            if let Err(message) = auth::validate_user_name(&name) {
                bail!(message);
            }
            for team in &teams {
                if let Err(message) = meridian_proto::acl::validate_team(team) {
                    bail!(message);
                }
            }
            let secret = auth::generate_secret();
            let verifier = StoredVerifier::from_verifier(&Verifier::generate(secret.as_bytes()));
            let by = who.name()?;
            write(
                &nameservers,
                Command::CreateUser {
                    name: name.clone(),
                    verifier,
                    by: by.clone(),
                    rocketmq: rocketmq_secret(rocketmq, &secret),
                },
            )
            .await?;
            print_secret(&name, &secret, "created", rocketmq);
            if !teams.is_empty() {
                write(
                    &nameservers,
                    Command::SetUserTeams {
                        name: name.clone(),
                        teams: teams.into_iter().collect(),
                        by,
                    },
                )
                .await?;
                println!("user {name} is in its teams");
            }
        }
        UserCommand::Rotate {
            name,
            rocketmq,
            who,
            nameservers,
        } => {
            let secret = auth::generate_secret();
            let verifier = StoredVerifier::from_verifier(&Verifier::generate(secret.as_bytes()));
            let by = who.name()?;
            write(
                &nameservers,
                Command::RotateUser {
                    name: name.clone(),
                    verifier,
                    by,
                    rocketmq: rocketmq_secret(rocketmq, &secret),
                },
            )
            .await?;
            print_secret(&name, &secret, "rotated", rocketmq);
        }
        UserCommand::Delete { name, who, nameservers } => {
            let by = who.name()?;
            write(&nameservers, Command::DeleteUser { name: name.clone(), by }).await?;
            println!("user {name} deleted");
        }
        UserCommand::List { nameservers, json } => {
            let client = NameserverClient::new(&nameservers)?;
            let users = client.read::<Vec<UserView>>(&Query::Users).await;
            client.shutdown().await;
            let users = users?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else if users.is_empty() {
                println!("no users");
            } else {
                println!("{:<24} {:<16} {:<24} ROTATED", "USER", "CREATED BY", "CREATED");
                for user in users {
                    println!(
                        "{:<24} {:<16} {:<24} {}",
                        user.name,
                        user.created_by,
                        format_time_ms(user.created_ms),
                        format_time_ms(user.rotated_ms)
                    );
                }
            }
        }
        UserCommand::Teams {
            name,
            teams,
            who,
            nameservers,
        } => {
            let by = who.name()?;
            let teams: std::collections::BTreeSet<String> = teams.into_iter().collect();
            let listed = teams.iter().cloned().collect::<Vec<_>>().join(", ");
            write(
                &nameservers,
                Command::SetUserTeams {
                    name: name.clone(),
                    teams,
                    by,
                },
            )
            .await?;
            println!(
                "user {name} teams: {}",
                if listed.is_empty() { "none" } else { &listed }
            );
        }
        UserCommand::NodeSecret => println!("{}", auth::generate_secret()),
    }
    Ok(())
}

pub(crate) async fn write(nameservers: &NameserverAddrs, command: Command) -> Result<()> {
    let client = NameserverClient::new(nameservers)?;
    let result = client.command(command).await;
    client.shutdown().await;
    result.map(drop)
}

fn rocketmq_secret(rocketmq: bool, secret: &str) -> Option<RocketmqSecret> {
    rocketmq.then(|| RocketmqSecret::Plain {
        secret: secret.to_owned(),
    })
}

fn print_secret(name: &str, secret: &str, what: &str, rocketmq: bool) {
    println!("user {name} {what}; its secret is shown only this once:");
    println!("export MERIDIAN_USER={name}");
    println!("export MERIDIAN_SECRET={secret}");
    if rocketmq {
        println!("RocketMQ clients: accessKey {name}, secretKey the same secret");
    }
}

/// `meridian dev --auth`: the node secret file in `data_dir`, made (readable by its owner only)
/// when missing.
pub fn ensure_node_secret(data_dir: &std::path::Path) -> Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("node.secret");
    if !path.exists() {
        std::fs::create_dir_all(data_dir)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(file, "{}", auth::generate_secret())?;
        file.sync_all()?;
    }
    Ok(path)
}

/// `meridian dev --auth`: creates the user `admin` (or gives it a new secret when it exists from
/// an earlier run), makes it a super user, and returns its secret.
pub async fn dev_admin(service: &meridian_nameserver::service::NameserverService) -> Result<String> {
    let secret = auth::generate_secret();
    let verifier = StoredVerifier::from_verifier(&Verifier::generate(secret.as_bytes()));
    let by = "meridian dev".to_owned();
    let exists = service.raft().read_state(|state| state.users().contains_key("admin"));
    // The admin may also sign RocketMQ requests (accessKey admin), so RocketMQ clients work
    // against `meridian dev --auth` too.
    let rocketmq = rocketmq_secret(true, &secret);
    let command = if exists {
        Command::RotateUser {
            name: "admin".into(),
            verifier,
            by,
            rocketmq,
        }
    } else {
        Command::CreateUser {
            name: "admin".into(),
            verifier,
            by,
            rocketmq,
        }
    };
    service.command(command.into()).await?;
    // The administrator may do everything, also when `[auth] authorization` is on.
    let super_user = Command::SetSuperUser {
        name: "admin".into(),
        super_user: true,
        by: "meridian dev".into(),
    };
    service.command(super_user.into()).await?;
    Ok(secret)
}

/// `cluster up` with `auth = true`: makes sure the user `admin` exists and its secret is in
/// `secret_path` (readable by its owner only), logged in to the nameservers as the node. A
/// restarted cluster keeps the admin and its file; a missing file gets the admin a new secret.
pub async fn cluster_admin(
    nameservers: Vec<String>,
    node_secret_file: &std::path::Path,
    secret_path: &std::path::Path,
) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let node_secret = auth::read_node_secret(node_secret_file).map_err(anyhow::Error::msg)?;
    let client = NameserverClient::with_credentials(nameservers, auth::Credentials::node(node_secret))?;
    let result = async {
        let users = client.read::<Vec<UserView>>(&Query::Users).await?;
        let exists = users.iter().any(|user| user.name == "admin");
        if exists && secret_path.exists() {
            return Ok(());
        }
        let secret = auth::generate_secret();
        let verifier = StoredVerifier::from_verifier(&Verifier::generate(secret.as_bytes()));
        let by = "meridian cluster up".to_owned();
        let name = "admin".to_owned();
        let command = if exists {
            Command::RotateUser {
                name: name.clone(),
                verifier,
                by: by.clone(),
                rocketmq: None,
            }
        } else {
            Command::CreateUser {
                name: name.clone(),
                verifier,
                by: by.clone(),
                rocketmq: None,
            }
        };
        client.command(command).await?;
        // The administrator may do everything, also when `[auth] authorization` is on.
        client
            .command(Command::SetSuperUser {
                name,
                super_user: true,
                by,
            })
            .await?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(secret_path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        writeln!(file, "{secret}")?;
        file.sync_all()?;
        anyhow::Ok(())
    }
    .await;
    client.shutdown().await;
    result
}

//! `meridian`: the one binary of Meridian. It runs every service (`dev` runs them all in one
//! process) and talks to them (`topic`, `group`, `cluster`, `produce`, `consume`, `bench`).
//!
//! Each subcommand lives in its own module; services are libraries with `run(config, shutdown)`
//! composed here. Start reading at [`Command`].

mod acl_cmds;
mod alerts_cmds;
mod archive_cmds;
mod archive_steps;
mod archive_why;
mod audit_cmds;
mod bench;
mod client_cmds;
mod cluster;
mod config;
mod credentials;
mod dev_tls;
mod drill;
mod env_cmds;
mod governance;
mod http;
mod inspect_cmds;
mod messaging_cmds;
mod nameservers;
mod printer;
mod probe;
mod sdk_cmds;
mod serve;
mod signal;
mod sql_cmds;
mod target;
mod trace_cmds;
mod ui_cmd;
mod user_cmds;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Meridian: a messaging platform you can see, keep and question.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `meridian_broker=debug`; RUST_LOG wins). Default: Meridian's own
    /// logs at `info` and its dependencies' (openraft, tantivy, DataFusion) at `warn` for
    /// services, `warn` for client commands.
    #[arg(long, global = true, env = "MERIDIAN_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an all-in-one local node (nameserver, broker, HTTP API and metrics) for a laptop or a test.
    Dev(serve::DevArgs),
    /// Run a broker from a config file (`MERIDIAN_BROKER__*` variables override it), or switch a
    /// broker group over to another master (`broker switchover`).
    Broker(governance::BrokerCli),
    /// Run a nameserver from a config file (`MERIDIAN_NAMESERVER__*` variables override it).
    Nameserver(serve::NameserverArgs),
    /// Request, approve, reject, inspect and change topics.
    #[command(subcommand)]
    Topic(governance::TopicCommand),
    /// Request, approve, reject, inspect and change consumer groups.
    #[command(subcommand)]
    Group(governance::GroupCommand),
    /// The nameservers' Raft cluster and the brokers they know: status, add or remove a node.
    #[command(subcommand)]
    Cluster(governance::ClusterCommand),
    /// Failover drills: evacuate a data center, restore both, see where traffic goes.
    #[command(subcommand)]
    Drill(drill::DrillCommand),
    /// The nameservers' CIDR → IDC map: list, set, remove rules, look an address up.
    #[command(subcommand)]
    Idc(drill::IdcCommand),
    /// Send messages: one per line of stdin, or one given with --body; prints each msgId.
    Produce(client_cmds::ProduceArgs),
    /// Consume messages in a consumer group and print them, one line each.
    Consume(client_cmds::ConsumeArgs),
    /// Clients and the SDK version policy: list clients with the policy's verdict, show or set it.
    #[command(subcommand)]
    Client(sdk_cmds::ClientCommand),
    /// A consumer group's dead letters: list, show, resend to its retry topic.
    #[command(subcommand)]
    Dlq(messaging_cmds::DlqCommand),
    /// Measure throughput and latency (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Archive a broker's sealed segments to Parquet on object storage until stopped (reads the
    /// broker's config: data_dir, broker_name, [archive]).
    Archiver(archive_cmds::ArchiverArgs),
    /// The archive: status, run --now, verify.
    #[command(subcommand)]
    Archive(archive_cmds::ArchiveCommand),
    /// Run the tracer: index the system trace topic and serve lookups (`MERIDIAN_TRACER__*`
    /// variables override its config file).
    Tracer(trace_cmds::TracerArgs),
    /// Print a message's timeline (by msgId or offset id), or the timelines of a key's messages.
    Trace(trace_cmds::TraceArgs),
    /// Run the query service: SQL and forecasts over the archive, POST /api/sql
    /// (`MERIDIAN_QUERY__*` variables override its config file).
    Query(sql_cmds::QueryArgs),
    /// Run one SQL statement on the query service and print the answer; without one, a shell.
    Sql(sql_cmds::SqlArgs),
    /// Print the variables a client of a running cluster needs (`eval "$(meridian env)"`):
    /// its nameservers, tracer and query service, as the nameservers know them.
    Env(env_cmds::EnvArgs),
    /// Run the web console against a cluster's HTTP APIs (`meridian dev` serves it at `/`).
    Ui(ui_cmd::UiArgs),
    /// The cluster's alerts, firing and resolved, with owners and history (rules: `[alerts]`).
    Alerts(alerts_cmds::AlertsArgs),
    /// Inspect the cluster: `inspect health` checks every node and, with --canary, every broker group.
    #[command(subcommand)]
    Inspect(inspect_cmds::InspectCommand),
    /// Users who may connect when `[auth]` is on: create, rotate, delete, list.
    #[command(subcommand)]
    User(user_cmds::UserCommand),
    /// The audit log: every admin action, who made it, when and from where.
    Audit(audit_cmds::AuditArgs),
    /// Authorization rules: grant, deny, revoke, list; super users (`[auth] authorization`).
    #[command(subcommand)]
    Acl(acl_cmds::AclCommand),
}

/// The default log filter of services: every `meridian*` target at `info`, dependencies at
/// `warn` (openraft alone logs dozens of lines at `info` before the first request).
const SERVICE_LOG: &str = "warn,meridian=info";

fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_owned());
    let env_filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|error| {
        eprintln!("warning: log filter {filter:?} is invalid ({error}); using \"info\"");
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files or pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let serving = matches!(
        &cli.command,
        Command::Dev(_)
            | Command::Archiver(_)
            | Command::Nameserver(_)
            | Command::Tracer(_)
            | Command::Query(_)
            | Command::Ui(_)
            | Command::Broker(governance::BrokerCli { command: None, .. })
    );
    init_logging(cli.log.as_deref().unwrap_or(if serving { SERVICE_LOG } else { "warn" }));
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Each cause once: library errors often repeat their source in their own message.
            let mut printed = error.to_string();
            eprintln!("error: {printed}");
            for cause in error.chain().skip(1) {
                let text = cause.to_string();
                if !printed.contains(&text) {
                    eprintln!("  caused by: {text}");
                    printed = text;
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => serve::dev(args).await,
            Command::Broker(args) => match args.command {
                Some(command) => governance::broker(command).await,
                None => serve::broker(args.run).await,
            },
            Command::Nameserver(args) => serve::nameserver(args).await,
            Command::Topic(command) => governance::topic(command).await,
            Command::Group(command) => governance::group(command).await,
            Command::Cluster(command) => governance::cluster(command).await,
            Command::Drill(command) => drill::drill(command).await,
            Command::Idc(command) => drill::idc(command).await,
            Command::Produce(args) => client_cmds::produce(args).await,
            Command::Consume(args) => client_cmds::consume(args).await,
            Command::Dlq(command) => messaging_cmds::dlq(command).await,
            Command::Client(command) => sdk_cmds::client(command).await,
            Command::Alerts(args) => alerts_cmds::alerts(args).await,
            Command::Inspect(command) => inspect_cmds::inspect(command).await,
            Command::User(command) => user_cmds::user(command).await,
            Command::Audit(args) => audit_cmds::audit(args).await,
            Command::Acl(command) => acl_cmds::acl(command).await,
            Command::Bench(command) => bench::run(command).await,
            Command::Archiver(args) => archive_cmds::archiver(args).await,
            Command::Archive(command) => archive_cmds::archive(command).await,
            Command::Tracer(args) => trace_cmds::tracer(args).await,
            Command::Trace(args) => trace_cmds::trace(args).await,
            Command::Query(args) => sql_cmds::query(args).await,
            Command::Sql(args) => sql_cmds::sql(args).await,
            Command::Env(args) => env_cmds::env(args).await,
            Command::Ui(args) => ui_cmd::ui(args).await,
        }
    });
    // Blocking tasks (stdin readers) must not keep the process alive after the command is done.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

//! `meridian cluster up|down|kill|restart`: their arguments and the order of work (write every
//! node's config, start nameservers, then masters, then slaves and services, each waited for
//! until healthy; stop in reverse).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::plan::{Kind, Node, Plan, SPEC_FILE, exists, load, plan};
use super::processes::{log_tail, running_pid, say, signal, spawn, stop, wait_gone};
use super::spec::parse_spec;
use super::status::{NodeStatus, print_table, probe, probe_all};

/// Where the cluster lives, for every `cluster` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DirArgs {
    /// The cluster dir: each node's config, data, log and pid file, and the spec it was made from.
    #[arg(long, env = "MERIDIAN_CLUSTER_DIR", default_value = "meridian-cluster")]
    pub dir: PathBuf,
}

/// Arguments of `meridian cluster up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The cluster spec (TOML): IDCs, nameservers, broker groups, tracer, archivers
    /// (examples/one-node.toml, one-idc.toml, two-idc.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Check the spec and print what would run, starting nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `meridian cluster down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Also delete the cluster dir (data, logs, configs) once every process is gone.
    #[arg(long)]
    pub purge: bool,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `meridian cluster kill`.
#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// The node (as `cluster status` names it: ns-1, a-0, tracer, archiver-a-0, ...).
    pub node: String,
    /// `kill` (SIGKILL, a crash: no flush, no goodbye) or `term` (SIGTERM, a clean stop).
    #[arg(long, default_value = "kill", value_parser = ["kill", "term"])]
    pub signal: String,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `meridian cluster restart`.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// The node to stop (if running, with SIGTERM) and start again with the same config and data.
    pub node: String,
    #[command(flatten)]
    pub dir: DirArgs,
}

pub(crate) fn bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} nodes healthy  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Waits until `ready` holds for `node`'s status (up to `timeout`), failing at once if it exits.
pub(crate) async fn wait_until(
    node: &Node,
    what: &str,
    timeout: Duration,
    progress: &ProgressBar,
    ready: impl Fn(&NodeStatus) -> bool,
) -> Result<NodeStatus> {
    progress.set_message(format!("waiting for {} ({what})", node.name));
    let deadline = Instant::now() + timeout;
    loop {
        let status = probe(node).await;
        if ready(&status) {
            return Ok(status);
        }
        if status.pid.is_none() {
            bail!(
                "{} exited while starting; last lines of {}:\n    {}",
                node.name,
                node.log_path().display(),
                log_tail(node, 15)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} is not {what} after {} s; last lines of {}:\n    {}",
                node.name,
                timeout.as_secs(),
                node.log_path().display(),
                log_tail(node, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `meridian cluster up`.
pub async fn up(args: UpArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading the cluster spec {}", args.config.display()))?;
    let spec = parse_spec(&text, &args.config.display().to_string())?;
    let plan = plan(&spec, &args.dir.dir)?;
    if args.dry_run {
        println!(
            "cluster spec {} is valid: {} processes under {}",
            args.config.display(),
            plan.nodes.len(),
            plan.dir.display()
        );
        for node in &plan.nodes {
            println!(
                "  {:<16} {:<10} idc {:<8} {}",
                node.name,
                node.kind.word(),
                node.idc,
                node.listen.or(node.http).map_or("-".into(), |addr| addr.to_string())
            );
        }
        return Ok(());
    }
    // A cluster dir is for one spec: restarting a stopped cluster is fine, a different spec over
    // its data is not.
    if exists(&plan.dir) {
        let kept = std::fs::read_to_string(plan.dir.join(SPEC_FILE))?;
        let running: Vec<&str> = plan
            .nodes
            .iter()
            .filter(|node| running_pid(node).is_some())
            .map(|node| node.name.as_str())
            .collect();
        if !running.is_empty() {
            bail!(
                "the cluster in {} is already running ({} of {} processes: {}): stop it first with `meridian cluster down --dir {}`, or use another --dir",
                plan.dir.display(),
                running.len(),
                plan.nodes.len(),
                running.join(", "),
                plan.dir.display()
            );
        }
        if kept != text {
            bail!(
                "{} holds a cluster made from another spec: use another --dir, or remove it first with `meridian cluster down --purge --dir {}`",
                plan.dir.display(),
                plan.dir.display()
            );
        }
    }
    // Every port must be free before anything starts.
    let mut taken = Vec::new();
    for node in &plan.nodes {
        for (addr, what) in [(node.listen, "listen"), (node.http, "http")] {
            if let Some(addr) = addr
                && let Err(error) = std::net::TcpListener::bind(addr)
            {
                taken.push(format!("{} {what} {addr}: {error}", node.name));
            }
        }
    }
    if !taken.is_empty() {
        bail!(
            "{} address(es) of the spec cannot be listened on; nothing was started (stop what uses them, or change the spec; every process runs on this machine, so use its addresses, e.g. 127.0.0.x):\n  - {}",
            taken.len(),
            taken.join("\n  - ")
        );
    }
    std::fs::create_dir_all(&plan.dir).with_context(|| format!("creating {}", plan.dir.display()))?;
    std::fs::write(plan.dir.join(SPEC_FILE), &text)?;
    if plan.node_secret_file.is_some() {
        // Every nameserver and broker reads the same file (mode 600).
        crate::user_cmds::ensure_node_secret(&plan.dir)?;
    }
    for node in &plan.nodes {
        std::fs::create_dir_all(&node.dir).with_context(|| format!("creating {}", node.dir.display()))?;
        if let Some(config) = &node.config {
            let header = format!(
                "# Written by `meridian cluster up` from {}; edit the spec, not this file.\n",
                args.config.display()
            );
            std::fs::write(&node.config_path, header + &toml::to_string(config)?)
                .with_context(|| format!("writing {}", node.config_path.display()))?;
        }
    }
    println!(
        "starting cluster {}{} processes in {}",
        if plan.name.is_empty() {
            String::new()
        } else {
            format!("{}: ", plan.name)
        },
        plan.nodes.len(),
        plan.dir.display()
    );
    let progress = bar(plan.nodes.len());
    let started = Instant::now();
    let result = start_all(&plan, &progress).await;
    progress.finish_and_clear();
    if let Err(error) = result {
        eprintln!(
            "cluster up failed; stopping what it started (logs stay in {})",
            plan.dir.display()
        );
        for node in plan.nodes.iter().rev() {
            stop(node, libc::SIGTERM, Duration::from_secs(10)).await;
            let _ = std::fs::remove_file(node.pid_path());
        }
        return Err(error);
    }
    println!("cluster up in {:.1} s", started.elapsed().as_secs_f64());
    print_table(&probe_all(&plan).await);
    let services = meridian_proto::admin::read::Services {
        tracer_http: plan.service_http(Kind::Tracer),
        query_http: plan.service_http(Kind::Query),
    };
    println!(
        "clients (or `eval \"$(meridian env --nameserver {})\"`):",
        plan.nameservers[0]
    );
    for line in crate::env_cmds::client_variables(&plan.nameservers, &services) {
        println!("  export {line}");
    }
    if let Some(node_secret_file) = &plan.node_secret_file {
        let secret_path = plan.dir.join(super::plan::ADMIN_SECRET_FILE);
        crate::user_cmds::cluster_admin(plan.nameservers.clone(), node_secret_file, &secret_path)
            .await
            .context("creating the administrator `admin`")?;
        // The secret stays in its file (mode 600), out of terminal scrollback and logs.
        println!("  export MERIDIAN_USER=admin");
        println!("  export MERIDIAN_SECRET_FILE={}", secret_path.display());
    }
    if let Some(console) = plan.service_http(Kind::Ui) {
        println!("console: http://{console}/");
    }
    println!("ready");
    Ok(())
}

pub(crate) async fn start_all(plan: &Plan, progress: &ProgressBar) -> Result<()> {
    let announce = |node: &Node, pid: u32| {
        say(
            progress,
            format!(
                "  started {:<16} {:<10} idc {:<8} pid {pid}",
                node.name,
                node.kind.word(),
                node.idc
            ),
        );
    };
    // Nameservers together: none elects a leader alone.
    let nameservers: Vec<&Node> = plan.nodes.iter().filter(|node| node.kind == Kind::Nameserver).collect();
    for node in &nameservers {
        announce(node, spawn(node)?);
    }
    for node in &nameservers {
        wait_until(
            node,
            "in a Raft cluster with a leader",
            START_TIMEOUT,
            progress,
            |status| status.healthy,
        )
        .await?;
        progress.inc(1);
    }
    // Broker groups: on a fresh cluster the master first (the first member to register is
    // elected), then its slaves; on a restart every member at once, and whoever the nameservers
    // elect is master.
    let brokers: Vec<&Node> = plan.nodes.iter().filter(|node| node.kind == Kind::Broker).collect();
    let groups: BTreeSet<&str> = brokers.iter().filter_map(|node| node.group.as_deref()).collect();
    let fresh = |group: &str| {
        !brokers
            .iter()
            .any(|node| node.group.as_deref() == Some(group) && node.dir.join("data").exists())
    };
    let fresh_groups: BTreeSet<&str> = groups.iter().copied().filter(|group| fresh(group)).collect();
    for node in brokers
        .iter()
        .filter(|node| node.master && fresh_groups.contains(node.group.as_deref().unwrap_or("")))
    {
        announce(node, spawn(node)?);
    }
    for node in brokers
        .iter()
        .filter(|node| node.master && fresh_groups.contains(node.group.as_deref().unwrap_or("")))
    {
        wait_until(
            node,
            "the writable master of its group",
            START_TIMEOUT,
            progress,
            |status| status.role.as_deref() == Some("master") && status.writable == Some(true),
        )
        .await?;
    }
    for node in &brokers {
        if running_pid(node).is_none() {
            announce(node, spawn(node)?);
        }
    }
    for group in &groups {
        let members: Vec<&&Node> = brokers
            .iter()
            .filter(|node| node.group.as_deref() == Some(*group))
            .collect();
        let deadline = Instant::now() + START_TIMEOUT;
        // Every member up, one writable master holding every other member in sync.
        loop {
            let mut statuses = Vec::new();
            for node in &members {
                statuses.push(probe(node).await);
            }
            if let Some(dead) = statuses.iter().position(|status| status.pid.is_none()) {
                let node = members[dead];
                bail!(
                    "{} exited while starting; last lines of {}:\n    {}",
                    node.name,
                    node.log_path().display(),
                    log_tail(node, 15)
                );
            }
            let master = statuses
                .iter()
                .find(|status| status.role.as_deref() == Some("master") && status.writable == Some(true));
            let slaves = statuses
                .iter()
                .filter(|status| status.role.as_deref() == Some("slave"))
                .count();
            progress.set_message(format!(
                "waiting for group {group}: {} master, {slaves} of {} slaves, {} in sync",
                master.map_or("no".into(), |status| status.name.clone()),
                members.len() - 1,
                master.map_or(0, |status| status.in_sync.len())
            ));
            if let Some(master) = master
                && slaves + 1 == members.len()
                && master.in_sync.len() + 1 == members.len()
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "broker group {group} is not serving after {} s (a master holding every slave in sync): {}; see the logs under {}",
                    START_TIMEOUT.as_secs(),
                    statuses
                        .iter()
                        .map(|status| format!("{} {}", status.name, status.role.as_deref().unwrap_or("no answer")))
                        .collect::<Vec<_>>()
                        .join(", "),
                    plan.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        progress.inc(members.len() as u64);
    }
    for node in plan
        .nodes
        .iter()
        .filter(|node| matches!(node.kind, Kind::Archiver | Kind::Tracer | Kind::Query))
    {
        announce(node, spawn(node)?);
    }
    for node in plan
        .nodes
        .iter()
        .filter(|node| matches!(node.kind, Kind::Archiver | Kind::Tracer | Kind::Query))
    {
        wait_until(node, "serving", START_TIMEOUT, progress, |status| status.healthy).await?;
        progress.inc(1);
    }
    // The console last: it reads everything above.
    for node in plan.nodes.iter().filter(|node| node.kind == Kind::Ui) {
        announce(node, spawn(node)?);
        wait_until(node, "serving", START_TIMEOUT, progress, |status| status.healthy).await?;
        progress.inc(1);
    }
    Ok(())
}

/// `meridian cluster down`.
pub async fn down(args: DownArgs) -> Result<()> {
    let plan = load(&args.dir.dir)?;
    // Clients of others first, the nameservers last so brokers' last heartbeats find them.
    let waves: [&[Kind]; 3] = [
        &[Kind::Ui, Kind::Query, Kind::Tracer, Kind::Archiver],
        &[Kind::Broker],
        &[Kind::Nameserver],
    ];
    let mut stopped = 0;
    let progress = bar(plan.nodes.len());
    for wave in waves {
        let running: Vec<(&Node, u32)> = plan
            .nodes
            .iter()
            .filter(|node| wave.contains(&node.kind))
            .filter_map(|node| Some((node, running_pid(node)?)))
            .collect();
        for (_, pid) in &running {
            signal(*pid, libc::SIGTERM);
        }
        for (node, pid) in running {
            progress.set_message(format!("stopping {}", node.name));
            if wait_gone(node, pid, Duration::from_secs(30)).await {
                say(&progress, format!("  stopped {:<16} pid {pid}", node.name));
            } else {
                say(
                    &progress,
                    format!(
                        "  killed  {:<16} pid {pid} (no exit within 30 s of SIGTERM; see {})",
                        node.name,
                        node.log_path().display()
                    ),
                );
            }
            stopped += 1;
            progress.inc(1);
        }
        for node in plan.nodes.iter().filter(|node| wave.contains(&node.kind)) {
            let _ = std::fs::remove_file(node.pid_path());
        }
    }
    progress.finish_and_clear();
    // Nothing may be left listening.
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        let held: Vec<String> = plan
            .nodes
            .iter()
            .flat_map(|node| {
                [node.listen, node.http]
                    .into_iter()
                    .flatten()
                    .map(move |addr| (node, addr))
            })
            .filter(|(_, addr)| std::net::TcpListener::bind(addr).is_err())
            .map(|(node, addr)| format!("{} {addr}", node.name))
            .collect();
        if held.is_empty() || Instant::now() >= deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !held.is_empty() {
        bail!(
            "every process is stopped but these addresses are still taken (by something else?): {}",
            held.join(", ")
        );
    }
    println!(
        "cluster in {} is down: {stopped} process(es) stopped, every port free",
        plan.dir.display()
    );
    if args.purge {
        std::fs::remove_dir_all(&plan.dir).with_context(|| format!("removing {}", plan.dir.display()))?;
        println!("removed {}", plan.dir.display());
    } else {
        println!(
            "data and logs stay in {}; `meridian cluster up` with the same spec and --dir starts it again",
            plan.dir.display()
        );
    }
    Ok(())
}

/// `meridian cluster kill NODE`.
pub async fn kill(args: KillArgs) -> Result<()> {
    let plan = load(&args.dir.dir)?;
    let node = plan.node(&args.node)?;
    let (sig, name) = if args.signal == "term" {
        (libc::SIGTERM, "SIGTERM")
    } else {
        (libc::SIGKILL, "SIGKILL")
    };
    match stop(node, sig, Duration::from_secs(30)).await {
        Some((pid, _)) => println!("{} (pid {pid}) stopped with {name}", node.name),
        None => bail!(
            "{} is not running; `meridian cluster restart {} --dir {}` starts it",
            node.name,
            node.name,
            plan.dir.display()
        ),
    }
    Ok(())
}

/// `meridian cluster restart NODE`.
pub async fn restart(args: RestartArgs) -> Result<()> {
    let plan = load(&args.dir.dir)?;
    let node = plan.node(&args.node)?;
    if let Some((pid, clean)) = stop(node, libc::SIGTERM, Duration::from_secs(30)).await {
        println!(
            "{} (pid {pid}) stopped{}",
            node.name,
            if clean {
                ""
            } else {
                " (killed: no exit within 30 s of SIGTERM)"
            }
        );
    }
    let pid = spawn(node)?;
    let progress = bar(1);
    let status = wait_until(node, "healthy", START_TIMEOUT, &progress, |status| status.healthy).await;
    progress.finish_and_clear();
    let status = status?;
    println!(
        "{} started again, pid {pid}{}",
        node.name,
        status.role.map_or(String::new(), |role| format!(", {role}"))
    );
    Ok(())
}

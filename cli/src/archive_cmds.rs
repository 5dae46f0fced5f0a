//! `meridian archiver` (the archiving service beside a broker) and `meridian archive
//! status|run|verify`. Both read the broker's config file: its `data_dir`, `broker_name`, `idc`
//! and `[archive]` table, so they always agree with the broker on where the archive is. The
//! service itself is `meridian_archive::service`; this file composes it with its broker group's
//! view ([`service_config`]): who is master (the nameservers) and the confirmed offset
//! (`MessageStore::confirmed_offset`, read through the broker's `/api/health` when it runs elsewhere).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use meridian_archive::archiver::{self, Archiver, CrashMode, CrashPoint};
use meridian_archive::convert::ConvertOptions;
use meridian_archive::group::{GroupFuture, GroupView, Standing};
use meridian_archive::service::{ArchiverService, ServiceConfig};
use meridian_archive::store::ArchiveStore;
use meridian_archive::{ArchiveError, manifest, verify};
use meridian_broker::BrokerConfig;
use meridian_broker::store::MessageStore;
use meridian_nameserver::service::NameserverService;
use meridian_proto::admin::read::{BrokerGroupView, Query};
use meridian_proto::time::format_seconds;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::nameservers::{NameserverAddrs, NameserverClient};

/// Which broker config to read.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Broker config file (the broker's own); defaults match `meridian dev` (data in
    /// ./meridian-data/broker, archive in ./meridian-data/archive).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The broker's data dir, overriding the config's `data_dir` (for `meridian dev
    /// --data-dir D`, pass D/broker).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> Result<BrokerConfig> {
        let mut broker: BrokerConfig = config::load("broker", self.config.as_deref())?;
        if let Some(data_dir) = &self.data_dir {
            broker.data_dir = data_dir.clone();
        }
        broker.archive.validate().context("invalid [archive] config")?;
        Ok(broker)
    }
}

/// Arguments of `meridian archiver`.
#[derive(Debug, clap::Args)]
pub struct ArchiverArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

/// `meridian archive ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ArchiveCommand {
    /// Per broker: archived up to which offset and time, lag behind the local commitlog, bytes.
    Status(ConfigArgs),
    /// Archive every sealed segment now, whatever its age, with a progress bar.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Ignore `archive_after` (the only mode for now; required so the intent is explicit).
        #[arg(long)]
        now: bool,
    },
    /// Check the manifest against the files: counts, checksums, gaps and duplicates. Exits 1
    /// when it finds a problem.
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only this broker (default: every broker in the archive).
        #[arg(long)]
        broker: Option<String>,
    },
}

fn open_store(broker: &BrokerConfig) -> Result<ArchiveStore> {
    meridian_broker::retention::open_store(&broker.archive, &broker.data_dir).context("opening the archive store")
}

/// Where the archiver learns this broker's standing in its group.
enum StandingSource {
    /// The nameserver in this process (`meridian dev`).
    Local(Arc<NameserverService>),
    /// The broker's nameservers over the network.
    Remote(NameserverClient),
    /// A standalone broker (no nameservers): the only writer of its name, so no epoch to check.
    Standalone,
}

/// Where the archiver learns the confirmed offset.
enum ConfirmedSource {
    /// The broker in this process (`meridian dev`).
    Local(Arc<MessageStore>),
    /// The broker's `/api/health` at its `http_listen`.
    Remote(SocketAddr),
    /// The same, for `meridian archive run --now` of a standalone broker: when the broker does
    /// not answer (stopped, or `meridian dev`, which serves HTTP elsewhere), every sealed segment
    /// counts as confirmed, as a lone broker's written segments are.
    RemoteOrSealed(SocketAddr),
    /// No way to ask (a broker config without `http_listen`, for `meridian archive run --now`
    /// beside `meridian dev`): every sealed segment counts as confirmed, as a lone broker's
    /// written segments are.
    Sealed,
}

/// The archiver's view of its broker group (see `meridian_archive::group`).
struct BrokerGroup {
    group: String,
    member: String,
    standing: StandingSource,
    confirmed: ConfirmedSource,
}

impl BrokerGroup {
    fn standing_in(&self, groups: &[BrokerGroupView]) -> Option<Standing> {
        Some(match groups.iter().find(|group| group.name == self.group) {
            Some(group) => Standing {
                epoch: group.epoch,
                master: group.master.as_deref() == Some(self.member.as_str()),
            },
            // Not registered (yet): not master.
            None => Standing {
                epoch: 0,
                master: false,
            },
        })
    }
}

fn group_error(context: &str, error: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Refused(format!("{context}: {error}"))
}

impl GroupView for BrokerGroup {
    fn standing(&self) -> GroupFuture<'_, Option<Standing>> {
        Box::pin(async move {
            match &self.standing {
                StandingSource::Local(service) => Ok(self.standing_in(&service.brokers())),
                StandingSource::Remote(client) => {
                    let groups: Vec<BrokerGroupView> = client
                        .read(&Query::Brokers)
                        .await
                        .map_err(|error| group_error("asking the nameservers who is master", format!("{error:#}")))?;
                    Ok(self.standing_in(&groups))
                }
                StandingSource::Standalone => Ok(None),
            }
        })
    }

    fn confirmed_offset(&self) -> GroupFuture<'_, u64> {
        Box::pin(async move {
            match &self.confirmed {
                ConfirmedSource::Local(store) => Ok(store.confirmed_offset()),
                ConfirmedSource::RemoteOrSealed(addr) => match crate::probe::http_json(*addr, "/api/health").await {
                    Some(health) => health["broker"]["confirmed_offset"].as_u64().ok_or_else(|| {
                        group_error(
                            "asking the broker for its confirmed offset",
                            format!("http://{addr}/api/health has no broker.confirmed_offset; is it the same version?"),
                        )
                    }),
                    None => {
                        tracing::warn!(
                            %addr,
                            "the standalone broker's /api/health did not answer; archiving every sealed segment"
                        );
                        Ok(u64::MAX)
                    }
                },
                ConfirmedSource::Remote(addr) => {
                    let health = crate::probe::http_json(*addr, "/api/health").await.ok_or_else(|| {
                        group_error(
                            "asking the broker for its confirmed offset",
                            format!("http://{addr}/api/health did not answer; is the broker running?"),
                        )
                    })?;
                    health["broker"]["confirmed_offset"].as_u64().ok_or_else(|| {
                        group_error(
                            "asking the broker for its confirmed offset",
                            format!("http://{addr}/api/health has no broker.confirmed_offset; is it the same version?"),
                        )
                    })
                }
                ConfirmedSource::Sealed => Ok(u64::MAX),
            }
        })
    }
}

/// The service config of the archiver beside `broker`. `local`: the nameserver and broker of
/// this process (`meridian dev`); otherwise they are asked over the network. `one_shot`:
/// `meridian archive run --now` (see [`ConfirmedSource::RemoteOrSealed`]).
pub fn service_config(
    broker: &BrokerConfig,
    local: Option<(Arc<NameserverService>, Arc<MessageStore>)>,
    one_shot: bool,
) -> Result<ServiceConfig> {
    let (standing, confirmed) = match local {
        Some((nameserver, store)) => (StandingSource::Local(nameserver), ConfirmedSource::Local(store)),
        None => {
            let standing = if broker.nameservers.is_empty() {
                StandingSource::Standalone
            } else {
                StandingSource::Remote(NameserverClient::new(&NameserverAddrs {
                    nameservers: broker.nameservers.clone(),
                })?)
            };
            let standalone = broker.nameservers.is_empty();
            let confirmed = match broker.http_listen {
                Some(addr) if one_shot && standalone => ConfirmedSource::RemoteOrSealed(addr),
                Some(addr) => ConfirmedSource::Remote(addr),
                None => ConfirmedSource::Sealed,
            };
            (standing, confirmed)
        }
    };
    let group = BrokerGroup {
        group: broker.broker_name.clone(),
        member: broker.member_name.clone().unwrap_or_else(|| broker.broker_name.clone()),
        standing,
        confirmed,
    };
    // Test hook, read here and nowhere else: the end-to-end tests crash the archiver at a step.
    let crash_at = match std::env::var("MERIDIAN_ARCHIVE_CRASH_AT") {
        Ok(point) => Some(point.parse::<CrashPoint>().map_err(anyhow::Error::msg)?),
        Err(_) => None,
    };
    Ok(ServiceConfig {
        broker: broker.broker_name.clone(),
        idc: (!broker.idc.is_empty()).then(|| broker.idc.clone()),
        commitlog_dir: broker.data_dir.join("commitlog"),
        archive: broker.archive.clone(),
        store: open_store(broker)?,
        group: Some(Arc::new(group)),
        crash_at,
    })
}

/// `meridian archiver`: archives the broker's segments until Ctrl-C or SIGTERM, or until an
/// error retrying cannot fix (then it exits with that error).
pub async fn archiver(args: ArchiverArgs) -> Result<()> {
    let broker = args.config.load()?;
    let service = ArchiverService::new(service_config(&broker, None, false)?)?;
    println!(
        "meridian archiver for broker {} ({}) into {}",
        broker.broker_name,
        broker.data_dir.display(),
        service.store().url
    );
    let stop = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let running = tasks.spawn(service.run(stop.clone().cancelled_owned()));
    tasks.close();
    let result = tokio::select! {
        result = running => result.context("archiver task panicked")?,
        _ = crate::signal::shutdown_signal() => {
            stop.cancel();
            Ok(())
        }
    };
    tasks.wait().await;
    result.with_context(|| format!("archiver of broker {} stopped", broker.broker_name))
}

/// `meridian archive ...`.
pub async fn archive(command: ArchiveCommand) -> Result<()> {
    match command {
        ArchiveCommand::Status(args) => status(&args.load()?).await,
        ArchiveCommand::Run { config, now } => {
            if !now {
                bail!("`meridian archive run` needs --now (the archiver service archives on schedule)");
            }
            run_now(&config.load()?).await
        }
        ArchiveCommand::Verify { config, broker } => verify_all(&config.load()?, broker).await,
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

async fn status(broker: &BrokerConfig) -> Result<()> {
    let store = open_store(broker)?;
    println!("archive {}", store.url);
    let mut brokers = manifest::brokers(&store).await?;
    if !brokers.contains(&broker.broker_name) {
        brokers.push(broker.broker_name.clone());
        brokers.sort();
    }
    println!(
        "{:<16} {:>8} {:>16} {:<22} {:>10} {:>12} {:>12} {:>7} {:>14}",
        "BROKER", "SEGMENTS", "UNTIL OFFSET", "UNTIL TIME", "MESSAGES", "COMMITLOG", "PARQUET", "RATIO", "LAG"
    );
    for name in brokers {
        let status = verify::status(&store, &name).await?;
        // The lag is known for the broker whose data dir this is: sealed segments not archived.
        let lag = if name == broker.broker_name {
            let local = archiver::list_segments(&broker.data_dir.join("commitlog")).unwrap_or_default();
            let committed = manifest::committed_starts(&store, &name).await?;
            let pending: Vec<_> = local
                .iter()
                .filter(|(segment, sealed)| *sealed && committed.binary_search(&segment.start).is_err())
                .collect();
            format!(
                "{} seg / {}",
                pending.len(),
                megabytes(pending.iter().map(|(segment, _)| segment.len).sum())
            )
        } else {
            "-".into()
        };
        let ratio = if status.record_bytes > 0 {
            format!(
                "{:.0}%",
                100.0 * status.parquet_bytes as f64 / status.record_bytes as f64
            )
        } else {
            "-".into()
        };
        let until_time = if status.archived_until_time > 0 {
            format_seconds(status.archived_until_time)
        } else {
            "-".into()
        };
        println!(
            "{:<16} {:>8} {:>16} {:<22} {:>10} {:>12} {:>12} {:>7} {:>14}",
            name,
            status.segments,
            status.archived_until_offset,
            until_time,
            status.records,
            megabytes(status.record_bytes),
            megabytes(status.parquet_bytes),
            ratio,
            lag
        );
    }
    Ok(())
}

async fn run_now(broker: &BrokerConfig) -> Result<()> {
    let config = service_config(broker, None, true)?;
    let mut options = ConvertOptions::new(config.broker);
    options.idc = config.idc;
    options.zstd_level = broker.archive.zstd_level;
    let mut archiver = Archiver::new(
        config.store,
        options,
        config.commitlog_dir,
        Duration::from_secs(broker.archive.archive_after_secs),
    )?;
    if let Some(point) = config.crash_at {
        archiver = archiver.crash_at(point, CrashMode::Abort);
    }
    if let Some(group) = config.group {
        archiver = archiver.with_group(group);
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} of commitlog, {msg} ({elapsed})")
            .expect("valid template"),
    );
    let report = archiver
        .run_once(true, |progress| {
            bar.set_length(progress.total_bytes);
            bar.set_position(progress.done_bytes);
            bar.set_message(format!(
                "{}/{} segments",
                progress.done_segments, progress.total_segments
            ));
        })
        .await;
    bar.finish_and_clear();
    let report =
        report.with_context(|| format!("archiving broker {} into {}", broker.broker_name, archiver.store().url))?;
    if let Some(refusal) = &report.refused {
        bail!(
            "broker {} archived {} segment(s), then stopped: {refusal}",
            broker.broker_name,
            report.archived.len()
        );
    }
    println!(
        "archived {} segment(s) of broker {}: {} messages, {} of commitlog as {} of Parquet; {} already archived",
        report.archived.len(),
        broker.broker_name,
        report.records,
        megabytes(report.record_bytes),
        megabytes(report.parquet_bytes),
        report.already_archived
    );
    if report.archived.is_empty() {
        let commitlog_dir = broker.data_dir.join("commitlog");
        let reason =
            crate::archive_why::nothing_archived(&commitlog_dir, broker.store.segment_size, report.already_archived);
        println!("{reason}");
    }
    Ok(())
}

async fn verify_all(broker: &BrokerConfig, only: Option<String>) -> Result<()> {
    let store = open_store(broker)?;
    let brokers = match only {
        Some(name) => vec![name],
        None => {
            let mut names = manifest::brokers(&store).await?;
            if !names.contains(&broker.broker_name) {
                names.push(broker.broker_name.clone());
                names.sort();
            }
            names
        }
    };
    let mut problems = 0;
    for name in brokers {
        let report = verify::verify(&store, &name).await?;
        println!(
            "broker {name}: {} segment(s), {} file(s), {} rows checked",
            report.segments, report.files, report.rows
        );
        for problem in &report.problems {
            println!("  {problem}");
        }
        for path in &report.uncommitted {
            println!("  uncommitted (left by an interrupted run; the next run overwrites it): {path}");
        }
        if report.problems.is_empty() {
            println!("  ok: no gaps, no duplicates, every file matches its checksum and row count");
        }
        problems += report.problems.len();
    }
    if problems > 0 {
        bail!("archive verify found {problems} problem(s)");
    }
    Ok(())
}

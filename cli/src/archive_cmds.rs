//! `meridian archiver` (the archiving service beside a broker) and `meridian archive
//! status|run|verify`. Both read the broker's config file: its `data_dir`, `broker_name`, `idc`
//! and `[archive]` table, so they always agree with the broker on where the archive is.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use meridian_archive::archiver::{self, Archiver, CrashMode, CrashPoint};
use meridian_archive::convert::ConvertOptions;
use meridian_archive::store::ArchiveStore;
use meridian_archive::{manifest, verify};
use meridian_broker::BrokerConfig;
use meridian_proto::time::format_seconds;
use tokio_util::sync::CancellationToken;

use crate::config;

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

fn archiver_of(broker: &BrokerConfig) -> Result<Archiver> {
    let mut options = ConvertOptions::new(broker.broker_name.clone());
    options.idc = (!broker.idc.is_empty()).then(|| broker.idc.clone());
    options.zstd_level = broker.archive.zstd_level;
    let mut archiver = Archiver::new(
        open_store(broker)?,
        options,
        broker.data_dir.join("commitlog"),
        Duration::from_secs(broker.archive.archive_after_secs),
    )?;
    // Test hook, read here and nowhere else: the end-to-end tests crash the archiver at a step.
    if let Ok(point) = std::env::var("MERIDIAN_ARCHIVE_CRASH_AT") {
        let point: CrashPoint = point.parse().map_err(anyhow::Error::msg)?;
        archiver = archiver.crash_at(point, CrashMode::Abort);
    }
    Ok(archiver)
}

/// The archiving loop of one broker: archive what is due, apply archive retention, sleep.
pub struct ArchiverLoop {
    archiver: Archiver,
    broker: BrokerConfig,
}

impl ArchiverLoop {
    /// The loop for the broker `broker` configures.
    pub fn new(broker: &BrokerConfig) -> Result<ArchiverLoop> {
        Ok(ArchiverLoop {
            archiver: archiver_of(broker)?,
            broker: broker.clone(),
        })
    }

    /// Runs until `stop`. Errors (an unreachable store) are logged and retried next round.
    pub async fn run(self, stop: CancellationToken) {
        let interval = Duration::from_secs(self.broker.archive.interval_secs);
        loop {
            match self.archiver.run_once(false, |_| {}).await {
                Ok(report) if !report.archived.is_empty() => tracing::info!(
                    segments = ?report.archived,
                    records = report.records,
                    "archive run done"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "archive run failed; retrying next round"),
            }
            match verify::expire(
                self.archiver.store(),
                self.archiver.broker(),
                &self.broker.archive,
                None,
            )
            .await
            {
                Ok(expired) if !expired.is_empty() => tracing::info!(?expired, "archive retention deleted files"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "archive retention failed; retrying next round"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// `meridian archiver`: archives the broker's segments until Ctrl-C or SIGTERM.
pub async fn archiver(args: ArchiverArgs) -> Result<()> {
    let broker = args.config.load()?;
    let service = ArchiverLoop::new(&broker)?;
    println!(
        "meridian archiver for broker {} ({}) into {}",
        broker.broker_name,
        broker.data_dir.display(),
        service.archiver.store().url
    );
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(service.run(stopped));
    tasks.close();
    crate::shutdown_signal().await;
    stop.cancel();
    tasks.wait().await;
    Ok(())
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
    let archiver = archiver_of(broker)?;
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

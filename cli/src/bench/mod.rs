//! `meridian bench`: load generators with a progress bar and an HDR-histogram summary, and the
//! disk baselines their figures are compared with in the same run (docs/benchmarks.md).
//!
//! One module per family, none importing another but [`measure`] (histograms, progress bars) and
//! [`disk`] (the baseline `produce` prints beside its figures): [`throughput`] (produce,
//! consume), [`messaging`] (delay, retry), [`nameserver`] (routes, registration). Start at
//! [`BenchCommand`].

mod disk;
mod measure;
mod messaging;
mod nameserver;
mod throughput;

use anyhow::Result;

/// `meridian bench ...`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Send messages as fast as the broker takes them.
    Produce(throughput::ProduceBench),
    /// Pull every message of a topic from the start.
    Consume(throughput::ConsumeBench),
    /// Baselines of this disk: sequential write rate and fdatasync latency.
    Disk(disk::DiskBench),
    /// Route lookups per second against the nameservers.
    Routes(nameserver::RoutesBench),
    /// Register many simulated brokers with many topics, then heartbeat steadily.
    Registration(nameserver::RegistrationBench),
    /// Write a generated archive (messages and trace events) for the SQL benchmarks.
    ArchiveGen(crate::sql_cmds::ArchiveGenArgs),
    /// Send delayed messages at a steady rate and check each delivery against its due time.
    Delay(messaging::DelayBench),
    /// Consume with a handler failing a fraction of first deliveries, against a pass failing none.
    Retry(messaging::RetryBench),
}

/// `meridian bench ...`.
pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Produce(args) => throughput::produce(args).await,
        BenchCommand::Consume(args) => throughput::consume(args).await,
        BenchCommand::Routes(args) => nameserver::routes(args).await,
        BenchCommand::Registration(args) => nameserver::registration(args).await,
        BenchCommand::ArchiveGen(args) => crate::sql_cmds::archive_gen(args).await,
        BenchCommand::Delay(args) => messaging::delay(args).await,
        BenchCommand::Retry(args) => messaging::retry(args).await,
        BenchCommand::Disk(args) => disk::disk(args).await,
    }
}

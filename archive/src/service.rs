//! The archiving service of one broker: every `interval_secs` it archives what is due
//! ([`Archiver::run_once`]) and applies archive retention ([`verify::expire`]), until shut down.
//! `meridian archiver` (its own process) and `meridian dev` (inside the broker's process) build a
//! [`ServiceConfig`] from the broker's config and call [`run`].
//!
//! Errors that may pass by themselves (an unreachable store, a timeout) are logged with how many
//! rounds in a row failed and retried next round. Errors that retrying cannot fix (a full disk or
//! quota, a read-only or forbidden location, bad config; see [`crate::ArchiveError::is_fatal`]) stop the
//! service with a logged reason and the error returned, so the operator sees it at once.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::archiver::{Archiver, CrashMode, CrashPoint};
use crate::convert::ConvertOptions;
use crate::error::Result;
use crate::group::{GroupView, Refusal};
use crate::store::{ArchiveConfig, ArchiveStore};
use crate::verify;

/// Everything the service needs, built by the process that runs it.
pub struct ServiceConfig {
    /// The broker (group) name archived under.
    pub broker: String,
    /// The broker's data center, written into every row (None: empty).
    pub idc: Option<String>,
    /// The broker's commitlog folder.
    pub commitlog_dir: PathBuf,
    /// The `[archive]` table.
    pub archive: ArchiveConfig,
    /// The store archived into (opened from `archive`).
    pub store: ArchiveStore,
    /// The broker's group (master-only archiving below the confirmed offset); None for an
    /// archiver that is the only writer of its broker's name.
    pub group: Option<Arc<dyn GroupView>>,
    /// Test hook: abort the process at this step of a run.
    pub crash_at: Option<CrashPoint>,
}

/// The service, built and ready to [`ArchiverService::run`].
pub struct ArchiverService {
    archiver: Archiver,
    archive: ArchiveConfig,
    grouped: bool,
}

impl ArchiverService {
    /// Builds the archiver `config` describes.
    pub fn new(config: ServiceConfig) -> Result<ArchiverService> {
        config.archive.validate()?;
        let mut options = ConvertOptions::new(config.broker);
        options.idc = config.idc;
        options.zstd_level = config.archive.zstd_level;
        let mut archiver = Archiver::new(
            config.store,
            options,
            config.commitlog_dir,
            Duration::from_secs(config.archive.archive_after_secs),
        )?;
        if let Some(point) = config.crash_at {
            archiver = archiver.crash_at(point, CrashMode::Abort);
        }
        let grouped = config.group.is_some();
        if let Some(group) = config.group {
            archiver = archiver.with_group(group);
        }
        Ok(ArchiverService {
            archiver,
            archive: config.archive,
            grouped,
        })
    }

    /// The store archived into.
    pub fn store(&self) -> &ArchiveStore {
        self.archiver.store()
    }

    /// Runs rounds until `shutdown` completes (`Ok`) or an error retrying cannot fix (`Err`,
    /// logged with the reason first).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let interval = Duration::from_secs(self.archive.interval_secs);
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        let mut last_refusal: Option<Refusal> = None;
        loop {
            let round = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                round = self.round(&mut last_refusal) => round,
            };
            match round {
                Ok(()) => failures = 0,
                Err(error) if error.is_fatal() => {
                    tracing::error!(
                        broker = self.archiver.broker(),
                        store = %self.store().url,
                        %error,
                        "archiver stopped: retrying cannot fix this; free space or fix the store, then restart the archiver"
                    );
                    return Err(error);
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(
                        broker = self.archiver.broker(),
                        %error,
                        failed_rounds = failures,
                        "archive round failed; retrying next round"
                    );
                }
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One round: archive what is due, then archive retention (only where this archiver may
    /// write the group's manifest).
    async fn round(&self, last_refusal: &mut Option<Refusal>) -> Result<()> {
        let report = self.archiver.run_once(false, |_| {}).await?;
        if !report.archived.is_empty() {
            tracing::info!(
                segments = ?report.archived,
                records = report.records,
                above_confirmed = report.above_confirmed,
                "archive run done"
            );
        }
        if report.refused != *last_refusal {
            match &report.refused {
                Some(refusal) => tracing::info!(broker = self.archiver.broker(), reason = %refusal, "not archiving"),
                None if self.grouped => {
                    tracing::info!(broker = self.archiver.broker(), "archiving as the group's master")
                }
                None => {}
            }
            *last_refusal = report.refused.clone();
        }
        if report.refused.is_some() {
            return Ok(());
        }
        let expired = verify::expire(self.archiver.store(), self.archiver.broker(), &self.archive, None).await?;
        if !expired.is_empty() {
            tracing::info!(?expired, "archive retention deleted files");
        }
        Ok(())
    }
}

/// Builds the service `config` describes and runs it until `shutdown` (see
/// [`ArchiverService::run`]).
pub async fn run(config: ServiceConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    ArchiverService::new(config)?.run(shutdown).await
}

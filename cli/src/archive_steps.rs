//! The tracer's archive steps, read from the archive's manifests: which commitlog segments of
//! which broker group are archived, when, and in which file each queue's offsets are. The tracer
//! shows them as `ArchiveWrite` steps of a message's timeline; the archive writes no trace event
//! per archived message.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meridian_archive::manifest;
use meridian_archive::reader::ArchiveReader;
use meridian_archive::store::ArchiveStore;
use meridian_tracer::timeline::{ArchiveSteps, Archived};
use tokio_util::sync::CancellationToken;

/// How often the manifests are read again (new entries only).
const REFRESH: Duration = Duration::from_secs(5);

/// The manifests of every broker group in one archive, kept up to date by [`ManifestSteps::run`].
pub struct ManifestSteps {
    store: ArchiveStore,
    readers: RwLock<BTreeMap<String, Arc<ArchiveReader>>>,
}

impl ManifestSteps {
    /// Steps from the archive in `store` (nothing is read until [`ManifestSteps::refresh`]).
    pub fn new(store: ArchiveStore) -> Arc<ManifestSteps> {
        Arc::new(ManifestSteps {
            store,
            readers: RwLock::new(BTreeMap::new()),
        })
    }

    /// Reads the entries committed since the last refresh, for every broker group.
    pub async fn refresh(&self) -> meridian_archive::Result<()> {
        for broker in manifest::brokers(&self.store).await? {
            let known = self.readers.read().expect("readers lock").get(&broker).cloned();
            let reader = match known {
                Some(reader) => reader,
                None => {
                    let reader = Arc::new(ArchiveReader::new(self.store.clone(), broker.clone())?);
                    self.readers
                        .write()
                        .expect("readers lock")
                        .insert(broker, reader.clone());
                    reader
                }
            };
            reader.refresh(false).await?;
        }
        Ok(())
    }

    /// Refreshes every few seconds until `stop`; a failed refresh is logged and tried again.
    pub async fn run(self: Arc<ManifestSteps>, stop: CancellationToken) {
        loop {
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, store = %self.store.url, "reading the archive's manifests for trace timelines failed; retrying");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    }
}

impl ArchiveSteps for ManifestSteps {
    fn archived(
        &self,
        broker: &str,
        commitlog_offset: u64,
        topic: &str,
        queue_id: u32,
        queue_offset: u64,
    ) -> Option<Archived> {
        let reader = self.readers.read().expect("readers lock").get(broker).cloned()?;
        reader.with_index(|index| {
            let (_, entry) = index.entries().range(..=commitlog_offset).next_back()?;
            if commitlog_offset >= entry.segment_end {
                return None;
            }
            let file = entry.files.iter().find(|file| {
                file.topic == topic
                    && file.queues.iter().any(|queue| {
                        queue.queue_id == queue_id && (queue.first_offset..=queue.last_offset).contains(&queue_offset)
                    })
            });
            Some(Archived {
                archived_at: entry.archived_at,
                file: match file {
                    Some(file) => format!("{}/{}", self.store.url.trim_end_matches('/'), file.path),
                    // A system topic the archive keeps elsewhere (trace events) or not at all.
                    None => self.store.url.clone(),
                },
            })
        })
    }
}

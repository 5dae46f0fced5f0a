//! The broker's epoch file (`meta/epochs.json`): the highest epoch seen and where each epoch of
//! the log starts. Read at open by the store, kept current by replication (`replica.rs`).

use serde::{Deserialize, Serialize};

/// The epoch file's path under the data dir.
pub(crate) const EPOCHS_FILE: &str = "meta/epochs.json";

/// The broker's epoch state (`meta/epochs.json`): the highest epoch it has seen, and where each
/// epoch of its log starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EpochFile {
    /// Highest epoch seen (from a nameserver or a master); a master at an older epoch is refused.
    pub seen: u64,
    /// `(epoch, start_offset)`, oldest first, epochs increasing, offsets not decreasing.
    pub epochs: Vec<(u64, u64)>,
}

impl EpochFile {
    /// Where the log of `epoch` ends in this lineage: the start of the first later epoch, or
    /// `end` when `epoch` is the latest.
    pub fn epoch_end(&self, epoch: u64, end: u64) -> u64 {
        self.epochs
            .iter()
            .find(|(later, _)| *later > epoch)
            .map_or(end, |(_, start)| *start)
    }
}

//! One archiver per broker group: who may archive, and how far.
//!
//! Every member of a broker group (master and slaves) may run an archiver, and all of them
//! write under the group's name. Only the group's current master archives, and only segments
//! wholly below the group's confirmed offset (what its ack policy holds, so no failover can
//! truncate it). The archiver learns both through a [`GroupView`] that the process composing it
//! supplies (`meridian archiver` asks the nameservers and its broker).
//!
//! The nameserver's answer can be stale by the time the entry is written, so the store also
//! carries an **epoch fence**: `fences/<group>/<epoch:020>`, created (with a conditional
//! create, which every supported store honours) by each master's archiver before it commits
//! anything at that epoch. An archiver refuses to commit when a fence of a later epoch exists,
//! and it checks the nameserver and the fences again right before every manifest commit. A
//! new master's fence therefore stops a demoted master's archiver at its next commit, and the
//! manifest entry itself is created only if absent, so one segment never gets two contents.
//!
//! Start reading at [`Gate::check`].

use std::future::Future;
use std::pin::Pin;

use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};

use crate::error::{ArchiveError, Result};
use crate::store::ArchiveStore;

/// Top folder of epoch fences.
pub const FENCES: &str = "fences";

/// This broker's place in its group, as the nameservers answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The group's epoch.
    pub epoch: u64,
    /// Whether this broker is the master elected at `epoch`.
    pub master: bool,
}

/// An answer of a [`GroupView`].
pub type GroupFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// What the archiver asks about its broker group. Implemented by the process that composes the
/// archiver (the nameservers' view for the standing, the broker for the confirmed offset).
pub trait GroupView: Send + Sync {
    /// This broker's standing in its group now; None for a standalone broker (no nameservers),
    /// the only writer of its name, which archives without epochs or fences.
    fn standing(&self) -> GroupFuture<'_, Option<Standing>>;
    /// The group's confirmed offset: every record below it is held as its ack policy demands.
    fn confirmed_offset(&self) -> GroupFuture<'_, u64>;
}

/// The fence folder of one group.
fn fence_dir(broker: &str) -> Result<Path> {
    meridian_proto::validate::validate_group(broker)?;
    Ok(Path::from(format!("{FENCES}/{broker}")))
}

/// Creates the fence of `epoch` for `broker` (nothing when it exists: the same master again).
pub async fn raise_fence(store: &ArchiveStore, broker: &str, epoch: u64) -> Result<()> {
    let path = Path::from(format!("{}/{epoch:020}", fence_dir(broker)?));
    let options = PutOptions::from(PutMode::Create);
    match store.inner.put_opts(&path, PutPayload::from(Vec::new()), options).await {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(source) => Err(store.error(format!("creating the epoch fence {path}"))(source)),
    }
}

/// The highest epoch fenced for `broker` (0 when none is).
pub async fn highest_fence(store: &ArchiveStore, broker: &str) -> Result<u64> {
    let dir = fence_dir(broker)?;
    let listed: Vec<object_store::ObjectMeta> = store
        .inner
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(store.error(format!("listing {dir}")))?;
    Ok(listed
        .iter()
        .filter_map(|meta| meta.location.filename()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0))
}

/// Why an archiver may not archive now (not an error: it waits for its next round).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The broker is not its group's master.
    NotMaster {
        /// The group's epoch.
        epoch: u64,
    },
    /// The group's epoch moved since the run started (this broker was demoted, or re-elected).
    EpochMoved {
        /// Epoch the run started at.
        started: u64,
        /// Epoch now (from the nameservers, or a later fence in the store).
        now: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotMaster { epoch } => write!(
                formatter,
                "this broker is not its group's master at epoch {epoch}; only the master archives"
            ),
            Refusal::EpochMoved { started, now } => write!(
                formatter,
                "the group's epoch moved from {started} to {now} during the run; this archiver no longer archives for it"
            ),
        }
    }
}

/// The checks of one archive run: the standing it started with, and the fences.
pub struct Gate<'a> {
    view: &'a dyn GroupView,
    store: &'a ArchiveStore,
    broker: &'a str,
    /// None: a standalone broker (nothing to check).
    epoch: Option<u64>,
}

impl<'a> Gate<'a> {
    /// Starts a run: the broker must be master; its epoch's fence is raised, and no later one
    /// may exist.
    pub async fn open(
        view: &'a dyn GroupView,
        store: &'a ArchiveStore,
        broker: &'a str,
    ) -> Result<std::result::Result<Gate<'a>, Refusal>> {
        let Some(standing) = view.standing().await? else {
            return Ok(Ok(Gate {
                view,
                store,
                broker,
                epoch: None,
            }));
        };
        if !standing.master {
            return Ok(Err(Refusal::NotMaster { epoch: standing.epoch }));
        }
        let fenced = highest_fence(store, broker).await?;
        if fenced > standing.epoch {
            return Ok(Err(Refusal::EpochMoved {
                started: standing.epoch,
                now: fenced,
            }));
        }
        raise_fence(store, broker, standing.epoch).await?;
        Ok(Ok(Gate {
            view,
            store,
            broker,
            epoch: Some(standing.epoch),
        }))
    }

    /// The epoch the run started at (None for a standalone broker).
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// Right before a manifest commit: still master at the same epoch, and no later fence.
    pub async fn check(&self) -> Result<std::result::Result<(), Refusal>> {
        let Some(started) = self.epoch else {
            return Ok(Ok(()));
        };
        let Some(standing) = self.view.standing().await? else {
            // The broker left its group's nameservers: it is not the master it started as.
            return Ok(Err(Refusal::NotMaster { epoch: started }));
        };
        if standing.epoch != started {
            return Ok(Err(Refusal::EpochMoved {
                started,
                now: standing.epoch,
            }));
        }
        if !standing.master {
            return Ok(Err(Refusal::NotMaster { epoch: standing.epoch }));
        }
        let fenced = highest_fence(self.store, self.broker).await?;
        if fenced > started {
            return Ok(Err(Refusal::EpochMoved { started, now: fenced }));
        }
        Ok(Ok(()))
    }

    /// The group's confirmed offset now.
    pub async fn confirmed_offset(&self) -> Result<u64> {
        self.view.confirmed_offset().await
    }
}

impl From<Refusal> for ArchiveError {
    fn from(refusal: Refusal) -> ArchiveError {
        ArchiveError::Refused(refusal.to_string())
    }
}

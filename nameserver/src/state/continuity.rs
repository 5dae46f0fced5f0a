//! Lost data centers: which data centers the nameservers' majority declared lost, since when and
//! why, and the last declarations and clearances ([`Continuity`]).
//!
//! Only the Raft leader decides (see `crate::continuity`, which judges from its own liveness
//! view); this module only records what it committed, so every node agrees on which data centers
//! are lost. Declaring a data center already lost, or clearing one that is not, changes nothing:
//! a leader that repeats a decision after an election does no harm.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::CommandError;

/// A lost data center as clients read it, defined in the admin contract.
pub use meridian_proto::admin::LostIdc;

/// Declarations and clearances kept, newest last.
pub const CONTINUITY_HISTORY_LEN: usize = 32;

/// One declaration or clearance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuityEvent {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The data center.
    pub idc: String,
    /// `true`: declared lost; `false`: cleared (its nodes came back).
    pub lost: bool,
    /// Why.
    pub reason: String,
}

/// Lost data centers and the recent declarations and clearances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continuity {
    /// Lost data centers by name.
    pub lost: BTreeMap<String, LostIdc>,
    /// The last [`CONTINUITY_HISTORY_LEN`] declarations and clearances, oldest first.
    pub history: Vec<ContinuityEvent>,
}

impl Continuity {
    /// Whether no data center was ever declared lost (nothing to record).
    pub fn is_empty(&self) -> bool {
        self.lost.is_empty() && self.history.is_empty()
    }

    /// Whether `idc` is declared lost.
    pub fn is_lost(&self, idc: &str) -> bool {
        self.lost.contains_key(idc)
    }

    /// Declares `idc` lost at `now_ms`. Returns whether this changed anything.
    pub fn declare_lost(&mut self, now_ms: u64, idc: String, reason: String) -> Result<bool, CommandError> {
        validate(&idc)?;
        if self.lost.contains_key(&idc) {
            return Ok(false);
        }
        self.lost.insert(
            idc.clone(),
            LostIdc {
                since_ms: now_ms,
                reason: reason.clone(),
            },
        );
        self.record(now_ms, idc, true, reason);
        Ok(true)
    }

    /// Clears `idc` (its nodes are back). Returns whether this changed anything.
    pub fn clear_lost(&mut self, now_ms: u64, idc: String, reason: String) -> Result<bool, CommandError> {
        validate(&idc)?;
        if self.lost.remove(&idc).is_none() {
            return Ok(false);
        }
        self.record(now_ms, idc, false, reason);
        Ok(true)
    }

    fn record(&mut self, at_ms: u64, idc: String, lost: bool, reason: String) {
        self.history.push(ContinuityEvent {
            at_ms,
            idc,
            lost,
            reason,
        });
        let excess = self.history.len().saturating_sub(CONTINUITY_HISTORY_LEN);
        self.history.drain(..excess);
    }
}

fn validate(idc: &str) -> Result<(), CommandError> {
    if idc.trim().is_empty() || idc.len() > 64 {
        return Err(CommandError::Invalid {
            message: format!(
                "data center name {idc:?} must be 1-64 characters: give the `idc` brokers and nameservers are configured with"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declaring_and_clearing_are_recorded_once() {
        let mut continuity = Continuity::default();
        assert!(continuity.declare_lost(10, "dc1".into(), "silent".into()).unwrap());
        assert!(
            !continuity.declare_lost(20, "dc1".into(), "again".into()).unwrap(),
            "a repeat changes nothing"
        );
        assert!(continuity.is_lost("dc1"));
        assert_eq!(continuity.lost["dc1"].since_ms, 10);
        assert!(!continuity.clear_lost(30, "dc2".into(), "back".into()).unwrap());
        assert!(continuity.clear_lost(40, "dc1".into(), "back".into()).unwrap());
        assert!(!continuity.is_lost("dc1"));
        assert_eq!(
            continuity
                .history
                .iter()
                .map(|event| (event.at_ms, event.lost))
                .collect::<Vec<_>>(),
            [(10, true), (40, false)]
        );
        assert!(continuity.declare_lost(50, " ".into(), "x".into()).is_err());
        for at in 0..100 {
            continuity.declare_lost(at, "dc3".into(), "x".into()).unwrap();
            continuity.clear_lost(at, "dc3".into(), "y".into()).unwrap();
        }
        assert_eq!(continuity.history.len(), CONTINUITY_HISTORY_LEN);
    }
}

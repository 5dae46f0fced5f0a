//! The archive: turns sealed, aged commitlog segments into Parquet on object storage, with a
//! manifest that makes each file visible atomically, and reads archived offsets back.
//!
//! - [`convert`]: one segment to Parquet files (one per topic and day), see [`schema`].
//! - [`traces`]: the trace topic's records as one row per trace event (`traces/date=...`).
//! - [`layout`]: the Hive-style paths, guarded by the shared name rule.
//! - [`store`]: the object store from config (local filesystem, in-memory, S3).
//! - [`manifest`]: per-broker manifest entries, one object per segment, written atomically.
//! - [`archiver`]: finds segments to archive, converts, uploads, commits; idempotent.
//! - [`group`]: one archiver per broker group (master only, below the confirmed offset, epoch
//!   fences).
//! - [`service`]: the archiving service (`run(config, shutdown)`): rounds, retention, stops.
//! - [`reader`]: the archive index and replay of a queue's offsets.
//! - [`verify`]: manifest against files (counts, checksums, gaps), and status.
//!
//! Start reading at [`archiver::Archiver::run_once`].

pub mod archiver;
pub mod convert;
pub mod error;
pub mod group;
pub mod layout;
pub mod manifest;
pub mod options;
pub mod reader;
pub mod sample;
pub mod schema;
pub mod service;
pub mod store;
pub mod traces;
pub mod verify;

pub use error::{ArchiveError, Result};

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod tests;

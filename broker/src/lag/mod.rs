//! Consumer lag, computed by the broker from what it holds: each group's committed offset of each
//! queue against the queue's end (lag in messages), and the store time of the oldest message not
//! yet consumed (lag in time), with a Burrow-style status per group.
//!
//! - [`compute`] walks the consumer offsets of every topic and answers [`QueueLag`]s grouped into
//!   [`GroupLag`]s; the HTTP API (`/api/broker/lag`) and [`LagCollector`] (scraped with
//!   `/metrics`) both call it, so a figure is never older than the request that shows it.
//! - [`LagTracker`] keeps a window of the last [`WINDOW`] commits of each group's queue (offset,
//!   lag at the commit, when), fed by the commit handler.
//! - [`evaluate`] is the pure function of LinkedIn Burrow's rules over one window (start reading
//!   there): REWIND, OK, STOP, STALL, WARN, in that order; a group takes its worst queue's status.
//!
//! Meridian's SDK commits only offsets that moved, so a consumer stuck on one message shows as STOP
//! (no commit comes); RocketMQ clients commit every few seconds regardless and show STALL.
//!
//! [`LagTracker`], [`compute`] and [`evaluate`] are in `tracker.rs`; [`LagCollector`], which reads
//! the broker's state at each scrape, in `collector.rs`.

mod collector;
mod tracker;

pub use collector::LagCollector;
pub use tracker::{
    CommitSample, GroupLag, LagTracker, PullSample, QueueLag, Status, WINDOW, compute, evaluate, now_ms,
};

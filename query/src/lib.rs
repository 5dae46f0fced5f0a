//! The query service: SQL and forecasting over the archive with DataFusion. It reads only the
//! archive's object store (never a broker's disk), and only the files committed manifests name.
//!
//! - [`service`]: [`QueryService`], the session with the tables `messages` and `traces`, the views
//!   (`hourly_volume`, `consume_latency`, `hourly_consume_latency`, `broker_stats`) and the limits
//!   (read-only, memory, timeout, answer size).
//! - [`committed`]: the read-only view of the store that shows committed files only.
//! - [`tail`]: the live tail (`live_messages`): stored messages not archived yet, read from a
//!   broker's commitlog beside the service (`meridian dev`), so `messages` has no gap.
//! - [`forecast`]: `forecast(...)`, `forecast_topic_volume(...)`, `forecast_backlog(...)` (augurs).
//! - [`http`]: `POST /api/sql`; [`format`]: table, JSON, CSV and Arrow IPC answers.
//! - [`generate`]: archives with known contents, for tests and benchmarks.
//! - [`udf`]: DataFusion functions replaced by faster ones for the archive's data (`date_trunc`).
//!
//! Start reading at [`QueryService::open`] and [`QueryService::sql`].

pub mod committed;
pub mod config;
pub mod error;
pub mod forecast;
pub mod format;
pub mod generate;
pub mod http;
pub mod metrics;
pub mod read_only;
pub mod service;
pub mod tail;
pub mod udf;

pub use config::{QueryConfig, QueryServiceConfig};
pub use error::{QueryError, Result};
pub use metrics::QueryMetrics;
pub use service::{QueryAnswer, QueryService};

#[cfg(test)]
mod slt;
#[cfg(test)]
mod tests;

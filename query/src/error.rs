//! The query service's errors. Each says what is wrong and what to do; [`QueryError::status`]
//! maps it once to an HTTP status.

use serde::Serialize;

/// Where in the SQL text an error is, when DataFusion or the parser says (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SqlPosition {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

/// Everything a query can fail with.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement would change something (DDL, DML, COPY, SET): the service is read-only.
    #[error(
        "{what} is refused: the query service is read-only over the archive; run SELECT, EXPLAIN, SHOW or DESCRIBE instead"
    )]
    ReadOnly {
        /// What was refused (`CREATE EXTERNAL TABLE`, `INSERT`, `COPY`, `SET` ...).
        what: String,
    },
    /// The SQL does not parse or does not plan (unknown table or column, type errors ...).
    #[error("{message}")]
    Sql {
        /// DataFusion's message, with the position when known.
        message: String,
        /// Where, when known.
        position: Option<SqlPosition>,
    },
    /// The query ran longer than the timeout and was cancelled.
    #[error(
        "query cancelled after {seconds} s (query.timeout_secs): narrow it with a filter on date, topic or store_timestamp, aggregate more, or raise the timeout"
    )]
    Timeout {
        /// The timeout.
        seconds: f64,
    },
    /// The query needed more memory than the limit and could not spill.
    #[error(
        "query needs more memory than query.memory_limit_mb = {limit_mb} MiB allows: aggregate more, add filters or a LIMIT, or raise the limit ({detail})"
    )]
    MemoryLimit {
        /// The limit.
        limit_mb: u64,
        /// DataFusion's message (which operator, how much).
        detail: String,
    },
    /// The answer has more rows than the service returns at once.
    #[error("the answer has more than {limit} rows (query.max_result_rows): add a LIMIT or aggregate")]
    TooManyRows {
        /// The limit.
        limit: usize,
    },
    /// A request the HTTP API cannot take (bad format name, empty SQL ...).
    #[error("{0}")]
    BadRequest(String),
    /// A forecasting function was called with bad arguments or data it cannot model.
    #[error("{0}")]
    Forecast(String),
    /// The archive could not be read (store unreachable, manifest unreadable).
    #[error("reading the archive: {0}")]
    Archive(#[from] meridian_archive::ArchiveError),
    /// Anything else DataFusion reports while executing.
    #[error("query failed: {0}")]
    Execution(String),
}

/// The query service's result type.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

impl QueryError {
    /// The HTTP status of the error.
    pub fn status(&self) -> u16 {
        match self {
            QueryError::ReadOnly { .. } => 403,
            QueryError::Sql { .. } | QueryError::BadRequest(_) | QueryError::Forecast(_) => 400,
            QueryError::TooManyRows { .. } => 413,
            QueryError::Timeout { .. } => 408,
            QueryError::MemoryLimit { .. } => 507,
            QueryError::Archive(_) => 503,
            QueryError::Execution(_) => 500,
        }
    }

    /// A short machine-readable kind, as in the JSON error body.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::ReadOnly { .. } => "read_only",
            QueryError::Sql { .. } => "sql",
            QueryError::Timeout { .. } => "timeout",
            QueryError::MemoryLimit { .. } => "memory_limit",
            QueryError::TooManyRows { .. } => "too_many_rows",
            QueryError::BadRequest(_) => "bad_request",
            QueryError::Forecast(_) => "forecast",
            QueryError::Archive(_) => "archive",
            QueryError::Execution(_) => "execution",
        }
    }

    /// The position in the SQL, when known.
    pub fn position(&self) -> Option<SqlPosition> {
        match self {
            QueryError::Sql { position, .. } => *position,
            _ => None,
        }
    }
}

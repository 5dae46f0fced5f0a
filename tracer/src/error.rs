//! Errors of the tracer.

use meridian_proto::ErrorCode;

/// What can go wrong in the tracer.
#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    /// tantivy failed.
    #[error("trace index: {0}")]
    Index(String),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The config is invalid.
    #[error("tracer config: {0}")]
    Config(String),
    /// A lookup's input is invalid (msgId, key, time range, page).
    #[error("{0}")]
    InvalidLookup(String),
    /// Nothing was traced for the message.
    #[error("{0}")]
    NotFound(String),
    /// Talking to brokers or nameservers failed.
    #[error(transparent)]
    Client(#[from] meridian_client::ClientError),
}

impl From<tantivy::TantivyError> for TracerError {
    fn from(error: tantivy::TantivyError) -> TracerError {
        TracerError::Index(error.to_string())
    }
}

impl TracerError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TracerError {
        let context = context.into();
        move |source| TracerError::Io { context, source }
    }

    /// The shared error code (and so the HTTP status) of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            TracerError::InvalidLookup(_) | TracerError::Config(_) => ErrorCode::InvalidArgument,
            TracerError::NotFound(_) => ErrorCode::TopicNotFound,
            TracerError::Client(error) => error.code().unwrap_or(ErrorCode::Unavailable),
            TracerError::Index(_) | TracerError::Io { .. } => ErrorCode::Internal,
        }
    }
}

/// Results of the tracer.
pub type Result<T, E = TracerError> = std::result::Result<T, E>;

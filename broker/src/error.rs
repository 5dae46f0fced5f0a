//! Broker errors. Each maps once to a wire [`ErrorCode`] with a message for the user.

use meridian_proto::{ErrorCode, ValidationError};

/// Errors of the storage engine and the request handlers.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A request broke a shared validation rule.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The topic is not on this broker.
    #[error("topic {0:?} does not exist on this broker; create it with `meridian topic create {0} --queues N`")]
    TopicNotFound(String),
    /// The queue id is outside the topic's queues.
    #[error("queue {queue_id} does not exist: topic {topic:?} has queues 0..{queues}")]
    QueueNotFound {
        /// Topic name.
        topic: String,
        /// Requested queue.
        queue_id: u32,
        /// Queues the topic has.
        queues: u32,
    },
    /// The topic exists with a different queue count.
    #[error("topic {topic:?} already exists with {queues} queues")]
    TopicExists {
        /// Topic name.
        topic: String,
        /// Its queue count.
        queues: u32,
    },
    /// A record does not fit a segment.
    #[error(
        "message record of {size} bytes does not fit a commitlog segment of {segment_size} bytes; raise store.segment_size or send smaller messages"
    )]
    RecordTooLarge {
        /// Record size.
        size: usize,
        /// Segment size.
        segment_size: u64,
    },
    /// A request body could not be decoded.
    #[error("request body is malformed: {0}")]
    MalformedBody(String),
    /// The sync flush did not complete in time.
    #[error(
        "message stored but not flushed to disk within {0} ms (store.sync_flush_timeout_ms); it may be delivered, and a retry may duplicate it"
    )]
    FlushTimeout(u64),
    /// The broker is shutting down.
    #[error("broker is shutting down; retry against another broker or after restart")]
    ShuttingDown,
    /// A disk operation failed.
    #[error("storage i/o error while {context}: {source}")]
    Io {
        /// What the broker was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Data on disk is not what the broker wrote.
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    /// A request a nameserver serves, sent to a broker.
    #[error("{} is a nameserver request; send it to a nameserver, not to a broker", .0.as_str())]
    NotABrokerRequest(meridian_proto::RequestCode),
    /// A configuration value is unusable.
    #[error("invalid broker config: {0}")]
    Config(String),
}

impl BrokerError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BrokerError {
        let context = context.into();
        move |source| BrokerError::Io { context, source }
    }

    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::Validation(error) => error.code(),
            BrokerError::TopicNotFound(_) => ErrorCode::TopicNotFound,
            BrokerError::QueueNotFound { .. } => ErrorCode::QueueNotFound,
            BrokerError::TopicExists { .. } => ErrorCode::AlreadyExists,
            BrokerError::RecordTooLarge { .. } => ErrorCode::MessageTooLarge,
            BrokerError::MalformedBody(_) => ErrorCode::MalformedFrame,
            BrokerError::FlushTimeout(_) => ErrorCode::FlushTimeout,
            BrokerError::ShuttingDown => ErrorCode::Unavailable,
            BrokerError::Io { .. } | BrokerError::Corrupt(_) => ErrorCode::Internal,
            BrokerError::Config(_) => ErrorCode::InvalidArgument,
            BrokerError::NotABrokerRequest(_) => ErrorCode::UnsupportedRequest,
        }
    }
}

/// Result alias of the broker.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

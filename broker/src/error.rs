//! Broker errors. Each maps once to a wire [`ErrorCode`] with a message for the user.

use meridian_proto::{ErrorCode, ValidationError};

/// Errors of the storage engine and the request handlers.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A request broke a shared validation rule.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The topic is not on this broker.
    #[error(
        "topic {0:?} does not exist on this broker; create it with `meridian topic create {0} --queues N --broker HOST:PORT` (a standalone broker) or through its nameservers"
    )]
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
    /// The store stopped taking writes after a disk failure (a failed sync or write).
    #[error(
        "the broker's disk failed, so it takes no writes until it is restarted: {0}; send to another broker of the group (the producer retries elsewhere)"
    )]
    DiskFailed(String),
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
    /// A governed broker was sent a topic its nameservers have not approved for its group.
    #[error(
        "topic {topic:?} is not approved on broker group {broker_group:?} (it is unknown, awaiting approval or rejected; `meridian topic describe {topic}` shows which): request it with `meridian topic request {topic} --owner TEAM --queues N` and have an admin approve it"
    )]
    TopicNotApproved {
        /// Topic name.
        topic: String,
        /// This broker's group.
        broker_group: String,
    },
    /// The topic is approved without the write permission.
    #[error(
        "topic {topic:?} is read-only on broker group {broker_group:?}: its approval does not allow sends; ask an admin to give it write permission (`meridian topic describe {topic}` shows its permission)"
    )]
    TopicNotWritable {
        /// Topic name.
        topic: String,
        /// This broker's group.
        broker_group: String,
    },
    /// The topic is approved without the read permission.
    #[error(
        "topic {topic:?} is write-only on broker group {broker_group:?}: its approval does not allow consuming; ask an admin to give it read permission (`meridian topic describe {topic}` shows its permission)"
    )]
    TopicNotReadable {
        /// Topic name.
        topic: String,
        /// This broker's group.
        broker_group: String,
    },
    /// A governed broker was sent a consumer group its nameservers have not approved.
    #[error(
        "consumer group {group:?} is not approved (unknown, awaiting approval or rejected; `meridian group describe {group}` shows which): request it with `meridian group request {group} --owner TEAM --topics T` and have an admin approve it"
    )]
    GroupNotApproved {
        /// Consumer group name.
        group: String,
    },
    /// The consumer group is approved, but not for this topic.
    #[error(
        "consumer group {group:?} is approved for topics [{}] but not for topic {topic:?}: update the group to add {topic:?} and have an admin approve the change (`meridian group describe {group}` shows its topics)",
        .topics.join(", ")
    )]
    GroupTopicNotApproved {
        /// Consumer group name.
        group: String,
        /// The topic asked for.
        topic: String,
        /// The topics the group may consume.
        topics: Vec<String>,
    },
    /// `CreateTopic` sent to a broker whose topics its nameservers govern.
    #[error(
        "topics of this broker are governed by its nameservers ({}): create topic {topic:?} with `meridian topic create {topic} --queues N --nameserver {}` (admin shortcut) or request it with `meridian topic request {topic} --owner TEAM --queues N`",
        .nameservers.join(", "),
        .nameservers.first().map_or("ADDR", String::as_str)
    )]
    TopicsGoverned {
        /// Topic name.
        topic: String,
        /// The broker's nameservers.
        nameservers: Vec<String>,
    },
    /// A governed broker has not yet received what its nameservers approved.
    #[error(
        "broker group {broker_group:?} has not yet received its approved topics and consumer groups from its nameservers ({}); retry shortly, and check that the nameservers are running",
        .nameservers.join(", ")
    )]
    ApprovalsPending {
        /// This broker's group.
        broker_group: String,
        /// The broker's nameservers.
        nameservers: Vec<String>,
    },
    /// A write reached a broker that is not its group's master (a slave, a fenced master, or a
    /// master whose lease lapsed).
    #[error("{0}")]
    NotMaster(String),
    /// The write did not reach the replicas its group's ack policy needs in time.
    #[error(
        "message appended on the master but not replicated as ack policy {policy} needs within {timeout_ms} ms (replication.ack_timeout_ms): {shortfall}. It is NOT acknowledged and a retry may duplicate it. Check the slaves with `meridian cluster status`"
    )]
    ReplicationTimeout {
        /// The group's policy.
        policy: &'static str,
        /// What was missing when time ran out: the count, for `idc_safe` the missing replica
        /// outside the master's data center, and the replicas behind.
        shortfall: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The broker's data center is evacuated by a failover drill; it takes no writes.
    #[error(
        "broker group {broker_group:?} is in data center {idc:?}, which a failover drill evacuated: it takes no writes (`meridian drill status` shows the drill). Send to a broker in another data center; clients refresh their route and do so by themselves"
    )]
    Evacuated {
        /// This broker's group.
        broker_group: String,
        /// Its data center.
        idc: String,
    },
    /// A send over its topic's produce limit ([`crate::throttle`]).
    #[error(
        "topic {topic:?} is over its produce limit on broker group {broker_group:?}: {limit}; {}{retry_after_ms} ms (Meridian's SDK waits and retries by itself), or raise the limit with `meridian topic limit {topic} --messages N`",
        meridian_proto::quota::RETRY_IN
    )]
    Throttled {
        /// Topic name.
        topic: String,
        /// This broker's group.
        broker_group: String,
        /// The limit and this group's share of it, for people.
        limit: String,
        /// How long until a send fits again.
        retry_after_ms: u64,
    },
    /// A client whose SDK breaks the cluster's policy, which says to refuse offenders.
    #[error("{0}")]
    SdkRefused(String),
    /// A replication request that does not fit this broker's state.
    #[error("replication refused: {0}")]
    ReplicationRefused(String),
    /// An ordinary send to a system topic.
    #[error(
        "topic {0:?} is a system topic: only brokers write to it (trace events, delayed, half, retried and dead-lettered messages); send to one of your own topics, and use the SDK's delay, transaction and retry features to reach the others"
    )]
    SystemTopic(String),
    /// A request named a commitlog offset where no record starts.
    #[error(
        "no message record starts at commitlog offset {0} on this broker; pass the offset the message was delivered with"
    )]
    InvalidOffset(u64),
    /// A request that breaks a rule of a messaging feature (batching delayed messages, a msgId
    /// that does not match the record, a transaction without a producer group, ...).
    #[error("{0}")]
    Refused(String),
    /// The ACL does not let the connection's user do this (`[auth] authorization`).
    #[error("{0}")]
    PermissionDenied(#[from] meridian_proto::acl::AccessDenied),
    /// A request about a consumer group this broker does not know.
    #[error("consumer group {group:?} is unknown on this broker: {hint}")]
    UnknownGroup {
        /// The group.
        group: String,
        /// What to do.
        hint: String,
    },
    /// An orderly consumer's queue lock is held by another member.
    #[error("queue {queue_id} of topic {topic:?} is locked by another member of group {group:?} ({holder})")]
    QueueLocked {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Queue.
        queue_id: u32,
        /// The member holding it.
        holder: String,
    },
    /// A commit from a position older than the group's last offset reset.
    #[error(
        "offsets of group {group:?} on topic {topic:?} were reset (generation {current}, this commit is from {given}); re-read the offset and continue from it"
    )]
    OffsetReset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// The current generation.
        current: u64,
        /// The commit's.
        given: u64,
    },
    /// A client's trace report that is malformed.
    #[error("trace report refused: {0}")]
    InvalidTrace(String),
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
            BrokerError::ShuttingDown | BrokerError::DiskFailed(_) => ErrorCode::Unavailable,
            BrokerError::Io { .. } | BrokerError::Corrupt(_) => ErrorCode::Internal,
            BrokerError::Config(_) => ErrorCode::InvalidArgument,
            BrokerError::NotABrokerRequest(_) => ErrorCode::UnsupportedRequest,
            BrokerError::TopicNotApproved { .. } | BrokerError::GroupNotApproved { .. } => ErrorCode::NotApproved,
            BrokerError::TopicNotWritable { .. }
            | BrokerError::TopicNotReadable { .. }
            | BrokerError::GroupTopicNotApproved { .. }
            | BrokerError::TopicsGoverned { .. } => ErrorCode::FailedPrecondition,
            BrokerError::ApprovalsPending { .. } => ErrorCode::Unavailable,
            BrokerError::NotMaster(_) => ErrorCode::NotMaster,
            BrokerError::ReplicationTimeout { .. } => ErrorCode::ReplicationTimeout,
            BrokerError::ReplicationRefused(_) => ErrorCode::FailedPrecondition,
            BrokerError::SystemTopic(_) | BrokerError::InvalidTrace(_) => ErrorCode::InvalidArgument,
            BrokerError::Evacuated { .. } => ErrorCode::Evacuated,
            BrokerError::Throttled { .. } => ErrorCode::Throttled,
            BrokerError::SdkRefused(_) => ErrorCode::FailedPrecondition,
            BrokerError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            BrokerError::InvalidOffset(_) | BrokerError::Refused(_) => ErrorCode::InvalidArgument,
            BrokerError::UnknownGroup { .. } => ErrorCode::GroupNotFound,
            BrokerError::QueueLocked { .. } | BrokerError::OffsetReset { .. } => ErrorCode::FailedPrecondition,
        }
    }
}

/// Result alias of the broker.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

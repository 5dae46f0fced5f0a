//! Request codes and error codes.
//!
//! Every error that crosses the wire maps to exactly one [`ErrorCode`]; each code maps once to an
//! HTTP status ([`ErrorCode::http_status`]) and says whether a client may retry it.

/// What a request asks the server to do. Sent in [`crate::Header::code`] of a request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RequestCode {
    /// Append one or more messages to a topic ([`crate::messages::SendRequest`]).
    Send = 10,
    /// Read messages from a queue ([`crate::messages::PullRequest`]).
    Pull = 11,
    /// Store a consumer group's offset for a queue.
    CommitOffset = 12,
    /// Read a consumer group's stored offset for a queue.
    QueryOffset = 13,
    /// Min and max offsets of a queue.
    QueueInfo = 14,
    /// First offset of a queue whose message was stored at or after a timestamp.
    SearchOffset = 15,
    /// A client reports trace events only it knows (consume start and end) as a
    /// [`crate::trace::TraceBatch`]; the broker checks them and writes them to the trace topic.
    TraceReport = 16,
    /// A consumer could not consume a message: the broker schedules it again on the group's retry
    /// topic, or dead-letters it after the group's maximum ([`crate::messages::SendBackRequest`]).
    SendBack = 17,
    /// Move a consumer group's offsets of a topic to a time, the earliest or the latest offset
    /// while its consumers run ([`crate::messages::ResetOffsetRequest`]).
    ResetOffset = 18,
    /// A producer ends a transaction: commit or roll back a half message
    /// ([`crate::messages::EndTransactionRequest`]).
    EndTransaction = 19,
    /// Create a topic on a standalone broker (one without nameservers; a governed broker refuses it
    /// and names the nameserver commands instead).
    CreateTopic = 20,
    /// Route of a topic as this broker knows it.
    TopicRoute = 21,
    /// Put dead letters of a group back on its retry topic
    /// ([`crate::messages::DeadLetterResendRequest`]).
    DeadLetterResend = 22,
    /// A producer asks which of its group's half messages wait for a check-back
    /// ([`crate::messages::CheckTransactionsRequest`]).
    CheckTransactions = 23,
    /// A consumer announces itself in a group.
    ConsumerHeartbeat = 30,
    /// The members of a consumer group.
    ConsumerList = 31,
    /// A consumer leaves its group.
    ConsumerLeave = 32,
    /// An orderly consumer takes (or renews) the broker-side lock of queues
    /// ([`crate::messages::LockQueuesRequest`] → [`crate::messages::LockQueuesResponse`]).
    LockQueues = 33,
    /// An orderly consumer releases queue locks ([`crate::messages::LockQueuesRequest`]).
    UnlockQueues = 34,
    /// A producer reports it is alive, with its send latency and message sizes
    /// ([`crate::messages::ProducerHeartbeat`]).
    ProducerHeartbeat = 35,
    /// A broker reports it is alive, with a digest of its registration
    /// ([`crate::messages::BrokerHeartbeat`] → [`crate::messages::BrokerHeartbeatResponse`]).
    BrokerHeartbeat = 40,
    /// A broker's full registration, its topic list compressed
    /// ([`crate::messages::BrokerRegistration`] → [`crate::messages::BrokerHeartbeatResponse`]).
    RegisterBroker = 41,
    /// The approved topics and consumer groups a broker group serves
    /// ([`crate::messages::BrokerMetadataRequest`] → [`crate::messages::BrokerMetadata`]).
    BrokerMetadata = 42,
    /// A change to the nameserver's metadata, JSON-encoded; any node forwards it to the Raft leader.
    NameserverWrite = 43,
    /// A question about the nameserver's metadata (topics, groups, history, cluster), JSON-encoded.
    NameserverRead = 44,
    /// Which data center an IP address is in, by the nameservers' IDC map
    /// ([`crate::messages::IdcLookupRequest`] → [`crate::messages::IdcLookupResponse`]).
    IdcLookup = 45,
    /// Raft `AppendEntries` between nameservers (JSON-encoded openraft request).
    RaftAppend = 50,
    /// Raft `RequestVote` between nameservers.
    RaftVote = 51,
    /// Raft `InstallSnapshot`: one chunk of a snapshot ([`crate::messages::RaftSnapshotChunk`]).
    RaftSnapshot = 52,
    /// A slave fetches the master's commitlog from an offset, reporting what it holds
    /// ([`crate::messages::ReplicaFetch`] → [`crate::messages::ReplicaFetchResponse`]).
    ReplicaFetch = 60,
    /// First step of a login ([`crate::auth::AuthHello`] → [`crate::auth::AuthChallenge`]).
    AuthHello = 70,
    /// Second step of a login ([`crate::auth::AuthProof`] → [`crate::auth::AuthOk`]).
    AuthProof = 71,
}

impl RequestCode {
    /// Every request code, for exhaustive tests and docs.
    pub const ALL: [RequestCode; 32] = [
        RequestCode::Send,
        RequestCode::Pull,
        RequestCode::CommitOffset,
        RequestCode::QueryOffset,
        RequestCode::QueueInfo,
        RequestCode::SearchOffset,
        RequestCode::TraceReport,
        RequestCode::SendBack,
        RequestCode::ResetOffset,
        RequestCode::EndTransaction,
        RequestCode::CreateTopic,
        RequestCode::TopicRoute,
        RequestCode::DeadLetterResend,
        RequestCode::CheckTransactions,
        RequestCode::ConsumerHeartbeat,
        RequestCode::ConsumerList,
        RequestCode::ConsumerLeave,
        RequestCode::LockQueues,
        RequestCode::UnlockQueues,
        RequestCode::ProducerHeartbeat,
        RequestCode::BrokerHeartbeat,
        RequestCode::RegisterBroker,
        RequestCode::BrokerMetadata,
        RequestCode::NameserverWrite,
        RequestCode::NameserverRead,
        RequestCode::IdcLookup,
        RequestCode::RaftAppend,
        RequestCode::RaftVote,
        RequestCode::RaftSnapshot,
        RequestCode::ReplicaFetch,
        RequestCode::AuthHello,
        RequestCode::AuthProof,
    ];

    /// The code for a raw value, or `None` when this build does not know it.
    pub fn from_u32(value: u32) -> Option<RequestCode> {
        RequestCode::ALL.into_iter().find(|code| *code as u32 == value)
    }

    /// A short lowercase name, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestCode::Send => "send",
            RequestCode::Pull => "pull",
            RequestCode::CommitOffset => "commit_offset",
            RequestCode::QueryOffset => "query_offset",
            RequestCode::QueueInfo => "queue_info",
            RequestCode::SearchOffset => "search_offset",
            RequestCode::TraceReport => "trace_report",
            RequestCode::SendBack => "send_back",
            RequestCode::ResetOffset => "reset_offset",
            RequestCode::EndTransaction => "end_transaction",
            RequestCode::DeadLetterResend => "dead_letter_resend",
            RequestCode::CheckTransactions => "check_transactions",
            RequestCode::LockQueues => "lock_queues",
            RequestCode::UnlockQueues => "unlock_queues",
            RequestCode::ProducerHeartbeat => "producer_heartbeat",
            RequestCode::CreateTopic => "create_topic",
            RequestCode::TopicRoute => "topic_route",
            RequestCode::ConsumerHeartbeat => "consumer_heartbeat",
            RequestCode::ConsumerList => "consumer_list",
            RequestCode::ConsumerLeave => "consumer_leave",
            RequestCode::BrokerHeartbeat => "broker_heartbeat",
            RequestCode::RegisterBroker => "register_broker",
            RequestCode::BrokerMetadata => "broker_metadata",
            RequestCode::NameserverWrite => "nameserver_write",
            RequestCode::NameserverRead => "nameserver_read",
            RequestCode::IdcLookup => "idc_lookup",
            RequestCode::RaftAppend => "raft_append",
            RequestCode::RaftVote => "raft_vote",
            RequestCode::RaftSnapshot => "raft_snapshot",
            RequestCode::ReplicaFetch => "replica_fetch",
            RequestCode::AuthHello => "auth_hello",
            RequestCode::AuthProof => "auth_proof",
        }
    }
}

/// Outcome of a request, sent in [`crate::Header::code`] of a response frame. `Ok` is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// The request succeeded.
    Ok = 0,
    /// The frame could not be decoded; the server closes the connection after saying so.
    MalformedFrame = 1,
    /// The request code is unknown to this server.
    UnsupportedRequest = 2,
    /// A field of the request breaks a validation rule (name, key, tag, property).
    InvalidArgument = 3,
    /// A message, batch or frame is larger than the configured limit.
    MessageTooLarge = 4,
    /// The topic does not exist on this broker.
    TopicNotFound = 5,
    /// The queue id is outside the topic's queues.
    QueueNotFound = 6,
    /// The consumer group is unknown.
    GroupNotFound = 7,
    /// The server is overloaded; retry after a back-off.
    Busy = 8,
    /// The message was appended but not synced within the flush timeout. It may still be stored:
    /// a retry can duplicate it (at-least-once).
    FlushTimeout = 9,
    /// The server is starting or stopping.
    Unavailable = 10,
    /// The requested offset is outside what the queue holds.
    OffsetOutOfRange = 11,
    /// An error inside the server (disk full, I/O error); the server log says more.
    Internal = 12,
    /// The topic or group already exists.
    AlreadyExists = 13,
    /// The topic or consumer group exists but is not approved (requested or rejected): it cannot
    /// be used until an admin approves it.
    NotApproved = 14,
    /// The request is valid but the thing it acts on is not in a state that allows it (approving
    /// a topic already rejected, deleting a topic still subscribed, a stale election, a switchover
    /// to a slave that is not in sync, a replica fetch from a member with another segment size).
    FailedPrecondition = 15,
    /// The broker is not the master of its group at the current epoch (it is a slave, was fenced,
    /// or cannot renew its lease): refresh the route and send to the master it names.
    NotMaster = 16,
    /// The message was appended on the master but did not reach the replicas its group's ack
    /// policy needs in time. It is not acknowledged; a retry can duplicate it (at-least-once).
    ReplicationTimeout = 17,
    /// The broker's data center is evacuated by a failover drill (`meridian drill evacuate`): it
    /// takes no writes. Refresh the route and send to a broker in another data center.
    Evacuated = 18,
    /// The send is over its topic's produce limit (`meridian topic limit`). Answered at once; the
    /// message says how long to wait (`retry in N ms`, read by [`crate::quota::retry_after`]) and
    /// Meridian's SDK waits that long before sending again.
    Throttled = 19,
    /// The connection has not logged in, or its login failed ([`crate::auth`]); the server closes
    /// it after saying so.
    Unauthenticated = 20,
    /// The connection logged in, but who it is may not make this request.
    PermissionDenied = 21,
}

impl ErrorCode {
    /// Every error code, for exhaustive tests and docs.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::Ok,
        ErrorCode::MalformedFrame,
        ErrorCode::UnsupportedRequest,
        ErrorCode::InvalidArgument,
        ErrorCode::MessageTooLarge,
        ErrorCode::TopicNotFound,
        ErrorCode::QueueNotFound,
        ErrorCode::GroupNotFound,
        ErrorCode::Busy,
        ErrorCode::FlushTimeout,
        ErrorCode::Unavailable,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::Internal,
        ErrorCode::AlreadyExists,
        ErrorCode::NotApproved,
        ErrorCode::FailedPrecondition,
        ErrorCode::NotMaster,
        ErrorCode::ReplicationTimeout,
        ErrorCode::Evacuated,
        ErrorCode::Throttled,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
    ];

    /// The code for a raw value; unknown values (from a newer server) read as `Internal`.
    pub fn from_u32(value: u32) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|code| *code as u32 == value)
            .unwrap_or(ErrorCode::Internal)
    }

    /// Whether a client may send the same request again after a back-off.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::Busy
                | ErrorCode::Unavailable
                | ErrorCode::FlushTimeout
                | ErrorCode::NotMaster
                | ErrorCode::ReplicationTimeout
                | ErrorCode::Evacuated
                | ErrorCode::Throttled
        )
    }

    /// The HTTP status an HTTP API answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Ok => 200,
            ErrorCode::MalformedFrame | ErrorCode::InvalidArgument | ErrorCode::OffsetOutOfRange => 400,
            ErrorCode::UnsupportedRequest => 501,
            ErrorCode::MessageTooLarge => 413,
            ErrorCode::TopicNotFound | ErrorCode::QueueNotFound | ErrorCode::GroupNotFound => 404,
            ErrorCode::AlreadyExists | ErrorCode::FailedPrecondition => 409,
            ErrorCode::NotApproved => 403,
            ErrorCode::Busy | ErrorCode::Throttled => 429,
            ErrorCode::FlushTimeout | ErrorCode::ReplicationTimeout => 504,
            ErrorCode::NotMaster => 421,
            ErrorCode::Unavailable | ErrorCode::Evacuated => 503,
            ErrorCode::Internal => 500,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
        }
    }

    /// A short lowercase name, for logs, metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Ok => "ok",
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnsupportedRequest => "unsupported_request",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::TopicNotFound => "topic_not_found",
            ErrorCode::QueueNotFound => "queue_not_found",
            ErrorCode::GroupNotFound => "group_not_found",
            ErrorCode::Busy => "busy",
            ErrorCode::FlushTimeout => "flush_timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::OffsetOutOfRange => "offset_out_of_range",
            ErrorCode::Internal => "internal",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::NotApproved => "not_approved",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::NotMaster => "not_master",
            ErrorCode::ReplicationTimeout => "replication_timeout",
            ErrorCode::Evacuated => "evacuated",
            ErrorCode::Throttled => "throttled",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_raw_values() {
        for code in RequestCode::ALL {
            assert_eq!(RequestCode::from_u32(code as u32), Some(code));
        }
        assert_eq!(RequestCode::from_u32(9999), None);
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u32(code as u32), code);
        }
        assert_eq!(ErrorCode::from_u32(9999), ErrorCode::Internal);
    }

    #[test]
    fn only_transient_errors_are_retriable() {
        let retriable: Vec<_> = ErrorCode::ALL.into_iter().filter(|code| code.is_retriable()).collect();
        assert_eq!(
            retriable,
            [
                ErrorCode::Busy,
                ErrorCode::FlushTimeout,
                ErrorCode::Unavailable,
                ErrorCode::NotMaster,
                ErrorCode::ReplicationTimeout,
                ErrorCode::Evacuated,
                ErrorCode::Throttled
            ]
        );
    }
}

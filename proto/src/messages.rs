//! Prost bodies of requests and responses, one pair per [`crate::RequestCode`].
//!
//! Large payloads are `bytes::Bytes` fields, so decoding a body from a received frame slices the
//! frame instead of copying.

use bytes::Bytes;
use prost::Message;

/// One message inside a [`SendRequest`], as the producer built it.
#[derive(Clone, PartialEq, Message)]
pub struct MessageData {
    /// Message flags (reserved).
    #[prost(uint32, tag = "1")]
    pub flags: u32,
    /// When the producer created it (Unix ms).
    #[prost(int64, tag = "2")]
    pub born_timestamp: i64,
    /// Encoded properties (msgId, keys, tags, user properties); see [`crate::properties`].
    #[prost(bytes = "bytes", tag = "3")]
    pub properties: Bytes,
    /// Message body.
    #[prost(bytes = "bytes", tag = "4")]
    pub body: Bytes,
    /// Times consumed again (non-zero only for retried messages).
    #[prost(uint32, tag = "5")]
    pub reconsume_count: u32,
}

/// [`crate::RequestCode::Send`]: append messages to one queue of a topic. A batch is all or nothing.
#[derive(Clone, PartialEq, Message)]
pub struct SendRequest {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Queue id, or -1 to let the broker choose.
    #[prost(int32, tag = "2")]
    pub queue_id: i32,
    /// The messages, stored in this order with consecutive queue offsets.
    #[prost(message, repeated, tag = "3")]
    pub messages: Vec<MessageData>,
    /// Producer group (may be empty).
    #[prost(string, tag = "4")]
    pub producer_group: String,
    /// The producer's SDK as `language/version` ([`crate::sdk::SDK_ID`]), judged against the
    /// cluster's SDK policy. Bytes, not a string, so the broker reads it from the frame without
    /// allocating on every send; empty: not reported.
    #[prost(bytes = "bytes", tag = "5")]
    pub sdk: Bytes,
}

/// Where one message was stored.
#[derive(Clone, PartialEq, Message)]
pub struct SendResult {
    /// The message id.
    #[prost(string, tag = "1")]
    pub msg_id: String,
    /// Queue it went to.
    #[prost(uint32, tag = "2")]
    pub queue_id: u32,
    /// Its position in the queue.
    #[prost(uint64, tag = "3")]
    pub queue_offset: u64,
    /// Its byte position in the commitlog.
    #[prost(uint64, tag = "4")]
    pub commitlog_offset: u64,
    /// When the broker stored it (Unix ms).
    #[prost(int64, tag = "5")]
    pub store_timestamp: i64,
}

/// Response to [`SendRequest`]: one result per message, in order.
#[derive(Clone, PartialEq, Message)]
pub struct SendResponse {
    /// Results, one per sent message.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<SendResult>,
}

/// [`crate::RequestCode::Pull`]: read messages from a queue starting at an offset.
#[derive(Clone, PartialEq, Message)]
pub struct PullRequest {
    /// Consumer group (for metrics and, later, filtering and tracing).
    #[prost(string, tag = "1")]
    pub group: String,
    /// Topic name.
    #[prost(string, tag = "2")]
    pub topic: String,
    /// Queue id.
    #[prost(uint32, tag = "3")]
    pub queue_id: u32,
    /// First queue offset wanted.
    #[prost(uint64, tag = "4")]
    pub offset: u64,
    /// Most messages to return.
    #[prost(uint32, tag = "5")]
    pub max_count: u32,
    /// Most bytes of records to return (at least one record is returned even if larger).
    #[prost(uint32, tag = "6")]
    pub max_bytes: u32,
    /// How long the broker may hold the request when no message is there yet (long polling).
    #[prost(uint32, tag = "7")]
    pub long_poll_ms: u32,
    /// Tag filter expression ([`crate::filter::TagFilter`]); empty: every message.
    #[prost(string, tag = "8")]
    pub subscription: String,
    /// The offset generation the consumer's position came from ([`QueryOffsetResponse::generation`]).
    /// When the group's offsets were reset since, the broker answers [`PullStatus::OffsetReset`]
    /// with the new position. Absent: not checked (manual pulls).
    #[prost(uint64, optional, tag = "9")]
    pub offset_generation: Option<u64>,
}

/// What a pull found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PullStatus {
    /// Records are in the response.
    Found = 0,
    /// Nothing at or after the offset yet.
    NoNewMessage = 1,
    /// The offset is below the queue's minimum or above its maximum; restart at `next_offset`.
    OffsetMoved = 2,
    /// The group's offsets were reset: continue at `next_offset` with `offset_generation`.
    OffsetReset = 3,
}

/// Response to [`PullRequest`].
#[derive(Clone, PartialEq, Message)]
pub struct PullResponse {
    /// What was found.
    #[prost(enumeration = "PullStatus", tag = "1")]
    pub status: i32,
    /// Offset to pull from next.
    #[prost(uint64, tag = "2")]
    pub next_offset: u64,
    /// Smallest offset the queue holds.
    #[prost(uint64, tag = "3")]
    pub min_offset: u64,
    /// One past the largest offset the queue holds.
    #[prost(uint64, tag = "4")]
    pub max_offset: u64,
    /// Concatenated records exactly as stored; decode with [`crate::record::decode_all`].
    #[prost(bytes = "bytes", tag = "5")]
    pub records: Bytes,
    /// With [`PullStatus::OffsetReset`]: the generation of the new position.
    #[prost(uint64, tag = "6")]
    pub offset_generation: u64,
}

/// Names one queue of a topic.
#[derive(Clone, PartialEq, Message)]
pub struct QueueRef {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Queue id.
    #[prost(uint32, tag = "2")]
    pub queue_id: u32,
}

/// [`crate::RequestCode::CommitOffset`]: store a group's next offset for a queue.
#[derive(Clone, PartialEq, Message)]
pub struct CommitOffsetRequest {
    /// Consumer group.
    #[prost(string, tag = "1")]
    pub group: String,
    /// Topic name.
    #[prost(string, tag = "2")]
    pub topic: String,
    /// Queue id.
    #[prost(uint32, tag = "3")]
    pub queue_id: u32,
    /// The next offset the group will consume.
    #[prost(uint64, tag = "4")]
    pub offset: u64,
    /// The offset generation the position came from; a commit from before a reset is refused.
    /// Absent: not checked.
    #[prost(uint64, optional, tag = "5")]
    pub generation: Option<u64>,
    /// A broadcasting member's client id: its offsets are its own. Empty: the group's.
    #[prost(string, tag = "6")]
    pub member: String,
}

/// [`crate::RequestCode::QueryOffset`]: a group's stored offset for a queue.
#[derive(Clone, PartialEq, Message)]
pub struct QueryOffsetRequest {
    /// Consumer group.
    #[prost(string, tag = "1")]
    pub group: String,
    /// Topic name.
    #[prost(string, tag = "2")]
    pub topic: String,
    /// Queue id.
    #[prost(uint32, tag = "3")]
    pub queue_id: u32,
    /// A broadcasting member's client id (see [`CommitOffsetRequest::member`]).
    #[prost(string, tag = "4")]
    pub member: String,
}

/// Response to [`QueryOffsetRequest`].
#[derive(Clone, PartialEq, Message)]
pub struct QueryOffsetResponse {
    /// The stored offset, absent if the group never committed one for this queue.
    #[prost(uint64, optional, tag = "1")]
    pub offset: Option<u64>,
    /// How many times the group's offsets of the topic were reset; send it back with commits and
    /// pulls so a reset is noticed.
    #[prost(uint64, tag = "2")]
    pub generation: u64,
}

/// [`crate::RequestCode::SendBack`]: a consumer could not consume a message.
#[derive(Clone, PartialEq, Message)]
pub struct SendBackRequest {
    /// Consumer group that failed it.
    #[prost(string, tag = "1")]
    pub group: String,
    /// Topic it was consumed from (a user topic or the group's retry topic).
    #[prost(string, tag = "2")]
    pub topic: String,
    /// Where its record starts in the broker's commitlog.
    #[prost(uint64, tag = "3")]
    pub commitlog_offset: u64,
    /// Its message id, checked against the record.
    #[prost(string, tag = "4")]
    pub msg_id: String,
    /// Delay level before the next attempt; 0: by the number of attempts so far (10s, 30s, 1m, 2m, ...).
    #[prost(uint32, tag = "5")]
    pub delay_level: u32,
}

/// Response to [`SendBackRequest`].
#[derive(Clone, PartialEq, Message)]
pub struct SendBackResponse {
    /// The topic it went to: the group's retry topic, or its dead-letter topic.
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Whether it was dead-lettered (it had failed the group's maximum number of times).
    #[prost(bool, tag = "2")]
    pub dead_lettered: bool,
    /// When it will be delivered again (Unix ms); 0 when dead-lettered.
    #[prost(int64, tag = "3")]
    pub deliver_at: i64,
    /// Its reconsume count now.
    #[prost(uint32, tag = "4")]
    pub reconsume_count: u32,
}

/// Where [`ResetOffsetRequest`] moves a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ResetTarget {
    /// The first message stored at or after `timestamp`.
    Timestamp = 0,
    /// The oldest message each queue holds (the archive's, when archiving is on).
    Earliest = 1,
    /// Past the newest message: only messages sent from now on.
    Latest = 2,
}

/// [`crate::RequestCode::ResetOffset`]: move a group's offsets of a topic on this broker.
#[derive(Clone, PartialEq, Message)]
pub struct ResetOffsetRequest {
    /// Consumer group.
    #[prost(string, tag = "1")]
    pub group: String,
    /// Topic name.
    #[prost(string, tag = "2")]
    pub topic: String,
    /// Where to move.
    #[prost(enumeration = "ResetTarget", tag = "3")]
    pub target: i32,
    /// Unix ms, with [`ResetTarget::Timestamp`].
    #[prost(int64, tag = "4")]
    pub timestamp: i64,
}

/// Response to [`ResetOffsetRequest`].
#[derive(Clone, PartialEq, Message)]
pub struct ResetOffsetResponse {
    /// The new offset of each queue.
    #[prost(message, repeated, tag = "1")]
    pub queues: Vec<QueueOffset>,
    /// The group's new offset generation for the topic.
    #[prost(uint64, tag = "2")]
    pub generation: u64,
}

/// An offset of one queue.
#[derive(Clone, PartialEq, Message)]
pub struct QueueOffset {
    /// Queue id.
    #[prost(uint32, tag = "1")]
    pub queue_id: u32,
    /// Offset.
    #[prost(uint64, tag = "2")]
    pub offset: u64,
}

/// [`crate::RequestCode::DeadLetterResend`]: put dead letters back on the group's retry topic,
/// with their reconsume count starting again at 0.
#[derive(Clone, PartialEq, Message)]
pub struct DeadLetterResendRequest {
    /// Consumer group.
    #[prost(string, tag = "1")]
    pub group: String,
    /// Message ids to resend; empty: every dead letter this broker holds for the group.
    #[prost(string, repeated, tag = "2")]
    pub msg_ids: Vec<String>,
}

/// Response to [`DeadLetterResendRequest`].
#[derive(Clone, PartialEq, Message)]
pub struct DeadLetterResendResponse {
    /// Dead letters put back on the retry topic.
    #[prost(uint32, tag = "1")]
    pub resent: u32,
    /// Requested ids this broker holds no dead letter for.
    #[prost(string, repeated, tag = "2")]
    pub missing: Vec<String>,
}

/// [`crate::RequestCode::LockQueues`] and [`crate::RequestCode::UnlockQueues`]: an orderly
/// consumer's broker-side queue locks.
#[derive(Clone, PartialEq, Message)]
pub struct LockQueuesRequest {
    /// Consumer group.
    #[prost(string, tag = "1")]
    pub group: String,
    /// The member taking or releasing the locks.
    #[prost(string, tag = "2")]
    pub client_id: String,
    /// Topic name.
    #[prost(string, tag = "3")]
    pub topic: String,
    /// Queues to lock (or unlock).
    #[prost(uint32, repeated, tag = "4")]
    pub queue_ids: Vec<u32>,
}

/// Response to a lock request: the queues the member holds now (a queue another live member
/// holds is left out).
#[derive(Clone, PartialEq, Message)]
pub struct LockQueuesResponse {
    /// Queues locked by the member.
    #[prost(uint32, repeated, tag = "1")]
    pub locked: Vec<u32>,
}

/// How a producer ended a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TransactionOutcome {
    /// Not known yet: the broker asks again later (check-back).
    Unknown = 0,
    /// Deliver the half message to its topic.
    Commit = 1,
    /// Discard the half message.
    Rollback = 2,
}

/// [`crate::RequestCode::EndTransaction`].
#[derive(Clone, PartialEq, Message)]
pub struct EndTransactionRequest {
    /// Producer group that sent the half message.
    #[prost(string, tag = "1")]
    pub producer_group: String,
    /// The half message's id.
    #[prost(string, tag = "2")]
    pub msg_id: String,
    /// Where the half message's record starts in the commitlog ([`SendResult::commitlog_offset`]).
    #[prost(uint64, tag = "3")]
    pub half_offset: u64,
    /// The outcome.
    #[prost(enumeration = "TransactionOutcome", tag = "4")]
    pub outcome: i32,
    /// Whether this answers a check-back (for traces and metrics).
    #[prost(bool, tag = "5")]
    pub from_check: bool,
}

/// [`crate::RequestCode::CheckTransactions`]: which half messages of a producer group wait for a
/// check-back.
#[derive(Clone, PartialEq, Message)]
pub struct CheckTransactionsRequest {
    /// Producer group.
    #[prost(string, tag = "1")]
    pub producer_group: String,
    /// The asking producer.
    #[prost(string, tag = "2")]
    pub client_id: String,
    /// Most checks to return.
    #[prost(uint32, tag = "3")]
    pub max: u32,
}

/// Response to [`CheckTransactionsRequest`].
#[derive(Clone, PartialEq, Message)]
pub struct CheckTransactionsResponse {
    /// Half messages whose outcome the producer should look up and send with
    /// [`EndTransactionRequest`] (`from_check` set).
    #[prost(message, repeated, tag = "1")]
    pub checks: Vec<TransactionCheck>,
}

/// One half message waiting for its outcome.
#[derive(Clone, PartialEq, Message)]
pub struct TransactionCheck {
    /// Its message id.
    #[prost(string, tag = "1")]
    pub msg_id: String,
    /// Where its record starts in the commitlog.
    #[prost(uint64, tag = "2")]
    pub half_offset: u64,
    /// The topic it is for.
    #[prost(string, tag = "3")]
    pub topic: String,
    /// Its properties as the producer set them.
    #[prost(bytes = "bytes", tag = "4")]
    pub properties: Bytes,
    /// Its body.
    #[prost(bytes = "bytes", tag = "5")]
    pub body: Bytes,
    /// Check-backs so far, this one included.
    #[prost(uint32, tag = "6")]
    pub check_count: u32,
}

/// Response to [`crate::RequestCode::QueueInfo`] (request body: [`QueueRef`]).
#[derive(Clone, PartialEq, Message)]
pub struct QueueInfoResponse {
    /// Smallest offset the queue holds.
    #[prost(uint64, tag = "1")]
    pub min_offset: u64,
    /// One past the largest offset.
    #[prost(uint64, tag = "2")]
    pub max_offset: u64,
}

/// [`crate::RequestCode::SearchOffset`]: first offset stored at or after a time.
#[derive(Clone, PartialEq, Message)]
pub struct SearchOffsetRequest {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Queue id.
    #[prost(uint32, tag = "2")]
    pub queue_id: u32,
    /// Unix ms.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// Response to [`SearchOffsetRequest`].
#[derive(Clone, PartialEq, Message)]
pub struct SearchOffsetResponse {
    /// The offset (the queue's max offset if every message is older).
    #[prost(uint64, tag = "1")]
    pub offset: u64,
}

/// [`crate::RequestCode::CreateTopic`].
#[derive(Clone, PartialEq, Message)]
pub struct CreateTopicRequest {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Number of queues.
    #[prost(uint32, tag = "2")]
    pub queues: u32,
}

/// [`crate::RequestCode::TopicRoute`] request.
#[derive(Clone, PartialEq, Message)]
pub struct TopicRouteRequest {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub topic: String,
}

/// Read and write permission bits of a topic on a broker.
pub mod perm {
    /// Consumers may pull.
    pub const READ: u32 = 1;
    /// Producers may send.
    pub const WRITE: u32 = 2;
}

/// One broker group serving a topic.
#[derive(Clone, PartialEq, Message)]
pub struct BrokerRoute {
    /// Broker group name (queues are named by it).
    #[prost(string, tag = "1")]
    pub broker_name: String,
    /// Address of the group's live master, which takes sends; empty when it has none.
    #[prost(string, tag = "2")]
    pub addr: String,
    /// Data center of the master.
    #[prost(string, tag = "3")]
    pub idc: String,
    /// Queues of the topic on this broker group.
    #[prost(uint32, tag = "4")]
    pub queues: u32,
    /// [`perm`] bits.
    #[prost(uint32, tag = "5")]
    pub perm: u32,
    /// Every member of the group, master and slaves, live or not (from a nameserver; a standalone
    /// broker leaves it empty).
    #[prost(message, repeated, tag = "6")]
    pub replicas: Vec<ReplicaRoute>,
}

/// Role of a broker in its group.
pub mod role {
    /// Takes writes and replicates them.
    pub const MASTER: u32 = 0;
    /// Holds a replica.
    pub const SLAVE: u32 = 1;

    /// `"master"` or `"slave"`, for people.
    pub fn name(role: u32) -> &'static str {
        if role == MASTER { "master" } else { "slave" }
    }
}

/// One member of a broker group, as a nameserver sees it.
#[derive(Clone, PartialEq, Message)]
pub struct ReplicaRoute {
    /// Broker name, unique within its group.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Address clients connect to.
    #[prost(string, tag = "2")]
    pub addr: String,
    /// Data center.
    #[prost(string, tag = "3")]
    pub idc: String,
    /// [`role`] value.
    #[prost(uint32, tag = "4")]
    pub role: u32,
    /// Epoch the broker last registered with.
    #[prost(uint64, tag = "5")]
    pub epoch: u64,
    /// Whether the answering nameserver heard its heartbeat within the heartbeat timeout.
    #[prost(bool, tag = "6")]
    pub alive: bool,
    /// Greatest commitlog offset it last reported.
    #[prost(uint64, tag = "7")]
    pub max_offset: u64,
}

/// Where a topic lives.
#[derive(Clone, PartialEq, Message)]
pub struct TopicRoute {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Brokers serving it.
    #[prost(message, repeated, tag = "2")]
    pub brokers: Vec<BrokerRoute>,
    /// Data centers a failover drill evacuated (`meridian drill evacuate`): their brokers take no
    /// writes and their consumers hand their queues to consumers elsewhere.
    #[prost(string, repeated, tag = "3")]
    pub evacuated_idcs: Vec<String>,
    /// Data centers the nameservers' majority declared lost (none of their brokers heard for
    /// `continuity.idc_lost_after_ms`), sorted. Their brokers are down in `brokers`; clients read
    /// this to tell an outage of a whole site from one broker's.
    #[prost(string, repeated, tag = "4")]
    pub lost_idcs: Vec<String>,
}

/// [`crate::RequestCode::ConsumerHeartbeat`]: a consumer is alive in a group.
#[derive(Clone, PartialEq, Message)]
pub struct ConsumerHeartbeat {
    /// Consumer group.
    #[prost(string, tag = "1")]
    pub group: String,
    /// Unique id of this consumer instance.
    #[prost(string, tag = "2")]
    pub client_id: String,
    /// Topics it subscribes to.
    #[prost(string, repeated, tag = "3")]
    pub topics: Vec<String>,
    /// SDK version of the client.
    #[prost(string, tag = "4")]
    pub sdk_version: String,
    /// Data center of the consumer; empty when it has none.
    #[prost(string, tag = "5")]
    pub idc: String,
    /// Queue allocation algorithm and its version, e.g. `idc-aware/1`. Every member of a group
    /// must use the same one, or queues go unconsumed or consumed twice.
    #[prost(string, tag = "6")]
    pub allocation: String,
    /// Deployment model of the group as this member sees it: `single-side` or `dual-side`.
    #[prost(string, tag = "7")]
    pub deployment: String,
    /// The member consumes as a broadcasting group member (every member gets every message).
    #[prost(bool, tag = "8")]
    pub broadcasting: bool,
    /// Its tag filter expression; empty: every message.
    #[prost(string, tag = "9")]
    pub subscription: String,
    /// Language of its SDK (`rust` for Meridian's); empty reads as `rust`.
    #[prost(string, tag = "10")]
    pub sdk_language: String,
    /// Its consume figures since it started (`consume_latency_us`: the handler's time per
    /// message); absent from SDKs that predate it, which brokers read as "not reported".
    #[prost(message, optional, tag = "11")]
    pub stats: Option<crate::client_stats::ClientStats>,
}

/// [`crate::RequestCode::ProducerHeartbeat`]: a producer is alive, with its latency and message
/// sizes. Brokers that predate it answer `UnsupportedRequest`, which the producer ignores.
#[derive(Clone, PartialEq, Message)]
pub struct ProducerHeartbeat {
    /// Unique id of this producer instance.
    #[prost(string, tag = "1")]
    pub client_id: String,
    /// Its producer group (may be empty).
    #[prost(string, tag = "2")]
    pub group: String,
    /// `language/version` of its SDK.
    #[prost(string, tag = "3")]
    pub sdk: String,
    /// Its data center; empty when it has none.
    #[prost(string, tag = "4")]
    pub idc: String,
    /// Its figures since it started.
    #[prost(message, optional, tag = "5")]
    pub stats: Option<crate::client_stats::ClientStats>,
    /// Topics it sent to, sorted: their owners are told about its large messages.
    #[prost(string, repeated, tag = "6")]
    pub topics: Vec<String>,
}

/// [`crate::RequestCode::ConsumerList`] and [`crate::RequestCode::ConsumerLeave`] request.
#[derive(Clone, PartialEq, Message)]
pub struct GroupMember {
    /// Consumer group.
    #[prost(string, tag = "1")]
    pub group: String,
    /// The consumer (empty for a list request).
    #[prost(string, tag = "2")]
    pub client_id: String,
}

/// Response to [`crate::RequestCode::ConsumerList`].
#[derive(Clone, PartialEq, Message)]
pub struct ConsumerListResponse {
    /// Live members, sorted.
    #[prost(string, repeated, tag = "1")]
    pub client_ids: Vec<String>,
    /// The same members with what they reported, in the same order.
    #[prost(message, repeated, tag = "2")]
    pub members: Vec<ConsumerMember>,
    /// Data centers evacuated by a failover drill, as the broker last heard from the nameservers.
    #[prost(string, repeated, tag = "3")]
    pub evacuated_idcs: Vec<String>,
}

/// One live member of a consumer group and what its last heartbeat said.
#[derive(Clone, PartialEq, Message)]
pub struct ConsumerMember {
    /// Its client id.
    #[prost(string, tag = "1")]
    pub client_id: String,
    /// Its data center; empty when it has none.
    #[prost(string, tag = "2")]
    pub idc: String,
    /// Its allocation algorithm and version (see [`ConsumerHeartbeat::allocation`]).
    #[prost(string, tag = "3")]
    pub allocation: String,
    /// Its deployment model (see [`ConsumerHeartbeat::deployment`]).
    #[prost(string, tag = "4")]
    pub deployment: String,
    /// Its SDK version.
    #[prost(string, tag = "5")]
    pub sdk_version: String,
}

/// [`crate::RequestCode::IdcLookup`]: which data center an address is in.
#[derive(Clone, PartialEq, Message)]
pub struct IdcLookupRequest {
    /// The address (IPv4 or IPv6) to look up.
    #[prost(string, tag = "1")]
    pub ip: String,
}

/// Response to [`IdcLookupRequest`].
#[derive(Clone, PartialEq, Message)]
pub struct IdcLookupResponse {
    /// The data center of the rule that matched; empty when none did.
    #[prost(string, tag = "1")]
    pub idc: String,
    /// That rule, e.g. `10.1.0.0/16`; empty when none matched.
    #[prost(string, tag = "2")]
    pub cidr: String,
    /// Every data center the cluster knows (from its brokers, nameservers and IDC rules), sorted.
    #[prost(string, repeated, tag = "3")]
    pub known_idcs: Vec<String>,
}

/// [`crate::RequestCode::BrokerHeartbeat`]: a broker is alive. Small on purpose: it carries a
/// digest of the broker's registration instead of the registration itself.
#[derive(Clone, PartialEq, Message)]
pub struct BrokerHeartbeat {
    /// Broker group name.
    #[prost(string, tag = "1")]
    pub group: String,
    /// Broker name, unique within its group.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Address clients connect to.
    #[prost(string, tag = "3")]
    pub addr: String,
    /// Data center.
    #[prost(string, tag = "4")]
    pub idc: String,
    /// [`role`] value the broker believes it has.
    #[prost(uint32, tag = "5")]
    pub role: u32,
    /// Highest epoch the broker has seen.
    #[prost(uint64, tag = "6")]
    pub epoch: u64,
    /// Greatest commitlog offset it holds.
    #[prost(uint64, tag = "7")]
    pub max_offset: u64,
    /// [`registration_digest`] of what the broker would register now.
    #[prost(uint64, tag = "8")]
    pub registration_digest: u64,
    /// Sent by a master only: the slaves it holds in sync (within its lag threshold), sorted.
    /// Only these can be promoted when it fails. Covered by the digest, so a change registers.
    #[prost(string, repeated, tag = "9")]
    pub in_sync: Vec<String>,
    /// Address of the broker's RocketMQ remoting listener; empty when it has none. Not part of
    /// the digest: nameservers keep it in memory, with liveness.
    #[prost(string, tag = "10")]
    pub remoting_addr: String,
    /// Sent by a master: its confirmed offset (everything below is held as its ack policy, or its
    /// declared degraded mode, requires). Nameservers keep the greatest they heard per group, and
    /// promote only a replica that holds it. Not part of the digest: kept in memory, with liveness.
    #[prost(uint64, tag = "11")]
    pub confirmed_offset: u64,
    /// Sent by a master acknowledging in degraded mode (replicas in a lost data center left out of
    /// its ack policy): why, in words; empty under its full policy. Not part of the digest.
    #[prost(string, tag = "12")]
    pub degraded: String,
    /// Sent by a master: its group's ack policy ([`crate::ack::AckPolicy::as_str`]), which tells
    /// the nameservers which survivors provably hold every acknowledged message when it fails.
    /// Empty from a slave (or a broker older than the field). Covered by the digest.
    #[prost(string, tag = "13")]
    pub ack_policy: String,
    /// Sent by a master: the replicas its group counts (`replication.replicas`), the master
    /// included. Covered by the digest.
    #[prost(uint32, tag = "14")]
    pub ack_replicas: u32,
    /// Sent by a master acknowledging in degraded mode: the members it leaves out of its ack
    /// policy, sorted. Not part of the digest: kept in memory, with liveness.
    #[prost(string, repeated, tag = "15")]
    pub left_out: Vec<String>,
}

/// [`crate::RequestCode::RegisterBroker`]: everything a broker registers. Its topic list can run to
/// thousands of names, so it travels compressed ([`crate::compress`]).
#[derive(Clone, PartialEq, Message)]
pub struct BrokerRegistration {
    /// Who the broker is; its digest covers the topics below.
    #[prost(message, optional, tag = "1")]
    pub heartbeat: Option<BrokerHeartbeat>,
    /// A [`TopicList`], prost-encoded then compressed with [`crate::compress::compress`].
    #[prost(bytes = "bytes", tag = "2")]
    pub topics_compressed: Bytes,
}

/// The topics a broker serves, with their queue counts, sorted by name.
#[derive(Clone, PartialEq, Message)]
pub struct TopicList {
    /// One per topic.
    #[prost(message, repeated, tag = "1")]
    pub topics: Vec<TopicQueues>,
}

/// A topic and its queue count on one broker.
#[derive(Clone, PartialEq, Message)]
pub struct TopicQueues {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Queues.
    #[prost(uint32, tag = "2")]
    pub queues: u32,
}

/// Answer to a heartbeat or a registration.
#[derive(Clone, PartialEq, Message)]
pub struct BrokerHeartbeatResponse {
    /// False when the nameserver does not hold the registration the heartbeat's digest names (it
    /// restarted, or the broker's topics changed): send a [`BrokerRegistration`].
    #[prost(bool, tag = "1")]
    pub registered: bool,
    /// Version of the approved topics and groups; when it differs from the broker's, the broker
    /// fetches [`BrokerMetadata`] again.
    #[prost(uint64, tag = "2")]
    pub metadata_version: u64,
    /// The group's epoch; a broker obeys the highest epoch it has seen.
    #[prost(uint64, tag = "3")]
    pub group_epoch: u64,
    /// Name of the group's master at `group_epoch`; empty while the group has none (before the
    /// first election, or between fencing a master and promoting the next).
    #[prost(string, tag = "4")]
    pub master: String,
    /// Address of that master, for slaves to replicate from.
    #[prost(string, tag = "5")]
    pub master_addr: String,
    /// Whether the answering nameserver is the Raft leader and confirmed it with a quorum while
    /// answering. Only such an answer renews a master's lease.
    #[prost(bool, tag = "6")]
    pub leader: bool,
    /// How long after sending the heartbeat a master named by a `leader` answer may accept writes,
    /// in ms. Shorter than the nameserver's broker timeout, so a master that cannot renew stops
    /// writing before the controller may promote another.
    #[prost(uint64, tag = "7")]
    pub lease_ms: u64,
    /// Data centers a failover drill evacuated: a master in one of them refuses sends.
    #[prost(string, repeated, tag = "8")]
    pub evacuated_idcs: Vec<String>,
    /// Members of the broker's group whose data center the nameservers declared lost, sorted. A
    /// master whose group goes on when a data center is lost (`replication.on_idc_lost =
    /// "degrade"`) acknowledges without them until they are cleared and caught up.
    #[prost(string, repeated, tag = "9")]
    pub lost_members: Vec<String>,
    /// The registered members of the broker's group: a master counts replica fetches only from
    /// them.
    #[prost(string, repeated, tag = "10")]
    pub group_members: Vec<String>,
}

/// [`crate::RequestCode::BrokerMetadata`] request.
#[derive(Clone, PartialEq, Message)]
pub struct BrokerMetadataRequest {
    /// Broker group name.
    #[prost(string, tag = "1")]
    pub group: String,
}

/// What a broker group may serve: its approved topics and the approved consumer groups.
#[derive(Clone, PartialEq, Message)]
pub struct BrokerMetadata {
    /// Version of this answer (see [`BrokerHeartbeatResponse::metadata_version`]).
    #[prost(uint64, tag = "1")]
    pub version: u64,
    /// Approved topics placed on the group.
    #[prost(message, repeated, tag = "2")]
    pub topics: Vec<TopicGrant>,
    /// Approved consumer groups.
    #[prost(message, repeated, tag = "3")]
    pub groups: Vec<GroupGrant>,
    /// The cluster's SDK version policy; `None` from an older nameserver (nothing judged).
    #[prost(message, optional, tag = "4")]
    pub sdk_policy: Option<crate::sdk::SdkPolicyGrant>,
    /// Every user's verifier, so the broker authenticates connections ([`crate::auth`]). Only
    /// cluster nodes may fetch this when authentication is on; a verifier cannot log in.
    #[prost(message, repeated, tag = "5")]
    pub users: Vec<UserGrant>,
    /// The authorization model ([`crate::acl::Acl`]) as JSON; empty from an older nameserver
    /// (an empty model: only nodes and super users pass when authorization is on).
    #[prost(string, tag = "6")]
    pub acl_json: String,
}

/// One user's credential as brokers learn it.
#[derive(Clone, PartialEq, Message)]
pub struct UserGrant {
    /// User name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its SCRAM verifier.
    #[prost(message, optional, tag = "2")]
    pub verifier: Option<crate::auth::Verifier>,
    /// Its secret sealed for RocketMQ AccessKey signatures ([`crate::remoting::acl`]); empty
    /// when the user has no RocketMQ access. Only nodes (with the node secret) can open it.
    #[prost(string, tag = "3")]
    pub rocketmq_sealed: String,
}

/// An approved topic as one broker group serves it.
#[derive(Clone, PartialEq, Message)]
pub struct TopicGrant {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Queues on this broker group.
    #[prost(uint32, tag = "2")]
    pub queues: u32,
    /// [`perm`] bits.
    #[prost(uint32, tag = "3")]
    pub perm: u32,
    /// Most messages per second producers may send to the whole topic; 0: no limit. Each master
    /// enforces its share: `queues / topic_queues` of it.
    #[prost(uint32, tag = "4")]
    pub produce_limit: u32,
    /// Queues of the topic on every broker group together, so a master can work out its share of
    /// the limits; 0 (an older nameserver): this group enforces the whole limit.
    #[prost(uint32, tag = "5")]
    pub topic_queues: u32,
    /// Most bytes (bodies and properties) per second producers may send to the whole topic; 0: no
    /// limit. Shared among masters like `produce_limit`.
    #[prost(uint64, tag = "6")]
    pub produce_limit_bytes: u64,
}

/// An approved consumer group.
#[derive(Clone, PartialEq, Message)]
pub struct GroupGrant {
    /// Group name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Topics it may consume.
    #[prost(string, repeated, tag = "2")]
    pub topics: Vec<String>,
    /// Deliveries of one message before it is dead-lettered.
    #[prost(uint32, tag = "3")]
    pub max_retries: u32,
    /// Every member gets every message.
    #[prost(bool, tag = "4")]
    pub broadcasting: bool,
}

/// [`crate::RequestCode::RaftSnapshot`]: one chunk of a snapshot. The openraft request without its
/// data travels as JSON; the data as raw bytes, so a chunk is not inflated by JSON.
#[derive(Clone, PartialEq, Message)]
pub struct RaftSnapshotChunk {
    /// openraft's `InstallSnapshotRequest` with an empty `data`, JSON-encoded.
    #[prost(bytes = "bytes", tag = "1")]
    pub request_json: Bytes,
    /// The chunk's bytes.
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
}

/// Where one epoch of a broker group's commitlog starts: the master elected at `epoch` appended
/// its first record at `start_offset`. A replica keeps the list of its log, so a replica that
/// returns from an old epoch can find where its log and the master's part.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct EpochStart {
    /// The epoch.
    #[prost(uint64, tag = "1")]
    pub epoch: u64,
    /// Commitlog offset where it starts.
    #[prost(uint64, tag = "2")]
    pub start_offset: u64,
}

/// [`crate::RequestCode::ReplicaFetch`]: a slave asks its master for the commitlog from
/// `from_offset`; that offset, and `flushed_offset`, are also its acknowledgement of what it holds.
#[derive(Clone, PartialEq, Message)]
pub struct ReplicaFetch {
    /// Broker group name.
    #[prost(string, tag = "1")]
    pub group: String,
    /// The slave's name in the group.
    #[prost(string, tag = "2")]
    pub name: String,
    /// The slave's data center (for `idc_safe` acknowledgement).
    #[prost(string, tag = "3")]
    pub idc: String,
    /// Highest epoch the slave has seen: a master at an older epoch is refused.
    #[prost(uint64, tag = "4")]
    pub epoch: u64,
    /// Epoch of the last entry of the slave's epoch list (the epoch its log tail was written in).
    #[prost(uint64, tag = "5")]
    pub last_epoch: u64,
    /// End of the slave's commitlog: it holds everything below.
    #[prost(uint64, tag = "6")]
    pub from_offset: u64,
    /// End of what the slave has synced to disk.
    #[prost(uint64, tag = "7")]
    pub flushed_offset: u64,
    /// Most bytes to send.
    #[prost(uint32, tag = "8")]
    pub max_bytes: u32,
    /// How long the master may wait for new records when it has none past `from_offset`, in ms.
    #[prost(uint32, tag = "9")]
    pub wait_ms: u32,
    /// Version of the consumer offsets the slave holds.
    #[prost(uint64, tag = "10")]
    pub offsets_version: u64,
    /// The slave's commitlog segment size: it must equal the master's, so segments line up.
    #[prost(uint64, tag = "11")]
    pub segment_size: u64,
    /// The master's confirmed offset as the slave last learned it: the master answers at once
    /// when its own is greater, so the slave's consumers see confirmed records without waiting
    /// for new ones.
    #[prost(uint64, tag = "12")]
    pub confirmed_offset: u64,
}

/// Answer to [`ReplicaFetch`].
#[derive(Clone, PartialEq, Message)]
pub struct ReplicaFetchResponse {
    /// The master's epoch.
    #[prost(uint64, tag = "1")]
    pub epoch: u64,
    /// Set when the slave's log holds records the master's lineage does not: the slave truncates
    /// its log to this offset, then fetches again from there.
    #[prost(uint64, optional, tag = "2")]
    pub truncate_to: Option<u64>,
    /// Raw commitlog bytes starting at the requested offset and ending at a record boundary (a
    /// segment's closing blank marker included); empty when there is nothing new.
    #[prost(bytes = "bytes", tag = "3")]
    pub data: Bytes,
    /// The master's committed offset, so the slave knows how far behind it is.
    #[prost(uint64, tag = "4")]
    pub master_offset: u64,
    /// The master's epoch list, oldest first.
    #[prost(message, repeated, tag = "5")]
    pub epochs: Vec<EpochStart>,
    /// The master's consumer offsets as JSON, when their version differs from the slave's.
    #[prost(bytes = "bytes", tag = "6")]
    pub consumer_offsets: Bytes,
    /// Version of `consumer_offsets` (meaningful only when they are sent).
    #[prost(uint64, tag = "7")]
    pub offsets_version: u64,
    /// The master's confirmed offset: the group's ack policy holds for every record below it.
    /// A slave serves its consumers nothing past it.
    #[prost(uint64, tag = "8")]
    pub confirmed_offset: u64,
}

/// The digest a broker puts in its heartbeats: FNV-1a (64 bit) over everything it registers, so a
/// nameserver can tell whether it holds the broker's current registration without receiving it.
/// `topics` must be sorted by name, as [`TopicList`] is.
pub fn registration_digest(heartbeat: &BrokerHeartbeat, topics: &[TopicQueues]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    fn mix(hash: u64, bytes: &[u8]) -> u64 {
        // Length first, so ("ab", "c") and ("a", "bc") differ.
        let hash = (bytes.len() as u64)
            .to_le_bytes()
            .iter()
            .fold(hash, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME));
        bytes
            .iter()
            .fold(hash, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
    }
    let mut hash = OFFSET;
    for field in [&heartbeat.group, &heartbeat.name, &heartbeat.addr, &heartbeat.idc] {
        hash = mix(hash, field.as_bytes());
    }
    hash = mix(hash, &heartbeat.role.to_le_bytes());
    hash = mix(hash, &heartbeat.epoch.to_le_bytes());
    for slave in &heartbeat.in_sync {
        hash = mix(hash, slave.as_bytes());
    }
    hash = mix(hash, &(heartbeat.in_sync.len() as u64).to_le_bytes());
    hash = mix(hash, heartbeat.ack_policy.as_bytes());
    hash = mix(hash, &heartbeat.ack_replicas.to_le_bytes());
    for topic in topics {
        hash = mix(hash, topic.name.as_bytes());
        hash = mix(hash, &topic.queues.to_le_bytes());
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn send_requests_round_trip(topic in "[a-z]{1,20}", queue_id in -1i32..64,
                                    bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..256), 1..8)) {
            let request = SendRequest {
                topic,
                queue_id,
                messages: bodies.into_iter().map(|body| MessageData {
                    flags: 0, born_timestamp: 1, properties: Bytes::from_static(b"K\x01V\x02"),
                    body: Bytes::from(body), reconsume_count: 0,
                }).collect(),
                producer_group: String::new(),
                sdk: Default::default(),
            };
            let decoded = SendRequest::decode(Bytes::from(request.encode_to_vec())).unwrap();
            prop_assert_eq!(decoded, request);
        }

        #[test]
        fn registrations_round_trip_and_digests_see_every_field(
            names in proptest::collection::btree_set("[a-z]{1,12}", 0..50), epoch in any::<u64>(), queues in 1u32..64,
        ) {
            let topics: Vec<TopicQueues> = names.into_iter().map(|name| TopicQueues { name, queues }).collect();
            let heartbeat = BrokerHeartbeat {
                group: "broker-a".into(), name: "a-0".into(), addr: "127.0.0.1:7911".into(), idc: "dc1".into(),
                role: role::MASTER, epoch, max_offset: 7, registration_digest: 0, in_sync: vec!["a-1".into()],
                remoting_addr: String::new(), confirmed_offset: 5, degraded: String::new(),
                ack_policy: "idc_safe".into(), ack_replicas: 3, left_out: Vec::new(),
            };
            let digest = registration_digest(&heartbeat, &topics);
            // The max offset changes every second; it must not force a re-registration.
            prop_assert_eq!(registration_digest(&BrokerHeartbeat { max_offset: 8, ..heartbeat.clone() }, &topics), digest);
            prop_assert_eq!(registration_digest(&BrokerHeartbeat { confirmed_offset: 6, degraded: "dc2 lost".into(), left_out: vec!["a-2".into()], ..heartbeat.clone() }, &topics), digest);
            prop_assert_ne!(registration_digest(&BrokerHeartbeat { ack_policy: "quorum".into(), ..heartbeat.clone() }, &topics), digest);
            prop_assert_ne!(registration_digest(&BrokerHeartbeat { ack_replicas: 5, ..heartbeat.clone() }, &topics), digest);
            prop_assert_ne!(registration_digest(&BrokerHeartbeat { epoch: epoch.wrapping_add(1), ..heartbeat.clone() }, &topics), digest);
            prop_assert_ne!(registration_digest(&BrokerHeartbeat { role: role::SLAVE, ..heartbeat.clone() }, &topics), digest);
            prop_assert_ne!(registration_digest(&BrokerHeartbeat { in_sync: vec![], ..heartbeat.clone() }, &topics), digest);
            let mut more = topics.clone();
            more.push(TopicQueues { name: "zz-new".into(), queues });
            prop_assert_ne!(registration_digest(&heartbeat, &more), digest);
            let list = TopicList { topics };
            let registration = BrokerRegistration {
                heartbeat: Some(heartbeat),
                topics_compressed: Bytes::from(crate::compress::compress(&list.encode_to_vec())),
            };
            let decoded = BrokerRegistration::decode(Bytes::from(registration.encode_to_vec())).unwrap();
            let topics = crate::compress::decompress(&decoded.topics_compressed, 1 << 20).unwrap();
            prop_assert_eq!(TopicList::decode(topics.as_slice()).unwrap(), list);
        }

        #[test]
        fn pull_responses_round_trip(next in any::<u64>(), records in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let response = PullResponse {
                status: PullStatus::Found as i32, next_offset: next, min_offset: 0, max_offset: next,
                records: Bytes::from(records),
                ..Default::default()
            };
            prop_assert_eq!(PullResponse::decode(Bytes::from(response.encode_to_vec())).unwrap(), response);
        }
    }
}

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
}

/// Response to [`QueryOffsetRequest`].
#[derive(Clone, PartialEq, Message)]
pub struct QueryOffsetResponse {
    /// The stored offset, absent if the group never committed one for this queue.
    #[prost(uint64, optional, tag = "1")]
    pub offset: Option<u64>,
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

/// One broker serving a topic.
#[derive(Clone, PartialEq, Message)]
pub struct BrokerRoute {
    /// Broker name (the broker group's name).
    #[prost(string, tag = "1")]
    pub broker_name: String,
    /// Address clients connect to.
    #[prost(string, tag = "2")]
    pub addr: String,
    /// Data center of the broker.
    #[prost(string, tag = "3")]
    pub idc: String,
    /// Queues of the topic on this broker.
    #[prost(uint32, tag = "4")]
    pub queues: u32,
    /// [`perm`] bits.
    #[prost(uint32, tag = "5")]
    pub perm: u32,
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
            };
            let decoded = SendRequest::decode(Bytes::from(request.encode_to_vec())).unwrap();
            prop_assert_eq!(decoded, request);
        }

        #[test]
        fn pull_responses_round_trip(next in any::<u64>(), records in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let response = PullResponse {
                status: PullStatus::Found as i32, next_offset: next, min_offset: 0, max_offset: next,
                records: Bytes::from(records),
            };
            prop_assert_eq!(PullResponse::decode(Bytes::from(response.encode_to_vec())).unwrap(), response);
        }
    }
}

//! prost decoding of every request and response body in `proto::messages` (and the frame header)
//! from arbitrary bytes, through `Bytes` as the broker receives them.
//!
//! A message that decodes must encode to `encoded_len()` bytes and decode back to itself. Nothing
//! may panic. Add each new message type of `proto::messages` to the list below.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use meridian_proto::frame::Header;
use meridian_proto::messages::*;
use prost::Message;

fn check<M: Message + Default + PartialEq + std::fmt::Debug>(data: &Bytes) {
    if let Ok(message) = M::decode(data.clone()) {
        let encoded = message.encode_to_vec();
        assert_eq!(encoded.len(), message.encoded_len());
        assert_eq!(M::decode(&encoded[..]).as_ref(), Ok(&message));
    }
}

macro_rules! check_all {
    ($data:expr; $($message:ty),+ $(,)?) => {
        $(check::<$message>($data);)+
    };
}

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    check_all!(&data;
        Header,
        MessageData,
        SendRequest,
        SendResult,
        SendResponse,
        PullRequest,
        PullResponse,
        QueueRef,
        CommitOffsetRequest,
        QueryOffsetRequest,
        QueryOffsetResponse,
        QueueInfoResponse,
        SearchOffsetRequest,
        SearchOffsetResponse,
        CreateTopicRequest,
        TopicRouteRequest,
        BrokerRoute,
        TopicRoute,
        ConsumerHeartbeat,
        GroupMember,
        ConsumerListResponse,
    );
});

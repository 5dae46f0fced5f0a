//! RocketMQ 4.x request and response codes (`RequestCode.java`, `ResponseCode.java`), the
//! `LanguageCode` table, and how Meridian's [`ErrorCode`]s map onto response codes so that
//! RocketMQ clients react to them as they would to a Java broker (retry elsewhere, back off, give
//! up with the remark).

use crate::ErrorCode;

/// Request codes Meridian's listeners recognise (supported or answered as unsupported by name).
#[allow(missing_docs)]
pub mod request {
    pub const SEND_MESSAGE: i32 = 10;
    pub const PULL_MESSAGE: i32 = 11;
    pub const QUERY_MESSAGE: i32 = 12;
    pub const QUERY_CONSUMER_OFFSET: i32 = 14;
    pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
    pub const UPDATE_AND_CREATE_TOPIC: i32 = 17;
    pub const GET_ALL_TOPIC_CONFIG: i32 = 21;
    pub const GET_BROKER_CONFIG: i32 = 26;
    pub const GET_BROKER_RUNTIME_INFO: i32 = 28;
    pub const SEARCH_OFFSET_BY_TIMESTAMP: i32 = 29;
    pub const GET_MAX_OFFSET: i32 = 30;
    pub const GET_MIN_OFFSET: i32 = 31;
    pub const GET_EARLIEST_MSG_STORETIME: i32 = 32;
    pub const VIEW_MESSAGE_BY_ID: i32 = 33;
    pub const HEART_BEAT: i32 = 34;
    pub const UNREGISTER_CLIENT: i32 = 35;
    pub const CONSUMER_SEND_MSG_BACK: i32 = 36;
    pub const END_TRANSACTION: i32 = 37;
    pub const GET_CONSUMER_LIST_BY_GROUP: i32 = 38;
    pub const CHECK_TRANSACTION_STATE: i32 = 39;
    pub const NOTIFY_CONSUMER_IDS_CHANGED: i32 = 40;
    pub const LOCK_BATCH_MQ: i32 = 41;
    pub const UNLOCK_BATCH_MQ: i32 = 42;
    pub const REGISTER_BROKER: i32 = 103;
    pub const UNREGISTER_BROKER: i32 = 104;
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    pub const GET_ALL_TOPIC_LIST_FROM_NAMESERVER: i32 = 206;
    pub const GET_KVLIST_BY_NAMESPACE: i32 = 219;
    pub const SEND_MESSAGE_V2: i32 = 310;
    pub const SEND_BATCH_MESSAGE: i32 = 320;
    pub const LITE_PULL_MESSAGE: i32 = 361;
    pub const QUERY_ASSIGNMENT: i32 = 400;
    pub const SET_MESSAGE_REQUEST_MODE: i32 = 401;
    pub const BROKER_HEARTBEAT: i32 = 904;
}

/// Response codes.
#[allow(missing_docs)]
pub mod response {
    pub const SUCCESS: i32 = 0;
    pub const SYSTEM_ERROR: i32 = 1;
    pub const SYSTEM_BUSY: i32 = 2;
    pub const REQUEST_CODE_NOT_SUPPORTED: i32 = 3;
    pub const FLUSH_DISK_TIMEOUT: i32 = 10;
    pub const SLAVE_NOT_AVAILABLE: i32 = 11;
    pub const FLUSH_SLAVE_TIMEOUT: i32 = 12;
    pub const MESSAGE_ILLEGAL: i32 = 13;
    pub const SERVICE_NOT_AVAILABLE: i32 = 14;
    pub const NO_PERMISSION: i32 = 16;
    pub const TOPIC_NOT_EXIST: i32 = 17;
    pub const PULL_NOT_FOUND: i32 = 19;
    pub const PULL_RETRY_IMMEDIATELY: i32 = 20;
    pub const PULL_OFFSET_MOVED: i32 = 21;
    pub const QUERY_NOT_FOUND: i32 = 22;
    pub const SUBSCRIPTION_PARSE_FAILED: i32 = 23;
    pub const SUBSCRIPTION_GROUP_NOT_EXIST: i32 = 26;
    pub const INVALID_PARAMETER: i32 = 29;
    pub const CONSUMER_NOT_ONLINE: i32 = 206;
    pub const FLOW_CONTROL: i32 = 215;
}

/// RocketMQ `LanguageCode` names by ordinal.
pub const LANGUAGES: [&str; 14] = [
    "JAVA", "CPP", "DOTNET", "PYTHON", "DELPHI", "ERLANG", "RUBY", "OTHER", "HTTP", "GO", "PHP", "OMS", "RUST",
    "NODE_JS",
];

/// The ordinal of a language name (unknown names read as `OTHER`, as a lenient server should).
pub fn language_ordinal(name: &str) -> u8 {
    LANGUAGES
        .iter()
        .position(|known| known.eq_ignore_ascii_case(name))
        .map_or(7, |position| position as u8)
}

/// The name of a language ordinal (`OTHER` when unknown).
pub fn language_name(ordinal: u8) -> &'static str {
    LANGUAGES.get(usize::from(ordinal)).copied().unwrap_or("OTHER")
}

/// What the failed request was, where the right RocketMQ code depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A send: producers retry another broker on TOPIC_NOT_EXIST, SERVICE_NOT_AVAILABLE,
    /// SYSTEM_ERROR, SYSTEM_BUSY and NO_PERMISSION.
    Send,
    /// A consumer request (pull, offsets, send-back, locks).
    Consume,
    /// Anything else.
    Other,
}

/// The RocketMQ response code for a Meridian error, chosen by how the client reacts to it.
pub fn response_code(code: ErrorCode, operation: Operation) -> i32 {
    use response::*;
    match code {
        ErrorCode::Ok => SUCCESS,
        ErrorCode::MalformedFrame | ErrorCode::InvalidArgument | ErrorCode::OffsetOutOfRange => match operation {
            Operation::Send => MESSAGE_ILLEGAL,
            _ => INVALID_PARAMETER,
        },
        ErrorCode::MessageTooLarge => MESSAGE_ILLEGAL,
        ErrorCode::UnsupportedRequest => REQUEST_CODE_NOT_SUPPORTED,
        ErrorCode::TopicNotFound | ErrorCode::QueueNotFound => TOPIC_NOT_EXIST,
        ErrorCode::NotApproved | ErrorCode::GroupNotFound => match operation {
            Operation::Send => TOPIC_NOT_EXIST,
            _ => SUBSCRIPTION_GROUP_NOT_EXIST,
        },
        ErrorCode::FailedPrecondition | ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => NO_PERMISSION,
        ErrorCode::Busy => SYSTEM_BUSY,
        // Producers retry SYSTEM_BUSY after a pause (and on another broker); a pull told
        // FLOW_CONTROL retries after 20 ms.
        ErrorCode::Throttled => match operation {
            Operation::Consume => FLOW_CONTROL,
            _ => SYSTEM_BUSY,
        },
        ErrorCode::FlushTimeout => FLUSH_DISK_TIMEOUT,
        ErrorCode::ReplicationTimeout => FLUSH_SLAVE_TIMEOUT,
        ErrorCode::Unavailable | ErrorCode::NotMaster | ErrorCode::Evacuated => SERVICE_NOT_AVAILABLE,
        ErrorCode::AlreadyExists | ErrorCode::Internal => SYSTEM_ERROR,
    }
}

/// A request code's name for logs, metrics and remarks (`"310"`-style codes not in the table read
/// as `"UNKNOWN"`).
pub fn request_name(code: i32) -> &'static str {
    use request::*;
    match code {
        SEND_MESSAGE => "SEND_MESSAGE",
        PULL_MESSAGE => "PULL_MESSAGE",
        QUERY_MESSAGE => "QUERY_MESSAGE",
        QUERY_CONSUMER_OFFSET => "QUERY_CONSUMER_OFFSET",
        UPDATE_CONSUMER_OFFSET => "UPDATE_CONSUMER_OFFSET",
        UPDATE_AND_CREATE_TOPIC => "UPDATE_AND_CREATE_TOPIC",
        GET_ALL_TOPIC_CONFIG => "GET_ALL_TOPIC_CONFIG",
        GET_BROKER_CONFIG => "GET_BROKER_CONFIG",
        GET_BROKER_RUNTIME_INFO => "GET_BROKER_RUNTIME_INFO",
        SEARCH_OFFSET_BY_TIMESTAMP => "SEARCH_OFFSET_BY_TIMESTAMP",
        GET_MAX_OFFSET => "GET_MAX_OFFSET",
        GET_MIN_OFFSET => "GET_MIN_OFFSET",
        GET_EARLIEST_MSG_STORETIME => "GET_EARLIEST_MSG_STORETIME",
        VIEW_MESSAGE_BY_ID => "VIEW_MESSAGE_BY_ID",
        HEART_BEAT => "HEART_BEAT",
        UNREGISTER_CLIENT => "UNREGISTER_CLIENT",
        CONSUMER_SEND_MSG_BACK => "CONSUMER_SEND_MSG_BACK",
        END_TRANSACTION => "END_TRANSACTION",
        GET_CONSUMER_LIST_BY_GROUP => "GET_CONSUMER_LIST_BY_GROUP",
        CHECK_TRANSACTION_STATE => "CHECK_TRANSACTION_STATE",
        NOTIFY_CONSUMER_IDS_CHANGED => "NOTIFY_CONSUMER_IDS_CHANGED",
        LOCK_BATCH_MQ => "LOCK_BATCH_MQ",
        UNLOCK_BATCH_MQ => "UNLOCK_BATCH_MQ",
        REGISTER_BROKER => "REGISTER_BROKER",
        UNREGISTER_BROKER => "UNREGISTER_BROKER",
        GET_ROUTEINFO_BY_TOPIC => "GET_ROUTEINFO_BY_TOPIC",
        GET_BROKER_CLUSTER_INFO => "GET_BROKER_CLUSTER_INFO",
        GET_ALL_TOPIC_LIST_FROM_NAMESERVER => "GET_ALL_TOPIC_LIST_FROM_NAMESERVER",
        GET_KVLIST_BY_NAMESPACE => "GET_KVLIST_BY_NAMESPACE",
        SEND_MESSAGE_V2 => "SEND_MESSAGE_V2",
        SEND_BATCH_MESSAGE => "SEND_BATCH_MESSAGE",
        LITE_PULL_MESSAGE => "LITE_PULL_MESSAGE",
        QUERY_ASSIGNMENT => "QUERY_ASSIGNMENT",
        SET_MESSAGE_REQUEST_MODE => "SET_MESSAGE_REQUEST_MODE",
        BROKER_HEARTBEAT => "BROKER_HEARTBEAT",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_round_trip_and_unknown_names_are_other() {
        for (ordinal, name) in LANGUAGES.iter().enumerate() {
            assert_eq!(language_ordinal(name), ordinal as u8);
            assert_eq!(language_name(ordinal as u8), *name);
        }
        assert_eq!(language_ordinal("cpp"), 1);
        assert_eq!(language_ordinal("COBOL"), 7);
        assert_eq!(language_name(200), "OTHER");
    }

    #[test]
    fn refusals_of_sends_make_producers_retry_elsewhere() {
        let retried = [
            response::TOPIC_NOT_EXIST,
            response::SERVICE_NOT_AVAILABLE,
            response::SYSTEM_ERROR,
            response::SYSTEM_BUSY,
            response::NO_PERMISSION,
        ];
        for code in [
            ErrorCode::NotMaster,
            ErrorCode::Evacuated,
            ErrorCode::NotApproved,
            ErrorCode::Busy,
            ErrorCode::Throttled,
        ] {
            assert!(retried.contains(&response_code(code, Operation::Send)), "{code:?}");
        }
        // A throttled pull is retried after 20 ms by RocketMQ consumers.
        assert_eq!(
            response_code(ErrorCode::Throttled, Operation::Consume),
            response::FLOW_CONTROL
        );
        assert_eq!(
            response_code(ErrorCode::NotApproved, Operation::Consume),
            response::SUBSCRIPTION_GROUP_NOT_EXIST
        );
        assert_eq!(
            response_code(ErrorCode::InvalidArgument, Operation::Send),
            response::MESSAGE_ILLEGAL
        );
    }
}

//! The one error type of the client.

use std::time::Duration;

use meridian_proto::transport::TransportError;
use meridian_proto::{ErrorCode, ValidationError};

/// Why a client call failed. Each message names what failed and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with an error; `message` is the broker's own explanation.
    #[error("broker refused the request ({code}): {message}")]
    Broker {
        /// The broker's error code.
        code: ErrorCode,
        /// The broker's remark: names the problem, the limit and the fix.
        message: String,
    },
    /// A nameserver answered a route lookup with an error that another nameserver would repeat
    /// (an unknown or unapproved topic); `message` is the nameserver's own explanation.
    #[error("nameserver {addr} refused the request ({code}): {message}")]
    Nameserver {
        /// The nameserver that answered.
        addr: String,
        /// Its error code.
        code: ErrorCode,
        /// Its remark: names the problem and the fix.
        message: String,
    },
    /// The nameservers approved the topic (they gave its route), but the broker group has not
    /// applied the approval yet: brokers apply approvals on their next heartbeat. Retriable.
    #[error(
        "topic {topic:?} is approved in the nameservers, but broker group {broker_group:?} ({addr}) has not applied the approval yet (brokers apply approvals on their next heartbeat, about a second); retry in a moment. The broker said: {message}"
    )]
    ApprovalNotApplied {
        /// The topic.
        topic: String,
        /// The broker group that refused it.
        broker_group: String,
        /// The address of the broker that refused it.
        addr: String,
        /// The broker's own refusal.
        message: String,
    },
    /// No nameserver answered a route lookup: each was down, unreachable or busy.
    #[error(
        "no nameserver answered the route lookup of topic {topic:?} (tried {}); check that the nameservers are running and reachable from this client",
        describe_failures(.failures)
    )]
    NameserversUnreachable {
        /// The topic looked up.
        topic: String,
        /// Each nameserver tried, in order, with why it failed.
        failures: Vec<(String, String)>,
    },
    /// No nameserver answered an admin request: each was down, unreachable or busy, through
    /// every round of an election's worth of retries.
    #[error(
        "no nameserver answered; check that they are running (`meridian cluster status`): {}",
        describe_failures(.failures)
    )]
    NameserversDown {
        /// Each nameserver tried in the last round, in order, with why it failed.
        failures: Vec<(String, String)>,
    },
    /// The nameservers approved a topic, but not every broker of its route serves it within the
    /// time waited (brokers apply approvals on their next heartbeat).
    #[error(
        "topic {topic:?} is approved in the nameservers, but not every broker applied it within {within:?}: {problem}; brokers apply approvals on their next heartbeat: check that the broker named runs with these nameservers configured (`meridian cluster status`)"
    )]
    NotServedYet {
        /// The topic.
        topic: String,
        /// How long was waited.
        within: Duration,
        /// What was still missing at the end, broker by broker.
        problem: String,
    },
    /// A message, name or size breaks a rule; nothing was sent.
    #[error("{0}")]
    Validation(#[from] ValidationError),
    /// The call itself is malformed (empty batch, mixed topics, unknown queue); nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A request does not fit in one frame; nothing was sent.
    #[error(
        "request of {size} bytes exceeds the frame limit of {max} bytes (max_frame_size); send smaller batches or raise the limit on both client and broker"
    )]
    FrameTooLarge {
        /// Encoded size of the request frame.
        size: usize,
        /// The client's `limits.max_frame_size`.
        max: usize,
    },
    /// No answer in time. The request may still take effect.
    #[error("{what} timed out after {after:?}; check that the broker is up and not overloaded, or raise the timeout")]
    Timeout {
        /// What was attempted, e.g. `Send request to 127.0.0.1:7911`.
        what: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The TCP connection could not be opened.
    #[error("cannot connect to broker at {addr}: {source}; check the address and that the broker is running")]
    Connect {
        /// Address dialled.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The connection broke before the response arrived; the request may or may not have taken
    /// effect. The next request reconnects.
    #[error(
        "connection to the broker closed before the response arrived; the request may or may not have taken effect, retry it"
    )]
    ConnectionClosed,
    /// The broker's response could not be decoded.
    #[error("cannot decode the broker's response: {0}; the broker may speak another protocol version")]
    Decode(String),
    /// The route of the topic has no broker (or no queue) open for what was asked.
    #[error(
        "no broker serves topic {topic:?} with a queue open for this operation: its broker groups have no live master, or its read/write permission forbids it; `meridian topic describe {topic}` shows which"
    )]
    NoRoute {
        /// The topic.
        topic: String,
    },
    /// The producer, consumer or pool was shut down.
    #[error("the client was shut down; create a new one to continue")]
    Shutdown,
    /// Logging in failed on the client's side: the server could not prove it knows the user, or
    /// the handshake broke (a refused login is [`ClientError::Broker`] with `unauthenticated`).
    #[error("cannot log in to {addr}: {source}")]
    Auth {
        /// Address dialled.
        addr: String,
        /// What went wrong.
        source: meridian_proto::auth::AuthError,
    },
}

fn describe_failures(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(addr, reason)| format!("{addr}: {reason}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<TransportError> for ClientError {
    fn from(error: TransportError) -> ClientError {
        match error {
            TransportError::Remote { code, message, .. } => ClientError::Broker { code, message },
            TransportError::FrameTooLarge { size, max } => ClientError::FrameTooLarge { size, max },
            TransportError::Timeout { what, after } => ClientError::Timeout { what, after },
            TransportError::Connect { addr, source } => ClientError::Connect { addr, source },
            TransportError::ConnectionClosed => ClientError::ConnectionClosed,
            TransportError::Decode(detail) => ClientError::Decode(detail),
            TransportError::Shutdown => ClientError::Shutdown,
            TransportError::Auth { addr, source } => ClientError::Auth { addr, source },
        }
    }
}

impl ClientError {
    /// Whether the same request may succeed if sent again after a back-off: the broker's or
    /// nameserver's retriable codes ([`ErrorCode::is_retriable`]), connection failures, timeouts,
    /// and route lookups no nameserver answered.
    /// Retriable errors never include [`ErrorCode::NotApproved`]: a topic or group waits for an
    /// admin, not for time.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Broker { code, .. } | ClientError::Nameserver { code, .. } => code.is_retriable(),
            ClientError::Timeout { .. }
            | ClientError::Connect { .. }
            | ClientError::ConnectionClosed
            | ClientError::NameserversUnreachable { .. }
            | ClientError::NameserversDown { .. }
            | ClientError::NotServedYet { .. }
            | ClientError::ApprovalNotApplied { .. } => true,
            _ => false,
        }
    }

    /// How long the broker said to wait when it throttled a send over its topic's produce limit
    /// ([`ErrorCode::Throttled`]); 100 ms when it named no wait. `None` for every other error.
    pub fn throttled_wait(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::Broker {
                code: ErrorCode::Throttled,
                message,
            } => Some(meridian_proto::quota::retry_after(message).unwrap_or(std::time::Duration::from_millis(100))),
            _ => None,
        }
    }

    /// The error code a broker or nameserver answered with, if the error came from one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } | ClientError::Nameserver { code, .. } => Some(*code),
            ClientError::ApprovalNotApplied { .. } => Some(ErrorCode::NotApproved),
            _ => None,
        }
    }

    /// Whether the error suggests the cached route of a topic is stale.
    pub(crate) fn suggests_stale_route(&self) -> bool {
        self.is_retriable()
            || matches!(
                self,
                ClientError::Broker {
                    code: ErrorCode::TopicNotFound | ErrorCode::QueueNotFound,
                    ..
                } | ClientError::NoRoute { .. }
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_errors_are_transient_broker_codes_and_connection_failures() {
        let broker = |code| ClientError::Broker {
            code,
            message: String::new(),
        };
        assert!(broker(ErrorCode::Busy).is_retriable());
        assert!(broker(ErrorCode::FlushTimeout).is_retriable());
        assert!(!broker(ErrorCode::InvalidArgument).is_retriable());
        assert!(!broker(ErrorCode::TopicNotFound).is_retriable());
        assert!(ClientError::ConnectionClosed.is_retriable());
        assert!(
            ClientError::Timeout {
                what: "x".into(),
                after: Duration::from_secs(1)
            }
            .is_retriable()
        );
        assert!(!ClientError::Validation(ValidationError::EmptyBody).is_retriable());
        assert!(broker(ErrorCode::TopicNotFound).suggests_stale_route());
    }

    #[test]
    fn not_approved_is_never_retried_and_keeps_the_remote_message() {
        let message = "topic \"payments\" is not approved on broker group \"broker-a\"";
        let from_broker = ClientError::from(TransportError::Remote {
            addr: "127.0.0.1:7911".into(),
            code: ErrorCode::NotApproved,
            message: message.into(),
        });
        assert!(!from_broker.is_retriable());
        assert!(!from_broker.suggests_stale_route());
        assert_eq!(from_broker.code(), Some(ErrorCode::NotApproved));
        assert!(from_broker.to_string().ends_with(message), "{from_broker}");
        let from_nameserver = ClientError::Nameserver {
            addr: "127.0.0.1:7800".into(),
            code: ErrorCode::NotApproved,
            message: message.into(),
        };
        assert!(!from_nameserver.is_retriable());
        assert_eq!(
            from_nameserver.to_string(),
            format!("nameserver 127.0.0.1:7800 refused the request (not_approved): {message}")
        );
        let unreachable = ClientError::NameserversUnreachable {
            topic: "orders".into(),
            failures: vec![
                ("10.0.0.1:7800".into(), "connection refused".into()),
                ("10.0.0.2:7800".into(), "timed out after 3s".into()),
            ],
        };
        assert!(unreachable.is_retriable());
        assert_eq!(unreachable.code(), None);
        assert_eq!(
            unreachable.to_string(),
            "no nameserver answered the route lookup of topic \"orders\" (tried 10.0.0.1:7800: connection refused; \
             10.0.0.2:7800: timed out after 3s); check that the nameservers are running and reachable from this client"
        );
    }

    #[test]
    fn broker_errors_show_the_remark() {
        let error = ClientError::Broker {
            code: ErrorCode::MessageTooLarge,
            message: "message body of 9 bytes exceeds the limit of 8 bytes".into(),
        };
        assert_eq!(
            error.to_string(),
            "broker refused the request (message_too_large): message body of 9 bytes exceeds the limit of 8 bytes"
        );
    }
}

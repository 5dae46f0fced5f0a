//! Settings shared by every client component.

use std::time::Duration;

use meridian_proto::Limits;

/// Connection and request settings shared by producers, consumers and admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Size limits checked before sending; keep them equal to the broker's.
    pub limits: Limits,
    /// How long a request may wait for its response (pulls add their long-poll time to it).
    pub request_timeout: Duration,
    /// How long opening a TCP connection may take.
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            limits: Limits::default(),
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

//! Per-topic produce limits: the one validation rule a limit passes wherever it is set (CLI,
//! nameserver HTTP API, nameserver state), and how a throttled send says how long to wait.
//!
//! The broker enforces a limit with a token bucket (`broker/src/throttle.rs`); a send over it is
//! answered at once with [`crate::ErrorCode::Throttled`] and a message that ends the wait with
//! [`RETRY_IN`]` N ms`, which [`retry_after`] reads back on the client side, so the wait travels
//! in the frame's remark and needs no new header field.

use std::time::Duration;

use crate::validate::ValidationError;

/// Most messages per second a limit may give: beyond what one broker group can take.
pub const MAX_MESSAGES_PER_SEC: u32 = 10_000_000;
/// Most bytes per second a limit may give (10 GiB/s).
pub const MAX_BYTES_PER_SEC: u64 = 10 * 1024 * 1024 * 1024;
/// Fewest bytes per second a limit may give: less could not pass one 4 KiB message a second.
pub const MIN_BYTES_PER_SEC: u64 = 4096;

/// What precedes the wait in a throttled send's message: `retry in 25 ms`.
pub const RETRY_IN: &str = "retry in ";

/// Checks a topic's produce limit: messages per second and bytes per second, each optional
/// (`None`: that dimension is not limited). `0` is refused rather than read as "stop all
/// producers": removing the write permission does that, and says so.
pub fn validate_produce_limit(
    messages_per_sec: Option<u32>,
    bytes_per_sec: Option<u64>,
) -> Result<(), ValidationError> {
    if let Some(messages) = messages_per_sec
        && !(1..=MAX_MESSAGES_PER_SEC).contains(&messages)
    {
        return Err(ValidationError::Limit {
            message: format!(
                "produce limit {messages} msg/s is invalid: give 1 to {MAX_MESSAGES_PER_SEC} msg/s, remove the limit, or remove the topic's write permission to stop producers"
            ),
        });
    }
    if let Some(bytes) = bytes_per_sec
        && !(MIN_BYTES_PER_SEC..=MAX_BYTES_PER_SEC).contains(&bytes)
    {
        return Err(ValidationError::Limit {
            message: format!(
                "produce limit {bytes} bytes/s is invalid: give {MIN_BYTES_PER_SEC} to {MAX_BYTES_PER_SEC} bytes/s, or remove the byte limit"
            ),
        });
    }
    Ok(())
}

/// The wait a throttled send's message names (`... retry in 25 ms ...`); `None` when it names none.
pub fn retry_after(message: &str) -> Option<Duration> {
    let (_, rest) = message.split_once(RETRY_IN)?;
    let digits: &str = rest.split(|character: char| !character.is_ascii_digit()).next()?;
    let millis: u64 = digits.parse().ok()?;
    rest[digits.len()..]
        .starts_with(" ms")
        .then_some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_need_at_least_one_message_and_a_few_kilobytes_per_second() {
        assert!(validate_produce_limit(None, None).is_ok());
        assert!(validate_produce_limit(Some(1), Some(MIN_BYTES_PER_SEC)).is_ok());
        let zero = validate_produce_limit(Some(0), None).unwrap_err().to_string();
        assert!(
            zero.contains("0 msg/s is invalid") && zero.contains("write permission"),
            "{zero}"
        );
        let too_many = validate_produce_limit(Some(MAX_MESSAGES_PER_SEC + 1), None).unwrap_err();
        assert!(too_many.to_string().contains("10000000 msg/s"), "{too_many}");
        let bytes = validate_produce_limit(None, Some(100)).unwrap_err().to_string();
        assert!(bytes.contains("100 bytes/s is invalid: give 4096"), "{bytes}");
        assert_eq!(
            validate_produce_limit(Some(0), None).unwrap_err().code(),
            crate::ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn the_wait_is_read_back_from_the_message() {
        let message = format!("topic \"orders\" is over its produce limit: {RETRY_IN}25 ms; raise it with ...");
        assert_eq!(retry_after(&message), Some(Duration::from_millis(25)));
        assert_eq!(retry_after("retry in 7 s"), None);
        assert_eq!(retry_after("retry in ms"), None);
        assert_eq!(retry_after("no wait named"), None);
    }
}

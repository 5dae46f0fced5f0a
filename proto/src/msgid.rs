//! Message ids: 128 bits, globally unique and sortable by creation time.
//!
//! Layout (big-endian): 48 bits of Unix milliseconds, 48 random bits chosen once per process, and
//! a 32-bit counter that starts at a random value. Written as 32 uppercase hex digits, like
//! RocketMQ's ids, so string order is time order. Two processes collide only if they draw the same
//! 48 random bits, and one process only after 2^32 ids in the same millisecond.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::time::now_millis;

/// A message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

struct Generator {
    process_bits: u64,
    counter: AtomicU32,
}

fn generator() -> &'static Generator {
    // A process-wide generator is the point: uniqueness needs one counter per process.
    static GENERATOR: OnceLock<Generator> = OnceLock::new();
    GENERATOR.get_or_init(|| Generator {
        process_bits: fastrand::u64(..) & 0xFFFF_FFFF_FFFF,
        counter: AtomicU32::new(fastrand::u32(..)),
    })
}

impl MessageId {
    /// A new id for a message created now.
    pub fn generate() -> MessageId {
        MessageId::generate_many(1)
    }

    /// The first of `count` new ids created now, which [`MessageId::nth`] gives the others of:
    /// one clock read and one counter step for a whole batch of events.
    pub fn generate_many(count: u32) -> MessageId {
        let generator = generator();
        let count = generator.counter.fetch_add(count, Ordering::Relaxed);
        let high = (now_millis() as u64 & 0xFFFF_FFFF_FFFF) << 16 | (generator.process_bits >> 32);
        let low = (generator.process_bits & 0xFFFF_FFFF) << 32 | u64::from(count);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&high.to_be_bytes());
        bytes[8..].copy_from_slice(&low.to_be_bytes());
        MessageId(bytes)
    }

    /// The id `n` places after this one in a range from [`MessageId::generate_many`] (its counter,
    /// the low 32 bits, plus `n`, wrapping as the generator's counter does).
    pub fn nth(self, n: u32) -> MessageId {
        let mut bytes = self.0;
        let count = u32::from_be_bytes(bytes[12..].try_into().expect("4 bytes")).wrapping_add(n);
        bytes[12..].copy_from_slice(&count.to_be_bytes());
        MessageId(bytes)
    }

    /// Milliseconds since the Unix epoch when the id was generated.
    pub fn timestamp_millis(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes")) >> 16
    }

    /// Parses the 32-hex-digit form.
    pub fn parse(text: &str) -> Result<MessageId, InvalidMessageId> {
        // from_str_radix alone would accept a leading '+': insist on hex digits only.
        if text.len() != 32 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(InvalidMessageId(text.to_owned()));
        }
        let mut bytes = [0u8; 16];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16)
                .map_err(|_| InvalidMessageId(text.to_owned()))?;
        }
        Ok(MessageId(bytes))
    }
}

impl MessageId {
    /// The 32-hex-digit form (uppercase) as bytes, without allocating: what `Display` prints.
    pub fn to_hex(&self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        let mut hex = [0u8; 32];
        for (index, byte) in self.0.iter().enumerate() {
            hex[index * 2] = DIGITS[usize::from(byte >> 4)];
            hex[index * 2 + 1] = DIGITS[usize::from(byte & 0x0F)];
        }
        hex
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = self.to_hex();
        formatter.write_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

/// A string that is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message id {0:?} is invalid: expected 32 hexadecimal digits")]
pub struct InvalidMessageId(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let ids: Vec<MessageId> = (0..10_000).map(|_| MessageId::generate()).collect();
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        let now = now_millis() as u64;
        assert!(
            ids.iter()
                .all(|id| id.timestamp_millis() <= now && now - id.timestamp_millis() < 60_000)
        );
        let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
        for pair in texts.windows(2) {
            assert!(pair[0][..12] <= pair[1][..12], "timestamps must not go backwards");
        }
    }

    #[test]
    fn a_range_of_ids_is_unique_and_shares_nothing_with_other_ids() {
        let first = MessageId::generate_many(1000);
        let next = MessageId::generate();
        let range: HashSet<_> = (0..1000).map(|n| first.nth(n)).collect();
        assert_eq!(range.len(), 1000);
        assert!(!range.contains(&next), "the range was reserved: the next id is past it");
        assert_eq!(first.nth(0), first);
        assert_eq!(first.nth(3).timestamp_millis(), first.timestamp_millis());
        let wrapping = MessageId([0xFF; 16]);
        assert_eq!(wrapping.nth(1).0[..12], [0xFF; 12], "only the counter moves");
        assert_eq!(wrapping.nth(1).0[12..], [0; 4]);
    }

    #[test]
    fn bad_ids_are_refused() {
        assert!(MessageId::parse("xyz").is_err());
        assert!(MessageId::parse(&"G".repeat(32)).is_err());
        assert!(MessageId::parse(&"+0".repeat(16)).is_err(), "signs are not hex digits");
    }

    proptest! {
        #[test]
        fn ids_round_trip_through_text(bytes in any::<[u8; 16]>()) {
            let id = MessageId(bytes);
            prop_assert_eq!(MessageId::parse(&id.to_string()).unwrap(), id);
            let uppercase: String = bytes.iter().map(|byte| format!("{byte:02X}")).collect();
            prop_assert_eq!(id.to_string(), uppercase);
        }
    }
}

//! The names of the properties the system sets or reads itself: a leaf, so the validation rules
//! ([`crate::validate`]) can name them without depending on the encoding in [`super`].

/// Property holding the client-generated message id (RocketMQ's `UNIQ_KEY`).
pub const MSG_ID: &str = "UNIQ_KEY";
/// Property holding the message keys, separated by [`KEY_SEPARATOR`].
pub const KEYS: &str = "KEYS";
/// Property holding the message tag.
pub const TAGS: &str = "TAGS";
/// Property holding a delay level, `1` to `18` ([`crate::delay::LEVELS_MS`]).
pub const DELAY: &str = "DELAY";
/// Property holding the producer group.
pub const PRODUCER_GROUP: &str = "PGROUP";
/// Property holding a delivery time (Unix ms). The broker sets it on every delayed message it
/// stores, turning a delay level into a time.
pub const DELIVER_AT: &str = "TIMER_DELIVER_MS";
/// Set by the broker: the topic a delayed, half or retried message is really for.
pub const REAL_TOPIC: &str = "REAL_TOPIC";
/// Set by the broker: the queue a delayed or half message is really for (absent: any).
pub const REAL_QUEUE: &str = "REAL_QID";
/// Set by the broker on a retried or dead-lettered message: the topic it was first sent to.
pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
/// `true` on a transactional half message: invisible to consumers until committed.
pub const TRANSACTION: &str = "TRAN_MSG";
/// The sharding key an ordered message's queue was chosen by.
pub const SHARDING_KEY: &str = "SHARDING_KEY";

/// Separates keys inside the [`KEYS`] property.
pub const KEY_SEPARATOR: char = ' ';

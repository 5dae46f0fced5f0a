//! Delayed delivery: RocketMQ's 18 delay levels, arbitrary delivery times, and the slots a broker
//! keeps delayed messages in until they are due.
//!
//! A producer sets either a delay level ([`crate::properties::DELAY`], `1`–`18`) or a delivery
//! time ([`crate::properties::DELIVER_AT`], Unix ms, at most [`MAX_DELAY_MS`] ahead). The broker
//! turns both into a delivery time and stores the message in a slot of
//! [`crate::topics::DELAY_TOPIC`].
//!
//! Slots are a hierarchical timing wheel kept in FIFO queues: each slot (queue) has one fixed
//! delay — 1..59 seconds, 1..59 minutes, 1..23 hours, 1..[`MAX_DELAY_DAYS`] days — so messages in
//! one slot fall due in the order they were stored, and a broker only ever looks at the head of
//! each slot. A message waits in the largest slot not longer than its remaining delay; when that
//! slot fires, the remaining delay is smaller than the next unit and the message moves down to
//! a slot of a smaller unit, or is delivered. A message is therefore moved at most four times
//! (day, hour, minute, second), is never delivered early, and a slot fires within the scheduler's
//! tick of its due time. Delays under a second use slot 0, due at the exact delivery time.

use crate::validate::ValidationError;

pub(crate) mod levels;
pub use levels::{LEVEL_NAMES, LEVELS_MS};

/// Longest delay in days.
pub const MAX_DELAY_DAYS: i64 = 30;
/// Longest delay: a delivery time may be at most this far ahead of the broker's clock.
pub const MAX_DELAY_MS: i64 = MAX_DELAY_DAYS * DAY_MS;

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Units of the wheel, largest first: (unit, most of it a slot holds, first slot of the unit).
const UNITS: [(i64, i64, u32); 4] = [
    (DAY_MS, MAX_DELAY_DAYS, 142),
    (HOUR_MS, 23, 119),
    (MINUTE_MS, 59, 60),
    (SECOND_MS, 59, 1),
];

/// Queues of the delay topic: slot 0 (under a second), 59 second slots, 59 minute slots, 23 hour
/// slots and [`MAX_DELAY_DAYS`] day slots.
pub const fn slot_count() -> u32 {
    142 + MAX_DELAY_DAYS as u32
}

/// The delay of a level, checking it is one of the 18.
pub fn level_delay_ms(level: &str) -> Result<i64, ValidationError> {
    level
        .parse::<usize>()
        .ok()
        .filter(|level| (1..=LEVELS_MS.len()).contains(level))
        .map(|level| LEVELS_MS[level - 1])
        .ok_or_else(|| ValidationError::DelayLevel {
            level: level.to_owned(),
        })
}

/// A delivery time as sent (Unix ms in decimal), checked to be at most [`MAX_DELAY_MS`] after
/// `now_ms`. Times in the past are allowed: the message is delivered at once.
pub fn validate_deliver_at(deliver_at: &str, now_ms: i64) -> Result<i64, ValidationError> {
    let at: i64 = deliver_at.parse().map_err(|_| ValidationError::DeliverAt {
        value: deliver_at.to_owned(),
        reason: "not a Unix time in milliseconds".to_owned(),
    })?;
    check_delay_ms(at - now_ms).map_err(|reason| ValidationError::DeliverAt {
        value: deliver_at.to_owned(),
        reason,
    })?;
    Ok(at)
}

/// The one bound on how far ahead a message may be delivered (what the SDK's `with_delay`, a
/// delivery time and `--delay` all obey): at most [`MAX_DELAY_MS`]. The error is the reason.
pub fn check_delay_ms(delay_ms: i64) -> Result<(), String> {
    if delay_ms > MAX_DELAY_MS {
        return Err(format!(
            "{:.1} days ahead, over the limit of {MAX_DELAY_DAYS} days",
            delay_ms as f64 / DAY_MS as f64
        ));
    }
    Ok(())
}

/// A relative delay as people write it (`5s`, `1m30s`, `500ms`, `2h`, `1d`; an optional leading
/// `+`), in ms, within [`check_delay_ms`]'s bound.
pub fn parse_delay(text: &str) -> Result<i64, ValidationError> {
    let invalid = |reason: String| ValidationError::Delay {
        value: text.to_owned(),
        reason,
    };
    let unparsable = || invalid("not a duration: write a number and a unit, e.g. 5s, 1m30s, 500ms, 2h, 1d".to_owned());
    let rest = text.trim();
    let mut rest = rest.strip_prefix('+').unwrap_or(rest);
    if rest.is_empty() {
        return Err(unparsable());
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(unparsable());
        }
        let amount: i64 = rest[..digits].parse().map_err(|_| unparsable())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => SECOND_MS,
            "m" => MINUTE_MS,
            "h" => HOUR_MS,
            "d" => DAY_MS,
            _ => return Err(unparsable()),
        };
        rest = &rest[unit_len..];
        total = amount
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| invalid(format!("over the limit of {MAX_DELAY_DAYS} days")))?;
    }
    check_delay_ms(total).map_err(invalid)?;
    Ok(total)
}

/// The slot a message due at `due_ms` waits in at `now_ms`, and when that slot releases it; `None`
/// when it is due now.
pub fn slot_for(due_ms: i64, now_ms: i64) -> Option<(u32, i64)> {
    let remaining = due_ms - now_ms;
    if remaining <= 0 {
        return None;
    }
    for (unit, most, first) in UNITS {
        let count = (remaining / unit).min(most);
        if count >= 1 {
            return Some((first + count as u32 - 1, now_ms + count * unit));
        }
    }
    Some((0, due_ms))
}

/// When slot `slot` releases a message stored at `stored_ms` and due at `due_ms`: after the slot's
/// delay, or at the due time for slot 0.
pub fn slot_release(slot: u32, stored_ms: i64, due_ms: i64) -> i64 {
    UNITS
        .iter()
        .find(|(_, _, first)| slot >= *first)
        .map_or(due_ms, |(unit, _, first)| {
            stored_ms + i64::from(slot - first + 1) * unit
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_as_people_write_them_within_the_sdk_bound() {
        assert_eq!(parse_delay("5s").unwrap(), 5_000);
        assert_eq!(parse_delay("+5s").unwrap(), 5_000);
        assert_eq!(parse_delay("1m30s").unwrap(), 90_000);
        assert_eq!(parse_delay("500ms").unwrap(), 500);
        assert_eq!(parse_delay("2h").unwrap(), 7_200_000);
        assert_eq!(parse_delay("30d").unwrap(), MAX_DELAY_MS);
        for bad in ["", "5", "s", "5 s", "5x", "-5s", "1.5s"] {
            let error = parse_delay(bad).unwrap_err().to_string();
            assert!(error.contains("not a duration"), "{bad:?}: {error}");
        }
        let error = parse_delay("31d").unwrap_err().to_string();
        assert!(error.contains("over the limit of 30 days"), "{error}");
        assert!(
            parse_delay("99999999999999999d")
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        // The same bound as a delivery time.
        assert!(validate_deliver_at(&(MAX_DELAY_MS + 1).to_string(), 0).is_err());
        assert!(validate_deliver_at(&MAX_DELAY_MS.to_string(), 0).is_ok());
    }
    use proptest::prelude::*;

    #[test]
    fn levels_are_rocketmqs() {
        assert_eq!(level_delay_ms("1"), Ok(1_000));
        assert_eq!(level_delay_ms("3"), Ok(10_000));
        assert_eq!(level_delay_ms("18"), Ok(7_200_000));
        let error = level_delay_ms("19").unwrap_err();
        assert_eq!(
            error.to_string(),
            "delay level \"19\" is invalid: levels are 1 to 18 (1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h); for any other delay set a delivery time"
        );
        assert!(level_delay_ms("0").is_err() && level_delay_ms("x").is_err());
    }

    #[test]
    fn delivery_times_are_bounded() {
        let now = 1_700_000_000_000;
        assert_eq!(
            validate_deliver_at(&(now + 7 * DAY_MS).to_string(), now),
            Ok(now + 7 * DAY_MS)
        );
        assert_eq!(validate_deliver_at(&(now - 5).to_string(), now), Ok(now - 5));
        let error = validate_deliver_at(&(now + 31 * DAY_MS).to_string(), now).unwrap_err();
        assert!(
            error.to_string().contains("31.0 days ahead, over the limit of 30 days"),
            "{error}"
        );
        assert!(validate_deliver_at("soon", now).is_err());
    }

    #[test]
    fn slots_cover_every_unit() {
        let now = 0;
        assert_eq!(slot_for(0, now), None);
        assert_eq!(slot_for(400, now), Some((0, 400)));
        assert_eq!(slot_for(1_000, now), Some((1, 1_000)));
        assert_eq!(slot_for(59_999, now), Some((59, 59_000)));
        assert_eq!(slot_for(60_000, now), Some((60, 60_000)));
        assert_eq!(slot_for(HOUR_MS - 1, now), Some((118, 59 * MINUTE_MS)));
        assert_eq!(slot_for(2 * HOUR_MS, now), Some((120, 2 * HOUR_MS)));
        assert_eq!(slot_for(DAY_MS, now), Some((142, DAY_MS)));
        assert_eq!(slot_for(MAX_DELAY_MS, now), Some((slot_count() - 1, MAX_DELAY_MS)));
    }

    #[test]
    fn releases_match_the_slot_chosen() {
        for due in [400, 1_000, 59_999, 60_000, 2 * HOUR_MS, DAY_MS + 5, MAX_DELAY_MS] {
            let (slot, release) = slot_for(due, 0).unwrap();
            assert_eq!(slot_release(slot, 0, due), release, "due {due}");
        }
    }

    proptest! {
        /// Moving down the slots reaches the due time in at most five waits, never early.
        #[test]
        fn a_message_moves_down_at_most_four_times_and_is_never_early(due in 1i64..MAX_DELAY_MS) {
            let mut now = 0;
            let mut waits = 0;
            while let Some((slot, release)) = slot_for(due, now) {
                prop_assert!(slot < slot_count());
                prop_assert!(release <= due && release > now);
                now = release;
                waits += 1;
            }
            prop_assert!(now >= due);
            prop_assert!(waits <= 5);
        }
    }
}

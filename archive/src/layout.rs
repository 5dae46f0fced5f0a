//! Where things live in the object store. Every name that becomes a path component passes the
//! shared name rule of `meridian_proto::validate` first, so no topic or broker name can climb out
//! of its partition (`../`, `/`, `.` are refused there).
//!
//! ```text
//! messages/topic=<topic>/date=<yyyy-mm-dd>/<broker>-<segment_start:020>[-e<epoch>].parquet
//! traces/date=<yyyy-mm-dd>/<broker>-<segment_start:020>[-e<epoch>].parquet
//! manifests/<broker>/<segment_start:020>.json
//! fences/<broker>/<epoch:020>
//! ```
//!
//! A group's archiver writes its files with the epoch it archives at (`-e<epoch>`), so a demoted
//! master's late upload can never overwrite files a newer master committed; an archiver outside
//! a group writes the names without it.

use meridian_proto::time::format_millis;
use meridian_proto::validate;
use object_store::path::Path;

use crate::error::Result;

/// Top folder of message files.
pub const MESSAGES: &str = "messages";
/// Top folder of trace event files (see [`crate::traces`]).
pub const TRACES: &str = "traces";
/// Top folder of manifests.
pub const MANIFESTS: &str = "manifests";

/// The file a segment's messages of one topic and UTC day go to. Deterministic: a re-run after a
/// crash writes the same name, so it overwrites instead of duplicating.
pub fn message_file(topic: &str, day: i64, broker: &str, segment_start: u64) -> Result<Path> {
    message_file_at(topic, day, broker, segment_start, None)
}

/// [`message_file`] of a group's archiver at `epoch` (see the module doc).
pub fn message_file_at(topic: &str, day: i64, broker: &str, segment_start: u64, epoch: Option<u64>) -> Result<Path> {
    validate::validate_topic(topic)?;
    validate::validate_group(broker)?;
    Ok(Path::from(format!(
        "{MESSAGES}/topic={topic}/date={}/{broker}-{segment_start:020}{}.parquet",
        date_of_day(day),
        epoch_suffix(epoch)
    )))
}

/// `-e<epoch>` for a group's archiver, nothing otherwise.
pub fn epoch_suffix(epoch: Option<u64>) -> String {
    epoch.map(|epoch| format!("-e{epoch}")).unwrap_or_default()
}

/// `yyyy-mm-dd` of a day since the Unix epoch.
pub fn date_of_day(day: i64) -> String {
    let mut text = format_millis(day * 86_400_000);
    text.truncate(10);
    text
}

/// Folder of one broker's manifest entries.
pub fn manifest_dir(broker: &str) -> Result<Path> {
    validate::validate_group(broker)?;
    Ok(Path::from(format!("{MANIFESTS}/{broker}")))
}

/// The manifest entry of one segment: its existence is what makes the segment's files visible.
pub fn manifest_entry(broker: &str, segment_start: u64) -> Result<Path> {
    validate::validate_group(broker)?;
    Ok(Path::from(format!("{MANIFESTS}/{broker}/{segment_start:020}.json")))
}

/// Days since the Unix epoch (UTC) of a Unix ms timestamp.
pub fn day_of(timestamp_ms: i64) -> i64 {
    timestamp_ms.div_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_hive_partitioned_and_deterministic() {
        let path = message_file("orders", day_of(1_795_631_410_823), "broker-a", 1 << 30).unwrap();
        assert_eq!(
            path.as_ref(),
            "messages/topic=orders/date=2026-11-25/broker-a-00000000001073741824.parquet"
        );
        assert_eq!(
            manifest_entry("broker-a", 0).unwrap().as_ref(),
            "manifests/broker-a/00000000000000000000.json"
        );
    }

    #[test]
    fn path_traversal_is_refused_by_the_shared_name_rule() {
        for bad in ["../etc", "a/b", "..", "a.b", ""] {
            let error = message_file(bad, 0, "broker-a", 0).unwrap_err().to_string();
            assert!(error.contains("topic name"), "{bad}: {error}");
            assert!(message_file("ok", 0, bad, 0).is_err(), "broker {bad:?}");
            assert!(manifest_entry(bad, 0).is_err(), "broker {bad:?}");
        }
    }
}

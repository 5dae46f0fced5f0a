//! Time for the whole workspace: [`now_millis`], the one wall clock in Unix milliseconds, and
//! timestamps as people read them (UTC RFC 3339), without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (0 if the clock is set before 1970). The one wall
/// clock of the workspace: message timestamps, trace events, log entries and manifests all read it.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's civil-from-days).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds: `2026-11-25T17:32:08.073Z`.
pub fn format_millis(millis: i64) -> String {
    let (days, day_millis) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (hours, minutes, seconds, rest) = (
        day_millis / 3_600_000,
        day_millis / 60_000 % 60,
        day_millis / 1000 % 60,
        day_millis % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{rest:03}Z")
}

/// Unix milliseconds as RFC 3339 UTC to the second: `2026-11-25T17:32:08Z`.
pub fn format_seconds(millis: i64) -> String {
    let mut text = format_millis(millis);
    text.replace_range(19..23, "");
    text
}

/// Ms since the Unix epoch as UTC RFC 3339 to the second, e.g. `2026-11-25T09:30:00Z`: how the
/// admin records' `*_ms` times print.
pub fn format_time_ms(ms: u64) -> String {
    format_seconds(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_utc_rfc3339() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_millis(1_795_627_928_073), "2026-11-25T17:32:08.073Z");
        assert_eq!(format_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_seconds(1_795_627_928_073), "2026-11-25T17:32:08Z");
    }
}

//! UTC timestamps in the formats Graph and the token endpoint print.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC wall-clock time split into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UtcTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
}

impl UtcTime {
    pub(crate) fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self::from_unix_seconds(secs)
    }

    pub(crate) fn from_unix_seconds(secs: u64) -> Self {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: rem / 3_600,
            minute: rem % 3_600 / 60,
            second: rem % 60,
        }
    }

    /// Graph's `innerError.date` format: `2020-08-18T12:51:51`.
    pub(crate) fn graph_format(self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// The token endpoint's `timestamp` format: `2016-01-09 02:02:12Z`.
    pub(crate) fn token_endpoint_format(self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_format_as_graph_and_token_endpoint_timestamps() {
        // 2020-08-18T12:51:51Z, the date in Graph's throttling sample.
        let time = UtcTime::from_unix_seconds(1_597_755_111);
        assert_eq!(time.graph_format(), "2020-08-18T12:51:51");
        assert_eq!(time.token_endpoint_format(), "2020-08-18 12:51:51Z");
    }

    #[test]
    fn leap_days_are_formatted() {
        assert_eq!(
            UtcTime::from_unix_seconds(951_782_400).graph_format(),
            "2000-02-29T00:00:00"
        );
    }
}

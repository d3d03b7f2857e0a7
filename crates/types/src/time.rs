//! Timestamps in the formats Lambda's API uses.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Lambda's `LastModified` format: `2026-11-27T07:50:50.000+0000`.
pub fn lambda_timestamp(ms: i64) -> String {
    let format = ::time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
    );
    ::time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000+0000".to_owned())
}

/// ISO 8601 in UTC to the second, as IAM's and STS's XML carry dates: `2026-11-27T07:50:50Z`.
pub fn iso8601(ms: i64) -> String {
    let format =
        ::time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    ::time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_lambda() {
        assert_eq!(super::lambda_timestamp(0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(
            super::lambda_timestamp(1_700_000_000_123),
            "2023-11-14T22:13:20.123+0000"
        );
        assert_eq!(super::iso8601(1_700_000_000_999), "2023-11-14T22:13:20Z");
    }
}

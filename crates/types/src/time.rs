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

/// ISO 8601 in UTC with milliseconds and no zone, as DynamoDB labels its streams:
/// `2026-11-27T07:50:50.123`.
pub fn iso8601_millis_local(ms: i64) -> String {
    let format = ::time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]"
    );
    ::time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000".to_owned())
}

/// ISO 8601 in UTC with microseconds, as function URL configurations carry their times:
/// `2026-11-27T07:50:50.123000Z`.
pub fn iso8601_micros(ms: i64) -> String {
    let format = ::time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    ::time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".to_owned())
}

/// The Common Log Format time an HTTP event's `requestContext.time` carries:
/// `06/Dec/2026:16:49:00 +0000`.
pub fn clf(ms: i64) -> String {
    let format = ::time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    ::time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "01/Jan/1970:00:00:00 +0000".to_owned())
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
        assert_eq!(
            super::iso8601_micros(1_700_000_000_123),
            "2023-11-14T22:13:20.123000Z"
        );
        assert_eq!(super::clf(1_583_348_638_390), "04/Mar/2020:19:03:58 +0000");
    }
}

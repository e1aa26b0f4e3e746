//! Event-time parsing and formatting. All instants are epoch milliseconds (UTC), `i64`.

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};

/// Wall-clock time now, epoch ms (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Formats epoch milliseconds as RFC 3339 with millisecond precision, e.g.
/// `2021-01-19T06:01:03.000Z`. Out-of-range values format as the raw number.
pub fn format_ms(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// The UTC calendar date (`YYYY-MM-DD`) of an instant in epoch milliseconds;
/// the lake's partition value.
pub fn date_of_ms(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => "1970-01-01".to_string(),
    }
}

/// Converts the seed's `createdAt` array `[year, month, day, hour, minute, second, nanos]`
/// (UTC; seed 003, Spark schema `ARRAY<INT>`) to epoch ms. Sub-millisecond nanos are
/// truncated. Errors describe the offending element.
pub fn ms_from_parts(parts: &[i64]) -> Result<i64, String> {
    if parts.len() < 6 || parts.len() > 7 {
        return Err(format!(
            "expected [year, month, day, hour, minute, second, nanos] (6 or 7 integers), got {} elements",
            parts.len()
        ));
    }
    let nanos = parts.get(6).copied().unwrap_or(0);
    let u = |i: usize, name: &str, lo: i64, hi: i64| -> Result<u32, String> {
        let v = parts[i];
        if v < lo || v > hi {
            Err(format!("{name} (element {i}) = {v} is outside {lo}..={hi}"))
        } else {
            Ok(v as u32)
        }
    };
    let year = parts[0];
    if !(1970..=9999).contains(&year) {
        return Err(format!("year (element 0) = {year} is outside 1970..=9999"));
    }
    let (month, day) = (u(1, "month", 1, 12)?, u(2, "day", 1, 31)?);
    let (hour, minute, second) = (u(3, "hour", 0, 23)?, u(4, "minute", 0, 59)?, u(5, "second", 0, 59)?);
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(format!("nanos (element 6) = {nanos} is outside 0..=999999999"));
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)
        .ok_or_else(|| format!("{year}-{month:02}-{day:02} is not a calendar date"))?;
    let t = date
        .and_hms_nano_opt(hour, minute, second, nanos as u32)
        .ok_or_else(|| "invalid time of day".to_string())?;
    Ok(t.and_utc().timestamp_millis())
}

/// The seed's array form of an instant: `[year, month, day, hour, minute, second, nanos]` (UTC).
pub fn parts_from_ms(ms: i64) -> [i64; 7] {
    let t: DateTime<Utc> = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    use chrono::{Datelike, Timelike};
    [
        t.year() as i64,
        t.month() as i64,
        t.day() as i64,
        t.hour() as i64,
        t.minute() as i64,
        t.second() as i64,
        t.nanosecond() as i64,
    ]
}

/// Parses an RFC 3339 timestamp (`2021-01-19T06:01:03Z`, any offset) to epoch ms.
pub fn ms_from_rfc3339(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{s:?} is not an RFC 3339 timestamp ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let ms = ms_from_parts(&[2023, 11, 23, 10, 15, 30, 250_000_000]).unwrap();
        assert_eq!(format_ms(ms), "2023-11-23T10:15:30.250Z");
        assert_eq!(parts_from_ms(ms), [2023, 11, 23, 10, 15, 30, 250_000_000]);
    }

    #[test]
    fn parts_errors_name_the_element() {
        assert!(ms_from_parts(&[2023, 13, 1, 0, 0, 0, 0]).unwrap_err().contains("month"));
        assert!(ms_from_parts(&[2023, 2, 30, 0, 0, 0, 0]).unwrap_err().contains("calendar"));
        assert!(ms_from_parts(&[2023, 2]).unwrap_err().contains("2 elements"));
    }

    #[test]
    fn rfc3339_with_offset() {
        assert_eq!(
            ms_from_rfc3339("2021-01-19T07:00:00+01:00").unwrap(),
            ms_from_rfc3339("2021-01-19T06:00:00Z").unwrap()
        );
        assert_eq!(date_of_ms(0), "1970-01-01");
    }
}

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
    check_range(t.and_utc().timestamp_millis())
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

/// Earliest accepted event time, epoch ms (1970-01-01T00:00:00Z).
pub const MIN_EPOCH_MS: i64 = 0;
/// Latest accepted event time, epoch ms (9999-12-31T23:59:59.999Z).
pub const MAX_EPOCH_MS: i64 = 253_402_300_799_999;

/// The one range check of event times, whatever form they arrived in (parts array,
/// RFC 3339 string or epoch ms): `MIN_EPOCH_MS..=MAX_EPOCH_MS`. `ms` is the decoded
/// instant; the error quotes it as RFC 3339 (and as epoch ms) and names the range.
pub fn check_range(ms: i64) -> Result<i64, String> {
    if (MIN_EPOCH_MS..=MAX_EPOCH_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!(
            "{} (epoch ms {ms}) is outside the accepted range 1970-01-01T00:00:00Z..=9999-12-31T23:59:59.999Z",
            format_ms(ms)
        ))
    }
}

/// Parses an RFC 3339 timestamp (`2021-01-19T06:01:03Z`, any offset) to epoch ms, within
/// [`check_range`].
pub fn ms_from_rfc3339(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{s:?} is not an RFC 3339 timestamp ({e})"))
        .and_then(check_range)
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
    fn every_form_has_one_range() {
        // The same instant before 1970 is refused as parts, as RFC 3339 and (in the schema) as epoch ms.
        let e = ms_from_rfc3339("0001-01-01T00:00:00Z").unwrap_err();
        assert!(e.contains("outside the accepted range 1970-01-01"), "{e}");
        assert!(ms_from_rfc3339("1969-12-31T23:59:59.999Z").is_err());
        assert!(ms_from_rfc3339("1970-01-01T00:30:00+01:00").is_err(), "an offset can move an instant before 1970");
        assert_eq!(ms_from_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert!(ms_from_rfc3339("9999-12-31T23:00:00-05:00").is_err(), "an offset can move an instant past 9999");
        assert!(ms_from_parts(&[1, 1, 1, 0, 0, 0, 0]).unwrap_err().contains("outside 1970..=9999"));
        assert_eq!(check_range(MAX_EPOCH_MS), Ok(MAX_EPOCH_MS));
        assert!(check_range(-1).unwrap_err().contains("1969-12-31T23:59:59.999Z"));
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

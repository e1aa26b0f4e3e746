//! Splitting a request body (or WebSocket frame) into records.
//!
//! Accepted forms:
//! - one JSON object: one record;
//! - a JSON array: each element is a record (elements that are not objects are rejected
//!   one by one);
//! - NDJSON (`application/x-ndjson`, or several lines each holding one JSON value): each
//!   non-empty line is a record; a line that is not JSON is rejected on its own.
//!
//! A record's `index` is its 0-based position in the body (array element, or non-empty
//! line). The original bytes of each record are kept, so what is stored is what was sent.

use serde_json::value::RawValue;
use serde_json::Value;
use sluice_core::schema::FieldError;

/// One record of a body.
#[derive(Debug)]
pub struct Item<'a> {
    pub index: usize,
    /// The record as sent.
    pub raw: &'a str,
    /// Parsed value, or why the record is not JSON.
    pub value: Result<Value, FieldError>,
}

/// The body as a whole could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "malformed JSON at line {} column {}: {}", self.line, self.column, self.reason)
        } else {
            write!(f, "{}", self.reason)
        }
    }
}

fn malformed(e: &serde_json::Error) -> Malformed {
    Malformed { line: e.line(), column: e.column(), reason: e.to_string() }
}

fn json_error(e: &serde_json::Error) -> FieldError {
    FieldError::new("$", format!("malformed JSON at column {}: {e}", e.column()))
}

/// Splits a body. `ndjson` forces line mode (from the content type).
pub fn split(body: &[u8], ndjson: bool) -> Result<Vec<Item<'_>>, Malformed> {
    let text = std::str::from_utf8(body).map_err(|e| Malformed {
        line: 0,
        column: 0,
        reason: format!("the body is not UTF-8 (invalid byte at position {})", e.valid_up_to()),
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Malformed { line: 0, column: 0, reason: "the body is empty; send a JSON object, a JSON array or NDJSON".into() });
    }
    if !ndjson {
        if trimmed.starts_with('[') {
            let items: Vec<&RawValue> = serde_json::from_str(trimmed).map_err(|e| malformed(&e))?;
            return Ok(items
                .into_iter()
                .enumerate()
                .map(|(index, raw)| Item { index, raw: raw.get(), value: serde_json::from_str(raw.get()).map_err(|e| json_error(&e)) })
                .collect());
        }
        match serde_json::from_str::<Value>(trimmed) {
            Ok(value) => return Ok(vec![Item { index: 0, raw: trimmed, value: Ok(value) }]),
            Err(e) => {
                // Several lines whose first is a JSON value on its own: NDJSON.
                let first = trimmed.lines().next().unwrap_or_default();
                let multi = trimmed.lines().filter(|l| !l.trim().is_empty()).count() > 1;
                if !(multi && serde_json::from_str::<Value>(first).is_ok()) {
                    return Err(malformed(&e));
                }
            }
        }
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(index, line)| Item { index, raw: line, value: serde_json::from_str(line).map_err(|e| json_error(&e)) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_array_and_ndjson() {
        assert_eq!(split(br#" {"a":1} "#, false).unwrap().len(), 1);
        let arr = split(br#"[{"a":1}, 2, {"b":[1,2]}]"#, false).unwrap();
        assert_eq!(arr.len(), 3);
        assert_eq!(arr[2].raw, r#"{"b":[1,2]}"#);
        let nd = split(b"{\"a\":1}\n\n{\"a\":2}\n{oops\n", false).unwrap();
        assert_eq!(nd.len(), 3);
        assert!(nd[1].value.is_ok());
        assert_eq!(nd[2].index, 2);
        assert_eq!(nd[2].value.as_ref().unwrap_err().field, "$");
    }

    #[test]
    fn pretty_printed_object_is_one_record() {
        let items = split(b"{\n  \"a\": 1,\n  \"b\": 2\n}\n", false).unwrap();
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn malformed_bodies_say_where() {
        let e = split(b"{\"a\": }", false).unwrap_err();
        assert_eq!((e.line, e.column), (1, 7));
        assert!(split(b"   ", false).unwrap_err().reason.contains("empty"));
        assert!(split(&[0xff, 0xfe], false).unwrap_err().reason.contains("UTF-8"));
        assert!(split(b"[1, 2", false).is_err());
    }
}

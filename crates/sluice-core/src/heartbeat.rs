//! The heart-rate reading: the record the flagship job consumes.
//!
//! Shape (seed 003, `heartbeat-raw-topic`):
//!
//! ```json
//! {"playerId": "p1", "heartbeat": 128, "createdAt": [2023, 11, 23, 10, 15, 30, 0]}
//! ```
//!
//! - `playerId`: non-empty string of at most [`MAX_PLAYER_ID_BYTES`] bytes; the record key.
//! - `heartbeat`: number, beats per minute, within [`MIN_BPM`]..=[`MAX_BPM`].
//! - `createdAt`: event time, UTC, as the seed's `[year, month, day, hour, minute, second, nanos]`
//!   array, an RFC 3339 string, or integer epoch milliseconds.
//!
//! Extra fields are allowed and kept in the stored record.

use serde_json::Value;

use crate::time;

/// Lowest accepted reading, bpm. Below this a reading is a sensor fault, not a heart rate.
pub const MIN_BPM: f64 = 20.0;
/// Highest accepted reading, bpm. Above this a reading is a sensor fault.
pub const MAX_BPM: f64 = 250.0;
/// Longest accepted `playerId`, bytes.
pub const MAX_PLAYER_ID_BYTES: usize = 256;
/// Latest accepted `createdAt`, epoch ms (9999-12-31T23:59:59.999Z).
pub const MAX_EPOCH_MS: i64 = 253_402_300_799_999;

/// A validated heart-rate reading.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatEvent {
    pub player_id: String,
    /// Beats per minute.
    pub heartbeat_bpm: f64,
    /// Event time, epoch ms (UTC).
    pub created_at_ms: i64,
}

/// Why one record was rejected: the field (`$` for the record itself) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        FieldError { field: field.to_string(), reason: reason.into() }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Validates one JSON record as a heart-rate reading.
///
/// Errors: the first failing field, in the order `playerId`, `heartbeat`, `createdAt`,
/// with a reason a person can act on.
pub fn validate(record: &Value) -> Result<HeartbeatEvent, FieldError> {
    let obj = record
        .as_object()
        .ok_or_else(|| FieldError::new("$", format!("expected a JSON object, got {}", type_name(record))))?;
    let player_id = match obj.get("playerId") {
        None => return Err(FieldError::new("playerId", "missing")),
        Some(Value::String(s)) if s.is_empty() => return Err(FieldError::new("playerId", "must not be empty")),
        Some(Value::String(s)) if s.len() > MAX_PLAYER_ID_BYTES => {
            return Err(FieldError::new("playerId", format!("longer than {MAX_PLAYER_ID_BYTES} bytes")))
        }
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(FieldError::new("playerId", format!("expected a string, got {}", type_name(v)))),
    };
    let heartbeat_bpm = match obj.get("heartbeat") {
        None => return Err(FieldError::new("heartbeat", "missing")),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(v) => {
            return Err(FieldError::new("heartbeat", format!("expected a number (bpm), got {}", type_name(v))))
        }
    };
    if !(MIN_BPM..=MAX_BPM).contains(&heartbeat_bpm) {
        return Err(FieldError::new(
            "heartbeat",
            format!("{heartbeat_bpm} bpm is outside the accepted range {MIN_BPM}..={MAX_BPM} bpm"),
        ));
    }
    let created_at_ms = match obj.get("createdAt") {
        None => return Err(FieldError::new("createdAt", "missing")),
        Some(v) => created_at(v).map_err(|reason| FieldError::new("createdAt", reason))?,
    };
    Ok(HeartbeatEvent { player_id, heartbeat_bpm, created_at_ms })
}

fn created_at(v: &Value) -> Result<i64, String> {
    match v {
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_i64() {
                    Some(n) => parts.push(n),
                    None => return Err(format!("element {i} must be an integer, got {}", type_name(item))),
                }
            }
            time::ms_from_parts(&parts)
        }
        Value::String(s) => time::ms_from_rfc3339(s),
        Value::Number(n) => match n.as_i64() {
            Some(ms) if (0..=MAX_EPOCH_MS).contains(&ms) => Ok(ms),
            Some(ms) => Err(format!("epoch milliseconds {ms} is outside 0..={MAX_EPOCH_MS}")),
            None => Err(format!("epoch milliseconds must be an integer, got {n}")),
        },
        other => Err(format!(
            "expected [year, month, day, hour, minute, second, nanos], an RFC 3339 string or epoch ms, got {}",
            type_name(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_all_three_time_forms() {
        let a = validate(&json!({"playerId":"p","heartbeat":80,"createdAt":[2023,11,23,10,15,30,0]})).unwrap();
        let b = validate(&json!({"playerId":"p","heartbeat":80.0,"createdAt":"2023-11-23T10:15:30Z"})).unwrap();
        let c = validate(&json!({"playerId":"p","heartbeat":80,"createdAt":a.created_at_ms})).unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
    }

    #[test]
    fn each_error_names_its_field() {
        let cases = [
            (json!([1]), "$"),
            (json!({"heartbeat":80,"createdAt":0}), "playerId"),
            (json!({"playerId":7,"heartbeat":80,"createdAt":0}), "playerId"),
            (json!({"playerId":"p","createdAt":0}), "heartbeat"),
            (json!({"playerId":"p","heartbeat":"80","createdAt":0}), "heartbeat"),
            (json!({"playerId":"p","heartbeat":19.9,"createdAt":0}), "heartbeat"),
            (json!({"playerId":"p","heartbeat":251,"createdAt":0}), "heartbeat"),
            (json!({"playerId":"p","heartbeat":80}), "createdAt"),
            (json!({"playerId":"p","heartbeat":80,"createdAt":true}), "createdAt"),
            (json!({"playerId":"p","heartbeat":80,"createdAt":1.5}), "createdAt"),
            (json!({"playerId":"p","heartbeat":80,"createdAt":"yesterday"}), "createdAt"),
            (json!({"playerId":"p","heartbeat":80,"createdAt":[2023,1,1,0,0,"x",0]}), "createdAt"),
        ];
        for (record, field) in cases {
            let err = validate(&record).unwrap_err();
            assert_eq!(err.field, field, "{record} -> {err}");
            assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn range_bounds_are_inclusive() {
        for bpm in [20.0, 250.0] {
            assert!(validate(&json!({"playerId":"p","heartbeat":bpm,"createdAt":0})).is_ok());
        }
    }
}

/// A check of one record value against a topic's schema: `Err` names the field and why.
pub type RecordCheck = std::sync::Arc<dyn Fn(&[u8]) -> Result<(), FieldError> + Send + Sync>;

//! The heart-rate reading: the record of the flagship pipeline.
//!
//! Shape (seed 003, `heartbeat-raw-topic`):
//!
//! ```json
//! {"playerId": "p1", "heartbeat": 128, "createdAt": [2023, 11, 23, 10, 15, 30, 0]}
//! ```
//!
//! The checks are those of the built-in declared schema [`crate::schema::heartbeat`];
//! [`validate`] applies it and returns the reading typed.

use serde_json::Value;

use crate::schema::{self, Datum, FieldError};

/// Lowest accepted reading, bpm. Below this a reading is a sensor fault, not a heart rate.
pub const MIN_BPM: f64 = 20.0;
/// Highest accepted reading, bpm. Above this a reading is a sensor fault.
pub const MAX_BPM: f64 = 250.0;
/// Longest accepted `playerId`, bytes.
pub const MAX_PLAYER_ID_BYTES: usize = 256;

/// A validated heart-rate reading.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatEvent {
    pub player_id: String,
    /// Beats per minute.
    pub heartbeat_bpm: f64,
    /// Event time, epoch ms (UTC).
    pub created_at_ms: i64,
}

/// Validates one JSON record as a heart-rate reading.
///
/// Errors: the first failing field, in the order `playerId`, `heartbeat`, `createdAt`,
/// with a reason a person can act on.
pub fn validate(record: &Value) -> Result<HeartbeatEvent, FieldError> {
    match schema::heartbeat().decode_value(record)?.as_slice() {
        [Datum::Str(p), Datum::Float(hr), Datum::Timestamp(t)] => Ok(HeartbeatEvent { player_id: p.to_string(), heartbeat_bpm: *hr, created_at_ms: *t }),
        other => Err(FieldError::new("$", format!("unexpected decoded shape {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_reading() {
        let ev = validate(&json!({"playerId":"p","heartbeat":80,"createdAt":1000})).unwrap();
        assert_eq!(ev, HeartbeatEvent { player_id: "p".into(), heartbeat_bpm: 80.0, created_at_ms: 1000 });
        for bpm in [20.0, 250.0] {
            assert!(validate(&json!({"playerId":"p","heartbeat":bpm,"createdAt":0})).is_ok());
        }
        assert_eq!(validate(&json!({"playerId":"p","heartbeat":19.9,"createdAt":0})).unwrap_err().field, "heartbeat");
    }
}

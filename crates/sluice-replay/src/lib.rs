//! sluice-replay: turn wearable recordings into heart-rate readings and send them to
//! sluice over the WebSocket ingest, at real time × N.
//!
//! - [`files`]: FIT (fitparser), TCX (tcx) and GPX (gpx, plus Garmin's
//!   TrackPointExtension `hr`, which the gpx crate does not expose) → [`Reading`]s.
//! - [`client`]: the WebSocket producer (flow control, acks, reconnect, progress bar).

pub mod client;
pub mod files;

pub use files::{read_bytes, read_file, Reading};

/// Errors of reading recordings and replaying them.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid {format} file: {reason}")]
    Parse { path: String, format: &'static str, reason: String },
    #[error("{path}: unknown recording format; expected a .fit, .tcx or .gpx file")]
    UnknownFormat { path: String },
    #[error("{path} holds no heart-rate samples")]
    NoHeartRate { path: String },
    #[error("cannot reach {url}: {reason}. Is `sluice serve` running there?")]
    Connect { url: String, reason: String },
    #[error("the server refused readings: {0}")]
    Refused(String),
    #[error("connection to {url} lost and not re-established within {retry_secs} s ({acked} readings were acknowledged)")]
    Lost { url: String, retry_secs: u64, acked: usize },
}

/// The JSON record of one reading, in the seed's format (seed 003):
/// `{"playerId": .., "heartbeat": bpm, "createdAt": [y, m, d, h, min, s, nanos]}`.
pub fn event_json(player_id: &str, r: &Reading) -> String {
    serde_json::json!({
        "playerId": player_id,
        "heartbeat": r.heartbeat_bpm,
        "createdAt": sluice_core::time::parts_from_ms(r.time_ms),
    })
    .to_string()
}

//! Row types that cross crate boundaries: a heart-rate session as the live view and the
//! demo show it. Times are epoch ms (UTC); durations are ms; heart rates are bpm.

use serde::{Deserialize, Serialize};

/// Time spent in each intensity zone, ms. Zones are the ACSM %HRmax bands
/// (see `sluice_stream::zones`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneMs {
    pub low: i64,
    pub moderate: i64,
    pub high: i64,
}

/// One exercise session of one player: a row of the sessions table and of `GET /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub player_id: String,
    /// First sample's event time, epoch ms.
    pub session_start_ms: i64,
    /// Last sample's event time plus that sample's coverage, epoch ms.
    pub session_end_ms: i64,
    pub zones: ZoneMs,
    /// Distinct readings in the session.
    pub samples: u64,
    /// Mean of the readings, bpm (unweighted).
    pub avg_hr: f64,
    pub min_hr: f64,
    pub max_hr: f64,
    /// The HRmax the zones were computed with, bpm.
    pub hr_max: f64,
    /// `false` while the session may still grow (live progress), `true` once closed.
    pub closed: bool,
}

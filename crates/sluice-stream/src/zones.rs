//! Exercise intensity zones by fraction of maximal heart rate.
//!
//! Source: American College of Sports Medicine, *ACSM's Guidelines for Exercise Testing
//! and Prescription*, 10th ed. (2018), Table 6.1, %HRmax column: very light < 57 %,
//! light 57–63 %, moderate 64–76 %, vigorous 77–95 %, near-maximal to maximal ≥ 96 %.
//! sluice folds light and below into *low*, and vigorous and above into *high*:
//!
//! | zone     | f = heartbeat / HRmax |
//! |----------|-----------------------|
//! | low      | f < 0.64              |
//! | moderate | 0.64 ≤ f < 0.77       |
//! | high     | f ≥ 0.77              |
//!
//! Each reading covers `min(t_next − t, 5 s)` of its session; the last reading of a
//! session covers 1 s. The cap keeps a dropped signal from being counted as exercise.

use serde::{Deserialize, Serialize};

/// Lower bound of the moderate zone, fraction of HRmax (inclusive).
pub const MODERATE_FROM: f64 = 0.64;
/// Lower bound of the high zone, fraction of HRmax (inclusive).
pub const HIGH_FROM: f64 = 0.77;
/// Longest time one reading can cover, ms.
pub const MAX_COVERAGE_MS: i64 = 5_000;
/// Time the last reading of a session covers, ms.
pub const LAST_COVERAGE_MS: i64 = 1_000;
/// Default HRmax when none is configured for a player, bpm.
pub const DEFAULT_HR_MAX_BPM: f64 = 190.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    Low,
    Moderate,
    High,
}

/// The zone of a reading of `hr_bpm` for a player whose HRmax is `hr_max_bpm`.
pub fn zone(hr_bpm: f64, hr_max_bpm: f64) -> Zone {
    let f = hr_bpm / hr_max_bpm;
    if f < MODERATE_FROM {
        Zone::Low
    } else if f < HIGH_FROM {
        Zone::Moderate
    } else {
        Zone::High
    }
}

/// Time a reading at `t_ms` covers given the next reading's time (`None` for the last), ms.
pub fn coverage_ms(t_ms: i64, next_ms: Option<i64>) -> i64 {
    match next_ms {
        Some(n) => (n - t_ms).clamp(0, MAX_COVERAGE_MS),
        None => LAST_COVERAGE_MS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_at_default_hr_max() {
        // 0.64 * 190 = 121.6 bpm, 0.77 * 190 = 146.3 bpm
        assert_eq!(zone(121.0, 190.0), Zone::Low);
        assert_eq!(zone(122.0, 190.0), Zone::Moderate);
        assert_eq!(zone(146.0, 190.0), Zone::Moderate);
        assert_eq!(zone(147.0, 190.0), Zone::High);
    }

    #[test]
    fn exact_boundaries_are_inclusive_below() {
        // 128/200 = 0.64 exactly, 154/200 = 0.77 exactly
        assert_eq!(zone(128.0, 200.0), Zone::Moderate);
        assert_eq!(zone(154.0, 200.0), Zone::High);
        assert_eq!(zone(127.9, 200.0), Zone::Low);
    }

    #[test]
    fn coverage_is_capped() {
        assert_eq!(coverage_ms(0, Some(1_000)), 1_000);
        assert_eq!(coverage_ms(0, Some(60_000)), 5_000);
        assert_eq!(coverage_ms(0, None), 1_000);
    }
}

//! Windows in event time (pure: no I/O, no clock). Times are epoch ms; a window is the
//! half-open interval `[start, end)`.
//!
//! - **Tumbling** windows of `size` partition time: `start = t − (t mod size)`.
//! - **Hopping** windows of `size` start every `slide` (size a whole multiple of slide):
//!   a record belongs to `size / slide` windows.
//! - **Session** windows (per key) grow while records arrive less than `gap` apart: a
//!   record at `t` opens `[t, t + gap)`, and overlapping sessions merge (as Flink's merging
//!   session windows). A session's end is its last record plus `gap`.
//!
//! Semantics follow Flink's window table functions and Akidau et al., "The Dataflow
//! Model" (VLDB 2015): a window fires once the watermark passes `end + allowed lateness`;
//! a record is late when every window it belongs to has fired.

use serde::{Deserialize, Serialize};

/// A window shape. Durations in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WindowKind {
    Tumble { size_ms: i64 },
    Hop { slide_ms: i64, size_ms: i64 },
    Session { gap_ms: i64 },
}

impl WindowKind {
    /// The windows a record at `t_ms` belongs to, oldest first. For sessions, the
    /// record's own proto-session `[t, t + gap)`.
    pub fn assign(&self, t_ms: i64, out: &mut Vec<(i64, i64)>) {
        out.clear();
        match *self {
            WindowKind::Tumble { size_ms } => {
                let start = t_ms - t_ms.rem_euclid(size_ms);
                out.push((start, start.saturating_add(size_ms)));
            }
            WindowKind::Hop { slide_ms, size_ms } => {
                let last = t_ms - t_ms.rem_euclid(slide_ms);
                let n = size_ms / slide_ms;
                for k in (0..n).rev() {
                    let start = last - k * slide_ms;
                    out.push((start, start.saturating_add(size_ms)));
                }
            }
            WindowKind::Session { gap_ms } => out.push((t_ms, t_ms.saturating_add(gap_ms))),
        }
    }

    pub fn is_session(&self) -> bool {
        matches!(self, WindowKind::Session { .. })
    }

    /// How far past a record's event time its windows can end, ms.
    pub fn reach_ms(&self) -> i64 {
        match *self {
            WindowKind::Tumble { size_ms } | WindowKind::Hop { size_ms, .. } => size_ms,
            WindowKind::Session { gap_ms } => gap_ms,
        }
    }

    /// A short label: `1m`, `1h`, `500ms`… (for rollup table names).
    pub fn label(ms: i64) -> String {
        for (unit, len) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms % len == 0 {
                return format!("{}{unit}", ms / len);
            }
        }
        format!("{ms}ms")
    }
}

/// Whether a window ending at `end_ms` has fired at watermark `watermark_ms`.
pub fn has_fired(end_ms: i64, allowed_lateness_ms: i64, watermark_ms: i64) -> bool {
    end_ms.saturating_add(allowed_lateness_ms) <= watermark_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_and_negative_times() {
        let mut out = Vec::new();
        WindowKind::Tumble { size_ms: 60_000 }.assign(125_000, &mut out);
        assert_eq!(out, vec![(120_000, 180_000)]);
        WindowKind::Tumble { size_ms: 60_000 }.assign(-1, &mut out);
        assert_eq!(out, vec![(-60_000, 0)]);
    }

    #[test]
    fn hopping_windows_cover_the_record() {
        let mut out = Vec::new();
        WindowKind::Hop { slide_ms: 10, size_ms: 30 }.assign(25, &mut out);
        assert_eq!(out, vec![(0, 30), (10, 40), (20, 50)]);
        assert!(out.iter().all(|&(s, e)| s <= 25 && 25 < e));
    }

    #[test]
    fn labels() {
        assert_eq!(WindowKind::label(60_000), "1m");
        assert_eq!(WindowKind::label(3_600_000), "1h");
        assert_eq!(WindowKind::label(1_500), "1500ms");
    }
}

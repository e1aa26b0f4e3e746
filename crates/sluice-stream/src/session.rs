//! Session windows of one player's readings, in event time.
//!
//! A session is a maximal run of readings with no gap of more than `gap_ms` between
//! consecutive readings. Readings may arrive out of order; a reading that bridges two
//! open sessions merges them (as Flink's merging session windows do).
//!
//! To keep state small, a session stores a *folded* aggregate of readings whose coverage
//! is final, plus a *tail* of pending readings. Reading `i` is folded once its successor
//! `i+1` is at or below the player's watermark; from then on nothing may be inserted
//! before `i+1`, so the player's `min_accept_ms` rises to `t[i+1]`. Readings earlier than
//! `min_accept_ms` are late and dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_core::model::{SessionSummary, ZoneMs};

use crate::zones::{self, Zone};

/// Aggregate of readings whose coverage is final.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Agg {
    pub zones: ZoneMs,
    pub samples: u64,
    /// Sum of readings, bpm.
    pub sum_hr: f64,
    /// bpm; meaningful when `samples > 0`.
    pub min_hr: f64,
    /// bpm; meaningful when `samples > 0`.
    pub max_hr: f64,
}

impl Agg {
    pub fn add(&mut self, hr: f64, coverage_ms: i64, hr_max: f64) {
        match zones::zone(hr, hr_max) {
            Zone::Low => self.zones.low += coverage_ms,
            Zone::Moderate => self.zones.moderate += coverage_ms,
            Zone::High => self.zones.high += coverage_ms,
        }
        if self.samples == 0 {
            self.min_hr = hr;
            self.max_hr = hr;
        } else {
            self.min_hr = self.min_hr.min(hr);
            self.max_hr = self.max_hr.max(hr);
        }
        self.samples += 1;
        self.sum_hr += hr;
    }

    pub fn merge(&mut self, other: &Agg) {
        if other.samples == 0 {
            return;
        }
        if self.samples == 0 {
            *self = *other;
            return;
        }
        self.zones.low += other.zones.low;
        self.zones.moderate += other.zones.moderate;
        self.zones.high += other.zones.high;
        self.samples += other.samples;
        self.sum_hr += other.sum_hr;
        self.min_hr = self.min_hr.min(other.min_hr);
        self.max_hr = self.max_hr.max(other.max_hr);
    }
}

/// An open session: folded prefix plus pending tail (event time ms → bpm, never empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenSession {
    pub start_ms: i64,
    pub folded: Agg,
    pub tail: BTreeMap<i64, f64>,
}

impl OpenSession {
    pub fn new(t_ms: i64, hr: f64) -> Self {
        OpenSession { start_ms: t_ms, folded: Agg::default(), tail: BTreeMap::from([(t_ms, hr)]) }
    }

    /// Event time of the latest reading, ms.
    pub fn last_ms(&self) -> i64 {
        self.tail.last_key_value().map_or(self.start_ms, |(t, _)| *t)
    }

    /// Folds every tail reading whose successor is at or below `watermark_ms`.
    /// Returns the new lower bound for accepted readings, if it moved.
    pub fn fold(&mut self, watermark_ms: i64, hr_max: f64) -> Option<i64> {
        let mut bound = None;
        while self.tail.len() >= 2 {
            let mut it = self.tail.iter();
            let (Some((&t, &hr)), Some((&next, _))) = (it.next(), it.next()) else { break };
            if next > watermark_ms {
                break;
            }
            self.folded.add(hr, zones::coverage_ms(t, Some(next)), hr_max);
            self.tail.remove(&t);
            bound = Some(next);
        }
        bound
    }

    /// The session as it stands: final if `closed`, else a provisional view that treats
    /// the latest reading as the last.
    pub fn summary(&self, player_id: &str, hr_max: f64, closed: bool) -> SessionSummary {
        let mut agg = self.folded;
        let mut it = self.tail.iter().peekable();
        while let Some((&t, &hr)) = it.next() {
            let next = it.peek().map(|(&n, _)| n);
            agg.add(hr, zones::coverage_ms(t, next), hr_max);
        }
        let last = self.last_ms();
        SessionSummary {
            player_id: player_id.to_string(),
            session_start_ms: self.start_ms,
            session_end_ms: last + zones::LAST_COVERAGE_MS,
            zones: agg.zones,
            samples: agg.samples,
            avg_hr: if agg.samples > 0 { agg.sum_hr / agg.samples as f64 } else { 0.0 },
            min_hr: agg.min_hr,
            max_hr: agg.max_hr,
            hr_max,
            closed,
        }
    }
}

/// What happened to one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// Same player and event time as a pending reading: counted once.
    Duplicate,
    /// Earlier than the finalized frontier: dropped.
    Late,
}

/// Event-time state of one player.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlayerState {
    /// Largest event time seen, ms.
    pub max_event_ms: Option<i64>,
    /// Readings earlier than this are late, ms.
    pub min_accept_ms: i64,
    /// Open sessions, ordered by start, disjoint.
    pub sessions: Vec<OpenSession>,
    /// Processing time of the latest reading, ms (not checkpointed: reset on restore).
    #[serde(skip)]
    pub last_input_ms: i64,
}

impl PlayerState {
    /// Inserts a reading. Does not advance the watermark; call [`PlayerState::advance`].
    pub fn insert(&mut self, t_ms: i64, hr: f64, gap_ms: i64) -> Outcome {
        if t_ms < self.min_accept_ms {
            return Outcome::Late;
        }
        // Sessions within reach of t: contiguous, at most two (t between two sessions).
        let first = self.sessions.partition_point(|s| s.last_ms() + gap_ms < t_ms);
        let mut end = first;
        while end < self.sessions.len() && self.sessions[end].start_ms - gap_ms <= t_ms {
            end += 1;
        }
        if self.sessions[first..end].iter().any(|s| s.tail.contains_key(&t_ms)) {
            return Outcome::Duplicate;
        }
        match end - first {
            0 => self.sessions.insert(first, OpenSession::new(t_ms, hr)),
            _ => {
                let mut merged = self.sessions.remove(first);
                for _ in first + 1..end {
                    let later = self.sessions.remove(first);
                    merged.folded.merge(&later.folded);
                    merged.tail.extend(later.tail);
                }
                merged.tail.insert(t_ms, hr);
                merged.start_ms = merged.start_ms.min(t_ms);
                self.sessions.insert(first, merged);
            }
        }
        self.max_event_ms = Some(self.max_event_ms.map_or(t_ms, |m| m.max(t_ms)));
        Outcome::Accepted
    }

    /// Closes sessions whose last reading + gap is at or below `watermark_ms` (pushing
    /// their final summaries to `closed`) and folds the rest.
    pub fn advance(&mut self, player_id: &str, watermark_ms: i64, gap_ms: i64, hr_max: f64, closed: &mut Vec<SessionSummary>) {
        let mut i = 0;
        while i < self.sessions.len() {
            let last = self.sessions[i].last_ms();
            if last.saturating_add(gap_ms) <= watermark_ms {
                let s = self.sessions.remove(i);
                closed.push(s.summary(player_id, hr_max, true));
                self.min_accept_ms = self.min_accept_ms.max(last.saturating_add(gap_ms).saturating_add(1));
                continue;
            }
            if let Some(bound) = self.sessions[i].fold(watermark_ms, hr_max) {
                self.min_accept_ms = self.min_accept_ms.max(bound);
            }
            i += 1;
        }
    }
}

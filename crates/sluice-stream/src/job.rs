//! The heart-rate intensity job: per-player session windows over heart-rate readings, with
//! each session's time in the low, moderate and high zones (see [`crate::zones`]).
//!
//! Event time and watermarks: each player's watch is its own clock, so the watermark is
//! kept per player: `max event time seen − max_out_of_orderness_ms`. A session closes
//! when its player's watermark reaches `last reading + session_gap_ms`. When a player's
//! input stops, a closing rule still closes its sessions: after `idle_timeout_ms` of
//! processing time without a reading (checked only while the job is caught up), or at the
//! end of input ([`HeartRateJob::close_all`], the equivalent of Flink's final
//! `MAX_WATERMARK`).
//!
//! Pure: no I/O, no clock. Processing time is passed in.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sluice_core::heartbeat::HeartbeatEvent;
use sluice_core::model::SessionSummary;

use crate::session::{Outcome, PlayerState};
use crate::zones::DEFAULT_HR_MAX_BPM;

/// Settings of the heart-rate job. Times in ms, heart rates in bpm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeartRateConfig {
    /// HRmax for players without an entry in `hr_max_bpm`.
    pub hr_max_default_bpm: f64,
    /// HRmax per player id.
    pub hr_max_bpm: HashMap<String, f64>,
    /// A gap of more than this between two readings ends a session.
    pub session_gap_ms: i64,
    /// How far behind the latest reading a player's watermark trails.
    pub max_out_of_orderness_ms: i64,
    /// Close a player's sessions after this much processing time without a reading
    /// (0 disables).
    pub idle_timeout_ms: i64,
}

impl Default for HeartRateConfig {
    fn default() -> Self {
        HeartRateConfig {
            hr_max_default_bpm: DEFAULT_HR_MAX_BPM,
            hr_max_bpm: HashMap::new(),
            session_gap_ms: 300_000,
            max_out_of_orderness_ms: 10_000,
            idle_timeout_ms: 30_000,
        }
    }
}

/// Checkpointed state of the job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub players: BTreeMap<String, PlayerState>,
}

pub struct HeartRateJob {
    config: HeartRateConfig,
    state: JobState,
}

impl HeartRateJob {
    pub fn new(config: HeartRateConfig) -> Self {
        HeartRateJob { config, state: JobState::default() }
    }

    pub fn config(&self) -> &HeartRateConfig {
        &self.config
    }

    /// HRmax of a player, bpm.
    pub fn hr_max(&self, player_id: &str) -> f64 {
        self.config.hr_max_bpm.get(player_id).copied().unwrap_or(self.config.hr_max_default_bpm)
    }

    /// Replaces the state with a checkpointed one; idle clocks restart at `now_ms`.
    pub fn restore(&mut self, mut state: JobState, now_ms: i64) {
        for p in state.players.values_mut() {
            p.last_input_ms = now_ms;
        }
        self.state = state;
    }

    pub fn state(&self) -> &JobState {
        &self.state
    }

    /// Processes one reading at processing time `now_ms`; closed sessions go to `closed`.
    pub fn process(&mut self, ev: &HeartbeatEvent, now_ms: i64, closed: &mut Vec<SessionSummary>) -> Outcome {
        let hr_max = self.hr_max(&ev.player_id);
        let (gap, ooo) = (self.config.session_gap_ms, self.config.max_out_of_orderness_ms);
        let player = self.state.players.entry(ev.player_id.clone()).or_default();
        player.last_input_ms = now_ms;
        let outcome = player.insert(ev.created_at_ms, ev.heartbeat_bpm, gap);
        if outcome == Outcome::Accepted {
            let wm = player.max_event_ms.unwrap_or(i64::MIN).saturating_sub(ooo);
            player.advance(&ev.player_id, wm, gap, hr_max, closed);
        }
        outcome
    }

    /// Closes the sessions of players idle for at least `idle_timeout_ms` at `now_ms`.
    pub fn close_idle(&mut self, now_ms: i64, closed: &mut Vec<SessionSummary>) {
        if self.config.idle_timeout_ms <= 0 {
            return;
        }
        let timeout = self.config.idle_timeout_ms;
        let idle: Vec<String> = self
            .state
            .players
            .iter()
            .filter(|(_, p)| !p.sessions.is_empty() && now_ms - p.last_input_ms >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            self.close_player(&id, closed);
        }
    }

    /// Closes every open session (end of input).
    pub fn close_all(&mut self, closed: &mut Vec<SessionSummary>) {
        let ids: Vec<String> = self.state.players.keys().cloned().collect();
        for id in ids {
            self.close_player(&id, closed);
        }
    }

    fn close_player(&mut self, id: &str, closed: &mut Vec<SessionSummary>) {
        let hr_max = self.hr_max(id);
        let gap = self.config.session_gap_ms;
        if let Some(p) = self.state.players.get_mut(id) {
            p.advance(id, i64::MAX, gap, hr_max, closed);
        }
    }

    /// Provisional summaries of every open session (live progress).
    pub fn open_sessions(&self) -> Vec<SessionSummary> {
        self.state
            .players
            .iter()
            .flat_map(|(id, p)| p.sessions.iter().map(move |s| s.summary(id, self.hr_max(id), false)))
            .collect()
    }

    /// Provisional summaries of one player's open sessions.
    pub fn open_sessions_of(&self, id: &str) -> Vec<SessionSummary> {
        let hr_max = self.hr_max(id);
        self.state.players.get(id).map_or_else(Vec::new, |p| p.sessions.iter().map(|s| s.summary(id, hr_max, false)).collect())
    }

    pub fn open_session_count(&self) -> usize {
        self.state.players.values().map(|p| p.sessions.len()).sum()
    }
}

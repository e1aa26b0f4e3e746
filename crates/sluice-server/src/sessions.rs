//! The live view of sessions: closed ones (loaded from the lake at start, then added as
//! checkpoints commit them) and open ones (live progress from the job), with a broadcast
//! of every change for Server-Sent Events.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};
use sluice_core::model::SessionSummary;
use sluice_core::time::format_ms;
use tokio::sync::broadcast;

/// A change, as sent on `/v1/sessions/stream`.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// `event: session_update`: a player's open sessions now.
    Update { player_id: String, open: Vec<SessionSummary> },
    /// `event: session_closed`: a session closed and committed to the lake.
    Closed(SessionSummary),
}

impl SessionEvent {
    pub fn name(&self) -> &'static str {
        match self {
            SessionEvent::Update { .. } => "session_update",
            SessionEvent::Closed(_) => "session_closed",
        }
    }

    pub fn data(&self) -> Value {
        match self {
            SessionEvent::Update { player_id, open } => json!({"player_id": player_id, "open": open.iter().map(session_json).collect::<Vec<_>>()}),
            SessionEvent::Closed(s) => session_json(s),
        }
    }
}

/// The API shape of a session: times as RFC 3339 (UTC), zone durations in seconds.
pub fn session_json(s: &SessionSummary) -> Value {
    json!({
        "player_id": s.player_id,
        "session_start": format_ms(s.session_start_ms),
        "session_end": format_ms(s.session_end_ms),
        "duration_s": (s.session_end_ms - s.session_start_ms) as f64 / 1000.0,
        "low_s": s.zones.low as f64 / 1000.0,
        "moderate_s": s.zones.moderate as f64 / 1000.0,
        "high_s": s.zones.high as f64 / 1000.0,
        "samples": s.samples,
        "avg_hr": (s.avg_hr * 10.0).round() / 10.0,
        "min_hr": s.min_hr,
        "max_hr": s.max_hr,
        "hr_max": s.hr_max,
        "closed": s.closed,
    })
}

pub struct SessionStore {
    closed: Mutex<BTreeMap<(String, i64), SessionSummary>>,
    open: Mutex<BTreeMap<String, Vec<SessionSummary>>>,
    events: broadcast::Sender<SessionEvent>,
}

impl SessionStore {
    pub fn new(closed: Vec<SessionSummary>) -> Self {
        let (events, _) = broadcast::channel(4096);
        SessionStore {
            closed: Mutex::new(closed.into_iter().map(|s| ((s.player_id.clone(), s.session_start_ms), s)).collect()),
            open: Mutex::new(BTreeMap::new()),
            events,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    pub fn set_open(&self, player_id: String, open: Vec<SessionSummary>) {
        let mut map = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.is_empty() {
            map.remove(&player_id);
        } else {
            map.insert(player_id.clone(), open.clone());
        }
        let _ = self.events.send(SessionEvent::Update { player_id, open });
    }

    /// Adds closed sessions; an open session of the same player that the closed one
    /// covers is no longer open.
    pub fn add_closed(&self, sessions: Vec<SessionSummary>) {
        let mut map = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        for s in sessions {
            map.insert((s.player_id.clone(), s.session_start_ms), s.clone());
            let still_open = {
                let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
                open.get_mut(&s.player_id).and_then(|o| {
                    let before = o.len();
                    o.retain(|x| x.session_start_ms > s.session_end_ms || x.session_end_ms < s.session_start_ms);
                    (o.len() != before).then(|| o.clone())
                })
            };
            if let Some(rest) = still_open {
                if rest.is_empty() {
                    self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&s.player_id);
                }
                let _ = self.events.send(SessionEvent::Update { player_id: s.player_id.clone(), open: rest });
            }
            let _ = self.events.send(SessionEvent::Closed(s));
        }
    }

    /// Open and closed sessions, optionally of one player, each sorted by player then start.
    pub fn snapshot(&self, player: Option<&str>) -> (Vec<SessionSummary>, Vec<SessionSummary>) {
        let keep = |s: &SessionSummary| player.is_none_or(|p| s.player_id == p);
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner()).values().flatten().filter(|s| keep(s)).cloned().collect();
        let closed = self.closed.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|s| keep(s)).cloned().collect();
        (open, closed)
    }

    pub fn open_count(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).values().map(Vec::len).sum()
    }
}

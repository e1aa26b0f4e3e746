//! The live view of sessions: closed ones (the newest loaded from the lake at start, then
//! added as checkpoints commit them) and open ones (live progress from the job), with a
//! broadcast of every change for Server-Sent Events.
//!
//! Closed sessions are listed newest first (by end, then start, then player), a page at a
//! time ([`SessionStore::page`]). Memory holds only the newest `max_recent` of them; a
//! page that reaches past those is read from the lake one file at a time, keeping only
//! the page. A page's [`Cursor`] is the position of its last session; the next page starts
//! after it.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Mutex;

use serde_json::{json, Value};
use sluice_core::model::SessionSummary;
use sluice_core::time::format_ms;

use crate::resume::{Replay, Resume};

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

/// Where a closed session sits in the newest-first order: (end, start, player). Its text
/// form, `"<end_ms>.<start_ms>.<player>"`, is the `before` cursor of `/v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub end_ms: i64,
    pub start_ms: i64,
    pub player_id: String,
}

impl Cursor {
    pub fn of(s: &SessionSummary) -> Cursor {
        Cursor { end_ms: s.session_end_ms, start_ms: s.session_start_ms, player_id: s.player_id.clone() }
    }

    /// Parses the text form; errors name what is wrong.
    pub fn parse(text: &str) -> Result<Cursor, String> {
        let mut parts = text.splitn(3, '.');
        let mut num = |what: &str| parts.next().and_then(|p| p.parse::<i64>().ok()).ok_or_else(|| format!("before: expected <end_ms>.<start_ms>.<player> (the `next` of a page), got {text:?}: bad {what}"));
        let end_ms = num("end_ms")?;
        let start_ms = num("start_ms")?;
        let player_id = parts.next().ok_or_else(|| format!("before: {text:?} has no player"))?.to_string();
        Ok(Cursor { end_ms, start_ms, player_id })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.end_ms, self.start_ms, self.player_id)
    }
}

/// Where closed sessions older than the in-memory window are read from: calls its
/// argument with every committed session (e.g. `Lake::visit_sessions`).
pub type Archive = Box<dyn Fn(&mut dyn FnMut(SessionSummary)) -> Result<(), String> + Send + Sync>;

pub struct SessionStore {
    /// The newest closed sessions, by position.
    closed: Mutex<BTreeMap<Cursor, SessionSummary>>,
    /// Whether older closed sessions exist than those held (then pages may read the archive).
    truncated: std::sync::atomic::AtomicBool,
    max_recent: usize,
    archive: Option<Archive>,
    /// Open sessions per player (a hash map: the live view replaces about 100,000 entries a
    /// second at that many players; readers sort).
    open: Mutex<HashMap<String, Vec<SessionSummary>, foldhash::fast::RandomState>>,
    events: Replay<SessionEvent>,
}

/// Events kept for a `Last-Event-ID` resume of `/v1/sessions/stream` (closed sessions;
/// open ones are kept as the latest per player).
const REPLAY_EVENTS: usize = 16_384;

impl SessionStore {
    /// An empty store holding at most `max_recent` closed sessions in memory (the newest);
    /// older pages are read from `archive`, if any. [`SessionStore::load`] fills it.
    pub fn new(max_recent: usize, archive: Option<Archive>) -> Self {
        let events = Replay::new(REPLAY_EVENTS);
        SessionStore {
            closed: Mutex::new(BTreeMap::new()),
            truncated: std::sync::atomic::AtomicBool::new(false),
            max_recent: max_recent.max(1),
            archive,
            open: Mutex::new(HashMap::default()),
            events,
        }
    }

    /// Loads the newest closed sessions from the archive. Errors: the archive's.
    pub fn load(&self) -> Result<(), String> {
        if let Some(archive) = &self.archive {
            let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
            archive(&mut |s| self.keep(&mut closed, s))?;
        }
        Ok(())
    }

    /// Adds a closed session to the in-memory window, dropping the oldest beyond `max_recent`.
    fn keep(&self, closed: &mut BTreeMap<Cursor, SessionSummary>, s: SessionSummary) {
        closed.insert(Cursor::of(&s), s);
        while closed.len() > self.max_recent {
            closed.pop_first();
            self.truncated.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether anyone follows `/v1/sessions/stream` now.
    pub fn has_subscribers(&self) -> bool {
        self.events.listeners() > 0
    }

    /// Follows the changes after `last_seen` (an SSE `Last-Event-ID`): the replay is each
    /// player's open sessions now, if they changed after it, and the sessions closed after it.
    /// With `player`, only that player's events (and only they wake the subscriber).
    pub fn subscribe(&self, last_seen: Option<u64>, player: Option<&str>) -> Resume<SessionEvent> {
        self.events.subscribe_route(last_seen, player)
    }

    pub fn set_open(&self, player_id: String, open: Vec<SessionSummary>) {
        // Built only while someone listens (or may resume).
        let event = self.events.wanted().then(|| open.clone());
        {
            let mut map = self.open.lock().unwrap_or_else(|p| p.into_inner());
            if open.is_empty() {
                map.remove(&player_id);
            } else if let Some(held) = map.get_mut(&player_id) {
                *held = open;
            } else {
                map.insert(player_id.clone(), open);
            }
        }
        if let Some(open) = event {
            self.events.set(player_id.clone(), SessionEvent::Update { player_id, open });
        }
    }

    /// Adds closed sessions; an open session of the same player that the closed one
    /// covers is no longer open.
    pub fn add_closed(&self, sessions: Vec<SessionSummary>) {
        let mut map = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        for s in sessions {
            self.keep(&mut map, s.clone());
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
                self.events.set(s.player_id.clone(), SessionEvent::Update { player_id: s.player_id.clone(), open: rest });
            }
            self.events.append_routed(Some(&s.player_id.clone()), SessionEvent::Closed(s));
        }
    }

    /// Open sessions, optionally of one player, sorted by player then start.
    pub fn open(&self, player: Option<&str>) -> Vec<SessionSummary> {
        let keep = |s: &SessionSummary| player.is_none_or(|p| s.player_id == p);
        let mut out: Vec<SessionSummary> = self.open.lock().unwrap_or_else(|p| p.into_inner()).values().flatten().filter(|s| keep(s)).cloned().collect();
        out.sort_by(|a, b| (a.player_id.as_str(), a.session_start_ms).cmp(&(b.player_id.as_str(), b.session_start_ms)));
        out
    }

    /// A page of closed sessions, optionally of one player: the `limit` newest before
    /// `before` (all, without a cursor), newest first, and the cursor of the next page
    /// (None on the last). Served from memory when the window holds the whole page, else
    /// from the archive, holding only `limit + 1` sessions. Errors: the archive's.
    pub fn page(&self, player: Option<&str>, before: Option<&Cursor>, limit: usize) -> Result<(Vec<SessionSummary>, Option<Cursor>), String> {
        let limit = limit.max(1);
        let wanted = |c: &Cursor, s: &SessionSummary| before.is_none_or(|b| c < b) && player.is_none_or(|p| s.player_id == p);
        let from_memory: Vec<SessionSummary> = {
            let closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
            closed.iter().rev().filter(|(c, s)| wanted(c, s)).take(limit + 1).map(|(_, s)| s.clone()).collect()
        };
        let complete = from_memory.len() > limit || !self.truncated.load(std::sync::atomic::Ordering::Relaxed);
        let mut page = match (&self.archive, complete) {
            (Some(archive), false) => {
                // The newest `limit + 1` wanted sessions: a min-heap of that size.
                let mut heap: BinaryHeap<std::cmp::Reverse<(Cursor, SessionSummaryOrd)>> = BinaryHeap::new();
                archive(&mut |s| {
                    let c = Cursor::of(&s);
                    if wanted(&c, &s) {
                        heap.push(std::cmp::Reverse((c, SessionSummaryOrd(s))));
                        if heap.len() > limit + 1 {
                            heap.pop();
                        }
                    }
                })?;
                let mut v: Vec<(Cursor, SessionSummary)> = heap.into_iter().map(|std::cmp::Reverse((c, s))| (c, s.0)).collect();
                v.sort_by(|a, b| b.0.cmp(&a.0));
                v.into_iter().map(|(_, s)| s).collect()
            }
            _ => from_memory,
        };
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(Cursor::of)
        });
        Ok((page, next.flatten()))
    }

    /// Closed sessions held in memory now.
    pub fn closed_in_memory(&self) -> usize {
        self.closed.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn open_count(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).values().map(Vec::len).sum()
    }
}

/// A session ordered by nothing (ties in a heap are broken by its [`Cursor`] alone).
struct SessionSummaryOrd(SessionSummary);

impl PartialEq for SessionSummaryOrd {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for SessionSummaryOrd {}
impl PartialOrd for SessionSummaryOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SessionSummaryOrd {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(player: &str, start_ms: i64, end_ms: i64) -> SessionSummary {
        SessionSummary {
            player_id: player.into(),
            session_start_ms: start_ms,
            session_end_ms: end_ms,
            zones: Default::default(),
            samples: 1,
            avg_hr: 100.0,
            min_hr: 100.0,
            max_hr: 100.0,
            hr_max: 190.0,
            closed: true,
        }
    }

    fn archive_of(all: Vec<SessionSummary>) -> Archive {
        Box::new(move |f: &mut dyn FnMut(SessionSummary)| {
            all.iter().cloned().for_each(f);
            Ok(())
        })
    }

    /// Every page, walked by cursor, equals the same slice of one sorted list, whether the
    /// window holds everything or only the newest few.
    #[test]
    fn pages_walk_every_session_newest_first_from_memory_or_archive() {
        let all: Vec<SessionSummary> = (0..57).map(|i| session(["a", "b", "c"][i % 3], i as i64 * 10, i as i64 * 10 + 5 + (i as i64 % 4))).collect();
        let mut want = all.clone();
        want.sort_by(|x, y| Cursor::of(y).cmp(&Cursor::of(x)));
        for max_recent in [1000, 10, 1] {
            let store = SessionStore::new(max_recent, Some(archive_of(all.clone())));
            store.load().unwrap();
            assert!(store.closed_in_memory() <= max_recent);
            for player in [None, Some("b")] {
                for limit in [1, 7, 100] {
                    let mut got = Vec::new();
                    let mut before = None;
                    loop {
                        let (page, next) = store.page(player, before.as_ref(), limit).unwrap();
                        assert!(page.len() <= limit);
                        got.extend(page.into_iter().map(|s| Cursor::of(&s)));
                        match next {
                            Some(c) => before = Some(c),
                            None => break,
                        }
                    }
                    let expect: Vec<Cursor> = want.iter().filter(|s| player.is_none_or(|p| s.player_id == p)).map(Cursor::of).collect();
                    assert_eq!(got, expect, "max_recent {max_recent}, player {player:?}, limit {limit}");
                }
            }
        }
    }

    #[test]
    fn new_sessions_enter_the_window_and_push_the_oldest_out() {
        // The archive (the lake) holds every committed session; b and c were committed after start.
        let store = SessionStore::new(2, Some(archive_of(vec![session("a", 0, 10), session("b", 20, 30), session("c", 40, 50)])));
        store.add_closed(vec![session("a", 0, 10)]);
        store.add_closed(vec![session("b", 20, 30), session("c", 40, 50)]);
        assert_eq!(store.closed_in_memory(), 2);
        assert_eq!(store.page(None, None, 1).unwrap().0[0].player_id, "c", "served from memory");
        let (page, next) = store.page(None, None, 2).unwrap();
        assert_eq!(page.iter().map(|s| s.player_id.as_str()).collect::<Vec<_>>(), ["c", "b"]);
        assert_eq!(next, Some(Cursor { end_ms: 30, start_ms: 20, player_id: "b".into() }));
        assert_eq!(Cursor::parse(&next.unwrap().to_string()), Ok(Cursor { end_ms: 30, start_ms: 20, player_id: "b".into() }));
        assert!(Cursor::parse("x.1.p").unwrap_err().contains("end_ms"));
    }
}

//! Processing-status events, in the spirit of Spark's `StreamingQueryListener` (seed 004):
//! each checkpoint and each pipeline state change becomes one [`StatusEvent`], published
//! on a process-wide [`EventFeed`] that `GET /v1/events` streams as Server-Sent Events,
//! and written to the structured log (target `sluice::events`; one JSON object per line
//! with `--log-format json`).
//!
//! Every event gets the next id (1, 2, …). The feed keeps the last [`REPLAY_EVENTS`]
//! events, so an SSE client that reconnects with `Last-Event-ID: N` gets every event after
//! `N` once, with no gap and no duplicate, as long as `N` is still kept; otherwise it is
//! told how many it missed ([`Resume::missed`]).
//!
//! Kinds (the `kind` field and the SSE event name):
//! - `pipeline_state`: `{"pipeline", "state", "previous", "error"}`; `state` is one of
//!   `starting`, `running`, `draining`, `failed`, `stopped`.
//! - `checkpoint_completed`: `{"checkpoint_id", "duration_ms", "barrier_ms",
//!   "written_bytes", "changed_keys", "pipelines": [names]}`.
//! - `checkpoint_failed`: `{"checkpoint_id", "error"}`.
//! - `alert`: a pipeline's alert once its checkpoint committed, `{"pipeline", "rule",
//!   "state": "firing" | "resolved", "key", "value", "fired_at_ms", ...evidence}` (see
//!   `sluice_stream::ops::alerts`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// How many recent events the feed keeps for `Last-Event-ID` resume.
pub const REPLAY_EVENTS: usize = 4096;

/// One processing-status event.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusEvent {
    /// 1, 2, … in publication order, per process.
    pub id: u64,
    /// Wall-clock time of publication, ms since the Unix epoch.
    pub time_ms: i64,
    /// `pipeline_state`, `checkpoint_completed`, `checkpoint_failed` or `alert`.
    pub kind: &'static str,
    /// The kind's fields (see the module docs).
    pub data: Value,
}

impl StatusEvent {
    /// The event as one JSON object: `{"id", "time_ms", "kind", ...data}`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"id": self.id, "time_ms": self.time_ms, "kind": self.kind});
        if let (Some(o), Some(d)) = (v.as_object_mut(), self.data.as_object()) {
            for (k, x) in d {
                o.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

/// What a subscriber gets: the kept events after its last seen id, then a live receiver
/// that starts right after them.
pub struct Resume {
    pub backlog: Vec<Arc<StatusEvent>>,
    pub live: broadcast::Receiver<Arc<StatusEvent>>,
    /// Events after the last seen id that are no longer kept (0: none lost).
    pub missed: u64,
}

/// A broadcast of [`StatusEvent`]s with a replay buffer. Cheap to share (`&'static` via
/// [`global`]).
pub struct EventFeed {
    inner: Mutex<Ring>,
    tx: broadcast::Sender<Arc<StatusEvent>>,
}

struct Ring {
    next_id: u64,
    kept: VecDeque<Arc<StatusEvent>>,
    capacity: usize,
}

impl EventFeed {
    /// A feed keeping the last `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        EventFeed { inner: Mutex::new(Ring { next_id: 1, kept: VecDeque::new(), capacity }), tx: broadcast::channel(capacity).0 }
    }

    /// Publishes an event; returns its id. Also logs it at info (target `sluice::events`)
    /// and counts it in `sluice_events_total{kind}`.
    pub fn publish(&self, kind: &'static str, data: Value) -> u64 {
        let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = ring.next_id;
        ring.next_id += 1;
        let event = Arc::new(StatusEvent { id, time_ms: crate::time::now_ms(), kind, data });
        tracing::info!(target: "sluice::events", event_id = id, kind, data = %event.data, "processing status");
        metrics::counter!(crate::telemetry::EVENTS_TOTAL, "kind" => kind).increment(1);
        ring.kept.push_back(event.clone());
        while ring.kept.len() > ring.capacity {
            ring.kept.pop_front();
        }
        // Sent under the lock, so a subscriber's backlog and its live receiver meet exactly.
        let _ = self.tx.send(event);
        id
    }

    /// Subscribes after `last_seen` (an SSE `Last-Event-ID`; `None` for new events only).
    pub fn subscribe(&self, last_seen: Option<u64>) -> Resume {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.tx.subscribe();
        let Some(last) = last_seen else { return Resume { backlog: Vec::new(), live, missed: 0 } };
        let backlog: Vec<_> = ring.kept.iter().filter(|e| e.id > last).cloned().collect();
        let first_kept = ring.kept.front().map(|e| e.id).unwrap_or(ring.next_id);
        // A last id from another process life (greater than any published) replays all kept.
        let (backlog, missed) = if last >= ring.next_id {
            (ring.kept.iter().cloned().collect(), 0)
        } else {
            (backlog, first_kept.saturating_sub(last + 1))
        };
        Resume { backlog, live, missed }
    }

    /// The kept events, oldest first.
    pub fn recent(&self) -> Vec<Arc<StatusEvent>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).kept.iter().cloned().collect()
    }
}

/// The process-wide feed (created on first use, keeping [`REPLAY_EVENTS`]).
pub fn global() -> &'static EventFeed {
    static FEED: OnceLock<EventFeed> = OnceLock::new();
    FEED.get_or_init(|| EventFeed::new(REPLAY_EVENTS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[Arc<StatusEvent>]) -> Vec<u64> {
        v.iter().map(|e| e.id).collect()
    }

    #[test]
    fn resume_has_no_gap_and_no_duplicate() {
        let feed = EventFeed::new(4);
        for i in 0..3 {
            feed.publish("pipeline_state", json!({"n": i}));
        }
        let mut r = feed.subscribe(Some(1));
        assert_eq!(ids(&r.backlog), [2, 3]);
        assert_eq!(r.missed, 0);
        feed.publish("checkpoint_completed", json!({}));
        assert_eq!(r.live.try_recv().map(|e| e.id).ok(), Some(4));
        assert!(r.live.try_recv().is_err());
        // New subscribers without an id get only new events.
        assert!(feed.subscribe(None).backlog.is_empty());
    }

    #[test]
    fn resume_past_the_buffer_counts_the_missed() {
        let feed = EventFeed::new(2);
        for _ in 0..5 {
            feed.publish("checkpoint_completed", json!({}));
        }
        let r = feed.subscribe(Some(1));
        assert_eq!(ids(&r.backlog), [4, 5]);
        assert_eq!(r.missed, 2, "events 2 and 3 are gone");
        // An id from before a restart (beyond any published here) replays what is kept.
        let r = feed.subscribe(Some(99));
        assert_eq!(ids(&r.backlog), [4, 5]);
    }

    #[test]
    fn json_flattens_the_data() {
        let e = StatusEvent { id: 7, time_ms: 1, kind: "checkpoint_failed", data: json!({"error": "disk"}) };
        assert_eq!(e.to_json(), json!({"id": 7, "time_ms": 1, "kind": "checkpoint_failed", "error": "disk"}));
    }
}

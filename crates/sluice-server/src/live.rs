//! Live views of pipelines: committed rows, early results and alerts as they happen, for
//! Server-Sent Events, plus the heart-rate sessions view behind `/v1/sessions`.
//!
//! `GET /v1/pipelines/{name}/stream[?early=true][&merge_ms=N]` sends:
//! - `event: result`, data `{"output": <table>, "rows": [...]}`: rows committed to an
//!   output (the pipeline's, or a rollup level's), after their checkpoint;
//! - `event: update`, data `{"key": <key>, "rows": [...]}` (only with `early=true`): the
//!   current results of a key's open windows, every `stream.live_early_results_interval_ms`
//!   while watched (5 ms by default); `rows` is empty when the key has no open window any
//!   more. With `merge_ms`, live events come once per `N` ms with each key's newest update;
//! - `event: alert`, data: the alert with its evidence;
//! - `event: resync`: events were dropped for a slow client; fetch the table again.
//!
//! Events have ids. A reconnect with `Last-Event-ID: N` gets the results and alerts after
//! `N` and each key's latest update after it, then live events ([`crate::resume`]).
//!
//! Row objects have the pipeline's output columns; timestamps are RFC 3339 (UTC).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde_json::{json, Value};
use sluice_core::model::{SessionSummary, ZoneMs};
use sluice_stream::operator::Rows;
use sluice_stream::runner::Observer;

use crate::resume::{ListenGuard, Presence, Replay, Resume};
use crate::sessions::SessionStore;

/// Name of the pipeline whose output is the heart-rate sessions view.
pub const HEART_RATE: &str = "heart_rate";
/// Committed rows kept per pipeline for `GET /v1/pipelines/{name}` (`recent`).
const RECENT_ROWS: usize = 200;
/// Result and alert events kept per pipeline for a `Last-Event-ID` resume.
const REPLAY_EVENTS: usize = 4096;

/// An event of a pipeline's live stream.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// `result`, `update` or `alert`.
    pub name: &'static str,
    pub data: Value,
}

/// One pipeline's live stream.
pub struct LiveView {
    events: Replay<LiveEvent>,
    /// Subscribers that want early results.
    early: Arc<Presence>,
    recent: Mutex<VecDeque<Value>>,
}

impl LiveView {
    fn new() -> Self {
        LiveView { events: Replay::new(REPLAY_EVENTS), early: Arc::new(Presence::default()), recent: Mutex::new(VecDeque::new()) }
    }

    /// Follows the stream after `last_seen` (an SSE `Last-Event-ID`).
    pub fn subscribe(&self, last_seen: Option<u64>) -> Resume<LiveEvent> {
        self.events.subscribe(last_seen)
    }

    /// Counts a subscriber that wants early results until the guard drops.
    pub fn early_guard(&self) -> ListenGuard {
        self.early.enter()
    }

    /// The most recent committed rows, newest last.
    pub fn recent(&self) -> Vec<Value> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

/// Every pipeline's live view.
pub struct LiveViews {
    views: Mutex<HashMap<String, Arc<LiveView>>>,
    sessions: Arc<SessionStore>,
    /// Output table names per pipeline (stream index → name).
    outputs: Mutex<HashMap<String, Vec<String>>>,
}

/// Rows of a batch as JSON objects (timestamps as RFC 3339).
pub fn rows_json(batch: &RecordBatch) -> Vec<Value> {
    let mut buf = Vec::new();
    {
        let mut w = arrow_json::ArrayWriter::new(&mut buf);
        if w.write(batch).and_then(|_| w.finish()).is_err() {
            return Vec::new();
        }
    }
    if buf.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice::<Vec<Value>>(&buf).unwrap_or_default()
}

impl LiveViews {
    pub fn new(sessions: Arc<SessionStore>) -> Self {
        LiveViews { views: Mutex::new(HashMap::new()), sessions, outputs: Mutex::new(HashMap::new()) }
    }

    pub fn view(&self, pipeline: &str) -> Arc<LiveView> {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).entry(pipeline.to_string()).or_insert_with(|| Arc::new(LiveView::new())).clone()
    }

    /// Records the output names of a pipeline's streams.
    pub fn set_outputs(&self, pipeline: &str, names: Vec<String>) {
        self.outputs.lock().unwrap_or_else(|p| p.into_inner()).insert(pipeline.into(), names);
    }

    pub fn forget(&self, pipeline: &str) {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).remove(pipeline);
        self.outputs.lock().unwrap_or_else(|p| p.into_inner()).remove(pipeline);
    }

    pub fn sessions(&self) -> &Arc<SessionStore> {
        &self.sessions
    }
}

impl Observer for LiveViews {
    fn committed(&self, pipeline: &str, stream: usize, batches: &[RecordBatch]) {
        let view = self.view(pipeline);
        let output = self.outputs.lock().unwrap_or_else(|p| p.into_inner()).get(pipeline).and_then(|o| o.get(stream).cloned()).unwrap_or_else(|| pipeline.to_string());
        let listening = view.events.wanted();
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut skip = total.saturating_sub(RECENT_ROWS);
        for b in batches {
            if b.num_rows() == 0 {
                continue;
            }
            // Rows become JSON only for listeners and for the most recent rows kept.
            let rows = if listening { rows_json(b) } else { Vec::new() };
            {
                let from = skip.min(b.num_rows());
                skip -= from;
                let tail = if listening { rows[from..].to_vec() } else { rows_json(&b.slice(from, b.num_rows() - from)) };
                let mut recent = view.recent.lock().unwrap_or_else(|p| p.into_inner());
                for r in tail {
                    recent.push_back(json!({"output": output, "row": r}));
                }
                while recent.len() > RECENT_ROWS {
                    recent.pop_front();
                }
            }
            if listening {
                view.events.append(LiveEvent { name: "result", data: json!({"output": output, "rows": rows}) });
            }
            if pipeline == HEART_RATE && stream == 0 {
                self.sessions.add_closed(sessions_of(b, true));
            }
        }
    }

    fn early(&self, pipeline: &str, rows: &Rows) {
        let Some(early) = &rows.early else { return };
        let view = self.view(pipeline);
        let keys = early.keys.len();
        // Rows become JSON only while someone listens (or did within the grace period,
        // so that a reconnect resumes them).
        if view.early.wanted() {
            let mut by_key: Vec<Vec<Value>> = vec![Vec::new(); keys];
            for (i, r) in rows_json(&rows.batch).into_iter().enumerate() {
                if let Some(v) = by_key.get_mut(early.row_key.value(i) as usize) {
                    v.push(r);
                }
            }
            for (k, rows) in by_key.iter().enumerate() {
                view.events.set(early.keys[k].clone(), LiveEvent { name: "update", data: json!({"key": early.keys[k], "rows": rows}) });
            }
        }
        if pipeline == HEART_RATE && rows.stream == 0 {
            // Rows come key by key (row_key ascending); a key without rows has no open
            // session. One key's sessions are held at a time.
            let mut sessions = sessions_of(&rows.batch, false).into_iter().enumerate().peekable();
            for k in 0..keys {
                let mut open = Vec::new();
                while let Some((_, s)) = sessions.next_if(|(i, _)| early.row_key.value(*i) as usize == k) {
                    open.push(s);
                }
                self.sessions.set_open(early.keys[k].clone(), open);
            }
        }
    }

    fn alerts(&self, pipeline: &str, alerts: &[Value]) {
        let view = self.view(pipeline);
        for a in alerts {
            view.events.append(LiveEvent { name: "alert", data: a.clone() });
            // Also on `/v1/events`, where one stream carries every pipeline's alerts.
            sluice_core::events::global().publish("alert", a.clone());
        }
    }

    fn wants_early(&self, pipeline: &str) -> bool {
        // The sessions stream shows heart_rate's open sessions, which are its early results.
        (pipeline == HEART_RATE && self.sessions.has_subscribers())
            || self.views.lock().unwrap_or_else(|p| p.into_inner()).get(pipeline).is_some_and(|v| v.early.count() > 0)
    }
}

/// Heart-rate sessions from rows of the `heart_rate` pipeline's output (columns by name;
/// rows that do not have them are skipped).
pub fn sessions_of(batch: &RecordBatch, closed: bool) -> Vec<SessionSummary> {
    let f64s = |n: &str| batch.column_by_name(n).and_then(|c| c.as_primitive_opt::<Float64Type>());
    let ms = |n: &str| -> Option<Vec<i64>> {
        let c = batch.column_by_name(n)?;
        match c.data_type() {
            DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, _) => Some(c.as_primitive::<TimestampMillisecondType>().values().to_vec()),
            DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, _) => Some(c.as_primitive::<TimestampMicrosecondType>().values().iter().map(|v| v / 1000).collect()),
            _ => None,
        }
    };
    let (Some(player), Some(start), Some(end)) = (batch.column_by_name("player_id").and_then(|c| c.as_string_opt::<i32>()), ms("session_start"), ms("session_end")) else { return Vec::new() };
    let (Some(low), Some(moderate), Some(high), Some(avg), Some(min), Some(max), Some(hr_max)) = (f64s("low_s"), f64s("moderate_s"), f64s("high_s"), f64s("avg_hr"), f64s("min_hr"), f64s("max_hr"), f64s("hr_max")) else {
        return Vec::new();
    };
    let Some(samples) = batch.column_by_name("samples").and_then(|c| c.as_primitive_opt::<Int64Type>()) else { return Vec::new() };
    let secs = |a: &arrow_array::Float64Array, i: usize| (a.value(i) * 1000.0).round() as i64;
    (0..batch.num_rows())
        .filter(|&i| player.is_valid(i))
        .map(|i| SessionSummary {
            player_id: player.value(i).to_string(),
            session_start_ms: start[i],
            session_end_ms: end[i],
            zones: ZoneMs { low: secs(low, i), moderate: secs(moderate, i), high: secs(high, i) },
            samples: samples.value(i) as u64,
            avg_hr: avg.value(i),
            min_hr: min.value(i),
            max_hr: max.value(i),
            hr_max: hr_max.value(i),
            closed,
        })
        .collect()
}

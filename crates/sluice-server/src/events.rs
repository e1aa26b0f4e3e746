//! `GET /v1/events[?kind=K[,K…]][&pipeline=P]`: processing-status events
//! ([`sluice_core::events`]: pipeline state changes, checkpoints completed and failed) as
//! Server-Sent Events. Each event has `id: N`, `event: <kind>` and `data: {"id",
//! "time_ms", "kind", ...}`.
//!
//! A client that reconnects with `Last-Event-ID: N` (browsers' `EventSource` sends it by
//! itself; `?last_event_id=N` does the same) gets every kept event after `N`, then live
//! ones: no gap and no duplicate. If events after `N` are no longer kept (the feed keeps
//! the last [`sluice_core::events::REPLAY_EVENTS`]), or the client reads too slowly, it
//! gets `event: resync` with `{"missed": count}` first.
//!
//! A user limited to some pipelines sees state changes of those only, and checkpoint
//! events list only those pipelines.

use std::convert::Infallible;

use axum::extract::Query;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_auth::Limits;
use sluice_core::events::StatusEvent;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::auth::Principal;

pub fn router() -> Router {
    Router::new().route("/v1/events", get(events))
}

#[derive(Deserialize, Default)]
struct EventsQuery {
    /// Comma-separated kinds to keep (default: all).
    kind: Option<String>,
    /// Only events of this pipeline (checkpoints that include it, its state changes).
    pipeline: Option<String>,
    /// Same as the `Last-Event-ID` header (the header wins).
    last_event_id: Option<u64>,
}

/// What one subscriber sees of an event: `None` to skip it.
fn view(e: &StatusEvent, q: &EventsQuery, limits: &Limits) -> Option<Value> {
    if let Some(kinds) = &q.kind {
        if !kinds.split(',').any(|k| k.trim() == e.kind) {
            return None;
        }
    }
    let mut v = e.to_json();
    if let Some(p) = v.get("pipeline").and_then(Value::as_str) {
        if !limits.pipeline(p) || q.pipeline.as_deref().is_some_and(|want| want != p) {
            return None;
        }
    }
    if let Some(list) = v.get_mut("pipelines").and_then(Value::as_array_mut) {
        list.retain(|n| n.as_str().is_some_and(|n| limits.pipeline(n)));
        if let Some(want) = &q.pipeline {
            if !list.iter().any(|n| n.as_str() == Some(want.as_str())) {
                return None;
            }
        }
    }
    Some(v)
}

fn sse(e: &StatusEvent, data: Value) -> Event {
    Event::default().id(e.id.to_string()).event(e.kind).data(data.to_string())
}

async fn events(headers: HeaderMap, who: Option<Extension<Principal>>, Query(q): Query<EventsQuery>) -> Response {
    let limits = crate::auth::limits_of(&who);
    let last = crate::resume::last_event_id(&headers, q.last_event_id);
    let resume = sluice_core::events::global().subscribe(last);
    let mut first: Vec<Event> = Vec::new();
    if resume.missed > 0 {
        first.push(Event::default().event("resync").data(json!({"missed": resume.missed}).to_string()));
    }
    first.extend(resume.backlog.iter().filter_map(|e| view(e, &q, &limits).map(|v| sse(e, v))));
    let live = BroadcastStream::new(resume.live).filter_map(move |r| {
        let out = match r {
            Ok(e) => view(&e, &q, &limits).map(|v| sse(&e, v)),
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Event::default().event("resync").data(json!({"missed": n}).to_string())),
        };
        std::future::ready(out)
    });
    let stream = futures_util::stream::iter(first).chain(live).map(Ok::<_, Infallible>);
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &'static str, data: Value) -> StatusEvent {
        StatusEvent { id: 1, time_ms: 0, kind, data }
    }

    #[test]
    fn filters_by_kind_pipeline_and_limits() {
        let state = event("pipeline_state", json!({"pipeline": "a", "state": "running"}));
        let cp = event("checkpoint_completed", json!({"pipelines": ["a", "b"]}));
        let all = Limits::default();
        assert!(view(&state, &EventsQuery::default(), &all).is_some());
        let only_cp = EventsQuery { kind: Some("checkpoint_completed, checkpoint_failed".into()), ..Default::default() };
        assert!(view(&state, &only_cp, &all).is_none());
        let b = EventsQuery { pipeline: Some("b".into()), ..Default::default() };
        assert!(view(&state, &b, &all).is_none());
        assert_eq!(view(&cp, &b, &all).map(|v| v["pipelines"].clone()), Some(json!(["a", "b"])));
        let limited = Limits { pipelines: Some(vec!["b".parse().unwrap()]), ..Default::default() };
        assert!(view(&state, &EventsQuery::default(), &limited).is_none());
        assert_eq!(view(&cp, &EventsQuery::default(), &limited).map(|v| v["pipelines"].clone()), Some(json!(["b"])));
    }
}

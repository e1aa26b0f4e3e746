//! `GET /v1/players/{id}/readings[?since_ms=T]`: one player's heart-rate readings as they
//! are appended to the `heart_rate` pipeline's source topic, as Server-Sent Events, for
//! the player page's live line coloured by zone.
//!
//! Each event is `event: readings`, `id: <offset>` and data
//! `{"player_id", "hr_max_bpm", "readings": [[event_time_ms, bpm, "low"|"moderate"|"high"], ...]}`,
//! in log order. The zone is the reading's ACSM %HRmax zone for the player's configured
//! HRmax (`sluice_stream::zones::zone`), the same one the pipeline counts.
//!
//! The stream starts with the readings appended since `since_ms` (log time, default: the
//! last 5 minutes), found with the partition's time index. The id is the offset to read
//! next, so a reconnect with `Last-Event-ID` resumes exactly there: no gap and no
//! duplicate, for as long as the log keeps those records (the log is the replay buffer).
//!
//! Only the player's partition is read (the topic is keyed by `playerId`, with Kafka's
//! partitioner). Needs `read`, and access to the pipeline's topics, like
//! `/v1/sessions/stream`. Errors: 404 `unknown_pipeline` when `heart_rate` does not run.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sluice_core::schema::{Datum, Decoder};
use sluice_log::Log;
use tokio::sync::Notify;

use crate::auth::Principal;
use crate::http::App;
use crate::live::HEART_RATE;
use crate::pipelines::PipelineError;

/// How far back a new stream starts by default, ms.
const DEFAULT_HISTORY_MS: i64 = 5 * 60_000;
/// Records read from the partition per step.
const READ_RECORDS: usize = 4096;

pub fn router(app: Arc<App>) -> Router {
    Router::new().route("/v1/players/{id}/readings", get(readings)).with_state(app)
}

#[derive(Deserialize, Default)]
struct ReadingsQuery {
    /// Start with readings appended at or after this time, ms since the epoch.
    since_ms: Option<i64>,
    /// Same as the `Last-Event-ID` header (the header wins).
    last_event_id: Option<u64>,
}

/// Woken whenever any partition's high watermark moves.
fn appended(log: &Arc<Log>) -> Arc<Notify> {
    static NOTIFY: OnceLock<Arc<Notify>> = OnceLock::new();
    NOTIFY
        .get_or_init(|| {
            let n = Arc::new(Notify::new());
            let wake = n.clone();
            log.on_change(move || wake.notify_waiters());
            n
        })
        .clone()
}

/// (event time ms, bpm) of a record of `player`, if it is one. `fields`: the indexes of
/// `playerId`, `heartbeat` and `createdAt` in the decoder's schema.
fn reading(decoder: &Decoder, fields: (usize, usize, usize), value: &[u8], player: &str) -> Option<(i64, f64)> {
    let mut datums = Vec::new();
    decoder.decode(value, &mut datums).ok()?;
    let (p, hr, at) = fields;
    let bpm = match datums.get(hr)? {
        Datum::Float(v) => *v,
        Datum::Int(v) => *v as f64,
        _ => return None,
    };
    match (datums.get(p)?, datums.get(at)?) {
        (Datum::Str(id), Datum::Timestamp(t)) if id == player => Some((*t, bpm)),
        _ => None,
    }
}

async fn readings(State(app): State<Arc<App>>, headers: HeaderMap, who: Option<Extension<Principal>>, Path(player): Path<String>, Query(q): Query<ReadingsQuery>) -> Response {
    if let Some(why) = app.pipelines.rows_refusal(HEART_RATE, &who) {
        return PipelineError::Forbidden(why).response();
    }
    let Some(topic) = app.pipelines.source_of(HEART_RATE) else { return PipelineError::Unknown(HEART_RATE.into()).response() };
    let (Some(t), Some(schema)) = (app.log.topic(&topic), app.gateway.schema_of(&topic)) else { return PipelineError::Unknown(HEART_RATE.into()).response() };
    let (Some(p), Some(hr), Some(at)) = (schema.field_index("playerId"), schema.field_index("heartbeat"), schema.field_index("createdAt")) else {
        return PipelineError::Failed(format!("topic {topic:?} has no playerId, heartbeat and createdAt fields")).response();
    };
    let decoder = Arc::new(Decoder::new(schema));
    let partition_id = sluice_core::partitioner::partition_for_key(player.as_bytes(), t.partitions().len() as u32);
    let Ok(partition) = t.partition(partition_id).cloned() else { return PipelineError::Unknown(HEART_RATE.into()).response() };
    let start = match crate::resume::last_event_id(&headers, q.last_event_id) {
        Some(next) => next,
        None => {
            let since = q.since_ms.unwrap_or_else(|| sluice_core::time::now_ms() - DEFAULT_HISTORY_MS);
            partition.offset_for_timestamp(since).ok().flatten().unwrap_or_else(|| partition.high_watermark())
        }
    };
    let hr_max = app.pipelines.hr_max_bpm(&player);
    let notify = appended(&app.log);
    let player = Arc::new(player);
    let stream = futures_util::stream::unfold(start, move |mut next| {
        let (partition, decoder, notify, player) = (partition.clone(), decoder.clone(), notify.clone(), player.clone());
        async move {
            loop {
                let woken = notify.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                // Before the log start (retention deleted it): from the start. Past the high
                // watermark (an id from another log): from the end.
                let from = next.max(partition.log_start_offset()).min(partition.high_watermark());
                let read = {
                    let (partition, decoder, player) = (partition.clone(), decoder.clone(), player.clone());
                    tokio::task::spawn_blocking(move || {
                        let records = partition.read(from, READ_RECORDS, 4 << 20).unwrap_or_else(|e| {
                            tracing::warn!(topic = %partition.topic(), offset = from, error = %e, "player readings stream: read failed; retrying");
                            Vec::new()
                        });
                        let next = records.last().map(|r| r.offset + 1);
                        let found: Vec<(i64, f64)> = records
                            .iter()
                            .filter(|r| r.key.as_deref().is_none_or(|k| k == player.as_bytes()))
                            .filter_map(|r| reading(&decoder, (p, hr, at), &r.value, &player))
                            .collect();
                        (next, found)
                    })
                    .await
                };
                let Ok((read_to, found)) = read else { return None };
                match read_to {
                    Some(to) => next = to,
                    None => {
                        // Nothing new: wait for an append (or re-check now and then).
                        let _ = tokio::time::timeout(Duration::from_secs(5), woken).await;
                        continue;
                    }
                }
                if found.is_empty() {
                    continue;
                }
                let rows: Vec<_> = found.iter().map(|(t, bpm)| json!([t, bpm, sluice_stream::zones::zone(*bpm, hr_max)])).collect();
                let data = json!({"player_id": *player, "hr_max_bpm": hr_max, "readings": rows});
                let event = Event::default().id(next.to_string()).event("readings").data(data.to_string());
                return Some((Ok::<_, std::convert::Infallible>(event), next));
            }
        }
    });
    Sse::new(stream.boxed()).keep_alive(KeepAlive::default()).into_response()
}

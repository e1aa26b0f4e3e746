//! Server routes besides ingest:
//!
//! - `GET /v1/sessions[?player=ID]`: `{"open": [...], "closed": [...]}` (see
//!   [`crate::sessions::session_json`] for a session's fields).
//! - `GET /v1/sessions/stream`: Server-Sent Events. `event: session_update` carries
//!   `{"player_id", "open": [...]}`; `event: session_closed` carries one closed session;
//!   `event: resync` means events were dropped for a slow client: fetch `/v1/sessions` again.
//! - `POST /v1/jobs/heart_rate/drain`: end of input. The job reads everything durable
//!   now, closes every open session and commits; the reply (`{"drained": true, "job":
//!   {...}}`) comes after the commit.
//! - `GET /metrics`: Prometheus text format (names in `sluice_core::telemetry`).
//! - `GET /healthz`: `{"status": "ok" | "degraded", "log": {"writable", "poisoned"}, "job": {...}}`
//!   (503 when degraded: the job stopped, or the log refuses writes after a disk failure).
//! - `GET /`: the dashboard (static files embedded in the binary).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_core::telemetry as t;
use sluice_log::Log;
use sluice_stream::runner::RunnerStatus;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::sessions::{session_json, SessionStore};

pub struct App {
    pub log: Arc<Log>,
    pub sessions: Arc<SessionStore>,
    pub job: Option<JobView>,
}

/// What the routes can see of the running job.
pub struct JobView {
    pub name: String,
    pub commands: std::sync::mpsc::Sender<sluice_stream::runner::Command>,
    pub topic: String,
    pub status: Arc<RunnerStatus>,
    pub error: Arc<Mutex<Option<String>>>,
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(t::KAFKA_REQUEST_DURATION_MS.to_string()), t::KAFKA_REQUEST_DURATION_BUCKETS_MS)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "histogram buckets rejected; Kafka request durations export as summaries");
                PrometheusBuilder::new()
            });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        t::describe();
        handle
    })
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(include_str!("../assets/index.html")) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript", include_str!("../assets/app.js")) }))
        .route("/assets/style.css", get(|| async { asset("text/css", include_str!("../assets/style.css")) }))
        .route("/assets/chart.umd.min.js", get(|| async { asset("text/javascript", include_str!("../assets/vendor/chart-4.6.1.umd.min.js")) }))
        .route("/v1/sessions", get(sessions))
        .route("/v1/sessions/stream", get(stream))
        .route("/v1/jobs/heart_rate/drain", axum::routing::post(drain))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(health))
        .with_state(app)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

#[derive(Deserialize)]
struct SessionsQuery {
    player: Option<String>,
}

async fn sessions(State(app): State<Arc<App>>, Query(q): Query<SessionsQuery>) -> Json<Value> {
    let (open, closed) = app.sessions.snapshot(q.player.as_deref());
    Json(json!({
        "open": open.iter().map(session_json).collect::<Vec<_>>(),
        "closed": closed.iter().map(session_json).collect::<Vec<_>>(),
    }))
}

async fn stream(State(app): State<Arc<App>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = BroadcastStream::new(app.sessions.subscribe()).map(|r| {
        Ok(match r {
            Ok(e) => Event::default().event(e.name()).data(e.data().to_string()),
            Err(BroadcastStreamRecvError::Lagged(n)) => Event::default().event("resync").data(json!({"missed": n}).to_string()),
        })
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn job_status(app: &App) -> Value {
    let Some(job) = &app.job else { return json!({"enabled": false}) };
    let offsets = job.status.offsets.lock().map(|o| o.clone()).unwrap_or_default();
    let error = job.error.lock().ok().and_then(|e| e.clone());
    let lag = app.log.topic(&job.topic).map_or(0, |t| {
        t.partitions().iter().map(|p| p.high_watermark().saturating_sub(offsets.get(p.id() as usize).copied().unwrap_or(0))).sum::<u64>()
    });
    json!({
        "enabled": true,
        "name": job.name,
        "running": error.is_none(),
        "error": error,
        "offsets": offsets,
        "lag_records": lag,
        "records": job.status.records.load(Ordering::Relaxed),
        "open_sessions": job.status.open_sessions.load(Ordering::Relaxed),
        "last_checkpoint_id": job.status.last_checkpoint_id.load(Ordering::Relaxed),
    })
}

/// Sends a command to the job thread and waits for its reply (blocking).
pub fn job_command(
    commands: &std::sync::mpsc::Sender<sluice_stream::runner::Command>,
    error: &Mutex<Option<String>>,
    make: fn(std::sync::mpsc::Sender<Result<(), String>>) -> sluice_stream::runner::Command,
) -> Result<(), String> {
    if let Some(e) = error.lock().ok().and_then(|e| e.clone()) {
        return Err(e);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    commands.send(make(tx)).map_err(|_| "the job thread has stopped".to_string())?;
    rx.recv().map_err(|_| "the job thread has stopped".to_string())?
}

async fn drain(State(app): State<Arc<App>>) -> Response {
    let Some(job) = &app.job else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "job_disabled", "message": "jobs.heart_rate.enabled is false"}}))).into_response();
    };
    let (commands, error) = (job.commands.clone(), job.error.clone());
    let result = tokio::task::spawn_blocking(move || job_command(&commands, &error, sluice_stream::runner::Command::Drain)).await;
    match result {
        Ok(Ok(())) => Json(json!({"drained": true, "job": job_status(&app)})).into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": {"code": "job_failed", "message": e}}))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": {"code": "internal", "message": e.to_string()}}))).into_response(),
    }
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let job = job_status(&app);
    let poisoned = app.log.poison().reason();
    let ok = job["error"].is_null() && poisoned.is_none();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let log = json!({"writable": poisoned.is_none(), "poisoned": poisoned});
    (status, Json(json!({"status": if ok { "ok" } else { "degraded" }, "log": log, "job": job}))).into_response()
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let handle = prometheus();
    // Gauges of state are sampled now, at scrape time.
    for topic in app.log.topics() {
        for p in topic.partitions() {
            let labels = [("topic", topic.name().to_string()), ("partition", p.id().to_string())];
            metrics::gauge!(t::LOG_HIGH_WATERMARK_OFFSET, &labels).set(p.high_watermark() as f64);
            metrics::gauge!(t::LOG_SIZE_BYTES, &labels).set(p.size_bytes() as f64);
            metrics::counter!(t::LOG_FSYNCS_TOTAL, &labels).absolute(p.fsync_count());
        }
    }
    if let Some(job) = &app.job {
        let status = job_status(&app);
        metrics::gauge!(t::JOB_LAG_RECORDS, "job" => job.name.clone()).set(status["lag_records"].as_f64().unwrap_or(0.0));
        metrics::gauge!(t::JOB_OPEN_SESSIONS, "job" => job.name.clone()).set(app.sessions.open_count() as f64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

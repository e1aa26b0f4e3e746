//! Server routes besides ingest:
//!
//! - `GET /v1/sessions[?player=ID][&limit=N][&before=CURSOR]`: `{"open": [...], "closed":
//!   [...], "next": CURSOR | null}` (see [`crate::sessions::session_json`] for a session's
//!   fields). Closed sessions come newest first, `limit` (default 1000, at most 10000) at a
//!   time; pass `next` as `before` for the next page (open sessions come with the first
//!   page only). 400 `invalid_cursor`.
//! - `GET /v1/sessions/stream[?player=ID][&merge_ms=N]`: Server-Sent Events (of one player's sessions). `event: session_update` carries
//!   `{"player_id", "open": [...]}`; `event: session_closed` carries one closed session;
//!   with `merge_ms`, live events come once per `N` ms with one update per player (the
//!   newest; at most 60,000 ms), as a page of every player wants under load;
//!   `event: resync` means events were dropped for a slow client: fetch `/v1/sessions` again.
//!   Events have ids; a reconnect with `Last-Event-ID: N` (or `?last_event_id=N`) gets the
//!   open sessions of every player that changed after `N` and the sessions closed after
//!   it, then live events ([`crate::resume`]).
//! - `GET /metrics`: Prometheus text format (names in `sluice_core::telemetry`).
//! - `GET /readyz`: 200 `{"ready": true, "reasons": []}` once recovery finished and the
//!   log acks writes; else 503 with `reasons` (the log refuses writes; a pipeline still
//!   restoring its checkpoint).
//! - `GET /healthz`: `{"status": "ok" | "degraded", "log": {"writable", "poisoned"},
//!   "disk": {"free_bytes", "capacity_bytes"}, "checkpoints": {"failed"}, "pipelines":
//!   [{"name", "state", "error", "lag_records",
//!   "last_checkpoint_id"}]}` (503 when degraded: a pipeline failed, checkpoints failed, or
//!   the log refuses writes after a disk failure).
//!
//! Pipelines have their own routes: [`crate::pipelines`].
//! - The dashboard (static files embedded in the binary): the pages in [`PAGES`] (`/`,
//!   `/pipelines[/{name}]`, `/players[/{id}]`, `/topics[/{name}]`, `/groups`, `/alerts`),
//!   and `/assets/*`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_core::telemetry as t;
use sluice_log::Log;

use crate::pipelines::Pipelines;
use crate::sessions::{session_json, SessionStore};

pub struct App {
    pub log: Arc<Log>,
    /// Consumer groups' committed offsets, for `sluice_group_lag_records`.
    pub gateway: Arc<sluice_gateway::Gateway>,
    /// The data directory, whose file system `sluice_disk_*_bytes` describe.
    pub data_dir: std::path::PathBuf,
    pub sessions: Arc<SessionStore>,
    pub pipelines: Arc<Pipelines>,
    /// What `/metrics` samples of the limits.
    pub limits: LimitGauges,
}

/// The state of every connection and memory limit, sampled at scrape time.
pub struct LimitGauges {
    pub http_connections: sluice_core::net::ConnectionCaps,
    pub http_max_connections: usize,
    pub http_body_memory: Arc<tokio::sync::Semaphore>,
    pub http_max_body_memory: usize,
    pub websocket_slots: Arc<tokio::sync::Semaphore>,
    pub max_websockets: usize,
    pub sse_slots: Arc<tokio::sync::Semaphore>,
    pub max_sse_subscribers: usize,
    pub kafka: Option<Arc<sluice_kafka::KafkaServer>>,
    pub kafka_max_connections: usize,
}

impl LimitGauges {
    fn sample(&self) {
        let used = |sem: &tokio::sync::Semaphore, max: usize| max.saturating_sub(sem.available_permits()) as f64;
        metrics::gauge!(t::LISTENER_OPEN_CONNECTIONS, "listener" => "http").set(self.http_connections.open() as f64);
        metrics::gauge!(t::LISTENER_MAX_CONNECTIONS, "listener" => "http").set(self.http_max_connections as f64);
        metrics::gauge!(t::LISTENER_INFLIGHT_REQUEST_BYTES, "listener" => "http").set(used(&self.http_body_memory, self.http_max_body_memory));
        metrics::gauge!(t::LISTENER_MAX_INFLIGHT_REQUEST_BYTES, "listener" => "http").set(self.http_max_body_memory as f64);
        metrics::gauge!(t::HTTP_OPEN_STREAMS, "kind" => "websocket").set(used(&self.websocket_slots, self.max_websockets));
        metrics::gauge!(t::HTTP_MAX_STREAMS, "kind" => "websocket").set(self.max_websockets as f64);
        metrics::gauge!(t::HTTP_OPEN_STREAMS, "kind" => "sse").set(used(&self.sse_slots, self.max_sse_subscribers));
        metrics::gauge!(t::HTTP_MAX_STREAMS, "kind" => "sse").set(self.max_sse_subscribers as f64);
        if let Some(k) = &self.kafka {
            let (held, bound) = k.request_memory();
            metrics::gauge!(t::LISTENER_OPEN_CONNECTIONS, "listener" => "kafka").set(k.open_connections() as f64);
            metrics::gauge!(t::LISTENER_MAX_CONNECTIONS, "listener" => "kafka").set(self.kafka_max_connections as f64);
            metrics::gauge!(t::LISTENER_INFLIGHT_REQUEST_BYTES, "listener" => "kafka").set(held as f64);
            metrics::gauge!(t::LISTENER_MAX_INFLIGHT_REQUEST_BYTES, "listener" => "kafka").set(bound as f64);
            metrics::gauge!(t::KAFKA_PRODUCER_STATES).set(k.producer_states() as f64);
        }
    }
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// How long a gauge may go without being sampled before `/metrics` leaves it out.
const GAUGE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(t::KAFKA_REQUEST_DURATION_SECONDS.to_string()), t::KAFKA_REQUEST_DURATION_BUCKETS_SECONDS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(t::CLUSTER_APPEND_DURATION_SECONDS.to_string()), t::KAFKA_REQUEST_DURATION_BUCKETS_SECONDS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(t::CHECKPOINT_DURATION_SECONDS.to_string()), t::CHECKPOINT_DURATION_BUCKETS_SECONDS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(t::PIPELINE_CHECKPOINT_PAUSE_SECONDS.to_string()), t::CHECKPOINT_DURATION_BUCKETS_SECONDS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(t::QUOTA_THROTTLE_SECONDS.to_string()), t::QUOTA_THROTTLE_BUCKETS_SECONDS))
            // Every gauge is sampled at scrape time, so one not set for a while belongs to
            // something gone (a deleted topic or group, a dropped pipeline): leave it out
            // rather than repeat its last value.
            .map(|b| b.idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT)))
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "histogram buckets rejected; durations export as summaries");
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
        .merge(dashboard())
        .route("/v1/sessions", get(sessions))
        .route("/v1/sessions/stream", get(stream))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .with_state(app)
}

/// The dashboard's pages: one shell (`index.html`) at every page URL, whose script picks
/// the page from the path (see `assets/app.js`).
pub const PAGES: [&str; 9] = ["/", "/pipelines", "/pipelines/{name}", "/players", "/players/{id}", "/topics", "/topics/{name}", "/groups", "/alerts"];

/// The dashboard's static files, embedded in the binary: (URL name, content type, body).
const ASSETS: [(&str, &str, &str); 7] = [
    ("favicon.svg", "image/svg+xml", include_str!("../assets/favicon.svg")),
    ("app.js", "text/javascript", include_str!("../assets/app.js")),
    ("pages-ops.js", "text/javascript", include_str!("../assets/pages-ops.js")),
    ("pages-pipelines.js", "text/javascript", include_str!("../assets/pages-pipelines.js")),
    ("pages-players.js", "text/javascript", include_str!("../assets/pages-players.js")),
    ("style.css", "text/css", include_str!("../assets/style.css")),
    ("chart.umd.min.js", "text/javascript", include_str!("../assets/vendor/chart-4.6.1.umd.min.js")),
];

fn dashboard<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new();
    // Browsers ask for /favicon.ico whatever the page links; answer instead of a 404.
    r = r.route("/favicon.ico", get(|| async { asset("image/svg+xml", include_str!("../assets/favicon.svg")) }));
    for page in PAGES {
        r = r.route(page, get(|| async { Html(include_str!("../assets/index.html")) }));
    }
    for (name, content_type, body) in ASSETS {
        r = r.route(&format!("/assets/{name}"), get(move || async move { asset(content_type, body) }));
    }
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

#[derive(Deserialize)]
struct SessionsQuery {
    player: Option<String>,
    /// Closed sessions per page (default [`SESSIONS_PAGE`], at most [`SESSIONS_PAGE_MAX`]).
    limit: Option<usize>,
    /// The `next` cursor of the previous page.
    before: Option<String>,
}

/// Default closed sessions per page of `/v1/sessions`.
pub const SESSIONS_PAGE: usize = 1000;
/// Most closed sessions per page of `/v1/sessions`.
pub const SESSIONS_PAGE_MAX: usize = 10_000;

async fn sessions(State(app): State<Arc<App>>, who: Option<axum::Extension<crate::auth::Principal>>, Query(q): Query<SessionsQuery>) -> Response {
    if let Some(why) = app.pipelines.rows_refusal(crate::live::HEART_RATE, &who) {
        return crate::pipelines::PipelineError::Forbidden(why).response();
    }
    let before = match q.before.as_deref().map(crate::sessions::Cursor::parse).transpose() {
        Ok(b) => b,
        Err(m) => return (StatusCode::BAD_REQUEST, Json(json!({"error": {"code": "invalid_cursor", "message": m}}))).into_response(),
    };
    let limit = q.limit.unwrap_or(SESSIONS_PAGE).clamp(1, SESSIONS_PAGE_MAX);
    let store = app.sessions.clone();
    let player = q.player.clone();
    let page = tokio::task::spawn_blocking(move || store.page(player.as_deref(), before.as_ref(), limit)).await;
    match page {
        Ok(Ok((closed, next))) => Json(json!({
            "open": if q.before.is_none() { app.sessions.open(q.player.as_deref()).iter().map(session_json).collect::<Vec<_>>() } else { Vec::new() },
            "closed": closed.iter().map(session_json).collect::<Vec<_>>(),
            "next": next.map(|c| c.to_string()),
        }))
        .into_response(),
        Ok(Err(m)) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": {"code": "lake_unavailable", "message": m}}))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": {"code": "internal", "message": e.to_string()}}))).into_response(),
    }
}

#[derive(Deserialize, Default)]
struct StreamQuery {
    /// Only this player's events (a player page needs no others).
    player: Option<String>,
    /// Same as the `Last-Event-ID` header (the header wins).
    last_event_id: Option<u64>,
    /// Send live events once per this many ms, with only each player's newest open
    /// sessions ([`crate::resume::respond`]); 0 or absent: each event as it comes.
    #[serde(default)]
    merge_ms: u64,
}

async fn stream(State(app): State<Arc<App>>, headers: axum::http::HeaderMap, who: Option<axum::Extension<crate::auth::Principal>>, Query(q): Query<StreamQuery>) -> Response {
    if let Some(why) = app.pipelines.rows_refusal(crate::live::HEART_RATE, &who) {
        return crate::pipelines::PipelineError::Forbidden(why).response();
    }
    let resume = app.sessions.subscribe(crate::resume::last_event_id(&headers, q.last_event_id), q.player.as_deref());
    // With `player`, the subscription's route already holds only that player's events.
    crate::resume::respond(resume, |_| true, |e| (e.name(), e.data().to_string()), q.merge_ms)
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let poisoned = app.log.poison().reason();
    let fatal = app.pipelines.engine.as_ref().and_then(|e| e.fatal());
    let mut failed = false;
    let pipelines: Vec<Value> = app
        .pipelines
        .engine
        .as_ref()
        .map(|e| {
            e.pipelines()
                .iter()
                .map(|v| {
                    let error = v.status.error();
                    failed |= error.is_some();
                    json!({
                        "name": v.planned.spec.name, "state": v.status.state(), "error": error,
                        "lag_records": app.pipelines.lag(v), "records": v.status.records.load(Ordering::Relaxed),
                        "last_checkpoint_id": v.status.last_checkpoint_id.load(Ordering::Relaxed),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let ok = !failed && poisoned.is_none() && fatal.is_none();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let log = json!({"writable": poisoned.is_none(), "poisoned": poisoned});
    let disk = disk_space(&app.data_dir).map(|(free, capacity)| json!({"free_bytes": free, "capacity_bytes": capacity})).unwrap_or(Value::Null);
    let body = json!({"status": if ok { "ok" } else { "degraded" }, "log": log, "disk": disk, "checkpoints": {"failed": fatal}, "pipelines": pipelines});
    (status, Json(body)).into_response()
}

/// Why the server is not ready to ack writes yet; empty when it is.
fn readiness(app: &App) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(r) = app.log.poison().reason() {
        why.push(format!("the log refuses writes: {r}"));
    }
    if let Some(engine) = &app.pipelines.engine {
        for v in engine.pipelines() {
            if v.status.state() == "starting" {
                why.push(format!("pipeline {:?} is still restoring its last checkpoint", v.planned.spec.name));
            }
        }
    }
    why
}

/// `GET /readyz`: 200 `{"ready": true}` once recovery finished (the log was recovered
/// before the listener opened; every pipeline restored its checkpoint) and the log acks
/// writes; else 503 `{"ready": false, "reasons": [...]}`. For load balancers and
/// Kubernetes' readiness probe.
async fn ready(State(app): State<Arc<App>>) -> Response {
    let why = readiness(&app);
    let status = if why.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"ready": why.is_empty(), "reasons": why}))).into_response()
}

/// Free and total bytes of the file system holding `path` (`statvfs(3)`; free is what an
/// unprivileged user may use, as `df` shows). Errors: the path's `statvfs` error.
pub fn disk_space(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` is a writable statvfs buffer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let handle = prometheus();
    // Gauges of state are sampled now, at scrape time.
    app.limits.sample();
    for topic in app.log.topics() {
        for p in topic.partitions() {
            let labels = [("topic", topic.name().to_string()), ("partition", p.id().to_string())];
            metrics::gauge!(t::LOG_HIGH_WATERMARK_OFFSET, &labels).set(p.high_watermark() as f64);
            metrics::gauge!(t::LOG_SIZE_BYTES, &labels).set(p.size_bytes() as f64);
            metrics::counter!(t::LOG_FSYNCS_TOTAL, &labels).absolute(p.fsync_count());
        }
    }
    if let Some(engine) = &app.pipelines.engine {
        for v in engine.pipelines() {
            let name = v.planned.spec.name.clone();
            metrics::gauge!(t::PIPELINE_LAG_RECORDS, "pipeline" => name.clone()).set(app.pipelines.lag(&v) as f64);
            let wm = v.status.watermark_ms.load(Ordering::Relaxed);
            if wm != i64::MIN && wm != 0 {
                metrics::gauge!(t::PIPELINE_WATERMARK_TIMESTAMP_SECONDS, "pipeline" => name.clone()).set(wm as f64 / 1e3);
            }
            let state = v.status.state();
            for s in t::PIPELINE_STATES {
                metrics::gauge!(t::PIPELINE_STATE, "pipeline" => name.clone(), "state" => *s).set(if *s == state { 1.0 } else { 0.0 });
            }
            let last = v.status.last_checkpoint_ms.load(Ordering::Relaxed);
            if last > 0 {
                metrics::gauge!(t::PIPELINE_LAST_CHECKPOINT_TIMESTAMP_SECONDS, "pipeline" => name.clone()).set(last as f64 / 1e3);
            }
            metrics::gauge!(t::PIPELINE_ALERTS_FIRING, "pipeline" => name.clone()).set(v.status.alerts_firing.load(Ordering::Relaxed) as f64);
            metrics::gauge!(t::PIPELINE_STATE_KEYS, "pipeline" => name.clone()).set(v.status.keys.load(Ordering::Relaxed) as f64);
            metrics::gauge!(t::PIPELINE_OPEN_WINDOWS, "pipeline" => name.clone()).set(v.status.open_windows.load(Ordering::Relaxed) as f64);
            metrics::gauge!(t::PIPELINE_STATE_BYTES, "pipeline" => name).set(v.status.state_bytes.load(Ordering::Relaxed) as f64);
        }
    }
    metrics::gauge!(t::LOG_POISONED).set(if app.log.poison().reason().is_some() { 1.0 } else { 0.0 });
    metrics::gauge!(t::READY).set(if readiness(&app).is_empty() { 1.0 } else { 0.0 });
    match disk_space(&app.data_dir) {
        Ok((free, capacity)) => {
            metrics::gauge!(t::DISK_FREE_BYTES).set(free as f64);
            metrics::gauge!(t::DISK_CAPACITY_BYTES).set(capacity as f64);
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the data directory's free space"),
    }
    for group in app.gateway.offsets().groups() {
        for (topic, partition, c, hw) in app.gateway.committed_with_high_watermarks(&group) {
            let Some(hw) = hw else { continue };
            let labels = [("group", group.clone()), ("topic", topic), ("partition", partition.to_string())];
            metrics::gauge!(t::GROUP_LAG_RECORDS, &labels).set(hw.saturating_sub(c.offset) as f64);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

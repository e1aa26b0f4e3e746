//! HTTP and WebSocket routes of the gateway.
//!
//! `POST /v1/topics/{topic}/records`, body: a JSON object, a JSON array of objects, or
//! NDJSON (`Content-Type: application/x-ndjson`). Replies, after the records are durable:
//!
//! ```json
//! {"topic": "heartbeat-raw-topic", "accepted": 2, "rejected": 1,
//!  "offsets": [{"index": 0, "partition": 1, "offset": 41}, {"index": 2, "partition": 0, "offset": 7}],
//!  "errors":  [{"index": 1, "field": "heartbeat", "reason": "300 bpm is outside ..."}]}
//! ```
//!
//! Status: 200 if any record was accepted (or the body held none), 422 if every record
//! was rejected. Whole-request errors are `{"error": {"code", "message"}}` with 400
//! (`malformed_json`), 404 (`unknown_topic`), 413 (`payload_too_large`) or 503
//! (`log_unavailable`: nothing from the request was acknowledged; retry later).
//!
//! Topic administration (like Kafka's CreateTopics, DescribeConfigs, AlterConfigs and
//! DeleteTopics):
//! - `GET /v1/topics`, `GET /v1/topics/{topic}`: name, `retention_ms`, `retention_bytes`,
//!   `durability`, `max_message_bytes` (Kafka's `max.message.bytes`: the largest batch a
//!   Kafka producer may send; HTTP bodies are bounded by `http.max_body_bytes`), and per
//!   partition `log_start_offset`, `high_watermark`, `durable_offset`,
//!   `log_end_offset`, `size_bytes`, `segments`.
//! - `POST /v1/topics` with `{"name", "partitions": 1, "retention_ms": 604800000,
//!   "retention_bytes": -1, "max_message_bytes": 1048588, "schema"?}`: 201; 409
//!   `topic_exists`; 400 `invalid_topic`, `invalid_config` or `invalid_schema`. `schema` is
//!   a declared schema (`sluice_core::schema::RecordSchema`:
//!   `{"fields": [{"name", "type", "path"?, "required"?, ...}], "event_time"?, "key"?}`),
//!   `"heartbeat"` or `"json"`.
//! - `GET /v1/topics/{topic}/schema`: `{"topic", "schema", "written_by"}` (`schema` null
//!   for topics of any JSON; `written_by` names the pipeline whose output the topic is).
//! - `PUT /v1/topics/{topic}/schema` with a declared schema: sets it (persisted); records
//!   are checked against it from then on. 409 `topic_in_config` for configured topics.
//! - `PATCH /v1/topics/{topic}` with `{"retention_ms"?, "retention_bytes"?,
//!   "max_message_bytes"?}`: 200; 400 `invalid_config`.
//! - `DELETE /v1/topics/{topic}`: 200, data deleted; 409 `topic_in_use` for topics named
//!   in the configuration (and their dead-letter topics).
//!
//! Consumer-group offsets (stored in the log's `__consumer_offsets` topic, like Kafka's
//! OffsetCommit and OffsetFetch):
//! - `GET /v1/groups`: `{"groups": [...]}`: groups with committed offsets or live members.
//! - `GET /v1/groups/{group}`: `{"group", "offsets": [{"topic", "partition", "offset",
//!   "metadata", "commit_ms", "high_watermark", "lag"}]}`, plus, for a group the Kafka
//!   coordinator knows, `"state"`, `"protocol_type"`, `"protocol"`, `"generation"` and
//!   `"members": [{"member_id", "client_id", "client_host", "assignment": [{"topic",
//!   "partitions"}]}]`.
//! - `POST /v1/groups/{group}/offsets` with `{"offsets": [{"topic", "partition", "offset",
//!   "metadata"?}]}`: all durable together, then 200; 404 for an unknown topic or partition.
//! - `DELETE /v1/groups/{group}`: forgets the group's offsets; 409 `group_in_use` while it
//!   has live members.
//!
//! `GET /v1/topics/{topic}/partitions/{partition}/records?offset=N&max=M`: reads up to
//! `M` (default 100, at most 10000) durable records from offset `N` (default 0), or, with
//! `timestamp_ms=T`, from the first record appended at or after `T` (epoch ms):
//! `{"topic", "partition", "log_start_offset", "high_watermark", "records": [{"offset",
//! "timestamp_ms", "key", "value"}]}`; `value` is the stored JSON, or a string if the
//! bytes are not JSON. Dead-letter topics (`<topic>.dlq`) are read the same way.
//!
//! `GET /v1/topics/{topic}/ws`: a WebSocket. Each text (or binary UTF-8) frame is one
//! JSON record, a JSON array, or NDJSON lines. Each frame gets one ack frame, in order,
//! with `seq` = the frame's 0-based number on the connection and the fields above, or
//! `{"seq": n, "error": {...}}`. Frames that arrive together share one fsync. Pings are
//! answered; a WebSocket that sends nothing for `http.ws_idle_timeout_ms` is closed with
//! code 1001 (going away); so is one that leaves its acks unread that long. An idle
//! connection holds a 4 KiB read buffer
//! ([`WS_READ_BUFFER_BYTES`]), about 7 KB in all.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::FutureExt;
use serde_json::{json, Value};
use sluice_core::net::within;
use sluice_core::telemetry as t;

use crate::{Gateway, IngestError, Ingested};

/// Most frames gathered into one append.
const MAX_FRAMES_PER_APPEND: usize = 256;

#[derive(Clone)]
struct AppState {
    gateway: Arc<Gateway>,
    max_body_bytes: usize,
    ws_idle_timeout_ms: u64,
    websockets: Arc<tokio::sync::Semaphore>,
}

/// Settings of the gateway's routes (the `[http]` config table).
#[derive(Debug, Clone)]
pub struct RouteOptions {
    /// Largest request body or WebSocket frame, bytes.
    pub max_body_bytes: usize,
    /// Close a WebSocket that sends nothing for this long, ms (0: never).
    pub ws_idle_timeout_ms: u64,
    /// One permit per WebSocket that may open (`http.max_websockets`); an upgrade without a
    /// free one gets 503 `too_many_websockets` (with `Retry-After`).
    pub websocket_slots: Arc<tokio::sync::Semaphore>,
}

/// Bytes a WebSocket connection reserves to read frames into (tungstenite's default is
/// 128 KiB). Device frames are a few hundred bytes; a larger frame grows the buffer while
/// it is read. With this, an idle device connection costs about 7 KB in all (measured:
/// `tests/e2e/test_listener_limits.py`).
pub const WS_READ_BUFFER_BYTES: usize = 4 * 1024;
/// Bytes of outgoing frames (acks) gathered before they are written (tungstenite's
/// default is 128 KiB); acks are written as they are sent.
pub const WS_WRITE_BUFFER_BYTES: usize = 0;

/// The gateway's routes (see [`RouteOptions`] for their limits).
pub fn router(gateway: Arc<Gateway>, options: RouteOptions) -> Router {
    let max_body_bytes = options.max_body_bytes;
    let state = AppState { gateway, max_body_bytes, ws_idle_timeout_ms: options.ws_idle_timeout_ms, websockets: options.websocket_slots };
    Router::new()
        .route("/v1/topics", get(list_topics).post(create_topic))
        .route("/v1/topics/{topic}", get(describe_topic).patch(alter_topic).delete(delete_topic))
        .route("/v1/topics/{topic}/schema", get(get_schema).put(put_schema))
        .route("/v1/groups", get(list_groups))
        .route("/v1/groups/{group}", get(describe_group).delete(delete_group))
        .route("/v1/groups/{group}/offsets", post(commit_offsets))
        .route("/v1/topics/{topic}/records", post(post_records))
        .route("/v1/topics/{topic}/ws", get(ws_upgrade))
        .route("/v1/topics/{topic}/partitions/{partition}/records", get(read_records))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn error_body(e: &IngestError) -> (StatusCode, Value) {
    let (status, code) = match e {
        IngestError::UnknownTopic(_) => (StatusCode::NOT_FOUND, "unknown_topic"),
        IngestError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
        IngestError::InternalTopic(_) => (StatusCode::FORBIDDEN, "internal_topic"),
        IngestError::PipelineOutput { .. } => (StatusCode::FORBIDDEN, "pipeline_output"),
        IngestError::Log(_) => (StatusCode::SERVICE_UNAVAILABLE, "log_unavailable"),
        IngestError::External { .. } => (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable"),
    };
    let mut message = e.to_string();
    match e {
        IngestError::Log(source) => message = format!("{message}: {source}"),
        IngestError::External { source, .. } => message = format!("{message}: {source}"),
        _ => {}
    }
    (status, json!({"code": code, "message": message}))
}

fn ingested_body(topic: &str, r: &Ingested) -> Value {
    json!({
        "topic": topic,
        "accepted": r.accepted.len(),
        "rejected": r.rejected.len(),
        "offsets": r.accepted,
        "errors": r.rejected,
    })
}

/// Which topics and consumer groups a request's principal may use, when the server limits
/// it (a request extension set by the server's authorization; absent: every one).
pub trait TopicAccess: Send + Sync {
    fn allows(&self, topic: &str) -> bool;
    /// Why `topic` is refused, for the 403 answer.
    fn refusal(&self, topic: &str) -> String;
    /// Whether the principal may see and use consumer group `group`.
    fn allows_group(&self, group: &str) -> bool;
}

/// The request extension carrying a [`TopicAccess`].
#[derive(Clone)]
pub struct TopicScope(pub Arc<dyn TopicAccess>);

/// Topics, less those the principal may not use (as Kafka's Metadata hides them).
async fn list_topics(State(s): State<AppState>, scope: Option<axum::Extension<TopicScope>>) -> Json<Value> {
    let mut topics = s.gateway.describe();
    if let Some(axum::Extension(scope)) = scope {
        topics.retain(|t| t["name"].as_str().is_some_and(|n| scope.0.allows(n)));
    }
    Json(json!({"topics": topics}))
}

async fn post_records(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let (code, message) = if status == StatusCode::PAYLOAD_TOO_LARGE {
                let m = format!(
                    "the body exceeds http.max_body_bytes = {} bytes; split it into smaller requests or raise the limit",
                    s.max_body_bytes
                );
                ("payload_too_large", m)
            } else {
                ("unreadable_body", rejection.body_text())
            };
            metrics::counter!(t::INGEST_REFUSED_REQUESTS_TOTAL, "reason" => code).increment(1);
            return error(status, code, message);
        }
    };
    let ndjson = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-ndjson") || ct.starts_with("application/jsonl"));
    let gateway = s.gateway.clone();
    let topic2 = topic.clone();
    let result = tokio::task::spawn_blocking(move || gateway.ingest(&topic2, &body, ndjson, "http")).await;
    match result {
        Ok(Ok(r)) => {
            let status = if r.accepted.is_empty() && !r.rejected.is_empty() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
            (status, Json(ingested_body(&topic, &r))).into_response()
        }
        Ok(Err(e)) => {
            if matches!(e, IngestError::UnknownTopic(_)) {
                metrics::counter!(t::INGEST_REFUSED_REQUESTS_TOTAL, "reason" => "unknown_topic").increment(1);
            }
            let (status, body) = error_body(&e);
            (status, Json(json!({"error": body}))).into_response()
        }
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("ingest task failed: {join}")),
    }
}

fn log_error(e: &sluice_log::LogError) -> Response {
    use sluice_log::LogError as E;
    let (status, code) = match e {
        E::TopicExists { .. } => (StatusCode::CONFLICT, "topic_exists"),
        E::InvalidTopicName { .. } => (StatusCode::BAD_REQUEST, "invalid_topic"),
        E::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
        E::UnknownTopic(_) => (StatusCode::NOT_FOUND, "unknown_topic"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "log_error"),
    };
    error(status, code, e.to_string())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: String,
    #[serde(default = "one_partition")]
    partitions: u32,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    max_message_bytes: Option<u64>,
    schema: Option<sluice_core::schema::SchemaSpec>,
}

fn one_partition() -> u32 {
    1
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicChange {
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    max_message_bytes: Option<u64>,
}

async fn describe_topic(State(s): State<AppState>, Path(topic): Path<String>) -> Response {
    match s.gateway.describe_one(&topic) {
        Some(d) => Json(d).into_response(),
        None => error(StatusCode::NOT_FOUND, "unknown_topic", format!("topic {topic:?} does not exist")),
    }
}

async fn create_topic(State(s): State<AppState>, scope: Option<axum::Extension<TopicScope>>, body: Result<Json<NewTopic>, axum::extract::rejection::JsonRejection>) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()),
    };
    if let Some(axum::Extension(scope)) = scope.filter(|x| !x.0 .0.allows(&req.name)) {
        return error(StatusCode::FORBIDDEN, "forbidden", scope.0.refusal(&req.name));
    }
    let defaults = sluice_log::Retention::default();
    let retention = sluice_log::Retention { ms: req.retention_ms.unwrap_or(defaults.ms), bytes: req.retention_bytes.unwrap_or(defaults.bytes) };
    let schema = match req.schema.as_ref().map(|s| s.resolve()).transpose() {
        Ok(s) => s.flatten(),
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_schema", e.to_string()),
    };
    if let Some(t) = s.gateway.log().topic(&req.name) {
        return log_error(&sluice_log::LogError::TopicExists { name: req.name.clone(), partitions: t.partition_count() });
    }
    if let Err(e) = req.max_message_bytes.map_or(Ok(()), sluice_log::check_max_message_bytes) {
        return log_error(&e);
    }
    let gw = s.gateway.clone();
    let name = req.name.clone();
    let result = tokio::task::spawn_blocking(move || {
        if let Some(sc) = schema {
            // Declared first, so no record reaches the topic unchecked.
            gw.declare_schema(&name, Some(sc)).map_err(|e| Err(e.to_string()))?;
        }
        gw.log().create_topic_with(&name, req.partitions, retention).map_err(Ok)?;
        match req.max_message_bytes {
            Some(n) => gw.log().set_max_message_bytes(&name, n).map_err(Ok),
            None => Ok(()),
        }
    })
    .await;
    match result {
        Ok(Ok(_)) => (StatusCode::CREATED, Json(s.gateway.describe_one(&req.name).unwrap_or_default())).into_response(),
        Ok(Err(Ok(e))) => {
            let _ = s.gateway.declare_schema(&req.name, None);
            log_error(&e)
        }
        Ok(Err(Err(e))) => error(StatusCode::BAD_REQUEST, "invalid_schema", e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn get_schema(State(s): State<AppState>, Path(topic): Path<String>) -> Response {
    if s.gateway.log().topic(&topic).is_none() {
        return error(StatusCode::NOT_FOUND, "unknown_topic", format!("topic {topic:?} does not exist"));
    }
    Json(json!({"topic": topic, "schema": s.gateway.schema_of(&topic), "written_by": s.gateway.writer_of(&topic)})).into_response()
}

async fn put_schema(State(s): State<AppState>, Path(topic): Path<String>, body: Result<Json<sluice_core::schema::RecordSchema>, axum::extract::rejection::JsonRejection>) -> Response {
    let schema = match body {
        Ok(Json(b)) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_schema", e.body_text()),
    };
    if s.gateway.log().topic(&topic).is_none() {
        return error(StatusCode::NOT_FOUND, "unknown_topic", format!("topic {topic:?} does not exist"));
    }
    if let Some(p) = s.gateway.writer_of(&topic) {
        return error(StatusCode::CONFLICT, "pipeline_output", format!("topic {topic:?} is the output of pipeline {p:?}; its schema follows the pipeline"));
    }
    let gw = s.gateway.clone();
    let t = topic.clone();
    match tokio::task::spawn_blocking(move || gw.declare_schema(&t, Some(schema))).await {
        Ok(Ok(())) => Json(json!({"topic": topic, "schema": s.gateway.schema_of(&topic)})).into_response(),
        Ok(Err(e @ crate::SchemaDeclError::Configured(_))) => error(StatusCode::CONFLICT, "topic_in_config", e.to_string()),
        Ok(Err(e @ crate::SchemaDeclError::Invalid(_))) => error(StatusCode::BAD_REQUEST, "invalid_schema", e.to_string()),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, "schema_not_stored", e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn alter_topic(State(s): State<AppState>, Path(topic): Path<String>, body: Result<Json<TopicChange>, axum::extract::rejection::JsonRejection>) -> Response {
    let change = match body {
        Ok(Json(c)) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()),
    };
    let Some(t) = s.gateway.log().topic(&topic) else {
        return error(StatusCode::NOT_FOUND, "unknown_topic", format!("topic {topic:?} does not exist"));
    };
    let old = t.retention();
    let new = sluice_log::Retention { ms: change.retention_ms.unwrap_or(old.ms), bytes: change.retention_bytes.unwrap_or(old.bytes) };
    let gw = s.gateway.clone();
    let name = topic.clone();
    let max_message_bytes = change.max_message_bytes.unwrap_or(t.max_message_bytes());
    let change = move || {
        sluice_log::check_max_message_bytes(max_message_bytes)?;
        gw.log().set_retention(&name, new)?;
        gw.log().set_max_message_bytes(&name, max_message_bytes)
    };
    match tokio::task::spawn_blocking(change).await {
        Ok(Ok(())) => Json(s.gateway.describe_one(&topic).unwrap_or_default()).into_response(),
        Ok(Err(e)) => log_error(&e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn delete_topic(State(s): State<AppState>, Path(topic): Path<String>) -> Response {
    if s.gateway.is_configured(&topic) {
        return error(
            StatusCode::CONFLICT,
            "topic_in_use",
            format!("topic {topic:?} is named in the configuration ([[topics]]); remove it there and restart before deleting it"),
        );
    }
    let gw = s.gateway.clone();
    let name = topic.clone();
    match tokio::task::spawn_blocking(move || gw.delete_topic(&name)).await {
        Ok(Ok(())) => Json(json!({"deleted": topic})).into_response(),
        Ok(Err(e)) => log_error(&e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitRequest {
    offsets: Vec<CommitEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitEntry {
    topic: String,
    partition: u32,
    offset: u64,
    #[serde(default)]
    metadata: String,
}

/// Groups, less those the principal may not see (as Kafka's ListGroups hides them).
async fn list_groups(State(s): State<AppState>, scope: Option<axum::Extension<TopicScope>>) -> Json<Value> {
    let mut groups = s.gateway.groups();
    if let Some(axum::Extension(scope)) = scope {
        groups.retain(|g| scope.0.allows_group(g));
    }
    Json(json!({"groups": groups}))
}

/// A group's offsets and members, less the topics the principal may not see (as Kafka's
/// OffsetFetch for all topics leaves them out). The group itself was checked by the
/// server's authorization, from the path.
async fn describe_group(State(s): State<AppState>, scope: Option<axum::Extension<TopicScope>>, Path(group): Path<String>) -> Response {
    let mut d = s.gateway.describe_group(&group);
    if let Some(axum::Extension(scope)) = scope {
        let visible = |v: &Value| v["topic"].as_str().is_some_and(|t| scope.0.allows(t));
        if let Some(offsets) = d.get_mut("offsets").and_then(Value::as_array_mut) {
            offsets.retain(visible);
        }
        for m in d.get_mut("members").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(a) = m.get_mut("assignment").and_then(Value::as_array_mut) {
                a.retain(visible);
            }
        }
    }
    if d["offsets"].as_array().is_none_or(|a| a.is_empty()) && d.get("members").is_none() {
        return error(StatusCode::NOT_FOUND, "unknown_group", format!("group {group:?} has no committed offsets and no members"));
    }
    Json(d).into_response()
}

async fn commit_offsets(
    State(s): State<AppState>,
    scope: Option<axum::Extension<TopicScope>>,
    Path(group): Path<String>,
    body: Result<Json<CommitRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()),
    };
    if let Some(axum::Extension(scope)) = scope {
        if let Some(c) = req.offsets.iter().find(|c| !scope.0.allows(&c.topic)) {
            return error(StatusCode::FORBIDDEN, "forbidden", scope.0.refusal(&c.topic));
        }
    }
    for c in &req.offsets {
        let known = s.gateway.log().topic(&c.topic).is_some_and(|t| c.partition < t.partition_count());
        if !known {
            return error(StatusCode::NOT_FOUND, "unknown_topic_or_partition", format!("{}-{} does not exist", c.topic, c.partition));
        }
    }
    let commits: Vec<sluice_log::OffsetCommit> = req
        .offsets
        .into_iter()
        .map(|c| sluice_log::OffsetCommit { topic: c.topic, partition: c.partition, offset: c.offset, metadata: c.metadata })
        .collect();
    let gw = s.gateway.clone();
    let g = group.clone();
    match tokio::task::spawn_blocking(move || gw.offsets().commit(&g, &commits, sluice_core::time::now_ms())).await {
        Ok(Ok(())) => Json(s.gateway.describe_group(&group)).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn delete_group(State(s): State<AppState>, Path(group): Path<String>) -> Response {
    if s.gateway.group_is_active(&group) {
        return error(StatusCode::CONFLICT, "group_in_use", format!("group {group:?} has live members; stop its consumers first (Kafka: NON_EMPTY_GROUP)"));
    }
    let gw = s.gateway.clone();
    let g = group.clone();
    match tokio::task::spawn_blocking(move || gw.offsets().delete_group(&g, sluice_core::time::now_ms())).await {
        Ok(Ok(0)) => error(StatusCode::NOT_FOUND, "unknown_group", format!("group {group:?} has no committed offsets")),
        Ok(Ok(n)) => Json(json!({"deleted": group, "offsets": n})).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct ReadQuery {
    offset: Option<u64>,
    max: Option<usize>,
    /// Start at the first record appended at or after this time (epoch ms), as Kafka's
    /// ListOffsets by timestamp; overrides `offset`.
    timestamp_ms: Option<i64>,
}

async fn read_records(
    State(s): State<AppState>,
    Path((topic, partition)): Path<(String, u32)>,
    axum::extract::Query(q): axum::extract::Query<ReadQuery>,
) -> Response {
    let Some(t) = s.gateway.log().topic(&topic) else {
        return error(StatusCode::NOT_FOUND, "unknown_topic", format!("topic {topic:?} does not exist; list topics with GET /v1/topics"));
    };
    let p = match t.partition(partition) {
        Ok(p) => p.clone(),
        Err(e) => return error(StatusCode::NOT_FOUND, "unknown_partition", e.to_string()),
    };
    let (offset, max) = (q.offset.unwrap_or(0), q.max.unwrap_or(100).min(10_000));
    let read = tokio::task::spawn_blocking(move || {
        let offset = match q.timestamp_ms {
            Some(ts) => p.offset_for_timestamp(ts)?.unwrap_or_else(|| p.high_watermark()),
            None => offset,
        };
        p.read(offset, max, 16 << 20).map(|r| (r, p.log_start_offset(), p.high_watermark()))
    })
    .await;
    match read {
        Ok(Ok((records, start, hw))) => {
            let records: Vec<Value> = records
                .into_iter()
                .map(|r| {
                    let value = serde_json::from_slice::<Value>(&r.value).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.value).into()));
                    json!({"offset": r.offset, "timestamp_ms": r.timestamp_ms, "key": r.key.map(|k| String::from_utf8_lossy(&k).to_string()), "value": value})
                })
                .collect();
            Json(json!({"topic": topic, "partition": partition, "log_start_offset": start, "high_watermark": hw, "records": records})).into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "log_read_failed", e.to_string()),
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", join.to_string()),
    }
}

async fn ws_upgrade(State(s): State<AppState>, Path(topic): Path<String>, ws: WebSocketUpgrade) -> Response {
    if let Err(e) = s.gateway.check_topic(&topic) {
        let (status, body) = error_body(&e);
        return (status, Json(json!({"error": body}))).into_response();
    }
    let Ok(slot) = s.websockets.clone().try_acquire_owned() else {
        metrics::counter!(t::INGEST_REFUSED_REQUESTS_TOTAL, "reason" => "too_many_websockets").increment(1);
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "too_many_websockets", "every WebSocket slot is taken (http.max_websockets); retry later".into());
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return r;
    };
    let max = s.max_body_bytes;
    let idle = s.ws_idle_timeout_ms;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            ws_session(s.gateway, topic, socket, idle).await;
            drop(slot);
        })
}

fn frame_bytes(msg: Message) -> Option<Bytes> {
    match msg {
        Message::Text(t) => Some(Bytes::copy_from_slice(t.as_str().as_bytes())),
        Message::Binary(b) => Some(b),
        _ => None,
    }
}

async fn ws_session(gateway: Arc<Gateway>, topic: String, mut socket: WebSocket, idle_timeout_ms: u64) {
    let mut seq: u64 = 0;
    loop {
        let next = match within(idle_timeout_ms, socket.recv()).await {
            Ok(next) => next,
            Err(_) => {
                metrics::counter!(t::LISTENER_TIMEOUTS_TOTAL, "listener" => "http", "reason" => "websocket_idle").increment(1);
                let reason = format!("no frame for {idle_timeout_ms} ms (http.ws_idle_timeout_ms)");
                let close = axum::extract::ws::CloseFrame { code: axum::extract::ws::close_code::AWAY, reason: reason.into() };
                let _ = socket.send(Message::Close(Some(close))).await;
                break;
            }
        };
        let Some(Ok(first)) = next else { break };
        if matches!(first, Message::Close(_)) {
            break;
        }
        let mut frames: Vec<Bytes> = frame_bytes(first).into_iter().collect();
        let mut closing = false;
        // Gather frames already received, so they share one append and one fsync.
        while frames.len() < MAX_FRAMES_PER_APPEND {
            match socket.recv().now_or_never() {
                Some(Some(Ok(Message::Close(_)))) | Some(None) | Some(Some(Err(_))) => {
                    closing = true;
                    break;
                }
                Some(Some(Ok(m))) => frames.extend(frame_bytes(m)),
                None => break,
            }
        }
        if !frames.is_empty() {
            let gw = gateway.clone();
            let topic2 = topic.clone();
            let frames2 = frames.clone();
            let results = tokio::task::spawn_blocking(move || {
                let bodies: Vec<(&[u8], bool)> = frames2.iter().map(|f| (&f[..], false)).collect();
                gw.ingest_many(&topic2, &bodies, "websocket")
            })
            .await;
            let acks: Vec<Value> = match results {
                Ok(Ok(per_frame)) => per_frame
                    .iter()
                    .map(|r| {
                        let mut ack = match r {
                            Ok(ing) => ingested_body(&topic, ing),
                            Err(e) => json!({"error": error_body(e).1}),
                        };
                        ack["seq"] = json!(seq);
                        seq += 1;
                        ack
                    })
                    .collect(),
                Ok(Err(e)) => {
                    let body = error_body(&e).1;
                    frames.iter().map(|_| { let a = json!({"seq": seq, "error": body}); seq += 1; a }).collect()
                }
                Err(join) => {
                    tracing::error!(error = %join, "websocket ingest task failed");
                    break;
                }
            };
            for ack in acks {
                // A client that stops reading its acks stalls here (memory stays bounded: the
                // ack is written, not queued); after the idle timeout it is disconnected.
                match within(idle_timeout_ms, socket.send(Message::Text(ack.to_string().into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        metrics::counter!(t::LISTENER_TIMEOUTS_TOTAL, "listener" => "http", "reason" => "websocket_unread_acks").increment(1);
                        return;
                    }
                }
            }
        }
        if closing {
            break;
        }
    }
}

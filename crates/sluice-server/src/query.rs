//! `POST /v1/query {"sql": "SELECT …"}`: SQL over the lake's Delta tables (see
//! `sluice_lake::query`) plus `open_sessions`, the heart-rate pipeline's open sessions.
//!
//! The answer's format follows `Accept`:
//! - `application/json` (the default): `{"columns": [{"name", "type"}], "rows": [{…}, …]}`,
//!   rows as JSON objects, timestamps as RFC 3339 text;
//! - `text/csv`: a header line, then one line per row;
//! - `application/vnd.apache.arrow.stream`: an Arrow IPC stream.
//!
//! Rows stream as the engine produces them; the whole answer is never held. A query that
//! fails to plan gets 400 with the reason (SQL errors name the line and column); one that
//! runs past `[lake] query_timeout_ms` is cut off (before its first row: 408; after it: the
//! stream ends early, which every client reports as a truncated response).
//! Users limited to certain pipelines see only the tables of those pipelines.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use datafusion::catalog::MemTable;
use datafusion::catalog::TableProvider;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sluice_lake::format::{Encoder, Format};
use sluice_lake::delta::DeltaTable;
use sluice_lake::query::{QueryLimits, TableFilter};

use crate::auth::{limits_of, Principal};
use crate::sessions::SessionStore;

/// What the query endpoint needs.
pub struct QueryService {
    pub lake: Arc<sluice_lake::Lake>,
    pub sessions: Arc<SessionStore>,
    pub limits: QueryLimits,
    pub timeout: Duration,
}

#[derive(Deserialize)]
struct QueryBody {
    sql: String,
}

pub fn router(service: Arc<QueryService>) -> Router {
    Router::new()
        .route("/v1/query", post(query))
        .route("/v1/tables", get(list_tables))
        .route("/v1/tables/{name}", get(describe_table))
        .route("/v1/tables/{name}/history", get(table_history))
        .with_state(service)
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

/// Runs a lake call on a blocking thread; lake errors become JSON errors (404 for a missing
/// table).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, sluice_lake::LakeError> + Send + 'static) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e @ sluice_lake::LakeError::NoTable(_))) => Err(error(StatusCode::NOT_FOUND, "unknown_table", e.to_string())),
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "lake_error", crate::error_chain(&e))),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "lake_error", e.to_string())),
    }
}

fn table_json(name: &str, t: &DeltaTable, files: &[sluice_lake::delta::DataFile]) -> serde_json::Value {
    let dates: std::collections::BTreeSet<&str> = files.iter().filter_map(|f| f.date.as_deref()).collect();
    json!({
        "name": name,
        "version": t.version(),
        "files": files.len(),
        "rows": files.iter().filter_map(|f| f.rows).sum::<usize>(),
        "bytes": files.iter().map(|f| f.size).sum::<u64>(),
        "dates": dates.len(),
    })
}

/// Whether a principal with `limits` may read lake table `table`. A table is a pipeline
/// output stream, named after it (rollup levels too), and holds what that stream's output
/// topic of the same name holds: it needs both the pipeline limits and the topic limits.
/// `open_sessions` is heart_rate's.
pub fn table_visible(limits: &sluice_auth::Limits, table: &str) -> bool {
    let t = if table == "open_sessions" { crate::live::HEART_RATE } else { table };
    limits.pipeline(t) && limits.topic(t)
}

/// `GET /v1/tables`: the lake's tables (those the caller's limits allow, [`table_visible`]).
async fn list_tables(State(q): State<Arc<QueryService>>, who: Option<Extension<Principal>>) -> Response {
    let limits = limits_of(&who);
    let lake = q.lake.clone();
    let tables = blocking(move || {
        let mut out = Vec::new();
        for name in lake.table_names()?.into_iter().filter(|n| table_visible(&limits, n)) {
            let t = lake.table(&name, None)?;
            let files = sluice_lake::delta::files(&t, &name)?;
            out.push(table_json(&name, &t, &files));
        }
        Ok(out)
    })
    .await;
    match tables {
        Ok(t) => Json(json!({ "tables": t })).into_response(),
        Err(r) => r,
    }
}

/// `GET /v1/tables/{name}`: version, columns, files.
async fn describe_table(State(q): State<Arc<QueryService>>, who: Option<Extension<Principal>>, Path(name): Path<String>) -> Response {
    if !table_visible(&limits_of(&who), &name) {
        return error(StatusCode::NOT_FOUND, "unknown_table", format!("no lake table {name:?}"));
    }
    let lake = q.lake.clone();
    let r = blocking(move || {
        let t = lake.table(&name, None)?;
        let files = sluice_lake::delta::files(&t, &name)?;
        let schema = sluice_lake::delta::arrow_schema(&t, &name)?;
        let mut v = table_json(&name, &t, &files);
        v["columns"] = schema.fields().iter().map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()})).collect();
        v["partition_columns"] = json!([sluice_lake::delta::DATE]);
        v["data_files"] = files.iter().map(|f| json!({"path": f.path, "bytes": f.size, "rows": f.rows, "date": f.date})).collect();
        Ok(v)
    })
    .await;
    match r {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// `GET /v1/tables/{name}/history`: the Delta commits, newest first.
async fn table_history(State(q): State<Arc<QueryService>>, who: Option<Extension<Principal>>, Path(name): Path<String>) -> Response {
    if !table_visible(&limits_of(&who), &name) {
        return error(StatusCode::NOT_FOUND, "unknown_table", format!("no lake table {name:?}"));
    }
    let lake = q.lake.clone();
    match blocking(move || lake.history(&name, Some(1000))).await {
        Ok(h) => Json(json!({ "history": h })).into_response(),
        Err(r) => r,
    }
}

/// The live tables: `open_sessions`.
pub fn live_tables(sessions: &SessionStore) -> HashMap<String, Arc<dyn TableProvider>> {
    let batch = sluice_lake::schema::sessions_batch(&sessions.open(None));
    let mut out: HashMap<String, Arc<dyn TableProvider>> = HashMap::new();
    if let Ok(t) = MemTable::try_new(batch.schema(), vec![vec![batch]]) {
        out.insert("open_sessions".into(), Arc::new(t));
    }
    out
}

async fn query(State(q): State<Arc<QueryService>>, who: Option<Extension<Principal>>, headers: HeaderMap, body: Result<Json<QueryBody>, axum::extract::rejection::JsonRejection>) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", format!("{e}; send {{\"sql\": \"SELECT …\"}}")),
    };
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let limits = limits_of(&who);
    let allow: Option<TableFilter> = if limits.is_unlimited() {
        None
    } else {
        Some(Arc::new(move |t: &str| table_visible(&limits, t)))
    };
    let ctx = match sluice_lake::query::context(q.lake.root(), live_tables(&q.sessions), allow, q.limits).await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "query_failed", crate::error_chain(&e)),
    };
    let deadline = tokio::time::Instant::now() + q.timeout;
    let stream = match tokio::time::timeout_at(deadline, sluice_lake::query::start(ctx, &body.sql)).await {
        Ok(Ok(s)) => s,
        Ok(Err(sluice_lake::LakeError::Query(e))) => {
            let e = sluice_stream::sql::SqlError::from_datafusion(&e, &body.sql);
            return (StatusCode::BAD_REQUEST, Json(json!({"error": {"code": "query_error", "message": e.to_string(), "line": e.line, "column": e.column}}))).into_response();
        }
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "query_failed", crate::error_chain(&e)),
        Err(_) => return timed_out(q.timeout),
    };
    // The first batch before the status: most failures (memory, time) come before any row,
    // and then the answer is an error status rather than a cut-off 200.
    let mut stream = stream;
    let first = match tokio::time::timeout_at(deadline, stream.next()).await {
        Ok(Some(Ok(b))) => Some(b),
        Ok(None) => None,
        Ok(Some(Err(e))) => {
            let resources = matches!(e.find_root(), datafusion::error::DataFusionError::ResourcesExhausted(_));
            let hint = if resources { "; the query needs more memory than [lake] query_memory_bytes: filter more rows out, or raise it" } else { "" };
            return error(StatusCode::BAD_REQUEST, if resources { "query_resources_exhausted" } else { "query_error" }, format!("{}{hint}", crate::error_chain(&e)));
        }
        Err(_) => return timed_out(q.timeout),
    };
    let schema = stream.schema.clone();
    let mut encoder = match Encoder::new(format, schema) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "query_failed", e),
    };
    let mut head = encoder.head();
    if let Some(b) = &first {
        match encoder.batch(b) {
            Ok(bytes) => head.extend_from_slice(&bytes),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "query_failed", e),
        }
    }
    if first.is_none() {
        // No rows: the stream is done (and need not be polled again).
        head.extend_from_slice(&encoder.finish());
        return ([(header::CONTENT_TYPE, format.content_type())], Body::from(head)).into_response();
    }
    let head = Bytes::from(head);
    let body = async_stream(stream, encoder, deadline, q.timeout);
    let body = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(head) }).chain(body);
    ([(header::CONTENT_TYPE, format.content_type())], Body::from_stream(body)).into_response()
}

fn timed_out(limit: Duration) -> Response {
    error(StatusCode::REQUEST_TIMEOUT, "query_timeout", format!("the query ran past its time limit of {} ms ([lake] query_timeout_ms)", limit.as_millis()))
}

fn async_stream(
    stream: sluice_lake::query::Running,
    encoder: Encoder,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold((stream, Some(encoder)), move |(mut stream, encoder)| async move {
        let mut encoder = encoder?;
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(batch))) => Some((encoder.batch(&batch).map(Bytes::from).map_err(std::io::Error::other), (stream, Some(encoder)))),
            Ok(None) => Some((Ok(Bytes::from(encoder.finish())), (stream, None))),
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "query failed while streaming its rows");
                Some((Err(std::io::Error::other(e.to_string())), (stream, None)))
            }
            Err(_) => Some((Err(std::io::Error::other(format!("the query ran past its time limit of {} ms", timeout.as_millis()))), (stream, None))),
        }
    })
}

//! The worker's HTTP API, on its `http.addr`:
//!
//! - `GET /healthz`: `ok` while the worker runs.
//! - `GET /v1/status`: the group, this worker's name, rebalances seen, and per owned
//!   partition its pipelines (state, next offset, last checkpoint id, error).
//! - `GET /v1/pipelines`: the pipelines this worker runs, with the partitions it owns.
//! - `POST /v1/pipelines/{name}/drain`: drains that pipeline on this worker's partitions
//!   (reads what the cluster holds now, closes every window, commits); answers once done
//!   with the partitions drained. 404: no such pipeline; 409: partitions are being
//!   assigned (try again); 500: a task failed.
//! - `GET /metrics`: Prometheus text (names in `sluice_core::telemetry`).
//!
//! There is no authentication here: `sluice worker` listens on loopback unless `--insecure`
//! (as `serve` without `[auth]`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sluice_core::telemetry as t;

use crate::Worker;

/// Serves [`router`] on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, worker: Arc<Worker>) -> std::io::Result<()> {
    axum::serve(listener, router(worker)).await
}

pub fn router(worker: Arc<Worker>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/status", get(status))
        .route("/v1/pipelines", get(pipelines))
        .route("/v1/pipelines/{name}/drain", post(drain))
        .route("/metrics", get(metrics_text))
        .with_state(worker)
}

fn partitions(w: &Worker) -> Vec<Value> {
    w.with_tasks(|m| {
        m.values()
            .map(|task| {
                let pipelines: Vec<Value> = task
                    .engine
                    .pipelines()
                    .into_iter()
                    .map(|v| {
                        let s = &v.status;
                        json!({
                            "name": v.planned.spec.name,
                            "state": s.state(),
                            "offset": s.offsets.lock().unwrap_or_else(|p| p.into_inner()).first().copied(),
                            "last_checkpoint_id": s.last_checkpoint_id.load(Ordering::Relaxed),
                            "records": s.records.load(Ordering::Relaxed),
                            "error": s.error(),
                        })
                    })
                    .collect();
                json!({"topic": task.topic, "partition": task.partition, "resumed_from": task.resumed_from, "fenced": task.hook.fenced(), "pipelines": pipelines})
            })
            .collect()
    })
}

async fn status(State(w): State<Arc<Worker>>) -> Json<Value> {
    let owned: Vec<Value> = w.owned().into_iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect();
    Json(json!({"mode": "worker", "group": w.group(), "worker": w.name(), "topics": w.topics(), "rebalances": w.rebalances(), "owned": owned, "partitions": partitions(&w)}))
}

async fn pipelines(State(w): State<Arc<Worker>>) -> Json<Value> {
    let owned = w.owned();
    let list: Vec<Value> = w
        .pipelines()
        .iter()
        .map(|p| {
            let parts: Vec<u32> = owned.iter().filter(|(t, _)| *t == p.plan.source).map(|(_, n)| *n).collect();
            json!({"name": p.spec.name, "source": p.plan.source, "partitions": parts})
        })
        .collect();
    Json(json!({"pipelines": list}))
}

async fn drain(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> Response {
    let w2 = w.clone();
    let n2 = name.clone();
    match tokio::task::spawn_blocking(move || w2.drain(&n2)).await {
        Ok(Ok(parts)) => {
            let parts: Vec<Value> = parts.into_iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect();
            Json(json!({"pipeline": name, "drained": parts})).into_response()
        }
        Ok(Err(e)) if e.starts_with("no pipeline") => (StatusCode::NOT_FOUND, Json(json!({"error": "not_found", "message": e}))).into_response(),
        Ok(Err(e)) if e.starts_with("partitions are being assigned") => (StatusCode::CONFLICT, Json(json!({"error": "rebalancing", "message": e}))).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "drain_failed", "message": e}))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "drain_failed", "message": e.to_string()}))).into_response(),
    }
}

async fn metrics_text(State(w): State<Arc<Worker>>) -> Response {
    metrics::gauge!(t::WORKER_PARTITIONS).set(w.owned().len() as f64);
    ([("content-type", "text/plain; version=0.0.4")], sluice_server::http::prometheus().render()).into_response()
}

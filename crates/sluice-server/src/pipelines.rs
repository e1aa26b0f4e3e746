//! Pipelines of the server: those declared in the configuration and those created at
//! runtime (persisted as `pipelines/<name>.json` in the data directory, so they resume
//! after a restart), planned against the topics' declared schemas and run by the engine.
//!
//! Routes:
//! - `GET /v1/pipelines`: `{"pipelines": [...]}`, each as below.
//! - `POST /v1/pipelines` with `{"name", "sql", <options>}` (the options of
//!   `sluice_stream::pipeline::PipelineSpec`; `sql` may also be `CREATE PIPELINE name AS
//!   SELECT …` without `name`): 201 and the pipeline; 400 `sql_error` with `line`,
//!   `column` and `message`, or `invalid_pipeline`; 409 `pipeline_exists`.
//! - `GET /v1/pipelines/{name}`: `{"name", "sql", "options", "source", "outputs", "schema",
//!   "configured", "state", "error", "offsets", "lag_records", "watermark", "records",
//!   "late_records", "duplicate_records", "invalid_records", "output_rows", "alerts",
//!   "state_keys", "open_windows", "state_bytes", "last_checkpoint_id",
//!   "last_checkpoint_at", "recent"}`.
//! - `DELETE /v1/pipelines/{name}`: stops it and forgets its state; its lake table and
//!   topics stay. 409 `pipeline_in_config` for configured pipelines.
//! - `POST /v1/pipelines/{name}/drain`: end of input: reads everything durable now,
//!   closes every window and answers after the output is committed.
//! - `GET /v1/pipelines/{name}/stream`: Server-Sent Events (see [`crate::live`]).
//! - `POST /v1/jobs/heart_rate/drain`: the earlier name of draining `heart_rate`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_core::time::format_ms;
use sluice_gateway::Gateway;
use sluice_log::Log;
use sluice_stream::engine::{Engine, PipelineView};
use sluice_stream::functions::FunctionConfig;
use sluice_stream::pipeline::{self, PipelineSpec, Planned, SpecError};
use crate::auth::{limits_of, Principal};
use sluice_stream::sql::Catalog;

use crate::live::LiveViews;

/// Why a pipeline request failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("pipeline {0:?} exists; drop it first or choose another name")]
    Exists(String),
    #[error("no pipeline {0:?}; list them with GET /v1/pipelines")]
    Unknown(String),
    #[error("pipeline {0:?} is declared in the configuration ([[pipelines]]); remove it there and restart")]
    Configured(String),
    #[error("the pipelines are not running ([stream] enabled = false)")]
    Disabled,
    #[error("{0}")]
    Failed(String),
    /// The principal's limits do not include a topic the pipeline reads or writes.
    #[error("{0}")]
    Forbidden(String),
}

impl PipelineError {
    pub(crate) fn response(&self) -> Response {
        let (status, code) = match self {
            PipelineError::Spec(SpecError::Sql(_)) => (StatusCode::BAD_REQUEST, "sql_error"),
            PipelineError::Spec(SpecError::Invalid { .. }) => (StatusCode::BAD_REQUEST, "invalid_pipeline"),
            PipelineError::Exists(_) => (StatusCode::CONFLICT, "pipeline_exists"),
            PipelineError::Unknown(_) => (StatusCode::NOT_FOUND, "unknown_pipeline"),
            PipelineError::Configured(_) => (StatusCode::CONFLICT, "pipeline_in_config"),
            PipelineError::Disabled => (StatusCode::SERVICE_UNAVAILABLE, "pipelines_disabled"),
            PipelineError::Failed(_) => (StatusCode::SERVICE_UNAVAILABLE, "pipeline_failed"),
            PipelineError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        };
        let mut err = json!({"code": code, "message": self.to_string()});
        if let PipelineError::Spec(SpecError::Sql(e)) = self {
            err["line"] = json!(e.line);
            err["column"] = json!(e.column);
            err["message"] = json!(e.to_string());
            err["reason"] = json!(e.message);
        }
        (status, Json(json!({"error": err}))).into_response()
    }
}

/// The server's pipelines.
pub struct Pipelines {
    pub engine: Option<Engine>,
    pub live: Arc<LiveViews>,
    log: Arc<Log>,
    gateway: Arc<Gateway>,
    functions: FunctionConfig,
    configured: BTreeSet<String>,
    dir: PathBuf,
    changes: Mutex<()>,
    /// Runtime pipelines that no longer plan (e.g. their topic was deleted): shown as
    /// failed, and droppable.
    broken: Mutex<std::collections::BTreeMap<String, (PipelineSpec, String)>>,
}

/// Runtime pipelines persisted in `dir`, in name order. Unreadable files are skipped with
/// a logged error.
pub fn load_runtime(dir: &std::path::Path) -> Vec<PipelineSpec> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    paths.sort();
    for path in paths {
        match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice::<PipelineSpec>(&b).map_err(|e| e.to_string())) {
            Ok(spec) => out.push(spec),
            Err(e) => tracing::error!(file = %path.display(), error = %e, "skipping an unreadable pipeline file"),
        }
    }
    out
}

impl Pipelines {
    pub fn new(engine: Option<Engine>, live: Arc<LiveViews>, log: Arc<Log>, gateway: Arc<Gateway>, functions: FunctionConfig, configured: BTreeSet<String>, dir: PathBuf) -> Self {
        Pipelines { engine, live, log, gateway, functions, configured, dir, changes: Mutex::new(()), broken: Mutex::new(Default::default()) }
    }

    /// Records a runtime pipeline that did not plan at start.
    pub fn add_broken(&self, spec: PipelineSpec, error: String) {
        self.broken.lock().unwrap_or_else(|p| p.into_inner()).insert(spec.name.clone(), (spec, error));
    }

    fn broken_json(spec: &PipelineSpec, error: &str) -> Value {
        json!({"name": spec.name, "sql": spec.sql.trim(), "outputs": spec.stream_names(), "configured": false, "state": "failed", "error": error})
    }

    /// Plans a pipeline against the topics' schemas now.
    pub fn plan(gateway: &Gateway, functions: &FunctionConfig, spec: &PipelineSpec) -> Result<Planned, SpecError> {
        let catalog = Catalog::new(gateway.schemas(), functions);
        pipeline::plan(spec, &catalog)
    }

    fn engine(&self) -> Result<&Engine, PipelineError> {
        self.engine.as_ref().ok_or(PipelineError::Disabled)
    }

    /// Creates, persists and starts a pipeline.
    pub fn create(&self, spec: PipelineSpec) -> Result<Value, PipelineError> {
        self.create_as(spec, None)
    }

    /// [`Pipelines::create`] for a user limited to certain topics (`(user, limits)`): the
    /// pipeline's source topic and output topics must all be within the limits, so that a
    /// pipeline cannot read or write a topic its creator may not.
    pub fn create_as(&self, spec: PipelineSpec, by: Option<(&str, &sluice_auth::Limits)>) -> Result<Value, PipelineError> {
        let _g = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let engine = self.engine()?;
        let broken = self.broken.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&spec.name);
        if engine.pipeline(&spec.name).is_some() || self.configured.contains(&spec.name) || broken {
            return Err(PipelineError::Exists(spec.name));
        }
        let planned = Self::plan(&self.gateway, &self.functions, &spec)?;
        if let Some((user, limits)) = by {
            if let Some(t) = topics_of(&planned).into_iter().find(|t| !limits.topic(t)) {
                return Err(PipelineError::Forbidden(limits.refusal(user, sluice_auth::Resource::Topic(&t))));
            }
        }
        for name in spec.stream_names() {
            if self.gateway.is_configured(&name) || self.gateway.writer_of(&name).is_some_and(|w| w != spec.name) {
                return Err(PipelineError::Spec(SpecError::Invalid { name: spec.name.clone(), reason: format!("its output topic {name:?} is another topic's name") }));
            }
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| PipelineError::Failed(format!("cannot create {}: {e}", self.dir.display())))?;
        let path = self.dir.join(format!("{}.json", spec.name));
        let tmp = self.dir.join(format!(".{}.json.tmp", spec.name));
        let write = std::fs::write(&tmp, serde_json::to_vec_pretty(&spec).unwrap_or_default())
            .and_then(|_| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
            .and_then(|_| std::fs::rename(&tmp, &path));
        write.map_err(|e| PipelineError::Failed(format!("cannot persist the pipeline in {}: {e}", path.display())))?;
        self.live.set_outputs(&spec.name, spec.stream_names());
        engine.add(planned).map_err(|e| PipelineError::Failed(sluice_stream::error_chain(&e)))?;
        Ok(self.describe(&spec.name).unwrap_or_default())
    }

    /// Stops and forgets a runtime pipeline.
    pub fn drop_pipeline(&self, name: &str) -> Result<(), PipelineError> {
        let _g = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if self.configured.contains(name) {
            return Err(PipelineError::Configured(name.into()));
        }
        let engine = self.engine()?;
        let path = self.dir.join(format!("{name}.json"));
        if self.broken.lock().unwrap_or_else(|p| p.into_inner()).remove(name).is_some() {
            std::fs::remove_file(&path).map_err(|e| PipelineError::Failed(format!("cannot remove {}: {e}", path.display())))?;
            return Ok(());
        }
        let view = engine.pipeline(name).ok_or_else(|| PipelineError::Unknown(name.into()))?;
        engine.drop_pipeline(name).map_err(|e| PipelineError::Failed(sluice_stream::error_chain(&e)))?;
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(PipelineError::Failed(format!("cannot remove {}: {e}", path.display())));
            }
        }
        for topic in view.planned.spec.stream_names() {
            self.gateway.set_writer(&topic, None);
        }
        self.live.forget(name);
        Ok(())
    }

    pub fn drain(&self, name: &str) -> Result<Value, PipelineError> {
        let engine = self.engine()?;
        engine.pipeline(name).ok_or_else(|| PipelineError::Unknown(name.into()))?;
        engine.drain(name).map_err(PipelineError::Failed)?;
        Ok(json!({"drained": true, "pipeline": self.describe(name)}))
    }

    pub fn list(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self.engine.as_ref().map(|e| e.pipelines().iter().map(|v| self.view_json(v, false)).collect()).unwrap_or_default();
        out.extend(self.broken.lock().unwrap_or_else(|p| p.into_inner()).values().map(|(s, e)| Self::broken_json(s, e)));
        out
    }

    pub fn describe(&self, name: &str) -> Option<Value> {
        if let Some((s, e)) = self.broken.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Some(Self::broken_json(s, e));
        }
        self.engine.as_ref()?.pipeline(name).map(|v| self.view_json(&v, true))
    }

    /// The topics a pipeline's rows come from and go to: its source, then its output
    /// topics (one per output stream). Empty for an unknown pipeline.
    pub fn data_topics(&self, name: &str) -> Vec<String> {
        self.engine.as_ref().and_then(|e| e.pipeline(name)).map(|v| topics_of(&v.planned)).unwrap_or_default()
    }

    /// Why the principal may not see a pipeline's rows (its live stream, its recent rows,
    /// and the heart-rate sessions): the first of [`Self::data_topics`] outside the
    /// principal's topic limits, so that no limit on topics is bypassed through a pipeline
    /// over them. `None`: allowed (or authentication is off).
    /// A player's HRmax from the `[heart_rate]` configuration, bpm.
    pub fn hr_max_bpm(&self, player: &str) -> f64 {
        self.functions.hr_max.get(player)
    }

    /// The topic a running pipeline reads.
    pub fn source_of(&self, name: &str) -> Option<String> {
        self.engine.as_ref().and_then(|e| e.pipeline(name)).map(|v| v.planned.plan.source.clone())
    }

    pub fn rows_refusal(&self, name: &str, who: &Option<Extension<Principal>>) -> Option<String> {
        let Extension(w) = who.as_ref().filter(|Extension(w)| w.limits.topics.is_some())?;
        let t = self.data_topics(name).into_iter().find(|t| !w.limits.topic(t))?;
        Some(format!("pipeline {name:?} reads or writes topic {t:?}: {}", w.limits.refusal(&w.user, sluice_auth::Resource::Topic(&t))))
    }

    /// Records in the source not read yet (sum over partitions).
    pub fn lag(&self, view: &PipelineView) -> u64 {
        let offsets = view.status.offsets.lock().map(|o| o.clone()).unwrap_or_default();
        self.log.topic(&view.planned.plan.source).map_or(0, |t| {
            t.partitions().iter().map(|p| p.high_watermark().saturating_sub(offsets.get(p.id() as usize).copied().unwrap_or(0))).sum()
        })
    }

    fn view_json(&self, v: &PipelineView, full: bool) -> Value {
        let s = &v.status;
        let spec = &v.planned.spec;
        let mut options = serde_json::to_value(spec).unwrap_or_default();
        if let Some(o) = options.as_object_mut() {
            o.remove("name");
            o.remove("sql");
        }
        let wm = s.watermark_ms.load(Ordering::Relaxed);
        let cp_ms = s.last_checkpoint_ms.load(Ordering::Relaxed);
        let mut out = json!({
            "name": spec.name,
            "sql": spec.sql.trim(),
            "options": options,
            "source": v.planned.plan.source,
            "outputs": spec.stream_names(),
            "configured": self.configured.contains(&spec.name),
            "state": s.state(),
            "error": s.error(),
            "offsets": s.offsets.lock().map(|o| o.clone()).unwrap_or_default(),
            "lag_records": self.lag(v),
            "watermark": (wm != i64::MIN && wm != 0).then(|| format_ms(wm)),
            "records": s.records.load(Ordering::Relaxed),
            "late_records": s.late.load(Ordering::Relaxed),
            "duplicate_records": s.duplicates.load(Ordering::Relaxed),
            "invalid_records": s.invalid.load(Ordering::Relaxed),
            "output_rows": s.output_rows.load(Ordering::Relaxed),
            "alerts": s.alerts.load(Ordering::Relaxed),
            "alerts_firing": s.alerts_firing.load(Ordering::Relaxed),
            "state_keys": s.keys.load(Ordering::Relaxed),
            "open_windows": s.open_windows.load(Ordering::Relaxed),
            "state_bytes": s.state_bytes.load(Ordering::Relaxed),
            "last_checkpoint_id": s.last_checkpoint_id.load(Ordering::Relaxed),
            "last_checkpoint_at": (cp_ms > 0).then(|| format_ms(cp_ms)),
        });
        if full {
            let schema: Vec<Value> = v.planned.plan.output_schema.fields().iter().map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()})).collect();
            out["schema"] = json!(schema);
            out["recent"] = json!(self.live.view(&spec.name).recent());
        }
        out
    }
}

/// The topics a planned pipeline reads and writes: its source, then one output topic per
/// output stream (named after it).
fn topics_of(planned: &Planned) -> Vec<String> {
    std::iter::once(planned.plan.source.clone()).chain(planned.spec.stream_names()).collect()
}

/// A `POST /v1/pipelines` body: a spec, where `name` may come from `CREATE PIPELINE`.
fn spec_from(mut body: Value) -> Result<PipelineSpec, String> {
    let obj = body.as_object_mut().ok_or("expected a JSON object {\"name\", \"sql\", ...}")?;
    if !obj.contains_key("name") {
        let sql = obj.get("sql").and_then(Value::as_str).unwrap_or_default();
        match sluice_stream::sql::parse_create_pipeline(sql) {
            Some(Ok((name, _))) => {
                obj.insert("name".into(), json!(name));
            }
            Some(Err(e)) => return Err(e),
            None => return Err("missing \"name\" (or write the SQL as CREATE PIPELINE name AS SELECT ...)".into()),
        }
    }
    serde_json::from_value(body).map_err(|e| format!("invalid pipeline: {e}"))
}

pub fn router(p: Arc<Pipelines>) -> Router {
    Router::new()
        .route("/v1/pipelines", get(list).post(create))
        .route("/v1/pipelines/{name}", get(describe).delete(drop_route))
        .route("/v1/pipelines/{name}/drain", post(drain))
        .route("/v1/pipelines/{name}/stream", get(stream))
        .route("/v1/jobs/heart_rate/drain", post(|s: State<Arc<Pipelines>>| async move { drain(s, Path(crate::live::HEART_RATE.to_string())).await }))
        .with_state(p)
}

/// Pipelines, less those the principal is not limited to.
async fn list(State(p): State<Arc<Pipelines>>, who: Option<Extension<Principal>>) -> Json<Value> {
    let limits = limits_of(&who);
    let mut all = p.list();
    all.retain(|v| v["name"].as_str().is_some_and(|n| limits.pipeline(n)));
    Json(json!({"pipelines": all}))
}

async fn create(State(p): State<Arc<Pipelines>>, who: Option<Extension<Principal>>, body: Result<Json<Value>, axum::extract::rejection::JsonRejection>) -> Response {
    let spec = match body.map_err(|e| e.body_text()).and_then(|Json(b)| spec_from(b)) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": {"code": "invalid_request", "message": e}}))).into_response(),
    };
    if let Some(Extension(w)) = who.as_ref().filter(|Extension(w)| !w.limits.pipeline(&spec.name)) {
        return PipelineError::Forbidden(w.limits.refusal(&w.user, sluice_auth::Resource::Pipeline(&spec.name))).response();
    }
    let by = who.map(|Extension(w)| (w.user, w.limits)).filter(|(_, l)| !l.is_unlimited());
    match tokio::task::spawn_blocking(move || p.create_as(spec, by.as_ref().map(|(u, l)| (u.as_str(), l)))).await {
        Ok(Ok(v)) => (StatusCode::CREATED, Json(v)).into_response(),
        Ok(Err(e)) => e.response(),
        Err(e) => PipelineError::Failed(e.to_string()).response(),
    }
}

/// A pipeline's status; its `recent` rows only when the principal may read its topics
/// ([`Pipelines::rows_refusal`]; otherwise `recent_hidden` says why).
async fn describe(State(p): State<Arc<Pipelines>>, who: Option<Extension<Principal>>, Path(name): Path<String>) -> Response {
    match p.describe(&name) {
        Some(mut v) => {
            if let (Some(why), Some(o)) = (p.rows_refusal(&name, &who), v.as_object_mut()) {
                o.remove("recent");
                o.insert("recent_hidden".into(), json!(why));
            }
            Json(v).into_response()
        }
        None => PipelineError::Unknown(name).response(),
    }
}

async fn drop_route(State(p): State<Arc<Pipelines>>, Path(name): Path<String>) -> Response {
    let n = name.clone();
    match tokio::task::spawn_blocking(move || p.drop_pipeline(&n)).await {
        Ok(Ok(())) => Json(json!({"dropped": name})).into_response(),
        Ok(Err(e)) => e.response(),
        Err(e) => PipelineError::Failed(e.to_string()).response(),
    }
}

async fn drain(State(p): State<Arc<Pipelines>>, Path(name): Path<String>) -> Response {
    match tokio::task::spawn_blocking(move || p.drain(&name)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => e.response(),
        Err(e) => PipelineError::Failed(e.to_string()).response(),
    }
}

#[derive(Deserialize)]
struct StreamQuery {
    #[serde(default)]
    early: bool,
    /// Same as the `Last-Event-ID` header (the header wins).
    last_event_id: Option<u64>,
    /// Send live events once per this many ms, with only each key's newest early results
    /// ([`crate::resume::respond`]); 0 or absent: each event as it comes.
    #[serde(default)]
    merge_ms: u64,
}

async fn stream(State(p): State<Arc<Pipelines>>, headers: axum::http::HeaderMap, who: Option<Extension<Principal>>, Path(name): Path<String>, Query(q): Query<StreamQuery>) -> Response {
    if p.engine.as_ref().and_then(|e| e.pipeline(&name)).is_none() {
        return PipelineError::Unknown(name).response();
    }
    if let Some(why) = p.rows_refusal(&name, &who) {
        return PipelineError::Forbidden(why).response();
    }
    let view = p.live.view(&name);
    let guard = q.early.then(|| view.early_guard());
    let resume = view.subscribe(crate::resume::last_event_id(&headers, q.last_event_id));
    crate::resume::respond(
        resume,
        move |e| {
            let _keep = &guard;
            e.name != "update" || q.early
        },
        |e| (e.name, e.data.to_string()),
        q.merge_ms,
    )
}

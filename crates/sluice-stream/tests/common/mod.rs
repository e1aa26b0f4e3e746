//! Running a pipeline for real in tests: the engine, a real log on disk as its source, and
//! sinks that keep what is published so the test can read it back.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use serde_json::Value;
use sluice_core::schema::RecordSchema;
use sluice_log::{Log, LogConfig, NewRecord, Topic};
use sluice_stream::decode::{SourceChunk, SourceRef};
use sluice_stream::engine::{Engine, EngineSettings};
use sluice_stream::functions::FunctionConfig;
use sluice_stream::pipeline::{self, PipelineSpec};
use sluice_stream::runner::{Connectors, RunSettings, Sink, Source};
use sluice_stream::sql::Catalog;
use sluice_stream::BoxError;

/// The window tests' topic: `{k: string (the key), v: <v>, ts: timestamp (the event time)}`,
/// `k` and `ts` required.
pub fn kvt_schema(v: sluice_core::schema::FieldType) -> RecordSchema {
    use sluice_core::schema::{FieldSpec, FieldType};
    let mut k = FieldSpec::new("k", FieldType::String);
    k.required = true;
    let mut ts = FieldSpec::new("ts", FieldType::Timestamp);
    ts.required = true;
    RecordSchema { fields: vec![k, FieldSpec::new("v", v), ts], event_time: Some("ts".into()), key: Some("k".into()) }
}

/// The shipped `heart_rate` pipeline: its SQL and options from `sluice-server/default.toml`,
/// with idle keys never fired by processing time (tests end their input by draining).
pub fn heart_rate_spec() -> PipelineSpec {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sluice-server/default.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let p = table["pipelines"].as_array().unwrap().iter().find(|p| p["name"].as_str() == Some("heart_rate")).unwrap().clone();
    let mut spec: PipelineSpec = p.try_into().unwrap();
    spec.idle_timeout_ms = Some(0);
    spec
}

/// A log topic as a source (as the server's adapter does).
pub struct LogSource(pub Arc<Topic>);

impl Source for LogSource {
    fn partition_count(&self) -> u32 {
        self.0.partition_count()
    }
    fn read(&self, partition: u32, offset: u64, max_records: usize) -> Result<SourceChunk, BoxError> {
        let (buf, refs) = self.0.partition(partition)?.read_values(offset, max_records, max_records.saturating_mul(256).clamp(1, 16 << 20))?;
        Ok(SourceChunk { buf, records: refs.into_iter().map(|r| SourceRef { offset: r.offset, timestamp_ms: r.timestamp_ms, start: r.start, len: r.len }).collect() })
    }
    fn start_offset(&self, partition: u32) -> u64 {
        self.0.partition(partition).map(|p| p.log_start_offset()).unwrap_or(0)
    }
    fn end_offset(&self, partition: u32) -> u64 {
        self.0.partition(partition).map(|p| p.high_watermark()).unwrap_or(0)
    }
    fn wait(&self, timeout: Duration) {
        let c = self.0.changes();
        c.wait(c.version(), timeout);
    }
}

/// Published batches per sink name.
pub type Published = Arc<Mutex<HashMap<String, Vec<RecordBatch>>>>;

struct Recording {
    name: String,
    staged: HashMap<u64, Vec<RecordBatch>>,
    published: Published,
}

impl Sink for Recording {
    fn stage(&mut self, id: u64, batches: &[RecordBatch]) -> Result<Vec<String>, BoxError> {
        self.staged.insert(id, batches.to_vec());
        Ok(vec![id.to_string()])
    }
    fn publish(&mut self, id: u64, _staged: &[String]) -> Result<(), BoxError> {
        if let Some(b) = self.staged.remove(&id) {
            self.published.lock().unwrap().entry(self.name.clone()).or_default().extend(b);
        }
        Ok(())
    }
}

pub struct TestConnectors {
    pub log: Arc<Log>,
    pub published: Published,
}

impl Connectors for TestConnectors {
    fn source(&self, topic: &str) -> Result<Box<dyn Source>, BoxError> {
        Ok(Box::new(LogSource(self.log.topic(topic).ok_or("no such topic")?)))
    }
    fn sink(&self, _pipeline: &str, name: &str, _retention_ms: i64) -> Result<Box<dyn Sink>, BoxError> {
        Ok(Box::new(Recording { name: name.into(), staged: HashMap::new(), published: self.published.clone() }))
    }
    fn discard_staged_after(&self, _id: u64) -> Result<(), BoxError> {
        Ok(())
    }
}

impl sluice_stream::runner::Observer for TestConnectors {}

/// A pipeline running over a topic of a real log in a temporary directory.
pub struct Running {
    pub dir: tempfile::TempDir,
    pub log: Arc<Log>,
    pub engine: Engine,
    pub published: Published,
    pub name: String,
    spec: PipelineSpec,
    topic: String,
    settings: EngineSettings,
}

/// Settings for tests: one record per poll, so records are processed in log order; state
/// changes are merged into snapshots as soon as they outgrow them (compaction runs often).
pub fn settings() -> EngineSettings {
    EngineSettings { checkpoint_interval_ms: 50, run: RunSettings { batch_records: 1, idle_timeout_ms: 0, compaction_min_bytes: 1, early_results_interval_ms: 500, live_early_results_interval_ms: 5 } }
}

fn append(t: &Topic, records: &[(u32, Value)]) {
    for (p, v) in records {
        let part = t.partition(*p).unwrap();
        let info = part.write(&[NewRecord::new(None, serde_json::to_vec(v).unwrap())], 0).unwrap();
        part.complete(&info).unwrap();
    }
}

/// Creates `topic` with `partitions`, appends `records` (partition, JSON value) in order,
/// and starts `spec` over it.
pub fn start(spec: PipelineSpec, topic: &str, schema: RecordSchema, partitions: u32, records: &[(u32, Value)], functions: &FunctionConfig) -> Running {
    start_with(settings(), spec, topic, schema, partitions, records, functions)
}

/// [`start`] with other engine settings.
pub fn start_with(settings: EngineSettings, spec: PipelineSpec, topic: &str, schema: RecordSchema, partitions: u32, records: &[(u32, Value)], functions: &FunctionConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(&dir.path().join("log"), LogConfig::default()).unwrap());
    let t = log.create_topic(topic, partitions).unwrap();
    append(&t, records);
    let published: Published = Default::default();
    let engine = launch(&dir, &log, &spec, topic, schema, functions, &published, &settings);
    Running { dir, log, engine, published, name: spec.name.clone(), spec, topic: topic.into(), settings }
}

#[allow(clippy::too_many_arguments)]
fn launch(dir: &tempfile::TempDir, log: &Arc<Log>, spec: &PipelineSpec, topic: &str, schema: RecordSchema, functions: &FunctionConfig, published: &Published, settings: &EngineSettings) -> Engine {
    let catalog = Catalog::new([(topic.to_string(), schema)].into_iter().collect(), functions);
    let planned = pipeline::plan(spec, &catalog).unwrap_or_else(|e| panic!("{e}"));
    let c = Arc::new(TestConnectors { log: log.clone(), published: published.clone() });
    Engine::start(dir.path().join("checkpoints"), vec![planned], c.clone(), c, settings.clone()).unwrap()
}

impl Running {
    /// Stops the engine cleanly (a last checkpoint), appends `more` records, and starts a
    /// new engine on the same data: it resumes from the checkpoint.
    pub fn restart(mut self, schema: RecordSchema, more: &[(u32, Value)], functions: &FunctionConfig) -> Running {
        self.engine.stop().unwrap();
        append(&self.log.topic(&self.topic).unwrap(), more);
        self.engine = launch(&self.dir, &self.log, &self.spec, &self.topic, schema, functions, &self.published, &self.settings);
        self
    }

    /// Appends records to the running pipeline's topic.
    pub fn append(&self, more: &[(u32, Value)]) {
        append(&self.log.topic(&self.topic).unwrap(), more);
    }

    /// Waits until the pipeline has read every record of its topic.
    pub fn wait_caught_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let view = self.engine.pipeline(&self.name).unwrap();
        let topic = self.log.topic(&view.planned.plan.source).unwrap();
        loop {
            if let Some(e) = view.status.error() {
                panic!("pipeline failed: {e}");
            }
            let offsets = view.status.offsets.lock().unwrap().clone();
            let done = topic.partitions().iter().all(|p| offsets.get(p.id() as usize).copied().unwrap_or(0) >= p.high_watermark());
            if done {
                return;
            }
            assert!(Instant::now() < deadline, "the pipeline did not catch up");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Rows published to a sink (`lake:<table>` or `topic:<topic>`).
    pub fn rows(&self, sink: &str) -> Vec<RecordBatch> {
        self.published.lock().unwrap().get(sink).cloned().unwrap_or_default()
    }

    pub fn status(&self) -> Arc<sluice_stream::runner::PipelineStatus> {
        self.engine.pipeline(&self.name).unwrap().status
    }
}

/// Rows as JSON objects, with timestamps as seconds after `base_ms` (numbers).
pub fn rows_json(batches: &[RecordBatch], base_ms: i64) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        let cols: Vec<arrow_array::ArrayRef> = b
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| match f.data_type() {
                arrow_schema::DataType::Timestamp(_, _) => arrow_cast::cast(c, &arrow_schema::DataType::Int64).unwrap(),
                _ => c.clone(),
            })
            .collect();
        let fields: Vec<arrow_schema::Field> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                arrow_schema::DataType::Timestamp(_, _) => arrow_schema::Field::new(f.name(), arrow_schema::DataType::Int64, f.is_nullable()),
                _ => f.as_ref().clone(),
            })
            .collect();
        let ts: Vec<String> = schema.fields().iter().filter(|f| matches!(f.data_type(), arrow_schema::DataType::Timestamp(_, _))).map(|f| f.name().clone()).collect();
        let batch = RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), cols).unwrap();
        let mut buf = Vec::new();
        {
            let mut w = arrow_json::ArrayWriter::new(&mut buf);
            w.write(&batch).unwrap();
            w.finish().unwrap();
        }
        let rows: Vec<Value> = if buf.is_empty() { vec![] } else { serde_json::from_slice(&buf).unwrap() };
        for mut r in rows {
            for name in &ts {
                if let Some(v) = r.get(name).and_then(Value::as_i64) {
                    r[name] = serde_json::json!((v - base_ms) as f64 / 1000.0);
                }
            }
            out.push(r);
        }
    }
    out
}

/// Every state file of the windowed aggregates under `dir` (a checkpoints directory).
pub fn window_state_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("window_aggregate")) {
                out.push(p);
            }
        }
    }
    out
}

//! Runs one pipeline on its own thread: reads its topic from the checkpointed offsets,
//! decodes, pushes batches through the operator chain, keeps per-partition watermarks,
//! buffers output until the next checkpoint barrier, and publishes it once the engine has
//! committed that checkpoint (see [`crate::checkpoint`] and [`crate::engine`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde_json::{json, Value};
use sluice_core::telemetry as t;
use sluice_core::time::{format_ms, now_ms};

use crate::checkpoint::PipelineCheckpoint;
use crate::decode::{BatchDecoder, SourceChunk};
use crate::reader::{Fetched, ReadAhead, Waker};
use crate::operator::{Chain, Ctx, Hook, Rows, SideOutput};
use crate::pipeline::{Planned, StartPosition, ALERTS_TOPIC};
use crate::state::{self, ClosedStateFile, StateFiles, StateWriter};
use crate::state_sync::Syncer;
use crate::{BoxError, StreamError};

/// A partitioned, offset-addressed input (a topic of the log, seen through a trait).
pub trait Source: Send + Sync {
    fn partition_count(&self) -> u32;
    /// Records from `offset` on, about `max_records` (a source may return more, in whole
    /// stored batches); empty when there are none yet.
    fn read(&self, partition: u32, offset: u64, max_records: usize) -> Result<SourceChunk, BoxError>;
    /// The first readable offset (the log start offset).
    fn start_offset(&self, partition: u32) -> u64;
    /// One past the last readable offset (the high watermark).
    fn end_offset(&self, partition: u32) -> u64;
    /// Blocks until new data may be readable, or `timeout` passes.
    fn wait(&self, timeout: Duration);
    /// The partition number records of partition `index` carry in `_partition` (a source
    /// that shows one partition of a topic as its only one gives the topic's number).
    fn partition_id(&self, index: u32) -> u32 {
        index
    }
}

/// A transactional output: stage at a checkpoint, publish once it is committed.
pub trait Sink: Send {
    /// Writes the rows of checkpoint `id` where readers cannot see them; returns handles
    /// for [`Sink::publish`], recorded in the manifest. May be called again after a crash.
    fn stage(&mut self, id: u64, batches: &[RecordBatch]) -> Result<Vec<String>, BoxError>;
    /// Makes staged output visible. Idempotent: output already published is skipped.
    fn publish(&mut self, id: u64, staged: &[String]) -> Result<(), BoxError>;
}

/// How pipelines reach the outside world (implemented by the server over the log and lake).
pub trait Connectors: Send + Sync {
    fn source(&self, topic: &str) -> Result<Box<dyn Source>, BoxError>;
    /// A sink by name: `lake:<table>` or `topic:<topic>`, written by `pipeline`.
    /// `retention_ms` applies to lake tables (-1: forever).
    fn sink(&self, pipeline: &str, name: &str, retention_ms: i64) -> Result<Box<dyn Sink>, BoxError>;
    /// Removes output staged for checkpoints after `id` (never committed).
    fn discard_staged_after(&self, id: u64) -> Result<(), BoxError>;
    /// Announces a pipeline's output topic and its schema (so other pipelines can read it).
    fn register_output(&self, _pipeline: &str, _topic: &str, _schema: &SchemaRef) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Who learns of a pipeline's results.
pub trait Observer: Send + Sync {
    /// Rows of output stream `stream`, once their checkpoint is committed and published.
    fn committed(&self, _pipeline: &str, _stream: usize, _batches: &[RecordBatch]) {}
    /// Early (not final) results of keys that changed.
    fn early(&self, _pipeline: &str, _rows: &Rows) {}
    /// Alerts, once committed.
    fn alerts(&self, _pipeline: &str, _alerts: &[Value]) {}
    /// Whether anyone wants early results of this pipeline now.
    fn wants_early(&self, _pipeline: &str) -> bool {
        false
    }
}

/// Commands to a running pipeline.
pub(crate) enum Cmd {
    Barrier { id: u64, reply: Sender<Result<PipelineCheckpoint, String>> },
    Commit { id: u64 },
    Drain { reply: Sender<Result<(), String>> },
    Exit,
}

/// Progress of a pipeline, readable from other threads.
#[derive(Debug, Default)]
pub struct PipelineStatus {
    /// The pipeline's name (for its state-change events).
    pub name: String,
    /// `starting`, `running`, `draining`, `failed` or `stopped`.
    pub state: Mutex<&'static str>,
    pub error: Mutex<Option<String>>,
    pub offsets: Mutex<Vec<u64>>,
    pub watermark_ms: AtomicI64,
    pub records: AtomicU64,
    pub late: AtomicU64,
    pub duplicates: AtomicU64,
    pub invalid: AtomicU64,
    pub output_rows: AtomicU64,
    /// Alerts fired (state `firing`) since the pipeline started.
    pub alerts: AtomicU64,
    /// (rule, key) pairs whose alert fires now (set at each checkpoint, moved by each alert).
    pub alerts_firing: AtomicU64,
    pub last_checkpoint_id: AtomicU64,
    pub last_checkpoint_ms: AtomicI64,
    pub state_bytes: AtomicU64,
    pub keys: AtomicU64,
    pub open_windows: AtomicU64,
    /// Set when there is something to checkpoint.
    pub dirty: AtomicBool,
}

impl PipelineStatus {
    /// Sets the state; a change is published as a `pipeline_state` event
    /// ([`sluice_core::events`]).
    pub fn set_state(&self, s: &'static str) {
        let previous = std::mem::replace(&mut *self.state.lock().unwrap_or_else(|p| p.into_inner()), s);
        if previous != s {
            let previous = if previous.is_empty() { None } else { Some(previous) };
            let data = serde_json::json!({"pipeline": self.name, "state": s, "previous": previous, "error": self.error()});
            sluice_core::events::global().publish("pipeline_state", data);
        }
    }
    pub fn state(&self) -> &'static str {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn fail(&self, e: String) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        self.set_state("failed");
    }
}

/// Settings of the runtime (the `[stream]` config table). Times in ms.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub batch_records: usize,
    pub idle_timeout_ms: i64,
    /// Merge a state's deltas into a snapshot once they exceed it and this many bytes.
    pub compaction_min_bytes: u64,
    /// Early results at most this often while nobody watches live ([`Observer::wants_early`]
    /// false), ms.
    pub early_results_interval_ms: u64,
    /// Early results at most this often while someone watches live, ms.
    pub live_early_results_interval_ms: u64,
}

enum SinkRef {
    Stream(usize, usize),
    Late,
    Alerts,
}

struct Pending {
    publishes: Vec<(SinkRef, Vec<String>)>,
    streams: Vec<(usize, Vec<RecordBatch>)>,
    alerts: Vec<Value>,
}

type Compaction = Receiver<Result<(u64, String, u64), String>>;

/// Chunks the readers may hold ahead of the pipeline, beyond one per reader (each at most
/// `batch_records`).
const READ_AHEAD: usize = 10;

/// One pipeline's loop.
pub(crate) struct Runner {
    p: Planned,
    source: Arc<dyn Source>,
    reader: ReadAhead,
    chain: Chain,
    sinks: Vec<Vec<(String, Box<dyn Sink>)>>,
    late_sink: (String, Box<dyn Sink>),
    alert_sink: (String, Box<dyn Sink>),
    buffers: Vec<Vec<RecordBatch>>,
    late: Vec<String>,
    alerts: Vec<Value>,
    offsets: Vec<u64>,
    part_max: Vec<i64>,
    part_last_input: Vec<i64>,
    watermark: i64,
    files: Vec<StateFiles>,
    dir: PathBuf,
    pending: BTreeMap<u64, Pending>,
    compactions: Vec<Option<Compaction>>,
    /// Per operator, the next change file while state is written ahead of its checkpoint
    /// ([`Operator::presnapshot`]), with the keys written to it so far.
    ahead: Vec<Option<(state::StateFileWriter, u64)>>,
    draining: Option<(Vec<u64>, Sender<Result<(), String>>)>,
    drain_waiters: Vec<(u64, Sender<Result<(), String>>)>,
    last_barrier: u64,
    /// Makes each barrier's change files durable off this thread, then answers it.
    syncer: Syncer,
    status: Arc<PipelineStatus>,
    observer: Arc<dyn Observer>,
    request_checkpoint: Arc<dyn Fn() + Send + Sync>,
    settings: RunSettings,
    last_early: Instant,
    /// Whether records came since the last round of early results began.
    input_since_early: bool,
    last_timer: Instant,
    /// This poll's chunks: (partition, index of its first record among the poll's records, chunk).
    polled: Vec<(u32, u32, SourceChunk)>,
}

fn late_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("json", DataType::Utf8, false)]))
}

impl Runner {
    /// Prepares a pipeline: its source, sinks, chain, and state from `resume` (None: fresh).
    pub(crate) fn new(
        p: Planned,
        resume: Option<PipelineCheckpoint>,
        connectors: &dyn Connectors,
        dir: PathBuf,
        observer: Arc<dyn Observer>,
        request_checkpoint: Arc<dyn Fn() + Send + Sync>,
        settings: RunSettings,
        status: Arc<PipelineStatus>,
    ) -> Result<Runner, StreamError> {
        let name = p.spec.name.clone();
        let source: Arc<dyn Source> = Arc::from(connectors.source(&p.plan.source).map_err(StreamError::Source)?);
        let mut chain = crate::pipeline::build_chain(&p, settings.idle_timeout_ms)?;
        let mut sinks = Vec::new();
        for (stream, (table, retention)) in p.spec.stream_names().into_iter().zip(p.spec.stream_retention()).enumerate() {
            let mut s = Vec::new();
            if p.spec.lake {
                let n = format!("lake:{table}");
                s.push((n.clone(), connectors.sink(&name, &n, retention).map_err(StreamError::Sink)?));
            }
            if p.spec.topic {
                let n = format!("topic:{table}");
                s.push((n.clone(), connectors.sink(&name, &n, -1).map_err(StreamError::Sink)?));
                connectors.register_output(&name, &table, &p.plan.output_schema).map_err(StreamError::Sink)?;
            }
            let _ = stream;
            sinks.push(s);
        }
        let late_name = format!("topic:{}", p.spec.late_topic());
        let late_sink = (late_name.clone(), connectors.sink(&name, &late_name, -1).map_err(StreamError::Sink)?);
        let alert_name = format!("topic:{ALERTS_TOPIC}");
        let alert_sink = (alert_name.clone(), connectors.sink(&name, &alert_name, -1).map_err(StreamError::Sink)?);
        let parts = source.partition_count() as usize;
        let (mut offsets, mut part_max, mut files) = (vec![0; parts], vec![i64::MIN; parts], vec![StateFiles::default(); chain.ops.len()]);
        match resume {
            Some(cp) => {
                for (i, o) in cp.offsets.iter().enumerate().take(parts) {
                    offsets[i] = *o;
                }
                for (i, m) in cp.partition_max_event_ms.iter().enumerate().take(parts) {
                    part_max[i] = *m;
                }
                for (i, f) in cp.operators.into_iter().enumerate().take(files.len()) {
                    let mut loaded = Vec::new();
                    for path in f.all() {
                        loaded.push(state::read_file(&dir.join(path))?);
                    }
                    chain.ops[i].restore(&loaded)?;
                    files[i] = f;
                }
            }
            None => {
                for (p_i, o) in offsets.iter_mut().enumerate() {
                    *o = match p.spec.start {
                        StartPosition::Earliest => source.start_offset(p_i as u32),
                        StartPosition::Latest => source.end_offset(p_i as u32),
                    };
                }
            }
        }
        let now = now_ms();
        let streams = 1 + p.spec.rollups.len();
        let n_ops = chain.ops.len();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        remove_unnamed_change_files(&dir, &name);
        let syncer = Syncer::start(&name)?;
        let reader = ReadAhead::start(source.clone(), &BatchDecoder::new(p.plan.record.clone()), &offsets, settings.batch_records, cores, READ_AHEAD + cores, &p.spec.name)?;
        Ok(Runner {
            p,
            source,
            reader,
            chain,
            sinks,
            late_sink,
            alert_sink,
            buffers: vec![Vec::new(); streams],
            late: Vec::new(),
            alerts: Vec::new(),
            offsets,
            part_max,
            part_last_input: vec![now; parts],
            watermark: i64::MIN,
            files,
            dir,
            pending: BTreeMap::new(),
            compactions: (0..n_ops).map(|_| None).collect(),
            ahead: (0..n_ops).map(|_| None).collect(),
            draining: None,
            drain_waiters: Vec::new(),
            last_barrier: 0,
            syncer,
            status,
            observer,
            request_checkpoint,
            settings,
            last_early: Instant::now(),
            input_since_early: false,
            last_timer: Instant::now(),
            polled: Vec::new(),
        })
    }

    fn name(&self) -> &str {
        &self.p.spec.name
    }

    /// Ends the pipeline thread's wait for input, so that a command sent to it is handled
    /// at once (without it, a barrier or a commit could wait out a whole poll).
    pub(crate) fn waker(&self) -> Waker {
        self.reader.waker()
    }

    /// Runs until [`Cmd::Exit`] or an error (then the status says why).
    pub(crate) fn run(mut self, cmds: Receiver<Cmd>) {
        self.status.set_state("running");
        self.publish_status();
        if let Err(e) = self.run_loop(&cmds) {
            let chain = crate::error_chain(&e);
            tracing::error!(pipeline = %self.name(), error = %chain, "the pipeline stopped; restart sluice to resume it from its last checkpoint");
            self.status.fail(chain.clone());
            if let Some((_, reply)) = self.draining.take() {
                let _ = reply.send(Err(chain.clone()));
            }
            for (_, w) in self.drain_waiters.drain(..) {
                let _ = w.send(Err(chain.clone()));
            }
            // Keep answering barriers (with the error) until told to exit.
            while let Ok(cmd) = cmds.recv() {
                match cmd {
                    Cmd::Barrier { reply, .. } => {
                        let _ = reply.send(Err(chain.clone()));
                    }
                    Cmd::Drain { reply } => {
                        let _ = reply.send(Err(chain.clone()));
                    }
                    Cmd::Exit => break,
                    Cmd::Commit { .. } => {}
                }
            }
        }
    }

    fn run_loop(&mut self, cmds: &Receiver<Cmd>) -> Result<(), StreamError> {
        loop {
            self.reader.clear_woken();
            loop {
                match cmds.try_recv() {
                    Ok(Cmd::Exit) | Err(TryRecvError::Disconnected) => {
                        self.status.set_state("stopped");
                        return Ok(());
                    }
                    Ok(cmd) => self.handle(cmd)?,
                    Err(TryRecvError::Empty) => break,
                }
            }
            if let Some(e) = self.syncer.failure() {
                return Err(StreamError::Checkpoint { path: self.dir.join("state").join(self.name()), reason: e });
            }
            self.poll(self.poll_wait())?;
            // A command waiting (a barrier) goes first; the timers run on the next round.
            if !self.reader.woken() {
                self.after_poll()?;
            }
            if let Some((targets, _)) = &self.draining {
                let reached = targets.iter().enumerate().all(|(p, &end)| self.offsets.get(p).copied().unwrap_or(0) >= end);
                if reached {
                    self.finish_drain()?;
                }
            }
        }
    }

    fn handle(&mut self, cmd: Cmd) -> Result<(), StreamError> {
        match cmd {
            Cmd::Barrier { id, reply } => match self.barrier(id) {
                Ok((cp, files)) => self.syncer.submit(files, cp, reply),
                Err(e) => {
                    let _ = reply.send(Err(crate::error_chain(&e)));
                    return Err(e);
                }
            },
            Cmd::Commit { id } => self.commit(id)?,
            Cmd::Drain { reply } => {
                let targets = (0..self.source.partition_count()).map(|p| self.source.end_offset(p)).collect();
                self.status.set_state("draining");
                self.draining = Some((targets, reply));
            }
            Cmd::Exit => {}
        }
        Ok(())
    }

    fn ctx_parts(&self) -> (i64, bool) {
        let caught_up = (0..self.source.partition_count()).all(|p| self.offsets.get(p as usize).copied().unwrap_or(0) >= self.source.end_offset(p));
        (now_ms(), caught_up)
    }

    /// Takes what the reader thread has decoded (waiting up to `wait` for the first batch)
    /// and pushes it through the chain, one source batch at a time.
    fn poll(&mut self, wait: Duration) -> Result<(), StreamError> {
        let parts = self.source.partition_count() as usize;
        if self.offsets.len() < parts {
            self.offsets.resize(parts, 0);
            self.part_max.resize(parts, i64::MIN);
            self.part_last_input.resize(parts, now_ms());
        }
        let mut total = 0;
        // At most one batch per partition per poll, so the watermark advances between a
        // partition's batches (as when reading each partition once per poll).
        let mut seen = vec![false; parts.max(1)];
        let mut wait = Some(wait);
        while !self.reader.woken() {
            let Some(f) = self.reader.next(&seen, wait.take())? else { break };
            let pi = f.partition as usize;
            if seen.len() <= pi {
                seen.resize(pi + 1, false);
            }
            seen[pi] = true;
            total += self.process_fetched(f)?;
        }
        if total > 0 {
            self.status.records.fetch_add(total as u64, Ordering::Relaxed);
            self.status.dirty.store(true, Ordering::Release);
            metrics::counter!(t::PIPELINE_RECORDS_TOTAL, "pipeline" => self.p.spec.name.clone()).increment(total as u64);
        }
        self.polled.clear();
        self.publish_status();
        Ok(())
    }

    /// Pushes one decoded source batch through the chain.
    fn process_fetched(&mut self, f: Fetched) -> Result<usize, StreamError> {
        let Fetched { partition: p, chunk, decoded, .. } = f;
        let pi = p as usize;
        let windowed = self.p.plan.windowed;
        let time_col = self.p.plan.window.as_ref().map(|w| w.time_column);
        let n = chunk.records.len();
        let base = self.polled.last().map_or(0, |(_, b, c)| b + c.records.len() as u32);
        if !decoded.invalid.is_empty() {
            self.status.invalid.fetch_add(decoded.invalid.len() as u64, Ordering::Relaxed);
            metrics::counter!(t::PIPELINE_INVALID_RECORDS_TOTAL, "pipeline" => self.p.spec.name.clone()).increment(decoded.invalid.len() as u64);
            let (i, e) = &decoded.invalid[0];
            tracing::debug!(pipeline = %self.p.spec.name, partition = p, offset = chunk.records[*i].offset, error = %e, "skipping records that do not match the topic's schema");
        }
        let mut batch = decoded.batch;
        let mut event_ms = None;
        if let Some(tc) = time_col {
            let times = batch.column(tc).as_any().downcast_ref::<TimestampMillisecondArray>().map(|a| Int64Array::new(a.values().clone(), a.nulls().cloned()));
            if let Some(times) = &times {
                let max = times.iter().flatten().max().unwrap_or(i64::MIN);
                self.part_max[pi] = self.part_max[pi].max(max);
            }
            event_ms = times;
        }
        if windowed {
            batch = with_window_placeholders(batch)?;
        }
        let origin = UInt32Array::from_iter_values(decoded.origin.iter().map(|o| base + o));
        if let Some(last) = chunk.records.last() {
            self.offsets[pi] = last.offset + 1;
        }
        self.polled.push((p, base, chunk));
        self.part_last_input[pi] = now_ms();
        self.input_since_early = true;
        let rows = Rows { stream: 0, batch, event_ms, origin: Some(origin), early: None };
        let mut side = Vec::new();
        let mut ctx = Ctx { now_ms: now_ms(), watermark_ms: self.watermark, caught_up: false, side: &mut side };
        let out = self.chain.push(0, rows, &mut ctx)?;
        self.route(out, side);
        Ok(n)
    }

    /// Advances the watermark and runs timers and early results.
    fn after_poll(&mut self) -> Result<(), StreamError> {
        let (now, caught_up) = self.ctx_parts();
        let idle = self.p.spec.idle_timeout_ms.unwrap_or(self.settings.idle_timeout_ms);
        let ooo = self.p.spec.max_out_of_orderness_ms;
        let parts = self.offsets.len();
        let active: Vec<usize> = (0..parts)
            .filter(|&p| {
                let behind = self.offsets[p] < self.source.end_offset(p as u32);
                behind || idle <= 0 || now - self.part_last_input[p] < idle
            })
            .collect();
        let maxes = |ps: &mut dyn Iterator<Item = usize>| ps.map(|p| self.part_max[p]).collect::<Vec<_>>();
        let wm_base = if active.is_empty() { maxes(&mut (0..parts)).into_iter().max() } else { maxes(&mut active.into_iter()).into_iter().min() };
        let wm = wm_base.filter(|m| *m != i64::MIN).map_or(i64::MIN, |m| m.saturating_sub(ooo));
        let mut side = Vec::new();
        if wm > self.watermark {
            self.watermark = wm;
            self.status.watermark_ms.store(wm, Ordering::Relaxed);
            let mut ctx = Ctx { now_ms: now, watermark_ms: wm, caught_up, side: &mut side };
            let out = self.chain.hook(Hook::Watermark, &mut ctx)?;
            self.route(out, std::mem::take(&mut side));
        }
        if self.last_timer.elapsed() >= Duration::from_millis(100) {
            self.last_timer = Instant::now();
            let mut ctx = Ctx { now_ms: now, watermark_ms: self.watermark, caught_up, side: &mut side };
            let out = self.chain.hook(Hook::Timer, &mut ctx)?;
            self.route(out, std::mem::take(&mut side));
            self.write_ahead(now)?;
        }
        // A round of early results (of the keys touched since the last round) every
        // `early_results_interval_ms`, or `live_early_results_interval_ms` while someone
        // watches live, in slices: one per poll while an operator has keys left, so that a
        // barrier never waits behind a whole round.
        let Some(interval) = self.early_interval() else { return Ok(()) };
        let pending = self.chain.early_pending();
        if pending || self.last_early.elapsed() >= interval {
            if !pending {
                self.last_early = Instant::now();
                self.input_since_early = false;
            }
            let mut ctx = Ctx { now_ms: now, watermark_ms: self.watermark, caught_up, side: &mut side };
            let out = self.chain.hook(Hook::Early, &mut ctx)?;
            self.route(out, side);
        }
        Ok(())
    }

    /// How often early results are due: every `live_early_results_interval_ms` while
    /// someone watches the pipeline live, else every `early_results_interval_ms` for a
    /// pipeline with `early_results`; None when neither.
    fn early_interval(&self) -> Option<Duration> {
        if self.observer.wants_early(&self.p.spec.name) {
            Some(Duration::from_millis(self.settings.live_early_results_interval_ms))
        } else {
            self.p.spec.early_results.then(|| Duration::from_millis(self.settings.early_results_interval_ms))
        }
    }

    /// How long a poll may wait for input: 10 ms, or less when input came since the last
    /// round of early results and the next round is due sooner, so that a lone record on
    /// an idle pipeline is shown when its round is due, not a whole wait later.
    fn poll_wait(&self) -> Duration {
        const WAIT: Duration = Duration::from_millis(10);
        match self.early_interval() {
            Some(i) if self.input_since_early => i.saturating_sub(self.last_early.elapsed()).min(WAIT),
            _ => WAIT,
        }
    }

    /// Sends chain output and side outputs where they belong.
    fn route(&mut self, out: Vec<Rows>, side: Vec<SideOutput>) {
        for rows in out {
            if rows.early.is_some() {
                self.observer.early(&self.p.spec.name, &rows);
            } else if rows.num_rows() > 0 {
                if let Some(b) = self.buffers.get_mut(rows.stream) {
                    b.push(rows.batch);
                    self.status.dirty.store(true, Ordering::Release);
                }
            }
        }
        for s in side {
            match s {
                SideOutput::Late { origin, event_ms, watermark_ms, reason } => {
                    self.status.late.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(t::PIPELINE_LATE_RECORDS_TOTAL, "pipeline" => self.p.spec.name.clone()).increment(1);
                    let found = self.polled.iter().rev().find(|(_, b, _)| *b <= origin).and_then(|(p, b, c)| {
                        let i = (origin - b) as usize;
                        c.records.get(i).map(|r| (*p, r.offset, String::from_utf8_lossy(c.value(i)).to_string()))
                    });
                    let v = json!({
                        "pipeline": self.p.spec.name, "reason": reason, "topic": self.p.plan.source,
                        "partition": found.as_ref().map(|f| f.0), "offset": found.as_ref().map(|f| f.1),
                        "event_time": event_ms.map(format_ms),
                        "watermark": (watermark_ms != i64::MIN).then(|| format_ms(watermark_ms)),
                        "record": found.map(|f| f.2),
                    });
                    self.late.push(v.to_string());
                    self.status.dirty.store(true, Ordering::Release);
                }
                SideOutput::Duplicate { .. } => {
                    self.status.duplicates.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(t::PIPELINE_DUPLICATE_RECORDS_TOTAL, "pipeline" => self.p.spec.name.clone()).increment(1);
                }
                SideOutput::Alert(v) => {
                    if v.get("state").and_then(|s| s.as_str()) == Some("resolved") {
                        let _ = self.status.alerts_firing.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
                    } else {
                        self.status.alerts.fetch_add(1, Ordering::Relaxed);
                        self.status.alerts_firing.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(t::PIPELINE_ALERTS_TOTAL, "pipeline" => self.p.spec.name.clone()).increment(1);
                    }
                    self.alerts.push(v);
                    self.status.dirty.store(true, Ordering::Release);
                }
            }
        }
    }

    fn finish_drain(&mut self) -> Result<(), StreamError> {
        let (now, caught_up) = self.ctx_parts();
        let mut side = Vec::new();
        let mut ctx = Ctx { now_ms: now, watermark_ms: self.watermark, caught_up, side: &mut side };
        let out = self.chain.hook(Hook::Drain, &mut ctx)?;
        self.route(out, side);
        self.status.dirty.store(true, Ordering::Release);
        if let Some((_, reply)) = self.draining.take() {
            self.drain_waiters.push((self.last_barrier, reply));
        }
        self.status.set_state("running");
        (self.request_checkpoint)();
        Ok(())
    }

    /// Appends the state the operators write ahead of the next checkpoint to its change
    /// files (still under their temporary names).
    fn write_ahead(&mut self, now: i64) -> Result<(), StreamError> {
        let name = self.p.spec.name.clone();
        for (i, op) in self.chain.ops.iter_mut().enumerate() {
            let (mut w, keys) = next_change_file(&self.dir, &mut self.ahead[i], &name, i, op.name(), self.last_barrier);
            op.presnapshot(now, &mut w)?;
            let keys = keys + w.changed_keys;
            self.ahead[i] = w.into_file().map(|f| (f, keys));
        }
        Ok(())
    }

    /// Checkpoint barrier: write changed state, stage buffered output. The change files
    /// come back closed but not yet durable, with their names; the [`Syncer`] fsyncs them
    /// before the checkpoint is answered.
    fn barrier(&mut self, id: u64) -> Result<(PipelineCheckpoint, Vec<(ClosedStateFile, PathBuf)>), StreamError> {
        let started = Instant::now();
        let r = self.barrier_sync(id);
        metrics::histogram!(t::PIPELINE_CHECKPOINT_PAUSE_SECONDS, "pipeline" => self.p.spec.name.clone()).record(started.elapsed().as_secs_f64());
        r
    }

    /// The synchronous part of [`Runner::barrier`], during which the pipeline takes no input.
    fn barrier_sync(&mut self, id: u64) -> Result<(PipelineCheckpoint, Vec<(ClosedStateFile, PathBuf)>), StreamError> {
        // The change file of this barrier (when none was written ahead) is named for the
        // previous one, as files written ahead are, and the next write ahead for this one,
        // so a file still being synced is never opened again.
        let seq = self.last_barrier;
        self.last_barrier = id;
        let mut unsynced = Vec::new();
        self.status.dirty.store(false, Ordering::Release);
        let name = self.p.spec.name.clone();
        // Adopt finished compactions.
        for (i, c) in self.compactions.iter_mut().enumerate() {
            let Some(rx) = c else { continue };
            match rx.try_recv() {
                Ok(Ok((upto, snapshot, bytes))) => {
                    let f = &mut self.files[i];
                    let keep: Vec<String> = f.deltas.iter().filter(|d| delta_id(d).is_some_and(|x| x > upto)).cloned().collect();
                    let kept_bytes: u64 = keep.iter().filter_map(|d| std::fs::metadata(self.dir.join(d)).ok()).map(|m| m.len()).sum();
                    *f = StateFiles { snapshot: Some(snapshot), deltas: keep, snapshot_bytes: bytes, delta_bytes: kept_bytes };
                    *c = None;
                }
                Ok(Err(e)) => {
                    tracing::warn!(pipeline = %name, error = %e, "state compaction failed; keeping the change files");
                    *c = None;
                }
                Err(TryRecvError::Disconnected) => *c = None,
                Err(TryRecvError::Empty) => {}
            }
        }
        let mut written = 0u64;
        let mut changed_keys = 0u64;
        let mut state_keys = 0;
        let mut open = 0;
        let mut firing = 0;
        for (i, op) in self.chain.ops.iter_mut().enumerate() {
            let s = op.stats();
            state_keys += s.keys;
            open += s.open_windows;
            firing += s.firing_alerts;
            let (mut w, ahead_keys) = next_change_file(&self.dir, &mut self.ahead[i], &name, i, op.name(), seq);
            op.snapshot(&mut w)?;
            changed_keys += w.changed_keys + ahead_keys;
            // A file exists when state was written ahead or now.
            if let Some(file) = w.into_file() {
                let rel = format!("state/{name}/{i}-{}/delta-{id:020}.arrow", op.name());
                let closed = file.close()?;
                let size = closed.size;
                unsynced.push((closed, self.dir.join(&rel)));
                self.files[i].deltas.push(rel);
                self.files[i].delta_bytes += size;
                written += size;
            }
        }
        metrics::counter!(t::CHECKPOINT_WRITTEN_BYTES_TOTAL).increment(written);
        self.status.keys.store(state_keys, Ordering::Relaxed);
        self.status.open_windows.store(open, Ordering::Relaxed);
        self.status.alerts_firing.store(firing, Ordering::Relaxed);
        self.status.state_bytes.store(self.files.iter().map(|f| f.snapshot_bytes + f.delta_bytes).sum(), Ordering::Relaxed);
        let mut staged = BTreeMap::new();
        let mut pending = Pending { publishes: Vec::new(), streams: Vec::new(), alerts: Vec::new() };
        for (s, batches) in self.buffers.iter_mut().enumerate() {
            if batches.is_empty() {
                continue;
            }
            let batches = std::mem::take(batches);
            for (k, (sink_name, sink)) in self.sinks[s].iter_mut().enumerate() {
                let handles = sink.stage(id, &batches).map_err(StreamError::Sink)?;
                staged.insert(sink_name.clone(), handles.clone());
                pending.publishes.push((SinkRef::Stream(s, k), handles));
            }
            pending.streams.push((s, batches));
        }
        if !self.late.is_empty() {
            let batch = json_batch(std::mem::take(&mut self.late))?;
            let handles = self.late_sink.1.stage(id, &[batch]).map_err(StreamError::Sink)?;
            staged.insert(self.late_sink.0.clone(), handles.clone());
            pending.publishes.push((SinkRef::Late, handles));
        }
        if !self.alerts.is_empty() {
            let alerts = std::mem::take(&mut self.alerts);
            let batch = json_batch(alerts.iter().map(|a| a.to_string()).collect())?;
            let handles = self.alert_sink.1.stage(id, &[batch]).map_err(StreamError::Sink)?;
            staged.insert(self.alert_sink.0.clone(), handles.clone());
            pending.publishes.push((SinkRef::Alerts, handles));
            pending.alerts = alerts;
        }
        self.pending.insert(id, pending);
        let cp = PipelineCheckpoint {
            fingerprint: self.p.fingerprint.clone(),
            offsets: self.offsets.clone(),
            partition_max_event_ms: self.part_max.clone(),
            operators: self.files.clone(),
            staged_id: (!staged.is_empty()).then_some(id),
            staged,
            written_bytes: written,
            changed_keys,
        };
        Ok((cp, unsynced))
    }

    /// The checkpoint `id` is committed: publish what was staged for it.
    fn commit(&mut self, id: u64) -> Result<(), StreamError> {
        let ids: Vec<u64> = self.pending.range(..=id).map(|(k, _)| *k).collect();
        for pid in ids {
            let Some(p) = self.pending.remove(&pid) else { continue };
            for (r, handles) in &p.publishes {
                let sink = match r {
                    SinkRef::Stream(s, k) => &mut self.sinks[*s][*k].1,
                    SinkRef::Late => &mut self.late_sink.1,
                    SinkRef::Alerts => &mut self.alert_sink.1,
                };
                sink.publish(pid, handles).map_err(StreamError::Sink)?;
            }
            let names = self.p.spec.stream_names();
            for (s, batches) in &p.streams {
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                self.status.output_rows.fetch_add(rows as u64, Ordering::Relaxed);
                metrics::counter!(t::PIPELINE_OUTPUT_ROWS_TOTAL, "pipeline" => self.p.spec.name.clone(), "output" => names[*s].clone()).increment(rows as u64);
                self.observer.committed(&self.p.spec.name, *s, batches);
            }
            if !p.alerts.is_empty() {
                self.observer.alerts(&self.p.spec.name, &p.alerts);
            }
        }
        self.status.last_checkpoint_id.store(id, Ordering::Relaxed);
        self.status.last_checkpoint_ms.store(now_ms(), Ordering::Relaxed);
        let (done, waiting): (Vec<_>, Vec<_>) = self.drain_waiters.drain(..).partition(|(after, _)| id > *after);
        self.drain_waiters = waiting;
        for (_, reply) in done {
            let _ = reply.send(Ok(()));
        }
        self.maybe_compact(id);
        Ok(())
    }

    /// Starts merging an operator's deltas into a snapshot when they outgrow it.
    fn maybe_compact(&mut self, id: u64) {
        for (i, f) in self.files.iter().enumerate() {
            if self.compactions[i].is_some() || !f.wants_compaction(self.settings.compaction_min_bytes) {
                continue;
            }
            let inputs: Vec<PathBuf> = f.all().map(|p| self.dir.join(p)).collect();
            let upto = f.deltas.last().and_then(|d| delta_id(d)).unwrap_or(id);
            let rel = format!("state/{}/{i}-{}/snapshot-{upto:020}.arrow", self.p.spec.name, self.chain.ops[i].name());
            let out = self.dir.join(&rel);
            let (tx, rx) = std::sync::mpsc::channel();
            self.compactions[i] = Some(rx);
            std::thread::spawn(move || {
                lower_priority();
                let r = state::compact_to(&inputs, &out);
                let _ = tx.send(r.map(|bytes| (upto, rel, bytes)).map_err(|e| crate::error_chain(&e)));
            });
        }
    }

    fn publish_status(&self) {
        if let Ok(mut o) = self.status.offsets.lock() {
            o.clone_from(&self.offsets);
        }
    }
}

/// Lowers the calling thread's CPU priority (nice 10), as RocksDB does for its compaction
/// threads: compaction is background work, and on a machine with few cores it should
/// yield to the pipeline and reader threads, whose delay is checkpoint latency.
fn lower_priority() {
    // SAFETY: setpriority and gettid take plain integers and touch no memory of ours;
    // on Linux, PRIO_PROCESS with a thread id sets that thread's nice value. Failure
    // (e.g. not permitted) leaves the priority as it was, which is harmless.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

/// The writer of operator `op_index`'s next change file, appending to what was written
/// ahead of the barrier (`ahead`, taken), and how many keys that was.
fn next_change_file(dir: &Path, ahead: &mut Option<(state::StateFileWriter, u64)>, pipeline: &str, op_index: usize, op_name: &str, after: u64) -> (StateWriter, u64) {
    let (open, keys) = ahead.take().map_or((None, 0), |(f, k)| (Some(f), k));
    (StateWriter::to_file(dir.join(ahead_path(pipeline, op_index, op_name, after)), open), keys)
}

/// The temporary name (relative to the checkpoints directory) of an operator's change
/// file begun after barrier `after`. Names differ from one barrier to the next, so the
/// file of a barrier still being synced is never truncated by the next one. A crash leaves
/// such files unnamed by any manifest; [`remove_unnamed_change_files`] deletes them when
/// the pipeline starts again.
fn ahead_path(pipeline: &str, op_index: usize, op_name: &str, after: u64) -> String {
    format!("state/{pipeline}/{op_index}-{op_name}/delta-after-{after:020}.arrow.tmp")
}

/// Deletes the temporary change files (`*.arrow.tmp`) under a pipeline's state folder,
/// which only a crash leaves (no manifest names them). Called before the pipeline's
/// thread starts, when no file of it is being written; a file that cannot be deleted is
/// logged and left.
fn remove_unnamed_change_files(dir: &Path, pipeline: &str) {
    let Ok(ops) = std::fs::read_dir(dir.join("state").join(pipeline)) else { return };
    for op in ops.flatten() {
        let Ok(files) = std::fs::read_dir(op.path()) else { continue };
        for f in files.flatten() {
            let path = f.path();
            if path.to_string_lossy().ends_with(".arrow.tmp") {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot delete a change file left by a crash");
                }
            }
        }
    }
}

/// The checkpoint id of a delta file name (`…/delta-<id>.arrow`).
fn delta_id(path: &str) -> Option<u64> {
    path.rsplit('/').next()?.strip_prefix("delta-")?.strip_suffix(".arrow")?.parse().ok()
}

/// A batch of one `json` text column.
fn json_batch(rows: Vec<String>) -> Result<RecordBatch, StreamError> {
    RecordBatch::try_new(late_schema(), vec![Arc::new(StringArray::from(rows)) as ArrayRef]).map_err(|e| StreamError::Eval(e.to_string()))
}

/// Appends `window_start` and `window_end` placeholders (the scan of a window table
/// function has them; their values are only known after windowing).
pub(crate) fn with_window_placeholders(batch: RecordBatch) -> Result<RecordBatch, StreamError> {
    let n = batch.num_rows();
    let ts = || Arc::new(TimestampMillisecondArray::from(vec![0; n]).with_timezone("UTC")) as ArrayRef;
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(crate::sql::catalog::WINDOW_START, crate::sql::catalog::ts_type(), false));
    fields.push(Field::new(crate::sql::catalog::WINDOW_END, crate::sql::catalog::ts_type(), false));
    let mut cols = batch.columns().to_vec();
    cols.push(ts());
    cols.push(ts());
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| StreamError::Eval(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_files_a_crash_left_are_deleted_and_named_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let op = dir.path().join("state/p/0-window");
        std::fs::create_dir_all(&op).unwrap();
        for f in ["delta-after-00000000000000000007.arrow.tmp", "delta-00000000000000000007.arrow", "snapshot-00000000000000000003.arrow"] {
            std::fs::write(op.join(f), b"x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("state/other/0-window")).unwrap();
        std::fs::write(dir.path().join("state/other/0-window/delta-after-00000000000000000001.arrow.tmp"), b"x").unwrap();
        remove_unnamed_change_files(dir.path(), "p");
        let mut left: Vec<String> = std::fs::read_dir(&op).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["delta-00000000000000000007.arrow", "snapshot-00000000000000000003.arrow"]);
        assert!(dir.path().join("state/other/0-window/delta-after-00000000000000000001.arrow.tmp").exists(), "another pipeline's files are its own");
        assert_eq!(ahead_path("p", 0, "window", 7), "state/p/0-window/delta-after-00000000000000000007.arrow.tmp");
    }
}

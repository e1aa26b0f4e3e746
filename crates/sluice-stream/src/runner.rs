//! Drives the heart-rate job: reads the source from the checkpointed offsets, processes
//! readings in event time, and commits checkpoints (see [`crate::checkpoint`]) together
//! with the sink's output. Runs on its own thread; controlled through [`Command`]s.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_core::heartbeat;
use sluice_core::model::{RawRow, SessionSummary};
use sluice_core::telemetry as t;
use sluice_core::time::now_ms;

use crate::checkpoint::{recovery_plan, Checkpoint, CheckpointStore};
use crate::job::HeartRateJob;
use crate::session::Outcome;
use crate::{BoxError, StreamError};

/// One record read from the source.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub offset: u64,
    /// Log-append time, epoch ms.
    pub timestamp_ms: i64,
    pub value: Vec<u8>,
}

/// A partitioned, offset-addressed input (the log, seen through a trait).
pub trait Source: Send {
    fn partition_count(&self) -> u32;
    /// Records from `offset` on, at most `max_records`; empty when there are none yet.
    fn read(&self, partition: u32, offset: u64, max_records: usize) -> Result<Vec<SourceRecord>, BoxError>;
    /// One past the last readable offset of a partition.
    fn end_offset(&self, partition: u32) -> u64;
    /// Blocks until new data may be readable, or `timeout` passes.
    fn wait(&self, timeout: Duration);
}

/// A transactional output (see the protocol in [`crate::checkpoint`]).
pub trait Sink: Send {
    /// Writes the output of checkpoint `id` where readers cannot see it; returns names
    /// for [`Sink::publish`]. May be called again for the same id after a failure.
    fn stage(&mut self, id: u64, raw: &[RawRow], sessions: &[SessionSummary]) -> Result<Vec<String>, BoxError>;
    /// Makes staged output visible. Idempotent: names already published are skipped.
    fn publish(&mut self, staged: &[String]) -> Result<(), BoxError>;
    /// Discards output staged for checkpoints with an id greater than `id`.
    fn discard_after(&mut self, id: u64) -> Result<(), BoxError>;
}

/// What the job tells the outside world.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// The current open sessions of one player (live progress; may be empty).
    Open { player_id: String, sessions: Vec<SessionSummary> },
    /// Sessions closed and committed by a checkpoint.
    Closed(Vec<SessionSummary>),
}

/// Commands to a running job.
pub enum Command {
    /// Read up to the source's current end, close every open session, checkpoint, reply.
    Drain(Sender<Result<(), String>>),
    /// Checkpoint what is pending and stop.
    Stop(Sender<Result<(), String>>),
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Job name (metrics label, log field).
    pub name: String,
    /// Commit a checkpoint at most this often while there is new output, ms.
    pub checkpoint_interval_ms: u64,
    /// Records read per partition per poll.
    pub batch_records: usize,
}

/// Progress of a running job, readable from other threads.
#[derive(Debug, Default)]
pub struct RunnerStatus {
    pub offsets: Mutex<Vec<u64>>,
    pub records: AtomicU64,
    pub open_sessions: AtomicU64,
    pub last_checkpoint_id: AtomicU64,
}

pub struct Runner<S: Source, K: Sink> {
    config: RunnerConfig,
    job: HeartRateJob,
    source: S,
    sink: K,
    store: CheckpointStore,
    observer: Box<dyn Fn(JobEvent) + Send>,
    status: Arc<RunnerStatus>,
    offsets: Vec<u64>,
    raw: Vec<RawRow>,
    closed: Vec<SessionSummary>,
    touched: BTreeSet<String>,
    next_id: u64,
    dirty: bool,
    last_checkpoint: Instant,
    last_emit: Instant,
}

impl<S: Source, K: Sink> Runner<S, K> {
    pub fn new(
        config: RunnerConfig,
        job: HeartRateJob,
        source: S,
        sink: K,
        store: CheckpointStore,
        observer: Box<dyn Fn(JobEvent) + Send>,
    ) -> Self {
        Runner {
            config,
            job,
            source,
            sink,
            store,
            observer,
            status: Arc::new(RunnerStatus::default()),
            offsets: Vec::new(),
            raw: Vec::new(),
            closed: Vec::new(),
            touched: BTreeSet::new(),
            next_id: 1,
            dirty: false,
            last_checkpoint: Instant::now(),
            last_emit: Instant::now(),
        }
    }

    pub fn status(&self) -> Arc<RunnerStatus> {
        self.status.clone()
    }

    /// Restores from the latest checkpoint and finishes its commit. Returns the open
    /// sessions restored, so a live view can show them at once.
    pub fn recover(&mut self) -> Result<Vec<SessionSummary>, StreamError> {
        let plan = recovery_plan(self.store.latest()?, self.source.partition_count());
        self.sink.publish(&plan.publish).map_err(StreamError::Sink)?;
        self.sink.discard_after(plan.discard_after).map_err(StreamError::Sink)?;
        tracing::info!(job = %self.config.name, checkpoint = plan.discard_after, offsets = ?plan.offsets, "job recovered");
        self.offsets = plan.offsets;
        self.next_id = plan.next_id;
        self.job.restore(plan.state, now_ms());
        self.status.last_checkpoint_id.store(plan.discard_after, Ordering::Relaxed);
        self.publish_status();
        Ok(self.job.open_sessions())
    }

    /// Runs until [`Command::Stop`] (or the command channel closes).
    pub fn run(mut self, commands: Receiver<Command>) -> Result<(), StreamError> {
        loop {
            match commands.try_recv() {
                Ok(Command::Drain(reply)) => {
                    let r = self.drain();
                    let failed = r.as_ref().err().map(|e| e.to_string());
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                    if let Some(e) = failed {
                        return Err(StreamError::Sink(e.into()));
                    }
                }
                Ok(Command::Stop(reply)) => {
                    let r = self.checkpoint();
                    let _ = reply.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    return r;
                }
                Err(TryRecvError::Disconnected) => return self.checkpoint(),
                Err(TryRecvError::Empty) => {}
            }
            let n = self.poll_once()?;
            if n == 0 && self.caught_up() {
                let before = self.closed.len();
                self.job.close_idle(now_ms(), &mut self.closed);
                if self.closed.len() > before {
                    self.dirty = true;
                    self.touched.extend(self.closed[before..].iter().map(|s| s.player_id.clone()));
                }
            }
            self.emit_open(false);
            if self.dirty && self.last_checkpoint.elapsed() >= Duration::from_millis(self.config.checkpoint_interval_ms) {
                self.checkpoint()?;
            }
            if n == 0 {
                self.source.wait(Duration::from_millis(100));
            }
        }
    }

    fn caught_up(&self) -> bool {
        (0..self.source.partition_count()).all(|p| self.offsets.get(p as usize).copied().unwrap_or(0) >= self.source.end_offset(p))
    }

    /// Reads one batch from each partition and processes it. Returns records read.
    fn poll_once(&mut self) -> Result<usize, StreamError> {
        let mut n = 0;
        let parts = self.source.partition_count();
        if self.offsets.len() < parts as usize {
            self.offsets.resize(parts as usize, 0);
        }
        let name = self.config.name.clone();
        for p in 0..parts {
            let records = self.source.read(p, self.offsets[p as usize], self.config.batch_records).map_err(StreamError::Source)?;
            let now = now_ms();
            for rec in &records {
                self.process(p, rec, now, &name);
                self.offsets[p as usize] = rec.offset + 1;
            }
            n += records.len();
        }
        if n > 0 {
            self.dirty = true;
            metrics::counter!(t::JOB_RECORDS_TOTAL, "job" => name).increment(n as u64);
            self.status.records.fetch_add(n as u64, Ordering::Relaxed);
            self.publish_status();
        }
        Ok(n)
    }

    fn process(&mut self, partition: u32, rec: &SourceRecord, now: i64, name: &str) {
        let event = serde_json::from_slice::<serde_json::Value>(&rec.value)
            .map_err(|e| e.to_string())
            .and_then(|v| heartbeat::validate(&v).map_err(|e| e.to_string()));
        let ev = match event {
            Ok(ev) => ev,
            Err(reason) => {
                metrics::counter!(t::JOB_INVALID_RECORDS_TOTAL, "job" => name.to_string()).increment(1);
                tracing::warn!(job = name, partition, offset = rec.offset, %reason, "skipping a record that is not a heart-rate reading");
                return;
            }
        };
        self.raw.push(RawRow {
            player_id: ev.player_id.clone(),
            heartbeat: ev.heartbeat_bpm,
            created_at_ms: ev.created_at_ms,
            ingested_at_ms: rec.timestamp_ms,
            partition,
            offset: rec.offset,
        });
        match self.job.process(&ev, now, &mut self.closed) {
            Outcome::Accepted => {}
            Outcome::Duplicate => metrics::counter!(t::JOB_DUPLICATE_RECORDS_TOTAL, "job" => name.to_string()).increment(1),
            Outcome::Late => metrics::counter!(t::JOB_LATE_RECORDS_TOTAL, "job" => name.to_string()).increment(1),
        }
        self.touched.insert(ev.player_id);
    }

    fn publish_status(&self) {
        if let Ok(mut o) = self.status.offsets.lock() {
            o.clone_from(&self.offsets);
        }
        self.status.open_sessions.store(self.job.open_session_count() as u64, Ordering::Relaxed);
    }

    fn emit_open(&mut self, force: bool) {
        if self.touched.is_empty() || (!force && self.last_emit.elapsed() < Duration::from_millis(500)) {
            return;
        }
        for player_id in std::mem::take(&mut self.touched) {
            let sessions = self.job.open_sessions_of(&player_id);
            (self.observer)(JobEvent::Open { player_id, sessions });
        }
        self.last_emit = Instant::now();
    }

    /// Commits pending output and state (no-op when nothing changed).
    fn checkpoint(&mut self) -> Result<(), StreamError> {
        if !self.dirty {
            return Ok(());
        }
        let id = self.next_id;
        let staged = self.sink.stage(id, &self.raw, &self.closed).map_err(StreamError::Sink)?;
        let cp = Checkpoint {
            id,
            offsets: self.offsets.clone(),
            state: self.job.state().clone(),
            staged: staged.clone(),
            committed_at_ms: now_ms(),
        };
        self.store.commit(&cp)?;
        self.sink.publish(&staged).map_err(StreamError::Sink)?;
        let name = self.config.name.clone();
        metrics::counter!(t::JOB_CHECKPOINTS_TOTAL, "job" => name.clone()).increment(1);
        metrics::counter!(t::JOB_SESSIONS_CLOSED_TOTAL, "job" => name).increment(self.closed.len() as u64);
        self.status.last_checkpoint_id.store(id, Ordering::Relaxed);
        self.emit_open(true);
        if !self.closed.is_empty() {
            (self.observer)(JobEvent::Closed(std::mem::take(&mut self.closed)));
        }
        self.raw.clear();
        self.next_id += 1;
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        self.publish_status();
        Ok(())
    }

    /// Processes everything readable now, closes all sessions and checkpoints.
    fn drain(&mut self) -> Result<(), StreamError> {
        let targets: Vec<u64> = (0..self.source.partition_count()).map(|p| self.source.end_offset(p)).collect();
        while targets.iter().enumerate().any(|(p, &end)| self.offsets.get(p).copied().unwrap_or(0) < end) {
            if self.poll_once()? == 0 {
                self.source.wait(Duration::from_millis(10));
            }
        }
        let before = self.closed.len();
        self.job.close_all(&mut self.closed);
        self.touched.extend(self.closed[before..].iter().map(|s| s.player_id.clone()));
        self.dirty = true;
        self.checkpoint()
    }
}

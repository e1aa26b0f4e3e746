//! The engine: runs every pipeline on its own thread and coordinates checkpoints across
//! them, so one manifest covers every pipeline (protocol in [`crate::checkpoint`]).
//!
//! Pipelines are added and dropped while it runs. A checkpoint is taken every
//! `checkpoint_interval_ms` while any pipeline has new input or output, and at once when
//! a pipeline drains. A pipeline that fails keeps its last committed entry in later
//! manifests, so a restart resumes it from there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_core::telemetry as t;
use sluice_core::time::now_ms;

use crate::checkpoint::{next_manifest, recovery_plan, CheckpointStore, Manifest, Resume};
use crate::pipeline::Planned;
use crate::reader::Waker;
use crate::runner::{Cmd, Connectors, Observer, PipelineStatus, RunSettings, Runner};
use crate::StreamError;

/// Settings of the engine (the `[stream]` config table). Times in ms.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub checkpoint_interval_ms: u64,
    pub run: RunSettings,
}

/// One committed checkpoint, for status and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointRecord {
    pub id: u64,
    /// From the barrier to the manifest committed, ms.
    pub duration_ms: f64,
    /// Of that, until every pipeline answered the barrier (its state written and synced), ms.
    pub barrier_ms: f64,
    /// Bytes of state changes written, over every pipeline.
    pub written_bytes: u64,
    /// Keys whose state was written, over every pipeline.
    pub changed_keys: u64,
}

/// Where a checkpoint is made durable beyond this machine (a worker's object store, see
/// `sluice-worker`). Called on the coordinator thread.
pub trait CheckpointHook: Send + Sync {
    /// Called before the manifest is committed in `dir`, with every state file it names
    /// written there. An error aborts the checkpoint: nothing is published, and the engine
    /// stops checkpointing ([`Engine::fatal`]); a fenced owner returns one.
    fn commit(&self, dir: &std::path::Path, manifest: &Manifest) -> Result<(), crate::BoxError>;
    /// After the manifest is committed: state files no retained manifest names any more.
    fn committed(&self, _manifest: &Manifest, _garbage: &[String]) {}
}

/// How many [`CheckpointRecord`]s the engine keeps.
const HISTORY: usize = 4096;

/// The sending end of a pipeline thread's commands: each command also wakes the thread
/// from its wait for input.
#[derive(Clone)]
struct Commands {
    tx: Sender<Cmd>,
    wake: Option<Waker>,
}

impl Commands {
    fn send(&self, cmd: Cmd) -> Result<(), std::sync::mpsc::SendError<Cmd>> {
        self.tx.send(cmd)?;
        if let Some(w) = &self.wake {
            w.wake();
        }
        Ok(())
    }
}

struct Handle {
    planned: Planned,
    cmds: Commands,
    status: Arc<PipelineStatus>,
    thread: Option<JoinHandle<()>>,
}

struct Inner {
    store: CheckpointStore,
    connectors: Arc<dyn Connectors>,
    observer: Arc<dyn Observer>,
    settings: EngineSettings,
    pipelines: Mutex<BTreeMap<String, Handle>>,
    last: Mutex<Manifest>,
    /// Serializes checkpoints.
    checkpointing: Mutex<()>,
    wake: (Mutex<bool>, Condvar),
    stop: AtomicBool,
    fatal: Mutex<Option<String>>,
    history: Mutex<std::collections::VecDeque<CheckpointRecord>>,
    hook: Option<Arc<dyn CheckpointHook>>,
}

/// A running engine.
pub struct Engine {
    inner: Arc<Inner>,
    coordinator: Mutex<Option<JoinHandle<()>>>,
}

/// What the engine reports of one pipeline.
pub struct PipelineView {
    pub planned: Planned,
    pub status: Arc<PipelineStatus>,
}

impl Engine {
    /// Recovers from the latest checkpoint in `dir` (publishing its staged output again and
    /// discarding later staging), then starts `pipelines` and the checkpoint coordinator.
    /// A pipeline whose checkpoint belongs to a different query does not start; its
    /// status says why.
    pub fn start(dir: PathBuf, pipelines: Vec<Planned>, connectors: Arc<dyn Connectors>, observer: Arc<dyn Observer>, settings: EngineSettings) -> Result<Engine, StreamError> {
        Engine::start_with(dir, pipelines, connectors, observer, settings, None)
    }

    /// [`Engine::start`], with every checkpoint also committed through `hook` first.
    pub fn start_with(dir: PathBuf, pipelines: Vec<Planned>, connectors: Arc<dyn Connectors>, observer: Arc<dyn Observer>, settings: EngineSettings, hook: Option<Arc<dyn CheckpointHook>>) -> Result<Engine, StreamError> {
        let store = CheckpointStore::open(&dir)?;
        let latest = store.latest()?;
        let defined: BTreeMap<String, String> = pipelines.iter().map(|p| (p.spec.name.clone(), p.fingerprint.clone())).collect();
        let plan = recovery_plan(latest.as_ref(), &defined);
        for r in &plan.publish {
            connectors.sink(&r.pipeline, &r.sink, -1).and_then(|mut s| s.publish(r.id, &r.handles)).map_err(StreamError::Sink)?;
        }
        connectors.discard_staged_after(plan.discard_after).map_err(StreamError::Sink)?;
        let mut last = latest.unwrap_or_default();
        last.pipelines.retain(|name, _| defined.contains_key(name));
        let inner = Arc::new(Inner {
            store,
            connectors,
            observer,
            settings,
            pipelines: Mutex::new(BTreeMap::new()),
            last: Mutex::new(last),
            checkpointing: Mutex::new(()),
            wake: (Mutex::new(false), Condvar::new()),
            stop: AtomicBool::new(false),
            fatal: Mutex::new(None),
            history: Mutex::new(Default::default()),
            hook,
        });
        for p in pipelines {
            let resume = plan.resume.get(&p.spec.name).cloned().unwrap_or(Resume::Fresh);
            Inner::launch(&inner, p, resume)?;
        }
        let i2 = inner.clone();
        let coordinator = std::thread::Builder::new().name("checkpoints".into()).spawn(move || i2.coordinate()).map_err(|e| StreamError::Eval(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Engine { inner, coordinator: Mutex::new(Some(coordinator)) })
    }

    /// Starts a new pipeline (from its start position, with empty state).
    pub fn add(&self, planned: Planned) -> Result<(), StreamError> {
        if self.inner.pipelines.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&planned.spec.name) {
            return Err(StreamError::Eval(format!("pipeline {:?} exists", planned.spec.name)));
        }
        Inner::launch(&self.inner, planned, Resume::Fresh)
    }

    /// Stops a pipeline and forgets it: later checkpoints leave it out, and its state files
    /// are deleted with the manifests that used them. Its lake table and topic stay.
    pub fn drop_pipeline(&self, name: &str) -> Result<(), StreamError> {
        let _guard = self.inner.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        let handle = self.inner.pipelines.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        let Some(mut h) = handle else { return Err(StreamError::Eval(format!("no pipeline {name:?}"))) };
        let _ = h.cmds.send(Cmd::Exit);
        if let Some(t) = h.thread.take() {
            let _ = t.join();
        }
        self.inner.last.lock().unwrap_or_else(|p| p.into_inner()).pipelines.remove(name);
        Ok(())
    }

    /// Reads everything durable now, closes every window, and returns once the output is
    /// committed (end of input).
    pub fn drain(&self, name: &str) -> Result<(), String> {
        let cmds = {
            let map = self.inner.pipelines.lock().unwrap_or_else(|p| p.into_inner());
            let h = map.get(name).ok_or_else(|| format!("no pipeline {name:?}"))?;
            if let Some(e) = h.status.error() {
                return Err(e);
            }
            h.cmds.clone()
        };
        let (tx, rx) = channel();
        cmds.send(Cmd::Drain { reply: tx }).map_err(|_| "the pipeline has stopped".to_string())?;
        rx.recv().map_err(|_| "the pipeline stopped while draining".to_string())?
    }

    /// Takes a checkpoint now and waits until its manifest is committed (each pipeline then
    /// publishes its output on its own thread; its status's `last_checkpoint_id` says when).
    pub fn checkpoint(&self) -> Result<(), StreamError> {
        self.inner.checkpoint(true)
    }

    /// Every pipeline with its status.
    pub fn pipelines(&self) -> Vec<PipelineView> {
        self.inner.pipelines.lock().unwrap_or_else(|p| p.into_inner()).values().map(|h| PipelineView { planned: h.planned.clone(), status: h.status.clone() }).collect()
    }

    pub fn pipeline(&self, name: &str) -> Option<PipelineView> {
        self.inner.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(name).map(|h| PipelineView { planned: h.planned.clone(), status: h.status.clone() })
    }

    /// The most recent checkpoints, oldest first.
    pub fn checkpoint_history(&self) -> Vec<CheckpointRecord> {
        self.inner.history.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }

    /// Why the engine stopped checkpointing, if it did (a failed manifest write).
    pub fn fatal(&self) -> Option<String> {
        self.inner.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops every pipeline without a last checkpoint (their progress since the last one is
    /// dropped; whoever resumes them starts from it). For an owner that lost its input.
    pub fn abort(&self) {
        *self.inner.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some("aborted".into());
        let _ = self.stop();
    }

    /// Commits a last checkpoint and stops every pipeline. Stopping again does nothing (a
    /// second checkpoint, with no pipelines running, would drop them from the manifest).
    pub fn stop(&self) -> Result<(), StreamError> {
        if self.inner.stop.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.poke();
        if let Some(t) = self.coordinator.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        let result = match self.fatal() {
            None => self.inner.checkpoint(true),
            Some(e) => Err(StreamError::Eval(e)),
        };
        let handles: Vec<Handle> = std::mem::take(&mut *self.inner.pipelines.lock().unwrap_or_else(|p| p.into_inner())).into_values().collect();
        for mut h in handles {
            let _ = h.cmds.send(Cmd::Exit);
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
        result
    }
}

impl Inner {
    fn launch(inner: &Arc<Inner>, planned: Planned, resume: Resume) -> Result<(), StreamError> {
        let name = planned.spec.name.clone();
        let status = Arc::new(PipelineStatus { name: name.clone(), ..Default::default() });
        status.set_state("starting");
        let (tx, rx) = channel();
        let me = Arc::downgrade(inner);
        let request: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(i) = me.upgrade() {
                i.poke();
            }
        });
        let runner = match resume {
            Resume::Changed { was } => {
                status.fail(format!(
                    "pipeline {name:?} has a checkpoint of a different query (fingerprint {was}, now {}): its state cannot be reused. Give the changed query a new name, or drop the pipeline and create it again to start over",
                    planned.fingerprint
                ));
                None
            }
            Resume::From(cp) => Some(Runner::new(planned.clone(), Some(cp), inner.connectors.as_ref(), inner.store.dir().to_path_buf(), inner.observer.clone(), request, inner.settings.run.clone(), status.clone())),
            Resume::Fresh => Some(Runner::new(planned.clone(), None, inner.connectors.as_ref(), inner.store.dir().to_path_buf(), inner.observer.clone(), request, inner.settings.run.clone(), status.clone())),
        };
        let mut wake = None;
        let thread = match runner {
            None => None,
            Some(Err(e)) => {
                status.fail(crate::error_chain(&e));
                tracing::error!(pipeline = %name, error = %crate::error_chain(&e), "the pipeline could not start");
                None
            }
            Some(Ok(r)) => {
                wake = Some(r.waker());
                Some(std::thread::Builder::new().name(format!("pipeline-{name}")).spawn(move || r.run(rx)).map_err(|e| StreamError::Eval(format!("cannot start a thread: {e}")))?)
            }
        };
        let cmds = Commands { tx, wake };
        inner.pipelines.lock().unwrap_or_else(|p| p.into_inner()).insert(name, Handle { planned, cmds, status, thread });
        Ok(())
    }

    fn poke(&self) {
        let (m, cv) = &self.wake;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    fn any_dirty(&self) -> bool {
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).values().any(|h| h.status.dirty.load(Ordering::Acquire))
    }

    /// The coordinator thread: a checkpoint every interval while anything changed, or
    /// when poked (a drain).
    fn coordinate(&self) {
        let interval = Duration::from_millis(self.settings.checkpoint_interval_ms.max(1));
        let mut last = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let poked = {
                let (m, cv) = &self.wake;
                let guard = m.lock().unwrap_or_else(|p| p.into_inner());
                let wait = interval.saturating_sub(last.elapsed()).max(Duration::from_millis(5));
                let (mut guard, _) = cv.wait_timeout_while(guard, wait, |p| !*p).unwrap_or_else(|p| p.into_inner());
                std::mem::take(&mut *guard)
            };
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if (poked || last.elapsed() >= interval) && (poked || self.any_dirty()) {
                last = Instant::now();
                if let Err(e) = self.checkpoint(poked) {
                    let chain = crate::error_chain(&e);
                    tracing::error!(error = %chain, "a checkpoint failed; pipelines stop checkpointing until sluice restarts (it resumes from the last committed checkpoint)");
                    metrics::counter!(t::CHECKPOINT_FAILURES_TOTAL).increment(1);
                    let id = self.last.lock().unwrap_or_else(|p| p.into_inner()).id + 1;
                    sluice_core::events::global().publish("checkpoint_failed", serde_json::json!({"checkpoint_id": id, "error": chain}));
                    *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain);
                    return;
                }
            }
        }
    }

    /// One checkpoint across every running pipeline.
    fn checkpoint(&self, force: bool) -> Result<(), StreamError> {
        let _guard = self.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(StreamError::Eval(e));
        }
        if !force && !self.any_dirty() {
            return Ok(());
        }
        let started = Instant::now();
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let id = last.id + 1;
        let targets: Vec<(String, Commands, Arc<PipelineStatus>)> = self
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, h)| h.thread.is_some())
            .map(|(n, h)| (n.clone(), h.cmds.clone(), h.status.clone()))
            .collect();
        let mut replies = Vec::new();
        for (name, cmds, status) in &targets {
            let (tx, rx) = channel();
            if status.error().is_none() && cmds.send(Cmd::Barrier { id, reply: tx }).is_ok() {
                replies.push((name.clone(), cmds.clone(), rx));
            }
        }
        let mut committed = Vec::new();
        let mut answered = BTreeMap::new();
        let (mut written, mut changed) = (0, 0);
        for (name, cmds, rx) in replies {
            match rx.recv_timeout(Duration::from_secs(300)) {
                Ok(Ok(cp)) => {
                    written += cp.written_bytes;
                    changed += cp.changed_keys;
                    answered.insert(name, cp);
                    committed.push(cmds);
                }
                Ok(Err(e)) => tracing::warn!(pipeline = %name, error = %e, "pipeline failed at a checkpoint barrier; it keeps its last checkpoint"),
                Err(_) => tracing::warn!(pipeline = %name, "pipeline did not answer a checkpoint barrier; it keeps its last checkpoint"),
            }
        }
        let barrier_ms = started.elapsed().as_secs_f64() * 1000.0;
        let names: Vec<String> = self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        let manifest = next_manifest(&last, id, answered, &names, now_ms());
        if let Some(h) = &self.hook {
            h.commit(self.store.dir(), &manifest).map_err(|e| StreamError::Eval(format!("checkpoint {id} was not committed: {}", sluice_core::error_chain(e.as_ref()))))?;
        }
        let garbage = self.store.commit(&manifest)?;
        if let Some(h) = &self.hook {
            h.committed(&manifest, &garbage);
        }
        for f in garbage {
            let path = self.store.dir().join(&f);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "cannot delete an old state file");
                }
            }
        }
        // Staged output is published by each pipeline; the manifest records it for recovery
        // (and the next manifests too, for a pipeline that does not answer again).
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = manifest.clone();
        for cmds in committed {
            let _ = cmds.send(Cmd::Commit { id });
        }
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        metrics::counter!(t::CHECKPOINTS_TOTAL).increment(1);
        metrics::histogram!(t::CHECKPOINT_DURATION_SECONDS).record(duration_ms / 1e3);
        let names: Vec<&String> = manifest.pipelines.keys().collect();
        sluice_core::events::global().publish(
            "checkpoint_completed",
            serde_json::json!({"checkpoint_id": id, "duration_ms": duration_ms, "barrier_ms": barrier_ms, "written_bytes": written, "changed_keys": changed, "pipelines": names}),
        );
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.push_back(CheckpointRecord { id, duration_ms, barrier_ms, written_bytes: written, changed_keys: changed });
        while h.len() > HISTORY {
            h.pop_front();
        }
        Ok(())
    }
}

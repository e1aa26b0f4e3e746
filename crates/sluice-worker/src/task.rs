//! One task: the pipelines that read a topic, on one partition of it, run by an engine of
//! their own, with their checkpoints in the state store so any worker can resume them.
//!
//! State store layout (under `--state`), per task `<topic>-<partition>`:
//!
//! ```text
//! tasks/<topic>-<partition>/manifests/<id, 20 digits>.json   the engine's manifest, plus
//!     "files": {local name: stored name} and "owner": "<worker>/<incarnation>"
//! tasks/<topic>-<partition>/files/<incarnation>/state/<pipeline>/<op>/…arrow   state files
//! ```
//!
//! A checkpoint is committed in the store before it is committed locally and before any
//! of its output is published ([`sluice_stream::engine::CheckpointHook`]): its new state
//! files are uploaded under the incarnation's own folder (two owners never write the same
//! object), then the manifest is written with put-if-absent. Checkpoint ids of a task are
//! consecutive, so two owners of a partition (a worker that was paused past its session
//! timeout, and its successor) race for the same name, and the store lets exactly one
//! win. The loser is **fenced**: its engine stops checkpointing, nothing of that checkpoint
//! is published, and the worker drops the task (or reloads it from the winner's manifest,
//! if the group still gives it the partition). This is the fence the issue asks for, a
//! conditional put; the group's generation fences offset commits on top of it.
//!
//! **Claims.** A task that starts from manifest `n` first writes manifest `n + 1`, its
//! *claim*: the same checkpoint under the next id ([`claim_of`]). The previous owner's
//! next checkpoint would be `n + 1` too, so from then on it is fenced, even if its
//! successor has nothing to checkpoint yet. Old manifests are deleted as checkpoints go
//! by (the newest two are kept), except each claim and the manifest it was made from: a
//! deleted name could be written again by a fenced owner, and a claim is the one name a
//! previous owner can still race for. So a task keeps a few small objects per start (per
//! rebalance), not per checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::Value;
use sluice_core::telemetry as t;
use sluice_lake::remote::StateDir;
use sluice_stream::checkpoint::Manifest;
use sluice_stream::engine::{CheckpointHook, Engine, EngineSettings};
use sluice_stream::pipeline::Planned;
use sluice_stream::runner::{Connectors, Observer};
use sluice_stream::BoxError;

use crate::WorkerError;

/// The task of `topic`/`partition` in the state store.
pub fn task_prefix(topic: &str, partition: u32) -> String {
    format!("tasks/{topic}-{partition}")
}

fn manifest_name(prefix: &str, id: u64) -> String {
    format!("{prefix}/manifests/{id:020}.json")
}

/// The checkpoints of one task in the state store: the engine's [`CheckpointHook`].
pub struct RemoteCheckpoints {
    store: StateDir,
    prefix: String,
    /// `<worker>/<incarnation>`: who wrote a manifest, and the folder of its files.
    owner: String,
    rt: tokio::runtime::Handle,
    /// Local state file name → its object under the task's prefix.
    files: Mutex<BTreeMap<String, String>>,
    /// Called with the offset every pipeline of the task has read past, after each commit.
    on_commit: Box<dyn Fn(u64) + Send + Sync>,
    fenced: AtomicBool,
    /// The id of this incarnation's claim (its manifests below and at it are kept).
    claim_id: u64,
    /// The offset every pipeline has read past, as of the last committed checkpoint.
    committed_offset: Mutex<Option<u64>>,
}

/// The claim of a task that loaded `loaded` (None: the task has no checkpoint yet): the
/// same checkpoint under the next id, committed at `now_ms`. Staged output keeps the id it
/// was staged for, so that publishing it again stays idempotent.
pub fn claim_of(loaded: Option<&Manifest>, now_ms: i64) -> Manifest {
    let mut m = loaded.cloned().unwrap_or_default();
    let id = m.id;
    for p in m.pipelines.values_mut() {
        p.staged_id.get_or_insert(id);
    }
    m.id = id + 1;
    m.committed_at_ms = now_ms;
    m
}

impl RemoteCheckpoints {
    /// Whether another owner committed a checkpoint this one tried to.
    pub fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// The offset every pipeline of the task has read past, as of its last committed
    /// checkpoint (None before its first).
    pub fn committed_offset(&self) -> Option<u64> {
        *self.committed_offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RemoteCheckpoints {
    /// Writes manifest `m` (naming `files`) if its id is free. False: another owner wrote
    /// that id first (this one is fenced).
    fn put_manifest(&self, m: &Manifest, files: &BTreeMap<String, String>) -> Result<bool, BoxError> {
        let mut body = serde_json::to_value(m)?;
        body["files"] = serde_json::to_value(files)?;
        body["owner"] = Value::String(self.owner.clone());
        let name = manifest_name(&self.prefix, m.id);
        if self.rt.block_on(self.store.put_if_absent(&name, Bytes::from(serde_json::to_vec_pretty(&body)?)))? {
            return Ok(true);
        }
        self.fenced.store(true, Ordering::Release);
        metrics::counter!(t::WORKER_FENCED_TOTAL).increment(1);
        tracing::warn!(task = %self.prefix, checkpoint = m.id, owner = %self.owner, "fenced: another worker committed this checkpoint of the partition first; this worker commits nothing more of it");
        Ok(false)
    }
}

impl CheckpointHook for RemoteCheckpoints {
    fn commit(&self, dir: &Path, m: &Manifest) -> Result<(), BoxError> {
        let names: Vec<String> = m.pipelines.values().flat_map(|p| p.operators.iter()).flat_map(|f| f.all()).cloned().collect();
        let mut map = BTreeMap::new();
        for rel in names {
            let known = self.files.lock().unwrap_or_else(|p| p.into_inner()).get(&rel).cloned();
            let stored = match known {
                Some(s) => s,
                None => {
                    let stored = format!("files/{}/{rel}", self.owner.replace('/', "-"));
                    let body = std::fs::read(dir.join(&rel)).map_err(|e| format!("{}: {e}", dir.join(&rel).display()))?;
                    self.rt.block_on(self.store.put(&format!("{}/{stored}", self.prefix), Bytes::from(body)))?;
                    self.files.lock().unwrap_or_else(|p| p.into_inner()).insert(rel.clone(), stored.clone());
                    stored
                }
            };
            map.insert(rel, stored);
        }
        if !self.put_manifest(m, &map)? {
            return Err(format!("fenced: checkpoint {} of {} was committed by another worker", m.id, self.prefix).into());
        }
        Ok(())
    }

    fn committed(&self, m: &Manifest, garbage: &[String]) {
        if let Some(offset) = m.pipelines.values().filter_map(|p| p.offsets.first().copied()).min() {
            *self.committed_offset.lock().unwrap_or_else(|p| p.into_inner()) = Some(offset);
            (self.on_commit)(offset);
        }
        let mut gone = Vec::new();
        {
            let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            for g in garbage {
                if let Some(s) = files.remove(g) {
                    gone.push(format!("{}/{s}", self.prefix));
                }
            }
        }
        // The claim and everything before it stay (see the module docs).
        if m.id > self.claim_id + 2 {
            gone.push(manifest_name(&self.prefix, m.id - 2));
        }
        let store = self.store.clone();
        self.rt.spawn(async move {
            for g in gone {
                if let Err(e) = store.delete(&g).await {
                    tracing::debug!(object = %g, error = %sluice_core::error_chain(&e), "cannot delete an old checkpoint object; it stays in the state store");
                }
            }
        });
    }
}

/// Copies the task's latest checkpoint's state files from the store into `dir` (empty).
/// Returns the manifest and the stored names of its files.
async fn download(store: &StateDir, prefix: &str, dir: &Path) -> Result<(Option<Manifest>, BTreeMap<String, String>), WorkerError> {
    let manifests = store.list(&format!("{prefix}/manifests")).await?;
    let Some(latest) = manifests.iter().filter(|n| n.ends_with(".json")).max() else { return Ok((None, BTreeMap::new())) };
    let body = store.get(latest).await?.ok_or_else(|| WorkerError::State(format!("{latest} disappeared while it was read")))?;
    let mut v: Value = serde_json::from_slice(&body).map_err(|e| WorkerError::State(format!("{latest}: {e}")))?;
    let files: BTreeMap<String, String> = serde_json::from_value(v["files"].take()).unwrap_or_default();
    let m: Manifest = serde_json::from_value(v).map_err(|e| WorkerError::State(format!("{latest}: {e}")))?;
    for (rel, stored) in &files {
        let name = format!("{prefix}/{stored}");
        let bytes = store.get(&name).await?.ok_or_else(|| WorkerError::State(format!("{name} (named by {latest}) is missing")))?;
        let path = dir.join(rel);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| WorkerError::Io(d.to_path_buf(), e))?;
        }
        std::fs::write(&path, &bytes).map_err(|e| WorkerError::Io(path.clone(), e))?;
    }
    Ok((Some(m), files))
}

/// A running task.
pub struct Task {
    pub topic: String,
    pub partition: u32,
    pub engine: Arc<Engine>,
    pub hook: Arc<RemoteCheckpoints>,
    /// The checkpoint it resumed from (None: it started fresh).
    pub resumed_from: Option<u64>,
    dir: PathBuf,
}

/// What a task needs to start.
pub struct TaskContext<'a> {
    pub store: &'a StateDir,
    pub rt: &'a tokio::runtime::Handle,
    pub worker: &'a str,
    /// Scratch folder for this task's incarnations (its local state).
    pub scratch: &'a Path,
    pub settings: EngineSettings,
    pub observer: Arc<dyn Observer>,
}

impl Task {
    /// Loads the task's latest checkpoint from the store and starts `pipelines` (those that
    /// read `topic`) on `partition`. `on_commit` gets the offset read past after each
    /// checkpoint (to commit it to the group).
    pub fn start(cx: TaskContext<'_>, topic: &str, partition: u32, pipelines: Vec<Planned>, connectors: Arc<dyn Connectors>, on_commit: Box<dyn Fn(u64) + Send + Sync>) -> Result<Task, WorkerError> {
        let prefix = task_prefix(topic, partition);
        let incarnation = format!("{}-{}", sluice_core::time::now_ms(), std::process::id());
        let dir = cx.scratch.join(format!("{topic}-{partition}")).join(&incarnation);
        let _ = std::fs::remove_dir_all(cx.scratch.join(format!("{topic}-{partition}")));
        std::fs::create_dir_all(&dir).map_err(|e| WorkerError::Io(dir.clone(), e))?;
        let (loaded, files) = cx.rt.block_on(download(cx.store, &prefix, &dir))?;
        let resumed_from = loaded.as_ref().map(|m| m.id);
        let claim = claim_of(loaded.as_ref(), sluice_core::time::now_ms());
        let hook = Arc::new(RemoteCheckpoints {
            store: cx.store.clone(),
            prefix,
            owner: format!("{}/{incarnation}", cx.worker),
            rt: cx.rt.clone(),
            files: Mutex::new(files.clone()),
            on_commit,
            fenced: AtomicBool::new(false),
            claim_id: claim.id,
            committed_offset: Mutex::new(None),
        });
        if !hook.put_manifest(&claim, &files).map_err(|e| WorkerError::State(sluice_core::error_chain(e.as_ref())))? {
            return Err(WorkerError::State(format!("another worker committed checkpoint {} of {topic}-{partition} while this one loaded it", claim.id)));
        }
        let path = dir.join(format!("manifest-{:020}.json", claim.id));
        std::fs::write(&path, serde_json::to_vec(&claim).map_err(|e| WorkerError::State(e.to_string()))?).map_err(|e| WorkerError::Io(path.clone(), e))?;
        let engine = Arc::new(Engine::start_with(dir.clone(), pipelines, connectors, cx.observer, cx.settings, Some(hook.clone() as Arc<dyn CheckpointHook>))?);
        Ok(Task { topic: topic.into(), partition, engine, hook, resumed_from, dir })
    }

    /// Commits a last checkpoint (if the task still owns its partition) and stops.
    pub fn stop(self, checkpoint: bool) {
        if checkpoint {
            if let Err(e) = self.engine.stop() {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %sluice_core::error_chain(&e), "the task's last checkpoint failed; its successor resumes from the one before");
            }
        } else {
            self.engine.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_stream::checkpoint::PipelineCheckpoint;

    #[test]
    fn a_claim_is_the_loaded_checkpoint_under_the_next_id() {
        assert_eq!(claim_of(None, 5), Manifest { id: 1, committed_at_ms: 5, pipelines: BTreeMap::new() });
        let mut old = PipelineCheckpoint { offsets: vec![42], ..Default::default() };
        old.staged.insert("lake:t".into(), vec!["f".into()]);
        let mut newer = old.clone();
        newer.staged_id = Some(6);
        let m = Manifest { id: 7, committed_at_ms: 1, pipelines: BTreeMap::from([("a".to_string(), old), ("b".to_string(), newer)]) };
        let c = claim_of(Some(&m), 9);
        assert_eq!((c.id, c.committed_at_ms), (8, 9));
        assert_eq!(c.pipelines["a"].staged_id, Some(7), "output staged for the loaded manifest keeps its id");
        assert_eq!(c.pipelines["b"].staged_id, Some(6));
        assert_eq!(c.pipelines["a"].offsets, vec![42]);
    }
}

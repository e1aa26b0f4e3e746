//! sluice-worker: `sluice worker`, the pipelines as stateless workers over an external
//! Kafka cluster, as Kafka Streams scales: no clustering of sluice's own.
//!
//! - **Membership.** Every worker started with the same `--group` joins that consumer
//!   group on the cluster for the pipelines' source topics
//!   ([`sluice_cluster::group::GroupMember`], cooperative-sticky). Kafka's group protocol
//!   decides who owns which partition; a worker that joins, leaves or dies triggers a
//!   rebalance.
//! - **Tasks.** Each owned partition is a task ([`task::Task`]): the pipelines that read
//!   that topic, on that partition, with an engine of their own. Its checkpoints live in
//!   the state store (`--state`), so the next owner resumes it from the last one.
//!   Revoked partitions get a last checkpoint; lost ones (the group moved on without this
//!   worker) are dropped without one.
//! - **Fencing.** A checkpoint is committed by a put-if-absent of its manifest in the
//!   state store; a paused worker racing its successor loses (see [`task`]).
//! - **Output.** Lake tables in the object store (`--lake`), one Delta `txn` app id per
//!   pipeline and partition; output topics on the cluster ([`connectors`]).
//! - **Offsets.** After each checkpoint of a task, its offset is committed to the group,
//!   so Kafka tools show the group's lag.
//!
//! Threads: one loop ([`Worker::run`]) serves the group (rebalances are handled on it)
//! and starts tasks; each task's engine has its pipeline and checkpoint threads; the HTTP
//! API ([`http`]) runs on the tokio runtime.

pub mod connectors;
pub mod http;
pub mod task;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_cluster::group::{GroupEvent, GroupMember};
use sluice_cluster::ClusterLog;
use sluice_core::telemetry as t;
use sluice_lake::remote::StateDir;
use sluice_lake::Lake;
use sluice_stream::engine::EngineSettings;
use sluice_stream::pipeline::Planned;
use sluice_stream::runner::Observer;

use crate::task::{Task, TaskContext};

/// Why the worker could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the cluster: {0}")]
    Cluster(#[from] sluice_cluster::ClusterError),
    #[error("the state store or the lake: {0}")]
    Lake(#[from] sluice_lake::LakeError),
    #[error("a task's engine: {0}")]
    Stream(#[from] sluice_stream::StreamError),
    #[error("the state store: {0}")]
    State(String),
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// What a worker runs and where.
pub struct WorkerOptions {
    pub group: String,
    /// This worker's name in the group (client id) and in the manifests it writes.
    pub name: String,
    pub pipelines: Vec<Planned>,
    pub cluster: Arc<ClusterLog>,
    /// Consumer settings (bootstrap and pass-through properties).
    pub client: BTreeMap<String, String>,
    pub lake: Arc<Lake>,
    pub state: StateDir,
    /// Local scratch folder for the tasks' state.
    pub scratch: PathBuf,
    pub settings: EngineSettings,
}

struct Nobody;
impl Observer for Nobody {}

/// A running worker, shared by its loop and its HTTP API.
pub struct Worker {
    opts: WorkerOptions,
    rt: tokio::runtime::Handle,
    tasks: Mutex<BTreeMap<(String, u32), Task>>,
    /// Partitions the group gave this worker that have no running task yet.
    pending: Mutex<BTreeSet<(String, u32)>>,
    member: Mutex<Option<Arc<GroupMember>>>,
    stop: AtomicBool,
    rebalances: AtomicU64,
}

/// How often a task that failed to start is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// How often every task's offset is committed to the group again. A commit made during a
/// rebalance is refused (the generation changed), and a task with no new input takes no
/// checkpoint that would commit it again.
const RECOMMIT: Duration = Duration::from_secs(1);

impl Worker {
    pub fn new(opts: WorkerOptions, rt: tokio::runtime::Handle) -> Result<Arc<Worker>, WorkerError> {
        if opts.pipelines.is_empty() {
            return Err(WorkerError::Config("no pipelines to run: add [[pipelines]] to the config file".into()));
        }
        std::fs::create_dir_all(&opts.scratch).map_err(|e| WorkerError::Io(opts.scratch.clone(), e))?;
        Ok(Arc::new(Worker { opts, rt, tasks: Mutex::default(), pending: Mutex::default(), member: Mutex::default(), stop: AtomicBool::new(false), rebalances: AtomicU64::new(0) }))
    }

    /// The source topics, each once.
    pub fn topics(&self) -> Vec<String> {
        let s: BTreeSet<String> = self.opts.pipelines.iter().map(|p| p.plan.source.clone()).collect();
        s.into_iter().collect()
    }

    pub fn group(&self) -> &str {
        &self.opts.group
    }

    pub fn name(&self) -> &str {
        &self.opts.name
    }

    pub fn pipelines(&self) -> &[Planned] {
        &self.opts.pipelines
    }

    /// Rebalances this worker took part in.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Relaxed)
    }

    pub(crate) fn with_tasks<R>(&self, f: impl FnOnce(&BTreeMap<(String, u32), Task>) -> R) -> R {
        f(&self.tasks.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Partitions owned now (running or starting).
    pub fn owned(&self) -> Vec<(String, u32)> {
        let mut v: BTreeSet<(String, u32)> = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        v.extend(self.pending.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        v.into_iter().collect()
    }

    fn on_rebalance(&self, e: GroupEvent) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        let (kind, parts) = match &e {
            GroupEvent::Assigned(p) => ("assigned", p),
            GroupEvent::Revoked(p) => ("revoked", p),
            GroupEvent::Lost(p) => ("lost", p),
        };
        metrics::counter!(t::WORKER_REBALANCES_TOTAL, "kind" => kind).increment(1);
        let list: Vec<String> = parts.iter().map(|(t, p)| format!("{t}-{p}")).collect();
        tracing::info!(group = %self.opts.group, worker = %self.opts.name, kind, partitions = %list.join(","), "rebalance");
        sluice_core::events::global().publish("rebalance", serde_json::json!({"group": self.opts.group, "worker": self.opts.name, "kind": kind, "partitions": list}));
        match e {
            GroupEvent::Assigned(p) => self.pending.lock().unwrap_or_else(|x| x.into_inner()).extend(p),
            GroupEvent::Revoked(p) | GroupEvent::Lost(p) => {
                let lost = kind == "lost";
                for key in p {
                    self.pending.lock().unwrap_or_else(|x| x.into_inner()).remove(&key);
                    let task = self.tasks.lock().unwrap_or_else(|x| x.into_inner()).remove(&key);
                    if let Some(task) = task {
                        // Revoked: this worker still owns the partition until the callback
                        // returns, so its last checkpoint may commit. Lost: commit nothing.
                        task.stop(!lost);
                    }
                }
            }
        }
    }

    fn start_task(self: &Arc<Worker>, member: &Arc<GroupMember>, topic: &str, partition: u32) -> Result<Task, WorkerError> {
        let pipelines: Vec<Planned> = self.opts.pipelines.iter().filter(|p| p.plan.source == topic).cloned().collect();
        let connectors = Arc::new(connectors::TaskConnectors { cluster: self.opts.cluster.clone(), client: self.opts.client.clone(), lake: self.opts.lake.clone(), topic: topic.into(), partition });
        let m = Arc::downgrade(member);
        let t2 = topic.to_string();
        let on_commit = Box::new(move |offset: u64| {
            if let Some(m) = m.upgrade() {
                m.commit(&t2, partition, offset);
            }
        });
        let cx = TaskContext { store: &self.opts.state, rt: &self.rt, worker: &self.opts.name, scratch: &self.opts.scratch, settings: self.opts.settings.clone(), observer: Arc::new(Nobody) };
        Task::start(cx, topic, partition, pipelines, connectors, on_commit)
    }

    /// Joins the group and runs until [`Worker::shutdown`]: serves rebalances, starts the
    /// tasks of assigned partitions, and reloads a task whose engine stopped (fenced, or a
    /// failed checkpoint) while the group still gives this worker its partition. Blocking.
    pub fn run(self: &Arc<Worker>) -> Result<(), WorkerError> {
        let me = Arc::downgrade(self);
        let on = Arc::new(move |e: GroupEvent| {
            if let Some(w) = me.upgrade() {
                w.on_rebalance(e);
            }
        });
        let member = Arc::new(GroupMember::join(&self.opts.client, &self.opts.group, &self.opts.name, &self.topics(), on)?);
        *self.member.lock().unwrap_or_else(|p| p.into_inner()) = Some(member.clone());
        let mut retry_at: BTreeMap<(String, u32), Instant> = BTreeMap::new();
        let mut recommitted = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            member.poll(Duration::from_millis(100));
            if recommitted.elapsed() >= RECOMMIT {
                recommitted = Instant::now();
                let offsets: Vec<(String, u32, u64)> = self.with_tasks(|m| m.iter().filter_map(|((t, p), task)| task.hook.committed_offset().map(|o| (t.clone(), *p, o))).collect());
                for (t, p, o) in offsets {
                    member.commit(&t, p, o);
                }
            }
            let pending: Vec<(String, u32)> = self.pending.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
            for key in pending {
                if retry_at.get(&key).is_some_and(|at| Instant::now() < *at) {
                    continue;
                }
                match self.start_task(&member, &key.0, key.1) {
                    Ok(task) => {
                        tracing::info!(topic = %key.0, partition = key.1, resumed_from = ?task.resumed_from, "task started");
                        retry_at.remove(&key);
                        // Still owned? A rebalance during the start may have taken it.
                        let still = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                        if still {
                            self.tasks.lock().unwrap_or_else(|p| p.into_inner()).insert(key, task);
                        } else {
                            task.stop(false);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(topic = %key.0, partition = key.1, error = %sluice_core::error_chain(&e), "the task could not start; trying again");
                        retry_at.insert(key, Instant::now() + RETRY);
                    }
                }
            }
            // A task whose engine stopped checkpointing: fenced (another worker committed
            // first) or a failed checkpoint. Drop it; if the partition is still ours,
            // start it again from the latest checkpoint in the store.
            let stopped: Vec<(String, u32)> = self.with_tasks(|m| m.iter().filter(|(_, t)| t.engine.fatal().is_some()).map(|(k, _)| k.clone()).collect());
            for key in stopped {
                let task = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                if let Some(task) = task {
                    tracing::warn!(topic = %key.0, partition = key.1, fenced = task.hook.fenced(), error = ?task.engine.fatal(), "the task stopped checkpointing; it is reloaded from the state store");
                    task.stop(false);
                    self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
                }
            }
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, task) in tasks {
            task.stop(true);
        }
        member.leave();
        Ok(())
    }

    /// Ends [`Worker::run`]: every task commits a last checkpoint, and the worker leaves
    /// the group.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Drains `pipeline` on every partition this worker owns (reads what the cluster has
    /// now, closes every window, commits). Returns the partitions drained. Blocking.
    pub fn drain(&self, pipeline: &str) -> Result<Vec<(String, u32)>, String> {
        if !self.opts.pipelines.iter().any(|p| p.spec.name == pipeline) {
            return Err(format!("no pipeline {pipeline:?}"));
        }
        if !self.pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            return Err("partitions are being assigned to this worker; try again in a moment".into());
        }
        // The engines are used outside the lock: a drain takes a while.
        let keys: Vec<(String, u32)> = self.with_tasks(|m| m.keys().cloned().collect());
        let mut done = Vec::new();
        for key in keys {
            let engine = self.with_tasks(|m| m.get(&key).map(|t| t.engine.clone()));
            let Some(engine) = engine else { continue };
            if engine.pipeline(pipeline).is_none() {
                continue;
            }
            engine.drain(pipeline).map_err(|e| format!("{}-{}: {e}", key.0, key.1))?;
            done.push(key);
        }
        Ok(done)
    }
}

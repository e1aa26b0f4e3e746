//! sluice-log: an embedded, durable, partitioned append-only log.
//!
//! Layout under the log directory:
//!
//! ```text
//! <dir>/_topics/<topic>.json              topic metadata: {"name": ..., "partitions": N}
//! <dir>/<topic>-<partition>/<base>.log    segments, <base> = first offset, 20 digits
//! ```
//!
//! Semantics follow Kafka's: offsets are dense and increasing per partition; the high
//! watermark is one past the last durable offset; appends return only once durable
//! (see [`partition`] for group commit and poisoning, [`batch`] for the byte layout,
//! [`segment`] for recovery).

pub mod batch;
mod error;
pub mod offsets;
pub mod partition;
pub mod segment;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

pub use batch::{NewRecord, Record};
pub use error::{DecodeError, LogError, Result};
pub use offsets::{CommittedOffset, OffsetCommit, OffsetStore, OFFSETS_TOPIC};
pub use partition::{AppendInfo, Partition};

use error::io;

/// Log settings. Sizes in bytes, times in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment once the active one would exceed this many bytes.
    pub segment_bytes: u64,
    /// Roll to a new segment once the active one's first batch is this old.
    pub segment_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { segment_bytes: 1 << 30, segment_ms: 7 * 24 * 3600 * 1000 }
    }
}

/// Retention limits of a topic (Kafka's `retention.ms` and `retention.bytes`, per
/// partition). Negative values mean unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retention {
    /// Delete closed segments whose newest record is older than this, ms (default 7 days).
    #[serde(default = "default_retention_ms")]
    pub ms: i64,
    /// Delete the oldest closed segments while a partition is larger than this, bytes
    /// (default unlimited).
    #[serde(default = "unlimited")]
    pub bytes: i64,
}

fn default_retention_ms() -> i64 {
    7 * 24 * 3600 * 1000
}

fn unlimited() -> i64 {
    -1
}

impl Default for Retention {
    fn default() -> Self {
        Retention { ms: default_retention_ms(), bytes: unlimited() }
    }
}

/// Fault injection: one-shot failures of the next segment write or fsync, for testing
/// what the log does when the disk fails (poisoning; see [`partition`]). Inert unless armed.
#[derive(Debug, Default)]
pub struct Faults {
    fail_write: std::sync::atomic::AtomicBool,
    fail_fsync: std::sync::atomic::AtomicBool,
}

impl Faults {
    /// The next segment write fails with ENOSPC ("No space left on device").
    pub fn fail_next_write(&self) {
        self.fail_write.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    /// The next fdatasync fails with EIO.
    pub fn fail_next_fsync(&self) {
        self.fail_fsync.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    pub(crate) fn take_write(&self) -> bool {
        self.fail_write.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
    pub(crate) fn take_fsync(&self) -> bool {
        self.fail_fsync.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

/// Log-wide poison: set by the first failed write or fsync on any partition. After that
/// the disk cannot be trusted (a failed fsync may have dropped dirty pages), so every
/// partition refuses writes until restart; reads continue.
#[derive(Debug, Default)]
pub struct Poison {
    reason: Mutex<Option<String>>,
    set: std::sync::atomic::AtomicBool,
}

impl Poison {
    pub fn is_set(&self) -> bool {
        self.set.load(std::sync::atomic::Ordering::Acquire)
    }
    /// Why the log was poisoned, if it was.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub(crate) fn set(&self, reason: String) {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(reason);
        self.set.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Prefix of partition directories of a topic being deleted.
const DELETED_PREFIX: &str = ".deleted-";

/// When an append is acknowledged (Kafka's `flush.messages`/`flush.ms`, made explicit).
///
/// - `Fsync` (default): after an fdatasync covers it (group commit: concurrent appends
///   share one). Nothing acknowledged is lost on a process crash or a power loss.
/// - `Interval`: after the write reaches the page cache; a background flush fdatasyncs
///   every `flush_interval_ms`. Nothing acknowledged is lost on a process crash (the
///   kernel keeps the page cache), but a machine crash or power loss can lose up to the
///   last `flush_interval_ms` of acknowledged records, which readers may already have seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "policy")]
pub enum Durability {
    #[default]
    Fsync,
    Interval { flush_interval_ms: u64 },
}

/// Functions called after any partition's high watermark moves (see [`Log::on_change`]).
type Listeners = Arc<RwLock<Vec<Arc<dyn Fn() + Send + Sync>>>>;

/// A counter bumped whenever any partition's high watermark moves, so readers can wait
/// for new data across partitions.
#[derive(Default)]
pub struct Changes {
    version: Mutex<u64>,
    cv: Condvar,
    listeners: Listeners,
}

impl Changes {
    pub(crate) fn bump(&self) {
        {
            let mut v = self.version.lock().unwrap_or_else(|p| p.into_inner());
            *v += 1;
            self.cv.notify_all();
        }
        for f in self.listeners.read().unwrap_or_else(|p| p.into_inner()).iter() {
            f();
        }
    }

    /// Current version.
    pub fn version(&self) -> u64 {
        *self.version.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the version differs from `seen` or `timeout` passes; returns the version.
    pub fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = self.version.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |v| *v == seen)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TopicMeta {
    name: String,
    partitions: u32,
    #[serde(default)]
    retention: Retention,
    #[serde(default)]
    durability: Durability,
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: u64,
}

/// Default largest record batch a client may produce to a topic, bytes (Kafka's
/// `max.message.bytes` default, 1 MiB + 12 bytes of log overhead).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1_048_588;

fn default_max_message_bytes() -> u64 {
    DEFAULT_MAX_MESSAGE_BYTES
}

/// Checks a `max.message.bytes` value: 1..=[`batch::MAX_BATCH_BYTES`].
pub fn check_max_message_bytes(bytes: u64) -> Result<()> {
    if (1..=batch::MAX_BATCH_BYTES as u64).contains(&bytes) {
        Ok(())
    } else {
        Err(LogError::InvalidConfig(format!("max.message.bytes must be within 1..={} bytes, got {bytes}", batch::MAX_BATCH_BYTES)))
    }
}

/// A named set of partitions.
pub struct Topic {
    name: String,
    partitions: Vec<Arc<Partition>>,
    changes: Arc<Changes>,
    retention: RwLock<Retention>,
    durability: RwLock<Durability>,
    max_message_bytes: std::sync::atomic::AtomicU64,
}

impl Topic {
    /// Largest record batch a client may produce to the topic, bytes (Kafka's topic config
    /// `max.message.bytes`; at most [`batch::MAX_BATCH_BYTES`]). Appends by sluice itself
    /// (HTTP ingest, pipeline output) are bounded by [`batch::MAX_BATCH_BYTES`] only.
    pub fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }
    pub fn partition(&self, id: u32) -> Result<&Arc<Partition>> {
        self.partitions
            .get(id as usize)
            .ok_or_else(|| LogError::UnknownPartition { topic: self.name.clone(), partition: id })
    }
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }
    /// The topic's retention limits.
    pub fn retention(&self) -> Retention {
        *self.retention.read().unwrap_or_else(|p| p.into_inner())
    }

    /// When the topic's appends are acknowledged.
    pub fn durability(&self) -> Durability {
        *self.durability.read().unwrap_or_else(|p| p.into_inner())
    }

    fn apply_durability(&self, d: Durability) {
        *self.durability.write().unwrap_or_else(|p| p.into_inner()) = d;
        for p in &self.partitions {
            p.set_durability(d);
        }
    }

    /// Change notifications for all of this topic's partitions.
    pub fn changes(&self) -> &Arc<Changes> {
        &self.changes
    }
}

/// The log: every topic under one directory.
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    faults: Arc<Faults>,
    poison: Arc<Poison>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    listeners: Listeners,
}

/// Checks a topic name with Kafka's rules: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(LogError::InvalidTopicName { name: name.to_string(), reason: reason.to_string() });
    if name.is_empty() || name.len() > 249 {
        return bad("must be 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return bad("must not be '.' or '..'");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return bad("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

impl Log {
    /// Opens the log in `dir` (created if missing), recovering every topic found there.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log> {
        let meta_dir = dir.join("_topics");
        std::fs::create_dir_all(&meta_dir).map_err(io(&meta_dir))?;
        let log = Log { dir: dir.to_path_buf(), config, faults: Arc::new(Faults::default()), poison: Arc::new(Poison::default()), topics: RwLock::new(BTreeMap::new()), listeners: Listeners::default() };
        // Finish deletions a crash interrupted (directories renamed aside by delete_topic).
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(DELETED_PREFIX)) {
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        let mut metas = Vec::new();
        for entry in std::fs::read_dir(&meta_dir).map_err(io(&meta_dir))? {
            let path = entry.map_err(io(&meta_dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                let meta: TopicMeta =
                    serde_json::from_slice(&bytes).map_err(|source| LogError::Metadata { path: path.clone(), source })?;
                metas.push(meta);
            }
        }
        for meta in metas {
            let topic = log.open_topic(&meta.name, meta.partitions, meta.retention)?;
            topic.apply_durability(meta.durability);
            topic.max_message_bytes.store(meta.max_message_bytes.clamp(1, batch::MAX_BATCH_BYTES as u64), std::sync::atomic::Ordering::Relaxed);
            log.topics.write().unwrap_or_else(|p| p.into_inner()).insert(meta.name, topic);
        }
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Calls `f` (from the writing thread; keep it short and non-blocking) whenever any
    /// partition's high watermark moves: how async readers (Kafka Fetch long polls) learn
    /// of new data without holding a thread.
    pub fn on_change(&self, f: impl Fn() + Send + Sync + 'static) {
        self.listeners.write().unwrap_or_else(|p| p.into_inner()).push(Arc::new(f));
    }

    /// Segment settings the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The log-wide poison flag (set after a failed write or fsync).
    pub fn poison(&self) -> &Arc<Poison> {
        &self.poison
    }

    /// Fault injection for every partition of this log.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    fn open_topic(&self, name: &str, partitions: u32, retention: Retention) -> Result<Arc<Topic>> {
        let changes = Arc::new(Changes { listeners: self.listeners.clone(), ..Changes::default() });
        let parts = (0..partitions)
            .map(|p| {
                let dir = self.dir.join(format!("{name}-{p}"));
                Partition::open(name, p, &dir, self.config, changes.clone(), self.faults.clone(), self.poison.clone()).map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Topic {
            name: name.to_string(),
            partitions: parts,
            changes,
            retention: RwLock::new(retention),
            durability: RwLock::new(Durability::Fsync),
            max_message_bytes: std::sync::atomic::AtomicU64::new(DEFAULT_MAX_MESSAGE_BYTES),
        }))
    }

    /// Creates a topic with `partitions` partitions and default retention. Errors if it exists.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<Arc<Topic>> {
        self.create_topic_with(name, partitions, Retention::default())
    }

    /// Creates a topic with `partitions` partitions and the given retention. Errors if it exists.
    pub fn create_topic_with(&self, name: &str, partitions: u32, retention: Retention) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        if partitions == 0 {
            return Err(LogError::InvalidTopicName { name: name.into(), reason: "needs at least 1 partition".into() });
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = topics.get(name) {
            return Err(LogError::TopicExists { name: name.into(), partitions: t.partition_count() });
        }
        let topic = self.open_topic(name, partitions, retention)?;
        self.write_meta(&TopicMeta { name: name.into(), partitions, retention, durability: Durability::Fsync, max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES })?;
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Persists topic metadata atomically (temporary file, fsync, rename, directory fsync).
    fn write_meta(&self, meta: &TopicMeta) -> Result<()> {
        let meta_dir = self.dir.join("_topics");
        let path = meta_dir.join(format!("{}.json", meta.name));
        let tmp = meta_dir.join(format!(".{}.json.tmp", meta.name));
        let body = serde_json::to_vec_pretty(meta).unwrap_or_default();
        std::fs::write(&tmp, body).map_err(io(&tmp))?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        partition::sync_dir(&meta_dir)
    }

    /// Deletes a topic and all its data. Its partition directories are first renamed aside
    /// (hidden, so a crash mid-delete never leaves a half topic under the name), then the
    /// metadata is removed, then the directories. Leftovers are removed on the next open.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let topic = topics.remove(name).ok_or_else(|| LogError::UnknownTopic(name.into()))?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut aside = Vec::new();
        for p in topic.partitions() {
            let from = self.dir.join(format!("{name}-{}", p.id()));
            let to = self.dir.join(format!("{DELETED_PREFIX}{name}-{}-{stamp}", p.id()));
            std::fs::rename(&from, &to).map_err(io(&from))?;
            aside.push(to);
        }
        partition::sync_dir(&self.dir)?;
        let meta_dir = self.dir.join("_topics");
        let meta = meta_dir.join(format!("{name}.json"));
        std::fs::remove_file(&meta).map_err(io(&meta))?;
        partition::sync_dir(&meta_dir)?;
        for dir in aside {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(())
    }

    /// The persisted metadata of a topic as it is now.
    fn meta_of(topic: &Topic) -> TopicMeta {
        TopicMeta {
            name: topic.name.clone(),
            partitions: topic.partition_count(),
            retention: topic.retention(),
            durability: topic.durability(),
            max_message_bytes: topic.max_message_bytes(),
        }
    }

    /// Sets a topic's `max.message.bytes` (persisted; applies to the next produce).
    /// Errors: [`LogError::InvalidConfig`] outside 1..=[`batch::MAX_BATCH_BYTES`].
    pub fn set_max_message_bytes(&self, name: &str, bytes: u64) -> Result<()> {
        let topic = self.topic(name).ok_or_else(|| LogError::UnknownTopic(name.into()))?;
        check_max_message_bytes(bytes)?;
        if topic.max_message_bytes() == bytes {
            return Ok(());
        }
        self.write_meta(&TopicMeta { max_message_bytes: bytes, ..Self::meta_of(&topic) })?;
        topic.max_message_bytes.store(bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Sets a topic's retention and durability together, persisting the topic metadata
    /// once, and only if either changed.
    pub fn configure(&self, name: &str, retention: Retention, durability: Durability) -> Result<()> {
        let topic = self.topic(name).ok_or_else(|| LogError::UnknownTopic(name.into()))?;
        if topic.retention() == retention && topic.durability() == durability {
            return Ok(());
        }
        self.write_meta(&TopicMeta { retention, durability, ..Self::meta_of(&topic) })?;
        *topic.retention.write().unwrap_or_else(|p| p.into_inner()) = retention;
        topic.apply_durability(durability);
        Ok(())
    }

    pub fn set_retention(&self, name: &str, retention: Retention) -> Result<()> {
        let topic = self.topic(name).ok_or_else(|| LogError::UnknownTopic(name.into()))?;
        self.write_meta(&TopicMeta { retention, ..Self::meta_of(&topic) })?;
        *topic.retention.write().unwrap_or_else(|p| p.into_inner()) = retention;
        Ok(())
    }

    /// Changes when a topic's appends are acknowledged (persisted; applies to the next append).
    pub fn set_durability(&self, name: &str, durability: Durability) -> Result<()> {
        let topic = self.topic(name).ok_or_else(|| LogError::UnknownTopic(name.into()))?;
        self.write_meta(&TopicMeta { durability, ..Self::meta_of(&topic) })?;
        topic.apply_durability(durability);
        Ok(())
    }

    /// Flushes partitions under `Durability::Interval` whose interval has passed; call
    /// periodically (the server does, every 50 ms). Returns how many were flushed.
    pub fn flush_due(&self) -> Result<usize> {
        let mut n = 0;
        for t in self.topics() {
            if t.durability() != Durability::Fsync {
                for p in t.partitions() {
                    n += usize::from(p.flush_if_due()?);
                }
            }
        }
        Ok(n)
    }

    /// Applies every topic's retention at `now_ms`; returns the segments deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let mut deleted = 0;
        for t in self.topics() {
            let retention = t.retention();
            for p in t.partitions() {
                deleted += p.apply_retention(now_ms, retention)?;
            }
        }
        Ok(deleted)
    }

    /// Returns the topic, creating it with `partitions` if missing. An existing topic keeps
    /// its partition count.
    pub fn ensure_topic(&self, name: &str, partitions: u32) -> Result<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        match self.create_topic(name, partitions) {
            Err(LogError::TopicExists { .. }) => self.topic(name).ok_or_else(|| LogError::UnknownTopic(name.into())),
            other => other,
        }
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Clean shutdown: makes everything durable and writes every active segment's index,
    /// so the next open scans nothing.
    pub fn close(&self) -> Result<()> {
        for t in self.topics() {
            for p in t.partitions() {
                p.close()?;
            }
        }
        Ok(())
    }
}

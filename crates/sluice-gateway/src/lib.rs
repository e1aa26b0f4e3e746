//! sluice-gateway: HTTP and WebSocket ingest into the log.
//!
//! A request (or WebSocket frame) is split into records ([`body`]), each record is
//! validated against its topic's schema, valid records are appended to their partition
//! (keyed records by Kafka's murmur2 partitioner) and rejected ones to the topic's
//! dead-letter topic `<topic>.dlq` with the reason. The reply is sent only after every
//! one of those appends is durable (fsync'd; concurrent requests share fsyncs through the
//! log's group commit). See [`http`] for the routes and wire formats.

pub mod body;
pub mod http;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sluice_core::dead_letter::DeadLetter;
use sluice_core::schema::{Decoder, FieldError, RecordCheck, RecordSchema, SchemaSpec};
use sluice_core::partitioner::partition_for_key;
use sluice_core::telemetry as t;
use sluice_core::time::now_ms;
use sluice_log::{Log, LogError, NewRecord, Retention, Topic};

/// An ingestible topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    #[serde(default = "one")]
    pub partitions: u32,
    /// `"heartbeat"`, `"json"` (any object) or a declared schema (`sluice_core::schema`).
    #[serde(default)]
    pub schema: SchemaSpec,
    /// Field whose string value is the record key (partitioning) when the schema names
    /// none. Heartbeat topics use `playerId`.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Delete closed segments whose newest record is older than this, ms (-1: keep forever).
    #[serde(default = "default_retention_ms")]
    pub retention_ms: i64,
    /// Keep each partition at most about this large, bytes (-1: unlimited).
    #[serde(default = "unlimited")]
    pub retention_bytes: i64,
    /// When appends are acknowledged: `fsync` (after fdatasync, the default) or `interval`
    /// (after the write; fdatasync every `flush_interval_ms`). See `sluice_log::Durability`.
    #[serde(default)]
    pub durability: DurabilityPolicy,
    /// Flush interval of the `interval` policy, ms.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Largest record batch a Kafka producer may send to the topic, bytes (Kafka's
    /// `max.message.bytes`; bigger batches get MESSAGE_TOO_LARGE).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
}

fn default_max_message_bytes() -> u64 {
    sluice_log::DEFAULT_MAX_MESSAGE_BYTES
}

/// The `durability` setting of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityPolicy {
    #[default]
    Fsync,
    Interval,
}

fn default_flush_interval_ms() -> u64 {
    1000
}

fn default_retention_ms() -> i64 {
    Retention::default().ms
}

fn unlimited() -> i64 {
    -1
}

impl TopicSpec {
    pub fn retention(&self) -> Retention {
        Retention { ms: self.retention_ms, bytes: self.retention_bytes }
    }

    pub fn durability(&self) -> sluice_log::Durability {
        match self.durability {
            DurabilityPolicy::Fsync => sluice_log::Durability::Fsync,
            DurabilityPolicy::Interval => sluice_log::Durability::Interval { flush_interval_ms: self.flush_interval_ms },
        }
    }
}

fn one() -> u32 {
    1
}

/// Suffix of dead-letter topics.
pub use sluice_core::dead_letter::DLQ_SUFFIX;

/// Where an accepted record went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub index: usize,
    pub partition: u32,
    pub offset: u64,
}

/// Why a record was rejected (it is kept in the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// The outcome of one body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ingested {
    pub accepted: Vec<Accepted>,
    pub rejected: Vec<Rejected>,
}

/// Whole-request failures.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("topic {0:?} does not exist; list topics with GET /v1/topics")]
    UnknownTopic(String),
    #[error("{0}")]
    Malformed(body::Malformed),
    #[error("topic {0:?} is internal to sluice and does not accept records from clients")]
    InternalTopic(String),
    #[error("topic {topic:?} is the output of pipeline {pipeline:?}; only the pipeline writes it")]
    PipelineOutput { topic: String, pipeline: String },
    #[error("the log could not store the records; nothing from this request was acknowledged")]
    Log(#[from] LogError),
    /// The external cluster (`serve --log kafka://…`) did not acknowledge every record.
    #[error("the cluster at {cluster} did not acknowledge the records; nothing from this request was acknowledged, send it again")]
    External {
        cluster: String,
        #[source]
        source: BoxError,
    },
}

/// Appends to an external log (see [`Gateway::use_external`]): every partition's records
/// and the dead letters in one call, which waits for the cluster's acks. Records are stamped
/// with the receive time, as the embedded log's append time stamps them.
fn append_external(x: &dyn ExternalLog, topic: &str, dlq_name: &str, by_partition: &BTreeMap<u32, Vec<Pending>>, dead: &mut [NewRecord], received_at_ms: i64) -> Result<Vec<(u32, Vec<u64>)>, IngestError> {
    let fail = |source| {
        metrics::counter!(t::CLUSTER_APPEND_FAILURES_TOTAL, "topic" => topic.to_string()).increment(1);
        IngestError::External { cluster: x.describe(), source }
    };
    let started = std::time::Instant::now();
    let stamped: Vec<(u32, Vec<NewRecord>)> = by_partition
        .iter()
        .map(|(&p, pending)| (p, pending.iter().map(|x| NewRecord { timestamp_ms: x.record.timestamp_ms.or(Some(received_at_ms)), ..x.record.clone() }).collect()))
        .collect();
    for d in dead.iter_mut() {
        d.timestamp_ms = d.timestamp_ms.or(Some(received_at_ms));
    }
    let mut batches: Vec<(&str, u32, &[NewRecord])> = stamped.iter().map(|(p, r)| (topic, *p, r.as_slice())).collect();
    if !dead.is_empty() {
        batches.push((dlq_name, 0, &*dead));
    }
    let mut offsets = x.append(&batches).map_err(fail)?;
    if offsets.len() != batches.len() || offsets.iter().zip(&batches).any(|(o, b)| o.len() != b.2.len()) {
        return Err(fail("the cluster client returned offsets that do not match the records sent".into()));
    }
    offsets.truncate(stamped.len());
    let out = stamped.iter().map(|(p, _)| *p).zip(offsets).collect();
    metrics::histogram!(t::CLUSTER_APPEND_DURATION_SECONDS, "topic" => topic.to_string()).record(started.elapsed().as_secs_f64());
    Ok(out)
}

/// Creates `topic` (with `partitions`) and its dead-letter topic (one partition) on `x`
/// when missing; returns the topic's partition count there. A count that differs from
/// the one asked for is logged.
fn ensure_external_topic(x: &dyn ExternalLog, topic: &str, partitions: u32) -> Result<u32, BoxError> {
    let mut n = 0;
    for (name, parts) in [(format!("{topic}{DLQ_SUFFIX}"), 1), (topic.to_string(), partitions)] {
        n = x.ensure_topic(&name, parts)?;
        if n != parts {
            tracing::warn!(topic = %name, configured = parts, cluster = n, "the topic has another partition count on the cluster; records are partitioned by the cluster's");
        }
    }
    Ok(n)
}

/// An error of an [`ExternalLog`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A log outside the process that the gateway appends to instead of the embedded one:
/// an external Kafka cluster under `sluice serve --log kafka://HOST:PORT`.
pub trait ExternalLog: Send + Sync {
    /// Where it is, for messages (`HOST:PORT,…`).
    fn describe(&self) -> String;
    /// The partition count of `topic`, once [`ExternalLog::ensure_topic`] saw it.
    fn partition_count(&self, topic: &str) -> Option<u32>;
    /// Creates `topic` with `partitions` if missing; returns its partition count. Blocking.
    fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<u32, BoxError>;
    /// Appends each batch (`topic`, `partition`, records) and returns once every record
    /// is acknowledged by the cluster's in-sync replicas (acks=all), with each batch's
    /// offsets in order. Blocking. After an error some may be stored: the client resends
    /// (at least once).
    fn append(&self, batches: &[(&str, u32, &[NewRecord])]) -> Result<Vec<Vec<u64>>, BoxError>;
}

/// Live consumer-group membership (the Kafka group coordinator), shown beside committed
/// offsets by the groups API.
pub trait GroupMembership: Send + Sync {
    /// Groups that have members now.
    fn active_groups(&self) -> Vec<String>;
    /// `{"state", "protocol_type", "protocol", "generation", "members": [{"member_id",
    /// "client_id", "client_host", "assignment": [{"topic", "partitions"}]}]}`, or None
    /// for a group the coordinator does not know.
    fn describe(&self, group: &str) -> Option<Value>;
}

/// How one topic's records are checked and keyed.
#[derive(Clone)]
struct Rules {
    /// The declared schema; `None` accepts any JSON object.
    decoder: Option<Arc<Decoder>>,
    key_field: Option<String>,
    /// The pipeline that writes this topic (its output): clients may not.
    writer: Option<String>,
}

/// The ingest gateway over a log.
pub struct Gateway {
    log: Arc<Log>,
    membership: std::sync::OnceLock<Arc<dyn GroupMembership>>,
    offsets: Arc<sluice_log::OffsetStore>,
    /// Topics named in the configuration.
    configured: std::collections::BTreeSet<String>,
    /// Rules of topics with a schema or key (configured, declared at runtime, pipeline outputs).
    rules: std::sync::RwLock<BTreeMap<String, Rules>>,
    /// Where schemas declared at runtime are persisted (`<name>.json`), if anywhere.
    schemas_dir: Option<std::path::PathBuf>,
    round_robin: AtomicU64,
    /// Where records go instead of the embedded log, if set (`serve --log kafka://…`).
    external: std::sync::OnceLock<Arc<dyn ExternalLog>>,
}

/// Why a schema could not be declared.
#[derive(Debug, thiserror::Error)]
pub enum SchemaDeclError {
    #[error("{0}")]
    Invalid(#[from] sluice_core::schema::SchemaError),
    #[error("topic {0:?} is named in the configuration; change its schema there")]
    Configured(String),
    #[error("cannot persist the schema of {topic:?} in {path}: {source}")]
    Io {
        topic: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

struct Pending {
    /// (body number, record index)
    origin: (usize, usize),
    record: NewRecord,
}

impl Gateway {
    /// Creates the configured topics (and their dead-letter topics) if missing. Schemas
    /// declared at runtime are loaded from (and later persisted to) `schemas_dir`.
    /// A configured topic whose schema does not resolve is an error naming it.
    pub fn new(log: Arc<Log>, specs: Vec<TopicSpec>, schemas_dir: Option<&std::path::Path>) -> Result<Gateway, GatewayError> {
        let mut rules = BTreeMap::new();
        for spec in &specs {
            let schema = spec.schema.resolve().map_err(|e| GatewayError::Config(format!("[[topics]] {:?}: {e}", spec.name)))?;
            let topic = log.ensure_topic(&spec.name, spec.partitions)?;
            log.configure(topic.name(), spec.retention(), spec.durability())?;
            log.set_max_message_bytes(topic.name(), spec.max_message_bytes).map_err(|e| GatewayError::Config(format!("[[topics]] {:?}: {e}", spec.name)))?;
            log.ensure_topic(&format!("{}{DLQ_SUFFIX}", spec.name), 1)?;
            rules.insert(spec.name.clone(), Rules { decoder: schema.map(|s| Arc::new(Decoder::new(s))), key_field: spec.key_field.clone(), writer: None });
        }
        if let Some(dir) = schemas_dir {
            std::fs::create_dir_all(dir).map_err(|e| GatewayError::Config(format!("cannot create {}: {e}", dir.display())))?;
            for entry in std::fs::read_dir(dir).map_err(|e| GatewayError::Config(format!("cannot read {}: {e}", dir.display())))?.flatten() {
                let path = entry.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")).map(str::to_string) else { continue };
                if rules.contains_key(&name) {
                    continue;
                }
                let text = std::fs::read(&path).map_err(|e| GatewayError::Config(format!("cannot read {}: {e}", path.display())))?;
                let schema: RecordSchema = serde_json::from_slice(&text).map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))?;
                rules.insert(name, Rules { decoder: Some(Arc::new(Decoder::new(schema))), key_field: None, writer: None });
            }
        }
        let offsets = Arc::new(sluice_log::OffsetStore::open(&log)?);
        Ok(Gateway {
            log,
            membership: std::sync::OnceLock::new(),
            offsets,
            configured: specs.iter().map(|s| s.name.clone()).collect(),
            rules: std::sync::RwLock::new(rules),
            schemas_dir: schemas_dir.map(|d| d.to_path_buf()),
            round_robin: AtomicU64::new(0),
            external: std::sync::OnceLock::new(),
        })
    }

    /// Appends ingested records to `external` instead of the embedded log, from now on:
    /// creates the configured topics and their dead-letter topics there when missing (with
    /// the configured partition counts) and partitions by its counts. Blocking. Errors name
    /// the topic the cluster refused.
    pub fn use_external(&self, external: Arc<dyn ExternalLog>, specs: &[TopicSpec]) -> Result<(), GatewayError> {
        for spec in specs {
            ensure_external_topic(external.as_ref(), &spec.name, spec.partitions).map_err(|e| GatewayError::Config(format!("[[topics]] {:?} on the cluster at {}: {e}", spec.name, external.describe())))?;
        }
        let _ = self.external.set(external);
        Ok(())
    }

    /// Declares (or, with `None`, removes) the schema of a topic at runtime, persisted so
    /// that it survives a restart. Topics named in the configuration keep theirs.
    pub fn declare_schema(&self, topic: &str, schema: Option<RecordSchema>) -> Result<(), SchemaDeclError> {
        if self.configured.contains(topic) {
            return Err(SchemaDeclError::Configured(topic.into()));
        }
        if let Some(s) = &schema {
            s.check()?;
        }
        if let Some(dir) = &self.schemas_dir {
            let path = dir.join(format!("{topic}.json"));
            let io = |source| SchemaDeclError::Io { topic: topic.into(), path: path.clone(), source };
            match &schema {
                Some(s) => {
                    let tmp = dir.join(format!(".{topic}.json.tmp"));
                    std::fs::write(&tmp, serde_json::to_vec_pretty(s).unwrap_or_default()).map_err(io)?;
                    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
                    std::fs::rename(&tmp, &path).map_err(io)?;
                }
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                    _ => {}
                },
            }
        }
        let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
        match schema {
            Some(s) => {
                let writer = rules.get(topic).and_then(|r| r.writer.clone());
                rules.insert(topic.into(), Rules { decoder: Some(Arc::new(Decoder::new(s))), key_field: None, writer });
            }
            None => {
                rules.remove(topic);
            }
        }
        Ok(())
    }

    /// Marks a topic as written by a pipeline (`Some(name)`): clients may no longer produce
    /// to it. `None` lifts that.
    pub fn set_writer(&self, topic: &str, pipeline: Option<&str>) {
        let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
        let r = rules.entry(topic.into()).or_insert(Rules { decoder: None, key_field: None, writer: None });
        r.writer = pipeline.map(str::to_string);
    }

    /// The pipeline that writes a topic, if one does.
    pub fn writer_of(&self, topic: &str) -> Option<String> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).get(topic).and_then(|r| r.writer.clone())
    }

    /// The declared schema of a topic.
    pub fn schema_of(&self, topic: &str) -> Option<RecordSchema> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).get(topic).and_then(|r| r.decoder.as_ref().map(|d| d.schema().clone()))
    }

    /// Every topic with a declared schema.
    pub fn schemas(&self) -> BTreeMap<String, RecordSchema> {
        self.rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(t, r)| r.decoder.as_ref().map(|d| (t.clone(), d.schema().clone())))
            .collect()
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Committed consumer-group offsets (stored in the log's `__consumer_offsets` topic).
    pub fn offsets(&self) -> &Arc<sluice_log::OffsetStore> {
        &self.offsets
    }

    /// Connects the live group membership (once; later calls are ignored).
    pub fn set_membership(&self, m: Arc<dyn GroupMembership>) {
        let _ = self.membership.set(m);
    }

    /// Groups with committed offsets or live members, sorted.
    pub fn groups(&self) -> Vec<String> {
        let mut g = self.offsets.groups();
        g.extend(self.membership.get().map(|m| m.active_groups()).unwrap_or_default());
        g.sort();
        g.dedup();
        g
    }

    /// Whether a group has live members (then its offsets must not be deleted).
    pub fn group_is_active(&self, group: &str) -> bool {
        self.membership.get().is_some_and(|m| m.active_groups().iter().any(|g| g == group))
    }

    /// A group's committed offsets with each partition's high watermark and lag, and its
    /// live state and members when the group coordinator knows it.
    pub fn describe_group(&self, group: &str) -> Value {
        let mut v = self.describe_offsets(group);
        if let (Some(live), Some(obj)) = (self.membership.get().and_then(|m| m.describe(group)), v.as_object_mut()) {
            for key in ["state", "protocol_type", "protocol", "generation", "members"] {
                obj.insert(key.into(), live[key].clone());
            }
        }
        v
    }

    /// A group's committed offsets as (topic, partition, committed, the partition's high
    /// watermark if it still exists). Lag is `high watermark - committed offset`.
    pub fn committed_with_high_watermarks(&self, group: &str) -> Vec<(String, u32, sluice_log::CommittedOffset, Option<u64>)> {
        self.offsets
            .group(group)
            .into_iter()
            .map(|(topic, partition, c)| {
                let hw = self.log.topic(&topic).and_then(|t| t.partition(partition).ok().map(|p| p.high_watermark()));
                (topic, partition, c, hw)
            })
            .collect()
    }

    fn describe_offsets(&self, group: &str) -> Value {
        let offsets: Vec<Value> = self
            .committed_with_high_watermarks(group)
            .into_iter()
            .map(|(topic, partition, c, hw)| {
                json!({
                    "topic": topic, "partition": partition, "offset": c.offset, "metadata": c.metadata,
                    "commit_ms": c.commit_ms, "high_watermark": hw, "lag": hw.map(|h| h.saturating_sub(c.offset)),
                })
            })
            .collect();
        json!({"group": group, "offsets": offsets})
    }

    /// How a topic's records are validated and keyed: its declared schema, or, for other
    /// topics in the log, any JSON object (keyed by `key_field` if configured).
    fn ingest_rules(&self, topic: &str) -> Option<Rules> {
        self.log.topic(topic)?;
        Some(self.rules.read().unwrap_or_else(|p| p.into_inner()).get(topic).cloned().unwrap_or(Rules { decoder: None, key_field: None, writer: None }))
    }

    /// Checks that a topic can be ingested into.
    pub fn check_topic(&self, topic: &str) -> Result<(), IngestError> {
        if topic.starts_with("__") {
            return Err(IngestError::InternalTopic(topic.into()));
        }
        let rules = self.ingest_rules(topic).ok_or_else(|| IngestError::UnknownTopic(topic.into()))?;
        match rules.writer {
            Some(p) => Err(IngestError::PipelineOutput { topic: topic.into(), pipeline: p }),
            None => Ok(()),
        }
    }

    /// Ingests several bodies (e.g. WebSocket frames received together) with one append
    /// per partition and one fsync per partition. Blocking (file I/O): call from a
    /// blocking thread. Per-body results are in input order.
    pub fn ingest_many(&self, topic: &str, bodies: &[(&[u8], bool)], transport: &str) -> Result<Vec<Result<Ingested, IngestError>>, IngestError> {
        self.check_topic(topic)?;
        let rules = self.ingest_rules(topic).ok_or_else(|| IngestError::UnknownTopic(topic.into()))?;
        let log_topic = self.log.topic(topic).ok_or_else(|| IngestError::UnknownTopic(topic.into()))?;
        let dlq_name = format!("{topic}{DLQ_SUFFIX}");
        let external = self.external.get();
        let partition_count = match external {
            Some(x) => match x.partition_count(topic) {
                Some(n) => n,
                // A topic created at runtime (POST /v1/topics) is created on the cluster
                // at its first records.
                None => ensure_external_topic(x.as_ref(), topic, log_topic.partition_count()).map_err(|source| IngestError::External { cluster: x.describe(), source })?,
            },
            None => log_topic.partition_count(),
        };
        let received_at_ms = now_ms();
        let mut results: Vec<Result<Ingested, IngestError>> = Vec::with_capacity(bodies.len());
        let mut by_partition: BTreeMap<u32, Vec<Pending>> = BTreeMap::new();
        let mut dead: Vec<NewRecord> = Vec::new();
        for (b, (bytes, ndjson)) in bodies.iter().enumerate() {
            metrics::counter!(t::INGEST_RECEIVED_BYTES_TOTAL, "transport" => transport.to_string()).increment(bytes.len() as u64);
            let items = match body::split(bytes, *ndjson) {
                Ok(items) => items,
                Err(m) => {
                    metrics::counter!(t::INGEST_REFUSED_REQUESTS_TOTAL, "reason" => "malformed").increment(1);
                    dead.push(dead_letter(topic, None, "$", &m.to_string(), &String::from_utf8_lossy(bytes), transport, received_at_ms));
                    results.push(Err(IngestError::Malformed(m)));
                    continue;
                }
            };
            let mut outcome = Ingested::default();
            for item in items {
                let checked = item.value.and_then(|v| check_record(&rules, &v));
                match checked {
                    Ok(key) => {
                        let partition = match &key {
                            Some(k) => partition_for_key(k, partition_count),
                            None => (self.round_robin.fetch_add(1, Ordering::Relaxed) % partition_count as u64) as u32,
                        };
                        by_partition
                            .entry(partition)
                            .or_default()
                            .push(Pending { origin: (b, item.index), record: NewRecord::new(key, item.raw.as_bytes().to_vec()) });
                    }
                    Err(e) => {
                        metrics::counter!(t::INGEST_REJECTED_RECORDS_TOTAL, "topic" => topic.to_string(), "field" => e.field.clone()).increment(1);
                        dead.push(dead_letter(topic, Some(item.index), &e.field, &e.reason, item.raw, transport, received_at_ms));
                        outcome.rejected.push(Rejected { index: item.index, field: e.field, reason: e.reason });
                    }
                }
            }
            results.push(Ok(outcome));
        }
        let offsets = match external {
            Some(x) => append_external(x.as_ref(), topic, &dlq_name, &by_partition, &mut dead, received_at_ms)?,
            None => self.append_local(&log_topic, &dlq_name, &by_partition, &dead, received_at_ms)?,
        };
        let mut accepted_total = 0u64;
        for ((p, offsets), (_, pending)) in offsets.iter().zip(&by_partition) {
            for (x, offset) in pending.iter().zip(offsets) {
                if let Ok(outcome) = &mut results[x.origin.0] {
                    outcome.accepted.push(Accepted { index: x.origin.1, partition: *p, offset: *offset });
                }
            }
            accepted_total += pending.len() as u64;
            metrics::counter!(t::LOG_APPENDED_RECORDS_TOTAL, "topic" => topic.to_string()).increment(pending.len() as u64);
        }
        metrics::counter!(t::INGEST_RECORDS_TOTAL, "topic" => topic.to_string(), "transport" => transport.to_string()).increment(accepted_total);
        for r in results.iter_mut().flatten() {
            r.accepted.sort_by_key(|a| a.index);
        }
        Ok(results)
    }

    /// Writes each partition's records and the dead letters to the embedded log, then waits
    /// for their durability (per each topic's policy; by default an fsync shared by group
    /// commit). Returns each partition's offsets, in `by_partition` order.
    fn append_local(&self, log_topic: &Arc<sluice_log::Topic>, dlq_name: &str, by_partition: &BTreeMap<u32, Vec<Pending>>, dead: &[NewRecord], received_at_ms: i64) -> Result<Vec<(u32, Vec<u64>)>, IngestError> {
        let dlq = self.log.ensure_topic(dlq_name, 1)?;
        // Write everything, then wait for durability of all of it, then answer.
        let mut written = Vec::new();
        for (&p, pending) in by_partition {
            let records: Vec<NewRecord> = pending.iter().map(|x| x.record.clone()).collect();
            let info = log_topic.partition(p)?.write(&records, received_at_ms)?;
            written.push((p, info));
        }
        let dlq_info = if dead.is_empty() { None } else { Some(dlq.partition(0)?.write(dead, received_at_ms)?) };
        for (p, info) in &written {
            log_topic.partition(*p)?.complete(info)?;
        }
        if let Some(info) = dlq_info {
            dlq.partition(0)?.complete(&info)?;
        }
        Ok(written.iter().zip(by_partition.values()).map(|((p, info), pending)| (*p, (0..pending.len() as u64).map(|i| info.base_offset + i).collect())).collect())
    }

    /// Ingests one body. See [`Gateway::ingest_many`].
    pub fn ingest(&self, topic: &str, body: &[u8], ndjson: bool, transport: &str) -> Result<Ingested, IngestError> {
        self.ingest_many(topic, &[(body, ndjson)], transport)?.pop().unwrap_or_else(|| Ok(Ingested::default()))
    }

    /// How Kafka-produced records of a topic are checked: for a topic with a declared
    /// schema, a function from a record value to its first field error; `None` for other
    /// topics (their records are opaque bytes).
    pub fn record_check(&self, topic: &str) -> Option<RecordCheck> {
        let decoder = self.rules.read().unwrap_or_else(|p| p.into_inner()).get(topic)?.decoder.clone()?;
        Some(Arc::new(move |bytes: &[u8]| {
            let mut out = Vec::new();
            decoder.decode(bytes, &mut out)
        }))
    }

    /// Topics with their partitions' offsets.
    pub fn describe(&self) -> Vec<Value> {
        self.log.topics().iter().map(|t| describe_topic(t)).collect()
    }

    /// One topic, described, with its schema and writer.
    pub fn describe_one(&self, name: &str) -> Option<Value> {
        let mut v = self.log.topic(name).map(|t| describe_topic(&t))?;
        v["schema"] = serde_json::to_value(self.schema_of(name)).unwrap_or(Value::Null);
        v["written_by"] = json!(self.writer_of(name));
        Some(v)
    }

    /// Deletes a topic, every group's committed offsets for it, and its declared schema.
    pub fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        self.offsets.delete_topic(&self.log, name, sluice_core::time::now_ms())?;
        if !self.configured.contains(name) {
            if let Err(e) = self.declare_schema(name, None) {
                tracing::warn!(topic = name, error = %e, "the deleted topic's schema file was not removed");
            }
        }
        Ok(())
    }

    /// Whether a topic is named in the configuration (or is the dead-letter topic of one, or
    /// internal: named `__…`, as `__consumer_offsets` and `__audit`): such topics cannot be
    /// deleted through the API.
    pub fn is_configured(&self, name: &str) -> bool {
        name.starts_with("__")
            || self.configured.contains(name)
            || name.strip_suffix(DLQ_SUFFIX).is_some_and(|n| self.configured.contains(n))
    }
}

/// Validates one record against its topic's rules; returns its key.
fn check_record(rules: &Rules, v: &Value) -> Result<Option<Vec<u8>>, FieldError> {
    match &rules.decoder {
        Some(d) => {
            let values = d.schema().decode_value(v)?;
            let key = d.schema().key_of(&values);
            Ok(key.or_else(|| rules.key_field.as_deref().and_then(|f| v.get(f)).and_then(|k| k.as_str()).map(|k| k.as_bytes().to_vec())))
        }
        None => {
            let obj = v.as_object().ok_or_else(|| FieldError::new("$", "expected a JSON object"))?;
            Ok(rules.key_field.as_deref().and_then(|f| obj.get(f)).and_then(|k| k.as_str()).map(|k| k.as_bytes().to_vec()))
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the log failed")]
    Log(#[from] LogError),
    #[error("{0}")]
    Config(String),
}

fn describe_topic(topic: &Topic) -> Value {
    let parts: Vec<Value> = topic
        .partitions()
        .iter()
        .map(|p| {
            json!({
                "partition": p.id(),
                "log_start_offset": p.log_start_offset(),
                "high_watermark": p.high_watermark(),
                "durable_offset": p.durable_offset(),
                "log_end_offset": p.log_end_offset(),
                "size_bytes": p.size_bytes(),
                "segments": p.segment_count(),
            })
        })
        .collect();
    let r = topic.retention();
    json!({"name": topic.name(), "retention_ms": r.ms, "retention_bytes": r.bytes, "durability": topic.durability(), "max_message_bytes": topic.max_message_bytes(), "partitions": parts})
}

/// A dead-letter record (layout: `sluice_core::dead_letter`).
fn dead_letter(topic: &str, index: Option<usize>, field: &str, reason: &str, raw: &str, transport: &str, at_ms: i64) -> NewRecord {
    let value = DeadLetter { topic, index, field, reason, record: raw, transport, received_at_ms: at_ms, stored_at: None }.to_value();
    NewRecord::new(None, value)
}

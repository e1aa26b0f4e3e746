//! The stream engine's traits implemented over the embedded log, the lake and the gateway:
//! topics as pipeline sources, lake tables and topics as transactional sinks.
//!
//! Topic sink protocol (exactly once): at a checkpoint, a pipeline's rows for an output
//! topic are written as NDJSON to `checkpoints/staging/<id>/<pipeline>/<topic>.ndjson`
//! (fsync'd). Once the checkpoint is committed they are appended to the topic as one
//! batch whose records carry the headers `sluice.pipeline` and `sluice.checkpoint`, and the
//! staging file is removed. A sink publishing for the first time (after a restart) first
//! looks for its pipeline's batch of that checkpoint at the topic's tail, so a publish that
//! completed before a crash is not repeated.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use sluice_gateway::Gateway;
use sluice_lake::Lake;
use sluice_log::batch::RecordHeader;
use sluice_log::{Log, NewRecord, Topic};
use sluice_stream::decode::{SourceChunk, SourceRef};
use sluice_stream::runner::{Connectors, Sink, Source};
use sluice_stream::BoxError;

/// Header naming the pipeline that wrote a record.
pub const PIPELINE_HEADER: &str = "sluice.pipeline";
/// Header naming the checkpoint a record was committed with.
pub const CHECKPOINT_HEADER: &str = "sluice.checkpoint";
/// How many records at a topic's tail a restarted sink searches for its last publish.
const TAIL_SCAN_RECORDS: u64 = 200_000;

/// A log topic as a pipeline source. Reads stop at the high watermark (durable data only).
pub struct LogSource {
    pub topic: Arc<Topic>,
}

impl Source for LogSource {
    fn partition_count(&self) -> u32 {
        self.topic.partition_count()
    }

    /// At most `max_records`, from whole stored batches of about 256 bytes a record.
    fn read(&self, partition: u32, offset: u64, max_records: usize) -> Result<SourceChunk, BoxError> {
        let (buf, refs) = self.topic.partition(partition)?.read_values(offset, max_records, max_records.saturating_mul(256).clamp(1, 16 << 20))?;
        Ok(SourceChunk { buf, records: refs.into_iter().map(|r| SourceRef { offset: r.offset, timestamp_ms: r.timestamp_ms, start: r.start, len: r.len }).collect() })
    }

    fn start_offset(&self, partition: u32) -> u64 {
        self.topic.partition(partition).map(|p| p.log_start_offset()).unwrap_or(0)
    }

    fn end_offset(&self, partition: u32) -> u64 {
        self.topic.partition(partition).map(|p| p.high_watermark()).unwrap_or(0)
    }

    fn wait(&self, timeout: Duration) {
        let changes = self.topic.changes();
        changes.wait(changes.version(), timeout);
    }
}

/// A lake table as a pipeline sink.
pub struct LakeSink {
    lake: Arc<Lake>,
    pipeline: String,
    table: String,
    retention_ms: i64,
    last_retention_ms: i64,
}

impl LakeSink {
    /// A sink of `pipeline` (its Delta `txn` app id is `sluice/<pipeline>`) into `table`,
    /// applying `retention_ms` (-1: keep forever) at most once a minute.
    pub fn new(lake: Arc<Lake>, pipeline: String, table: String, retention_ms: i64) -> LakeSink {
        LakeSink { lake, pipeline, table, retention_ms, last_retention_ms: 0 }
    }
}

impl Sink for LakeSink {
    fn stage(&mut self, id: u64, batches: &[RecordBatch]) -> Result<Vec<String>, BoxError> {
        Ok(self.lake.stage_table(&self.table, id, batches, sluice_core::time::now_ms())?)
    }

    fn publish(&mut self, id: u64, staged: &[String]) -> Result<(), BoxError> {
        self.lake.publish(&self.table, &self.pipeline, id, staged)?;
        let now = sluice_core::time::now_ms();
        if self.retention_ms >= 0 && now - self.last_retention_ms >= 60_000 {
            self.last_retention_ms = now;
            let n = self.lake.apply_retention(&self.table, self.retention_ms, now)?;
            if n > 0 {
                tracing::info!(table = %self.table, files = n, "lake retention removed the files of expired date partitions");
            }
        }
        Ok(())
    }
}

/// A topic as a pipeline sink (protocol in the module docs).
pub struct TopicSink {
    log: Arc<Log>,
    pipeline: String,
    topic: String,
    staging: PathBuf,
    searched: bool,
}

fn io_err(path: &Path, e: std::io::Error) -> BoxError {
    format!("{}: {e}", path.display()).into()
}

impl TopicSink {
    fn rel(&self, id: u64) -> String {
        format!("{id:020}/{}/{}.ndjson", self.pipeline, self.topic)
    }

    /// Whether this pipeline's batch of checkpoint `id` is already at the topic's tail.
    fn already_published(&self, topic: &Topic, id: u64) -> Result<bool, BoxError> {
        let p = topic.partition(0)?;
        let (start, end) = (p.log_start_offset(), p.high_watermark());
        let mut offset = end.saturating_sub(TAIL_SCAN_RECORDS).max(start);
        let id_text = id.to_string();
        while offset < end {
            let records = p.read(offset, 10_000, 64 << 20)?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            let found = records.iter().any(|r| {
                let h = |k: &str| r.headers.iter().find(|h| h.key == k).and_then(|h| h.value.as_deref());
                h(PIPELINE_HEADER) == Some(self.pipeline.as_bytes()) && h(CHECKPOINT_HEADER) == Some(id_text.as_bytes())
            });
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Rows as newline-delimited JSON text, one line per row, appended to `out`: a lone
/// `json` text column as it is, otherwise one object per row (timestamps as RFC 3339).
/// Returns the number of lines.
pub fn json_lines(batches: &[RecordBatch], out: &mut Vec<u8>) -> Result<usize, BoxError> {
    let mut n = 0;
    for b in batches {
        let schema = b.schema();
        if schema.fields().len() == 1 && schema.field(0).name() == "json" && schema.field(0).data_type() == &DataType::Utf8 {
            for v in b.column(0).as_string::<i32>().iter() {
                out.extend_from_slice(v.unwrap_or("null").as_bytes());
                out.push(b'\n');
            }
        } else {
            let mut w = arrow_json::LineDelimitedWriter::new(&mut *out);
            w.write(b)?;
            w.finish()?;
        }
        n += b.num_rows();
    }
    Ok(n)
}

impl Sink for TopicSink {
    fn stage(&mut self, id: u64, batches: &[RecordBatch]) -> Result<Vec<String>, BoxError> {
        let mut body = Vec::new();
        if json_lines(batches, &mut body)? == 0 {
            return Ok(Vec::new());
        }
        let rel = self.rel(id);
        let path = self.staging.join(&rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        std::fs::write(&path, body).map_err(|e| io_err(&path, e))?;
        std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|e| io_err(&path, e))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))?;
        }
        Ok(vec![rel])
    }

    fn publish(&mut self, id: u64, staged: &[String]) -> Result<(), BoxError> {
        let topic = self.log.ensure_topic(&self.topic, 1)?;
        for rel in staged {
            let path = self.staging.join(rel);
            let searched = std::mem::replace(&mut self.searched, true);
            if !path.exists() {
                if self.already_published(&topic, id)? {
                    continue;
                }
                return Err(format!("staged output {} of checkpoint {id} is missing and was never published", path.display()).into());
            }
            if !searched && self.already_published(&topic, id)? {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let body = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
            let headers = vec![
                RecordHeader { key: PIPELINE_HEADER.into(), value: Some(self.pipeline.as_bytes().to_vec()) },
                RecordHeader { key: CHECKPOINT_HEADER.into(), value: Some(id.to_string().into_bytes()) },
            ];
            let records: Vec<NewRecord> = body
                .split(|c| *c == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| NewRecord { key: None, value: l.to_vec(), headers: headers.clone(), timestamp_ms: None })
                .collect();
            let p = topic.partition(0)?;
            let info = p.write(&records, sluice_core::time::now_ms())?;
            p.complete(&info)?;
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        }
        Ok(())
    }
}

/// Pipelines' sources and sinks over this server's log, lake and gateway.
pub struct ServerConnectors {
    pub log: Arc<Log>,
    pub lake: Arc<Lake>,
    pub gateway: Arc<Gateway>,
    /// Where topic sinks stage their output (`checkpoints/staging`).
    pub staging: PathBuf,
}

impl Connectors for ServerConnectors {
    fn source(&self, topic: &str) -> Result<Box<dyn Source>, BoxError> {
        let t = self.log.topic(topic).ok_or_else(|| format!("topic {topic:?} does not exist"))?;
        Ok(Box::new(LogSource { topic: t }))
    }

    fn sink(&self, pipeline: &str, name: &str, retention_ms: i64) -> Result<Box<dyn Sink>, BoxError> {
        if let Some(table) = name.strip_prefix("lake:") {
            return Ok(Box::new(LakeSink { lake: self.lake.clone(), pipeline: pipeline.into(), table: table.into(), retention_ms, last_retention_ms: 0 }));
        }
        if let Some(topic) = name.strip_prefix("topic:") {
            if self.gateway.is_configured(topic) {
                return Err(format!("pipeline {pipeline:?} cannot write topic {topic:?}: it is a configured input topic").into());
            }
            self.log.ensure_topic(topic, 1)?;
            if topic != sluice_stream::pipeline::ALERTS_TOPIC {
                self.gateway.set_writer(topic, Some(pipeline));
            }
            return Ok(Box::new(TopicSink { log: self.log.clone(), pipeline: pipeline.into(), topic: topic.into(), staging: self.staging.clone(), searched: false }));
        }
        Err(format!("unknown sink {name:?}").into())
    }

    fn discard_staged_after(&self, _id: u64) -> Result<(), BoxError> {
        // Lake files of uncommitted checkpoints are in no Delta commit; vacuum deletes them.
        if self.staging.exists() {
            for entry in std::fs::read_dir(&self.staging).map_err(|e| io_err(&self.staging, e))?.flatten() {
                let path = entry.path();
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        Ok(())
    }

    fn register_output(&self, pipeline: &str, topic: &str, schema: &SchemaRef) -> Result<(), BoxError> {
        if self.gateway.is_configured(topic) {
            return Err(format!("pipeline {pipeline:?} would write the configured topic {topic:?}; rename the pipeline").into());
        }
        self.log.ensure_topic(topic, 1)?;
        if let Some(s) = sluice_stream::pipeline::derived_schema(schema) {
            if self.gateway.schema_of(topic).as_ref() != Some(&s) {
                self.gateway.declare_schema(topic, Some(s))?;
            }
        }
        self.gateway.set_writer(topic, Some(pipeline));
        Ok(())
    }
}

/// The Kafka group coordinator as the groups API's live membership.
pub struct KafkaMembership(pub Arc<sluice_kafka::KafkaServer>);

impl sluice_gateway::GroupMembership for KafkaMembership {
    fn active_groups(&self) -> Vec<String> {
        self.0.active_groups()
    }

    fn describe(&self, group: &str) -> Option<serde_json::Value> {
        let g = self.0.group_view(group)?;
        let members: Vec<serde_json::Value> = g
            .members
            .into_iter()
            .map(|m| {
                let assignment: Vec<serde_json::Value> = m.assignment.into_iter().map(|(t, p)| serde_json::json!({"topic": t, "partitions": p})).collect();
                serde_json::json!({"member_id": m.member_id, "client_id": m.client_id, "client_host": m.client_host, "assignment": assignment})
            })
            .collect();
        Some(serde_json::json!({"state": g.state, "protocol_type": g.protocol_type, "protocol": g.protocol, "generation": g.generation, "members": members}))
    }
}

//! A task's sources and sinks: its partition of the cluster topic, lake tables in the
//! object store, and output topics on the cluster.
//!
//! - Lake tables: as in `serve` (`sluice_server::adapters::LakeSink`), with the Delta `txn`
//!   app id `sluice/<pipeline>@<topic>-<partition>`: one per pipeline and partition, so the
//!   tasks of one table commit concurrently and each commit is exactly once.
//! - Output topics: staged rows travel in the manifest (NDJSON text, one handle a
//!   checkpoint), so any worker can publish them after a crash; published with the
//!   cluster's idempotent producer to partition 0, each record with the headers
//!   `sluice.pipeline`, `sluice.checkpoint` and `sluice.task`. A publish repeated by
//!   recovery (the owner died between its checkpoint and the producer's acks) is produced
//!   again: at least once, and the headers tell a consumer which repeat it saw.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use sluice_cluster::source::PartitionSource;
use sluice_cluster::ClusterLog;
use sluice_lake::Lake;
use sluice_log::batch::RecordHeader;
use sluice_log::NewRecord;
use sluice_server::adapters::{json_lines, LakeSink, CHECKPOINT_HEADER, PIPELINE_HEADER};
use sluice_stream::runner::{Connectors, Sink, Source};
use sluice_stream::BoxError;

/// Header naming the task (`<topic>-<partition>`) whose checkpoint produced a record.
pub const TASK_HEADER: &str = "sluice.task";

/// How long a request to the cluster may take.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// The connectors of the task of `topic`/`partition`.
pub struct TaskConnectors {
    pub cluster: Arc<ClusterLog>,
    /// Consumer settings (bootstrap and pass-through properties).
    pub client: std::collections::BTreeMap<String, String>,
    pub lake: Arc<Lake>,
    pub topic: String,
    pub partition: u32,
}

impl TaskConnectors {
    fn task(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl Connectors for TaskConnectors {
    fn source(&self, topic: &str) -> Result<Box<dyn Source>, BoxError> {
        if topic != self.topic {
            return Err(format!("the task of {:?} cannot read topic {topic:?}", self.topic).into());
        }
        Ok(Box::new(PartitionSource::open(&self.client, topic, self.partition, CLUSTER_TIMEOUT)?))
    }

    fn sink(&self, pipeline: &str, name: &str, retention_ms: i64) -> Result<Box<dyn Sink>, BoxError> {
        if let Some(table) = name.strip_prefix("lake:") {
            // Another worker may have committed with this app id since this process last did.
            let app = format!("{pipeline}@{}", self.task());
            self.lake.forget_pipeline(&app);
            return Ok(Box::new(LakeSink::new(self.lake.clone(), app, table.into(), retention_ms)));
        }
        if let Some(topic) = name.strip_prefix("topic:") {
            return Ok(Box::new(ClusterTopicSink { cluster: self.cluster.clone(), pipeline: pipeline.into(), topic: topic.into(), task: self.task(), ensured: false }));
        }
        Err(format!("unknown sink {name:?}").into())
    }

    fn discard_staged_after(&self, _id: u64) -> Result<(), BoxError> {
        // Lake files of uncommitted checkpoints are in no Delta commit (vacuum deletes them);
        // topic output of one is in no manifest.
        Ok(())
    }

    fn register_output(&self, _pipeline: &str, topic: &str, _schema: &SchemaRef) -> Result<(), BoxError> {
        self.cluster.ensure_topic(topic, 1, CLUSTER_TIMEOUT)?;
        Ok(())
    }
}

/// An output topic on the cluster (protocol in the module docs).
struct ClusterTopicSink {
    cluster: Arc<ClusterLog>,
    pipeline: String,
    topic: String,
    task: String,
    ensured: bool,
}

impl Sink for ClusterTopicSink {
    fn stage(&mut self, _id: u64, batches: &[RecordBatch]) -> Result<Vec<String>, BoxError> {
        let mut body = Vec::new();
        if json_lines(batches, &mut body)? == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![String::from_utf8(body)?])
    }

    fn publish(&mut self, id: u64, staged: &[String]) -> Result<(), BoxError> {
        if staged.is_empty() {
            return Ok(());
        }
        if !self.ensured {
            self.cluster.ensure_topic(&self.topic, 1, CLUSTER_TIMEOUT)?;
            self.ensured = true;
        }
        let headers = vec![
            RecordHeader { key: PIPELINE_HEADER.into(), value: Some(self.pipeline.as_bytes().to_vec()) },
            RecordHeader { key: CHECKPOINT_HEADER.into(), value: Some(id.to_string().into_bytes()) },
            RecordHeader { key: TASK_HEADER.into(), value: Some(self.task.as_bytes().to_vec()) },
        ];
        let records: Vec<NewRecord> = staged
            .iter()
            .flat_map(|body| body.lines())
            .filter(|l| !l.is_empty())
            .map(|l| NewRecord { key: None, value: l.as_bytes().to_vec(), headers: headers.clone(), timestamp_ms: None })
            .collect();
        self.cluster.append(&[(self.topic.as_str(), 0, &records)], CLUSTER_TIMEOUT)?;
        Ok(())
    }
}

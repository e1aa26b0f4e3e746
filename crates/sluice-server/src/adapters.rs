//! The stream engine's traits implemented over the embedded log and the lake.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::model::{RawRow, SessionSummary};
use sluice_lake::Lake;
use sluice_log::Topic;
use sluice_stream::runner::{Sink, Source, SourceRecord};
use sluice_stream::BoxError;

/// A log topic as a job source. Reads stop at the high watermark (durable data only).
pub struct LogSource {
    pub topic: Arc<Topic>,
}

impl Source for LogSource {
    fn partition_count(&self) -> u32 {
        self.topic.partition_count()
    }

    fn read(&self, partition: u32, offset: u64, max_records: usize) -> Result<Vec<SourceRecord>, BoxError> {
        let records = self.topic.partition(partition)?.read(offset, max_records, 8 << 20)?;
        Ok(records.into_iter().map(|r| SourceRecord { offset: r.offset, timestamp_ms: r.timestamp_ms, value: r.value }).collect())
    }

    fn end_offset(&self, partition: u32) -> u64 {
        self.topic.partition(partition).map(|p| p.high_watermark()).unwrap_or(0)
    }

    fn wait(&self, timeout: Duration) {
        let changes = self.topic.changes();
        changes.wait(changes.version(), timeout);
    }
}

/// The lake as the job's transactional sink.
pub struct LakeSink {
    pub lake: Lake,
}

impl Sink for LakeSink {
    fn stage(&mut self, id: u64, raw: &[RawRow], sessions: &[SessionSummary]) -> Result<Vec<String>, BoxError> {
        Ok(self.lake.stage(id, raw, sessions)?)
    }

    fn publish(&mut self, staged: &[String]) -> Result<(), BoxError> {
        Ok(self.lake.publish(staged)?)
    }

    fn discard_after(&mut self, id: u64) -> Result<(), BoxError> {
        Ok(self.lake.discard_after(id)?)
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

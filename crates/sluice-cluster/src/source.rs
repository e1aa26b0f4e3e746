//! One partition of a topic on the external cluster as a pipeline source (sluice-stream's
//! [`Source`]), for `sluice worker`: each task reads its partition with its own consumer,
//! assigned to it (no group: the worker's group member only holds the assignment and
//! commits offsets, see [`crate::group`]).
//!
//! The source shows the partition as its only one (index 0); records carry the topic's
//! partition number in `_partition` ([`Source::partition_id`]). Once reading, the high
//! watermark is the one librdkafka caches from its fetch responses, refreshed by its
//! background fetcher, so `end_offset` costs no request; before the first read it is asked
//! of the cluster, at most every [`UNASSIGNED_REFRESH`].
//!
//! The consumer is assigned once, at the first read's offset. (Assigning it earlier, at the
//! end, let records fetched for that position reach the first read after the reassignment:
//! a task then skipped a second of readings.)

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sluice_stream::decode::{SourceChunk, SourceRef};
use sluice_stream::runner::Source;
use sluice_stream::BoxError;

use crate::ClusterError;

/// How often the watermarks are asked of the cluster before the first read.
const UNASSIGNED_REFRESH: Duration = Duration::from_millis(100);

/// How long a read waits for the first record when none is buffered.
const FIRST_RECORD_WAIT: Duration = Duration::from_millis(20);

/// Partition `partition` of `topic` on the cluster.
pub struct PartitionSource {
    topic: String,
    partition: u32,
    consumer: BaseConsumer,
    /// The offset the next polled record should have (None: not positioned by a read yet).
    /// Held through a read, so that reads take turns.
    next: Mutex<Option<u64>>,
    /// (log start offset, high watermark) from a request, and when it was made.
    asked: Mutex<(std::time::Instant, (u64, u64))>,
    assigned: std::sync::atomic::AtomicBool,
    timeout: Duration,
}

impl PartitionSource {
    /// A consumer of `topic`/`partition` with `settings` (bootstrap and pass-through
    /// properties). Asks the cluster for the partition's offsets once, waiting up to
    /// `timeout`. Errors: the client cannot be created, or the cluster does not answer.
    pub fn open(settings: &std::collections::BTreeMap<String, String>, topic: &str, partition: u32, timeout: Duration) -> Result<PartitionSource, ClusterError> {
        let mut cc = ClientConfig::new();
        for (k, v) in settings {
            cc.set(k, v);
        }
        cc.set("auto.offset.reset", "earliest").set("fetch.wait.max.ms", "100").set("queued.max.messages.kbytes", "16384").set("enable.auto.commit", "false").set("enable.auto.offset.store", "false").set("enable.partition.eof", "false");
        cc.set("group.id", format!("sluice-task-reader-{topic}-{partition}"));
        cc.set("client.id", format!("sluice-worker-{topic}-{partition}"));
        let bootstrap = settings.get("bootstrap.servers").cloned().unwrap_or_default();
        let consumer: BaseConsumer = cc.create().map_err(|source| ClusterError::Client { bootstrap: bootstrap.clone(), source })?;
        let (low, high) = consumer
            .fetch_watermarks(topic, partition as i32, timeout)
            .map_err(|e| ClusterError::Topic { topic: topic.into(), bootstrap: bootstrap.clone(), reason: format!("partition {partition}: cannot read its offsets: {e}") })?;
        let asked = Mutex::new((std::time::Instant::now(), (low.max(0) as u64, high.max(0) as u64)));
        Ok(PartitionSource { topic: topic.into(), partition, consumer, next: Mutex::new(None), asked, assigned: Default::default(), timeout })
    }

    /// The watermarks librdkafka last saw in a fetch response (`rd_kafka_get_watermark_offsets`,
    /// which reads its cache and sends nothing; rdkafka has no safe wrapper for it), or
    /// those read at open.
    fn watermarks(&self) -> (u64, u64) {
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        if !self.assigned.load(std::sync::atomic::Ordering::Acquire) {
            if asked.0.elapsed() >= UNASSIGNED_REFRESH {
                match self.consumer.fetch_watermarks(&self.topic, self.partition as i32, self.timeout) {
                    Ok((low, high)) => *asked = (std::time::Instant::now(), (low.max(0) as u64, high.max(0) as u64)),
                    Err(e) => tracing::debug!(topic = %self.topic, partition = self.partition, error = %e, "cannot read the partition's offsets"),
                }
            }
            return asked.1;
        }
        let initial = asked.1;
        drop(asked);
        let (mut low, mut high) = (-1i64, -1i64);
        let Ok(topic) = std::ffi::CString::new(self.topic.as_str()) else { return initial };
        // SAFETY: the client handle lives as long as `self.consumer`; the topic is a valid C
        // string for the call; `low` and `high` are valid for writes.
        let err = unsafe { rdkafka::bindings::rd_kafka_get_watermark_offsets(self.consumer.client().native_ptr(), topic.as_ptr(), self.partition as i32, &mut low, &mut high) };
        if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || high < 0 {
            return initial;
        }
        (low.max(initial.0 as i64) as u64, (high as u64).max(initial.1))
    }
}

impl Source for PartitionSource {
    fn partition_count(&self) -> u32 {
        1
    }

    fn partition_id(&self, _index: u32) -> u32 {
        self.partition
    }

    /// Up to `max_records` from `offset` (records below it, left in librdkafka's queue
    /// from an earlier position, are skipped).
    fn read(&self, _partition: u32, offset: u64, max_records: usize) -> Result<SourceChunk, BoxError> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if *next != Some(offset) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, self.partition as i32, Offset::Offset(offset as i64))?;
            self.consumer.assign(&tpl)?;
            self.assigned.store(true, std::sync::atomic::Ordering::Release);
            *next = Some(offset);
        }
        let mut chunk = SourceChunk::default();
        let mut wait = FIRST_RECORD_WAIT;
        while chunk.records.len() < max_records.max(1) {
            let Some(polled) = self.consumer.poll(wait) else { break };
            wait = Duration::ZERO;
            let m = polled.map_err(|e| format!("topic {:?} partition {}: {e}", self.topic, self.partition))?;
            let o = m.offset() as u64;
            // Below the position: left from an earlier one (or already returned).
            if o < chunk.records.last().map_or(offset, |r| r.offset + 1) {
                continue;
            }
            let value = m.payload().unwrap_or_default();
            chunk.records.push(SourceRef { offset: o, timestamp_ms: m.timestamp().to_millis().unwrap_or(0), start: chunk.buf.len(), len: value.len() });
            chunk.buf.extend_from_slice(value);
        }
        if let Some(last) = chunk.records.last() {
            *next = Some(last.offset + 1);
        }
        Ok(chunk)
    }

    fn start_offset(&self, _partition: u32) -> u64 {
        self.watermarks().0
    }

    fn end_offset(&self, _partition: u32) -> u64 {
        self.watermarks().1
    }

    fn wait(&self, timeout: Duration) {
        std::thread::sleep(timeout.min(Duration::from_millis(10)));
    }
}

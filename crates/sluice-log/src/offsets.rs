//! Committed consumer offsets, stored in the log itself, as Kafka stores them in its
//! internal topic: `__consumer_offsets` (1 partition, kept forever until compaction
//! exists). One batch per commit request (all of a request's offsets are durable together
//! or not at all); record key = JSON `["group", "topic", partition]`; value = JSON
//! `{"offset", "metadata", "commit_ms"}`; an empty value deletes the key (tombstone).
//! The latest record per key wins; the map is rebuilt by scanning the topic on open.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::{Log, NewRecord, Partition, Result, Retention};

/// Name of the internal topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// One committed offset: the next offset the group will read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: u64,
    /// Free-form client metadata (Kafka's OffsetCommit `metadata`).
    #[serde(default)]
    pub metadata: String,
    /// When it was committed, epoch ms.
    pub commit_ms: i64,
}

/// One offset in a commit request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
}

type Key = (String, String, u32);

/// The offsets of every consumer group.
pub struct OffsetStore {
    partition: Arc<Partition>,
    map: RwLock<BTreeMap<Key, CommittedOffset>>,
}

impl OffsetStore {
    /// Opens the store over the log's internal topic (created if missing), replaying it.
    pub fn open(log: &Log) -> Result<OffsetStore> {
        let topic = match log.topic(OFFSETS_TOPIC) {
            Some(t) => t,
            None => log.create_topic_with(OFFSETS_TOPIC, 1, Retention { ms: -1, bytes: -1 })?,
        };
        let partition = topic.partition(0)?.clone();
        let mut map = BTreeMap::new();
        let mut offset = partition.log_start_offset();
        loop {
            let records = partition.read(offset, 10_000, 16 << 20)?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for r in records {
                let Some(key) = r.key.as_deref().and_then(|k| serde_json::from_slice::<Key>(k).ok()) else {
                    tracing::warn!(offset = r.offset, "skipping an offsets record with an unreadable key");
                    continue;
                };
                if r.value.is_empty() {
                    map.remove(&key);
                } else if let Ok(v) = serde_json::from_slice::<CommittedOffset>(&r.value) {
                    map.insert(key, v);
                } else {
                    tracing::warn!(offset = r.offset, "skipping an offsets record with an unreadable value");
                }
            }
        }
        Ok(OffsetStore { partition, map: RwLock::new(map) })
    }

    /// Commits offsets for a group, durably, as one batch.
    pub fn commit(&self, group: &str, commits: &[OffsetCommit], now_ms: i64) -> Result<()> {
        let mut records = Vec::with_capacity(commits.len());
        let mut entries = Vec::with_capacity(commits.len());
        for c in commits {
            let key: Key = (group.to_string(), c.topic.clone(), c.partition);
            let value = CommittedOffset { offset: c.offset, metadata: c.metadata.clone(), commit_ms: now_ms };
            records.push(NewRecord::new(Some(serde_json::to_vec(&key).unwrap_or_default()), serde_json::to_vec(&value).unwrap_or_default()));
            entries.push((key, value));
        }
        // The lock is held across the append, so the map applies commits in log order.
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.partition.append(&records, now_ms)?;
        map.extend(entries);
        Ok(())
    }

    /// Deletes every committed offset of a group (tombstones), durably.
    pub fn delete_group(&self, group: &str, now_ms: i64) -> Result<usize> {
        self.delete_where(|k| k.0 == group, now_ms)
    }

    /// Deletes a topic from the log, then every group's committed offsets for it
    /// (tombstones, durably): a deleted topic's offsets must not apply to a new topic of the
    /// same name (Kafka does the same).
    pub fn delete_topic(&self, log: &Log, topic: &str, now_ms: i64) -> Result<()> {
        log.delete_topic(topic)?;
        self.delete_where(|k| k.1 == topic, now_ms).map(|_| ())
    }

    fn delete_where(&self, matches: impl Fn(&Key) -> bool, now_ms: i64) -> Result<usize> {
        let keys: Vec<Key> = self.map.read().unwrap_or_else(|p| p.into_inner()).keys().filter(|k| matches(k)).cloned().collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let records: Vec<NewRecord> =
            keys.iter().map(|k| NewRecord::new(Some(serde_json::to_vec(k).unwrap_or_default()), Vec::new())).collect();
        self.partition.append(&records, now_ms)?;
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for k in &keys {
            map.remove(k);
        }
        Ok(keys.len())
    }

    /// The committed offset of a group for one partition.
    pub fn fetch(&self, group: &str, topic: &str, partition: u32) -> Option<CommittedOffset> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(&(group.to_string(), topic.to_string(), partition)).cloned()
    }

    /// Every committed offset of a group: (topic, partition, offset).
    pub fn group(&self, group: &str) -> Vec<(String, u32, CommittedOffset)> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| k.0 == group)
            .map(|(k, v)| (k.1.clone(), k.2, v.clone()))
            .collect()
    }

    /// Names of groups with committed offsets.
    pub fn groups(&self) -> Vec<String> {
        let mut g: Vec<String> = self.map.read().unwrap_or_else(|p| p.into_inner()).keys().map(|k| k.0.clone()).collect();
        g.dedup();
        g
    }
}

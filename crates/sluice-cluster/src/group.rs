//! A worker's membership in a consumer group on the external cluster: Kafka's group
//! protocol (JoinGroup, SyncGroup, Heartbeat; the Kafka protocol guide) decides which
//! worker owns which partition, with librdkafka's `cooperative-sticky` assignor
//! (KIP-429: a rebalance moves only the partitions that change owner).
//!
//! The member does not read records: it pauses what it is assigned, and each partition is
//! read by its task's [`crate::source::PartitionSource`]. It reports assignment changes as
//! [`GroupEvent`]s from inside [`GroupMember::poll`] (librdkafka's rebalance callback, on
//! the polling thread), and commits each partition's offset after that partition's
//! checkpoint, so Kafka tools show the group's lag. A commit of a member that is no longer
//! in the group's current generation is refused by the coordinator (`ILLEGAL_GENERATION`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::ClusterError;

/// A change of this member's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// Partitions (topic, partition) now owned by this member.
    Assigned(Vec<(String, u32)>),
    /// Partitions given up in a rebalance: the member still owned them until now, so a
    /// last checkpoint may be committed.
    Revoked(Vec<(String, u32)>),
    /// Partitions lost: the group moved on without this member (its session expired, e.g.
    /// while it was paused). Another member may own them already; commit nothing.
    Lost(Vec<(String, u32)>),
}

/// Called with each event from inside [`GroupMember::poll`], before the assignment changes.
pub type OnRebalance = Arc<dyn Fn(GroupEvent) + Send + Sync>;

pub struct Context {
    on: OnRebalance,
}

impl ClientContext for Context {}

fn parts(tpl: &TopicPartitionList) -> Vec<(String, u32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition().max(0) as u32)).collect()
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let p = parts(tpl);
            if !p.is_empty() {
                (self.on)(if consumer.assignment_lost() { GroupEvent::Lost(p) } else { GroupEvent::Revoked(p) });
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // Held, not read: each partition's task reads it with its own consumer.
                if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!(error = %e, "cannot pause the group member's partitions; it fetches records it does not use");
                }
                let p = parts(tpl);
                if !p.is_empty() {
                    (self.on)(GroupEvent::Assigned(p));
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "a rebalance failed; the group retries it"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// This worker in its consumer group.
pub struct GroupMember {
    consumer: BaseConsumer<Context>,
    group: String,
}

impl GroupMember {
    /// Joins `group` as `client_id` (at the first [`GroupMember::poll`]) for `topics`, with `settings`
    /// (bootstrap and pass-through properties; `session.timeout.ms` and the like may be
    /// set there). Errors: the client cannot be created, or a topic name is refused.
    pub fn join(settings: &BTreeMap<String, String>, group: &str, client_id: &str, topics: &[String], on: OnRebalance) -> Result<GroupMember, ClusterError> {
        let mut cc = ClientConfig::new();
        cc.set("session.timeout.ms", "10000").set("heartbeat.interval.ms", "1000");
        for (k, v) in settings {
            cc.set(k, v);
        }
        cc.set("group.id", group)
            .set("client.id", client_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        let bootstrap = settings.get("bootstrap.servers").cloned().unwrap_or_default();
        let consumer: BaseConsumer<Context> = cc.create_with_context(Context { on }).map_err(|source| ClusterError::Client { bootstrap: bootstrap.clone(), source })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|source| ClusterError::Client { bootstrap, source })?;
        Ok(GroupMember { consumer, group: group.into() })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// Serves the group protocol for up to `timeout`: heartbeats run in librdkafka's own
    /// thread, but rebalances are delivered here (as [`GroupEvent`]s). Call it at least
    /// every `max.poll.interval.ms` (default 300,000 ms).
    pub fn poll(&self, timeout: Duration) {
        if let Some(Err(e)) = self.consumer.poll(timeout) {
            tracing::debug!(group = %self.group, error = %e, "group member");
        }
    }

    /// Commits `offset` (the next to read) for `topic`/`partition`, asynchronously (the
    /// outcome is logged). The coordinator refuses it if this member lost the partition.
    pub fn commit(&self, topic: &str, partition: u32, offset: u64) {
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64)).is_ok() {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(group = %self.group, topic, partition, error = %e, "cannot commit the partition's offset to the group");
            }
        }
    }

    /// Leaves the group (a clean rebalance for the others), revoking every partition.
    pub fn leave(&self) {
        self.consumer.unsubscribe();
        for _ in 0..50 {
            self.consumer.poll(Duration::from_millis(100));
            if self.consumer.assignment().map(|a| a.count() == 0).unwrap_or(true) {
                break;
            }
        }
    }
}

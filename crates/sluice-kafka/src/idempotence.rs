//! Idempotent produce: per producer and partition, the broker accepts each batch's
//! sequence numbers once and in order (the Kafka protocol guide, "Record Batch", and
//! KIP-98 "Exactly Once Delivery and Transactional Messaging").
//!
//! A batch from a producer id (≥ 0) carries its producer epoch and the sequence number of
//! its first record; its records take `base_sequence ..= base_sequence + count - 1`
//! (wrapping after i32::MAX). For each (topic, partition, producer id) the broker keeps the
//! epoch and the last [`CACHED_BATCHES`] batches it appended, and decides:
//! - a batch equal to a cached one is a retry: answer with the original base offset and do
//!   not append again (DUPLICATE, as Kafka ≥ 2.0 answers it: success, nothing new);
//! - the next sequence after the newest cached batch: append;
//! - anything else: OUT_OF_ORDER_SEQUENCE_NUMBER, nothing appended;
//! - an epoch older than the known one: INVALID_PRODUCER_EPOCH; a newer epoch starts again
//!   from sequence 0.
//!
//! State lives in memory and is rebuilt after a restart from the log itself: batches are
//! stored as the producer sent them, producer fields included, so the first idempotent
//! batch on a partition since start triggers one scan of the partition's most recent
//! batches, which restores every producer found there ([`Producers::restore`]). A retry of
//! a batch written just before a crash is then still recognised (compressed batches are
//! stored re-encoded, with their producer fields set again:
//! `sluice_log::batch::set_producer`). Each partition is scanned at most once per process,
//! so new producer ids cannot make the broker read the log again and again. Limit: only
//! the newest 8 MiB of the active segment are scanned; a producer not found there has its
//! first batch accepted at any sequence, as Kafka does for a producer whose state expired.
//!
//! The state is bounded: a producer's entry on a partition expires once it has not
//! appended for `expiration_ms` (Kafka's `producer.id.expiration.ms`), and when more than
//! `max_entries` exist the least recently used are dropped first. A dropped producer is
//! treated like an expired one.

use std::collections::{BTreeMap, VecDeque};

use kafka_protocol::error::ResponseError;

/// Batches remembered per producer and partition (Kafka's limit on in-flight requests for
/// an idempotent producer is 5).
pub const CACHED_BATCHES: usize = 5;

/// Producer fields of a RecordBatch v2 header. Byte layout (offsets from the batch start,
/// big-endian): producerId i64 at 43, producerEpoch i16 at 51, baseSequence i32 at 53,
/// lastOffsetDelta i32 at 23.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    /// Records in the batch (lastOffsetDelta + 1).
    pub count: i32,
}

impl ProducerBatch {
    /// Reads the producer fields of a batch; None if too short or not idempotent.
    pub fn parse(batch: &[u8]) -> Option<ProducerBatch> {
        let at = |r: std::ops::Range<usize>| batch.get(r);
        let producer_id = i64::from_be_bytes(at(43..51)?.try_into().ok()?);
        let epoch = i16::from_be_bytes(at(51..53)?.try_into().ok()?);
        let base_sequence = i32::from_be_bytes(at(53..57)?.try_into().ok()?);
        let count = i32::from_be_bytes(at(23..27)?.try_into().ok()?).checked_add(1)?;
        (producer_id >= 0 && base_sequence >= 0 && count > 0).then_some(ProducerBatch { producer_id, epoch, base_sequence, count })
    }

    fn last_sequence(&self) -> i32 {
        wrap(self.base_sequence as i64 + self.count as i64 - 1)
    }
}

fn wrap(seq: i64) -> i32 {
    (seq % (i32::MAX as i64 + 1)) as i32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Appended {
    base_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Append,
    /// Already appended at this base offset.
    Duplicate { base_offset: i64 },
    Reject(ResponseError),
}

#[derive(Debug, Default)]
struct Entry {
    epoch: i16,
    batches: VecDeque<Appended>,
    /// When the producer last appended here (or was restored), epoch ms.
    last_ms: i64,
}

/// Default of [`Producers::expiration_ms`]: Kafka's `producer.id.expiration.ms` (1 day).
pub const DEFAULT_EXPIRATION_MS: i64 = 86_400_000;
/// Default of [`Producers::max_entries`] (about 200 bytes each).
pub const DEFAULT_MAX_ENTRIES: usize = 200_000;
/// Expired entries are swept at most this often, ms.
const SWEEP_INTERVAL_MS: i64 = 60_000;

/// Sequence state of every idempotent producer, by (topic, partition, producer id).
#[derive(Debug)]
pub struct Producers {
    entries: BTreeMap<(String, i32, i64), Entry>,
    /// Partitions whose stored batches were already scanned.
    scanned: std::collections::BTreeSet<(String, i32)>,
    /// A producer's state on a partition is dropped this long after its last append, ms.
    pub expiration_ms: i64,
    /// Most entries kept; beyond it the least recently used are dropped.
    pub max_entries: usize,
    last_sweep_ms: i64,
}

impl Default for Producers {
    fn default() -> Self {
        Producers::new(DEFAULT_EXPIRATION_MS, DEFAULT_MAX_ENTRIES)
    }
}

impl Producers {
    pub fn new(expiration_ms: i64, max_entries: usize) -> Producers {
        Producers { entries: BTreeMap::new(), scanned: Default::default(), expiration_ms, max_entries: max_entries.max(1), last_sweep_ms: 0 }
    }

    /// Whether a partition's stored batches still need a scan before its first idempotent
    /// batch is checked (once per partition per process).
    pub fn needs_restore(&self, topic: &str, partition: i32) -> bool {
        !self.scanned.contains(&(topic.to_string(), partition))
    }

    /// Producer entries held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Rebuilds the state of every producer found in a partition's stored batches
    /// (RecordBatch v2 bytes, as read from the log, in offset order), as of `now_ms`.
    pub fn restore(&mut self, topic: &str, partition: i32, stored: &[u8], now_ms: i64) {
        self.scanned.insert((topic.to_string(), partition));
        let mut at = 0usize;
        while let Some(rest) = stored.get(at..) {
            let Ok(h) = sluice_log::batch::decode_header(rest) else { break };
            if let Some(b) = ProducerBatch::parse(&rest[..h.total_len.min(rest.len())]) {
                self.record(topic, partition, &b, h.base_offset as i64, now_ms);
            }
            at += h.total_len;
        }
    }

    /// Decides what to do with a batch (pure: nothing is recorded).
    pub fn check(&self, topic: &str, partition: i32, b: &ProducerBatch) -> Decision {
        let Some(e) = self.entries.get(&(topic.to_string(), partition, b.producer_id)) else {
            return Decision::Append;
        };
        if b.epoch < e.epoch {
            return Decision::Reject(ResponseError::InvalidProducerEpoch);
        }
        if b.epoch > e.epoch {
            return if b.base_sequence == 0 { Decision::Append } else { Decision::Reject(ResponseError::OutOfOrderSequenceNumber) };
        }
        if let Some(dup) = e.batches.iter().find(|a| a.base_sequence == b.base_sequence && a.last_sequence == b.last_sequence()) {
            return Decision::Duplicate { base_offset: dup.base_offset };
        }
        match e.batches.back() {
            Some(last) if wrap(last.last_sequence as i64 + 1) != b.base_sequence => Decision::Reject(ResponseError::OutOfOrderSequenceNumber),
            _ => Decision::Append,
        }
    }

    /// Records a batch appended at `base_offset` at `now_ms`, then drops expired entries
    /// (at most once a minute) and, over `max_entries`, the least recently used.
    pub fn record(&mut self, topic: &str, partition: i32, b: &ProducerBatch, base_offset: i64, now_ms: i64) {
        let e = self.entries.entry((topic.to_string(), partition, b.producer_id)).or_default();
        e.last_ms = e.last_ms.max(now_ms);
        if b.epoch != e.epoch {
            e.epoch = b.epoch;
            e.batches.clear();
        }
        e.batches.push_back(Appended { base_sequence: b.base_sequence, last_sequence: b.last_sequence(), base_offset });
        while e.batches.len() > CACHED_BATCHES {
            e.batches.pop_front();
        }
        if now_ms - self.last_sweep_ms >= SWEEP_INTERVAL_MS {
            self.expire(now_ms);
        }
        if self.entries.len() > self.max_entries {
            self.evict();
        }
    }

    /// Drops entries whose producer has not appended for `expiration_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        self.last_sweep_ms = now_ms;
        let horizon = now_ms.saturating_sub(self.expiration_ms);
        self.entries.retain(|_, e| e.last_ms > horizon);
    }

    /// Drops the least recently used tenth of `max_entries` (so eviction runs rarely).
    fn evict(&mut self) {
        let target = self.max_entries - self.max_entries / 10;
        let excess = self.entries.len().saturating_sub(target);
        let mut ages: Vec<i64> = self.entries.values().map(|e| e.last_ms).collect();
        if ages.is_empty() || excess == 0 {
            return;
        }
        let nth = (excess - 1).min(ages.len() - 1);
        let (_, cut, _) = ages.select_nth_unstable(nth);
        let cut = *cut;
        let mut dropped = 0;
        self.entries.retain(|_, e| {
            let drop = dropped < excess && e.last_ms <= cut;
            dropped += usize::from(drop);
            !drop
        });
    }

    /// Forgets every producer of a topic (it was deleted).
    pub fn forget_topic(&mut self, topic: &str) {
        self.entries.retain(|k, _| k.0 != topic);
        self.scanned.retain(|k| k.0 != topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(epoch: i16, base_sequence: i32, count: i32) -> ProducerBatch {
        ProducerBatch { producer_id: 7, epoch, base_sequence, count }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut p = Producers::default();
        assert_eq!(p.check("t", 0, &b(0, 0, 10)), Decision::Append);
        p.record("t", 0, &b(0, 0, 10), 100, 0);
        assert_eq!(p.check("t", 0, &b(0, 10, 5)), Decision::Append);
        p.record("t", 0, &b(0, 10, 5), 110, 0);
        assert_eq!(p.check("t", 0, &b(0, 0, 10)), Decision::Duplicate { base_offset: 100 });
        assert_eq!(p.check("t", 0, &b(0, 10, 5)), Decision::Duplicate { base_offset: 110 });
        assert_eq!(p.check("t", 0, &b(0, 20, 1)), Decision::Reject(ResponseError::OutOfOrderSequenceNumber), "15..19 missing");
        assert_eq!(p.check("t", 1, &b(0, 20, 1)), Decision::Append, "partitions are independent");
    }

    #[test]
    fn epochs_fence_old_producers() {
        let mut p = Producers::default();
        p.record("t", 0, &b(1, 0, 3), 0, 0);
        assert_eq!(p.check("t", 0, &b(0, 3, 1)), Decision::Reject(ResponseError::InvalidProducerEpoch));
        assert_eq!(p.check("t", 0, &b(2, 3, 1)), Decision::Reject(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(p.check("t", 0, &b(2, 0, 1)), Decision::Append);
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut p = Producers::default();
        p.record("t", 0, &b(0, i32::MAX - 1, 2), 0, 0);
        assert_eq!(p.check("t", 0, &b(0, 0, 1)), Decision::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut p = Producers::default();
        for i in 0..7 {
            p.record("t", 0, &b(0, i, 1), i as i64, 0);
        }
        assert_eq!(p.check("t", 0, &b(0, 6, 1)), Decision::Duplicate { base_offset: 6 });
        assert_eq!(p.check("t", 0, &b(0, 1, 1)), Decision::Reject(ResponseError::OutOfOrderSequenceNumber));
    }

    #[test]
    fn state_is_restored_from_stored_batches() {
        use sluice_log::batch::{encode, NewRecord};
        // Two stored batches: one of another producer (encoded by sluice: producer id -1),
        // then producer 9's batch of 3 records at sequence 40, stored at offset 5.
        let mut other = Vec::new();
        encode(0, 1, &[NewRecord::new(None, b"x".to_vec())], &mut other).unwrap();
        let mut mine = Vec::new();
        encode(5, 1, &[NewRecord::new(None, b"a".to_vec()), NewRecord::new(None, b"b".to_vec()), NewRecord::new(None, b"c".to_vec())], &mut mine).unwrap();
        mine[43..51].copy_from_slice(&9i64.to_be_bytes());
        mine[51..53].copy_from_slice(&1i16.to_be_bytes());
        mine[53..57].copy_from_slice(&40i32.to_be_bytes());
        let stored = [other, mine].concat();
        let mut p = Producers::default();
        assert!(p.needs_restore("t", 0));
        p.restore("t", 0, &stored, 1_000);
        assert!(!p.needs_restore("t", 0), "a partition is scanned once");
        assert!(p.needs_restore("t", 1));
        let retry = ProducerBatch { producer_id: 9, epoch: 1, base_sequence: 40, count: 3 };
        assert_eq!(p.check("t", 0, &retry), Decision::Duplicate { base_offset: 5 });
        assert_eq!(p.check("t", 0, &ProducerBatch { base_sequence: 43, count: 1, ..retry }), Decision::Append);
        assert_eq!(p.len(), 1, "batches without a producer id are not state");
        assert_eq!(p.check("t", 0, &ProducerBatch { producer_id: 10, epoch: 3, base_sequence: 77, count: 1 }), Decision::Append);
    }

    #[test]
    fn state_expires_and_is_bounded() {
        let mut p = Producers::new(1_000, 100);
        let at = |id: i64| ProducerBatch { producer_id: id, epoch: 0, base_sequence: 0, count: 1 };
        p.record("t", 0, &at(1), 0, 0);
        p.record("t", 0, &at(2), 1, 500);
        p.expire(1_200);
        assert_eq!(p.len(), 1, "producer 1 expired after 1 s without appends");
        assert_eq!(p.check("t", 0, &ProducerBatch { base_sequence: 9, ..at(1) }), Decision::Append, "an expired producer starts anew");
        assert_eq!(p.check("t", 0, &ProducerBatch { base_sequence: 9, ..at(2) }), Decision::Reject(ResponseError::OutOfOrderSequenceNumber));
        // 1,000 new producer ids: never more than 100 entries, and the newest survive.
        let mut p = Producers::new(i64::MAX / 2, 100);
        for id in 0..1_000 {
            p.record("t", 0, &at(id), id, 10_000 + id);
            assert!(p.len() <= 100, "{} entries", p.len());
        }
        assert_eq!(p.check("t", 0, &at(999)), Decision::Duplicate { base_offset: 999 });
        assert_eq!(p.check("t", 0, &ProducerBatch { base_sequence: 5, ..at(3) }), Decision::Append, "the oldest were dropped");
    }

    #[test]
    fn header_fields_are_read_from_their_offsets() {
        let mut batch = vec![0u8; 61];
        batch[23..27].copy_from_slice(&4i32.to_be_bytes());
        batch[43..51].copy_from_slice(&9i64.to_be_bytes());
        batch[51..53].copy_from_slice(&2i16.to_be_bytes());
        batch[53..57].copy_from_slice(&40i32.to_be_bytes());
        assert_eq!(ProducerBatch::parse(&batch), Some(ProducerBatch { producer_id: 9, epoch: 2, base_sequence: 40, count: 5 }));
        batch[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(ProducerBatch::parse(&batch), None, "not idempotent");
        assert_eq!(ProducerBatch::parse(&batch[..40]), None);
    }
}

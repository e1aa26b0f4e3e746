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
//! stored as the producer sent them, producer fields included, so the first batch seen
//! from a producer on a partition triggers one scan of the partition's most recent batches
//! ([`Producers::restore`]). A retry of a batch written just before a crash is then still
//! recognised (compressed batches are stored re-encoded, with their producer fields set
//! again: `sluice_log::batch::set_producer`). Limit: only the newest 8 MiB of the active
//! segment are scanned; a producer not found there has its first batch accepted at any
//! sequence, as Kafka does for a producer whose state expired.

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
}

/// Sequence state of every idempotent producer, by (topic, partition, producer id).
#[derive(Debug, Default)]
pub struct Producers {
    entries: BTreeMap<(String, i32, i64), Entry>,
    /// Partitions whose stored batches were already scanned, with the producer scanned for.
    scanned: std::collections::BTreeSet<(String, i32, i64)>,
}

impl Producers {
    /// Whether the state of this producer on this partition is known or was looked for.
    pub fn is_known(&self, topic: &str, partition: i32, producer_id: i64) -> bool {
        let key = (topic.to_string(), partition, producer_id);
        self.entries.contains_key(&key) || self.scanned.contains(&key)
    }

    /// Rebuilds a producer's state from stored batches (RecordBatch v2 bytes, as read from
    /// the log, in offset order); batches of other producers are skipped.
    pub fn restore(&mut self, topic: &str, partition: i32, producer_id: i64, stored: &[u8]) {
        self.scanned.insert((topic.to_string(), partition, producer_id));
        let mut at = 0usize;
        while let Some(rest) = stored.get(at..) {
            let Ok(h) = sluice_log::batch::decode_header(rest) else { break };
            if let Some(b) = ProducerBatch::parse(&rest[..h.total_len.min(rest.len())]) {
                if b.producer_id == producer_id {
                    self.record(topic, partition, &b, h.base_offset as i64);
                }
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

    /// Records a batch appended at `base_offset`.
    pub fn record(&mut self, topic: &str, partition: i32, b: &ProducerBatch, base_offset: i64) {
        let e = self.entries.entry((topic.to_string(), partition, b.producer_id)).or_default();
        if b.epoch != e.epoch {
            e.epoch = b.epoch;
            e.batches.clear();
        }
        e.batches.push_back(Appended { base_sequence: b.base_sequence, last_sequence: b.last_sequence(), base_offset });
        while e.batches.len() > CACHED_BATCHES {
            e.batches.pop_front();
        }
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
        p.record("t", 0, &b(0, 0, 10), 100);
        assert_eq!(p.check("t", 0, &b(0, 10, 5)), Decision::Append);
        p.record("t", 0, &b(0, 10, 5), 110);
        assert_eq!(p.check("t", 0, &b(0, 0, 10)), Decision::Duplicate { base_offset: 100 });
        assert_eq!(p.check("t", 0, &b(0, 10, 5)), Decision::Duplicate { base_offset: 110 });
        assert_eq!(p.check("t", 0, &b(0, 20, 1)), Decision::Reject(ResponseError::OutOfOrderSequenceNumber), "15..19 missing");
        assert_eq!(p.check("t", 1, &b(0, 20, 1)), Decision::Append, "partitions are independent");
    }

    #[test]
    fn epochs_fence_old_producers() {
        let mut p = Producers::default();
        p.record("t", 0, &b(1, 0, 3), 0);
        assert_eq!(p.check("t", 0, &b(0, 3, 1)), Decision::Reject(ResponseError::InvalidProducerEpoch));
        assert_eq!(p.check("t", 0, &b(2, 3, 1)), Decision::Reject(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(p.check("t", 0, &b(2, 0, 1)), Decision::Append);
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut p = Producers::default();
        p.record("t", 0, &b(0, i32::MAX - 1, 2), 0);
        assert_eq!(p.check("t", 0, &b(0, 0, 1)), Decision::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut p = Producers::default();
        for i in 0..7 {
            p.record("t", 0, &b(0, i, 1), i as i64);
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
        assert!(!p.is_known("t", 0, 9));
        p.restore("t", 0, 9, &stored);
        assert!(p.is_known("t", 0, 9));
        let retry = ProducerBatch { producer_id: 9, epoch: 1, base_sequence: 40, count: 3 };
        assert_eq!(p.check("t", 0, &retry), Decision::Duplicate { base_offset: 5 });
        assert_eq!(p.check("t", 0, &ProducerBatch { base_sequence: 43, count: 1, ..retry }), Decision::Append);
        p.restore("t", 0, 10, &stored);
        assert!(p.is_known("t", 0, 10), "scanned, even though nothing was found");
        assert_eq!(p.check("t", 0, &ProducerBatch { producer_id: 10, epoch: 3, base_sequence: 77, count: 1 }), Decision::Append);
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

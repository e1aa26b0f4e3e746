//! Batch decoding never panics, and what decodes re-encodes to a batch with the same records.
//! A batch accepted for a raw append (Kafka Produce) decodes, with one record per offset.
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/log_batch.rs` and the seed replay in
//! `crates/sluice/tests/fuzz_seeds.rs`.
use sluice_log::batch::{decode_records, encode, validate_for_append, NewRecord};

/// Panics when the property fails (a finding); returns for any other input.
pub fn check(data: &[u8]) {
    if let Ok(h) = validate_for_append(data) {
        let mut recs = Vec::new();
        decode_records(data, 0, &mut recs).expect("a batch valid for append decodes");
        assert_eq!(recs.len() as u32, h.record_count, "dense offsets");
    }
    let mut out = Vec::new();
    if let Ok(h) = decode_records(data, 0, &mut out) {
        let recs: Vec<NewRecord> = out
            .iter()
            .map(|r| NewRecord { key: r.key.clone(), value: r.value.clone(), headers: r.headers.clone(), timestamp_ms: Some(r.timestamp_ms) })
            .collect();
        let mut again = Vec::new();
        encode(h.base_offset, h.append_time_ms, &recs, &mut again).expect("decoded batch re-encodes");
        let mut back = Vec::new();
        decode_records(&again, 0, &mut back).expect("re-encoded batch decodes");
        let key = |r: &sluice_log::Record| (r.key.clone(), r.value.clone(), r.headers.clone(), r.timestamp_ms);
        assert_eq!(back.iter().map(key).collect::<Vec<_>>(), out.iter().map(key).collect::<Vec<_>>());
    }
}

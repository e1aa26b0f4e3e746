//! Batch decoding never panics, and what decodes re-encodes to a batch with the same records.
//! A batch accepted for a raw append (Kafka Produce) decodes, with one record per offset.
#![no_main]

#[path = "../checks/log_batch.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));

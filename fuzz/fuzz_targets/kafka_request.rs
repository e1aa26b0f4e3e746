//! Decoding a Kafka request frame (header, then body for the API and version the header
//! names, within what sluice serves) never panics or aborts on arbitrary bytes, and
//! neither does decoding the record batches of a Produce request.
#![no_main]

#[path = "../checks/kafka_request.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));

//! Decoding a Kafka request frame (header, then body for the API and version the header
//! names, within what sluice serves) never panics or aborts on arbitrary bytes, and
//! neither does decoding the record batches of a Produce request.
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/kafka_request.rs` and the seed replay in
//! `crates/sluice/tests/fuzz_seeds.rs`.
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};

// The server's own entry points (`sluice_kafka::decode_header`, `decode_body`,
// `handlers::oversized_batch`, `handlers::produced_records`). The fuzz build aborts on
// panic, so a panic inside the decoders still shows up here as a crash; so does an
// allocation the machine cannot give.

/// Panics when the property fails (a finding); returns for any other input.
pub fn check(data: &[u8]) {
    let mut buf = Bytes::copy_from_slice(data);
    let Ok(header) = sluice_kafka::decode_header(&mut buf) else { return };
    let Ok(key) = ApiKey::try_from(header.request_api_key) else { return };
    let Some((lo, hi)) = sluice_kafka::handlers::supported(key) else { return };
    if (lo..=hi).contains(&header.request_api_version) {
        if let Ok(RequestKind::Produce(p)) = sluice_kafka::decode_body(key, &mut buf, header.request_api_version) {
            for t in p.topic_data {
                for pd in t.partition_data {
                    let records = pd.records.unwrap_or_default();
                    let _ = sluice_kafka::handlers::oversized_batch(&records, 1_048_588);
                    let _ = sluice_kafka::handlers::produced_records(records);
                }
            }
        }
    }
}

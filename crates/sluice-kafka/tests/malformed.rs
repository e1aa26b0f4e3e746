//! Requests that once stopped the process: each must now decode to an error.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

/// A 14-byte Metadata v0 request whose topic array declares 0x3a000000 (973M) entries. The
/// released kafka-protocol 0.18 pre-allocated that many topics and aborted (found by the
/// `kafka_request` fuzz target); the vendored patch bounds the allocation.
#[test]
fn forged_array_length_is_an_error_not_an_abort() {
    let mut frame = Bytes::from_static(&[0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3a, 0x00, 0x00, 0x00]);
    let header = sluice_kafka::decode_header(&mut frame).expect("header decodes");
    assert_eq!(header.request_api_key, ApiKey::Metadata as i16);
    assert!(sluice_kafka::decode_body(ApiKey::Metadata, &mut frame, 0).is_err());
}

/// A string or bytes field whose declared length is larger than the frame.
#[test]
fn forged_string_length_is_an_error() {
    // Metadata v1, one topic, topic name declared 30,000 bytes long, 3 present.
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i16(1);
    b.put_i32(7);
    b.put_i16(-1); // client id: null
    b.put_i32(1);
    b.put_i16(30_000);
    b.put_slice(b"abc");
    let mut frame = b.freeze();
    sluice_kafka::decode_header(&mut frame).expect("header decodes");
    assert!(sluice_kafka::decode_body(ApiKey::Metadata, &mut frame, 1).is_err());
}

fn gzip_batch(values: &[Vec<u8>]) -> Vec<u8> {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(v.clone())),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(&mut out, &records, &RecordEncodeOptions { version: 2, compression: Compression::Gzip }).expect("encodes");
    out.to_vec()
}

/// Re-seals a batch after editing it: the CRC-32C covers bytes 21.. (batch.rs layout).
fn reseal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A compressed RecordBatch v2 whose record count (bytes 57..61) is forged to i32::MAX
/// holds one real record: decoding must fail on the missing records, not reserve two
/// billion of them.
#[test]
fn forged_record_count_is_an_error() {
    let batch = gzip_batch(&[b"x".to_vec()]);
    assert_eq!(sluice_kafka::handlers::produced_records(Bytes::from(batch.clone())).map(|r| r.len()), Ok(1));
    let mut forged = batch;
    forged[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    reseal(&mut forged);
    assert!(sluice_kafka::handlers::produced_records(Bytes::from(forged)).is_err());
}

/// A gzip batch of about 300 KiB that expands to 300 MiB (more than the 256 MiB cap) is
/// refused as corrupt instead of being inflated.
#[test]
fn decompression_bomb_is_refused() {
    let bomb = gzip_batch(&[vec![0u8; 300 * 1024 * 1024]]);
    assert!(bomb.len() < 1024 * 1024, "the bomb is small on the wire: {} bytes", bomb.len());
    assert!(sluice_kafka::handlers::produced_records(Bytes::from(bomb)).is_err());
}

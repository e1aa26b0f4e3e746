//! Stored batches are Kafka's RecordBatch v2: the `kafka-protocol` crate's codec (written
//! from the Kafka protocol guide, independent of sluice) reads what sluice writes, and
//! sluice reads what it writes.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use sluice_log::batch::{decode_records, encode, NewRecord, RecordHeader};

#[test]
fn kafka_reads_what_sluice_writes() {
    let records = vec![
        NewRecord {
            key: Some(b"player-1".to_vec()),
            value: br#"{"heartbeat":120}"#.to_vec(),
            headers: vec![RecordHeader { key: "source".into(), value: Some(b"watch".to_vec()) }, RecordHeader { key: "empty".into(), value: None }],
            timestamp_ms: None,
        },
        NewRecord::new(None, b"second".to_vec()),
    ];
    let mut buf = Vec::new();
    encode(1234, 1_700_000_000_123, &records, &mut buf).unwrap();
    let set = RecordBatchDecoder::decode(&mut Bytes::from(buf)).expect("kafka-protocol decodes a sluice batch");
    assert_eq!(set.records.len(), 2);
    let r = &set.records[0];
    assert_eq!(r.offset, 1234);
    assert_eq!(r.timestamp_type, TimestampType::LogAppend);
    assert_eq!(r.timestamp, 1_700_000_000_123);
    assert_eq!(r.key.as_deref(), Some(&b"player-1"[..]));
    assert_eq!(r.value.as_deref(), Some(&br#"{"heartbeat":120}"#[..]));
    let header = |k: &str| r.headers.get(&StrBytes::from_string(k.to_string())).cloned();
    assert_eq!(header("source"), Some(Some(Bytes::from_static(b"watch"))));
    assert_eq!(header("empty"), Some(None));
    assert_eq!(set.records[1].offset, 1235);
    assert_eq!(set.records[1].key, None);
}

#[test]
fn sluice_reads_what_kafka_writes() {
    let mut headers = IndexMap::new();
    headers.insert(StrBytes::from_string("h".into()), Some(Bytes::from_static(b"v")));
    let record = |offset: i64, ts: i64, key: Option<&'static [u8]>, value: &'static [u8]| Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // No idempotence: baseSequence -1, so record i has sequence -1 + i (kafka-protocol
        // starts a new batch where offset - sequence changes).
        sequence: offset as i32 - 1,
        timestamp: ts,
        key: key.map(Bytes::from_static),
        value: Some(Bytes::from_static(value)),
        headers: headers.clone(),
    };
    let records = vec![record(0, 1_000, Some(b"a"), b"one"), record(1, 900, None, b"two"), record(2, 1_500, Some(b"c"), b"three")];
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).expect("kafka-protocol encodes");
    let mut out = Vec::new();
    let header = decode_records(&buf, 0, &mut out).expect("sluice decodes a Kafka batch");
    assert_eq!(header.record_count, 3);
    assert_eq!(header.append_time_ms, 1_500, "maxTimestamp");
    let got: Vec<(u64, i64, Option<Vec<u8>>, Vec<u8>)> = out.iter().map(|r| (r.offset, r.timestamp_ms, r.key.clone(), r.value.clone())).collect();
    assert_eq!(
        got,
        vec![
            (0, 1_000, Some(b"a".to_vec()), b"one".to_vec()),
            (1, 900, None, b"two".to_vec()),
            (2, 1_500, Some(b"c".to_vec()), b"three".to_vec()),
        ]
    );
    assert_eq!(out[0].headers, vec![RecordHeader { key: "h".into(), value: Some(b"v".to_vec()) }]);
}

/// A producer's batch appended as it was sent (`Partition::write_raw`, the Kafka Produce
/// path) gets the partition's next offsets, reads back through both read paths, and
/// survives a crash reopen; a batch with a bad CRC is refused and nothing is written.
#[test]
fn a_producer_batch_is_stored_as_sent() {
    let record = |i: i64| Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: 77,
        producer_epoch: 0,
        timestamp_type: TimestampType::Creation,
        offset: i,
        sequence: i as i32,
        timestamp: 1_000 + i,
        key: Some(Bytes::from(format!("k{i}"))),
        value: Some(Bytes::from(format!("v{i}"))),
        headers: IndexMap::new(),
    };
    let records: Vec<Record> = (0..5).map(record).collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression: Compression::None }).expect("encodes");
    let dir = tempfile::tempdir().unwrap();
    {
        let log = sluice_log::Log::open(dir.path(), sluice_log::LogConfig::default()).unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        p.append(&[NewRecord::new(None, b"first".to_vec())], 0).unwrap();
        let info = p.write_raw(&mut buf.to_vec(), 0).unwrap();
        p.complete(&info).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (1, 5));
        let mut bad = buf.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(p.write_raw(&mut bad, 0), Err(sluice_log::LogError::BadBatch(_))));
        assert_eq!(p.log_end_offset(), 6, "nothing written for the bad batch");
        // Dropped without close: the reopen below recovers the active segment by scanning.
    }
    let log = sluice_log::Log::open(dir.path(), sluice_log::LogConfig::default()).unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let got: Vec<(u64, i64, Vec<u8>)> = p.read(1, 100, 1 << 20).unwrap().into_iter().map(|r| (r.offset, r.timestamp_ms, r.value)).collect();
    assert_eq!(got, (0..5).map(|i| (1 + i as u64, 1_000 + i, format!("v{i}").into_bytes())).collect::<Vec<_>>());
    let raw = p.read_raw(1, 1 << 20).unwrap();
    let set = RecordBatchDecoder::decode(&mut Bytes::from(raw)).expect("kafka-protocol reads the stored batches");
    let stored: Vec<i64> = set.records.iter().filter(|r| r.producer_id == 77).map(|r| r.offset).collect();
    assert_eq!(stored, vec![1, 2, 3, 4, 5], "stored as sent: producer id kept, offsets assigned");
}

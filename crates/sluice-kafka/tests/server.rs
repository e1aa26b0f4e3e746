//! The Kafka server over a real socket and a real log: idempotent produce (a retried batch
//! is not appended twice, a gap in the sequence numbers is refused; the Kafka protocol
//! guide, KIP-98), and answers to APIs sluice does not serve.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use sluice_log::{Log, LogConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

fn batch(producer_id: i64, base_sequence: i32, n: usize) -> Bytes {
    batch_with(producer_id, base_sequence, n, Compression::None)
}

fn batch_with(producer_id: i64, base_sequence: i32, n: usize, compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: base_sequence + i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("v{}", base_sequence + i as i32))),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(&mut out, &records, &RecordEncodeOptions { version: 2, compression }).expect("encodes");
    out.freeze()
}

/// Sends one Produce v3 request (written by hand: the codec crate encodes requests only
/// in its client build) and returns (error code, base offset).
///
/// Request (the Kafka protocol guide, non-flexible): header v1 = api_key i16 (0),
/// api_version i16 (3), correlation_id i32, client_id nullable string (-1); body =
/// transactional_id nullable string (-1), acks i16, timeout_ms i32, topics array (i32
/// count) of name string (i16 length + bytes) and partitions array of index i32 and
/// records bytes (i32 length + bytes). Response: header v0 = correlation_id i32; responses
/// array of name string and partitions array of index i32, error_code i16, base_offset i64.
async fn produce(stream: &mut tokio::net::TcpStream, correlation_id: i32, records: Bytes) -> (i16, i64) {
    let mut body = BytesMut::new();
    body.put_i16(0);
    body.put_i16(3);
    body.put_i32(correlation_id);
    body.put_i16(-1);
    body.put_i16(-1);
    body.put_i16(-1);
    body.put_i32(5_000);
    body.put_i32(1);
    body.put_i16(1);
    body.put_slice(b"t");
    body.put_i32(1);
    body.put_i32(0);
    body.put_i32(records.len() as i32);
    body.put_slice(&records);
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await.expect("send");
    let len = stream.read_i32().await.expect("length");
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await.expect("response");
    let i16_at = |at: usize| i16::from_be_bytes(buf[at..at + 2].try_into().unwrap());
    let i32_at = |at: usize| i32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
    assert_eq!(i32_at(0), correlation_id);
    assert_eq!(i32_at(4), 1, "one topic");
    let at = 8 + 2 + i16_at(8) as usize;
    assert_eq!(i32_at(at), 1, "one partition");
    let at = at + 4 + 4;
    (i16_at(at), i64::from_be_bytes(buf[at + 2..at + 10].try_into().unwrap()))
}

async fn start() -> (tempfile::TempDir, Arc<Log>, tokio::net::TcpStream) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open(dir.path(), LogConfig::default()).expect("log"));
    log.create_topic("t", 1).expect("topic");
    let s = serve(log.clone()).await;
    (dir, log, s)
}

/// A fresh Kafka server (empty in-memory state) over a log; returns a connection to it.
async fn serve(log: Arc<Log>) -> tokio::net::TcpStream {
    let (_, addr) = common::spawn_server(log, Default::default()).await;
    tokio::net::TcpStream::connect(addr).await.expect("connect")
}

/// Sends a request frame (header v1 + body) and returns the response frame.
async fn roundtrip(stream: &mut tokio::net::TcpStream, key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = BytesMut::new();
    frame.put_i32(8 + 2 + body.len() as i32);
    frame.put_i16(key);
    frame.put_i16(version);
    frame.put_i32(correlation_id);
    frame.put_i16(-1); // client id: null
    frame.put_slice(body);
    stream.write_all(&frame).await.expect("send");
    let len = stream.read_i32().await.expect("length");
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await.expect("response");
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_sluice_does_not_serve_gets_unsupported_version_and_the_connection_stays() {
    let (_dir, _log, mut s) = start().await;
    // DeleteRecords v1 (key 21): topics array with one topic "t", partition 0, offset 5;
    // timeout 1000 ms. Its response has no top-level error code: an empty result list.
    let mut body = BytesMut::new();
    body.put_i32(1);
    body.put_i16(1);
    body.put_slice(b"t");
    body.put_i32(1);
    body.put_i32(0);
    body.put_i64(5);
    body.put_i32(1000);
    let resp = roundtrip(&mut s, 21, 1, 77, &body).await;
    assert_eq!(&resp[0..4], &77i32.to_be_bytes(), "answered, with the request's correlation id");
    // DescribeAcls v1 (key 29) has a top-level error code: UNSUPPORTED_VERSION (35).
    // Body: resource type i8, name nullable string, pattern type i8, principal, host,
    // operation i8, permission type i8.
    let mut body = BytesMut::new();
    body.put_i8(1);
    body.put_i16(-1);
    body.put_i8(1);
    body.put_i16(-1);
    body.put_i16(-1);
    body.put_i8(1);
    body.put_i8(1);
    let resp = roundtrip(&mut s, 29, 1, 78, &body).await;
    assert_eq!(&resp[0..4], &78i32.to_be_bytes());
    // Response v1: throttle_time_ms i32, then error_code i16.
    assert_eq!(i16::from_be_bytes(resp[8..10].try_into().unwrap()), 35);
    // The same connection still serves: ApiVersions v0.
    let resp = roundtrip(&mut s, 18, 0, 79, &[]).await;
    assert_eq!(&resp[0..4], &79i32.to_be_bytes());
    assert_eq!(&resp[4..6], &0i16.to_be_bytes(), "ApiVersions succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batches_are_appended_once_and_gaps_are_refused() {
    let (_dir, log, mut s) = start().await;
    assert_eq!(produce(&mut s, 1, batch(42, 0, 3)).await, (0, 0));
    assert_eq!(produce(&mut s, 2, batch(42, 0, 3)).await, (0, 0), "a retry answers with the original offset");
    assert_eq!(produce(&mut s, 3, batch(42, 3, 2)).await, (0, 3));
    let (code, _) = produce(&mut s, 4, batch(42, 10, 1)).await;
    assert_eq!(code, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER for a gap (5..9 missing)");
    assert_eq!(produce(&mut s, 5, batch(43, 7, 1)).await, (0, 5), "another producer has its own sequence");
    assert_eq!(produce(&mut s, 6, batch(-1, -1, 2)).await, (0, 6), "non-idempotent batches are not checked");

    let part = log.topic("t").expect("t").partition(0).expect("p0").clone();
    let values: Vec<String> = part.read(0, 100, 1 << 20).expect("read").into_iter().map(|r| String::from_utf8(r.value).expect("utf8")).collect();
    assert_eq!(values, ["v0", "v1", "v2", "v3", "v4", "v7", "v-1", "v0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_restart_is_still_recognised() {
    let (dir, log, mut s) = start().await;
    assert_eq!(produce(&mut s, 1, batch(42, 0, 3)).await, (0, 0));
    assert_eq!(produce(&mut s, 2, batch(42, 3, 2)).await, (0, 3));
    drop(s);
    // A new server has no producer state: it rebuilds it from the stored batches.
    let mut s = serve(log.clone()).await;
    assert_eq!(produce(&mut s, 3, batch(42, 3, 2)).await, (0, 3), "the retried batch keeps its offset");
    assert_eq!(produce(&mut s, 4, batch(42, 5, 1)).await, (0, 5));
    let (code, _) = produce(&mut s, 5, batch(42, 9, 1)).await;
    assert_eq!(code, 45, "and gaps are still refused");
    assert_eq!(log.topic("t").unwrap().partition(0).unwrap().log_end_offset(), 6);
    // A compressed batch is stored re-encoded, with its producer fields kept.
    assert_eq!(produce(&mut s, 6, batch_with(50, 0, 4, Compression::Gzip)).await, (0, 6));
    drop(s);
    let mut s = serve(log.clone()).await;
    assert_eq!(produce(&mut s, 7, batch_with(50, 0, 4, Compression::Gzip)).await, (0, 6), "recognised after a restart too");
    assert_eq!(log.topic("t").unwrap().partition(0).unwrap().log_end_offset(), 10);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_max_message_bytes_gets_message_too_large() {
    let (_dir, log, mut s) = start().await;
    log.set_max_message_bytes("t", 200).expect("set max.message.bytes");
    let small = batch(-1, -1, 1);
    let big = batch(-1, -1, 20);
    assert!(small.len() <= 200 && big.len() > 200, "{} {}", small.len(), big.len());
    assert_eq!(produce(&mut s, 1, big.clone()).await.0, 10, "MESSAGE_TOO_LARGE (10), which producers do not retry");
    // Compressed batches are measured as sent, as Kafka does: the same 20 records fit gzipped.
    let gz = batch_with(-1, -1, 20, Compression::Gzip);
    assert!(gz.len() <= 200, "{}", gz.len());
    assert_eq!(produce(&mut s, 2, gz).await, (0, 0));
    assert_eq!(produce(&mut s, 3, small).await, (0, 20), "after the 20 gzipped records");
    // The setting survives a reopen of the log.
    let dir = log.dir().to_path_buf();
    drop(s);
    log.close().expect("close");
    drop(log);
    let log = Log::open(&dir, LogConfig::default()).expect("reopen");
    assert_eq!(log.topic("t").unwrap().max_message_bytes(), 200);
    assert!(log.set_max_message_bytes("t", 0).is_err(), "0 is refused");
    assert!(log.set_max_message_bytes("t", 65 << 20).is_err(), "past the log's 64 MiB batch limit is refused");
}

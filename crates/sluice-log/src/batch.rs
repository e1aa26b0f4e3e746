//! The on-disk batch format: Kafka's RecordBatch v2 (magic 2), byte for byte, so a Fetch
//! can serve stored bytes without re-encoding. Source: the Kafka protocol guide, "Record
//! Batch" (kafka.apache.org/documentation/#recordbatch).
//!
//! A segment file is a sequence of batches; each append writes exactly one batch. Fixed
//! fields are big-endian; `varint`/`varlong` are zigzag-encoded (protobuf style).
//!
//! ```text
//! offset  size  field
//! 0       8     baseOffset            int64   offset of the first record
//! 8       4     batchLength           int32   bytes after this field
//! 12      4     partitionLeaderEpoch  int32   (sluice: 0)
//! 16      1     magic                 int8    2
//! 17      4     crc                   uint32  CRC-32C of bytes 21 .. end
//! 21      2     attributes            int16   bits 0-2 compression (0 = none),
//!                                             bit 3 timestampType (1 = LogAppendTime),
//!                                             bit 4 transactional, bit 5 control
//! 23      4     lastOffsetDelta       int32   offsets span base .. base+lastOffsetDelta
//! 27      8     baseTimestamp         int64   epoch ms
//! 35      8     maxTimestamp          int64   epoch ms
//! 43      8     producerId            int64   (-1: none)
//! 51      2     producerEpoch         int16   (-1)
//! 53      4     baseSequence          int32   (-1)
//! 57      4     recordsCount          int32
//! 61      ..    records, each:
//!                 length          varint  bytes of the rest of the record
//!                 attributes      int8    (0)
//!                 timestampDelta  varlong from baseTimestamp
//!                 offsetDelta     varint  from baseOffset
//!                 keyLength       varint  (-1: null key)
//!                 key
//!                 valueLength     varint  (-1: null value)
//!                 value
//!                 headersCount    varint
//!                 headers, each: keyLength varint, key (UTF-8), valueLength varint (-1: null), value
//! ```
//!
//! The CRC does not cover the base offset or the leader epoch, so a batch is encoded and
//! checksummed before its offset is known ([`set_base_offset`]). A torn write or a flipped
//! bit in the covered bytes is detected before a batch is served.
//!
//! sluice writes uncompressed batches. Batches whose records carry no create time are
//! stamped with the log-append time (timestampType 1). Reading compressed batches (written
//! by Kafka producers) comes with the Kafka protocol server. A null value (a Kafka
//! tombstone) is read as an empty value until compaction needs the difference.

use crate::error::DecodeError;

/// Bytes before the records.
pub const HEADER_LEN: usize = 61;
/// Largest batch accepted on append and on recovery, bytes.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
const CRC_START: usize = 21;
const MAGIC: u8 = 2;
const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;

/// A record header: a string key and an optional byte value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<RecordHeader>,
    /// Create time, epoch ms; `None` stamps the record with the log-append time.
    pub timestamp_ms: Option<i64>,
}

impl NewRecord {
    /// A record with a key and value, no headers, stamped at append time.
    pub fn new(key: Option<Vec<u8>>, value: Vec<u8>) -> Self {
        NewRecord { key, value, headers: Vec::new(), timestamp_ms: None }
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    /// Create time, or the log-append time for batches stamped at append, epoch ms.
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<RecordHeader>,
}

/// Fixed fields of a batch, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    /// Whole batch size on disk, header included, bytes.
    pub total_len: usize,
    pub crc: u32,
    /// Offsets the batch spans (`lastOffsetDelta + 1`).
    pub record_count: u32,
    /// `maxTimestamp`: the log-append time, or the largest create time, epoch ms.
    pub append_time_ms: i64,
    pub attributes: i16,
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn varint_len(v: i64) -> usize {
    let mut z = zigzag(v);
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varint_len(b.len() as i64) + b.len(),
        None => varint_len(-1),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}

/// Encodes one uncompressed batch into `out` (cleared first). Errors with the size if it
/// would exceed [`MAX_BATCH_BYTES`].
pub fn encode(base_offset: u64, append_time_ms: i64, records: &[NewRecord], out: &mut Vec<u8>) -> Result<(), usize> {
    out.clear();
    let create_time = records.iter().any(|r| r.timestamp_ms.is_some());
    let ts = |r: &NewRecord| r.timestamp_ms.unwrap_or(append_time_ms);
    let base_ts = if create_time { records.first().map_or(append_time_ms, ts) } else { append_time_ms };
    let max_ts = if create_time { records.iter().map(ts).max().unwrap_or(append_time_ms) } else { append_time_ms };
    let mut bodies = 0usize;
    let sizes: Vec<usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut n = 1 + varint_len(ts(r) - base_ts) + varint_len(i as i64) + bytes_len(r.key.as_deref()) + bytes_len(Some(&r.value));
            n += varint_len(r.headers.len() as i64);
            for h in &r.headers {
                n += bytes_len(Some(h.key.as_bytes())) + bytes_len(h.value.as_deref());
            }
            bodies += varint_len(n as i64) + n;
            n
        })
        .collect();
    let total = HEADER_LEN + bodies;
    if total > MAX_BATCH_BYTES {
        return Err(total);
    }
    let attributes: i16 = if create_time { 0 } else { TIMESTAMP_TYPE_LOG_APPEND };
    out.reserve(total);
    out.extend_from_slice(&(base_offset as i64).to_be_bytes());
    out.extend_from_slice(&((total - 12) as i32).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.push(MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&(records.len().saturating_sub(1) as i32).to_be_bytes());
    out.extend_from_slice(&base_ts.to_be_bytes());
    out.extend_from_slice(&max_ts.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.extend_from_slice(&(records.len() as i32).to_be_bytes());
    for (i, (r, size)) in records.iter().zip(sizes).enumerate() {
        put_varint(out, size as i64);
        out.push(0);
        put_varint(out, ts(r) - base_ts);
        put_varint(out, i as i64);
        put_bytes(out, r.key.as_deref());
        put_bytes(out, Some(&r.value));
        put_varint(out, r.headers.len() as i64);
        for h in &r.headers {
            put_bytes(out, Some(h.key.as_bytes()));
            put_bytes(out, h.value.as_deref());
        }
    }
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Sets the base offset of an encoded batch (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[0..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
}

fn be<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// Parses the first [`HEADER_LEN`] bytes of a batch. `Err(Truncated)` if fewer are given.
pub fn decode_header(buf: &[u8]) -> Result<BatchHeader, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Truncated { needed: HEADER_LEN, available: buf.len() });
    }
    let base_offset = i64::from_be_bytes(be(buf, 0));
    if base_offset < 0 {
        return Err(DecodeError::Invalid(format!("negative baseOffset {base_offset}")));
    }
    let batch_length = i32::from_be_bytes(be(buf, 8));
    let total_len = (batch_length as i64) + 12;
    if total_len < HEADER_LEN as i64 || total_len > MAX_BATCH_BYTES as i64 {
        return Err(DecodeError::BadLength(batch_length.max(0) as usize));
    }
    if buf[16] != MAGIC {
        return Err(DecodeError::Invalid(format!("magic {} (only RecordBatch v2, magic 2, is stored)", buf[16])));
    }
    let last_offset_delta = i32::from_be_bytes(be(buf, 23));
    if last_offset_delta < 0 {
        return Err(DecodeError::Invalid(format!("negative lastOffsetDelta {last_offset_delta}")));
    }
    Ok(BatchHeader {
        base_offset: base_offset as u64,
        total_len: total_len as usize,
        crc: u32::from_be_bytes(be(buf, 17)),
        record_count: last_offset_delta as u32 + 1,
        append_time_ms: i64::from_be_bytes(be(buf, 35)),
        attributes: i16::from_be_bytes(be(buf, 21)),
    })
}

/// Checks the CRC of a whole batch (`buf` holds at least `header.total_len` bytes).
pub fn verify(header: &BatchHeader, buf: &[u8]) -> Result<(), DecodeError> {
    if buf.len() < header.total_len {
        return Err(DecodeError::Truncated { needed: header.total_len, available: buf.len() });
    }
    let actual = crc32c::crc32c(&buf[CRC_START..header.total_len]);
    if actual != header.crc {
        return Err(DecodeError::CrcMismatch { stored: header.crc, computed: actual });
    }
    Ok(())
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> DecodeError {
        DecodeError::Invalid(format!("{what} at batch byte {} runs past the batch end", HEADER_LEN + self.at))
    }
    #[inline]
    fn varint(&mut self) -> Result<i64, DecodeError> {
        // One byte (values -64..=63) is the common case: record attributes, small deltas,
        // lengths of keys, no headers.
        if let Some(&byte) = self.b.get(self.at).filter(|&&b| b < 0x80) {
            self.at += 1;
            return Ok(((byte >> 1) as i64) ^ -((byte & 1) as i64));
        }
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self.b.get(self.at).ok_or_else(|| self.err("a varint"))?;
            self.at += 1;
            z |= ((byte & 0x7f) as u64) << shift.min(63);
            if byte & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(DecodeError::Invalid("a varint longer than 10 bytes".into()))
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| self.err(what))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n >= 0 => self.take(n as usize, what).map(Some),
            n => Err(DecodeError::Invalid(format!("{what} length {n}"))),
        }
    }
}

/// One record of a batch, borrowed from the batch bytes.
struct RecordRef<'a> {
    offset: u64,
    timestamp_ms: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    /// (key, value) of each header; keys are checked to be UTF-8.
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// Walks every record of a whole, uncompressed batch, checking its structure (and its CRC
/// when `check_crc`). Header keys and values are collected only when `headers`.
fn walk_records<'a>(buf: &'a [u8], check_crc: bool, headers_too: bool, mut on_record: impl FnMut(RecordRef<'a>)) -> Result<(BatchHeader, usize), DecodeError> {
    let header = decode_header(buf)?;
    if check_crc {
        verify(&header, buf)?;
    }
    let codec = header.attributes & 0x07;
    if codec != 0 {
        return Err(DecodeError::Invalid(format!("compressed batches (codec {codec}) are not readable yet")));
    }
    let log_append = header.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0;
    let base_ts = i64::from_be_bytes(be(buf, 27));
    let count = i32::from_be_bytes(be(buf, 57));
    if count < 0 || count as u64 > header.record_count as u64 {
        return Err(DecodeError::Invalid(format!("recordsCount {count} with lastOffsetDelta {}", header.record_count - 1)));
    }
    let mut r = Reader { b: &buf[HEADER_LEN..header.total_len], at: 0 };
    for _ in 0..count {
        let len = r.varint()?;
        let body = r.take(usize::try_from(len).map_err(|_| DecodeError::Invalid(format!("record length {len}")))?, "a record")?;
        let mut rec = Reader { b: body, at: 0 };
        rec.take(1, "record attributes")?;
        let ts_delta = rec.varint()?;
        let offset_delta = rec.varint()?;
        if offset_delta < 0 || offset_delta >= header.record_count as i64 {
            return Err(DecodeError::Invalid(format!("offsetDelta {offset_delta} outside the batch")));
        }
        let key = rec.bytes("a key")?;
        let value = rec.bytes("a value")?;
        let n_headers = rec.varint()?;
        let mut headers = Vec::new();
        for _ in 0..n_headers.max(0) {
            let k = rec.bytes("a header key")?.ok_or_else(|| DecodeError::Invalid("null header key".into()))?;
            let k = std::str::from_utf8(k).map_err(|_| DecodeError::Invalid("header key is not UTF-8".into()))?;
            let v = rec.bytes("a header value")?;
            if headers_too {
                headers.push((k, v));
            }
        }
        let timestamp_ms = if log_append { header.append_time_ms } else { base_ts.saturating_add(ts_delta) };
        on_record(RecordRef { offset: header.base_offset + offset_delta as u64, timestamp_ms, key, value, headers });
    }
    if r.at != r.b.len() {
        return Err(DecodeError::Invalid(format!("{} trailing bytes after the last record", r.b.len() - r.at)));
    }
    Ok((header, count as usize))
}

/// Decodes a whole, CRC-checked batch into records, appending those with
/// `offset >= min_offset` to `out`.
pub fn decode_records(buf: &[u8], min_offset: u64, out: &mut Vec<Record>) -> Result<BatchHeader, DecodeError> {
    walk_records(buf, true, true, |r| {
        if r.offset >= min_offset {
            out.push(Record {
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.map(<[u8]>::to_vec).unwrap_or_default(),
                headers: r.headers.into_iter().map(|(k, v)| RecordHeader { key: k.to_string(), value: v.map(<[u8]>::to_vec) }).collect(),
            });
        }
    })
    .map(|(h, _)| h)
}

/// A record's place in a buffer of batches: what [`visit_values`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueRef {
    pub offset: u64,
    /// Create time, or the log-append time for batches stamped at append, epoch ms.
    pub timestamp_ms: i64,
    /// Where the value's bytes are in the buffer (a null value is empty).
    pub start: usize,
    pub len: usize,
}

/// Walks the records of concatenated whole batches whose CRCs were already checked (as
/// `Partition::read_raw` returns them), reporting each record with `offset >= min_offset`
/// and `< below` by where its value lies in `buf`: nothing is copied or allocated per
/// record. Headers and keys are skipped. Stops after the batch in which `out` reaches
/// `max_records` (whole batches: a batch is walked once, not once per `max_records`).
/// Errors: damaged structure, compressed batches.
pub fn visit_values(buf: &[u8], min_offset: u64, below: u64, max_records: usize, out: &mut Vec<ValueRef>) -> Result<(), DecodeError> {
    let base = buf.as_ptr() as usize;
    let mut pos = 0;
    while pos < buf.len() && out.len() < max_records {
        let h = decode_header(&buf[pos..])?;
        let end = pos.checked_add(h.total_len).filter(|&e| e <= buf.len()).ok_or(DecodeError::Truncated { needed: h.total_len, available: buf.len() - pos })?;
        walk_records(&buf[pos..end], false, false, |r| {
            if r.offset >= min_offset && r.offset < below {
                let (start, len) = r.value.map_or((0, 0), |v| (v.as_ptr() as usize - base, v.len()));
                out.push(ValueRef { offset: r.offset, timestamp_ms: r.timestamp_ms, start, len });
            }
        })?;
        pos = end;
    }
    Ok(())
}

/// Checks that a batch a client sent can be stored as it is: exactly one whole RecordBatch
/// v2, CRC-valid, uncompressed, neither transactional nor a control batch, with dense
/// offsets (recordsCount = lastOffsetDelta + 1) and every record well formed. Allocates
/// nothing per record. Errors: what is wrong and where.
pub fn validate_for_append(buf: &[u8]) -> Result<BatchHeader, DecodeError> {
    let (header, count) = walk_records(buf, true, false, |_| {})?;
    if header.total_len != buf.len() {
        return Err(DecodeError::Invalid(format!("{} bytes after the batch", buf.len() - header.total_len)));
    }
    if header.attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL) != 0 {
        return Err(DecodeError::Invalid("transactional and control batches are not accepted (no transactions)".into()));
    }
    if count as u64 != header.record_count as u64 || count == 0 {
        return Err(DecodeError::Invalid(format!("recordsCount {count} with lastOffsetDelta {}: offsets must be dense", header.record_count - 1)));
    }
    Ok(header)
}

/// Sets the producer fields of an encoded batch (producerId i64 at byte 43, producerEpoch
/// i16 at 51, baseSequence i32 at 53) and re-seals its CRC: for a producer's records that
/// arrived compressed and are stored re-encoded, so the stored batch still says who sent
/// it and at which sequence.
pub fn set_producer(batch: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32) {
    if batch.len() < HEADER_LEN {
        return;
    }
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Attribute bits (the Kafka protocol guide, "Record Batch"): bit 4 transactional, bit 5
/// control batch.
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Resets the fields a broker owns in a client's batch before storing it: baseOffset
/// (bytes 0..8) and partitionLeaderEpoch (12..16). Neither is covered by the CRC.
pub fn prepare_for_append(batch: &mut [u8], base_offset: u64) {
    set_base_offset(batch, base_offset);
    batch[12..16].copy_from_slice(&0i32.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs() -> Vec<NewRecord> {
        vec![
            NewRecord {
                key: Some(b"k".to_vec()),
                value: b"hello".to_vec(),
                headers: vec![RecordHeader { key: "h".into(), value: Some(b"v".to_vec()) }, RecordHeader { key: "n".into(), value: None }],
                timestamp_ms: None,
            },
            NewRecord::new(None, vec![]),
        ]
    }

    #[test]
    fn varints_round_trip_across_the_one_byte_boundary() {
        let values = [0i64, 1, -1, 63, -64, 64, -65, 127, 128, 300, -300, i32::MAX as i64, i64::MAX, i64::MIN];
        let mut buf = Vec::new();
        for &v in &values {
            put_varint(&mut buf, v);
        }
        let mut r = Reader { b: &buf, at: 0 };
        for &v in &values {
            assert_eq!(r.varint().unwrap(), v);
        }
        assert_eq!(r.at, buf.len());
        assert!(Reader { b: &[0x80], at: 0 }.varint().is_err(), "a truncated varint is an error");
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(41, 1_000, &recs(), &mut buf).unwrap();
        let mut out = Vec::new();
        let h = decode_records(&buf, 0, &mut out).unwrap();
        assert_eq!(h.total_len, buf.len());
        assert_eq!(h.record_count, 2);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].offset, out[1].offset), (41, 42));
        assert_eq!(out[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out[0].headers, recs()[0].headers);
        assert_eq!(out[1].value, b"");
        assert_eq!(out[1].timestamp_ms, 1_000, "log-append time");
    }

    #[test]
    fn create_times_are_kept() {
        let mut r = recs();
        r[0].timestamp_ms = Some(500);
        r[1].timestamp_ms = Some(700);
        let mut buf = Vec::new();
        encode(0, 1_000, &r, &mut buf).unwrap();
        let mut out = Vec::new();
        let h = decode_records(&buf, 0, &mut out).unwrap();
        assert_eq!(h.append_time_ms, 700, "maxTimestamp");
        assert_eq!((out[0].timestamp_ms, out[1].timestamp_ms), (500, 700));
    }

    #[test]
    fn every_flipped_covered_byte_is_detected() {
        let mut buf = Vec::new();
        encode(0, 7, &recs(), &mut buf).unwrap();
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            let res = decode_records(&bad, 0, &mut Vec::new());
            // baseOffset (0..8) and partitionLeaderEpoch (12..16) are outside the CRC, as in
            // Kafka; recovery checks offset continuity.
            if i < 8 || (12..16).contains(&i) {
                continue;
            }
            assert!(res.is_err(), "flip at byte {i} not detected");
        }
    }

    #[test]
    fn a_client_batch_validates_and_bad_ones_do_not() {
        let mut buf = Vec::new();
        encode(0, 7, &recs(), &mut buf).unwrap();
        assert_eq!(validate_for_append(&buf).map(|h| h.record_count), Ok(2));
        let mut extra = buf.clone();
        extra.push(0);
        assert!(validate_for_append(&extra).is_err(), "trailing bytes");
        let mut txn = buf.clone();
        txn[22] |= 0x10;
        let crc = crc32c::crc32c(&txn[CRC_START..]);
        txn[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(validate_for_append(&txn).is_err(), "transactional");
        let mut sparse = buf.clone();
        sparse[23..27].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&sparse[CRC_START..]);
        sparse[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(validate_for_append(&sparse).is_err(), "offset gaps");
        let mut moved = buf.clone();
        prepare_for_append(&mut moved, 99);
        let mut out = Vec::new();
        decode_records(&moved, 0, &mut out).unwrap();
        assert_eq!((out[0].offset, out[1].offset), (99, 100));
    }

    #[test]
    fn truncation_is_detected() {
        let mut buf = Vec::new();
        encode(0, 7, &recs(), &mut buf).unwrap();
        for n in 0..buf.len() {
            assert!(decode_records(&buf[..n], 0, &mut Vec::new()).is_err(), "len {n}");
        }
    }
}

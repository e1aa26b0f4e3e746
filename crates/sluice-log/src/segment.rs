//! One segment: `<partition dir>/<base_offset, 20 digits>.log`, a run of batches (see
//! [`crate::batch`]) with dense offsets from the file's base offset, and, once the segment
//! is closed (rolled), its index file `<base_offset>.index`.
//!
//! In memory each segment keeps a sparse offset index (an entry every
//! [`INDEX_INTERVAL_BYTES`] of log) and a sparse time index, as Kafka does. A read starts
//! at the nearest index entry at or below its offset and walks batch headers from there.
//!
//! Index file layout (little-endian), written and fsync'd when the segment is closed:
//!
//! ```text
//! offset  size     field
//! 0       8        magic "SLCIDX01"
//! 8       8        segment_len      u64  bytes of the .log file the index describes
//! 16      8        next_offset      u64  one past the segment's last offset
//! 24      8        first_append_ms  i64  (i64::MIN: none)
//! 32      8        max_append_ms    i64  (i64::MIN: none)
//! 40      4        n                u32  offset index entries
//! 44      4        m                u32  time index entries
//! 48      16 × n   (offset u64, position u64)
//! ..      16 × m   (max append time so far i64, position u64)
//! end-4   4        CRC-32C of every byte before it
//! ```
//!
//! On open, a segment whose index file checks out (CRC, magic, and `segment_len` equal to
//! the .log file's size) is not scanned. Closed segments always have one; the active
//! segment gets one at a clean shutdown ([`crate::Log::close`]), and after a crash it has
//! grown past it, so only that segment is scanned. A missing or stale index means a scan (every batch's CRC checked)
//! and a new index. Damage in a closed segment is then found by CRC when a read reaches it
//! and reported with the file and byte position; damaged bytes are never served.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::error::{io, DecodeError, LogError, Result};

/// Bytes of log between two sparse index entries.
pub const INDEX_INTERVAL_BYTES: u64 = 4096;
const INDEX_MAGIC: &[u8; 8] = b"SLCIDX01";
const INDEX_HEADER_LEN: usize = 48;

/// A sparse offset index entry: the batch starting at `offset` sits at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub position: u64,
}

/// A sparse time index entry: every batch before `position` was appended at or before
/// `max_append_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub max_append_ms: i64,
    pub position: u64,
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes of valid batches.
    pub len: u64,
    /// One past the last offset in the segment.
    pub next_offset: u64,
    pub index: Vec<IndexEntry>,
    pub time_index: Vec<TimeEntry>,
    /// Append time of the first batch, epoch ms (for time-based rolling).
    pub first_append_ms: Option<i64>,
    /// Largest append time of any batch, epoch ms (for time-based retention).
    pub max_append_ms: Option<i64>,
    last_indexed: Option<u64>,
}

/// What a scan found past the last valid batch.
#[derive(Debug)]
pub struct Tail {
    pub position: u64,
    pub file_len: u64,
    pub reason: DecodeError,
}

pub fn file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

pub fn index_path(log_path: &Path) -> PathBuf {
    log_path.with_extension("index")
}

impl Segment {
    fn empty(base_offset: u64, path: PathBuf, file: File) -> Segment {
        Segment {
            base_offset,
            path,
            file: Arc::new(file),
            len: 0,
            next_offset: base_offset,
            index: Vec::new(),
            time_index: Vec::new(),
            first_append_ms: None,
            max_append_ms: None,
            last_indexed: None,
        }
    }

    pub fn create(dir: &Path, base_offset: u64) -> Result<Segment> {
        let path = dir.join(file_name(base_offset));
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io(&path))?;
        Ok(Segment::empty(base_offset, path, file))
    }

    /// Records a batch appended at `position` (in memory: length, offsets, indexes).
    pub fn note_batch(&mut self, header: &BatchHeader, position: u64) {
        let due = self.last_indexed.is_none_or(|p| position >= p + INDEX_INTERVAL_BYTES);
        self.first_append_ms.get_or_insert(header.append_time_ms);
        let max = self.max_append_ms.map_or(header.append_time_ms, |m| m.max(header.append_time_ms));
        self.max_append_ms = Some(max);
        if due {
            self.index.push(IndexEntry { offset: header.base_offset, position });
            self.time_index.push(TimeEntry { max_append_ms: max, position });
            self.last_indexed = Some(position);
        }
        self.len = position + header.total_len as u64;
        self.next_offset = header.base_offset + header.record_count as u64;
    }

    /// Opens and scans a segment, checking every batch. Returns the segment holding every
    /// valid batch, and the invalid tail if the scan stopped before the end of the file.
    pub fn open(path: &Path, base_offset: u64) -> Result<(Segment, Option<Tail>)> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io(path))?;
        let file_len = file.metadata().map_err(io(path))?.len();
        let mut reader = BufReader::with_capacity(1 << 20, file.try_clone().map_err(io(path))?);
        let mut seg = Segment::empty(base_offset, path.to_path_buf(), file);
        let mut buf = Vec::new();
        let tail = loop {
            let position = seg.len;
            if position == file_len {
                break None;
            }
            buf.resize(HEADER_LEN, 0);
            let header = match read_exact_or_eof(&mut reader, &mut buf[..], file_len - position).and_then(|_| batch::decode_header(&buf)) {
                Ok(h) => h,
                Err(reason) => break Some(Tail { position, file_len, reason }),
            };
            if header.base_offset != seg.next_offset {
                let reason = DecodeError::Invalid(format!("base_offset {} where {} was expected", header.base_offset, seg.next_offset));
                break Some(Tail { position, file_len, reason });
            }
            buf.resize(header.total_len, 0);
            if let Err(reason) = read_exact_or_eof(&mut reader, &mut buf[HEADER_LEN..], file_len - position - HEADER_LEN as u64)
                .and_then(|_| batch::verify(&header, &buf))
            {
                break Some(Tail { position, file_len, reason });
            }
            seg.note_batch(&header, position);
        };
        Ok((seg, tail))
    }

    /// Opens a closed segment from its index file, without scanning it. `None` if the
    /// index is missing, damaged or stale (then the segment must be scanned).
    pub fn open_indexed(path: &Path, base_offset: u64) -> Result<Option<Segment>> {
        let Ok(bytes) = std::fs::read(index_path(path)) else { return Ok(None) };
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io(path))?;
        let file_len = file.metadata().map_err(io(path))?.len();
        let Some(ix) = parse_index(&bytes, base_offset, file_len) else {
            tracing::warn!(file = %path.display(), "segment index is damaged or stale; scanning the segment");
            return Ok(None);
        };
        Ok(Some(Segment {
            base_offset,
            path: path.to_path_buf(),
            file: Arc::new(file),
            len: ix.len,
            next_offset: ix.next_offset,
            last_indexed: ix.index.last().map(|e| e.position),
            index: ix.index,
            time_index: ix.time_index,
            first_append_ms: ix.first_append_ms,
            max_append_ms: ix.max_append_ms,
        }))
    }

    /// Writes this (closed) segment's index file and makes it durable.
    pub fn write_index(&self) -> Result<()> {
        let mut b = Vec::with_capacity(INDEX_HEADER_LEN + 16 * (self.index.len() + self.time_index.len()) + 4);
        b.extend_from_slice(INDEX_MAGIC);
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&self.next_offset.to_le_bytes());
        b.extend_from_slice(&self.first_append_ms.unwrap_or(i64::MIN).to_le_bytes());
        b.extend_from_slice(&self.max_append_ms.unwrap_or(i64::MIN).to_le_bytes());
        b.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.time_index.len() as u32).to_le_bytes());
        for e in &self.index {
            b.extend_from_slice(&e.offset.to_le_bytes());
            b.extend_from_slice(&e.position.to_le_bytes());
        }
        for e in &self.time_index {
            b.extend_from_slice(&e.max_append_ms.to_le_bytes());
            b.extend_from_slice(&e.position.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let path = index_path(&self.path);
        let tmp = path.with_extension("index.tmp");
        std::fs::write(&tmp, &b).map_err(io(&tmp))?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Cuts the file back to its valid length and makes that durable.
    pub fn truncate_to_valid(&self) -> Result<()> {
        self.file.set_len(self.len).map_err(io(&self.path))?;
        self.file.sync_all().map_err(io(&self.path))
    }

    /// Byte position of the nearest indexed batch at or before `offset`.
    pub fn floor_position(&self, offset: u64) -> u64 {
        let i = self.index.partition_point(|e| e.offset <= offset);
        if i == 0 { 0 } else { self.index[i - 1].position }
    }

    /// Byte position from which to look for the first batch appended at or after `ts_ms`.
    pub fn time_floor_position(&self, ts_ms: i64) -> u64 {
        let i = self.time_index.partition_point(|e| e.max_append_ms < ts_ms);
        if i == 0 { 0 } else { self.time_index[i - 1].position }
    }
}

/// The contents of a valid index file.
struct IndexData {
    len: u64,
    next_offset: u64,
    index: Vec<IndexEntry>,
    time_index: Vec<TimeEntry>,
    first_append_ms: Option<i64>,
    max_append_ms: Option<i64>,
}

fn parse_index(b: &[u8], base_offset: u64, file_len: u64) -> Option<IndexData> {
    if b.len() < INDEX_HEADER_LEN + 4 || &b[..8] != INDEX_MAGIC {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let u64_at = |at: usize| -> Option<u64> { Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?)) };
    let i64_at = |at: usize| -> Option<i64> { Some(i64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?)) };
    let (len, next_offset) = (u64_at(8)?, u64_at(16)?);
    if len != file_len || next_offset < base_offset {
        return None;
    }
    let opt = |v: i64| (v != i64::MIN).then_some(v);
    let n = u32::from_le_bytes(body.get(40..44)?.try_into().ok()?) as usize;
    let m = u32::from_le_bytes(body.get(44..48)?.try_into().ok()?) as usize;
    if body.len() != INDEX_HEADER_LEN + 16 * (n + m) {
        return None;
    }
    let mut at = INDEX_HEADER_LEN;
    let mut index = Vec::with_capacity(n);
    for _ in 0..n {
        index.push(IndexEntry { offset: u64_at(at)?, position: u64_at(at + 8)? });
        at += 16;
    }
    let mut time_index = Vec::with_capacity(m);
    for _ in 0..m {
        time_index.push(TimeEntry { max_append_ms: i64_at(at)?, position: u64_at(at + 8)? });
        at += 16;
    }
    let sane = index.windows(2).all(|w| w[0].offset < w[1].offset && w[0].position < w[1].position)
        && index.iter().all(|e| e.position < len.max(1) && e.offset >= base_offset && e.offset < next_offset.max(base_offset + 1))
        && time_index.iter().all(|e| e.position < len.max(1));
    if !sane {
        return None;
    }
    Some(IndexData { len, next_offset, index, time_index, first_append_ms: opt(i64_at(24)?), max_append_ms: opt(i64_at(32)?) })
}

fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8], remaining: u64) -> Result<(), DecodeError> {
    if (buf.len() as u64) > remaining {
        return Err(DecodeError::Truncated { needed: buf.len(), available: remaining as usize });
    }
    r.read_exact(buf).map_err(|e| DecodeError::Invalid(format!("read failed: {e}")))
}

/// Limits of one read.
pub struct ReadLimits {
    pub min_offset: u64,
    /// Batches starting at or after this offset are not read (the high watermark).
    pub below: u64,
    pub max_records: usize,
    pub max_bytes: usize,
}

/// Reads batches of one segment file from byte `position` up to `end`, decoding records at
/// or after `limits.min_offset` into `out` (CRC-checked). Returns the bytes of batches read;
/// stops early once a limit is reached.
pub fn read_from(file: &File, path: &Path, mut position: u64, end: u64, limits: &ReadLimits, out: &mut Vec<batch::Record>, bytes_read: &mut usize) -> Result<()> {
    let corrupt = |position: u64| move |source| LogError::Corrupt { path: path.to_path_buf(), position, source };
    let mut header = [0u8; HEADER_LEN];
    let mut buf = Vec::new();
    while position < end && out.len() < limits.max_records && (*bytes_read < limits.max_bytes || *bytes_read == 0) {
        file.read_exact_at(&mut header, position).map_err(io(path))?;
        let h = batch::decode_header(&header).map_err(corrupt(position))?;
        if h.base_offset >= limits.below {
            break;
        }
        if position + h.total_len as u64 > end {
            return Err(corrupt(position)(DecodeError::Invalid(format!("batch of {} bytes runs past the segment end", h.total_len))));
        }
        if h.base_offset + h.record_count as u64 > limits.min_offset {
            buf.resize(h.total_len, 0);
            file.read_exact_at(&mut buf, position).map_err(io(path))?;
            batch::decode_records(&buf, limits.min_offset, out).map_err(corrupt(position))?;
            *bytes_read += h.total_len;
        }
        position += h.total_len as u64;
    }
    Ok(())
}

/// Like [`read_from`], but appends whole stored batches (CRC-checked) to `out` as they are
/// on disk: what a Kafka Fetch returns. The first batch may start before `min_offset`.
/// `records` counts down the records at or after `min_offset` still wanted; reading stops
/// once it reaches 0. Returns true when it stopped because the next batch would not fit in
/// `max_bytes`, or no more records are wanted: the caller must not go on to a later segment
/// then, or that batch would be skipped.
#[allow(clippy::too_many_arguments)]
pub fn read_raw_from(file: &File, path: &Path, mut position: u64, end: u64, min_offset: u64, below: u64, max_bytes: usize, records: &mut usize, out: &mut Vec<u8>) -> Result<bool> {
    let corrupt = |position: u64| move |source| LogError::Corrupt { path: path.to_path_buf(), position, source };
    let mut header = [0u8; HEADER_LEN];
    while position < end && (out.len() < max_bytes || out.is_empty()) {
        if *records == 0 {
            return Ok(true);
        }
        file.read_exact_at(&mut header, position).map_err(io(path))?;
        let h = batch::decode_header(&header).map_err(corrupt(position))?;
        if h.base_offset >= below || position + h.total_len as u64 > end {
            break;
        }
        if h.base_offset + h.record_count as u64 > min_offset {
            if !out.is_empty() && out.len() + h.total_len > max_bytes {
                return Ok(true);
            }
            let start = out.len();
            out.resize(start + h.total_len, 0);
            file.read_exact_at(&mut out[start..], position).map_err(io(path))?;
            batch::verify(&h, &out[start..]).map_err(corrupt(position))?;
            let wanted = (h.base_offset + h.record_count as u64).min(below).saturating_sub(h.base_offset.max(min_offset));
            *records = records.saturating_sub(wanted as usize);
        }
        position += h.total_len as u64;
    }
    Ok(out.len() >= max_bytes || *records == 0)
}

/// The first batch at or after `position` appended at or after `ts_ms`: its base offset.
pub fn find_time(file: &File, path: &Path, mut position: u64, end: u64, ts_ms: i64) -> Result<Option<u64>> {
    let mut header = [0u8; HEADER_LEN];
    while position < end {
        file.read_exact_at(&mut header, position).map_err(io(path))?;
        let h = batch::decode_header(&header).map_err(|source| LogError::Corrupt { path: path.to_path_buf(), position, source })?;
        if h.append_time_ms >= ts_ms {
            return Ok(Some(h.base_offset));
        }
        position += h.total_len as u64;
    }
    Ok(None)
}

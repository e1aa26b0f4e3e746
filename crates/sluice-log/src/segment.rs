//! One segment file: `<partition dir>/<base_offset, 20 digits>.log`, a run of batches
//! (see [`crate::batch`]) with dense offsets starting at the file's base offset.
//!
//! The batch index (offset → byte position) is kept in memory and rebuilt by scanning
//! the file on open; every batch's CRC is checked during that scan.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::error::{io, DecodeError, LogError, Result};

/// Where one batch sits in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPos {
    pub base_offset: u64,
    pub record_count: u32,
    pub position: u64,
    pub len: u32,
}

impl BatchPos {
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.record_count as u64
    }
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes of valid batches.
    pub len: u64,
    pub batches: Vec<BatchPos>,
    /// Append time of the first batch, epoch ms (for time-based rolling).
    pub first_append_ms: Option<i64>,
    /// Largest append time of any batch, epoch ms (for time-based retention).
    pub max_append_ms: Option<i64>,
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

impl Segment {
    pub fn create(dir: &Path, base_offset: u64) -> Result<Segment> {
        let path = dir.join(file_name(base_offset));
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io(&path))?;
        Ok(Segment { base_offset, path, file: Arc::new(file), len: 0, batches: Vec::new(), first_append_ms: None, max_append_ms: None })
    }

    /// Opens and scans a segment. Returns the segment holding every valid batch, and the
    /// invalid tail if the scan stopped before the end of the file (torn write or corruption).
    pub fn open(path: &Path, base_offset: u64) -> Result<(Segment, Option<Tail>)> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io(path))?;
        let file_len = file.metadata().map_err(io(path))?.len();
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut seg = Segment {
            base_offset,
            path: path.to_path_buf(),
            file: Arc::new(file.try_clone().map_err(io(path))?),
            len: 0,
            batches: Vec::new(),
            first_append_ms: None,
            max_append_ms: None,
        };
        let mut buf = Vec::new();
        let mut expected = base_offset;
        let tail = loop {
            let position = seg.len;
            if position == file_len {
                break None;
            }
            buf.resize(HEADER_LEN, 0);
            let header = match read_exact_or_eof(&mut reader, &mut buf[..], file_len - position)
                .and_then(|_| batch::decode_header(&buf))
            {
                Ok(h) => h,
                Err(reason) => break Some(Tail { position, file_len, reason }),
            };
            if let Err(reason) = check_offset(&header, expected) {
                break Some(Tail { position, file_len, reason });
            }
            buf.resize(header.total_len, 0);
            if let Err(reason) = read_exact_or_eof(&mut reader, &mut buf[HEADER_LEN..], file_len - position - HEADER_LEN as u64)
                .and_then(|_| batch::verify(&header, &buf))
            {
                break Some(Tail { position, file_len, reason });
            }
            seg.first_append_ms.get_or_insert(header.append_time_ms);
            seg.max_append_ms = Some(seg.max_append_ms.map_or(header.append_time_ms, |m| m.max(header.append_time_ms)));
            seg.batches.push(BatchPos {
                base_offset: header.base_offset,
                record_count: header.record_count,
                position,
                len: header.total_len as u32,
            });
            seg.len += header.total_len as u64;
            expected = header.base_offset + header.record_count as u64;
        };
        Ok((seg, tail))
    }

    pub fn next_offset(&self) -> u64 {
        self.batches.last().map_or(self.base_offset, |b| b.next_offset())
    }

    /// Cuts the file back to its valid length and makes that durable.
    pub fn truncate_to_valid(&self) -> Result<()> {
        self.file.set_len(self.len).map_err(io(&self.path))?;
        self.file.sync_all().map_err(io(&self.path))
    }

    /// Index of the batch holding `offset`, if any.
    pub fn batch_index(&self, offset: u64) -> Option<usize> {
        let i = self.batches.partition_point(|b| b.next_offset() <= offset);
        (i < self.batches.len() && self.batches[i].base_offset <= offset).then_some(i)
    }
}

fn check_offset(header: &BatchHeader, expected: u64) -> Result<(), DecodeError> {
    if header.base_offset != expected {
        return Err(DecodeError::Invalid(format!(
            "base_offset {} where {} was expected",
            header.base_offset, expected
        )));
    }
    Ok(())
}

fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8], remaining: u64) -> Result<(), DecodeError> {
    if (buf.len() as u64) > remaining {
        return Err(DecodeError::Truncated { needed: buf.len(), available: remaining as usize });
    }
    r.read_exact(buf).map_err(|e| DecodeError::Invalid(format!("read failed: {e}")))
}

/// Reads and decodes the batches at `positions` (all from one segment file).
pub fn read_batches(
    file: &File,
    path: &Path,
    positions: &[BatchPos],
    min_offset: u64,
    out: &mut Vec<batch::Record>,
) -> Result<()> {
    let (Some(first), Some(last)) = (positions.first(), positions.last()) else { return Ok(()) };
    let start = first.position;
    let end = last.position + last.len as u64;
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start).map_err(io(path))?;
    for p in positions {
        let at = (p.position - start) as usize;
        batch::decode_records(&buf[at..at + p.len as usize], min_offset, out).map_err(|source| LogError::Corrupt {
            path: path.to_path_buf(),
            position: p.position,
            source,
        })?;
    }
    Ok(())
}

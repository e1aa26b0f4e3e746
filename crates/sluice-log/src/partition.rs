//! A partition: an ordered list of segments, one active for appends.
//!
//! Durability: [`Partition::append`] writes a batch, then waits until an fdatasync covers
//! it (group commit: one writer syncs on behalf of every batch written before its sync
//! began; the others wait on it). The high watermark is the end of what has been synced;
//! readers are served only below it, so nothing a client was not acked for is ever read.
//! A failed write or fsync poisons the whole log ([`crate::Poison`]): appends to every
//! partition are refused until restart, reads continue (the page cache cannot be trusted
//! after a failed fsync).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::batch::{self, NewRecord, Record, MAX_BATCH_BYTES};
use crate::error::{io, LogError, Result};
use crate::segment::{self, Segment};
use crate::{Changes, Faults, LogConfig, Poison, Retention};

/// Offsets assigned to one append: `base_offset ..= last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
}

struct Inner {
    segments: Vec<Segment>,
    next_offset: u64,
}

thread_local! {
    /// Encode buffer, reused by each thread's appends.
    static ENCODE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Inner {
    fn active(&self) -> &Segment {
        // A partition always holds at least one segment (created on open).
        &self.segments[self.segments.len() - 1]
    }
    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }
}

pub struct Partition {
    topic: String,
    id: u32,
    dir: PathBuf,
    config: LogConfig,
    inner: Mutex<Inner>,
    sync_lock: Mutex<()>,
    high_watermark: AtomicU64,
    /// One past the last fsync'd offset (equals the high watermark under `Durability::Fsync`).
    durable: AtomicU64,
    /// 0: acknowledge after fsync; otherwise flush every this many ms (`Durability::Interval`).
    flush_interval_ms: AtomicU64,
    last_flush: Mutex<std::time::Instant>,
    poison: Arc<Poison>,
    fsyncs: AtomicU64,
    changes: Arc<Changes>,
    faults: Arc<Faults>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (writes happen before updates).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Partition {
    /// Opens (or creates) the partition in `dir`, scanning its segments. A torn tail of the
    /// last segment is truncated; damage in an earlier segment is an error.
    pub(crate) fn open(topic: &str, id: u32, dir: &Path, config: LogConfig, changes: Arc<Changes>, faults: Arc<Faults>, poison: Arc<Poison>) -> Result<Partition> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut bases: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(base) = name.strip_suffix(".log").and_then(|s| s.parse::<u64>().ok()) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment::file_name(base));
            let is_last = i + 1 == bases.len();
            // Segments load from their index when it matches the file. The last segment has
            // one only after a clean shutdown; after a crash it has grown past its index (or
            // has none) and is scanned.
            let indexed = Segment::open_indexed(&path, base)?;
            let seg = match indexed {
                Some(seg) => seg,
                None => {
                    let (seg, tail) = Segment::open(&path, base)?;
                    if let Some(tail) = tail {
                        if !is_last {
                            return Err(LogError::Corrupt { path, position: tail.position, source: tail.reason });
                        }
                        tracing::warn!(
                            topic, partition = id, file = %path.display(), position = tail.position,
                            dropped_bytes = tail.file_len - tail.position, reason = %tail.reason,
                            "truncating the unacknowledged tail of the last segment"
                        );
                        seg.truncate_to_valid()?;
                    } else if !is_last {
                        seg.write_index()?;
                    }
                    seg
                }
            };
            if let Some(prev) = segments.last() {
                if prev.next_offset != base {
                    return Err(LogError::Corrupt {
                        path,
                        position: 0,
                        source: crate::DecodeError::Invalid(format!(
                            "segment starts at offset {base} but the previous one ends at {}",
                            prev.next_offset
                        )),
                    });
                }
            }
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0)?);
            sync_dir(dir)?;
        }
        // Whatever survived the crash is on disk from now on, so it may be served.
        let last = &segments[segments.len() - 1];
        last.file.sync_data().map_err(io(&last.path))?;
        let next_offset = last.next_offset;
        Ok(Partition {
            topic: topic.to_string(),
            id,
            dir: dir.to_path_buf(),
            config,
            inner: Mutex::new(Inner { segments, next_offset }),
            sync_lock: Mutex::new(()),
            high_watermark: AtomicU64::new(next_offset),
            durable: AtomicU64::new(next_offset),
            flush_interval_ms: AtomicU64::new(0),
            last_flush: Mutex::new(std::time::Instant::now()),
            poison,
            fsyncs: AtomicU64::new(0),
            changes,
            faults,
        })
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// One past the last acknowledged offset; readers see offsets below it. Under
    /// `Durability::Fsync` that is the durable end; under `Interval`, the written end.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// One past the last written offset (Kafka's log end offset); at or above the high
    /// watermark, which trails it while a write awaits its fsync.
    pub fn log_end_offset(&self) -> u64 {
        lock(&self.inner).next_offset
    }

    /// One past the last fsync'd offset.
    pub fn durable_offset(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Sets when appends are acknowledged (see [`crate::Durability`]).
    pub fn set_durability(&self, d: crate::Durability) {
        let ms = match d {
            crate::Durability::Fsync => 0,
            crate::Durability::Interval { flush_interval_ms } => flush_interval_ms.max(1),
        };
        self.flush_interval_ms.store(ms, Ordering::Release);
    }

    /// Makes an append acknowledged according to the durability policy: waits for an
    /// fsync covering it (`Fsync`), or publishes it to readers at once (`Interval`).
    pub fn complete(&self, info: &AppendInfo) -> Result<()> {
        if self.flush_interval_ms.load(Ordering::Acquire) == 0 {
            return self.sync_to(info.last_offset + 1);
        }
        self.high_watermark.fetch_max(info.last_offset + 1, Ordering::AcqRel);
        self.changes.bump();
        Ok(())
    }

    /// Under `Durability::Interval`, fsyncs if the last flush is older than the interval
    /// and there is unsynced data. Returns whether it flushed.
    pub fn flush_if_due(&self) -> Result<bool> {
        let interval = self.flush_interval_ms.load(Ordering::Acquire);
        if interval == 0 || self.durable_offset() >= self.high_watermark() {
            return Ok(false);
        }
        if lock(&self.last_flush).elapsed() < std::time::Duration::from_millis(interval) {
            return Ok(false);
        }
        self.sync_to(self.high_watermark())?;
        Ok(true)
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        lock(&self.inner).segments[0].base_offset
    }

    /// Bytes of valid batches over all segments.
    pub fn size_bytes(&self) -> u64 {
        lock(&self.inner).segments.iter().map(|s| s.len).sum()
    }

    pub fn segment_count(&self) -> usize {
        lock(&self.inner).segments.len()
    }

    /// fdatasync calls made so far.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    fn check_poison(&self) -> Result<()> {
        if self.poison.is_set() {
            return Err(LogError::Poisoned { reason: self.poison.reason().unwrap_or_default() });
        }
        Ok(())
    }

    fn poison(&self, err: &LogError) {
        tracing::error!(topic = %self.topic, partition = self.id, error = %err, "poisoning the log: writes refused until restart");
        self.poison.set(format!("{}-{}: {err}", self.topic, self.id));
    }

    /// Appends `records` as one batch stamped `append_time_ms`, and returns once it is
    /// acknowledged: fsync'd under `Durability::Fsync` (the default), written under
    /// `Interval`. Errors: [`LogError::Poisoned`], [`LogError::BatchTooLarge`], I/O.
    pub fn append(&self, records: &[NewRecord], append_time_ms: i64) -> Result<AppendInfo> {
        let info = self.write(records, append_time_ms)?;
        self.complete(&info)?;
        Ok(info)
    }

    /// Writes one batch without acknowledging it; follow with [`Partition::complete`].
    /// An empty `records` is an error-free no-op that returns the next offset twice.
    pub fn write(&self, records: &[NewRecord], append_time_ms: i64) -> Result<AppendInfo> {
        self.check_poison()?;
        if records.is_empty() {
            let next = lock(&self.inner).next_offset;
            return Ok(AppendInfo { base_offset: next, last_offset: next.saturating_sub(1) });
        }
        ENCODE_BUF.with_borrow_mut(|buf| {
            // Encode and checksum outside the lock; only the base offset is set under it.
            batch::encode(0, append_time_ms, records, buf).map_err(|size| LogError::BatchTooLarge { size, max: MAX_BATCH_BYTES })?;
            self.write_at_end(buf, records.len() as u64, append_time_ms)
        })
    }

    /// Writes one batch a client encoded (a Kafka producer's RecordBatch v2), stored as it
    /// was sent apart from the fields a broker owns (base offset, leader epoch). It is
    /// checked first with [`batch::validate_for_append`]; a bad batch is refused with
    /// [`LogError::BadBatch`] and nothing is written. Follow with [`Partition::complete`].
    pub fn write_raw(&self, batch_bytes: &mut [u8], append_time_ms: i64) -> Result<AppendInfo> {
        self.check_poison()?;
        let header = batch::validate_for_append(batch_bytes).map_err(LogError::BadBatch)?;
        self.write_at_end(batch_bytes, header.record_count as u64, append_time_ms)
    }

    /// Under the partition lock: gives an encoded batch of `count` records the next offsets
    /// (the fields a broker owns), writes it, and advances the log end. A failed write
    /// poisons the log.
    fn write_at_end(&self, batch_bytes: &mut [u8], count: u64, append_time_ms: i64) -> Result<AppendInfo> {
        let mut inner = lock(&self.inner);
        let base_offset = inner.next_offset;
        batch::prepare_for_append(batch_bytes, base_offset);
        let result = self.write_locked(&mut inner, batch_bytes, base_offset, append_time_ms);
        if let Err(e) = &result {
            self.poison(e);
        }
        result?;
        let last_offset = base_offset + count - 1;
        inner.next_offset = last_offset + 1;
        Ok(AppendInfo { base_offset, last_offset })
    }

    fn write_locked(&self, inner: &mut Inner, buf: &[u8], base_offset: u64, now_ms: i64) -> Result<()> {
        let active = inner.active();
        let too_big = active.len > 0 && active.len + buf.len() as u64 > self.config.segment_bytes;
        let too_old = active.first_append_ms.is_some_and(|t| now_ms.saturating_sub(t) >= self.config.segment_ms);
        if too_big || too_old {
            // The old segment and its index are made durable before the new one exists, so
            // only the active segment can ever have a torn tail or lack an index.
            active.file.sync_data().map_err(io(&active.path))?;
            active.write_index()?;
            inner.segments.push(Segment::create(&self.dir, base_offset)?);
            sync_dir(&self.dir)?;
        }
        let header = batch::decode_header(buf).map_err(|source| LogError::Corrupt { path: inner.active().path.clone(), position: 0, source })?;
        let seg = inner.active_mut();
        if self.faults.take_write() {
            return Err(LogError::Io { path: seg.path.clone(), source: std::io::Error::from_raw_os_error(28) });
        }
        seg.file.write_all_at(buf, seg.len).map_err(io(&seg.path))?;
        let position = seg.len;
        seg.note_batch(&header, position);
        Ok(())
    }

    /// Blocks until every offset below `target` is durable (group commit).
    pub fn sync_to(&self, target: u64) -> Result<()> {
        if self.durable_offset() >= target {
            return Ok(());
        }
        let _sync = lock(&self.sync_lock);
        if self.durable_offset() >= target {
            return Ok(());
        }
        self.check_poison()?;
        let (file, path, end): (Arc<File>, PathBuf, u64) = {
            let inner = lock(&self.inner);
            let a = inner.active();
            (a.file.clone(), a.path.clone(), inner.next_offset)
        };
        let synced = if self.faults.take_fsync() { Err(std::io::Error::from_raw_os_error(5)) } else { file.sync_data() };
        if let Err(e) = synced {
            let err = LogError::Io { path, source: e };
            self.poison(&err);
            return Err(err);
        }
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_flush) = std::time::Instant::now();
        self.durable.fetch_max(end, Ordering::AcqRel);
        self.high_watermark.fetch_max(end, Ordering::AcqRel);
        self.changes.bump();
        Ok(())
    }

    /// Deletes closed segments (never the active one) that are past retention, oldest
    /// first: a segment whose newest batch is older than `now_ms - retention_ms`, and, while
    /// the partition is larger than `retention_bytes`, the oldest segments whose removal
    /// keeps it at or above that size (Kafka's rule). Negative limits mean unlimited.
    /// Advances the log start offset; returns the number of segments deleted.
    pub fn apply_retention(&self, now_ms: i64, retention: Retention) -> Result<usize> {
        let doomed: Vec<Segment> = {
            let mut inner = lock(&self.inner);
            let mut size: u64 = inner.segments.iter().map(|s| s.len).sum();
            let mut n = 0;
            while n + 1 < inner.segments.len() {
                let seg = &inner.segments[n];
                let expired = retention.ms >= 0 && seg.max_append_ms.is_none_or(|t| t < now_ms.saturating_sub(retention.ms));
                let too_big = retention.bytes >= 0 && size.saturating_sub(seg.len) >= retention.bytes as u64;
                if !(expired || too_big) {
                    break;
                }
                size -= seg.len;
                n += 1;
            }
            inner.segments.drain(..n).collect()
        };
        for seg in &doomed {
            tracing::info!(topic = %self.topic, partition = self.id, file = %seg.path.display(), base_offset = seg.base_offset, bytes = seg.len, "retention: deleting segment");
            std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
            let index = segment::index_path(&seg.path);
            if let Err(e) = std::fs::remove_file(&index) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(LogError::Io { path: index, source: e });
                }
            }
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(doomed.len())
    }

    /// Makes everything written durable and writes the active segment's index, so the next
    /// open needs no scan (a clean shutdown).
    pub fn close(&self) -> Result<()> {
        self.sync_to(u64::MAX)?;
        let inner = lock(&self.inner);
        inner.active().write_index()
    }

    /// Where a read from `offset` goes: for each segment from the one holding `offset` on,
    /// its file, path, starting byte (the nearest index entry in the first segment) and
    /// valid length. Taken under the lock; the reading happens without it.
    fn read_plan(&self, offset: u64) -> Vec<(Arc<File>, PathBuf, u64, u64)> {
        let inner = lock(&self.inner);
        let first = inner.segments.partition_point(|s| s.next_offset <= offset);
        inner.segments[first.min(inner.segments.len())..]
            .iter()
            .enumerate()
            .map(|(i, s)| (s.file.clone(), s.path.clone(), if i == 0 { s.floor_position(offset) } else { 0 }, s.len))
            .collect()
    }

    /// An offset from which about the last `max_bytes` of the active segment can be read
    /// (an offset index entry; the segment's base offset when it is smaller): where to
    /// look for the most recent batches, e.g. to rebuild producer state after a restart.
    pub fn tail_offset(&self, max_bytes: u64) -> u64 {
        let inner = lock(&self.inner);
        let active = inner.active();
        let from = active.len.saturating_sub(max_bytes);
        let i = active.index.partition_point(|e| e.position < from);
        active.index.get(i).map(|e| e.offset).unwrap_or(active.next_offset).max(active.base_offset)
    }

    /// Reads records from `offset` (inclusive) up to the high watermark, at most
    /// `max_records` and roughly `max_bytes` (whole batches; at least one batch).
    /// Offsets below the log start offset start at the log start offset. A batch that fails
    /// its CRC is an error naming the file and byte position; it is never returned as data.
    pub fn read(&self, offset: u64, max_records: usize, max_bytes: usize) -> Result<Vec<Record>> {
        let hw = self.high_watermark();
        if offset >= hw || max_records == 0 {
            return Ok(Vec::new());
        }
        let plan = self.read_plan(offset);
        let limits = segment::ReadLimits { min_offset: offset, below: hw, max_records, max_bytes };
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for (file, path, start, end) in plan {
            segment::read_from(&file, &path, start, end, &limits, &mut out, &mut bytes)?;
            if out.len() >= max_records || bytes >= max_bytes {
                break;
            }
        }
        out.retain(|r| r.offset < hw);
        out.truncate(max_records);
        Ok(out)
    }

    /// Record values from `offset` (inclusive) up to the high watermark, without a copy or
    /// an allocation per record: the batches as stored, and each record's offset, timestamp
    /// and value position in them. Whole batches: at least `max_records` when there are
    /// that many, and every record of the last batch read (so that a large batch is decoded
    /// once, not once per `max_records`); about `max_bytes` (at least one batch). Reading
    /// stops at the batch that completes `max_records`. Offsets below the log start offset
    /// start there. A batch that
    /// fails its CRC is an error naming the file and byte position.
    pub fn read_values(&self, offset: u64, max_records: usize, max_bytes: usize) -> Result<(Vec<u8>, Vec<crate::batch::ValueRef>)> {
        let hw = self.high_watermark();
        let offset = offset.max(self.log_start_offset());
        let buf = self.read_raw_records(offset, max_records.max(1), max_bytes)?;
        let mut refs = Vec::new();
        crate::batch::visit_values(&buf, offset, hw, max_records.max(1), &mut refs).map_err(|source| LogError::Corrupt { path: self.dir.clone(), position: 0, source })?;
        Ok((buf, refs))
    }

    /// Stored batches (RecordBatch v2, as on disk) from the one holding `offset` up to the
    /// high watermark, about `max_bytes` (at least one batch): what a Kafka Fetch returns.
    pub fn read_raw(&self, offset: u64, max_bytes: usize) -> Result<Vec<u8>> {
        self.read_raw_records(offset, usize::MAX, max_bytes)
    }

    /// [`Partition::read_raw`], stopping after the batch that completes `max_records`
    /// records at or after `offset`.
    pub fn read_raw_records(&self, offset: u64, max_records: usize, max_bytes: usize) -> Result<Vec<u8>> {
        let hw = self.high_watermark();
        let mut records = max_records;
        let mut out = Vec::new();
        if offset >= hw {
            return Ok(out);
        }
        for (file, path, start, end) in self.read_plan(offset) {
            if segment::read_raw_from(&file, &path, start, end, offset, hw, max_bytes, &mut records, &mut out)? {
                break; // full: the next batch did not fit (continuing would skip it)
            }
        }
        Ok(out)
    }

    /// The first offset whose batch was appended at or after `ts_ms` (Kafka's ListOffsets
    /// by timestamp), or `None` if every record is older. Uses the time index.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<u64>> {
        let candidates: Vec<(Arc<File>, PathBuf, u64, u64)> = {
            let inner = lock(&self.inner);
            inner
                .segments
                .iter()
                .filter(|s| s.max_append_ms.is_some_and(|m| m >= ts_ms))
                .map(|s| (s.file.clone(), s.path.clone(), s.time_floor_position(ts_ms), s.len))
                .collect()
        };
        let hw = self.high_watermark();
        for (file, path, start, end) in candidates {
            if let Some(o) = segment::find_time(&file, &path, start, end, ts_ms)? {
                return Ok((o < hw).then_some(o));
            }
        }
        Ok(None)
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

//! Operator state on disk: a changelog of Arrow IPC files, compacted into snapshots.
//!
//! At each checkpoint a stateful operator writes only the keys that changed since the
//! previous one (and tombstones for keys it dropped) to a *delta* file. Recovery reads the
//! newest *snapshot* and the deltas after it, oldest first; for each key the newest file
//! that holds it wins. When the deltas since the snapshot outgrow it, they are merged into
//! a new snapshot in the background, so recovery reads at most about twice the live state
//! however long the history. This is Flink's changelog state backend (FLIP-158, generic
//! log-based incremental checkpoints) over the format operators already use, Arrow.
//!
//! Every state file's batches share one convention: column `key` (Binary) groups rows, and
//! a row with `tombstone = true` deletes its key. A key's rows are consecutive (a *group*);
//! a key may have several groups in one file (state written ahead of a checkpoint, then
//! changed again before it), and the last group replaces the earlier ones. A group never
//! spans two batches (a batch starts a new group). A file is written to a temporary name,
//! fsync'd and renamed, so it is whole or absent. Files: `<dir>/delta-<checkpoint, 20
//! digits>.arrow` and `<dir>/snapshot-<checkpoint>.arrow`, named in the checkpoint manifest
//! (`crate::checkpoint`) relative to the checkpoints directory.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch, UInt32Array};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_ipc::CompressionType;
use serde::{Deserialize, Serialize};

use crate::ops::group_key::GroupKey;
use crate::StreamError;

/// Name of the key column of state batches.
pub const KEY: &str = "key";
/// Name of the tombstone column of state batches.
pub const TOMBSTONE: &str = "tombstone";

/// Batches an operator writes at a checkpoint: kept in `batches`, or, for a writer made
/// by [`StateWriter::to_file`], appended to a state file as they come, so that a
/// checkpoint's state is never all in memory at once.
#[derive(Default)]
pub struct StateWriter {
    pub batches: Vec<RecordBatch>,
    /// Keys whose state (or tombstone) the batches hold.
    pub changed_keys: u64,
    /// The state file the batches go to: its temporary path, and the writer once the first
    /// batch (which gives the schema) has come.
    file: Option<(PathBuf, Option<StateFileWriter>)>,
}

impl StateWriter {
    /// A writer that appends to `open`, or else creates the state file `tmp` with its
    /// first batch.
    pub fn to_file(tmp: PathBuf, open: Option<StateFileWriter>) -> Self {
        StateWriter { batches: Vec::new(), changed_keys: 0, file: Some((tmp, open)) }
    }

    /// Adds a batch (empty ones are dropped). Errors: creating or writing the state file.
    pub fn write(&mut self, batch: RecordBatch) -> Result<(), StreamError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match &mut self.file {
            None => self.batches.push(batch),
            Some((tmp, open)) => {
                let w = match open {
                    Some(w) => w,
                    slot => slot.insert(StateFileWriter::create(tmp, &batch.schema())?),
                };
                w.write(&batch)?;
            }
        }
        Ok(())
    }

    /// The state file the batches went to (None: no batch was written and none was open).
    pub fn into_file(self) -> Option<StateFileWriter> {
        self.file.and_then(|(_, w)| w)
    }
}

/// The files holding one operator's state as of a checkpoint (paths relative to the
/// checkpoints directory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFiles {
    pub snapshot: Option<String>,
    #[serde(default)]
    pub deltas: Vec<String>,
    /// Bytes of the snapshot.
    #[serde(default)]
    pub snapshot_bytes: u64,
    /// Bytes of the deltas.
    #[serde(default)]
    pub delta_bytes: u64,
}

impl StateFiles {
    /// Every file, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.snapshot.iter().chain(self.deltas.iter())
    }

    /// Whether the deltas have outgrown the snapshot enough to merge them (pure).
    pub fn wants_compaction(&self, min_bytes: u64) -> bool {
        self.deltas.len() >= 2 && self.delta_bytes >= min_bytes && self.delta_bytes > self.snapshot_bytes
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StreamError + '_ {
    move |e| StreamError::State { path: path.to_path_buf(), reason: e.to_string() }
}

fn arrow_err(path: &Path) -> impl FnOnce(arrow_schema::ArrowError) -> StreamError + '_ {
    move |e| StreamError::State { path: path.to_path_buf(), reason: e.to_string() }
}

/// Writes batches (all of one schema) as an Arrow IPC file, durably; returns its size.
pub fn write_file(path: &Path, batches: &[RecordBatch]) -> Result<u64, StreamError> {
    let Some(first) = batches.first() else { return Err(StreamError::State { path: path.into(), reason: "no batches".into() }) };
    let mut w = StateFileWriter::create(&path.with_extension("arrow.tmp"), &first.schema())?;
    for b in batches {
        w.write(b)?;
    }
    w.finish(path)
}

/// A state file being written batch by batch, under a temporary name until
/// [`StateFileWriter::finish`] makes it durable under its own.
pub struct StateFileWriter {
    tmp: PathBuf,
    writer: FileWriter<std::io::BufWriter<File>>,
}

impl StateFileWriter {
    /// Creates (or truncates) `tmp`, with its directory.
    pub fn create(tmp: &Path, schema: &arrow_schema::Schema) -> Result<Self, StreamError> {
        if let Some(dir) = tmp.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let file = File::create(tmp).map_err(io(tmp))?;
        // LZ4 frames per buffer: state columns (event times a second apart, counters, nulls)
        // shrink about ninefold, for less CPU than the write and fsync they save.
        let options = IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME)).map_err(arrow_err(tmp))?;
        let writer = FileWriter::try_new_with_options(std::io::BufWriter::new(file), schema, options).map_err(arrow_err(tmp))?;
        Ok(StateFileWriter { tmp: tmp.to_path_buf(), writer })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StreamError> {
        self.writer.write(batch).map_err(arrow_err(&self.tmp))
    }

    /// Ends the file, fsyncs it and renames it to `path`; returns its size.
    pub fn finish(self, path: &Path) -> Result<u64, StreamError> {
        self.close()?.persist(path)
    }

    /// Ends the file (footer written, buffers flushed to the kernel), not yet durable.
    /// This is the cheap, synchronous half of [`StateFileWriter::finish`]; the fsync is
    /// [`ClosedStateFile::persist`], which another thread can do.
    pub fn close(mut self) -> Result<ClosedStateFile, StreamError> {
        let tmp = self.tmp;
        self.writer.finish().map_err(arrow_err(&tmp))?;
        let file = self.writer.into_inner().map_err(arrow_err(&tmp))?.into_inner().map_err(|e| StreamError::State { path: tmp.clone(), reason: e.to_string() })?;
        let size = file.metadata().map_err(io(&tmp))?.len();
        Ok(ClosedStateFile { tmp, file, size })
    }
}

/// A whole state file under its temporary name, written but not yet fsync'd.
pub struct ClosedStateFile {
    tmp: PathBuf,
    file: File,
    /// Its size, bytes.
    pub size: u64,
}

impl ClosedStateFile {
    /// Fsyncs the file, renames it to `path` and fsyncs the directory, so that the name
    /// survives a crash too; returns its size. Errors name the file and the failed step.
    pub fn persist(self, path: &Path) -> Result<u64, StreamError> {
        self.file.sync_all().map_err(io(&self.tmp))?;
        std::fs::rename(&self.tmp, path).map_err(io(path))?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        }
        Ok(self.size)
    }
}

/// Reads every batch of an Arrow IPC file.
pub fn read_file(path: &Path) -> Result<Vec<RecordBatch>, StreamError> {
    batches(path)?.collect()
}

/// The batches of an Arrow IPC file, read one at a time.
fn batches(path: &Path) -> Result<impl Iterator<Item = Result<RecordBatch, StreamError>> + '_, StreamError> {
    let file = File::open(path).map_err(io(path))?;
    let reader = FileReader::try_new(std::io::BufReader::new(file), None).map_err(arrow_err(path))?;
    Ok(reader.map(move |b| b.map_err(arrow_err(path))))
}

/// Merges state files (oldest first) into the batches of one snapshot: for each key, its
/// last group of rows in the newest file holding it (see the module docs); keys whose last
/// group is a tombstone are dropped.
pub fn compact(files: &[PathBuf]) -> Result<Vec<RecordBatch>, StreamError> {
    let mut kept: Vec<(usize, RecordBatch)> = Vec::new();
    compact_each(files, |file, b| {
        kept.push((file, b));
        Ok(())
    })?;
    // Oldest file's rows first, as the files were given (a stable sort keeps each file's
    // batches in order).
    kept.sort_by_key(|(file, _)| *file);
    Ok(kept.into_iter().map(|(_, b)| b).collect())
}

/// [`compact`] into the snapshot file `out`, each surviving batch written as soon as it is
/// known, so memory is about one batch and the set of keys; returns the file's size. The
/// file is written even when no key is left (with the newest input's schema), since the
/// manifest will name it.
pub fn compact_to(files: &[PathBuf], out: &Path) -> Result<u64, StreamError> {
    let Some(newest) = files.last() else { return Err(StreamError::State { path: out.into(), reason: "nothing to compact".into() }) };
    let tmp = out.with_extension("arrow.tmp");
    let mut w = StateWriter::to_file(tmp.clone(), None);
    compact_each(files, |_, b| w.write(b))?;
    let writer = match w.into_file() {
        Some(w) => w,
        None => {
            let file = File::open(newest).map_err(io(newest))?;
            let reader = FileReader::try_new(std::io::BufReader::new(file), None).map_err(arrow_err(newest))?;
            StateFileWriter::create(&tmp, &reader.schema())?
        }
    };
    writer.finish(out)
}

/// Calls `f` with each file's surviving rows (see [`compact`]), newest file first, a batch
/// at a time, with the file's index in `files`. Each file is read twice, a batch at a
/// time: once to find each key's last group, once to keep it.
fn compact_each(files: &[PathBuf], mut f: impl FnMut(usize, RecordBatch) -> Result<(), StreamError>) -> Result<(), StreamError> {
    // Keys already taken from a newer file.
    let mut claimed: HashSet<GroupKey, foldhash::fast::RandomState> = HashSet::default();
    for (fi, path) in files.iter().enumerate().rev() {
        // The keys this file takes, each with where its last group starts (batch, row)
        // and whether that group is a tombstone.
        let mut named: HashMap<GroupKey, ((usize, usize), bool), foldhash::fast::RandomState> = HashMap::default();
        for (bi, b) in batches(path)?.enumerate() {
            let b = b?;
            let (keys, tombs) = key_columns(&b, path)?;
            for r in 0..b.num_rows() {
                let k = keys.value(r);
                if (r == 0 || keys.value(r - 1) != k) && !claimed.contains(k) {
                    let at = ((bi, r), tombs.is_valid(r) && tombs.value(r));
                    match named.get_mut(k) {
                        Some(v) => *v = at,
                        None => {
                            named.insert(GroupKey::from(k), at);
                        }
                    }
                }
            }
        }
        for (bi, b) in batches(path)?.enumerate() {
            let b = b?;
            let (keys, _) = key_columns(&b, path)?;
            let mut keep: Vec<u32> = Vec::new();
            let mut taking = false;
            for r in 0..b.num_rows() {
                let k = keys.value(r);
                if r == 0 || keys.value(r - 1) != k {
                    taking = named.get(k).is_some_and(|&(at, dead)| at == (bi, r) && !dead);
                }
                if taking {
                    keep.push(r as u32);
                }
            }
            if keep.is_empty() {
                continue;
            }
            let idx = UInt32Array::from(keep);
            let cols = b.columns().iter().map(|c| arrow_select::take::take(c, &idx, None)).collect::<Result<Vec<_>, _>>().map_err(arrow_err(path))?;
            f(fi, RecordBatch::try_new(b.schema(), cols).map_err(arrow_err(path))?)?;
        }
        claimed.extend(named.into_keys());
    }
    Ok(())
}

fn key_columns<'a>(b: &'a RecordBatch, path: &Path) -> Result<(&'a arrow_array::BinaryArray, &'a arrow_array::BooleanArray), StreamError> {
    let bad = || StreamError::State { path: path.into(), reason: format!("state batches need a binary {KEY:?} and a boolean {TOMBSTONE:?} column") };
    let keys = b.column_by_name(KEY).and_then(|c| c.as_binary_opt::<i32>()).ok_or_else(bad)?;
    let tombs = b.column_by_name(TOMBSTONE).and_then(|c| c.as_boolean_opt()).ok_or_else(bad)?;
    Ok((keys, tombs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{BinaryArray, BooleanArray, Int64Array};
    use arrow_schema::{DataType, Field, Schema};

    fn batch(rows: &[(&str, bool, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(KEY, DataType::Binary, false),
            Field::new(TOMBSTONE, DataType::Boolean, false),
            Field::new("v", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| r.0.as_bytes()))),
                Arc::new(BooleanArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    /// (key, v) of every row, sorted.
    fn sorted_rows(batches: &[RecordBatch]) -> Vec<(String, i64)> {
        let mut rows = Vec::new();
        for m in batches {
            let k = m.column(0).as_binary::<i32>();
            let v = m.column(2).as_primitive::<arrow_array::types::Int64Type>();
            for r in 0..m.num_rows() {
                rows.push((String::from_utf8(k.value(r).to_vec()).unwrap(), v.value(r)));
            }
        }
        rows.sort();
        rows
    }

    #[test]
    fn newest_file_wins_per_key_and_tombstones_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("snapshot-1.arrow");
        let b = dir.path().join("delta-2.arrow");
        let c = dir.path().join("delta-3.arrow");
        write_file(&a, &[batch(&[("x", false, 1), ("x", false, 2), ("y", false, 3)])]).unwrap();
        write_file(&b, &[batch(&[("x", false, 10), ("z", false, 4)])]).unwrap();
        write_file(&c, &[batch(&[("y", true, 0)])]).unwrap();
        let merged = compact(&[a, b, c]).unwrap();
        let rows = sorted_rows(&merged);
        assert_eq!(rows, vec![("x".into(), 10), ("z".into(), 4)]);
    }

    /// Within one file a key's last group of rows wins: written ahead, then again at the
    /// checkpoint; deleted, then created again; created, then deleted.
    #[test]
    fn the_last_group_of_a_key_in_a_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("snapshot-1.arrow");
        let b = dir.path().join("delta-2.arrow");
        write_file(&a, &[batch(&[("x", false, 1), ("y", false, 2), ("z", false, 3)])]).unwrap();
        let mut w = StateFileWriter::create(&dir.path().join("delta-2.arrow.tmp"), &batch(&[]).schema()).unwrap();
        w.write(&batch(&[("x", false, 10), ("x", false, 11), ("y", true, 0), ("z", false, 30)])).unwrap();
        w.write(&batch(&[("x", false, 12), ("y", false, 20), ("z", true, 0)])).unwrap();
        w.finish(&b).unwrap();
        let merged = compact(&[a, b]).unwrap();
        let rows = sorted_rows(&merged);
        assert_eq!(rows, vec![("x".into(), 12), ("y".into(), 20)]);
    }

    /// Every key deleted: the snapshot file still exists (the manifest names it), empty.
    #[test]
    fn compacting_to_a_file_streams_and_keeps_an_empty_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, out) = (dir.path().join("snapshot-1.arrow"), dir.path().join("delta-2.arrow"), dir.path().join("snapshot-2.arrow"));
        write_file(&a, &[batch(&[("x", false, 1), ("y", false, 2)])]).unwrap();
        write_file(&b, &[batch(&[("x", false, 10)])]).unwrap();
        compact_to(&[a.clone(), b.clone()], &out).unwrap();
        assert_eq!(sorted_rows(&read_file(&out).unwrap()), vec![("x".into(), 10), ("y".into(), 2)]);
        write_file(&b, &[batch(&[("x", true, 0), ("y", true, 0)])]).unwrap();
        compact_to(&[a, b], &out).unwrap();
        assert!(read_file(&out).unwrap().iter().all(|b| b.num_rows() == 0));
    }

    #[test]
    fn compaction_policy() {
        let f = StateFiles { snapshot: Some("s".into()), deltas: vec!["a".into(), "b".into()], snapshot_bytes: 100, delta_bytes: 150 };
        assert!(f.wants_compaction(10));
        assert!(!f.wants_compaction(1000));
        assert!(!StateFiles { delta_bytes: 50, ..f }.wants_compaction(10));
    }
}

//! Staging, publishing, retention and reading of lake tables.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sluice_core::model::SessionSummary;
use sluice_core::time::date_of_ms;

use crate::{io, schema, sync_dir, table_files, LakeError, STAGING};

/// The lake under one root directory.
pub struct Lake {
    root: PathBuf,
}

/// Checks a table name: 1–200 characters of `[A-Za-z0-9._-]`, not starting with `_` or `.`.
pub fn check_table_name(name: &str) -> Result<(), LakeError> {
    let ok = !name.is_empty() && name.len() <= 200 && !name.starts_with(['_', '.']) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(LakeError::Schema { path: PathBuf::from(name), column: String::new(), reason: "table names are 1 to 200 letters, digits, '_', '-' or '.', not starting with '_' or '.'".into() })
    }
}

/// The stored form of a schema: timestamps become microseconds, UTC.
pub fn stored_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(_, _) => Field::new(f.name(), DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), f.is_nullable()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Converts a batch to its stored form (see [`stored_schema`]).
pub fn to_stored(batch: &RecordBatch) -> Result<RecordBatch, LakeError> {
    let schema = stored_schema(&batch.schema());
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { arrow_cast::cast(c, f.data_type()) })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The date partition of each row: by the batch's first timestamp column, else `today`.
fn dates(batch: &RecordBatch, today: &str) -> Result<Vec<String>, LakeError> {
    let Some(i) = batch.schema().fields().iter().position(|f| matches!(f.data_type(), DataType::Timestamp(_, _))) else {
        return Ok(vec![today.to_string(); batch.num_rows()]);
    };
    let ms = arrow_cast::cast(batch.column(i), &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())))?;
    let ms = ms.as_any().downcast_ref::<TimestampMillisecondArray>().ok_or_else(|| LakeError::Schema { path: PathBuf::new(), column: batch.schema().field(i).name().clone(), reason: "not a timestamp".into() })?;
    Ok((0..ms.len()).map(|r| if ms.is_valid(r) { date_of_ms(ms.value(r)) } else { today.to_string() }).collect())
}

impl Lake {
    pub fn open(root: &Path) -> Result<Lake, LakeError> {
        std::fs::create_dir_all(root.join(STAGING)).map_err(io(root))?;
        Ok(Lake { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn staging_dir(&self, table: &str, id: u64) -> PathBuf {
        self.root.join(STAGING).join(table).join(format!("{id:020}"))
    }

    /// Writes the rows of checkpoint `id` for `table` as fsync'd Parquet files under
    /// `_staging`, one file per date. Returns their paths relative to the root (empty when
    /// there are no rows). `now_ms` dates rows of tables without a timestamp column.
    pub fn stage_table(&self, table: &str, id: u64, batches: &[RecordBatch], now_ms: i64) -> Result<Vec<String>, LakeError> {
        check_table_name(table)?;
        let dir = self.staging_dir(table, id);
        if dir.exists() {
            // A retry of the same checkpoint: start clean.
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        let today = date_of_ms(now_ms);
        let mut by_date: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            let stored = to_stored(b)?;
            let d = dates(b, &today)?;
            let mut start = 0;
            while start < d.len() {
                let mut end = start + 1;
                while end < d.len() && d[end] == d[start] {
                    end += 1;
                }
                by_date.entry(d[start].clone()).or_default().push(stored.slice(start, end - start));
                start = end;
            }
        }
        let file = format!("part-{id:020}.parquet");
        let mut staged = Vec::new();
        for (date, parts) in by_date {
            let rel = format!("{STAGING}/{table}/{id:020}/date={date}/{file}");
            self.write_file(&rel, &parts)?;
            staged.push(rel);
        }
        if !staged.is_empty() {
            sync_tree(&dir)?;
        }
        Ok(staged)
    }

    fn write_file(&self, rel: &str, batches: &[RecordBatch]) -> Result<(), LakeError> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let file = File::create(&path).map_err(io(&path))?;
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let perr = |source| LakeError::Parquet { path: path.clone(), source };
        let mut writer = ArrowWriter::try_new(file.try_clone().map_err(io(&path))?, batches[0].schema(), Some(props)).map_err(perr)?;
        for b in batches {
            writer.write(b).map_err(perr)?;
        }
        writer.close().map_err(perr)?;
        file.sync_all().map_err(io(&path))
    }

    /// Moves staged files into their tables (idempotent: a file already moved is skipped).
    pub fn publish(&self, staged: &[String]) -> Result<(), LakeError> {
        let mut done = Vec::new();
        for rel in staged {
            let src = self.root.join(rel);
            // `_staging/<table>/<id>/date=.../part-...` → `<table>/date=.../part-...`
            let parts: Vec<_> = Path::new(rel).components().collect();
            if parts.len() < 4 {
                return Err(LakeError::MissingStaged { path: src });
            }
            let target_rel: PathBuf = std::iter::once(parts[1]).chain(parts[3..].iter().copied()).collect();
            let dst = self.root.join(&target_rel);
            if src.exists() {
                let parent = dst.parent().unwrap_or(&self.root).to_path_buf();
                std::fs::create_dir_all(&parent).map_err(io(&parent))?;
                std::fs::rename(&src, &dst).map_err(io(&dst))?;
                sync_dir(&parent)?;
            } else if !dst.exists() {
                return Err(LakeError::MissingStaged { path: src });
            }
            done.push(parts[..3].iter().collect::<PathBuf>());
        }
        done.dedup();
        for dir in done {
            // Only this table's sink stages under `_staging/<table>/<id>`.
            let dir = self.root.join(dir);
            let _ = std::fs::remove_dir_all(&dir);
            if let Some(table) = dir.parent() {
                let _ = std::fs::remove_dir(table);
            }
        }
        Ok(())
    }

    /// Removes staging directories of checkpoints with an id greater than `id` (uncommitted
    /// output of a crashed run) and leftovers of committed ones.
    pub fn discard_after(&self, id: u64) -> Result<(), LakeError> {
        let staging = self.root.join(STAGING);
        for table in std::fs::read_dir(&staging).map_err(io(&staging))? {
            let table = table.map_err(io(&staging))?.path();
            if !table.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&table).map_err(io(&table))? {
                let path = entry.map_err(io(&table))?.path();
                let staged_id = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok());
                if staged_id.is_some_and(|s| s > id) {
                    tracing::info!(dir = %path.display(), "discarding output of an uncommitted checkpoint");
                }
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
            let _ = std::fs::remove_dir(&table);
        }
        Ok(())
    }

    /// Deletes a table's date partitions whose whole day is older than `retention_ms` at
    /// `now_ms`. Returns the partitions deleted.
    pub fn apply_retention(&self, table: &str, retention_ms: i64, now_ms: i64) -> Result<usize, LakeError> {
        if retention_ms < 0 {
            return Ok(0);
        }
        let dir = self.root.join(table);
        if !dir.exists() {
            return Ok(0);
        }
        // A partition's rows are all before the end of its day.
        let cutoff = date_of_ms(now_ms.saturating_sub(retention_ms).saturating_sub(86_400_000));
        let mut deleted = 0;
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let Some(date) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("date=")) else { continue };
            if date < cutoff.as_str() {
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Every committed session of a heart-rate sessions table, sorted by player then start.
    pub fn read_sessions(&self, table: &str) -> Result<Vec<SessionSummary>, LakeError> {
        let mut out = Vec::new();
        self.visit_sessions(table, |s| out.push(s))?;
        out.sort_by(|a, b| (&a.player_id, a.session_start_ms).cmp(&(&b.player_id, b.session_start_ms)));
        Ok(out)
    }

    /// Calls `f` with every committed session of a heart-rate sessions table, one file at a
    /// time (only one file's sessions are held at once), in no particular order.
    pub fn visit_sessions(&self, table: &str, mut f: impl FnMut(SessionSummary)) -> Result<(), LakeError> {
        for file in table_files(&self.root.join(table))? {
            schema::read_sessions_file(&file)?.into_iter().for_each(&mut f);
        }
        Ok(())
    }
}

/// fsyncs every directory in a tree, deepest first, so new entries survive a crash.
fn sync_tree(dir: &Path) -> Result<(), LakeError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        }
    }
    sync_dir(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, StringArray};

    fn rows(ts: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("player_id", DataType::Utf8, false),
            Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("v", DataType::Float64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(ts.iter().map(|_| "p"))),
                Arc::new(TimestampMillisecondArray::from(ts.to_vec()).with_timezone("UTC")),
                Arc::new(Float64Array::from_iter_values(ts.iter().map(|&t| t as f64))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn staged_output_is_invisible_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let day = 86_400_000;
        let staged = lake.stage_table("t", 3, &[rows(&[0, 1, day])], 0).unwrap();
        assert_eq!(staged.len(), 2, "one file per date: {staged:?}");
        assert!(table_files(&dir.path().join("t")).unwrap().is_empty());
        lake.publish(&staged).unwrap();
        lake.publish(&staged).unwrap(); // idempotent
        assert_eq!(table_files(&dir.path().join("t")).unwrap().len(), 2);
        assert!(dir.path().join("t/date=1970-01-02/part-00000000000000000003.parquet").exists());
        assert_eq!(lake.apply_retention("t", 0, 3 * day).unwrap(), 2);
    }

    #[test]
    fn uncommitted_staging_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let staged = lake.stage_table("t", 5, &[rows(&[0])], 0).unwrap();
        lake.discard_after(4).unwrap();
        assert!(matches!(lake.publish(&staged), Err(LakeError::MissingStaged { .. })));
    }
}

//! Staging, publishing, retention and reading of lake tables.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::{Array, ArrayRef, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::Add;
use deltalake::DeltaTable;
use sluice_core::model::SessionSummary;
use sluice_core::time::date_of_ms;

use crate::delta::{self, DataFile};
use crate::store::Root;
use crate::{io, schema, table_files, LakeError, STAGING};

/// The shortest vacuum retention, ms (1 h): files a pipeline staged for a checkpoint are
/// referenced by no Delta version until the checkpoint commits, so a vacuum with a shorter
/// retention could delete them from under it.
pub const MIN_VACUUM_RETENTION_MS: u64 = 3_600_000;

/// The lake under one root (a local folder or an object-store prefix, see [`Root`]): one
/// Delta table per folder.
///
/// Its methods block the calling thread (pipeline threads, the CLI); they run the Delta
/// operations on the lake's own single-threaded I/O runtime, so they may also be called
/// from inside another Tokio runtime.
pub struct Lake {
    root: Root,
    rt: Option<tokio::runtime::Runtime>,
    /// Loaded tables, refreshed incrementally after each commit.
    tables: Mutex<HashMap<String, Slot>>,
    /// Auto-compaction: after a commit, a date partition with this many files under
    /// [`crate::maintain::AUTO_COMPACT_BYTES`] is compacted at once (0: never).
    auto_compact_min_files: std::sync::atomic::AtomicUsize,
}

/// One table as this process last saw it.
#[derive(Default)]
struct Loaded {
    table: Option<DeltaTable>,
    /// `txn` versions per pipeline, once read from the log or committed here (only this
    /// pipeline commits with its app id, so they stay true).
    txn: HashMap<String, i64>,
    /// Pipelines that have committed to the table in this process (their later checkpoints'
    /// files were staged by this process, so they exist).
    committed_here: std::collections::HashSet<String>,
}

impl Loaded {
    /// The table this process last saw, else as loaded now (`None`: no Delta log). The
    /// caller puts it back.
    async fn take(&mut self, root: &Root, name: &str) -> Result<Option<DeltaTable>, LakeError> {
        match self.table.take() {
            Some(t) => Ok(Some(t)),
            None => delta::load(root, name).await,
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Loaded>>;

impl Drop for Lake {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
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

/// The date partition of each row, in days since the epoch (UTC): by the batch's first
/// timestamp column, else `now_ms`.
fn days(batch: &RecordBatch, now_ms: i64) -> Result<Vec<i32>, LakeError> {
    let day = |ms: i64| ms.div_euclid(86_400_000) as i32;
    let Some(i) = batch.schema().fields().iter().position(|f| matches!(f.data_type(), DataType::Timestamp(_, _))) else {
        return Ok(vec![day(now_ms); batch.num_rows()]);
    };
    let ms = arrow_cast::cast(batch.column(i), &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())))?;
    let ms = ms.as_any().downcast_ref::<TimestampMillisecondArray>().ok_or_else(|| LakeError::Schema { path: PathBuf::new(), column: batch.schema().field(i).name().clone(), reason: "not a timestamp".into() })?;
    Ok((0..ms.len()).map(|r| day(if ms.is_valid(r) { ms.value(r) } else { now_ms })).collect())
}

impl Lake {
    /// Opens the lake in the local folder `root` (absolute or relative; created if
    /// missing), converting in place any table folder written by an earlier release as
    /// plain Parquet (see [`delta::convert`]).
    pub fn open(root: &Path) -> Result<Lake, LakeError> {
        Lake::open_at(Root::local(root)?)
    }

    /// Opens the lake at `root`, a local folder or an object-store prefix (see
    /// [`Root::open`]). Local lakes are migrated as by [`Lake::open`].
    pub fn open_at(root: Root) -> Result<Lake, LakeError> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("lake-io").enable_all().build().map_err(io(Path::new("lake-io runtime")))?;
        let lake = Lake { root, rt: Some(rt), tables: Mutex::new(HashMap::new()), auto_compact_min_files: crate::maintain::AUTO_COMPACT_MIN_FILES.into() };
        match lake.root.local_dir().map(Path::to_path_buf) {
            Some(dir) => lake.migrate(&dir)?,
            // Reach the store now: a wrong endpoint, bucket or credential stops the start
            // with the store's answer, instead of failing the first checkpoint.
            None => drop(lake.table_names()?),
        }
        Ok(lake)
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Sets the auto-compaction threshold (see [`crate::maintain::AUTO_COMPACT_MIN_FILES`]).
    pub fn set_auto_compact_min_files(&self, n: usize) {
        self.auto_compact_min_files.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `f` to completion on the lake's runtime and waits for it.
    pub(crate) fn run<T: Send + 'static>(&self, f: impl Future<Output = Result<T, LakeError>> + Send + 'static) -> Result<T, LakeError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let Some(rt) = self.rt.as_ref() else { return Err(LakeError::Closed) };
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().map_err(|_| LakeError::Closed)?
    }

    fn slot(&self, table: &str) -> Slot {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.entry(table.to_string()).or_default().clone()
    }

    /// Forgets what this process knows of `pipeline`'s commits (its `txn` versions, and the
    /// tables as last seen), so its next publish reads them from the log. For a pipeline
    /// whose app id another process may have committed with since (a worker's task that
    /// moved to another worker and back).
    pub fn forget_pipeline(&self, pipeline: &str) {
        let slots: Vec<Slot> = self.tables.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let pipeline = pipeline.to_string();
        let _ = self.run(async move {
            for slot in slots {
                let mut g = slot.lock().await;
                g.txn.remove(&pipeline);
                g.committed_here.remove(&pipeline);
                // The table as last seen may predate another process's commits.
                g.table = None;
            }
            Ok::<(), LakeError>(())
        });
    }

    /// Names of the lake's tables (folders with a Delta log), sorted.
    pub fn table_names(&self) -> Result<Vec<String>, LakeError> {
        let root = self.root.clone();
        self.run(async move { root.table_names().await })
    }

    /// Converts the plain-Parquet table folders (no `_delta_log`) of the local lake `dir` to
    /// Delta tables, and drops the `_staging` folder of earlier releases once it holds
    /// nothing.
    fn migrate(&self, dir: &Path) -> Result<(), LakeError> {
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if name.starts_with(['_', '.']) || !path.is_dir() || path.join("_delta_log").exists() {
                continue;
            }
            let files = table_files(&path)?;
            if files.is_empty() {
                continue;
            }
            tracing::info!(table = %name, files = files.len(), "converting a plain-Parquet lake table to Delta in place");
            let root = self.root.clone();
            let t = self.run(async move { delta::convert(&root, &name).await })?;
            let _ = t;
        }
        let staging = dir.join(STAGING);
        if staging.is_dir() && table_files(&staging).map(|f| f.is_empty()).unwrap_or(false) {
            let _ = std::fs::remove_dir_all(&staging);
        }
        Ok(())
    }

    /// Writes the rows of checkpoint `id` for `table` as Parquet data files of the Delta
    /// table (created on first use; new nullable columns are added to its schema), not yet
    /// committed. Returns handles for [`Lake::publish`]: each file's `add` action as JSON
    /// (empty when there are no rows). `now_ms` dates rows of tables without a timestamp
    /// column.
    pub fn stage_table(&self, table: &str, _id: u64, batches: &[RecordBatch], now_ms: i64) -> Result<Vec<String>, LakeError> {
        check_table_name(table)?;
        let mut dated = Vec::new();
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            dated.push(delta::add_date_column(&to_stored(b)?, days(b, now_ms)?)?);
        }
        if dated.is_empty() {
            return Ok(Vec::new());
        }
        let slot = self.slot(table);
        let (root, name) = (self.root.clone(), table.to_string());
        let adds = self.run(async move {
            let mut guard = slot.lock().await;
            let schema = dated[0].schema();
            let t = match guard.table.take() {
                Some(t) => match delta::evolve_to(t, &name, &schema).await {
                    // Another writer changed the schema since: evolve from its version.
                    Err(e) if delta::lost_to_metadata_change(&e) => delta::ensure(&root, &name, &schema).await?,
                    r => r?,
                },
                None => delta::ensure(&root, &name, &schema).await?,
            };
            let adds = delta::write_files(&t, &name, &dated).await;
            guard.table = Some(t);
            adds
        })?;
        adds.iter().map(|a| serde_json::to_string(a).map_err(|e| LakeError::Handle(e.to_string()))).collect()
    }

    /// Commits the files staged for checkpoint `id` by `pipeline` in one Delta commit with a
    /// `txn` (app id `sluice/<pipeline>`, version `id`). Idempotent: a checkpoint the table's
    /// `txn` already records is skipped. Handles of earlier releases (paths under
    /// `_staging/`) are moved into the table and added as they are.
    pub fn publish(&self, table: &str, pipeline: &str, id: u64, staged: &[String]) -> Result<(), LakeError> {
        if staged.is_empty() {
            return Ok(());
        }
        let mut adds = Vec::new();
        for h in staged {
            if h.starts_with(STAGING) {
                adds.push(self.legacy_add(h)?);
            } else {
                adds.push(serde_json::from_str::<Add>(h).map_err(|e| LakeError::Handle(format!("{e} in {h:.200}")))?);
            }
        }
        let slot = self.slot(table);
        let auto = self.auto_compact_min_files.load(std::sync::atomic::Ordering::Relaxed);
        let (root, name, pipeline) = (self.root.clone(), table.to_string(), pipeline.to_string());
        self.run(async move {
            let mut guard = slot.lock().await;
            let mut t = guard.take(&root, &name).await?.ok_or_else(|| LakeError::Handle(format!("table {name:?} has no Delta log, but checkpoint {id} staged files for it")))?;
            let known = match guard.txn.get(&pipeline).copied() {
                Some(v) => Some(v),
                None => delta::txn_version(&t, &name, &pipeline).await?,
            };
            let new = known.is_none_or(|v| v < id as i64);
            if new && !guard.committed_here.contains(&pipeline) {
                // The first commit of this pipeline here, not yet in the log: after a
                // restart, this publishes a checkpoint staged before it. Its files must
                // still be there (a vacuum while the server was down longer than the
                // retention deletes them), or the commit would name missing files and break
                // every reader of the table.
                for a in &adds {
                    let rel = percent_decode(&a.path);
                    if !root.exists(&name, &rel).await? {
                        return Err(LakeError::MissingStaged { path: format!("{}{name}/{rel}", root.url()).into() });
                    }
                }
            }
            let mut r = delta::commit(&mut t, &name, &pipeline, id, adds.clone(), known).await;
            for _ in 0..3 {
                match &r {
                    // Another writer evolved the schema first: commit over the new version.
                    Err(e) if delta::lost_to_metadata_change(e) => {
                        t.update_incremental(None).await.map_err(delta::delta_err(&name))?;
                        r = delta::commit(&mut t, &name, &pipeline, id, adds.clone(), known).await;
                    }
                    _ => break,
                }
            }
            if r.is_ok() && auto > 0 {
                // The data is committed; a failed compaction only leaves files to vacuum.
                match crate::maintain::auto_compact(&mut t, &name, auto).await {
                    Ok(Some(report)) => tracing::debug!(table = %name, removed = report.files_removed, added = report.files_added, "auto-compaction"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(table = %name, error = %sluice_core::error_chain(&e), "auto-compaction failed; the table keeps its small files until the next one"),
                }
            }
            guard.table = Some(t);
            guard.txn.insert(pipeline.clone(), r?);
            if new {
                guard.committed_here.insert(pipeline);
            }
            Ok(())
        })
    }

    /// Moves a file staged by an earlier release into its table and describes it as an
    /// `add` action (no statistics).
    fn legacy_add(&self, rel: &str) -> Result<Add, LakeError> {
        // Earlier releases only had local lakes.
        let root = self.root.local_dir().ok_or_else(|| LakeError::Handle(format!("{rel}: a staged file of an earlier release, but the lake is not local")))?;
        let src = root.join(rel);
        // `_staging/<table>/<id>/date=D/part-....parquet` → `<table>/date=D/part-....parquet`
        let parts: Vec<String> = Path::new(rel).components().map(|c| c.as_os_str().to_string_lossy().to_string()).collect();
        if parts.len() < 5 {
            return Err(LakeError::MissingStaged { path: src });
        }
        let in_table = format!("{}/{}", parts[3], parts[4..].join("/"));
        let dst = root.join(&parts[1]).join(&in_table);
        if src.exists() {
            let parent = dst.parent().unwrap_or(root).to_path_buf();
            std::fs::create_dir_all(&parent).map_err(io(&parent))?;
            std::fs::rename(&src, &dst).map_err(io(&dst))?;
        } else if !dst.exists() {
            return Err(LakeError::MissingStaged { path: src });
        }
        let meta = std::fs::metadata(&dst).map_err(io(&dst))?;
        let date = parts[3].strip_prefix("date=").map(str::to_string);
        Ok(Add {
            path: in_table,
            size: meta.len() as i64,
            partition_values: [(delta::DATE.to_string(), date)].into_iter().collect(),
            modification_time: sluice_core::time::now_ms(),
            data_change: true,
            ..Default::default()
        })
    }

    /// Removes a table's date partitions whose whole day is older than `retention_ms` at
    /// `now_ms` (a Delta `remove` of their files; vacuum deletes them later). Returns the
    /// files removed.
    pub fn apply_retention(&self, table: &str, retention_ms: i64, now_ms: i64) -> Result<usize, LakeError> {
        if retention_ms < 0 {
            return Ok(0);
        }
        // A partition's rows are all before the end of its day.
        let cutoff = date_of_ms(now_ms.saturating_sub(retention_ms).saturating_sub(86_400_000));
        let slot = self.slot(table);
        let (root, name) = (self.root.clone(), table.to_string());
        self.run(async move {
            let mut guard = slot.lock().await;
            let Some(mut t) = guard.take(&root, &name).await? else {
                return Ok(0);
            };
            let r = delta::remove_dates_before(&mut t, &name, &cutoff).await;
            guard.table = Some(t);
            r
        })
    }

    /// The table at its latest version (or `version`), loaded fresh.
    pub fn table(&self, table: &str, version: Option<i64>) -> Result<DeltaTable, LakeError> {
        let (root, name) = (self.root.clone(), table.to_string());
        self.run(async move {
            let mut t = delta::load(&root, &name).await?.ok_or_else(|| LakeError::NoTable(name.clone()))?;
            if let Some(v) = version {
                t.load_version(v.max(0) as u64).await.map_err(delta::delta_err(&name))?;
            }
            Ok(t)
        })
    }

    /// The data files of a table's latest version (empty if the table does not exist).
    pub fn files(&self, table: &str) -> Result<Vec<DataFile>, LakeError> {
        match self.table(table, None) {
            Ok(t) => delta::files(&t, table),
            Err(LakeError::NoTable(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The commit history of a table, newest first (see [`delta::history`]).
    pub fn history(&self, table: &str, limit: Option<usize>) -> Result<Vec<serde_json::Value>, LakeError> {
        let t = self.table(table, None)?;
        let name = table.to_string();
        self.run(async move { delta::history(&t, &name, limit).await })
    }

    /// Deletes files no version within `retention_ms` references. Returns their paths.
    ///
    /// Errors: a retention under [`MIN_VACUUM_RETENTION_MS`] (it could delete the files a
    /// running pipeline staged but has not committed yet).
    pub fn vacuum(&self, table: &str, retention_ms: u64, dry_run: bool) -> Result<Vec<String>, LakeError> {
        if retention_ms < MIN_VACUUM_RETENTION_MS {
            return Err(LakeError::Retention(retention_ms));
        }
        let t = self.table(table, None)?;
        let name = table.to_string();
        self.run(async move { delta::vacuum(t, &name, retention_ms, dry_run).await.map(|(_, f)| f) })
    }

    /// Compacts a table's small files into files of about `target_bytes` (see
    /// [`crate::maintain::optimize`]).
    pub fn optimize(&self, table: &str, target_bytes: u64, min_files: usize) -> Result<crate::maintain::OptimizeReport, LakeError> {
        let slot = self.slot(table);
        let (root, name) = (self.root.clone(), table.to_string());
        self.run(async move {
            let mut guard = slot.lock().await;
            let mut t = guard.take(&root, &name).await?.ok_or_else(|| LakeError::NoTable(name.clone()))?;
            let r = match t.update_incremental(None).await {
                Ok(()) => crate::maintain::optimize(&mut t, &name, target_bytes, min_files).await,
                Err(e) => Err(delta::delta_err(&name)(e)),
            };
            guard.table = Some(t);
            r
        })
    }

    /// The background policy, for every table: compaction of a date's small files once
    /// there are `compact_min_files` of them, then vacuum of files unreferenced for
    /// `vacuum_retention_ms`. (Delta log checkpoints are written by the commits themselves,
    /// every 100 versions.) Returns what it did, `""` if nothing.
    pub fn maintain(&self, compact_min_files: usize, vacuum_retention_ms: u64) -> Result<String, LakeError> {
        let mut report = Vec::new();
        for table in self.table_names()? {
            let o = self.optimize(&table, crate::maintain::TARGET_FILE_BYTES, compact_min_files)?;
            if o.files_removed > 0 {
                report.push(format!("{table}: compacted {} files into {}", o.files_removed, o.files_added));
            }
            let v = self.vacuum(&table, vacuum_retention_ms.max(MIN_VACUUM_RETENTION_MS), false)?;
            if !v.is_empty() {
                report.push(format!("{table}: vacuum deleted {} files", v.len()));
            }
        }
        Ok(report.join("; "))
    }

    /// Writes a checkpoint of a table's Delta log at its latest version.
    pub fn checkpoint(&self, table: &str) -> Result<i64, LakeError> {
        let t = self.table(table, None)?;
        let name = table.to_string();
        self.run(async move {
            delta::checkpoint(&t, &name).await?;
            Ok(t.version().map_or(0, |v| v as i64))
        })
    }

    /// Every committed session of a heart-rate sessions table, sorted by player then start.
    pub fn read_sessions(&self, table: &str) -> Result<Vec<SessionSummary>, LakeError> {
        let mut out = Vec::new();
        self.visit_sessions(table, |s| out.push(s))?;
        out.sort_by(|a, b| (&a.player_id, a.session_start_ms).cmp(&(&b.player_id, b.session_start_ms)));
        Ok(out)
    }

    /// Calls `f` with every committed session of a heart-rate sessions table, one file at a
    /// time (only one file's sessions are held at once), in no particular order. Only files
    /// of the table's current Delta version are read.
    pub fn visit_sessions(&self, table: &str, mut f: impl FnMut(SessionSummary)) -> Result<(), LakeError> {
        for file in self.files(table)? {
            let (root, name, rel) = (self.root.clone(), table.to_string(), percent_decode(&file.path));
            let label = PathBuf::from(format!("{table}/{rel}"));
            let bytes = self.run(async move { root.get(&name, &rel).await })?;
            schema::read_sessions(bytes, &label)?.into_iter().for_each(&mut f);
        }
        Ok(())
    }
}

/// Decodes the `%XX` escapes of a Delta `add` path.
pub(crate) fn percent_decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned()
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
    fn staged_output_is_invisible_until_published_once() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let day = 86_400_000;
        let staged = lake.stage_table("t", 3, &[rows(&[0, 1, day])], 0).unwrap();
        assert_eq!(staged.len(), 2, "one file per date: {staged:?}");
        assert!(lake.files("t").unwrap().is_empty(), "staged files are in no add action");
        lake.publish("t", "p", 3, &staged).unwrap();
        lake.publish("t", "p", 3, &staged).unwrap(); // a retry after a crash: skipped by txn
        let files = lake.files("t").unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files.iter().filter_map(|f| f.rows).sum::<usize>(), 3);
        let history = lake.history("t", None).unwrap();
        assert_eq!(history.len(), 2, "create, then one commit: {history:?}");
        assert_eq!(history[0]["operation"], "STREAMING UPDATE");
        assert_eq!(lake.apply_retention("t", 0, 3 * day).unwrap(), 2);
        assert!(lake.files("t").unwrap().is_empty());
    }

    #[test]
    fn vacuum_deletes_files_of_uncommitted_checkpoints_and_compaction_keeps_rows() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        for id in 1..=3 {
            let s = lake.stage_table("t", id, &[rows(&[id as i64, id as i64 + 1])], 0).unwrap();
            lake.publish("t", "p", id, &s).unwrap();
        }
        let orphan = lake.stage_table("t", 4, &[rows(&[9])], 0).unwrap();
        assert_eq!(orphan.len(), 1);
        assert!(matches!(lake.vacuum("t", 0, false), Err(LakeError::Retention(0))), "short retentions are refused");
        let report = lake.optimize("t", 1 << 20, 2).unwrap();
        assert_eq!((report.files_removed, report.files_added), (3, 1));
        let files = lake.files("t").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].rows, Some(6));
        // Vacuum with no retention: the three compacted files and the orphan go.
        let t = lake.table("t", None).unwrap();
        let deleted = lake.run(async move { delta::vacuum(t, "t", 0, false).await.map(|(_, d)| d) }).unwrap();
        assert_eq!(deleted.len(), 4, "{deleted:?}");
        let (root, _) = (dir.path().to_path_buf(), ());
        let on_disk = table_files(&root.join("t")).unwrap();
        assert_eq!(on_disk.len(), 1, "{on_disk:?}");
        assert_eq!(lake.files("t").unwrap()[0].rows, Some(6));
    }

    #[test]
    fn a_republished_checkpoint_whose_files_are_gone_fails_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let committed = lake.stage_table("t", 1, &[rows(&[0])], 0).unwrap();
        lake.publish("t", "p", 1, &committed).unwrap();
        let staged = lake.stage_table("t", 2, &[rows(&[1])], 0).unwrap();
        drop(lake);
        // While "down": both checkpoints' files are deleted (as a vacuum after compaction
        // would delete the committed one's, and a too-eager vacuum the staged one's).
        for h in committed.iter().chain(&staged) {
            let add: Add = serde_json::from_str(h).unwrap();
            std::fs::remove_file(dir.path().join("t").join(percent_decode(&add.path))).unwrap();
        }
        let lake = Lake::open(dir.path()).unwrap();
        lake.publish("t", "p", 1, &committed).unwrap(); // already in the log: skipped
        let e = lake.publish("t", "p", 2, &staged).unwrap_err();
        assert!(matches!(e, LakeError::MissingStaged { .. }), "{e}");
        assert_eq!(lake.table("t", None).unwrap().version(), Some(1), "nothing naming a missing file was committed");
    }

    #[test]
    fn auto_compaction_bounds_the_files_of_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        lake.set_auto_compact_min_files(3);
        for id in 1..=7 {
            let s = lake.stage_table("t", id, &[rows(&[id as i64, id as i64 + 100])], 0).unwrap();
            lake.publish("t", "p", id, &s).unwrap();
            assert!(lake.files("t").unwrap().len() < 3, "after commit {id}");
        }
        let files = lake.files("t").unwrap();
        assert_eq!(files.iter().filter_map(|f| f.rows).sum::<usize>(), 14);
        let ops: Vec<String> = lake.history("t", None).unwrap().iter().map(|c| c["operation"].as_str().unwrap_or("").to_string()).collect();
        assert_eq!(ops.iter().filter(|o| *o == "OPTIMIZE").count(), 3, "{ops:?}");
    }

    #[test]
    fn a_new_nullable_column_evolves_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let s = lake.stage_table("t", 1, &[rows(&[0])], 0).unwrap();
        lake.publish("t", "p", 1, &s).unwrap();
        let b = rows(&[1]);
        let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("extra", DataType::Utf8, true));
        let mut cols = b.columns().to_vec();
        cols.push(Arc::new(StringArray::from(vec![Some("x")])));
        let wider = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
        let s = lake.stage_table("t", 2, &[wider], 0).unwrap();
        lake.publish("t", "p", 2, &s).unwrap();
        let t = lake.table("t", None).unwrap();
        let schema = delta::arrow_schema(&t, "t").unwrap();
        assert!(schema.field_with_name("extra").unwrap().is_nullable());
        assert_eq!(lake.files("t").unwrap().len(), 2, "no file rewritten");
    }

    #[test]
    fn plain_parquet_tables_are_converted_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("old/date=1970-01-01");
        std::fs::create_dir_all(&part).unwrap();
        let file = std::fs::File::create(part.join("part-00000000000000000001.parquet")).unwrap();
        let b = to_stored(&rows(&[0, 1])).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, b.schema(), None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        assert_eq!(lake.table_names().unwrap(), vec!["old".to_string()]);
        let files = lake.files("old").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].date.as_deref(), Some("1970-01-01"));
        assert_eq!(files[0].rows, Some(2));
    }
}

//! Delta Lake tables: creating them, writing a checkpoint's files, committing them exactly
//! once with a `txn` action, schema evolution, retention, history, vacuum, log
//! checkpoints, and converting the plain-Parquet tables of earlier releases in place.
//!
//! Source: the Delta transaction log protocol (github.com/delta-io/delta, `PROTOCOL.md`):
//! a table is its `_delta_log/` of numbered JSON commits (and Parquet checkpoints of the
//! log); a data file exists for readers only once an `add` action names it. A `txn`
//! action (`appId`, `version`) records the last checkpoint id a streaming writer committed,
//! which is how Spark's Delta sink makes its micro-batches exactly-once.
//!
//! Layout of a table `<root>/<table>/`:
//!
//! ```text
//! _delta_log/00000000000000000000.json      protocol, metadata (schema, partitionColumns ["date"])
//! _delta_log/00000000000000000001.json      commitInfo (STREAMING UPDATE, epochId), txn, add…
//! _delta_log/00000000000000000100.checkpoint.parquet, _last_checkpoint   every 100 commits
//! date=YYYY-MM-DD/part-00000-<uuid>-c000.snappy.parquet                    data files
//! ```
//!
//! Files of a checkpoint that was never committed are in the table's folders but in no
//! `add` action: readers never see them and `vacuum` removes them.

use std::sync::Arc;

use arrow_array::{ArrayRef, Date32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, MetadataExt, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, OutputMode, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
pub use deltalake::DeltaTable;
use futures_util::StreamExt;

use crate::store::Root;
use crate::LakeError;

/// The partition column every lake table has: the UTC date of the row's first timestamp
/// column (else of the commit), Arrow `Date32`, Delta type `date`.
pub const DATE: &str = "date";

/// The `txn` application id of a pipeline's commits to a table.
pub fn app_id(pipeline: &str) -> String {
    format!("sluice/{pipeline}")
}

pub(crate) fn delta_err(table: &str) -> impl FnOnce(deltalake::DeltaTableError) -> LakeError + '_ {
    move |source| LakeError::Delta { table: table.to_string(), source }
}

/// Loads a table; `Ok(None)` when `<root>/<table>` holds no Delta log.
pub async fn load(root: &Root, table: &str) -> Result<Option<DeltaTable>, LakeError> {
    if !root.has_log(table).await? {
        return Ok(None);
    }
    let url = root.table_url(table)?;
    let t = deltalake::open_table(url).await.map_err(delta_err(table))?;
    Ok(Some(t))
}

/// The table schema of batches of `schema` (stored form, see [`crate::stored_schema`]):
/// their columns, then [`DATE`].
pub fn with_date_schema(stored: &SchemaRef) -> Result<SchemaRef, LakeError> {
    if let Ok(f) = stored.field_with_name(DATE) {
        return Err(LakeError::Schema { path: Default::default(), column: f.name().clone(), reason: "lake tables are partitioned by a column named \"date\"; rename this column (e.g. `AS day`)".into() });
    }
    let mut fields: Vec<Field> = stored.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(DATE, DataType::Date32, false));
    Ok(Arc::new(Schema::new(fields)))
}

/// Appends the date column (days since the epoch) to a stored batch.
pub fn add_date_column(stored: &RecordBatch, days: Vec<i32>) -> Result<RecordBatch, LakeError> {
    let schema = with_date_schema(&stored.schema())?;
    let mut cols: Vec<ArrayRef> = stored.columns().to_vec();
    cols.push(Arc::new(Date32Array::from(days)));
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// What a write must change in the table's schema first: `Ok(None)` when the table already
/// has every column, `Ok(Some(merged))` when nullable columns are added (schema evolution),
/// and an error naming the column when a type changed or a required column is new.
pub fn evolve(table: &Schema, batch: &Schema) -> Result<Option<Schema>, String> {
    let mut fields: Vec<Field> = table.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut changed = false;
    for f in batch.fields() {
        match table.field_with_name(f.name()) {
            Ok(t) if t.data_type() == f.data_type() => {}
            Ok(t) => return Err(format!("column {:?} is {} in the table but {} in the new rows; write changed columns to a new table", f.name(), t.data_type(), f.data_type())),
            Err(_) => {
                fields.push(f.as_ref().clone().with_nullable(true));
                changed = true;
            }
        }
    }
    for t in table.fields() {
        if !t.is_nullable() && batch.field_with_name(t.name()).is_err() {
            return Err(format!("column {:?} is required by the table but missing from the new rows", t.name()));
        }
    }
    Ok(changed.then(|| Schema::new(fields)))
}

/// Creates the table with `schema` (which includes [`DATE`]) if it does not exist, and adds
/// new nullable columns of `schema` to an existing one. Returns the loaded table.
pub async fn ensure(root: &Root, table: &str, schema: &SchemaRef) -> Result<DeltaTable, LakeError> {
    if let Some(t) = load(root, table).await? {
        return evolve_to(t, table, schema).await;
    }
    if let Some(dir) = root.local_dir() {
        // The kernel opens a local table location only if its folder exists.
        std::fs::create_dir_all(dir.join(table)).map_err(crate::io(&dir.join(table)))?;
    }
    let kernel: StructType = schema.as_ref().try_into_kernel().map_err(LakeError::Arrow)?;
    let created = DeltaTable::try_from_url(root.table_url(table)?)
        .await
        .map_err(delta_err(table))?
        .create()
        .with_table_name(table)
        .with_columns(kernel.fields().cloned())
        .with_partition_columns([DATE])
        .with_save_mode(SaveMode::Ignore)
        // A lost race for version 0 must fail, not retry as a second CREATE at version 1.
        .with_commit_properties(CommitProperties::default().with_max_retries(0))
        .await;
    match created {
        Ok(t) => Ok(t),
        // Another writer created it first (its version 0 won the put-if-absent).
        Err(e) => match load(root, table).await? {
            Some(t) => evolve_to(t, table, schema).await,
            None => Err(delta_err(table)(e)),
        },
    }
}

/// Whether `e` is a commit that lost to a concurrent writer's schema or protocol change
/// (reload the table and try again). Appends of other writers are retried by the commit
/// itself and never get here.
pub fn lost_to_metadata_change(e: &LakeError) -> bool {
    use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
    matches!(
        e,
        LakeError::Delta { source: deltalake::DeltaTableError::Transaction { source: TransactionError::CommitConflict(CommitConflictError::MetadataChanged | CommitConflictError::ProtocolChanged(_)) }, .. }
    )
}

/// Adds the new nullable columns of `schema` to the loaded table `t` (schema evolution, an
/// `ADD COLUMN` commit); errors name a column whose type changed.
pub async fn evolve_to(mut t: DeltaTable, table: &str, schema: &SchemaRef) -> Result<DeltaTable, LakeError> {
    let current: Schema = t.snapshot().map_err(delta_err(table))?.schema().as_ref().try_into_arrow().map_err(LakeError::Arrow)?;
    match evolve(&current, schema) {
        Ok(None) => Ok(t),
        Ok(Some(merged)) => {
            let kernel: StructType = (&merged).try_into_kernel().map_err(LakeError::Arrow)?;
            let snapshot = t.snapshot().map_err(delta_err(table))?;
            let metadata = snapshot.metadata().clone().with_schema(&kernel).map_err(|e| delta_err(table)(e.into()))?;
            let added: Vec<_> = kernel.fields().skip(current.fields().len()).cloned().collect();
            tracing::info!(table, columns = ?added.iter().map(|f| f.name()).collect::<Vec<_>>(), "adding nullable columns to the lake table (schema evolution)");
            CommitBuilder::default()
                .with_actions(vec![Action::Metadata(metadata)])
                .build(Some(snapshot), t.log_store(), DeltaOperation::AddColumn { fields: added })
                .await
                .map_err(delta_err(table))?;
            t.update_incremental(None).await.map_err(delta_err(table))?;
            Ok(t)
        }
        Err(reason) => Err(LakeError::Schema { path: table.into(), column: String::new(), reason }),
    }
}

/// Writes `batches` (which carry [`DATE`]) as Parquet data files of the table, one or more
/// per date, and returns their `add` actions, not yet committed.
pub async fn write_files(table: &DeltaTable, name: &str, batches: &[RecordBatch]) -> Result<Vec<Add>, LakeError> {
    let schema = batches[0].schema();
    let mut writer = RecordBatchWriter::try_new(table.table_url().as_str(), schema, Some(vec![DATE.to_string()]), None).map_err(delta_err(name))?;
    for b in batches {
        writer.write(b.clone()).await.map_err(delta_err(name))?;
    }
    writer.flush().await.map_err(delta_err(name))
}

/// Commits `adds` as checkpoint `id` of `pipeline`, unless the table's `txn` for the
/// pipeline already records `id` or a later one (then the commit happened before a crash
/// and is skipped). `known` is the pipeline's `txn` version if the caller knows it (it is
/// read from the log otherwise). Returns the pipeline's `txn` version afterwards.
pub async fn commit(table: &mut DeltaTable, name: &str, pipeline: &str, id: u64, adds: Vec<Add>, known: Option<i64>) -> Result<i64, LakeError> {
    let app = app_id(pipeline);
    let done = match known {
        Some(v) => Some(v),
        None => txn_version(table, name, pipeline).await?,
    };
    let snapshot = table.snapshot().map_err(delta_err(name))?;
    if let Some(v) = done.filter(|&v| v >= id as i64) {
        return Ok(v);
    }
    let props = CommitProperties::default().with_application_transaction(Transaction::new_with_last_update(&app, id as i64, Some(sluice_core::time::now_ms())));
    let done = CommitBuilder::from(props)
        .with_actions(adds.into_iter().map(Action::Add).collect())
        .build(Some(snapshot), table.log_store(), DeltaOperation::StreamingUpdate { output_mode: OutputMode::Append, query_id: app.clone(), epoch_id: id as i64 })
        .await
        .map_err(delta_err(name))?;
    // The commit's own snapshot: no second listing of the log.
    table.state = Some(done.snapshot());
    Ok(id as i64)
}

/// The last checkpoint id `pipeline` committed to the loaded table (its `txn` version).
pub async fn txn_version(table: &DeltaTable, name: &str, pipeline: &str) -> Result<Option<i64>, LakeError> {
    let snapshot = table.snapshot().map_err(delta_err(name))?;
    snapshot.transaction_version(table.log_store().as_ref(), &app_id(pipeline)).await.map_err(delta_err(name))
}

/// Removes (logically: `remove` actions, files deleted later by vacuum) every file of a
/// date partition before `cutoff` (`YYYY-MM-DD`). Returns the files removed.
pub async fn remove_dates_before(table: &mut DeltaTable, name: &str, cutoff: &str) -> Result<usize, LakeError> {
    let snapshot = table.snapshot().map_err(delta_err(name))?;
    let now = sluice_core::time::now_ms();
    let removes: Vec<Action> = snapshot
        .log_data()
        .iter()
        .filter(|f| f.partition_values_map().get(DATE).and_then(|d| d.as_deref()).is_some_and(|d| d < cutoff))
        .map(|f| {
            let mut r = f.remove_action(true);
            r.deletion_timestamp = Some(now);
            Action::Remove(r)
        })
        .collect();
    if removes.is_empty() {
        return Ok(0);
    }
    let n = removes.len();
    CommitBuilder::default()
        .with_actions(removes)
        .build(Some(snapshot), table.log_store(), DeltaOperation::Delete { predicate: Some(format!("{DATE} < '{cutoff}'")) })
        .await
        .map_err(delta_err(name))?;
    table.update_incremental(None).await.map_err(delta_err(name))?;
    Ok(n)
}

/// A data file of a table's current version.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Path relative to the table directory.
    pub path: String,
    /// Size, bytes.
    pub size: u64,
    /// Its [`DATE`] partition, `YYYY-MM-DD`.
    pub date: Option<String>,
    pub rows: Option<usize>,
}

/// The files of the table's loaded version.
pub fn files(table: &DeltaTable, name: &str) -> Result<Vec<DataFile>, LakeError> {
    let snapshot = table.snapshot().map_err(delta_err(name))?;
    Ok(snapshot
        .log_data()
        .iter()
        .map(|f| DataFile { path: f.path().to_string(), size: f.size().max(0) as u64, date: f.partition_values_map().get(DATE).cloned().flatten(), rows: f.num_records() })
        .collect())
}

/// The arrow schema of the loaded version (data columns, then [`DATE`]).
pub fn arrow_schema(table: &DeltaTable, name: &str) -> Result<Schema, LakeError> {
    let snapshot = table.snapshot().map_err(delta_err(name))?;
    snapshot.schema().as_ref().try_into_arrow().map_err(LakeError::Arrow)
}

/// The commit history, newest first, as the JSON of each `commitInfo` (operation,
/// timestamp ms, operationParameters) with its `version`, at most `limit`.
pub async fn history(table: &DeltaTable, name: &str, limit: Option<usize>) -> Result<Vec<serde_json::Value>, LakeError> {
    let mut out = Vec::new();
    let mut stream = table.history(limit);
    // The commits come newest first and without gaps, from the loaded version down.
    let mut version: i64 = table.version().map_or(0, |v| v as i64);
    while let Some(c) = stream.next().await {
        let c = c.map_err(delta_err(name))?;
        let mut v = serde_json::to_value(&c).unwrap_or_default();
        if let Some(o) = v.as_object_mut().filter(|o| o.get("version").is_none_or(|v| v.is_null())) {
            o.insert("version".into(), version.into());
        }
        version -= 1;
        out.push(v);
    }
    Ok(out)
}

/// Writes a Parquet checkpoint of the Delta log at the loaded version.
pub async fn checkpoint(table: &DeltaTable, name: &str) -> Result<(), LakeError> {
    deltalake::checkpoints::create_checkpoint(table, None).await.map_err(delta_err(name))
}

/// Deletes data files that no version within `retention_ms` references (including files of
/// checkpoints that never committed). Returns the files deleted (or that would be, with
/// `dry_run`).
pub async fn vacuum(table: DeltaTable, name: &str, retention_ms: u64, dry_run: bool) -> Result<(DeltaTable, Vec<String>), LakeError> {
    let (t, metrics) = table
        .vacuum()
        .with_retention_period(chrono::Duration::milliseconds(retention_ms as i64))
        .with_enforce_retention_duration(false)
        .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
        .with_dry_run(dry_run)
        .await
        .map_err(delta_err(name))?;
    Ok((t, metrics.files_deleted))
}

/// Converts a folder of Hive-partitioned (`date=…/`) Parquet files, as earlier releases
/// wrote, into a Delta table in place (Delta's CONVERT TO DELTA): every file is added to
/// version 0, none is rewritten.
pub async fn convert(root: &Root, table: &str) -> Result<DeltaTable, LakeError> {
    use deltalake::kernel::{DataType as DeltaType, PrimitiveType, StructField};
    let url = root.table_url(table)?;
    deltalake::operations::convert_to_delta::ConvertToDeltaBuilder::new()
        .with_location(url.to_string())
        .with_partition_schema([StructField::new(DATE, DeltaType::Primitive(PrimitiveType::Date), true)])
        .with_table_name(table)
        .await
        .map_err(delta_err(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evolve_adds_nullable_columns_and_refuses_type_changes() {
        let t = Schema::new(vec![Field::new("a", DataType::Int64, false), Field::new(DATE, DataType::Date32, false)]);
        let same = t.clone();
        assert_eq!(evolve(&t, &same).unwrap(), None);
        let wider = Schema::new(vec![Field::new("a", DataType::Int64, false), Field::new("b", DataType::Utf8, false), Field::new(DATE, DataType::Date32, false)]);
        let merged = evolve(&t, &wider).unwrap().unwrap();
        assert_eq!(merged.field(2).name(), "b");
        assert!(merged.field(2).is_nullable());
        let changed = Schema::new(vec![Field::new("a", DataType::Utf8, false), Field::new(DATE, DataType::Date32, false)]);
        assert!(evolve(&t, &changed).unwrap_err().contains("\"a\""));
        let missing = Schema::new(vec![Field::new(DATE, DataType::Date32, false)]);
        assert!(evolve(&t, &missing).unwrap_err().contains("required"));
    }
}

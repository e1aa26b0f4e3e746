//! Table maintenance: compaction (`OPTIMIZE`, bin-packing small files of a date partition
//! into files of a target size) and the background policy (compaction, vacuum).
//!
//! Compaction writes the new files first, then commits one `OPTIMIZE` version that removes
//! the small files and adds the new ones (`dataChange: false`, so streaming readers of the
//! table skip it). A crash before the commit leaves only unreferenced new files, which
//! vacuum deletes; the table's rows never change.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use deltalake::DeltaTable;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::delta::{self, delta_err, DataFile, DATE};
use crate::LakeError;

/// Default target size of compacted files, bytes (as Delta's `OPTIMIZE`: 100 MiB).
pub const TARGET_FILE_BYTES: u64 = 100 << 20;

/// Auto-compaction (as Delta's auto compaction after a write): files under this size count
/// as small, and are packed into files of up to this size, bytes (8 MiB).
pub const AUTO_COMPACT_BYTES: u64 = 8 << 20;

/// Auto-compaction runs after a commit once a date partition holds this many small files
/// (Delta's `minNumFiles` default). It bounds the files a table version lists, which is
/// what each commit's cost grows with: a table committed every second would otherwise
/// gather 3,600 files an hour.
pub const AUTO_COMPACT_MIN_FILES: usize = 50;

/// Which files to rewrite together: per date with at least `min_files` (at least 2) files
/// under `target` bytes (so that a policy does not rewrite a growing file for every new
/// small one), those files packed in path order into bins of at most `target` bytes; bins
/// of one file are left alone.
pub fn plan_bins(files: &[DataFile], target: u64, min_files: usize) -> Vec<Vec<DataFile>> {
    let mut by_date: BTreeMap<Option<String>, Vec<&DataFile>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.size < target) {
        by_date.entry(f.date.clone()).or_default().push(f);
    }
    let mut bins = Vec::new();
    for (_, mut small) in by_date.into_iter().filter(|(_, small)| small.len() >= min_files.max(2)) {
        small.sort_by(|a, b| a.path.cmp(&b.path));
        let mut bin: Vec<DataFile> = Vec::new();
        let mut bytes = 0;
        for f in small {
            if !bin.is_empty() && bytes + f.size > target {
                bins.push(std::mem::take(&mut bin));
                bytes = 0;
            }
            bytes += f.size;
            bin.push(f.clone());
        }
        bins.push(bin);
    }
    bins.retain(|b| b.len() >= 2);
    bins
}

/// What one compaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OptimizeReport {
    pub files_removed: usize,
    pub files_added: usize,
    /// The table version committed, if any.
    pub version: Option<i64>,
}

/// Reads a data file of the table whole, with the table's current schema (columns added
/// since it was written are null), plus its date.
async fn read_file(table: &DeltaTable, name: &str, f: &DataFile, schema: &Arc<Schema>) -> Result<Vec<RecordBatch>, LakeError> {
    use datafusion::object_store::ObjectStoreExt;
    let store = table.object_store();
    let path = deltalake::Path::parse(crate::write::percent_decode(&f.path)).map_err(|e| LakeError::Handle(e.to_string()))?;
    let bytes = store.get(&path).await.map_err(|e| delta_err(name)(e.into()))?.bytes().await.map_err(|e| delta_err(name)(e.into()))?;
    let perr = |source| LakeError::Parquet { path: f.path.clone().into(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(perr)?.build().map_err(perr)?;
    let days = f.date.as_deref().and_then(crate::query::parse_day);
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let mut cols = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            if field.name() == DATE {
                cols.push(Arc::new(arrow_array::Date32Array::from(vec![days; batch.num_rows()])) as arrow_array::ArrayRef);
            } else if let Some(c) = batch.column_by_name(field.name()) {
                cols.push(c.clone());
            } else {
                cols.push(arrow_array::new_null_array(field.data_type(), batch.num_rows()));
            }
        }
        out.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    Ok(out)
}

/// Compacts the table's small files (see [`plan_bins`]) in one `OPTIMIZE` commit.
pub async fn optimize(table: &mut DeltaTable, name: &str, target: u64, min_files: usize) -> Result<OptimizeReport, LakeError> {
    let files = delta::files(table, name)?;
    let bins = plan_bins(&files, target, min_files);
    if bins.is_empty() {
        return Ok(OptimizeReport::default());
    }
    let schema = Arc::new(delta::arrow_schema(table, name)?);
    let snapshot_files: std::collections::HashMap<String, deltalake::kernel::Remove> = {
        let snapshot = table.snapshot().map_err(delta_err(name))?;
        snapshot.log_data().iter().map(|f| (f.path().to_string(), f.remove_action(false))).collect()
    };
    let mut actions = Vec::new();
    let mut report = OptimizeReport::default();
    for bin in &bins {
        let mut batches = Vec::new();
        for f in bin {
            batches.extend(read_file(table, name, f, &schema).await?);
        }
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        if !batches.is_empty() {
            for mut add in delta::write_files(table, name, &batches).await? {
                add.data_change = false;
                actions.push(Action::Add(add));
                report.files_added += 1;
            }
        }
        for f in bin {
            if let Some(r) = snapshot_files.get(&f.path) {
                let mut r = r.clone();
                r.deletion_timestamp = Some(sluice_core::time::now_ms());
                actions.push(Action::Remove(r));
                report.files_removed += 1;
            }
        }
    }
    let snapshot = table.snapshot().map_err(delta_err(name))?;
    let done = CommitBuilder::default()
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), DeltaOperation::Optimize { predicate: None, target_size: target as i64 })
        .await
        .map_err(delta_err(name))?;
    report.version = Some(done.version() as i64);
    table.update_incremental(None).await.map_err(delta_err(name))?;
    Ok(report)
}

/// Compacts the table if a date partition holds `min_files` files under
/// [`AUTO_COMPACT_BYTES`]; `None` when none does.
pub async fn auto_compact(table: &mut DeltaTable, name: &str, min_files: usize) -> Result<Option<OptimizeReport>, LakeError> {
    let files = delta::files(table, name)?;
    let mut small: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for f in files.iter().filter(|f| f.size < AUTO_COMPACT_BYTES) {
        *small.entry(f.date.as_deref()).or_default() += 1;
    }
    if small.values().all(|&n| n < min_files.max(2)) {
        return Ok(None);
    }
    optimize(table, name, AUTO_COMPACT_BYTES, min_files).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, size: u64, date: &str) -> DataFile {
        DataFile { path: path.into(), size, date: Some(date.into()), rows: None }
    }

    #[test]
    fn bins_pack_small_files_of_one_date() {
        let files = vec![f("a", 40, "d1"), f("b", 40, "d1"), f("c", 40, "d1"), f("d", 10, "d2"), f("e", 200, "d1"), f("g", 5, "d3")];
        let bins = plan_bins(&files, 100, 2);
        let names: Vec<Vec<&str>> = bins.iter().map(|b| b.iter().map(|f| f.path.as_str()).collect()).collect();
        // d1: a+b fit in 100, c alone is dropped; e is big; d2 and d3 have one file each.
        assert_eq!(names, vec![vec!["a", "b"]]);
        assert!(plan_bins(&[f("a", 10, "d"), f("b", 10, "e")], 100, 2).is_empty(), "files of different dates never merge");
        assert_eq!(plan_bins(&files, 100, 3).len(), 1, "d1 has three small files: a and b go together");
        assert!(plan_bins(&files, 100, 4).is_empty(), "no date has four small files");
    }
}

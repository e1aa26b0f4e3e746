//! sluice-lake: pipeline output as typed Parquet tables, readable without sluice by
//! pyarrow, DuckDB, Spark, pandas or Polars.
//!
//! Every pipeline writes a table named after it. Layout (Hive-style `date=` partitions, by
//! the UTC date of the table's first timestamp column, else of the commit):
//!
//! ```text
//! <root>/<table>/date=YYYY-MM-DD/part-<checkpoint id, 20 digits>.parquet
//! <root>/_staging/<table>/<checkpoint id>/date=.../part-....parquet   (not yet committed)
//! ```
//!
//! Files are written into `_staging` (ignored by readers: Spark, pyarrow and DuckDB's hive
//! readers skip `_`-prefixed paths when reading a table directory), fsync'd, and moved into
//! their table only after the checkpoint that produced them is committed (see
//! `sluice_stream::checkpoint`). A table directory therefore only ever holds committed
//! output, each file written once: the per-checkpoint file list is what a transaction log
//! (Delta Lake) records, which keeps a later move to Delta simple.
//!
//! Types: as the pipeline produced them, except timestamps, which are stored as
//! microseconds, UTC (Parquet `TIMESTAMP(isAdjustedToUTC=true, MICROS)`), which Spark,
//! DuckDB and pandas all read as instants. Compression: snappy.

pub mod schema;
mod write;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use write::Lake;

/// Staging directory name (under the lake root).
pub const STAGING: &str = "_staging";

/// Errors of the lake, with the file they concern.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Parquet error on {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("building a record batch failed: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("staged file {path} is missing and was never published; the checkpoint's output is lost")]
    MissingStaged { path: PathBuf },
    #[error("unexpected column {column} in {path}: {reason}")]
    Schema { path: PathBuf, column: String, reason: String },
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LakeError + '_ {
    move |source| LakeError::Io { path: path.to_path_buf(), source }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LakeError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Every `.parquet` file of a table, skipping `_`- and `.`-prefixed entries, sorted.
pub fn table_files(table_dir: &Path) -> Result<Vec<PathBuf>, LakeError> {
    let mut out = Vec::new();
    if !table_dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![table_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

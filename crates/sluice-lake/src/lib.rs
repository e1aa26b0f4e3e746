//! sluice-lake: pipeline output as Delta Lake tables, readable without sluice by Spark,
//! DuckDB, pyarrow, pandas, Polars and the `deltalake` package, and queryable with SQL.
//!
//! Every pipeline output writes a table named after it, `<root>/<table>/`, a Delta table
//! partitioned by `date` (the UTC date of the table's first timestamp column, else of the
//! commit). See [`delta`] for the layout and the commit protocol, [`query`] for SQL, and
//! [`store`] for where the root is (a local folder, or `s3://bucket/prefix` with commits by
//! put-if-absent).
//!
//! Exactly-once: at a checkpoint barrier, a sink writes the checkpoint's rows as Parquet
//! data files that no Delta commit names yet ([`Lake::stage_table`]); the handles (their
//! `add` actions) go into the checkpoint manifest. Once the checkpoint is committed, one
//! Delta commit adds them with a `txn` action (`appId` `sluice/<pipeline>`, `version` the
//! checkpoint id) ([`Lake::publish`]). After a crash, the latest checkpoint is published
//! again; the `txn` makes a commit that already happened a no-op.
//!
//! Types: as the pipeline produced them, except timestamps, which are stored as
//! microseconds, UTC (Parquet `TIMESTAMP(isAdjustedToUTC=true, MICROS)`, Delta
//! `timestamp`). Compression: snappy.

pub mod delta;
pub mod format;
pub mod local;
pub mod maintain;
pub mod query;
pub mod schema;
pub mod remote;
pub mod store;
mod write;

use std::path::{Path, PathBuf};

pub use store::{Root, StorageOptions};
pub use write::{check_table_name, stored_schema, to_stored, Lake, MIN_VACUUM_RETENTION_MS};

/// Staging directory of earlier releases (under the lake root); read only to publish what
/// such a release staged before it was upgraded.
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
    #[error("staged file {path} is missing and was never published; the checkpoint's output is lost (was the table vacuumed while the server was down longer than the retention?)")]
    MissingStaged { path: PathBuf },
    #[error("unexpected column {column} in {path}: {reason}")]
    Schema { path: PathBuf, column: String, reason: String },
    #[error("Delta table {table:?}: {source}")]
    Delta {
        table: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    #[error("no lake table {0:?}; `sluice tables list` shows the tables")]
    NoTable(String),
    #[error("a staged-file handle is not valid: {0}")]
    Handle(String),
    #[error("query failed")]
    Query(#[source] datafusion::error::DataFusionError),
    #[error("a vacuum retention of {0} ms could delete files of checkpoints that are not committed yet; use at least 3600000 (1 h)")]
    Retention(u64),
    #[error("lake location {location:?}: {reason}")]
    Location { location: String, reason: String },
    #[error("object store error on {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: deltalake::logstore::object_store::Error,
    },
    #[error("the lake is shutting down")]
    Closed,
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LakeError + '_ {
    move |source| LakeError::Io { path: path.to_path_buf(), source }
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

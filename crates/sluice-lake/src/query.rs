//! SQL over the lake with DataFusion: every Delta table is a table of that name, read only
//! through the files its Delta log names, with its `date` partitions pruned by `WHERE`
//! filters on `date` before any file is opened.
//!
//! Time travel: the quoted name `"<table>@<version>"` reads the table as of a Delta version,
//! and `"<table>@<RFC 3339 time>"` as of a time (`SELECT * FROM "heart_rate@3"`).
//!
//! Limits ([`QueryLimits`]): a memory pool bounds what operators may hold (sorts,
//! aggregates, joins), and the caller bounds the time. Results stream as record batches.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Date32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures_util::StreamExt;

use crate::delta::{self, DataFile, DATE};
use crate::store::Root;
use crate::write::percent_decode;
use crate::LakeError;

/// Bounds on one query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Memory operators may hold, bytes; past it a query fails with "Resources exhausted".
    pub memory_bytes: usize,
    /// Rows per output batch.
    pub batch_rows: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits { memory_bytes: 512 << 20, batch_rows: 8192 }
    }
}

/// A table's version: latest, a Delta version, or as of a time (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AsOf {
    Latest,
    Version(i64),
    TimeMs(i64),
}

/// Splits `"table@3"` / `"table@2026-11-30T10:00:00Z"` into the table and its version.
pub fn parse_table_ref(name: &str) -> Result<(&str, AsOf), String> {
    let Some((table, at)) = name.split_once('@') else { return Ok((name, AsOf::Latest)) };
    if let Ok(v) = at.parse::<i64>() {
        return Ok((table, AsOf::Version(v)));
    }
    chrono::DateTime::parse_from_rfc3339(at).map(|t| (table, AsOf::TimeMs(t.timestamp_millis()))).map_err(|e| format!("{name:?}: after '@' comes a Delta version or an RFC 3339 time ({e})"))
}

/// A Delta table version as a DataFusion table: the files of that version, nothing else.
#[derive(Debug)]
pub struct DeltaProvider {
    root: Root,
    table: String,
    file_schema: SchemaRef,
    schema: SchemaRef,
    files: Vec<DataFile>,
}

impl DeltaProvider {
    /// `schema` is the table's (data columns, then `date`); `files` its data files. The
    /// query context must have [`Root::store`] registered (as [`context`] does).
    pub fn new(root: &Root, table: &str, schema: &Schema, files: Vec<DataFile>) -> DeltaProvider {
        let file_schema: Vec<Field> = schema.fields().iter().filter(|f| f.name() != DATE).map(|f| f.as_ref().clone()).collect();
        let mut all = file_schema.clone();
        all.push(Field::new(DATE, DataType::Date32, true));
        DeltaProvider { root: root.clone(), table: table.to_string(), file_schema: Arc::new(Schema::new(file_schema)), schema: Arc::new(Schema::new(all)), files }
    }

    /// Which files may hold rows passing `filters` (those on `date` alone).
    fn prune(&self, state: &dyn Session, filters: &[Expr]) -> DfResult<Vec<bool>> {
        let date_schema = Arc::new(Schema::new(vec![Field::new(DATE, DataType::Date32, true)]));
        let days: Date32Array = self.files.iter().map(|f| f.date.as_deref().and_then(parse_day)).collect();
        let batch = RecordBatch::try_new(date_schema.clone(), vec![Arc::new(days) as ArrayRef])?;
        let df_schema = DFSchema::try_from(date_schema)?;
        let mut keep = vec![true; self.files.len()];
        for f in filters.iter().filter(|f| on_date_only(f)) {
            let expr = state.create_physical_expr(f.clone(), &df_schema)?;
            let result = expr.evaluate(&batch)?.into_array(batch.num_rows())?;
            let mask = result.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| DataFusionError::Plan("a filter on date is not a boolean".into()))?;
            for (i, k) in keep.iter_mut().enumerate() {
                *k &= mask.is_valid(i) && mask.value(i);
            }
        }
        Ok(keep)
    }
}

pub(crate) fn parse_day(d: &str) -> Option<i32> {
    let date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?;
    Some((date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32)
}

fn on_date_only(e: &Expr) -> bool {
    let cols = e.column_refs();
    !cols.is_empty() && cols.iter().all(|c| c.name == DATE)
}

#[async_trait::async_trait]
impl TableProvider for DeltaProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters.iter().map(|f| if on_date_only(f) { TableProviderFilterPushDown::Exact } else { TableProviderFilterPushDown::Inexact }).collect())
    }

    async fn scan(&self, state: &dyn Session, projection: Option<&Vec<usize>>, filters: &[Expr], limit: Option<usize>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let keep = self.prune(state, filters)?;
        let mut files: Vec<PartitionedFile> = Vec::new();
        for (f, k) in self.files.iter().zip(keep) {
            if !k {
                continue;
            }
            let path = self.root.path_in_table(&self.table, &percent_decode(&f.path));
            let mut pf = PartitionedFile::new(path.to_string(), f.size);
            pf.partition_values = vec![ScalarValue::Date32(f.date.as_deref().and_then(parse_day))];
            files.push(pf);
        }
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let groups = state.config().target_partitions().max(1);
        let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups.min(files.len())];
        let n = file_groups.len();
        for (i, f) in files.into_iter().enumerate() {
            file_groups[i % n].push(f);
        }
        let table_schema = TableSchema::builder(self.file_schema.clone()).with_table_partition_cols(vec![Arc::new(Field::new(DATE, DataType::Date32, true))]).build();
        let source = Arc::new(ParquetSource::new(table_schema));
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(self.root.store_url())?, source)
            .with_file_groups(file_groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// Which tables a query may see (a user limited to certain pipelines sees their tables).
pub type TableFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The lake's tables, resolved by name when a query names them.
struct LakeSchema {
    root: Root,
    /// The lake's tables when the context was made.
    tables: Vec<String>,
    extra: HashMap<String, Arc<dyn TableProvider>>,
    allow: Option<TableFilter>,
}

impl std::fmt::Debug for LakeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSchema").field("root", &self.root).finish_non_exhaustive()
    }
}

impl LakeSchema {
    fn allowed(&self, table: &str) -> bool {
        self.allow.as_ref().is_none_or(|a| a(table))
    }

    fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.extra.keys().chain(&self.tables).filter(|t| self.allowed(t)).cloned().collect();
        out.sort();
        out.dedup();
        out
    }
}

#[async_trait::async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        self.names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.extra.get(name).filter(|_| self.allowed(name)) {
            return Ok(Some(t.clone()));
        }
        let (table, as_of) = parse_table_ref(name).map_err(DataFusionError::Plan)?;
        if crate::check_table_name(table).is_err() || !self.allowed(table) {
            return Ok(None);
        }
        let Some(mut t) = delta::load(&self.root, table).await.map_err(|e| DataFusionError::External(Box::new(e)))? else { return Ok(None) };
        match as_of {
            AsOf::Latest => {}
            AsOf::Version(v) => t.load_version(v.max(0) as u64).await.map_err(|e| DataFusionError::Plan(format!("table {table:?} as of version {v}: {e}")))?,
            AsOf::TimeMs(ms) => {
                let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
                t.load_with_datetime(at).await.map_err(|e| DataFusionError::Plan(format!("table {table:?} as of {at}: {e}")))?
            }
        }
        let schema = delta::arrow_schema(&t, table).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let files = delta::files(&t, table).map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Some(Arc::new(DeltaProvider::new(&self.root, table, &schema, files))))
    }

    fn table_exist(&self, name: &str) -> bool {
        parse_table_ref(name).is_ok_and(|(t, _)| self.allowed(t) && (self.extra.contains_key(t) || self.tables.iter().any(|n| n == t)))
    }
}

/// A query context over the lake at `root`, with `extra` tables (e.g. live pipeline state),
/// showing only the tables `allow` passes (all, when `None`). Lists the lake's tables.
pub async fn context(root: &Root, extra: HashMap<String, Arc<dyn TableProvider>>, allow: Option<TableFilter>, limits: QueryLimits) -> Result<SessionContext, LakeError> {
    let tables = root.table_names().await?;
    // No spilling: past the memory limit a query fails rather than writing temporary files
    // (and DataFusion 55's spilling nested-loop join re-executes its inputs, which panics
    // on a repartitioned one: apache/datafusion#24676).
    let disk = DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled);
    let runtime = RuntimeEnvBuilder::new().with_memory_limit(limits.memory_bytes, 1.0).with_disk_manager_builder(disk).build_arc().map_err(LakeError::Query)?;
    let store_url = url::Url::parse(&root.store_url()).map_err(|e| LakeError::Location { location: root.store_url(), reason: e.to_string() })?;
    runtime.register_object_store(&store_url, root.store());
    let config = SessionConfig::new().with_batch_size(limits.batch_rows).with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let catalog = ctx.catalog("datafusion").ok_or_else(|| LakeError::Query(DataFusionError::Plan("no default catalog".into())))?;
    catalog.register_schema("public", Arc::new(LakeSchema { root: root.clone(), tables, extra, allow })).map_err(LakeError::Query)?;
    Ok(ctx)
}

/// The runtime queries run on, apart from the caller's: DataFusion's operators yield to
/// the scheduler only between input batches, so a runaway query (a cross join of large
/// tables) can keep a thread busy after its caller gave up on it. Here it cannot starve the
/// server's own tasks, and no shutdown waits for it. One per process, never dropped.
fn query_runtime() -> Result<&'static tokio::runtime::Runtime, LakeError> {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).thread_name("sluice-query").enable_all().build().map_err(|e| LakeError::Io { path: "sluice-query runtime".into(), source: e })?;
    Ok(RT.get_or_init(|| rt))
}

/// A query running on the query runtime: its schema, then its batches as they come.
/// Dropping it cancels the query at its next yield to the scheduler; an operator looping
/// over data it already holds (a cross join) may run on until then, on the query runtime.
pub struct Running {
    pub schema: SchemaRef,
    batches: tokio::sync::mpsc::Receiver<DfResult<RecordBatch>>,
    task: tokio::task::AbortHandle,
}

impl Running {
    /// The next batch; `None` at the end.
    pub async fn next(&mut self) -> Option<DfResult<RecordBatch>> {
        self.batches.recv().await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Plans `sql` and starts it on the query runtime (see [`execute`] for what is allowed).
/// Errors: the planning error. Cancel by dropping the result.
pub async fn start(ctx: SessionContext, sql: &str) -> Result<Running, LakeError> {
    let (plan_tx, plan_rx) = tokio::sync::oneshot::channel();
    let (tx, batches) = tokio::sync::mpsc::channel(2);
    let sql = sql.to_string();
    let task = query_runtime()?.spawn(async move {
        let mut stream = match execute(&ctx, &sql).await {
            Ok(s) => {
                if plan_tx.send(Ok(s.schema())).is_err() {
                    return;
                }
                s
            }
            Err(e) => {
                let _ = plan_tx.send(Err(e));
                return;
            }
        };
        while let Some(b) = stream.next().await {
            if tx.send(b).await.is_err() {
                return;
            }
        }
    });
    let task = task.abort_handle();
    match plan_rx.await {
        Ok(Ok(schema)) => Ok(Running { schema, batches, task }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(LakeError::Closed),
    }
}

/// Plans and starts `sql` on the caller's runtime; its rows stream from the result.
pub async fn execute(ctx: &SessionContext, sql: &str) -> Result<SendableRecordBatchStream, LakeError> {
    // Read-only: no CREATE, INSERT, COPY TO or SET.
    let options = datafusion::execution::context::SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let df = ctx.sql_with_options(sql, options).await.map_err(LakeError::Query)?;
    df.execute_stream().await.map_err(LakeError::Query)
}

//! `sluice tables` (list, describe, history, optimize, vacuum, checkpoint the lake's Delta
//! tables) and `sluice query` (SQL over them). Both work on the data directory whether or
//! not a server is running; `sluice query --server URL` asks a running server instead,
//! which also sees `open_sessions`.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use datafusion::arrow::util::pretty::pretty_format_batches;
use sluice_lake::format::{Encoder, Format};
use sluice_lake::{Lake, Root};

use crate::users::Where;

/// The lake of a config (`[lake] location`, else the data directory's `lake/`).
fn lake_root(at: &Where) -> anyhow::Result<Root> {
    let config = at.config()?;
    if config.lake.location.is_empty() {
        let dir = config.data_dir.join("lake");
        anyhow::ensure!(dir.is_dir(), "no lake at {}: has a server run with this data directory? (--data-dir, --config)", dir.display());
    }
    Ok(config.lake_root()?)
}

#[derive(Args)]
pub struct TablesArgs {
    #[command(subcommand)]
    command: TablesCommand,
    #[command(flatten)]
    at: Where,
}

#[derive(Subcommand)]
enum TablesCommand {
    /// List the lake's tables with their version, files, rows and bytes.
    List,
    /// A table's schema, partitions and files.
    Describe { name: String },
    /// A table's commits, newest first: version, time, operation, and the checkpoint id
    /// (txn) of streaming commits.
    History {
        name: String,
        /// Show at most this many commits.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Compact small files of each date partition into files of about --target-bytes.
    Optimize {
        name: String,
        /// Target file size, bytes.
        #[arg(long, default_value_t = sluice_lake::maintain::TARGET_FILE_BYTES)]
        target_bytes: u64,
        /// Compact a date's small files only when there are at least this many.
        #[arg(long, default_value_t = 2)]
        min_files: usize,
    },
    /// Delete data files that no version of the last --retention-ms references.
    Vacuum {
        name: String,
        /// Keep files any version of this long ago or later references, ms (7 days).
        #[arg(long, default_value_t = 7 * 86_400_000)]
        retention_ms: u64,
        /// Only list the files that would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a checkpoint of the table's Delta log, so opening it reads one Parquet file
    /// instead of replaying every JSON commit.
    Checkpoint { name: String },
}

pub fn run_tables(args: TablesArgs) -> anyhow::Result<()> {
    let lake = Lake::open_at(lake_root(&args.at)?)?;
    match args.command {
        TablesCommand::List => {
            println!("{:<32} {:>8} {:>7} {:>12} {:>14} {:>6}", "table", "version", "files", "rows", "bytes", "dates");
            for name in lake.table_names()? {
                let t = lake.table(&name, None)?;
                let files = sluice_lake::delta::files(&t, &name)?;
                let rows: usize = files.iter().filter_map(|f| f.rows).sum();
                let bytes: u64 = files.iter().map(|f| f.size).sum();
                let dates: std::collections::BTreeSet<_> = files.iter().filter_map(|f| f.date.clone()).collect();
                println!("{:<32} {:>8} {:>7} {:>12} {:>14} {:>6}", name, t.version().map_or("-".to_string(), |v| v.to_string()), files.len(), rows, bytes, dates.len());
            }
        }
        TablesCommand::Describe { name } => {
            let t = lake.table(&name, None)?;
            let schema = sluice_lake::delta::arrow_schema(&t, &name)?;
            println!("table {name}, version {}, partitioned by date", t.version().map_or("-".to_string(), |v| v.to_string()));
            println!("location {}", t.table_url());
            println!("columns:");
            for f in schema.fields() {
                println!("  {:<24} {}{}", f.name(), f.data_type(), if f.is_nullable() { "" } else { " not null" });
            }
            println!("files:");
            for f in sluice_lake::delta::files(&t, &name)? {
                println!("  {}  {} bytes  {} rows", f.path, f.size, f.rows.map_or("?".into(), |r| r.to_string()));
            }
        }
        TablesCommand::History { name, limit } => {
            println!("{:>7}  {:<24} {:<20} details", "version", "time (UTC)", "operation");
            for c in lake.history(&name, limit)? {
                let when = c["timestamp"].as_i64().and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()).unwrap_or_default();
                let params = c["operationParameters"].as_object().map(|p| p.iter().map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect::<Vec<_>>().join(" ")).unwrap_or_default();
                println!("{:>7}  {:<24} {:<20} {}", c["version"].as_i64().map_or("?".into(), |v| v.to_string()), when, c["operation"].as_str().unwrap_or("?"), params);
            }
        }
        TablesCommand::Optimize { name, target_bytes, min_files } => {
            let r = lake.optimize(&name, target_bytes, min_files)?;
            match r.version {
                Some(v) => println!("{name}: {} small files compacted into {} (version {v}); `sluice tables vacuum {name}` deletes the old files once past the retention", r.files_removed, r.files_added),
                None => println!("{name}: nothing to compact"),
            }
        }
        TablesCommand::Vacuum { name, retention_ms, dry_run } => {
            let files = lake.vacuum(&name, retention_ms, dry_run)?;
            for f in &files {
                println!("{f}");
            }
            println!("{name}: {} files {}", files.len(), if dry_run { "would be deleted" } else { "deleted" });
        }
        TablesCommand::Checkpoint { name } => {
            let v = lake.checkpoint(&name)?;
            println!("{name}: Delta log checkpoint written at version {v}");
        }
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// An aligned text table.
    Table,
    Json,
    Csv,
}

#[derive(Args)]
pub struct QueryArgs {
    /// The SQL (DataFusion's dialect). Lake tables by name; `"table@VERSION"` or
    /// `"table@2026-11-30T10:00:00Z"` reads an older version.
    sql: String,
    /// How to print the answer.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Ask a running server (which also has `open_sessions`, the live sessions) instead of
    /// reading the data directory. Needs SLUICE_TOKEN with [auth] enabled.
    #[arg(long)]
    server: Option<String>,
    #[command(flatten)]
    at: Where,
}

pub async fn run_query(args: QueryArgs) -> anyhow::Result<()> {
    let mut printer = Printer::new(args.format);
    match &args.server {
        Some(server) => {
            for b in remote(server, &args.sql).await? {
                printer.push(b)?;
            }
        }
        None => {
            let config = args.at.config()?;
            let root = lake_root(&args.at)?;
            let limits = sluice_lake::query::QueryLimits { memory_bytes: config.lake.query_memory_bytes, ..Default::default() };
            let ctx = sluice_lake::query::context(&root, Default::default(), None, limits).await?;
            let run = async {
                let mut stream = match sluice_lake::query::start(ctx, &args.sql).await {
                    Ok(s) => s,
                    Err(sluice_lake::LakeError::Query(e)) => anyhow::bail!("{}", sluice_stream::sql::SqlError::from_datafusion(&e, &args.sql)),
                    Err(e) => return Err(e.into()),
                };
                // JSON and CSV rows are written as they come, not held.
                printer.start(stream.schema.clone())?;
                while let Some(b) = stream.next().await {
                    match b {
                        Ok(b) => printer.push(b)?,
                        Err(e) if matches!(e.find_root(), datafusion::error::DataFusionError::ResourcesExhausted(_)) => {
                            anyhow::bail!("{}; the query needs more memory than [lake] query_memory_bytes ({} bytes): filter more rows out, or raise it", sluice_core::error_chain(&e), config.lake.query_memory_bytes)
                        }
                        Err(e) => return Err(sluice_lake::LakeError::Query(e).into()),
                    }
                }
                Ok::<_, anyhow::Error>(())
            };
            tokio::time::timeout(std::time::Duration::from_millis(config.lake.query_timeout_ms), run)
                .await
                .map_err(|_| anyhow::anyhow!("the query ran past {} ms ([lake] query_timeout_ms)", config.lake.query_timeout_ms))??
        }
    }
    printer.finish()
}

/// Prints an answer batch by batch: a table once all rows are in (its column widths need
/// them), JSON or CSV as each batch comes.
struct Printer {
    format: OutputFormat,
    held: Vec<datafusion::arrow::record_batch::RecordBatch>,
    encoder: Option<(Encoder, Format)>,
}

impl Printer {
    fn new(format: OutputFormat) -> Printer {
        Printer { format, held: Vec::new(), encoder: None }
    }

    /// Writes the head of a JSON or CSV answer (so that one without rows is whole too).
    fn start(&mut self, schema: datafusion::arrow::datatypes::SchemaRef) -> anyhow::Result<()> {
        use std::io::Write;
        let format = match self.format {
            OutputFormat::Table => return Ok(()),
            OutputFormat::Json => Format::Json,
            OutputFormat::Csv => Format::Csv,
        };
        if self.encoder.is_none() {
            let mut e = Encoder::new(format, schema).map_err(anyhow::Error::msg)?;
            std::io::stdout().lock().write_all(&e.head())?;
            self.encoder = Some((e, format));
        }
        Ok(())
    }

    fn push(&mut self, batch: datafusion::arrow::record_batch::RecordBatch) -> anyhow::Result<()> {
        use std::io::Write;
        if let OutputFormat::Table = self.format {
            self.held.push(batch);
            return Ok(());
        }
        self.start(batch.schema())?;
        let mut out = std::io::stdout().lock();
        if let Some((e, _)) = self.encoder.as_mut() {
            out.write_all(&e.batch(&batch).map_err(anyhow::Error::msg)?)?;
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        use std::io::Write;
        if let OutputFormat::Table = self.format {
            println!("{}", pretty_format_batches(&self.held)?);
            let rows: usize = self.held.iter().map(|b| b.num_rows()).sum();
            eprintln!("{rows} row{}", if rows == 1 { "" } else { "s" });
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        if let Some((mut e, format)) = self.encoder.take() {
            out.write_all(&e.finish())?;
            if format == Format::Json {
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }
}

/// Runs the query on a server (`POST /v1/query`, answer as an Arrow IPC stream).
async fn remote(server: &str, sql: &str) -> anyhow::Result<Vec<datafusion::arrow::record_batch::RecordBatch>> {
    let url = format!("{}/v1/query", server.trim_end_matches('/'));
    let sql = sql.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut req = agent.post(&url).header("Accept", sluice_lake::format::ARROW_STREAM);
        if let Some(t) = std::env::var("SLUICE_TOKEN").ok().filter(|t| !t.is_empty()) {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.send_json(serde_json::json!({ "sql": sql })).map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}. Is `sluice serve` running there? (--server)"))?;
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().with_config().limit(u64::MAX).read_to_vec().context("reading the answer")?;
        if status != 200 {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            anyhow::bail!("{status}: {}", v["error"]["message"].as_str().unwrap_or("the server refused the query"));
        }
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
        Ok(reader.collect::<Result<Vec<_>, _>>()?)
    })
    .await?
}

//! `sluice pipelines`: create, list, describe, drain and drop pipelines of a running server
//! (a client of the `/v1/pipelines` API).

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args)]
pub struct PipelinesArgs {
    /// Server base URL. A server with `[auth] enabled` needs an API token in the
    /// environment variable SLUICE_TOKEN (`sluice tokens create`).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    server: String,
    #[command(subcommand)]
    command: PipelinesCommand,
}

#[derive(Subcommand)]
enum PipelinesCommand {
    /// Create a pipeline from SQL: `--sql "SELECT …"`, or a file (`-` for stdin) holding
    /// `SELECT …` or `CREATE PIPELINE name AS SELECT …`.
    Create {
        /// Pipeline name (may come from CREATE PIPELINE in the SQL instead).
        name: Option<String>,
        /// The query.
        #[arg(long, conflicts_with = "file")]
        sql: Option<String>,
        /// A file with the query; `-` reads stdin.
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// An option as KEY=VALUE, with a TOML value (repeatable): watermark=per_key,
        /// dedup=true, max_out_of_orderness_ms=10000, allowed_lateness_ms=5000,
        /// 'rollups=[{size_ms=60000}]', 'alerts=[{name="hot", column="avg_hr", above=180.0}]'.
        #[arg(long = "option", short = 'o', value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
    /// List pipelines: state, lag, records, watermark, last checkpoint.
    List,
    /// Show one pipeline: its SQL, options, output schema, progress and recent rows.
    Describe { name: String },
    /// End of input: read everything durable now, close every window, commit.
    Drain { name: String },
    /// Stop a pipeline created at runtime and forget its state (its table and topics stay).
    Drop { name: String },
}

/// Calls the API; returns the JSON body, or the error object of a non-2xx answer.
fn call(method: &str, url: &str, body: Option<Value>) -> anyhow::Result<Result<Value, Value>> {
    let (status, value) = crate::topics::send(method, url, body)?;
    Ok(if (200..300).contains(&status) { Ok(value) } else { Err(value["error"].clone()) })
}

fn fail(e: Value) -> anyhow::Error {
    anyhow::anyhow!("{}", e["message"].as_str().map_or_else(|| e.to_string(), str::to_string))
}

/// The SQL line an error points at, with a caret under the column.
fn caret(sql: &str, line: u64, column: u64) -> String {
    let text = sql.lines().nth(line.saturating_sub(1) as usize).unwrap_or("");
    format!("  {text}\n  {}^", " ".repeat(column.saturating_sub(1) as usize))
}

pub fn run(args: PipelinesArgs) -> anyhow::Result<()> {
    let base = args.server.trim_end_matches('/').to_string();
    match args.command {
        PipelinesCommand::Create { name, sql, file, options } => {
            let sql = match (sql, file) {
                (Some(s), _) => s,
                (None, Some(f)) if f.as_os_str() == "-" => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s).context("reading the query from stdin")?;
                    s
                }
                (None, Some(f)) => std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?,
                (None, None) => anyhow::bail!("give the query with --sql \"SELECT …\" or --file FILE"),
            };
            let mut body = json!({"sql": sql});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            for o in options {
                let (k, v) = o.split_once('=').with_context(|| format!("--option {o:?}: expected KEY=VALUE"))?;
                let value: toml::Value = sluice_server::config::parse_scalar(v);
                body[k.trim()] = serde_json::to_value(value)?;
            }
            match call("POST", &format!("{base}/v1/pipelines"), Some(body))? {
                Ok(p) => {
                    println!("created pipeline {} (reads {}, writes {})", p["name"].as_str().unwrap_or("?"), p["source"].as_str().unwrap_or("?"), p["outputs"]);
                    Ok(())
                }
                Err(e) if e["code"] == "sql_error" => {
                    if let (Some(l), Some(c)) = (e["line"].as_u64(), e["column"].as_u64()) {
                        eprintln!("{}", caret(&sql, l, c));
                    }
                    Err(fail(e))
                }
                Err(e) => Err(fail(e)),
            }
        }
        PipelinesCommand::List => {
            let v = call("GET", &format!("{base}/v1/pipelines"), None)?.map_err(fail)?;
            println!("{:<24} {:<9} {:<28} {:>12} {:>10} {:>8} {:<24} {:>10}", "pipeline", "state", "source", "records", "lag", "late", "watermark", "checkpoint");
            for p in v["pipelines"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<9} {:<28} {:>12} {:>10} {:>8} {:<24} {:>10}",
                    p["name"].as_str().unwrap_or("?"),
                    p["state"].as_str().unwrap_or("?"),
                    p["source"].as_str().unwrap_or("?"),
                    p["records"].to_string(),
                    p["lag_records"].to_string(),
                    p["late_records"].to_string(),
                    p["watermark"].as_str().unwrap_or("-"),
                    p["last_checkpoint_id"].to_string()
                );
                if let Some(e) = p["error"].as_str() {
                    println!("  error: {e}");
                }
            }
            Ok(())
        }
        PipelinesCommand::Describe { name } => {
            let p = call("GET", &format!("{base}/v1/pipelines/{name}"), None)?.map_err(fail)?;
            println!("pipeline   {}", p["name"].as_str().unwrap_or("?"));
            println!("state      {}{}", p["state"].as_str().unwrap_or("?"), p["error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default());
            println!("source     {}", p["source"].as_str().unwrap_or("?"));
            println!("outputs    {}", p["outputs"]);
            println!("options    {}", p["options"]);
            println!("progress   {} records, lag {}, late {}, duplicates {}, invalid {}, output rows {}", p["records"], p["lag_records"], p["late_records"], p["duplicate_records"], p["invalid_records"], p["output_rows"]);
            println!("watermark  {}", p["watermark"].as_str().unwrap_or("-"));
            println!("state      {} keys, {} open windows, {} bytes on disk", p["state_keys"], p["open_windows"], p["state_bytes"]);
            println!("checkpoint {} at {}", p["last_checkpoint_id"], p["last_checkpoint_at"].as_str().unwrap_or("-"));
            println!("schema");
            for f in p["schema"].as_array().into_iter().flatten() {
                println!("  {:<24} {}", f["name"].as_str().unwrap_or("?"), f["type"].as_str().unwrap_or("?"));
            }
            println!("sql\n  {}", p["sql"].as_str().unwrap_or("").replace('\n', "\n  "));
            Ok(())
        }
        PipelinesCommand::Drain { name } => {
            call("POST", &format!("{base}/v1/pipelines/{name}/drain"), None)?.map_err(fail)?;
            println!("drained pipeline {name}: every window closed and committed");
            Ok(())
        }
        PipelinesCommand::Drop { name } => {
            call("DELETE", &format!("{base}/v1/pipelines/{name}"), None)?.map_err(fail)?;
            println!("dropped pipeline {name}");
            Ok(())
        }
    }
}

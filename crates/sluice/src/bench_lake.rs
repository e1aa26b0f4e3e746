//! `sluice bench lake`: the Delta lake's costs, each beside a peer in the same run.
//!
//! 1. Commit latency per checkpoint: `--commits` checkpoints of `--commit-rows` readings,
//!    each staged (Parquet files written) then published (one Delta commit with its `txn`);
//!    p50/p99 of both. Peer: the Python `deltalake` package appending the same batches
//!    (`write_deltalake(mode="append")`, one commit each), when `--python` is given. With
//!    `--s3 s3://bucket/prefix`, the same again on that store (the `AWS_*` environment
//!    names the endpoint and credentials), the peer with `conditional_put = etag` so that
//!    both commit by put-if-absent.
//! 2. Table open time after `--open-commits` commits, with the Delta log checkpoints that
//!    the commits write every 100 versions, and with those checkpoints deleted (every JSON
//!    commit replayed). Peer: the Python `deltalake` package opening the same two tables.
//! 3. Query time over `--rows` raw readings (1,000 players, one reading per player and
//!    second): a full scan and a filtered aggregate, by sluice's SQL (DataFusion over the
//!    Delta files). Peer: DuckDB over exactly the same Parquet files (the Delta log's file
//!    list, `read_parquet([...])`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_lake::Lake;

#[derive(Args)]
pub struct LakeArgs {
    /// Checkpoints committed for the commit-latency figure.
    #[arg(long, default_value_t = 500)]
    commits: u64,
    /// Readings per checkpoint in the commit-latency figure.
    #[arg(long, default_value_t = 1000)]
    commit_rows: usize,
    /// Commits before the table-open figure.
    #[arg(long, default_value_t = 10_000)]
    open_commits: u64,
    /// Raw readings for the query figures.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// A Python with `deltalake` and `duckdb` (e.g. .venv/bin/python) for the peers.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Also measure commit latency on this object-store prefix (`s3://bucket/prefix`, with
    /// the `AWS_*` environment variables; the bucket must exist and the prefix be empty).
    #[arg(long)]
    s3: Option<String>,
    /// Scratch directory (default: a new directory under the system temp dir, removed after).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

const PLAYERS: usize = 1000;
const T0_MS: i64 = 1_700_000_000_000;

/// `n` readings starting at reading number `from`: player `from % 1000`, one second apart per player.
fn readings(from: usize, n: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("player_id", DataType::Utf8, false),
        Field::new("created_at", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("heartbeat", DataType::Float64, false),
    ]));
    let ids: Vec<String> = (from..from + n).map(|i| format!("player-{:04}", i % PLAYERS)).collect();
    let ts: Vec<i64> = (from..from + n).map(|i| T0_MS + (i / PLAYERS) as i64 * 1000).collect();
    // Heart rates 60–180 bpm with two decimals, scattered (not a compressible pattern).
    let hr: Vec<f64> = (from..from + n).map(|i| 60.0 + ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 % 12_000.0 / 100.0).collect();
    let cols: Vec<datafusion::arrow::array::ArrayRef> =
        vec![Arc::new(StringArray::from(ids)), Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")), Arc::new(Float64Array::from(hr))];
    // The columns match the schema by construction.
    RecordBatch::try_new(schema, cols).unwrap_or_else(|e| unreachable!("{e}"))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn bar(n: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(n);
    b.set_style(ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    b.set_message(what.to_string());
    b
}

/// Stages and publishes `n` checkpoints of `rows` readings; returns (stage ms, publish ms) sorted.
fn commits(lake: &Lake, table: &str, n: u64, rows: usize, progress: &str) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut stage, mut publish) = (Vec::new(), Vec::new());
    let b = bar(n, progress);
    for id in 1..=n {
        let batch = readings(id as usize * rows, rows);
        let t = Instant::now();
        let staged = lake.stage_table(table, id, &[batch], 0)?;
        stage.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        lake.publish(table, "bench", id, &staged)?;
        publish.push(t.elapsed().as_secs_f64() * 1e3);
        b.inc(1);
    }
    b.finish_and_clear();
    stage.sort_by(f64::total_cmp);
    publish.sort_by(f64::total_cmp);
    Ok((stage, publish))
}

fn python(py: &Path, script: &str, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let out = std::process::Command::new(py).arg("-c").arg(script).args(args).output().with_context(|| format!("running {}", py.display()))?;
    anyhow::ensure!(out.status.success(), "the Python peer failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

const PEER_COMMITS: &str = r#"
import json, sys, time
import pyarrow as pa
from deltalake import write_deltalake
path, n, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# On S3, commit by put-if-absent (If-None-Match) as sluice does, not by an unsafe rename.
options = {"conditional_put": "etag"} if path.startswith("s3://") else None
lat = []
for c in range(1, n + 1):
    start = c * rows
    t = pa.table({"player_id": [f"player-{i % 1000:04}" for i in range(start, start + rows)],
                  "created_at": pa.array([1_700_000_000_000 + (i // 1000) * 1000 for i in range(start, start + rows)], pa.timestamp("ms", tz="UTC")),
                  "heartbeat": [60.0 + ((i * 0x9E3779B97F4A7C15) % (1 << 64) >> 40) % 12000 / 100 for i in range(start, start + rows)]})
    s = time.perf_counter()
    write_deltalake(path, t, mode="append", storage_options=options)
    lat.append((time.perf_counter() - s) * 1e3)
lat.sort()
print(json.dumps({"p50": lat[len(lat) // 2], "p99": lat[int((len(lat) - 1) * 0.99)]}))
"#;

const PEER_OPEN: &str = r#"
import json, sys, time
from deltalake import DeltaTable
out = {}
for path in sys.argv[1:]:
    times = []
    for _ in range(5):
        s = time.perf_counter()
        DeltaTable(path).version()
        times.append((time.perf_counter() - s) * 1e3)
    out[path] = sorted(times)[2]
print(json.dumps(out))
"#;

const PEER_QUERY: &str = r#"
import json, sys, time
import duckdb
files, queries = json.loads(sys.argv[1]), json.loads(sys.argv[2])
con = duckdb.connect()
con.execute("CREATE VIEW raw AS SELECT * FROM read_parquet(%s)" % json.dumps(files).replace('"', "'"))
out = []
for q in queries:
    times = []
    for _ in range(3):
        s = time.perf_counter()
        con.execute(q).fetchall()
        times.append((time.perf_counter() - s) * 1e3)
    out.append(sorted(times)[1])
print(json.dumps(out))
"#;

async fn time_query(root: &sluice_lake::Root, sql: &str) -> anyhow::Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let ctx = sluice_lake::query::context(root, Default::default(), None, Default::default()).await?;
        let mut s = sluice_lake::query::execute(&ctx, sql).await?;
        rows = 0;
        while let Some(b) = s.next().await {
            rows += b?.num_rows();
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[1], rows))
}

pub async fn run(args: LakeArgs) -> anyhow::Result<()> {
    let scratch = args.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("sluice-bench-lake-{}", std::process::id())));
    anyhow::ensure!(!scratch.exists(), "{} exists; give an empty or new --data-dir", scratch.display());
    std::fs::create_dir_all(&scratch)?;
    let root = std::path::absolute(&scratch)?;
    let result = run_in(&root, &args).await;
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

async fn run_in(root: &Path, args: &LakeArgs) -> anyhow::Result<()> {
    let lake = Arc::new(Lake::open(root)?);
    println!("lake bench in {} (local disk)", root.display());

    // 1. Commit latency.
    let (commits_n, rows) = (args.commits, args.commit_rows);
    let l = lake.clone();
    let (stage, publish) = tokio::task::spawn_blocking(move || commits(&l, "commits", commits_n, rows, "commits")).await??;
    println!("commit  {} checkpoints of {} readings: stage p50 {:.1} ms p99 {:.1} ms; Delta commit p50 {:.1} ms p99 {:.1} ms", commits_n, rows, pct(&stage, 0.5), pct(&stage, 0.99), pct(&publish, 0.5), pct(&publish, 0.99));
    if let Some(py) = &args.python {
        let v = python(py, PEER_COMMITS, &[root.join("peer_commits").display().to_string(), commits_n.to_string(), rows.to_string()])?;
        println!("        peer: Python deltalake write_deltalake(append), files and commit together: p50 {:.1} ms p99 {:.1} ms", v["p50"].as_f64().unwrap_or(0.0), v["p99"].as_f64().unwrap_or(0.0));
    }

    if let Some(url) = &args.s3 {
        let s3 = Arc::new(Lake::open_at(sluice_lake::Root::open(url, &Default::default())?)?);
        let (stage, publish) = tokio::task::spawn_blocking(move || commits(&s3, "commits", commits_n, rows, "commits on S3")).await??;
        println!("commit  on {url}: stage p50 {:.1} ms p99 {:.1} ms; Delta commit p50 {:.1} ms p99 {:.1} ms", pct(&stage, 0.5), pct(&stage, 0.99), pct(&publish, 0.5), pct(&publish, 0.99));
        if let Some(py) = &args.python {
            let v = python(py, PEER_COMMITS, &[format!("{}/peer_commits", url.trim_end_matches('/')), commits_n.to_string(), rows.to_string()])?;
            println!("        peer: Python deltalake on the same store: p50 {:.1} ms p99 {:.1} ms", v["p50"].as_f64().unwrap_or(0.0), v["p99"].as_f64().unwrap_or(0.0));
        }
    }

    // 2. Open time after many commits, with and without log checkpoints.
    let (n, l) = (args.open_commits, lake.clone());
    tokio::task::spawn_blocking(move || commits(&l, "open", n, 10, "commits for open")).await??;
    let with = root.join("open");
    let without = root.join("open_no_checkpoint");
    copy_dir(&with, &without)?;
    let mut removed = 0;
    for e in std::fs::read_dir(without.join("_delta_log"))? {
        let p = e?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if name.contains(".checkpoint") || name == "_last_checkpoint" {
            std::fs::remove_file(&p)?;
            removed += 1;
        }
    }
    let mut open = Vec::new();
    for table in ["open", "open_no_checkpoint"] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let loaded = sluice_lake::delta::load(lake.root(), table).await?.context("table missing")?;
            // n commits of data, and the auto-compactions between them.
            anyhow::ensure!(loaded.version().is_some_and(|v| v >= n), "{table} opened at {:?}, before commit {n}", loaded.version());
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        open.push(times[2]);
    }
    let version = sluice_lake::delta::load(lake.root(), "open").await?.and_then(|t| t.version()).unwrap_or(0);
    println!("open    after {n} commits (version {version}, with auto-compactions): {:.1} ms with Delta log checkpoints, {:.1} ms without ({removed} checkpoint files removed), median of 5", open[0], open[1]);
    if let Some(py) = &args.python {
        let v = python(py, PEER_OPEN, &[with.display().to_string(), without.display().to_string()])?;
        println!("        peer: Python deltalake DeltaTable(): {:.1} ms with, {:.1} ms without", v[with.display().to_string()].as_f64().unwrap_or(0.0), v[without.display().to_string()].as_f64().unwrap_or(0.0));
    }

    // 3. Queries over `rows` readings.
    let (total, l) = (args.rows, lake.clone());
    let per_commit = 100_000.min(total.max(1));
    let commits_q = total.div_ceil(per_commit);
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let b = bar(commits_q as u64, "writing readings");
        for c in 0..commits_q {
            let n = per_commit.min(total - c * per_commit);
            let staged = l.stage_table("raw", c as u64 + 1, &[readings(c * per_commit, n)], 0)?;
            l.publish("raw", "bench", c as u64 + 1, &staged)?;
            b.inc(1);
        }
        b.finish_and_clear();
        Ok(())
    })
    .await??;
    let bytes: u64 = lake.files("raw")?.iter().map(|f| f.size).sum();
    let seconds = (total / PLAYERS) as i64;
    let from = chrono::DateTime::from_timestamp_millis(T0_MS + seconds * 1000 / 4).unwrap_or_default().format("%Y-%m-%d %H:%M:%S");
    let to = chrono::DateTime::from_timestamp_millis(T0_MS + seconds * 1000 / 2).unwrap_or_default().format("%Y-%m-%d %H:%M:%S");
    let queries = [
        ("full scan", "SELECT count(*) AS n, avg(heartbeat) AS avg_hr, min(heartbeat) AS lo, max(heartbeat) AS hi, count(DISTINCT player_id) AS players FROM raw".to_string()),
        ("filtered aggregate", format!("SELECT player_id, count(*) AS n, avg(heartbeat) AS avg_hr FROM raw WHERE created_at >= TIMESTAMP '{from}+00:00' AND created_at < TIMESTAMP '{to}+00:00' AND heartbeat > 150 GROUP BY player_id")),
    ];
    println!("query   {total} readings in {} files, {:.1} MB (Parquet, snappy):", lake.files("raw")?.len(), bytes as f64 / 1e6);
    let mut ours = Vec::new();
    for (name, sql) in &queries {
        let (ms, n) = time_query(lake.root(), sql).await?;
        ours.push(ms);
        println!("        {name:<20} sluice {ms:>8.1} ms ({:.0} M readings/s, {n} rows out)", total as f64 / ms / 1e3);
    }
    if let Some(py) = &args.python {
        let files: Vec<String> = lake.files("raw")?.iter().map(|f| root.join("raw").join(&f.path).display().to_string()).collect();
        let sqls: Vec<&str> = queries.iter().map(|(_, q)| q.as_str()).collect();
        let v = python(py, PEER_QUERY, &[serde_json::to_string(&files)?, serde_json::to_string(&sqls)?])?;
        for ((name, _), (i, ms)) in queries.iter().zip(ours.iter().enumerate()) {
            let duck = v[i].as_f64().unwrap_or(0.0);
            println!("        {name:<20} DuckDB {duck:>8.1} ms (sluice/DuckDB time {:.2}×)", ms / duck.max(1e-9));
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

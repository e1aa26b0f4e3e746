//! `sluice bench pipelines`: pipelines from the log to committed output, beside Spark
//! Structured Streaming running the same queries on the same generated input.
//!
//! Scenarios (each in its own process, so peak RSS is its own):
//! - `heart-rate`: the shipped `heart_rate` pipeline (session windows, zones, dedup, per-key
//!   watermarks) over `players` × `seconds` readings at 1 Hz, already in the log;
//! - `tumble`: the issue's `hr_1m` query (1-minute tumbling avg, min, max, count, p95 per
//!   key) over `keys` keys × `per-key` readings;
//! - `live`: `live-players` players sending one reading per second in real time for
//!   `live-seconds`, spread over the second in `live-slices` slices, with the heart_rate
//!   pipeline checkpointing every second: checkpoint duration, bytes written per
//!   checkpoint beside the state that changed, peak RSS.
//!
//! Throughput is records / (time from starting the pipeline to its drained output being
//! committed: Parquet files published, output topic appended). The input is appended to
//! the log before the pipeline starts, so ingest is not part of it (`sluice bench pipeline`
//! measures ingest). Before each measurement, sluice's and Spark's, the machine settles
//! ([`settle`]), so neither pays for the other's write-back or exit. sluice runs
//! `--repeat` times (3) and its median counts: run-to-run spread on a shared VM is ±25%.
//! Spark runs as many times in one session; its first run (fresh JVM) and the median of the
//! later, warm runs are both compared, since a warm Spark is about twice as fast.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sluice_core::partitioner::partition_for_key;
use sluice_log::NewRecord;
use sluice_server::config::{self, Config};
use sluice_server::Server;
use sluice_stream::pipeline::PipelineSpec;

#[derive(Args, Clone)]
pub struct PipelinesArgs {
    /// `all` (each scenario in its own process), `heart-rate`, `tumble` or `live`.
    #[arg(long, default_value = "all")]
    pub scenario: String,
    /// heart-rate: players.
    #[arg(long, default_value_t = 200)]
    pub players: usize,
    /// heart-rate: seconds of readings per player (1 Hz).
    #[arg(long, default_value_t = 10_000)]
    pub seconds: usize,
    /// tumble: keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: usize,
    /// tumble: readings per key (1 Hz).
    #[arg(long, default_value_t = 30)]
    pub per_key: usize,
    /// live: players sending one reading per second.
    #[arg(long, default_value_t = 100_000)]
    pub live_players: usize,
    /// live: each second's readings are sent in this many slices, evenly spaced (player p
    /// in slice p % N); 1 sends every player's reading at the same instant.
    #[arg(long, default_value_t = 10)]
    pub live_slices: usize,
    /// live: seconds to run.
    #[arg(long, default_value_t = 30)]
    pub live_seconds: usize,
    /// Checkpoint interval, ms (the default is the shipped one).
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_interval_ms: u64,
    /// A Python that can import pyspark (Spark runs the same queries on the same input).
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Skip Spark.
    #[arg(long)]
    pub no_spark: bool,
    /// heart-rate and tumble: runs per side (sluice on fresh data directories, Spark in one
    /// session: the first on a fresh JVM, the rest warm).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Scratch directory (default: a new directory under the system temp dir, removed after).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the data directory after the run (to inspect its log and state files).
    #[arg(long)]
    pub keep_data: bool,
}

/// Event time of the first generated reading, epoch ms (a minute boundary).
const BASE_MS: i64 = 1_700_000_040_000;

/// Total and idle CPU jiffies from `/proc/stat` (all cores).
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((v.iter().take(8).sum(), idle))
}

/// Waits until the machine is quiet before a measurement: dirty pages written back
/// (`sync`) and the CPUs at least 85% idle over a second, for at most 60 s. The peer
/// that ran just before (a Spark JVM exiting, its output still being written back) would
/// otherwise be measured too. Prints how long it waited.
fn settle() {
    let t0 = Instant::now();
    let _ = Command::new("sync").status();
    let mut prev = cpu_jiffies();
    while t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_jiffies();
        if let (Some((t1, i1)), Some((t2, i2))) = (prev, now) {
            if t2 > t1 && (i2 - i1) as f64 / (t2 - t1) as f64 >= 0.85 {
                eprintln!("  machine settled in {:.1} s (sync, CPUs 85% idle)", t0.elapsed().as_secs_f64());
                return;
            }
        }
        prev = now;
    }
    eprintln!("  the CPUs were still busy after 60 s (another process?); measuring anyway, so expect lower figures");
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A reading of player `p` at second `s`: a heart rate that wanders through every zone.
fn reading(p: usize, s: usize, players_prefix: &str) -> (String, Vec<u8>) {
    let id = format!("{players_prefix}{p}");
    let phase = (s as f64 / 60.0 + p as f64 * 0.37).sin();
    let bpm = (120.0 + 55.0 * phase + ((s * 7 + p * 13) % 11) as f64).round();
    let v = format!("{{\"playerId\":\"{id}\",\"heartbeat\":{bpm},\"createdAt\":{}}}", BASE_MS + s as i64 * 1000);
    (id, v.into_bytes())
}

/// Appends records to one partition of a topic and waits until they are durable.
fn append(topic: &sluice_log::Topic, partition: usize, records: &[NewRecord]) -> anyhow::Result<()> {
    let part = topic.partition(partition as u32)?;
    let info = part.write(records, sluice_core::time::now_ms())?;
    part.complete(&info)?;
    Ok(())
}

/// Appends readings (seconds outer, players inner, as devices send them) to the topic and
/// writes the same records as NDJSON for Spark (plus one far-future event). Returns the count.
fn generate(server: &Server, players: usize, seconds: usize, prefix: &str, ndjson: Option<&Path>) -> anyhow::Result<u64> {
    let topic = server.log().topic("heartbeat-raw-topic").context("the heartbeat topic is missing")?;
    let parts = topic.partition_count();
    let mut out = match ndjson {
        Some(p) => {
            std::fs::create_dir_all(p)?;
            Some(std::io::BufWriter::new(std::fs::File::create(p.join("part-00000.json"))?))
        }
        None => None,
    };
    let mut pending: Vec<Vec<NewRecord>> = (0..parts).map(|_| Vec::new()).collect();
    let mut n = 0u64;
    let flush = |pending: &mut Vec<Vec<NewRecord>>, force: bool| -> anyhow::Result<()> {
        for (p, recs) in pending.iter_mut().enumerate() {
            if !recs.is_empty() && (force || recs.len() >= 2_000) {
                append(&topic, p, recs)?;
                recs.clear();
            }
        }
        Ok(())
    };
    for s in 0..seconds {
        for p in 0..players {
            let (id, v) = reading(p, s, prefix);
            if let Some(o) = out.as_mut() {
                o.write_all(&v)?;
                o.write_all(b"\n")?;
            }
            pending[partition_for_key(id.as_bytes(), parts) as usize].push(NewRecord::new(Some(id.into_bytes()), v));
            n += 1;
        }
        flush(&mut pending, false)?;
    }
    flush(&mut pending, true)?;
    if let Some(mut o) = out {
        writeln!(o, "{{\"playerId\":\"end\",\"heartbeat\":60,\"createdAt\":{}}}", BASE_MS + 400_000_000)?;
        o.flush()?;
    }
    Ok(n)
}

fn bench_config(dir: &Path, checkpoint_interval_ms: u64) -> anyhow::Result<Config> {
    let mut c = config::load(None, std::iter::empty(), &[])?;
    c.stream.checkpoint_interval_ms = checkpoint_interval_ms;
    c.data_dir = dir.to_path_buf();
    c.http.addr = "127.0.0.1:0".into();
    c.kafka.enabled = false;
    c.stream.idle_timeout_ms = 0;
    c.pipelines.clear();
    Ok(c)
}

fn heart_rate_spec() -> anyhow::Result<PipelineSpec> {
    let c = config::load(None, std::iter::empty(), &[])?;
    c.pipelines.into_iter().find(|p| p.name == "heart_rate").context("the default configuration has no heart_rate pipeline")
}

const TUMBLE_SQL: &str = r#"SELECT "playerId", window_start, window_end,
       avg(heartbeat) AS avg_hr, min(heartbeat) AS min_hr, max(heartbeat) AS max_hr,
       count(*) AS n, approx_percentile_cont(heartbeat, 0.95) AS p95_hr
FROM TUMBLE("heartbeat-raw-topic", "createdAt", INTERVAL '1' MINUTE)
GROUP BY "playerId", window_start, window_end"#;

/// Runs Spark's peer query `repeat` times in one Spark session; one JSON object per run,
/// empty when pyspark is not available.
fn spark(args: &PipelinesArgs, scenario: &str, input: &Path, out: &Path) -> Vec<serde_json::Value> {
    if args.no_spark {
        return Vec::new();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/spark/pipelines.py");
    eprintln!("  spark: running the same query {} times with {} ...", args.repeat, args.python);
    let o = match Command::new(&args.python).arg(&script).arg(scenario).arg(input).arg(out).arg(args.repeat.to_string()).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("  spark did not run ({e}); install pyspark 4.3.0 and Java 17, or pass --no-spark");
            return Vec::new();
        }
    };
    if !o.status.success() {
        eprintln!("  spark did not run ({}); install pyspark 4.3.0 and Java 17, or pass --no-spark", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""));
        return Vec::new();
    }
    String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The median of some rates (the lower middle one for an even count); 0 for none.
fn median(rates: &[f64]) -> f64 {
    let mut v = rates.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

/// One sluice run on a fresh data directory: generate the input into the log (and, when
/// `ndjson` is given, for Spark), settle, then time the pipeline from creation to drained.
/// Returns (events, seconds, committed rows).
async fn sluice_once(args: &PipelinesArgs, scenario: &str, dir: &Path, ndjson: Option<&Path>) -> anyhow::Result<(u64, f64, u64)> {
    let server = Server::start(bench_config(dir, args.checkpoint_interval_ms)?).await?;
    let t0 = Instant::now();
    let (spec, n) = match scenario {
        "heart-rate" => (heart_rate_spec()?, generate(&server, args.players, args.seconds, "player-", ndjson)?),
        _ => (PipelineSpec::new("hr_1m", TUMBLE_SQL), generate(&server, args.keys, args.per_key, "key-", ndjson)?),
    };
    eprintln!("  generated {n} readings in {:.1} s", t0.elapsed().as_secs_f64());
    tokio::task::spawn_blocking(settle).await?;
    let pipelines = server.pipelines().clone();
    let name = spec.name.clone();
    let started = Instant::now();
    let p2 = pipelines.clone();
    tokio::task::spawn_blocking(move || p2.create(spec).map(|_| ()).map_err(|e| anyhow::anyhow!("{e}"))).await??;
    eprintln!("  created in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    let p3 = pipelines.clone();
    let n2 = name.clone();
    tokio::task::spawn_blocking(move || p3.drain(&n2).map(|_| ()).map_err(|e| anyhow::anyhow!("{e}"))).await??;
    let secs = started.elapsed().as_secs_f64();
    let view = pipelines.engine.as_ref().and_then(|e| e.pipeline(&name)).context("the pipeline vanished")?;
    let rows = view.status.output_rows.load(Ordering::Relaxed);
    server.shutdown().await?;
    Ok((n, secs, rows))
}

/// A throughput scenario: `repeat` sluice runs, each on a fresh data directory, then
/// Spark's `repeat` runs in one session. sluice's median events/s is compared with Spark's
/// first run (a fresh JVM: what a one-batch job costs, as the issue measured Spark) and with
/// the median of its later, warm runs.
async fn throughput(args: &PipelinesArgs, scenario: &str, dir: &Path) -> anyhow::Result<()> {
    let input = dir.join("input");
    let repeat = args.repeat.max(1);
    let mut ours = Vec::new();
    for r in 0..repeat {
        let run_dir = dir.join(format!("sluice-{r}"));
        let (n, secs, rows) = sluice_once(args, scenario, &run_dir, (r == 0).then_some(input.as_path())).await?;
        println!("{scenario}: sluice  run {}/{repeat}: {n} events in {secs:.2} s = {:.0} events/s; {rows} rows committed", r + 1, n as f64 / secs);
        ours.push(n as f64 / secs);
        if !args.keep_data {
            let _ = std::fs::remove_dir_all(&run_dir);
        }
    }
    let ours_median = median(&ours);
    let rss = peak_rss_mb();
    println!("{scenario}: sluice  median {ours_median:.0} events/s over {repeat} runs (min {:.0}, max {:.0}); peak RSS {rss:.0} MB", ours.iter().copied().fold(f64::INFINITY, f64::min), ours.iter().copied().fold(0.0, f64::max));
    tokio::task::spawn_blocking(settle).await?;
    let runs = spark(args, scenario, &input, &dir.join("spark"));
    if runs.is_empty() {
        eprintln!("  no Spark figures");
        return Ok(());
    }
    let mut rates = Vec::new();
    for (r, s) in runs.iter().enumerate() {
        let rate = s["events_per_s"].as_f64().unwrap_or(0.0);
        let jvm = if r == 0 { "cold JVM" } else { "warm JVM" };
        println!("{scenario}: spark   run {}/{} ({jvm}): {} events in {:.2} s = {rate:.0} events/s; {} rows", r + 1, runs.len(), s["events"], s["seconds"].as_f64().unwrap_or(0.0), s["rows"]);
        rates.push(rate);
    }
    let cold = rates[0];
    println!("{scenario}: sluice/spark = {:.1}x against Spark's first run (a one-batch job on a fresh JVM, as the issue measured it)", ours_median / cold.max(1e-9));
    if rates.len() > 1 {
        let warm = median(&rates[1..]);
        println!("{scenario}: sluice/spark = {:.1}x against the median of Spark's later runs in the same session ({warm:.0} events/s, JIT-compiled and cached)", ours_median / warm.max(1e-9));
    }
    Ok(())
}

async fn live(args: &PipelinesArgs, dir: &Path) -> anyhow::Result<()> {
    let mut config = bench_config(&dir.join("sluice"), args.checkpoint_interval_ms)?;
    config.pipelines = vec![heart_rate_spec()?];
    tokio::task::spawn_blocking(settle).await?;
    let server = Server::start(config).await?;
    let topic = server.log().topic("heartbeat-raw-topic").context("the heartbeat topic is missing")?;
    let parts = topic.partition_count();
    let start = Instant::now();
    let mut sent = 0u64;
    let slices = args.live_slices.max(1);
    for s in 0..args.live_seconds {
        // Player p sends at `p % slices` slices into each second, as devices that are not
        // in lockstep do.
        for j in 0..slices {
            let tick = start + Duration::from_millis((s * 1000 + j * 1000 / slices) as u64);
            if let Some(wait) = tick.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            let mut per: Vec<Vec<NewRecord>> = (0..parts).map(|_| Vec::new()).collect();
            for p in (j..args.live_players).step_by(slices) {
                let (id, v) = reading(p, s, "live-");
                per[partition_for_key(id.as_bytes(), parts) as usize].push(NewRecord::new(Some(id.into_bytes()), v));
            }
            for (p, recs) in per.into_iter().enumerate() {
                if !recs.is_empty() {
                    append(&topic, p, &recs)?;
                    sent += recs.len() as u64;
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let engine = server.pipelines().engine.as_ref().context("no engine")?;
    let history = engine.checkpoint_history();
    let view = engine.pipeline("heart_rate").context("no heart_rate pipeline")?;
    let lag = server.pipelines().lag(&view);
    let mut durations: Vec<f64> = history.iter().map(|c| c.duration_ms).collect();
    durations.sort_by(f64::total_cmp);
    let pct = |q: f64| durations.get(((durations.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(0.0);
    let busy: Vec<_> = history.iter().filter(|c| c.written_bytes > 0).collect();
    let avg_written = busy.iter().map(|c| c.written_bytes).sum::<u64>() as f64 / busy.len().max(1) as f64;
    let avg_changed = busy.iter().map(|c| c.changed_keys).sum::<u64>() as f64 / busy.len().max(1) as f64;
    let keys = view.status.keys.load(Ordering::Relaxed);
    // Read before the full snapshot below, which this benchmark builds in memory to measure.
    let peak_rss = peak_rss_mb();
    // The whole state, written once: a full snapshot of every key.
    let full = full_state_bytes(&server, "heart_rate")?;
    let changed_state = full as f64 * avg_changed / keys.max(1) as f64;
    println!(
        "live: {} players x 1 reading/s for {} s ({sent} readings), lag at the end {lag}; {} checkpoints: duration p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.live_players,
        args.live_seconds,
        history.len(),
        pct(0.5),
        pct(0.99),
        durations.last().copied().unwrap_or(0.0)
    );
    let in_order: Vec<String> = history.iter().map(|c| format!("{:.0}", c.duration_ms)).collect();
    println!("live: checkpoint durations in order, ms: {}", in_order.join(" "));
    let barriers: Vec<String> = history.iter().map(|c| format!("{:.0}", c.barrier_ms)).collect();
    println!("live: of which until the pipeline answered the barrier (state written and synced), ms: {}", barriers.join(" "));
    println!(
        "live: per checkpoint {:.1} MB written for {avg_changed:.0} of {keys} keys; the whole state is {:.1} MB, so the changed keys' state is {:.1} MB: written / changed = {:.2}; open windows {}, peak RSS {:.0} MB",
        avg_written / 1e6,
        full as f64 / 1e6,
        changed_state / 1e6,
        avg_written / changed_state.max(1.0),
        view.status.open_windows.load(Ordering::Relaxed),
        peak_rss
    );
    server.shutdown().await?;
    Ok(())
}

/// Bytes of a full snapshot of a pipeline's state: its latest state files merged (what a
/// checkpoint would write if every key had changed).
fn full_state_bytes(server: &Server, pipeline: &str) -> anyhow::Result<u64> {
    let dir = server.data_dir().join("checkpoints");
    let store = sluice_stream::checkpoint::CheckpointStore::open(&dir)?;
    let Some(m) = store.latest()? else { return Ok(0) };
    let Some(cp) = m.pipelines.get(pipeline) else { return Ok(0) };
    let mut total = 0;
    for (i, files) in cp.operators.iter().enumerate() {
        let paths: Vec<PathBuf> = files.all().map(|f| dir.join(f)).collect();
        if paths.is_empty() {
            continue;
        }
        let merged = sluice_stream::state::compact(&paths)?;
        if !merged.is_empty() {
            total += sluice_stream::state::write_file(&dir.join(format!("bench-full-{i}.arrow")), &merged)?;
        }
    }
    Ok(total)
}

pub async fn run(args: PipelinesArgs) -> anyhow::Result<()> {
    let scratch = args.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("sluice-bench-pipelines-{}", std::process::id())));
    if args.scenario == "all" {
        for scenario in ["heart-rate", "tumble", "live"] {
            eprintln!("== {scenario}");
            let exe = std::env::current_exe()?;
            let mut cmd = Command::new(exe);
            cmd.args(["bench", "pipelines", "--scenario", scenario, "--python", &args.python]);
            for (flag, v) in [("--players", args.players), ("--seconds", args.seconds), ("--keys", args.keys), ("--per-key", args.per_key), ("--live-players", args.live_players), ("--live-seconds", args.live_seconds), ("--live-slices", args.live_slices), ("--checkpoint-interval-ms", args.checkpoint_interval_ms as usize), ("--repeat", args.repeat)] {
                cmd.args([flag, &v.to_string()]);
            }
            if args.no_spark {
                cmd.arg("--no-spark");
            }
            if args.keep_data {
                cmd.arg("--keep-data");
            }
            cmd.args(["--data-dir", &scratch.join(scenario).display().to_string()]);
            let status = cmd.status()?;
            anyhow::ensure!(status.success(), "scenario {scenario} failed");
        }
        if !args.keep_data {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        return Ok(());
    }
    if scratch.exists() {
        anyhow::bail!("{} exists; give an empty or new --data-dir", scratch.display());
    }
    std::fs::create_dir_all(&scratch)?;
    let result = match args.scenario.as_str() {
        "heart-rate" | "tumble" => throughput(&args, &args.scenario.clone(), &scratch).await,
        "live" => live(&args, &scratch).await,
        other => Err(anyhow::anyhow!("unknown scenario {other:?}: all, heart-rate, tumble or live")),
    };
    if args.keep_data {
        eprintln!("data kept in {}", scratch.display());
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result
}

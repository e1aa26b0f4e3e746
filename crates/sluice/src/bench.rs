//! `sluice bench pipeline`: readings/s from `replay --speed 0` through the WebSocket
//! ingest, the log (acks after fsync) and the heart-rate pipeline to committed sessions, next
//! to this machine's own fdatasync rate measured in the same run.
//!
//! Load: the bundled real recordings, each replayed as `copies` players (derived data:
//! the same readings under player ids `<file stem>#<k>`).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sluice_replay::client::ReplayOptions;
use sluice_server::config::Config;
use sluice_server::Server;

#[derive(Args)]
pub struct PipelineArgs {
    /// Players per bundled recording (6 recordings: 6 × N players in all).
    #[arg(long, default_value_t = 10)]
    pub copies: usize,
    /// Readings per WebSocket frame.
    #[arg(long, default_value_t = 500)]
    pub frame_records: usize,
    /// Unacknowledged frames per connection.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Scratch directory (default: a new directory under the system temp dir, removed after).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

/// Appends `block` bytes and fdatasyncs, repeatedly, for about `for_` ; returns (syncs/s, MB/s).
pub fn fdatasync_rate(dir: &Path, block: usize, for_: Duration) -> anyhow::Result<(f64, f64)> {
    let path = dir.join(format!("fdatasync-probe-{block}"));
    let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
    let buf = vec![0x5au8; block];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_ {
        f.write_all(&buf)?;
        f.sync_data()?;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok((n as f64 / secs, n as f64 * block as f64 / secs / 1e6))
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

pub async fn pipeline(mut config: Config, args: PipelineArgs) -> anyhow::Result<()> {
    let scratch = args.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id())));
    if scratch.exists() {
        anyhow::bail!("{} exists; give an empty or new --data-dir", scratch.display());
    }
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    config.data_dir = scratch.clone();
    config.http.addr = "127.0.0.1:0".into();
    config.kafka.addr = "127.0.0.1:0".into();
    config.stream.idle_timeout_ms = 0;

    let (syncs, _) = fdatasync_rate(&scratch, 4096, Duration::from_secs(1))?;
    let (_, sync_mbs) = fdatasync_rate(&scratch, 1 << 20, Duration::from_secs(1))?;

    let mut jobs = Vec::new();
    for (name, bytes) in crate::demo::RECORDINGS {
        let readings = sluice_replay::read_bytes(name, bytes)?;
        let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
        for k in 0..args.copies {
            jobs.push((format!("{stem}#{k}"), readings.clone()));
        }
    }
    let players = jobs.len();
    let total: usize = jobs.iter().map(|(_, r)| r.len()).sum();

    let server = Server::start(config).await?;
    let opts = ReplayOptions {
        server: format!("http://{}", server.addr()),
        speed: 0.0,
        frame_records: args.frame_records,
        window: args.window,
        ..ReplayOptions::default()
    };
    let started = Instant::now();
    let stats = crate::replay::replay_all(jobs, &opts).await?;
    let acked = started.elapsed();
    server.drain_job().await?;
    let done = started.elapsed();
    let fsyncs: u64 = server.log().topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.fsync_count()).collect::<Vec<_>>()).sum();
    let sessions = server.lake().read_sessions("heart_rate")?;
    let committed: u64 = sessions.iter().map(|s| s.samples).sum();
    server.shutdown().await?;
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    anyhow::ensure!(committed as usize == total, "sessions hold {committed} readings, {total} were sent");

    let bytes: u64 = stats.iter().map(|(_, s)| s.bytes_sent).sum();
    let mut lat: Vec<u64> = stats.iter().flat_map(|(_, s)| s.ack_latency_us.iter().copied()).collect();
    lat.sort_unstable();
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!("sluice bench pipeline");
    println!("  load      {players} players ({} bundled recordings × {}; derived: same readings, ids <stem>#k), {total} readings, {:.1} MB of JSON", crate::demo::RECORDINGS.len(), args.copies, bytes as f64 / 1e6);
    println!("  machine   {} cores; fdatasync after 4 KiB appends: {syncs:.0}/s; after 1 MiB appends: {sync_mbs:.0} MB/s (same disk, same run)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("  ingest    {:>7.3} s until every reading acked   {:>9.0} readings/s  {:>6.1} MB/s", acked.as_secs_f64(), rate(acked), bytes as f64 / 1e6 / acked.as_secs_f64());
    println!("  pipeline  {:>7.3} s until every session committed {:>9.0} readings/s", done.as_secs_f64(), rate(done));
    println!("  ack latency per frame of {} readings: p50 {:.1} ms, p99 {:.1} ms ({} frames)", args.frame_records, percentile(&lat, 0.5), percentile(&lat, 0.99), lat.len());
    println!("  log       {fsyncs} fdatasyncs ({:.0} readings per fsync: group commit)", total as f64 / fsyncs.max(1) as f64);
    println!("  memory    peak RSS {:.0} MB", peak_rss_mb());
    println!("  check     {} sessions hold all {committed} readings", sessions.len());
    Ok(())
}

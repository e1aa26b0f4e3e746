//! `sluice bench log`: durable append and scan throughput of the embedded log, beside
//! the disk's own sequential fdatasync bandwidth measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use sluice_log::{Log, LogConfig, NewRecord};


#[derive(Args)]
pub struct LogArgs {
    /// Seconds per append measurement.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Records per append (one batch, one group-committed fsync).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Also measure restart: write this many GiB of 1 KiB records (1 GiB segments), then time
    /// opening the log after a clean shutdown and after a crash. 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub restart_gib: u64,
    /// Scratch directory (default: a new directory under the system temp dir, removed after).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

struct Row {
    size: usize,
    writers: usize,
    records: u64,
    secs: f64,
    fsyncs: u64,
    /// The disk's sequential fdatasync bandwidth measured just before this row, MB/s.
    disk_mbs: f64,
}

fn append_run(log: &Log, topic: &str, size: usize, writers: usize, batch: usize, for_: Duration) -> anyhow::Result<Row> {
    let t = log.create_topic(topic, 1)?;
    let p = t.partition(0)?.clone();
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let p = p.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let records: Vec<NewRecord> =
                    (0..batch).map(|i| NewRecord::new(Some(format!("k{w}-{i}").into_bytes()), vec![(i % 251) as u8; size])).collect();
                let mut n = 0u64;
                while start.elapsed() < for_ {
                    p.append(&records, 0)?;
                    n += records.len() as u64;
                }
                Ok(n)
            })
        })
        .collect();
    let mut records = 0;
    for h in handles {
        records += h.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    Ok(Row { size, writers, records, secs: start.elapsed().as_secs_f64(), fsyncs: p.fsync_count(), disk_mbs: 0.0 })
}

pub fn run(args: LogArgs) -> anyhow::Result<()> {
    let scratch = args.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("sluice-bench-log-{}", std::process::id())));
    anyhow::ensure!(!scratch.exists(), "{} exists; give an empty or new --data-dir", scratch.display());
    std::fs::create_dir_all(&scratch)?;
    let log = Arc::new(Log::open(&scratch.join("log"), LogConfig::default())?);
    let for_ = Duration::from_secs(args.seconds);
    let mut rows = Vec::new();
    for size in [100usize, 1024] {
        for writers in [1usize, 8] {
            // The disk's own bandwidth, measured right before and for as long as the row.
            let (_, disk_mbs) = crate::bench::fdatasync_rate(&scratch, 1 << 20, for_)?;
            let mut row = append_run(&log, &format!("bench-{size}-{writers}"), size, writers, args.batch, for_)?;
            row.disk_mbs = disk_mbs;
            rows.push(row);
        }
    }
    println!("sluice bench log  (batches of {} records, fsync group commit, 1 partition, 1 GiB segments)", args.batch);
    println!("  disk = sequential 1 MiB appends + fdatasync in the same directory, measured right before each row for as long");
    println!("  {:>6} {:>8} {:>14} {:>10} {:>11} {:>12} {:>10}", "record", "writers", "records/s", "MB/s", "disk MB/s", "% of disk", "batch/fsync");
    for r in &rows {
        let mbs = r.records as f64 * r.size as f64 / r.secs / 1e6;
        println!(
            "  {:>5}B {:>8} {:>14.0} {:>10.1} {:>11.0} {:>11.0}% {:>10.1}",
            r.size,
            r.writers,
            r.records as f64 / r.secs,
            mbs,
            r.disk_mbs,
            100.0 * mbs / r.disk_mbs,
            r.records as f64 / args.batch as f64 / r.fsyncs.max(1) as f64
        );
    }
    // Full scan of the largest partition written.
    let t = log.topic("bench-1024-8").ok_or_else(|| anyhow::anyhow!("bench topic missing"))?;
    let p = t.partition(0)?.clone();
    let hw = p.high_watermark();
    let start = Instant::now();
    let (mut offset, mut bytes) = (0u64, 0u64);
    while offset < hw {
        let recs = p.read(offset, 100_000, 16 << 20)?;
        let Some(last) = recs.last() else { break };
        offset = last.offset + 1;
        bytes += recs.iter().map(|r| r.value.len() as u64).sum::<u64>();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("  scan: {hw} records of 1 KiB in {secs:.2} s: {:.0} records/s, {:.0} MB/s (page cache warm)", hw as f64 / secs, bytes as f64 / secs / 1e6);
    drop(log);
    if args.restart_gib > 0 {
        restart(&scratch.join("restart"), args.restart_gib)?;
    }
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(())
}

fn restart(dir: &std::path::Path, gib: u64) -> anyhow::Result<()> {
    let records: Vec<NewRecord> = (0..1000).map(|i| NewRecord::new(None, vec![(i % 251) as u8; 1024])).collect();
    // Just under N GiB, so the active segment is nearly full (1 GiB): the worst case for a crash.
    let target = (gib << 30) - (16 << 20);
    let pb = indicatif::ProgressBar::new(target);
    let write_start = Instant::now();
    {
        let log = Log::open(dir, LogConfig::default())?;
        let p = log.create_topic("restart", 1)?.partition(0)?.clone();
        while p.size_bytes() < target {
            p.append(&records, 0)?;
            pb.set_position(p.size_bytes());
        }
        log.close()?;
    }
    pb.finish_and_clear();
    let written = write_start.elapsed().as_secs_f64();
    let t = Instant::now();
    let log = Log::open(dir, LogConfig::default())?;
    let clean = t.elapsed();
    let p = log.topic("restart").ok_or_else(|| anyhow::anyhow!("restart topic missing"))?.partition(0)?.clone();
    let (size, segments, hw) = (p.size_bytes(), p.segment_count(), p.high_watermark());
    // A crash: the active segment grows past its clean-shutdown index, and nobody closes the log.
    p.append(&records, 0)?;
    drop(p);
    drop(log);
    let active_bytes = std::fs::read_dir(dir.join("restart-0"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| e.metadata().ok().map(|m| (e.path(), m.len())))
        .max_by_key(|(path, _)| path.clone())
        .map_or(0, |(_, len)| len);
    let t = Instant::now();
    let log = Log::open(dir, LogConfig::default())?;
    let crashed = t.elapsed();
    drop(log);
    println!("  restart: {:.1} GiB log ({segments} segments, {hw} records, written in {written:.1} s)", size as f64 / (1u64 << 30) as f64);
    println!("    after a clean shutdown: ready in {:.3} s (every segment loads from its index)", clean.as_secs_f64());
    println!("    after a crash:          ready in {:.3} s (the active segment, {:.0} MB, is scanned and CRC-checked)", crashed.as_secs_f64(), active_bytes as f64 / 1e6);
    Ok(())
}

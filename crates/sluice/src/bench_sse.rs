//! `sluice bench sse-latency`: ingest ack → SSE delivery of the updated aggregate, under
//! background load, against a running server (the Rust twin of `bench/sse_latency.py`,
//! whose Python load generator took most of a core at 100k readings/s).
//!
//! - A probe player sends one reading every `--probe-ms` over HTTP and notes when each is
//!   acknowledged (the server acks after fsync).
//! - A listener on `/v1/sessions/stream?player=<probe>` (a player page's stream; with
//!   `--all-players`, every player's, as the players page) notes when the probe's open
//!   session first counts that many readings. The difference is the latency a
//!   dashboard sees.
//! - Meanwhile `--rate` readings/s from `--players` other players go in as NDJSON bodies,
//!   100 a second, from `--loaders` threads.
//!
//! Prints p50/p99/max latency, the load achieved, the server's RSS (with `--pid`) and this
//! process's CPU time, so the generator's own share of the 2 cores is visible.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

const TOPIC: &str = "heartbeat-raw-topic";

#[derive(Args)]
pub struct SseLatencyArgs {
    /// The server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Background readings/s.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Background players.
    #[arg(long, default_value_t = 1000)]
    pub players: u64,
    /// How long to measure, s.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// One probe reading this often, ms.
    #[arg(long, default_value_t = 100)]
    pub probe_ms: u64,
    /// Threads sending the background load.
    #[arg(long, default_value_t = 1)]
    pub loaders: u64,
    /// The server's pid, for its RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Follow every player's updates (`/v1/sessions/stream`, as the players page does), not
    /// only the probe's (`?player=`, as a player page does).
    #[arg(long)]
    pub all_players: bool,
    /// With `--all-players`: ask the server to merge updates per player over this many ms
    /// (`?merge_ms=`, as the players page does with 250); 0: every update.
    #[arg(long, default_value_t = 0)]
    pub merge_ms: u64,
    /// Names this run's players `load-<run>-<i>` and the probe `probe-<run>` (default: the
    /// time in seconds, so no reading is late behind an earlier run's).
    #[arg(long)]
    pub run: Option<String>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into()
}

/// Sends `rate` readings/s as 100 NDJSON bodies a second, as players `load-<run>-<i>`,
/// each one's readings 1 s apart in event time.
fn load(url: String, rate: u64, players: u64, first: u64, step: u64, until: Instant, start_ms: i64, run: String, sent: Arc<AtomicU64>) {
    let agent = agent();
    let per_tick = (rate / 100).max(1);
    let t0 = Instant::now();
    let mut n = first;
    let mut tick = 0u32;
    let mut body = String::new();
    while Instant::now() < until {
        body.clear();
        for _ in 0..per_tick {
            let (p, k) = (n % players, n / players);
            body.push_str(&format!("{{\"playerId\":\"load-{run}-{p}\",\"heartbeat\":{},\"createdAt\":{}}}\n", 90 + (n * 7) % 90, start_ms + k as i64 * 1000));
            n += step;
        }
        let ok = agent.post(&format!("{url}/v1/topics/{TOPIC}/records")).header("Content-Type", "application/x-ndjson").send(body.as_str()).map(|r| r.status() == 200);
        if ok.unwrap_or(false) {
            sent.fetch_add(per_tick, Ordering::Relaxed);
        }
        tick += 1;
        if let Some(wait) = (t0 + Duration::from_millis(10) * tick).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Follows the sessions stream; notes when the probe's open session first has n readings.
fn listen(url: String, probe: String, all: Option<u64>, seen: Arc<Mutex<HashMap<u64, Instant>>>, ready: Arc<AtomicBool>) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let path = match all {
        Some(merge_ms) => format!("/v1/sessions/stream?merge_ms={merge_ms}"),
        None => format!("/v1/sessions/stream?player={probe}"),
    };
    let resp = agent.get(&format!("{url}{path}")).call().context("GET /v1/sessions/stream")?;
    if resp.status() != 200 {
        bail!("GET /v1/sessions/stream: {}", resp.status());
    }
    ready.store(true, Ordering::Release);
    let needle = format!("\"player_id\":\"{probe}\"");
    let mut reader = BufReader::new(resp.into_body().into_reader());
    let mut line = String::new();
    let mut event = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_string();
        } else if let Some(data) = line.strip_prefix("data:") {
            // Only the probe's updates are parsed.
            if event != "session_update" || !data.contains(&needle) {
                continue;
            }
            let now = Instant::now();
            let v: serde_json::Value = serde_json::from_str(data.trim())?;
            let samples = v["open"].as_array().and_then(|o| o.last()).and_then(|s| s["samples"].as_u64()).unwrap_or(0);
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            for i in 1..=samples {
                seen.entry(i).or_insert(now);
            }
        }
    }
}

fn rss_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<f64>().ok().map(|kb| kb / 1024.0)
}

/// This process's user + system CPU time, s.
fn cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

pub fn run(a: SseLatencyArgs) -> anyhow::Result<()> {
    let url = a.url.trim_end_matches('/').to_string();
    let now_ms = chrono::Utc::now().timestamp_millis();
    // Players are new in each run, so no reading is late behind an earlier run's.
    let run = a.run.clone().unwrap_or_else(|| format!("{}", now_ms / 1000));
    let probe = format!("probe-{run}");
    let start_ms = now_ms / 60_000 * 60_000 - 3_600_000;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let ready = Arc::new(AtomicBool::new(false));
    {
        let (url, probe, seen, ready, all) = (url.clone(), probe.clone(), seen.clone(), ready.clone(), a.all_players.then_some(a.merge_ms));
        std::thread::spawn(move || {
            if let Err(e) = listen(url, probe, all, seen, ready) {
                eprintln!("listener: {e:#}");
            }
        });
    }
    let wait_from = Instant::now();
    while !ready.load(Ordering::Acquire) {
        if wait_from.elapsed() > Duration::from_secs(10) {
            bail!("no answer from {url}/v1/sessions/stream; is `sluice serve` running there?");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(a.seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let loaders = a.loaders.max(1);
    let mut threads = Vec::new();
    if a.rate > 0 {
        for i in 0..loaders {
            let (url, sent) = (url.clone(), sent.clone());
            let (rate, players) = (a.rate / loaders, a.players.max(1));
            let run = run.clone();
            threads.push(std::thread::spawn(move || load(url, rate, players, i, loaders, until, start_ms, run, sent)));
        }
    }
    let agent = agent();
    let mut acked = HashMap::new();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let body = serde_json::json!({"playerId": probe, "heartbeat": 120, "createdAt": start_ms + n as i64 * 1000}).to_string();
        let r = agent.post(&format!("{url}/v1/topics/{TOPIC}/records")).header("Content-Type", "application/json").send(body.as_str())?;
        acked.insert(n, Instant::now());
        if r.status() != 200 {
            bail!("probe reading {n}: HTTP {}", r.status());
        }
        if let Some(wait) = (t0 + Duration::from_millis(a.probe_ms) * n as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    let cpu = cpu_seconds() - cpu0;
    std::thread::sleep(Duration::from_secs(2));
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut lat: Vec<f64> = acked.iter().filter_map(|(i, at)| seen.get(i).map(|s| s.saturating_duration_since(*at).as_secs_f64() * 1e3)).collect();
    lat.sort_by(f64::total_cmp);
    if lat.is_empty() {
        bail!("no probe reading reached the stream");
    }
    let q = |p: f64| lat[((p * (lat.len() - 1) as f64).round() as usize).min(lat.len() - 1)];
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    println!(
        "load {:.0} readings/s from {} players (target {}); {} probe readings, {} not seen",
        sent.load(Ordering::Relaxed) as f64 / elapsed,
        a.players,
        a.rate,
        lat.len(),
        acked.len() - lat.len()
    );
    println!("ack -> SSE session_update: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms", q(0.5), q(0.99), lat[lat.len() - 1], mean);
    println!("generator CPU {:.0} % of one core", cpu / elapsed * 100.0);
    if let Some(mb) = a.pid.and_then(rss_mb) {
        println!("server RSS {mb:.0} MB");
    }
    Ok(())
}

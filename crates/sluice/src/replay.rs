//! `sluice replay`: recordings → readings → WebSocket, with a progress bar per file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sluice_replay::client::{replay, ReplayOptions, ReplayStats};

#[derive(Args)]
pub struct ReplayArgs {
    /// Recordings to send (.fit, .tcx, .gpx); each is one player's stream.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Real time × N; 0 sends as fast as acknowledgements allow.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API token for a server with `[auth] enabled` (operator role or above); best given
    /// in the environment, where other users' `ps` cannot see it.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Player id for the readings (default: each file's name without extension).
    #[arg(long)]
    pub player: Option<String>,
    /// Topic to send to.
    #[arg(long, default_value = "heartbeat-raw-topic")]
    pub topic: String,
    /// Keep trying to (re)connect for this many seconds before giving up.
    #[arg(long, default_value_t = 30)]
    pub retry_secs: u64,
}

pub fn bar(multi: &MultiProgress, name: &str) -> ProgressBar {
    let pb = multi.add(ProgressBar::new(0));
    let style = ProgressStyle::with_template("{prefix:>36} [{bar:30}] {pos}/{len} readings {per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(name.to_string());
    pb
}

/// Replays `(player, readings)` pairs concurrently; returns each one's stats.
pub async fn replay_all(jobs: Vec<(String, Vec<sluice_replay::Reading>)>, opts: &ReplayOptions) -> anyhow::Result<Vec<(String, ReplayStats)>> {
    let multi = MultiProgress::new();
    // One bar per player, or one for all when there are many.
    let shared = (jobs.len() > 8).then(|| bar(&multi, &format!("{} players", jobs.len())));
    let tasks = jobs.into_iter().map(|(player, readings)| {
        let pb = shared.clone().unwrap_or_else(|| bar(&multi, &player));
        let opts = opts.clone();
        async move {
            let stats = replay(&player, &readings, &opts, &pb).await.with_context(|| format!("replaying {player}"))?;
            if pb.position() == pb.length().unwrap_or(0) {
                pb.finish();
            }
            anyhow::Ok((player, stats))
        }
    });
    futures_util::future::try_join_all(tasks).await
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    if args.player.is_some() && args.files.len() > 1 {
        anyhow::bail!("--player names one player; give one file with it, or drop it to use each file's name");
    }
    let mut jobs = Vec::new();
    for f in &args.files {
        let readings = sluice_replay::read_file(f)?;
        let player = args.player.clone().unwrap_or_else(|| f.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default());
        jobs.push((player, readings));
    }
    let opts = ReplayOptions { server: args.server, topic: args.topic, speed: args.speed, retry_secs: args.retry_secs, token: args.token, ..ReplayOptions::default() };
    for (player, s) in replay_all(jobs, &opts).await? {
        println!(
            "{player}: {} readings, {} accepted, {} rejected, in {:.2} s ({:.0} readings/s)",
            s.readings, s.accepted, s.rejected, s.elapsed.as_secs_f64(), s.readings as f64 / s.elapsed.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}

//! `sluice demo`: the flagship pipeline end to end on the bundled real recordings
//! (examples/data, embedded in the binary): server → WebSocket replay → log → pipeline →
//! lake → table and dashboard.

use std::time::Instant;

use anyhow::Context;
use sluice_core::model::SessionSummary;
use sluice_core::time::format_ms;
use sluice_replay::client::ReplayOptions;
use sluice_server::{config::Config, Server};

/// The bundled recordings: (file name, bytes). Sources and licence: examples/data/README.md.
pub const RECORDINGS: [(&str, &[u8]); 6] = [
    ("20210119_run_garmin_fenix6.tcx", include_bytes!("../../../examples/data/20210119_run_garmin_fenix6.tcx")),
    ("20210308_virtual_ride_with_power.tcx", include_bytes!("../../../examples/data/20210308_virtual_ride_with_power.tcx")),
    ("20210323_yoga.tcx", include_bytes!("../../../examples/data/20210323_yoga.tcx")),
    ("hrv-activity.fit", include_bytes!("../../../examples/data/hrv-activity.fit")),
    ("sample_mulitple_header.fit", include_bytes!("../../../examples/data/sample_mulitple_header.fit")),
    ("garmin-fenix-5-bike.fit", include_bytes!("../../../examples/data/garmin-fenix-5-bike.fit")),
];

pub async fn run(mut config: Config, speed: f64, exit: bool) -> anyhow::Result<()> {
    // The demo needs no fixed Kafka port (and must not clash with a broker on 9092).
    config.kafka.addr = "127.0.0.1:0".into();
    let server = Server::start(config).await?;
    let url = format!("http://{}", server.addr());
    eprintln!("sluice demo: server on {url}; replaying {} real Garmin recordings (speed {speed})", RECORDINGS.len());
    let mut jobs = Vec::new();
    for (name, bytes) in RECORDINGS {
        let readings = sluice_replay::read_bytes(name, bytes)?;
        let player = name.rsplit_once('.').map_or(name, |(stem, _)| stem).to_string();
        jobs.push((player, readings));
    }
    let players: Vec<String> = jobs.iter().map(|(p, _)| p.clone()).collect();
    let total: usize = jobs.iter().map(|(_, r)| r.len()).sum();
    let started = Instant::now();
    let opts = ReplayOptions { server: url.clone(), speed, ..ReplayOptions::default() };
    let stats = crate::replay::replay_all(jobs, &opts).await?;
    let acked = started.elapsed();
    server.drain_job().await.context("closing the sessions")?;
    let done = started.elapsed();
    let lake = server.lake().clone();
    let sessions: Vec<SessionSummary> = lake.read_sessions("heart_rate")?.into_iter().filter(|s| players.contains(&s.player_id)).collect();
    print_table(&sessions);
    let rejected: usize = stats.iter().map(|(_, s)| s.rejected).sum();
    println!(
        "\n{total} readings from {} recordings: acknowledged in {:.2} s, all sessions closed and committed in {:.2} s ({:.0} readings/s end to end); {rejected} rejected.",
        players.len(),
        acked.as_secs_f64(),
        done.as_secs_f64(),
        total as f64 / done.as_secs_f64().max(1e-9)
    );
    println!("Sessions table: {}heart_rate (Delta Lake, by date); dashboard: {url}/", lake.root().url());
    if !exit {
        println!("Serving the dashboard at {url}/ until Ctrl-C.");
        crate::shutdown_signal().await;
    }
    server.shutdown().await?;
    Ok(())
}

fn print_table(sessions: &[SessionSummary]) {
    println!(
        "{:<36} {:<20} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "player", "session start (UTC)", "duration", "low min", "mod min", "high min", "readings", "avg bpm"
    );
    println!("{}", "-".repeat(112));
    let min = |ms: i64| ms as f64 / 60_000.0;
    for s in sessions {
        println!(
            "{:<36} {:<20} {:>7.1} m {:>8.2} {:>8.2} {:>8.2} {:>8} {:>7.1}",
            s.player_id,
            format_ms(s.session_start_ms).replace('T', " ").chars().take(19).collect::<String>(),
            min(s.session_end_ms - s.session_start_ms),
            min(s.zones.low),
            min(s.zones.moderate),
            min(s.zones.high),
            s.samples,
            s.avg_hr
        );
    }
}

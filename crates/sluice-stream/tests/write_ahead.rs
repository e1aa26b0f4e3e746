//! State written ahead of a checkpoint (`Operator::presnapshot`: keys quiet for 100 ms are
//! appended to the next change file while input flows, each at most once per checkpoint
//! interval) resumes with the same results as one uninterrupted run, when keys change
//! again after being written ahead (a later group of rows for the key in the same file
//! replaces the earlier one) and when some do not.

mod common;

use std::time::Duration;

use arrow_array::cast::AsArray;
use serde_json::{json, Value};
use sluice_stream::engine::EngineSettings;
use sluice_stream::functions::FunctionConfig;

const BASE_MS: i64 = 1_500_000_000_000;

/// Readings of `players` at 1 Hz from second `from` to `to`, with a resend every 11 s.
fn readings(players: &[&str], from: i64, to: i64) -> Vec<(u32, Value)> {
    let mut out = Vec::new();
    for s in from..to {
        for (i, p) in players.iter().enumerate() {
            let bpm = 110.0 + i as f64 * 20.0 + ((s * 13) % 50) as f64;
            out.push((0, json!({"playerId": p, "createdAt": BASE_MS + s * 1000, "heartbeat": bpm})));
            if s % 11 == 0 {
                out.push((0, json!({"playerId": p, "createdAt": BASE_MS + s * 1000, "heartbeat": bpm})));
            }
        }
    }
    out
}

fn sessions(run: &common::Running) -> Vec<Value> {
    let mut rows = common::rows_json(&run.rows("lake:heart_rate"), BASE_MS);
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// Checkpoints only when asked (stop, drain), so state is written ahead in between.
fn settings() -> EngineSettings {
    let mut s = common::settings();
    s.checkpoint_interval_ms = 3_600_000;
    s.run.batch_records = 1000;
    s
}

/// The most groups any key has in one window-state change file.
fn most_groups_per_key(dir: &std::path::Path) -> usize {
    let mut most = 0;
    for p in common::window_state_files(dir) {
        if !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("delta-") && n.to_string_lossy().ends_with(".arrow")) {
            continue;
        }
        let mut groups = std::collections::HashMap::<Vec<u8>, usize>::new();
        for b in sluice_stream::state::read_file(&p).unwrap() {
            let keys = b.column(0).as_binary::<i32>();
            for r in 0..b.num_rows() {
                if r == 0 || keys.value(r - 1) != keys.value(r) {
                    *groups.entry(keys.value(r).to_vec()).or_default() += 1;
                }
            }
        }
        most = most.max(groups.values().copied().max().unwrap_or(0));
    }
    most
}

#[test]
fn state_written_ahead_resumes_with_the_same_results() {
    let all = ["a", "b", "c"];
    let chunks = [readings(&all, 0, 40), readings(&["a", "b"], 40, 60), readings(&["a"], 60, 70), readings(&all, 70, 100)];
    let whole = common::start_with(settings(), common::heart_rate_spec(), "heartbeat-raw-topic", sluice_core::schema::heartbeat(), 1, &chunks.concat(), &FunctionConfig::default());
    whole.wait_caught_up();
    whole.engine.drain("heart_rate").unwrap();
    let want = sessions(&whole);
    whole.engine.stop().unwrap();
    assert_eq!(want.len(), 3, "one session per player: {want:#?}");

    let run = common::start_with(settings(), common::heart_rate_spec(), "heartbeat-raw-topic", sluice_core::schema::heartbeat(), 1, &chunks[0], &FunctionConfig::default());
    for chunk in &chunks[1..3] {
        run.wait_caught_up();
        // Every key is quiet long enough to be written ahead; then a and b change again.
        std::thread::sleep(Duration::from_millis(700));
        run.append(chunk);
    }
    run.wait_caught_up();
    // Stopping checkpoints: the change file holds a and b twice (written ahead once in the
    // interval, then at the barrier, though a changed twice after it) and c once.
    let run = run.restart(sluice_core::schema::heartbeat(), &chunks[3], &FunctionConfig::default());
    assert_eq!(most_groups_per_key(run.dir.path()), 2, "a key is written ahead, then again at the barrier, and no more");
    run.wait_caught_up();
    run.engine.drain("heart_rate").unwrap();
    assert_eq!(sessions(&run), want);
    run.engine.stop().unwrap();
}

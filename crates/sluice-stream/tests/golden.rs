//! Window and watermark cases: `tests/cases/*.json` hold inputs and hand-computed outputs.
//!
//! Input rows are `[playerId, seconds after 2017-07-14T02:40:00Z, bpm]` in arrival order;
//! after the last row the input ends (every session closes). Expected sessions are sorted
//! by player, then start.

use serde_json::Value;
use sluice_core::heartbeat::HeartbeatEvent;
use sluice_stream::job::{HeartRateConfig, HeartRateJob};
use sluice_stream::session::Outcome;

const BASE_MS: i64 = 1_500_000_000_000;

fn secs(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

#[test]
fn golden_cases() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 10, "cases missing in {}", dir.display());
    for file in files {
        let case: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let mut config: HeartRateConfig = serde_json::from_value(case.get("config").cloned().unwrap_or(Value::Object(Default::default()))).unwrap();
        config.idle_timeout_ms = 0;
        let mut job = HeartRateJob::new(config);
        let mut closed = Vec::new();
        let (mut late, mut dups) = (0, 0);
        for (i, row) in case["input"].as_array().unwrap().iter().enumerate() {
            let ev = HeartbeatEvent {
                player_id: row[0].as_str().unwrap().to_string(),
                created_at_ms: BASE_MS + (secs(&row[1]) * 1000.0).round() as i64,
                heartbeat_bpm: secs(&row[2]),
            };
            match job.process(&ev, i as i64, &mut closed) {
                Outcome::Late => late += 1,
                Outcome::Duplicate => dups += 1,
                Outcome::Accepted => {}
            }
        }
        job.close_all(&mut closed);
        assert_eq!(job.open_session_count(), 0, "{name}");
        closed.sort_by(|a, b| (&a.player_id, a.session_start_ms).cmp(&(&b.player_id, b.session_start_ms)));
        let want = case["expected"]["sessions"].as_array().unwrap();
        assert_eq!(closed.len(), want.len(), "{name}: sessions {closed:#?}");
        for (got, want) in closed.iter().zip(want) {
            let ms = |k: &str| (secs(&want[k]) * 1000.0).round() as i64;
            assert_eq!(got.player_id, want["player_id"].as_str().unwrap(), "{name}");
            assert_eq!(got.session_start_ms, BASE_MS + ms("start_s"), "{name}: start");
            assert_eq!(got.session_end_ms, BASE_MS + ms("end_s"), "{name}: end");
            assert_eq!(got.zones.low, ms("low_s"), "{name}: low");
            assert_eq!(got.zones.moderate, ms("moderate_s"), "{name}: moderate");
            assert_eq!(got.zones.high, ms("high_s"), "{name}: high");
            assert_eq!(got.samples, want["samples"].as_u64().unwrap(), "{name}: samples");
            if let Some(v) = want.get("min_hr") {
                assert_eq!(got.min_hr, secs(v), "{name}: min_hr");
                assert_eq!(got.max_hr, secs(&want["max_hr"]), "{name}: max_hr");
            }
            assert!(got.closed);
        }
        assert_eq!(late, case["expected"]["late"].as_u64().unwrap(), "{name}: late");
        assert_eq!(dups, case["expected"]["duplicates"].as_u64().unwrap(), "{name}: duplicates");
    }
}

#[test]
fn idle_timeout_closes_sessions_in_processing_time() {
    let mut job = HeartRateJob::new(HeartRateConfig { idle_timeout_ms: 1_000, ..HeartRateConfig::default() });
    let mut closed = Vec::new();
    let ev = |t: i64| HeartbeatEvent { player_id: "p".into(), created_at_ms: BASE_MS + t, heartbeat_bpm: 100.0 };
    job.process(&ev(0), 10_000, &mut closed);
    job.process(&ev(1_000), 10_100, &mut closed);
    job.close_idle(11_000, &mut closed);
    assert!(closed.is_empty(), "not idle yet");
    job.close_idle(11_100, &mut closed);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].zones.low, 2_000);
    // A reading inside the closed session's reach is now late; one after it starts anew.
    assert_eq!(job.process(&ev(2_000), 12_000, &mut closed), Outcome::Late);
    assert_eq!(job.process(&ev(400_000), 12_000, &mut closed), Outcome::Accepted);
}

#[test]
fn checkpointed_state_round_trips_through_json() {
    let mut job = HeartRateJob::new(HeartRateConfig::default());
    let mut closed = Vec::new();
    for t in 0..50 {
        let ev = HeartbeatEvent { player_id: "p".into(), created_at_ms: BASE_MS + t * 1000, heartbeat_bpm: 120.0 + t as f64 };
        job.process(&ev, 0, &mut closed);
    }
    let json = serde_json::to_string(job.state()).unwrap();
    let mut restored = HeartRateJob::new(HeartRateConfig::default());
    restored.restore(serde_json::from_str(&json).unwrap(), 0);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    job.close_all(&mut a);
    restored.close_all(&mut b);
    assert_eq!(a, b);
    assert_eq!(a[0].samples, 50);
}

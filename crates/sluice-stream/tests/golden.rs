//! Window, watermark and lateness cases: data files with hand-computed golden outputs,
//! run through the real engine over a real log.
//!
//! - `cases/windows/*.json`: generic windows over a topic `t` of `{k: string, v: float,
//!   ts: epoch ms}`. Input rows are `[partition, k, v, seconds]` in log order.
//! - `cases/heart_rate/*.json`: the shipped `heart_rate` pipeline (its SQL and options
//!   from `sluice-server/default.toml`) on readings `[player, seconds, bpm]`.
//!
//! Times are seconds after 2017-07-14T02:40:00Z. Every case ends its input by draining
//! (every window closes) unless it says `"drain": false`; expected rows are compared as
//! sets.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_core::schema::FieldType;
use sluice_stream::functions::{FunctionConfig, HrMaxTable};
use sluice_stream::pipeline::PipelineSpec;

const BASE_MS: i64 = 1_500_000_000_000;

fn cases(dir: &str) -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    files.sort();
    files.into_iter().map(|f| (f.file_name().unwrap().to_string_lossy().to_string(), serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap())).collect()
}

fn ms(seconds: &Value) -> i64 {
    BASE_MS + (seconds.as_f64().unwrap() * 1000.0).round() as i64
}

/// Numbers compared as floats (20 and 20.0 alike), rows as a set.
fn sorted(rows: Vec<Value>) -> Vec<Value> {
    fn norm(v: Value) -> Value {
        match v {
            Value::Number(n) => json!(n.as_f64().unwrap_or(f64::NAN)),
            Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, norm(v))).collect()),
            Value::Array(a) => Value::Array(a.into_iter().map(norm).collect()),
            other => other,
        }
    }
    let mut rows: Vec<Value> = rows.into_iter().map(norm).collect();
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// Waits until the rows published to `sink` number `n` (checkpointing meanwhile).
fn wait_rows(r: &common::Running, sink: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = r.status().last_checkpoint_id.load(std::sync::atomic::Ordering::Relaxed);
        r.engine.checkpoint().unwrap();
        while r.status().last_checkpoint_id.load(std::sync::atomic::Ordering::Relaxed) <= before {
            std::thread::sleep(Duration::from_millis(2));
        }
        let rows = common::rows_json(&r.rows(sink), BASE_MS);
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn window_cases() {
    let all = cases("windows");
    assert!(all.len() >= 10, "window cases missing");
    for (name, case) in all {
        let mut spec_json = case.get("options").cloned().unwrap_or(json!({}));
        spec_json["name"] = json!("p");
        spec_json["sql"] = case["sql"].clone();
        let spec: PipelineSpec = serde_json::from_value(spec_json).unwrap_or_else(|e| panic!("{name}: {e}"));
        let input: Vec<(u32, Value)> = case["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_u64().unwrap() as u32, json!({"k": r[1], "v": r[2], "ts": ms(&r[3])})))
            .collect();
        let partitions = case.get("partitions").and_then(Value::as_u64).unwrap_or(1) as u32;
        let run = common::start(spec, "t", common::kvt_schema(FieldType::Float), partitions, &input, &FunctionConfig::default());
        run.wait_caught_up();
        let want = sorted(case["expected"]["rows"].as_array().unwrap().clone());
        let got = if case.get("drain").and_then(Value::as_bool).unwrap_or(true) {
            run.engine.drain("p").unwrap();
            sorted(common::rows_json(&run.rows("lake:p"), BASE_MS))
        } else {
            sorted(wait_rows(&run, "lake:p", want.len()))
        };
        assert_eq!(got, want, "{name}: {}", case["description"]);
        let status = run.status();
        assert_eq!(status.late.load(std::sync::atomic::Ordering::Relaxed), case["expected"]["late"].as_u64().unwrap_or(0), "{name}: late");
        assert_eq!(status.duplicates.load(std::sync::atomic::Ordering::Relaxed), case["expected"]["duplicates"].as_u64().unwrap_or(0), "{name}: duplicates");
        let late_rows = run.rows("topic:p.late").iter().map(|b| b.num_rows()).sum::<usize>() as u64;
        assert_eq!(late_rows, case["expected"]["late"].as_u64().unwrap_or(0), "{name}: late records in p.late");
        run.engine.stop().unwrap();
    }
}

/// The shipped heart-rate pipeline.
#[test]
fn heart_rate_cases() {
    let all = cases("heart_rate");
    assert!(all.len() >= 10, "heart-rate cases missing");
    for (name, case) in all {
        let config = case.get("config").cloned().unwrap_or(json!({}));
        let mut hr = HrMaxTable::default();
        if let Some(d) = config.get("hr_max_default_bpm").and_then(Value::as_f64) {
            hr.default_bpm = d;
        }
        if let Some(m) = config.get("hr_max_bpm").and_then(Value::as_object) {
            hr.players = m.iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap())).collect();
        }
        let input: Vec<(u32, Value)> = case["input"].as_array().unwrap().iter().map(|r| (0, json!({"playerId": r[0], "createdAt": ms(&r[1]), "heartbeat": r[2]}))).collect();
        let run = common::start(common::heart_rate_spec(), "heartbeat-raw-topic", sluice_core::schema::heartbeat(), 1, &input, &FunctionConfig { hr_max: hr });
        run.wait_caught_up();
        run.engine.drain("heart_rate").unwrap();
        let got: Vec<Value> = common::rows_json(&run.rows("lake:heart_rate"), BASE_MS)
            .into_iter()
            .map(|r| {
                let mut s = json!({
                    "player_id": r["player_id"], "start_s": r["session_start"], "end_s": r["session_end"],
                    "low_s": r["low_s"], "moderate_s": r["moderate_s"], "high_s": r["high_s"], "samples": r["samples"],
                });
                s["min_hr"] = r["min_hr"].clone();
                s["max_hr"] = r["max_hr"].clone();
                s
            })
            .collect();
        let want = case["expected"]["sessions"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{name}: {got:#?}");
        let norm = |v: &Value| v.as_f64().unwrap();
        let mut got = got;
        got.sort_by(|a, b| (a["player_id"].as_str(), norm(&a["start_s"]) as i64).cmp(&(b["player_id"].as_str(), norm(&b["start_s"]) as i64)));
        for (g, w) in got.iter().zip(want) {
            for k in ["player_id", "start_s", "end_s", "low_s", "moderate_s", "high_s", "samples", "min_hr", "max_hr"] {
                let Some(wv) = w.get(k) else { continue };
                match (g[k].as_f64(), wv.as_f64()) {
                    (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{name}: {k}: got {a}, want {b}\n{g}"),
                    _ => assert_eq!(&g[k], wv, "{name}: {k}"),
                }
            }
        }
        let status = run.status();
        assert_eq!(status.late.load(std::sync::atomic::Ordering::Relaxed), case["expected"]["late"].as_u64().unwrap(), "{name}: late");
        assert_eq!(status.duplicates.load(std::sync::atomic::Ordering::Relaxed), case["expected"]["duplicates"].as_u64().unwrap(), "{name}: duplicates");
        run.engine.stop().unwrap();
    }
}

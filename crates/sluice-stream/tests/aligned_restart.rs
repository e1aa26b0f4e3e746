//! Aligned windows (tumbling and hopping under the per-partition watermark) fire while
//! the input flows, and a pipeline stopped and resumed from its checkpoint between any
//! two chunks of input ends with the same tables, and the same late records, as one
//! uninterrupted run. This covers what the brute-force model test does not: windows that
//! fire before the end of input, lateness across a restart (the first batch after a
//! restart sees no watermark yet), rollup levels, and the grouped accumulators' state
//! (t-digest, HyperLogLog) written, compacted and read back.

mod common;

use serde_json::{json, Value};
use sluice_core::schema::FieldType;
use sluice_stream::functions::FunctionConfig;
use sluice_stream::pipeline::{PipelineSpec, RollupSpec};

const BASE_MS: i64 = 1_500_000_000_000;

/// Readings of keys a, b, c at 1 Hz for `from..to` s, in one partition (so that the
/// watermark each record sees is the same in every run),
/// with every 7th reading 2 s late (inside the allowed lateness) and every 13th 25 s late
/// (beyond it). Key c pauses from 120 s to 200 s.
fn readings(from: i64, to: i64) -> Vec<(u32, Value)> {
    let mut out = Vec::new();
    for s in from..to {
        for (p, k) in [(0, "a"), (0, "b"), (0, "c")] {
            if k == "c" && (120..200).contains(&s) {
                continue; // c pauses: its windows all fire, and it is forgotten until it returns
            }
            let delay = if s % 13 == 0 { 25 } else if s % 7 == 0 { 2 } else { 0 };
            let t = (s - delay).max(0);
            out.push((p, json!({"k": k, "ts": BASE_MS + t * 1000, "v": (s * 37 + k.len() as i64 * 11) % 97})));
        }
    }
    out
}

fn spec(sql: &str, rollup: bool) -> PipelineSpec {
    let mut spec = PipelineSpec::new("p", sql);
    spec.max_out_of_orderness_ms = 0;
    spec.allowed_lateness_ms = 3_000;
    if rollup {
        spec.rollups = vec![RollupSpec { size_ms: 60_000, retention_ms: -1, name: None }];
    }
    spec
}

/// Rows as sorted strings, with fractional numbers to 12 significant digits (a checkpoint
/// or a restart moves variance-type state through a merge, which may change the last bits
/// of a double) and the t-digest's median to within 4 % of the window's range (a digest
/// serialized at a checkpoint is compressed, so later merges see other centroids; the
/// sketch's error bound is in `functions::percentile`).
fn sorted(run: &common::Running, sink: &str) -> Vec<String> {
    let round = |v: &Value| match v {
        Value::Number(n) if n.is_f64() => Value::String(format!("{:.11e}", n.as_f64().unwrap_or(0.0))),
        v => v.clone(),
    };
    let rows = common::rows_json(&run.rows(sink), BASE_MS);
    let bucket = |r: &Value| {
        let (lo, hi, p) = (r["lo"].as_f64().unwrap_or(0.0), r["hi"].as_f64().unwrap_or(0.0), r["p50"].as_f64().unwrap_or(0.0));
        Value::from(((p - lo) / ((hi - lo) * 0.04).max(1e-9)).round() as i64)
    };
    let mut rows: Vec<String> = rows
        .iter()
        .map(|r| r.as_object().unwrap().iter().map(|(k, v)| (k.clone(), if k == "p50" { bucket(r) } else { round(v) })).collect::<serde_json::Map<_, _>>())
        .map(|r| Value::Object(r).to_string())
        .collect();
    rows.sort();
    rows
}

/// (base table, rollup table, late records) of one run, drained at the end.
fn outcome(run: &common::Running) -> (Vec<String>, Vec<String>, u64) {
    run.engine.drain("p").unwrap();
    let late = run.rows("topic:p.late").iter().map(|b| b.num_rows() as u64).sum();
    (sorted(run, "lake:p"), sorted(run, "lake:p_1m"), late)
}

fn check(sql: &str, rollup: bool) {
    // Each chunk after the first starts with a record late beyond the allowed lateness, the
    // first thing a resumed pipeline reads, before it knows any watermark.
    let chunks = [readings(0, 52), readings(52, 104), readings(104, 169), readings(169, 240)];
    let whole = common::start(spec(sql, rollup), "t", common::kvt_schema(FieldType::Int), 1, &chunks.concat(), &FunctionConfig::default());
    whole.wait_caught_up();
    let want = outcome(&whole);
    whole.engine.stop().unwrap();
    assert!(want.0.len() >= 20 && want.1.is_empty() != rollup && want.2 > 0, "the input should fire windows, roll up and be late: {want:?}");

    let mut run = common::start(spec(sql, rollup), "t", common::kvt_schema(FieldType::Int), 1, &chunks[0], &FunctionConfig::default());
    run.wait_caught_up();
    for chunk in &chunks[1..] {
        run = run.restart(common::kvt_schema(FieldType::Int), chunk, &FunctionConfig::default());
        run.wait_caught_up();
    }
    let got = outcome(&run);
    run.engine.stop().unwrap();
    let only = |a: &[String], b: &[String]| a.iter().filter(|r| !b.contains(r)).cloned().collect::<Vec<_>>();
    assert_eq!(got.0, want.0, "base windows: only after restarts {:#?}, only in one run {:#?}", only(&got.0, &want.0), only(&want.0, &got.0));
    assert_eq!(got.1, want.1, "rollup windows: only after restarts {:#?}, only in one run {:#?}", only(&got.1, &want.1), only(&want.1, &got.1));
    assert_eq!(got.2, want.2, "late records");
}

#[test]
fn keyed_tumbling_windows_resume_with_the_same_results() {
    check(
        "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total, min(v) AS lo, max(v) AS hi, avg(v) AS mean, \
         approx_percentile_cont(v, 0.5) AS p50, approx_distinct(v) AS distinct_v \
         FROM TUMBLE(\"t\", ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end",
        true,
    );
}

#[test]
fn keyed_hopping_windows_resume_with_the_same_results() {
    check("SELECT k, window_start, window_end, count(*) AS n, first_value(v) AS first_v, last_value(v) AS last_v FROM HOP(\"t\", ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND) GROUP BY k, window_start, window_end", false);
}

#[test]
fn keyless_tumbling_windows_resume_with_the_same_results() {
    check("SELECT window_start, window_end, count(*) AS n, max(v) AS hi, stddev(v) AS sd FROM TUMBLE(\"t\", ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end", true);
}

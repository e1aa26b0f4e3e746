//! Property test: windowed aggregates computed by the engine (over a real log, records in
//! random order and partitions, per-key or per-partition watermarks) equal a brute-force
//! recomputation of the same windows from the whole input.
//!
//! The watermark's out-of-orderness bound is larger than the input's span, so no record
//! is late and every window closes at the end of input; lateness itself is covered by the
//! golden cases. With dedup, the first arrival of each (key, event time) counts.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{json, Value};
use sluice_core::schema::FieldType;
use sluice_stream::functions::FunctionConfig;
use sluice_stream::pipeline::PipelineSpec;

const BASE_MS: i64 = 1_500_000_000_000;

#[derive(Debug, Clone)]
enum Shape {
    Tumble(i64),
    Hop(i64, i64),
    Session(i64),
}

/// (start, end) → values, per key, by brute force.
fn brute_force(shape: &Shape, records: &[(String, i64, i64)]) -> BTreeMap<(String, i64, i64), Vec<i64>> {
    let mut out: BTreeMap<(String, i64, i64), Vec<i64>> = BTreeMap::new();
    match *shape {
        Shape::Tumble(size) => {
            for (k, t, v) in records {
                let s = t - t.rem_euclid(size);
                out.entry((k.clone(), s, s + size)).or_default().push(*v);
            }
        }
        Shape::Hop(slide, size) => {
            for (k, t, v) in records {
                let mut s = t - t.rem_euclid(slide);
                while s + size > *t {
                    out.entry((k.clone(), s, s + size)).or_default().push(*v);
                    s -= slide;
                }
            }
        }
        Shape::Session(gap) => {
            let mut by_key: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
            for (k, t, v) in records {
                by_key.entry(k).or_default().push((*t, *v));
            }
            for (k, mut rs) in by_key {
                rs.sort_by_key(|r| r.0);
                let mut current: Vec<(i64, i64)> = Vec::new();
                for r in rs {
                    if current.last().is_some_and(|l| r.0 - l.0 > gap) {
                        let (s, e) = (current[0].0, current.last().map_or(0, |l| l.0) + gap);
                        out.insert((k.to_string(), s, e), current.iter().map(|x| x.1).collect());
                        current.clear();
                    }
                    current.push(r);
                }
                if let Some(l) = current.last() {
                    out.insert((k.to_string(), current[0].0, l.0 + gap), current.iter().map(|x| x.1).collect());
                }
            }
        }
    }
    out
}

fn shape_strategy() -> impl Strategy<Value = Shape> {
    prop_oneof![
        (1i64..=4).prop_map(|s| Shape::Tumble(s * 5_000)),
        (1i64..=3, 1i64..=3).prop_map(|(slide, n)| Shape::Hop(slide * 5_000, slide * 5_000 * n)),
        (1i64..=4).prop_map(|g| Shape::Session(g * 3_000)),
    ]
}

fn records_strategy() -> impl Strategy<Value = Vec<(u32, String, i64, i64)>> {
    // (partition, key, ms offset, value); times within 60 s, in any order.
    prop::collection::vec((0u32..2, prop::sample::select(vec!["a", "b", "c", "d"]), 0i64..60_000, -50i64..50), 1..120)
        .prop_map(|v| v.into_iter().map(|(p, k, t, x)| (p, k.to_string(), t / 250 * 250, x)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24), ..ProptestConfig::default() })]

    #[test]
    fn windowed_aggregates_equal_brute_force(shape in shape_strategy(), records in records_strategy(), per_key in any::<bool>(), dedup in any::<bool>(), split in 0.0f64..1.0, restart in any::<bool>()) {
        let window = match shape {
            Shape::Tumble(size) => format!("TUMBLE(\"t\", ts, INTERVAL '{size}' MILLISECOND)"),
            Shape::Hop(slide, size) => format!("HOP(\"t\", ts, INTERVAL '{slide}' MILLISECOND, INTERVAL '{size}' MILLISECOND)"),
            Shape::Session(gap) => format!("SESSION(\"t\", ts, INTERVAL '{gap}' MILLISECOND)"),
        };
        let sql = format!("SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total, min(v) AS lo, max(v) AS hi FROM {window} GROUP BY k, window_start, window_end");
        let mut spec = PipelineSpec::new("p", &sql);
        spec.max_out_of_orderness_ms = 3_600_000;
        spec.dedup = dedup;
        if per_key {
            spec.watermark = sluice_stream::ops::window_agg::WatermarkMode::PerKey;
        }
        // Keys stay in their partition, as the partitioner does.
        let records: Vec<(u32, String, i64, i64)> = records.into_iter().map(|(_, k, t, v)| (if k == "a" || k == "b" { 0 } else { 1 }, k, t, v)).collect();
        let input: Vec<(u32, Value)> = records.iter().map(|(p, k, t, v)| (*p, json!({"k": k, "ts": BASE_MS + t, "v": v}))).collect();
        // Optionally stop after part of the input and resume from the checkpoint.
        let cut = if restart { (input.len() as f64 * split) as usize } else { input.len() };
        let mut run = common::start(spec, "t", common::kvt_schema(FieldType::Int), 2, &input[..cut], &FunctionConfig::default());
        run.wait_caught_up();
        if restart {
            run = run.restart(common::kvt_schema(FieldType::Int), &input[cut..], &FunctionConfig::default());
            run.wait_caught_up();
        }
        run.engine.drain("p").unwrap();
        let got = common::rows_json(&run.rows("lake:p"), BASE_MS);
        run.engine.stop().unwrap();
        // Brute force over the records in each partition's order; with dedup, the first of
        // each (key, time) in that order.
        let mut seen = BTreeSet::new();
        let mut kept = Vec::new();
        for p in 0..2u32 {
            for (q, k, t, v) in &records {
                if *q == p && (!dedup || seen.insert((k.clone(), *t))) {
                    kept.push((k.clone(), BASE_MS + t, *v));
                }
            }
        }
        let want = brute_force(&shape, &kept);
        let mut got_map = BTreeMap::new();
        for r in &got {
            let s = (r["window_start"].as_f64().unwrap() * 1000.0).round() as i64 + BASE_MS;
            let e = (r["window_end"].as_f64().unwrap() * 1000.0).round() as i64 + BASE_MS;
            got_map.insert((r["k"].as_str().unwrap().to_string(), s, e), (r["n"].as_i64().unwrap(), r["total"].as_i64().unwrap(), r["lo"].as_i64().unwrap(), r["hi"].as_i64().unwrap()));
        }
        let want_map: BTreeMap<_, _> = want.into_iter().map(|(k, vs)| (k, (vs.len() as i64, vs.iter().sum::<i64>(), *vs.iter().min().unwrap(), *vs.iter().max().unwrap()))).collect();
        prop_assert_eq!(got.len(), got_map.len(), "a window was emitted twice");
        prop_assert_eq!(got_map, want_map);
    }
}

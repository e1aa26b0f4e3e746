//! State written by the per-key operator ([`crate::ops::window_agg`], which ran every
//! windowed pipeline before the aligned operator existed) resumes in the aligned operator
//! with the same results as one uninterrupted aligned run.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use serde_json::json;

use crate::decode::{BatchDecoder, SourceChunk};
use crate::functions::FunctionConfig;
use crate::operator::{Chain, Ctx, Hook, Operator, Rows};
use crate::ops::aligned::AlignedAggregate;
use crate::ops::steps::Steps;
use crate::ops::window_agg::{WatermarkMode, WindowAggregate, WindowOptions};
use crate::pipeline::{plan, PipelineSpec, Planned};
use crate::sql::catalog::Catalog;
use crate::state::StateWriter;

const SQL: &str = "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total, max(v) AS hi, avg(v) AS mean \
                   FROM TUMBLE(\"t\", ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end";
const LATENESS_MS: i64 = 2_000;

fn planned() -> Planned {
    use sluice_core::schema::{FieldSpec, FieldType, RecordSchema};
    let schema = RecordSchema { fields: vec![FieldSpec::new("k", FieldType::String), FieldSpec::new("v", FieldType::Int), FieldSpec::new("ts", FieldType::Timestamp)], event_time: Some("ts".into()), key: None };
    let catalog = Catalog::new([("t".to_string(), schema)].into_iter().collect(), &FunctionConfig::default());
    let mut spec = PipelineSpec::new("p", SQL);
    spec.max_out_of_orderness_ms = 0;
    spec.allowed_lateness_ms = LATENESS_MS;
    plan(&spec, &catalog).unwrap()
}

fn chain(p: &Planned, aligned: bool) -> Chain {
    let w = Arc::new(p.plan.window.clone().unwrap());
    let op: Box<dyn Operator> = if aligned {
        Box::new(AlignedAggregate::new(w, LATENESS_MS, Vec::new()).unwrap())
    } else {
        let opts = WindowOptions { watermark: WatermarkMode::PerPartition, out_of_orderness_ms: 0, lateness_ms: LATENESS_MS, dedup: false, idle_timeout_ms: 0, state_ttl_ms: 0, rollups: Vec::new() };
        Box::new(WindowAggregate::new(w, opts).unwrap())
    };
    Chain { ops: vec![Box::new(Steps::new(p.plan.pre.clone())), op, Box::new(Steps::new(p.plan.post.clone()))] }
}

/// Decodes JSON records into input rows for a windowed chain: window placeholders and
/// event times, as the runner prepares them.
fn input_rows(p: &Planned, decoder: &mut BatchDecoder, values: &[Vec<u8>]) -> Rows {
    let d = decoder.decode(0, &SourceChunk::from_values(0, 0, values.iter().map(|v| v.as_slice()))).unwrap();
    let batch = crate::runner::with_window_placeholders(d.batch).unwrap();
    let times = batch.column(p.plan.window.as_ref().unwrap().time_column).as_any().downcast_ref::<arrow_array::TimestampMillisecondArray>().unwrap().clone();
    let event_ms = Int64Array::new(times.values().clone(), None);
    Rows { stream: 0, batch, event_ms: Some(event_ms), origin: None, early: None }
}

/// Output rows as JSON strings, sorted.
fn json_rows(out: Vec<Rows>) -> Vec<String> {
    let batches: Vec<RecordBatch> = out.into_iter().map(|r| r.batch).collect();
    let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
    writer.write_batches(&batches.iter().collect::<Vec<_>>()).unwrap();
    writer.finish().unwrap();
    let mut rows: Vec<String> = String::from_utf8(writer.into_inner()).unwrap().lines().map(str::to_string).collect();
    rows.sort();
    rows
}

/// Feeds seconds `from..to` of readings of keys a and b (every 9th 15 s late) ten records (5 s)
/// a batch, advancing the watermark after each; returns the output rows as JSON strings.
fn feed(p: &Planned, chain: &mut Chain, from: i64, to: i64, max_ms: &mut i64, resumed: bool, drain: bool) -> Vec<String> {
    let mut decoder = BatchDecoder::new(p.plan.record.clone());
    let values: Vec<Vec<u8>> = (from..to)
        .flat_map(|s| ["a", "b"].map(move |k| (s, k)))
        .map(|(s, k)| serde_json::to_vec(&json!({"k": k, "v": s % 17, "ts": (s - if s % 9 == 0 { 15 } else { 0 }) * 1000})).unwrap())
        .collect();
    let mut out = Vec::new();
    let mut side = Vec::new();
    for (i, chunk) in values.chunks(10).enumerate() {
        let rows = input_rows(p, &mut decoder, chunk);
        // As the runner does: a batch sees the watermark of the batches before it, and the
        // first batch after a restart sees none.
        let seen = if resumed && i == 0 { i64::MIN } else { *max_ms };
        let mut ctx = Ctx { now_ms: 0, watermark_ms: seen, caught_up: false, side: &mut side };
        *max_ms = (*max_ms).max(rows.event_ms.as_ref().unwrap().iter().flatten().max().unwrap());
        out.extend(chain.push(0, rows, &mut ctx).unwrap());
        let mut ctx = Ctx { now_ms: 0, watermark_ms: *max_ms, caught_up: false, side: &mut side };
        out.extend(chain.hook(Hook::Watermark, &mut ctx).unwrap());
    }
    if drain {
        let mut ctx = Ctx { now_ms: 0, watermark_ms: *max_ms, caught_up: true, side: &mut side };
        out.extend(chain.hook(Hook::Drain, &mut ctx).unwrap());
    }
    json_rows(out)
}

#[test]
fn state_of_the_per_key_operator_resumes_in_the_aligned_one() {
    let p = planned();
    let mut whole = chain(&p, true);
    let want = feed(&p, &mut whole, 0, 100, &mut i64::MIN.clone(), false, true);
    assert!(want.len() >= 18, "{want:?}");

    let mut old = chain(&p, false);
    let mut max_ms = i64::MIN;
    let mut got = feed(&p, &mut old, 0, 45, &mut max_ms, false, false);
    let mut w = StateWriter::default();
    assert!(old.ops[1].snapshot(&mut w).unwrap());
    let mut new = chain(&p, true);
    new.ops[1].restore(&[w.batches]).unwrap();
    got.extend(feed(&p, &mut new, 45, 100, &mut max_ms, true, true));
    got.sort();
    assert_eq!(got, want);
}

/// A window with more keys than one state batch holds: its snapshot is several batches,
/// and both the operator that wrote it and one restored from it finish with the results of
/// an uninterrupted run (t-digests included).
#[test]
fn a_window_of_many_keys_is_written_in_batches_and_kept() {
    use sluice_core::schema::{FieldSpec, FieldType, RecordSchema};
    const KEYS: usize = 10_000;
    let sql = "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total, approx_percentile_cont(v, 0.5) AS med \
               FROM TUMBLE(\"t\", ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end";
    let schema = RecordSchema { fields: vec![FieldSpec::new("k", FieldType::String), FieldSpec::new("v", FieldType::Int), FieldSpec::new("ts", FieldType::Timestamp)], event_time: Some("ts".into()), key: None };
    let catalog = Catalog::new([("t".to_string(), schema)].into_iter().collect(), &FunctionConfig::default());
    let mut spec = PipelineSpec::new("p", sql);
    spec.max_out_of_orderness_ms = 0;
    spec.allowed_lateness_ms = 0;
    let p = plan(&spec, &catalog).unwrap();
    let new_chain = || {
        let op = AlignedAggregate::new(Arc::new(p.plan.window.clone().unwrap()), 0, Vec::new()).unwrap();
        Chain { ops: vec![Box::new(Steps::new(p.plan.pre.clone())), Box::new(op), Box::new(Steps::new(p.plan.post.clone()))] }
    };
    // Seconds `from..to` of every key, then (if `drain`) the end of input; output rows as JSON.
    let run = |chain: &mut Chain, from: i64, to: i64, drain: bool| -> Vec<String> {
        let mut decoder = BatchDecoder::new(p.plan.record.clone());
        let values: Vec<Vec<u8>> =
            (from..to).flat_map(|s| (0..KEYS).map(move |k| serde_json::to_vec(&json!({"k": format!("k{k}"), "v": (k as i64 * 7 + s) % 23, "ts": s * 1000})).unwrap())).collect();
        let (mut out, mut side) = (Vec::new(), Vec::new());
        for chunk in values.chunks(2_500) {
            let mut ctx = Ctx { now_ms: 0, watermark_ms: i64::MIN, caught_up: false, side: &mut side };
            out.extend(chain.push(0, input_rows(&p, &mut decoder, chunk), &mut ctx).unwrap());
        }
        if drain {
            let mut ctx = Ctx { now_ms: 0, watermark_ms: i64::MIN, caught_up: true, side: &mut side };
            out.extend(chain.hook(Hook::Drain, &mut ctx).unwrap());
        }
        json_rows(out)
    };
    let want = run(&mut new_chain(), 0, 6, true);
    assert_eq!(want.len(), KEYS);

    let mut first = new_chain();
    assert!(run(&mut first, 0, 3, false).is_empty());
    let mut w = StateWriter::default();
    first.ops[1].snapshot(&mut w).unwrap();
    assert!(w.batches.len() >= 3, "{} state batches for {KEYS} keys", w.batches.len());
    let mut restored = new_chain();
    restored.ops[1].restore(&[w.batches]).unwrap();
    assert_eq!(run(&mut restored, 3, 6, true), want, "restored from the batches");
    assert_eq!(run(&mut first, 3, 6, true), want, "the operator that wrote them");
}

/// The per-key operator emits early results of more keys than one slice over several
/// calls, every touched key once, and says when a round is unfinished.
#[test]
fn early_results_of_many_keys_come_in_slices() {
    let p = planned();
    let mut c = chain(&p, false);
    let n = crate::ops::window_agg::EARLY_SLICE_KEYS + 100;
    let mut decoder = BatchDecoder::new(p.plan.record.clone());
    let values: Vec<Vec<u8>> = (0..n).map(|i| serde_json::to_vec(&json!({"k": format!("k{i}"), "v": 1, "ts": 1000})).unwrap()).collect();
    let rows = input_rows(&p, &mut decoder, &values);
    let mut side = Vec::new();
    let mut ctx = Ctx { now_ms: 0, watermark_ms: i64::MIN, caught_up: false, side: &mut side };
    c.push(0, rows, &mut ctx).unwrap();
    let (mut keys, mut calls) = (Vec::new(), 0);
    loop {
        calls += 1;
        for r in c.hook(Hook::Early, &mut ctx).unwrap() {
            keys.extend(r.early.expect("early rows").keys.iter().cloned());
        }
        if !c.early_pending() {
            break;
        }
    }
    assert_eq!(calls, 2, "two slices");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "every key once");
    assert!(c.hook(Hook::Early, &mut ctx).unwrap().is_empty(), "nothing touched since");
}

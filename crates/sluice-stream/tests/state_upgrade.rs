//! State written by an older release resumes. Until 2026-11-29, `hr_zone_seconds` kept its
//! pending readings in two list columns (`a<i>_5: List<Int64>`, `a<i>_6: List<Float64>`);
//! today one binary column holds them. The shipped `heart_rate` pipeline is stopped
//! midway, its window state files are rewritten in the old layout, and the resumed run
//! must end with the same sessions as one uninterrupted run. State that cannot be read is
//! a clear error, not a panic.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int64Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use serde_json::{json, Value};
use sluice_stream::functions::FunctionConfig;

const BASE_MS: i64 = 1_500_000_000_000;

/// Readings of two players at 1 Hz from second `from` to `to`, with out-of-order pairs, a
/// resend, and a 400 s pause (a new session) at second 100.
fn readings(from: i64, to: i64) -> Vec<(u32, Value)> {
    let mut out = Vec::new();
    for s in from..to {
        for (p, base) in [("a", 120.0), ("b", 160.0)] {
            let t = if s >= 100 { s + 400 } else { s };
            let t = if s % 7 == 3 { t + 1 } else if s % 7 == 4 { t - 1 } else { t };
            let bpm = base + ((s * 13) % 50) as f64;
            out.push((0, json!({"playerId": p, "createdAt": BASE_MS + t * 1000, "heartbeat": bpm})));
            if s % 11 == 0 {
                out.push((0, json!({"playerId": p, "createdAt": BASE_MS + t * 1000, "heartbeat": bpm})));
            }
        }
    }
    out
}

/// The batch in the layout before 2026-11-29: each zone tail (`a<i>_5: Binary`) as two lists.
fn to_old_layout(b: &RecordBatch) -> RecordBatch {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if f.name().starts_with('a') && f.name().ends_with("_5") && *f.data_type() == DataType::Binary {
            let stem = f.name().trim_end_matches("_5").to_string();
            let (mut ms, mut bpm) = (ListBuilder::new(Int64Builder::new()), ListBuilder::new(Float64Builder::new()));
            let bin = c.as_binary::<i32>();
            for i in 0..bin.len() {
                if bin.is_null(i) {
                    ms.append_null();
                    bpm.append_null();
                    continue;
                }
                for r in bin.value(i).chunks_exact(16) {
                    ms.values().append_value(i64::from_le_bytes(r[..8].try_into().unwrap()));
                    bpm.values().append_value(f64::from_le_bytes(r[8..].try_into().unwrap()));
                }
                ms.append(true);
                bpm.append(true);
            }
            let (ms, bpm) = (Arc::new(ms.finish()) as ArrayRef, Arc::new(bpm.finish()) as ArrayRef);
            fields.push(Field::new(format!("{stem}_5"), ms.data_type().clone(), true));
            fields.push(Field::new(format!("{stem}_6"), bpm.data_type().clone(), true));
            columns.extend([ms, bpm]);
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn rewrite(dir: &Path, f: impl Fn(&RecordBatch) -> RecordBatch) -> usize {
    let files = common::window_state_files(&dir.join("checkpoints"));
    for p in &files {
        let batches: Vec<RecordBatch> = sluice_stream::state::read_file(p).unwrap().iter().map(&f).collect();
        sluice_stream::state::write_file(p, &batches).unwrap();
    }
    files.len()
}

fn sessions(run: &common::Running) -> Vec<Value> {
    let mut rows = common::rows_json(&run.rows("lake:heart_rate"), BASE_MS);
    rows.sort_by_key(|r| r.to_string());
    rows
}

#[test]
fn zone_state_in_the_old_layout_resumes_with_the_same_results() {
    let (first, second) = (readings(0, 60), readings(60, 160));
    let whole = common::start(common::heart_rate_spec(), "heartbeat-raw-topic", sluice_core::schema::heartbeat(), 1, &[first.clone(), second.clone()].concat(), &FunctionConfig::default());
    whole.wait_caught_up();
    whole.engine.drain("heart_rate").unwrap();
    let want = sessions(&whole);
    whole.engine.stop().unwrap();
    assert_eq!(want.len(), 4, "two sessions per player: {want:#?}");

    let run = common::start(common::heart_rate_spec(), "heartbeat-raw-topic", sluice_core::schema::heartbeat(), 1, &first, &FunctionConfig::default());
    run.wait_caught_up();
    run.engine.stop().unwrap();
    assert!(rewrite(run.dir.path(), to_old_layout) > 0, "no window state files to rewrite");
    let run = run.restart(sluice_core::schema::heartbeat(), &second, &FunctionConfig::default());
    run.wait_caught_up();
    // A checkpoint after the upgrade rewrites the state in today's layout; compaction
    // then merges it, and a further restart reads it back.
    let run = run.restart(sluice_core::schema::heartbeat(), &[], &FunctionConfig::default());
    run.wait_caught_up();
    run.engine.drain("heart_rate").unwrap();
    assert_eq!(sessions(&run), want);
    run.engine.stop().unwrap();
}

#[test]
fn unreadable_state_is_a_clear_error() {
    let run = common::start(common::heart_rate_spec(), "heartbeat-raw-topic", sluice_core::schema::heartbeat(), 1, &readings(0, 30), &FunctionConfig::default());
    run.wait_caught_up();
    run.engine.stop().unwrap();
    // `max_event_ms` as strings: no layout sluice ever wrote.
    let n = rewrite(run.dir.path(), |b| {
        let schema = b.schema();
        let fields: Vec<Field> = schema.fields().iter().map(|f| if f.name() == "max_event_ms" { Field::new("max_event_ms", DataType::Utf8, true) } else { f.as_ref().clone() }).collect();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .zip(b.columns())
            .map(|(f, c)| if f.name() == "max_event_ms" { Arc::new(StringArray::from(vec![Some("x"); c.len()])) as ArrayRef } else { c.clone() })
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    });
    assert!(n > 0);
    let run = run.restart(sluice_core::schema::heartbeat(), &[], &FunctionConfig::default());
    let error = run.status().error().expect("the pipeline should fail to resume");
    assert!(error.contains("\"max_event_ms\"") && error.contains("expected Int64, found Utf8") && error.contains("a new name"), "{error}");
    run.engine.stop().unwrap();
}

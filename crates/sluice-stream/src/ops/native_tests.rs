//! The inline accumulators against DataFusion's, on random batches with nulls: the same
//! results, the same state columns, and the same results after a state round trip and a
//! merge.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use proptest::prelude::*;

use super::{native, Acc, Kind, ResultColumns, StateColumns};
use crate::functions::FunctionConfig;
use crate::ops::keyed::{arrays, read_state};
use crate::pipeline::{plan, PipelineSpec};
use crate::sql::catalog::Catalog;
use crate::sql::plan::AggPlan;

const SQL: &str = "SELECT k, window_start, window_end, count(*) AS n, count(i) AS ni, sum(i) AS si, sum(f) AS sf, \
                   min(i) AS lo_i, max(i) AS hi_i, min(f) AS lo_f, max(f) AS hi_f, max(ts) AS last, min(ts) AS first, \
                   avg(f) AS mean_f, avg(i) AS mean_i \
                   FROM SESSION(\"t\", ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end";

fn aggs() -> Vec<AggPlan> {
    use sluice_core::schema::{FieldSpec, FieldType, RecordSchema};
    let fields = vec![FieldSpec::new("k", FieldType::String), FieldSpec::new("i", FieldType::Int), FieldSpec::new("f", FieldType::Float), FieldSpec::new("ts", FieldType::Timestamp)];
    let schema = RecordSchema { fields, event_time: Some("ts".into()), key: None };
    let catalog = Catalog::new([("t".to_string(), schema)].into_iter().collect(), &FunctionConfig::default());
    let p = plan(&PipelineSpec::new("p", SQL), &catalog).unwrap();
    let w = p.plan.window.clone().unwrap();
    w.aggs.clone()
}

/// One input batch: (int, float, time) per row, each possibly null.
type Row = (Option<i64>, Option<f64>, Option<i64>);

/// The aggregate's argument, evaluated by its own physical expression over the source
/// columns (`k`, `i`, `f`, `ts`).
fn arg_arrays(agg: &AggPlan, rows: &[Row]) -> Vec<ArrayRef> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("i", DataType::Int64, true),
        Field::new("f", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["a"; rows.len()])),
        Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(schema, cols).unwrap();
    agg.args.iter().map(|e| e.evaluate(&batch).unwrap().into_array(rows.len()).unwrap()).collect()
}

fn row() -> impl Strategy<Value = Row> {
    (
        proptest::option::weighted(0.8, -1_000_000i64..1_000_000),
        proptest::option::weighted(0.8, prop_oneof![-1e6f64..1e6, Just(0.0), Just(-0.0), Just(f64::INFINITY)]),
        proptest::option::weighted(0.8, 0i64..2_000_000_000_000),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn inline_accumulators_match_datafusion(left in prop::collection::vec(prop::collection::vec(row(), 0..6), 0..5),
                                            right in prop::collection::vec(prop::collection::vec(row(), 0..6), 0..5)) {
        let aggs = aggs();
        let natives: Vec<_> = aggs.iter().map(native).collect();
        prop_assert!(natives.iter().all(Option::is_some), "every aggregate of the test query runs inline: {:?}", natives);
        prop_assert!(natives.iter().any(|n| n.as_ref().is_some_and(|n| n.kind == Kind::Avg)));
        let fields: Vec<_> = aggs.iter().map(|a| a.expr.state_fields().unwrap()).collect();
        for (j, agg) in aggs.iter().enumerate() {
            let n = &natives[j];
            // Two windows, fed separately, then merged.
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for batches in [&left, &right] {
                let mut a = Acc::new(agg, n).unwrap();
                let mut d = agg.expr.create_accumulator().unwrap();
                for rows in batches.iter() {
                    let args = arg_arrays(agg, rows);
                    a.update(n, &args).unwrap();
                    d.update_batch(&args).unwrap();
                }
                prop_assert_eq!(a.evaluate(n).unwrap(), d.evaluate().unwrap(), "{}", agg.expr.name());
                ours.push(a);
                theirs.push(d);
            }
            // State columns: ours, built straight, against DataFusion's state() scalars.
            let mut cols = StateColumns::new(std::slice::from_ref(agg), std::slice::from_ref(n), &fields[j..=j], 2).unwrap();
            for a in ours.iter_mut() {
                cols.push(std::slice::from_ref(agg), std::slice::from_mut(a)).unwrap();
            }
            let built = cols.finish(&fields[j..=j]).unwrap();
            for (r, d) in theirs.iter_mut().enumerate() {
                let state = read_state(agg, d).unwrap();
                for (c, v) in built.iter().zip(&state) {
                    prop_assert_eq!(&datafusion_common::ScalarValue::try_from_array(c, r).unwrap(), v, "{} state", agg.expr.name());
                }
            }
            // Round trip and merge.
            let cast: Vec<ArrayRef> = super::restore_types(n).unwrap().iter().zip(&built).map(|(t, c)| arrow_cast::cast(c, t).unwrap()).collect();
            let mut back = Acc::restore(agg, n, &built, &cast, 0).unwrap();
            let mut other = Acc::restore(agg, n, &built, &cast, 1).unwrap();
            back.merge(agg, n, &mut other).unwrap();
            let mut d0 = agg.expr.create_accumulator().unwrap();
            let s1 = read_state(agg, &mut theirs[1]).unwrap();
            d0.merge_batch(&arrays(&read_state(agg, &mut theirs[0]).unwrap()).unwrap()).unwrap();
            d0.merge_batch(&arrays(&s1).unwrap()).unwrap();
            prop_assert_eq!(back.evaluate(n).unwrap(), d0.evaluate().unwrap(), "{} merged", agg.expr.name());
            // Results as columns.
            let mut results = ResultColumns::new(std::slice::from_ref(agg), std::slice::from_ref(n), 1);
            results.push(std::slice::from_mut(&mut back)).unwrap();
            let col = results.finish().unwrap();
            let got = datafusion_common::ScalarValue::try_from_array(&col[0], 0).unwrap();
            let want = d0.evaluate().unwrap();
            prop_assert!(got == want || arrow_cast::cast(&want.to_array().unwrap(), col[0].data_type()).ok().and_then(|a| datafusion_common::ScalarValue::try_from_array(&a, 0).ok()) == Some(got.clone()), "{} result column: {:?} vs {:?}", agg.expr.name(), got, want);
        }
    }
}

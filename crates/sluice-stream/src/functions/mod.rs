//! Functions sluice adds to DataFusion's built-ins for pipeline SQL:
//!
//! - [`zones`]: `hr_zone_seconds(heartbeat, time, hr_max)`, minutes per ACSM zone;
//! - [`hr_max`]: `hr_max(player_id)`, HRmax per player from the configuration;
//! - [`top_k`]: `approx_top_k(value, k)`, the most frequent values (a sketch).
//! - [`percentile`]: `approx_percentile_cont(x, q)` and `approx_median(x)` on DataSketches'
//!   t-digest, in place of DataFusion's (which rebuilds its digest on every call).
//!
//! DataFusion's `approx_distinct(x)` is HyperLogLog with 2^14 one-byte registers (16 KiB a
//! window): standard error 1.04 / √16384 ≈ 0.81 % (Flajolet et al., "HyperLogLog", 2007);
//! integers and strings only. Every sketch's bound is checked by `tests/sketches.rs`.

pub mod hr_max;
pub mod percentile;
pub mod top_k;
pub mod zones;

use std::sync::Arc;

use datafusion_common::ScalarValue;
use datafusion_expr::function::AccumulatorArgs;
use datafusion_expr::{AggregateUDF, ColumnarValue, ScalarUDF};

pub use hr_max::HrMaxTable;

/// Settings of the functions that need configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionConfig {
    pub hr_max: HrMaxTable,
}

/// Every scalar function available to pipelines: DataFusion's built-ins plus sluice's.
pub fn scalar_functions(config: &FunctionConfig) -> Vec<Arc<ScalarUDF>> {
    let mut f = datafusion_functions::all_default_functions();
    f.push(Arc::new(ScalarUDF::new_from_impl(hr_max::HrMax::new(config.hr_max.clone()))));
    f
}

/// Every aggregate function available to pipelines: DataFusion's built-ins plus sluice's.
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    let mut f = datafusion_functions_aggregate::all_default_aggregate_functions();
    f.push(Arc::new(AggregateUDF::new_from_impl(zones::HrZoneSeconds::default())));
    f.push(Arc::new(AggregateUDF::new_from_impl(top_k::ApproxTopK::default())));
    // Later entries win: these replace DataFusion's functions of the same names.
    f.push(Arc::new(AggregateUDF::new_from_impl(percentile::ApproxPercentile::percentile())));
    f.push(Arc::new(AggregateUDF::new_from_impl(percentile::ApproxPercentile::median())));
    f
}

/// The value of an aggregate's argument `i` when it is a constant (a literal, or an expression
/// of literals), or `None` when it is absent or depends on the row.
pub(crate) fn literal_arg(args: &AccumulatorArgs, i: usize) -> Option<ScalarValue> {
    let empty = arrow_array::RecordBatch::new_empty(Arc::new(arrow_schema::Schema::empty()));
    match args.exprs.get(i).map(|e| e.evaluate(&empty)) {
        Some(Ok(ColumnarValue::Scalar(v))) => Some(v),
        _ => None,
    }
}

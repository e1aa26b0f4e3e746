//! Functions sluice adds to DataFusion's built-ins for pipeline SQL:
//!
//! - [`zones`]: `hr_zone_seconds(heartbeat, time, hr_max)`, minutes per ACSM zone;
//! - [`hr_max`]: `hr_max(player_id)`, HRmax per player from the configuration;
//! - [`top_k`]: `approx_top_k(value, k)`, the most frequent values (a sketch).
//!
//! DataFusion's approximate aggregates, with their bounds (checked by `tests/sketches.rs`):
//! - `approx_distinct(x)`: HyperLogLog with 2^14 one-byte registers (16 KiB a window);
//!   standard error 1.04 / √16384 ≈ 0.81 % (Flajolet et al., "HyperLogLog", 2007).
//!   Integers and strings only.
//! - `approx_percentile_cont(x, q)`: a t-digest of at most 100 centroids (about 1.6 KiB);
//!   the returned value's rank is within about 1 % of q (Dunning and Ertl, "Computing
//!   extremely accurate quantiles using t-digests", 2019); the tests allow 1.5 %.

pub mod hr_max;
pub mod top_k;
pub mod zones;

use std::sync::Arc;

use datafusion_expr::{AggregateUDF, ScalarUDF};

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
    f
}

//! Operators: stateless steps, the windowed aggregates (aligned windows on grouped
//! accumulators; sessions and per-key clocks on per-key accumulators), alerts.

pub mod aligned;
pub mod alerts;
pub mod group_key;
pub mod keyed;
pub mod native;
pub mod steps;
pub mod window_agg;
pub(crate) mod window_io;
pub(crate) mod window_state;

//! Operators: stateless steps, the windowed aggregate, alerts.

pub mod alerts;
pub mod keyed;
pub mod steps;
pub mod window_agg;

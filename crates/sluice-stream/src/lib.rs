//! sluice-stream: the streaming SQL engine.
//!
//! Users declare pipelines in SQL ([`sql`], planned with DataFusion). Each pipeline runs
//! as a chain of [`operator`]s over Arrow batches decoded from its topic ([`decode`]):
//! stateless steps and the windowed aggregate ([`ops`], windows in [`window`]) with
//! watermarks, allowed lateness, deduplication, rollups and alerts. State is checkpointed
//! incrementally ([`state`]); one [`checkpoint`] covers every pipeline's offsets, state
//! and staged output, coordinated by the [`engine`], so output is exactly once.
//!
//! The engine reads through the [`runner::Source`] trait and writes through
//! [`runner::Sink`]: it never depends on how the log or the lake are served.
//!
//! - [`zones`] and [`functions`]: the heart-rate zone rule (ACSM) and the SQL functions
//!   sluice adds (`hr_zone_seconds`, `hr_max`, `approx_top_k`).

pub mod checkpoint;
pub mod decode;
pub mod engine;
pub mod functions;
pub mod operator;
pub mod ops;
pub mod pipeline;
mod reader;
pub mod runner;
pub mod sql;
pub mod state;
mod state_sync;
pub mod window;
pub mod zones;

use std::path::PathBuf;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the stream engine.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading the source failed")]
    Source(#[source] BoxError),
    #[error("the sink failed")]
    Sink(#[source] BoxError),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("evaluating the pipeline failed: {0}")]
    Eval(String),
    #[error("state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
}

pub use sluice_core::error_chain;

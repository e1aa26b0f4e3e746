//! sluice-stream: event-time processing for sluice.
//!
//! - [`zones`]: ACSM %HRmax intensity zones and reading coverage.
//! - [`session`]: per-player session windows (merging, folding, lateness).
//! - [`job`]: the heart-rate intensity job (pure: no I/O, no clock).
//! - [`checkpoint`]: checkpoint files and the recovery decision.
//! - [`runner`]: drives a job from a [`runner::Source`] into a [`runner::Sink`] with
//!   checkpoints. The source is a trait, so the engine never depends on how the log is
//!   served.

pub mod checkpoint;
pub mod job;
pub mod runner;
pub mod session;
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
}

//! Shared vocabulary of sluice.
//!
//! - [`heartbeat`]: the heart-rate reading schema (seed 003) and its validation.
//! - [`partitioner`]: Kafka's default murmur2 key partitioner, so keyed records land
//!   on the same partition whether they arrive over HTTP or (later) the Kafka protocol.
//! - [`model`]: row types shared by the stream engine and the lake.
//! - [`telemetry`]: every metric name, defined once.

pub mod dead_letter;
pub mod heartbeat;
pub mod model;
pub mod partitioner;
pub mod telemetry;
pub mod time;

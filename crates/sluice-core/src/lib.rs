//! Shared vocabulary of sluice.
//!
//! - [`schema`]: declared record schemas (fields, types, JSON paths, event time, key):
//!   validation at ingest and typed decoding for pipelines.
//! - [`heartbeat`]: the heart-rate reading (seed 003), a built-in declared schema.
//! - [`partitioner`]: Kafka's default murmur2 key partitioner, so keyed records land
//!   on the same partition whether they arrive over HTTP or (later) the Kafka protocol.
//! - [`model`]: row types shared by the stream engine and the lake.
//! - [`telemetry`]: every metric name, defined once.
//! - [`net`]: what listeners do when accept fails, and connection caps.
//! - [`quota`]: per-client rate quotas (Kafka's client quotas).
//! - [`events`]: processing-status events (checkpoints, pipeline state changes).

pub mod dead_letter;
pub mod events;
pub mod heartbeat;
pub mod model;
pub mod net;
pub mod partitioner;
pub mod quota;
pub mod schema;
pub mod telemetry;
pub mod time;

/// An error and its sources, joined with ": " (for logs and API messages).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut last = s.clone();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Some errors (DataFusion's) print their source in their own message too.
        let text = c.to_string();
        if !last.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        last = text;
        cur = c.source();
    }
    s
}

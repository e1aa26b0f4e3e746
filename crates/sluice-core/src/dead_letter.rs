//! Dead-letter records: what a rejected record looks like in its topic's dead-letter topic
//! (`<topic>.dlq`), whichever way it arrived (HTTP, WebSocket, Kafka).
//!
//! Value: a JSON object `{"topic", "index", "field", "reason", "record", "transport",
//! "received_at_ms"}`, plus `"partition"` and `"offset"` when the record was also stored in
//! its topic (Kafka produce keeps every record, so offsets stay as the producer was told).
//! `record` is the original record as text (invalid UTF-8 replaced); `index` its position
//! in the request, or null for a whole request that could not be parsed.

use serde_json::json;

/// Name suffix of a topic's dead-letter topic.
pub const DLQ_SUFFIX: &str = ".dlq";

/// Why and where a record was rejected.
pub struct DeadLetter<'a> {
    pub topic: &'a str,
    pub index: Option<usize>,
    pub field: &'a str,
    pub reason: &'a str,
    pub record: &'a str,
    pub transport: &'a str,
    pub received_at_ms: i64,
    /// (partition, offset) when the record was stored in `topic` as well.
    pub stored_at: Option<(u32, u64)>,
}

impl DeadLetter<'_> {
    /// The dead-letter record's value (JSON bytes).
    pub fn to_value(&self) -> Vec<u8> {
        let mut v = json!({
            "topic": self.topic,
            "index": self.index,
            "field": self.field,
            "reason": self.reason,
            "record": self.record,
            "transport": self.transport,
            "received_at_ms": self.received_at_ms,
        });
        if let (Some((partition, offset)), Some(obj)) = (self.stored_at, v.as_object_mut()) {
            obj.insert("partition".into(), partition.into());
            obj.insert("offset".into(), offset.into());
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

//! Decoding a record by a declared schema never panics, the byte decoder and the tree
//! decoder agree, and what decodes becomes an Arrow row of the schema's columns.
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/record_decode.rs` and the seed replay in
//! `crates/sluice/tests/fuzz_seeds.rs`.
use sluice_core::schema::{heartbeat, Decoder, RecordSchema};
use sluice_stream::decode::{BatchDecoder, SourceChunk};

fn declared() -> RecordSchema {
    serde_json::from_value(serde_json::json!({
        "event_time": "ts", "key": "id",
        "fields": [
            {"name": "id", "type": "string", "required": true, "max_length": 8},
            {"name": "n", "type": "int", "path": "$.a.b", "min": -5, "max": 5},
            {"name": "x", "type": "float", "path": "a.x"},
            {"name": "ok", "type": "bool"},
            {"name": "ts", "type": "timestamp", "required": true},
            {"name": "at", "type": "timestamp", "format": "rfc3339"}
        ]
    }))
    .expect("a valid schema")
}

/// Panics when the property fails (a finding); returns for any other input.
pub fn check(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else { return };
    let schema = if which & 1 == 0 { heartbeat() } else { declared() };
    let decoder = Decoder::new(schema.clone());
    let mut out = Vec::new();
    let by_bytes = decoder.decode(bytes, &mut out).map(|_| out.clone());
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        assert_eq!(by_bytes, schema.decode_value(&v), "the two decoders disagree");
    } else {
        assert!(by_bytes.is_err());
    }
    if let Err(e) = &by_bytes {
        assert!(!e.field.is_empty() && !e.reason.is_empty());
    }
    let mut batch = BatchDecoder::new(schema);
    let decoded = batch.decode(0, &SourceChunk::from_values(0, 0, [bytes])).expect("a batch");
    assert_eq!(decoded.batch.num_rows() + decoded.invalid.len(), 1);
}

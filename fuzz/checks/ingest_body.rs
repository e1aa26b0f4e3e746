//! Splitting an ingest body and validating its records never panics, and every record is
//! either valid or rejected with a named field.
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/ingest_body.rs` and the seed replay in
//! `crates/sluice/tests/fuzz_seeds.rs`.
use sluice_core::heartbeat::validate;
use sluice_gateway::body::split;

/// Panics when the property fails (a finding); returns for any other input.
pub fn check(data: &[u8]) {
    let ndjson = data.first().is_some_and(|b| b & 1 == 1);
    if let Ok(items) = split(data, ndjson) {
        for item in items {
            match item.value {
                Ok(v) => {
                    if let Err(e) = validate(&v) {
                        assert!(!e.field.is_empty() && !e.reason.is_empty());
                    }
                }
                Err(e) => assert_eq!(e.field, "$"),
            }
        }
    }
}

//! Planning arbitrary text as pipeline SQL never panics: it plans, or fails with a reason.
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/pipeline_sql.rs` and the seed replay in
//! `crates/sluice/tests/fuzz_seeds.rs`.
use sluice_stream::functions::FunctionConfig;
use sluice_stream::sql::{plan, Catalog};

/// Panics when the property fails (a finding); returns for any other input.
pub fn check(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let topics = [("heartbeat-raw-topic".to_string(), sluice_core::schema::heartbeat())].into_iter().collect();
    let catalog = Catalog::new(topics, &FunctionConfig::default());
    if let Err(e) = plan(sql, &catalog) {
        assert!(!e.message.is_empty());
    }
}

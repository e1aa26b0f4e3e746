//! Planning arbitrary text as pipeline SQL never panics: it plans, or fails with a reason.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_stream::functions::FunctionConfig;
use sluice_stream::sql::{plan, Catalog};

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let topics = [("heartbeat-raw-topic".to_string(), sluice_core::schema::heartbeat())].into_iter().collect();
    let catalog = Catalog::new(topics, &FunctionConfig::default());
    if let Err(e) = plan(sql, &catalog) {
        assert!(!e.message.is_empty());
    }
});

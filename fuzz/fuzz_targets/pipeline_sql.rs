//! Planning arbitrary text as pipeline SQL never panics: it plans, or fails with a reason.
#![no_main]

#[path = "../checks/pipeline_sql.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));

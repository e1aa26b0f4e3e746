//! Splitting an ingest body and validating its records never panics, and every record is
//! either valid or rejected with a named field.
#![no_main]

#[path = "../checks/ingest_body.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));

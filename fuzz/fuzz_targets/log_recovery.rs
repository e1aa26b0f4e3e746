//! Opening a log whose only segment holds arbitrary bytes never panics: it recovers (the
//! invalid tail truncated) or reports corruption; what it recovers reads back, and a
//! second open finds the same high watermark.
#![no_main]

#[path = "../checks/log_recovery.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));

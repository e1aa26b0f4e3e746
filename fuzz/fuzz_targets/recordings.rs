//! The recording readers (FIT, TCX, GPX) never panic on arbitrary bytes.
#![no_main]

#[path = "../checks/recordings.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));

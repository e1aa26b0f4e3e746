//! Decoding a record by a declared schema never panics, the byte decoder and the tree
//! decoder agree, and what decodes becomes an Arrow row of the schema's columns.
#![no_main]

#[path = "../checks/record_decode.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));

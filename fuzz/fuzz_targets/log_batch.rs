//! Batch decoding never panics, and whatever decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_log::batch::{decode_records, encode, NewRecord};

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    if let Ok(h) = decode_records(data, 0, &mut out) {
        let recs: Vec<NewRecord> = out.iter().map(|r| NewRecord { key: r.key.clone(), value: r.value.clone() }).collect();
        let mut again = Vec::new();
        encode(h.base_offset, h.append_time_ms, &recs, &mut again).expect("decoded batch re-encodes");
        assert_eq!(&again[..], &data[..h.total_len]);
    }
});

//! The recording readers (FIT, TCX, GPX) never panic on arbitrary bytes.
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/recordings.rs` and the seed replay in
//! `crates/sluice/tests/fuzz_seeds.rs`.

/// Panics when the property fails (a finding); returns for any other input.
pub fn check(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else { return };
    let name = match kind % 3 {
        0 => "x.fit",
        1 => "x.tcx",
        _ => "x.gpx",
    };
    if let Ok(readings) = sluice_replay::read_bytes(name, rest) {
        assert!(readings.windows(2).all(|w| w[0].time_ms < w[1].time_ms));
    }
}

//! The bundled real recordings (examples/data) parse into plausible heart-rate series.

use std::path::Path;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data").join(name)
}

#[test]
fn every_bundled_recording_reads() {
    // (file, heart-rate samples per the data README)
    let files = [
        ("20210119_run_garmin_fenix6.tcx", 1232),
        ("20210308_virtual_ride_with_power.tcx", 1434),
        ("20210323_yoga.tcx", 1170),
        ("hrv-activity.fit", 1072),
        ("sample_mulitple_header.fit", 1430),
        ("garmin-fenix-5-bike.fit", 19),
    ];
    for (name, expected) in files {
        let r = sluice_replay::read_file(&data(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(r.len() <= expected && r.len() + 5 >= expected, "{name}: {} samples, README says {expected}", r.len());
        assert!(r.windows(2).all(|w| w[0].time_ms < w[1].time_ms), "{name}: sorted, distinct");
        assert!(r.iter().all(|x| x.heartbeat_bpm > 0.0 && x.heartbeat_bpm < 250.0), "{name}");
    }
}

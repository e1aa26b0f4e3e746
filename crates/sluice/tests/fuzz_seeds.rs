//! Replays the committed fuzz seeds, `fuzz/seeds/<target>/*`, through each fuzz target's
//! check (`fuzz/checks/<target>.rs`, the same code the libFuzzer target runs). This is the
//! corpus replay CI runs on the stable toolchain; coverage-guided runs need `cargo fuzz`
//! (fuzz/README.md says how, and what they found). The seeds are minimized corpora from
//! such runs, so each one reaches code the others do not.

#[path = "../../../fuzz/checks/ingest_body.rs"]
mod ingest_body;
#[path = "../../../fuzz/checks/kafka_request.rs"]
mod kafka_request;
#[path = "../../../fuzz/checks/log_batch.rs"]
mod log_batch;
#[path = "../../../fuzz/checks/log_recovery.rs"]
mod log_recovery;
#[path = "../../../fuzz/checks/pipeline_sql.rs"]
mod pipeline_sql;
#[path = "../../../fuzz/checks/record_decode.rs"]
mod record_decode;
#[path = "../../../fuzz/checks/recordings.rs"]
mod recordings;

use std::path::{Path, PathBuf};

/// Runs every seed of `target` through `check`; fails naming each seed that panicked.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds").join(target);
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
    seeds.sort();
    assert!(seeds.len() >= 5, "{}: only {} seeds; regenerate them (fuzz/README.md)", dir.display(), seeds.len());
    let mut failed = Vec::new();
    for seed in &seeds {
        let data = std::fs::read(seed).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(seed.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: {} of {} seeds fail: {failed:?}", failed.len(), seeds.len());
    eprintln!("{target}: {} seeds pass", seeds.len());
}

#[test]
fn ingest_body_seeds() {
    replay("ingest_body", ingest_body::check);
}

#[test]
fn kafka_request_seeds() {
    replay("kafka_request", kafka_request::check);
}

#[test]
fn log_batch_seeds() {
    replay("log_batch", log_batch::check);
}

#[test]
fn log_recovery_seeds() {
    replay("log_recovery", log_recovery::check);
}

#[test]
fn pipeline_sql_seeds() {
    replay("pipeline_sql", pipeline_sql::check);
}

#[test]
fn record_decode_seeds() {
    replay("record_decode", record_decode::check);
}

#[test]
fn recordings_seeds() {
    replay("recordings", recordings::check);
}

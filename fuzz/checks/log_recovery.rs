//! Opening a log whose only segment holds arbitrary bytes never panics: it recovers (the
//! invalid tail truncated) or reports corruption; what it recovers reads back, and a
//! second open finds the same high watermark.
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/log_recovery.rs` and the seed replay in
//! `crates/sluice/tests/fuzz_seeds.rs`.
use sluice_log::{Log, LogConfig};

/// Panics when the property fails (a finding); returns for any other input.
pub fn check(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("sluice-fuzz-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("_topics")).unwrap();
    std::fs::create_dir_all(dir.join("t-0")).unwrap();
    std::fs::write(dir.join("_topics/t.json"), br#"{"name":"t","partitions":1}"#).unwrap();
    std::fs::write(dir.join("t-0").join(format!("{:020}.log", 0)), data).unwrap();
    let hw = match Log::open(&dir, LogConfig::default()) {
        Ok(log) => {
            let p = log.topic("t").unwrap().partition(0).unwrap().clone();
            let all = p.read(0, usize::MAX, usize::MAX).expect("recovered data reads back");
            assert_eq!(all.len() as u64, p.high_watermark());
            Some(p.high_watermark())
        }
        Err(_) => None,
    };
    if let Some(hw) = hw {
        let log = Log::open(&dir, LogConfig::default()).expect("a recovered log reopens");
        assert_eq!(log.topic("t").unwrap().partition(0).unwrap().high_watermark(), hw);
    }
}

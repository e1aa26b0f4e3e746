//! What the log does when the disk fails: the write is refused with a clear error, the
//! partition is poisoned (no further writes until restart, as PostgreSQL and fjall do after
//! a failed fsync), reads keep working, and a restart recovers every acknowledged record.

use sluice_log::{Log, LogConfig, LogError, NewRecord};

fn rec(i: u64) -> NewRecord {
    NewRecord::new(None, format!("v{i}").into_bytes())
}

#[test]
fn failed_fsync_poisons_and_restart_recovers_acked_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        for i in 0..3 {
            p.append(&[rec(i)], 0).unwrap();
        }
        log.faults().fail_next_fsync();
        let err = p.append(&[rec(3)], 0).unwrap_err();
        assert!(matches!(err, LogError::Io { .. }), "{err}");
        assert!(err.to_string().contains("Input/output error"), "{err}");
        assert_eq!(p.high_watermark(), 3, "the unsynced batch is not served");
        let refused = p.append(&[rec(4)], 0).unwrap_err();
        assert!(matches!(refused, LogError::Poisoned { .. }), "{refused}");
        assert!(refused.to_string().contains("restart"), "says what to do: {refused}");
        assert_eq!(p.read(0, 10, usize::MAX).unwrap().len(), 3, "reads keep working");
    }
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let values: Vec<Vec<u8>> = p.read(0, 10, usize::MAX).unwrap().into_iter().map(|r| r.value).collect();
    assert_eq!(&values[..3], &[b"v0".to_vec(), b"v1".to_vec(), b"v2".to_vec()], "every acked record is back");
    assert!(values.len() <= 4, "the unacked record may survive, nothing else");
    p.append(&[rec(9)], 0).expect("a restart clears the poison");
}

#[test]
fn failed_write_is_refused_with_enospc_and_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let t = log.create_topic("t", 2).unwrap();
    t.partition(0).unwrap().append(&[rec(0)], 0).unwrap();
    log.faults().fail_next_write();
    let err = t.partition(0).unwrap().append(&[rec(1)], 0).unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(matches!(t.partition(0).unwrap().append(&[rec(2)], 0), Err(LogError::Poisoned { .. })));
    assert_eq!(t.partition(0).unwrap().read(0, 10, usize::MAX).unwrap().len(), 1);
    // The whole log is poisoned: the disk is suspect for every partition and topic.
    assert!(matches!(t.partition(1).unwrap().append(&[rec(3)], 0), Err(LogError::Poisoned { .. })));
    let other = log.create_topic("u", 1).unwrap();
    assert!(matches!(other.partition(0).unwrap().append(&[rec(4)], 0), Err(LogError::Poisoned { .. })));
    assert!(log.poison().reason().unwrap().contains("No space left on device"));
}

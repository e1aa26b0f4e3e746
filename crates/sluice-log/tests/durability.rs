//! The per-topic durability policy: fsync before the ack (default), or ack after the write
//! with a flush every interval.

use std::time::Duration;

use sluice_log::{Durability, Log, LogConfig, NewRecord};

fn rec(i: u64) -> NewRecord {
    NewRecord::new(None, format!("v{i}").into_bytes())
}

#[test]
fn interval_policy_acks_before_fsync_and_flushes_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        log.create_topic("t", 1).unwrap();
        log.set_durability("t", Durability::Interval { flush_interval_ms: 200 }).unwrap();
        let p = log.topic("t").unwrap().partition(0).unwrap().clone();
        let before = p.fsync_count();
        for i in 0..10 {
            p.append(&[rec(i)], 0).unwrap();
        }
        assert_eq!(p.fsync_count(), before, "acked without an fsync");
        assert_eq!(p.high_watermark(), 10, "acked records are readable at once");
        assert_eq!(p.log_end_offset(), 10);
        assert_eq!(p.read(0, 100, usize::MAX).unwrap().len(), 10);
        assert!(p.durable_offset() < 10);
        // A flush now makes everything durable and restarts the interval...
        p.sync_to(p.high_watermark()).unwrap();
        assert_eq!(p.durable_offset(), 10);
        p.append(&[rec(10)], 0).unwrap();
        // ...so the next one is not due before the interval has passed,
        assert!(!p.flush_if_due().unwrap());
        assert_eq!(p.durable_offset(), 10);
        std::thread::sleep(Duration::from_millis(250));
        // and is due after it.
        assert_eq!(log.flush_due().unwrap(), 1);
        assert_eq!(p.durable_offset(), 11);
        assert!(!p.flush_if_due().unwrap(), "nothing left to flush");
    }
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.topic("t").unwrap().durability(), Durability::Interval { flush_interval_ms: 200 }, "persisted");
    assert_eq!(log.topic("t").unwrap().partition(0).unwrap().high_watermark(), 11);
}

#[test]
fn fsync_policy_is_durable_at_ack() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    assert_eq!(log.topic("t").unwrap().durability(), Durability::Fsync);
    for i in 0..5 {
        p.append(&[rec(i)], 0).unwrap();
        assert_eq!(p.durable_offset(), i + 1);
        assert_eq!(p.high_watermark(), i + 1);
    }
    assert_eq!(log.flush_due().unwrap(), 0);
}

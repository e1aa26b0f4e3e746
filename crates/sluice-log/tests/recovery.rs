//! Reopen and crash-recovery scenarios on real files.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;

use sluice_log::{Log, LogConfig, LogError, NewRecord};

fn rec(i: u64) -> NewRecord {
    NewRecord::new(Some(format!("k{i}").into_bytes()), format!("value-{i}").into_bytes())
}

fn values(log: &Log, topic: &str, p: u32) -> Vec<String> {
    let part = log.topic(topic).unwrap().partition(p).unwrap().clone();
    part.read(0, usize::MAX, usize::MAX).unwrap().into_iter().map(|r| String::from_utf8(r.value).unwrap()).collect()
}

#[test]
fn reopen_keeps_every_acked_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let t = log.create_topic("t", 2).unwrap();
        for i in 0..10 {
            let info = t.partition((i % 2) as u32).unwrap().append(&[rec(i)], 1).unwrap();
            assert_eq!(info.base_offset, i / 2);
        }
    }
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(values(&log, "t", 0), ["value-0", "value-2", "value-4", "value-6", "value-8"]);
    assert_eq!(log.topic("t").unwrap().partition(1).unwrap().high_watermark(), 5);
}

#[test]
fn torn_tail_is_truncated_not_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let t = log.create_topic("t", 1).unwrap();
        t.partition(0).unwrap().append(&[rec(0), rec(1)], 1).unwrap();
    }
    let seg = dir.path().join("t-0").join(format!("{:020}.log", 0));
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // A crash mid-write leaves part of a batch behind.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[2, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(f);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(values(&log, "t", 0), ["value-0", "value-1"]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
    // Appends continue at the right offset.
    let info = log.topic("t").unwrap().partition(0).unwrap().append(&[rec(2)], 1).unwrap();
    assert_eq!(info.base_offset, 2);
}

#[test]
fn flipped_byte_in_tail_batch_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let t = log.create_topic("t", 1).unwrap();
        t.partition(0).unwrap().append(&[rec(0)], 1).unwrap();
        t.partition(0).unwrap().append(&[rec(1)], 1).unwrap();
    }
    let seg = dir.path().join("t-0").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(values(&log, "t", 0), ["value-0"]);
}

#[test]
fn corruption_in_a_closed_segment_is_reported_on_read_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { segment_bytes: 200, ..LogConfig::default() };
    {
        let log = Log::open(dir.path(), cfg).unwrap();
        let t = log.create_topic("t", 1).unwrap();
        for i in 0..20 {
            t.partition(0).unwrap().append(&[rec(i)], 1).unwrap();
        }
        assert!(t.partition(0).unwrap().segment_count() > 2);
    }
    let seg = dir.path().join("t-0").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[30] ^= 1;
    std::fs::write(&seg, bytes).unwrap();
    // The closed segment's index is trusted at open (no scan), so the log opens...
    let log = Log::open(dir.path(), cfg).unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    // ...and the damage is found by CRC when a read reaches it, with file and position.
    match p.read(0, 100, usize::MAX) {
        Err(LogError::Corrupt { path, position, .. }) => {
            assert_eq!(path, seg);
            assert_eq!(position, 0);
        }
        other => panic!("damaged bytes must not be served: {other:?}"),
    }
    // Records in other segments are still served.
    let later = p.read(15, 100, usize::MAX).unwrap();
    assert_eq!(later.first().map(|r| r.offset), Some(15));
    assert_eq!(later.len(), 5);
    drop(log);
    // Without the index, the open scans the closed segment and reports the damage there.
    std::fs::remove_file(seg.with_extension("index")).unwrap();
    match Log::open(dir.path(), cfg).err().expect("corruption found by the scan") {
        LogError::Corrupt { path, position, .. } => assert_eq!((path, position), (seg, 0)),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn closed_segments_open_from_their_index_and_stale_ones_are_rescanned() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { segment_bytes: 300, ..LogConfig::default() };
    {
        let log = Log::open(dir.path(), cfg).unwrap();
        let t = log.create_topic("t", 1).unwrap();
        for i in 0..40 {
            t.partition(0).unwrap().append(&[rec(i)], 1_000 + i as i64).unwrap();
        }
    }
    let part = dir.path().join("t-0");
    let indexes = std::fs::read_dir(&part).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "index")).count();
    let logs = std::fs::read_dir(&part).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log")).count();
    assert_eq!(indexes, logs - 1, "every closed segment has an index, the active one none");
    // A damaged index is ignored: the segment is rescanned and the index rewritten.
    let first_index = part.join(format!("{:020}.index", 0));
    let mut bytes = std::fs::read(&first_index).unwrap();
    bytes[50] ^= 0xff;
    std::fs::write(&first_index, &bytes).unwrap();
    let log = Log::open(dir.path(), cfg).unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let all: Vec<u64> = p.read(0, usize::MAX, usize::MAX).unwrap().iter().map(|r| r.offset).collect();
    assert_eq!(all, (0..40).collect::<Vec<_>>());
    assert_ne!(std::fs::read(&first_index).unwrap(), bytes, "the index was rewritten");
    // Time lookups use the time index (batch i was appended at 1000 + i ms).
    assert_eq!(p.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(1_017).unwrap(), Some(17));
    assert_eq!(p.offset_for_timestamp(1_039).unwrap(), Some(39));
    assert_eq!(p.offset_for_timestamp(1_040).unwrap(), None);
}

#[test]
fn rolled_segments_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { segment_bytes: 300, ..LogConfig::default() };
    {
        let log = Log::open(dir.path(), cfg).unwrap();
        let t = log.create_topic("t", 1).unwrap();
        for i in 0..50 {
            t.partition(0).unwrap().append(&[rec(i)], 1).unwrap();
        }
    }
    let log = Log::open(dir.path(), cfg).unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    assert!(p.segment_count() > 5);
    let all: Vec<u64> = p.read(0, usize::MAX, usize::MAX).unwrap().iter().map(|r| r.offset).collect();
    assert_eq!(all, (0..50).collect::<Vec<_>>());
    let from: Vec<u64> = p.read(17, 5, usize::MAX).unwrap().iter().map(|r| r.offset).collect();
    assert_eq!(from, vec![17, 18, 19, 20, 21]);
}

#[test]
fn concurrent_writers_share_fsyncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
    let t = log.create_topic("t", 1).unwrap();
    let p = t.partition(0).unwrap().clone();
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    p.append(&[rec(w * 1000 + i)], 1).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(p.high_watermark(), 400);
    assert!(p.fsync_count() <= 400);
    let mut got = values(&log, "t", 0);
    got.sort();
    let mut want: Vec<String> = (0..8).flat_map(|w| (0..50).map(move |i| format!("value-{}", w * 1000 + i))).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn bad_topic_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    for name in ["", ".", "..", "a/b", "sp ace"] {
        assert!(matches!(log.create_topic(name, 1), Err(LogError::InvalidTopicName { .. })), "{name:?}");
    }
    log.create_topic("ok.name_1-x", 1).unwrap();
    assert!(matches!(log.create_topic("ok.name_1-x", 1), Err(LogError::TopicExists { .. })));
}

#[test]
fn clean_close_indexes_the_active_segment_and_a_later_crash_still_rescans() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let t = log.create_topic("t", 1).unwrap();
        for i in 0..10 {
            t.partition(0).unwrap().append(&[rec(i)], 1).unwrap();
        }
        log.close().unwrap();
    }
    let seg = dir.path().join("t-0").join(format!("{:020}.log", 0));
    assert!(seg.with_extension("index").exists(), "a clean close indexes the active segment");
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let p = log.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!(p.high_watermark(), 10);
        // More appends, then a crash (no close) that leaves a torn batch behind.
        for i in 10..15 {
            p.append(&[rec(i)], 1).unwrap();
        }
    }
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[15, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 1, 2]).unwrap();
    drop(f);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(values(&log, "t", 0).len(), 15, "the stale index is ignored: the segment is scanned, the tail cut");
    assert_eq!(log.topic("t").unwrap().partition(0).unwrap().append(&[rec(15)], 1).unwrap().base_offset, 15);
}

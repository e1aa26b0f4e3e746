//! Consumer offsets live in the log and survive restarts.

use sluice_log::{Log, LogConfig, OffsetCommit, OffsetStore, OFFSETS_TOPIC};

fn commit(topic: &str, partition: u32, offset: u64) -> OffsetCommit {
    OffsetCommit { topic: topic.into(), partition, offset, metadata: format!("m{offset}") }
}

#[test]
fn offsets_survive_restart_latest_wins_and_groups_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let store = OffsetStore::open(&log).unwrap();
        store.commit("g1", &[commit("t", 0, 5), commit("t", 1, 7)], 1).unwrap();
        store.commit("g1", &[commit("t", 0, 9)], 2).unwrap();
        store.commit("g2", &[commit("t", 0, 1)], 3).unwrap();
        store.commit("gone", &[commit("t", 0, 1)], 3).unwrap();
        assert_eq!(store.delete_group("gone", 4).unwrap(), 1);
        assert_eq!(store.fetch("g1", "t", 0).unwrap().offset, 9);
    }
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let store = OffsetStore::open(&log).unwrap();
    let g1 = store.fetch("g1", "t", 0).unwrap();
    assert_eq!((g1.offset, g1.metadata.as_str(), g1.commit_ms), (9, "m9", 2));
    assert_eq!(store.fetch("g1", "t", 1).unwrap().offset, 7);
    assert_eq!(store.fetch("g2", "t", 0).unwrap().offset, 1);
    assert!(store.fetch("gone", "t", 0).is_none(), "tombstones delete");
    assert_eq!(store.groups(), vec!["g1".to_string(), "g2".to_string()]);
    assert_eq!(store.group("g1").len(), 2);
    // The offsets live in an internal topic that is never expired by time or size.
    let t = log.topic(OFFSETS_TOPIC).unwrap();
    assert_eq!(t.retention().ms, -1);
    assert_eq!(t.partition(0).unwrap().high_watermark(), 6);
}

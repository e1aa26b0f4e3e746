//! `Partition::read_raw` (what a Kafka Fetch serves) hands a consumer every offset exactly
//! once when it fetches from where it left off, across segment boundaries and whatever the
//! byte limit. (Regression: a batch that did not fit at the end of one segment used to be
//! skipped, and the read went on into the next segment.)

use sluice_log::batch::{decode_records, NewRecord};
use sluice_log::{Log, LogConfig};

#[test]
fn fetching_from_where_it_left_off_reads_every_offset_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig { segment_bytes: 4096, ..LogConfig::default() }).unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let mut expected = 0u64;
    for i in 0..300u64 {
        // Batches of 1 to 7 records of 10 to 400 bytes: many segments, uneven batches.
        let n = 1 + (i * 7 % 7) as usize;
        let records: Vec<NewRecord> = (0..n).map(|j| NewRecord::new(None, vec![b'v'; 10 + ((i as usize * 31 + j * 17) % 390)])).collect();
        p.append(&records, 0).unwrap();
        expected += n as u64;
    }
    assert!(std::fs::read_dir(dir.path().join("t-0")).unwrap().count() > 20, "many segments");
    for max_bytes in [1, 500, 1000, 3000, 5000, 1 << 20] {
        let mut next = 0u64;
        let mut seen = Vec::new();
        while next < expected {
            let raw = p.read_raw(next, max_bytes).unwrap();
            assert!(!raw.is_empty(), "no progress at {next} with max_bytes {max_bytes}");
            let mut at = 0;
            while at < raw.len() {
                let mut recs = Vec::new();
                let h = decode_records(&raw[at..], 0, &mut recs).unwrap();
                for r in recs {
                    if r.offset < next {
                        continue; // the first batch may start before the fetch offset
                    }
                    assert_eq!(r.offset, next, "max_bytes {max_bytes}: offsets must follow on");
                    seen.push(r.offset);
                    next += 1;
                }
                at += h.total_len;
            }
        }
        assert_eq!(seen, (0..expected).collect::<Vec<_>>());
    }
}

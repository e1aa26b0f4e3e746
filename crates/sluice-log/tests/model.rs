//! Model-based property test: random appends, reads and reopens against an in-memory model.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sluice_log::{Log, LogConfig, NewRecord, Retention};

#[derive(Debug, Clone)]
enum Op {
    Append { partition: u32, sizes: Vec<usize> },
    Read { partition: u32, from: u64, max: usize },
    /// A read limited by bytes as well (whole batches, at least one).
    ReadBytes { partition: u32, from: u64, max: usize, max_bytes: usize },
    /// A Kafka Fetch's read: whole stored batches, about `max_bytes`.
    ReadRaw { partition: u32, from: u64, max_bytes: usize },
    /// Drop without closing (as after a crash) and open again.
    Reopen,
    /// Clean close (active segments indexed) and open again.
    CloseReopen,
    Retention { bytes: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..2, prop::collection::vec(0usize..120, 1..6)).prop_map(|(partition, sizes)| Op::Append { partition, sizes }),
        3 => (0u32..2, 0u64..40, 1usize..20).prop_map(|(partition, from, max)| Op::Read { partition, from, max }),
        3 => (0u32..2, 0u64..40, 1usize..600).prop_map(|(partition, from, max_bytes)| Op::ReadRaw { partition, from, max_bytes }),
        2 => (0u32..2, 0u64..40, 1usize..20, 1usize..600).prop_map(|(partition, from, max, max_bytes)| Op::ReadBytes { partition, from, max, max_bytes }),
        1 => Just(Op::Reopen),
        1 => Just(Op::CloseReopen),
        1 => (0i64..1500).prop_map(|bytes| Op::Retention { bytes }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]
    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes: 400, ..LogConfig::default() };
        let mut log = Log::open(dir.path(), cfg).unwrap();
        log.create_topic("m", 2).unwrap();
        let mut model: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
        // Per partition: offsets below this were deleted by retention.
        let mut start = [0u64; 2];
        // Offsets where a batch begins (retention deletes whole segments of whole batches).
        let mut batch_starts: Vec<Vec<u64>> = vec![vec![0], vec![0]];
        let mut n = 0u8;
        for op in ops {
            match op {
                Op::Append { partition, sizes } => {
                    let recs: Vec<NewRecord> = sizes.iter().map(|&s| { n = n.wrapping_add(1); NewRecord::new(None, vec![n; s]) }).collect();
                    let info = log.topic("m").unwrap().partition(partition).unwrap().append(&recs, 5).unwrap();
                    prop_assert_eq!(info.base_offset, model[partition as usize].len() as u64);
                    model[partition as usize].extend(recs.into_iter().map(|r| r.value));
                    batch_starts[partition as usize].push(model[partition as usize].len() as u64);
                }
                Op::Read { partition, from, max } => {
                    let got = log.topic("m").unwrap().partition(partition).unwrap().read(from, max, usize::MAX).unwrap();
                    let want: Vec<(u64, Vec<u8>)> = model[partition as usize].iter().enumerate()
                        .skip(from.max(start[partition as usize]) as usize).take(max).map(|(i, v)| (i as u64, v.clone())).collect();
                    let got: Vec<(u64, Vec<u8>)> = got.into_iter().map(|r| (r.offset, r.value)).collect();
                    prop_assert_eq!(got, want);
                }
                Op::ReadBytes { partition, from, max, max_bytes } => {
                    let got: Vec<(u64, Vec<u8>)> = log.topic("m").unwrap().partition(partition).unwrap().read(from, max, max_bytes).unwrap()
                        .into_iter().map(|r| (r.offset, r.value)).collect();
                    let first = from.max(start[partition as usize]) as usize;
                    let want: Vec<(u64, Vec<u8>)> = model[partition as usize].iter().enumerate().skip(first).take(got.len()).map(|(i, v)| (i as u64, v.clone())).collect();
                    prop_assert!(got.len() <= max);
                    prop_assert_eq!(&got, &want);
                    prop_assert!(!got.is_empty() || first >= model[partition as usize].len());
                }
                Op::ReadRaw { partition, from, max_bytes } => {
                    let raw = log.topic("m").unwrap().partition(partition).unwrap().read_raw(from, max_bytes).unwrap();
                    let mut got = Vec::new();
                    let mut at = 0;
                    while at < raw.len() {
                        let mut recs = Vec::new();
                        at += sluice_log::batch::decode_records(&raw[at..], 0, &mut recs).unwrap().total_len;
                        got.extend(recs.into_iter().filter(|r| r.offset >= from).map(|r| (r.offset, r.value)));
                    }
                    // A run of the model from `from` (or the log start): never a gap, and at
                    // least one record when any is there.
                    let first = from.max(start[partition as usize]) as usize;
                    let want: Vec<(u64, Vec<u8>)> = model[partition as usize].iter().enumerate().skip(first).take(got.len()).map(|(i, v)| (i as u64, v.clone())).collect();
                    prop_assert_eq!(&got, &want);
                    prop_assert!(!got.is_empty() || first >= model[partition as usize].len());
                }
                Op::Reopen => {
                    drop(log);
                    log = Log::open(dir.path(), cfg).unwrap();
                }
                Op::CloseReopen => {
                    log.close().unwrap();
                    drop(log);
                    log = Log::open(dir.path(), cfg).unwrap();
                }
                Op::Retention { bytes } => {
                    log.set_retention("m", Retention { ms: -1, bytes }).unwrap();
                    log.apply_retention(0).unwrap();
                    for p in 0..2u32 {
                        let part = log.topic("m").unwrap().partition(p).unwrap().clone();
                        let s = part.log_start_offset();
                        prop_assert!(s >= start[p as usize], "the log start offset never moves back");
                        prop_assert!(batch_starts[p as usize].contains(&s), "starts on a batch boundary");
                        prop_assert!(s <= model[p as usize].len() as u64);
                        start[p as usize] = s;
                    }
                }
            }
        }
    }
}

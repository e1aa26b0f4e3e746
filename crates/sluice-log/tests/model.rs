//! Model-based property test: random appends, reads and reopens against an in-memory model.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sluice_log::{Log, LogConfig, NewRecord};

#[derive(Debug, Clone)]
enum Op {
    Append { partition: u32, sizes: Vec<usize> },
    Read { partition: u32, from: u64, max: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..2, prop::collection::vec(0usize..120, 1..6)).prop_map(|(partition, sizes)| Op::Append { partition, sizes }),
        3 => (0u32..2, 0u64..40, 1usize..20).prop_map(|(partition, from, max)| Op::Read { partition, from, max }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
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
        let mut n = 0u8;
        for op in ops {
            match op {
                Op::Append { partition, sizes } => {
                    let recs: Vec<NewRecord> = sizes.iter().map(|&s| { n = n.wrapping_add(1); NewRecord { key: None, value: vec![n; s] } }).collect();
                    let info = log.topic("m").unwrap().partition(partition).unwrap().append(&recs, 5).unwrap();
                    prop_assert_eq!(info.base_offset, model[partition as usize].len() as u64);
                    model[partition as usize].extend(recs.into_iter().map(|r| r.value));
                }
                Op::Read { partition, from, max } => {
                    let got = log.topic("m").unwrap().partition(partition).unwrap().read(from, max, usize::MAX).unwrap();
                    let want: Vec<(u64, Vec<u8>)> = model[partition as usize].iter().enumerate()
                        .skip(from as usize).take(max).map(|(i, v)| (i as u64, v.clone())).collect();
                    let got: Vec<(u64, Vec<u8>)> = got.into_iter().map(|r| (r.offset, r.value)).collect();
                    prop_assert_eq!(got, want);
                }
                Op::Reopen => {
                    drop(log);
                    log = Log::open(dir.path(), cfg).unwrap();
                }
            }
        }
    }
}

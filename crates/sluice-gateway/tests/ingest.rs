//! Ingest against a real log on disk: per-record errors, dead letters, partitioning.

use std::sync::Arc;

use serde_json::Value;
use sluice_core::schema::SchemaSpec;
use sluice_gateway::{Gateway, IngestError, TopicSpec};
use sluice_log::{Log, LogConfig};

fn gateway(dir: &std::path::Path) -> Gateway {
    let log = Arc::new(Log::open(dir, LogConfig::default()).unwrap());
    let spec = TopicSpec { name: "hb".into(), partitions: 2, schema: SchemaSpec::Named("heartbeat".into()), key_field: None, retention_ms: -1, retention_bytes: -1, durability: Default::default(), flush_interval_ms: 1000, max_message_bytes: sluice_log::DEFAULT_MAX_MESSAGE_BYTES };
    Gateway::new(log, vec![spec], None).unwrap()
}

fn dlq(gw: &Gateway) -> Vec<Value> {
    let t = gw.log().topic("hb.dlq").unwrap();
    t.partition(0).unwrap().read(0, 1000, usize::MAX).unwrap().iter().map(|r| serde_json::from_slice(&r.value).unwrap()).collect()
}

#[test]
fn bad_records_are_rejected_one_by_one_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path());
    let body = br#"[
        {"playerId": "a", "heartbeat": 80, "createdAt": [2023, 11, 23, 10, 0, 0, 0]},
        {"playerId": "a", "heartbeat": 300, "createdAt": [2023, 11, 23, 10, 0, 1, 0]},
        {"heartbeat": 80, "createdAt": 1700000000000},
        {"playerId": "b", "heartbeat": "fast", "createdAt": 1700000000000},
        {"playerId": "b", "heartbeat": 90, "createdAt": "2023-11-23T10:00:02Z"}
    ]"#;
    let r = gw.ingest("hb", body, false, "test").unwrap();
    assert_eq!(r.accepted.iter().map(|a| a.index).collect::<Vec<_>>(), vec![0, 4]);
    let fields: Vec<(usize, &str)> = r.rejected.iter().map(|e| (e.index, e.field.as_str())).collect();
    assert_eq!(fields, vec![(1, "heartbeat"), (2, "playerId"), (3, "heartbeat")]);
    assert!(r.rejected[0].reason.contains("300"));
    let dead = dlq(&gw);
    assert_eq!(dead.len(), 3);
    assert_eq!(dead[0]["field"], "heartbeat");
    assert_eq!(dead[0]["index"], 1);
    assert!(dead[0]["record"].as_str().unwrap().contains("300"));
    // The stored value is the record as sent.
    let a = &r.accepted[0];
    let stored = gw.log().topic("hb").unwrap().partition(a.partition).unwrap().read(a.offset, 1, usize::MAX).unwrap();
    assert!(String::from_utf8_lossy(&stored[0].value).contains(r#""playerId": "a""#));
}

#[test]
fn same_player_same_partition() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path());
    let mut parts = std::collections::BTreeMap::new();
    for i in 0..60 {
        let body = format!(r#"{{"playerId":"p{}","heartbeat":80,"createdAt":{}}}"#, i % 20, 1_700_000_000_000i64 + i);
        let r = gw.ingest("hb", body.as_bytes(), false, "test").unwrap();
        let p = r.accepted[0].partition;
        assert_eq!(*parts.entry(i % 20).or_insert(p), p);
    }
    assert!(parts.values().any(|&p| p == 0) && parts.values().any(|&p| p == 1));
}

#[test]
fn malformed_body_and_unknown_topic() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path());
    match gw.ingest("hb", b"{\"playerId\": ", false, "test") {
        Err(IngestError::Malformed(m)) => assert!(m.line >= 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(dlq(&gw).len(), 1, "a malformed body is kept too");
    assert!(matches!(gw.ingest("nope", b"{}", false, "test"), Err(IngestError::UnknownTopic(_))));
}

#[test]
fn frames_ingested_together_get_their_own_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path());
    let f1 = br#"{"playerId":"a","heartbeat":80,"createdAt":1}"#.to_vec();
    let f2 = b"{\"playerId\":\"a\",\"heartbeat\":81,\"createdAt\":2}\n{\"playerId\":\"a\",\"heartbeat\":82,\"createdAt\":3}".to_vec();
    let f3 = b"not json".to_vec();
    let out = gw.ingest_many("hb", &[(&f1, false), (&f2, false), (&f3, false)], "test").unwrap();
    let o1 = out[0].as_ref().unwrap();
    let o2 = out[1].as_ref().unwrap();
    assert_eq!(o1.accepted.len(), 1);
    assert_eq!(o2.accepted.len(), 2);
    assert_eq!(o2.accepted[0].offset, o1.accepted[0].offset + 1);
    assert!(out[2].is_err());
}

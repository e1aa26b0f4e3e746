//! Ingest into an external log (`Gateway::use_external`), here a second sluice log on disk
//! standing in for the cluster: acks carry that log's offsets, records are partitioned by
//! its partition counts, dead letters go to its `.dlq` topic, and nothing is written to
//! the gateway's own log. (`tests/e2e/test_edge_ingest.py` runs the same path against a
//! real Kafka-protocol server through librdkafka.)

use std::sync::Arc;

use sluice_core::schema::SchemaSpec;
use sluice_gateway::{BoxError, ExternalLog, Gateway, TopicSpec};
use sluice_log::{Log, LogConfig, NewRecord};

struct OtherLog(Arc<Log>);

impl ExternalLog for OtherLog {
    fn describe(&self) -> String {
        "other-log".into()
    }
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.0.topic(topic).map(|t| t.partition_count())
    }
    fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<u32, BoxError> {
        Ok(self.0.ensure_topic(topic, partitions)?.partition_count())
    }
    fn append(&self, batches: &[(&str, u32, &[NewRecord])]) -> Result<Vec<Vec<u64>>, BoxError> {
        let mut out = Vec::new();
        for (topic, p, records) in batches {
            let t = self.0.topic(topic).ok_or("no topic")?;
            let part = t.partition(*p)?;
            let info = part.write(records, 0)?;
            part.complete(&info)?;
            out.push((0..records.len() as u64).map(|i| info.base_offset + i).collect());
        }
        Ok(out)
    }
}

#[test]
fn acks_carry_the_external_logs_offsets_and_partitions() {
    let (own_dir, cluster_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let own = Arc::new(Log::open(own_dir.path(), LogConfig::default()).unwrap());
    let cluster = Arc::new(Log::open(cluster_dir.path(), LogConfig::default()).unwrap());
    // The cluster already has the topic, with more partitions than configured here.
    cluster.ensure_topic("hb", 4).unwrap();
    let spec = TopicSpec { name: "hb".into(), partitions: 2, schema: SchemaSpec::Named("heartbeat".into()), key_field: None, retention_ms: -1, retention_bytes: -1, durability: Default::default(), flush_interval_ms: 1000, max_message_bytes: sluice_log::DEFAULT_MAX_MESSAGE_BYTES };
    let gw = Gateway::new(own.clone(), vec![spec.clone()], None).unwrap();
    gw.use_external(Arc::new(OtherLog(cluster.clone())), &[spec]).unwrap();
    assert!(cluster.topic("hb.dlq").is_some(), "the dead-letter topic is created on the cluster");
    let body: String = (0..40).map(|i| format!(r#"{{"playerId":"p{i}","heartbeat":{},"createdAt":{}}}"#, 60 + i, 1_700_000_000_000i64 + i) + "\n").collect::<String>() + r#"{"playerId":"bad","heartbeat":999,"createdAt":1}"#;
    let r = gw.ingest("hb", body.as_bytes(), true, "test").unwrap();
    assert_eq!((r.accepted.len(), r.rejected.len()), (40, 1));
    let parts: std::collections::BTreeSet<u32> = r.accepted.iter().map(|a| a.partition).collect();
    assert!(parts.len() > 2 && parts.iter().all(|&p| p < 4), "partitioned by the cluster's 4 partitions: {parts:?}");
    for a in &r.accepted {
        let rec = &cluster.topic("hb").unwrap().partition(a.partition).unwrap().read(a.offset, 1, usize::MAX).unwrap()[0];
        let v: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
        assert_eq!(v["playerId"], format!("p{}", a.index), "the ack names where the cluster holds the record");
        assert_eq!(rec.offset, a.offset);
    }
    let dead = cluster.topic("hb.dlq").unwrap().partition(0).unwrap().read(0, 10, usize::MAX).unwrap();
    assert_eq!(dead.len(), 1);
    for p in 0..2 {
        assert_eq!(own.topic("hb").unwrap().partition(p).unwrap().high_watermark(), 0, "nothing went to the gateway's own log");
    }
}

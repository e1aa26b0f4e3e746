//! What the Kafka server's scenario tests share: a server over a log on a loopback port.

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_kafka::{KafkaOptions, KafkaServer, ListenerLimits};
use sluice_log::{Log, OffsetStore};

/// A fresh Kafka server (empty in-memory state, no topics auto-created, no schemas) over
/// `log`, serving on an ephemeral loopback port under `limits`.
pub async fn spawn_server(log: Arc<Log>, limits: ListenerLimits) -> (Arc<KafkaServer>, SocketAddr) {
    let offsets = Arc::new(OffsetStore::open(&log).expect("offsets"));
    let options = KafkaOptions {
        advertised_host: "127.0.0.1".into(),
        advertised_port: 0,
        auto_create_partitions: 1,
        auto_create_topics: false,
        group_initial_rebalance_delay_ms: 0,
        protected_topics: Box::new(|_| false),
        read_only_topics: Box::new(|_| false),
        record_check: Box::new(|_| None),
        limits,
        sasl: None,
        tls: None,
        on_admin: Box::new(|_| {}),
    };
    let server = Arc::new(KafkaServer::new(log, offsets, options));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.clone().serve(listener));
    (server, addr)
}

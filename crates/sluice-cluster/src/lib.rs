//! sluice-cluster: sluice over an external Kafka cluster, through librdkafka.
//!
//! `sluice serve --log kafka://HOST:PORT[,HOST:PORT…]` keeps the HTTP and WebSocket
//! gateway but appends accepted records (and dead letters) to the cluster instead of the
//! embedded log. [`ClusterLog`] is that append path:
//!
//! - an idempotent producer (`enable.idempotence=true`, so `acks=all`, at most 5 requests
//!   in flight per connection, retries without duplicates or reordering; KIP-98);
//! - [`ClusterLog::append`] blocks until the cluster acknowledged every record of the call,
//!   and returns their offsets. The gateway acknowledges a device only after that, so a
//!   device ack means the record is on the cluster's in-sync replicas;
//! - topics are created on the cluster when missing ([`ClusterLog::ensure_topic`]), with
//!   the configured partition count and the cluster's default replication factor;
//! - a producer that hit a fatal error (an idempotent producer's state lost by the
//!   cluster) is replaced by a new one after the request that saw it failed.
//!
//! `sluice worker` reads the cluster too: [`group::GroupMember`] holds the worker's share of
//! the partitions in a consumer group, and [`source::PartitionSource`] reads one partition
//! as a pipeline source.
//!
//! Client settings pass through: `[cluster] properties` in the config are librdkafka
//! properties (`security.protocol`, `sasl.mechanism`, `sasl.username`, `ssl.ca.location`,
//! …; see librdkafka's CONFIGURATION.md). Settings that would weaken the ack
//! (`acks`, `enable.idempotence`) are refused.

pub mod group;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use sluice_gateway::{BoxError, ExternalLog};
use sluice_log::NewRecord;

/// Why the cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--log {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("[cluster] properties: {0}")]
    Property(String),
    #[error("cannot create the Kafka client for {bootstrap}: {source}")]
    Client {
        bootstrap: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic {topic:?} on the cluster at {bootstrap}: {reason}")]
    Topic { topic: String, bootstrap: String, reason: String },
    #[error("topic {topic:?} partition {partition}: the cluster did not acknowledge a record: {reason}")]
    Produce { topic: String, partition: u32, reason: String },
}

/// Where the external cluster is and how to talk to it.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// `bootstrap.servers`: `HOST:PORT[,HOST:PORT…]`.
    pub bootstrap: String,
    /// librdkafka properties passed through (TLS, SASL, timeouts).
    pub properties: BTreeMap<String, String>,
    /// Replication factor of topics sluice creates; -1 takes the cluster's default.
    pub replication_factor: i32,
    /// How long an append waits for the cluster's acks before it fails, ms (librdkafka's
    /// `message.timeout.ms`, unless set in `properties`). 0: 30,000.
    pub ack_timeout_ms: u64,
}

impl ClusterConfig {
    fn ack_timeout(&self) -> Duration {
        Duration::from_millis(if self.ack_timeout_ms == 0 { 30_000 } else { self.ack_timeout_ms })
    }
}

/// Parses `kafka://HOST:PORT[,HOST:PORT…]` (the `--log` flag) into a bootstrap list.
/// Errors name the URL and what is wrong with it.
pub fn parse_log_url(url: &str) -> Result<String, ClusterError> {
    let bad = |reason: &str| ClusterError::Url { url: url.to_string(), reason: reason.to_string() };
    let rest = url.strip_prefix("kafka://").ok_or_else(|| bad("expected kafka://HOST:PORT[,HOST:PORT…]"))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(bad("no broker given; expected kafka://HOST:PORT"));
    }
    for b in rest.split(',') {
        let (host, port) = b.rsplit_once(':').ok_or_else(|| bad(&format!("broker {b:?} has no port")))?;
        if host.is_empty() {
            return Err(bad(&format!("broker {b:?} has no host")));
        }
        port.parse::<u16>().map_err(|_| bad(&format!("broker {b:?}: the port is not a number from 0 to 65535")))?;
    }
    Ok(rest.to_string())
}

/// The librdkafka settings of a producer that acknowledges only what all in-sync replicas
/// have: the user's properties over sluice's defaults, refusing weaker acks.
pub fn producer_settings(config: &ClusterConfig) -> Result<BTreeMap<String, String>, ClusterError> {
    for (k, v) in &config.properties {
        match k.as_str() {
            "acks" | "request.required.acks" if v != "all" && v != "-1" => {
                return Err(ClusterError::Property(format!("{k} = {v:?} would acknowledge devices before every in-sync replica has the record; remove it (sluice uses acks=all)")))
            }
            "enable.idempotence" if v != "true" => {
                return Err(ClusterError::Property(format!("{k} = {v:?} would allow duplicates and reordering on retries; remove it (sluice uses an idempotent producer)")))
            }
            "bootstrap.servers" | "metadata.broker.list" => {
                return Err(ClusterError::Property(format!("{k}: give the brokers with --log kafka://HOST:PORT instead")));
            }
            _ => {}
        }
    }
    let mut s: BTreeMap<String, String> = [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        // Small batches leave at once: a device waits for its ack.
        ("linger.ms", "1"),
        ("compression.type", "none"),
        ("client.id", "sluice-gateway"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    s.insert("message.timeout.ms".into(), config.ack_timeout().as_millis().to_string());
    s.extend(config.properties.clone());
    s.insert("bootstrap.servers".into(), config.bootstrap.clone());
    Ok(s)
}

/// The settings of a consumer or admin client: [`producer_settings`] without the
/// producer's own keys. Errors: as [`producer_settings`].
pub fn client_settings(config: &ClusterConfig) -> Result<BTreeMap<String, String>, ClusterError> {
    let mut s = producer_settings(config)?;
    s.retain(|k, _| !PRODUCER_ONLY.contains(&k.as_str()));
    Ok(s)
}

/// The outcome of one `append` call, filled in by delivery reports.
struct Batch {
    state: Mutex<(usize, Vec<Option<Result<i64, String>>>)>,
    done: Condvar,
}

impl Batch {
    fn report(&self, i: usize, r: Result<i64, String>) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = g.1.get_mut(i) {
            if slot.is_none() {
                *slot = Some(r);
                g.0 -= 1;
            }
        }
        if g.0 == 0 {
            self.done.notify_all();
        }
    }
}

/// Queues one record, waiting while librdkafka's queue is full (until `deadline`).
fn send(producer: &ThreadedProducer<Reports>, topic: &str, partition: u32, r: &NewRecord, opaque: (Arc<Batch>, usize), deadline: std::time::Instant) -> Result<(), String> {
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
    for h in &r.headers {
        headers = headers.insert(Header { key: &h.key, value: h.value.as_deref() });
    }
    let mut rec = BaseRecord::with_opaque_to(topic, Box::new(opaque)).partition(partition as i32).payload(&r.value).headers(headers);
    if let Some(k) = &r.key {
        rec = rec.key(k);
    }
    if let Some(ts) = r.timestamp_ms {
        rec = rec.timestamp(ts);
    }
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if std::time::Instant::now() < deadline => {
                rec = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.to_string()),
        }
    }
}

/// The batch (by position in `append`'s input) of the first record without a report.
fn first_unreported(batches: &[(&str, u32, &[NewRecord])], reports: &[Option<Result<i64, String>>]) -> usize {
    let i = reports.iter().position(|r| r.is_none()).unwrap_or(0);
    let mut end = 0;
    for (b, batch) in batches.iter().enumerate() {
        end += batch.2.len();
        if i < end {
            return b;
        }
    }
    0
}

/// Routes delivery reports to the waiting `append` call.
struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<(Arc<Batch>, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (batch, i) = *opaque;
        let r = match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.to_string()),
        };
        batch.report(i, r);
    }
}

/// The gateway's append path to an external Kafka cluster (see the module docs).
pub struct ClusterLog {
    /// Replaced after a fatal error (see [`ClusterLog::renew_if_fatal`]).
    producer: RwLock<Arc<ThreadedProducer<Reports>>>,
    producer_config: ClientConfig,
    admin: AdminClient<DefaultClientContext>,
    config: ClusterConfig,
    partitions: RwLock<HashMap<String, u32>>,
}

impl ClusterLog {
    /// Creates the producer (it connects lazily). Errors: a refused property, or one
    /// librdkafka does not know.
    pub fn connect(config: ClusterConfig) -> Result<ClusterLog, ClusterError> {
        let settings = producer_settings(&config)?;
        let mut cc = ClientConfig::new();
        for (k, v) in &settings {
            cc.set(k, v);
        }
        let client = |source| ClusterError::Client { bootstrap: config.bootstrap.clone(), source };
        let producer = Arc::new(cc.create_with_context(Reports).map_err(client)?);
        let mut ac = ClientConfig::new();
        for (k, v) in settings.iter().filter(|(k, _)| !PRODUCER_ONLY.contains(&k.as_str())) {
            ac.set(k, v);
        }
        ac.set("client.id", "sluice-admin");
        let admin = ac.create().map_err(client)?;
        Ok(ClusterLog { producer: RwLock::new(producer), producer_config: cc, admin, config, partitions: RwLock::new(HashMap::new()) })
    }

    fn producer(&self) -> Arc<ThreadedProducer<Reports>> {
        self.producer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// An idempotent producer that hit a fatal error (the cluster lost its producer state,
    /// or its sequence numbers went out of order; KIP-98) fails every later record. After
    /// an error, this replaces such a producer with a new one (a new producer id), so the
    /// next request goes through; the failed request was not acknowledged.
    fn renew_if_fatal(&self, used: &Arc<ThreadedProducer<Reports>>) {
        let Some((code, reason)) = used.client().fatal_error() else { return };
        let mut current = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&current, used) {
            return;
        }
        match self.producer_config.create_with_context(Reports) {
            Ok(p) => {
                tracing::error!(cluster = %self.config.bootstrap, error = %code, %reason, "the cluster producer hit a fatal error; it was replaced by a new one");
                *current = Arc::new(p);
            }
            Err(e) => tracing::error!(cluster = %self.config.bootstrap, error = %e, "the cluster producer hit a fatal error and cannot be replaced; ingest answers 503"),
        }
    }

    pub fn bootstrap(&self) -> &str {
        &self.config.bootstrap
    }

    /// The partition count of `topic` on the cluster, creating it with `partitions` when
    /// missing. Blocking: waits up to `timeout` for the cluster. Errors name the topic and
    /// what the cluster answered. The topic is created before its metadata is read: a
    /// producer's metadata request may auto-create a missing topic with the cluster's
    /// default partition count instead.
    pub fn ensure_topic(&self, topic: &str, partitions: u32, timeout: Duration) -> Result<u32, ClusterError> {
        let err = |reason: String| ClusterError::Topic { topic: topic.into(), bootstrap: self.config.bootstrap.clone(), reason };
        let deadline = std::time::Instant::now() + timeout;
        // Refused creation (no permission to create topics, say) is an error only if the
        // topic is not there.
        let created = self.create(topic, partitions, deadline);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(100));
            let md = self.producer().client().fetch_metadata(Some(topic), left).map_err(|e| err(format!("cannot read the cluster's metadata: {e}")))?;
            match md.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    let n = t.partitions().len() as u32;
                    self.partitions.write().unwrap_or_else(|p| p.into_inner()).insert(topic.to_string(), n);
                    return Ok(n);
                }
                _ if created.is_err() => return Err(err(created.err().unwrap_or_default())),
                _ if std::time::Instant::now() >= deadline => return Err(err("created, but the cluster does not list it yet".into())),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn create(&self, topic: &str, partitions: u32, deadline: std::time::Instant) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(|e| e.to_string())?;
        let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(self.config.replication_factor));
        let wait = deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_secs(1));
        let opts = AdminOptions::new().operation_timeout(Some(wait));
        let results = rt.block_on(self.admin.create_topics([&new], &opts)).map_err(|e| format!("cannot create it: {e}"))?;
        for r in results {
            match r {
                Ok(_) => tracing::info!(topic, partitions, bootstrap = %self.config.bootstrap, "created the topic on the cluster"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(format!("cannot create it: {code}")),
            }
        }
        Ok(())
    }

    /// The partition count of a topic [`ClusterLog::ensure_topic`] has seen.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(topic).copied()
    }

    /// Appends each batch (`topic`, `partition`, records) and waits until the cluster has
    /// acknowledged every record of every batch (acks=all) or `timeout` passed. All are
    /// queued before the wait, so batches to several partitions cost one round trip.
    /// Returns each batch's offsets, in order. Blocking. On an error some records may still
    /// have been written: a retry of the whole call is at-least-once, as a device's resend is.
    pub fn append(&self, batches: &[(&str, u32, &[NewRecord])], timeout: Duration) -> Result<Vec<Vec<u64>>, ClusterError> {
        let total: usize = batches.iter().map(|b| b.2.len()).sum();
        let wait = Arc::new(Batch { state: Mutex::new((total, vec![None; total])), done: Condvar::new() });
        let deadline = std::time::Instant::now() + timeout;
        let producer = self.producer();
        let fail = |b: usize, reason: String| {
            self.renew_if_fatal(&producer);
            ClusterError::Produce { topic: batches[b].0.into(), partition: batches[b].1, reason }
        };
        let mut i = 0;
        for (b, &(topic, partition, records)) in batches.iter().enumerate() {
            for r in records {
                if let Err(e) = send(&producer, topic, partition, r, (wait.clone(), i), deadline) {
                    // Records queued before this one still report; mark the rest.
                    for j in i..total {
                        wait.report(j, Err(e.clone()));
                    }
                    return Err(fail(b, e));
                }
                i += 1;
            }
        }
        let mut g = wait.state.lock().unwrap_or_else(|p| p.into_inner());
        while g.0 > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                let b = first_unreported(batches, &g.1);
                return Err(fail(b, format!("no acknowledgement within {} ms", timeout.as_millis())));
            }
            g = wait.done.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        let mut out = Vec::with_capacity(batches.len());
        let mut reports = g.1.iter();
        for (b, batch) in batches.iter().enumerate() {
            let mut offsets = Vec::with_capacity(batch.2.len());
            for r in reports.by_ref().take(batch.2.len()) {
                match r {
                    Some(Ok(o)) if *o >= 0 => offsets.push(*o as u64),
                    Some(Ok(o)) => return Err(fail(b, format!("acknowledged without an offset ({o})"))),
                    Some(Err(e)) => return Err(fail(b, e.clone())),
                    None => return Err(fail(b, "no delivery report".into())),
                }
            }
            out.push(offsets);
        }
        Ok(out)
    }

    /// Waits up to `timeout` for queued records (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer().flush(timeout) {
            tracing::warn!(error = %e, "records still queued for the cluster at shutdown");
        }
    }
}

impl ExternalLog for ClusterLog {
    fn describe(&self) -> String {
        self.config.bootstrap.clone()
    }

    fn partition_count(&self, topic: &str) -> Option<u32> {
        ClusterLog::partition_count(self, topic)
    }

    fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<u32, BoxError> {
        Ok(ClusterLog::ensure_topic(self, topic, partitions, self.config.ack_timeout())?)
    }

    fn append(&self, batches: &[(&str, u32, &[NewRecord])]) -> Result<Vec<Vec<u64>>, BoxError> {
        // librdkafka fails a record after message.timeout.ms; the wait allows a little more.
        Ok(ClusterLog::append(self, batches, self.config.ack_timeout() + Duration::from_secs(1))?)
    }
}

/// Producer properties an admin client does not take.
const PRODUCER_ONLY: &[&str] = &["enable.idempotence", "acks", "linger.ms", "compression.type", "request.required.acks", "message.timeout.ms"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_urls() {
        assert_eq!(parse_log_url("kafka://127.0.0.1:9092").unwrap(), "127.0.0.1:9092");
        assert_eq!(parse_log_url("kafka://a:1,b:2/").unwrap(), "a:1,b:2");
        for bad in ["127.0.0.1:9092", "kafka://", "kafka://host", "kafka://:9", "kafka://h:port", "kafka://h:70000"] {
            let e = parse_log_url(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn weaker_acks_are_refused_and_defaults_are_idempotent() {
        let mut c = ClusterConfig { bootstrap: "h:1".into(), ..Default::default() };
        let s = producer_settings(&c).unwrap();
        assert_eq!((s["acks"].as_str(), s["enable.idempotence"].as_str(), s["bootstrap.servers"].as_str()), ("all", "true", "h:1"));
        c.properties.insert("security.protocol".into(), "SASL_SSL".into());
        assert_eq!(producer_settings(&c).unwrap()["security.protocol"], "SASL_SSL", "TLS and SASL settings pass through");
        for (k, v) in [("acks", "1"), ("enable.idempotence", "false"), ("bootstrap.servers", "x:1")] {
            let mut c = c.clone();
            c.properties.insert(k.into(), v.into());
            let e = producer_settings(&c).unwrap_err().to_string();
            assert!(e.contains(k), "{e}");
        }
    }
}

//! Layered configuration: the embedded `default.toml` (every key documented there) →
//! a config file → `SLUICE_*` environment variables → command-line overrides.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_gateway::TopicSpec;
use sluice_stream::pipeline::PipelineSpec;
use toml::{Table, Value};

/// The embedded defaults, with comments.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Allow listeners on non-loopback addresses without authentication.
    #[serde(default)]
    pub insecure: bool,
    pub http: HttpConfig,
    #[serde(default)]
    pub auth: AuthSection,
    pub log: LogSection,
    #[serde(default)]
    pub kafka: KafkaSection,
    #[serde(default)]
    pub topics: Vec<TopicSpec>,
    #[serde(default)]
    pub stream: StreamSection,
    #[serde(default)]
    pub heart_rate: HeartRateSection,
    #[serde(default)]
    pub pipelines: Vec<PipelineSpec>,
    #[serde(default)]
    pub lake: LakeSection,
    #[serde(default)]
    pub cluster: ClusterSection,
}

/// The `[cluster]` table: how sluice talks to an external Kafka cluster (`sluice serve
/// --log kafka://HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*`, timeouts), passed
    /// through; values are text. Secrets are redacted by `sluice config`.
    pub properties: sluice_lake::StorageOptions,
    /// Replication factor of the topics sluice creates on the cluster; -1: the cluster's
    /// default (`default.replication.factor`).
    pub replication_factor: i32,
    /// How long ingest waits for the cluster's acks before answering 503, ms.
    pub ack_timeout_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection { properties: Default::default(), replication_factor: -1, ack_timeout_ms: 30_000 }
    }
}

/// The `[lake]` table: where the lake is, SQL limits and table maintenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeSection {
    /// A local path or an object-store URL (`s3://bucket/prefix`); empty: `<data_dir>/lake`.
    pub location: String,
    /// Settings of the object store, by `object_store` key (`aws_endpoint`, `aws_region`,
    /// …), over the `AWS_*` environment variables. Never logged.
    pub storage_options: sluice_lake::StorageOptions,
    /// A query (`POST /v1/query`, `sluice query`) is cut off after this long, ms.
    pub query_timeout_ms: u64,
    /// Memory a query's operators may hold (sorts, aggregations, joins), bytes.
    pub query_memory_bytes: usize,
    /// How often the maintenance policy looks at every table, ms (0: never).
    pub maintenance_interval_ms: u64,
    /// The policy compacts a date partition once it has this many small files.
    pub compact_min_files: usize,
    /// After a commit, a date partition with this many files under 8 MiB is compacted at
    /// once (0: never).
    pub auto_compact_min_files: usize,
    /// Vacuum deletes data files no version of the last this-long references, ms.
    pub vacuum_retention_ms: u64,
}

impl Default for LakeSection {
    fn default() -> Self {
        LakeSection { location: String::new(), storage_options: Default::default(), query_timeout_ms: 30_000, query_memory_bytes: 512 << 20, maintenance_interval_ms: 3_600_000, compact_min_files: 10, auto_compact_min_files: 50, vacuum_retention_ms: 7 * 86_400_000 }
    }
}

/// The `[stream]` table: how the engine runs every pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSection {
    /// Run the pipelines.
    pub enabled: bool,
    /// Commit a checkpoint at most this often while anything changed, ms.
    pub checkpoint_interval_ms: u64,
    /// Records read per partition per poll.
    pub batch_records: usize,
    /// Default `idle_timeout_ms` of pipelines that set none, ms (0: never).
    pub idle_timeout_ms: i64,
    /// Merge a pipeline's state changes into a snapshot once they exceed it and this many bytes.
    pub compaction_min_bytes: u64,
    /// Early results of pipelines with `early_results` at most this often while no live
    /// view watches, ms.
    pub early_results_interval_ms: u64,
    /// Early results at most this often while a live view watches the pipeline (an SSE
    /// subscriber with `early=true`; for `heart_rate`, any `/v1/sessions/stream`), ms.
    pub live_early_results_interval_ms: u64,
}

impl Default for StreamSection {
    fn default() -> Self {
        StreamSection {
            enabled: true,
            checkpoint_interval_ms: 1000,
            batch_records: 2000,
            idle_timeout_ms: 30_000,
            compaction_min_bytes: 1 << 20,
            early_results_interval_ms: 500,
            live_early_results_interval_ms: 5,
        }
    }
}

/// The `[auth]` table: who may use the HTTP API and the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Require a token or a login for every HTTP route but the dashboard's page, the login
    /// and `/healthz`.
    pub enabled: bool,
    /// A dashboard login lasts this long, ms.
    pub session_ttl_ms: u64,
    /// Password checks (Argon2id, tens of ms of CPU each) running at once; more wait.
    pub max_concurrent_logins: usize,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection { enabled: false, session_ttl_ms: 12 * 3_600_000, max_concurrent_logins: 2 }
    }
}

/// The `[heart_rate]` table: settings of the heart-rate functions (`hr_max`, `hr_zone_seconds`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartRateSection {
    /// HRmax of players without an entry in `hr_max_bpm`, bpm.
    pub hr_max_default_bpm: f64,
    /// HRmax per player id, bpm.
    pub hr_max_bpm: HashMap<String, f64>,
}

impl Default for HeartRateSection {
    fn default() -> Self {
        HeartRateSection { hr_max_default_bpm: sluice_stream::zones::DEFAULT_HR_MAX_BPM, hr_max_bpm: HashMap::new() }
    }
}

impl HeartRateSection {
    pub fn functions(&self) -> sluice_stream::functions::FunctionConfig {
        sluice_stream::functions::FunctionConfig { hr_max: sluice_stream::functions::HrMaxTable { default_bpm: self.hr_max_default_bpm, players: self.hr_max_bpm.clone() } }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub addr: String,
    pub max_body_bytes: usize,
    /// A request's header must arrive within this long, ms; it also closes keep-alive
    /// connections idle for this long (0: never).
    #[serde(default = "header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive whole within this long of its header, ms (0: never).
    #[serde(default = "request_body_timeout_ms")]
    pub request_body_timeout_ms: u64,
    /// Close a WebSocket that sent no frame (data or ping) for this long, ms (0: never).
    #[serde(default = "ws_idle_timeout_ms")]
    pub ws_idle_timeout_ms: u64,
    /// Most open connections (WebSockets and SSE streams included; 0: no cap).
    #[serde(default = "max_connections")]
    pub max_connections: usize,
    /// Most open connections from one address (0: no cap).
    #[serde(default)]
    pub max_connections_per_ip: usize,
    /// Most WebSocket ingest connections open at once.
    #[serde(default = "max_websockets")]
    pub max_websockets: usize,
    /// Most Server-Sent Events streams open at once.
    #[serde(default = "max_sse_subscribers")]
    pub max_sse_subscribers: usize,
    /// Most bytes of request bodies held at once across all connections; reading waits
    /// at the bound.
    #[serde(default = "max_inflight_body_bytes")]
    pub max_inflight_body_bytes: usize,
    /// Ingest requests per second per source address (0: unlimited).
    #[serde(default)]
    pub ingest_requests_per_second: u64,
    /// Closed sessions held in memory for `/v1/sessions` (the newest); older pages are read
    /// from the lake.
    #[serde(default = "sessions_in_memory")]
    pub sessions_in_memory: usize,
    /// Host names (the `Host` header, without port) the API answers to, besides IP
    /// addresses and `localhost`. Any other name is refused (DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://dash.example.com`) allowed to send state-changing requests
    /// besides the API's own origin.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// TLS (HTTPS): the certificate and key PEM files; none: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsSection>,
}

fn header_read_timeout_ms() -> u64 {
    10_000
}

fn request_body_timeout_ms() -> u64 {
    30_000
}

fn ws_idle_timeout_ms() -> u64 {
    120_000
}

fn max_connections() -> usize {
    65_536
}

fn sessions_in_memory() -> usize {
    10_000
}

fn max_websockets() -> usize {
    60_000
}

fn max_sse_subscribers() -> usize {
    4_096
}

fn max_inflight_body_bytes() -> usize {
    256 << 20
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    #[serde(default = "retention_check_interval_ms")]
    pub retention_check_interval_ms: u64,
}

fn retention_check_interval_ms() -> u64 {
    300_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    pub enabled: bool,
    /// TLS (`SSL`, or `SASL_SSL` with `[auth] enabled`): the certificate and key PEM
    /// files; none: plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsSection>,
    pub addr: String,
    pub advertised_host: String,
    #[serde(default)]
    pub advertised_port: u16,
    pub auto_create_topics: bool,
    pub auto_create_partitions: u32,
    #[serde(default = "group_initial_rebalance_delay_ms")]
    pub group_initial_rebalance_delay_ms: u64,
    /// Close a connection with no request for this long, ms (Kafka's connections.max.idle.ms).
    pub connections_max_idle_ms: u64,
    /// A request frame must arrive whole within this long of its first byte, ms.
    pub request_read_timeout_ms: u64,
    /// Most open connections (Kafka's max.connections; 0: no cap).
    pub max_connections: usize,
    /// Most open connections from one address (Kafka's max.connections.per.ip; 0: no cap).
    pub max_connections_per_ip: usize,
    /// Most bytes of request frames buffered at once across all connections.
    pub max_inflight_request_bytes: usize,
    /// Drop an idempotent producer's state this long after its last append, ms (Kafka's
    /// producer.id.expiration.ms).
    pub producer_id_expiration_ms: i64,
    /// Most idempotent-producer states (producer × partition) kept.
    pub max_producer_states: usize,
    /// Bytes per second each client id may produce (0: unlimited).
    pub producer_byte_rate: u64,
    /// Bytes per second each client id may fetch (0: unlimited).
    pub consumer_byte_rate: u64,
}

impl KafkaSection {
    /// The listener limits these settings give.
    pub fn limits(&self) -> sluice_kafka::ListenerLimits {
        sluice_kafka::ListenerLimits {
            connections_max_idle_ms: self.connections_max_idle_ms,
            request_read_timeout_ms: self.request_read_timeout_ms,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_inflight_request_bytes: self.max_inflight_request_bytes,
            producer_id_expiration_ms: self.producer_id_expiration_ms,
            max_producer_states: self.max_producer_states,
            producer_byte_rate: self.producer_byte_rate,
            consumer_byte_rate: self.consumer_byte_rate,
        }
    }
}

fn group_initial_rebalance_delay_ms() -> u64 {
    3_000
}

impl Default for KafkaSection {
    fn default() -> Self {
        let limits = sluice_kafka::ListenerLimits::default();
        KafkaSection {
            enabled: true,
            tls: None,
            addr: "127.0.0.1:9092".into(),
            advertised_host: String::new(),
            advertised_port: 0,
            auto_create_topics: true,
            auto_create_partitions: 1,
            group_initial_rebalance_delay_ms: group_initial_rebalance_delay_ms(),
            connections_max_idle_ms: limits.connections_max_idle_ms,
            request_read_timeout_ms: limits.request_read_timeout_ms,
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            max_inflight_request_bytes: limits.max_inflight_request_bytes,
            producer_id_expiration_ms: limits.producer_id_expiration_ms,
            max_producer_states: limits.max_producer_states,
            producer_byte_rate: limits.producer_byte_rate,
            consumer_byte_rate: limits.consumer_byte_rate,
        }
    }
}

/// Checks that every enabled listener binds loopback addresses only, unless `insecure`
/// or the listener authenticates its clients: otherwise anyone who can reach it could
/// read, write and delete everything. `(setting, address, authenticated)` triples; a name
/// that does not resolve is left to the bind to report. Errors say what to do.
pub fn check_exposure(listeners: &[(&str, &str, bool)], insecure: bool) -> Result<(), ConfigError> {
    use std::net::ToSocketAddrs;
    if insecure {
        return Ok(());
    }
    for (setting, addr, authenticated) in listeners {
        let Ok(resolved) = addr.to_socket_addrs() else { continue };
        if *authenticated {
            continue;
        }
        if let Some(exposed) = resolved.into_iter().find(|a| !a.ip().is_loopback()) {
            let how = if setting.starts_with("http") {
                "Turn on authentication ([auth] enabled = true, SLUICE_AUTH__ENABLED=true), listen on 127.0.0.1"
            } else {
                "The Kafka listener has no authentication yet: listen on 127.0.0.1"
            };
            return Err(ConfigError::Invalid(format!(
                "{setting} = {addr:?} listens on {}, which is not a loopback address, without authentication: \
                 anyone who can reach it could read and delete every topic and drain the pipelines. {how} \
                 (behind an authenticating proxy), or pass --insecure (SLUICE_INSECURE=true) to accept that",
                exposed.ip()
            )));
        }
    }
    Ok(())
}

/// Listeners that others can reach and that carry credentials in clear text: `(setting,
/// address, authenticated, tls)` entries that are authenticated, have no TLS, and bind a
/// non-loopback address. For a warning at start.
pub fn cleartext_credentials(listeners: &[(&str, &str, bool, bool)]) -> Vec<String> {
    use std::net::ToSocketAddrs;
    listeners
        .iter()
        .filter(|(_, addr, authenticated, tls)| *authenticated && !*tls && addr.to_socket_addrs().is_ok_and(|mut a| a.any(|a| !a.ip().is_loopback())))
        .map(|(setting, addr, _, _)| format!("{setting} = {addr:?}"))
        .collect()
}

/// A configuration problem, naming where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin} is not valid TOML: {source}")]
    Syntax {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0} (see the documented keys with `sluice config --defaults`)")]
    Invalid(String),
}

/// Merges `over` into `base`: tables merge key by key, anything else is replaced.
pub fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// A table holding `value` at the dotted `path` (`["http", "addr"]`).
pub fn table_at(path: &[String], value: Value) -> Table {
    let mut v = value;
    for key in path.iter().rev() {
        let mut t = Table::new();
        t.insert(key.clone(), v);
        v = Value::Table(t);
    }
    match v {
        Value::Table(t) => t,
        _ => Table::new(),
    }
}

/// Parses a scalar as TOML (number, bool, array, inline table), else takes it as a string.
pub fn parse_scalar(s: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {s}")).ok().and_then(|mut t| t.remove("v")).unwrap_or_else(|| Value::String(s.to_string()))
}

/// Environment overrides: `SLUICE_HTTP__ADDR=…` → `(name, ["http", "addr"], value)`.
///
/// A variable whose first path segment is a top-level key of `known` is applied (and an
/// unknown key inside it is then an error); other `SLUICE_*` variables are returned as
/// ignored, so that variables of other tools do not stop the server. Variables without the
/// prefix are skipped.
pub fn env_overrides(vars: impl Iterator<Item = (String, String)>, known: &Table) -> (Vec<(String, Vec<String>, Value)>, Vec<String>) {
    let (mut applied, mut ignored) = (Vec::new(), Vec::new());
    for (k, v) in vars {
        let Some(rest) = k.strip_prefix("SLUICE_") else { continue };
        if FLAG_VARIABLES.contains(&k.as_str()) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if known.contains_key(&path[0]) {
            applied.push((k.clone(), path, parse_scalar(&v)));
        } else {
            ignored.push(k);
        }
    }
    (applied, ignored)
}

/// `SLUICE_*` variables that are not config keys: `SLUICE_LOG_FORMAT` sets the
/// `--log-format` flag, `SLUICE_TOKEN` is the CLI clients' API token.
pub const FLAG_VARIABLES: &[&str] = &["SLUICE_LOG_FORMAT", "SLUICE_TOKEN"];

/// Loads the layered configuration. `overrides` are dotted paths with values (flags).
pub fn load(file: Option<&Path>, env: impl Iterator<Item = (String, String)>, overrides: &[(&str, Value)]) -> Result<Config, ConfigError> {
    let mut table: Table = toml::from_str(DEFAULT_TOML).map_err(|source| ConfigError::Syntax { origin: "the embedded default.toml".into(), source })?;
    let mut origin = "the defaults".to_string();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let over: Table = toml::from_str(&text).map_err(|source| ConfigError::Syntax { origin: path.display().to_string(), source })?;
        merge(&mut table, over);
        origin = format!("{} (over the defaults)", path.display());
    }
    let mut env_names = Vec::new();
    let (applied, ignored) = env_overrides(env, &table);
    for name in ignored {
        tracing::warn!(
            variable = %name,
            "ignoring environment variable: it names no config key (tables are separated by \"__\", e.g. SLUICE_HTTP__ADDR for http.addr)"
        );
    }
    for (name, path, value) in applied {
        merge(&mut table, table_at(&path, value));
        env_names.push(name);
    }
    for (dotted, value) in overrides {
        let path: Vec<String> = dotted.split('.').map(str::to_string).collect();
        merge(&mut table, table_at(&path, value.clone()));
    }
    let config: Config = Value::Table(table).try_into().map_err(|e: toml::de::Error| {
        let mut msg = format!("{} in {origin}", e.message());
        if !env_names.is_empty() {
            msg.push_str(&format!(", with environment variables {}", env_names.join(", ")));
        }
        ConfigError::Invalid(msg)
    })?;
    config.check()?;
    Ok(config)
}

impl Config {
    /// Where the lake is: `[lake] location`, else `<data_dir>/lake`.
    pub fn lake_location(&self) -> String {
        if self.lake.location.is_empty() {
            self.data_dir.join("lake").to_string_lossy().into_owned()
        } else {
            self.lake.location.clone()
        }
    }

    /// The stream engine's settings (the `[stream]` table).
    pub fn engine_settings(&self) -> sluice_stream::engine::EngineSettings {
        let s = &self.stream;
        sluice_stream::engine::EngineSettings {
            checkpoint_interval_ms: s.checkpoint_interval_ms,
            run: sluice_stream::runner::RunSettings {
                batch_records: s.batch_records,
                idle_timeout_ms: s.idle_timeout_ms,
                compaction_min_bytes: s.compaction_min_bytes,
                early_results_interval_ms: s.early_results_interval_ms,
                live_early_results_interval_ms: s.live_early_results_interval_ms,
            },
        }
    }

    /// Opens the lake's root (see [`sluice_lake::Root::open`]); errors name the location.
    pub fn lake_root(&self) -> Result<sluice_lake::Root, sluice_lake::LakeError> {
        sluice_lake::Root::open(&self.lake_location(), &self.lake.storage_options)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let hr = &self.heart_rate;
        if hr.hr_max_default_bpm <= 0.0 || hr.hr_max_bpm.values().any(|v| *v <= 0.0) {
            return Err(ConfigError::Invalid("[heart_rate] HRmax values must be positive bpm".into()));
        }
        if self.topics.iter().any(|t| t.partitions == 0) {
            return Err(ConfigError::Invalid("every topic needs partitions >= 1".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.pipelines {
            sluice_stream::pipeline::check_name(&p.name).map_err(ConfigError::Invalid)?;
            if !names.insert(&p.name) {
                return Err(ConfigError::Invalid(format!("[[pipelines]] {:?} is declared twice", p.name)));
            }
        }
        if self.stream.checkpoint_interval_ms == 0 || self.stream.batch_records == 0 {
            return Err(ConfigError::Invalid("[stream] checkpoint_interval_ms and batch_records must be > 0".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn non_loopback_listeners_need_insecure_or_authentication() {
        assert!(check_exposure(&[("http.addr", "127.0.0.1:8080", false), ("kafka.addr", "[::1]:9092", false), ("x", "localhost:1", false)], false).is_ok());
        let e = check_exposure(&[("http.addr", "127.0.0.1:8080", false), ("kafka.addr", "0.0.0.0:9092", false)], false).unwrap_err().to_string();
        assert!(e.contains("kafka.addr") && e.contains("0.0.0.0") && e.contains("--insecure"), "{e}");
        let e = check_exposure(&[("http.addr", "0.0.0.0:8080", false)], false).unwrap_err().to_string();
        assert!(e.contains("[auth] enabled = true"), "{e}");
        assert!(check_exposure(&[("http.addr", "0.0.0.0:8080", true)], false).is_ok(), "an authenticated listener may be exposed");
        assert!(check_exposure(&[("http.addr", "0.0.0.0:8080", false)], true).is_ok());
        let warned = cleartext_credentials(&[("http.addr", "0.0.0.0:8080", true, false), ("kafka.addr", "0.0.0.0:9092", true, true), ("x", "127.0.0.1:1", true, false)]);
        assert_eq!(warned, vec!["http.addr = \"0.0.0.0:8080\"".to_string()]);
    }
    use super::*;

    #[test]
    fn defaults_load() {
        let c = load(None, std::iter::empty(), &[]).unwrap();
        assert_eq!(c.http.addr, "127.0.0.1:8080");
        assert_eq!(c.topics[0].name, "heartbeat-raw-topic");
        assert_eq!(c.topics[0].partitions, 2);
        assert_eq!(c.heart_rate.hr_max_default_bpm, 190.0);
        let names: Vec<&str> = c.pipelines.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["heart_rate", "heartbeat_raw"]);
    }

    #[test]
    fn layers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "data_dir = \"/from-file\"\n[http]\naddr = \"0.0.0.0:1\"\n[heart_rate.hr_max_bpm]\nann = 180.0\n").unwrap();
        let env = vec![("SLUICE_HTTP__ADDR".to_string(), "127.0.0.1:2".to_string()), ("OTHER".into(), "x".into()),
                       ("SLUICE_STREAM__IDLE_TIMEOUT_MS".into(), "5".into())];
        let c = load(Some(&file), env.into_iter(), &[("data_dir", Value::String("/from-flag".into()))]).unwrap();
        assert_eq!(c.http.addr, "127.0.0.1:2");
        assert_eq!(c.data_dir, PathBuf::from("/from-flag"));
        assert_eq!(c.stream.idle_timeout_ms, 5);
        assert_eq!(c.heart_rate.hr_max_bpm["ann"], 180.0);
        assert_eq!(c.http.max_body_bytes, 4_194_304, "untouched keys keep their defaults");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = load(None, vec![("SLUICE_HTTP__ADRR".to_string(), "x".to_string())].into_iter(), &[]).unwrap_err().to_string();
        assert!(err.contains("adrr") && err.contains("SLUICE_HTTP__ADRR"), "{err}");
        // A variable outside every config table is someone else's: ignored, not fatal.
        let c = load(None, vec![("SLUICE_HTTP_ADDR".to_string(), "x".to_string())].into_iter(), &[]).unwrap();
        assert_eq!(c.http.addr, "127.0.0.1:8080");
        // Flag and client variables are neither applied nor reported as unknown.
        let table: Table = toml::from_str(DEFAULT_TOML).unwrap();
        let vars = ["SLUICE_LOG_FORMAT", "SLUICE_TOKEN", "SLUICE_NOPE"].map(|k| (k.to_string(), "json".to_string()));
        let (applied, ignored) = env_overrides(vars.into_iter(), &table);
        assert!(applied.is_empty());
        assert_eq!(ignored, ["SLUICE_NOPE"]);
        let err = load(None, std::iter::empty(), &[("stream.batch_records", Value::String("many".into()))]).unwrap_err().to_string();
        assert!(err.contains("batch_records") || err.contains("many"), "{err}");
    }
}

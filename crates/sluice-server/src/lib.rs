//! sluice-server: one process holding the log, the ingest gateway, the Kafka listener,
//! the pipelines, the lake, the live views, the dashboard and the metrics.
//!
//! Data path (see ARCHITECTURE.md): socket → `sluice_gateway::http` → `sluice_log`
//! (fsync, then ack) → [`adapters::LogSource`] → `sluice_stream::engine` → checkpoint
//! + [`adapters::LakeSink`] / [`adapters::TopicSink`] → [`live::LiveViews`] → SSE →
//! dashboard.

pub mod adapters;
pub mod audit;
pub mod auth;
pub mod config;
pub mod events;
pub mod guard;
pub mod http;
pub mod listen;
pub mod live;
pub mod pipelines;
pub mod query;
pub mod readings;
pub mod resume;
pub mod sessions;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_gateway::Gateway;
use sluice_lake::Lake;
use sluice_log::{Log, LogConfig};
use sluice_stream::engine::Engine;
use sluice_stream::runner::Connectors;
use tokio::sync::oneshot;

pub use config::Config;
use http::App;
use live::LiveViews;
use pipelines::Pipelines;
use sessions::SessionStore;

/// Errors of starting and stopping the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the log failed")]
    Log(#[from] sluice_log::LogError),
    #[error("the lake failed")]
    Lake(#[from] sluice_lake::LakeError),
    #[error("the stream engine failed")]
    Stream(#[from] sluice_stream::StreamError),
    #[error("{0}")]
    Gateway(#[from] sluice_gateway::GatewayError),
    #[error("{0}")]
    Pipeline(String),
    #[error("cannot listen on {addr}: {source}. Is another sluice (or Kafka) running? Choose another address with {flag}")]
    Bind {
        flag: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Job(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("{0}")]
    Tls(String),
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    data_dir: std::path::PathBuf,
    lake: Arc<Lake>,
    log: Arc<Log>,
    sessions: Arc<SessionStore>,
    pipelines: Arc<Pipelines>,
    http_stop: oneshot::Sender<()>,
    http_task: tokio::task::JoinHandle<()>,
    retention_task: tokio::task::JoinHandle<()>,
    audit_task: tokio::task::JoinHandle<()>,
    tls_task: tokio::task::JoinHandle<()>,
    auth_task: Option<tokio::task::JoinHandle<()>>,
    flush_task: tokio::task::JoinHandle<()>,
    maintenance_task: Option<tokio::task::JoinHandle<()>>,
    kafka: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    first_admin_password: Option<String>,
    /// The HTTP listener serves HTTPS.
    https: bool,
}

/// Runs the lake's maintenance policy every `maintenance_interval_ms` (see
/// [`sluice_lake::Lake::maintain`]), on a blocking thread.
fn spawn_lake_maintenance(lake: Arc<Lake>, config: config::LakeSection) -> Option<tokio::task::JoinHandle<()>> {
    if config.maintenance_interval_ms == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let period = std::time::Duration::from_millis(config.maintenance_interval_ms);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            let lake = lake.clone();
            let (retention, min_files) = (config.vacuum_retention_ms, config.compact_min_files);
            match tokio::task::spawn_blocking(move || lake.maintain(min_files, retention)).await {
                Ok(Ok(report)) if !report.is_empty() => tracing::info!(%report, "lake maintenance"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %error_chain(&e), "lake maintenance failed; it runs again next interval"),
                Err(e) => tracing::warn!(error = %e, "lake maintenance panicked"),
            }
        }
    }))
}

/// Flushes topics under the `interval` durability policy (checked every 50 ms).
fn spawn_flusher(log: Arc<Log>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
        loop {
            tick.tick().await;
            let log = log.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || log.flush_due()).await {
                tracing::error!(error = %error_chain(&e), "interval flush failed");
            }
        }
    })
}

/// Applies every topic's retention every `interval_ms` (first pass right away).
fn spawn_retention(log: Arc<Log>, interval_ms: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(interval_ms.max(1)));
        loop {
            tick.tick().await;
            let log = log.clone();
            match tokio::task::spawn_blocking(move || log.apply_retention(sluice_core::time::now_ms())).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(segments = n, "retention deleted segments"),
                Ok(Err(e)) => tracing::error!(error = %error_chain(&e), "retention failed"),
                Err(e) => tracing::error!(error = %e, "retention task failed"),
            }
        }
    })
}

impl Server {
    /// Opens (recovering) the log, the lake and the pipelines' checkpoint, and starts serving.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        Server::start_with(config, None).await
    }

    /// [`Server::start`], with ingest appending to `external` (an external Kafka cluster,
    /// `serve --log kafka://…`) instead of the embedded log. Then the server is the edge of
    /// a deployment: the gateway, the dashboard and the API. Neither the pipelines (they
    /// read the embedded log) nor the Kafka listener start here; Kafka clients use the
    /// cluster.
    pub async fn start_with(mut config: Config, external: Option<Arc<dyn sluice_gateway::ExternalLog>>) -> Result<Server, ServerError> {
        if let Some(x) = &external {
            tracing::info!(cluster = %x.describe(), "ingest appends to the external cluster; pipelines and the Kafka listener do not run at the edge (Kafka clients use the cluster directly)");
            config.stream.enabled = false;
            config.kafka.enabled = false;
        }
        let data = config.data_dir.clone();
        let mut listeners = vec![("http.addr", config.http.addr.as_str(), config.auth.enabled)];
        if config.kafka.enabled {
            listeners.push(("kafka.addr", config.kafka.addr.as_str(), config.auth.enabled));
        }
        config::check_exposure(&listeners, config.insecure)?;
        let with_tls = [("http.addr", config.http.addr.as_str(), config.auth.enabled, config.http.tls.is_some()), ("kafka.addr", config.kafka.addr.as_str(), config.auth.enabled && config.kafka.enabled, config.kafka.tls.is_some())];
        for l in config::cleartext_credentials(&with_tls) {
            tracing::warn!(listener = %l, "passwords and tokens reach this listener in clear text over the network: set its tls cert and key (see `sluice certs dev`)");
        }
        // TLS certificates load first (a bad file stops the start before anything is
        // opened, naming the file), off the async workers; they reload on SIGHUP.
        let (http_cert, kafka_cert) = {
            let (h, k) = (config.http.tls.clone(), config.kafka.tls.clone());
            let load = move |t: Option<tls::TlsSection>| t.as_ref().map(tls::Reloadable::load).transpose();
            let loaded = tokio::task::spawn_blocking(move || Ok::<_, tls::TlsError>((load(h)?, load(k)?))).await;
            loaded.map_err(|e| ServerError::Tls(e.to_string()))?.map_err(|e| ServerError::Tls(e.to_string()))?
        };
        http::prometheus();
        // Recovery reads (and may truncate) files: off the async workers.
        let opened = {
            let (data, config) = (data.clone(), config.clone());
            tokio::task::spawn_blocking(move || -> Result<_, ServerError> {
                std::fs::create_dir_all(&data).map_err(|source| ServerError::DataDir { path: data.clone(), source })?;
                let log_config = LogConfig { segment_bytes: config.log.segment_bytes, segment_ms: config.log.segment_ms };
                let log = Arc::new(Log::open(&data.join("log"), log_config)?);
                let gateway = Arc::new(Gateway::new(log.clone(), config.topics.clone(), Some(&data.join("schemas")))?);
                if let Some(x) = external {
                    gateway.use_external(x, &config.topics)?;
                }
                let lake = Arc::new(Lake::open_at(config.lake_root()?)?);
                let archive: sessions::Archive = {
                    let lake = lake.clone();
                    Box::new(move |f: &mut dyn FnMut(sluice_core::model::SessionSummary)| lake.visit_sessions(live::HEART_RATE, f).map_err(|e| error_chain(&e)))
                };
                let sessions = Arc::new(SessionStore::new(config.http.sessions_in_memory, Some(archive)));
                if let Err(e) = sessions.load() {
                    tracing::warn!(error = %e, "cannot read the heart-rate sessions table; the live view starts empty");
                }
                let audit = Arc::new(audit::Audit::open(&log, &data)?);
                Ok((log, gateway, lake, sessions, audit))
            })
            .await
            .map_err(|e| ServerError::Job(e.to_string()))??
        };
        let (log, gateway, lake, sessions, audit) = opened;
        // One copy of the principals for the HTTP listener, the Kafka listener and the audit
        // forwarder; the HTTP side's refresher keeps its in-memory copy current.
        let auth_store = Arc::new(sluice_auth::AuthStore::new(&data));
        let audit_task = audit::spawn_forwarder(audit.clone(), auth_store.clone());
        let live = Arc::new(LiveViews::new(sessions.clone()));
        let checkpoints = data.join("checkpoints");
        lake.set_auto_compact_min_files(config.lake.auto_compact_min_files);
        let query_lake = lake.clone();
        let maintenance_task = spawn_lake_maintenance(lake.clone(), config.lake.clone());
        let connectors: Arc<dyn Connectors> = Arc::new(adapters::ServerConnectors { log: log.clone(), lake, gateway: gateway.clone(), staging: checkpoints.join("staging") });
        let functions = config.heart_rate.functions();
        let configured: std::collections::BTreeSet<String> = config.pipelines.iter().map(|p| p.name.clone()).collect();
        let runtime_dir = data.join("pipelines");
        let engine = if config.stream.enabled {
            // Reading runtime pipelines and creating output topics touch the disk: off the async workers.
            let (planned, broken) = {
                let (gateway, functions, connectors, live, configured, runtime_dir) = (gateway.clone(), functions.clone(), connectors.clone(), live.clone(), configured.clone(), runtime_dir.clone());
                let mut specs = config.pipelines.clone();
                tokio::task::spawn_blocking(move || -> Result<_, ServerError> {
                    for spec in pipelines::load_runtime(&runtime_dir) {
                        if configured.contains(&spec.name) {
                            tracing::warn!(pipeline = %spec.name, "a runtime pipeline has the name of a configured one; the configured one runs");
                        } else {
                            specs.push(spec);
                        }
                    }
                    let mut planned = Vec::new();
                    let mut broken = Vec::new();
                    for spec in specs {
                        match Pipelines::plan(&gateway, &functions, &spec) {
                            Ok(p) => {
                                if spec.topic {
                                    for name in spec.stream_names() {
                                        connectors.register_output(&spec.name, &name, &p.plan.output_schema).map_err(|e| ServerError::Pipeline(format!("pipeline {:?}: {e}", spec.name)))?;
                                    }
                                }
                                live.set_outputs(&spec.name, spec.stream_names());
                                planned.push(p);
                            }
                            Err(e) if configured.contains(&spec.name) => {
                                return Err(ServerError::Pipeline(format!("[[pipelines]] {:?} in the configuration: {e}", spec.name)));
                            }
                            Err(e) => {
                                tracing::error!(pipeline = %spec.name, error = %e, "a pipeline created at runtime no longer plans; it does not run (drop it with DELETE /v1/pipelines/{{name}})");
                                broken.push((spec, e.to_string()));
                            }
                        }
                    }
                    Ok((planned, broken))
                })
                .await
                .map_err(|e| ServerError::Job(e.to_string()))??
            };
            let settings = config.engine_settings();
            let (c2, l2) = (connectors.clone(), live.clone());
            let engine = tokio::task::spawn_blocking(move || Engine::start(checkpoints, planned, c2, l2, settings)).await.map_err(|e| ServerError::Job(e.to_string()))??;
            Some((engine, broken))
        } else {
            None
        };
        let (engine, broken) = match engine {
            Some((e, b)) => (Some(e), b),
            None => (None, Vec::new()),
        };
        let pipelines = Arc::new(Pipelines::new(engine, live, log.clone(), gateway.clone(), functions, configured, runtime_dir));
        for (spec, e) in broken {
            pipelines.add_broken(spec, e);
        }

        let tls_task = tls::spawn_reloader(http_cert.iter().chain(kafka_cert.iter()).cloned().collect());
        let acceptor = |c: &Option<Arc<tls::Reloadable>>, alpn: &[&[u8]]| c.clone().map(|c| tls::acceptor(c, alpn)).transpose().map_err(|e| ServerError::Tls(e.to_string()));
        let (http_tls, kafka_tls) = (acceptor(&http_cert, &[b"http/1.1"])?, acceptor(&kafka_cert, &[])?);
        let login_throttle = Arc::new(sluice_auth::throttle::LoginThrottle::default());
        let kafka_sasl = if config.auth.enabled {
            Some(Arc::new(sluice_auth::sasl::SaslServer::new(auth_store.clone()).map_err(|e| ServerError::Auth(e.to_string()))?))
        } else {
            None
        };
        let kafka = if config.kafka.enabled {
            let listener = tokio::net::TcpListener::bind(&config.kafka.addr)
                .await
                .map_err(|source| ServerError::Bind { flag: "--kafka-addr (or set [kafka] enabled = false)", addr: config.kafka.addr.clone(), source })?;
            let addr = listener.local_addr().map_err(|source| ServerError::Bind { flag: "--kafka-addr (or set [kafka] enabled = false)", addr: config.kafka.addr.clone(), source })?;
            let host = if config.kafka.advertised_host.is_empty() { addr.ip().to_string() } else { config.kafka.advertised_host.clone() };
            let protected: std::collections::BTreeSet<String> = config.topics.iter().flat_map(|t| [t.name.clone(), format!("{}{}", t.name, sluice_gateway::DLQ_SUFFIX)]).collect();
            let options = sluice_kafka::KafkaOptions {
                advertised_host: host,
                advertised_port: if config.kafka.advertised_port == 0 { addr.port() as i32 } else { config.kafka.advertised_port as i32 },
                auto_create_partitions: config.kafka.auto_create_partitions.max(1),
                auto_create_topics: config.kafka.auto_create_topics,
                group_initial_rebalance_delay_ms: config.kafka.group_initial_rebalance_delay_ms as i64,
                protected_topics: Box::new(move |t: &str| t.starts_with("__") || protected.contains(t)),
                read_only_topics: { let gw = gateway.clone(); Box::new(move |t: &str| t.starts_with("__") || gw.writer_of(t).is_some()) },
                record_check: { let gw = gateway.clone(); Box::new(move |t: &str| gw.record_check(t)) },
                limits: config.kafka.limits(),
                tls: kafka_tls,
                on_admin: {
                    let audit = audit.clone();
                    Box::new(move |e: sluice_kafka::AdminEvent| {
                        let mut event = audit::AuditEvent::new(e.action, e.user.as_deref().unwrap_or("anonymous"), e.host.trim_start_matches('/'), &e.target);
                        event.detail = Some(format!("kafka {}{}", e.api, if e.refused { ": refused" } else { "" }));
                        let audit = audit.clone();
                        tokio::spawn(async move { audit.record(event).await });
                    })
                },
                sasl: match &kafka_sasl {
                    Some(server) => {
                        let audit = audit.clone();
                        let store = auth_store.clone();
                        Some(sluice_kafka::sasl::KafkaSasl {
                            server: server.clone(),
                            principal: Box::new(move |user: &str| store.cached().user(user).map(|u| (u.role, u.limits.clone()))),
                            throttle: login_throttle.clone(),
                            on_login: Box::new(move |e: sluice_kafka::sasl::LoginEvent| {
                                let (action, who) = match &e.failure {
                                    None => ("login", e.user.clone()),
                                    Some(_) => ("login_failed", if e.user.is_empty() { "unknown".to_string() } else { e.user.clone() }),
                                };
                                let event = audit::AuditEvent::new(action, &who, &e.peer.to_string(), &format!("kafka {}", e.mechanism));
                                let audit = audit.clone();
                                tokio::spawn(async move { audit.record(event).await });
                            }),
                        })
                    }
                    None => None,
                },
            };
            let server = Arc::new(sluice_kafka::KafkaServer::new(log.clone(), gateway.offsets().clone(), options));
            gateway.set_membership(Arc::new(adapters::KafkaMembership(server.clone())));
            tracing::info!(%addr, "serving the Kafka protocol");
            Some((addr, server.clone(), tokio::spawn(server.serve(listener))))
        } else {
            None
        };
        let kafka_server = kafka.as_ref().map(|(_, server, _)| server.clone());
        let kafka = kafka.map(|(addr, _, task)| (addr, task));
        let retention_task = spawn_retention(log.clone(), config.log.retention_check_interval_ms);
        let flush_task = spawn_flusher(log.clone());
        let h = &config.http;
        let mut policy = guard::Policy::new(&h.allowed_hosts, &h.allowed_origins, h.request_body_timeout_ms, h.max_body_bytes, h.max_inflight_body_bytes);
        policy.ingest_quota = Arc::new(sluice_core::quota::RateQuota::new(h.ingest_requests_per_second));
        let policy = Arc::new(policy);
        let slots = |n: usize| Arc::new(tokio::sync::Semaphore::new(n.min(tokio::sync::Semaphore::MAX_PERMITS)));
        let (websocket_slots, sse_slots) = (slots(h.max_websockets), slots(h.max_sse_subscribers));
        let routes = sluice_gateway::http::RouteOptions { max_body_bytes: h.max_body_bytes, ws_idle_timeout_ms: h.ws_idle_timeout_ms, websocket_slots: websocket_slots.clone() };
        let caps = sluice_core::net::ConnectionCaps::new(h.max_connections, h.max_connections_per_ip);
        let limits = http::LimitGauges {
            http_connections: caps.clone(),
            http_max_connections: h.max_connections,
            http_max_body_memory: guard::Policy::body_memory_bound(h.max_inflight_body_bytes, h.max_body_bytes),
            http_body_memory: policy.body_memory.clone(),
            websocket_slots,
            max_websockets: h.max_websockets.min(tokio::sync::Semaphore::MAX_PERMITS),
            sse_slots: sse_slots.clone(),
            max_sse_subscribers: h.max_sse_subscribers.min(tokio::sync::Semaphore::MAX_PERMITS),
            kafka: kafka_server,
            kafka_max_connections: config.kafka.max_connections,
        };
        let app = Arc::new(App { log: log.clone(), gateway: gateway.clone(), data_dir: data.clone(), sessions: sessions.clone(), pipelines: pipelines.clone(), limits });
        let mut routes = sluice_gateway::http::router(gateway, routes).merge(http::router(app.clone())).merge(readings::router(app)).merge(events::router()).merge(pipelines::router(pipelines.clone()));
        let query_service = query::QueryService {
            lake: query_lake.clone(),
            sessions: sessions.clone(),
            limits: sluice_lake::query::QueryLimits { memory_bytes: config.lake.query_memory_bytes, ..Default::default() },
            timeout: std::time::Duration::from_millis(config.lake.query_timeout_ms),
        };
        routes = routes.merge(query::router(Arc::new(query_service)));
        let mut first_admin_password = None;
        let mut auth = None;
        let mut auth_task = None;
        if config.auth.enabled {
            let store = auth_store.clone();
            let created = tokio::task::spawn_blocking(move || auth::ensure_first_admin(&store).map(|pw| (pw, store))).await;
            let (password, store) = created.map_err(|e| ServerError::Auth(e.to_string()))?.map_err(|e| ServerError::Auth(e.to_string()))?;
            first_admin_password = password;
            let a = Arc::new(auth::Auth::new(store, audit.clone(), config.auth.session_ttl_ms, config.auth.max_concurrent_logins, config.http.tls.is_some(), login_throttle.clone()));
            routes = routes.merge(auth::router(a.clone()));
            auth_task = Some(auth::spawn_refresher(a.clone()));
            auth = Some(a);
        } else {
            routes = routes.merge(auth::open_router());
        }
        let mut router = routes
            .layer(axum::middleware::from_fn_with_state(sse_slots, guard::sse_slots))
            .layer(axum::middleware::from_fn_with_state(policy, guard::guard))
            .layer(axum::middleware::from_fn_with_state(audit, audit::middleware));
        if let Some(a) = auth {
            // Outermost: an unauthenticated request is refused before its body is read.
            router = router.layer(axum::middleware::from_fn_with_state(a, auth::authorize));
        }
        let limits = listen::HttpLimits { header_read_timeout_ms: h.header_read_timeout_ms };
        let listener = tokio::net::TcpListener::bind(&config.http.addr)
            .await
            .map_err(|source| ServerError::Bind { flag: "--http-addr", addr: config.http.addr.clone(), source })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind { flag: "--http-addr", addr: config.http.addr.clone(), source })?;
        let (http_stop, stop_rx) = oneshot::channel::<()>();
        let http_task = tokio::spawn(listen::serve(listener, router, limits, caps, http_tls, async move {
            let _ = stop_rx.await;
        }));
        tracing::info!(%addr, data_dir = %data.display(), "sluice is serving");
        Ok(Server { addr, data_dir: data, lake: query_lake, log, sessions, pipelines, http_stop, http_task, retention_task, flush_task, maintenance_task, audit_task, tls_task, auth_task, kafka, first_admin_password, https: config.http.tls.is_some() })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https` when the HTTP listener serves TLS, else `http`.
    pub fn http_scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The password of the user `admin`, when this start created it (authentication on, no
    /// users yet): to be shown once.
    pub fn first_admin_password(&self) -> Option<&str> {
        self.first_admin_password.as_deref()
    }

    /// Where the Kafka protocol is served, if enabled.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka.as_ref().map(|(a, _)| *a)
    }

    /// The data directory (log, checkpoints, lake).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The lake the server's pipelines write.
    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn sessions(&self) -> &Arc<SessionStore> {
        &self.sessions
    }

    /// The server's pipelines.
    pub fn pipelines(&self) -> &Arc<Pipelines> {
        &self.pipelines
    }

    /// Ends the input of the `heart_rate` pipeline: reads everything durable now, closes
    /// every open session and commits (what `sluice demo` does once its replay is
    /// acknowledged).
    pub async fn drain_job(&self) -> Result<(), ServerError> {
        let p = self.pipelines.clone();
        tokio::task::spawn_blocking(move || p.drain(live::HEART_RATE)).await.map_err(|e| ServerError::Job(e.to_string()))?.map(|_| ()).map_err(|e| ServerError::Job(e.to_string()))
    }

    /// Graceful shutdown: stop accepting connections and finish in-flight requests, commit
    /// the pipelines' last checkpoint, fsync the log.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.retention_task.abort();
        self.audit_task.abort();
        self.tls_task.abort();
        if let Some(t) = &self.auth_task {
            t.abort();
        }
        self.flush_task.abort();
        if let Some(t) = &self.maintenance_task {
            t.abort();
        }
        if let Some((_, task)) = &self.kafka {
            task.abort();
        }
        let _ = self.http_stop.send(());
        if let Err(e) = self.http_task.await {
            tracing::warn!(error = %e, "HTTP server task failed");
        }
        let p = self.pipelines.clone();
        let result = tokio::task::spawn_blocking(move || p.engine.as_ref().map_or(Ok(()), |e| e.stop()))
            .await
            .map_err(|e| ServerError::Job(e.to_string()))
            .and_then(|r| r.map_err(ServerError::Stream));
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.close()).await.map_err(|e| ServerError::Job(e.to_string()))??;
        tracing::info!("sluice stopped cleanly");
        result
    }
}

pub use sluice_core::error_chain;

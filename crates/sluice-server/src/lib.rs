//! sluice-server: one process holding the log, the ingest gateway, the heart-rate job,
//! the lake, the live session view, the dashboard and the metrics.
//!
//! Data path (see ARCHITECTURE.md): socket → `sluice_gateway::http` → `sluice_log`
//! (fsync, then ack) → [`adapters::LogSource`] → `sluice_stream::runner` → checkpoint
//! + [`adapters::LakeSink`] → [`sessions::SessionStore`] → SSE → dashboard.

pub mod adapters;
pub mod config;
pub mod http;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use sluice_gateway::Gateway;
use sluice_lake::Lake;
use sluice_log::{Log, LogConfig};
use sluice_stream::checkpoint::CheckpointStore;
use sluice_stream::job::HeartRateJob;
use sluice_stream::runner::{Command, JobEvent, Runner, RunnerConfig};
use tokio::sync::oneshot;

pub use config::Config;
use http::{App, JobView};
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
    #[error("the heart-rate job failed")]
    Stream(#[from] sluice_stream::StreamError),
    #[error("cannot listen on {addr}: {source}. Is another sluice (or Kafka) running? Choose another address with {flag}")]
    Bind {
        flag: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the heart-rate job is not running: {0}")]
    Job(String),
}

struct JobHandle {
    commands: mpsc::Sender<Command>,
    thread: std::thread::JoinHandle<()>,
    error: Arc<Mutex<Option<String>>>,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    data_dir: std::path::PathBuf,
    log: Arc<Log>,
    sessions: Arc<SessionStore>,
    job: Option<JobHandle>,
    http_stop: oneshot::Sender<()>,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
    retention_task: tokio::task::JoinHandle<()>,
    flush_task: tokio::task::JoinHandle<()>,
    kafka: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
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
    /// Opens (recovering) the log, the lake and the job's checkpoint, and starts serving.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        let data = config.data_dir.clone();
        std::fs::create_dir_all(&data).map_err(|source| ServerError::DataDir { path: data.clone(), source })?;
        http::prometheus();
        let log_config = LogConfig { segment_bytes: config.log.segment_bytes, segment_ms: config.log.segment_ms };
        let log = Arc::new(Log::open(&data.join("log"), log_config)?);
        let gateway = Arc::new(Gateway::new(log.clone(), config.topics.clone())?);
        let lake = Lake::open(&data.join("lake"))?;
        let sessions = Arc::new(SessionStore::new(lake.read_sessions()?));

        let job_cfg = &config.jobs.heart_rate;
        let (job, job_view) = if job_cfg.enabled {
            let topic = log.topic(&job_cfg.topic).ok_or_else(|| ServerError::Job(format!("topic {:?} is missing", job_cfg.topic)))?;
            let store = sessions.clone();
            let observer = Box::new(move |e: JobEvent| match e {
                JobEvent::Open { player_id, sessions } => store.set_open(player_id, sessions),
                JobEvent::Closed(closed) => store.add_closed(closed),
            });
            let mut runner = Runner::new(
                RunnerConfig { name: "heart_rate".into(), checkpoint_interval_ms: job_cfg.checkpoint_interval_ms, batch_records: job_cfg.batch_records },
                HeartRateJob::new(job_cfg.job_config()),
                adapters::LogSource { topic },
                adapters::LakeSink { lake },
                CheckpointStore::open(&data.join("checkpoints").join("heart_rate"))?,
                observer,
            );
            let mut restored: std::collections::BTreeMap<String, Vec<_>> = Default::default();
            for s in runner.recover()? {
                restored.entry(s.player_id.clone()).or_default().push(s);
            }
            for (player_id, open) in restored {
                sessions.set_open(player_id, open);
            }
            let status = runner.status();
            let error = Arc::new(Mutex::new(None));
            let (tx, rx) = mpsc::channel();
            let err2 = error.clone();
            let thread = std::thread::Builder::new()
                .name("job-heart_rate".into())
                .spawn(move || {
                    if let Err(e) = runner.run(rx) {
                        let chain = error_chain(&e);
                        tracing::error!(error = %chain, "the heart-rate job stopped; restart sluice to resume from the last checkpoint");
                        if let Ok(mut slot) = err2.lock() {
                            *slot = Some(chain);
                        }
                    }
                })
                .map_err(|e| ServerError::Job(e.to_string()))?;
            let view = JobView { name: "heart_rate".into(), commands: tx.clone(), topic: job_cfg.topic.clone(), status, error: error.clone() };
            (Some(JobHandle { commands: tx, thread, error }), Some(view))
        } else {
            (None, None)
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
                record_check: { let gw = gateway.clone(); Box::new(move |t: &str| gw.record_check(t)) },
            };
            let server = Arc::new(sluice_kafka::KafkaServer::new(log.clone(), gateway.offsets().clone(), options));
            gateway.set_membership(Arc::new(adapters::KafkaMembership(server.clone())));
            tracing::info!(%addr, "serving the Kafka protocol");
            Some((addr, tokio::spawn(server.serve(listener))))
        } else {
            None
        };
        let retention_task = spawn_retention(log.clone(), config.log.retention_check_interval_ms);
        let flush_task = spawn_flusher(log.clone());
        let app = Arc::new(App { log: log.clone(), sessions: sessions.clone(), job: job_view });
        let router = sluice_gateway::http::router(gateway, config.http.max_body_bytes).merge(http::router(app));
        let listener = tokio::net::TcpListener::bind(&config.http.addr)
            .await
            .map_err(|source| ServerError::Bind { flag: "--http-addr", addr: config.http.addr.clone(), source })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind { flag: "--http-addr", addr: config.http.addr.clone(), source })?;
        let (http_stop, stop_rx) = oneshot::channel::<()>();
        let http_task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await
        });
        tracing::info!(%addr, data_dir = %data.display(), "sluice is serving");
        Ok(Server { addr, data_dir: data, log, sessions, job, http_stop, http_task, retention_task, flush_task, kafka })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the Kafka protocol is served, if enabled.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka.as_ref().map(|(a, _)| *a)
    }

    /// The data directory (log, checkpoints, lake).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn sessions(&self) -> &Arc<SessionStore> {
        &self.sessions
    }

    /// Ends the job's input: reads everything durable now, closes every open session and
    /// commits a checkpoint (what `sluice demo` does once its replay is acknowledged).
    pub async fn drain_job(&self) -> Result<(), ServerError> {
        self.job_command(Command::Drain).await
    }

    async fn job_command(&self, make: fn(mpsc::Sender<Result<(), String>>) -> Command) -> Result<(), ServerError> {
        let job = self.job.as_ref().ok_or_else(|| ServerError::Job("the job is disabled".into()))?;
        let (commands, error) = (job.commands.clone(), job.error.clone());
        tokio::task::spawn_blocking(move || http::job_command(&commands, &error, make))
            .await
            .map_err(|e| ServerError::Job(e.to_string()))?
            .map_err(ServerError::Job)
    }

    /// Graceful shutdown: stop accepting connections and finish in-flight requests, commit
    /// the job's last checkpoint, fsync the log.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.retention_task.abort();
        self.flush_task.abort();
        if let Some((_, task)) = &self.kafka {
            task.abort();
        }
        let _ = self.http_stop.send(());
        match self.http_task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
            Ok(Ok(())) => {}
        }
        let result = match &self.job {
            Some(job) => {
                let (commands, error) = (job.commands.clone(), job.error.clone());
                tokio::task::spawn_blocking(move || http::job_command(&commands, &error, Command::Stop))
                    .await
                    .map_err(|e| ServerError::Job(e.to_string()))
                    .and_then(|r| r.map_err(ServerError::Job))
            }
            None => Ok(()),
        };
        if let Some(job) = self.job {
            let _ = tokio::task::spawn_blocking(move || job.thread.join()).await;
        }
        self.log.close()?;
        tracing::info!("sluice stopped cleanly");
        result
    }
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

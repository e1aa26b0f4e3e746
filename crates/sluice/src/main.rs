//! The `sluice` command: clap plus wiring. Everything it runs lives in the library crates.

mod bench;
mod tables;
mod bench_lake;
mod bench_log;
mod bench_pipelines;
mod bench_sse;
mod demo;
mod groups;
mod pipelines;
mod replay;
mod status;
mod topics;
mod users;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sluice_server::{config, Server};

#[derive(Parser)]
#[command(name = "sluice", version, about = "A real-time data pipeline in one binary: ingest (HTTP, WebSocket, Kafka protocol), durable log, streaming SQL pipelines, Parquet lake, live dashboard.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format on stderr: `text` (human) or `json` (one JSON object per line, for
    /// log shippers; processing-status events carry `event_id`, `kind` and `data`).
    #[arg(long, global = true, value_enum, env = "SLUICE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: ingest, the log, the Kafka listener, the pipelines, the lake, the dashboard.
    Serve(ServeArgs),
    /// Run the configured pipelines as a worker over an external Kafka cluster: workers of
    /// one --group share the source partitions (Kafka's consumer-group protocol); state and
    /// checkpoints go to --state, tables to --lake (local paths or s3:// URLs).
    Worker(worker::WorkerArgs),
    /// Start a server, replay the bundled real Garmin recordings through it, print each
    /// session's minutes per zone, and keep serving the dashboard until Ctrl-C.
    Demo(DemoArgs),
    /// Send FIT, TCX or GPX recordings to a running server as heart-rate readings.
    Replay(replay::ReplayArgs),
    /// List, describe, create, alter and delete topics of a running server.
    Topics(topics::TopicsArgs),
    /// List and describe consumer groups (committed offsets, lag) of a running server.
    Groups(groups::GroupsArgs),
    /// One screen of a running server: readiness, disk, topics, group lag, pipelines,
    /// last checkpoints, alerts and recent events (`--watch` redraws it).
    Status(status::StatusArgs),
    /// Create, list, describe, drain and drop the SQL pipelines of a running server.
    Pipelines(pipelines::PipelinesArgs),
    /// List, describe, compact, vacuum and show the history of the lake's Delta tables
    /// (works on the data directory, with or without a running server).
    Tables(tables::TablesArgs),
    /// Run SQL over the lake's tables and print the answer (`--server` asks a running server).
    Query(tables::QueryArgs),
    /// Add, list and remove users and their roles (works with or without a running server).
    Users(users::UsersArgs),
    /// Create, list and revoke API tokens (works with or without a running server).
    Tokens(users::TokensArgs),
    /// TLS certificates for trying TLS out.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Print the effective configuration (or, with --defaults, the documented defaults).
    Config(ConfigArgs),
    /// Benchmarks; each prints figures to compare with this machine's own limits.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make a CA and a server certificate it signs: DIR/ca.pem, DIR/server.pem and
    /// DIR/server-key.pem; with --client NAME, also a client certificate for user NAME
    /// (DIR/NAME.pem, DIR/NAME-key.pem) for mutual TLS. For development and tests; use
    /// certificates from your CA in production.
    Dev {
        /// Directory to write the files to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Names and IP addresses the server certificate is valid for.
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        hosts: Vec<String>,
        /// A user to make a client certificate for (its subject is CN=NAME). Repeat for more.
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Readings/s from `replay --speed 0` through ingest, log and the heart-rate pipeline to committed sessions.
    Pipeline {
        /// Config file (TOML), layered over the embedded defaults (data_dir and http.addr are the bench's own).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: bench::PipelineArgs,
    },
    /// Durable append (records/s, MB/s) and scan throughput of the log, beside the disk's fdatasync bandwidth.
    Log(bench_log::LogArgs),
    /// SQL pipelines from the log to committed output (events/s, checkpoints, peak RSS), beside Spark on the same input.
    Pipelines(bench_pipelines::PipelinesArgs),
    /// The Delta lake: commit latency, table open time after many commits, query time over
    /// 10M readings, beside the Python deltalake package and DuckDB on the same files.
    Lake(bench_lake::LakeArgs),
    /// Ingest ack → SSE delivery of the updated session (p50/p99 ms) under background load,
    /// against a running server.
    SseLatency(bench_sse::SseLatencyArgs),
}

/// Where configuration comes from; flags override the file and SLUICE_* variables.
#[derive(Args, Clone)]
pub(crate) struct ServerArgs {
    /// Config file (TOML), layered over the embedded defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (log, checkpoints, lake). Overrides `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address, e.g. 127.0.0.1:8080. Overrides `http.addr`.
    #[arg(long)]
    http_addr: Option<String>,
    /// Kafka protocol listen address, e.g. 127.0.0.1:9092. Overrides `kafka.addr`.
    #[arg(long)]
    kafka_addr: Option<String>,
    /// Allow listening on addresses other than loopback without authentication (the
    /// Kafka listener has none yet; HTTP has `[auth] enabled`): anyone who can reach such a
    /// listener can then read, write and delete. Overrides `insecure`.
    #[arg(long)]
    insecure: bool,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Append ingested records to an external Kafka cluster instead of the embedded log:
    /// kafka://HOST:PORT[,HOST:PORT...]. A device is acknowledged only after the cluster
    /// acknowledged its records (acks=all, idempotent producer). Then this server is the
    /// edge: gateway, dashboard and API; pipelines and the Kafka listener do not run, and
    /// Kafka clients use the cluster. TLS and SASL settings: `[cluster] properties`.
    #[arg(long, value_name = "URL")]
    log: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Exit (status 0) once the table is printed instead of serving until Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// Replay speed: real time × N; 0 sends as fast as acknowledgements allow.
    #[arg(long, default_value_t = 0.0)]
    speed: f64,
}

#[derive(Args)]
struct ConfigArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Print the embedded default.toml, with every key documented.
    #[arg(long)]
    defaults: bool,
}

impl ServerArgs {
    fn load(&self) -> anyhow::Result<config::Config> {
        let mut overrides = Vec::new();
        if let Some(d) = &self.data_dir {
            overrides.push(("data_dir", toml::Value::String(d.display().to_string())));
        }
        if let Some(a) = &self.http_addr {
            overrides.push(("http.addr", toml::Value::String(a.clone())));
        }
        if let Some(a) = &self.kafka_addr {
            overrides.push(("kafka.addr", toml::Value::String(a.clone())));
        }
        if self.insecure {
            overrides.push(("insecure", toml::Value::Boolean(true)));
        }
        Ok(config::load(self.config.as_deref(), std::env::vars(), &overrides)?)
    }
}

/// `default` for sluice's own targets. The Delta libraries log every snapshot load at info
/// (and a table that does not exist yet as an error, which we handle); their failures reach
/// us as errors, so only their warnings are shown. `RUST_LOG` overrides all of it.
fn init_tracing(default: &str, format: LogFormat) {
    let directives = format!("{default},buoyant_kernel=off,buoyant_kernel_engine=warn,deltalake_core=warn,datafusion=warn");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => {
            JSON_LOG.store(true, std::sync::atomic::Ordering::Relaxed);
            fmt.json().flatten_event(true).with_current_span(false).init()
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every connection (a device's
/// WebSocket, a Kafka client) holds a descriptor, and the common soft default of 1024 is
/// far below what one server can hold.
pub(crate) fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(open_files = n, "open-file limit (RLIMIT_NOFILE, raised to the hard limit)"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit; connections beyond `ulimit -n` will be refused"),
    }
}

/// Whether stderr carries JSON log lines (`--log-format json`).
static JSON_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A line for the person running `serve`: plain on stderr, or, under `--log-format json`,
/// a log event, so that stderr stays one JSON object per line.
pub(crate) fn say(line: String) {
    if JSON_LOG.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(target: "sluice", "{line}");
    } else {
        eprintln!("sluice: {line}");
    }
}

/// The external cluster at `bootstrap`, with the `[cluster]` settings (for `serve --log`
/// and `worker`).
pub(crate) fn cluster_config(config: &config::Config, bootstrap: String) -> sluice_cluster::ClusterConfig {
    sluice_cluster::ClusterConfig { bootstrap, properties: config.cluster.properties.0.clone(), replication_factor: config.cluster.replication_factor, ack_timeout_ms: config.cluster.ack_timeout_ms }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    raise_open_file_limit();
    let config = args.server.load()?;
    let external: Option<Arc<dyn sluice_gateway::ExternalLog>> = match &args.log {
        None => None,
        Some(url) => {
            Some(Arc::new(sluice_cluster::ClusterLog::connect(cluster_config(&config, sluice_cluster::parse_log_url(url)?))?))
        }
    };
    let edge = external.is_some();
    let server = Server::start_with(config, external).await?;
    if edge {
        say(format!("ingest appends to the cluster at {}; pipelines and the Kafka listener do not run at the edge", args.log.as_deref().unwrap_or_default()));
    }
    if let Some(pw) = server.first_admin_password() {
        say("authentication is on and there were no users, so the user `admin` was made with the password below.".into());
        say("it is shown only now: log in at /login, then change it with `sluice users passwd admin`.".into());
        say(format!("admin password: {pw}"));
    }
    say(format!("serving on {}://{} (dashboard at /, metrics at /metrics); Ctrl-C stops", server.http_scheme(), server.addr()));
    if let Some(k) = server.kafka_addr() {
        say(format!("Kafka protocol on {k} (bootstrap_servers='{k}')"));
    }
    shutdown_signal().await;
    say("shutting down (finishing requests, committing the pipelines' checkpoint, syncing the log)".into());
    server.shutdown().await.context("shutdown was not clean")?;
    Ok(())
}

/// Caps glibc's malloc at two arenas. By default each thread that allocates gets its own
/// arena (up to eight per core), and memory freed into one arena is not reused by threads
/// of another: with reader, pipeline, compaction, checkpoint and network threads, the live
/// benchmark's peak RSS was about 30 MB higher than with two, at the same throughput
/// (`docs/benchmarks.md`). `MALLOC_ARENA_MAX` in the environment still overrides it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; it is called before any other
        // thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    init_tracing(
        match cli.command {
            Command::Serve(_) | Command::Worker(_) => "info",
            _ => "warn",
        },
        cli.log_format,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Demo(args) => {
                raise_open_file_limit();
                demo::run(args.server.load()?, args.speed, args.exit).await
            }
            Command::Replay(args) => replay::run(args).await,
            Command::Groups(args) => tokio::task::spawn_blocking(move || groups::run(args)).await?,
            Command::Status(args) => tokio::task::spawn_blocking(move || status::run(args)).await?,
            Command::Topics(args) => tokio::task::spawn_blocking(move || topics::run(args)).await?,
            Command::Pipelines(args) => tokio::task::spawn_blocking(move || pipelines::run(args)).await?,
            Command::Certs(CertsCommand::Dev { out, hosts, clients }) => {
                let written = sluice_server::tls::dev_certs(&out, &hosts, &clients)?;
                for p in &written {
                    println!("{}", p.display());
                }
                eprintln!("sluice: set [http.tls] and [kafka.tls] cert = server.pem, key = server-key.pem; clients trust ca.pem");
                if !clients.is_empty() {
                    eprintln!("sluice: for mutual TLS also set client_ca = ca.pem; a client certificate is the user its CN names (`sluice users add NAME --role R --no-password`)");
                }
                Ok(())
            }
            Command::Tables(args) => tokio::task::spawn_blocking(move || tables::run_tables(args)).await?,
            Command::Query(args) => tables::run_query(args).await,
            Command::Users(args) => tokio::task::spawn_blocking(move || users::run_users(args)).await?,
            Command::Tokens(args) => tokio::task::spawn_blocking(move || users::run_tokens(args)).await?,
            Command::Bench(BenchCommand::Log(args)) => tokio::task::spawn_blocking(move || bench_log::run(args)).await?,
            Command::Bench(BenchCommand::Pipelines(args)) => bench_pipelines::run(args).await,
            Command::Bench(BenchCommand::Lake(args)) => bench_lake::run(args).await,
            Command::Bench(BenchCommand::SseLatency(args)) => tokio::task::spawn_blocking(move || bench_sse::run(args)).await?,
            Command::Bench(BenchCommand::Pipeline { config, args }) => {
                bench::pipeline(ServerArgs { config, data_dir: None, http_addr: None, kafka_addr: None, insecure: false }.load()?, args).await
            }
            Command::Config(args) => {
                if args.defaults {
                    print!("{}", config::DEFAULT_TOML);
                } else {
                    print!("{}", toml::to_string_pretty(&args.server.load()?)?);
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<&(dyn std::error::Error + 'static)> = e.chain().collect();
            let mut text = chain[0].to_string();
            for w in chain.windows(2) {
                // Some errors (DataFusion's) print their source in their own message too.
                let (outer, inner) = (w[0].to_string(), w[1].to_string());
                if !outer.contains(&inner) {
                    text.push_str(": ");
                    text.push_str(&inner);
                }
            }
            eprintln!("error: {text}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! `sluice worker`: wiring of a processing worker over an external Kafka cluster (the
//! worker itself is `sluice-worker`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sluice_lake::remote::StateDir;
use sluice_lake::{Lake, Root};
use sluice_log::{Log, LogConfig};
use sluice_server::pipelines::Pipelines;
use sluice_worker::{Worker, WorkerOptions};

use crate::ServerArgs;

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The external Kafka cluster: HOST:PORT[,HOST:PORT...]. TLS and SASL settings go in
    /// `[cluster] properties`.
    #[arg(long, value_name = "HOST:PORT[,...]")]
    kafka_bootstrap: String,
    /// Where the lake's Delta tables are: a local path or s3://bucket/prefix (shared by
    /// every worker of the group). Default: `[lake] location`.
    #[arg(long, value_name = "LOCATION")]
    lake: Option<String>,
    /// Where the tasks' checkpoints are: a local path or s3://bucket/prefix, shared by every
    /// worker of the group (any worker resumes any partition from it). Object-store
    /// settings come from `[lake] storage_options`.
    #[arg(long, value_name = "LOCATION")]
    state: String,
    /// The consumer group the workers share the source partitions in.
    #[arg(long, default_value = "sluice-workers")]
    group: String,
    /// This worker's name in the group and in the manifests it writes. Default:
    /// `worker-<pid>`.
    #[arg(long)]
    name: Option<String>,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    crate::raise_open_file_limit();
    let config = args.server.load()?;
    // The worker's API has no authentication: loopback only, unless --insecure.
    sluice_server::config::check_exposure(&[("http.addr", config.http.addr.as_str(), false)], config.insecure)?;
    let bootstrap = sluice_cluster::parse_log_url(&format!("kafka://{}", args.kafka_bootstrap)).context("--kafka-bootstrap")?;
    let cluster = crate::cluster_config(&config, bootstrap);
    let client = sluice_cluster::client_settings(&cluster)?;
    let name = args.name.clone().unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let scratch = config.data_dir.join("worker");
    let (lake_at, options, state_at) = (args.lake.clone().unwrap_or_else(|| config.lake_location()), config.lake.storage_options.clone(), args.state.clone());
    let (pipelines, topics, functions) = (config.pipelines.clone(), config.topics.clone(), config.heart_rate.functions());
    let (scratch2, lake_shown) = (scratch.clone(), lake_at.clone());
    let opened = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let cluster = Arc::new(sluice_cluster::ClusterLog::connect(cluster)?);
        let lake = Arc::new(Lake::open_at(Root::open(&lake_at, &options)?).context("--lake")?);
        let state = StateDir::open(&state_at, &options).context("--state")?;
        // The pipelines are planned against the configured topics' schemas, as in `serve`.
        let log = Arc::new(Log::open(&scratch2.join("schemas-log"), LogConfig::default())?);
        let gateway = sluice_gateway::Gateway::new(log, topics.clone(), None)?;
        let mut planned = Vec::new();
        for spec in &pipelines {
            planned.push(Pipelines::plan(&gateway, &functions, spec).map_err(|e| anyhow::anyhow!("[[pipelines]] {:?} in the configuration: {e}", spec.name))?);
        }
        for p in &planned {
            let partitions = topics.iter().find(|t| t.name == p.plan.source).map_or(1, |t| t.partitions);
            cluster.ensure_topic(&p.plan.source, partitions, Duration::from_secs(30)).with_context(|| format!("pipeline {:?}: its source topic on the cluster", p.spec.name))?;
        }
        Ok((cluster, lake, state, planned))
    })
    .await??;
    let (cluster, lake, state, planned) = opened;
    // No compaction from workers: two processes compacting the same files each add their
    // rewritten file, and Delta's conflict check lets both through (it ignores removes
    // without data change), so rows would double. Run `sluice tables optimize` from one place.
    lake.set_auto_compact_min_files(0);
    if config.lake.auto_compact_min_files > 0 {
        tracing::info!("workers do not compact lake tables (several writers would race); run `sluice tables optimize` from one place, e.g. a cron job");
    }
    let settings = config.engine_settings();
    sluice_server::http::prometheus();
    sluice_core::telemetry::describe();
    let state_url = state.url();
    let opts = WorkerOptions { group: args.group.clone(), name: name.clone(), pipelines: planned, cluster, client, lake, state, scratch: PathBuf::from(&scratch), settings };
    let worker = Worker::new(opts, tokio::runtime::Handle::current())?;
    let listener = tokio::net::TcpListener::bind(&config.http.addr).await.with_context(|| format!("cannot listen on {} (--http-addr)", config.http.addr))?;
    let addr = listener.local_addr()?;
    let http = tokio::spawn(sluice_worker::http::serve(listener, worker.clone()));
    crate::say(format!("worker {name} of group {:?}: pipelines from {}, lake at {}, checkpoints at {state_url}; API on http://{addr} (status at /v1/status, metrics at /metrics); Ctrl-C stops", args.group, args.kafka_bootstrap, lake_shown));
    let w2 = worker.clone();
    let mut run = tokio::task::spawn_blocking(move || w2.run());
    let result = tokio::select! {
        r = &mut run => r,
        _ = crate::shutdown_signal() => {
            crate::say("shutting down (a last checkpoint of every partition, then leaving the group)".into());
            worker.shutdown();
            run.await
        }
    };
    http.abort();
    result?.context("the worker stopped")?;
    Ok(())
}

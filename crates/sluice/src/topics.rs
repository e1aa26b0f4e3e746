//! `sluice topics`: list, describe, create, alter and delete topics of a running server
//! (a client of the `/v1/topics` API).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args)]
pub struct TopicsArgs {
    /// Server base URL. A server with `[auth] enabled` needs an API token in the
    /// environment variable SLUICE_TOKEN (`sluice tokens create`).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    server: String,
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// List topics with partitions, offsets and sizes.
    List,
    /// Show one topic: retention and, per partition, log start offset, high watermark, size.
    Describe { topic: String },
    /// Create a topic.
    Create {
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Delete closed segments older than this, ms (-1: forever). Default 7 days.
        #[arg(long)]
        retention_ms: Option<i64>,
        /// Keep each partition at most about this large, bytes (-1: unlimited).
        #[arg(long)]
        retention_bytes: Option<i64>,
        /// A JSON file with the topic's declared schema ({"fields": [...], "event_time", "key"}),
        /// so pipelines can read it and ingest checks its records.
        #[arg(long)]
        schema: Option<std::path::PathBuf>,
    },
    /// Show a topic's declared schema, or set it with --set FILE (JSON).
    Schema {
        topic: String,
        #[arg(long)]
        set: Option<std::path::PathBuf>,
    },
    /// Change a topic's retention.
    Alter {
        topic: String,
        #[arg(long)]
        retention_ms: Option<i64>,
        #[arg(long)]
        retention_bytes: Option<i64>,
    },
    /// Delete a topic and all its data.
    Delete { topic: String },
}

/// Sends one API request; returns the status and the JSON body (null when there is none).
/// With `SLUICE_TOKEN` set (or `--token`), sends it as `Authorization: Bearer`.
pub(crate) fn send(method: &str, url: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let auth = std::env::var("SLUICE_TOKEN").ok().filter(|t| !t.is_empty()).map(|t| format!("Bearer {t}"));
    macro_rules! with_auth {
        ($r:expr) => {
            match &auth {
                Some(a) => $r.header("Authorization", a),
                None => $r,
            }
        };
    }
    let result = match (method, body) {
        ("GET", _) => with_auth!(agent.get(url)).call(),
        ("DELETE", _) => with_auth!(agent.delete(url)).call(),
        ("POST", Some(b)) => with_auth!(agent.post(url)).send_json(b),
        ("POST", None) => with_auth!(agent.post(url)).send_empty(),
        ("PATCH", Some(b)) => with_auth!(agent.patch(url)).send_json(b),
        ("PUT", Some(b)) => with_auth!(agent.put(url)).send_json(b),
        _ => anyhow::bail!("unsupported request {method}"),
    };
    let mut resp = result.map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}. Is `sluice serve` running there? (--server)"))?;
    let status = resp.status().as_u16();
    let mut value: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
    if status == 401 {
        if let Some(m) = value["error"]["message"].as_str() {
            let hint = if auth.is_some() { "check SLUICE_TOKEN" } else { "set SLUICE_TOKEN to a token from `sluice tokens create --user NAME`" };
            value["error"]["message"] = Value::String(format!("{m} ({hint})"));
        }
    }
    Ok((status, value))
}

/// [`send`], failing on a non-2xx answer with its error message.
pub(crate) fn call(method: &str, url: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let (status, value) = send(method, url, body)?;
    if !(200..300).contains(&status) {
        let msg = value["error"]["message"].as_str().map_or_else(|| value.to_string(), str::to_string);
        anyhow::bail!("{status}: {msg}");
    }
    Ok(value)
}

fn print_topics(topics: &[Value]) {
    println!("{:<32} {:>9} {:>14} {:>16} {:>14} {:>12} {:>8}", "topic", "partition", "log start", "high watermark", "bytes", "retention", "segments");
    for t in topics {
        let retention = match (t["retention_ms"].as_i64(), t["retention_bytes"].as_i64()) {
            (Some(ms), Some(b)) if b >= 0 => format!("{}/{}B", human_ms(ms), b),
            (Some(ms), _) => human_ms(ms),
            _ => "?".into(),
        };
        for p in t["partitions"].as_array().into_iter().flatten() {
            println!(
                "{:<32} {:>9} {:>14} {:>16} {:>14} {:>12} {:>8}",
                t["name"].as_str().unwrap_or("?"),
                p["partition"].to_string(),
                p["log_start_offset"].to_string(),
                p["high_watermark"].to_string(),
                p["size_bytes"].to_string(),
                retention,
                p["segments"].to_string()
            );
        }
    }
}

fn human_ms(ms: i64) -> String {
    match ms {
        ms if ms < 0 => "forever".into(),
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms => format!("{ms}ms"),
    }
}

pub fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let base = format!("{}/v1/topics", args.server.trim_end_matches('/'));
    match args.command {
        TopicsCommand::List => {
            let v = call("GET", &base, None)?;
            print_topics(v["topics"].as_array().map(Vec::as_slice).unwrap_or_default());
        }
        TopicsCommand::Describe { topic } => print_topics(&[call("GET", &format!("{base}/{topic}"), None)?]),
        TopicsCommand::Create { topic, partitions, retention_ms, retention_bytes, schema } => {
            let mut body = json!({"name": topic, "partitions": partitions});
            if let Some(f) = schema {
                body["schema"] = read_json(&f)?;
            }
            if let Some(ms) = retention_ms {
                body["retention_ms"] = json!(ms);
            }
            if let Some(b) = retention_bytes {
                body["retention_bytes"] = json!(b);
            }
            print_topics(&[call("POST", &base, Some(body))?]);
        }
        TopicsCommand::Alter { topic, retention_ms, retention_bytes } => {
            anyhow::ensure!(retention_ms.is_some() || retention_bytes.is_some(), "nothing to change: give --retention-ms and/or --retention-bytes");
            let body = json!({"retention_ms": retention_ms, "retention_bytes": retention_bytes});
            print_topics(&[call("PATCH", &format!("{base}/{topic}"), Some(body))?]);
        }
        TopicsCommand::Schema { topic, set } => {
            let v = match set {
                Some(f) => call("PUT", &format!("{base}/{topic}/schema"), Some(read_json(&f)?))?,
                None => call("GET", &format!("{base}/{topic}/schema"), None)?,
            };
            println!("{}", serde_json::to_string_pretty(&v["schema"])?);
        }
        TopicsCommand::Delete { topic } => {
            call("DELETE", &format!("{base}/{topic}"), None)?;
            println!("deleted topic {topic}");
        }
    }
    Ok(())
}

fn read_json(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))
}

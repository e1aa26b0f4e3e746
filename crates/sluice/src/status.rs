//! `sluice status [--watch]`: one terminal screen of a running server: readiness, the
//! log's poison state, disk, topics, consumer groups with lag, pipelines with their
//! watermark, lag and last checkpoint, alerts, and the latest processing-status events.
//! A client of `/readyz`, `/healthz`, `/v1/topics`, `/v1/groups`, `/v1/pipelines` and
//! `/v1/events`; the screen is drawn by the pure [`render`].

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::topics::send;

#[derive(Args)]
pub struct StatusArgs {
    /// Server base URL. A server with `[auth] enabled` needs an API token in the
    /// environment variable SLUICE_TOKEN (`sluice tokens create`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Redraw the screen every --interval-ms until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// Time between redraws with --watch, ms.
    #[arg(long, default_value_t = 2000)]
    interval_ms: u64,
    /// Consumer groups to describe at most (the rest are counted).
    #[arg(long, default_value_t = 20)]
    max_groups: usize,
}

/// What one screen shows, as the server's JSON answers.
#[derive(Default)]
pub struct Snapshot {
    pub server: String,
    pub ready: Value,
    pub health: Value,
    pub topics: Vec<Value>,
    pub groups: Vec<Value>,
    pub more_groups: usize,
    pub pipelines: Vec<Value>,
    pub events: Vec<Value>,
    pub now_ms: i64,
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    loop {
        // A worker (`sluice worker`) answers /v1/status with its mode; a server has no such route.
        let worker = get(args.server.trim_end_matches('/'), "/v1/status").ok().filter(|v| v["mode"] == "worker");
        let screen = match worker {
            Some(w) => render_worker(&w),
            None => render(&fetch(&args)?),
        };
        if args.watch {
            // Clear the screen and home the cursor (ANSI), then draw.
            print!("\x1b[2J\x1b[H{screen}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_millis(args.interval_ms.max(100)));
        } else {
            print!("{screen}");
            return Ok(());
        }
    }
}

fn get(base: &str, path: &str) -> anyhow::Result<Value> {
    let (status, v) = send("GET", &format!("{base}{path}"), None)?;
    // /readyz and /healthz answer 503 with a body when not ready or degraded.
    if !(200..300).contains(&status) && status != 503 {
        let msg = v["error"]["message"].as_str().map_or_else(|| v.to_string(), str::to_string);
        anyhow::bail!("GET {path}: {status}: {msg}");
    }
    Ok(v)
}

fn fetch(args: &StatusArgs) -> anyhow::Result<Snapshot> {
    let base = args.server.trim_end_matches('/');
    let names: Vec<String> = get(base, "/v1/groups")?["groups"].as_array().into_iter().flatten().filter_map(|g| g.as_str().map(str::to_string)).collect();
    let mut groups = Vec::new();
    for g in names.iter().take(args.max_groups) {
        // A group may vanish between the list and its description.
        if let Ok(v) = get(base, &format!("/v1/groups/{g}")) {
            groups.push(v);
        }
    }
    Ok(Snapshot {
        server: base.to_string(),
        ready: get(base, "/readyz")?,
        health: get(base, "/healthz")?,
        topics: get(base, "/v1/topics")?["topics"].as_array().cloned().unwrap_or_default(),
        more_groups: names.len().saturating_sub(args.max_groups),
        groups,
        pipelines: get(base, "/v1/pipelines")?["pipelines"].as_array().cloned().unwrap_or_default(),
        events: recent_events(base),
        now_ms: sluice_core::time::now_ms(),
    })
}

/// The last few processing-status events (read from `/v1/events` with `Last-Event-ID:
/// 0`, which replays the kept ones, until the stream goes quiet).
fn recent_events(base: &str) -> Vec<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_millis(300))).build().into();
    let mut req = agent.get(format!("{base}/v1/events?last_event_id=0")).header("Accept", "text/event-stream");
    if let Ok(t) = std::env::var("SLUICE_TOKEN") {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let Ok(mut resp) = req.call() else { return Vec::new() };
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    let mut reader = resp.body_mut().as_reader();
    use std::io::Read;
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let mut events: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data:")).filter_map(|d| serde_json::from_str(d.trim()).ok()).collect();
    let keep = events.len().saturating_sub(5);
    events.drain(..keep);
    events
}

fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ago(now_ms: i64, then_ms: i64) -> String {
    let s = (now_ms - then_ms).max(0) / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The screen, as text. Pure: the same snapshot gives the same screen.
/// One screen of a worker: its group, and per owned partition each pipeline's state, next
/// offset and last checkpoint. (The group's members and lag per partition are the
/// cluster's: `sluice status` or `sluice groups describe` on a sluice cluster, Kafka's
/// `kafka-consumer-groups` on another.)
pub fn render_worker(w: &Value) -> String {
    let mut out = format!("worker {} in group {} (source topics: {}); rebalances seen: {}\n\n", text(&w["worker"]), text(&w["group"]), w["topics"].as_array().map(|t| t.iter().map(text).collect::<Vec<_>>().join(", ")).unwrap_or_default(), text(&w["rebalances"]));
    let parts = w["partitions"].as_array().cloned().unwrap_or_default();
    let owned = w["owned"].as_array().map_or(0, Vec::len);
    if owned > parts.len() {
        out.push_str(&format!("{} partition(s) assigned and starting\n", owned - parts.len()));
    }
    if parts.is_empty() {
        out.push_str("no partitions running (the group has given this worker none yet)\n");
        return out;
    }
    out.push_str(&format!("{:<28} {:<18} {:<9} {:>12} {:>11}  {}\n", "PARTITION", "PIPELINE", "STATE", "NEXT OFFSET", "CHECKPOINT", "RESUMED FROM"));
    for p in &parts {
        let name = format!("{}-{}", text(&p["topic"]), text(&p["partition"]));
        for pl in p["pipelines"].as_array().into_iter().flatten() {
            let state = if pl["error"].is_null() { text(&pl["state"]) } else { format!("{} ({})", text(&pl["state"]), text(&pl["error"])) };
            out.push_str(&format!("{:<28} {:<18} {:<9} {:>12} {:>11}  {}\n", name, text(&pl["name"]), state, text(&pl["offset"]), text(&pl["last_checkpoint_id"]), text(&p["resumed_from"])));
        }
    }
    out
}

pub fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    let ready = if s.ready["ready"].as_bool() == Some(true) {
        "ready".to_string()
    } else {
        let why: Vec<String> = s.ready["reasons"].as_array().into_iter().flatten().map(text).collect();
        format!("NOT READY ({})", why.join("; "))
    };
    let log = match s.health["log"]["poisoned"].as_str() {
        Some(r) => format!("log POISONED: {r}"),
        None => "log writable".into(),
    };
    let _ = writeln!(o, "sluice at {}: {ready}, {log}, health {}", s.server, text(&s.health["status"]));
    let disk = &s.health["disk"];
    if let (Some(free), Some(cap)) = (disk["free_bytes"].as_f64(), disk["capacity_bytes"].as_f64()) {
        let pct = if cap > 0.0 { free / cap * 100.0 } else { 0.0 };
        let _ = writeln!(o, "disk: {} free of {} ({pct:.1}%){}", bytes(free), bytes(cap), if pct < 10.0 { "  LOW" } else { "" });
    }
    if let Some(e) = s.health["checkpoints"]["failed"].as_str() {
        let _ = writeln!(o, "checkpoints FAILED: {e}");
    }

    let _ = writeln!(o, "\n{:<32} {:>10} {:>14} {:>12} {:>9}", "TOPIC", "partitions", "records", "bytes", "segments");
    for t in &s.topics {
        let parts = t["partitions"].as_array().cloned().unwrap_or_default();
        let sum = |k: &str| parts.iter().filter_map(|p| p[k].as_f64()).sum::<f64>();
        let records = sum("high_watermark") - sum("log_start_offset");
        let _ = writeln!(o, "{:<32} {:>10} {:>14} {:>12} {:>9}", text(&t["name"]), parts.len(), records, bytes(sum("size_bytes")), sum("segments"));
    }

    let _ = writeln!(o, "\n{:<32} {:<20} {:>8} {:>12}", "CONSUMER GROUP", "state", "members", "lag");
    if s.groups.is_empty() {
        let _ = writeln!(o, "(none)");
    }
    for g in &s.groups {
        let lag: u64 = g["offsets"].as_array().into_iter().flatten().filter_map(|x| x["lag"].as_u64()).sum();
        let members = g["members"].as_array().map_or(0, Vec::len);
        let state = g["state"].as_str().unwrap_or("offsets only");
        let _ = writeln!(o, "{:<32} {:<20} {:>8} {:>12}", text(&g["group"]), state, members, lag);
    }
    if s.more_groups > 0 {
        let _ = writeln!(o, "… and {} more groups (--max-groups)", s.more_groups);
    }

    let _ = writeln!(o, "\n{:<24} {:<9} {:>10} {:>8} {:<25} {:<24} {:>10} {:>6}", "PIPELINE", "state", "records", "lag", "watermark", "last checkpoint", "state", "alerts");
    let mut failed = Vec::new();
    for p in &s.pipelines {
        let checkpoint = match (p["last_checkpoint_id"].as_u64(), p["last_checkpoint_at"].as_str()) {
            (Some(id), Some(at)) if id > 0 => {
                let when = chrono::DateTime::parse_from_rfc3339(at).map(|t| ago(s.now_ms, t.timestamp_millis())).unwrap_or_else(|_| at.to_string());
                format!("#{id}, {when}")
            }
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "{:<24} {:<9} {:>10} {:>8} {:<25} {:<24} {:>10} {:>6}",
            text(&p["name"]),
            text(&p["state"]),
            text(&p["records"]),
            text(&p["lag_records"]),
            text(&p["watermark"]),
            checkpoint,
            p["state_bytes"].as_f64().map_or("-".into(), bytes),
            text(&p["alerts"])
        );
        if let Some(e) = p["error"].as_str() {
            failed.push(format!("{}: {e}", text(&p["name"])));
        }
    }
    let _ = writeln!(o, "\nALERTS");
    let fired: Vec<String> =
        s.pipelines.iter().filter(|p| p["alerts"].as_u64().unwrap_or(0) > 0).map(|p| format!("{} fired {} alerts", text(&p["name"]), p["alerts"])).collect();
    if failed.is_empty() && fired.is_empty() && s.health["log"]["poisoned"].is_null() {
        let _ = writeln!(o, "(none)");
    }
    for f in failed {
        let _ = writeln!(o, "pipeline failed: {f}");
    }
    for f in fired {
        let _ = writeln!(o, "{f}");
    }
    if !s.events.is_empty() {
        let _ = writeln!(o, "\nRECENT EVENTS");
        for e in &s.events {
            let what = match e["kind"].as_str() {
                Some("pipeline_state") => format!("pipeline {} {} → {}", text(&e["pipeline"]), text(&e["previous"]), text(&e["state"])),
                Some("checkpoint_completed") => format!("checkpoint #{} in {:.0} ms, {}", e["checkpoint_id"], e["duration_ms"].as_f64().unwrap_or(0.0), bytes(e["written_bytes"].as_f64().unwrap_or(0.0))),
                Some("checkpoint_failed") => format!("checkpoint #{} FAILED: {}", e["checkpoint_id"], text(&e["error"])),
                _ => e.to_string(),
            };
            let _ = writeln!(o, "{:>8}  {what}", e["time_ms"].as_i64().map_or("-".into(), |t| ago(s.now_ms, t)));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_a_worker() {
        let w = serde_json::json!({"mode": "worker", "worker": "w1", "group": "g", "topics": ["t"], "rebalances": 3, "owned": [{"topic": "t", "partition": 0}, {"topic": "t", "partition": 4}],
            "partitions": [{"topic": "t", "partition": 0, "resumed_from": 41, "fenced": false, "pipelines": [{"name": "heart_rate", "state": "running", "offset": 6600, "last_checkpoint_id": 65, "error": null}]}]});
        let s = render_worker(&w);
        assert!(s.contains("worker w1 in group g") && s.contains("rebalances seen: 3"), "{s}");
        assert!(s.contains("1 partition(s) assigned and starting"), "{s}");
        let row = s.lines().find(|l| l.starts_with("t-0")).unwrap();
        assert!(row.contains("heart_rate") && row.contains("6600") && row.contains("65") && row.ends_with("41"), "{row}");
    }

    #[test]
    fn renders_every_section() {
        let s = Snapshot {
            server: "http://h:1".into(),
            ready: json!({"ready": false, "reasons": ["pipeline \"p\" is still restoring its last checkpoint"]}),
            health: json!({"status": "degraded", "log": {"poisoned": "fsync failed"}, "disk": {"free_bytes": 5e9, "capacity_bytes": 1e11}, "checkpoints": {"failed": null}}),
            topics: vec![json!({"name": "t", "partitions": [{"log_start_offset": 10, "high_watermark": 110, "size_bytes": 2048, "segments": 1}]})],
            groups: vec![json!({"group": "g", "offsets": [{"lag": 7}, {"lag": 3}]})],
            more_groups: 2,
            pipelines: vec![json!({"name": "p", "state": "failed", "error": "boom", "records": 5, "lag_records": 0, "watermark": null,
                "last_checkpoint_id": 3, "last_checkpoint_at": "1970-01-01T00:00:10Z", "state_bytes": 1500, "alerts": 2})],
            events: vec![json!({"kind": "checkpoint_completed", "checkpoint_id": 3, "duration_ms": 4.2, "written_bytes": 1500, "time_ms": 10_000})],
            now_ms: 70_000,
        };
        let out = render(&s);
        for want in ["NOT READY (pipeline \"p\" is still restoring", "log POISONED: fsync failed", "5.0 GB free of 100.0 GB (5.0%)  LOW", " 100 ", "2.0 KB",
                     "offsets only", "      10", "… and 2 more groups", "#3, 60s ago", "pipeline failed: p: boom", "p fired 2 alerts", "checkpoint #3 in 4 ms, 1.5 KB"] {
            assert!(out.contains(want), "{want:?} missing from:\n{out}");
        }
    }
}

//! `sluice groups`: consumer groups and their committed offsets and lag on a running
//! server (a client of the `/v1/groups` API).

use clap::{Args, Subcommand};

use crate::topics::call;

#[derive(Args)]
pub struct GroupsArgs {
    /// Server base URL. A server with `[auth] enabled` needs an API token in the
    /// environment variable SLUICE_TOKEN (`sluice tokens create`).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    server: String,
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Subcommand)]
enum GroupsCommand {
    /// List groups with committed offsets or live (Kafka) members.
    List,
    /// Show a group's state and members (with their assigned partitions) and its
    /// committed offset, high watermark and lag per partition.
    Describe { group: String },
    /// Forget a group's committed offsets.
    Delete { group: String },
}

pub fn run(args: GroupsArgs) -> anyhow::Result<()> {
    let base = format!("{}/v1/groups", args.server.trim_end_matches('/'));
    match args.command {
        GroupsCommand::List => {
            for g in call("GET", &base, None)?["groups"].as_array().into_iter().flatten() {
                println!("{}", g.as_str().unwrap_or_default());
            }
        }
        GroupsCommand::Describe { group } => {
            let v = call("GET", &format!("{base}/{group}"), None)?;
            if let Some(state) = v["state"].as_str() {
                println!("group {group}: {state}, generation {}, protocol {} {}", v["generation"], v["protocol_type"].as_str().unwrap_or(""), v["protocol"].as_str().unwrap_or(""));
                for m in v["members"].as_array().into_iter().flatten() {
                    let parts: Vec<String> = m["assignment"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| format!("{}{}", a["topic"].as_str().unwrap_or(""), a["partitions"]))
                        .collect();
                    println!(
                        "  member {} (client {}, {}): {}",
                        m["member_id"].as_str().unwrap_or(""),
                        m["client_id"].as_str().unwrap_or(""),
                        m["client_host"].as_str().unwrap_or(""),
                        if parts.is_empty() { "no partitions".to_string() } else { parts.join(" ") }
                    );
                }
                println!();
            }
            println!("{:<24} {:<32} {:>9} {:>14} {:>16} {:>10}", "group", "topic", "partition", "committed", "high watermark", "lag");
            for o in v["offsets"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<32} {:>9} {:>14} {:>16} {:>10}",
                    group,
                    o["topic"].as_str().unwrap_or_default(),
                    o["partition"].to_string(),
                    o["offset"].to_string(),
                    o["high_watermark"].to_string(),
                    o["lag"].to_string()
                );
            }
        }
        GroupsCommand::Delete { group } => {
            call("DELETE", &format!("{base}/{group}"), None)?;
            println!("deleted the offsets of group {group}");
        }
    }
    Ok(())
}

//! `sluice groups`: consumer groups and their committed offsets and lag on a running
//! server (a client of the `/v1/groups` API).

use clap::{Args, Subcommand};

use crate::topics::call;

#[derive(Args)]
pub struct GroupsArgs {
    /// Server base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    server: String,
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Subcommand)]
enum GroupsCommand {
    /// List groups with committed offsets.
    List,
    /// Show a group's committed offset, high watermark and lag per partition.
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

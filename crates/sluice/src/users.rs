//! `sluice users` and `sluice tokens`: principals in the data directory's principals file.
//! They work whether or not a server is running; a running server picks the changes up.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use sluice_auth::store::{now_ms, Change};
use sluice_auth::{AuthStore, Role};

/// Which data directory a command works on: that of a config (principals file, lake).
#[derive(Args, Clone)]
pub struct Where {
    /// Config file (TOML) whose `data_dir` to use.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Data directory. Overrides `data_dir`.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

impl Where {
    /// The effective configuration (defaults, the file, `SLUICE_*`, `--data-dir`).
    pub(crate) fn config(&self) -> anyhow::Result<sluice_server::config::Config> {
        let mut overrides = Vec::new();
        if let Some(d) = &self.data_dir {
            overrides.push(("data_dir", toml::Value::String(d.display().to_string())));
        }
        Ok(sluice_server::config::load(self.config.as_deref(), std::env::vars(), &overrides)?)
    }

    fn store(&self) -> anyhow::Result<AuthStore> {
        Ok(AuthStore::new(&self.config()?.data_dir))
    }
}

#[derive(Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
    #[command(flatten)]
    at: Where,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user with a role (viewer, operator or admin).
    Add {
        name: String,
        #[arg(long)]
        role: Role,
        /// Read the password from standard input (one line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// No password: the user signs in with API tokens only.
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
    },
    /// List users and their roles.
    List,
    /// Set a user's password.
    Passwd {
        name: String,
        /// Read the password from standard input (one line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role.
    Role { name: String, role: Role },
    /// Remove a user and every token of theirs.
    Remove { name: String },
    /// Limit a user's role to certain topics, consumer groups and pipelines (Kafka-style
    /// ACLs), or show the
    /// limits. A pattern is a name, or a prefix ending in `*` (`team-a.*`). Each list given
    /// replaces that list; a list not given stays as it is.
    Acl {
        name: String,
        /// A topic (or topic prefix) the user may use. Repeat for more; `--topic ''`
        /// alone: no topic at all.
        #[arg(long = "topic", value_name = "PATTERN")]
        topics: Vec<String>,
        /// A pipeline (or prefix) the user may see and run. Repeat for more.
        #[arg(long = "pipeline", value_name = "PATTERN")]
        pipelines: Vec<String>,
        /// A consumer group (or prefix) the user may join, commit for, describe and delete
        /// (Kafka's GROUP resource). Repeat for more.
        #[arg(long = "group", value_name = "PATTERN")]
        groups: Vec<String>,
        /// Remove every limit: the role applies to every topic, group and pipeline again.
        #[arg(long, conflicts_with_all = ["topics", "pipelines", "groups"])]
        clear: bool,
    },
}

/// Patterns from the command line (`''` alone: an empty list, so nothing matches).
fn patterns(given: &[String]) -> anyhow::Result<Vec<sluice_auth::Pattern>> {
    given.iter().filter(|g| !g.is_empty()).map(|g| g.parse::<sluice_auth::Pattern>().map_err(|e| anyhow::anyhow!("{e}"))).collect()
}

fn limits_text(l: &sluice_auth::Limits) -> String {
    let list = |ps: &Option<Vec<sluice_auth::Pattern>>| match ps {
        None => "every one".to_string(),
        Some(ps) if ps.is_empty() => "none".to_string(),
        Some(ps) => ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
    };
    format!("topics: {}; groups: {}; pipelines: {}", list(&l.topics), list(&l.groups), list(&l.pipelines))
}

#[derive(Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    command: TokensCommand,
    #[command(flatten)]
    at: Where,
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Make an API token for a user; prints it once, alone on the last line.
    Create {
        #[arg(long)]
        user: String,
        /// The token stops working after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// What the token is for (shown by `list`).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (ids, users, expiry; never the tokens themselves).
    List,
    /// Revoke a token by its id.
    Revoke { id: String },
}

/// Reads a password: one line of standard input, or a prompt on a terminal (echoed: use
/// `--password-stdin` from a password manager to keep it off the screen).
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !from_stdin && stdin.is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).context("cannot read the password from standard input")?;
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(pw.len() >= 8, "the password must be at least 8 characters");
    Ok(pw)
}

fn ms_text(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis).map_or_else(|| "never".into(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// The CLI's principal in the audit trail: `local:<os user>`.
fn local(action: &str, target: &str) -> Change {
    let who = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    Change::new(action, target, &format!("local:{who}"), "cli")
}

pub fn run_users(args: UsersArgs) -> anyhow::Result<()> {
    let store = args.at.store()?;
    match args.command {
        UsersCommand::Add { name, role, password_stdin, no_password } => {
            let pw = if no_password { None } else { Some(read_password(password_stdin)?) };
            store.update(local("user_add", &name), |p| p.add_user(&name, role, pw.as_deref()))?;
            println!("added user {name} ({role})");
        }
        UsersCommand::List => {
            let p = store.current()?;
            println!("{:<24} {:<9} {:<9} {:<20} limits", "name", "role", "password", "created");
            for u in &p.users {
                let limits = if u.limits.is_unlimited() { "-".to_string() } else { limits_text(&u.limits) };
                println!("{:<24} {:<9} {:<9} {:<20} {limits}", u.name, u.role.name(), if u.password.is_some() { "yes" } else { "no" }, ms_text(Some(u.created_ms)));
            }
        }
        UsersCommand::Passwd { name, password_stdin } => {
            let pw = read_password(password_stdin)?;
            store.update(local("user_passwd", &name), |p| p.set_password(&name, &pw))?;
            println!("changed the password of {name}");
        }
        UsersCommand::Role { name, role } => {
            store.update(local("user_role", &name).with_detail(role.name()), |p| p.set_role(&name, role))?;
            println!("{name} is now {role}");
        }
        UsersCommand::Remove { name } => {
            store.update(local("user_remove", &name), |p| p.remove_user(&name))?;
            println!("removed user {name} and their tokens");
        }
        UsersCommand::Acl { name, topics, pipelines, groups, clear } => {
            let current = store.current()?;
            let user = current.user(&name).ok_or_else(|| anyhow::anyhow!("no user {name:?} (see `sluice users list`)"))?;
            if !clear && topics.is_empty() && pipelines.is_empty() && groups.is_empty() {
                println!("{name} ({}): {}", user.role, limits_text(&user.limits));
                return Ok(());
            }
            let mut limits = if clear { sluice_auth::Limits::default() } else { user.limits.clone() };
            if !topics.is_empty() {
                limits.topics = Some(patterns(&topics)?);
            }
            if !pipelines.is_empty() {
                limits.pipelines = Some(patterns(&pipelines)?);
            }
            if !groups.is_empty() {
                limits.groups = Some(patterns(&groups)?);
            }
            let detail = serde_json::to_string(&limits)?;
            let text = limits_text(&limits);
            store.update(local("user_acl", &name).with_detail(detail), |p| p.set_limits(&name, limits))?;
            println!("{name} is now limited to {text}");
        }
    }
    Ok(())
}

pub fn run_tokens(args: TokensArgs) -> anyhow::Result<()> {
    let store = args.at.store()?;
    match args.command {
        TokensCommand::Create { user, expires_in_days, description } => {
            let expires = expires_in_days.map(|d| now_ms().saturating_add(i64::from(d) * 86_400_000));
            let (token, id) = store.update(local("token_create", &user), |p| p.create_token(&user, expires, &description))?;
            eprintln!("token {id} for {user}, expires {}; it is shown only now:", ms_text(expires));
            println!("{token}");
        }
        TokensCommand::List => {
            let p = store.current()?;
            println!("{:<16} {:<24} {:<20} {:<20} description", "id", "user", "created", "expires");
            for t in &p.tokens {
                println!("{:<16} {:<24} {:<20} {:<20} {}", t.id, t.user, ms_text(Some(t.created_ms)), ms_text(t.expires_ms), t.description);
            }
        }
        TokensCommand::Revoke { id } => {
            store.update(local("token_revoke", &id), |p| p.revoke(&id))?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

//! The principals file: users and API tokens, in `<data_dir>/auth/principals.json`.
//!
//! ```json
//! {"version": 1,
//!  "users": [{"name": "ana", "role": "operator", "password": "$argon2id$v=19$…",
//!             "scram": [{"mechanism": "SCRAM-SHA-256", "iterations": 4096, "salt": "…", "stored_key": "…", "server_key": "…"}, …],
//!             "created_ms": 1764470000000}],
//!  "tokens": [{"id": "9f2c…", "user": "ana", "sha256": "5e88…", "created_ms": 1764470000000,
//!              "expires_ms": null, "description": "watch gateway"}]}
//! ```
//!
//! - The file holds no secret in plain text (see [`crate::secret`]) and is written with
//!   mode 0600.
//! - Every change is a read-modify-write under an exclusive lock on `auth/lock`, written to a
//!   temporary file, fsync'd and renamed into place. So the CLI and a running server can
//!   both change it, and a reader sees the old file or the new one, never a torn one.
//! - Each change is first appended to `auth/changes.log` (one JSON [`Change`] a line,
//!   fsync'd): what, to whom, by which principal, from where. The server forwards new
//!   lines to its audit topic, so changes made by the CLI are audited too.
//! - A running server re-reads the file when its size or modification time changes
//!   (checked at most every [`RELOAD_CHECK_MS`]), so changes made by the CLI apply without
//!   a restart.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::acl::Limits;
use crate::role::Role;
use crate::secret;
use crate::AuthError;

/// How often a reader checks whether the principals file changed, ms.
pub const RELOAD_CHECK_MS: u64 = 250;

/// A user: a name, a role, and an Argon2id password hash (none: token-only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// SCRAM credentials for the Kafka listener, made with the password.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scram: Vec<crate::sasl::ScramCredential>,
    pub created_ms: i64,
    /// The topics and pipelines the role applies to (default: every one).
    #[serde(default, skip_serializing_if = "Limits::is_unlimited")]
    pub limits: Limits,
}

/// An API token of a user, as stored: never the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    /// 16 hex characters, also the middle of the token (`sluice_<id>_<secret>`).
    pub id: String,
    pub user: String,
    /// SHA-256 of the token's secret, hex.
    pub sha256: String,
    pub created_ms: i64,
    /// After this instant (epoch ms) the token is refused; `None`: never expires.
    #[serde(default)]
    pub expires_ms: Option<i64>,
    #[serde(default)]
    pub description: String,
}

/// Who makes a change, and what it is, for the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// 1, 2, … in the order of the changes.
    pub seq: u64,
    pub time_ms: i64,
    /// `user_add`, `user_remove`, `user_passwd`, `user_role`, `user_acl`, `token_create`,
    /// `token_revoke`.
    pub action: String,
    /// The user or token id changed.
    pub target: String,
    /// Who changed it: a user name, or `local:<os user>` for the CLI.
    pub principal: String,
    /// Where from: a client address, or `cli` / `first start`.
    pub source: String,
    /// What it was changed to, where that is not a secret (a role, limits as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Change {
    /// A change to describe (its `seq` and time are set when it is recorded).
    pub fn new(action: &str, target: &str, principal: &str, source: &str) -> Change {
        Change { seq: 0, time_ms: 0, action: action.into(), target: target.into(), principal: principal.into(), source: source.into(), detail: None }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Change {
        self.detail = Some(detail.into());
        self
    }
}

/// Everything in the principals file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Principals {
    #[serde(default = "version")]
    pub version: u32,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub tokens: Vec<Token>,
}

fn version() -> u32 {
    1
}

/// Now, epoch ms.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Principals {
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Adds a user. Errors: a bad name, or the name is taken.
    pub fn add_user(&mut self, name: &str, role: Role, password: Option<&str>) -> Result<(), AuthError> {
        check_name(name)?;
        if self.user(name).is_some() {
            return Err(AuthError::Invalid(format!("user {name:?} already exists; change its password with `sluice users passwd {name}`")));
        }
        let scram = password.map(crate::sasl::scram_credentials).transpose()?.unwrap_or_default();
        let password = password.map(secret::hash_password).transpose()?;
        self.users.push(User { name: name.into(), role, password, scram, created_ms: now_ms(), limits: Limits::default() });
        Ok(())
    }

    /// Sets a user's password. Errors: no such user.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), AuthError> {
        let hash = secret::hash_password(password)?;
        let scram = crate::sasl::scram_credentials(password)?;
        let u = self.users.iter_mut().find(|u| u.name == name).ok_or_else(|| no_user(name))?;
        u.password = Some(hash);
        u.scram = scram;
        Ok(())
    }

    /// Sets a user's role. Errors: no such user.
    pub fn set_role(&mut self, name: &str, role: Role) -> Result<(), AuthError> {
        self.users.iter_mut().find(|u| u.name == name).ok_or_else(|| no_user(name))?.role = role;
        Ok(())
    }

    /// Limits a user to certain topics and pipelines (`Limits::default()`: none). Errors: no
    /// such user.
    pub fn set_limits(&mut self, name: &str, limits: Limits) -> Result<(), AuthError> {
        self.users.iter_mut().find(|u| u.name == name).ok_or_else(|| no_user(name))?.limits = limits;
        Ok(())
    }

    /// Removes a user and every token of theirs. Errors: no such user, or the last admin.
    pub fn remove_user(&mut self, name: &str) -> Result<(), AuthError> {
        let u = self.user(name).ok_or_else(|| no_user(name))?;
        if u.role == Role::Admin && self.users.iter().filter(|u| u.role == Role::Admin).count() == 1 {
            return Err(AuthError::Invalid(format!("{name:?} is the last admin; add another admin first")));
        }
        self.users.retain(|u| u.name != name);
        self.tokens.retain(|t| t.user != name);
        Ok(())
    }

    /// Makes a token for `user`; returns it (to show once) and its id. Errors: no such user.
    pub fn create_token(&mut self, user: &str, expires_ms: Option<i64>, description: &str) -> Result<(String, String), AuthError> {
        self.user(user).ok_or_else(|| no_user(user))?;
        let (token, id, sha256) = secret::new_token()?;
        self.tokens.push(Token { id: id.clone(), user: user.into(), sha256, created_ms: now_ms(), expires_ms, description: description.into() });
        Ok((token, id))
    }

    /// Revokes a token by id. Errors: no such token.
    pub fn revoke(&mut self, id: &str) -> Result<(), AuthError> {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.id != id);
        if self.tokens.len() == before {
            return Err(AuthError::Invalid(format!("no token with id {id:?}; list them with `sluice tokens list`")));
        }
        Ok(())
    }

    /// The user a presented token belongs to, if it is valid and unexpired at `now_ms`.
    pub fn by_token(&self, token: &str, now_ms: i64) -> Option<&User> {
        let (id, sha256) = secret::parse_token(token)?;
        let t = self.tokens.iter().find(|t| t.id == id && t.sha256 == sha256)?;
        if t.expires_ms.is_some_and(|e| e <= now_ms) {
            return None;
        }
        self.user(&t.user)
    }

    /// The user, if `password` is theirs. Slow on purpose (Argon2id): call it off the
    /// async workers.
    pub fn by_password(&self, name: &str, password: &str) -> Option<&User> {
        let u = self.user(name)?;
        secret::verify_password(password, u.password.as_deref()?).then_some(u)
    }
}

fn no_user(name: &str) -> AuthError {
    AuthError::Invalid(format!("no user {name:?}; list them with `sluice users list`"))
}

/// A user name: 1 to 64 characters of letters, digits, `.`, `_`, `-` and `@`.
fn check_name(name: &str) -> Result<(), AuthError> {
    let ok = (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!("user name {name:?} must be 1 to 64 letters, digits, '.', '_', '-' or '@'")))
    }
}

/// The principals file of a data directory, with a cached copy for readers.
pub struct AuthStore {
    dir: PathBuf,
    cache: Mutex<Cache>,
}

struct Cache {
    principals: Arc<Principals>,
    /// (length, modified) of the file when it was read; `None`: no file.
    seen: Option<(u64, SystemTime)>,
    checked: Option<Instant>,
}

impl AuthStore {
    /// The store of `data_dir` (the file need not exist yet: then there are no users).
    pub fn new(data_dir: &Path) -> AuthStore {
        AuthStore { dir: data_dir.join("auth"), cache: Mutex::new(Cache { principals: Arc::default(), seen: None, checked: None }) }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("principals.json")
    }

    /// The current principals, re-read when the file changed (checked at most every
    /// [`RELOAD_CHECK_MS`]). Errors: the file cannot be read or parsed (the previous copy
    /// stays in use until it can).
    pub fn current(&self) -> Result<Arc<Principals>, AuthError> {
        self.load(false)
    }

    /// The copy read last, without touching the file (for async code: keep it fresh with
    /// [`AuthStore::current`] on a blocking thread).
    pub fn cached(&self) -> Arc<Principals> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).principals.clone()
    }

    /// [`AuthStore::current`], checking the file now: for a credential the cached copy
    /// does not know, which may have been made a moment ago.
    pub fn fresh(&self) -> Result<Arc<Principals>, AuthError> {
        self.load(true)
    }

    fn load(&self, now: bool) -> Result<Arc<Principals>, AuthError> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if !now && c.checked.is_some_and(|t| t.elapsed() < Duration::from_millis(RELOAD_CHECK_MS)) {
            return Ok(c.principals.clone());
        }
        c.checked = Some(Instant::now());
        let path = self.path();
        let seen = match std::fs::metadata(&path) {
            Ok(m) => Some((m.len(), m.modified().map_err(|e| AuthError::Io { path: path.clone(), source: e })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(AuthError::Io { path, source: e }),
        };
        if seen != c.seen {
            c.principals = Arc::new(self.read()?);
            c.seen = seen;
        }
        Ok(c.principals.clone())
    }

    fn read(&self) -> Result<Principals, AuthError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| AuthError::Invalid(format!("{} is not a valid principals file: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Principals { version: 1, ..Principals::default() }),
            Err(e) => Err(AuthError::Io { path, source: e }),
        }
    }

    /// The change log's path (see the module docs).
    pub fn changes_path(&self) -> PathBuf {
        self.dir.join("changes.log")
    }

    /// The recorded changes with `seq` above `after`, in order. A line that does not parse
    /// (a torn last line after a crash) is skipped.
    pub fn changes_after(&self, after: u64) -> Result<Vec<Change>, AuthError> {
        let path = self.changes_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().filter_map(|l| serde_json::from_str::<Change>(l).ok()).filter(|c| c.seq > after).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(AuthError::Io { path, source: e }),
        }
    }

    /// Applies `change` to the file under an exclusive lock, and writes the result
    /// atomically (see the module docs), after recording `what` in the change log. The
    /// cache is refreshed.
    pub fn update<T>(&self, what: Change, change: impl FnOnce(&mut Principals) -> Result<T, AuthError>) -> Result<T, AuthError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuthError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let lock_path = self.dir.join("lock");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let mut p = self.read()?;
        let out = change(&mut p)?;
        // Write-ahead: the change is in the log before it takes effect.
        let seq = self.changes_after(0)?.last().map_or(0, |c| c.seq) + 1;
        let line = serde_json::to_string(&Change { seq, time_ms: now_ms(), ..what }).map_err(|e| AuthError::Invalid(e.to_string()))? + "\n";
        let log_path = self.changes_path();
        let mut log = OpenOptions::new().create(true).append(true).open(&log_path).map_err(io(&log_path))?;
        log.write_all(line.as_bytes()).and_then(|_| log.sync_all()).map_err(io(&log_path))?;
        let path = self.path();
        let tmp = self.dir.join("principals.json.tmp");
        let bytes = serde_json::to_vec_pretty(&p).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let mut f = create_private(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        drop(lock);
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.checked = None;
        c.seen = None;
        drop(c);
        self.current()?;
        Ok(out)
    }
}

/// Creates (truncating) a file only its owner can read.
fn create_private(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).truncate(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_tokens_persist_and_apply() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::new(dir.path());
        assert!(store.current().unwrap().users.is_empty());
        store.update(Change::new("test", "", "tester", "test"), |p| p.add_user("ana", Role::Admin, Some("pw-ana"))).unwrap();
        store.update(Change::new("test", "", "tester", "test"), |p| p.add_user("bo", Role::Viewer, None)).unwrap();
        let (token, id) = store.update(Change::new("test", "", "tester", "test"), |p| p.create_token("bo", None, "test")).unwrap();
        let (old, _) = store.update(Change::new("test", "", "tester", "test"), |p| p.create_token("bo", Some(1), "expired")).unwrap();

        // Another handle (as the server holds while the CLI writes) sees the changes.
        let other = AuthStore::new(dir.path());
        let p = other.current().unwrap();
        assert_eq!(p.by_token(&token, now_ms()).map(|u| u.name.as_str()), Some("bo"));
        assert!(p.by_token(&old, now_ms()).is_none(), "expired");
        assert_eq!(p.by_password("ana", "pw-ana").map(|u| u.role), Some(Role::Admin));
        assert!(p.by_password("ana", "nope").is_none());
        assert!(p.by_password("bo", "").is_none(), "a token-only user has no password");
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains("pw-ana") && !text.contains(&token[20..]), "no secret in plain text");
        #[cfg(unix)]
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(store.path()).unwrap().permissions()) & 0o777, 0o600);

        store.update(Change::new("test", "", "tester", "test"), |p| p.revoke(&id)).unwrap();
        std::thread::sleep(Duration::from_millis(RELOAD_CHECK_MS + 50));
        assert!(other.current().unwrap().by_token(&token, now_ms()).is_none(), "a revoked token is refused");
        assert!(store.update(Change::new("test", "", "tester", "test"), |p| p.remove_user("ana")).unwrap_err().to_string().contains("last admin"));
        assert!(store.update(Change::new("test", "", "tester", "test"), |p| p.add_user("bo", Role::Admin, None)).unwrap_err().to_string().contains("already exists"));
        assert!(store.update(Change::new("test", "", "tester", "test"), |p| p.add_user("a b", Role::Admin, None)).is_err());
        store.update(Change::new("user_remove", "bo", "ana", "127.0.0.1"), |p| p.remove_user("bo")).unwrap();
        assert!(store.current().unwrap().tokens.iter().all(|t| t.user != "bo"), "a removed user's tokens go too");
        // Every successful change is in the change log, in order; refused ones are not.
        let changes = store.changes_after(0).unwrap();
        assert_eq!(changes.iter().map(|c| c.seq).collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>());
        let last = changes.last().unwrap();
        assert_eq!((last.action.as_str(), last.target.as_str(), last.principal.as_str()), ("user_remove", "bo", "ana"));
        assert_eq!(store.changes_after(5).unwrap().len(), 1);
    }
}

//! The audit topic, `__audit`: an append-only record of who did what, from where.
//!
//! One JSON record per event, keyed by its action, kept forever (no retention), one
//! partition so the order is total:
//!
//! ```json
//! {"time_ms": 1764470000000, "action": "topic_delete", "principal": "ana", "source": "10.0.0.7:53122",
//!  "target": "readings", "status": 200}
//! ```
//!
//! - `action`: `login`, `login_failed`; `topic_delete`, `topic_alter`, `schema_set`,
//!   `group_delete`, `pipeline_delete`, `pipeline_drain` (HTTP, with the answer's
//!   `status`, refusals included); `user_add`, `user_remove`, `user_passwd`, `user_role`, `user_acl` (with the limits in
//!   `detail`),
//!   `token_create`, `token_revoke` (from the principals' change log, [`forward_changes`],
//!   whether made by the CLI or over HTTP).
//! - `principal`: the user, `anonymous` without authentication, `local:<os user>` for the
//!   CLI; `source`: the client's address, or `cli`.
//!
//! Clients cannot write the topic (it is internal, as `__consumer_offsets` is) nor delete
//! it. Each record is durable before the request that caused it is answered. Changes made
//! by the CLI reach the topic within a second while the server runs, or at its next start;
//! a crash between appending them and saving the forwarding position can repeat some (each
//! carries its change `seq`).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use sluice_auth::store::{now_ms, Change};
use sluice_auth::AuthStore;
use sluice_log::{Log, LogError, NewRecord, Retention, Topic};

use crate::auth::Principal;

/// The audit topic's name.
pub const AUDIT_TOPIC: &str = "__audit";

/// One audit record (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub time_ms: i64,
    pub action: String,
    pub principal: String,
    pub source: String,
    pub target: String,
    /// The HTTP status of the answer, when the event is a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The principals' change number, for changes forwarded from the change log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// What a principals' change set (a role, a user's limits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(action: &str, principal: &str, source: &str, target: &str) -> AuditEvent {
        AuditEvent { time_ms: now_ms(), action: action.into(), principal: principal.into(), source: source.into(), target: target.into(), status: None, seq: None, detail: None }
    }
}

/// Appends audit events to the audit topic.
pub struct Audit {
    topic: Arc<Topic>,
    /// Where [`forward_changes`] keeps the last change `seq` it forwarded.
    cursor: PathBuf,
}

impl Audit {
    /// Opens (creating) the audit topic of `log`; `data_dir` holds the forwarding position.
    pub fn open(log: &Log, data_dir: &std::path::Path) -> Result<Audit, LogError> {
        let topic = match log.topic(AUDIT_TOPIC) {
            Some(t) => t,
            None => match log.create_topic_with(AUDIT_TOPIC, 1, Retention { ms: -1, bytes: -1 }) {
                Err(LogError::TopicExists { .. }) => log.topic(AUDIT_TOPIC).ok_or_else(|| LogError::UnknownTopic(AUDIT_TOPIC.into()))?,
                other => other?,
            },
        };
        Ok(Audit { topic, cursor: data_dir.join("auth").join("changes.forwarded") })
    }

    /// Appends events, durably (blocking: call it off the async workers).
    pub fn append(&self, events: &[AuditEvent]) -> Result<(), LogError> {
        let records: Vec<NewRecord> = events
            .iter()
            .map(|e| NewRecord::new(Some(e.action.clone().into_bytes()), serde_json::to_vec(e).unwrap_or_default()))
            .collect();
        self.topic.partition(0)?.append(&records, now_ms()).map(|_| ())
    }

    /// Appends one event and waits until it is durable; a failure is logged (the action
    /// it records has already happened).
    pub async fn record(self: &Arc<Self>, event: AuditEvent) {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.append(std::slice::from_ref(&event)).map_err(|e| (e, event))).await {
            Ok(Ok(())) => {}
            Ok(Err((e, event))) => tracing::error!(error = %e, ?event, "cannot append to the audit topic"),
            Err(e) => tracing::error!(error = %e, "the audit task failed"),
        }
    }

    /// Forwards the principals' changes recorded since the last call into the topic;
    /// returns how many (blocking).
    pub fn forward_changes(&self, store: &AuthStore) -> Result<usize, String> {
        let after = std::fs::read_to_string(&self.cursor).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
        let changes = store.changes_after(after).map_err(|e| e.to_string())?;
        let Some(last) = changes.last().map(|c| c.seq) else { return Ok(0) };
        let events: Vec<AuditEvent> = changes.into_iter().map(change_event).collect();
        self.append(&events).map_err(|e| e.to_string())?;
        let tmp = self.cursor.with_extension("tmp");
        std::fs::write(&tmp, last.to_string())
            .and_then(|_| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
            .and_then(|_| std::fs::rename(&tmp, &self.cursor))
            .map_err(|e| format!("cannot save {}: {e}", self.cursor.display()))?;
        Ok(events.len())
    }
}

fn change_event(c: Change) -> AuditEvent {
    AuditEvent { time_ms: c.time_ms, action: c.action, principal: c.principal, source: c.source, target: c.target, status: None, seq: Some(c.seq), detail: c.detail }
}

/// Forwards principals' changes every second (see [`Audit::forward_changes`]).
pub fn spawn_forwarder(audit: Arc<Audit>, store: Arc<AuthStore>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let (a, s) = (audit.clone(), store.clone());
            match tokio::task::spawn_blocking(move || a.forward_changes(&s)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot forward user and token changes to the audit topic; retrying"),
                Err(e) => tracing::warn!(error = %e, "the audit forwarder failed"),
            }
        }
    })
}

/// The audited action of an HTTP request, and its target: `None` for requests that are
/// not audited.
pub fn audited_action(method: &str, path: &str) -> Option<(&'static str, String)> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let action = match (method, segs.as_slice()) {
        ("DELETE", ["v1", "topics", t]) => ("topic_delete", *t),
        ("PATCH", ["v1", "topics", t]) => ("topic_alter", *t),
        ("PUT", ["v1", "topics", t, "schema"]) => ("schema_set", *t),
        ("DELETE", ["v1", "groups", g]) => ("group_delete", *g),
        ("DELETE", ["v1", "pipelines", p]) => ("pipeline_delete", *p),
        ("POST", ["v1", "pipelines", p, "drain"]) | ("POST", ["v1", "jobs", p, "drain"]) => ("pipeline_drain", *p),
        _ => return None,
    };
    Some((action.0, action.1.to_string()))
}

/// The middleware: records audited requests (see [`audited_action`]) with the answer's
/// status, before the answer is sent.
pub async fn middleware(State(audit): State<Arc<Audit>>, req: Request, next: Next) -> Response {
    let Some((action, target)) = audited_action(req.method().as_str(), req.uri().path()) else { return next.run(req).await };
    let principal = req.extensions().get::<Principal>().map_or_else(|| "anonymous".to_string(), |p| p.user.clone());
    let source = crate::auth::source_of(req.extensions());
    let response = next.run(req).await;
    let mut event = AuditEvent::new(action, &principal, &source, &target);
    event.status = Some(response.status().as_u16());
    audit.record(event).await;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_drains_and_changes_are_audited() {
        assert_eq!(audited_action("DELETE", "/v1/topics/t"), Some(("topic_delete", "t".into())));
        assert_eq!(audited_action("POST", "/v1/pipelines/hr/drain"), Some(("pipeline_drain", "hr".into())));
        assert_eq!(audited_action("POST", "/v1/jobs/heart_rate/drain"), Some(("pipeline_drain", "heart_rate".into())));
        assert_eq!(audited_action("DELETE", "/v1/pipelines/hr"), Some(("pipeline_delete", "hr".into())));
        assert_eq!(audited_action("DELETE", "/v1/groups/g"), Some(("group_delete", "g".into())));
        assert_eq!(audited_action("GET", "/v1/topics/t"), None);
        assert_eq!(audited_action("POST", "/v1/topics/t/records"), None, "ingest is not audited");
    }

    #[test]
    fn changes_are_forwarded_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(&dir.path().join("log"), sluice_log::LogConfig::default()).unwrap();
        let audit = Audit::open(&log, dir.path()).unwrap();
        let store = AuthStore::new(dir.path());
        store.update(Change::new("user_add", "ana", "local:me", "cli"), |p| p.add_user("ana", sluice_auth::Role::Admin, None)).unwrap();
        store.update(Change::new("user_role", "ana", "local:me", "cli"), |p| p.set_role("ana", sluice_auth::Role::Viewer)).unwrap();
        assert_eq!(audit.forward_changes(&store).unwrap(), 2);
        assert_eq!(audit.forward_changes(&store).unwrap(), 0, "forwarded once");
        store.update(Change::new("user_remove", "ana", "local:me", "cli"), |p| p.remove_user("ana")).unwrap();
        // A new handle (a restart) continues from the saved position.
        let again = Audit::open(&log, dir.path()).unwrap();
        assert_eq!(again.forward_changes(&store).unwrap(), 1);
        assert_eq!(log.topic(AUDIT_TOPIC).unwrap().partition(0).unwrap().high_watermark(), 3);
    }
}

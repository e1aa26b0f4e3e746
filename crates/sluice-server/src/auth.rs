//! Authentication and authorization of HTTP requests (`[auth] enabled = true`).
//!
//! Every request but the public ones ([`sluice_auth::Access::Public`]: the dashboard's
//! page and assets, `/login`, `POST /v1/login`, `/healthz`) presents either
//! - an API token, `Authorization: Bearer sluice_<id>_<secret>` (`sluice tokens create`), or
//! - a login session cookie, `sluice_session`, set by `POST /v1/login` (the dashboard's
//!   login page). The cookie is `HttpOnly`, `SameSite=Strict`, and `Secure` under TLS. A state-changing
//!   request (any method but GET and HEAD) with the cookie must also send the session's
//!   CSRF token in `X-CSRF-Token` (OWASP's synchronizer-token pattern); `POST /v1/login`
//!   returns it. The guard's Origin check ([`crate::guard`]) applies as well.
//!
//! The route's permission comes from [`sluice_auth::http_access`]; the principal's role must
//! have it ([`sluice_auth::Role::allows`]). Refusals are JSON:
//! - 401 `unauthenticated` (no or an unknown credential), with `WWW-Authenticate: Bearer`;
//! - 403 `forbidden` (the role lacks the permission) or `csrf_failed`.
//!
//! Each names the permission the route needs, in `error.permission`.
//!
//! Users and tokens live in the data directory ([`sluice_auth::AuthStore`]); changes by the
//! CLI or the admin routes (`/v1/users`, `/v1/tokens`) apply without a restart. Login
//! sessions are held in memory: a restart logs everyone out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sluice_auth::store::{now_ms, Change};
use sluice_auth::{http_access, http_resource, Access, AuthStore, Limits, Permission, Role};
use sluice_core::telemetry as t;

/// The login cookie's name.
pub const SESSION_COOKIE: &str = "sluice_session";
/// Most login sessions held at once (expired ones are dropped first).
pub const MAX_SESSIONS: usize = 10_000;

/// Who made a request, as the routes see it (a request extension).
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    /// The topics and pipelines the role applies to.
    pub limits: Limits,
}

impl Principal {
    fn of(u: &sluice_auth::User) -> Principal {
        Principal { user: u.name.clone(), role: u.role, limits: u.limits.clone() }
    }
}

impl sluice_gateway::http::TopicAccess for Principal {
    fn allows(&self, topic: &str) -> bool {
        self.limits.topic(topic)
    }
    fn refusal(&self, topic: &str) -> String {
        self.limits.refusal(&self.user, sluice_auth::Resource::Topic(topic))
    }
    fn allows_group(&self, group: &str) -> bool {
        self.limits.group(group)
    }
}

/// The limits of the request's principal; none when authentication is off.
pub fn limits_of(p: &Option<Extension<Principal>>) -> Limits {
    p.as_ref().map(|Extension(p)| p.limits.clone()).unwrap_or_default()
}

struct LoginSession {
    user: String,
    csrf: String,
    expires_ms: i64,
}

/// The HTTP listener's authentication state.
pub struct Auth {
    pub store: Arc<AuthStore>,
    /// Login sessions by the SHA-256 of their cookie secret.
    sessions: Mutex<HashMap<String, LoginSession>>,
    ttl_ms: i64,
    /// Bounds the Argon2id password checks running at once.
    logins: tokio::sync::Semaphore,
    audit: Arc<crate::audit::Audit>,
    /// Mark the login cookie `Secure` (the listener serves HTTPS).
    secure_cookie: bool,
    /// Failed logins by address (shared with the Kafka listener's SASL).
    pub throttle: Arc<sluice_auth::throttle::LoginThrottle>,
}

impl Auth {
    pub fn new(store: Arc<AuthStore>, audit: Arc<crate::audit::Audit>, ttl_ms: u64, max_concurrent_logins: usize, secure_cookie: bool, throttle: Arc<sluice_auth::throttle::LoginThrottle>) -> Auth {
        let logins = tokio::sync::Semaphore::new(max_concurrent_logins.max(1));
        Auth { store, sessions: Mutex::new(HashMap::new()), ttl_ms: ttl_ms.min(i64::MAX as u64) as i64, logins, audit, secure_cookie, throttle }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, LoginSession>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The principal of a request's credentials: `Ok(None)` without any, `Err` for an
    /// invalid one (the reason). With a session cookie, also its CSRF token. Reads the
    /// in-memory copy of the principals ([`spawn_refresher`] keeps it fresh); only a token
    /// it does not know is looked up in the file, on a blocking thread.
    /// The request's principal: from its bearer token, else its login cookie (with the
    /// session's CSRF token), else its connection's client certificate (mutual TLS; the
    /// user the certificate's CN names). `Ok(None)`: no credential at all.
    async fn identify(self: &Arc<Self>, headers: &HeaderMap, client: Option<&crate::tls::ClientCert>) -> Result<Option<(Principal, Option<String>)>, String> {
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            // The scheme name is case-insensitive (RFC 9110, section 11.1).
            let token = v.to_str().ok().and_then(|v| v.split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim());
            let token = token.ok_or("the Authorization header must be `Bearer <token>`")?.to_string();
            let find = |p: &sluice_auth::Principals, token: &str| p.by_token(token, now_ms()).map(Principal::of);
            let found = match find(&self.store.cached(), &token) {
                Some(p) => Some(p),
                // A token the cached copy does not know may have been made a moment ago.
                None => {
                    let me = self.clone();
                    let fresh = tokio::task::spawn_blocking(move || me.store.fresh().map(|p| find(&p, &token))).await;
                    fresh.map_err(|e| e.to_string())?.map_err(|e| format!("cannot read the principals file: {e}"))?
                }
            };
            return found.map(|p| Some((p, None))).ok_or_else(|| "the token is unknown, revoked or expired".into());
        }
        let Some(secret) = cookie(headers, SESSION_COOKIE) else {
            let Some(crate::tls::ClientCert(cert)) = client else { return Ok(None) };
            let cert = cert.as_ref().as_ref()?;
            let found = match self.store.cached().user(&cert.user).map(Principal::of) {
                Some(p) => Some(p),
                // A user the cached copy does not know may have been added a moment ago.
                None => {
                    let (me, user) = (self.clone(), cert.user.clone());
                    let fresh = tokio::task::spawn_blocking(move || me.store.fresh().map(|p| p.user(&user).map(Principal::of))).await;
                    fresh.map_err(|e| e.to_string())?.map_err(|e| format!("cannot read the principals file: {e}"))?
                }
            };
            let p = found.ok_or_else(|| {
                format!("the client certificate {:?} names user {:?}, who does not exist (add it: `sluice users add {} --role ROLE --no-password`)", cert.subject, cert.user, cert.user)
            })?;
            return Ok(Some((p, None)));
        };
        let key = sluice_auth::secret::sha256_hex(secret);
        let (user, csrf) = {
            let sessions = self.sessions();
            match sessions.get(&key) {
                Some(s) if s.expires_ms > now_ms() => (s.user.clone(), s.csrf.clone()),
                _ => return Err("the login session has expired; log in again".into()),
            }
        };
        // The role is read per request, so a changed role or a removed user applies at once.
        let principals = self.store.cached();
        let u = principals.user(&user).ok_or("the logged-in user no longer exists")?;
        Ok(Some((Principal::of(u), Some(csrf))))
    }

    /// Starts a login session; returns (cookie secret, CSRF token).
    fn start_session(&self, user: &str) -> Result<(String, String), sluice_auth::AuthError> {
        let secret = sluice_auth::secret::random_hex(32)?;
        let csrf = sluice_auth::secret::random_hex(16)?;
        let now = now_ms();
        let mut sessions = self.sessions();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.expires_ms > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            // Still full of live sessions: drop the one closest to expiring.
            if let Some(k) = sessions.iter().min_by_key(|(_, s)| s.expires_ms).map(|(k, _)| k.clone()) {
                sessions.remove(&k);
            }
        }
        sessions.insert(sluice_auth::secret::sha256_hex(&secret), LoginSession { user: user.into(), csrf: csrf.clone(), expires_ms: now.saturating_add(self.ttl_ms) });
        Ok((secret, csrf))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

fn refuse(status: StatusCode, code: &'static str, message: String, permission: Option<Permission>) -> Response {
    metrics::counter!(t::HTTP_REFUSED_REQUESTS_TOTAL, "reason" => code).increment(1);
    let mut r = (status, Json(json!({"error": {"code": code, "message": message, "permission": permission.map(Permission::name)}}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sluice\""));
    }
    r
}

/// The middleware: identifies the principal and checks the route's permission. A refused
/// request of an audited action ([`crate::audit::audited_action`]) is audited here, with
/// the refusal's status; allowed ones are audited by [`crate::audit::middleware`].
pub async fn authorize(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let audited = crate::audit::audited_action(req.method().as_str(), req.uri().path());
    let source = source_of(req.extensions());
    let (response, principal) = check(&auth, req, next).await;
    if let (Some((action, target)), Some(who)) = (audited, principal) {
        let mut event = crate::audit::AuditEvent::new(action, &who, &source, &target);
        event.status = Some(response.status().as_u16());
        auth.audit.record(event).await;
    }
    response
}

/// [`authorize`]'s check: the answer, and for a refusal, the principal to audit (the user,
/// or `anonymous`).
async fn check(auth: &Arc<Auth>, mut req: Request, next: Next) -> (Response, Option<String>) {
    let access = http_access(req.method().as_str(), req.uri().path());
    let what = format!("{} {}", req.method(), req.uri().path());
    let identified = auth.identify(req.headers(), req.extensions().get::<crate::tls::ClientCert>()).await;
    let needed = match access {
        Access::Public => None,
        Access::Needs(p) => Some(p),
    };
    let anonymous = Some("anonymous".to_string());
    let (principal, csrf) = match (identified, needed) {
        (Ok(Some(p)), _) => p,
        (_, None) => return (next.run(req).await, None),
        (Err(reason), Some(p)) => return (refuse(StatusCode::UNAUTHORIZED, "unauthenticated", format!("{what} needs permission {p:?}: {reason}", p = p.name()), Some(p)), anonymous),
        (Ok(None), Some(p)) => {
            let message = format!(
                "{what} needs permission {:?} (role {} or above): send `Authorization: Bearer <token>` (make one with `sluice tokens create --user NAME`) or log in at /login",
                p.name(),
                p.least_role()
            );
            return (refuse(StatusCode::UNAUTHORIZED, "unauthenticated", message, Some(p)), anonymous);
        }
    };
    if let Some(p) = needed {
        if !principal.role.allows(p) {
            let message = format!("user {:?} has role {}; {what} needs permission {:?}, which role {} and above have", principal.user, principal.role, p.name(), p.least_role());
            return (refuse(StatusCode::FORBIDDEN, "forbidden", message, Some(p)), Some(principal.user));
        }
        if let Some(r) = http_resource(req.uri().path()).filter(|r| !principal.limits.allows(*r)) {
            return (refuse(StatusCode::FORBIDDEN, "forbidden", format!("{what}: {}", principal.limits.refusal(&principal.user, r)), Some(p)), Some(principal.user));
        }
        let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if let (true, Some(csrf)) = (unsafe_method, csrf) {
            let sent = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok());
            if sent != Some(csrf.as_str()) {
                let message = format!("{what} with a login cookie must send the session's X-CSRF-Token header (POST /v1/login returns it)");
                return (refuse(StatusCode::FORBIDDEN, "csrf_failed", message, Some(p)), Some(principal.user));
            }
        }
    }
    if principal.limits.topics.is_some() || principal.limits.groups.is_some() {
        req.extensions_mut().insert(sluice_gateway::http::TopicScope(Arc::new(principal.clone())));
    }
    req.extensions_mut().insert(principal);
    (next.run(req).await, None)
}

/// With authentication off: `GET /v1/whoami` answers `{"user": null, "role": "admin",
/// "permissions": [every one], "auth": false}`, so the dashboard shows every action.
pub fn open_router() -> Router {
    Router::new().route(
        "/v1/whoami",
        get(|| async { Json(json!({"user": null, "role": "admin", "permissions": ["read", "produce", "consume", "operate", "manage", "admin"], "auth": false})) }),
    )
}

/// The login page, the login calls and the admin routes for users and tokens.
pub fn router(auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/login", get(|| async { Html(include_str!("../assets/login.html")) }))
        .route("/v1/login", post(login))
        .route("/v1/logout", post(logout))
        .route("/v1/whoami", get(whoami))
        .route("/v1/users", get(list_users).post(add_user))
        .route("/v1/users/{name}", delete(remove_user))
        .route("/v1/users/{name}/acl", put(set_acl))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .with_state(auth)
}

#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

async fn login(State(auth): State<Arc<Auth>>, from: Source, Json(b): Json<LoginBody>) -> Response {
    let ip = from.1;
    if let Some(Err(wait_ms)) = ip.map(|ip| auth.throttle.check(ip, now_ms())) {
        metrics::counter!(t::AUTH_LOGINS_TOTAL, "result" => "locked_out").increment(1);
        let secs = (wait_ms + 999) / 1000;
        let mut r = refuse(StatusCode::TOO_MANY_REQUESTS, "too_many_failed_logins", format!("too many failed logins from {}; retry in {secs} s", from.0), None);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let Ok(_permit) = auth.logins.acquire().await else { return internal("the server is stopping".into()) };
    let user = b.user.clone();
    let a = auth.clone();
    let checked = tokio::task::spawn_blocking(move || a.store.fresh().map(|p| p.by_password(&b.user, &b.password).map(|u| (u.name.clone(), u.role)))).await;
    let checked = match checked {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return internal(format!("cannot read the principals file: {e}")),
        Err(e) => return internal(e.to_string()),
    };
    if let Some(ip) = ip {
        auth.throttle.record(ip, checked.is_some(), now_ms());
    }
    let Some((name, role)) = checked else {
        metrics::counter!(t::AUTH_LOGINS_TOTAL, "result" => "failed").increment(1);
        tracing::warn!(user = %user, source = %from.0, "failed login");
        auth.audit.record(crate::audit::AuditEvent::new("login_failed", &user, &from.0, &user)).await;
        return refuse(StatusCode::UNAUTHORIZED, "login_failed", "wrong user name or password".into(), None);
    };
    let (secret, csrf) = match auth.start_session(&name) {
        Ok(s) => s,
        Err(e) => return internal(e.to_string()),
    };
    metrics::counter!(t::AUTH_LOGINS_TOTAL, "result" => "ok").increment(1);
    tracing::info!(user = %name, source = %from.0, "login");
    auth.audit.record(crate::audit::AuditEvent::new("login", &name, &from.0, &name)).await;
    let max_age = auth.ttl_ms / 1000;
    let secure = if auth.secure_cookie { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    let mut r = Json(json!({"user": name, "role": role, "csrf": csrf, "expires_ms": now_ms().saturating_add(auth.ttl_ms)})).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
        auth.sessions().remove(&sluice_auth::secret::sha256_hex(secret));
    }
    let mut r = Json(json!({"logged_out": true})).into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("sluice_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"));
    r
}

async fn whoami(Extension(p): Extension<Principal>) -> Response {
    let permissions: Vec<&str> =
        [Permission::Read, Permission::Produce, Permission::Consume, Permission::Operate, Permission::Manage, Permission::Admin].into_iter().filter(|x| p.role.allows(*x)).map(Permission::name).collect();
    Json(json!({"user": p.user, "role": p.role, "permissions": permissions, "limits": p.limits, "auth": true})).into_response()
}

/// The client's address as text (`ip:port`, or `unknown`), and its IP when known (for the
/// failed-login throttle).
pub struct Source(pub String, pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Source, Self::Rejection> {
        let ip = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        Ok(Source(source_of(&parts.extensions), ip))
    }
}

/// The client's address from a request's extensions, or `unknown`.
pub fn source_of(ext: &axum::http::Extensions) -> String {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map_or_else(|| "unknown".into(), |c| c.0.to_string())
}

fn internal(message: String) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": {"code": "internal", "message": message}}))).into_response()
}

fn invalid(e: sluice_auth::AuthError) -> Response {
    match e {
        sluice_auth::AuthError::Invalid(m) => (StatusCode::BAD_REQUEST, Json(json!({"error": {"code": "invalid", "message": m}}))).into_response(),
        e => internal(e.to_string()),
    }
}

/// Runs a change of the principals file off the async workers (it fsyncs, and hashing a
/// password takes tens of ms).
async fn change<T: Send + 'static>(
    auth: &Arc<Auth>,
    what: Change,
    f: impl FnOnce(&mut sluice_auth::Principals) -> Result<T, sluice_auth::AuthError> + Send + 'static,
) -> Result<T, Response> {
    let a = auth.clone();
    match tokio::task::spawn_blocking(move || a.store.update(what, f)).await {
        Ok(r) => r.map_err(invalid),
        Err(e) => Err(internal(e.to_string())),
    }
}

async fn list_users(State(auth): State<Arc<Auth>>) -> Response {
    let p = auth.store.cached();
    Json(json!({"users": p.users.iter().map(|u| json!({"name": u.name, "role": u.role, "password": u.password.is_some(), "created_ms": u.created_ms, "limits": u.limits})).collect::<Vec<_>>()})).into_response()
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    role: Role,
    #[serde(default)]
    password: Option<String>,
}

async fn add_user(State(auth): State<Arc<Auth>>, Extension(by): Extension<Principal>, from: Source, Json(b): Json<NewUser>) -> Response {
    let (name, role) = (b.name.clone(), b.role);
    match change(&auth, Change::new("user_add", &name, &by.user, &from.0), move |p| p.add_user(&b.name, b.role, b.password.as_deref())).await {
        Ok(()) => {
            tracing::info!(user = %name, %role, by = %by.user, "user added");
            (StatusCode::CREATED, Json(json!({"name": name, "role": role}))).into_response()
        }
        Err(r) => r,
    }
}

async fn remove_user(State(auth): State<Arc<Auth>>, Extension(by): Extension<Principal>, from: Source, Path(name): Path<String>) -> Response {
    let n = name.clone();
    match change(&auth, Change::new("user_remove", &name, &by.user, &from.0), move |p| p.remove_user(&n)).await {
        Ok(()) => {
            tracing::info!(user = %name, by = %by.user, "user removed");
            Json(json!({"removed": name})).into_response()
        }
        Err(r) => r,
    }
}

/// Sets the topics and pipelines a user is limited to (`{"topics": [...], "pipelines":
/// [...]}`; a missing or null list: every one).
async fn set_acl(State(auth): State<Arc<Auth>>, Extension(by): Extension<Principal>, from: Source, Path(name): Path<String>, body: Result<Json<Limits>, axum::extract::rejection::JsonRejection>) -> Response {
    let limits = match body {
        Ok(Json(l)) => l,
        Err(e) => return invalid(sluice_auth::AuthError::Invalid(e.body_text())),
    };
    let detail = serde_json::to_string(&limits).unwrap_or_default();
    let (n, l) = (name.clone(), limits.clone());
    match change(&auth, Change::new("user_acl", &name, &by.user, &from.0).with_detail(detail), move |p| p.set_limits(&n, l)).await {
        Ok(()) => {
            tracing::info!(user = %name, by = %by.user, ?limits, "user limits changed");
            Json(json!({"user": name, "limits": limits})).into_response()
        }
        Err(r) => r,
    }
}

async fn list_tokens(State(auth): State<Arc<Auth>>) -> Response {
    let p = auth.store.cached();
    Json(json!({"tokens": p.tokens.iter().map(|t| json!({"id": t.id, "user": t.user, "created_ms": t.created_ms, "expires_ms": t.expires_ms, "description": t.description})).collect::<Vec<_>>()})).into_response()
}

#[derive(Deserialize)]
struct NewToken {
    user: String,
    /// The token stops working this long after now, ms (none: never).
    #[serde(default)]
    expires_in_ms: Option<i64>,
    #[serde(default)]
    description: String,
}

async fn create_token(State(auth): State<Arc<Auth>>, Extension(by): Extension<Principal>, from: Source, Json(b): Json<NewToken>) -> Response {
    let expires_ms = b.expires_in_ms.map(|d| now_ms().saturating_add(d.max(0)));
    let user = b.user.clone();
    match change(&auth, Change::new("token_create", &user, &by.user, &from.0), move |p| p.create_token(&b.user, expires_ms, &b.description)).await {
        Ok((token, id)) => {
            tracing::info!(token_id = %id, user = %user, by = %by.user, "token created");
            (StatusCode::CREATED, Json(json!({"id": id, "user": user, "token": token, "expires_ms": expires_ms}))).into_response()
        }
        Err(r) => r,
    }
}

async fn revoke_token(State(auth): State<Arc<Auth>>, Extension(by): Extension<Principal>, from: Source, Path(id): Path<String>) -> Response {
    let i = id.clone();
    match change(&auth, Change::new("token_revoke", &id, &by.user, &from.0), move |p| p.revoke(&i)).await {
        Ok(()) => {
            tracing::info!(token_id = %id, by = %by.user, "token revoked");
            Json(json!({"revoked": id})).into_response()
        }
        Err(r) => r,
    }
}

/// Re-reads the principals file when it changed, every [`sluice_auth::store::RELOAD_CHECK_MS`],
/// on a blocking thread, so that requests only read the in-memory copy.
pub fn spawn_refresher(auth: Arc<Auth>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(sluice_auth::store::RELOAD_CHECK_MS));
        loop {
            tick.tick().await;
            let a = auth.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || a.store.current().map(|_| ())).await {
                tracing::warn!(error = %e, "cannot read the principals file; the last good copy stays in use");
            }
        }
    })
}

/// On first start with authentication on and no users: creates the user `admin` with a
/// random password, and returns the password (to print once). `None` when users exist.
pub fn ensure_first_admin(store: &AuthStore) -> Result<Option<String>, sluice_auth::AuthError> {
    if !store.current()?.users.is_empty() {
        return Ok(None);
    }
    let password = sluice_auth::secret::random_password()?;
    let pw = password.clone();
    let created = store.update(Change::new("user_add", "admin", "sluice", "first start"), move |p| {
        if !p.users.is_empty() {
            return Ok(false);
        }
        p.add_user("admin", Role::Admin, Some(&pw)).map(|_| true)
    })?;
    Ok(created.then_some(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; sluice_session=abc ; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}

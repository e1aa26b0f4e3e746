//! Checks every HTTP request passes before any route sees it, so that a web page in
//! someone's browser cannot drive the API (OWASP's CSRF and DNS-rebinding guidance), and
//! a slow body cannot hold a connection forever.
//!
//! In order:
//! 1. **Host** (DNS rebinding): the `Host` header, port aside, must be an IP address,
//!    `localhost`, or a name in `http.allowed_hosts`. A rebinding page reaches sluice under
//!    its own DNS name, which is none of these. Else 421 `host_not_allowed`.
//! 2. **Origin** (cross-site requests): a state-changing request (any method but GET, HEAD
//!    and OPTIONS, and WebSocket upgrades) that carries an `Origin` must come from the
//!    API's own origin (the Origin's host and port equal the `Host` header) or one in
//!    `http.allowed_origins`; `Origin: null` is refused. Without an `Origin`, a browser's
//!    `Sec-Fetch-Site: cross-site` or `same-site` is refused. Clients that are not
//!    browsers (curl, Kafka tools, devices) send neither. Else 403 `cross_origin`.
//! 3. **Content type**: a POST, PUT or PATCH with a body must declare
//!    `application/json`, `application/x-ndjson` or `application/jsonl` (parameters such
//!    as `charset` aside). This refuses what an HTML form can send without CORS
//!    (`text/plain`, form encodings). Else 415 `unsupported_media_type`.
//! 4. **Body limits**: a body must arrive whole within `http.request_body_timeout_ms`
//!    of the header (else 408 `request_timeout`) and within `http.max_body_bytes` (else
//!    413 `payload_too_large`). Bodies held at once across all connections stay within
//!    `http.max_inflight_body_bytes`: each chunk takes its bytes from one semaphore before
//!    it is kept, and gives them back when the route has answered; at the bound, reading
//!    waits (backpressure).
//!
//! 5. **Ingest quota**: `POST /v1/topics/{topic}/records` and WebSocket ingest upgrades
//!    count against `http.ingest_requests_per_second` per source address (a token bucket,
//!    [`sluice_core::quota::RateQuota`]); over it, 429 `rate_limited` with `Retry-After`.
//!    Off (0) by default: devices behind one NAT share an address.
//!
//! [`sse_slots`] caps open Server-Sent Events streams (`http.max_sse_subscribers`).
//!
//! Errors are `{"error": {"code", "message"}}`; the message says which setting to change.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::json;
use sluice_core::telemetry as t;

/// What the guard allows (from the `[http]` config table).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Host names allowed besides IP addresses and `localhost`, lower case.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) allowed besides the API's own, lower case.
    pub allowed_origins: Vec<String>,
    /// ms; 0: none.
    pub request_body_timeout_ms: u64,
    pub max_body_bytes: usize,
    /// Bytes of request bodies that may still be held (`http.max_inflight_body_bytes`).
    pub body_memory: Arc<tokio::sync::Semaphore>,
    /// The part of it bodies over [`LARGE_BODY_BYTES`] may take: all but
    /// [`SMALL_BODY_RESERVE_BYTES`], so stalled large bodies cannot starve small requests.
    pub large_body_memory: Arc<tokio::sync::Semaphore>,
    /// Ingest requests per second per source address (`http.ingest_requests_per_second`).
    pub ingest_quota: Arc<sluice_core::quota::RateQuota>,
}

impl Policy {
    /// `max_inflight_body_bytes`, raised so that one largest body fits beside the
    /// small-body reserve.
    pub fn body_memory_bound(max_inflight_body_bytes: usize, max_body_bytes: usize) -> usize {
        max_inflight_body_bytes.max(max_body_bytes.saturating_add(SMALL_BODY_RESERVE_BYTES)).min(tokio::sync::Semaphore::MAX_PERMITS)
    }

    /// `max_inflight_body_bytes` is raised by [`Policy::body_memory_bound`].
    pub fn new(allowed_hosts: &[String], allowed_origins: &[String], request_body_timeout_ms: u64, max_body_bytes: usize, max_inflight_body_bytes: usize) -> Policy {
        let memory = Self::body_memory_bound(max_inflight_body_bytes, max_body_bytes);
        Policy {
            body_memory: Arc::new(tokio::sync::Semaphore::new(memory)),
            large_body_memory: Arc::new(tokio::sync::Semaphore::new(memory - SMALL_BODY_RESERVE_BYTES)),
            ingest_quota: Arc::new(sluice_core::quota::RateQuota::new(0)),
            allowed_hosts: allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()).collect(),
            allowed_origins: allowed_origins.iter().map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase()).collect(),
            request_body_timeout_ms,
            max_body_bytes,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("host {0:?} is not one this server answers to; add it to http.allowed_hosts (SLUICE_HTTP__ALLOWED_HOSTS) if clients use that name")]
    Host(String),
    #[error("a state-changing request from {0} is refused: it is not this API's origin; add it to http.allowed_origins if that page may drive the API")]
    Origin(String),
    #[error("Content-Type {0:?} is not accepted; send application/json, application/x-ndjson or application/jsonl (curl: --json '...' or -H 'Content-Type: application/json')")]
    ContentType(String),
}

impl Refusal {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Refusal::Host(_) => (StatusCode::MISDIRECTED_REQUEST, "host_not_allowed"),
            Refusal::Origin(_) => (StatusCode::FORBIDDEN, "cross_origin"),
            Refusal::ContentType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        }
    }
}

/// Bodies larger than this (bytes, by Content-Length; chunked bodies count as large)
/// together may not take the last [`SMALL_BODY_RESERVE_BYTES`] of the body memory.
pub const LARGE_BODY_BYTES: u64 = 64 * 1024;
/// Body memory kept for bodies of at most [`LARGE_BODY_BYTES`], bytes.
pub const SMALL_BODY_RESERVE_BYTES: usize = 16 << 20;

/// Media types a request body may declare.
pub const ACCEPTED_CONTENT_TYPES: [&str; 3] = ["application/json", "application/x-ndjson", "application/jsonl"];

/// Decides whether a request (method and headers) may proceed. Pure: see the module docs.
pub fn check(method: &Method, headers: &HeaderMap, policy: &Policy) -> Result<(), Refusal> {
    let text = |name: header::HeaderName| headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_ascii_lowercase());
    let host = text(header::HOST);
    if let Some(h) = &host {
        let name = host_name(h);
        let ok = name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || policy.allowed_hosts.iter().any(|a| a == name);
        if !ok {
            return Err(Refusal::Host(h.clone()));
        }
    }
    let upgrade = text(header::UPGRADE).is_some_and(|u| u == "websocket");
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && !upgrade;
    if !safe {
        match text(header::ORIGIN) {
            Some(origin) => {
                let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or("");
                let same = host.as_deref().is_some_and(|h| !authority.is_empty() && authority == h);
                if !(same || policy.allowed_origins.contains(&origin)) {
                    return Err(Refusal::Origin(origin));
                }
            }
            None => {
                if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")).filter(|s| s == "cross-site" || s == "same-site") {
                    return Err(Refusal::Origin(format!("a {site} page")));
                }
            }
        }
    }
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) && has_body(headers) {
        let ct = text(header::CONTENT_TYPE).unwrap_or_default();
        let media = ct.split(';').next().unwrap_or("").trim();
        if !ACCEPTED_CONTENT_TYPES.contains(&media) {
            return Err(Refusal::ContentType(if ct.is_empty() { "(none)".into() } else { ct }));
        }
    }
    Ok(())
}

/// The host of a `Host` header value, without its port (`[::1]:8080` → `::1`).
fn host_name(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => h,
    }
}

/// Whether a request is an HTTP ingest request (`POST /v1/topics/{topic}/records`, or a
/// WebSocket ingest upgrade), which the per-address request quota counts.
fn is_ingest(req: &Request) -> bool {
    let path = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str());
    matches!((req.method(), path), (&Method::POST, Some("/v1/topics/{topic}/records")) | (&Method::GET, Some("/v1/topics/{topic}/ws")))
}

/// Whether the request declares a body (a nonzero Content-Length, or chunked).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

/// The middleware: [`check`], then reads the body under its time and size limits.
pub async fn guard(State(policy): State<Arc<Policy>>, req: Request, next: Next) -> Response {
    if let Err(refusal) = check(req.method(), req.headers(), &policy) {
        let (status, code) = refusal.status_and_code();
        metrics::counter!(t::HTTP_REFUSED_REQUESTS_TOTAL, "reason" => code).increment(1);
        return error(status, code, refusal.to_string());
    }
    if policy.ingest_quota.enabled() && is_ingest(&req) {
        let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
        if let Err(wait) = policy.ingest_quota.try_take(&peer, 1, std::time::Instant::now()) {
            metrics::histogram!(t::QUOTA_THROTTLE_SECONDS, "quota" => "http_ingest").record(wait.as_secs_f64());
            metrics::counter!(t::HTTP_REFUSED_REQUESTS_TOTAL, "reason" => "rate_limited").increment(1);
            let message = format!("{peer} is over http.ingest_requests_per_second; retry in {} ms (batch records into fewer requests, or use a WebSocket)", wait.as_millis().max(1));
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    if !has_body(req.headers()) {
        return next.run(req).await;
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let large_body = declared.is_none_or(|n| n > LARGE_BODY_BYTES);
    let (parts, body) = req.into_parts();
    let max = policy.max_body_bytes;
    let memory = policy.body_memory.clone();
    let large_memory = policy.large_body_memory.clone();
    let read = async {
        let mut stream = body.into_data_stream();
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        // The body's share of the listener's body memory, held until the route answers.
        let stopping = |_| error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping".into());
        let mut held = memory.clone().acquire_many_owned(0).await.map_err(stopping)?;
        let mut held_large = large_memory.clone().acquire_many_owned(0).await.map_err(stopping)?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| error(StatusCode::BAD_REQUEST, "unreadable_body", format!("the request body could not be read: {e}")))?;
            len += chunk.len();
            if len > max {
                let message = format!("the body exceeds http.max_body_bytes = {max} bytes; split it into smaller requests or raise the limit");
                return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message));
            }
            // Waits while other requests hold the bound; the socket is not read meanwhile.
            if large_body {
                held_large.merge(large_memory.clone().acquire_many_owned(chunk.len() as u32).await.map_err(stopping)?);
            }
            held.merge(memory.clone().acquire_many_owned(chunk.len() as u32).await.map_err(stopping)?);
            chunks.push(chunk);
        }
        let bytes = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => Bytes::from(chunks.concat()),
        };
        Ok((bytes, (held, held_large)))
    };
    let ms = policy.request_body_timeout_ms;
    let body = match sluice_core::net::within(ms, read).await {
        Ok(r) => r,
        Err(_) => {
            metrics::counter!(t::LISTENER_TIMEOUTS_TOTAL, "listener" => "http", "reason" => "body").increment(1);
            let message = format!("the request body did not arrive within http.request_body_timeout_ms = {ms} ms");
            Err(error(StatusCode::REQUEST_TIMEOUT, "request_timeout", message))
        }
    };
    match body {
        Ok((bytes, held)) => {
            let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            drop(held); // the body's memory is given back once the route has answered
            response
        }
        Err(response) => {
            if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
                metrics::counter!(t::INGEST_REFUSED_REQUESTS_TOTAL, "reason" => "payload_too_large").increment(1);
            }
            response
        }
    }
}

/// Routes that hold a Server-Sent Events stream open (each counts against
/// `http.max_sse_subscribers` while it is open).
pub const SSE_ROUTES: [&str; 4] = ["/v1/sessions/stream", "/v1/pipelines/{name}/stream", "/v1/events", "/v1/players/{id}/readings"];

/// The SSE subscriber cap: a stream takes a slot for as long as its response body lives;
/// without a free slot the request gets 503 `too_many_streams` with `Retry-After`.
pub async fn sse_slots(State(slots): State<Arc<tokio::sync::Semaphore>>, req: Request, next: Next) -> Response {
    let sse = req.extensions().get::<axum::extract::MatchedPath>().is_some_and(|p| SSE_ROUTES.contains(&p.as_str()));
    if !sse {
        return next.run(req).await;
    }
    let Ok(permit) = slots.try_acquire_owned() else {
        metrics::counter!(t::HTTP_REFUSED_REQUESTS_TOTAL, "reason" => "too_many_streams").increment(1);
        let message = "every SSE subscriber slot is taken (http.max_sse_subscribers); retry later".to_string();
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "too_many_streams", message);
        r.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return r;
    };
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    let body = Body::from_stream(body.into_data_stream().map(move |chunk| {
        let _held = &permit;
        chunk
    }));
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn policy() -> Policy {
        Policy::new(&["sluice.internal".into()], &["https://ops.example.com/".into()], 0, 1 << 20, 1 << 20)
    }

    #[test]
    fn hosts_by_ip_localhost_or_configured_name() {
        let p = policy();
        for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "10.1.2.3", "SLUICE.internal:80", "localhost"] {
            assert_eq!(check(&Method::GET, &headers(&[("host", host)]), &p), Ok(()), "{host}");
        }
        assert_eq!(check(&Method::GET, &headers(&[("host", "attacker.example:8080")]), &p), Err(Refusal::Host("attacker.example:8080".into())));
        assert!(check(&Method::GET, &headers(&[("host", "localhost.attacker.example")]), &p).is_err());
        assert_eq!(check(&Method::GET, &HeaderMap::new(), &p), Ok(()), "HTTP/1.0 without Host");
    }

    #[test]
    fn cross_origin_state_changes_are_refused() {
        let p = policy();
        let json = ("content-type", "application/json");
        let len = ("content-length", "2");
        let post = |extra: &[(&str, &str)]| {
            let mut all = vec![("host", "127.0.0.1:8080"), json, len];
            all.extend_from_slice(extra);
            check(&Method::POST, &headers(&all), &p)
        };
        assert_eq!(post(&[]), Ok(()), "no Origin: curl, devices");
        assert_eq!(post(&[("origin", "http://127.0.0.1:8080")]), Ok(()), "the dashboard itself");
        assert_eq!(post(&[("origin", "https://ops.example.com")]), Ok(()), "configured");
        assert_eq!(post(&[("origin", "http://evil.example")]), Err(Refusal::Origin("http://evil.example".into())));
        assert_eq!(post(&[("origin", "http://127.0.0.1:9999")]), Err(Refusal::Origin("http://127.0.0.1:9999".into())), "another port is another origin");
        assert!(post(&[("origin", "null")]).is_err());
        assert!(post(&[("sec-fetch-site", "cross-site")]).is_err());
        assert_eq!(post(&[("sec-fetch-site", "same-origin")]), Ok(()));
        // Reads are not state-changing; a WebSocket upgrade is.
        assert_eq!(check(&Method::GET, &headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")]), &p), Ok(()));
        let ws = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example"), ("upgrade", "websocket")]);
        assert!(check(&Method::GET, &ws, &p).is_err());
        assert!(check(&Method::DELETE, &headers(&[("host", "localhost:8080"), ("origin", "http://evil.example")]), &p).is_err());
    }

    #[test]
    fn only_documented_content_types_carry_a_body() {
        let p = policy();
        let post = |ct: Option<&str>, length: &str| {
            let mut all = vec![("host", "localhost"), ("content-length", length)];
            all.extend(ct.map(|c| ("content-type", c)));
            check(&Method::POST, &headers(&all), &p)
        };
        assert_eq!(post(Some("application/json; charset=utf-8"), "5"), Ok(()));
        assert_eq!(post(Some("application/x-ndjson"), "5"), Ok(()));
        assert_eq!(post(Some("text/plain"), "5"), Err(Refusal::ContentType("text/plain".into())));
        assert!(post(Some("application/x-www-form-urlencoded"), "5").is_err());
        assert!(post(Some("multipart/form-data; boundary=x"), "5").is_err());
        assert!(post(None, "5").is_err());
        assert_eq!(post(None, "0"), Ok(()), "a POST without a body (drain) needs no type");
    }
}

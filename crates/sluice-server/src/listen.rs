//! The HTTP listener: accepts connections under the connection caps, serves each with
//! hyper's HTTP/1.1 (with upgrades, for WebSockets) under a header read timeout, and shuts
//! down gracefully.
//!
//! Limits (the `[http]` config table):
//! - `header_read_timeout_ms`: a request's header must arrive within this long of the
//!   first read; the same timer closes keep-alive connections idle for this long. Slow-
//!   header clients ("slowloris") are dropped.
//! - `request_body_timeout_ms`: enforced by [`crate::guard`], which reads bodies.
//! - `max_connections`, `max_connections_per_ip`: connections over a cap are closed as
//!   soon as they are accepted ([`sluice_core::net::ConnectionCaps`]).
//! - When `accept` fails (out of file descriptors), the loop backs off from 5 ms to 1 s
//!   with rate-limited warnings ([`sluice_core::net::AcceptBackoff`]) instead of spinning.
//!
//! Shutdown: stop accepting, let every connection finish its request in flight (keep-
//! alive is turned off), and drop responses still streaming after [`SHUTDOWN_GRACE`]
//! (SSE). WebSockets count under the caps until their socket closes.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sluice_core::net::{AcceptBackoff, ConnectionCaps};
use sluice_core::telemetry as t;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long shutdown waits for open connections before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Timeouts of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// ms; 0: none.
    pub header_read_timeout_ms: u64,
}

/// Serves `router` on `listener` until `stop` resolves, then shuts down gracefully.
/// Connections count in `caps` (shared, so that `/metrics` can sample them).
pub async fn serve(listener: TcpListener, router: Router, limits: HttpLimits, caps: ConnectionCaps, tls: Option<tokio_rustls::TlsAcceptor>, stop: impl std::future::Future<Output = ()>) {
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut backoff = AcceptBackoff::default();
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                let wait = backoff.after_error("http", &e);
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        backoff.accepted();
        let Some(slot) = caps.admit_counted("http", peer) else { continue };
        let _ = stream.set_nodelay(true);
        // The slot lives as long as the socket: past an upgrade, a WebSocket keeps it.
        let stream = Counted { stream, _slot: slot };
        // Routes see the peer's address (`ConnectInfo`), e.g. for the per-address ingest
        // quota, and the principal of its client certificate, if any (mutual TLS).
        let routes = router.clone();
        let service = move |client: Option<crate::tls::ClientCert>| {
            TowerToHyperService::new(tower::service_fn(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                if let Some(c) = &client {
                    req.extensions_mut().insert(c.clone());
                }
                tower::Service::call(&mut routes.clone(), req)
            }))
        };
        let closing = closing_rx.clone();
        let header_timeout = limits.header_read_timeout_ms;
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, service(None), header_timeout, closing, peer).await,
                Some(tls) => {
                    // The handshake counts against the header timeout: a client that opens a
                    // connection and sends nothing is dropped either way.
                    match sluice_core::net::within(header_timeout, tls.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let client = crate::tls::peer_principal(s.get_ref().1).map(|p| crate::tls::ClientCert(std::sync::Arc::new(p)));
                            serve_connection(s, service(client), header_timeout, closing, peer).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed (plain HTTP to the HTTPS listener?)"),
                        Err(_) => metrics::counter!(t::LISTENER_TIMEOUTS_TOTAL, "listener" => "http", "reason" => "header").increment(1),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while caps.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if caps.open() > 0 {
        tracing::info!(open = caps.open(), "http connections (WebSockets) still open after the shutdown grace period are left to end with the process");
    }
}

/// Serves one connection (plain or TLS) with hyper's HTTP/1.1 until it ends, or until the
/// listener closes and the grace period is over.
async fn serve_connection<S, Svc>(stream: S, service: Svc, header_timeout: u64, mut closing: watch::Receiver<bool>, peer: std::net::SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<hyper::Request<hyper::body::Incoming>, Response = axum::response::Response> + Send + 'static,
    Svc::Future: Send + 'static,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    builder.header_read_timeout((header_timeout > 0).then(|| Duration::from_millis(header_timeout)));
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { let _ = closing.wait_for(|c| *c).await.map(|_| ()); } => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return, // a response still streaming (SSE): dropped
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics::counter!(t::LISTENER_TIMEOUTS_TOTAL, "listener" => "http", "reason" => "header").increment(1);
        }
        tracing::debug!(%peer, error = %e, "http connection ended");
    }
}

/// A socket that holds its place under the connection caps until it is dropped.
struct Counted {
    stream: tokio::net::TcpStream,
    _slot: sluice_core::net::ConnectionSlot,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

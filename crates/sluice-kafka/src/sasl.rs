//! SASL authentication of Kafka connections (KIP-43 SaslHandshake v1 and KIP-152
//! SaslAuthenticate v0–v2, the Kafka protocol guide's "SASL Authentication Sequence").
//!
//! With SASL on ([`KafkaSasl`]), a connection may send only ApiVersions, SaslHandshake and
//! SaslAuthenticate until it has authenticated; anything else closes it, as Kafka does.
//! The client names a mechanism in SaslHandshake (UNSUPPORTED_SASL_MECHANISM lists the
//! enabled ones), then sends the mechanism's messages in SaslAuthenticate requests. A
//! failed exchange gets SASL_AUTHENTICATION_FAILED with the reason, and the connection is
//! closed after the answer. Under mutual TLS, a connection whose client certificate names
//! an existing user starts authenticated as that user (`ConnAuth::from_certificate`); a
//! SASL exchange may still replace it. The authenticated user's role then decides every
//! request ([`crate::handlers::authz`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestKind, SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_auth::sasl::{Exchange, SaslServer, Step, MECHANISMS};
use sluice_auth::Role;

use crate::{decode_body, handlers, ConnectionError, KafkaServer};

/// How long a connection stays open after a failed authentication has been answered, ms
/// (Kafka's `connection.failed.authentication.delay.ms` default).
pub const FAILED_AUTHENTICATION_DELAY_MS: u64 = 100;

/// One authentication attempt's outcome, for the audit trail.
#[derive(Debug, Clone)]
pub struct LoginEvent {
    pub user: String,
    pub peer: SocketAddr,
    pub mechanism: String,
    /// `None` when it succeeded, else why not.
    pub failure: Option<String>,
}

/// SASL settings of the listener.
pub struct KafkaSasl {
    pub server: Arc<SaslServer>,
    /// Failed logins by address: a locked-out address is refused without a password check.
    pub throttle: Arc<sluice_auth::throttle::LoginThrottle>,
    /// Called after each completed or failed exchange.
    pub on_login: Box<dyn Fn(LoginEvent) + Send + Sync>,
    /// An authenticated user's current role and topic limits, read for every request (no
    /// I/O: an in-memory copy), so that a changed role or ACL applies to open connections;
    /// `None`: the user was removed.
    pub principal: Box<dyn Fn(&str) -> Option<(sluice_auth::Role, sluice_auth::Limits)> + Send + Sync>,
}

/// A connection's authentication state.
#[derive(Default)]
pub(crate) struct ConnAuth {
    /// The authenticated user and role.
    pub principal: Option<(String, Role)>,
    /// The mechanism chosen by SaslHandshake and its exchange so far.
    exchange: Option<(String, Exchange)>,
    /// The principal came from the client certificate (mutual TLS); a SASL exchange may
    /// still replace it, as Kafka's SASL_SSL takes the SASL identity.
    pub from_certificate: bool,
}

impl ConnAuth {
    /// The connection's state after its TLS handshake: authenticated as the user its client
    /// certificate names, when that user exists; else as a connection that must use SASL.
    pub(crate) fn from_certificate(sasl: &KafkaSasl, cert: Option<Result<sluice_auth::cert::CertPrincipal, String>>, peer: SocketAddr) -> ConnAuth {
        let mut auth = ConnAuth::default();
        match cert {
            None => {}
            Some(Err(reason)) => tracing::info!(%peer, %reason, "kafka client certificate names no user; the connection must authenticate with SASL"),
            Some(Ok(p)) => match (sasl.principal)(&p.user) {
                Some((role, _)) => {
                    metrics::counter!(sluice_core::telemetry::KAFKA_AUTHENTICATIONS_TOTAL, "mechanism" => "SSL", "result" => "ok").increment(1);
                    tracing::info!(%peer, user = %p.user, subject = %p.subject, %role, "kafka client authenticated by its certificate");
                    (sasl.on_login)(LoginEvent { user: p.user.clone(), peer, mechanism: "SSL".into(), failure: None });
                    auth.principal = Some((p.user, role));
                    auth.from_certificate = true;
                }
                None => tracing::info!(%peer, user = %p.user, subject = %p.subject, "kafka client certificate names a user who does not exist; the connection must authenticate with SASL"),
            },
        }
        auth
    }
}

fn encode<T: Encodable>(msg: &T, version: i16) -> Result<BytesMut, ConnectionError> {
    let mut out = BytesMut::new();
    msg.encode(&mut out, version).map_err(|e| ConnectionError::Decode(format!("encoding the response: {e}")))?;
    Ok(out)
}

impl KafkaServer {
    /// Answers a SaslHandshake or SaslAuthenticate request; the bool is whether to close
    /// the connection after the answer (a failed authentication).
    pub(crate) async fn sasl_request(&self, sasl: &KafkaSasl, auth: &mut ConnAuth, api: ApiKey, version: i16, mut body: Bytes, peer: SocketAddr) -> Result<(BytesMut, bool), ConnectionError> {
        if handlers::supported(api).is_none_or(|(lo, hi)| version < lo || version > hi) {
            return handlers::unsupported(api, version).map(|(b, _)| (b, false));
        }
        let mechanisms = || MECHANISMS.iter().map(|m| StrBytes::from_static_str(m)).collect::<Vec<_>>();
        match decode_body(api, &mut body, version).map_err(ConnectionError::Decode)? {
            RequestKind::SaslHandshake(r) => {
                let mechanism = r.mechanism.to_string();
                let mut resp = SaslHandshakeResponse::default().with_mechanisms(mechanisms());
                if auth.principal.is_some() && !auth.from_certificate {
                    resp.error_code = handlers::code(ResponseError::IllegalSaslState);
                    return encode(&resp, version).map(|b| (b, true));
                }
                match sasl.server.start(&mechanism) {
                    Ok(ex) => auth.exchange = Some((mechanism, ex)),
                    Err(reason) => {
                        tracing::info!(%peer, %reason, "kafka SASL handshake refused");
                        resp.error_code = handlers::code(ResponseError::UnsupportedSaslMechanism);
                    }
                }
                encode(&resp, version).map(|b| (b, false))
            }
            RequestKind::SaslAuthenticate(r) => {
                let Some((mechanism, mut exchange)) = auth.exchange.take() else {
                    let resp = SaslAuthenticateResponse::default()
                        .with_error_code(handlers::code(ResponseError::IllegalSaslState))
                        .with_error_message(Some(StrBytes::from_static_str("SaslAuthenticate before SaslHandshake")));
                    return encode(&resp, version).map(|b| (b, true));
                };
                if let Err(wait_ms) = sasl.throttle.check(peer.ip(), sluice_auth::store::now_ms()) {
                    let resp = SaslAuthenticateResponse::default()
                        .with_error_code(handlers::code(ResponseError::SaslAuthenticationFailed))
                        .with_error_message(Some(StrBytes::from_string(format!("too many failed logins from {}; retry in {} s", peer.ip(), (wait_ms + 999) / 1000))));
                    return encode(&resp, version).map(|b| (b, true));
                }
                let input = r.auth_bytes;
                // PLAIN checks an Argon2id hash: tens of ms of CPU, off the async workers.
                let (exchange, step) = tokio::task::spawn_blocking(move || {
                    let step = exchange.step(&input);
                    (exchange, step)
                })
                .await
                .map_err(|e| ConnectionError::Decode(format!("SASL step failed: {e}")))?;
                let mut resp = SaslAuthenticateResponse::default();
                let close = match step {
                    Step::Continue(bytes) => {
                        resp.auth_bytes = Bytes::from(bytes);
                        auth.exchange = Some((mechanism, exchange));
                        false
                    }
                    Step::Done { response, user, role } => {
                        resp.auth_bytes = Bytes::from(response);
                        metrics::counter!(sluice_core::telemetry::KAFKA_AUTHENTICATIONS_TOTAL, "mechanism" => mechanism.clone(), "result" => "ok").increment(1);
                        tracing::info!(%peer, %user, %role, %mechanism, "kafka client authenticated");
                        sasl.throttle.record(peer.ip(), true, sluice_auth::store::now_ms());
                        (sasl.on_login)(LoginEvent { user: user.clone(), peer, mechanism, failure: None });
                        auth.principal = Some((user, role));
                        auth.from_certificate = false;
                        false
                    }
                    Step::Failed(reason) => {
                        metrics::counter!(sluice_core::telemetry::KAFKA_AUTHENTICATIONS_TOTAL, "mechanism" => mechanism.clone(), "result" => "failed").increment(1);
                        tracing::warn!(%peer, %reason, %mechanism, "kafka SASL authentication failed");
                        sasl.throttle.record(peer.ip(), false, sluice_auth::store::now_ms());
                        (sasl.on_login)(LoginEvent { user: String::new(), peer, mechanism, failure: Some(reason.clone()) });
                        resp.error_code = handlers::code(ResponseError::SaslAuthenticationFailed);
                        resp.error_message = Some(StrBytes::from_string(format!("authentication failed: {reason}")));
                        true
                    }
                };
                encode(&resp, version).map(|b| (b, close))
            }
            other => Err(ConnectionError::Decode(format!("not a SASL request: {other:?}"))),
        }
    }
}

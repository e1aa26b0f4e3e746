//! TLS for the HTTP and Kafka listeners (rustls with the ring provider; TLS 1.2 and 1.3).
//!
//! - `[http.tls] cert, key` and `[kafka.tls] cert, key` name PEM files: the certificate
//!   chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1).
//! - On SIGHUP both pairs are read again; new connections get the new certificate, open
//!   ones keep theirs. A pair that does not load is reported and the old one stays.
//! - A client that speaks plain HTTP or plain Kafka to a TLS listener fails the handshake
//!   and is disconnected.
//! - **Mutual TLS**: with `client_ca` (a PEM file of CA certificates), the listener asks
//!   clients for a certificate and checks it against those CAs (rustls'
//!   `WebPkiClientVerifier`: chain, validity dates, and the client-auth extended key usage).
//!   `client_auth = "required"` (the default) fails the handshake of a client without one;
//!   `"requested"` lets it in, to authenticate otherwise. The certificate subject's CN is
//!   the principal ([`sluice_auth::cert`]). The CA file is read again on SIGHUP too.
//! - [`dev_certs`] makes a CA and a server certificate signed by it, and client
//!   certificates for given users, for trying TLS out (`sluice certs dev`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::{Deserialize, Serialize};

/// A listener's `tls` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file of the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file of the certificate's private key.
    pub key: PathBuf,
    /// PEM file of the CA certificates that sign client certificates (mutual TLS). Unset:
    /// no client certificate is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: whether a client must present a certificate (Kafka's
    /// `ssl.client.auth`).
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Kafka's `ssl.client.auth` values that apply when a `client_ca` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client without a certificate signed by `client_ca` fails the handshake.
    #[default]
    Required,
    /// A client may connect without a certificate (and authenticate another way); one it
    /// presents must still be signed by `client_ca`.
    Requested,
}

/// Why TLS could not be set up, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason} (make a test pair with `sluice certs dev --out DIR`)")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read the TLS private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("cannot use the client CA file {path}: {reason} (a PEM file of CA certificates; `sluice certs dev` writes one as ca.pem)")]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Setup(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A certificate and key read from PEM files, and the client certificate verifier made
/// from the client CA file, all read again by [`Reloadable::reload`].
#[derive(Debug)]
pub struct Reloadable {
    files: TlsSection,
    current: RwLock<Arc<CertifiedKey>>,
    clients: RwLock<Option<Arc<dyn ClientCertVerifier>>>,
}

/// The verifier of client certificates signed by the CAs in `files.client_ca`.
fn client_verifier(files: &TlsSection) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
    let Some(path) = &files.client_ca else { return Ok(None) };
    let err = |reason: String| TlsError::ClientCa { path: path.clone(), reason };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))? {
        roots.add(c.map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no CERTIFICATE block in the file".into()));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(ring::default_provider()));
    let builder = if files.client_auth == ClientAuth::Requested { builder.allow_unauthenticated() } else { builder };
    builder.build().map(Some).map_err(|e| err(e.to_string()))
}

fn load(files: &TlsSection) -> Result<CertifiedKey, TlsError> {
    let cert_err = |reason: String| TlsError::Cert { path: files.cert.clone(), reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert).map_err(|e| cert_err(e.to_string()))?.collect::<Result<_, _>>().map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no CERTIFICATE block in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key { path: files.key.clone(), reason: e.to_string() })?;
    let signing = ring::default_provider().key_provider.load_private_key(key).map_err(|e| TlsError::Key { path: files.key.clone(), reason: e.to_string() })?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| TlsError::Key { path: files.key.clone(), reason: format!("it is not the key of {}: {e}", files.cert.display()) })?;
    Ok(ck)
}

impl Reloadable {
    pub fn load(files: &TlsSection) -> Result<Arc<Reloadable>, TlsError> {
        Ok(Arc::new(Reloadable { files: files.clone(), current: RwLock::new(Arc::new(load(files)?)), clients: RwLock::new(client_verifier(files)?) }))
    }

    /// Reads the files again; on error the previous certificate and client CAs stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = Arc::new(load(&self.files)?);
        let clients = client_verifier(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = ck;
        *self.clients.write().unwrap_or_else(|e| e.into_inner()) = clients;
        Ok(())
    }

    fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let v = self.clients.read().unwrap_or_else(|e| e.into_inner()).clone();
        v.ok_or_else(|| rustls::Error::General("no client CA configured".into()))
    }

    pub fn files(&self) -> &TlsSection {
        &self.files
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// Client certificates are checked by the verifier current at the handshake, so that a
/// SIGHUP reload applies to new connections. It sends no CA names in its certificate
/// request (they could change on reload); clients send the certificate they have.
impl ClientCertVerifier for Reloadable {
    fn offer_client_auth(&self) -> bool {
        self.files.client_ca.is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.files.client_auth == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], now: UnixTime) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()?.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A request extension: the principal of the connection's client certificate (HTTPS with
/// mutual TLS), or why its certificate names none.
#[derive(Debug, Clone)]
pub struct ClientCert(pub Arc<Result<sluice_auth::cert::CertPrincipal, String>>);

/// The principal of a TLS connection's client certificate, if it presented one (checked
/// by the handshake): the user its subject's CN names, or why it names none.
pub fn peer_principal(conn: &rustls::ServerConnection) -> Option<Result<sluice_auth::cert::CertPrincipal, String>> {
    conn.peer_certificates().and_then(|c| c.first()).map(|der| sluice_auth::cert::principal(der))
}

/// A TLS acceptor serving `cert`'s current certificate, asking for client certificates when
/// its section names a `client_ca`; `alpn` names the application protocols offered
/// (`http/1.1` for HTTP; none for Kafka).
pub fn acceptor(cert: Arc<Reloadable>, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider())).with_safe_default_protocol_versions().map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match cert.files.client_ca {
        Some(_) => builder.with_client_cert_verifier(cert.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Reloads every certificate on each SIGHUP.
pub fn spawn_reloader(certs: Vec<Arc<Reloadable>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; TLS certificates reload only with a restart");
            return;
        };
        while hup.recv().await.is_some() {
            for c in &certs {
                // Reading the files is blocking I/O: off the async workers.
                let r = c.clone();
                match tokio::task::spawn_blocking(move || r.reload()).await {
                    Ok(Ok(())) => tracing::info!(cert = %c.files().cert.display(), "TLS certificate reloaded"),
                    Ok(Err(e)) => tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use"),
                    Err(e) => tracing::error!(error = %e, "the TLS reload task failed"),
                }
            }
        }
    })
}

/// Writes `ca.pem`, `server.pem` and `server-key.pem` to `out`: a new CA, and a server
/// certificate it signs for `hosts` (names or IP addresses); and for each of `clients`, a
/// client certificate `<name>.pem` with `CN=<name>` and its key `<name>-key.pem`, for
/// mutual TLS. For tests and trying TLS out: the CA's key is not kept, so it signs
/// nothing else.
pub fn dev_certs(out: &Path, hosts: &[String], clients: &[String]) -> Result<Vec<PathBuf>, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let setup = |e: rcgen::Error| TlsError::Setup(e.to_string());
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(setup)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "sluice development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().map_err(setup)?;
    let ca = ca_params.self_signed(&ca_key).map_err(setup)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(setup)?;
    params.distinguished_name.push(DnType::CommonName, hosts.first().map_or("localhost", String::as_str));
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(setup)?;
    let cert = params.signed_by(&key, &issuer).map_err(setup)?;
    std::fs::create_dir_all(out).map_err(|source| TlsError::Write { path: out.to_path_buf(), source })?;
    let mut files = vec![("ca.pem".to_string(), ca.pem()), ("server.pem".into(), cert.pem()), ("server-key.pem".into(), key.serialize_pem())];
    for name in clients {
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) || name == "ca" || name == "server" {
            return Err(TlsError::Setup(format!("client name {name:?}: give a user name that is also a file name (not ca or server)")));
        }
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(setup)?;
        params.distinguished_name.push(DnType::CommonName, name.as_str());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(setup)?;
        let cert = params.signed_by(&key, &issuer).map_err(setup)?;
        files.push((format!("{name}.pem"), cert.pem()));
        files.push((format!("{name}-key.pem"), key.serialize_pem()));
    }
    let mut written = Vec::new();
    for (name, text) in files {
        let path = out.join(&name);
        let mut o = std::fs::OpenOptions::new();
        o.create(true).truncate(true).write(true);
        if name.ends_with("key.pem") {
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        }
        o.open(&path).and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes())).map_err(|source| TlsError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certs_load_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        dev_certs(dir.path(), &["localhost".into(), "127.0.0.1".into()], &[]).unwrap();
        let files = TlsSection { cert: dir.path().join("server.pem"), key: dir.path().join("server-key.pem"), client_ca: None, client_auth: ClientAuth::Required };
        let r = Reloadable::load(&files).unwrap();
        let before = r.current.read().unwrap().cert[0].clone();
        dev_certs(dir.path(), &["localhost".into()], &[]).unwrap();
        r.reload().unwrap();
        assert_ne!(r.current.read().unwrap().cert[0], before, "the new certificate is served");
        // A key that is not the certificate's is refused, and the current pair stays.
        std::fs::copy(dir.path().join("ca.pem"), dir.path().join("server.pem")).unwrap();
        let e = r.reload().unwrap_err().to_string();
        assert!(e.contains("server-key.pem"), "{e}");
        assert!(acceptor(r, &[b"http/1.1"]).is_ok());
        let missing = TlsSection { cert: dir.path().join("nope.pem"), ..files.clone() };
        assert!(Reloadable::load(&missing).unwrap_err().to_string().contains("sluice certs dev"));
    }

    /// A client certificate from `dev_certs` passes the verifier made from its `ca.pem`
    /// and names its user; one from another CA fails; a bad CA file names itself.
    #[test]
    fn client_certificates_are_checked_against_the_client_ca() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        dev_certs(a.path(), &["localhost".into()], &["ola".into()]).unwrap();
        dev_certs(b.path(), &["localhost".into()], &["eve".into()]).unwrap();
        let files = TlsSection { cert: a.path().join("server.pem"), key: a.path().join("server-key.pem"), client_ca: Some(a.path().join("ca.pem")), client_auth: ClientAuth::Required };
        let r = Reloadable::load(&files).unwrap();
        assert!(r.offer_client_auth() && r.client_auth_mandatory());
        let der = |dir: &Path, name: &str| CertificateDer::from_pem_file(dir.join(format!("{name}.pem"))).unwrap();
        let now = UnixTime::now();
        r.verify_client_cert(&der(a.path(), "ola"), &[], now).expect("signed by the client CA");
        assert!(r.verify_client_cert(&der(b.path(), "eve"), &[], now).is_err(), "another CA's client");
        assert!(r.verify_client_cert(&der(a.path(), "server"), &[], now).is_err(), "a server certificate is not for client auth");
        assert_eq!(sluice_auth::cert::principal(&der(a.path(), "ola")).unwrap().user, "ola");
        let requested = TlsSection { client_auth: ClientAuth::Requested, ..files.clone() };
        assert!(!Reloadable::load(&requested).unwrap().client_auth_mandatory());
        let bad = TlsSection { client_ca: Some(a.path().join("server-key.pem")), ..files.clone() };
        assert!(Reloadable::load(&bad).unwrap_err().to_string().contains("server-key.pem"));
        assert!(dev_certs(a.path(), &[], &["../x".into()]).is_err());
        assert!(acceptor(r, &[]).is_ok());
    }
}

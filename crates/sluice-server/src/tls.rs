//! TLS for the HTTP and Kafka listeners (rustls with the ring provider; TLS 1.2 and 1.3).
//!
//! - `[http.tls] cert, key` and `[kafka.tls] cert, key` name PEM files: the certificate
//!   chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1).
//! - On SIGHUP both pairs are read again; new connections get the new certificate, open
//!   ones keep theirs. A pair that does not load is reported and the old one stays.
//! - A client that speaks plain HTTP or plain Kafka to a TLS listener fails the handshake
//!   and is disconnected.
//! - [`dev_certs`] makes a CA and a server certificate signed by it, for trying TLS out
//!   (`sluice certs dev`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

/// A listener's `tls` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file of the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file of the certificate's private key.
    pub key: PathBuf,
}

/// Why TLS could not be set up, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason} (make a test pair with `sluice certs dev --out DIR`)")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read the TLS private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Setup(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A certificate and key read from PEM files, read again by [`Reloadable::reload`].
#[derive(Debug)]
pub struct Reloadable {
    files: TlsSection,
    current: RwLock<Arc<CertifiedKey>>,
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
        Ok(Arc::new(Reloadable { files: files.clone(), current: RwLock::new(Arc::new(load(files)?)) }))
    }

    /// Reads the files again; on error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = Arc::new(load(&self.files)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = ck;
        Ok(())
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

/// A TLS acceptor serving `cert`'s current certificate; `alpn` names the application
/// protocols offered (`http/1.1` for HTTP; none for Kafka).
pub fn acceptor(cert: Arc<Reloadable>, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
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
/// certificate it signs for `hosts` (names or IP addresses). For tests and trying TLS
/// out: the CA's key is not kept, so it signs nothing else.
pub fn dev_certs(out: &Path, hosts: &[String]) -> Result<Vec<PathBuf>, TlsError> {
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
    let files = [("ca.pem", ca.pem()), ("server.pem", cert.pem()), ("server-key.pem", key.serialize_pem())];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = out.join(name);
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
        dev_certs(dir.path(), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let files = TlsSection { cert: dir.path().join("server.pem"), key: dir.path().join("server-key.pem") };
        let r = Reloadable::load(&files).unwrap();
        let before = r.current.read().unwrap().cert[0].clone();
        dev_certs(dir.path(), &["localhost".into()]).unwrap();
        r.reload().unwrap();
        assert_ne!(r.current.read().unwrap().cert[0], before, "the new certificate is served");
        // A key that is not the certificate's is refused, and the current pair stays.
        std::fs::copy(dir.path().join("ca.pem"), dir.path().join("server.pem")).unwrap();
        let e = r.reload().unwrap_err().to_string();
        assert!(e.contains("server-key.pem"), "{e}");
        assert!(acceptor(r, &[b"http/1.1"]).is_ok());
        let missing = TlsSection { cert: dir.path().join("nope.pem"), key: files.key.clone() };
        assert!(Reloadable::load(&missing).unwrap_err().to_string().contains("sluice certs dev"));
    }
}

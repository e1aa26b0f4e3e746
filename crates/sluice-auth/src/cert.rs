//! The principal of a client certificate (mutual TLS).
//!
//! A client that presents a certificate the listener's `client_ca` signed is the user named
//! by the certificate subject's first common name (CN): `CN=ola,OU=ops,O=example` is user
//! `ola`. This is what Kafka's `ssl.principal.mapping.rules` = `RULE:^CN=([^,]+).*$/$1/`
//! gives (Kafka documentation, "Customizing SSL User Name"). That user must exist
//! (`sluice users add ola --role operator --no-password`); its role and limits then apply.
//! The chain itself is checked by rustls during the handshake, before this runs.

use x509_parser::prelude::{FromDer, X509Certificate};

/// A client certificate's subject, as text (`CN=ola, OU=ops`), and the user it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPrincipal {
    pub subject: String,
    pub user: String,
}

/// The user a DER-encoded X.509 certificate names: its subject's first CN.
///
/// Errors: the bytes are not a certificate, or its subject has no CN, or the CN is not
/// UTF-8 text or is empty.
pub fn principal(der: &[u8]) -> Result<CertPrincipal, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let subject = cert.subject();
    let text = subject.to_string();
    let cn = subject.iter_common_name().next().ok_or_else(|| format!("the client certificate's subject {text:?} has no CN (common name) to name a user"))?;
    let user = cn.as_str().map_err(|e| format!("the client certificate's CN is not text: {e}"))?.trim().to_string();
    if user.is_empty() {
        return Err(format!("the client certificate's subject {text:?} has an empty CN"));
    }
    Ok(CertPrincipal { subject: text, user })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in names {
            params.distinguished_name.push(ty.clone(), *value);
        }
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    #[test]
    fn the_first_common_name_is_the_user() {
        use rcgen::DnType::*;
        let p = principal(&cert(&[(OrganizationName, "example"), (OrganizationalUnitName, "ops"), (CommonName, "ola")])).unwrap();
        assert_eq!(p.user, "ola");
        assert!(p.subject.contains("CN=ola") && p.subject.contains("OU=ops"), "{}", p.subject);
        let e = principal(&cert(&[(OrganizationName, "example")])).unwrap_err();
        assert!(e.contains("no CN") && e.contains("O=example"), "{e}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(principal(b"not a certificate").unwrap_err().contains("does not parse"));
        assert!(principal(&[]).is_err());
    }
}

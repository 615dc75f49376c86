//! Inbound TLS: the server configuration (rustls, TLS 1.2 and 1.3, h2 and http/1.1 by ALPN)
//! and, with mutual TLS, the client certificate's subject as the caller's identity.
//!
//! With `tls.client_ca`, a client must present a certificate chaining to those CAs or the
//! handshake fails; the certificate's subject common name (or, without one, the whole subject)
//! becomes the request's [`PeerCertificate`](crate::layer::auth::PeerCertificate).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::{TLS_CERT, TLS_CLIENT_CA, TLS_KEY, TlsConfig};

/// Inbound TLS could not be set up. Names the setting and file; never includes key material.
#[derive(Debug, thiserror::Error)]
#[error("{setting} ({path}): {problem}")]
pub struct TlsSetupError {
    setting: &'static str,
    path: String,
    problem: String,
}

fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    pem_certificates(path).map_err(|problem| TlsSetupError {
        setting,
        path: path.display().to_string(),
        problem,
    })
}

/// The PEM certificates in `path`: at least one, or why not.
pub fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificates in the file".into());
    }
    Ok(certs)
}

/// A rustls client configuration (ring, TLS 1.2 and 1.3) trusting the web PKI roots plus the
/// certificates in `extra_ca`: for the upstream, and for PostgreSQL.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        for cert in pem_certificates(path)? {
            roots.add(cert).map_err(|e| e.to_string())?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The rustls server configuration for `config`.
pub fn server_config(config: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let chain = certificates(TLS_CERT.env, &config.cert)?;
    let key_error = |problem: String| TlsSetupError {
        setting: TLS_KEY.env,
        path: config.key.display().to_string(),
        problem,
    };
    // The parse error names the PEM section, never its contents.
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| key_error(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| key_error(e.to_string()))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_error = |problem: String| TlsSetupError {
                setting: TLS_CLIENT_CA.env,
                path: path.display().to_string(),
                problem,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(TLS_CLIENT_CA.env, path)? {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .map_err(|e| key_error(format!("does not match the certificate: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// The identity in a verified client certificate: its subject's common name, else the whole
/// subject. `None` if the certificate cannot be parsed (rustls has verified it already) or
/// names nothing printable.
pub fn peer_subject(cert: &CertificateDer<'_>) -> Option<Arc<str>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = match subject.iter_common_name().next() {
        Some(cn) => cn.as_str().ok()?.to_owned(),
        None => subject.to_string(),
    };
    let printable = !name.is_empty() && name.chars().all(|c| !c.is_control());
    printable.then(|| Arc::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_common_name_is_the_identity() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "billing.internal");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            peer_subject(cert.der()).as_deref(),
            Some("billing.internal")
        );
    }

    #[test]
    fn missing_files_name_the_setting() {
        let config = TlsConfig {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        };
        let e = server_config(&config).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("SPECGATE_TLS_CERT (/nonexistent/cert.pem)"),
            "{e}"
        );
    }
}

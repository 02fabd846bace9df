//! TLS for both ends (rustls). dflockd runs TLS on the same port as plain TCP: a server
//! configured with a certificate speaks only TLS there.
//!
//! The crypto provider is chosen explicitly (aws-lc-rs) instead of the process default, so a
//! program that links several rustls providers (ring comes with other backends) cannot
//! panic on an ambiguous default.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS configuration that could not be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsConfigError(String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsConfigError("no certificate in the PEM".into()));
    }
    Ok(certs)
}

/// How a client verifies the server: trusted roots and, optionally, the name to verify
/// (default: the host part of the server address, an IP address included).
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the certificates in `pem` (for example a private CA, or a self-signed server
    /// certificate).
    pub fn with_root_certificates_pem(pem: &[u8]) -> Result<Self, TlsConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(pem)? {
            roots.add(cert).map_err(|e| TlsConfigError(format!("bad root certificate: {e}")))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls { config: Arc::new(config), server_name: None })
    }

    /// Uses a ready rustls configuration.
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> Self {
        ClientTls { config, server_name: None }
    }

    /// Verifies the server as `name` instead of the host of its address.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

/// The server's certificate chain and key.
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From a PEM certificate chain and a PEM private key.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsConfigError> {
        let chain = certificates(cert_chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsConfigError(format!("bad key PEM: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsConfigError(format!("certificate and key do not fit: {e}")))?;
        Ok(ServerTls { config: Arc::new(config) })
    }

    /// From PEM files (the server's `--tls-cert` and `--tls-key`).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsConfigError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| TlsConfigError(format!("{}: {e}", p.display())));
        Self::from_pem(&read(cert)?, &read(key)?)
    }

    /// Uses a ready rustls configuration.
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Self {
        ServerTls { config }
    }

    /// The rustls configuration a server accepts connections with.
    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

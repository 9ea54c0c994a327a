//! TLS to the upstream broker: rustls with the ring provider, trusting only the configured CA
//! (no system roots: a gateway should trust exactly what its integrator configured), with an
//! optional client certificate (mTLS) and ALPN.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;

use crate::pem::{self, TlsError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca_file: PathBuf,
    /// Client certificate chain and key, both or neither.
    pub client: Option<(PathBuf, PathBuf)>,
    pub alpn: Vec<String>,
}

/// Builds the rustls client config; every file problem comes back as one sentence.
pub fn client_config(cfg: &TlsConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = pem::roots(&cfg.ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots);
    let mut config = match &cfg.client {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let chain = pem::certs(cert_file)?;
            let key = pem::key(key_file)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::KeyMismatch {
                    cert: cert_file.clone(),
                    key: key_file.clone(),
                    source,
                })?
        }
    };
    config.alpn_protocols = cfg.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// Decodes `uplink.tls`. The files are read and parsed here, so `edgegate check` finds a wrong
/// path or a key that does not match its certificate before the service starts.
pub(crate) fn decode(m: &mut crate::config::decode::MapReader) -> Option<TlsConfig> {
    m.require(&["ca_file"]);
    let ca_file = m.string("ca_file").map(PathBuf::from);
    let cert_file = m.string("cert_file").map(PathBuf::from);
    let key_file = m.string("key_file").map(PathBuf::from);
    let alpn = match m.node("alpn") {
        None => Some(Vec::new()),
        Some(_) => m
            .strings("alpn")
            .map(|v| v.into_iter().map(|s| s.value).collect()),
    };
    let client = match (cert_file, key_file) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => {
            m.key_error("cert_file", "`cert_file` needs `key_file` too");
            return None;
        }
        (None, Some(_)) => {
            m.key_error("key_file", "`key_file` needs `cert_file` too");
            return None;
        }
    };
    let cfg = TlsConfig {
        ca_file: ca_file?,
        client,
        alpn: alpn?,
    };
    match client_config(&cfg) {
        Ok(_) => Some(cfg),
        Err(e) => {
            // Point at the file the problem is about, where we can tell.
            let key = match &e {
                TlsError::Pem(p) if p.path() == cfg.ca_file => "ca_file",
                TlsError::Pem(p) if cfg.client.as_ref().is_some_and(|(_, k)| p.path() == k) => {
                    "key_file"
                }
                _ => "cert_file",
            };
            m.error(key, e);
            None
        }
    }
}

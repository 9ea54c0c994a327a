//! The broker's optional TLS listener (`broker.tls`): rustls with the ring provider, server
//! certificate only (clients authenticate with MQTT credentials, as on the plain listener).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::decode::MapReader;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    pub listen: SocketAddr,
    /// PEM: the server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The whole file, or an error naming it.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{} is not a PEM private key: {e}", path.display()))
}

/// Reads and checks the certificate and key; every problem comes back as one sentence.
pub(crate) fn acceptor(cfg: &TlsListener) -> Result<TlsAcceptor, String> {
    let chain = certs(&cfg.cert)?;
    let key = key(&cfg.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "{} and {} do not fit together: {e}",
                cfg.cert.display(),
                cfg.key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Decodes `broker.tls`. The files are read and parsed here, so `edgegate check` finds a wrong
/// path or a key that does not match its certificate before the service starts.
pub(crate) fn decode(m: &mut MapReader) -> Option<TlsListener> {
    m.require(&["listen", "cert", "key"]);
    let listen = m.socket_addr("listen");
    let cert = m.string("cert").map(PathBuf::from);
    let key_path = m.string("key").map(PathBuf::from);
    let cfg = TlsListener {
        listen: listen?,
        cert: cert?,
        key: key_path?,
    };
    // Point at the file each problem is about; a mismatch is reported at the key.
    let mut ok = true;
    for (field, problem) in [
        ("cert", certs(&cfg.cert).err()),
        ("key", key(&cfg.key).err()),
    ] {
        if let Some(e) = problem {
            m.error(field, e);
            ok = false;
        }
    }
    if ok {
        if let Err(e) = acceptor(&cfg) {
            m.error("key", e);
            ok = false;
        }
    }
    ok.then_some(cfg)
}

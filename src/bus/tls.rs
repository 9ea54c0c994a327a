//! The broker's optional TLS listener (`broker.tls`): rustls with the ring provider. Clients
//! authenticate with MQTT credentials as on the plain listener, and with `client_ca` also by a
//! client certificate, whose subject CN can stand for the user name (`identity_as_username`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::decode::MapReader;
use crate::pem::{self, TlsError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    pub listen: SocketAddr,
    /// PEM: the server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CA certificates client certificates must chain to; `None`: none are asked for.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: a client without a certificate fails the handshake (else it may
    /// connect without one, and authenticates with MQTT credentials).
    pub require_client_cert: bool,
    /// With `client_ca`: a client certificate's subject CN is the client's verified user name
    /// (for the ACL, `%u` included); no password is asked for.
    pub identity_as_username: bool,
}

impl TlsListener {
    /// A listener with a server certificate only.
    pub fn new(listen: SocketAddr, cert: PathBuf, key: PathBuf) -> TlsListener {
        TlsListener {
            listen,
            cert,
            key,
            client_ca: None,
            require_client_cert: false,
            identity_as_username: false,
        }
    }
}

/// The TLS handshake, and what the connection learns from the client certificate.
#[derive(Clone)]
pub(crate) struct Acceptor {
    pub tls: TlsAcceptor,
    pub identity_as_username: bool,
}

/// Reads and checks the certificates and key; every problem comes back as one sentence.
pub(crate) fn acceptor(cfg: &TlsListener) -> Result<Acceptor, TlsError> {
    let chain = pem::certs(&cfg.cert)?;
    let key = pem::key(&cfg.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(pem::roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = match cfg.require_client_cert {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|source| TlsError::ClientCa {
                ca: ca.clone(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::KeyMismatch {
            cert: cfg.cert.clone(),
            key: cfg.key.clone(),
            source,
        })?;
    Ok(Acceptor {
        tls: TlsAcceptor::from(Arc::new(config)),
        identity_as_username: cfg.identity_as_username && cfg.client_ca.is_some(),
    })
}

/// Decodes `broker.tls`. The files are read and parsed here, so `edgegate check` finds a wrong
/// path or a key that does not match its certificate before the service starts.
pub(crate) fn decode(m: &mut MapReader) -> Option<TlsListener> {
    m.require(&["listen", "cert", "key"]);
    let listen = m.socket_addr("listen");
    let cert = m.string("cert").map(PathBuf::from);
    let key_path = m.string("key").map(PathBuf::from);
    let client_ca = match m.node("client_ca") {
        None => Some(None),
        Some(_) => m.string("client_ca").map(|p| Some(PathBuf::from(p))),
    };
    let require = m.bool("require_client_cert");
    let identity = m.bool("identity_as_username");
    let flags_ok = (require.is_some() || m.node("require_client_cert").is_none())
        && (identity.is_some() || m.node("identity_as_username").is_none());
    // A bad `client_ca` value is reported; the other files are still checked.
    let mut ok = flags_ok && client_ca.is_some();
    let client_ca = client_ca.flatten();
    if client_ca.is_none() && m.node("client_ca").is_none() {
        for (field, set) in [
            ("require_client_cert", require == Some(true)),
            ("identity_as_username", identity == Some(true)),
        ] {
            if set {
                m.error(
                    field,
                    "needs `client_ca`, the CA that client certificates are checked against",
                );
                ok = false;
            }
        }
    }
    let cfg = TlsListener {
        listen: listen?,
        cert: cert?,
        key: key_path?,
        require_client_cert: require.unwrap_or(client_ca.is_some()),
        identity_as_username: identity.unwrap_or(false),
        client_ca,
    };
    // Point at the file each problem is about; a mismatch is reported at the key.
    for (field, problem) in [
        ("cert", pem::certs(&cfg.cert).err()),
        ("key", pem::key(&cfg.key).err()),
        (
            "client_ca",
            cfg.client_ca.as_deref().and_then(|ca| pem::roots(ca).err()),
        ),
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

//! PEM files for TLS, as the local broker's listener and the uplink both read them, and the
//! errors of setting TLS up from them: each is one sentence naming the file.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not PEM certificates: {source}", path.display())]
    NotCertificates {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} is not a PEM private key: {source}", path.display())]
    NotKey {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds a certificate unfit as a CA: {source}", path.display())]
    NotCa {
        path: PathBuf,
        source: rustls::Error,
    },
}

impl PemError {
    /// The file the problem is about.
    pub fn path(&self) -> &Path {
        match self {
            PemError::Read { path, .. }
            | PemError::NotCertificates { path, .. }
            | PemError::NoCertificate { path }
            | PemError::NotKey { path, .. }
            | PemError::NotCa { path, .. } => path,
        }
    }
}

/// Why a TLS client or server config could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
    #[error("{} and {} do not fit together: {source}", cert.display(), key.display())]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: {source}", ca.display())]
    ClientCa {
        ca: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in the file, in order; at least one.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemError::NotCertificates {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The private key in the file (PKCS#8, PKCS#1 or SEC1).
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| PemError::NotKey {
        path: path.to_path_buf(),
        source,
    })
}

/// The file's certificates as trust anchors.
pub fn roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert).map_err(|source| PemError::NotCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(certs(&missing)
            .unwrap_err()
            .to_string()
            .starts_with("cannot read "));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        let e = certs(&empty).unwrap_err().to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = key(&empty).unwrap_err().to_string();
        assert!(
            e.contains("empty.pem") && e.contains("not a PEM private key"),
            "{e}"
        );
        assert!(roots(&empty)
            .unwrap_err()
            .to_string()
            .contains("no PEM certificate"));
    }
}

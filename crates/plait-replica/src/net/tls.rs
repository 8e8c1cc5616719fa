//! TLS for the gRPC listener: the certificate, key and client CA come from files and are
//! read again when they change (cert-manager and the operator rotate them in place), so
//! a rotation needs no restart. Only TLS 1.3 and 1.2 are offered.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Where the listener's TLS material lives.
#[derive(Clone, Debug)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// The CA client certificates are verified against; none: no client certificates.
    pub(crate) client_ca: Option<PathBuf>,
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {message}")]
    Key { path: PathBuf, message: String },
    #[error("the certificate and key cannot be used together: {0}")]
    Config(rustls::Error),
    #[error("client CA {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// The certificates of a PEM file, in order.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| TlsError::Key { path: path.to_owned(), message: e.to_string() })
}

pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa { path: path.to_owned(), message: e.to_string() })?;
    }
    Ok(roots)
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration from the files as they are now.
fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;
    let builder = match &files.client_ca {
        Some(path) => {
            // Optional at the TLS layer: a client may prove itself with a token instead.
            // A certificate that is presented must chain to the CA and be in its validity
            // period, or the handshake fails.
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(path)?), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::ClientCa { path: path.clone(), message: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The listener's current TLS configuration; replaced when the files change.
#[derive(Clone)]
pub(crate) struct ReloadingTls {
    files: TlsFiles,
    current: Arc<RwLock<Loaded>>,
}

/// The configuration in use, with the modification times it was built from.
struct Loaded {
    stamps: Vec<Option<SystemTime>>,
    config: Arc<ServerConfig>,
}

impl ReloadingTls {
    /// Loads the files; fails when they cannot be used, so a bad setup stops the start.
    pub(crate) fn load(files: TlsFiles) -> Result<ReloadingTls, TlsError> {
        let config = build(&files)?;
        let stamps = stamps(&files);
        Ok(ReloadingTls {
            files,
            current: Arc::new(RwLock::new(Loaded { stamps, config: Arc::new(config) })),
        })
    }

    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls lock poisoned").config.clone()
    }

    /// Rebuilds the configuration if a file changed. A file that changed but cannot be
    /// used (a half-written rotation) keeps the old configuration and is tried again.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.files);
        if self.current.read().expect("tls lock poisoned").stamps == now {
            return Ok(false);
        }
        let config = build(&self.files)?;
        *self.current.write().expect("tls lock poisoned") = Loaded { stamps: now, config: Arc::new(config) };
        Ok(true)
    }

    /// Checks the files every `every` until `stop`.
    pub(crate) fn spawn_reloader(self, every: Duration, stop: tokio::sync::watch::Receiver<bool>) {
        crate::reload::spawn_reloader("TLS certificate", every, stop, move || self.reload_if_changed());
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut out = vec![mtime(&files.cert), mtime(&files.key)];
    if let Some(ca) = &files.client_ca {
        out.push(mtime(ca));
    }
    out
}

/// Who a verified client certificate names: its subject CN and O values (groups).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CertIdentity {
    pub(crate) common_name: String,
    pub(crate) groups: Vec<String>,
}

/// Reads the subject of a leaf certificate the handshake already verified.
pub(crate) fn cert_identity(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let common_name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_owned)).collect();
    Some(CertIdentity { common_name, groups })
}

//! What can go wrong making or reading certificates.

/// An error from the CA or from reading a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// The certificate asked for is not one this CA issues: a name too long or empty,
    /// too many groups, dates the wrong way round, no usage at all.
    #[error("invalid certificate request: {0}")]
    InvalidSpec(String),
    /// A PEM input holds nothing usable: no certificate, no private key, too big.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A certificate does not parse, or lacks what Plait needs from it (a subject CN).
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// The CA certificate and key given to [`crate::Ca::from_pem`] do not belong
    /// together, or the certificate is not a CA.
    #[error("unusable CA: {0}")]
    Ca(String),
    /// Key generation or signing failed (the library below refused).
    #[error("cannot make the certificate: {0}")]
    Generate(String),
}

impl From<rcgen::Error> for PkiError {
    fn from(error: rcgen::Error) -> Self {
        PkiError::Generate(error.to_string())
    }
}

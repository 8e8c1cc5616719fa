//! Why bytes were refused: decoding errors (the bytes are not a canonical Plait value)
//! and verification errors (a well-formed value whose signature or hash is wrong).

use crate::ids::EntryHash;

/// The bytes are not the canonical encoding of a Plait value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLarge { what: &'static str, len: usize, max: usize },
    #[error("not valid CBOR: {0}")]
    Cbor(String),
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("unsupported {what} version {version}")]
    Version { what: &'static str, version: u64 },
    #[error("not canonical: the bytes differ from the canonical encoding of the same value")]
    NotCanonical,
}

impl DecodeError {
    pub(crate) fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        DecodeError::Malformed { what, why: why.into() }
    }
}

/// A decoded value failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("bad signature on entry {0}")]
    BadSignature(EntryHash),
    #[error("bad signature on manifest")]
    BadManifestSignature,
    #[error("entry hash mismatch: expected {expected}, bytes hash to {actual}")]
    HashMismatch { expected: EntryHash, actual: EntryHash },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

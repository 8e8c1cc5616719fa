//! Fixed-size identities: log ids, entry hashes, public keys and signatures.

use std::fmt;

/// A string that is not a hex id of the right length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} hex characters, got {got:?}")]
pub struct IdParseError {
    expected: usize,
    got: String,
}

macro_rules! fixed_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;

            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Takes exactly `LEN` bytes; anything else is `None`.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(bytes).ok().map(Self)
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn from_hex(s: &str) -> Result<Self, IdParseError> {
                let err = || IdParseError { expected: 2 * $len, got: s.chars().take(80).collect() };
                let bytes = hex::decode(s).map_err(|_| err())?;
                Self::from_slice(&bytes).ok_or_else(err)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Eight bytes are enough to tell ids apart in logs and test output.
                write!(f, "{}({}…)", stringify!($name), &self.to_hex()[..16])
            }
        }
    };
}

fixed_id!(
    /// blake3 of a log's canonical manifest body.
    LogId, 32
);
fixed_id!(
    /// blake3 of an entry's canonical bytes, signature included.
    EntryHash, 32
);
fixed_id!(
    /// An ed25519 public key: a writer or a node identity.
    PublicKey, 32
);
fixed_id!(
    /// An ed25519 signature.
    Signature, 64
);

//! Writer keys: the ed25519 secret keys that sign entries and manifests.

use ed25519_dalek::{Signer, SigningKey};
use rand::{CryptoRng, RngCore};

use crate::ids::{PublicKey, Signature};

/// A secret signing key. Generated from an rng the caller passes in, so tests can make
/// deterministic keys.
#[derive(Clone)]
pub struct WriterKey {
    signing: SigningKey,
}

impl std::fmt::Debug for WriterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriterKey({:?})", self.public())
    }
}

impl WriterKey {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        WriterKey { signing: SigningKey::generate(rng) }
    }

    /// A key from its 32 secret bytes.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        WriterKey { signing: SigningKey::from_bytes(&secret) }
    }

    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs a statement that is not an entry: the 32-byte digest of a message under a
    /// domain-separating context (`blake3::derive_key`), so a signature made for one
    /// purpose can never pass as an entry's or another purpose's.
    pub fn sign_statement(&self, context: &str, message: &[u8]) -> Signature {
        self.sign_digest(&statement_digest(context, message))
    }

    pub(crate) fn sign_digest(&self, digest: &[u8; 32]) -> Signature {
        Signature(self.signing.sign(digest).to_bytes())
    }
}

/// The digest [`WriterKey::sign_statement`] signs.
fn statement_digest(context: &str, message: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    hasher.update(message);
    *hasher.finalize().as_bytes()
}

/// Whether `signature` is `key`'s signature of `message` under `context`.
pub fn verify_statement(key: &PublicKey, context: &str, message: &[u8], signature: &Signature) -> bool {
    crate::entry::verify_one(key, &statement_digest(context, message), signature)
}

//! Peer identity on each call: a replica proves its node id by signing, with its node
//! key, the node id of the replica it calls and the current time. Requests also name a
//! node id in their body (`PeerIdentity`); that claim is ignored wherever it matters
//! (holds, write concern, drain): only a proven node id counts.
//!
//! The proof is bound to its audience, so a replica that receives one cannot present it
//! to another; it is good for [`SKEW_MAX`] either side of its time, and on TLS nobody but
//! the audience sees it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plait_core::{PublicKey, Signature, WriterKey};

/// The request metadata key carrying the proof.
pub(crate) const NODE_PROOF_KEY: &str = "plait-node-proof";
const CONTEXT: &str = "plait.v1 node proof";
/// How far a proof's time may be from the verifier's clock.
pub(crate) const SKEW_MAX: Duration = Duration::from_secs(300);
/// Verified proofs remembered, so a busy peer's calls cost one signature check a minute.
const CACHE_MAX: usize = 4096;

/// The clock edge: what decides (`verify_at`, `make_proof_at`) takes the time as an
/// argument, so tests fix it.
#[allow(clippy::disallowed_methods)]
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn message(audience: &PublicKey, secs: u64) -> [u8; 40] {
    let mut m = [0u8; 40];
    m[..32].copy_from_slice(audience.as_bytes());
    m[32..].copy_from_slice(&secs.to_le_bytes());
    m
}

fn make_proof_at(key: &WriterKey, audience: &PublicKey, secs: u64) -> String {
    let signature = key.sign_statement(CONTEXT, &message(audience, secs));
    format!("{}.{secs}.{}", key.public().to_hex(), signature.to_hex())
}

/// The response metadata key carrying a server's proof of its node id (on Watch).
pub(crate) const SERVER_PROOF_KEY: &str = "plait-server-proof";
const SERVER_CONTEXT: &str = "plait.v1 server proof";
/// Bytes of a Watch challenge.
pub(crate) const CHALLENGE_BYTES: usize = 32;

fn server_message(caller: &PublicKey, challenge: &[u8; CHALLENGE_BYTES]) -> [u8; 64] {
    let mut m = [0u8; 64];
    m[..32].copy_from_slice(caller.as_bytes());
    m[32..].copy_from_slice(challenge);
    m
}

/// A server's answer to a caller's challenge: its node key's signature over the caller's
/// node id and the challenge (fresh per call, so it cannot be replayed), in hex.
pub(crate) fn server_proof(key: &WriterKey, caller: &PublicKey, challenge: &[u8; CHALLENGE_BYTES]) -> String {
    key.sign_statement(SERVER_CONTEXT, &server_message(caller, challenge)).to_hex()
}

/// Whether `value` proves that the server answering is `server`.
pub(crate) fn verify_server_proof(
    server: &PublicKey,
    caller: &PublicKey,
    challenge: &[u8; CHALLENGE_BYTES],
    value: &str,
) -> bool {
    value.len() <= 256
        && Signature::from_hex(value).is_ok_and(|s| {
            plait_core::verify_statement(server, SERVER_CONTEXT, &server_message(caller, challenge), &s)
        })
}

/// Why a proof does not count.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProofError {
    #[error("the node proof is malformed")]
    Malformed,
    #[error("the node proof is {0} s away from this replica's clock (at most 300 s)")]
    Skewed(u64),
    #[error("the node proof's signature does not verify for this replica")]
    BadSignature,
}

/// Checks proofs addressed to this replica, remembering the good ones for a while.
#[derive(Debug)]
pub(crate) struct ProofVerifier {
    me: PublicKey,
    cache: Mutex<HashMap<String, PublicKey>>,
}

impl ProofVerifier {
    pub(crate) fn new(me: PublicKey) -> ProofVerifier {
        ProofVerifier { me, cache: Mutex::default() }
    }

    /// The node id a request's proof proves; `None` when it carries none.
    pub(crate) fn verify_metadata(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Option<Result<PublicKey, ProofError>> {
        let value = metadata.get(NODE_PROOF_KEY)?;
        Some(value.to_str().map_err(|_| ProofError::Malformed).and_then(|v| self.verify_at(v, now_secs())))
    }

    fn verify_at(&self, value: &str, now: u64) -> Result<PublicKey, ProofError> {
        if value.len() > 256 {
            return Err(ProofError::Malformed);
        }
        let mut parts = value.split('.');
        let (Some(node), Some(secs), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProofError::Malformed);
        };
        let secs: u64 = secs.parse().map_err(|_| ProofError::Malformed)?;
        let skew = now.abs_diff(secs);
        if skew > SKEW_MAX.as_secs() {
            return Err(ProofError::Skewed(skew));
        }
        if let Some(node) = self.cache.lock().expect("proof cache poisoned").get(value) {
            return Ok(*node);
        }
        let node_id = PublicKey::from_hex(node).map_err(|_| ProofError::Malformed)?;
        let signature = Signature::from_hex(sig).map_err(|_| ProofError::Malformed)?;
        if !plait_core::verify_statement(&node_id, CONTEXT, &message(&self.me, secs), &signature) {
            return Err(ProofError::BadSignature);
        }
        let mut cache = self.cache.lock().expect("proof cache poisoned");
        if cache.len() >= CACHE_MAX {
            // Expired proofs pile up; starting over is simpler than tracking ages.
            cache.clear();
        }
        cache.insert(value.to_owned(), node_id);
        Ok(node_id)
    }
}

/// What a calling replica attaches to its calls to one peer; a fresh proof each minute.
#[derive(Debug)]
pub(crate) struct ProofMaker {
    key: WriterKey,
    audience: PublicKey,
    current: Mutex<(u64, String)>,
}

impl ProofMaker {
    pub(crate) fn new(key: WriterKey, audience: PublicKey) -> ProofMaker {
        ProofMaker { key, audience, current: Mutex::new((0, String::new())) }
    }

    pub(crate) fn proof(&self) -> String {
        let now = now_secs();
        let mut current = self.current.lock().expect("proof lock poisoned");
        if now.saturating_sub(current.0) >= 60 {
            *current = (now, make_proof_at(&self.key, &self.audience, now));
        }
        current.1.clone()
    }

    /// Adds the proof to an outgoing request.
    pub(crate) fn attach<T>(&self, request: &mut tonic::Request<T>) {
        if let Ok(value) = self.proof().parse() {
            request.metadata_mut().insert(NODE_PROOF_KEY, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> WriterKey {
        WriterKey::from_secret([seed; 32])
    }

    /// A server proof counts only for the server's own key, the caller it answers and the
    /// challenge it was given: another replica cannot answer for it, and an answer to one
    /// challenge (or one caller) proves nothing for another.
    #[test]
    fn server_proofs_bind_server_caller_and_challenge() {
        let (server, caller, other) = (key(1), key(2), key(3));
        let proof = server_proof(&server, &caller.public(), &[7; 32]);
        assert!(verify_server_proof(&server.public(), &caller.public(), &[7; 32], &proof));
        assert!(!verify_server_proof(&other.public(), &caller.public(), &[7; 32], &proof), "another server");
        assert!(!verify_server_proof(&server.public(), &other.public(), &[7; 32], &proof), "another caller");
        assert!(
            !verify_server_proof(&server.public(), &caller.public(), &[8; 32], &proof),
            "another challenge"
        );
        let by_other = server_proof(&other, &caller.public(), &[7; 32]);
        assert!(!verify_server_proof(&server.public(), &caller.public(), &[7; 32], &by_other));
    }

    /// A proof counts only for the replica it was made for, only with the maker's own
    /// key, and only near its time.
    #[test]
    fn proofs_bind_node_audience_and_time() {
        let (peer, me, other) = (key(1), key(2), key(3));
        let verifier = ProofVerifier::new(me.public());
        let proof = make_proof_at(&peer, &me.public(), 1_000_000);
        assert_eq!(verifier.verify_at(&proof, 1_000_010), Ok(peer.public()));

        // Made for another replica: replaying it here fails.
        let elsewhere = make_proof_at(&peer, &other.public(), 1_000_000);
        assert_eq!(verifier.verify_at(&elsewhere, 1_000_010), Err(ProofError::BadSignature));

        // Claiming someone else's node id with one's own signature fails.
        let forged = proof.replacen(&peer.public().to_hex(), &other.public().to_hex(), 1);
        assert_eq!(verifier.verify_at(&forged, 1_000_010), Err(ProofError::BadSignature));

        // Too old or too far ahead.
        assert_eq!(verifier.verify_at(&proof, 1_000_000 + 301), Err(ProofError::Skewed(301)));
        assert_eq!(verifier.verify_at(&proof, 1_000_000 - 400), Err(ProofError::Skewed(400)));

        let long = "z".repeat(300);
        for bad in ["", "x", "a.b.c", "a.1.c.d", long.as_str()] {
            assert!(!verify_server_proof(&me.public(), &peer.public(), &[7; 32], bad), "{bad:?}");
        }
        for bad in ["", "x", "a.b.c", "a.1.c.d", long.as_str()] {
            assert_eq!(verifier.verify_at(bad, 1_000_000), Err(ProofError::Malformed), "{bad:?}");
        }
    }
}

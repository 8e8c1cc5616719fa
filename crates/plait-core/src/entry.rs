//! Entries: the signed, content-addressed unit of replication.
//!
//! Encoding: a fixed-position CBOR array
//! `[v, log, time, writer, next, refs, ops, sig]` (the design's clock is `time` and
//! `writer`). The signature is ed25519 over `blake3("plait/entry/v1" ‖ body)`, where
//! `body` is the same array without `sig`. The entry hash is blake3 of the whole
//! canonical encoding. The type states follow the trust we have in the bytes:
//! `DecodedEntry` (canonical, signature not checked) becomes `VerifiedEntry` only by
//! verifying or by signing.

use ciborium::Value;
use ed25519_dalek::VerifyingKey;

use crate::cbor::{self, bytes_value, uint_value};
use crate::error::{DecodeError, VerifyError};
use crate::ids::{EntryHash, LogId, PublicKey, Signature};
use crate::keys::WriterKey;
use crate::limits::{ENTRY_BYTES_MAX, NEXT_MAX, OPS_PER_ENTRY_MAX, REFS_MAX, TIME_MAX};
use crate::op::Op;
use crate::order::{Clock, OpId};

const ENTRY_VERSION: u64 = 1;
const SIGN_DOMAIN: &[u8] = b"plait/entry/v1";
/// CBOR array headers for 7 and 8 items: the body and the signed entry.
const BODY_HEADER: u8 = 0x87;
const ENTRY_HEADER: u8 = 0x88;
/// A 64-byte byte string: header 0x58 0x40, then the bytes.
const SIGNATURE_ENCODED_LEN: usize = 66;

/// A decoded entry's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub log: LogId,
    pub clock: Clock,
    /// Parents: the heads the writer saw, sorted and unique.
    pub next: Vec<EntryHash>,
    /// Skip references to older entries, sorted and unique. Carried, not interpreted.
    pub refs: Vec<EntryHash>,
    pub ops: Vec<Op>,
    pub signature: Signature,
}

/// What a writer fills in before signing.
#[derive(Clone, Debug)]
pub struct EntryDraft {
    pub log: LogId,
    pub time: u64,
    pub next: Vec<EntryHash>,
    pub refs: Vec<EntryHash>,
    pub ops: Vec<Op>,
}

fn body_items(log: &LogId, clock: &Clock, next: &[EntryHash], refs: &[EntryHash], ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + ops.iter().map(Op::size_hint).sum::<usize>());
    let items = [
        uint_value(ENTRY_VERSION),
        bytes_value(&log.0),
        uint_value(clock.time),
        bytes_value(&clock.writer.0),
        Value::Array(next.iter().map(|h| bytes_value(&h.0)).collect()),
        Value::Array(refs.iter().map(|h| bytes_value(&h.0)).collect()),
        Value::Array(ops.iter().map(Op::to_value).collect()),
    ];
    for item in &items {
        out.extend_from_slice(&cbor::encode(item));
    }
    out
}

fn signing_digest_of_items(items: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(SIGN_DOMAIN);
    hasher.update(&[BODY_HEADER]);
    hasher.update(items);
    *hasher.finalize().as_bytes()
}

fn structural_checks(
    next: &[EntryHash],
    refs: &[EntryHash],
    ops: &[Op],
    time: u64,
) -> Result<(), DecodeError> {
    const WHAT: &str = "entry";
    if ops.is_empty() {
        return Err(DecodeError::malformed(WHAT, "an entry must carry at least one op"));
    }
    if ops.len() > OPS_PER_ENTRY_MAX {
        return Err(DecodeError::malformed(
            WHAT,
            format!("{} ops, over the limit of {OPS_PER_ENTRY_MAX}", ops.len()),
        ));
    }
    if next.len() > NEXT_MAX || refs.len() > REFS_MAX {
        return Err(DecodeError::malformed(WHAT, format!("at most {NEXT_MAX} parents and {REFS_MAX} refs")));
    }
    if next.windows(2).any(|w| w[0] >= w[1]) || refs.windows(2).any(|w| w[0] >= w[1]) {
        return Err(DecodeError::malformed(WHAT, "next and refs must be sorted without duplicates"));
    }
    if time == 0 || time > TIME_MAX {
        return Err(DecodeError::malformed(WHAT, format!("clock time must be between 1 and {TIME_MAX}")));
    }
    Ok(())
}

impl EntryDraft {
    /// Signs the draft. Parents and refs are sorted and deduplicated here; ops are
    /// validated. The writer is the key's public key.
    pub fn sign(mut self, key: &WriterKey) -> Result<VerifiedEntry, DecodeError> {
        self.next.sort();
        self.next.dedup();
        self.refs.sort();
        self.refs.dedup();
        for op in &self.ops {
            op.validate().map_err(|e| DecodeError::malformed("op", e.to_string()))?;
        }
        structural_checks(&self.next, &self.refs, &self.ops, self.time)?;
        let clock = Clock { time: self.time, writer: key.public() };
        let items = body_items(&self.log, &clock, &self.next, &self.refs, &self.ops);
        let signature = key.sign_digest(&signing_digest_of_items(&items));
        let mut bytes = Vec::with_capacity(1 + items.len() + SIGNATURE_ENCODED_LEN);
        bytes.push(ENTRY_HEADER);
        bytes.extend_from_slice(&items);
        bytes.extend_from_slice(&cbor::encode(&bytes_value(&signature.0)));
        if bytes.len() > ENTRY_BYTES_MAX {
            return Err(DecodeError::TooLarge { what: "entry", len: bytes.len(), max: ENTRY_BYTES_MAX });
        }
        let hash = EntryHash(*blake3::hash(&bytes).as_bytes());
        let entry =
            Entry { log: self.log, clock, next: self.next, refs: self.refs, ops: self.ops, signature };
        Ok(VerifiedEntry(DecodedEntry { entry, hash, bytes }))
    }
}

/// A canonical entry whose signature has not been checked yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedEntry {
    entry: Entry,
    hash: EntryHash,
    bytes: Vec<u8>,
}

impl DecodedEntry {
    /// Decodes untrusted bytes, refusing anything that is not the canonical encoding of
    /// a well-formed entry within the limits. Reads the bytes in place
    /// ([`cbor::Reader`]): it accepts exactly what `DecodedEntry::decode_via_value` (the
    /// reference, in tests and fuzzing) accepts, at a fraction of the cost.
    pub fn decode(input: &[u8]) -> Result<DecodedEntry, DecodeError> {
        const WHAT: &str = "entry";
        if input.len() > ENTRY_BYTES_MAX {
            return Err(DecodeError::TooLarge { what: WHAT, len: input.len(), max: ENTRY_BYTES_MAX });
        }
        let mut r = cbor::Reader::new(WHAT, input);
        let fields = r.array()?;
        // The version first, so that an entry of another version says so whatever its
        // shape.
        if fields > 0 {
            let version = r.uint("version")?;
            if version != ENTRY_VERSION {
                return Err(DecodeError::Version { what: WHAT, version });
            }
        }
        if fields != 8 {
            return Err(DecodeError::malformed(WHAT, format!("expected 8 fields, found {fields}")));
        }
        let log = LogId(r.fixed("log")?);
        let time = r.uint("time")?;
        let writer = PublicKey(r.fixed("writer")?);
        let n = r.array_field("next", NEXT_MAX)?;
        let next = r.sorted_ids("next", n, EntryHash)?;
        let n = r.array_field("refs", REFS_MAX)?;
        let refs = r.sorted_ids("refs", n, EntryHash)?;
        let n = r.array_field("ops", OPS_PER_ENTRY_MAX)?;
        let ops = (0..n).map(|_| Op::read(&mut r)).collect::<Result<Vec<_>, _>>()?;
        let signature = Signature(r.fixed("signature")?);
        if !r.rest().is_empty() {
            return Err(DecodeError::NotCanonical);
        }
        structural_checks(&next, &refs, &ops, time)?;
        let clock = Clock { time, writer };
        let hash = EntryHash(*blake3::hash(input).as_bytes());
        Ok(DecodedEntry {
            entry: Entry { log, clock, next, refs, ops, signature },
            hash,
            bytes: input.to_vec(),
        })
    }

    /// The reference decoder [`DecodedEntry::decode`] is checked against: through a
    /// `ciborium::Value` tree, then re-encoding the fields and comparing the bytes.
    #[cfg(any(test, feature = "reference-decoder"))]
    #[doc(hidden)]
    pub fn decode_via_value(input: &[u8]) -> Result<DecodedEntry, DecodeError> {
        const WHAT: &str = "entry";
        if input.len() > ENTRY_BYTES_MAX {
            return Err(DecodeError::TooLarge { what: WHAT, len: input.len(), max: ENTRY_BYTES_MAX });
        }
        let value = cbor::decode(input)?;
        let items = cbor::array(WHAT, &value)?;
        if let Some(v) = items.first() {
            let version = cbor::uint(WHAT, "version", v)?;
            if version != ENTRY_VERSION {
                return Err(DecodeError::Version { what: WHAT, version });
            }
        }
        let mut f = cbor::Fields::new(WHAT, &value, 8)?;
        f.next();
        let log = LogId(f.fixed("log")?);
        let time = f.uint("time")?;
        let writer = PublicKey(f.fixed("writer")?);
        let next = cbor::sorted_ids(WHAT, "next", f.array("next", NEXT_MAX)?, EntryHash)?;
        let refs = cbor::sorted_ids(WHAT, "refs", f.array("refs", REFS_MAX)?, EntryHash)?;
        let ops =
            f.array("ops", OPS_PER_ENTRY_MAX)?.iter().map(Op::from_value).collect::<Result<Vec<_>, _>>()?;
        let signature = Signature(f.fixed("signature")?);
        structural_checks(&next, &refs, &ops, time)?;
        let clock = Clock { time, writer };

        let items = body_items(&log, &clock, &next, &refs, &ops);
        let mut canonical = Vec::with_capacity(input.len());
        canonical.push(ENTRY_HEADER);
        canonical.extend_from_slice(&items);
        canonical.extend_from_slice(&cbor::encode(&bytes_value(&signature.0)));
        cbor::ensure_canonical(input, &canonical)?;

        let hash = EntryHash(*blake3::hash(input).as_bytes());
        Ok(DecodedEntry { entry: Entry { log, clock, next, refs, ops, signature }, hash, bytes: canonical })
    }

    /// Decodes bytes that were sent or stored under `expected`; refuses a mismatch.
    pub fn decode_expecting(input: &[u8], expected: EntryHash) -> Result<DecodedEntry, VerifyError> {
        let decoded = DecodedEntry::decode(input)?;
        if decoded.hash != expected {
            return Err(VerifyError::HashMismatch { expected, actual: decoded.hash });
        }
        Ok(decoded)
    }

    fn digest(&self) -> [u8; 32] {
        // The body is the entry without its signature: same items, 7-item header.
        let items = &self.bytes[1..self.bytes.len() - SIGNATURE_ENCODED_LEN];
        signing_digest_of_items(items)
    }

    /// Checks the writer's signature.
    pub fn verify(self) -> Result<VerifiedEntry, VerifyError> {
        if verify_one(&self.entry.clock.writer, &self.digest(), &self.entry.signature) {
            Ok(VerifiedEntry(self))
        } else {
            Err(VerifyError::BadSignature(self.hash))
        }
    }

    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    pub fn hash(&self) -> EntryHash {
        self.hash
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

fn verifying_key(writer: &PublicKey) -> Option<VerifyingKey> {
    // Weak (small-order) keys would let one signature verify for many messages.
    VerifyingKey::from_bytes(&writer.0).ok().filter(|k| !k.is_weak())
}

pub(crate) fn verify_one(writer: &PublicKey, digest: &[u8; 32], signature: &Signature) -> bool {
    let Some(key) = verifying_key(writer) else { return false };
    key.verify_strict(digest, &ed25519_dalek::Signature::from_bytes(&signature.0)).is_ok()
}

/// Verifies many entries at once with ed25519 batch verification, falling back to one by
/// one only when the batch fails, to tell which entries are bad. Results keep the order.
pub fn verify_batch(entries: Vec<DecodedEntry>) -> Vec<Result<VerifiedEntry, VerifyError>> {
    if entries.len() < 2 {
        return entries.into_iter().map(DecodedEntry::verify).collect();
    }
    let digests: Vec<[u8; 32]> = entries.iter().map(DecodedEntry::digest).collect();
    let keys: Option<Vec<VerifyingKey>> =
        entries.iter().map(|e| verifying_key(&e.entry.clock.writer)).collect();
    let batch_ok = keys.is_some_and(|keys| {
        let messages: Vec<&[u8]> = digests.iter().map(|d| d.as_slice()).collect();
        let signatures: Vec<ed25519_dalek::Signature> =
            entries.iter().map(|e| ed25519_dalek::Signature::from_bytes(&e.entry.signature.0)).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    });
    if batch_ok {
        entries.into_iter().map(|e| Ok(VerifiedEntry(e))).collect()
    } else {
        entries.into_iter().map(DecodedEntry::verify).collect()
    }
}

/// Decodes and verifies untrusted entries on up to `threads` threads, in the order of
/// `inputs`: the inputs are cut into shares of about equal bytes, one per thread, and
/// each share is decoded and batch-verified on its own (scoped) thread. A decode error
/// keeps its place; it does not fail the others.
pub fn decode_and_verify<B: AsRef<[u8]> + Sync>(
    inputs: &[B],
    threads: usize,
) -> Vec<Result<VerifiedEntry, VerifyError>> {
    let share = |inputs: &[B]| -> Vec<Result<VerifiedEntry, VerifyError>> {
        let mut out: Vec<Option<Result<VerifiedEntry, VerifyError>>> = Vec::with_capacity(inputs.len());
        let mut decoded = Vec::with_capacity(inputs.len());
        let mut places = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            match DecodedEntry::decode(input.as_ref()) {
                Ok(entry) => {
                    decoded.push(entry);
                    places.push(i);
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e.into()))),
            }
        }
        for (place, result) in places.into_iter().zip(verify_batch(decoded)) {
            out[place] = Some(result);
        }
        out.into_iter().map(|r| r.expect("every place is filled")).collect()
    };
    let threads = threads.clamp(1, inputs.len().max(1));
    if threads == 1 {
        return share(inputs);
    }
    let total: usize = inputs.iter().map(|b| b.as_ref().len()).sum();
    let per_share = total.div_ceil(threads);
    let mut shares = Vec::with_capacity(threads);
    let (mut start, mut bytes) = (0, 0);
    for (i, input) in inputs.iter().enumerate() {
        bytes += input.as_ref().len();
        if bytes >= per_share && shares.len() + 1 < threads {
            shares.push(&inputs[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < inputs.len() {
        shares.push(&inputs[start..]);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares.into_iter().map(|s| scope.spawn(move || share(s))).collect();
        handles.into_iter().flat_map(|h| h.join().expect("an entry verification thread panicked")).collect()
    })
}

/// An entry whose canonical form, hash and signature have been checked, or which we
/// signed ourselves. The only way to make one is by verifying or signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEntry(DecodedEntry);

impl VerifiedEntry {
    /// Decodes and verifies bytes read back from our own store under `hash`: the paired
    /// check on the way out.
    pub fn reverify(bytes: &[u8], hash: EntryHash) -> Result<VerifiedEntry, VerifyError> {
        DecodedEntry::decode_expecting(bytes, hash)?.verify()
    }

    pub fn entry(&self) -> &Entry {
        &self.0.entry
    }

    pub fn hash(&self) -> EntryHash {
        self.0.hash
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0.bytes
    }

    pub fn log(&self) -> LogId {
        self.0.entry.log
    }

    pub fn clock(&self) -> Clock {
        self.0.entry.clock
    }

    /// The ops with their ids in the total order.
    pub fn op_ids(&self) -> impl Iterator<Item = (OpId, &Op)> {
        let clock = self.0.entry.clock;
        let hash = self.0.hash;
        self.0.entry.ops.iter().enumerate().map(move |(i, op)| {
            (OpId { time: clock.time, writer: clock.writer, entry: hash, index: i as u32 }, op)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbor;
    use crate::limits::{ENTRY_ENVELOPE_BYTES_MAX, KEY_BYTES_MAX, OP_ENCODED_BYTES_MAX, VALUE_BYTES_MAX};

    /// Lengths on both sides of every CBOR head size, and the field bounds.
    const LENGTHS: [usize; 9] = [1, 23, 24, 255, 256, 1024, 65_535, 65_536, VALUE_BYTES_MAX];

    fn ops_of_every_shape() -> Vec<Op> {
        let mut ops = Vec::new();
        for len in LENGTHS {
            let bytes = vec![7u8; len];
            let short = bytes[..len.min(KEY_BYTES_MAX)].to_vec();
            let props = bytes[..len.min(crate::limits::PROPS_BYTES_MAX)].to_vec();
            let label = "l".repeat(len.min(crate::limits::LABEL_BYTES_MAX));
            ops.push(Op::Append { value: bytes.clone() });
            ops.push(Op::Put { key: short.clone(), value: bytes.clone() });
            ops.push(Op::Delete { key: short.clone() });
            ops.push(Op::Link { src: short.clone(), label: label.clone(), dst: short.clone(), props });
            ops.push(Op::Unlink { src: short.clone(), label, dst: short });
        }
        ops
    }

    /// A few entries with every op shape, head size, parents and refs.
    fn sample_entries() -> &'static [Vec<u8>] {
        static ENTRIES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        ENTRIES.get_or_init(make_sample_entries)
    }

    fn make_sample_entries() -> Vec<Vec<u8>> {
        let key = WriterKey::from_secret([5; 32]);
        let ids = |n: u8| (0..n).map(|i| EntryHash(*blake3::hash(&[i, n]).as_bytes())).collect::<Vec<_>>();
        let mut out = Vec::new();
        for (i, op) in ops_of_every_shape().into_iter().enumerate() {
            let small = i % 5 == 0 && op.encoded_len() < 300;
            let ops = if small { vec![op.clone(), Op::Delete { key: vec![1] }] } else { vec![op.clone()] };
            let (next, refs) = (ids((i % 4) as u8), ids((i % 3) as u8));
            let draft = EntryDraft { log: LogId([i as u8; 32]), time: 1 + (i as u64) * 977, next, refs, ops };
            out.push(draft.sign(&key).expect("within bounds").into_bytes());
        }
        out
    }

    fn same_outcome(input: &[u8]) -> Result<(), String> {
        let (fast, reference) = (DecodedEntry::decode(input), DecodedEntry::decode_via_value(input));
        match (&fast, &reference) {
            (Ok(a), Ok(b)) if a == b => Ok(()),
            (Err(_), Err(_)) => Ok(()),
            _ => {
                Err(format!("decode gave {fast:?}, the reference {reference:?}, for {}", hex::encode(input)))
            }
        }
    }

    /// Every sample entry decodes the same way with both decoders, and so does each of its
    /// prefixes (truncations) and the entry with a byte appended.
    #[test]
    fn in_place_decoder_agrees_on_entries_and_truncations() {
        for bytes in sample_entries() {
            assert!(DecodedEntry::decode(bytes).is_ok());
            same_outcome(bytes).unwrap();
            for cut in (0..bytes.len()).step_by(1 + bytes.len() / 512) {
                same_outcome(&bytes[..cut]).unwrap();
            }
            let mut longer = bytes.clone();
            longer.push(0);
            same_outcome(&longer).unwrap();
        }
    }

    /// Every head of a sample entry rewritten in a longer form, or as an indefinite length:
    /// both decoders refuse it as not canonical or malformed, never accept it.
    #[test]
    fn in_place_decoder_refuses_every_long_form_head() {
        let bytes = &sample_entries()[1];
        for at in 0..bytes.len() {
            let (major, info) = (bytes[at] >> 5, bytes[at] & 0x1f);
            if info < 24 {
                let mut long = bytes[..at].to_vec();
                long.push((major << 5) | 24);
                long.push(info);
                long.extend_from_slice(&bytes[at + 1..]);
                same_outcome(&long).unwrap();
                if major == 4 {
                    let mut indefinite = bytes[..at].to_vec();
                    indefinite.push((major << 5) | 31);
                    indefinite.extend_from_slice(&bytes[at + 1..]);
                    same_outcome(&indefinite).unwrap();
                }
            }
        }
    }

    proptest::proptest! {
        /// Any byte changes, insertions or deletions in a sample entry leave both decoders
        /// agreeing: both refuse, or both accept the same entry.
        #[test]
        fn in_place_decoder_agrees_on_mutations(
            which in 0usize..45,
            edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 0u8..3, proptest::prelude::any::<u8>()), 1..4),
        ) {
            let entries = sample_entries();
            let mut bytes = entries[which % entries.len()].clone();
            for (index, kind, byte) in edits {
                if bytes.is_empty() {
                    break;
                }
                let i = index.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            proptest::prop_assert_eq!(same_outcome(&bytes), Ok(()));
        }

        /// Arbitrary short inputs: both decoders agree (almost all are refused by both).
        #[test]
        fn in_place_decoder_agrees_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            proptest::prop_assert_eq!(same_outcome(&bytes), Ok(()));
        }
    }

    /// `Op::encoded_len` is the exact length of the op's canonical encoding, and no op
    /// within the field bounds encodes longer than `OP_ENCODED_BYTES_MAX`.
    #[test]
    fn op_encoded_len_is_exact() {
        for op in ops_of_every_shape() {
            op.validate().expect("test ops are within bounds");
            assert_eq!(op.encoded_len(), cbor::encode(&op.to_value()).len(), "{}", op.name());
            assert!(op.encoded_len() <= OP_ENCODED_BYTES_MAX);
        }
    }

    /// A signed entry is never longer than its ops' encodings plus
    /// `ENTRY_ENVELOPE_BYTES_MAX`, with the most parents and refs and the largest time:
    /// the bound local writers split entries by is safe.
    #[test]
    fn envelope_bound_covers_every_entry() {
        let key = WriterKey::from_secret([3; 32]);
        let next: Vec<EntryHash> =
            (0..NEXT_MAX).map(|i| EntryHash(*blake3::hash(&i.to_be_bytes()).as_bytes())).collect();
        let refs: Vec<EntryHash> =
            (0..REFS_MAX).map(|i| EntryHash(*blake3::hash(&[i as u8, 1]).as_bytes())).collect();
        for op in ops_of_every_shape() {
            let ops = vec![op.clone(), Op::Append { value: vec![1] }];
            let ops_len: usize = ops.iter().map(Op::encoded_len).sum();
            let entry = EntryDraft {
                log: LogId([9; 32]),
                time: TIME_MAX,
                next: next.clone(),
                refs: refs.clone(),
                ops,
            }
            .sign(&key)
            .expect("within bounds");
            assert!(entry.bytes().len() <= ops_len + ENTRY_ENVELOPE_BYTES_MAX);
        }
    }
}

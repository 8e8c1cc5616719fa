//! The `entry` target: `DecodedEntry::decode` on untrusted bytes.
//!
//! When the bytes decode, they must be the canonical encoding of what was decoded
//! (decoded bytes equal the input, the hash is blake3 of the input), decoding again must
//! give the same value, and the fields must re-sign into an entry that decodes back to
//! the same fields. Every input, accepted or not, gets the same answer from the in-place
//! decoder and from the reference that decodes through a `ciborium::Value` tree and
//! compares the re-encoding.

use plait_core::limits::{NEXT_MAX, OPS_PER_ENTRY_MAX, REFS_MAX};
use plait_core::{DecodedEntry, EntryDraft, VerifiedEntry, verify_batch};

use crate::fuzz_key;

pub fn run(data: &[u8]) {
    let decoded = DecodedEntry::decode(data);
    let reference = DecodedEntry::decode_via_value(data);
    assert_eq!(
        decoded.as_ref().ok(),
        reference.as_ref().ok(),
        "the in-place decoder and the reference disagree: {decoded:?} against {reference:?}"
    );
    let Ok(decoded) = decoded else { return };
    check_decoded(data, &decoded);
}

/// The invariants of an entry that decoded from `data`.
pub fn check_decoded(data: &[u8], decoded: &DecodedEntry) {
    assert_eq!(decoded.bytes(), data, "an accepted entry must be exactly its canonical bytes");
    assert_eq!(decoded.hash().0, *blake3::hash(data).as_bytes(), "the hash is blake3 of the bytes");
    let again = DecodedEntry::decode(data).expect("decoding is deterministic: the second decode failed");
    assert_eq!(&again, decoded, "decoding is deterministic");
    let by_hash = DecodedEntry::decode_expecting(data, decoded.hash()).expect("decode under its own hash");
    assert_eq!(&by_hash, decoded);

    let fields = decoded.entry();
    assert!(!fields.ops.is_empty() && fields.ops.len() <= OPS_PER_ENTRY_MAX);
    assert!(fields.next.len() <= NEXT_MAX && fields.refs.len() <= REFS_MAX);
    assert!(fields.next.windows(2).all(|w| w[0] < w[1]), "next must be strictly ascending");
    assert!(fields.refs.windows(2).all(|w| w[0] < w[1]), "refs must be strictly ascending");
    assert!(fields.clock.time >= 1);
    for op in &fields.ops {
        op.validate().expect("every op of an accepted entry is within bounds");
    }

    // The signature check must answer, one by one and in a batch alike.
    let single = decoded.clone().verify().is_ok();
    let batch = verify_batch(vec![decoded.clone(), decoded.clone()]);
    assert!(batch.iter().all(|r| r.is_ok() == single), "batch and single verification disagree");
    if single {
        VerifiedEntry::reverify(data, decoded.hash()).expect("a verified entry re-verifies");
    }

    // The same fields signed by another key decode back to the same fields.
    let draft = EntryDraft {
        log: fields.log,
        time: fields.clock.time,
        next: fields.next.clone(),
        refs: fields.refs.clone(),
        ops: fields.ops.clone(),
    };
    let key = fuzz_key();
    // Another writer key may make the entry a few bytes longer only if the input was at
    // the size limit; both keys are 32 bytes, so signing must succeed.
    let signed = draft.sign(&key).expect("fields that decoded must sign");
    let back = DecodedEntry::decode(signed.bytes()).expect("a signed entry decodes");
    assert_eq!(back.entry().ops, fields.ops);
    assert_eq!(back.entry().next, fields.next);
    assert_eq!(back.entry().refs, fields.refs);
    assert_eq!(back.entry().log, fields.log);
    assert_eq!(back.entry().clock.time, fields.clock.time);
    assert_eq!(back.entry().clock.writer, key.public());
    assert_eq!(signed.bytes().len(), data.len(), "same fields, same-size keys: same encoded length");
    back.verify().expect("an entry we signed verifies");
}

//! Canonical CBOR: round trips, and every non-canonical or malformed variant refused.

use ciborium::Value;
use plait_core::limits::ENTRY_BYTES_MAX;
use plait_core::{
    DecodeError, DecodedEntry, EntryDraft, LogType, Op, SignedManifest, VerifyError, verify_batch,
};
use proptest::prelude::*;

use crate::support::{key, manifest};

fn sample_entry(ops: Vec<Op>, next: Vec<plait_core::EntryHash>) -> plait_core::VerifiedEntry {
    let m = manifest(LogType::Kv, &[&key(1)]);
    EntryDraft { log: m.log_id(), time: 3, next, refs: vec![], ops }.sign(&key(1)).unwrap()
}

fn put() -> Op {
    Op::Put { key: b"key".to_vec(), value: b"value".to_vec() }
}

fn value_of(bytes: &[u8]) -> Value {
    ciborium::from_reader(bytes).unwrap()
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

/// Rebuilds an encoded entry with one field replaced.
fn with_field(bytes: &[u8], index: usize, field: Value) -> Vec<u8> {
    let Value::Array(mut items) = value_of(bytes) else { panic!() };
    items[index] = field;
    encode(&Value::Array(items))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let bytes = || prop::collection::vec(any::<u8>(), 1..40);
    prop_oneof![
        bytes().prop_map(|value| Op::Append { value }),
        (bytes(), bytes()).prop_map(|(key, value)| Op::Put { key, value }),
        bytes().prop_map(|key| Op::Delete { key }),
        (bytes(), "[a-z]{0,8}", bytes(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(src, label, dst, props)| Op::Link { src, label, dst, props }),
        (bytes(), "[a-z]{0,8}", bytes()).prop_map(|(src, label, dst)| Op::Unlink { src, label, dst }),
    ]
}

proptest! {
    /// Any entry we sign decodes back to the same fields, hash and bytes, and verifies.
    #[test]
    fn entries_round_trip(ops in prop::collection::vec(op_strategy(), 1..8), time in 1u64..1 << 40) {
        let m = manifest(LogType::Kv, &[&key(1)]);
        let signed = EntryDraft { log: m.log_id(), time, next: vec![], refs: vec![], ops }.sign(&key(1)).unwrap();
        let decoded = DecodedEntry::decode(signed.bytes()).unwrap();
        prop_assert_eq!(decoded.entry(), signed.entry());
        prop_assert_eq!(decoded.hash(), signed.hash());
        prop_assert_eq!(decoded.verify().unwrap(), signed);
    }

    /// Changing any single byte of an entry never yields an entry that verifies under
    /// the same hash: it is refused by decoding, by the hash check or by the signature.
    #[test]
    fn any_byte_change_is_caught(index in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let signed = sample_entry(vec![put()], vec![]);
        let mut bytes = signed.bytes().to_vec();
        let i = index.index(bytes.len());
        bytes[i] ^= xor;
        let outcome = DecodedEntry::decode_expecting(&bytes, signed.hash()).and_then(DecodedEntry::verify);
        prop_assert!(outcome.is_err());
    }
}

/// Non-canonical encodings of a valid entry are refused even though they mean the same.
#[test]
fn non_canonical_encodings_are_refused() {
    let bytes = sample_entry(vec![put()], vec![]).into_bytes();
    // The version as a one-byte-argument integer (0x18 0x01) instead of 0x01.
    let mut long_int = vec![bytes[0], 0x18, 0x01];
    long_int.extend_from_slice(&bytes[2..]);
    assert_eq!(DecodedEntry::decode(&long_int), Err(DecodeError::NotCanonical));
    // An indefinite-length array.
    let mut indefinite = vec![0x9f];
    indefinite.extend_from_slice(&bytes[1..]);
    indefinite.push(0xff);
    assert_eq!(DecodedEntry::decode(&indefinite), Err(DecodeError::NotCanonical));
    // Trailing bytes.
    let mut trailing = bytes.clone();
    trailing.push(0x00);
    assert_eq!(DecodedEntry::decode(&trailing), Err(DecodeError::NotCanonical));
}

/// Structurally wrong entries are refused with an error naming the problem.
#[test]
fn malformed_entries_are_refused() {
    let signed = sample_entry(vec![put()], vec![]);
    let bytes = signed.bytes();

    let version = with_field(bytes, 0, Value::Integer(2.into()));
    assert!(matches!(DecodedEntry::decode(&version), Err(DecodeError::Version { version: 2, .. })));

    let Value::Array(mut items) = value_of(bytes) else { panic!() };
    items.push(Value::Integer(0.into()));
    let extra = encode(&Value::Array(items));
    assert!(matches!(DecodedEntry::decode(&extra), Err(DecodeError::Malformed { .. })));

    let map = encode(&Value::Map(vec![(Value::Integer(0.into()), Value::Integer(1.into()))]));
    assert!(matches!(DecodedEntry::decode(&map), Err(DecodeError::Malformed { .. })));

    let tagged = encode(&Value::Tag(24, Box::new(value_of(bytes))));
    assert!(matches!(DecodedEntry::decode(&tagged), Err(DecodeError::Malformed { .. })));

    let (a, b) = (Value::Bytes(vec![1; 32]), Value::Bytes(vec![2; 32]));
    let unsorted = with_field(bytes, 4, Value::Array(vec![b.clone(), a.clone()]));
    assert!(
        matches!(DecodedEntry::decode(&unsorted), Err(DecodeError::Malformed { why, .. }) if why.contains("sorted"))
    );
    let duplicate = with_field(bytes, 4, Value::Array(vec![a.clone(), a]));
    assert!(matches!(DecodedEntry::decode(&duplicate), Err(DecodeError::Malformed { .. })));

    let short_log = with_field(bytes, 1, Value::Bytes(vec![0; 31]));
    assert!(
        matches!(DecodedEntry::decode(&short_log), Err(DecodeError::Malformed { why, .. }) if why.contains("32 bytes"))
    );

    let zero_time = with_field(bytes, 2, Value::Integer(0.into()));
    assert!(matches!(DecodedEntry::decode(&zero_time), Err(DecodeError::Malformed { .. })));

    let no_ops = with_field(bytes, 6, Value::Array(vec![]));
    assert!(matches!(DecodedEntry::decode(&no_ops), Err(DecodeError::Malformed { .. })));

    let bad_op = with_field(bytes, 6, Value::Array(vec![Value::Array(vec![Value::Integer(9.into())])]));
    assert!(
        matches!(DecodedEntry::decode(&bad_op), Err(DecodeError::Malformed { why, .. }) if why.contains("unknown op tag"))
    );

    let empty_key = with_field(
        bytes,
        6,
        Value::Array(vec![Value::Array(vec![
            Value::Integer(1.into()),
            Value::Bytes(vec![]),
            Value::Bytes(vec![1]),
        ])]),
    );
    assert!(
        matches!(DecodedEntry::decode(&empty_key), Err(DecodeError::Malformed { why, .. }) if why.contains("empty"))
    );

    let float = with_field(bytes, 2, Value::Float(3.0));
    assert!(matches!(DecodedEntry::decode(&float), Err(DecodeError::Malformed { .. })));

    assert!(matches!(DecodedEntry::decode(&[]), Err(DecodeError::Cbor(_))));
    assert!(matches!(DecodedEntry::decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Cbor(_))));
}

/// Deep nesting and oversized input are refused before any work proportional to them.
#[test]
fn nesting_and_size_are_bounded() {
    // Ten thousand nested one-item arrays: the entry's first item must be its version,
    // an unsigned integer, so the second byte already refuses it.
    let mut deep = vec![0x81u8; 10_000];
    deep.push(0x00);
    assert!(
        matches!(DecodedEntry::decode(&deep), Err(DecodeError::Malformed { why, .. }) if why.contains("version"))
    );
    let huge = vec![0u8; ENTRY_BYTES_MAX + 1];
    assert!(matches!(DecodedEntry::decode(&huge), Err(DecodeError::TooLarge { .. })));
    // A header claiming a byte string far longer than the input.
    let lying = [0x88, 0x01, 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert!(DecodedEntry::decode(&lying).is_err());
}

/// A tampered op or a foreign signature fails verification; the hash check names a
/// mismatch.
#[test]
fn tampering_and_bad_signatures_are_caught() {
    let signed = sample_entry(vec![put()], vec![]);
    let tampered = with_field(
        signed.bytes(),
        6,
        Value::Array(vec![Value::Array(vec![
            Value::Integer(1.into()),
            Value::Bytes(b"key".to_vec()),
            Value::Bytes(b"evil".to_vec()),
        ])]),
    );
    let decoded = DecodedEntry::decode(&tampered).unwrap();
    assert!(matches!(decoded.clone().verify(), Err(VerifyError::BadSignature(_))));
    assert!(matches!(
        DecodedEntry::decode_expecting(&tampered, signed.hash()),
        Err(VerifyError::HashMismatch { .. })
    ));

    let other = sample_entry(vec![Op::Delete { key: b"k".to_vec() }], vec![]);
    let forged = with_field(signed.bytes(), 7, value_of(other.bytes()).into_array().unwrap()[7].clone());
    assert!(DecodedEntry::decode(&forged).unwrap().verify().is_err());
}

/// Batch verification accepts good batches and pinpoints the bad entry in a bad one.
#[test]
fn batch_verification_pinpoints_bad_entries() {
    let good: Vec<_> = (0..8)
        .map(|i| sample_entry(vec![Op::Put { key: vec![b'k', i], value: b"v".to_vec() }], vec![]))
        .collect();
    let decoded: Vec<_> = good.iter().map(|e| DecodedEntry::decode(e.bytes()).unwrap()).collect();
    assert!(verify_batch(decoded.clone()).iter().all(Result::is_ok));

    let mut bad = decoded;
    let tampered_sig = with_field(good[3].bytes(), 7, Value::Bytes(vec![7; 64]));
    bad[3] = DecodedEntry::decode(&tampered_sig).unwrap();
    let results = verify_batch(bad);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_ok(), i != 3, "entry {i}");
    }
}

/// Decoding and verifying on several threads answers in input order, whatever the
/// number of threads, and a bad entry (bad signature, or bytes that do not decode)
/// fails alone in its place.
#[test]
fn parallel_decode_and_verify_keeps_order_and_places() {
    let good: Vec<_> = (0..13u8)
        .map(|i| {
            let value = vec![b'v'; 1 + 40 * i as usize];
            sample_entry(vec![Op::Put { key: vec![b'k', i], value }], vec![])
        })
        .collect();
    let mut inputs: Vec<Vec<u8>> = good.iter().map(|e| e.bytes().to_vec()).collect();
    inputs[4] = with_field(good[4].bytes(), 7, Value::Bytes(vec![7; 64]));
    inputs[9] = b"not an entry".to_vec();
    for threads in [0, 1, 2, 3, 8, 64] {
        let results = plait_core::decode_and_verify(&inputs, threads);
        assert_eq!(results.len(), inputs.len(), "{threads} threads");
        for (i, r) in results.iter().enumerate() {
            match i {
                4 => assert!(matches!(r, Err(VerifyError::BadSignature(_))), "{threads} threads: {r:?}"),
                9 => assert!(matches!(r, Err(VerifyError::Decode(_))), "{threads} threads: {r:?}"),
                _ => assert_eq!(r.as_ref().unwrap().hash(), good[i].hash(), "{threads} threads, entry {i}"),
            }
        }
    }
    assert!(plait_core::decode_and_verify::<Vec<u8>>(&[], 4).is_empty());
}

/// Manifests round-trip, their signature is checked, and invalid names are refused.
#[test]
fn manifests_verify_and_validate() {
    let m = manifest(LogType::Graph, &[&key(1), &key(2)]);
    let back = SignedManifest::decode_and_verify(m.bytes()).unwrap();
    assert_eq!(back.log_id(), m.log_id());
    let forged = with_field(m.bytes(), 1, Value::Text("renamed".into()));
    assert_eq!(SignedManifest::decode_and_verify(&forged), Err(VerifyError::BadManifestSignature));
    let mut bad_name = m.manifest().clone();
    bad_name.name = "has space".into();
    assert!(bad_name.sign(&key(1)).is_err());
}

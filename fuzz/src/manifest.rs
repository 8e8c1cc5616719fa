//! The `manifest` target: `SignedManifest::decode_and_verify` on untrusted bytes.
//!
//! Random bytes almost never carry a valid signature, so most runs exercise the decoding
//! and the checks that come before the signature; the seeds are valid manifests, whose
//! mutations reach every field. When the bytes are accepted they must be the canonical
//! bytes, the log id must be the manifest's, and the manifest must re-sign and decode
//! back to itself.

use plait_core::SignedManifest;

use crate::fuzz_key;

pub fn run(data: &[u8]) {
    let Ok(signed) = SignedManifest::decode_and_verify(data) else { return };
    assert_eq!(signed.bytes(), data, "an accepted manifest must be exactly its canonical bytes");
    assert_eq!(signed.log_id(), signed.manifest().log_id(), "the log id is the manifest body's");
    let again = SignedManifest::decode_and_verify(data).expect("decoding is deterministic");
    assert_eq!(again, signed);

    let key = fuzz_key();
    let resigned = signed.manifest().clone().sign(&key).expect("a manifest that decoded must sign");
    let back = SignedManifest::decode_and_verify(resigned.bytes()).expect("a signed manifest decodes");
    assert_eq!(back, resigned);
    let mut expected = signed.manifest().clone();
    expected.created_by = key.public();
    assert_eq!(back.manifest(), &expected);
}

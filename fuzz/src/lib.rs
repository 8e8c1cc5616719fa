//! The bodies of Plait's fuzz targets, kept out of the target binaries so that the seed
//! generator can share their input formats and so that each target is one line.
//!
//! Every `run` takes arbitrary bytes and must return normally: a panic (including a
//! failed invariant check below), an abort, a timeout or running out of memory is a bug
//! that libFuzzer reports. The checks go beyond "does not panic": where a decoder
//! accepts the input, the result must round-trip and be deterministic.

pub mod entry;
pub mod manifest;
pub mod proto;
pub mod snapshot;

use plait_core::WriterKey;

/// A fixed signing key, so that the targets can re-sign what they decoded without
/// drawing randomness (runs must be reproducible from the input alone).
pub fn fuzz_key() -> WriterKey {
    WriterKey::from_secret([0x5a; 32])
}

//! Fuzz target `snapshot`: see `plait_fuzz::snapshot` (fuzz/src/snapshot.rs) for the input format and
//! the invariants checked. Run with scripts/fuzz.sh.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plait_fuzz::snapshot::run(data));

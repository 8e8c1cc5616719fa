//! Fuzz target `proto`: see `plait_fuzz::proto` (fuzz/src/proto.rs) for the input format and
//! the invariants checked. Run with scripts/fuzz.sh.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plait_fuzz::proto::run(data));

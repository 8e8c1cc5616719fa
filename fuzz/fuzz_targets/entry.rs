//! Fuzz target `entry`: see `plait_fuzz::entry` (fuzz/src/entry.rs) for the input format and
//! the invariants checked. Run with scripts/fuzz.sh.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plait_fuzz::entry::run(data));

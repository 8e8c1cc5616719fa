//! Fuzz target `manifest`: see `plait_fuzz::manifest` (fuzz/src/manifest.rs) for the input format and
//! the invariants checked. Run with scripts/fuzz.sh.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plait_fuzz::manifest::run(data));

//! Fuzz target `catalog`: the backup catalog decoder, `plait_core::catalog::Catalog::decode`,
//! on arbitrary bytes (catalog.json as read back from a backup destination). It must
//! return an error for anything that is not a catalog, never panic, and decode the same
//! bytes the same way twice.
//!
//! Needs the `plait_core::catalog` module, so it is behind the `catalog` feature
//! (`PLAIT_FUZZ_CATALOG=1 scripts/fuzz.sh`), and not among the default targets.
#![no_main]

use plait_core::catalog::Catalog;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let first = Catalog::decode(data).is_ok();
    let second = Catalog::decode(data).is_ok();
    assert_eq!(first, second, "decoding the same catalog twice disagrees");
});

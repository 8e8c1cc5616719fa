//! Every bound on what an entry, an operation, a manifest or a backup catalog may hold.
//!
//! These are part of the format: a replica refuses anything beyond them, whoever signed
//! it, so that one writer cannot make every replica store or fold something unbounded.

/// Largest canonical encoding of one entry, signature included.
pub const ENTRY_BYTES_MAX: usize = 1024 * 1024;
/// Most operations one entry may carry.
pub const OPS_PER_ENTRY_MAX: usize = 4096;
/// Most parents (`next`) one entry may name. A writer with more heads merges the rest
/// in a later entry.
pub const NEXT_MAX: usize = 256;
/// Most skip references (`refs`) one entry may name.
pub const REFS_MAX: usize = 64;
/// Largest kv key.
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest feed or kv value.
pub const VALUE_BYTES_MAX: usize = 512 * 1024;
/// Largest graph node id (src or dst).
pub const NODE_BYTES_MAX: usize = 1024;
/// Largest graph edge label.
pub const LABEL_BYTES_MAX: usize = 256;
/// Largest graph edge property blob.
pub const PROPS_BYTES_MAX: usize = 64 * 1024;
/// Longest log name, in bytes.
pub const LOG_NAME_BYTES_MAX: usize = 128;
/// Most keys a manifest's ACL may name.
pub const WRITERS_MAX: usize = 256;
/// Most option pairs a manifest may carry.
pub const OPTIONS_MAX: usize = 16;
/// Largest option key or value, in bytes.
pub const OPTION_BYTES_MAX: usize = 256;
/// Largest canonical encoding of a signed manifest. Manifests travel in every peer's
/// Hello, so they are kept small: the bounds above fit in well under this.
pub const MANIFEST_BYTES_MAX: usize = 32 * 1024;
/// Deepest CBOR nesting any Plait structure uses (entry, ops, op, and one spare).
pub const CBOR_DEPTH_MAX: usize = 6;
/// Largest backup catalog (`catalog.json`) a replica reads or writes. It is read whole,
/// so it is bounded; `CATALOG_ENTRIES_MAX` of the largest entries fit well under it.
pub const CATALOG_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Most snapshot objects one backup catalog may list. Retention (`retain_full`) keeps a
/// catalog below it; without retention a destination fills up after this many objects.
pub const CATALOG_ENTRIES_MAX: usize = 100_000;
/// Longest object key a catalog may name, in bytes.
pub const CATALOG_KEY_BYTES_MAX: usize = 1024;

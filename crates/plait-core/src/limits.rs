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

/// The longest canonical encoding of one op within the field bounds: a put of the largest
/// key and value, or a link with the largest nodes, label and props, whichever is longer.
pub const OP_ENCODED_BYTES_MAX: usize = {
    let put = 2 + crate::cbor::string_len(KEY_BYTES_MAX) + crate::cbor::string_len(VALUE_BYTES_MAX);
    let link = 2
        + crate::cbor::string_len(NODE_BYTES_MAX)
        + crate::cbor::string_len(LABEL_BYTES_MAX)
        + crate::cbor::string_len(NODE_BYTES_MAX)
        + crate::cbor::string_len(PROPS_BYTES_MAX);
    if put > link { put } else { link }
};

/// Highest Lamport time an entry may carry. Times stay far from `u64::MAX`, so that one
/// past any stored time never overflows.
pub const TIME_MAX: u64 = 1 << 62;
/// How far an entry's time may run ahead of the highest time its log already holds when
/// it is stored. An honest writer's time is one past its parents', and every parent is
/// stored first, so an honest entry is at most one ahead (or a little more when it named
/// only `NEXT_MAX` of its heads). The bound keeps one writer from pushing a log's clock to
/// `TIME_MAX` and so stopping every later write to it: that would take `2^30` entries.
pub const CLOCK_LEAD_MAX: u64 = 1 << 32;

/// The most bytes an entry takes besides its ops' own encodings: the array header, the
/// version, log id, the largest time, the writer, `NEXT_MAX` parents, `REFS_MAX` refs,
/// the ops array's header and the signature. A writer whose ops' encodings add up to at
/// most `ENTRY_BYTES_MAX - ENTRY_ENVELOPE_BYTES_MAX` always makes an entry within bounds.
pub const ENTRY_ENVELOPE_BYTES_MAX: usize = 1 // array header
    + 1 // version
    + 34 // log id
    + 9 // time
    + 34 // writer
    + 3 + NEXT_MAX * 34
    + 2 + REFS_MAX * 34
    + 3 // ops array header (up to OPS_PER_ENTRY_MAX items)
    + 66; // signature

// The bounds fit together: one op of the largest shape always fits in an entry, so a
// writer can split any sequence of valid ops into valid entries; the array headers
// counted above are as long as the counts need.
const _: () = assert!(ENTRY_ENVELOPE_BYTES_MAX + OP_ENCODED_BYTES_MAX <= ENTRY_BYTES_MAX);
const _: () = assert!(NEXT_MAX <= 0xffff && OPS_PER_ENTRY_MAX <= 0xffff && REFS_MAX <= 0xff);
const _: () = assert!(VALUE_BYTES_MAX + KEY_BYTES_MAX < ENTRY_BYTES_MAX);
const _: () = assert!(CLOCK_LEAD_MAX < TIME_MAX);

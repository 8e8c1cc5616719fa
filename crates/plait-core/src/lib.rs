//! The pure core of Plait: entries, clocks, hashing, signatures, the write ACL, operations
//! and the folding of operations into views.
//!
//! Nothing here does I/O, reads a clock or draws randomness on its own: keys are generated
//! from an rng the caller passes in, and time is the Lamport clock carried by entries.

pub mod catalog;
mod cbor;
mod digest;
mod entry;
mod error;
mod ids;
mod keys;
pub mod limits;
mod manifest;
mod memory;
mod op;
mod order;
mod snapshot;
mod view;

pub use digest::SetDigest;
pub use entry::{DecodedEntry, Entry, EntryDraft, VerifiedEntry, decode_and_verify, verify_batch};
pub use error::{DecodeError, VerifyError};
pub use ids::{EntryHash, IdParseError, LogId, PublicKey, Signature};
pub use keys::{WriterKey, verify_statement};
pub use manifest::{LogType, Manifest, SignedManifest, Writers, valid_log_name};
pub use memory::{IngestOutcome, MemoryLog};
pub use op::{Op, OpError};
pub use order::{Clock, OpId};
pub use snapshot::{
    Checkpoint, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotError, SnapshotHeader, SnapshotItem,
    SnapshotReader, SnapshotWriter, StateRoot,
};
pub use view::{EdgeKey, EdgeValue, LogView, Register};

//! Checkpoints, state roots and the snapshot stream format. Pure: no I/O.
//!
//! A snapshot is a byte stream: the magic `PLAITSNP`, a format version (u16 big-endian),
//! then frames `[kind: u8][length: u32 BE][payload]`:
//!
//! | kind | payload |
//! |---|---|
//! | 1 header | canonical CBOR `[manifest bytes, checkpoint, base checkpoint or null]` |
//! | 2 entry | seq (u64 BE, the source's numbering) ‖ canonical entry bytes |
//! | 3 trailer | entry count (u64 BE) ‖ blake3 of every byte before the trailer frame |
//!
//! Exactly one header first and one trailer last. A reader verifies the trailer before a
//! caller may treat any entry as part of a valid snapshot; the entries themselves are
//! verified like any other entry (hash, signature, ACL, parents).

use ciborium::Value;

use crate::cbor::{self, bytes_value, uint_value};
use crate::error::DecodeError;
use crate::ids::{EntryHash, LogId};
use crate::limits::{ENTRY_BYTES_MAX, MANIFEST_BYTES_MAX};

/// The first bytes of every snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"PLAITSNP";
/// The snapshot format version this code writes and reads.
pub const SNAPSHOT_VERSION: u16 = 1;
const CHECKPOINT_VERSION: u64 = 1;
/// Heads one checkpoint may name.
pub(crate) const CHECKPOINT_HEADS_MAX: usize = 4096;
/// The largest frame payload: an entry plus its seq.
pub(crate) const FRAME_BYTES_MAX: usize = ENTRY_BYTES_MAX + 8;
const FRAME_HEADER: usize = 5;

const KIND_HEADER: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_TRAILER: u8 = 3;

/// A consistent cut of one log on one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub log: LogId,
    /// The epoch of the replica that took it; its seq numbers mean something only there.
    pub epoch: [u8; 16],
    pub seq: u64,
    pub heads: Vec<EntryHash>,
    pub state_root: [u8; 32],
    pub n_entries: u64,
    pub n_ops: u64,
}

impl Checkpoint {
    pub(crate) fn to_value(&self) -> Value {
        Value::Array(vec![
            uint_value(CHECKPOINT_VERSION),
            bytes_value(&self.log.0),
            bytes_value(&self.epoch),
            uint_value(self.seq),
            Value::Array(self.heads.iter().map(|h| bytes_value(&h.0)).collect()),
            bytes_value(&self.state_root),
            uint_value(self.n_entries),
            uint_value(self.n_ops),
        ])
    }

    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&self.to_value())
    }

    pub(crate) fn from_value(value: &Value) -> Result<Checkpoint, DecodeError> {
        const WHAT: &str = "checkpoint";
        let mut f = cbor::Fields::new(WHAT, value, 8)?;
        let version = f.uint("version")?;
        if version != CHECKPOINT_VERSION {
            return Err(DecodeError::Version { what: WHAT, version });
        }
        let log = LogId(f.fixed("log")?);
        let epoch = f.fixed("epoch")?;
        let seq = f.uint("seq")?;
        let heads = cbor::sorted_ids(WHAT, "heads", f.array("heads", CHECKPOINT_HEADS_MAX)?, EntryHash)?;
        let state_root = f.fixed("state_root")?;
        let n_entries = f.uint("n_entries")?;
        let n_ops = f.uint("n_ops")?;
        Ok(Checkpoint { log, epoch, seq, heads, state_root, n_entries, n_ops })
    }

    /// Decodes canonical bytes.
    pub fn decode(input: &[u8]) -> Result<Checkpoint, DecodeError> {
        let value = cbor::decode(input)?;
        let checkpoint = Checkpoint::from_value(&value)?;
        cbor::ensure_canonical(input, &checkpoint.encode())?;
        Ok(checkpoint)
    }
}

/// A Merkle root over a view's rows in key order, built in one pass with memory
/// logarithmic in the number of rows. Leaves are `blake3("plait/state/leaf" ‖ key length
/// (u32 BE) ‖ key ‖ value)`; inner nodes `blake3("plait/state/node" ‖ left ‖ right)`; an
/// odd node at the end of a level is promoted unchanged. The empty view's root is
/// `blake3("plait/state/empty")`.
#[derive(Debug, Default)]
pub struct StateRoot {
    /// `levels[i]`: a pending left node of height `i`, if any.
    levels: Vec<Option<[u8; 32]>>,
    rows: u64,
}

fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"plait/state/node");
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

impl StateRoot {
    pub fn new() -> StateRoot {
        StateRoot::default()
    }

    /// Adds the next row; rows must come in key order.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        let mut h = blake3::Hasher::new();
        h.update(b"plait/state/leaf");
        h.update(&(key.len() as u32).to_be_bytes());
        h.update(key);
        h.update(value);
        let mut carry = *h.finalize().as_bytes();
        self.rows += 1;
        for level in self.levels.iter_mut() {
            match level.take() {
                Some(left) => carry = node(&left, &carry),
                None => {
                    *level = Some(carry);
                    return;
                }
            }
        }
        self.levels.push(Some(carry));
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The root: pending nodes are folded from the lowest level up, so a tree whose size
    /// is not a power of two promotes its rightmost subtree.
    pub fn finish(self) -> [u8; 32] {
        let mut acc: Option<[u8; 32]> = None;
        for left in self.levels.into_iter().flatten() {
            acc = Some(match acc {
                None => left,
                Some(right) => node(&left, &right),
            });
        }
        acc.unwrap_or_else(|| *blake3::hash(b"plait/state/empty").as_bytes())
    }
}

/// The opening of a snapshot stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The log's signed manifest.
    pub manifest: Vec<u8>,
    /// The cut this snapshot brings a reader to.
    pub checkpoint: Checkpoint,
    /// For a delta: the cut it starts from (entries with seq after `base.seq`).
    pub base: Option<Checkpoint>,
}

/// Builds a snapshot stream piece by piece, hashing as it goes.
#[derive(Debug)]
pub struct SnapshotWriter {
    hasher: blake3::Hasher,
    entries: u64,
}

impl SnapshotWriter {
    /// Starts a stream: returns the writer and the bytes of the magic, version and header.
    pub fn start(header: &SnapshotHeader) -> (SnapshotWriter, Vec<u8>) {
        let mut out = Vec::with_capacity(header.manifest.len() + 512);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        let payload = cbor::encode(&Value::Array(vec![
            bytes_value(&header.manifest),
            header.checkpoint.to_value(),
            header.base.as_ref().map_or(Value::Null, Checkpoint::to_value),
        ]));
        frame(&mut out, KIND_HEADER, &[&payload]);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&out);
        (SnapshotWriter { hasher, entries: 0 }, out)
    }

    /// The bytes of one entry frame.
    pub fn entry(&mut self, seq: u64, entry: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entry.len() + 13);
        frame(&mut out, KIND_ENTRY, &[&seq.to_be_bytes(), entry]);
        self.hasher.update(&out);
        self.entries += 1;
        out
    }

    /// The bytes of the trailer, which end the stream.
    pub fn finish(self) -> Vec<u8> {
        let digest = self.hasher.finalize();
        let mut out = Vec::with_capacity(45);
        frame(&mut out, KIND_TRAILER, &[&self.entries.to_be_bytes(), digest.as_bytes()]);
        out
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.push(kind);
    // Frames are bounded by FRAME_BYTES_MAX, far below u32::MAX.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// What a reader found next in a snapshot stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotItem {
    Header(SnapshotHeader),
    Entry {
        seq: u64,
        bytes: Vec<u8>,
    },
    /// The trailer matched: the stream is complete and unaltered.
    End {
        entries: u64,
    },
}

/// Why a snapshot stream was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a Plait snapshot (bad magic bytes)")]
    Magic,
    #[error("snapshot format version {0} is not supported (this build reads version {SNAPSHOT_VERSION})")]
    Version(u16),
    #[error("the snapshot is truncated: it ends before its trailer")]
    Truncated,
    #[error("the snapshot is corrupt: {0}")]
    Corrupt(String),
    #[error("the snapshot's digest does not match its contents: it was altered or damaged")]
    Digest,
}

/// Reads a snapshot stream incrementally: feed it bytes as they arrive, take items out.
/// Nothing after the trailer is accepted, and `finish` fails unless a matching trailer
/// was read.
#[derive(Debug, Default)]
pub struct SnapshotReader {
    buffer: Vec<u8>,
    hasher: blake3::Hasher,
    started: bool,
    header_seen: bool,
    entries: u64,
    ended: bool,
}

impl SnapshotReader {
    pub fn new() -> SnapshotReader {
        SnapshotReader::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete item, `None` if more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<SnapshotItem>, SnapshotError> {
        if self.ended {
            return if self.buffer.is_empty() {
                Ok(None)
            } else {
                Err(SnapshotError::Corrupt("bytes after the trailer".into()))
            };
        }
        if !self.started {
            if self.buffer.len() < 10 {
                if !SNAPSHOT_MAGIC.starts_with(&self.buffer[..self.buffer.len().min(8)]) {
                    return Err(SnapshotError::Magic);
                }
                return Ok(None);
            }
            if &self.buffer[..8] != SNAPSHOT_MAGIC {
                return Err(SnapshotError::Magic);
            }
            let version = u16::from_be_bytes([self.buffer[8], self.buffer[9]]);
            if version != SNAPSHOT_VERSION {
                return Err(SnapshotError::Version(version));
            }
            self.hasher.update(&self.buffer[..10]);
            self.buffer.drain(..10);
            self.started = true;
        }
        if self.buffer.len() < FRAME_HEADER {
            return Ok(None);
        }
        let kind = self.buffer[0];
        let len =
            u32::from_be_bytes([self.buffer[1], self.buffer[2], self.buffer[3], self.buffer[4]]) as usize;
        let max = match kind {
            KIND_HEADER => MANIFEST_BYTES_MAX + 64 * 1024 + CHECKPOINT_HEADS_MAX * 2 * 34,
            KIND_ENTRY => FRAME_BYTES_MAX,
            KIND_TRAILER => 40,
            other => return Err(SnapshotError::Corrupt(format!("unknown frame kind {other}"))),
        };
        if len > max {
            return Err(SnapshotError::Corrupt(format!("a frame of {len} bytes is over the limit of {max}")));
        }
        if self.buffer.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buffer.drain(..FRAME_HEADER + len).collect();
        let payload = &frame[FRAME_HEADER..];
        match kind {
            KIND_HEADER => {
                if self.header_seen {
                    return Err(SnapshotError::Corrupt("a second header".into()));
                }
                self.header_seen = true;
                self.hasher.update(&frame);
                Ok(Some(SnapshotItem::Header(decode_header(payload)?)))
            }
            KIND_ENTRY => {
                if !self.header_seen {
                    return Err(SnapshotError::Corrupt("an entry before the header".into()));
                }
                if payload.len() < 8 {
                    return Err(SnapshotError::Corrupt("an entry frame without a seq".into()));
                }
                self.hasher.update(&frame);
                self.entries += 1;
                let seq = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                Ok(Some(SnapshotItem::Entry { seq, bytes: payload[8..].to_vec() }))
            }
            _ => {
                if !self.header_seen || payload.len() != 40 {
                    return Err(SnapshotError::Corrupt("a malformed trailer".into()));
                }
                let count = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                let digest = std::mem::take(&mut self.hasher).finalize();
                if count != self.entries || payload[8..] != *digest.as_bytes() {
                    return Err(SnapshotError::Digest);
                }
                self.ended = true;
                Ok(Some(SnapshotItem::End { entries: count }))
            }
        }
    }

    /// Checks that the stream ended with a valid trailer and nothing after it.
    pub fn finish(&self) -> Result<(), SnapshotError> {
        if !self.ended {
            return Err(SnapshotError::Truncated);
        }
        if !self.buffer.is_empty() {
            return Err(SnapshotError::Corrupt("bytes after the trailer".into()));
        }
        Ok(())
    }
}

fn decode_header(payload: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
    let corrupt = |e: DecodeError| SnapshotError::Corrupt(format!("header: {e}"));
    let value = cbor::decode(payload).map_err(corrupt)?;
    let mut f = cbor::Fields::new("snapshot header", &value, 3).map_err(corrupt)?;
    let manifest = f.bytes("manifest", MANIFEST_BYTES_MAX).map_err(corrupt)?.to_vec();
    let checkpoint = Checkpoint::from_value(f.next()).map_err(corrupt)?;
    let base = match f.next() {
        Value::Null => None,
        other => Some(Checkpoint::from_value(other).map_err(corrupt)?),
    };
    let header = SnapshotHeader { manifest, checkpoint, base };
    let (_, canonical) = SnapshotWriter::start(&header);
    // The canonical header frame starts after the 10 bytes of magic and version.
    if canonical[10 + FRAME_HEADER..] != *payload {
        return Err(SnapshotError::Corrupt("the header is not canonical".into()));
    }
    Ok(header)
}

//! An in-memory log: the reference model of ingest (heads, pending, views) that property
//! tests and the store's tests compare against.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::entry::VerifiedEntry;
use crate::ids::{EntryHash, LogId};
use crate::manifest::SignedManifest;
use crate::view::LogView;

/// What ingesting one entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored, together with every pending entry that became complete (in apply order).
    Stored(Vec<EntryHash>),
    Duplicate,
    /// Waiting for parents.
    Pending,
    Rejected(String),
}

/// A log held in memory.
#[derive(Clone, Debug)]
pub struct MemoryLog {
    manifest: SignedManifest,
    entries: HashMap<EntryHash, VerifiedEntry>,
    order: Vec<EntryHash>,
    heads: BTreeSet<EntryHash>,
    pending: HashMap<EntryHash, VerifiedEntry>,
    view: LogView,
}

impl MemoryLog {
    pub fn new(manifest: SignedManifest) -> MemoryLog {
        let view = LogView::new(manifest.manifest().log_type);
        MemoryLog {
            manifest,
            entries: HashMap::new(),
            order: Vec::new(),
            heads: BTreeSet::new(),
            pending: HashMap::new(),
            view,
        }
    }

    pub fn log_id(&self) -> LogId {
        self.manifest.log_id()
    }

    /// Checks everything but parents: log, ACL, op types.
    fn admissible(&self, entry: &VerifiedEntry) -> Result<(), String> {
        let manifest = self.manifest.manifest();
        if entry.log() != self.log_id() {
            return Err(format!("entry belongs to log {}, not {}", entry.log(), self.log_id()));
        }
        if !manifest.writers.allows(&entry.clock().writer) {
            return Err(format!("writer {} is not on the log's ACL", entry.clock().writer));
        }
        for op in &entry.entry().ops {
            op.check_type(manifest.log_type).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn ingest(&mut self, entry: VerifiedEntry) -> IngestOutcome {
        if self.entries.contains_key(&entry.hash()) {
            return IngestOutcome::Duplicate;
        }
        if let Err(why) = self.admissible(&entry) {
            return IngestOutcome::Rejected(why);
        }
        if entry.entry().next.iter().any(|p| !self.entries.contains_key(p)) {
            self.pending.insert(entry.hash(), entry);
            return IngestOutcome::Pending;
        }
        let mut applied = Vec::new();
        let mut ready = vec![entry];
        while let Some(entry) = ready.pop() {
            if self.entries.contains_key(&entry.hash()) {
                continue;
            }
            let parents_time =
                entry.entry().next.iter().map(|p| self.entries[p].clock().time).max().unwrap_or(0);
            if entry.clock().time <= parents_time {
                // A child whose clock does not advance past its parents is invalid; it is
                // dropped (from pending too) and never stored.
                if applied.is_empty() {
                    return IngestOutcome::Rejected("clock time must exceed every parent's".into());
                }
                continue;
            }
            let hash = entry.hash();
            for parent in &entry.entry().next {
                self.heads.remove(parent);
            }
            self.heads.insert(hash);
            self.view.apply(&entry);
            self.entries.insert(hash, entry);
            self.order.push(hash);
            applied.push(hash);
            let complete: Vec<EntryHash> = self
                .pending
                .iter()
                .filter(|(_, e)| e.entry().next.iter().all(|p| self.entries.contains_key(p)))
                .map(|(h, _)| *h)
                .collect();
            for h in complete {
                if let Some(e) = self.pending.remove(&h) {
                    ready.push(e);
                }
            }
        }
        IngestOutcome::Stored(applied)
    }

    pub fn heads(&self) -> &BTreeSet<EntryHash> {
        &self.heads
    }

    pub fn view(&self) -> &LogView {
        &self.view
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Entries in arrival (seq) order: every entry after its parents.
    pub fn in_seq_order(&self) -> impl Iterator<Item = &VerifiedEntry> {
        self.order.iter().map(|h| &self.entries[h])
    }

    /// The greatest clock time among the heads (0 for an empty log).
    pub fn max_time(&self) -> u64 {
        self.heads.iter().map(|h| self.entries[h].clock().time).max().unwrap_or(0)
    }

    /// The entry for `hash`, if stored.
    pub fn get(&self, hash: &EntryHash) -> Option<&VerifiedEntry> {
        self.entries.get(hash)
    }

    /// Entries by seq, from 1.
    pub fn seq_index(&self) -> BTreeMap<u64, EntryHash> {
        self.order.iter().enumerate().map(|(i, h)| (i as u64 + 1, *h)).collect()
    }
}

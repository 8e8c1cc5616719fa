//! History: reads of a log as it was at a point in its past, and every version of a key
//! or edge.
//!
//! A point in the past is a seq of this replica: the view of exactly the entries stored
//! at that seq or before, folded in total order, as if the later entries had never
//! arrived. A recorded checkpoint names one (the seq at which this replica held exactly
//! the checkpoint's entries). The view at seq `s` of a key or edge is its greatest op
//! whose entry has a seq of at most `s`. The view row holds the greatest op of all; the
//! `versions` keyspace holds every other op, by key or edge in total order, with the seq
//! of its entry. So a read takes the view row when its entry's seq is at most `s`, and
//! otherwise the greatest version at or before `s`. Feed reads walk the feed in total
//! order and leave out items of entries stored after `s`.

use fjall::Slice;
use plait_core::{DecodedEntry, EntryHash, LogId, OpId, PublicKey};

use crate::error::{StoreError, StoreResult};
use crate::keys;
use crate::reads::{
    Direction, EdgePage, FeedPage, FeedRow, KvRow, PageLimit, RANGE_ROWS_MAX, ROW_OVERHEAD_BYTES,
};
use crate::store::Store;

/// Entries a writer-range read decodes at most before it returns a page.
const WRITER_ENTRIES_MAX: usize = 10_000;

/// A point in a log's past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// A seq of this replica (0: before the first entry).
    Seq(u64),
    /// A checkpoint recorded on this replica, by its state root: taken here, or restored
    /// here from a snapshot or backup.
    Checkpoint([u8; 32]),
}

/// One version of a key or edge: the op that wrote it, the seq of its entry here, and
/// the value (kv) or properties (graph) it set, `None` for a delete or unlink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub seq: u64,
    pub id: OpId,
    pub value: Option<Vec<u8>>,
}

/// A page of versions; `next_after` is set when more may follow (pass it as `after`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionPage {
    pub versions: Vec<Version>,
    pub next_after: Option<Vec<u8>>,
}

/// An entry by one writer: where it is stored here and what it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterEntry {
    pub seq: u64,
    pub hash: EntryHash,
    pub time: u64,
    pub ops: u32,
}

/// A page of a writer's entries; `next_seq` is set when more of the range is left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterPage {
    pub entries: Vec<WriterEntry>,
    pub next_seq: Option<u64>,
}

fn corrupt() -> StoreError {
    StoreError::Corrupt("unreadable versions row".into())
}

/// Seqs of entries by hash, read once per entry (consecutive rows often share one), and
/// the version rows a read walked, which count against its bound.
struct Seqs {
    last: Option<(EntryHash, u64)>,
    walked: usize,
    /// Versions one key or edge may walk back (see [`VERSIONS_WALK_MAX`]).
    walk_max: usize,
}

impl Default for Seqs {
    fn default() -> Seqs {
        Seqs { last: None, walked: 0, walk_max: VERSIONS_WALK_MAX }
    }
}

/// Versions of one key or edge a read as of a point walks back from the newest at most,
/// looking for the last one stored by then: a key overwritten more often than this since
/// the point is refused (`ResourceExhausted`), so one read's time stays bounded; History
/// pages through any number.
pub(crate) const VERSIONS_WALK_MAX: usize = RANGE_ROWS_MAX;

impl Seqs {
    fn of(&mut self, store: &Store, entry: &EntryHash) -> StoreResult<u64> {
        if let Some((hash, seq)) = self.last
            && hash == *entry
        {
            return Ok(seq);
        }
        let location = store.shared.ks.by_hash.get(entry.0)?;
        let seq = location
            .as_deref()
            .and_then(keys::parse_location)
            .ok_or_else(|| StoreError::Corrupt(format!("op of entry {entry} with no by_hash row")))?
            .seq;
        self.last = Some((*entry, seq));
        Ok(seq)
    }
}

/// What a key or edge held at some seq: the op and its payload, `None` if nothing yet.
type At = Option<(OpId, Option<Vec<u8>>)>;

impl Store {
    /// The seq a point in `log`'s past names here. A seq past the log's end, or a
    /// checkpoint this replica has not recorded, is refused and the error says what is
    /// valid.
    pub fn resolve_as_of(&self, log: &LogId, as_of: AsOf) -> StoreResult<u64> {
        let summary =
            self.log(log).ok_or_else(|| StoreError::NotFound(format!("no log {log} on this replica")))?;
        match as_of {
            AsOf::Seq(seq) if seq <= summary.seq => Ok(seq),
            AsOf::Seq(seq) => Err(StoreError::Invalid(format!(
                "as_of seq {seq} is past the end of log {}: this replica holds seqs 0 to {}",
                summary.manifest.manifest().name,
                summary.seq
            ))),
            AsOf::Checkpoint(root) => {
                let recorded = self.checkpoints(log)?;
                let epoch = self.epoch();
                if let Some(c) = recorded.iter().rev().find(|c| c.state_root == root && c.epoch == epoch) {
                    return Ok(c.seq);
                }
                let known: Vec<String> = recorded
                    .iter()
                    .rev()
                    .filter(|c| c.epoch == epoch)
                    .take(5)
                    .map(|c| format!("{} (seq {})", hex::encode(c.state_root), c.seq))
                    .collect();
                Err(StoreError::NotFound(format!(
                    "no checkpoint with state root {} of log {} on this replica; {}",
                    hex::encode(root),
                    summary.manifest.manifest().name,
                    if known.is_empty() {
                        "it has recorded none (use a seq, or take a checkpoint)".to_owned()
                    } else {
                        format!("the newest recorded: {}", known.join(", "))
                    }
                )))
            }
        }
    }

    /// The value of a kv key at `seq` (resolved by [`Store::resolve_as_of`]).
    pub fn get_kv_as_of(&self, log: &LogId, key: &[u8], seq: u64) -> StoreResult<Option<KvRow>> {
        self.get_kv_as_of_walking(log, key, seq, VERSIONS_WALK_MAX)
    }

    /// [`Store::get_kv_as_of`], walking at most `walk_max` versions back.
    fn get_kv_as_of_walking(
        &self,
        log: &LogId,
        key: &[u8],
        seq: u64,
        walk_max: usize,
    ) -> StoreResult<Option<KvRow>> {
        let Some(no) = self.shared.log_no(log) else { return Ok(None) };
        let Some(current) = self.shared.ks.kv.get(keys::kv_key(no, key))? else { return Ok(None) };
        let mut seqs = Seqs { walk_max, ..Seqs::default() };
        let at = self.register_at(&current, seq, &mut seqs, keys::kv_version_prefix(no, key, true))?;
        Ok(at.and_then(|(id, value)| value.map(|value| KvRow { key: key.to_vec(), value, id })))
    }

    /// A register's op at `seq`: the view row's when its entry is stored by then, else the
    /// greatest version under `versions` (the key's or edge's rows) stored by then.
    fn register_at(&self, current: &[u8], seq: u64, seqs: &mut Seqs, versions: Vec<u8>) -> StoreResult<At> {
        let register =
            keys::parse_register(current).ok_or_else(|| StoreError::Corrupt("unreadable view row".into()))?;
        if seqs.of(self, &register.id.entry)? <= seq {
            return Ok(Some((register.id, register.payload.map(<[u8]>::to_vec))));
        }
        for (walked, row) in self.shared.ks.versions.prefix(versions).rev().enumerate() {
            if walked >= seqs.walk_max {
                return Err(StoreError::ResourceExhausted(format!(
                    "more than {} versions of one key or edge were written after seq {seq}; a read as of \
                     that point would walk them all: read a later point, or page through History",
                    seqs.walk_max
                )));
            }
            seqs.walked += 1;
            let (k, v) = row.into_inner()?;
            let (at, payload) = keys::parse_version_value(&v).ok_or_else(corrupt)?;
            if at <= seq {
                let (_, _, id) = keys::parse_version_key(&k).ok_or_else(corrupt)?;
                return Ok(Some((id, payload.map(<[u8]>::to_vec))));
            }
        }
        Ok(None)
    }

    /// [`Store::scan_kv`] at `seq`: live pairs in key order within `[start, end)` and
    /// under `prefix`, as the log was then. Returns the key to continue from.
    pub fn scan_kv_as_of(
        &self,
        log: &LogId,
        prefix: &[u8],
        start: &[u8],
        end: &[u8],
        page: PageLimit,
        seq: u64,
    ) -> StoreResult<(Vec<KvRow>, Option<Vec<u8>>)> {
        let Some(no) = self.shared.log_no(log) else { return Ok((Vec::new(), None)) };
        let from = keys::kv_key(no, start.max(prefix));
        let mut to = keys::prefix_end(&keys::kv_key(no, prefix));
        if !end.is_empty() {
            let end_full = keys::kv_key(no, end);
            to = Some(match to {
                Some(t) if t < end_full => t,
                _ => end_full,
            });
        }
        let rows: Box<dyn Iterator<Item = fjall::Guard>> = match to {
            Some(to) => Box::new(self.shared.ks.kv.range(from..to)),
            None => Box::new(self.shared.ks.kv.range(from..)),
        };
        let mut seqs = Seqs::default();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (examined, row) in rows.enumerate() {
            let (k, v) = row.into_inner()?;
            let key = k[keys::NO..].to_vec();
            // View rows and the versions walked behind them; a page stops between keys.
            if examined + seqs.walked >= RANGE_ROWS_MAX {
                return Ok((out, Some(key)));
            }
            let Some((id, Some(value))) =
                self.register_at(&v, seq, &mut seqs, keys::kv_version_prefix(no, &key, true))?
            else {
                continue;
            };
            let size = key.len() + value.len() + ROW_OVERHEAD_BYTES;
            if page.full(out.len(), bytes, size) {
                return Ok((out, Some(key)));
            }
            bytes += size;
            out.push(KvRow { key, value, id });
        }
        Ok((out, None))
    }

    /// [`Store::edges`] at `seq`, with the same continuations (`next_after` of an earlier
    /// page of the same node, direction, label and point in the past).
    #[allow(clippy::too_many_arguments)]
    pub fn edges_as_of(
        &self,
        log: &LogId,
        node: &[u8],
        direction: Direction,
        label: Option<&str>,
        after: Option<&[u8]>,
        page: PageLimit,
        seq: u64,
    ) -> StoreResult<EdgePage> {
        let Some(no) = self.shared.log_no(log) else { return Ok(EdgePage::default()) };
        let kind = match direction {
            Direction::Out => keys::VERSION_OUT,
            Direction::In => keys::VERSION_IN,
        };
        let mut seqs = Seqs::default();
        let mut then = |this: &[u8], label: &str, other: &[u8], v: &[u8]| {
            let before = seqs.walked;
            let at =
                self.register_at(v, seq, &mut seqs, keys::edge_version_group(no, kind, this, label, other))?;
            Ok((at, seqs.walked - before))
        };
        self.edge_page(log, node, direction, label, after, page, &mut then)
    }

    /// [`Store::read_feed`] at `seq`: the items of entries stored at or before it. A
    /// forward page that stops having examined its bound of rows says where to go on in
    /// `next_after` (it may hold no item).
    pub fn read_feed_as_of(
        &self,
        log: &LogId,
        after: Option<&[u8]>,
        page: PageLimit,
        tail: bool,
        seq: u64,
    ) -> StoreResult<FeedPage> {
        let Some(no) = self.shared.log_no(log) else { return Ok(FeedPage::default()) };
        let rows = self.feed_rows(no, after, tail)?;
        let mut seqs = Seqs::default();
        let mut out = FeedPage::default();
        let mut bytes = 0usize;
        for (examined, row) in rows.enumerate() {
            let (k, v) = row.into_inner()?;
            let id = OpId::from_sort_key(&k[keys::NO..])
                .ok_or_else(|| StoreError::Corrupt("unreadable feed row".into()))?;
            if examined == RANGE_ROWS_MAX {
                out.more = !tail;
                if !tail && out.items.is_empty() {
                    out.next_after = Some(k[keys::NO..].to_vec());
                }
                break;
            }
            let entry_seq = seqs.of(self, &id.entry)?;
            if entry_seq > seq {
                continue;
            }
            let size = v.len() + ROW_OVERHEAD_BYTES;
            if page.full(out.items.len(), bytes, size) {
                out.more = !tail;
                break;
            }
            bytes += size;
            out.items.push(FeedRow { value: v.to_vec(), id });
        }
        if tail {
            out.items.reverse();
        }
        Ok(out)
    }

    /// Every version of a kv key in total order, after `after` (an earlier page's
    /// `next_after`).
    pub fn kv_history(
        &self,
        log: &LogId,
        key: &[u8],
        after: Option<&[u8]>,
        page: PageLimit,
    ) -> StoreResult<VersionPage> {
        let Some(no) = self.shared.log_no(log) else { return Ok(VersionPage::default()) };
        let current = self.shared.ks.kv.get(keys::kv_key(no, key))?;
        self.history(keys::kv_version_prefix(no, key, true), current, after, page)
    }

    /// Every version of one edge in total order.
    pub fn edge_history(
        &self,
        log: &LogId,
        edge: (&[u8], &str, &[u8]),
        after: Option<&[u8]>,
        page: PageLimit,
    ) -> StoreResult<VersionPage> {
        let (src, label, dst) = edge;
        let Some(no) = self.shared.log_no(log) else { return Ok(VersionPage::default()) };
        let current = self.shared.ks.graph_out.get(keys::edge_key(no, src, label, dst))?;
        self.history(keys::edge_version_group(no, keys::VERSION_OUT, src, label, dst), current, after, page)
    }

    /// The versions under `prefix`, then the view row's op: it is greater than all of them.
    fn history(
        &self,
        prefix: Vec<u8>,
        current: Option<Slice>,
        after: Option<&[u8]>,
        page: PageLimit,
    ) -> StoreResult<VersionPage> {
        let mut from = prefix.clone();
        if let Some(after) = after {
            if after.len() != OpId::SORT_KEY_LEN {
                return Err(StoreError::Invalid(format!(
                    "after is {} bytes of an earlier page's next_after, got {}",
                    OpId::SORT_KEY_LEN,
                    after.len()
                )));
            }
            from.extend_from_slice(after);
            from.push(0);
        }
        let rows: Box<dyn Iterator<Item = fjall::Guard>> = match keys::prefix_end(&prefix) {
            Some(to) => Box::new(self.shared.ks.versions.range(from..to)),
            None => Box::new(self.shared.ks.versions.range(from..)),
        };
        let mut out = VersionPage::default();
        let mut bytes = 0usize;
        let stop = |out: &mut VersionPage| {
            out.next_after = out.versions.last().map(|v: &Version| v.id.to_sort_key().to_vec());
        };
        for (examined, row) in rows.enumerate() {
            let (k, v) = row.into_inner()?;
            let (_, _, id) = keys::parse_version_key(&k).ok_or_else(corrupt)?;
            let (seq, payload) = keys::parse_version_value(&v).ok_or_else(corrupt)?;
            let size = payload.map_or(0, <[u8]>::len) + ROW_OVERHEAD_BYTES;
            if examined == RANGE_ROWS_MAX || page.full(out.versions.len(), bytes, size) {
                stop(&mut out);
                return Ok(out);
            }
            bytes += size;
            out.versions.push(Version { seq, id, value: payload.map(<[u8]>::to_vec) });
        }
        let Some(current) = current else { return Ok(out) };
        let register = keys::parse_register(&current)
            .ok_or_else(|| StoreError::Corrupt("unreadable view row".into()))?;
        if after.is_some_and(|a| a >= register.id.to_sort_key().as_slice()) {
            return Ok(out);
        }
        let size = register.payload.map_or(0, <[u8]>::len) + ROW_OVERHEAD_BYTES;
        if page.full(out.versions.len(), bytes, size) {
            stop(&mut out);
            return Ok(out);
        }
        let seq = Seqs::default().of(self, &register.id.entry)?;
        out.versions.push(Version { seq, id: register.id, value: register.payload.map(<[u8]>::to_vec) });
        Ok(out)
    }

    /// The entries `writer` signed among `log`'s seqs `from..=to`, in seq order.
    pub fn writer_entries(
        &self,
        log: &LogId,
        writer: &PublicKey,
        from: u64,
        to: u64,
        page: PageLimit,
    ) -> StoreResult<WriterPage> {
        let Some(no) = self.shared.log_no(log) else { return Ok(WriterPage::default()) };
        let ks = &self.shared.ks;
        let mut out = WriterPage::default();
        if from > to {
            return Ok(out);
        }
        let rows = ks.seq.range(keys::seq_key(no, from).to_vec()..=keys::seq_key(no, to).to_vec());
        for (examined, row) in rows.enumerate() {
            let (k, hash) = row.into_inner()?;
            let seq =
                keys::u64_at(&k, keys::NO).ok_or_else(|| StoreError::Corrupt("short seq key".into()))?;
            if examined == WRITER_ENTRIES_MAX || out.entries.len() >= page.rows {
                out.next_seq = Some(seq);
                return Ok(out);
            }
            let hash = EntryHash::from_slice(&hash)
                .ok_or_else(|| StoreError::Corrupt(format!("seq {seq} does not hold an entry hash")))?;
            let bytes = ks
                .entries
                .get(hash.0)?
                .ok_or_else(|| StoreError::Corrupt(format!("entry {hash} is missing")))?;
            let entry = DecodedEntry::decode(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("entry {hash}: {e}")))?;
            let clock = entry.entry().clock;
            if clock.writer == *writer {
                out.entries.push(WriterEntry {
                    seq,
                    hash,
                    time: clock.time,
                    ops: entry.entry().ops.len() as u32,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use plait_core::{Op, WriterKey};
    use rand::SeedableRng;

    use crate::{NoopObserver, Store, StoreConfig, StoreError};

    /// A read as of a point walks a bounded number of one key's versions: within the
    /// bound it is answered exactly, past it refused, and a later point still reads.
    #[tokio::test]
    async fn a_read_as_of_a_point_walks_a_bounded_number_of_versions() {
        let dir = tempfile::tempdir().unwrap();
        let key = WriterKey::from_secret([3; 32]);
        let store = Store::open(
            StoreConfig::new(dir.path(), key.clone()).without_disk_floor(),
            &mut rand::rngs::StdRng::seed_from_u64(1),
            Arc::new(NoopObserver),
        )
        .unwrap();
        let (log, _) = store.create_log(crate::test_support::kv_manifest("kv", &key)).await.unwrap();
        let log = log.log_id;
        for v in 0..30u8 {
            store.write(vec![(log, Op::Put { key: b"k".to_vec(), value: vec![v] })]).await.unwrap();
        }
        // As of seq 20, ten later versions stand in front of the answer.
        assert_eq!(store.get_kv_as_of_walking(&log, b"k", 20, 11).unwrap().unwrap().value, vec![19]);
        let refused = store.get_kv_as_of_walking(&log, b"k", 20, 5).unwrap_err();
        assert!(matches!(&refused, StoreError::ResourceExhausted(m) if m.contains("History")), "{refused}");
        assert_eq!(store.get_kv_as_of_walking(&log, b"k", 28, 5).unwrap().unwrap().value, vec![27]);
        store.close().await.unwrap();
    }
}

//! Indexed reads of views and entries. None of them scans the log: each is a point read
//! or a bounded range over one log's prefix.

use fjall::Keyspace;
use plait_core::{DecodedEntry, EntryHash, LogId, OpId, VerifiedEntry, verify_batch};

use crate::error::{StoreError, StoreResult};
use crate::keys;
use crate::store::Store;

/// Rows any single range read examines at most, live or not, before it returns a page
/// (reads of the past count the versions they walk too).
pub(crate) const RANGE_ROWS_MAX: usize = 100_000;

/// What a row costs a page beyond its keys and values: its clock, hash and framing.
pub(crate) const ROW_OVERHEAD_BYTES: usize = 64;

/// How big a page of a range read may get: at most `rows` rows, and rows while the page
/// is under `bytes` (a page always takes its first row, so one large row still reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit {
    pub rows: usize,
    pub bytes: usize,
}

impl PageLimit {
    /// `rows` rows, with no byte bound beyond what rows allow.
    pub fn rows(rows: usize) -> PageLimit {
        PageLimit { rows, bytes: usize::MAX }
    }

    /// Whether a page of `len` rows and `bytes` bytes is full before the next row of
    /// `next` bytes.
    pub(crate) fn full(&self, len: usize, bytes: usize, next: usize) -> bool {
        len >= self.rows || (len > 0 && bytes.saturating_add(next) > self.bytes)
    }
}

/// A page of edges and where the next one starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgePage {
    pub edges: Vec<EdgeRow>,
    /// Set when more edges may follow: pass it as `after` to continue.
    pub next_after: Option<Vec<u8>>,
}

/// Reads one graph row (this node, label, other node, row value) as the op and props
/// an edge read sees (now, or as of a point in the past), and how many more rows it read
/// to know (they count against the page's bound).
pub(crate) type EdgeResolve<'a> =
    dyn FnMut(&[u8], &str, &[u8], &[u8]) -> StoreResult<(Option<(OpId, Option<Vec<u8>>)>, usize)> + 'a;

/// A page of feed items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedPage {
    pub items: Vec<FeedRow>,
    /// Set when more items follow (forward reads only): continue after the last item.
    pub more: bool,
    /// Where to continue when that is not after the last item: a read as of a point in
    /// the past can stop, having examined its bound of rows, with no item to show.
    pub next_after: Option<Vec<u8>>,
}

/// A live kv pair and the op that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvRow {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub id: OpId,
}

/// A feed item; `id` is its place in the total order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedRow {
    pub value: Vec<u8>,
    pub id: OpId,
}

/// A live edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeRow {
    pub src: Vec<u8>,
    pub label: String,
    pub dst: Vec<u8>,
    pub props: Vec<u8>,
    pub id: OpId,
}

/// Which edges of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
}

/// An entry read back from the store, verified again on the way out.
#[derive(Clone, Debug)]
pub struct StoredEntry {
    pub entry: VerifiedEntry,
    pub seq: u64,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unreadable {what} row"))
}

impl Store {
    fn keyspace_range(
        keyspace: &Keyspace,
        from: Vec<u8>,
        to: Option<Vec<u8>>,
    ) -> Box<dyn DoubleEndedIterator<Item = fjall::Guard> + '_> {
        match to {
            Some(to) => Box::new(keyspace.range(from..to)),
            None => Box::new(keyspace.range(from..)),
        }
    }

    /// The live value of a kv key, if any.
    pub fn get_kv(&self, log: &LogId, key: &[u8]) -> StoreResult<Option<KvRow>> {
        let Some(no) = self.shared.log_no(log) else { return Ok(None) };
        let Some(v) = self.shared.ks.kv.get(keys::kv_key(no, key))? else { return Ok(None) };
        let register = keys::parse_register(&v).ok_or_else(|| corrupt("kv"))?;
        Ok(register.payload.map(|value| KvRow { key: key.to_vec(), value: value.to_vec(), id: register.id }))
    }

    /// Live kv pairs in key order within `[start, end)` and under `prefix`, as many as
    /// `page` allows. Returns the key to continue from when more may follow.
    pub fn scan_kv(
        &self,
        log: &LogId,
        prefix: &[u8],
        start: &[u8],
        end: &[u8],
        page: PageLimit,
    ) -> StoreResult<(Vec<KvRow>, Option<Vec<u8>>)> {
        let Some(no) = self.shared.log_no(log) else { return Ok((Vec::new(), None)) };
        let from = keys::kv_key(no, start.max(prefix));
        let prefix_full = keys::kv_key(no, prefix);
        let mut to = keys::prefix_end(&prefix_full);
        if !end.is_empty() {
            let end_full = keys::kv_key(no, end);
            to = Some(match to {
                Some(t) if t < end_full => t,
                _ => end_full,
            });
        }
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        for (examined, row) in Self::keyspace_range(&self.shared.ks.kv, from, to).enumerate() {
            let (k, v) = row.into_inner()?;
            let key = k[keys::NO..].to_vec();
            let size = key.len() + v.len() + ROW_OVERHEAD_BYTES;
            if page.full(rows.len(), bytes, size) || examined == RANGE_ROWS_MAX {
                return Ok((rows, Some(key)));
            }
            let register = keys::parse_register(&v).ok_or_else(|| corrupt("kv"))?;
            if let Some(value) = register.payload {
                bytes += size;
                rows.push(KvRow { key, value: value.to_vec(), id: register.id });
            }
        }
        Ok((rows, None))
    }

    /// Feed items in total order after `after` (a position from an earlier item), as
    /// many as `page` allows; or the last items when `tail` is set (as many of the newest
    /// as `page` allows, oldest first).
    pub fn read_feed(
        &self,
        log: &LogId,
        after: Option<&[u8]>,
        page: PageLimit,
        tail: bool,
    ) -> StoreResult<FeedPage> {
        let parse = |row: fjall::Guard| -> StoreResult<FeedRow> {
            let (k, v) = row.into_inner()?;
            let id = OpId::from_sort_key(&k[keys::NO..]).ok_or_else(|| corrupt("feed"))?;
            Ok(FeedRow { value: v.to_vec(), id })
        };
        // Rows up to the page's bounds; whether one more was there.
        let take = |rows: &mut dyn Iterator<Item = fjall::Guard>| -> StoreResult<(Vec<FeedRow>, bool)> {
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for row in rows {
                let row = parse(row)?;
                let size = row.value.len() + ROW_OVERHEAD_BYTES;
                if page.full(out.len(), bytes, size) {
                    return Ok((out, true));
                }
                bytes += size;
                out.push(row);
            }
            Ok((out, false))
        };
        let Some(no) = self.shared.log_no(log) else { return Ok(FeedPage::default()) };
        let (mut items, more) = take(&mut self.feed_rows(no, after, tail)?)?;
        if tail {
            items.reverse();
            return Ok(FeedPage { items, more: false, next_after: None });
        }
        Ok(FeedPage { items, more, next_after: None })
    }

    /// A log's feed rows in total order after `after` (a position from an earlier item),
    /// or newest first for a tail read.
    pub(crate) fn feed_rows(
        &self,
        no: keys::LogNo,
        after: Option<&[u8]>,
        tail: bool,
    ) -> StoreResult<Box<dyn Iterator<Item = fjall::Guard> + '_>> {
        let ks = &self.shared.ks.feed;
        if tail {
            return Ok(Box::new(ks.prefix(no.bytes()).rev()));
        }
        let mut from = no.bytes().to_vec();
        if let Some(after) = after {
            if after.len() != OpId::SORT_KEY_LEN {
                return Err(StoreError::Invalid(format!(
                    "a feed position is {} bytes, got {}; pass the position of an item you read",
                    OpId::SORT_KEY_LEN,
                    after.len()
                )));
            }
            from.extend_from_slice(after);
            // The smallest key after `after`: exclusive start.
            from.push(0);
        }
        Ok(Self::keyspace_range(ks, from, keys::prefix_end(&no.bytes())))
    }

    /// Live edges out of (or into) `node`, optionally with one label, as many as `page`
    /// allows, after the continuation `after` from an earlier page.
    pub fn edges(
        &self,
        log: &LogId,
        node: &[u8],
        direction: Direction,
        label: Option<&str>,
        after: Option<&[u8]>,
        page: PageLimit,
    ) -> StoreResult<EdgePage> {
        let mut now = |_: &[u8], _: &str, _: &[u8], v: &[u8]| {
            let register = keys::parse_register(v).ok_or_else(|| corrupt("graph"))?;
            Ok((Some((register.id, register.payload.map(<[u8]>::to_vec))), 0))
        };
        self.edge_page(log, node, direction, label, after, page, &mut now)
    }

    /// A page of edges of `node`, each graph row's op and props as `resolve` reads them
    /// (this node, label, other node, row value; `None`: no op yet).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn edge_page(
        &self,
        log: &LogId,
        node: &[u8],
        direction: Direction,
        label: Option<&str>,
        after: Option<&[u8]>,
        page: PageLimit,
        resolve: &mut EdgeResolve<'_>,
    ) -> StoreResult<EdgePage> {
        let ks = match direction {
            Direction::Out => &self.shared.ks.graph_out,
            Direction::In => &self.shared.ks.graph_in,
        };
        let Some(no) = self.shared.log_no(log) else { return Ok(EdgePage::default()) };
        let prefix = keys::edge_prefix(no, node, label);
        let rows: Box<dyn Iterator<Item = fjall::Guard>> = match after {
            None => Box::new(ks.prefix(&prefix)),
            Some(after) => {
                if !after.starts_with(&prefix) || after.len() == prefix.len() {
                    return Err(StoreError::Invalid(
                        "after must be the next_after of an earlier page of the same node, direction, label and as_of"
                            .into(),
                    ));
                }
                let mut from = after.to_vec();
                from.push(0);
                Box::new(Self::keyspace_range(ks, from, keys::prefix_end(&prefix)))
            }
        };
        let mut out = EdgePage::default();
        let mut bytes = 0usize;
        // The key of the row examined last, live or not: a page that stops before a row
        // continues after this one (every key between them was examined already).
        let mut previous: Option<Vec<u8>> = None;
        // Rows examined, with any a read of the past walked behind them.
        let mut examined = 0usize;
        for row in rows {
            let (k, v) = row.into_inner()?;
            if examined >= RANGE_ROWS_MAX {
                out.next_after = previous;
                return Ok(out);
            }
            let (this, label, other) = keys::parse_edge_key(&k).ok_or_else(|| corrupt("graph"))?;
            let (at, walked) = resolve(this, label, other, &v)?;
            examined += 1 + walked;
            let Some((id, Some(props))) = at else {
                previous = Some(k.to_vec());
                continue;
            };
            let size = this.len() + label.len() + other.len() + props.len() + ROW_OVERHEAD_BYTES;
            if page.full(out.edges.len(), bytes, size) {
                out.next_after = previous;
                return Ok(out);
            }
            previous = Some(k.to_vec());
            bytes += size;
            let (src, dst) = match direction {
                Direction::Out => (this, other),
                Direction::In => (other, this),
            };
            out.edges.push(EdgeRow {
                src: src.to_vec(),
                label: label.to_owned(),
                dst: dst.to_vec(),
                props,
                id,
            });
        }
        Ok(out)
    }

    /// Whether the entry is stored (not pending).
    pub fn has_entry(&self, hash: &EntryHash) -> StoreResult<bool> {
        Ok(self.shared.ks.by_hash.contains_key(hash.0)?)
    }

    /// One entry by hash, verified again as it leaves the store.
    pub fn get_entry(&self, hash: &EntryHash) -> StoreResult<Option<StoredEntry>> {
        let ks = &self.shared.ks;
        let Some(location) = ks.by_hash.get(hash.0)? else { return Ok(None) };
        let location = keys::parse_location(&location).ok_or_else(|| corrupt("by_hash"))?;
        let bytes = ks
            .entries
            .get(hash.0)?
            .ok_or_else(|| StoreError::Corrupt(format!("entry {hash} is indexed but missing")))?;
        let entry = VerifiedEntry::reverify(&bytes, *hash)
            .map_err(|e| StoreError::Corrupt(format!("stored entry {hash} does not verify: {e}")))?;
        Ok(Some(StoredEntry { entry, seq: location.seq }))
    }

    /// The heads of a log with their entries.
    pub fn heads(&self, log: &LogId) -> StoreResult<Vec<StoredEntry>> {
        let mut out = Vec::new();
        let Some(no) = self.shared.log_no(log) else { return Ok(out) };
        for row in self.shared.ks.heads.prefix(no.bytes()) {
            let k = row.key()?;
            let hash = EntryHash::from_slice(&k[keys::NO..]).ok_or_else(|| corrupt("heads"))?;
            out.push(
                self.get_entry(&hash)?
                    .ok_or_else(|| StoreError::Corrupt(format!("head {hash} is not stored")))?,
            );
        }
        Ok(out)
    }

    /// Entries with seq greater than `after_seq`, in seq order, at most `limit` entries
    /// and about `bytes_max` bytes (at least one entry).
    /// The hashes of `log`'s heads with their seqs, from the heads and `by_hash` rows
    /// alone (no entry is read or verified): cheap enough for every anti-entropy round.
    pub fn head_seqs(&self, log: &LogId) -> StoreResult<Vec<(EntryHash, u64)>> {
        let mut out = Vec::new();
        let Some(no) = self.shared.log_no(log) else { return Ok(out) };
        for row in self.shared.ks.heads.prefix(no.bytes()) {
            let k = row.key()?;
            let hash = EntryHash::from_slice(&k[keys::NO..]).ok_or_else(|| corrupt("heads"))?;
            let location = self
                .shared
                .ks
                .by_hash
                .get(hash.0)?
                .as_deref()
                .and_then(keys::parse_location)
                .ok_or_else(|| StoreError::Corrupt(format!("head {hash} is not stored")))?;
            out.push((hash, location.seq));
        }
        Ok(out)
    }

    pub fn entries_after(
        &self,
        log: &LogId,
        after_seq: u64,
        limit: usize,
        bytes_max: usize,
    ) -> StoreResult<Vec<StoredEntry>> {
        let ks = &self.shared.ks;
        let mut decoded = Vec::new();
        let mut seqs = Vec::new();
        let mut bytes = 0;
        let Some(no) = self.shared.log_no(log) else { return Ok(Vec::new()) };
        let from = keys::seq_key(no, after_seq.saturating_add(1));
        for row in Self::keyspace_range(&ks.seq, from.to_vec(), keys::prefix_end(&no.bytes())).take(limit) {
            let (k, v) = row.into_inner()?;
            let seq = keys::u64_at(&k, keys::NO).ok_or_else(|| corrupt("seq"))?;
            let hash = EntryHash::from_slice(&v).ok_or_else(|| corrupt("seq"))?;
            let entry_bytes = ks
                .entries
                .get(hash.0)?
                .ok_or_else(|| StoreError::Corrupt(format!("entry {hash} at seq {seq} is missing")))?;
            bytes += entry_bytes.len();
            decoded.push(
                DecodedEntry::decode_expecting(&entry_bytes, hash)
                    .map_err(|e| StoreError::Corrupt(format!("stored entry {hash} does not verify: {e}")))?,
            );
            seqs.push(seq);
            if bytes >= bytes_max {
                break;
            }
        }
        // Paired verification on the way out, as one batch: cheaper per entry than one
        // signature check at a time on a path that serves whole pages.
        verify_batch(decoded)
            .into_iter()
            .zip(seqs)
            .map(|(verified, seq)| {
                verified.map(|entry| StoredEntry { entry, seq }).map_err(|e| {
                    StoreError::Corrupt(format!("stored entry at seq {seq} does not verify: {e}"))
                })
            })
            .collect()
    }

    /// The origin runs that cover seqs `first..=last` of `log`, in order: the run holding
    /// `first` (found by a reverse seek) and every later one starting by `last`. Seqs that
    /// no run covers were stored before this replica kept origins.
    pub fn origins(&self, log: &LogId, first: u64, last: u64) -> StoreResult<Vec<crate::OriginRun>> {
        let Some(no) = self.shared.log_no(log) else { return Ok(Vec::new()) };
        let keyspace = &self.shared.ks.origins;
        let prefix = crate::origins::run_prefix(no);
        let parse = |row: fjall::Guard| -> StoreResult<crate::OriginRun> {
            let (k, v) = row.into_inner()?;
            crate::origins::parse_run(&k, &v).ok_or_else(|| corrupt("origin"))
        };
        let mut runs = Vec::new();
        let start = crate::origins::run_key(no, first);
        if let Some(row) = keyspace.range(prefix.to_vec()..=start.to_vec()).next_back() {
            let run = parse(row)?;
            if run.last >= first {
                runs.push(run);
            }
        }
        let end = crate::origins::run_key(no, last);
        for row in
            keyspace.range(crate::origins::run_key(no, first.saturating_add(1)).to_vec()..=end.to_vec())
        {
            runs.push(parse(row)?);
        }
        Ok(runs)
    }
}

impl Store {
    /// Parents that entries of `log` wait for and this replica does not hold, at most
    /// `max`. Bounded by the pending limit, since every row belongs to a pending entry.
    pub fn missing_parents(&self, log: &LogId, max: usize) -> StoreResult<Vec<EntryHash>> {
        let ks = &self.shared.ks;
        let mut out = Vec::new();
        for row in ks.missing.iter() {
            let (k, v) = row.into_inner()?;
            if v.as_ref() != log.0.as_slice() {
                continue;
            }
            let parent = EntryHash::from_slice(&k[..keys::HASH]).ok_or_else(|| corrupt("missing"))?;
            if out.last() != Some(&parent) && !ks.by_hash.contains_key(parent.0)? {
                out.push(parent);
                if out.len() == max {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every entry of `log` in the causal past of `heads` (the heads included), or `None`
    /// when that past holds more than `bound` entries; callers then send everything and
    /// let the receiver drop duplicates. Heads this replica does not hold are skipped.
    pub fn causal_past(
        &self,
        log: &LogId,
        heads: &[EntryHash],
        bound: usize,
    ) -> StoreResult<Option<std::collections::HashSet<EntryHash>>> {
        let ks = &self.shared.ks;
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<EntryHash> = heads.to_vec();
        while let Some(hash) = stack.pop() {
            if seen.contains(&hash) {
                continue;
            }
            let Some(bytes) = ks.entries.get(hash.0)? else { continue };
            let entry = plait_core::DecodedEntry::decode(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("stored entry {hash} does not decode: {e}")))?;
            if entry.entry().log != *log {
                continue;
            }
            seen.insert(hash);
            if seen.len() > bound {
                return Ok(None);
            }
            stack.extend(entry.entry().next.iter().copied());
        }
        Ok(Some(seen))
    }
}

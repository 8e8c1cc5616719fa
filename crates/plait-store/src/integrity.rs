//! The integrity check: re-hash and re-verify every entry, check seq is gap-free and
//! parents come first, rebuild every view from the entries and compare it with the
//! stored one. Used by `plaitd check` and by the crash tests.

use std::collections::{BTreeMap, BTreeSet};

use plait_core::{EntryHash, LogView, VerifiedEntry};

use crate::error::StoreResult;
use crate::keys;
use crate::store::Store;

/// What the check found. `problems` is empty for a healthy data directory.
#[derive(Clone, Debug, Default)]
pub struct IntegrityReport {
    pub logs: u64,
    pub entries: u64,
    pub ops: u64,
    pub pending: u64,
    pub problems: Vec<String>,
}

impl IntegrityReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Reads the whole data directory. Memory grows with the largest view, so this is a
    /// tool for operators and tests, not for the serving path.
    pub fn check_integrity(&self) -> StoreResult<IntegrityReport> {
        let ks = &self.shared.ks;
        let mut report = IntegrityReport::default();
        for summary in self.logs() {
            report.logs += 1;
            let log = summary.log_id;
            let manifest = summary.manifest.manifest();
            let name = &manifest.name;
            let mut view = LogView::new(manifest.log_type);
            let mut times: BTreeMap<EntryHash, u64> = BTreeMap::new();
            let mut named_as_parent = BTreeSet::new();
            let mut expected_seq = 1;
            let mut ops = 0;
            let no = summary.no;
            let mut digest = plait_core::SetDigest::default();
            // The rows every op of the entries makes; the stored history holds all of them
            // but the view's winners, which the view rows hold.
            let mut versions = RowSet::default();
            let mut seqs: std::collections::HashMap<EntryHash, u64> = std::collections::HashMap::new();
            for row in ks.seq.prefix(no.bytes()) {
                let (k, v) = row.into_inner()?;
                let seq = keys::u64_at(&k, keys::NO).unwrap_or(0);
                if seq != expected_seq {
                    report
                        .problems
                        .push(format!("log {name}: seq {seq} found where {expected_seq} was expected"));
                }
                expected_seq = seq + 1;
                let Some(hash) = EntryHash::from_slice(&v) else {
                    report.problems.push(format!("log {name}: seq {seq} does not hold a hash"));
                    continue;
                };
                let Some(bytes) = ks.entries.get(hash.0)? else {
                    report.problems.push(format!("log {name}: entry {hash} at seq {seq} is missing"));
                    continue;
                };
                let entry = match VerifiedEntry::reverify(&bytes, hash) {
                    Ok(e) => e,
                    Err(e) => {
                        report.problems.push(format!("log {name}: entry at seq {seq}: {e}"));
                        continue;
                    }
                };
                match ks.by_hash.get(hash.0)?.as_deref().and_then(keys::parse_location) {
                    Some(l) if l.log == log && l.seq == seq && l.time == entry.clock().time => {}
                    _ => report
                        .problems
                        .push(format!("log {name}: by_hash of {hash} does not point at seq {seq}")),
                }
                if entry.log() != log {
                    report.problems.push(format!("log {name}: entry {hash} belongs to log {}", entry.log()));
                }
                if !manifest.writers.allows(&entry.clock().writer) {
                    report.problems.push(format!("log {name}: entry {hash} has a writer not on the ACL"));
                }
                for parent in &entry.entry().next {
                    match times.get(parent) {
                        Some(t) if *t < entry.clock().time => {}
                        Some(_) => report
                            .problems
                            .push(format!("log {name}: entry {hash} does not advance its clock")),
                        None => report
                            .problems
                            .push(format!("log {name}: entry {hash} at seq {seq} precedes parent {parent}")),
                    }
                    named_as_parent.insert(*parent);
                }
                times.insert(hash, entry.clock().time);
                seqs.insert(hash, seq);
                for (id, op) in entry.op_ids() {
                    for (k, v) in keys::version_rows(no, seq, &id, op) {
                        versions.add(&k, &v);
                    }
                }
                digest.add(&hash);
                ops += entry.entry().ops.len() as u64;
                view.apply(&entry);
            }
            let entries = expected_seq - 1;
            if entries != summary.seq {
                report
                    .problems
                    .push(format!("log {name}: {entries} entries but the recovered seq is {}", summary.seq));
            }
            if ops != summary.ops {
                report.problems.push(format!("log {name}: {ops} ops but the counter says {}", summary.ops));
            }
            let stored = ks.counters.get(log.0)?.as_deref().and_then(keys::counters_digest);
            if stored != Some(digest) || summary.digest != digest {
                report.problems.push(format!(
                    "log {name}: the digest of its entries is {} but the stored one is {}",
                    digest.to_hex(),
                    stored.map_or_else(|| "missing".to_owned(), |d| d.to_hex())
                ));
            }
            let expected_heads: BTreeSet<EntryHash> =
                times.keys().filter(|h| !named_as_parent.contains(*h)).copied().collect();
            let mut stored_heads = BTreeSet::new();
            for row in ks.heads.prefix(no.bytes()) {
                let k = row.key()?;
                stored_heads.extend(EntryHash::from_slice(&k[keys::NO..]));
            }
            if stored_heads != expected_heads {
                report.problems.push(format!(
                    "log {name}: stored heads ({}) differ from the heads of the stored entries ({})",
                    stored_heads.len(),
                    expected_heads.len()
                ));
            }
            self.compare_view(no, name, &view, &mut report)?;
            let mut stored_versions = RowSet::default();
            for row in ks.versions.prefix(no.bytes()) {
                let (k, v) = row.into_inner()?;
                stored_versions.add(&k, &v);
            }
            // The view's winners, as the ops that wrote them: the view rows hold these.
            let mut add_winner = |id: &plait_core::OpId, op: plait_core::Op| {
                let seq = seqs.get(&id.entry).copied().unwrap_or(0);
                for (k, v) in keys::version_rows(no, seq, id, &op) {
                    stored_versions.add(&k, &v);
                }
            };
            match &view {
                LogView::Feed(_) => {}
                LogView::Kv(map) => {
                    for (key, r) in map {
                        let key = key.clone();
                        add_winner(
                            &r.id,
                            match &r.value {
                                Some(value) => plait_core::Op::Put { key, value: value.clone() },
                                None => plait_core::Op::Delete { key },
                            },
                        );
                    }
                }
                LogView::Graph(map) => {
                    for (e, r) in map {
                        let (src, label, dst) = (e.src.clone(), e.label.clone(), e.dst.clone());
                        add_winner(
                            &r.id,
                            match &r.value {
                                Some(v) => plait_core::Op::Link { src, label, dst, props: v.props.clone() },
                                None => plait_core::Op::Unlink { src, label, dst },
                            },
                        );
                    }
                }
            }
            if stored_versions != versions {
                report.problems.push(format!(
                    "log {name}: the history of its keys differs from its entries ({} version rows expected, {} stored with the view's)",
                    versions.rows, stored_versions.rows
                ));
            }
            self.check_origins(no, name, entries, &mut report)?;
            report.entries += entries;
            report.ops += ops;
            report.pending += ks.pending.prefix(no.bytes()).count() as u64;
        }
        self.check_log_numbers(&mut report)?;
        // A creator record outlives its log only through a bug in drop: it would count
        // against the creator's quota for ever.
        for row in ks.creators.iter() {
            let k = row.key()?;
            match plait_core::LogId::from_slice(&k) {
                Some(log) if self.log(&log).is_some() => {}
                _ => report
                    .problems
                    .push(format!("a creator record names no hosted log ({})", hex::encode(&k))),
            }
        }
        self.check_consumers(&mut report)?;
        Ok(report)
    }

    /// Every consumer row is readable, has a valid name, names a hosted log and a seq
    /// that log holds, and matches what the replica serves from memory.
    fn check_consumers(&self, report: &mut IntegrityReport) -> StoreResult<()> {
        let mut stored = 0;
        for row in self.shared.ks.consumers.iter() {
            let (k, v) = row.into_inner()?;
            let (Some((log, name)), Some(seq)) =
                (crate::consumers::parse_key(&k), crate::consumers::parse_value(&v))
            else {
                report.problems.push(format!("an unreadable consumer row ({})", hex::encode(&k)));
                continue;
            };
            stored += 1;
            let Some(summary) = self.log(&log) else {
                report.problems.push(format!("consumer {name:?} names no hosted log ({log})"));
                continue;
            };
            let log_name = &summary.manifest.manifest().name;
            if crate::consumers::check_consumer_name(name).is_err() {
                report
                    .problems
                    .push(format!("log {log_name}: consumer {name:?} has a name no commit accepts"));
            }
            if seq > summary.seq {
                report.problems.push(format!(
                    "log {log_name}: consumer {name:?} committed seq {seq}, past the log's end ({})",
                    summary.seq
                ));
            }
            if self.consumer(&log, name) != Some(seq) {
                report.problems.push(format!(
                    "log {log_name}: consumer {name:?} is stored at seq {seq} but served at {:?}",
                    self.consumer(&log, name)
                ));
            }
        }
        let served = self.all_consumers().len();
        if served != stored {
            report.problems.push(format!("{served} consumers are served but {stored} are stored"));
        }
        Ok(())
    }

    /// A log's origin runs are readable, in order, disjoint and within its seqs, and each
    /// pending-origin row belongs to an entry that is pending.
    fn check_origins(
        &self,
        no: keys::LogNo,
        name: &str,
        entries: u64,
        report: &mut IntegrityReport,
    ) -> StoreResult<()> {
        let ks = &self.shared.ks;
        let mut last = 0;
        for row in ks.origins.prefix(no.bytes()) {
            let (k, v) = row.into_inner()?;
            if crate::origins::is_pending_key(&k) {
                let hash = &k[keys::NO + 1..];
                let pending = EntryHash::from_slice(hash)
                    .is_some_and(|h| ks.pending.contains_key(keys::entry_key(no, &h)).unwrap_or(false));
                if crate::origins::parse_pending(&v).is_none() || !pending {
                    report.problems.push(format!(
                        "log {name}: an origin row of pending entry {} without the entry, or unreadable",
                        hex::encode(hash)
                    ));
                }
                continue;
            }
            let Some(run) = crate::origins::parse_run(&k, &v) else {
                report.problems.push(format!("log {name}: an unreadable origin row ({})", hex::encode(&k)));
                continue;
            };
            if run.first <= last || run.last > entries {
                report.problems.push(format!(
                    "log {name}: origin run {}..={} overlaps the one before (ending at {last}) or passes the last seq ({entries})",
                    run.first, run.last
                ));
            }
            last = run.last;
        }
        Ok(())
    }

    /// Every hosted log has its own number, below `meta/next_log_no`, and every number
    /// belongs to a hosted log.
    fn check_log_numbers(&self, report: &mut IntegrityReport) -> StoreResult<()> {
        let ks = &self.shared.ks;
        let next = crate::migrate::next_log_no(ks)?;
        let mut seen = BTreeMap::new();
        for row in ks.log_nos.iter() {
            let (k, v) = row.into_inner()?;
            let Some(no) = keys::LogNo::parse(&v) else {
                report.problems.push(format!("the log number of {} is not 4 bytes", hex::encode(&k)));
                continue;
            };
            match plait_core::LogId::from_slice(&k) {
                Some(log) if self.log(&log).is_some() => {}
                _ => report.problems.push(format!(
                    "log number {} names no hosted log ({})",
                    no.0,
                    hex::encode(&k)
                )),
            }
            if no.0 >= next {
                report.problems.push(format!("log number {} is not below meta/next_log_no ({next})", no.0));
            }
            if let Some(other) = seen.insert(no, k.to_vec()) {
                report.problems.push(format!(
                    "log number {} is given to two logs ({} and {})",
                    no.0,
                    hex::encode(other),
                    hex::encode(&k)
                ));
            }
        }
        for summary in self.logs() {
            if ks.log_nos.get(summary.log_id.0)?.and_then(|v| keys::LogNo::parse(&v)) != Some(summary.no) {
                report.problems.push(format!(
                    "log {}: its stored number is not the one it is read with",
                    summary.manifest.manifest().name
                ));
            }
        }
        Ok(())
    }

    fn compare_view(
        &self,
        no: keys::LogNo,
        name: &str,
        view: &LogView,
        report: &mut IntegrityReport,
    ) -> StoreResult<()> {
        let ks = &self.shared.ks;
        let read = |keyspace: &fjall::Keyspace| -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
            keyspace
                .prefix(no.bytes())
                .map(|row| row.into_inner().map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into))
                .collect()
        };
        let mut mismatch = |what: &str,
                            expected: Vec<(Vec<u8>, Vec<u8>)>,
                            actual: Vec<(Vec<u8>, Vec<u8>)>| {
            if expected != actual {
                report.problems.push(format!(
                    "log {name}: the {what} view differs from the fold of its entries ({} rows expected, {} stored)",
                    expected.len(),
                    actual.len()
                ));
            }
        };
        match view {
            LogView::Feed(items) => {
                let expected = items.iter().map(|(id, v)| (keys::feed_key(no, id), v.clone())).collect();
                mismatch("feed", expected, read(&ks.feed)?);
            }
            LogView::Kv(map) => {
                let expected = map
                    .iter()
                    .map(|(k, r)| (keys::kv_key(no, k), keys::register_value(&r.id, r.value.as_deref())))
                    .collect();
                mismatch("kv", expected, read(&ks.kv)?);
            }
            LogView::Graph(map) => {
                let value = |r: &plait_core::Register<plait_core::EdgeValue>| {
                    keys::register_value(&r.id, r.value.as_ref().map(|v| v.props.as_slice()))
                };
                // Length-prefixed keys sort differently from the view's (src, label, dst).
                let mut expected_out: Vec<_> = map
                    .iter()
                    .map(|(e, r)| (keys::edge_key(no, &e.src, &e.label, &e.dst), value(r)))
                    .collect();
                expected_out.sort();
                let mut expected_in: Vec<_> = map
                    .iter()
                    .map(|(e, r)| (keys::edge_key(no, &e.dst, &e.label, &e.src), value(r)))
                    .collect();
                expected_in.sort();
                mismatch("graph (out)", expected_out, read(&ks.graph_out)?);
                mismatch("graph (in)", expected_in, read(&ks.graph_in)?);
            }
        }
        Ok(())
    }
}

/// A set of rows as a count and an order-independent digest, so comparing what a log's
/// entries imply with what is stored takes no memory per row.
#[derive(Default, PartialEq, Eq)]
struct RowSet {
    rows: u64,
    digest: plait_core::SetDigest,
}

impl RowSet {
    fn add(&mut self, key: &[u8], value: &[u8]) {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&(key.len() as u64).to_be_bytes());
        hasher.update(key);
        hasher.update(value);
        self.rows += 1;
        self.digest.add(&EntryHash(*hasher.finalize().as_bytes()));
    }
}

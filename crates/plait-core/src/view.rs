//! Materialized views as a pure fold of operations in the total order.
//!
//! This is the definition the store's incremental views must match: for any set of
//! entries, the view equals the fold of their ops in total order, whatever the arrival
//! order, duplicates included. Every register keeps the op with the greatest `OpId`, so
//! folding is commutative, associative and idempotent.

use std::collections::BTreeMap;

use crate::entry::VerifiedEntry;
use crate::manifest::LogType;
use crate::op::Op;
use crate::order::OpId;

/// A last-writer-wins register: the value of the greatest op seen, `None` for a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register<T> {
    pub id: OpId,
    pub value: Option<T>,
}

impl<T> Register<T> {
    /// Whether an op with `id` replaces this register's value.
    pub fn loses_to(&self, id: &OpId) -> bool {
        self.id < *id
    }
}

/// A graph edge's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeKey {
    pub src: Vec<u8>,
    pub label: String,
    pub dst: Vec<u8>,
}

/// A live edge's properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeValue {
    pub props: Vec<u8>,
}

/// The view of one log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogView {
    /// Items keyed by their place in the total order.
    Feed(BTreeMap<OpId, Vec<u8>>),
    Kv(BTreeMap<Vec<u8>, Register<Vec<u8>>>),
    Graph(BTreeMap<EdgeKey, Register<EdgeValue>>),
}

fn merge<K: Ord, T>(map: &mut BTreeMap<K, Register<T>>, key: K, id: OpId, value: Option<T>) {
    match map.get_mut(&key) {
        Some(register) if !register.loses_to(&id) => {}
        Some(register) => *register = Register { id, value },
        None => {
            map.insert(key, Register { id, value });
        }
    }
}

impl LogView {
    pub fn new(log_type: LogType) -> LogView {
        match log_type {
            LogType::Feed => LogView::Feed(BTreeMap::new()),
            LogType::Kv => LogView::Kv(BTreeMap::new()),
            LogType::Graph => LogView::Graph(BTreeMap::new()),
        }
    }

    /// Folds one op in. Ops the view's type does not accept are ignored: the store
    /// refuses them before they get here.
    pub fn apply_op(&mut self, id: OpId, op: &Op) {
        match (self, op) {
            (LogView::Feed(items), Op::Append { value }) => {
                items.insert(id, value.clone());
            }
            (LogView::Kv(map), Op::Put { key, value }) => merge(map, key.clone(), id, Some(value.clone())),
            (LogView::Kv(map), Op::Delete { key }) => merge(map, key.clone(), id, None),
            (LogView::Graph(map), Op::Link { src, label, dst, props }) => {
                let key = EdgeKey { src: src.clone(), label: label.clone(), dst: dst.clone() };
                merge(map, key, id, Some(EdgeValue { props: props.clone() }))
            }
            (LogView::Graph(map), Op::Unlink { src, label, dst }) => {
                let key = EdgeKey { src: src.clone(), label: label.clone(), dst: dst.clone() };
                merge(map, key, id, None)
            }
            _ => {}
        }
    }

    pub fn apply(&mut self, entry: &VerifiedEntry) {
        for (id, op) in entry.op_ids() {
            self.apply_op(id, op);
        }
    }

    /// The live kv pairs, tombstones left out.
    pub fn kv_live(&self) -> Vec<(&[u8], &[u8])> {
        match self {
            LogView::Kv(map) => map
                .iter()
                .filter_map(|(k, r)| r.value.as_ref().map(|v| (k.as_slice(), v.as_slice())))
                .collect(),
            _ => Vec::new(),
        }
    }
}

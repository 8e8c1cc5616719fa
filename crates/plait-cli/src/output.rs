//! How results look: the human form (text, tables) and the JSON form of each reply.
//!
//! Byte strings are shown as text when they are valid UTF-8 and as hex otherwise. In
//! human output hex gets a `0x` prefix; in JSON a byte field `value` becomes `value_hex`,
//! so a program never has to guess which encoding it is reading.

use std::fmt::Write as _;

use plait_client::{
    AppliedOp, Edge, FeedItem, Heads, KeyValue, LogInfo, Status, StoredEntry, SubmitResult, WriteAck,
};
use plait_core::{Clock, Op, Writers};
use serde_json::{Map, Value, json};

/// Characters of a hex id shown where a table has no room for all 64.
pub(crate) const ID_PREFIX_LEN: usize = 16;

/// Bytes as text if valid UTF-8, else `0x` and hex.
pub(crate) fn bytes_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("0x{}", hex::encode(bytes)),
    }
}

/// Bytes for a one-line cell: like [`bytes_text`], with control characters escaped so a
/// value cannot break the line or the columns.
pub(crate) fn cell_text(bytes: &[u8]) -> String {
    let text = bytes_text(bytes);
    if text.chars().any(char::is_control) {
        text.chars().flat_map(char::escape_default).collect()
    } else {
        text
    }
}

/// Adds `name` (UTF-8 text) or `name_hex` (hex) to a JSON object.
pub(crate) fn put_bytes(object: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.to_owned(), Value::String(text.to_owned())),
        Err(_) => object.insert(format!("{name}_hex"), Value::String(hex::encode(bytes))),
    };
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// Columns padded to their widest cell, two spaces apart; no trailing spaces.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        let trimmed = out.trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
    }
    out
}

/// A duration for people: `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub(crate) fn duration_text(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub(crate) fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn prefix(hex: &str) -> String {
    hex.chars().take(ID_PREFIX_LEN).collect()
}

pub(crate) fn clock_json(clock: &Clock) -> Value {
    json!({ "time": clock.time, "writer": clock.writer.to_hex() })
}

fn writers_text(writers: &Writers) -> String {
    match writers {
        Writers::Open => "open (any valid signature)".to_owned(),
        Writers::Keys(keys) => keys.iter().map(|k| k.to_hex()).collect::<Vec<_>>().join("\n          "),
    }
}

// ---------------------------------------------------------------------------------------
// Logs.

pub(crate) fn log_json(log: &LogInfo) -> Value {
    let writers = match &log.writers {
        Writers::Open => Value::Null,
        Writers::Keys(keys) => keys.iter().map(|k| Value::String(k.to_hex())).collect(),
    };
    json!({
        "log_id": log.log_id.to_hex(),
        "name": log.name,
        "type": log.log_type.name(),
        "open": matches!(log.writers, Writers::Open),
        "writers": writers,
        "created_by": log.created_by.to_hex(),
        "seq": log.seq,
        "heads": log.heads,
        "pending": log.pending,
        "ops": log.ops,
    })
}

pub(crate) fn log_human(log: &LogInfo) -> String {
    format!(
        "name:     {}\nid:       {}\ntype:     {}\nwriters:  {}\ncreator:  {}\nseq:      {}\nheads:    {}\npending:  {}\nops:      {}\n",
        log.name,
        log.log_id,
        log.log_type,
        writers_text(&log.writers),
        log.created_by,
        log.seq,
        log.heads,
        log.pending,
        log.ops
    )
}

pub(crate) fn logs_table(logs: &[LogInfo]) -> String {
    if logs.is_empty() {
        return "no logs\n".to_owned();
    }
    let rows: Vec<Vec<String>> = logs
        .iter()
        .map(|log| {
            vec![
                log.name.clone(),
                prefix(&log.log_id.to_hex()),
                log.log_type.to_string(),
                log.seq.to_string(),
                log.heads.to_string(),
                log.pending.to_string(),
                log.ops.to_string(),
            ]
        })
        .collect();
    table(&["NAME", "ID", "TYPE", "SEQ", "HEADS", "PENDING", "OPS"], &rows)
}

// ---------------------------------------------------------------------------------------
// Writes.

pub(crate) fn ack_json(ack: &WriteAck) -> Value {
    json!({
        "log_id": ack.log_id.to_hex(),
        "entry_hash": ack.entry_hash.to_hex(),
        "seq": ack.seq,
        "op_index": ack.op_index,
        "clock": clock_json(&ack.clock),
    })
}

pub(crate) fn ack_human(ack: &WriteAck) -> String {
    format!("ok: seq {}, entry {}, time {}\n", ack.seq, ack.entry_hash, ack.clock.time)
}

pub(crate) fn submit_json(result: &SubmitResult) -> Value {
    json!({ "entry_hash": result.entry_hash.to_hex(), "outcome": result.outcome.name(), "seq": result.seq })
}

pub(crate) fn submit_human(result: &SubmitResult) -> String {
    match result.outcome {
        plait_client::SubmitOutcome::Pending => {
            format!("pending: entry {} waits for parents the replica does not hold yet\n", result.entry_hash)
        }
        outcome => format!("{}: seq {}, entry {}\n", outcome.name(), result.seq, result.entry_hash),
    }
}

// ---------------------------------------------------------------------------------------
// Reads.

pub(crate) fn key_value_json(item: &KeyValue) -> Value {
    let mut out = Map::new();
    put_bytes(&mut out, "key", &item.key);
    put_bytes(&mut out, "value", &item.value);
    out.insert("clock".into(), clock_json(&item.clock));
    Value::Object(out)
}

pub(crate) fn key_value_human(item: &KeyValue) -> String {
    format!("{}\t{}\n", cell_text(&item.key), cell_text(&item.value))
}

pub(crate) fn feed_item_json(item: &FeedItem) -> Value {
    let mut out = Map::new();
    put_bytes(&mut out, "value", &item.value);
    out.insert("clock".into(), clock_json(&item.clock));
    out.insert("entry_hash".into(), item.entry_hash.to_hex().into());
    out.insert("op_index".into(), item.op_index.into());
    Value::Object(out)
}

/// A feed value as `tail` prints it: the value on its own line.
pub(crate) fn feed_value_human(value: &[u8]) -> String {
    format!("{}\n", bytes_text(value))
}

/// A feed item that arrived through a subscription, in the same JSON shape as a read.
pub(crate) fn applied_append_json(applied: &AppliedOp, value: &[u8]) -> Value {
    let mut out = Map::new();
    put_bytes(&mut out, "value", value);
    out.insert("clock".into(), clock_json(&applied.clock));
    out.insert("entry_hash".into(), applied.entry_hash.to_hex().into());
    out.insert("op_index".into(), applied.op_index.into());
    out.insert("seq".into(), applied.seq.into());
    Value::Object(out)
}

pub(crate) fn edge_json(edge: &Edge) -> Value {
    let mut out = Map::new();
    put_bytes(&mut out, "src", &edge.src);
    out.insert("label".into(), edge.label.clone().into());
    put_bytes(&mut out, "dst", &edge.dst);
    put_bytes(&mut out, "props", &edge.props);
    out.insert("clock".into(), clock_json(&edge.clock));
    Value::Object(out)
}

pub(crate) fn edges_table(edges: &[Edge]) -> String {
    if edges.is_empty() {
        return "no edges\n".to_owned();
    }
    let rows: Vec<Vec<String>> = edges
        .iter()
        .map(|e| {
            vec![
                cell_text(&e.src),
                e.label.escape_default().to_string(),
                cell_text(&e.dst),
                cell_text(&e.props),
            ]
        })
        .collect();
    table(&["SRC", "LABEL", "DST", "PROPS"], &rows)
}

pub(crate) fn op_json(op: &Op) -> Value {
    let mut out = Map::new();
    out.insert("op".into(), op.name().into());
    match op {
        Op::Append { value } => put_bytes(&mut out, "value", value),
        Op::Put { key, value } => {
            put_bytes(&mut out, "key", key);
            put_bytes(&mut out, "value", value);
        }
        Op::Delete { key } => put_bytes(&mut out, "key", key),
        Op::Link { src, label, dst, props } => {
            put_bytes(&mut out, "src", src);
            out.insert("label".into(), label.clone().into());
            put_bytes(&mut out, "dst", dst);
            put_bytes(&mut out, "props", props);
        }
        Op::Unlink { src, label, dst } => {
            put_bytes(&mut out, "src", src);
            out.insert("label".into(), label.clone().into());
            put_bytes(&mut out, "dst", dst);
        }
    }
    Value::Object(out)
}

pub(crate) fn op_human(op: &Op) -> String {
    match op {
        Op::Append { value } => format!("feed.append {}", cell_text(value)),
        Op::Put { key, value } => format!("kv.put {} = {}", cell_text(key), cell_text(value)),
        Op::Delete { key } => format!("kv.delete {}", cell_text(key)),
        Op::Link { src, label, dst, props } if props.is_empty() => {
            format!("graph.link {} -[{}]-> {}", cell_text(src), label.escape_default(), cell_text(dst))
        }
        Op::Link { src, label, dst, props } => format!(
            "graph.link {} -[{}]-> {} props {}",
            cell_text(src),
            label.escape_default(),
            cell_text(dst),
            cell_text(props)
        ),
        Op::Unlink { src, label, dst } => {
            format!("graph.unlink {} -[{}]-> {}", cell_text(src), label.escape_default(), cell_text(dst))
        }
    }
}

pub(crate) fn entry_json(stored: &StoredEntry) -> Value {
    let entry = stored.entry.entry();
    json!({
        "hash": stored.entry.hash().to_hex(),
        "log_id": entry.log.to_hex(),
        "seq": stored.seq,
        "clock": clock_json(&entry.clock),
        "next": entry.next.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        "refs": entry.refs.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        "ops": entry.ops.iter().map(op_json).collect::<Vec<_>>(),
        "signature": hex::encode(entry.signature.0),
        "encoded_hex": hex::encode(stored.entry.bytes()),
        "verified": true,
    })
}

pub(crate) fn entry_human(stored: &StoredEntry) -> String {
    let entry = stored.entry.entry();
    let mut out = String::new();
    let _ = writeln!(out, "hash:      {}", stored.entry.hash());
    let _ = writeln!(out, "log:       {}", entry.log);
    let _ = writeln!(out, "seq:       {}", stored.seq);
    let _ = writeln!(out, "time:      {}", entry.clock.time);
    let _ = writeln!(out, "writer:    {}", entry.clock.writer);
    let list = |hashes: &[plait_core::EntryHash]| {
        if hashes.is_empty() {
            "none".to_owned()
        } else {
            hashes.iter().map(|h| h.to_hex()).collect::<Vec<_>>().join("\n           ")
        }
    };
    let _ = writeln!(out, "next:      {}", list(&entry.next));
    if !entry.refs.is_empty() {
        let _ = writeln!(out, "refs:      {}", list(&entry.refs));
    }
    let _ = writeln!(out, "signature: {} (verified)", hex::encode(entry.signature.0));
    let _ = writeln!(out, "ops:       {}", entry.ops.len());
    for (i, op) in entry.ops.iter().enumerate() {
        let _ = writeln!(out, "  {i:>4}  {}", op_human(op));
    }
    out
}

pub(crate) fn heads_json(heads: &Heads) -> Value {
    json!({
        "log_id": heads.log_id.to_hex(),
        "seq": heads.seq,
        "heads": heads
            .heads
            .iter()
            .map(|h| json!({ "hash": h.hash.to_hex(), "clock": clock_json(&h.clock) }))
            .collect::<Vec<_>>(),
    })
}

pub(crate) fn heads_human(heads: &Heads) -> String {
    let mut out = format!("log {}  seq {}  {} head(s)\n", heads.log_id, heads.seq, heads.heads.len());
    if !heads.heads.is_empty() {
        let rows: Vec<Vec<String>> = heads
            .heads
            .iter()
            .map(|h| vec![h.hash.to_hex(), h.clock.time.to_string(), prefix(&h.clock.writer.to_hex())])
            .collect();
        out.push_str(&table(&["HASH", "TIME", "WRITER"], &rows));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Status.

pub(crate) fn status_json(status: &Status) -> Value {
    let mut out = object(json!({
        "node_id": status.node_id.to_hex(),
        "writer": status.writer.to_hex(),
        "epoch": hex::encode(status.epoch),
        "version": status.version,
        "uptime_ms": status.uptime_ms,
        "disk_bytes": status.disk_bytes,
        "writable": status.writable,
    }));
    out.insert("logs".into(), status.logs.iter().map(log_json).collect());
    Value::Object(out)
}

pub(crate) fn status_human(status: &Status) -> String {
    let writable = if status.writable { "yes" } else { "NO: a durability error stopped writes" };
    let mut out = table(
        &["FIELD", "VALUE"],
        &[
            vec!["node id".into(), status.node_id.to_hex()],
            vec!["writer".into(), status.writer.to_hex()],
            vec!["epoch".into(), hex::encode(status.epoch)],
            vec!["version".into(), status.version.clone()],
            vec!["uptime".into(), duration_text(status.uptime_ms)],
            vec!["disk".into(), size_text(status.disk_bytes)],
            vec!["writable".into(), writable.into()],
        ],
    );
    // The header row of a two-column key/value list says nothing; drop it.
    out = out.split_once('\n').map(|(_, rest)| rest.to_owned()).unwrap_or(out);
    out.push('\n');
    out.push_str(&logs_table(&status.logs));
    out
}

#[cfg(test)]
mod tests {
    use plait_client::{Head, SubmitOutcome};
    use plait_core::{EntryDraft, EntryHash, LogId, LogType, PublicKey, VerifiedEntry, WriterKey};

    use super::*;

    fn clock(time: u64) -> Clock {
        Clock { time, writer: PublicKey([1; 32]) }
    }

    fn log_info(name: &str) -> LogInfo {
        LogInfo {
            log_id: LogId([0xab; 32]),
            name: name.into(),
            log_type: LogType::Kv,
            writers: Writers::Keys(vec![PublicKey([1; 32])]),
            created_by: PublicKey([1; 32]),
            manifest: vec![],
            seq: 12,
            heads: 1,
            pending: 0,
            ops: 40,
        }
    }

    fn entry() -> VerifiedEntry {
        EntryDraft {
            log: LogId([2; 32]),
            time: 5,
            next: vec![EntryHash([3; 32])],
            refs: vec![],
            ops: vec![
                Op::Put { key: b"theme".to_vec(), value: b"dark".to_vec() },
                Op::Put { key: b"bin".to_vec(), value: vec![0xff, 0x00] },
            ],
        }
        .sign(&WriterKey::from_secret([9; 32]))
        .unwrap()
    }

    /// Text stays text; bytes that are not UTF-8 become 0x-hex in human output and a
    /// `_hex` field in JSON.
    #[test]
    fn bytes_as_text_or_hex() {
        assert_eq!(bytes_text(b"dark"), "dark");
        assert_eq!(bytes_text(&[0xff, 0x01]), "0xff01");
        assert_eq!(cell_text(b"a\nb\tc"), "a\\nb\\tc");
        let mut map = Map::new();
        put_bytes(&mut map, "value", b"dark");
        put_bytes(&mut map, "key", &[0xff]);
        assert_eq!(Value::Object(map), json!({ "value": "dark", "key_hex": "ff" }));
    }

    /// Tables pad every column but the last to its widest cell.
    #[test]
    fn tables_align() {
        let rows = vec![vec!["chat".into(), "feed".into()], vec!["settings".into(), "kv".into()]];
        assert_eq!(table(&["NAME", "TYPE"], &rows), "NAME      TYPE\nchat      feed\nsettings  kv\n");
    }

    /// Durations and sizes read naturally.
    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration_text(12_345), "12s");
        assert_eq!(duration_text(250_000), "4m 10s");
        assert_eq!(duration_text(7_500_000), "2h 5m");
        assert_eq!(duration_text(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
        assert_eq!(size_text(512), "512 B");
        assert_eq!(size_text(1536), "1.5 KiB");
        assert_eq!(size_text(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    /// A log in JSON has its full id, type name and writers; the list table shows an id
    /// prefix.
    #[test]
    fn logs() {
        let log = log_info("settings");
        let value = log_json(&log);
        assert_eq!(value["log_id"], "ab".repeat(32));
        assert_eq!(value["type"], "kv");
        assert_eq!(value["open"], false);
        assert_eq!(value["writers"][0], "01".repeat(32));
        let human = log_human(&log);
        assert!(human.contains("name:     settings\n"), "{human}");
        assert!(human.contains(&"ab".repeat(32)), "{human}");
        let listed = logs_table(&[log]);
        assert_eq!(
            listed,
            "NAME      ID                TYPE  SEQ  HEADS  PENDING  OPS\n\
             settings  abababababababab  kv    12   1      0        40\n"
        );
        assert_eq!(logs_table(&[]), "no logs\n");
    }

    /// Acks and submit results name seq and entry.
    #[test]
    fn acks() {
        let ack = WriteAck {
            log_id: LogId([2; 32]),
            entry_hash: EntryHash([3; 32]),
            seq: 7,
            op_index: 0,
            clock: clock(4),
        };
        assert_eq!(ack_human(&ack), format!("ok: seq 7, entry {}, time 4\n", "03".repeat(32)));
        assert_eq!(ack_json(&ack)["clock"]["time"], 4);
        let pending =
            SubmitResult { entry_hash: EntryHash([3; 32]), outcome: SubmitOutcome::Pending, seq: 0 };
        assert!(submit_human(&pending).starts_with("pending: entry"));
        assert_eq!(submit_json(&pending)["outcome"], "pending");
    }

    /// An entry shows every op; binary values are hex.
    #[test]
    fn entries() {
        let stored = StoredEntry { entry: entry(), seq: 9 };
        let human = entry_human(&stored);
        assert!(human.contains("kv.put theme = dark"), "{human}");
        assert!(human.contains("kv.put bin = 0xff00"), "{human}");
        assert!(human.contains(&format!("next:      {}", "03".repeat(32))), "{human}");
        let value = entry_json(&stored);
        assert_eq!(value["seq"], 9);
        assert_eq!(value["ops"][0], json!({ "op": "kv.put", "key": "theme", "value": "dark" }));
        assert_eq!(value["ops"][1]["value_hex"], "ff00");
        assert_eq!(value["clock"]["time"], 5);
    }

    /// Heads list hash, time and a writer prefix.
    #[test]
    fn heads() {
        let heads = Heads {
            log_id: LogId([2; 32]),
            heads: vec![Head { hash: EntryHash([4; 32]), clock: clock(3) }],
            seq: 6,
        };
        let human = heads_human(&heads);
        assert!(human.starts_with(&format!("log {}  seq 6  1 head(s)\n", "02".repeat(32))), "{human}");
        assert!(human.contains(&"04".repeat(32)), "{human}");
        assert_eq!(heads_json(&heads)["heads"][0]["clock"]["time"], 3);
    }

    /// Status shows identity and uptime, then the logs table.
    #[test]
    fn status() {
        let status = Status {
            node_id: PublicKey([5; 32]),
            writer: PublicKey([6; 32]),
            epoch: [7; 16],
            version: "0.1.0".into(),
            uptime_ms: 250_000,
            logs: vec![log_info("chat")],
            disk_bytes: 2048,
            writable: true,
        };
        let human = status_human(&status);
        assert!(human.starts_with(&format!("node id   {}\n", "05".repeat(32))), "{human}");
        assert!(human.contains("uptime    4m 10s\n"), "{human}");
        assert!(human.contains("\nNAME  ID"), "{human}");
        let value = status_json(&status);
        assert_eq!(value["epoch"], "07".repeat(16));
        assert_eq!(value["logs"][0]["name"], "chat");
    }

    /// Edges and ops read as arrows.
    #[test]
    fn graph() {
        let edge = Edge {
            src: b"alice".to_vec(),
            label: "follows".into(),
            dst: b"bob".to_vec(),
            props: vec![],
            clock: clock(1),
        };
        assert_eq!(
            edges_table(std::slice::from_ref(&edge)),
            "SRC    LABEL    DST  PROPS\nalice  follows  bob\n"
        );
        assert_eq!(edge_json(&edge)["props"], "");
        let op = Op::Link { src: b"a".to_vec(), label: "knows".into(), dst: b"b".to_vec(), props: vec![] };
        assert_eq!(op_human(&op), "graph.link a -[knows]-> b");
    }
}

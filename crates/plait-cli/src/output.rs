//! How results look: the human form (text, tables) and the JSON form of each reply.
//!
//! Byte strings are shown as text when they are valid UTF-8 and as hex otherwise. In
//! human output hex gets a `0x` prefix; in JSON a byte field `value` becomes `value_hex`,
//! so a program never has to guess which encoding it is reading.

use std::fmt::Write as _;

use plait_client::{
    AppliedOp, BackupReport, Caller, CheckpointInfo, ConsumerInfo, DrainedLog, Edge, FeedItem, Heads,
    ImportReport, KeyValue, LogInfo, PeerLogStatus, PeerStatus, Status, StoredEntry, SubmitResult, Version,
    WriteAck, WriterEntry,
};
use plait_core::{Clock, Op, Writers};
use serde_json::{Map, Value, json};

/// Characters of a hex id shown where a table has no room for all 64.
pub(crate) const ID_PREFIX_LEN: usize = 16;

/// Characters of a peer's last error shown in the status table; JSON has all of it.
pub(crate) const PEER_ERROR_CHARS_MAX: usize = 48;

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

/// Text for a one-line cell, cut to `max` characters with `…` where it was cut.
fn truncated(text: &str, max: usize) -> String {
    let text = cell_text(text.as_bytes());
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// How long ago something happened: `0.4s ago` under a minute, then `4m 10s ago`;
/// `never` when it did not.
pub(crate) fn ago_text(ms: Option<u64>) -> String {
    match ms {
        None => "never".to_owned(),
        Some(ms) if ms < 60_000 => format!("{:.1}s ago", ms as f64 / 1000.0),
        Some(ms) => format!("{} ago", duration_text(ms)),
    }
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
        "creator": log.creator,
        "seq": log.seq,
        "heads": log.heads,
        "pending": log.pending,
        "ops": log.ops,
        "digest": log.digest.map(|d| d.to_hex()),
        "consumers": log.consumers.iter().map(consumer_json).collect::<Vec<_>>(),
    })
}

pub(crate) fn consumer_json(c: &ConsumerInfo) -> Value {
    json!({ "name": c.name, "committed_seq": c.committed_seq, "lag": c.lag })
}

/// The consumers of the given logs, one row each; empty when none has any.
pub(crate) fn consumers_table(logs: &[LogInfo]) -> String {
    let rows: Vec<Vec<String>> = logs
        .iter()
        .flat_map(|log| {
            log.consumers.iter().map(|c| {
                vec![log.name.clone(), c.name.clone(), c.committed_seq.to_string(), c.lag.to_string()]
            })
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    table(&["LOG", "CONSUMER", "COMMITTED", "LAG"], &rows)
}

/// One applied op of a subscription: seq, op index, origin and the op.
pub(crate) fn applied_human(applied: &AppliedOp) -> String {
    format!(
        "{}\t{}\t{}\t{}\n",
        applied.seq,
        applied.op_index,
        applied.origin,
        op_human(&applied.op).trim_end()
    )
}

pub(crate) fn applied_json(applied: &AppliedOp) -> Value {
    json!({
        "seq": applied.seq,
        "entry_hash": applied.entry_hash.to_hex(),
        "op_index": applied.op_index,
        "entry_ops": applied.entry_ops,
        "clock": clock_json(&applied.clock),
        "origin": applied.origin.to_string(),
        "op": op_json(&applied.op),
    })
}

pub(crate) fn log_human(log: &LogInfo) -> String {
    format!(
        "name:     {}\nid:       {}\ntype:     {}\nwriters:  {}\nsigner:   {}\ncreator:  {}\nseq:      {}\nheads:    {}\npending:  {}\nops:      {}\ndigest:   {}\n",
        log.name,
        log.log_id,
        log.log_type,
        writers_text(&log.writers),
        log.created_by,
        if log.creator.is_empty() { "-" } else { &log.creator },
        log.seq,
        log.heads,
        log.pending,
        log.ops,
        log.digest.map_or_else(|| "-".to_owned(), |d| d.to_hex())
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
    out.insert("origin".into(), applied.origin.to_string().into());
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
        "members_generation": status.members_generation,
        "draining": status.draining,
        "ready": status.not_ready.is_none(),
        "not_ready_reason": status.not_ready,
        "caller": {
            "principal": status.caller.principal,
            "authenticated_by": status.caller.authenticated_by,
            "roles": status.caller.roles,
            "logs_created": status.caller.logs_created,
            "logs_quota": status.caller.logs_quota,
        },
        "backup_destinations": status.backup_destinations,
    }));
    out.insert("logs".into(), status.logs.iter().map(log_json).collect());
    out.insert("peers".into(), status.peers.iter().map(peer_json).collect());
    Value::Object(out)
}

pub(crate) fn peer_json(peer: &PeerStatus) -> Value {
    json!({
        "address": peer.address,
        "source": peer.source,
        "node_id": peer.node_id.map(|k| k.to_hex()),
        "epoch": peer.epoch.map(hex::encode),
        "connected": peer.connected,
        "last_contact_ms_ago": peer.last_contact_ms_ago,
        "last_error": peer.last_error,
        "logs": peer.logs.iter().map(peer_log_json).collect::<Vec<_>>(),
    })
}

fn peer_log_json(log: &PeerLogStatus) -> Value {
    json!({
        "log_id": log.log_id.to_hex(),
        "name": log.name,
        "cursor": log.cursor,
        "peer_seq": log.peer_seq,
        "lag": log.lag,
        "peer_holds": log.peer_holds,
        "verified_seq": log.verified_seq,
        "digest_mismatch": log.digest_mismatch,
    })
}

/// One row per peer: who it is and whether it answers.
pub(crate) fn peers_table(peers: &[PeerStatus]) -> String {
    if peers.is_empty() {
        return "no peers\n".to_owned();
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|peer| {
            vec![
                cell_text(peer.address.as_bytes()),
                cell_text(peer.source.as_bytes()),
                peer.node_id.map_or_else(|| "-".to_owned(), |k| prefix(&k.to_hex())),
                if peer.connected { "yes" } else { "no" }.to_owned(),
                ago_text(peer.last_contact_ms_ago),
                peer.last_error
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |e| truncated(e, PEER_ERROR_CHARS_MAX)),
            ]
        })
        .collect();
    table(&["PEER", "SOURCE", "NODE", "CONNECTED", "LAST CONTACT", "LAST ERROR"], &rows)
}

/// One row per peer and log: how far replication has come both ways. Empty when no
/// peer has reported a log yet.
pub(crate) fn peer_logs_table(peers: &[PeerStatus]) -> String {
    let rows: Vec<Vec<String>> = peers
        .iter()
        .flat_map(|peer| {
            peer.logs.iter().map(move |log| {
                // A log this replica does not host has no name here; its id stands in.
                let name = if log.name.is_empty() {
                    prefix(&log.log_id.to_hex())
                } else {
                    cell_text(log.name.as_bytes())
                };
                vec![
                    cell_text(peer.address.as_bytes()),
                    name,
                    log.cursor.to_string(),
                    log.peer_seq.to_string(),
                    log.lag.to_string(),
                    log.peer_holds.to_string(),
                    if log.digest_mismatch {
                        "MISMATCH".to_owned()
                    } else if log.verified_seq > 0 {
                        format!("equal at {}", log.verified_seq)
                    } else {
                        "-".to_owned()
                    },
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    table(&["PEER", "LOG", "CURSOR", "PEER SEQ", "LAG", "PEER HOLDS", "DIGEST"], &rows)
}

/// `alice (certificate; roles read, log-admin)`, or `anonymous (security off)`.
fn caller_text(caller: &Caller) -> String {
    if caller.authenticated_by == "none" || caller.authenticated_by.is_empty() {
        return format!(
            "{} (security off)",
            if caller.principal.is_empty() { "anonymous" } else { &caller.principal }
        );
    }
    let roles = if caller.roles.is_empty() {
        "no roles".to_owned()
    } else {
        format!("roles {}", caller.roles.join(", "))
    };
    let quota = match caller.logs_quota {
        Some(quota) => format!("; created {} of {quota} logs", caller.logs_created),
        None => String::new(),
    };
    format!("{} ({}; {roles}{quota})", caller.principal, caller.authenticated_by)
}

pub(crate) fn status_human(status: &Status) -> String {
    let writable = if status.writable { "yes" } else { "NO: a durability error stopped writes" };
    let draining = if status.draining { "YES: local writes are refused before removal" } else { "no" };
    let ready = match &status.not_ready {
        None => "yes".to_owned(),
        Some(reason) => format!("NO: {reason}"),
    };
    let members = match status.members_generation {
        0 => "generation 0 (never set)".to_owned(),
        generation => format!("generation {generation}"),
    };
    let backups = match status.backup_destinations.join(", ") {
        names if names.is_empty() => "none (start plaitd with --backup-destination NAME=URL)".to_owned(),
        names => names,
    };
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
            vec!["members".into(), members],
            vec!["draining".into(), draining.into()],
            vec!["ready".into(), ready],
            vec!["you".into(), caller_text(&status.caller)],
            vec!["backups".into(), backups],
        ],
    );
    // The header row of a two-column key/value list says nothing; drop it.
    out = out.split_once('\n').map(|(_, rest)| rest.to_owned()).unwrap_or(out);
    out.push('\n');
    out.push_str(&logs_table(&status.logs));
    let consumers = consumers_table(&status.logs);
    if !consumers.is_empty() {
        out.push('\n');
        out.push_str(&consumers);
    }
    out.push('\n');
    out.push_str(&peers_table(&status.peers));
    let peer_logs = peer_logs_table(&status.peers);
    if !peer_logs.is_empty() {
        out.push('\n');
        out.push_str(&peer_logs);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Membership and drain.

pub(crate) fn members_set_human(generation: u64, members: &[String]) -> String {
    match members.len() {
        0 => format!("members generation {generation}: the member list is empty\n"),
        1 => format!("members generation {generation}: 1 member\n"),
        n => format!("members generation {generation}: {n} members\n"),
    }
}

pub(crate) fn drained_json(logs: &[DrainedLog]) -> Value {
    let logs: Vec<Value> = logs
        .iter()
        .map(|log| {
            json!({
                "log_id": log.log_id.to_hex(),
                "name": log.name,
                "seq": log.seq,
                "held_by": log.held_by.map(|k| k.to_hex()),
            })
        })
        .collect();
    json!({ "drained": true, "logs": logs })
}

pub(crate) fn drained_human(logs: &[DrainedLog]) -> String {
    if logs.is_empty() {
        return "drained: the replica hosts no logs; it refuses local writes\n".to_owned();
    }
    let rows: Vec<Vec<String>> = logs
        .iter()
        .map(|log| {
            vec![
                cell_text(log.name.as_bytes()),
                log.seq.to_string(),
                log.held_by.map_or_else(|| "- (empty log)".to_owned(), |k| prefix(&k.to_hex())),
            ]
        })
        .collect();
    let mut out =
        "drained: another member holds every entry; the replica refuses local writes\n\n".to_owned();
    out.push_str(&table(&["LOG", "SEQ", "HELD BY"], &rows));
    out
}

// ---------------------------------------------------------------------------------------
// Checkpoints, snapshots and backups.

pub(crate) fn checkpoint_json(checkpoint: &CheckpointInfo) -> Value {
    json!({
        "log_id": checkpoint.log_id.to_hex(),
        "epoch": hex::encode(checkpoint.epoch),
        "seq": checkpoint.seq,
        "heads": checkpoint.heads.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        "state_root": hex::encode(checkpoint.state_root),
        "entries": checkpoint.n_entries,
        "ops": checkpoint.n_ops,
    })
}

pub(crate) fn checkpoint_human(checkpoint: &CheckpointInfo) -> String {
    let heads = if checkpoint.heads.is_empty() {
        "(none)".to_owned()
    } else {
        checkpoint.heads.iter().map(|h| h.to_hex()).collect::<Vec<_>>().join("\n            ")
    };
    format!(
        "log         {}\nseq         {}\nheads       {heads}\nstate root  {}\nentries     {}\nops         {}\nepoch       {}\n",
        checkpoint.log_id,
        checkpoint.seq,
        hex::encode(checkpoint.state_root),
        checkpoint.n_entries,
        checkpoint.n_ops,
        hex::encode(checkpoint.epoch),
    )
}

pub(crate) fn export_json(log: &str, since: Option<u64>, bytes: u64, out: &str) -> Value {
    json!({ "log": log, "kind": if since.is_some() { "delta" } else { "full" }, "base_seq": since, "bytes": bytes, "out": out })
}

pub(crate) fn export_human(log: &str, since: Option<u64>, bytes: u64, out: &str) -> String {
    let what = match since {
        Some(seq) => format!("delta snapshot of {log} after seq {seq}"),
        None => format!("full snapshot of {log}"),
    };
    format!("wrote {what} to {out} ({})\n", size_text(bytes))
}

pub(crate) fn import_json(report: &ImportReport) -> Value {
    json!({
        "log_id": report.log_id.to_hex(),
        "kind": report.kind.name(),
        "entries_read": report.entries_read,
        "entries_stored": report.entries_stored,
        "checkpoint": checkpoint_json(&report.checkpoint),
    })
}

pub(crate) fn import_human(report: &ImportReport) -> String {
    format!(
        "imported log {}\nkind        {}\nentries     {} read, {} stored\ncheckpoint  seq {} of epoch {}\nstate root  {}\n",
        report.log_id,
        report.kind.name(),
        report.entries_read,
        report.entries_stored,
        report.checkpoint.seq,
        hex::encode(report.checkpoint.epoch),
        hex::encode(report.checkpoint.state_root),
    )
}

pub(crate) fn backup_json(report: &BackupReport) -> Value {
    let objects: Vec<Value> = report
        .objects
        .iter()
        .map(|o| {
            json!({
                "log_id": o.log_id.to_hex(),
                "name": o.name,
                "kind": o.kind.name(),
                "key": o.key,
                "bytes": o.bytes,
                "base_seq": o.base_seq,
                "checkpoint": checkpoint_json(&o.checkpoint),
            })
        })
        .collect();
    json!({ "backup_id": report.backup_id, "objects": objects, "deleted": report.deleted })
}

pub(crate) fn backup_human(report: &BackupReport) -> String {
    let mut out = format!("backup {}: {} object(s) written\n", report.backup_id, report.objects.len());
    if !report.objects.is_empty() {
        let rows: Vec<Vec<String>> = report
            .objects
            .iter()
            .map(|o| {
                let seq = match o.base_seq {
                    Some(base) => format!("{base}..{}", o.checkpoint.seq),
                    None => o.checkpoint.seq.to_string(),
                };
                vec![
                    cell_text(o.name.as_bytes()),
                    o.kind.name().to_owned(),
                    size_text(o.bytes),
                    seq,
                    cell_text(o.key.as_bytes()),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["LOG", "KIND", "BYTES", "SEQ", "KEY"], &rows));
    }
    if !report.deleted.is_empty() {
        let _ = writeln!(out, "\ndeleted by retention ({}):", report.deleted.len());
        for key in &report.deleted {
            let _ = writeln!(out, "  {}", cell_text(key.as_bytes()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// History.

pub(crate) fn versions_human(versions: &[Version]) -> String {
    if versions.is_empty() {
        return "(no versions)\n".to_owned();
    }
    let mut out = String::new();
    for v in versions {
        let value = match &v.value {
            Some(value) => bytes_text(value),
            None => "deleted".to_owned(),
        };
        let _ = writeln!(
            out,
            "seq {:<8} time {:<8} writer {}  entry {}  {value}",
            v.seq,
            v.clock.time,
            &v.clock.writer.to_hex()[..ID_PREFIX_LEN],
            v.entry_hash,
        );
    }
    out
}

pub(crate) fn version_json(v: &Version) -> Value {
    let mut out = Map::new();
    out.insert("seq".into(), v.seq.into());
    out.insert("entry_hash".into(), v.entry_hash.to_hex().into());
    out.insert("op_index".into(), v.op_index.into());
    out.insert("clock".into(), clock_json(&v.clock));
    out.insert("live".into(), v.value.is_some().into());
    if let Some(value) = &v.value {
        put_bytes(&mut out, "value", value);
    }
    Value::Object(out)
}

pub(crate) fn writer_entries_human(entries: &[WriterEntry]) -> String {
    if entries.is_empty() {
        return "(no entries by that writer in the range)\n".to_owned();
    }
    let mut out = String::new();
    for e in entries {
        let _ = writeln!(
            out,
            "seq {:<8} time {:<8} ops {:<5} entry {}",
            e.seq, e.clock.time, e.op_count, e.entry_hash
        );
    }
    out
}

pub(crate) fn writer_entry_json(e: &WriterEntry) -> Value {
    json!({ "seq": e.seq, "entry_hash": e.entry_hash.to_hex(), "clock": clock_json(&e.clock), "op_count": e.op_count })
}

#[cfg(test)]
mod tests {
    use plait_client::{BackupKind, BackupObject, Head, ImportKind, SubmitOutcome};
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
            creator: "token:app".into(),
            digest: Some(plait_core::SetDigest([9; 32])),
            consumers: vec![],
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

    fn peers() -> Vec<PeerStatus> {
        vec![
            PeerStatus {
                address: "10.0.0.2:7070".into(),
                node_id: Some(PublicKey([0xcd; 32])),
                epoch: Some([8; 16]),
                connected: true,
                last_contact_ms_ago: Some(1234),
                last_error: None,
                source: "members".into(),
                logs: vec![PeerLogStatus {
                    log_id: LogId([0xab; 32]),
                    name: "chat".into(),
                    cursor: 10,
                    peer_seq: 12,
                    lag: 2,
                    peer_holds: 9,
                    verified_seq: 11,
                    digest_mismatch: false,
                }],
            },
            PeerStatus {
                address: "10.0.0.3:7070".into(),
                node_id: None,
                epoch: None,
                connected: false,
                last_contact_ms_ago: None,
                last_error: Some(format!("transport error: connection refused{}", " again".repeat(20))),
                source: "flag".into(),
                logs: vec![],
            },
        ]
    }

    fn status_of(peers: Vec<PeerStatus>) -> Status {
        Status {
            node_id: PublicKey([5; 32]),
            writer: PublicKey([6; 32]),
            epoch: [7; 16],
            version: "0.1.0".into(),
            uptime_ms: 250_000,
            logs: vec![log_info("chat")],
            disk_bytes: 2048,
            writable: true,
            peers,
            members_generation: 3,
            draining: false,
            not_ready: None,
            caller: Caller {
                principal: "alice".into(),
                authenticated_by: "token".into(),
                roles: vec!["read".into()],
                logs_created: 2,
                logs_quota: Some(100),
            },
            backup_destinations: vec!["nightly".into(), "offsite".into()],
        }
    }

    /// Status shows identity, uptime, membership and drain state, then the logs table,
    /// then the peers and per peer and log how far replication has come.
    #[test]
    fn status() {
        let status = status_of(peers());
        let human = status_human(&status);
        assert!(human.starts_with(&format!("node id   {}\n", "05".repeat(32))), "{human}");
        assert!(human.contains("uptime    4m 10s\n"), "{human}");
        assert!(
            human.contains(
                "members   generation 3\ndraining  no\nready     yes\nyou       alice (token; roles read; created 2 of 100 logs)\nbackups   nightly, offsite\n"
            ),
            "{human}"
        );
        assert!(human.contains("\nNAME  ID"), "{human}");
        let error_cell = format!("transport error: connection refused{}", " again".repeat(20));
        let error_cell: String = error_cell.chars().take(PEER_ERROR_CHARS_MAX - 1).collect::<String>() + "…";
        let peers_and_logs = format!(
            "\n\
             PEER           SOURCE   NODE              CONNECTED  LAST CONTACT  LAST ERROR\n\
             10.0.0.2:7070  members  cdcdcdcdcdcdcdcd  yes        1.2s ago      -\n\
             10.0.0.3:7070  flag     -                 no         never         {error_cell}\n\
             \n\
             PEER           LOG   CURSOR  PEER SEQ  LAG  PEER HOLDS  DIGEST\n\
             10.0.0.2:7070  chat  10      12        2    9           equal at 11\n"
        );
        assert!(human.ends_with(&peers_and_logs), "{human}");

        let value = status_json(&status);
        assert_eq!(value["epoch"], "07".repeat(16));
        assert_eq!(value["logs"][0]["name"], "chat");
        assert_eq!(value["members_generation"], 3);
        assert_eq!(value["draining"], false);
        assert_eq!(value["backup_destinations"], json!(["nightly", "offsite"]));
        assert_eq!(
            value["peers"][0],
            json!({
                "address": "10.0.0.2:7070",
                "source": "members",
                "node_id": "cd".repeat(32),
                "epoch": "08".repeat(16),
                "connected": true,
                "last_contact_ms_ago": 1234,
                "last_error": null,
                "logs": [{
                    "log_id": "ab".repeat(32),
                    "name": "chat",
                    "cursor": 10,
                    "peer_seq": 12,
                    "lag": 2,
                    "peer_holds": 9,
                    "verified_seq": 11,
                    "digest_mismatch": false,
                }],
            })
        );
        // JSON keeps the whole error; only the table cuts it.
        assert!(value["peers"][1]["last_error"].as_str().unwrap().ends_with(" again"));
        assert_eq!(value["peers"][1]["node_id"], Value::Null);
        assert_eq!(value["peers"][1]["last_contact_ms_ago"], Value::Null);
    }

    /// A replica without peers says so; a draining one says what that means.
    #[test]
    fn status_alone_and_draining() {
        let mut status = status_of(vec![]);
        status.draining = true;
        status.members_generation = 0;
        status.backup_destinations.clear();
        let human = status_human(&status);
        assert!(
            human.contains("backups   none (start plaitd with --backup-destination NAME=URL)\n"),
            "{human}"
        );
        assert!(human.ends_with("\nno peers\n"), "{human}");
        assert!(human.contains("members   generation 0 (never set)\n"), "{human}");
        assert!(human.contains("draining  YES: local writes are refused"), "{human}");
        assert_eq!(status_json(&status)["peers"], json!([]));
        assert_eq!(status_json(&status)["draining"], true);
    }

    /// A peer log for a log this replica does not host shows the id prefix instead.
    #[test]
    fn peer_log_without_a_name() {
        let mut peers = peers();
        peers[0].logs[0].name = String::new();
        assert!(peer_logs_table(&peers).contains("10.0.0.2:7070  abababababababab  10"));
    }

    /// Contact times read as seconds under a minute, then as a duration; errors are cut
    /// to one line of bounded width.
    #[test]
    fn contact_and_errors() {
        assert_eq!(ago_text(None), "never");
        assert_eq!(ago_text(Some(1234)), "1.2s ago");
        assert_eq!(ago_text(Some(40)), "0.0s ago");
        assert_eq!(ago_text(Some(250_000)), "4m 10s ago");
        assert_eq!(truncated("short", 10), "short");
        assert_eq!(truncated("line one\nline two", 11), "line one\\n…");
        assert_eq!(truncated("abcdefghijk", 10).chars().count(), 10);
    }

    /// Drain lists each log with its seq and a holder's id prefix; membership updates
    /// name the generation.
    #[test]
    fn drain_and_members() {
        let logs = vec![
            DrainedLog {
                log_id: LogId([0xab; 32]),
                name: "chat".into(),
                seq: 12,
                held_by: Some(PublicKey([0xcd; 32])),
            },
            DrainedLog { log_id: LogId([0xef; 32]), name: "empty".into(), seq: 0, held_by: None },
        ];
        let human = drained_human(&logs);
        assert!(
            human.ends_with(
                "LOG    SEQ  HELD BY\n\
                 chat   12   cdcdcdcdcdcdcdcd\n\
                 empty  0    - (empty log)\n"
            ),
            "{human}"
        );
        assert!(human.starts_with("drained: "), "{human}");
        let value = drained_json(&logs);
        assert_eq!(value["drained"], true);
        assert_eq!(value["logs"][0]["held_by"], "cd".repeat(32));
        assert_eq!(value["logs"][1]["held_by"], Value::Null);
        assert!(drained_human(&[]).contains("no logs"));
        assert_eq!(members_set_human(4, &["a:1".into(), "b:1".into()]), "members generation 4: 2 members\n");
        assert_eq!(members_set_human(5, &[]), "members generation 5: the member list is empty\n");
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
    fn checkpoint_info() -> CheckpointInfo {
        CheckpointInfo {
            log_id: LogId([0xab; 32]),
            epoch: [0x11; 16],
            seq: 12,
            heads: vec![EntryHash([0x01; 32]), EntryHash([0x02; 32])],
            state_root: [0x77; 32],
            n_entries: 12,
            n_ops: 30,
        }
    }

    /// A checkpoint shows its seq, every head, the state root and op count in hex and
    /// numbers; JSON has the same fields.
    #[test]
    fn checkpoints_and_imports() {
        let human = checkpoint_human(&checkpoint_info());
        assert!(human.contains("seq         12\n"), "{human}");
        assert!(
            human.contains(&format!("heads       {}\n            {}\n", "01".repeat(32), "02".repeat(32))),
            "{human}"
        );
        assert!(human.contains(&format!("state root  {}\n", "77".repeat(32))), "{human}");
        assert!(human.contains("ops         30\n"), "{human}");
        let value = checkpoint_json(&checkpoint_info());
        assert_eq!(value["state_root"], "77".repeat(32));
        assert_eq!(value["heads"][1], "02".repeat(32));
        assert_eq!((value["seq"].as_u64(), value["ops"].as_u64()), (Some(12), Some(30)));

        let report = ImportReport {
            log_id: LogId([0xab; 32]),
            kind: ImportKind::UpToDate,
            checkpoint: checkpoint_info(),
            entries_read: 12,
            entries_stored: 0,
        };
        let human = import_human(&report);
        assert!(
            human.contains("kind        up_to_date\nentries     12 read, 0 stored\ncheckpoint  seq 12"),
            "{human}"
        );
        let value = import_json(&report);
        assert_eq!((value["kind"].as_str(), value["entries_stored"].as_u64()), (Some("up_to_date"), Some(0)));
        assert_eq!(value["checkpoint"]["seq"], 12);
        assert_eq!(
            export_human("kv", Some(4), 2048, "kv.snap"),
            "wrote delta snapshot of kv after seq 4 to kv.snap (2.0 KiB)\n"
        );
        assert_eq!(export_json("kv", None, 10, "-")["kind"], "full");
    }

    /// A backup lists its objects in a table (a delta's seq as base..seq) and the keys
    /// retention deleted.
    #[test]
    fn backups() {
        let object = |kind, base_seq, key: &str| BackupObject {
            log_id: LogId([0xab; 32]),
            name: "kv".into(),
            kind,
            key: key.into(),
            bytes: 512,
            checkpoint: checkpoint_info(),
            base_seq,
        };
        let report = BackupReport {
            backup_id: "b2".into(),
            objects: vec![
                object(BackupKind::Full, None, "kv/full.snap"),
                object(BackupKind::Delta, Some(5), "kv/d.snap"),
            ],
            deleted: vec!["kv/old.snap".into()],
        };
        assert_eq!(
            backup_human(&report),
            "backup b2: 2 object(s) written\n\n\
             LOG  KIND   BYTES  SEQ    KEY\n\
             kv   full   512 B  12     kv/full.snap\n\
             kv   delta  512 B  5..12  kv/d.snap\n\
             \ndeleted by retention (1):\n  kv/old.snap\n"
        );
        let value = backup_json(&report);
        assert_eq!(value["objects"][1]["kind"], "delta");
        assert_eq!(value["objects"][1]["base_seq"], 5);
        assert_eq!(value["objects"][0]["base_seq"], Value::Null);
        assert_eq!(value["deleted"][0], "kv/old.snap");
    }
}

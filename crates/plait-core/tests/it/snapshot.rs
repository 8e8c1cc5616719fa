//! The snapshot stream format: round trips, and every kind of damage refused.

use plait_core::{
    Checkpoint, EntryDraft, EntryHash, LogId, LogType, Op, SnapshotError, SnapshotHeader, SnapshotItem,
    SnapshotReader, SnapshotWriter, StateRoot,
};

use crate::support::{key, manifest};

fn sample() -> (SnapshotHeader, Vec<Vec<u8>>, Vec<u8>) {
    let m = manifest(LogType::Kv, &[&key(1)]);
    let mut entries = Vec::new();
    let mut next = vec![];
    for t in 1..=5u64 {
        let e = EntryDraft {
            log: m.log_id(),
            time: t,
            next: next.clone(),
            refs: vec![],
            ops: vec![Op::Put { key: vec![t as u8], value: b"v".to_vec() }],
        }
        .sign(&key(1))
        .unwrap();
        next = vec![e.hash()];
        entries.push(e.into_bytes());
    }
    let checkpoint = Checkpoint {
        log: m.log_id(),
        epoch: [7; 16],
        seq: 5,
        heads: vec![EntryHash([1; 32])],
        state_root: [2; 32],
        n_entries: 5,
        n_ops: 5,
    };
    let header = SnapshotHeader { manifest: m.bytes().to_vec(), checkpoint, base: None };
    let (mut writer, mut stream) = SnapshotWriter::start(&header);
    for (i, e) in entries.iter().enumerate() {
        stream.extend(writer.entry(i as u64 + 1, e));
    }
    stream.extend(writer.finish());
    (header, entries, stream)
}

fn read_all(stream: &[u8], chunk: usize) -> Result<Vec<SnapshotItem>, SnapshotError> {
    let mut reader = SnapshotReader::new();
    let mut items = Vec::new();
    for part in stream.chunks(chunk.max(1)) {
        reader.feed(part);
        while let Some(item) = reader.next_item()? {
            items.push(item);
        }
    }
    reader.finish()?;
    Ok(items)
}

/// A written stream reads back item for item, whatever the chunking of the bytes.
#[test]
fn snapshots_round_trip_in_any_chunking() {
    let (header, entries, stream) = sample();
    for chunk in [1, 3, 64, stream.len()] {
        let items = read_all(&stream, chunk).unwrap();
        assert_eq!(items[0], SnapshotItem::Header(header.clone()));
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(items[i + 1], SnapshotItem::Entry { seq: i as u64 + 1, bytes: e.clone() });
        }
        assert_eq!(items.last(), Some(&SnapshotItem::End { entries: 5 }));
    }
}

/// Truncation anywhere, any changed byte, a wrong version or magic, and bytes after the
/// trailer are each refused with the matching error.
#[test]
fn damaged_snapshots_are_refused() {
    let (_, _, stream) = sample();
    for cut in [0, 5, 10, 20, stream.len() / 2, stream.len() - 1] {
        let err = read_all(&stream[..cut], 7).unwrap_err();
        assert!(matches!(err, SnapshotError::Truncated | SnapshotError::Corrupt(_)), "cut at {cut}: {err:?}");
    }
    for at in (0..stream.len()).step_by(stream.len() / 40 + 1) {
        let mut bad = stream.clone();
        bad[at] ^= 0x40;
        assert!(read_all(&bad, 64).is_err(), "a change at byte {at} went unnoticed");
    }
    let mut version = stream.clone();
    version[9] = 9;
    assert_eq!(read_all(&version, 64).unwrap_err(), SnapshotError::Version(9));
    let mut magic = stream.clone();
    magic[0] = b'X';
    assert_eq!(read_all(&magic, 64).unwrap_err(), SnapshotError::Magic);
    let mut extra = stream.clone();
    extra.push(0);
    assert!(matches!(read_all(&extra, 64).unwrap_err(), SnapshotError::Corrupt(_)));
}

/// The state root depends on every row and on their order, and matches for equal views.
#[test]
fn state_roots_are_merkle_roots_of_rows() {
    let root = |rows: &[(&[u8], &[u8])]| {
        let mut r = StateRoot::new();
        for (k, v) in rows {
            r.push(k, v);
        }
        r.finish()
    };
    let rows: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"b", b"2"), (b"c", b"3")];
    assert_eq!(root(&rows), root(&rows));
    assert_ne!(root(&rows), root(&rows[..2]));
    assert_ne!(root(&rows), root(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"4")]));
    assert_ne!(root(&[]), root(&rows[..1]));
    // Ambiguous splits of key and value give different roots.
    assert_ne!(root(&[(b"ab", b"c")]), root(&[(b"a", b"bc")]));
    let _ = LogId([0; 32]);
}

/// Checkpoints round-trip and refuse non-canonical or unsorted input.
#[test]
fn checkpoints_round_trip() {
    let (header, _, _) = sample();
    let bytes = header.checkpoint.encode();
    assert_eq!(Checkpoint::decode(&bytes).unwrap(), header.checkpoint);
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(Checkpoint::decode(&trailing).is_err());
}

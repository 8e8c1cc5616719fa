//! The `snapshot` target: plait-core's I/O-free `SnapshotReader` fed arbitrary bytes in
//! arbitrary chunk sizes.
//!
//! Input: one byte that picks the chunking, then the stream. The reader must never
//! panic, and what it makes of a stream must not depend on how the stream was cut into
//! chunks: the items and the final outcome fed in chunks equal those fed all at once.
//! When the reader accepts a whole stream (`finish` is `Ok`), it saw exactly one header
//! first and one trailer last, whose count is the number of entries it returned.

use plait_core::{SnapshotError, SnapshotItem, SnapshotReader};

/// What reading a stream produced: the items in order, then the error that stopped it
/// (if any), then the result of `finish`.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    items: Vec<SnapshotItem>,
    error: Option<SnapshotError>,
    finish: Result<(), SnapshotError>,
}

/// Chunk sizes derived from the selector byte: 0 feeds everything at once; otherwise
/// a small xorshift sequence, seeded by the byte, of sizes up to a bound the byte picks
/// (1 byte at a time up to 64 KiB), so that chunk boundaries fall everywhere: inside
/// the magic, the version, frame headers and payloads.
pub fn chunk_sizes(selector: u8, len: usize) -> Vec<usize> {
    if selector == 0 {
        return vec![len];
    }
    let bound = match selector % 8 {
        0 => 1,
        1 => 3,
        2 => 7,
        3 => 16,
        4 => 100,
        5 => 1000,
        6 => 4096,
        _ => 65536,
    };
    let mut state = u32::from(selector) | 0x9e37_0000;
    let mut sizes = Vec::new();
    let mut left = len;
    while left > 0 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (state as usize % bound + 1).min(left);
        sizes.push(size);
        left -= size;
    }
    sizes
}

fn read(stream: &[u8], sizes: &[usize]) -> Outcome {
    let mut reader = SnapshotReader::new();
    let mut items = Vec::new();
    let mut error = None;
    let mut at = 0;
    'feed: for &size in sizes {
        reader.feed(&stream[at..at + size]);
        at += size;
        loop {
            match reader.next_item() {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    let finish = reader.finish();
    Outcome { items, error, finish }
}

pub fn run(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else { return };
    let whole = read(stream, &[stream.len()]);
    let chunked = read(stream, &chunk_sizes(selector, stream.len()));
    assert_eq!(whole, chunked, "the reader's result depends on how the stream was chunked");

    if whole.error.is_some() {
        assert!(whole.finish.is_err(), "finish accepted a stream that failed");
    }
    if whole.finish.is_ok() {
        assert!(matches!(whole.items.first(), Some(SnapshotItem::Header(_))), "no header first");
        let entries = whole.items.iter().filter(|i| matches!(i, SnapshotItem::Entry { .. })).count() as u64;
        assert_eq!(whole.items.last(), Some(&SnapshotItem::End { entries }), "no matching trailer last");
        let headers = whole.items.iter().filter(|i| matches!(i, SnapshotItem::Header(_))).count();
        assert_eq!(headers, 1, "exactly one header");
    }
}
